//! The review as one self-contained HTML file: no script, no network, inline SVG. The checks table, the per-seed BPB
//! beside the baseline's with the t-test, the training curves from the logs, and the size budget bar.

use std::fmt::Write;

use super::Review;
use super::checks::Status;
use super::tree::TreeReview;
use crate::html::{escape, line_chart, page, verdict_cell};
use crate::pack::budget::BUDGET_BYTES;

/// One review's report.
pub fn review_html(r: &Review) -> String {
    let mut b = String::new();
    let title = r
        .record
        .name
        .clone()
        .unwrap_or_else(|| r.record.dir.clone());
    let _ = write!(
        b,
        "<h1>pgolf review: {}</h1><p>{} · {} · {}</p>",
        escape(&title),
        escape(&r.record.dir),
        escape(r.record.author.as_deref().unwrap_or("author unknown")),
        escape(r.record.date.as_deref().unwrap_or("date unknown"))
    );
    let fails = r.checks.iter().filter(|c| c.status == Status::Fail).count();
    let _ = write!(
        b,
        "<p id=\"verdict\">{} check(s) failed of {}.</p><h2>Checks</h2><table id=\"checks\"><tr><th>check</th><th>status</th><th>measured</th><th>evidence</th></tr>",
        fails,
        r.checks.len()
    );
    for c in &r.checks {
        let _ = write!(
            b,
            "<tr><td>{}</td>{}<td>{}</td><td class=\"ev\">{}</td></tr>",
            c.id,
            verdict_cell(c.status.as_str()),
            escape(&c.measured),
            escape(&c.evidence.join("\n"))
        );
    }
    b.push_str("</table>");
    b.push_str("<h2>Per-seed BPB</h2>");
    b.push_str(&seeds_svg(r));
    if let Some(s) = r.check("significance") {
        let _ = write!(b, "<p>{}</p>", escape(&s.measured));
    }
    b.push_str("<h2>Size budget</h2>");
    b.push_str(&budget_svg(r));
    b.push_str("<h2>Training curves</h2>");
    b.push_str(&curves_svg(r));
    b.push_str("<h2>Runs</h2><table id=\"runs\"><tr><th>log</th><th>seed</th><th>val_bpb</th><th>val_loss</th><th>artifact</th><th>code</th><th>total</th><th>train s</th><th>eval s</th><th>val tokens</th></tr>");
    let o = |v: Option<String>| v.unwrap_or_else(|| "—".into());
    for l in &r.logs {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&l.file),
            o(l.seed.map(|s| s.to_string())),
            o(l.val_bpb.map(|v| format!("{v:.8}"))),
            o(l.val_loss.map(|v| format!("{v:.8}"))),
            o(l.artifact_bytes.map(|v| v.to_string())),
            o(l.code_bytes.map(|v| v.to_string())),
            o(l.total_bytes.map(|v| v.to_string())),
            o(l.train_seconds.map(|v| format!("{v:.1}"))),
            o(l.eval_seconds.map(|v| format!("{v:.1}"))),
            o(l.val_tokens.map(|v| v.to_string())),
        );
    }
    b.push_str("</table>");
    page(&format!("pgolf review: {title}"), &b)
}

/// Dots for the candidate's runs and the baseline's, on one BPB axis.
fn seeds_svg(r: &Review) -> String {
    let cand = &r.scores.val_bpb;
    let base = r
        .baseline
        .as_ref()
        .map(|b| b.val_bpb.clone())
        .unwrap_or_default();
    let all: Vec<f64> = cand
        .iter()
        .chain(base.iter())
        .cloned()
        .filter(|v| v.is_finite())
        .collect();
    if all.is_empty() {
        return "<p>No scored runs.</p>".into();
    }
    let (lo, hi) = (
        all.iter().cloned().fold(f64::INFINITY, f64::min),
        all.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
    );
    let span = (hi - lo).max(1e-4);
    let (lo, hi) = (lo - span * 0.1, hi + span * 0.1);
    let (w, h) = (600.0, 120.0);
    let x = |v: f64| 40.0 + (v - lo) / (hi - lo) * (w - 80.0);
    let mut s = format!(
        "<svg id=\"seeds\" width=\"{w}\" height=\"{h}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    let _ = write!(
        s,
        "<text x=\"4\" y=\"40\" font-size=\"12\">this</text><text x=\"4\" y=\"90\" font-size=\"12\">base</text>"
    );
    for v in cand {
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"36\" r=\"5\" fill=\"#2a6\"><title>{v:.8}</title></circle>",
            x(*v)
        );
    }
    for v in &base {
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"86\" r=\"5\" fill=\"#888\"><title>{v:.8}</title></circle>",
            x(*v)
        );
    }
    let _ = write!(
        s,
        "<text x=\"40\" y=\"115\" font-size=\"11\">{lo:.4}</text><text x=\"{:.0}\" y=\"115\" font-size=\"11\" text-anchor=\"end\">{hi:.4} BPB</text></svg>",
        w - 40.0
    );
    s
}

/// The largest total against the cap.
fn budget_svg(r: &Review) -> String {
    let total = r
        .logs
        .iter()
        .filter_map(|l| {
            l.total_bytes
                .or_else(|| Some(l.artifact_bytes? + l.code_bytes?))
        })
        .max();
    let Some(total) = total else {
        return "<p>No size stated.</p>".into();
    };
    let w = 600.0;
    let frac = (total as f64 / BUDGET_BYTES as f64).min(1.25);
    let color = if total > BUDGET_BYTES { "#c33" } else { "#2a6" };
    format!(
        "<svg id=\"budget\" width=\"{w}\" height=\"50\" xmlns=\"http://www.w3.org/2000/svg\"><rect x=\"0\" y=\"10\" width=\"{:.1}\" height=\"20\" fill=\"{color}\"/>\
         <line x1=\"{:.1}\" y1=\"0\" x2=\"{:.1}\" y2=\"40\" stroke=\"#000\"/><text x=\"4\" y=\"46\" font-size=\"11\">{total} of {BUDGET_BYTES} bytes ({:+} headroom)</text></svg>",
        frac / 1.25 * w,
        w / 1.25,
        w / 1.25,
        BUDGET_BYTES as i64 - total as i64
    )
}

/// Train loss against step, one polyline per log.
fn curves_svg(r: &Review) -> String {
    let series: Vec<(String, Vec<(f64, f64)>)> = r
        .logs
        .iter()
        .map(|l| {
            let pts = l
                .curve
                .iter()
                .filter_map(|p| Some((p.step as f64, p.train_loss?)))
                .filter(|(_, y)| y.is_finite())
                .collect();
            (l.file.clone(), pts)
        })
        .collect();
    line_chart("curves", &series, "step", "train loss")
        .unwrap_or_else(|| "<p>No training curve in the logs.</p>".into())
}

/// The records tree's table.
pub fn tree_html(t: &TreeReview) -> String {
    let mut b = format!(
        "<h1>pgolf review --all</h1><p>{} · {} records</p>",
        escape(&t.root),
        t.rows.len()
    );
    let ids: Vec<&str> = t
        .reviews
        .first()
        .map(|r| r.checks.iter().map(|c| c.id).collect())
        .unwrap_or_default();
    b.push_str("<table id=\"records\"><tr><th>track</th><th>record</th><th>claimed BPB</th><th>runs</th><th>baseline</th>");
    for id in &ids {
        let _ = write!(b, "<th>{id}</th>");
    }
    b.push_str("</tr>");
    for (row, r) in t.rows.iter().zip(&t.reviews) {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            escape(&row.track),
            escape(&row.record),
            row.claimed_val_bpb
                .map(|v| format!("{v}"))
                .unwrap_or_else(|| "—".into()),
            row.runs,
            escape(row.baseline.as_deref().unwrap_or("—"))
        );
        for c in &r.checks {
            let _ = write!(
                b,
                "<td class=\"{0}\" title=\"{1}\">{0}</td>",
                c.status.as_str(),
                escape(&c.measured)
            );
        }
        b.push_str("</tr>");
    }
    b.push_str("</table>");
    page("pgolf review --all", &b)
}
