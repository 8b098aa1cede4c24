//! `pgolf review`: real records' files (fixtures/review, see its ORIGIN.md) and folders written here to break each
//! check. Significance figures are held to SciPy's (computed once, values below).

mod common;

use std::path::{Path, PathBuf};

use common::{check, copy_record, fixture, pgolf, pgolf_err, status};
use serde_json::Value;

const TRACK: &str = "review/records/track_10min_16mb";

fn record(name: &str) -> PathBuf {
    fixture(&format!("{TRACK}/{name}"))
}

/// Runs `pgolf review … --json`, expecting exit `code`.
fn review_json(args: &[&str], code: i32) -> Value {
    let mut a = vec!["review"];
    a.extend_from_slice(args);
    a.push("--json");
    let out = pgolf(&a);
    assert_eq!(
        out.status.code(),
        Some(code),
        "pgolf {a:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// A stand-in `train_gpt.py` of exactly `bytes` bytes (the records' own code is not copied into fixtures).
fn write_code(dir: &Path, bytes: usize) {
    let mut s = String::from("# stand-in for the record's train_gpt.py\n");
    while s.len() < bytes {
        s.push('#');
    }
    s.truncate(bytes - 1);
    s.push('\n');
    std::fs::write(dir.join("train_gpt.py"), s).unwrap();
}

#[test]
fn naive_baseline_reads_every_field_and_flags_the_old_export() {
    let r = review_json(&[record("2026-03-17_NaiveBaseline").to_str().unwrap()], 2);
    let log = &r["logs"][0];
    assert_eq!(log["file"], "train.log");
    assert_eq!(log["seed"], 1337);
    assert_eq!(log["val_bpb"], 1.2243657);
    assert_eq!(log["val_loss"], 2.07269931);
    assert_eq!(log["artifact_bytes"], 15_815_847);
    assert_eq!(log["code_bytes"], 47_642);
    assert_eq!(log["total_bytes"], 15_863_489);
    assert_eq!(log["train_seconds"], 600.038);
    assert_eq!(log["eval_seconds"], 1.401);
    assert_eq!(log["val_tokens"], 63_779_840);
    assert_eq!(log["model_params"], 17_059_912);
    assert_eq!(r["claims"]["val_bpb"], 1.2243657);
    assert_eq!(r["claims"]["bytes_total"], 15_863_489);
    assert_eq!(status(&r, "size_cap"), "pass");
    assert_eq!(status(&r, "claims_match_logs"), "pass");
    assert_eq!(
        status(&r, "train_time"),
        "pass",
        "600.038 s is within the last step's grace"
    );
    // The older export (issue #837): 63,779,840 tokens and 155,769,746 bytes implied.
    assert_eq!(status(&r, "val_tokens"), "fail");
    assert_eq!(status(&r, "byte_accounting"), "fail");
    let ev = check(&r, "byte_accounting")["evidence"][0]
        .as_str()
        .unwrap();
    assert!(ev.contains("155769746 bytes implied"), "{ev}");
    assert_eq!(status(&r, "seed_count"), "fail");
    assert_eq!(
        status(&r, "code_bytes_match"),
        "unknown",
        "no train_gpt.py in the fixture"
    );
    assert_eq!(status(&r, "reproduce"), "pass");
    assert!(
        check(&r, "reproduce")["measured"]
            .as_str()
            .unwrap()
            .contains("--preset baseline")
    );
}

#[test]
fn scylla_byte_accounting_is_caught() {
    let r = review_json(
        &[record("2026-03-31_Scylla_FullGPTQ_XSA11_FA3_0.9485")
            .to_str()
            .unwrap()],
        2,
    );
    assert_eq!(status(&r, "byte_accounting"), "fail");
    let ev = check(&r, "byte_accounting")["evidence"].as_array().unwrap();
    assert_eq!(ev.len(), 3);
    for e in ev {
        let e = e.as_str().unwrap();
        assert!(
            e.contains("+21.00%") && e.contains("62363648 targets"),
            "{e}"
        );
    }
    assert_eq!(status(&r, "seed_count"), "pass");
    assert_eq!(status(&r, "size_cap"), "pass");
    // 0.9485 is the mean 0.94855139 truncated: it agrees within one unit of its last place.
    assert_eq!(status(&r, "claims_match_logs"), "pass");
}

#[test]
fn record_04_27_against_04_23_matches_scipy_and_flags_the_hessian_time() {
    let (_tmp, dir) = copy_record("2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611");
    // The logs count the script's own compressed wrapper (31,999 B) of a 157,868-byte source.
    write_code(&dir, 157_868);
    let base = tempfile::tempdir().unwrap();
    let base_file = base.path().join("submission.json");
    std::fs::write(
        &base_file,
        r#"{"val_bpb": 1.06335, "seed_results": {"0": {"val_bpb": 1.06308, "val_loss": 2.32641},
            "1234": {"val_bpb": 1.06297, "val_loss": 2.32616}, "42": {"val_bpb": 1.064, "val_loss": 2.32843}}}"#,
    )
    .unwrap();
    let r = review_json(
        &[
            dir.to_str().unwrap(),
            "--baseline",
            base_file.to_str().unwrap(),
        ],
        2,
    );
    let sig = check(&r, "significance");
    assert_eq!(sig["status"], "fail");
    // scipy.stats.ttest_ind(baseline − 0.005, candidate, equal_var=False, alternative="greater") on val_loss, and
    // ttest_ind(baseline, candidate, …) on val_bpb (SciPy 1.17.1).
    let v = &sig["values"];
    let near = |k: &str, want: f64| {
        let got = v[k].as_f64().unwrap();
        assert!((got - want).abs() < 1e-9, "{k}: {got} vs {want}");
    };
    near("rule_t", -0.01738755047838321);
    near("rule_df", 2.9886137632624745);
    near("rule_p", 0.5063884760699819);
    near("practice_t", 3.1706570504276708);
    near("practice_df", 2.9789952472112544);
    near("practice_p", 0.025472420095825066);
    // 599.5 s of training plus 4.6–4.9 s of Hessians from training data: past 600 s on every seed.
    assert_eq!(status(&r, "train_time"), "fail");
    assert_eq!(
        check(&r, "train_time")["evidence"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(status(&r, "eval_time"), "pass");
    assert_eq!(status(&r, "code_bytes_match"), "pass");
    assert_eq!(status(&r, "claims_match_logs"), "pass");
    assert_eq!(status(&r, "val_tokens"), "pass");
    assert_eq!(status(&r, "byte_accounting"), "pass");
    assert_eq!(status(&r, "size_cap"), "pass");
    assert!(
        check(&r, "reproduce")["measured"]
            .as_str()
            .unwrap()
            .contains("--preset rec-2026-04-27")
    );
    assert_eq!(r["code"]["bytes"], 157_868);
    assert_eq!(r["logs"].as_array().unwrap().len(), 3);
}

/// A minimal record folder: one log per seed with the lines the checks read.
struct Synth {
    seeds: Vec<(u64, f64)>,
    total: u64,
    code_logged: u64,
    train_ms: u64,
    eval_ms: u64,
}

impl Synth {
    fn good() -> Self {
        Synth {
            seeds: vec![(1, 1.20001234), (2, 1.20101234), (3, 1.20201234)],
            total: 15_900_000,
            code_logged: 1000,
            train_ms: 599_000,
            eval_ms: 200_000,
        }
    }

    fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for (seed, bpb) in &self.seeds {
            // val_loss chosen so the implied denominator is the canonical 151,080,169 bytes for sp1024.
            let loss = bpb * std::f64::consts::LN_2 * 151_080_169.0 / 62_021_632.0;
            let log = format!(
                "seed:{seed}\nmodel_params:17059912\n\
                 val_loader:shards pattern=./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin tokens:62021632\n\
                 step:100/200 train_loss:2.5000 train_time:300000ms step_avg:1.00ms\n\
                 stopping_early: wallclock_cap train_time:{}ms step:200/200\n\
                 Code size: {} bytes\nSerialized model int8+zlib: {} bytes\nTotal submission size int8+zlib: {} bytes\n\
                 final_int8_zlib_roundtrip val_loss:{loss:.4} val_bpb:{bpb:.4} eval_time:{}ms\n\
                 final_int8_zlib_roundtrip_exact val_loss:{loss:.8} val_bpb:{bpb:.8}\n",
                self.train_ms,
                self.code_logged,
                self.total - self.code_logged,
                self.total,
                self.eval_ms
            );
            std::fs::write(dir.join(format!("train_seed{seed}.log")), log).unwrap();
        }
        let mean = self.seeds.iter().map(|s| s.1).sum::<f64>() / self.seeds.len() as f64;
        let per_seed: Vec<String> = self
            .seeds
            .iter()
            .map(|(s, b)| format!("\"{s}\": {{\"val_bpb\": {b}}}"))
            .collect();
        std::fs::write(
            dir.join("submission.json"),
            format!(
                "{{\"name\": \"synthetic\", \"val_bpb\": {mean:.8}, \"seed_results\": {{{}}}, \"bytes_total\": {}}}",
                per_seed.join(", "),
                self.total
            ),
        )
        .unwrap();
        write_code(dir, self.code_logged as usize);
    }
}

fn synth_review(s: Synth, tweak: impl FnOnce(&Path)) -> Value {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp
        .path()
        .join("track_10min_16mb")
        .join("2026-05-01_synthetic");
    s.write(&dir);
    tweak(&dir);
    let out = pgolf(&["review", dir.to_str().unwrap(), "--json"]);
    assert!(
        matches!(out.status.code(), Some(0) | Some(2)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_clean_synthetic_record_passes_every_check_it_can_decide() {
    let r = synth_review(Synth::good(), |_| {});
    for id in [
        "size_cap",
        "code_bytes_match",
        "claims_match_logs",
        "seed_count",
        "byte_accounting",
        "val_tokens",
        "train_time",
        "eval_time",
        "static_legality",
        "reproduce",
    ] {
        assert_eq!(status(&r, id), "pass", "{id}: {}", check(&r, id));
    }
    assert_eq!(status(&r, "significance"), "unknown", "no baseline");
}

#[test]
fn each_check_fails_on_the_folder_that_breaks_it() {
    let over = synth_review(
        Synth {
            total: 16_000_001,
            ..Synth::good()
        },
        |_| {},
    );
    assert_eq!(status(&over, "size_cap"), "fail");
    assert!(
        check(&over, "size_cap")["measured"]
            .as_str()
            .unwrap()
            .contains("+1")
    );

    let code = synth_review(Synth::good(), |d| write_code(d, 1234));
    assert_eq!(status(&code, "code_bytes_match"), "fail");

    let claims = synth_review(Synth::good(), |d| {
        let p = d.join("submission.json");
        let t = std::fs::read_to_string(&p)
            .unwrap()
            .replace("1.20101234", "1.19101234");
        std::fs::write(p, t).unwrap();
    });
    assert_eq!(status(&claims, "claims_match_logs"), "fail");
    let ev = check(&claims, "claims_match_logs")["evidence"].to_string();
    assert!(ev.contains("seed 2: claimed val_bpb 1.19101234"), "{ev}");

    let two = synth_review(
        Synth {
            seeds: vec![(1, 1.2), (2, 1.201)],
            ..Synth::good()
        },
        |_| {},
    );
    assert_eq!(status(&two, "seed_count"), "fail");

    let slow = synth_review(
        Synth {
            train_ms: 650_000,
            eval_ms: 700_000,
            ..Synth::good()
        },
        |_| {},
    );
    assert_eq!(status(&slow, "train_time"), "fail");
    assert_eq!(status(&slow, "eval_time"), "fail");

    // A denominator 10% off (the byte-table class of bug): val_loss left as is, val_bpb 10% lower.
    let bytes = synth_review(Synth::good(), |d| {
        for s in 1..=3 {
            let p = d.join(format!("train_seed{s}.log"));
            let t = std::fs::read_to_string(&p).unwrap();
            let bpb = format!("1.20{}01234", s - 1);
            let low = format!("{:.8}", bpb.parse::<f64>().unwrap() / 1.1);
            std::fs::write(&p, t.replace(&bpb, &low)).unwrap();
        }
    });
    assert_eq!(status(&bytes, "byte_accounting"), "fail");

    let tokens = synth_review(Synth::good(), |d| {
        for s in 1..=3 {
            let p = d.join(format!("train_seed{s}.log"));
            let t = std::fs::read_to_string(&p)
                .unwrap()
                .replace("tokens:62021632", "tokens:9662464");
            std::fs::write(&p, t).unwrap();
        }
    });
    assert_eq!(status(&tokens, "val_tokens"), "fail");

    let hints = synth_review(Synth::good(), |d| {
        std::fs::write(
            d.join("train_gpt.py"),
            "import torch\n# SLOT_ENABLED in a comment is not a hint\nSLOT_STEPS = 8\nexec(open('other.py').read())\n",
        )
        .unwrap();
    });
    let s = check(&hints, "static_legality");
    assert_eq!(s["status"], "unknown", "hints are never verdicts");
    let ev = s["evidence"].to_string();
    assert!(
        ev.contains("train_gpt.py:3") && ev.contains("train_gpt.py:4"),
        "{ev}"
    );
    assert!(!ev.contains("train_gpt.py:2"), "{ev}");
}

#[test]
fn significance_against_a_worse_baseline_passes_the_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base.json");
    std::fs::write(
        &base,
        r#"{"seed_results": {"a": {"val_bpb": 1.25, "val_loss": 2.14}, "b": {"val_bpb": 1.251, "val_loss": 2.142},
            "c": {"val_bpb": 1.2505, "val_loss": 2.141}}}"#,
    )
    .unwrap();
    let dir = tmp
        .path()
        .join("track_10min_16mb")
        .join("2026-05-01_synthetic");
    Synth::good().write(&dir);
    let r = review_json(
        &[dir.to_str().unwrap(), "--baseline", base.to_str().unwrap()],
        0,
    );
    assert_eq!(
        status(&r, "significance"),
        "pass",
        "{}",
        check(&r, "significance")
    );
}

#[test]
fn all_reviews_the_tree_in_date_order_against_the_best_earlier_record() {
    let out = pgolf(&[
        "review",
        "--all",
        fixture("review/records").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = t["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["record"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "2026-03-17_NaiveBaseline",
            "2026-03-31_Scylla_FullGPTQ_XSA11_FA3_0.9485",
            "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611",
            "2026-04-30_LongCtx_NoQV_QK525_on_1945_1.0586",
            "2026-04-30_SP8192_CaseOps_Progressive3k_ShortDocTTT",
            "2026-04-30_V19_PR1908_AsymLogit_WD2",
            "2026-05-01_SP8192_PR2130Base_Calib32"
        ]
    );
    assert_eq!(rows[0]["baseline"], Value::Null);
    assert_eq!(rows[1]["baseline"], "2026-03-17_NaiveBaseline");
    // The best earlier claim is Scylla's 0.9485, however it was reached.
    assert_eq!(
        rows[2]["baseline"],
        "2026-03-31_Scylla_FullGPTQ_XSA11_FA3_0.9485"
    );
    assert!(
        rows[1]["fails"]
            .as_array()
            .unwrap()
            .contains(&Value::from("byte_accounting"))
    );
    // The Markdown table on the terminal.
    let md = pgolf(&[
        "review",
        "--all",
        fixture("review/records").to_str().unwrap(),
    ]);
    let text = String::from_utf8(md.stdout).unwrap();
    assert!(text.starts_with("| track | record |"), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("| track_10min_16mb |"))
            .count(),
        7
    );
}

#[test]
fn html_report_is_one_self_contained_file() {
    let tmp = tempfile::tempdir().unwrap();
    let html = tmp.path().join("report.html");
    let out = pgolf(&[
        "review",
        record("2026-03-31_Scylla_FullGPTQ_XSA11_FA3_0.9485")
            .to_str()
            .unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(text.starts_with("<!DOCTYPE html>"));
    for needle in [
        "<table id=\"checks\">",
        "<svg id=\"seeds\"",
        "<svg id=\"budget\"",
        "<svg id=\"curves\"",
        "byte_accounting",
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }
    for banned in ["<script", "http://", "https://", "src="] {
        let ok = banned == "http://"
            && text
                .matches("http://")
                .all(|_| text.contains("xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(
            !text.contains(banned) || ok,
            "the report reaches out: {banned}"
        );
    }
    assert_eq!(text.matches("<td class=\"fail\">").count(), 1);
    let all = tmp.path().join("all.html");
    pgolf(&[
        "review",
        "--all",
        fixture("review/records").to_str().unwrap(),
        "--html",
        all.to_str().unwrap(),
    ]);
    let t = std::fs::read_to_string(&all).unwrap();
    assert!(t.contains("<table id=\"records\">") && t.contains("2026-03-17_NaiveBaseline"));
}

#[test]
fn bad_inputs_give_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let e = pgolf_err(&["review", missing.to_str().unwrap()]);
    assert!(e.contains("nope") && e.contains("not a folder"), "{e}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = pgolf_err(&["review", empty.to_str().unwrap()]);
    assert!(e.contains("not a submission folder"), "{e}");
    let e = pgolf_err(&["review", "--all", empty.to_str().unwrap()]);
    assert!(e.contains("empty"), "{e}");
    let nobase = tmp.path().join("base.json");
    std::fs::write(&nobase, "{\"name\": \"no scores\"}").unwrap();
    let e = pgolf_err(&[
        "review",
        record("2026-03-17_NaiveBaseline").to_str().unwrap(),
        "--baseline",
        nobase.to_str().unwrap(),
    ]);
    assert!(
        e.contains("base.json") && e.contains("no run scores"),
        "{e}"
    );
    // A malformed submission.json is noted, not fatal; the logs are still reviewed.
    let broken = tmp.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("submission.json"), "{\"val_bpb\": 1.2,").unwrap();
    std::fs::copy(
        record("2026-03-17_NaiveBaseline").join("train.log"),
        broken.join("train.log"),
    )
    .unwrap();
    let r = review_json(&[broken.to_str().unwrap()], 2);
    assert!(
        r["unreadable"][0]
            .as_str()
            .unwrap()
            .contains("submission.json: not JSON")
    );
    assert_eq!(r["logs"][0]["val_bpb"], 1.2243657);
    // The HTML report never overwrites an input.
    let log = broken.join("train.log");
    let e = pgolf_err(&[
        "review",
        broken.to_str().unwrap(),
        "--html",
        log.to_str().unwrap(),
    ]);
    assert!(e.contains("train.log"), "{e}");
}

/// Splits a command as a POSIX shell reads `reproduce`'s quoting (single quotes, `'\''` inside them).
fn shell_words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut any) = (false, false);
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if !quoted => {
                word.extend(chars.next());
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

/// The command `reproduce` prints parses with the real `pgolf verify` and resolves to the preset's declared
/// evaluation (`--dry-run`): it is written from verify's own flags, so a renamed flag fails here instead of leaving
/// a stale command in every review.
#[test]
fn the_reproduce_command_is_one_verify_accepts() {
    for (name, preset, procedure, sidecar) in [
        ("2026-03-17_NaiveBaseline", "baseline", "windows", false),
        (
            "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611",
            "rec-2026-04-27",
            "lora_ttt",
            true,
        ),
    ] {
        let dir = record(name);
        let r = review_json(&[dir.to_str().unwrap()], 2);
        let command = check(&r, "reproduce")["measured"]
            .as_str()
            .unwrap()
            .to_string();
        let words = shell_words(&command);
        assert_eq!(&words[..2], ["pgolf", "verify"], "{command}");
        let mut args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
        args.push("--dry-run");
        let spec = common::pgolf_json(&args);
        assert_eq!(spec["arch"]["preset"], preset, "{command}");
        assert_eq!(spec["declared_by"], preset, "{command}");
        assert!(
            spec["procedure"].get(procedure).is_some(),
            "{command}: {}",
            spec["procedure"]
        );
        assert_eq!(spec["byte_sidecar"].is_string(), sidecar, "{command}");
        assert!(
            spec["val"].as_str().unwrap().ends_with("fineweb_val_*.bin"),
            "{command}"
        );
    }
    assert_eq!(
        shell_words("pgolf verify a.ptz --val 'd/x_*.bin' --tokenizer 'it'\\''s'"),
        [
            "pgolf",
            "verify",
            "a.ptz",
            "--val",
            "d/x_*.bin",
            "--tokenizer",
            "it's"
        ]
    );
}
