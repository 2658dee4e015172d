//! Arbitrary bytes into the DNS parser: it must never panic, and what it accepts must satisfy
//! the invariants the agent relies on.
#![no_main]

use std::net::IpAddr;

use egret::dns::{
    parse_cut_message, parse_message, resolution, wire::MAX_CNAME_HOPS, DnsCache, Message, Name,
    RData,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A cut message: whatever it yields must hold the same invariants.
    let cut = parse_cut_message(data);
    if let Ok(cut) = &cut {
        check_message(cut);
        check_header_and_question(data, cut);
    }
    let Ok(message) = parse_message(data) else {
        return;
    };
    // On a whole message the cut parser agrees with the strict one, and on any prefix of it
    // it keeps a prefix of the answers (never a record the whole message does not have).
    assert_eq!(cut.as_ref(), Ok(&message));
    let len = data.len() - usize::from(data.last().copied().unwrap_or(0)).min(data.len());
    if let Ok(prefix) = parse_cut_message(&data[..len]) {
        assert_eq!(prefix.questions, message.questions);
        assert!(message.answers.starts_with(&prefix.answers));
    }
    check_message(&message);
    check_header_and_question(data, &message);
});

/// The transaction id and flags are the header's bytes, and the first question (what an
/// answer is matched to its query by: id and first question) round-trips through a query
/// built from it.
fn check_header_and_question(data: &[u8], message: &Message) {
    let &[id_high, id_low, flags_high, flags_low, ..] = data else {
        panic!("a {}-byte message parsed", data.len());
    };
    assert_eq!(message.id, u16::from_be_bytes([id_high, id_low]));
    assert_eq!(message.response, flags_high & 0x80 != 0);
    assert_eq!(message.opcode, (flags_high >> 3) & 0x0f);
    assert_eq!(message.truncated, flags_high & 0x02 != 0);
    assert_eq!(message.rcode, flags_low & 0x0f);
    let Some(question) = message.questions.first() else {
        return;
    };
    let mut query = Vec::new();
    query.extend_from_slice(&message.id.to_be_bytes());
    // RD set; one question, no records.
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    query.extend_from_slice(&question.name.wire());
    query.extend_from_slice(&question.qtype.to_be_bytes());
    query.extend_from_slice(&question.qclass.to_be_bytes());
    let back = parse_message(&query).expect("a query built from a parsed question parses");
    assert_eq!(back.id, message.id);
    assert!(!back.response);
    assert_eq!(
        back.questions,
        std::slice::from_ref(question),
        "the question does not round-trip"
    );
    assert!(back.answers.is_empty());
}

/// Names are well-formed, and every mapping comes from an A/AAAA answer at the end of a CNAME
/// chain that starts with the question.
fn check_message(message: &Message) {
    for question in &message.questions {
        check_name(&question.name);
    }
    for record in &message.answers {
        check_name(&record.name);
        if let RData::Cname(target) = &record.data {
            check_name(target);
        }
    }

    let resolved = resolution(message);
    if !message.response || message.opcode != 0 || message.rcode != 0 {
        assert!(resolved.is_empty(), "mappings from a non-answer");
    }
    for (i, r) in resolved.iter().enumerate() {
        let question = message
            .questions
            .first()
            .expect("a mapping needs a question");
        assert_eq!(r.name, question.name);
        assert_eq!(
            r.chain.first(),
            Some(&question.name),
            "chain starts with the question"
        );
        assert!(r.chain.len() <= MAX_CNAME_HOPS + 1);
        for (k, name) in r.chain.iter().enumerate() {
            check_name(name);
            assert!(!r.chain[..k].contains(name), "chain repeats {name}");
        }
        for pair in r.chain.windows(2) {
            let [from, to] = pair else { unreachable!() };
            assert!(
                message
                    .answers
                    .iter()
                    .any(|record| record.name == *from && record.data == RData::Cname(to.clone())),
                "chain link {from} -> {to} has no CNAME"
            );
        }
        let owner = r.chain.last().expect("non-empty chain");
        assert!(
            has_address_record(message, owner, r.address, r.ttl),
            "{} for {owner} is not from an A/AAAA record",
            r.address
        );
        assert!(
            resolved[..i].iter().all(|other| other.address != r.address),
            "{} resolved twice",
            r.address
        );
    }

    // The cache takes whatever the parser accepted.
    let mut cache = DnsCache::default();
    for r in &resolved {
        cache.insert(1, r.address, &r.name, &r.chain, r.ttl, Some(7), 0);
    }
    for r in &resolved {
        let found = cache.lookup(1, r.address, Some(7), 0);
        assert_eq!(found.domain.as_ref(), Some(&r.name));
        assert!(r.chain.iter().all(|name| found.names.contains(name)));
        assert!(
            found.names.windows(2).all(|w| w[0] < w[1]),
            "sorted, unique"
        );
        assert!(cache.lookup(2, r.address, Some(7), 0).names.is_empty());
    }
}

/// Names are lower case, printable, at most 255 bytes on the wire, and round-trip through text.
fn check_name(name: &Name) {
    let text = name.as_str();
    assert!(
        text.bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "unprintable {text:?}"
    );
    assert!(
        !text.bytes().any(|b| b.is_ascii_uppercase()),
        "upper case {text:?}"
    );
    let wire = name.wire();
    assert!(
        wire.len() <= 255,
        "{text:?} is {} bytes on the wire",
        wire.len()
    );
    // Dotted and unescaped: the labels and the dots between them.
    let dotted = wire.len().saturating_sub(2);
    assert!(dotted <= 253);
    if !text.contains('\\') {
        assert_eq!(text.len(), dotted, "{text:?}");
    }
    assert_eq!(
        Name::from_dotted(text).as_ref(),
        Ok(name),
        "{text:?} does not round-trip"
    );
}

fn has_address_record(message: &Message, owner: &Name, address: IpAddr, ttl: u32) -> bool {
    message.answers.iter().any(|record| {
        record.name == *owner
            && record.ttl >= ttl
            && match record.data {
                RData::A(v4) => IpAddr::V4(v4) == address,
                RData::Aaaa(v6) => IpAddr::V6(v6) == address,
                RData::Cname(_) | RData::Other { .. } => false,
            }
    })
}
