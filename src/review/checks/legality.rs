//! Static legality hints from the code (never verdicts): the patterns reviewers have caught, each with a reason.

use std::sync::LazyLock;

use regex::Regex;

use super::{Check, Status, check};
use crate::review::folder::CodeFile;

struct Hint {
    what: &'static str,
    pattern: Regex,
}

/// Code patterns that deserve a reviewer's look (spec §5, §7). Hints, never verdicts.
static HINTS: LazyLock<Vec<Hint>> = LazyLock::new(|| {
    let h = |what, p: &str| Hint {
        what,
        pattern: Regex::new(p).expect("hint"),
    };
    vec![
        h(
            "n-gram table keyed by the target token (C2: check the lookup is by context only, and normalized)",
            r"(?i)(ngram|n_gram|cache|table|counts?)\w*\s*\[[^\]]*\b(target|tgt|y_true|next_tok\w*|y\[)",
        ),
        h(
            "n-gram cache or tilt at evaluation (C2: a probability over the whole vocabulary?)",
            r"(?i)\b(ngram|n_gram)_?(cache|tilt|eval|mix)",
        ),
        h(
            "SLOT-style per-window delta optimized at evaluation (C1/C3)",
            r"\b(?:slot_\w+|SLOT_[A-Z_]+)\b|delta\s*=\s*torch\.zeros\([^)]*requires_grad\s*=\s*True",
        ),
        h(
            "pre-quantization TTT on validation tokens (ruled illegal, spec §5.7)",
            r"(?i)pre_?quant\w*_?ttt|ttt\w*_?pre_?quant",
        ),
        h(
            "validation data read in calibration or training (spec §5.1, §5.9)",
            r"(?i)(calib|hessian|gptq)\w*.*\b(val_tokens|fineweb_val|val_files|val_loader)\b|\b(val_tokens|fineweb_val|val_files)\b.*(calib|hessian)",
        ),
        h(
            "code loaded from another file at run time (its bytes count as code, spec §6.1)",
            r#"exec\(\s*open\(|exec\(\s*compile\(\s*open\(|runpy\.run_path|importlib\.import_module\(\s*["']train"#,
        ),
        h(
            "several TTT epochs over the same tokens: check each chunk is scored before its first update (C3)",
            r#"(?i)TTT_EPOCHS["']?\s*,\s*["']?([2-9]|\d{2,})"#,
        ),
    ]
});

/// `static_legality`: hints from the code (never verdicts): n-gram tables keyed by the target, SLOT-style deltas,
/// pre-quant TTT, validation files in calibration, multi-epoch TTT. `pass` with none, `unknown` with any.
pub fn static_legality(code: Option<&CodeFile>) -> Check {
    let Some(code) = code else {
        return check(
            "static_legality",
            Status::Unknown,
            "no code to read",
            vec![],
        );
    };
    let mut hits = Vec::new();
    for (i, line) in code.source.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        for h in HINTS.iter() {
            if h.pattern.is_match(t) {
                hits.push(format!(
                    "{}:{}: {}: {}",
                    code.file,
                    i + 1,
                    h.what,
                    t.chars().take(160).collect::<String>()
                ));
            }
        }
    }
    let source = if code.wrapper.is_some() {
        " (decoded from its wrapper)"
    } else {
        ""
    };
    if hits.is_empty() {
        check(
            "static_legality",
            Status::Pass,
            format!("no hint in {}{source}", code.file),
            vec![],
        )
    } else {
        let n = hits.len();
        hits.truncate(40);
        check(
            "static_legality",
            Status::Unknown,
            format!(
                "{n} line(s) for a reviewer to read in {}{source}",
                code.file
            ),
            hits,
        )
    }
}
