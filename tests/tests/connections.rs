//! The whole life of outbound connections: end lines with outcome, latency, duration and exact
//! payload bytes, refused / timed-out / unreachable connects, progress lines, UDP summaries with
//! bytes, and the repeated-failure alert.

use anyhow::{ensure, Context, Result};
use egret_e2e::expect::{check_field_str, check_field_u64, is_flow};
use egret_e2e::{
    command, field, field_str, field_u64, socket_addr, ExchangeServer, Harness, NetNs, UdpServer,
    LINE_TIMEOUT,
};
use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");

fn is_end(v: &Value, port: u16) -> bool {
    is_flow(v, "connection-end", "tcp", port)
}

/// A port on `ip` with nothing listening (bound, then released).
fn closed_port(ip: &str) -> Result<u16> {
    let l = TcpListener::bind(SocketAddr::new(ip.parse()?, 0))?;
    Ok(l.local_addr()?.port())
}

/// The start and end lines of the connection to `port`; they must share the connection id,
/// the process and the destination.
fn start_and_end(h: &mut Harness, port: u16) -> Result<(Value, Value)> {
    let end = h.egret.wait_for(|v| is_end(v, port), LINE_TIMEOUT)?;
    let start = h.egret.wait_for_flow("connect", "tcp", port)?;
    let id = field_str(&start, "egret.connection.id").context("start line without id")?;
    ensure!(
        field_str(&end, "egret.connection.id") == Some(id),
        "end line's egret.connection.id differs from the start's ({id})\nend: {end}"
    );
    for path in [
        "process.pid",
        "process.args",
        "destination.ip",
        "egret.cgroup.id",
    ] {
        ensure!(
            field(&start, path) == field(&end, path),
            "{path} differs between start and end\nstart: {start}\nend: {end}"
        );
    }
    ensure!(
        field(&end, "event.type") == Some(&serde_json::json!(["connection", "end"])),
        "event.type of an end line\nline: {end}"
    );
    Ok((start, end))
}

/// Exact payload bytes in both directions, whichever side closes first, over IPv4 and IPv6.
#[test]
fn end_lines_carry_outcome_latency_duration_and_exact_bytes() -> Result<()> {
    Harness::with_egret("conn-bytes", &[], |mut h| {
        // The server closes first: it reads 1000 bytes, answers 300 and closes.
        let server = ExchangeServer::start(socket_addr("127.0.0.1:0")?, 1000, 300, false)?;
        let port = server.port().to_string();
        let out = h.run(&mut command(
            CLIENT,
            &["tcp-exchange", "127.0.0.1", &port, "--send", "1000"],
        ))?;
        ensure!(
            out.stdout.contains("received=300"),
            "client: {}",
            out.stdout
        );
        let (_, end) = start_and_end(&mut h, server.port())?;
        check_field_str(&end, "event.outcome", "success")?;
        check_field_u64(&end, "source.bytes", 1000)?;
        check_field_u64(&end, "destination.bytes", 300)?;
        check_field_str(&end, "source.ip", "127.0.0.1")?;
        ensure!(
            field_u64(&end, "source.port").is_some_and(|p| p > 0),
            "source.port\nline: {end}"
        );
        ensure!(
            field_u64(&end, "egret.tcp.connect_latency_us").is_some(),
            "connect latency\nline: {end}"
        );
        ensure!(
            field_u64(&end, "event.duration").is_some_and(|d| d > 0),
            "event.duration\nline: {end}"
        );
        ensure!(
            field(&end, "error").is_none(),
            "no error on success\nline: {end}"
        );
        ensure!(
            field(&end, "egret.connection.start_seen") == Some(&Value::Bool(true)),
            "start_seen\nline: {end}"
        );

        // The client closes first (half-close after sending), then reads the answer.
        let server = ExchangeServer::start(socket_addr("127.0.0.1:0")?, 0, 700, true)?;
        let port = server.port().to_string();
        h.run(&mut command(
            CLIENT,
            &[
                "tcp-exchange",
                "127.0.0.1",
                &port,
                "--send",
                "5000",
                "--half-close",
            ],
        ))?;
        let (_, end) = start_and_end(&mut h, server.port())?;
        check_field_u64(&end, "source.bytes", 5000)?;
        check_field_u64(&end, "destination.bytes", 700)?;
        ensure!(
            server.received() == 5000,
            "server got {}",
            server.received()
        );

        // IPv6 (when loopback has it).
        if let Ok(server) = ExchangeServer::start(socket_addr("[::1]:0")?, 123, 45, false) {
            let port = server.port().to_string();
            h.run(&mut command(
                CLIENT,
                &["tcp-exchange", "::1", &port, "--send", "123"],
            ))?;
            let (_, end) = start_and_end(&mut h, server.port())?;
            check_field_u64(&end, "source.bytes", 123)?;
            check_field_u64(&end, "destination.bytes", 45)?;
            check_field_str(&end, "source.ip", "::1")?;
        }
        h.finish()
    })
}

/// Runs `client` (a connect that must fail with `errno`) in the test cgroup; the end line of
/// its connection to `port`, a failure with `error.code` `code`.
fn failed_connection_end(
    h: &mut Harness,
    client: &mut Command,
    errno: i32,
    port: u16,
    code: &str,
) -> Result<Value> {
    let out = h.try_run(client)?;
    ensure!(
        out.stdout.contains(&format!("errno={errno}")),
        "client: {}",
        out.stdout
    );
    let (_, end) = start_and_end(h, port)?;
    check_field_str(&end, "event.outcome", "failure")?;
    check_field_str(&end, "error.code", code)?;
    Ok(end)
}

#[test]
fn a_refused_connect_ends_in_failure() -> Result<()> {
    Harness::with_egret("conn-refused", &[], |mut h| {
        let port = closed_port("127.0.0.1")?;
        let mut cmd = command(CLIENT, &["tcp", "127.0.0.1", &port.to_string()]);
        let end = failed_connection_end(&mut h, &mut cmd, 111, port, "ECONNREFUSED")?;
        check_field_str(&end, "error.message", "connection refused")?;
        check_field_u64(&end, "source.bytes", 0)?;
        ensure!(
            field(&end, "egret.tcp.connect_latency_us").is_none(),
            "no latency without a handshake\nline: {end}"
        );
        h.finish()
    })
}

/// In a namespace where 198.51.100.7 is reached through the veth with a static neighbour entry
/// for a MAC address nobody has (every SYN leaves and vanishes, no ARP, no ICMP) and whose SYN
/// retries are cut to 1, a connect times out in about 3 s; one to a network with no route fails
/// in `connect()` itself, before any packet.
#[test]
fn timed_out_and_unreachable_connects_end_in_failure() -> Result<()> {
    NetNs::with("blackhole", |ns| {
        let dev = ns.ns_if().to_owned();
        ns.exec("ip", &["route", "add", "198.51.100.0/24", "dev", &dev])?;
        ns.exec(
            "ip",
            &[
                "neigh",
                "add",
                "198.51.100.7",
                "lladdr",
                "02:00:5e:00:53:07",
                "dev",
                &dev,
                "nud",
                "permanent",
            ],
        )?;
        ns.exec("sysctl", &["-q", "-w", "net.ipv4.tcp_syn_retries=1"])?;
        Harness::with_egret("conn-timeout", &[], |mut h| {
            let mut cmd = ns.command(CLIENT);
            cmd.args(["tcp", "198.51.100.7", "8080"]);
            let end = failed_connection_end(&mut h, &mut cmd, 110, 8080, "ETIMEDOUT")?;
            ensure!(
                field_u64(&end, "egret.tcp.retransmits").is_some_and(|r| r >= 1),
                "the SYN was retransmitted\nline: {end}"
            );
            ensure!(
                field_u64(&end, "event.duration").is_some_and(|d| d >= 2_500_000_000),
                "a timeout takes seconds\nline: {end}"
            );

            let mut cmd = ns.command(CLIENT);
            cmd.args(["tcp", "203.0.113.9", "8081"]);
            let end = failed_connection_end(&mut h, &mut cmd, 101, 8081, "ENETUNREACH")?;
            ensure!(
                field(&end, "source.ip").is_none(),
                "no local address: nothing was sent\nline: {end}"
            );
            h.finish()
        })
    })
}

#[test]
fn a_long_lived_connection_gets_progress_lines() -> Result<()> {
    Harness::with_egret("conn-progress", &["--progress-interval", "1"], |mut h| {
        let server = ExchangeServer::start(socket_addr("127.0.0.1:0")?, 0, 100, true)?;
        let port = server.port().to_string();
        h.run(&mut command(
            CLIENT,
            &[
                "tcp-exchange",
                "127.0.0.1",
                &port,
                "--send",
                "4000",
                "--hold-ms",
                "3500",
                "--half-close",
            ],
        ))?;
        let (start, end) = start_and_end(&mut h, server.port())?;
        let id = field_str(&start, "egret.connection.id").unwrap_or_default();
        let progress: Vec<Value> = h
            .egret
            .events()?
            .into_iter()
            .filter(|v| is_flow(v, "connection-progress", "tcp", server.port()))
            .collect();
        ensure!(
            progress.len() >= 2,
            "want at least 2 progress lines over 3.5 s, got {}: {progress:?}",
            progress.len()
        );
        for p in &progress {
            ensure!(
                field_str(p, "egret.connection.id") == Some(id),
                "progress line of another connection\nline: {p}"
            );
            ensure!(
                field(p, "event.type") == Some(&serde_json::json!(["connection", "info"])),
                "event.type\nline: {p}"
            );
        }
        let last = progress.last().context("progress")?;
        check_field_u64(last, "source.bytes", 4000)?;
        ensure!(
            field_u64(last, "event.duration").is_some_and(|d| d >= 1_000_000_000),
            "progress duration\nline: {last}"
        );
        check_field_u64(&end, "source.bytes", 4000)?;
        check_field_u64(&end, "destination.bytes", 100)?;
        h.finish()
    })
}

/// A connected UDP socket: its `connect` line, then `send` summaries (one periodic, one
/// final) whose datagrams and bytes add up exactly, in both directions.
#[test]
fn udp_flows_get_periodic_and_final_summaries_with_bytes() -> Result<()> {
    Harness::with_egret("conn-udp", &["--udp-report-interval", "1"], |mut h| {
        let server = UdpServer::start_echo(socket_addr("127.0.0.1:0")?, 64)?;
        let port = server.port();
        let out = h.run(&mut command(
            CLIENT,
            &[
                "udp-exchange",
                "127.0.0.1",
                &port.to_string(),
                "--count",
                "25",
                "--size",
                "200",
                "--interval-ms",
                "100",
            ],
        ))?;
        ensure!(out.stdout.contains("replies=25"), "client: {}", out.stdout);
        h.egret.wait_for_flow("connect", "udp", port)?;
        let last = h.egret.wait_for(
            |v| {
                is_flow(v, "send", "udp", port)
                    && field(v, "event.type")
                        .and_then(Value::as_array)
                        .is_some_and(|t| t.iter().any(|x| x == "end"))
            },
            LINE_TIMEOUT,
        )?;
        let lines: Vec<Value> = h
            .egret
            .events()?
            .into_iter()
            .filter(|v| is_flow(v, "send", "udp", port))
            .collect();
        ensure!(
            lines.len() >= 2,
            "want a periodic and a final summary over 2.5 s, got {}: {lines:?}",
            lines.len()
        );
        let sum = |path: &str| -> u64 { lines.iter().filter_map(|v| field_u64(v, path)).sum() };
        ensure!(sum("egret.udp.datagrams") == 25, "datagrams: {lines:?}");
        ensure!(sum("source.bytes") == 25 * 200, "bytes sent: {lines:?}");
        ensure!(
            sum("destination.bytes") == 25 * 64,
            "bytes received: {lines:?}"
        );
        ensure!(
            sum("destination.packets") == 25,
            "datagrams received: {lines:?}"
        );
        let id = field_str(&last, "egret.connection.id").unwrap_or_default();
        ensure!(
            lines
                .iter()
                .all(|v| field_str(v, "egret.connection.id") == Some(id)),
            "one flow, one id: {lines:?}"
        );
        h.finish()
    })
}

#[test]
fn repeated_failures_raise_one_alert() -> Result<()> {
    Harness::with_egret(
        "conn-failures",
        &["--failure-alert-count", "3", "--failure-alert-window", "60"],
        |mut h| {
            let port = closed_port("127.0.0.1")?;
            for _ in 0..4 {
                h.try_run(&mut command(
                    CLIENT,
                    &["tcp", "127.0.0.1", &port.to_string()],
                ))?;
            }
            h.egret
                .wait_for_count(|v| is_end(v, port), 4, LINE_TIMEOUT)?;
            let alerts: Vec<Value> = h
                .egret
                .events()?
                .into_iter()
                .filter(|v| {
                    field_str(v, "event.kind") == Some("alert")
                        && field_str(v, "rule.name") == Some("connection-failures")
                        && field_u64(v, "destination.port") == Some(u64::from(port))
                })
                .collect();
            ensure!(alerts.len() == 1, "want one alert, got {alerts:?}");
            let alert = &alerts[0];
            check_field_u64(alert, "egret.failures.count", 3)?;
            check_field_str(alert, "error.code", "ECONNREFUSED")?;
            let message = field_str(alert, "message").unwrap_or_default();
            ensure!(
                message.contains("egret-testclient")
                    && message.contains(&format!("127.0.0.1:{port}")),
                "the message names the process and the destination: {message}"
            );
            h.finish()
        },
    )
}

/// `--connection-ends off`: start lines only, as before this feature.
#[test]
fn connection_ends_can_be_turned_off() -> Result<()> {
    Harness::with_egret("conn-off", &["--connection-ends", "off"], |mut h| {
        let server = ExchangeServer::start(socket_addr("127.0.0.1:0")?, 10, 10, false)?;
        let port = server.port();
        h.run(&mut command(
            CLIENT,
            &[
                "tcp-exchange",
                "127.0.0.1",
                &port.to_string(),
                "--send",
                "10",
            ],
        ))?;
        h.egret.wait_for_flow("connect", "tcp", port)?;
        let mut egret = h.egret;
        egret.stop()?;
        let ends = egret.events()?.iter().filter(|v| is_end(v, port)).count();
        ensure!(ends == 0, "{ends} end lines with --connection-ends off");
        egret.discard_dir_on_drop();
        Ok(())
    })
}

/// `--merge-short-connections on`: a connection that ends within the drain that saw it start
/// gets one line (its end line, `event.type` `[connection, start, end]`); one that lives
/// longer gets its two lines, as always. Every connection has exactly one start and one end.
#[test]
fn short_connections_can_be_merged_into_one_line() -> Result<()> {
    // A long drain interval: a connection of a few ms almost always falls within one drain.
    let args = [
        "--merge-short-connections",
        "on",
        "--drain-interval-ms",
        "500",
    ];
    Harness::with_egret("conn-merge", &args, |mut h| {
        let short = ExchangeServer::start(socket_addr("127.0.0.1:0")?, 10, 10, false)?;
        let long = ExchangeServer::start(socket_addr("127.0.0.1:0")?, 10, 10, false)?;
        let (short_port, long_port) = (short.port().to_string(), long.port().to_string());
        const SHORT: usize = 10;
        for _ in 0..SHORT {
            let args = ["tcp-exchange", "127.0.0.1", &short_port, "--send", "10"];
            h.run(&mut command(CLIENT, &args))?;
        }
        let hold = ["--send", "10", "--hold-ms", "1500"];
        let args = [["tcp-exchange", "127.0.0.1", &long_port].as_slice(), &hold].concat();
        h.run(&mut command(CLIENT, &args))?;
        h.egret
            .wait_for_count(|v| is_end(v, short.port()), SHORT, LINE_TIMEOUT)?;
        h.egret.wait_for(|v| is_end(v, long.port()), LINE_TIMEOUT)?;
        let lines = h.egret.events()?;
        let of = |port: u16, action: &str| -> Vec<&Value> {
            lines
                .iter()
                .filter(|v| is_flow(v, action, "tcp", port))
                .collect()
        };
        let merged = |v: &Value| {
            field(v, "event.type") == Some(&serde_json::json!(["connection", "start", "end"]))
        };
        // Short: each connection's start is its connect line or its one merged line.
        let (short_connects, short_ends) = (
            of(short.port(), "connect"),
            of(short.port(), "connection-end"),
        );
        let one_line = short_ends.iter().filter(|v| merged(v)).count();
        ensure!(
            short_ends.len() == SHORT && short_connects.len() + one_line == SHORT,
            "{} connect lines and {} end lines ({one_line} merged) for {SHORT} connections",
            short_connects.len(),
            short_ends.len()
        );
        ensure!(
            one_line * 2 >= SHORT,
            "only {one_line} of {SHORT} short connections got one line"
        );
        for end in short_ends.iter().filter(|v| merged(v)) {
            for path in [
                "process.executable",
                "destination.ip",
                "egret.policy.verdict",
                "event.start",
            ] {
                ensure!(
                    field(end, path).is_some(),
                    "merged line without {path}
line: {end}"
                );
            }
            check_field_u64(end, "source.bytes", 10)?;
        }
        // Long: its two lines, joined by their id.
        let (connects, ends) = (
            of(long.port(), "connect"),
            of(long.port(), "connection-end"),
        );
        ensure!(
            connects.len() == 1 && ends.len() == 1 && !ends.iter().any(|v| merged(v)),
            "long connection: {connects:?} {ends:?}"
        );
        ensure!(
            field(connects[0], "egret.connection.id") == field(ends[0], "egret.connection.id"),
            "long connection's lines not joined"
        );
        h.finish()
    })
}

/// A connection opened before egret started is found (sock_diag) and closed out when its
/// application releases it: an end line with its addresses and `start_seen: false`.
#[test]
fn a_connection_older_than_egret_is_closed_out() -> Result<()> {
    Harness::with_cgroup("conn-older", |cgroup| {
        let server = ExchangeServer::start(socket_addr("127.0.0.1:0")?, 0, 10, true)?;
        let port = server.port();
        let go = std::env::temp_dir().join(format!("egret-e2e-older-go-{}", std::process::id()));
        let _ = std::fs::remove_file(&go);
        let go_arg = go.to_string_lossy().into_owned();
        let mut cmd = command(
            CLIENT,
            &[
                "tcp-exchange",
                "127.0.0.1",
                &port.to_string(),
                "--send",
                "10",
                "--hold-until-file",
                &go_arg,
                "--half-close",
            ],
        );
        cmd.stdout(std::process::Stdio::piped());
        cgroup.command(&mut cmd)?;
        let mut child = cmd.spawn().context("spawn client")?;
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut h = Harness::start(cgroup, &[])?;
        std::fs::write(&go, b"go")?;
        let status = child.wait()?;
        let _ = std::fs::remove_file(&go);
        ensure!(status.success(), "client: {status}");
        let end = h.egret.wait_for(|v| is_end(v, port), LINE_TIMEOUT)?;
        check_field_str(&end, "event.outcome", "success")?;
        check_field_str(&end, "source.ip", "127.0.0.1")?;
        check_field_str(&end, "destination.ip", "127.0.0.1")?;
        ensure!(
            field(&end, "egret.connection.start_seen") == Some(&Value::Bool(false)),
            "start_seen\nline: {end}"
        );
        ensure!(
            field_u64(&end, "process.pid") == Some(u64::from(child.id())),
            "the releasing process\nline: {end}"
        );
        ensure!(
            h.egret
                .events()?
                .iter()
                .all(|v| !is_flow(v, "connect", "tcp", port)),
            "no start line for a connection egret did not see start"
        );
        h.finish()
    })
}

/// A small ring buffer (128 KiB: room for the 6.5 KiB exec records of a busy host) wraps
/// every ~430 connections (304 bytes of records each), and a record that straddles its end is
/// put together from its two parts (egret maps the data pages once). Every connection still
/// has its start and end lines, with the same id and the right destination and process.
#[test]
fn a_small_ring_buffer_wraps_and_every_record_arrives_whole() -> Result<()> {
    const CONNECTIONS: usize = 4000;
    Harness::with_egret("ring-wrap", &["--ring-buffer-size", "131072"], |mut h| {
        let server = egret_e2e::TcpServer::loopback()?;
        let port = server.port();
        h.connect_loop(CLIENT, port, CONNECTIONS, 1)?;
        let ends = h
            .egret
            .wait_for_count(|v| is_end(v, port), CONNECTIONS, LINE_TIMEOUT)?;
        h.egret.stop_cleanly()?;
        let events = h.egret.events()?;
        let starts: Vec<&Value> = events
            .iter()
            .filter(|v| is_flow(v, "connect", "tcp", port))
            .collect();
        ensure!(
            starts.len() == CONNECTIONS && ends.len() == CONNECTIONS,
            "{} start and {} end lines for {CONNECTIONS} connections",
            starts.len(),
            ends.len()
        );
        let pid = starts.first().and_then(|v| field_u64(v, "process.pid"));
        let mut ids = std::collections::BTreeSet::new();
        for start in &starts {
            check_field_str(start, "destination.ip", "127.0.0.1")?;
            ensure!(
                pid.is_some() && field_u64(start, "process.pid") == pid,
                "every connect is the client's\nline: {start}"
            );
            let id = field_str(start, "egret.connection.id").context("start without id")?;
            ensure!(ids.insert(id), "connection id {id} twice");
        }
        for end in &ends {
            check_field_str(end, "event.outcome", "success")?;
            let id = field_str(end, "egret.connection.id").context("end without id")?;
            ensure!(ids.remove(id), "end line of no start line\nline: {end}");
        }
        h.egret.discard_dir_on_drop();
        Ok(())
    })
}
