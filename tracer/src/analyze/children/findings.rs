//! The findings derived from the ledger: zombie, slow reap, wait stall, killed by signal,
//! failed exec, pipe held by a descendant, orphan.
use super::*;

pub(super) fn findings(ix: &Index, children: &[ChildRecord], cfg: &ChildrenConfig) -> Vec<Finding> {
    let by_pid: HashMap<u32, &ChildRecord> = children.iter().map(|c| (c.pid, c)).collect();
    let mut out = Vec::new();
    for c in children {
        out.extend(zombie_child(ix, &by_pid, c));
        out.extend(slow_reap(c, cfg));
        out.extend(killed_by_signal(c));
        out.extend(exec_failed(c));
        out.extend(orphaned_descendant(ix, c));
    }
    out.extend(wait_stalls(ix, &by_pid, children, cfg));
    out.extend(pipes_held(ix, &by_pid));
    // Stable: ties (several waits on one child) keep their start order.
    out.sort_by_key(|f| (f.severity, f.kind, sort_pid(f)));
    out
}

pub(super) fn sort_pid(f: &Finding) -> u64 {
    ["pid", "child_pid", "waiter_pid"].iter().find_map(|k| f.fields.get(*k).and_then(Value::as_u64)).unwrap_or(u64::MAX)
}

pub(super) fn finding(kind: FindingKind, severity: Severity, summary: String, fields: Value) -> Finding {
    let Value::Object(fields) = fields else { unreachable!("findings are built from json!({{…}})") };
    Finding { kind, severity, summary, fields }
}

pub(super) fn cmdline(c: &ChildRecord) -> String {
    if c.argv.is_empty() {
        c.comm.clone()
    } else {
        c.argv.join(" ")
    }
}

/// "pid 1234 (sleep 1)", the command line cut short.
pub(super) fn label(c: &ChildRecord) -> String {
    let cmd = cmdline(c);
    if cmd.is_empty() {
        return format!("pid {}", c.pid);
    }
    let mut short: String = cmd.chars().take(SUMMARY_CMD_CHARS).collect();
    if short.len() < cmd.len() {
        short.push('…');
    }
    format!("pid {} ({short})", c.pid)
}

pub(super) fn human(ns: u64) -> String {
    if ns < 1_000_000_000 {
        format!("{} ms", ns / MS)
    } else {
        format!("{:.1} s", ns as f64 / 1e9)
    }
}

pub(super) fn zombie_child(ix: &Index, descendants: &HashMap<u32, &ChildRecord>, c: &ChildRecord) -> Option<Finding> {
    if !c.never_reaped {
        return None;
    }
    // The zombie's current parent is the one that has to reap it. A zombie reparented outside
    // the traced tree (to init or a subreaper) is not the target's to reap.
    let parent = ix.fin.get(&c.pid).map_or(c.ppid, |p| p.ppid);
    if parent != ix.l.root_pid && !descendants.contains_key(&parent) {
        return None;
    }
    let when = match (c.zombie_age_ns, c.exited_at_ns) {
        (Some(age), Some(_)) => format!("exited {} ago", human(age)),
        (Some(age), None) => format!("has been a zombie for over {} (since before attach)", human(age)),
        (None, _) => "exited".to_owned(),
    };
    let summary = format!(
        "{} {when} and was never reaped by its parent pid {parent}: call Wait() after Start() (or waitpid) for every child.",
        label(c)
    );
    let fields = json!({
        "pid": c.pid, "parent_pid": parent, "zombie_ms": c.zombie_age_ns.map(|n| n / MS),
        "reaped": false, "cmdline": cmdline(c),
    });
    Some(finding(FindingKind::ZombieChild, Severity::High, summary, fields))
}

pub(super) fn slow_reap(c: &ChildRecord, cfg: &ChildrenConfig) -> Option<Finding> {
    let z = c.zombie_ns.filter(|&z| z > cfg.slow_reap_ns)?;
    let by = c.reaped_by.as_ref();
    let waited = by.filter(|r| r.call != "free");
    if c.orphaned && waited.is_none() {
        // Its parent died first: the reaper was its new parent (a subreaper or init), which
        // rtrace does not trace. Nothing in the target reaps late; what the target can change
        // is leaving the grandchild behind (see pipe_held_by_descendant / orphaned_descendant).
        let summary = format!(
            "{} outlived its parent pid {} and stayed a zombie for {} until its new parent (a subreaper or init, not traced) reaped it: to stop leaving such children, kill the child's whole process group.",
            label(c),
            c.ppid,
            human(z)
        );
        let fields = json!({ "pid": c.pid, "parent_pid": c.ppid, "zombie_ms": z / MS, "orphaned": true });
        return Some(finding(FindingKind::SlowReap, Severity::Low, summary, fields));
    }
    // Only a wait names the reaper; after a bare Free the parent at fork is the best guess.
    let parent = waited.map_or(c.ppid, |r| r.pid);
    let how = match waited {
        Some(r) => format!("{} by thread {}", r.call, r.tid),
        None => "task freed".to_owned(),
    };
    let summary = format!(
        "{} stayed a zombie for {} before pid {parent} reaped it ({how}): reap promptly (call Wait as soon as the child can exit; handle SIGCHLD).",
        label(c),
        human(z)
    );
    let fields = json!({ "pid": c.pid, "parent_pid": parent, "zombie_ms": z / MS, "orphaned": false });
    Some(finding(FindingKind::SlowReap, Severity::Medium, summary, fields))
}

/// A child whose last exec attempts failed: it never became the program it was started for.
pub(super) fn exec_failed(c: &ChildRecord) -> Option<Finding> {
    let last = c.exec_failures.last()?;
    // The program, as a shell's PATH search names it in every attempt.
    let program = last.filename.rsplit('/').next().unwrap_or(&last.filename).to_owned();
    let tried = if c.exec_failures.len() > 1 {
        // The first few: a PATH search lists every directory (all are in `attempts`).
        let files: Vec<&str> = c.exec_failures.iter().take(3).map(|f| f.filename.as_str()).collect();
        let more = if c.exec_failures.len() > 3 { ", …" } else { "" };
        format!(" (tried {}: {}{more})", c.exec_failures.len(), files.join(", "))
    } else {
        format!(" ({})", last.filename)
    };
    let exit = match c.exit {
        Some(ExitInfo::Exited { code }) => format!(", then exited {code}"),
        _ => String::new(),
    };
    let summary = format!(
        "{} could not exec {program}: {}{tried}{exit}: check that the program is installed and on the PATH the child saw (or give its absolute path), and that it is executable.",
        label(c),
        last.error
    );
    let fields = json!({
        "pid": c.pid, "program": program, "error": last.error,
        "attempts": c.exec_failures.iter().map(|f| f.filename.clone()).collect::<Vec<_>>(),
    });
    Some(finding(FindingKind::ExecFailed, Severity::Medium, summary, fields))
}

pub(super) fn killed_by_signal(c: &ChildRecord) -> Option<Finding> {
    let k = c.killed_by.as_ref();
    let signal = match (c.exit, k) {
        (Some(ExitInfo::Killed { signal, .. }), _) => signal,
        (None, Some(k)) => k.signal_number,
        _ => return None,
    };
    let name = signal_name(signal);
    let by_target = k.is_some_and(|k| k.by_target);
    let summary = format!("{} was killed by {}", label(c), kill_cause(c.pid, &name, k));
    let fields = json!({
        "pid": c.pid, "signal": name, "signal_number": signal,
        "sender_pid": k.map(|k| k.sender_pid), "sender_comm": k.map(|k| k.sender_comm.clone()),
        "sender_tid": k.map(|k| k.sender_tid), "by_target": k.map(|k| k.by_target), "kernel": k.map(|k| k.kernel),
    });
    let severity = if by_target { Severity::Medium } else { Severity::High };
    Some(finding(FindingKind::KilledBySignal, severity, summary, fields))
}

/// The end of a killed_by_signal sentence: who sent it, and what to do about it.
pub(super) fn kill_cause(pid: u32, name: &str, k: Option<&SignalSender>) -> String {
    match k {
        None => format!("{name} (sender not seen): check who signals it, or its own crash output."),
        Some(k) if k.kernel => format!("{name} from the kernel (OOM killer?): check dmesg and the cgroup's memory.events."),
        Some(k) if k.by_target => format!(
            "the target's own {name} from thread {} (exec.CommandContext cancel or an explicit Kill): expected if the target meant to stop it.",
            k.sender_tid
        ),
        Some(k) if k.sender_pid == pid => {
            format!("its own {name} (a crash or abort()): check its stderr / core dump.")
        }
        Some(k) => format!(
            "{name} from pid {} ({}), outside the target: find out why that process signals it.",
            k.sender_pid, k.sender_comm
        ),
    }
}

pub(super) fn orphaned_descendant(ix: &Index, c: &ChildRecord) -> Option<Finding> {
    if !(c.orphaned && c.alive_at_end) {
        return None;
    }
    let now = ix.fin.get(&c.pid).map(|p| p.ppid).filter(|&p| p != c.ppid);
    let to = now.map(|p| format!(" to pid {p}")).unwrap_or_default();
    let summary = format!(
        "{} outlived its parent pid {} and was reparented{to}, so nothing in the target will wait for or stop it: start the child in its own process group and kill the group (or set Pdeathsig).",
        label(c),
        c.ppid
    );
    let fields = json!({ "pid": c.pid, "original_parent_pid": c.ppid });
    Some(finding(FindingKind::OrphanedDescendant, Severity::Low, summary, fields))
}

/// The root's waits (completed and in flight) that blocked longer than the threshold, oldest
/// first.
pub(super) fn wait_stalls(
    ix: &Index,
    by_pid: &HashMap<u32, &ChildRecord>,
    children: &[ChildRecord],
    cfg: &ChildrenConfig,
) -> Vec<Finding> {
    let root = ix.l.root_pid;
    let done = ix.l.events.iter().filter_map(|e| match e {
        LifeEvent::Wait(w) => w.end_ns.map(|end| (w, end, false)),
        _ => None,
    });
    let flying = ix.l.waits_in_flight.iter().filter(|w| !waits_on_rtrace(ix.l, w)).map(|w| (w, ix.l.end_ns, true));
    let mut stalls: Vec<_> = done
        .chain(flying)
        .filter(|(w, end, _)| w.pid == root && end.saturating_sub(w.start_ns) > cfg.wait_stall_ns)
        .collect();
    stalls.sort_by_key(|(w, _, _)| w.start_ns);
    stalls.into_iter().map(|(w, end, fl)| wait_stall(ix, by_pid, children, w, end, fl)).collect()
}

/// A wait of the root, when rtrace runs under it (the top of `rtrace_chain` is its child), for
/// any child or for rtrace's chain: it waits on rtrace's own session.
fn waits_on_rtrace(l: &Lifecycle, w: &WaitCall) -> bool {
    !l.rtrace_chain.is_empty()
        && w.pid == l.root_pid
        && match w.target {
            WaitTarget::AnyChild | WaitTarget::ProcessGroup { .. } => true,
            WaitTarget::Pid { pid } | WaitTarget::Pidfd { pid: Some(pid), .. } => l.rtrace_chain.contains(&pid),
            WaitTarget::Pidfd { pid: None, .. } => false,
        }
}

pub(super) fn wait_stall(
    ix: &Index,
    by_pid: &HashMap<u32, &ChildRecord>,
    children: &[ChildRecord],
    w: &WaitCall,
    end: u64,
    in_flight: bool,
) -> Finding {
    let blocked = end.saturating_sub(w.start_ns);
    let child = wait_child(ix, children, w, in_flight);
    let state = child.and_then(|c| child_state(ix, w, c, in_flight));
    let blocked_in = match state {
        Some("exited") | None => None,
        Some(_) => child.and_then(|c| ix.fin.get(&c)).and_then(|p| p.syscall.clone()),
    };
    // Start 0: the call started before the probes saw it (before attach): a lower bound.
    let before_attach = w.start_ns == 0;
    let summary = format!(
        "thread {} of pid {} {} {}{} in {} for {}{}: the wait is as long as the child's work; set a timeout (exec.CommandContext / WaitDelay) if that is unexpected.",
        w.tid,
        w.pid,
        if in_flight { "has been blocked" } else { "was blocked" },
        if before_attach { "at least " } else { "" },
        human(blocked),
        w.syscall,
        waited_for(by_pid, w, child),
        state_clause(state, blocked_in.as_deref(), in_flight),
    );
    let fields = json!({
        "waiter_tid": w.tid, "waiter_pid": w.pid, "child_pid": child, "blocked_ms": blocked / MS,
        "child_state": state, "child_blocked_in": blocked_in, "in_flight": in_flight,
        "since_before_attach": before_attach,
    });
    finding(FindingKind::WaitStall, Severity::High, summary, fields)
}

/// The child a wait was for: its explicit pid, a pidfd's pid, what it returned, or (waiting
/// for any child) the waiter's only live child.
pub(super) fn wait_child(ix: &Index, children: &[ChildRecord], w: &WaitCall, in_flight: bool) -> Option<u32> {
    match w.target {
        WaitTarget::Pid { pid } => Some(pid),
        WaitTarget::Pidfd { pid: Some(pid), .. } => Some(pid),
        WaitTarget::Pidfd { fd, pid: None } => ix.pidfd_target(w.pid, fd, w.start_ns),
        WaitTarget::ProcessGroup { .. } => w.reaped_pid,
        WaitTarget::AnyChild => w.reaped_pid.or_else(|| only_live_child(children, w, in_flight)),
    }
}

pub(super) fn only_live_child(children: &[ChildRecord], w: &WaitCall, in_flight: bool) -> Option<u32> {
    let mut live =
        children.iter().filter(|c| c.ppid == w.pid && if in_flight { c.alive_at_end } else { live_at(c, w.start_ns) });
    match (live.next(), live.next()) {
        (Some(c), None) => Some(c.pid),
        _ => None,
    }
}

pub(super) fn live_at(c: &ChildRecord, t: u64) -> bool {
    let born = c.forked_at_ns.is_none_or(|f| f <= t);
    let dead = match c.exited_at_ns {
        Some(e) => e <= t,
        None => c.zombie_at_attach || c.reaped_at_ns.is_some_and(|r| r <= t),
    };
    born && !dead
}

pub(super) fn child_state(ix: &Index, w: &WaitCall, child: u32, in_flight: bool) -> Option<&'static str> {
    let now = ix.fin.get(&child).map(|p| state_word(p.state));
    if in_flight {
        Some(now.unwrap_or("exited"))
    } else if w.reaped_pid == Some(child) {
        Some("exited")
    } else {
        now
    }
}

pub(super) fn state_word(s: char) -> &'static str {
    match s {
        'R' => "running",
        'S' => "sleeping",
        'D' => "disk",
        'Z' => "zombie",
        'T' | 't' => "stopped",
        'X' => "exited",
        'I' => "idle",
        _ => "unknown",
    }
}

pub(super) fn waited_for(by_pid: &HashMap<u32, &ChildRecord>, w: &WaitCall, child: Option<u32>) -> String {
    match (child, child.and_then(|c| by_pid.get(&c))) {
        (_, Some(c)) => format!("child {}", label(c)),
        (Some(pid), None) => format!("child pid {pid}"),
        (None, None) => match w.target {
            WaitTarget::ProcessGroup { pgid } => format!("process group {pgid}"),
            // A pidfd whose process was not found (reaped by the time /proc was read).
            WaitTarget::Pidfd { fd, .. } => format!("the process of pidfd {fd}"),
            _ => "any child".to_owned(),
        },
    }
}

pub(super) fn state_clause(state: Option<&str>, blocked_in: Option<&str>, in_flight: bool) -> String {
    match (state, blocked_in) {
        (Some("exited"), _) if in_flight => ", which has already exited".to_owned(),
        (Some("exited"), _) => ", which exited".to_owned(),
        (Some(s), Some(sys)) => format!(", which is {s} in {sys}"),
        (Some(s), None) => format!(", which is {s}"),
        (None, _) => String::new(),
    }
}

/// golang/go#23019: a grandchild inherited the write end of the pipe the root reads the
/// child's output from, so EOF (and Go's Wait) waits for the grandchild, not the child.
pub(super) fn pipes_held(ix: &Index, by_pid: &HashMap<u32, &ChildRecord>) -> Vec<Finding> {
    let root = ix.l.root_pid;
    let read_by_root: BTreeSet<u64> =
        ix.l.pipes.iter().filter(|p| p.pid == root && !p.write_end).map(|p| p.inode).collect();
    let mut out = Vec::new();
    for p in ix.l.pipes.iter().filter(|p| p.write_end && p.pid != root && read_by_root.contains(&p.inode)) {
        // `pipes` only holds ends seen in live processes (sampled while children die), so the
        // holder was alive then even if it is gone, or a zombie, by the end.
        let Some(child) = exited_root_child(root, by_pid, p.pid) else { continue };
        let blocked_ms = child.exited_at_ns.map(|e| ix.l.end_ns.saturating_sub(e) / MS);
        let summary = format!(
            "pid {} ({}), a descendant of exited child pid {}, still holds the write end of pipe {} that pid {root} reads, so Wait() cannot return until it exits: set cmd.WaitDelay, or start the child in its own process group and kill the group.",
            p.pid, p.comm, child.pid, p.inode
        );
        let fields = json!({
            "pid": p.pid, "comm": p.comm, "fd": p.fd, "inode": p.inode,
            "killed_child_pid": child.pid, "parent_blocked_ms": blocked_ms,
        });
        out.push(finding(FindingKind::PipeHeldByDescendant, Severity::High, summary, fields));
    }
    out
}

/// The root's child that `pid` descends from (strictly), if that child has exited.
pub(super) fn exited_root_child<'a>(
    root: u32,
    by_pid: &HashMap<u32, &'a ChildRecord>,
    pid: u32,
) -> Option<&'a ChildRecord> {
    let mut cur = *by_pid.get(&pid)?;
    // Bounded: corrupt ppids could form a cycle.
    for _ in 0..=by_pid.len() {
        if cur.ppid == root {
            let ended = cur.exited_at_ns.is_some() || cur.reaped_at_ns.is_some() || cur.never_reaped;
            return (cur.pid != pid && ended).then_some(cur);
        }
        cur = *by_pid.get(&cur.ppid)?;
    }
    None
}
