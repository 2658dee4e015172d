//! One `recv` of a sock_diag dump (netlink messages the kernel, or anything holding the
//! socket's other end, wrote) through `sockdiag::parse` and `sockdiag::outbound`: nothing may
//! panic, every socket is IPv4 or IPv6, and the outbound ones are some of
//! them.
#![no_main]

use egret::sockdiag::{outbound, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut socks = Vec::new();
    let done = parse(data, &mut socks);
    // Each socket takes a 16-byte header and a 72-byte message at least.
    assert!(socks.len() <= data.len() / 88, "{} sockets", socks.len());
    if done.is_ok_and(|done| done) {
        assert!(data.len() >= 16);
    }
    for sock in &socks {
        assert!(matches!(sock.family, 2 | 10), "family {}", sock.family);
        if sock.family == 2 {
            assert!(sock.local.is_ipv4() && sock.remote.is_ipv4());
        }
    }
    let out = outbound(&socks);
    assert!(out.iter().all(|s| socks.contains(s) && s.cookie != 0));
});
