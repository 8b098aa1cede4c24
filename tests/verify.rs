//! `pgolf verify` against the challenge's own `eval_val` and an exactly-once sliding reference, computed by
//! `fixtures/generate_models.py` with the challenge's model code.

mod common;

use candle_core::{DType, Device};
use common::*;
use pgolf::data::shard;
use pgolf::infer::config::ModelConfig;
use pgolf::infer::model::Gpt;
use pgolf::infer::weights;
use pgolf::kernels::Precision;
use pgolf::verify::scorer::{ModelScorer, WindowScorer};
use serde_json::Value;

const MODELS: [&str; 3] = ["sp1024_tied", "sp1024_untied", "sp8192_tied"];

fn model_golden(name: &str) -> Value {
    golden(&format!("models/golden_{name}.json"))
}

fn load_model(name: &str) -> Gpt {
    let cfg = ModelConfig::load(&fixture(&format!("models/{name}.json"))).unwrap();
    let path = fixture(&format!("models/{name}.safetensors"));
    let state = weights::load_safetensors(&path, &Device::Cpu).unwrap();
    let state = weights::check_state_dict(&cfg, state, DType::F32, &path).unwrap();
    Gpt::new(cfg, state, &Device::Cpu, Precision::Fp32).unwrap()
}

fn val_glob(g: &Value) -> String {
    let vocab = g["tokenizer_vocab"].as_u64().unwrap();
    format!(
        "{}/fineweb_val_*.bin",
        fixture(&format!("models/val_sp{vocab}")).display()
    )
}

fn rel_err(a: f64, b: f64) -> f64 {
    ((a - b) / b).abs()
}

#[test]
fn forward_pass_matches_the_reference_per_target() {
    for name in MODELS {
        let g = model_golden(name);
        let l = g["seq_len"].as_u64().unwrap() as usize;
        let tokens =
            shard::load_validation_tokens(&val_glob(&g), l, &pgolf::limits::Limits::default())
                .unwrap();
        let model = load_model(name);
        let nll = ModelScorer::new(&model, l)
            .score(&[&tokens[..l]], &[&tokens[1..l + 1]], &[])
            .unwrap()
            .nll;
        let expected: Vec<f64> = g["first_sequence_nll"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let max_diff = nll[0]
            .iter()
            .zip(&expected)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(
            max_diff < 1e-4,
            "{name}: max |Δnll| {max_diff}; ours {:?} vs {:?}",
            &nll[0][..4],
            &expected[..4]
        );
    }
}

fn verify_json(name: &str, extra: &[&str]) -> Value {
    let g = model_golden(name);
    let vocab = g["tokenizer_vocab"].as_u64().unwrap() as usize;
    let model = fixture(&format!("models/{name}.safetensors"));
    let config = fixture(&format!("models/{name}.json"));
    let tok = tokenizer_path(vocab);
    let glob = val_glob(&g);
    let mut args = vec![
        "verify",
        s(&model),
        "--config",
        s(&config),
        "--val",
        &glob,
        "--tokenizer",
        s(&tok),
        "--json",
    ];
    args.extend_from_slice(extra);
    pgolf_json(&args)
}

#[test]
fn non_overlapping_eval_reproduces_the_challenge_eval_val() {
    for name in MODELS {
        let g = model_golden(name);
        let out = verify_json(name, &[]);
        assert_eq!(out["method"], "non_overlapping");
        assert_eq!(out["targets"], g["targets"], "{name}");
        let (loss, bpb) = (
            out["val_loss"].as_f64().unwrap(),
            out["val_bpb"].as_f64().unwrap(),
        );
        let (rl, rb) = (
            g["eval_val"]["val_loss"].as_f64().unwrap(),
            g["eval_val"]["val_bpb"].as_f64().unwrap(),
        );
        assert!(rel_err(loss, rl) < 1e-6, "{name}: val_loss {loss} vs {rl}");
        assert!(rel_err(bpb, rb) < 1e-6, "{name}: val_bpb {bpb} vs {rb}");
        assert_eq!(out["coverage"]["exactly_once"], true);
        for key in ["val_loss", "val_bpb", "targets", "bytes", "seconds"] {
            assert!(out.get(key).is_some(), "missing {key}");
        }
    }
}

#[test]
fn sliding_eval_reproduces_the_exactly_once_reference() {
    for name in MODELS {
        let g = model_golden(name);
        let stride = g["stride"].as_u64().unwrap().to_string();
        let out = verify_json(name, &["--stride", &stride]);
        let r = &g["sliding"];
        assert_eq!(out["method"], "sliding");
        assert_eq!(out["targets"], r["targets"], "{name}");
        assert_eq!(
            out["targets"], g["targets"],
            "{name}: exactly once covers every target"
        );
        assert_eq!(out["bytes"], r["bytes"], "{name}");
        assert_eq!(out["windows"], r["windows"], "{name}");
        assert!(
            rel_err(
                out["val_loss"].as_f64().unwrap(),
                r["val_loss"].as_f64().unwrap()
            ) < 1e-6,
            "{name}"
        );
        assert!(
            rel_err(
                out["val_bpb"].as_f64().unwrap(),
                r["val_bpb"].as_f64().unwrap()
            ) < 1e-6,
            "{name}"
        );
        assert_eq!(out["coverage"]["exactly_once"], true);
        assert_eq!(out["coverage"]["unscored"], 0);
    }
}

#[test]
fn legacy_sliding_reproduces_the_old_form_and_reports_its_duplicates() {
    let name = "sp1024_tied";
    let g = model_golden(name);
    let stride = g["stride"].as_u64().unwrap();
    let out = verify_json(name, &["--stride", &stride.to_string(), "--legacy-sliding"]);
    let r = &g["sliding_legacy"];
    assert_eq!(out["method"], "legacy_sliding");
    assert_eq!(out["targets"], r["targets"]);
    assert_eq!(out["bytes"], r["bytes"]);
    assert!(
        rel_err(
            out["val_bpb"].as_f64().unwrap(),
            r["val_bpb"].as_f64().unwrap()
        ) < 1e-6
    );
    let c = &out["coverage"];
    assert_eq!(c["exactly_once"], false);
    assert_eq!(c["max_times"], r["max_count"]);
    assert_eq!(
        c["max_times"].as_u64().unwrap(),
        g["seq_len"].as_u64().unwrap() / stride
    );
    assert_eq!(c["scored_more_than_once"].as_u64().unwrap(), stride);
}

// ---- wrong inputs fail cleanly ----

fn verify_err(model: &str, config: &str, val: &str, tok: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "verify",
        model,
        "--config",
        config,
        "--val",
        val,
        "--tokenizer",
        tok,
    ];
    args.extend_from_slice(extra);
    pgolf_err(&args)
}

#[test]
fn weights_that_do_not_match_the_config_are_listed() {
    let g = model_golden("sp1024_tied");
    let tied = fixture("models/sp1024_tied.safetensors");
    let untied_cfg = fixture("models/sp1024_untied.json");
    let e = verify_err(
        s(&tied),
        s(&untied_cfg),
        &val_glob(&g),
        s(&tokenizer_path(1024)),
        &[],
    );
    assert!(
        e.contains("sp1024_tied.safetensors") && e.contains("weights do not match the config"),
        "{e}"
    );
    assert!(e.contains("missing lm_head.weight"), "{e}");
    assert!(e.contains("missing blocks.4.attn_scale"), "{e}");
    assert!(
        e.contains("blocks.0.mlp.fc.weight has shape [128, 64], the config needs [192, 64]"),
        "{e}"
    );
}

#[test]
fn a_vocab_smaller_than_the_stream_is_rejected() {
    let g = model_golden("sp1024_tied");
    let dir = temp_dir("vocab");
    let cfg = dir.join("small_vocab.json");
    let mut c: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("models/sp1024_tied.json")).unwrap())
            .unwrap();
    c["vocab_size"] = 512.into();
    std::fs::write(&cfg, c.to_string()).unwrap();
    let e = verify_err(
        s(&fixture("models/sp1024_tied.safetensors")),
        s(&cfg),
        &val_glob(&g),
        s(&tokenizer_path(1024)),
        &[],
    );
    assert!(e.contains("outside the model's vocab_size 512"), "{e}");
}

#[test]
fn a_sequence_longer_than_the_stream_is_rejected() {
    let g = model_golden("sp1024_tied");
    let e = verify_err(
        s(&fixture("models/sp1024_tied.safetensors")),
        s(&fixture("models/sp1024_tied.json")),
        &val_glob(&g),
        s(&tokenizer_path(1024)),
        &["--seq-len", "10000000"],
    );
    assert!(e.contains("too few for sequence length 10000000"), "{e}");
}

#[test]
fn bad_configs_and_weight_files_are_rejected() {
    let g = model_golden("sp1024_tied");
    let dir = temp_dir("badcfg");
    let unknown = dir.join("unknown.json");
    std::fs::write(&unknown, r#"{"vocab_size": 1024, "rope_yarn_factor": 16}"#).unwrap();
    let e = verify_err(
        s(&fixture("models/sp1024_tied.safetensors")),
        s(&unknown),
        &val_glob(&g),
        s(&tokenizer_path(1024)),
        &[],
    );
    assert!(
        e.contains("unknown.json") && e.contains("unknown field `rope_yarn_factor`"),
        "{e}"
    );

    let heads = dir.join("heads.json");
    std::fs::write(&heads, r#"{"model_dim": 64, "num_heads": 3}"#).unwrap();
    let e = verify_err(
        s(&fixture("models/sp1024_tied.safetensors")),
        s(&heads),
        &val_glob(&g),
        s(&tokenizer_path(1024)),
        &[],
    );
    assert!(e.contains("divisible by num_heads 3"), "{e}");

    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}").unwrap();
    let e = verify_err(
        s(&junk),
        s(&fixture("models/sp1024_tied.json")),
        &val_glob(&g),
        s(&tokenizer_path(1024)),
        &[],
    );
    assert!(
        e.contains("junk.safetensors") && e.contains("cannot read weights"),
        "{e}"
    );

    let e = verify_err(
        s(&fixture("models/sp1024_tied.safetensors")),
        s(&fixture("models/sp1024_tied.json")),
        &val_glob(&g),
        s(&tokenizer_path(1024)),
        &["--stride", "0"],
    );
    assert!(e.contains("stride must be in 1..=128"), "{e}");
}

#[test]
fn an_illegal_combination_is_refused_before_any_file_is_read() {
    // The model, stream and tokenizer do not exist: the refusal must name the combination, not a missing file.
    for (flags, want) in [
        (
            &["--ngram-blend", "--ttt"][..],
            "--ngram-blend is an evaluation procedure of its own",
        ),
        (
            &["--mixer", "--doc-isolated"][..],
            "--mixer is an evaluation procedure of its own",
        ),
        (
            &["--ttt-polyak", "0.9"][..],
            "--ttt-polyak belongs to --mixer --ttt",
        ),
        // A knob of a procedure that does not run is named with the procedure that takes it.
        (
            &["--stride", "64", "--ttt-lr", "0.01"][..],
            "--ttt-lr belongs to --ttt (score-first TTT), which this verification does not run",
        ),
        (
            &["--mixer-order", "5"][..],
            "--mixer-order belongs to --mixer",
        ),
        (
            &["--world-size", "8"][..],
            "--world-size replays ranks for --doc-isolated, --ttt and --lora-ttt / --phased-ttt",
        ),
        (
            &["--phased-ttt", "--batch-seqs", "4"][..],
            "--batch-seqs belongs to the window procedures",
        ),
        (
            &["--ttt", "--ttt-chunk-tokens", "0"][..],
            "must be positive",
        ),
    ] {
        let mut args = vec![
            "verify",
            "/nonexistent/model.safetensors",
            "--val",
            "/nonexistent/val_*.bin",
            "--tokenizer",
            "/nonexistent/tokenizer.model",
        ];
        args.extend_from_slice(flags);
        let e = pgolf_err(&args);
        assert!(e.contains(want), "{flags:?}: {e}");
        assert!(
            !e.contains("nonexistent"),
            "{flags:?} read a file first: {e}"
        );
    }
}

#[test]
fn a_run_that_scores_no_target_is_an_error_not_a_nan() {
    // The fixture stream holds 388 sequences of 128; one buffer of 1,000 sequences never fills.
    let g = model_golden("sp1024_tied");
    let e = verify_err(
        s(&fixture("models/sp1024_tied.safetensors")),
        s(&fixture("models/sp1024_tied.json")),
        &val_glob(&g),
        s(&tokenizer_path(1024)),
        &["--doc-isolated", "--batch-seqs", "1000"],
    );
    assert!(
        e.contains("doc_isolated scored none of the stream's")
            && e.contains("--batch-seqs 1000 sequences of 128"),
        "{e}"
    );
}
