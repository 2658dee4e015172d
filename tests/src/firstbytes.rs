//! Real TLS and HTTP for the tests of what a connection's first bytes say (`tests/names.rs`):
//! the servers and clients of `firstbytes.py` (Python's `ssl` and `http.server`, the system's
//! OpenSSL), a self-signed certificate made with `openssl req`, and accessors for the
//! first-bytes fields of egret's lines.
//!
//! Servers run as processes of the test (outside the test cgroup), in a [`NetNs`] when given;
//! clients run inside the test cgroup, and each prints one JSON line the test reads back.

use crate::json::{field, field_str, field_u64};
use crate::run::{ReadyProcess, ScratchDir};
use crate::skip::require_program;
use crate::{run_with_timeout, wait_until, NetNs, TestCgroup};
use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The Python the helpers run with (the system's, not a user's pyenv shim).
pub const PYTHON: &str = "/usr/bin/python3";
const OPENSSL: &str = "/usr/bin/openssl";
/// The helper script, written into each kit's directory.
const SCRIPT: &str = include_str!("firstbytes.py");
/// The line the TLS server sends after its handshake.
pub const GREETING: &str = "hello from the egret e2e tls server\n";
/// How long a server may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a client may run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The helper script and a self-signed certificate (`CN=names.test`) in a scratch directory.
pub struct Kit {
    dir: ScratchDir,
}

impl Kit {
    /// Writes the script and makes the certificate; an error when Python or OpenSSL is missing
    /// (a missing prerequisite: see [`crate::prerequisite`]).
    pub fn create(name: &str) -> Result<Self> {
        require_program(PYTHON)?;
        require_program(OPENSSL)?;
        let dir = ScratchDir::create(&format!("tls-{name}"))?;
        let me = Self { dir };
        std::fs::write(me.script(), SCRIPT).context("write firstbytes.py")?;
        let mut req = Command::new(OPENSSL);
        req.args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=names.test", "-keyout"])
            .arg(me.key())
            .arg("-out")
            .arg(me.cert());
        run_with_timeout(&mut req, Duration::from_secs(30))?.ensure_success_of("openssl req")?;
        Ok(me)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn script(&self) -> PathBuf {
        self.dir().join("firstbytes.py")
    }

    fn cert(&self) -> PathBuf {
        self.dir().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir().join("key.pem")
    }

    /// `python3 firstbytes.py`, inside `ns` when given.
    fn python(&self, ns: Option<&NetNs>) -> Command {
        let mut cmd = match ns {
            Some(ns) => ns.command(PYTHON),
            None => Command::new(PYTHON),
        };
        cmd.arg(self.script());
        cmd
    }

    fn server(&self, ns: Option<&NetNs>, bind: IpAddr, args: &[&str]) -> Result<Server> {
        let mut cmd = self.python(ns);
        cmd.args(args).arg("--bind").arg(bind.to_string());
        let what = args.first().copied().unwrap_or("server");
        let process = ReadyProcess::start(&mut cmd, what, READY_TIMEOUT)?;
        Ok(Server {
            addr: SocketAddr::new(bind, process.port()),
            process,
        })
    }

    /// A TLS server (the kit's certificate, ALPN `http/1.1`) on `bind` and a free port.
    pub fn tls_server(&self, ns: Option<&NetNs>, bind: IpAddr) -> Result<Server> {
        let (cert, key) = (self.cert(), self.key());
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        self.server(ns, bind, &["tls-server", "--cert", &cert, "--key", &key])
    }

    /// A TCP server that counts what each connection sends.
    pub fn raw_server(&self, ns: Option<&NetNs>, bind: IpAddr) -> Result<Server> {
        self.server(ns, bind, &["raw-server"])
    }

    /// Python's `http.server` (HTTP/1.1) serving `root`.
    pub fn http_server(&self, ns: Option<&NetNs>, bind: IpAddr, root: &Path) -> Result<Server> {
        let root = root.display().to_string();
        self.server(ns, bind, &["http-server", "--dir", &root])
    }

    /// Runs `firstbytes.py <args>` (a client) in `cg` and reads its JSON line.
    pub fn client(&self, cg: &TestCgroup, args: &[&str]) -> Result<Client> {
        let mut cmd = self.python(None);
        cmd.args(args);
        cg.command(&mut cmd)?;
        let out = run_with_timeout(&mut cmd, CLIENT_TIMEOUT)?;
        let line = out.stdout.lines().last().unwrap_or_default();
        let json: Value = serde_json::from_str(line).with_context(|| {
            format!(
                "firstbytes.py {args:?} printed no JSON line ({})\nstdout: {}\nstderr: {}",
                out.status, out.stdout, out.stderr
            )
        })?;
        Ok(Client {
            pid: out.pid,
            json,
            stderr: out.stderr,
        })
    }
}

/// A server of the kit, killed on drop.
pub struct Server {
    process: ReadyProcess,
    addr: SocketAddr,
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `IP:PORT` (IPv6 in brackets), for `--connect`.
    pub fn connect_arg(&self) -> String {
        self.addr.to_string()
    }

    /// The records of the connections that are over, so far.
    pub fn records(&self) -> Vec<Value> {
        self.process
            .lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (10 s) for the record of the connection from local port `peer_port`.
    pub fn record_of(&self, peer_port: u16) -> Result<Value> {
        let find = || {
            self.records()
                .into_iter()
                .find(|r| field_u64(r, "peer_port") == Some(u64::from(peer_port)))
        };
        wait_until(Duration::from_secs(10), || Ok(find().is_some()))?;
        find().with_context(|| {
            format!(
                "the server at {} has no record of a connection from port {peer_port}; its records: {:?}",
                self.addr,
                self.records()
            )
        })
    }
}

/// What a client of the kit did.
#[derive(Debug)]
pub struct Client {
    pub pid: u32,
    /// Its JSON line (see `firstbytes.py`).
    pub json: Value,
    pub stderr: String,
}

impl Client {
    pub fn ok(&self) -> bool {
        field(&self.json, "ok").and_then(Value::as_bool) == Some(true)
    }

    /// The OS error it failed with.
    pub fn errno(&self) -> Option<i32> {
        field(&self.json, "errno")
            .and_then(Value::as_i64)
            .and_then(|e| i32::try_from(e).ok())
    }

    /// From its first byte sent to its end.
    pub fn elapsed(&self) -> Duration {
        let ms = field(&self.json, "elapsed_ms")
            .and_then(Value::as_f64)
            .unwrap_or(f64::MAX);
        Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX)
    }

    pub fn local_port(&self) -> Result<u16> {
        field_u64(&self.json, "local_port")
            .and_then(|p| u16::try_from(p).ok())
            .with_context(|| format!("the client did not connect: {self}"))
    }

    /// It completed: the TLS handshake and the server's greeting, or (raw) the exchange.
    pub fn ensure_ok(&self) -> Result<()> {
        ensure!(self.ok(), "the client should have succeeded: {self}");
        Ok(())
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} said {}", self.pid, self.json)?;
        if !self.stderr.trim().is_empty() {
            write!(f, "\nstderr: {}", self.stderr.trim())?;
        }
        Ok(())
    }
}

/// The strings of the array at `path` (empty when absent).
pub fn strings<'a>(v: &'a Value, path: &str) -> Vec<&'a str> {
    crate::dns::str_array(v, path)
}

/// `tls.client.server_name` of a line.
pub fn sni(v: &Value) -> Option<&str> {
    field_str(v, "tls.client.server_name")
}

/// `egret.destination.name_check` of a line.
pub fn name_check(v: &Value) -> Option<&str> {
    field_str(v, "egret.destination.name_check")
}

/// `egret.destination.name_source` of a line.
pub fn name_source(v: &Value) -> Option<&str> {
    field_str(v, "egret.destination.name_source")
}

/// `egret.destination.name_mismatch` is `true` on the line (absent or `false` otherwise).
pub fn name_mismatch(v: &Value) -> bool {
    field(v, "egret.destination.name_mismatch").and_then(Value::as_bool) == Some(true)
}
