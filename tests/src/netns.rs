//! Test-owned network namespaces connected to the root namespace by a veth pair.
//!
//! Each instance uses its own subnet `198.18.X.0/24` (host side `.1`, namespace
//! side `.2`) and `2001:db8:e2e:X::/64` (`::1` / `::2`), X chosen so that it is
//! not in use on this host.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

const IP: &str = "/usr/sbin/ip";
/// Held while choosing a free test subnet (shared with container veths).
static SUBNET_LOCK: Mutex<()> = Mutex::new(());

/// Runs `ip ARGS`; a failure is an error with its stderr.
pub(crate) fn ip(args: &[&str]) -> Result<Output> {
    let out = Command::new(IP)
        .args(args)
        .output()
        .with_context(|| format!("run {IP} {args:?}"))?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// The names and the subnet of a new namespace and veth pair; the subnet lock is held (and so
/// no other test picks the same subnet) until this is dropped, after the addresses are set.
pub(crate) struct VethPlan {
    /// `egret-e2e-<name>-<pid>-<n>`, unique to this process and call.
    pub(crate) netns: String,
    /// `<tag><pid hex><n>h`, the end in the root namespace.
    pub(crate) host_if: String,
    /// `<tag><pid hex><n><peer>`, the end moved into the namespace.
    pub(crate) peer_if: String,
    /// X of `198.18.X.0/24`, not in use on this host.
    pub(crate) subnet: u8,
    /// Held until the addresses are set.
    pub(crate) subnet_lock: MutexGuard<'static, ()>,
}

impl VethPlan {
    /// Plans a pair for namespace `name`, interfaces named with the two-letter `tag`; the
    /// search for a free subnet starts `subnet_offset` further on (so that namespaces and
    /// container veths rarely probe the same subnets).
    pub(crate) fn new(name: &str, tag: &str, peer: char, subnet_offset: usize) -> Result<Self> {
        crate::skip::require_program(IP)?;
        let n = crate::unique();
        let pid = std::process::id();
        let host_if = format!("{tag}{pid:x}{n}h");
        if host_if.len() > 15 {
            bail!("interface name {host_if} too long");
        }
        let subnet_lock = SUBNET_LOCK
            .lock()
            .map_err(|_| anyhow::anyhow!("subnet lock poisoned"))?;
        let used = String::from_utf8_lossy(&ip(&["-o", "addr", "show"])?.stdout).into_owned();
        let start = usize::try_from(pid % 250).unwrap_or(0) + n + subnet_offset;
        let subnet = (0..254usize)
            .map(|i| u8::try_from((start + i) % 254 + 1).unwrap_or(1))
            .find(|x| !used.contains(&format!(" 198.18.{x}.")))
            .context("no free 198.18.X.0/24 subnet")?;
        Ok(Self {
            netns: format!("egret-e2e-{name}-{pid}-{n}"),
            peer_if: format!("{tag}{pid:x}{n}{peer}"),
            host_if,
            subnet,
            subnet_lock,
        })
    }
}

/// A network namespace plus veth pair; dropped → both deleted.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    host_if: String,
    ns_if: String,
    subnet: u8,
    v6: bool,
}

impl NetNs {
    /// Creates namespace `egret-e2e-<name>-<pid>-<n>` with a veth pair, addresses up.
    pub fn create(name: &str) -> Result<Self> {
        let plan = VethPlan::new(name, "eg", 'p', 0)?;
        let VethPlan {
            netns: ns_name,
            host_if,
            peer_if: ns_if,
            subnet,
            subnet_lock: _subnet_lock,
        } = plan;
        ip(&["netns", "add", &ns_name])?;
        // From here on, Drop cleans up whatever was created.
        let mut me = Self {
            name: ns_name,
            host_if,
            ns_if,
            subnet,
            v6: false,
        };
        let (ns, h, p) = (me.name.clone(), me.host_if.clone(), me.ns_if.clone());
        ip(&[
            "link", "add", &h, "type", "veth", "peer", "name", &p, "netns", &ns,
        ])?;
        ip(&["addr", "add", &format!("{}/24", me.host_v4()), "dev", &h])?;
        ip(&["link", "set", &h, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", me.ns_v4()),
            "dev",
            &p,
        ])?;
        ip(&["-n", &ns, "link", "set", &p, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        me.v6 = ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/64", me.host_v6()),
            "dev",
            &h,
            "nodad",
        ])
        .is_ok()
            && ip(&[
                "-n",
                &ns,
                "-6",
                "addr",
                "add",
                &format!("{}/64", me.ns_v6()),
                "dev",
                &p,
                "nodad",
            ])
            .is_ok();

        // Safety net for the network rule: traffic to the namespace address must
        // leave through our veth, never through a default route.
        let route = ip(&["route", "get", &me.ns_v4().to_string()])?;
        let route = String::from_utf8_lossy(&route.stdout);
        if !route.contains(&format!("dev {h} ")) {
            bail!("route to {} does not use {h}: {route}", me.ns_v4());
        }
        Ok(me)
    }

    /// Runs `test` with a new namespace, or skips it (outside CI, without root or `ip`) as
    /// [`crate::prerequisite`] decides: `Ok(())` then, except under `CI=true`, where it fails.
    pub fn with(name: &str, test: impl FnOnce(Self) -> Result<()>) -> Result<()> {
        let created = crate::skip::require_root().and_then(|()| Self::create(name));
        match crate::prerequisite(created)? {
            Some(ns) => test(ns),
            None => Ok(()),
        }
    }

    /// The veth end inside the namespace.
    pub fn ns_if(&self) -> &str {
        &self.ns_if
    }

    /// Namespace name (as listed by `ip netns`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Host-side veth interface name (root namespace).
    pub fn host_if(&self) -> &str {
        &self.host_if
    }

    /// Address of the host side of the veth (root namespace).
    pub fn host_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet, 1)
    }

    /// Address of the namespace side of the veth.
    pub fn ns_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet, 2)
    }

    pub fn host_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0xe2e, u16::from(self.subnet), 0, 0, 0, 1)
    }

    pub fn ns_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0xe2e, u16::from(self.subnet), 0, 0, 0, 2)
    }

    /// Makes the host end of the veth (MTU 1500) hand every TCP segment to the stack as its own
    /// packet (`gso_max_segs 1`): a write larger than the MSS then leaves the host, and passes
    /// the monitored cgroup's packet programs, as several packets, as on a real network (not as
    /// one GSO packet cut later). Returns the interface's MTU.
    pub fn one_segment_per_packet(&self) -> Result<u32> {
        ip(&["link", "set", "dev", &self.host_if, "gso_max_segs", "1"])?;
        let mtu = format!("/sys/class/net/{}/mtu", self.host_if);
        let mtu = std::fs::read_to_string(&mtu).with_context(|| format!("read {mtu}"))?;
        mtu.trim()
            .parse()
            .with_context(|| format!("MTU of {}: {mtu:?}", self.host_if))
    }

    /// Whether the IPv6 addresses could be configured.
    pub fn has_v6(&self) -> bool {
        self.v6
    }

    fn ns_file(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `f` on a fresh thread that has joined this namespace. Sockets
    /// created there stay in the namespace when handed back.
    pub fn in_ns<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let file = File::open(self.ns_file())
            .with_context(|| format!("open {}", self.ns_file().display()))?;
        std::thread::spawn(move || -> Result<T> {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("setns(CLONE_NEWNET)")?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    }

    /// A TCP listener bound inside the namespace.
    pub fn tcp_listener(&self, addr: SocketAddr) -> Result<TcpListener> {
        self.in_ns(move || {
            TcpListener::bind(addr).with_context(|| format!("bind tcp {addr} in netns"))
        })
    }

    /// A UDP socket bound inside the namespace.
    pub fn udp_socket(&self, addr: SocketAddr) -> Result<UdpSocket> {
        self.in_ns(move || {
            UdpSocket::bind(addr).with_context(|| format!("bind udp {addr} in netns"))
        })
    }

    /// Runs `program args...` inside the namespace; an error carries its stderr.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<()> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .with_context(|| format!("run {program} {args:?} in netns {}", self.name))?;
        if !out.status.success() {
            bail!(
                "`{program} {}` in netns {} failed ({}): {}",
                args.join(" "),
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(IP);
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("egret-e2e: deleting netns {}: {e:#}", self.name);
        }
    }
}
