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

use agent_common::{
    PolicyAddr4, PolicyAddr6, PolicyState, PolicyValue, AF_INET, POLICY_CGROUPS_MAX,
    POLICY_CGROUP_LEVELS, POLICY_ENTRIES_MAX, POLICY_MODE_BLOCK, POLICY_PREFIXES_MAX, PROTO_OTHER,
    PROTO_TCP, PROTO_UDP, VERDICT_ALLOWED, VERDICT_BLOCKED, VERDICT_NONE,
};
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::generated::bpf_get_current_ancestor_cgroup_id,
    macros::map,
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap,
    },
};

use crate::Dest;

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

/// `true` when some entry of `value` approves this port, protocol and caller.
#[inline(always)]
fn approves(value: &PolicyValue, port: u16, proto: u8, set: u32) -> bool {
    let count = value.count as usize;
    // The caller's cgroup mask, computed on first need (no closures: an outlined closure that
    // returns a reference into this frame is rejected by the verifier).
    let mut mask = 0u64;
    let mut have_mask = false;
    let mut i = 0;
    while i < POLICY_ENTRIES_MAX {
        if i >= count {
            break;
        }
        let entry = &value.entries[i];
        if port >= entry.port_lo && port <= entry.port_hi && entry.protocols & proto != 0 {
            if entry.scopes == 0 {
                return true;
            }
            if !have_mask {
                mask = cgroup_mask(set);
                have_mask = true;
            }
            if mask & entry.scopes == entry.scopes {
                return true;
            }
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
    let value = if dest.family == AF_INET {
        lookup4(
            set,
            [dest.addr[0], dest.addr[1], dest.addr[2], dest.addr[3]],
        )
    } else {
        match mapped_v4(&dest.addr) {
            Some(v4) => lookup4(set, v4),
            None => lookup6(set, dest.addr),
        }
    };
    match value {
        Some(value) if approves(value, dest.port, protocol_bit(dest), set) => VERDICT_ALLOWED,
        _ => VERDICT_BLOCKED,
    }
}
