//! The review as one self-contained HTML file: no script, no network, inline SVG. The checks table, the per-seed BPB
//! beside the baseline's with the t-test, the training curves from the logs, and the size budget bar.

use std::fmt::Write;

use super::Review;
use super::checks::Status;
use super::tree::TreeReview;
use crate::pack::budget::BUDGET_BYTES;

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}\
td.pass{background:#e3f6e3}td.fail{background:#fbe0e0}td.unknown{background:#f3f3f3}\
.ev{font-family:monospace;font-size:12px;white-space:pre-wrap;color:#555}h1{font-size:1.5em}svg{background:#fafafa;border:1px solid #ddd}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head>\
         <body>{body}</body></html>\n",
        escape(title)
    )
}

fn status_cell(s: Status) -> String {
    format!("<td class=\"{0}\">{0}</td>", s.as_str())
}

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
            status_cell(c.status),
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
    let series: Vec<(&str, Vec<(f64, f64)>)> = r
        .logs
        .iter()
        .map(|l| {
            (
                l.file.as_str(),
                l.curve
                    .iter()
                    .filter_map(|p| Some((p.step as f64, p.train_loss?)))
                    .filter(|(_, y)| y.is_finite())
                    .collect(),
            )
        })
        .filter(|(_, pts): &(&str, Vec<(f64, f64)>)| pts.len() >= 2)
        .collect();
    if series.is_empty() {
        return "<p>No training curve in the logs.</p>".into();
    }
    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0));
    let xmax = xs.fold(1.0f64, f64::max);
    // Clip the first steps' spikes: the axis spans the 2nd–100th percentile of the losses.
    let mut ys: Vec<f64> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .collect();
    ys.sort_by(f64::total_cmp);
    let ylo = ys[ys.len() / 50];
    let yhi = ys[(ys.len() * 98 / 100).min(ys.len() - 1)].max(ylo + 1e-3);
    let (w, h) = (600.0, 260.0);
    let colors = ["#2a6", "#26a", "#a62", "#a2a", "#2aa", "#aa2"];
    let mut s = format!(
        "<svg id=\"curves\" width=\"{w}\" height=\"{h}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| {
                let y = y.clamp(ylo, yhi);
                format!(
                    "{:.1},{:.1}",
                    40.0 + x / xmax * (w - 60.0),
                    20.0 + (yhi - y) / (yhi - ylo) * (h - 50.0)
                )
            })
            .collect();
        let c = colors[i % colors.len()];
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.2\" points=\"{}\"><title>{}</title></polyline>\
             <text x=\"{:.0}\" y=\"{}\" font-size=\"11\" fill=\"{c}\">{}</text>",
            path.join(" "),
            escape(name),
            w - 200.0,
            14 + 12 * i,
            escape(name)
        );
    }
    let _ = write!(
        s,
        "<text x=\"4\" y=\"24\" font-size=\"11\">{yhi:.2}</text><text x=\"4\" y=\"{:.0}\" font-size=\"11\">{ylo:.2}</text>\
         <text x=\"{:.0}\" y=\"{:.0}\" font-size=\"11\" text-anchor=\"end\">step {xmax:.0} (train loss)</text></svg>",
        h - 30.0,
        w - 20.0,
        h - 6.0
    );
    s
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
