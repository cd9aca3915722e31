//! The heap profile a Go process keeps, read from its memory exactly as `runtime.MemProfile`
//! would report it — when the binary links it. The linker sets `disableMemoryProfiling`
//! (MemProfileRate 0 from the start) unless `runtime.MemProfile` (≤ 1.22) or
//! `runtime.memProfileInternal` (1.23+) is reachable: then there is nothing to read, and the
//! report says what the developer would add.
//!
//! Globals, symbol or not: in memProfileInternal/MemProfile the first `MOV r32, [rip]` is
//! `mProfCycle` and the first `MOV r64, [rip]` is `mbuckets` (mProf_FlushLocked's first
//! `MOV r64` must agree); `MemProfileRate` is the `MOV r64, [rip]` feeding `fastexprand` in
//! both `allocmcache` and `profilealloc` (they must agree). Symbols, when present, must agree.
use crate::{
    capture::go::{GoHeap, HeapBucket, HeapProfile},
    goruntime::{
        binary::GoBinary,
        gcstats::{decode, dwarf_members, rip_target},
        mem::{u64_at, Mem},
    },
};
use iced_x86::{Code, Mnemonic, OpKind};

/// Link-time addresses (add the load bias for a PIE) and the layout of the profile buckets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeapGlobals {
    pub mbuckets: u64,
    pub mprof_cycle: u64,
    pub mem_profile_rate: u64,
    /// `memRecordCycle`: 32 bytes ({allocs, frees, alloc_bytes, free_bytes}) up to Go 1.26,
    /// 16 ({allocs, frees}) from 1.27.
    pub record_cycle: u64,
    /// The most PCs a bucket can hold (32 up to 1.22; 1.23+ honours GODEBUG=profstackdepth,
    /// at most 1024).
    pub max_stack: u64,
}

/// A walk stops here: a loop or a corrupted list, not a profile.
const MAX_BUCKETS: usize = 1 << 20;

/// What the developer would add to get a heap profile.
pub const NOT_LINKED: &str = "the binary does not link runtime.MemProfile, so the runtime keeps no heap samples; \
     calling pprof.Lookup(\"heap\") (or importing net/http/pprof) would link it";

fn first_rip_load(bin: &GoBinary, func: &str, code: Code) -> Option<u64> {
    decode(bin, func)?.iter().filter(|i| i.code() == code).find_map(rip_target)
}

/// The `MOV r64, [rip+x]` last before the call to runtime.fastexprand in `func`.
fn rate_before_fastexprand(bin: &GoBinary, func: &str) -> Option<u64> {
    let target = bin.func("runtime.fastexprand")?.start;
    let mut last = None;
    for i in decode(bin, func)? {
        if i.code() == Code::Mov_r64_rm64 && rip_target(&i).is_some() {
            last = rip_target(&i);
        } else if i.mnemonic() == Mnemonic::Call
            && i.op0_kind() == OpKind::NearBranch64
            && i.near_branch_target() == target
        {
            return last;
        }
    }
    None
}

fn agree(name: &str, found: &[(&str, Option<u64>)], bin: &GoBinary) -> Result<u64, GoHeap> {
    let unavailable = |reason: String| GoHeap::Unavailable { reason };
    let mut it = found.iter().filter_map(|(_, a)| *a);
    let a = it.next().ok_or_else(|| unavailable(format!("{name} not found in the code of {}", found[0].0)))?;
    if it.any(|b| b != a) {
        return Err(unavailable(format!("{name}: {found:x?} disagree")));
    }
    if let Some(sym) = bin.symbol(name).filter(|&s| s != a) {
        return Err(unavailable(format!("{name}: the symbol ({sym:#x}) and the code ({a:#x}) disagree")));
    }
    Ok(a)
}

/// Where the heap profile lives, or `Err(GoHeap::NotLinked)` / `Err(GoHeap::Unavailable)`.
pub fn resolve(bin: &GoBinary) -> Result<HeapGlobals, GoHeap> {
    let minor = bin.version.minor;
    let entry = if minor >= 23 { "runtime.memProfileInternal" } else { "runtime.MemProfile" };
    if bin.func(entry).is_none() {
        return Err(GoHeap::NotLinked { reason: NOT_LINKED.into() });
    }
    let unavailable = |reason: String| GoHeap::Unavailable { reason };
    let record_cycle = match dwarf_members(bin, &["runtime.memRecordCycle"]) {
        Some(m) if !m.is_empty() => {
            if m.contains_key(&("runtime.memRecordCycle".to_owned(), "alloc_bytes".to_owned())) {
                32
            } else {
                16
            }
        }
        _ => match minor {
            19..=26 => 32,
            27 => 16,
            _ => return Err(unavailable(format!("no DWARF and no heap profile layout known for {}", bin.version.raw))),
        },
    };
    let mbuckets = agree(
        "runtime.mbuckets",
        &[
            (entry, first_rip_load(bin, entry, Code::Mov_r64_rm64)),
            ("runtime.mProf_FlushLocked", first_rip_load(bin, "runtime.mProf_FlushLocked", Code::Mov_r64_rm64)),
        ],
        bin,
    )?;
    let mprof_cycle = agree("runtime.mProfCycle", &[(entry, first_rip_load(bin, entry, Code::Mov_r32_rm32))], bin)?;
    let mem_profile_rate = agree(
        "runtime.MemProfileRate",
        &[
            ("runtime.allocmcache", rate_before_fastexprand(bin, "runtime.allocmcache")),
            ("runtime.profilealloc", rate_before_fastexprand(bin, "runtime.profilealloc")),
        ],
        bin,
    )?;
    Ok(HeapGlobals {
        mbuckets,
        mprof_cycle,
        mem_profile_rate,
        record_cycle,
        max_stack: if minor >= 23 { 1024 } else { 32 },
    })
}

/// One bucket as read: its stack, size and the four memRecordCycles (active, future[0..3]),
/// each (allocs, frees, alloc_bytes, free_bytes).
struct Raw {
    stack: Vec<u64>,
    size: u64,
    cycles: [[u64; 4]; 4],
}

/// Reads the heap profile: `Profile`, or `Unavailable` with the reason.
pub fn read(pid: u32, g: &HeapGlobals, bias: u64) -> GoHeap {
    let mem = Mem::new(pid);
    // The process runs on: a bucket read while the runtime updates it can be torn; a second
    // walk settles it.
    match read_once(&mem, g, bias).or_else(|_| read_once(&mem, g, bias)) {
        Ok(p) => GoHeap::Profile(p),
        Err(reason) => GoHeap::Unavailable { reason },
    }
}

fn read_once(mem: &Mem, g: &HeapGlobals, bias: u64) -> Result<HeapProfile, String> {
    let rate = mem.u64(g.mem_profile_rate.wrapping_add(bias))? as i64;
    if rate <= 0 {
        return Err(format!("runtime.MemProfileRate is {rate}: the program turned heap profiling off"));
    }
    let cycle = mem.u32(g.mprof_cycle.wrapping_add(bias))? >> 1;
    let mut raw = Vec::new();
    let mut b = mem.u64(g.mbuckets.wrapping_add(bias))?;
    while b != 0 {
        if raw.len() == MAX_BUCKETS {
            return Err(format!("more than {MAX_BUCKETS} heap profile buckets: a loop, not a profile"));
        }
        let h = mem.bytes(b, 48)?;
        let (typ, size, nstk) = (u64_at(&h, 16), u64_at(&h, 32), u64_at(&h, 40));
        if typ != 1 || nstk > g.max_stack {
            return Err(format!("heap profile bucket at {b:#x} is not one (type {typ}, {nstk} pcs)"));
        }
        let rest = mem.bytes(b + 48, (nstk * 8 + 4 * g.record_cycle) as usize)?;
        let stack: Vec<u64> = (0..nstk as usize).map(|i| u64_at(&rest, 8 * i)).collect();
        let mut cycles = [[0u64; 4]; 4];
        for (c, rec) in cycles.iter_mut().enumerate() {
            let at = nstk as usize * 8 + c * g.record_cycle as usize;
            let (allocs, frees) = (u64_at(&rest, at), u64_at(&rest, at + 8));
            let bytes = if g.record_cycle == 32 {
                (u64_at(&rest, at + 16), u64_at(&rest, at + 24))
            } else {
                (allocs.wrapping_mul(size), frees.wrapping_mul(size))
            };
            // Size is part of the bucket key: the byte counts are the object counts times it.
            if bytes != (allocs.wrapping_mul(size), frees.wrapping_mul(size)) {
                return Err(format!("heap profile bucket at {b:#x}: byte counts are not objects × {size}"));
            }
            *rec = [allocs, frees, bytes.0, bytes.1];
        }
        raw.push(Raw { stack, size, cycles });
        b = u64_at(&h, 8);
    }
    Ok(HeapProfile { rate: rate as u64, buckets: as_mem_profile(raw, cycle) })
}

/// What MemProfile reports: `active` plus the not yet flushed cycle `future[cycle % 3]`; if
/// that leaves every bucket empty (no GC has completed), every cycle summed.
fn as_mem_profile(raw: Vec<Raw>, cycle: u32) -> Vec<HeapBucket> {
    let add = |a: [u64; 4], b: [u64; 4]| [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]];
    let index = 1 + (cycle % 3) as usize;
    let mut counts: Vec<[u64; 4]> = raw.iter().map(|r| add(r.cycles[0], r.cycles[index])).collect();
    if counts.iter().all(|c| c[0] == 0 && c[1] == 0) {
        counts = raw.iter().map(|r| r.cycles.iter().fold([0; 4], |s, c| add(s, *c))).collect();
    }
    raw.into_iter()
        .zip(counts)
        .map(|(r, c)| HeapBucket {
            stack: r.stack,
            size: r.size,
            allocs: c[0],
            frees: c[1],
            alloc_bytes: c[2],
            free_bytes: c[3],
        })
        .collect()
}

#[cfg(test)]
#[path = "heap_tests.rs"]
mod tests;
