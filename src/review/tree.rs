//! `pgolf review --all`: every record folder of a records tree, in date order, each against the best earlier record
//! of its track (lowest claimed val_bpb among records of strictly earlier dates).

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::checks::folder_scores;
use super::{Folder, Result, Review, ReviewError, read_folder, review_folder};
use crate::limits::Limits;

/// One row of the tree's table.
#[derive(Clone, Debug, Serialize)]
pub struct TreeRow {
    pub track: String,
    pub record: String,
    pub date: Option<String>,
    pub claimed_val_bpb: Option<f64>,
    pub runs: usize,
    /// The record the significance test compared against.
    pub baseline: Option<String>,
    pub fails: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TreeReview {
    pub root: String,
    pub rows: Vec<TreeRow>,
    pub reviews: Vec<Review>,
}

fn is_record(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.filter_map(|e| e.ok()).any(|e| {
        let n = e.file_name().to_string_lossy().to_lowercase();
        (n.starts_with("submission") && n.ends_with(".json"))
            || n.ends_with(".log")
            || (n.starts_with("train_gpt") && n.ends_with(".py"))
    })
}

/// Record folders under `root` (the root itself, a track folder, or a `records/` folder of tracks), at most three
/// levels down, each with its track (the name of the folder holding it).
pub(crate) fn find_records(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    if !root.is_dir() {
        return Err(ReviewError::NotAFolder(root.into()));
    }
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        if depth > 0 && is_record(&dir) {
            let track = dir
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((track, dir));
            continue;
        }
        if depth == 3 {
            continue;
        }
        let rd = std::fs::read_dir(&dir).map_err(|source| ReviewError::Io {
            path: dir.clone(),
            source,
        })?;
        for e in rd.filter_map(|e| e.ok()) {
            if e.path().is_dir() {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    if out.is_empty() && is_record(root) {
        let track = root
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((track, root.to_path_buf()));
    }
    if out.is_empty() {
        return Err(ReviewError::Empty(root.into()));
    }
    Ok(out)
}

/// Reviews every record under `root`. `progress(done, total)` is called as folders are read.
pub fn review_tree(
    root: &Path,
    limits: &Limits,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<TreeReview> {
    let found = find_records(root)?;
    let total = found.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let mut folders: Vec<(String, Folder)> = found
        .into_par_iter()
        .map(|(track, dir)| {
            let f = read_folder(&dir, limits);
            progress(
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
                total,
            );
            f.map(|f| (track, f))
        })
        .collect::<Result<_>>()?;
    folders.sort_by(|(ta, a), (tb, b)| {
        (super::record_date(a), ta, &a.dir).cmp(&(super::record_date(b), tb, &b.dir))
    });
    let mut rows = Vec::new();
    let mut reviews = Vec::new();
    for i in 0..folders.len() {
        let (track, f) = &folders[i];
        let date = super::record_date(f);
        let best_earlier = folders[..i]
            .iter()
            .filter(|(t, g)| t == track && super::record_date(g) < date)
            .filter_map(|(_, g)| Some((g.claims.as_ref()?.val_bpb?, g)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, g)| g);
        let baseline = best_earlier.map(folder_scores);
        let name = |g: &Folder| {
            g.dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let review = review_folder(f.clone(), baseline);
        rows.push(TreeRow {
            track: track.clone(),
            record: name(f),
            date,
            claimed_val_bpb: f.claims.as_ref().and_then(|c| c.val_bpb),
            runs: review.logs.iter().filter(|l| l.val_bpb.is_some()).count(),
            baseline: best_earlier.map(name),
            fails: review
                .checks
                .iter()
                .filter(|c| c.status == super::Status::Fail)
                .map(|c| c.id.to_string())
                .collect(),
        });
        reviews.push(review);
    }
    Ok(TreeReview {
        root: root.display().to_string(),
        rows,
        reviews,
    })
}
