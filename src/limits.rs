//! The one place that bounds what every reader accepts: decompressed bytes, tensor elements, pickle depth, memo and
//! values, zip entries, and shard token counts. Defaults are generous for real 16 MB artifacts and the 62M-token
//! validation set; the CLI raises them with its `--max-*` flags, which set the process-wide limits once at start-up.
//! A limit that is hit is an error naming the limit and the file.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes any decompression layer may produce.
    pub max_decompressed_bytes: u64,
    /// Elements of one tensor.
    pub max_tensor_elements: u64,
    /// Nesting depth of pickled containers.
    pub max_pickle_depth: usize,
    /// Entries of the pickle memo.
    pub max_memo_entries: usize,
    /// Values the unpickler may create (copies through the memo included).
    pub max_pickle_values: u64,
    /// Entries of a zip archive.
    pub max_zip_entries: usize,
    /// Tokens one shard may declare.
    pub max_shard_tokens: u64,
    /// Seconds an external decompressor (lrzip) may run on one stream before it is killed.
    pub max_external_seconds: u64,
    /// Bytes an artifact may decode to per byte of the file (beyond a floor of [`MIN_DECODE_BUDGET`]): real
    /// artifacts stay far below it, a few hundred bytes of rANS standing for a billion symbols do not.
    pub max_expansion: u64,
}

/// The decode budget every artifact has, however small the file (the ratio cap applies above it).
pub const MIN_DECODE_BUDGET: u64 = 64 << 20;

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_decompressed_bytes: 1 << 30,
        max_tensor_elements: 1 << 31,
        max_pickle_depth: 64,
        max_memo_entries: 1 << 20,
        max_pickle_values: 1 << 22,
        max_zip_entries: 100_000,
        max_shard_tokens: 1 << 28,
        max_external_seconds: 300,
        max_expansion: 128,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

static CURRENT: OnceLock<Limits> = OnceLock::new();

/// Sets the process-wide limits; only the first call takes effect (returns whether this one did).
pub fn set_current(limits: Limits) -> bool {
    CURRENT.set(limits).is_ok()
}

/// The process-wide limits: those set by [`set_current`], else the defaults.
pub fn current() -> Limits {
    CURRENT.get().copied().unwrap_or(Limits::DEFAULT)
}

/// The most bytes a tokenizer, model config or byte table file may have (real ones are under 1 MB).
pub const MAX_SMALL_FILE_BYTES: u64 = 64 << 20;

/// Reads a whole file of at most `cap` bytes. A larger file is refused from its size before any of it is read (and a
/// file that grows while it is read is cut off at the cap and refused); `hint` says how to raise the cap, if it can be.
pub fn read_capped(path: &std::path::Path, cap: u64, hint: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let too_large = |len: u64| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{len} bytes, more than the limit of {cap} bytes{hint}"),
        )
    };
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > cap {
        return Err(too_large(len));
    }
    let mut out = Vec::with_capacity(len as usize);
    file.take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(too_large(out.len() as u64));
    }
    Ok(out)
}

/// [`read_capped`] for an input read whole (an artifact, a checkpoint, code, a prior): at most the decode budget.
pub fn read_input(path: &std::path::Path, limits: &Limits) -> std::io::Result<Vec<u8>> {
    read_capped(
        path,
        limits.max_decompressed_bytes,
        " (raise it with --max-decompressed-bytes)",
    )
}

/// [`read_capped`] for text files of at most [`MAX_SMALL_FILE_BYTES`].
pub fn read_small_text(path: &std::path::Path) -> std::io::Result<String> {
    let bytes = read_capped(path, MAX_SMALL_FILE_BYTES, "")?;
    String::from_utf8(bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}
