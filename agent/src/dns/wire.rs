//! A small, strict parser for DNS messages (RFC 1035; AAAA records from RFC 3596).
//!
//! [`parse_message`] reads the header, the question section and the answer section into a
//! [`Message`]. The authority and additional sections are walked (every owner name parsed, every
//! `RDLENGTH` bounds-checked) but neither decoded nor kept, and the message must end exactly
//! where the last record ends: a message cut short anywhere, or with bytes after its last
//! record, is an error. Every error ([`DnsError`]) says what was wrong and at which byte offset.
//! [`parse_cut_message`] is for messages known to be cut (the kernel copies at most 1232
//! bytes): it keeps the answer records that are whole before the cut.
//!
//! Untrusted input cannot make the parser loop, recurse or allocate much:
//!
//! - a compression pointer must point strictly before the start of the name (or name suffix)
//!   it continues, so every jump goes backwards and a loop is impossible; a name may follow at
//!   most [`MAX_POINTERS`] pointers all the same;
//! - labels are at most 63 bytes (length bytes `0x40..=0xbf`, the obsolete extended and the
//!   reserved label types, are rejected) and names at most 255 bytes on the wire;
//! - the section counts in the header are checked against the bytes that follow before anything
//!   is allocated (a question needs at least 5 bytes, a record 11).
//!
//! Records of the answer section are decoded: `A` (class IN) must have exactly 4 bytes of data,
//! `AAAA` (class IN) exactly 16, and a `CNAME`'s data must be exactly one name (compression
//! allowed). Other types are kept as [`RData::Other`]. A TTL with its top bit set counts as 0
//! (RFC 2181 §8).
//!
//! # Names
//!
//! A [`Name`] is kept in presentation form: labels joined by `.`, without the root's trailing
//! dot (the root itself is `""`), ASCII letters lower-cased (DNS compares names without regard to
//! ASCII case). Labels may hold any byte; so that a name is always safe to print or log, a
//! byte outside printable ASCII (`0x21..=0x7e`; space included) is written `\DDD` (three decimal
//! digits), and a `.` or `\` inside a label is written `\.` or `\\`. The text is therefore
//! always printable ASCII, and [`Name::labels`] and [`Name::wire`] turn it back into the exact
//! label bytes (lower case) that the kernel's name hash ([`agent_common::dns`]) runs over. A
//! name is at most 253 bytes unescaped (255 on the wire), so `as_str()` is at most 253
//! characters unless it contains escapes.
//!
//! [`resolution`] turns a response into address mappings: which addresses the question's name
//! resolved to, following `CNAME` records.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use agent_common::dns::DNS_NAME_MAX;

/// Record and query types egret decodes.
pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;
/// The Internet class.
pub const CLASS_IN: u16 = 1;
/// Standard query.
pub const OPCODE_QUERY: u8 = 0;
/// Response codes.
pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_NXDOMAIN: u8 = 3;

/// Length of the fixed header.
pub const HEADER_LEN: usize = 12;
/// Longest label.
pub const LABEL_MAX: usize = 63;
/// Most compression pointers one name may follow.
pub const MAX_POINTERS: usize = 64;
/// Most `CNAME` records [`resolution`] follows from the question.
pub const MAX_CNAME_HOPS: usize = 16;

/// Smallest question: the root name (1 byte), type and class.
const QUESTION_MIN: usize = 5;
/// Smallest record: the root name, type, class, TTL and RDLENGTH.
const RECORD_MIN: usize = 11;

/// Why a message (or a name given as text to [`Name::from_dotted`]) was refused. Offsets are
/// byte offsets into the message, or into the text for names given as text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The message ends before a field that starts at `at` and needs `need` bytes.
    #[error("truncated: {need} byte(s) needed at offset {at}, past the end of the message")]
    Truncated { at: usize, need: usize },
    /// The header's counts need more bytes than follow the header (at least 5 a question,
    /// 11 a record).
    #[error(
        "header at offset {at} announces {questions} question(s) and {records} record(s), \
         which need at least {need} bytes; only {have} follow the header"
    )]
    TooManyRecords {
        at: usize,
        questions: u16,
        records: u32,
        need: usize,
        have: usize,
    },
    /// A label longer than 63 bytes (only possible in a name given as text: on the wire such a
    /// length byte is [`DnsError::BadLabelType`]).
    #[error("label at offset {at} is {len} bytes long; labels are at most 63")]
    LabelTooLong { at: usize, len: usize },
    /// A length byte with the top bits `01` (extended label, RFC 6891 obsoleted it) or `10`
    /// (reserved).
    #[error("length byte {byte:#04x} at offset {at}: labels are at most 63 bytes and label types 0b01 and 0b10 are not supported")]
    BadLabelType { at: usize, byte: u8 },
    /// The name starting at `at` is `len` bytes on the wire (more than 255).
    #[error("name at offset {at} is {len} or more bytes on the wire; names are at most 255")]
    NameTooLong { at: usize, len: usize },
    /// A compression pointer at `at` points to `target`, which is not strictly before `start`,
    /// where the name (or the suffix reached by the previous pointer) it belongs to starts.
    #[error("compression pointer at offset {at} points to offset {target}, not before {start} where its name starts")]
    ForwardPointer {
        at: usize,
        target: usize,
        start: usize,
    },
    /// The name starting at `at` follows more than [`MAX_POINTERS`] compression pointers.
    #[error("name at offset {at} follows more than {MAX_POINTERS} compression pointers")]
    TooManyPointers { at: usize },
    /// Record data at `at` of `len` bytes is not a valid `rtype` record (A not 4 bytes, AAAA not
    /// 16, CNAME not exactly one name).
    #[error("record data at offset {at}: {len} byte(s) are not a valid type {rtype} record")]
    BadRdata { at: usize, rtype: u16, len: u16 },
    /// `len` bytes follow the last record, from `at`.
    #[error("{len} byte(s) after the last record, at offset {at}")]
    TrailingBytes { at: usize, len: usize },
    /// A name given as text has an empty label ending at `at` (`a..b`, `.a`).
    #[error("empty label at offset {at} of the name")]
    EmptyLabel { at: usize },
    /// A name given as text has a `\` at `at` not followed by a character or by three decimal
    /// digits up to 255.
    #[error("invalid escape at offset {at} of the name")]
    BadEscape { at: usize },
}

/// A domain name: lower-case presentation form, no trailing dot, escaped as the module docs
/// say. Ordered and compared as text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Name(String);

impl Name {
    /// The root name (`""`).
    pub fn root() -> Self {
        Self(String::new())
    }

    /// Parses a name in presentation form: labels separated by `.`, an optional trailing dot,
    /// `\X` for a literal character `X` and `\DDD` for a byte. ASCII letters are lower-cased.
    /// `""` and `"."` are the root.
    pub fn from_dotted(text: &str) -> Result<Self, DnsError> {
        let labels = text_labels(text)?;
        let mut out = String::with_capacity(text.len());
        for label in &labels {
            if !out.is_empty() {
                out.push('.');
            }
            push_label(&mut out, label);
        }
        Ok(Self(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The labels' raw bytes (escapes resolved, lower case), first label first; none for the
    /// root. What the kernel's name hash runs over.
    pub fn labels(&self) -> Vec<Vec<u8>> {
        // A `Name` is only ever built from valid labels, so its text always parses back.
        text_labels(&self.0).unwrap_or_default()
    }

    /// The name in wire format, lower case, ending with the root's zero byte:
    /// `\x03api\x07example\x03com\x00`.
    pub fn wire(&self) -> Vec<u8> {
        let mut wire = Vec::with_capacity(self.0.len().saturating_add(2));
        for label in self.labels() {
            // Labels are at most 63 bytes (checked by `text_labels`).
            wire.push(u8::try_from(label.len()).unwrap_or(0));
            wire.extend_from_slice(&label);
        }
        wire.push(0);
        wire
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Name {
    type Err = DnsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_dotted(text)
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Appends one label in presentation form (lower-cased, escaped).
fn push_label(out: &mut String, label: &[u8]) {
    for &byte in label {
        match byte.to_ascii_lowercase() {
            b'.' => out.push_str("\\."),
            b'\\' => out.push_str("\\\\"),
            printable @ 0x21..=0x7e => out.push(char::from(printable)),
            other => {
                out.push('\\');
                out.push(char::from(b'0' + other / 100));
                out.push(char::from(b'0' + other / 10 % 10));
                out.push(char::from(b'0' + other % 10));
            }
        }
    }
}

/// Splits presentation form into raw labels (escapes resolved, case kept), checking label and
/// name lengths.
fn text_labels(text: &str) -> Result<Vec<Vec<u8>>, DnsError> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes == b"." {
        return Ok(Vec::new());
    }
    let mut labels = Vec::new();
    let mut label = Vec::new();
    let mut label_start = 0;
    let mut wire_len = 1; // the root's zero byte
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'.' => {
                finish_label(&mut labels, &mut label, label_start, at, &mut wire_len)?;
                at += 1;
                label_start = at;
                if at == bytes.len() {
                    // A trailing dot: the name is absolute, nothing follows.
                    return Ok(labels);
                }
            }
            b'\\' => {
                let (value, used) = escape(bytes, at)?;
                label.push(value);
                at += used;
            }
            other => {
                label.push(other);
                at += 1;
            }
        }
    }
    finish_label(&mut labels, &mut label, label_start, at, &mut wire_len)?;
    Ok(labels)
}

fn finish_label(
    labels: &mut Vec<Vec<u8>>,
    label: &mut Vec<u8>,
    start: usize,
    end: usize,
    wire_len: &mut usize,
) -> Result<(), DnsError> {
    if label.is_empty() {
        return Err(DnsError::EmptyLabel { at: end });
    }
    if label.len() > LABEL_MAX {
        return Err(DnsError::LabelTooLong {
            at: start,
            len: label.len(),
        });
    }
    *wire_len += 1 + label.len();
    if *wire_len > DNS_NAME_MAX {
        return Err(DnsError::NameTooLong {
            at: 0,
            len: *wire_len,
        });
    }
    labels.push(std::mem::take(label));
    Ok(())
}

/// The byte an escape starting at `at` (`\X` or `\DDD`) stands for, and its length in text.
fn escape(bytes: &[u8], at: usize) -> Result<(u8, usize), DnsError> {
    let bad = DnsError::BadEscape { at };
    match bytes.get(at + 1) {
        Some(first) if first.is_ascii_digit() => {
            let Some(digits) = bytes.get(at + 1..at + 4) else {
                return Err(bad);
            };
            let mut value = 0u32;
            for &digit in digits {
                if !digit.is_ascii_digit() {
                    return Err(bad);
                }
                value = value * 10 + u32::from(digit - b'0');
            }
            Ok((u8::try_from(value).map_err(|_| bad)?, 4))
        }
        Some(&other) => Ok((other, 2)),
        None => Err(bad),
    }
}

/// A parsed message. Only the question and answer sections are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    /// QR: a response (rather than a query).
    pub response: bool,
    pub opcode: u8,
    pub rcode: u8,
    /// TC: the server truncated the answer (the client should retry over TCP).
    pub truncated: bool,
    pub questions: Vec<Question>,
    pub answers: Vec<Record>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: u16,
    pub qclass: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The owner name.
    pub name: Name,
    pub rtype: u16,
    pub class: u16,
    /// Seconds (0 if the wire value had its top bit set).
    pub ttl: u32,
    pub data: RData,
}

/// Decoded record data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    /// Type A, class IN.
    A(Ipv4Addr),
    /// Type AAAA, class IN.
    Aaaa(Ipv6Addr),
    /// Type CNAME (any class): the canonical name.
    Cname(Name),
    /// Anything else, not decoded: its type and data length.
    Other { rtype: u16, len: u16 },
}

/// Parses one DNS message (a UDP payload). See the module docs for what is checked.
pub fn parse_message(bytes: &[u8]) -> Result<Message, DnsError> {
    parse(bytes, false)
}

/// Parses the beginning of a message that was cut short (the kernel copies at most
/// `DNS_PAYLOAD_MAX` bytes and flags longer messages `DNS_FLAG_CUT`): the header and the
/// question section must be whole; then the answer records that lie wholly within `bytes` are
/// kept, up to the first one the cut reaches, which is dropped with every record after it. The
/// authority and additional sections are not looked at. Everything before the cut is checked as
/// strictly as by [`parse_message`]: a malformed record there (one that is wrong, not just cut)
/// still fails the whole message. On a whole message it returns what [`parse_message`] returns.
pub fn parse_cut_message(bytes: &[u8]) -> Result<Message, DnsError> {
    parse(bytes, true)
}

fn parse(bytes: &[u8], cut: bool) -> Result<Message, DnsError> {
    let id = read_u16(bytes, 0)?;
    let flags = read_u16(bytes, 2)?;
    let qdcount = read_u16(bytes, 4)?;
    let ancount = read_u16(bytes, 6)?;
    let nscount = read_u16(bytes, 8)?;
    let arcount = read_u16(bytes, 10)?;

    // A cut message need only hold its questions; a whole one, every record.
    let records = if cut {
        0
    } else {
        u32::from(ancount) + u32::from(nscount) + u32::from(arcount)
    };
    let need = usize::from(qdcount) * QUESTION_MIN
        + usize::try_from(records)
            .unwrap_or(usize::MAX)
            .saturating_mul(RECORD_MIN);
    let have = bytes.len().saturating_sub(HEADER_LEN);
    if need > have {
        return Err(DnsError::TooManyRecords {
            at: 4,
            questions: qdcount,
            records,
            need,
            have,
        });
    }

    let mut at = HEADER_LEN;
    let mut questions = Vec::with_capacity(usize::from(qdcount));
    for _ in 0..qdcount {
        let (name, end) = read_name(bytes, at)?;
        questions.push(Question {
            name,
            qtype: read_u16(bytes, end)?,
            qclass: read_u16(bytes, end + 2)?,
        });
        at = end + 4;
    }
    let room = bytes.len().saturating_sub(at) / RECORD_MIN;
    let mut answers = Vec::with_capacity(usize::from(ancount).min(room));
    for _ in 0..ancount {
        match read_record(bytes, at, true) {
            Ok((record, end)) => {
                answers.push(record);
                at = end;
            }
            Err(DnsError::Truncated { .. }) if cut => break,
            Err(error) => return Err(error),
        }
    }
    if !cut {
        for _ in 0..u32::from(nscount) + u32::from(arcount) {
            let (_, end) = read_record(bytes, at, false)?;
            at = end;
        }
        if at != bytes.len() {
            return Err(DnsError::TrailingBytes {
                at,
                len: bytes.len().saturating_sub(at),
            });
        }
    }

    Ok(Message {
        id,
        response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0xf) as u8,
        truncated: flags & 0x0200 != 0,
        rcode: (flags & 0xf) as u8,
        questions,
        answers,
    })
}

fn take(bytes: &[u8], at: usize, need: usize) -> Result<&[u8], DnsError> {
    at.checked_add(need)
        .and_then(|end| bytes.get(at..end))
        .ok_or(DnsError::Truncated { at, need })
}

fn read_u8(bytes: &[u8], at: usize) -> Result<u8, DnsError> {
    bytes
        .get(at)
        .copied()
        .ok_or(DnsError::Truncated { at, need: 1 })
}

fn read_u16(bytes: &[u8], at: usize) -> Result<u16, DnsError> {
    match *take(bytes, at, 2)? {
        [hi, lo] => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(DnsError::Truncated { at, need: 2 }),
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32, DnsError> {
    match *take(bytes, at, 4)? {
        [a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(DnsError::Truncated { at, need: 4 }),
    }
}

/// Reads the name starting at `start`; returns it and the offset just after it (after its
/// first compression pointer, if it has one).
fn read_name(bytes: &[u8], start: usize) -> Result<(Name, usize), DnsError> {
    let mut text = String::new();
    let mut at = start;
    // Where the name, or the suffix the last pointer led to, starts: pointers must go before it.
    let mut segment = start;
    let mut end = None;
    let mut jumps = 0;
    let mut wire_len = 1; // the root's zero byte
    loop {
        let byte = read_u8(bytes, at)?;
        match byte >> 6 {
            0b00 if byte == 0 => {
                return Ok((Name(text), end.unwrap_or(at + 1)));
            }
            0b00 => {
                let len = usize::from(byte);
                let label = take(bytes, at + 1, len)?;
                wire_len += 1 + len;
                if wire_len > DNS_NAME_MAX {
                    return Err(DnsError::NameTooLong {
                        at: start,
                        len: wire_len,
                    });
                }
                if !text.is_empty() {
                    text.push('.');
                }
                push_label(&mut text, label);
                at += 1 + len;
            }
            0b11 => {
                let low = read_u8(bytes, at + 1)?;
                let target = usize::from(u16::from_be_bytes([byte & 0x3f, low]));
                if target >= segment {
                    return Err(DnsError::ForwardPointer {
                        at,
                        target,
                        start: segment,
                    });
                }
                jumps += 1;
                if jumps > MAX_POINTERS {
                    return Err(DnsError::TooManyPointers { at: start });
                }
                end.get_or_insert(at + 2);
                at = target;
                segment = target;
            }
            _ => return Err(DnsError::BadLabelType { at, byte }),
        }
    }
}

/// Reads the record starting at `at`; returns it and the offset just after it. With `decode`
/// false the data is only bounds-checked ([`RData::Other`]).
fn read_record(bytes: &[u8], at: usize, decode: bool) -> Result<(Record, usize), DnsError> {
    let (name, fixed) = read_name(bytes, at)?;
    let rtype = read_u16(bytes, fixed)?;
    let class = read_u16(bytes, fixed + 2)?;
    let ttl = read_u32(bytes, fixed + 4)?;
    let rdlength = read_u16(bytes, fixed + 8)?;
    let data_at = fixed + 10;
    let rdata = take(bytes, data_at, usize::from(rdlength))?;
    let end = data_at + usize::from(rdlength);
    let bad = DnsError::BadRdata {
        at: data_at,
        rtype,
        len: rdlength,
    };
    let data = match (decode, rtype, class) {
        (true, TYPE_A, CLASS_IN) => {
            RData::A(Ipv4Addr::from(<[u8; 4]>::try_from(rdata).map_err(|_| bad)?))
        }
        (true, TYPE_AAAA, CLASS_IN) => RData::Aaaa(Ipv6Addr::from(
            <[u8; 16]>::try_from(rdata).map_err(|_| bad)?,
        )),
        (true, TYPE_CNAME, _) => {
            // The name must lie within the record data: read it from the message cut there
            // (its pointers go backwards, so they stay inside), and it must fill the data.
            let within = bytes.get(..end).ok_or(DnsError::Truncated {
                at: data_at,
                need: usize::from(rdlength),
            })?;
            match read_name(within, data_at) {
                Ok((target, name_end)) if name_end == end => RData::Cname(target),
                Ok(_) | Err(DnsError::Truncated { .. }) => return Err(bad),
                Err(other) => return Err(other),
            }
        }
        _ => RData::Other {
            rtype,
            len: rdlength,
        },
    };
    // RFC 2181 §8: a TTL with the top bit set is treated as zero.
    let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
    Ok((
        Record {
            name,
            rtype,
            class,
            ttl,
            data,
        },
        end,
    ))
}

/// One address the question's name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub address: IpAddr,
    /// Seconds the mapping is valid: the smallest TTL of the address record and of the `CNAME`
    /// records leading to it.
    pub ttl: u32,
    /// The question's name.
    pub name: Name,
    /// How: the question's name, the `CNAME` targets followed, ending with the owner of the
    /// address record (just the question's name when the address is its own).
    pub chain: Vec<Name>,
}

/// The addresses a response resolves its (first) question's name to.
///
/// Only for a response to a standard query with rcode NOERROR and a question of class IN.
/// Starting from the question's name, follows `CNAME` records of the answer section whose
/// owner is the current name (at most [`MAX_CNAME_HOPS`], stopping at a cycle), and collects
/// every `A`/`AAAA` record (class IN) whose owner is on that chain, each address once. Answer
/// records not connected to the question are ignored, so stray records a resolver adds never
/// create a mapping; the authority and additional sections are never used.
pub fn resolution(msg: &Message) -> Vec<Resolved> {
    let Message {
        id: _,
        response,
        opcode,
        rcode,
        truncated: _,
        questions,
        answers,
    } = msg;
    if !*response || *opcode != OPCODE_QUERY || *rcode != RCODE_NOERROR {
        return Vec::new();
    }
    let Some(question) = questions.first() else {
        return Vec::new();
    };
    if question.qclass != CLASS_IN {
        return Vec::new();
    }

    // The chain, each name with the smallest TTL of the CNAME records that lead to it.
    let mut chain: Vec<(&Name, u32)> = vec![(&question.name, u32::MAX)];
    for _ in 0..MAX_CNAME_HOPS {
        let Some(&(current, reach_ttl)) = chain.last() else {
            break;
        };
        let next = answers.iter().find_map(|record| match &record.data {
            RData::Cname(target) if record.class == CLASS_IN && record.name == *current => {
                Some((target, record.ttl))
            }
            _ => None,
        });
        let Some((target, ttl)) = next else {
            break;
        };
        if chain.iter().any(|(name, _)| *name == target) {
            break;
        }
        chain.push((target, reach_ttl.min(ttl)));
    }

    let mut resolved: Vec<Resolved> = Vec::new();
    for record in answers {
        let address = match record.data {
            RData::A(v4) => IpAddr::V4(v4),
            RData::Aaaa(v6) => IpAddr::V6(v6),
            RData::Cname(_) | RData::Other { .. } => continue,
        };
        if record.class != CLASS_IN || resolved.iter().any(|r| r.address == address) {
            continue;
        }
        let Some(hop) = chain.iter().position(|(name, _)| **name == record.name) else {
            continue;
        };
        let Some(path) = chain.get(..=hop) else {
            continue;
        };
        let reach_ttl = path.last().map_or(u32::MAX, |&(_, ttl)| ttl);
        resolved.push(Resolved {
            address,
            ttl: record.ttl.min(reach_ttl),
            name: question.name.clone(),
            chain: path.iter().map(|&(name, _)| name.clone()).collect(),
        });
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- A tiny message builder ----

    const RESPONSE: u16 = 0x8180; // QR, RD, RA, NOERROR

    /// Builds a message section by section; counts are filled in by `build`.
    struct Builder {
        buf: Vec<u8>,
        counts: [u16; 4],
        section: usize,
    }

    impl Builder {
        fn new(id: u16, flags: u16) -> Self {
            let mut buf = Vec::new();
            buf.extend_from_slice(&id.to_be_bytes());
            buf.extend_from_slice(&flags.to_be_bytes());
            buf.extend_from_slice(&[0; 8]);
            Self {
                buf,
                counts: [0; 4],
                section: 0,
            }
        }

        fn response() -> Self {
            Self::new(0x1234, RESPONSE)
        }

        /// Offset the next byte will have (for compression pointers).
        fn offset(&self) -> u16 {
            u16::try_from(self.buf.len()).unwrap()
        }

        fn question(&mut self, owner: &[u8], qtype: u16) -> &mut Self {
            assert_eq!(self.section, 0, "questions come first");
            self.buf.extend_from_slice(owner);
            self.buf.extend_from_slice(&qtype.to_be_bytes());
            self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
            self.counts[0] += 1;
            self
        }

        /// A record in `section` (1 answer, 2 authority, 3 additional).
        fn record(
            &mut self,
            section: usize,
            owner: &[u8],
            rtype: u16,
            class: u16,
            ttl: u32,
            rdata: &[u8],
        ) -> &mut Self {
            assert!(section >= self.section, "sections in order");
            self.section = section;
            self.buf.extend_from_slice(owner);
            self.buf.extend_from_slice(&rtype.to_be_bytes());
            self.buf.extend_from_slice(&class.to_be_bytes());
            self.buf.extend_from_slice(&ttl.to_be_bytes());
            self.buf
                .extend_from_slice(&u16::try_from(rdata.len()).unwrap().to_be_bytes());
            self.buf.extend_from_slice(rdata);
            self.counts[section] += 1;
            self
        }

        fn answer(&mut self, owner: &[u8], rtype: u16, ttl: u32, rdata: &[u8]) -> &mut Self {
            self.record(1, owner, rtype, CLASS_IN, ttl, rdata)
        }

        fn build(&self) -> Vec<u8> {
            let mut out = self.buf.clone();
            for (i, count) in self.counts.iter().enumerate() {
                out[4 + 2 * i..6 + 2 * i].copy_from_slice(&count.to_be_bytes());
            }
            out
        }
    }

    /// Labels of a dotted name without the root byte (to put before a pointer).
    fn labels(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in text.split('.').filter(|l| !l.is_empty()) {
            out.push(u8::try_from(label.len()).unwrap());
            out.extend_from_slice(label.as_bytes());
        }
        out
    }

    /// A whole uncompressed name.
    fn n(text: &str) -> Vec<u8> {
        let mut out = labels(text);
        out.push(0);
        out
    }

    fn ptr(offset: u16) -> Vec<u8> {
        vec![0xc0 | (offset >> 8) as u8, offset as u8]
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// Parses a response asking `names` (`A` questions), with no answers.
    fn parse_questions(names: &[&[u8]]) -> Result<Message, DnsError> {
        let mut b = Builder::response();
        for name in names {
            b.question(name, TYPE_A);
        }
        parse_message(&b.build())
    }

    /// What parsing a message with a compression pointer at `at` to `target` answers, its name
    /// starting at `start`.
    fn forward_pointer(at: usize, target: usize, start: usize) -> Result<Message, DnsError> {
        Err(DnsError::ForwardPointer { at, target, start })
    }

    fn name(text: &str) -> Name {
        Name::from_dotted(text).unwrap()
    }

    fn names(texts: &[&str]) -> Vec<Name> {
        texts.iter().map(|t| name(t)).collect()
    }

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    /// The question name of every builder message starts at offset 12.
    const Q: u16 = 12;

    /// `dig example.com` through a recursive resolver, as captured: one A record whose owner
    /// points at the question, and the EDNS OPT record in the additional section.
    const EXAMPLE_COM: &[u8] = &[
        0xb4, 0xa6, 0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, // header
        0x07, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0x03, b'c', b'o', b'm', 0x00, // qname
        0x00, 0x01, 0x00, 0x01, // A IN
        0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x0e, 0x10, 0x00, 0x04, // answer
        0x5d, 0xb8, 0xd7, 0x0e, // 93.184.215.14
        0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // OPT, 1232
    ];

    fn aaaa_message() -> Vec<u8> {
        let mut b = Builder::response();
        b.question(&n("ipv6.example.net"), TYPE_AAAA).answer(
            &ptr(Q),
            TYPE_AAAA,
            120,
            &[
                0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
            ],
        );
        b.build()
    }

    /// www.example.com -> CNAME www.example.com.cdn.net -> CNAME e1.akamai.net -> two A.
    fn cname_chain_message() -> Vec<u8> {
        let mut b = Builder::response();
        b.question(&n("www.example.com"), TYPE_A);
        // `www.example.com.cdn.net`: the question's labels, then `cdn.net`.
        let first_target = b.offset() + 12;
        b.answer(
            &ptr(Q),
            TYPE_CNAME,
            300,
            &cat(&[&labels("www.example.com"), &n("cdn.net")]),
        );
        let second_target = b.offset() + 12;
        b.answer(
            &ptr(first_target),
            TYPE_CNAME,
            60,
            &cat(&[&labels("e1.akamai"), &ptr(first_target + 16 + 4)]),
        )
        .answer(&ptr(second_target), TYPE_A, 20, &[192, 0, 2, 1])
        .answer(&ptr(second_target), TYPE_A, 20, &[192, 0, 2, 2]);
        b.build()
    }

    fn nxdomain_message() -> Vec<u8> {
        let mut b = Builder::new(7, 0x8183);
        b.question(&n("nope.example.org"), TYPE_A);
        let soa = cat(&[
            &n("ns.example.org"),
            &n("hostmaster.example.org"),
            &[
                0, 0, 0, 1, 0, 0, 0x0e, 0x10, 0, 0, 0x03, 0x84, 0, 0x09, 0x3a, 0x80, 0, 0, 0x01,
                0x2c,
            ],
        ]);
        b.record(2, &ptr(Q + 5), 6, CLASS_IN, 300, &soa);
        b.build()
    }

    fn query_message() -> Vec<u8> {
        let mut b = Builder::new(0x4242, 0x0100);
        b.question(&n("example.com"), TYPE_A);
        b.build()
    }

    /// Every valid message the tests build (also the fuzzer's seeds).
    fn valid_messages() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("example_com", EXAMPLE_COM.to_vec()),
            ("aaaa", aaaa_message()),
            ("cname_chain", cname_chain_message()),
            ("nxdomain", nxdomain_message()),
            ("query", query_message()),
            ("stray_answers", stray_answers_message()),
        ]
    }

    fn stray_answers_message() -> Vec<u8> {
        let mut b = Builder::response();
        b.question(&n("api.example.com"), TYPE_A)
            .answer(&ptr(Q), TYPE_A, 30, &[198, 51, 100, 7])
            .answer(&n("evil.example.net"), TYPE_A, 30, &[203, 0, 113, 66])
            .answer(&n("cdn.example.net"), TYPE_CNAME, 30, &ptr(Q))
            .record(
                3,
                &n("ns1.example.com"),
                TYPE_A,
                CLASS_IN,
                30,
                &[203, 0, 113, 1],
            );
        b.build()
    }

    // ---- Valid messages ----

    #[test]
    fn captured_example_com_response() {
        let msg = parse_message(EXAMPLE_COM).unwrap();
        assert_eq!(msg.id, 0xb4a6);
        assert!(msg.response);
        assert_eq!((msg.opcode, msg.rcode, msg.truncated), (0, 0, false));
        assert_eq!(
            msg.questions,
            [Question {
                name: name("example.com"),
                qtype: TYPE_A,
                qclass: CLASS_IN
            }]
        );
        assert_eq!(
            msg.answers,
            [Record {
                name: name("example.com"),
                rtype: TYPE_A,
                class: CLASS_IN,
                ttl: 3600,
                data: RData::A(Ipv4Addr::new(93, 184, 215, 14)),
            }]
        );
        assert_eq!(
            resolution(&msg),
            [Resolved {
                address: v4([93, 184, 215, 14]),
                ttl: 3600,
                name: name("example.com"),
                chain: names(&["example.com"]),
            }]
        );
    }

    #[test]
    fn aaaa_record() {
        let msg = parse_message(&aaaa_message()).unwrap();
        let resolved = resolution(&msg);
        assert_eq!(resolved.len(), 1);
        assert_eq!(
            resolved[0].address,
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(resolved[0].ttl, 120);
        assert_eq!(resolved[0].name.as_str(), "ipv6.example.net");
    }

    #[test]
    fn cname_chain_of_two_hops_with_pointers_into_names() {
        let msg = parse_message(&cname_chain_message()).unwrap();
        assert_eq!(
            msg.answers[0].data,
            RData::Cname(name("www.example.com.cdn.net"))
        );
        assert_eq!(msg.answers[1].name, name("www.example.com.cdn.net"));
        assert_eq!(msg.answers[1].data, RData::Cname(name("e1.akamai.net")));
        assert_eq!(msg.answers[2].name, name("e1.akamai.net"));
        let resolved = resolution(&msg);
        let chain = names(&[
            "www.example.com",
            "www.example.com.cdn.net",
            "e1.akamai.net",
        ]);
        assert_eq!(
            resolved,
            [
                Resolved {
                    address: v4([192, 0, 2, 1]),
                    ttl: 20,
                    name: name("www.example.com"),
                    chain: chain.clone(),
                },
                Resolved {
                    address: v4([192, 0, 2, 2]),
                    ttl: 20,
                    name: name("www.example.com"),
                    chain,
                },
            ]
        );
    }

    #[test]
    fn cname_chain_of_three_hops_takes_the_smallest_ttl() {
        let mut b = Builder::response();
        b.question(&n("a.example"), TYPE_A)
            .answer(&n("a.example"), TYPE_CNAME, 600, &n("b.example"))
            .answer(&n("b.example"), TYPE_CNAME, 40, &n("c.example"))
            .answer(&n("c.example"), TYPE_CNAME, 600, &n("d.example"))
            .answer(&n("d.example"), TYPE_A, 300, &[10, 0, 0, 4])
            .answer(&n("b.example"), TYPE_A, 900, &[10, 0, 0, 2]);
        let resolved = resolution(&parse_message(&b.build()).unwrap());
        assert_eq!(resolved.len(), 2);
        assert_eq!(resolved[0].address, v4([10, 0, 0, 4]));
        assert_eq!(resolved[0].ttl, 40);
        assert_eq!(
            resolved[0].chain,
            names(&["a.example", "b.example", "c.example", "d.example"])
        );
        assert_eq!(resolved[1].address, v4([10, 0, 0, 2]));
        assert_eq!(resolved[1].ttl, 600, "only the CNAME leading to b counts");
        assert_eq!(resolved[1].chain, names(&["a.example", "b.example"]));
    }

    #[test]
    fn cname_cycles_and_long_chains_are_bounded() {
        let mut b = Builder::response();
        b.question(&n("a.example"), TYPE_A)
            .answer(&n("a.example"), TYPE_CNAME, 60, &n("b.example"))
            .answer(&n("b.example"), TYPE_CNAME, 60, &n("a.example"))
            .answer(&n("b.example"), TYPE_A, 60, &[10, 0, 0, 1]);
        let resolved = resolution(&parse_message(&b.build()).unwrap());
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].chain, names(&["a.example", "b.example"]));

        let mut b = Builder::response();
        b.question(&n("h0.example"), TYPE_A);
        for hop in 0..20 {
            b.answer(
                &n(&format!("h{hop}.example")),
                TYPE_CNAME,
                60,
                &n(&format!("h{}.example", hop + 1)),
            );
        }
        b.answer(&n("h16.example"), TYPE_A, 60, &[10, 0, 0, 16])
            .answer(&n("h17.example"), TYPE_A, 60, &[10, 0, 0, 17]);
        let resolved = resolution(&parse_message(&b.build()).unwrap());
        assert_eq!(resolved.len(), 1, "the 17th hop is not followed");
        assert_eq!(resolved[0].address, v4([10, 0, 0, 16]));
        assert_eq!(resolved[0].chain.len(), MAX_CNAME_HOPS + 1);
    }

    #[test]
    fn pointer_to_the_middle_of_a_name() {
        let mut b = Builder::response();
        b.question(&n("www.example.com"), TYPE_A)
            // `example.com`: the question from its second label.
            .answer(&ptr(Q + 4), TYPE_A, 60, &[10, 1, 1, 1])
            // `mail.example.com`: a label, then the same suffix.
            .answer(
                &cat(&[&labels("mail"), &ptr(Q + 4)]),
                TYPE_A,
                60,
                &[10, 1, 1, 2],
            );
        let msg = parse_message(&b.build()).unwrap();
        assert_eq!(msg.answers[0].name, name("example.com"));
        assert_eq!(msg.answers[1].name, name("mail.example.com"));
        assert!(resolution(&msg).is_empty(), "neither owner is the question");
    }

    #[test]
    fn pointer_to_a_name_that_itself_ends_in_a_pointer() {
        let mut b = Builder::response();
        b.question(&n("example.com"), TYPE_A);
        let www = b.offset();
        b.answer(&cat(&[&labels("www"), &ptr(Q)]), TYPE_A, 60, &[10, 0, 0, 1])
            .answer(
                &cat(&[&labels("a.b"), &ptr(www)]),
                TYPE_A,
                60,
                &[10, 0, 0, 2],
            );
        let msg = parse_message(&b.build()).unwrap();
        assert_eq!(msg.answers[1].name, name("a.b.www.example.com"));
    }

    #[test]
    fn uppercase_names_are_lowered_and_matched_without_case() {
        let mut b = Builder::response();
        b.question(&n("WWW.Example.COM"), TYPE_A)
            .answer(&n("www.EXAMPLE.com"), TYPE_CNAME, 60, &n("Edge.CDN.net"))
            .answer(&n("EDGE.cdn.NET"), TYPE_A, 60, &[10, 2, 2, 2]);
        let msg = parse_message(&b.build()).unwrap();
        assert_eq!(msg.questions[0].name.as_str(), "www.example.com");
        let resolved = resolution(&msg);
        assert_eq!(resolved.len(), 1);
        assert_eq!(
            resolved[0].chain,
            names(&["www.example.com", "edge.cdn.net"])
        );
    }

    #[test]
    fn nxdomain_parses_but_resolves_nothing() {
        let msg = parse_message(&nxdomain_message()).unwrap();
        assert_eq!(msg.rcode, RCODE_NXDOMAIN);
        assert!(msg.answers.is_empty());
        assert!(resolution(&msg).is_empty());
    }

    #[test]
    fn stray_answers_are_ignored() {
        let msg = parse_message(&stray_answers_message()).unwrap();
        assert_eq!(msg.answers.len(), 3);
        let resolved = resolution(&msg);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].address, v4([198, 51, 100, 7]));
        assert_eq!(resolved[0].chain, names(&["api.example.com"]));
    }

    #[test]
    fn queries_and_odd_responses_resolve_nothing() {
        let msg = parse_message(&query_message()).unwrap();
        assert!(!msg.response);
        assert!(resolution(&msg).is_empty());

        // A "response" that is not a standard query, and one with an answer but no question.
        let mut b = Builder::new(1, RESPONSE | (2 << 11));
        b.question(&n("example.com"), TYPE_A)
            .answer(&ptr(Q), TYPE_A, 60, &[10, 0, 0, 1]);
        let msg = parse_message(&b.build()).unwrap();
        assert_eq!(msg.opcode, 2);
        assert!(resolution(&msg).is_empty());
        let mut b = Builder::response();
        b.answer(&n("example.com"), TYPE_A, 60, &[10, 0, 0, 1]);
        assert!(resolution(&parse_message(&b.build()).unwrap()).is_empty());

        // Class CH: type 1 is not an IPv4 address there.
        let mut b = Builder::response();
        b.question(&n("example.com"), TYPE_A)
            .record(1, &ptr(Q), TYPE_A, 3, 60, &[1, 2, 3]);
        let msg = parse_message(&b.build()).unwrap();
        assert_eq!(msg.answers[0].data, RData::Other { rtype: 1, len: 3 });
        assert!(resolution(&msg).is_empty());
    }

    #[test]
    fn truncated_flag_and_ttl_top_bit() {
        let mut b = Builder::new(1, RESPONSE | 0x0200);
        b.question(&n("example.com"), TYPE_A)
            .answer(&ptr(Q), TYPE_A, 0x8000_0001, &[10, 0, 0, 1]);
        let msg = parse_message(&b.build()).unwrap();
        assert!(msg.truncated);
        assert_eq!(msg.answers[0].ttl, 0);
    }

    #[test]
    fn duplicate_addresses_resolve_once() {
        let mut b = Builder::response();
        b.question(&n("example.com"), TYPE_A)
            .answer(&ptr(Q), TYPE_A, 60, &[10, 0, 0, 1])
            .answer(&ptr(Q), TYPE_A, 60, &[10, 0, 0, 1]);
        assert_eq!(resolution(&parse_message(&b.build()).unwrap()).len(), 1);
    }

    #[test]
    fn longest_name_is_accepted() {
        // 3 labels of 63 and one of 61: 3 * 64 + 62 + 1 = 255 bytes on the wire.
        let long = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        let msg = parse_questions(&[&n(&long)]).unwrap();
        assert_eq!(msg.questions[0].name.as_str().len(), 253);
        assert_eq!(msg.questions[0].name.wire(), n(&long));
    }

    #[test]
    fn root_name() {
        let mut b = Builder::response();
        b.question(&[0], 2);
        let msg = parse_message(&b.build()).unwrap();
        assert!(msg.questions[0].name.is_root());
        assert_eq!(msg.questions[0].name.wire(), [0]);
    }

    // ---- Malformed messages ----

    #[test]
    fn every_prefix_of_a_valid_message_is_an_error() {
        for (what, message) in valid_messages() {
            parse_message(&message).unwrap_or_else(|e| panic!("{what}: {e}"));
            for len in 0..message.len() {
                assert!(
                    parse_message(&message[..len]).is_err(),
                    "{what} cut to {len} bytes parsed"
                );
            }
        }
    }

    #[test]
    fn cut_messages_keep_the_whole_answers_before_the_cut() {
        for (what, message) in valid_messages() {
            let whole = parse_message(&message).unwrap();
            assert_eq!(parse_cut_message(&message).as_ref(), Ok(&whole), "{what}");
            let questions_end = 12
                + whole
                    .questions
                    .iter()
                    .map(|q| q.name.wire().len() + 4)
                    .sum::<usize>();
            for len in 0..message.len() {
                match parse_cut_message(&message[..len]) {
                    Ok(cut) => {
                        assert!(len >= questions_end, "{what} cut to {len}");
                        assert_eq!(cut.questions, whole.questions);
                        assert!(
                            whole.answers.starts_with(&cut.answers),
                            "{what} cut to {len}: answers not a prefix"
                        );
                    }
                    Err(_) => assert!(len < questions_end, "{what} cut to {len} failed"),
                }
            }
        }
        // The CNAME chain cut after its first A record: one address, the full chain.
        let message = cname_chain_message();
        let cut = parse_cut_message(&message[..message.len() - 1]).unwrap();
        assert_eq!(cut.answers.len(), 3);
        let resolved = resolution(&cut);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].address, v4([192, 0, 2, 1]));
    }

    #[test]
    fn cut_messages_are_still_checked_before_the_cut() {
        let mut b = Builder::response();
        b.question(&n("example.com"), TYPE_A)
            .answer(&ptr(Q), TYPE_A, 60, &[1, 2, 3])
            .answer(&ptr(Q), TYPE_A, 60, &[1, 2, 3, 4]);
        let message = b.build();
        assert!(matches!(
            parse_cut_message(&message[..message.len() - 2]),
            Err(DnsError::BadRdata { .. })
        ));
        // Counts far beyond the bytes: no error, no large allocation, what fits.
        let mut message = EXAMPLE_COM.to_vec();
        message[6..8].copy_from_slice(&[0xff, 0xff]);
        let cut = parse_cut_message(&message).unwrap();
        assert_eq!(cut.answers.len(), 2, "the OPT record is read as an answer");
        assert_eq!(cut.answers[1].data, RData::Other { rtype: 41, len: 0 });
        assert_eq!(resolution(&cut).len(), 1);
        assert!(cut.answers.capacity() < 16);
        // The questions must be whole.
        assert!(matches!(
            parse_cut_message(&EXAMPLE_COM[..20]),
            Err(DnsError::TooManyRecords { .. } | DnsError::Truncated { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut message = EXAMPLE_COM.to_vec();
        message.push(0);
        assert_eq!(
            parse_message(&message),
            Err(DnsError::TrailingBytes {
                at: EXAMPLE_COM.len(),
                len: 1
            })
        );
    }

    #[test]
    fn label_length_64_and_reserved_label_types() {
        let mut label = vec![64];
        label.extend_from_slice(&[b'a'; 64]);
        label.push(0);
        assert_eq!(
            parse_questions(&[&label]),
            Err(DnsError::BadLabelType { at: 12, byte: 64 })
        );
        assert_eq!(
            parse_questions(&[&[3, b'w', b'w', b'w', 0x80, 0x00, 0]]),
            Err(DnsError::BadLabelType { at: 16, byte: 0x80 })
        );
    }

    #[test]
    fn name_longer_than_255_bytes() {
        let long = vec!["a".repeat(63); 4].join(".");
        assert!(matches!(
            parse_questions(&[&n(&long)]),
            Err(DnsError::NameTooLong { at: 12, .. })
        ));

        // Long only through a pointer: a 63-byte label in front of a 193-byte name.
        let mut b = Builder::response();
        let three = vec!["a".repeat(63); 3].join(".");
        b.question(&n(&three), TYPE_A).answer(
            &cat(&[&labels(&"b".repeat(63)), &ptr(Q)]),
            TYPE_A,
            60,
            &[1, 2, 3, 4],
        );
        assert!(matches!(
            parse_message(&b.build()),
            Err(DnsError::NameTooLong { .. })
        ));
    }

    #[test]
    fn pointer_to_itself_is_a_loop_and_refused() {
        assert_eq!(parse_questions(&[&ptr(Q)]), forward_pointer(12, 12, 12));
    }

    #[test]
    fn pointer_back_into_its_own_name_is_refused() {
        // `\x01a` then a pointer back to the `\x01a`: earlier than the pointer, but not earlier
        // than the name, so it would loop.
        let looping = cat(&[&labels("a"), &ptr(Q)]);
        assert_eq!(parse_questions(&[&looping]), forward_pointer(14, 12, 12));
        // Two names pointing at each other: the first one's pointer goes forward.
        assert_eq!(
            parse_questions(&[&ptr(Q + 6), &ptr(Q)]),
            forward_pointer(12, 18, 12)
        );
        // A suffix reached by a pointer may not point at or after itself either.
        let mut b = Builder::response();
        b.question(&n("example.com"), TYPE_A);
        let loop_at = b.offset();
        b.question(&cat(&[&labels("x"), &ptr(loop_at)]), TYPE_A)
            .question(&ptr(loop_at), TYPE_A);
        assert!(matches!(
            parse_message(&b.build()),
            Err(DnsError::ForwardPointer { .. })
        ));
    }

    #[test]
    fn forward_pointer_is_refused() {
        let mut b = Builder::response();
        b.question(&n("example.com"), TYPE_A)
            .answer(&ptr(200), TYPE_A, 60, &[1, 2, 3, 4]);
        assert_eq!(parse_message(&b.build()), forward_pointer(29, 200, 29));
    }

    #[test]
    fn too_many_pointers() {
        // Question k's name is a pointer to question k-1's name: question k follows k pointers.
        let mut b = Builder::response();
        b.question(&n("a"), TYPE_A);
        let mut previous = Q;
        for _ in 0..MAX_POINTERS {
            let here = b.offset();
            b.question(&ptr(previous), TYPE_A);
            previous = here;
        }
        let ok = b.build();
        let msg = parse_message(&ok).unwrap();
        assert!(msg.questions.iter().all(|q| q.name.as_str() == "a"));
        b.question(&ptr(previous), TYPE_A);
        assert!(matches!(
            parse_message(&b.build()),
            Err(DnsError::TooManyPointers { .. })
        ));
    }

    #[test]
    fn wrong_rdlength() {
        for (rtype, rdata) in [
            (TYPE_A, vec![1, 2, 3]),
            (TYPE_A, vec![1, 2, 3, 4, 5]),
            (TYPE_AAAA, vec![1, 2, 3, 4]),
            (TYPE_AAAA, vec![0; 17]),
            (TYPE_CNAME, vec![]),
            (TYPE_CNAME, n("x.example").into_iter().chain([0]).collect()),
            (TYPE_CNAME, labels("x.example")),
        ] {
            let mut b = Builder::response();
            b.question(&n("example.com"), TYPE_A)
                .answer(&ptr(Q), rtype, 60, &rdata);
            assert_eq!(
                parse_message(&b.build()),
                Err(DnsError::BadRdata {
                    at: 41,
                    rtype,
                    len: rdata.len() as u16
                }),
                "type {rtype}, {} bytes",
                rdata.len()
            );
        }
        // A CNAME whose name runs past its data into the next record.
        let mut b = Builder::response();
        b.question(&n("example.com"), TYPE_A)
            .answer(&ptr(Q), TYPE_CNAME, 60, &labels("x"))
            .answer(&[0], TYPE_A, 60, &[1, 2, 3, 4]);
        assert!(matches!(
            parse_message(&b.build()),
            Err(DnsError::BadRdata {
                rtype: TYPE_CNAME,
                ..
            })
        ));
    }

    #[test]
    fn rdlength_past_the_end() {
        let mut message = EXAMPLE_COM.to_vec();
        message[40] = 0x05; // the A record's RDLENGTH (4 -> 5): now it eats the OPT's first byte
        assert!(parse_message(&message).is_err());
        message[40] = 0xff;
        assert!(matches!(
            parse_message(&message),
            Err(DnsError::Truncated { at: 41, need: 255 })
        ));
    }

    #[test]
    fn header_counts_too_large() {
        let mut message = EXAMPLE_COM.to_vec();
        message[6..8].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(
            parse_message(&message),
            Err(DnsError::TooManyRecords {
                at: 4,
                questions: 1,
                records: 65536,
                need: 5 + 65536 * 11,
                have: EXAMPLE_COM.len() - 12,
            })
        );
        let mut message = EXAMPLE_COM.to_vec();
        message[4..6].copy_from_slice(&[0x00, 0x03]);
        assert!(parse_message(&message).is_err());
        assert!(matches!(
            parse_message(&[0; 11]),
            Err(DnsError::Truncated { .. })
        ));
    }

    #[test]
    fn errors_say_where() {
        let e = parse_message(&EXAMPLE_COM[..30]).unwrap_err();
        assert!(e.to_string().contains("offset"), "{e}");
    }

    // ---- Names ----

    #[test]
    fn odd_bytes_in_labels_are_escaped() {
        let mut b = Builder::response();
        let label = [0u8, b' ', b'.', b'\\', 0xff, b'A', b'"'];
        let mut wire = vec![label.len() as u8];
        wire.extend_from_slice(&label);
        wire.extend_from_slice(&n("example"));
        b.question(&wire, TYPE_A);
        let msg = parse_message(&b.build()).unwrap();
        let parsed = &msg.questions[0].name;
        assert_eq!(parsed.as_str(), "\\000\\032\\.\\\\\\255a\".example");
        assert!(parsed.as_str().bytes().all(|b| (0x21..=0x7e).contains(&b)));
        let mut lowered = wire.clone();
        lowered[6] = b'a';
        assert_eq!(parsed.wire(), lowered);
        assert_eq!(&Name::from_dotted(parsed.as_str()).unwrap(), parsed);
        assert_eq!(parsed.to_string(), parsed.as_str());
    }

    #[test]
    fn names_from_text() {
        assert_eq!(name("API.Example.COM.").as_str(), "api.example.com");
        assert_eq!(name("").as_str(), "");
        assert_eq!(name("."), Name::root());
        assert_eq!(name("a\\.b.c").wire(), b"\x03a.b\x01c\x00");
        assert_eq!(name("\\065b").as_str(), "ab");
        assert_eq!(name("x\\ y").as_str(), "x\\032y");
        assert_eq!("a.b".parse::<Name>().unwrap(), name("a.b"));
        assert_eq!(
            Name::from_dotted("a..b"),
            Err(DnsError::EmptyLabel { at: 2 })
        );
        assert_eq!(Name::from_dotted(".a"), Err(DnsError::EmptyLabel { at: 0 }));
        assert_eq!(
            Name::from_dotted("a.."),
            Err(DnsError::EmptyLabel { at: 2 })
        );
        assert_eq!(
            Name::from_dotted(&"x".repeat(64)),
            Err(DnsError::LabelTooLong { at: 0, len: 64 })
        );
        assert!(matches!(
            Name::from_dotted(&vec!["a".repeat(63); 4].join(".")),
            Err(DnsError::NameTooLong { .. })
        ));
        for bad in ["a\\", "a\\25", "a\\256", "a\\2x5"] {
            assert_eq!(
                Name::from_dotted(bad),
                Err(DnsError::BadEscape { at: 1 }),
                "{bad}"
            );
        }
    }

    #[test]
    fn wire_and_labels_match_the_shared_encoding() {
        let msg = parse_message(&cname_chain_message()).unwrap();
        for record in &msg.answers {
            let mut buf = [0u8; DNS_NAME_MAX];
            let len = agent_common::dns::to_wire(record.name.as_str(), &mut buf).unwrap();
            assert_eq!(record.name.wire(), &buf[..len]);
        }
        assert_eq!(
            name("WWW.example.com").wire(),
            b"\x03www\x07example\x03com\x00"
        );
        assert_eq!(
            name("A\\.b.Example").labels(),
            [b"a.b".to_vec(), b"example".to_vec()]
        );
        assert!(Name::root().labels().is_empty());
    }

    #[test]
    fn names_serialize_as_strings() {
        assert_eq!(
            serde_json::to_string(&name("Example.com")).unwrap(),
            "\"example.com\""
        );
    }

    /// Writes the valid messages above as the fuzzer's seed corpus:
    /// `cargo test -p egret --lib dns::wire::tests::write_fuzz_seeds -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/seeds/dns_parse"]
    fn write_fuzz_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/dns_parse");
        std::fs::create_dir_all(&dir).unwrap();
        for (what, message) in valid_messages() {
            std::fs::write(dir.join(what), message).unwrap();
        }
    }
}
