//! The reader of the kernel's event ring buffer (`EVENTS`), with its data pages mapped once.
//!
//! The kernel lays a ring buffer's data pages out twice in a row, so that a record that wraps
//! past the end can be read as one slice; aya's `RingBuf` maps both copies, and every data
//! page is then counted twice in egret's resident set: 32 MiB of RSS for the default 16 MiB
//! buffer, which holds 16 MiB of memory (docs/performance.md, peak RSS). This reader maps the
//! data once and copies the rare record that wraps into a scratch buffer. The protocol is
//! the kernel's (`kernel/bpf/ringbuf.c`), read the way libbpf and aya read it: the consumer
//! position is a page of its own, mapped read-write at offset 0; the producer position is the
//! first word of the next page, followed by the data; each record starts with an 8-byte
//! header whose first word is its length and two flags (busy: being written; discard: to be
//! skipped), and takes `8 + len` bytes rounded up to 8.

use std::{
    ops::Deref,
    os::fd::{AsFd, AsRawFd as _, BorrowedFd},
    ptr::NonNull,
    sync::atomic::{self, AtomicU32, AtomicUsize, Ordering},
};

use aya::maps::{MapData, MapError};

/// The record is being written: stop here (`BPF_RINGBUF_BUSY_BIT`).
const BUSY: u32 = 1 << 31;
/// The record was discarded by its program: skip it (`BPF_RINGBUF_DISCARD_BIT`).
const DISCARD: u32 = 1 << 30;
/// Bytes of a record's header (`BPF_RINGBUF_HDR_SZ`).
const HEADER: usize = 8;

/// Why the ring buffer could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("not a ring buffer map")]
    NotRingBuffer,
    #[error("reading the map's size: {0}")]
    Info(#[source] MapError),
    #[error("ring buffer size {0} is not a power of two multiple of the page size")]
    Size(u32),
    #[error("mapping the ring buffer: {0}")]
    Mmap(#[source] std::io::Error),
}

/// A shared mapping of part of the map, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(
        fd: BorrowedFd<'_>,
        len: usize,
        prot: libc::c_int,
        offset: usize,
    ) -> Result<Self, RingError> {
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| RingError::Mmap(std::io::ErrorKind::InvalidInput.into()))?;
        // SAFETY: a fresh shared mapping of a file descriptor we borrow; nothing in our address
        // space is replaced (no MAP_FIXED). The kernel keeps the map alive for as long as the
        // mapping exists.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(RingError::Mmap(std::io::Error::last_os_error()));
        }
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| RingError::Mmap(std::io::Error::last_os_error()))?;
        Ok(Self { base, len })
    }

    /// The word-aligned `usize` at the start of the mapping, which the kernel (or we) update
    /// atomically.
    fn position(&self) -> &AtomicUsize {
        // SAFETY: the mapping is page-aligned and at least a page long; the memory is valid
        // for the lifetime of `self` and only accessed atomically.
        unsafe { AtomicUsize::from_ptr(self.base.as_ptr().cast::<usize>()) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; every borrow of it is tied to the
        // lifetime of its owner.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The event ring buffer, read by egret's one pipeline thread.
#[derive(Debug)]
pub struct EventRing {
    map: MapData,
    /// The consumer page (read-write).
    consumer: Mapping,
    /// The producer page, then the data pages, once (read-only).
    producer: Mapping,
    page: usize,
    /// Bytes of data: a power of two.
    size: usize,
    /// Our consumer position, published in `consumer` as records are consumed.
    pos: usize,
    /// The producer position last read: more records are there while `pos` is behind it.
    producer_pos: usize,
    /// A record was consumed since the last full fence (see `next`).
    needs_wakeup: bool,
    /// Where a record that wraps past the end of the data is put together.
    scratch: Vec<u8>,
}

// SAFETY: the mappings are owned by the ring and used by one thread at a time (`&mut self`).
unsafe impl Send for EventRing {}

impl EventRing {
    /// Maps the ring buffer map `map`.
    ///
    /// # Errors
    /// The map's size is unusable or `mmap` failed.
    pub fn new(map: MapData) -> Result<Self, RingError> {
        let max_entries = map.info().map_err(RingError::Info)?.max_entries();
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|page| page.is_power_of_two() && *page >= HEADER)
            .ok_or(RingError::Size(max_entries))?;
        let size = usize::try_from(max_entries)
            .ok()
            .filter(|size| size.is_power_of_two() && *size >= page)
            .ok_or(RingError::Size(max_entries))?;
        let fd = map.fd().as_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let data_len = page.checked_add(size).ok_or(RingError::Size(max_entries))?;
        let producer = Mapping::new(fd, data_len, libc::PROT_READ, page)?;
        // Non-zero if the map was used before (a pinned map, or records already written).
        let pos = consumer.position().load(Ordering::Acquire);
        let producer_pos = producer.position().load(Ordering::Acquire);
        Ok(Self {
            map,
            consumer,
            producer,
            page,
            size,
            pos,
            producer_pos,
            needs_wakeup: false,
            scratch: Vec::new(),
        })
    }

    /// The next record, if one is complete; consumed when the returned record is dropped.
    #[expect(
        clippy::should_implement_trait,
        reason = "each record borrows the ring, which Iterator cannot express"
    )]
    pub fn next(&mut self) -> Option<Record<'_>> {
        while self.data_available() {
            let offset = self.pos & (self.size - 1);
            let header = self.header(offset);
            if header & BUSY != 0 {
                if !self.needs_wakeup {
                    return None;
                }
                // Either a retry sees the committed record, or its producer sees the consumer
                // position we published and sends a notification.
                atomic::fence(Ordering::SeqCst);
                self.needs_wakeup = false;
                continue;
            }
            // The kernel never reserves more than the data size minus a header.
            let len = ((header & !(BUSY | DISCARD)) as usize).min(self.size - HEADER);
            if header & DISCARD != 0 {
                self.consume(len);
                continue;
            }
            let start = (offset + HEADER) & (self.size - 1);
            let data = data_pages(&self.producer, self.page, self.size);
            let bytes: &[u8] = match data.get(start..start + len) {
                Some(bytes) => bytes,
                None => {
                    // The record wraps past the end of the data: put its two parts together.
                    let tail = data.get(start..).unwrap_or_default();
                    let head = data.get(..len - tail.len()).unwrap_or_default();
                    self.scratch.clear();
                    self.scratch.extend_from_slice(tail);
                    self.scratch.extend_from_slice(head);
                    &self.scratch
                }
            };
            return Some(Record {
                bytes,
                consumer: self.consumer.position(),
                pos: &mut self.pos,
                needs_wakeup: &mut self.needs_wakeup,
                len,
            });
        }
        None
    }

    /// Whether the producer is ahead of us, reading its position again once we caught up.
    fn data_available(&mut self) -> bool {
        if self.pos == self.producer_pos {
            if self.needs_wakeup {
                // Either this sees a new record, or its producer sees the consumer position
                // we published and sends a notification.
                atomic::fence(Ordering::SeqCst);
                self.needs_wakeup = false;
            }
            self.producer_pos = self.producer.position().load(Ordering::Acquire);
        }
        // Equality, not order: the positions are free-running counters that may wrap.
        self.pos != self.producer_pos
    }

    /// The header word of the record at `offset` of the data.
    fn header(&self, offset: usize) -> u32 {
        // SAFETY: `offset` is below `size` and a multiple of 8 (every record is), so the word
        // lies inside the data pages, aligned. The kernel commits a record by writing its
        // header with a fully ordered exchange; the Acquire load pairs with it, so the record's
        // bytes are visible once the busy bit is clear.
        let word = unsafe { self.producer.base.as_ptr().add(self.page + offset) };
        // SAFETY: as above, valid and aligned for the lifetime of `self`.
        unsafe { AtomicU32::from_ptr(word.cast::<u32>()) }.load(Ordering::Acquire)
    }

    fn consume(&mut self, len: usize) {
        self.pos = advance(self.pos, len);
        self.consumer.position().store(self.pos, Ordering::Release);
        self.needs_wakeup = true;
    }
}

/// The data pages of the producer mapping (`page + size` bytes long).
fn data_pages(producer: &Mapping, page: usize, size: usize) -> &[u8] {
    // SAFETY: the mapping is `page + size` bytes long and lives as long as the borrow; the
    // kernel writes only space we have not yet consumed, and we read a record only after its
    // header says it is committed.
    unsafe { std::slice::from_raw_parts(producer.base.as_ptr().add(page), size) }
}

/// The consumer position after a record of `len` bytes.
fn advance(pos: usize, len: usize) -> usize {
    pos.wrapping_add((HEADER + len).next_multiple_of(8))
}

impl AsFd for EventRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.fd().as_fd()
    }
}

/// One record of the ring buffer; dropping it hands its space back to the kernel.
pub struct Record<'a> {
    bytes: &'a [u8],
    consumer: &'a AtomicUsize,
    pos: &'a mut usize,
    needs_wakeup: &'a mut bool,
    len: usize,
}

impl Deref for Record<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.bytes
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        *self.pos = advance(*self.pos, self.len);
        // Publish the new position after reading the record: the kernel reads it with Acquire
        // before it reuses the record's space.
        self.consumer.store(*self.pos, Ordering::Release);
        *self.needs_wakeup = true;
    }
}
