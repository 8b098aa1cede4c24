//! `pgolf pack`: artifacts that read back, fit the budget or fail cleanly, and score what an independent reader
//! (python/pgolf_decode.py + the challenge's eval_val, via fixtures/generate_pack.py) says they score.

mod common;

use common::*;
use pgolf::pack::Limits;
use pgolf::pack::artifact::load_artifact;
use serde_json::Value;

/// The artifacts fixtures/generate_pack.py wrote and read back independently.
const PACKED_FIXTURES: [&str; 5] = [
    "sp1024_tied.sdclip.pglf",
    "sp1024_tied.gptqlite.xz.pglf",
    "sp1024_tied.gptq.pglf",
    "sp1024_tied.gptq_lqer.pglf",
    "sp1024_tied.sdclip_lqer_sym.xz.pglf",
];

fn pack_golden() -> Value {
    golden("pack/golden_pack.json")
}

fn val_glob() -> String {
    format!(
        "{}/fineweb_val_*.bin",
        fixture("models/val_sp1024").display()
    )
}

#[test]
fn rust_dequantization_matches_the_python_decoder() {
    let g = pack_golden();
    for name in PACKED_FIXTURES {
        let a = load_artifact(&fixture(&format!("pack/{name}")), &Limits::default()).unwrap();
        assert_eq!(a.file_bytes, g[name]["bytes"].as_u64().unwrap());
        assert!(a.config.is_some(), "{name} carries its config");
        for e in g[name]["tensors"].as_array().unwrap() {
            let t = a
                .tensors
                .iter()
                .find(|t| t.name == e["name"].as_str().unwrap())
                .unwrap();
            let d = t.dequantize();
            let sum: f64 = d.iter().map(|&x| x as f64).sum();
            let abs: f64 = d.iter().map(|&x| (x as f64).abs()).sum();
            let (gs, ga) = (e["sum"].as_f64().unwrap(), e["abs_sum"].as_f64().unwrap());
            assert!(
                (abs - ga).abs() <= 1e-9 * ga.max(1.0),
                "{name} {}: {abs} vs {ga}",
                t.name
            );
            assert!(
                (sum - gs).abs() <= 1e-9 * ga.max(1.0),
                "{name} {}: {sum} vs {gs}",
                t.name
            );
        }
    }
}

#[test]
fn verify_on_a_packed_artifact_reproduces_the_independent_bpb() {
    let g = pack_golden();
    for name in PACKED_FIXTURES {
        let out = pgolf_json(&[
            "verify",
            s(&fixture(&format!("pack/{name}"))),
            "--val",
            &val_glob(),
            "--tokenizer",
            s(&tokenizer_path(1024)),
            "--json",
        ]);
        for key in ["val_loss", "val_bpb"] {
            let (a, b) = (
                out[key].as_f64().unwrap(),
                g[name]["eval_val"][key].as_f64().unwrap(),
            );
            assert!(((a - b) / b).abs() < 1e-6, "{name} {key}: {a} vs {b}");
        }
    }
}

fn pack(dir: &std::path::Path, out: &str, extra: &[&str]) -> std::process::Output {
    let o = dir.join(out);
    let mut args: Vec<String> = vec![
        "pack".into(),
        s(&fixture("models/sp1024_tied.safetensors")).to_string(),
        "--config".into(),
        s(&fixture("models/sp1024_tied.json")).to_string(),
        "-o".into(),
        s(&o).to_string(),
        "--keep-float-max-numel".into(),
        "1024".into(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|x| x.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    pgolf(&refs)
}

#[test]
fn the_budget_search_lands_under_the_budget() {
    let dir = temp_dir("fit");
    let code = fixture("artifacts/wrapped_lzma.py");
    let code_bytes = std::fs::metadata(&code).unwrap().len();
    // The default SDClip settings take about 94 KB; ask for less so the search has to widen k.
    let budget = 80_000u64;
    let out = pack(
        &dir,
        "fit.pglf",
        &[
            "--budget",
            &budget.to_string(),
            "--code",
            s(&code),
            "--margin",
            "500",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let artifact = v["size"]["artifact_bytes"].as_u64().unwrap();
    assert_eq!(
        std::fs::metadata(dir.join("fit.pglf")).unwrap().len(),
        artifact
    );
    assert_eq!(v["size"]["code_bytes"].as_u64(), Some(code_bytes));
    assert_eq!(
        v["size"]["total_bytes"].as_u64(),
        Some(artifact + code_bytes)
    );
    assert!(
        artifact + code_bytes + 500 <= budget,
        "{artifact} + {code_bytes} + 500 > {budget}"
    );
    assert_eq!(
        v["size"]["headroom_bytes"].as_i64(),
        Some(budget as i64 - (artifact + code_bytes) as i64)
    );
    assert!(
        v["fit"]["k_factor"].as_f64().unwrap() > 1.0,
        "k had to widen"
    );
    assert!(v["fit"]["tries"].as_array().unwrap().len() > 2);
    assert_eq!(v["scheme"], "sdclip");
    assert_eq!(v["codec"], "rans");
    // Fixed-grid schemes lower bits instead.
    let out = pack(
        &dir,
        "bits.pglf",
        &["--scheme", "gptq-lite", "--budget", "100000"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["size"]["artifact_bytes"].as_u64().unwrap() <= 100_000);
    let bits: Vec<u64> = v["settings"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["bits"].as_u64().unwrap())
        .collect();
    assert!(bits.iter().any(|&b| b < 6), "{bits:?}");
}

#[test]
fn an_impossible_budget_fails_cleanly_and_writes_nothing() {
    let dir = temp_dir("nofit");
    let out = pack(&dir, "never.pglf", &["--budget", "20000"]);
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("cannot fit the budget") && e.contains("over the 20000 bytes available"),
        "{e}"
    );
    assert!(!dir.join("never.pglf").exists());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "no temporary file left behind"
    );
}

#[test]
fn corrupt_pgolf_artifacts_are_rejected() {
    let dir = temp_dir("corrupt");
    let good = std::fs::read(fixture("pack/sp1024_tied.sdclip.pglf")).unwrap();
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n - 10] ^= 1;
    std::fs::write(dir.join("flip.pglf"), &flipped).unwrap();
    let e = pgolf_err(&["inspect", s(&dir.join("flip.pglf"))]);
    assert!(
        e.contains("flip.pglf") && e.contains("sha256 mismatch"),
        "{e}"
    );
    std::fs::write(dir.join("short.pglf"), &good[..20]).unwrap();
    let e = pgolf_err(&["inspect", s(&dir.join("short.pglf"))]);
    assert!(e.contains("shorter than the 43-byte preamble"), "{e}");
    let mut version = good.clone();
    version[4] = 9;
    std::fs::write(dir.join("v9.pglf"), &version).unwrap();
    let e = pgolf_err(&["inspect", s(&dir.join("v9.pglf"))]);
    assert!(e.contains("version 9"), "{e}");
}

/// A checkpoint of the challenge's names at a given size, Gaussian weights from a fixed seed (splitmix64 +
/// Box–Muller): for coder comparisons, where only the symbols' distribution matters.
fn gaussian_checkpoint(path: &std::path::Path, layers: usize, dim: usize, vocab: usize) -> usize {
    let mut state = 0x5eed_u64;
    let mut next = || {
        state = state.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut gaussian = |n: usize, std: f64| -> Vec<u8> {
        (0..n)
            .flat_map(|_| {
                let (u, v) = (next().max(1e-300), next());
                let g = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos() * std;
                (g as f32).to_le_bytes()
            })
            .collect()
    };
    let kv = dim / 2;
    let mut shapes: Vec<(String, Vec<usize>)> = vec![("tok_emb.weight".into(), vec![vocab, dim])];
    for i in 0..layers {
        for (n, s) in [
            ("attn.c_q.weight", vec![dim, dim]),
            ("attn.c_k.weight", vec![kv, dim]),
            ("attn.c_v.weight", vec![kv, dim]),
            ("attn.proj.weight", vec![dim, dim]),
            ("mlp.fc.weight", vec![2 * dim, dim]),
            ("mlp.proj.weight", vec![dim, 2 * dim]),
            ("attn_scale", vec![dim]),
            ("mlp_scale", vec![dim]),
        ] {
            shapes.push((format!("blocks.{i}.{n}"), s));
        }
    }
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .into_iter()
        .map(|(n, s)| {
            let numel: usize = s.iter().product();
            let std = if s.len() == 2 {
                1.0 / (s[1] as f64).sqrt()
            } else {
                0.1
            };
            let bytes = gaussian(numel, std);
            (n, s, bytes)
        })
        .collect();
    let params = data
        .iter()
        .map(|(_, s, _)| s.iter().product::<usize>())
        .sum();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
    params
}

fn packed_bytes(
    input: &std::path::Path,
    config: Option<&std::path::Path>,
    out: &std::path::Path,
    codec: &str,
) -> u64 {
    let mut args = vec!["pack", s(input), "-o", s(out), "--codec", codec, "--json"];
    if let Some(c) = config {
        args.extend(["--config", s(c)]);
    }
    let o = pgolf(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::metadata(out).unwrap().len()
}

#[test]
fn the_default_codes_every_byte_and_is_never_larger_than_brotli() {
    let dir = temp_dir("every-byte");
    // Passthrough dominates the 4×64 fixture (every matrix is under 65,536 elements): before the scales and
    // values were coded, the rANS artifact was 365,953 bytes against brotli's 321,294.
    let model = fixture("models/sp1024_tied.safetensors");
    let config = fixture("models/sp1024_tied.json");
    let rans = dir.join("default.pglf");
    let brotli = dir.join("brotli.pglf");
    let (r, b) = (
        packed_bytes(&model, Some(&config), &rans, "rans"),
        packed_bytes(&model, Some(&config), &brotli, "brotli"),
    );
    assert!(r <= b, "default {r} bytes vs brotli {b}");
    // Both hold the same weights: the scores agree exactly.
    let bpb = |p: &std::path::Path| {
        pgolf_json(&[
            "verify",
            s(p),
            "--val",
            &val_glob(),
            "--tokenizer",
            s(&tokenizer_path(1024)),
            "--json",
        ])["val_bpb"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(bpb(&rans), bpb(&brotli));
    // inspect gives each tensor's exact bytes in the file: they add up to the body.
    let i = pgolf_json(&["inspect", s(&rans), "--json"]);
    let coded: u64 = i["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["coded_bytes"].as_u64().unwrap())
        .sum();
    assert!(
        coded < r && coded + 4096 > r,
        "tensors {coded} of {r} bytes (the rest is preamble and header)"
    );
    assert!(i["share_measured_as"].as_str().unwrap().contains("exact"));

    // A quantized 4M-parameter checkpoint: the rANS symbols beat brotli by at least 2.5%.
    let big = dir.join("gaussian.safetensors");
    let params = gaussian_checkpoint(&big, 8, 256, 1024);
    assert!(params > 3_900_000, "{params}");
    let (r, b) = (
        packed_bytes(&big, None, &dir.join("g-rans.pglf"), "rans"),
        packed_bytes(&big, None, &dir.join("g-brotli.pglf"), "brotli"),
    );
    assert!(
        (r as f64) <= 0.975 * b as f64,
        "default {r} vs brotli {b}: {:.2}%",
        100.0 * (1.0 - r as f64 / b as f64)
    );
}

#[test]
fn gptq_calibrates_on_training_shards_beats_sdclip_and_records_it() {
    let dir = temp_dir("gptq");
    let calib = format!(
        "{}/fineweb_train_*.bin",
        fixture("pack/calib_sp1024").display()
    );
    let out = pack(&dir, "g.pglf", &["--scheme", "gptq", "--calibrate", &calib]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["scheme"], "gptq");
    assert_eq!(r["calibration"]["tokens"], 16_384);
    assert_eq!(r["calibration"]["validation_data"], false);
    // 4 layers × 6 matrices plus the tied embedding (its Hessian from the final norm's output).
    assert_eq!(r["calibration"]["hessians"], 25);
    // The decoder's cost inside a records-style lzma+base85 wrapper (Python's own lzma/b85 give the same count).
    let (raw, wrapped) = (
        r["python_decoder_bytes"].as_u64().unwrap(),
        r["python_decoder_wrapped_bytes"].as_u64().unwrap(),
    );
    assert!(wrapped < raw && wrapped > raw / 4, "{wrapped} of {raw}");
    let a = load_artifact(&dir.join("g.pglf"), &Limits::default()).unwrap();
    assert!(a.tensors.iter().any(|t| t.scheme == "gptq_int6_per_row"));
    // The independent reader's BPB (golden) for GPTQ is closer to the float model's than SDClip's.
    let g = pack_golden();
    let bpb = |n: &str| g[n]["eval_val"]["val_bpb"].as_f64().unwrap();
    let float = golden("models/golden_sp1024_tied.json")["eval_val"]["val_bpb"]
        .as_f64()
        .unwrap();
    let (gptq_gap, sdclip_gap) = (
        bpb("sp1024_tied.gptq.pglf") - float,
        bpb("sp1024_tied.sdclip.pglf") - float,
    );
    assert!(
        gptq_gap < 0.5 * sdclip_gap,
        "GPTQ gap {gptq_gap} vs SDClip {sdclip_gap}"
    );
}

#[test]
fn gptq_calibration_refuses_bad_inputs_and_writes_nothing() {
    let dir = temp_dir("gptq-bad");
    let check = |extra: &[&str], needle: &str| {
        let out = pack(&dir, "bad.pglf", extra);
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            e.contains(needle) && e.lines().count() == 1,
            "{extra:?}: {e}"
        );
        assert!(!dir.join("bad.pglf").exists());
    };
    // Validation data: ruled illegal.
    check(
        &["--scheme", "gptq", "--calibrate", &val_glob()],
        "is validation data",
    );
    check(&["--scheme", "gptq"], "needs --calibrate");
    check(
        &[
            "--scheme",
            "gptq",
            "--calibrate",
            &format!("{}/nothing_*.bin", dir.display()),
        ],
        "matches no shard",
    );
    // Shards of another tokenizer: sp8192 ids in a 1,024-token model.
    let other = dir.join("fineweb_train_000000.bin");
    std::fs::copy(fixture("models/val_sp8192/fineweb_val_000000.bin"), &other).unwrap();
    check(
        &["--scheme", "gptq", "--calibrate", s(&other)],
        "another tokenizer",
    );
    // The override is explicit and recorded.
    let out = pack(
        &dir,
        "v.pglf",
        &[
            "--scheme",
            "gptq",
            "--calibrate",
            &val_glob(),
            "--allow-validation-calibration",
        ],
    );
    assert!(out.status.success());
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["calibration"]["validation_data"], true);
}

#[test]
fn the_rd_fit_meets_the_budget_with_less_error_than_the_k_bisection() {
    let dir = temp_dir("rd");
    let total_error = |r: &Value| -> f64 {
        r["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["mse"].as_f64().unwrap() * g["params"].as_f64().unwrap())
            .sum()
    };
    let run = |out: &str, fit: &str| -> Value {
        let o = pack(&dir, out, &["--budget", "80000", "--fit", fit]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (bisect, rd) = (run("bisect.pglf", "bisect"), run("rd.pglf", "rd"));
    for r in [&bisect, &rd] {
        assert!(r["size"]["artifact_bytes"].as_u64().unwrap() <= 80_000);
    }
    let (eb, er) = (total_error(&bisect), total_error(&rd));
    // Measured here: 214.8 vs 159.1 (val_bpb 3.6198 vs 3.5991).
    assert!(er < 0.9 * eb, "rd {er} vs bisection {eb}");
    let choices = rd["rd"]["choices"].as_array().unwrap();
    assert_eq!(rd["rd"]["error"], "squared");
    assert!(
        choices
            .iter()
            .any(|c| c["bits"] != choices[0]["bits"] || c["k"] != choices[0]["k"]),
        "per-tensor choices"
    );
    let o = pack(
        &dir,
        "bad.pglf",
        &["--budget", "80000", "--fit", "rd", "--codec", "brotli"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs the rans codec"));
}

/// The decoder cut to each fixture artifact is byte-identical to the one fixtures/generate_pack.py checked reads the
/// artifact exactly as the full python/pgolf_decode.py does; `pack --decoder-out` writes it, and it is smaller.
#[test]
fn the_tailored_decoder_is_the_one_python_checked() {
    use pgolf::pack::container::read_header;
    use pgolf::pack::decode_budget::DecodeBudget;
    use pgolf::pack::decoder::{PYTHON_DECODER, tailored};
    let g = pack_golden();
    for name in PACKED_FIXTURES {
        let path = fixture(&format!("pack/{name}"));
        let bytes = std::fs::read(&path).unwrap();
        let mut budget = DecodeBudget::for_file(&path, bytes.len() as u64, &Limits::default());
        let (header, codec, shuffle, _) = read_header(&path, &bytes, &mut budget).unwrap();
        let want = std::fs::read_to_string(fixture(&format!(
            "pack/{}.decode.py",
            name.trim_end_matches(".pglf")
        )))
        .unwrap();
        let got = tailored(&header, codec, shuffle);
        assert_eq!(got, want, "{name}");
        assert_eq!(got.len() as u64, g[name]["decoder_bytes"].as_u64().unwrap());
        assert!(got.len() < PYTHON_DECODER.len(), "{name}");
    }
    // Through the CLI, on the first fixture's settings.
    let dir = temp_dir("decoder_out");
    let dec = dir.join("decode.py");
    let o = pack(
        &dir,
        "a.pglf",
        &[
            "--scheme",
            "sdclip",
            "--codec",
            "rans",
            "--decoder-out",
            s(&dec),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let want = std::fs::read_to_string(fixture("pack/sp1024_tied.sdclip.decode.py")).unwrap();
    assert_eq!(std::fs::read_to_string(&dec).unwrap(), want);
    assert_eq!(
        r["tailored_decoder_bytes"].as_u64().unwrap(),
        want.len() as u64
    );
    assert!(
        r["tailored_decoder_wrapped_bytes"].as_u64().unwrap()
            < r["python_decoder_wrapped_bytes"].as_u64().unwrap()
    );
    // The decoder may not overwrite the artifact.
    let same = dir.join("b.pglf");
    let o = pack(&dir, "b.pglf", &["--decoder-out", s(&same)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!same.exists(), "nothing written");
}

/// With LQER on, the rate–distortion fit chooses each matrix's correction rank among 0, R/2, R, 2R, and its
/// Hessian-weighted error at the same budget is no larger than without LQER.
#[test]
fn the_rd_fit_chooses_lqer_ranks() {
    let dir = temp_dir("rd_lqer");
    let calib = format!(
        "{}/fineweb_train_*.bin",
        fixture("pack/calib_sp1024").display()
    );
    let run = |out: &str, extra: &[&str]| -> Value {
        let mut a = vec![
            "--scheme",
            "gptq",
            "--calibrate",
            &calib,
            "--budget",
            "80000",
            "--margin",
            "0",
            "--fit",
            "rd",
        ];
        a.extend_from_slice(extra);
        let o = pack(&dir, out, &a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let plain = run("plain.pglf", &[]);
    let lqer = run("lqer.pglf", &["--lqer-rank", "4", "--lqer-top-k", "3"]);
    for r in [&plain, &lqer] {
        assert!(r["size"]["artifact_bytes"].as_u64().unwrap() <= 80_000);
        assert_eq!(r["rd"]["error"], "hessian-weighted");
    }
    let ranks: Vec<u64> = lqer["rd"]["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["lqer_rank"].as_u64().unwrap())
        .collect();
    assert!(ranks.iter().all(|r| [0, 2, 4, 8].contains(r)), "{ranks:?}");
    assert!(ranks.iter().any(|&r| r > 0), "{ranks:?}");
    let err = |r: &Value| r["rd"]["total_error"].as_f64().unwrap();
    // Measured: 6.136 without LQER, 5.499 with.
    assert!(
        err(&lqer) < err(&plain),
        "{} vs {}",
        err(&lqer),
        err(&plain)
    );
    // The artifact reads back with a correction on each matrix the fit gave one.
    let a = load_artifact(&dir.join("lqer.pglf"), &Limits::default()).unwrap();
    let corrected = a
        .tensors
        .iter()
        .filter(|t| t.scheme.contains("lqer"))
        .count();
    assert_eq!(corrected, ranks.iter().filter(|&&r| r > 0).count());
}

/// `--control-fp16` stores the control tensors (attn_scale, mlp_scale, resid_mix, q_gain, skip_weights) in fp16 as
/// the GPTQ records do: each decodes to its fp16 rounding, and the artifact is smaller by about half their bytes.
#[test]
fn control_fp16_stores_control_tensors_as_the_records_do() {
    let dir = temp_dir("control_fp16");
    let run = |out: &str, extra: &[&str]| -> Value {
        let o = pack(&dir, out, extra);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (f32s, f16s) = (run("a.pglf", &[]), run("b.pglf", &["--control-fp16"]));
    let bytes = |r: &Value| r["size"]["artifact_bytes"].as_u64().unwrap();
    let a = load_artifact(&dir.join("a.pglf"), &Limits::default()).unwrap();
    let b = load_artifact(&dir.join("b.pglf"), &Limits::default()).unwrap();
    let mut control_bytes = 0u64;
    for (ta, tb) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(ta.name, tb.name);
        if ta.scheme == "passthrough_fp32" {
            assert_eq!(tb.scheme, "passthrough_fp16", "{}", ta.name);
            control_bytes += 4 * ta.params() as u64;
            for (x, y) in ta.dequantize().iter().zip(tb.dequantize()) {
                assert_eq!(half::f16::from_f32(*x).to_f32(), y, "{}", ta.name);
            }
        } else {
            assert_eq!(ta.dequantize(), tb.dequantize(), "{}", ta.name);
        }
    }
    assert!(control_bytes > 0);
    assert!(
        bytes(&f16s) < bytes(&f32s),
        "{} vs {}",
        bytes(&f16s),
        bytes(&f32s)
    );
}
