//! `cargo xtask test`'s structure step: the code stays readable the way issue 11 left it.
//!
//! - **No import cycle**: between the top-level modules of a crate (`use crate::a::…` in
//!   module `b`), and between the files of one directory (`use super::x::…`). Test modules
//!   (`#[cfg(test)] mod …`, `tests.rs`) are left out: a test may reach anywhere.
//! - **No long function**: no function outside tests is longer than [`MAX_FN_LINES`] lines
//!   (from `fn` to its closing brace), except the flat declarative tables in [`LONG_TABLES`].
//!
//! It reads the source as text: comments and string and character literals are blanked first,
//! so braces and `crate::` inside them do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

/// The longest a function may be.
pub const MAX_FN_LINES: usize = 120;

/// Functions allowed to be longer: flat tables whose length is their content (file, function).
pub const LONG_TABLES: [(&str, &str); 1] = [
    // Every counter of `Metrics`, each exported with its name, type and help (one entry per
    // counter, destructured without `..` so a new counter cannot be forgotten).
    ("agent/src/metrics/render.rs", "metrics"),
];

/// The crates' source directories, relative to the workspace root.
const SOURCE_DIRS: [&str; 5] = [
    "agent/src",
    "agent-common/src",
    "agent-ebpf/src",
    "xtask/src",
    "tests/src",
];

/// Runs both checks over the workspace at `root`; the error lists every problem.
pub fn check(root: &Path) -> Result<()> {
    let mut problems = String::new();
    for dir in SOURCE_DIRS {
        let files = rust_files(&root.join(dir))?;
        let mut sources = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let relative = file.strip_prefix(root).unwrap_or(&file).to_path_buf();
            sources.push((relative, text));
        }
        for cycle in import_cycles(Path::new(dir), &sources) {
            let _ = writeln!(problems, "import cycle in {dir}: {}", cycle.join(" -> "));
        }
        for (file, text) in &sources {
            for (name, line, lines) in long_functions(&blank(text), is_test_file(file)) {
                let shown = file.display().to_string();
                if !LONG_TABLES.contains(&(shown.as_str(), name.as_str())) {
                    let _ = writeln!(
                        problems,
                        "{shown}:{line}: fn {name} is {lines} lines (at most {MAX_FN_LINES}; split it)"
                    );
                }
            }
        }
    }
    if !problems.is_empty() {
        bail!("the code's structure:\n{problems}");
    }
    Ok(())
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn is_test_file(file: &Path) -> bool {
    file.file_name().is_some_and(|n| n == "tests.rs")
}

/// `source` with comments and the insides of string and character literals replaced by spaces
/// (newlines kept, so line numbers stay).
pub fn blank(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let keep = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    while let Some(&c) = chars.get(i) {
        let next = chars.get(i + 1).copied();
        match (c, next) {
            ('/', Some('/')) => {
                while let Some(&c) = chars.get(i) {
                    if c == '\n' {
                        break;
                    }
                    keep(&mut out, c);
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                let mut depth = 0;
                while let Some(&c) = chars.get(i) {
                    match (c, chars.get(i + 1).copied()) {
                        ('/', Some('*')) => depth += 1,
                        ('*', Some('/')) => depth -= 1,
                        _ => {}
                    }
                    keep(&mut out, c);
                    i += 1;
                    if depth == 0 {
                        keep(&mut out, chars.get(i).copied().unwrap_or(' '));
                        i += 1;
                        break;
                    }
                }
            }
            ('r', Some('#' | '"')) if !ident_char(i.checked_sub(1).and_then(|p| chars.get(p))) => {
                // A raw string: r"…", r#"…"#, …
                let rest = chars.get(i + 1..).unwrap_or_default();
                let hashes = rest.iter().take_while(|&&c| c == '#').count();
                if chars.get(i + 1 + hashes) != Some(&'"') {
                    out.push(c);
                    i += 1;
                    continue;
                }
                out.push('r');
                i += 1;
                for _ in 0..hashes + 1 {
                    out.push(' ');
                    i += 1;
                }
                while let Some(&c) = chars.get(i) {
                    let closes = c == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#'));
                    keep(&mut out, c);
                    i += 1;
                    if closes {
                        for _ in 0..hashes {
                            out.push(' ');
                            i += 1;
                        }
                        break;
                    }
                }
            }
            ('"', _) => {
                out.push('"');
                i += 1;
                while let Some(&c) = chars.get(i) {
                    i += 1;
                    if c == '\\' {
                        keep(&mut out, c);
                        keep(&mut out, chars.get(i).copied().unwrap_or(' '));
                        i += 1;
                        continue;
                    }
                    if c == '"' {
                        out.push('"');
                        break;
                    }
                    keep(&mut out, c);
                }
            }
            ('\'', Some(n)) => {
                // A character literal ('x', '\n', '\u{..}'); otherwise a lifetime.
                let end = if n == '\\' {
                    let rest = chars.get(i + 2..).unwrap_or_default();
                    rest.iter().position(|&c| c == '\'').map(|p| i + 2 + p)
                } else if chars.get(i + 2) == Some(&'\'') {
                    Some(i + 2)
                } else {
                    None
                };
                match end {
                    Some(end) => {
                        out.push('\'');
                        for _ in i + 1..end {
                            out.push(' ');
                        }
                        out.push('\'');
                        i = end + 1;
                    }
                    None => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn ident_char(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// `text` from byte `from` on (empty past its end).
fn tail(text: &str, from: usize) -> &str {
    text.get(from..).unwrap_or_default()
}

/// Whether the byte before `at` continues an identifier (`my_crate::` is not `crate::`).
fn after_ident(text: &str, at: usize) -> bool {
    ident_char(text.get(..at).and_then(|t| t.chars().next_back()).as_ref())
}

/// Where a blanked file's code ends and its test module begins.
fn code_end(blanked: &str) -> usize {
    let mut from = 0;
    while let Some(at) = tail(blanked, from).find("#[cfg(test)]") {
        let attr = from + at;
        let rest = tail(blanked, attr + "#[cfg(test)]".len()).trim_start();
        if rest.starts_with("mod ")
            || rest.starts_with("pub mod ")
            || rest.starts_with("pub(crate) mod ")
        {
            return attr;
        }
        from = attr + 1;
    }
    blanked.len()
}

/// The module a file is, relative to its crate's source directory: `pipeline/emit.rs` →
/// `["pipeline", "emit"]`, `dns/mod.rs` → `["dns"]`, `lib.rs`/`main.rs` → `[]`.
fn module_path(file: &Path, crate_dir: &Path) -> Vec<String> {
    let relative = file.strip_prefix(crate_dir).unwrap_or(file);
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    if parts.first().is_some_and(|p| p == "bin") {
        // A binary is its own crate root.
        return Vec::new();
    }
    parts
}

/// The names right after `prefix` (`crate::`, `super::`) in `code`: `crate::a::b` gives `a`,
/// `crate::{a, b::c}` gives `a` and `b`.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = tail(code, from).find(prefix) {
        let start = from + at;
        from = start + prefix.len();
        if after_ident(code, start) {
            continue;
        }
        let rest = tail(code, from);
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0_i32;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.extend(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            names.extend(first_ident(&item));
        } else {
            names.extend(first_ident(rest));
        }
    }
    names
}

fn first_ident(text: &str) -> Option<String> {
    let ident: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!ident.is_empty() && ident != "self").then_some(ident)
}

/// The import cycles among a crate's top-level modules and among the files of each of its
/// directories, each as the modules around it.
fn import_cycles(crate_dir: &Path, sources: &[(PathBuf, String)]) -> Vec<Vec<String>> {
    // Top level: module -> the top-level modules it names through `crate::`.
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Siblings: (directory, file module) -> the siblings it names through `super::`.
    let mut siblings: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (file, text) in sources {
        if is_test_file(file) {
            continue;
        }
        let blanked = blank(text);
        let code = blanked.get(..code_end(&blanked)).unwrap_or(&blanked);
        let path = module_path(file, crate_dir);
        let Some(first) = path.first() else {
            continue;
        };
        let mut named = names_after(code, "crate::");
        named.remove(first);
        top.entry(first.clone()).or_default().extend(named);
        if let Some((me, parent)) = path.split_last() {
            if !parent.is_empty() {
                let mut named = names_after(code, "super::");
                named.remove(me);
                siblings
                    .entry(parent.to_vec())
                    .or_default()
                    .entry(me.clone())
                    .or_default()
                    .extend(named);
            }
        }
    }
    let mut cycles = find_cycles(&top);
    for (dir, graph) in &siblings {
        for cycle in find_cycles(graph) {
            cycles.push(
                cycle
                    .iter()
                    .map(|m| format!("{}::{m}", dir.join("::")))
                    .collect(),
            );
        }
    }
    cycles
}

/// Every cycle of `graph` (edges to names that are not nodes are ignored), each once, from its
/// smallest module.
fn find_cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    let mut cycle = path.clone();
                    let smallest = (0..cycle.len()).min_by_key(|&i| cycle.get(i)).unwrap_or(0);
                    cycle.rotate_left(smallest);
                    cycle.extend(cycle.first().cloned());
                    found.insert(cycle);
                } else if graph.contains_key(next) && !path.contains(next) && next > start {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found.into_iter().collect()
}

/// The functions of a blanked file longer than [`MAX_FN_LINES`], outside its test module (all
/// of them are tests when `all_tests`): name, first line, length in lines.
fn long_functions(blanked: &str, all_tests: bool) -> Vec<(String, usize, usize)> {
    if all_tests {
        return Vec::new();
    }
    let code = blanked.get(..code_end(blanked)).unwrap_or(blanked);
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = tail(code, from).find("fn ") {
        let start = from + at;
        from = start + 3;
        if after_ident(code, start) {
            continue;
        }
        let Some(name) = first_ident(tail(code, from)) else {
            continue;
        };
        // The body starts at the first `{` before any `;` (a declaration has none).
        let Some(open) = tail(code, from).find(['{', ';']).map(|p| from + p) else {
            continue;
        };
        if bytes.get(open) != Some(&b'{') {
            continue;
        }
        let mut depth = 0_usize;
        let mut close = None;
        for (offset, b) in bytes.get(open..).unwrap_or_default().iter().enumerate() {
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        close = Some(open + offset);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(close) = close else {
            continue;
        };
        let first_line = code.get(..start).unwrap_or_default().matches('\n').count() + 1;
        let lines = code
            .get(start..close)
            .unwrap_or_default()
            .matches('\n')
            .count()
            + 1;
        if lines > MAX_FN_LINES {
            out.push((name, first_line, lines));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cycles_once_and_ignores_outside_names() {
        let graph: BTreeMap<String, BTreeSet<String>> = [
            ("a", &["b"][..]),
            ("b", &["c", "std"]),
            ("c", &["a"]),
            ("d", &["a"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
        .collect();
        assert_eq!(find_cycles(&graph), [["a", "b", "c", "a"]]);
    }

    #[test]
    fn blanking_keeps_code_and_lines_and_hides_comments_and_literals() {
        let source = "fn a() { // { not code\n    let s = \"}{ crate::x \\\" }\";\n    let c = '{';\n    let r = r#\"}\"#;\n    let l: &'static str = s; /* { */\n}\n";
        let blanked = blank(source);
        assert_eq!(blanked.lines().count(), source.lines().count());
        assert_eq!(blanked.matches('{').count(), 1);
        assert_eq!(blanked.matches('}').count(), 1);
        assert!(!blanked.contains("crate::"));
        assert!(blanked.contains("&'static str"));
    }

    #[test]
    fn names_in_paths_and_groups() {
        let code = "use crate::{a::b, c, d::{e, f}};\nfn g() { crate::h::i(); my_crate::j(); }";
        let names: Vec<String> = names_after(code, "crate::").into_iter().collect();
        assert_eq!(names, ["a", "c", "d", "h"]);
    }

    #[test]
    fn cycles_between_modules_and_between_siblings() {
        let sources = vec![
            (PathBuf::from("src/lib.rs"), "mod a; mod b;".to_owned()),
            (PathBuf::from("src/a.rs"), "use crate::b::X;".to_owned()),
            (
                PathBuf::from("src/b/mod.rs"),
                "use crate::a::Y;\n#[cfg(test)]\nmod tests { use crate::c; }".to_owned(),
            ),
            (PathBuf::from("src/b/x.rs"), "use super::y::Z;".to_owned()),
            (PathBuf::from("src/b/y.rs"), "use super::x::W;".to_owned()),
        ];
        let cycles = import_cycles(Path::new("src"), &sources);
        assert_eq!(cycles, [vec!["a", "b", "a"], vec!["b::x", "b::y", "b::x"]]);
    }

    #[test]
    fn measures_functions_outside_tests() {
        let body = "    x();\n".repeat(MAX_FN_LINES);
        let source = format!(
            "fn short() {{ }}\nfn long() {{\n{body}}}\ntrait T {{ fn decl(&self); }}\n#[cfg(test)]\nmod tests {{ fn long_test() {{\n{body}}} }}\n"
        );
        let found = long_functions(&blank(&source), false);
        assert_eq!(found, [("long".to_owned(), 2, MAX_FN_LINES + 2)]);
        assert!(long_functions(&blank(&source), true).is_empty());
    }
}
