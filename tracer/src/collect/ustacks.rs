//! The `USTACKS` ring (see tracer_common::ustack) while the session runs: each process's
//! unwind mode (decided at attach and at each exec, mirrored from the kernel's fork
//! inheritance), every stack copy unwound while its process is alive (`unwind::Unwinder`),
//! copies kept by id for the kernel maps that reference them, on-CPU samples of DWARF-mode
//! processes counted here, and the per-process `UnwindStats`. Raw stack bytes are never kept.
use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use tracer_common::unwind::LeafFix;
use tracer_common::ustack::{UstackHeader, COPY_ID_BIT, FLAG_CUT, KIND_COPY, KIND_SAMPLE, MODE_DWARF, MODE_FP};

use crate::{
    capture::{Addrs, Leaf, RawSample, UnwindStats},
    loader::Probes,
    unwind::{Choice, Outcome, Regs, Unwinder},
};

/// How long after its exit event a process's unwinder state is kept: its last records may
/// still be in the ring (they were written before the exit; the ring is read every few ms).
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// A DWARF-mode on-CPU sample with its time (off-CPU clock), for --timeline.
pub struct TimedSample {
    pub ts: u64,
    pub tgid: u32,
    pub tid: u32,
    pub user: Vec<u64>,
    pub kernel_stack_id: i32,
    pub skipped: LeafFix,
}

/// An on-CPU sample counted in userspace: (tgid, tid, unwound addresses, kernel stack id,
/// callers a frame-pointer fallback skipped).
pub type SampleKey = (u32, u32, Vec<u64>, i32, LeafFix);

#[derive(Default)]
struct Proc {
    mode: u8,
    /// Records unwound, by outcome (Complete, CopyExhausted, NoModule, CfiError).
    outcomes: [u64; 4],
    /// bytes_needed of each record (for the p99).
    bytes_needed: Vec<u32>,
}

pub struct Ustacks {
    choice: Choice,
    /// --ustack-bytes, for the stacks read from /proc (unwind_blocked).
    ustack_bytes: u32,
    unwinder: Unwinder,
    copies: HashMap<i32, (Vec<u64>, LeafFix)>,
    samples: HashMap<SampleKey, u64>,
    /// --timeline: DWARF-mode samples with their time (the header's ts).
    timed: Vec<TimedSample>,
    procs: BTreeMap<u32, Proc>,
    /// Exec'd since the last sync, with the exec's time: their mode is decided again.
    execs: Vec<(u32, u64)>,
    exits: Vec<(u32, Instant)>,
    /// Records read, and records too short for their header or length (never expected).
    pub records: u64,
    pub malformed: u64,
    pub seen: Seen,
}

/// What the records looked like (the tests' and benchmarks' view: RTRACE_USTACK_STATS=1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub samples: u64,
    pub copies: u64,
    /// Records with FLAG_CUT (the copy stopped at --ustack-bytes).
    pub cut: u64,
    /// Records without a byte of stack (sp unreadable: a task past exit_mm, say).
    pub empty: u64,
    pub min_len: u32,
    /// Stacks of blocked threads read from their memory (not records).
    pub proc_reads: u64,
    pub max_len: u32,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "samples={} copies={} cut={} empty={} min_len={} max_len={} proc_reads={}",
            self.samples, self.copies, self.cut, self.empty, self.min_len, self.max_len, self.proc_reads
        )
    }
}

/// `tgid`'s mode under `choice`, from its executable (None: gone, or a kernel thread).
pub fn mode_of(tgid: u32, choice: Choice) -> Option<u8> {
    let exe = std::fs::read_link(format!("/proc/{tgid}/exe")).ok()?;
    Some(crate::unwind::mode_for(&exe, choice))
}

/// Decides `tgid`'s mode and tells the kernel (before attach for the target and the
/// descendants found then, so their first stacks are taken the right way). `exe`: the
/// program it is about to exec, when known (a held command), else its /proc exe.
pub fn decide(probes: &mut Probes, tgid: u32, exe: Option<&std::path::Path>, choice: Choice) -> Option<u8> {
    let mode = match exe {
        Some(exe) => crate::unwind::mode_for(exe, choice),
        None => mode_of(tgid, choice)?,
    };
    if let Err(e) = probes.set_unwind_mode(tgid, mode) {
        eprintln!("rtrace: warning: {e:#}");
        return None;
    }
    Some(mode)
}

impl Ustacks {
    /// `modes`: what session.rs decided at attach.
    pub fn new(choice: Choice, modes: &[(u32, u8)], ustack_bytes: u32) -> Self {
        let mut s = Self {
            choice,
            ustack_bytes,
            unwinder: Unwinder::new(),
            copies: HashMap::new(),
            samples: HashMap::new(),
            timed: Vec::new(),
            procs: BTreeMap::new(),
            execs: Vec::new(),
            exits: Vec::new(),
            records: 0,
            malformed: 0,
            seen: Seen::default(),
        };
        for &(tgid, mode) in modes {
            s.procs.entry(tgid).or_default().mode = mode;
        }
        s
    }

    /// Threads blocked at attach or at the end, whose stacks /proc gave (preexisting.rs): for
    /// a DWARF-mode process, their stack is read with process_vm_readv (read-only: no ptrace,
    /// no stop) from the saved sp and unwound like a copy, replacing the frame-pointer walk.
    pub fn unwind_blocked(&mut self, blocked: &mut [super::preexisting::Blocked]) {
        for b in blocked.iter_mut() {
            if self.procs.get(&b.tgid).is_none_or(|p| p.mode != MODE_DWARF) || b.sp == 0 {
                continue;
            }
            let Some(&pc) = b.user.first() else { continue };
            let Some(stack) = read_stack(b.tgid, b.sp, self.ustack_bytes) else { continue };
            let cut = stack.len() as u32 >= self.ustack_bytes;
            let u = self.unwinder.unwind(b.tgid, Regs { ip: pc, sp: b.sp, bp: b.bp }, &stack, cut);
            self.seen.proc_reads += 1;
            let p = self.procs.entry(b.tgid).or_default();
            if let Some(o) = u.outcome {
                p.outcomes[outcome_index(o)] += 1;
            }
            p.bytes_needed.push(u.bytes_needed);
            b.user = u.addrs;
            b.leaf = Default::default();
        }
    }

    /// A root adopted by a watch set (roots.rs): its mode, as `new` takes them at attach.
    pub fn set_mode(&mut self, tgid: u32, mode: u8) {
        self.procs.entry(tgid).or_default().mode = mode;
    }

    /// The processes of a watch set's forgotten root: their accounting and samples go (their
    /// last profile was taken).
    pub fn forget(&mut self, pids: &std::collections::BTreeSet<u32>) {
        self.procs.retain(|p, _| !pids.contains(p));
        self.samples.retain(|k, _| !pids.contains(&k.0));
        self.timed.retain(|t| !pids.contains(&t.tgid));
    }

    /// Copies no kernel map references any more (a forgotten process's blocks).
    pub fn drop_copies(&mut self, ids: &[i32]) {
        for id in ids {
            self.copies.remove(id);
        }
    }

    /// A fork: the kernel gave the child its parent's mode; so does this mirror.
    pub fn on_fork(&mut self, child: u32, parent: u32) {
        self.unwinder.fork(child, parent);
        if let Some(mode) = self.procs.get(&parent).map(|p| p.mode) {
            self.procs.entry(child).or_default().mode = mode;
        }
    }

    pub fn on_exec(&mut self, tgid: u32, ts_ns: u64) {
        self.execs.push((tgid, ts_ns));
    }

    pub fn on_exit(&mut self, tgid: u32) {
        self.exits.push((tgid, Instant::now()));
    }

    /// Applies execs (mode decided again, modules forgotten) and releases the state of
    /// processes that exited a while ago. `probes`: None once detached.
    pub fn sync(&mut self, mut probes: Option<&mut Probes>) {
        for (tgid, ts_ns) in std::mem::take(&mut self.execs) {
            self.unwinder.exec(tgid, ts_ns);
            let mode = match probes.as_deref_mut() {
                Some(p) => decide(p, tgid, None, self.choice),
                None => mode_of(tgid, self.choice),
            };
            if let Some(mode) = mode {
                self.procs.entry(tgid).or_default().mode = mode;
                if mode == MODE_DWARF && probes.is_some() {
                    // Now, while it surely lives: `git --version` exits within a couple of ms,
                    // often before its first copies are read.
                    self.unwinder.preload(tgid);
                }
            }
        }
        let now = Instant::now();
        let unwinder = &mut self.unwinder;
        self.exits.retain(|&(tgid, at)| {
            let done = now.duration_since(at) >= EXIT_GRACE;
            if done {
                unwinder.exit(tgid);
            }
            !done
        });
    }

    /// Reads every record in the ring.
    pub fn read(&mut self, ring: &mut aya::maps::RingBuf<aya::maps::MapData>) {
        while let Some(item) = ring.next() {
            self.record(&item);
        }
    }

    /// One record: unwound now (the process is alive), kept by id or counted as a sample.
    pub fn record(&mut self, item: &[u8]) {
        self.records += 1;
        let hlen = std::mem::size_of::<UstackHeader>();
        let Some(h) = super::record::<UstackHeader>(item) else {
            self.malformed += 1;
            return;
        };
        let Some(stack) = item.get(hlen..hlen + h.len as usize) else {
            self.malformed += 1;
            return;
        };
        let seen = &mut self.seen;
        seen.min_len = if seen.samples + seen.copies == 0 { h.len } else { seen.min_len.min(h.len) };
        seen.max_len = seen.max_len.max(h.len);
        seen.cut += (h.flags & FLAG_CUT != 0) as u64;
        seen.empty += (h.len == 0) as u64;
        match h.kind {
            KIND_COPY => seen.copies += 1,
            KIND_SAMPLE => seen.samples += 1,
            _ => {}
        }
        let regs = Regs { ip: h.ip, sp: h.sp, bp: h.bp };
        let u = self.unwinder.unwind(h.tgid, regs, stack, h.flags & FLAG_CUT != 0);
        let p = self.procs.entry(h.tgid).or_default();
        // A record proves the kernel copied: the mode was DWARF then.
        p.mode = MODE_DWARF;
        if let Some(o) = u.outcome {
            p.outcomes[outcome_index(o)] += 1;
        }
        p.bytes_needed.push(u.bytes_needed);
        match h.kind {
            KIND_COPY => {
                self.copies.insert(h.id, (u.addrs, u.skipped));
            }
            KIND_SAMPLE => {
                if h.ts != 0 {
                    let (tgid, tid, kernel_stack_id) = (h.tgid, h.tid, h.kernel_stack_id);
                    self.timed.push(TimedSample {
                        ts: h.ts,
                        tgid,
                        tid,
                        user: u.addrs.clone(),
                        kernel_stack_id,
                        skipped: u.skipped,
                    });
                }
                *self.samples.entry((h.tgid, h.tid, u.addrs, h.kernel_stack_id, u.skipped)).or_default() += 1
            }
            _ => self.malformed += 1,
        }
    }

    /// The addresses of copy `id` (None: not a copy id, or a copy never received).
    pub fn copy(&self, id: i32) -> Option<&[u64]> {
        self.copies.get(&id).map(|(a, _)| a.as_slice())
    }

    /// The callers copy `id`'s walk may have skipped (frames::skipped_callers; empty for a
    /// leaf with CFI, or not a copy).
    pub fn copy_skipped(&self, id: i32) -> LeafFix {
        self.copies.get(&id).map(|(_, l)| *l).unwrap_or_default()
    }

    /// The DWARF-mode samples with a time (--timeline).
    pub fn timed_samples(&self) -> &[TimedSample] {
        &self.timed
    }

    /// The on-CPU samples counted here.
    pub fn samples(&self) -> impl Iterator<Item = (&SampleKey, u64)> {
        self.samples.iter().map(|(k, &n)| (k, n))
    }

    /// Per-process accounting: `fp_stacks` (stacks walked by frame pointers, by TGID, counted
    /// by the drain), `unresolved` (copy ids referenced by the maps but never received) and
    /// `drops` (copies the ring had no room for), by TGID.
    pub fn stats(
        &self,
        fp_stacks: &BTreeMap<u32, u64>,
        unresolved: &BTreeMap<u32, u64>,
        drops: &BTreeMap<u32, u64>,
    ) -> BTreeMap<u32, UnwindStats> {
        let mut out = BTreeMap::new();
        let tgids = self.procs.keys().chain(fp_stacks.keys()).chain(unresolved.keys()).chain(drops.keys());
        for &tgid in tgids {
            if out.contains_key(&tgid) {
                continue;
            }
            let p = self.procs.get(&tgid);
            let o = p.map(|p| p.outcomes).unwrap_or_default();
            let mode = p.map(|p| p.mode).unwrap_or(MODE_FP);
            out.insert(
                tgid,
                UnwindStats {
                    mode: if mode == MODE_DWARF { "dwarf" } else { "fp" }.into(),
                    complete_cfi: o[0],
                    frame_pointer: fp_stacks.get(&tgid).copied().unwrap_or(0),
                    truncated_copy: o[1],
                    truncated_no_module: o[2],
                    truncated_cfi: o[3],
                    dropped: drops.get(&tgid).copied().unwrap_or(0),
                    bytes_needed_p99: p.map(|p| p99(&p.bytes_needed)).unwrap_or(0),
                    unresolved: unresolved.get(&tgid).copied().unwrap_or(0),
                },
            );
        }
        out
    }
}

/// Resolves user stack ids at drain: a copy's unwound addresses, or a frame-pointer walk's
/// frames from USER_STACKS; counts, by TGID, the stacks walked by frame pointers and the copy
/// ids never received.
pub struct UserStacks<'a> {
    walked: &'a HashMap<i32, Addrs>,
    ustacks: &'a Ustacks,
    fp: RefCell<BTreeMap<u32, u64>>,
    unresolved: RefCell<BTreeMap<u32, u64>>,
}

impl<'a> UserStacks<'a> {
    pub fn new(walked: &'a HashMap<i32, Addrs>, ustacks: &'a Ustacks) -> Self {
        Self { walked, ustacks, fp: Default::default(), unresolved: Default::default() }
    }

    /// The user stack `id` of `tgid`, which stands for `count` stacks taken (0: the same stack
    /// counted elsewhere, as a wakeup's blocked side or a slow call).
    pub fn get(&self, tgid: u32, id: i32, count: u64) -> Addrs {
        if is_copy_id(id) {
            return match self.ustacks.copy(id) {
                Some(a) => a.into(),
                None => {
                    *self.unresolved.borrow_mut().entry(tgid).or_default() += 1;
                    Addrs::default()
                }
            };
        }
        if id < 0 {
            return Addrs::default();
        }
        let Some(frames) = self.walked.get(&id) else { return Addrs::default() };
        if count > 0 {
            *self.fp.borrow_mut().entry(tgid).or_default() += count;
        }
        frames.clone()
    }

    /// The callers the walk of user stack `id` skipped, for the symbolizer's chain check: the
    /// probes' scan (`kernel`) for a frame-pointer walk, the copy's own for a copy.
    pub fn leaf(&self, id: i32, kernel: LeafFix) -> Leaf {
        if is_copy_id(id) {
            return self.ustacks.copy_skipped(id).into();
        }
        kernel.into()
    }

    /// (frame-pointer stacks, unresolved copy ids), by TGID.
    pub fn counts(&self) -> (BTreeMap<u32, u64>, BTreeMap<u32, u64>) {
        (self.fp.borrow().clone(), self.unresolved.borrow().clone())
    }
}

/// Appends the on-CPU samples counted in userspace to the kernel-counted ones (`kernel`
/// resolves a kernel stack id).
pub fn add_counted_samples(samples: &mut Vec<RawSample>, ustacks: &Ustacks, kernel: impl Fn(i32) -> Vec<u64>) {
    samples.extend(ustacks.samples().map(|((tgid, tid, addrs, ks, skipped), count)| RawSample {
        tgid: *tgid,
        tid: *tid,
        user: addrs.clone(),
        kernel: kernel(*ks),
        count,
        leaf: (*skipped).into(),
    }));
}

/// Up to `n` bytes of `pid`'s memory from `addr`, fewer where a page is unmapped (the top of
/// the stack mapping); None when not one byte is readable.
fn read_stack(pid: u32, addr: u64, n: u32) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; n as usize];
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: one local iovec over `buf`, which outlives the call; the remote one is only read.
    let got = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if got <= 0 {
        return None;
    }
    buf.truncate(got as usize);
    Some(buf)
}

fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::Complete => 0,
        Outcome::CopyExhausted => 1,
        Outcome::NoModule => 2,
        Outcome::CfiError => 3,
    }
}

/// Whether a user stack id names a copy (see tracer_common::ustack::COPY_ID_BIT).
pub fn is_copy_id(id: i32) -> bool {
    id >= 0 && id & COPY_ID_BIT != 0
}

/// The 99th percentile (nearest rank) of `v`; 0 for none.
pub fn p99(v: &[u32]) -> u32 {
    if v.is_empty() {
        return 0;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    // Nearest rank: the smallest value with at least 99 % of the values at or below it.
    let rank = (s.len() * 99).div_ceil(100);
    s[rank.max(1) - 1]
}

#[cfg(test)]
#[path = "ustacks_tests.rs"]
mod tests;
