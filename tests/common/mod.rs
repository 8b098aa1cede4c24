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

/// The challenge's SentencePiece model of this vocabulary, shipped under `fixtures/tokenizers/`.
/// The glob of the model fixtures' validation stream for this vocabulary (`fixtures/models/val_sp{vocab}/`).
pub fn model_val_glob(vocab: usize) -> String {
    format!(
        "{}/fineweb_val_*.bin",
        fixture(&format!("models/val_sp{vocab}")).display()
    )
}

pub fn tokenizer_path(vocab: usize) -> PathBuf {
    fixture(&format!("tokenizers/fineweb_{vocab}_bpe.model"))
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

/// The finding with this id in a `verify --json` report (panics, naming the ids present, when it is missing).
pub fn finding<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    let all = report["findings"].as_array().expect("a findings list");
    all.iter().find(|f| f["id"] == id).unwrap_or_else(|| {
        let ids: Vec<&serde_json::Value> = all.iter().map(|f| &f["id"]).collect();
        panic!("no finding {id} in {ids:?}")
    })
}

/// The exit code and the JSON report of a run that may exit non-zero on purpose (a failing probe exits 2).
pub fn pgolf_report(args: &[&str]) -> (i32, serde_json::Value) {
    let out = pgolf(args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "pgolf {args:?}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().expect("exited"), json)
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

/// Logit goldens written by the fixture generators (`golden.safetensors`: `positions` i64, `rows` [P, V] f32 and
/// `nll` [T] f32) and the model-side helpers that compare against them.
pub mod logit_golden {
    use candle_core::{DType, Device, Tensor};
    use pgolf::infer::config::ModelConfig;
    use pgolf::infer::lm::CausalLm;
    use pgolf::infer::model::Gpt;
    use pgolf::infer::weights;
    use pgolf::kernels::Precision;
    use std::path::Path;

    pub const LOGIT_TOLERANCE: f32 = 1e-4;

    /// The model in `weights` under `cfg`; tensors the config does not name are dropped (a switched-off component's
    /// weights are simply unused).
    pub fn load(cfg: &ModelConfig, path: &Path) -> Gpt {
        let mut state = if path.extension().is_some_and(|e| e == "ptz") {
            artifact_state(path)
        } else {
            weights::load_safetensors(path, &Device::Cpu).unwrap()
        };
        let mut problems = Vec::new();
        state = weights::unbank(state, cfg.num_layers, &mut problems).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let names: std::collections::HashSet<String> =
            cfg.expected_tensors().into_iter().map(|(n, _)| n).collect();
        state.retain(|k, _| names.contains(k));
        let state = weights::check_state_dict(cfg, state, DType::F32, path).unwrap();
        Gpt::new(cfg.clone(), state, &Device::Cpu, Precision::Fp32).unwrap()
    }

    /// The tensors of an artifact, dequantized as `pgolf verify` reads them (the library's loader).
    pub fn artifact_state(path: &Path) -> weights::StateDict {
        pgolf::pack::artifact::load_weights(path, &Device::Cpu, &pgolf::limits::current())
            .unwrap()
            .state
    }

    /// (positions, golden rows [P, V], golden per-position NLL).
    pub fn rows(path: &Path) -> (Vec<usize>, Vec<Vec<f32>>, Vec<f32>) {
        let g = weights::load_safetensors(path, &Device::Cpu).unwrap();
        let positions = g["positions"]
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|p| p as usize)
            .collect();
        (
            positions,
            g["rows"].to_vec2::<f32>().unwrap(),
            g["nll"].to_vec1::<f32>().unwrap(),
        )
    }

    /// Soft-capped logits [T, V] of `tokens[..window]`.
    pub fn window_logits(model: &dyn CausalLm, tokens: &[u16], window: usize) -> Vec<Vec<f32>> {
        let ids: Vec<u32> = tokens[..window].iter().map(|&t| t as u32).collect();
        let ids = Tensor::from_vec(ids, (1, window), &Device::Cpu).unwrap();
        model
            .uncapped_logits(&ids)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
            .into_iter()
            .map(|row| row.into_iter().map(|z| model.softcap(z)).collect())
            .collect()
    }

    pub fn max_row_diff(logits: &[Vec<f32>], positions: &[usize], rows: &[Vec<f32>]) -> f32 {
        positions
            .iter()
            .zip(rows)
            .flat_map(|(&p, row)| logits[p].iter().zip(row).map(|(a, b)| (a - b).abs()))
            .fold(0.0, f32::max)
    }

    /// Cross-entropy of each row against its target.
    pub fn nll_of(logits: &[Vec<f32>], targets: &[u16]) -> Vec<f32> {
        logits
            .iter()
            .zip(targets)
            .map(|(row, &t)| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let lse = row
                    .iter()
                    .map(|z| ((z - max) as f64).exp())
                    .sum::<f64>()
                    .ln() as f32
                    + max;
                lse - row[t as usize]
            })
            .collect()
    }

    /// Logits within the tolerance at every golden row and NLL at every position of the window; returns the
    /// worst row difference.
    pub fn check(
        model: &dyn CausalLm,
        tokens: &[u16],
        window: usize,
        golden: &Path,
        label: &str,
    ) -> f32 {
        let logits = window_logits(model, tokens, window);
        let (positions, rows, nll) = rows(golden);
        let worst = max_row_diff(&logits, &positions, &rows);
        assert!(worst < LOGIT_TOLERANCE, "{label}: logits differ by {worst}");
        let ours = nll_of(&logits, &tokens[1..=window]);
        let worst_nll = ours
            .iter()
            .zip(&nll)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            worst_nll < LOGIT_TOLERANCE,
            "{label}: NLL differs by {worst_nll}"
        );
        worst
    }
}

/// A torch.save-style zip holding `pickle` as archive/data.pkl and the given storages.
pub fn torch_zip(pickle: &[u8], storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        use std::io::Write;
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        z.start_file("archive/data.pkl", opts).unwrap();
        z.write_all(pickle).unwrap();
        for (key, data) in storages {
            z.start_file(format!("archive/data/{key}"), opts).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
    }
    buf.into_inner()
}

/// Pickle of {"t": tensor} with a CharStorage of `numel` elements and the given storage offset, size and stride.
pub fn tensor_pickle(numel: u8, offset: u32, size: &[u8], stride: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'(', b'X', 1, 0, 0, 0, b't'];
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
    p.extend_from_slice(
        b"(X\x07\x00\x00\x00storagectorch\nCharStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK",
    );
    p.push(numel);
    p.extend_from_slice(b"tQJ");
    p.extend_from_slice(&offset.to_le_bytes());
    p.push(b'(');
    for d in size {
        p.extend_from_slice(&[b'K', *d]);
    }
    p.extend_from_slice(b"t(");
    for d in stride {
        p.extend_from_slice(&[b'K', *d]);
    }
    p.extend_from_slice(b"t\x89N)tRu.");
    p
}

/// Whether the `lrzip` program (which the PGRP containers need) can be run here.
pub fn lrzip_installed() -> bool {
    std::process::Command::new("lrzip")
        .arg("-V")
        .output()
        .is_ok()
}

/// A review's check by id (`pgolf review --json`'s `checks`).
pub fn check<'a>(r: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id}"))
}

/// A review check's status.
pub fn status(r: &serde_json::Value, id: &str) -> String {
    check(r, id)["status"].as_str().unwrap().to_string()
}

/// A copy of the review fixture record `fixtures/review/records/track_10min_16mb/NAME` in a temporary folder, to add
/// or change files.
pub fn copy_record(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("track_10min_16mb").join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(fixture(&format!("review/records/track_10min_16mb/{name}"))).unwrap()
    {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    (tmp, dst)
}
