//! `pgolf data stats`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use pgolf::data::audit::{self, Audit, Severity};
use pgolf::data::bytes::{ByteSource, ByteTable};
use pgolf::data::sentencepiece::PieceType;
use pgolf::data::shard;
use pgolf::data::tokenizer::Tokenizer;
use serde_json::json;

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

fn stats(args: StatsArgs) -> Result<ExitCode> {
    let tokenizer = Tokenizer::load(&args.tokenizer)?;
    let files = shard::validation_files(&args.val)?;
    let model_vocab = args.vocab_size.unwrap_or(tokenizer.vocab_size());
    // Each shard is checked on its own, so a bad id is reported against the file that holds it.
    let mut tokens = Vec::new();
    for f in &files {
        let shard_tokens = shard::read_shard(f, &pgolf::limits::current())?;
        Tokenizer::check_ids(&shard_tokens, model_vocab.max(tokenizer.vocab_size()), f)
            .with_context(|| format!("validation stream {}", args.val))?;
        tokens.extend(shard_tokens);
    }
    let all_tokens = tokens.len();
    let documents = shard::count_documents(&tokens);
    // The canonical table is built once: bytes per target and the audit read it.
    let canonical = tokenizer.byte_table(model_vocab);
    let table = match &args.byte_table {
        Some(p) => ByteTable::load_json(p)?,
        None => canonical.clone(),
    };
    // The audit sees every document whole, before truncation.
    let audit = if table.len() == canonical.len() {
        audit::audit_against(&tokenizer, &canonical, &table, &tokens)
    } else {
        audit::audit(&tokenizer, &table, &tokens)
    };
    if let Some(l) = args.seq_len {
        tokens = shard::truncate_to_usable(tokens, l, &args.val)?;
    }
    let targets = tokens.len().saturating_sub(1);
    let canonical_table_size = canonical.len();
    let canonical_bytes = ByteSource::Table(canonical).bytes_of_targets(&tokens, 0..targets);
    let table_bytes = ByteSource::Table(table).bytes_of_targets(&tokens, 0..targets);
    let sidecar_bytes = match &args.byte_sidecar {
        Some(glob) => Some(
            ByteSource::load_sidecar(glob, tokens.len(), &pgolf::limits::current())?
                .bytes_of_targets(&tokens, 0..targets),
        ),
        None => None,
    };
    let bytes_per_token = canonical_bytes as f64 / targets.max(1) as f64;

    if args.json {
        let mut obj = json!({
            "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "tokenizer": tokenizer.name(),
            "tokenizer_vocab": tokenizer.vocab_size(),
            "table_size": canonical_table_size,
            "tokens": all_tokens,
            "documents": documents,
            "seq_len": args.seq_len,
            "targets": targets,
            "unscored_tail_targets": all_tokens.saturating_sub(1) - targets,
            "target_bytes": canonical_bytes,
            "bytes_per_token": bytes_per_token,
            "audit": audit,
        });
        if args.byte_table.is_some() {
            obj["audited_table_target_bytes"] = json!(table_bytes);
        }
        if let Some(s) = sidecar_bytes {
            obj["sidecar_target_bytes"] = json!(s);
        }
        println!("{}", serde_json::to_string_pretty(&obj)?);
    } else {
        println!("validation   {} file(s) from {}", files.len(), args.val);
        println!("tokenizer    {}", describe_tokenizer(&tokenizer));
        println!("tokens       {all_tokens}");
        println!("documents    {documents} (BOS count)");
        match args.seq_len {
            Some(l) => println!(
                "targets      {targets} (seq_len {l}: the last {} targets are never scored)",
                all_tokens.saturating_sub(1) - targets
            ),
            None => println!(
                "targets      {targets} (all N - 1; pass --seq-len for the challenge's truncation)"
            ),
        }
        println!("target bytes {canonical_bytes} (canonical table)");
        if args.byte_table.is_some() {
            println!("             {table_bytes} (audited table)");
        }
        if let Some(s) = sidecar_bytes {
            println!("             {s} (byte sidecar)");
        }
        println!("bytes/token  {bytes_per_token:.4}");
        print_audit(&audit);
    }
    Ok(if audit.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn describe_tokenizer(t: &Tokenizer) -> String {
    match t {
        Tokenizer::SentencePiece(m) => format!(
            "{} ({} pieces: {} normal, {} control, {} unknown, {} byte, {} user-defined; normalizer {})",
            m.path.display(),
            m.vocab_size(),
            m.count_of(PieceType::Normal),
            m.count_of(PieceType::Control),
            m.count_of(PieceType::Unknown),
            m.count_of(PieceType::Byte),
            m.count_of(PieceType::UserDefined),
            m.normalizer_name
        ),
        Tokenizer::Byte260 => "byte260 (pad 0, BOS 1, EOS 2, UNK 3, byte b -> b+4)".into(),
        Tokenizer::Bese(m) => format!(
            "{} (BESE: {} base ids + {} merges, PR #1666)",
            m.path.display(),
            pgolf::data::bese::BESE_BASE_VOCAB,
            m.merges.len()
        ),
    }
}

fn print_audit(audit: &Audit) {
    println!(
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
        println!("  {tag} [{}] {}", f.code, f.message);
    }
}
