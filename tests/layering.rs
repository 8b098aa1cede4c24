//! The crate's shape, checked from its source: files import downward only (no circle between two files of `src/`),
//! `data` imports none of the other modules, `infer` knows nothing of evaluation, packing or training, and nothing
//! below `src/bin` prints.
//!
//! The graph has one node per file of `src/` (below `src/bin`) and an edge for every `crate::…`, `super::…` and
//! `self::…` path the file's own code names (in `use` items and inline), resolved to the file that defines the
//! longest prefix of that path; `mod` declarations and unit-test modules (`#[cfg(test)]` to the end of the file) are
//! not imports.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`verify::eval`) of every library file, and its text without comments and test modules.
fn library_files() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                if prefix.is_empty() && name == "bin" {
                    continue;
                }
                let mut sub = prefix.to_vec();
                sub.push(name);
                walk(&p, &sub, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut module = prefix.to_vec();
                if stem != "mod" && stem != "lib" {
                    module.push(stem.to_string());
                }
                out.insert(module.join("::"), library_text(&p));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&common::root().join("src"), &[], &mut out);
    out
}

/// The file's code: unit-test modules cut off, line comments dropped.
fn library_text(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let code = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    code.lines()
        .map(|l| match l.trim_start().starts_with("//") {
            true => "",
            false => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every full path named after `crate::`, `super::` or `self::`, groups (`a::{b, c::d}`) expanded, as segments
/// from the crate root.
fn named_paths(module: &str, text: &str) -> Vec<Vec<String>> {
    let own: Vec<String> = module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    // A file's module path already names its folder for `mod.rs`, so `self` is the file's module and `super` its
    // parent in both kinds of file.
    let self_mod = own.clone();
    let super_mod = own[..own.len().saturating_sub(1)].to_vec();
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let at_word = i == 0 || !is_ident(chars[i - 1]) && chars[i - 1] != ':';
        let rest: String = chars[i..(i + 8).min(chars.len())].iter().collect();
        let base = if !at_word {
            None
        } else if rest.starts_with("crate::") {
            Some((Vec::new(), 7))
        } else if rest.starts_with("super::") {
            Some((super_mod.clone(), 7))
        } else if rest.starts_with("self::") {
            Some((self_mod.clone(), 6))
        } else {
            None
        };
        match base {
            Some((base, skip)) => {
                let (paths, end) = parse_tree(&chars, i + skip, base);
                out.extend(paths);
                i = end.max(i + 1);
            }
            None => i += 1,
        }
    }
    out
}

/// Parses `a::b::{c, d::e}` from `at`; returns the expanded paths and where parsing stopped.
fn parse_tree(chars: &[char], mut at: usize, mut prefix: Vec<String>) -> (Vec<Vec<String>>, usize) {
    loop {
        while at < chars.len() && chars[at].is_whitespace() {
            at += 1;
        }
        if at < chars.len() && chars[at] == '{' {
            let mut out = Vec::new();
            at += 1;
            loop {
                while at < chars.len() && (chars[at].is_whitespace() || chars[at] == ',') {
                    at += 1;
                }
                if at >= chars.len() || chars[at] == '}' {
                    return (out, at + 1);
                }
                let (paths, end) = parse_tree(chars, at, prefix.clone());
                out.extend(paths);
                if end == at {
                    at += 1;
                } else {
                    at = end;
                }
            }
        }
        let start = at;
        while at < chars.len() && is_ident(chars[at]) {
            at += 1;
        }
        if at == start {
            return (vec![prefix], at);
        }
        let word: String = chars[start..at].iter().collect();
        if word != "self" {
            prefix.push(word);
        }
        if chars.get(at) == Some(&':') && chars.get(at + 1) == Some(&':') {
            at += 2;
        } else {
            // `as alias` and the rest of the item are not part of the path.
            return (vec![prefix], at);
        }
    }
}

/// The file (module path) that defines the longest prefix of `path`.
fn resolve(path: &[String], files: &BTreeMap<String, String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| files.contains_key(m))
}

fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = library_files();
    let mut graph = BTreeMap::new();
    for (module, text) in &files {
        let mut edges = BTreeSet::new();
        for path in named_paths(module, text) {
            if let Some(target) = resolve(&path, &files)
                && &target != module
            {
                edges.insert(target);
            }
        }
        graph.insert(module.clone(), edges);
    }
    graph
}

/// Every strongly connected group of more than one file (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                group.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.out.push(group);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn no_import_circle_between_library_files() {
    let graph = import_graph();
    let found = circles(&graph);
    assert!(found.is_empty(), "import circles: {found:?}");
}

#[test]
fn the_checker_sees_a_circle_and_resolves_groups() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("a".into(), ["b".to_string()].into());
    g.insert("b".into(), ["c".to_string()].into());
    g.insert("c".into(), ["a".to_string()].into());
    g.insert("d".into(), ["a".to_string()].into());
    assert_eq!(circles(&g), vec![vec!["a", "b", "c"]]);
    let paths = named_paths(
        "verify::eval",
        "use super::{Result, ledger::{RunRecord, x}};\nlet y = crate::data::bpb::f();",
    );
    let paths: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        paths,
        [
            "verify::Result",
            "verify::ledger::RunRecord",
            "verify::ledger::x",
            "data::bpb::f"
        ]
    );
    // The real graph has the edges the source states.
    let graph = import_graph();
    assert!(graph["verify::scorer"].contains("infer::lm"));
    assert!(graph["verify"].contains("infer"));
}

/// The top-level modules each top-level module may import (besides itself). Every top-level module of `src/` has
/// an entry: a new one fails the test until it is given its place.
const ALLOWED: &[(&str, &[&str])] = &[
    ("limits", &[]),
    ("alloc", &[]),
    ("output", &[]),
    ("html", &[]),
    ("data", &["limits", "output"]),
    ("kernels", &[]),
    ("infer", &["limits", "data", "kernels"]),
    ("optim", &["infer", "kernels", "data"]),
    ("pack", &["limits", "output", "data", "infer", "kernels"]),
    (
        "verify",
        &[
            "limits", "output", "html", "data", "infer", "kernels", "optim", "pack",
        ],
    ),
    (
        "train",
        &[
            "limits", "output", "data", "infer", "kernels", "optim", "pack", "verify",
        ],
    ),
    (
        "review",
        &[
            "limits", "output", "html", "data", "infer", "pack", "verify",
        ],
    ),
    ("demo", &["limits", "output", "data", "infer", "pack"]),
];

/// The top-level module of a module path (`verify::eval` → `verify`; the crate root's own items → "").
fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

#[test]
fn every_top_level_module_has_a_place_in_the_layers() {
    let tops: BTreeSet<String> = import_graph()
        .keys()
        .map(|m| top(m).to_string())
        .filter(|t| !t.is_empty())
        .collect();
    let placed: BTreeSet<String> = ALLOWED.iter().map(|(m, _)| m.to_string()).collect();
    let unplaced: Vec<&String> = tops.difference(&placed).collect();
    assert!(
        unplaced.is_empty(),
        "modules with no entry in ALLOWED: {unplaced:?}"
    );
    let gone: Vec<&String> = placed.difference(&tops).collect();
    assert!(
        gone.is_empty(),
        "ALLOWED names modules that do not exist: {gone:?}"
    );
}

#[test]
fn modules_import_downward_only() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (module, edges) in import_graph() {
        let from = top(&module).to_string();
        let ok = allowed.get(from.as_str()).copied().unwrap_or(&[]);
        for e in edges {
            let to = top(&e);
            if to != from && !to.is_empty() && !ok.contains(&to) {
                wrong.push(format!("{module} → {e}"));
            }
        }
    }
    assert!(wrong.is_empty(), "upward imports: {wrong:?}");
}

#[test]
fn nothing_below_bin_prints() {
    let mut printing = Vec::new();
    for (module, text) in library_files() {
        for (n, line) in text.lines().enumerate() {
            if ["println!", "eprintln!", "print!(", "eprint!(", "dbg!("]
                .iter()
                .any(|m| line.contains(m))
            {
                printing.push(format!("{module}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(printing.is_empty(), "library code prints: {printing:?}");
}

/// Rust source with string and character literals and comments blanked out (so their braces do not count), lines kept.
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == 'r' && (c.get(i + 1) == Some(&'"') || c.get(i + 1) == Some(&'#')) && {
            let mut j = i + 1;
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            c.get(j) == Some(&'"')
        } {
            let mut hashes = 0;
            i += 1;
            while c[i] == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            out.push_str(&" ".repeat(hashes + 2));
            loop {
                if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                    out.push_str(&" ".repeat(hashes + 1));
                    i += hashes + 1;
                    break;
                }
                out.push(blank(c[i]));
                i += 1;
            }
        } else if c[i] == '"' {
            out.push(' ');
            i += 1;
            while c[i] != '"' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                out.push(blank(c[i]));
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' && (c.get(i + 2) == Some(&'\'') || c.get(i + 1) == Some(&'\\')) {
            // A character literal ('x' or '\n', '\''), not a lifetime.
            out.push(' ');
            i += 1;
            while c[i] != '\'' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Every function of a file with its first line and its length in lines (from `fn` to its closing brace).
fn function_lengths(text: &str) -> Vec<(String, usize, usize)> {
    let code = code_only(text);
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let is_fn = [
            "fn ",
            "pub fn ",
            "pub(crate) fn ",
            "pub(super) fn ",
            "async fn ",
        ]
        .iter()
        .any(|p| t.starts_with(p));
        if !is_fn {
            continue;
        }
        let mut depth = 0i64;
        let mut opened = false;
        'scan: for (k, l) in lines[start..].iter().enumerate() {
            for ch in l.chars() {
                match ch {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    ';' if !opened => break 'scan,
                    _ => {}
                }
                if opened && depth == 0 {
                    let name = t.split('(').next().unwrap_or(t).to_string();
                    out.push((name, start + 1, k + 1));
                    break 'scan;
                }
            }
        }
    }
    out
}

/// The command line only parses, shows progress and prints: no function of `src/bin` runs past 120 lines, and
/// none builds JSON by hand (every report is a typed value of the library).
#[test]
fn the_cli_parses_and_prints_only() {
    let mut long = Vec::new();
    let mut hand_json = Vec::new();
    let mut raw_prints = Vec::new();
    let bin = common::root().join("src/bin");
    let mut files = vec![bin.join("pgolf.rs")];
    files.extend(
        std::fs::read_dir(bin.join("pgolf"))
            .unwrap()
            .map(|e| e.unwrap().path()),
    );
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (name, at, lines) in function_lengths(&text) {
            if lines > 120 {
                long.push(format!("{}:{at}: {name} is {lines} lines", f.display()));
            }
        }
        let code = code_only(&text);
        if code.contains("json!") {
            hand_json.push(f.display().to_string());
        }
        // Text reaches the terminal only through print.rs, which escapes what came from an input.
        let prints = [
            "println!",
            "print!(",
            "eprintln!",
            "eprint!(",
            "stdout()",
            "stdout().lock",
        ];
        if !f.ends_with("print.rs") && prints.iter().any(|p| code.contains(p)) {
            raw_prints.push(f.display().to_string());
        }
    }
    assert!(long.is_empty(), "functions over 120 lines: {long:?}");
    assert!(hand_json.is_empty(), "json! in {hand_json:?}");
    assert!(
        raw_prints.is_empty(),
        "printing outside src/bin/pgolf/print.rs (use out!, out_part!, print::json): {raw_prints:?}"
    );
}

#[test]
fn the_length_checker_counts_a_function_to_its_closing_brace() {
    let text = "fn a() {\n    let s = \"}\";\n    let c = '}';\n    // }\n}\n\npub fn b(x: u8) -> u8 {\n    x\n}\n";
    assert_eq!(
        function_lengths(text),
        [("fn a".to_string(), 1, 5), ("pub fn b".to_string(), 7, 3)]
    );
}
