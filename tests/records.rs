//! The record architectures against each record's own train_gpt.py (`fixtures/generate_records.py`): logits on a
//! golden window for every case, `pgolf verify` BPB under each record's own evaluation procedure for every preset
//! case, and, per component, proof that the golden depends on it (turning it off moves the logits far beyond the
//! tolerance).

mod common;

use candle_core::Device;
use common::*;
use pgolf::data::shard;
use pgolf::infer::config::ModelConfig;
use pgolf::infer::model::Gpt;
use pgolf::infer::weights;
use serde_json::Value;

use common::logit_golden::{self, LOGIT_TOLERANCE, max_row_diff};

const BPB_TOLERANCE: f64 = 1e-5;

fn records_golden() -> Value {
    golden("records/golden_records.json")
}

fn case_dir(case: &str) -> std::path::PathBuf {
    fixture(&format!("records/{case}"))
}

/// The case's weights (perhaps another case's: the variants share) under `cfg`.
fn load(case: &str, cfg: &ModelConfig) -> Gpt {
    let weights_of = records_golden()[case]["weights"]
        .as_str()
        .unwrap()
        .to_string();
    logit_golden::load(cfg, &case_dir(&weights_of).join("model.safetensors"))
}

fn config(case: &str) -> ModelConfig {
    ModelConfig::load(&case_dir(case).join("config.json")).unwrap()
}

fn stream(case: &str) -> Vec<u16> {
    let g = records_golden();
    let name = g[case]["stream"].as_str().unwrap();
    shard::read_shard(
        &fixture(&format!("records/streams/{name}/fineweb_val_000000.bin")),
        &pgolf::limits::Limits::default(),
    )
    .unwrap()
}

fn window(case: &str) -> usize {
    records_golden()[case]["window"].as_u64().unwrap() as usize
}

fn golden_rows(case: &str) -> (Vec<usize>, Vec<Vec<f32>>, Vec<f32>) {
    logit_golden::rows(&case_dir(case).join("golden.safetensors"))
}

fn window_logits(model: &Gpt, case: &str) -> Vec<Vec<f32>> {
    logit_golden::window_logits(model, &stream(case), window(case))
}

/// The case's logits under its own config match the record code's (1e-4 absolute) at every golden row and its
/// NLL at every position of the window.
fn check_case(case: &str) -> f32 {
    let model = load(case, &config(case));
    logit_golden::check(
        &model,
        &stream(case),
        window(case),
        &case_dir(case).join("golden.safetensors"),
        case,
    )
}

#[test]
fn every_case_matches_its_record_logits() {
    let g = records_golden();
    let cases: Vec<&String> = g.as_object().unwrap().keys().collect();
    assert_eq!(cases.len(), 8);
    for case in cases {
        check_case(case);
    }
}

/// Switching `component` off (or changing it) in `case`'s config moves some golden row by more than 10× the
/// tolerance: the golden exercises it.
fn assert_component_matters(case: &str, component: &str, switch_off: impl Fn(&mut ModelConfig)) {
    let mut cfg = config(case);
    assert!(
        cfg.components().contains(&component),
        "{case} lacks {component}"
    );
    switch_off(&mut cfg);
    let logits = window_logits(&load(case, &cfg), case);
    let (positions, rows, _) = golden_rows(case);
    let moved = max_row_diff(&logits, &positions, &rows);
    assert!(
        moved > 10.0 * LOGIT_TOLERANCE,
        "{case}: turning {component} off moves the logits by only {moved}"
    );
}

#[test]
fn components_of_the_03_23_stack_each_matter() {
    let case = "rec_2026_03_23";
    assert_component_matters(case, "leaky_relu2", |c| c.mlp_negative_slope = 0.0);
    assert_component_matters(case, "partial_rope", |c| c.rope_dims = 0);
    // The golden window (2048) is longer than Rotary's hard-coded train_seq_len 1024: the NTK base applies.
    assert_component_matters(case, "rope_ntk", |c| c.rope_ntk_train_seq_len = None);
    assert_component_matters(case, "ln_scale", |c| c.ln_scale = false);
    assert_component_matters(case, "xsa", |c| c.xsa_last_n = 0);
    assert_component_matters(case, "bigram_hash", |c| c.bigram_vocab_size = 0);
    assert_component_matters(case, "smear_gate_v1", |c| {
        c.smear_gate = pgolf::infer::config::SmearGate::None
    });
    assert_component_matters(case, "value_embeddings", |c| c.ve_layers.clear());
}

#[test]
fn value_residual_legacy_gate_and_banks_match_the_03_23_code() {
    let case = "rec_2026_03_23_vr_gate_banked";
    assert!(records_golden()[case]["banked"].as_bool().unwrap());
    let names =
        weights::load_safetensors(&case_dir(case).join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(names.contains_key("qo_bank") && !names.contains_key("blocks.0.attn.c_q.weight"));
    check_case(case);
    assert_component_matters(case, "value_residual", |c| c.value_residual = false);
    assert_component_matters(case, "gated_attention", |c| c.gated_attention = false);
}

#[test]
fn xsa_on_all_layers_matches_the_03_29_code() {
    let cfg = config("rec_2026_03_29");
    assert_eq!(cfg.xsa_last_n, cfg.num_layers);
    assert_component_matters("rec_2026_03_29", "xsa", |c| c.xsa_last_n = 4);
}

#[test]
fn recurrence_parallel_residuals_and_skip_gates_of_04_09() {
    let case = "rec_2026_04_09";
    let cfg = config(case);
    // The record's log line: encoder:[0, 1, 2, 3, 4, 5, 3, 4] decoder:[5, 3, 4, 5, 6, 7, 8, 9, 10].
    assert_eq!(
        cfg.layer_schedule(),
        (
            vec![0, 1, 2, 3, 4, 5, 3, 4],
            vec![5, 3, 4, 5, 6, 7, 8, 9, 10]
        )
    );
    assert_eq!(cfg.num_skip_weights(), 8);
    assert_component_matters(case, "parallel_residual_gptj", |c| {
        c.parallel_residual_start = None
    });
    assert_component_matters(case, "skip_gates", |c| c.skip_gates = false);
    // Recurrence cannot be switched off on these weights (skip_weights is sized for the 17 virtual layers); the
    // schedule above and the golden match are its test.
    assert!(cfg.components().contains(&"depth_recurrence"));
    check_case(case);
}

#[test]
fn two_lane_smear_v2_and_sparse_gate_of_04_27() {
    let case = "rec_2026_04_27";
    assert_component_matters(case, "parallel_residual_two_lane", |c| {
        c.parallel_start_layer = None
    });
    assert_component_matters(case, "smear_gate_v2", |c| {
        c.smear_gate = pgolf::infer::config::SmearGate::None;
        c.smear_gate_bos_fix = false
    });
    assert_component_matters(case, "sparse_attn_gate", |c| c.sparse_attn_gate = false);
}

#[test]
fn attention_output_gates_match_the_04_27_code() {
    check_case("rec_2026_04_27_attn_out_gate");
    assert_component_matters("rec_2026_04_27_attn_out_gate", "attn_out_gate", |c| {
        c.attn_out_gate = false
    });
    check_case("rec_2026_04_27_gated_attn");
    assert_component_matters("rec_2026_04_27_gated_attn", "gated_attn", |c| {
        c.gated_attn = false
    });
    let cfg = config("rec_2026_04_27_gated_attn");
    assert_eq!(
        cfg.parallel_final_lane,
        pgolf::infer::config::FinalLane::Attn
    );
}

#[test]
fn smear_gate_bos_fix_changes_exactly_the_bos_positions() {
    // Same weights; the record code with and without the fix.
    let fixed = config("rec_2026_04_27");
    let unfixed = config("rec_2026_04_27_smear_no_bos_fix");
    assert!(fixed.smear_gate_bos_fix && !unfixed.smear_gate_bos_fix);
    check_case("rec_2026_04_27_smear_no_bos_fix");
    let tokens = stream("rec_2026_04_27");
    let a = window_logits(&load("rec_2026_04_27", &fixed), "rec_2026_04_27");
    let b = window_logits(&load("rec_2026_04_27", &unfixed), "rec_2026_04_27");
    let first_inner_bos = (1..a.len()).find(|&p| tokens[p] == 1).unwrap();
    let diff = |p: usize| {
        a[p].iter()
            .zip(&b[p])
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    };
    // Up to the first BOS after position 0 the two agree exactly; at that BOS they differ.
    assert!((0..first_inner_bos).all(|p| diff(p) == 0.0));
    assert!(diff(first_inner_bos) > 100.0 * LOGIT_TOLERANCE);
}

fn rel_err(a: f64, b: f64) -> f64 {
    ((a - b) / b).abs()
}

/// `pgolf verify` of a preset case under the record's own evaluation, against the record code's BPB.
fn verify_case(case: &str, extra: &[&str]) -> Value {
    let g = &records_golden()[case];
    let stream = g["stream"].as_str().unwrap();
    let dir = case_dir(case);
    let model = dir.join("model.safetensors");
    let config = dir.join("config.json");
    let val = format!(
        "{}/fineweb_val_0*.bin",
        s(&fixture(&format!("records/streams/{stream}")))
    );
    let tokenizer = match stream {
        "sp1024" => tokenizer_path(1024),
        "sp8192" => tokenizer_path(8192),
        _ => fixture("records/streams/caseops/tokenizer.model"),
    };
    let seq_len = g["eval"]["seq_len"].to_string();
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
        &seq_len,
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = pgolf_json(&args);
    let want = g["val_bpb"].as_f64().unwrap();
    let got = out["val_bpb"].as_f64().unwrap();
    assert!(
        rel_err(got, want) < BPB_TOLERANCE,
        "{case}: val_bpb {got} vs the record code's {want}"
    );
    let want_loss = g["val_loss"].as_f64().unwrap();
    assert!(rel_err(out["val_loss"].as_f64().unwrap(), want_loss) < BPB_TOLERANCE);
    out
}

#[test]
fn verify_reproduces_the_03_23_and_03_29_legacy_sliding_bpb() {
    for case in ["rec_2026_03_23", "rec_2026_03_29"] {
        let out = verify_case(case, &["--stride", "512", "--legacy-sliding"]);
        // Their eval_val_sliding re-scores the tail: not exactly once, and the report says so.
        assert_eq!(out["coverage"]["exactly_once"], false);
        assert!(out["coverage"]["scored_more_than_once"].as_u64().unwrap() > 0);
    }
}

#[test]
fn verify_reproduces_the_04_09_sliding_bpb() {
    let out = verify_case("rec_2026_04_09", &["--stride", "512"]);
    assert_eq!(out["coverage"]["exactly_once"], true);
}

#[test]
fn verify_reproduces_the_04_27_doc_isolated_caseops_bpb() {
    let sidecar = format!(
        "{}/fineweb_val_bytes_*.bin",
        s(&fixture("records/streams/caseops"))
    );
    let out = verify_case(
        "rec_2026_04_27",
        &[
            "--doc-isolated",
            "--batch-seqs",
            "4",
            "--byte-sidecar",
            &sidecar,
        ],
    );
    assert_eq!(out["coverage"]["unscored"], 0);
    // Without the sidecar the SentencePiece table counts the case operators' bytes: a different (wrong) BPB.
    let g = &records_golden()["rec_2026_04_27"];
    let dir = case_dir("rec_2026_04_27");
    let val = format!(
        "{}/fineweb_val_0*.bin",
        s(&fixture("records/streams/caseops"))
    );
    let plain = pgolf_json(&[
        "verify",
        s(&dir.join("model.safetensors")),
        "--config",
        s(&dir.join("config.json")),
        "--val",
        &val,
        "--tokenizer",
        s(&fixture("records/streams/caseops/tokenizer.model")),
        "--seq-len",
        "512",
        "--doc-isolated",
        "--batch-seqs",
        "4",
        "--json",
    ]);
    assert!(
        rel_err(
            plain["val_bpb"].as_f64().unwrap(),
            g["val_bpb"].as_f64().unwrap()
        ) > 1e-3
    );
}

/// `pgolf verify --doc-isolated --probes` on the 04-27 weights under `config_case`'s config.
fn doc_isolation_probe(config_case: &str) -> (i32, Value) {
    let dir = case_dir("rec_2026_04_27");
    let streams = fixture("records/streams/caseops");
    let val = format!("{}/fineweb_val_0*.bin", s(&streams));
    let sidecar = format!("{}/fineweb_val_bytes_*.bin", s(&streams));
    let (code, json) = pgolf_report(&[
        "verify",
        s(&dir.join("model.safetensors")),
        "--config",
        s(&case_dir(config_case).join("config.json")),
        "--val",
        &val,
        "--byte-sidecar",
        &sidecar,
        "--tokenizer",
        s(&streams.join("tokenizer.model")),
        "--seq-len",
        "512",
        "--doc-isolated",
        "--batch-seqs",
        "4",
        "--probes",
        "--probe-targets",
        "4096",
        "--probe-perturbations",
        "2",
        "--json",
    ]);
    let probe = json["probes"]["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "doc_isolation")
        .cloned()
        .expect("a doc-isolated procedure gets the isolation probe");
    (code, probe)
}

#[test]
fn doc_isolation_probe_passes_the_bos_fix_and_flags_smear_gate_without_it() {
    let (code, probe) = doc_isolation_probe("rec_2026_04_27");
    assert_eq!(code, 0);
    assert_eq!(probe["passed"], true, "{probe}");
    let (code, probe) = doc_isolation_probe("rec_2026_04_27_smear_no_bos_fix");
    assert_eq!(code, 2);
    assert_eq!(probe["passed"], false);
    // The evidence names the documents whose losses moved.
    let evidence = probe["evidence"].as_array().unwrap();
    assert_eq!(evidence.len(), 2);
    assert!(
        evidence
            .iter()
            .all(|e| e.as_str().unwrap().contains("next document's targets"))
    );
}

#[test]
fn window_procedures_do_not_claim_isolation_so_get_no_isolation_probe() {
    let dir = case_dir("rec_2026_04_09");
    let val = format!(
        "{}/fineweb_val_0*.bin",
        s(&fixture("records/streams/sp8192"))
    );
    let out = pgolf_json(&[
        "verify",
        s(&dir.join("model.safetensors")),
        "--config",
        s(&dir.join("config.json")),
        "--val",
        &val,
        "--tokenizer",
        s(&tokenizer_path(8192)),
        "--seq-len",
        "1024",
        "--probes",
        "--probe-targets",
        "2048",
        "--probe-perturbations",
        "1",
        "--probe-rows",
        "2",
        "--json",
    ]);
    let ids: Vec<&str> = out["probes"]["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&"doc_isolation"));
}

/// The fixtures are each preset's stack at small widths: apart from the widths, the configs are the presets'.
#[test]
fn preset_goldens_are_the_presets_at_small_width() {
    for (case, name) in [
        ("rec_2026_03_23", "rec-2026-03-23"),
        ("rec_2026_03_29", "rec-2026-03-29"),
        ("rec_2026_04_09", "rec-2026-04-09"),
        ("rec_2026_04_27", "rec-2026-04-27"),
    ] {
        let preset = pgolf::infer::presets::preset(name).unwrap();
        let mut small = config(case);
        small.model_dim = preset.config.model_dim;
        small.num_heads = preset.config.num_heads;
        small.num_kv_heads = preset.config.num_kv_heads;
        small.rope_dims = preset.config.rope_dims;
        small.bigram_vocab_size = preset.config.bigram_vocab_size;
        small.bigram_dim = preset.config.bigram_dim;
        small.ve_dim = preset.config.ve_dim;
        assert_eq!(small, preset.config, "{case} vs {name}");
        let declared = &preset.eval;
        let eval = &records_golden()[case]["eval"];
        let form = eval["form"].as_str().unwrap();
        match form {
            "legacy_sliding" => assert!(declared.legacy_sliding && declared.stride.is_some()),
            "sliding" => assert!(!declared.legacy_sliding && declared.stride.is_some()),
            "doc_isolated" => {
                assert!(declared.doc_isolated_batch_seqs.is_some() && declared.byte_sidecar)
            }
            other => panic!("unknown form {other}"),
        }
    }
}

#[test]
fn inspect_names_the_preset_a_state_dict_matches() {
    let out = pgolf_json(&[
        "inspect",
        s(&case_dir("rec_2026_04_09").join("model.safetensors")),
        "--json",
    ]);
    // Same names as rec-2026-04-09 at other widths: the closest preset, not an exact match.
    assert_eq!(out["preset"]["name"], "rec-2026-04-09");
    assert_eq!(out["preset"]["exact"], false);
    assert_eq!(out["preset"]["missing"], 0);
    assert_eq!(out["preset"]["extra"], 0);
    let banked = pgolf_json(&[
        "inspect",
        s(&case_dir("rec_2026_03_23_vr_gate_banked").join("model.safetensors")),
        "--json",
    ]);
    // Banks are split into per-block names before matching; vr_lambda and the legacy gate are extra.
    assert_eq!(banked["preset"]["name"], "rec-2026-03-23");
    assert_eq!(banked["preset"]["missing"], 0);
    assert_eq!(banked["preset"]["extra"], 11 * 3);
}

#[test]
fn an_unknown_preset_and_a_mismatched_preset_are_one_line_errors() {
    let dir = case_dir("rec_2026_04_09");
    let val = format!(
        "{}/fineweb_val_0*.bin",
        s(&fixture("records/streams/sp8192"))
    );
    let tok = tokenizer_path(8192);
    let model = dir.join("model.safetensors");
    let err = pgolf_err(&[
        "verify",
        s(&model),
        "--preset",
        "rec-1999",
        "--val",
        &val,
        "--tokenizer",
        s(&tok),
    ]);
    assert!(
        err.contains("no preset named \"rec-1999\"") && err.contains("rec-2026-04-09"),
        "{err}"
    );
    let err = pgolf_err(&[
        "verify",
        s(&model),
        "--preset",
        "rec-2026-04-09",
        "--val",
        &val,
        "--tokenizer",
        s(&tok),
    ]);
    assert!(
        err.contains("model.safetensors") && err.contains("tok_emb.weight has shape [8192, 32]"),
        "{err}"
    );
}

#[test]
fn bad_component_configs_are_rejected_with_the_reason() {
    let dir = temp_dir("bad_component_configs");
    for (json, want) in [
        (
            r#"{"num_loops": 2, "loop_start": 3, "loop_end": 9}"#,
            "loop segment 3..=9",
        ),
        (
            r#"{"sparse_attn_gate": true, "gated_attn": true}"#,
            "exclude each other",
        ),
        (r#"{"smear_gate_bos_fix": true}"#, "v2"),
        (r#"{"ve_layers": [12]}"#, "ve_layers names block 12"),
        (r#"{"rope_dims": 7}"#, "rope_dims 7"),
        (
            r#"{"parallel_residual_start": 3, "parallel_start_layer": 4}"#,
            "exclude each other",
        ),
        (r#"{"smear_gate": "v3"}"#, "unknown variant"),
    ] {
        let path = dir.join("config.json");
        std::fs::write(&path, json).unwrap();
        let err = ModelConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains(want),
            "{json}: {err}"
        );
    }
}

#[test]
fn train_refuses_record_components_and_names_the_config() {
    let config = case_dir("rec_2026_04_09").join("config.json");
    let stream = format!(
        "{}/fineweb_val_0*.bin",
        s(&fixture("records/streams/sp8192"))
    );
    let out = temp_dir("train_refuses_components");
    let err = pgolf_err(&[
        "train",
        "--config",
        s(&config),
        "--train",
        &stream,
        "--val",
        &stream,
        "--tokenizer",
        s(&tokenizer_path(8192)),
        "-o",
        s(&out.join("run")),
    ]);
    assert!(
        err.contains("config.json") && err.contains("depth_recurrence"),
        "{err}"
    );
    assert!(!out.join("run").exists());
}

#[test]
fn doc_isolated_buffers_are_whole_per_rank_as_the_records_truncate_them() {
    use pgolf::verify::windows::{WindowForm, plan_windows};
    let form = |world_size| WindowForm::DocIsolated {
        batch_seqs: 4,
        world_size,
    };
    // 13 sequences of 512: one rank scores 3 buffers (12 sequences) and drops 1.
    let one = plan_windows(13 * 512, 512, form(1)).unwrap();
    assert_eq!(
        one.iter().map(|w| (w.start, w.len)).collect::<Vec<_>>(),
        vec![(0, 2048), (2048, 2048), (4096, 2048)]
    );
    // Two ranks take sequences 0..6 and 6..13 and each scores one whole buffer of 4.
    let two = plan_windows(13 * 512, 512, form(2)).unwrap();
    assert_eq!(
        two.iter().map(|w| w.start).collect::<Vec<_>>(),
        vec![0, 6 * 512]
    );
    assert!(plan_windows(13 * 512, 512, form(0)).is_err());
}
