//! Running the real egret binary and reading what it writes.

use crate::expect::{has_arg, is_flow};
use crate::json::field_str;
use crate::run::log_tail;
use crate::skip;
use crate::TestCgroup;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long egret may take to load its programs and write the ready file.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long egret may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Default time to wait for an expected line.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `egret run` process with its own scratch directory.
pub struct Egret {
    child: Option<Child>,
    exit: Option<ExitStatus>,
    dir: PathBuf,
    keep_dir: bool,
}

impl Egret {
    /// Starts `egret run --cgroup <cgroup> ...` and waits for its ready file.
    pub fn start(cgroup: &Path, extra_args: &[&str]) -> Result<Self> {
        Self::start_with(&skip::require_egret_bin()?, cgroup, extra_args)
    }

    /// [`Self::start`] with an explicit binary (the harness tests use a fake one).
    pub fn start_with(bin: &Path, cgroup: &Path, extra_args: &[&str]) -> Result<Self> {
        let name = cgroup
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = scratch_dir(name.strip_prefix("egret-e2e-").unwrap_or(&name))?;
        let mut cmd = run_command(bin, cgroup, &dir);
        cmd.args(TEST_LOGGING).args(extra_args);
        Self::spawn(cmd, dir)
    }

    /// [`Self::start`] with `tweak` applied to the command before it is spawned (resource
    /// limits set in a `pre_exec` hook, say).
    pub fn start_tweaked(
        cgroup: &Path,
        extra_args: &[&str],
        tweak: impl FnOnce(&mut Command),
    ) -> Result<Self> {
        let bin = skip::require_egret_bin()?;
        let dir = scratch_dir("tweaked")?;
        let mut cmd = run_command(&bin, cgroup, &dir);
        cmd.args(TEST_LOGGING).args(extra_args);
        tweak(&mut cmd);
        Self::spawn(cmd, dir)
    }

    /// The command [`Self::start`] runs, with its files in a new scratch directory (returned
    /// too), for a test that expects egret to fail at start and runs it itself.
    pub fn command(cgroup: &Path, extra_args: &[&str]) -> Result<(Command, PathBuf)> {
        let bin = skip::require_egret_bin()?;
        let dir = scratch_dir("command")?;
        let mut cmd = run_command(&bin, cgroup, &dir);
        cmd.args(TEST_LOGGING).args(extra_args);
        Ok((cmd, dir))
    }

    /// egret's peak resident memory so far (`VmHWM` in `/proc/<pid>/status`), in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let pid = self.pid().ok_or_else(|| anyhow!("egret not started"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("read /proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))
    }

    /// Starts egret with exactly the arguments `args` returns, given the scratch directory
    /// (for tests that set the output and ready file some other way, e.g. a config file):
    /// they must make egret write `<dir>/events.jsonl` and create `<dir>/ready`.
    pub fn start_custom(
        name: &str,
        args: impl FnOnce(&Path) -> Result<Vec<std::ffi::OsString>>,
    ) -> Result<Self> {
        let bin = skip::require_egret_bin()?;
        let dir = scratch_dir(name)?;
        let mut cmd = Command::new(bin);
        cmd.args(args(&dir)?);
        Self::spawn(cmd, dir)
    }

    /// Starts `<bin> run --cgroup <cgroup> --metrics-interval 1 <extra_args>` with its files
    /// in `dir` (created if missing; a previous run's output and ready file are removed) and
    /// waits for its ready file. Without the tests' debug logging: the benchmark starts egret
    /// this way, with the release binary and its files under `target/bench`.
    pub fn start_in(
        bin: &Path,
        dir: PathBuf,
        cgroup: &Path,
        extra_args: &[std::ffi::OsString],
    ) -> Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        for stale in [dir.join("events.jsonl"), dir.join("ready")] {
            match std::fs::remove_file(&stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("remove {}", stale.display()));
                }
                _ => {}
            }
        }
        let mut cmd = run_command(bin, cgroup, &dir);
        cmd.args(extra_args);
        Self::spawn(cmd, dir)
    }

    /// Runs `cmd` with stdout and stderr logged in `dir` and waits for `<dir>/ready`.
    fn spawn(mut cmd: Command, dir: PathBuf) -> Result<Self> {
        let stderr = File::create(dir.join("stderr.log")).context("create stderr.log")?;
        let stdout = File::create(dir.join("stdout.log")).context("create stdout.log")?;
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        let child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
        let mut me = Self {
            child: Some(child),
            exit: None,
            dir,
            keep_dir: true,
        };
        me.wait_ready("egret")?;
        Ok(me)
    }

    /// Waits [`START_TIMEOUT`] for the ready file; an error (named `what`, with the end of
    /// stderr) when egret exits first or takes longer.
    fn wait_ready(&mut self, what: &str) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.dir.join("ready").exists() {
            if let Some(status) = self.try_wait()? {
                bail!(
                    "{what} exited ({status}) before becoming ready; scratch dir {}\n--- stderr ---\n{}",
                    self.dir.display(),
                    log_tail(&self.dir.join("stderr.log"), 60)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{what} not ready after {START_TIMEOUT:?}; scratch dir {}\n--- stderr ---\n{}",
                    self.dir.display(),
                    log_tail(&self.dir.join("stderr.log"), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The scratch directory (events.jsonl, stderr.log, ready).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn events_path(&self) -> PathBuf {
        self.dir.join("events.jsonl")
    }

    /// egret's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(s) = self.exit {
            return Ok(Some(s));
        }
        if let Some(child) = self.child.as_mut() {
            if let Some(s) = child.try_wait().context("wait for egret")? {
                self.exit = Some(s);
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// Whether egret is still running.
    pub fn running(&mut self) -> Result<bool> {
        Ok(self.try_wait()?.is_none())
    }

    /// The last lines of egret's stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        log_tail(&self.dir.join("stderr.log"), 40)
    }

    /// Sends `signal` to egret (which must still be running).
    pub fn signal(&mut self, signal: nix::sys::signal::Signal) -> Result<()> {
        if let Some(s) = self.try_wait()? {
            bail!(
                "egret already exited ({s}); cannot send {signal}\n--- stderr ---\n{}",
                self.stderr_tail()
            );
        }
        let pid = self.pid().ok_or_else(|| anyhow!("egret not started"))?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
        nix::sys::signal::kill(pid, signal).with_context(|| format!("{signal} egret"))
    }

    /// SIGHUP: reload the policy.
    pub fn sighup(&mut self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGHUP)
    }

    /// SIGKILL, then waits until the process is gone (reaped). egret gets no chance to clean
    /// up: whatever it leaves attached or pinned stays.
    pub fn kill9(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.try_wait()? {
            bail!(
                "egret already exited ({s}) before SIGKILL\n--- stderr ---\n{}",
                self.stderr_tail()
            );
        }
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("egret not started"))?;
        child.kill().context("SIGKILL egret")?;
        let status = child.wait().context("reap egret")?;
        self.exit = Some(status);
        Ok(status)
    }

    /// Everything egret wrote to stderr so far.
    pub fn stderr_text(&self) -> Result<String> {
        let path = self.dir.join("stderr.log");
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
    }

    /// Sends SIGTERM and waits for exit (SIGKILL + error after [`STOP_TIMEOUT`]).
    /// Returns the exit status; does not judge it.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.stop_within(STOP_TIMEOUT)
    }

    /// [`Self::stop`] with another time limit (the benchmark's egret may have a large output
    /// to finish).
    pub fn stop_within(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(s) = self.try_wait()? {
            return Ok(s);
        }
        let pid = self.pid().ok_or_else(|| anyhow!("egret not started"))?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).context("SIGTERM egret")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                if let Some(child) = self.child.as_mut() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                bail!(
                    "egret did not exit within {timeout:?} of SIGTERM (killed)\n--- stderr ---\n{}",
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`Self::stop`], requiring a clean exit (status 0); an error shows the end of stderr.
    pub fn stop_cleanly(&mut self) -> Result<()> {
        let status = self.stop()?;
        if !status.success() {
            bail!(
                "egret exited with {status}\n--- stderr ---\n{}",
                self.stderr_tail()
            );
        }
        Ok(())
    }

    /// All complete lines written so far, parsed. Every complete line must be
    /// JSON (a trailing partial line, still being written, is ignored).
    pub fn events(&self) -> Result<Vec<Value>> {
        crate::json::read_jsonl(&self.events_path())
    }

    /// Polls the output until a line satisfies `pred`; errors after `timeout`
    /// or when egret exits.
    pub fn wait_for(
        &mut self,
        mut pred: impl FnMut(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events()?;
            if let Some(v) = events.iter().find(|v| pred(v)) {
                return Ok(v.clone());
            }
            if let Some(status) = self.try_wait()? {
                bail!(
                    "egret exited ({status}) while waiting for a line; {} lines so far\n--- stderr ---\n{}",
                    events.len(),
                    self.stderr_tail()
                );
            }
            if Instant::now() > deadline {
                let last: Vec<String> = events
                    .iter()
                    .rev()
                    .filter(|v| field_str(v, "event.kind") != Some("metric"))
                    .take(15)
                    .map(Value::to_string)
                    .collect();
                bail!(
                    "no matching line within {timeout:?}; {} lines written ({} non-metric); last non-metric lines (newest first):\n{}",
                    events.len(),
                    events.iter().filter(|v| field_str(v, "event.kind") != Some("metric")).count(),
                    last.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits [`LINE_TIMEOUT`] for the first `action` line of a `transport` flow to destination
    /// `port`.
    pub fn wait_for_flow(&mut self, action: &str, transport: &str, port: u16) -> Result<Value> {
        self.wait_for(|v| is_flow(v, action, transport, port), LINE_TIMEOUT)
    }

    /// [`Self::wait_for_flow`] for the line of the client that had `marker` among its
    /// arguments.
    pub fn wait_for_marked_flow(
        &mut self,
        action: &str,
        transport: &str,
        port: u16,
        marker: &str,
    ) -> Result<Value> {
        self.wait_for(
            |v| is_flow(v, action, transport, port) && has_arg(v, marker),
            LINE_TIMEOUT,
        )
    }

    /// Like [`Self::wait_for`] but collects every line matching `pred` once at
    /// least `count` are there.
    pub fn wait_for_count(
        &mut self,
        mut pred: impl FnMut(&Value) -> bool,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<Value> = self.events()?.into_iter().filter(|v| pred(v)).collect();
            if found.len() >= count {
                return Ok(found);
            }
            if let Some(status) = self.try_wait()? {
                bail!(
                    "egret exited ({status}) while waiting; stderr:\n{}",
                    self.stderr_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "only {} of {count} expected lines within {timeout:?}",
                    found.len()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Marks the run as good: the scratch directory is removed on drop.
    pub fn discard_dir_on_drop(&mut self) {
        self.keep_dir = false;
    }

    /// Starts egret again, on `cgroup`, after it exited or was killed: same scratch
    /// directory, same output file, stderr.log appended to. Waits for the ready file.
    pub fn restart(&mut self, cgroup: &Path, extra_args: &[&str]) -> Result<()> {
        if self.try_wait()?.is_none() {
            bail!("egret is still running; stop it before restarting it");
        }
        let _ = std::fs::remove_file(self.dir.join("ready"));
        let log = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(name))
                .with_context(|| format!("open {name}"))
        };
        let (stdout, stderr) = (log("stdout.log")?, log("stderr.log")?);
        let bin = skip::require_egret_bin()?;
        let mut cmd = run_command(&bin, cgroup, &self.dir);
        cmd.args(TEST_LOGGING)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        self.child = Some(cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?);
        self.exit = None;
        self.wait_ready("restarted egret")
    }
}

/// A new scratch directory for one egret run: `<tmp>/egret-e2e-run-<name>-<unique>`.
fn scratch_dir(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("egret-e2e-run-{name}-{}", crate::unique_suffix()));
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    Ok(dir)
}

/// The tests run egret with debug logs (in `stderr.log`, shown when a test fails).
const TEST_LOGGING: [&str; 2] = ["--log-level", "debug"];

/// `bin run --cgroup <cgroup>` writing `<dir>/events.jsonl` and `<dir>/ready`, with metrics
/// every second; the caller adds the rest.
fn run_command(bin: &Path, cgroup: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--cgroup")
        .arg(cgroup)
        .arg("--output")
        .arg(dir.join("events.jsonl"))
        .arg("--ready-file")
        .arg(dir.join("ready"))
        .args(["--metrics-interval", "1"]);
    cmd
}

impl Drop for Egret {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if self.exit.is_none() && matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // `EGRET_E2E_KEEP=1` keeps every run's directory (to look at what egret wrote).
        let keep_all = std::env::var_os("EGRET_E2E_KEEP").is_some_and(|v| v == "1");
        if self.keep_dir || keep_all || std::thread::panicking() {
            eprintln!(
                "egret-e2e: keeping {} (events.jsonl, stderr.log)\n--- last lines of events.jsonl ---\n{}\n--- last lines of stderr.log ---\n{}",
                self.dir.display(),
                log_tail(&self.events_path(), 10),
                log_tail(&self.dir.join("stderr.log"), 20)
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Everything most tests need: a test cgroup and an egret watching it.
/// Fields drop in order: egret first, then the cgroup.
pub struct Harness {
    pub egret: Egret,
    pub cgroup: TestCgroup,
}

impl Harness {
    /// Checks prerequisites, creates the cgroup, starts egret. `Ok(None)` means
    /// "skip this test" (already reported; only outside CI, and only for a missing
    /// prerequisite: root, the binary, cgroup v2). egret itself failing to start is a test
    /// failure everywhere, so a broken agent never looks green.
    pub fn setup(name: &str, extra_args: &[&str]) -> Result<Option<Self>> {
        let Some(cgroup) = Self::cgroup(name)? else {
            return Ok(None);
        };
        Self::start(cgroup, extra_args).map(Some)
    }

    /// The entry point of an end-to-end test that must prepare files or servers before egret
    /// starts: checks the prerequisites, creates the test cgroup `name` and runs `test` with it
    /// (which then starts egret with [`Self::start`]). A missing prerequisite (root, the egret
    /// binary, cgroup v2) skips the test: `Ok(())` with a `SKIP:` line on stderr, except under
    /// `CI=true`, where it fails. Everything else `test` returns is the test's result.
    pub fn with_cgroup(name: &str, test: impl FnOnce(TestCgroup) -> Result<()>) -> Result<()> {
        match Self::cgroup(name)? {
            Some(cgroup) => test(cgroup),
            None => Ok(()),
        }
    }

    /// [`Self::with_cgroup`] for a test that needs nothing before egret: runs `test` with egret
    /// already watching the new test cgroup (started with `extra_args`), or skips the same way.
    pub fn with_egret(
        name: &str,
        extra_args: &[&str],
        test: impl FnOnce(Self) -> Result<()>,
    ) -> Result<()> {
        match Self::setup(name, extra_args)? {
            Some(harness) => test(harness),
            None => Ok(()),
        }
    }

    /// The first half of [`Self::setup`]: prerequisites and the test cgroup, for tests that
    /// must know the cgroup (or prepare files) before egret starts. `Ok(None)`: skip.
    pub fn cgroup(name: &str) -> Result<Option<TestCgroup>> {
        skip::prerequisite(Self::prepare(name))
    }

    /// The second half of [`Self::setup`]: egret watching `cgroup`.
    pub fn start(cgroup: TestCgroup, extra_args: &[&str]) -> Result<Self> {
        let egret = Egret::start(cgroup.path(), extra_args)?;
        Ok(Self { egret, cgroup })
    }

    fn prepare(name: &str) -> Result<TestCgroup> {
        skip::require_root()?;
        skip::require_egret_bin()?;
        crate::cgroup2_mount()?;
        TestCgroup::create(name)
    }

    /// Runs `cmd` inside the test cgroup (30 s limit) and requires exit status 0.
    pub fn run(&self, cmd: &mut Command) -> Result<crate::RunOutput> {
        run_in(&self.cgroup, cmd)
    }

    /// Runs `client connect-loop --count COUNT --interval-ms INTERVAL_MS 127.0.0.1 PORT` in
    /// the test cgroup; every connection must succeed.
    pub fn connect_loop(
        &self,
        client: &str,
        port: u16,
        count: usize,
        interval_ms: u32,
    ) -> Result<crate::RunOutput> {
        let out = self.run(Command::new(client).args([
            "connect-loop",
            "--count",
            &count.to_string(),
            "--interval-ms",
            &interval_ms.to_string(),
            "127.0.0.1",
            &port.to_string(),
        ]))?;
        let counts = crate::policy::parse_loop_counts(&out.stdout)?;
        let want = crate::policy::PortCounts {
            ok: count as u64,
            eperm: 0,
            other: 0,
        };
        anyhow::ensure!(
            counts.get(&port) == Some(&want),
            "connect-loop to port {port}: {}",
            out.stdout
        );
        Ok(out)
    }

    /// Runs `cmd` in the test cgroup (30 s limit) whatever its exit status.
    pub fn try_run(&self, cmd: &mut Command) -> Result<crate::RunOutput> {
        self.cgroup.command(cmd)?;
        crate::run_with_timeout(cmd, Duration::from_secs(30))
    }

    /// Stops egret, requires a clean exit, and discards the scratch directory.
    pub fn finish(mut self) -> Result<()> {
        self.egret.stop_cleanly()?;
        self.egret.discard_dir_on_drop();
        Ok(())
    }
}

/// Runs `cmd` inside `cgroup` (30 s limit) and requires exit status 0.
pub fn run_in(cgroup: &TestCgroup, cmd: &mut Command) -> Result<crate::RunOutput> {
    cgroup.command(cmd)?;
    crate::run_with_timeout(cmd, Duration::from_secs(30))?.ensure_success()
}
