//! The packet programs of the monitored cgroup: one per direction, so every packet runs one
//! program that hands it to the modules that want it.
//!
//! Programs (their names are older than this module and kept: pinned links carry them):
//! - `conn_egress` (`cgroup_skb/egress`): a UDP datagram's bytes into its flow (`conn`); a
//!   query to the resolver port remembered (`dns`); a TCP packet's first bytes copied, and a
//!   gated connection's payload held (`payload`, the only verdict this program gives), and
//!   with progress reporting on, the socket's counters copied (`conn`).
//! - `dns_ingress` (`cgroup_skb/ingress`): a UDP datagram's bytes into its flow (`conn`); an
//!   answer from the resolver port copied, checked and, in block mode, learned (`dns`); the
//!   first segment a server sends copied (`payload`).
//!
//! No maps or globals of its own. Uses `shared`, `conn`, `dns` and `payload`.

use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};

use crate::{
    conn, dns, payload,
    shared::{ip_header, IPPROTO_TCP, IPPROTO_UDP},
};

/// `cgroup_skb` verdicts.
const PASS: i32 = 1;
const DROP: i32 = 0;

// Each program calls the DNS code last: the verifier explores what follows a call once per
// state the call ends in, and the DNS parser ends in many.

#[cgroup_skb(egress)]
pub fn conn_egress(ctx: SkBuffContext) -> i32 {
    let Some(ip) = ip_header(&ctx) else {
        return PASS;
    };
    let mut verdict = PASS;
    match ip.protocol {
        IPPROTO_UDP => conn::count_egress(&ctx, &ip),
        IPPROTO_TCP if conn::tracking() && !payload::on_egress(&ctx, &ip) => verdict = DROP,
        _ => {}
    }
    dns::note_query(&ctx, &ip);
    verdict
}

#[cgroup_skb(ingress)]
pub fn dns_ingress(ctx: SkBuffContext) -> i32 {
    let Some(ip) = ip_header(&ctx) else {
        return PASS;
    };
    match ip.protocol {
        IPPROTO_UDP => conn::count_ingress(&ctx, &ip),
        IPPROTO_TCP if conn::tracking() => payload::on_ingress(&ctx, &ip),
        _ => {}
    }
    dns::on_answer(&ctx, &ip);
    PASS
}
