//! The shape of the code, checked: no function longer than 150 lines in
//! src/ and loadgen/src (tests aside), no import cycle between the library's
//! modules, and the top-level modules layered — each imports only from the
//! layers below it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The library's top-level modules, lowest layer first.
const LAYERS: &[&str] = &[
    "proto",
    "telemetry",
    "state",
    "clock",
    "config",
    "privileges",
    "server",
    "sync",
    "observe",
    "endpoint",
    "control",
    "metrics",
    "manual",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without unit-test modules (`#[cfg(test)] mod x { ... }`,
/// cut at the brace that closes them) and without comment lines.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(") && trimmed.contains("test") {
            if let Some(next) = lines.peek() {
                let next = next.trim_start();
                if next.starts_with("mod ") || next.starts_with("pub mod ") {
                    let indent = &line[..line.len() - trimmed.len()];
                    let close = format!("{indent}}}");
                    for l in lines.by_ref() {
                        if l == close {
                            break;
                        }
                    }
                    continue;
                }
            }
        }
        if !trimmed.starts_with("//") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn no_function_is_longer_than_150_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("loadgen/src"), &mut files);
    let mut checked = 0;
    let mut long = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy();
        if name == "tests.rs" || name.ends_with("_tests.rs") || name.starts_with("sim") {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&path).unwrap());
        let lines: Vec<&str> = code.lines().collect();
        for (start, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let signature = trimmed.split_once("fn ").is_some_and(|(before, _)| {
                before.is_empty()
                    || before.split_whitespace().all(|w| {
                        w.starts_with("pub") || w == "async" || w == "unsafe" || w == "const"
                    })
            });
            if !signature || trimmed.ends_with(';') {
                continue;
            }
            // rustfmt closes a function with `}` at the indentation of its `fn`.
            let indent = &line[..line.len() - trimmed.len()];
            let close = format!("{indent}}}");
            let Some(length) = lines[start..].iter().position(|l| *l == close) else {
                continue;
            };
            checked += 1;
            if length + 1 > 150 {
                long.push(format!(
                    "{}:{}: {} lines",
                    path.display(),
                    start + 1,
                    length + 1
                ));
            }
        }
    }
    assert!(checked > 500, "only {checked} functions found");
    assert!(
        long.is_empty(),
        "functions over 150 lines:\n{}",
        long.join("\n")
    );
}

/// Module paths (`server::io::uring`) of the library's files.
fn library_modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut modules = BTreeMap::new();
    for path in files {
        let rel = path.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.first().is_some_and(|p| p == "bin") {
            continue;
        }
        if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
            parts.pop();
        }
        modules.insert(parts.join("::"), path);
    }
    modules
}

/// The module a path such as `crate::server::stats::Outcome` or
/// `super::engine` names, seen from `from`: its longest known prefix.
fn resolve(from: &str, path: &str, modules: &BTreeMap<String, PathBuf>) -> Option<String> {
    let mut parts: Vec<&str> = path.split("::").collect();
    let mut base: Vec<&str> = match parts.first() {
        Some(&"crate") => Vec::new(),
        Some(&"super") => from.split("::").collect(),
        _ => return None,
    };
    if parts[0] == "crate" {
        parts.remove(0);
    }
    while parts.first() == Some(&"super") {
        base.pop();
        parts.remove(0);
    }
    base.extend(parts);
    (1..=base.len())
        .rev()
        .map(|n| base[..n].join("::"))
        .find(|candidate| modules.contains_key(candidate))
}

/// Every `crate::…` and `super::…` path in `code`, groups expanded.
fn paths_in(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for start in ["crate::", "super::"] {
        for (i, _) in code.match_indices(start) {
            if i > 0 && code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest = &code[i..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let path = rest[..end].trim_end_matches(':');
            if rest[end..].starts_with('{') && rest[..end].ends_with("::") {
                let group = &rest[end + 1..rest[end..].find('}').map_or(rest.len(), |j| end + j)];
                for item in group.split(',') {
                    let item = item.split_whitespace().next().unwrap_or("");
                    let item = item.split("::").next().unwrap_or("");
                    if !item.is_empty() && item != "self" {
                        out.push(format!("{path}::{item}"));
                    }
                }
            }
            out.push(path.to_string());
        }
    }
    out
}

fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = library_modules(&src);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &modules {
        let code = code_of(&std::fs::read_to_string(path).unwrap());
        let edges = graph.entry(module.clone()).or_default();
        for p in paths_in(&code) {
            if let Some(target) = resolve(module, &p, &modules) {
                // A module may use its own children.
                if target != *module && !target.starts_with(&format!("{module}::")) {
                    edges.insert(target);
                }
            }
        }
    }
    graph
}

#[test]
fn library_modules_import_without_cycles() {
    let graph = import_graph();
    assert!(graph.len() > 40, "{} modules", graph.len());
    // Peel off modules that import nothing left; whatever remains is cyclic.
    let mut left = graph.clone();
    loop {
        let leaves: Vec<String> = left
            .iter()
            .filter(|(_, to)| to.iter().all(|t| !left.contains_key(t)))
            .map(|(m, _)| m.clone())
            .collect();
        if leaves.is_empty() {
            break;
        }
        for m in leaves {
            left.remove(&m);
        }
    }
    assert!(left.is_empty(), "import cycle among: {left:#?}");
}

#[test]
fn top_level_modules_import_only_from_lower_layers() {
    let rank = |m: &str| {
        let top = m.split("::").next().unwrap();
        LAYERS
            .iter()
            .position(|l| *l == top)
            .unwrap_or_else(|| panic!("module {top} has no layer in LAYERS"))
    };
    let mut upward = Vec::new();
    for (from, to) in import_graph() {
        if from.is_empty() {
            continue; // lib.rs declares the modules
        }
        for target in to {
            let (a, b) = (rank(&from), rank(&target));
            if a != b && b > a {
                upward.push(format!("{from} -> {target}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports from a higher layer:\n{}",
        upward.join("\n")
    );
}
