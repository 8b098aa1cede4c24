//! `pgolf data stats`: the flags, run by `pgolf::data::command`, and the report printed as text or JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use pgolf::data::audit::{Audit, Severity};
use pgolf::data::command::{self, StatsFlags, StatsReport};

#[derive(Subcommand)]
pub enum DataCommand {
    /// Tokens, documents, scored targets and their bytes, and the byte-table audit. Exits 2 when the audit finds
    /// an error that makes the BPB wrong.
    Stats(StatsArgs),
}

#[derive(Args)]
pub struct StatsArgs {
    /// Validation shards (glob; sorted; CaseOps `*_bytes_*` sidecars are skipped).
    #[arg(long)]
    val: String,
    /// SentencePiece `.model` file, or `byte260`.
    #[arg(long)]
    tokenizer: String,
    /// Sequence length of the challenge's truncation rule; without it every target (N − 1) counts.
    #[arg(long)]
    seq_len: Option<usize>,
    /// Rows of the model's embedding (the table covers max(tokenizer vocab, this)).
    #[arg(long)]
    vocab_size: Option<usize>,
    /// A submission's own byte table (JSON: base_bytes, has_leading_space, is_boundary) to audit instead of the
    /// canonical one.
    #[arg(long)]
    byte_table: Option<PathBuf>,
    /// CaseOps per-token byte sidecar shards (glob): also report the target bytes they give.
    #[arg(long)]
    byte_sidecar: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: DataCommand) -> Result<ExitCode> {
    match cmd {
        DataCommand::Stats(args) => stats(args),
    }
}

impl StatsArgs {
    fn flags(&self) -> StatsFlags {
        StatsFlags {
            val: self.val.clone(),
            tokenizer: self.tokenizer.clone(),
            seq_len: self.seq_len,
            vocab_size: self.vocab_size,
            byte_table: self.byte_table.clone(),
            byte_sidecar: self.byte_sidecar.clone(),
        }
    }
}

fn stats(args: StatsArgs) -> Result<ExitCode> {
    let spec = args.flags().resolve()?;
    let r = command::stats(&spec, &pgolf::limits::current())?;
    if args.json {
        crate::print::json_value(&r)?;
    } else {
        print_report(&r);
    }
    Ok(if r.audit.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn print_report(r: &StatsReport) {
    out!("validation   {} file(s) from {}", r.files.len(), r.val);
    out!("tokenizer    {}", r.tokenizer_description);
    out!("tokens       {}", r.tokens);
    out!("documents    {} (BOS count)", r.documents);
    match r.seq_len {
        Some(l) => out!(
            "targets      {} (seq_len {l}: the last {} targets are never scored)",
            r.targets,
            r.unscored_tail_targets
        ),
        None => out!(
            "targets      {} (all N - 1; pass --seq-len for the challenge's truncation)",
            r.targets
        ),
    }
    out!("target bytes {} (canonical table)", r.target_bytes);
    if let Some(b) = r.audited_table_target_bytes {
        out!("             {b} (audited table)");
    }
    if let Some(s) = r.sidecar_target_bytes {
        out!("             {s} (byte sidecar)");
    }
    out!("bytes/token  {:.4}", r.bytes_per_token);
    print_audit(&r.audit);
}

fn print_audit(audit: &Audit) {
    out!(
        "audit        {} ({} documents checked, {} with table bytes != decoded bytes; {} <unk> targets)",
        if audit.passed() { "PASS" } else { "FAIL" },
        audit.documents_checked,
        audit.documents_mismatched,
        audit.unknown_targets
    );
    for f in &audit.findings {
        let tag = match f.severity {
            Severity::Error => "ERROR",
            Severity::Warning => "warning",
        };
        out!("  {tag} [{}] {}", f.code, f.message);
    }
}
