//! Artifact reading and `pgolf inspect`, against `fixtures/generate_artifacts.py` (the challenge's exporter and a
//! spec-following int6 writer, dequantized by their own code) and the real published artifact under `fixtures/artifacts/`.

mod common;

use std::io::Write;

use common::*;
use pgolf::pack::artifact::load_artifact;
use pgolf::pack::{Limits, PackError};
use serde_json::Value;

const FIXTURES: [&str; 10] = [
    "sp1024_tied.int6.rawlzma.ptz",
    "sp1024_tied.int6.pgrp0.ptz",
    "sp1024_tied.int8.ptz",
    "sp1024_tied.int6.xz.ptz",
    "sp1024_tied.int6.zst.ptz",
    "sp1024_tied.int6.br.ptz",
    "sp1024_tied.int6.bshf1.ptz",
    "sp1024_tied.typed.xz.ptz",
    "sp1024_tied.lqer.zst.ptz",
    "sp1024_tied.banked.pt",
];

/// `pgolf verify --json` of a fixture artifact with the sp1024_tied config on the model fixtures' stream.
fn verify_fixture(rel: &str) -> Value {
    pgolf_json(&[
        "verify",
        s(&fixture(rel)),
        "--config",
        s(&fixture("models/sp1024_tied.json")),
        "--val",
        &format!(
            "{}/fineweb_val_*.bin",
            fixture("models/val_sp1024").display()
        ),
        "--tokenizer",
        s(&tokenizer_path(1024)),
        "--json",
    ])
}

fn artifacts_golden() -> Value {
    golden("artifacts/golden_artifacts.json")
}

fn check_against_golden(path: &std::path::Path, g: &Value) {
    let a = load_artifact(path, &Limits::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(a.file_bytes, g["bytes"].as_u64().unwrap());
    assert_eq!(a.format, g["format"].as_str().unwrap());
    let layers: Vec<String> = a.layers.iter().map(|l| l.name()).collect();
    let expected_layers: Vec<&str> = g["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(layers, expected_layers, "{}", path.display());
    let expected = g["tensors"].as_array().unwrap();
    let mut ours: Vec<_> = a.tensors.iter().collect();
    ours.sort_by(|x, y| x.name.cmp(&y.name));
    let mut names: Vec<&str> = expected
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        ours.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        names,
        "{}",
        path.display()
    );
    for e in expected {
        let name = e["name"].as_str().unwrap();
        let t = a.tensors.iter().find(|t| t.name == name).unwrap();
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{name}");
        let scheme = e["scheme"].as_str().unwrap();
        assert!(
            t.scheme.starts_with(scheme),
            "{name}: {} vs {scheme}",
            t.scheme
        );
        let values = t.dequantize();
        let sum: f64 = values.iter().map(|&v| v as f64).sum();
        let abs_sum: f64 = values.iter().map(|&v| (v as f64).abs()).sum();
        let (gs, ga) = (e["sum"].as_f64().unwrap(), e["abs_sum"].as_f64().unwrap());
        assert!(
            (abs_sum - ga).abs() <= 1e-6 * ga.max(1.0),
            "{name}: Σ|x| {abs_sum} vs {ga}"
        );
        assert!(
            (sum - gs).abs() <= 1e-6 * ga.max(1.0),
            "{name}: Σx {sum} vs {gs}"
        );
    }
}

#[test]
fn fixtures_open_and_dequantize_like_their_writers() {
    let g = artifacts_golden();
    for name in FIXTURES {
        check_against_golden(&fixture(&format!("artifacts/{name}")), &g[name]);
    }
}

#[test]
fn pgrp_groups_decode_with_lrzip_or_name_what_is_missing() {
    let path = fixture("artifacts/sp1024_tied.int6.pgrp.ptz");
    if lrzip_installed() {
        check_against_golden(&path, &artifacts_golden()["sp1024_tied.int6.pgrp.ptz"]);
    }
    // Without the program on PATH, the error says what is missing.
    let empty = temp_dir("nopath");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgolf"))
        .args(["inspect", s(&path)])
        .env("PATH", &empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("`lrzip` program is not on PATH") && e.contains("_tok_emb.weight.q"),
        "{e}"
    );
}

#[test]
fn a_pgrp_stream_past_the_end_is_refused() {
    let dir = temp_dir("pgrp");
    // Version 1: nine streams declared (a version-2 frame's word is 2).
    let mut bytes = b"PGRP".to_vec();
    bytes.extend_from_slice(&9u32.to_le_bytes());
    bytes.extend_from_slice(&10u32.to_le_bytes());
    bytes.extend_from_slice(&1000u32.to_le_bytes());
    for _ in 0..7 {
        bytes.extend_from_slice(&0u32.to_le_bytes());
    }
    bytes.extend_from_slice(&[0u8; 20]);
    let p = write(&dir, "short.ptz", &bytes);
    let e = load_artifact(&p, &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("short.ptz") && e.contains("stream 1 of 1000 bytes runs past the end"),
        "{e}"
    );
}

#[test]
fn every_packed_scheme_is_recognised() {
    let a = load_artifact(
        &fixture("artifacts/sp1024_tied.typed.xz.ptz"),
        &Limits::default(),
    )
    .unwrap();
    let mut kinds: Vec<String> = a
        .tensors
        .iter()
        .map(|t| t.scheme.split("_g").next().unwrap().to_string())
        .collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "binary",
            "fp16",
            "fp4_per_row",
            "fp8",
            "ternary",
            "ternary_bitmask"
        ]
    );
    let a = load_artifact(
        &fixture("artifacts/sp1024_tied.lqer.zst.ptz"),
        &Limits::default(),
    )
    .unwrap();
    let scheme = |n: &str| {
        a.tensors
            .iter()
            .find(|t| t.name == n)
            .unwrap()
            .scheme
            .clone()
    };
    assert_eq!(scheme("blocks.0.attn.c_q.weight"), "gate_int8_row");
    assert_eq!(scheme("blocks.1.mlp.fc.weight"), "int6_per_row+lqer_asym");
    assert_eq!(scheme("blocks.2.mlp.fc.weight"), "int6_per_row+lqer");
    // The banked checkpoint verifies like the unbanked one: same names, same weights.
    let out = verify_fixture("artifacts/sp1024_tied.banked.pt");
    let g = golden("models/golden_sp1024_tied.json");
    let (a, b) = (
        out["val_bpb"].as_f64().unwrap(),
        g["eval_val"]["val_bpb"].as_f64().unwrap(),
    );
    assert!(((a - b) / b).abs() < 1e-6, "{a} vs {b}");
}

#[test]
fn the_real_published_artifact_opens_and_dequantizes_like_the_challenge() {
    let g = artifacts_golden();
    check_against_golden(
        &fixture("artifacts/shared_blocks_int8_zlib.ptz"),
        &g["shared:shared_blocks_int8_zlib.ptz"],
    );
    let out = pgolf_json(&[
        "inspect",
        s(&fixture("artifacts/shared_blocks_int8_zlib.ptz")),
        "--json",
    ]);
    // 13 int8 matrices and 9 fp32 passthrough tensors, as the challenge's own dequantization lists them.
    assert_eq!(out["tensors"].as_array().unwrap().len(), 22);
    assert_eq!(out["parameters"], 4_200_464);
    let emb = &out["tensors"][0];
    assert_eq!(emb["name"], "tok_emb.weight");
    assert_eq!(emb["shape"], serde_json::json!([1024, 512]));
    assert_eq!(emb["scheme"], "int8_per_row");
    assert_eq!(emb["bits"], 8);
    assert_eq!(emb["params"], 524_288);
    assert_eq!(
        emb["scales"]["at_floor"], 1.0,
        "every row of this artifact sits at the 1/127 scale floor"
    );
}

#[test]
fn verify_reproduces_the_challenge_round_trip_bpb_of_an_int8_artifact() {
    let g = &artifacts_golden()["sp1024_tied.int8.ptz"]["roundtrip_eval_val"];
    let out = verify_fixture("artifacts/sp1024_tied.int8.ptz");
    for key in ["val_loss", "val_bpb"] {
        let (a, b) = (out[key].as_f64().unwrap(), g[key].as_f64().unwrap());
        assert!(((a - b) / b).abs() < 1e-6, "{key}: {a} vs {b}");
    }
}

#[test]
fn inspect_reports_sizes_code_and_margin() {
    let g = artifacts_golden();
    for (wrapper, kind) in [
        ("wrapped_lzma.py", "raw-lzma2+base85"),
        ("wrapped_brotli.py", "brotli+base85"),
    ] {
        let out = pgolf_json(&[
            "inspect",
            s(&fixture("artifacts/sp1024_tied.int6.br.ptz")),
            "--code",
            s(&fixture(&format!("artifacts/{wrapper}"))),
            "--json",
        ]);
        let model = g["sp1024_tied.int6.br.ptz"]["bytes"].as_u64().unwrap();
        let code = g[wrapper]["bytes"].as_u64().unwrap();
        assert_eq!(out["model_bytes"].as_u64(), Some(model));
        assert_eq!(out["size"]["code_bytes"].as_u64(), Some(code));
        assert_eq!(out["code"]["wrapper"], kind);
        assert_eq!(out["code"]["decoded_bytes"], g[wrapper]["decoded_bytes"]);
        assert_eq!(out["size"]["total_bytes"].as_u64(), Some(model + code));
        assert_eq!(
            out["size"]["headroom_bytes"].as_i64(),
            Some(16_000_000 - (model + code) as i64)
        );
        assert_eq!(out["size"]["under_budget"], true, "fits");
        let shares: f64 = out["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["share"].as_f64().unwrap())
            .sum();
        assert!((shares - 1.0).abs() < 1e-9);
        for t in out["tensors"].as_array().unwrap() {
            for k in ["name", "shape", "scheme", "bits", "params"] {
                assert!(t.get(k).is_some(), "tensor entry lacks {k}");
            }
        }
    }
}

// ---- hostile files ----

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn a_well_formed_handmade_pickle_is_read() {
    let dir = temp_dir("pickle-ok");
    let p = write(
        &dir,
        "ok.pt",
        &torch_zip(
            &tensor_pickle(6, 0, &[2, 3], &[3, 1]),
            &[("0", vec![1, 2, 3, 4, 5, 6])],
        ),
    );
    let a = load_artifact(&p, &Limits::default()).unwrap();
    assert_eq!(a.tensors[0].shape, vec![2, 3]);
    assert_eq!(
        a.tensors[0].dequantize(),
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );
    // A transposed view (stride honoured).
    let p = write(
        &dir,
        "t.pt",
        &torch_zip(
            &tensor_pickle(6, 0, &[3, 2], &[1, 3]),
            &[("0", vec![1, 2, 3, 4, 5, 6])],
        ),
    );
    assert_eq!(
        load_artifact(&p, &Limits::default()).unwrap().tensors[0].dequantize(),
        vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
    );
}

#[test]
fn a_pickle_asking_for_any_other_global_is_refused_by_name() {
    let dir = temp_dir("pickle-global");
    let evil = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idtR.".to_vec();
    let p = write(&dir, "evil.pt", &torch_zip(&evil, &[]));
    let e = load_artifact(&p, &Limits::default()).unwrap_err();
    assert!(matches!(e, PackError::Pickle { .. }), "{e}");
    assert!(
        e.to_string().contains("global os.system is not allowed")
            && e.to_string().contains("evil.pt"),
        "{e}"
    );
    let err = pgolf_err(&["inspect", s(&p)]);
    assert!(err.contains("os.system"), "{err}");
}

#[test]
fn a_shape_larger_than_its_storage_is_refused() {
    let dir = temp_dir("pickle-shape");
    let p = write(
        &dir,
        "big.pt",
        &torch_zip(
            &tensor_pickle(6, 0, &[200, 200], &[200, 1]),
            &[("0", vec![0; 6])],
        ),
    );
    let e = load_artifact(&p, &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("past its storage of 6 elements"), "{e}");
}

#[test]
fn a_truncated_zip_is_refused() {
    let dir = temp_dir("zip-trunc");
    let full = torch_zip(
        &tensor_pickle(6, 0, &[2, 3], &[3, 1]),
        &[("0", vec![1, 2, 3, 4, 5, 6])],
    );
    let p = write(&dir, "cut.pt", &full[..full.len() - 30]);
    let e = load_artifact(&p, &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cut.pt") && e.contains("not a torch.save zip"),
        "{e}"
    );
    let real = std::fs::read(fixture("artifacts/shared_blocks_int8_zlib.ptz")).unwrap();
    let p = write(&dir, "cut.ptz", &real[..real.len() / 2]);
    let e = load_artifact(&p, &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cut.ptz") && e.contains("zlib layer is corrupt"),
        "{e}"
    );
}

#[test]
fn a_decompression_bomb_stops_at_the_cap() {
    let dir = temp_dir("bomb");
    let zeros = vec![0u8; 64 << 20];
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(9));
    e.write_all(&zeros).unwrap();
    let p = write(&dir, "bomb.ptz", &e.finish().unwrap());
    let limits = Limits {
        max_decompressed_bytes: 1 << 20,
        ..Limits::default()
    };
    let err = load_artifact(&p, &limits).unwrap_err();
    assert!(matches!(err, PackError::TooLarge { .. }), "{err}");
    let err = pgolf_err(&["inspect", s(&p), "--max-decompressed-bytes", "1048576"]);
    assert!(
        err.contains("bomb.ptz") && err.contains("past the limit of 1048576 bytes"),
        "{err}"
    );
}

#[test]
fn deep_or_self_referencing_pickles_are_bounded() {
    let dir = temp_dir("deep");
    // 200 nested lists: ]]]]…a a a …
    let mut p = vec![0x80, 2];
    p.extend(std::iter::repeat_n(b']', 200));
    p.extend(std::iter::repeat_n(b'a', 199));
    p.push(b'.');
    let path = write(&dir, "deep.pt", &torch_zip(&p, &[]));
    let e = load_artifact(&path, &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("nested deeper than 64"), "{e}");
    // A list that keeps appending copies of itself through the memo doubles each step.
    let mut p = vec![0x80, 2, b']', b'q', 0];
    for _ in 0..64 {
        p.extend_from_slice(&[b'h', 0, b'h', 0, b'\x86', b'q', 0]);
    }
    p.push(b'.');
    let path = write(&dir, "doubling.pt", &torch_zip(&p, &[]));
    let e = load_artifact(&path, &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nested deeper") || e.contains("more than"),
        "{e}"
    );
}

#[test]
fn unknown_formats_say_what_they_are_not() {
    let dir = temp_dir("unknown");
    let p = write(
        &dir,
        "junk.bin",
        b"\x00\x01\x02\x03 this is not an artifact at all",
    );
    let e = pgolf_err(&["inspect", s(&p)]);
    assert!(
        e.contains("junk.bin") && e.contains("unknown format"),
        "{e}"
    );
    let p = write(&dir, "lrz.ptz", b"LRZI\x00\x06 rest of an lrzip file");
    let e = pgolf_err(&["inspect", s(&p)]);
    assert!(e.contains("lrzip stream") && e.contains("lrzip -d"), "{e}");
}
