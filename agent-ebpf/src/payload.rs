//! The first bytes of each outbound TCP connection, and the gate that holds them back until
//! their name is checked.
//!
//! Called by the `cgroup_skb` programs (`skb`) for TCP packets of connections `conn` follows
//! (their `CONNS` entry), and by `socket` at `connect()`:
//! - [`on_egress`]: the client's first flight (a TLS ClientHello, an HTTP request: up to
//!   `PAYLOAD_OUT_MAX` bytes, as much as the first TLS record says, else one chunk) is copied
//!   to userspace as `Payload` events, offsets counted from the first sequence number after the
//!   handshake, so retransmissions and GSO packets reassemble. A **gated** connection (block
//!   mode: approved only through a learned address, or on a `name_gate` port) has every
//!   payload packet dropped until userspace, having read the name, writes `GATE_PASS` into
//!   `GATES`: no byte of a first flight that names an unapproved destination reaches the
//!   server. TCP sends the held data again on its own (zero-window probe timer); userspace
//!   destroys a socket whose gate it closes.
//! - [`on_ingress`]: the first segment the server sends (an HTTP status line), once.
//! - [`open_gate`]: `connect()` of a gated connection puts its pending gate in `GATES`.
//!
//!   A gated connection's data in its SYN (TCP Fast Open) is dropped: no sequence base yet
//!   to copy it against; the kernel sends the SYN alone and the data again after the
//!   handshake, where the gate holds it.
//!
//! Map: `GATES` (hash, socket cookie → `GATE_*`): gated connections still waiting. The kernel
//! inserts the pending value and removes the entry once it has seen `GATE_PASS`; userspace
//! writes the decision and removes the entries of connections that ended. `GATES` is a plain
//! hash (never evicts), `CONNS` an LRU map: a payload packet of a socket without a `CONNS`
//! entry is dropped while `GATES` holds a pending or refused gate for it, so an evicted
//! entry never opens a gate (one more lookup per payload packet of unfollowed sockets).
//!
//! Global (set by userspace): `FIRST_BYTES` (`--first-bytes`): zero = copy nothing (gates
//! still hold and copy what they hold: userspace needs it to decide).
//!
//! Uses `shared` and `conn` (the connection's entry).

use core::ptr::addr_of_mut;

use agent_common::{
    ConnState, Counter, EventKind, PayloadEvent, CONN_FLAG_GATED, CONN_FLAG_GATE_PASSED,
    CONN_FLAG_IN_SEEN, CONN_FLAG_OUT_SEEN, CONN_FLAG_SEQ_BASES, GATES_MAX, GATE_PASS,
    PAYLOAD_CHUNK, PAYLOAD_CHUNKS_PER_PACKET, PAYLOAD_IN, PAYLOAD_OUT, PAYLOAD_OUT_MAX,
};
use aya_ebpf::{
    helpers::generated::bpf_skb_load_bytes, macros::map, maps::HashMap, programs::SkBuffContext,
    EbpfContext as _,
};

use crate::{
    conn,
    shared::{emit_waking, fail, global, load, opaque, socket_cookie, IpHeader, Origin},
};

/// Gated connections waiting for their name check: socket cookie → `GATE_*`.
#[map]
static GATES: HashMap<u64, u32> = HashMap::with_max_entries(GATES_MAX, 0);

/// Non-zero: copy the first bytes of every followed connection (`--first-bytes`).
#[unsafe(no_mangle)]
static FIRST_BYTES: u32 = 1;

/// TLS record type of a handshake, the first byte of a ClientHello's record.
const TLS_HANDSHAKE: u8 = 0x16;
/// Bytes of a TLS record header.
const TLS_RECORD_HEADER: u32 = 5;

/// `connect()` of a connection whose first payload must wait for its name check. `false` when
/// the gate could not be stored (the connection must then be refused).
#[inline(always)]
pub(crate) fn open_gate(cookie: u64, gate: u32) -> bool {
    if let Err(error) = GATES.insert(&cookie, &gate, 0) {
        fail(Counter::GateUpdateFailed, "GATES", error);
        return false;
    }
    true
}

/// Whether the socket has a gate that is not open (pending, or closed by userspace).
#[inline(always)]
fn gate_holds(cookie: u64) -> bool {
    // SAFETY: a plain value, copied out.
    unsafe { GATES.get(&cookie) }.is_some_and(|&gate| gate != GATE_PASS)
}

/// Forgets a gate that was opened for a connection that will not be followed.
#[inline(always)]
pub(crate) fn close_gate(cookie: u64) {
    let _ = GATES.remove(&cookie);
}

/// The payload of a TCP packet: its offset in the packet, length, and sequence number.
struct Segment {
    off: u32,
    len: u32,
    seq: u32,
}

#[inline(always)]
fn segment(ctx: &SkBuffContext, ip: &IpHeader) -> Option<Segment> {
    let off = payload_at(ctx, ip)?;
    let seq = u32::from_be(load(ctx, ip.l4 + 4)?);
    Some(Segment {
        off,
        len: ctx.len() - off,
        seq,
    })
}

/// Where a TCP packet's payload starts; `None` when it carries none (a SYN, an ACK, a RST):
/// one load, checked before the connection's entry is looked up.
#[inline(always)]
fn payload_at(ctx: &SkBuffContext, ip: &IpHeader) -> Option<u32> {
    let doff = u32::from(load::<u8>(ctx, ip.l4 + 12)? >> 4) * 4;
    let off = ip.l4 + doff;
    (ctx.len() > off).then_some(off)
}

/// Egress of a TCP packet: copies the first flight, and holds a gated connection's payload.
/// Returns `false` when the packet must be dropped.
#[inline(never)]
pub(crate) fn on_egress(ctx: &SkBuffContext, ip: &IpHeader) -> bool {
    // A packet without payload is neither copied nor held: it needs the entry only to copy
    // the counters for progress lines.
    if !conn::progress_on() && payload_at(ctx, ip).is_none() {
        return true;
    }
    let cookie = socket_cookie(ctx);
    let Some(state) = conn::state_of(cookie) else {
        // Not followed, or its entry was evicted from the LRU map: a gate still open for the
        // socket holds its payload all the same (fail closed).
        return payload_at(ctx, ip).is_none() || !gate_holds(cookie);
    };
    conn::sample_tcp(ctx, state);
    // SAFETY: a live map value; only this socket's packets write these fields.
    let flags = unsafe { (*state).flags };
    let gated = flags & (CONN_FLAG_GATED | CONN_FLAG_GATE_PASSED) == CONN_FLAG_GATED;
    let copying = global(&FIRST_BYTES) != 0 && flags & CONN_FLAG_OUT_SEEN == 0;
    if !gated && !copying {
        return true;
    }
    let Some(seg) = segment(ctx, ip) else {
        return true; // a SYN, an ACK, a FIN: nothing a server could act on
    };
    if flags & CONN_FLAG_SEQ_BASES == 0 {
        // Payload before the handshake completed: data in the SYN (TCP Fast Open). A gated
        // connection's is dropped: the kernel sees the error, sends the SYN alone, and sends
        // the data again once connected, where the gate holds it. Not copied (no base yet).
        return !gated;
    }
    let mut pass = true;
    if gated {
        // SAFETY: a plain value, copied out.
        if unsafe { GATES.get(&cookie) }.copied() == Some(GATE_PASS) {
            // SAFETY: a live map value; flags are only ever OR-ed.
            unsafe { (*state).flags |= CONN_FLAG_GATE_PASSED };
            let _ = GATES.remove(&cookie);
        } else {
            pass = false; // pending, closed, or lost: held (fail closed)
        }
    }
    if copying || !pass {
        // SAFETY: a live map value.
        unsafe { copy_out(ctx, state, cookie, &seg, !pass) };
    }
    pass
}

/// Copies the part of `seg` inside the first flight as chunks.
///
/// # Safety
/// `state` is a live `CONNS` value of this socket.
#[inline(always)]
unsafe fn copy_out(
    ctx: &SkBuffContext,
    state: *mut ConnState,
    cookie: u64,
    seg: &Segment,
    held: bool,
) {
    // SAFETY: the caller's promise.
    unsafe {
        let rel = seg.seq.wrapping_sub((*state).out_base);
        let mut want = (*state).out_want;
        if want == 0 {
            want = first_flight(ctx, seg, rel);
            (*state).out_want = want;
        }
        if rel >= want {
            (*state).flags |= CONN_FLAG_OUT_SEEN;
            return;
        }
        let mut i = 0u32;
        while i < PAYLOAD_CHUNKS_PER_PACKET {
            let at = i * PAYLOAD_CHUNK as u32;
            if at >= seg.len || rel + at >= want {
                break;
            }
            let len = (seg.len - at)
                .min(want - rel - at)
                .min(PAYLOAD_CHUNK as u32);
            emit_chunk(ctx, cookie, PAYLOAD_OUT, seg.off + at, rel + at, len, held);
            i += 1;
        }
        if !held && rel + seg.len >= want {
            (*state).flags |= CONN_FLAG_OUT_SEEN;
        }
    }
}

/// How many bytes of the first flight to copy, from its first packet: a TLS record's whole
/// length (a ClientHello longer than one segment), else one chunk.
#[inline(always)]
fn first_flight(ctx: &SkBuffContext, seg: &Segment, rel: u32) -> u32 {
    if rel != 0 {
        return PAYLOAD_CHUNK as u32; // the start was missed: whatever comes, one chunk
    }
    let tls = load::<u8>(ctx, seg.off) == Some(TLS_HANDSHAKE);
    match load::<u16>(ctx, seg.off + 3) {
        Some(len) if tls => (TLS_RECORD_HEADER + u32::from(u16::from_be(len))).min(PAYLOAD_OUT_MAX),
        _ => seg.len.min(PAYLOAD_CHUNK as u32),
    }
}

/// Ingress of a TCP packet: the first segment the server sends, once.
#[inline(never)]
pub(crate) fn on_ingress(ctx: &SkBuffContext, ip: &IpHeader) {
    if global(&FIRST_BYTES) == 0 || payload_at(ctx, ip).is_none() {
        return;
    }
    let cookie = socket_cookie(ctx);
    let Some(state) = conn::state_of(cookie) else {
        return;
    };
    // SAFETY: a live map value.
    let (flags, base) = unsafe { ((*state).flags, (*state).in_base) };
    if flags & CONN_FLAG_SEQ_BASES == 0 || flags & CONN_FLAG_IN_SEEN != 0 {
        return;
    }
    let Some(seg) = segment(ctx, ip) else {
        return;
    };
    // SAFETY: a live map value; flags are only ever OR-ed.
    unsafe { (*state).flags |= CONN_FLAG_IN_SEEN };
    let rel = seg.seq.wrapping_sub(base);
    if rel == 0 {
        emit_chunk(ctx, cookie, PAYLOAD_IN, seg.off, 0, seg.len, false);
    }
}

/// One `Payload` event: `len` bytes (at most one chunk) at `off` of the packet, which are at
/// `offset` of the direction's bytes.
#[inline(always)]
fn emit_chunk(
    ctx: &SkBuffContext,
    cookie: u64,
    direction: u8,
    off: u32,
    offset: u32,
    len: u32,
    held: bool,
) {
    // A packet is sent or received in any context: the header names no task.
    emit_waking(
        EventKind::Payload,
        Origin::Nobody,
        held,
        |event: *mut PayloadEvent| {
            // SAFETY: a reservation of a `PayloadEvent`; `skb` is the program's context.
            unsafe {
                (*event).cookie = cookie;
                (*event).offset = offset;
                (*event).direction = direction;
                (*event).held = u8::from(held);
                (*event)._pad = [0; 6];
                (*event).len = 0;
                let data = addr_of_mut!((*event).data) as *mut u8;
                let n = opaque(u64::from(len));
                // The verifier needs 1..=PAYLOAD_CHUNK on the very register passed.
                if n >= 1
                    && n <= PAYLOAD_CHUNK as u64
                    && bpf_skb_load_bytes(ctx.as_ptr(), off, data.cast(), n as u32) == 0
                {
                    (*event).len = n as u32;
                }
            }
        },
    );
}
