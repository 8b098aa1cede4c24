//! Everything pgolf writes to stdout and stderr goes through here, so that text that came from an input (a
//! submission folder, a log line, a tensor name, a header, a config) cannot drive the reader's terminal: control
//! characters (C0, DEL, C1: escape sequences, carriage returns, line breaks inside a field) and the bidirectional
//! overrides that reorder what follows them on screen are printed escaped, as `\u{1b}`.
//!
//! - [`shown`] escapes one field of input text, line breaks included (a field is one line);
//! - `out!` / `out_part!` (this crate's `println!` / `print!`) escape every unsafe character of the formatted text
//!   except the line breaks our own formats write;
//! - [`json`] / [`json_value`] print JSON, whose strings serde already escapes below U+0020; DEL, C1 and the
//!   bidirectional controls are written as `\uXXXX`, which is the same JSON.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Serialize;

/// A character that must not reach a terminal as itself.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn escaped(
    s: &str,
    keep: impl Fn(char) -> bool,
    escape: impl Fn(char, &mut String),
) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_unsafe(c) && !keep(c) {
            escape(c, &mut out);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn rust_escape(c: char, out: &mut String) {
    let _ = write!(out, "\\u{{{:x}}}", c as u32);
}

/// One field of input text, safe to print on one line: every control character, line breaks included, and every
/// bidirectional control written as `\u{…}`.
pub fn shown(s: &str) -> Cow<'_, str> {
    escaped(s, |_| false, rust_escape)
}

/// A line (or lines) of our own format: unsafe characters escaped, the line breaks kept.
pub fn safe_text(s: &str) -> Cow<'_, str> {
    escaped(s, |c| c == '\n', rust_escape)
}

/// JSON text with DEL, C1 and the bidirectional controls written as JSON escapes (serde_json escapes the rest of
/// the control characters; the line breaks left are the pretty printer's own).
fn safe_json(s: &str) -> Cow<'_, str> {
    escaped(
        s,
        |c| c == '\n',
        |c, out| {
            let _ = write!(out, "\\u{:04x}", c as u32);
        },
    )
}

/// `println!` through [`safe_text`].
pub fn line(s: &str) {
    println!("{}", safe_text(s));
}

/// `print!` through [`safe_text`].
pub fn part(s: &str) {
    print!("{}", safe_text(s));
}

/// The error line at the command-line edge, on stderr.
pub fn error_line(msg: &str) {
    eprintln!("pgolf: error: {}", shown(msg));
}

/// One JSON object as serde writes it (fields in their declared order).
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", safe_json(&serde_json::to_string_pretty(value)?));
    Ok(())
}

/// One JSON object through `serde_json::Value`: keys sorted, f32 values widened to f64 — the form `pack`, `inspect`,
/// `data stats` and `train` have always printed (their reports were built as JSON values before they were types).
pub fn json_value<T: Serialize>(value: &T) -> anyhow::Result<()> {
    json(&serde_json::to_value(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_prints_on_one_line_with_its_controls_escaped() {
        assert_eq!(shown("plain · text"), "plain · text");
        assert_eq!(
            shown("\u{1b}[2J\u{1b}]0;owned\u{7}ok\nFAKE\r\u{9b}x\u{202e}y\u{7f}"),
            "\\u{1b}[2J\\u{1b}]0;owned\\u{7}ok\\u{a}FAKE\\u{d}\\u{9b}x\\u{202e}y\\u{7f}"
        );
    }

    #[test]
    fn our_line_breaks_stay_and_input_controls_do_not() {
        assert_eq!(safe_text("a\n\u{1b}[32mb"), "a\n\\u{1b}[32mb");
    }

    #[test]
    fn json_stays_json_with_every_control_escaped() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"name": "\u001b[2J\u009b1m\u202e\u007f"}"#).unwrap();
        let text = safe_json(&serde_json::to_string_pretty(&v).unwrap()).into_owned();
        assert!(!text.chars().any(|c| is_unsafe(c) && c != '\n'), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
    }
}
