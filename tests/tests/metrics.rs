//! The Prometheus endpoint (`--metrics-addr`), scraped by a real Prometheus server.

use anyhow::{ensure, Context, Result};
use egret_e2e::policy::audit_policy;
use egret_e2e::prometheus::{ensure_prometheus, free_port, http_get, http_raw, Prometheus};
use egret_e2e::{
    command, egret_bin, field_str, marker, prerequisite, run_with_timeout, Egret, Harness,
    PolicyDir, TcpServer, UdpServer, LINE_TIMEOUT,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");

/// (kind, action, verdict) → lines, counted from what egret wrote, as `egret_events_total`
/// labels them. The output file's own bookkeeping lines (`egret.output`: where a file's hash
/// chain starts) are not events and not counted.
fn written_counts(lines: &[Value]) -> BTreeMap<(String, String, String), u64> {
    let mut counts = BTreeMap::new();
    for v in lines {
        let kind = field_str(v, "event.kind").unwrap_or_default();
        if (kind != "event" && kind != "alert")
            || field_str(v, "event.dataset") == Some("egret.output")
        {
            continue;
        }
        let key = (
            kind.to_owned(),
            field_str(v, "event.action").unwrap_or_default().to_owned(),
            field_str(v, "egret.policy.verdict")
                .unwrap_or("none")
                .to_owned(),
        );
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

#[test]
fn prometheus_scrapes_what_egret_wrote() -> Result<()> {
    Harness::with_cgroup("metrics", |cgroup| {
        let Some(prometheus_bin) = prerequisite(ensure_prometheus())? else {
            return Ok(());
        };
        let approved = TcpServer::loopback()?;
        let unapproved = TcpServer::loopback()?;
        let udp = UdpServer::loopback()?;
        let (_policies, policy) =
            PolicyDir::with_policy("metrics", &audit_policy("approved-port", approved.port()))?;
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut h = Harness::start(
            cgroup,
            &[
                "--metrics-addr",
                &metrics_addr.to_string(),
                "--policy",
                &policy.display().to_string(),
                "--udp-idle",
                "1",
                "--alert-window",
                "1",
            ],
        )?;

        // egret's own endpoint, directly.
        let ready = http_get(metrics_addr, "/ready")?;
        ensure!(ready.status == 200, "/ready: {ready:?}");
        let health = http_get(metrics_addr, "/healthz")?;
        ensure!(health.status == 200, "/healthz: {health:?}");
        let missing = http_get(metrics_addr, "/nope")?;
        ensure!(missing.status == 404, "/nope: {missing:?}");
        let raw = |request: &[u8]| http_raw(metrics_addr, request, Duration::from_secs(10));
        let post = raw(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")?;
        ensure!(post.status == 405, "POST: {post:?}");
        let garbage = raw(b"\x16\x03\x01 hello\r\n\r\n")?;
        ensure!(garbage.status == 400, "garbage: {garbage:?}");
        let page = http_get(metrics_addr, "/metrics")?;
        ensure!(page.status == 200, "/metrics: {page:?}");
        ensure!(
            page.headers.get("content-type").map(String::as_str)
                == Some("text/plain; version=0.0.4; charset=utf-8"),
            "content type: {:?}",
            page.headers
        );
        for family in [
            "# TYPE egret_events_total counter\n",
            "# TYPE egret_events_lost_kernel_total counter\n",
            "# TYPE egret_events_dropped_userspace_total counter\n",
            "# TYPE egret_ring_buffer_pending_bytes gauge\n",
            "# TYPE egret_policy_mode gauge\n",
            "# TYPE egret_build_info gauge\n",
            "# TYPE process_start_time_seconds gauge\n",
        ] {
            ensure!(
                page.body.contains(family),
                "no {family:?} in\n{}",
                page.body
            );
        }

        // Silent clients while Prometheus scrapes: they must not hold anything up.
        let silent: Vec<TcpStream> = (0..4)
            .map(|_| TcpStream::connect(metrics_addr))
            .collect::<std::io::Result<_>>()?;

        let prometheus =
            Prometheus::start(&prometheus_bin, &[metrics_addr], Duration::from_secs(1))?;

        let m = marker();
        for _ in 0..3 {
            h.run(&mut command(
                CLIENT,
                &["tcp", "127.0.0.1", &approved.port().to_string(), &m],
            ))?;
        }
        for _ in 0..2 {
            h.run(&mut command(
                CLIENT,
                &["tcp", "127.0.0.1", &unapproved.port().to_string(), &m],
            ))?;
        }
        h.run(&mut command(
            CLIENT,
            &[
                "udp-send",
                "127.0.0.1",
                &udp.port().to_string(),
                "--count",
                "3",
                &m,
            ],
        ))?;
        // The UDP flow's line comes once it is idle (1 s).
        h.egret.wait_for(
            |v| {
                field_str(v, "event.action") == Some("send")
                    && field_str(v, "event.kind") == Some("event")
            },
            LINE_TIMEOUT,
        )?;

        // Prometheus' view must converge on what egret wrote.
        let deadline = Instant::now() + Duration::from_secs(45);
        let (mut want, mut got);
        loop {
            let samples = prometheus.query("egret_events_total")?;
            got = BTreeMap::new();
            for s in &samples {
                let label = |name: &str| s.labels.get(name).cloned().unwrap_or_default();
                ensure!(
                    label("job") == "egret" && label("instance") == metrics_addr.to_string(),
                    "unexpected series {s:?}"
                );
                got.insert(
                    (label("kind"), label("action"), label("verdict")),
                    s.value as u64,
                );
            }
            want = written_counts(&h.egret.events()?);
            let key = |k: &str, a: &str, v: &str| (k.to_owned(), a.to_owned(), v.to_owned());
            let complete = want.get(&key("event", "connect", "approved")) == Some(&3)
                && want.get(&key("event", "connect", "unapproved")) == Some(&2)
                && want.get(&key("event", "send", "unapproved")) == Some(&1)
                && want.contains_key(&key("alert", "connect", "unapproved"))
                && want.contains_key(&key("alert", "send", "unapproved"));
            if complete && got == want {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "Prometheus never saw what egret wrote\nwritten:    {want:?}\nprometheus: {got:?}\n--- prometheus.log ---\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }

        // The other series, as Prometheus stored them.
        let one = |promql: &str| -> Result<f64> {
            let samples = prometheus.query(promql)?;
            ensure!(samples.len() == 1, "{promql}: {samples:?}");
            Ok(samples.first().map(|s| s.value).unwrap_or_default())
        };
        ensure!(one(r#"up{job="egret"}"#)? == 1.0, "egret target not up");
        ensure!(one(r#"egret_policy_mode{mode="audit"}"#)? == 1.0, "mode");
        ensure!(one(r#"egret_policy_mode{mode="block"}"#)? == 0.0, "mode");
        ensure!(
            one("egret_ring_buffer_size_bytes")? == 16_777_216.0,
            "ring size"
        );
        ensure!(
            one("egret_events_lost_kernel_total")? == 0.0,
            "kernel losses"
        );
        ensure!(one("egret_events_dropped_userspace_total")? == 0.0, "drops");
        ensure!(
            one("egret_connections_blocked_total")? == 0.0,
            "blocked in audit mode"
        );
        ensure!(
            one("egret_process_table_entries")? > 0.0,
            "process table empty"
        );
        let alerts = h
            .egret
            .events()?
            .iter()
            .filter(|v| field_str(v, "event.kind") == Some("alert"))
            .count();
        ensure!(
            one("sum(egret_alerts_total)")? == alerts as f64,
            "egret_alerts_total (every kind) vs {alerts} alert lines"
        );
        let build = prometheus.query("egret_build_info")?;
        ensure!(
            build.len() == 1
                && build
                    .first()
                    .and_then(|s| s.labels.get("version"))
                    .is_some_and(|v| !v.is_empty()),
            "egret_build_info: {build:?}"
        );
        let start = one("process_start_time_seconds")?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64();
        ensure!(
            start <= now && start > now - 600.0,
            "process_start_time_seconds {start} vs now {now}"
        );

        drop(silent);
        drop(prometheus);
        ensure!(h.egret.running()?, "egret died:\n{}", h.egret.stderr_tail());
        h.finish()
    })
}

#[test]
fn a_metrics_address_that_is_taken_stops_egret() -> Result<()> {
    Harness::with_cgroup("metrics-taken", |cgroup| {
        let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = taken.local_addr()?;
        // It fails before loading anything: no output, no ready file to wait for.
        let mut cmd = Command::new(egret_bin());
        cmd.arg("run").arg("--cgroup").arg(cgroup.path()).args([
            "--output",
            "/dev/null",
            "--metrics-addr",
            &addr.to_string(),
        ]);
        let out = run_with_timeout(&mut cmd, Duration::from_secs(60))?;
        ensure!(
            !out.status.success()
                && out
                    .stderr
                    .contains(&format!("--metrics-addr {addr}: cannot listen")),
            "egret with a taken --metrics-addr: {}\nstderr: {}",
            out.status,
            out.stderr
        );
        // `none`: no endpoint, and egret runs.
        let mut egret = Egret::start(cgroup.path(), &["--metrics-addr", "none"])
            .context("egret with --metrics-addr none")?;
        egret.stop_cleanly()?;
        egret.discard_dir_on_drop();
        Ok(())
    })
}
