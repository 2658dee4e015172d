//! Running client processes and simple loopback servers.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
        if !self.status.success() {
            bail!(
                "client pid {} failed: {}\nstdout: {}\nstderr: {}",
                self.pid,
                self.status,
                self.stdout,
                self.stderr
            );
        }
        Ok(self)
    }
}

/// Spawns `cmd` (stdout/stderr captured), waits at most `timeout`, kills it on timeout.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<RunOutput> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))?;
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

/// A TCP listener on a test-chosen address with a thread that accepts, reads
/// and drops connections until the server is dropped.
pub struct TcpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Binds `bind` (port 0 for an ephemeral port) in the current namespace.
    pub fn start(bind: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(bind).with_context(|| format!("bind tcp {bind}"))?;
        Self::from_listener(listener)
    }

    /// Serves an already bound listener (e.g. one bound inside a network namespace).
    pub fn from_listener(listener: TcpListener) -> Result<Self> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (stop2, accepted2) = (stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        accepted2.fetch_add(1, Ordering::Relaxed);
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
        Ok(Self {
            addr,
            stop,
            accepted,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Number of connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP server for exact byte counts: for each connection it reads `expect` bytes (or, with
/// `until_eof`, until the client shuts its side down), then writes `reply` bytes and closes.
pub struct ExchangeServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl ExchangeServer {
    pub fn start(bind: SocketAddr, expect: usize, reply: usize, until_eof: bool) -> Result<Self> {
        let listener = TcpListener::bind(bind).with_context(|| format!("bind tcp {bind}"))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (stop2, received2) = (stop.clone(), received.clone());
        let thread = std::thread::spawn(move || {
            use std::io::Write;
            while !stop2.load(Ordering::Relaxed) {
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
                    received2.fetch_add(got.len() as u64, Ordering::Relaxed);
                    let _ = s.write_all(&vec![b's'; reply]);
                }
            }
        });
        Ok(Self {
            addr,
            stop,
            received,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Bytes received from clients so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for ExchangeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP socket on a test-chosen address with a thread that drains datagrams.
pub struct UdpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    pub fn start(bind: SocketAddr) -> Result<Self> {
        Self::start_echo(bind, 0)
    }

    /// Answers every datagram with `reply` bytes (0: no answer).
    pub fn start_echo(bind: SocketAddr, reply: usize) -> Result<Self> {
        let sock = UdpSocket::bind(bind).with_context(|| format!("bind udp {bind}"))?;
        let addr = sock.local_addr()?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (stop2, received2) = (stop.clone(), received.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let answer = vec![b'r'; reply];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((_, from)) = sock.recv_from(&mut buf) {
                    received2.fetch_add(1, Ordering::Relaxed);
                    if reply > 0 {
                        let _ = sock.send_to(&answer, from);
                    }
                }
            }
        });
        Ok(Self {
            addr,
            stop,
            received,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Number of datagrams received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
