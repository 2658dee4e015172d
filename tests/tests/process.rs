//! Process attribution: short-lived processes, other users, systemd-style units.

use anyhow::{ensure, Result};
use egret_e2e::expect::{
    check_args, check_cgroup, check_client_process, check_network, check_pids, check_user, has_arg,
    is_flow,
};
use egret_e2e::{
    argv, command_for_argv, drop_privileges, marker, prerequisite, run_in, skip, Harness,
    TcpServer, LINE_TIMEOUT,
};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");

#[test]
fn short_lived_processes_are_attributed() -> Result<()> {
    let Some(()) = prerequisite(skip::require_program("/bin/sh"))? else {
        return Ok(());
    };
    Harness::with_egret("shortlived", &[], |mut h| {
        let server = TcpServer::loopback()?;
        let port = server.port().to_string();
        const RUNS: usize = 20;
        let mut runs = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let m = marker();
            // sh execs the client, which connects and exits within milliseconds:
            // /proc/<pid> is gone long before anyone could read it.
            let script = format!("exec {CLIENT} tcp 127.0.0.1 {port} {m}");
            let mut cmd = Command::new("/bin/sh");
            cmd.args(["-c", &script]);
            let out = h.run(&mut cmd)?;
            let args = argv(CLIENT, &["tcp", "127.0.0.1", &port, &m]);
            runs.push((out.pid, m, args));
        }
        let port_n = server.port();
        let lines =
            h.egret
                .wait_for_count(|v| is_flow(v, "connect", "tcp", port_n), RUNS, LINE_TIMEOUT)?;
        let mut failures = Vec::new();
        for (pid, m, args) in &runs {
            let by_pid = |v: &&serde_json::Value| {
                egret_e2e::field_u64(v, "process.pid") == Some(u64::from(*pid))
            };
            let Some(ev) = lines
                .iter()
                .find(|v| has_arg(v, m))
                .or_else(|| lines.iter().find(by_pid))
            else {
                failures.push(format!("pid {pid} ({m}): no line with this marker or pid"));
                continue;
            };
            let res = check_network(ev, "connect", "tcp", "ipv4", "127.0.0.1", port_n)
                .and_then(|()| check_client_process(ev, *pid, args, &h.cgroup));
            if let Err(e) = res {
                failures.push(format!("pid {pid}: {e:#}"));
            }
        }
        ensure!(
            failures.is_empty(),
            "{} of {RUNS} short-lived runs wrongly attributed:\n{}",
            failures.len(),
            failures.join("\n")
        );
        h.finish()
    })
}

#[test]
fn non_root_user() -> Result<()> {
    let Some(()) = prerequisite(skip::require_world_executable(Path::new(CLIENT)))? else {
        return Ok(());
    };
    Harness::with_egret("nobody", &[], |mut h| {
        let server = TcpServer::loopback()?;
        let port = server.port();
        let args = argv(CLIENT, &["tcp", "127.0.0.1", &port.to_string(), &marker()]);
        let mut cmd = command_for_argv(&args);
        h.cgroup.command(&mut cmd)?; // join the cgroup first (needs root) ...
        drop_privileges(&mut cmd, 65534, 65534); // ... then become nobody:nogroup
        let out =
            egret_e2e::run_with_timeout(&mut cmd, Duration::from_secs(30))?.ensure_success()?;
        let ev = h.egret.wait_for_flow("connect", "tcp", port)?;
        check_network(&ev, "connect", "tcp", "ipv4", "127.0.0.1", port)?;
        check_client_process(&ev, out.pid, &args, &h.cgroup)?;
        check_user(&ev, 65534, 65534, Some("nobody"))?;
        h.finish()
    })
}

#[test]
fn systemd_unit_from_cgroup_path() -> Result<()> {
    Harness::with_egret("unit", &[], |mut h| {
        let unit = format!("egret-e2e-{}.service", egret_e2e::unique_suffix());
        let child = h.cgroup.child(&unit)?;
        let server = TcpServer::loopback()?;
        let port = server.port();
        let args = argv(CLIENT, &["tcp", "127.0.0.1", &port.to_string()]);
        let mut cmd = command_for_argv(&args);
        let out = run_in(&child, &mut cmd)?;
        let ev = h.egret.wait_for_flow("connect", "tcp", port)?;
        check_network(&ev, "connect", "tcp", "ipv4", "127.0.0.1", port)?;
        check_pids(&ev, out.pid, std::process::id())?;
        check_args(&ev, &args)?;
        check_cgroup(&ev, &child, Some(&unit))?;
        let res = h.finish();
        drop(child);
        res
    })
}
