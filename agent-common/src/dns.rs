//! The DNS name hash shared by the kernel (which hashes the question of each answer it sees)
//! and userspace (which hashes the names a policy approves).
//!
//! Each label is hashed on its own (FNV-1a, ASCII letters folded to lower case); the label
//! hashes are then combined **from the last label to the first**. Combined that way, one pass
//! over a name's labels yields the hash of every parent domain on the way: `api.example.com`
//! gives `com`, `example.com` and `api.example.com`, which is what wildcard rules
//! (`*.example.com`) need, within the kernel's small bounded loops.

/// Longest name in wire format (RFC 1035), including the root's zero byte.
pub const DNS_NAME_MAX: usize = 255;
/// Most labels the kernel hashes (a deeper name is never approved in the kernel).
pub const DNS_LABELS_MAX: usize = 16;
/// FNV-1a offset basis and prime (64 bit).
pub const NAME_HASH_SEED: u64 = 0xcbf2_9ce4_8422_2325;
pub const NAME_HASH_PRIME: u64 = 0x0000_0100_0000_01b3;

/// ASCII upper-case letters in a little-endian word of label bytes, folded to lower case
/// (SWAR: all eight bytes at once, no branches).
#[inline(always)]
pub const fn lower_word(word: u64) -> u64 {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low7 = word & !HIGH;
    let above_z = low7.wrapping_add(0x2525_2525_2525_2525); // high bit set when byte > 'Z'
    let from_a = low7.wrapping_add(0x3f3f_3f3f_3f3f_3f3f); // high bit set when byte >= 'A'
    let upper = from_a & !above_z & !word & HIGH;
    word | (upper >> 2)
}

/// Starts a label's hash (its length is part of it).
#[inline(always)]
pub const fn label_hash_start(len: usize) -> u64 {
    NAME_HASH_SEED ^ len as u64
}

/// Folds the next (up to) eight bytes of a label, as a little-endian word with the bytes past
/// the label's end zero, into its hash.
#[inline(always)]
pub const fn label_hash_word(hash: u64, word: u64) -> u64 {
    let hash = (hash ^ lower_word(word)).wrapping_mul(NAME_HASH_PRIME);
    hash ^ (hash >> 29)
}

/// Hash of one label's bytes.
pub fn label_hash(label: &[u8]) -> u64 {
    let mut hash = label_hash_start(label.len());
    for chunk in label.chunks(8) {
        let mut bytes = [0u8; 8];
        if let Some(dst) = bytes.get_mut(..chunk.len()) {
            dst.copy_from_slice(chunk);
        }
        hash = label_hash_word(hash, u64::from_le_bytes(bytes));
    }
    hash
}

/// Prepends a label (by its hash) to the hash of the domain after it (start from
/// [`NAME_HASH_SEED`] for the root).
#[inline(always)]
pub const fn name_hash_prepend(domain: u64, label: u64) -> u64 {
    (domain.rotate_left(17) ^ label).wrapping_mul(NAME_HASH_PRIME)
}

/// Hash of a dotted name (`api.example.com`, no root dot): the value the kernel computes for
/// the same name on the wire. `None` for an empty label or one longer than 63 bytes.
pub fn dotted_name_hash(name: &str) -> Option<u64> {
    let mut hash = NAME_HASH_SEED;
    if name.is_empty() {
        return Some(hash);
    }
    for label in name.rsplit('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        hash = name_hash_prepend(hash, label_hash(label.as_bytes()));
    }
    Some(hash)
}

/// Hash of a name in wire format (`\x03api\x07example\x03com\x00`), the same value as
/// [`dotted_name_hash`] of its dotted form. Reading stops at the root byte, at a compression
/// pointer or at the end of the slice.
pub fn name_hash(wire: &[u8]) -> u64 {
    const MAX_LABELS: usize = 128;
    let mut starts = [(0usize, 0usize); MAX_LABELS];
    let mut n = 0usize;
    let mut pos = 0usize;
    while let Some(&len) = wire.get(pos) {
        let len = len as usize;
        if len == 0 || len > 63 || n >= MAX_LABELS {
            break;
        }
        if let Some(slot) = starts.get_mut(n) {
            *slot = (pos + 1, len);
        }
        n += 1;
        pos += len + 1;
    }
    let mut hash = NAME_HASH_SEED;
    let mut k = n;
    while k > 0 {
        k -= 1;
        if let Some(&(start, len)) = starts.get(k) {
            let label = wire.get(start..start + len).unwrap_or(&[]);
            hash = name_hash_prepend(hash, label_hash(label));
        }
    }
    hash
}

/// Writes `name` (dotted, without the root dot: `api.example.com`) in wire format into `out`;
/// returns the length, or `None` if a label is empty or longer than 63 bytes, or the name does
/// not fit.
pub fn to_wire(name: &str, out: &mut [u8; DNS_NAME_MAX]) -> Option<usize> {
    let mut at = 0usize;
    if !name.is_empty() {
        for label in name.split('.') {
            let len = label.len();
            if len == 0 || len > 63 || at + 1 + len >= DNS_NAME_MAX {
                return None;
            }
            *out.get_mut(at)? = len as u8;
            out.get_mut(at + 1..at + 1 + len)?
                .copy_from_slice(label.as_bytes());
            at += 1 + len;
        }
    }
    *out.get_mut(at)? = 0;
    Some(at + 1)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{string::String, vec, vec::Vec};

    use super::*;

    #[test]
    fn parent_domain_hashes_come_out_of_one_pass() {
        let mut buf = [0u8; DNS_NAME_MAX];
        let len = to_wire("API.Example.com", &mut buf).unwrap();
        assert_eq!(&buf[..len], b"\x03API\x07Example\x03com\x00");
        // The kernel's way: hash each label, then combine from the last label backwards.
        let labels = [&buf[1..4], &buf[5..12], &buf[13..16]];
        let mut hash = NAME_HASH_SEED;
        let mut parents = Vec::new();
        for label in labels.iter().rev() {
            hash = name_hash_prepend(hash, label_hash(label));
            parents.push(hash);
        }
        assert_eq!(Some(parents[0]), dotted_name_hash("com"));
        assert_eq!(Some(parents[1]), dotted_name_hash("example.com"));
        assert_eq!(Some(parents[2]), dotted_name_hash("api.example.com"));
        assert_ne!(
            dotted_name_hash("example.com"),
            dotted_name_hash("example.org")
        );
        assert_ne!(dotted_name_hash("ab.c"), dotted_name_hash("a.bc"));
        assert_eq!(dotted_name_hash("a..b"), None);
        assert_eq!(
            Some(name_hash(&buf[..len])),
            dotted_name_hash("api.example.com")
        );
    }

    #[test]
    fn lower_word_folds_only_ascii_capitals() {
        let all: Vec<u8> = (0u8..=255).collect();
        for chunk in all.chunks(8) {
            let word = u64::from_le_bytes(chunk.try_into().unwrap());
            let want: Vec<u8> = chunk.iter().map(u8::to_ascii_lowercase).collect();
            assert_eq!(lower_word(word).to_le_bytes().to_vec(), want);
        }
        assert_eq!(label_hash(b"ExAmPlE"), label_hash(b"example"));
        assert_ne!(label_hash(b"example"), label_hash(b"example\0"));
    }

    #[test]
    fn rejects_bad_names() {
        let mut buf = [0u8; DNS_NAME_MAX];
        assert_eq!(to_wire("a..b", &mut buf), None);
        assert_eq!(to_wire(&String::from("x").repeat(64), &mut buf), None);
        let long = vec![String::from("a").repeat(63); 4].join(".");
        assert_eq!(
            to_wire(&long, &mut buf),
            None,
            "255 bytes on the wire is too long"
        );
    }
}
