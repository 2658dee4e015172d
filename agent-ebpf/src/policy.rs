//! Block-mode policy: its maps, its verdict on the connect/sendmsg path, and the cgroup hook
//! that keeps its cgroup scopes current.
//!
//! Two complete map sets (0 and 1) hold compiled policies; `POLICY_STATE` says which is live.
//! Userspace (`agent/src/kernel.rs`, `PolicyMaps::install`) fills the idle set and then flips
//! `active` with one map update, so a reload never exposes a half-written policy: every call
//! sees either the old or the new one.
//!
//! An address is looked up in the family's LPM trie; the longest matching prefix carries every
//! entry (port range, protocols, cgroup scope) of itself and of all shorter prefixes that
//! contain it, so one lookup decides. Scoped entries need the caller's cgroup mask: the OR of
//! `SCOPES[id]` over the caller's cgroup and its ancestors, computed only when needed. An
//! address no prefix approves may still have been learned from an approved DNS answer (`dns`
//! calls [`learn`]): `DNS_ALLOW` holds it per domain rule, `DOMAIN_RULES` says what each rule
//! approves.
//!
//! Program: `cgroup_mkdir` (`cgroup:cgroup_mkdir` tracepoint, host-wide): tells userspace about
//! every new cgroup v2 directory (`CgroupMkdir`: a container's identity is fetched from its
//! runtime early), and gives it, before `mkdir()` returns, the scope bits its path and name
//! earn, so no process can be in it without them.
//!
//! Maps (each `_0`/`_1` pair is one map per set; all are written by userspace, the kernel only
//! reads them unless said otherwise):
//! - `POLICY_STATE` (array of one [`PolicyState`]): the live set, and per set its mode, number
//!   of domain rules and whether it has scoped entries.
//! - `POLICY_V4_*`/`POLICY_V6_*` (LPM tries, prefix → [`PolicyValue`]): the address rules.
//! - `SCOPES_*` (hash, cgroup id → scope bits): the cgroups scoped rules select, and below
//!   them; `cgroup_mkdir` adds new cgroups.
//! - `SCOPE_PATHS_*`/`SCOPE_UNITS_*` (hash, path hash / last-component hash → scope bits):
//!   what `cgroup_mkdir` matches a new cgroup against (`cgroups:`, exact `systemd_units:`).
//! - `DNS_NAMES_*` (hash, name hash → [`DnsNameValue`]): approved names; `dns` looks up the
//!   question of each answer and its parent domains.
//! - `DNS_ALLOW_*` (LRU hash, (netns, address, domain rule) → expiry): addresses learned from
//!   approved answers, written by `dns` (and by userspace on a reload, carried over). Sized at
//!   load (`--max-learned-addresses`); when full one of the least recently used (the LRU is
//!   approximate) is forgotten and a connection to it is refused, never allowed. Userspace
//!   counts such refusals (the policy approves the connection by the name its address was
//!   learned for: `learned_addresses_evicted`); nothing is counted here.
//! - `DOMAIN_RULES_*` (array, domain rule → [`PolicyValue`]): each domain rule's ports,
//!   protocols and scopes.
//! - `NAME_GATE_PORTS_*` (hash, port → 1): the policy's `name_gate` ports.
//! - `EXES_*` (hash, executable file identity → scope bits): the files `processes:` selectors
//!   approve; written by userspace (the files the selectors match at install) and by
//!   [`on_exec`] (`process` calls it on each exec). The identity carries the inode generation,
//!   so a stale entry (a file replaced since) approves no new file that reuses its inode
//!   number. Entries go only with a policy install; when the map is full an exec's entry is
//!   refused and counted (`Counter::ExeUpdateFailed`): that file stays unapproved.
//! - `EXE_PATHS_*` (hash, path or directory-pattern hash → scope bits): what [`on_exec`]
//!   matches an exec'd file's path against.
//! - `PATH_SCRATCH` (per-CPU array of one): room for a new cgroup's path. Kernel-only.
//!
//! Uses `shared` and `task`.

use core::ptr::addr_of_mut;

use agent_common::{
    dns::NAME_HASH_SEED,
    exe_hash_step, path_hash_step,
    task::{
        EXEC_FLAG_EXE_FOREIGN_NS, EXEC_FLAG_EXE_INTERNAL, EXEC_FLAG_EXE_PATH_CUT,
        EXEC_FLAG_NO_OFFSETS, EXE_DEPTH, EXE_NAME_LEN,
    },
    CgroupMkdirEvent, Counter, DnsAllowKey, DnsNameValue, EventKind, ExeId, ExecEvent, PolicyAddr4,
    PolicyAddr6, PolicyState, PolicyValue, AF_INET, AF_INET6, CGROUP_PATH_HASH_MAX, DNS_ALLOW_MAX,
    DNS_NAMES_MAX, DNS_RULES_MAX, EXES_MAX, EXE_HASH_BELOW, EXE_HASH_COMPONENT, EXE_HASH_IN,
    EXE_PATHS_MAX, NAME_GATE_PORTS_MAX, POLICY_CGROUPS_MAX, POLICY_CGROUP_LEVELS,
    POLICY_ENTRIES_MAX, POLICY_MODE_BLOCK, POLICY_PREFIXES_MAX, PROTO_OTHER, PROTO_TCP, PROTO_UDP,
    VERDICT_ALLOWED, VERDICT_BLOCKED, VERDICT_LEARNED, VERDICT_NAME_GATE, VERDICT_NONE,
};
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::generated::{bpf_get_current_ancestor_cgroup_id, bpf_probe_read_kernel_str},
    macros::{map, tracepoint},
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap, LruHashMap, PerCpuArray,
    },
    programs::TracePointContext,
    EbpfContext as _,
};

use crate::{
    shared::{emit, fail, now_ns, opaque, v4_in_16, Dest, Origin},
    task,
};

#[map]
static POLICY_STATE: Array<PolicyState> = Array::with_max_entries(1, 0);

/// Declares one policy map twice: `$zero` for set 0, `$one` for set 1.
macro_rules! per_set {
    ($(#[$doc:meta])* $zero:ident, $one:ident: $map:ty = $new:expr;) => {
        $(#[$doc])*
        #[map]
        static $zero: $map = $new;
        $(#[$doc])*
        #[map]
        static $one: $map = $new;
    };
}

per_set! {
    /// IPv4 prefix → the entries that approve it.
    POLICY_V4_0, POLICY_V4_1: LpmTrie<PolicyAddr4, PolicyValue> =
        LpmTrie::with_max_entries(POLICY_PREFIXES_MAX, BPF_F_NO_PREALLOC);
}
per_set! {
    /// IPv6 prefix → the entries that approve it.
    POLICY_V6_0, POLICY_V6_1: LpmTrie<PolicyAddr6, PolicyValue> =
        LpmTrie::with_max_entries(POLICY_PREFIXES_MAX, BPF_F_NO_PREALLOC);
}
per_set! {
    /// cgroup id → scope bits of the selectors it (and everything below it) satisfies.
    SCOPES_0, SCOPES_1: HashMap<u64, u64> = HashMap::with_max_entries(POLICY_CGROUPS_MAX, 0);
}
per_set! {
    /// Hash of a whole cgroup path → scope bits (`cgroups:` selectors), for `cgroup_mkdir`.
    SCOPE_PATHS_0, SCOPE_PATHS_1: HashMap<u64, u64> =
        HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);
}
per_set! {
    /// Hash of a cgroup's last path component → scope bits (exact `systemd_units:` names).
    SCOPE_UNITS_0, SCOPE_UNITS_1: HashMap<u64, u64> =
        HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);
}
per_set! {
    /// Approved names, by hash: which domain rules approve the name exactly / everything below.
    DNS_NAMES_0, DNS_NAMES_1: HashMap<u64, DnsNameValue> =
        HashMap::with_max_entries(DNS_NAMES_MAX, BPF_F_NO_PREALLOC);
}
per_set! {
    /// Learned addresses: (netns, address, domain rule) → until when the rule approves it.
    DNS_ALLOW_0, DNS_ALLOW_1: LruHashMap<DnsAllowKey, u64> =
        LruHashMap::with_max_entries(DNS_ALLOW_MAX, 0);
}
per_set! {
    /// Domain rule i's (ports, protocols, scopes) entries.
    DOMAIN_RULES_0, DOMAIN_RULES_1: Array<PolicyValue> =
        Array::with_max_entries(DNS_RULES_MAX as u32, 0);
}

per_set! {
    /// An executable file's identity (device, inode, generation) → the scope bits of the
    /// `processes:` selectors its path matches. Written by userspace (every file matching at
    /// install) and by [`on_exec`] (a file exec'd under a matching path in the host's mount
    /// namespace, so a binary replaced by an upgrade is approved from its first run).
    EXES_0, EXES_1: HashMap<ExeId, u64> = HashMap::with_max_entries(EXES_MAX, BPF_F_NO_PREALLOC);
}
per_set! {
    /// Hash of an executable's whole path (`/usr/bin/curl`), or of a directory followed by
    /// `/*` (its files) or `/**` (everything below it) → scope bits, for [`on_exec`].
    EXE_PATHS_0, EXE_PATHS_1: HashMap<u64, u64> =
        HashMap::with_max_entries(EXE_PATHS_MAX, BPF_F_NO_PREALLOC);
}

per_set! {
    /// `name_gate` ports → 1: TCP connects there go ahead and their first payload is judged.
    NAME_GATE_PORTS_0, NAME_GATE_PORTS_1: HashMap<u16, u8> =
        HashMap::with_max_entries(NAME_GATE_PORTS_MAX, BPF_F_NO_PREALLOC);
}

/// Scratch for the path of a new cgroup.
#[map]
static PATH_SCRATCH: PerCpuArray<[u8; CGROUP_PATH_HASH_MAX + 1]> =
    PerCpuArray::with_max_entries(1, 0);

/// Set 0's or set 1's instance of a policy map.
#[inline(always)]
fn pick<M>(set: u32, zero: &'static M, one: &'static M) -> &'static M {
    if set == 0 {
        zero
    } else {
        one
    }
}

// ---- The verdict (connect4/6, sendmsg4/6) ----

/// The verdict for a connection or datagram to `dest`: [`VERDICT_NONE`] in audit mode, else
/// [`VERDICT_ALLOWED`], [`VERDICT_BLOCKED`], or for TCP [`VERDICT_LEARNED`] (approved only
/// through an address learned from an approved name) or [`VERDICT_NAME_GATE`] (not approved,
/// but on a `name_gate` port): those two go ahead with their first payload held (`payload`).
#[inline(always)]
pub(crate) fn evaluate(dest: &Dest) -> u32 {
    let Some(state) = POLICY_STATE.get(0) else {
        return VERDICT_NONE;
    };
    let set = state.active & 1;
    if !in_block_mode(state, set) {
        return VERDICT_NONE;
    }
    // IPv4-mapped IPv6 destinations are IPv4 destinations.
    let (family, addr) = match (dest.family, mapped_v4(&dest.addr)) {
        (AF_INET, _) => (
            AF_INET,
            [dest.addr[0], dest.addr[1], dest.addr[2], dest.addr[3]],
        ),
        (_, Some(v4)) => (AF_INET, v4),
        _ => (AF_INET6, [0; 4]),
    };
    let value = if family == AF_INET {
        pick(set, &POLICY_V4_0, &POLICY_V4_1).get(&Key::new(32, addr))
    } else {
        pick(set, &POLICY_V6_0, &POLICY_V6_1).get(&Key::new(128, dest.addr))
    };
    let proto = protocol_bit(dest);
    // The caller's scope bits (its cgroups', its executable's), only when the policy has
    // scoped rules.
    let mut cgroups = if state.scoped & (1 << set) != 0 {
        cgroup_mask(set)
    } else {
        0
    };
    if state.exes & (1 << set) != 0 {
        cgroups |= exe_mask(set);
    }
    if let Some(value) = value {
        if approves(value, dest.port, proto, cgroups) {
            return VERDICT_ALLOWED;
        }
    }
    // Addresses learned from approved DNS answers (domain rules).
    let rules = state.domain_rules.get(set as usize).copied().unwrap_or(0);
    if rules != 0 {
        let addr = if family == AF_INET {
            v4_in_16(addr)
        } else {
            dest.addr
        };
        let key = allow_key(dest.netns, family, addr);
        if learned_approves(set, key, rules, dest.port, proto, cgroups) {
            // An address may serve many names: a TCP connection's first payload must carry an
            // approved one if it carries any.
            return if proto == PROTO_TCP {
                VERDICT_LEARNED
            } else {
                VERDICT_ALLOWED
            };
        }
    }
    if proto == PROTO_TCP && state.name_gate & (1 << set) != 0 {
        let ports = pick(set, &NAME_GATE_PORTS_0, &NAME_GATE_PORTS_1);
        // SAFETY: a plain value.
        if unsafe { ports.get(&dest.port) }.is_some() {
            return VERDICT_NAME_GATE;
        }
    }
    VERDICT_BLOCKED
}

/// Protocol bit of a socket, from its protocol (or its type when the protocol is 0).
#[inline(always)]
fn protocol_bit(dest: &Dest) -> u8 {
    match (dest.protocol, dest.sock_type) {
        (6, _) | (0, 1) => PROTO_TCP,
        (17, _) | (0, 2) => PROTO_UDP,
        _ => PROTO_OTHER,
    }
}

/// OR of the scope bits of the caller's cgroup and all its ancestors.
#[inline(always)]
fn cgroup_mask(set: u32) -> u64 {
    let scopes = pick(set, &SCOPES_0, &SCOPES_1);
    let mut mask = 0u64;
    let mut level = 0;
    while level < POLICY_CGROUP_LEVELS {
        // SAFETY: helper with a scalar argument.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 {
            break;
        }
        // SAFETY: a plain `u64`, read once.
        if let Some(bits) = unsafe { scopes.get(&id) } {
            mask |= *bits;
        }
        level += 1;
    }
    mask
}

/// The scope bits of the caller's executable file (`processes:` selectors).
#[inline(always)]
fn exe_mask(set: u32) -> u64 {
    let Some(id) = task::current_exe_id() else {
        return 0;
    };
    // SAFETY: a plain `u64`, copied out.
    unsafe { pick(set, &EXES_0, &EXES_1).get(&id) }
        .copied()
        .unwrap_or(0)
}

/// `true` when some entry of `value` approves this port and protocol for a caller whose
/// cgroup carries the scope bits `cgroups`.
#[inline(always)]
fn approves(value: &PolicyValue, port: u16, proto: u8, cgroups: u64) -> bool {
    let count = value.count as usize;
    let mut i = 0;
    while i < POLICY_ENTRIES_MAX {
        if i >= count {
            break;
        }
        let Some(entry) = value.entries.get(i) else {
            break;
        };
        if port >= entry.port_lo
            && port <= entry.port_hi
            && entry.protocols & proto != 0
            && cgroups & entry.scopes == entry.scopes
        {
            return true;
        }
        i += 1;
    }
    false
}

/// The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
#[inline(always)]
fn mapped_v4(addr: &[u8; 16]) -> Option<PolicyAddr4> {
    let mut i = 0;
    while i < 10 {
        if addr.get(i).copied() != Some(0) {
            return None;
        }
        i += 1;
    }
    if addr[10] != 0xff || addr[11] != 0xff {
        return None;
    }
    Some([addr[12], addr[13], addr[14], addr[15]])
}

/// Block mode, after the prefix tries did not approve: does a learned answer approve `key`'s
/// address for this port, protocol and caller? `rules` is the live policy's domain rule count.
#[inline(always)]
fn learned_approves(
    set: u32,
    mut key: DnsAllowKey,
    rules: u32,
    port: u16,
    proto: u8,
    cgroups: u64,
) -> bool {
    let learned = pick(set, &DNS_ALLOW_0, &DNS_ALLOW_1);
    let domain_rules = pick(set, &DOMAIN_RULES_0, &DOMAIN_RULES_1);
    let now = now_ns();
    let mut i = 0u32;
    while i < DNS_RULES_MAX as u32 {
        if i >= rules {
            break;
        }
        key.rule = i as u8;
        // SAFETY: a plain `u64`, copied out.
        let expires = unsafe { learned.get(&key) }.copied().unwrap_or(0);
        if expires > now {
            if let Some(rule) = domain_rules.get(i) {
                if approves(rule, port, proto, cgroups) {
                    return true;
                }
            }
        }
        i += 1;
    }
    false
}

// ---- What the DNS hook needs (dns_ingress) ----

/// The live set when the live policy is in block mode.
#[inline(always)]
pub(crate) fn block_set() -> Option<u32> {
    let state = POLICY_STATE.get(0)?;
    let set = state.active & 1;
    in_block_mode(state, set).then_some(set)
}

/// Whether `set` holds a block-mode policy. An index into `POLICY_STATE`'s per-set arrays,
/// not a `pick`: the verifier follows a pointer picked into the map value at far more cost.
#[inline(always)]
fn in_block_mode(state: &PolicyState, set: u32) -> bool {
    state.mode.get(set as usize) == Some(&POLICY_MODE_BLOCK)
}

/// The approved-names entry for a name hash in `set`.
#[inline(always)]
pub(crate) fn dns_name(set: u32, hash: u64) -> Option<DnsNameValue> {
    // SAFETY: a plain value, copied out.
    unsafe { pick(set, &DNS_NAMES_0, &DNS_NAMES_1).get(&hash) }.copied()
}

/// The `DNS_ALLOW` key of an address in a namespace; the domain rule is filled in per lookup.
#[inline(always)]
pub(crate) fn allow_key(netns: u64, family: u16, addr: [u8; 16]) -> DnsAllowKey {
    DnsAllowKey {
        netns,
        family,
        rule: 0,
        _pad: [0; 5],
        addr,
    }
}

/// Approves `key`'s address for each of `mask`'s domain rules until `expires`. One map entry
/// per rule keeps every iteration's verifier state identical (no path explosion).
pub(crate) fn learn(set: u32, mut key: DnsAllowKey, mask: u32, expires: u64) {
    let learned = pick(set, &DNS_ALLOW_0, &DNS_ALLOW_1);
    let mut i = 0u32;
    while i < DNS_RULES_MAX as u32 {
        key.rule = i as u8;
        if mask & (1 << i) != 0 {
            match learned.get_ptr_mut(&key) {
                // SAFETY: a live map value; a concurrent update only ever raises it.
                Some(old) => unsafe {
                    if *old < expires {
                        *old = expires;
                    }
                },
                None => {
                    let _ = learned.insert(&key, &expires, 0);
                }
            }
        }
        i += 1;
    }
}

// ---- Executables (sched_process_exec) ----

/// An exec: when the executable's path (as the kernel walked it up to the root of the host's
/// mount namespace, by a task in that namespace) matches a `processes:` selector of a
/// block-mode set, its file identity earns that selector's scope bits in the set, before the
/// new program runs. A path walked in another namespace (a file reached through
/// `/proc/PID/root`, or an fd passed from a namespace its owner mounted) names another file
/// than the policy's path and approves nothing.
#[inline(always)]
pub(crate) fn on_exec(event: &ExecEvent) {
    let Some(state) = POLICY_STATE.get(0) else {
        return;
    };
    let host = task::host_mount_namespace();
    if state.exes & 3 == 0
        || event.flags
            & (EXEC_FLAG_EXE_PATH_CUT
                | EXEC_FLAG_EXE_INTERNAL
                | EXEC_FLAG_NO_OFFSETS
                | EXEC_FLAG_EXE_FOREIGN_NS)
            != 0
        || host == 0
        || event.exe_mnt_ns != host
        || !task::in_host_mount_namespace()
    {
        return;
    }
    let depth = event.exe_depth as usize;
    if depth == 0 || depth > EXE_DEPTH {
        return;
    }
    let mut bits = [0u64; 2];
    let mut hash = NAME_HASH_SEED;
    // From the root down: the names are stored from the file up, each zero-padded.
    let mut level = 0;
    while level < EXE_DEPTH {
        if level >= depth {
            break;
        }
        // Hidden from LLVM, so the bound check below stays where the verifier needs it.
        let index = opaque((depth - 1 - level) as u64) as usize;
        if index >= EXE_DEPTH {
            return;
        }
        let Some(name) = event.exe_names.get(index) else {
            return;
        };
        // Every directory above the file: its `/**` selectors; the file's own: `/*` too.
        exe_lookup(state, &mut bits, exe_hash_step(hash, EXE_HASH_BELOW));
        if index == 0 {
            exe_lookup(state, &mut bits, exe_hash_step(hash, EXE_HASH_IN));
        }
        hash = exe_hash_step(hash, EXE_HASH_COMPONENT);
        let mut word = 0;
        while word < EXE_NAME_LEN / 8 {
            // SAFETY: `word * 8 + 8 <= EXE_NAME_LEN`: inside the slot; unaligned-safe read.
            let w = unsafe { (name.as_ptr().add(word * 8) as *const u64).read_unaligned() };
            hash = exe_hash_step(hash, u64::from_le(w));
            word += 1;
        }
        level += 1;
    }
    exe_lookup(state, &mut bits, hash);
    let id = event.exe;
    if bits[0] != 0 {
        if let Err(error) = EXES_0.insert(&id, &bits[0], 0) {
            fail(Counter::ExeUpdateFailed, "EXES", error);
        }
    }
    if bits[1] != 0 {
        if let Err(error) = EXES_1.insert(&id, &bits[1], 0) {
            fail(Counter::ExeUpdateFailed, "EXES", error);
        }
    }
}

/// ORs into `bits[set]` what `hash` earns in each set that has executable selectors.
#[inline(always)]
fn exe_lookup(state: &PolicyState, bits: &mut [u64; 2], hash: u64) {
    if state.exes & 1 != 0 {
        // SAFETY: a plain `u64`, copied out.
        bits[0] |= unsafe { EXE_PATHS_0.get(&hash) }.copied().unwrap_or(0);
    }
    if state.exes & 2 != 0 {
        // SAFETY: a plain `u64`, copied out.
        bits[1] |= unsafe { EXE_PATHS_1.get(&hash) }.copied().unwrap_or(0);
    }
}

// ---- cgroup_mkdir ----

/// `cgroup/cgroup_mkdir`: a new cgroup v2 directory gets the scope bits its path and name earn.
#[tracepoint]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    let _ = on_mkdir(&ctx);
    0
}

fn on_mkdir(ctx: &TracePointContext) -> Option<()> {
    // Offsets from cgroup/cgroup_mkdir/format (root, id, path); unlike the other tracepoints',
    // they are not checked at start-up.
    // SAFETY: reads of the tracepoint's fixed fields.
    let (root, id, data_loc) = unsafe {
        (
            ctx.read_at::<i32>(8).ok()?,
            ctx.read_at::<u64>(16).ok()?,
            ctx.read_at::<u32>(24).ok()?,
        )
    };
    if root != 0 {
        return None; // a cgroup v1 hierarchy
    }
    let off = (data_loc & 0xffff) as usize;
    // Tell userspace first (a container's identity is fetched from its runtime).
    emit(
        EventKind::CgroupMkdir,
        Origin::CurrentTask,
        |event: *mut CgroupMkdirEvent| {
            // SAFETY: a reservation of a `CgroupMkdirEvent`; the path is read as a bounded
            // string from the tracepoint's dynamic field.
            unsafe {
                (*event).id = id;
                (*event)._pad = 0;
                let path = addr_of_mut!((*event).path) as *mut u8;
                let n = bpf_probe_read_kernel_str(
                    path.cast(),
                    (CGROUP_PATH_HASH_MAX + 1) as u32,
                    (ctx.as_ptr() as *const u8).add(off).cast(),
                );
                (*event).path_len = if n > 0 { n as u32 - 1 } else { 0 };
            }
        },
    );
    let state = POLICY_STATE.get(0)?;
    let set = state.active & 1;
    if state.scoped & (1 << set) == 0 {
        return None;
    }
    let buf = PATH_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, used only by this invocation.
    let buf = unsafe { &mut *buf };
    // SAFETY: the tracepoint's dynamic field, read as a bounded string.
    let n = unsafe {
        bpf_probe_read_kernel_str(
            buf.as_mut_ptr().cast(),
            buf.len() as u32,
            (ctx.as_ptr() as *const u8).add(off).cast(),
        )
    };
    if n <= 1 {
        return None;
    }
    let mut whole = NAME_HASH_SEED;
    let mut last = NAME_HASH_SEED;
    let mut i = 0;
    while i < CGROUP_PATH_HASH_MAX {
        let b = *buf.get(i)?;
        if b == 0 {
            break;
        }
        whole = path_hash_step(whole, b);
        last = if b == b'/' {
            NAME_HASH_SEED
        } else {
            path_hash_step(last, b)
        };
        i += 1;
    }
    if i >= CGROUP_PATH_HASH_MAX {
        return None; // too long to hash here: userspace's rescan covers it
    }
    // SAFETY: plain `u64` values, copied out.
    let bits = unsafe {
        pick(set, &SCOPE_PATHS_0, &SCOPE_PATHS_1)
            .get(&whole)
            .copied()
            .unwrap_or(0)
            | pick(set, &SCOPE_UNITS_0, &SCOPE_UNITS_1)
                .get(&last)
                .copied()
                .unwrap_or(0)
    };
    if bits != 0 {
        let _ = pick(set, &SCOPES_0, &SCOPES_1).insert(&id, &bits, 0);
    }
    Some(())
}
