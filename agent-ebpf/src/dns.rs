//! DNS on the packet path of the monitored cgroup: queries going out, answers coming in.
//!
//! Called by the `cgroup_skb` programs (`skb`): [`note_query`] on egress, [`on_answer`] on
//! ingress.
//!
//! - A query (to the resolver port, `DNS_PORT`) is remembered in `DNS_QUERIES`: the socket,
//!   the transaction id, the resolver's address and port, and a hash of the question. The
//!   resolver is the one the application addressed, not the packet's destination: egress runs
//!   after the namespace's NAT, which may have sent the query elsewhere (Docker's embedded DNS
//!   DNATs `127.0.0.11:53` to a port of dockerd's), while the answer reaches the socket with
//!   the NAT undone. A connected socket's peer says it; for an unconnected UDP socket,
//!   `sendmsg4/6` (`socket`) noted the destination its datagram was given ([`note_send`]).
//! - An answer is **believed** only when its source is a trusted resolver (`TRUSTED_RESOLVERS`,
//!   written by userspace from the policy's `resolvers:` or the `resolv.conf` files) and it
//!   matches a query this very socket sent to that address and port, with the same id and
//!   question, within `DNS_QUERY_WINDOW_NS`. Every answer is copied to userspace (`Dns`
//!   event) with flags saying whether it was believed; userspace names connections only from
//!   believed ones.
//! - In block mode, for a believed answer, the program reads the question, hashes it and its
//!   parent domains (`agent_common::dns`), and when a domain rule approves the name, puts every
//!   A/AAAA address of the answer section into the policy's learned-address map
//!   ([`policy::learn`]), keyed by the socket's network namespace, **before** the packet is
//!   queued to the socket: by the time the application reads the answer, its connect is
//!   allowed. Both checks happen here, before that write, so a forged answer never approves.
//!
//! Maps:
//! - `NAME_SCRATCH` (per-CPU array of one): room for the question name, too big for the stack
//!   next to everything else. Kernel-only.
//! - `DNS_QUERIES` (LRU hash, [`DnsQueryKey`] → [`DnsQueryValue`]): queries awaiting an
//!   answer, keyed by socket and transaction id (an A and an AAAA query on one socket, with
//!   their own ids, are two entries). The first believed answer removes its query's entry:
//!   a second answer to it is not believed. A truncated answer (TC) is believed like any
//!   other and ends its query too; the client asks again over TCP, a new socket and entry.
//!   Kernel-only.
//! - `DNS_SENDS` (LRU hash, socket cookie → address and port): the resolver-port destination
//!   of an unconnected UDP socket's last `sendmsg`. Kernel-only.
//! - `TRUSTED_RESOLVERS` (LPM trie, IPv6 or IPv4-mapped prefix → 1): the trusted resolvers,
//!   written by userspace.
//!
//! Globals (set by userspace): `DNS_PORT` (`--dns-port`), `DNS_TTL_FLOOR_NS` and
//! `DNS_TTL_CEILING_NS` (`--dns-ttl-floor`, `--dns-ttl-ceiling`): bounds on how long a learned
//! address stays approved.
//!
//! Uses `shared` and `policy` (approved names, learned addresses).

use core::ptr::{addr_of, addr_of_mut};

use agent_common::{
    dns::{
        label_hash_start, label_hash_word, name_hash_prepend, DNS_LABELS_MAX, DNS_NAME_MAX,
        NAME_HASH_SEED,
    },
    Counter, DnsEvent, DnsQueryKey, DnsQueryValue, EventKind, AF_INET, AF_INET6, DNS_ANSWERS_MAX,
    DNS_FLAG_CUT, DNS_FLAG_KERNEL_PARSE_FAILED, DNS_FLAG_UNSOLICITED, DNS_FLAG_UNTRUSTED,
    DNS_PAYLOAD_MAX, DNS_QUERIES_MAX, DNS_QUERY_WINDOW_NS, DNS_RESOLVERS_MAX,
};
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::generated::{bpf_sk_fullsock, bpf_skb_load_bytes},
    macros::map,
    maps::{
        lpm_trie::{Key, LpmTrie},
        LruHashMap, PerCpuArray,
    },
    programs::SkBuffContext,
    EbpfContext as _,
};

use crate::{
    policy,
    shared::{
        ctx_field, ctx_ip6, emit, fail, global, ip_addr, load, netns_cookie, now_ns, opaque,
        socket_cookie, v4_in_16, Dest, End, IpHeader, Origin, IPPROTO_TCP, IPPROTO_UDP,
    },
};

/// Scratch for the question name (too big for the 512-byte stack next to everything else), with
/// 8 bytes of slack so a label's last word can always be read whole.
const SCRATCH_LEN: usize = DNS_NAME_MAX + 1 + 8;
#[map]
static NAME_SCRATCH: PerCpuArray<[u8; SCRATCH_LEN]> = PerCpuArray::with_max_entries(1, 0);

/// Where [`digest`] puts the question's length between its two loops: a value read back from
/// a map is unknown to the verifier, so every path through the first loop meets in the second
/// instead of each exploring it.
#[map]
static DIGEST_SCRATCH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Queries awaiting their answer: (socket, transaction id) → resolver, question, deadline.
#[map]
static DNS_QUERIES: LruHashMap<DnsQueryKey, DnsQueryValue> =
    LruHashMap::with_max_entries(DNS_QUERIES_MAX, 0);

/// Trusted resolvers: IPv6 prefixes, IPv4 ones mapped (`::ffff:a.b.c.d/96+len`).
#[map]
static TRUSTED_RESOLVERS: LpmTrie<[u8; 16], u8> =
    LpmTrie::with_max_entries(DNS_RESOLVERS_MAX, BPF_F_NO_PREALLOC);

/// The resolver port (`--dns-port`).
#[unsafe(no_mangle)]
static DNS_PORT: u16 = 53;
/// Bounds applied to answer TTLs (`--dns-ttl-floor`, `--dns-ttl-ceiling`), in ns.
#[unsafe(no_mangle)]
static DNS_TTL_FLOOR_NS: u64 = 5_000_000_000;
#[unsafe(no_mangle)]
static DNS_TTL_CEILING_NS: u64 = 3_600_000_000_000;

/// Which way a DNS message goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// A query leaving a socket of the cgroup, to the resolver port.
    Query,
    /// An answer arriving from the resolver port.
    Answer,
}

/// Where the DNS message is in the packet.
struct Located {
    family: u16,
    transport: u8,
    /// The resolver's port and address (the source of an answer, the destination of a query).
    port: u16,
    peer: [u8; 16],
    /// Offset of the DNS header.
    off: u32,
    /// Length of the DNS message (within this packet).
    len: u32,
    /// Non-zero: the message continues past this packet (a TCP answer split over segments).
    /// Not a `bool`: the niche would put `Option<Located>`'s tag at an offset the kernel's
    /// BTF checks refuse (a union member past offset 0).
    partial: u8,
    /// Transaction id.
    txid: u16,
}

/// Where the DNS message of `ip` is, when it is one going `way`. The resolver is the packet's
/// source (an answer) or destination (a query), unless `addressed` gives the one the
/// application addressed a query to ([`addressed`]).
fn locate(
    ctx: &SkBuffContext,
    ip: &IpHeader,
    way: Way,
    addressed: Option<(u16, [u8; 16])>,
) -> Option<Located> {
    let (end, port_at) = match way {
        Way::Answer => (End::Source, ip.l4),
        Way::Query => (End::Destination, ip.l4 + 2),
    };
    if ip.fragment {
        return None; // a fragment: not parsed
    }
    let (port, peer) = match addressed {
        Some(resolver) => resolver,
        None => (
            u16::from_be(load(ctx, port_at)?),
            ip_addr(ctx, ip.family, end)?,
        ),
    };
    if port != global(&DNS_PORT) {
        return None;
    }
    let total = ctx.len();
    let (off, len, partial): (u32, u32, bool) = match ip.protocol {
        IPPROTO_UDP => {
            let off = ip.l4 + 8;
            (off, total.checked_sub(off)?, false)
        }
        IPPROTO_TCP => {
            let doff = u32::from(load::<u8>(ctx, ip.l4 + 12)? >> 4) * 4;
            let payload = ip.l4 + doff;
            // The first segment of a message starts with the 2-byte message length.
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
    let is_answer = flags & 0x80 != 0;
    if is_answer != (way == Way::Answer) {
        return None;
    }
    Some(Located {
        family: ip.family,
        transport: ip.protocol,
        port,
        peer,
        off,
        len,
        partial: u8::from(partial),
        txid: u16::from_be(load(ctx, off)?),
    })
}

/// Egress: a query to the resolver port is remembered, so its answer can be believed. The
/// resolver remembered is the one the application addressed ([`addressed`]): this program
/// runs after the namespace's NAT (`ip_finish_output`), and the answer reaches the socket
/// with that NAT undone.
#[inline(never)]
pub(crate) fn note_query(ctx: &SkBuffContext, ip: &IpHeader) {
    let cookie = socket_cookie(ctx);
    let Some(at) = locate(ctx, ip, Way::Query, addressed(ctx, ip, cookie)) else {
        return;
    };
    let Some(question) = digest(ctx, &at) else {
        return;
    };
    let key = query_key(cookie, at.txid);
    let value = DnsQueryValue {
        addr: at.peer,
        question,
        expires_ns: now_ns() + DNS_QUERY_WINDOW_NS,
        family: at.family,
        port: at.port,
        _pad: 0,
    };
    if let Err(error) = DNS_QUERIES.insert(&key, &value, 0) {
        fail(Counter::DnsQueryUpdateFailed, "DNS_QUERIES", error);
    }
}

/// The destination the application gave the datagrams of an unconnected UDP socket, when it
/// was the resolver port (`DNS_SENDS`, written by `sendmsg4/6`).
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct Addressed {
    /// As in the events (IPv4 in the first 4 bytes; an IPv4-mapped IPv6 address as IPv4).
    addr: [u8; 16],
    family: u16,
    /// Host byte order.
    port: u16,
    _pad: u32,
}

/// Unconnected UDP sockets whose last `sendmsg` named the resolver port: socket cookie → that
/// destination. Written by `sendmsg4/6` ([`note_send`]), read by [`note_query`] for the
/// datagram that `sendmsg` sends. Kernel-only.
#[map]
static DNS_SENDS: LruHashMap<u64, Addressed> = LruHashMap::with_max_entries(DNS_QUERIES_MAX, 0);

/// `sendmsg4/6` of an unconnected UDP socket: remembers a destination on the resolver port
/// (what the application named, before the namespace's NAT), forgets the last one otherwise.
/// Not inlined: `sendmsg6` has `on_sendmsg`'s deep stack below it already.
#[inline(never)]
pub(crate) fn note_send(cookie: u64, dest: &Dest) {
    if dest.port == global(&DNS_PORT) {
        let (family, addr) = unmapped(dest.family, dest.addr);
        let value = Addressed {
            addr,
            family,
            port: dest.port,
            _pad: 0,
        };
        if let Err(error) = DNS_SENDS.insert(&cookie, &value, 0) {
            fail(Counter::DnsQueryUpdateFailed, "DNS_SENDS", error);
        }
    } else if DNS_SENDS.get_ptr(&cookie).is_some() {
        let _ = DNS_SENDS.remove(&cookie);
    }
}

/// The resolver (port, address) the application addressed a query to, before any NAT of the
/// socket's namespace rewrote the packet (Docker's embedded DNS: `127.0.0.11:53` DNATed to a
/// port of dockerd's, the answer's source rewritten back): a connected socket's peer, else
/// (UDP) the destination of the socket's last `sendmsg` to the resolver port (`DNS_SENDS`).
/// `None` (the packet's destination counts): no full socket, an unconnected socket that did
/// not name the resolver port, or another family than the packet's.
#[inline(always)]
fn addressed(ctx: &SkBuffContext, ip: &IpHeader, cookie: u64) -> Option<(u16, [u8; 16])> {
    let (family, port, addr) = match socket_peer(ctx) {
        Some(peer) => peer,
        None if ip.protocol == IPPROTO_UDP => {
            // SAFETY: a plain value, copied out.
            let sent = (unsafe { DNS_SENDS.get(&cookie) }).copied()?;
            (sent.family, sent.port, sent.addr)
        }
        None => return None,
    };
    let (family, addr) = unmapped(family, addr);
    (family == ip.family).then_some((port, addr))
}

/// The peer (family, port in host byte order, address as in the events) of the skb's socket
/// when it is a connected full socket.
#[inline(always)]
fn socket_peer(ctx: &SkBuffContext) -> Option<(u16, u16, [u8; 16])> {
    // SAFETY: `sk` of the skb context, narrowed to a full socket (both NULL-checked); its
    // fields read with the loads the verifier accepts (32-bit words).
    unsafe {
        let skb = ctx.skb.skb;
        let sk = ctx_field(addr_of!((*skb).__bindgen_anon_2.sk));
        if sk.is_null() {
            return None;
        }
        let full = bpf_sk_fullsock(sk);
        if full.is_null() {
            return None;
        }
        // A 32-bit load (kernels before 5.16 accept no other); the port, in network byte
        // order, is its first two bytes.
        let word: u32 = ctx_field(addr_of!((*full).dst_port).cast::<u32>());
        let port = u16::from_be(word as u16);
        if port == 0 {
            return None; // not connected
        }
        let family = ctx_field(addr_of!((*full).family));
        let addr = if family == u32::from(AF_INET) {
            v4_in_16(ctx_field(addr_of!((*full).dst_ip4)).to_ne_bytes())
        } else if family == u32::from(AF_INET6) {
            ctx_ip6(addr_of!((*full).dst_ip6))
        } else {
            return None;
        };
        Some((family as u16, port, addr))
    }
}

/// An IPv4-mapped IPv6 address (a dual-stack socket's IPv4 peer) as IPv4, as the packets
/// that reach it are; any other address as it is.
#[inline(always)]
fn unmapped(family: u16, addr: [u8; 16]) -> (u16, [u8; 16]) {
    match addr {
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d] if family == AF_INET6 => {
            (AF_INET, v4_in_16([a, b, c, d]))
        }
        _ => (family, addr),
    }
}

#[inline(always)]
fn query_key(cookie: u64, txid: u16) -> DnsQueryKey {
    DnsQueryKey {
        cookie,
        txid,
        _pad: [0; 6],
    }
}

/// Ingress: an answer from the resolver port is copied to userspace and, in block mode and
/// when believed, learned.
#[inline(never)]
pub(crate) fn on_answer(ctx: &SkBuffContext, ip: &IpHeader) {
    let Some(at) = locate(ctx, ip, Way::Answer, None) else {
        return;
    };
    let mut checks = 0u8;
    if !trusted(at.family, &at.peer) {
        checks |= DNS_FLAG_UNTRUSTED;
    }
    let cookie = socket_cookie(ctx);
    let asked = match digest(ctx, &at) {
        Some(question) => solicited(cookie, &at, question),
        None => false,
    };
    if !asked {
        checks |= DNS_FLAG_UNSOLICITED;
    }
    // A query is answered once: the first believed answer takes its entry, so a second
    // answer to the same query (same socket and id) within the window is unsolicited. The
    // removal is the test: of two answers racing on two CPUs, only one removes the entry.
    if checks == 0 && DNS_QUERIES.remove(&query_key(cookie, at.txid)).is_err() {
        checks |= DNS_FLAG_UNSOLICITED;
    }
    let believed = checks == 0;
    // A packet is handled in softirq: the header names no task.
    emit(EventKind::Dns, Origin::Nobody, |event: *mut DnsEvent| {
        // SAFETY: a reservation of a `DnsEvent`.
        unsafe { fill(ctx, &at, event, cookie, believed, checks) };
    });
}

/// Whether `addr` (as in the events) is in a trusted resolver's prefix.
#[inline(always)]
fn trusted(family: u16, addr: &[u8; 16]) -> bool {
    let key = if family == AF_INET {
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12] = addr[0];
        mapped[13] = addr[1];
        mapped[14] = addr[2];
        mapped[15] = addr[3];
        mapped
    } else {
        *addr
    };
    TRUSTED_RESOLVERS.get(&Key::new(128, key)).is_some()
}

/// Whether this socket sent the query `at` answers, to the address and port it came from,
/// with the same question, and not too long ago.
#[inline(always)]
fn solicited(cookie: u64, at: &Located, question: u64) -> bool {
    // SAFETY: a plain value, copied out.
    let Some(query) = (unsafe { DNS_QUERIES.get(&query_key(cookie, at.txid)) }).copied() else {
        return false;
    };
    query.addr == at.peer
        && query.port == at.port
        && query.family == at.family
        && query.question == question
        && query.expires_ns > now_ns()
}

/// Fills a `Dns` record: the message (as much as fits), what the checks said of it
/// (`checks`: `DNS_FLAG_*`) and, in block mode and when `believed`, what the kernel learned
/// from it.
///
/// # Safety
/// `event` is a reservation of a `DnsEvent`.
#[inline(always)]
unsafe fn fill(
    ctx: &SkBuffContext,
    at: &Located,
    event: *mut DnsEvent,
    cookie: u64,
    believed: bool,
    checks: u8,
) {
    // SAFETY: the caller's promise; `skb` is the program's context.
    unsafe {
        (*event).cookie = cookie;
        (*event).netns = netns_cookie(ctx);
        (*event).family = at.family;
        (*event).sport = at.port;
        (*event).transport = at.transport;
        (*event)._pad = 0;
        (*event)._pad2 = 0;
        (*event).msg_len = at.len;
        (*event).saddr = at.peer;
        let mut flags = if at.partial != 0 { DNS_FLAG_CUT } else { 0u8 };
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
            Some(set) if believed => learn(ctx, at, set, (*event).netns).unwrap_or_else(|| {
                flags |= DNS_FLAG_KERNEL_PARSE_FAILED;
                0
            }),
            _ => 0,
        };
        (*event).approved = approved;
        (*event).flags = flags | checks;
    }
}

/// Answer record types that carry an address.
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// Block mode, a believed answer: which domain rules approve the question, and their answers
/// learned. `None` when the message could not be parsed.
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

/// Most labels [`digest`] walks: a name of single-character labels fills 255 bytes with 127.
const DIGEST_LABELS_MAX: u32 = 128;
/// Words of eight bytes [`digest`] hashes: a whole name of 255 bytes.
const DIGEST_WORDS: usize = DNS_NAME_MAX.div_ceil(8);

/// A hash of the only question, exactly as on the wire (name bytes, type, class): what an
/// answer must repeat to match its query. Cheap on purpose (one walk over the labels, one
/// over eight-byte words), so every query and answer can afford it. `None` when the message
/// has not exactly one question or its name cannot be read.
///
/// Never inlined: in its own frame, what its loops leave behind goes when it returns, and every
/// path through it meets again in the caller.
#[inline(never)]
fn digest(ctx: &SkBuffContext, at: &Located) -> Option<u64> {
    if u16::from_be(load(ctx, at.off + 4)?) != 1 {
        return None;
    }
    let buf = NAME_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, used only by this program invocation.
    let buf = unsafe { &mut *buf };
    let avail = at.len.checked_sub(12)?;
    let want = (avail.min(DNS_NAME_MAX as u32) & 0x1ff).clamp(1, DNS_NAME_MAX as u32);
    // SAFETY: `buf` has DNS_NAME_MAX + 1 bytes; `want` ≤ DNS_NAME_MAX.
    if unsafe { bpf_skb_load_bytes(ctx.as_ptr(), at.off + 12, buf.as_mut_ptr().cast(), want) } != 0
    {
        return None;
    }
    // The name's length: labels up to the root's zero byte (no compression in a question).
    let mut pos = 0u32;
    let mut i = 0;
    let mut name_len = 0u32;
    while i < DIGEST_LABELS_MAX {
        // The mask stays in the object code only behind `opaque` (LLVM knows `pos < want`).
        let index = opaque(u64::from(pos)) as usize & DNS_NAME_MAX;
        let len = u32::from(*buf.get(index)?);
        if len == 0 {
            name_len = pos + 1;
            break;
        }
        pos += len + 1;
        if len > 63 || pos >= want {
            return None;
        }
        i += 1;
    }
    if name_len == 0 {
        return None;
    }
    let slot = DIGEST_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, used only by this program invocation.
    let name_len = unsafe {
        core::ptr::write_volatile(slot, name_len);
        core::ptr::read_volatile(slot)
    };
    if name_len > DNS_NAME_MAX as u32 {
        return None;
    }
    let mut hash = NAME_HASH_SEED;
    let mut w = 0usize;
    while w < DIGEST_WORDS {
        let at = w * 8;
        if at >= name_len as usize {
            break;
        }
        let index = opaque(at as u64) as usize & DNS_NAME_MAX;
        // SAFETY: `index` ≤ 255 and the buffer has 8 bytes of slack past 256.
        let mut word = unsafe { core::ptr::read_unaligned(buf.as_ptr().add(index).cast::<u64>()) };
        let rest = name_len as usize - at;
        if rest < 8 {
            word &= (1u64 << (rest * 8)) - 1;
        }
        hash = name_hash_prepend(hash, word);
        w += 1;
    }
    let type_class: u32 = load(ctx, at.off + 12 + name_len)?;
    Some(name_hash_prepend(hash, u64::from(type_class)))
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
        // The length read again: each exit of the word loop knows another range of `len`, and
        // carried into `pos` each would walk the rest of the name on its own; a fresh read is
        // one unknown value, so they meet again here (about 10 % of the verifier's work).
        // SAFETY: a one-byte read of the per-CPU scratch; the index is masked into it.
        let again = unsafe { core::ptr::read_volatile(buf.as_ptr().add(pos & DNS_NAME_MAX)) };
        if again > 63 {
            return None;
        }
        pos += usize::from(again) + 1;
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
