//! Arbitrary first bytes of a connection, cut into chunks that arrive in any order, through
//! `Reassembly` into `classify_outbound` and `parse_response`: nothing may panic, and what
//! comes out must hold the bounds the agent relies on.
//!
//! Input: `[k][k split bytes][payload]` (`k` taken modulo 16). The split bytes choose the
//! chunk sizes (each byte + 1, in turn), the order the chunks are inserted in, which are sent
//! twice and which are re-sent overlapping the next one; a first split byte with its top bit
//! set also shrinks the reassembly limit to `(b & 0x7f) * 64` bytes. No split bytes: the
//! payload is one chunk.
#![no_main]

use egret::payload::{
    classify_outbound, http, is_printable, parse_response, reassembly::Reassembly, tls, FirstBytes,
    FIRST_BYTES_LIMIT,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let (split, payload) = rest.split_at(usize::from(k % 16).min(rest.len()));
    let limit = match split.first() {
        Some(&b) if b & 0x80 != 0 => usize::from(b & 0x7f) * 64,
        _ => FIRST_BYTES_LIMIT,
    };
    let kept = &payload[..payload.len().min(limit)];

    // One chunk.
    let mut whole = Reassembly::new(limit);
    whole.insert(0, payload);
    assert_eq!(whole.contiguous(), kept);
    assert!(whole.buffered() <= limit);

    // Many chunks, in the order the split bytes choose, with repeats and overlaps.
    let plan = plan(payload.len(), split);
    let mut pieces = Reassembly::new(limit);
    let checks = plan.len().div_ceil(8).max(1);
    let mut prefixes = Vec::new();
    for (n, &(at, len)) in plan.iter().enumerate() {
        pieces.insert(
            u32::try_from(at).unwrap_or(u32::MAX),
            &payload[at..at + len],
        );
        assert!(pieces.buffered() <= limit, "grew past its limit");
        let prefix = pieces.contiguous();
        assert!(kept.starts_with(prefix), "the prefix is not the stream's");
        if n % checks == 0 {
            prefixes.push(prefix.len());
        }
    }
    assert_eq!(
        pieces.contiguous(),
        whole.contiguous(),
        "chunks and one chunk differ"
    );

    // Nothing moves the prefix: bytes past the limit, or other bytes for offsets already
    // received (the first bytes stay).
    let flipped: Vec<u8> = payload.iter().map(|b| !b).collect();
    pieces.insert(0, &flipped);
    pieces.insert(u32::try_from(limit).unwrap_or(u32::MAX), b"past");
    pieces.insert(u32::MAX, b"far");
    if !payload.is_empty() {
        assert_eq!(pieces.contiguous(), kept);
    }
    assert!(pieces.buffered() <= limit);

    let bytes = whole.contiguous();
    let answer = classify_outbound(bytes);
    assert_eq!(classify_outbound(pieces.contiguous()), answer);
    check_answer(&answer, bytes);
    // A final TLS answer, an `Unreadable` and an `Other` do not change with more bytes.
    for len in prefixes {
        let early = classify_outbound(&bytes[..len]);
        check_answer(&early, &bytes[..len]);
        match &early {
            FirstBytes::Tls(_) | FirstBytes::Unreadable | FirstBytes::Other => {
                assert_eq!(early, answer, "at {len}")
            }
            FirstBytes::Http(_) => {
                assert!(matches!(
                    answer,
                    FirstBytes::Http(_) | FirstBytes::Unreadable | FirstBytes::Other
                ))
            }
            FirstBytes::NeedMore => {}
        }
    }

    if let Some(response) = parse_response(bytes) {
        assert!((100..=599).contains(&response.status_code));
        assert!(bytes.starts_with(response.version.as_str().as_bytes()));
    }
});

/// (offset, length) of each chunk to insert, in order.
fn plan(len: usize, split: &[u8]) -> Vec<(usize, usize)> {
    if split.is_empty() {
        return vec![(0, len)];
    }
    let mut chunks = Vec::new();
    let mut at = 0;
    while at < len {
        let size = (usize::from(split[chunks.len() % split.len()]) + 1).min(len - at);
        chunks.push((at, size));
        at += size;
    }
    // A shuffle the split bytes decide.
    let key =
        |i: usize| (i.wrapping_mul(2_654_435_761) ^ usize::from(split[i % split.len()])) % 251;
    let mut order: Vec<usize> = (0..chunks.len()).collect();
    order.sort_by_key(|&i| (key(i), i));
    let mut plan = Vec::new();
    for i in order {
        let (at, size) = chunks[i];
        let b = split[i % split.len()];
        if b & 2 != 0 {
            if let Some(&(_, next)) = chunks.get(i + 1) {
                plan.push((at, size + next));
            }
        }
        plan.push((at, size));
        if b & 1 != 0 {
            plan.push((at, size));
        }
    }
    plan
}

fn check_answer(answer: &FirstBytes, bytes: &[u8]) {
    match answer {
        FirstBytes::Tls(hello) => check_hello(hello),
        FirstBytes::Http(request) => check_request(request),
        FirstBytes::Other => {}
        FirstBytes::Unreadable => {
            // Only what starts like TLS or like a request line.
            let skipped = bytes.iter().position(|&b| b != b'\r' && b != b'\n');
            assert!(
                bytes.first() == Some(&0x16) || skipped.is_some(),
                "{bytes:?}"
            );
        }
        FirstBytes::NeedMore => {
            assert!(
                bytes.len() < FIRST_BYTES_LIMIT,
                "NeedMore with a full buffer"
            );
        }
    }
}

/// A host name or SNI: a lower-case DNS name, or an IP literal's text.
fn check_host(host: &str) {
    assert!(!host.is_empty() && host.len() <= 253, "{host:?}");
    assert!(
        host.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.:".contains(&b)),
        "{host:?}"
    );
}

fn check_hello(hello: &tls::ClientHello) {
    if let Some(name) = &hello.server_name {
        check_host(name);
        assert!(!name.contains(':'));
    }
    assert!(hello.alpn.len() <= tls::MAX_ALPN_PROTOCOLS);
    for id in &hello.alpn {
        assert!(!id.is_empty() && id.len() <= tls::MAX_ALPN_LEN, "{id:?}");
        assert!(is_printable(id) && !id.contains(' '), "{id:?}");
    }
    assert!(!hello.versions.is_empty());
    assert!(!hello.cipher_suites.is_empty());
    // `t13d1516h2_8daaf6152771_e5627efa2ab1`
    let ja4 = hello.ja4.as_bytes();
    assert_eq!(ja4.len(), 36, "{}", hello.ja4);
    assert!(is_printable(&hello.ja4));
    assert_eq!(
        (ja4[0], ja4[10], ja4[23]),
        (b't', b'_', b'_'),
        "{}",
        hello.ja4
    );
    assert!(matches!(ja4[3], b'd' | b'i'));
    assert_eq!(ja4[3] == b'd', hello.extensions.contains(&0));
    assert!(ja4[4..8].iter().all(u8::is_ascii_digit));
    assert!(ja4[8..10].iter().all(u8::is_ascii_alphanumeric));
    for hash in [&ja4[11..23], &ja4[24..36]] {
        assert!(hash
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)));
    }
}

fn check_request(request: &http::Request) {
    assert!(request.path.len() <= http::MAX_PATH);
    assert!(is_printable(&request.path) && !request.path.contains(' '));
    if let Some(query) = &request.query {
        assert!(query.len() <= http::MAX_QUERY);
        assert!(is_printable(query) && !query.contains(' '));
    } else {
        assert!(!request.query_truncated);
    }
    if let Some(host) = &request.host {
        check_host(host);
        assert!(request.host_sent);
    }
    if let Some(agent) = &request.user_agent {
        assert!(agent.len() <= http::MAX_USER_AGENT);
        assert!(is_printable(agent));
    }
}
