//! One snapshot of a live Go process's goroutines, read without stopping it: the goroutine
//! table (`allgptr[0..allglen]`), each g whole (runs of adjacent gs in one piece), and each
//! goroutine's stack walked by frame pointer from where it was saved — all reads batched
//! (`Mem::read_many`), each stack read once and walked locally, everything bounded. Entries
//! that changed mid-read are dropped and counted: a snapshot is not atomic.
use std::{collections::HashMap, time::Instant};

use tracer_common::thread::TaskRegs;

use super::{
    mem::{u32_at, u64_at},
    target::Target,
};
use crate::capture::go::Goroutine;

// `g.atomicstatus` values (runtime2.go), `_Gscan` masked off.
pub const RUNNABLE: u32 = 1;
pub const RUNNING: u32 = 2;
pub const SYSCALL: u32 = 3;
pub const WAITING: u32 = 4;
pub const DEAD: u32 = 6;
pub const COPYSTACK: u32 = 8;
pub const PREEMPTED: u32 = 9;
/// `_Gleaked` (1.26+): parked and found unreachable by the leak-detecting GC.
pub const LEAKED: u32 = 10;
const SCAN: u32 = 0x1000;

/// Statuses a live or dead g can have (0 idle, 5 and 7 unused, 11 `_Gdeadextra` 1.26+).
pub fn known_status(s: u32) -> bool {
    matches!(s, 0..=4 | 6 | 8..=11)
}

/// Frames kept per stack (Go's own traceback prints 100).
pub const MAX_DEPTH: usize = 128;
/// Bytes of a goroutine's stack read from its sp (parked stacks are mostly < 2 KiB; a
/// deeper one is walked as far as this reaches).
pub const MAX_STACK_READ: u64 = 64 << 10;
/// Above this many live goroutines, stacks are unwound once per group (see `snapshot`):
/// below it every goroutine's own stack is walked.
pub const GROUP_ABOVE: usize = 1000;

/// One g as read, decoded with the binary's layout (addresses as in the process).
#[derive(Clone, Debug, Default)]
pub struct RawG {
    pub addr: u64,
    pub goid: u64,
    pub status: u32,
    pub wait_reason: u32,
    pub wait_since: u64,
    pub gopc: u64,
    pub start_pc: u64,
    pub parent_goid: u64,
    pub m: u64,
    pub sched_sp: u64,
    pub sched_pc: u64,
    pub sched_bp: u64,
    pub syscall_sp: u64,
    pub syscall_pc: u64,
    pub syscall_bp: Option<u64>,
    pub stack_lo: u64,
    pub stack_hi: u64,
}

/// One live goroutine of a snapshot: the capture record (`stack` indexes
/// `Snapshot::stacks`) and where it is (the resume pc: sched.pc when parked).
#[derive(Clone, Debug, PartialEq)]
pub struct Live {
    pub g: Goroutine,
    pub pc: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Wall time of the read, µs.
    pub read_us: u64,
    /// Live goroutines (not dead), in table order.
    pub goroutines: Vec<Live>,
    /// Distinct stacks: pcs innermost first (stack[0] the resume pc, then return addresses).
    pub stacks: Vec<Vec<u64>>,
    /// Entries dropped as inconsistent (changed while read).
    pub dropped: u64,
}

impl Target {
    /// Every non-dead g in the table, each read in one piece.
    pub fn read_gs(&self) -> Result<Vec<RawG>, String> {
        Ok(self.read_table()?.0)
    }

    /// (live gs, entries dropped as inconsistent).
    fn read_table(&self) -> Result<(Vec<RawG>, u64), String> {
        let g = &self.rt.globals;
        // allglen before allgptr: allgadd stores the pointer first, so the array read is at
        // least this long.
        let n = self.mem.u64(self.addr(g.allglen)).map_err(|e| format!("reading allglen: {e}"))?;
        if n > super::target::MAX_GOROUTINES {
            return Err(format!("allglen {n} is implausible"));
        }
        let ptr = self.mem.u64(self.addr(g.allgptr)).map_err(|e| format!("reading allgptr: {e}"))?;
        let table = self.mem.bytes(ptr, n as usize * 8).map_err(|e| format!("reading allgs: {e}"))?;
        let addrs: Vec<u64> = (0..n as usize).map(|i| u64_at(&table, i * 8)).filter(|a| *a != 0).collect();
        let l = &self.rt.layout;
        let len = l.read_len();
        let (buf, ok) = read_near(&self.mem, &addrs, len);
        let mut out = Vec::with_capacity(addrs.len());
        let mut dropped = 0;
        for (i, &addr) in addrs.iter().enumerate() {
            if !ok[i] {
                dropped += 1;
                continue;
            }
            let b = &buf[i * len..(i + 1) * len];
            let status = u32_at(b, l.atomicstatus) & !SCAN;
            if status == DEAD || status == 0 || status == 11 {
                continue;
            }
            out.push(RawG {
                addr,
                goid: u64_at(b, l.goid),
                status,
                wait_reason: u32::from(b[l.waitreason]),
                wait_since: u64_at(b, l.waitsince),
                gopc: u64_at(b, l.gopc),
                start_pc: u64_at(b, l.startpc),
                parent_goid: l.parent_goid.map(|o| u64_at(b, o)).unwrap_or(0),
                m: u64_at(b, l.m),
                sched_sp: u64_at(b, l.sched_sp),
                sched_pc: u64_at(b, l.sched_pc),
                sched_bp: u64_at(b, l.sched_bp),
                syscall_sp: u64_at(b, l.syscallsp),
                syscall_pc: u64_at(b, l.syscallpc),
                syscall_bp: l.syscallbp.map(|o| u64_at(b, o)),
                stack_lo: u64_at(b, l.stack_lo),
                stack_hi: u64_at(b, l.stack_hi),
            });
        }
        Ok((out, dropped))
    }

    /// A snapshot of every live goroutine. `regs(tid)` gives a thread's saved user registers
    /// (the BPF task iterator's): the only source for a running goroutine's stack, and for a
    /// syscall's on Go ≤ 1.22 when its first frame cannot be unwound by frame size (pcsp).
    pub fn snapshot(&self, regs: &dyn Fn(u32) -> Option<TaskRegs>) -> Result<Snapshot, String> {
        let t0 = Instant::now();
        let (gs, mut dropped) = self.read_table()?;
        let reasons = self.rt.globals.wait_reasons.len() as u32;
        let mut live: Vec<(RawG, u32)> = Vec::with_capacity(gs.len());
        for g in gs {
            let consistent = known_status(g.status)
                && g.stack_lo < g.stack_hi
                && g.stack_hi - g.stack_lo <= 1 << 30
                && (g.status != WAITING
                    || (g.wait_reason < reasons && g.stack_lo < g.sched_sp && g.sched_sp < g.stack_hi));
            if !consistent {
                dropped += 1;
                continue;
            }
            let tid = if matches!(g.status, RUNNING | SYSCALL) && g.m != 0 {
                // m.procid is the thread id; a racy read of a reused m must still name one
                // of this process's threads.
                self.mem
                    .u64(g.m + self.rt.layout.m_procid as u64)
                    .ok()
                    .filter(|t| *t > 0 && *t <= i32::MAX as u64)
                    .filter(|t| std::path::Path::new(&format!("/proc/{}/task/{t}", self.pid)).exists())
            } else {
                None
            };
            live.push((g, tid.unwrap_or(0) as u32));
        }
        // Where each stack starts: (pc, sp, bp), or only a pc, or nothing.
        let starts: Vec<Start> = live.iter().map(|(g, tid)| self.start_of(g, *tid, regs)).collect();
        // Each goroutine's representative: itself, or above GROUP_ABOVE goroutines the first
        // with the same creation site, start function, resume pc and frame depths (sp and bp
        // below the stack's top): one unwind for all of them.
        let mut rep: Vec<usize> = (0..live.len()).collect();
        if live.len() > GROUP_ABOVE {
            let mut first = HashMap::new();
            for (i, ((g, _), s)) in live.iter().zip(&starts).enumerate() {
                if let Start::Walk { pc, sp, bp } = s {
                    let key = (g.gopc, g.start_pc, *pc, g.stack_hi - sp, g.stack_hi.wrapping_sub(*bp));
                    rep[i] = *first.entry(key).or_insert(i);
                }
            }
        }
        // The representatives' stacks, read in batches and walked locally.
        let walked: Vec<usize> =
            (0..live.len()).filter(|&i| rep[i] == i && matches!(starts[i], Start::Walk { .. })).collect();
        let ranges: Vec<(u64, usize)> = walked
            .iter()
            .map(|&i| match starts[i] {
                Start::Walk { sp, .. } => (sp, (live[i].0.stack_hi - sp).min(MAX_STACK_READ) as usize),
                _ => unreachable!(),
            })
            .collect();
        let mut buf = vec![0u8; ranges.iter().map(|r| r.1).sum()];
        let ok = self.mem.read_many(&ranges, &mut buf);
        let mut stacks: Vec<Vec<u64>> = Vec::new();
        let mut index: HashMap<Vec<u64>, u32> = HashMap::new();
        let mut intern = |pcs: Vec<u64>| -> u32 {
            let next = stacks.len() as u32;
            *index.entry(pcs).or_insert_with_key(|pcs| {
                stacks.push(pcs.clone());
                next
            })
        };
        let mut stack_of: Vec<Option<u32>> = vec![None; live.len()];
        let mut at = 0;
        for (k, &i) in walked.iter().enumerate() {
            let (sp, len) = ranges[k];
            if let (true, Start::Walk { pc, bp, .. }) = (ok[k], &starts[i]) {
                stack_of[i] = Some(intern(walk(*pc, sp, *bp, &buf[at..at + len])));
            }
            at += len;
        }
        for (i, s) in starts.iter().enumerate() {
            match s {
                Start::Pc(pc) => stack_of[i] = Some(intern(vec![*pc])),
                Start::Walk { .. } if rep[i] != i => stack_of[i] = stack_of[rep[i]],
                _ => {}
            }
        }
        let mut goroutines = Vec::with_capacity(live.len());
        for (i, (g, tid)) in live.into_iter().enumerate() {
            let stack = stack_of[i];
            let pc = if g.status == SYSCALL { g.syscall_pc } else { g.sched_pc };
            goroutines.push(Live {
                pc,
                g: Goroutine {
                    goid: g.goid,
                    status: g.status,
                    wait_reason: g.wait_reason,
                    wait_since: g.wait_since,
                    parked_since_ns: None,
                    parked_before_first: false,
                    gopc: g.gopc,
                    start_pc: g.start_pc,
                    parent_goid: g.parent_goid,
                    tid,
                    stack,
                },
            });
        }
        Ok(Snapshot { read_us: t0.elapsed().as_micros() as u64, goroutines, stacks, dropped })
    }

    fn start_of(&self, g: &RawG, tid: u32, regs: &dyn Fn(u32) -> Option<TaskRegs>) -> Start {
        let on_stack = |sp: u64| g.stack_lo <= sp && sp < g.stack_hi;
        let from_regs = || {
            let r = regs(tid).filter(|r| tid != 0 && on_stack(r.sp))?;
            Some(Start::Walk { pc: r.ip, sp: r.sp, bp: r.bp })
        };
        match g.status {
            WAITING | RUNNABLE | PREEMPTED | LEAKED if on_stack(g.sched_sp) => {
                Start::Walk { pc: g.sched_pc, sp: g.sched_sp, bp: g.sched_bp }
            }
            SYSCALL if on_stack(g.syscall_sp) => match g.syscall_bp {
                // 1.23+: entersyscall saved the frame pointer too.
                Some(bp) => Start::Walk { pc: g.syscall_pc, sp: g.syscall_sp, bp },
                // ≤ 1.22: the frame size at syscallpc first (exact, and where Go's own
                // traceback starts), else the thread's registers, else the pc alone.
                None => self.by_frame_size(g).or_else(from_regs).unwrap_or(Start::Pc(g.syscall_pc)),
            },
            RUNNING => from_regs().unwrap_or(Start::None),
            _ => Start::None,
        }
    }

    /// Go ≤ 1.22 syscall: the function at syscallpc keeps its caller's frame pointer just
    /// below its return address, at syscallsp + frame size − 8 — its own frame pointer.
    fn by_frame_size(&self, g: &RawG) -> Option<Start> {
        let d = self.rt.pcsp.as_ref()?.delta(g.syscall_pc.wrapping_sub(self.bias))?;
        (d >= 16).then_some(Start::Walk { pc: g.syscall_pc, sp: g.syscall_sp, bp: g.syscall_sp + d - 8 })
    }
}

/// Largest gap between two gs read in one piece, and the largest piece: gs are allocated
/// next to each other (size class 416 or 480 for a 392- or 456-byte g), so reading runs of
/// them costs a few hundred page pins instead of one per g.
const NEAR_GAP: u64 = 1024;
const MAX_PIECE: u64 = 1 << 20;

/// `len` bytes at each of `addrs`, back to back in the result, and which were read.
fn read_near(mem: &super::mem::Mem, addrs: &[u64], len: usize) -> (Vec<u8>, Vec<bool>) {
    let mut order: Vec<usize> = (0..addrs.len()).collect();
    order.sort_unstable_by_key(|&i| addrs[i]);
    // Pieces: (start, end) covering runs of sorted addresses.
    let mut pieces: Vec<(u64, u64)> = Vec::new();
    for &i in &order {
        let (a, e) = (addrs[i], addrs[i].saturating_add(len as u64));
        match pieces.last_mut() {
            Some(p) if a <= p.1 + NEAR_GAP && e - p.0 <= MAX_PIECE => p.1 = p.1.max(e),
            _ => pieces.push((a, e)),
        }
    }
    let ranges: Vec<(u64, usize)> = pieces.iter().map(|&(a, e)| (a, (e - a) as usize)).collect();
    let mut raw = vec![0u8; ranges.iter().map(|r| r.1).sum()];
    let piece_ok = mem.read_many(&ranges, &mut raw);
    let mut starts = Vec::with_capacity(pieces.len());
    let mut at = 0;
    for r in &ranges {
        starts.push(at);
        at += r.1;
    }
    let mut buf = vec![0u8; addrs.len() * len];
    let mut ok = vec![false; addrs.len()];
    let mut retry = Vec::new();
    for (i, &a) in addrs.iter().enumerate() {
        let p = pieces.partition_point(|p| p.0 <= a) - 1;
        if piece_ok[p] {
            let off = starts[p] + (a - pieces[p].0) as usize;
            buf[i * len..(i + 1) * len].copy_from_slice(&raw[off..off + len]);
            ok[i] = true;
        } else {
            retry.push(i);
        }
    }
    // A piece that failed as a whole (a hole in the middle): its gs one by one.
    if !retry.is_empty() {
        let mut one = vec![0u8; retry.len() * len];
        let r = mem.read_many(&retry.iter().map(|&i| (addrs[i], len)).collect::<Vec<_>>(), &mut one);
        for (k, &i) in retry.iter().enumerate() {
            if r[k] {
                buf[i * len..(i + 1) * len].copy_from_slice(&one[k * len..(k + 1) * len]);
                ok[i] = true;
            }
        }
    }
    (buf, ok)
}

#[derive(Debug, PartialEq)]
enum Start {
    Walk { pc: u64, sp: u64, bp: u64 },
    Pc(u64),
    None,
}

/// Frame-pointer walk over `stack` (the bytes from `sp`): `[bp]` is the caller's frame
/// pointer, `[bp + 8]` the return address. Stops at a zero or non-increasing frame pointer
/// (the outermost frame's is 0, set by the runtime), one outside the bytes read, or at
/// MAX_DEPTH.
pub fn walk(pc: u64, sp: u64, mut bp: u64, stack: &[u8]) -> Vec<u64> {
    let mut pcs = vec![pc];
    let end = sp + stack.len() as u64;
    while pcs.len() < MAX_DEPTH {
        if bp < sp || !bp.is_multiple_of(8) || bp + 16 > end {
            break;
        }
        let at = (bp - sp) as usize;
        let (next, ret) = (u64_at(stack, at), u64_at(stack, at + 8));
        if ret == 0 {
            break;
        }
        pcs.push(ret);
        if next <= bp {
            break;
        }
        bp = next;
    }
    pcs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ws: &[u64]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn frame_pointer_walk() {
        // From sp 0x1000: frame at 0x1010 → caller's at 0x1030 → outermost (saved bp 0).
        let b = words(&[0, 0, 0x1030, 0x40_1111, 0, 0, 0, 0x40_2222]);
        assert_eq!(walk(0x40_0000, 0x1000, 0x1010, &b), [0x40_0000, 0x40_1111, 0x40_2222]);
        // bp outside what was read, or misaligned: the resume pc alone.
        assert_eq!(walk(0x40_0000, 0x1000, 0x2000, &b), [0x40_0000]);
        assert_eq!(walk(0x40_0000, 0x1000, 0x1011, &b), [0x40_0000]);
        // A chain pointing back down (a torn read) stops instead of looping.
        let b = words(&[0, 0, 0x1010, 0x40_1111]);
        assert_eq!(walk(0x40_0000, 0x1000, 0x1010, &b), [0x40_0000, 0x40_1111]);
        // A very deep stack is cut at MAX_DEPTH.
        let deep: Vec<u64> = (0..400u64).flat_map(|i| [0x1000 + (i + 1) * 16, 0x40_0000 + i]).collect();
        assert_eq!(walk(1, 0x1000, 0x1000, &words(&deep)).len(), MAX_DEPTH);
    }

    /// Which saved registers a goroutine's stack is walked from, by state.
    #[test]
    fn where_stacks_start() {
        let p = crate::goruntime::tests::Parked::start(::tests::Go::Debian119, false, 0);
        let t = crate::goruntime::target::open(p.pid()).unwrap().unwrap();
        let g = RawG {
            stack_lo: 0x1000,
            stack_hi: 0x9000,
            sched_pc: 0x11,
            sched_sp: 0x8000,
            sched_bp: 0x8010,
            syscall_pc: 0, // no function: no frame size
            syscall_sp: 0x7000,
            ..Default::default()
        };
        let regs = |tid: u32| (tid == 7).then_some(TaskRegs { tid, tgid: 1, ip: 0x22, sp: 0x6000, bp: 0x6010 });
        let off_stack = |tid: u32| Some(TaskRegs { tid, tgid: 1, ip: 0x22, sp: 0x10, bp: 0x20 });
        let at = |status, tid, r: &dyn Fn(u32) -> Option<TaskRegs>| t.start_of(&RawG { status, ..g.clone() }, tid, r);
        let from_regs = Start::Walk { pc: 0x22, sp: 0x6000, bp: 0x6010 };
        assert_eq!(at(WAITING, 0, &regs), Start::Walk { pc: 0x11, sp: 0x8000, bp: 0x8010 });
        assert_eq!(at(WAITING, 0, &regs), at(RUNNABLE, 0, &regs));
        assert_eq!(at(RUNNING, 7, &regs), from_regs);
        assert_eq!(at(RUNNING, 0, &regs), Start::None, "no thread: no registers");
        assert_eq!(at(RUNNING, 7, &off_stack), Start::None, "registers of another stack");
        assert_eq!(at(SYSCALL, 7, &regs), from_regs, "Go 1.19, no frame size at syscallpc: the thread's registers");
        assert_eq!(at(SYSCALL, 7, &off_stack), Start::Pc(0));
        assert_eq!(at(COPYSTACK, 7, &regs), Start::None);
        // The fixture's own syscall goroutine: unwound by frame size even with registers.
        let live = (0..100)
            .find_map(|_| t.read_gs().unwrap().into_iter().find(|g| g.status == SYSCALL))
            .expect("runChild's goroutine in its syscall");
        match t.start_of(&live, 7, &regs) {
            Start::Walk { pc, sp, bp } => {
                assert_eq!((pc, sp), (live.syscall_pc, live.syscall_sp));
                assert!(sp < bp && bp < live.stack_hi && (bp - sp) % 8 == 0, "{sp:#x} {bp:#x}");
            }
            s => panic!("{s:?}"),
        }
        let with_bp = RawG { status: SYSCALL, syscall_bp: Some(0x7010), ..g.clone() };
        assert_eq!(t.start_of(&with_bp, 7, &regs), Start::Walk { pc: 0, sp: 0x7000, bp: 0x7010 }, "1.23+: syscallbp");
        let parked_off_stack = RawG { status: WAITING, sched_sp: 0x20, ..g.clone() };
        assert_eq!(t.start_of(&parked_off_stack, 0, &regs), Start::None);
    }
}
