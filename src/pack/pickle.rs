//! A restricted unpickler for `torch.save` files (protocols 2–4 opcodes that torch and plain containers use).
//!
//! It runs no code: a GLOBAL resolves only to the few callables a tensor rebuild needs (listed in [`Global`]), and
//! anything else is refused by name. Memo copies, container depth and the number of values created are bounded.

use std::collections::HashMap;

use super::Limits;

/// The callables and constants a `torch.save` pickle may name.
#[derive(Clone, Debug, PartialEq)]
pub enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildTensorV3,
    RebuildParameter,
    /// `torch.<Name>Storage` (legacy typed storages) or `torch.storage.UntypedStorage`.
    Storage(String),
    /// `torch.<dtype>` as passed to `_rebuild_tensor_v3`.
    Dtype(String),
    /// `_codecs.encode`, which protocol 2 uses for `bytes`.
    CodecsEncode,
}

fn resolve_global(module: &str, name: &str) -> Option<Global> {
    Some(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor_v3") => Global::RebuildTensorV3,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch.storage", "UntypedStorage") => Global::Storage("UntypedStorage".into()),
        ("torch", n) if n.ends_with("Storage") && storage_element(n).is_some() => {
            Global::Storage(n.into())
        }
        ("torch", n) if dtype_element(n).is_some() => Global::Dtype(n.into()),
        ("_codecs", "encode") => Global::CodecsEncode,
        _ => return None,
    })
}

/// (dtype name, element bytes) of a legacy typed storage class.
pub fn storage_element(class: &str) -> Option<(&'static str, usize)> {
    Some(match class {
        "FloatStorage" => ("float32", 4),
        "DoubleStorage" => ("float64", 8),
        "HalfStorage" => ("float16", 2),
        "BFloat16Storage" => ("bfloat16", 2),
        "CharStorage" => ("int8", 1),
        "ByteStorage" => ("uint8", 1),
        "ShortStorage" => ("int16", 2),
        "IntStorage" => ("int32", 4),
        "LongStorage" => ("int64", 8),
        "BoolStorage" => ("bool", 1),
        "UntypedStorage" => ("uint8", 1),
        _ => return None,
    })
}

/// Element bytes of a torch dtype name (`torch.<name>`).
pub fn dtype_element(name: &str) -> Option<usize> {
    Some(match name {
        "float32" | "int32" => 4,
        "float64" | "int64" => 8,
        "float16" | "bfloat16" | "int16" => 2,
        "int8" | "uint8" | "bool" | "float8_e4m3fn" => 1,
        _ => return None,
    })
}

/// A storage reference from a persistent id: `('storage', class, key, location, numel)`.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    pub class: String,
    pub key: String,
    pub numel: u64,
}

/// A tensor as the pickle describes it; its bytes live in the zip's storage record.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub dtype: String,
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Dicts and OrderedDicts, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// Boxed, as is the storage: a value stays 32 bytes, so the value budget bounds memory.
    Tensor(Box<TensorRef>),
    Global(Global),
    Storage(Box<StorageRef>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// Looks up a string key in a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Tensor(_) => "tensor",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
        }
    }

    /// (depth, values, bytes) of this value: containers count 1 plus their children; bytes are the string and
    /// byte-string payloads it holds.
    fn measure(&self) -> (usize, u64, u64) {
        let children: Box<dyn Iterator<Item = &Value>> = match self {
            Value::List(v) | Value::Tuple(v) => Box::new(v.iter()),
            Value::Dict(v) => Box::new(v.iter().flat_map(|(a, b)| [a, b])),
            Value::Str(s) => return (0, 1, s.len() as u64),
            Value::Bytes(b) => return (0, 1, b.len() as u64),
            _ => return (0, 1, 0),
        };
        let (mut depth, mut n, mut bytes) = (0, 1, 0);
        for c in children {
            let (d, m, b) = c.measure();
            depth = depth.max(d);
            n += m;
            bytes += b;
        }
        (depth + 1, n, bytes)
    }
}

/// A dict key that can be hashed (strings, integers, booleans, None, bytes): SETITEMS finds an existing key in
/// constant time. Other keys (floats, tuples) are found by comparison, as before.
#[derive(PartialEq, Eq, Hash)]
enum HashKey {
    None,
    Bool(bool),
    Int(i64),
    Str(String),
    Bytes(Vec<u8>),
}

impl HashKey {
    fn of(v: &Value) -> Option<Self> {
        Some(match v {
            Value::None => HashKey::None,
            Value::Bool(b) => HashKey::Bool(*b),
            Value::Int(i) => HashKey::Int(*i),
            Value::Str(s) => HashKey::Str(s.clone()),
            Value::Bytes(b) => HashKey::Bytes(b.clone()),
            _ => return None,
        })
    }
}

enum Item {
    Mark,
    Value(Value),
}

/// Unpickles `data`. Errors are plain messages; the caller adds the file name.
pub fn unpickle(data: &[u8], limits: &Limits) -> Result<Value, String> {
    Unpickler {
        data,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        values: 0,
        bytes: 0,
        limits,
    }
    .run()
}

struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    memo: HashMap<u32, Value>,
    values: u64,
    /// String and byte-string payload bytes created so far, memo copies included.
    bytes: u64,
    limits: &'a Limits,
}

impl Unpickler<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.data.len() - self.pos < n {
            return Err(format!("truncated at byte {} (needs {n} more)", self.pos));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("unterminated GLOBAL line")?;
        let s = std::str::from_utf8(&rest[..end])
            .map_err(|_| "GLOBAL name is not UTF-8")?
            .to_string();
        self.pos += end + 1;
        Ok(s)
    }

    fn push(&mut self, v: Value) -> Result<(), String> {
        self.admit([&v], 0)?;
        self.stack.push(Item::Value(v));
        Ok(())
    }

    /// Checks that values placed `extra_depth` levels down keep every container within the depth limit, and
    /// charges them to the value and byte budgets.
    fn admit<'v>(
        &mut self,
        values: impl IntoIterator<Item = &'v Value>,
        extra_depth: usize,
    ) -> Result<(), String> {
        let (mut depth, mut n, mut bytes) = (0, 0, 0);
        for v in values {
            let (d, m, b) = v.measure();
            depth = depth.max(d);
            n += m;
            bytes += b;
        }
        if depth + extra_depth > self.limits.max_pickle_depth {
            return Err(format!(
                "containers nested deeper than {}",
                self.limits.max_pickle_depth
            ));
        }
        self.charge(n, bytes)
    }

    /// Charges `n` values holding `bytes` payload bytes; past either budget the unpickling stops.
    fn charge(&mut self, n: u64, bytes: u64) -> Result<(), String> {
        self.values += n;
        self.bytes = self.bytes.saturating_add(bytes);
        if self.values > self.limits.max_pickle_values {
            return Err(format!(
                "more than {} values (memo copies included)",
                self.limits.max_pickle_values
            ));
        }
        if self.bytes > self.limits.max_decompressed_bytes {
            return Err(format!(
                "strings and bytes past the limit of {} bytes (memo copies included; raise it with \
                 --max-decompressed-bytes)",
                self.limits.max_decompressed_bytes
            ));
        }
        Ok(())
    }

    fn pop(&mut self) -> Result<Value, String> {
        match self.stack.pop() {
            Some(Item::Value(v)) => Ok(v),
            Some(Item::Mark) => Err("unexpected MARK on the stack".into()),
            None => Err("stack underflow".into()),
        }
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        match self.stack.last_mut() {
            Some(Item::Value(v)) => Ok(v),
            _ => Err("no value on the stack".into()),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let at = self
            .stack
            .iter()
            .rposition(|i| matches!(i, Item::Mark))
            .ok_or("no MARK on the stack")?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        items
            .into_iter()
            .map(|i| match i {
                Item::Value(v) => Ok(v),
                Item::Mark => Err("nested MARK".to_string()),
            })
            .collect()
    }

    fn memo_put(&mut self, key: u32) -> Result<(), String> {
        if self.memo.len() >= self.limits.max_memo_entries && !self.memo.contains_key(&key) {
            return Err(format!(
                "memo exceeds {} entries",
                self.limits.max_memo_entries
            ));
        }
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    /// Pushes a copy of a memo entry, charged to the budgets before it is copied.
    fn memo_get(&mut self, key: u32) -> Result<(), String> {
        let v = self
            .memo
            .get(&key)
            .ok_or_else(|| format!("memo key {key} was never stored"))?;
        let (depth, n, bytes) = v.measure();
        if depth > self.limits.max_pickle_depth {
            return Err(format!(
                "containers nested deeper than {}",
                self.limits.max_pickle_depth
            ));
        }
        self.charge(n, bytes)?;
        let v = self.memo[&key].clone();
        self.stack.push(Item::Value(v));
        Ok(())
    }

    fn run(mut self) -> Result<Value, String> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: framing only
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Item::Mark),
                b'}' => self.push(Value::Dict(Vec::new()))?,
                b']' => self.push(Value::List(Vec::new()))?,
                b')' => self.push(Value::Tuple(Vec::new()))?,
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'K' => {
                    let v = self.u8()? as i64;
                    self.push(Value::Int(v))?
                }
                b'M' => {
                    let v = self.u16()? as i64;
                    self.push(Value::Int(v))?
                }
                b'J' => {
                    let v = self.u32()? as i32 as i64;
                    self.push(Value::Int(v))?
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let bytes = self.take(n)?;
                    if n > 8 {
                        return Err(format!("LONG1 of {n} bytes does not fit in 64 bits"));
                    }
                    let mut buf = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
                        [0xffu8; 8]
                    } else {
                        [0u8; 8]
                    };
                    buf[..n].copy_from_slice(bytes);
                    self.push(Value::Int(i64::from_le_bytes(buf)))?
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.push(Value::Float(v))?
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => self.u32()? as usize,
                        0x8c => self.u8()? as usize,
                        _ => usize::try_from(self.u64()?).map_err(|_| "string length overflows")?,
                    };
                    let s = std::str::from_utf8(self.take(n)?)
                        .map_err(|_| "string is not UTF-8")?
                        .to_string();
                    self.push(Value::Str(s))?
                }
                b'U' | b'T' => {
                    // SHORT_BINSTRING / BINSTRING (Python 2 str): kept as text when it is UTF-8
                    let n = if op == b'U' {
                        self.u8()? as usize
                    } else {
                        self.u32()? as usize
                    };
                    let b = self.take(n)?.to_vec();
                    self.push(match String::from_utf8(b) {
                        Ok(s) => Value::Str(s),
                        Err(e) => Value::Bytes(e.into_bytes()),
                    })?
                }
                b'C' | b'B' | 0x8e => {
                    let n = match op {
                        b'C' => self.u8()? as usize,
                        b'B' => self.u32()? as usize,
                        _ => usize::try_from(self.u64()?).map_err(|_| "bytes length overflows")?,
                    };
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b))?
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    self.memo_get(k)?
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items))?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Value::Tuple(items))?
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(items))?
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(items)?;
                    self.push(Value::Dict(pairs))?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_top(vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items_top(vec![(k, v)])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let p = pairs(items)?;
                    self.set_items_top(p)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(&module, &name)?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module.as_str(), name.as_str()) {
                        (Some(m), Some(n)) => {
                            let (m, n) = (m.to_string(), n.to_string());
                            self.global(&m, &n)?
                        }
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let s = storage_ref(pid)?;
                    self.push(Value::Storage(Box::new(s)))?
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = reduce(callable, args)?;
                    self.push(v)?
                }
                0x81 => {
                    // NEWOBJ: cls.__new__(cls, *args) — only OrderedDict is allowed
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = reduce(cls, args)?;
                    self.push(v)?
                }
                b'b' => {
                    // BUILD: setting state is only accepted as a no-op on an empty/dict state for rebuilt objects
                    let state = self.pop()?;
                    match state {
                        Value::None => {}
                        Value::Dict(ref d) if d.is_empty() => {}
                        Value::Tuple(_) | Value::Dict(_) => {}
                        other => return Err(format!("BUILD with a {} state", other.type_name())),
                    }
                }
                other => {
                    return Err(format!(
                        "opcode 0x{other:02x} at byte {} is not supported",
                        self.pos - 1
                    ));
                }
            }
        }
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), String> {
        match resolve_global(module, name) {
            Some(g) => self.push(Value::Global(g)),
            None => Err(format!(
                "global {module}.{name} is not allowed (only tensor-rebuild globals are)"
            )),
        }
    }

    fn extend_top(&mut self, items: Vec<Value>) -> Result<(), String> {
        self.admit(&items, 1)?;
        match self.top()? {
            Value::List(l) => {
                l.extend(items);
                Ok(())
            }
            other => Err(format!("APPEND to a {}", other.type_name())),
        }
    }

    fn set_items_top(&mut self, p: Vec<(Value, Value)>) -> Result<(), String> {
        self.admit(p.iter().flat_map(|(a, b)| [a, b]), 1)?;
        match self.top()? {
            Value::Dict(d) => {
                // An index of the hashable keys present, so a batch of n keys costs O(n + len) instead of a search
                // of the whole dict per key.
                let mut index: HashMap<HashKey, usize> = HashMap::new();
                for (i, (k, _)) in d.iter().enumerate() {
                    if let Some(h) = HashKey::of(k) {
                        // The first of equal keys, as a search from the front finds it.
                        index.entry(h).or_insert(i);
                    }
                }
                for (k, v) in p {
                    let hashed = HashKey::of(&k);
                    let slot = match &hashed {
                        Some(h) => index.get(h).copied(),
                        None => d.iter().position(|(ek, _)| *ek == k),
                    };
                    match slot {
                        Some(i) => d[i].1 = v,
                        None => {
                            if let Some(h) = hashed {
                                index.insert(h, d.len());
                            }
                            d.push((k, v));
                        }
                    }
                }
                Ok(())
            }
            other => Err(format!("SETITEM on a {}", other.type_name())),
        }
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of dict items".into());
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn storage_ref(pid: Value) -> Result<StorageRef, String> {
    let Value::Tuple(t) = pid else {
        return Err(format!(
            "persistent id is a {}, not a tuple",
            pid.type_name()
        ));
    };
    match t.as_slice() {
        [
            Value::Str(tag),
            Value::Global(Global::Storage(class)),
            Value::Str(key),
            _location,
            Value::Int(numel),
        ] if tag == "storage" && *numel >= 0 => Ok(StorageRef {
            class: class.clone(),
            key: key.clone(),
            numel: *numel as u64,
        }),
        _ => Err("persistent id is not ('storage', <Storage class>, key, location, numel)".into()),
    }
}

fn int_list(v: &Value, what: &str) -> Result<Vec<u64>, String> {
    let Value::Tuple(items) = v else {
        return Err(format!("{what} is not a tuple"));
    };
    items
        .iter()
        .map(|x| match x {
            Value::Int(i) if *i >= 0 => Ok(*i as u64),
            _ => Err(format!("{what} holds a non-negative-integer entry")),
        })
        .collect()
}

fn reduce(callable: Value, args: Value) -> Result<Value, String> {
    let Value::Global(g) = callable else {
        return Err(format!("REDUCE on a {}", callable.type_name()));
    };
    let Value::Tuple(args) = args else {
        return Err("REDUCE arguments are not a tuple".into());
    };
    match g {
        Global::OrderedDict => {
            if args.is_empty() {
                Ok(Value::Dict(Vec::new()))
            } else {
                Err("OrderedDict called with arguments".into())
            }
        }
        Global::RebuildTensorV2 | Global::RebuildTensorV3 => {
            if args.len() < 4 {
                return Err("tensor rebuild with fewer than 4 arguments".into());
            }
            let Value::Storage(storage) = &args[0] else {
                return Err("tensor rebuild without a storage".into());
            };
            let offset = match &args[1] {
                Value::Int(i) if *i >= 0 => *i as u64,
                _ => return Err("tensor storage offset is not a non-negative integer".into()),
            };
            let shape = int_list(&args[2], "tensor size")?;
            let stride = int_list(&args[3], "tensor stride")?;
            if shape.len() != stride.len() {
                return Err("tensor size and stride differ in length".into());
            }
            let dtype = if g == Global::RebuildTensorV3 {
                match args.get(6) {
                    Some(Value::Global(Global::Dtype(d))) => d.clone(),
                    _ => return Err("_rebuild_tensor_v3 without a dtype".into()),
                }
            } else {
                storage_element(&storage.class)
                    .ok_or("unknown storage class")?
                    .0
                    .to_string()
            };
            Ok(Value::Tensor(Box::new(TensorRef {
                storage: (**storage).clone(),
                dtype,
                offset,
                shape,
                stride,
            })))
        }
        Global::RebuildParameter => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err("_rebuild_parameter without a tensor".into()),
        },
        Global::CodecsEncode => match args.as_slice() {
            [Value::Str(s), Value::Str(enc)] if enc == "latin1" || enc == "latin-1" => s
                .chars()
                .map(|c| u8::try_from(c as u32).map_err(|_| "non-latin1 character".to_string()))
                .collect::<Result<Vec<u8>, _>>()
                .map(Value::Bytes),
            _ => Err("_codecs.encode is only accepted as (str, 'latin1')".into()),
        },
        Global::Storage(_) | Global::Dtype(_) => {
            Err("a storage class or dtype cannot be called".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_small_so_the_value_budget_bounds_memory() {
        // max_pickle_values (2^22) values of at most 32 bytes each: 128 MiB, however they are copied.
        assert!(
            std::mem::size_of::<Value>() <= 32,
            "{}",
            std::mem::size_of::<Value>()
        );
    }
}
