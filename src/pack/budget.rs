//! The 16,000,000-byte cap: code bytes as the challenge counts them (self-extracting wrappers included) and the size
//! check of artifact + code against the cap, one type and one JSON spelling for `inspect`, `pack` and `verify`.

use std::io::Read;
use std::path::Path;

use serde::Serialize;

use super::{Limits, PackError, Result};

/// The challenge's cap on code + compressed model bytes (decimal).
pub const BUDGET_BYTES: u64 = 16_000_000;

/// Artifact + code bytes against a budget (the challenge's cap unless a smaller one is asked for).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SizeCheck {
    pub artifact_bytes: u64,
    /// The code's counted bytes; None when no code file was given (the check is then undecided unless the artifact
    /// alone is over).
    pub code_bytes: Option<u64>,
    pub total_bytes: u64,
    pub budget_bytes: u64,
    /// budget − total (negative when over).
    pub headroom_bytes: i64,
    /// true: under the budget; false: over it; None: the artifact fits but the code was not counted.
    pub under_budget: Option<bool>,
}

impl SizeCheck {
    pub fn new(artifact_bytes: u64, code_bytes: Option<u64>, budget_bytes: u64) -> Self {
        let total_bytes = artifact_bytes.saturating_add(code_bytes.unwrap_or(0));
        let under_budget = if total_bytes > budget_bytes {
            Some(false)
        } else {
            code_bytes.map(|_| true)
        };
        SizeCheck {
            artifact_bytes,
            code_bytes,
            total_bytes,
            budget_bytes,
            headroom_bytes: budget_bytes as i64 - total_bytes as i64,
            under_budget,
        }
    }

    /// Against the challenge's cap.
    pub fn against_cap(artifact_bytes: u64, code_bytes: Option<u64>) -> Self {
        SizeCheck::new(artifact_bytes, code_bytes, BUDGET_BYTES)
    }
}

/// Code bytes as the challenge counts them: the file's bytes, and for a self-extracting wrapper
/// (`exec(<lzma|brotli>.decompress(<base64>.b85decode("…")))`) also the decoded source's size.
#[derive(Clone, Debug, Serialize)]
pub struct CodeSize {
    pub counted_bytes: u64,
    pub wrapper: Option<String>,
    pub decoded_bytes: Option<u64>,
}

pub fn code_size(path: &Path, limits: &Limits) -> Result<CodeSize> {
    read_code(path, limits).map(|(size, _)| size)
}

/// At most this many bytes of a self-extracting wrapper lie outside its payload: the imports, `exec`, the
/// decompress and decode calls (the records' wrappers have 60–120).
const WRAPPER_MAX_SCAFFOLD_BYTES: usize = 1024;

/// The base85 payload of a self-extracting wrapper (`exec(L.decompress(B.b85decode("…")))`), decided from the file's
/// structure: the file calls `exec`, and one string literal passed to `b85decode(` is the file's bulk (at least half
/// of it, with at most [`WRAPPER_MAX_SCAFFOLD_BYTES`] outside it). A plain script that mentions `b85decode` — #2135's
/// builds a wrapper of its own source to count its size — is source, whatever it imports.
pub fn wrapper_payload(text: &str) -> Option<&str> {
    if !text.contains("exec(") {
        return None;
    }
    text.match_indices("b85decode(").find_map(|(at, call)| {
        let rest = &text[at + call.len()..];
        let rest = rest.strip_prefix('b').unwrap_or(rest);
        let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let body = &rest[1..];
        let literal = &body[..body.find(quote)?];
        let scaffold = text.len() - literal.len();
        (scaffold <= WRAPPER_MAX_SCAFFOLD_BYTES && literal.len() >= scaffold).then_some(literal)
    })
}

/// The code's counted size and its source: the decoded text of a self-extracting wrapper, else the file itself.
pub fn read_code(path: &Path, limits: &Limits) -> Result<(CodeSize, Vec<u8>)> {
    let bytes = crate::limits::read_input(path, limits).map_err(|source| PackError::Io {
        path: path.into(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let mut out = CodeSize {
        counted_bytes: bytes.len() as u64,
        wrapper: None,
        decoded_bytes: None,
    };
    let Some(literal) = wrapper_payload(&text) else {
        return Ok((out, bytes));
    };
    let payload = b85decode(literal).map_err(|m| PackError::Format {
        path: path.into(),
        message: format!("code wrapper: {m}"),
    })?;
    let corrupt = |layer: &'static str, e: std::io::Error| PackError::Corrupt {
        path: path.into(),
        layer,
        message: e.to_string(),
    };
    let limit = limits.max_decompressed_bytes;
    let (kind, decoded) = if text.contains("brotli") {
        let mut d = Vec::new();
        brotli::Decompressor::new(payload.as_slice(), 1 << 16)
            .take(limit + 1)
            .read_to_end(&mut d)
            .map_err(|e| corrupt("brotli", e))?;
        ("brotli+base85", d)
    } else if text.contains("FORMAT_RAW") {
        let mut opts = liblzma::stream::LzmaOptions::new_preset(9).expect("preset 9");
        opts.dict_size(1 << 26);
        let mut filters = liblzma::stream::Filters::new();
        filters.lzma2(&opts);
        let stream = liblzma::stream::Stream::new_raw_decoder(&filters).expect("raw LZMA2 decoder");
        let mut d = Vec::new();
        liblzma::read::XzDecoder::new_stream(payload.as_slice(), stream)
            .take(limit + 1)
            .read_to_end(&mut d)
            .map_err(|e| corrupt("lzma2", e))?;
        ("raw-lzma2+base85", d)
    } else {
        let stream =
            liblzma::stream::Stream::new_auto_decoder(limit, 0).expect("lzma auto decoder");
        let mut d = Vec::new();
        liblzma::read::XzDecoder::new_stream(payload.as_slice(), stream)
            .take(limit + 1)
            .read_to_end(&mut d)
            .map_err(|e| corrupt("lzma", e))?;
        ("lzma+base85", d)
    };
    out.wrapper = Some(kind.into());
    out.decoded_bytes = Some(decoded.len() as u64);
    Ok((out, decoded))
}

/// Python's `base64.b85encode` (RFC 1924 alphabet, no padding): 5 characters per 4 bytes, a short last group
/// encoded as if zero-padded and cut to its length + 1 characters.
pub fn b85encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] =
        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~";
    let mut out = Vec::with_capacity(bytes.len().div_ceil(4) * 5);
    for chunk in bytes.chunks(4) {
        let mut b = [0u8; 4];
        b[..chunk.len()].copy_from_slice(chunk);
        let mut v = u32::from_be_bytes(b);
        let mut group = [0u8; 5];
        for g in group.iter_mut().rev() {
            *g = ALPHABET[(v % 85) as usize];
            v /= 85;
        }
        out.extend_from_slice(&group[..chunk.len() + 1]);
    }
    String::from_utf8(out).expect("ASCII alphabet")
}

/// The bytes `source` costs as a self-extracting wrapper like the records' code,
/// `import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("…")))\n`, compressed with xz preset 9 extreme.
pub fn self_extracting_bytes(source: &[u8]) -> u64 {
    let packed = b85encode(&super::codec::Coder::Xz.compress(source));
    (r#"import lzma as L,base64 as B"#.len()
        + 1
        + r#"exec(L.decompress(B.b85decode("")))"#.len()
        + packed.len()
        + 1) as u64
}

/// Python's `base64.b85decode` (RFC 1924 alphabet), including a short final group.
pub fn b85decode(s: &str) -> std::result::Result<Vec<u8>, String> {
    const ALPHABET: &[u8] =
        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~";
    let mut table = [255u8; 256];
    for (i, &c) in ALPHABET.iter().enumerate() {
        table[c as usize] = i as u8;
    }
    let chars: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(chars.len() * 4 / 5);
    for chunk in chars.chunks(5) {
        let pad = 5 - chunk.len();
        let mut acc: u64 = 0;
        for i in 0..5 {
            let c = chunk.get(i).copied().unwrap_or(b'~');
            let v = table[c as usize];
            if v == 255 {
                return Err(format!("invalid base85 character {:?}", c as char));
            }
            acc = acc * 85 + v as u64;
        }
        if acc > u32::MAX as u64 {
            return Err("base85 group overflows".into());
        }
        out.extend_from_slice(&(acc as u32).to_be_bytes()[..4 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapper_is_told_from_a_script_by_its_structure() {
        let payload = b85encode(&super::super::codec::Coder::Xz.compress(b"print('hi')\n"));
        let wrapper = format!(
            "import lzma as L,base64 as B\nexec(L.decompress(B.b85decode(\"{payload}\")))\n"
        );
        assert_eq!(wrapper_payload(&wrapper), Some(payload.as_str()));
        // #2135's plain script builds a wrapper of itself to count it, with `exec(` and `b85decode("` in its text.
        let script = format!(
            "import lzma, base64\n{}\ndef size(code):\n    encoded = base64.b85encode(lzma.compress(code))\n    \
             wrapper = b'import lzma as L,base64 as B\\nexec(L.decompress(B.b85decode(\"' + encoded + b'\")))'\n    \
             return len(wrapper)\n",
            "x = 1\n".repeat(400)
        );
        assert_eq!(wrapper_payload(&script), None);
        // A short literal in a short file is not a wrapper either.
        assert_eq!(
            wrapper_payload(
                "exec(B.b85decode('abc'))\n# a comment that is longer than the literal\n"
            ),
            None
        );
    }

    #[test]
    fn b85_decodes_python_output() {
        // base64.b85encode(b"hello world") == b'Xk~0{Zy<MXa%^M'
        assert_eq!(b85decode("Xk~0{Zy<MXa%^M").unwrap(), b"hello world");
        assert_eq!(b85decode("VPa!sWo7").unwrap(), b"abcdef");
    }

    #[test]
    fn b85_encodes_as_python_does() {
        // base64.b85encode(b"hello world") == b'Xk~0{Zy<MXa%^M'; b"abcdef" → b'VPa!sWo7'.
        assert_eq!(b85encode(b"hello world"), "Xk~0{Zy<MXa%^M");
        assert_eq!(b85encode(b"abcdef"), "VPa!sWo7");
        let data: Vec<u8> = (0..1001u32).map(|i| (i * 97 % 256) as u8).collect();
        assert_eq!(b85decode(&b85encode(&data)).unwrap(), data);
        assert!(self_extracting_bytes(&data) > 60);
    }

    #[test]
    fn size_check_decides_only_what_it_measured() {
        let over = SizeCheck::against_cap(16_000_001, None);
        assert_eq!((over.under_budget, over.headroom_bytes), (Some(false), -1));
        let undecided = SizeCheck::against_cap(15_000_000, None);
        assert_eq!(undecided.under_budget, None);
        let fits = SizeCheck::against_cap(15_000_000, Some(1_000_000));
        assert_eq!(
            (fits.under_budget, fits.headroom_bytes, fits.total_bytes),
            (Some(true), 0, 16_000_000)
        );
        let tight = SizeCheck::new(900, Some(101), 1000);
        assert_eq!(
            (tight.under_budget, tight.headroom_bytes),
            (Some(false), -1)
        );
    }
}
