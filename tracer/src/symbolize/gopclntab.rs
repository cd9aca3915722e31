//! Go function names from `.gopclntab`, for stripped Go binaries. Most distributed Go CLIs are
//! built with `-ldflags="-s -w"` (GoReleaser's default): no `.symtab`, no DWARF, so blazesym
//! (which reads only those) names nothing — but the Go runtime's own function table is always
//! there, and it is what `go tool pprof` and the Go runtime use to name frames.
//!
//! Layout (Go 1.18+, magic 0xfffffff0; 1.20+, 0xfffffff1): a header of word-sized fields
//! (nfunc, nfiles, textStart, funcnameOffset, cuOffset, filetabOffset, pctabOffset,
//! pclnOffset), then at pclnOffset `nfunc + 1` pairs (entry offset from textStart, offset of
//! the function's `_func`), and each `_func` starts with (entryOff u32, nameOff i32) into the
//! function name table.
use object::{Object, ObjectSection};

use crate::{
    capture::Capture,
    goruntime::{
        binary::{self, GoBinary},
        lines::{GoFrame, Lines},
    },
};

pub struct GoTable {
    text_start: u64,
    /// (entry offset from text_start, name), sorted; the last is the end of the text.
    funcs: Vec<(u32, String)>,
    /// (file offset, size, virtual address) of the file's sections, to turn file offsets into
    /// addresses.
    sections: Vec<(u64, u64, u64)>,
}

fn word(d: &[u8], at: usize, size: usize) -> Option<u64> {
    let b = d.get(at..at + size)?;
    Some(if size == 8 { u64::from_le_bytes(b.try_into().ok()?) } else { u32::from_le_bytes(b.try_into().ok()?) as u64 })
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

fn cstr_at(d: &[u8], at: usize) -> Option<String> {
    let rest = d.get(at..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Parses a `.gopclntab` section (little-endian, Go 1.18 and later).
pub fn parse(d: &[u8]) -> Option<(u64, Vec<(u32, String)>)> {
    let magic = u32_at(d, 0)?;
    if magic != 0xffff_fff0 && magic != 0xffff_fff1 {
        return None;
    }
    let ptr = *d.get(7)? as usize;
    if ptr != 4 && ptr != 8 {
        return None;
    }
    let field = |i: usize| word(d, 8 + i * ptr, ptr);
    let nfunc = field(0)? as usize;
    let text_start = field(2)?;
    let funcname = field(3)? as usize;
    let pcln = field(7)? as usize;
    let functab = d.get(pcln..)?;
    let mut funcs = Vec::with_capacity(nfunc + 1);
    for i in 0..nfunc {
        let entry = u32_at(functab, i * 8)?;
        let func = u32_at(functab, i * 8 + 4)? as usize;
        let name_off = u32_at(functab, func + 4)? as usize;
        funcs.push((entry, cstr_at(d, funcname + name_off)?));
    }
    funcs.push((u32_at(functab, nfunc * 8)?, String::new()));
    Some((text_start, funcs))
}

/// The function table's section: `.gopclntab`, or in a Go ≤ 1.19 PIE (internal linking)
/// `.data.rel.ro.gopclntab`.
pub fn section<'d, 'f, R: object::ReadRef<'d>>(file: &'f object::File<'d, R>) -> Option<object::Section<'d, 'f, R>> {
    file.section_by_name(".gopclntab").or_else(|| file.section_by_name(".data.rel.ro.gopclntab"))
}

/// The address entry offsets are relative to: the header's textStart, which Go 1.26+
/// writes as 0 (measured on 1.27.3: the runtime takes it from moduledata), then the start
/// of `.text` (`runtime.text`).
pub fn text_start<'d, R: object::ReadRef<'d>>(header: u64, file: &object::File<'d, R>) -> u64 {
    if header != 0 {
        return header;
    }
    file.section_by_name(".text").map_or(0, |s| s.address())
}

impl GoTable {
    /// The table of a Go binary, or None (not Go, or an older layout).
    pub fn load(path: &str) -> Option<Self> {
        // Read through a cache of the ranges parsed: the headers, then only the table — not
        // the whole file (a Rust or C++ library without symbols can be hundreds of MB).
        let f = std::fs::File::open(path).ok()?;
        let data = object::read::ReadCache::new(f);
        let file = object::File::parse(&data).ok()?;
        let pcln = section(&file)?;
        let (text_start, funcs) = parse(pcln.data().ok()?)?;
        let text_start = self::text_start(text_start, &file);
        let sections = file
            .sections()
            .filter_map(|s| {
                let (off, size) = s.file_range()?;
                Some((off, size, s.address()))
            })
            .collect();
        Some(Self { text_start, funcs, sections })
    }

    /// The function containing the code at `file_offset`.
    pub fn lookup_file_offset(&self, file_offset: u64) -> Option<&str> {
        let &(off, _, addr) = self.sections.iter().find(|(o, s, _)| *o <= file_offset && file_offset < o + s)?;
        self.lookup_addr(addr + (file_offset - off))
    }

    pub fn lookup_addr(&self, pc: u64) -> Option<&str> {
        let rel = u32::try_from(pc.checked_sub(self.text_start)?).ok()?;
        let i = self.funcs.partition_point(|(e, _)| *e <= rel);
        // i == 0: before the first function; i == len: past the end sentinel.
        if i == 0 || i >= self.funcs.len() {
            return None;
        }
        Some(self.funcs[i - 1].1.as_str())
    }
}

/// Go tracebacks with file:line for the goroutine stacks of one process: the line tables of
/// its Go executable (found through the mappings the capture kept, so a process that has
/// exited still resolves) and how its addresses map to the file's link-time addresses.
pub struct GoLines {
    lines: Lines,
    /// The executable's path as mapped, to tell its addresses from a library's.
    path: String,
    /// (file offset, size, link-time address) of its sections.
    sections: Vec<(u64, u64, u64)>,
}

type CacheKey = (String, u64, u64, i64, u64);
thread_local! {
    /// GoLines::cached's tables, this thread's.
    static CACHE: std::cell::RefCell<Vec<(CacheKey, std::rc::Rc<GoLines>)>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl GoLines {
    /// The tables of the Go executable `pcs` (the process's goroutine pcs) are in: the first
    /// file they map to that is one (a pc can be in the vDSO or a C library). None: no pc
    /// maps to a readable Go executable.
    pub fn for_process(capture: &Capture, pid: u32, pcs: impl Iterator<Item = u64>) -> Option<std::rc::Rc<GoLines>> {
        let mut tried: Vec<&str> = Vec::new();
        for pc in pcs {
            let Some(loc) = super::locate(capture, pid, pc) else { continue };
            if tried.contains(&loc.read) {
                continue;
            }
            if let Some(l) = Self::cached(loc.read) {
                return Some(l);
            }
            tried.push(loc.read);
            if tried.len() >= 4 {
                return None;
            }
        }
        None
    }

    /// Drops the remembered tables (`cached`): once a report's Go processes are read, a build's
    /// `compile` line tables (12 MB) are not kept through the rest of the report.
    pub fn forget_cached() {
        CACHE.with(|c| c.borrow_mut().clear());
    }

    /// `load`, remembered for the last few executables (by path and file identity): a go
    /// build's report has ~60 processes of a handful of binaries, each `compile` pclntab
    /// several MB to read and index. Bounded, so a long-running `rtrace serve` keeps little.
    fn cached(path: &str) -> Option<std::rc::Rc<GoLines>> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        let key: CacheKey = (path.to_owned(), m.dev(), m.ino(), m.mtime(), m.size());
        if let Some(hit) = CACHE.with(|c| c.borrow().iter().find(|(k, _)| *k == key).map(|(_, l)| l.clone())) {
            return Some(hit);
        }
        let lines = std::rc::Rc::new(Self::load(path)?);
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= 4 {
                c.remove(0);
            }
            c.push((key, lines.clone()));
        });
        Some(lines)
    }

    fn load(path: &str) -> Option<GoLines> {
        let data = binary::open(path).ok()?;
        let bin = GoBinary::parse(&data).ok()?;
        let lines = Lines::load(&bin).ok()?;
        let sections = bin
            .file
            .sections()
            .filter_map(|s| {
                let (off, size) = s.file_range()?;
                Some((off, size, s.address()))
            })
            .collect();
        Some(GoLines { lines, path: path.to_owned(), sections })
    }

    /// The link-time address of the process's address `pc`, when it is in this executable.
    fn vaddr(&self, capture: &Capture, pid: u32, pc: u64) -> Option<u64> {
        let loc = super::locate(capture, pid, pc).filter(|l| l.read == self.path)?;
        let &(off, _, addr) = self.sections.iter().find(|(o, s, _)| *o <= loc.off && loc.off < o + s)?;
        Some(addr + (loc.off - off))
    }

    /// The frames of a goroutine stack (`pcs` innermost first, each a resume pc or a return
    /// address), as Go's traceback lists them but root first, inlined calls expanded, the
    /// runtime.goexit every goroutine returns to left out. A pc outside the executable is a
    /// frame named `[unknown] (0x…)` with file "?".
    pub fn traceback(&self, capture: &Capture, pid: u32, pcs: &[u64]) -> Vec<GoFrame> {
        let mut out = Vec::new();
        for &pc in pcs {
            let frames = self.vaddr(capture, pid, pc).map(|a| self.lines.frames(a, true)).unwrap_or_default();
            if frames.is_empty() {
                out.push(GoFrame {
                    function: format!("[unknown] ({pc:#x})"),
                    file: "?".into(),
                    pc,
                    ..Default::default()
                });
            }
            out.extend(frames.into_iter().map(|f| GoFrame { pc, ..f }));
        }
        while out.last().is_some_and(|f| f.function == "runtime.goexit") {
            out.pop();
        }
        out.reverse();
        out
    }

    /// Go's "created by" frame of a goroutine created at `gopc`.
    pub fn created_by(&self, capture: &Capture, pid: u32, gopc: u64) -> Option<GoFrame> {
        self.lines.created_by(self.vaddr(capture, pid, gopc)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built 64-bit table: two functions and the end sentinel.
    #[test]
    fn parses_and_looks_up() {
        let mut d = vec![0u8; 8 + 8 * 8];
        d[..4].copy_from_slice(&0xffff_fff1u32.to_le_bytes());
        d[7] = 8;
        let put = |d: &mut Vec<u8>, i: usize, v: u64| d[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes());
        let names = b"main.main\0main.hot\0";
        let funcname = d.len();
        d.extend_from_slice(names);
        let pcln = d.len();
        // functab: (0, f0) (0x100, f1) (0x180 end)
        let f0 = 24u32;
        let f1 = 32u32;
        for (e, f) in [(0u32, f0), (0x100, f1), (0x180, 0)] {
            d.extend_from_slice(&e.to_le_bytes());
            d.extend_from_slice(&f.to_le_bytes());
        }
        // _func records: entryOff, nameOff
        d.extend_from_slice(&0u32.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        d.extend_from_slice(&0x100u32.to_le_bytes());
        d.extend_from_slice(&10u32.to_le_bytes());
        put(&mut d, 0, 2);
        put(&mut d, 2, 0x401000);
        put(&mut d, 3, funcname as u64);
        put(&mut d, 7, pcln as u64);
        let (text, funcs) = parse(&d).unwrap();
        let t = GoTable { text_start: text, funcs, sections: vec![(0x1000, 0x1000, 0x401000)] };
        assert_eq!(t.lookup_addr(0x401000), Some("main.main"));
        assert_eq!(t.lookup_addr(0x4010ff), Some("main.main"));
        assert_eq!(t.lookup_addr(0x401100), Some("main.hot"));
        assert_eq!(t.lookup_addr(0x401180), None);
        assert_eq!(t.lookup_addr(0x400fff), None);
        assert_eq!(t.lookup_file_offset(0x1104), Some("main.hot"));
    }

    /// This machine's Go toolchain binaries are Go: their own table names their functions.
    #[test]
    fn reads_a_real_go_binary() {
        let Some(go) =
            ["/usr/lib/go-1.19/bin/go", "/usr/lib/go/bin/go"].into_iter().find(|p| std::path::Path::new(p).exists())
        else {
            return; // no Go toolchain on this machine: nothing to read
        };
        let t = GoTable::load(go).expect("go's .gopclntab");
        assert!(t.funcs.iter().any(|(_, n)| n == "main.main"));
        let (entry, _) = t.funcs.iter().find(|(_, n)| n == "runtime.main").unwrap();
        assert_eq!(t.lookup_addr(t.text_start + *entry as u64 + 1), Some("runtime.main"));
    }

    /// Go 1.26+ writes textStart 0 in the header: names must still match `.symtab`'s
    /// addresses (they did not: every stripped Go 1.27 frame was unnamed).
    #[test]
    fn names_match_the_symbols_of_a_modern_build() {
        use object::ObjectSymbol;
        let path = ::tests::go_fixture_variant("go_parked", ::tests::Go::Modern, false);
        let t = GoTable::load(path.to_str().unwrap()).unwrap();
        let data = std::fs::read(&path).unwrap();
        let file = object::File::parse(&*data).unwrap();
        for name in ["runtime.main", "main.recvWorker", "runtime.allgadd"] {
            let sym = file.symbols().find(|s| s.name() == Ok(name)).unwrap();
            assert_eq!(t.lookup_addr(sym.address() + 1), Some(name));
        }
    }
}
