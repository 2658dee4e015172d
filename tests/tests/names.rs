//! Which names egret believes, and the names a connection's first bytes carry (issue 12).
//!
//! - Trust (docs/dns.md, "Which answers egret believes"): answers from a resolver outside the
//!   policy's `resolvers:`, and answers a process forges for itself (from a trusted address to
//!   a socket that never asked, or racing a real question from another address), name nothing
//!   and approve nothing; they are counted (`dns_untrusted`) and their `dns` lines say why. The
//!   trusted resolver keeps working alongside (and `dns.rs` runs every DNS test through it).
//! - First bytes (docs/events.md, "What the first bytes said"): real TLS on both ends (Python's
//!   `ssl`) and real HTTP (`curl` against `http.server`): server name, ALPN, JA4 and versions;
//!   method, Host, path, query, user agent and status, on each connection's end line; a
//!   ClientHello padded past 1,500 bytes with its server name last, sent over a veth (MTU 1500)
//!   as two packets, still names its connection.
//! - Block mode (docs/policy.md, "Names in the first payload", "Name gate"): an address shared
//!   by an approved and an unapproved name; the name gate with no DNS at all. A refused first
//!   payload never reaches the server and the client fails at once; the end line says why.
//!
//! Servers run in a network namespace the test creates (reached over a veth), or on loopback
//! for DNS; clients run in the test cgroup.

use anyhow::{ensure, Context, Result};
use egret_e2e::dns::{
    check_unnamed, dns_names, domain, last_metric, parse_resolve_counts, ResolveCounts,
};
use egret_e2e::expect::{check_field_absent, check_field_str, check_field_u64, is_flow, is_metric};
use egret_e2e::firstbytes::{name_check, name_mismatch, name_source, sni, strings, Client, Kit};
use egret_e2e::policy::{check_verdict, expect_alert, AlertSource, AlertWant};
use egret_e2e::prometheus::{free_port, http_get};
use egret_e2e::{
    field, field_str, field_u64, prerequisite, run_with_timeout, socket_addr, wait_until,
    AcceptServer, DnsServer, Harness, NetNs, PolicyDir, RunOutput, TestCgroup, LINE_TIMEOUT,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DNS: &str = env!("CARGO_BIN_EXE_egret-dns");
const CURL: &str = "/usr/bin/curl";
/// What the application gets when egret destroys its socket (docs/policy.md).
const ECONNABORTED: i32 = libc::ECONNABORTED;
/// A refused first payload must fail its client at once, not after a timeout.
const REFUSED_WITHIN: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Reading egret's lines

fn has_pid(v: &Value, pid: u32) -> bool {
    field_u64(v, "process.pid") == Some(u64::from(pid))
}

/// Every line egret wrote so far about process `pid` (metric lines aside), one a line: what a
/// failure message shows.
fn written_for(h: &Harness, pid: u32) -> String {
    match h.egret.events() {
        Ok(events) => {
            let lines: Vec<String> = events
                .iter()
                .filter(|v| has_pid(v, pid) && !is_metric(v))
                .map(Value::to_string)
                .collect();
            if lines.is_empty() {
                format!("(no line about pid {pid})")
            } else {
                lines.join("\n")
            }
        }
        Err(e) => format!("(cannot read egret's output: {e:#})"),
    }
}

/// The `action` line of a TCP connection of process `pid` to `port`.
fn tcp_line_of(h: &mut Harness, action: &str, pid: u32, port: u16) -> Result<Value> {
    h.egret
        .wait_for(
            |v| is_flow(v, action, "tcp", port) && has_pid(v, pid),
            LINE_TIMEOUT,
        )
        .with_context(|| format!("no {action} line of pid {pid} to port {port}"))
}

/// The end line of process `pid`'s TCP connection to `port`.
fn end_line_of(h: &mut Harness, pid: u32, port: u16) -> Result<Value> {
    tcp_line_of(h, "connection-end", pid, port)
}

/// The `dns` line of the answer process `pid` received from `source` (an address).
fn dns_line_from(h: &mut Harness, pid: u32, source: &str) -> Result<Value> {
    h.egret
        .wait_for(
            |v| {
                field_str(v, "event.action") == Some("dns-answer")
                    && has_pid(v, pid)
                    && field_str(v, "source.ip") == Some(source)
            },
            LINE_TIMEOUT,
        )
        .with_context(|| format!("no dns line of pid {pid} for an answer from {source}"))
}

/// The `dns` line of the answer from `source` that resolved to `claimed` (whoever got it: a
/// socket that never sent a query has no process egret could name).
fn dns_line_claiming(h: &mut Harness, source: &str, claimed: &str) -> Result<Value> {
    h.egret
        .wait_for(
            |v| {
                field_str(v, "event.action") == Some("dns-answer")
                    && field_str(v, "source.ip") == Some(source)
                    && strings(v, "dns.resolved_ip") == [claimed]
            },
            LINE_TIMEOUT,
        )
        .with_context(|| format!("no dns line for the answer from {source} that says {claimed}"))
}

/// The strings at `path` are exactly `want`, in order.
fn check_strings(v: &Value, path: &str, want: &[&str]) -> Result<()> {
    let got = strings(v, path);
    ensure!(got == want, "{path}: want {want:?}, got {got:?}\nline: {v}");
    Ok(())
}

/// `destination.domain` is `want`, from `source` (`dns`, `tls`, `http`).
fn check_named(v: &Value, want: &str, source: &str) -> Result<()> {
    ensure!(
        domain(v) == Some(want) && name_source(v) == Some(source),
        "destination.domain: want {want:?} (egret.destination.name_source {source:?}), got {:?} ({:?})\nline: {v}",
        domain(v),
        name_source(v)
    );
    Ok(())
}

/// The policy verdict and mode of a line (whatever the outcome).
fn check_policy(v: &Value, verdict: &str, mode: &str, rule: Option<&str>) -> Result<()> {
    check_field_str(v, "egret.policy.verdict", verdict)?;
    check_field_str(v, "egret.policy.mode", mode)?;
    match rule {
        Some(rule) => check_field_str(v, "rule.name", rule),
        None => check_field_absent(v, "rule.name"),
    }
}

/// `egret.destination.name_check` is `want`.
fn check_name_check(v: &Value, want: &str) -> Result<()> {
    ensure!(
        name_check(v) == Some(want),
        "egret.destination.name_check: want {want:?} (docs/events.md: a first payload held for its name check), got {:?}\nline: {v}",
        name_check(v)
    );
    Ok(())
}

/// `egret.destination.name_mismatch` is `want` (absent counts as `false`).
fn check_mismatch(v: &Value, want: bool) -> Result<()> {
    ensure!(
        name_mismatch(v) == want,
        "egret.destination.name_mismatch: want {want} (server name {:?}, egret.dns.names {:?}), got {:?}\nline: {v}",
        sni(v),
        dns_names(v),
        field(v, "egret.destination.name_mismatch")
    );
    Ok(())
}

/// The alert about process `pid`'s connection whose first bytes named `name`.
fn alert_naming(h: &mut Harness, pid: u32, name: &str) -> Result<Value> {
    h.egret
        .wait_for(
            |v| {
                field_str(v, "event.kind") == Some("alert")
                    && has_pid(v, pid)
                    && sni(v) == Some(name)
            },
            LINE_TIMEOUT,
        )
        .with_context(|| {
            format!(
                "want an alert line with tls.client.server_name {name:?} for pid {pid}; egret wrote:\n{}",
                written_for(h, pid)
            )
        })
}

/// `egret.metrics.<name>` of the last metric line, once it is at least `want` (10 s).
fn metric_reaches(h: &mut Harness, name: &str, want: u64) -> Result<Value> {
    let path = format!("egret.metrics.{name}");
    h.egret
        .wait_for(
            |v| is_metric(v) && field_u64(v, &path).is_some_and(|n| n >= want),
            LINE_TIMEOUT,
        )
        .with_context(|| {
            format!(
                "{name} never reached {want}; last metric line says {:?}",
                h.egret.events().ok().and_then(|e| last_metric(&e, name))
            )
        })
}

/// The outcomes of a test's independent cases: every failing one is reported, not only the
/// first.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, what: &str, outcome: Result<()>) {
        if let Err(e) = outcome {
            self.0.push(format!("- {what}: {e:#}"));
        }
    }

    fn finish(self) -> Result<()> {
        ensure!(
            self.0.is_empty(),
            "{} case(s) failed:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Running clients

/// Runs `program args` in `cg` (30 s), whatever its exit status.
fn run_in_cgroup(cg: &TestCgroup, program: &str, args: &[&str]) -> Result<RunOutput> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    cg.command(&mut cmd)?;
    run_with_timeout(&mut cmd, Duration::from_secs(30))
}

/// The client was refused the way a refused first payload must be: it failed with
/// `ECONNABORTED` within [`REFUSED_WITHIN`] of sending it, and the server got no byte.
fn check_cut_off(client: &Client, received: &Value) -> Result<()> {
    ensure!(
        !client.ok() && client.errno() == Some(ECONNABORTED) && client.elapsed() < REFUSED_WITHIN,
        "the client should fail with ECONNABORTED (errno {ECONNABORTED}, its socket destroyed by egret) within {REFUSED_WITHIN:?} of its first payload: {client}"
    );
    ensure!(
        field_u64(received, "received") == Some(0),
        "the server must receive no byte of a refused first payload; it recorded {received}"
    );
    Ok(())
}

/// A test with a network namespace (its server side), a test cgroup and the TLS kit; skipped
/// (or failed under CI) when one of them cannot be had.
fn with_rig(name: &str, test: impl FnOnce(NetNs, TestCgroup, Kit) -> Result<()>) -> Result<()> {
    NetNs::with(name, |ns| {
        Harness::with_cgroup(name, |cg| {
            let Some(kit) = prerequisite(Kit::create(name))? else {
                return Ok(());
            };
            test(ns, cg, kit)
        })
    })
}

/// `--policy FILE --dns-port PORT --dns-events` and `extra`, for [`Harness::start`].
fn egret_args<'a>(policy: &'a str, dns_port: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--policy", policy, "--dns-port", dns_port, "--dns-events"];
    args.extend_from_slice(extra);
    args
}

// ---------------------------------------------------------------------------------------------
// Trust

/// The name every answer in the trust tests is about, approved by the policy.
const GOOD: &str = "good.test";
/// What the trusted resolver answers for it; what the others claim.
const TRUE_IP: &str = "127.0.0.71";
const ROGUE_IP: &str = "127.0.0.72";
const FORGED_IP: &str = "127.0.0.73";
const RACED_IP: &str = "127.0.0.74";
const FORGED_UNTRUSTED_IP: &str = "127.0.0.75";

/// One untrusted answer of the trust tests: who sent it, what it claimed, why it is not
/// believed, the client that got it, and whether the receiving socket had sent a query (only
/// then can egret say which process the answer went to).
struct Untrusted {
    what: &'static str,
    source: &'static str,
    claimed: &'static str,
    reasons: &'static [&'static str],
    pid: u32,
    asked: bool,
}

/// A forgery by the client itself (`egret-dns forge`): what it is, the address it answers from
/// (on the resolver's port), what it claims, why egret must not believe it, and whether the
/// client first asks the trusted resolver (the forgery then races the real answer).
struct Forgery {
    what: &'static str,
    from: &'static str,
    claimed: &'static str,
    reasons: &'static [&'static str],
    ask: bool,
}

const FORGERIES: [Forgery; 3] = [
    Forgery {
        what: "a forged answer from a trusted address to a socket that never asked",
        from: "127.0.0.3",
        claimed: FORGED_IP,
        reasons: &["unsolicited"],
        ask: false,
    },
    Forgery {
        what: "a forged answer from a trusted address racing the real one (asked of 127.0.0.1)",
        from: "127.0.0.3",
        claimed: RACED_IP,
        reasons: &["unsolicited"],
        ask: true,
    },
    Forgery {
        what: "a forged answer from an untrusted address to a socket that never asked",
        from: "127.0.0.4",
        claimed: FORGED_UNTRUSTED_IP,
        reasons: &["resolver", "unsolicited"],
        ask: false,
    },
];

/// egret under a `mode` policy that trusts 127.0.0.1 (the test resolver) and 127.0.0.3 (where
/// no resolver runs) and approves [`GOOD`] by name; a rogue resolver on 127.0.0.2, on the
/// trusted one's port (the `--dns-port`).
struct Trust {
    h: Harness,
    block: bool,
    mode: &'static str,
    dns_port: u16,
    tcp: AcceptServer,
    metrics: std::net::SocketAddr,
    _resolvers: [DnsServer; 2],
    _dir: PolicyDir,
}

impl Trust {
    fn start(cg: TestCgroup, mode: &'static str) -> Result<Self> {
        let tcp = AcceptServer::start(socket_addr("0.0.0.0:0")?)?;
        let trusted = DnsServer::start(Path::new(DNS), &["--a", &format!("{GOOD}={TRUE_IP}")])?;
        let port = trusted.port().to_string();
        let rogue_record = format!("{GOOD}={ROGUE_IP}");
        let rogue_args = ["--port", &port, "--bind", "127.0.0.2", "--a", &rogue_record];
        let rogue = DnsServer::start(Path::new(DNS), &rogue_args)
            .context("the rogue resolver on 127.0.0.2, on the trusted one's port")?;
        let (dir, policy) = PolicyDir::with_policy(
            &format!("trust-{mode}"),
            &format!(
                "mode: {mode}
loopback: audit
resolvers: [\"127.0.0.1\", \"127.0.0.3\"]
rules:
  # The queries, and the forged answers between a client's own sockets.
  - name: udp-on-loopback
    to: [\"127.0.0.0/8\"]
    protocols: [udp]
  - name: good
    to: [\"{GOOD}\"]
    ports: [{tport}]
    protocols: [tcp]
",
                tport = tcp.port()
            ),
        )?;
        let metrics = socket_addr(&format!("127.0.0.1:{}", free_port()?))?;
        let (policy, metrics_arg) = (policy.display().to_string(), metrics.to_string());
        let args = egret_args(&policy, &port, &["--metrics-addr", &metrics_arg]);
        Ok(Self {
            h: Harness::start(cg, &args)?,
            block: mode == "block",
            mode,
            dns_port: trusted.port(),
            tcp,
            metrics,
            _resolvers: [trusted, rogue],
            _dir: dir,
        })
    }

    /// What a connect to an address only an untrusted answer gave does: refused in block
    /// mode, let through (unapproved) in audit mode.
    fn connected(&self) -> &'static str {
        if self.block {
            "eperm"
        } else {
            "ok"
        }
    }

    /// `egret-dns resolve-connect` of [`GOOD`] through `resolver` (an address, on the port).
    fn resolve_connect(&self, resolver: &str) -> Result<(ResolveCounts, RunOutput)> {
        let (server, tport) = (
            format!("{resolver}:{}", self.dns_port),
            self.tcp.port().to_string(),
        );
        let args = [
            "resolve-connect",
            "--server",
            &server,
            GOOD,
            "--port",
            &tport,
        ];
        let out = run_in_cgroup(&self.h.cgroup, DNS, &args)?;
        let counts =
            parse_resolve_counts(&out.stdout).with_context(|| format!("stderr: {}", out.stderr))?;
        Ok((counts, out))
    }

    /// The trusted resolver: believed, named, approved (the control).
    fn trusted_answer(&mut self) -> Result<()> {
        let (counts, out) = self.resolve_connect("127.0.0.1")?;
        ensure!(
            counts.ok == 1,
            "the trusted resolver's answer must let {GOOD} ({TRUE_IP}) be reached: {counts:?}\n{}",
            out.stderr
        );
        let line = dns_line_from(&mut self.h, out.pid, "127.0.0.1")?;
        ensure!(
            field(&line, "egret.dns.trusted") == Some(&Value::Bool(true)),
            "the trusted resolver's answer to the asker's query must be believed (egret.dns.trusted: true)\nline: {line}"
        );
        let ev = tcp_line_of(&mut self.h, "connect", out.pid, self.tcp.port())?;
        check_field_str(&ev, "destination.ip", TRUE_IP)?;
        check_named(&ev, GOOD, "dns")?;
        check_verdict(&ev, "approved", self.mode, Some("good"))
    }

    /// A resolver the policy does not list, answering the question the client asked it.
    fn rogue_answer(&mut self) -> Result<Untrusted> {
        let (counts, out) = self.resolve_connect("127.0.0.2")?;
        let got = if self.block { counts.eperm } else { counts.ok };
        ensure!(
            got == 1,
            "{} mode: the connect to {ROGUE_IP}, which only the untrusted resolver gave, should be {}: {counts:?}\n{}\negret wrote:\n{}",
            self.mode,
            self.connected(),
            out.stderr,
            written_for(&self.h, out.pid)
        );
        Ok(Untrusted {
            what: "the answer of a resolver outside `resolvers:`",
            source: "127.0.0.2",
            claimed: ROGUE_IP,
            reasons: &["resolver"],
            pid: out.pid,
            asked: true,
        })
    }

    /// The client answers itself ([`Forgery`]) and connects to what it claimed.
    fn forged_answer(&mut self, f: &Forgery) -> Result<Untrusted> {
        let record = format!("{GOOD}={}", f.claimed);
        let from = format!("{}:{}", f.from, self.dns_port);
        let (ask, tport) = (
            format!("127.0.0.1:{}", self.dns_port),
            self.tcp.port().to_string(),
        );
        let mut args = vec!["forge", "--a", &record, "--from", &from];
        if f.ask {
            args.extend(["--ask", &ask]);
        }
        args.extend([GOOD, "--port", &tport]);
        let out = run_in_cgroup(&self.h.cgroup, DNS, &args)?;
        let want = format!("forged={} connect={}", f.claimed, self.connected());
        ensure!(
            out.status.success() && out.stdout.trim() == want,
            "{}: the client should print {want:?}; got {} {:?}\nstderr: {}\negret wrote:\n{}",
            f.what,
            out.status,
            out.stdout,
            out.stderr,
            written_for(&self.h, out.pid)
        );
        if f.ask {
            // The real answer, to the question that socket did ask, is believed all the same.
            let real = dns_line_from(&mut self.h, out.pid, "127.0.0.1")?;
            ensure!(
                field(&real, "egret.dns.trusted") == Some(&Value::Bool(true)),
                "{}: the trusted resolver's real answer must be believed\nline: {real}",
                f.what
            );
        }
        Ok(Untrusted {
            what: f.what,
            source: f.from,
            claimed: f.claimed,
            reasons: f.reasons,
            pid: out.pid,
            asked: f.ask,
        })
    }

    /// egret's account of an untrusted answer: a dns line marked untrusted, with why, that
    /// approved nothing; a connect line with no name, not approved (refused in block mode, an
    /// alert in audit mode).
    fn check_untrusted(&mut self, u: &Untrusted, source: &AlertSource<'_>) -> Result<()> {
        let line = dns_line_claiming(&mut self.h, u.source, u.claimed)?;
        ensure!(
            !u.asked || has_pid(&line, u.pid),
            "the dns line should name the process whose socket asked (pid {})\nline: {line}",
            u.pid
        );
        ensure!(
            field(&line, "egret.dns.trusted") == Some(&Value::Bool(false))
                && strings(&line, "egret.dns.untrusted") == u.reasons,
            "want a dns line with egret.dns.trusted false and egret.dns.untrusted {:?}\nline: {line}",
            u.reasons
        );
        ensure!(
            field(&line, "egret.dns.approved_rules")
                .is_none_or(|r| r.as_array().is_some_and(Vec::is_empty)),
            "an untrusted answer must approve nothing in the kernel (egret.dns.approved_rules)\nline: {line}"
        );
        let port = self.tcp.port();
        let ev = self
            .h
            .egret
            .wait_for(
                |v| {
                    is_flow(v, "connect", "tcp", port)
                        && has_pid(v, u.pid)
                        && field_str(v, "destination.ip") == Some(u.claimed)
                },
                LINE_TIMEOUT,
            )
            .with_context(|| format!("no connect line to {}", u.claimed))?;
        check_unnamed(&ev)
            .with_context(|| format!("only an untrusted answer gave {}", u.claimed))?;
        let verdict = if self.block { "blocked" } else { "unapproved" };
        check_verdict(&ev, verdict, self.mode, None)?;
        if !self.block {
            let want = AlertWant::tcp_connect(u.claimed, port, verdict, u.pid, source);
            expect_alert(&mut self.h.egret, &want)?;
        }
        Ok(())
    }

    /// `count` untrusted answers on the metric line, on Prometheus, and at the end.
    fn check_counted(mut self, count: u64) -> Result<()> {
        metric_reaches(&mut self.h, "dns_untrusted", count)?;
        let mut scraped = None;
        wait_until(LINE_TIMEOUT, || {
            let body = http_get(self.metrics, "/metrics")?.body;
            scraped = body
                .lines()
                .find_map(|l| l.strip_prefix("egret_dns_untrusted_total "))
                .and_then(|n| n.trim().parse::<u64>().ok());
            Ok(scraped == Some(count))
        })?;
        ensure!(
            scraped == Some(count),
            "Prometheus egret_dns_untrusted_total: want {count}, got {scraped:?}"
        );
        self.h.egret.stop()?;
        let events = self.h.egret.events()?;
        let last = last_metric(&events, "dns_untrusted");
        ensure!(
            last == Some(count),
            "the final dns_untrusted: want {count} (the untrusted answers sent), got {last:?}"
        );
        self.h.finish()
    }
}

/// What a second answer to an already answered query claims for [`GOOD`].
const SECOND_IP: &str = "127.0.0.76";

/// A query is answered once: the trusted resolver answers [`GOOD`]'s query a second time
/// (same socket, id and question, within the window), with another address; block mode must
/// not approve that address (the first answer's is), and the second answer's `dns` line is
/// marked unsolicited.
#[test]
fn a_second_answer_to_one_query_is_not_believed() -> Result<()> {
    Harness::with_cgroup("names-second-answer", |cg| {
        let tcp = AcceptServer::start(socket_addr("0.0.0.0:0")?)?;
        let dns = DnsServer::start(
            Path::new(DNS),
            &[
                "--a",
                &format!("{GOOD}={TRUE_IP}"),
                "--twice",
                &format!("{GOOD}={SECOND_IP}"),
            ],
        )?;
        let (_dir, policy) = PolicyDir::with_policy(
            "names-second-answer",
            &format!(
                "mode: block\nloopback: audit\nresolvers: [\"127.0.0.1\"]\nrules:\n  - name: dns\n    to: [\"127.0.0.1\"]\n    protocols: [udp]\n  - name: good\n    to: [\"{GOOD}\"]\n    ports: [{port}]\n    protocols: [tcp]\n",
                port = tcp.port()
            ),
        )?;
        let (policy, port) = (policy.display().to_string(), dns.port().to_string());
        let mut h = Harness::start(cg, &egret_args(&policy, &port, &[]))?;
        let (server, tport) = (dns.addr(), tcp.port().to_string());
        // The query's socket stays open 300 ms after the first answer: the second reaches it.
        let args = [
            "resolve-connect",
            "--server",
            &server,
            GOOD,
            "--port",
            &tport,
            "--linger-ms",
            "300",
            "--probe",
            SECOND_IP,
        ];
        let out = run_in_cgroup(&h.cgroup, DNS, &args)?;
        let counts =
            parse_resolve_counts(&out.stdout).with_context(|| format!("stderr: {}", out.stderr))?;
        ensure!(
            counts.ok == 1 && counts.probe_eperm == 1,
            "the first answer's {TRUE_IP} must be reached and the second answer's {SECOND_IP} refused: {counts:?}\n{}\negret wrote:\n{}",
            out.stderr,
            written_for(&h, out.pid)
        );
        let line = dns_line_claiming(&mut h, "127.0.0.1", SECOND_IP)?;
        ensure!(
            field(&line, "egret.dns.trusted") == Some(&Value::Bool(false)),
            "the second answer must not be believed (egret.dns.trusted: false)\nline: {line}"
        );
        h.finish()
    })
}

/// Trusted resolver 127.0.0.1, a rogue resolver, forgeries by the client itself; every answer
/// claims [`GOOD`], which a domain rule approves. Only the trusted resolver's answer names or
/// approves anything; each other is marked untrusted (with why) and counted.
fn untrusted_answers(mode: &'static str) -> Result<()> {
    Harness::with_cgroup(&format!("names-trust-{mode}"), |cg| {
        let mut t = Trust::start(cg, mode)?;
        t.trusted_answer().context("the trusted resolver")?;
        let mut untrusted = vec![t.rogue_answer()?];
        for f in &FORGERIES {
            untrusted.push(t.forged_answer(f)?);
        }
        let source = AlertSource::of("egret-dns", &t.h.cgroup)?;
        for u in &untrusted {
            t.check_untrusted(u, &source).with_context(|| {
                format!("{}; egret wrote:\n{}", u.what, written_for(&t.h, u.pid))
            })?;
        }
        // The trusted resolver still works after all that.
        t.trusted_answer().context("the trusted resolver, again")?;
        t.check_counted(u64::try_from(untrusted.len())?)
    })
}

#[test]
fn untrusted_answers_approve_nothing_in_block_mode() -> Result<()> {
    untrusted_answers("block")
}

#[test]
fn untrusted_answers_name_nothing_in_audit_mode() -> Result<()> {
    untrusted_answers("audit")
}

// ---------------------------------------------------------------------------------------------
// What the first bytes say

/// The JA4 of a ClientHello: `t13d1812h2_85036bcba153_d41ae481755e`-shaped (docs/events.md).
fn ja4_shape(ja4: &str, prefix: &str) -> bool {
    let parts: Vec<&str> = ja4.split('_').collect();
    let hex12 = |s: &&str| s.len() == 12 && s.chars().all(|c| c.is_ascii_hexdigit());
    matches!(parts.as_slice(), [a, b, c] if a.len() == 10 && a.starts_with(prefix) && hex12(b) && hex12(c))
}

#[test]
fn tls_client_hello_names_the_connection_without_dns() -> Result<()> {
    with_rig("names-tls", |ns, cg, kit| {
        let server = kit.tls_server(Some(&ns), ns.ns_v4().into())?;
        let mut h = Harness::start(cg, &[])?;
        let connect = server.connect_arg();

        // A TLS 1.3 client offering a server name and two ALPN protocols.
        let name = "tls.names.test";
        let client = kit.client(
            &h.cgroup,
            &[
                "tls-client",
                "--connect",
                &connect,
                "--sni",
                name,
                "--alpn",
                "h2,http/1.1",
            ],
        )?;
        client.ensure_ok()?;
        let seen = server.record_of(client.local_port()?)?;
        ensure!(
            field_str(&seen, "handshake") == Some("ok") && field_str(&seen, "sni") == Some(name),
            "the server should have completed a handshake for {name}: {seen}"
        );
        let end = end_line_of(&mut h, client.pid, server.port())?;
        let check = || -> Result<()> {
            check_field_str(&end, "tls.client.server_name", name)?;
            check_named(&end, name, "tls")?;
            check_strings(&end, "egret.tls.alpn", &["h2", "http/1.1"])?;
            check_strings(&end, "egret.tls.versions", &["1.3", "1.2"])?;
            let ja4 = field_str(&end, "egret.tls.ja4").unwrap_or_default();
            ensure!(
                ja4_shape(ja4, "t13d") && ja4.get(8..10) == Some("h2"),
                "egret.tls.ja4: want t13d....h2_<12 hex>_<12 hex> (TLS 1.3, a domain SNI, first ALPN h2), got {ja4:?}\nline: {end}"
            );
            check_mismatch(&end, false)?;
            check_field_absent(&end, "egret.destination.name_check")?;
            check_field_absent(&end, "egret.dns")?;
            check_field_absent(&end, "http")?;
            check_field_str(&end, "event.outcome", "success")
        };
        check().context("the end line of a TLS 1.3 connection with SNI and ALPN, and no DNS")?;

        // TLS 1.2 at most, no server name, no ALPN: nothing names the connection.
        let client = kit.client(
            &h.cgroup,
            &["tls-client", "--connect", &connect, "--max-tls", "1.2"],
        )?;
        client.ensure_ok()?;
        let end = end_line_of(&mut h, client.pid, server.port())?;
        let check = || -> Result<()> {
            check_field_absent(&end, "tls.client.server_name")?;
            check_unnamed(&end)?;
            check_field_absent(&end, "egret.destination")?;
            check_strings(&end, "egret.tls.alpn", &[])?;
            check_strings(&end, "egret.tls.versions", &["1.2"])?;
            let ja4 = field_str(&end, "egret.tls.ja4").unwrap_or_default();
            ensure!(
                ja4_shape(ja4, "t12i") && ja4.get(8..10) == Some("00"),
                "egret.tls.ja4: want t12i....00_<12 hex>_<12 hex> (TLS 1.2, no SNI, no ALPN), got {ja4:?}\nline: {end}"
            );
            Ok(())
        };
        check().context("the end line of a TLS 1.2 connection without SNI or ALPN")?;
        h.finish()
    })
}

/// The server name of `large_sni_last.hex`.
const FIXTURE_NAME: &str = "www.example.com";

/// `agent/src/payload/testdata/<name>`: real ClientHellos (see its README).
fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../agent/src/payload/testdata")
        .join(name)
}

/// The extension types of a ClientHello record, in order.
fn hello_extensions(record: &[u8]) -> Result<Vec<u16>> {
    let at = |i: usize| {
        record
            .get(i)
            .copied()
            .map(usize::from)
            .context("short hello")
    };
    let u16_at = |i: usize| -> Result<usize> { Ok(at(i)? << 8 | at(i + 1)?) };
    // Record header (5), handshake header (4), version (2), random (32).
    let mut p = 5 + 4 + 2 + 32;
    p += 1 + at(p)?; // session id
    p += 2 + u16_at(p)?; // cipher suites
    p += 1 + at(p)?; // compression methods
    let end = p + 2 + u16_at(p)?;
    p += 2;
    let mut types = Vec::new();
    while p < end {
        let kind = u16::try_from(u16_at(p)?)?;
        types.push(kind);
        p += 4 + u16_at(p + 2)?;
    }
    ensure!(
        p == end && end == record.len(),
        "extension lengths do not add up"
    );
    Ok(types)
}

#[test]
fn padded_client_hello_spanning_packets_is_named() -> Result<()> {
    // The fixture: Python's real ClientHello (SNI www.example.com, ALPN h2 and http/1.1) with
    // its padding extension grown to make the record 1,901 bytes and the SNI extension moved
    // last; its JA4 is the unpadded hello's (agent/src/payload/testdata/README.md).
    const NAME: &str = FIXTURE_NAME;
    const JA4: &str = "t13d1812h2_85036bcba153_d41ae481755e";
    let fixture = testdata("large_sni_last.hex");
    let hex =
        std::fs::read_to_string(&fixture).with_context(|| format!("read {}", fixture.display()))?;
    let bytes: Vec<u8> = (0..hex.trim().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.trim().get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .context("fixture hex")?;
    let types = hello_extensions(&bytes)?;
    ensure!(
        bytes.len() > 1500 && types.last() == Some(&0) && types.contains(&0x15),
        "the fixture should be a ClientHello past 1,500 bytes whose last extension is the server name and that has a padding extension: {} bytes, extensions {types:x?}",
        bytes.len()
    );
    with_rig("names-padded", |ns, cg, kit| {
        // Over the veth (MTU 1500), one TCP segment per packet: the hello leaves as two.
        let mtu = ns.one_segment_per_packet()?;
        ensure!(mtu <= 1500, "the veth's MTU is {mtu}, not at most 1500");
        let server = kit.raw_server(Some(&ns), ns.ns_v4().into())?;
        let mut h = Harness::start(cg, &[])?;
        let (connect, hex_arg) = (server.connect_arg(), fixture.display().to_string());
        let whole = [
            "raw-client",
            "--connect",
            &connect,
            "--hex",
            &hex_arg,
            "--half-close",
        ];
        let mut split = whole.to_vec();
        // And as two writes 100 ms apart: the second half surely comes later, on its own.
        split.extend(["--split", "1000", "--gap-ms", "100"]);
        let mut findings = Findings::default();
        for (how, args) in [("one write", whole.to_vec()), ("two writes", split)] {
            let client = kit.client(&h.cgroup, &args)?;
            client.ensure_ok()?;
            let seen = server.record_of(client.local_port()?)?;
            ensure!(
                field_u64(&seen, "received") == Some(u64::try_from(bytes.len())?),
                "{how}: the server should have received the whole {}-byte hello: {seen}",
                bytes.len()
            );
            let end = end_line_of(&mut h, client.pid, server.port())?;
            let check = || -> Result<()> {
                check_field_str(&end, "tls.client.server_name", NAME)?;
                check_named(&end, NAME, "tls")?;
                check_field_str(&end, "egret.tls.ja4", JA4)?;
                check_strings(&end, "egret.tls.alpn", &["h2", "http/1.1"])?;
                check_strings(&end, "egret.tls.versions", &["1.3", "1.2"])?;
                check_field_u64(&end, "source.bytes", u64::try_from(bytes.len())?)
            };
            findings.check(
                &format!(
                    "{how}: a {}-byte ClientHello with its server name last, over MTU {mtu} (packets of at most {} bytes of payload)",
                    bytes.len(),
                    mtu.saturating_sub(52)
                ),
                check(),
            );
        }
        findings.finish()?;
        h.finish()
    })
}

#[test]
fn http_requests_and_statuses_on_end_lines() -> Result<()> {
    with_rig("names-http", |ns, cg, kit| {
        egret_e2e::skip::require_program(CURL)?;
        let root = kit.dir().join("www");
        std::fs::create_dir_all(&root)?;
        std::fs::write(root.join("index.html"), "<p>egret e2e</p>\n")?;
        let server = kit.http_server(Some(&ns), ns.ns_v4().into(), &root)?;
        let mut h = Harness::start(cg, &[])?;
        let base = format!("http://{}", server.connect_arg());
        let ip = ns.ns_v4().to_string();
        let agent = "egret-e2e-curl/1.0";

        struct Case<'a> {
            what: &'a str,
            curl: Vec<String>,
            status: u64,
            method: &'a str,
            domain: &'a str,
            path: &'a str,
            query: Option<&'a str>,
            named: bool,
        }
        let cases = [
            Case {
                what: "GET with a Host name (mixed case, with a port) and a query",
                curl: vec![
                    "-H".into(),
                    "Host: Web.Names.TEST:8080".into(),
                    format!("{base}/index.html?lang=en&x=1"),
                ],
                status: 200,
                method: "GET",
                domain: "web.names.test",
                path: "/index.html",
                query: Some("lang=en&x=1"),
                named: true,
            },
            Case {
                what: "GET of a missing page, Host the address",
                curl: vec![format!("{base}/missing/page")],
                status: 404,
                method: "GET",
                domain: &ip,
                path: "/missing/page",
                query: None,
                named: false,
            },
            Case {
                what: "HEAD",
                curl: vec![
                    "-I".into(),
                    "-H".into(),
                    "Host: web.names.test".into(),
                    format!("{base}/"),
                ],
                status: 200,
                method: "HEAD",
                domain: "web.names.test",
                path: "/",
                query: None,
                named: true,
            },
        ];
        for case in cases {
            let mut args: Vec<&str> =
                vec!["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-A", agent];
            args.extend(case.curl.iter().map(String::as_str));
            let out = run_in_cgroup(&h.cgroup, CURL, &args)?;
            ensure!(
                out.status.success() && out.stdout.trim() == case.status.to_string(),
                "{}: curl {args:?} should get {}: {} {:?} {}",
                case.what,
                case.status,
                out.status,
                out.stdout,
                out.stderr
            );
            let end = end_line_of(&mut h, out.pid, server.port())?;
            let check = || -> Result<()> {
                check_field_str(&end, "http.request.method", case.method)?;
                check_field_str(&end, "http.version", "1.1")?;
                check_field_str(&end, "url.domain", case.domain)?;
                check_field_str(&end, "url.path", case.path)?;
                match case.query {
                    Some(q) => check_field_str(&end, "url.query", q)?,
                    None => check_field_absent(&end, "url.query")?,
                }
                check_field_str(&end, "user_agent.original", agent)?;
                check_field_u64(&end, "http.response.status_code", case.status)?;
                check_field_absent(&end, "tls")?;
                if case.named {
                    check_named(&end, case.domain, "http")
                } else {
                    // An address literal names nothing.
                    check_unnamed(&end)?;
                    check_field_absent(&end, "egret.destination")
                }
            };
            check().with_context(|| format!("{}: curl {args:?}", case.what))?;
        }
        h.finish()
    })
}

// ---------------------------------------------------------------------------------------------
// Block mode: an address two names share; the name gate

/// The names the test resolver gives the namespace's address: only `a.test` is approved.
const A: &str = "a.test";
const B: &str = "b.test";
/// A name nobody resolves, sent as a server name to the same address.
const C: &str = "c.test";

/// The shared-address rig: a TLS server in the namespace, the test resolver answering `a.test`
/// and `b.test` with its address, egret under `mode` approving `a.test` only (by name).
fn shared_address(name: &str, mode: &str, test: impl FnOnce(Shared) -> Result<()>) -> Result<()> {
    with_rig(name, |ns, cg, kit| {
        let server = kit.tls_server(Some(&ns), ns.ns_v4().into())?;
        let ip = ns.ns_v4().to_string();
        let dns = DnsServer::start(
            Path::new(DNS),
            &["--a", &format!("{A}={ip}"), "--a", &format!("{B}={ip}")],
        )?;
        // Loopback is approved (the resolver); the namespace's address only through `a.test`.
        let (dir, policy) = PolicyDir::with_policy(
            name,
            &format!(
                "mode: {mode}\nresolvers: [\"127.0.0.1\"]\nrules:\n  - name: a\n    to: [\"{A}\"]\n    ports: [{}]\n    protocols: [tcp]\n",
                server.port()
            ),
        )?;
        let (policy, port) = (policy.display().to_string(), dns.port().to_string());
        let h = Harness::start(cg, &egret_args(&policy, &port, &[]))?;
        test(Shared {
            h,
            kit,
            server,
            dns: dns.addr(),
            _dns: dns,
            _dir: dir,
            _ns: ns,
        })
    })
}

struct Shared {
    h: Harness,
    kit: Kit,
    server: egret_e2e::firstbytes::Server,
    dns: String,
    _dns: DnsServer,
    _dir: PolicyDir,
    _ns: NetNs,
}

impl Shared {
    /// A TLS client that resolves `resolve` itself (from the test resolver) and connects to the
    /// answer with server name `sni` (none: no SNI).
    fn tls(&self, resolve: &str, sni: Option<&str>) -> Result<Client> {
        let connect = self.server.connect_arg();
        let mut args = vec!["tls-client", "--connect", &connect, "--resolve", resolve];
        args.extend(["--dns", &self.dns]);
        if let Some(sni) = sni {
            args.extend(["--sni", sni]);
        }
        self.kit.client(&self.h.cgroup, &args)
    }

    /// What the server recorded of `client`'s connection.
    fn seen(&self, client: &Client) -> Result<Value> {
        self.server.record_of(client.local_port()?)
    }

    fn end(&mut self, client: &Client) -> Result<Value> {
        end_line_of(&mut self.h, client.pid, self.server.port())
    }

    /// Block mode: a client that resolves `resolve` and sends server name `sni` is cut off
    /// ([`check_cut_off`]); its end line says `blocked`, `name_check: refused`, names
    /// `resolve` (from DNS) and `sni`, and `name_mismatch` is `mismatch`; an alert names `sni`.
    fn refused(&mut self, resolve: &str, sni: &str, mismatch: bool) -> Result<Value> {
        let client = self.tls(resolve, Some(sni))?;
        check_cut_off(&client, &self.seen(&client)?)
            .with_context(|| format!("egret wrote:\n{}", written_for(&self.h, client.pid)))?;
        let end = self.end(&client)?;
        check_policy(&end, "blocked", "block", None)?;
        check_name_check(&end, "refused")?;
        check_field_str(&end, "tls.client.server_name", sni)?;
        check_named(&end, resolve, "dns")?;
        check_mismatch(&end, mismatch)?;
        let alert = alert_naming(&mut self.h, client.pid, sni)?;
        check_field_str(&alert, "egret.policy.verdict", "blocked")?;
        Ok(end)
    }
}

#[test]
fn shared_address_block_mode_refuses_the_unapproved_name() -> Result<()> {
    shared_address("names-shared-block", "block", |mut s| {
        // a.test, asked for and sent as the server name: through (the kernel approved the
        // address from the answer; the held ClientHello passes its name check).
        let client = s.tls(A, Some(A))?;
        client.ensure_ok()?;
        let seen = s.seen(&client)?;
        ensure!(
            field_str(&seen, "handshake") == Some("ok") && field_str(&seen, "sni") == Some(A),
            "the server should have completed the handshake for {A}: {seen}"
        );
        let end = s.end(&client)?;
        let check = || -> Result<()> {
            check_policy(&end, "approved", "block", Some("a"))?;
            check_name_check(&end, "passed")?;
            check_named(&end, A, "dns")?;
            check_field_str(&end, "tls.client.server_name", A)?;
            check_mismatch(&end, false)
        };
        check().context("TLS to the address of a.test with server name a.test")?;
        eprintln!("{A} with SNI {A}: {client}");

        // a.test asked for, the server name c.test (nobody resolved it, so it is not among the
        // address's names: a mismatch): refused in flight.
        s.refused(A, C, true)
            .context("TLS to the address of a.test with server name c.test")?;

        // b.test asked for (its answer gives the same address) and sent as the server name:
        // refused in flight, though b.test IS among the address's names (no mismatch).
        let end = s
            .refused(B, B, false)
            .context("TLS to the address of b.test (shared with a.test) with server name b.test")?;
        let names = dns_names(&end);
        ensure!(
            names.contains(&A) && names.contains(&B),
            "egret.dns.names should hold both names the address was given: {names:?}\nline: {end}"
        );

        // a.test asked for, no server name at all: nothing to refuse it by, so it passes.
        let client = s.tls(A, None)?;
        client.ensure_ok()?;
        let end = s.end(&client)?;
        let check = || -> Result<()> {
            check_policy(&end, "approved", "block", Some("a"))?;
            check_name_check(&end, "passed")?;
            check_field_absent(&end, "tls.client.server_name")?;
            check_named(&end, A, "dns")
        };
        check().context("TLS without SNI to the address of a.test")?;

        metric_reaches(&mut s.h, "name_checks_passed", 2)?;
        metric_reaches(&mut s.h, "name_checks_refused", 2)?;

        // A process that resolved nothing sends a payload that is neither TLS nor HTTP to the
        // learned address: it carries no name, so it passes, and the line says so.
        let connect = s.server.connect_arg();
        let client = s.kit.client(
            &s.h.cgroup,
            &[
                "raw-client",
                "--connect",
                &connect,
                "--text",
                "hello egret\n",
                "--half-close",
            ],
        )?;
        client.ensure_ok()?;
        let seen = s.seen(&client)?;
        ensure!(
            field_u64(&seen, "received") == Some(12),
            "the plain payload should reach the server whole: {seen}"
        );
        let end = s.end(&client)?;
        let check = || -> Result<()> {
            check_policy(&end, "approved", "block", Some("a"))?;
            check_name_check(&end, "passed")
        };
        check().context("a nameless plain payload to the learned address")?;
        s.h.finish()
    })
}

/// A payload that hides its name from egret's parser but not from a server is refused on a
/// learned address; none of its bytes reaches the server (issue 12 audit: B1, B2, B4).
#[test]
fn shared_address_block_mode_refuses_names_hidden_from_the_parser() -> Result<()> {
    shared_address("names-shared-hidden", "block", |mut s| {
        // TCP Fast Open: the client's first write goes out in its SYN, without a cookie; the
        // server's namespace accepts such data (0x1 client, 0x2 server, 0x200 no cookie).
        s._ns
            .exec("sysctl", &["-qw", "net.ipv4.tcp_fastopen=0x203"])
            .context("enable TCP Fast Open in the server's namespace")?;
        // A client resolves a.test: the kernel learns the address as approved (through it).
        s.tls(A, Some(A))?.ensure_ok()?;
        let connect = s.server.connect_arg();
        let forbidden = format!("GET / HTTP/1.1\r\nHost: {B}\r\n\r\n");
        let line_len = "GET / HTTP/1.1\r\n".len().to_string();
        let crlf_first = format!("\r\n{forbidden}");
        let cases: [(&str, Vec<&str>); 4] = [
            (
                "the request line alone in the first packet, the Host in a second write (TCP_NODELAY)",
                vec!["--text", &forbidden, "--split", &line_len, "--gap-ms", "300"],
            ),
            (
                "an empty line before the request line (servers skip it)",
                vec!["--text", &crlf_first],
            ),
            (
                "an HTTP method egret does not know",
                vec!["--text", "FETCH / HTTP/1.1\r\nHost: b.test\r\n\r\n"],
            ),
            (
                "the request in the SYN (TCP Fast Open)",
                vec!["--text", &forbidden, "--fastopen"],
            ),
        ];
        let mut findings = Findings::default();
        for (what, extra) in cases {
            let mut args = vec!["raw-client", "--connect", &connect];
            args.extend(extra);
            let client = s.kit.client(&s.h.cgroup, &args)?;
            let mut check = || -> Result<()> {
                check_cut_off(&client, &s.seen(&client)?)
                    .with_context(|| format!("egret wrote:\n{}", written_for(&s.h, client.pid)))?;
                let end = end_line_of(&mut s.h, client.pid, s.server.port())?;
                check_policy(&end, "blocked", "block", None)?;
                check_name_check(&end, "refused")
            };
            findings.check(what, check());
        }
        // The same approved request in the SYN still gets through, whole, once held and
        // checked after the handshake.
        let approved = format!("GET / HTTP/1.1\r\nHost: {A}\r\n\r\n");
        let client = s.kit.client(
            &s.h.cgroup,
            &[
                "raw-client",
                "--connect",
                &connect,
                "--text",
                &approved,
                "--fastopen",
                "--half-close",
            ],
        )?;
        let mut check = || -> Result<()> {
            let seen = s.seen(&client)?;
            ensure!(
                client.ok() && field_u64(&seen, "received") == Some(u64::try_from(approved.len())?),
                "the client should get through and the server receive the whole request: {client}\nthe server recorded {seen}"
            );
            let end = end_line_of(&mut s.h, client.pid, s.server.port())?;
            check_name_check(&end, "passed")?;
            check_named(&end, A, "dns")
        };
        findings.check("an approved request in the SYN (TCP Fast Open)", check());
        findings.finish()?;
        s.h.finish()
    })
}

#[test]
fn shared_address_audit_mode_alerts_on_the_unapproved_name() -> Result<()> {
    shared_address("names-shared-audit", "audit", |mut s| {
        let client = s.tls(A, Some(A))?;
        client.ensure_ok()?;
        let end = s.end(&client)?;
        check_policy(&end, "approved", "audit", Some("a"))
            .and_then(|()| check_field_absent(&end, "egret.destination.name_check"))
            .context("audit mode, TLS to a.test with server name a.test")?;
        let approved_pid = client.pid;

        // b.test: the connection goes through (audit mode holds nothing), the end line says
        // unapproved and an alert names b.test.
        let client = s.tls(B, Some(B))?;
        client.ensure_ok()?;
        let seen = s.seen(&client)?;
        ensure!(
            field_str(&seen, "sni") == Some(B) && field_str(&seen, "handshake") == Some("ok"),
            "audit mode must not hold anything: the server should have completed the handshake for {B}: {seen}"
        );
        let end = s.end(&client)?;
        let check = || -> Result<()> {
            check_policy(&end, "unapproved", "audit", None)?;
            check_field_str(&end, "tls.client.server_name", B)?;
            check_named(&end, B, "dns")?;
            check_mismatch(&end, false)?;
            check_field_absent(&end, "egret.destination.name_check")
        };
        check().context("audit mode, TLS to the shared address with server name b.test")?;
        let alert = alert_naming(&mut s.h, client.pid, B)?;
        check_field_str(&alert, "egret.policy.verdict", "unapproved")?;
        check_field_str(&alert, "destination.ip", &s.server.addr().ip().to_string())?;

        // c.test, which nobody resolved, to the address of a.test: unapproved, a mismatch.
        let client = s.tls(A, Some(C))?;
        client.ensure_ok()?;
        let end = s.end(&client)?;
        let check = || -> Result<()> {
            check_policy(&end, "unapproved", "audit", None)?;
            check_field_str(&end, "tls.client.server_name", C)?;
            check_mismatch(&end, true)
        };
        check().context("audit mode, TLS to the address of a.test with server name c.test")?;
        alert_naming(&mut s.h, client.pid, C)?;

        // No alert about the approved one.
        let stray: Vec<Value> =
            s.h.egret
                .events()?
                .into_iter()
                .filter(|v| field_str(v, "event.kind") == Some("alert") && has_pid(v, approved_pid))
                .collect();
        ensure!(
            stray.is_empty(),
            "alerts about the approved connection: {stray:?}"
        );
        s.h.finish()
    })
}

#[test]
fn name_gate_lets_the_first_payload_name_decide() -> Result<()> {
    with_rig("names-gate", |ns, cg, kit| {
        let server = kit.tls_server(Some(&ns), ns.ns_v4().into())?;
        let other = kit.tls_server(Some(&ns), ns.ns_v4().into())?;
        // No DNS at all; a.test (and the padded fixture's server name) approved by name only;
        // the gate on the server's port.
        let (_dir, policy) = PolicyDir::with_policy(
            "names-gate",
            &format!(
                "mode: block\nname_gate: {{ports: [{port}]}}\nrules:\n  - name: a\n    to: [\"{A}\", \"{FIXTURE_NAME}\"]\n    ports: [{port}]\n    protocols: [tcp]\n",
                port = server.port()
            ),
        )?;
        let policy = policy.display().to_string();
        let mut h = Harness::start(cg, &["--policy", &policy])?;
        let connect = server.connect_arg();
        let tls = |cg: &TestCgroup, sni: Option<&str>| -> Result<Client> {
            let mut args = vec!["tls-client", "--connect", connect.as_str()];
            if let Some(sni) = sni {
                args.extend(["--sni", sni]);
            }
            kit.client(cg, &args)
        };

        // The approved name: through.
        let client = tls(&h.cgroup, Some(A))?;
        client.ensure_ok()?;
        let end = end_line_of(&mut h, client.pid, server.port())?;
        let check = || -> Result<()> {
            check_policy(&end, "approved", "block", Some("a"))?;
            check_name_check(&end, "passed")?;
            check_named(&end, A, "tls")
        };
        check().context("name gate, server name a.test")?;

        // Another name: the ClientHello never reaches the server; the client is cut off.
        let client = tls(&h.cgroup, Some(B))?;
        check_cut_off(&client, &server.record_of(client.local_port()?)?)
            .with_context(|| format!("egret wrote:\n{}", written_for(&h, client.pid)))?;
        let end = end_line_of(&mut h, client.pid, server.port())?;
        let check = || -> Result<()> {
            check_policy(&end, "blocked", "block", None)?;
            check_name_check(&end, "refused")?;
            check_field_str(&end, "tls.client.server_name", B)
        };
        check().context("name gate, server name b.test")?;
        alert_naming(&mut h, client.pid, B)?;

        // An HTTP request whose Host is the approved name: through.
        let request = format!("GET / HTTP/1.1\r\nHost: {A}\r\n\r\n");
        let client = kit.client(
            &h.cgroup,
            &[
                "raw-client",
                "--connect",
                &connect,
                "--text",
                &request,
                "--half-close",
            ],
        )?;
        client.ensure_ok()?;
        let seen = server.record_of(client.local_port()?)?;
        ensure!(
            field_u64(&seen, "received") == Some(u64::try_from(request.len())?),
            "an HTTP request for {A} should reach the server whole: {seen}"
        );
        let end = end_line_of(&mut h, client.pid, server.port())?;
        let check = || -> Result<()> {
            check_name_check(&end, "passed")?;
            check_named(&end, A, "http")
        };
        check().context("name gate, HTTP Host a.test")?;

        // Another port is not gated: refused at connect() as usual.
        let client = kit.client(
            &h.cgroup,
            &["tls-client", "--connect", &other.connect_arg(), "--sni", A],
        )?;
        ensure!(
            !client.ok()
                && client.errno() == Some(libc::EPERM)
                && field_str(&client.json, "stage") == Some("connect"),
            "a port the gate does not list must be refused at connect() (EPERM): {client}"
        );

        // No name at all: a plain payload, a ClientHello without SNI, a ClientHello that never
        // arrives whole (cut after 100 bytes; refused after about a second). None reaches the
        // server; each client is cut off; each end line says why.
        let partial = testdata("python_tls13_sni_alpn.hex").display().to_string();
        let nameless: [(&str, Vec<&str>, &str, Duration); 3] = [
            (
                "a payload that is neither TLS nor HTTP",
                vec![
                    "raw-client",
                    "--connect",
                    &connect,
                    "--text",
                    "hello egret\n",
                ],
                "refused",
                REFUSED_WITHIN,
            ),
            (
                "a ClientHello without a server name",
                vec!["tls-client", "--connect", &connect],
                "refused",
                REFUSED_WITHIN,
            ),
            (
                "a ClientHello cut after 100 bytes",
                vec![
                    "raw-client",
                    "--connect",
                    &connect,
                    "--hex",
                    &partial,
                    "--truncate",
                    "100",
                ],
                "timed-out",
                REFUSED_WITHIN,
            ),
        ];
        let mut findings = Findings::default();
        for (what, args, check_says, within) in nameless {
            let client = kit.client(&h.cgroup, &args)?;
            let seen = server.record_of(client.local_port()?)?;
            ensure!(
                !client.ok() && client.errno() == Some(ECONNABORTED) && client.elapsed() < within,
                "{what}: the client should fail with ECONNABORTED within {within:?}: {client}\negret wrote:\n{}",
                written_for(&h, client.pid)
            );
            ensure!(
                field_u64(&seen, "received") == Some(0),
                "{what}: the server must receive nothing: {seen}"
            );
            let end = end_line_of(&mut h, client.pid, server.port())?;
            let check = || -> Result<()> {
                check_policy(&end, "blocked", "block", None)?;
                check_name_check(&end, check_says)
            };
            findings.check(&format!("name gate, {what}"), check());
        }

        // A ClientHello past 1,500 bytes in one write (as a browser's with a post-quantum key
        // share is), naming an approved name: it passes, whole.
        let fixture = testdata("large_sni_last.hex").display().to_string();
        let client = kit.client(
            &h.cgroup,
            &[
                "raw-client",
                "--connect",
                &connect,
                "--hex",
                &fixture,
                "--half-close",
            ],
        )?;
        let seen = server.record_of(client.local_port()?)?;
        let end = end_line_of(&mut h, client.pid, server.port())?;
        let check = || -> Result<()> {
            ensure!(
                client.ok() && field_u64(&seen, "received") == Some(1901),
                "the client should get through and the server receive all 1,901 bytes: {client}\nthe server recorded {seen}"
            );
            check_name_check(&end, "passed")?;
            check_field_str(&end, "tls.client.server_name", FIXTURE_NAME)
        };
        findings.check(
            &format!(
                "name gate, a 1,901-byte ClientHello for {FIXTURE_NAME} (approved) in one write"
            ),
            check(),
        );
        findings.finish()?;
        h.finish()
    })
}
