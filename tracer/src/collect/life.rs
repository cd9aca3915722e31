//! Turns the kernel's lifecycle records into `lifecycle::LifeEvent`s, and reads what the ledger
//! needs from /proc: descendants at attach, every tracked process at the end, and which pipe
//! ends the target and its descendants hold (sampled while children die, since the holder of a
//! pipe may be gone by the end).
use std::collections::{BTreeSet, HashMap};

use tracer_common::process::{
    ExecArgs, ExecFailed, LifeEvent as Raw, ARGS_CHUNK, ARGS_LEN, EVENT_EXEC, EVENT_EXIT, EVENT_FORK, EVENT_FREE,
    EVENT_PIDFD, EVENT_SIGNAL, EVENT_SIGNAL_DELIVER, EVENT_WAIT,
};

use crate::{
    lifecycle::{ExitInfo, LifeEvent, Lifecycle, PipeEnd, ProcSnapshot, WaitCall, WaitTarget},
    procfs,
};

use super::cstr;

pub struct LifeCollector {
    start_mono: u64,
    pub life: Lifecycle,
    /// Every process the ledger knows: the root, descendants at attach, forked ones.
    known: BTreeSet<u32>,
    exited: BTreeSet<u32>,
    /// Each pipe end seen, by (pid, fd, inode, write end): its index in `life.pipes`.
    pipes_seen: std::collections::BTreeMap<(u32, i32, u64, bool), usize>,
    /// argv read by the kernel at exec, until the EXEC record that follows it.
    exec_args: HashMap<u32, Vec<String>>,
    /// Pid namespace numbers, to give waits inside a container host pids.
    ns: super::pidns::PidNs,
    /// Which root each process belongs to (one root but in a watch set, roots.rs).
    pub owners: super::roots::Owners,
    /// Descendants freed since the last `take_freed` (a watch set folds them).
    freed: Vec<u32>,
}

pub fn snapshot(pid: u32) -> Option<ProcSnapshot> {
    let st = procfs::stat(pid)?;
    let syscall = matches!(st.state, 'S' | 'D').then(|| procfs::current_syscall(pid)).flatten();
    Some(ProcSnapshot {
        pid,
        ppid: st.ppid,
        state: st.state,
        comm: procfs::comm(pid).unwrap_or_default(),
        cmdline: procfs::cmdline(pid),
        exit_status: st.exit_status,
        syscall,
    })
}

impl LifeCollector {
    /// At attach: the root and the descendants it already has (zombies included).
    pub fn new(root: u32, start_mono: u64, existing: &[u32]) -> Self {
        let mut life = Lifecycle { root_pid: root, ..Default::default() };
        life.initial = existing.iter().filter_map(|&p| snapshot(p)).collect();
        let known = std::iter::once(root).chain(existing.iter().copied()).collect();
        let mut ns = super::pidns::PidNs::default();
        for p in &life.initial {
            ns.on_fork(p.pid, p.ppid);
        }
        let mut owners = super::roots::Owners::default();
        owners.adopt(root, existing, 0);
        Self {
            freed: Vec::new(),
            owners,
            ns,
            start_mono,
            life,
            known,
            exited: BTreeSet::new(),
            pipes_seen: Default::default(),
            exec_args: HashMap::new(),
        }
    }

    fn rel(&self, ts: u64) -> u64 {
        ts.saturating_sub(self.start_mono)
    }

    /// A call's start: 0 only when unknown (started before the probes saw it). A start the
    /// probes saw is at least 1: with `rtrace -- CMD` the command runs (attached already) a
    /// little before the session clock starts, and its first wait must not read as "since
    /// before attach".
    fn rel_start(&self, ts: u64) -> u64 {
        if ts == 0 {
            0
        } else {
            self.rel(ts).max(1)
        }
    }

    /// A watch set's new root and the descendants it has (roots.rs), adopted now.
    pub fn adopt(&mut self, root: u32, existing: &[u32], now_mono: u64) {
        let at = self.rel(now_mono);
        for p in existing.iter().filter_map(|&p| snapshot(p)) {
            self.ns.on_fork(p.pid, p.ppid);
            self.life.initial.push(p);
        }
        self.known.extend(std::iter::once(root).chain(existing.iter().copied()));
        // A pid seen exit earlier in the session is a new process now.
        self.exited.remove(&root);
        self.owners.adopt(root, existing, at);
    }

    /// Forgets `root` and its processes (`pids`): its last reading was published.
    pub fn forget(&mut self, root: u32, pids: &BTreeSet<u32>) {
        self.owners.forget(root);
        let owned = |p: u32| self.owners.of(p).is_some();
        self.life.events.retain(|e| super::roots::pids_of(e).into_iter().any(owned));
        self.drop_pids(pids);
    }

    /// Folds descendants of a live root that were freed (reaped) before the last reading: their
    /// events go (roots::fold says which), the root's counters keep what they said.
    pub fn fold(&mut self, pids: &BTreeSet<u32>) {
        self.owners.drop_pids(pids);
        let known: BTreeSet<u32> = self.known.difference(pids).copied().collect();
        super::roots::fold(&mut self.life, pids, &known);
        self.drop_pids(pids);
    }

    fn drop_pids(&mut self, pids: &BTreeSet<u32>) {
        let l = &mut self.life;
        l.initial.retain(|p| !pids.contains(&p.pid));
        l.pipes.retain(|p| !pids.contains(&p.pid));
        l.skipped.retain(|s| !pids.contains(&s.pid));
        self.pipes_seen = l.pipes.iter().enumerate().map(|(i, p)| ((p.pid, p.fd, p.inode, p.write_end), i)).collect();
        self.known.retain(|p| !pids.contains(p));
        self.exited.retain(|p| !pids.contains(p));
        self.exec_args.retain(|p, _| !pids.contains(p));
    }

    /// Processes the ledger holds now (live or not yet folded or forgotten).
    pub fn held(&self) -> usize {
        self.known.len()
    }

    /// Descendants the ledger holds that exited (freed or not: a free can be missed).
    pub fn exited_descendants(&self) -> BTreeSet<u32> {
        self.exited.iter().copied().filter(|&p| self.known.contains(&p) && !self.owners.is_root(p)).collect()
    }

    /// The descendants freed since the last call.
    pub fn take_freed(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.freed)
    }

    /// Whether a child died and the root still lives: then pipe holders matter.
    pub fn wants_pipe_scan(&self) -> bool {
        !self.exited.is_empty() && !self.exited.contains(&self.life.root_pid)
    }

    /// The argv the kernel read at an exec; the EXEC record comes next.
    pub fn on_exec_args(&mut self, a: &ExecArgs) {
        if let Some(argv) = exec_argv(a) {
            self.exec_args.insert(a.tgid, argv);
        }
    }

    /// A process the kernel stopped following at its exec (tracer-ebpf creds.rs): recorded,
    /// and, as far as the ledger goes, seen for the last time.
    pub fn on_skipped(&mut self, r: &Raw) {
        let euid = (r.b as u32 != u32::MAX).then_some(r.b as u32);
        let reasons = crate::lifecycle::Skipped::reasons_of(r.a);
        let (ts_ns, pid, program) = (self.rel(r.ts_ns).max(1), r.tgid, cstr(&r.text));
        self.life.skipped.push(crate::lifecycle::Skipped { pid, ts_ns, program, euid, reasons });
    }

    /// A descendant left out at attach (its credentials are not the owner's).
    pub fn skipped_at_attach(&mut self, s: crate::lifecycle::Skipped) {
        self.life.skipped.push(s);
    }

    /// A failed exec (a record of its own: file names are long).
    pub fn on_exec_failed(&mut self, f: &ExecFailed) {
        let ts_ns = self.rel(f.ts_ns);
        let filename = cstr(&f.filename);
        self.life.events.push(LifeEvent::ExecFailed { ts_ns, pid: f.tgid, filename, error: -(f.ret as i32) });
    }

    pub fn on_event(&mut self, r: &Raw) {
        let ts_ns = self.rel(r.ts_ns);
        let ev = match r.kind {
            EVENT_FORK => {
                self.known.insert(r.tgid);
                self.owners.forked(r.tgid, r.other);
                self.ns.on_fork(r.tgid, r.other);
                LifeEvent::Fork {
                    ts_ns,
                    pid: r.tgid,
                    parent_pid: r.other,
                    parent_tid: r.tid,
                    parent_comm: cstr(&r.comm),
                }
            }
            EVENT_EXEC => {
                // The kernel's copy: exact even for a child that is already gone (and before a
                // process rewrites its own cmdline).
                let argv = self.exec_args.remove(&r.tgid).unwrap_or_else(|| procfs::cmdline(r.tgid));
                LifeEvent::Exec { ts_ns, pid: r.tgid, filename: cstr(&r.text), argv }
            }
            EVENT_EXIT => {
                self.exited.insert(r.tgid);
                self.ns.on_exit(r.tgid);
                LifeEvent::Exit { ts_ns, pid: r.tgid, comm: cstr(&r.comm), status: (r.b == 1).then_some(r.a as i32) }
            }
            EVENT_SIGNAL => LifeEvent::Signal {
                ts_ns,
                sender_pid: r.tgid,
                sender_tid: r.tid,
                sender_comm: cstr(&r.comm),
                target_pid: r.other,
                target_comm: cstr(&r.text[..16]),
                signal: r.a as i32,
                code: r.b as i32,
                result: r.c as i32,
            },
            EVENT_SIGNAL_DELIVER => LifeEvent::SignalDeliver { ts_ns, pid: r.tgid, tid: r.tid, signal: r.a as i32 },
            EVENT_WAIT => {
                let mut w = self.wait_call(r);
                self.ns.translate(&mut w);
                LifeEvent::Wait(w)
            }
            EVENT_PIDFD => LifeEvent::Pidfd { ts_ns, pid: r.tgid, fd: r.a as i32, target_pid: r.other },
            EVENT_FREE => {
                // A descendant gone for good: foldable once a reading has shown it (roots.rs).
                if self.owners.of(r.tgid).is_some_and(|root| root != r.tgid) {
                    self.freed.push(r.tgid);
                }
                LifeEvent::Free { ts_ns, pid: r.tgid }
            }
            _ => return,
        };
        self.life.events.push(ev);
    }

    fn wait_call(&self, r: &Raw) -> WaitCall {
        let name = crate::analyze::syscalls::name_of(r.a);
        let (target, exit) = if name == "wait4" {
            let exit = (r.b > 0).then(|| ExitInfo::from_wait_status(r.g as i32)).flatten();
            (wait4_target(r.c as i32), exit)
        } else {
            let exit = (r.b == 0 && r.h > 0).then(|| ExitInfo::from_siginfo((r.g >> 32) as i32, r.g as i32)).flatten();
            (waitid_target(r.tgid, r.c as u32, r.d as u32), exit)
        };
        WaitCall {
            pid: r.tgid,
            tid: r.tid,
            syscall: name,
            target,
            options: r.e as u64,
            // 0: the call started before the probes saw it (before attach, at the latest).
            start_ns: self.rel_start(r.f as u64),
            end_ns: Some(self.rel(r.ts_ns)),
            ret: Some(r.b),
            reaped_pid: (r.other > 0).then_some(r.other),
            exit,
        }
    }

    /// A wait still blocked at the end (from the in-flight syscall table).
    pub fn wait_in_flight(&mut self, pid: u32, tid: u32, nr: i32, args: &[u64; 6], start_mono: u64, blocked: bool) {
        let syscall = crate::analyze::syscalls::name_of(nr as i64);
        let (target, options) = match (syscall.as_str(), blocked) {
            (_, false) => (WaitTarget::AnyChild, 0),
            ("wait4", true) => (wait4_target(args[0] as i32), args[2]),
            (_, true) => (waitid_target(pid, args[0] as u32, args[1] as u32), args[3]),
        };
        let start_ns = self.rel_start(start_mono);
        let mut w = WaitCall {
            pid,
            tid,
            syscall,
            target,
            options,
            start_ns,
            end_ns: None,
            ret: None,
            reaped_pid: None,
            exit: None,
        };
        self.ns.translate(&mut w);
        self.life.waits_in_flight.push(w);
    }

    /// Records the pipe ends of the root and of every live known process.
    pub fn scan_pipes(&mut self) {
        for &pid in &self.known {
            if !procfs::is_alive(pid) {
                continue;
            }
            let comm = procfs::comm(pid).unwrap_or_default();
            let now = Some(self.rel(super::drain::monotonic_ns()));
            for (fd, inode, write_end) in procfs::pipe_fds(pid) {
                match self.pipes_seen.entry((pid, fd, inode, write_end)) {
                    std::collections::btree_map::Entry::Occupied(i) => self.life.pipes[*i.get()].seen_at_ns = now,
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(self.life.pipes.len());
                        self.life.pipes.push(PipeEnd {
                            pid,
                            comm: comm.clone(),
                            fd,
                            inode,
                            write_end,
                            seen_at_ns: now,
                        });
                    }
                }
            }
        }
    }

    /// The moment the session ends (before the probes are detached, which takes a while):
    /// every known process as /proc shows it now, and the pipes.
    pub fn snapshot_end(&mut self, end_mono: u64) {
        if self.wants_pipe_scan() {
            self.scan_pipes();
        }
        self.life.final_procs = self.known.iter().filter_map(|&p| snapshot(p)).collect();
        self.life.end_ns = self.rel(end_mono);
    }

    /// Waits that returned after the end with an unknown start: detach removes the entry hook
    /// before the exit hook, so a call entered in between looks like one from before attach.
    /// Unless `pre_attach` (threads proved to be in their pre-attach call at the end) says it
    /// is that call, it started at the end at the earliest.
    pub fn started_after_end(&mut self, pre_attach: &BTreeSet<u32>) {
        let end = self.life.end_ns;
        for e in &mut self.life.events {
            if let LifeEvent::Wait(w) = e {
                if w.start_ns == 0 && w.end_ns.is_some_and(|t| t > end) && !pre_attach.contains(&w.tid) {
                    w.start_ns = end;
                }
            }
        }
    }

    /// The ledger as it stands at `now_mono`, for a session that goes on: the waits in flight
    /// (`waits`, from the probes) and the /proc state of every known process as the end.
    pub fn live(&mut self, now_mono: u64, waits: &[(u32, tracer_common::syscall::Inflight)]) -> Lifecycle {
        let saved = std::mem::take(&mut self.life.waits_in_flight);
        for (tid, inf) in waits {
            self.wait_in_flight(inf.tgid, *tid, inf.nr, &inf.args, inf.ts, inf.blocked != 0);
        }
        let mut l = self.life.clone();
        self.life.waits_in_flight = saved;
        l.final_procs = self.known.iter().filter_map(|&p| snapshot(p)).collect();
        l.end_ns = self.rel(now_mono);
        l
    }

    pub fn finish(mut self, lost: u64) -> Lifecycle {
        self.life.lost_events = lost;
        self.life
    }
}

fn wait4_target(pid: i32) -> WaitTarget {
    match pid {
        -1 => WaitTarget::AnyChild,
        p if p > 0 => WaitTarget::Pid { pid: p as u32 },
        0 => WaitTarget::ProcessGroup { pgid: 0 },
        p => WaitTarget::ProcessGroup { pgid: (-p) as u32 },
    }
}

/// idtype: P_ALL 0, P_PID 1, P_PGID 2, P_PIDFD 3. The pidfd is mapped now if still open.
fn waitid_target(waiter: u32, idtype: u32, id: u32) -> WaitTarget {
    match idtype {
        1 => WaitTarget::Pid { pid: id },
        2 => WaitTarget::ProcessGroup { pgid: id },
        3 => WaitTarget::Pidfd { fd: id as i32, pid: crate::collect::fds::pidfd_pid(waiter, id as i32) },
        _ => WaitTarget::AnyChild,
    }
}

/// argv from the kernel's record, split at NULs as /proc/PID/cmdline is; None unless every
/// byte was read. A cut argv ends in "…".
fn exec_argv(a: &ExecArgs) -> Option<Vec<String>> {
    let len = a.len as usize;
    if a.ok == 0 || len == 0 || len > ARGS_LEN {
        return None;
    }
    let bytes = if len >= ARGS_CHUNK { &a.buf[..len] } else { &a.tail[ARGS_CHUNK - len..] };
    let mut argv: Vec<String> = bytes.split(|&c| c == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
    // The final NUL leaves one empty string after it (an empty argument inside stays).
    if bytes.last() == Some(&0) {
        argv.pop();
    }
    if a.truncated != 0 {
        if let Some(last) = argv.last_mut() {
            last.push('…');
        }
    }
    Some(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(argv: &[u8], truncated: bool) -> ExecArgs {
        let mut a = ExecArgs {
            kind: tracer_common::process::EVENT_EXEC_ARGS,
            tgid: 7,
            len: argv.len() as u32,
            truncated: truncated as u32,
            ok: 1,
            _pad: 0,
            buf: [0; ARGS_LEN],
            tail: [0xff; ARGS_CHUNK],
        };
        if argv.len() >= ARGS_CHUNK {
            a.buf[..argv.len()].copy_from_slice(argv);
        } else {
            a.tail[ARGS_CHUNK - argv.len()..].copy_from_slice(argv);
        }
        a
    }

    /// bash's loop while rtrace detaches: a wait4 entered after the entry hook went returns
    /// at 3.097 s of a 3 s session with an unknown start. It is not "since before attach"
    /// (at least 3.1 s); a thread proved to be in its pre-attach wait keeps start 0.
    #[test]
    fn waits_entered_during_detach_start_at_the_end() {
        let mut c = LifeCollector::new(1, 0, &[]);
        c.life.end_ns = 3_000_000_000;
        let w = |tid, end| {
            LifeEvent::Wait(WaitCall {
                pid: 10,
                tid,
                syscall: "wait4".into(),
                target: WaitTarget::AnyChild,
                options: 0,
                start_ns: 0,
                end_ns: Some(end),
                ret: None,
                reaped_pid: None,
                exit: None,
            })
        };
        c.life.events = vec![w(10, 3_097_000_000), w(11, 3_050_000_000), w(12, 1_000_000_000)];
        c.started_after_end(&BTreeSet::from([11]));
        let starts: Vec<u64> = c
            .life
            .events
            .iter()
            .map(|e| match e {
                LifeEvent::Wait(w) => w.start_ns,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(starts, [3_000_000_000, 0, 0]);
    }

    #[test]
    fn short_argv_comes_from_the_tail() {
        assert_eq!(exec_argv(&record(b"true\0many\0\0x\0", false)).unwrap(), ["true", "many", "", "x"]);
    }

    #[test]
    fn long_argv_comes_from_the_buffer() {
        let long = b"git\0-C\0/some/long/path/to/a/repository\0log\0--oneline\0";
        assert_eq!(
            exec_argv(&record(long, false)).unwrap(),
            ["git", "-C", "/some/long/path/to/a/repository", "log", "--oneline"]
        );
    }

    #[test]
    fn cut_argv_says_so_and_a_failed_read_gives_nothing() {
        let cut = [b'a'; 40];
        assert_eq!(exec_argv(&record(&cut, true)).unwrap(), [format!("{}…", "a".repeat(40))]);
        let mut failed = record(b"true\0", false);
        failed.ok = 0;
        assert!(exec_argv(&failed).is_none());
    }
}
