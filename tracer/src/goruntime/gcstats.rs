//! The GC statistics a Go process keeps in memory (`runtime.memstats`: numgc, pause_total_ns,
//! the pause_ns/pause_end rings; `runtime.gcController`: heapLive, heapMarked and the GOGC
//! heap goal), found in the binary — symbols and DWARF when present, the code that uses them
//! and a per-version table otherwise — and read from the live process into `GoGc`.
//!
//! Stripped binaries: `runtime.gcMarkTermination` (never inlined, in every version) records
//! each cycle's pause as `pause_ns[numgc%256] = …; pause_end[numgc%256] = …; pause_total_ns +=
//! …`, which compiles to `MOVZX r32, byte [numgc]`, `LEA r, [pause_ns]`, `MOVZX`, `LEA r,
//! [pause_end]`, `ADD [pause_total_ns], r`. The four fields are consecutive in `mstats` in
//! every version (pause_total_ns u64, pause_ns [256]u64, pause_end [256]u64, numgc u32), so
//! the addresses satisfying exactly those distances are these fields: no offset table needed.
//! `runtime.gcController` is the `LEA RAX` passed as receiver to
//! `(*gcControllerState).init` in `runtime.gcinit` and to `(*gcControllerState).commit` in
//! `runtime.gcControllerCommit`; both sites must agree. When a symbol exists too, it must give
//! the same address, else the binary is not what we think and the view is refused.
use std::{borrow::Cow, collections::HashMap};

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

use crate::{
    capture::go::GoGc,
    goruntime::{
        binary::GoBinary,
        mem::{u32_at, u64_at, Mem},
    },
};

/// Link-time addresses of the GC statistics (add the load bias for a PIE).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcGlobals {
    /// `runtime.memstats` and `runtime.gcController` themselves.
    pub memstats: u64,
    pub gc_controller: u64,
    pub numgc: u64,
    pub pause_total_ns: u64,
    pub pause_ns: u64,
    pub pause_end: u64,
    /// `memstats.gc_cpu_fraction` (f64), when its offset is known.
    pub gc_cpu_fraction: Option<u64>,
    pub heap_live: u64,
    pub heap_marked: u64,
    /// `gcController.gcPercentHeapGoal`: the heap goal GOGC sets (a GOMEMLIMIT can lower the
    /// effective goal), when its offset is known.
    pub heap_goal: Option<u64>,
    /// Where the struct offsets came from: "dwarf" or "table".
    pub offsets_from: &'static str,
}

/// Field offsets within `mstats` and `gcControllerState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcOffsets {
    pub numgc: u64,
    pub pause_total_ns: u64,
    pub pause_ns: u64,
    pub pause_end: u64,
    pub gc_cpu_fraction: Option<u64>,
    pub heap_live: u64,
    pub heap_marked: u64,
    pub heap_goal: Option<u64>,
}

/// The offsets of each Go release without DWARF. Measured from the DWARF of Go 1.19.8 and
/// 1.21–1.27 builds (go-runtime.md); the heap goal and gc_cpu_fraction only where measured
/// here (1.19, 1.27). No 1.20 build was available: refused rather than guessed.
pub fn table(minor: u32) -> Option<GcOffsets> {
    let (ms, gc, goal, frac) = match minor {
        19 => ((7704, 3600, 3608, 5656), (136, 184), Some(104), Some(7712)),
        21..=24 => ((7704, 3600, 3608, 5656), (104, 152), None, None),
        25 | 26 => ((7680, 3576, 3584, 5632), (104, 152), None, None),
        27 => ((7680, 3576, 3584, 5632), (104, 152), Some(72), Some(7688)),
        _ => return None,
    };
    Some(GcOffsets {
        numgc: ms.0,
        pause_total_ns: ms.1,
        pause_ns: ms.2,
        pause_end: ms.3,
        gc_cpu_fraction: frac,
        heap_live: gc.0,
        heap_marked: gc.1,
        heap_goal: goal,
    })
}

/// Member offsets of the named structs, from the binary's DWARF: (struct, member) → offset.
pub fn dwarf_members(bin: &GoBinary, structs: &[&str]) -> Option<HashMap<(String, String), u64>> {
    if !bin.has_dwarf() {
        return None;
    }
    let empty: Cow<[u8]> = Cow::Borrowed(&[]);
    let sections = gimli::DwarfSections::load(|id| -> Result<_, gimli::Error> {
        Ok(bin.section(id.name()).map(|(_, d)| d).unwrap_or_else(|| empty.clone()))
    })
    .ok()?;
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian));
    let mut out = HashMap::new();
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header) else { continue };
        let mut cursor = unit.entries();
        // The struct being read and its depth: its members are its children.
        let mut inside: Option<(String, isize)> = None;
        while let Ok(Some(e)) = cursor.next_dfs() {
            let depth = e.depth();
            if inside.as_ref().is_some_and(|(_, d)| depth <= *d) {
                inside = None;
            }
            let name = || {
                e.attr_value(gimli::DW_AT_name)
                    .and_then(|v| dwarf.attr_string(&unit, v).ok())
                    .map(|s| String::from_utf8_lossy(s.slice()).into_owned())
            };
            if e.tag() == gimli::DW_TAG_structure_type {
                if let Some(n) = name().filter(|n| structs.contains(&n.as_str())) {
                    inside = Some((n, depth));
                }
            } else if e.tag() == gimli::DW_TAG_member {
                if let Some((s, d)) = &inside {
                    let off = e.attr_value(gimli::DW_AT_data_member_location).and_then(|v| v.udata_value());
                    if let (true, Some(m), Some(off)) = (depth == d + 1, name(), off) {
                        out.insert((s.clone(), m), off);
                    }
                }
            }
        }
    }
    Some(out)
}

/// The offsets from DWARF, if the binary has it and it names every required field.
fn dwarf_offsets(bin: &GoBinary) -> Option<GcOffsets> {
    let m = dwarf_members(bin, &["runtime.mstats", "runtime.gcControllerState"])?;
    let ms = |f: &str| m.get(&("runtime.mstats".to_owned(), f.to_owned())).copied();
    let gc = |f: &str| m.get(&("runtime.gcControllerState".to_owned(), f.to_owned())).copied();
    Some(GcOffsets {
        numgc: ms("numgc")?,
        pause_total_ns: ms("pause_total_ns")?,
        pause_ns: ms("pause_ns")?,
        pause_end: ms("pause_end")?,
        gc_cpu_fraction: ms("gc_cpu_fraction"),
        heap_live: gc("heapLive")?,
        heap_marked: gc("heapMarked")?,
        heap_goal: gc("gcPercentHeapGoal"),
    })
}

/// A function's instructions (its body, as pclntab bounds it).
pub fn decode(bin: &GoBinary, name: &str) -> Option<Vec<Instruction>> {
    let f = bin.func(name)?;
    let code = bin.bytes_at(f.start, (f.end - f.start) as usize)?;
    Some(Decoder::with_ip(64, &code, f.start, DecoderOptions::NONE).into_iter().collect())
}

/// The RIP-relative memory address an instruction accesses, if any.
pub fn rip_target(i: &Instruction) -> Option<u64> {
    i.is_ip_rel_memory_operand().then(|| i.ip_rel_memory_address())
}

/// The memstats fields' addresses from gcMarkTermination's pause bookkeeping (see the module
/// comment): (numgc, pause_total_ns, pause_ns, pause_end).
fn memstats_from_code(bin: &GoBinary) -> Result<(u64, u64, u64, u64), String> {
    let code = decode(bin, "runtime.gcMarkTermination").ok_or("runtime.gcMarkTermination not found in .gopclntab")?;
    let byte_loads: Vec<u64> = code
        .iter()
        .filter(|i| i.mnemonic() == Mnemonic::Movzx && i.code() == Code::Movzx_r32_rm8)
        .filter_map(rip_target)
        .collect();
    let leas: Vec<u64> = code.iter().filter(|i| i.mnemonic() == Mnemonic::Lea).filter_map(rip_target).collect();
    let adds: Vec<u64> = code
        .iter()
        .filter(|i| i.mnemonic() == Mnemonic::Add && i.op0_kind() == OpKind::Memory)
        .filter_map(rip_target)
        .collect();
    let mut found: Vec<(u64, u64, u64, u64)> = byte_loads
        .iter()
        .filter_map(|&numgc| {
            let ns = numgc.checked_sub(4096)?;
            let end = numgc - 2048;
            (leas.contains(&ns) && leas.contains(&end) && adds.contains(&(ns - 8))).then_some((numgc, ns - 8, ns, end))
        })
        .collect();
    found.dedup();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err("runtime.memstats not found: gcMarkTermination has no pause-ring bookkeeping as expected".into()),
        _ => Err("runtime.memstats is ambiguous in gcMarkTermination's code".into()),
    }
}

/// The `LEA RAX, [rip+x]` last set before the call to `callee` in `func`: the address of the
/// receiver it passes.
pub fn receiver_before_call(bin: &GoBinary, func: &str, callee: &str) -> Option<u64> {
    let target = bin.func(callee)?.start;
    let mut rax = None;
    for i in decode(bin, func)? {
        if i.mnemonic() == Mnemonic::Lea && i.op0_register() == Register::RAX {
            rax = rip_target(&i);
        } else if i.mnemonic() == Mnemonic::Call && i.op0_kind() == OpKind::NearBranch64 {
            if i.near_branch_target() == target {
                return rax;
            }
        } else if i.op0_register() == Register::RAX || i.op0_register() == Register::EAX {
            rax = None;
        }
    }
    None
}

fn gc_controller_from_code(bin: &GoBinary) -> Result<u64, String> {
    let a = receiver_before_call(bin, "runtime.gcinit", "runtime.(*gcControllerState).init");
    let b = receiver_before_call(bin, "runtime.gcControllerCommit", "runtime.(*gcControllerState).commit");
    match (a, b) {
        (Some(a), Some(b)) if a == b => Ok(a),
        (Some(a), Some(b)) => {
            Err(format!("runtime.gcController: gcinit and gcControllerCommit disagree ({a:#x}, {b:#x})"))
        }
        _ => Err("runtime.gcController not found (no receiver at gcinit's or gcControllerCommit's call)".into()),
    }
}

/// Finds the GC statistics of a Go executable, or why they cannot be read.
pub fn resolve(bin: &GoBinary) -> Result<GcGlobals, String> {
    let v = &bin.version;
    let (off, offsets_from) = match dwarf_offsets(bin) {
        Some(o) => (o, "dwarf"),
        None => (
            table(v.minor)
                .ok_or_else(|| format!("no DWARF and no GC statistics layout known for {} (1.19, 1.21–1.27)", v.raw))?,
            "table",
        ),
    };
    let (numgc, pause_total_ns, pause_ns, pause_end) = memstats_from_code(bin)?;
    let memstats = numgc - off.numgc;
    if (pause_total_ns, pause_ns, pause_end)
        != (memstats + off.pause_total_ns, memstats + off.pause_ns, memstats + off.pause_end)
    {
        return Err(format!(
            "runtime.memstats: the code's field addresses do not fit the {offsets_from} layout of {}",
            v.raw
        ));
    }
    let gc_controller = gc_controller_from_code(bin)?;
    for (name, code) in [("runtime.memstats", memstats), ("runtime.gcController", gc_controller)] {
        if let Some(sym) = bin.symbol(name).filter(|&s| s != code) {
            return Err(format!("{name}: the symbol ({sym:#x}) and the code ({code:#x}) disagree"));
        }
    }
    Ok(GcGlobals {
        memstats,
        gc_controller,
        numgc,
        pause_total_ns,
        pause_ns,
        pause_end,
        gc_cpu_fraction: off.gc_cpu_fraction.map(|o| memstats + o),
        heap_live: gc_controller + off.heap_live,
        heap_marked: gc_controller + off.heap_marked,
        heap_goal: off.heap_goal.map(|o| gc_controller + o),
        offsets_from,
    })
}

/// What one read of the statistics gives.
struct Read {
    numgc: u32,
    pause_total: u64,
    /// The rings, index = cycle % 256.
    ns: Vec<u64>,
    end: Vec<u64>,
}

/// Accumulates a process's `GoGc` over the session: call `read` at attach, about once a
/// second and at the end. Reading at least every 256 cycles sees every pause (the rings hold
/// the last 256); more between two reads are counted in `pauses_missed`.
pub struct GcReader {
    mem: Mem,
    g: GcGlobals,
    gc: GoGc,
    /// numgc at the previous read; None before the first.
    prev: Option<u32>,
}

/// CLOCK_REALTIME minus CLOCK_BOOTTIME: when the machine booted, in the runtime's `pause_end`
/// clock (no pause of a running process ended before it).
fn boot_realtime_ns() -> u64 {
    let ns = |c| {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime with a valid pointer.
        unsafe { libc::clock_gettime(c, &mut t) };
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    };
    ns(libc::CLOCK_REALTIME).saturating_sub(ns(libc::CLOCK_BOOTTIME))
}

fn realtime_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

impl GcReader {
    /// `bias`: the run-time minus the link-time address (0 for a non-PIE executable).
    pub fn new(pid: u32, globals: &GcGlobals, bias: u64) -> GcReader {
        let b = |a: u64| a.wrapping_add(bias);
        let g = GcGlobals {
            memstats: b(globals.memstats),
            gc_controller: b(globals.gc_controller),
            numgc: b(globals.numgc),
            pause_total_ns: b(globals.pause_total_ns),
            pause_ns: b(globals.pause_ns),
            pause_end: b(globals.pause_end),
            gc_cpu_fraction: globals.gc_cpu_fraction.map(b),
            heap_live: b(globals.heap_live),
            heap_marked: b(globals.heap_marked),
            heap_goal: globals.heap_goal.map(b),
            offsets_from: globals.offsets_from,
        };
        GcReader { mem: Mem::new(pid), g, gc: GoGc::default(), prev: None }
    }

    /// The figures so far.
    pub fn gc(&self) -> &GoGc {
        &self.gc
    }

    /// Keeps the last `keep` heap readings and pauses (the totals stay absolute).
    pub fn trim(&mut self, keep: usize) {
        let n = self.gc.heap.len();
        if n > keep {
            self.gc.heap.drain(..n - keep);
        }
        let n = self.gc.pauses.len();
        if n > keep {
            self.gc.pauses.drain(..n - keep);
        }
    }

    pub fn into_gc(self) -> GoGc {
        self.gc
    }

    /// One read of the statistics at `at_ns` (since attach). A read that fails validation is
    /// retried once (the process is not stopped: a GC may be writing the fields meanwhile);
    /// a second failure is the reason the GC view is unavailable.
    pub fn read(&mut self, at_ns: u64) -> Result<(), String> {
        let r = match self.read_valid() {
            Ok(r) => r,
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(2));
                self.read_valid()?
            }
        };
        self.commit(r);
        let live = self.mem.u64(self.g.heap_live)?;
        let goal = match self.g.heap_goal {
            Some(a) => self.mem.u64(a)?,
            None => 0,
        };
        if live >= 1 << 47 || goal >= 1 << 47 {
            return Err(format!("gcController.heapLive ({live}) or the heap goal ({goal}) is not a heap size"));
        }
        self.gc.heap.push((at_ns, live, goal));
        if let Some(a) = self.g.gc_cpu_fraction {
            let f = f64::from_bits(self.mem.u64(a)?);
            self.gc.gc_cpu_fraction = (0.0..=1.0).contains(&f).then_some(f);
        }
        Ok(())
    }

    /// pause_total_ns, both rings and numgc in one read (they are consecutive), validated.
    fn read_valid(&self) -> Result<Read, String> {
        let b = self.mem.bytes(self.g.pause_total_ns, 8 + 4096 + 4)?;
        let ring = |at: usize| (0..256).map(|i| u64_at(&b, at + 8 * i)).collect::<Vec<u64>>();
        let r = Read { pause_total: u64_at(&b, 0), ns: ring(8), end: ring(8 + 2048), numgc: u32_at(&b, 8 + 4096) };
        match self.prev {
            None => self.check_first(&r)?,
            Some(prev) => self.check_next(prev, &r)?,
        }
        Ok(r)
    }

    /// At the first read, the fields must look like a GC history: with n ≤ 256 cycles,
    /// pause_total equals the ring's sum and unused slots are 0; the last pause ended after
    /// boot and not in the future.
    fn check_first(&self, r: &Read) -> Result<(), String> {
        let n = r.numgc as usize;
        let bad = |what: &str| Err(format!("runtime.memstats does not hold GC statistics ({what}; numgc {n})"));
        if n == 0 {
            if r.pause_total != 0 || r.ns.iter().chain(&r.end).any(|&v| v != 0) {
                return bad("pauses recorded before any cycle");
            }
            return Ok(());
        }
        if n <= 256 {
            if r.ns[..n].iter().sum::<u64>() != r.pause_total {
                return bad("pause_total_ns is not the sum of the pause ring");
            }
            if r.ns[n..].iter().chain(&r.end[n..]).any(|&v| v != 0) {
                return bad("ring slots beyond numgc are used");
            }
            if r.end[..n].windows(2).any(|w| w[1] < w[0]) || r.end[0] == 0 {
                return bad("pause end times out of order");
            }
        } else if r.ns.iter().sum::<u64>() > r.pause_total {
            return bad("pause_total_ns is less than the last 256 pauses");
        }
        let last = r.end[(n - 1) % 256];
        if last < boot_realtime_ns() || last > realtime_ns() + 1_000_000_000 {
            return bad("the last pause did not end since boot");
        }
        Ok(())
    }

    /// Later reads: numgc only grows, new pauses end in order, and pause_total_ns grew by
    /// exactly the new pauses.
    fn check_next(&self, prev: u32, r: &Read) -> Result<(), String> {
        if r.numgc < prev {
            return Err(format!("memstats.numgc went back from {prev} to {}", r.numgc));
        }
        let new = new_cycles(prev, r.numgc);
        let added: u64 = new.clone().map(|k| r.ns[k % 256]).sum();
        if r.numgc - prev <= 256 && self.gc.pause_total_end_ns + added != r.pause_total {
            return Err(format!(
                "memstats.pause_total_ns grew by {} over {} cycles whose pauses sum to {added}",
                r.pause_total.wrapping_sub(self.gc.pause_total_end_ns),
                r.numgc - prev
            ));
        }
        let mut last = self.gc.pauses.last().map(|p| p.0).unwrap_or(0);
        for k in new {
            let end = r.end[k % 256];
            if end < last || end > realtime_ns() + 1_000_000_000 {
                return Err(format!("memstats.pause_end of cycle {k} is out of order"));
            }
            last = end;
        }
        Ok(())
    }

    fn commit(&mut self, r: Read) {
        match self.prev {
            None => {
                self.gc.numgc_start = r.numgc;
                self.gc.pause_total_start_ns = r.pause_total;
            }
            Some(prev) => {
                self.gc.pauses_missed += u64::from((r.numgc - prev).saturating_sub(256));
                self.gc.pauses.extend(new_cycles(prev, r.numgc).map(|k| (r.end[k % 256], r.ns[k % 256])));
            }
        }
        self.gc.numgc_end = r.numgc;
        self.gc.pause_total_end_ns = r.pause_total;
        self.prev = Some(r.numgc);
    }
}

/// The cycles completed since `prev` whose pauses the ring still holds (the last 256).
fn new_cycles(prev: u32, now: u32) -> std::ops::Range<usize> {
    (now.saturating_sub(256).max(prev)) as usize..now as usize
}

#[cfg(test)]
#[path = "gcstats_tests.rs"]
pub(crate) mod tests;
