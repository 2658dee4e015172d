//! The default rendering: plain-text tables for a terminal.

use std::fmt::Write as _;

use super::{
    aggregate::Dimension,
    model::{DestDoc, GroupDoc, ReportDoc},
    wording::{
        count, http_counts, http_dests, losses, not_listed, plural, request_label, seen,
        status_codes, HTTP_NOTE,
    },
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
                d.counts.connections.to_string(),
                d.counts.unapproved.to_string(),
                d.counts.blocked.to_string(),
                d.counts.alerts.to_string(),
                seen(d.counts.first_ns),
                seen(d.counts.last_ns),
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

fn group(out: &mut String, g: &GroupDoc) {
    let _ = writeln!(
        out,
        "\n{}: {}, {}, {}",
        terminal_safe(&g.name),
        plural(g.counts.connections, "connection", "connections"),
        plural(count(g.destinations_total), "destination", "destinations"),
        plural(g.counts.alerts, "alert", "alerts"),
    );
    table(out, &g.destinations);
    more(
        out,
        g.destinations_total,
        g.counts.connections,
        &g.destinations,
    );
}

/// `… 3 more destinations (12 connections)` under a cut table.
fn more(out: &mut String, total: usize, connections: u64, shown: &[DestDoc]) {
    if let Some(left_out) = not_listed(total, connections, shown) {
        let _ = writeln!(out, "  … {left_out}");
    }
}

/// The HTTP requests of the listed destinations that had any; nothing when none had.
fn http_section(out: &mut String, dests: &[DestDoc]) {
    let with_http = http_dests(dests);
    if with_http.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nHTTP REQUESTS ({HTTP_NOTE})");
    for (label, h) in with_http {
        let _ = writeln!(out, "  {}: {}", cell(&label), http_counts(h));
        let mut rows: Vec<(u64, String)> = h
            .paths
            .iter()
            .map(|p| (p.connections, cell(&request_label(p))))
            .collect();
        if h.other_paths > 0 {
            rows.push((h.other_paths, "(other requests)".to_owned()));
        }
        let width = rows
            .iter()
            .map(|(n, _)| n.to_string().len())
            .max()
            .unwrap_or(0);
        for (n, label) in rows {
            let _ = writeln!(out, "    {n:>width$}  {label}");
        }
        let _ = writeln!(out, "    status codes: {}", status_codes(h));
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
        plural(count(t.destinations), "destination", "destinations"),
        plural(t.alerts, "alert", "alerts"),
        t.unapproved,
        t.blocked
    );
    let _ = write!(
        out,
        "seen:  {} .. {}",
        seen(r.range.first_seen),
        seen(r.range.last_seen)
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
        "input: {}, {} ({} connection, {} end, {} alert, {} bad, {} outside the range, {} not used)",
        plural(count(i.files.len()), "file", "files"),
        plural(i.lines, "line", "lines"),
        i.connection_lines,
        i.end_lines,
        i.alert_lines,
        i.bad_lines,
        i.out_of_range,
        i.ignored_lines
            .saturating_add(i.metric_lines)
            .saturating_add(i.blank_lines)
            .saturating_add(i.duplicate_alert_lines)
    );
    if let Some(losses) = losses(t) {
        let _ = writeln!(out, "warning: {losses}");
    }
    let _ = writeln!(out, "\nTOP DESTINATIONS");
    if r.destinations.is_empty() {
        let _ = writeln!(out, "  (no connections)");
    } else {
        table(&mut out, &r.destinations);
        more(&mut out, t.destinations, t.connections, &r.destinations);
        http_section(&mut out, &r.destinations);
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
}
