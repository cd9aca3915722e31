//! TRACKED_BITS mapped into rtrace's memory (the map is BPF_F_MMAPABLE), so that rtrace sets
//! and clears a pid's bit with the same atomic read-modify-writes the programs use (their
//! atomic adds at fork and free): a watch set tracks roots while the programs run, and a plain
//! read-then-write of a word through the bpf syscall lost the bit of a child the kernel added
//! to that word in between (4 of 3,000 children of a watched shell, whose exits then went
//! unseen and whose later removal would have borrowed from the neighbouring bits).
use std::{
    os::fd::{AsFd, AsRawFd},
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{bail, Result};

pub struct Bits {
    ptr: *mut AtomicU64,
    words: u32,
    len: usize,
}

// SAFETY: the mapping is shared memory the kernel updates atomically too; every access here is
// atomic, from whichever thread owns the Probes.
unsafe impl Send for Bits {}

impl Bits {
    /// Maps the array (`words` u64 words) of `map`.
    pub fn map(map: &aya::maps::Map, words: u32) -> Result<Bits> {
        let aya::maps::Map::Array(data) = map else { bail!("TRACKED_BITS is not an array") };
        let fd = data.fd().as_fd().as_raw_fd();
        let len = (words as usize * 8).next_multiple_of(4096);
        // SAFETY: a shared mapping of the map's own pages, unmapped on drop.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if ptr == libc::MAP_FAILED {
            bail!("mapping TRACKED_BITS: {}", std::io::Error::last_os_error());
        }
        Ok(Bits { ptr: ptr.cast(), words, len })
    }

    fn word(&self, pid: u32) -> Option<&AtomicU64> {
        // SAFETY: within the mapping, which lives as long as self.
        (pid / 64 < self.words).then(|| unsafe { &*self.ptr.add((pid / 64) as usize) })
    }

    pub fn set(&self, pid: u32) {
        if let Some(w) = self.word(pid) {
            w.fetch_or(1 << (pid % 64), Ordering::SeqCst);
        }
    }

    pub fn clear(&self, pid: u32) {
        if let Some(w) = self.word(pid) {
            w.fetch_and(!(1 << (pid % 64)), Ordering::SeqCst);
        }
    }
}

impl Drop for Bits {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
