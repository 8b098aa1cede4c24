//! The command that re-runs a record's declared evaluation, written from `verify`'s own flags.

use super::{Check, Status, check};
use crate::infer::presets::presets;
use crate::review::folder::Folder;
use crate::review::log::LogSummary;
use crate::verify::flags::VerifyFlags;

/// `reproduce`: the `pgolf verify` command that re-runs the declared evaluation, from the preset whose logged
/// parameter count the log prints, else the hyperparameters a config would need.
pub fn reproduce(f: &Folder) -> Check {
    let l = f
        .logs
        .iter()
        .find(|l| l.model_params.is_some())
        .or(f.logs.first());
    let Some(l) = l else {
        return check(
            "reproduce",
            Status::Unknown,
            "no log to read the model from",
            vec![],
        );
    };
    let artifact = artifact_name(l);
    let variant = l.variant.clone().unwrap_or_else(|| "sp1024".into());
    let tokenizer = match variant.strip_prefix("sp") {
        Some(v) if v.chars().all(|c| c.is_ascii_digit()) => format!("fineweb_{v}_bpe.model"),
        _ if variant == "byte260" => variant.clone(),
        _ => format!("THE_RECORDS_{}_TOKENIZER.model", variant.to_uppercase()),
    };
    let val = format!("data/datasets/fineweb10B_{variant}/fineweb_val_*.bin");
    if let Some(p) = l.model_params.and_then(|n| {
        presets()
            .into_iter()
            .find(|p| p.logged_parameters as u64 == n)
    }) {
        // verify's own flags, written back as its command line: a renamed flag cannot leave a stale command here.
        let flags = VerifyFlags {
            preset: Some(p.name.to_string()),
            byte_sidecar: p.eval.byte_sidecar.then(|| {
                "data/datasets/fineweb10B_sp8192_caseops/fineweb_val_bytes_*.bin".to_string()
            }),
            ..VerifyFlags::new(&artifact, &val, &tokenizer)
        };
        return check(
            "reproduce",
            Status::Pass,
            shell_command("pgolf verify", &flags.command_line()),
            vec![format!(
                "{} (preset {}: {})",
                l.evidence_for("model_params").join(""),
                p.name,
                p.record
            )],
        );
    }
    let keys = [
        "vocab_size",
        "num_layers",
        "model_dim",
        "num_heads",
        "num_kv_heads",
        "mlp_mult",
        "train_seq_len",
        "tie_embeddings",
    ];
    let known: Vec<String> = keys
        .iter()
        .filter_map(|k| l.hyperparameters.get(*k).map(|v| format!("{k}={v}")))
        .collect();
    check(
        "reproduce",
        Status::Unknown,
        format!(
            "no preset has {} parameters: write a config (docs/ARCHITECTURES.md) and run {}{}",
            l.model_params
                .map(|n| n.to_string())
                .unwrap_or_else(|| "an unknown number of".into()),
            shell_command(
                "pgolf verify",
                &VerifyFlags {
                    config: Some("CONFIG.json".into()),
                    ..VerifyFlags::new(&artifact, &val, &tokenizer)
                }
                .command_line()
            ),
            if known.is_empty() {
                String::new()
            } else {
                format!(" (from the log: {})", known.join(", "))
            }
        ),
        l.evidence_for("model_params"),
    )
}

/// A command line as a shell reads it: each argument that holds anything but letters, digits and `_-./:=+,` in single
/// quotes (a glob stays a glob for pgolf, not for the shell).
pub fn shell_command(program: &str, args: &[String]) -> String {
    let quoted = args.iter().map(|a| {
        let plain = !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-./:=+,".contains(c));
        if plain {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        }
    });
    std::iter::once(program.to_string())
        .chain(quoted)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The artifact's file name as the record's script writes it, from the scheme its log names.
fn artifact_name(l: &LogSummary) -> String {
    let scheme = l
        .evidence
        .get("artifact_bytes")
        .map(|e| e.text.to_lowercase())
        .unwrap_or_default();
    for bits in ["int8", "int6", "int5", "int4"] {
        if scheme.contains(bits) {
            return format!("final_model.{bits}.ptz");
        }
    }
    "final_model.ptz".into()
}
