//! Tests of the harness itself and of the test client (no egret needed).

use anyhow::{ensure, Context, Result};
use egret_e2e::{
    command, prerequisite, run_with_timeout, skip, socket_addr, wait_until, NetNs, RunOutput,
    TcpServer, TestCgroup, UdpServer,
};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");
const T: Duration = Duration::from_secs(30);

/// Runs the test client with `args` (outside any test cgroup); it must succeed within [`T`].
fn run_client(args: &[&str]) -> Result<RunOutput> {
    run_with_timeout(&mut command(CLIENT, args), T)?.ensure_success()
}

/// `count()` (a server's connections or datagrams) reaches `at_least` within [`T`]; an error
/// says `what` and the last count.
fn expect_count(what: &str, at_least: u64, count: impl Fn() -> u64) -> Result<()> {
    ensure!(
        wait_until(T, || Ok(count() >= at_least))?,
        "{what} (count {} of {at_least})",
        count()
    );
    Ok(())
}

#[test]
fn testclient_tcp_v4_v6_mapped() -> Result<()> {
    let v4 = TcpServer::loopback()?;
    let port = v4.port().to_string();
    run_client(&["tcp", "127.0.0.1", &port, "marker-x", "more"])?;
    run_client(&["tcp", "::ffff:127.0.0.1", &port])?;
    expect_count("v4 server: connections accepted", 2, || v4.accepted())?;
    let v6 = TcpServer::start(socket_addr("[::1]:0")?)?;
    run_client(&["tcp", "::1", &v6.port().to_string()])?;
    expect_count("v6 server accepted nothing", 1, || v6.accepted())?;
    Ok(())
}

#[test]
fn testclient_sleep_then_tcp() -> Result<()> {
    let s = TcpServer::loopback()?;
    let start = Instant::now();
    run_client(&["sleep-then-tcp", "200", "127.0.0.1", &s.port().to_string()])?;
    ensure!(
        start.elapsed() >= Duration::from_millis(200),
        "did not sleep"
    );
    expect_count("server accepted nothing", 1, || s.accepted())?;
    Ok(())
}

#[test]
fn testclient_udp() -> Result<()> {
    let s = UdpServer::loopback()?;
    let port = s.port().to_string();
    run_client(&["udp-connect", "127.0.0.1", &port, "marker"])?;
    expect_count("udp-connect: nothing received", 1, || s.received())?;
    run_client(&["udp-send", "127.0.0.1", &port, "--count", "50", "marker"])?;
    expect_count("udp-send: datagrams received", 51, || s.received())?;
    let s6 = UdpServer::start(socket_addr("[::1]:0")?)?;
    run_client(&["udp-send", "::1", &s6.port().to_string(), "--count", "3"])?;
    expect_count("udp-send v6: datagrams received", 3, || s6.received())?;
    Ok(())
}

fn parse_loop_output(out: &str) -> Result<(u64, u64)> {
    let line = out.trim();
    let (ops, ns) = line
        .split_once(' ')
        .with_context(|| format!("bad output {line:?}"))?;
    let ops = ops
        .strip_prefix("ops=")
        .with_context(|| format!("bad output {line:?}"))?
        .parse()?;
    let ns = ns
        .strip_prefix("elapsed_ns=")
        .with_context(|| format!("bad output {line:?}"))?
        .parse()?;
    Ok((ops, ns))
}

#[test]
fn testclient_loops() -> Result<()> {
    for sub in ["tcp-loop", "request-loop", "udp-loop"] {
        let out = run_client(&[sub, "--addr", "127.0.0.1", "--duration-ms", "300"])?;
        let (ops, ns) = parse_loop_output(&out.stdout)?;
        ensure!(ops > 0, "{sub}: no ops");
        ensure!(ns >= 300_000_000, "{sub}: elapsed {ns} ns < duration");
        let out = run_client(&[sub, "--addr", "::1", "--duration-ms", "50"])?;
        ensure!(parse_loop_output(&out.stdout)?.0 > 0, "{sub} v6: no ops");
        // The address may also come first, without `--addr`.
        let out = run_client(&[sub, "::1", "--duration-ms", "50"])?;
        ensure!(parse_loop_output(&out.stdout)?.0 > 0, "{sub} ADDR: no ops");
    }
    Ok(())
}

#[test]
fn testclient_connect_loop_counts_and_errno() -> Result<()> {
    let open = TcpServer::loopback()?;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?;
    let closed_port = closed.local_addr()?.port();
    drop(closed);
    let dir = egret_e2e::PolicyDir::create("harness-loop")?;
    let status = dir.path().join("status");
    let (p_open, p_closed) = (open.port().to_string(), closed_port.to_string());
    let out = run_client(&[
        "connect-loop",
        "--count",
        "3",
        "--interval-ms",
        "0",
        "--status-file",
        &status.display().to_string(),
        "127.0.0.1",
        &p_open,
        &p_closed,
    ])?;
    let counts = egret_e2e::policy::parse_loop_counts(&out.stdout)?;
    let want_open = egret_e2e::policy::PortCounts {
        ok: 3,
        eperm: 0,
        other: 0,
    };
    let want_closed = egret_e2e::policy::PortCounts {
        ok: 0,
        eperm: 0,
        other: 3,
    };
    ensure!(
        counts.get(&open.port()) == Some(&want_open)
            && counts.get(&closed_port) == Some(&want_closed),
        "connect-loop counts: {counts:?}"
    );
    ensure!(
        egret_e2e::policy::read_loop_status(&status)? == counts,
        "status file differs from stdout"
    );
    // A stop file ends a loop with no duration or count.
    let stop = dir.path().join("stop");
    std::fs::write(&stop, "")?;
    run_client(&[
        "connect-loop",
        "--stop-file",
        &stop.display().to_string(),
        "127.0.0.1",
        &p_open,
    ])?;
    // A failed system call names its errno on stdout (ECONNREFUSED here).
    let out = run_with_timeout(&mut command(CLIENT, &["tcp", "127.0.0.1", &p_closed]), T)?;
    ensure!(
        !out.status.success() && out.stdout.trim() == format!("errno={}", libc::ECONNREFUSED),
        "want errno={} on stdout, got {:?} ({})",
        libc::ECONNREFUSED,
        out.stdout,
        out.status
    );
    Ok(())
}

#[test]
fn testclient_fails_loudly() -> Result<()> {
    for args in [
        &["tcp"][..],
        &["tcp", "not-an-ip", "1"],
        &["bogus"],
        &["udp-send", "127.0.0.1", "1", "--count", "x"],
    ] {
        let out = run_with_timeout(&mut command(CLIENT, args), T)?;
        ensure!(!out.status.success(), "{args:?} should fail");
        ensure!(!out.stderr.is_empty(), "{args:?} failed without a message");
    }
    // Nothing listens on this port (bound, not listening).
    let sock = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = sock.local_addr()?.port();
    drop(sock);
    let out = run_with_timeout(
        &mut command(CLIENT, &["tcp", "127.0.0.1", &port.to_string()]),
        T,
    )?;
    ensure!(
        !out.status.success(),
        "connect to a closed port should fail"
    );
    Ok(())
}

#[test]
fn cgroup_create_join_and_drop() -> Result<()> {
    let Some(()) =
        prerequisite(skip::require_root().and_then(|()| egret_e2e::cgroup2_mount().map(|_| ())))?
    else {
        return Ok(());
    };
    let cg = TestCgroup::create("harness")?;
    let mount = egret_e2e::cgroup2_mount()?;
    ensure!(
        cg.path().parent() == Some(mount.as_path()),
        "cgroup not directly under the mount"
    );
    ensure!(
        cg.relative_path() == format!("/{}", cg.name()),
        "relative path {}",
        cg.relative_path()
    );
    let child = cg.child("egret-e2e-h.service")?;
    ensure!(
        child.relative_path().ends_with("/egret-e2e-h.service"),
        "child path {}",
        child.relative_path()
    );

    let mut cmd = Command::new("/bin/sleep");
    cmd.arg("60");
    child.command(&mut cmd)?;
    let mut proc1 = cmd.spawn().context("spawn sleep")?;
    let pid = i32::try_from(proc1.id())?;
    ensure!(
        child.procs()?.contains(&pid),
        "sleep {pid} not in {:?}",
        child.procs()?
    );
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    ensure!(
        own.lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&child.relative_path())),
        "/proc/{pid}/cgroup: {own}"
    );
    // A second process directly in the parent.
    let mut cmd = Command::new("/bin/sleep");
    cmd.arg("60");
    cg.command(&mut cmd)?;
    let mut proc2 = cmd.spawn().context("spawn sleep")?;

    let (parent_path, child_path) = (cg.path().to_path_buf(), child.path().to_path_buf());
    // Dropping the parent first must kill both and remove both directories.
    drop(cg);
    ensure!(
        !parent_path.exists() && !child_path.exists(),
        "cgroup directories still exist"
    );
    ensure!(
        proc1.wait()?.code().is_none(),
        "sleep in child cgroup was not killed"
    );
    ensure!(
        proc2.wait()?.code().is_none(),
        "sleep in cgroup was not killed"
    );
    drop(child); // already gone: must be a quiet no-op
    Ok(())
}

#[test]
fn netns_create_serve_and_drop() -> Result<()> {
    let Some(()) =
        prerequisite(skip::require_root().and_then(|()| skip::require_program("/usr/sbin/ip")))?
    else {
        return Ok(());
    };
    let a = NetNs::create("harness")?;
    let b = NetNs::create("harness")?;
    ensure!(a.ns_v4() != b.ns_v4(), "two namespaces share a subnet");
    let server = TcpServer::from_listener(a.tcp_listener(SocketAddr::new(a.ns_v4().into(), 0))?)?;
    run_client(&["tcp", &a.ns_v4().to_string(), &server.port().to_string()])?;
    expect_count("server in netns accepted nothing", 1, || server.accepted())?;
    if a.has_v6() {
        let s6 = TcpServer::from_listener(a.tcp_listener(SocketAddr::new(a.ns_v6().into(), 0))?)?;
        run_client(&["tcp", &a.ns_v6().to_string(), &s6.port().to_string()])?;
        expect_count("v6 server in netns accepted nothing", 1, || s6.accepted())?;
    }
    // A command inside the namespace sees the peer address.
    let out = run_with_timeout(
        a.command("/usr/sbin/ip").args(["-o", "-4", "addr", "show"]),
        T,
    )?
    .ensure_success()?;
    ensure!(
        out.stdout.contains(&a.ns_v4().to_string()),
        "ip addr in ns: {}",
        out.stdout
    );

    let (name, host_if) = (a.name().to_string(), a.host_if().to_string());
    drop(server);
    drop(a);
    let list = Command::new("/usr/sbin/ip")
        .args(["netns", "list"])
        .output()?;
    ensure!(
        !String::from_utf8_lossy(&list.stdout).contains(&name),
        "netns {name} still exists"
    );
    let link = Command::new("/usr/sbin/ip")
        .args(["link", "show", &host_if])
        .output()?;
    ensure!(!link.status.success(), "veth {host_if} still exists");
    drop(b);
    Ok(())
}

/// A stand-in for egret: writes one event, the ready file, and a metric line on SIGTERM.
const FAKE_AGENT: &str = r#"#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    --output) out=$2; shift;;
    --ready-file) ready=$2; shift;;
  esac
  shift
done
trap 'printf "{\"event\":{\"kind\":\"metric\",\"action\":\"stats\"}}\n" >> "$out"; exit 0' TERM
printf '{"event":{"kind":"event","action":"connect","sequence":1},"destination":{"port":1}}\n' >> "$out"
printf '{"event":{"kind":"event","action":"connect","sequence":2},"destination":{"port":2}}\n{"partial' >> "$out"
touch "$ready"
while :; do sleep 0.05; done
"#;

const FAILING_AGENT: &str = "#!/bin/sh\necho 'failed to load BPF: permission denied' >&2\nexit 3\n";

fn write_script(dir: &std::path::Path, name: &str, text: &str) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    Ok(p)
}

#[test]
fn egret_wrapper_with_fake_agent() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("egret-e2e-fake-{}", egret_e2e::unique_suffix()));
    std::fs::create_dir_all(&dir)?;
    let fake = write_script(&dir, "fake-egret", FAKE_AGENT)?;
    let mut e = egret_e2e::Egret::start_with(&fake, &dir, &["--extra"])?;
    let v = e.wait_for(
        |v| egret_e2e::field_u64(v, "destination.port") == Some(2),
        T,
    )?;
    ensure!(
        egret_e2e::field_u64(&v, "event.sequence") == Some(2),
        "wrong line {v}"
    );
    // The trailing partial line is not returned (and not an error).
    ensure!(e.events()?.len() == 2, "events: {:?}", e.events()?);
    let err = e.wait_for(
        |v| egret_e2e::field_u64(v, "destination.port") == Some(3),
        Duration::from_millis(300),
    );
    ensure!(err.is_err(), "wait_for must time out");
    // Finish the partial line with something that is not JSON: events() must fail.
    std::fs::OpenOptions::new()
        .append(true)
        .open(e.events_path())
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"\n"))?;
    ensure!(e.events().is_err(), "a non-JSON line must be an error");
    let status = e.stop()?;
    ensure!(status.success(), "fake agent exit {status}");
    ensure!(!e.running()?, "still running after stop");
    e.discard_dir_on_drop();
    let scratch = e.dir().to_path_buf();
    drop(e);
    ensure!(!scratch.exists(), "scratch dir not removed after success");

    let failing = write_script(&dir, "failing-egret", FAILING_AGENT)?;
    let err = match egret_e2e::Egret::start_with(&failing, &dir, &[]) {
        Ok(_) => anyhow::bail!("a failing agent must not start"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        err.contains("permission denied") && err.contains("exit status: 3"),
        "error: {err}"
    );
    // The failed start kept its scratch directory for inspection; remove it.
    let prefix = format!(
        "egret-e2e-run-{}-",
        dir.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .trim_start_matches("egret-e2e-")
    );
    for entry in std::fs::read_dir(std::env::temp_dir())?.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
