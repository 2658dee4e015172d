//! The learned baseline (docs/baseline.md): per workload, the destinations it reached while
//! learning; after it, one `new-destination` alert per destination new to the workload; the
//! state file surviving restarts, SIGKILL and corruption; error spikes from real HTTP 403s.

use anyhow::{ensure, Context, Result};
use egret_e2e::expect::is_flow;
use egret_e2e::firstbytes::Kit;
use egret_e2e::{
    command, egret_bin, field_str, field_u64, marker, prerequisite, run_in, run_with_timeout,
    Egret, Harness, NetNs, ScratchDir, TcpServer, TestCgroup, LINE_TIMEOUT,
};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");
const CURL: &str = "/usr/bin/curl";

/// `--baseline-learn LEARN --state-dir DIR`, written every second.
fn baseline_args(dir: &Path, learn: &str) -> Vec<String> {
    vec![
        "--baseline-learn".into(),
        learn.into(),
        "--state-dir".into(),
        dir.display().to_string(),
        "--baseline-flush-interval".into(),
        "1".into(),
    ]
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// One TCP connect from `cg` to 127.0.0.1:`port`; waits for its `connect` line. Returns the
/// client's pid.
fn connect(egret: &mut Egret, cg: &TestCgroup, port: u16) -> Result<u32> {
    let m = marker();
    let out = run_in(
        cg,
        &mut command(CLIENT, &["tcp", "127.0.0.1", &port.to_string(), &m]),
    )?;
    egret.wait_for(
        |v| {
            is_flow(v, "connect", "tcp", port)
                && field_u64(v, "process.pid") == Some(u64::from(out.pid))
        },
        LINE_TIMEOUT,
    )?;
    Ok(out.pid)
}

fn is_new_destination(v: &Value) -> bool {
    field_str(v, "event.kind") == Some("alert")
        && field_str(v, "event.action") == Some("new-destination")
}

fn new_destinations(egret: &Egret) -> Result<Vec<Value>> {
    Ok(egret
        .events()?
        .into_iter()
        .filter(is_new_destination)
        .collect())
}

fn destination_of(port: u16) -> String {
    format!("127.0.0.1:{port}/tcp")
}

/// Waits until egret says learning ended.
fn wait_learning_over(egret: &mut Egret) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !egret.stderr_text()?.contains("baseline: learning ended") {
        ensure!(egret.running()?, "egret exited: {}", egret.stderr_tail());
        ensure!(
            Instant::now() < deadline,
            "learning did not end; stderr:\n{}",
            egret.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// `egret baseline ARGS --state-dir DIR`, which must succeed; its stdout.
fn baseline_command(dir: &Path, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(egret_bin());
    cmd.arg("baseline").args(args).arg("--state-dir").arg(dir);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30))?;
    ensure!(
        out.status.success(),
        "egret baseline {args:?}: {}\n{}",
        out.status,
        out.stderr
    );
    Ok(out.stdout)
}

/// The last metric line's `egret.metrics.NAME`.
fn last_metric(egret: &Egret, name: &str) -> Result<u64> {
    egret
        .events()?
        .iter()
        .rev()
        .find(|v| field_str(v, "event.kind") == Some("metric"))
        .and_then(|v| field_u64(v, &format!("egret.metrics.{name}")))
        .with_context(|| format!("no metric line with {name}"))
}

#[test]
fn three_learned_destinations_stay_quiet_a_fourth_alerts_once_and_a_restart_keeps_the_baseline(
) -> Result<()> {
    Harness::with_cgroup("baseline-learn", |cg| {
        let state = ScratchDir::create("baseline-state")?;
        let servers: Vec<TcpServer> = (0..5)
            .map(|_| TcpServer::loopback())
            .collect::<Result<_>>()?;
        let ports: Vec<u16> = servers.iter().map(TcpServer::port).collect();
        let args = baseline_args(state.path(), "6s");
        let mut h = Harness::start(cg, &strs(&args))?;
        for &port in &ports[..3] {
            connect(&mut h.egret, &h.cgroup, port)?;
        }
        wait_learning_over(&mut h.egret)?;
        ensure!(
            new_destinations(&h.egret)?.is_empty(),
            "alerts while learning"
        );
        for &port in &ports[..3] {
            connect(&mut h.egret, &h.cgroup, port)?;
        }
        let first = connect(&mut h.egret, &h.cgroup, ports[3])?;
        connect(&mut h.egret, &h.cgroup, ports[3])?;
        // A barrier: everything before this connection's line is written.
        connect(&mut h.egret, &h.cgroup, ports[0])?;
        let alerts = new_destinations(&h.egret)?;
        ensure!(
            alerts.len() == 1,
            "want one new-destination alert: {alerts:#?}"
        );
        let alert = &alerts[0];
        ensure!(
            field_str(alert, "egret.baseline.destination")
                == Some(destination_of(ports[3]).as_str())
        );
        ensure!(field_str(alert, "egret.baseline.workload_kind") == Some("executable"));
        ensure!(
            field_str(alert, "egret.baseline.workload") == Some(CLIENT),
            "{alert}"
        );
        ensure!(
            field_u64(alert, "process.pid") == Some(u64::from(first)),
            "{alert}"
        );
        ensure!(field_str(alert, "rule.name") == Some("new-destination"));
        ensure!(
            field_str(alert, "message").is_some_and(|m| m.contains(CLIENT)),
            "{alert}"
        );
        // The built-in policy no longer alerts on every destination.
        let unapproved = h
            .egret
            .events()?
            .into_iter()
            .filter(|v| field_str(v, "rule.name") == Some("unapproved-destination"))
            .count();
        ensure!(
            unapproved == 0,
            "{unapproved} unapproved-destination alerts"
        );

        // Restart: the baseline (with the fourth, now known) is read back.
        h.egret.stop_cleanly()?;
        let shown = baseline_command(state.path(), &["show"])?;
        ensure!(
            shown.contains(&format!("executable:{CLIENT}: 4 destinations")),
            "{shown}"
        );
        ensure!(
            shown.contains(&format!("{}  ", destination_of(ports[3]))),
            "{shown}"
        );
        h.egret.restart(h.cgroup.path(), &strs(&args))?;
        for &port in &ports[..4] {
            connect(&mut h.egret, &h.cgroup, port)?;
        }
        connect(&mut h.egret, &h.cgroup, ports[4])?;
        connect(&mut h.egret, &h.cgroup, ports[0])?;
        let alerts = new_destinations(&h.egret)?;
        ensure!(
            alerts.len() == 2,
            "want one more alert, for the fifth: {alerts:#?}"
        );
        ensure!(
            field_str(&alerts[1], "egret.baseline.destination")
                == Some(destination_of(ports[4]).as_str())
        );
        ensure!(
            h.egret
                .stderr_text()?
                .contains("learning ended, new destinations alert"),
            "{}",
            h.egret.stderr_tail()
        );
        // The export is a policy egret accepts, approving what was learned.
        let policy = baseline_command(state.path(), &["export", "--loopback", "audit"])?;
        let file = state.path().join("exported.yaml");
        std::fs::write(&file, &policy)?;
        let mut check = Command::new(egret_bin());
        check.args(["policy", "check"]).arg(&file);
        let out = run_with_timeout(&mut check, Duration::from_secs(30))?;
        ensure!(out.status.success(), "{}\n{policy}", out.stdout);
        for &port in &ports[..3] {
            ensure!(
                policy.contains(&port.to_string()),
                "{port} missing:\n{policy}"
            );
        }
        ensure!(
            !policy.contains(&ports[4].to_string()),
            "new ones only with --include-new:\n{policy}"
        );
        h.finish()
    })
}

#[test]
fn a_destination_known_to_one_unit_is_new_for_another() -> Result<()> {
    Harness::with_cgroup("baseline-units", |cg| {
        let state = ScratchDir::create("baseline-units")?;
        let alpha = cg.child("alpha.service")?;
        let beta = cg.child("beta.service")?;
        let a = TcpServer::loopback()?;
        let b = TcpServer::loopback()?;
        let args = baseline_args(state.path(), "6s");
        let mut h = Harness::start(cg, &strs(&args))?;
        connect(&mut h.egret, &alpha, a.port())?;
        connect(&mut h.egret, &beta, b.port())?;
        wait_learning_over(&mut h.egret)?;
        connect(&mut h.egret, &alpha, a.port())?;
        let pid = connect(&mut h.egret, &beta, a.port())?;
        connect(&mut h.egret, &beta, b.port())?;
        connect(&mut h.egret, &alpha, b.port())?;
        connect(&mut h.egret, &alpha, a.port())?;
        let alerts = new_destinations(&h.egret)?;
        let got: Vec<(Option<&str>, Option<&str>)> = alerts
            .iter()
            .map(|v| {
                (
                    field_str(v, "egret.baseline.workload"),
                    field_str(v, "egret.baseline.destination"),
                )
            })
            .collect();
        let (da, db) = (destination_of(a.port()), destination_of(b.port()));
        ensure!(
            got == vec![
                (Some("beta.service"), Some(da.as_str())),
                (Some("alpha.service"), Some(db.as_str()))
            ],
            "{got:?}"
        );
        ensure!(field_str(&alerts[0], "egret.baseline.workload_kind") == Some("unit"));
        ensure!(field_u64(&alerts[0], "process.pid") == Some(u64::from(pid)));
        ensure!(field_str(&alerts[0], "egret.systemd.unit") == Some("beta.service"));
        let result = h.finish();
        drop(alpha);
        drop(beta);
        result
    })
}

#[test]
fn a_corrupt_state_file_is_set_aside_said_counted_and_learning_starts_afresh() -> Result<()> {
    Harness::with_cgroup("baseline-corrupt", |cg| {
        let state = ScratchDir::create("baseline-corrupt")?;
        let garbage = b"{\"version\":1,\"learning_started\":17,\"workl";
        std::fs::write(state.path().join("baseline.json"), garbage)?;
        let a = TcpServer::loopback()?;
        let b = TcpServer::loopback()?;
        let args = baseline_args(state.path(), "5s");
        let mut h = Harness::start(cg, &strs(&args))?;
        let stderr = h.egret.stderr_text()?;
        ensure!(
            stderr.contains("moved aside to") && stderr.contains("learning starts afresh"),
            "{stderr}"
        );
        let aside: Vec<_> = std::fs::read_dir(state.path())?
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("baseline.json.bad-")
            })
            .collect();
        ensure!(aside.len() == 1, "{aside:?}");
        ensure!(
            std::fs::read(aside[0].path())? == garbage,
            "set aside as it was"
        );
        connect(&mut h.egret, &h.cgroup, a.port())?;
        wait_learning_over(&mut h.egret)?;
        connect(&mut h.egret, &h.cgroup, a.port())?;
        connect(&mut h.egret, &h.cgroup, b.port())?;
        connect(&mut h.egret, &h.cgroup, a.port())?;
        let alerts = new_destinations(&h.egret)?;
        ensure!(alerts.len() == 1, "{alerts:#?}");
        ensure!(
            field_str(&alerts[0], "egret.baseline.destination")
                == Some(destination_of(b.port()).as_str())
        );
        h.egret.wait_for(
            |v| field_u64(v, "egret.metrics.baseline_state_set_aside") == Some(1),
            LINE_TIMEOUT,
        )?;
        h.finish()
    })
}

/// A state file of `n` destinations in the documented format (docs/baseline.md), large enough
/// that writing it takes a while.
fn big_state(n: u32) -> String {
    let dests: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{{\"host\":\"10.{}.{}.{}\",\"port\":443,\"transport\":\"tcp\",\"first_seen\":1,\"last_seen\":2,\"connections\":3,\"new\":false}}",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            )
        })
        .collect();
    format!(
        "{{\"version\":1,\"learning_started\":1,\"learn_secs\":3600,\"workloads\":[{{\"kind\":\"unit\",\"name\":\"big.service\",\"first_seen\":1,\"last_seen\":2,\"destinations\":[{}]}}]}}\n",
        dests.join(",")
    )
}

#[test]
fn sigkill_at_random_points_of_heavy_state_writes_leaves_a_usable_file() -> Result<()> {
    const ROUNDS: u32 = 8;
    const SEEDED: u32 = 200_000;
    Harness::with_cgroup("baseline-kill", |cg| {
        let state = ScratchDir::create("baseline-kill")?;
        std::fs::write(state.path().join("baseline.json"), big_state(SEEDED))?;
        let mut args = baseline_args(state.path(), "1h");
        args.extend(["--baseline-max-destinations".into(), "1000000".into()]);
        let mut h = Harness::start(cg, &strs(&args))?;
        let seed = u64::from(std::process::id());
        let mut cut_short = 0u32;
        for round in 0..ROUNDS {
            if round > 0 {
                h.egret.restart(h.cgroup.path(), &strs(&args))?;
            }
            // New destinations all the time keep the state changing: a write every second.
            let stop = std::sync::atomic::AtomicBool::new(false);
            let ms = 1_000
                + (seed
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(u64::from(round) * 7_919)
                    % 2_000);
            let cgroup = &h.cgroup;
            std::thread::scope(|scope| -> Result<()> {
                let sprayer = scope.spawn(|| -> Result<()> {
                    let mut port = 20_000u16 + u16::try_from(round)? * 2_000;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let first = port.to_string();
                        let args = ["udp-spray", "127.0.0.9", &first, "--ports", "20"];
                        run_in(cgroup, &mut command(CLIENT, &args))?;
                        port = port.wrapping_add(20).max(20_000);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Ok(())
                });
                // Somewhere in the next 1-3 s: in the middle of a write, or between two.
                std::thread::sleep(Duration::from_millis(ms));
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                h.egret.kill9()?;
                sprayer
                    .join()
                    .map_err(|_| anyhow::anyhow!("sprayer panicked"))?
            })?;
            if state.path().join("baseline.json.tmp").exists() {
                cut_short += 1;
            }
            let shown = baseline_command(state.path(), &["show", "unit:big.service"])?;
            let first_line = shown.lines().next().unwrap_or_default().to_owned();
            ensure!(
                shown.contains("unit:big.service: 200000 destinations"),
                "round {round} (killed after {ms} ms): {first_line}"
            );
        }
        eprintln!("{cut_short} of {ROUNDS} kills landed in the middle of a write");
        h.egret.restart(h.cgroup.path(), &strs(&args))?;
        let stderr = h.egret.stderr_text()?;
        ensure!(!stderr.contains("moved aside"), "{stderr}");
        if cut_short > 0 {
            ensure!(
                stderr.contains("removed a write cut short"),
                "a leftover temporary file is removed at start"
            );
        }
        h.finish()
    })
}

#[test]
fn a_run_of_403s_after_a_normal_period_is_one_spike_and_an_occasional_404_is_not() -> Result<()> {
    NetNs::with("baseline-spike", |ns| {
        Harness::with_cgroup("baseline-spike", |cg| {
            let Some(kit) = prerequisite(Kit::create("baseline-spike"))? else {
                return Ok(());
            };
            egret_e2e::skip::require_program(CURL)?;
            let state = ScratchDir::create("baseline-spike")?;
            let root = kit.dir().join("www");
            std::fs::create_dir_all(&root)?;
            std::fs::write(root.join("index.html"), "<p>egret e2e</p>\n")?;
            let server = kit.http_server(Some(&ns), ns.ns_v4().into(), &root)?;
            let base = format!("http://{}", server.connect_arg());
            let args = baseline_args(state.path(), "1s");
            let mut h = Harness::start(cg, &strs(&args))?;
            let get = |h: &Harness, path: &str| -> Result<String> {
                let out = h.run(Command::new(CURL).args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "5",
                    &format!("{base}{path}"),
                ]))?;
                Ok(out.stdout)
            };
            let is_end = |v: &Value| {
                field_str(v, "event.action") == Some("connection-end")
                    && field_u64(v, "destination.port") == Some(u64::from(server.port()))
            };
            // A normal period, with one 404 in it.
            let mut codes = Vec::new();
            for i in 0..20 {
                codes.push(get(&h, if i == 10 { "/missing" } else { "/" })?);
            }
            ensure!(
                codes.iter().filter(|c| *c == "404").count() == 1,
                "{codes:?}"
            );
            h.egret.wait_for_count(is_end, 20, LINE_TIMEOUT)?;
            let spikes = |e: &Egret| -> Result<Vec<Value>> {
                Ok(e.events()?
                    .into_iter()
                    .filter(|v| field_str(v, "event.action") == Some("spike"))
                    .collect())
            };
            ensure!(spikes(&h.egret)?.is_empty(), "one 404 is no spike");
            // The server starts refusing most requests.
            std::fs::write(root.join(".forbid"), "")?;
            let mut codes = Vec::new();
            for _ in 0..30 {
                codes.push(get(&h, "/")?);
            }
            let forbidden = codes.iter().filter(|c| *c == "403").count();
            ensure!(forbidden >= 20, "{codes:?}");
            h.egret.wait_for_count(is_end, 50, LINE_TIMEOUT)?;
            std::thread::sleep(Duration::from_secs(2));
            let found = spikes(&h.egret)?;
            ensure!(found.len() == 1, "want one spike alert: {found:#?}");
            let spike = &found[0];
            ensure!(field_str(spike, "event.kind") == Some("alert"));
            ensure!(
                field_u64(spike, "egret.spike.last_status") == Some(403),
                "{spike}"
            );
            ensure!(
                field_u64(spike, "egret.spike.http_errors").is_some_and(|n| n >= 5),
                "{spike}"
            );
            ensure!(
                field_str(spike, "egret.baseline.workload") == Some(CURL),
                "{spike}"
            );
            ensure!(
                field_str(spike, "egret.baseline.destination")
                    == Some(format!("{}:{}/tcp", ns.ns_v4(), server.port()).as_str()),
                "{spike}"
            );
            h.egret.wait_for(
                |v| field_u64(v, "egret.metrics.spike_alerts") == Some(1),
                LINE_TIMEOUT,
            )?;
            h.finish()
        })
    })
}

#[test]
fn a_hundred_thousand_destinations_from_one_workload_stay_within_the_bound() -> Result<()> {
    Harness::with_cgroup("baseline-bound", |cg| {
        let state = ScratchDir::create("baseline-bound")?;
        let args = baseline_args(state.path(), "1h");
        let mut h = Harness::start(cg, &strs(&args))?;
        for (ip, ports) in [("127.0.0.2", 60_000u32), ("127.0.0.3", 40_000)] {
            run_in(
                &h.cgroup,
                &mut command(
                    CLIENT,
                    &["udp-spray", ip, "1", "--ports", &ports.to_string()],
                ),
            )?;
        }
        // Until egret has read them all (or counted those the ring buffer lost): its output
        // stops growing.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last = 0;
        loop {
            std::thread::sleep(Duration::from_secs(2));
            let now = std::fs::metadata(h.egret.events_path())?.len();
            if now == last || Instant::now() > deadline {
                break;
            }
            last = now;
        }
        let rss = h.egret.peak_rss_kib()?;
        // The final metric line, written at shutdown whatever the load.
        h.egret.stop_cleanly()?;
        let destinations = last_metric(&h.egret, "baseline_destinations")?;
        let evicted = last_metric(&h.egret, "baseline_evicted")?;
        let received = last_metric(&h.egret, "events_received")?;
        ensure!(destinations <= 1000, "{destinations} destinations kept");
        ensure!(
            destinations + evicted >= 50_000,
            "{destinations} kept + {evicted} evicted, {received} events received"
        );
        // docs/baseline.md: the default bounds keep the baseline under 250 MB; one workload
        // at its bound is a fraction of that.
        ensure!(rss < 300 * 1024, "peak RSS {rss} KiB");
        h.egret.discard_dir_on_drop();
        Ok(())
    })
}
