//! Where lines go: stdout, a file, and optionally the local syslog daemon.
//!
//! - stdout (`-`), or a path that is not a regular file (a FIFO, `/dev/null`): buffered and
//!   flushed at least every second and at shutdown, lines as they are.
//! - a regular file ([`file::ChainedFile`]): every line carries `egret.chain`
//!   ([`chain`]), a torn tail left by a crash is cut on start ([`repair`]), the file rotates
//!   by size and age with retention ([`rotate`]), and every flush ends with `fdatasync`.
//! - syslog ([`syslog`]): every line also goes to the local daemon as an RFC 5424 message.
//! - journal ([`journal`]): alert lines also go to journald, natively, with structured fields
//!   (held by the emit stage, which alone knows a line is an alert).
//!
//! `egret verify` ([`verify`]) checks a file's chain. docs/output.md has the whole story.

pub mod chain;
pub mod file;
pub mod journal;
pub mod repair;
pub mod rotate;
pub mod syslog;
pub mod verify;

use std::{
    fs::OpenOptions,
    io::{self, BufWriter, Write},
    path::Path,
};

use serde::Serialize;

pub use file::{FileOptions, OUTPUT_DATASET};

/// How the main output's lines are written (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// JSON Lines: one ECS document per line (docs/events.md).
    Json,
    /// One aligned line per event for a person; stdout only (docs/output.md).
    Text,
}
pub use syslog::SyslogConfig;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("opening output {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("writing to {target}: {source}")]
    Write { target: String, source: io::Error },
    #[error("journal socket {path}: {source} (--journal needs systemd-journald)")]
    Journal { path: String, source: io::Error },
    #[error("rotating {path}: {source}")]
    Rotate { path: String, source: io::Error },
    #[error("{target} cannot be written and {bytes} bytes of lines wait: line refused")]
    Backlog { target: String, bytes: usize },
}

enum Target {
    Stdout(BufWriter<io::Stdout>),
    /// A path that is not a regular file: no chain, no repair, no rotation.
    Stream(BufWriter<std::fs::File>),
    File(Box<file::ChainedFile>),
}

/// A line-oriented JSON sink.
pub struct Sink {
    target_name: String,
    target: Target,
    syslog: Option<syslog::Syslog>,
    /// The line being written, serialised.
    line: Vec<u8>,
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Sink {
    /// `-` is stdout; a regular file (created if missing) is appended to as described in
    /// the module documentation, with `options`; any other path is written as a stream.
    /// With `syslog`, every line also goes there.
    pub fn open(
        path: &str,
        options: &FileOptions,
        syslog: Option<&SyslogConfig>,
    ) -> Result<Self, OutputError> {
        let host = host_name();
        let syslog = syslog
            .map(|config| syslog::Syslog::open(config, &host))
            .transpose()?;
        let regular = std::fs::metadata(path).map_or(true, |m| m.is_file());
        let target = if path == "-" {
            Target::Stdout(BufWriter::with_capacity(256 * 1024, io::stdout()))
        } else if !regular {
            if options.max_bytes.is_some() || options.max_age.is_some() {
                log::warn!("{path} is not a regular file: it is not rotated, repaired or chained");
            }
            let file = OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(|source| OutputError::Open {
                    path: path.to_owned(),
                    source,
                })?;
            Target::Stream(BufWriter::with_capacity(256 * 1024, file))
        } else {
            Target::File(Box::new(file::ChainedFile::open(
                Path::new(path),
                options,
                &host,
            )?))
        };
        let mut sink = Self {
            target_name: if path == "-" { "stdout" } else { path }.to_owned(),
            target,
            syslog,
            line: Vec::with_capacity(4096),
        };
        if let Target::File(file) = &mut sink.target {
            // The file's first line of this run goes to syslog too, and is synced at once
            // (it records what the start repaired).
            if let Some(syslog) = sink.syslog.as_mut() {
                send_lines(syslog, file.pending());
            }
            file.sync()?;
        }
        Ok(sink)
    }

    /// Writes one JSON object and a newline. An error means the line is lost (and was not
    /// sent to syslog either); `Ok` means it is on its way (see [`Self::flush`]).
    pub fn write_line(&mut self, doc: &impl Serialize) -> Result<(), OutputError> {
        self.write_rendered(|line| chain::serialize(doc, line))
    }

    /// [`Self::write_line`] for a line `render` appends to the (empty) buffer it is given,
    /// returning its shape when it knows it (else the chain finds it in the bytes).
    pub fn write_rendered(
        &mut self,
        render: impl FnOnce(&mut Vec<u8>) -> Result<Option<chain::Shape>, serde_json::Error>,
    ) -> Result<(), OutputError> {
        let Self {
            target_name,
            target,
            syslog,
            line,
        } = self;
        let out: &mut dyn Write = match target {
            Target::File(file) => {
                // Rendered straight into the lines waiting to be written.
                let range = file.append_rendered(render)?;
                if let Some(syslog) = syslog.as_mut() {
                    send_lines(syslog, file.pending().get(range).unwrap_or_default());
                }
                file.write_out_if_full();
                return Ok(());
            }
            Target::Stdout(out) => out,
            Target::Stream(out) => out,
        };
        line.clear();
        render(line).map_err(|err| OutputError::Write {
            target: target_name.clone(),
            source: err.into(),
        })?;
        write_plain(out, line, target_name)?;
        if let Some(syslog) = syslog.as_mut() {
            syslog.send(line);
        }
        Ok(())
    }

    /// A line for a person (`--format text`): on stdout the line `text` appends to the
    /// buffer, while syslog still gets the JSON line `json` renders; a file or stream gets
    /// the JSON line as [`Self::write_rendered`] writes it (the chain, `egret verify` and
    /// `egret top` read JSON).
    pub fn write_text(
        &mut self,
        text: impl FnOnce(&mut Vec<u8>),
        json: impl FnOnce(&mut Vec<u8>) -> Result<Option<chain::Shape>, serde_json::Error>,
    ) -> Result<(), OutputError> {
        let Self {
            target_name,
            target: Target::Stdout(out),
            syslog,
            line,
        } = self
        else {
            return self.write_rendered(json);
        };
        line.clear();
        text(line);
        write_plain(out, line, target_name)?;
        if let Some(syslog) = syslog.as_mut() {
            line.clear();
            if json(line).is_ok() {
                syslog.send(line);
            }
        }
        Ok(())
    }

    /// A line that is no event (the column titles of `--format text`): stdout only, neither
    /// a file nor syslog gets it.
    pub fn write_header(&mut self, header: &str) -> Result<(), OutputError> {
        match &mut self.target {
            Target::Stdout(out) => write_plain(out, header.as_bytes(), &self.target_name),
            Target::Stream(_) | Target::File(_) => Ok(()),
        }
    }

    /// Writes out what is buffered; for a file also `fdatasync`: every line written before
    /// is then acknowledged (survives a crash or power cut). The agent calls this at least
    /// every second and at shutdown. On error nothing is lost yet: a file keeps its lines
    /// and tries again at the next flush.
    pub fn flush(&mut self) -> Result<(), OutputError> {
        match &mut self.target {
            Target::File(file) => file.sync(),
            Target::Stdout(out) => out.flush().map_err(|source| OutputError::Write {
                target: self.target_name.clone(),
                source,
            }),
            Target::Stream(out) => out.flush().map_err(|source| OutputError::Write {
                target: self.target_name.clone(),
                source,
            }),
        }
    }

    /// Bytes of lines a file has not taken yet (0 for stdout and streams).
    pub fn backlog(&self) -> usize {
        match &self.target {
            Target::File(file) => file.backlog(),
            Target::Stdout(_) | Target::Stream(_) => 0,
        }
    }

    /// Lines syslog did not take so far (0 without `--syslog`).
    pub fn syslog_dropped(&self) -> u64 {
        self.syslog.as_ref().map_or(0, |s| s.dropped)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(syslog) = &self.syslog {
            if syslog.dropped > 0 {
                log::warn!(
                    "syslog {}: {} of {} lines were not sent",
                    syslog.path().display(),
                    syslog.dropped,
                    syslog.dropped + syslog.sent
                );
            }
        }
    }
}

fn write_plain(out: &mut dyn Write, line: &[u8], target: &str) -> Result<(), OutputError> {
    out.write_all(line)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(|source| OutputError::Write {
            target: target.to_owned(),
            source,
        })
}

/// Sends each newline-terminated line of `lines` to syslog.
fn send_lines(syslog: &mut syslog::Syslog, lines: &[u8]) {
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        syslog.send(line);
    }
}

#[cfg(test)]
pub(crate) mod tests;
