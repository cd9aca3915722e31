//! Link-time addresses of the runtime globals the goroutine reader needs, and the binary's
//! own wait-reason names: from `.symtab` when present, else from what a stripped binary
//! still has — the code of `runtime.allgadd` (it stores both halves of the goroutine table)
//! and the bytes of `runtime.waitReasonStrings` (found through its first non-empty string).
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use object::{Object, ObjectSymbol};

use super::binary::GoBinary;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Globals {
    /// `runtime.allgptr` (`**g`, the first element of `allgs`) and `runtime.allglen`.
    pub allgptr: u64,
    pub allglen: u64,
    /// `runtime.waitReasonStrings`: index = `g.waitreason` (renumbered between releases).
    pub wait_reasons: Vec<String>,
    /// "symtab" or "code" (stripped: decoded from `allgadd` and found in `.data`).
    pub from: &'static str,
}

/// Longest wait-reason string accepted while walking a stripped table (the longest in Go
/// 1.27 is 37 bytes: "GC mark termination"…"synctest.Wait"; anything far longer is not one).
const MAX_REASON_LEN: u64 = 80;
/// Upper bound on the table's length (Go 1.27 has 46 entries).
const MAX_REASONS: usize = 256;

pub fn resolve(bin: &GoBinary) -> Result<Globals, String> {
    let sym = |n: &str| bin.symbol(n);
    match (sym("runtime.allgptr"), sym("runtime.allglen")) {
        (Some(allgptr), Some(allglen)) => {
            Ok(Globals { allgptr, allglen, wait_reasons: wait_reasons_from_symbol(bin)?, from: "symtab" })
        }
        _ => {
            let (allgptr, allglen) = allgs_from_code(bin)?;
            Ok(Globals { allgptr, allglen, wait_reasons: wait_reasons_from_data(bin)?, from: "code" })
        }
    }
}

/// `runtime.allgadd` ends with `atomicstorep(&allgptr, &allgs[0])` and
/// `atomic.Storeuintptr(&allglen, len)`, each compiled to `LEAQ sym(RIP), r; XCHGQ x, 0(r)`:
/// the last two such pairs are (allgptr, allglen). Measured on Go 1.19 and 1.21–1.27.
pub fn allgs_from_code(bin: &GoBinary) -> Result<(u64, u64), String> {
    let f = bin.func("runtime.allgadd").ok_or("runtime.allgadd not in .gopclntab")?;
    let code = bin.bytes_at(f.start, (f.end - f.start) as usize).ok_or("runtime.allgadd's code is not in the file")?;
    // 64-bit register → the address a RIP-relative LEAQ put in it.
    let mut lea: std::collections::HashMap<Register, u64> = Default::default();
    let mut stores = Vec::new();
    for ins in Decoder::with_ip(64, &code, f.start, DecoderOptions::NONE).iter() {
        match ins.mnemonic() {
            Mnemonic::Lea if ins.is_ip_rel_memory_operand() => {
                lea.insert(ins.op0_register(), ins.ip_rel_memory_address());
            }
            Mnemonic::Xchg => {
                let mem = (0..ins.op_count()).any(|i| ins.op_kind(i) == OpKind::Memory);
                if mem && ins.memory_displacement64() == 0 && ins.memory_index() == Register::None {
                    if let Some(addr) = lea.get(&ins.memory_base()) {
                        stores.push(*addr);
                    }
                }
            }
            _ => {
                // A register written by anything else no longer holds the LEA's address.
                if ins.op_count() > 0 && ins.op_kind(0) == OpKind::Register {
                    lea.remove(&ins.op0_register());
                }
            }
        }
    }
    match stores[..] {
        [.., allgptr, allglen] if allgptr != allglen && allgptr % 8 == 0 && allglen % 8 == 0 => Ok((allgptr, allglen)),
        _ => Err(format!("runtime.allgadd does not store allgptr/allglen as expected ({} stores found)", stores.len())),
    }
}

fn string_at(bin: &GoBinary, ptr: u64, len: u64) -> Option<String> {
    if len == 0 {
        return Some(String::new());
    }
    if len > MAX_REASON_LEN {
        return None;
    }
    let b = bin.bytes_at(ptr, len as usize)?;
    b.iter().all(|c| (0x20..0x7f).contains(c)).then(|| String::from_utf8(b).ok())?
}

fn pair(d: &[u8], at: usize) -> Option<(u64, u64)> {
    let w = |o: usize| d.get(o..o + 8).map(|s| u64::from_le_bytes(s.try_into().unwrap()));
    Some((w(at)?, w(at + 8)?))
}

fn wait_reasons_from_symbol(bin: &GoBinary) -> Result<Vec<String>, String> {
    let s = bin
        .file
        .symbols()
        .find(|s| s.name() == Ok("runtime.waitReasonStrings"))
        .ok_or("runtime.waitReasonStrings not in .symtab")?;
    let n = (s.size() / 16) as usize;
    if n == 0 || n > MAX_REASONS {
        return Err(format!("runtime.waitReasonStrings has an unexpected size {}", s.size()));
    }
    let d = bin.bytes_at(s.address(), n * 16).ok_or("runtime.waitReasonStrings is not in the file")?;
    (0..n)
        .map(|i| {
            let (p, l) = pair(&d, i * 16).unwrap();
            string_at(bin, p, l).ok_or_else(|| format!("runtime.waitReasonStrings[{i}] is not a string"))
        })
        .collect()
}

/// Stripped: `waitReasonStrings[1]` is "GC assist marking" in every version. Find those bytes
/// in `.rodata`, then the (pointer, 17) string header pointing at them in `.data`; element 0
/// (just before) must be "", and the table runs while entries are printable strings.
pub fn wait_reasons_from_data(bin: &GoBinary) -> Result<Vec<String>, String> {
    const FIRST: &[u8] = b"GC assist marking";
    let (ro_addr, ro) = bin.section(".rodata").ok_or("no .rodata")?;
    let (data_addr, data) = bin.section(".data").ok_or("no .data")?;
    let targets: Vec<u64> =
        ro.windows(FIRST.len()).enumerate().filter(|(_, w)| *w == FIRST).map(|(i, _)| ro_addr + i as u64).collect();
    let mut found: Option<Vec<String>> = None;
    for at in (16..data.len().saturating_sub(16)).step_by(8) {
        let Some((p, l)) = pair(&data, at) else { break };
        if l != FIRST.len() as u64 || !targets.contains(&p) || pair(&data, at - 16).map(|e| e.1) != Some(0) {
            continue;
        }
        let mut names = vec![String::new()];
        let mut i = at;
        while names.len() < MAX_REASONS {
            match pair(&data, i).and_then(|(p, l)| (l > 0).then(|| string_at(bin, p, l)).flatten()) {
                Some(s) => names.push(s),
                None => break,
            }
            i += 16;
        }
        if found.is_some() {
            return Err(format!("two candidate wait-reason tables in .data (at {:#x})", data_addr + at as u64 - 16));
        }
        found = Some(names);
    }
    found.ok_or_else(|| "runtime.waitReasonStrings not found in .data".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goruntime::binary;

    /// Stripped builds resolve to what the symbols of the plain build say: the same place
    /// (section and offset) and the same names; on a plain build the code and data paths
    /// agree with `.symtab` exactly.
    #[test]
    fn stripped_and_plain_agree() {
        for go in [::tests::Go::Debian119, ::tests::Go::Modern] {
            let plain_path = ::tests::go_fixture_variant("go_parked", go, false);
            let stripped_path = ::tests::go_fixture_variant("go_parked", go, true);
            let (pd, sd) = (
                binary::open(plain_path.to_str().unwrap()).unwrap(),
                binary::open(stripped_path.to_str().unwrap()).unwrap(),
            );
            let (plain, stripped) = (GoBinary::parse(&pd).unwrap(), GoBinary::parse(&sd).unwrap());
            let p = resolve(&plain).unwrap();
            let s = resolve(&stripped).unwrap();
            assert_eq!((p.from, s.from), ("symtab", "code"));
            // Go 1.27's `-s -w` moves data by a few bytes: compare (section, offset).
            let place = |b: &GoBinary, a: u64| {
                use object::ObjectSection;
                b.file
                    .sections()
                    .find(|s| s.address() <= a && a < s.address() + s.size())
                    .map(|s| (s.name().unwrap().to_owned(), a - s.address()))
            };
            for (sa, pa) in [(s.allgptr, p.allgptr), (s.allglen, p.allglen)] {
                assert_eq!(place(&stripped, sa), place(&plain, pa), "{}", plain.version.raw);
                assert!(place(&plain, pa).is_some());
            }
            assert_eq!(s.wait_reasons, p.wait_reasons, "{}", plain.version.raw);
            assert_eq!(allgs_from_code(&plain).unwrap(), (p.allgptr, p.allglen));
            assert_eq!(wait_reasons_from_data(&plain).unwrap(), p.wait_reasons);
            // The names the goroutine tests rely on, as this binary numbers them.
            assert_eq!(p.wait_reasons[0], "");
            assert_eq!(p.wait_reasons[1], "GC assist marking");
            for r in ["chan receive", "select", "sleep"] {
                assert!(p.wait_reasons.iter().any(|w| w == r), "{}: {r} in {:?}", plain.version.raw, p.wait_reasons);
            }
        }
    }
}
