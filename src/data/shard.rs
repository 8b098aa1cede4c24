//! Challenge shard format: 256 little-endian i32 header (magic 20240520, version 1, token count), then u16 tokens.

use std::path::{Path, PathBuf};

use crate::limits::Limits;

use super::{DataError, Result, io_err};

pub const SHARD_MAGIC: i32 = 20240520;
pub const SHARD_VERSION: i32 = 1;
pub const HEADER_INTS: usize = 256;
pub const HEADER_BYTES: usize = HEADER_INTS * 4;
/// The header stores the count as an i32, so no shard can hold more.
pub const MAX_SHARD_TOKENS: u64 = i32::MAX as u64;
/// The first token of every document.
pub const BOS_ID: u16 = 1;

/// Reads one shard, rejecting a short header, wrong magic or version, and any size that is not 1024 + 2·count. The
/// header and the file's size are checked before the body is read, so a huge file with a bad header costs nothing.
pub fn read_shard(path: &Path, limits: &Limits) -> Result<Vec<u16>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut header = Vec::with_capacity(HEADER_BYTES);
    (&mut file)
        .take(HEADER_BYTES as u64)
        .read_to_end(&mut header)
        .map_err(io_err(path))?;
    check_header(path, &header, file_len, limits)?;
    let mut body = Vec::with_capacity((file_len - HEADER_BYTES as u64) as usize);
    file.read_to_end(&mut body).map_err(io_err(path))?;
    if (HEADER_BYTES + body.len()) as u64 != file_len {
        return Err(DataError::SizeMismatch {
            path: path.into(),
            declared: (file_len - HEADER_BYTES as u64) / 2,
            expected: file_len,
            actual: (HEADER_BYTES + body.len()) as u64,
        });
    }
    Ok(tokens_of(&body))
}

/// Parses shard bytes already in memory; `path` only names the source in errors.
pub fn parse_shard(path: &Path, bytes: &[u8], limits: &Limits) -> Result<Vec<u16>> {
    check_header(
        path,
        &bytes[..bytes.len().min(HEADER_BYTES)],
        bytes.len() as u64,
        limits,
    )?;
    Ok(tokens_of(&bytes[HEADER_BYTES..]))
}

fn tokens_of(body: &[u8]) -> Vec<u16> {
    body.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// Checks a shard's header (its first 1024 bytes, or fewer when the file is shorter) against the file's size.
fn check_header(path: &Path, header: &[u8], file_len: u64, limits: &Limits) -> Result<()> {
    if header.len() < HEADER_BYTES {
        return Err(DataError::ShortHeader {
            path: path.into(),
            len: header.len() as u64,
        });
    }
    let header_int =
        |i: usize| i32::from_le_bytes(header[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    let magic = header_int(0);
    if magic != SHARD_MAGIC {
        return Err(DataError::BadMagic {
            path: path.into(),
            found: magic,
        });
    }
    let version = header_int(1);
    if version != SHARD_VERSION {
        return Err(DataError::BadVersion {
            path: path.into(),
            found: version,
        });
    }
    let count = header_int(2);
    if count < 0 {
        return Err(DataError::NegativeCount {
            path: path.into(),
            found: count,
        });
    }
    let declared = count as u64;
    let limit = limits.max_shard_tokens;
    if declared > limit {
        return Err(DataError::TooManyTokens {
            path: path.into(),
            count: declared,
            limit,
        });
    }
    let expected = HEADER_BYTES as u64 + 2 * declared;
    if file_len != expected {
        return Err(DataError::SizeMismatch {
            path: path.into(),
            declared,
            expected,
            actual: file_len,
        });
    }
    Ok(())
}

/// Encodes tokens as a shard (header + body).
pub fn encode_shard(tokens: &[u16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + 2 * tokens.len());
    let mut header = [0i32; HEADER_INTS];
    header[0] = SHARD_MAGIC;
    header[1] = SHARD_VERSION;
    header[2] = tokens.len() as i32;
    for h in header {
        out.extend_from_slice(&h.to_le_bytes());
    }
    for t in tokens {
        out.extend_from_slice(&t.to_le_bytes());
    }
    out
}

/// Writes a shard through [`crate::output::write_file`]: a failure leaves nothing, and the file is read back first.
pub fn write_shard(path: &Path, tokens: &[u16]) -> Result<()> {
    if tokens.len() as u64 > MAX_SHARD_TOKENS {
        return Err(DataError::TooManyTokens {
            path: path.into(),
            count: tokens.len() as u64,
            limit: MAX_SHARD_TOKENS,
        });
    }
    Ok(crate::output::write_file(path, &[], &encode_shard(tokens))?)
}

/// Expands a glob into its files in sorted order (the challenge concatenates `sorted(glob(pattern))`).
pub fn expand_glob(pattern: &str) -> Result<Vec<PathBuf>> {
    let paths = glob::glob(pattern).map_err(|e| DataError::BadPattern {
        pattern: pattern.into(),
        message: e.to_string(),
    })?;
    let mut files = Vec::new();
    for entry in paths {
        let path = entry.map_err(|e| DataError::Io {
            path: e.path().to_path_buf(),
            source: e.into(),
        })?;
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(DataError::NoFiles {
            pattern: pattern.into(),
        });
    }
    Ok(files)
}

/// Whether a file is a CaseOps per-token byte sidecar (`fineweb_val_bytes_*.bin`), which a validation glob
/// like `fineweb_val_*.bin` also matches.
pub fn is_byte_sidecar(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().contains("_bytes_"))
}

/// The validation files of a glob: sorted, CaseOps byte sidecars skipped.
pub fn validation_files(pattern: &str) -> Result<Vec<PathBuf>> {
    let files: Vec<PathBuf> = expand_glob(pattern)?
        .into_iter()
        .filter(|p| !is_byte_sidecar(p))
        .collect();
    if files.is_empty() {
        return Err(DataError::NoFiles {
            pattern: format!("{pattern} (after skipping *_bytes_* sidecars)"),
        });
    }
    Ok(files)
}

/// Reads and concatenates shards in the given order.
pub fn read_shards(files: &[PathBuf], limits: &Limits) -> Result<Vec<u16>> {
    let mut tokens = Vec::new();
    for f in files {
        tokens.extend(read_shard(f, limits)?);
    }
    Ok(tokens)
}

/// The challenge's truncation rule: of N tokens, `usable = ((N − 1) div L) · L` targets are scored, so the stream
/// keeps its first `usable + 1` tokens and the last `(N − 1) mod L` targets are never scored.
pub fn usable_targets(num_tokens: usize, seq_len: usize) -> usize {
    if seq_len == 0 || num_tokens == 0 {
        return 0;
    }
    ((num_tokens - 1) / seq_len) * seq_len
}

/// `load_validation_tokens`: the sorted validation shards concatenated and truncated to `usable + 1` tokens.
pub fn load_validation_tokens(pattern: &str, seq_len: usize, limits: &Limits) -> Result<Vec<u16>> {
    let tokens = read_shards(&validation_files(pattern)?, limits)?;
    truncate_to_usable(tokens, seq_len, pattern)
}

/// Truncates a loaded stream by [`usable_targets`]; `what` names the stream in the error.
pub fn truncate_to_usable(mut tokens: Vec<u16>, seq_len: usize, what: &str) -> Result<Vec<u16>> {
    if seq_len == 0 {
        return Err(DataError::ZeroSeqLen);
    }
    let usable = usable_targets(tokens.len(), seq_len);
    if usable == 0 {
        return Err(DataError::TooShort {
            what: what.into(),
            tokens: tokens.len(),
            seq_len,
        });
    }
    tokens.truncate(usable + 1);
    Ok(tokens)
}

/// Number of documents: every document starts with BOS.
pub fn count_documents(tokens: &[u16]) -> usize {
    tokens.iter().filter(|&&t| t == BOS_ID).count()
}

/// Half-open token ranges of the documents, each starting at its BOS. Tokens before the first BOS (none in a
/// well-formed stream) are not a document.
pub fn document_ranges(tokens: &[u16]) -> Vec<std::ops::Range<usize>> {
    let starts: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == BOS_ID)
        .map(|(i, _)| i)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| s..starts.get(k + 1).copied().unwrap_or(tokens.len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_matches_the_challenge_rule() {
        assert_eq!(usable_targets(1025, 1024), 1024);
        assert_eq!(usable_targets(1024, 1024), 0);
        assert_eq!(usable_targets(385_138, 1024), 385_024);
        assert_eq!(usable_targets(62_021_846, 1024), 62_021_632);
        assert_eq!(usable_targets(0, 1024), 0);
    }

    #[test]
    fn shard_round_trips_in_memory() {
        let toks = vec![1u16, 5, 65535, 0, 7];
        let bytes = encode_shard(&toks);
        assert_eq!(bytes.len(), 1024 + 10);
        assert_eq!(
            parse_shard(Path::new("x"), &bytes, &Limits::default()).unwrap(),
            toks
        );
    }

    #[test]
    fn documents_split_at_bos() {
        let toks = [1u16, 9, 9, 1, 8, 1];
        assert_eq!(document_ranges(&toks), vec![0..3, 3..5, 5..6]);
        assert_eq!(count_documents(&toks), 3);
    }
}
