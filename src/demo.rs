//! `pgolf demo`: the whole loop on the bundled data, as the commands a user would type — train a small sp1024 model
//! on the CPU, pack it under a budget scaled to its size, inspect the artifact, verify it with sliding windows,
//! score-first TTT and the legality probes, and see the probes catch a planted adapt-then-score TTT.
//!
//! Two stages like every command: the flags ([`DemoFlags`]) resolved into what runs ([`DemoSpec`]: the bundled data
//! found, the model and budget chosen), then [`plan`] (the config and the held-out shard written, the commands
//! listed) and [`DemoPlan::run`], which hands each command to the caller to run as the CLI runs it and checks what
//! it returned ([`DemoReport`]).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::infer::config::ModelConfig;
use crate::limits::Limits;
use crate::pack::budget::BUDGET_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    #[error("demo step: {title}: {message}")]
    Step { title: String, message: String },
}

pub type Result<T, E = DemoError> = std::result::Result<T, E>;

/// Every `pgolf demo` flag, as given.
#[derive(Clone, Debug, Default)]
pub struct DemoFlags {
    pub out: Option<PathBuf>,
    pub seconds: Option<f64>,
    pub tokenizer: Option<PathBuf>,
}

/// The defaults of the demo's flags.
pub const DEFAULT_OUT: &str = "pgolf-demo";
pub const DEFAULT_SECONDS: f64 = 60.0;

/// What one demo runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DemoSpec {
    /// Where the model, artifact, receipts and logs go.
    pub out: PathBuf,
    /// Training time, in seconds.
    pub seconds: f64,
    /// The sp1024 SentencePiece model.
    pub tokenizer: PathBuf,
    /// The bundled shard trained on, and the one whose first 16,384 tokens are held out.
    pub train_shard: PathBuf,
    pub val_shard: PathBuf,
    /// The demo's model: the baseline's architecture at 4 layers × 64.
    pub config: ModelConfig,
    /// The challenge's cap scaled by this model's share of the 9×512 baseline's parameters.
    pub budget: u64,
    pub baseline_parameters: usize,
}

/// The bundled data lives in the repository: found from the working directory or from where pgolf was built.
fn repo_file(rel: &str) -> PathBuf {
    let here = PathBuf::from(rel);
    if here.exists() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Tokens of the bundled validation shard held out for the demo's verification.
const HELD_OUT_TOKENS: usize = 16_384;

impl DemoFlags {
    pub fn resolve(&self) -> Result<DemoSpec> {
        let seconds = self.seconds.unwrap_or(DEFAULT_SECONDS);
        if seconds.is_nan() || seconds <= 0.0 {
            return Err(DemoError::Setup(format!(
                "--seconds must be positive, got {seconds}"
            )));
        }
        let tokenizer = self
            .tokenizer
            .clone()
            .unwrap_or_else(|| repo_file("fixtures/tokenizers/fineweb_1024_bpe.model"));
        if !tokenizer.exists() {
            return Err(DemoError::Setup(format!(
                "{}: the sp1024 tokenizer is not there; pass --tokenizer PATH",
                tokenizer.display()
            )));
        }
        let train_shard = repo_file("fixtures/data/sp1024/fineweb_val_000000.bin");
        let val_shard = repo_file("fixtures/data/sp1024/fineweb_val_000001.bin");
        for f in [&train_shard, &val_shard] {
            if !f.exists() {
                return Err(DemoError::Setup(format!(
                    "{}: bundled data missing (run from the repository)",
                    f.display()
                )));
            }
        }
        let config = ModelConfig {
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
            ..config.clone()
        };
        let budget = (BUDGET_BYTES as f64 * config.parameter_count() as f64
            / baseline.parameter_count() as f64)
            .ceil() as u64;
        Ok(DemoSpec {
            out: self.out.clone().unwrap_or_else(|| DEFAULT_OUT.into()),
            seconds,
            tokenizer,
            train_shard,
            val_shard,
            config,
            budget,
            baseline_parameters: baseline.parameter_count(),
        })
    }
}

/// What a step's command must return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Success (exit 0): anything else ends the demo with that code.
    Success,
    /// A failing probe (exit 2): the planted violation must be caught.
    ProbesFail,
}

/// One command of the demo.
#[derive(Clone, Debug, Serialize)]
pub struct DemoStep {
    pub title: String,
    /// The pgolf command line, `pgolf` first.
    pub args: Vec<String>,
    pub expect: Expect,
}

/// The demo's commands, its files written.
pub struct DemoPlan {
    pub spec: DemoSpec,
    pub steps: Vec<DemoStep>,
}

/// A step and what its command returned.
#[derive(Clone, Debug, Serialize)]
pub struct StepOutcome {
    pub title: String,
    pub command: String,
    pub exit_code: u8,
}

/// What the demo ran; `exit_code` 0 when every step returned what it must.
#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    pub out: String,
    pub steps: Vec<StepOutcome>,
    pub exit_code: u8,
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn pgolf(v: &[&str]) -> Vec<String> {
    std::iter::once("pgolf".to_string())
        .chain(v.iter().map(|x| x.to_string()))
        .collect()
}

/// Writes the demo's config and held-out validation shard under `out`, and lists its commands.
pub fn plan(spec: &DemoSpec, limits: &Limits) -> Result<DemoPlan> {
    let io = |e: std::io::Error| DemoError::Setup(format!("{}: {e}", spec.out.display()));
    std::fs::create_dir_all(&spec.out).map_err(io)?;
    let config_path = spec.out.join("demo_config.json");
    let config =
        serde_json::to_string_pretty(&spec.config).map_err(|e| DemoError::Setup(e.to_string()))?;
    crate::output::write_file(&config_path, &[], config.as_bytes())?;
    let val_dir = spec.out.join("val");
    std::fs::create_dir_all(&val_dir).map_err(io)?;
    let held_out = crate::data::shard::read_shard(&spec.val_shard, limits)?;
    let held_out = &held_out[..held_out.len().min(HELD_OUT_TOKENS)];
    crate::data::shard::write_shard(&val_dir.join("fineweb_val_000000.bin"), held_out)?;
    let train_dir = spec.out.join("train");
    let artifact = spec.out.join("demo.pglf");
    let tok = s(&spec.tokenizer);
    let seconds = spec.seconds.to_string();
    let budget = spec.budget.to_string();
    let step = |title: &str, args: Vec<String>| DemoStep {
        title: title.into(),
        args,
        expect: Expect::Success,
    };
    let train = pgolf(&[
        "train",
        "--config",
        &s(&config_path),
        "--train",
        &s(&spec.train_shard),
        "--val",
        &s(&spec.val_shard),
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
    ]);
    // The challenge keeps tensors of ≤ 65,536 elements in float; at this scale that would be every matrix, so the
    // threshold is scaled down with the model.
    let pack = pgolf(&[
        "pack",
        &s(&train_dir.join("model.safetensors")),
        "--config",
        &s(&train_dir.join("config.json")),
        "-o",
        &s(&artifact),
        "--budget",
        &budget,
        "--keep-float-max-numel",
        "256",
    ]);
    let val_glob = s(&val_dir.join("fineweb_val_*.bin"));
    let verify = pgolf(&[
        "verify",
        &s(&artifact),
        "--val",
        &val_glob,
        "--tokenizer",
        &tok,
        "--stride",
        "32",
    ]);
    // The TTT recipe and probe settings both TTT runs share.
    let verify_ttt = |procedure: &[&str], extra: &[String]| -> Vec<String> {
        let mut v = verify.clone();
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
    let receipts = ["--receipts".to_string(), s(&spec.out.join("receipts.json"))];
    let steps = vec![
        step("train: the baseline recipe (Muon for matrices, Adam for the rest), QAT in the warm-down", train),
        step(
            "pack: SDClip int6 matrices / int7 embedding, rANS, fitted under the budget (floats kept only up to 256 \
             elements)",
            pack,
        ),
        step("inspect: what the artifact holds", pgolf(&["inspect", &s(&artifact)])),
        step("verify: sliding windows (stride 32) on the packed model", verify.clone()),
        step(
            "verify: score-first TTT (chunks of 4,096 targets) with the legality probes",
            verify_ttt(&["--ttt"], &receipts),
        ),
        DemoStep {
            title: "verify: the same TTT trained before scoring (planted violation): the probes must catch it".into(),
            args: verify_ttt(&["--planted", "adapt-then-score"], &[]),
            expect: Expect::ProbesFail,
        },
    ];
    Ok(DemoPlan {
        spec: spec.clone(),
        steps,
    })
}

impl DemoPlan {
    /// Runs each step through `run_step` (which runs the command line and returns its exit code), stopping at the
    /// first that does not return what it must.
    pub fn run(
        &self,
        run_step: &mut dyn FnMut(&DemoStep) -> std::result::Result<u8, String>,
    ) -> Result<DemoReport> {
        let mut steps = Vec::new();
        for step in &self.steps {
            let code = run_step(step).map_err(|message| DemoError::Step {
                title: step.title.clone(),
                message,
            })?;
            steps.push(StepOutcome {
                title: step.title.clone(),
                command: step.args.join(" "),
                exit_code: code,
            });
            let ok = match step.expect {
                Expect::Success => code == 0,
                Expect::ProbesFail => code == 2,
            };
            if !ok && step.expect == Expect::ProbesFail {
                return Err(DemoError::Setup(
                    "the planted adapt-then-score procedure was not flagged by the probes".into(),
                ));
            }
            if !ok {
                return Ok(DemoReport {
                    out: s(&self.spec.out),
                    steps,
                    exit_code: code,
                });
            }
        }
        Ok(DemoReport {
            out: s(&self.spec.out),
            steps,
            exit_code: 0,
        })
    }
}
