//! What the goroutine reader needs of one Go executable (`Runtime`: version, offsets,
//! globals, a few function ranges), resolved once per binary and kept in a process-wide
//! cache keyed by the file's identity: a `go build` runs 100+ `compile` processes of one
//! binary, and most processes are not Go at all — both answers are cached.
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    sync::{Arc, Mutex, OnceLock},
};

use object::{Object, ObjectSection};

use super::{
    binary::{Func, GoBinary, GoVersion},
    globals::{self, Globals},
    layout::{self, Layout},
    pcsp::Pcsp,
};

/// The resolved description of one Go executable (link-time addresses).
#[derive(Clone, Debug)]
pub struct Runtime {
    pub version: GoVersion,
    pub layout: Layout,
    pub globals: Globals,
    /// `runtime.main` (every entry of that name): goroutine 1's start pc must be in one.
    pub runtime_main: Vec<Func>,
    pub pie: bool,
    /// `.text`'s address minus its file offset (a PIE's load bias is the mapping's start
    /// minus its offset minus this).
    pub text_addr_minus_offset: u64,
    /// Frame sizes by pc (Go ≤ 1.22 only: a goroutine in a syscall saved no frame pointer,
    /// its first frame is unwound with the function's SP delta).
    pub pcsp: Option<Pcsp>,
    /// `runtime.memstats` / `gcController` (gcstats.rs), or why not.
    pub gc: Result<super::gcstats::GcGlobals, String>,
    /// The heap profile's globals (heap.rs), or what to say instead (not linked, unreadable).
    pub heap: Result<super::heap::HeapGlobals, crate::capture::go::GoHeap>,
    /// Where the Go uprobes go (uprobes.rs), or why they cannot.
    pub probes: Result<super::uprobes::GoProbeSpec, String>,
}

/// The answer for one executable.
#[derive(Clone, Debug)]
pub enum Described {
    /// No `.go.buildinfo` (or not ELF): nothing to read, the common case.
    NotGo,
    /// Go, but the runtime view cannot be had: the version (when known) and why.
    Unavailable {
        go_version: String,
        reason: String,
    },
    Go(Arc<Runtime>),
}

/// A file's identity: inode and device, plus size and mtime in case it was rewritten in place.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Key {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
}

/// Entries kept at most (then the cache starts over: re-resolving is only slower).
const CAPACITY: usize = 512;

fn cache() -> &'static Mutex<HashMap<Key, Described>> {
    static C: OnceLock<Mutex<HashMap<Key, Described>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

/// Empties the cache: a session's end (its report follows). A build's Go binaries' tables
/// (their pcsp tables: 3 MB) are not held through the report; a next session re-reads them.
pub fn forget() {
    cache().lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
}

/// Describes the executable open as `file` (opened through `/proc/PID/exe`, so a deleted or
/// replaced binary still reads), from the cache when that file was seen before.
pub fn describe(file: std::fs::File) -> Described {
    let key = match file.metadata() {
        Ok(m) => {
            Key { dev: m.dev(), ino: m.ino(), size: m.size(), mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec() }
        }
        Err(e) => return Described::Unavailable { go_version: String::new(), reason: format!("executable: {e}") },
    };
    if let Some(d) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return d.clone();
    }
    let d = resolve(file);
    let mut c = cache().lock().unwrap_or_else(|e| e.into_inner());
    if c.len() >= CAPACITY {
        c.clear();
    }
    c.insert(key, d.clone());
    d
}

fn resolve(file: std::fs::File) -> Described {
    let data = object::read::ReadCache::new(file);
    let bin = match GoBinary::parse(&data) {
        Ok(b) => b,
        Err(e) if e.starts_with("not ") => return Described::NotGo,
        Err(reason) => return Described::Unavailable { go_version: String::new(), reason },
    };
    let unavailable = |reason: String| Described::Unavailable { go_version: bin.version.raw.clone(), reason };
    let layout = match layout::resolve(&bin) {
        Ok(l) => l,
        Err(e) => return unavailable(e),
    };
    let globals = match globals::resolve(&bin) {
        Ok(g) => g,
        Err(e) => return unavailable(e),
    };
    let runtime_main = bin.funcs_named("runtime.main");
    if runtime_main.is_empty() {
        return unavailable("runtime.main not in .gopclntab".into());
    }
    let text_addr_minus_offset =
        bin.file.section_by_name(".text").and_then(|s| Some(s.address().wrapping_sub(s.file_range()?.0))).unwrap_or(0);
    let pcsp = if layout.syscallbp.is_none() { Pcsp::load(&bin) } else { None };
    let gc = super::gcstats::resolve(&bin);
    let heap = super::heap::resolve(&bin);
    // The loader attaches through /proc/PID/exe: the spec's path is not used for that.
    let probes = super::uprobes::probe_spec(
        std::path::Path::new(""),
        &bin,
        layout.gopc as u32,
        super::stw::preemptoff_offset(bin.version.minor),
    );
    Described::Go(Arc::new(Runtime {
        version: bin.version.clone(),
        layout,
        globals,
        runtime_main,
        pie: bin.is_pie(),
        text_addr_minus_offset,
        pcsp,
        gc,
        heap,
        probes,
    }))
}
