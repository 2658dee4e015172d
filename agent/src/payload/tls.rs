//! The TLS ClientHello (RFC 8446 §4.1.2; RFC 5246 §7.4.1.2 for TLS 1.2) from the first bytes
//! a client sends.
//!
//! The hello says where the client means to go (SNI), which application protocol it wants
//! (ALPN) and, through its JA4 fingerprint ([`super::ja4`]), which TLS stack it runs: all
//! visible before encryption starts. It comes in handshake records (content type 22); a
//! modern one (1.8 KB and more with post-quantum key shares) spans several TCP segments, and
//! a client may split it over several records, so [`parse_client_hello`] joins the records'
//! fragments and answers [`TlsError::Incomplete`] until the whole handshake message is there.
//!
//! Bounded: the hello and its record headers must fit in the first [`MAX_HELLO_BYTES`] bytes
//! of the connection, or it is refused ([`TlsError::TooLong`]) as soon as that is certain, so
//! a caller never waits for more than that. Everything the hello says is hostile: the server
//! name must be a valid DNS name or is dropped, ALPN protocol ids are escaped and bounded.

use super::{
    ja4::{ja4, Ja4Input},
    text::{dns_name, escape, Keep},
};

/// The most bytes of the connection a ClientHello may take, record headers included.
pub const MAX_HELLO_BYTES: usize = 16 * 1024;
/// The most ALPN protocol ids kept (the JA4 fingerprint still reads the first one as sent).
pub const MAX_ALPN_PROTOCOLS: usize = 16;
/// The longest ALPN protocol id kept, in characters after escaping.
pub const MAX_ALPN_LEN: usize = 64;

/// Record content type of handshake messages.
const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello.
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// A record header: content type, version, length.
const RECORD_HEADER: usize = 5;
/// A handshake header: message type, 24-bit length.
const HANDSHAKE_HEADER: usize = 4;
/// The longest plaintext record fragment (RFC 8446 §5.1).
const MAX_FRAGMENT: usize = 1 << 14;

/// Extension type of `server_name` (SNI).
pub const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_SIGNATURE_ALGORITHMS: u16 = 0x000d;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;

/// What a ClientHello offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The hello's `legacy_version` field (0x0303 for TLS 1.2 and 1.3).
    pub legacy_version: u16,
    /// The versions offered: the `supported_versions` extension's list in order, GREASE left
    /// out; when the extension is missing or holds nothing else, `[legacy_version]`.
    pub versions: Vec<u16>,
    /// The first `host_name` of the SNI extension, lower-cased, when it is a valid DNS name
    /// (letters, digits, `-`, `_`; at most 253 bytes, labels at most 63); `None` when there
    /// is no SNI or it is not a valid name.
    pub server_name: Option<String>,
    /// The ALPN protocol ids in order: at most [`MAX_ALPN_PROTOCOLS`], each at most
    /// [`MAX_ALPN_LEN`] characters; bytes outside visible ASCII are written `%XX`.
    pub alpn: Vec<String>,
    /// Cipher suites in wire order, GREASE included.
    pub cipher_suites: Vec<u16>,
    /// Extension types in wire order, GREASE included.
    pub extensions: Vec<u16>,
    /// The `signature_algorithms` extension's list in wire order.
    pub signature_algorithms: Vec<u16>,
    /// The JA4 fingerprint ([`super::ja4`]).
    pub ja4: String,
}

/// Why the bytes are not (yet) a ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// Everything so far is consistent with a ClientHello, but it is not whole yet.
    #[error("the ClientHello is not whole yet")]
    Incomplete,
    /// The first record is not a TLS handshake record.
    #[error("not a TLS handshake record")]
    NotHandshake,
    /// The first handshake message is not a ClientHello.
    #[error("handshake message type {0} is not a ClientHello")]
    NotClientHello(u8),
    /// The hello would not fit in [`MAX_HELLO_BYTES`].
    #[error("the ClientHello would take more than {MAX_HELLO_BYTES} bytes")]
    TooLong,
    /// The bytes break the record or hello format; says where.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
}

/// Reads the ClientHello at the start of `bytes`, the contiguous first bytes a client sent.
///
/// Bytes after the hello are ignored. [`TlsError::Incomplete`] means more bytes may make it
/// whole; every other error is final.
pub fn parse_client_hello(bytes: &[u8]) -> Result<ClientHello, TlsError> {
    let body = handshake_message(bytes)?;
    parse_body(&body)
}

/// The ClientHello's body, joined from the fragments of as many handshake records as it
/// spans.
fn handshake_message(bytes: &[u8]) -> Result<Vec<u8>, TlsError> {
    let mut message: Vec<u8> = Vec::new();
    let mut pos = 0_usize;
    loop {
        let remaining = match message_total(&message)? {
            Some(total) if message.len() >= total => {
                let body = message.get(HANDSHAKE_HEADER..total).unwrap_or_default();
                return Ok(body.to_vec());
            }
            Some(total) => total - message.len(),
            None => HANDSHAKE_HEADER - message.len(),
        };
        // The next byte of the message is at least a record header away.
        let least = pos.saturating_add(RECORD_HEADER).saturating_add(remaining);
        if least > MAX_HELLO_BYTES {
            return Err(TlsError::TooLong);
        }
        let header = bytes.get(pos..).unwrap_or_default();
        check_record_header(header, pos == 0)?;
        let Some(&[_, _, _, high, low]) = header.get(..RECORD_HEADER) else {
            return Err(TlsError::Incomplete);
        };
        let length = usize::from(u16::from_be_bytes([high, low]));
        if length == 0 {
            return Err(TlsError::Malformed("empty handshake record"));
        }
        if length > MAX_FRAGMENT {
            return Err(TlsError::Malformed("record longer than 2^14 bytes"));
        }
        let start = pos + RECORD_HEADER;
        let end = start + length;
        let fragment = bytes.get(start..end.min(bytes.len())).unwrap_or_default();
        message.extend_from_slice(fragment);
        if end > bytes.len() {
            // The record is cut; the hello may still be whole inside it.
            return match message_total(&message)? {
                Some(total) if message.len() >= total => Ok(message
                    .get(HANDSHAKE_HEADER..total)
                    .unwrap_or_default()
                    .to_vec()),
                _ => Err(TlsError::Incomplete),
            };
        }
        pos = end;
    }
}

/// Checks what there is of a record header: a handshake record of TLS (major version 3).
fn check_record_header(header: &[u8], first: bool) -> Result<(), TlsError> {
    let wrong = if first {
        TlsError::NotHandshake
    } else {
        TlsError::Malformed("a record other than handshake inside the ClientHello")
    };
    if header.first().is_some_and(|&t| t != CONTENT_HANDSHAKE) {
        return Err(wrong);
    }
    if header.get(1).is_some_and(|&major| major != 3) {
        return Err(wrong);
    }
    Ok(())
}

/// The whole message's length (header included) once its header is there; refuses a message
/// that is not a ClientHello or is too long to ever fit.
fn message_total(message: &[u8]) -> Result<Option<usize>, TlsError> {
    let Some(&[kind, a, b, c]) = message.get(..HANDSHAKE_HEADER) else {
        return Ok(None);
    };
    if kind != HANDSHAKE_CLIENT_HELLO {
        return Err(TlsError::NotClientHello(kind));
    }
    let length = (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c);
    let total = HANDSHAKE_HEADER + length;
    // One record header at least comes before it.
    if RECORD_HEADER + total > MAX_HELLO_BYTES {
        return Err(TlsError::TooLong);
    }
    Ok(Some(total))
}

/// A cursor over bytes that fails, rather than panics, past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TlsError> {
        let (head, rest) = self
            .0
            .split_at_checked(n)
            .ok_or(TlsError::Malformed(what))?;
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, TlsError> {
        match self.take(1, what)? {
            &[b] => Ok(b),
            _ => Err(TlsError::Malformed(what)),
        }
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, TlsError> {
        match self.take(2, what)? {
            &[a, b] => Ok(u16::from_be_bytes([a, b])),
            _ => Err(TlsError::Malformed(what)),
        }
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], TlsError> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], TlsError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Big-endian 16-bit values; a list of odd length is malformed.
fn u16_list(bytes: &[u8], what: &'static str) -> Result<Vec<u16>, TlsError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(TlsError::Malformed(what));
    }
    Ok(bytes
        .chunks_exact(2)
        .filter_map(|pair| <[u8; 2]>::try_from(pair).ok())
        .map(u16::from_be_bytes)
        .collect())
}

/// The extensions JA4 and egret read, each from its first occurrence.
#[derive(Default)]
struct Extensions<'a> {
    types: Vec<u16>,
    server_name: Option<String>,
    alpn: Vec<String>,
    first_alpn: Option<&'a [u8]>,
    signature_algorithms: Vec<u16>,
    supported_versions: Option<Vec<u16>>,
}

/// The ClientHello's body (after the handshake header).
fn parse_body(body: &[u8]) -> Result<ClientHello, TlsError> {
    let mut r = Reader(body);
    let legacy_version = r.u16("version")?;
    r.take(32, "random")?;
    let session_id = r.vec8("session id")?;
    if session_id.len() > 32 {
        return Err(TlsError::Malformed("session id longer than 32 bytes"));
    }
    let cipher_suites = u16_list(r.vec16("cipher suites")?, "cipher suites")?;
    if cipher_suites.is_empty() {
        return Err(TlsError::Malformed("no cipher suites"));
    }
    if r.vec8("compression methods")?.is_empty() {
        return Err(TlsError::Malformed("no compression methods"));
    }
    let mut extensions = Extensions::default();
    // TLS 1.2 and earlier hellos may end here, without extensions.
    if !r.is_empty() {
        read_extensions(r.vec16("extensions")?, &mut extensions)?;
        if !r.is_empty() {
            return Err(TlsError::Malformed("bytes after the extensions"));
        }
    }
    let versions = match extensions.supported_versions {
        Some(list) if !list.is_empty() => list,
        _ => vec![legacy_version],
    };
    let fingerprint = ja4(&Ja4Input {
        versions: &versions,
        cipher_suites: &cipher_suites,
        extensions: &extensions.types,
        signature_algorithms: &extensions.signature_algorithms,
        first_alpn: extensions.first_alpn,
    });
    Ok(ClientHello {
        legacy_version,
        versions,
        server_name: extensions.server_name,
        alpn: extensions.alpn,
        cipher_suites,
        extensions: extensions.types,
        signature_algorithms: extensions.signature_algorithms,
        ja4: fingerprint,
    })
}

/// Walks the extension block. The block's framing must be sound; inside an extension, only
/// a malformed `signature_algorithms` or `supported_versions` list is an error (a malformed
/// SNI or ALPN only loses that value, as the hello can still be fingerprinted).
fn read_extensions<'a>(block: &'a [u8], out: &mut Extensions<'a>) -> Result<(), TlsError> {
    let mut r = Reader(block);
    while !r.is_empty() {
        let kind = r.u16("extension type")?;
        let data = r.vec16("extension data")?;
        let first = !out.types.contains(&kind);
        out.types.push(kind);
        if !first {
            continue;
        }
        match kind {
            EXT_SERVER_NAME => out.server_name = server_name(data),
            EXT_ALPN => (out.alpn, out.first_alpn) = alpn(data),
            EXT_SIGNATURE_ALGORITHMS => {
                let mut list = Reader(data);
                out.signature_algorithms =
                    u16_list(list.vec16("signature algorithms")?, "signature algorithms")?;
            }
            EXT_SUPPORTED_VERSIONS => {
                let mut list = Reader(data);
                let versions = u16_list(list.vec8("supported versions")?, "supported versions")?;
                out.supported_versions = Some(
                    versions
                        .into_iter()
                        .filter(|&v| !super::ja4::is_grease(v))
                        .collect(),
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// The first `host_name` entry of a `server_name` extension (RFC 6066 §3), when it is a valid
/// DNS name.
fn server_name(data: &[u8]) -> Option<String> {
    let mut r = Reader(data);
    let mut list = Reader(r.vec16("server name list").ok()?);
    while !list.is_empty() {
        let kind = list.u8("server name type").ok()?;
        let name = list.vec16("server name").ok()?;
        if kind == 0 {
            return dns_name(name);
        }
    }
    None
}

/// The protocol ids of an ALPN extension (RFC 7301 §3.1), escaped and bounded, and the first
/// one as sent (for JA4). A malformed list keeps the ids before the fault.
fn alpn(data: &[u8]) -> (Vec<String>, Option<&[u8]>) {
    let mut ids = Vec::new();
    let mut first = None;
    let mut r = Reader(data);
    let Ok(list) = r.vec16("protocol name list") else {
        return (ids, first);
    };
    let mut list = Reader(list);
    while let Ok(id) = list.vec8("protocol name") {
        first = first.or(Some(id));
        if ids.len() < MAX_ALPN_PROTOCOLS && !id.is_empty() {
            ids.push(escape(id, MAX_ALPN_LEN, Keep::Visible).0);
        }
    }
    (ids, first)
}

// Tested with real and hand-built hellos in `super::tests`.
