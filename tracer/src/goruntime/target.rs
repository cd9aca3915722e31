//! One live Go process to read: its executable's resolved description (from the cache),
//! the load bias, and memory access; `open` validates the description against the live
//! process before anything is reported from it.
use std::sync::Arc;

use super::{
    cache::{self, Described, Runtime},
    mem::Mem,
};

pub struct Target {
    pub pid: u32,
    /// `/proc/PID/exe`'s link (may end in " (deleted)").
    pub exe: String,
    /// As the binary says it, e.g. `go1.27.3`.
    pub version: String,
    pub rt: Arc<Runtime>,
    /// Added to link-time addresses (0 unless PIE).
    pub bias: u64,
    pub mem: Mem,
}

/// A Go process whose runtime cannot be read: the version when known ("" else) and a reason
/// a user can read ("Go runtime view unavailable: <reason>").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable {
    pub go_version: String,
    pub reason: String,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Go runtime view unavailable: {}", self.reason)
    }
}

/// Upper bound on `allglen` that validation accepts (the doc's 10^7).
pub const MAX_GOROUTINES: u64 = 10_000_000;

/// `Ok(None)`: not a Go executable (most processes; cheap, and cached per binary).
/// `Ok(Some)`: a Go process whose offsets and globals were validated against its memory.
/// `Err`: a Go process (or one that vanished) whose runtime cannot be read, and why.
pub fn open(pid: u32) -> Result<Option<Target>, Unavailable> {
    let gone = |e: std::io::Error| Unavailable { go_version: String::new(), reason: format!("process {pid}: {e}") };
    let file = std::fs::File::open(format!("/proc/{pid}/exe")).map_err(gone)?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default();
    let rt = match cache::describe(file) {
        Described::NotGo => return Ok(None),
        Described::Unavailable { go_version, reason } => return Err(Unavailable { go_version, reason }),
        Described::Go(rt) => rt,
    };
    let fail = |reason: String| Unavailable { go_version: rt.version.raw.clone(), reason };
    let bias =
        if rt.pie { load_bias(pid, &exe, &rt).ok_or_else(|| fail("PIE load address not in maps".into()))? } else { 0 };
    let t = Target { pid, exe, version: rt.version.raw.clone(), rt: rt.clone(), bias, mem: Mem::new(pid) };
    t.validate().map_err(|r| fail(format!("{} ({} offsets): {r}", t.version, t.rt.layout.from)))?;
    Ok(Some(t))
}

/// A PIE's bias: where `.text`'s file offset is mapped, minus `.text`'s link-time address.
fn load_bias(pid: u32, exe: &str, rt: &Runtime) -> Option<u64> {
    let maps = crate::procfs::maps(pid)?;
    let m = maps.iter().find(|m| m.path == exe)?;
    Some((m.start - m.offset).wrapping_sub(rt.text_addr_minus_offset))
}

impl Target {
    /// A link-time address in the process.
    pub fn addr(&self, link: u64) -> u64 {
        link.wrapping_add(self.bias)
    }

    /// The checks of `docs/go-runtime.md`, on one read of the goroutine table: allglen in
    /// [1, 10^7], goroutine 1 started at runtime.main, every status a known one, parked
    /// goroutines' sp within their stack and their wait reason within the binary's table.
    /// A snapshot is racy, so "every" tolerates the few goroutines that moved mid-read.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.mem.u64(self.addr(self.rt.globals.allglen)).map_err(|e| format!("reading allglen: {e}"))?;
        if !(1..=MAX_GOROUTINES).contains(&n) {
            return Err(format!("allglen {n} is not in [1, {MAX_GOROUTINES}]"));
        }
        let gs = self.read_gs()?;
        let main = gs.iter().find(|g| g.goid == 1).ok_or("no goroutine has id 1")?;
        let in_main =
            self.rt.runtime_main.iter().any(|f| (self.addr(f.start)..self.addr(f.end)).contains(&main.start_pc));
        if !in_main {
            return Err(format!("goroutine 1 starts at {:#x}, not in runtime.main", main.start_pc));
        }
        let bad_status = gs.iter().filter(|g| !super::goroutines::known_status(g.status)).count();
        let parked: Vec<_> = gs.iter().filter(|g| g.status == super::goroutines::WAITING).collect();
        let bad_sp = parked.iter().filter(|g| !(g.stack_lo < g.sched_sp && g.sched_sp < g.stack_hi)).count();
        let reasons = self.rt.globals.wait_reasons.len();
        let bad_reason = parked.iter().filter(|g| g.wait_reason as usize >= reasons).count();
        // A racy read moves a few entries; wrong offsets break nearly all of them.
        let tolerated = 1 + gs.len() / 20;
        if bad_status > tolerated {
            return Err(format!("{bad_status} of {} goroutines have an unknown status", gs.len()));
        }
        if bad_sp > tolerated {
            return Err(format!("{bad_sp} of {} parked goroutines have sp outside their stack", parked.len()));
        }
        if bad_reason > tolerated {
            return Err(format!("{bad_reason} of {} parked goroutines have a wait reason ≥ {reasons}", parked.len()));
        }
        Ok(())
    }
}
