//! What the first bytes of an outbound TCP connection say, before encryption hides the rest.
//!
//! The kernel copies the first bytes each way of each outbound TCP connection to userspace
//! as chunks (an offset from the first payload byte, and the bytes). Per direction, a
//! [`reassembly::Reassembly`] puts the chunks back in order; the client's contiguous prefix
//! goes to [`classify_outbound`] (a TLS ClientHello with its SNI, ALPN and JA4 fingerprint,
//! or an HTTP/1.x request with its host, path and user agent), the server's to
//! [`parse_response`] (an HTTP/1.x status line).
//!
//! Pure logic over hostile bytes: nothing here panics, allocates without bound or returns a
//! string with a control character or non-ASCII byte in it (see [`tls`] and [`http`] for how
//! each field is validated or escaped).

pub mod http;
pub mod ja4;
pub mod reassembly;
mod text;
pub mod tls;

pub use text::is_printable;

/// Bytes of a direction worth keeping: a [`reassembly::Reassembly`] of this limit always
/// holds enough for [`classify_outbound`] to stop answering [`FirstBytes::NeedMore`] (a
/// ClientHello with its record headers may take up to this much; an HTTP request line
/// answers at [`http::NEED_MORE_BELOW`]).
pub const FIRST_BYTES_LIMIT: usize = tls::MAX_HELLO_BYTES;

/// What the first bytes of a connection said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstBytes {
    Tls(tls::ClientHello),
    Http(http::Request),
    /// Neither TLS nor HTTP.
    Other,
    /// What a server would take for TLS or HTTP but egret cannot read: a TLS handshake record
    /// that is not a readable ClientHello (malformed, or too long), a request line egret's
    /// parser refuses but a lenient server may not (another HTTP version, stray spaces:
    /// [`http::looks_like_request`]). It may carry a name egret cannot see: a gate refuses it.
    Unreadable,
    /// Not enough bytes yet to tell or to finish parsing (a ClientHello split across
    /// segments, a request line not yet whole).
    NeedMore,
}

impl FirstBytes {
    /// Whether more bytes could change the verdict: only [`FirstBytes::NeedMore`] waits.
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::NeedMore)
    }
}

/// Classifies `bytes`, the contiguous prefix of the client's first flight
/// ([`reassembly::Reassembly::contiguous`]).
///
/// A first byte of 22 (a TLS handshake record) is read as TLS, anything else as HTTP. The
/// answer depends only on `bytes`, so a caller calls again as the prefix grows and stops at
/// the first answer other than [`FirstBytes::NeedMore`]. Once the TLS answer is final, more
/// bytes do not change it (bytes after the hello are not read); an HTTP request read from
/// more bytes may have more of its headers. A first byte of 22 that does not start a
/// readable ClientHello is [`FirstBytes::Unreadable`], never [`FirstBytes::Other`].
pub fn classify_outbound(bytes: &[u8]) -> FirstBytes {
    match bytes.first() {
        None => FirstBytes::NeedMore,
        Some(&0x16) => match tls::parse_client_hello(bytes) {
            Ok(hello) => FirstBytes::Tls(hello),
            Err(tls::TlsError::Incomplete) => FirstBytes::NeedMore,
            Err(_) => FirstBytes::Unreadable,
        },
        Some(_) => match http::parse_request(bytes) {
            Ok(request) => FirstBytes::Http(request),
            Err(http::HttpError::Incomplete) => FirstBytes::NeedMore,
            Err(http::HttpError::NotHttp) => match http::looks_like_request(bytes) {
                Some(true) => FirstBytes::Unreadable,
                Some(false) => FirstBytes::Other,
                None => FirstBytes::NeedMore,
            },
        },
    }
}

/// The HTTP/1.x status line at the start of `bytes`, the first bytes the server sent.
pub fn parse_response(bytes: &[u8]) -> Option<http::Response> {
    http::parse_response(bytes)
}

#[cfg(test)]
pub(crate) mod tests;
