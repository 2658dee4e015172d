//! glibc malloc settings that keep egret's peak RSS down (docs/performance.md, peak RSS).
//!
//! egret's peak RSS is set at start-up, where two copies of the kernel's BTF are read and
//! parsed (egret's own offsets, then aya's loader: ~18 MiB of transient heap), and by what
//! stays resident once the ring buffer is mapped. glibc raises its mmap threshold to the size
//! of any large block freed (up to 32 MiB), so once the first 5 MiB copy of the BTF is freed,
//! the next ones are carved out of the heap, grown by copying, and their pages stay resident
//! after they are freed.

/// glibc's default mmap threshold: blocks this large are mapped on their own and unmapped
/// when freed.
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Keeps the mmap threshold at glibc's default instead of letting it grow: large blocks (the
/// BTF copies, the output buffer) are mapped on their own and given back when freed. egret
/// makes a few dozen blocks this large, nearly all at start-up, so the cost is nil.
pub fn fix_mmap_threshold() {
    // SAFETY: mallopt only changes a malloc parameter; no pointer is involved.
    let _ = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
}

/// Gives the heap pages freed so far back to the kernel: the small allocations of parsing
/// the BTF are freed all over the heap, and glibc keeps freed pages below the top of the heap
/// resident; called once the programs are loaded, before the ring buffer is mapped.
pub fn release_freed_heap() {
    // SAFETY: malloc_trim only returns free pages to the kernel; no pointer is involved.
    let _ = unsafe { libc::malloc_trim(0) };
}
