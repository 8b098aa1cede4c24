//! `pgolf review`: the flags, run by `pgolf::review::command`, and the review printed as text or JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use pgolf::review::command::{self, ReviewFlags, ReviewOutcome};
use pgolf::review::{Review, Status, tree};

use crate::progress;

#[derive(Args)]
pub struct ReviewArgs {
    /// The submission folder (submission.json, README.md, train logs, train_gpt.py, requirements.txt).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    dir: Option<PathBuf>,
    /// Review every record folder of a records tree (e.g. the challenge's `records/`), in date order, each against
    /// the best earlier record of its track.
    #[arg(long, value_name = "RECORDS_DIR")]
    all: Option<PathBuf>,
    /// What the significance test compares against: a record folder, a train log, or a submission.json.
    #[arg(long, value_name = "DIR|FILE", conflicts_with = "all")]
    baseline: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Also write the report as one self-contained HTML file.
    #[arg(long, value_name = "OUT.html")]
    html: Option<PathBuf>,
}

pub fn run(args: ReviewArgs) -> Result<ExitCode> {
    let spec = ReviewFlags {
        dir: args.dir.clone(),
        all: args.all.clone(),
        baseline: args.baseline.clone(),
        html: args.html.clone(),
    }
    .resolve()?;
    let bar = progress::bar(0, "records", args.json);
    let outcome = command::review(&spec, &pgolf::limits::current(), &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        match &outcome {
            ReviewOutcome::Folder(r) => print_review(r),
            ReviewOutcome::Tree(t) => print_tree(t),
        }
    }
    Ok(if outcome.failed() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn mark(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass   ",
        Status::Fail => "FAIL   ",
        Status::Unknown => "unknown",
    }
}

fn print_review(r: &Review) {
    println!("{}", r.record.name.as_deref().unwrap_or(&r.record.dir));
    println!(
        "  {} · {} · {}",
        r.record.dir,
        r.record.author.as_deref().unwrap_or("author unknown"),
        r.record.date.as_deref().unwrap_or("date unknown")
    );
    if let Some(c) = &r.code {
        let wrapper = c
            .wrapper
            .as_ref()
            .map(|w| {
                format!(
                    ", {w} wrapper decoding to {} bytes",
                    c.decoded_bytes.unwrap_or(0)
                )
            })
            .unwrap_or_default();
        println!("  code: {} {} bytes{wrapper}", c.file, c.bytes);
    }
    println!("  runs:");
    for l in &r.logs {
        let f =
            |v: Option<f64>, d: usize| v.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "?".into());
        println!(
            "    {:<40} seed {:>6}  val_bpb {:>10}  total {:>9}  train {:>7} s  eval {:>6} s",
            l.file,
            l.seed.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
            f(l.val_bpb, 8),
            l.total_bytes
                .map(|b| b.to_string())
                .unwrap_or_else(|| "?".into()),
            f(l.train_seconds, 1),
            f(l.eval_seconds, 1),
        );
    }
    for u in &r.unreadable {
        println!("  unreadable: {u}");
    }
    println!("  checks:");
    for c in &r.checks {
        println!("    {} {:<18} {}", mark(c.status), c.id, c.measured);
        let shown = if c.status == Status::Pass { 0 } else { 6 };
        for e in c.evidence.iter().take(shown) {
            println!("        {e}");
        }
        if c.evidence.len() > shown && shown > 0 {
            println!(
                "        … {} more (--json shows all)",
                c.evidence.len() - shown
            );
        }
    }
    let fails = r.checks.iter().filter(|c| c.status == Status::Fail).count();
    println!("  {fails} check(s) failed");
}

fn print_tree(t: &tree::TreeReview) {
    let ids: Vec<&str> = t
        .reviews
        .first()
        .map(|r| r.checks.iter().map(|c| c.id).collect())
        .unwrap_or_default();
    print!("| track | record | claimed BPB | runs | baseline |");
    for id in &ids {
        print!(" {id} |");
    }
    println!();
    print!("|---|---|---|---|---|");
    for _ in &ids {
        print!("---|");
    }
    println!();
    for (row, r) in t.rows.iter().zip(&t.reviews) {
        print!(
            "| {} | {} | {} | {} | {} |",
            row.track,
            row.record,
            row.claimed_val_bpb
                .map(|v| v.to_string())
                .unwrap_or_else(|| "—".into()),
            row.runs,
            row.baseline.as_deref().unwrap_or("—")
        );
        for c in &r.checks {
            print!(
                " {} |",
                match c.status {
                    Status::Pass => "pass",
                    Status::Fail => "**fail**",
                    Status::Unknown => "?",
                }
            );
        }
        println!();
    }
    let failed = t.reviews.iter().filter(|r| r.failed()).count();
    println!("\n{} records, {failed} with a failed check", t.rows.len());
}
