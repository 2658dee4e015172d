//! Pure parsing for the benchmark: load-generator output, egret's JSON log, /proc.

use std::io::BufRead;

use anyhow::{Context as _, Result};
use egret::{
    metrics::Metrics,
    schema::{Document, Event},
};
use serde::Serialize;

/// One load-generator run: `ops=<N> elapsed_ns=<T>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sample {
    pub ops: u64,
    pub elapsed_ns: u64,
}

impl Sample {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        if self.elapsed_ns == 0 {
            return 0.0;
        }
        self.ops as f64 * 1e9 / self.elapsed_ns as f64
    }
}

/// Finds the `ops=<N> elapsed_ns=<T>` line in the load generator's stdout.
pub fn parse_ops_line(stdout: &str) -> Result<Sample> {
    stdout.lines().find_map(parse_sample).with_context(|| {
        format!("no `ops=<N> elapsed_ns=<T>` line in load generator output {stdout:?}")
    })
}

fn parse_sample(line: &str) -> Option<Sample> {
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    Some(Sample {
        ops: field("ops")?,
        elapsed_ns: field("elapsed_ns")?,
    })
}

/// The path of the request `egret-testclient request-loop` sends on every connection.
pub const REQUEST_PATH: &str = "/api/v1/items";
/// The status of the answer it gets.
pub const RESPONSE_STATUS: u16 = 200;

/// What one egret output file says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LogSummary {
    /// Event lines (`event.kind == "event"`) whose `event.action` is the workload's action
    /// (`connect` / `send`), and merged connection lines (a `connection-end` line typed
    /// `start`, which stands for the connect line) when the action is `connect`.
    pub events: u64,
    /// Of those, lines with `egret.policy.verdict == "approved"`.
    pub approved: u64,
    /// Of those, lines with `egret.policy.verdict == "blocked"` (refused in the kernel).
    pub blocked: u64,
    /// Of those, lines whose `destination.domain` is the expected name (0 when none is).
    pub with_domain: u64,
    /// `connection-end` lines (TCP connections followed to their end).
    pub ends: u64,
    /// Of those, lines whose `url.path` is [`REQUEST_PATH`] (read from the first bytes).
    pub ends_with_path: u64,
    /// Of those, lines whose `http.response.status_code` is [`RESPONSE_STATUS`].
    pub ends_with_status: u64,
    /// Of those, lines with anything read from the first bytes (`tls`, `http` or `url`).
    pub ends_with_first_bytes: u64,
    /// The last metric line, if any.
    pub metrics: Option<Metrics>,
    /// Lines that were not JSON.
    pub unparsable_lines: u64,
    /// Every non-empty line (events, ends, processes, metrics...).
    pub lines: u64,
    /// Their bytes, each line's newline included.
    pub bytes: u64,
}

/// Counts `event.action == action` event lines (their policy verdicts, and those whose
/// `destination.domain` is `domain`) and keeps the last metric line. Lines are read as the
/// schema's documents, the types egret writes them with.
pub fn summarize_log(
    reader: impl BufRead,
    action: &str,
    domain: Option<&str>,
) -> Result<LogSummary> {
    let mut summary = LogSummary::default();
    for line in reader.lines() {
        let line = line.context("reading egret output")?;
        if line.trim().is_empty() {
            continue;
        }
        summary.lines += 1;
        summary.bytes += line.len() as u64 + 1;
        let Ok(doc) = serde_json::from_str::<Document<'_>>(&line) else {
            summary.unparsable_lines += 1;
            continue;
        };
        summary.count(&doc, action, domain);
        if doc.event.kind == "metric" {
            let metrics = doc
                .egret
                .metrics
                .with_context(|| format!("metric line without egret.metrics: {line}"))?;
            summary.metrics = Some(*metrics);
        }
    }
    Ok(summary)
}

impl LogSummary {
    fn count(&mut self, doc: &Document<'_>, action: &str, domain: Option<&str>) {
        let Event {
            kind,
            action: line_action,
            ..
        } = &doc.event;
        let is_end = kind == "event" && line_action == "connection-end";
        if is_end {
            self.count_end(doc);
        }
        // A merged connection (`--merge-short-connections on`) has one line: its end line,
        // typed `start` as well, which stands for its connect line too.
        let merged_connect = is_end && action == "connect" && doc.event.types.contains("start");
        if kind != "event" || (line_action != action && !merged_connect) {
            return;
        }
        self.events += 1;
        match doc.egret.policy.as_ref().map(|p| p.verdict.as_ref()) {
            Some("approved") => self.approved += 1,
            Some("blocked") => self.blocked += 1,
            _ => {}
        }
        let line_domain = doc.destination.as_ref().and_then(|d| d.domain.as_deref());
        if domain.is_some() && line_domain == domain {
            self.with_domain += 1;
        }
    }
}

impl LogSummary {
    /// An end line, and what its first bytes said.
    fn count_end(&mut self, doc: &Document<'_>) {
        self.ends += 1;
        let path = doc.url.as_ref().and_then(|u| u.path.as_deref());
        self.ends_with_path += u64::from(path == Some(REQUEST_PATH));
        let status = doc
            .http
            .as_ref()
            .and_then(|h| h.response)
            .map(|r| r.status_code);
        self.ends_with_status += u64::from(status == Some(RESPONSE_STATUS));
        let read = doc.tls.is_some() || doc.http.is_some() || doc.url.is_some();
        self.ends_with_first_bytes += u64::from(read);
    }
}

/// User + system time of all of a process's threads, in clock ticks: fields 14 and 15
/// (`utime`, `stime`) of `/proc/<pid>/stat` text. The second field (`comm`, in parentheses)
/// may hold spaces and parentheses itself, so the fields are counted from its last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    // After `comm` comes field 3 (`state`): utime is the 12th field from there.
    let mut fields = after_comm.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// Peak resident set size (`VmHWM`, KiB) from `/proc/<pid>/status` text.
pub fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix("VmHWM:")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The median of `values` (mean of the two middle values for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => sorted.get(mid).copied(),
        _ => Some((sorted.get(mid - 1)? + sorted.get(mid)?) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ops_lines() -> Result<()> {
        let sample = parse_ops_line("ops=1234 elapsed_ns=2000000000\n")?;
        assert_eq!(
            sample,
            Sample {
                ops: 1234,
                elapsed_ns: 2_000_000_000
            }
        );
        assert!((sample.rate() - 617.0).abs() < 1e-9);
        let noisy = parse_ops_line("listening on 127.0.0.1:4000\nelapsed_ns=10 ops=5\n")?;
        assert_eq!(
            noisy,
            Sample {
                ops: 5,
                elapsed_ns: 10
            }
        );
        assert!(parse_ops_line("ops=1\n").is_err());
        assert!(parse_ops_line("ops=x elapsed_ns=1\n").is_err());
        assert!(parse_ops_line("").is_err());
        Ok(())
    }

    #[test]
    fn zero_elapsed_rate_is_zero() {
        assert_eq!(
            Sample {
                ops: 3,
                elapsed_ns: 0
            }
            .rate(),
            0.0
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn summarizes_egret_log() -> Result<()> {
        let log = r#"{"event":{"kind":"event","action":"connect"}}
{"event":{"kind":"event","action":"connect"}}
{"event":{"kind":"event","action":"send"}}
{"event":{"kind":"metric"},"egret":{"metrics":{"events_received":1,"events_lost_kernel":0,"events_dropped_userspace":0,"dns_messages":0}}}
not json

{"event":{"kind":"metric"},"egret":{"metrics":{"events_received":3,"events_lost_kernel":2,"events_dropped_userspace":1,"dns_messages":4}}}
"#;
        let summary = summarize_log(log.as_bytes(), "connect", None)?;
        assert_eq!(summary.events, 2);
        assert_eq!(summary.unparsable_lines, 1);
        // Six non-empty lines, newlines included; the empty one is not counted.
        assert_eq!(summary.lines, 6);
        let non_empty: usize = log
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.len() + 1)
            .sum();
        assert_eq!(summary.bytes, non_empty as u64);
        let last = Metrics {
            events_received: 3,
            events_lost_kernel: 2,
            events_dropped_userspace: 1,
            dns_messages: 4,
            ..Metrics::default()
        };
        assert_eq!(summary.metrics, Some(last));
        assert_eq!(
            summarize_log("".as_bytes(), "send", None)?,
            LogSummary::default()
        );
        Ok(())
    }

    #[test]
    fn counts_policy_verdicts_and_ignores_alerts() -> Result<()> {
        let log = r#"{"event":{"kind":"event","action":"connect"},"egret":{"policy":{"verdict":"approved"}}}
{"event":{"kind":"event","action":"connect"},"egret":{"policy":{"verdict":"blocked"}}}
{"event":{"kind":"event","action":"connect"},"egret":{"policy":{"verdict":"unapproved"}}}
{"event":{"kind":"alert","action":"connect"},"egret":{"policy":{"verdict":"blocked"}}}
{"event":{"kind":"event","action":"send"},"egret":{"policy":{"verdict":"blocked"}}}
"#;
        let summary = summarize_log(log.as_bytes(), "connect", None)?;
        assert_eq!(
            (summary.events, summary.approved, summary.blocked),
            (3, 1, 1)
        );
        Ok(())
    }

    #[test]
    fn counts_connect_lines_with_the_expected_domain() -> Result<()> {
        let log = r#"{"event":{"kind":"event","action":"connect"},"destination":{"ip":"127.0.0.1","domain":"svc.bench.test"}}
{"event":{"kind":"event","action":"connect"},"destination":{"ip":"127.0.0.1","domain":"other.test"}}
{"event":{"kind":"event","action":"connect"},"destination":{"ip":"127.0.0.1"}}
{"event":{"kind":"event","action":"send"},"destination":{"ip":"127.0.0.1","domain":"svc.bench.test"}}
"#;
        let summary = summarize_log(log.as_bytes(), "connect", Some("svc.bench.test"))?;
        assert_eq!((summary.events, summary.with_domain), (3, 1));
        let summary = summarize_log(log.as_bytes(), "connect", None)?;
        assert_eq!((summary.events, summary.with_domain), (3, 0));
        Ok(())
    }

    #[test]
    fn escaped_strings_are_read_like_plain_ones() -> Result<()> {
        let log = r#"{"event":{"kind":"event","action":"conn\u0065ct"},"destination":{"domain":"svc.bench.test"}}
{"event":{"kind":"event","action":"connect"},"process":{"command_line":"a \"b\" c"},"destination":{"domain":"svc.bench.test"},"egret":{"policy":{"verdict":"blocked"}}}
"#;
        let summary = summarize_log(log.as_bytes(), "connect", Some("svc.bench.test"))?;
        assert_eq!(
            (summary.events, summary.blocked, summary.with_domain),
            (2, 1, 2)
        );
        Ok(())
    }

    #[test]
    fn a_metric_line_without_its_counters_is_an_error() {
        let log = r#"{"event":{"kind":"metric"},"egret":{}}"#;
        assert!(summarize_log(log.as_bytes(), "connect", None).is_err());
    }

    #[test]
    fn counts_a_merged_connection_line_as_its_connect_and_its_end() -> Result<()> {
        let log = r#"{"event":{"kind":"event","action":"connect","type":["connection","start"]}}
{"event":{"kind":"event","action":"connection-end","type":["connection","end"]}}
{"event":{"kind":"event","action":"connection-end","type":["connection","start","end"]}}
"#;
        let s = summarize_log(log.as_bytes(), "connect", None)?;
        assert_eq!((s.events, s.ends), (2, 2));
        let s = summarize_log(log.as_bytes(), "send", None)?;
        assert_eq!((s.events, s.ends), (0, 2));
        Ok(())
    }

    #[test]
    fn counts_what_end_lines_read_from_the_first_bytes() -> Result<()> {
        let log = r#"{"event":{"kind":"event","action":"connect"}}
{"event":{"kind":"event","action":"connection-end"},"http":{"request":{"method":"GET"},"response":{"status_code":200}},"url":{"path":"/api/v1/items","query":"page=2"}}
{"event":{"kind":"event","action":"connection-end"},"http":{"request":{"method":"GET"}},"url":{"path":"/api/v1/items"}}
{"event":{"kind":"event","action":"connection-end"},"http":{"response":{"status_code":404}},"url":{"path":"/other"}}
{"event":{"kind":"event","action":"connection-end"},"tls":{"client":{"server_name":"svc.bench.test"}}}
{"event":{"kind":"event","action":"connection-end"}}
{"event":{"kind":"alert","action":"connection-end"},"url":{"path":"/api/v1/items"}}
"#;
        let s = summarize_log(log.as_bytes(), "connect", None)?;
        assert_eq!(
            (
                s.events,
                s.ends,
                s.ends_with_path,
                s.ends_with_status,
                s.ends_with_first_bytes
            ),
            (1, 5, 2, 1, 4)
        );
        Ok(())
    }

    #[test]
    fn parses_cpu_ticks_from_proc_stat() {
        // A `comm` with spaces and parentheses, even one that looks like more fields.
        let stat = "4242 (egret (x) 1 2 3) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 5 0 987654 123456789 4567 18446744073709551615 1 1 0 0 0 0 \
                    0 4096 17920 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        let plain = "1 (egret) R 0 1 1 0 -1 4194560 0 0 0 0 7 3 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat_cpu_ticks(plain), Some(10));
        assert_eq!(parse_stat_cpu_ticks("1 (egret) R 0 1"), None);
        assert_eq!(
            parse_stat_cpu_ticks("1 egret R 0 1 1 0 -1 0 0 0 0 0 7 3"),
            None
        );
        assert_eq!(
            parse_stat_cpu_ticks("1 (e) R 0 1 1 0 -1 0 0 0 0 0 x 3 0"),
            None
        );
    }

    #[test]
    fn parses_vm_hwm() {
        let status = "Name:\tegret\nVmPeak:\t  200000 kB\nVmHWM:\t   23456 kB\nVmRSS:\t 20000 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(23456));
        assert_eq!(parse_vm_hwm_kib("Name:\tkthreadd\n"), None);
    }
}
