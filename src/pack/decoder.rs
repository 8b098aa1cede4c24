//! The Python decoder a submission embeds to read its artifact (`python/pgolf_decode.py`), and the same decoder cut
//! to what one artifact needs. A submission pays for the decoder's bytes, so `pack --decoder-out` writes only the
//! lines the artifact's codec, span codings, shuffles and LQER corrections use.
//!
//! Tags in the source: a line ending in `  #:a|b` is kept when feature `a` or `b` is needed; lines between
//! `#{a|b` and `#}` (markers on lines of their own) likewise. `doc` is never needed: the tailored file drops the
//! docstring and the tag explanation. The full file, tags as comments, reads every artifact.

use std::collections::BTreeSet;

use super::codec::Codec;
use super::container::Header;

/// The full decoder (every codec and feature).
pub const PYTHON_DECODER: &str = include_str!("../../python/pgolf_decode.py");

/// The decoder features an artifact needs: `rans` (codec 0 symbols), `body` and its coder (codecs 1–4),
/// `body_shuffle`, `coded` and each span coder, `span_shuffle`, `lqer`.
pub fn features(header: &Header, codec: Codec, shuffle: usize) -> BTreeSet<String> {
    let mut need = BTreeSet::new();
    match codec {
        Codec::Rans => {
            need.insert("rans".to_string());
        }
        Codec::General(c) => {
            need.insert("body".into());
            need.insert(c.name().into());
            if shuffle > 1 {
                need.insert("body_shuffle".into());
            }
        }
    }
    for t in &header.tensors {
        if t.lqer.is_some() {
            need.insert("lqer".into());
        }
        let spans = [
            &t.scales,
            &t.values,
            &t.lqer_a,
            &t.lqer_a_scales,
            &t.lqer_b,
            &t.lqer_b_scales,
        ];
        for coding in spans
            .into_iter()
            .flatten()
            .filter_map(|s| s.coding.as_deref())
        {
            let (coder, stride) = coding.split_once("+shuffle").unwrap_or((coding, ""));
            need.insert("coded".into());
            need.insert(coder.to_string());
            if !stride.is_empty() {
                need.insert("span_shuffle".into());
            }
        }
    }
    need
}

/// Whether a tag list (`a|b`) names a needed feature.
fn wanted(tags: &str, need: &BTreeSet<String>) -> bool {
    tags.split('|').any(|t| need.contains(t.trim()))
}

/// The decoder source without the lines `need` does not ask for, and without the tags.
pub fn tailor(source: &str, need: &BTreeSet<String>) -> String {
    let mut out = String::with_capacity(source.len());
    // Whether each open block is kept.
    let mut blocks: Vec<bool> = Vec::new();
    for line in source.lines() {
        let trimmed = line.trim_start();
        if let Some(tags) = trimmed.strip_prefix("#{") {
            blocks.push(wanted(tags, need));
            continue;
        }
        if trimmed == "#}" {
            blocks.pop();
            continue;
        }
        if blocks.iter().any(|kept| !kept) {
            continue;
        }
        let (code, keep) = match line.rfind("  #:") {
            Some(at)
                if line[at + 4..]
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '|') =>
            {
                (&line[..at], wanted(&line[at + 4..], need))
            }
            _ => (line, true),
        };
        if keep {
            out.push_str(code);
            out.push('\n');
        }
    }
    // Blank lines left in a row where blocks were cut: at most two, as the source has.
    let mut tidy = String::with_capacity(out.len());
    let mut blanks = 0;
    for line in out.lines() {
        blanks = if line.trim().is_empty() {
            blanks + 1
        } else {
            0
        };
        if blanks <= 2 {
            tidy.push_str(line);
            tidy.push('\n');
        }
    }
    tidy.trim_start_matches('\n').to_string()
}

/// The decoder one artifact needs.
pub fn tailored(header: &Header, codec: Codec, shuffle: usize) -> String {
    tailor(PYTHON_DECODER, &features(header, codec, shuffle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(f: &[&str]) -> BTreeSet<String> {
        f.iter().map(|s| s.to_string()).collect()
    }

    /// Every feature an artifact can need.
    const FEATURES: [&str; 10] = [
        "rans",
        "body",
        "body_shuffle",
        "coded",
        "span_shuffle",
        "lqer",
        "zlib",
        "zstd",
        "xz",
        "brotli",
    ];

    #[test]
    fn every_tag_in_the_decoder_is_a_known_feature_and_blocks_balance() {
        let mut known = need(&FEATURES);
        known.insert("doc".into());
        let mut depth = 0i32;
        for line in PYTHON_DECODER.lines() {
            let t = line.trim_start();
            let tags = if let Some(tags) = t.strip_prefix("#{") {
                depth += 1;
                Some(tags)
            } else if t == "#}" {
                depth -= 1;
                assert!(depth >= 0, "unbalanced #}}");
                None
            } else {
                line.rfind("  #:").map(|at| &line[at + 4..])
            };
            for tag in tags.into_iter().flat_map(|t| t.split('|')) {
                assert!(known.contains(tag), "unknown tag {tag:?} in: {line}");
            }
        }
        assert_eq!(depth, 0);
    }

    #[test]
    fn tailoring_keeps_what_is_needed_and_drops_the_rest() {
        let full = tailor(PYTHON_DECODER, &need(&FEATURES));
        assert!(!full.contains("#:") && !full.contains("#{") && !full.contains("\n#}"));
        assert!(
            !full.contains("\"\"\"pgolf artifact"),
            "the docstring is dropped"
        );
        for needle in [
            "def _rans",
            "def _un",
            "import lzma",
            "zstandard",
            "lqer_",
            "brotli",
        ] {
            assert!(full.contains(needle), "{needle}");
        }
        // A plain rANS artifact without coded spans or LQER.
        let lean = tailor(PYTHON_DECODER, &need(&["rans"]));
        assert!(lean.contains("def _rans") && lean.contains("def load"));
        for gone in [
            "def _un",
            "def _dec",
            "import lzma",
            "zstandard",
            "lqer_",
            "brotli",
            "_dec(",
        ] {
            assert!(!lean.contains(gone), "{gone} should be cut");
        }
        assert!(
            lean.len() * 10 < PYTHON_DECODER.len() * 8,
            "{} bytes",
            lean.len()
        );
        // A whole-body xz artifact: no rANS.
        let xz = tailor(PYTHON_DECODER, &need(&["body", "xz"]));
        assert!(xz.contains("import lzma") && !xz.contains("def _rans") && !xz.contains("def _un"));
    }
}
