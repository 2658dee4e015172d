//! Block-mode policy evaluation on the connect/sendmsg path.
//!
//! Two complete map sets (0 and 1) hold compiled policies; `POLICY_STATE.active` says which is
//! live. Userspace fills the idle set and then flips `active` with one map update, so a reload
//! never exposes a half-written policy: every call sees either the old or the new one.
//!
//! An address is looked up in the family's LPM trie; the longest matching prefix carries every
//! entry (port range, protocols, cgroup scope) of itself and of all shorter prefixes that
//! contain it, so one lookup decides. Scoped entries need the caller's cgroup mask: the OR of
//! `SCOPES[id]` over the caller's cgroup and its ancestors, computed only when needed.

use core::{mem::size_of, ptr::addr_of_mut};

use agent_common::{
    dns::NAME_HASH_SEED, path_hash_step, CgroupMkdirEvent, Counter, EventKind, PolicyAddr4,
    PolicyAddr6, PolicyState, PolicyValue, AF_INET, CGROUP_PATH_HASH_MAX, POLICY_CGROUPS_MAX,
    POLICY_CGROUP_LEVELS, POLICY_ENTRIES_MAX, POLICY_MODE_BLOCK, POLICY_PREFIXES_MAX, PROTO_OTHER,
    PROTO_TCP, PROTO_UDP, VERDICT_ALLOWED, VERDICT_BLOCKED, VERDICT_NONE,
};
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::generated::{bpf_get_current_ancestor_cgroup_id, bpf_probe_read_kernel_str},
    macros::{map, tracepoint},
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap, PerCpuArray,
    },
    programs::TracePointContext,
    EbpfContext as _,
};

use crate::{dns, Dest};
use agent_common::{DnsAllowKey, DnsNameValue, AF_INET6};

#[map]
static POLICY_STATE: Array<PolicyState> = Array::with_max_entries(1, 0);

#[map]
static POLICY_V4_0: LpmTrie<PolicyAddr4, PolicyValue> =
    LpmTrie::with_max_entries(POLICY_PREFIXES_MAX, BPF_F_NO_PREALLOC);
#[map]
static POLICY_V4_1: LpmTrie<PolicyAddr4, PolicyValue> =
    LpmTrie::with_max_entries(POLICY_PREFIXES_MAX, BPF_F_NO_PREALLOC);
#[map]
static POLICY_V6_0: LpmTrie<PolicyAddr6, PolicyValue> =
    LpmTrie::with_max_entries(POLICY_PREFIXES_MAX, BPF_F_NO_PREALLOC);
#[map]
static POLICY_V6_1: LpmTrie<PolicyAddr6, PolicyValue> =
    LpmTrie::with_max_entries(POLICY_PREFIXES_MAX, BPF_F_NO_PREALLOC);

/// cgroup id → scope bits of the selectors it (and everything below it) satisfies.
#[map]
static SCOPES_0: HashMap<u64, u64> = HashMap::with_max_entries(POLICY_CGROUPS_MAX, 0);
#[map]
static SCOPES_1: HashMap<u64, u64> = HashMap::with_max_entries(POLICY_CGROUPS_MAX, 0);

/// Scope bits by cgroup path hash (`cgroups:` selectors) and by last-component hash (exact
/// `systemd_units:` names): a cgroup created while the policy is live gets its bits in
/// `cgroup_mkdir`, before `mkdir()` returns, so no process can be in it without them.
#[map]
static SCOPE_PATHS_0: HashMap<u64, u64> = HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);
#[map]
static SCOPE_PATHS_1: HashMap<u64, u64> = HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);
#[map]
static SCOPE_UNITS_0: HashMap<u64, u64> = HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);
#[map]
static SCOPE_UNITS_1: HashMap<u64, u64> = HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// Scratch for the path of a new cgroup.
#[map]
static PATH_SCRATCH: PerCpuArray<[u8; CGROUP_PATH_HASH_MAX + 1]> =
    PerCpuArray::with_max_entries(1, 0);

/// `cgroup/cgroup_mkdir`: a new cgroup v2 directory gets the scope bits its path and name earn.
#[tracepoint]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    let _ = on_mkdir(&ctx);
    0
}

fn on_mkdir(ctx: &TracePointContext) -> Option<()> {
    // Offsets from cgroup/cgroup_mkdir/format (checked by userspace at start-up).
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
    if let Some(mut entry) = crate::EVENTS.reserve::<CgroupMkdirEvent>(0) {
        let event = entry.as_mut_ptr();
        // SAFETY: a valid reservation of a `CgroupMkdirEvent`; the path is read as a bounded
        // string from the tracepoint's dynamic field.
        unsafe {
            crate::fill_header(
                addr_of_mut!((*event).header),
                EventKind::CgroupMkdir,
                size_of::<CgroupMkdirEvent>(),
                crate::now_ns(),
            );
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
        entry.submit(crate::submit_flags());
    } else {
        crate::count(Counter::RingBufFull);
    }
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
        let (paths, units) = if set == 0 {
            (&SCOPE_PATHS_0, &SCOPE_UNITS_0)
        } else {
            (&SCOPE_PATHS_1, &SCOPE_UNITS_1)
        };
        paths.get(&whole).copied().unwrap_or(0) | units.get(&last).copied().unwrap_or(0)
    };
    if bits != 0 {
        let scopes = if set == 0 { &SCOPES_0 } else { &SCOPES_1 };
        let _ = scopes.insert(&id, &bits, 0);
    }
    Some(())
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
    let mut mask = 0u64;
    let mut level = 0;
    while level < POLICY_CGROUP_LEVELS {
        // SAFETY: helper with a scalar argument.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 {
            break;
        }
        // SAFETY: plain `u64` values, read once.
        let bits = unsafe {
            if set == 0 {
                SCOPES_0.get(&id)
            } else {
                SCOPES_1.get(&id)
            }
        };
        if let Some(bits) = bits {
            mask |= *bits;
        }
        level += 1;
    }
    mask
}

/// `true` when some entry of `value` approves this port and protocol for a caller whose
/// cgroup carries the scope bits `cgroups`.
#[inline(always)]
pub fn approves(value: &PolicyValue, port: u16, proto: u8, cgroups: u64) -> bool {
    let count = value.count as usize;
    let mut i = 0;
    while i < POLICY_ENTRIES_MAX {
        if i >= count {
            break;
        }
        let entry = &value.entries[i];
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
        if addr[i] != 0 {
            return None;
        }
        i += 1;
    }
    if addr[10] != 0xff || addr[11] != 0xff {
        return None;
    }
    Some([addr[12], addr[13], addr[14], addr[15]])
}

#[inline(always)]
fn lookup4(set: u32, addr: PolicyAddr4) -> Option<&'static PolicyValue> {
    let key = Key::new(32, addr);
    if set == 0 {
        POLICY_V4_0.get(&key)
    } else {
        POLICY_V4_1.get(&key)
    }
}

#[inline(always)]
fn lookup6(set: u32, addr: PolicyAddr6) -> Option<&'static PolicyValue> {
    let key = Key::new(128, addr);
    if set == 0 {
        POLICY_V6_0.get(&key)
    } else {
        POLICY_V6_1.get(&key)
    }
}

/// The live set when the live policy is in block mode.
#[inline(always)]
pub fn block_set() -> Option<u32> {
    let state = POLICY_STATE.get(0)?;
    let set = state.active & 1;
    (state.mode[set as usize] == POLICY_MODE_BLOCK).then_some(set)
}

/// The approved-names entry for a name hash in `set`.
#[inline(always)]
pub fn dns_name(set: u32, hash: u64) -> Option<DnsNameValue> {
    dns::names_get(set, hash)
}

/// The verdict for a connection or datagram to `dest`: [`VERDICT_NONE`] in audit mode,
/// else [`VERDICT_ALLOWED`] or [`VERDICT_BLOCKED`].
#[inline(always)]
pub fn evaluate(dest: &Dest) -> u32 {
    let Some(state) = POLICY_STATE.get(0) else {
        return VERDICT_NONE;
    };
    let set = state.active & 1;
    if state.mode[set as usize] != POLICY_MODE_BLOCK {
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
        lookup4(set, addr)
    } else {
        lookup6(set, dest.addr)
    };
    let proto = protocol_bit(dest);
    // The caller's cgroup scope bits, only when the policy has scoped rules.
    let cgroups = if state.scoped & (1 << set) != 0 {
        cgroup_mask(set)
    } else {
        0
    };
    if let Some(value) = value {
        if approves(value, dest.port, proto, cgroups) {
            return VERDICT_ALLOWED;
        }
    }
    // Addresses learned from approved DNS answers (domain rules).
    let rules = state.domain_rules[set as usize];
    if rules == 0 {
        return VERDICT_BLOCKED;
    }
    let mut key = DnsAllowKey {
        netns: dest.netns,
        family,
        rule: 0,
        _pad: [0; 5],
        addr: [0; 16],
    };
    if family == AF_INET {
        key.addr[0] = addr[0];
        key.addr[1] = addr[1];
        key.addr[2] = addr[2];
        key.addr[3] = addr[3];
    } else {
        key.addr = dest.addr;
    }
    if dns::learned_approves(set, key, rules, dest.port, proto, cgroups) {
        return VERDICT_ALLOWED;
    }
    VERDICT_BLOCKED
}
