//! Connections and datagrams made by processes in the watched cgroup.

use anyhow::{ensure, Context, Result};
use egret_e2e::expect::{
    check_args, check_cgroup, check_client_process, check_executable, check_host, check_network,
    check_pids, check_sequence_increasing, check_timestamp, check_user, is_flow,
};
use egret_e2e::{
    argv, command_for_argv, field, field_str, field_u64, marker, parse_timestamp, prerequisite,
    socket_addr, Harness, NetNs, RunOutput, TcpServer, UdpServer,
};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");
const SLACK: Duration = Duration::from_secs(5);

/// Runs `egret-testclient <client> <ip> <port> <extra...>` (`tcp`, `udp-connect` or `udp-send`)
/// in the test cgroup and waits for the line it causes (`connect`, or `send` for `udp-send`):
/// argv as the client saw it, what it printed, and the line.
fn client_line(
    h: &mut Harness,
    client: &str,
    ip: &str,
    port: u16,
    extra: &[&str],
) -> Result<(Vec<String>, RunOutput, Value)> {
    let port_arg = port.to_string();
    let mut args = vec![client, ip, &port_arg];
    args.extend_from_slice(extra);
    let argv = argv(CLIENT, &args);
    let out = h.run(&mut command_for_argv(&argv))?;
    let (action, transport) = match client {
        "tcp" => ("connect", "tcp"),
        "udp-connect" => ("connect", "udp"),
        _ => ("send", "udp"),
    };
    let line = h.egret.wait_for_flow(action, transport, port)?;
    Ok((argv, out, line))
}

#[test]
fn tcp_ipv4_connect() -> Result<()> {
    let t0 = SystemTime::now();
    Harness::with_egret("tcp4", &[], |mut h| {
        let server = TcpServer::loopback()?;
        let port = server.port();
        let m1 = marker();
        let (args1, out1, ev) = client_line(&mut h, "tcp", "127.0.0.1", port, &[&m1])?;
        check_network(&ev, "connect", "tcp", "ipv4", "127.0.0.1", port)?;
        check_client_process(&ev, out1.pid, &args1, &h.cgroup)?;
        check_user(&ev, 0, 0, Some("root"))?;
        check_host(&ev)?;
        check_timestamp(&ev, t0, SLACK)?;
        ensure!(
            field_u64(&ev, "egret.socket.cookie").is_some_and(|c| c != 0),
            "egret.socket.cookie missing or 0\nline: {ev}"
        );
        let start = field_str(&ev, "process.start")
            .with_context(|| format!("process.start missing\nline: {ev}"))?;
        let start = parse_timestamp(start)?;
        let ts = parse_timestamp(field_str(&ev, "@timestamp").unwrap_or_default())?;
        ensure!(
            start <= ts + SLACK && start + SLACK >= t0,
            "process.start {start:?} not around the test\nline: {ev}"
        );

        // A second connection: its own line, a larger sequence number, another cookie.
        let m2 = marker();
        let args2 = argv(CLIENT, &["tcp", "127.0.0.1", &port.to_string(), &m2]);
        let out2 = h.run(&mut command_for_argv(&args2))?;
        let ev2 = h.egret.wait_for_marked_flow("connect", "tcp", port, &m2)?;
        check_pids(&ev2, out2.pid, std::process::id())?;
        check_args(&ev2, &args2)?;
        let (s1, s2) = (
            field_u64(&ev, "event.sequence"),
            field_u64(&ev2, "event.sequence"),
        );
        ensure!(
            s2 > s1,
            "event.sequence did not increase: {s1:?} then {s2:?}"
        );
        ensure!(
            field_u64(&ev, "egret.socket.cookie") != field_u64(&ev2, "egret.socket.cookie"),
            "two sockets with the same cookie\n{ev}\n{ev2}"
        );
        let all = h.egret.events()?;
        check_sequence_increasing(&all)?;
        let n = all
            .iter()
            .filter(|v| is_flow(v, "connect", "tcp", port))
            .count();
        ensure!(
            n == 2,
            "want exactly 2 connect lines for port {port}, got {n}"
        );
        h.finish()
    })
}

#[test]
fn tcp_ipv6_connect() -> Result<()> {
    let t0 = SystemTime::now();
    Harness::with_egret("tcp6", &[], |mut h| {
        let server = TcpServer::start(socket_addr("[::1]:0")?)?;
        let port = server.port();
        let (args, out, ev) = client_line(&mut h, "tcp", "::1", port, &[&marker()])?;
        check_network(&ev, "connect", "tcp", "ipv6", "::1", port)?;
        check_client_process(&ev, out.pid, &args, &h.cgroup)?;
        check_timestamp(&ev, t0, SLACK)?;
        h.finish()
    })
}

#[test]
fn tcp_ipv4_mapped_ipv6_is_reported_as_ipv4() -> Result<()> {
    Harness::with_egret("mapped", &[], |mut h| {
        let server = TcpServer::loopback()?;
        let port = server.port();
        // An AF_INET6 socket connecting to ::ffff:127.0.0.1.
        let (args, out, ev) = client_line(&mut h, "tcp", "::ffff:127.0.0.1", port, &[])?;
        check_network(&ev, "connect", "tcp", "ipv4", "127.0.0.1", port)?;
        check_pids(&ev, out.pid, std::process::id())?;
        check_args(&ev, &args)?;
        h.finish()
    })
}

#[test]
fn udp_connected() -> Result<()> {
    Harness::with_egret("udpconn", &[], |mut h| {
        let server = UdpServer::loopback()?;
        let port = server.port();
        let (args, out, ev) = client_line(&mut h, "udp-connect", "127.0.0.1", port, &[&marker()])?;
        check_network(&ev, "connect", "udp", "ipv4", "127.0.0.1", port)?;
        check_client_process(&ev, out.pid, &args, &h.cgroup)?;
        h.finish()
    })
}

#[test]
fn udp_unconnected_sends_are_aggregated() -> Result<()> {
    Harness::with_egret("udpsend", &[], |mut h| {
        let server = UdpServer::loopback()?;
        let port = server.port();
        let (args, out, ev) = client_line(
            &mut h,
            "udp-send",
            "127.0.0.1",
            port,
            &["--count", "1000", &marker()],
        )?;
        check_network(&ev, "send", "udp", "ipv4", "127.0.0.1", port)?;
        check_client_process(&ev, out.pid, &args, &h.cgroup)?;
        let n = field_u64(&ev, "egret.udp.datagrams");
        ensure!(
            n == Some(1000),
            "egret.udp.datagrams: want 1000, got {n:?}\nline: {ev}"
        );
        // Give a periodic/idle flush time to (wrongly) write a second line.
        std::thread::sleep(Duration::from_secs(3));
        let all = h.egret.events()?;
        let sends: Vec<_> = all
            .iter()
            .filter(|v| is_flow(v, "send", "udp", port))
            .collect();
        ensure!(
            sends.len() == 1,
            "want exactly one send line for port {port}, got {}: {sends:?}",
            sends.len()
        );
        let connects = all
            .iter()
            .filter(|v| is_flow(v, "connect", "udp", port))
            .count();
        ensure!(
            connects == 0,
            "unconnected sends produced {connects} connect lines"
        );
        h.finish()
    })
}

#[test]
fn bash_dev_tcp() -> Result<()> {
    let Some(()) = prerequisite(egret_e2e::skip::require_program("/bin/bash"))? else {
        return Ok(());
    };
    Harness::with_egret("bash", &[], |mut h| {
        let server = TcpServer::loopback()?;
        let port = server.port();
        let script = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
        let mut cmd = Command::new("/bin/bash");
        cmd.args(["-c", &script]);
        let out = h.run(&mut cmd)?;
        let ev = h.egret.wait_for_flow("connect", "tcp", port)?;
        check_network(&ev, "connect", "tcp", "ipv4", "127.0.0.1", port)?;
        check_pids(&ev, out.pid, std::process::id())?;
        check_executable(&ev, Path::new("/bin/bash"))?;
        ensure!(
            field_str(&ev, "process.name") == Some("bash"),
            "process.name should be bash\nline: {ev}"
        );
        check_args(
            &ev,
            &["/bin/bash".to_string(), "-c".to_string(), script.clone()],
        )?;
        check_cgroup(&ev, &h.cgroup, None)?;
        h.finish()
    })
}

#[test]
fn connect_into_test_netns() -> Result<()> {
    NetNs::with("conn", |ns| {
        Harness::with_egret("netns", &[], |mut h| {
            let server =
                TcpServer::from_listener(ns.tcp_listener(SocketAddr::new(ns.ns_v4().into(), 0))?)?;
            let port = server.port();
            let ip = ns.ns_v4().to_string();
            let (args, out, ev) = client_line(&mut h, "tcp", &ip, port, &[])?;
            check_network(&ev, "connect", "tcp", "ipv4", &ip, port)?;
            check_pids(&ev, out.pid, std::process::id())?;
            check_args(&ev, &args)?;
            check_cgroup(&ev, &h.cgroup, None)?;

            if ns.has_v6() {
                let s6 = TcpServer::from_listener(
                    ns.tcp_listener(SocketAddr::new(ns.ns_v6().into(), 0))?,
                )?;
                let ip6 = ns.ns_v6().to_string();
                let (_, out, ev) = client_line(&mut h, "tcp", &ip6, s6.port(), &[])?;
                check_network(&ev, "connect", "tcp", "ipv6", &ip6, s6.port())?;
                check_pids(&ev, out.pid, std::process::id())?;
            }
            // UDP datagrams into the namespace (unconnected).
            let usock = ns.udp_socket(SocketAddr::new(ns.ns_v4().into(), 0))?;
            let uport = usock.local_addr()?.port();
            let (_, out, ev) = client_line(&mut h, "udp-send", &ip, uport, &["--count", "7"])?;
            check_network(&ev, "send", "udp", "ipv4", &ip, uport)?;
            check_pids(&ev, out.pid, std::process::id())?;
            ensure!(
                field(&ev, "egret.udp.datagrams").and_then(Value::as_u64) == Some(7),
                "egret.udp.datagrams want 7\nline: {ev}"
            );
            drop(usock);
            h.finish()
        })
    })
}

#[test]
fn traffic_outside_the_cgroup_is_not_reported() -> Result<()> {
    Harness::with_egret("outside", &[], |mut h| {
        let server = TcpServer::loopback()?;
        let outside = server.port();
        // Not in the cgroup: must not show up.
        egret_e2e::run_with_timeout(
            &mut command_for_argv(&argv(CLIENT, &["tcp", "127.0.0.1", &outside.to_string()])),
            Duration::from_secs(30),
        )?
        .ensure_success()?;
        // In the cgroup, afterwards: once this is seen, the other one would have been too.
        let server2 = TcpServer::loopback()?;
        let inside = server2.port();
        h.run(&mut command_for_argv(&argv(
            CLIENT,
            &["tcp", "127.0.0.1", &inside.to_string()],
        )))?;
        h.egret.wait_for_flow("connect", "tcp", inside)?;
        std::thread::sleep(Duration::from_millis(1500));
        let leaked = h
            .egret
            .events()?
            .into_iter()
            .filter(|v| is_flow(v, "connect", "tcp", outside))
            .count();
        ensure!(
            leaked == 0,
            "{leaked} lines for a connection made outside the watched cgroup"
        );
        h.finish()
    })
}
