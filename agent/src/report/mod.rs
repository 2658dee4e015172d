//! `egret report`: summaries of egret's JSON Lines output, and allowlists suggested from it.
//!
//! Files are read one line at a time and aggregated as they are read ([`aggregate`]), so the
//! memory used grows with the number of distinct destinations and groups, not with the
//! input. Bad lines are reported as `FILE:LINE: message` and skipped. The report is rendered
//! from one document ([`model`]) as text, JSON or a self-contained HTML page; with
//! `--suggest-policy` the connections become a policy instead ([`suggest`]).
//! `docs/report.md` documents the options and the JSON schema.

pub mod aggregate;
pub mod html;
pub mod input;
pub mod join;
pub mod model;
pub mod platform;
pub mod requests;
pub mod suggest;
pub mod text;
pub mod timespec;
pub mod wording;

use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use aggregate::{Aggregate, FileCounts};
use input::{Line, LineReader, Observation};
use join::Waiting;
use platform::PlatformSuggester;
pub use platform::PolicyFormat;
pub use suggest::LoopbackChoice;
use suggest::Suggester;

/// Output formats of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Plain-text tables.
    #[default]
    Text,
    /// One JSON document (schema `egret-report/1`, docs/report.md).
    Json,
    /// One self-contained HTML page with a chart (no script, nothing fetched).
    Html,
}

/// `egret report` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// egret's JSON Lines output files (`--output`, `--alerts`), in any mix; `-` reads stdin.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// Only lines at or after this time: RFC 3339 (2026-11-22T06:00:00Z), `now`, or a
    /// duration before now (90s, 30m, 24h, 7d, 2w, 1h30m).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,

    /// Only lines before this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,

    /// Destinations listed per process, unit, container and pod (and overall).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub top: u32,

    /// Output format.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        conflicts_with = "suggest_policy"
    )]
    pub format: Format,

    /// Write an allowlist policy (YAML, docs/policy.md) approving exactly the connections
    /// seen, instead of a report.
    #[arg(long)]
    pub suggest_policy: bool,

    /// With --suggest-policy: `auto` lists loopback destinations (`loopback: audit`) when the
    /// input shows loopback was audited, else leaves them to `loopback: approve`.
    #[arg(long, value_enum, default_value = "auto", requires = "suggest_policy")]
    pub loopback: LoopbackChoice,

    /// With --suggest-policy: the policy's language: `egret` (docs/policy.md), `networkpolicy`
    /// (a Kubernetes NetworkPolicy per workload), `cilium` (a CiliumNetworkPolicy per
    /// workload) or `systemd` (an IPAddressAllow= drop-in per unit); docs/report.md.
    #[arg(long, value_enum, default_value = "egret", requires = "suggest_policy")]
    pub policy_format: PolicyFormat,

    /// With --suggest-policy and a --policy-format other than egret: write one file per
    /// policy under this directory (systemd: `<unit>.d/50-egret-egress.conf`) instead of one
    /// stream.
    #[arg(
        long,
        value_name = "DIR",
        requires = "suggest_policy",
        conflicts_with = "out"
    )]
    pub output_dir: Option<PathBuf>,

    /// With --suggest-policy: also approve connections the kernel blocked.
    #[arg(long, requires = "suggest_policy")]
    pub include_blocked: bool,

    /// Write to this file instead of stdout.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,

    /// Exit 1 when any input line was bad (the output is still written).
    #[arg(long)]
    pub strict: bool,

    /// Print at most this many bad-line messages (all are counted).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_warnings: u64,
}

/// Why a report could not be made. I/O errors are part of the message (not chained as a
/// source), so they are printed once.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot open {path}: {error}")]
    Open { path: String, error: std::io::Error },
    #[error("{path}: read error after line {line}: {error}")]
    Read {
        path: String,
        line: u64,
        error: std::io::Error,
    },
    #[error("invalid {option} `{value}`: {message}")]
    Time {
        option: &'static str,
        value: String,
        message: String,
    },
    #[error("--since {since} is not before --until {until}")]
    EmptyRange { since: String, until: String },
    #[error("cannot write {path}: {error}")]
    Write { path: String, error: std::io::Error },
    #[error("cannot serialise the report: {0}")]
    Json(serde_json::Error),
    #[error(
        "the suggested policy does not pass egret's policy parser (a bug, please report it):\n{0}"
    )]
    Policy(String),
}

/// What a run read, for the caller's exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub bad_lines: u64,
    pub connections: u64,
}

/// Where warnings about bad lines go, and how many are printed.
struct Warnings<'w> {
    out: &'w mut dyn Write,
    max: u64,
    printed: u64,
}

impl Warnings<'_> {
    fn bad_line(&mut self, path: &str, line: u64, message: &str) {
        if self.printed < self.max {
            let _ = writeln!(self.out, "{path}:{line}: {}", text::terminal_safe(message));
            self.printed = self.printed.saturating_add(1);
        }
    }
}

/// An input of [`run_on`]: stdin, or a reader (a file [`run`] opened; bytes in memory).
pub enum Source<'a> {
    Stdin,
    Reader(Box<dyn BufRead + 'a>),
}

fn open(path: &Path) -> Result<Source<'static>, ReportError> {
    if path.as_os_str() == "-" {
        return Ok(Source::Stdin);
    }
    let file = File::open(path).map_err(|error| ReportError::Open {
        path: path.display().to_string(),
        error,
    })?;
    // A directory opens but cannot be read: say so now, before any output.
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(ReportError::Open {
            path: path.display().to_string(),
            error: std::io::Error::other("is a directory"),
        });
    }
    Ok(Source::Reader(Box::new(BufReader::with_capacity(
        256 * 1024,
        file,
    ))))
}

/// What the lines are fed to: the report's aggregate (which also keeps the input counts),
/// and with `--suggest-policy` the suggester, which then takes the connections. TCP start
/// lines wait for their end lines first ([`join`]).
struct Sink {
    aggregate: Aggregate,
    suggest: Option<Suggester>,
    /// `--policy-format` other than `egret`.
    platform: Option<PlatformSuggester>,
    waiting: Waiting,
}

impl Sink {
    /// Counts one connection (once).
    fn count(&mut self, o: &Observation<'_>) {
        match (&mut self.suggest, &mut self.platform) {
            (_, Some(p)) => p.observe(o),
            (Some(s), None) => s.observe(o),
            (None, None) => self.aggregate.connection(o),
        }
    }

    /// Takes one parsed line of file number `file_index`.
    fn line(&mut self, line: Line<'_>, file_index: usize) {
        let a = &mut self.aggregate;
        match line {
            Line::Ignored => a.input.ignored_lines = a.input.ignored_lines.saturating_add(1),
            Line::Metric {
                host,
                lost_kernel,
                dropped_userspace,
            } => {
                a.input.metric_lines = a.input.metric_lines.saturating_add(1);
                a.metric(file_index, host.as_deref(), lost_kernel, dropped_userspace);
            }
            Line::Connection(o) => {
                if !a.in_range(o.ts_ns) {
                    a.input.out_of_range = a.input.out_of_range.saturating_add(1);
                    return;
                }
                a.input.connection_lines = a.input.connection_lines.saturating_add(1);
                if o.waits_for_end() {
                    for pushed_out in self.waiting.start(o) {
                        self.count(&pushed_out);
                    }
                } else {
                    self.count(&o);
                }
            }
            // Joined whatever its time: its start line was in the range.
            Line::End(end) => match self.waiting.end(&end) {
                Some(connection) => {
                    a.input.end_lines = a.input.end_lines.saturating_add(1);
                    self.count(&connection);
                }
                None => a.input.ignored_lines = a.input.ignored_lines.saturating_add(1),
            },
            Line::Alert(o) => {
                if !a.in_range(o.ts_ns) {
                    a.input.out_of_range = a.input.out_of_range.saturating_add(1);
                    return;
                }
                a.input.alert_lines = a.input.alert_lines.saturating_add(1);
                if self.suggest.is_none() && self.platform.is_none() && !a.alert(&o) {
                    a.input.duplicate_alert_lines = a.input.duplicate_alert_lines.saturating_add(1);
                }
            }
        }
    }

    /// The end of the input: start lines whose end line never came are counted as they are.
    fn finish(&mut self) {
        let rest: Vec<Observation<'static>> = self.waiting.drain().collect();
        for o in &rest {
            self.count(o);
        }
    }
}

fn read_one(
    reader: &mut dyn BufRead,
    path: &str,
    file_index: usize,
    sink: &mut Sink,
    warnings: &mut Warnings<'_>,
) -> Result<(), ReportError> {
    let mut lines = LineReader::new(reader);
    let mut counts = FileCounts {
        path: path.to_owned(),
        ..FileCounts::default()
    };
    loop {
        let next = lines.next_line().map_err(|error| ReportError::Read {
            path: path.to_owned(),
            line: counts.lines,
            error,
        })?;
        let Some((number, bytes)) = next else { break };
        counts.lines = number;
        let a = &mut sink.aggregate;
        a.input.lines = a.input.lines.saturating_add(1);
        let bytes = match bytes {
            Ok(b) => b,
            Err(len) => {
                counts.bad_lines = counts.bad_lines.saturating_add(1);
                a.input.bad_lines = a.input.bad_lines.saturating_add(1);
                warnings.bad_line(
                    path,
                    number,
                    &format!(
                        "line of {len} bytes is longer than {} bytes: skipped",
                        input::MAX_LINE_BYTES
                    ),
                );
                continue;
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            a.input.blank_lines = a.input.blank_lines.saturating_add(1);
            continue;
        }
        match input::classify(bytes) {
            Err(message) => {
                counts.bad_lines = counts.bad_lines.saturating_add(1);
                a.input.bad_lines = a.input.bad_lines.saturating_add(1);
                warnings.bad_line(path, number, &message);
            }
            Ok(line) => sink.line(line, file_index),
        }
    }
    sink.aggregate.input.files.push(counts);
    Ok(())
}

fn resolve_time(
    option: &'static str,
    value: Option<&str>,
    now_ns: i64,
) -> Result<Option<i64>, ReportError> {
    value
        .map(|v| {
            timespec::parse_time(v, now_ns).map_err(|message| ReportError::Time {
                option,
                value: v.to_owned(),
                message,
            })
        })
        .transpose()
}

/// Runs `egret report`: reads `args.files`, writes the report (or policy) to `args.out` or
/// `stdout`, bad-line messages and the summary of problems to `stderr`. `now_ns` resolves
/// relative times.
///
/// # Errors
/// A file that cannot be opened (checked before anything is read) or read, an invalid time,
/// output that cannot be written.
pub fn run(
    args: &ReportArgs,
    now_ns: i64,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<Outcome, ReportError> {
    let since = resolve_time("--since", args.since.as_deref(), now_ns)?;
    let until = resolve_time("--until", args.until.as_deref(), now_ns)?;
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            return Err(ReportError::EmptyRange {
                since: timespec::rfc3339(s),
                until: timespec::rfc3339(u),
            });
        }
    }
    // Every file is opened first: a missing one is an error before any work or output.
    let sources = args
        .files
        .iter()
        .map(|p| open(p).map(|s| (p.display().to_string(), s)))
        .collect::<Result<Vec<_>, _>>()?;
    run_on(args, (since, until), sources, now_ns, stdout, stderr)
}

/// [`run`] on inputs already open (`args.files` only name them in a suggested policy),
/// between `range` (`--since`, `--until`, resolved): everything `egret report` does with
/// what it reads, fuzzed from bytes (`fuzz/fuzz_targets/report_lines.rs`).
///
/// # Errors
/// A read error, output that cannot be written.
pub fn run_on(
    args: &ReportArgs,
    (since, until): (Option<i64>, Option<i64>),
    sources: Vec<(String, Source<'_>)>,
    now_ns: i64,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<Outcome, ReportError> {
    let mut sink = Sink {
        aggregate: Aggregate::new(since, until),
        suggest: args
            .suggest_policy
            .then(|| Suggester::new(args.loopback, args.include_blocked)),
        platform: (args.suggest_policy && args.policy_format != PolicyFormat::Egret)
            .then(|| PlatformSuggester::new(args.include_blocked)),
        waiting: Waiting::default(),
    };
    let mut warnings = Warnings {
        out: stderr,
        max: args.max_warnings,
        printed: 0,
    };
    for (index, (path, source)) in sources.into_iter().enumerate() {
        match source {
            Source::Stdin => {
                let stdin = std::io::stdin();
                let mut lock = stdin.lock();
                read_one(&mut lock, &path, index, &mut sink, &mut warnings)?;
            }
            Source::Reader(mut reader) => {
                read_one(&mut reader, &path, index, &mut sink, &mut warnings)?;
            }
        }
    }
    sink.finish();
    let bad_lines = sink.aggregate.input.bad_lines;
    let not_printed = bad_lines.saturating_sub(warnings.printed);
    let names: Vec<String> = args.files.iter().map(|p| p.display().to_string()).collect();
    let (rendered, connections) = match (&sink.suggest, &sink.platform) {
        (_, Some(p)) => {
            let rendered = match &args.output_dir {
                Some(dir) => {
                    write_dir(dir, &p.render(args.policy_format, &names), stdout)?;
                    String::new()
                }
                None => p.render_stream(args.policy_format, &names),
            };
            (rendered, p.connections())
        }
        (None, None) => {
            let doc = model::build(
                &sink.aggregate,
                usize::try_from(args.top).unwrap_or(usize::MAX),
                now_ns,
            );
            let rendered = match args.format {
                Format::Text => text::render(&doc),
                Format::Json => {
                    let mut s = serde_json::to_string_pretty(&doc).map_err(ReportError::Json)?;
                    s.push('\n');
                    s
                }
                Format::Html => html::render(&doc),
            };
            (rendered, doc.totals.connections)
        }
        (Some(s), None) => {
            let suggestion = s.render(&names).map_err(ReportError::Policy)?;
            if let Some(dir) = &args.output_dir {
                write_dir(dir, &[("policy.yaml".to_owned(), suggestion.yaml)], stdout)?;
                (String::new(), suggestion.connections)
            } else {
                (suggestion.yaml, suggestion.connections)
            }
        }
    };
    write_output(args.out.as_deref(), &rendered, stdout)?;
    if bad_lines > 0 {
        let _ = writeln!(
            warnings.out,
            "egret report: warning: {bad_lines} bad line(s) skipped{}",
            if not_printed > 0 {
                format!(" ({not_printed} not shown; --max-warnings raises the limit)")
            } else {
                String::new()
            }
        );
    }
    Ok(Outcome {
        bad_lines,
        connections,
    })
}

/// `--output-dir`: each policy in its file (directories made as needed), their paths listed
/// on stdout.
fn write_dir(
    dir: &Path,
    files: &[(String, String)],
    stdout: &mut dyn Write,
) -> Result<(), ReportError> {
    for (name, text) in files {
        let path = dir.join(name);
        let made = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, text));
        made.map_err(|error| ReportError::Write {
            path: path.display().to_string(),
            error,
        })?;
        let _ = writeln!(stdout, "{}", path.display());
    }
    Ok(())
}

fn write_output(out: Option<&Path>, text: &str, stdout: &mut dyn Write) -> Result<(), ReportError> {
    match out {
        Some(path) => std::fs::write(path, text).map_err(|error| ReportError::Write {
            path: path.display().to_string(),
            error,
        }),
        None => match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            // A reader that went away (`egret report ... | head`) is not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            r => r.map_err(|error| ReportError::Write {
                path: "stdout".to_owned(),
                error,
            }),
        },
    }
}

/// `egret report` as a command: [`run`] on the process's stdout and stderr, exit status 1 for
/// bad lines under `--strict`.
///
/// # Errors
/// As [`run`].
pub fn command(args: &ReportArgs) -> Result<ExitCode, ReportError> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    let outcome = run(args, timespec::now_ns(), &mut out, &mut err)?;
    Ok(if args.strict && outcome.bad_lines > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests;
