//! Threads already blocked in a syscall when rtrace attached: the probes never see such a call
//! start, and the thread never switches out during the session — yet that is exactly what a
//! user attaching to a hung CLI needs to see. At attach we read /proc/PID/task/TID/syscall
//! (number, arguments, sp, pc) and /proc/PID/task/TID/stack (kernel frames); the user stack is
//! walked from sp through /proc/PID/mem (a read of the target's memory: no ptrace, no stop, no
//! signal). At the end, a call is reported as in flight since before attach only if the thread
//! provably never returned from it: the same call (number and arguments) in /proc, its
//! context-switch counts unchanged (it was never scheduled in: a thread that returned, ran
//! and blocked again switched out at least once more), and no syscall entry seen by the
//! probes for that thread (a loop like bash's `wait4` or python's `poll` re-enters the same
//! call with the same arguments: /proc alone cannot tell the two apart).
//!
//! The same reading gives the stacks of threads blocked at the end whose stacks the probes
//! deferred (see tracer_common::sched::OffStart): they never came back to have them taken.
use std::{fs::File, os::unix::fs::FileExt};

use std::collections::HashMap;

use tracer_common::thread::TaskRegs;

use crate::{
    capture::{Leaf, Mapping},
    procfs::{self, parse_syscall},
};

#[derive(Clone, Debug)]
pub struct Blocked {
    pub tgid: u32,
    pub tid: u32,
    pub nr: i64,
    pub args: [u64; 6],
    pub state: char,
    /// pc first, then return addresses, outermost last.
    pub user: Vec<u64>,
    /// Return addresses found between sp and the first frame (callers of frameless functions),
    /// as the probes report them: the symbolizer inserts them after checking the chain.
    pub leaf: Leaf,
    /// Kernel frames, innermost first, as /proc/PID/task/TID/stack names them.
    pub kernel_names: Vec<String>,
    /// (voluntary, nonvoluntary) context switches at the reading, from
    /// /proc/PID/task/TID/status; None when unreadable.
    pub switches: Option<(u64, u64)>,
    /// The saved user (sp, bp) the walk started from (bp 0: unknown), for a CFI unwind of a
    /// DWARF-mode process (collect/ustacks.rs).
    pub sp: u64,
    pub bp: u64,
}

/// What /proc shows of a thread at the end, to compare with its `Blocked` reading at attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// The call it is in (None: running or not in a syscall).
    pub call: Option<(i64, [u64; 6])>,
    pub state: char,
    pub switches: Option<(u64, u64)>,
}

/// Whether the call read at attach is provably the one the thread is in now. `entered`: the
/// probes saw the thread enter a syscall during the session (then the old call returned).
/// Unknown switch counts prove nothing, so they fail the test.
pub fn never_returned(b: &Blocked, now: &Now, entered: bool) -> bool {
    !entered
        && matches!(now.state, 'S' | 'D')
        && now.call == Some((b.nr, b.args))
        && b.switches.is_some()
        && now.switches == b.switches
}

/// "voluntary_ctxt_switches:\t12" and "nonvoluntary_ctxt_switches:\t3" of a status file.
pub fn parse_switches(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| procfs::status_field(status, name)?.parse::<u64>().ok();
    Some((field("voluntary_ctxt_switches")?, field("nonvoluntary_ctxt_switches")?))
}

fn switches(pid: u32, tid: u32) -> Option<(u64, u64)> {
    parse_switches(&std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?)
}

/// "[<0>] futex_wait_queue+0x5a/0xa0" → "futex_wait_queue".
pub fn parse_kernel_stack(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|f| f.split('+').next().unwrap_or(f).to_owned())
        .collect()
}

pub fn task_ids(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// Every thread of `pids` blocked in a syscall now (state S or D).
pub fn scan(pids: &[u32], regs: &HashMap<u32, TaskRegs>, maps: impl Fn(u32) -> Vec<Mapping>) -> Vec<Blocked> {
    let threads: Vec<(u32, u32)> =
        pids.iter().flat_map(|&pid| task_ids(pid).into_iter().map(move |t| (pid, t))).collect();
    scan_threads(&threads, regs, maps)
}

/// Those of `threads` (tgid, tid) blocked in a syscall now (state S or D). `regs`: saved user
/// registers from the task iterator (rt_task_regs), for the frame pointer /proc does not show.
pub fn scan_threads(
    threads: &[(u32, u32)],
    regs: &HashMap<u32, TaskRegs>,
    maps: impl Fn(u32) -> Vec<Mapping>,
) -> Vec<Blocked> {
    let mut out = Vec::new();
    let mut open: Option<(u32, Option<File>, Vec<Mapping>)> = None;
    for &(pid, tid) in threads {
        if open.as_ref().is_none_or(|(p, _, _)| *p != pid) {
            open = Some((pid, File::open(format!("/proc/{pid}/mem")).ok(), maps(pid)));
        }
        let (_, mem, exec_maps) = open.as_ref().unwrap();
        let Some((state, _)) = procfs::state_and_ppid(tid) else { continue };
        if !matches!(state, 'S' | 'D') {
            continue;
        }
        // Before the call: had the thread returned in between, the count differs at the end.
        let switches = switches(pid, tid);
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")) else { continue };
        let Some((nr, args, sp, pc)) = parse_syscall(&text) else { continue };
        // The iterator's bp, if it read the same saved registers (the thread may have moved on
        // between the two readings).
        let bp = regs.get(&tid).filter(|r| r.sp == sp && r.ip == pc).map_or(0, |r| r.bp);
        let kernel_names = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stack"))
            .map(|t| parse_kernel_stack(&t))
            .unwrap_or_default();
        let (user, leaf) = match mem {
            Some(m) => walk(&|a| read_u64(m, a), &|a, n| read_bytes(m, a, n), exec_maps, sp, pc, bp),
            None => (vec![pc], Leaf::default()),
        };
        out.push(Blocked { tgid: pid, tid, nr, args, state, user, leaf, kernel_names, switches, sp, bp });
    }
    out
}

/// Whether the thread is still in the very same call (see `never_returned`). `entered`: the
/// probes saw it enter a syscall since attach.
pub fn still_blocked(b: &Blocked, entered: bool) -> bool {
    if entered {
        return false;
    }
    // Switches first: a return after this reading changes the call or the state read next.
    let switches = switches(b.tgid, b.tid);
    let call = std::fs::read_to_string(format!("/proc/{}/task/{}/syscall", b.tgid, b.tid))
        .ok()
        .and_then(|t| parse_syscall(&t))
        .map(|(nr, args, _, _)| (nr, args));
    let state = procfs::state_and_ppid(b.tid).map_or('?', |s| s.0);
    // Blocked threads' syscall file is stable; re-read the switches so a thread that woke
    // between the readings does not pass.
    never_returned(b, &Now { call, state, switches }, false) && self::switches(b.tgid, b.tid) == switches
}

fn read_u64(m: &File, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    m.read_exact_at(&mut b, addr).ok()?;
    Some(u64::from_le_bytes(b))
}

fn read_bytes(m: &File, addr: u64, n: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; n];
    m.read_exact_at(&mut b, addr).ok()?;
    Some(b)
}

/// If `ret` follows an x86_64 call instruction in executable code (the test the kernel side
/// uses to recover skipped callers): the call's target for a direct call, 0 for an indirect
/// one.
fn callee_of(read: &dyn Fn(u64, usize) -> Option<Vec<u8>>, maps: &[Mapping], ret: u64) -> Option<u64> {
    if ret < 8 || !maps.iter().any(|m| m.start <= ret && ret < m.end) {
        return None;
    }
    crate::symbolize::chain::callee(&read(ret - 8, 8)?, ret)
}

/// The user stack from (sp, pc), and bp when the task iterator read it (0: unknown).
/// Without bp: scan up from sp until a slot is a frame base (a saved bp, then a return
/// address) and follow the frame-pointer chain from there — a guess, which a stale pair in a
/// frame's locals can mislead. Return addresses below the first frame (callers of frameless
/// functions — or stale values in a frame's locals) are not trusted either: they come back
/// apart, like the probes' LeafFix, for the symbolizer's chain check.
pub fn walk(
    read: &dyn Fn(u64) -> Option<u64>,
    code: &dyn Fn(u64, usize) -> Option<Vec<u8>>,
    maps: &[Mapping],
    sp: u64,
    pc: u64,
    bp: u64,
) -> (Vec<u64>, Leaf) {
    const SCAN_WORDS: u64 = 64;
    const MAX_FRAMES: usize = 128;
    let known_bp = (bp > sp && bp - sp < 1 << 16 && bp.is_multiple_of(8)).then_some(bp);
    let mut frames = vec![pc];
    let mut leaf = Leaf::default();
    let mut found = 0;
    let mut fp = known_bp;
    for i in 0..SCAN_WORDS {
        let slot = sp + i * 8;
        if known_bp.is_some_and(|bp| slot >= bp) {
            break;
        }
        let Some(w) = read(slot) else { break };
        // A frame base: this slot holds the caller's saved bp (pointing further up, within a
        // plausible frame size) and the next one a return address. From here the
        // frame-pointer chain takes over.
        if known_bp.is_none() && w > slot && w - slot < 1 << 16 && w % 8 == 0 {
            if let Some(r) = read(slot + 8) {
                if callee_of(code, maps, r).is_some() {
                    frames.push(r);
                    fp = Some(w);
                    break;
                }
            }
        }
        if let Some(callee) = callee_of(code, maps, w) {
            if found < leaf.rets.len() {
                leaf.rets[found] = w;
                leaf.callees[found] = callee;
                found += 1;
            }
        }
    }
    let mut seen = 0;
    while let Some(f) = fp {
        if frames.len() >= MAX_FRAMES || seen > MAX_FRAMES {
            break;
        }
        seen += 1;
        let (Some(next), Some(ret)) = (read(f), read(f + 8)) else { break };
        if ret == 0 || callee_of(code, maps, ret).is_none() {
            break;
        }
        frames.push(ret);
        fp = (next != 0 && next != f).then_some(next);
    }
    (frames, leaf)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn parses_proc_syscall_and_stack() {
        let (nr, args, sp, pc) =
            parse_syscall("0 0x3 0x7f3bb748f000 0x20000 0x7f3bb7522b60 0xffffffff 0x0 0x7ffc67c9dc48 0x7f3bb760b2ad\n")
                .unwrap();
        assert_eq!((nr, args[0], args[2], sp, pc), (0, 3, 0x20000, 0x7ffc67c9dc48, 0x7f3bb760b2ad));
        assert!(parse_syscall("running\n").is_none());
        assert!(parse_syscall("-1 0x7ffc 0x401000\n").is_none());
        let k = parse_kernel_stack("[<0>] pipe_read+0x2f3/0x450\n[<0>] vfs_read+0x2a1/0x2d0\n");
        assert_eq!(k, ["pipe_read", "vfs_read"]);
    }

    fn blocked(nr: i64, args: [u64; 6], switches: Option<(u64, u64)>) -> Blocked {
        Blocked {
            tgid: 10,
            tid: 11,
            nr,
            args,
            state: 'S',
            user: vec![],
            leaf: Leaf::default(),
            kernel_names: vec![],
            switches,
            sp: 0,
            bp: 0,
        }
    }

    #[test]
    fn parses_context_switch_counts() {
        let status =
            "Name:\tbash\nState:\tS (sleeping)\nvoluntary_ctxt_switches:\t152\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(parse_switches(status), Some((152, 7)));
        assert_eq!(parse_switches("Name:\tbash\n"), None);
    }

    /// bash's `while :; do sleep 0.3; done` is in wait4(-1, &status, 0, NULL) at attach and
    /// again at the end — a new call with the same arguments. Only an unchanged switch count
    /// and no entry seen by the probes prove it is the same call.
    #[test]
    fn same_call_is_pre_attach_only_if_the_thread_never_ran() {
        let wait4 = (61, [u64::MAX, 0x7ffd_1000, 0, 0, 0, 0]);
        let b = blocked(wait4.0, wait4.1, Some((40, 2)));
        let now = |switches| Now { call: Some(wait4), state: 'S', switches };
        assert!(never_returned(&b, &now(Some((40, 2))), false));
        // It ran since attach (returned, forked the next sleep, waited again).
        assert!(!never_returned(&b, &now(Some((49, 2))), false));
        assert!(!never_returned(&b, &now(Some((40, 3))), false));
        // The probes saw it enter a call.
        assert!(!never_returned(&b, &now(Some((40, 2))), true));
        // Counts unknown at attach or at the end prove nothing.
        assert!(!never_returned(&blocked(wait4.0, wait4.1, None), &now(None), false));
        assert!(!never_returned(&b, &now(None), false));
        // Another call, or not blocked any more.
        assert!(!never_returned(&b, &Now { call: Some((7, wait4.1)), ..now(Some((40, 2))) }, false));
        assert!(!never_returned(&b, &Now { call: None, state: 'R', switches: Some((40, 2)) }, false));
    }

    /// A stack in memory: pc in a frameless leaf; [sp] = return into `middle`; then middle's
    /// frame (saved bp → outer frame, return into outer); outer's frame (bp 0 ends).
    #[test]
    fn walks_frameless_leaf_then_frame_pointers() {
        let code_lo = 0x1000;
        let maps = vec![Mapping { start: code_lo, end: 0x9000, offset: 0, path: "/bin/p".into(), build_id: None }];
        // Return addresses are placed right after an E8 call in the fake code.
        let mut code: HashMap<u64, u8> = HashMap::new();
        for ret in [0x2005u64, 0x3005, 0x4005] {
            code.insert(ret - 5, 0xE8);
        }
        let mut mem: HashMap<u64, u64> = HashMap::new();
        let sp = 0x7000_0000;
        mem.insert(sp, 0x2005); // return into middle (leaf is frameless)
        mem.insert(sp + 8, 42); // a local
        mem.insert(sp + 16, sp + 64); // middle's saved bp → outer's frame
        mem.insert(sp + 24, 0x3005); // return into outer
        mem.insert(sp + 64, 0); // outer's saved bp: end of chain
        mem.insert(sp + 72, 0x4005); // return into main
        let read = |a: u64| Some(*mem.get(&a).unwrap_or(&0));
        let code_read = |a: u64, n: usize| Some((a..a + n as u64).map(|x| *code.get(&x).unwrap_or(&0x90)).collect());
        let (frames, leaf) = walk(&read, &code_read, &maps, sp, 0x1500, 0);
        assert_eq!(frames, [0x1500, 0x3005, 0x4005]);
        // The frameless leaf's caller comes apart, with its call's target (rel32 0x90909090
        // from the fake code's nop fill), for the symbolizer's chain check.
        assert_eq!(leaf.rets, [0x2005, 0, 0]);
        assert_eq!(leaf.callees, [0x2005u64.wrapping_add(0x9090_9090u32 as i32 as i64 as u64), 0, 0]);
    }

    /// A stale (saved bp, return address) pair in a frame's locals misleads the walk without
    /// bp; with the bp the call blocked with (from the task iterator), the real chain is followed and
    /// the stale return address is only a candidate for the symbolizer's chain check.
    #[test]
    fn known_bp_skips_a_stale_frame_base() {
        let maps = vec![Mapping { start: 0x1000, end: 0x9000, offset: 0, path: "/bin/p".into(), build_id: None }];
        let mut code: HashMap<u64, u8> = HashMap::new();
        for ret in [0x2005u64, 0x3005, 0x4005, 0x5005] {
            code.insert(ret - 5, 0xE8);
        }
        let sp = 0x7000_0000u64;
        let mut mem: HashMap<u64, u64> = HashMap::new();
        mem.insert(sp, 0x2005); // return into the frameless leaf's caller
        mem.insert(sp + 8, sp + 48); // stale: looks like a saved bp…
        mem.insert(sp + 16, 0x5005); // …followed by a return address
        mem.insert(sp + 32, sp + 64); // the real frame: saved bp at bp = sp + 32
        mem.insert(sp + 40, 0x3005);
        mem.insert(sp + 64, 0);
        mem.insert(sp + 72, 0x4005);
        let read = |a: u64| Some(*mem.get(&a).unwrap_or(&0));
        let code_read = |a: u64, n: usize| Some((a..a + n as u64).map(|x| *code.get(&x).unwrap_or(&0x90)).collect());
        let (guessed, _) = walk(&read, &code_read, &maps, sp, 0x1500, 0);
        assert_eq!(guessed[1], 0x5005, "the guess takes the stale pair: {guessed:x?}");
        let (frames, leaf) = walk(&read, &code_read, &maps, sp, 0x1500, sp + 32);
        assert_eq!(frames, [0x1500, 0x3005, 0x4005]);
        assert_eq!(leaf.rets, [0x2005, 0x5005, 0]);
    }
}
