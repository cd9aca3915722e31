//! The vDSO's function names. The kernel maps the same small ELF image into every process; it
//! has no file, so the collector reads it from a live process and keeps only this table
//! (file offset → name), which a saved capture carries.
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::capture::VdsoSymbol;

/// The text symbols of a vDSO image, by file offset. The image exports each function twice
/// (`__vdso_clock_gettime` and its alias `clock_gettime`): the `__vdso_` name is kept, as the
/// one callers look up.
pub fn symbols(image: &[u8]) -> Vec<VdsoSymbol> {
    let Ok(file) = object::File::parse(image) else { return Vec::new() };
    let segments: Vec<(u64, u64, u64)> = file
        .segments()
        .map(|s| {
            let (off, size) = s.file_range();
            (s.address(), size, off)
        })
        .collect();
    let mut out: Vec<VdsoSymbol> = file
        .dynamic_symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
        .filter_map(|s| {
            let a = s.address();
            let &(va, _, off) = segments.iter().find(|(va, size, _)| *va <= a && a < va + size)?;
            Some(VdsoSymbol { offset: a - va + off, size: s.size(), name: s.name().ok()?.to_owned() })
        })
        .collect();
    out.sort_by(|a, b| {
        a.offset.cmp(&b.offset).then_with(|| b.name.starts_with("__vdso_").cmp(&a.name.starts_with("__vdso_")))
    });
    out.dedup_by_key(|s| s.offset);
    out
}

/// The function containing file offset `off` of the image.
pub fn lookup(table: &[VdsoSymbol], off: u64) -> Option<&str> {
    let i = table.partition_point(|s| s.offset <= off);
    let s = table.get(i.checked_sub(1)?)?;
    (off < s.offset + s.size).then_some(s.name.as_str())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    /// This test process's own vDSO, read the way the collector reads a target's.
    #[test]
    fn names_own_vdso() {
        let maps = crate::procfs::maps(std::process::id()).unwrap();
        let Some(m) = maps.iter().find(|m| m.path == "[vdso]") else {
            return; // booted with vdso=0: nothing to read
        };
        let mem = std::fs::File::open("/proc/self/mem").unwrap();
        let mut image = vec![0u8; (m.end - m.start) as usize];
        mem.read_exact_at(&mut image, m.start).unwrap();
        let t = symbols(&image);
        let cg = t.iter().find(|s| s.name == "__vdso_clock_gettime").expect("__vdso_clock_gettime");
        assert!(!t.iter().any(|s| s.name == "clock_gettime"), "alias kept: {t:?}");
        assert_eq!(lookup(&t, cg.offset), Some("__vdso_clock_gettime"));
        assert_eq!(lookup(&t, cg.offset + cg.size - 1), Some("__vdso_clock_gettime"));
        // The ELF header is not code.
        assert_eq!(lookup(&t, 0), None);
    }

    #[test]
    fn lookup_bounds() {
        let t = vec![
            VdsoSymbol { offset: 0x100, size: 0x10, name: "a".into() },
            VdsoSymbol { offset: 0x200, size: 0x20, name: "b".into() },
        ];
        assert_eq!(lookup(&t, 0xff), None);
        assert_eq!(lookup(&t, 0x10f), Some("a"));
        assert_eq!(lookup(&t, 0x110), None);
        assert_eq!(lookup(&t, 0x21f), Some("b"));
    }
}
