//! The findings derived from the ledger: zombie, slow reap, wait stall, killed by signal,
//! failed exec, pipe held by a descendant, orphan.
use super::*;

pub(super) fn findings(ix: &Index, children: &[ChildRecord], cfg: &ChildrenConfig, ev: &Evidence) -> Vec<Finding> {
    let by_pid: HashMap<u32, &ChildRecord> = children.iter().map(|c| (c.pid, c)).collect();
    let mut out = Vec::new();
    for c in children {
        out.extend(zombie_child(ix, &by_pid, c));
        out.extend(slow_reap(c, cfg));
        out.extend(killed_by_signal(c, &by_pid, ev.go_target));
        out.extend(exec_failed(c));
        out.extend(orphaned_descendant(ix, c));
    }
    out.extend(stall::wait_stalls(ix, &by_pid, children, cfg, ev));
    out.extend(pipes_held(ix, &by_pid, ev));
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

pub(super) fn killed_by_signal(c: &ChildRecord, by_pid: &HashMap<u32, &ChildRecord>, go: bool) -> Option<Finding> {
    let k = c.killed_by.as_ref();
    let signal = match (c.exit, k) {
        (Some(ExitInfo::Killed { signal, .. }), _) => signal,
        (None, Some(k)) => k.signal_number,
        _ => return None,
    };
    let name = signal_name(signal);
    // Sent by the target or by one of its own processes (timeout(1), a supervisor): meant.
    let from_tree = k.is_some_and(|k| k.by_target || k.by_descendant);
    let sender = k.and_then(|k| by_pid.get(&k.sender_pid)).map(|s| label(s));
    let summary = format!("{} was killed by {}", label(c), kill_cause(c.pid, &name, k, sender.as_deref(), go));
    let fields = json!({
        "pid": c.pid, "signal": name, "signal_number": signal,
        "sender_pid": k.map(|k| k.sender_pid), "sender_comm": k.map(|k| k.sender_comm.clone()),
        "sender_tid": k.map(|k| k.sender_tid), "by_target": k.map(|k| k.by_target), "kernel": k.map(|k| k.kernel),
        "by_descendant": k.map(|k| k.by_descendant),
    });
    let severity = if from_tree { Severity::Medium } else { Severity::High };
    Some(finding(FindingKind::KilledBySignal, severity, summary, fields))
}

/// The end of a killed_by_signal sentence: who sent it, and what to do about it. `sender`:
/// the sender's label when it is in the ledger; `go`: the target is a Go program.
pub(super) fn kill_cause(pid: u32, name: &str, k: Option<&SignalSender>, sender: Option<&str>, go: bool) -> String {
    match k {
        None => format!("{name} (sender not seen): check who signals it, or its own crash output."),
        Some(k) if k.kernel => format!("{name} from the kernel (OOM killer?): check dmesg and the cgroup's memory.events."),
        Some(k) if k.by_target => format!(
            "the target's own {name} from thread {} ({}): expected if the target meant to stop it.",
            k.sender_tid,
            if go { "exec.CommandContext cancel or an explicit Kill" } else { "an explicit kill" }
        ),
        Some(k) if k.by_descendant => format!(
            "{name} from {}, one of the target's own descendants: expected if it meant to stop it (timeout, a supervisor).",
            sender.map_or_else(|| format!("pid {} ({})", k.sender_pid, k.sender_comm), str::to_owned)
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

/// golang/go#23019: a grandchild inherited the write end of the pipe the root reads the
/// child's output from, so EOF (and Go's Wait) waits for the grandchild, not the child.
pub(super) fn pipes_held(ix: &Index, by_pid: &HashMap<u32, &ChildRecord>, ev: &Evidence) -> Vec<Finding> {
    let root = ix.l.root_pid;
    let read_by_root: BTreeSet<u64> =
        ix.l.pipes.iter().filter(|p| p.pid == root && !p.write_end).map(|p| p.inode).collect();
    let mut out = Vec::new();
    let mut reported = BTreeSet::new();
    for p in ix.l.pipes.iter().filter(|p| p.write_end && p.pid != root && read_by_root.contains(&p.inode)) {
        // `pipes` only holds ends seen in live processes (sampled while children die), so the
        // holder was alive then even if it is gone, or a zombie, by the end.
        let Some(child) = exited_root_child(root, by_pid, p.pid) else { continue };
        // Held after the child exited: before that, the child's own descendant sharing its
        // output (gcc's cc1) is how it should be. Unknown (old captures): as before.
        let after_exit = match (p.seen_at_ns, child.exited_at_ns) {
            (Some(seen), Some(exited)) => seen >= exited,
            _ => true,
        };
        // One finding per holder and pipe, however many of its fds (stdout and stderr) hold it.
        if !after_exit || !reported.insert((p.pid, p.inode)) {
            continue;
        }
        let blocked_ms = child.exited_at_ns.map(|e| ix.l.end_ns.saturating_sub(e) / MS);
        // Go's Wait, once the child is reaped, parks in chan receive for the goroutines that
        // copy the pipes: the goroutine in Cmd.Wait not in a syscall, when only one is.
        let g = cmd_waiter(ev, root);
        let waiter = match g {
            Some(g) => format!(
                "{} in {} for child {}",
                super::stall::goroutine_label(g),
                crate::analyze::goroutines::CMD_WAIT,
                label(child)
            ),
            None => "Wait()".to_owned(),
        };
        let summary = format!(
            "pid {} ({}), a descendant of exited child pid {}, still holds the write end of pipe {} that pid {root} reads, so {waiter} cannot return until it exits: set cmd.WaitDelay, or start the child in its own process group and kill the group.",
            p.pid, p.comm, child.pid, p.inode
        );
        let fields = json!({
            "pid": p.pid, "comm": p.comm, "fd": p.fd, "inode": p.inode,
            "killed_child_pid": child.pid, "parent_blocked_ms": blocked_ms,
        });
        let f = finding(FindingKind::PipeHeldByDescendant, Severity::High, summary, fields);
        out.push(super::stall::with_goroutine(f, g));
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

/// The one goroutine of `pid` parked (not in a syscall) in os/exec.(*Cmd).Wait; None when
/// there are several (which child each waits for is not known) or none.
fn cmd_waiter(ev: &Evidence, pid: u32) -> Option<&crate::analyze::goroutines::GoWaiter> {
    let mut gs = ev.go_waiters.get(&pid)?.iter().filter(|g| g.in_cmd_wait && !g.in_syscall);
    match (gs.next(), gs.next()) {
        (Some(g), None) => Some(g),
        _ => None,
    }
}
