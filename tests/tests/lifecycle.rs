//! Metrics lines and clean shutdown.

use anyhow::{ensure, Context, Result};
use egret_e2e::expect::{is_flow, is_metric};
use egret_e2e::{field, field_str, field_u64, Harness, TcpServer, UdpServer, LINE_TIMEOUT};
use std::process::Command;

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");
const COUNTERS: [&str; 5] = [
    "events_received",
    "events_lost_kernel",
    "events_dropped_userspace",
    "decode_errors",
    "process_table_size",
];

fn check_metric(v: &serde_json::Value) -> Result<()> {
    ensure!(
        field_str(v, "event.module") == Some("egret"),
        "metric event.module\nline: {v}"
    );
    ensure!(
        field_str(v, "event.action") == Some("stats"),
        "metric event.action\nline: {v}"
    );
    for c in COUNTERS {
        ensure!(
            field_u64(v, &format!("egret.metrics.{c}")).is_some(),
            "egret.metrics.{c} missing\nline: {v}"
        );
    }
    Ok(())
}

#[test]
fn metrics_and_clean_shutdown() -> Result<()> {
    Harness::with_egret("lifecycle", &[], |mut h| {
        let tcp = TcpServer::loopback()?;
        let udp = UdpServer::loopback()?;
        for _ in 0..3 {
            h.run(Command::new(CLIENT).args(["tcp", "127.0.0.1", &tcp.port().to_string()]))?;
        }
        h.run(Command::new(CLIENT).args([
            "udp-send",
            "127.0.0.1",
            &udp.port().to_string(),
            "--count",
            "5",
        ]))?;
        h.egret.wait_for_count(
            |v| is_flow(v, "connect", "tcp", tcp.port()),
            3,
            LINE_TIMEOUT,
        )?;
        h.egret.wait_for_flow("send", "udp", udp.port())?;
        // Periodic metrics (--metrics-interval 1).
        let periodic = h.egret.wait_for(is_metric, LINE_TIMEOUT)?;
        check_metric(&periodic)?;

        let before = h.egret.events()?;
        h.egret.stop_cleanly()?;
        let raw = std::fs::read_to_string(h.egret.events_path())?;
        ensure!(
            raw.ends_with('\n'),
            "output does not end with a complete line"
        );
        let after = h.egret.events()?;
        ensure!(
            after.len() > before.len() && after.get(..before.len()) == Some(&before[..]),
            "lines written before SIGTERM changed or vanished ({} before, {} after)",
            before.len(),
            after.len()
        );
        let last = after.last().context("no lines at all")?;
        ensure!(is_metric(last), "last line is not a metric line: {last}");
        check_metric(last)?;
        let lost = field_u64(last, "egret.metrics.events_lost_kernel");
        ensure!(
            lost == Some(0),
            "events_lost_kernel = {lost:?}\nline: {last}"
        );
        let received = field_u64(last, "egret.metrics.events_received").unwrap_or(0);
        ensure!(received > 0, "events_received = {received}\nline: {last}");
        ensure!(
            field(last, "egret.metrics").is_some(),
            "metrics object missing"
        );
        h.finish()
    })
}
