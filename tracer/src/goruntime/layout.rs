//! Byte offsets of the `runtime.g` and `runtime.m` fields the goroutine reader uses: from the
//! binary's DWARF by field name when it has DWARF (types change between releases, names do
//! not), else from a per-version table measured on this machine's builds (see
//! `docs/go-runtime.md`). A unit test keeps the table equal to the DWARF of the fixtures it
//! builds, which is what catches a stale row.
use std::collections::HashMap;

use gimli::{AttributeValue, EndianSlice, RunTimeEndian};
use object::{Object, ObjectSection};

use super::binary::GoBinary;

/// Offsets within `runtime.g` (and `runtime.m` for the `m_*` fields), amd64.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub goid: usize,
    pub atomicstatus: usize,
    pub waitsince: usize,
    pub waitreason: usize,
    pub gopc: usize,
    pub startpc: usize,
    /// `g.parentGoid`, Go 1.21+.
    pub parent_goid: Option<usize>,
    /// `g.m` (the M running or in a syscall for this g, else nil).
    pub m: usize,
    pub sched_sp: usize,
    pub sched_pc: usize,
    pub sched_bp: usize,
    pub syscallsp: usize,
    pub syscallpc: usize,
    /// `g.syscallbp`, Go 1.23+ (before it a syscall goroutine's frame pointer is not saved).
    pub syscallbp: Option<usize>,
    pub stack_lo: usize,
    pub stack_hi: usize,
    /// `sizeof(runtime.g)` when known (DWARF, or a table row measured with DWARF here). The
    /// reader reads `read_len()` bytes per g, which every row knows.
    pub g_size: Option<usize>,
    pub m_procid: usize,
    pub m_curg: usize,
    /// "dwarf" or "table".
    pub from: &'static str,
}

impl Layout {
    /// Bytes of a g that cover every field read (one read per g).
    pub fn read_len(&self) -> usize {
        let last = [
            self.goid,
            self.atomicstatus,
            self.waitsince,
            self.waitreason,
            self.gopc,
            self.startpc,
            self.parent_goid.unwrap_or(0),
            self.m,
            self.sched_sp,
            self.sched_pc,
            self.sched_bp,
            self.syscallsp,
            self.syscallpc,
            self.syscallbp.unwrap_or(0),
            self.stack_lo,
            self.stack_hi,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        last + 8
    }
}

/// The offsets for this binary: DWARF when present, else the table row of its version.
pub fn resolve(bin: &GoBinary) -> Result<Layout, String> {
    if bin.has_dwarf() {
        return from_dwarf(bin);
    }
    table(bin.version.minor)
}

/// The built-in table (`docs/go-runtime.md`, each row measured from a build's DWARF).
/// Go 1.20 has no row: no 1.20 toolchain was available to measure it, and a guessed row is
/// exactly the stale-table failure this module exists to avoid, so a 1.20 binary without
/// DWARF is refused.
pub fn table(minor: u32) -> Result<Layout, String> {
    // (goid, atomicstatus, waitsince, waitreason, gopc, startpc, parentGoid, sched sp/pc/bp,
    //  syscall sp/pc/bp, g size, m.procid, m.curg)
    #[allow(clippy::type_complexity)]
    let row: (usize, usize, usize, usize, usize, usize, Option<usize>, [usize; 3], [Option<usize>; 3], Option<usize>, usize, usize) =
        match minor {
            19 => (152, 144, 168, 176, 296, 312, None, [56, 64, 104], [Some(112), Some(120), None], Some(392), 72, 192),
            20 => return Err("Go 1.20 without DWARF is not supported (its runtime layout was never measured; 1.19 and 1.21–1.27 are, and any version with DWARF)".into()),
            21 | 22 => (152, 144, 168, 176, 280, 296, Some(272), [56, 64, 104], [Some(112), Some(120), None], None, 72, 192),
            23 | 24 => (160, 152, 176, 184, 288, 304, Some(280), [56, 64, 104], [Some(112), Some(120), Some(128)], None, 72, 192),
            25 => (152, 144, 168, 176, 280, 296, Some(272), [56, 64, 96], [Some(104), Some(112), Some(120)], None, 64, 184),
            26 | 27 => (152, 144, 168, 176, 288, 304, Some(280), [56, 64, 96], [Some(104), Some(112), Some(120)], Some(456), 64, 184),
            n => return Err(format!("Go 1.{n} is not supported (1.19–1.27)")),
        };
    let (goid, atomicstatus, waitsince, waitreason, gopc, startpc, parent_goid, sched, sys, g_size, m_procid, m_curg) =
        row;
    Ok(Layout {
        goid,
        atomicstatus,
        waitsince,
        waitreason,
        gopc,
        startpc,
        parent_goid,
        m: 48,
        sched_sp: sched[0],
        sched_pc: sched[1],
        sched_bp: sched[2],
        syscallsp: sys[0].unwrap(),
        syscallpc: sys[1].unwrap(),
        syscallbp: sys[2],
        stack_lo: 0,
        stack_hi: 8,
        g_size,
        m_procid,
        m_curg,
        from: "table",
    })
}

/// A struct type from DWARF: its size and member offsets by name.
#[derive(Debug, Default)]
struct Struct {
    size: usize,
    fields: HashMap<String, usize>,
}

const WANTED: [&str; 4] = ["runtime.g", "runtime.m", "runtime.gobuf", "runtime.stack"];

fn from_dwarf(bin: &GoBinary) -> Result<Layout, String> {
    let structs = dwarf_structs(&bin.file).map_err(|e| format!("reading the DWARF of runtime.g: {e}"))?;
    let get = |ty: &str, field: &str| -> Result<usize, String> {
        structs
            .get(ty)
            .ok_or_else(|| format!("DWARF has no {ty}"))?
            .fields
            .get(field)
            .copied()
            .ok_or_else(|| format!("DWARF {ty} has no field {field}"))
    };
    let opt = |ty: &str, field: &str| structs.get(ty).and_then(|s| s.fields.get(field).copied());
    let sched = get("runtime.g", "sched")?;
    let stack = get("runtime.g", "stack")?;
    Ok(Layout {
        goid: get("runtime.g", "goid")?,
        atomicstatus: get("runtime.g", "atomicstatus")?,
        waitsince: get("runtime.g", "waitsince")?,
        waitreason: get("runtime.g", "waitreason")?,
        gopc: get("runtime.g", "gopc")?,
        startpc: get("runtime.g", "startpc")?,
        parent_goid: opt("runtime.g", "parentGoid"),
        m: get("runtime.g", "m")?,
        sched_sp: sched + get("runtime.gobuf", "sp")?,
        sched_pc: sched + get("runtime.gobuf", "pc")?,
        sched_bp: sched + get("runtime.gobuf", "bp")?,
        syscallsp: get("runtime.g", "syscallsp")?,
        syscallpc: get("runtime.g", "syscallpc")?,
        syscallbp: opt("runtime.g", "syscallbp"),
        stack_lo: stack + get("runtime.stack", "lo")?,
        stack_hi: stack + get("runtime.stack", "hi")?,
        g_size: Some(structs["runtime.g"].size),
        m_procid: get("runtime.m", "procid")?,
        m_curg: get("runtime.m", "curg")?,
        from: "dwarf",
    })
}

/// A section's bytes, inflated when zlib-compressed (the Go linker compresses DWARF with
/// zlib; `object`'s own decompression would add a zstd crate for a format Go does not use).
fn section_bytes<'d, R: object::ReadRef<'d>>(
    s: &object::Section<'d, '_, R>,
) -> Result<std::borrow::Cow<'d, [u8]>, String> {
    use std::io::Read;
    let c = s.compressed_data().map_err(|e| e.to_string())?;
    match c.format {
        object::CompressionFormat::None => Ok(std::borrow::Cow::Borrowed(c.data)),
        object::CompressionFormat::Zlib => {
            let mut out = Vec::with_capacity(c.uncompressed_size as usize);
            flate2::read::ZlibDecoder::new(c.data).read_to_end(&mut out).map_err(|e| e.to_string())?;
            Ok(std::borrow::Cow::Owned(out))
        }
        f => Err(format!("unsupported compression {f:?}")),
    }
}

/// The four runtime structs, from whichever compilation unit defines them (the Go linker
/// puts each type once). Sections may be zlib-compressed (`SHF_COMPRESSED`, Go's default):
/// `uncompressed_data` handles both.
fn dwarf_structs<'d, R: object::ReadRef<'d>>(file: &object::File<'d, R>) -> Result<HashMap<String, Struct>, String> {
    let load = |id: gimli::SectionId| -> Result<std::borrow::Cow<'d, [u8]>, String> {
        match file.section_by_name(id.name()) {
            Some(s) => section_bytes(&s).map_err(|e| format!("{}: {e}", id.name())),
            None => Ok(std::borrow::Cow::Borrowed(&[][..])),
        }
    };
    let owned = gimli::DwarfSections::load(load)?;
    let endian = if file.is_little_endian() { RunTimeEndian::Little } else { RunTimeEndian::Big };
    let dwarf = owned.borrow(|s| EndianSlice::new(s, endian));
    let mut out: HashMap<String, Struct> = HashMap::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next().map_err(|e| e.to_string())? {
        let unit = dwarf.unit(header).map_err(|e| e.to_string())?;
        let mut cursor = unit.entries();
        // The struct being read (its name) and the depth of its members.
        let mut current: Option<(String, isize)> = None;
        while let Some(entry) = cursor.next_dfs().map_err(|e| e.to_string())? {
            let depth = entry.depth();
            if current.as_ref().is_some_and(|(_, member_depth)| depth < *member_depth) {
                current = None;
            }
            let name = || -> Option<String> {
                let v = entry.attr_value(gimli::DW_AT_name)?;
                Some(dwarf.attr_string(&unit, v).ok()?.to_string_lossy().into_owned())
            };
            if entry.tag() == gimli::DW_TAG_structure_type {
                current = None;
                let Some(n) = name() else { continue };
                if WANTED.contains(&n.as_str()) && !out.contains_key(&n) {
                    let size = entry.attr_value(gimli::DW_AT_byte_size).and_then(|v| v.udata_value()).unwrap_or(0);
                    out.insert(n.clone(), Struct { size: size as usize, fields: HashMap::new() });
                    current = Some((n, depth + 1));
                }
            } else if entry.tag() == gimli::DW_TAG_member {
                let Some((ty, d)) = &current else { continue };
                if depth != *d {
                    continue;
                }
                let Some(n) = name() else { continue };
                let off = match entry.attr_value(gimli::DW_AT_data_member_location) {
                    Some(AttributeValue::Udata(v)) => Some(v),
                    Some(v) => v.udata_value(),
                    None => None,
                };
                if let Some(off) = off {
                    out.get_mut(ty).unwrap().fields.insert(n, off as usize);
                }
            }
        }
        if WANTED.iter().all(|w| out.get(*w).is_some_and(|s| !s.fields.is_empty())) {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goruntime::binary;

    /// The table must equal the DWARF of what each toolchain here builds, field by field:
    /// a stale row (a field moved in a new release) fails here, not silently in the field.
    #[test]
    fn table_equals_the_dwarf_of_the_fixtures() {
        for (go, stripped) in ::tests::GO_VARIANTS {
            let path = ::tests::go_fixture_variant("go_parked", go, stripped);
            let data = binary::open(path.to_str().unwrap()).unwrap();
            let bin = GoBinary::parse(&data).unwrap();
            let resolved = resolve(&bin).unwrap();
            let row = table(bin.version.minor).unwrap();
            if stripped {
                assert!(!bin.has_dwarf(), "{}", path.display());
                assert_eq!(resolved, row, "{}", path.display());
                continue;
            }
            assert_eq!(resolved.from, "dwarf");
            eprintln!("{} {:?}", bin.version.raw, resolved);
            assert_eq!(Layout { from: "table", ..resolved }, row, "{}: table row vs DWARF", bin.version.raw);
        }
    }

    #[test]
    fn unknown_versions_are_refused() {
        assert_eq!(table(18).unwrap_err(), "Go 1.18 is not supported (1.19–1.27)");
        assert_eq!(table(28).unwrap_err(), "Go 1.28 is not supported (1.19–1.27)");
        assert!(table(20).unwrap_err().contains("1.20 without DWARF"));
        for minor in (19..=27).filter(|m| *m != 20) {
            let l = table(minor).unwrap();
            assert!(l.read_len() <= l.g_size.unwrap_or(usize::MAX), "1.{minor}");
        }
    }
}
