//! The text rendering of a line (`egret run --format text`): the same [`Document`] the JSON
//! rendering serialises, as one compact line with aligned columns, for a person at a
//! terminal. docs/output.md shows every kind of line.
//!
//! ```text
//! TIME(UTC)    EVENT    VERDICT    PROCESS[PID]             USER     UNIT/CONTAINER/POD       DESTINATION                         DETAILS
//! 06:01:41.920 connect  approved   curl[4242]               alice    backup.service           api.example.com:443/tcp             rule=backups
//! 06:01:42.311 end      approved   curl[4242]               alice    backup.service           api.example.com:443/tcp             success 391ms sent 517 B recv 4.2 KiB
//! 06:01:43.002 !ALERT   unapproved nc[4250]                 root     -                        203.0.113.7:4444/tcp                nc (pid 4250, /usr/bin/nc) connected to …
//! ```
//!
//! Every string that comes from a watched process or the network (names, arguments, domains,
//! units, labels, messages quoting them) goes through [`clean`]: control characters (C0, DEL,
//! C1: escape sequences that would drive the terminal) and the invisible format characters
//! (bidirectional overrides, zero-width) are written as `\u{..}`, and a backslash as `\\`, so
//! nothing a process chose reaches the terminal raw and no escaped text can pose as another.
//! Colour (ANSI SGR) is added only when [`Style::colour`] says so: the caller decides that
//! from the terminal and `NO_COLOR`.

use std::{borrow::Cow, fmt::Write as _};

use crate::schema::{Document, Endpoint, Process};

/// How a line is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Style {
    /// ANSI colours (a terminal, and `NO_COLOR` unset or empty).
    pub colour: bool,
}

/// The columns: (title, width). The last one (details) is not padded.
const COLUMNS: [(&str, usize); 8] = [
    ("TIME(UTC)", 12),
    ("EVENT", 8),
    ("VERDICT", 10),
    ("PROCESS[PID]", 24),
    ("USER", 8),
    ("UNIT/CONTAINER/POD", 24),
    ("DESTINATION", 35),
    ("DETAILS", 0),
];

const RED: &str = "\x1b[31m";
const BOLD_RED: &str = "\x1b[1;31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// The header line naming the columns (no newline).
pub fn header(style: Style) -> String {
    let mut line = String::new();
    for (title, width) in COLUMNS {
        push_cell(&mut line, title, width);
    }
    let line = line.trim_end().to_owned();
    if style.colour {
        format!("{DIM}{line}{RESET}")
    } else {
        line
    }
}

/// `text` with every control and invisible format character written as `\u{..}`, and a
/// backslash as `\\`; borrowed when there is nothing to escape.
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '\\' || unsafe_char(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if unsafe_char(c) {
            // Infallible: writing to a String.
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A character a terminal acts on or that changes how the text around it is shown: controls
/// (C0, DEL, C1), zero-width and bidirectional format characters, line/paragraph separators.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

/// Appends `text` (already clean) padded to `width` characters, or cut to `width - 1` and
/// `…` when longer; then one space. Width 0: as it is.
fn push_cell(out: &mut String, text: &str, width: usize) {
    let count = text.chars().count();
    if width == 0 {
        out.push_str(text);
        return;
    }
    if count > width {
        out.extend(text.chars().take(width.saturating_sub(1)));
        out.push('…');
    } else {
        out.push_str(text);
        out.extend(std::iter::repeat_n(' ', width - count));
    }
    out.push(' ');
}

/// Like [`push_cell`], but a longer text is kept whole (the columns after it move).
fn push_wide_cell(out: &mut String, text: &str, width: usize) {
    let count = text.chars().count();
    out.push_str(text);
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(count)));
    out.push(' ');
}

/// [`push_cell`] in a colour (the padding outside it, so columns stay aligned).
fn push_coloured(out: &mut String, text: &str, width: usize, colour: Option<&str>) {
    match colour {
        Some(colour) => {
            let mut cell = String::new();
            push_cell(&mut cell, text, width);
            let trimmed = cell.trim_end_matches(' ');
            let pad = cell.len() - trimmed.len();
            out.push_str(colour);
            out.push_str(trimmed);
            out.push_str(RESET);
            out.extend(std::iter::repeat_n(' ', pad));
        }
        None => push_cell(out, text, width),
    }
}

/// The cells of a line, as text (already clean).
#[derive(Debug, Default)]
struct Cells {
    event: String,
    alert: bool,
    verdict: String,
    process: String,
    user: String,
    place: String,
    destination: String,
    details: String,
    /// The details say the connection failed.
    failed: bool,
}

/// Appends the text line for `doc` to `out` (no newline).
pub fn render(doc: &Document<'_>, style: Style, out: &mut Vec<u8>) {
    let cells = cells(doc);
    let time = doc.timestamp.get(11..23).unwrap_or("-");
    let mut line = String::with_capacity(160);
    let colour = |c: &'static str| style.colour.then_some(c);
    push_cell(&mut line, &clean(time), COLUMNS[0].1);
    let event_colour = if cells.alert { colour(BOLD_RED) } else { None };
    push_coloured(&mut line, &cells.event, COLUMNS[1].1, event_colour);
    let verdict_colour = match cells.verdict.as_str() {
        "approved" => colour(GREEN),
        "unapproved" => colour(YELLOW),
        "blocked" => colour(RED),
        _ => None,
    };
    push_coloured(&mut line, &cells.verdict, COLUMNS[2].1, verdict_colour);
    push_cell(&mut line, &cells.process, COLUMNS[3].1);
    push_cell(&mut line, &cells.user, COLUMNS[4].1);
    push_cell(&mut line, &cells.place, COLUMNS[5].1);
    push_wide_cell(&mut line, &cells.destination, COLUMNS[6].1);
    let details_colour = if cells.alert {
        colour(BOLD_RED)
    } else if cells.failed {
        colour(RED)
    } else {
        None
    };
    match details_colour {
        Some(c) if !cells.details.is_empty() => {
            line.push_str(c);
            line.push_str(&cells.details);
            line.push_str(RESET);
        }
        _ => line.push_str(&cells.details),
    }
    out.extend_from_slice(line.trim_end().as_bytes());
}

/// The cells of every kind of line egret writes; a kind this version does not know shows
/// its action and message.
fn cells(doc: &Document<'_>) -> Cells {
    let event = &doc.event;
    let mut cells = Cells {
        verdict: doc
            .egret
            .policy
            .as_ref()
            .map_or_else(|| "-".to_owned(), |p| clean(&p.verdict).into_owned()),
        place: place(doc),
        ..Cells::default()
    };
    let (process, user) = doc
        .process
        .as_ref()
        .and_then(|p| p.fields())
        .map_or_else(|| ("-".to_owned(), "-".to_owned()), process_and_user);
    cells.process = process;
    cells.user = user;
    cells.destination = doc
        .destination
        .as_ref()
        .zip(doc.network.as_ref())
        .map_or_else(|| "-".to_owned(), |(d, n)| endpoint(d, &n.transport, true));
    match (event.kind.as_ref(), event.action.as_ref()) {
        ("alert", action) => {
            cells.alert = true;
            cells.event = if action == "connection-failures" {
                "!FAILING".to_owned()
            } else {
                "!ALERT".to_owned()
            };
            cells.details = doc
                .message
                .as_deref()
                .map_or_else(String::new, |m| clean(m).into_owned());
        }
        ("metric", _) => {
            cells.event = "stats".to_owned();
            cells.details = stats(doc);
        }
        (_, "connect") => {
            cells.event = "connect".to_owned();
            cells.details = rule(doc);
            if event.outcome.as_deref() == Some("failure") {
                cells.failed = true;
                cells.details = join(["refused by the kernel".to_owned(), cells.details]);
            }
        }
        (_, "send") => {
            cells.event = "send".to_owned();
            cells.details = join([udp(doc), rule(doc)]);
        }
        (_, "connection-end") => {
            cells.event = "end".to_owned();
            let outcome = event.outcome.as_deref().unwrap_or("-");
            cells.failed = outcome == "failure";
            cells.details = join([
                clean(outcome).into_owned(),
                doc.error
                    .as_ref()
                    .map_or_else(String::new, |e| clean(&e.code).into_owned()),
                event.duration.map_or_else(String::new, duration),
                traffic(doc),
            ]);
        }
        (_, "connection-progress") => {
            cells.event = "progress".to_owned();
            cells.details = join([
                event.duration.map_or_else(String::new, duration),
                traffic(doc),
            ]);
        }
        (_, "dns-answer") => {
            cells.event = "dns".to_owned();
            // The resolver that answered, where a connection line has its destination.
            cells.destination = doc
                .source
                .as_ref()
                .zip(doc.network.as_ref())
                .map_or_else(|| "-".to_owned(), |(s, n)| endpoint(s, &n.transport, false));
            cells.details = dns(doc);
        }
        (_, action) => {
            cells.event = clean(action).into_owned();
            cells.details = doc
                .message
                .as_deref()
                .map_or_else(String::new, |m| clean(m).into_owned());
        }
    }
    cells
}

/// `name[pid]` and the user's name (else uid).
fn process_and_user(process: &Process<'_>) -> (String, String) {
    let name = if process.name.is_empty() {
        "?"
    } else {
        &process.name
    };
    let user = process.user.as_ref().map_or_else(
        || "-".to_owned(),
        |u| clean(u.name.as_deref().unwrap_or(&u.id)).into_owned(),
    );
    // Cut the name, never the pid, to fit the column.
    let pid = format!("[{}]", process.pid);
    let room = COLUMNS[3].1.saturating_sub(pid.len());
    let name = clean(name);
    let name = if name.chars().count() > room {
        let mut cut: String = name.chars().take(room.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        name.into_owned()
    };
    (format!("{name}{pid}"), user)
}

/// The pod (`namespace/name`), else the container's name (else its id, short), else the
/// systemd unit, else `-`.
fn place(doc: &Document<'_>) -> String {
    if let Some(o) = &doc.orchestrator {
        if !o.resource.name.is_empty() {
            return format!("pod:{}/{}", clean(&o.namespace), clean(&o.resource.name));
        }
    }
    if let Some(c) = &doc.container {
        let name = c
            .name
            .as_deref()
            .unwrap_or_else(|| c.id.get(..12).unwrap_or(&c.id));
        return format!("ctr:{}", clean(name));
    }
    doc.egret
        .systemd
        .as_ref()
        .map_or_else(|| "-".to_owned(), |u| clean(&u.unit).into_owned())
}

/// `name:port/transport` (the domain when `named` and known, else the address; `[v6]:port`).
fn endpoint(end: &Endpoint<'_>, transport: &str, named: bool) -> String {
    let port = end.port.map_or_else(|| "?".to_owned(), |p| p.to_string());
    let transport = clean(transport);
    match (end.domain.as_deref().filter(|_| named), end.ip.as_deref()) {
        (Some(domain), _) => format!("{}:{port}/{transport}", clean(domain)),
        (None, Some(ip)) if ip.contains(':') => format!("[{}]:{port}/{transport}", clean(ip)),
        (None, Some(ip)) => format!("{}:{port}/{transport}", clean(ip)),
        (None, None) => "-".to_owned(),
    }
}

/// `rule=NAME` when a rule approved the connection.
fn rule(doc: &Document<'_>) -> String {
    doc.rule
        .as_ref()
        .map_or_else(String::new, |r| format!("rule={}", clean(&r.name)))
}

/// `sent 517 B recv 4.2 KiB` (`source.bytes`, `destination.bytes`), what is known of it.
fn traffic(doc: &Document<'_>) -> String {
    let sent = doc.source.as_ref().and_then(|s| s.bytes);
    let received = doc.destination.as_ref().and_then(|d| d.bytes);
    join([
        sent.map_or_else(String::new, |b| format!("sent {}", bytes(b))),
        received.map_or_else(String::new, |b| format!("recv {}", bytes(b))),
    ])
}

/// A UDP flow: datagrams and bytes each way.
fn udp(doc: &Document<'_>) -> String {
    let datagrams = doc
        .egret
        .udp
        .as_ref()
        .map_or_else(String::new, |u| format!("{} datagram(s)", u.datagrams));
    join([datagrams, traffic(doc)])
}

/// `example.com A NOERROR -> 192.0.2.1, 192.0.2.2`, and why it is not trusted.
fn dns(doc: &Document<'_>) -> String {
    let Some(dns) = &doc.dns else {
        return String::new();
    };
    let question = dns.question.as_ref().map_or_else(String::new, |q| {
        format!("{} {}", clean(&q.name), clean(&q.qtype))
    });
    let answers: Vec<String> = dns
        .answers
        .iter()
        .map(|a| clean(&a.data).into_owned())
        .collect();
    let answers = if answers.is_empty() {
        String::new()
    } else {
        format!("-> {}", answers.join(", "))
    };
    let untrusted = doc
        .egret
        .dns
        .as_ref()
        .filter(|d| !d.untrusted.is_empty())
        .map_or_else(String::new, |d| {
            let reasons: Vec<Cow<'_, str>> = d.untrusted.iter().map(|r| clean(r)).collect();
            format!("UNTRUSTED ({})", reasons.join(", "))
        });
    join([
        question,
        clean(&dns.response_code).into_owned(),
        answers,
        untrusted,
    ])
}

/// The counters a person watches: events, losses, lines, alerts.
fn stats(doc: &Document<'_>) -> String {
    let Some(m) = &doc.egret.metrics else {
        return String::new();
    };
    format!(
        "events {} lost {} dropped {} lines {} alerts {} policy reloads {} (failed {})",
        m.events_received,
        m.events_lost_kernel,
        m.events_dropped_userspace,
        m.lines_written,
        m.alerts,
        m.policy_reloads,
        m.policy_reload_failures
    )
}

/// Nanoseconds as `812ns`, `3.4µs`, `391ms`, `12.3s`, `4m05s`, `2h03m`.
pub fn duration(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{}ms", ns / 1_000_000),
        1_000_000_000..60_000_000_000 => format!("{:.1}s", ns as f64 / 1e9),
        _ => {
            let secs = ns / 1_000_000_000;
            if secs < 3600 {
                format!("{}m{:02}s", secs / 60, secs % 60)
            } else {
                format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
            }
        }
    }
}

/// Bytes as `517 B`, `4.2 KiB`, `3.0 MiB`, `1.1 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS.get(unit).copied().unwrap_or("TiB"))
}

/// The non-empty parts, separated by a space.
fn join<const N: usize>(parts: [String; N]) -> String {
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
