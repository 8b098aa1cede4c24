//! `pgolf verify`: the flags ([`crate::verify_args`]) resolved by the library into the spec of what runs, a
//! progress bar per stage, and the report printed as text or JSON. What a verification means — the spec and its
//! rules, the canonical counterpart, the procedure, findings and compliance — lives in `pgolf::verify`.

use std::process::ExitCode;

use anyhow::Result;
use clap::ArgMatches;
use pgolf::verify::report::VerifyReport;
use pgolf::verify::run;
use pgolf::verify::windows::WindowForm;

use crate::progress;
use crate::verify_args::VerifyArgs;

pub fn run(args: VerifyArgs, matches: &ArgMatches) -> Result<ExitCode> {
    let spec = args.flags(matches).resolve()?;
    if args.dry_run {
        crate::print::json(&spec)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut bar = progress::Stages::new(args.json);
    let report = run::verify(
        &spec,
        &pgolf::limits::current(),
        &mut |stage, done, total| bar.update(stage, done, total),
    )?;
    bar.finish();
    if args.json {
        crate::print::json(&report)?;
    } else {
        print_report(&report)?;
    }
    Ok(if report.failed() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(r: &VerifyReport) -> Result<()> {
    out!("model        {} ({} parameters)", r.model, r.parameters);
    if let Some(how) = &r.mixed_products {
        out!("precision    mixed: {how}");
    }
    if let Some(name) = &r.declared_by {
        out!("declared     the evaluation preset {name}'s record reports its score with");
    }
    let stride = match r.form {
        WindowForm::DocIsolated {
            batch_seqs,
            world_size,
        } => format!(", {batch_seqs} sequences per document-isolated buffer, {world_size} rank(s)"),
        other => other
            .stride()
            .map(|s| format!(", stride {s}"))
            .unwrap_or_default(),
    };
    let over = if r.procedure == r.method {
        String::new()
    } else {
        format!(" over {} windows", r.method)
    };
    if r.procedure.contains("lora") {
        // Per-document chunks and windows of the recipe's own lengths, not the window form's.
        out!(
            "evaluation   {} (documents in batches; each chunk scored in a window ending at it)",
            r.procedure
        );
    } else {
        out!(
            "evaluation   {}{over} (seq_len {}{stride}, {} windows)",
            r.procedure,
            r.seq_len,
            r.windows
        );
    }
    if let Some(t) = &r.ttt {
        out!(
            "ttt          {} receipts, {} steps, {} trainable parameters; recipe {}",
            r.receipts.count,
            t.training.steps,
            t.trainable_parameters,
            serde_json::to_value(&t.recipe)?
        );
    }
    out!("val_loss     {:.8} nats/target", r.val_loss);
    out!("val_bpb      {:.8}", r.val_bpb);
    if let Some(sp) = &r.seed_spread {
        out!(
            "seeds        {} reruns with seeds {}..={}: val_bpb mean {:.8}, std {:.2e}, range {:.8} – {:.8} ({:.2e})",
            sp.seeds.len(),
            sp.seeds.first().copied().unwrap_or(0),
            sp.seeds.last().copied().unwrap_or(0),
            sp.mean,
            sp.std,
            sp.min,
            sp.max,
            sp.max - sp.min
        );
    }
    out!("targets      {} scored, {} bytes", r.targets, r.bytes);
    let c = &r.coverage;
    if c.exactly_once {
        out!(
            "coverage     every target in [0, {}) scored exactly once",
            c.targets
        );
    } else {
        out!(
            "coverage     NOT exactly once: {} unscored, {} scored more than once (up to {} times) of {}",
            c.unscored,
            c.scored_more_than_once,
            c.max_times,
            c.targets
        );
    }
    out!(
        "receipts     {} (chain {})",
        r.receipts.count,
        &r.receipts.chain[..16]
    );
    out!(
        "time         {:.2} s ({:.0} targets/s)",
        r.seconds,
        r.targets_per_second
    );
    print_checks(r);
    Ok(())
}

/// The probes, the size check, compliance and the findings.
fn print_checks(r: &VerifyReport) {
    if let Some(p) = &r.probes {
        out!(
            "probes       {} runs of {} on the first {} targets ({:.1} s)",
            p.runs,
            p.procedure,
            p.prefix_targets,
            p.seconds
        );
        for probe in &p.probes {
            out!(
                "  {}  {}: {}",
                if probe.passed { "PASS" } else { "FAIL" },
                probe.title,
                probe.measured
            );
            if !probe.passed {
                for e in &probe.evidence {
                    out!("          {e}");
                }
            }
        }
    }
    if let Some(s) = &r.size {
        let code = s
            .code_bytes
            .map(|c| format!(" + code {c}"))
            .unwrap_or_else(|| " (code not counted: pass --code)".into());
        out!(
            "size         artifact {}{code} = {} of {} bytes ({})",
            s.artifact_bytes,
            s.total_bytes,
            s.budget_bytes,
            match s.under_budget {
                Some(true) => "under the cap",
                Some(false) => "OVER THE CAP",
                None => "undecided",
            }
        );
    }
    let shown: Vec<String> = r
        .compliance
        .entries()
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::to_value(v).unwrap_or_default()))
        .collect();
    out!("compliance   {}", shown.join(" "));
    for n in &r.findings {
        out!("finding      {}", n.title);
        for e in &n.evidence {
            out!("               {e}");
        }
    }
}
