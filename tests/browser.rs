//! The HTML reports (`review --html`, `verify --html`) rendered in a real headless browser: Debian's chromium, which
//! `.ci/run` installs and then requires (`PGOLF_BROWSER=required`: without a browser the test fails). Elsewhere,
//! without a browser, the test is listed as ignored, marked `[needs chromium]`, and the reason is printed first — it
//! never reads as a pass.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixture, pgolf};

use libtest_mimic::{Arguments, Failed, Trial};

fn browser() -> Option<PathBuf> {
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        if let Ok(out) = Command::new("which").arg(name).output() {
            let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !p.is_empty() {
                return Some(PathBuf::from(p));
            }
        }
    }
    None
}

fn main() {
    let args = Arguments::from_args();
    let required = std::env::var("PGOLF_BROWSER").as_deref() == Ok("required");
    let trial = match browser() {
        Some(b) => Trial::test("reports_render_in_a_headless_browser", move || {
            std::panic::catch_unwind(|| reports_render_in_a_headless_browser(&b)).map_err(|e| {
                Failed::from(
                    e.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default(),
                )
            })
        }),
        None if required => Trial::test("reports_render_in_a_headless_browser", || {
            Err("PGOLF_BROWSER=required but no chromium on PATH".into())
        }),
        None => {
            println!(
                "browser test not run: no headless chromium on PATH, so the HTML reports were not rendered (CI \
                 installs chromium; `apt-get install chromium` runs it here)"
            );
            Trial::test("reports_render_in_a_headless_browser", || Ok(()))
                .with_kind("needs chromium")
                .with_ignored_flag(true)
        }
    };
    libtest_mimic::run(&args, vec![trial]).exit();
}

fn headless(browser: &Path, args: &[&str], file: &Path) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", file.display()))
        .output()
        .expect("run the browser")
}

/// The page's DOM after the browser parsed it, and its visible text (tags dropped, whitespace collapsed).
fn rendered(browser: &Path, file: &Path) -> (String, String) {
    let out = headless(browser, &["--dump-dom"], file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8(out.stdout).unwrap();
    let mut text = String::new();
    let mut in_tag = false;
    let mut in_style = false;
    for (i, c) in dom.char_indices() {
        match c {
            '<' => {
                in_tag = true;
                in_style = dom[i..].starts_with("<style")
                    || (in_style && !dom[i..].starts_with("</style"));
                text.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag && !in_style => text.push(c),
            _ => {}
        }
    }
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (dom, text)
}

fn cells(html: &str) -> usize {
    html.matches("<td").count()
}

fn reports_render_in_a_headless_browser(browser: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    // The review of Scylla (PR #1184): the byte-accounting failure is on the rendered page.
    let review = tmp.path().join("review.html");
    let scylla =
        fixture("review/records/track_10min_16mb/2026-03-31_Scylla_FullGPTQ_XSA11_FA3_0.9485");
    let out = pgolf(&[
        "review",
        scylla.to_str().unwrap(),
        "--html",
        review.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let source = std::fs::read_to_string(&review).unwrap();
    let (dom, text) = rendered(browser, &review);
    assert_eq!(
        cells(&dom),
        cells(&source),
        "the browser restructured the tables: malformed markup"
    );
    assert!(
        text.contains("byte_accounting fail 3 of 3 runs imply a denominator outside"),
        "{text}"
    );
    assert!(text.contains("1 check(s) failed of 13"), "{text}");
    assert!(
        dom.contains("<svg id=\"seeds\"") && dom.contains("<polyline"),
        "charts rendered"
    );
    // verify's report with TTT receipts and the probes.
    let verify = tmp.path().join("verify.html");
    let glob = fixture("ttt/val_sp1024").join("fineweb_val_*.bin");
    let out = pgolf(&[
        "verify",
        fixture("models/sp1024_tied.safetensors").to_str().unwrap(),
        "--config",
        fixture("models/sp1024_tied.json").to_str().unwrap(),
        "--val",
        glob.to_str().unwrap(),
        "--tokenizer",
        fixture("tokenizers/fineweb_1024_bpe.model")
            .to_str()
            .unwrap(),
        "--stride",
        "64",
        "--ttt",
        "--ttt-chunk-tokens",
        "4096",
        "--probes",
        "--probe-targets",
        "8192",
        "--html",
        verify.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let source = std::fs::read_to_string(&verify).unwrap();
    let (dom, text) = rendered(browser, &verify);
    assert_eq!(cells(&dom), cells(&source));
    assert!(text.contains("procedure score_first_ttt"), "{text}");
    assert!(
        text.contains("coverage every target of 16384 scored exactly once"),
        "{text}"
    );
    for probe in [
        "c1_causal",
        "c2_normalized",
        "c3_score_before_update",
        "c4_single_pass",
        "ttt_ordering",
    ] {
        assert!(
            text.contains(&format!("{probe} —")),
            "{probe} missing: {text}"
        );
    }
    assert!(!text.contains(" fail "), "{text}");
    // The receipts table has one row per chunk (4 of 4,096 targets), the probes table one per probe.
    assert!(dom.matches("<tr><td>").count() >= 4 + 6, "{dom}");
    // A screenshot renders (what docs/review-report.png was made with).
    let png = tmp.path().join("shot.png");
    let out = headless(
        browser,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,1600",
        ],
        &review,
    );
    assert!(out.status.success());
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.len() > 10_000 && bytes.starts_with(b"\x89PNG"),
        "{} bytes",
        bytes.len()
    );
}
