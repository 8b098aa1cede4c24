//! `pgolf demo`: the whole loop on the bundled data, with the real subcommands — train a small model on the CPU,
//! pack it under a budget scaled to its size, inspect the artifact, verify it with sliding windows, score-first TTT
//! and the legality probes. Each step prints the command a user would type and what it found.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use pgolf::infer::config::ModelConfig;
use pgolf::pack::budget::BUDGET_BYTES;

#[derive(Args)]
pub struct DemoArgs {
    /// Where the demo writes its model, artifact and logs.
    #[arg(long, default_value = "pgolf-demo")]
    out: PathBuf,
    /// Training time on the CPU, in seconds (the learning rate warms down over its last part).
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// The SentencePiece model of the bundled sp1024 data (default: the repository's
    /// fixtures/tokenizers/fineweb_1024_bpe.model).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

/// The bundled data lives in the repository; find it from the working directory or from where pgolf was built.
fn repo_file(rel: &str) -> PathBuf {
    let here = PathBuf::from(rel);
    if here.exists() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn step(title: &str, args: &[String]) -> Result<ExitCode> {
    println!("\n== {title}");
    println!("$ {}", args.join(" "));
    let code = crate::run_command_line(args).with_context(|| format!("demo step: {title}"))?;
    Ok(code)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    if args.seconds.is_nan() || args.seconds <= 0.0 {
        bail!("--seconds must be positive, got {}", args.seconds);
    }
    let tokenizer = args
        .tokenizer
        .clone()
        .unwrap_or_else(|| repo_file("fixtures/tokenizers/fineweb_1024_bpe.model"));
    if !tokenizer.exists() {
        bail!(
            "{}: the sp1024 tokenizer is not there; pass --tokenizer PATH",
            tokenizer.display()
        );
    }
    let train = repo_file("fixtures/data/sp1024/fineweb_val_000000.bin");
    let val = repo_file("fixtures/data/sp1024/fineweb_val_000001.bin");
    for f in [&train, &val] {
        if !f.exists() {
            bail!(
                "{}: bundled data missing (run from the repository)",
                f.display()
            );
        }
    }
    std::fs::create_dir_all(&args.out).with_context(|| s(&args.out))?;
    let cfg = ModelConfig {
        vocab_size: 1024,
        num_layers: 4,
        model_dim: 64,
        num_heads: 4,
        num_kv_heads: 2,
        mlp_mult: 2.0,
        tie_embeddings: true,
        logit_softcap: 30.0,
        rope_base: 10000.0,
        qk_gain_init: 1.5,
        train_seq_len: 128,
        ..ModelConfig::default()
    };
    let baseline = ModelConfig {
        num_layers: 9,
        model_dim: 512,
        num_heads: 8,
        num_kv_heads: 4,
        train_seq_len: 1024,
        ..cfg.clone()
    };
    let config_path = args.out.join("demo_config.json");
    pgolf::output::write_file(
        &config_path,
        &[],
        serde_json::to_string_pretty(&cfg)?.as_bytes(),
    )?;
    // The challenge's cap scaled by this model's share of the baseline's parameters.
    let budget = (BUDGET_BYTES as f64 * cfg.parameter_count() as f64
        / baseline.parameter_count() as f64)
        .ceil() as u64;
    println!(
        "pgolf demo: a {}-parameter sp1024 model ({} layers × {}), trained for {} s on the bundled FineWeb sample\n\
         (shard 0 for training, the first 16,384 tokens of shard 1 held out), packed under {budget} bytes —\n\
         16,000,000 × its share of the 9×512 baseline's {} parameters.",
        cfg.parameter_count(),
        cfg.num_layers,
        cfg.model_dim,
        args.seconds,
        baseline.parameter_count()
    );
    let tok = s(&tokenizer);
    let pg = |v: &[&str]| -> Vec<String> {
        std::iter::once("pgolf".to_string())
            .chain(v.iter().map(|x| x.to_string()))
            .collect()
    };
    let train_dir = args.out.join("train");
    let seconds = args.seconds.to_string();
    let code = step(
        "train: the baseline recipe (Muon for matrices, Adam for the rest), QAT in the warm-down",
        &pg(&[
            "train",
            "--config",
            &s(&config_path),
            "--train",
            &s(&train),
            "--val",
            &s(&val),
            "--max-val-tokens",
            "16384",
            "--tokenizer",
            &tok,
            "-o",
            &s(&train_dir),
            "--train-batch-tokens",
            "4096",
            "--max-wallclock-seconds",
            &seconds,
            "--warmdown-iters",
            "20",
            "--val-loss-every",
            "25",
            "--train-log-every",
            "10",
            "--qat",
            "--qat-threshold",
            "0.5",
        ]),
    )?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let artifact = args.out.join("demo.pglf");
    let code = step(
        "pack: SDClip int6 matrices / int7 embedding, rANS, fitted under the budget (floats kept only up to 256 elements)",
        &pg(&[
            "pack",
            &s(&train_dir.join("model.safetensors")),
            "--config",
            &s(&train_dir.join("config.json")),
            "-o",
            &s(&artifact),
            "--budget",
            &budget.to_string(),
            // The challenge keeps tensors of ≤ 65,536 elements in float; at this scale that would be every
            // matrix, so the threshold is scaled down with the model.
            "--keep-float-max-numel",
            "256",
        ]),
    )?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let code = step(
        "inspect: what the artifact holds",
        &pg(&["inspect", &s(&artifact)]),
    )?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let val_prefix = args.out.join("val");
    std::fs::create_dir_all(&val_prefix).with_context(|| s(&val_prefix))?;
    let held_out = pgolf::data::shard::read_shard(&val, &pgolf::limits::current())?;
    let held_out = &held_out[..held_out.len().min(16_384)];
    pgolf::data::shard::write_shard(&val_prefix.join("fineweb_val_000000.bin"), held_out)?;
    let val_glob = s(&val_prefix.join("fineweb_val_*.bin"));
    let verify = || {
        pg(&[
            "verify",
            &s(&artifact),
            "--val",
            &val_glob,
            "--tokenizer",
            &tok,
            "--stride",
            "32",
        ])
    };
    let code = step(
        "verify: sliding windows (stride 32) on the packed model",
        &verify(),
    )?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    // The TTT recipe and probe settings both verify runs share.
    let verify_ttt = |procedure: &[&str], extra: &[String]| -> Vec<String> {
        let mut v = verify();
        v.extend(procedure.iter().map(|x| x.to_string()));
        v.extend(
            [
                "--ttt-chunk-tokens",
                "4096",
                "--ttt-lr",
                "0.01",
                "--ttt-batch-seqs",
                "16",
                "--probes",
                "--probe-targets",
                "8192",
                "--probe-perturbations",
                "3",
            ]
            .iter()
            .map(|x| x.to_string()),
        );
        v.extend(extra.iter().cloned());
        v
    };
    let receipts = ["--receipts".to_string(), s(&args.out.join("receipts.json"))];
    let code = step(
        "verify: score-first TTT (chunks of 4,096 targets) with the legality probes",
        &verify_ttt(&["--ttt"], &receipts),
    )?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let code = step(
        "verify: the same TTT trained before scoring (planted violation): the probes must catch it",
        &verify_ttt(&["--planted", "adapt-then-score"], &[]),
    )?;
    if code != ExitCode::from(2) {
        bail!("the planted adapt-then-score procedure was not flagged by the probes");
    }
    println!(
        "\n== done: model, artifact, receipts and logs are in {}/ (the planted violation above was flagged, as it must be)",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
