//! Process identity on connection lines (issue 13): who the user is (effective and real ids,
//! the audit login user and session), the terminal, the session and entry leaders of an SSH
//! session, and the executable and arguments however the process was exec'd.
//!
//! Every expectation is ground truth the test reads from the kernel itself, `/proc/<pid>`,
//! while the process that connected is still alive (it holds until the test releases it: see
//! `egret_e2e::identity`). Real programs on the real kernel: Debian's sshd and ssh, setpriv,
//! Python's pty module, bash, the kernel's memfd and `#!` handling.
//!
//! Python runs by its real path (`/usr/bin/python3.X`, not the `/usr/bin/python3` symlink), so
//! that each test proves one thing: only `exec_through_symlink` needs a symlink resolved.
//! Each process connects to a server of its own: its line is found by the destination port,
//! whatever egret made of its arguments.

use anyhow::{ensure, Context, Result};
use egret_e2e::expect::{check_field_absent, check_field_str, check_field_u64};
use egret_e2e::identity::{
    all_of, check_every_line_is_json, check_executable_is, check_flag, check_login,
    check_parent_is, check_process_is, check_session_leader, check_tty, check_users, os_arg,
    pids_with_arg, session_leader_of, shown, uid_without_user, Held, Kit, ProcTruth,
    LOGINUID_UNSET, PTY_MAJORS,
};
use egret_e2e::ssh::Sshd;
use egret_e2e::{
    field, field_str, field_u64, marker, prerequisite, skip, wait_until, Harness, NetNs, TcpServer,
};
use serde_json::Value;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");
const SH: &str = "/bin/sh";
const SETPRIV: &str = "/usr/bin/setpriv";

/// The kit, or a skip (outside CI) when Python or setpriv is missing.
fn kit(name: &str) -> Result<Option<Kit>> {
    prerequisite(skip::require_program(SETPRIV).and_then(|()| Kit::create(name)))
}

/// Waits for egret's `connect` line of the TCP flow to `port` (each process of these tests
/// connects to a server of its own, so the port finds its line whatever egret made of argv).
fn connect_line(h: &mut Harness, port: u16) -> Result<Value> {
    h.egret.wait_for_flow("connect", "tcp", port)
}

/// A loopback server in the root namespace, and its address.
fn server() -> Result<(TcpServer, SocketAddr)> {
    let s = TcpServer::loopback()?;
    let addr = s.addr();
    Ok((s, addr))
}

/// `sh -c 'echo UID > /proc/self/loginuid; exec setpriv ... -- ARGV'`: the shell sets its
/// audit login uid, as pam_loginuid does for a login (which also starts a new audit session),
/// then becomes the user of `setpriv` and execs `argv`: one process from start to end.
fn login_command(login_uid: Option<u32>, setpriv: &[&str], argv: &[String]) -> Command {
    let mut cmd = Command::new(SH);
    cmd.arg("-c").arg(
        r#"if [ -n "$1" ]; then echo "$1" > /proc/self/loginuid || exit 97; fi; shift; exec "$@""#,
    );
    cmd.arg("sh")
        .arg(login_uid.map(|u| u.to_string()).unwrap_or_default())
        .arg(SETPRIV)
        .args(setpriv)
        .arg("--")
        .args(argv);
    cmd
}

/// Proves: `egret.login` is the audit login a process set for itself (as pam_loginuid does:
/// `/proc/self/loginuid`, which also opens a new audit session whose id is
/// `/proc/self/sessionid`), and it survives a change of user: `egret.login.user.id` is the
/// login uid as a string, `.name` its user name when the user database has one (absent for a
/// uid without entry), `egret.login.session_id` the audit session id. After `setpriv`,
/// `process.user` is the effective uid and `process.real_user` the real uid (different on
/// purpose), `process.group` / `process.real_group` likewise. A process whose loginuid is
/// unset has no `egret.login`.
#[test]
fn login_session_and_users() -> Result<()> {
    let Some(kit) = kit("login")? else {
        return Ok(());
    };
    let Some(()) = prerequisite(skip::require_world_executable(kit.python_bin()))? else {
        return Ok(());
    };
    Harness::with_egret("id-login", &[], |mut h| {
        let no_name = uid_without_user(424_200)?;
        // (login uid, setpriv options, the ruid/euid/rgid/egid the process must end with)
        let cases: [(Option<u32>, &[&str], [u32; 4]); 3] = [
            // Logged in as bin (2); real user nobody, effective user daemon.
            (
                Some(2),
                &[
                    "--ruid=65534",
                    "--euid=1",
                    "--rgid=65534",
                    "--egid=1",
                    "--clear-groups",
                ],
                [65534, 1, 65534, 1],
            ),
            // Logged in as a uid the user database does not know; then nobody.
            (
                Some(no_name),
                &["--reuid=65534", "--regid=65534", "--clear-groups"],
                [65534, 65534, 65534, 65534],
            ),
            // No login: the loginuid this test runs with (unset on a CI machine).
            (
                None,
                &["--reuid=0", "--regid=0", "--keep-groups"],
                [0, 0, 0, 0],
            ),
        ];
        let own_loginuid: u32 = std::fs::read_to_string("/proc/self/loginuid")?
            .trim()
            .parse()?;
        let mut failures = Vec::new();
        for (login, setpriv, [ruid, euid, rgid, egid]) in cases {
            let (_server, addr) = server()?;
            let release = kit.fresh_file("release");
            let m = marker();
            let argv = kit.python_argv(&kit.connect_args(addr, &release, &m, &[]));
            let mut cmd = login_command(login, setpriv, &argv);
            h.cgroup.command(&mut cmd)?;
            let mut held = Held::spawn(&mut cmd, &release, "login process")?;
            held.next_json()?;
            let line = connect_line(&mut h, addr.port())?;
            let truth = ProcTruth::read(held.pid())?;
            // The test's own set-up did what it meant to.
            let want_login = login.unwrap_or(own_loginuid);
            ensure!(
                truth.loginuid == want_login
                    && truth.uids[..2] == [ruid, euid]
                    && truth.gids[..2] == [rgid, egid],
                "set-up: want loginuid {want_login} uids {ruid}/{euid} gids {rgid}/{egid}, /proc says {truth:?}"
            );
            if login.is_some() {
                ensure!(
                    truth.sessionid != LOGINUID_UNSET,
                    "set-up: writing the loginuid opened no audit session: {truth:?}"
                );
            }
            let res = all_of(
                &line,
                [check_login(&line, &truth), check_process_is(&line, &truth)],
            );
            if let Err(e) = res {
                failures.push(format!("login {login:?} as {ruid}/{euid}: {e:#}"));
            }
            held.finish()?;
        }
        ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
        h.finish()
    })
}

/// `sh -c SCRIPT sh LOGIN_UID MODE ARGV...` in a new session (`setsid()` before the exec, so the
/// shell leads it): the shell sets its audit login uid, prints `sessionid=N` (the audit session
/// that opened), then either execs `ARGV` (`exec`) or forks it and waits (`fork`), printing
/// `child=PID`. Nothing holds: every process of it is gone when it returns.
fn short_lived_login(login_uid: u32, mode: &str, argv: &[String]) -> Command {
    const SCRIPT: &str = r#"echo "$1" > /proc/self/loginuid || exit 97
echo "sessionid=$(cat /proc/self/sessionid)"
mode=$2; shift 2
if [ "$mode" = fork ]; then "$@" & echo "child=$!"; wait $!; exit $?; fi
exec "$@""#;
    let mut cmd = Command::new(SH);
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg("sh")
        .arg(login_uid.to_string())
        .arg(mode)
        .args(argv);
    // SAFETY: setsid(2) is async-signal-safe; nothing allocates.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Runs `cmd` (in the test cgroup) to its end; returns its pid and its stdout.
fn run_to_end(h: &Harness, cmd: &mut Command) -> Result<(u32, String)> {
    h.cgroup.command(cmd)?;
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "set-up: {cmd:?} failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((pid, stdout))
}

/// The number after `KEY=` on a line of `text`.
fn said(text: &str, key: &str) -> Result<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .with_context(|| format!("set-up: no {key}= in the output {text:?}"))?
        .trim()
        .parse()
        .with_context(|| format!("set-up: {key}= in {text:?}"))
}

/// The shell of [`short_lived_login`] as `/proc` showed it (`/bin/sh` by its real path).
fn short_lived_shell(pid: u32, cmd: &Command, login: u32, session: u32) -> Result<ProcTruth> {
    let mut cmdline = vec![SH.as_bytes().to_vec()];
    cmdline.extend(cmd.get_args().map(|a| a.as_encoded_bytes().to_vec()));
    Ok(ProcTruth {
        pid,
        exe: std::fs::canonicalize(SH)?.display().to_string(),
        cmdline,
        uids: [0; 4],
        gids: [0; 4],
        ppid: std::process::id(),
        sid: pid,
        tty_nr: 0,
        loginuid: login,
        sessionid: session,
    })
}

/// Proves, for processes that are gone before egret could read `/proc` (the test reads no
/// `/proc` of them: every expectation is what the test made them), that a login captured in
/// the kernel at exec and fork names the line. A shell in a session of its own sets its audit
/// login uid (bin, 2) and forks `setpriv --ruid=nobody --euid=daemon -- egret-testclient`,
/// which connects once and exits at once: the line has `egret.login.user` `2`/`bin`,
/// `egret.login.session_id` = the audit session the shell opened, `process.user` daemon and
/// `process.real_user` nobody, `process.executable`/`name`/`args` of the client, and the
/// shell as `process.parent` and `process.session_leader`. Then the same shell execs
/// `setpriv ... -- python identity.py reexec connect` (a `/proc/self/exe` re-exec that
/// connects and exits): the line names Python (never `exe`), the login, the users, and the
/// process itself as its session leader (one process from the shell to the end).
#[test]
fn login_of_processes_that_are_gone() -> Result<()> {
    let Some(kit) = kit("gone")? else {
        return Ok(());
    };
    let Some(()) = prerequisite(skip::require_world_executable(kit.python_bin()))? else {
        return Ok(());
    };
    let Some(()) = prerequisite(skip::require_world_executable(Path::new(CLIENT)))? else {
        return Ok(());
    };
    Harness::with_egret("id-gone", &[], |mut h| {
        const LOGIN: u32 = 2;
        let setpriv: Vec<String> = [
            SETPRIV,
            "--ruid=65534",
            "--euid=1",
            "--rgid=65534",
            "--egid=1",
            "--clear-groups",
            "--",
        ]
        .map(String::from)
        .to_vec();
        let mut failures = Vec::new();

        // Forked: the test client connects once and exits.
        let (_server, addr) = server()?;
        let m = marker();
        let client_args: Vec<String> = [
            CLIENT,
            "tcp-exchange",
            &addr.ip().to_string(),
            &addr.port().to_string(),
            "--send",
            "0",
            &m,
        ]
        .map(String::from)
        .to_vec();
        let mut cmd = short_lived_login(
            LOGIN,
            "fork",
            &[setpriv.clone(), client_args.clone()].concat(),
        );
        let (shell_pid, out) = run_to_end(&h, &mut cmd)?;
        let session = said(&out, "sessionid")?;
        let child = said(&out, "child")?;
        ensure!(
            session != LOGINUID_UNSET && session != 0,
            "set-up: writing the loginuid opened no audit session: {out}"
        );
        let shell = short_lived_shell(shell_pid, &cmd, LOGIN, session)?;
        // The shell's arguments are whole on the line (a parent's are cut at 512 bytes).
        let shell_bytes: usize = shell.cmdline.iter().map(Vec::len).sum();
        ensure!(
            shell_bytes < 512,
            "set-up: the shell's arguments are {shell_bytes} bytes"
        );
        let client = ProcTruth {
            pid: child,
            exe: std::fs::canonicalize(CLIENT)?.display().to_string(),
            cmdline: client_args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            uids: [65534, 1, 1, 1],
            gids: [65534, 1, 1, 1],
            ppid: shell_pid,
            sid: shell_pid,
            ..shell.clone()
        };
        let line = connect_line(&mut h, addr.port())?;
        if let Err(e) = all_of(
            &line,
            [
                check_login(&line, &client),
                check_process_is(&line, &client),
                check_parent_is(&line, &shell),
                check_session_leader(&line, &shell),
                check_field_absent(&line, "process.tty"),
            ],
        ) {
            failures.push(format!("the forked test client: {e:#}"));
        }

        // Exec'd all the way: shell, setpriv, Python, Python again through /proc/self/exe.
        let (_server, addr) = server()?;
        let release = kit.fresh_file("release");
        std::fs::write(&release, b"")?;
        let mut argv = setpriv.clone();
        argv.push(kit.python_bin().display().to_string());
        argv.push(kit.script().display().to_string());
        argv.push("reexec".into());
        let connect = kit.connect_args(addr, &release, &marker(), &[]);
        argv.extend(connect.iter().cloned());
        let mut cmd = short_lived_login(LOGIN, "exec", &argv);
        let (pid, out) = run_to_end(&h, &mut cmd)?;
        let session = said(&out, "sessionid")?;
        let json = out
            .lines()
            .find_map(|l| serde_json::from_str::<Value>(l).ok())
            .with_context(|| format!("set-up: no JSON line from Python: {out}"))?;
        ensure!(
            field_u64(&json, "pid") == Some(u64::from(pid))
                && field(&json, "uids") == Some(&serde_json::json!([65534, 1, 1])),
            "set-up: the re-exec'd Python is not the spawned process as daemon: {json}"
        );
        // What Python re-exec'd with: [sys.executable, the script, ARGS...].
        let mut cmdline = vec![
            kit.python_bin().display().to_string(),
            kit.script().display().to_string(),
        ];
        cmdline.extend(connect.iter().cloned());
        let python = ProcTruth {
            exe: kit.python_bin().display().to_string(),
            cmdline: cmdline.iter().map(|a| a.as_bytes().to_vec()).collect(),
            uids: [65534, 1, 1, 1],
            gids: [65534, 1, 1, 1],
            ..short_lived_shell(pid, &cmd, LOGIN, session)?
        };
        let line = connect_line(&mut h, addr.port())?;
        if let Err(e) = all_of(
            &line,
            [
                check_login(&line, &python),
                check_process_is(&line, &python),
                check_session_leader(&line, &python),
            ],
        ) {
            failures.push(format!("the /proc/self/exe re-exec: {e:#}"));
        }
        ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
        h.finish()
    })
}

/// Proves: a program's name does not make an entry leader (docs/events.md, "A name is not
/// enough"). A copy of the shell named `sshd` forks the test client (which connects and
/// exits); the client's line has entry type `sshd`, with the fake as its parent, only when the
/// copy is a root-owned file others cannot write and it ran as root (the control: the name
/// would count). Owned by a user (nobody) and run as root, or root's but run as nobody, or
/// root's but writable by all: no `sshd` entry, no source address, the fake leads nothing.
#[test]
fn a_program_named_sshd_is_no_ssh_login() -> Result<()> {
    let Some(kit) = kit("fakesshd")? else {
        return Ok(());
    };
    let Some(()) = prerequisite(skip::require_world_executable(Path::new(CLIENT)))? else {
        return Ok(());
    };
    Harness::with_egret("id-fakesshd", &[], |mut h| {
        use std::os::unix::fs::PermissionsExt;
        let shell = std::fs::canonicalize(SH)?;
        // (the copy's owner, its mode, who runs it, whether the line may say sshd)
        let cases: [(u32, u32, Option<u32>, bool); 4] = [
            (0, 0o755, None, true),
            (65534, 0o755, None, false),
            (0, 0o755, Some(65534), false),
            (0, 0o777, None, false),
        ];
        let mut failures = Vec::new();
        for (i, (owner, mode, user, sshd)) in cases.into_iter().enumerate() {
            let dir = kit.dir().join(format!("fake-{i}"));
            std::fs::create_dir(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
            let fake = dir.join("sshd");
            std::fs::copy(&shell, &fake)?;
            std::os::unix::fs::chown(&fake, Some(owner), Some(owner))?;
            std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(mode))?;
            let (_server, addr) = server()?;
            // `; true`: the fake forks the client rather than exec'ing it.
            let script = format!(
                "{CLIENT} tcp-exchange {} {} --send 0 {}; true",
                addr.ip(),
                addr.port(),
                marker()
            );
            let mut cmd = match user {
                Some(uid) => {
                    let mut cmd = Command::new(SETPRIV);
                    cmd.arg(format!("--reuid={uid}"))
                        .arg(format!("--regid={uid}"))
                        .arg("--clear-groups")
                        .arg("--")
                        .arg(&fake);
                    cmd
                }
                None => Command::new(&fake),
            };
            cmd.arg("-c").arg(&script);
            let (pid, _) = run_to_end(&h, &mut cmd)?;
            let line = connect_line(&mut h, addr.port())?;
            let what = format!("case {i}: owner {owner}, mode {mode:o}, run as {user:?}");
            let kind = field_str(&line, "process.entry_leader.entry_meta.type");
            let res = if sshd {
                all_of(
                    &line,
                    [
                        check_field_u64(&line, "process.parent.pid", u64::from(pid)),
                        check_field_str(&line, "process.parent.name", "sshd"),
                        check_field_str(&line, "process.entry_leader.entry_meta.type", "sshd"),
                    ],
                )
            } else {
                all_of(
                    &line,
                    [
                        check_field_u64(&line, "process.parent.pid", u64::from(pid)),
                        ensure_that(kind != Some("sshd"), "entry type sshd"),
                        ensure_that(
                            field_u64(&line, "process.entry_leader.pid") != Some(u64::from(pid)),
                            "the fake leads an entry",
                        ),
                        check_field_absent(&line, "process.entry_leader.entry_meta.source"),
                    ],
                )
            };
            if let Err(e) = res {
                failures.push(format!("{what}: {e:#}"));
            }
        }
        ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
        h.finish()
    })
}

fn ensure_that(ok: bool, what: &str) -> Result<()> {
    ensure!(ok, "{what}");
    Ok(())
}

/// Proves: the users of a line are those of the moment of the call, not of the exec. A Python
/// process started as root connects (line 1: root), then `setresgid`/`setresuid` to real
/// nobody (65534), effective and saved daemon (1), and connects again: line 2 has
/// `process.user.id` "1" (`daemon`), `process.real_user.id` "65534" (`nobody`), and the
/// groups likewise.
#[test]
fn user_change_after_exec() -> Result<()> {
    let Some(kit) = kit("setres")? else {
        return Ok(());
    };
    Harness::with_egret("id-setres", &[], |mut h| {
        let (_first, a) = server()?;
        let (_second, b) = server()?;
        let release = kit.fresh_file("release");
        let args = kit.connect_args(
            a,
            &release,
            &marker(),
            &[
                "--then-setres",
                "65534,1,1",
                "--then-connect",
                &b.to_string(),
            ],
        );
        let mut cmd = kit.python(&args.iter().map(String::as_str).collect::<Vec<_>>());
        h.cgroup.command(&mut cmd)?;
        let mut held = Held::spawn(&mut cmd, &release, "setresuid process")?;
        let before = held.next_json()?;
        let after = held.next_json()?;
        ensure!(
            field(&before, "uids") == Some(&serde_json::json!([0, 0, 0]))
                && field(&after, "uids") == Some(&serde_json::json!([65534, 1, 1])),
            "set-up: the process did not change its uids as meant: {before} then {after}"
        );
        let first = connect_line(&mut h, a.port())?;
        let second = connect_line(&mut h, b.port())?;
        let truth = ProcTruth::read(held.pid())?;
        ensure!(
            truth.uids[..2] == [65534, 1] && truth.gids[..2] == [65534, 1],
            "set-up: /proc disagrees: {truth:?}"
        );
        let first = check_users(&first, [0, 0], [0, 0]).context("first connect, as root");
        let second = check_process_is(&second, &truth).context("second connect, after setresuid");
        held.finish()?;
        let failures: Vec<String> = [first, second]
            .into_iter()
            .filter_map(Result::err)
            .map(|e| format!("{e:#}"))
            .collect();
        ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
        h.finish()
    })
}

/// The ground truth of an SSH session's connecting process, its shell and sshd's process
/// for the session.
struct SshChain {
    client: ProcTruth,
    shell: ProcTruth,
    sshd_session: ProcTruth,
}

/// Runs `ssh [-tt] root@sshd 'CLIENT ... MARKER; echo ...'` (the client connects to `server`,
/// in the namespace, then holds), waits for egret's line of that flow, reads the session's
/// ground truth while the client holds, then lets the session end. Returns the line and the
/// truth.
fn ssh_session(
    h: &mut Harness,
    kit: &Kit,
    sshd: &Sshd,
    server: SocketAddr,
    tty: bool,
) -> Result<(Value, SshChain)> {
    let release = kit.fresh_file("release");
    let m = marker();
    // More commands after the client: the shell forks it (it does not exec it), so the client's
    // parent is the shell.
    let remote = format!(
        "{CLIENT} tcp-exchange {} {} --send 0 --hold-until-file {} {m}; echo client-exit=$?",
        server.ip(),
        server.port(),
        release.display()
    );
    let mut cmd = sshd.ssh(tty, &remote);
    let held = Held::spawn(&mut cmd, &release, "ssh session")?;
    let line = connect_line(h, server.port()).with_context(|| sshd.log_tail())?;
    let pids = pids_with_arg(&h.cgroup, &m)?;
    let [pid] = pids[..] else {
        anyhow::bail!("set-up: want one process with {m} in the test cgroup, found {pids:?}");
    };
    let client = ProcTruth::read(pid)?;
    let shell = ProcTruth::read(client.ppid)?;
    let sshd_session = ProcTruth::read(shell.ppid)?;
    ensure!(
        client.sid == shell.pid,
        "set-up: the session's shell is not the client's session leader: {client:?} {shell:?}"
    );
    eprintln!(
        "ssh chain (tty {tty}): client {client:?}\nshell {shell:?}\nsshd session {sshd_session:?} (listener {:?})",
        sshd.pid()
    );
    // OpenSSH before 9.8: sshd re-execs itself (`sshd ... -R`) for the connection; later
    // versions run `sshd-session`.
    ensure!(
        sshd_session.name().starts_with("sshd"),
        "set-up: the shell's parent is not sshd: {sshd_session:?}"
    );
    held.finish()?;
    Ok((
        line,
        SshChain {
            client,
            shell,
            sshd_session,
        },
    ))
}

/// The SSH facts of a line: the process and its parent (the session's shell), the session
/// leader (the shell: sshd makes it one), the entry leader (type `sshd`, the client's address
/// as sshd saw it, root), and no `egret.login` (sshd without PAM sets no loginuid).
fn check_ssh_line(line: &Value, chain: &SshChain, client_ip: &str) -> Result<()> {
    // ECS: the entry leader of an SSH session is the first process sshd started for it, the
    // shell; sshd's own session process is accepted too.
    let entry_pid = field_u64(line, "process.entry_leader.pid");
    let entry = [&chain.shell, &chain.sshd_session]
        .into_iter()
        .find(|t| Some(u64::from(t.pid)) == entry_pid)
        .with_context(|| {
            format!(
                "process.entry_leader.pid: want the session's shell {} (or sshd's session process {}), got {entry_pid:?}",
                chain.shell.pid, chain.sshd_session.pid
            )
        });
    let entry = entry.and_then(|entry| {
        all_of(
            line,
            [
                check_field_str(line, "process.entry_leader.executable", &entry.executable()),
                check_field_str(line, "process.entry_leader.name", &entry.name()),
            ],
        )
    });
    all_of(
        line,
        [
            check_field_str(line, "process.entry_leader.entry_meta.type", "sshd"),
            check_field_str(line, "process.entry_leader.entry_meta.source.ip", client_ip),
            entry,
            check_field_str(line, "process.entry_leader.user.id", "0"),
            check_session_leader(line, &chain.shell),
            check_parent_is(line, &chain.shell),
            check_login(line, &chain.client),
            check_tty(line, &chain.client),
            check_process_is(line, &chain.client),
        ],
    )
}

/// Proves: a command run over SSH (Debian's real sshd in the test's namespace and cgroup,
/// the real ssh client in the root namespace over a veth, so the client's address is not a
/// loopback one) has `process.parent` = the shell sshd started, `process.session_leader` =
/// that shell, `process.entry_leader` of type `sshd` with `entry_meta.source.ip` = the
/// client's address; without a pty, no `process.tty`.
#[test]
fn sshd_session_without_pty() -> Result<()> {
    sshd_test("id-ssh", false)
}

/// Proves: with a forced pty (`ssh -tt`), the same line also has `process.tty.char_device`
/// with a pty major (136-143) and the minor of the session's `/dev/pts/N`, and
/// `egret.process.tty` = `pts/N`.
#[test]
fn sshd_session_with_pty() -> Result<()> {
    sshd_test("id-sshtty", true)
}

fn sshd_test(name: &str, tty: bool) -> Result<()> {
    let Some(kit) = kit(name)? else {
        return Ok(());
    };
    Harness::with_egret(name, &[], |mut h| {
        NetNs::with(name, |ns| {
            let Some(sshd) = prerequisite(Sshd::start(&ns, &h.cgroup))? else {
                return Ok(());
            };
            let server = TcpServer::from_listener(
                ns.tcp_listener(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)))?,
            )?;
            let (line, chain) = ssh_session(&mut h, &kit, &sshd, server.addr(), tty)?;
            if tty {
                let (major, _) = chain
                    .client
                    .tty()
                    .context("set-up: ssh -tt gave the session no controlling terminal")?;
                ensure!(
                    PTY_MAJORS.contains(&major),
                    "set-up: the session's terminal is not a pty: {:?}",
                    chain.client
                );
            } else {
                ensure!(
                    chain.client.tty().is_none(),
                    "set-up: ssh -T gave the session a terminal: {:?}",
                    chain.client
                );
            }
            check_ssh_line(&line, &chain, &ns.host_v4().to_string())?;
            drop(sshd);
            h.finish()
        })
    })
}

/// Proves: a process whose controlling terminal is a pty the test allocated (Python's
/// `pty.fork()`: a new session on the pty) has `process.tty.char_device.{major,minor}` equal to
/// `tty_nr` of `/proc/PID/stat` and `egret.process.tty` = `pts/N`, and is its session's leader;
/// a process without a terminal (`setsid()`, no tty opened) has neither field.
#[test]
fn controlling_terminal() -> Result<()> {
    let Some(kit) = kit("tty")? else {
        return Ok(());
    };
    Harness::with_egret("id-tty", &[], |mut h| {
        // With a terminal.
        let (_s1, a) = server()?;
        let release = kit.fresh_file("release");
        let inner = kit.python_argv(&kit.connect_args(a, &release, &marker(), &[]));
        let mut args = vec!["pty".to_string()];
        args.extend(inner);
        let mut cmd = kit.python(&args.iter().map(String::as_str).collect::<Vec<_>>());
        h.cgroup.command(&mut cmd)?;
        let mut held = Held::spawn(&mut cmd, &release, "pty process")?;
        let said = held.next_json()?;
        let pid = field_u64(&said, "pid").context("pid in the JSON line")?;
        let line = connect_line(&mut h, a.port())?;
        let truth = ProcTruth::read(u32::try_from(pid)?)?;
        let leader = session_leader_of(&truth)?;
        let (major, _) = truth
            .tty()
            .with_context(|| format!("set-up: pty.fork() gave no terminal: {truth:?}"))?;
        ensure!(PTY_MAJORS.contains(&major), "set-up: not a pty: {truth:?}");
        let with_tty = all_of(
            &line,
            [
                check_field_u64(&line, "process.pid", pid),
                check_tty(&line, &truth),
                check_session_leader(&line, &leader),
            ],
        );
        held.finish()?;

        // Without.
        let (_s2, b) = server()?;
        let release = kit.fresh_file("release");
        let args = kit.connect_args(b, &release, &marker(), &["--setsid"]);
        let mut cmd = kit.python(&args.iter().map(String::as_str).collect::<Vec<_>>());
        h.cgroup.command(&mut cmd)?;
        let mut held = Held::spawn(&mut cmd, &release, "process without a terminal")?;
        held.next_json()?;
        let line = connect_line(&mut h, b.port())?;
        let truth = ProcTruth::read(held.pid())?;
        ensure!(
            truth.tty_nr == 0,
            "set-up: setsid left a terminal: {truth:?}"
        );
        let without = check_tty(&line, &truth);
        held.finish()?;
        with_tty.context("the process on a pty")?;
        without.context("the process without a terminal")?;
        h.finish()
    })
}

/// Runs `cmd` (a process tree that ends in one process that connects to `port` and holds)
/// in the test cgroup; returns egret's line, the truth of the connecting process (the spawned
/// pid, or the `pid` its JSON line names when `json` is set) and that JSON line.
fn held_connect(
    h: &mut Harness,
    cmd: &mut Command,
    release: &Path,
    port: u16,
    json: bool,
) -> Result<(Value, ProcTruth, Option<Value>)> {
    h.cgroup.command(cmd)?;
    let mut held = Held::spawn(cmd, release, "client")?;
    let said = if json { Some(held.next_json()?) } else { None };
    let line = connect_line(h, port)?;
    let pid = match said.as_ref().and_then(|s| field_u64(s, "pid")) {
        Some(p) => u32::try_from(p)?,
        None => held.pid(),
    };
    let truth = ProcTruth::read(pid)?;
    held.finish()?;
    Ok((line, truth, said))
}

/// Proves: a process that re-executes itself through `/proc/self/exe` (as many daemons and
/// container runtimes do; the kernel then names it `exe`) is reported as the real binary:
/// `process.executable` = `readlink /proc/PID/exe` (the Python binary), `process.name` its
/// basename, never `exe`; `process.args` the argv it gave.
#[test]
fn exec_through_proc_self_exe() -> Result<()> {
    let Some(kit) = kit("reexec")? else {
        return Ok(());
    };
    Harness::with_egret("id-reexec", &[], |mut h| {
        let (_s, addr) = server()?;
        let release = kit.fresh_file("release");
        let mut args = vec!["reexec".to_string()];
        args.extend(kit.connect_args(addr, &release, &marker(), &[]));
        let mut cmd = kit.python(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let (line, truth, _) = held_connect(&mut h, &mut cmd, &release, addr.port(), false)?;
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", truth.pid)).unwrap_or_default();
        ensure!(
            truth.executable() == kit.python_bin().display().to_string(),
            "set-up: re-exec'd process is not Python: {truth:?} (comm {comm:?})"
        );
        check_process_is(&line, &truth)?;
        h.finish()
    })
}

/// Proves: `cd /usr/bin && ./python3.X` (a relative program path) is reported with the
/// absolute path of the binary; `process.args[0]` stays the `./python3.X` the kernel was given.
#[test]
fn exec_relative_path() -> Result<()> {
    let Some(kit) = kit("relative")? else {
        return Ok(());
    };
    Harness::with_egret("id-relative", &[], |mut h| {
        let python = kit.python_bin();
        let dir = python.parent().context("python's directory")?;
        let base = python
            .file_name()
            .context("python's name")?
            .to_string_lossy();
        let (_s, addr) = server()?;
        let release = kit.fresh_file("release");
        let mut cmd = Command::new(SH);
        cmd.args(["-c", r#"cd "$1" && shift && exec "$@""#, "sh"])
            .arg(dir)
            .arg(format!("./{base}"))
            .arg(kit.script())
            .args(kit.connect_args(addr, &release, &marker(), &[]));
        let (line, truth, _) = held_connect(&mut h, &mut cmd, &release, addr.port(), false)?;
        ensure!(
            truth.cmdline.first().map(Vec::as_slice) == Some(format!("./{base}").as_bytes()),
            "set-up: argv[0] is not relative: {truth:?}"
        );
        check_process_is(&line, &truth)?;
        h.finish()
    })
}

/// Proves: a program run through a symlink (with another name, in another directory) is
/// reported as the symlink's target, as `/proc/PID/exe` shows it (name: the target's
/// basename, not the link's).
#[test]
fn exec_through_symlink() -> Result<()> {
    let Some(kit) = kit("symlink")? else {
        return Ok(());
    };
    Harness::with_egret("id-symlink", &[], |mut h| {
        let link = kit.dir().join("egret-link-tool");
        std::os::unix::fs::symlink(kit.python_bin(), &link).context("symlink")?;
        let (_s, addr) = server()?;
        let release = kit.fresh_file("release");
        let mut cmd = Command::new(&link);
        cmd.arg(kit.script())
            .args(kit.connect_args(addr, &release, &marker(), &[]));
        let (line, truth, _) = held_connect(&mut h, &mut cmd, &release, addr.port(), false)?;
        ensure!(
            truth.executable() != link.display().to_string(),
            "set-up: /proc/PID/exe is the link itself: {truth:?}"
        );
        check_process_is(&line, &truth)?;
        h.finish()
    })
}

/// The `#!` script of [`exec_script`]: bash itself connects (`/dev/tcp`), then waits for the
/// release file.
const SCRIPT: &str = r#"#!/bin/bash
# $1 address, $2 port, $3 release file; the rest is ignored (markers).
exec 3<>"/dev/tcp/$1/$2" || exit 3
while [ ! -e "$3" ]; do sleep 0.02; done
"#;

/// Proves: for `./script.sh` with `#!/bin/bash`, `process.executable` is the interpreter as
/// `/proc/PID/exe` shows it (`/usr/bin/bash` on a merged-/usr system: not the `/bin/bash` of the
/// `#!` line), `process.args` the argv the kernel gave the interpreter (`["/bin/bash",
/// "./script.sh", ...]`, `/proc/PID/cmdline`), and `egret.process.script` the script's
/// absolute path. (bash, because dash, Debian's `/bin/sh`, cannot connect by itself.)
#[test]
fn exec_script() -> Result<()> {
    let Some(kit) = kit("script")? else {
        return Ok(());
    };
    let Some(()) = prerequisite(skip::require_program("/bin/bash"))? else {
        return Ok(());
    };
    Harness::with_egret("id-script", &[], |mut h| {
        let dir = kit.dir().canonicalize()?;
        let script = dir.join("script.sh");
        std::fs::write(&script, SCRIPT)?;
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let (_s, addr) = server()?;
        let release = kit.fresh_file("release");
        let mut cmd = Command::new(SH);
        cmd.args(["-c", r#"cd "$1" && shift && exec "$@""#, "sh"])
            .arg(&dir)
            .arg("./script.sh")
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(&release)
            .arg(marker());
        let (line, truth, _) = held_connect(&mut h, &mut cmd, &release, addr.port(), false)?;
        ensure!(
            truth.args().get(..2)
                == Some(&["/bin/bash".to_string(), "./script.sh".to_string()][..]),
            "set-up: the kernel did not run the interpreter as expected: {truth:?}"
        );
        all_of(
            &line,
            [
                check_field_str(&line, "egret.process.script", &script.display().to_string()),
                check_process_is(&line, &truth),
            ],
        )?;
        h.finish()
    })
}

/// Proves: a binary executed from a memfd (fileless: `memfd_create("payload")`, a copy of
/// the test client written into it) is reported as `memfd:payload` (executable and name),
/// with `egret.process.fileless: true`, and never as the `/dev/fd/N` or `/proc/self/fd/N` path
/// the exec was given; both by `fexecve` (`execveat(fd, "", AT_EMPTY_PATH)`) and by
/// `execve("/proc/self/fd/N")`.
#[test]
fn exec_memfd() -> Result<()> {
    let Some(kit) = kit("memfd")? else {
        return Ok(());
    };
    Harness::with_egret("id-memfd", &[], |mut h| {
        let mut failures = Vec::new();
        for via in ["fd", "path"] {
            let (_s, addr) = server()?;
            let release = kit.fresh_file("release");
            let (ip, port, rel) = (
                addr.ip().to_string(),
                addr.port().to_string(),
                release.display().to_string(),
            );
            let mut cmd = kit.python(&[
                "memfd",
                "payload",
                via,
                CLIENT,
                "egret-testclient",
                "tcp-exchange",
                &ip,
                &port,
                "--send",
                "0",
                "--hold-until-file",
                &rel,
                &marker(),
            ]);
            let (line, truth, _) = held_connect(&mut h, &mut cmd, &release, addr.port(), false)?;
            ensure!(
                truth.exe.starts_with("/memfd:payload"),
                "set-up: not running from the memfd: {truth:?}"
            );
            let exe = field_str(&line, "process.executable").unwrap_or_default();
            let not_fd_path = if exe.contains("/fd/") {
                Err(anyhow::anyhow!("process.executable is the fd path {exe:?}"))
            } else {
                Ok(())
            };
            let res = all_of(
                &line,
                [
                    not_fd_path,
                    check_flag(&line, "fileless"),
                    check_process_is(&line, &truth),
                ],
            );
            if let Err(e) = res {
                failures.push(format!("exec via {via}: {e:#}"));
            }
        }
        ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
        h.finish()
    })
}

/// Proves: when a thread that is not the main thread connects, `process.pid` is the process
/// (thread group) id and `process.thread.id` that thread's id (gettid), the rest the process's.
#[test]
fn thread_connects() -> Result<()> {
    let Some(kit) = kit("thread")? else {
        return Ok(());
    };
    Harness::with_egret("id-thread", &[], |mut h| {
        let (_s, addr) = server()?;
        let release = kit.fresh_file("release");
        let args = kit.connect_args(addr, &release, &marker(), &["--thread"]);
        let mut cmd = kit.python(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let (line, truth, said) = held_connect(&mut h, &mut cmd, &release, addr.port(), true)?;
        let said = said.context("JSON line")?;
        let tid = field_u64(&said, "tid").context("tid")?;
        ensure!(
            tid != u64::from(truth.pid),
            "set-up: the connecting thread is the main thread: {said}"
        );
        all_of(
            &line,
            [
                check_field_u64(&line, "process.thread.id", tid),
                check_process_is(&line, &truth),
            ],
        )?;
        h.finish()
    })
}

/// Proves: a forked child that does not exec is its own process: `process.pid` = the child,
/// `process.parent.pid` = the parent, executable and args those it inherited (the parent's).
#[test]
fn forked_child_without_exec() -> Result<()> {
    let Some(kit) = kit("fork")? else {
        return Ok(());
    };
    Harness::with_egret("id-fork", &[], |mut h| {
        let (_s, addr) = server()?;
        let release = kit.fresh_file("release");
        let args = kit.connect_args(addr, &release, &marker(), &["--fork"]);
        let mut cmd = kit.python(&args.iter().map(String::as_str).collect::<Vec<_>>());
        h.cgroup.command(&mut cmd)?;
        let mut held = Held::spawn(&mut cmd, &release, "forking process")?;
        let said = held.next_json()?;
        let line = connect_line(&mut h, addr.port())?;
        let child = ProcTruth::read(u32::try_from(field_u64(&said, "pid").context("pid")?)?)?;
        let parent = ProcTruth::read(held.pid())?;
        ensure!(
            child.pid != parent.pid && child.ppid == parent.pid,
            "set-up: not a child of the spawned process: {child:?} {parent:?}"
        );
        let res = all_of(
            &line,
            [
                check_field_str(&line, "process.executable", &parent.executable()),
                check_parent_is(&line, &parent),
                check_process_is(&line, &child),
            ],
        );
        held.finish()?;
        res?;
        h.finish()
    })
}

/// Proves: a process that started (and exec'd, and changed user) before egret started is
/// reported right when it connects later: pid, executable, args, effective and real users and
/// groups, all of which egret can only learn from `/proc`.
#[test]
fn process_started_before_egret() -> Result<()> {
    let Some(kit) = kit("before")? else {
        return Ok(());
    };
    let Some(()) = prerequisite(skip::require_world_executable(kit.python_bin()))? else {
        return Ok(());
    };
    Harness::with_cgroup("id-before", |cgroup| {
        let (_s, addr) = server()?;
        let release = kit.fresh_file("release");
        let go = kit.fresh_file("go");
        let go_text = go.display().to_string();
        let argv = kit.python_argv(&kit.connect_args(
            addr,
            &release,
            &marker(),
            &["--wait-for", &go_text],
        ));
        let setpriv = [
            "--ruid=65534",
            "--euid=1",
            "--rgid=65534",
            "--egid=1",
            "--clear-groups",
        ];
        let mut cmd = login_command(None, &setpriv, &argv);
        cgroup.command(&mut cmd)?;
        let mut held = Held::spawn(&mut cmd, &release, "process older than egret")?;
        let pid = held.pid();
        let python = kit.python_bin();
        // Wait until it is Python (the exec chain is done) before egret starts.
        let execd = wait_until(Duration::from_secs(10), || {
            Ok(std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == python))
        })?;
        ensure!(execd, "set-up: pid {pid} did not become Python");
        let mut h = Harness::start(cgroup, &[])?;
        std::fs::write(&go, b"")?;
        held.next_json()?;
        let line = connect_line(&mut h, addr.port())?;
        let truth = ProcTruth::read(pid)?;
        ensure!(
            truth.uids[..2] == [65534, 1],
            "set-up: uids not as meant: {truth:?}"
        );
        let res = check_process_is(&line, &truth);
        held.finish()?;
        res?;
        h.finish()
    })
}

/// The odd arguments of [`arguments_with_odd_bytes`]: (bytes, exact text egret must keep —
/// `None` for the one that is not UTF-8).
fn odd_args() -> Vec<(Vec<u8>, Option<&'static str>)> {
    vec![
        (b"two\nlines\n".to_vec(), Some("two\nlines\n")),
        (
            b"say \"hi\" and 'bye' \\ back\\slash".to_vec(),
            Some("say \"hi\" and 'bye' \\ back\\slash"),
        ),
        (
            b"ctl\x01\x1b[31mred\x7f\r".to_vec(),
            Some("ctl\u{1}\u{1b}[31mred\u{7f}\r"),
        ),
        (b"bad\xff\xfe\xc3(utf8".to_vec(), None),
        ("ünïcødé ✓".as_bytes().to_vec(), Some("ünïcødé ✓")),
        (
            b"{\"json\":\"inside\"}\t".to_vec(),
            Some("{\"json\":\"inside\"}\t"),
        ),
    ]
}

/// Proves: arguments with newlines, quotes, backslashes, control characters (\x01, ESC, DEL,
/// CR), JSON text and invalid UTF-8 keep every line of the output one valid JSON object (the
/// whole file is parsed), the process is named right, the valid arguments come back exactly and
/// the invalid one as a string that keeps its valid parts; nothing is flagged truncated.
#[test]
fn arguments_with_odd_bytes() -> Result<()> {
    Harness::with_egret("id-oddargs", &[], |mut h| {
        let (_s, addr) = server()?;
        let m = marker();
        let mut cmd = Command::new(CLIENT);
        cmd.args(["tcp", &addr.ip().to_string(), &addr.port().to_string(), &m]);
        for (bytes, _) in odd_args() {
            cmd.arg(os_arg(&bytes));
        }
        cmd.arg(format!("last-{m}"));
        let out = h.run(&mut cmd)?;
        let line = connect_line(&mut h, addr.port())?;
        h.egret.stop_cleanly()?;
        let lines = check_every_line_is_json(&h.egret.events_path())?;
        let canon = Path::new(CLIENT).canonicalize()?;
        let mut checks = vec![
            check_field_u64(&line, "process.pid", u64::from(out.pid)),
            check_executable_is(&line, &canon.display().to_string()),
            check_field_absent(&line, "egret.process.args_truncated"),
        ];
        let args: Vec<Option<&str>> = field(&line, "process.args")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(Value::as_str).collect())
            .unwrap_or_default();
        let n = odd_args().len();
        // [client, "tcp", ip, port, marker, odd..., last]
        if args.len() != 6 + n {
            checks.push(Err(anyhow::anyhow!(
                "process.args: want {} entries, got {}",
                6 + n,
                args.len()
            )));
        }
        for (i, (bytes, text)) in odd_args().into_iter().enumerate() {
            let got = args.get(5 + i).copied().flatten();
            let ok = match text {
                Some(t) => got == Some(t),
                None => got.is_some_and(|g| g.starts_with("bad") && g.ends_with("(utf8")),
            };
            if !ok {
                checks.push(Err(anyhow::anyhow!(
                    "process.args[{}]: want {:?}, got {got:?}",
                    5 + i,
                    text.map_or_else(
                        || format!("a string keeping \"bad\" … \"(utf8\" of {bytes:?}"),
                        str::to_string
                    )
                )));
            }
        }
        let last = format!("last-{m}");
        if args.last().copied().flatten() != Some(last.as_str()) {
            checks.push(Err(anyhow::anyhow!(
                "the argument after the odd ones is not intact"
            )));
        }
        all_of(&line, checks)?;
        eprintln!("{lines} lines, all JSON");
        h.egret.discard_dir_on_drop();
        Ok(())
    })
}

/// Raises the soft stack limit of `cmd`'s process to at least `bytes` before exec (the
/// kernel allows an argument vector of a quarter of it).
fn with_stack_limit(cmd: &mut Command, bytes: u64) -> &mut Command {
    // SAFETY: getrlimit/setrlimit are async-signal-safe system calls; nothing allocates.
    unsafe {
        cmd.pre_exec(move || {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_STACK, &mut lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < bytes {
                lim.rlim_cur = if lim.rlim_max == libc::RLIM_INFINITY {
                    bytes
                } else {
                    bytes.min(lim.rlim_max)
                };
                if libc::setrlimit(libc::RLIMIT_STACK, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    }
}

/// Proves: a single 100 kB argument, and an argument vector of over 1 MB (10,000 arguments of
/// 110 bytes), leave every line of the output one valid JSON object, the process named right
/// (executable, name, the leading arguments), and are flagged
/// `egret.process.args_truncated: true`.
#[test]
fn arguments_huge() -> Result<()> {
    Harness::with_egret("id-hugeargs", &[], |mut h| {
        let canon = Path::new(CLIENT).canonicalize()?.display().to_string();
        let mut failures = Vec::new();
        let mut servers = Vec::new();
        let mut runs = Vec::new();
        for case in ["one 100 kB argument", "1.1 MB of arguments"] {
            let (s, addr) = server()?;
            let m = marker();
            let lead = vec![
                CLIENT.to_string(),
                "tcp".to_string(),
                addr.ip().to_string(),
                addr.port().to_string(),
                m.clone(),
            ];
            let mut cmd = Command::new(CLIENT);
            cmd.args(lead.iter().skip(1));
            if case.starts_with("one") {
                cmd.arg("x".repeat(100_000));
            } else {
                for i in 0..10_000 {
                    cmd.arg(format!("{i:05}-{}", "y".repeat(104)));
                }
            }
            with_stack_limit(&mut cmd, 64 << 20);
            let out = h.run(&mut cmd).with_context(|| case.to_string())?;
            servers.push(s);
            runs.push((case, addr.port(), out.pid, lead));
        }
        let mut lines = Vec::new();
        for (case, port, pid, lead) in &runs {
            let line = connect_line(&mut h, *port).with_context(|| case.to_string())?;
            let res = check_field_u64(&line, "process.pid", u64::from(*pid))
                .and_then(|()| check_executable_is(&line, &canon))
                .and_then(|()| {
                    let got: Vec<&str> = field(&line, "process.args")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .take(lead.len())
                                .collect()
                        })
                        .unwrap_or_default();
                    ensure!(
                        got == lead.iter().map(String::as_str).collect::<Vec<_>>(),
                        "process.args does not start with {lead:?}: {}",
                        shown(&line, "process.args")
                            .chars()
                            .take(400)
                            .collect::<String>()
                    );
                    Ok(())
                })
                .and_then(|()| check_flag(&line, "args_truncated"));
            if let Err(e) = res {
                failures.push(format!("{case}: {e:#}"));
            }
            lines.push((case, line.to_string().len()));
        }
        h.egret.stop_cleanly()?;
        let n = check_every_line_is_json(&h.egret.events_path())?;
        eprintln!("{n} lines, all JSON; line sizes {lines:?}");
        ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
        h.egret.discard_dir_on_drop();
        Ok(())
    })
}
