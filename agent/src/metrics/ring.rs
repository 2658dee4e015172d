//! How full the kernel ring buffer is: its producer and consumer positions, read from the
//! map's own pages.
//!
//! A BPF ring buffer map exposes, at mmap offset 0, a page whose first word is the consumer
//! position (advanced by the reader, `crate::ring`, as records are consumed) and, at offset
//! one page, a page whose first word is the producer position (advanced by the kernel as
//! programs reserve records). Both count bytes since the map was created, record headers
//! included, so `producer - consumer` is the number of bytes reserved and not yet consumed.
//! The reader's mappings belong to the pipeline, so the telemetry maps the same two pages
//! again, read-only (the kernel allows read-only mappings of any part of the map).

use std::{
    os::fd::{AsRawFd as _, BorrowedFd},
    ptr::NonNull,
    sync::atomic::{AtomicUsize, Ordering},
};

/// A read-only view of a ring buffer's consumer and producer positions.
#[derive(Debug)]
pub struct RingProbe {
    base: NonNull<libc::c_void>,
    page: usize,
}

// SAFETY: the mapping is only read, through atomics; it is valid until `drop` unmaps it.
unsafe impl Send for RingProbe {}

impl RingProbe {
    /// Maps the position pages of the ring buffer map `fd`.
    ///
    /// # Errors
    /// `mmap` failed (not a ring buffer map, or the kernel refused).
    pub fn new(fd: BorrowedFd<'_>) -> std::io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = usize::try_from(page)
            .ok()
            .filter(|p| *p >= size_of::<usize>())
            .ok_or_else(std::io::Error::last_os_error)?;
        let len = page.saturating_mul(2);
        // SAFETY: a fresh shared read-only mapping of a file descriptor we borrow; nothing in
        // our address space is replaced (no MAP_FIXED). The kernel keeps the map alive for as
        // long as the mapping exists.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(ptr).ok_or_else(std::io::Error::last_os_error)?;
        Ok(Self { base, page })
    }

    fn position(&self, offset: usize) -> usize {
        // SAFETY: `offset` is 0 or one page, inside the two mapped pages; the word there is
        // page-aligned, and the kernel (and aya) write it atomically (smp_store_release).
        let word = unsafe { self.base.as_ptr().cast::<u8>().add(offset) }.cast::<usize>();
        // SAFETY: as above; the memory is valid for the lifetime of `self` and only accessed
        // atomically.
        unsafe { AtomicUsize::from_ptr(word) }.load(Ordering::Acquire)
    }

    /// Bytes reserved by the kernel and not yet consumed (record headers included).
    pub fn pending(&self) -> u64 {
        let consumer = self.position(0);
        let producer = self.position(self.page);
        u64::try_from(producer.wrapping_sub(consumer)).unwrap_or(u64::MAX)
    }
}

impl Drop for RingProbe {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, which nothing else refers to.
        unsafe {
            libc::munmap(self.base.as_ptr(), self.page.saturating_mul(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Write as _, os::fd::AsFd as _};

    use super::*;

    /// A file laid out like a ring buffer map's first two pages.
    fn pages(consumer: usize, producer: usize) -> std::fs::File {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
        let mut bytes = vec![0_u8; page * 2];
        bytes[..size_of::<usize>()].copy_from_slice(&consumer.to_ne_bytes());
        bytes[page..page + size_of::<usize>()].copy_from_slice(&producer.to_ne_bytes());
        let mut file = tempfile();
        file.write_all(&bytes).unwrap();
        file
    }

    fn tempfile() -> std::fs::File {
        let path = std::env::temp_dir().join(format!(
            "egret-ring-probe-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    #[test]
    fn pending_is_producer_minus_consumer() {
        let file = pages(4096, 4096 + 72);
        let probe = RingProbe::new(file.as_fd()).unwrap();
        assert_eq!(probe.pending(), 72);
        // Positions only grow, and may wrap around the word.
        let file = pages(usize::MAX - 7, 8);
        assert_eq!(RingProbe::new(file.as_fd()).unwrap().pending(), 16);
    }

    #[test]
    fn not_mappable() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(RingProbe::new(socket.as_fd()).is_err());
    }
}
