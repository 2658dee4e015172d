//! Pure parsing for the benchmark: load-generator output, egret's JSON log, /proc.

use std::io::BufRead;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// The self-metrics egret reports in `event.kind == "metric"` lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Metrics {
    pub events_received: u64,
    pub events_lost_kernel: u64,
    pub events_dropped_userspace: u64,
    /// DNS responses egret received from the kernel.
    pub dns_messages: u64,
}

/// What one egret output file says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LogSummary {
    /// Event lines (`event.kind == "event"`) whose `event.action` is the workload's action
    /// (`connect` / `send`).
    pub events: u64,
    /// Of those, lines with `egret.policy.verdict == "approved"`.
    pub approved: u64,
    /// Of those, lines with `egret.policy.verdict == "blocked"` (refused in the kernel).
    pub blocked: u64,
    /// Of those, lines whose `destination.domain` is the expected name (0 when none is).
    pub with_domain: u64,
    /// `connection-end` lines (TCP connections followed to their end).
    pub ends: u64,
    /// The last metric line, if any.
    pub metrics: Option<Metrics>,
    /// Lines that were not JSON.
    pub unparsable_lines: u64,
}

/// The fields of one egret line the summary needs.
struct LineFields<'a> {
    kind: Option<&'a str>,
    action: Option<&'a str>,
    verdict: Option<&'a str>,
    domain: Option<&'a str>,
}

/// The same fields, deserialized without building a JSON tree (allocation-free; the
/// benchmark's logs run to hundreds of MB). Strings are borrowed, so a value with an escape
/// fails this parse and the line takes the general path.
#[derive(Deserialize)]
struct FastLine<'a> {
    #[serde(borrow, default)]
    event: Option<FastEvent<'a>>,
    #[serde(borrow, default)]
    destination: Option<FastDestination<'a>>,
    #[serde(borrow, default)]
    egret: Option<FastEgret<'a>>,
}

#[derive(Deserialize)]
struct FastEvent<'a> {
    #[serde(borrow, default)]
    kind: Option<&'a str>,
    #[serde(borrow, default)]
    action: Option<&'a str>,
}

#[derive(Deserialize)]
struct FastDestination<'a> {
    #[serde(borrow, default)]
    domain: Option<&'a str>,
}

#[derive(Deserialize)]
struct FastEgret<'a> {
    #[serde(borrow, default)]
    policy: Option<FastPolicy<'a>>,
}

#[derive(Deserialize)]
struct FastPolicy<'a> {
    #[serde(borrow, default)]
    verdict: Option<&'a str>,
}

/// Dotted keys on the way to a field the summary reads (`{"egret.policy": {..}}`,
/// `{"event.kind": ..}`); a line that has one takes the general path. Cheap to test (std's
/// substring search); a value such as `"egret.network"` does not match.
const DOTTED_KEYS: [&str; 5] = [
    "\"event.kind\"",
    "\"event.action\"",
    "\"egret.policy",
    "\"policy.verdict\"",
    "\"destination.domain\"",
];

/// The fast path: an event line as egret writes it (nested objects). `None` for anything
/// else (metric lines, flattened keys, escapes, not JSON), which the general path handles.
fn fast_fields(line: &str) -> Option<LineFields<'_>> {
    if DOTTED_KEYS.iter().any(|key| line.contains(key)) {
        return None;
    }
    let parsed: FastLine<'_> = serde_json::from_str(line).ok()?;
    let event = parsed.event?;
    let kind = event.kind?;
    if kind == "metric" {
        return None;
    }
    Some(LineFields {
        kind: Some(kind),
        action: event.action,
        verdict: parsed.egret.and_then(|e| e.policy).and_then(|p| p.verdict),
        domain: parsed.destination.and_then(|d| d.domain),
    })
}

/// Counts `event.action == action` event lines (their policy verdicts, and those whose
/// `destination.domain` is `domain`) and keeps the last metric line.
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
        if let Some(fields) = fast_fields(&line) {
            summary.count(&fields, action, domain);
            continue;
        }
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            summary.unparsable_lines += 1;
            continue;
        };
        let fields = LineFields {
            kind: lookup_str(&value, "event.kind"),
            action: lookup_str(&value, "event.action"),
            verdict: lookup_str(&value, "egret.policy.verdict"),
            domain: lookup_str(&value, "destination.domain"),
        };
        summary.count(&fields, action, domain);
        if fields.kind == Some("metric") {
            summary.metrics = Some(metrics_of(&value)?);
        }
    }
    Ok(summary)
}

impl LogSummary {
    fn count(&mut self, fields: &LineFields<'_>, action: &str, domain: Option<&str>) {
        if fields.kind == Some("event") && fields.action == Some("connection-end") {
            self.ends += 1;
        }
        if fields.kind != Some("event") || fields.action != Some(action) {
            return;
        }
        self.events += 1;
        match fields.verdict {
            Some("approved") => self.approved += 1,
            Some("blocked") => self.blocked += 1,
            _ => {}
        }
        if domain.is_some() && fields.domain == domain {
            self.with_domain += 1;
        }
    }
}

fn metrics_of(value: &Value) -> Result<Metrics> {
    let field = |name: &str| -> Result<u64> {
        let path = format!("egret.metrics.{name}");
        match lookup(value, &path) {
            Some(v) => v
                .as_u64()
                .with_context(|| format!("{path} is not a count: {v}")),
            None => bail!("metric line without {path}: {value}"),
        }
    };
    Ok(Metrics {
        events_received: field("events_received")?,
        events_lost_kernel: field("events_lost_kernel")?,
        events_dropped_userspace: field("events_dropped_userspace")?,
        dns_messages: field("dns_messages")?,
    })
}

fn lookup_str<'a>(value: &'a Value, path: &str) -> Option<&'a str> {
    lookup(value, path)?.as_str()
}

/// Looks up a dotted ECS field, whether the JSON nests it (`{"event":{"action":..}}`),
/// flattens it (`{"event.action":..}`) or mixes both.
pub fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(found) = value.get(path) {
        return Some(found);
    }
    path.match_indices('.').find_map(|(dot, _)| {
        let child = value.get(path.get(..dot)?)?;
        lookup(child, path.get(dot + 1..)?)
    })
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
    fn looks_up_nested_flat_and_mixed_fields() {
        let nested: Value = serde_json::json!({"event": {"action": "connect"}});
        let flat: Value = serde_json::json!({"event.action": "connect"});
        let mixed: Value = serde_json::json!({"egret": {"metrics.events_received": 7}});
        assert_eq!(lookup_str(&nested, "event.action"), Some("connect"));
        assert_eq!(lookup_str(&flat, "event.action"), Some("connect"));
        assert_eq!(
            lookup(&mixed, "egret.metrics.events_received"),
            Some(&Value::from(7))
        );
        assert_eq!(lookup(&nested, "event.kind"), None);
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
        let last = Metrics {
            events_received: 3,
            events_lost_kernel: 2,
            events_dropped_userspace: 1,
            dns_messages: 4,
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
{"event":{"kind":"event","action":"connect"},"destination.domain":"svc.bench.test"}
"#;
        let summary = summarize_log(log.as_bytes(), "connect", Some("svc.bench.test"))?;
        assert_eq!((summary.events, summary.with_domain), (4, 2));
        let summary = summarize_log(log.as_bytes(), "connect", None)?;
        assert_eq!((summary.events, summary.with_domain), (4, 0));
        Ok(())
    }

    #[test]
    fn flattened_keys_and_escapes_take_the_general_path() -> Result<()> {
        let log = r#"{"event":{"kind":"event","action":"connect"},"egret.policy.verdict":"blocked"}
{"event":{"kind":"event","action":"connect"},"egret":{"policy.verdict":"approved"}}
{"event":{"kind":"event","action":"conn\u0065ct"},"destination":{"domain":"svc.bench.test"}}
{"event":{"kind":"event","action":"connect"},"process":{"command_line":"a \"b\" c"},"destination":{"domain":"svc.bench.test"}}
"#;
        assert!(fast_fields(log.lines().next().unwrap_or_default()).is_none());
        let egret_line = r#"{"event":{"kind":"event","action":"send","dataset":"egret.network"},"egret":{"policy":{"verdict":"approved"}}}"#;
        assert!(fast_fields(egret_line).is_some());
        let summary = summarize_log(log.as_bytes(), "connect", Some("svc.bench.test"))?;
        assert_eq!(
            (
                summary.events,
                summary.approved,
                summary.blocked,
                summary.with_domain
            ),
            (4, 1, 1, 2)
        );
        Ok(())
    }

    #[test]
    fn metric_line_missing_a_field_is_an_error() {
        let log = r#"{"event":{"kind":"metric"},"egret":{"metrics":{"events_received":1}}}"#;
        assert!(summarize_log(log.as_bytes(), "connect", None).is_err());
    }

    #[test]
    fn parses_vm_hwm() {
        let status = "Name:\tegret\nVmPeak:\t  200000 kB\nVmHWM:\t   23456 kB\nVmRSS:\t 20000 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(23456));
        assert_eq!(parse_vm_hwm_kib("Name:\tkthreadd\n"), None);
    }
}
