//! What egret's two YAML file parsers share: the policy ([`crate::policy::parse`]) and
//! `--config` ([`crate::config_file`]). Files are read whole with a size bound and loaded
//! with positions, so each parser can locate every error as `FILE:LINE:COLUMN`.

use std::{io::Read, path::Path};

use saphyr::{LoadableYamlNode as _, MarkedYaml, Scalar, YamlData};
use saphyr_parser::Event;

/// Where something is in a YAML file (1-based; `0:0` stands for the file as a whole).
/// Ordered by line, then column: the order errors are reported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// A problem with the file as a whole, where it is and what to say about it.
pub type Problem = (Position, String);

/// Reads a small YAML file whole; the error is the message for its `FILE:0:0:` line
/// (`cannot open`, `cannot read`, not a regular file, or larger than `max` bytes: "not a
/// {what} file").
pub fn read_bounded(path: &Path, max: u64, what: &str) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // Non-blocking, so that a FIFO put in the file's place cannot stop egret (a reload runs
    // on the event loop) waiting for a writer; then refused as not a regular file.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "not a regular file (a FIFO, socket or device): not a {what} file"
        ));
    }
    let bytes = read_at_most(f, max, what)?;
    String::from_utf8(bytes).map_err(|_| "cannot read: stream did not contain valid UTF-8".into())
}

/// Everything `reader` gives, when that is at most `max` bytes; the error is the message
/// `cannot read: ...`, or (past `max`) "larger than {max} bytes: not a {what} file".
pub fn read_at_most(reader: impl Read, max: u64, what: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    reader
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > max {
        return Err(format!("larger than {max} bytes: not a {what} file"));
    }
    Ok(bytes)
}

/// Deepest nesting of lists and mappings a file may have: a policy needs 5 levels, a config
/// file 2. saphyr's loader recurses once per level, so a file nested 100,000 deep (`- - - …`,
/// 200 KB) overflowed the stack (found running the `policy_parse` fuzz target on deep inputs,
/// past the 4 KiB libFuzzer mutates).
pub const MAX_DEPTH: usize = 64;

/// Bound on what aliases may repeat in one file, in bytes (each node counted as its text plus
/// [`NODE_COST`]). The loader copies an anchor's whole subtree for every alias, so without a
/// bound a small file of nested aliases (a "billion laughs"), or a large scalar repeated
/// by many aliases, takes gigabytes. Files written by people use a few kilobytes at most.
pub const MAX_ALIAS_EXPANSION: usize = 1 << 20;

/// What one node costs besides its text, for [`MAX_ALIAS_EXPANSION`].
const NODE_COST: usize = 16;

fn problem_at(mark: saphyr_parser::Marker, message: String) -> Problem {
    let position = Position {
        line: mark.line(),
        column: mark.col().saturating_add(1),
    };
    (position, message)
}

/// Refuses, before the loader sees it, a file nested deeper than [`MAX_DEPTH`] or whose
/// aliases would repeat more than [`MAX_ALIAS_EXPANSION`] bytes; the problem is where the
/// bound is crossed. Reads saphyr's event stream only (made without recursing, nothing
/// copied); a syntax error ends the check (the loader reports it).
fn check_bounds(text: &str) -> Result<(), Problem> {
    // The size of each anchor's subtree, and of the collections still open.
    let mut anchors: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    let mut open: Vec<(usize, usize)> = Vec::new();
    let mut repeated: usize = 0;
    for event in saphyr_parser::Parser::new_from_str(text) {
        let Ok((event, span)) = event else {
            return Ok(());
        };
        let (size, anchor) = match event {
            Event::Scalar(value, _, anchor, _) => (value.len().saturating_add(NODE_COST), anchor),
            Event::Alias(id) => {
                let size = anchors.get(&id).copied().unwrap_or(NODE_COST);
                repeated = repeated.saturating_add(size);
                if repeated > MAX_ALIAS_EXPANSION {
                    return Err(problem_at(
                        span.start,
                        format!(
                            "aliases repeat more than {MAX_ALIAS_EXPANSION} bytes (an alias bomb?): refused"
                        ),
                    ));
                }
                (size, 0)
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if open.len() >= MAX_DEPTH {
                    return Err(problem_at(
                        span.start,
                        format!("invalid YAML: lists and mappings nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
                open.push((anchor, NODE_COST));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match open.pop() {
                Some((anchor, size)) => (size, anchor),
                None => continue,
            },
            _ => continue,
        };
        if anchor > 0 {
            anchors.insert(anchor, size);
        }
        if let Some((_, parent)) = open.last_mut() {
            *parent = parent.saturating_add(size);
        }
    }
    Ok(())
}

/// The documents of `text`, with positions. A syntax error stops the YAML loader, so it is
/// the only problem reported; so is a file beyond the bounds of [`check_bounds`].
pub fn load(text: &str) -> Result<Vec<MarkedYaml<'_>>, Problem> {
    check_bounds(text)?;
    MarkedYaml::load_from_str(text).map_err(|e| {
        let mark = e.marker();
        let position = Position {
            line: mark.line(),
            column: mark.col().saturating_add(1),
        };
        (position, format!("invalid YAML: {}", e.info()))
    })
}

/// The one document of a file, `None` when the file has none; a second document is an error
/// at its start.
pub fn single_document<'a, 'i>(
    docs: &'a [MarkedYaml<'i>],
) -> Result<Option<&'a MarkedYaml<'i>>, Problem> {
    match docs {
        [] => Ok(None),
        [root] => Ok(Some(root)),
        [_, second, ..] => Err((
            position(second),
            format!(
                "expected one YAML document, found {} (`---` starts another)",
                docs.len()
            ),
        )),
    }
}

/// A YAML node with any tag looked through.
pub fn untag<'a, 'i>(mut node: &'a MarkedYaml<'i>) -> &'a MarkedYaml<'i> {
    while let YamlData::Tagged(_, inner) = &node.data {
        node = inner;
    }
    node
}

/// Where a node starts.
pub fn position(node: &MarkedYaml<'_>) -> Position {
    Position {
        line: node.span.start.line(),
        column: node.span.start.col().saturating_add(1),
    }
}

/// What a node is, for "found ..." in messages.
pub fn describe(node: &MarkedYaml<'_>) -> String {
    match &untag(node).data {
        YamlData::Value(Scalar::Null) => "nothing (null)".to_owned(),
        YamlData::Value(Scalar::Boolean(b)) => format!("boolean `{b}`"),
        YamlData::Value(Scalar::Integer(i)) => format!("integer `{i}`"),
        YamlData::Value(Scalar::FloatingPoint(f)) => format!("number `{f}`"),
        YamlData::Value(Scalar::String(s)) => format!("`{s}`"),
        YamlData::Representation(s, _, _) => format!("`{s}`"),
        YamlData::Sequence(_) => "a list".to_owned(),
        YamlData::Mapping(_) => "a mapping".to_owned(),
        YamlData::Alias(_) => "an alias".to_owned(),
        YamlData::Tagged(..) | YamlData::BadValue => "an invalid value".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_bombs_are_refused_where_they_go_off() {
        let mut laughs = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let aliases = vec![format!("*a{}", i - 1); 9].join(", ");
            laughs.push_str(&format!("a{i}: &a{i} [{aliases}]\n"));
        }
        let (at, message) = load(&laughs).unwrap_err();
        assert!(message.contains("alias bomb"), "{message}");
        assert!((4..=6).contains(&at.line), "{at:?}");
        // One large scalar, many aliases.
        let big = format!(
            "big: &b {}\nmany: [{}]\n",
            "x".repeat(100_000),
            vec!["*b"; 20].join(",")
        );
        let (at, _) = load(&big).unwrap_err();
        assert_eq!(at.line, 2);
        // A few aliases, as people use them, load.
        let shared = "ports: &web [80, 443]\nrules:\n  - {to: [a], ports: *web}\n  - {to: [b], ports: *web}\n";
        assert!(load(shared).is_ok());
    }

    #[test]
    fn syntax_errors_and_documents_are_located() {
        let (at, message) = load("a: [1,\n").unwrap_err();
        assert!(at.line >= 1, "{at:?}");
        assert!(message.starts_with("invalid YAML: "), "{message}");
        let docs = load("a: 1\n---\nb: 2\n").unwrap();
        let (at, message) = single_document(&docs).unwrap_err();
        assert_eq!(at, Position { line: 3, column: 1 });
        assert_eq!(
            message,
            "expected one YAML document, found 2 (`---` starts another)"
        );
        assert!(single_document(&load("").unwrap()).unwrap().is_none());
        let docs = load("!tag 7\n").unwrap();
        let root = single_document(&docs).unwrap().unwrap();
        assert_eq!(describe(root), "integer `7`");
        assert_eq!(position(root), Position { line: 1, column: 1 });
    }

    /// Found with the policy_parse fuzz target: 100,000 nested lists overflowed the stack in
    /// saphyr's loader.
    #[test]
    fn nesting_is_bounded_before_loading() {
        let (at, message) = load(&"- ".repeat(100_000)).unwrap_err();
        assert_eq!(
            message,
            "invalid YAML: lists and mappings nested deeper than 64 levels"
        );
        assert_eq!(
            at,
            Position {
                line: 1,
                column: 129
            }
        );
        assert!(load(&"[".repeat(100_000)).is_err());
        assert!(load(&"{a: ".repeat(100_000)).is_err());
        // As deep as allowed: loads.
        let deepest = format!("{}x", "- ".repeat(MAX_DEPTH));
        assert_eq!(load(&deepest).unwrap().len(), 1);
    }

    #[test]
    fn positions_sort_by_line_then_column() {
        let at = |line, column| Position { line, column };
        let mut positions = [at(2, 1), at(1, 9), at(1, 2)];
        positions.sort();
        assert_eq!(positions, [at(1, 2), at(1, 9), at(2, 1)]);
    }
}
