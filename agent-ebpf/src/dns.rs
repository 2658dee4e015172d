//! DNS responses on the ingress path (`cgroup_skb/ingress`).
//!
//! Every response from the resolver port to a socket of the monitored cgroup is copied to
//! userspace (which parses it properly and names connections). In block mode the program also
//! reads the question, hashes it and its parent domains (`agent_common::dns`), and when a domain
//! rule approves the name, puts every A/AAAA address of the answer section into the learned-
//! address map, keyed by the socket's network namespace, **before** the packet is queued to the
//! socket: by the time the application reads the answer, its connect is allowed.

use agent_common::{
    dns::{
        label_hash_start, label_hash_word, name_hash_prepend, DNS_LABELS_MAX, DNS_NAME_MAX,
        NAME_HASH_SEED,
    },
    Counter, DnsAllowKey, DnsEvent, DnsNameValue, EventHeader, EventKind, PolicyValue, AF_INET,
    AF_INET6, DNS_ALLOW_MAX, DNS_ANSWERS_MAX, DNS_FLAG_CUT, DNS_FLAG_KERNEL_PARSE_FAILED,
    DNS_NAMES_MAX, DNS_PAYLOAD_MAX, DNS_RULES_MAX, EVENT_VERSION,
};
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_skb_load_bytes},
    macros::{cgroup_skb, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::SkBuffContext,
    EbpfContext as _,
};
use core::{mem::size_of, ptr::addr_of_mut, ptr::read_volatile};

use crate::{count, now_ns, policy, submit_flags, EVENTS};

/// Approved names, by hash: which domain rules approve the name exactly / everything below it.
#[map]
static DNS_NAMES_0: HashMap<u64, DnsNameValue> =
    HashMap::with_max_entries(DNS_NAMES_MAX, BPF_F_NO_PREALLOC);
#[map]
static DNS_NAMES_1: HashMap<u64, DnsNameValue> =
    HashMap::with_max_entries(DNS_NAMES_MAX, BPF_F_NO_PREALLOC);

/// Learned addresses: (netns, address, domain rule) → until when the rule approves it.
#[map]
static DNS_ALLOW_0: LruHashMap<DnsAllowKey, u64> = LruHashMap::with_max_entries(DNS_ALLOW_MAX, 0);
#[map]
static DNS_ALLOW_1: LruHashMap<DnsAllowKey, u64> = LruHashMap::with_max_entries(DNS_ALLOW_MAX, 0);

/// Domain rule i's (ports, protocols, scopes) entries.
#[map]
static DOMAIN_RULES_0: Array<PolicyValue> = Array::with_max_entries(DNS_RULES_MAX as u32, 0);
#[map]
static DOMAIN_RULES_1: Array<PolicyValue> = Array::with_max_entries(DNS_RULES_MAX as u32, 0);

/// Scratch for the question name (too big for the 512-byte stack next to everything else), with
/// 8 bytes of slack so a label's last word can always be read whole.
const SCRATCH_LEN: usize = DNS_NAME_MAX + 1 + 8;
#[map]
static NAME_SCRATCH: PerCpuArray<[u8; SCRATCH_LEN]> = PerCpuArray::with_max_entries(1, 0);

/// The resolver port (`--dns-port`).
#[unsafe(no_mangle)]
static DNS_PORT: u16 = 53;
/// Bounds applied to answer TTLs (`--dns-ttl-floor`, `--dns-ttl-ceiling`), in ns.
#[unsafe(no_mangle)]
static DNS_TTL_FLOOR_NS: u64 = 5_000_000_000;
#[unsafe(no_mangle)]
static DNS_TTL_CEILING_NS: u64 = 3_600_000_000_000;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// Hides a value from LLVM so range checks written after it stay in the object code, where the
/// verifier needs them (LLVM otherwise folds them into the arithmetic before).
#[inline(always)]
fn opaque(mut value: u64) -> u64 {
    // SAFETY: one register-to-itself move; it only claims to read and write the register.
    unsafe {
        core::arch::asm!("{0} = {0}", inout(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

#[cgroup_skb(ingress)]
pub fn dns_ingress(ctx: SkBuffContext) -> i32 {
    crate::conn::count_ingress(&ctx);
    handle(&ctx);
    1
}

/// Where the DNS message is in the packet.
struct Located {
    family: u16,
    transport: u8,
    sport: u16,
    saddr: [u8; 16],
    /// Offset of the DNS header.
    off: u32,
    /// Length of the DNS message (within this packet).
    len: u32,
    /// The message continues past this packet (a TCP answer split over segments).
    partial: bool,
}

#[inline(always)]
pub(crate) fn load<T>(ctx: &SkBuffContext, offset: u32) -> Option<T> {
    ctx.load::<T>(offset as usize).ok()
}

fn locate(ctx: &SkBuffContext) -> Option<Located> {
    let first: u8 = load(ctx, 0)?;
    let mut saddr = [0u8; 16];
    let (family, proto, l4) = match first >> 4 {
        4 => {
            let frag: u16 = u16::from_be(load(ctx, 6)?);
            if frag & 0x3fff != 0 {
                return None; // a fragment: not parsed
            }
            let v4: [u8; 4] = load(ctx, 12)?;
            saddr[0] = v4[0];
            saddr[1] = v4[1];
            saddr[2] = v4[2];
            saddr[3] = v4[3];
            (AF_INET, load::<u8>(ctx, 9)?, u32::from(first & 0x0f) * 4)
        }
        6 => {
            saddr = load(ctx, 8)?;
            (AF_INET6, load::<u8>(ctx, 6)?, 40)
        }
        _ => return None,
    };
    // SAFETY: a read of a constant the loader may have rewritten.
    let port = unsafe { read_volatile(&DNS_PORT) };
    let sport = u16::from_be(load(ctx, l4)?);
    if sport != port {
        return None;
    }
    let total = ctx.len();
    let (off, len, partial) = match proto {
        IPPROTO_UDP => {
            let off = l4 + 8;
            (off, total.checked_sub(off)?, false)
        }
        IPPROTO_TCP => {
            let doff = u32::from(load::<u8>(ctx, l4 + 12)? >> 4) * 4;
            let payload = l4 + doff;
            // The first segment of a response starts with the 2-byte message length.
            let msg_len = u32::from(u16::from_be(load(ctx, payload)?));
            let off = payload + 2;
            let here = total.checked_sub(off)?;
            (off, msg_len.min(here), msg_len > here)
        }
        _ => return None,
    };
    if len < 12 {
        return None;
    }
    let flags: u8 = load(ctx, off + 2)?;
    if flags & 0x80 == 0 {
        return None; // a query, not a response
    }
    Some(Located {
        family,
        transport: proto,
        sport,
        saddr,
        off,
        len,
        partial,
    })
}

fn handle(ctx: &SkBuffContext) {
    let Some(at) = locate(ctx) else { return };
    let Some(mut entry) = EVENTS.reserve::<DnsEvent>(0) else {
        count(Counter::RingBufFull);
        return;
    };
    let event = entry.as_mut_ptr();
    let skb = ctx.as_ptr();
    // SAFETY: `event` is a valid reservation of a `DnsEvent`; `skb` is the program's context.
    unsafe {
        addr_of_mut!((*event).header).write(EventHeader {
            kind: EventKind::Dns as u16,
            version: EVENT_VERSION,
            size: size_of::<DnsEvent>() as u32,
            ktime_ns: now_ns(),
            tgid: 0,
            tid: 0,
            uid: 0,
            gid: 0,
            cgroup_id: 0,
            comm: [0; 16],
        });
        (*event).cookie = bpf_get_socket_cookie(skb);
        (*event).netns = bpf_get_netns_cookie(skb);
        (*event).family = at.family;
        (*event).sport = at.sport;
        (*event).transport = at.transport;
        (*event)._pad = 0;
        (*event)._pad2 = 0;
        (*event).msg_len = at.len;
        (*event).saddr = at.saddr;
        let mut flags = if at.partial { DNS_FLAG_CUT } else { 0u8 };
        let mut captured = at.len;
        if captured > DNS_PAYLOAD_MAX as u32 {
            captured = DNS_PAYLOAD_MAX as u32;
            flags |= DNS_FLAG_CUT;
        }
        let payload = addr_of_mut!((*event).payload) as *mut u8;
        (*event).captured = 0;
        let len = opaque(u64::from(captured));
        // The verifier needs 1..=DNS_PAYLOAD_MAX on the very register passed to the helper.
        if len >= 1 && len <= DNS_PAYLOAD_MAX as u64 {
            if bpf_skb_load_bytes(skb, at.off, payload.cast(), len as u32) == 0 {
                (*event).captured = len as u32;
            }
        }
        let approved = match policy::block_set() {
            Some(set) => learn(ctx, &at, set, (*event).netns).unwrap_or_else(|| {
                flags |= DNS_FLAG_KERNEL_PARSE_FAILED;
                0
            }),
            None => 0,
        };
        (*event).approved = approved;
        (*event).flags = flags;
    }
    entry.submit(submit_flags());
}

/// Block mode: which domain rules approve the question, and their answers learned. `None` when
/// the message could not be parsed.
fn learn(ctx: &SkBuffContext, at: &Located, set: u32, netns: u64) -> Option<u32> {
    let qdcount = u16::from_be(load(ctx, at.off + 4)?);
    let ancount = u16::from_be(load(ctx, at.off + 6)?);
    if qdcount != 1 {
        return Some(0);
    }
    let (name_len, mask) = question(ctx, at, set)?;
    if mask == 0 || ancount == 0 {
        return Some(mask);
    }
    // Past the question name, its type and class.
    let mut pos = at.off + 12 + name_len + 4;
    let end = at.off + at.len;
    let now = now_ns();
    let mut i = 0;
    while i < DNS_ANSWERS_MAX {
        if i >= ancount as usize || pos >= end {
            break;
        }
        pos = skip_name(ctx, pos, end)?;
        // type, class, ttl, rdlength
        let rtype = u16::from_be(load(ctx, pos)?);
        let ttl = u32::from_be(load(ctx, pos + 4)?);
        let rdlen = u32::from(u16::from_be(load(ctx, pos + 8)?));
        let rdata = pos + 10;
        if rdata + rdlen > end {
            return None;
        }
        if rtype == TYPE_A && rdlen == 4 {
            let a: [u8; 4] = load(ctx, rdata)?;
            let mut addr = [0u8; 16];
            addr[0] = a[0];
            addr[1] = a[1];
            addr[2] = a[2];
            addr[3] = a[3];
            remember(
                set,
                DnsAllowKey {
                    netns,
                    family: AF_INET,
                    rule: 0,
                    _pad: [0; 5],
                    addr,
                },
                mask,
                ttl,
                now,
            );
        } else if rtype == TYPE_AAAA && rdlen == 16 {
            let addr: [u8; 16] = load(ctx, rdata)?;
            remember(
                set,
                DnsAllowKey {
                    netns,
                    family: AF_INET6,
                    rule: 0,
                    _pad: [0; 5],
                    addr,
                },
                mask,
                ttl,
                now,
            );
        }
        pos = rdata + rdlen;
        i += 1;
    }
    Some(mask)
}

/// Reads the question name, returns its wire length and the mask of domain rules approving it
/// (exactly, or by a wildcard on one of its parent domains).
fn question(ctx: &SkBuffContext, at: &Located, set: u32) -> Option<(u32, u32)> {
    let buf = NAME_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, used only by this program invocation.
    let buf = unsafe { &mut *buf };
    let avail = at.len.checked_sub(12)?;
    let want = avail.min(DNS_NAME_MAX as u32);
    let want = (want & 0x1ff).clamp(1, DNS_NAME_MAX as u32);
    // SAFETY: `buf` has DNS_NAME_MAX + 1 bytes; `want` ≤ DNS_NAME_MAX.
    if unsafe { bpf_skb_load_bytes(ctx.as_ptr(), at.off + 12, buf.as_mut_ptr().cast(), want) } != 0
    {
        return None;
    }
    // Forward: each label's hash.
    let mut label_hashes = [0u64; DNS_LABELS_MAX];
    let mut labels = 0usize;
    let mut pos = 0usize;
    let mut name_len = 0usize;
    while labels < DNS_LABELS_MAX {
        let len = *buf.get(pos & DNS_NAME_MAX)? as usize;
        if len == 0 {
            name_len = pos + 1;
            break;
        }
        if len > 63 || pos + len + 1 >= want as usize {
            return None; // compression in a question, an illegal label, or past the data
        }
        // Eight bytes at a time; the bytes past the label's end are masked off.
        let mut hash = label_hash_start(len);
        let mut w = 0usize;
        while w < 8 {
            if w * 8 >= len {
                break;
            }
            let at = (pos + 1 + w * 8) & DNS_NAME_MAX;
            // SAFETY: `at` ≤ 255 and the buffer has 8 bytes of slack past 256.
            let mut word = unsafe { core::ptr::read_unaligned(buf.as_ptr().add(at).cast::<u64>()) };
            let rest = len - w * 8;
            if rest < 8 {
                word &= (1u64 << (rest * 8)) - 1;
            }
            hash = label_hash_word(hash, word);
            w += 1;
        }
        *label_hashes.get_mut(labels)? = hash;
        labels += 1;
        pos += len + 1;
    }
    if name_len == 0 {
        return None; // deeper than DNS_LABELS_MAX: never approved in the kernel
    }
    // Backward over the labels: each parent domain's hash, then the name's own.
    let mut hash = NAME_HASH_SEED;
    let mut mask = 0u32;
    let mut k = DNS_LABELS_MAX;
    while k > 0 {
        k -= 1;
        if k >= labels {
            continue;
        }
        hash = name_hash_prepend(hash, *label_hashes.get(k)?);
        if let Some(v) = policy::dns_name(set, hash) {
            mask |= if k == 0 { v.exact } else { v.wildcard };
        }
    }
    Some((name_len as u32, mask))
}

/// Most labels of an answer's owner name the kernel steps over before a compression pointer or
/// the root. Resolvers compress owner names (a pointer to the question or to a CNAME target),
/// so this is almost always 0; a response spelling out longer owner names is not learned in the
/// kernel (its flag tells userspace).
const OWNER_LABELS_MAX: u32 = 8;

/// Skips a (possibly compressed) name at `pos`; returns the offset after it.
fn skip_name(ctx: &SkBuffContext, mut pos: u32, end: u32) -> Option<u32> {
    let mut guard = 0;
    while guard <= OWNER_LABELS_MAX {
        if pos >= end {
            return None;
        }
        let len: u8 = load(ctx, pos)?;
        if len & 0xc0 == 0xc0 {
            return Some(pos + 2); // a pointer ends the name
        }
        if len & 0xc0 != 0 {
            return None;
        }
        if len == 0 {
            return Some(pos + 1);
        }
        pos += u32::from(len) + 1;
        guard += 1;
    }
    None
}

/// Approves the address for each of `mask`'s rules until now + the (bounded) TTL. One map
/// entry per rule keeps every iteration's verifier state identical (no path explosion).
fn remember(set: u32, mut key: DnsAllowKey, mask: u32, ttl: u32, now: u64) {
    // SAFETY: reads of constants the loader may have rewritten.
    let (floor, ceiling) = unsafe {
        (
            read_volatile(&DNS_TTL_FLOOR_NS),
            read_volatile(&DNS_TTL_CEILING_NS),
        )
    };
    let expires = now + (u64::from(ttl) * 1_000_000_000).clamp(floor, ceiling);
    let map = if set == 0 { &DNS_ALLOW_0 } else { &DNS_ALLOW_1 };
    let mut i = 0u32;
    while i < DNS_RULES_MAX as u32 {
        key.rule = i as u8;
        if mask & (1 << i) != 0 {
            match map.get_ptr_mut(&key) {
                // SAFETY: a live map value; a concurrent update only ever raises it.
                Some(old) => unsafe {
                    if *old < expires {
                        *old = expires;
                    }
                },
                None => {
                    let _ = map.insert(&key, &expires, 0);
                }
            }
        }
        i += 1;
    }
}

/// Block mode, after the prefix tries did not approve: does a learned answer approve `key`'s
/// address for this port, protocol and caller? `rules` is the live policy's domain rule count.
#[inline(always)]
pub fn learned_approves(
    set: u32,
    mut key: DnsAllowKey,
    rules: u32,
    port: u16,
    proto: u8,
    cgroups: u64,
) -> bool {
    let map = if set == 0 { &DNS_ALLOW_0 } else { &DNS_ALLOW_1 };
    let domain_rules = if set == 0 {
        &DOMAIN_RULES_0
    } else {
        &DOMAIN_RULES_1
    };
    let now = now_ns();
    let mut i = 0u32;
    while i < DNS_RULES_MAX as u32 {
        if i >= rules {
            break;
        }
        key.rule = i as u8;
        // SAFETY: a plain `u64`, copied out.
        let expires = unsafe { map.get(&key) }.copied().unwrap_or(0);
        if expires > now {
            if let Some(rule) = domain_rules.get(i) {
                if policy::approves(rule, port, proto, cgroups) {
                    return true;
                }
            }
        }
        i += 1;
    }
    false
}

/// The approved-names entry for a hash in `set`.
#[inline(always)]
pub fn names_get(set: u32, hash: u64) -> Option<DnsNameValue> {
    // SAFETY: plain values, copied out.
    unsafe {
        if set == 0 {
            DNS_NAMES_0.get(&hash).copied()
        } else {
            DNS_NAMES_1.get(&hash).copied()
        }
    }
}
