//! Overload faults egret must ride out (docs/reliability.md): egret itself stopped (`SIGSTOP`)
//! under load, the kernel's bounded maps flooded with distinct flows, and the process table
//! at its bound under a storm of short-lived processes. Each is counted in the metric line and
//! on the Prometheus endpoint, and none makes a verdict or an attribution wrong.

use anyhow::{bail, ensure, Context, Result};
use egret_e2e::dns::{last_metric, TRUST_TEST_RESOLVER};
use egret_e2e::expect::{has_arg, is_flow, is_metric};
use egret_e2e::policy::check_verdict;
use egret_e2e::prometheus::{free_port, http_get};
use egret_e2e::{
    expect_intact, field, field_str, field_u64, marker, socket_addr, AcceptServer, DnsServer,
    Harness, PolicyDir, RunOutput, ScratchDir, TestCgroup, LINE_TIMEOUT,
};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");
const DNS: &str = env!("CARGO_BIN_EXE_egret-dns");

/// A client running in the background for the length of a test; killed if the test fails.
struct Background(Option<Child>);

impl Background {
    fn spawn(cgroup: &TestCgroup, program: &str, args: &[&str]) -> Result<Self> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        cgroup.command(&mut cmd)?;
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {program} {args:?}"))?;
        Ok(Self(Some(child)))
    }

    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// Waits (at most `timeout`) for it to exit on its own; it must succeed.
    fn wait(mut self, timeout: Duration) -> Result<()> {
        let mut child = self.0.take().context("already waited")?;
        let status = egret_e2e::run::wait_child(&mut child, timeout)?;
        ensure!(status.success(), "background client failed: {status}");
        Ok(())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `program args` in the test cgroup whatever its exit status.
fn try_run(h: &Harness, program: &str, args: &[&str]) -> Result<RunOutput> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    h.try_run(&mut cmd)
}

/// `name` on egret's Prometheus page (a sample without labels).
fn scraped(addr: SocketAddr, name: &str) -> Result<f64> {
    let page = http_get(addr, "/metrics")?;
    ensure!(page.status == 200, "/metrics: {page:?}");
    page.body
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .with_context(|| format!("no {name} sample in\n{}", page.body))
}

/// Waits for a metric line whose counter `name` is at least `min`; returns its value.
fn metric_reaches(h: &mut Harness, name: &str, min: u64, timeout: Duration) -> Result<u64> {
    let path = format!("egret.metrics.{name}");
    let line = h
        .egret
        .wait_for(
            |v| is_metric(v) && field_u64(v, &path).is_some_and(|n| n >= min),
            timeout,
        )
        .with_context(|| {
            let events = h.egret.events().unwrap_or_default();
            format!(
                "{name} never reached {min}: last {:?}",
                last_metric(&events, name)
            )
        })?;
    field_u64(&line, &path).context("counter vanished")
}

/// A connect the kernel must refuse (EPERM: the client prints `errno=1`).
fn expect_refused(out: &RunOutput, what: &str) -> Result<()> {
    ensure!(
        !out.status.success() && out.stdout.contains("errno=1"),
        "{what} must be refused with EPERM: {}\nstdout: {}\nstderr: {}",
        out.status,
        out.stdout,
        out.stderr
    );
    Ok(())
}

/// egret stopped for 10 s while a connect loop runs: the kernel keeps judging (a forbidden
/// connect made while egret is stopped is refused, an allowed one goes through), the events it
/// cannot queue are counted and reported once egret continues (metric line and Prometheus),
/// and the rest is whole: every line parses, the chain verifies, egret exits cleanly.
#[test]
fn sigstop_under_load_counts_what_the_kernel_lost_and_enforcement_never_stops() -> Result<()> {
    const STOPPED: Duration = Duration::from_secs(10);
    Harness::with_cgroup("sigstop", |cg| {
        let allowed = AcceptServer::start(socket_addr("127.0.0.1:0")?)?;
        let forbidden = AcceptServer::start(socket_addr("127.0.0.1:0")?)?;
        let (_dir, policy) = PolicyDir::with_policy(
            "sigstop",
            &format!(
                "mode: block\nloopback: audit\nrules:\n  - name: allowed\n    to: [\"127.0.0.1/32\"]\n    ports: [{}]\n    protocols: [tcp]\n",
                allowed.port()
            ),
        )?;
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut h = Harness::start(
            cg,
            &[
                "--policy",
                &policy.display().to_string(),
                "--ring-buffer-size",
                "65536",
                "--metrics-addr",
                &metrics_addr.to_string(),
            ],
        )?;
        let (ok_port, no_port) = (allowed.port().to_string(), forbidden.port().to_string());
        let scratch = ScratchDir::create("sigstop-load")?;
        let stop_file = scratch.path().join(format!("{}.stop", marker()));
        let stop_arg = stop_file.display().to_string();
        let load = Background::spawn(
            &h.cgroup,
            CLIENT,
            &[
                "connect-loop",
                "--interval-ms",
                "0",
                "--stop-file",
                &stop_arg,
                "127.0.0.1",
                &ok_port,
            ],
        )?;
        h.egret.wait_for(
            |v| is_flow(v, "connect", "tcp", allowed.port()),
            LINE_TIMEOUT,
        )?;

        h.egret.signal(Signal::SIGSTOP)?;
        let stopped_at = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        // Enforcement is the kernel's: it goes on while egret cannot run.
        let refused = try_run(&h, CLIENT, &["tcp", "127.0.0.1", &no_port])?;
        expect_refused(&refused, "a forbidden connect while egret is stopped")?;
        let passed = try_run(&h, CLIENT, &["tcp", "127.0.0.1", &ok_port])?;
        ensure!(
            passed.status.success(),
            "an allowed connect while egret is stopped failed: {}\nstdout: {}\nstderr: {}",
            passed.status,
            passed.stdout,
            passed.stderr
        );
        std::thread::sleep(STOPPED.saturating_sub(stopped_at.elapsed()));
        let accepted = allowed.accepted();
        h.egret.signal(Signal::SIGCONT)?;
        std::fs::write(&stop_file, b"")?;
        load.wait(Duration::from_secs(30))?;
        ensure!(accepted > 100, "the load made only {accepted} connections");

        let lost = metric_reaches(&mut h, "events_lost_kernel", 1, Duration::from_secs(30))?;
        let scraped_lost = scraped(metrics_addr, "egret_events_lost_kernel_total")?;
        ensure!(
            scraped_lost >= lost as f64,
            "Prometheus egret_events_lost_kernel_total {scraped_lost} < metric line's {lost}"
        );
        // egret after the stop: a new refusal is written, judged right.
        let m = marker();
        let refused = try_run(&h, CLIENT, &["tcp", "127.0.0.1", &no_port, &m])?;
        expect_refused(&refused, "a forbidden connect after SIGCONT")?;
        let line = h.egret.wait_for(
            |v| is_flow(v, "connect", "tcp", forbidden.port()) && has_arg(v, &m),
            LINE_TIMEOUT,
        )?;
        check_verdict(&line, "blocked", "block", None)?;

        h.egret.stop_cleanly()?;
        let events = h.egret.events()?;
        for v in &events {
            if is_flow(v, "connect", "tcp", allowed.port()) {
                check_verdict(v, "approved", "block", Some("allowed"))?;
                ensure!(
                    field_str(v, "process.executable") == Some(CLIENT),
                    "connect line of another process: {v}"
                );
            }
        }
        let last_lost = last_metric(&events, "events_lost_kernel").unwrap_or(0);
        ensure!(last_lost >= lost, "the last metric line forgot the losses");
        eprintln!(
            "sigstop: {accepted} connections by SIGCONT, {last_lost} events lost and counted, {} lines",
            events.len()
        );
        expect_intact(&[h.egret.events_path()])?;
        h.egret.discard_dir_on_drop();
        Ok(())
    })
}

/// The kernel's bounded maps, made small (`--max-udp-flows`, `--max-tcp-connections`,
/// `--max-learned-addresses` 64) and flooded with distinct flows: each eviction that costs
/// something is counted (metric line and Prometheus), lines of evicted flows and connections
/// keep their process, and no verdict is wrong: of the 401 learned addresses at most 64 stay
/// allowed, every other one is refused with a `blocked` line, one learned later is allowed.
/// Which ones the map forgets is the kernel's choice: its LRU is approximate (an entry still on
/// another CPU's pending list can outlive newer ones), so the test does not name them.
#[test]
fn kernel_map_floods_count_evictions_and_never_allow_wrongly() -> Result<()> {
    const UDP_PORTS: u16 = 400;
    const FIRST_UDP_PORT: u16 = 41000;
    const HELD: u64 = 300;
    const LEARNED: u64 = 400;
    Harness::with_cgroup("map-floods", |cg| {
        let tcp = AcceptServer::start(socket_addr("0.0.0.0:0")?)?;
        let dns = DnsServer::start(
            Path::new(DNS),
            &["--ttl", "120", "--rotate", "svc.flood.test=127.7.0.0/16"],
        )?;
        let (_dir, policy) = PolicyDir::with_policy(
            "map-floods",
            &format!(
                "mode: block\nloopback: audit\n{TRUST_TEST_RESOLVER}rules:\n  - name: local\n    to: [\"127.0.0.1/32\"]\n  - name: flood\n    to: [\"*.flood.test\"]\n    ports: [{}]\n    protocols: [tcp]\n",
                tcp.port()
            ),
        )?;
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let dns_port = dns.port().to_string();
        let mut h = Harness::start(
            cg,
            &[
                "--policy",
                &policy.display().to_string(),
                "--dns-port",
                &dns_port,
                "--udp-idle",
                "1",
                "--max-udp-flows",
                "64",
                "--max-tcp-connections",
                "64",
                "--max-learned-addresses",
                "64",
                "--metrics-addr",
                &metrics_addr.to_string(),
            ],
        )?;

        // UDP: one socket, 400 flows.
        let m = marker();
        let first = FIRST_UDP_PORT.to_string();
        let ports = UDP_PORTS.to_string();
        h.run(Command::new(CLIENT).args([
            "udp-spray",
            "127.0.0.1",
            &first,
            "--ports",
            &ports,
            &m,
        ]))?;
        let udp_evicted = metric_reaches(&mut h, "udp_flows_evicted", 1, Duration::from_secs(20))?;
        ensure!(
            scraped(metrics_addr, "egret_udp_flows_evicted_total")? >= 1.0,
            "Prometheus: no UDP flow eviction"
        );

        // TCP: 300 connections open at once, then closed.
        let t = marker();
        let port = tcp.port().to_string();
        let held = h.run(Command::new(CLIENT).args([
            "tcp-hold",
            "127.0.0.1",
            &port,
            "--count",
            &HELD.to_string(),
            &t,
        ]))?;
        ensure!(
            held.stdout.contains(&format!("held={HELD}")),
            "tcp-hold: {}",
            held.stdout
        );
        let tcp_missing = metric_reaches(&mut h, "tcp_state_missing", 1, Duration::from_secs(20))?;
        ensure!(
            scraped(metrics_addr, "egret_tcp_state_missing_total")? >= 1.0,
            "Prometheus: no TCP state eviction"
        );
        let ends = h.egret.wait_for_count(
            |v| {
                field_str(v, "event.action") == Some("connection-end")
                    && field_u64(v, "destination.port") == Some(u64::from(tcp.port()))
                    && field_str(v, "destination.ip") == Some("127.0.0.1")
            },
            usize::try_from(HELD)?,
            Duration::from_secs(30),
        )?;

        // DNS: the first learned address, then 400 more into a map of 64.
        let server = dns.addr();
        let first = try_run(&h, DNS, &["resolve", "--server", &server, "svc.flood.test"])?;
        let first_addr = first
            .stdout
            .lines()
            .next()
            .filter(|_| first.status.success())
            .with_context(|| format!("resolve: {}\n{}", first.stdout, first.stderr))?
            .trim()
            .to_owned();
        // `svc.flood.test` resolved through the test's server, a connect to each answer.
        let resolve_connect = |h: &Harness, more: &[&str]| {
            let args = [
                "resolve-connect",
                "--server",
                &server,
                "svc.flood.test",
                "--port",
                &port,
            ];
            try_run(h, DNS, &[&args[..], more].concat())
        };
        let flood = resolve_connect(&h, &["--count", &LEARNED.to_string(), "--list"])?;
        ensure!(
            flood.stdout.contains(&format!("ok={LEARNED} eperm=0")),
            "every connect to a just-learned address must be allowed: {}\n{}",
            flood.stdout,
            flood.stderr
        );
        let mut learned = vec![first_addr];
        learned.extend(
            flood
                .stdout
                .lines()
                .filter_map(|l| l.strip_prefix("connected="))
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_owned),
        );
        ensure!(
            learned.len() == 1 + usize::try_from(LEARNED)?,
            "resolve-connect --list: {}",
            flood.stdout
        );
        // Every learned address again: the map holds at most 64 of them.
        let d = marker();
        let mut args = vec!["connect-each", "--port", &port, "--marker", &d];
        args.extend(learned.iter().map(String::as_str));
        let probe = try_run(&h, DNS, &args)?;
        let mut refused = Vec::new();
        let mut allowed = Vec::new();
        for line in probe.stdout.lines() {
            match line.split_whitespace().collect::<Vec<_>>()[..] {
                [ip, "ok"] => allowed.push(ip.to_owned()),
                [ip, "eperm"] => refused.push(ip.to_owned()),
                [ip, what] if !ip.contains('=') => bail!("connect to {ip}: {what}"),
                _ => {}
            }
        }
        ensure!(
            allowed.len() + refused.len() == learned.len()
                && allowed.len() <= 64
                && allowed.last() == learned.last(),
            "of {} learned addresses at most 64 (the map's size) may stay allowed, the last one \
             learned among them; allowed: {allowed:?}\n{}",
            learned.len(),
            probe.stderr
        );
        for (ip, verdict) in [
            (&refused[0], "blocked"),
            (&allowed[allowed.len() - 1], "approved"),
        ] {
            let line = h.egret.wait_for(
                |v| {
                    is_flow(v, "connect", "tcp", tcp.port())
                        && field_str(v, "destination.ip") == Some(ip.as_str())
                        && has_arg(v, &d)
                },
                LINE_TIMEOUT,
            )?;
            check_verdict(
                &line,
                verdict,
                "block",
                (verdict == "approved").then_some("flood"),
            )?;
        }
        let learned_evicted = metric_reaches(
            &mut h,
            "learned_addresses_evicted",
            1,
            Duration::from_secs(10),
        )?;
        ensure!(
            scraped(metrics_addr, "egret_learned_addresses_evicted_total")? >= 1.0,
            "Prometheus: no learned address eviction"
        );
        let again = resolve_connect(&h, &[])?;
        ensure!(
            again.stdout.contains("ok=1 eperm=0"),
            "an address learned after the flood must be allowed: {}\n{}",
            again.stdout,
            again.stderr
        );

        h.egret.stop_cleanly()?;
        let events = h.egret.events()?;
        check_flood_lines(
            &events,
            &m,
            &t,
            FIRST_UDP_PORT..FIRST_UDP_PORT + UDP_PORTS,
            dns.port(),
        )?;
        eprintln!(
            "map floods: {udp_evicted} UDP flows evicted, {tcp_missing} TCP states missing ({} end lines), {learned_evicted} learned addresses evicted, {} of {} still allowed",
            ends.len(),
            allowed.len(),
            learned.len()
        );
        expect_intact(&[h.egret.events_path()])?;
        h.egret.discard_dir_on_drop();
        Ok(())
    })
}

/// Every line of the UDP spray (marker `udp`) and of the held connections (marker `tcp`)
/// carries its own process; every sprayed port has its `send` line, approved. The test's DNS
/// server may have drawn one of the sprayed ports: lines of its other clients there are skipped.
fn check_flood_lines(
    events: &[Value],
    udp: &str,
    tcp: &str,
    ports: std::ops::Range<u16>,
    dns_port: u16,
) -> Result<()> {
    let mut sent = std::collections::BTreeSet::new();
    for v in events {
        let port = field_u64(v, "destination.port").unwrap_or(0);
        let transport = field_str(v, "network.transport");
        if transport == Some("udp")
            && field_str(v, "event.kind") == Some("event")
            && ports.contains(&u16::try_from(port).unwrap_or(0))
            && (port != u64::from(dns_port) || has_arg(v, udp))
        {
            ensure!(has_arg(v, udp), "a UDP flood line lost its process: {v}");
            check_verdict(v, "approved", "block", Some("local"))?;
            sent.insert(port);
        }
        if transport == Some("tcp")
            && field_str(v, "event.action") == Some("connection-end")
            && field_str(v, "destination.ip") == Some("127.0.0.1")
        {
            ensure!(
                has_arg(v, tcp),
                "an end line of a held connection lost its process: {v}"
            );
            ensure!(
                field_str(v, "event.outcome") == Some("success") && field(v, "error").is_none(),
                "a held connection's end line is wrong (its kernel entry was evicted): {v}"
            );
        }
    }
    ensure!(
        sent.len() == ports.len(),
        "{} of {} sprayed ports have lines",
        sent.len(),
        ports.len()
    );
    Ok(())
}

/// `--max-processes 1000` and 100,000 short-lived processes a minute for 20 s, while a
/// long-lived process connects every 200 ms: the table stays at its bound (exited processes
/// evicted first, counted), and every line of the long-lived process names it right.
#[test]
fn process_table_at_its_bound_keeps_live_processes_right() -> Result<()> {
    const RATE: &str = "1700";
    Harness::with_cgroup("proc-bound", |cg| {
        let tcp = AcceptServer::start(socket_addr("127.0.0.1:0")?)?;
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut h = Harness::start(
            cg,
            &[
                "--max-processes",
                "1000",
                "--metrics-addr",
                &metrics_addr.to_string(),
            ],
        )?;
        let scratch = ScratchDir::create("proc-bound")?;
        let stop_file = scratch.path().join(format!("{}.stop", marker()));
        let stop_arg = stop_file.display().to_string();
        let port = tcp.port().to_string();
        let long_lived = Background::spawn(
            &h.cgroup,
            CLIENT,
            &[
                "connect-loop",
                "--interval-ms",
                "200",
                "--stop-file",
                &stop_arg,
                "127.0.0.1",
                &port,
            ],
        )?;
        let pid = long_lived.pid();
        let storm = h.run(Command::new(CLIENT).args([
            "spawn-loop",
            "--rate",
            RATE,
            "--duration-ms",
            "20000",
            "/bin/true",
        ]))?;
        std::fs::write(&stop_file, b"")?;
        long_lived.wait(Duration::from_secs(10))?;
        metric_reaches(
            &mut h,
            "process_table_exited_evicted",
            1,
            Duration::from_secs(20),
        )?;
        ensure!(
            scraped(metrics_addr, "egret_process_table_exited_evictions_total")? >= 1.0,
            "Prometheus: no process table eviction"
        );
        h.egret.stop_cleanly()?;
        let events = h.egret.events()?;
        let mut lines = 0;
        for v in &events {
            if !is_flow(v, "connect", "tcp", tcp.port()) {
                continue;
            }
            lines += 1;
            let right = field_u64(v, "process.pid") == Some(u64::from(pid))
                && field_str(v, "process.executable") == Some(CLIENT)
                && has_arg(v, &stop_arg)
                && field_u64(v, "process.parent.pid") == Some(u64::from(std::process::id()));
            ensure!(right, "the long-lived process is misnamed: {v}");
        }
        ensure!(
            lines >= 50,
            "only {lines} connect lines of the long-lived process"
        );
        let size = last_metric(&events, "process_table_size").unwrap_or(u64::MAX);
        ensure!(
            size <= 1000,
            "process_table_size {size} past --max-processes 1000"
        );
        // Every process of the storm went into the table: all but the last 1000 were evicted.
        let spawned: u64 = storm
            .stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix("spawned=")?.parse().ok())
            .context("spawn-loop printed no count")?;
        let evicted = last_metric(&events, "process_table_exited_evicted").unwrap_or(0)
            + last_metric(&events, "process_table_evicted").unwrap_or(0);
        let lost = last_metric(&events, "events_lost_kernel").unwrap_or(0);
        ensure!(
            evicted + 1000 + lost >= spawned,
            "{spawned} processes through a table of 1000, only {evicted} evictions counted ({lost} events lost)"
        );
        eprintln!(
            "process storm: {} {evicted} processes evicted, {lost} events lost, {lines} lines of the long-lived process right",
            storm.stdout.trim()
        );
        h.egret.discard_dir_on_drop();
        Ok(())
    })
}
