//! Score-first TTT against a PyTorch implementation of the records' recipe (`fixtures/generate_ttt.py`, the
//! challenge's own model code), receipts, and the legality probes on legal procedures and planted violations.

mod common;

use common::*;
use serde_json::Value;

fn stream() -> String {
    format!("{}/fineweb_val_*.bin", fixture("ttt/val_sp1024").display())
}

fn model_args(name: &str) -> Vec<String> {
    vec![
        "verify".into(),
        s(&fixture(&format!("models/{name}.safetensors"))).into(),
        "--config".into(),
        s(&fixture(&format!("models/{name}.json"))).into(),
        "--val".into(),
        stream(),
        "--tokenizer".into(),
        s(&tokenizer_path(1024)).into(),
    ]
}

/// The golden case's recipe as command-line knobs.
fn recipe_args(case: &Value) -> Vec<String> {
    let c = &case["case"];
    let n = |k: &str| c[k].to_string();
    vec![
        "--stride".into(),
        n("stride"),
        "--ttt".into(),
        "--ttt-chunk-tokens".into(),
        n("chunk"),
        "--ttt-epochs".into(),
        n("epochs"),
        "--ttt-lr".into(),
        n("lr"),
        "--ttt-momentum".into(),
        n("momentum"),
        "--ttt-batch-seqs".into(),
        n("batch_seqs"),
        "--ttt-grad-clip".into(),
        n("clip"),
        "--ttt-freeze-blocks".into(),
        n("freeze"),
        "--world-size".into(),
        n("world"),
    ]
}

fn run(args: &[String]) -> std::process::Output {
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    pgolf(&a)
}

fn run_json(args: &[String]) -> Value {
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    pgolf_json(&a)
}

#[test]
fn ttt_reproduces_the_pytorch_recipe() {
    let g = golden("ttt/golden_ttt.json");
    for case in g["cases"].as_array().unwrap() {
        let name = case["case"]["name"].as_str().unwrap();
        let mut args = model_args(case["case"]["model"].as_str().unwrap());
        args.extend(recipe_args(case));
        args.push("--json".into());
        let out = run_json(&args);
        let (ours, theirs) = (
            out["val_bpb"].as_f64().unwrap(),
            case["val_bpb"].as_f64().unwrap(),
        );
        assert!(
            ((ours - theirs) / theirs).abs() < 1e-5,
            "{name}: val_bpb {ours} vs reference {theirs}"
        );
        assert_eq!(out["targets"], case["targets"], "{name}");
        assert_eq!(out["bytes"], case["bytes"], "{name}");
        assert_eq!(
            out["ttt"]["training"]["steps"], case["steps"],
            "{name}: optimizer steps"
        );
        // TTT has an effect in these cases, so agreement is not the untrained model agreeing with itself.
        let mut plain = model_args(case["case"]["model"].as_str().unwrap());
        plain.extend([
            "--stride".into(),
            case["case"]["stride"].to_string(),
            "--json".into(),
        ]);
        let untrained = run_json(&plain)["val_bpb"].as_f64().unwrap();
        assert!(
            (untrained - theirs).abs() > 1e-3,
            "{name}: TTT moved BPB by only {}",
            untrained - theirs
        );
    }
}

#[test]
fn receipts_follow_the_chunks_and_repeat_exactly() {
    let g = golden("ttt/golden_ttt.json");
    let case = &g["cases"][0];
    let dir = temp_dir("receipts");
    let mut runs = Vec::new();
    for i in 0..2 {
        let path = dir.join(format!("r{i}.json"));
        let mut args = model_args("sp1024_tied");
        args.extend(recipe_args(case));
        args.extend(["--receipts".into(), s(&path).into(), "--json".into()]);
        let out = run_json(&args);
        let text = std::fs::read_to_string(&path).unwrap();
        runs.push((out, text));
    }
    assert_eq!(runs[0].1, runs[1].1, "two runs give identical receipts");
    let receipts: Vec<Value> = serde_json::from_str(&runs[0].1).unwrap();
    let chunks = case["chunks"].as_array().unwrap();
    assert_eq!(receipts.len(), chunks.len());
    for (i, (r, c)) in receipts.iter().zip(chunks).enumerate() {
        assert_eq!(r["targets"], c["targets"], "chunk {i}");
        assert_eq!(r["bytes"], c["bytes"], "chunk {i}");
        let (a, b) = (
            r["nll_sum"].as_f64().unwrap(),
            c["nll_sum"].as_f64().unwrap(),
        );
        assert!(((a - b) / b).abs() < 1e-5, "chunk {i}: Σnll {a} vs {b}");
        // Chunk i is scored with the weights chunk i − 1 left behind; the last chunk is never trained on.
        if i > 0 {
            assert_eq!(r["weights_scored_with"], receipts[i - 1]["weights_after"]);
            assert_ne!(
                r["weights_scored_with"],
                receipts[i - 1]["weights_scored_with"]
            );
        }
    }
    let last = receipts.last().unwrap();
    assert_eq!(last["weights_scored_with"], last["weights_after"]);
    assert_eq!(runs[0].0["receipts"]["chain"], last["chain"]);
    // Chunks tile the stream in order.
    assert_eq!(receipts[0]["first_target"], 0);
    for w in receipts.windows(2) {
        assert_eq!(w[0]["end_target"], w[1]["first_target"]);
    }
}

/// Runs the probes on a procedure and returns (exit code, {probe id → passed}).
fn probe(extra: &[&str]) -> (i32, Value, Value) {
    let mut args = model_args("sp1024_tied");
    args.extend(
        [
            "--stride",
            "32",
            "--probes",
            "--probe-targets",
            "3072",
            "--probe-perturbations",
            "3",
            "--probe-rows",
            "4",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = run(&args);
    let code = out.status.code().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{extra:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let mut passed = serde_json::Map::new();
    for p in v["probes"]["probes"].as_array().unwrap() {
        passed.insert(p["id"].as_str().unwrap().into(), p["passed"].clone());
    }
    (code, Value::Object(passed), v["compliance"].clone())
}

const SMALL_TTT: [&str; 6] = [
    "--ttt-chunk-tokens",
    "1024",
    "--ttt-lr",
    "0.05",
    "--ttt-batch-seqs",
    "8",
];

#[test]
fn legal_procedures_pass_every_probe() {
    let mut ttt = vec!["--ttt"];
    ttt.extend(SMALL_TTT);
    for extra in [vec![], ttt] {
        let (code, passed, compliance) = probe(&extra);
        for (id, ok) in passed.as_object().unwrap() {
            assert_eq!(ok, &Value::Bool(true), "{extra:?}: probe {id} failed");
        }
        assert_eq!(passed.as_object().unwrap().len(), 6);
        assert_eq!(code, 0, "{extra:?}");
        assert_eq!(compliance["causal"], true);
        assert_eq!(compliance["single_pass"], true);
        let expect_ttt = if extra.is_empty() {
            Value::Null
        } else {
            Value::Bool(true)
        };
        assert_eq!(compliance["score_first_ttt"], expect_ttt, "{extra:?}");
    }
}

#[test]
fn each_planted_violation_is_caught_by_its_probe() {
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (vec!["--planted", "ngram-cache"], &["c2_normalized"]),
        (
            vec!["--planted", "slot"],
            &["c1_causal", "c3_score_before_update"],
        ),
        (
            [&["--planted", "adapt-then-score"][..], &SMALL_TTT].concat(),
            &["c1_causal", "c3_score_before_update", "ttt_ordering"],
        ),
        (
            [&["--planted", "warmup-on-unscored"][..], &SMALL_TTT].concat(),
            &["ttt_ordering"],
        ),
        (vec!["--legacy-sliding"], &["c4_single_pass"]),
    ];
    for (extra, must_fail) in cases {
        let (code, passed, _) = probe(&extra);
        assert_eq!(code, 2, "{extra:?}: a failed probe exits 2");
        for id in must_fail {
            assert_eq!(passed[id], false, "{extra:?}: {id} should fail: {passed}");
        }
        // The probes that measure something else stay green: the verdict names the right class.
        for id in ["deterministic", "c4_single_pass", "c2_normalized"] {
            if !must_fail.contains(&id) {
                assert_eq!(passed[id], true, "{extra:?}: {id} should pass: {passed}");
            }
        }
    }
}

#[test]
fn bad_ttt_knobs_are_clean_errors() {
    for (flag, value) in [
        ("--ttt-chunk-tokens", "0"),
        ("--world-size", "0"),
        ("--ttt-batch-seqs", "0"),
    ] {
        let mut args = model_args("sp1024_tied");
        args.extend([
            "--stride".into(),
            "32".into(),
            "--ttt".into(),
            flag.into(),
            value.into(),
        ]);
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let err = pgolf_err(&a);
        assert!(err.contains("must be positive"), "{flag}: {err}");
    }
}
