//! JSON on stdout.

use serde::Serialize;

/// One JSON object through `serde_json::Value`: keys sorted, f32 values widened to f64 — the form `pack`, `inspect`,
/// `data stats` and `train` have always printed (their reports were built as JSON values before they were types).
pub fn json_value<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::to_value(value)?)?
    );
    Ok(())
}
