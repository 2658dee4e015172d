//! Putting the first bytes of one direction of a TCP connection back in order.
//!
//! The kernel hands the first bytes of each direction over as chunks: an offset from the first
//! payload byte and the bytes. Chunks come in any order, and TCP retransmissions repeat or
//! overlap bytes already seen; a parser wants the longest prefix without a gap. [`Reassembly`]
//! keeps the bytes up to a limit fixed at construction and nothing past it, so one connection
//! can never make it grow, whatever its chunks say.

/// A bounded buffer that puts chunks of a byte stream back in order.
///
/// Bytes at offsets `>= limit` are dropped. Where chunks overlap, the first bytes written for
/// an offset stay: a retransmission carries the same bytes, and a peer that sends different
/// bytes for the same offset (an evasion trick) cannot rewrite what was already read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassembly {
    limit: usize,
    /// Bytes received, indexed by offset; as long as the furthest byte received (at most
    /// `limit`). Offsets not received yet are zero.
    bytes: Vec<u8>,
    /// One bit per offset of `bytes`: set once that offset has been received.
    have: Vec<u64>,
    /// Length of the prefix received without a gap.
    contiguous: usize,
}

impl Reassembly {
    /// An empty buffer that keeps at most `limit` bytes (offsets `0..limit`).
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            bytes: Vec::new(),
            have: Vec::new(),
            contiguous: 0,
        }
    }

    /// The most bytes this buffer keeps.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Adds `data` found at `offset` of the stream. Any order, duplicates and overlaps are
    /// fine; bytes past the limit are dropped, and a byte already received keeps its value.
    pub fn insert(&mut self, offset: u32, data: &[u8]) {
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if start >= self.limit || data.is_empty() {
            return;
        }
        let end = start.saturating_add(data.len()).min(self.limit);
        // Past everything received so far: no byte of the chunk can be there already. That is
        // the common case (in-order segments), copied whole instead of byte by byte.
        let fresh = start >= self.bytes.len();
        if end > self.bytes.len() {
            self.bytes.resize(end, 0);
            self.have.resize(end.div_ceil(64), 0);
        }
        let (Some(dest), Some(src)) = (self.bytes.get_mut(start..end), data.get(..end - start))
        else {
            return;
        };
        if fresh {
            dest.copy_from_slice(src);
            self.mark(start, end);
        } else {
            for ((at, slot), byte) in (start..).zip(dest.iter_mut()).zip(src) {
                if let Some(word) = self.have.get_mut(at / 64) {
                    let bit = 1_u64 << (at % 64);
                    if *word & bit == 0 {
                        *word |= bit;
                        *slot = *byte;
                    }
                }
            }
        }
        if fresh && self.contiguous == start {
            self.contiguous = end;
        }
        while self.contiguous < self.bytes.len() && self.received(self.contiguous) {
            self.contiguous += 1;
        }
    }

    /// The bytes from offset 0 up to the first gap.
    pub fn contiguous(&self) -> &[u8] {
        self.bytes.get(..self.contiguous).unwrap_or_default()
    }

    /// How many bytes the buffer holds room for now: the furthest offset received plus one,
    /// never more than the limit.
    pub fn buffered(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the prefix fills the whole limit: nothing more can be added.
    pub fn is_full(&self) -> bool {
        self.contiguous >= self.limit
    }

    /// Marks offsets `start..end` received, a word at a time.
    fn mark(&mut self, start: usize, end: usize) {
        let mut at = start;
        while at < end {
            let low = at % 64;
            let bits = (64 - low).min(end - at);
            let mask = if bits == 64 {
                u64::MAX
            } else {
                ((1_u64 << bits) - 1) << low
            };
            if let Some(word) = self.have.get_mut(at / 64) {
                *word |= mask;
            }
            at += bits;
        }
    }

    fn received(&self, at: usize) -> bool {
        self.have
            .get(at / 64)
            .is_some_and(|word| word & (1_u64 << (at % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_chunks_make_the_prefix() {
        let mut r = Reassembly::new(16);
        r.insert(0, b"hello ");
        r.insert(6, b"world");
        assert_eq!(r.contiguous(), b"hello world");
        assert!(!r.is_full());
    }

    #[test]
    fn a_gap_stops_the_prefix_until_it_is_filled() {
        let mut r = Reassembly::new(64);
        r.insert(6, b"world");
        assert_eq!(r.contiguous(), b"");
        assert_eq!(r.buffered(), 11);
        r.insert(0, b"hel");
        assert_eq!(r.contiguous(), b"hel");
        r.insert(3, b"lo ");
        assert_eq!(r.contiguous(), b"hello world");
    }

    #[test]
    fn duplicates_and_overlaps_keep_the_first_bytes() {
        let mut r = Reassembly::new(64);
        r.insert(2, b"cdef");
        r.insert(0, b"abXXXXgh");
        assert_eq!(r.contiguous(), b"abcdefgh");
        r.insert(0, b"abcdefgh");
        r.insert(4, b"ZZ");
        assert_eq!(r.contiguous(), b"abcdefgh");
    }

    #[test]
    fn bytes_past_the_limit_are_dropped() {
        let mut r = Reassembly::new(8);
        r.insert(6, b"ghijkl");
        r.insert(100, b"far away");
        r.insert(u32::MAX, b"very far");
        assert_eq!(r.buffered(), 8);
        r.insert(0, b"abcdef");
        assert_eq!(r.contiguous(), b"abcdefgh");
        assert!(r.is_full());
    }

    #[test]
    fn a_zero_limit_keeps_nothing() {
        let mut r = Reassembly::new(0);
        r.insert(0, b"abc");
        assert_eq!(r.contiguous(), b"");
        assert_eq!(r.buffered(), 0);
        assert!(r.is_full());
    }

    #[test]
    fn empty_chunks_change_nothing() {
        let mut r = Reassembly::new(8);
        r.insert(3, b"");
        assert_eq!(r.buffered(), 0);
        assert_eq!(r, Reassembly::new(8));
    }

    /// The same buffer, one byte at a time: what `insert` must equal whatever its shortcuts.
    struct ByteModel {
        bytes: Vec<Option<u8>>,
    }

    impl ByteModel {
        fn insert(&mut self, offset: u32, data: &[u8]) {
            for (at, byte) in (offset as usize..).zip(data) {
                if let Some(slot @ None) = self.bytes.get_mut(at) {
                    *slot = Some(*byte);
                }
            }
        }

        fn contiguous(&self) -> Vec<u8> {
            self.bytes.iter().map_while(|b| *b).collect()
        }
    }

    #[test]
    fn random_chunks_give_what_byte_by_byte_gives() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        for _ in 0..2_000 {
            let limit = usize::try_from(next(300)).unwrap();
            let mut r = Reassembly::new(limit);
            let mut model = ByteModel {
                bytes: vec![None; limit],
            };
            for _ in 0..next(8) + 1 {
                let offset = u32::try_from(next(320)).unwrap();
                let len = usize::try_from(next(140)).unwrap();
                let data: Vec<u8> = (0..len).map(|_| u8::try_from(next(256)).unwrap()).collect();
                r.insert(offset, &data);
                model.insert(offset, &data);
                assert_eq!(r.contiguous(), model.contiguous().as_slice());
                for (at, byte) in model.bytes.iter().enumerate() {
                    assert_eq!(r.received(at), byte.is_some(), "offset {at}");
                    if let Some(byte) = byte {
                        assert_eq!(r.bytes[at], *byte, "offset {at}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_order_of_chunks_gives_the_same_prefix() {
        let data: Vec<u8> = (0..200_u8).collect();
        let chunks: Vec<(u32, &[u8])> = data
            .chunks(17)
            .enumerate()
            .map(|(i, c)| (u32::try_from(i * 17).unwrap(), c))
            .collect();
        for rotate in 0..chunks.len() {
            let mut order = chunks.clone();
            order.rotate_left(rotate);
            order.reverse();
            let mut r = Reassembly::new(150);
            for (offset, chunk) in &order {
                r.insert(*offset, chunk);
                r.insert(*offset, chunk);
            }
            assert_eq!(r.contiguous(), &data[..150]);
        }
    }
}
