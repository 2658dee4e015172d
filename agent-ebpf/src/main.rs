//! egret's kernel programs, built for `bpfel-unknown-none` by `agent/build.rs` (aya-build) and
//! loaded by `agent/src/kernel.rs`. Userspace finds every map, program and global below by
//! the names in `agent_common::names` (a test in `kernel.rs` checks them against the object).
//!
//! Programs, by module:
//! - [`socket`]: `connect4`/`connect6` (`cgroup/connect4|6`), every `connect()` on an inet
//!   socket; `sendmsg4`/`sendmsg6` (`cgroup/sendmsg4|6`), unconnected UDP aggregated per
//!   (socket, destination) flow, one event per new flow; `sock_release`
//!   (`cgroup/sock_release`), a socket closed. The socket programs refuse (EPERM) what the
//!   block-mode policy does not approve; everything else only records.
//! - [`process`]: `sched_process_exec`, `task_newtask`, `sched_process_exit`: the process
//!   table's life cycle, host-wide; each exec carries what the new image runs (its file's
//!   identity and walked path, its arguments) and each exec and fork the task's identity.
//! - [`task`] (no program of its own): reads of `task_struct` and its neighbours at the
//!   offsets userspace found in the kernel's BTF: login uid, session, users, session leader,
//!   terminal, the executable's identity and path, the new image's arguments.
//! - [`conn`]: `sock_ops`, `tcp_receive_reset`, `inet_sk_error_report`, `sys_exit_connect`:
//!   the life of each outbound TCP connection to its end; UDP bytes per flow, TCP progress.
//! - [`skb`]: `conn_egress` (`cgroup_skb/egress`) and `dns_ingress` (`cgroup_skb/ingress`),
//!   one program per direction that hands each packet to `conn` (UDP bytes, TCP progress),
//!   `payload` (first bytes, held payloads: the only packet it may drop) and `dns`.
//! - [`dns`] (no program of its own): queries remembered on egress; answers on ingress
//!   believed only from a trusted resolver to the socket that asked, copied to userspace and,
//!   in block mode, learned into the policy before the application sees them.
//! - [`payload`] (no program of its own): the first bytes each way of each followed TCP
//!   connection copied to userspace; a gated connection's first payload held until userspace
//!   has checked its name.
//! - [`policy`]: `cgroup_mkdir` (tracepoint): new cgroups reported and given their policy scope;
//!   (called by `process` on each exec) an exec'd file given the scope of the `processes:`
//!   selectors its path matches.
//!
//! Maps (each module's doc says what they hold and who reads them): [`shared`] has `EVENTS`
//! (the ring buffer every event goes to), `COUNTERS`, `UDP_FLOWS` and aya-log's `AYA_LOGS`
//! (the programs' diagnostics, `debug` level: a failed map update, a refused operation); [`socket`] has
//! `UDP_SOCKETS`; [`conn`] has `CONNS`, `CONNECTING` and `LAST_SK_ERROR`; [`dns`] has
//! `NAME_SCRATCH`, `DIGEST_SCRATCH`, `DNS_QUERIES`, `DNS_SENDS` and `TRUSTED_RESOLVERS`; [`payload`] has
//! `GATES`; [`policy`] has `POLICY_STATE`, `PATH_SCRATCH` and, once per policy set (`_0`,
//! `_1`), `POLICY_V4`, `POLICY_V6`, `SCOPES`, `SCOPE_PATHS`, `SCOPE_UNITS`, `DNS_NAMES`,
//! `DNS_ALLOW`, `DOMAIN_RULES`, `NAME_GATE_PORTS`, `EXES` and `EXE_PATHS`.
//!
//! Sizes userspace sets at load time (`EbpfLoader::map_max_entries`): `EVENTS`
//! (`--ring-buffer-size`), `CONNS` (`--max-tcp-connections`), `UDP_FLOWS` and `UDP_SOCKETS`
//! (`--max-udp-flows`), `DNS_ALLOW_0/1` (`--max-learned-addresses`); the sizes written below are
//! the defaults. These are LRU maps that evict in silence: what an eviction costs, and where
//! userspace detects and counts it, is in each module's doc and `docs/performance.md` ("Bounded
//! kernel maps"). No eviction ever changes a verdict to allowed.
//!
//! Globals userspace sets at load time: `WAKEUP_BYTES` and aya-log's `AYA_LOG_LEVEL` (from
//! `--log-level`) (`shared`), `UDP_IDLE_NS` (`socket`),
//! `CONN_TRACKING`, `TCP_PROGRESS` (`conn`), `DNS_PORT`, `DNS_TTL_FLOOR_NS`,
//! `DNS_TTL_CEILING_NS` (`dns`), `FIRST_BYTES` (`payload`), `KERNEL_OFFSETS` (`task`).
//!
//! Module imports, all one way (no cycle): every hook module uses [`shared`], which uses none
//! of them; [`skb`] uses [`conn`], [`dns`] and [`payload`]; [`socket`] uses [`policy`],
//! [`conn`], [`payload`] and [`task`]; [`payload`] uses [`conn`]; [`dns`] uses [`policy`];
//! [`process`] uses [`policy`] and [`task`]; [`policy`] uses [`task`]; [`conn`] uses only
//! [`shared`]; [`task`] uses nothing of the crate.
#![no_std]
#![no_main]
// `atomic_xadd`: the BPF target's core has no `AtomicU64::fetch_add` (see `shared::atomic_add`).
#![feature(core_intrinsics)]
// `asm!` barriers keep verifier-visible bounds checks (dns.rs).
#![feature(asm_experimental_arch)]
#![expect(
    internal_features,
    reason = "atomic_xadd is the only way to an atomic add on bpf"
)]

mod conn;
mod dns;
mod payload;
mod policy;
mod process;
mod shared;
mod skb;
mod socket;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible: `bpf_probe_read_user_str` and friends are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
