//! The seed submissions against their own pull-request code (`fixtures/generate_seeds.py`): forward pass, the
//! seed's declared evaluation reproduced by `pgolf verify` on its own artifact format, and the findings the verify
//! report carries, next to the canonical legal procedure.

mod common;

use common::*;
use pgolf::data::shard;
use pgolf::infer::config::ModelConfig;
use pgolf::kernels::Precision;
use serde_json::Value;

fn seed_dir(seed: &str) -> std::path::PathBuf {
    fixture(&format!("seeds/{seed}"))
}

fn seed_golden(seed: &str) -> Value {
    golden("seeds/golden_seeds.json")[seed].clone()
}

fn rel_err(a: f64, b: f64) -> f64 {
    ((a - b) / b).abs()
}

/// `pgolf verify` of seed 000's weights (`model`: its safetensors or its artifact) with `extra` flags.
fn verify_000(model: &str, extra: &[&str]) -> (i32, Value) {
    let dir = seed_dir("000");
    let val = format!("{}/fineweb_val_*.bin", s(&dir));
    let config = dir.join("config.json");
    let model = dir.join(model);
    let mut args = vec![
        "verify",
        s(&model),
        "--config",
        s(&config),
        "--val",
        &val,
        "--tokenizer",
        "byte260",
        "--seq-len",
        "1024",
        "--json",
    ];
    args.extend_from_slice(extra);
    pgolf_report(&args)
}

#[test]
fn seed_000_forward_matches_its_own_code() {
    let dir = seed_dir("000");
    let cfg = ModelConfig::load(&dir.join("config.json")).unwrap();
    assert!(cfg.components().contains(&"jepa_injection"));
    let tokens = shard::read_shard(
        &dir.join("fineweb_val_000000.bin"),
        &pgolf::limits::Limits::default(),
    )
    .unwrap();
    let window = seed_golden("000")["window"].as_u64().unwrap() as usize;
    let model = common::logit_golden::load(&cfg, &dir.join("model.safetensors"));
    common::logit_golden::check(
        &model,
        &tokens,
        window,
        &dir.join("golden.safetensors"),
        "seed 000",
    );
    // The injection matters: without it the logits move far beyond the tolerance.
    let mut off = cfg.clone();
    off.jepa_chunk_size = 0;
    let plain = common::logit_golden::load(&off, &dir.join("model.safetensors"));
    let logits = common::logit_golden::window_logits(&plain, &tokens, window);
    let (positions, rows, _) = common::logit_golden::rows(&dir.join("golden.safetensors"));
    assert!(common::logit_golden::max_row_diff(&logits, &positions, &rows) > 1e-3);
}

#[test]
fn seed_000_declared_evaluation_is_reproduced_from_its_artifact() {
    let g = seed_golden("000");
    for (model, want) in [
        ("model.safetensors", g["val_bpb"].as_f64().unwrap()),
        (
            "final_model.int6.ptz",
            g["artifact_val_bpb"].as_f64().unwrap(),
        ),
    ] {
        let (code, out) = verify_000(model, &["--stride", "128", "--legacy-sliding"]);
        assert_eq!(code, 0);
        let got = out["val_bpb"].as_f64().unwrap();
        assert!(
            rel_err(got, want) < 1e-5,
            "{model}: {got} vs the seed's {want}"
        );
        // BPB = Σ NLL / (scored targets with id ≥ 4) / ln 2: the byte260 table gives BOS targets loss but no byte.
        assert!(out["bytes"].as_f64().unwrap() <= out["targets"].as_f64().unwrap());
    }
    // The artifact is the seed's own zstd {"w","m"} file, and inspect opens it.
    let ptz = seed_dir("000").join("final_model.int6.ptz");
    let info = pgolf_json(&["inspect", s(&ptz), "--json"]);
    assert_eq!(info["format"], "w_m_mixed");
    assert_eq!(info["model_bytes"], g["artifact_bytes"]);
    assert!(
        info["layers"].to_string().contains("zstd"),
        "{}",
        info["layers"]
    );
}

#[test]
fn seed_000_findings_tail_rescoring_fails_single_pass_next_to_the_canonical_procedure() {
    // Declared: the older sliding form. Its tail windows re-score the last stride of targets, up to
    // seq_len/stride = 8 times; coverage and the C4 probe say so, and the other probes pass (the JEPA chunk
    // latent only reads the previous chunk).
    let (code, declared) = verify_000(
        "model.safetensors",
        &[
            "--stride",
            "128",
            "--legacy-sliding",
            "--probes",
            "--probe-targets",
            "4096",
            "--probe-perturbations",
            "2",
            "--probe-rows",
            "4",
        ],
    );
    assert_eq!(code, 2);
    let cov = &declared["coverage"];
    assert_eq!(cov["exactly_once"], false);
    assert_eq!(cov["scored_more_than_once"], 128);
    assert_eq!(cov["max_times"], 8);
    let probe = |id: &str| {
        declared["probes"]["probes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap()["passed"]
            .as_bool()
            .unwrap()
    };
    assert!(!probe("c4_single_pass"));
    assert!(probe("c1_causal") && probe("c2_normalized") && probe("c3_score_before_update"));
    assert_eq!(declared["compliance"]["single_pass"], false);
    let findings = declared["findings"].as_array().unwrap();
    assert!(findings.iter().any(|f| {
        f["id"] == "targets_scored_more_than_once"
            && f["title"]
                .as_str()
                .unwrap()
                .contains("128 targets scored more than once (up to 8 times)")
    }));
    assert_eq!(declared["compliance"]["causal"], true);
    // The canonical legal procedure: exactly-once sliding windows with the same stride.
    let (code, canonical) = verify_000("model.safetensors", &["--stride", "128"]);
    assert_eq!(code, 0);
    assert_eq!(canonical["coverage"]["exactly_once"], true);
    let (a, b) = (
        declared["val_bpb"].as_f64().unwrap(),
        canonical["val_bpb"].as_f64().unwrap(),
    );
    assert!(a != b, "re-scoring the tail changes the score ({a} vs {b})");
}

fn verify_004(config: &std::path::Path) -> Value {
    let dir = seed_dir("004");
    let val = format!("{}/fineweb_val_*.bin", s(&dir));
    pgolf_json(&[
        "verify",
        s(&dir.join("final_model.int8.ptz")),
        "--config",
        s(config),
        "--val",
        &val,
        "--tokenizer",
        s(&tokenizer_path(8192)),
        "--seq-len",
        "1024",
        "--json",
    ])
}

#[test]
fn seed_004_forward_matches_its_own_code_with_and_without_eval_time_rounding() {
    let dir = seed_dir("004");
    let cfg = ModelConfig::load(&dir.join("config.json")).unwrap();
    for component in [
        "mlp_hidden_gain",
        "v_lambda",
        "xsa_diag",
        "post_stack_recurrence",
        "eval_fake_quant",
    ] {
        assert!(cfg.components().contains(&component), "{component}");
    }
    let tokens = shard::read_shard(
        &dir.join("fineweb_val_000000.bin"),
        &pgolf::limits::Limits::default(),
    )
    .unwrap();
    let window = seed_golden("004")["window"].as_u64().unwrap() as usize;
    let artifact = dir.join("final_model.int8.ptz");
    let model = common::logit_golden::load(&cfg, &artifact);
    assert!(!model.regridded.is_empty());
    common::logit_golden::check(
        &model,
        &tokens,
        window,
        &dir.join("golden_logits.safetensors"),
        "seed 004",
    );
    let mut plain = cfg.clone();
    plain.eval_fake_quant = false;
    let model = common::logit_golden::load(&plain, &artifact);
    assert!(model.regridded.is_empty());
    common::logit_golden::check(
        &model,
        &tokens,
        window,
        &dir.join("golden_no_fake_quant_logits.safetensors"),
        "seed 004 without fake quantization",
    );
}

#[test]
fn seed_004_declared_evaluation_from_its_brotli_shuffled_artifact_and_the_rounding_finding() {
    let g = seed_golden("004");
    let dir = seed_dir("004");
    let declared = verify_004(&dir.join("config.json"));
    let got = declared["val_bpb"].as_f64().unwrap();
    let want = g["val_bpb"].as_f64().unwrap();
    assert!(rel_err(got, want) < 1e-5, "{got} vs the seed's {want}");
    let finding = declared["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "evaluation_time_rounding")
        .expect("the report names the evaluation-time rounding");
    assert!(finding["title"].as_str().unwrap().contains("re-gridded"));
    assert!(!finding["evidence"].as_array().unwrap().is_empty());
    // The canonical procedure scores the stored weights as they are: the seed's code with the flag off.
    let mut plain = ModelConfig::load(&dir.join("config.json")).unwrap();
    plain.eval_fake_quant = false;
    let tmp = temp_dir("seed_004_plain").join("config.json");
    std::fs::write(&tmp, serde_json::to_string(&plain).unwrap()).unwrap();
    let canonical = verify_004(&tmp);
    let got = canonical["val_bpb"].as_f64().unwrap();
    let want = g["no_fake_quant_val_bpb"].as_f64().unwrap();
    assert!(rel_err(got, want) < 1e-5, "{got} vs the seed's {want}");
    assert!(canonical["findings"].as_array().unwrap().is_empty());
    assert!((declared["val_bpb"].as_f64().unwrap() - got).abs() > 1e-4);
    // The headerless shuffle under brotli is recognized by inspect.
    let info = pgolf_json(&["inspect", s(&dir.join("final_model.int8.ptz")), "--json"]);
    assert_eq!(info["model_bytes"], g["artifact_bytes"]);
    let layers = info["layers"].to_string();
    assert!(
        layers.contains("Brotli") || layers.contains("brotli"),
        "{layers}"
    );
}

#[test]
fn seed_003_forward_matches_its_own_code() {
    let dir = seed_dir("003");
    let cfg = ModelConfig::load(&dir.join("config.json")).unwrap();
    assert!(cfg.components().contains(&"vrl"));
    let tokens = shard::read_shard(
        &dir.join("fineweb_val_000000.bin"),
        &pgolf::limits::Limits::default(),
    )
    .unwrap();
    let window = seed_golden("003")["window"].as_u64().unwrap() as usize;
    let model = common::logit_golden::load(&cfg, &dir.join("model.safetensors"));
    common::logit_golden::check(
        &model,
        &tokens,
        window,
        &dir.join("golden.safetensors"),
        "seed 003",
    );
}

fn verify_003(extra: &[&str]) -> (i32, Value) {
    let dir = seed_dir("003");
    let val = format!("{}/fineweb_val_*.bin", s(&dir));
    let g = seed_golden("003");
    let m = &g["mixer"];
    let buckets = m["buckets"].to_string();
    let min_tokens = m["min_tokens"].to_string();
    let chunk = m["chunk_tokens"].to_string();
    let (model, config, tokenizer) = (
        dir.join("model.safetensors"),
        dir.join("config.json"),
        tokenizer_path(1024),
    );
    let mut args = vec![
        "verify",
        s(&model),
        "--config",
        s(&config),
        "--val",
        &val,
        "--tokenizer",
        s(&tokenizer),
        "--seq-len",
        "512",
        "--stride",
        "64",
        "--legacy-sliding-full",
        "--mixer",
        "--mixer-buckets",
        &buckets,
        "--mixer-min-tokens",
        &min_tokens,
        "--mixer-chunk-tokens",
        &chunk,
        "--json",
    ];
    args.extend_from_slice(extra);
    pgolf_report(&args)
}

fn probe_of<'a>(out: &'a Value, id: &str) -> &'a Value {
    out["probes"]["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap()
}

#[test]
fn seed_003_mixer_is_reproduced_and_fails_normalization_while_the_normalized_mixture_passes() {
    let g = seed_golden("003");
    let probes = [
        "--probes",
        "--probe-targets",
        "4096",
        "--probe-perturbations",
        "1",
        "--probe-rows",
        "8",
    ];
    // Declared: the seed's mixer, scored at the realized token only.
    let (code, declared) = verify_003(&probes);
    let got = declared["val_bpb"].as_f64().unwrap();
    let want = g["val_bpb"].as_f64().unwrap();
    assert!(rel_err(got, want) < 1e-5, "{got} vs the seed's {want}");
    assert_eq!(code, 2);
    let c2 = probe_of(&declared, "c2_normalized");
    assert_eq!(c2["passed"], false, "{c2}");
    assert_eq!(declared["compliance"]["normalized"], false);
    assert_eq!(declared["compliance"]["no_ngram_cache"], false);
    // Its window form re-scores the tail too.
    assert!(
        declared["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == "targets_scored_more_than_once")
    );
    // The properly normalized mixture: a distribution (C2 passes), and a worse score than the claimed one.
    let mut normalized_args = probes.to_vec();
    normalized_args.push("--mixer-normalized");
    let (_, normalized) = verify_003(&normalized_args);
    assert_eq!(probe_of(&normalized, "c2_normalized")["passed"], true);
    assert_eq!(probe_of(&normalized, "c1_causal")["passed"], true);
    assert!(normalized["val_bpb"].as_f64().unwrap() > got + 0.01);
}

#[test]
fn seed_003_declared_adamw_polyak_ttt_with_the_mixer_is_reproduced() {
    let g = seed_golden("003");
    let t = &g["ttt"];
    let (epochs, lr, freeze, batch, clip) = (
        t["epochs"].to_string(),
        t["lr"].to_string(),
        t["freeze_blocks"].to_string(),
        t["batch_seqs"].to_string(),
        t["grad_clip"].to_string(),
    );
    let (polyak, adaptive) = (
        t["polyak_decay"].to_string(),
        t["adaptive_lr_max"].to_string(),
    );
    assert_eq!(t["optimizer"], "adamw");
    assert_eq!(t["byte_weighted"], true);
    let (_, out) = verify_003(&[
        "--ttt",
        "--ttt-epochs",
        &epochs,
        "--ttt-lr",
        &lr,
        "--ttt-freeze-blocks",
        &freeze,
        "--ttt-batch-seqs",
        &batch,
        "--ttt-grad-clip",
        &clip,
        "--ttt-polyak",
        &polyak,
        "--ttt-adaptive-lr-max",
        &adaptive,
        "--ttt-byte-weighted",
    ]);
    let want = t["val_bpb"].as_f64().unwrap();
    let got = out["val_bpb"].as_f64().unwrap();
    assert!(rel_err(got, want) < 1e-5, "{got} vs the seed's {want}");
    // The TTT counts: the score moves well beyond the tolerance from the mixer alone.
    assert!(rel_err(got, g["val_bpb"].as_f64().unwrap()) > 1e-3);
    assert_eq!(out["procedure"], "backoff_mixer+ttt");
    // Three trained chunks of the fixture's four, one batch per epoch; no step uses a target before it is scored.
    let training = &out["ttt"]["training"];
    assert_eq!(training["steps"], 9);
    assert_eq!(training["steps_using_unscored_targets"], 0);
    assert_eq!(out["ttt"]["recipe"]["trained_last_blocks"], 2);
    // Trained: the last two blocks and every norm/scale/tok_emb weight, not the other blocks' matrices.
    let trainable = out["ttt"]["trainable_parameters"].as_u64().unwrap();
    let total = out["parameters"].as_u64().unwrap();
    assert!(
        trainable > 0 && trainable < total / 2,
        "{trainable} of {total}"
    );
    // The seed-003 knobs alone are refused without --mixer.
    let dir = seed_dir("003");
    let err = pgolf_err(&[
        "verify",
        s(&dir.join("model.safetensors")),
        "--config",
        s(&dir.join("config.json")),
        "--val",
        &format!("{}/fineweb_val_*.bin", s(&dir)),
        "--tokenizer",
        s(&tokenizer_path(1024)),
        "--ttt",
        "--ttt-polyak",
        "0.998",
    ]);
    assert!(
        err.contains("--ttt-polyak belongs to --mixer --ttt"),
        "{err}"
    );
}

#[test]
fn bad_mixer_knobs_are_one_line_errors() {
    let err = {
        let dir = seed_dir("003");
        let val = format!("{}/fineweb_val_*.bin", s(&dir));
        pgolf_err(&[
            "verify",
            s(&dir.join("model.safetensors")),
            "--config",
            s(&dir.join("config.json")),
            "--val",
            &val,
            "--tokenizer",
            s(&tokenizer_path(1024)),
            "--mixer",
            "--mixer-buckets",
            "1000",
        ])
    };
    assert!(err.contains("power of two"), "{err}");
}

#[test]
fn seed_002_bese_tokenizer_is_its_encode_fast_quirk_included() {
    let g = seed_golden("002_tokenizer");
    let dir = seed_dir("002");
    let model = pgolf::data::bese::BeseModel::load(&dir.join("tokenizer.json")).unwrap();
    assert_eq!(model.vocab_size(), 288);
    let texts = g["texts"].as_array().unwrap();
    let ids = g["ids"].as_array().unwrap();
    for (i, (text, want)) in texts.iter().zip(ids).enumerate() {
        let got = model.encode(text.as_str().unwrap());
        let want: Vec<u16> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u16)
            .collect();
        assert_eq!(got, want, "text {i}: {:?}", text.as_str().unwrap());
    }
    // Where the seed's heap encoder departs from rank-ordered sequential BPE, pgolf follows the seed.
    let differs = g["differs_from_sequential_bpe"].as_array().unwrap();
    assert!(
        differs.iter().any(|i| i == 3),
        "the spec's example string is among them"
    );
    // Its byte table (the seed's build_luts_for_training): bytes(merge) = bytes(a) + bytes(b), no leading space,
    // ids 0..=3 boundaries.
    let lut: Vec<u16> = g["bytes_lut"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u16)
        .collect();
    assert_eq!(model.bytes, lut);
    let table = pgolf::data::tokenizer::Tokenizer::Bese(model.clone()).byte_table(288);
    let boundaries: Vec<usize> = (0..288).filter(|&i| table.is_boundary[i]).collect();
    assert_eq!(serde_json::to_value(&boundaries).unwrap(), g["boundaries"]);
    // The table counts the true UTF-8 bytes of the text: Σ bytes over the encoded documents.
    let stream = shard::read_shard(
        &dir.join("fineweb_val_000000.bin"),
        &pgolf::limits::Limits::default(),
    )
    .unwrap();
    let total: u64 = stream.iter().map(|&t| model.bytes[t as usize] as u64).sum();
    assert_eq!(total, g["stream_utf8_bytes"].as_u64().unwrap());
}

#[test]
fn seed_002_audit_reports_the_lossy_tokenizer_and_the_undelimited_stream() {
    let dir = seed_dir("002");
    let val = format!("{}/fineweb_val_*.bin", s(&dir));
    let tok = format!("bese:{}", s(&dir.join("tokenizer.json")));
    let out = pgolf_json(&[
        "data",
        "stats",
        "--val",
        &val,
        "--tokenizer",
        &tok,
        "--seq-len",
        "512",
        "--json",
    ]);
    let codes: Vec<&str> = out["audit"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"not_invertible"), "{codes:?}");
    assert!(codes.contains(&"documents_not_delimited"), "{codes:?}");
    assert_eq!(out["documents"], 0);
    // Warnings, not errors: the byte counts are right; the comparison is what is lost.
    let err = pgolf_err(&[
        "data",
        "stats",
        "--val",
        &val,
        "--tokenizer",
        "bese:/nonexistent/tokenizer.json",
    ]);
    assert!(err.contains("/nonexistent/tokenizer.json"), "{err}");
    let bad = temp_dir("bese_bad").join("tokenizer.json");
    std::fs::write(
        &bad,
        r#"{"tokenizer_type": "bpe", "base_vocab_size": 40, "vocab_size": 40, "merges": []}"#,
    )
    .unwrap();
    let err = pgolf_err(&[
        "data",
        "stats",
        "--val",
        &val,
        "--tokenizer",
        &format!("bese:{}", s(&bad)),
    ]);
    assert!(
        err.contains("tokenizer.json") && err.contains("bese_bpe"),
        "{err}"
    );
}

#[test]
fn seed_004_default_ngram_blend_is_reproduced_and_fails_normalization() {
    let g = seed_golden("004");
    let b = &g["ngram_blend"];
    let dir = seed_dir("004");
    let val = format!("{}/fineweb_val_*.bin", s(&dir));
    let prefill = format!("{}/prefill_*.bin", s(&dir));
    let prefill_tokens = b["prefill_tokens"].to_string();
    let (model, config, tokenizer) = (
        dir.join("final_model.int8.ptz"),
        dir.join("config.json"),
        tokenizer_path(8192),
    );
    let (code, out) = pgolf_report(&[
        "verify",
        s(&model),
        "--config",
        s(&config),
        "--val",
        &val,
        "--tokenizer",
        s(&tokenizer),
        "--seq-len",
        "1024",
        "--stride",
        "64",
        "--legacy-sliding-full",
        "--ngram-blend",
        "--ngram-prefill",
        &prefill,
        "--ngram-prefill-tokens",
        &prefill_tokens,
        "--probes",
        "--probe-targets",
        "1024",
        "--probe-perturbations",
        "1",
        "--probe-rows",
        "8",
        "--json",
    ]);
    let got = out["val_bpb"].as_f64().unwrap();
    let want = b["val_bpb"].as_f64().unwrap();
    assert!(rel_err(got, want) < 1e-5, "{got} vs the seed's {want}");
    // The blend weight depends on the target's own loss: rows are not distributions.
    assert_eq!(code, 2);
    assert_eq!(probe_of(&out, "c2_normalized")["passed"], false);
    assert_eq!(probe_of(&out, "c1_causal")["passed"], true);
    assert_eq!(out["compliance"]["normalized"], false);
}

/// `pgolf verify` of seed 002's own artifact (lzma {"w","m","ngram"}) at the golden's evaluation length.
fn verify_002(extra: &[&str]) -> (i32, Value) {
    let dir = seed_dir("002");
    let val = format!("{}/fineweb_val_*.bin", s(&dir));
    let tok = format!("bese:{}", s(&dir.join("tokenizer.json")));
    let config = dir.join("config.json");
    let model = dir.join("final_model.int6.ptz");
    let mut args = vec![
        "verify",
        s(&model),
        "--config",
        s(&config),
        "--val",
        &val,
        "--tokenizer",
        &tok,
        "--seq-len",
        "1536",
        "--json",
    ];
    args.extend_from_slice(extra);
    pgolf_report(&args)
}

#[test]
fn seed_002_forward_with_its_recurrence_zone_matches_its_own_code() {
    let dir = seed_dir("002");
    let cfg = ModelConfig::load(&dir.join("config.json")).unwrap();
    assert!(cfg.components().contains(&"recurrence_zone"));
    // The seed's _run_layers at its real shape (11 layers, zone 3..5 looped 3 times): the zone's first pass pushes
    // and pops like the physical layers, the later passes touch no skip; skip 4 pops block 0 and block 10 gets none.
    let real = ModelConfig {
        num_layers: 11,
        ..cfg.clone()
    };
    let steps = real.layer_steps();
    let blocks: Vec<usize> = steps.iter().map(|s| s.block).collect();
    assert_eq!(blocks, [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]);
    let pushes: Vec<usize> = steps.iter().filter(|s| s.push).map(|s| s.block).collect();
    assert_eq!(pushes, [0, 1, 2, 3, 4]);
    let skips: Vec<(usize, usize)> = steps
        .iter()
        .filter_map(|s| s.skip.map(|j| (s.block, j)))
        .collect();
    assert_eq!(skips, [(5, 0), (6, 1), (7, 2), (8, 3), (9, 4)]);
    assert_eq!(real.num_skip_weights(), 5);

    // The logits of the seed's own GPT (dequantized from its artifact) on the first window.
    let tokens = shard::read_shard(
        &dir.join("fineweb_val_000000.bin"),
        &pgolf::limits::Limits::default(),
    )
    .unwrap();
    let window = seed_golden("002")["window"].as_u64().unwrap() as usize;
    let model = common::logit_golden::load(&cfg, &dir.join("final_model.int6.ptz"));
    common::logit_golden::check(
        &model,
        &tokens,
        window,
        &dir.join("golden.safetensors"),
        "seed 002",
    );
    // The zone matters: run once, the logits move far beyond the tolerance.
    let mut once = cfg.clone();
    once.recurrence_zone_loops = 1;
    let plain = common::logit_golden::load(&once, &dir.join("final_model.int6.ptz"));
    let logits = common::logit_golden::window_logits(&plain, &tokens, window);
    let (positions, rows, _) = common::logit_golden::rows(&dir.join("golden.safetensors"));
    assert!(common::logit_golden::max_row_diff(&logits, &positions, &rows) > 1e-3);
}

#[test]
fn seed_002_declared_tilted_evaluation_is_reproduced_from_its_artifact_with_its_findings() {
    let g = seed_golden("002");
    // Declared: the older sliding form at stride 128, the n-gram tilt from the prior bundled in the artifact.
    let (code, tilted) = verify_002(&[
        "--stride",
        "128",
        "--legacy-sliding",
        "--ngram-tilt",
        "--probes",
        "--probe-targets",
        "1536",
        "--probe-perturbations",
        "1",
        "--probe-rows",
        "4",
    ]);
    assert_eq!(code, 2, "the legacy form fails C4");
    let want = g["tilt_val_bpb"].as_f64().unwrap();
    let got = tilted["val_bpb"].as_f64().unwrap();
    assert!(rel_err(got, want) < 1e-5, "{got} vs the seed's {want}");
    // The tilt is a renormalized distribution over past tokens and a fixed prior: C1–C3 pass; the tail re-scoring
    // of the legacy form fails C4.
    let compliance = &tilted["compliance"];
    assert_eq!(compliance["normalized"], true);
    assert_eq!(compliance["causal"], true);
    assert_eq!(compliance["score_before_update"], true);
    assert_eq!(compliance["single_pass"], false);
    let finding = |id: &str| finding(&tilted, id);
    let tilt = finding("ngram_tilt");
    let prior_bytes = g["prior_bytes"].as_u64().unwrap();
    assert!(
        tilt["title"]
            .as_str()
            .unwrap()
            .contains(&format!("prior of {prior_bytes} bytes")),
        "{tilt}"
    );
    let entries = &g["prior_entries"];
    assert!(tilt["evidence"][0].as_str().unwrap().contains(&format!(
        "{} one-token and {} two-token prefixes",
        entries["2"], entries["3"]
    )));
    // BESE case-folds (the byte audit's invertibility probes), and the seed's validation stream has no BOS at all.
    assert!(
        finding("tokenizer_not_invertible")["title"]
            .as_str()
            .unwrap()
            .contains("decodes as \"the quick brown fox")
    );
    assert!(
        finding("validation_set_not_canonical")["title"]
            .as_str()
            .unwrap()
            .contains("holds 0 BOS tokens")
    );
    assert!(finding("targets_scored_more_than_once")["title"].is_string());

    // Without the tilt: the seed's own untilted number, so the tilt's effect is measured, not assumed.
    let (_, plain) = verify_002(&["--stride", "128", "--legacy-sliding"]);
    let want_plain = g["val_bpb"].as_f64().unwrap();
    let got_plain = plain["val_bpb"].as_f64().unwrap();
    assert!(
        rel_err(got_plain, want_plain) < 1e-5,
        "{got_plain} vs {want_plain}"
    );
    assert!(rel_err(got, got_plain) > 1e-4, "the tilt moves the score");
    assert!(
        plain["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["id"] != "ngram_tilt")
    );
}

#[test]
fn seed_002_canonical_procedure_scores_each_target_once_and_a_missing_prior_is_an_error() {
    // The canonical form next to the declared one: exactly-once sliding windows with the same tilt.
    let (code, canonical) = verify_002(&["--stride", "128", "--ngram-tilt"]);
    assert_eq!(code, 0);
    assert_eq!(canonical["coverage"]["exactly_once"], true);
    assert_eq!(canonical["targets"], canonical["coverage"]["targets"]);
    // Seed 000's artifact bundles no prior: --ngram-tilt refuses it by name, and leaves nothing behind.
    let err = pgolf_err(&[
        "verify",
        s(&seed_dir("000").join("final_model.int6.ptz")),
        "--config",
        s(&seed_dir("000").join("config.json")),
        "--val",
        &format!("{}/fineweb_val_*.bin", s(&seed_dir("000"))),
        "--tokenizer",
        "byte260",
        "--seq-len",
        "1024",
        "--ngram-tilt",
    ]);
    assert!(
        err.contains("final_model.int6.ptz") && err.contains("bundles none"),
        "{err}"
    );
    // A prior file that is not zlib-over-pickle is refused with its name.
    let bad = std::env::temp_dir().join(format!("pgolf-bad-prior-{}.bin", std::process::id()));
    std::fs::write(&bad, b"not a prior").unwrap();
    let err = pgolf_err(&[
        "verify",
        s(&seed_dir("002").join("final_model.int6.ptz")),
        "--config",
        s(&seed_dir("002").join("config.json")),
        "--val",
        &format!("{}/fineweb_val_*.bin", s(&seed_dir("002"))),
        "--tokenizer",
        &format!("bese:{}", s(&seed_dir("002").join("tokenizer.json"))),
        "--ngram-tilt",
        "--ngram-prior",
        s(&bad),
    ]);
    std::fs::remove_file(&bad).unwrap();
    assert!(
        err.contains("pgolf-bad-prior") && err.contains("n-gram prior"),
        "{err}"
    );
}

#[test]
fn seed_002_inspect_names_the_bundled_prior() {
    let g = seed_golden("002");
    let info = pgolf_json(&[
        "inspect",
        s(&seed_dir("002").join("final_model.int6.ptz")),
        "--json",
    ]);
    assert_eq!(info["model_bytes"], g["artifact_bytes"]);
    assert_eq!(info["format"], "w_m_mixed");
    assert!(info["layers"].to_string().contains("xz"));
    assert_eq!(info["bundled"][0]["name"], "ngram");
    assert_eq!(info["bundled"][0]["bytes"], g["prior_bytes"]);
}

/// `pgolf verify` of seed 001's own artifact (lzma {"w","m"}) under its byte-patch JEPA config.
fn verify_001(extra: &[&str]) -> (i32, Value) {
    let dir = seed_dir("001");
    let val = format!("{}/fineweb_val_*.bin", s(&dir));
    let config = dir.join("config.json");
    let model = dir.join("final_model.int6.ptz");
    let mut args = vec![
        "verify",
        s(&model),
        "--config",
        s(&config),
        "--val",
        &val,
        "--tokenizer",
        "byte260",
        "--json",
    ];
    args.extend_from_slice(extra);
    pgolf_report(&args)
}

/// Seed 001's declared TTT recipe (its defaults; the fixture's chunks are 1024 tokens).
const SEED_001_TTT: [&str; 12] = [
    "--ttt",
    "--ttt-epochs",
    "2",
    "--ttt-lr",
    "0.002",
    "--ttt-chunk-tokens",
    "1024",
    "--ttt-batch-seqs",
    "32",
    "--batch-seqs",
    "32",
    "--ttt-grad-clip=1.0",
];

#[test]
fn seed_001_encoder_decoder_forward_matches_its_own_code() {
    use pgolf::infer::patch_jepa::{BytePatchJepa, PatchJepaConfig};
    let dir = seed_dir("001");
    let cfg = PatchJepaConfig::load(&dir.join("config.json")).unwrap();
    let artifact = dir.join("final_model.int6.ptz");
    let state = common::logit_golden::artifact_state(&artifact);
    let model = BytePatchJepa::new(
        cfg.clone(),
        state,
        &candle_core::Device::Cpu,
        Precision::Fp32,
        pgolf::kernels::Backend::choose(&candle_core::Device::Cpu, Precision::Fp32, false),
        &artifact,
    )
    .unwrap();
    let tokens = shard::read_shard(
        &dir.join("fineweb_val_000000.bin"),
        &pgolf::limits::Limits::default(),
    )
    .unwrap();
    let window = seed_golden("001")["seq_len"].as_u64().unwrap() as usize;
    // Output p of pgolf's causal view is the seed's forward_logits(x, y)[:, p + 1].
    common::logit_golden::check(
        &model,
        &tokens,
        window,
        &dir.join("golden.safetensors"),
        "seed 001",
    );
    // The state dict is the seed's, projector (a training-only target network) included.
    assert_eq!(
        cfg.parameter_count(),
        common::logit_golden::artifact_state(&artifact)
            .values()
            .map(|t| t.elem_count())
            .sum::<usize>()
    );
}

#[test]
fn seed_001_declared_ttt_is_reproduced_from_its_artifact_and_never_scores_the_tail() {
    let g = seed_golden("001");
    let stride = g["eval"]["stride"].as_u64().unwrap().to_string();
    let seq_len = g["seq_len"].as_u64().unwrap().to_string();
    let base = ["--seq-len", &seq_len, "--stride", &stride, "--full-windows"];
    // Scoring alone (TTT epochs 0 in the seed's own function) and the declared score-first TTT.
    let (code, scored) = verify_001(&base);
    assert_eq!(code, 0);
    let want = g["score_only_val_bpb"].as_f64().unwrap();
    let got = scored["val_bpb"].as_f64().unwrap();
    assert!(rel_err(got, want) < 1e-5, "scoring: {got} vs {want}");
    let mut args = base.to_vec();
    args.extend_from_slice(&SEED_001_TTT);
    args.extend_from_slice(&[
        "--probes",
        "--probe-targets",
        "3066",
        "--probe-perturbations",
        "1",
        "--probe-rows",
        "4",
    ]);
    let (_, ttt) = verify_001(&args);
    let want = g["val_bpb"].as_f64().unwrap();
    let got = ttt["val_bpb"].as_f64().unwrap();
    assert!(rel_err(got, want) < 1e-5, "TTT: {got} vs the seed's {want}");
    assert!(
        rel_err(got, scored["val_bpb"].as_f64().unwrap()) > 1e-3,
        "TTT moves the score"
    );
    // Every weight trains (TTT_FREEZE_BLOCKS=0), and no step uses a target before it is scored.
    assert_eq!(ttt["ttt"]["trainable_parameters"], ttt["parameters"]);
    assert_eq!(ttt["ttt"]["training"]["steps_using_unscored_targets"], 0);
    let compliance = &ttt["compliance"];
    assert_eq!(compliance["causal"], true);
    assert_eq!(compliance["normalized"], true);
    assert_eq!(compliance["score_before_update"], true);
    assert_eq!(compliance["score_first_ttt"], true);
    // Coverage: full-length windows only, so the targets after the last one are never scored (4088 targets, last
    // window [3520, 4031)); none is scored twice.
    let cov = &ttt["coverage"];
    assert_eq!(cov["targets"], 4088);
    assert_eq!(cov["unscored"], 57);
    assert_eq!(cov["scored_more_than_once"], 0);
    let never = finding(&ttt, "targets_never_scored");
    assert!(
        never["title"]
            .as_str()
            .unwrap()
            .contains("57 of 4088 targets are never scored"),
        "{never}"
    );
}

#[test]
fn seed_001_canonical_procedure_scores_every_target_and_gpt_only_procedures_are_refused() {
    let g = seed_golden("001");
    let seq_len = g["seq_len"].as_u64().unwrap().to_string();
    // The canonical legal recipe on the same model: exactly-once sliding windows, score-first TTT.
    let mut args = vec!["--seq-len", &seq_len, "--stride", "64"];
    args.extend_from_slice(&SEED_001_TTT);
    let (code, canonical) = verify_001(&args);
    assert_eq!(code, 0);
    assert_eq!(canonical["coverage"]["exactly_once"], true);
    assert_eq!(canonical["coverage"]["unscored"], 0);
    assert!(canonical["findings"].as_array().unwrap().is_empty());
    // Procedures written for the records' GPT name themselves when asked of this model.
    let dir = seed_dir("001");
    let val = format!("{}/fineweb_val_*.bin", s(&dir));
    let err = pgolf_err(&[
        "verify",
        s(&dir.join("final_model.int6.ptz")),
        "--config",
        s(&dir.join("config.json")),
        "--val",
        &val,
        "--tokenizer",
        "byte260",
        "--doc-isolated",
    ]);
    assert!(
        err.contains("--doc-isolated runs on the records' GPT only"),
        "{err}"
    );
    // Another seed's weights under this config: every missing tensor is named with the file.
    let err = pgolf_err(&[
        "verify",
        s(&seed_dir("000").join("final_model.int6.ptz")),
        "--config",
        s(&dir.join("config.json")),
        "--val",
        &val,
        "--tokenizer",
        "byte260",
    ]);
    assert!(
        err.contains("final_model.int6.ptz") && err.contains("missing tensor patch_pos"),
        "{err}"
    );
}

#[test]
fn seed_001_inspect_opens_its_lzma_artifact() {
    let g = seed_golden("001");
    let info = pgolf_json(&[
        "inspect",
        s(&seed_dir("001").join("final_model.int6.ptz")),
        "--json",
    ]);
    assert_eq!(info["model_bytes"], g["artifact_bytes"]);
    assert_eq!(info["format"], "w_m_mixed");
    assert!(info["layers"].to_string().contains("xz"));
    assert_eq!(info["parameters"], 81386);
    // It names the architecture from the tensors (no GPT preset), with the config the shapes imply.
    assert_eq!(info["architecture"], "byte_patch_jepa");
    assert!(info["preset"].is_null());
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(seed_dir("001").join("config.json")).unwrap(),
    )
    .unwrap();
    for key in [
        "vocab_size",
        "model_dim",
        "encoder_layers",
        "encoder_heads",
        "encoder_kv_heads",
        "decoder_layers",
        "decoder_heads",
        "mlp_mult",
        "patch_size",
        "latent_dim",
    ] {
        assert_eq!(info["inferred_config"][key], config[key], "{key}");
    }
    // A config with a key the architecture does not have is refused with the file named.
    let bad = std::env::temp_dir().join(format!("pgolf-jepa-{}.json", std::process::id()));
    let mut cfg = config.clone();
    cfg["num_layers"] = 5.into();
    std::fs::write(&bad, cfg.to_string()).unwrap();
    let dir = seed_dir("001");
    let err = pgolf_err(&[
        "verify",
        s(&dir.join("final_model.int6.ptz")),
        "--config",
        s(&bad),
        "--val",
        &format!("{}/fineweb_val_*.bin", s(&dir)),
        "--tokenizer",
        "byte260",
    ]);
    std::fs::remove_file(&bad).unwrap();
    assert!(
        err.contains("pgolf-jepa-") && err.contains("unknown field `num_layers`"),
        "{err}"
    );
}

#[test]
fn declared_and_canonical_procedures_in_one_report() {
    // Seed 000: its legacy window form next to the exactly-once sliding form, on its own artifact.
    let (_, out) = verify_000(
        "final_model.int6.ptz",
        &["--stride", "128", "--legacy-sliding", "--canonical"],
    );
    let declared = out["val_bpb"].as_f64().unwrap();
    let want = seed_golden("000")["artifact_val_bpb"].as_f64().unwrap();
    assert!(rel_err(declared, want) < 1e-5);
    let c = &out["canonical"];
    assert_eq!(c["procedure"], "sliding");
    assert_eq!(c["coverage"]["exactly_once"], true);
    assert!(
        c["changes"][0]
            .as_str()
            .unwrap()
            .contains("legacy_sliding → sliding")
    );
    let delta = c["declared_minus_canonical_bpb"].as_f64().unwrap();
    assert!((declared - c["val_bpb"].as_f64().unwrap() - delta).abs() < 1e-12);
    assert!(delta.abs() > 1e-4, "the tail re-scoring moves the score");
    assert!(
        out["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == "declared_vs_canonical")
    );

    // Seed 004: the declared eval_val with its fake quantization left on, next to the stored weights as they are
    // (the seed's own eval_val with the flag off).
    let g = seed_golden("004");
    let dir = seed_dir("004");
    let (_, out) = pgolf_report(&[
        "verify",
        s(&dir.join("final_model.int8.ptz")),
        "--config",
        s(&dir.join("config.json")),
        "--val",
        &format!("{}/fineweb_val_*.bin", s(&dir)),
        "--tokenizer",
        s(&tokenizer_path(8192)),
        "--seq-len",
        "1024",
        "--canonical",
        "--json",
    ]);
    assert!(
        rel_err(
            out["val_bpb"].as_f64().unwrap(),
            g["val_bpb"].as_f64().unwrap()
        ) < 1e-5
    );
    let c = &out["canonical"];
    let want = g["no_fake_quant_val_bpb"].as_f64().unwrap();
    assert!(rel_err(c["val_bpb"].as_f64().unwrap(), want) < 1e-5, "{c}");
    assert!(
        c["changes"][0]
            .as_str()
            .unwrap()
            .contains("fake quantization")
    );
    // The canonical run has no evaluation-time rounding to report.
    assert!(
        c["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["id"] != "evaluation_time_rounding")
    );

    // An already canonical procedure says so without a second run.
    let (_, out) = verify_000("final_model.int6.ptz", &["--stride", "128", "--canonical"]);
    assert_eq!(out["canonical"]["changes"].as_array().unwrap().len(), 0);
    assert_eq!(out["canonical"]["val_bpb"], out["val_bpb"]);
}
