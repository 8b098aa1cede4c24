//! Self-contained HTML reports (`review --html`, `verify --html`): one file, no script, no network, inline SVG.
//! The page frame, escaping, and a line chart; each report builds its own body.

use std::fmt::Write;

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
.ev{font-family:monospace;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere;min-width:420px;max-width:560px;color:#555}h1{font-size:1.5em}svg{background:#fafafa;border:1px solid #ddd}";

/// The page around a report's body.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head>\
         <body>{body}</body></html>\n",
        escape(title)
    )
}

/// A table cell coloured by a verdict (`pass`, `fail`, `unknown`).
pub fn verdict_cell(verdict: &str) -> String {
    format!("<td class=\"{0}\">{0}</td>", escape(verdict))
}

/// Polylines of (x, y) series on shared axes. The y axis spans the 2nd–98th percentile of the values, so the first
/// steps of a training curve do not flatten the rest; `None` when no series has two points.
pub fn line_chart(
    id: &str,
    series: &[(String, Vec<(f64, f64)>)],
    x_label: &str,
    y_label: &str,
) -> Option<String> {
    let series: Vec<&(String, Vec<(f64, f64)>)> =
        series.iter().filter(|(_, p)| p.len() >= 2).collect();
    if series.is_empty() {
        return None;
    }
    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0));
    let (xmin, xmax) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let xspan = (xmax - xmin).max(1e-12);
    let mut ys: Vec<f64> = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .collect();
    ys.sort_by(f64::total_cmp);
    let ylo = ys[ys.len() / 50];
    let yhi = ys[(ys.len() * 98 / 100).min(ys.len() - 1)].max(ylo + 1e-6);
    let (w, h) = (600.0, 260.0);
    let colors = ["#2a6", "#26a", "#a62", "#a2a", "#2aa", "#aa2"];
    let mut s = format!(
        "<svg id=\"{id}\" width=\"{w}\" height=\"{h}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| {
                let y = y.clamp(ylo, yhi);
                format!(
                    "{:.1},{:.1}",
                    40.0 + (x - xmin) / xspan * (w - 60.0),
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
            w - 220.0,
            14 + 12 * i,
            escape(name)
        );
    }
    let _ = write!(
        s,
        "<text x=\"4\" y=\"24\" font-size=\"11\">{yhi:.4}</text><text x=\"4\" y=\"{:.0}\" font-size=\"11\">{ylo:.4}</text>\
         <text x=\"{:.0}\" y=\"{:.0}\" font-size=\"11\" text-anchor=\"end\">{} {xmin:.0}–{xmax:.0} ({})</text></svg>",
        h - 30.0,
        w - 20.0,
        h - 6.0,
        escape(x_label),
        escape(y_label)
    );
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn chart_needs_two_points() {
        assert!(line_chart("c", &[("a".into(), vec![(0.0, 1.0)])], "x", "y").is_none());
        let svg = line_chart(
            "c",
            &[("a<b".into(), vec![(0.0, 1.0), (1.0, 2.0)])],
            "x",
            "y",
        )
        .unwrap();
        assert!(
            svg.starts_with("<svg id=\"c\"") && svg.contains("a&lt;b") && svg.ends_with("</svg>")
        );
    }
}
