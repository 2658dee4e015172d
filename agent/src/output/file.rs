//! An output file: whole chained lines, a repaired tail on start, rotation and retention.
//!
//! Lines are kept in memory (`pending`) until written out: when 256 KiB have gathered, and
//! at every [`ChainedFile::sync`], which also calls `fdatasync`. A write that fails part way
//! (a full disk, an I/O error) keeps the longest run of whole lines that made it and cuts the
//! rest back off the file, so no part of a line is left behind and every line that fitted is
//! out of memory; the rest stay pending and are tried again with back-off (from 50 ms up to a
//! second), so writing resumes as soon as any space returns. Lines are refused only once
//! 16 MiB wait.

use std::{
    borrow::Cow,
    fs::{File, OpenOptions},
    io::{self, Write as _},
    ops::Range,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use super::{
    chain::{self, ChainHash},
    repair, rotate, OutputError,
};
use crate::schema::{Document, Egret, Event, Name, Output, Previous};

/// Written out once this much is pending.
const WRITE_AT: usize = 256 << 10;
/// Lines are refused once this much is pending (the file cannot be written).
const MAX_PENDING: usize = 16 << 20;
/// Upper bound on what the chain member adds to a line (with its newline).
const CHAIN_OVERHEAD: u64 = 86;
/// After a failed rotation, the next attempt waits this long.
const ROTATE_BACKOFF: Duration = Duration::from_secs(10);
/// After a failed write-out, the next one waits this long, doubling up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// At shutdown, how long egret keeps trying to write what is still pending.
pub const SHUTDOWN_RETRY: Duration = Duration::from_secs(5);

/// Rotation and retention of an output file (`--output-max-bytes` and friends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOptions {
    /// Rotate before a line would make the file larger than this.
    pub max_bytes: Option<u64>,
    /// Rotate once the file's first line is this old.
    pub max_age: Option<Duration>,
    /// Rotated files kept (the oldest beyond are deleted).
    pub retain: usize,
    /// Rotated files closed longer ago than this are deleted.
    pub retain_age: Option<Duration>,
}

impl Default for FileOptions {
    fn default() -> Self {
        Self {
            max_bytes: None,
            max_age: None,
            retain: 10,
            retain_age: None,
        }
    }
}

/// `event.dataset` of the lines egret writes about the file itself.
pub const OUTPUT_DATASET: &str = "egret.output";

/// What the chain of a file being opened continues from.
struct Predecessor {
    /// The file whose last line it is (`None`: the chain starts here).
    file: Option<String>,
    hash: ChainHash,
}

/// A file of chained lines.
pub struct ChainedFile {
    path: PathBuf,
    file: File,
    options: FileOptions,
    host: String,
    /// Bytes in the file as of the last write-out.
    size: u64,
    /// Whole lines, chained, not written yet.
    pending: Vec<u8>,
    /// Written since the last fdatasync.
    unsynced: bool,
    /// Chain value of the last line accepted.
    last: ChainHash,
    /// When the file's first line was written (for `max_age`).
    born: SystemTime,
    /// The file holds lines other than egret's own first line.
    has_lines: bool,
    rotate_not_before: Option<Instant>,
    /// After a failed write-out: when to try again, and the wait after that.
    retry: Option<(Instant, Duration)>,
    /// Failed write-outs and rotations, for rate-limited logging.
    failures: u64,
    /// Tests only: the file system is full beyond this many bytes of the file.
    #[cfg(test)]
    pub(crate) space: Option<u64>,
}

fn io_err(path: &Path, source: io::Error) -> OutputError {
    OutputError::Write {
        target: path.display().to_string(),
        source,
    }
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn open_append(path: &Path, create_new: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).append(true).mode(0o640);
    if create_new {
        options.create_new(true);
    } else {
        options.create(true);
    }
    options.open(path)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// A short, printable preview of bytes that were cut.
fn preview(bytes: &[u8]) -> String {
    let shown: String = String::from_utf8_lossy(bytes.get(..120).unwrap_or(bytes))
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    if bytes.len() > 120 {
        format!("{shown}…")
    } else {
        shown
    }
}

/// When a file's first line says it was written (its `@timestamp`).
fn first_line_time(file: &File) -> Option<SystemTime> {
    let line = repair::first_line(file).ok()??;
    let doc: serde_json::Value = serde_json::from_slice(&line).ok()?;
    let ts = doc.get("@timestamp")?.as_str()?;
    let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
    Some(SystemTime::from(t.with_timezone(&chrono::Utc)))
}

/// The chain value a file ends with, reading only (a damaged tail is skipped).
fn last_hash(path: &Path) -> io::Result<Option<ChainHash>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let tail = repair::scan(&file, len)?;
    if tail.cut_bytes > 0 {
        log::warn!(
            "{}: {} bytes after its last intact line; the chain continues from that line",
            path.display(),
            tail.cut_bytes
        );
    }
    Ok(tail.last_line.as_deref().and_then(chain::stored))
}

impl ChainedFile {
    /// Opens (creates) `path` for appending: cuts a torn or damaged tail, finds the chain
    /// value to continue from (the file's last line, else the newest rotated file's), and
    /// appends (does not write yet) the first line of this run.
    pub fn open(path: &Path, options: &FileOptions, host: &str) -> Result<Self, OutputError> {
        let open_err = |source| OutputError::Open {
            path: path.display().to_string(),
            source,
        };
        let file = open_append(path, false).map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        let tail = repair::scan(&file, len).map_err(open_err)?;
        if tail.cut_bytes > 0 {
            let cut = read_tail(&file, tail.keep, len);
            log::warn!(
                "{}: cutting {} bytes ({} complete lines and an unterminated rest) after the last intact line, left by a crash or power cut: {:?}",
                path.display(),
                tail.cut_bytes,
                tail.cut_lines,
                preview(&cut)
            );
            file.set_len(tail.keep).map_err(open_err)?;
            file.sync_data().map_err(open_err)?;
        }
        let name = name_of(path);
        let predecessor = if let Some(line) = &tail.last_line {
            match chain::stored(line) {
                Some(hash) if !tail.last_line_damaged => Predecessor {
                    file: Some(name.clone()),
                    hash,
                },
                _ => {
                    log::warn!(
                        "{}: its last line carries no egret.chain (written before chaining, or not by egret): a new chain starts after it",
                        path.display()
                    );
                    Predecessor {
                        file: None,
                        hash: ChainHash::GENESIS,
                    }
                }
            }
        } else if tail.keep > 0 {
            log::warn!(
                "{}: ends with a line too long to be egret's: a new chain starts after it",
                path.display()
            );
            Predecessor {
                file: None,
                hash: ChainHash::GENESIS,
            }
        } else {
            newest_rotated(path)
        };
        let born = if tail.keep > 0 {
            first_line_time(&file).unwrap_or_else(SystemTime::now)
        } else {
            SystemTime::now()
        };
        let mut me = Self {
            path: path.to_path_buf(),
            file,
            options: options.clone(),
            host: host.to_owned(),
            size: tail.keep,
            pending: Vec::with_capacity(WRITE_AT * 2),
            unsynced: false,
            last: predecessor.hash,
            born,
            has_lines: tail.keep > 0,
            rotate_not_before: None,
            retry: None,
            failures: 0,
            #[cfg(test)]
            space: None,
        };
        let repaired = (tail.cut_bytes > 0).then_some((tail.cut_bytes, tail.cut_lines));
        let message = match (&predecessor.file, repaired) {
            (None, None) => "egret started writing; a new chain starts here".to_owned(),
            (Some(file), None) => format!("egret started writing; the chain continues from the last line of {file}"),
            (None, Some((bytes, _))) => format!(
                "egret started writing after cutting {bytes} bytes left by a crash or power cut; a new chain starts here"
            ),
            (Some(file), Some((bytes, _))) => format!(
                "egret started writing after cutting {bytes} bytes left by a crash or power cut; the chain continues from the last intact line of {file}"
            ),
        };
        me.push_output_line("start", &message, &predecessor, repaired)?;
        if options.max_bytes.is_some() || options.max_age.is_some() {
            me.prune();
        }
        Ok(me)
    }

    fn push_output_line(
        &mut self,
        action: &str,
        message: &str,
        predecessor: &Predecessor,
        repaired: Option<(u64, u64)>,
    ) -> Result<(), OutputError> {
        // The line egret writes at the top of every file it opens and wherever it starts
        // writing again: it names what the chain continues from and what was repaired.
        let doc = Document {
            timestamp: Cow::Owned(
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            ),
            event: Event {
                kind: Cow::Borrowed("event"),
                action: Cow::Borrowed(action),
                module: Cow::Borrowed("egret"),
                dataset: Cow::Borrowed(OUTPUT_DATASET),
                ..Event::default()
            },
            message: Some(Cow::Borrowed(message)),
            host: Name::of(&self.host),
            egret: Egret {
                output: Some(Output {
                    previous: Previous {
                        file: predecessor.file.as_deref().map(Cow::Borrowed),
                        hash: Cow::Borrowed(predecessor.hash.as_str()),
                    },
                    repaired_bytes: repaired.map(|(bytes, _)| bytes),
                    repaired_lines: repaired.map(|(_, lines)| lines),
                }),
                ..Egret::default()
            },
            ..Document::default()
        };
        let mut bytes = Vec::new();
        let shape = chain::serialize(&doc, &mut bytes).map_err(|e| io_err(&self.path, e.into()))?;
        self.push(&bytes, shape)?;
        Ok(())
    }

    /// Chains `doc` onto the pending lines (`shape` from [`chain::serialize`], else the
    /// line is scanned).
    fn push(&mut self, doc: &[u8], shape: Option<chain::Shape>) -> Result<(), OutputError> {
        let start = self.pending.len();
        self.pending.extend_from_slice(doc);
        self.chain_pending(start, shape)
    }

    /// Chains the line at the end of the pending lines, from `start` on (taken off again if
    /// it is not a JSON object).
    fn chain_pending(
        &mut self,
        start: usize,
        shape: Option<chain::Shape>,
    ) -> Result<(), OutputError> {
        let hash = chain::chain_in_place(&mut self.pending, start, &self.last, shape).ok_or_else(
            || {
                io_err(
                    &self.path,
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a line that is not a JSON object",
                    ),
                )
            },
        )?;
        self.last = hash;
        Ok(())
    }

    /// Appends one line (a compact JSON object, no newline; `shape` as
    /// [`chain::serialize`] returned it, or `None` to scan the line), rotating first if it
    /// is due. Returns the range of [`Self::pending`] holding what was appended: the line,
    /// after the first line of a new file if it rotated.
    pub fn append(
        &mut self,
        doc: &[u8],
        shape: Option<chain::Shape>,
    ) -> Result<Range<usize>, OutputError> {
        self.append_rendered(|pending| {
            pending.extend_from_slice(doc);
            Ok(shape)
        })
    }

    /// [`Self::append`] for a line `render` appends to the pending lines itself, returning
    /// its shape (counted from where it starts) when it knows it: the line is chained where
    /// it lies, not copied.
    pub fn append_rendered(
        &mut self,
        render: impl FnOnce(&mut Vec<u8>) -> Result<Option<chain::Shape>, serde_json::Error>,
    ) -> Result<Range<usize>, OutputError> {
        if self.pending.len() >= MAX_PENDING {
            // One more try (when the back-off allows) before refusing the line.
            if self.retry_due() {
                if let Err(err) = self.write_out() {
                    self.failed(&err);
                }
            }
            if self.pending.len() >= MAX_PENDING {
                return Err(OutputError::Backlog {
                    target: self.path.display().to_string(),
                    bytes: self.pending.len(),
                });
            }
        }
        let mut start = self.pending.len();
        let shape = match render(&mut self.pending) {
            Ok(shape) => shape,
            Err(err) => {
                self.pending.truncate(start);
                return Err(io_err(&self.path, err.into()));
            }
        };
        let rotated = self.rotation_due((self.pending.len() - start) as u64) && {
            // Rare: the line steps aside while the file rotates.
            let line = self.pending.split_off(start);
            let rotated = match self.rotate() {
                Ok(()) => true,
                Err(err) => {
                    self.rotate_not_before = Some(Instant::now() + ROTATE_BACKOFF);
                    self.failed(&err);
                    false
                }
            };
            start = self.pending.len();
            self.pending.extend_from_slice(&line);
            rotated
        };
        let from = if rotated { 0 } else { start };
        self.chain_pending(start, shape)?;
        self.has_lines = true;
        Ok(from..self.pending.len())
    }

    /// Lines appended but not written out yet.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    fn rotation_due(&self, line_len: u64) -> bool {
        if !self.has_lines || self.rotate_not_before.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        let size = self.size + self.pending.len() as u64 + line_len + CHAIN_OVERHEAD;
        self.options.max_bytes.is_some_and(|max| size > max)
            || self.options.max_age.is_some_and(|age| {
                SystemTime::now()
                    .duration_since(self.born)
                    .is_ok_and(|lived| lived >= age)
            })
    }

    fn failed(&mut self, err: &OutputError) {
        self.failures += 1;
        if self.failures.is_power_of_two() {
            log::error!("{err} ({} output failures so far)", self.failures);
        }
    }

    /// Closes the file under its rotated name and starts a new one whose first line names
    /// it and its last chain value. Nothing is lost if this fails: writing goes on in the
    /// current file.
    fn rotate(&mut self) -> Result<(), OutputError> {
        self.sync()?;
        let rot_err = |source| OutputError::Rotate {
            path: self.path.display().to_string(),
            source,
        };
        let now = SystemTime::now();
        let target = rotate::next_path(&self.path, now).map_err(rot_err)?;
        if target.symlink_metadata().is_ok() {
            return Err(rot_err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", target.display()),
            )));
        }
        std::fs::rename(&self.path, &target).map_err(rot_err)?;
        let file = match open_append(&self.path, true) {
            Ok(file) => file,
            Err(err) => {
                // Put the old file back and keep writing to it.
                if let Err(back) = std::fs::rename(&target, &self.path) {
                    log::error!(
                        "{}: cannot create a new file ({err}) nor rename {} back ({back}): writing on into {}",
                        self.path.display(),
                        target.display(),
                        target.display()
                    );
                }
                return Err(rot_err(err));
            }
        };
        if let Err(err) = sync_dir(&self.path) {
            log::warn!("{}: syncing its directory: {err}", self.path.display());
        }
        self.file = file;
        self.size = 0;
        self.born = now;
        self.has_lines = false;
        let rotated = name_of(&target);
        log::info!("{}: rotated to {}", self.path.display(), target.display());
        let predecessor = Predecessor {
            file: Some(rotated.clone()),
            hash: self.last,
        };
        let message = format!(
            "egret rotated the output; the chain continues from the last line of {rotated}"
        );
        self.push_output_line("rotate", &message, &predecessor, None)?;
        self.prune();
        Ok(())
    }

    /// Deletes the rotated files retention no longer keeps.
    fn prune(&mut self) {
        let rotated = match rotate::list(&self.path) {
            Ok(rotated) => rotated,
            Err(err) => {
                log::warn!("{}: listing rotated files: {err}", self.path.display());
                return;
            }
        };
        for old in rotate::expired(
            &rotated,
            self.options.retain,
            self.options.retain_age,
            SystemTime::now(),
        ) {
            match std::fs::remove_file(&old.path) {
                Ok(()) => log::info!("{}: deleted (retention)", old.path.display()),
                Err(err) => log::warn!("{}: deleting (retention): {err}", old.path.display()),
            }
        }
    }

    /// Writes the pending lines out (no sync). When the write fails part way, the longest
    /// run of whole lines that made it stays in the file and leaves `pending`; the rest of
    /// what was written is cut back off, and the error is returned (with the back-off set).
    pub fn write_out(&mut self) -> Result<(), OutputError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let before = self
            .file
            .metadata()
            .map_err(|e| io_err(&self.path, e))?
            .len();
        let (written, result) = self.write_some(before);
        let whole = whole_lines(self.pending.get(..written).unwrap_or_default());
        if whole < written {
            if let Err(trunc) = self.file.set_len(before + whole as u64) {
                log::error!(
                    "{}: cannot cut back part of a line after a failed write ({trunc}): it stays until egret restarts",
                    self.path.display()
                );
            }
        }
        if whole > 0 {
            self.size = before + whole as u64;
            self.pending.drain(..whole);
            self.unsynced = true;
        }
        match result {
            Ok(()) => {
                // A rotation put off because its flush failed may go ahead now.
                if self.retry.take().is_some() {
                    self.rotate_not_before = None;
                }
                Ok(())
            }
            Err(err) => {
                let wait = self.retry.map_or(RETRY_FIRST, |(_, wait)| wait);
                self.retry = Some((Instant::now() + wait, (wait * 2).min(RETRY_MAX)));
                Err(io_err(&self.path, err))
            }
        }
    }

    /// Writes as much of `pending` as the file takes; the bytes written and how it ended.
    fn write_some(&mut self, before: u64) -> (usize, io::Result<()>) {
        let limit = self.space_left(before);
        let mut written = 0;
        while written < self.pending.len() {
            let end = limit.map_or(self.pending.len(), |l| l.min(self.pending.len()));
            let chunk = self.pending.get(written..end).unwrap_or_default();
            if chunk.is_empty() {
                return (written, Err(io::Error::from_raw_os_error(libc::ENOSPC)));
            }
            match self.file.write(chunk) {
                Ok(0) => return (written, Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return (written, Err(err)),
            }
        }
        (written, Ok(()))
    }

    #[cfg(test)]
    fn space_left(&self, before: u64) -> Option<usize> {
        self.space
            .map(|space| usize::try_from(space.saturating_sub(before)).unwrap_or(usize::MAX))
    }

    #[cfg(not(test))]
    #[expect(clippy::unused_self, reason = "the test build's twin reads a field")]
    fn space_left(&self, _before: u64) -> Option<usize> {
        None
    }

    /// A write-out may be tried now (no back-off running).
    fn retry_due(&self) -> bool {
        self.retry.is_none_or(|(at, _)| Instant::now() >= at)
    }

    /// Writes out when enough is pending (and no back-off runs); a failure is logged and
    /// retried later.
    pub fn write_out_if_full(&mut self) {
        if self.pending.len() >= WRITE_AT && self.retry_due() {
            if let Err(err) = self.write_out() {
                self.failed(&err);
            }
        }
    }

    /// Bytes of lines waiting to be written.
    pub fn backlog(&self) -> usize {
        self.pending.len()
    }

    /// Writes everything pending and `fdatasync`s: from here on these lines are
    /// acknowledged (they survive a crash or power cut).
    pub fn sync(&mut self) -> Result<(), OutputError> {
        // What a failed write-out did write is synced all the same.
        let written = self.write_out();
        if self.unsynced {
            self.file.sync_data().map_err(|e| io_err(&self.path, e))?;
            self.unsynced = false;
        }
        written
    }

    /// The chain value of the last line accepted.
    pub fn last_hash(&self) -> ChainHash {
        self.last
    }
}

impl Drop for ChainedFile {
    /// At shutdown, what is pending gets [`SHUTDOWN_RETRY`] to find room (a write-out every
    /// back-off step); what still does not fit is lost, and the log says how much.
    fn drop(&mut self) {
        let deadline = Instant::now() + SHUTDOWN_RETRY;
        loop {
            let err = match self.sync() {
                Ok(()) => return,
                Err(err) => err,
            };
            let wait = self.retry.map_or(RETRY_FIRST, |(at, _)| {
                at.saturating_duration_since(Instant::now())
            });
            if Instant::now() + wait >= deadline {
                let lines = self.pending.iter().filter(|&&b| b == b'\n').count();
                log::error!(
                    "{err}: at shutdown, after {SHUTDOWN_RETRY:?} of retries, {lines} lines ({} bytes) could not be written and are lost",
                    self.pending.len()
                );
                return;
            }
            std::thread::sleep(wait);
        }
    }
}

/// The length of the longest prefix of `bytes` made of whole lines.
fn whole_lines(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

fn read_tail(file: &File, from: u64, to: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt as _;
    let len = usize::try_from((to - from).min(4096)).unwrap_or(0);
    let mut buf = vec![0u8; len];
    match file.read_exact_at(&mut buf, from) {
        Ok(()) => buf,
        Err(_) => Vec::new(),
    }
}

/// What an empty live file continues from: the newest rotated file's last line.
fn newest_rotated(path: &Path) -> Predecessor {
    let newest = match rotate::list(path) {
        Ok(list) => list.into_iter().last(),
        Err(err) => {
            log::warn!("{}: listing rotated files: {err}", path.display());
            None
        }
    };
    let Some(newest) = newest else {
        return Predecessor {
            file: None,
            hash: ChainHash::GENESIS,
        };
    };
    match last_hash(&newest.path) {
        Ok(Some(hash)) => Predecessor {
            file: Some(name_of(&newest.path)),
            hash,
        },
        Ok(None) => {
            log::warn!(
                "{}: its last line carries no egret.chain: a new chain starts",
                newest.path.display()
            );
            Predecessor {
                file: None,
                hash: ChainHash::GENESIS,
            }
        }
        Err(err) => {
            log::warn!(
                "{}: reading its last line: {err}: a new chain starts",
                newest.path.display()
            );
            Predecessor {
                file: None,
                hash: ChainHash::GENESIS,
            }
        }
    }
}
