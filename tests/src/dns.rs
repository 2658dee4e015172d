//! Pieces for the DNS tests: the `egret-dns` test server as a process the test owns, a TCP
//! listener that accepts on every loopback address, the `resolve-connect` counts, and accessors
//! for the DNS fields of egret's lines.

use crate::json::{field, field_str, field_u64};
pub use crate::run::parse_ready_line;
use crate::run::{ReadyProcess, ServerThread};
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The policy line that makes egret believe the answers of `egret-dns server` (on 127.0.0.1 unless
/// started with `--bind`): egret believes only trusted resolvers (docs/dns.md, "Which answers
/// egret believes"), by default the nameservers of `/etc/resolv.conf`, which the test server is
/// not. Every policy of a test that wants names from the test server carries it.
pub const TRUST_TEST_RESOLVER: &str = "resolvers: [\"127.0.0.1\"]\n";

/// egret's built-in policy (audit mode, loopback approved, no rule: docs/policy.md, "The default
/// policy") that also trusts the test resolver on 127.0.0.1: what a test that gives no policy runs
/// under.
pub fn default_policy_trusting_test_resolver() -> String {
    format!("mode: audit\n{TRUST_TEST_RESOLVER}rules: []\n")
}

/// How long the DNS server may take to bind and print `ready`.
pub const DNS_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `egret-dns server`, started by the test (so outside the test cgroup), on
/// 127.0.0.1 (or its `--bind`) and a free port. Killed and reaped on drop.
pub struct DnsServer {
    process: ReadyProcess,
}

impl DnsServer {
    /// Runs `<bin> server --port 0 <args...>` and waits for its `ready <port>` line.
    pub fn start(bin: &Path, args: &[&str]) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.args(["server", "--port", "0"]).args(args);
        let process = ReadyProcess::start(&mut cmd, "egret-dns server", DNS_READY_TIMEOUT)?;
        Ok(Self { process })
    }

    /// The port it answers on (UDP, and TCP when started with `--tcp`).
    pub fn port(&self) -> u16 {
        self.process.port()
    }

    /// `127.0.0.1:<port>`, for `--server` (of a server started without `--bind`).
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// A TCP listener (for example on `0.0.0.0:0`, which every 127.x.y.z reaches) with a thread
/// that accepts connections and drops them at once, as fast as they come.
pub struct AcceptServer {
    addr: SocketAddr,
    server: ServerThread,
}

impl AcceptServer {
    pub fn start(bind: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(bind).with_context(|| format!("bind tcp {bind}"))?;
        Self::from_listener(listener)
    }

    /// Serves an already bound listener (the benchmark's has a deeper accept queue).
    pub fn from_listener(listener: TcpListener) -> Result<Self> {
        let addr = listener.local_addr()?;
        let server = ServerThread::spawn(move |stop, accepted| {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if conn.is_ok() {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(Self { addr, server })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.server.count()
    }
}

impl Drop for AcceptServer {
    fn drop(&mut self) {
        self.server.request_stop();
        // Wake the blocking accept (from the test process, outside any test cgroup).
        let wake = if self.addr.ip().is_unspecified() {
            SocketAddr::new(
                if self.addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                },
                self.addr.port(),
            )
        } else {
            self.addr
        };
        if TcpStream::connect_timeout(&wake, Duration::from_secs(2)).is_err() {
            // Still blocked in accept: joining would hang.
            self.server.detach();
        }
    }
}

/// The line `egret-dns resolve-connect` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolveCounts {
    pub iterations: u64,
    pub ok: u64,
    pub eperm: u64,
    pub other: u64,
    pub probe_ok: u64,
    pub probe_eperm: u64,
}

/// The one parser of `egret-dns resolve-connect`'s output (tests and benchmark): the
/// `iterations=.. ok=.. eperm=.. other=.. probe_ok=.. probe_eperm=..` line, every key present
/// exactly as the client prints it (other lines, such as `reconnect=..`, are ignored).
pub fn parse_resolve_counts(text: &str) -> Result<ResolveCounts> {
    let line = text
        .lines()
        .find(|l| l.starts_with("iterations="))
        .with_context(|| format!("no iterations= line in {text:?}"))?;
    let mut c = ResolveCounts::default();
    let mut seen = 0;
    for word in line.split_whitespace() {
        let (k, n) = word
            .split_once('=')
            .and_then(|(key, value)| Some((key, value.parse::<u64>().ok()?)))
            .with_context(|| format!("{word:?} is not `key=number` in {line:?}"))?;
        let slot = match k {
            "iterations" => &mut c.iterations,
            "ok" => &mut c.ok,
            "eperm" => &mut c.eperm,
            "other" => &mut c.other,
            "probe_ok" => &mut c.probe_ok,
            "probe_eperm" => &mut c.probe_eperm,
            _ => bail!("unknown key {k:?} in {line:?}"),
        };
        *slot = n;
        seen += 1;
    }
    ensure!(seen == 6, "incomplete resolve-connect line {line:?}");
    Ok(c)
}

/// The value of `key=` in a `key=value` line of `text` (e.g. `reconnect`).
pub fn output_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .map(str::trim)
}

/// True for a `dns` line (`event.action` `dns-answer`) whose question is `name`.
pub fn is_dns_answer(v: &Value, name: &str) -> bool {
    field_str(v, "event.action") == Some("dns-answer")
        && field_str(v, "dns.question.name") == Some(name)
}

/// True for any `dns` line.
pub fn is_any_dns_line(v: &Value) -> bool {
    field_str(v, "event.action") == Some("dns-answer")
        || field_str(v, "event.dataset") == Some("egret.dns")
}

/// `destination.domain` of a connection line.
pub fn domain(v: &Value) -> Option<&str> {
    field_str(v, "destination.domain")
}

/// `egret.dns.names` of a connection line (empty when absent).
pub fn dns_names(v: &Value) -> Vec<&str> {
    field(v, "egret.dns.names")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The connection line carries no name at all: no `destination.domain`, no `egret.dns`.
pub fn check_unnamed(v: &Value) -> Result<()> {
    ensure!(
        domain(v).is_none() && field(v, "egret.dns").is_none_or(Value::is_null),
        "the line should carry no DNS name (destination.domain {:?}, egret.dns.names {:?})\nline: {v}",
        domain(v),
        dns_names(v)
    );
    Ok(())
}

/// The strings of the array at `path` (empty when absent).
pub fn str_array<'a>(v: &'a Value, path: &str) -> Vec<&'a str> {
    field(v, path)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// `egret.metrics.<name>` of the last metric line in `events`.
pub fn last_metric(events: &[Value], name: &str) -> Option<u64> {
    events
        .iter()
        .rev()
        .find(|v| field_str(v, "event.kind") == Some("metric"))
        .and_then(|v| field_u64(v, &format!("egret.metrics.{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_parse() -> Result<()> {
        let c = parse_resolve_counts(
            "iterations=5 ok=4 eperm=1 other=0 probe_ok=0 probe_eperm=4\nreconnect=ok\n",
        )?;
        assert_eq!(c.iterations, 5);
        assert_eq!(c.eperm, 1);
        assert_eq!(c.probe_eperm, 4);
        assert_eq!(output_value("x\nreconnect=ok\n", "reconnect"), Some("ok"));
        assert!(parse_resolve_counts("iterations=5 ok=4").is_err());
        assert!(parse_resolve_counts("hello").is_err());
        assert_eq!(parse_ready_line("ready 5353\n"), Some(5353));
        assert_eq!(parse_ready_line("ready 0\n"), None);
        assert_eq!(parse_ready_line("ready\n"), None);
        assert_eq!(parse_ready_line(""), None);
        Ok(())
    }

    #[test]
    fn accessors() {
        let v = json!({"event": {"action": "dns-answer", "kind": "metric"},
            "dns": {"question": {"name": "a.test"}},
            "destination": {"domain": "a.test"},
            "egret": {"dns": {"names": ["a.test", "b.test"]}, "metrics": {"dns_malformed": 3}}});
        assert!(is_dns_answer(&v, "a.test"));
        assert!(!is_dns_answer(&v, "b.test"));
        assert_eq!(domain(&v), Some("a.test"));
        assert_eq!(dns_names(&v), vec!["a.test", "b.test"]);
        assert_eq!(last_metric(&[v], "dns_malformed"), Some(3));
    }
}
