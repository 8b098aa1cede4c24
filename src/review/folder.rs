//! A submission folder's files: `submission*.json`, the README, every train log (in the folder or a `logs/`
//! subfolder), the counted `train_gpt.py` (self-extracting wrappers decoded) and `requirements.txt`.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use super::code_deps::{CodeDependency, code_dependencies};
use super::log::{LogSummary, parse_log};
use super::submission::{Claims, parse_claims};
use super::{Result, ReviewError};
use crate::limits::Limits;
use crate::pack::budget::read_code;

/// The counted code file.
#[derive(Clone, Debug, Serialize)]
pub struct CodeFile {
    pub file: String,
    /// The file's size as it sits in the folder (what the challenge counts).
    pub bytes: u64,
    /// `lzma+base85`, `brotli+base85`, `raw-lzma2+base85` for a self-extracting wrapper, else null.
    pub wrapper: Option<String>,
    pub decoded_bytes: Option<u64>,
    /// The source (decoded when wrapped), for the static hints.
    #[serde(skip)]
    pub source: String,
}

/// Score mentions in the README (`1.0611 BPB`, `val_bpb: 1.0611`, …).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Readme {
    pub file: String,
    /// Every BPB-looking number mentioned, in order, as written.
    pub bpb_mentions: Vec<String>,
}

/// Everything read from one folder.
#[derive(Clone, Debug, Serialize)]
pub struct Folder {
    pub dir: PathBuf,
    pub claims: Option<Claims>,
    pub logs: Vec<LogSummary>,
    pub code: Option<CodeFile>,
    pub readme: Option<Readme>,
    pub requirements: Option<Vec<String>>,
    /// The folder's other code that the counted script runs (imports, compiles, loads, executes).
    pub code_dependencies: Vec<CodeDependency>,
    /// The track limits training and evaluation to 600 s each (false on the non-record track, from the claim's
    /// `track` or the folder holding the record).
    pub time_limited: bool,
    /// Files the reader could not use, with why (a submission.json that is not JSON, say).
    pub unreadable: Vec<String>,
}

static README_BPB: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:val_bpb|bpb)\W{0,12}(\d\.\d{3,8})\b|\b(\d\.\d{3,8})\W{0,4}(?:val_)?bpb")
        .expect("readme bpb")
});

/// A text file of at most [`crate::limits::MAX_SMALL_FILE_BYTES`] (the largest record log is 2.7 MB), read lossily:
/// a stray invalid byte in a log must not hide the rest of it.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = crate::limits::read_capped(path, crate::limits::MAX_SMALL_FILE_BYTES, "").map_err(
        |source| ReviewError::Io {
            path: path.into(),
            source,
        },
    )?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn name_of(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// Whether a text file is a train log: it has an evaluation line or training step lines.
fn looks_like_log(text: &str) -> bool {
    ["val_bpb", "train_loss", " BPB", "step:", "step "]
        .iter()
        .any(|k| text.contains(k))
}

/// Reads a submission folder. Errors only when the folder itself cannot be listed; an unreadable or malformed file
/// is noted in `unreadable` and the review goes on.
pub fn read_folder(dir: &Path, limits: &Limits) -> Result<Folder> {
    let list = |d: &Path| -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .map_err(|source| ReviewError::Io {
                path: d.into(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        Ok(v)
    };
    if !dir.is_dir() {
        return Err(ReviewError::NotAFolder(dir.into()));
    }
    let mut files = list(dir)?;
    for sub in ["logs", "log"] {
        let d = dir.join(sub);
        if d.is_dir() {
            files.extend(list(&d)?);
        }
    }
    let mut folder = Folder {
        dir: dir.into(),
        claims: None,
        logs: Vec::new(),
        code: None,
        readme: None,
        requirements: None,
        code_dependencies: Vec::new(),
        time_limited: true,
        unreadable: Vec::new(),
    };
    let file_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    // submission.json first, else the one other `submission*.json`.
    let mut jsons: Vec<&PathBuf> = files
        .iter()
        .filter(|p| {
            let n = file_name(p);
            n.starts_with("submission") && n.ends_with(".json")
        })
        .collect();
    jsons.sort_by_key(|p| file_name(p) != "submission.json");
    if let Some(p) = jsons.first() {
        match read_text(p) {
            Ok(t) => match serde_json::from_str(&t) {
                Ok(v) => folder.claims = Some(parse_claims(&name_of(dir, p), &v)),
                Err(e) => folder
                    .unreadable
                    .push(format!("{}: not JSON: {e}", name_of(dir, p))),
            },
            Err(e) => folder.unreadable.push(e.to_string()),
        }
    }
    for p in &files {
        let n = file_name(p);
        let lower = n.to_lowercase();
        if lower == "readme.md" {
            match read_text(p) {
                Ok(t) => {
                    let bpb_mentions = README_BPB
                        .captures_iter(&t)
                        .filter_map(|c| c.get(1).or(c.get(2)).map(|m| m.as_str().to_string()))
                        .collect();
                    folder.readme = Some(Readme {
                        file: name_of(dir, p),
                        bpb_mentions,
                    });
                }
                Err(e) => folder.unreadable.push(e.to_string()),
            }
        } else if lower == "requirements.txt" {
            if let Ok(t) = read_text(p) {
                folder.requirements = Some(
                    t.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(String::from)
                        .collect(),
                );
            }
        } else if lower.ends_with(".log")
            || (lower.ends_with(".txt") && lower != "requirements.txt")
        {
            match read_text(p) {
                Ok(t) if looks_like_log(&t) => folder.logs.push(parse_log(&name_of(dir, p), &t)),
                Ok(_) => {}
                Err(e) => folder.unreadable.push(e.to_string()),
            }
        }
    }
    // A log that names no tokenizer takes the one the claim states (`"tokenizer": "sp1024"`).
    let claimed_variant = folder
        .claims
        .as_ref()
        .and_then(|c| c.other_keys.get("tokenizer"))
        .and_then(|v| v.as_str())
        .map(|t| t.trim().to_lowercase())
        .filter(|t| t.starts_with("sp") || t.starts_with("byte"));
    for l in &mut folder.logs {
        if l.variant.is_none() {
            l.variant.clone_from(&claimed_variant);
        }
    }
    let non_record = |t: &str| {
        let t = t.to_lowercase();
        t.contains("non_record") || t.contains("non-record") || t.contains("nonrecord")
    };
    let parent = dir
        .canonicalize()
        .ok()
        .and_then(|d| {
            d.parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    folder.time_limited = !(folder
        .claims
        .as_ref()
        .and_then(|c| c.track.as_deref())
        .is_some_and(non_record)
        || non_record(&parent));
    // A log that repeats another's run (train.log beside train_seed1337.log) counts once: the seed-named one.
    let n = folder.logs.len();
    for i in 0..n {
        for j in 0..n {
            let (li, lj) = (&folder.logs[i], &folder.logs[j]);
            if i == j || li.duplicate_of.is_some() || lj.duplicate_of.is_some() || !li.same_run(lj)
            {
                continue;
            }
            let (i_named, j_named) = (li.seed_in_name.is_some(), lj.seed_in_name.is_some());
            if (j_named && !i_named) || (i_named == j_named && j < i) {
                folder.logs[i].duplicate_of = Some(folder.logs[j].file.clone());
            }
        }
    }
    // The counted code: train_gpt.py, else the one train_gpt*.py (a record that named its script otherwise).
    let code_path = files
        .iter()
        .find(|p| file_name(p) == "train_gpt.py" && p.parent() == Some(dir))
        .or_else(|| {
            let mut c = files.iter().filter(|p| {
                let n = file_name(p);
                n.starts_with("train_gpt") && n.ends_with(".py") && p.parent() == Some(dir)
            });
            match (c.next(), c.next()) {
                (Some(one), None) => Some(one),
                _ => None,
            }
        });
    if let Some(p) = code_path {
        match read_code(p, limits) {
            Ok((size, source)) => {
                let file = name_of(dir, p);
                let source = String::from_utf8_lossy(&source).into_owned();
                folder.code_dependencies = code_dependencies(dir, &file, &source);
                folder.code = Some(CodeFile {
                    file,
                    bytes: size.counted_bytes,
                    wrapper: size.wrapper,
                    decoded_bytes: size.decoded_bytes,
                    source,
                })
            }
            Err(e) => folder.unreadable.push(e.to_string()),
        }
    }
    Ok(folder)
}
