//! `egret verify FILE…`: recomputes the chain of output files and names the first line that
//! breaks it.
//!
//! Files are grouped into rotated sets (`events.jsonl.<stamp>…` with `events.jsonl`), each
//! set checked as one chain in rotation order (rotated names sorted, the live file last),
//! whatever the order of the arguments. Other files are checked in the order given, a file
//! that does not continue the one before it starting a chain of its own (with a note).
//! Within a set:
//!
//! - every line is a JSON object whose `egret.chain` is the hash of the previous line's
//!   chain value and the line's content ([`super::chain`]);
//! - every file starts with egret's output line (`event.dataset` `egret.output`), which
//!   names the file and the chain value it continues from: the previous file of the set
//!   must end with exactly that value;
//! - the first file's output line is where checking starts (its predecessor was deleted by
//!   retention, or the chain starts there).
//!
//! At the first line that does not fit, the lines around it are examined to say what
//! happened: edited, removed (`event.sequence` jumps), inserted (the next line follows the
//! one before), reordered (the line belongs after a later one), or lines removed from the
//! end of the previous file. Nothing in a damaged file makes this panic.

use std::{
    collections::VecDeque,
    fmt,
    fs::File,
    io::{self, BufRead, BufReader},
    path::{Path, PathBuf},
};

use super::{
    chain::{self, ChainHash},
    rotate, OUTPUT_DATASET,
};
use crate::schema::{self, ReadError};

/// Chain values remembered, to say where a line links to.
const WINDOW: usize = 4096;
/// Lines read past a broken one to explain it.
const LOOKAHEAD: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("nothing to verify: name at least one file")]
    NoFiles,
}

/// The first line that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: u64,
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.what)
    }
}

/// One file checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    pub file: String,
    /// Lines whose chain was checked.
    pub lines: u64,
}

/// What `egret verify` found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub files: Vec<FileReport>,
    /// Things worth knowing that are not a break (where a chain starts, a line being written).
    pub notes: Vec<String>,
    /// The first break, if any (checking stops there).
    pub problem: Option<Problem>,
    /// Lines checked in all.
    pub lines: u64,
    /// egret's own output lines among them (file starts, restarts).
    pub starts: u64,
    /// The chain value of the last line checked in each set.
    pub last: Vec<(String, ChainHash)>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.problem.is_none()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        for file in &self.files {
            writeln!(f, "{}: {} lines", file.file, file.lines)?;
        }
        match &self.problem {
            Some(problem) => {
                writeln!(f, "{problem}")?;
                write!(
                    f,
                    "BROKEN: the chain breaks at {}:{}; {} lines before it check out (lines after it were not checked)",
                    problem.file, problem.line, self.lines
                )
            }
            None => {
                for (file, hash) in &self.last {
                    writeln!(f, "{file}: ends with egret.chain {hash}")?;
                }
                write!(
                    f,
                    "intact: {} files, {} lines, {} of them egret's output lines",
                    self.files.len(),
                    self.lines,
                    self.starts
                )
            }
        }
    }
}

/// One line as read.
struct Line {
    number: u64,
    stored: Result<(ChainHash, Vec<u8>), String>,
    /// egret's output line: the chain value and file it says it continues from.
    output: Option<(ChainHash, Option<String>)>,
    sequence: Option<u64>,
    /// egret's output line of a rotation: the run (and its `event.sequence`) goes on.
    rotation: bool,
}

fn parse_line(number: u64, bytes: &[u8]) -> Line {
    let unreadable = |why: String| Line {
        number,
        stored: Err(why),
        output: None,
        sequence: None,
        rotation: false,
    };
    // A line whose fields have unexpected types is still checked against the chain (the
    // chain finds what was changed); it just names no output-file link and no sequence.
    let doc = match schema::read(bytes) {
        Ok(doc) => Some(doc),
        Err(ReadError::Field(_)) => None,
        Err(ReadError::NotObject) => return unreadable("not a JSON object".to_owned()),
        Err(ReadError::NotJson(e)) => {
            return unreadable(format!("not JSON ({e}): the line was damaged or edited"))
        }
    };
    let event = doc.as_ref().map(|d| &d.event);
    let output = doc
        .as_ref()
        .filter(|d| d.event.dataset == OUTPUT_DATASET)
        .and_then(|d| d.egret.output.as_ref())
        .and_then(|o| {
            let hash = ChainHash::parse(&o.previous.hash)?;
            Some((hash, o.previous.file.as_deref().map(str::to_owned)))
        });
    Line {
        number,
        stored: chain::content(bytes).map_err(|e| e.to_string()),
        sequence: event.and_then(|e| e.sequence),
        rotation: output.is_some() && event.is_some_and(|e| e.action == "rotate"),
        output,
    }
}

/// Reads lines; the last one may lack its newline.
struct Reader<'r> {
    inner: Box<dyn BufRead + 'r>,
    number: u64,
    buf: Vec<u8>,
}

enum Next {
    Line(Vec<u8>),
    /// The file ends with bytes that have no newline.
    Unterminated(usize),
    End,
}

impl Reader<'_> {
    fn next(&mut self) -> io::Result<Next> {
        self.buf.clear();
        let n = self.inner.read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(Next::End);
        }
        self.number += 1;
        if self.buf.last() != Some(&b'\n') {
            return Ok(Next::Unterminated(self.buf.len()));
        }
        self.buf.pop();
        Ok(Next::Line(std::mem::take(&mut self.buf)))
    }
}

/// A file of a set, with its name as given and its bare file name.
struct Member {
    path: PathBuf,
    shown: String,
    name: String,
}

/// Files checked as one chain.
struct Set {
    members: Vec<Member>,
    /// A rotated set: each file must continue the one before it. Otherwise (files given
    /// one after the other that are not egret's rotated names) a file whose first line does
    /// not continue the previous file starts a chain of its own, with a note.
    strict: bool,
}

/// Groups the arguments into rotated sets, each in rotation order; the other files, in the
/// order given, form lenient sets.
fn sets(paths: &[PathBuf]) -> Vec<Set> {
    /// (live file, members with their sort key: 0 rotated / 1 live, suffix).
    type Group = (PathBuf, Vec<(u8, String, Member)>);
    let mut groups: Vec<Group> = Vec::new();
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (key, order) = match rotate::split_rotated(&name) {
            Some((base, suffix)) => (path.with_file_name(base), (0u8, suffix.to_owned())),
            None => (path.clone(), (1u8, String::new())),
        };
        let member = Member {
            path: path.clone(),
            shown: path.display().to_string(),
            name,
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push((order.0, order.1, member)),
            None => groups.push((key, vec![(order.0, order.1, member)])),
        }
    }
    let mut sets: Vec<Set> = Vec::new();
    for (_, mut members) in groups {
        let rotated = members.iter().any(|(kind, _, _)| *kind == 0);
        members.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let members: Vec<Member> = members.into_iter().map(|(_, _, m)| m).collect();
        match sets.last_mut() {
            Some(last) if !rotated && !last.strict => last.members.extend(members),
            _ => sets.push(Set {
                members,
                strict: rotated,
            }),
        }
    }
    sets
}

/// A line that checked out, remembered to explain later breaks.
#[derive(Clone)]
struct Seen {
    file: String,
    line: u64,
    hash: ChainHash,
}

/// The state of one set's check.
struct Chain {
    /// The last line that checked out.
    last: Option<Seen>,
    /// Its `event.sequence` (None after a restart: sequences start again).
    last_sequence: Option<u64>,
    window: VecDeque<Seen>,
    /// Every file must continue the one before it (a rotated set).
    strict: bool,
}

impl Chain {
    fn accept(&mut self, seen: Seen, sequence: Option<u64>) {
        if self.window.len() == WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(seen.clone());
        self.last = Some(seen);
        self.last_sequence = sequence;
    }

    fn find(&self, hash: &ChainHash) -> Option<&Seen> {
        self.window.iter().rev().find(|s| s.hash == *hash)
    }
}

/// Opens a file to check.
pub type Open<'o> = dyn FnMut(&Path) -> io::Result<Box<dyn BufRead + 'o>> + 'o;

/// Checks `paths` (see the module documentation).
pub fn verify(paths: &[PathBuf]) -> Result<Report, VerifyError> {
    verify_with(paths, &mut |path| {
        let file = File::open(path)?;
        Ok(Box::new(BufReader::with_capacity(1 << 20, file)))
    })
}

/// [`verify`] with the files' contents from `open`: everything `egret verify` does with what
/// it reads, fuzzed from bytes (`fuzz/fuzz_targets/verify_lines.rs`).
///
/// # Errors
/// No file, or a file that cannot be opened or read.
pub fn verify_with(paths: &[PathBuf], open: &mut Open<'_>) -> Result<Report, VerifyError> {
    if paths.is_empty() {
        return Err(VerifyError::NoFiles);
    }
    let mut report = Report::default();
    for set in sets(paths) {
        let mut chain = Chain {
            last: None,
            last_sequence: None,
            window: VecDeque::new(),
            strict: set.strict,
        };
        let count = set.members.len();
        for (index, member) in set.members.iter().enumerate() {
            let previous = index.checked_sub(1).and_then(|i| set.members.get(i));
            let is_last = index + 1 == count;
            let problem = FileCheck {
                member,
                previous,
                is_last,
                chain: &mut chain,
                report: &mut report,
            }
            .run(open)?;
            if let Some(problem) = problem {
                report.problem = Some(problem);
                return Ok(report);
            }
        }
        if let (Some(last), Some(member)) = (&chain.last, set.members.last()) {
            report.last.push((member.shown.clone(), last.hash));
        }
    }
    Ok(report)
}

fn problem(member: &Member, line: u64, what: impl Into<String>) -> Option<Problem> {
    Some(Problem {
        file: member.shown.clone(),
        line,
        what: what.into(),
    })
}

/// One file being checked: where it is in its set, the set's chain so far and the report.
struct FileCheck<'a> {
    member: &'a Member,
    /// The file before it in its set, if any.
    previous: Option<&'a Member>,
    /// The newest file of its set: its last line may still be being written.
    is_last: bool,
    chain: &'a mut Chain,
    report: &'a mut Report,
}

impl FileCheck<'_> {
    /// Checks every line of the file, up to the first that breaks the chain.
    fn run(mut self, open: &mut Open<'_>) -> Result<Option<Problem>, VerifyError> {
        let member = self.member;
        let read_err = |source| VerifyError::Read {
            path: member.shown.clone(),
            source,
        };
        let mut reader = Reader {
            inner: open(&member.path).map_err(read_err)?,
            number: 0,
            buf: Vec::new(),
        };
        self.report.files.push(FileReport {
            file: member.shown.clone(),
            lines: 0,
        });
        loop {
            let bytes = match reader.next().map_err(read_err)? {
                Next::End => break,
                Next::Unterminated(len) => return Ok(self.unterminated(reader.number, len)),
                Next::Line(bytes) => bytes,
            };
            let line = parse_line(reader.number, &bytes);
            if let Some(problem) = self.check_line(&line, &mut reader) {
                return Ok(Some(problem));
            }
        }
        if reader.number == 0 {
            self.report.notes.push(format!("{}: empty", member.shown));
        }
        Ok(None)
    }

    /// The file ends with `len` bytes and no newline, on line `number`: a line being written
    /// in the newest file of a set (a note), damage in any other.
    fn unterminated(&mut self, number: u64, len: usize) -> Option<Problem> {
        if self.is_last {
            self.report.notes.push(format!(
                "{}:{number}: {len} bytes without a newline at the end, not checked (a line being written, or the rest of one a crash cut short: egret removes it when it starts)",
                self.member.shown
            ));
            return None;
        }
        problem(
            self.member,
            number,
            format!("{len} bytes without a newline at the end of a file that is not the newest of its set: the end of the file was cut or damaged"),
        )
    }

    /// Checks one line: accepts it, or says why it breaks the chain (reading on in `reader`
    /// to explain it).
    fn check_line(&mut self, line: &Line, reader: &mut Reader) -> Option<Problem> {
        let n = line.number;
        let (stored, content) = match &line.stored {
            Ok(pair) => pair,
            Err(what) => return problem(self.member, n, what.clone()),
        };
        let anchor = match self.anchor(line) {
            Ok(anchor) => anchor,
            Err(what) => return problem(self.member, n, what),
        };
        if let Some((from, _)) = &line.output {
            if n > 1 && *from != anchor {
                return problem(
                    self.member,
                    n,
                    format!(
                        "egret's output line says it continues from {from}, but the line before it ends with {anchor}"
                    ),
                );
            }
        }
        if anchor.next(content) != *stored {
            let what = explain(line, &anchor, self.chain, reader);
            return problem(self.member, n, what);
        }
        self.accept(line, *stored);
        None
    }

    /// The chain value `line` must follow: the line before it, or for a file's first line,
    /// the one its output line says it continues from. `Err` says why there is none.
    fn anchor(&mut self, line: &Line) -> Result<ChainHash, String> {
        if line.number != 1 {
            return Ok(match &self.chain.last {
                Some(last) => last.hash,
                // The file's first line broke; never reached.
                None => ChainHash::GENESIS,
            });
        }
        let Some((from, from_file)) = &line.output else {
            let what = if self.previous.is_some() || self.chain.last.is_some() {
                "this file does not start with egret's output line: lines were removed from its start"
            } else {
                "the chain cannot be checked from here: a file egret wrote starts with its output line (lines removed from the start?)"
            };
            return Err(what.to_owned());
        };
        self.continues(from, from_file.as_deref())
    }

    /// Where the file's output line says it continues from (`from`, the end of `from_file`):
    /// in a rotated set it must be the end of the previous file; files given one after the
    /// other may start a chain of their own; a set's first file starts where it says (a note
    /// either way).
    fn continues(
        &mut self,
        from: &ChainHash,
        from_file: Option<&str>,
    ) -> Result<ChainHash, String> {
        match (&self.chain.last, self.previous) {
            (Some(last), Some(prev_member)) if !self.chain.strict && *from != last.hash => {
                self.report.notes.push(format!(
                    "{}:1: does not continue {} (it continues from {}): checked as a chain of its own",
                    self.member.shown,
                    prev_member.shown,
                    from_file.unwrap_or("a new chain")
                ));
                self.report
                    .last
                    .push((prev_member.shown.clone(), last.hash));
                self.chain.last_sequence = None;
                Ok(*from)
            }
            (Some(last), Some(prev_member)) => {
                if *from != last.hash {
                    return Err(boundary_break(
                        self.chain,
                        last,
                        prev_member,
                        from,
                        from_file,
                    ));
                }
                Ok(*from)
            }
            _ => {
                self.report.notes.push(if from.is_genesis() {
                    format!("{}:1: a chain starts here", self.member.shown)
                } else {
                    format!(
                        "{}:1: continues from {} (not given), ending with egret.chain {from}",
                        self.member.shown,
                        from_file.unwrap_or("an unnamed file")
                    )
                });
                Ok(*from)
            }
        }
    }

    /// Counts a line that checked out (chain value `stored`) and makes it the one the next
    /// line must follow.
    fn accept(&mut self, line: &Line, stored: ChainHash) {
        if line.output.is_some() {
            self.report.starts += 1;
        }
        self.report.lines += 1;
        if let Some(file) = self.report.files.last_mut() {
            file.lines += 1;
        }
        // A restart begins a new run of event.sequence; a rotation does not.
        let sequence = match (&line.output, line.rotation) {
            (None, _) => line.sequence,
            (Some(_), true) => self.chain.last_sequence,
            (Some(_), false) => None,
        };
        self.chain.accept(
            Seen {
                file: self.member.shown.clone(),
                line: line.number,
                hash: stored,
            },
            sequence,
        );
    }
}

/// Why the first line of a file does not continue the previous file.
fn boundary_break(
    chain: &Chain,
    last: &Seen,
    prev_member: &Member,
    from: &ChainHash,
    from_file: Option<&str>,
) -> String {
    if let Some(file) = from_file {
        if file != prev_member.name {
            if let Some(seen) = chain.find(from) {
                return format!(
                    "continues from {file}, which ends with line {}:{}: {} lines after it were removed (or a file renamed)",
                    seen.file,
                    seen.line,
                    last.line.saturating_sub(seen.line)
                );
            }
            return format!(
                "continues from {file}, which is not among the files given: a file of the set is missing between {} and this one",
                prev_member.name
            );
        }
    }
    match chain.find(from) {
        Some(seen) => format!(
            "continues from {}:{}, but {} lines follow that line there: they do not belong (inserted at the end of {})",
            seen.file,
            seen.line,
            last.line.saturating_sub(seen.line),
            seen.file
        ),
        None => format!(
            "continues from egret.chain {from}, but {} ends at line {} with {}: lines were removed from the end of {}",
            last.file, last.line, last.hash, last.file
        ),
    }
}

/// Says what a line that does not fit tells: reordered, inserted, removed or edited.
fn explain(line: &Line, anchor: &ChainHash, chain: &Chain, reader: &mut Reader) -> String {
    let n = line.number;
    let Ok((stored, content)) = &line.stored else {
        return "damaged".to_owned();
    };
    // The lines after it, as far as they parse.
    let mut ahead: Vec<(u64, ChainHash, Vec<u8>)> = Vec::new();
    while ahead.len() < LOOKAHEAD {
        match reader.next() {
            Ok(Next::Line(bytes)) => {
                if let Ok((hash, content)) = chain::content(&bytes) {
                    ahead.push((reader.number, hash, content));
                }
            }
            _ => break,
        }
    }
    // Belongs after a later line: reordered.
    if let Some((j, _, _)) = ahead
        .iter()
        .find(|(_, hash, _)| hash.next(content) == *stored)
    {
        return format!("reordered: this line belongs right after line {j}");
    }
    // A later line follows the last good one: the lines in between were inserted.
    if let Some((j, _, _)) = ahead.iter().find(|(_, hash, c)| anchor.next(c) == *hash) {
        let j = *j;
        return if j == n + 1 {
            format!(
                "inserted: this line is not part of the chain (line {j} follows line {})",
                n - 1
            )
        } else {
            format!(
                "inserted: lines {n} to {} are not part of the chain (line {j} follows line {})",
                j - 1,
                n - 1
            )
        };
    }
    // It follows an earlier line: the lines since were inserted, hashed to fit.
    if let Some(seen) = chain
        .window
        .iter()
        .rev()
        .skip(1)
        .find(|s| s.hash.next(content) == *stored)
    {
        return format!(
            "follows {}:{}, so the lines after that one up to here were inserted (with chain values computed to fit)",
            seen.file, seen.line
        );
    }
    let generic = "edited, or lines before it removed: the line does not match its egret.chain";
    let (Some(before), Some(now)) = (chain.last_sequence, line.sequence) else {
        return generic.to_owned();
    };
    match now.checked_sub(before) {
        Some(1) => "edited: the line's content does not match its egret.chain".to_owned(),
        Some(gap) if gap > 1 => format!(
            "removed: {} line(s) before this one are missing (event.sequence jumps from {before} to {now})",
            gap - 1
        ),
        _ => generic.to_owned(),
    }
}

#[cfg(test)]
mod tests;
