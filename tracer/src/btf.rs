//! Member offsets of kernel structs from the kernel's BTF (/sys/kernel/btf/vmlinux), for the
//! few task_struct fields the eBPF side reads (they move between kernel builds). Only what that
//! needs: walk the type section, find a named struct, return a named member's byte offset.
use anyhow::{anyhow, bail, Context, Result};

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

fn u32_at(d: &[u8], at: usize) -> Result<u32> {
    d.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).ok_or_else(|| anyhow!("BTF truncated at {at}"))
}

fn name(strings: &[u8], off: u32) -> &[u8] {
    let s = strings.get(off as usize..).unwrap_or(&[]);
    &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]
}

/// Bytes of kind-specific data after a type's 12-byte header.
fn extra_len(kind: u32, vlen: usize) -> Result<usize> {
    Ok(match kind {
        1 => 4,                                      // INT
        2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0, // PTR FWD TYPEDEF VOLATILE CONST RESTRICT FUNC FLOAT TYPE_TAG
        3 => 12,                                     // ARRAY
        4 | 5 => 12 * vlen,                          // STRUCT UNION
        6 => 8 * vlen,                               // ENUM
        13 => 8 * vlen,                              // FUNC_PROTO
        14 => 4,                                     // VAR
        15 => 12 * vlen,                             // DATASEC
        17 => 4,                                     // DECL_TAG
        19 => 12 * vlen,                             // ENUM64
        k => bail!("unknown BTF kind {k}"),
    })
}

/// Byte offset of `member` in `struct name` (direct members only).
pub fn member_offset(btf: &[u8], strukt: &str, member: &str) -> Result<u32> {
    if btf.len() < 24 || u16::from_le_bytes([btf[0], btf[1]]) != MAGIC {
        bail!("not little-endian BTF");
    }
    let hdr_len = u32_at(btf, 4)? as usize;
    let (type_off, type_len) = (u32_at(btf, 8)? as usize, u32_at(btf, 12)? as usize);
    let str_off = u32_at(btf, 16)? as usize;
    let types = btf.get(hdr_len + type_off..hdr_len + type_off + type_len).context("BTF type section")?;
    let strings = btf.get(hdr_len + str_off..).context("BTF string section")?;
    let mut at = 0;
    while at + 12 <= types.len() {
        let (name_off, info) = (u32_at(types, at)?, u32_at(types, at + 4)?);
        let (kind, vlen, kflag) = ((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31);
        let body = at + 12;
        if kind == KIND_STRUCT && name(strings, name_off) == strukt.as_bytes() {
            for i in 0..vlen {
                let m = body + 12 * i;
                if name(strings, u32_at(types, m)?) == member.as_bytes() {
                    let bits = u32_at(types, m + 8)?;
                    // With kind_flag the low 24 bits are the bit offset (the high 8 a bitfield size).
                    let bits = if kflag == 1 { bits & 0xff_ffff } else { bits };
                    return Ok(bits / 8);
                }
            }
            bail!("struct {strukt} has no member {member} in this kernel's BTF");
        }
        at = body + extra_len(kind, vlen)?;
    }
    bail!("struct {strukt} not found in this kernel's BTF")
}

pub fn kernel_member_offset(strukt: &str, member: &str) -> Result<u32> {
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").context("reading /sys/kernel/btf/vmlinux")?;
    member_offset(&btf, strukt, member)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built BTF: an INT, then struct s { int a; int b; } with b at byte 4.
    #[test]
    fn finds_a_member() {
        let strings = b"\0int\0s\0a\0b\0";
        let mut types = Vec::new();
        let mut push = |w: &[u32]| w.iter().for_each(|v| types.extend_from_slice(&v.to_le_bytes()));
        push(&[1, (1 << 24), 4, 32]); // INT "int", size 4, 32 bits
        push(&[5, (4 << 24) | 2, 8]); // STRUCT "s", 2 members, size 8
        push(&[7, 1, 0]); // a: int at bit 0
        push(&[9, 1, 32]); // b: int at bit 32
        let mut btf = Vec::new();
        btf.extend_from_slice(&MAGIC.to_le_bytes());
        btf.extend_from_slice(&[1, 0]);
        for v in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            btf.extend_from_slice(&v.to_le_bytes());
        }
        btf.extend_from_slice(&types);
        btf.extend_from_slice(strings);
        assert_eq!(member_offset(&btf, "s", "b").unwrap(), 4);
        assert_eq!(member_offset(&btf, "s", "a").unwrap(), 0);
        assert!(member_offset(&btf, "s", "c").is_err());
        assert!(member_offset(&btf, "t", "a").is_err());
    }

    #[test]
    fn this_kernel_has_task_struct_exit_code() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            return;
        }
        let off = kernel_member_offset("task_struct", "exit_code").unwrap();
        assert!(off > 0 && off < 16384, "{off}");
    }
}
