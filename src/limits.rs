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
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_decompressed_bytes: 1 << 30,
        max_tensor_elements: 1 << 31,
        max_pickle_depth: 64,
        max_memo_entries: 1 << 20,
        max_pickle_values: 1 << 24,
        max_zip_entries: 100_000,
        max_shard_tokens: 1 << 28,
        max_external_seconds: 300,
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
