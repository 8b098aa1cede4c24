//! Malformed input for every reader: truncations, bit flips, oversized declarations and wrong types. Each must be a
//! clean error (or, for a flip that leaves the input valid, a result) — never a panic, a hang or an unbounded
//! allocation.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use common::*;
use pgolf::data::sentencepiece::SpModel;
use pgolf::data::shard;
use pgolf::infer::config::ModelConfig;
use pgolf::pack::artifact::load_artifact_bytes;
use pgolf::pack::{Limits, pickle, rans};

/// Truncations at 40 points and single-bit flips at 200 positions spread over the input.
fn mutations(good: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let n = good.len();
    for i in 0..40 {
        out.push(good[..n * i / 40].to_vec());
    }
    let mut seed = 0x9e3779b97f4a7c15u64;
    for k in 0..200 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Half of the flips land in the first 256 bytes, where headers live.
        let pos = if k % 2 == 0 {
            (seed >> 33) as usize % n.min(256)
        } else {
            (seed >> 33) as usize % n
        };
        let mut m = good.to_vec();
        m[pos] ^= 1 << ((seed >> 20) % 8);
        out.push(m);
    }
    out
}

fn never_panics<T, E>(
    what: &str,
    inputs: Vec<Vec<u8>>,
    read: impl Fn(&[u8]) -> Result<T, E>,
) -> usize {
    let mut errors = 0;
    for (i, input) in inputs.iter().enumerate() {
        match catch_unwind(AssertUnwindSafe(|| read(input))) {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => errors += 1,
            Err(_) => panic!("{what}: mutation {i} ({} bytes) panicked", input.len()),
        }
    }
    errors
}

fn small_limits() -> Limits {
    Limits {
        max_decompressed_bytes: 64 << 20,
        ..Limits::default()
    }
}

#[test]
fn shards() {
    let good = std::fs::read(fixture("data/sp1024/fineweb_val_000000.bin")).unwrap();
    let errors = never_panics("shard", mutations(&good), |b| {
        shard::parse_shard(Path::new("m.bin"), b, &Limits::default())
    });
    assert!(errors >= 39, "every truncation is an error ({errors})");
    // An oversized declaration: 2^31 − 1 tokens in a 1 KiB file.
    let mut big = shard::encode_shard(&[1, 2, 3]);
    big[8..12].copy_from_slice(&i32::MAX.to_le_bytes());
    let e = shard::parse_shard(Path::new("big.bin"), &big, &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("big.bin") && e.contains("exceed the limit"),
        "{e}"
    );
}

#[test]
fn sentencepiece_models() {
    let good = std::fs::read(tokenizer_path(1024)).unwrap();
    never_panics("spm", mutations(&good), |b| {
        SpModel::from_bytes(Path::new("m.model"), b)
    });
    // Wrong type: a shard is not a model.
    let shard_bytes = std::fs::read(fixture("data/sp1024/fineweb_val_000000.bin")).unwrap();
    assert!(SpModel::from_bytes(Path::new("shard.model"), &shard_bytes).is_err());
}

#[test]
fn artifacts_of_every_layer() {
    for name in [
        "artifacts/sp1024_tied.int8.ptz",
        "artifacts/sp1024_tied.int6.xz.ptz",
        "artifacts/sp1024_tied.int6.zst.ptz",
        "artifacts/sp1024_tied.int6.br.ptz",
        "artifacts/sp1024_tied.int6.rawlzma.ptz",
        "artifacts/sp1024_tied.int6.pgrp0.ptz",
        "artifacts/sp1024_tied.typed.xz.ptz",
        "artifacts/sp1024_tied.banked.pt",
        "pack/sp1024_tied.sdclip.pglf",
        "models/sp1024_tied.safetensors",
    ] {
        let good = std::fs::read(fixture(name)).unwrap();
        let limits = small_limits();
        let errors = never_panics(name, mutations(&good), |b| {
            load_artifact_bytes(Path::new(name), b.to_vec(), &limits)
        });
        assert!(errors > 0, "{name}: some mutations must be rejected");
    }
}

#[test]
fn pickles() {
    // The pickle inside the baseline fixture, mutated directly (no zip or zlib around it to catch the damage).
    let ptz = std::fs::read(fixture("artifacts/sp1024_tied.int8.ptz")).unwrap();
    let mut zip_bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::ZlibDecoder::new(ptz.as_slice()),
        &mut zip_bytes,
    )
    .unwrap();
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
    let mut pkl = Vec::new();
    std::io::Read::read_to_end(&mut z.by_name("archive/data.pkl").unwrap(), &mut pkl).unwrap();
    let limits = Limits::default();
    never_panics("pickle", mutations(&pkl), |b| pickle::unpickle(b, &limits));
    // Oversized declarations: a 4 GiB string and a 2^63-byte BINBYTES8.
    assert!(pickle::unpickle(b"\x80\x02X\xff\xff\xff\xff", &limits).is_err());
    assert!(pickle::unpickle(b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\x7f", &limits).is_err());
    // Wrong types: REDUCE on a string, SETITEM on a list, a tensor rebuild without a storage.
    assert!(pickle::unpickle(b"\x80\x02X\x01\x00\x00\x00a)R.", &limits).is_err());
    assert!(pickle::unpickle(b"\x80\x02]K\x01K\x02s.", &limits).is_err());
    assert!(
        pickle::unpickle(
            b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(K\x00K\x00)))tR.",
            &limits
        )
        .is_err()
    );
}

#[test]
fn rans_streams() {
    let syms: Vec<i8> = (0..70_000)
        .map(|i: i32| (i * 7919 % 61 - 30) as i8)
        .collect();
    let good = rans::encode(&syms);
    never_panics("rans", mutations(&good), |b| rans::decode(b, 1 << 24));
    // An oversized declaration is refused before any allocation.
    assert!(
        rans::decode(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f], 1 << 24)
            .unwrap_err()
            .to_string()
            .contains("limit")
    );
}

#[test]
fn configs() {
    for bad in [
        r#"{"num_layers": "nine"}"#,
        r#"{"model_dim": -512}"#,
        r#"{"num_heads": 0}"#,
        r#"{"vocab_size": 99999999999}"#,
        r#"{"logit_softcap": -1}"#,
        r#"[1, 2, 3]"#,
        r#"{"model_dim": 512, "num_heads": 8, "num_kv_heads": 3}"#,
        "{",
    ] {
        let parsed: Result<ModelConfig, _> = serde_json::from_str(bad);
        let rejected = match parsed {
            Err(_) => true,
            Ok(cfg) => cfg.validate().is_err(),
        };
        assert!(rejected, "{bad} must be rejected");
    }
}

#[test]
fn the_cli_gives_one_line_and_leaves_no_output_on_bad_input() {
    let dir = temp_dir("cli-malformed");
    let good = std::fs::read(fixture("artifacts/sp1024_tied.int8.ptz")).unwrap();
    let bad = dir.join("bad.ptz");
    std::fs::write(&bad, &good[..good.len() / 3]).unwrap();
    let e = pgolf_err(&["inspect", s(&bad)]);
    assert!(e.contains("bad.ptz"), "{e}");
    let out = dir.join("out.pglf");
    let e = pgolf_err(&["pack", s(&bad), "-o", s(&out)]);
    assert!(e.contains("bad.ptz"), "{e}");
    assert!(!out.exists());
    let e = pgolf_err(&[
        "verify",
        s(&bad),
        "--config",
        s(&fixture("models/sp1024_tied.json")),
        "--val",
        &format!(
            "{}/fineweb_val_*.bin",
            fixture("models/val_sp1024").display()
        ),
        "--tokenizer",
        s(&tokenizer_path(1024)),
    ]);
    assert!(e.contains("bad.ptz"), "{e}");
}

#[test]
fn limits_are_named_and_can_be_raised() {
    let dir = temp_dir("limits");
    let p = dir.join("fineweb_val_000000.bin");
    std::fs::write(
        &p,
        shard::encode_shard(&(0..5000u16).map(|i| i % 200 + 1).collect::<Vec<_>>()),
    )
    .unwrap();
    let e = pgolf_err(&[
        "data",
        "stats",
        "--val",
        s(&p),
        "--tokenizer",
        "byte260",
        "--max-shard-tokens",
        "1000",
    ]);
    assert!(
        e.contains("fineweb_val_000000.bin")
            && e.contains("exceed the limit of 1000 tokens")
            && e.contains("--max-shard-tokens"),
        "{e}"
    );
    let out = pgolf(&[
        "data",
        "stats",
        "--val",
        s(&p),
        "--tokenizer",
        "byte260",
        "--max-shard-tokens",
        "5000",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = pgolf_err(&[
        "inspect",
        s(&fixture("artifacts/sp1024_tied.typed.xz.ptz")),
        "--max-tensor-elements",
        "100",
    ]);
    assert!(e.contains("exceeds the limit of 100 elements"), "{e}");
}

/// Found by the `artifact` fuzz target: a PGRP container whose damaged lrzip stream kept lrzip busy for ~40 s on a
/// loaded machine (it fails sooner on an idle one). Whatever lrzip does with it, pgolf ends with a clean error.
#[test]
fn the_fuzzed_pgrp_input_ends_in_a_clean_error() {
    let p = fixture("regressions/pgrp_lrzip_slow.ptz");
    let e = pgolf_err(&["inspect", s(&p), "--max-external-seconds", "1"]);
    assert!(
        e.contains("pgrp_lrzip_slow.ptz") && e.contains("lrzip"),
        "{e}"
    );
}

/// The time limit itself, made deterministic with a stand-in `lrzip` that never finishes.
#[cfg(unix)]
#[test]
fn an_external_decompressor_is_stopped_at_the_time_limit() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("slow-lrzip");
    let fake = dir.join("lrzip");
    std::fs::write(&fake, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin", dir.display());
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgolf"))
        .args([
            "inspect",
            s(&fixture("artifacts/sp1024_tied.int6.pgrp.ptz")),
            "--max-external-seconds",
            "1",
        ])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("ran past the limit of 1 s and was stopped"),
        "{e}"
    );
    assert!(
        started.elapsed().as_secs() < 30,
        "stopped near the limit, not after the program's 60 s"
    );
}
