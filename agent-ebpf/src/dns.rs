//! DNS responses on the ingress path of the monitored cgroup.
//!
//! Program: `dns_ingress` (`cgroup_skb/ingress`), the one program every received packet runs.
//! It first lets `conn` count a UDP flow's received bytes ([`conn::count_ingress`]), then looks
//! for a DNS response: every response from the resolver port (`DNS_PORT`) to a socket of the
//! cgroup is copied to userspace (`Dns` event), which parses it properly and names
//! connections. In block mode the program also reads the question, hashes it and its parent
//! domains (`agent_common::dns`), and when a domain rule approves the name, puts every A/AAAA
//! address of the answer section into the policy's learned-address map ([`policy::learn`]),
//! keyed by the socket's network namespace, **before** the packet is queued to the socket: by
//! the time the application reads the answer, its connect is allowed.
//!
//! Map: `NAME_SCRATCH` (per-CPU array of one): room for the question name, too big for the
//! stack next to everything else. Kernel-only.
//!
//! Globals (set by userspace): `DNS_PORT` (`--dns-port`), `DNS_TTL_FLOOR_NS` and
//! `DNS_TTL_CEILING_NS` (`--dns-ttl-floor`, `--dns-ttl-ceiling`): bounds on how long a learned
//! address stays approved.
//!
//! Uses `shared`, `policy` (approved names, learned addresses) and `conn` (ingress byte counts).

use core::ptr::addr_of_mut;

use agent_common::{
    dns::{
        label_hash_start, label_hash_word, name_hash_prepend, DNS_LABELS_MAX, DNS_NAME_MAX,
        NAME_HASH_SEED,
    },
    DnsEvent, EventKind, AF_INET, AF_INET6, DNS_ANSWERS_MAX, DNS_FLAG_CUT,
    DNS_FLAG_KERNEL_PARSE_FAILED, DNS_PAYLOAD_MAX,
};
use aya_ebpf::{
    helpers::generated::bpf_skb_load_bytes,
    macros::{cgroup_skb, map},
    maps::PerCpuArray,
    programs::SkBuffContext,
    EbpfContext as _,
};

use crate::{
    conn, policy,
    shared::{
        emit, global, ip_addr, ip_header, load, netns_cookie, now_ns, socket_cookie, v4_in_16, End,
        Origin, IPPROTO_TCP, IPPROTO_UDP,
    },
};

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

#[cgroup_skb(ingress)]
pub fn dns_ingress(ctx: SkBuffContext) -> i32 {
    conn::count_ingress(&ctx);
    handle(&ctx);
    1
}

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

fn locate(ctx: &SkBuffContext) -> Option<Located> {
    let ip = ip_header(ctx)?;
    if ip.family == AF_INET {
        let frag: u16 = u16::from_be(load(ctx, 6)?);
        if frag & 0x3fff != 0 {
            return None; // a fragment: not parsed
        }
    }
    let saddr = ip_addr(ctx, ip.family, End::Source)?;
    let sport = u16::from_be(load(ctx, ip.l4)?);
    if sport != global(&DNS_PORT) {
        return None;
    }
    let total = ctx.len();
    let (off, len, partial) = match ip.protocol {
        IPPROTO_UDP => {
            let off = ip.l4 + 8;
            (off, total.checked_sub(off)?, false)
        }
        IPPROTO_TCP => {
            let doff = u32::from(load::<u8>(ctx, ip.l4 + 12)? >> 4) * 4;
            let payload = ip.l4 + doff;
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
        family: ip.family,
        transport: ip.protocol,
        sport,
        saddr,
        off,
        len,
        partial,
    })
}

fn handle(ctx: &SkBuffContext) {
    let Some(at) = locate(ctx) else { return };
    // A packet is handled in softirq: the header names no task.
    emit(EventKind::Dns, Origin::Nobody, |event: *mut DnsEvent| {
        // SAFETY: a reservation of a `DnsEvent`.
        unsafe { fill(ctx, &at, event) };
    });
}

/// Fills a `Dns` record: the message (as much as fits), and in block mode what the kernel
/// learned from it.
///
/// # Safety
/// `event` is a reservation of a `DnsEvent`.
#[inline(always)]
unsafe fn fill(ctx: &SkBuffContext, at: &Located, event: *mut DnsEvent) {
    // SAFETY: the caller's promise; `skb` is the program's context.
    unsafe {
        (*event).cookie = socket_cookie(ctx);
        (*event).netns = netns_cookie(ctx);
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
        if len >= 1
            && len <= DNS_PAYLOAD_MAX as u64
            && bpf_skb_load_bytes(ctx.as_ptr(), at.off, payload.cast(), len as u32) == 0
        {
            (*event).captured = len as u32;
        }
        let approved = match policy::block_set() {
            Some(set) => learn(ctx, at, set, (*event).netns).unwrap_or_else(|| {
                flags |= DNS_FLAG_KERNEL_PARSE_FAILED;
                0
            }),
            None => 0,
        };
        (*event).approved = approved;
        (*event).flags = flags;
    }
}

/// Answer record types that carry an address.
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

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
        // One call per record type: merging the two paths first makes the verifier explore
        // every combination of them (past its 1M instruction limit).
        if rtype == TYPE_A && rdlen == 4 {
            let key = policy::allow_key(netns, AF_INET, v4_in_16(load(ctx, rdata)?));
            policy::learn(set, key, mask, expiry(ttl, now));
        } else if rtype == TYPE_AAAA && rdlen == 16 {
            let key = policy::allow_key(netns, AF_INET6, load(ctx, rdata)?);
            policy::learn(set, key, mask, expiry(ttl, now));
        }
        pos = rdata + rdlen;
        i += 1;
    }
    Some(mask)
}

/// Until when an answer with `ttl` (seconds) approves its address: now + the TTL, bounded.
#[inline(always)]
fn expiry(ttl: u32, now: u64) -> u64 {
    let (floor, ceiling) = (global(&DNS_TTL_FLOOR_NS), global(&DNS_TTL_CEILING_NS));
    now + (u64::from(ttl) * 1_000_000_000).clamp(floor, ceiling)
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
