//! The default rendering: plain-text tables for a terminal.

use std::fmt::Write as _;

use super::{
    aggregate::Dimension,
    model::{DestDoc, GroupDoc, ReportDoc},
};

/// Longest name shown in a table cell (longer ones are cut with `…`; JSON has them whole).
const MAX_CELL_CHARS: usize = 64;

/// A string made safe for a terminal: control characters (escape sequences, newlines) are
/// shown escaped (`\u{1b}`), never passed through.
pub fn terminal_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
        {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

fn cell(s: &str) -> String {
    let safe = terminal_safe(s);
    if safe.chars().count() > MAX_CELL_CHARS {
        let mut cut: String = safe
            .chars()
            .take(MAX_CELL_CHARS.saturating_sub(1))
            .collect();
        cut.push('…');
        cut
    } else {
        safe
    }
}

fn time(t: Option<&String>) -> String {
    // RFC 3339 to the second: the JSON output keeps the nanoseconds.
    t.map_or_else(
        || "-".to_owned(),
        |t| match (t.find('.'), t.ends_with('Z')) {
            (Some(dot), true) => format!("{}Z", t.get(..dot).unwrap_or(t)),
            _ => t.clone(),
        },
    )
}

const HEADERS: [&str; 9] = [
    "DESTINATION",
    "PORT",
    "PROTO",
    "CONNECTIONS",
    "UNAPPROVED",
    "BLOCKED",
    "ALERTS",
    "FIRST SEEN",
    "LAST SEEN",
];
/// Columns aligned right (numbers).
const RIGHT: [bool; 9] = [false, true, false, true, true, true, true, false, false];

fn table(out: &mut String, dests: &[DestDoc]) {
    let rows: Vec<[String; 9]> = dests
        .iter()
        .map(|d| {
            [
                cell(&d.destination),
                d.port.to_string(),
                cell(&d.transport),
                d.connections.to_string(),
                d.unapproved.to_string(),
                d.blocked.to_string(),
                d.alerts.to_string(),
                time(d.first_seen.as_ref()),
                time(d.last_seen.as_ref()),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut String, cells: &[String]| {
        let mut text = String::from("  ");
        for (i, c) in cells.iter().enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            let pad = " ".repeat(width.saturating_sub(c.chars().count()));
            if i > 0 {
                text.push_str("  ");
            }
            if RIGHT.get(i).copied().unwrap_or(false) {
                text.push_str(&pad);
                text.push_str(c);
            } else {
                text.push_str(c);
                text.push_str(&pad);
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(out, &HEADERS.map(str::to_owned));
    for row in &rows {
        line(out, row);
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn group(out: &mut String, g: &GroupDoc) {
    let total = u64::try_from(g.destinations_total).unwrap_or(u64::MAX);
    let _ = writeln!(
        out,
        "\n{}: {}, {}, {}",
        terminal_safe(&g.name),
        plural(g.connections, "connection", "connections"),
        plural(total, "destination", "destinations"),
        plural(g.alerts, "alert", "alerts"),
    );
    table(out, &g.destinations);
    more(out, g.destinations_total, g.connections, &g.destinations);
}

/// `… 3 more destinations (12 connections)` under a cut table.
fn more(out: &mut String, total: usize, connections: u64, shown: &[DestDoc]) {
    let hidden = total.saturating_sub(shown.len());
    if hidden > 0 {
        let shown_connections: u64 = shown.iter().map(|d| d.connections).sum();
        let _ = writeln!(
            out,
            "  … {} ({})",
            plural(
                u64::try_from(hidden).unwrap_or(u64::MAX),
                "more destination",
                "more destinations"
            ),
            plural(
                connections.saturating_sub(shown_connections),
                "connection",
                "connections"
            )
        );
    }
}

/// The whole report as text.
pub fn render(r: &ReportDoc) -> String {
    let mut out = String::new();
    let t = &r.totals;
    let _ = writeln!(
        out,
        "egret report: {} to {}, {} ({} unapproved, {} blocked)",
        plural(t.connections, "connection", "connections"),
        plural(
            u64::try_from(t.destinations).unwrap_or(u64::MAX),
            "destination",
            "destinations"
        ),
        plural(t.alerts, "alert", "alerts"),
        t.unapproved,
        t.blocked
    );
    let _ = write!(
        out,
        "seen:  {} .. {}",
        time(r.range.first_seen.as_ref()),
        time(r.range.last_seen.as_ref())
    );
    if r.range.since.is_some() || r.range.until.is_some() {
        let _ = write!(
            out,
            " (range {} .. {})",
            r.range.since.as_deref().unwrap_or("start"),
            r.range.until.as_deref().unwrap_or("end")
        );
    }
    out.push('\n');
    let i = &r.input;
    let _ = writeln!(
        out,
        "input: {}, {} ({} connection, {} alert, {} bad, {} outside the range, {} not used)",
        plural(
            u64::try_from(i.files.len()).unwrap_or(u64::MAX),
            "file",
            "files"
        ),
        plural(i.lines, "line", "lines"),
        i.connection_lines,
        i.alert_lines,
        i.bad_lines,
        i.out_of_range,
        i.ignored_lines
            .saturating_add(i.metric_lines)
            .saturating_add(i.blank_lines)
            .saturating_add(i.duplicate_alert_lines)
    );
    if t.events_lost_kernel > 0 || t.events_dropped_userspace > 0 {
        let _ = writeln!(
            out,
            "warning: egret reported {} lost in the kernel and {} dropped in userspace: counts may be short",
            plural(t.events_lost_kernel, "event", "events"),
            plural(t.events_dropped_userspace, "event", "events")
        );
    }
    let _ = writeln!(out, "\nTOP DESTINATIONS");
    if r.destinations.is_empty() {
        let _ = writeln!(out, "  (no connections)");
    } else {
        table(&mut out, &r.destinations);
        more(&mut out, t.destinations, t.connections, &r.destinations);
    }
    for dim in Dimension::ALL {
        let groups = r.groups.get(dim);
        let _ = writeln!(out, "\n{}", dim.title().to_uppercase());
        if groups.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        for g in groups {
            group(&mut out, g);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(terminal_safe("curl"), "curl");
        assert_eq!(terminal_safe("a\u{1b}[2Jb\nc"), "a\\u{1b}[2Jb\\u{a}c");
        assert_eq!(terminal_safe("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(terminal_safe("zürich"), "zürich");
        let long = "x".repeat(100);
        assert_eq!(cell(&long).chars().count(), MAX_CELL_CHARS);
        assert!(cell(&long).ends_with('…'));
    }

    #[test]
    fn times_are_shown_to_the_second() {
        let t = "2026-11-22T06:01:41.920432283Z".to_owned();
        assert_eq!(time(Some(&t)), "2026-11-22T06:01:41Z");
        assert_eq!(time(None), "-");
    }
}
