//! Reads a live process's memory without stopping it: `process_vm_readv` (no ptrace attach,
//! no signal, no write). Reads are racy by nature: callers validate what they read.
use std::io::IoSliceMut;

use nix::{sys::uio::RemoteIoVec, unistd::Pid};

pub struct Mem {
    pid: Pid,
}

impl Mem {
    pub fn new(pid: u32) -> Mem {
        Mem { pid: Pid::from_raw(pid as i32) }
    }

    /// Fills `buf` from `addr`; an error when any byte could not be read (unmapped, exited).
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), String> {
        if buf.is_empty() {
            return Ok(());
        }
        let remote = [RemoteIoVec { base: addr as usize, len: buf.len() }];
        let want = buf.len();
        match nix::sys::uio::process_vm_readv(self.pid, &mut [IoSliceMut::new(buf)], &remote) {
            Ok(n) if n == want => Ok(()),
            Ok(n) => Err(format!("short read at {addr:#x}: {n} of {want} bytes")),
            Err(e) => Err(format!("reading {want} bytes at {addr:#x}: {e}")),
        }
    }

    pub fn bytes(&self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        let mut v = vec![0; len];
        self.read(addr, &mut v)?;
        Ok(v)
    }

    pub fn u64(&self, addr: u64) -> Result<u64, String> {
        let mut b = [0; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn u32(&self, addr: u64) -> Result<u32, String> {
        let mut b = [0; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}

/// Little-endian fields of a struct read in one piece.
pub fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8).map(|s| u64::from_le_bytes(s.try_into().unwrap())).unwrap_or(0)
}

pub fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4).map(|s| u32::from_le_bytes(s.try_into().unwrap())).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_itself() {
        let value: u64 = 0x1122_3344_5566_7788;
        let m = Mem::new(std::process::id());
        assert_eq!(m.u64(&value as *const u64 as u64), Ok(value));
        assert!(m.u64(8).is_err(), "page 0 is never mapped");
    }
}
