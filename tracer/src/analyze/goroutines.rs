//! Goroutines of a Go process as the last snapshot saw them: totals by state, groups of
//! goroutines with the same state, wait reason, stack and creation site (largest first), how
//! long each group has been parked, which are blocked forever, and the goroutines that wait for
//! children (the ledger's wait findings name them). Leaks are `goleak.rs`. (Issue #12 item 2–3.)
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    analyze::go::Named,
    capture::{go::Goroutine, Capture, GoProcess},
    goruntime::lines::GoFrame,
    symbolize::{self, Frame, FrameKind},
};

const MS: u64 = 1_000_000;
/// The call every goroutine that runs a child's wait goes through.
pub const CMD_WAIT: &str = "os/exec.(*Cmd).Wait";
/// Wait reasons of goroutines nothing can ever wake (Go's own names for them).
const FOREVER: &[&str] = &["chan receive (nil chan)", "chan send (nil chan)", "select (no cases)"];
/// `g.atomicstatus` values (runtime2.go) whose waitsince the runtime keeps.
const WAITING: u32 = 4;
const SYSCALL: u32 = 3;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GoroutinesReport {
    /// Live goroutines of the last snapshot, as `runtime.NumGoroutine` counts them (the
    /// runtime's own background goroutines not included: see `system`).
    pub total: u64,
    /// The runtime's own goroutines (started at a `runtime.*` function other than
    /// runtime.main), left out of everything else as Go's dumps and profiles leave them out.
    #[serde(default)]
    pub system: u64,
    /// Status names as Go prints them ("running", "runnable", "syscall", "waiting", …).
    #[serde(default)]
    pub by_state: BTreeMap<String, u64>,
    /// Waiting goroutines by wait reason (the binary's own names).
    #[serde(default)]
    pub by_wait_reason: BTreeMap<String, u64>,
    /// Largest first, then longest blocked.
    #[serde(default)]
    pub groups: Vec<GoroutineGroup>,
    /// When the last snapshot was read, ms since attach; how many snapshots the session took,
    /// and how many entries the last one dropped (they changed while being read).
    #[serde(default)]
    pub at_ms: u64,
    #[serde(default)]
    pub snapshots: u64,
    #[serde(default)]
    pub dropped: u64,
    /// Goroutines that wait for a child or sit in a syscall (for the ledger's findings).
    #[serde(skip)]
    pub waiters: Vec<GoWaiter>,
    /// Every creation site of the session's snapshots (gopc) → the function holding the `go`
    /// statement (for the leak finding).
    #[serde(skip)]
    pub sites: BTreeMap<u64, String>,
}

/// Goroutines with the same status, wait reason, stack and creation site.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GoroutineGroup {
    pub count: u64,
    pub state: String,
    /// For waiting goroutines: why (e.g. "chan receive").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_reason: Option<String>,
    /// The longest any of them has been parked where it is, to the last snapshot (None: not
    /// parked, or unknown). From the snapshots that saw it there, or from the runtime's own
    /// `waitsince` (set by a GC) when that is older.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_ms: Option<u64>,
    /// `blocked_ms` is a lower bound: it was already parked there before the first snapshot.
    pub blocked_at_least: bool,
    /// Root first, as report.json's other stacks (runtime.goexit left out, as Go does).
    pub frames: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<CreatedBy>,
    /// Parked where nothing can ever wake it (nil channel, empty select).
    pub forever: bool,
    /// Goroutine ids, lowest first (at most `GOIDS`).
    pub goids: Vec<u64>,
    /// `frames` as symbolized frames (for goroutine.pb.gz).
    #[serde(skip)]
    pub stack: Vec<Frame>,
    /// The stack as Go's traceback gives it, from the binary's `.gopclntab`: root first,
    /// inlined calls expanded, each frame with its file:line (empty when the binary could not
    /// be read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traceback: Vec<GoFrame>,
    #[serde(skip)]
    pub gopc: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CreatedBy {
    /// The function holding the `go` statement.
    pub function: String,
    /// The creating goroutine, when all of the group share it (Go ≥ 1.21 records it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goid: Option<u64>,
    /// The `go` statement as Go's "created by" gives it: the physical function and its
    /// file:line (None when the binary could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<GoFrame>,
}

/// A goroutine in a syscall on a known thread, or in os/exec.(*Cmd).Wait.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GoWaiter {
    pub goid: u64,
    /// The thread it is in a syscall on (0: none, or not read).
    pub tid: u32,
    pub in_syscall: bool,
    /// os/exec.(*Cmd).Wait is on its stack.
    pub in_cmd_wait: bool,
    /// The program's own function it runs in: the first frame outside the runtime, syscall
    /// and os/exec layers, outward from Cmd.Wait (or from the leaf).
    pub function: Option<String>,
}

/// How many goroutine ids a group lists.
pub const GOIDS: usize = 20;

/// Status names as the runtime prints them (`gStatusStrings`, plus the unnamed ones).
pub fn status_name(status: u32) -> String {
    match status {
        0 => "idle",
        1 => "runnable",
        2 => "running",
        3 => "syscall",
        4 => "waiting",
        5 => "moribund",
        6 => "dead",
        7 => "enqueue",
        8 => "copystack",
        9 => "preempted",
        10 => "leaked",
        11 => "deadextra",
        n => return format!("status {n}"),
    }
    .into()
}

/// The wait reason of a waiting goroutine (None for other states and for reason 0, "").
pub fn wait_reason(p: &GoProcess, g: &Goroutine) -> Option<String> {
    if g.status != WAITING || g.wait_reason == 0 {
        return None;
    }
    Some(
        p.wait_reasons.get(g.wait_reason as usize).cloned().unwrap_or_else(|| format!("wait reason {}", g.wait_reason)),
    )
}

/// How long `g` has been parked where it is at the last snapshot (`now`, since attach), and
/// whether that is only a lower bound. `start_mono`: the session's start in CLOCK_MONOTONIC
/// (0: unknown, then `waitsince` cannot be placed).
pub fn blocked_ns(g: &Goroutine, now: u64, start_mono: u64) -> Option<(u64, bool)> {
    let seen = g.parked_since_ns.map(|s| (now.saturating_sub(s), g.parked_before_first));
    // waitsince: the start of the first GC that saw it blocked, so it was blocked before then
    // (a lower bound too). Reset by the runtime when the goroutine runs or leaves the syscall.
    let gc = (start_mono > 0 && g.wait_since > 0 && matches!(g.status, WAITING | SYSCALL))
        .then(|| (start_mono + now).checked_sub(g.wait_since))
        .flatten()
        .map(|ns| (ns, true));
    match (seen, gc) {
        (Some(s), Some(w)) if w.0 > s.0 => Some(w),
        (s, w) => s.or(w),
    }
}

/// Frames without the process pseudo-frame and the runtime.goexit every goroutine returns to
/// (Go's tracebacks and profiles do not show it), root first.
fn goroutine_frames(frames: &[Frame]) -> Vec<Frame> {
    let mut f: Vec<Frame> = frames.iter().filter(|f| f.kind != FrameKind::Process).cloned().collect();
    let top = f.iter().take_while(|f| &*f.function == "runtime.goexit").count();
    f.drain(..top);
    f
}

/// Go names no creator for goroutine 1 (started from runtime.rt0_go) nor for goroutines the
/// runtime's unexported functions start: its traceback hides those functions.
fn shown_creator(f: &str) -> bool {
    f.strip_prefix("runtime.").is_none_or(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
}

/// A goroutine of the runtime's own (as Go's NumGoroutine leaves out): its start function,
/// by name, is in package runtime and is not runtime.main.
pub fn system(start: Option<&str>) -> bool {
    start.is_some_and(|n| n.starts_with("runtime.") && n != "runtime.main")
}

/// The program's function a waiter runs in (see `GoWaiter::function`); `inner_first` frames.
fn waiter_function(inner_first: &[&Frame], in_cmd_wait: bool) -> Option<String> {
    let from = if in_cmd_wait { inner_first.iter().position(|f| &*f.function == CMD_WAIT)? } else { 0 };
    let layer = |f: &Frame| {
        symbolize::is_plumbing(f) || ["os.", "os/exec.", "internal/"].iter().any(|p| f.function.starts_with(p))
    };
    inner_first[from..].iter().find(|f| !layer(f)).map(|f| f.function.to_string())
}

type Key = (u32, u32, Option<u32>, u64);

/// Every creation site (gopc) of the session's snapshots: the last one's goroutines and each
/// snapshot's counts by site.
pub fn site_pcs(p: &GoProcess) -> impl Iterator<Item = u64> + '_ {
    p.last.iter().map(|g| g.gopc).chain(p.snapshots.iter().flat_map(|s| s.by_site.keys().copied()))
}

/// `named`: the process's stacks, creation sites (gopc-1 symbolized: gopc is the return
/// address of the call to newproc, so its function is the creator's) and start functions.
pub fn report(capture: &Capture, p: &GoProcess, named: &Named) -> GoroutinesReport {
    let stacks: Vec<Vec<Frame>> = named.goroutines.iter().map(|s| goroutine_frames(&s.frames)).collect();
    let (sites, starts) = (named.sites.clone(), &named.starts);
    // Per distinct stack (a snapshot can hold 10^5 goroutines on a few stacks): whether it
    // runs os/exec.(*Cmd).Wait, and the program's function it waits in.
    let callers: Vec<(bool, Option<String>)> = stacks
        .iter()
        .map(|frames| {
            let inner_first: Vec<&Frame> = frames.iter().rev().collect();
            let in_cmd_wait = inner_first.iter().any(|f| &*f.function == CMD_WAIT);
            (in_cmd_wait, waiter_function(&inner_first, in_cmd_wait))
        })
        .collect();
    // file:line per frame, from the executable's own line tables (one traceback per stack).
    let lines = symbolize::gopclntab::GoLines::for_process(capture, p.pid, p.stacks.iter().flatten().copied());
    let tracebacks: Vec<Vec<GoFrame>> =
        p.stacks.iter().map(|s| lines.as_ref().map(|l| l.traceback(capture, p.pid, s)).unwrap_or_default()).collect();
    let now = p.snapshots.last().map_or(0, |s| s.at_ns);
    let start_mono = capture.session.start_mono_ns;

    let mut r = GoroutinesReport {
        snapshots: p.snapshots.len() as u64,
        at_ms: now / MS,
        dropped: p.snapshots.last().map_or(0, |s| s.dropped),
        ..Default::default()
    };
    let mut groups: BTreeMap<Key, Vec<&Goroutine>> = BTreeMap::new();
    for g in &p.last {
        if system(starts.get(&g.start_pc).map(String::as_str)) {
            r.system += 1;
            continue;
        }
        r.total += 1;
        *r.by_state.entry(status_name(g.status)).or_default() += 1;
        if let Some(w) = wait_reason(p, g) {
            *r.by_wait_reason.entry(w).or_default() += 1;
        }
        let reason = if g.status == WAITING { g.wait_reason } else { 0 };
        groups.entry((g.status, reason, g.stack, g.gopc)).or_default().push(g);
        let (in_cmd_wait, function) = g.stack.and_then(|i| callers.get(i as usize)).cloned().unwrap_or_default();
        if in_cmd_wait || (g.status == SYSCALL && g.tid != 0) {
            r.waiters.push(GoWaiter {
                goid: g.goid,
                tid: g.tid,
                in_syscall: g.status == SYSCALL,
                in_cmd_wait,
                function,
            });
        }
    }
    r.groups = groups
        .into_iter()
        .map(|((status, _, stack, gopc), gs)| {
            let traceback = stack.and_then(|i| tracebacks.get(i as usize)).cloned().unwrap_or_default();
            let stack = stack.and_then(|i| stacks.get(i as usize)).cloned().unwrap_or_default();
            let blocked = gs.iter().filter_map(|g| blocked_ns(g, now, start_mono)).max_by_key(|b| (b.0, !b.1));
            let wait_reason = wait_reason(p, gs[0]);
            let parents: std::collections::BTreeSet<u64> = gs.iter().map(|g| g.parent_goid).collect();
            let mut goids: Vec<u64> = gs.iter().map(|g| g.goid).collect();
            goids.sort_unstable();
            goids.truncate(GOIDS);
            GoroutineGroup {
                count: gs.len() as u64,
                state: status_name(status),
                forever: status == WAITING && wait_reason.as_deref().is_some_and(|w| FOREVER.contains(&w)),
                wait_reason,
                blocked_ms: blocked.map(|b| b.0 / MS),
                blocked_at_least: blocked.is_some_and(|b| b.1),
                frames: stack.iter().map(Frame::folded_name).collect(),
                created_by: sites.get(&gopc).filter(|f| shown_creator(f)).map(|f| CreatedBy {
                    function: f.clone(),
                    goid: (parents.len() == 1).then(|| *parents.first().unwrap()).filter(|&g| g != 0),
                    at: lines.as_ref().and_then(|l| l.created_by(capture, p.pid, gopc)),
                }),
                goids,
                stack,
                traceback,
                gopc,
            }
        })
        .collect();
    r.groups.sort_by(|a, b| (b.count, b.blocked_ms).cmp(&(a.count, a.blocked_ms)).then_with(|| a.goids.cmp(&b.goids)));
    r.sites = sites;
    r
}

#[cfg(test)]
#[path = "goroutines_tests.rs"]
pub(crate) mod tests;
