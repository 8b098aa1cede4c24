//! The code a submission's script runs from its own folder besides itself: Python modules it imports (and, in
//! turn, what they import), C/C++/CUDA sources it compiles at run time, scripts it executes. #2135's score depends
//! on `online_ngram_tilt.py`, imported at evaluation, which builds `online_ngram_state.c` with gcc; neither is in
//! the counted code bytes. The scan reads the source as text (it never runs it): an `import`/`from … import` of a
//! module the folder holds, or a quoted file name of the folder on a line or in a file that compiles, loads or
//! executes it.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

/// How the script uses a file of its folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Use {
    /// `import m` / `from m import …` of the folder's `m.py`.
    Imported,
    /// A C, C++ or CUDA source named in a file that calls a compiler (gcc, nvcc, torch's `cpp_extension`, …).
    Compiled,
    /// A shared library named in a file that loads one (ctypes, cffi).
    Loaded,
    /// A Python file named on a line that runs it (`runpy`, `exec(open(…))`, `subprocess`, `importlib`).
    Executed,
}

impl Use {
    pub fn as_str(self) -> &'static str {
        match self {
            Use::Imported => "imported",
            Use::Compiled => "compiled",
            Use::Loaded => "loaded",
            Use::Executed => "executed",
        }
    }
}

/// One file of the folder that the script runs.
#[derive(Clone, Debug, Serialize)]
pub struct CodeDependency {
    /// The file, relative to the folder.
    pub file: String,
    pub bytes: u64,
    #[serde(rename = "use")]
    pub how: Use,
    /// The file and line that show it (`train_gpt.py:3492`), and that line.
    pub by: String,
    pub line: usize,
    pub text: String,
}

static IMPORT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*(?:from\s+([A-Za-z_][\w.]*)\s+import\b|import\s+([A-Za-z_][\w.]*(?:\s+as\s+\w+)?(?:\s*,\s*[A-Za-z_][\w.]*(?:\s+as\s+\w+)?)*))")
        .expect("import line")
});
static FILE_LITERAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"["']([\w./-]+\.(py|c|cc|cpp|cxx|cu|cuh|h|hpp|so|pyx))["']"#)
        .expect("file literal")
});

const COMPILERS: [&str; 9] = [
    "\"gcc\"",
    "\"g++\"",
    "\"cc\"",
    "\"nvcc\"",
    "\"clang\"",
    "cpp_extension",
    "load_inline",
    "gcc ",
    "nvcc ",
];
const LOADERS: [&str; 3] = ["ctypes", "CDLL", "cffi"];
const RUNNERS: [&str; 6] = [
    "runpy",
    "exec(open",
    "subprocess",
    "import_module",
    "spec_from_file_location",
    "os.system",
];

/// Modules named by an import line (their first dotted component).
fn imported_modules(line: &str) -> Vec<String> {
    let Some(c) = IMPORT.captures(line) else {
        return Vec::new();
    };
    let first = |m: &str| m.split('.').next().unwrap_or("").to_string();
    if let Some(from) = c.get(1) {
        return vec![first(from.as_str())];
    }
    c.get(2)
        .map(|list| {
            list.as_str()
                .split(',')
                .filter_map(|item| item.split_whitespace().next())
                .map(first)
                .collect()
        })
        .unwrap_or_default()
}

/// The folder's code that `script` (named `script_name`, its source `source`) runs, in the order found, each file
/// once. Files are read with the review's size cap; one that cannot be read is still listed (its size from the
/// file system), its own imports unscanned.
pub fn code_dependencies(dir: &Path, script_name: &str, source: &str) -> Vec<CodeDependency> {
    let mut found: Vec<CodeDependency> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::from([script_name.to_string()]);
    let mut queue: Vec<(String, String)> = vec![(script_name.to_string(), source.to_string())];
    while let Some((name, text)) = queue.pop() {
        let compiles = COMPILERS.iter().any(|c| text.contains(c));
        let loads = LOADERS.iter().any(|c| text.contains(c));
        for (i, line) in text.lines().enumerate() {
            let mut candidates: Vec<(String, Use)> = imported_modules(line)
                .into_iter()
                .flat_map(|m| [format!("{m}.py"), format!("{m}/__init__.py")])
                .map(|f| (f, Use::Imported))
                .collect();
            for c in FILE_LITERAL.captures_iter(line) {
                let how = match &c[2] {
                    "py" | "pyx" if RUNNERS.iter().any(|r| line.contains(r)) => Use::Executed,
                    "so" if loads => Use::Loaded,
                    "c" | "cc" | "cpp" | "cxx" | "cu" | "cuh" | "h" | "hpp" if compiles => {
                        Use::Compiled
                    }
                    _ => continue,
                };
                candidates.push((c[1].trim_start_matches("./").to_string(), how));
            }
            for (file, how) in candidates {
                if file.contains("..") || seen.contains(&file) {
                    continue;
                }
                let path = dir.join(&file);
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                seen.insert(file.clone());
                if file.ends_with(".py")
                    && let Ok(bytes) =
                        crate::limits::read_capped(&path, crate::limits::MAX_SMALL_FILE_BYTES, "")
                {
                    queue.push((file.clone(), String::from_utf8_lossy(&bytes).into_owned()));
                }
                found.push(CodeDependency {
                    file,
                    bytes: meta.len(),
                    how,
                    by: name.clone(),
                    line: i + 1,
                    text: line.trim().chars().take(160).collect(),
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_lines_name_their_modules() {
        assert_eq!(
            imported_modules("    from online_ngram_tilt import build_hints"),
            ["online_ngram_tilt"]
        );
        assert_eq!(
            imported_modules("import os, numpy as np, a.b"),
            ["os", "numpy", "a"]
        );
        assert!(imported_modules("x = 'import os'").is_empty());
        assert!(imported_modules("# see online_ngram_tilt.py").is_empty());
    }
}
