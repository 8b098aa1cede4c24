//! `pgolf verify --html`: the verification as one self-contained HTML file: the score and its coverage, the BPB of
//! every scored chunk (one receipt each) as a curve and a table, the legality probes, the compliance block, the
//! findings and the size check.

use std::fmt::Write;

use super::report::VerifyReport;
use crate::html::{escape, line_chart, page, verdict_cell};

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "pass",
        Some(false) => "fail",
        None => "unknown",
    }
}

pub fn verify_html(r: &VerifyReport) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>pgolf verify: {}</h1><table id=\"summary\">\
         <tr><th>procedure</th><td>{}</td></tr><tr><th>val_bpb</th><td>{:.8}</td></tr>\
         <tr><th>val_loss</th><td>{:.8}</td></tr><tr><th>targets</th><td>{} ({} bytes)</td></tr>\
         <tr><th>coverage</th><td>{}</td></tr><tr><th>device</th><td>{} ({:?})</td></tr>\
         <tr><th>seconds</th><td>{:.1} ({:.0} targets/s)</td></tr></table>",
        escape(&r.model),
        escape(&r.procedure),
        r.val_bpb,
        r.val_loss,
        r.targets,
        r.bytes,
        if r.coverage.exactly_once {
            format!("every target of {} scored exactly once", r.coverage.targets)
        } else {
            format!(
                "NOT exactly once: {} unscored, {} scored more than once",
                r.coverage.unscored, r.coverage.scored_more_than_once
            )
        },
        escape(&r.device),
        r.precision,
        r.seconds,
        r.targets_per_second
    );
    // Per-chunk BPB: each receipt's NLL over its own bytes, and the running score.
    let mut per_chunk = Vec::new();
    let mut running = Vec::new();
    let (mut nll, mut bytes) = (0.0f64, 0u64);
    for rc in &r.all_receipts {
        if rc.bytes == 0 {
            continue;
        }
        nll += rc.nll_sum;
        bytes += rc.bytes;
        let x = rc.index as f64;
        per_chunk.push((x, rc.nll_sum / (std::f64::consts::LN_2 * rc.bytes as f64)));
        running.push((x, nll / (std::f64::consts::LN_2 * bytes as f64)));
    }
    b.push_str("<h2>BPB per scored chunk</h2>");
    let chart = line_chart(
        "chunks",
        &[
            ("chunk BPB".into(), per_chunk),
            ("running BPB".into(), running),
        ],
        "chunk",
        "BPB",
    );
    b.push_str(
        &chart.unwrap_or_else(|| format!("<p>{} receipt(s): no curve.</p>", r.all_receipts.len())),
    );
    b.push_str(
        "<table id=\"receipts\"><tr><th>chunk</th><th>label</th><th>targets</th><th>bytes</th><th>BPB</th>\
         <th>weights scored with</th></tr>",
    );
    for rc in r.all_receipts.iter().take(2000) {
        let bpb = if rc.bytes > 0 {
            format!(
                "{:.6}",
                rc.nll_sum / (std::f64::consts::LN_2 * rc.bytes as f64)
            )
        } else {
            "—".into()
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{bpb}</td><td class=\"ev\">{}</td></tr>",
            rc.index,
            escape(&rc.label),
            rc.targets,
            rc.bytes,
            escape(&rc.weights_scored_with.chars().take(16).collect::<String>())
        );
    }
    b.push_str("</table>");
    b.push_str("<h2>Probes</h2>");
    match &r.probes {
        Some(p) => {
            let _ = write!(
                b,
                "<p>{} runs on a prefix of {} targets, {:.1} s.</p><table id=\"probes\"><tr><th>probe</th><th>verdict</th>\
                 <th>measured</th><th>evidence</th></tr>",
                p.runs, p.prefix_targets, p.seconds
            );
            for pr in &p.probes {
                let _ = write!(
                    b,
                    "<tr><td>{} — {}</td>{}<td>{}</td><td class=\"ev\">{}</td></tr>",
                    pr.id,
                    escape(pr.title),
                    verdict_cell(if pr.passed { "pass" } else { "fail" }),
                    escape(&pr.measured),
                    escape(&pr.evidence.join("\n"))
                );
            }
            b.push_str("</table>");
        }
        None => b.push_str("<p>No probes were run (<code>--probes</code>).</p>"),
    }
    let c = &r.compliance;
    b.push_str("<h2>Compliance</h2><table id=\"compliance\"><tr><th>condition</th><th>verdict</th><th>basis</th></tr>");
    let basis = &r.compliance_basis;
    for (name, v, why) in [
        ("causal", c.causal, basis.causal),
        ("normalized", c.normalized, basis.normalized),
        (
            "score_before_update",
            c.score_before_update,
            basis.score_before_update,
        ),
        ("single_pass", c.single_pass, basis.single_pass),
        ("score_first_ttt", c.score_first_ttt, basis.score_first_ttt),
        ("no_slot", c.no_slot, basis.no_slot),
        ("no_ngram_cache", c.no_ngram_cache, basis.no_ngram_cache),
    ] {
        let _ = write!(
            b,
            "<tr><td>{name}</td>{}<td>{}</td></tr>",
            verdict_cell(yes_no(v)),
            escape(why)
        );
    }
    b.push_str("</table>");
    if !r.findings.is_empty() {
        b.push_str("<h2>Findings</h2><ul id=\"findings\">");
        for f in &r.findings {
            let _ = write!(
                b,
                "<li><b>{}</b>: {}<div class=\"ev\">{}</div></li>",
                f.id,
                escape(&f.title),
                escape(&f.evidence.join("\n"))
            );
        }
        b.push_str("</ul>");
    }
    if let Some(s) = &r.size {
        let _ = write!(
            b,
            "<h2>Size</h2><p id=\"size\">artifact {} + code {} = {} of {} bytes ({:+} headroom)</p>",
            s.artifact_bytes,
            s.code_bytes
                .map(|c| c.to_string())
                .unwrap_or_else(|| "not counted".into()),
            s.total_bytes,
            s.budget_bytes,
            s.headroom_bytes
        );
    }
    page(&format!("pgolf verify: {}", r.model), &b)
}
