//! How glibc's allocator serves rtrace itself (never the target: these are calls in rtrace's
//! process, not environment variables a traced command would inherit).
//!
//! A build's report allocates ~100 MB in bursts on four threads (the analysis, capture.json,
//! the flame graphs, the off-CPU files). With glibc's defaults each thread gets an arena of its
//! own, and a freed large buffer raises the mmap threshold so later ones come from the heap
//! and stay there: the peak RSS was 140-160 MiB for ~100 MB live. Two arenas and a fixed 4 MiB
//! threshold (big buffers mapped and unmapped whole) keep it at 110-116 MiB for the same work
//! (`cargo xtask bench report`).

/// Sets the allocator's limits; call before any thread starts.
pub fn bound() {
    // SAFETY: mallopt only sets glibc's tunables; no allocation is in flight on another thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}
