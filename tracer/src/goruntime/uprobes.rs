//! Where the Go uprobes go in one executable (`GoProbeSpec`): the file offsets of each RET of
//! `runtime.newproc1` (decoded with iced-x86: a uretprobe would crash Go, so the return is
//! probed where it happens), of the entries of `gdestroy` (1.22+) or `goexit0` (≤ 1.21) and of
//! the stop-the-world functions, with the struct offsets and reason names the probes need.
//! Computed once per binary: the 100 compile processes of a `go build` share one.
use std::path::{Path, PathBuf};

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use object::{Object, ObjectSegment};

use super::binary::GoBinary;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GoProbeSpec {
    /// The executable the offsets are in (the uprobes attach to its inode).
    pub exe: PathBuf,
    /// Go minor version (1.22 changed the exit and stop-the-world functions).
    pub minor: u32,
    /// `runtime.g.gopc` offset.
    pub gopc_off: u32,
    /// Go ≤ 1.21: `runtime.m.preemptoff` offset (the stop reason); None: stops are timed
    /// without a reason.
    pub reason_off: Option<u32>,
    /// File offsets of newproc1's RET instructions.
    pub newproc1_rets: Vec<u64>,
    /// File offset of gdestroy (1.22+) or goexit0 (≤ 1.21).
    pub goexit: u64,
    /// File offset of startTheWorldWithSema (its entry opens a stop from 1.22).
    pub stw_start: Option<u64>,
    /// File offsets of startTheWorldWithSema's RETs (they close a stop: RAX = restart time).
    pub stw_start_rets: Vec<u64>,
    /// File offset of stopTheWorldWithSema (used ≤ 1.21 only).
    pub stw_stop: Option<u64>,
    /// 1.22+: the binary's `stwReasonStrings`.
    pub stw_reasons: Vec<String>,
    /// Why stop-the-world cannot be timed (a function or the reason table missing); the churn
    /// probes may still work.
    pub stw_unavailable: Option<String>,
}

/// The uprobe spec of `exe` (already parsed as `bin`), or why not.
pub fn probe_spec(exe: &Path, bin: &GoBinary, gopc_off: u32, reason_off: Option<u32>) -> Result<GoProbeSpec, String> {
    let minor = bin.version.minor;
    let newproc1_rets = ret_offsets(bin, "runtime.newproc1")?;
    let exit_name = if minor >= 22 { "runtime.gdestroy" } else { "runtime.goexit0" };
    let exit = bin.func(exit_name).ok_or_else(|| format!("{exit_name} not found in .gopclntab"))?;
    let goexit = file_offset(bin, exit.start)?;
    let mut spec = GoProbeSpec {
        exe: exe.to_owned(),
        minor,
        gopc_off,
        reason_off: if minor >= 22 { None } else { reason_off },
        newproc1_rets,
        goexit,
        ..Default::default()
    };
    let entry = |name: &str| -> Result<u64, String> {
        let f = bin.func(name).ok_or_else(|| format!("{name} not found in .gopclntab"))?;
        file_offset(bin, f.start)
    };
    let stw = (|| -> Result<(), String> {
        spec.stw_start = Some(entry("runtime.startTheWorldWithSema")?);
        spec.stw_start_rets = ret_offsets(bin, "runtime.startTheWorldWithSema")?;
        if minor >= 22 {
            spec.stw_reasons = super::stw::reason_strings(bin)?;
        } else {
            spec.stw_stop = Some(entry("runtime.stopTheWorldWithSema")?);
        }
        Ok(())
    })();
    if let Err(e) = stw {
        spec.stw_start = None;
        spec.stw_start_rets.clear();
        spec.stw_stop = None;
        spec.stw_unavailable = Some(e);
    }
    Ok(spec)
}

/// File offsets of the RET instructions of function `name`.
fn ret_offsets(bin: &GoBinary, name: &str) -> Result<Vec<u64>, String> {
    let f = bin.func(name).ok_or_else(|| format!("{name} not found in .gopclntab"))?;
    let code =
        bin.bytes_at(f.start, (f.end - f.start) as usize).ok_or_else(|| format!("{name}'s code is not in the file"))?;
    let rets = rets(&code, f.start);
    if rets.is_empty() {
        return Err(format!("no RET instruction decoded in {name}"));
    }
    rets.iter().map(|&a| file_offset(bin, a)).collect()
}

/// Addresses of the RET instructions in `code` (a function body at link-time `ip`).
pub fn rets(code: &[u8], ip: u64) -> Vec<u64> {
    let mut d = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut out = Vec::new();
    while d.can_decode() {
        let i = d.decode();
        if i.mnemonic() == Mnemonic::Ret {
            out.push(i.ip());
        }
    }
    out
}

/// The file offset of link-time address `vaddr`, through the PT_LOAD segment that maps it.
pub fn file_offset(bin: &GoBinary, vaddr: u64) -> Result<u64, String> {
    bin.file
        .segments()
        .find_map(|s| {
            let (off, size) = s.file_range();
            let rel = vaddr.checked_sub(s.address())?;
            (rel < size).then_some(off + rel)
        })
        .ok_or_else(|| format!("address {vaddr:#x} is in no loaded segment of the file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_rets() {
        // mov rax, rbx; ret; int3; xor eax, eax; ret
        let code = [0x48, 0x89, 0xd8, 0xc3, 0xcc, 0x31, 0xc0, 0xc3];
        assert_eq!(rets(&code, 0x1000), vec![0x1003, 0x1007]);
        // A C3 byte inside an instruction is not a RET: mov eax, 0xc3.
        assert_eq!(rets(&[0xb8, 0xc3, 0, 0, 0], 0x1000), Vec::<u64>::new());
    }

    /// The Debian go tool (1.19, stripped): newproc1 has RETs whose file bytes are C3, and
    /// stop-the-world is paired (no reason table before 1.21).
    #[test]
    fn spec_of_the_go_tool() {
        let Ok(path) = std::fs::canonicalize("/usr/bin/go") else { return };
        let data = super::super::binary::open(path.to_str().unwrap()).unwrap();
        let b = GoBinary::parse(&data).unwrap();
        let s = probe_spec(&path, &b, 296, Some(248)).unwrap();
        assert!(!s.newproc1_rets.is_empty());
        let file = std::fs::read(&path).unwrap();
        for &r in s.newproc1_rets.iter().chain(&s.stw_start_rets) {
            assert_eq!(file[r as usize], 0xc3, "RET at file offset {r:#x}");
        }
        assert!(s.stw_start.is_some() && s.stw_stop.is_some(), "{:?}", s.stw_unavailable);
        assert!(!s.stw_start_rets.is_empty());
        assert_eq!(s.reason_off, Some(248));
    }
}
