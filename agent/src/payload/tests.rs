//! Real first bytes through the whole module: ClientHellos of Chrome, Firefox, Python's `ssl`
//! and `openssl s_client`, curl's requests and Python's `http.server` responses (see
//! `testdata/README.md` for where each comes from and how its JA4 was checked).

use super::{
    classify_outbound, http, parse_response, reassembly::Reassembly, tls, FirstBytes,
    FIRST_BYTES_LIMIT,
};

fn hex(text: &str) -> Vec<u8> {
    let text = text.trim();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// A TLS fixture and what it must parse to.
struct Hello {
    name: &'static str,
    hex: &'static str,
    server_name: Option<&'static str>,
    alpn: &'static [&'static str],
    top_version: u16,
    ja4: &'static str,
}

/// JA4 values: from FoxIO's own snapshots for their pcaps, and from FoxIO's `ja4.py` run over
/// a pcap of each generated hello (`testdata/README.md`).
const HELLOS: &[Hello] = &[
    // The spec's example fingerprint (JA4.md), from FoxIO's `tls-sni.pcapng`.
    Hello {
        name: "foxio_chrome_sni",
        hex: include_str!("testdata/foxio_chrome_sni.hex"),
        server_name: Some("clientservices.googleapis.com"),
        alpn: &["h2", "http/1.1"],
        top_version: 0x0304,
        ja4: "t13d1516h2_8daaf6152771_e5627efa2ab1",
    },
    Hello {
        name: "foxio_firefox",
        hex: include_str!("testdata/foxio_firefox.hex"),
        server_name: Some("contile.services.mozilla.com"),
        alpn: &["h2", "http/1.1"],
        top_version: 0x0304,
        ja4: "t13d1715h2_5b57614c22b0_3d5424432f57",
    },
    Hello {
        name: "foxio_tls12_alpn_h2",
        hex: include_str!("testdata/foxio_tls12_alpn_h2.hex"),
        server_name: Some("www.cloudflare.com"),
        alpn: &["h2", "http/1.1"],
        top_version: 0x0303,
        ja4: "t12d4605h2_85626a9a5f7f_aaf95bb78ec9",
    },
    // First ALPN id is the bytes 0xba 0xad: the spec's rule gives "bd" (first and last hex
    // digit). FoxIO's snapshot says "99", from tshark's rendering of the bytes as U+FFFD.
    Hello {
        name: "foxio_non_ascii_alpn",
        hex: include_str!("testdata/foxio_non_ascii_alpn.hex"),
        server_name: Some("clientservices.googleapis.com"),
        alpn: &["%BA%AD", "http/1.1"],
        top_version: 0x0304,
        ja4: "t13d1516bd_8daaf6152771_e5627efa2ab1",
    },
    Hello {
        name: "python_tls13_sni_alpn",
        hex: include_str!("testdata/python_tls13_sni_alpn.hex"),
        server_name: Some("www.example.com"),
        alpn: &["h2", "http/1.1"],
        top_version: 0x0304,
        ja4: "t13d1812h2_85036bcba153_d41ae481755e",
    },
    Hello {
        name: "python_tls12_no_sni",
        hex: include_str!("testdata/python_tls12_no_sni.hex"),
        server_name: None,
        alpn: &[],
        top_version: 0x0303,
        ja4: "t12i150600_d68b136fe8d9_e7e480e5a997",
    },
    // `-servername api.Example.ORG`: lower-cased.
    Hello {
        name: "openssl_s_client",
        hex: include_str!("testdata/openssl_s_client.hex"),
        server_name: Some("api.example.org"),
        alpn: &["http/1.1", "h2"],
        top_version: 0x0304,
        ja4: "t13d3111h1_e8f1e7e78f70_1f22a2ca17c4",
    },
    // Python's hello padded to 1,901 bytes with the SNI moved last: same fingerprint (JA4
    // sorts the extensions).
    Hello {
        name: "large_sni_last",
        hex: include_str!("testdata/large_sni_last.hex"),
        server_name: Some("www.example.com"),
        alpn: &["h2", "http/1.1"],
        top_version: 0x0304,
        ja4: "t13d1812h2_85036bcba153_d41ae481755e",
    },
];

fn hello_of(bytes: &[u8]) -> tls::ClientHello {
    match classify_outbound(bytes) {
        FirstBytes::Tls(hello) => hello,
        other => panic!("not a ClientHello: {other:?}"),
    }
}

#[test]
fn client_hellos_give_their_name_alpn_and_ja4() {
    for fixture in HELLOS {
        let bytes = hex(fixture.hex);
        let hello = hello_of(&bytes);
        assert_eq!(
            hello.server_name.as_deref(),
            fixture.server_name,
            "{}",
            fixture.name
        );
        assert_eq!(hello.alpn, fixture.alpn, "{}", fixture.name);
        assert_eq!(
            hello.versions.iter().max(),
            Some(&fixture.top_version),
            "{}",
            fixture.name
        );
        assert_eq!(hello.ja4, fixture.ja4, "{}", fixture.name);
        assert!(hello.versions.iter().all(|&v| !super::ja4::is_grease(v)));
    }
}

#[test]
fn every_prefix_of_a_hello_needs_more() {
    for fixture in HELLOS {
        let bytes = hex(fixture.hex);
        for cut in 0..bytes.len() {
            assert_eq!(
                classify_outbound(&bytes[..cut]),
                FirstBytes::NeedMore,
                "{} cut at {cut}",
                fixture.name
            );
        }
        // Bytes after the hello (a client's early data) are not read.
        let mut more = bytes.clone();
        more.extend_from_slice(&[23, 3, 3, 0, 1, 0xff]);
        assert_eq!(classify_outbound(&more), classify_outbound(&bytes));
    }
}

#[test]
fn the_large_hello_is_over_1500_bytes_with_the_sni_last() {
    let bytes = hex(include_str!("testdata/large_sni_last.hex"));
    assert!(bytes.len() > 1500);
    let hello = hello_of(&bytes);
    assert_eq!(hello.extensions.last(), Some(&0x0000));
    assert!(hello.extensions.contains(&0x0015), "padding");
}

/// Splits the stream into the given chunk sizes and returns (offset, chunk) pairs.
fn chunks(bytes: &[u8], sizes: &[usize]) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < bytes.len() {
        let size = sizes[i % sizes.len()].min(bytes.len() - at);
        out.push((u32::try_from(at).unwrap(), bytes[at..at + size].to_vec()));
        at += size;
        i += 1;
    }
    out
}

/// Feeds `order` into a reassembly, classifying the prefix after each chunk: `NeedMore` until
/// the last byte is in, then the whole hello.
fn feed(bytes: &[u8], order: &[(u32, Vec<u8>)]) -> FirstBytes {
    let mut r = Reassembly::new(FIRST_BYTES_LIMIT);
    let mut answer = FirstBytes::NeedMore;
    for (offset, chunk) in order {
        r.insert(*offset, chunk);
        answer = classify_outbound(r.contiguous());
        if r.contiguous().len() < bytes.len() {
            assert_eq!(answer, FirstBytes::NeedMore);
        }
    }
    assert_eq!(r.contiguous(), bytes);
    answer
}

#[test]
fn a_large_hello_split_across_segments_in_any_order() {
    let bytes = hex(include_str!("testdata/large_sni_last.hex"));
    let whole = classify_outbound(&bytes);
    // Segments of a 1500-byte MTU, of a small MSS, and of odd sizes.
    for sizes in [&[1448][..], &[536], &[1, 7, 300, 13, 1000], &[5], &[4, 1]] {
        let forward = chunks(&bytes, sizes);
        assert_eq!(feed(&bytes, &forward), whole);
        let mut backward = forward.clone();
        backward.reverse();
        assert_eq!(feed(&bytes, &backward), whole);
        // Even chunks first, then odd ones, each sent twice (retransmissions).
        let mut interleaved: Vec<_> = forward.iter().step_by(2).cloned().collect();
        interleaved.extend(forward.iter().skip(1).step_by(2).cloned());
        let doubled: Vec<_> = interleaved
            .iter()
            .flat_map(|c| [c.clone(), c.clone()])
            .collect();
        assert_eq!(feed(&bytes, &doubled), whole);
    }
    // Overlapping retransmissions: every chunk re-sent together with the next one.
    let forward = chunks(&bytes, &[100]);
    let mut overlapping = Vec::new();
    for pair in forward.windows(2).rev() {
        let mut merged = pair[0].1.clone();
        merged.extend_from_slice(&pair[1].1);
        overlapping.push((pair[0].0, merged));
        overlapping.push(pair[1].clone());
    }
    assert_eq!(feed(&bytes, &overlapping), whole);
}

/// The hello's handshake message re-framed into records of at most `size` bytes each.
fn reframe(bytes: &[u8], size: usize) -> Vec<u8> {
    let length = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
    let message = &bytes[5..5 + length];
    let mut out = Vec::new();
    for fragment in message.chunks(size) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&u16::try_from(fragment.len()).unwrap().to_be_bytes());
        out.extend_from_slice(fragment);
    }
    out
}

#[test]
fn a_hello_spanning_several_records() {
    for fixture in HELLOS {
        let bytes = hex(fixture.hex);
        let whole = hello_of(&bytes);
        // Records of 1 byte split even the handshake header.
        for size in [1, 3, 100, 512] {
            let framed = reframe(&bytes, size);
            assert_eq!(
                hello_of(&framed),
                whole,
                "{} in records of {size}",
                fixture.name
            );
            for cut in [1, 4, 5, 6, framed.len() / 2, framed.len() - 1] {
                assert_eq!(classify_outbound(&framed[..cut]), FirstBytes::NeedMore);
            }
        }
    }
}

/// A ClientHello record (or records, when longer than one may be) with the given cipher
/// suites and extensions.
pub(crate) fn build_hello(ciphers: &[u16], extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x11; 32]);
    body.push(0);
    body.extend_from_slice(&u16::try_from(ciphers.len() * 2).unwrap().to_be_bytes());
    for c in ciphers {
        body.extend_from_slice(&c.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    let mut block = Vec::new();
    for (kind, data) in extensions {
        block.extend_from_slice(&kind.to_be_bytes());
        block.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        block.extend_from_slice(data);
    }
    body.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&block);
    let mut message = vec![1];
    message.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    message.extend_from_slice(&body);
    let mut out = Vec::new();
    for fragment in message.chunks(1 << 14) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&u16::try_from(fragment.len()).unwrap().to_be_bytes());
        out.extend_from_slice(fragment);
    }
    out
}

pub(crate) fn sni(names: &[(u8, &[u8])]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for (kind, name) in names {
        list.push(*kind);
        list.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
        list.extend_from_slice(name);
    }
    let mut data = u16::try_from(list.len()).unwrap().to_be_bytes().to_vec();
    data.extend_from_slice(&list);
    (0x0000, data)
}

fn alpn(ids: &[&[u8]]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for id in ids {
        list.push(u8::try_from(id.len()).unwrap());
        list.extend_from_slice(id);
    }
    let mut data = u16::try_from(list.len()).unwrap().to_be_bytes().to_vec();
    data.extend_from_slice(&list);
    (0x0010, data)
}

/// A 4,000-byte hello: in records of one byte each it takes 24,000 bytes.
fn padded_hello() -> Vec<u8> {
    build_hello(
        &[0x1301],
        &[sni(&[(0, b"example.com")]), (0x0015, vec![0; 3900])],
    )
}

#[test]
fn a_hello_too_long_for_the_limit_in_tiny_records_is_refused() {
    let bytes = padded_hello();
    let framed = reframe(&bytes, 1);
    assert!(framed.len() > FIRST_BYTES_LIMIT);
    assert_eq!(classify_outbound(&framed), FirstBytes::Unreadable);
    // Refused as soon as that is certain: once 6 bytes per record plus the rest of the hello
    // in one record would pass the limit, well before the limit itself.
    assert_eq!(classify_outbound(&framed[..15_000]), FirstBytes::Unreadable);
    assert_eq!(classify_outbound(&framed[..12_000]), FirstBytes::NeedMore);
}

#[test]
fn a_full_buffer_is_always_a_final_answer() {
    let framed = reframe(&padded_hello(), 1);
    let mut long_line = b"GET /".to_vec();
    long_line.resize(FIRST_BYTES_LIMIT, b'a');
    for bytes in [
        &framed[..],
        &long_line,
        &[0x16; FIRST_BYTES_LIMIT],
        &[b'G'; FIRST_BYTES_LIMIT],
    ] {
        let mut r = Reassembly::new(FIRST_BYTES_LIMIT);
        r.insert(0, bytes);
        assert!(r.is_full());
        assert!(classify_outbound(r.contiguous()).is_final());
    }
}

#[test]
fn an_invalid_sni_is_dropped_but_the_hello_kept() {
    let long = [b'a'; 300];
    for bad in [
        &b"evil\r\n.example.com"[..],
        b"caf\xc3\xa9.fr",
        b"a..b",
        b"",
        &long,
    ] {
        let hello = hello_of(&build_hello(&[0x1301], &[sni(&[(0, bad)]), alpn(&[b"h2"])]));
        assert_eq!(hello.server_name, None, "{bad:?}");
        assert_eq!(hello.alpn, ["h2"]);
        // JA4 says whether the extension is there, valid or not.
        assert!(hello.ja4.starts_with("t12d0102h2_"), "{}", hello.ja4);
    }
    let hello = hello_of(&build_hello(&[0x1301], &[sni(&[(0, b"WWW.Example.COM.")])]));
    assert_eq!(hello.server_name.as_deref(), Some("www.example.com"));
    // A name type other than host_name is skipped.
    let hello = hello_of(&build_hello(
        &[0x1301],
        &[sni(&[(7, b"x"), (0, b"b.example")])],
    ));
    assert_eq!(hello.server_name.as_deref(), Some("b.example"));
    // A broken SNI extension loses the name only.
    let hello = hello_of(&build_hello(&[0x1301], &[(0x0000, vec![0, 200, 0])]));
    assert_eq!(hello.server_name, None);
    // A second SNI extension (which servers refuse) does not replace the first.
    let hello = hello_of(&build_hello(
        &[0x1301],
        &[
            sni(&[(0, b"first.example")]),
            sni(&[(0, b"second.example")]),
        ],
    ));
    assert_eq!(hello.server_name.as_deref(), Some("first.example"));
}

#[test]
fn alpn_ids_are_escaped_and_bounded() {
    let hello = hello_of(&build_hello(
        &[0x1301],
        &[alpn(&[b"h2\r\n\x00", b"", b"ok"])],
    ));
    assert_eq!(hello.alpn, ["h2%0D%0A%00", "ok"]);
    let long = [b'x'; 255];
    let many: Vec<&[u8]> = vec![&long; 40];
    let hello = hello_of(&build_hello(&[0x1301], &[alpn(&many)]));
    assert_eq!(hello.alpn.len(), tls::MAX_ALPN_PROTOCOLS);
    assert!(hello.alpn.iter().all(|id| id.len() == tls::MAX_ALPN_LEN));
}

#[test]
fn hostile_records_are_refused() {
    let good = build_hello(&[0x1301], &[sni(&[(0, b"example.com")])]);
    assert!(matches!(classify_outbound(&good), FirstBytes::Tls(_)));
    let refused = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = good.clone();
        edit(&mut bytes);
        classify_outbound(&bytes)
    };
    // A handshake length of 16 MiB: refused from the first 9 bytes.
    assert_eq!(
        classify_outbound(&[22, 3, 1, 0x40, 0, 1, 0xff, 0xff, 0xff]),
        FirstBytes::Unreadable
    );
    assert_eq!(
        classify_outbound(&[22, 3, 1, 0x40, 0, 1, 0, 0x40, 0]),
        FirstBytes::Unreadable
    );
    // Not a handshake record, not TLS, not a ClientHello: a first byte of 22 that is not a
    // readable hello is unreadable (a gate refuses it), never "neither TLS nor HTTP". An
    // SSLv2-format hello (no extensions, so no name) is not TLS to egret.
    assert_eq!(refused(&|b| b[1] = 2), FirstBytes::Unreadable);
    assert_eq!(refused(&|b| b[5] = 2), FirstBytes::Unreadable);
    assert_eq!(
        classify_outbound(&[0x80, 0x2e, 0x01, 0x03, 0x01]),
        FirstBytes::Other
    );
    // An empty record, a record over 2^14 bytes.
    assert_eq!(
        classify_outbound(&[22, 3, 1, 0, 0, 1, 0, 0, 4]),
        FirstBytes::Unreadable
    );
    assert_eq!(
        classify_outbound(&[22, 3, 1, 0x40, 1, 1, 0, 0, 4]),
        FirstBytes::Unreadable
    );
    // An alert record in the middle of the hello.
    let mut framed = reframe(&good, 10);
    framed[15] = 21;
    assert_eq!(classify_outbound(&framed), FirstBytes::Unreadable);
    // A handshake length shorter than the hello's fields, longer than them (bytes after the
    // extensions), an odd cipher suite list, an overlong session id, an extension running
    // past the block.
    for (at, value) in [(8, 0x20), (45, 3), (43, 33)] {
        assert_eq!(
            refused(&|b| b[at] = value),
            FirstBytes::Unreadable,
            "byte {at} = {value}"
        );
    }
    let mut longer = good.clone();
    longer.push(0);
    longer[4] += 1;
    longer[8] += 1;
    assert_eq!(classify_outbound(&longer), FirstBytes::Unreadable);
    // The SNI extension (the last) has 16 bytes of data after its 2-byte length.
    let overrun = refused(&|b| {
        let length = b.len() - 16 - 2;
        b[length] = 0xff;
    });
    assert_eq!(overrun, FirstBytes::Unreadable);
}

#[test]
fn old_hellos_without_extensions() {
    let mut bytes = build_hello(&[0x0035, 0x000a], &[]);
    // Drop the empty extension block: a TLS 1.0 hello may end after compression methods.
    bytes.truncate(bytes.len() - 2);
    bytes[4] -= 2;
    bytes[8] -= 2;
    bytes[9] = 3;
    bytes[10] = 1;
    let hello = hello_of(&bytes);
    assert_eq!(hello.versions, [0x0301]);
    assert!(hello.extensions.is_empty());
    assert_eq!(hello.ja4, "t10i020000_84f732f1f252_000000000000");
}

fn request_of(bytes: &[u8]) -> http::Request {
    match classify_outbound(bytes) {
        FirstBytes::Http(request) => request,
        other => panic!("not a request: {other:?}"),
    }
}

#[test]
fn curl_requests() {
    let get = request_of(include_bytes!("testdata/curl_get.http"));
    assert_eq!(get.method, http::Method::Get);
    assert_eq!(get.path, "/api/v1/items");
    assert_eq!(get.query.as_deref(), Some("id=42&sort=desc"));
    assert!(!get.path_truncated && !get.query_truncated);
    assert_eq!(get.version, Some(http::Version::Http11));
    assert_eq!(get.host.as_deref(), Some("127.0.0.1"));
    assert_eq!(get.user_agent.as_deref(), Some("curl/7.88.1"));
    assert!(get.headers_complete);

    let post = request_of(include_bytes!("testdata/curl_post.http"));
    assert_eq!(post.method, http::Method::Post);
    assert_eq!(post.path, "/submit");
    assert_eq!(post.query, None);

    let head = request_of(include_bytes!("testdata/curl_head_host.http"));
    assert_eq!(head.method, http::Method::Head);
    assert_eq!(head.host.as_deref(), Some("downloads.example.com"));
    assert_eq!(head.path, "/file.tar.gz");
}

#[test]
fn every_prefix_of_a_request() {
    let bytes = include_bytes!("testdata/curl_get.http");
    let line_end = bytes.iter().position(|&b| b == b'\n').unwrap();
    let whole = request_of(bytes);
    for cut in 0..=bytes.len() {
        let answer = classify_outbound(&bytes[..cut]);
        if cut <= line_end {
            assert_eq!(answer, FirstBytes::NeedMore, "cut at {cut}");
            continue;
        }
        let FirstBytes::Http(request) = answer else {
            panic!("cut at {cut}: {answer:?}");
        };
        assert_eq!(request.path, whole.path);
        assert_eq!(request.query, whole.query);
        // A header is read once its line is whole.
        let seen = std::str::from_utf8(&bytes[..cut]).unwrap();
        assert_eq!(
            request.host.is_some(),
            seen.contains("44331\r\n"),
            "cut at {cut}"
        );
        assert_eq!(
            request.user_agent.is_some(),
            seen.contains("7.88.1\r\n"),
            "cut at {cut}"
        );
        assert_eq!(request.headers_complete, cut == bytes.len());
    }
}

#[test]
fn python_http_server_responses() {
    let ok = parse_response(include_bytes!("testdata/response_200.http")).unwrap();
    assert_eq!(ok.status_code, 200);
    assert_eq!(ok.version, http::Version::Http10);
    let missing = parse_response(include_bytes!("testdata/response_404.http")).unwrap();
    assert_eq!(missing.status_code, 404);
    // A response is not a request, and a request is not a response.
    assert_eq!(
        classify_outbound(include_bytes!("testdata/response_200.http")),
        FirstBytes::Other
    );
    assert_eq!(
        parse_response(include_bytes!("testdata/curl_get.http")),
        None
    );
}

/// Writes the fuzz seeds of `payload_parse`: every fixture, whole and split into chunks. Run
/// `cargo test -p egret --lib payload::tests::write_fuzz_seeds -- --ignored`.
///
/// A seed is `[k][k split bytes][payload]` (see `fuzz/fuzz_targets/payload_parse.rs`).
#[test]
#[ignore = "writes fuzz/seeds/payload_parse"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/payload_parse");
    std::fs::create_dir_all(&dir).unwrap();
    let mut payloads: Vec<(String, Vec<u8>)> = HELLOS
        .iter()
        .map(|h| (h.name.to_owned(), hex(h.hex)))
        .collect();
    for (name, bytes) in [
        ("curl_get", &include_bytes!("testdata/curl_get.http")[..]),
        ("curl_post", include_bytes!("testdata/curl_post.http")),
        (
            "curl_head_host",
            include_bytes!("testdata/curl_head_host.http"),
        ),
        ("response_200", include_bytes!("testdata/response_200.http")),
        ("response_404", include_bytes!("testdata/response_404.http")),
    ] {
        payloads.push((name.to_owned(), bytes.to_vec()));
    }
    let large = hex(include_str!("testdata/large_sni_last.hex"));
    payloads.push((
        "large_sni_last_records_of_100".to_owned(),
        reframe(&large, 100),
    ));
    for (name, payload) in payloads {
        for (suffix, split) in [("whole", &[][..]), ("split", &[3, 199, 40, 7, 250][..])] {
            let mut seed = vec![u8::try_from(split.len()).unwrap()];
            seed.extend_from_slice(split);
            seed.extend_from_slice(&payload);
            std::fs::write(dir.join(format!("{name}_{suffix}")), seed).unwrap();
        }
    }
}
