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

    /// Many reads in few system calls (up to 1024 ranges per `process_vm_readv`): `buf`
    /// holds the ranges back to back; the result says which ranges were read completely. A
    /// failed range (unmapped) ends a call, the rest are retried in the next one.
    pub fn read_many(&self, ranges: &[(u64, usize)], buf: &mut [u8]) -> Vec<bool> {
        const IOV_MAX: usize = 1024;
        let mut ok = vec![false; ranges.len()];
        let mut starts = Vec::with_capacity(ranges.len());
        let mut at = 0;
        for &(_, len) in ranges {
            starts.push(at);
            at += len;
        }
        assert!(at <= buf.len(), "read_many: buffer too small");
        let mut i = 0;
        while i < ranges.len() {
            let end = (i + IOV_MAX).min(ranges.len());
            let remote: Vec<RemoteIoVec> =
                ranges[i..end].iter().map(|&(a, l)| RemoteIoVec { base: a as usize, len: l }).collect();
            let total: usize = ranges[i..end].iter().map(|r| r.1).sum();
            let local = &mut buf[starts[i]..starts[i] + total];
            let n =
                nix::sys::uio::process_vm_readv(self.pid, &mut [IoSliceMut::new(local)], &remote).unwrap_or_default();
            // Ranges wholly within the n bytes read are good; the one cut short failed.
            let mut got = 0;
            let mut j = i;
            while j < end && got + ranges[j].1 <= n {
                got += ranges[j].1;
                ok[j] = true;
                j += 1;
            }
            i = if j < end { j + 1 } else { end };
        }
        ok
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
        let other: u32 = 0xaabb_ccdd;
        let mut buf = [0u8; 20];
        let ok = m.read_many(&[(&value as *const u64 as u64, 8), (8, 8), (&other as *const u32 as u64, 4)], &mut buf);
        assert_eq!(ok, [true, false, true]);
        assert_eq!(u64_at(&buf, 0), value);
        assert_eq!(u32_at(&buf, 16), other);
    }
}
