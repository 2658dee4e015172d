//! The decode stage: ring-buffer bytes → a typed [`Event`] (`agent_common::decode`, which checks
//! kind, version and size against the `#[repr(C)]` types the kernel fills), and the counts of
//! what could not be used.

use agent_common::{decode, Event};

/// What the decode stage counted; part of every metric line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecodeStats {
    /// Records read from the ring buffer.
    pub received: u64,
    /// Records that did not decode, or decoded to something unusable (an address family the
    /// programs never produce).
    pub errors: u64,
}

#[derive(Debug, Default)]
pub struct Decoder {
    pub stats: DecodeStats,
}

impl Decoder {
    /// One record; `None` (counted) when it does not decode.
    pub fn decode(&mut self, bytes: &[u8]) -> Option<Event> {
        self.stats.received += 1;
        match decode(bytes) {
            Ok(event) => Some(event),
            Err(err) => {
                self.stats.errors += 1;
                log::warn!("dropping an undecodable record: {err}");
                None
            }
        }
    }

    /// A record that decoded but cannot become a line.
    pub fn unusable(&mut self) {
        self.stats.errors += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_it_cannot_decode() {
        let mut decoder = Decoder::default();
        assert!(decoder.decode(&[1, 2, 3]).is_none());
        assert!(decoder.decode(&[]).is_none());
        decoder.unusable();
        assert_eq!(
            decoder.stats,
            DecodeStats {
                received: 2,
                errors: 3
            }
        );
    }
}
