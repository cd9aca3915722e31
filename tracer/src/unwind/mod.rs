//! Unwinding: turns user stacks copied by the eBPF side (registers + the top of the stack, see
//! tracer_common::ustack) into addresses, before `symbolize/`. The only code that parses
//! `.eh_frame`. framehop does the CFI work over each process's executable mappings; module
//! tables are cached per binary so a build's hundred children parse each binary once.
//!
//! Addresses come out in the convention of the kernel's `bpf_get_stack`: the interrupted ip
//! first, then raw return addresses (not minus one), so everything after this stage treats
//! CFI and frame-pointer stacks alike.
mod decide;
pub mod frames;
pub mod modules;
#[cfg(test)]
mod snapshot;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_live;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use framehop::x86_64::CacheX86_64;

pub use decide::{is_go, mode_for};
use modules::{BinaryCache, ProcModules};
pub use modules::{LiveProc, MapLine, ProcSource};

/// User registers at the innermost frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// How one stack ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Reached the root (`_start`, a thread's start, or a module's end of CFI).
    Complete,
    /// The unwind needed bytes beyond the copy (the copy was cut at `--ustack-bytes`). A copy
    /// that was not cut ended at the stack mapping's end: a read past it ends the walk as
    /// Complete.
    CopyExhausted,
    /// An address in no known module (even after re-reading the maps).
    NoModule,
    /// framehop could not go on (bad CFI, a frame that did not advance, a read below sp, …),
    /// or the walk reached tracer_common::stack::MAX_DEPTH frames (where the kernel's walk
    /// stops too): a loop the CFI did not catch, or a recursion deeper than a stack keeps.
    CfiError,
}

/// One unwound stack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unwound {
    /// ip first, then return addresses.
    pub addrs: Vec<u64>,
    pub outcome: Option<Outcome>,
    /// Bytes above sp the unwind read (the highest offset + 8): what a copy must hold.
    pub bytes_needed: u32,
    /// Callers a frame-pointer fallback may have skipped (frames::skipped_callers), for the
    /// symbolizer's chain check; empty when the leaf's binary has CFI.
    pub skipped: tracer_common::unwind::LeafFix,
}

/// Which unwinding a process gets (`--unwind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Choice {
    /// DWARF for everything but Go executables, which keep frame pointers.
    #[default]
    Auto,
    Fp,
    Dwarf,
}

/// Per-process module tables and framehop state.
pub struct Unwinder {
    src: Box<dyn ProcSource>,
    binaries: BinaryCache,
    procs: HashMap<u32, Proc>,
    /// The modules a process had before it exec'd, or its parent's when it forked: a stack
    /// taken before the exec (unwound after it) or by a child that exited before its maps
    /// could be read (a `sh -c` child, `git --version`) is unwound with those.
    prev: HashMap<u32, Arc<ProcModules>>,
    cache: CacheX86_64,
    /// Modules added since `cache` was made (see CACHE_RENEW).
    modules_added: usize,
}

/// framehop tags its rule cache with a global u16 "modules generation" bumped at every module
/// added: after 65,536 of them (a long build: thousands of processes × their libraries) a new
/// process could meet a stale rule of an old one. The cache is renewed well before.
const CACHE_RENEW: usize = 30_000;

struct Proc {
    /// None: the maps could not be read (the process is gone).
    modules: Option<Arc<ProcModules>>,
    read_at: Instant,
    /// CLOCK_MONOTONIC of the read (exec events carry the kernel's time of the exec).
    read_ns: u64,
    /// Times the maps were read again for an unknown address.
    rereads: u32,
}

/// A pid's maps are read again for an unknown address at most this often: a process with
/// garbage return addresses (or JIT code in no mapping) must not cost a maps read per stack.
const REREAD_EVERY: Duration = Duration::from_millis(20);
/// Re-reads allowed before that limit applies: records arrive in batches, so a process's
/// first stacks (taken while ld.so was still mapping libc, then after) are unwound within
/// microseconds of each other; a new process maps its libraries in a few steps.
const FREE_REREADS: u32 = 8;

impl Default for Unwinder {
    fn default() -> Self {
        Self::with_source(Box::new(LiveProc))
    }
}

impl Unwinder {
    pub fn new() -> Self {
        Self::default()
    }

    /// An unwinder reading maps, memory and files through `src` (tests: a snapshot).
    pub fn with_source(src: Box<dyn ProcSource>) -> Self {
        Self {
            src,
            binaries: BinaryCache::default(),
            procs: HashMap::new(),
            prev: HashMap::new(),
            cache: CacheX86_64::new(),
            modules_added: 0,
        }
    }

    /// Unwinds one stack of process `pid`: `stack` holds the bytes copied from `regs.sp`
    /// upward; `cut`: the copy stopped at the `--ustack-bytes` limit.
    pub fn unwind(&mut self, pid: u32, regs: Regs, stack: &[u8], cut: bool) -> Unwound {
        if !self.procs.contains_key(&pid) {
            self.read(pid);
        }
        let mut out = self.walk(pid, regs, stack, cut);
        let p = &self.procs[&pid];
        if out.outcome == Some(Outcome::NoModule) && (p.rereads < FREE_REREADS || p.read_at.elapsed() >= REREAD_EVERY) {
            // A library mapped or dlopen'd since, or an exec: read the maps once more.
            let rereads = p.rereads + 1;
            self.read(pid);
            if let Some(p) = self.procs.get_mut(&pid) {
                p.rereads = rereads;
            }
            out = self.walk(pid, regs, stack, cut);
        }
        if out.outcome != Some(Outcome::Complete) {
            if let Some(prev) = self.prev.get(&pid).cloned() {
                let old = frames::walk(&prev.fh, &mut self.cache, regs, stack, cut, &*prev);
                // The image the stack belongs to is the one that explains more of it.
                if old.outcome == Some(Outcome::Complete) || old.addrs.len() > out.addrs.len() {
                    out = old;
                }
            }
        }
        out
    }

    /// Reads `pid`'s maps now unless they were read since its last exec.
    pub fn preload(&mut self, pid: u32) {
        if !self.procs.contains_key(&pid) {
            self.read(pid);
        }
    }

    fn read(&mut self, pid: u32) {
        let fresh = ProcModules::read(&*self.src, &mut self.binaries, pid).ok().map(Arc::new);
        self.modules_added += fresh.as_ref().map_or(0, |m| m.mappings());
        // Gone meanwhile: what was read of this image before still explains its stacks.
        let modules = fresh.or_else(|| self.procs.get(&pid).and_then(|p| p.modules.clone()));
        if self.modules_added >= CACHE_RENEW {
            self.cache = CacheX86_64::new();
            self.modules_added = 0;
        }
        let read_ns = crate::clock::monotonic_ns();
        self.procs.insert(pid, Proc { modules, read_at: Instant::now(), read_ns, rereads: 0 });
    }

    fn walk(&mut self, pid: u32, regs: Regs, stack: &[u8], cut: bool) -> Unwound {
        match self.procs.get(&pid).and_then(|p| p.modules.as_ref()) {
            Some(m) => frames::walk(&m.fh, &mut self.cache, regs, stack, cut, &**m),
            None => Unwound {
                addrs: vec![regs.ip],
                outcome: Some(Outcome::NoModule),
                bytes_needed: 0,
                skipped: Default::default(),
            },
        }
    }

    /// The process exec'd at `at_ns` (CLOCK_MONOTONIC): its modules are read again at its next
    /// stack, unless they were read after the exec. The exec event comes through another ring
    /// than the stacks and is often applied after the new image's first stacks were unwound
    /// (with maps read then): forgetting those maps would leave a short-lived program's later
    /// stacks with none once it has exited.
    pub fn exec(&mut self, pid: u32, at_ns: u64) {
        if self.procs.get(&pid).is_some_and(|p| p.read_ns < at_ns) {
            if let Some(old) = self.procs.remove(&pid).and_then(|p| p.modules) {
                self.prev.insert(pid, old);
            }
        }
    }

    /// `child` forked from `parent`: until it execs, its address space is its parent's.
    pub fn fork(&mut self, child: u32, parent: u32) {
        if let Some(m) = self.procs.get(&parent).and_then(|p| p.modules.clone()) {
            self.prev.entry(child).or_insert(m);
        }
    }

    /// The process is gone: drop its state.
    pub fn exit(&mut self, pid: u32) {
        self.procs.remove(&pid);
        self.prev.remove(&pid);
    }

    /// Binaries parsed and cached (shared by every process that maps them).
    pub fn cached_binaries(&self) -> usize {
        self.binaries.files()
    }
}
