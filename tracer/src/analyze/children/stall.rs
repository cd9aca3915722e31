//! wait_stall: the root's waits that blocked longer than --wait-stall, with a severity decided
//! from what the waited child (and its descendants) did meanwhile. A parent waiting on a child
//! that works, or sleeps as told, is normal (LOW); HIGH needs evidence of a defect: the child
//! exited and the wait still did not return, or the child sat blocked for most of the wait while
//! barely running. Without evidence (child unknown, nothing recorded of it) it is MEDIUM. The
//! rule is also the README's table (Findings).
use super::{
    activity::{self, Block, Evidence, Tree},
    findings::{finding, human, label},
    *,
};

/// A child gone this long before the end while the wait for it is still blocked did not just
/// race the end of the session: its exit would have woken the wait.
const EXITED_GRACE_NS: u64 = 100 * MS;
/// A tree on CPU (or runnable) for at least 1/BUSY_SHARE of the wait is working; below it, a
/// block for most of the wait is being stuck. A stuck process runs ~0; a compiler on a
/// machine shared by several jobs still gets well over a tenth.
const BUSY_SHARE: u64 = 10;

/// The root's waits (completed and in flight) that blocked longer than the threshold, oldest
/// first.
pub(super) fn wait_stalls(
    ix: &Index,
    by_pid: &HashMap<u32, &ChildRecord>,
    children: &[ChildRecord],
    cfg: &ChildrenConfig,
    ev: &Evidence,
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
    stalls.into_iter().map(|(w, end, fl)| wait_stall(ix, by_pid, children, ev, w, end, fl)).collect()
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

/// What the evidence says about one stalled wait.
enum Verdict {
    /// The child exited `ago` ns before the end; the wait is still blocked.
    ChildExited { ago: u64 },
    /// Its exit was not seen: gone, but since when is unknown.
    ChildGone,
    /// Blocked for most of the wait (pid, block) while the tree barely ran.
    Stuck(u32, Block),
    /// Which child the wait is for is unknown.
    UnknownChild,
    /// Nothing recorded of the child's tree.
    NoEvidence,
    /// On CPU for a good part of the wait.
    Working,
    /// In a timed sleep for most of the wait (pid, block).
    Sleeping(u32, Block),
    /// Neither: ran a little, blocked in short pieces.
    Active,
}

/// The child and its descendants (from the ledger's parent links), the child first.
fn tree_pids(children: &[ChildRecord], child: u32) -> Vec<u32> {
    let mut out = vec![child];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        let kids: Vec<u32> = children.iter().filter(|c| c.ppid == p && !out.contains(&c.pid)).map(|c| c.pid).collect();
        out.extend(kids);
        i += 1;
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn verdict(
    ix: &Index,
    by_pid: &HashMap<u32, &ChildRecord>,
    ev: &Evidence,
    t: &Tree,
    child: Option<u32>,
    state: Option<&str>,
    blocked: u64,
    in_flight: bool,
) -> Verdict {
    let Some(child) = child else { return Verdict::UnknownChild };
    if in_flight && state == Some("exited") {
        match by_pid.get(&child).and_then(|c| c.exited_at_ns) {
            Some(e) if ix.l.end_ns.saturating_sub(e) >= EXITED_GRACE_NS => {
                return Verdict::ChildExited { ago: ix.l.end_ns.saturating_sub(e) };
            }
            // Exited right at the end: the wait was about to return; judge the child's life.
            Some(_) => {}
            None => return Verdict::ChildGone,
        }
    }
    // Stuck: one call blocked for most of the wait while the whole tree barely ran. A Go child
    // computing has idle threads parked in futex for as long: its CPU time tells them apart.
    if let Some((pid, b)) = &t.stuck {
        if b.max_ns >= blocked / 2 && t.busy_ns() < blocked / BUSY_SHARE {
            return Verdict::Stuck(*pid, b.clone());
        }
    }
    if !t.seen || (!ev.offcpu && t.busy_ns() < blocked / BUSY_SHARE) {
        // Off-CPU off: a child still in a timed sleep at the end is at least known to sleep.
        let asleep = ix.fin.get(&child).and_then(|p| p.syscall.as_deref()).is_some_and(activity::timed_sleep);
        if !asleep {
            return Verdict::NoEvidence;
        }
    }
    if t.busy_ns() >= blocked / BUSY_SHARE {
        return Verdict::Working;
    }
    match &t.sleep {
        Some((pid, b)) if b.max_ns >= blocked / 2 => Verdict::Sleeping(*pid, b.clone()),
        _ if !t.seen || !ev.offcpu => Verdict::Sleeping(child, sleeping_at_end(ix, child)),
        _ => Verdict::Active,
    }
}

/// A timed sleep known only from the final snapshot (off-CPU off): its length is unknown.
fn sleeping_at_end(ix: &Index, child: u32) -> Block {
    let syscall = ix.fin.get(&child).and_then(|p| p.syscall.clone());
    Block {
        tid: child,
        syscall,
        state: crate::capture::OffState::Sleep,
        total_ns: 0,
        count: 0,
        max_ns: 0,
        in_flight: true,
    }
}

/// "it" for the child itself, else "its descendant pid 7 (cc1)".
fn who(by_pid: &HashMap<u32, &ChildRecord>, child: Option<u32>, pid: u32) -> String {
    if child == Some(pid) {
        return "it".into();
    }
    format!("its descendant {}", by_pid.get(&pid).map_or_else(|| format!("pid {pid}"), |c| label(c)))
}

/// The sentence after the wait's description: what the child did, and what to do.
fn explain(
    by_pid: &HashMap<u32, &ChildRecord>,
    ev: &Evidence,
    v: &Verdict,
    t: &Tree,
    child: Option<u32>,
    blocked: u64,
) -> String {
    let of_wait = format!("of the {} wait", human(blocked));
    let fix = if ev.go_target {
        "set a timeout (exec.CommandContext / cmd.WaitDelay)"
    } else {
        "give the wait a timeout (or kill the child after one)"
    };
    match v {
        Verdict::ChildExited { ago } => format!(
            " {} ago, yet the wait has not returned: it waits for something else (another child, another process's pidfd); check which process it waits for.",
            human(*ago)
        ),
        Verdict::ChildGone => " (its exit was not seen), yet the wait has not returned: check which process it waits for.".into(),
        Verdict::Stuck(pid, b) => {
            let still = if b.in_flight { ", and still was at the end" } else { "" };
            let state = if b.state == crate::capture::OffState::Disk { " (uninterruptible, disk)" } else { "" };
            format!(
                ": the child is stuck: {} was blocked in {}{state} for {} {of_wait}{still}, while its tree ran {} on CPU. Find what it waits for (input or EOF from the parent, a lock, a pipe nobody writes); {fix}.",
                who(by_pid, child, *pid),
                b.syscall.as_deref().unwrap_or("?"),
                human(b.max_ns.min(blocked)),
                human(t.cpu_ns),
            )
        }
        Verdict::UnknownChild => {
            ": rtrace cannot tell which child it waits for (several were alive), so not whether one is stuck.".into()
        }
        Verdict::NoEvidence => {
            let why = if ev.offcpu { "no sample or block of it was recorded" } else { "off-CPU recording was off" };
            format!(": rtrace cannot tell whether the child is stuck ({why}).")
        }
        Verdict::Working => {
            let (pid, ns) = t.busiest.unwrap_or((child.unwrap_or(0), t.cpu_ns));
            let tree = if ns < t.cpu_ns { format!(" (its tree {})", human(t.cpu_ns)) } else { String::new() };
            let runq = if t.runq_ns >= MS { format!("; its tree waited {} for a CPU", human(t.runq_ns)) } else { String::new() };
            format!(
                ": the child is working, not stuck: {} was on CPU {} {of_wait}{tree}{runq}. The wait is as long as the child's work.",
                who(by_pid, child, pid),
                human(ns)
            )
        }
        Verdict::Sleeping(pid, b) => {
            // A block may have started before the wait (the child slept first): at most all of it.
            let how_long = match b.max_ns {
                0 => " (it still was at the end; off-CPU recording was off, so for how long is unknown)".into(),
                n if n >= blocked => format!(" for all {of_wait}"),
                n => format!(" {} {of_wait}", human(n)),
            };
            format!(
                ": a timed sleep, not a stuck child: {} slept in {}{how_long}.",
                who(by_pid, child, *pid),
                b.syscall.as_deref().unwrap_or("a timed sleep")
            )
        }
        Verdict::Active => {
            let longest = t.stuck.as_ref().or(t.sleep.as_ref()).map(|(pid, b)| {
                let whose = if child == Some(*pid) { String::new() } else { format!(" ({})", who(by_pid, child, *pid)) };
                format!(", its longest block {} in {}{whose}", human(b.max_ns.min(blocked)), b.syscall.as_deref().unwrap_or("?"))
            });
            format!(
                ": the child is active, not stuck: its tree ran {} on CPU {of_wait}{}.",
                human(t.cpu_ns),
                longest.unwrap_or_default()
            )
        }
    }
}

fn severity_and_name(v: &Verdict) -> (Severity, &'static str) {
    match v {
        Verdict::ChildExited { .. } => (Severity::High, "child_exited"),
        Verdict::Stuck(..) => (Severity::High, "child_stuck"),
        Verdict::ChildGone => (Severity::Medium, "child_gone"),
        Verdict::UnknownChild => (Severity::Medium, "child_unknown"),
        Verdict::NoEvidence => (Severity::Medium, "no_evidence"),
        Verdict::Working => (Severity::Low, "child_working"),
        Verdict::Sleeping(..) => (Severity::Low, "child_sleeping"),
        Verdict::Active => (Severity::Low, "child_active"),
    }
}

pub(super) fn wait_stall(
    ix: &Index,
    by_pid: &HashMap<u32, &ChildRecord>,
    children: &[ChildRecord],
    ev: &Evidence,
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
    let t = child.map(|c| activity::tree(ev, &tree_pids(children, c))).unwrap_or_default();
    let v = verdict(ix, by_pid, ev, &t, child, state, blocked, in_flight);
    let (severity, name) = severity_and_name(&v);
    // Start 0: the call started before the probes saw it (before attach): a lower bound.
    let before_attach = w.start_ns == 0;
    let g = goroutine_on(ev, w.pid, w.tid);
    let (who, call) = match g {
        Some(g) => {
            let call = if g.in_cmd_wait {
                format!("{} ({} on thread {})", crate::analyze::goroutines::CMD_WAIT, w.syscall, w.tid)
            } else {
                format!("{} on thread {}", w.syscall, w.tid)
            };
            (format!("{} of pid {}", goroutine_label(g), w.pid), call)
        }
        None => (format!("thread {} of pid {}", w.tid, w.pid), w.syscall.clone()),
    };
    let summary = format!(
        "{who} {} {}{} in {call} for {}{}{}",
        if in_flight { "has been blocked" } else { "was blocked" },
        if before_attach { "at least " } else { "" },
        human(blocked),
        waited_for(by_pid, w, child),
        state_clause(state, blocked_in.as_deref(), in_flight),
        explain(by_pid, ev, &v, &t, child, blocked),
    );
    let stuck = match &v {
        Verdict::Stuck(pid, b) => json!({
            "pid": pid, "syscall": b.syscall, "state": b.state.name(), "blocked_ms": b.max_ns / MS, "in_flight": b.in_flight,
        }),
        _ => Value::Null,
    };
    let fields = json!({
        "waiter_tid": w.tid, "waiter_pid": w.pid, "child_pid": child, "blocked_ms": blocked / MS,
        "child_state": state, "child_blocked_in": blocked_in, "in_flight": in_flight,
        "since_before_attach": before_attach, "verdict": name,
        "child_tree_cpu_ms": t.seen.then_some(t.cpu_ns / MS), "stuck": stuck,
    });
    with_goroutine(finding(FindingKind::WaitStall, severity, summary, fields), g)
}

/// The child a wait was for: what it returned, else its explicit pid, a pidfd's pid, or
/// (waiting for any child) the waiter's only live child.
pub(super) fn wait_child(ix: &Index, children: &[ChildRecord], w: &WaitCall, in_flight: bool) -> Option<u32> {
    // What a completed wait returned is the kernel's answer; a pidfd's pid read later from
    // /proc may belong to the fd's next use (Go reuses the number for its next child at once).
    if let Some(pid) = w.reaped_pid {
        return Some(pid);
    }
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

/// The goroutine in the syscall on thread `tid` of `pid` (Go ≥ 1.23 waitid, ≤ 1.22 wait4), or,
/// when the thread was not read, the only goroutine in a syscall inside os/exec.(*Cmd).Wait.
pub(super) fn goroutine_on(ev: &Evidence, pid: u32, tid: u32) -> Option<&crate::analyze::goroutines::GoWaiter> {
    let gs = ev.go_waiters.get(&pid)?;
    gs.iter().find(|g| g.in_syscall && g.tid == tid).or_else(|| {
        let mut waiting = gs.iter().filter(|g| g.in_syscall && g.tid == 0 && g.in_cmd_wait);
        match (waiting.next(), waiting.next()) {
            (Some(g), None) => Some(g),
            _ => None,
        }
    })
}

/// "goroutine 1 (main.runChild)".
pub(super) fn goroutine_label(g: &crate::analyze::goroutines::GoWaiter) -> String {
    match &g.function {
        Some(f) => format!("goroutine {} ({f})", g.goid),
        None => format!("goroutine {}", g.goid),
    }
}

/// The finding with a `goroutine` field naming the Go waiter, when there is one (findings of
/// other programs keep their fields).
pub(super) fn with_goroutine(mut f: Finding, g: Option<&crate::analyze::goroutines::GoWaiter>) -> Finding {
    if let Some(g) = g {
        let v = json!({ "goid": g.goid, "function": g.function, "in_cmd_wait": g.in_cmd_wait, "tid": g.tid });
        f.fields.insert("goroutine".into(), v);
    }
    f
}
