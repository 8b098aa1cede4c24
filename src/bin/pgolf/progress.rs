//! Progress bars on a terminal, silence with `--json` or when stderr is not a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(total: u64, label: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(label.to_string());
    pb
}

/// One bar per stage of a run that reports `(stage, done, total)`: a new stage clears the last one's bar.
pub struct Stages {
    quiet: bool,
    bar: Option<(String, ProgressBar)>,
}

impl Stages {
    pub fn new(quiet: bool) -> Self {
        Stages { quiet, bar: None }
    }

    pub fn update(&mut self, stage: &str, done: usize, total: usize) {
        if self.bar.as_ref().is_none_or(|(s, _)| s != stage) {
            self.finish();
            self.bar = Some((stage.to_string(), bar(0, stage, self.quiet)));
        }
        if let Some((_, b)) = &self.bar {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    }

    pub fn finish(&mut self) {
        if let Some((_, b)) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
