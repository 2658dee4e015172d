//! Hostile or broken neighbours: the real egret against a container runtime socket that
//! misbehaves, a policy file that is attacked, and an open file limit that is too small.
//!
//! - The runtime is a real unix socket server in the test process ([`FakeDocker`]) at the
//!   path given to `--docker-socket`; containers are cgroups the test creates below its own,
//!   named as Docker's systemd driver names them (`docker-<64 hex>.scope`).
//! - The policy file is replaced the way a broken tool or an attacker would, under `--watch`,
//!   and egret is sent SIGHUP.
//! - The open file limit is set in the child between fork and exec (`setrlimit`).

use anyhow::{ensure, Context, Result};
use egret_e2e::expect::{check_field_absent, check_field_str, is_metric};
use egret_e2e::policy::{audit_policy, check_verdict};
use egret_e2e::run::ScratchDir;
use egret_e2e::runtime::containerd::container_id;
use egret_e2e::runtime::{Behaviour, FakeDocker};
use egret_e2e::{
    command, field_str, field_u64, marker, run_in, run_with_timeout, Egret, Harness, PolicyDir,
    TcpServer, TestCgroup, LINE_TIMEOUT,
};
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");

/// A TCP connection from `cg` to 127.0.0.1:`port`, and the `connect` line egret wrote for it.
fn connect_line(egret: &mut Egret, cg: &TestCgroup, port: u16) -> Result<Value> {
    let m = marker();
    run_in(
        cg,
        &mut command(CLIENT, &["tcp", "127.0.0.1", &port.to_string(), &m]),
    )?;
    egret.wait_for_marked_flow("connect", "tcp", port, &m)
}

/// Waits for a metric line whose counter `name` is at least `min`.
fn wait_metric(egret: &mut Egret, name: &str, min: u64, timeout: Duration) -> Result<Value> {
    let path = format!("egret.metrics.{name}");
    egret
        .wait_for(
            |v| is_metric(v) && field_u64(v, &path).is_some_and(|n| n >= min),
            timeout,
        )
        .with_context(|| format!("waiting for {name} >= {min}"))
}

/// The line of a container the runtime did not name: id and runtime hint from the path,
/// `egret.container.identity: unknown`.
fn check_unknown(v: &Value, id: &str, runtime: &str) -> Result<()> {
    check_field_str(v, "container.id", id)?;
    check_field_str(v, "container.runtime", runtime)?;
    check_field_str(v, "egret.container.identity", "unknown")?;
    check_field_absent(v, "container.name")
}

fn check_known(v: &Value, id: &str, name: &str) -> Result<()> {
    check_field_str(v, "container.id", id)?;
    check_field_str(v, "container.name", name)?;
    check_field_str(v, "container.image.name", "registry.test/web:1")?;
    check_field_absent(v, "egret.container.identity")
}

/// Bound on egret's peak memory growth while a runtime streams 100 MB at it.
const RSS_GROWTH_KIB: u64 = 40 * 1024;

#[test]
fn hostile_runtime_sockets_then_recovery() -> Result<()> {
    Harness::with_cgroup("nb-runtime", |cg| {
        let dir = ScratchDir::create("nb-runtime")?;
        let socket = dir.path().join("docker.sock");
        let socket_arg = socket.display().to_string();
        let mut fake = FakeDocker::start(&socket, Behaviour::Silent)?;
        // The same misbehaviour on containerd's socket, for its gRPC client (nerdctl's
        // `nerdctl-<id>.scope` cgroups are asked there).
        let grpc_socket = dir.path().join("containerd.sock");
        let grpc_arg = grpc_socket.display().to_string();
        let mut grpc_fake = FakeDocker::start(&grpc_socket, Behaviour::Silent)?;
        let mut h = Harness::start(
            cg,
            &[
                "--docker-socket",
                &socket_arg,
                "--containerd-socket",
                &grpc_arg,
                "--podman-socket",
                "none",
                "--crio-socket",
                "none",
                "--container-grace-ms",
                "300",
            ],
        )?;
        let server = TcpServer::loopback()?;
        let port = server.port();
        let base_kib = h.egret.peak_rss_kib()?;

        // A runtime that accepts and never answers: ten containers at once (more than the
        // eight look-ups egret runs at a time), each line still written, after the grace
        // period, as unknown. The host's own connections are not held up either.
        let mut silent = Vec::new();
        for _ in 0..10 {
            let id = container_id("silent");
            let cgc = h.cgroup.child(&format!("docker-{id}.scope"))?;
            silent.push((id, cgc));
        }
        for (id, cgc) in &silent {
            check_unknown(&connect_line(&mut h.egret, cgc, port)?, id, "docker")?;
        }
        let id = container_id("silent-grpc");
        let cgc = h.cgroup.child(&format!("nerdctl-{id}.scope"))?;
        check_unknown(&connect_line(&mut h.egret, &cgc, port)?, &id, "containerd")?;
        let host = connect_line(&mut h.egret, &h.cgroup, port)?;
        check_field_absent(&host, "container.id")?;
        // Every silent look-up ends, bounded in time, and is counted as a time-out.
        wait_metric(
            &mut h.egret,
            "container_fetch_timeouts",
            11,
            Duration::from_secs(30),
        )?;
        ensure!(
            fake.accepted() >= 1 && grpc_fake.accepted() >= 1,
            "egret never asked the silent runtimes"
        );

        // Garbage, a 100 MB answer, half an answer: each a new runtime at the same path (as a
        // restarted runtime replaces its socket), each container's line written as unknown.
        let mut failed = Vec::new();
        for behaviour in [
            Behaviour::Garbage,
            Behaviour::Huge,
            Behaviour::CloseMidAnswer,
        ] {
            drop(fake);
            drop(grpc_fake);
            fake = FakeDocker::start(&socket, behaviour.clone())?;
            grpc_fake = FakeDocker::start(&grpc_socket, behaviour.clone())?;
            let id = container_id("hostile");
            let cgc = h.cgroup.child(&format!("docker-{id}.scope"))?;
            let line = connect_line(&mut h.egret, &cgc, port)?;
            check_unknown(&line, &id, "docker").with_context(|| format!("{behaviour:?}"))?;
            let grpc_id = container_id("hostile-grpc");
            let grpc_cg = h.cgroup.child(&format!("nerdctl-{grpc_id}.scope"))?;
            let line = connect_line(&mut h.egret, &grpc_cg, port)?;
            check_unknown(&line, &grpc_id, "containerd")
                .with_context(|| format!("containerd {behaviour:?}"))?;
            ensure!(
                egret_e2e::wait_until(LINE_TIMEOUT, || Ok(
                    fake.accepted() >= 1 && grpc_fake.accepted() >= 1
                ))?,
                "egret never asked the {behaviour:?} runtimes"
            );
            failed.push((id, cgc));
        }
        drop(grpc_fake);
        // Counted: the silent runtimes' time-outs, the garbage and the 100 MB answers as
        // malformed, all of them as errors.
        let metric = wait_metric(
            &mut h.egret,
            "container_fetch_errors",
            17,
            Duration::from_secs(30),
        )?;
        ensure!(
            field_u64(&metric, "egret.metrics.containers_cached") == Some(0)
                && field_u64(&metric, "egret.metrics.container_malformed").is_some_and(|n| n >= 2),
            "malformed answers not counted, or containers counted as known: {metric}"
        );
        let grown = h.egret.peak_rss_kib()?.saturating_sub(base_kib);
        eprintln!("egret's peak RSS grew by {grown} KiB ({base_kib} KiB at start)");
        ensure!(
            grown < RSS_GROWTH_KIB,
            "egret's peak RSS grew by {grown} KiB against a 100 MB answer (bound {RSS_GROWTH_KIB} KiB)"
        );

        // The runtime recovers: a new container is named at once...
        drop(fake);
        let fake = FakeDocker::start(
            &socket,
            Behaviour::Inspect {
                name: "web".to_owned(),
                image: "registry.test/web:1".to_owned(),
            },
        )?;
        let id = container_id("good");
        let cgc = h.cgroup.child(&format!("docker-{id}.scope"))?;
        check_known(&connect_line(&mut h.egret, &cgc, port)?, &id, "web")?;
        // ...and one that failed is asked again (10 s after its failure) and named then.
        let (garbage_id, garbage_cg) = failed
            .first()
            .context("no container of the garbage runtime")?;
        let mut named = None;
        for _ in 0..25 {
            let line = connect_line(&mut h.egret, garbage_cg, port)?;
            if field_str(&line, "container.name").is_some() {
                named = Some(line);
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let named = named.context("the container of the garbage runtime was never named")?;
        check_known(&named, garbage_id, "web")?;
        ensure!(fake.accepted() >= 2, "the good runtime was not asked twice");
        drop(fake);
        h.finish()
    })
}

/// A policy that cannot be parsed at all: the file cut in the middle of a rule.
fn truncated(good: &str) -> String {
    let cut = good.find("ports:").unwrap_or(good.len() / 2) + "ports: [".len();
    good.get(..cut).unwrap_or(good).to_owned()
}

/// The classic billion laughs, nine levels of nine.
fn billion_laughs() -> String {
    let mut text =
        String::from("mode: audit\nlol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let aliases = vec![format!("*l{}", i - 1); 9].join(", ");
        text.push_str(&format!("lol{i}: &l{i} [{aliases}]\n"));
    }
    text.push_str("rules: []\n");
    text
}

/// One 1 MB scalar repeated by 200 aliases: 200 MB once loaded, were aliases not bounded
/// (the YAML reader's own bound counts nodes, not bytes).
fn large_alias() -> String {
    format!(
        "mode: audit\nbig: &big {}\nmany: [{}]\nrules: []\n",
        "x".repeat(1 << 20),
        vec!["*big"; 200].join(", ")
    )
}

/// Writes 100 MB of YAML comments to `path`, a megabyte at a time.
fn write_huge(path: &Path) -> Result<()> {
    use std::io::Write as _;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let line = format!("# {}\n", "x".repeat((1 << 20) - 3));
    for _ in 0..100 {
        f.write_all(line.as_bytes())?;
    }
    f.flush()?;
    Ok(())
}

/// One attack: its name, how the file is replaced, and what egret must say.
struct Attack {
    name: &'static str,
    message: &'static str,
}

/// Replaces `dir/policy.yaml` as attack `name` does (by rename over it, so `--watch` sees
/// one change).
fn attack(dir: &PolicyDir, name: &str, good: &str) -> Result<()> {
    let path = dir.path().join("policy.yaml");
    let tmp = dir.path().join(format!(".attack-{name}"));
    match name {
        "truncated" => std::fs::write(&tmp, truncated(good))?,
        "truncated-rule" => {
            let cut = good.find("    ports:").unwrap_or(good.len());
            std::fs::write(
                &tmp,
                good.get(..cut)
                    .unwrap_or(good)
                    .replace("to: [\"127.0.0.1\"]", "to:"),
            )?;
        }
        "symlink-loop" => {
            let other = dir.path().join("loop-other");
            std::os::unix::fs::symlink(&path, &other)?;
            std::os::unix::fs::symlink(&other, &tmp)?;
        }
        "100MB" => write_huge(&tmp)?,
        "fifo" => {
            let c = std::ffi::CString::new(tmp.as_os_str().as_encoded_bytes())?;
            // SAFETY: a valid NUL-terminated path.
            let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
            ensure!(
                rc == 0,
                "mkfifo {}: {}",
                tmp.display(),
                std::io::Error::last_os_error()
            );
        }
        "billion-laughs" => std::fs::write(&tmp, billion_laughs())?,
        "large-alias" => std::fs::write(&tmp, large_alias())?,
        _ => anyhow::bail!("unknown attack {name}"),
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("rename over {}", path.display()))
}

const ATTACKS: [Attack; 7] = [
    Attack {
        name: "truncated",
        message: "invalid YAML",
    },
    Attack {
        name: "truncated-rule",
        message: "rules[0].to: expected a list of destinations",
    },
    Attack {
        name: "symlink-loop",
        message: "(file): cannot open: Too many levels of symbolic links",
    },
    Attack {
        name: "100MB",
        message: "(file): larger than 16777216 bytes",
    },
    Attack {
        name: "large-alias",
        message: "alias bomb",
    },
    Attack {
        name: "fifo",
        message: "(file): not a regular file",
    },
    Attack {
        name: "billion-laughs",
        message: "alias bomb",
    },
];

/// The old policy is still in force: its rule approves `approved`, nothing approves `other`.
fn check_old_policy(h: &mut Harness, approved: u16, other: u16) -> Result<()> {
    let line = connect_line(&mut h.egret, &h.cgroup, approved)?;
    check_verdict(&line, "approved", "audit", Some("approved-port"))?;
    let line = connect_line(&mut h.egret, &h.cgroup, other)?;
    check_verdict(&line, "unapproved", "audit", None)
}

#[test]
fn attacked_policy_file_is_refused_and_the_old_policy_stays() -> Result<()> {
    Harness::with_cgroup("nb-policy", |cg| {
        let (approved, other) = (TcpServer::loopback()?, TcpServer::loopback()?);
        let good = audit_policy("approved-port", approved.port());
        let (dir, policy) = PolicyDir::with_policy("nb-policy", &good)?;
        let policy_arg = policy.display().to_string();
        let mut h = Harness::start(cg, &["--policy", &policy_arg, "--watch"])?;
        let base_kib = h.egret.peak_rss_kib()?;
        check_old_policy(&mut h, approved.port(), other.port())?;

        for (n, Attack { name, message }) in ATTACKS.iter().enumerate() {
            let stderr_before = h.egret.stderr_text()?.len();
            attack(&dir, name, &good)?;
            // `--watch` notices within a second.
            wait_metric(
                &mut h.egret,
                "policy_reload_failures",
                n as u64 + 1,
                LINE_TIMEOUT,
            )
            .with_context(|| format!("attack {name}"))?;
            let stderr = h.egret.stderr_text()?;
            let new = stderr.get(stderr_before..).unwrap_or_default();
            ensure!(
                new.contains("new policy refused") && new.contains(&policy_arg) && new.contains(message),
                "attack {name}: egret's stderr should name {policy_arg} and say {message:?}; it said:\n{new}"
            );
            check_old_policy(&mut h, approved.port(), other.port())
                .with_context(|| format!("after attack {name}"))?;
            // `egret policy check` says the same.
            let check = run_with_timeout(
                Command::new(egret_e2e::egret_bin()).args(["policy", "check", &policy_arg]),
                Duration::from_secs(60),
            )?;
            ensure!(
                check.status.code() == Some(1) && check.stderr.contains(message),
                "egret policy check after attack {name}: {check:?}"
            );
        }
        // SIGHUP with the bomb still in place: refused again.
        h.egret.sighup()?;
        wait_metric(
            &mut h.egret,
            "policy_reload_failures",
            ATTACKS.len() as u64 + 1,
            LINE_TIMEOUT,
        )?;
        check_old_policy(&mut h, approved.port(), other.port())?;
        let grown = h.egret.peak_rss_kib()?.saturating_sub(base_kib);
        eprintln!("egret's peak RSS grew by {grown} KiB over the attacks");
        ensure!(
            grown < 64 * 1024,
            "egret's peak RSS grew by {grown} KiB over the attacks"
        );

        // A good policy is still taken.
        dir.write("policy.yaml", &audit_policy("other-port", other.port()))?;
        wait_metric(&mut h.egret, "policy_reloads", 1, LINE_TIMEOUT)?;
        let line = connect_line(&mut h.egret, &h.cgroup, other.port())?;
        check_verdict(&line, "approved", "audit", Some("other-port"))?;

        // At start, an attacked policy is a clear error and exit 78 (no restart loop).
        attack(&dir, "billion-laughs", &good)?;
        let (mut cmd, scratch) = Egret::command(h.cgroup.path(), &["--policy", &policy_arg])?;
        let out = run_with_timeout(&mut cmd, Duration::from_secs(60))?;
        let _ = std::fs::remove_dir_all(&scratch);
        ensure!(
            out.status.code() == Some(78)
                && out.stderr.contains(&policy_arg)
                && out.stderr.contains("alias bomb")
                && !out.stderr.contains("panicked"),
            "egret with an alias bomb for a policy: {out:?}"
        );
        h.finish()
    })
}

/// Sets the open file limit (soft, hard) of the command's process.
fn nofile(cmd: &mut Command, soft: u64, hard: u64) {
    // SAFETY: setrlimit is async-signal-safe and the hook allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// The soft open file limit of `pid`, from `/proc/<pid>/limits`.
fn soft_nofile(pid: u32) -> Result<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .context("no open file limit in /proc/<pid>/limits")
}

#[test]
fn open_file_limit_too_low_is_one_clear_error_and_a_low_soft_limit_is_raised() -> Result<()> {
    Harness::with_cgroup("nb-fds", |cg| {
        // A hard limit below what egret needs: one clear error, exit 78, nothing attached.
        for limit in [16, 32, 64] {
            let (mut cmd, scratch) = Egret::command(cg.path(), &[])?;
            nofile(&mut cmd, limit, limit);
            let out = run_with_timeout(&mut cmd, Duration::from_secs(60))?;
            let ready = scratch.join("ready").exists();
            let _ = std::fs::remove_dir_all(&scratch);
            ensure!(
                out.status.code() == Some(78)
                    && out.stderr.contains(&format!("open file limit is {limit}"))
                    && out.stderr.contains("at least 128")
                    && !out.stderr.contains("panicked")
                    && !ready,
                "egret with {limit} open files: {out:?}"
            );
        }
        // A low soft limit under a high hard one: raised, and egret works.
        let server = TcpServer::loopback()?;
        let mut egret = Egret::start_tweaked(cg.path(), &[], |cmd| nofile(cmd, 32, 4096))?;
        let pid = egret.pid().context("egret's pid")?;
        ensure!(
            soft_nofile(pid)? == 4096,
            "egret did not raise its soft limit"
        );
        ensure!(
            egret
                .stderr_text()?
                .contains("open file limit raised from 32 to its hard limit 4096"),
            "the raise is not logged:\n{}",
            egret.stderr_tail()
        );
        connect_line(&mut egret, &cg, server.port())?;
        egret.stop_cleanly()?;
        egret.discard_dir_on_drop();

        // Exactly the minimum: egret runs and writes lines.
        let mut egret = Egret::start_tweaked(cg.path(), &[], |cmd| nofile(cmd, 128, 128))?;
        for _ in 0..3 {
            connect_line(&mut egret, &cg, server.port())?;
        }
        egret.stop_cleanly()?;
        egret.discard_dir_on_drop();
        Ok(())
    })
}
