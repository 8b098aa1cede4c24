#![no_main]
//! The records' `{"w": …, "m": …}` schema (`pack::schema::interpret`) on structured input, with the decompression and
//! unpickling layers out of the way so every execution reaches the schema's checks: GPTQ row scales, LQER factors,
//! AWQ-lite groups (`+awqgrpint<b>`: starts, size, high scales), gate rows, passthrough, unknown fields and meta parts.
//! The input picks, per entry, a name, a meta string (known forms, their variants, or bytes), and which of the fields
//! that name could have are present, each with a dtype, a shape of rank 0–2 and bytes. Tensors that load are
//! dequantized and their stored bytes taken.
use libfuzzer_sys::fuzz_target;
use pgolf::pack::torchfile::{HostTensor, Obj};

const NAMES: [&str; 3] = ["a.weight", "blocks.0.mlp.fc.weight", "tok_emb.weight"];
const METAS: [&str; 9] = [
    "gptq (int6)",
    "gptq (int7)+awqgrpint8",
    "gptq (int6)+awqgrpint8+lqer_asym",
    "gptq (int6)+lqer",
    "gptq (int6)+lqer_asym",
    "gate_int8_row",
    "passthrough (float16)",
    "gptq (int6)+awqgrpint",
    "int8+awqgrpint9+lqer",
];
const FIELDS: [&str; 15] = [
    "", ".q", ".scale", ".awqg_start", ".awqg_s_hi", ".awqg_size", ".lqA", ".lqAs", ".lqB", ".lqBs", ".lqA_a",
    ".lqAs_a", ".lqB_a", ".lqBs_a", ".gq",
];
const DTYPES: [(&str, usize); 6] = [
    ("int8", 1),
    ("float16", 2),
    ("int16", 2),
    ("float32", 4),
    ("bfloat16", 2),
    ("int64", 8),
];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map(|(b, r)| (*b, r)).unwrap_or((0, &[]));
        self.0 = rest;
        b
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let take = n.min(self.0.len());
        let mut v = self.0[..take].to_vec();
        self.0 = &self.0[take..];
        v.resize(n, 0);
        v
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut w = Vec::new();
    let mut m = Vec::new();
    for _ in 0..(input.byte() % 4 + 1) {
        let name = NAMES[input.byte() as usize % NAMES.len()];
        let meta = match input.byte() as usize % (METAS.len() + 1) {
            i if i < METAS.len() => METAS[i].to_string(),
            _ => {
                let n = input.byte() as usize % 24;
                String::from_utf8_lossy(&input.bytes(n)).into_owned()
            }
        };
        m.push((Obj::Str(name.into()), Obj::Str(meta)));
        let present = u16::from_le_bytes([input.byte(), input.byte()]);
        for (k, field) in FIELDS.iter().enumerate() {
            if present & (1 << k) == 0 {
                continue;
            }
            let (dtype, elem) = DTYPES[input.byte() as usize % DTYPES.len()];
            let rank = input.byte() % 3;
            let shape: Vec<usize> = (0..rank).map(|_| input.byte() as usize % 130).collect();
            let numel: usize = shape.iter().product();
            let data = input.bytes(numel * elem);
            w.push((
                Obj::Str(format!("{name}{field}")),
                Obj::Tensor(HostTensor {
                    dtype: dtype.into(),
                    shape,
                    data,
                }),
            ));
        }
    }
    let obj = Obj::Dict(vec![
        (Obj::Str("w".into()), Obj::Dict(w)),
        (Obj::Str("m".into()), Obj::Dict(m)),
    ]);
    if let Ok((_, tensors)) = pgolf::pack::schema::interpret(std::path::Path::new("fuzz.ptz"), &obj) {
        for t in &tensors {
            let _ = t.dequantize();
            let _ = t.stored_bytes();
        }
    }
});
