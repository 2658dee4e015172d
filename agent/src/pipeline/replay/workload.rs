//! The replay's workload: the ring-buffer records a busy node's kernel programs write, made
//! with the [`synthetic`] builders from a fixed seed, so every run replays the same records.
//!
//! The node (see `docs/performance.md`, "The replay benchmark"):
//! - a process tree: an init, `sshd`, the entry leader it started (a login shell, or with
//!   `long_entry_args` a runner whose 1 KB `--env` argument every line repeats, cut to 512 bytes,
//!   like this development sandbox's), a shell leading its own session, a supervisor, and
//!   [`SERVICES`] long-lived services in their own systemd cgroups, children of the supervisor:
//!   every line names a parent, a session leader and an entry leader, three processes, and its
//!   `process` object is about 1.0 KB (1.6 KB with the long argument);
//! - each step, a service (the first ones busier) makes one connection: 70 % TCP to a named
//!   HTTPS/HTTP host (1-3 addresses; a DNS query first for a name it never resolved, for a
//!   command, and else one time in four), 15 % TCP to an internal address without a name
//!   (databases, caches), 10 % TCP to a loopback sidecar, 5 % a UDP datagram to a metrics
//!   collector; each DNS query is a UDP flow of its own (the query's first datagram, the
//!   resolver's answer, the socket's release). Over 200,000 connections that makes 79 % TCP
//!   connects and 21 % UDP flows (16.5 % DNS queries), 2.27 records per connection;
//! - one connection in [`COMMAND_EVERY`] comes from a short-lived command (fork, exec of e.g.
//!   `curl`, its connections, exit) instead of a service;
//! - TCP connections end a few records after they start (within about two drains), with bytes
//!   each way; with first bytes on, each to port 443 carries a TLS ClientHello and each to
//!   port 80 an HTTP request and its answer.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use agent_common::{
    ConnEndEvent, ConnectEvent, EventHeader, EventKind, TaskIdentity, UdpFlowKey, UdpFlowValue,
    COMM_LEN, PAYLOAD_IN, PAYLOAD_OUT, VERDICT_ALLOWED, VERDICT_NONE,
};

use super::super::{
    fake_kernel::FakeKernel,
    synthetic::{self, KernelRecord, CLOSED, SECOND},
};
use crate::record::kernel_address;

/// Long-lived service processes (each in its own cgroup).
pub const SERVICES: usize = 8;
/// One connection in this many comes from a short-lived command.
pub const COMMAND_EVERY: u64 = 25;
/// Host names the services talk to (each with 1-3 addresses).
const NAMES: usize = 160;
/// The first pid of the tree: above `pid_max` (4,194,304), so no real process has it and
/// nothing is read from this machine's `/proc`.
const PID_BASE: u32 = 4_000_000_000;
/// The resolver every query goes to.
const RESOLVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
/// The metrics collector of the other UDP flows.
const COLLECTOR: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10));

/// Records of one drain, as the ring buffer hands them over.
#[derive(Debug, Default)]
pub struct Batch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    pub fn push<T: KernelRecord>(&mut self, record: &T) {
        self.bytes
            .extend_from_slice(synthetic::record_bytes(record));
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Each record's bytes, in order.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| self.bytes.get(start..end).unwrap_or_default())
    }
}

/// splitmix64: a fixed seed gives the same workload on every run and machine.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A UDP flow's destination and the payload bytes of its one datagram each way.
#[derive(Debug, Clone, Copy)]
struct Flow {
    to: IpAddr,
    port: u16,
    bytes_out: u64,
    bytes_in: u64,
}

/// What a connection's process looks like in its records' headers.
#[derive(Debug, Clone, Copy)]
struct Task {
    pid: u32,
    cgroup_id: u64,
    comm: [u8; COMM_LEN],
}

/// A TCP connection's end, due once the workload has written `due` records.
#[derive(Debug, Clone, Copy)]
struct PendingEnd {
    due: u64,
    event: ConnEndEvent,
}

impl PartialEq for PendingEnd {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.event.cookie) == (other.due, other.event.cookie)
    }
}
impl Eq for PendingEnd {}
impl PartialOrd for PendingEnd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for PendingEnd {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.event.cookie).cmp(&(other.due, other.event.cookie))
    }
}

/// What the workload has generated so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub records: u64,
    pub tcp: u64,
    pub udp_flows: u64,
    pub dns_answers: u64,
    pub commands: u64,
    pub payloads: u64,
}

impl Counts {
    /// Connections: TCP connects and UDP flows (each gets its own line or lines).
    pub fn connections(&self) -> u64 {
        self.tcp + self.udp_flows
    }
}

/// The generator. [`Self::prologue`] starts the process tree; each [`Self::fill`] then writes
/// the next drain's records.
pub struct Workload {
    rng: Rng,
    /// `ktime` of the first record.
    base_ns: u64,
    /// Simulated time between two connections.
    step_ns: u64,
    now_ns: u64,
    block: bool,
    first_bytes: bool,
    ends: bool,
    long_entry_args: bool,
    services: Vec<Task>,
    /// The session the services and commands run in (the shell's).
    session: u32,
    next_pid: u32,
    next_cookie: u64,
    pending_ends: BinaryHeap<Reverse<PendingEnd>>,
    /// The names answered so far.
    resolved: Vec<bool>,
    /// UDP flows released in the previous drain: their kernel entries go before the next.
    released: Vec<UdpFlowKey>,
    pub counts: Counts,
}

/// Which connection to make next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Named,
    Internal,
    Loopback,
    Collector,
}

impl Workload {
    /// `base_ns`: `ktime` of the first record; `rate`: connections per simulated second.
    pub fn new(seed: u64, base_ns: u64, rate: u64, options: Options) -> Self {
        let Options {
            block,
            first_bytes,
            ends,
            long_entry_args,
        } = options;
        Self {
            rng: Rng(seed),
            base_ns,
            step_ns: SECOND / rate.max(1),
            now_ns: base_ns,
            block,
            first_bytes,
            ends,
            long_entry_args,
            services: Vec::new(),
            session: PID_BASE + 3,
            next_pid: PID_BASE + 100,
            next_cookie: 1 << 32,
            pending_ends: BinaryHeap::new(),
            resolved: vec![false; NAMES],
            released: Vec::new(),
            counts: Counts::default(),
        }
    }

    /// Simulated seconds since the first record.
    pub fn second(&self) -> u64 {
        (self.now_ns - self.base_ns) / SECOND
    }

    /// The process tree and the services' cgroups, before any connection: init, `sshd`, the
    /// entry leader it starts, a shell leading its own session, a supervisor, the services
    /// (so a service's line names three different ancestors, as in this sandbox).
    pub fn prologue(&mut self, out: &mut Batch) {
        let t = self.now_ns;
        let [init, sshd, leader, shell, supervisor] = [0, 1, 2, 3, 4].map(|i| PID_BASE + i);
        self.push_exec(out, init, init, "/usr/lib/systemd/systemd", &INIT_ARGS);
        self.push(out, &synthetic::fork(init, sshd, identity(0, sshd), t));
        self.push_exec(out, sshd, sshd, "/usr/sbin/sshd", &SSHD_ARGS);
        self.push(out, &synthetic::fork(sshd, leader, identity(0, leader), t));
        let env = long_env();
        let runner: Vec<&str> = RUNNER_ARGS
            .iter()
            .copied()
            .chain(std::iter::once(env.as_str()))
            .collect();
        if self.long_entry_args {
            self.push_exec(out, leader, leader, "/opt/runner/binary_backend", &runner);
        } else {
            self.push_exec(out, leader, leader, "/usr/bin/bash", &["-bash"]);
        }
        self.push(out, &synthetic::fork(leader, shell, identity(0, shell), t));
        self.push_exec(out, shell, shell, "/usr/bin/bash", &SHELL_ARGS);
        self.push(
            out,
            &synthetic::fork(shell, supervisor, identity(0, shell), t),
        );
        self.push_exec(
            out,
            supervisor,
            shell,
            "/usr/bin/python3.11",
            &SUPERVISOR_ARGS,
        );
        for (i, (path, args)) in SERVICE_PROGRAMS.iter().enumerate() {
            let pid = PID_BASE + 10 + u32::try_from(i).unwrap_or(0);
            let cgroup_id = 5000 + i as u64;
            let name = args.first().copied().unwrap_or("app");
            let unit = format!("/system.slice/{}-{i}.service", base_name(name));
            self.push(out, &synthetic::cgroup_mkdir(cgroup_id, &unit, t));
            self.push(
                out,
                &synthetic::fork(supervisor, pid, identity(0, shell), t),
            );
            self.push_exec(out, pid, shell, path, args);
            self.services.push(Task {
                pid,
                cgroup_id,
                comm: comm(path),
            });
        }
    }

    /// The next drain: about `records` records (a connection's records stay together), and
    /// the kernel's UDP flow entries they need. `last`: every connection still open ends.
    pub fn fill(&mut self, out: &mut Batch, records: usize, kernel: &mut FakeKernel) {
        for key in self.released.drain(..) {
            kernel.udp_flows.remove(&key);
        }
        while out.len() < records {
            self.due_ends(out);
            self.connection(out, kernel);
        }
    }

    /// Every connection still open ends (the workload is over).
    pub fn finish(&mut self, out: &mut Batch, kernel: &mut FakeKernel) {
        for key in self.released.drain(..) {
            kernel.udp_flows.remove(&key);
        }
        while let Some(Reverse(end)) = self.pending_ends.pop() {
            self.push(out, &end.event);
        }
    }

    fn due_ends(&mut self, out: &mut Batch) {
        while self
            .pending_ends
            .peek()
            .is_some_and(|Reverse(end)| end.due <= self.counts.records)
        {
            if let Some(Reverse(mut end)) = self.pending_ends.pop() {
                end.event.header.ktime_ns = self.now_ns;
                self.push(out, &end.event);
            }
        }
    }

    /// One connection, from a service or (now and then) a short-lived command.
    fn connection(&mut self, out: &mut Batch, kernel: &mut FakeKernel) {
        self.now_ns += self.step_ns;
        let service = self.pick_service();
        let command = self.counts.connections() % COMMAND_EVERY == COMMAND_EVERY - 1;
        let task = if command {
            self.start_command(out, service)
        } else {
            service
        };
        let kind = match self.rng.below(100) {
            0..=69 => Kind::Named,
            70..=84 => Kind::Internal,
            85..=94 => Kind::Loopback,
            _ => Kind::Collector,
        };
        match kind {
            Kind::Named => {
                let name = usize::try_from(self.rng.below(NAMES as u64)).unwrap_or(0);
                // A command always resolves; a service's resolver library caches most answers
                // (but not one it never had).
                let known = self.resolved.get(name).copied().unwrap_or(false);
                if command || !known || self.rng.below(4) == 0 {
                    self.dns_query(out, kernel, task, name);
                }
                let (address, _) = host(name, self.rng.below(addresses(name)));
                let port = if name % 5 == 0 { 80 } else { 443 };
                self.tcp(out, task, address, port);
            }
            Kind::Internal => {
                let n = self.rng.below(16);
                let address = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 10 + n as u8));
                let port = match n % 4 {
                    0 => 5432,
                    1 => 6379,
                    2 => 9200,
                    _ => 8080,
                };
                self.tcp(out, task, address, port);
            }
            Kind::Loopback => self.tcp(out, task, IpAddr::V4(Ipv4Addr::LOCALHOST), 15001),
            Kind::Collector => {
                let flow = Flow {
                    to: COLLECTOR,
                    port: 8125,
                    bytes_out: 180,
                    bytes_in: 0,
                };
                self.udp(out, kernel, task, flow);
            }
        }
        if command {
            self.push(out, &synthetic::exit(task.pid, self.now_ns));
        }
    }

    fn pick_service(&mut self) -> Task {
        // Services are not equally busy: the first ones make most connections.
        let n = self.services.len().max(1) as u64;
        let i = self.rng.below(n).min(self.rng.below(n));
        self.services
            .get(usize::try_from(i).unwrap_or(0))
            .copied()
            .unwrap_or(Task {
                pid: PID_BASE,
                cgroup_id: 1,
                comm: comm("app"),
            })
    }

    /// A service forks a child that execs a command; the child makes the connection.
    fn start_command(&mut self, out: &mut Batch, service: Task) -> Task {
        self.counts.commands += 1;
        let pid = self.next_pid;
        self.next_pid = self.next_pid.wrapping_add(1).max(PID_BASE + 100);
        let session = self.session;
        self.push(
            out,
            &synthetic::fork(service.pid, pid, identity(0, session), self.now_ns),
        );
        let pick = usize::try_from(self.rng.below(COMMANDS.len() as u64)).unwrap_or(0);
        let Some(&(path, args)) = COMMANDS.get(pick) else {
            return service;
        };
        let mut event = synthetic::exec(pid, path, args);
        event.header = self.header(EventKind::Exec, service.cgroup_id, pid, comm(path));
        event.identity = identity(0, session);
        self.push(out, &event);
        Task {
            pid,
            cgroup_id: service.cgroup_id,
            comm: comm(path),
        }
    }

    /// The query's UDP flow to the resolver, its answer, the socket's release.
    fn dns_query(&mut self, out: &mut Batch, kernel: &mut FakeKernel, task: Task, name: usize) {
        let flow = Flow {
            to: RESOLVER,
            port: 53,
            bytes_out: 45,
            bytes_in: 120,
        };
        let cookie = self.udp(out, kernel, task, flow);
        let (_, text) = host(name, 0);
        let addresses: Vec<IpAddr> = (0..addresses(name)).map(|i| host(name, i).0).collect();
        let id = u16::try_from(self.rng.below(65_536)).unwrap_or(0);
        let message = synthetic::dns_message(id, &text, &addresses, 300);
        let mut answer = synthetic::dns_event(cookie, RESOLVER, &message, self.now_ns);
        answer.header = self.header(EventKind::Dns, task.cgroup_id, task.pid, task.comm);
        if self.block {
            answer.approved = 1;
        }
        self.counts.dns_answers += 1;
        if let Some(known) = self.resolved.get_mut(name) {
            *known = true;
        }
        self.push(out, &answer);
        self.push(out, &synthetic::sock_release(cookie, self.now_ns));
    }

    /// A new socket's first datagram (its flow entry in the kernel, with the answer's bytes),
    /// released after its answer (or at once). Returns the socket's cookie.
    fn udp(&mut self, out: &mut Batch, kernel: &mut FakeKernel, task: Task, flow: Flow) -> u64 {
        let Flow {
            to,
            port,
            bytes_out,
            bytes_in,
        } = flow;
        let cookie = self.cookie();
        let mut event = synthetic::connect(EventKind::Send, cookie, to, port, self.now_ns);
        event.header = self.header(EventKind::Send, task.cgroup_id, task.pid, task.comm);
        self.verdict(&mut event);
        let (family, addr) = kernel_address(to);
        let key = UdpFlowKey {
            cookie,
            family,
            port,
            _pad: 0,
            addr,
        };
        kernel.udp_flows.insert(
            key,
            UdpFlowValue {
                datagrams: 1,
                first_ns: self.now_ns,
                last_ns: self.now_ns,
                verdict: event.verdict,
                connected: 0,
                bytes_out,
                packets_out: 1,
                bytes_in,
                packets_in: u64::from(bytes_in > 0),
            },
        );
        self.released.push(key);
        self.counts.udp_flows += 1;
        self.push(out, &event);
        if port != 53 {
            self.push(out, &synthetic::sock_release(cookie, self.now_ns));
        }
        cookie
    }

    /// A TCP connect; its first bytes (if on) right after; its end a few records later.
    fn tcp(&mut self, out: &mut Batch, task: Task, to: IpAddr, port: u16) {
        let cookie = self.cookie();
        let mut event = synthetic::connect(EventKind::Connect, cookie, to, port, self.now_ns);
        event.header = self.header(EventKind::Connect, task.cgroup_id, task.pid, task.comm);
        self.verdict(&mut event);
        self.counts.tcp += 1;
        self.push(out, &event);
        if self.first_bytes && (port == 80 || port == 443) {
            self.first_flight(out, task, cookie, port);
        }
        if !self.ends {
            return;
        }
        let mut end = synthetic::conn_end(cookie, to, port, CLOSED, 0);
        end.header = self.header(EventKind::ConnEnd, task.cgroup_id, task.pid, task.comm);
        end.connect_ns = self.now_ns;
        end.established_ns = self.now_ns + 180_000;
        end.bytes_acked = 200 + self.rng.below(4000);
        end.bytes_received = 300 + self.rng.below(60_000);
        end.local_port = 32_768 + u16::try_from(cookie % 28_000).unwrap_or(0);
        // Ends come within about two drains of 256 records.
        let due = self.counts.records + 1 + self.rng.below(512);
        self.pending_ends
            .push(Reverse(PendingEnd { due, event: end }));
    }

    fn first_flight(&mut self, out: &mut Batch, task: Task, cookie: u64, port: u16) {
        let request: &[u8] = if port == 80 {
            HTTP_REQUEST
        } else {
            TLS_HELLO.as_slice()
        };
        for (direction, data) in [(PAYLOAD_OUT, request), (PAYLOAD_IN, HTTP_RESPONSE)] {
            if direction == PAYLOAD_IN && port != 80 {
                continue;
            }
            let mut chunk = synthetic::payload(cookie, direction, 0, data, false);
            chunk.header = self.header(EventKind::Payload, task.cgroup_id, task.pid, task.comm);
            self.counts.payloads += 1;
            self.push(out, &chunk);
        }
    }

    /// Block mode: the kernel approved the connection (the policy covers every destination).
    fn verdict(&self, event: &mut ConnectEvent) {
        event.verdict = if self.block {
            VERDICT_ALLOWED
        } else {
            VERDICT_NONE
        };
    }

    fn cookie(&mut self) -> u64 {
        self.next_cookie += 1;
        self.next_cookie
    }

    fn header(
        &self,
        kind: EventKind,
        cgroup_id: u64,
        pid: u32,
        comm: [u8; COMM_LEN],
    ) -> EventHeader {
        EventHeader {
            tgid: pid,
            tid: pid,
            cgroup_id,
            comm,
            ..synthetic::header(kind, self.now_ns)
        }
    }

    fn push_exec(&mut self, out: &mut Batch, pid: u32, sid: u32, path: &str, args: &[&str]) {
        let mut event = synthetic::exec(pid, path, args);
        event.header = self.header(EventKind::Exec, 1, pid, comm(path));
        event.identity = identity(0, sid);
        self.push(out, &event);
    }

    fn push<T: KernelRecord>(&mut self, out: &mut Batch, record: &T) {
        self.counts.records += 1;
        out.push(record);
    }
}

/// The workload's switches.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Block mode: the kernel's verdicts say approved, DNS answers were approved.
    pub block: bool,
    /// Connections to ports 80 and 443 carry their first bytes.
    pub first_bytes: bool,
    /// The kernel follows TCP connections to their end (`--connection-ends on`).
    pub ends: bool,
    /// The entry leader has a 1 KB argument (this development sandbox's).
    pub long_entry_args: bool,
}

/// Root in the initial namespaces, in session `sid`, logged in as uid 1000 (session 3).
fn identity(uid: u32, sid: u32) -> TaskIdentity {
    TaskIdentity {
        loginuid: 1000,
        sessionid: 3,
        uid,
        euid: uid,
        gid: uid,
        egid: uid,
        sid,
        tty: 0,
    }
}

/// The kernel's `comm`: the program's file name, cut to 15 bytes.
fn comm(path: &str) -> [u8; COMM_LEN] {
    let mut out = [0; COMM_LEN];
    for (to, from) in out
        .iter_mut()
        .take(COMM_LEN - 1)
        .zip(base_name(path).bytes())
    {
        *to = from;
    }
    out
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// How many addresses host name `n` has.
fn addresses(n: usize) -> u64 {
    1 + n as u64 % 3
}

/// Host name `n` and its `i`th address (0-2): IPv4 in documentation ranges, every eighth
/// name IPv6.
fn host(n: usize, i: u64) -> (IpAddr, String) {
    const ZONES: [&str; 4] = [
        "api.example.com",
        "storage.example.net",
        "svc.payments.example.org",
        "cdn.example.io",
    ];
    let zone = ZONES.get(n % ZONES.len()).copied().unwrap_or("example.com");
    let name = format!("node-{n:03}.{zone}");
    let n16 = u16::try_from(n).unwrap_or(0);
    let i16 = u16::try_from(i % 3).unwrap_or(0);
    let address = if n % 8 == 7 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, n16, i16 + 1))
    } else {
        let base = if n.is_multiple_of(2) {
            [203, 0, 113]
        } else {
            [198, 51, 100]
        };
        let last = u8::try_from((n16 / 2 * 3 + i16) % 250 + 1).unwrap_or(1);
        IpAddr::V4(Ipv4Addr::new(base[0], base[1], base[2], last))
    };
    (address, name)
}

/// A block-mode policy with `rules` rules (at least 8): fillers over prefixes the workload
/// never uses (like `cargo xtask bench --workload tcp-policy`'s), then the rules that approve
/// its destinations — its resolver, its internal network, its hosts by address and by name.
pub fn block_policy(rules: u32) -> String {
    use std::fmt::Write as _;
    let approving = [
        "  - name: resolver\n    to: [\"10.0.0.2\"]\n    ports: [53]\n    protocols: [udp, tcp]\n",
        "  - name: collector\n    to: [\"10.0.0.10\"]\n    ports: [8125]\n    protocols: [udp]\n",
        "  - name: internal\n    to: [\"10.1.0.0/16\"]\n    protocols: [tcp]\n",
        "  - name: sidecar\n    to: [\"127.0.0.0/8\"]\n    ports: [15001]\n",
        "  - name: hosts-v4\n    to: [\"203.0.113.0/24\", \"198.51.100.0/24\"]\n    ports: [80, 443]\n",
        "  - name: hosts-v6\n    to: [\"2001:db8:ffff::/48\"]\n    ports: [80, 443]\n",
        "  - name: hosts-by-name\n    to: [\"*.example.com\", \"*.example.net\", \"*.example.org\", \"*.example.io\"]\n",
    ];
    let fillers = rules.saturating_sub(u32::try_from(approving.len()).unwrap_or(0));
    let mut yaml = String::from("mode: block\nloopback: audit\nrules:\n");
    for i in 0..fillers {
        let to = if i % 4 == 3 {
            format!("\"2001:db8:{i:x}::/48\"")
        } else {
            format!("\"10.{}.{}.0/24\"", 100 + (i >> 8) % 150, i & 0xff)
        };
        // `write!` into a String cannot fail.
        let _ = write!(yaml, "  - name: rule-{i:05}\n    to: [{to}]\n");
        match i % 3 {
            0 => yaml.push_str("    ports: [443]\n"),
            1 => yaml.push_str("    ports: [53, \"8000-8100\"]\n"),
            _ => {}
        }
    }
    for rule in approving {
        yaml.push_str(rule);
    }
    yaml
}

const INIT_ARGS: [&str; 3] = ["/sbin/init", "splash", "systemd.unified_cgroup_hierarchy=1"];
const SSHD_ARGS: [&str; 1] = ["sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"];
const SHELL_ARGS: [&str; 2] = ["bash", "/srv/deploy/start-services.sh"];
const SUPERVISOR_ARGS: [&str; 5] = [
    "/usr/bin/python3",
    "/usr/bin/supervisord",
    "-n",
    "-c",
    "/etc/supervisor/supervisord.conf",
];
const RUNNER_ARGS: [&str; 8] = [
    "line_io_tools/binary_backend",
    "--uid",
    "0",
    "--gid",
    "0",
    "--startup-timeout",
    "60",
    "--env",
];

/// A 1 KB JSON environment, as this sandbox's entry leader carries.
fn long_env() -> String {
    let mut env = String::from("{");
    let mut i = 0;
    while env.len() < 1000 {
        if i > 0 {
            env.push_str(", ");
        }
        env.push_str(&format!(
            "\"VAR_{i:02}_CA_BUNDLE\": \"/etc/ssl/certs/ca-certificates-{i:02}.crt\""
        ));
        i += 1;
    }
    env.push('}');
    env
}

/// The services: realistic command lines of 60-200 bytes.
const SERVICE_PROGRAMS: [(&str, &[&str]); SERVICES] = [
    (
        "/usr/bin/python3.11",
        &[
            "/usr/bin/python3",
            "/srv/app/worker.py",
            "--config",
            "/etc/app/worker.toml",
            "--queue",
            "default",
            "--concurrency",
            "16",
        ],
    ),
    (
        "/usr/bin/node",
        &[
            "node",
            "--max-old-space-size=2048",
            "/srv/gateway/dist/server.js",
            "--port",
            "8080",
        ],
    ),
    (
        "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
        &[
            "java",
            "-Xmx2g",
            "-XX:+UseG1GC",
            "-Dspring.profiles.active=prod",
            "-jar",
            "/opt/orders/orders-service-2.14.3.jar",
        ],
    ),
    (
        "/usr/local/bin/envoy",
        &[
            "envoy",
            "-c",
            "/etc/envoy/envoy.yaml",
            "--service-cluster",
            "payments",
            "--log-level",
            "warn",
        ],
    ),
    (
        "/usr/bin/ruby3.1",
        &["sidekiq", "7.1.2", "app", "[0 of 10 busy]"],
    ),
    (
        "/usr/local/bin/prometheus-node-exporter",
        &[
            "/usr/local/bin/prometheus-node-exporter",
            "--web.listen-address=:9100",
            "--collector.systemd",
        ],
    ),
    ("/usr/sbin/nginx", &["nginx: worker process"]),
    (
        "/usr/local/bin/app-server",
        &[
            "/usr/local/bin/app-server",
            "serve",
            "--listen",
            "0.0.0.0:8443",
            "--db",
            "postgres://app@10.1.2.10:5432/app",
            "--cache",
            "redis://10.1.2.11:6379/0",
        ],
    ),
];

/// Short-lived commands.
const COMMANDS: [(&str, &[&str]); 4] = [
    (
        "/usr/bin/curl",
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-H",
            "Accept: application/json",
            "https://node-012.api.example.com/v1/health",
        ],
    ),
    (
        "/usr/bin/git",
        &["git", "fetch", "--quiet", "origin", "refs/heads/main"],
    ),
    (
        "/usr/bin/wget",
        &[
            "wget",
            "-q",
            "-O",
            "/tmp/artifact.tar.gz",
            "https://node-040.storage.example.net/artifacts/build-1234.tar.gz",
        ],
    ),
    (
        "/usr/bin/python3.11",
        &["python3", "/usr/local/bin/healthcheck.py", "--timeout", "5"],
    ),
];

const HTTP_REQUEST: &[u8] = b"GET /api/v1/items?page=2 HTTP/1.1\r\nHost: node-005.svc.payments.example.org\r\nUser-Agent: app-server/2.14\r\nAccept: application/json\r\n\r\n";
const HTTP_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

/// A TLS 1.3 ClientHello with a server name and ALPN (`payload/testdata`).
static TLS_HELLO: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    hex(include_str!(
        "../../payload/testdata/python_tls13_sni_alpn.hex"
    ))
});

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .bytes()
        .filter_map(|b| char::from(b).to_digit(16))
        .filter_map(|d| u8::try_from(d).ok())
        .collect();
    digits
        .chunks_exact(2)
        .map(|pair| pair.iter().fold(0, |acc, d| acc << 4 | d))
        .collect()
}
