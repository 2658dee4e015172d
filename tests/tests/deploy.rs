//! Deployment: the systemd unit, `cargo xtask install`, the container image and the
//! Kubernetes manifests (docs/deploy.md), checked with the real egret on the real kernel.
//!
//! - `systemd_unit_*`: systemd is not PID 1 here, so the unit is checked with
//!   `systemd-analyze verify`/`security`, and its `ExecStart=` is run the way systemd would
//!   run it as far as that can be reproduced without systemd: `setpriv` with exactly the
//!   unit's capability bounding set and no_new_privs, in a mount namespace where every mount
//!   but the output directory is read-only (ProtectSystem=strict, ProtectKernelTunables,
//!   ProtectControlGroups) and /home, /root are empty (ProtectHome), under `strace`: the
//!   system calls egret makes must be in the unit's SystemCallFilter, its sockets in
//!   RestrictAddressFamilies. Each capability is then shown to be needed.
//! - `xtask_install_*`: `cargo xtask install --destdir` (the xtask binary `cargo xtask test`
//!   built, with `--egret-bin` so that no release build runs inside the test).
//! - `container_image_*`: the Containerfile built with podman from the egret under test, run
//!   privileged, then run the way the DaemonSet runs it (its capabilities, mounts, arguments
//!   and readiness probe, read from the rendered manifests), against a test cgroup.
//! - `kubernetes_manifests_*`: `kubectl kustomize` renders them; `kubernetes-validate` (PyPI,
//!   bundled schemas, offline) validates them strictly.
//!
//! Missing tools (podman, strace, python3) are installed when we are root; otherwise the
//! tests skip, or fail under `CI=true`.

use anyhow::{bail, ensure, Context, Result};
use egret_e2e::deploy::{
    cap_mask, flags_in, kustomize, proc_status, repo_root, run_flags, setpriv_caps,
    shared_libraries, unit_directives, unit_value, yaml_top_keys, Validator, KUBERNETES_VERSIONS,
};
use egret_e2e::expect::{check_host, has_arg, is_flow, is_metric};
use egret_e2e::policy::audit_policy;
use egret_e2e::run::{log_tail, wait_child};
use egret_e2e::runtime::{ensure_programs, Podman, V1Mirrors};
use egret_e2e::skip::{require_egret_bin, require_root, require_world_executable, with_egret_bin};
use egret_e2e::{drop_privileges, field_str, prerequisite, ScratchDir, TcpServer, TestCgroup};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");
const START_TIMEOUT: Duration = Duration::from_secs(90);
const LINE_TIMEOUT: Duration = Duration::from_secs(15);

// ------------------------------------------------------------------ shared helpers --

fn unit_text() -> Result<String> {
    let path = repo_root().join("packaging/systemd/egret.service");
    std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
}

/// The unit's `CapabilityBoundingSet=`.
fn unit_caps() -> Result<Vec<String>> {
    let d = unit_directives(&unit_text()?);
    let caps = unit_value(&d, "Service", "CapabilityBoundingSet")
        .context("the unit has no CapabilityBoundingSet")?;
    Ok(caps.split_whitespace().map(String::from).collect())
}

fn read_lines(path: &Path) -> Result<Vec<Value>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    egret_e2e::json::read_jsonl(path)
}

/// Polls `path` (JSON lines) until a line satisfies `pred`; `alive` says whether the writer
/// still runs, `context` explains a failure.
fn wait_line(
    path: &Path,
    timeout: Duration,
    mut pred: impl FnMut(&Value) -> bool,
    mut alive: impl FnMut() -> bool,
    context: impl Fn() -> String,
) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let lines = read_lines(path)?;
        if let Some(v) = lines.iter().find(|v| pred(v)) {
            return Ok(v.clone());
        }
        if !alive() {
            bail!("egret stopped while waiting for a line\n{}", context());
        }
        if Instant::now() > deadline {
            let last: Vec<String> = lines
                .iter()
                .rev()
                .filter(|v| !is_metric(v))
                .take(8)
                .map(Value::to_string)
                .collect();
            bail!(
                "no matching line within {timeout:?} ({} lines); last event lines:\n{}\n{}",
                lines.len(),
                last.join("\n"),
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for `ready` (egret's ready file) to name a pid; `alive` as in [`wait_line`].
fn wait_ready(
    ready: &Path,
    mut alive: impl FnMut() -> bool,
    context: impl Fn() -> String,
) -> Result<u32> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(pid) = std::fs::read_to_string(ready)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Ok(pid);
        }
        if !alive() {
            bail!("egret exited before it was ready\n{}", context());
        }
        if Instant::now() > deadline {
            bail!("egret not ready within {START_TIMEOUT:?}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One TCP connection from `cg` to `port` on loopback by a fresh `egret-testclient` with
/// `marker` in its arguments.
fn connect_from(cg: &TestCgroup, port: u16, marker: &str) -> Result<()> {
    egret_e2e::run_in(
        cg,
        Command::new(CLIENT).args(["tcp", "127.0.0.1", &port.to_string(), marker]),
    )?;
    Ok(())
}

/// A process of user nobody in `cg` that started before egret and connects to `port` every
/// 200 ms (no exec in between), until killed.
fn nobody_loop(cg: &TestCgroup, port: u16) -> Result<Child> {
    require_world_executable(Path::new(CLIENT))?;
    let mut cmd = Command::new(CLIENT);
    cmd.args([
        "connect-loop",
        "--duration-ms",
        "300000",
        "--interval-ms",
        "200",
        "127.0.0.1",
        &port.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cg.command(&mut cmd)?;
    drop_privileges(&mut cmd, 65534, 65534);
    cmd.spawn().context("spawn the nobody client")
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ------------------------------------------------- the unit, run as systemd would --

/// The unit's ExecStart arguments (after the binary) with its paths moved into `out` (output,
/// alerts, ready file) and the repository's `/etc/egret` files, narrowed to `cg`.
fn unit_run_args(out: &Path, cg: &TestCgroup) -> Result<Vec<String>> {
    let d = unit_directives(&unit_text()?);
    let exec = unit_value(&d, "Service", "ExecStart").context("no ExecStart")?;
    let mut words = exec.split_whitespace();
    ensure!(
        words.next() == Some("/usr/local/bin/egret"),
        "ExecStart does not run /usr/local/bin/egret: {exec}"
    );
    let etc = repo_root().join("packaging/etc/egret");
    let mut args: Vec<String> = words
        .map(|w| {
            if let Some(rest) = w.strip_prefix("/var/log/egret/") {
                out.join(rest).display().to_string()
            } else if let Some(rest) = w.strip_prefix("/run/egret/") {
                out.join(rest).display().to_string()
            } else if let Some(rest) = w.strip_prefix("/etc/egret/") {
                etc.join(rest).display().to_string()
            } else {
                w.to_string()
            }
        })
        .collect();
    ensure!(
        args.first().map(String::as_str) == Some("run"),
        "ExecStart is not `egret run`: {exec}"
    );
    args.extend(["--cgroup".to_string(), cg.path().display().to_string()]);
    Ok(args)
}

/// The shell script that reproduces the unit's file-system sandbox in a new mount namespace,
/// then execs its arguments. `$1` is the only writable directory.
const SANDBOX: &str = r#"set -eu
out="$1"; shift
mount --bind "$out" "$out"
mount --bind /proc/sys /proc/sys
awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r m; do
  case "$m" in /proc|/dev|/dev/*|"$out") continue ;; /proc/*) [ "$m" = /proc/sys ] || continue ;; esac
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
for h in /home /root; do
  if [ -d "$h" ] && [ "${EGRET_KEEP_HOME:-}" != "$h" ]; then mount -t tmpfs -o ro,mode=0755 tmpfs "$h"; fi
done
cp /proc/self/mountinfo "$out/mountinfo"
exec "$@"
"#;

/// Starts the unit's egret: `setpriv` with `caps` as the bounding set (and nothing else),
/// no_new_privs; optionally in the sandbox and under `strace -o trace`.
fn start_unit_egret(
    out: &Path,
    cg: &TestCgroup,
    caps: &[String],
    sandbox: bool,
    strace: Option<&Path>,
) -> Result<Child> {
    let bin = require_egret_bin()?;
    let mut argv: Vec<String> = [
        "setpriv",
        "--no-new-privs",
        "--inh-caps=-all",
        "--ambient-caps=-all",
    ]
    .map(String::from)
    .to_vec();
    argv.push(format!("--bounding-set=-all,{}", setpriv_caps(caps)));
    argv.push("--".to_string());
    argv.push(bin.display().to_string());
    argv.extend(unit_run_args(out, cg)?);
    if let Some(strace) = strace {
        let trace = out.join("trace").display().to_string();
        let head = [
            strace.display().to_string(),
            "-f".into(),
            "-qq".into(),
            "-o".into(),
            trace,
        ];
        argv.splice(0..0, head);
    }
    if sandbox {
        let head = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            SANDBOX,
            "sandbox",
        ]
        .map(String::from)
        .into_iter()
        .chain([out.display().to_string()]);
        argv.splice(0..0, head);
    }
    let (program, rest) = argv.split_first().context("empty command")?;
    let mut cmd = Command::new(program);
    cmd.args(rest)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out.join("stdout.log"))?)
        .stderr(std::fs::File::create(out.join("stderr.log"))?);
    if bin.starts_with("/root") {
        cmd.env("EGRET_KEEP_HOME", "/root");
    } else if bin.starts_with("/home") {
        cmd.env("EGRET_KEEP_HOME", "/home");
    }
    cmd.spawn().context("start the unit's egret")
}

/// Syscall names and socket families in an `strace -f -o` file, from egret's own execve on.
fn traced(trace: &Path, bin: &Path) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
    let text =
        std::fs::read_to_string(trace).with_context(|| format!("read {}", trace.display()))?;
    let exec = format!("execve(\"{}\"", bin.display());
    let start = text
        .find(&exec)
        .with_context(|| format!("no {exec} in the trace"))?;
    let mut syscalls = BTreeSet::new();
    let mut families = BTreeSet::new();
    for line in text.get(start..).unwrap_or_default().lines() {
        let rest = line
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        let name = if let Some(r) = rest.strip_prefix("<... ") {
            r.split_whitespace().next().unwrap_or_default()
        } else {
            rest.split('(').next().unwrap_or_default()
        };
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            syscalls.insert(name.to_string());
        }
        if let Some(r) = rest.strip_prefix("socket(") {
            families.insert(r.split(',').next().unwrap_or_default().to_string());
        }
    }
    Ok((syscalls, families))
}

/// Every system call a `SystemCallFilter=` value allows (groups expanded by systemd-analyze).
fn syscall_filter(value: &str) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<String> = value.split_whitespace().map(String::from).collect();
    let mut seen = BTreeSet::new();
    while let Some(item) = todo.pop() {
        if !item.starts_with('@') {
            out.insert(item);
            continue;
        }
        if !seen.insert(item.clone()) {
            continue;
        }
        let o = Command::new("systemd-analyze")
            .args(["syscall-filter", &item])
            .output()
            .context("systemd-analyze syscall-filter")?;
        ensure!(
            o.status.success(),
            "systemd-analyze syscall-filter {item} failed"
        );
        for line in String::from_utf8_lossy(&o.stdout).lines().skip(1) {
            let w = line.trim();
            if !w.is_empty() && !w.starts_with('#') {
                todo.push(w.to_string());
            }
        }
    }
    Ok(out)
}

fn unit_prerequisites() -> Result<PathBuf> {
    require_root()?;
    require_egret_bin()?;
    egret_e2e::cgroup2_mount()?;
    for p in [
        "/usr/bin/setpriv",
        "/usr/bin/unshare",
        "/usr/bin/systemd-analyze",
    ] {
        egret_e2e::skip::require_program(p)?;
    }
    let found = ensure_programs(&[("strace", "strace", &["/usr/bin/strace"])])?;
    found.into_iter().next().context("strace not found")
}

/// The unit's egret, with the unit's capabilities, in its sandbox, under strace: it attaches,
/// reports a fresh process and a process of another user that predates it (executable
/// included), reloads on SIGHUP (ExecReload), stops cleanly on SIGTERM, and uses only system
/// calls and socket families the unit allows.
#[test]
fn systemd_unit_runs_with_its_capabilities_and_sandbox() -> Result<()> {
    let Some(strace) = prerequisite(unit_prerequisites())? else {
        return Ok(());
    };
    let caps = unit_caps()?;
    let d = unit_directives(&unit_text()?);
    let scratch = ScratchDir::create("deploy-unit")?;
    let out = scratch.path().join("out");
    std::fs::create_dir_all(&out)?;
    let cg = TestCgroup::create("deploy-unit")?;
    let pre_cg = cg.child("pre")?;
    let server = TcpServer::loopback()?;
    let pre = KillOnDrop(nobody_loop(&pre_cg, server.port())?);
    std::thread::sleep(Duration::from_millis(300));

    let mut child = start_unit_egret(&out, &cg, &caps, true, Some(&strace))?;
    let stderr = out.join("stderr.log");
    let ctx = || format!("--- stderr ---\n{}", log_tail(&stderr, 30));
    let pid = {
        let mut alive = || matches!(child.try_wait(), Ok(None));
        wait_ready(&out.join("ready"), &mut alive, ctx)?
    };

    // The sandbox held: the root, the cgroup2 tree and tracefs were read-only for egret.
    let mountinfo = std::fs::read_to_string(out.join("mountinfo"))?;
    let cg_mount = egret_e2e::cgroup2_mount()?;
    for want in [
        Path::new("/"),
        cg_mount.as_path(),
        Path::new("/sys/kernel/tracing"),
    ] {
        let line = mountinfo
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some(&*want.to_string_lossy()));
        if let Some(line) = line {
            let opts = line.split_whitespace().nth(5).unwrap_or_default();
            ensure!(
                opts.split(',').any(|o| o == "ro"),
                "{} was writable in the sandbox: {line}",
                want.display()
            );
        } else {
            ensure!(want != Path::new("/"), "no / in the sandbox's mountinfo");
        }
    }
    // Exactly the unit's capabilities, no_new_privs.
    let eff = u64::from_str_radix(&proc_status(pid, "CapEff")?, 16)?;
    ensure!(
        eff == cap_mask(&caps)?,
        "egret's CapEff is {eff:x}, the unit's set is {:x} ({caps:?})",
        cap_mask(&caps)?
    );
    ensure!(
        proc_status(pid, "NoNewPrivs")? == "1",
        "no_new_privs is not set"
    );

    let events = out.join("events.jsonl");
    let marker = egret_e2e::marker();
    connect_from(&cg, server.port(), &marker)?;
    let mut alive = || matches!(child.try_wait(), Ok(None));
    let fresh = wait_line(
        &events,
        LINE_TIMEOUT,
        |v| is_flow(v, "connect", "tcp", server.port()) && has_arg(v, &marker),
        &mut alive,
        ctx,
    )?;
    ensure!(
        field_str(&fresh, "process.executable") == Some(CLIENT),
        "executable of the fresh client: {fresh}"
    );
    let pre_pid = u64::from(pre.0.id());
    let old = wait_line(
        &events,
        LINE_TIMEOUT,
        |v| {
            is_flow(v, "connect", "tcp", server.port())
                && egret_e2e::field_u64(v, "process.pid") == Some(pre_pid)
        },
        &mut alive,
        ctx,
    )?;
    ensure!(
        field_str(&old, "process.executable") == Some(CLIENT),
        "a process of another user that predates egret lost its executable: {old}"
    );
    ensure!(
        field_str(&old, "process.user.name") == Some("nobody"),
        "user of the nobody client: {old}"
    );

    // ExecReload: SIGHUP re-reads the policy.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGHUP,
    )?;
    let deadline = Instant::now() + LINE_TIMEOUT;
    while !std::fs::read_to_string(&stderr)?.contains("SIGHUP: policy") {
        ensure!(
            Instant::now() < deadline,
            "no reload after SIGHUP\n{}",
            ctx()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The stop systemd does: SIGTERM to egret; it exits 0 with a final metric line.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let status = wait_child(&mut child, Duration::from_secs(30))?;
    ensure!(status.success(), "egret exited with {status}\n{}", ctx());
    let last = read_lines(&events)?.pop().context("no lines")?;
    ensure!(
        is_metric(&last),
        "the last line is not the final metric line: {last}"
    );

    let (used, families) = traced(&out.join("trace"), &require_egret_bin()?)?;
    let allowed = syscall_filter(
        &unit_value(&d, "Service", "SystemCallFilter").context("no SystemCallFilter")?,
    )?;
    let outside: Vec<&String> = used.difference(&allowed).collect();
    ensure!(
        outside.is_empty(),
        "egret made system calls the unit's SystemCallFilter does not allow: {outside:?}"
    );
    let families_allowed: BTreeSet<String> = unit_value(&d, "Service", "RestrictAddressFamilies")
        .context("no RestrictAddressFamilies")?
        .split_whitespace()
        .map(String::from)
        .collect();
    let outside: Vec<&String> = families.difference(&families_allowed).collect();
    ensure!(
        outside.is_empty(),
        "egret opened sockets of families the unit does not allow: {outside:?}"
    );
    eprintln!(
        "unit: {} system calls used, all allowed; socket families {families:?}",
        used.len()
    );
    drop(pre);
    Ok(())
}

/// Each of the unit's capabilities is needed: without CAP_BPF, CAP_PERFMON or CAP_NET_ADMIN
/// egret cannot attach; without CAP_SYS_PTRACE a process of another user that predates egret
/// is reported without its executable.
#[test]
fn systemd_unit_capabilities_are_each_needed() -> Result<()> {
    let Some(_strace) = prerequisite(unit_prerequisites())? else {
        return Ok(());
    };
    let caps = unit_caps()?;
    for needed in ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"] {
        ensure!(caps.iter().any(|c| c == needed), "the unit lacks {needed}");
        let fewer: Vec<String> = caps.iter().filter(|c| *c != needed).cloned().collect();
        let scratch = ScratchDir::create("deploy-caps")?;
        let cg = TestCgroup::create("deploy-caps")?;
        let mut child = start_unit_egret(scratch.path(), &cg, &fewer, false, None)?;
        let status = wait_child(&mut child, START_TIMEOUT)?;
        let err = std::fs::read_to_string(scratch.path().join("stderr.log"))?;
        ensure!(
            !status.success() && !scratch.path().join("ready").exists(),
            "egret attached without {needed} ({status})\n{err}"
        );
        ensure!(
            err.contains("Operation not permitted"),
            "without {needed} egret failed for another reason:\n{err}"
        );
    }

    ensure!(
        caps.iter().any(|c| c == "CAP_SYS_PTRACE"),
        "the unit lacks CAP_SYS_PTRACE"
    );
    let fewer: Vec<String> = caps
        .iter()
        .filter(|c| *c != "CAP_SYS_PTRACE")
        .cloned()
        .collect();
    let scratch = ScratchDir::create("deploy-ptrace")?;
    let cg = TestCgroup::create("deploy-ptrace")?;
    let server = TcpServer::loopback()?;
    let pre = KillOnDrop(nobody_loop(&cg, server.port())?);
    std::thread::sleep(Duration::from_millis(300));
    let mut child = start_unit_egret(scratch.path(), &cg, &fewer, false, None)?;
    let stderr = scratch.path().join("stderr.log");
    let ctx = || format!("--- stderr ---\n{}", log_tail(&stderr, 30));
    let mut alive = || matches!(child.try_wait(), Ok(None));
    wait_ready(&scratch.path().join("ready"), &mut alive, ctx)?;
    let pre_pid = u64::from(pre.0.id());
    let line = wait_line(
        &scratch.path().join("events.jsonl"),
        LINE_TIMEOUT,
        |v| {
            is_flow(v, "connect", "tcp", server.port())
                && egret_e2e::field_u64(v, "process.pid") == Some(pre_pid)
        },
        &mut alive,
        ctx,
    )?;
    ensure!(
        field_str(&line, "process.executable").is_none(),
        "without CAP_SYS_PTRACE the executable was still found, so the unit may not need it: {line}"
    );
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

/// `systemd-analyze verify` accepts the unit without a single warning, and
/// `systemd-analyze security` rates it at most 3.0 ("OK").
#[test]
fn systemd_unit_verifies() -> Result<()> {
    let Some(bin) = prerequisite(
        egret_e2e::skip::require_program("/usr/bin/systemd-analyze")
            .and_then(|()| require_egret_bin()),
    )?
    else {
        return Ok(());
    };
    let scratch = ScratchDir::create("deploy-verify")?;
    // verify checks that ExecStart exists: point it at the egret under test.
    let unit = unit_text()?.replace("/usr/local/bin/egret", &bin.display().to_string());
    let path = scratch.path().join("egret.service");
    std::fs::write(&path, unit)?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify: {}\n{text}",
        out.status
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for egret.service:").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no exposure level in:\n{text}"))?;
    eprintln!("systemd-analyze security: exposure {level}");
    ensure!(level <= 3.0, "exposure level {level} > 3.0:\n{text}");
    Ok(())
}

// ------------------------------------------------------------------- cargo xtask install --

/// `cargo xtask install --destdir D`: the binary, the unit (for the prefix), the default
/// configuration, logrotate, docs; a second install keeps edited configuration and says how
/// to restart.
#[test]
fn xtask_install_into_destdir() -> Result<()> {
    with_egret_bin(|bin| {
        let xtask = bin.with_file_name("xtask");
        let Some(()) = prerequisite(if xtask.is_file() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "{} is missing (it is built by `cargo xtask`; run the tests with `cargo xtask test`)",
                xtask.display()
            ))
        })?
        else {
            return Ok(());
        };
        let scratch = ScratchDir::create("deploy-install")?;
        let dest = scratch.path().join("root");
        let install = |extra: &[&str]| -> Result<String> {
            let out = Command::new(&xtask)
                .args(["install", "--destdir"])
                .arg(&dest)
                .arg("--egret-bin")
                .arg(&bin)
                .args(extra)
                .current_dir(repo_root())
                .output()
                .context("run xtask install")?;
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            ensure!(
                out.status.success(),
                "xtask install failed: {}\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(stdout)
        };
        let first = install(&[])?;
        ensure!(
            first.contains("systemctl daemon-reload && systemctl enable --now egret"),
            "install does not say how to start egret:\n{first}"
        );
        let installed = dest.join("usr/local/bin/egret");
        ensure!(
            std::fs::read(&installed)? == std::fs::read(&bin)?,
            "the installed binary differs"
        );
        let unit =
            std::fs::read_to_string(dest.join("usr/local/lib/systemd/system/egret.service"))?;
        ensure!(
            unit == unit_text()?,
            "the unit for /usr/local differs from packaging/"
        );
        for f in [
            "etc/egret/policy.yaml",
            "etc/egret/config.yaml",
            "etc/egret/README",
            "etc/logrotate.d/egret",
            "usr/local/share/doc/egret/deploy.md",
        ] {
            ensure!(dest.join(f).is_file(), "{f} was not installed");
        }
        // The installed egret accepts the installed policy.
        let check = Command::new(&installed)
            .args(["policy", "check"])
            .arg(dest.join("etc/egret/policy.yaml"))
            .output()?;
        ensure!(
            check.status.success(),
            "policy check of the installed policy failed"
        );

        // An upgrade keeps what the administrator changed.
        let policy = dest.join("etc/egret/policy.yaml");
        std::fs::write(&policy, "mode: audit\nrules: []\n# edited\n")?;
        let second = install(&[])?;
        ensure!(
            std::fs::read_to_string(&policy)?.contains("# edited"),
            "the second install overwrote /etc/egret/policy.yaml"
        );
        ensure!(
            second.contains("systemctl restart egret"),
            "an upgrade does not say to restart:\n{second}"
        );

        // Another prefix: the unit runs that prefix's binary.
        install(&["--prefix", "/usr"])?;
        let unit = std::fs::read_to_string(dest.join("usr/lib/systemd/system/egret.service"))?;
        ensure!(
            unit.contains("ExecStart=/usr/bin/egret run"),
            "the unit for --prefix /usr does not run /usr/bin/egret"
        );
        Ok(())
    })
}

/// The example configuration names only `egret run` flags (the keys `--config` will read),
/// the unit passes only real flags, the example policy is valid.
#[test]
fn packaging_matches_egret_run() -> Result<()> {
    with_egret_bin(|bin| {
        let flags = run_flags(&bin)?;
        let config = std::fs::read_to_string(repo_root().join("packaging/etc/egret/config.yaml"))?;
        for key in yaml_top_keys(&config) {
            ensure!(
                flags.contains(&key),
                "config.yaml key {key:?} is not an `egret run` flag"
            );
        }
        let d = unit_directives(&unit_text()?);
        let exec = unit_value(&d, "Service", "ExecStart").context("no ExecStart")?;
        for flag in flags_in(exec.split_whitespace()) {
            ensure!(
                flags.contains(&flag),
                "the unit passes --{flag}, which egret run does not know"
            );
        }
        let check = Command::new(&bin)
            .args(["policy", "check"])
            .arg(repo_root().join("packaging/etc/egret/policy.yaml"))
            .output()?;
        ensure!(
            check.status.success(),
            "packaging/etc/egret/policy.yaml does not pass policy check"
        );
        Ok(())
    })
}

// --------------------------------------------------------------------- container image --

/// The build context: the egret under test (debug info stripped) as `egret`, and `rootfs/`:
/// packaging/container/rootfs plus exactly the shared libraries `ldd` lists.
fn stage_context(podman: &Podman) -> Result<PathBuf> {
    let bin = require_egret_bin()?.canonicalize()?;
    let ctx = podman.scratch_dir("context")?;
    let dst = ctx.join("egret");
    let stripped = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(&bin)
        .arg(&dst)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(&bin, &dst)?;
    }
    let rootfs = ctx.join("rootfs");
    let src = repo_root().join("packaging/container/rootfs");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&rootfs)
        .status()?;
    ensure!(cp.success(), "cp -a {} {}", src.display(), rootfs.display());
    for lib in shared_libraries(&bin)? {
        let target = rootfs.join(lib.strip_prefix("/").unwrap_or(&lib));
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::copy(&lib, &target).with_context(|| format!("copy {}", lib.display()))?;
    }
    Ok(ctx)
}

fn build_image(podman: &Podman) -> Result<String> {
    let ctx = stage_context(podman)?;
    let tag = "egret.test/egret:e2e";
    let built = podman.build(
        &repo_root().join("Containerfile"),
        &ctx,
        tag,
        &[("EGRET_BIN", "egret"), ("ROOTFS", "rootfs")],
    )?;
    eprintln!(
        "image {tag}: {:.1} MB, built in {:.1} s (runtime {})",
        built.size as f64 / 1e6,
        built.took.as_secs_f64(),
        podman.runtime().display()
    );
    Ok(tag.to_string())
}

fn podman_prerequisites() -> Result<Podman> {
    require_root()?;
    require_egret_bin()?;
    egret_e2e::cgroup2_mount()?;
    Podman::new()
}

/// The image, run privileged in the host's pid namespace with the host's cgroup2 tree and
/// tracefs mounted, reports a connection a host process makes from a test cgroup into the
/// mounted output directory; its readiness command answers; it stops cleanly.
#[test]
fn container_image_privileged() -> Result<()> {
    let Some(podman) = prerequisite(podman_prerequisites())? else {
        return Ok(());
    };
    let cg = TestCgroup::create("deploy-img")?;
    let parent = TestCgroup::create("deploy-img-ctr")?;
    let _v1 = V1Mirrors::of(&parent)?;
    let podman = podman; // dropped first: containers go before their cgroups
    let image = build_image(&podman)?;
    let out = podman.scratch_dir("out")?;
    let mount = egret_e2e::cgroup2_mount()?.display().to_string();
    let name = format!("egret-e2e-{}", egret_e2e::unique_suffix());
    let v = |host: &str, ctr: &str, opts: &str| format!("--volume={host}:{ctr}{opts}");
    let podman_args = vec![
        "--privileged".to_string(),
        "--pid=host".to_string(),
        "--uts=host".to_string(),
        "--cgroupns=host".to_string(),
        format!("--cgroup-parent={}", parent.relative_path()),
        v(&mount, &mount, ""),
        v("/sys/kernel/tracing", "/sys/kernel/tracing", ""),
        v(&out.display().to_string(), "/var/log/egret", ""),
        v("/etc/passwd", "/etc/passwd", ":ro"),
        v("/etc/group", "/etc/group", ":ro"),
    ];
    let args: Vec<String> = [
        "run",
        "--output=/var/log/egret/events.jsonl",
        "--ready-file=/var/log/egret/ready",
        "--containerd-socket=none",
        "--docker-socket=none",
        "--podman-socket=none",
        "--crio-socket=none",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--cgroup={}", cg.path().display())])
    .collect();
    podman.run_detached(&name, &podman_args, &image, &args)?;
    let ctx = || format!("--- podman logs ---\n{}", podman.logs(&name));
    let mut alive = || podman.running(&name);
    let pid = wait_ready(&out.join("ready"), &mut alive, ctx)?;
    // The readiness probe's command, inside the container.
    let probe = egret_e2e::run_with_timeout(
        podman.cmd().args([
            "exec",
            &name,
            "/usr/bin/egret",
            "ready",
            "/var/log/egret/ready",
        ]),
        Duration::from_secs(30),
    )?;
    ensure!(
        probe.status.success(),
        "egret ready failed in the container: {}",
        probe.stderr
    );

    let server = TcpServer::loopback()?;
    let marker = egret_e2e::marker();
    connect_from(&cg, server.port(), &marker)?;
    let line = wait_line(
        &out.join("events.jsonl"),
        LINE_TIMEOUT,
        |v| is_flow(v, "connect", "tcp", server.port()) && has_arg(v, &marker),
        &mut alive,
        ctx,
    )?;
    ensure!(
        field_str(&line, "process.executable") == Some(CLIENT),
        "executable: {line}"
    );
    ensure!(
        field_str(&line, "process.user.name") == Some("root"),
        "user name: {line}"
    );
    ensure!(
        field_str(&line, "egret.cgroup.path") == Some(cg.relative_path().as_str()),
        "cgroup: {line}"
    );
    check_host(&line)?;
    eprintln!(
        "privileged container: egret pid {pid}, RSS {}",
        proc_status(pid, "VmRSS").unwrap_or_default()
    );
    let code = podman.stop(&name, 20)?;
    ensure!(
        code == 0,
        "egret in the container exited with {code}\n{}",
        ctx()
    );
    let last = read_lines(&out.join("events.jsonl"))?
        .pop()
        .context("no lines")?;
    ensure!(is_metric(&last), "no final metric line: {last}");
    podman.remove(&name)?;
    Ok(())
}

/// The kubelet's atomic ConfigMap layout: `<dir>/..<stamp>/<file>`, `..data` → `..<stamp>`,
/// `<file>` → `..data/<file>`. Calling it again swaps `..data` the way the kubelet updates it.
fn write_configmap(dir: &Path, files: &[(&str, &str)], generation: u32) -> Result<()> {
    let stamp = format!("..2026_01_01_00_00_0{generation}.{}", egret_e2e::unique());
    let data = dir.join(&stamp);
    std::fs::create_dir_all(&data)?;
    for (name, content) in files {
        std::fs::write(data.join(name), content)?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link)?;
        }
    }
    Ok(())
}

/// [`audit_policy`] with its one rule for TCP only.
fn policy_approving(rule: &str, port: u16) -> String {
    format!("{}    protocols: [tcp]\n", audit_policy(rule, port))
}

/// The DaemonSet, as far as podman can run it: the rendered manifests' capabilities,
/// securityContext, host namespaces, mounts, arguments and readiness probe, with the ConfigMap
/// in the kubelet's layout. egret reports a host connection from a test cgroup with the
/// ConfigMap's rule, picks up a ConfigMap update (--watch), and stops cleanly.
#[test]
fn container_image_as_the_daemonset_runs_it() -> Result<()> {
    let Some(podman) = prerequisite(podman_prerequisites())? else {
        return Ok(());
    };
    let Some(validator) = prerequisite(Validator::ensure())? else {
        return Ok(());
    };
    let Some(rendered) = prerequisite(kustomize(&repo_root().join("deploy/kubernetes")))? else {
        return Ok(());
    };
    let docs = validator.yaml_to_json(&rendered)?;
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .context("no DaemonSet")?;
    let pod = &ds["spec"]["template"]["spec"];
    let ctr = pod["containers"]
        .as_array()
        .and_then(|c| c.first())
        .context("no container")?;

    let cg = TestCgroup::create("deploy-ds")?;
    let parent = TestCgroup::create("deploy-ds-ctr")?;
    let _v1 = V1Mirrors::of(&parent)?;
    let podman = podman;
    let image = build_image(&podman)?;
    let server = TcpServer::loopback()?;

    // Volumes: host paths as they are, except the node's log directory and the runtime
    // socket directories (test directories instead: nothing is created on the host), the
    // ConfigMap (the kubelet's layout) and emptyDirs.
    let logs = podman.scratch_dir("logs")?;
    let configmap = podman.scratch_dir("configmap")?;
    let policy_key = "policy.yaml";
    write_configmap(
        &configmap,
        &[(policy_key, &policy_approving("e2e-before", server.port()))],
        1,
    )?;
    let mut volumes = std::collections::BTreeMap::new();
    for vol in pod["volumes"].as_array().context("no volumes")? {
        let name = vol["name"].as_str().context("volume name")?.to_string();
        let host = if let Some(path) = vol["hostPath"]["path"].as_str() {
            match path {
                "/var/log/egret" => logs.clone(),
                "/run/containerd" | "/run/crio" => podman.scratch_dir(&name)?,
                other => PathBuf::from(other),
            }
        } else if vol.get("configMap").is_some() {
            configmap.clone()
        } else if vol.get("emptyDir").is_some() {
            podman.scratch_dir(&name)?
        } else {
            bail!("volume {name}: unknown kind {vol}");
        };
        volumes.insert(name, host);
    }
    let mut podman_args: Vec<String> = vec![format!("--cgroup-parent={}", parent.relative_path())];
    if pod["hostPID"] == true {
        podman_args.push("--pid=host".into());
    }
    if pod["hostNetwork"] == true {
        podman_args.push("--uts=host".into());
    }
    let sc = &ctr["securityContext"];
    ensure!(
        sc["privileged"] != true,
        "the DaemonSet's container is privileged"
    );
    if let Some(uid) = sc["runAsUser"].as_u64() {
        podman_args.push(format!(
            "--user={uid}:{}",
            sc["runAsGroup"].as_u64().unwrap_or(0)
        ));
    }
    if sc["capabilities"]["drop"]
        .as_array()
        .is_some_and(|d| d.iter().any(|c| c == "ALL"))
    {
        podman_args.push("--cap-drop=all".into());
    }
    let added: Vec<String> = sc["capabilities"]["add"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    for cap in &added {
        podman_args.push(format!("--cap-add={cap}"));
    }
    // The DaemonSet's capabilities are the unit's.
    let unit: BTreeSet<String> = unit_caps()?.into_iter().collect();
    let ds_caps: BTreeSet<String> = added.iter().map(|c| format!("CAP_{c}")).collect();
    ensure!(
        unit == ds_caps,
        "DaemonSet capabilities {ds_caps:?} != unit {unit:?}"
    );
    if sc["allowPrivilegeEscalation"] == false {
        podman_args.push("--security-opt=no-new-privileges".into());
    }
    if sc["readOnlyRootFilesystem"] == true {
        podman_args.push("--read-only".into());
    }
    match sc["seccompProfile"]["type"].as_str() {
        Some("Unconfined") => podman_args.push("--security-opt=seccomp=unconfined".into()),
        Some("RuntimeDefault") | None => {}
        Some(other) => bail!("seccompProfile {other} is not reproduced by this test"),
    }
    for m in ctr["volumeMounts"].as_array().context("no volumeMounts")? {
        let name = m["name"].as_str().context("mount name")?;
        let host = volumes
            .get(name)
            .with_context(|| format!("no volume {name}"))?;
        let path = m["mountPath"].as_str().context("mountPath")?;
        let ro = if m["readOnly"] == true { ":ro" } else { "" };
        podman_args.push(format!("--volume={}:{path}{ro}", host.display()));
    }
    let mut args: Vec<String> = ctr["args"]
        .as_array()
        .context("no args")?
        .iter()
        .filter_map(|a| a.as_str())
        .map(String::from)
        .collect();
    args.push(format!("--cgroup={}", cg.path().display()));
    let output = args
        .iter()
        .find_map(|a| a.strip_prefix("--output=/var/log/egret/"))
        .context("the DaemonSet does not write to /var/log/egret")?
        .to_string();
    let events = logs.join(output);
    let probe: Vec<String> = ctr["readinessProbe"]["exec"]["command"]
        .as_array()
        .context("no exec readiness probe")?
        .iter()
        .filter_map(|a| a.as_str())
        .map(String::from)
        .collect();
    let image_ref = ctr["image"].as_str().context("no image")?;
    ensure!(
        image_ref.starts_with("egret"),
        "unexpected image {image_ref}"
    );

    let name = format!("egret-e2e-ds-{}", egret_e2e::unique_suffix());
    podman.run_detached(&name, &podman_args, &image, &args)?;
    let ctx = || format!("--- podman logs ---\n{}", podman.logs(&name));
    let mut alive = || podman.running(&name);
    // Ready: the probe's command succeeds in the container.
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let mut exec = podman.cmd();
        exec.args(["exec", &name]).args(&probe);
        let out = egret_e2e::run_with_timeout(&mut exec, Duration::from_secs(30))?;
        if out.status.success() {
            break;
        }
        ensure!(alive(), "egret stopped before it was ready\n{}", ctx());
        ensure!(
            Instant::now() < deadline,
            "never ready: {}\n{}",
            out.stderr,
            ctx()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid: u32 = podman.inspect(&name, "{{.State.Pid}}")?.parse()?;
    let eff = u64::from_str_radix(&proc_status(pid, "CapEff")?, 16)?;
    ensure!(
        eff == cap_mask(&unit.iter().cloned().collect::<Vec<_>>())?,
        "CapEff {eff:x} in the container"
    );
    ensure!(
        proc_status(pid, "NoNewPrivs")? == "1",
        "no_new_privs not set"
    );

    let marker = egret_e2e::marker();
    connect_from(&cg, server.port(), &marker)?;
    let line = wait_line(
        &events,
        LINE_TIMEOUT,
        |v| is_flow(v, "connect", "tcp", server.port()) && has_arg(v, &marker),
        &mut alive,
        ctx,
    )?;
    ensure!(
        field_str(&line, "rule.name") == Some("e2e-before"),
        "not approved by the ConfigMap's rule: {line}"
    );
    ensure!(
        field_str(&line, "process.executable") == Some(CLIENT),
        "executable: {line}"
    );
    check_host(&line)?;

    // A ConfigMap update: the kubelet swaps ..data; --watch reloads.
    write_configmap(
        &configmap,
        &[(policy_key, &policy_approving("e2e-after", server.port()))],
        2,
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let marker = egret_e2e::marker();
        connect_from(&cg, server.port(), &marker)?;
        let line = wait_line(
            &events,
            LINE_TIMEOUT,
            |v| is_flow(v, "connect", "tcp", server.port()) && has_arg(v, &marker),
            &mut alive,
            ctx,
        )?;
        if field_str(&line, "rule.name") == Some("e2e-after") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the ConfigMap update was not picked up: {line}\n{}",
            ctx()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "DaemonSet container: egret pid {pid}, RSS {}, capabilities {added:?}",
        proc_status(pid, "VmRSS").unwrap_or_default()
    );
    let code = podman.stop(&name, 20)?;
    ensure!(code == 0, "egret exited with {code}\n{}", ctx());
    podman.remove(&name)?;
    Ok(())
}

// ------------------------------------------------------------------ Kubernetes manifests --

/// `kubectl kustomize deploy/kubernetes` renders; every resource passes strict validation
/// against the Kubernetes schemas (offline, pinned versions); a broken copy does not (so the
/// validator is not a no-op); the DaemonSet's arguments are `egret run` flags and its
/// ConfigMap's policy is valid.
#[test]
fn kubernetes_manifests_validate() -> Result<()> {
    let Some(validator) = prerequisite(Validator::ensure())? else {
        return Ok(());
    };
    let Some(rendered) = prerequisite(kustomize(&repo_root().join("deploy/kubernetes")))? else {
        return Ok(());
    };
    let scratch = ScratchDir::create("deploy-k8s")?;
    let file = scratch.path().join("egret.yaml");
    std::fs::write(&file, &rendered)?;
    for version in KUBERNETES_VERSIONS {
        let report = validator.validate(&file, version)?;
        for kind in [
            "namespace/egret",
            "serviceaccount/egret",
            "configmap/egret-policy",
            "daemonset/egret",
        ] {
            ensure!(
                report.contains(&format!("passed for resource {kind}")),
                "{kind} not validated against {version}:\n{report}"
            );
        }
    }
    let broken = scratch.path().join("broken.yaml");
    std::fs::write(&broken, rendered.replace("hostPID: true", "hostPid: true"))?;
    ensure!(
        validator.validate(&broken, KUBERNETES_VERSIONS[0]).is_err(),
        "the validator accepted an unknown field"
    );

    let docs = validator.yaml_to_json(&rendered)?;
    for d in &docs {
        if d["kind"] != "Namespace" {
            ensure!(
                d["metadata"]["namespace"] == "egret",
                "not in namespace egret: {d}"
            );
        }
    }
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .context("no DaemonSet")?;
    let pod = &ds["spec"]["template"]["spec"];
    ensure!(pod["hostPID"] == true, "the DaemonSet needs hostPID");
    ensure!(
        pod["tolerations"].as_array().is_some_and(|t| t
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none())),
        "the DaemonSet does not tolerate every taint"
    );
    if let Some(bin) = prerequisite(require_egret_bin())? {
        let flags = run_flags(&bin)?;
        let ctr = &pod["containers"][0];
        let args: Vec<&str> = ctr["args"]
            .as_array()
            .context("args")?
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        ensure!(
            args.first() == Some(&"run"),
            "the DaemonSet does not `egret run`"
        );
        for flag in flags_in(args.iter().copied()) {
            ensure!(
                flags.contains(&flag),
                "the DaemonSet passes --{flag}, unknown to egret run"
            );
        }
        let cm = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap")
            .context("no ConfigMap")?;
        let policy = scratch.path().join("policy.yaml");
        std::fs::write(
            &policy,
            cm["data"]["policy.yaml"]
                .as_str()
                .context("no policy.yaml")?,
        )?;
        let check = Command::new(&bin)
            .args(["policy", "check"])
            .arg(&policy)
            .output()?;
        ensure!(
            check.status.success(),
            "the ConfigMap's policy does not pass policy check"
        );
    }
    Ok(())
}

/// deploy/kubernetes/report-cronjob.yaml (the daily report, not in the kustomization) passes
/// strict validation; each container runs `egret report` with arguments egret accepts: run
/// here on a small event file, they write the report they name.
#[test]
fn kubernetes_report_cronjob_validates() -> Result<()> {
    let Some(validator) = prerequisite(Validator::ensure())? else {
        return Ok(());
    };
    let file = repo_root().join("deploy/kubernetes/report-cronjob.yaml");
    for version in KUBERNETES_VERSIONS {
        let report = validator.validate(&file, version)?;
        ensure!(
            report.contains("passed for resource cronjob/egret-report"),
            "the CronJob not validated against {version}:\n{report}"
        );
        eprintln!("kubernetes-validate {version}: {}", report.trim());
    }
    let docs = validator.yaml_to_json(&std::fs::read_to_string(&file)?)?;
    let cron = docs.first().context("no document")?;
    ensure!(cron["kind"] == "CronJob", "not a CronJob: {cron}");
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().context("no containers")?;
    let Some(bin) = prerequisite(require_egret_bin())? else {
        return Ok(());
    };
    let scratch = ScratchDir::create("deploy-cronjob")?;
    let events = scratch.path().join("events.jsonl");
    std::fs::write(&events, "")?;
    let mut formats = Vec::new();
    for ctr in containers {
        let args: Vec<String> = ctr["args"]
            .as_array()
            .context("args")?
            .iter()
            .filter_map(|a| a.as_str())
            .map(|a| {
                a.replace(
                    "/var/lib/egret/reports",
                    &scratch.path().display().to_string(),
                )
                .replace("/var/log/egret/events.jsonl", &events.display().to_string())
            })
            .collect();
        ensure!(
            args.first().map(String::as_str) == Some("report"),
            "{args:?}"
        );
        let out = Command::new(&bin).args(&args).output()?;
        ensure!(
            out.status.success(),
            "egret {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let written = args
            .iter()
            .find_map(|a| a.strip_prefix("--out="))
            .context("no --out")?;
        ensure!(Path::new(written).is_file(), "{written} was not written");
        formats.extend(
            args.iter()
                .filter_map(|a| a.strip_prefix("--format="))
                .map(str::to_owned),
        );
    }
    formats.sort();
    ensure!(formats == ["html", "json"], "reports: {formats:?}");
    Ok(())
}
