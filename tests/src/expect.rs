//! Assertions on egret's lines, returning errors that show the offending line.

use crate::json::{field, field_str, field_u64, parse_timestamp};
use crate::TestCgroup;
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// True for an event line (`event.kind == "event"`) with this action and destination port.
pub fn is_flow(v: &Value, action: &str, transport: &str, port: u16) -> bool {
    field_str(v, "event.kind") == Some("event")
        && field_str(v, "event.action") == Some(action)
        && field_str(v, "network.transport") == Some(transport)
        && field_u64(v, "destination.port") == Some(u64::from(port))
}

/// True when `process.args` contains `marker`.
pub fn has_arg(v: &Value, marker: &str) -> bool {
    field(v, "process.args")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(marker)))
}

/// True for a metric line.
pub fn is_metric(v: &Value) -> bool {
    field_str(v, "event.kind") == Some("metric")
}

/// The string at `path` is `want` (an error shows the line).
pub fn check_field_str(v: &Value, path: &str, want: &str) -> Result<()> {
    let got = field_str(v, path);
    ensure!(
        got == Some(want),
        "{path}: want {want:?}, got {got:?}\nline: {v}"
    );
    Ok(())
}

/// The number at `path` is `want` (an error shows the line).
pub fn check_field_u64(v: &Value, path: &str, want: u64) -> Result<()> {
    let got = field_u64(v, path);
    ensure!(
        got == Some(want),
        "{path}: want {want}, got {got:?}\nline: {v}"
    );
    Ok(())
}

/// Nothing is at `path` (an error shows what is, and the line).
pub fn check_field_absent(v: &Value, path: &str) -> Result<()> {
    ensure!(
        field(v, path).is_none(),
        "{path} should be absent, got {:?}\nline: {v}",
        field(v, path)
    );
    Ok(())
}

/// The network part of a line: action, transport, family, destination.
pub fn check_network(
    v: &Value,
    action: &str,
    transport: &str,
    ip_type: &str,
    ip: &str,
    port: u16,
) -> Result<()> {
    check_field_str(v, "event.kind", "event")?;
    check_field_str(v, "event.action", action)?;
    check_field_str(v, "event.module", "egret")?;
    check_field_str(v, "event.dataset", "egret.network")?;
    let cat = field(v, "event.category").and_then(Value::as_array);
    ensure!(
        cat.is_some_and(|c| c.iter().any(|x| x.as_str() == Some("network"))),
        "event.category must contain \"network\"\nline: {v}"
    );
    if action == "connect" {
        let ty: Option<Vec<&str>> = field(v, "event.type")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect());
        ensure!(
            ty.as_deref() == Some(&["connection", "start"][..]),
            "event.type: want [\"connection\",\"start\"], got {ty:?}\nline: {v}"
        );
    }
    check_field_str(v, "destination.ip", ip)?;
    check_field_u64(v, "destination.port", u64::from(port))?;
    check_field_str(v, "network.transport", transport)?;
    check_field_str(v, "network.type", ip_type)?;
    check_field_str(v, "network.direction", "egress")?;
    check_field_str(
        v,
        "network.iana_number",
        if transport == "tcp" { "6" } else { "17" },
    )?;
    ensure!(
        field_u64(v, "event.sequence").is_some(),
        "event.sequence missing\nline: {v}"
    );
    Ok(())
}

/// `@timestamp` parses and lies within `slack` of `[not_before, now]`.
pub fn check_timestamp(v: &Value, not_before: SystemTime, slack: Duration) -> Result<()> {
    let ts =
        field_str(v, "@timestamp").with_context(|| format!("@timestamp missing\nline: {v}"))?;
    let t = parse_timestamp(ts)?;
    let now = SystemTime::now();
    ensure!(
        t + slack >= not_before && t <= now + slack,
        "@timestamp {ts} is not between test start - {slack:?} and now + {slack:?}\nline: {v}"
    );
    Ok(())
}

/// The executable path matches `want` (as given or canonicalized).
pub fn check_executable(v: &Value, want: &Path) -> Result<()> {
    let got = field_str(v, "process.executable");
    let canon = want.canonicalize().unwrap_or_else(|_| want.to_path_buf());
    let ok = got.is_some_and(|g| Path::new(g) == want || Path::new(g) == canon);
    ensure!(
        ok,
        "process.executable: want {} (or {}), got {got:?}\nline: {v}",
        want.display(),
        canon.display()
    );
    // process.name: basename of the executable, or the kernel's 15-byte comm of it.
    let base = canon
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = field_str(v, "process.name");
    let comm = base.get(..base.len().min(15)).unwrap_or_default();
    let given_base = want
        .file_name()
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_default();
    ensure!(
        name.is_some_and(|n| n == base || n == comm || n == given_base),
        "process.name: want {base:?} (or {comm:?}), got {name:?}\nline: {v}"
    );
    Ok(())
}

/// `process.args` equals `want` exactly; `args_count` matches; `command_line`
/// is the space-joined args when no arg contains whitespace.
pub fn check_args(v: &Value, want: &[String]) -> Result<()> {
    let got: Option<Vec<&str>> = field(v, "process.args")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    let want_ref: Vec<&str> = want.iter().map(String::as_str).collect();
    ensure!(
        got.as_ref() == Some(&want_ref),
        "process.args: want {want_ref:?}, got {got:?}\nline: {v}"
    );
    check_field_u64(v, "process.args_count", u64::try_from(want.len())?)?;
    if want.iter().all(|a| !a.chars().any(char::is_whitespace)) {
        check_field_str(v, "process.command_line", &want.join(" "))?;
    }
    Ok(())
}

/// pid, thread id (single-threaded client) and parent pid.
pub fn check_pids(v: &Value, pid: u32, ppid: u32) -> Result<()> {
    check_field_u64(v, "process.pid", u64::from(pid))?;
    check_field_u64(v, "process.thread.id", u64::from(pid))?;
    check_field_u64(v, "process.parent.pid", u64::from(ppid))?;
    Ok(())
}

/// The process part of a line caused by a client this test ran in `cgroup` with `argv`:
/// pid, thread and parent (this test process), executable `argv[0]`, arguments, and the
/// cgroup (which names no systemd unit).
pub fn check_client_process(
    v: &Value,
    pid: u32,
    argv: &[String],
    cgroup: &TestCgroup,
) -> Result<()> {
    check_pids(v, pid, std::process::id())?;
    check_executable(
        v,
        Path::new(argv.first().map(String::as_str).unwrap_or_default()),
    )?;
    check_args(v, argv)?;
    check_cgroup(v, cgroup, None)
}

/// user/group ids (strings) and, when given, the user name.
pub fn check_user(v: &Value, uid: u32, gid: u32, name: Option<&str>) -> Result<()> {
    check_field_str(v, "process.user.id", &uid.to_string())?;
    check_field_str(v, "process.group.id", &gid.to_string())?;
    if let Some(name) = name {
        check_field_str(v, "process.user.name", name)?;
    }
    Ok(())
}

/// `egret.cgroup.path` is the cgroup's path relative to the cgroup2 mount and
/// `egret.cgroup.id` is its inode number; `egret.systemd.unit` is `unit`.
pub fn check_cgroup(v: &Value, cg: &TestCgroup, unit: Option<&str>) -> Result<()> {
    check_field_str(v, "egret.cgroup.path", &cg.relative_path())?;
    ensure!(
        field_str(v, "egret.cgroup.path").is_some_and(|p| p.ends_with(&cg.name())),
        "egret.cgroup.path must end with {}\nline: {v}",
        cg.name()
    );
    check_field_u64(v, "egret.cgroup.id", cg.id()?)?;
    match unit {
        Some(u) => check_field_str(v, "egret.systemd.unit", u)?,
        None => ensure!(
            field(v, "egret.systemd.unit").is_none_or(Value::is_null),
            "egret.systemd.unit should be absent for a cgroup that names no unit\nline: {v}"
        ),
    }
    Ok(())
}

/// `host.name` is this machine's hostname.
pub fn check_host(v: &Value) -> Result<()> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").context("read hostname")?;
    check_field_str(v, "host.name", host.trim())
}

/// `event.sequence` strictly increases over the event lines, in file order.
pub fn check_sequence_increasing(lines: &[Value]) -> Result<()> {
    let mut last: Option<u64> = None;
    // The output file's own `egret.output` lines (where its hash chain starts) have none.
    for v in lines.iter().filter(|v| {
        field_str(v, "event.kind") == Some("event")
            && field_str(v, "event.dataset") != Some("egret.output")
    }) {
        let Some(seq) = field_u64(v, "event.sequence") else {
            bail!("event line without event.sequence: {v}");
        };
        if let Some(prev) = last {
            ensure!(
                seq > prev,
                "event.sequence went from {prev} to {seq}\nline: {v}"
            );
        }
        last = Some(seq);
    }
    Ok(())
}
