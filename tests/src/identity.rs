//! Process identity for the tests of `tests/identity.rs`: what the kernel says about a process
//! (its `/proc` entries: the ground truth egret's lines are compared with), processes that
//! connect and then wait to be looked at, and the checks of the identity fields of a line
//! (`process.*` users, tty, parent, session leader, `egret.login`, `egret.process`).
//!
//! A process that connects exits within milliseconds, long before a test could read its
//! `/proc` entries. So the processes of these tests connect and then *hold* until the test
//! creates a release file ([`Held`]): the test waits for egret's line, reads the ground truth
//! ([`ProcTruth`]) while the process is still there, and then lets it go.

use crate::expect::{check_field_absent, check_field_str, check_field_u64};
use crate::json::field;
use crate::run::{log_tail, ScratchDir};
use crate::skip::require_program;
use crate::TestCgroup;
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The helper script (see its docstring), written into each kit's directory.
const SCRIPT: &str = include_str!("identity.py");
/// How long a held process may take to print its line, and to exit once released.
pub const HELD_TIMEOUT: Duration = Duration::from_secs(30);
/// The loginuid of a process whose login uid was never set (`(uid_t)-1`).
pub const LOGINUID_UNSET: u32 = u32::MAX;

/// `identity.py` in a scratch directory, plus the place for release files.
pub struct Kit {
    dir: ScratchDir,
    python: PathBuf,
}

impl Kit {
    /// Writes the script; an error when the system's Python is missing (a prerequisite).
    pub fn create(name: &str) -> Result<Self> {
        require_program(crate::firstbytes::PYTHON)?;
        let python = Path::new(crate::firstbytes::PYTHON)
            .canonicalize()
            .with_context(|| format!("canonicalize {}", crate::firstbytes::PYTHON))?;
        let dir = ScratchDir::create(&format!("ident-{name}"))?;
        let me = Self { dir, python };
        std::fs::write(me.script(), SCRIPT).context("write identity.py")?;
        Ok(me)
    }

    /// The scratch directory (mode 0755: readable by the other users the tests become).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Absolute path of `identity.py`.
    pub fn script(&self) -> PathBuf {
        self.dir().join("identity.py")
    }

    /// A path in the kit directory that does not exist yet (a release or go file).
    pub fn fresh_file(&self, what: &str) -> PathBuf {
        self.dir().join(format!("{what}-{}", crate::unique()))
    }

    /// The Python binary itself (`/usr/bin/python3` is a symlink to it, e.g.
    /// `/usr/bin/python3.11`): the tests run it by this path, so that only the test of symlinks
    /// depends on egret resolving one.
    pub fn python_bin(&self) -> &Path {
        &self.python
    }

    /// `PYTHON identity.py ARGS...` with [`Self::python_bin`].
    pub fn python(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.arg(self.script()).args(args);
        cmd
    }

    /// The argv of `PYTHON identity.py ARGS...` (to run through another program).
    pub fn python_argv(&self, args: &[String]) -> Vec<String> {
        let mut v = vec![
            self.python.display().to_string(),
            self.script().display().to_string(),
        ];
        v.extend(args.iter().cloned());
        v
    }

    /// The arguments of `identity.py connect` to `addr` that hold until `release` exists,
    /// with `marker` (for finding the line) and `extra` options.
    pub fn connect_args(
        &self,
        addr: std::net::SocketAddr,
        release: &Path,
        marker: &str,
        extra: &[&str],
    ) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "connect".into(),
            "--connect".into(),
            addr.to_string(),
            "--hold-until".into(),
            release.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_string()));
        args.push(marker.to_string());
        args
    }
}

/// A process (tree) that connects and then waits for its release file: stdout is read line by
/// line, stderr kept for errors. Dropping it creates the release file and kills the process.
pub struct Held {
    child: Child,
    release: PathBuf,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    what: String,
}

impl Held {
    /// Spawns `cmd` (already placed in its cgroup, namespace, user by the caller) with stdin
    /// null; `release` is the file whose creation lets it finish; `what` names it in errors.
    pub fn spawn(cmd: &mut Command, release: &Path, what: &str) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {what}: {cmd:?}"))?;
        let (tx, lines) = channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).split(b'\n') {
                    let Ok(line) = line else { return };
                    // A pty turns "\n" into "\r\n".
                    let text = String::from_utf8_lossy(&line)
                        .trim_end_matches('\r')
                        .to_string();
                    if tx.send(text).is_err() {
                        return;
                    }
                }
            });
        }
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut err) = child.stderr.take() {
            let keep = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    if let Ok(mut s) = keep.lock() {
                        s.push_str(&String::from_utf8_lossy(buf.get(..n).unwrap_or_default()));
                    }
                }
            });
        }
        Ok(Self {
            child,
            release: release.to_path_buf(),
            lines,
            stderr,
            what: what.to_string(),
        })
    }

    /// The pid of the spawned process (the connecting one when it only exec'd).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The next line of its stdout that is a JSON object (other lines are skipped), within
    /// [`HELD_TIMEOUT`].
    pub fn next_json(&mut self) -> Result<Value> {
        let deadline = Instant::now() + HELD_TIMEOUT;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => match serde_json::from_str::<Value>(line.trim()) {
                    Ok(v) if v.is_object() => return Ok(v),
                    _ => skipped.push(line),
                },
                Err(_) => bail!(
                    "{} printed no JSON line within {HELD_TIMEOUT:?} (exit status {:?})\nstdout: {skipped:?}\nstderr: {}",
                    self.what,
                    self.child.try_wait().ok().flatten(),
                    self.stderr_text()
                ),
            }
        }
    }

    /// Creates the release file: the held process closes its connection and exits.
    pub fn release(&self) -> Result<()> {
        std::fs::write(&self.release, b"")
            .with_context(|| format!("create release file {}", self.release.display()))
    }

    /// Releases it and waits ([`HELD_TIMEOUT`]) for a successful exit; returns the stdout lines
    /// not read yet.
    pub fn finish(mut self) -> Result<Vec<String>> {
        self.release()?;
        let status = crate::run::wait_child(&mut self.child, HELD_TIMEOUT)
            .with_context(|| format!("{} after its release", self.what))?;
        // The reader thread ends at EOF; give it a moment to hand over the last lines.
        std::thread::sleep(Duration::from_millis(50));
        let rest: Vec<String> = self.lines.try_iter().collect();
        ensure!(
            status.success(),
            "{} failed: {status}\nstdout: {rest:?}\nstderr: {}",
            self.what,
            self.stderr_text()
        );
        Ok(rest)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.release, b"");
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What `/proc/<pid>` says about a process (read while it is alive).
#[derive(Clone)]
pub struct ProcTruth {
    pub pid: u32,
    /// `readlink /proc/<pid>/exe`, as the kernel gives it (a memfd reads
    /// `/memfd:NAME (deleted)`).
    pub exe: String,
    /// `/proc/<pid>/cmdline`, split at NUL bytes.
    pub cmdline: Vec<Vec<u8>>,
    /// `Uid:` of `/proc/<pid>/status`: real, effective, saved, filesystem.
    pub uids: [u32; 4],
    /// `Gid:` likewise.
    pub gids: [u32; 4],
    /// Fields 4, 6 and 7 of `/proc/<pid>/stat`.
    pub ppid: u32,
    pub sid: u32,
    pub tty_nr: u32,
    /// `/proc/<pid>/loginuid` and `/proc/<pid>/sessionid` (the audit login uid and session).
    pub loginuid: u32,
    pub sessionid: u32,
}

impl ProcTruth {
    /// Reads `/proc/<pid>`; an error names the file that could not be read.
    pub fn read(pid: u32) -> Result<Self> {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let read = |name: &str| -> Result<Vec<u8>> {
            std::fs::read(dir.join(name)).with_context(|| format!("read /proc/{pid}/{name}"))
        };
        let exe = std::fs::read_link(dir.join("exe"))
            .with_context(|| format!("readlink /proc/{pid}/exe"))?;
        let mut cmdline: Vec<Vec<u8>> = read("cmdline")?
            .split(|&b| b == 0)
            .map(<[u8]>::to_vec)
            .collect();
        if cmdline.last().is_some_and(Vec::is_empty) {
            cmdline.pop();
        }
        let status = String::from_utf8_lossy(&read("status")?).into_owned();
        let ids = |key: &str| -> Result<[u32; 4]> {
            let line = status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .with_context(|| format!("no {key} line in /proc/{pid}/status"))?;
            let v: Vec<u32> = line
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .with_context(|| format!("bad {key} line {line:?}"))?;
            v.try_into()
                .map_err(|v| anyhow::anyhow!("{key} line has not 4 ids: {v:?}"))
        };
        let stat = String::from_utf8_lossy(&read("stat")?).into_owned();
        let (ppid, sid, tty_nr) = parse_stat(&stat)?;
        let num = |name: &str| -> Result<u32> {
            let text = String::from_utf8_lossy(&read(name)?).trim().to_string();
            text.parse()
                .with_context(|| format!("/proc/{pid}/{name}: {text:?}"))
        };
        Ok(Self {
            pid,
            exe: exe.as_os_str().to_string_lossy().into_owned(),
            cmdline,
            uids: ids("Uid:")?,
            gids: ids("Gid:")?,
            ppid,
            sid,
            tty_nr,
            loginuid: num("loginuid")?,
            sessionid: num("sessionid")?,
        })
    }

    /// The executable as egret should report it: the `/proc/<pid>/exe` link, with the
    /// kernel's ` (deleted)` suffix and, for a memfd, the leading `/` dropped
    /// (`/memfd:payload (deleted)` → `memfd:payload`).
    pub fn executable(&self) -> String {
        let exe = self.exe.strip_suffix(" (deleted)").unwrap_or(&self.exe);
        match exe.strip_prefix("/memfd:") {
            Some(name) => format!("memfd:{name}"),
            None => exe.to_string(),
        }
    }

    /// The basename of [`Self::executable`].
    pub fn name(&self) -> String {
        let exe = self.executable();
        exe.rsplit('/').next().unwrap_or_default().to_string()
    }

    /// The command line as strings (every test argument here is UTF-8).
    pub fn args(&self) -> Vec<String> {
        self.cmdline
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    /// The controlling terminal's (major, minor), `None` without one.
    pub fn tty(&self) -> Option<(u32, u32)> {
        tty_device(self.tty_nr)
    }
}

impl std::fmt::Debug for ProcTruth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcTruth")
            .field("pid", &self.pid)
            .field("exe", &self.exe)
            .field("cmdline", &self.args())
            .field("uids", &self.uids)
            .field("gids", &self.gids)
            .field("ppid", &self.ppid)
            .field("sid", &self.sid)
            .field("tty_nr", &self.tty_nr)
            .field("loginuid", &self.loginuid)
            .field("sessionid", &self.sessionid)
            .finish()
    }
}

/// ppid, session id and tty_nr (fields 4, 6, 7) of a `/proc/<pid>/stat` text: the fields after
/// the command name, which is in parentheses and may itself contain spaces and `)`.
pub fn parse_stat(stat: &str) -> Result<(u32, u32, u32)> {
    let after = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .with_context(|| format!("bad stat {stat:?}"))?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| -> Result<u32> {
        let s = f
            .get(i)
            .with_context(|| format!("stat too short: {stat:?}"))?;
        // tty_nr is printed as a signed int.
        let v: i64 = s.parse().with_context(|| format!("stat field {s:?}"))?;
        u32::try_from(v).with_context(|| format!("stat field {v}"))
    };
    // after[0] is the state (field 3).
    Ok((get(1)?, get(3)?, get(4)?))
}

/// A `tty_nr` decoded as the kernel encodes it (`new_encode_dev`): major = bits 8-19, minor =
/// bits 0-7 and 20-31. `None` for 0 (no controlling terminal).
pub fn tty_device(tty_nr: u32) -> Option<(u32, u32)> {
    (tty_nr != 0).then_some((
        (tty_nr >> 8) & 0xfff,
        (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00),
    ))
}

/// The pty majors (Unix98 slaves, `/dev/pts/N`: 136-143).
pub const PTY_MAJORS: std::ops::RangeInclusive<u32> = 136..=143;

/// The name egret reports for a pty slave `(major, minor)`: `pts/N`.
pub fn pts_name(major: u32, minor: u32) -> String {
    format!("pts/{}", (major - PTY_MAJORS.start()) * 256 + minor)
}

/// The user name of `uid` in the system's user database, `None` when it has none.
pub fn user_name(uid: u32) -> Result<Option<String>> {
    Ok(nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .with_context(|| format!("look up uid {uid}"))?
        .map(|u| u.name))
}

/// The group name of `gid`, `None` when it has none.
pub fn group_name(gid: u32) -> Result<Option<String>> {
    Ok(
        nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
            .with_context(|| format!("look up gid {gid}"))?
            .map(|g| g.name),
    )
}

/// A uid at or above `from` with no user database entry (so no name can be resolved).
pub fn uid_without_user(from: u32) -> Result<u32> {
    for uid in from..from + 1000 {
        if user_name(uid)?.is_none() {
            return Ok(uid);
        }
    }
    bail!("no uid without a user entry in {from}..{}", from + 1000)
}

/// The pids in `cgroup` (not below it) whose command line has the argument `marker`.
pub fn pids_with_arg(cgroup: &TestCgroup, marker: &str) -> Result<Vec<u32>> {
    let mut found = Vec::new();
    for pid in cgroup.procs()? {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline.split(|&b| b == 0).any(|a| a == marker.as_bytes()) {
            found.push(u32::try_from(pid)?);
        }
    }
    Ok(found)
}

/// Every one of `results`, run to the end: one error listing every failure (each without the
/// line it was about) and then the line `v` once; `Ok` when all passed. The tests report
/// every missing or wrong field at once, not only the first one.
pub fn all_of(v: &Value, results: impl IntoIterator<Item = Result<()>>) -> Result<()> {
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(Result::err)
        .map(|e| {
            let text = format!("{e:#}");
            match text.split_once("\nline: ") {
                Some((head, _)) => head.to_string(),
                None => text,
            }
        })
        .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    if failures.is_empty() {
        return Ok(());
    }
    bail!("{}\nline: {v}", failures.join("\n"))
}

/// Whether a `.name` beside an id must be there (users) or may be left out (groups: the
/// contract's `process.group {id, name?}`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Name {
    Required,
    Optional,
}

/// `{path}.id` is `id` (a string, as ECS ids are) and `{path}.name` is the database's name of
/// it (`name_of` looks it up): required or, with [`Name::Optional`], right when present; absent
/// when the database has none.
fn check_id_name(
    v: &Value,
    path: &str,
    id: u32,
    name_of: fn(u32) -> Result<Option<String>>,
    rule: Name,
) -> Result<()> {
    let key = format!("{path}.name");
    let name = match name_of(id)? {
        Some(_) if rule == Name::Optional && field(v, &key).is_none() => Ok(()),
        Some(name) => check_field_str(v, &key, &name),
        None => check_field_absent(v, &key),
    };
    all_of(
        v,
        [
            check_field_str(v, &format!("{path}.id"), &id.to_string()),
            name,
        ],
    )
}

/// The users and groups of the line are those of the truth: `process.user` the effective uid,
/// `process.real_user` the real uid, `process.group` / `process.real_group` the gids; user
/// names where the user database has them, group names right when given.
pub fn check_users(v: &Value, uids: [u32; 2], gids: [u32; 2]) -> Result<()> {
    let [ruid, euid] = uids;
    let [rgid, egid] = gids;
    all_of(
        v,
        [
            check_id_name(v, "process.user", euid, user_name, Name::Required),
            check_id_name(v, "process.real_user", ruid, user_name, Name::Required),
            check_id_name(v, "process.group", egid, group_name, Name::Optional),
            check_id_name(v, "process.real_group", rgid, group_name, Name::Optional),
        ],
    )
}

/// `process.executable` is `want` exactly and `process.name` its basename (so never the
/// kernel's `exe` comm of a `/proc/self/exe` exec, nor a `/dev/fd/N` path).
pub fn check_executable_is(v: &Value, want: &str) -> Result<()> {
    let base = want.rsplit('/').next().unwrap_or_default();
    all_of(
        v,
        [
            check_field_str(v, "process.executable", want),
            check_field_str(v, "process.name", base),
        ],
    )
}

/// The array of strings at `path` equals `want` exactly.
fn check_str_array(v: &Value, path: &str, want: &[String]) -> Result<()> {
    let got: Option<Vec<&str>> = field(v, path)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    let want_ref: Vec<&str> = want.iter().map(String::as_str).collect();
    ensure!(
        got.as_ref() == Some(&want_ref),
        "{path}: want {want_ref:?} (the kernel's /proc/PID/cmdline), got {got:?}"
    );
    Ok(())
}

/// `process.args` equals `want` exactly, and `process.args_count` is its length.
pub fn check_args_exact(v: &Value, want: &[String]) -> Result<()> {
    all_of(
        v,
        [
            check_str_array(v, "process.args", want),
            check_field_u64(v, "process.args_count", u64::try_from(want.len())?),
        ],
    )
}

/// The line is the process of `truth`: pid, executable and name (the real binary), args,
/// users and groups (effective and real).
pub fn check_process_is(v: &Value, truth: &ProcTruth) -> Result<()> {
    all_of(
        v,
        [
            check_field_u64(v, "process.pid", u64::from(truth.pid)),
            check_executable_is(v, &truth.executable()),
            check_args_exact(v, &truth.args()),
            check_users(
                v,
                [truth.uids[0], truth.uids[1]],
                [truth.gids[0], truth.gids[1]],
            ),
        ],
    )
}

/// `process.parent` is the process `parent` (alive): pid, executable, name, args.
pub fn check_parent_is(v: &Value, parent: &ProcTruth) -> Result<()> {
    all_of(
        v,
        [
            check_field_u64(v, "process.parent.pid", u64::from(parent.pid)),
            check_field_str(v, "process.parent.executable", &parent.executable()),
            check_field_str(v, "process.parent.name", &parent.name()),
            check_str_array(v, "process.parent.args", &parent.args()),
        ],
    )
}

/// The truth of the leader of `truth`'s session (its `sid`), read now (while it is alive).
pub fn session_leader_of(truth: &ProcTruth) -> Result<ProcTruth> {
    ProcTruth::read(truth.sid)
        .with_context(|| format!("session leader {} of pid {}", truth.sid, truth.pid))
}

/// `process.session_leader` is `leader` (see [`session_leader_of`]): pid, executable, name,
/// args.
pub fn check_session_leader(v: &Value, leader: &ProcTruth) -> Result<()> {
    all_of(
        v,
        [
            check_field_u64(v, "process.session_leader.pid", u64::from(leader.pid)),
            check_field_str(v, "process.session_leader.executable", &leader.executable()),
            check_field_str(v, "process.session_leader.name", &leader.name()),
            check_str_array(v, "process.session_leader.args", &leader.args()),
        ],
    )
}

/// `process.tty` and `egret.process.tty` follow the truth's controlling terminal: the
/// device numbers and the `pts/N` name when it has one, both absent when it has none.
pub fn check_tty(v: &Value, truth: &ProcTruth) -> Result<()> {
    match truth.tty() {
        Some((major, minor)) => all_of(
            v,
            [
                check_field_u64(v, "process.tty.char_device.major", u64::from(major)),
                check_field_u64(v, "process.tty.char_device.minor", u64::from(minor)),
                if PTY_MAJORS.contains(&major) {
                    check_field_str(v, "egret.process.tty", &pts_name(major, minor))
                } else {
                    Ok(())
                },
            ],
        ),
        None => all_of(
            v,
            [
                check_field_absent(v, "process.tty"),
                check_field_absent(v, "egret.process.tty"),
            ],
        ),
    }
}

/// `egret.login` follows the truth's audit login: user id (string) and name (when the user
/// database has one) and `session_id`; absent when the loginuid is unset.
pub fn check_login(v: &Value, truth: &ProcTruth) -> Result<()> {
    if truth.loginuid == LOGINUID_UNSET {
        return check_field_absent(v, "egret.login");
    }
    all_of(
        v,
        [
            check_id_name(
                v,
                "egret.login.user",
                truth.loginuid,
                user_name,
                Name::Required,
            ),
            check_field_u64(v, "egret.login.session_id", u64::from(truth.sessionid)),
        ],
    )
}

/// `egret.process.<key>` is `true`.
pub fn check_flag(v: &Value, key: &str) -> Result<()> {
    let path = format!("egret.process.{key}");
    ensure!(
        field(v, &path).and_then(Value::as_bool) == Some(true),
        "{path}: want true, got {:?}\nline: {v}",
        field(v, &path)
    );
    Ok(())
}

/// Every line of the output file `path` (read whole, after egret stopped) is one JSON object:
/// the file is UTF-8, ends with a newline, and no line is empty or anything but an object.
/// Returns the number of lines.
pub fn check_every_line_is_json(path: &Path) -> Result<usize> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not UTF-8: {e}", path.display()))?;
    ensure!(
        text.is_empty() || text.ends_with('\n'),
        "{} does not end with a newline: {}",
        path.display(),
        log_tail(path, 2)
    );
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line).with_context(|| {
            let shown: String = line.chars().take(400).collect();
            format!(
                "line {} of {} is not one JSON value: {shown:?}",
                i + 1,
                path.display()
            )
        })?;
        ensure!(
            v.is_object(),
            "line {} of {} is not a JSON object",
            i + 1,
            path.display()
        );
        n += 1;
    }
    Ok(n)
}

/// The string at `path`, for messages (`<absent>` when there is none).
pub fn shown(v: &Value, path: &str) -> String {
    field(v, path).map_or_else(|| "<absent>".to_string(), Value::to_string)
}

/// The bytes of an argument as a string for `Command::arg` (which takes `OsStr`).
pub fn os_arg(bytes: &[u8]) -> &std::ffi::OsStr {
    std::ffi::OsStr::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tty_numbers() {
        // /dev/pts/0 and /dev/pts/300 (major 137, minor 44), /dev/tty1 (4, 1).
        assert_eq!(tty_device(34816), Some((136, 0)));
        assert_eq!(tty_device((137 << 8) | 44), Some((137, 44)));
        assert_eq!(tty_device(0x0401), Some((4, 1)));
        assert_eq!(tty_device(0), None);
        // A minor above 255 keeps its high bits at 20-31.
        assert_eq!(
            tty_device((136 << 8) | 0x34 | (0x12 << 20)),
            Some((136, 0x1234))
        );
        assert_eq!(pts_name(136, 3), "pts/3");
        assert_eq!(pts_name(137, 44), "pts/300");
    }

    #[test]
    fn stat_fields() -> Result<()> {
        let stat = "4242 (a) b (c)) S 1 4242 4000 34816 4242 4194560 0 0";
        assert_eq!(parse_stat(stat)?, (1, 4000, 34816));
        Ok(())
    }

    #[test]
    fn executable_of_memfd() {
        let t = ProcTruth {
            pid: 1,
            exe: "/memfd:payload (deleted)".into(),
            cmdline: vec![],
            uids: [0; 4],
            gids: [0; 4],
            ppid: 0,
            sid: 0,
            tty_nr: 0,
            loginuid: LOGINUID_UNSET,
            sessionid: LOGINUID_UNSET,
        };
        assert_eq!(t.executable(), "memfd:payload");
        assert_eq!(t.name(), "memfd:payload");
    }
}
