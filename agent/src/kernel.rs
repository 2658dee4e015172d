//! Loading the kernel programs, attaching them, and handing out their maps.

use std::{
    collections::HashMap as StdHashMap,
    fs::{self, File},
    io,
    path::{Path, PathBuf},
};

use agent_common::{
    names::{globals, maps, programs},
    ConnState, Counter, DnsAllowKey, DnsNameValue, ExeId, PolicyAddr4, PolicyAddr6, PolicyState,
    PolicyValue, UdpFlowKey, UdpFlowValue, POLICY_MODE_AUDIT, POLICY_MODE_BLOCK,
};
use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap, MapData, MapError, PerCpuArray,
    },
    programs::{
        cgroup_skb::{CgroupSkbLink, CgroupSkbLinkId},
        cgroup_sock::{CgroupSockLink, CgroupSockLinkId},
        cgroup_sock_addr::{CgroupSockAddrLink, CgroupSockAddrLinkId},
        links::{FdLink, PinnedLink},
        sock_ops::{SockOpsLink, SockOpsLinkId},
        trace_point::{TracePointLink, TracePointLinkId},
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr, ProgramError,
        SockOps, TracePoint,
    },
    Ebpf, EbpfError, EbpfLoader,
};

use crate::{
    kernel_log::KernelLog,
    policy::{compile::CompiledPolicy, Prefix},
    ring::{EventRing, RingError},
    tracefs::{self, TracefsError},
};

/// The compiled kernel programs (built by `build.rs`).
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egret"));

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("loading the kernel programs: {0} (egret needs uid 0 with CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN; docs/deploy.md)")]
    Load(#[source] EbpfError),
    #[error("program `{name}` is missing from the object")]
    MissingProgram { name: &'static str },
    #[error("map `{name}` is missing from the object")]
    MissingMap { name: &'static str },
    #[error("program `{name}`: {source}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("map `{name}`: {source}")]
    Ring {
        name: &'static str,
        source: RingError,
    },
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("writing the policy into the kernel ({what}): {source}")]
    PolicyMap {
        what: &'static str,
        source: MapError,
    },
    #[error("pinning under {path}: {source}")]
    Pin { path: String, source: io::Error },
    #[error(
        "{path} is not on a bpf filesystem and mounting bpffs on /sys/fs/bpf failed: {source}"
    )]
    Bpffs { path: String, source: nix::Error },
}

/// What happens to the programs when egret exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnExit {
    /// The programs go away with egret (also on SIGKILL): traffic flows unchecked.
    #[default]
    Detach,
    /// The socket programs stay attached, pinned under the pin path, and keep enforcing the
    /// last policy until the next egret on the same cgroup takes them over.
    Keep,
}

/// Settings the kernel programs read.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    pub ring_buffer_size: u32,
    pub udp_idle_ns: u64,
    pub on_exit: OnExit,
    /// bpffs directory for pinned links (`--pin-path`); egret uses `<pin>/cgroup-<id>/`.
    pub pin_path: PathBuf,
    /// The resolver port whose responses are captured (`--dns-port`).
    pub dns_port: u16,
    /// Bounds on answer TTLs for learned addresses (`--dns-ttl-floor`, `--dns-ttl-ceiling`).
    pub dns_ttl_floor_ns: u64,
    pub dns_ttl_ceiling_ns: u64,
    /// Copy TCP counters on egress for progress lines (`--progress-interval`).
    pub tcp_progress: bool,
    /// Follow each connection to its end, count UDP bytes (`--connection-ends on`).
    pub connection_ends: bool,
    /// Copy the first bytes of each TCP connection (`--first-bytes on`).
    pub first_bytes: bool,
    /// Where the fields of `task_struct` and its neighbours are in the running kernel (from
    /// its BTF); all zero: the programs read none (no login identity, executable path, args).
    pub offsets: agent_common::KernelOffsets,
    /// The bounded maps' sizes (`--max-tcp-connections`, `--max-udp-flows`,
    /// `--max-learned-addresses`).
    pub map_sizes: MapSizes,
    /// The most verbose diagnostics the programs write (`--log-level`, `kernel_log`).
    pub log_level: log::LevelFilter,
}

/// Entries of the kernel maps whose size the operator sets: what happens when each is full is
/// in `docs/performance.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    /// `CONNS`.
    pub tcp_connections: u32,
    /// `UDP_FLOWS` and `UDP_SOCKETS`.
    pub udp_flows: u32,
    /// `DNS_ALLOW_0` and `DNS_ALLOW_1`, each.
    pub learned_addresses: u32,
}

/// Maps userspace reads while the programs run (and after they are detached).
pub struct KernelMaps {
    pub events: EventRing,
    /// The programs' diagnostics (`kernel_log`).
    pub logs: KernelLog,
    pub lookups: KernelLookups,
    pub policy: PolicyMaps,
}

/// One complete compiled policy in the kernel.
pub struct PolicySet {
    v4: LpmTrie<MapData, PolicyAddr4, PolicyValue>,
    v6: LpmTrie<MapData, PolicyAddr6, PolicyValue>,
    scopes: HashMap<MapData, u64, u64>,
    dns_names: HashMap<MapData, u64, DnsNameValue>,
    dns_allow: HashMap<MapData, DnsAllowKey, u64>,
    domain_rules: Array<MapData, PolicyValue>,
    scope_paths: HashMap<MapData, u64, u64>,
    scope_units: HashMap<MapData, u64, u64>,
    name_gate_ports: HashMap<MapData, u16, u8>,
    exes: HashMap<MapData, ExeId, u64>,
    exe_paths: HashMap<MapData, u64, u64>,
}

impl PolicySet {
    fn clear(&mut self) -> Result<(), KernelError> {
        clear_lpm(&mut self.v4).map_err(policy_err("clearing IPv4 prefixes"))?;
        clear_lpm(&mut self.v6).map_err(policy_err("clearing IPv6 prefixes"))?;
        let old: Vec<u64> = self.scopes.keys().filter_map(Result::ok).collect();
        for id in old {
            self.scopes
                .remove(&id)
                .map_err(policy_err("clearing cgroup scopes"))?;
        }
        let old: Vec<u16> = self.name_gate_ports.keys().filter_map(Result::ok).collect();
        for port in old {
            self.name_gate_ports
                .remove(&port)
                .map_err(policy_err("clearing name gate ports"))?;
        }
        let old: Vec<ExeId> = self.exes.keys().filter_map(Result::ok).collect();
        for id in old {
            self.exes
                .remove(&id)
                .map_err(policy_err("clearing executables"))?;
        }
        let old: Vec<u64> = self.exe_paths.keys().filter_map(Result::ok).collect();
        for hash in old {
            self.exe_paths
                .remove(&hash)
                .map_err(policy_err("clearing executable paths"))?;
        }
        Ok(())
    }

    fn fill(
        &mut self,
        compiled: &CompiledPolicy,
        scope_ids: &StdHashMap<u64, u64>,
    ) -> Result<(), KernelError> {
        for (prefix, value) in &compiled.v4 {
            self.v4
                .insert(&Key::new(u32::from(prefix.len), prefix.addr), value, 0)
                .map_err(policy_err("IPv4 prefix"))?;
        }
        for (prefix, value) in &compiled.v6 {
            self.v6
                .insert(&Key::new(u32::from(prefix.len), prefix.addr), value, 0)
                .map_err(policy_err("IPv6 prefix"))?;
        }
        for (hash, bits) in &compiled.scope_paths {
            self.scope_paths
                .insert(hash, bits, 0)
                .map_err(policy_err("cgroup path"))?;
        }
        for (hash, bits) in &compiled.scope_units {
            self.scope_units
                .insert(hash, bits, 0)
                .map_err(policy_err("systemd unit"))?;
        }
        for (hash, value) in &compiled.dns_names {
            self.dns_names
                .insert(hash, value, 0)
                .map_err(policy_err("approved name"))?;
        }
        for port in &compiled.name_gate_ports {
            self.name_gate_ports
                .insert(port, 1, 0)
                .map_err(policy_err("name gate port"))?;
        }
        for (hash, bits) in &compiled.exe_paths {
            self.exe_paths
                .insert(hash, bits, 0)
                .map_err(policy_err("executable path"))?;
        }
        if compiled.has_exes() {
            for (id, bits) in crate::policy::compile::exe_ids(&compiled.scopes) {
                self.exes
                    .insert(id, bits, 0)
                    .map_err(policy_err("executable"))?;
            }
        }
        for (index, value) in compiled.domain_rules.iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            self.domain_rules
                .set(index, value, 0)
                .map_err(policy_err("domain rule"))?;
        }
        self.add_scopes(scope_ids).map(|_| ())
    }

    fn learn(&mut self, learned: &[(DnsAllowKey, u64)]) -> Result<(), KernelError> {
        for (key, value) in learned {
            self.dns_allow
                .insert(key, value, 0)
                .map_err(policy_err("learned address"))?;
        }
        Ok(())
    }

    fn add_scopes(&mut self, scope_ids: &StdHashMap<u64, u64>) -> Result<usize, KernelError> {
        let mut added = 0;
        for (id, bits) in scope_ids {
            if self.scopes.get(id, 0).ok() != Some(*bits) {
                self.scopes
                    .insert(id, bits, 0)
                    .map_err(policy_err("cgroup scope"))?;
                added += 1;
            }
        }
        Ok(added)
    }
}

/// The two policy map sets and the switch between them (see `agent-ebpf/src/policy.rs`),
/// the trusted resolvers (`dns.rs`) and the gates of held first payloads (`payload.rs`).
pub struct PolicyMaps {
    state: Array<MapData, PolicyState>,
    sets: [PolicySet; 2],
    current: PolicyState,
    resolvers: LpmTrie<MapData, [u8; 16], u8>,
    /// What `resolvers` holds.
    resolvers_now: Vec<Prefix>,
    gates: HashMap<MapData, u64, u32>,
}

/// A gate's decision (`payload.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateDecision {
    /// The first payload carried an approved name (or none where none is required).
    Pass,
    /// It did not: its packets stay dropped (and the socket is destroyed).
    Drop,
}

/// The LPM key of a resolver prefix: IPv6, or IPv4 mapped (`::ffff:a.b.c.d/96+len`).
pub fn resolver_key(prefix: &Prefix) -> Key<[u8; 16]> {
    match prefix.addr {
        std::net::IpAddr::V4(v4) => Key::new(
            96 + u32::from(prefix.len.min(32)),
            v4.to_ipv6_mapped().octets(),
        ),
        std::net::IpAddr::V6(v6) => Key::new(u32::from(prefix.len.min(128)), v6.octets()),
    }
}

fn policy_err(what: &'static str) -> impl FnOnce(MapError) -> KernelError {
    move |source| KernelError::PolicyMap { what, source }
}

/// What the pipeline writes into the policy maps the socket programs read (block mode).
/// [`PolicyMaps`] is the live one; the pipeline's unit tests record the calls instead.
pub trait PolicyKernel {
    /// Installs a whole policy (and the answer addresses it approves) in one switch.
    ///
    /// # Errors
    /// A map update failed; the policy in force is unchanged.
    fn install(
        &mut self,
        compiled: &CompiledPolicy,
        scope_ids: &StdHashMap<u64, u64>,
        learned: &[(DnsAllowKey, u64)],
    ) -> Result<(), KernelError>;

    /// Adds approved answer addresses to the live policy.
    ///
    /// # Errors
    /// A map update failed.
    fn learn(&mut self, learned: &[(DnsAllowKey, u64)]) -> Result<(), KernelError>;

    /// Adds scope bits of cgroups to the live policy; returns how many were new.
    ///
    /// # Errors
    /// A map update failed.
    fn add_scopes(&mut self, scope_ids: &StdHashMap<u64, u64>) -> Result<usize, KernelError>;

    /// Makes `prefixes` the trusted resolvers: answers from elsewhere teach nothing.
    ///
    /// # Errors
    /// A map update failed (the prefixes written so far stay).
    fn set_resolvers(&mut self, prefixes: &[Prefix]) -> Result<(), KernelError>;

    /// Decides a held first payload's gate.
    ///
    /// # Errors
    /// A map update failed.
    fn decide_gate(&mut self, cookie: u64, decision: GateDecision) -> Result<(), KernelError>;

    /// Forgets the gate of a connection that ended.
    fn forget_gate(&mut self, cookie: u64);
}

impl PolicyMaps {
    fn set_mut(&mut self, index: u32) -> &mut PolicySet {
        let [zero, one] = &mut self.sets;
        if index & 1 == 0 {
            zero
        } else {
            one
        }
    }
}

impl PolicyKernel for PolicyMaps {
    /// Installs `compiled` in the idle set and then switches to it with one map update, so
    /// every connect sees either the whole old policy or the whole new one. The set left idle
    /// is cleared at the next install, long after any program that read the old switch value
    /// has finished.
    /// `learned`: addresses the new policy's domain rules approve from answers seen before
    /// (the applications hold them in their own caches), carried over so they stay reachable.
    fn install(
        &mut self,
        compiled: &CompiledPolicy,
        scope_ids: &StdHashMap<u64, u64>,
        learned: &[(DnsAllowKey, u64)],
    ) -> Result<(), KernelError> {
        let idle = (self.current.active ^ 1) & 1;
        let set = self.set_mut(idle);
        set.clear()?;
        set.fill(compiled, scope_ids)?;
        set.learn(learned)?;
        let mode = if compiled.block {
            POLICY_MODE_BLOCK
        } else {
            POLICY_MODE_AUDIT
        };
        let rules = u32::try_from(compiled.domain_rules.len()).unwrap_or(u32::MAX);
        let PolicyState {
            active: _,
            mode: [mode0, mode1],
            domain_rules: [rules0, rules1],
            scoped,
            name_gate,
            exes,
        } = self.current;
        let bit = 1u32 << idle;
        let next = PolicyState {
            active: idle,
            mode: if idle == 0 {
                [mode, mode1]
            } else {
                [mode0, mode]
            },
            domain_rules: if idle == 0 {
                [rules, rules1]
            } else {
                [rules0, rules]
            },
            scoped: if compiled.has_scopes() {
                scoped | bit
            } else {
                scoped & !bit
            },
            name_gate: if compiled.block && !compiled.name_gate_ports.is_empty() {
                name_gate | bit
            } else {
                name_gate & !bit
            },
            exes: if compiled.block && compiled.has_exes() {
                exes | bit
            } else {
                exes & !bit
            },
        };
        self.state
            .set(0, next, 0)
            .map_err(policy_err("switching policy"))?;
        self.current = next;
        Ok(())
    }

    /// Adds learned answer addresses to the live set.
    fn learn(&mut self, learned: &[(DnsAllowKey, u64)]) -> Result<(), KernelError> {
        let active = self.current.active;
        self.set_mut(active).learn(learned)
    }

    /// Adds cgroups that appeared since the policy was installed to the live set (scope bits
    /// only ever grow for a live policy; a reload rebuilds them).
    fn add_scopes(&mut self, scope_ids: &StdHashMap<u64, u64>) -> Result<usize, KernelError> {
        let active = self.current.active;
        self.set_mut(active).add_scopes(scope_ids)
    }

    /// New prefixes go in before old ones go out: a resolver in both sets stays trusted
    /// throughout.
    fn set_resolvers(&mut self, prefixes: &[Prefix]) -> Result<(), KernelError> {
        let room = agent_common::DNS_RESOLVERS_MAX as usize;
        if prefixes.len() > room {
            log::warn!(
                "{} trusted resolvers, the kernel keeps {room}: answers from the rest are not believed",
                prefixes.len()
            );
        }
        let prefixes = prefixes.get(..room).unwrap_or(prefixes);
        for prefix in prefixes {
            if !self.resolvers_now.contains(prefix) {
                self.resolvers
                    .insert(&resolver_key(prefix), 1, 0)
                    .map_err(policy_err("trusted resolver"))?;
                self.resolvers_now.push(*prefix);
            }
        }
        let stale: Vec<Prefix> = self
            .resolvers_now
            .iter()
            .filter(|p| !prefixes.contains(p))
            .copied()
            .collect();
        for prefix in stale {
            self.resolvers
                .remove(&resolver_key(&prefix))
                .map_err(policy_err("removing a trusted resolver"))?;
            self.resolvers_now.retain(|p| *p != prefix);
        }
        Ok(())
    }

    fn decide_gate(&mut self, cookie: u64, decision: GateDecision) -> Result<(), KernelError> {
        let value = match decision {
            GateDecision::Pass => agent_common::GATE_PASS,
            GateDecision::Drop => agent_common::GATE_DROP,
        };
        // Only a gate still there: the kernel removes it once it has let the payload through.
        const BPF_EXIST: u64 = 2;
        match self.gates.insert(cookie, value, BPF_EXIST) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            Err(source) => Err(KernelError::PolicyMap {
                what: "first-payload gate",
                source,
            }),
        }
    }

    fn forget_gate(&mut self, cookie: u64) {
        let _ = self.gates.remove(&cookie);
    }
}

fn clear_lpm<K: aya::Pod, V: aya::Pod>(trie: &mut LpmTrie<MapData, K, V>) -> Result<(), MapError> {
    let keys: Vec<Key<K>> = trie.keys().filter_map(Result::ok).collect();
    for key in keys {
        trie.remove(&key)?;
    }
    Ok(())
}

/// The maps event handlers consult while the ring buffer is being drained.
pub struct KernelLookups {
    pub counters: PerCpuArray<MapData, u64>,
    pub udp_flows: HashMap<MapData, UdpFlowKey, UdpFlowValue>,
    /// Open outbound TCP connections (by socket cookie).
    pub conns: HashMap<MapData, u64, ConnState>,
}

/// What the pipeline reads from the maps the programs write: counters, UDP flows, open TCP
/// connections. [`KernelLookups`] is the live one; the pipeline's unit tests use in-memory maps.
pub trait KernelView {
    /// Sum over CPUs of one counter; 0 if it cannot be read.
    fn counter(&self, counter: Counter) -> u64;
    fn udp_flow(&self, key: &UdpFlowKey) -> Option<UdpFlowValue>;
    /// The kernel's state of an open TCP connection.
    fn conn(&self, cookie: u64) -> Option<ConnState>;
}

impl KernelView for KernelLookups {
    fn counter(&self, counter: Counter) -> u64 {
        self.counters
            .get(&(counter as u32), 0)
            .map(|values| values.iter().copied().fold(0u64, u64::saturating_add))
            .unwrap_or(0)
    }

    fn udp_flow(&self, key: &UdpFlowKey) -> Option<UdpFlowValue> {
        self.udp_flows.get(key, 0).ok()
    }

    fn conn(&self, cookie: u64) -> Option<ConnState> {
        self.conns.get(&cookie, 0).ok()
    }
}

impl KernelLookups {
    /// Starts following a connection that was open before egret (unless the kernel already
    /// follows it: a connect seen since the programs were attached wins).
    pub fn follow_existing(&mut self, cookie: u64, state: &ConnState) -> Result<bool, MapError> {
        const BPF_NOEXIST: u64 = 1;
        match self.conns.insert(cookie, state, BPF_NOEXIST) {
            Ok(()) => Ok(true),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }
}

/// The loaded, attached programs. Dropping it detaches them, except links pinned for
/// `--on-exit keep`, which stay until a later egret takes them over.
pub struct Kernel {
    _ebpf: Ebpf,
    _pinned: Vec<PinnedLink>,
    /// Where the links are pinned (`--on-exit keep`).
    pub pinned_at: Option<PathBuf>,
    /// Pinned links of an earlier egret that this one replaced.
    pub took_over: usize,
}

const CGROUP_SOCK_ADDR: [&str; 4] = [
    programs::CONNECT4,
    programs::CONNECT6,
    programs::SENDMSG4,
    programs::SENDMSG6,
];
/// The tracepoints always attached: (program, which is also the event, category).
const TRACEPOINTS: [(&str, &str); 4] = [
    (programs::CGROUP_MKDIR, "cgroup"),
    (programs::SCHED_PROCESS_EXEC, "sched"),
    (programs::TASK_NEWTASK, "task"),
    (programs::SCHED_PROCESS_EXIT, "sched"),
];

fn program_err(name: &'static str) -> impl FnOnce(ProgramError) -> KernelError {
    move |source| KernelError::Program { name, source }
}

/// A program's link as the kind that can be pinned (`--on-exit keep`).
fn pinnable<L>(name: &'static str, link: L) -> Result<FdLink, KernelError>
where
    FdLink: TryFrom<L>,
    <FdLink as TryFrom<L>>::Error: std::fmt::Display,
{
    FdLink::try_from(link).map_err(|source| KernelError::Program {
        name,
        source: ProgramError::IOError(io::Error::other(source.to_string())),
    })
}

/// Loads the programs, installs `policy`, attaches the socket hooks to `cgroup` (a cgroup v2
/// directory) and the tracepoints host-wide, takes over the pinned links of an earlier egret on
/// the same cgroup, and returns the maps.
pub fn load_and_attach(
    config: &KernelConfig,
    cgroup: &Path,
    policy: &CompiledPolicy,
    scope_ids: &StdHashMap<u64, u64>,
    resolvers: &[Prefix],
) -> Result<(Kernel, KernelMaps), KernelError> {
    // The rest is written into the object by `load`.
    let KernelConfig {
        ring_buffer_size: _,
        udp_idle_ns: _,
        on_exit,
        pin_path,
        dns_port: _,
        dns_ttl_floor_ns: _,
        dns_ttl_ceiling_ns: _,
        tcp_progress: _,
        connection_ends,
        first_bytes: _,
        offsets: _,
        map_sizes: _,
        log_level: _,
    } = config;
    raise_memlock();
    let tracefs_dir = tracefs::ensure_mounted()?;
    tracefs::check_layouts(tracefs_dir)?;
    let optional = if *connection_ends {
        usable_optional_tracepoints(tracefs_dir)
    } else {
        Vec::new()
    };

    let mut ebpf = load(config)?;
    // The kernel BTF's parse is over: its pages go back before the ring buffer is mapped.
    crate::memory::release_freed_heap();
    // Take the maps first: they stay usable after the programs are detached (final drain).
    let mut maps = take_maps(&mut ebpf)?;
    // The policy is in force before the first program is attached: no unchecked window.
    maps.policy.install(policy, scope_ids, &[])?;
    // So are the trusted resolvers: the first answer is already judged.
    maps.policy.set_resolvers(resolvers)?;

    let keep = *on_exit == OnExit::Keep;
    let mut pinned = Vec::new();
    // Tracepoints first, so the process table is fed before the first connect is seen.
    for (name, category) in TRACEPOINTS.into_iter().chain(optional) {
        // New cgroups must keep getting their scope bits while egret is down.
        let pin = keep && name == programs::CGROUP_MKDIR;
        load_attach(
            &mut ebpf,
            name,
            pin,
            &mut pinned,
            |program: &mut TracePoint| program.attach(category, name),
        )?;
    }
    let cgroup_dir = File::open(cgroup).map_err(|source| KernelError::Program {
        name: "cgroup",
        source: ProgramError::IOError(source),
    })?;
    let pin_dir = pin_path.join(format!("cgroup-{}", cgroup_id(cgroup)?));
    attach_to_cgroup(&mut ebpf, &cgroup_dir, keep, *connection_ends, &mut pinned)?;

    // Ours are attached (so nothing is unchecked in between): now retire an earlier egret's.
    let took_over = take_over(&pin_dir)?;
    let (kept, pinned_at) = if pinned.is_empty() {
        (Vec::new(), None)
    } else {
        (pin(pinned, pin_path, &pin_dir)?, Some(pin_dir))
    };
    Ok((
        Kernel {
            _ebpf: ebpf,
            _pinned: kept,
            pinned_at,
            took_over,
        },
        maps,
    ))
}

/// The optional tracepoints whose format matches what the programs read: (program, category).
fn usable_optional_tracepoints(tracefs_dir: &str) -> Vec<(&'static str, &'static str)> {
    tracefs::OPTIONAL
        .iter()
        .filter_map(|&(category, event, fields)| {
            match tracefs::check(tracefs_dir, &[(category, event, fields)]) {
                Ok(()) => Some((event, category)),
                Err(err) => {
                    log::warn!("not using tracepoint {category}:{event} ({err}): failed connects are reported less precisely");
                    None
                }
            }
        })
        .collect()
}

/// Loads the object with the settings the programs read (`KernelConfig`) written into it.
fn load(config: &KernelConfig) -> Result<Ebpf, KernelError> {
    let KernelConfig {
        ring_buffer_size,
        udp_idle_ns,
        on_exit: _,
        pin_path: _,
        dns_port,
        dns_ttl_floor_ns,
        dns_ttl_ceiling_ns,
        tcp_progress,
        connection_ends,
        first_bytes,
        offsets,
        map_sizes,
        log_level,
    } = config;
    let first_bytes = u32::from(*first_bytes);
    let wakeup_bytes = u64::from(ring_buffer_size / 4);
    let tcp_progress = u32::from(*tcp_progress);
    let conn_tracking = u32::from(*connection_ends);
    let log_level = crate::kernel_log::kernel_level(*log_level);
    EbpfLoader::new()
        // `new` has parsed the whole kernel BTF (~18 MiB of heap); the object has no CO-RE
        // relocations (test `object_needs_no_kernel_btf`), so aya would only carry it through
        // the load. Dropped now, it is not in memory with the load's own allocations.
        .btf(None)
        .override_global(globals::UDP_IDLE_NS, udp_idle_ns, true)
        .override_global(globals::WAKEUP_BYTES, &wakeup_bytes, true)
        .override_global(globals::DNS_PORT, dns_port, true)
        .override_global(globals::DNS_TTL_FLOOR_NS, dns_ttl_floor_ns, true)
        .override_global(globals::DNS_TTL_CEILING_NS, dns_ttl_ceiling_ns, true)
        .override_global(globals::TCP_PROGRESS, &tcp_progress, true)
        .override_global(globals::CONN_TRACKING, &conn_tracking, true)
        .override_global(globals::FIRST_BYTES, &first_bytes, true)
        .override_global(globals::KERNEL_OFFSETS, offsets, true)
        .override_global(globals::AYA_LOG_LEVEL, &log_level, true)
        .map_max_entries(maps::EVENTS, *ring_buffer_size)
        .map_max_entries(maps::CONNS, map_sizes.tcp_connections)
        .map_max_entries(maps::UDP_FLOWS, map_sizes.udp_flows)
        .map_max_entries(maps::UDP_SOCKETS, map_sizes.udp_flows)
        .map_max_entries(maps::DNS_ALLOW_0, map_sizes.learned_addresses)
        .map_max_entries(maps::DNS_ALLOW_1, map_sizes.learned_addresses)
        .load(PROGRAMS)
        .map_err(KernelError::Load)
}

/// The event ring buffer, mapped by egret's own reader (its data pages once, not twice).
fn event_ring(ebpf: &mut Ebpf) -> Result<EventRing, KernelError> {
    let name = maps::EVENTS;
    let ring = match take_map(ebpf, name)? {
        aya::maps::Map::RingBuf(map) => EventRing::new(map),
        _ => Err(RingError::NotRingBuffer),
    };
    ring.map_err(|source| KernelError::Ring { name, source })
}

/// Takes the maps userspace uses out of the object.
fn take_maps(ebpf: &mut Ebpf) -> Result<KernelMaps, KernelError> {
    Ok(KernelMaps {
        events: event_ring(ebpf)?,
        logs: KernelLog::take(ebpf),
        lookups: KernelLookups {
            counters: typed(ebpf, maps::COUNTERS)?,
            udp_flows: typed(ebpf, maps::UDP_FLOWS)?,
            conns: typed(ebpf, maps::CONNS)?,
        },
        policy: PolicyMaps {
            state: typed(ebpf, maps::POLICY_STATE)?,
            sets: [policy_set(ebpf, 0)?, policy_set(ebpf, 1)?],
            current: PolicyState::default(),
            resolvers: typed(ebpf, maps::TRUSTED_RESOLVERS)?,
            resolvers_now: Vec::new(),
            gates: typed(ebpf, maps::GATES)?,
        },
    })
}

/// Attaches the socket and packet programs to the cgroup. With `keep` (`--on-exit keep`), the
/// links that enforce the policy go into `pinned`.
fn attach_to_cgroup(
    ebpf: &mut Ebpf,
    cgroup: &File,
    keep: bool,
    connection_ends: bool,
    pinned: &mut Vec<(&'static str, FdLink)>,
) -> Result<(), KernelError> {
    let mode = cgroup_attach_mode();
    for name in CGROUP_SOCK_ADDR {
        load_attach(ebpf, name, keep, pinned, |program: &mut CgroupSockAddr| {
            program.attach(cgroup, mode)
        })?;
    }
    // The packet programs: DNS queries and answers (so a kept policy's learned addresses keep
    // being learned), and held first payloads, enforce too: pinned with the socket programs.
    load_attach(
        ebpf,
        programs::DNS_INGRESS,
        keep,
        pinned,
        |program: &mut CgroupSkb| program.attach(cgroup, CgroupSkbAttachType::Ingress, mode),
    )?;
    load_attach(
        ebpf,
        programs::CONN_EGRESS,
        keep,
        pinned,
        |program: &mut CgroupSkb| program.attach(cgroup, CgroupSkbAttachType::Egress, mode),
    )?;
    load_attach(
        ebpf,
        programs::SOCK_RELEASE,
        false,
        pinned,
        |program: &mut CgroupSock| program.attach(cgroup, mode),
    )?;
    // The life of each connection: not pinned, they only feed egret's own lines.
    if connection_ends {
        load_attach(
            ebpf,
            programs::SOCK_OPS,
            false,
            pinned,
            |program: &mut SockOps| program.attach(cgroup, mode),
        )?;
    }
    Ok(())
}

/// What [`load_attach`] needs of every program type; aya has them as inherent methods.
trait Attachable {
    type LinkId;
    type Link;
    fn load_program(&mut self) -> Result<(), ProgramError>;
    /// Instructions the verifier went through (its budget is one million per program).
    fn verified(&self) -> Option<u32>;
    fn take_link_of(&mut self, link_id: Self::LinkId) -> Result<Self::Link, ProgramError>;
}

macro_rules! attachable {
    ($($program:ty => $link_id:ty, $link:ty;)*) => {$(
        impl Attachable for $program {
            type LinkId = $link_id;
            type Link = $link;
            fn load_program(&mut self) -> Result<(), ProgramError> {
                self.load()
            }
            fn verified(&self) -> Option<u32> {
                self.info().ok().and_then(|info| info.verified_instruction_count())
            }
            fn take_link_of(&mut self, link_id: $link_id) -> Result<$link, ProgramError> {
                self.take_link(link_id)
            }
        }
    )*};
}

attachable! {
    TracePoint => TracePointLinkId, TracePointLink;
    CgroupSockAddr => CgroupSockAddrLinkId, CgroupSockAddrLink;
    CgroupSkb => CgroupSkbLinkId, CgroupSkbLink;
    CgroupSock => CgroupSockLinkId, CgroupSockLink;
    SockOps => SockOpsLinkId, SockOpsLink;
}

/// Loads program `name` and attaches it with `attach`. With `pin`, its link is taken from the
/// program into `pinned`, to be pinned; otherwise it goes when egret does.
fn load_attach<P: Attachable>(
    ebpf: &mut Ebpf,
    name: &'static str,
    pin: bool,
    pinned: &mut Vec<(&'static str, FdLink)>,
    attach: impl FnOnce(&mut P) -> Result<P::LinkId, ProgramError>,
) -> Result<(), KernelError>
where
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    FdLink: TryFrom<P::Link>,
    <FdLink as TryFrom<P::Link>>::Error: std::fmt::Display,
{
    let program: &mut P = program_mut(ebpf, name)?;
    program.load_program().map_err(program_err(name))?;
    if let Some(n) = program.verified() {
        log::debug!("program {name}: the verifier went through {n} instructions");
    }
    let link_id = attach(program).map_err(program_err(name))?;
    if pin {
        let link = program.take_link_of(link_id).map_err(program_err(name))?;
        pinned.push((name, pinnable(name, link)?));
    }
    Ok(())
}

/// Pins `links` in `pin_dir` (under `pin_path`, mounting bpffs there if needed).
fn pin(
    links: Vec<(&'static str, FdLink)>,
    pin_path: &Path,
    pin_dir: &Path,
) -> Result<Vec<PinnedLink>, KernelError> {
    ensure_bpffs(pin_path)?;
    fs::create_dir_all(pin_dir).map_err(|source| pin_error(pin_dir, source))?;
    let mut kept = Vec::new();
    for (name, link) in links {
        let path = pin_dir.join(name);
        let link = link
            .pin(&path)
            .map_err(|e| pin_error(&path, io::Error::other(e.to_string())))?;
        kept.push(link);
    }
    Ok(kept)
}

fn pin_error(path: &Path, source: io::Error) -> KernelError {
    KernelError::Pin {
        path: path.display().to_string(),
        source,
    }
}

fn cgroup_id(cgroup: &Path) -> Result<u64, KernelError> {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata(cgroup)
        .map(|m| m.ino())
        .map_err(|source| KernelError::Program {
            name: "cgroup",
            source: ProgramError::IOError(source),
        })
}

/// Detaches and unpins every link an earlier egret pinned in `dir`. Returns how many.
fn take_over(dir: &Path) -> Result<usize, KernelError> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut n = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let link = PinnedLink::from_pin(&path)
            .map_err(|e| pin_error(&path, io::Error::other(e.to_string())))?;
        let link = link.unpin().map_err(|source| pin_error(&path, source))?;
        drop(link); // closing the last fd detaches it
        n += 1;
    }
    let _ = fs::remove_dir(dir);
    Ok(n)
}

/// Makes sure `path` (or the directory it will be created in) is on a bpf filesystem,
/// mounting bpffs on `/sys/fs/bpf` when that is where it should live and nothing is mounted.
fn ensure_bpffs(path: &Path) -> Result<(), KernelError> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if fs_magic(existing) == Some(BPF_FS_MAGIC) {
        return Ok(());
    }
    let default = Path::new("/sys/fs/bpf");
    if path.starts_with(default) && fs_magic(default) != Some(BPF_FS_MAGIC) {
        tracefs::mount_pseudo_fs("bpf", default).map_err(|source| KernelError::Bpffs {
            path: path.display().to_string(),
            source,
        })?;
        log::info!("mounted bpffs on /sys/fs/bpf");
        return Ok(());
    }
    Err(KernelError::Pin {
        path: path.display().to_string(),
        source: io::Error::other("not on a bpf filesystem"),
    })
}

fn fs_magic(path: &Path) -> Option<i64> {
    #[expect(
        clippy::useless_conversion,
        reason = "f_type is i64 on x86_64 but narrower on other targets"
    )]
    nix::sys::statfs::statfs(path)
        .ok()
        .map(|s| i64::from(s.filesystem_type().0))
}

/// Names of the maps of policy set 0 and set 1 (`agent-ebpf/src/policy.rs`), in the order of
/// [`PolicySet`]'s fields.
const POLICY_SET_MAPS: [[&str; 11]; 2] = {
    use maps::*;
    [
        [
            POLICY_V4_0,
            POLICY_V6_0,
            SCOPES_0,
            DNS_NAMES_0,
            DNS_ALLOW_0,
            DOMAIN_RULES_0,
            SCOPE_PATHS_0,
            SCOPE_UNITS_0,
            NAME_GATE_PORTS_0,
            EXES_0,
            EXE_PATHS_0,
        ],
        [
            POLICY_V4_1,
            POLICY_V6_1,
            SCOPES_1,
            DNS_NAMES_1,
            DNS_ALLOW_1,
            DOMAIN_RULES_1,
            SCOPE_PATHS_1,
            SCOPE_UNITS_1,
            NAME_GATE_PORTS_1,
            EXES_1,
            EXE_PATHS_1,
        ],
    ]
};

/// Takes the maps of one policy set out of the object.
fn policy_set(ebpf: &mut Ebpf, set: usize) -> Result<PolicySet, KernelError> {
    let [v4, v6, scopes, dns_names, dns_allow, domain_rules, scope_paths, scope_units, gate_ports, exes, exe_paths] =
        POLICY_SET_MAPS
            .get(set)
            .copied()
            .ok_or(KernelError::MissingMap { name: "policy set" })?;
    Ok(PolicySet {
        v4: typed(ebpf, v4)?,
        v6: typed(ebpf, v6)?,
        scopes: typed(ebpf, scopes)?,
        dns_names: typed(ebpf, dns_names)?,
        dns_allow: typed(ebpf, dns_allow)?,
        domain_rules: typed(ebpf, domain_rules)?,
        scope_paths: typed(ebpf, scope_paths)?,
        scope_units: typed(ebpf, scope_units)?,
        name_gate_ports: typed(ebpf, gate_ports)?,
        exes: typed(ebpf, exes)?,
        exe_paths: typed(ebpf, exe_paths)?,
    })
}

/// Takes a map out of the object as its typed userspace handle.
fn typed<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KernelError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    T::try_from(take_map(ebpf, name)?).map_err(|source| KernelError::Map { name, source })
}

/// egret must coexist with other cgroup programs (systemd's, a CNI's, another egret's).
/// From 5.7 aya attaches with a BPF link, which is always multi-attach and whose
/// `link_create` rejects the `BPF_F_ALLOW_MULTI` flag, so the flag-free mode is the one that
/// means "multiple" there; older kernels use `BPF_PROG_ATTACH` and need the flag.
fn cgroup_attach_mode() -> CgroupAttachMode {
    match aya::util::KernelVersion::current() {
        Ok(version) if version >= aya::util::KernelVersion::new(5, 7, 0) => {
            CgroupAttachMode::Single
        }
        _ => CgroupAttachMode::AllowMultiple,
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, KernelError> {
    ebpf.take_map(name).ok_or(KernelError::MissingMap { name })
}

fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, KernelError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or(KernelError::MissingProgram { name })?;
    program.try_into().map_err(program_err(name))
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK. Raising it can fail (no
/// CAP_SYS_RESOURCE) and is not needed on newer kernels, so failure is only logged.
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to an initialised rlimit.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if ret != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on kernels >= 5.11",
            io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};

    use super::*;

    /// The maps, programs and globals of the embedded object, from its symbol table: a map is
    /// a symbol in the `maps` section, a program a function outside `.text` (helpers the
    /// programs call live there), a global a data symbol in `.rodata`, `.data` or `.bss`.
    fn object_names() -> [BTreeSet<String>; 3] {
        let file = object::File::parse(PROGRAMS).unwrap();
        let [mut maps, mut programs, mut globals] = [(); 3].map(|()| BTreeSet::new());
        for symbol in file.symbols().filter(|symbol| symbol.is_global()) {
            let Some(index) = symbol.section_index() else {
                continue;
            };
            let section = file.section_by_index(index).unwrap();
            let name = symbol.name().unwrap().to_owned();
            let list = match (symbol.kind(), section.name().unwrap()) {
                (_, "maps") => &mut maps,
                (SymbolKind::Text, section) if !section.starts_with(".text") => &mut programs,
                (SymbolKind::Data, ".rodata" | ".data" | ".bss") => &mut globals,
                _ => continue,
            };
            list.insert(name);
        }
        [maps, programs, globals]
    }

    fn listed(names: &[&str]) -> BTreeSet<String> {
        let set: BTreeSet<String> = names.iter().map(|name| (*name).to_owned()).collect();
        assert_eq!(set.len(), names.len(), "a name is listed twice: {names:?}");
        set
    }

    /// The object has no CO-RE (BTF) relocations, so loading it needs no kernel BTF (`load`
    /// gives aya none). The `.BTF.ext` header (linux `Documentation/bpf/btf.rst`): magic,
    /// version, flags, `hdr_len`, then offset and length of the function, line and (when
    /// `hdr_len` >= 32) CO-RE relocation sections.
    #[test]
    fn object_needs_no_kernel_btf() {
        let file = object::File::parse(PROGRAMS).unwrap();
        let Some(ext) = file.section_by_name(".BTF.ext") else {
            return;
        };
        let data = ext.data().unwrap();
        let word = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
        assert_eq!(u16::from_le_bytes([data[0], data[1]]), 0xeb9f, "magic");
        if word(4) >= 32 {
            assert_eq!(
                word(28),
                0,
                "the object has CO-RE relocations: give aya the kernel BTF"
            );
        }
    }

    /// `agent_common::names` and the kernel crate's identifiers name the same things: renaming
    /// a map, program or global on one side only fails here, not at load time on a host.
    #[test]
    fn names_match_the_object() {
        let [maps_found, programs_found, globals_found] = object_names();
        assert_eq!(maps_found, listed(maps::ALL), "maps: object vs names::maps");
        assert_eq!(
            programs_found,
            listed(programs::ALL),
            "programs: object vs names::programs"
        );
        assert_eq!(
            globals_found,
            listed(globals::ALL),
            "globals: object vs names::globals"
        );
    }
}
