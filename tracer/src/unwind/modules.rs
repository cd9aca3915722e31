//! Module tables: a process's executable mappings (/proc/PID/maps) as framehop modules, each
//! binary's unwind sections (`.eh_frame`, `.eh_frame_hdr`, `.text`, `.got`) as ranges of one
//! shared mmap, and the cache that parses each binary once for every process mapping it.
use std::{
    collections::HashMap,
    fs::File,
    io,
    ops::{Deref, Range},
    os::unix::fs::MetadataExt,
    sync::Arc,
};

use framehop::{x86_64::UnwinderX86_64, ExplicitModuleSectionInfo, Module, Unwinder as _};
use object::{Object, ObjectSection, ObjectSegment};

/// Where a process's maps, memory and mapped files come from: the live /proc, or a snapshot
/// in tests (so the unwinder is tested root-free on a stack a fixture took of itself).
pub trait ProcSource: Send {
    /// The text of /proc/PID/maps.
    fn maps(&self, pid: u32) -> io::Result<String>;
    /// `len` bytes of the process's memory at `addr` (read-only; used for the vDSO image).
    fn read_mem(&self, pid: u32, addr: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Opens the file behind mapping `m`.
    fn open(&self, pid: u32, m: &MapLine) -> io::Result<File>;
}

/// The running system's /proc.
pub struct LiveProc;

impl ProcSource for LiveProc {
    fn maps(&self, pid: u32) -> io::Result<String> {
        std::fs::read_to_string(format!("/proc/{pid}/maps"))
    }

    fn read_mem(&self, pid: u32, addr: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mem = File::open(format!("/proc/{pid}/mem"))?;
        let mut buf = vec![0u8; len];
        mem.read_exact_at(&mut buf, addr)?;
        Ok(buf)
    }

    fn open(&self, pid: u32, m: &MapLine) -> io::Result<File> {
        // The path reads the mapped file unless it was deleted or replaced since (a rebuilt
        // binary under the same name): then the mapping's own inode, through map_files.
        if !m.path.ends_with(" (deleted)") {
            if let Ok(f) = File::open(&m.path) {
                if f.metadata().is_ok_and(|md| md.ino() == m.inode) {
                    return Ok(f);
                }
            }
        }
        File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))
    }
}

pub use crate::procfs::{exec_map_lines as parse_maps, MapLine};

/// Bytes a binary's sections are read from: its file mapped read-only, or an image read from
/// a process (the vDSO).
pub enum Backing {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// A section's bytes: a range of a shared backing (framehop's `D`), so a module costs no copy.
#[derive(Clone)]
pub struct Bytes {
    backing: Arc<Backing>,
    range: Range<usize>,
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.backing[self.range.clone()]
    }
}

/// A section: where the binary says it is (SVMA) and where its bytes are in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Section {
    svma: Range<u64>,
    file: Option<Range<usize>>,
}

/// A PT_LOAD segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub exec: bool,
}

/// What the unwinder needs of one binary, parsed once.
pub struct Binary {
    backing: Arc<Backing>,
    /// e_entry (0: none).
    entry: u64,
    /// An executable (ET_EXEC, or a PIE with `.interp`), not a library.
    program: bool,
    loads: Vec<Load>,
    text: Option<Section>,
    eh_frame: Option<Section>,
    eh_frame_hdr: Option<Section>,
    got: Option<Section>,
    debug_frame: Option<Section>,
}

impl Binary {
    pub fn parse(backing: Arc<Backing>) -> Result<Binary, object::Error> {
        let file = object::File::parse(&backing[..])?;
        let loads = file
            .segments()
            .map(|s| {
                let (offset, filesz) = s.file_range();
                let exec =
                    matches!(s.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0);
                Load { offset, vaddr: s.address(), filesz, exec }
            })
            .collect();
        let section = |name: &str| {
            let s = file.section_by_name(name)?;
            let file_range = s.file_range().and_then(|(o, n)| {
                let (o, n) = (usize::try_from(o).ok()?, usize::try_from(n).ok()?);
                (o.checked_add(n)? <= backing.len()).then_some(o..o + n)
            });
            Some(Section { svma: s.address()..s.address() + s.size(), file: file_range })
        };
        let (text, eh_frame, eh_frame_hdr, got, debug_frame) = (
            section(".text"),
            section(".eh_frame"),
            section(".eh_frame_hdr"),
            section(".got"),
            section(".debug_frame"),
        );
        let entry = file.entry();
        let program = file.kind() == object::ObjectKind::Executable || file.section_by_name(".interp").is_some();
        drop(file);
        Ok(Binary { backing, entry, program, loads, text, eh_frame, eh_frame_hdr, got, debug_frame })
    }

    /// Whether the binary carries CFI at all (Go does not: its modules fall back to frame
    /// pointers inside framehop).
    pub fn has_cfi(&self) -> bool {
        self.eh_frame.as_ref().is_some_and(|s| s.file.is_some())
            || self.debug_frame.as_ref().is_some_and(|s| s.file.is_some())
    }

    fn bytes(&self, s: &Option<Section>) -> Option<Bytes> {
        let range = s.as_ref()?.file.clone()?;
        Some(Bytes { backing: self.backing.clone(), range })
    }

    fn section_info(&self) -> ExplicitModuleSectionInfo<Bytes> {
        let svma = |s: &Option<Section>| s.as_ref().map(|s| s.svma.clone());
        ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: svma(&self.text),
            text: self.bytes(&self.text),
            got_svma: svma(&self.got),
            eh_frame_svma: svma(&self.eh_frame),
            eh_frame: self.bytes(&self.eh_frame),
            eh_frame_hdr_svma: svma(&self.eh_frame_hdr),
            eh_frame_hdr: self.bytes(&self.eh_frame_hdr),
            debug_frame: self.bytes(&self.debug_frame),
            stubs_svma: None,
            stub_helper_svma: None,
            unwind_info: None,
            text_segment_svma: None,
            text_segment: None,
        }
    }
}

/// The load bias of a mapping (actual address − the address the binary states): from the
/// PT_LOAD holding the mapping's file offset. Not `start - offset`: LLD (rustc's linker) lays
/// text out with `p_offset != p_vaddr`, and non-PIE executables have a bias of 0.
///
/// The segment whose page-aligned `p_offset` is the mapping's offset comes first (with LLD the
/// page holding the start of text also holds the end of the read-only segment before it),
/// executable ones before others; else the segment containing the offset (a mapping split
/// by mprotect).
pub fn bias(loads: &[Load], start: u64, offset: u64) -> Option<u64> {
    let exact = |exec: bool| loads.iter().find(|l| l.offset & !0xfff == offset && l.exec == exec);
    let l = exact(true)
        .or_else(|| exact(false))
        .or_else(|| loads.iter().find(|l| l.offset & !0xfff <= offset && offset < l.offset.saturating_add(l.filesz)))?;
    // The vaddr of file offset `offset`, page-aligned (p_vaddr and p_offset agree modulo the
    // page size in any loadable ELF).
    let vaddr = l.vaddr.wrapping_add(offset.wrapping_sub(l.offset)) & !0xfff;
    start.checked_sub(vaddr)
}

/// Parsed binaries shared by every process that maps them (a build's hundred children map
/// the same libc), keyed by the file's identity including size and mtime, so a binary
/// rewritten under the same inode is parsed again.
#[derive(Default)]
pub struct BinaryCache {
    files: HashMap<(u64, u64, u64, i64, i64), Arc<Binary>>,
    vdso: Option<(Vec<u8>, Arc<Binary>)>,
}

/// Binaries no process maps any more are dropped past this many entries (mmaps are cheap
/// address space, but their page-cache pages and our parsed tables are not free).
const CACHE_KEEP: usize = 256;

impl BinaryCache {
    fn file(&mut self, f: &File) -> Option<Arc<Binary>> {
        let md = f.metadata().ok()?;
        let key = (md.dev(), md.ino(), md.size(), md.mtime(), md.mtime_nsec());
        if let Some(b) = self.files.get(&key) {
            return Some(b.clone());
        }
        if self.files.len() >= CACHE_KEEP {
            self.files.retain(|_, b| Arc::strong_count(b) > 1);
        }
        // SAFETY: mapped read-only and private. A file truncated in place while mapped would
        // fault on access, as for every profiler that maps binaries (perf, samply); binaries
        // are replaced by rename or unlink in practice, which keeps the old inode intact.
        let map = unsafe { memmap2::Mmap::map(f) }.ok()?;
        let b = Arc::new(Binary::parse(Arc::new(Backing::Map(map))).ok()?);
        self.files.insert(key, b.clone());
        Some(b)
    }

    /// The vDSO image read from a process: the same kernel gives every process the same
    /// image, so it is parsed once and compared byte for byte.
    fn vdso(&mut self, image: Vec<u8>) -> Option<Arc<Binary>> {
        if let Some((i, b)) = &self.vdso {
            if *i == image {
                return Some(b.clone());
            }
        }
        let b = Arc::new(Binary::parse(Arc::new(Backing::Owned(image.clone()))).ok()?);
        self.vdso = Some((image, b.clone()));
        Some(b)
    }

    /// Binary files parsed and held.
    pub fn files(&self) -> usize {
        self.files.len()
    }
}

/// One process's modules.
pub struct ProcModules {
    pub fh: UnwinderX86_64<Bytes>,
    /// Every executable mapping (with or without CFI), sorted: an address outside all of
    /// them is no code of this process as last read. Holding the binaries keeps their cache
    /// entries alive.
    exec: Vec<Mapped>,
}

struct Mapped {
    range: Range<u64>,
    offset: u64,
    /// Where the process starts in this mapping's binary (0: not a program or the dynamic
    /// loader, whose e_entry means nothing to a stack; see ENTRY_STUB).
    entry: u64,
    bin: Option<Arc<Binary>>,
}

/// Whether a mapped path is the dynamic loader (glibc's ld-linux-x86-64.so.2, musl's
/// ld-musl-x86_64.so.1), which the kernel starts before the program.
fn is_loader(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|name| name.starts_with("ld-") && name.contains(".so"))
}

/// Bytes from a binary's entry point that count as its entry stub: ld.so's `_start` is
/// `mov %rsp,%rdi; call _dl_start` with no CFI, so a stack taken while ld.so maps the libraries
/// ends in a return address at entry + 8 that framehop cannot step (its frame-pointer fallback
/// finds no frame). Nothing above an entry stub is a caller (argc, argv and the environment lie
/// there), so reaching one is the root.
const ENTRY_STUB: u64 = 48;

impl ProcModules {
    /// Reads the process's maps and builds its framehop modules.
    pub fn read(src: &dyn ProcSource, cache: &mut BinaryCache, pid: u32) -> io::Result<ProcModules> {
        let maps = parse_maps(&src.maps(pid)?);
        let mut fh = UnwinderX86_64::new();
        let mut exec = Vec::with_capacity(maps.len());
        for m in &maps {
            let bin = if m.path == "[vdso]" {
                src.read_mem(pid, m.start, (m.end - m.start).min(1 << 20) as usize).ok().and_then(|i| cache.vdso(i))
            } else if m.path.starts_with('/') {
                src.open(pid, m).ok().and_then(|f| cache.file(&f))
            } else {
                None // anonymous or [vsyscall]: framehop falls back to frame pointers there
            };
            let bin = bin.and_then(|bin| {
                let base = bias(&bin.loads, m.start, m.offset)?;
                fh.add_module(Module::new(m.path.clone(), m.start..m.end, base, bin.section_info()));
                Some((bin, base))
            });
            let entry = match &bin {
                Some((b, base)) if b.entry != 0 && (b.program || is_loader(&m.path)) => b.entry.wrapping_add(*base),
                _ => 0,
            };
            exec.push(Mapped { range: m.start..m.end, offset: m.offset, entry, bin: bin.map(|(b, _)| b) });
        }
        Ok(ProcModules { fh, exec })
    }

    /// Executable mappings (each a framehop module when its file could be read).
    pub fn mappings(&self) -> usize {
        self.exec.len()
    }

    fn mapped(&self, addr: u64) -> Option<&Mapped> {
        let i = self.exec.partition_point(|m| m.range.start <= addr);
        self.exec.get(i.checked_sub(1)?).filter(|m| addr < m.range.end)
    }
}

impl super::frames::Code for ProcModules {
    fn knows(&self, addr: u64) -> bool {
        self.mapped(addr).is_some()
    }

    fn is_entry(&self, addr: u64) -> bool {
        self.mapped(addr).is_some_and(|m| m.entry != 0 && (m.entry..m.entry + ENTRY_STUB).contains(&addr))
    }

    fn has_cfi(&self, addr: u64) -> bool {
        self.mapped(addr).and_then(|m| m.bin.as_ref()).is_some_and(|b| b.has_cfi())
    }

    fn code(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let m = self.mapped(addr)?;
        let off = usize::try_from(addr - m.range.start + m.offset).ok()?;
        m.bin.as_ref()?.backing.get(off..off.checked_add(len)?)
    }
}
