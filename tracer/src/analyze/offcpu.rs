//! Off-CPU analysis: blocked time by stack and state, the most common waker of each blocked
//! stack, and the wall-clock merge of on-CPU and off-CPU time.
use std::collections::hash_map::Entry;

use foldhash::{HashMap, HashMapExt};

use serde::{Deserialize, Serialize};

use crate::{
    analyze::cpu::{fold, CpuProfile},
    capture::OffState,
    symbolize::{Frame, FrameKind, Frames},
};

/// One (stack, state) of blocked time, threads merged.
#[derive(Clone, Debug, PartialEq)]
pub struct OffEntry {
    pub frames: Frames,
    pub state: OffState,
    pub total_ns: u64,
    pub count: u64,
    pub max_ns: u64,
    pub in_flight: bool,
}

/// Blocked time of one blocked stack attributed to one waker.
#[derive(Clone, Debug, PartialEq)]
pub struct WakeEntry {
    pub blocked: Frames,
    pub waker: Frames,
    pub waker_comm: String,
    pub waker_pid: u32,
    pub waker_tid: u32,
    pub total_ns: u64,
    pub count: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct OffcpuProfile {
    pub entries: Vec<OffEntry>,
    pub wakeups: Vec<WakeEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ByState {
    pub sleep_us: u64,
    pub disk_us: u64,
    pub runqueue_us: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Waker {
    pub comm: String,
    pub pid: u32,
    pub tid: u32,
    /// Root first, as in the flame graphs.
    pub frames: Vec<String>,
    /// Innermost function of the waker's own code (not libc, not the Go runtime).
    pub function: Option<String>,
    pub total_us: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OffTop {
    /// Root first (the process name is the first frame).
    pub stack: Vec<String>,
    /// Innermost user-space function (often a libc or Go runtime wrapper).
    pub leaf_function: Option<String>,
    /// Innermost function of the program's own code (not libc, not the Go runtime).
    pub caller_function: Option<String>,
    /// The system call it was blocked in, when the kernel stack shows one.
    pub syscall: Option<String>,
    pub state: OffState,
    pub total_us: u64,
    pub count: u64,
    pub max_us: u64,
    /// Some thread was still blocked here when the session ended.
    pub in_flight: bool,
    pub top_waker: Option<Waker>,
    /// A Go thread with nothing to run after a goroutine parked (see analyze::gopark).
    pub go_park: Option<super::gopark::GoPark>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OffcpuSection {
    pub total_us: u64,
    pub by_state: ByState,
    /// Shortest interval recorded (--min-block).
    pub min_block_us: u64,
    pub top: Vec<OffTop>,
}

/// Pseudo-frame appended to off-CPU stacks in folded output, so states stay apart.
pub fn state_frame(state: OffState) -> Frame {
    Frame { kind: FrameKind::Process, function: format!("[{}]", state.name()).into(), module: "".into(), offset: 0 }
}

/// The syscall a kernel stack is in: the frame after the syscall entry, with the
/// per-architecture prefixes removed (`__x64_sys_read`, `ksys_read`, `__se_sys_read` → read).
pub fn syscall_of(frames: &[Frame]) -> Option<String> {
    let k: Vec<&Frame> = frames.iter().filter(|f| f.kind == FrameKind::Kernel).collect();
    let entry = k.iter().position(|f| {
        &*f.function == "do_syscall_64" || &*f.function == "invoke_syscall" || &*f.function == "x64_sys_call"
    })?;
    for f in &k[entry + 1..] {
        if &*f.function == "x64_sys_call" {
            continue;
        }
        for p in ["__x64_sys_", "__ia32_sys_", "__arm64_sys_", "__se_sys_", "__do_sys_", "ksys_", "__sys_", "do_sys_"] {
            if let Some(name) = f.function.strip_prefix(p) {
                return Some(name.to_owned());
            }
        }
        return None;
    }
    None
}

fn names(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(Frame::folded_name).collect()
}

/// A stack as a map key: hashed by its frames' offsets alone (cheap, and equal stacks have
/// equal offsets), compared in full (a shared list compares by pointer first).
#[derive(PartialEq, Eq)]
struct Key(Frames);

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_usize(self.0.len());
        for f in self.0.iter() {
            h.write_u64(f.offset);
        }
    }
}

impl OffcpuProfile {
    /// Merges entries that differ only by thread; in (stack, state) order, waker entries in
    /// (blocked, waker, waker comm, pid, tid) order.
    pub fn merge(entries: Vec<OffEntry>, wakeups: Vec<WakeEntry>) -> Self {
        let mut m: HashMap<(Key, OffState), OffEntry> = HashMap::new();
        for e in entries {
            match m.entry((Key(e.frames.clone()), e.state)) {
                Entry::Occupied(mut o) => {
                    let slot = o.get_mut();
                    slot.total_ns += e.total_ns;
                    slot.count += e.count;
                    slot.max_ns = slot.max_ns.max(e.max_ns);
                    slot.in_flight |= e.in_flight;
                }
                Entry::Vacant(v) => {
                    v.insert(e);
                }
            }
        }
        let mut entries: Vec<OffEntry> = m.into_values().collect();
        entries.sort_unstable_by(|a, b| a.frames.cmp(&b.frames).then(a.state.cmp(&b.state)));
        // (blocked stack, waker stack, waker comm, waker pid, waker tid)
        type WakeId = (Key, Key, String, u32, u32);
        let mut w: HashMap<WakeId, WakeEntry> = HashMap::new();
        for e in wakeups {
            let k = (Key(e.blocked.clone()), Key(e.waker.clone()), e.waker_comm.clone(), e.waker_pid, e.waker_tid);
            match w.entry(k) {
                Entry::Occupied(mut o) => {
                    o.get_mut().total_ns += e.total_ns;
                    o.get_mut().count += e.count;
                }
                Entry::Vacant(v) => {
                    v.insert(e);
                }
            }
        }
        let mut wakeups: Vec<WakeEntry> = w.into_values().collect();
        fn id(e: &WakeEntry) -> (&Frames, &Frames, &String, u32, u32) {
            (&e.blocked, &e.waker, &e.waker_comm, e.waker_pid, e.waker_tid)
        }
        wakeups.sort_unstable_by(|a, b| id(a).cmp(&id(b)));
        Self { entries, wakeups }
    }

    pub fn by_state(&self) -> ByState {
        let sum = |s: OffState| self.entries.iter().filter(|e| e.state == s).map(|e| e.total_ns).sum::<u64>() / 1000;
        ByState { sleep_us: sum(OffState::Sleep), disk_us: sum(OffState::Disk), runqueue_us: sum(OffState::Runqueue) }
    }

    pub fn total_us(&self) -> u64 {
        self.entries.iter().map(|e| e.total_ns).sum::<u64>() / 1000
    }

    /// offcpu.folded: stacks root first with a state leaf, in microseconds.
    pub fn folded(&self) -> Vec<String> {
        let states: Vec<Frame> = self.entries.iter().map(|e| state_frame(e.state)).collect();
        fold(self.entries.iter().zip(&states).map(|(e, s)| (e.frames.iter().chain([s]), e.total_ns / 1000)))
    }

    /// wakeups.folded, as offwaketime prints it: blocked stack root→leaf, `--`, then the waker
    /// stack leaf→root ending with the waker's name, in microseconds.
    pub fn wakeups_folded(&self) -> Vec<String> {
        let sep = Frame { kind: FrameKind::Process, function: "--".into(), module: "".into(), offset: 0 };
        let comms: Vec<Frame> = self.wakeups.iter().map(|w| Frame::process(&w.waker_comm)).collect();
        fold(self.wakeups.iter().zip(&comms).map(|(w, comm)| {
            // The waker's frames minus its process root, leaf first, then its name.
            let frames = w.blocked.iter().chain([&sep]).chain(w.waker.iter().skip(1).rev()).chain([comm]);
            (frames, w.total_ns / 1000)
        }))
    }

    /// Most blocked-time waker of a blocked stack.
    fn top_waker(&self, frames: &Frames) -> Option<Waker> {
        self.wakeups.iter().filter(|w| w.blocked == *frames).max_by_key(|w| w.total_ns).map(|w| Waker {
            comm: w.waker_comm.clone(),
            pid: w.waker_pid,
            tid: w.waker_tid,
            frames: names(&w.waker),
            function: crate::symbolize::caller_function(&w.waker),
            total_us: w.total_ns / 1000,
        })
    }

    /// The `n` (stack, state) pairs with the most blocked time.
    pub fn top(&self, n: usize) -> Vec<OffTop> {
        let mut v: Vec<&OffEntry> = self.entries.iter().collect();
        v.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then_with(|| a.frames.cmp(&b.frames)));
        v.into_iter()
            .take(n)
            .map(|e| OffTop {
                stack: names(&e.frames),
                leaf_function: crate::symbolize::leaf_function(&e.frames),
                caller_function: crate::symbolize::caller_function(&e.frames),
                syscall: syscall_of(&e.frames),
                state: e.state,
                total_us: e.total_ns / 1000,
                count: e.count,
                max_us: e.max_ns / 1000,
                in_flight: e.in_flight,
                top_waker: if e.state == OffState::Runqueue { None } else { self.top_waker(&e.frames) },
                go_park: super::gopark::go_park(&e.frames),
            })
            .collect()
    }
}

/// wall.folded: on-CPU samples converted to time by the sampling period, and off-CPU time with
/// its state leaf, both in microseconds, in one set of stacks, sorted.
pub fn wall_folded(cpu: &CpuProfile, off: &OffcpuProfile, frequency_hz: u64) -> Vec<String> {
    let on = wall_on_cpu(&cpu.folded(), frequency_hz);
    let blocked = off.folded();
    wall_lines(&on, &blocked).map(str::to_owned).collect()
}

/// wall.folded's on-CPU lines from cpu.folded's: each stack with an `[on-cpu]` leaf, its
/// samples as microseconds, sorted by stack like the folded files.
pub fn wall_on_cpu(cpu_folded: &[String], frequency_hz: u64) -> Vec<String> {
    let period_us = 1_000_000 / frequency_hz.max(1);
    let mut lines: Vec<String> = cpu_folded
        .iter()
        .filter_map(|l| {
            let (stack, n) = l.rsplit_once(' ')?;
            Some(format!("{stack};[on-cpu] {}", n.parse::<u64>().ok()? * period_us))
        })
        .collect();
    lines.sort_unstable_by(|a, b| stack_of(a).cmp(stack_of(b)));
    lines
}

/// wall.folded's lines in order: the on-CPU ones (`wall_on_cpu`) merged with offcpu.folded's,
/// both sorted (no stack is in both: their leaves differ), without copying either.
pub fn wall_lines<'a>(on: &'a [String], off: &'a [String]) -> impl Iterator<Item = &'a str> {
    let (mut on, mut off) = (on.iter().peekable(), off.iter().peekable());
    std::iter::from_fn(move || {
        let next = match (on.peek(), off.peek()) {
            (Some(a), Some(b)) if stack_of(a) <= stack_of(b) => on.next(),
            (Some(_), Some(_)) | (None, _) => off.next(),
            (Some(_), None) => on.next(),
        };
        next.map(String::as_str)
    })
}

/// A folded line's stack (what the folded files are sorted by).
fn stack_of(line: &str) -> &str {
    line.rsplit_once(' ').map_or(line, |(s, _)| s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::cpu::tests::{frame, stack};

    fn frames(names: &[&str]) -> Frames {
        stack(1, names, 0).frames
    }

    fn entry(names: &[&str], state: OffState, ns: u64) -> OffEntry {
        OffEntry { frames: frames(names), state, total_ns: ns, count: 1, max_ns: ns, in_flight: false }
    }

    fn sample() -> OffcpuProfile {
        let read = [
            "main",
            "reader",
            "read",
            "entry_SYSCALL_64_[k]",
            "do_syscall_64_[k]",
            "ksys_read_[k]",
            "pipe_read_[k]",
            "schedule_[k]",
        ];
        OffcpuProfile::merge(
            vec![
                entry(&read, OffState::Sleep, 600_000_000),
                entry(&read, OffState::Sleep, 400_000_000), // another thread, same stack
                entry(&read, OffState::Runqueue, 2_000_000),
                entry(&["main", "spin"], OffState::Runqueue, 500_000_000),
            ],
            vec![
                WakeEntry {
                    blocked: frames(&read),
                    waker: frames(&["main", "writer", "write"]),
                    waker_comm: "w".into(),
                    waker_pid: 1,
                    waker_tid: 2,
                    total_ns: 900_000_000,
                    count: 1,
                },
                WakeEntry {
                    blocked: frames(&read),
                    waker: frames(&["other"]),
                    waker_comm: "o".into(),
                    waker_pid: 9,
                    waker_tid: 9,
                    total_ns: 100_000_000,
                    count: 1,
                },
            ],
        )
    }

    #[test]
    fn merges_threads_and_splits_states() {
        let p = sample();
        assert_eq!(p.entries.len(), 3);
        assert_eq!(p.by_state(), ByState { sleep_us: 1_000_000, disk_us: 0, runqueue_us: 502_000 });
        assert_eq!(p.total_us(), 1_502_000);
    }

    #[test]
    fn top_names_syscall_leaf_and_waker() {
        let t = sample().top(5);
        assert_eq!(t[0].state, OffState::Sleep);
        assert_eq!(t[0].total_us, 1_000_000);
        assert_eq!(t[0].count, 2);
        assert_eq!(t[0].max_us, 600_000);
        assert_eq!(t[0].syscall.as_deref(), Some("read"));
        assert_eq!(t[0].leaf_function.as_deref(), Some("read"));
        let w = t[0].top_waker.as_ref().unwrap();
        assert_eq!((w.comm.as_str(), w.pid, w.tid, w.total_us), ("w", 1, 2, 900_000));
        assert_eq!(w.frames, ["prog", "main", "writer", "write"]);
        assert_eq!(t[1].stack, ["prog", "main", "spin"]);
        assert_eq!(t[1].syscall, None);
        assert!(t[1].top_waker.is_none());
    }

    #[test]
    fn folded_outputs() {
        let p = sample();
        assert_eq!(p.folded()[0], "prog;main;reader;read;entry_SYSCALL_64_[k];do_syscall_64_[k];ksys_read_[k];pipe_read_[k];schedule_[k];[runqueue] 2000");
        assert_eq!(p.folded()[2], "prog;main;spin;[runqueue] 500000");
        assert_eq!(p.wakeups_folded()[0], "prog;main;reader;read;entry_SYSCALL_64_[k];do_syscall_64_[k];ksys_read_[k];pipe_read_[k];schedule_[k];--;other;o 100000");
        assert_eq!(
            p.wakeups_folded()[1],
            "prog;main;reader;read;entry_SYSCALL_64_[k];do_syscall_64_[k];ksys_read_[k];pipe_read_[k];schedule_[k];--;write;writer;main;w 900000"
        );
    }

    #[test]
    fn wall_merges_cpu_time_and_blocked_time() {
        let cpu = CpuProfile::from_stacks(&[stack(1, &["main", "hash"], 40)]);
        let off = OffcpuProfile::merge(vec![entry(&["main", "read"], OffState::Sleep, 600_000_000)], vec![]);
        // 40 samples at 100 Hz = 400 ms on CPU; 600 ms blocked.
        assert_eq!(wall_folded(&cpu, &off, 100), ["prog;main;hash;[on-cpu] 400000", "prog;main;read;[sleep] 600000"]);
    }

    #[test]
    fn syscall_names() {
        let f = |n: &[&str]| frames(n);
        assert_eq!(
            syscall_of(&f(&["x", "do_syscall_64_[k]", "__x64_sys_nanosleep_[k]", "hrtimer_nanosleep_[k]"])).as_deref(),
            Some("nanosleep")
        );
        assert_eq!(
            syscall_of(&f(&["x", "do_syscall_64_[k]", "x64_sys_call_[k]", "__x64_sys_futex_[k]"])).as_deref(),
            Some("futex")
        );
        assert_eq!(syscall_of(&f(&["x", "schedule_[k]"])), None);
        let _ = frame(FrameKind::User, "unused");
    }
}
