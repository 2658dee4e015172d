//! Running client processes and simple loopback servers.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `program args...`, not started yet: the tests' way to build a client command (for the
/// test binaries, `program` is their `env!("CARGO_BIN_EXE_...")` path).
pub fn command(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.args(args);
    command
}

/// argv as `program` will see it: `[program, args...]` (what egret reports as
/// `process.args`).
pub fn argv(program: &str, args: &[&str]) -> Vec<String> {
    std::iter::once(program)
        .chain(args.iter().copied())
        .map(String::from)
        .collect()
}

/// The command that runs `argv` (`argv[0]` is the program), e.g. one built with [`argv`].
pub fn command_for_argv(argv: &[String]) -> Command {
    let mut command = Command::new(argv.first().map(String::as_str).unwrap_or_default());
    command.args(argv.iter().skip(1));
    command
}

/// Waits at most `timeout` for `child` to exit; past that it is killed and reaped, and that
/// is an error.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("wait for a child process")? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `max_lines` lines of the log file `path`, for error messages (or why it cannot be
/// read).
pub fn log_tail(path: &Path, max_lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(max_lines);
            lines.get(from..).unwrap_or_default().join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// A server process the test owns (outside the test cgroup): started with its stdout piped, it
/// must print `ready <port>` first (within `timeout`); every later line of its stdout is kept for
/// the test to read. Killed and reaped on drop.
pub struct ReadyProcess {
    child: Child,
    port: u16,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ReadyProcess {
    /// Spawns `cmd` (stdin null, stdout piped, stderr inherited) and waits for its ready line;
    /// `what` names it in errors.
    pub fn start(cmd: &mut Command, what: &str, timeout: Duration) -> Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {what}: {cmd:?}"))?;
        let stdout = child.stdout.take();
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = Arc::clone(&lines);
        // Reads the ready line, then keeps every line until the process exits.
        std::thread::spawn(move || {
            use std::io::BufRead;
            let Some(stdout) = stdout else { return };
            let mut ready = Some(tx);
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                match ready.take() {
                    Some(tx) => {
                        let _ = tx.send(line);
                    }
                    None => {
                        if let Ok(mut kept) = kept.lock() {
                            kept.push(line);
                        }
                    }
                }
            }
        });
        let mut me = Self {
            child,
            port: 0,
            lines,
        };
        let Ok(line) = rx.recv_timeout(timeout) else {
            let status = me.child.try_wait().ok().flatten();
            bail!("{what} not ready within {timeout:?} (exit status {status:?}): {cmd:?}");
        };
        me.port = parse_ready_line(&line)
            .with_context(|| format!("{what} said {line:?}, not \"ready <port>\""))?;
        Ok(me)
    }

    /// The port of its ready line.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines it printed after its ready line, so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for ReadyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port in the `ready <port>` line a test server prints once it is bound (`None` for any
/// other line, or port 0).
pub fn parse_ready_line(line: &str) -> Option<u16> {
    line.trim()
        .strip_prefix("ready ")?
        .trim()
        .parse()
        .ok()
        .filter(|&port| port != 0)
}

/// A scratch directory `<tmp>/egret-e2e-<name>-<unique>`, removed on drop unless the test is
/// failing (then it is kept and named on stderr).
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn create(name: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("egret-e2e-{name}-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("egret-e2e: keeping {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Makes `cmd` drop to `uid`/`gid` (no supplementary groups) before exec.
/// Register it after [`crate::TestCgroup::command`], which needs root.
pub fn drop_privileges(cmd: &mut Command, uid: u32, gid: u32) -> &mut Command {
    // SAFETY: setgroups/setgid/setuid are async-signal-safe system calls; the hook
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// What a finished client process did.
#[derive(Debug)]
pub struct RunOutput {
    pub pid: u32,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl RunOutput {
    /// Errors (with the output) unless the process exited 0.
    pub fn ensure_success(self) -> Result<Self> {
        let what = format!("client pid {}", self.pid);
        self.ensure_success_of(&what)
    }

    /// [`Self::ensure_success`] for a process the error calls `what`.
    pub fn ensure_success_of(self, what: &str) -> Result<Self> {
        if !self.status.success() {
            bail!(
                "{what} failed: {}\nstdout: {}\nstderr: {}",
                self.status,
                self.stdout.trim(),
                self.stderr.trim()
            );
        }
        Ok(self)
    }
}

/// Spawns `cmd`, again for a while when the program is "text file busy": a test that has
/// just written an executable may still have it open for writing in a child that another
/// thread of the test binary forked meanwhile (the descriptor lives until that child execs).
pub fn spawn_busy_retry(cmd: &mut Command) -> Result<Child> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.with_context(|| format!("spawn {cmd:?}")),
        }
    }
}

/// Spawns `cmd` (stdout/stderr captured), waits at most `timeout`, kills it on timeout.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<RunOutput> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_busy_retry(cmd)?;
    let pid = child.id();
    let readers: Vec<JoinHandle<String>> = [
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .map(|r| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    })
    .collect();
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().context("wait for client")? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("client {cmd:?} (pid {pid}) did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut outs = readers.into_iter().map(|h| h.join().unwrap_or_default());
    let stdout = outs.next().unwrap_or_default();
    let stderr = outs.next().unwrap_or_default();
    Ok(RunOutput {
        pid,
        status,
        stdout,
        stderr,
    })
}

/// The thread behind a test server: it runs until the server is dropped and counts what it
/// served (connections, bytes or datagrams). Dropping it stops the thread and waits for it.
pub(crate) struct ServerThread {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Runs `serve(stop, count)` on a new thread; `serve` returns once `stop` is set.
    pub(crate) fn spawn(serve: impl FnOnce(&AtomicBool, &AtomicU64) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let (thread_stop, thread_count) = (stop.clone(), count.clone());
        let thread = std::thread::spawn(move || serve(&thread_stop, &thread_count));
        Self {
            stop,
            count,
            thread: Some(thread),
        }
    }

    /// What the thread counted so far.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Tells the thread to stop (it notices at its next check).
    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Leaves the thread to finish on its own: dropping does not wait for it (for a thread
    /// blocked where the stop flag cannot reach it).
    pub(crate) fn detach(&mut self) {
        self.thread = None;
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.request_stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A TCP listener on a test-chosen address with a thread that accepts, reads
/// and drops connections until the server is dropped.
pub struct TcpServer {
    addr: SocketAddr,
    server: ServerThread,
}

impl TcpServer {
    /// Binds `bind` (port 0 for an ephemeral port) in the current namespace.
    pub fn start(bind: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(bind).with_context(|| format!("bind tcp {bind}"))?;
        Self::from_listener(listener)
    }

    /// [`Self::start`] on 127.0.0.1 and a free port.
    pub fn loopback() -> Result<Self> {
        Self::start(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)))
    }

    /// Serves an already bound listener (e.g. one bound inside a network namespace).
    pub fn from_listener(listener: TcpListener) -> Result<Self> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let server = ServerThread::spawn(move |stop, accepted| {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                        let mut buf = [0u8; 64];
                        let _ = s.read(&mut buf);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self { addr, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Number of connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.server.count()
    }
}

/// A TCP server for exact byte counts: for each connection it reads `expect` bytes (or, with
/// `until_eof`, until the client shuts its side down), then writes `reply` bytes and closes.
pub struct ExchangeServer {
    addr: SocketAddr,
    server: ServerThread,
}

impl ExchangeServer {
    pub fn start(bind: SocketAddr, expect: usize, reply: usize, until_eof: bool) -> Result<Self> {
        let listener = TcpListener::bind(bind).with_context(|| format!("bind tcp {bind}"))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let server = ServerThread::spawn(move |stop, received| {
            use std::io::Write;
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut got = Vec::new();
                let ok = if until_eof {
                    s.read_to_end(&mut got).is_ok()
                } else {
                    got.resize(expect, 0);
                    s.read_exact(&mut got).is_ok()
                };
                if ok {
                    received.fetch_add(got.len() as u64, Ordering::Relaxed);
                    let _ = s.write_all(&vec![b's'; reply]);
                }
            }
        });
        Ok(Self { addr, server })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Bytes received from clients so far.
    pub fn received(&self) -> u64 {
        self.server.count()
    }
}

/// A UDP socket on a test-chosen address with a thread that drains datagrams.
pub struct UdpServer {
    addr: SocketAddr,
    server: ServerThread,
}

impl UdpServer {
    pub fn start(bind: SocketAddr) -> Result<Self> {
        Self::start_echo(bind, 0)
    }

    /// [`Self::start`] on 127.0.0.1 and a free port.
    pub fn loopback() -> Result<Self> {
        Self::start(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)))
    }

    /// Answers every datagram with `reply` bytes (0: no answer).
    pub fn start_echo(bind: SocketAddr, reply: usize) -> Result<Self> {
        let sock = UdpSocket::bind(bind).with_context(|| format!("bind udp {bind}"))?;
        let addr = sock.local_addr()?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let server = ServerThread::spawn(move |stop, received| {
            let mut buf = [0u8; 2048];
            let answer = vec![b'r'; reply];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((_, from)) = sock.recv_from(&mut buf) {
                    received.fetch_add(1, Ordering::Relaxed);
                    if reply > 0 {
                        let _ = sock.send_to(&answer, from);
                    }
                }
            }
        });
        Ok(Self { addr, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Number of datagrams received so far.
    pub fn received(&self) -> u64 {
        self.server.count()
    }
}
