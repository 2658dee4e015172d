//! Turning hostile bytes from the wire into strings that are safe to print, log and match.
//!
//! Everything the parsers return as a `String` goes through one of these: a host name is
//! validated and lower-cased ([`dns_name`], [`host`]), anything else is escaped ([`escape`]).
//! The result is always printable ASCII, so a log line or a JSON field cannot be broken or
//! spoofed by what a peer sent.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest DNS name in presentation form, without the trailing dot (RFC 1035: 255 bytes on
/// the wire).
pub const NAME_MAX: usize = 253;
/// Longest DNS label.
pub const LABEL_MAX: usize = 63;

/// `bytes` as a DNS host name: letters, digits, `-`, `_` and `.`, lower-cased, at most 253
/// bytes, labels of 1 to 63 bytes. A single trailing dot (the root) is dropped. Anything else
/// is `None`: a name that does not look like a host name is not shown as one.
pub fn dns_name(bytes: &[u8]) -> Option<String> {
    let bytes = bytes.strip_suffix(b".").unwrap_or(bytes);
    if bytes.is_empty() || bytes.len() > NAME_MAX {
        return None;
    }
    for label in bytes.split(|&b| b == b'.') {
        if label.is_empty() || label.len() > LABEL_MAX {
            return None;
        }
        if !label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
    }
    // All ASCII by now, so this cannot fail.
    let text = std::str::from_utf8(bytes).ok()?;
    Some(text.to_ascii_lowercase())
}

/// A host as an HTTP `Host` header or URI authority gives it (RFC 9110 §7.2): an optional
/// `:port` is dropped (it must be digits); `[v6]` and dotted IPv4 literals are returned in
/// their canonical text form; anything else must be a [`dns_name`].
pub fn host(bytes: &[u8]) -> Option<String> {
    if let Some(rest) = bytes.strip_prefix(b"[") {
        let close = rest.iter().position(|&b| b == b']')?;
        let (literal, after) = rest.split_at(close);
        let after = after.get(1..)?;
        if !valid_port(after) {
            return None;
        }
        let address: Ipv6Addr = std::str::from_utf8(literal).ok()?.parse().ok()?;
        return Some(address.to_string());
    }
    let name = match bytes.iter().rposition(|&b| b == b':') {
        Some(colon) => {
            let (name, port) = bytes.split_at(colon);
            if !valid_port(port) {
                return None;
            }
            name
        }
        None => bytes,
    };
    if let Some(address) = std::str::from_utf8(name)
        .ok()
        .and_then(|text| text.parse::<Ipv4Addr>().ok())
    {
        return Some(address.to_string());
    }
    dns_name(name)
}

/// `:` followed by at most 5 digits (RFC 9110 allows an empty port), or nothing.
fn valid_port(bytes: &[u8]) -> bool {
    match bytes.strip_prefix(b":") {
        Some(digits) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        None => bytes.is_empty(),
    }
}

/// Which bytes [`escape`] keeps as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Visible ASCII, `0x21..=0x7e`: URL paths and queries, ALPN protocol ids.
    Visible,
    /// Visible ASCII and the space, `0x20..=0x7e`: free text such as a `User-Agent`.
    VisibleAndSpace,
}

/// `bytes` with every byte outside the kept range written `%XX` (upper-case hex), at most
/// `max` characters long; `true` when it had to be cut (an escape is never cut in half).
///
/// `%` itself is kept as is, so an already percent-encoded URL path comes out unchanged and
/// the result is still a valid percent-encoded string.
pub fn escape(bytes: &[u8], max: usize, keep: Keep) -> (String, bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len().min(max));
    for (i, &b) in bytes.iter().enumerate() {
        let kept = match keep {
            Keep::Visible => (0x21..=0x7e).contains(&b),
            Keep::VisibleAndSpace => (0x20..=0x7e).contains(&b),
        };
        let width = if kept { 1 } else { 3 };
        if out.len() + width > max {
            return (out, i < bytes.len());
        }
        if kept {
            out.push(char::from(b));
        } else {
            out.push('%');
            for nibble in [b >> 4, b & 0x0f] {
                out.push(char::from(
                    HEX.get(usize::from(nibble)).copied().unwrap_or(b'0'),
                ));
            }
        }
    }
    (out, false)
}

/// Whether every byte of `text` is printable ASCII (`0x20..=0x7e`): what every string the
/// payload parsers return satisfies.
pub fn is_printable(text: &str) -> bool {
    text.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_are_validated_and_lower_cased() {
        assert_eq!(
            dns_name(b"WWW.Example.COM").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(dns_name(b"example.com.").as_deref(), Some("example.com"));
        assert_eq!(
            dns_name(b"_srv.my-host.local").as_deref(),
            Some("_srv.my-host.local")
        );
        assert_eq!(dns_name(b"localhost").as_deref(), Some("localhost"));
        for bad in [
            &b""[..],
            b".",
            b"a..b",
            b".a",
            b"a b",
            b"a\x00b",
            b"a\r\nb",
            b"caf\xc3\xa9.fr",
            b"a/b",
            b"a:b",
        ] {
            assert_eq!(dns_name(bad), None, "{bad:?}");
        }
        let label = "a".repeat(63);
        assert!(dns_name(label.as_bytes()).is_some());
        assert_eq!(dns_name(format!("{label}a").as_bytes()), None);
        let long = [label.as_str(); 4].join(".");
        assert_eq!(long.len(), 255);
        assert_eq!(dns_name(long.as_bytes()), None);
        assert!(dns_name(&long.as_bytes()[2..]).is_some());
    }

    #[test]
    fn hosts_drop_the_port_and_allow_ip_literals() {
        assert_eq!(host(b"Example.COM:8080").as_deref(), Some("example.com"));
        assert_eq!(host(b"example.com:").as_deref(), Some("example.com"));
        assert_eq!(host(b"127.0.0.1:44331").as_deref(), Some("127.0.0.1"));
        assert_eq!(host(b"[::1]:8080").as_deref(), Some("::1"));
        assert_eq!(host(b"[2001:DB8:0::1]").as_deref(), Some("2001:db8::1"));
        for bad in [
            &b"example.com:http"[..],
            b"example.com:123456",
            b"[::1",
            b"[::1]x",
            b"[example.com]",
            b"::1",
            b"a b:80",
            b"",
        ] {
            assert_eq!(host(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn escape_writes_percent_hex_and_bounds_the_length() {
        assert_eq!(
            escape(b"/a b\x7f\xff%41", 100, Keep::Visible),
            ("/a%20b%7F%FF%41".into(), false)
        );
        assert_eq!(
            escape(b"Mozilla/5.0 (X11)\t", 100, Keep::VisibleAndSpace),
            ("Mozilla/5.0 (X11)%09".into(), false)
        );
        assert_eq!(escape(b"abcdef", 4, Keep::Visible), ("abcd".into(), true));
        assert_eq!(escape(b"abcd", 4, Keep::Visible), ("abcd".into(), false));
        // An escape that does not fit is left out whole.
        assert_eq!(escape(b"ab\x00", 4, Keep::Visible), ("ab".into(), true));
        assert!(is_printable(
            &escape(
                &(0..=255).collect::<Vec<u8>>(),
                10_000,
                Keep::VisibleAndSpace
            )
            .0
        ));
    }
}
