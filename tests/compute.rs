//! `--device` and `--precision` (issue 9) on the CPU: the records' mixed precision against f32 and against the
//! PyTorch references, the device-side cross-entropy a GPU run scores with, TTT micro-batches, and the errors of a
//! device this build cannot open. The same comparisons run on an H100 through `scripts/gpu/check.py`.

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

fn model_args(name: &str, vocab: usize, val: &str) -> Vec<String> {
    vec![
        "verify".into(),
        s(&fixture(&format!("models/{name}.safetensors"))).into(),
        "--config".into(),
        s(&fixture(&format!("models/{name}.json"))).into(),
        "--val".into(),
        format!("{}/fineweb_val_*.bin", fixture(val).display()),
        "--tokenizer".into(),
        s(&tokenizer_path(vocab)).into(),
        "--json".into(),
    ]
}

fn run_json(args: &[String], extra: &[&str]) -> Value {
    let mut a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    a.extend_from_slice(extra);
    pgolf_json(&a)
}

/// The config and checked f32 weights of fixture model `name` (`fixtures/models/NAME.{json,safetensors}`).
fn fixture_model(name: &str) -> (ModelConfig, weights::StateDict) {
    let cfg = ModelConfig::load(&fixture(&format!("models/{name}.json"))).unwrap();
    let path = fixture(&format!("models/{name}.safetensors"));
    let state = weights::load_safetensors(&path, &Device::Cpu).unwrap();
    let state = weights::check_state_dict(&cfg, state, DType::F32, &path).unwrap();
    (cfg, state)
}

fn rel(a: f64, b: f64) -> f64 {
    ((a - b) / b).abs()
}

fn bpb(v: &Value) -> f64 {
    v["val_bpb"].as_f64().unwrap()
}

#[test]
fn mixed_precision_stays_within_1e3_of_the_f32_reference() {
    for (name, vocab, val) in [
        ("sp1024_tied", 1024, "models/val_sp1024"),
        ("sp8192_tied", 8192, "models/val_sp8192"),
    ] {
        let golden = golden(&format!("models/golden_{name}.json"));
        let reference = golden["eval_val"]["val_bpb"].as_f64().unwrap();
        let args = model_args(name, vocab, val);
        let fp32 = run_json(&args, &[]);
        let mixed = run_json(&args, &["--precision", "mixed"]);
        assert_eq!(fp32["precision"], "fp32", "{name}");
        assert_eq!(mixed["precision"], "mixed", "{name}");
        assert_eq!(mixed["device"], "cpu", "{name}");
        // Where the bf16 products ran: AMX tiles, or the reason there are none.
        let how = mixed["mixed_products"].as_str().unwrap();
        assert!(
            how.starts_with("AMX bf16 tiles") || how.starts_with("no AMX: "),
            "{how}"
        );
        assert!(fp32.get("mixed_products").is_none(), "{name}");
        assert!(
            rel(bpb(&fp32), reference) < 1e-5,
            "{name}: fp32 {} vs {reference}",
            bpb(&fp32)
        );
        let gap = rel(bpb(&mixed), reference);
        assert!(
            gap < 1e-3,
            "{name}: mixed {} vs {reference} ({gap:e})",
            bpb(&mixed)
        );
        // bf16 operands change the arithmetic: an identical number would mean the flag did nothing.
        assert!(gap > 1e-7, "{name}: mixed equals f32 to {gap:e}");
        assert_eq!(mixed["targets"], fp32["targets"], "{name}");
        assert_eq!(mixed["bytes"], fp32["bytes"], "{name}");
    }
}

/// The TTT golden case tied_w1 (fixtures/generate_ttt.py: the records' recipe in PyTorch, f32).
fn ttt_case() -> (Vec<String>, f64) {
    let g = golden("ttt/golden_ttt.json");
    let case = &g["cases"][0];
    assert_eq!(case["case"]["name"], "tied_w1");
    let c = &case["case"];
    let mut args = model_args("sp1024_tied", 1024, "ttt/val_sp1024");
    for (flag, key) in [
        ("--stride", "stride"),
        ("--ttt-chunk-tokens", "chunk"),
        ("--ttt-epochs", "epochs"),
        ("--ttt-lr", "lr"),
        ("--ttt-momentum", "momentum"),
        ("--ttt-batch-seqs", "batch_seqs"),
        ("--ttt-grad-clip", "clip"),
        ("--ttt-freeze-blocks", "freeze"),
        ("--world-size", "world"),
    ] {
        args.extend([flag.to_string(), c[key].to_string()]);
    }
    args.push("--ttt".into());
    (args, case["val_bpb"].as_f64().unwrap())
}

#[test]
fn ttt_micro_batches_give_the_reference_step_and_mixed_ttt_stays_within_1e3() {
    let (args, reference) = ttt_case();
    // 32 sequences per step in micro-batches of 5 (5, 5, 5, 5, 5, 5, 2): each piece weighted by its share.
    let micro = run_json(&args, &["--ttt-micro-batch", "5"]);
    assert!(
        rel(bpb(&micro), reference) < 1e-5,
        "micro-batched TTT {} vs reference {reference}",
        bpb(&micro)
    );
    assert_eq!(micro["ttt"]["training"]["steps"], 9);
    let mixed = run_json(&args, &["--precision", "mixed"]);
    let gap = rel(bpb(&mixed), reference);
    assert!(
        gap < 1e-3,
        "mixed TTT {} vs reference {reference} ({gap:e})",
        bpb(&mixed)
    );
    assert!(gap > 1e-7, "mixed TTT equals f32 to {gap:e}");
}

#[test]
fn device_side_cross_entropy_matches_the_host_rows() {
    // What a GPU run scores with (the logits never leave the device), run here on the CPU against the host path.
    let (cfg, state) = fixture_model("sp8192_tied");
    let model = Gpt::new(cfg, state, &Device::Cpu, Precision::Fp32).unwrap();
    let l = 64;
    let glob = format!(
        "{}/fineweb_val_*.bin",
        fixture("models/val_sp8192").display()
    );
    let tokens =
        shard::load_validation_tokens(&glob, l, &pgolf::limits::Limits::default()).unwrap();
    // Two windows of different lengths (the shorter is padded), and two requested rows.
    let inputs: [&[u16]; 2] = [&tokens[..l], &tokens[l..l + 40]];
    let targets: [&[u16]; 2] = [&tokens[1..l + 1], &tokens[l + 1..l + 41]];
    let rows = [(0, 5), (1, 39)];
    let host = ModelScorer::new(&model, l);
    assert!(!host.nll_on_device);
    let mut device = ModelScorer::new(&model, l);
    device.nll_on_device = true;
    let a = host.score(&inputs, &targets, &rows).unwrap();
    let b = device.score(&inputs, &targets, &rows).unwrap();
    assert_eq!(a.nll.len(), 2);
    for (wa, wb) in a.nll.iter().zip(&b.nll) {
        assert_eq!(wa.len(), wb.len());
        for (x, y) in wa.iter().zip(wb) {
            assert!((x - y).abs() < 1e-5, "nll {x} vs {y}");
        }
    }
    assert_eq!(b.rows.len(), 2);
    for (ra, rb) in a.rows.iter().zip(&b.rows) {
        assert_eq!(ra.len(), 8192);
        let max = ra
            .iter()
            .zip(rb)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(max < 1e-5, "row differs by {max}");
    }
}

#[test]
fn devices_and_precisions_this_build_cannot_use_are_refused() {
    let args = model_args("sp1024_tied", 1024, "models/val_sp1024");
    let mut a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    a.extend(["--device", "tpu"]);
    let err = pgolf_err(&a);
    assert!(err.contains("unknown device \"tpu\""), "{err}");
    if !pgolf::infer::device::CUDA_BUILT {
        a.truncate(a.len() - 2);
        a.extend(["--device", "cuda"]);
        let err = pgolf_err(&a);
        assert!(
            err.contains("built without CUDA") && err.contains("scripts/build-cuda.sh"),
            "{err}"
        );
    }
    a.truncate(a.len() - 2);
    a.extend(["--precision", "fp16"]);
    let out = pgolf(&a);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad --precision is a usage error"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected fp32 or mixed"), "{err}");
}

#[test]
fn train_takes_the_same_device_flag() {
    let out_dir = std::env::temp_dir().join(format!("pgolf-compute-train-{}", std::process::id()));
    let err = pgolf_err(&[
        "train",
        "--config",
        s(&fixture("models/sp1024_tied.json")),
        "--train",
        &format!(
            "{}/fineweb_val_*.bin",
            fixture("models/val_sp1024").display()
        ),
        "--val",
        &format!(
            "{}/fineweb_val_*.bin",
            fixture("models/val_sp1024").display()
        ),
        "--tokenizer",
        s(&tokenizer_path(1024)),
        "--device",
        "cuda:x",
        "--iterations",
        "1",
        "--output",
        s(&out_dir),
        "--json",
    ]);
    assert!(err.contains("unknown device \"cuda:x\""), "{err}");
    assert!(!out_dir.exists(), "a refused run leaves no output");
}

#[test]
fn generic_ops_the_gpu_runs_reproduce_the_references_on_the_cpu() {
    // --generic-ops: explicit masked-softmax attention, composed RMSNorm / RoPE / cross-entropy, candle's autograd,
    // the device-side cross-entropy — the code a GPU runs, here on the CPU against the PyTorch references.
    let golden = golden("models/golden_sp1024_tied.json");
    let args = model_args("sp1024_tied", 1024, "models/val_sp1024");
    let stride = golden["stride"].to_string();
    let sliding = run_json(&args, &["--generic-ops", "--stride", &stride]);
    assert_eq!(sliding["generic_ops"], true);
    let reference = golden["sliding"]["val_bpb"].as_f64().unwrap();
    assert!(
        rel(bpb(&sliding), reference) < 1e-5,
        "sliding {} vs {reference}",
        bpb(&sliding)
    );
    let (ttt, reference) = ttt_case();
    let generic = run_json(&ttt, &["--generic-ops"]);
    assert!(
        rel(bpb(&generic), reference) < 1e-5,
        "TTT {} vs {reference}",
        bpb(&generic)
    );
    // The trainer's step (Muon, Adam, autograd through the composed operations) against the CPU kernels.
    let out_dir =
        std::env::temp_dir().join(format!("pgolf-compute-generic-{}", std::process::id()));
    let train = |extra: &[&str]| {
        let val = format!(
            "{}/fineweb_val_*.bin",
            fixture("models/val_sp1024").display()
        );
        let config = fixture("models/sp1024_tied.json");
        let tokenizer = tokenizer_path(1024);
        let mut a = vec![
            "train",
            "--config",
            s(&config),
            "--train",
            &val,
            "--val",
            &val,
            "--tokenizer",
            s(&tokenizer),
            "--output",
            s(&out_dir),
            "--iterations",
            "3",
            "--warmdown-iters",
            "0",
            "--train-batch-tokens",
            "4096",
            "--val-loss-every",
            "0",
            "--max-wallclock-seconds",
            "0",
            "--json",
        ];
        a.extend_from_slice(extra);
        pgolf_json(&a)["final_val_bpb"].as_f64().unwrap()
    };
    let kernels = train(&[]);
    let generic = train(&["--generic-ops"]);
    std::fs::remove_dir_all(&out_dir).ok();
    assert!(
        rel(generic, kernels) < 1e-4,
        "train: generic {generic} vs kernels {kernels}"
    );
}

/// A mixed-precision model keeps each weight's AMX packing across products; a weight that changes afterwards,
/// replaced (`set_parameter`) or updated in place through a variable (`make_trainable`, then `Var::set` on storage a
/// constant view shares), must be packed again: the logits equal, bit for bit, those of a model built with the
/// changed weights. (On a CPU without AMX-BF16 nothing is packed and the comparison holds trivially.)
#[test]
fn mixed_precision_weight_packings_follow_weight_changes() {
    let (cfg, state) = fixture_model("sp1024_tied");
    let build = |state: &weights::StateDict| {
        Gpt::new(cfg.clone(), state.clone(), &Device::Cpu, Precision::Mixed).unwrap()
    };
    let glob = format!(
        "{}/fineweb_val_*.bin",
        fixture("models/val_sp1024").display()
    );
    let tokens =
        shard::load_validation_tokens(&glob, 128, &pgolf::limits::Limits::default()).unwrap();
    let ids: Vec<u32> = tokens[..2 * 128].iter().map(|&t| t as u32).collect();
    let ids = candle_core::Tensor::from_vec(ids, (2, 128), &Device::Cpu).unwrap();
    let logits = |m: &Gpt| -> Vec<f32> {
        m.logits(&ids)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    // The weights each kind of product reads: an attention projection, the MLP's first layer (its own fused
    // path), and the tied embedding as the output head.
    let changed = [
        "blocks.0.attn.c_q.weight",
        "blocks.1.mlp.fc.weight",
        "tok_emb.weight",
    ];
    let mut scaled = state.clone();
    for n in changed {
        let w = scaled[n].clone();
        scaled.insert(n.to_string(), (w * 0.75).unwrap());
    }
    let want = logits(&build(&scaled));

    let mut replaced = build(&state);
    let before = logits(&replaced);
    assert_ne!(before, want, "scaling the weights changes the logits");
    for n in changed {
        replaced.set_parameter(n, scaled[n].clone()).unwrap();
    }
    assert_eq!(logits(&replaced), want, "after set_parameter");

    let mut updated = build(&state);
    assert_eq!(logits(&updated), before);
    let vars = updated.make_trainable(|n| changed.contains(&n)).unwrap();
    // Constants again, over the variables' storage: the products take the forward-only tile path.
    updated.make_trainable(|_| false).unwrap();
    // A product with the old values first (it would pack them), then the update in place.
    assert_eq!(logits(&updated), before);
    for (n, var) in &vars {
        var.set(&scaled[n.as_str()]).unwrap();
    }
    assert_eq!(logits(&updated), want, "after Var::set");
}
