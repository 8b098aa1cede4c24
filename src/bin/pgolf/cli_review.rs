//! `pgolf review`: the flags, run by `pgolf::review::command`, and the review printed as text or JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use pgolf::review::command::{self, ReviewFlags, ReviewOutcome};
use pgolf::review::leaderboard::LeaderboardAudit;
use pgolf::review::{Review, Status, tree};

use crate::print::shown;
use crate::progress;

#[derive(Args)]
pub struct ReviewArgs {
    /// The submission folder (submission.json, README.md, train logs, train_gpt.py, requirements.txt); with
    /// --leaderboard, the folder of record folders the rows are held to.
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
    /// Hold each row of this README's leaderboard table to its folder under DIR: the score against the folder's
    /// runs, the date, and the stated p-value against the row it beats, recomputed (one-sided Welch, val_bpb).
    #[arg(long, value_name = "README.md", conflicts_with_all = ["all", "baseline", "html"])]
    leaderboard: Option<PathBuf>,
}

pub fn run(args: ReviewArgs) -> Result<ExitCode> {
    let spec = ReviewFlags {
        dir: args.dir.clone(),
        all: args.all.clone(),
        baseline: args.baseline.clone(),
        html: args.html.clone(),
        leaderboard: args.leaderboard.clone(),
    }
    .resolve()?;
    let bar = progress::bar(0, "records", args.json);
    let outcome = command::review(&spec, &pgolf::limits::current(), &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    if args.json {
        crate::print::json(&outcome)?;
    } else {
        match &outcome {
            ReviewOutcome::Folder(r) => print_review(r),
            ReviewOutcome::Tree(t) => print_tree(t),
            ReviewOutcome::Leaderboard(l) => print_leaderboard(l),
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
    // Every string below comes from the folder (its names, its submission.json, its logs): printed through
    // `shown`, one line each, whatever control characters it holds.
    out!(
        "{}",
        shown(r.record.name.as_deref().unwrap_or(&r.record.dir))
    );
    out!(
        "  {} · {} · {}",
        shown(&r.record.dir),
        shown(r.record.author.as_deref().unwrap_or("author unknown")),
        shown(r.record.date.as_deref().unwrap_or("date unknown"))
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
        out!("  code: {} {} bytes{wrapper}", shown(&c.file), c.bytes);
    }
    out!("  runs:");
    for l in &r.logs {
        let f =
            |v: Option<f64>, d: usize| v.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "?".into());
        out!(
            "    {:<40} seed {:>6}  val_bpb {:>10}  total {:>9}  train {:>7} s  eval {:>6} s",
            shown(&l.file),
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
        out!("  unreadable: {}", shown(u));
    }
    out!("  checks:");
    for c in &r.checks {
        out!("    {} {:<18} {}", mark(c.status), c.id, shown(&c.measured));
        let listed = if c.status == Status::Pass { 0 } else { 6 };
        for e in c.evidence.iter().take(listed) {
            out!("        {}", shown(e));
        }
        if c.evidence.len() > listed && listed > 0 {
            out!(
                "        … {} more (--json shows all)",
                c.evidence.len() - listed
            );
        }
    }
    let fails = r.checks.iter().filter(|c| c.status == Status::Fail).count();
    out!("  {fails} check(s) failed");
}

fn print_tree(t: &tree::TreeReview) {
    let ids: Vec<&str> = t
        .reviews
        .first()
        .map(|r| r.checks.iter().map(|c| c.id).collect())
        .unwrap_or_default();
    out_part!("| track | record | claimed BPB | runs | baseline |");
    for id in &ids {
        out_part!(" {id} |");
    }
    out!();
    out_part!("|---|---|---|---|---|");
    for _ in &ids {
        out_part!("---|");
    }
    out!();
    for (row, r) in t.rows.iter().zip(&t.reviews) {
        out_part!(
            "| {} | {} | {} | {} | {} |",
            shown(&row.track),
            shown(&row.record),
            row.claimed_val_bpb
                .map(|v| v.to_string())
                .unwrap_or_else(|| "—".into()),
            row.runs,
            shown(row.baseline.as_deref().unwrap_or("—"))
        );
        for c in &r.checks {
            out_part!(
                " {} |",
                match c.status {
                    Status::Pass => "pass",
                    Status::Fail => "**fail**",
                    Status::Unknown => "?",
                }
            );
        }
        out!();
    }
    let failed = t.reviews.iter().filter(|r| r.failed()).count();
    out!("\n{} records, {failed} with a failed check", t.rows.len());
}

fn print_leaderboard(l: &LeaderboardAudit) {
    out!("{} against {}", shown(&l.readme), shown(&l.root));
    for r in &l.rows {
        let pr = r
            .row
            .pr
            .map(|p| format!("#{p}"))
            .unwrap_or_else(|| "—".into());
        out!(
            "  {} {:<6} {:<10} {:<18} {}",
            mark(r.status),
            pr,
            r.row.score,
            shown(&r.row.author),
            shown(r.folder.as_deref().unwrap_or("(no folder)"))
        );
        for n in &r.notes {
            out!("        {}", shown(n));
        }
    }
    let fails = l.rows.iter().filter(|r| r.status == Status::Fail).count();
    out!(
        "  {} rows, {fails} that their folders do not bear out",
        l.rows.len()
    );
}
