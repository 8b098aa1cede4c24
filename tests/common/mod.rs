#![allow(dead_code)]
//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> PathBuf {
    root().join("fixtures").join(rel)
}

/// `../shared` beside the checkout (CI puts it there).
pub fn shared(rel: &str) -> PathBuf {
    root().join("..").join("shared").join(rel)
}

pub fn tokenizer_path(vocab: usize) -> PathBuf {
    shared(&format!("data/tokenizers/fineweb_{vocab}_bpe.model"))
}

pub fn golden(name: &str) -> serde_json::Value {
    let p = fixture(name);
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

pub fn pgolf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgolf"))
        .args(args)
        .output()
        .expect("run pgolf")
}

/// Runs pgolf expecting failure; returns stderr, checked to be one line that starts with `pgolf: error:`.
pub fn pgolf_err(args: &[&str]) -> String {
    let out = pgolf(args);
    assert!(
        !out.status.success(),
        "pgolf {args:?} should fail; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1), "exit code for {args:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("pgolf: error:"), "stderr: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one-line error expected: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

pub fn pgolf_json(args: &[&str]) -> serde_json::Value {
    let out = pgolf(args);
    assert!(
        out.status.success(),
        "pgolf {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pgolf-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
