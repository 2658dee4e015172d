//! Pure parsing for the benchmark: load-generator output, egret's JSON log, /proc.

use std::io::BufRead;

use anyhow::{bail, Context as _, Result};
use serde::Serialize;
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
    /// The last metric line, if any.
    pub metrics: Option<Metrics>,
    /// Lines that were not JSON.
    pub unparsable_lines: u64,
}

/// Counts `event.action == action` event lines (and their policy verdicts) and keeps the last
/// metric line.
pub fn summarize_log(reader: impl BufRead, action: &str) -> Result<LogSummary> {
    let mut summary = LogSummary::default();
    for line in reader.lines() {
        let line = line.context("reading egret output")?;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            summary.unparsable_lines += 1;
            continue;
        };
        if lookup_str(&value, "event.kind") == Some("event")
            && lookup_str(&value, "event.action") == Some(action)
        {
            summary.events += 1;
            match lookup_str(&value, "egret.policy.verdict") {
                Some("approved") => summary.approved += 1,
                Some("blocked") => summary.blocked += 1,
                _ => {}
            }
        }
        if lookup_str(&value, "event.kind") == Some("metric") {
            summary.metrics = Some(metrics_of(&value)?);
        }
    }
    Ok(summary)
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
{"event":{"kind":"metric"},"egret":{"metrics":{"events_received":1,"events_lost_kernel":0,"events_dropped_userspace":0}}}
not json

{"event":{"kind":"metric"},"egret":{"metrics":{"events_received":3,"events_lost_kernel":2,"events_dropped_userspace":1}}}
"#;
        let summary = summarize_log(log.as_bytes(), "connect")?;
        assert_eq!(summary.events, 2);
        assert_eq!(summary.unparsable_lines, 1);
        let last = Metrics {
            events_received: 3,
            events_lost_kernel: 2,
            events_dropped_userspace: 1,
        };
        assert_eq!(summary.metrics, Some(last));
        assert_eq!(summarize_log("".as_bytes(), "send")?, LogSummary::default());
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
        let summary = summarize_log(log.as_bytes(), "connect")?;
        assert_eq!(
            (summary.events, summary.approved, summary.blocked),
            (3, 1, 1)
        );
        Ok(())
    }

    #[test]
    fn metric_line_missing_a_field_is_an_error() {
        let log = r#"{"event":{"kind":"metric"},"egret":{"metrics":{"events_received":1}}}"#;
        assert!(summarize_log(log.as_bytes(), "connect").is_err());
    }

    #[test]
    fn parses_vm_hwm() {
        let status = "Name:\tegret\nVmPeak:\t  200000 kB\nVmHWM:\t   23456 kB\nVmRSS:\t 20000 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(23456));
        assert_eq!(parse_vm_hwm_kib("Name:\tkthreadd\n"), None);
    }
}
