//! The JA4 TLS client fingerprint (FoxIO, `technical_details/JA4.md` of
//! <https://github.com/FoxIO-LLC/ja4>), for TLS over TCP.
//!
//! A fingerprint names the TLS library and its configuration behind a connection, whatever
//! server it goes to: `t13d1516h2_8daaf6152771_e5627efa2ab1` is
//!
//! - `t`: TLS over TCP (QUIC's `q` and DTLS's `d` are not seen here);
//! - `13`: the highest version offered (`supported_versions`, else the hello's version);
//! - `d`: an SNI extension is present (`i` when not);
//! - `15`, `16`: how many cipher suites and extensions (two digits, at most 99);
//! - `h2`: the first and last character of the first ALPN protocol (`00` when none);
//! - the first 12 hex digits of the SHA-256 of the cipher suites, sorted;
//! - the first 12 hex digits of the SHA-256 of the extensions, sorted, without SNI and ALPN,
//!   then `_` and the signature algorithms in their original order.
//!
//! GREASE values (RFC 8701) are left out everywhere, since a client picks them at random.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// Extension types JA4 treats apart.
const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_ALPN: u16 = 0x0010;

/// What JA4 reads from a ClientHello. Lists are in wire order and may hold GREASE values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ja4Input<'a> {
    /// The versions offered: the `supported_versions` extension's list, or the hello's legacy
    /// version alone when there is no such extension.
    pub versions: &'a [u16],
    pub cipher_suites: &'a [u16],
    /// Extension types, every one the hello carries (SNI and ALPN included).
    pub extensions: &'a [u16],
    /// The `signature_algorithms` extension's list.
    pub signature_algorithms: &'a [u16],
    /// The first ALPN protocol id as sent (bytes, not escaped).
    pub first_alpn: Option<&'a [u8]>,
}

/// Whether `value` is a GREASE value (RFC 8701): `0x?a?a` with both bytes equal.
pub fn is_grease(value: u16) -> bool {
    value & 0x0f0f == 0x0a0a && value >> 8 == value & 0xff
}

/// The JA4 fingerprint of `input`.
pub fn ja4(input: &Ja4Input<'_>) -> String {
    let ciphers: Vec<u16> = without_grease(input.cipher_suites);
    let extensions: Vec<u16> = without_grease(input.extensions);
    let signatures: Vec<u16> = without_grease(input.signature_algorithms);
    let sni = if extensions.contains(&EXT_SERVER_NAME) {
        'd'
    } else {
        'i'
    };
    let mut hashed_extensions: Vec<u16> = extensions
        .iter()
        .copied()
        .filter(|&e| e != EXT_SERVER_NAME && e != EXT_ALPN)
        .collect();
    hashed_extensions.sort_unstable();
    let mut sorted_ciphers = ciphers.clone();
    sorted_ciphers.sort_unstable();

    let cipher_hash = truncated_hash(&hex_list(&sorted_ciphers));
    let extension_hash = if hashed_extensions.is_empty() {
        truncated_hash("")
    } else if signatures.is_empty() {
        truncated_hash(&hex_list(&hashed_extensions))
    } else {
        truncated_hash(&format!(
            "{}_{}",
            hex_list(&hashed_extensions),
            hex_list(&signatures)
        ))
    };
    format!(
        "t{}{sni}{:02}{:02}{}_{cipher_hash}_{extension_hash}",
        version(input.versions),
        ciphers.len().min(99),
        extensions.len().min(99),
        alpn(input.first_alpn),
    )
}

fn without_grease(values: &[u16]) -> Vec<u16> {
    values.iter().copied().filter(|&v| !is_grease(v)).collect()
}

/// The two characters for the highest version offered.
fn version(versions: &[u16]) -> &'static str {
    match versions.iter().copied().filter(|&v| !is_grease(v)).max() {
        Some(0x0304) => "13",
        Some(0x0303) => "12",
        Some(0x0302) => "11",
        Some(0x0301) => "10",
        Some(0x0300) => "s3",
        Some(0x0002) => "s2",
        Some(0xfeff) => "d1",
        Some(0xfefd) => "d2",
        Some(0xfefc) => "d3",
        _ => "00",
    }
}

/// The first and last character of the first ALPN protocol id; when either is not an ASCII
/// letter or digit, the first and last hex digit of the whole id instead (the spec's rule for
/// binary ids, e.g. `0xab 0xcd` → `ad`). `00` when there is none or it is empty.
fn alpn(first: Option<&[u8]>) -> String {
    let Some((&head, &tail)) = first.and_then(|id| Some((id.first()?, id.last()?))) else {
        return "00".to_owned();
    };
    if head.is_ascii_alphanumeric() && tail.is_ascii_alphanumeric() {
        [char::from(head), char::from(tail)].iter().collect()
    } else {
        format!("{:x}{:x}", head >> 4, tail & 0x0f)
    }
}

/// Lower-case four-digit hex values joined by commas.
fn hex_list(values: &[u16]) -> String {
    let mut out = String::with_capacity(values.len() * 5);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{v:04x}");
    }
    out
}

/// The first 12 hex digits of the SHA-256 of `text`; `000000000000` for nothing at all, as
/// the spec asks (so that "no values" is plain to see).
fn truncated_hash(text: &str) -> String {
    if text.is_empty() {
        return "000000000000".to_owned();
    }
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(12);
    for byte in digest.iter().take(6) {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the spec (`JA4.md`), from its raw lists: Chrome's hello with SNI and
    /// ALPN `h2`, extensions in the order it sent them.
    #[test]
    fn the_spec_example() {
        let ciphers = [
            0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014,
            0x009c, 0x009d, 0x002f, 0x0035,
        ];
        let extensions = [
            0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023, 0x0012,
            0x002b, 0xff01, 0x000b, 0x000a, 0x0015,
        ];
        let signatures = [
            0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
        ];
        let input = Ja4Input {
            versions: &[0x0304, 0x0303],
            cipher_suites: &ciphers,
            extensions: &extensions,
            signature_algorithms: &signatures,
            first_alpn: Some(b"h2"),
        };
        assert_eq!(ja4(&input), "t13d1516h2_8daaf6152771_e5627efa2ab1");
        // Without signature algorithms the list ends without `_` (the spec's 6d807ffa2a79).
        let input = Ja4Input {
            signature_algorithms: &[],
            ..input
        };
        assert!(ja4(&input).ends_with("_6d807ffa2a79"));
    }

    #[test]
    fn grease_is_left_out_everywhere() {
        for g in [0x0a0a, 0x1a1a, 0x2a2a, 0xfafa] {
            assert!(is_grease(g));
        }
        for not in [0x0a1a, 0x0a0b, 0x1301, 0x0000, 0xaaab] {
            assert!(!is_grease(not), "{not:#x}");
        }
        let plain = Ja4Input {
            versions: &[0x0304],
            cipher_suites: &[0x1301, 0x1302],
            extensions: &[0x0000, 0x002b, 0x000d],
            signature_algorithms: &[0x0403],
            first_alpn: Some(b"http/1.1"),
        };
        let greased = Ja4Input {
            versions: &[0x7a7a, 0x0304],
            cipher_suites: &[0x2a2a, 0x1301, 0x1302],
            extensions: &[0xdada, 0x0000, 0x002b, 0x000d, 0x1a1a],
            signature_algorithms: &[0x0403, 0x3a3a],
            ..plain
        };
        assert_eq!(ja4(&plain), ja4(&greased));
        assert!(ja4(&plain).starts_with("t13d0203h1_"));
    }

    #[test]
    fn alpn_characters() {
        assert_eq!(alpn(None), "00");
        assert_eq!(alpn(Some(b"")), "00");
        assert_eq!(alpn(Some(b"h2")), "h2");
        assert_eq!(alpn(Some(b"http/1.1")), "h1");
        assert_eq!(alpn(Some(b"x")), "xx");
        // The spec's examples for ids that are not alphanumeric at either end.
        assert_eq!(alpn(Some(&[0xab])), "ab");
        assert_eq!(alpn(Some(&[0xab, 0xcd])), "ad");
        assert_eq!(alpn(Some(&[0x30, 0xab])), "3b");
        assert_eq!(alpn(Some(&[0x30, 0x31, 0xab, 0xcd])), "3d");
        assert_eq!(alpn(Some(&[0x30, 0xab, 0xcd, 0x31])), "01");
    }

    #[test]
    fn versions_counts_and_empty_lists() {
        let input = Ja4Input {
            versions: &[0x0303],
            ..Ja4Input::default()
        };
        assert_eq!(ja4(&input), "t12i000000_000000000000_000000000000");
        let many: Vec<u16> = (1..=150).collect();
        let input = Ja4Input {
            versions: &[0x9999],
            cipher_suites: &many,
            extensions: &many,
            ..Ja4Input::default()
        };
        assert!(ja4(&input).starts_with("t00i9999"));
        for (v, text) in [
            (0x0300, "s3"),
            (0x0002, "s2"),
            (0x0301, "10"),
            (0x0302, "11"),
        ] {
            assert_eq!(version(&[v]), text);
        }
        // Only SNI and ALPN: nothing left to hash, whatever the signature algorithms.
        let input = Ja4Input {
            versions: &[0x0304],
            extensions: &[0x0000, 0x0010],
            signature_algorithms: &[0x0403],
            ..Ja4Input::default()
        };
        assert_eq!(ja4(&input), "t13d000200_000000000000_000000000000");
    }
}
