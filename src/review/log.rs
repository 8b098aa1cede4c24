//! Train logs as the records print them: the hyperparameter dump, `model_params`, every evaluation line, the sizes,
//! the training and evaluation clocks, the validation token count and the GPTQ calibration lines.
//!
//! Parsing is table-driven ([`RULES`]) and tolerant: a line no rule knows is skipped, a field no line gives stays
//! `None`. Logs that embed the training script (the early records print it before the run) are handled because
//! every rule needs digits where the source has a format string (`val_loss:{val_loss:.4f}` matches nothing).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

/// One line a value came from: `file:line: text`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evidence {
    pub file: String,
    pub line: usize,
    pub text: String,
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.text)
    }
}

/// An evaluation line: `<label> val_loss:X val_bpb:Y [eval_time:Zms]`, or a BPB-only `<Label> BPB (…): Y`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    pub label: String,
    /// None where the line gives only the BPB.
    pub val_loss: Option<f64>,
    pub val_bpb: f64,
    /// Decimals printed for val_bpb (4 for the rounded lines, 8 for `_exact`): the precision a claim can be held to.
    pub bpb_decimals: usize,
    pub loss_decimals: usize,
    pub eval_seconds: Option<f64>,
    pub line: usize,
}

/// A point of the training curve (a step line with a train loss or a validation score).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CurvePoint {
    pub step: u64,
    pub train_loss: Option<f64>,
    pub val_bpb: Option<f64>,
}

/// Everything a review reads from one train log. Field names of the JSON contract (`file`, `seed`, `val_bpb`,
/// `val_loss`, `artifact_bytes`, `code_bytes`, `total_bytes`, `train_seconds`, `eval_seconds`, `val_tokens`,
/// `model_params`) are kept; each is null when the log does not say.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LogSummary {
    pub file: String,
    /// The run's seed: the log's own `seed` line or hyperparameter, else the file name's `seed<N>`.
    pub seed: Option<u64>,
    /// The seed the file name states, when it states one.
    pub seed_in_name: Option<u64>,
    /// Another log of the folder that reports the very same run (same seed, same evaluation lines): a `train.log`
    /// kept beside its `train_seed<N>.log`. Counted once.
    pub duplicate_of: Option<String>,
    /// The log's final reported score (its last evaluation line): the one a submission claims.
    pub val_bpb: Option<f64>,
    pub val_loss: Option<f64>,
    pub final_label: Option<String>,
    pub artifact_bytes: Option<u64>,
    pub code_bytes: Option<u64>,
    /// `Code size (uncompressed): N bytes`, where the script counts a compressed wrapper it builds itself.
    pub code_bytes_uncompressed: Option<u64>,
    /// The counted code size is the script's own compressed wrapper (`Code size (compressed)`).
    pub code_counted_compressed: bool,
    pub total_bytes: Option<u64>,
    pub train_seconds: Option<f64>,
    pub eval_seconds: Option<f64>,
    pub val_tokens: Option<u64>,
    pub model_params: Option<u64>,
    pub steps: Option<u64>,
    pub train_shards: Option<u64>,
    /// Seconds spent collecting GPTQ Hessians from training data after the training loop.
    pub hessian_seconds: Option<f64>,
    /// Seconds the script reserved from the training budget for GPTQ (`gptq:reserving …`).
    pub gptq_reserve_seconds: Option<f64>,
    /// GPTQ calibrated on self-generated sequences (no data read).
    pub calibration_self_generated: bool,
    /// The tokenizer or dataset variant the log names (`sp1024`, `sp8192`, `byte260`, …), `caseops` when it says so.
    pub variant: Option<String>,
    pub caseops: bool,
    /// The evaluation's sequence length and sliding stride, where the log gives them.
    pub eval_seq_len: Option<u64>,
    pub eval_stride: Option<u64>,
    /// `EVAL_INCLUDE_TAIL` (#2014): the evaluation scores every target of the stream, the tail that the truncation
    /// to a multiple of the sequence length drops included.
    pub eval_include_tail: bool,
    pub ttt_enabled: Option<bool>,
    /// The log carries the training script's source.
    pub embeds_code: bool,
    pub evaluations: Vec<Evaluation>,
    pub hyperparameters: BTreeMap<String, String>,
    #[serde(skip)]
    pub curve: Vec<CurvePoint>,
    /// The line each field came from, by field name.
    pub evidence: BTreeMap<String, Evidence>,
}

impl LogSummary {
    /// The line a field came from, as `file:line: text`, or an empty list.
    pub fn evidence_for(&self, field: &str) -> Vec<String> {
        self.evidence
            .get(field)
            .map(|e| vec![e.to_string()])
            .unwrap_or_default()
    }

    /// The final evaluation line.
    pub fn final_evaluation(&self) -> Option<&Evaluation> {
        self.evaluations.last()
    }
}

/// What a rule does with its captures.
#[derive(Clone, Copy, Debug)]
enum Field {
    ModelParams,
    ValTokens,
    TrainShards,
    /// `Serialized model <scheme>: N bytes` (the compressed artifact; the bare form is the raw torch.save).
    SerializedModel,
    /// `Code size: N bytes` / `Code size (compressed): N bytes` / `(uncompressed)`.
    CodeSize,
    /// `Total submission size <scheme>: N bytes`.
    TotalSize,
    /// `artifact_bytes: N` (a few non-standard logs).
    ArtifactBytes,
    /// `stopping_early: wallclock_cap train_time:Nms step:S/T`.
    StoppingEarly,
    /// `Training complete in Xs (N steps)`.
    TrainingComplete,
    /// `total_eval_time:Xs`.
    TotalEvalTime,
    /// `GPTQ:collected N Hessians in Xs`.
    HessianTime,
    /// `gptq:reserving Xs, effective=…` or `gptq:reserving Xms from training budget`.
    GptqReserve,
    /// `gptq:generating autoregressive calibration data` / `(AR self-gen)`.
    SelfGenerated,
    /// `seed:N`.
    Seed,
    /// `ttt_*` start lines: TTT ran.
    TttRan,
}

struct Rule {
    field: Field,
    pattern: Regex,
}

fn rule(field: Field, pattern: &str) -> Rule {
    Rule {
        field,
        pattern: Regex::new(pattern).expect("log rule"),
    }
}

/// The table of line rules, tried in order; the first that matches a line wins.
static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        rule(Field::ModelParams, r"^model_params:\s*(\d+)"),
        rule(Field::ModelParams, r"^Total params:\s*([\d,]+)\s*$"),
        rule(Field::ValTokens, r"^Validation tokens:\s*([\d,]+)\s*$"),
        rule(Field::ArtifactBytes, r"^Artifact:\s*([\d,]+) bytes"),
        rule(Field::Seed, r"^Seed:\s*(\d+)\b"),
        rule(
            Field::TrainingComplete,
            r"^Training complete in ([\d.]+)s \((\d+) steps\)",
        ),
        rule(Field::ValTokens, r"^val_tokens:\s*(\d+)"),
        rule(Field::ValTokens, r"^val_loader:.*\btokens:(\d+)"),
        rule(Field::TrainShards, r"^train_shards:\s*(\d+)"),
        rule(Field::TrainShards, r"^train_loader:.*\btrain_shards:(\d+)"),
        rule(
            Field::SerializedModel,
            r"^Serialized model (\S[^:]*):\s*(\d+) bytes",
        ),
        rule(Field::CodeSize, r"^Code size(?: \((\w+)\))?:\s*(\d+) bytes"),
        rule(
            Field::TotalSize,
            r"^Total submission size (\S[^:]*):\s*(\d+) bytes",
        ),
        rule(Field::ArtifactBytes, r"^artifact_bytes:\s*(\d+)"),
        rule(
            Field::StoppingEarly,
            r"^stopping_early:.*train_time:\s*(\d+)ms\s+step:\s*(\d+)/(\d+)",
        ),
        rule(Field::TotalEvalTime, r"^total_eval_time:\s*([\d.]+)s"),
        rule(
            Field::HessianTime,
            r"(?i)^gptq:collected (\d+) hessians in ([\d.]+)s",
        ),
        rule(Field::GptqReserve, r"^gptq:reserving ([\d.]+)(ms|s)\b"),
        rule(
            Field::SelfGenerated,
            r"(?i)^gptq:.*(autoregressive|self-gen)",
        ),
        rule(Field::Seed, r"^seed:\s*(\d+)\s*$"),
        rule(
            Field::TttRan,
            r"^(ttt_sliding:start|ttt_phased:|ttt_lora:docs|ttt_chunk)",
        ),
    ]
});

/// `<label> val_loss:X val_bpb:Y …` (also `=`-separated, and `stride:N` between label and loss).
static EVAL_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?P<label>[A-Za-z][\w.+()\-]*(?: [A-Za-z][\w.+()\-]*)*?)(?: stride:\d+)?\s+val_loss[:=]\s*(?P<loss>\d+\.(?P<ld>\d+))\s+val_bpb[:=]\s*(?P<bpb>\d+\.(?P<bd>\d+))(?P<rest>.*)$",
    )
    .expect("eval line")
});
/// A BPB-only evaluation line some scripts print: `Quantized BPB (no XSA): 1.016200`.
static BPB_ONLY_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?P<label>[A-Za-z][\w+-]*(?: [A-Za-z][\w+-]*)*? BPB(?: \([^)]*\))?):\s*(?P<bpb>\d+\.(?P<bd>\d+))\s*$")
        .expect("bpb-only line")
});
static EVAL_TIME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:eval_time|time|elapsed)[:=]\s*([\d.]+)(ms|s)\b").expect("eval time")
});
/// Training step lines, both spellings: `step:N/M train_loss:X … train_time:Tms` and `N/M train_loss: X …`.
static STEP_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:step:\s*)?(?P<step>\d+)/(?P<total>\d+)\s+(?P<rest>(?:train_loss|val_loss).*)$")
        .expect("step line")
});
static STEP_TRAIN_LOSS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"train_loss:\s*([\d.]+)").expect("train loss"));
static STEP_VAL_BPB: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"val_bpb:\s*([\d.]+)").expect("val bpb"));
static STEP_TRAIN_TIME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"train_time:\s*([\d.]+)(ms|m|s)\b").expect("train time"));
/// A hyperparameter dump line: two-space indent, `name: value`.
static HYPER_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s+([A-Za-z_][A-Za-z0-9_]*):\s*(.*?)\s*$").expect("hyper line"));
/// A leading Unix timestamp some logs put before every line.
static TIMESTAMP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\d{9,}\.\d+\s+").expect("timestamp"));
static VARIANT_IN_PATH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"fineweb10B_([a-z][a-z0-9]*)|fineweb_(\d+)_bpe").expect("variant in path")
});
static LOADER_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(val_loader|train_loader|val_bpb:enabled)\b").expect("loader line")
});
static SEED_IN_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"seed[_-]?(\d+)").expect("seed in name"));

fn seconds(value: &str, unit: &str) -> Option<f64> {
    let v: f64 = value.parse().ok()?;
    Some(match unit {
        "ms" => v / 1000.0,
        "m" => v * 60.0,
        _ => v,
    })
}

/// Reads one log's text. `file` is the name the evidence cites.
pub fn parse_log(file: &str, text: &str) -> LogSummary {
    let mut s = LogSummary {
        file: file.to_string(),
        ..LogSummary::default()
    };
    let mut code_size: Option<(u8, u64, Evidence)> = None; // (preference, bytes, line)
    let mut last_step_time: Option<(f64, u64, Evidence)> = None;
    let mut stopped: Option<(f64, u64, Evidence)> = None;
    let mut total_eval: Option<(f64, Evidence)> = None;
    let mut in_hyper = false;
    let mut code_lines = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = TIMESTAMP.replace(raw.trim_end(), "");
        let line = line.as_ref();
        let evidence = || Evidence {
            file: file.to_string(),
            line: n,
            text: line.trim().chars().take(200).collect(),
        };
        if line.starts_with("Hyperparameters:") {
            in_hyper = true;
            continue;
        }
        if in_hyper {
            if let Some(c) = HYPER_LINE.captures(line) {
                s.hyperparameters.insert(c[1].to_string(), c[2].to_string());
                continue;
            }
            in_hyper = false;
        }
        if line.starts_with("import ") || line.starts_with("def ") || line.starts_with("class ") {
            code_lines += 1;
        }
        if let Some(c) = STEP_LINE.captures(line) {
            let step: u64 = c["step"].parse().unwrap_or(0);
            let rest = &c["rest"];
            let train_loss = STEP_TRAIN_LOSS
                .captures(rest)
                .and_then(|m| m[1].parse().ok());
            let val_bpb = STEP_VAL_BPB.captures(rest).and_then(|m| m[1].parse().ok());
            s.curve.push(CurvePoint {
                step,
                train_loss,
                val_bpb,
            });
            if let Some(t) = STEP_TRAIN_TIME.captures(rest)
                && let Some(secs) = seconds(&t[1], &t[2])
            {
                last_step_time = Some((secs, step, evidence()));
            }
            continue;
        }
        if let Some(c) = EVAL_LINE.captures(line) {
            let label = c["label"].trim().to_string();
            if !label.starts_with("step") {
                let eval_seconds = EVAL_TIME
                    .captures(&c["rest"])
                    .and_then(|t| seconds(&t[1], &t[2]));
                s.evaluations.push(Evaluation {
                    label,
                    val_loss: c["loss"].parse().ok(),
                    val_bpb: c["bpb"].parse().unwrap_or(f64::NAN),
                    bpb_decimals: c["bd"].len(),
                    loss_decimals: c["ld"].len(),
                    eval_seconds,
                    line: n,
                });
                s.evidence.insert("val_bpb".into(), evidence());
                continue;
            }
        }
        // The dataset or tokenizer a loader line names (not the script's defaults, which an embedded source shows).
        if s.variant.is_none()
            && LOADER_LINE.is_match(line)
            && let Some(v) = variant_in(line)
        {
            s.variant = Some(v);
            s.evidence.insert("variant".into(), evidence());
        }
        if let Some(c) = BPB_ONLY_LINE.captures(line) {
            s.evaluations.push(Evaluation {
                label: c["label"].to_string(),
                val_loss: None,
                val_bpb: c["bpb"].parse().unwrap_or(f64::NAN),
                bpb_decimals: c["bd"].len(),
                loss_decimals: 0,
                eval_seconds: None,
                line: n,
            });
            continue;
        }
        for r in RULES.iter() {
            let Some(c) = r.pattern.captures(line) else {
                continue;
            };
            let num = |k: usize| {
                c.get(k)
                    .and_then(|m| m.as_str().replace(',', "").parse::<u64>().ok())
            };
            match r.field {
                Field::ModelParams => set(
                    &mut s.model_params,
                    num(1),
                    "model_params",
                    &mut s.evidence,
                    evidence(),
                ),
                Field::ValTokens => set(
                    &mut s.val_tokens,
                    num(1),
                    "val_tokens",
                    &mut s.evidence,
                    evidence(),
                ),
                Field::TrainShards => set(
                    &mut s.train_shards,
                    num(1),
                    "train_shards",
                    &mut s.evidence,
                    evidence(),
                ),
                Field::SerializedModel => set(
                    &mut s.artifact_bytes,
                    num(2),
                    "artifact_bytes",
                    &mut s.evidence,
                    evidence(),
                ),
                Field::ArtifactBytes => {
                    if s.artifact_bytes.is_none() {
                        set(
                            &mut s.artifact_bytes,
                            num(1),
                            "artifact_bytes",
                            &mut s.evidence,
                            evidence(),
                        )
                    }
                }
                Field::CodeSize => {
                    // What the challenge counts: the compressed wrapper's size where the script reports one.
                    let pref = match c.get(1).map(|m| m.as_str()) {
                        Some("compressed") => 2,
                        None => 1,
                        Some(_) => 0,
                    };
                    if pref == 0 {
                        set(
                            &mut s.code_bytes_uncompressed,
                            num(2),
                            "code_bytes_uncompressed",
                            &mut s.evidence,
                            evidence(),
                        );
                    }
                    if let Some(b) = num(2)
                        && code_size.as_ref().is_none_or(|(p, _, _)| pref >= *p)
                    {
                        code_size = Some((pref, b, evidence()));
                    }
                }
                Field::TotalSize => set(
                    &mut s.total_bytes,
                    num(2),
                    "total_bytes",
                    &mut s.evidence,
                    evidence(),
                ),
                Field::StoppingEarly => {
                    if let (Some(ms), Some(step)) = (num(1), num(2)) {
                        stopped = Some((ms as f64 / 1000.0, step, evidence()));
                    }
                }
                Field::TrainingComplete => {
                    if let (Ok(secs), Some(step)) = (c[1].parse::<f64>(), num(2)) {
                        stopped = Some((secs, step, evidence()));
                    }
                }
                Field::TotalEvalTime => {
                    if let Ok(v) = c[1].parse::<f64>() {
                        total_eval = Some((v, evidence()));
                    }
                }
                Field::HessianTime => {
                    let v = c[2].parse::<f64>().ok();
                    set(
                        &mut s.hessian_seconds,
                        v,
                        "hessian_seconds",
                        &mut s.evidence,
                        evidence(),
                    )
                }
                Field::GptqReserve => {
                    let v = seconds(&c[1], &c[2]);
                    set(
                        &mut s.gptq_reserve_seconds,
                        v,
                        "gptq_reserve_seconds",
                        &mut s.evidence,
                        evidence(),
                    )
                }
                Field::SelfGenerated => {
                    s.calibration_self_generated = true;
                    s.evidence.insert("calibration".into(), evidence());
                }
                Field::Seed => {
                    if s.seed.is_none() {
                        set(&mut s.seed, num(1), "seed", &mut s.evidence, evidence())
                    }
                }
                Field::TttRan => s.ttt_enabled = Some(true),
            }
            break;
        }
    }
    s.embeds_code = code_lines > 0;
    if let Some((pref, b, e)) = code_size {
        s.code_bytes = Some(b);
        s.code_counted_compressed = pref == 2;
        s.evidence.insert("code_bytes".into(), e);
    }
    // Training clock: the wallclock stop line, else the last step line's train_time.
    if let Some((secs, step, e)) = stopped.or(last_step_time) {
        s.train_seconds = Some(secs);
        s.steps = Some(step);
        s.evidence.insert("train_seconds".into(), e);
    }
    apply_hyperparameters(&mut s);
    if let Some(last) = s.evaluations.last() {
        s.val_bpb = Some(last.val_bpb);
        s.val_loss = last.val_loss;
        s.final_label = Some(last.label.clone());
        s.evidence.insert(
            "val_bpb".into(),
            Evidence {
                file: file.to_string(),
                line: last.line,
                text: nth_line(text, last.line),
            },
        );
    }
    // Evaluation clock: the script's own total where it prints one, else the final line's time.
    if let Some((v, e)) = total_eval {
        s.eval_seconds = Some(v);
        s.evidence.insert("eval_seconds".into(), e);
    } else if let Some(last) = s.evaluations.last() {
        // An `_exact` line repeats the one before it at 8 decimals, without the time.
        let base = last.label.strip_suffix("_exact").unwrap_or(&last.label);
        let timed = s
            .evaluations
            .iter()
            .rev()
            .find(|e| e.label == base && e.eval_seconds.is_some());
        if let Some(e) = timed.or(Some(last).filter(|e| e.eval_seconds.is_some())) {
            s.eval_seconds = e.eval_seconds;
            let ev = Evidence {
                file: file.to_string(),
                line: e.line,
                text: nth_line(text, e.line),
            };
            s.evidence.insert("eval_seconds".into(), ev);
        }
    }
    s.seed_in_name = SEED_IN_NAME.captures(file).and_then(|c| c[1].parse().ok());
    if s.seed.is_none() {
        s.seed = s.seed_in_name;
    }
    s
}

impl LogSummary {
    /// Whether this log is of the run a claim names by `seed` (its own seed, or the one its file name states).
    pub fn is_seed(&self, seed: &str) -> bool {
        [self.seed, self.seed_in_name]
            .iter()
            .flatten()
            .any(|s| s.to_string() == seed)
    }

    /// Whether two logs report the same run.
    pub fn same_run(&self, other: &LogSummary) -> bool {
        self.seed == other.seed && !self.evaluations.is_empty() && {
            let key = |l: &LogSummary| {
                l.evaluations
                    .iter()
                    .map(|e| (e.label.clone(), e.val_bpb.to_bits()))
                    .collect::<Vec<_>>()
            };
            key(self) == key(other)
        }
    }
}

/// `sp1024` from `…fineweb10B_sp1024…` or `…fineweb_1024_bpe.model`; `byte260` likewise.
fn variant_in(text: &str) -> Option<String> {
    let c = VARIANT_IN_PATH.captures(text)?;
    match (c.get(1), c.get(2)) {
        (Some(v), _) => Some(v.as_str().to_string()),
        (None, Some(n)) => Some(format!("sp{}", n.as_str())),
        _ => None,
    }
}

fn nth_line(text: &str, n: usize) -> String {
    let line = text.lines().nth(n - 1).unwrap_or("");
    TIMESTAMP
        .replace(line.trim(), "")
        .chars()
        .take(200)
        .collect()
}

fn set<T>(
    slot: &mut Option<T>,
    value: Option<T>,
    name: &str,
    ev: &mut BTreeMap<String, Evidence>,
    e: Evidence,
) {
    if let Some(v) = value {
        *slot = Some(v);
        ev.insert(name.to_string(), e);
    }
}

/// Fields the hyperparameter dump gives when the log lines do not.
fn apply_hyperparameters(s: &mut LogSummary) {
    let h = &s.hyperparameters;
    let get = |k: &str| {
        h.get(k)
            .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
    };
    if s.seed.is_none() {
        s.seed = get("seed").and_then(|v| v.parse().ok());
    }
    if s.variant.is_none() {
        for k in ["datasets_dir", "data_path", "train_files", "tokenizer_path"] {
            if let Some(v) = get(k)
                && let Some(found) = variant_in(&v)
            {
                s.variant = Some(found);
                break;
            }
        }
    }
    if s.variant.is_none()
        && let Some(v) = get("vocab_size")
    {
        s.variant = Some(format!("sp{v}"));
    }
    let truthy = |v: Option<String>| v.map(|v| matches!(v.as_str(), "True" | "true" | "1"));
    if truthy(get("caseops_enabled")) == Some(true)
        || ["datasets_dir", "data_path", "tokenizer_path"]
            .iter()
            .any(|k| get(k).is_some_and(|v| v.to_lowercase().contains("caseops")))
    {
        s.caseops = true;
    }
    s.eval_seq_len = get("eval_seq_len")
        .or_else(|| get("train_seq_len"))
        .and_then(|v| v.parse().ok());
    s.eval_stride = get("eval_stride").and_then(|v| v.parse().ok());
    s.eval_include_tail = truthy(get("eval_include_tail")) == Some(true);
    if s.ttt_enabled.is_none() {
        s.ttt_enabled = truthy(get("ttt_enabled"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_baseline_log_lines() {
        let text = "\
Running PyTorch 2.8.0+cu128
    log0(f\"final_int8_zlib_roundtrip val_loss:{q_val_loss:.4f} val_bpb:{q_val_bpb:.4f}\")
import torch
model_params:17059912
val_loader:shards pattern=./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin tokens:62021632
seed:1337
step:13780/20000 val_loss:2.0606 val_bpb:1.2172 train_time:600038ms step_avg:43.54ms
stopping_early: wallclock_cap train_time:600038ms step:13780/20000
Serialized model: 67224983 bytes
Code size: 47642 bytes
Serialized model int8+zlib: 15815847 bytes (payload:17178912 raw_torch:17224025 payload_ratio:3.91x)
Total submission size int8+zlib: 15863489 bytes
final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:1401ms
final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570
";
        let s = parse_log("train.log", text);
        assert_eq!(s.model_params, Some(17_059_912));
        assert_eq!(s.val_tokens, Some(62_021_632));
        assert_eq!(s.seed, Some(1337));
        assert_eq!(s.artifact_bytes, Some(15_815_847));
        assert_eq!(s.code_bytes, Some(47_642));
        assert_eq!(s.total_bytes, Some(15_863_489));
        assert_eq!(s.train_seconds, Some(600.038));
        assert_eq!(s.steps, Some(13_780));
        assert_eq!(s.val_bpb, Some(1.2243657));
        assert_eq!(s.val_loss, Some(2.07269931));
        assert_eq!(
            s.final_label.as_deref(),
            Some("final_int8_zlib_roundtrip_exact")
        );
        assert_eq!(s.evaluations.len(), 2);
        assert_eq!(s.evaluations[1].bpb_decimals, 8);
        assert_eq!(
            s.eval_seconds,
            Some(1.401),
            "the _exact line's time is its rounded twin's"
        );
        assert_eq!(s.variant.as_deref(), Some("sp1024"));
        assert!(s.embeds_code);
        assert_eq!(s.evidence["val_bpb"].line, 14);
    }

    #[test]
    fn reads_the_phased_ttt_log_lines() {
        let text = "\
Hyperparameters:
  caseops_enabled: True
  seed: 42
  vocab_size: 8192
train_shards: 80
val_tokens: 47851520
model_params:35945671
gptq:reserving 0s, effective=599500ms
4945/20000 val_loss: 2.3539 val_bpb: 1.0756
stopping_early: wallclock_cap train_time: 599592ms step: 4945/20000
Code size (uncompressed): 157868 bytes
Code size (compressed): 31999 bytes
GPTQ:collected 67 Hessians in 4.7s
Serialized model quantized+pergroup: 15865260 bytes
Total submission size quantized+pergroup: 15897259 bytes
1776144165.577 quantized_ttt_phased val_loss:2.31944212 val_bpb:1.05989454 eval_time:508785ms
total_eval_time:508.8s
";
        let s = parse_log("train_seed42.log", text);
        assert_eq!(s.seed, Some(42));
        assert!(s.caseops);
        assert_eq!(s.variant.as_deref(), Some("sp8192"));
        assert_eq!(s.code_bytes, Some(31_999));
        assert_eq!(s.hessian_seconds, Some(4.7));
        assert_eq!(s.gptq_reserve_seconds, Some(0.0));
        assert_eq!(s.train_seconds, Some(599.592));
        assert_eq!(s.eval_seconds, Some(508.8));
        assert_eq!(s.val_bpb, Some(1.05989454));
        assert_eq!(s.train_shards, Some(80));
        assert_eq!(s.curve.len(), 1);
        assert!(!s.embeds_code);
    }
}
