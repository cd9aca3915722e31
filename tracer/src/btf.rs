//! What rtrace needs from the kernel's BTF (/sys/kernel/btf/vmlinux), read with a plain walk of
//! its type section: the offsets of the few task_struct fields the eBPF side reads (they move
//! between kernel builds), and the type ids of the BTF tracepoints it attaches to.
use anyhow::{anyhow, bail, Context, Result};

const MAGIC: u16 = 0xeb9f;
const KIND_PTR: u32 = 2;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC: u32 = 12;

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

/// The type and string sections.
fn sections(btf: &[u8]) -> Result<(&[u8], &[u8])> {
    if btf.len() < 24 || u16::from_le_bytes([btf[0], btf[1]]) != MAGIC {
        bail!("not little-endian BTF");
    }
    let hdr_len = u32_at(btf, 4)? as usize;
    let (type_off, type_len) = (u32_at(btf, 8)? as usize, u32_at(btf, 12)? as usize);
    let str_off = u32_at(btf, 16)? as usize;
    let types = btf.get(hdr_len + type_off..hdr_len + type_off + type_len).context("BTF type section")?;
    let strings = btf.get(hdr_len + str_off..).context("BTF string section")?;
    Ok((types, strings))
}

/// One type as `walk` shows it.
struct Type<'a> {
    id: u32,
    kind: u32,
    name: &'a [u8],
    /// The kind-specific records after the 12-byte header (struct members, …).
    extra: &'a [u8],
    kind_flag: u32,
}

/// Calls `f(type, strings)` for every type until it returns Some.
fn walk<T>(btf: &[u8], mut f: impl FnMut(&Type, &[u8]) -> Result<Option<T>>) -> Result<Option<T>> {
    let (types, strings) = sections(btf)?;
    let (mut at, mut id) = (0, 1u32);
    while at + 12 <= types.len() {
        let (name_off, info) = (u32_at(types, at)?, u32_at(types, at + 4)?);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let end = at + 12 + extra_len(kind, vlen)?;
        let extra = types.get(at + 12..end).context("BTF truncated")?;
        let t = Type { id, kind, name: name(strings, name_off), extra, kind_flag: info >> 31 };
        if let Some(v) = f(&t, strings)? {
            return Ok(Some(v));
        }
        at = end;
        id += 1;
    }
    Ok(None)
}

/// Byte offset of `member` in `struct name`, looking into anonymous struct and union members
/// too (mm_struct keeps its fields in one).
pub fn member_offset(btf: &[u8], strukt: &str, member: &str) -> Result<u32> {
    let found = walk(btf, |t, _| Ok((t.kind == KIND_STRUCT && t.name == strukt.as_bytes()).then_some(t.id)))?
        .ok_or_else(|| anyhow!("struct {strukt} not found in this kernel's BTF"))?;
    find_member(btf, found, member, 0)?
        .ok_or_else(|| anyhow!("struct {strukt} has no member {member} in this kernel's BTF"))
}

/// Offset of `member` in the struct or union with type id `id`, searching anonymous members
/// (`depth` bounds that search on malformed data).
fn find_member(btf: &[u8], id: u32, member: &str, depth: u32) -> Result<Option<u32>> {
    if depth > 4 {
        return Ok(None);
    }
    // (member offset in bytes, type id) of the anonymous members, searched after the named ones.
    let (direct, anonymous) = walk(btf, |t, strings| {
        if t.id != id {
            return Ok(None);
        }
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
            return Ok(Some((None, Vec::new())));
        }
        let mut anonymous = Vec::new();
        for m in t.extra.chunks_exact(12) {
            let bits = u32_at(m, 8)?;
            // With kind_flag the low 24 bits are the bit offset (the high 8 a bitfield size).
            let bytes = if t.kind_flag == 1 { bits & 0xff_ffff } else { bits } / 8;
            let name_off = u32_at(m, 0)?;
            if name_off == 0 {
                anonymous.push((bytes, u32_at(m, 4)?));
            } else if name(strings, name_off) == member.as_bytes() {
                return Ok(Some((Some(bytes), Vec::new())));
            }
        }
        Ok(Some((None, anonymous)))
    })?
    .unwrap_or((None, Vec::new()));
    if direct.is_some() {
        return Ok(direct);
    }
    for (at, ty) in anonymous {
        if let Some(off) = find_member(btf, ty, member, depth + 1)? {
            return Ok(Some(at + off));
        }
    }
    Ok(None)
}

/// Type id of the type of `kind` named `name`.
fn type_id(btf: &[u8], kind: u32, name: &str) -> Result<u32> {
    walk(btf, |t, _| Ok((t.kind == kind && t.name == name.as_bytes()).then_some(t.id)))?
        .ok_or_else(|| anyhow!("{name} not found in this kernel's BTF"))
}

/// A stand-in for the kernel's BTF that is enough to load BTF tracepoints on `hooks` and
/// iterators of `iters` with aya.
///
/// aya's `BtfTracePoint::load` only looks up the id of the `btf_trace_<hook>` typedef (and
/// `Iter::load` that of the `bpf_iter_<kind>` function), but takes a whole parsed `Btf`:
/// parsing /sys/kernel/btf/vmlinux costs ~170 ms and ~15 MiB here (and aya's loader already
/// parses its own private copy). BTF type ids are positions in the type section, so a small
/// BTF with those types at the kernel's ids — placeholders before them — gives aya the same
/// ids.
pub fn stand_in_btf(btf: &[u8], hooks: &[&str], iters: &[&str]) -> Result<aya::Btf> {
    let mut ids: Vec<(u32, u32, String)> = Vec::new();
    for h in hooks {
        let name = format!("btf_trace_{h}");
        ids.push((type_id(btf, KIND_TYPEDEF, &name)?, KIND_TYPEDEF, name));
    }
    // Iterators are optional (a kernel without one loses only what it gives): skipped if absent.
    for i in iters {
        let name = format!("bpf_iter_{i}");
        if let Ok(id) = type_id(btf, KIND_FUNC, &name) {
            ids.push((id, KIND_FUNC, name));
        }
    }
    ids.sort();
    let mut strings = vec![0u8];
    let mut types = Vec::new();
    let mut push = |w: [u32; 3]| w.iter().for_each(|v| types.extend_from_slice(&v.to_le_bytes()));
    let mut next = 1;
    for (id, kind, n) in &ids {
        for _ in next..*id {
            push([0, KIND_PTR << 24, 0]); // placeholder: an anonymous pointer to void
        }
        push([strings.len() as u32, kind << 24, 0]);
        strings.extend_from_slice(n.as_bytes());
        strings.push(0);
        next = id + 1;
    }
    aya::Btf::parse(&assemble(&types, &strings), aya::Endianness::default())
        .context("building BTF for the BTF tracepoints and iterators")
}

/// A BTF blob: header, type section, string section.
fn assemble(types: &[u8], strings: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + types.len() + strings.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&[1, 0]);
    for v in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(types);
    out.extend_from_slice(strings);
    out
}

/// The kernel's BTF, raw: read once at start-up for every use above (preflight has checked
/// that it exists).
pub fn read_kernel() -> Result<Vec<u8>> {
    std::fs::read("/sys/kernel/btf/vmlinux").context("reading the kernel's BTF (/sys/kernel/btf/vmlinux)")
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
        let btf = assemble(&types, strings);
        assert_eq!(member_offset(&btf, "s", "b").unwrap(), 4);
        assert_eq!(member_offset(&btf, "s", "a").unwrap(), 0);
        assert!(member_offset(&btf, "s", "c").is_err());
        assert!(member_offset(&btf, "t", "a").is_err());
    }

    /// struct m { int x; struct { int a; int b; }; } (the anonymous struct at byte 4): b at 8.
    #[test]
    fn finds_a_member_of_an_anonymous_struct() {
        let strings = b"\0int\0m\0x\0a\0b\0";
        let mut types = Vec::new();
        let mut push = |w: &[u32]| w.iter().for_each(|v| types.extend_from_slice(&v.to_le_bytes()));
        push(&[1, (1 << 24), 4, 32]); // [1] INT "int"
        push(&[5, (4 << 24) | 2, 12]); // [2] STRUCT "m", 2 members
        push(&[7, 1, 0]); // x: int at bit 0
        push(&[0, 3, 32]); // anonymous: [3] at bit 32
        push(&[0, (4 << 24) | 2, 8]); // [3] anonymous STRUCT, 2 members
        push(&[9, 1, 0]); // a
        push(&[11, 1, 32]); // b
        let btf = assemble(&types, strings);
        assert_eq!(member_offset(&btf, "m", "x").unwrap(), 0);
        assert_eq!(member_offset(&btf, "m", "a").unwrap(), 4);
        assert_eq!(member_offset(&btf, "m", "b").unwrap(), 8);
        assert!(member_offset(&btf, "m", "c").is_err());
    }

    /// The stand-in BTF gives aya the kernel's ids for the tracepoint typedefs.
    #[test]
    fn stand_in_btf_keeps_the_kernel_ids() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            return;
        }
        let full = aya::Btf::from_sys_fs().unwrap();
        let small = stand_in_btf(&read_kernel().unwrap(), &["sched_switch", "sched_waking"], &["task"]).unwrap();
        for name in ["btf_trace_sched_switch", "btf_trace_sched_waking"] {
            let kind = aya_obj::btf::BtfKind::Typedef;
            assert_eq!(small.id_by_type_name_kind(name, kind).unwrap(), full.id_by_type_name_kind(name, kind).unwrap());
        }
        let kind = aya_obj::btf::BtfKind::Func;
        assert_eq!(
            small.id_by_type_name_kind("bpf_iter_task", kind).unwrap(),
            full.id_by_type_name_kind("bpf_iter_task", kind).unwrap()
        );
    }

    #[test]
    fn this_kernel_has_the_members_rtrace_reads() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            return;
        }
        let btf = read_kernel().unwrap();
        let off = member_offset(&btf, "task_struct", "exit_code").unwrap();
        assert!(off > 0 && off < 16384, "{off}");
        // argv of exec'd children: mm_struct keeps arg_start/arg_end in an anonymous struct.
        let (start, end) = (
            member_offset(&btf, "mm_struct", "arg_start").unwrap(),
            member_offset(&btf, "mm_struct", "arg_end").unwrap(),
        );
        assert_eq!(end, start + 8);
    }
}
