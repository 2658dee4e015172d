//! A real OpenSSH server for the tests of SSH sessions: Debian's `openssh-server`
//! (`/usr/sbin/sshd`, installed with `apt-get` when missing, see [`crate::runtime::install`]),
//! started by the test in a network namespace the test created, in the test cgroup (so that
//! everything sshd spawns for a session is watched by egret), with its own configuration,
//! host key and authorized user key in a scratch directory. The client is Debian's `ssh`, run
//! from the root namespace over the namespace's veth pair, so that sshd sees the client at the
//! host side's address ([`NetNs::host_v4`]), not at a loopback address.
//!
//! sshd runs in the foreground (`-D`), logs to `sshd.log` in its directory (`-e`), without PAM
//! (`UsePAM no`: so it sets no audit login uid), and lets root in with the key only. It is
//! killed on drop (and with the test cgroup).

use crate::run::{log_tail, ScratchDir};
use crate::runtime::install::ensure_programs;
use crate::{run_with_timeout, wait_until, NetNs, TestCgroup};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The privilege separation directory sshd refuses to start without (systemd's tmpfiles
/// normally creates it). Created when missing and left in place: it is Debian's own path, and
/// another test's sshd may be using it.
const PRIVSEP_DIR: &str = "/run/sshd";
/// The port sshd listens on inside the test's namespace (nothing else listens there).
pub const SSHD_PORT: u16 = 2222;
/// How long sshd may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The programs an SSH test needs, with their Debian packages.
const PROGRAMS: &[crate::runtime::Program] = &[
    ("sshd", "openssh-server", &["/usr/sbin/sshd"]),
    ("ssh", "openssh-client", &["/usr/bin/ssh"]),
    ("ssh-keygen", "openssh-client", &["/usr/bin/ssh-keygen"]),
];

/// A running sshd in a test namespace and cgroup.
pub struct Sshd {
    child: Option<Child>,
    dir: ScratchDir,
    addr: SocketAddr,
    ssh: PathBuf,
}

impl Sshd {
    /// Makes sure OpenSSH is installed (a missing package that cannot be installed is a
    /// prerequisite error), generates the keys, writes the configuration and starts
    /// `sshd -D -e -f CONFIG` inside `ns` (listening on [`NetNs::ns_v4`]:[`SSHD_PORT`]) and in
    /// `cgroup`; waits until it listens.
    pub fn start(ns: &NetNs, cgroup: &TestCgroup) -> Result<Self> {
        let paths = ensure_programs(PROGRAMS)?;
        let [sshd, ssh, keygen] = <[PathBuf; 3]>::try_from(paths)
            .map_err(|_| anyhow::anyhow!("ensure_programs returned the wrong count"))?;
        let dir = ScratchDir::create("sshd")?;
        for key in ["host_key", "user_key"] {
            let mut gen = Command::new(&keygen);
            gen.args(["-q", "-t", "ed25519", "-N", "", "-C", "egret-e2e", "-f"])
                .arg(dir.path().join(key));
            run_with_timeout(&mut gen, Duration::from_secs(30))?.ensure_success_of("ssh-keygen")?;
        }
        std::fs::copy(
            dir.path().join("user_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .context("write authorized_keys")?;
        let addr = SocketAddr::from((ns.ns_v4(), SSHD_PORT));
        let config = format!(
            "Port {port}\nListenAddress {ip}\nHostKey {dir}/host_key\nUsePAM no\n\
             PermitRootLogin prohibit-password\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nPidFile none\n\
             UseDNS no\nLogLevel VERBOSE\n",
            port = addr.port(),
            ip = addr.ip(),
            dir = dir.path().display()
        );
        std::fs::write(dir.path().join("sshd_config"), config).context("write sshd_config")?;
        if !Path::new(PRIVSEP_DIR).is_dir() {
            std::fs::create_dir_all(PRIVSEP_DIR).with_context(|| format!("mkdir {PRIVSEP_DIR}"))?;
        }
        let log = File::create(dir.path().join("sshd.log")).context("create sshd.log")?;
        let mut cmd = ns.command(&sshd.display().to_string());
        cmd.arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(dir.path().join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // `ip netns exec` joins the namespace and execs sshd: one process, in the cgroup.
        cgroup.command(&mut cmd)?;
        let child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
        let mut me = Self {
            child: Some(child),
            dir,
            addr,
            ssh,
        };
        let listening = wait_until(START_TIMEOUT, || {
            if let Some(child) = me.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("sshd exited ({status}):\n{}", me.log_tail());
                }
            }
            Ok(std::fs::read_to_string(me.dir.path().join("sshd.log"))
                .is_ok_and(|l| l.contains("Server listening on")))
        })?;
        if !listening {
            bail!(
                "sshd not listening within {START_TIMEOUT:?}:\n{}",
                me.log_tail()
            );
        }
        Ok(me)
    }

    /// The address sshd listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// sshd's pid (the listener).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The end of sshd's log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir.path().join("sshd.log"), 30)
    }

    /// `ssh root@<sshd> REMOTE_COMMAND` with the test's key, no host key check, no user
    /// configuration, in batch mode; `-tt` (a pty for the session even without a local
    /// terminal) when `tty`. Runs where the caller runs it (the root namespace: the client's
    /// address is then the veth's host side).
    pub fn ssh(&self, tty: bool, remote_command: &str) -> Command {
        let mut cmd = Command::new(&self.ssh);
        cmd.args(["-F", "/dev/null", "-i"])
            .arg(self.dir.path().join("user_key"))
            .args(["-p", &self.addr.port().to_string()])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"]);
        if tty {
            cmd.arg("-tt");
        } else {
            cmd.arg("-T");
        }
        cmd.arg(format!("root@{}", self.addr.ip()))
            .arg(remote_command);
        cmd
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("egret-e2e: sshd log:\n{}", self.log_tail());
        }
    }
}
