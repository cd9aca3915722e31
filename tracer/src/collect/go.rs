//! The Go runtime view during a session: which traced processes are Go, their goroutine and
//! GC readings at attach, about once a second and at the end (while they are alive), their
//! heap profile at the end, and their Go uprobes (attached when found, under a CPU budget).
//! The readers are `goruntime/`; this is only when and for whom, and the capture records.
use std::{
    cell::OnceCell,
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use tracer_common::thread::TaskRegs;

use crate::{
    capture::{go::GoHeap, GoProcess},
    goruntime::{gcstats::GcReader, target, track::Tracker},
    loader::Probes,
};

/// How often a live Go process is read.
const EVERY: Duration = Duration::from_secs(1);
/// A process that has just exec'd has no runtime yet (allglen 0): retry this long.
const STARTUP: Duration = Duration::from_secs(2);
/// Retry a process not readable yet this often.
const RETRY: Duration = Duration::from_millis(100);

/// A live Go process's runtime readings now, for `rtrace serve --watch`'s metrics: the
/// runtime's own totals (since the process started), not the session's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GoLive {
    pub pid: u32,
    pub go_version: String,
    /// Live goroutines at the last snapshot.
    pub goroutines: Option<u64>,
    /// `memstats.numgc` and `memstats.pause_total_ns` at the last read (None: GC view unavailable).
    pub gc_cycles: Option<u64>,
    pub gc_pause_ns: Option<u64>,
}

/// History kept per process by a session that runs for days (about one reading a second).
const LIVE_KEEP: usize = 600;

pub struct GoSession {
    enabled: bool,
    start_mono: u64,
    procs: BTreeMap<u32, State>,
    /// Exits seen in the event stream, handled at the next tick (which has the probes).
    exits: Vec<u32>,
    /// Processes that exited before their runtime could be read (counted, not reported).
    pub unread: u64,
    /// Views of program images replaced by an exec (the pid's new image is read anew).
    replaced: Vec<GoProcess>,
}

enum State {
    /// Seen (at attach, or just exec'd), not readable yet: since when, last try, last reason.
    Pending {
        since: Instant,
        tried: Option<Instant>,
        why: Option<target::Unavailable>,
    },
    NotGo,
    Live(Box<Live>),
    /// Done with: exited, or its view unavailable.
    Done(Box<GoProcess>),
}

struct Live {
    target: target::Target,
    tracker: Tracker,
    gc: Option<GcReader>,
    record: GoProcess,
    last_read: Instant,
    /// For `GoSession::live`: the executable's function table (read at the first call) and
    /// whether each start pc seen begins a goroutine of the runtime's own.
    starts: Option<Option<crate::symbolize::gopclntab::GoTable>>,
    system: HashMap<u64, bool>,
}

impl Live {
    /// Goroutines at the last snapshot, without the runtime's own (as runtime.NumGoroutine
    /// and the goroutine profile's total count them).
    fn user_goroutines(&mut self) -> Option<u64> {
        let pid = self.target.pid;
        let table =
            self.starts.get_or_insert_with(|| crate::symbolize::gopclntab::GoTable::load(&format!("/proc/{pid}/exe")));
        let bias = self.target.bias;
        let mut n = 0;
        for pc in self.tracker.start_pcs()? {
            let system = *self.system.entry(pc).or_insert_with(|| {
                crate::analyze::goroutines::system(table.as_ref().and_then(|t| t.lookup_addr(pc.wrapping_sub(bias))))
            });
            n += u64::from(!system);
        }
        Some(n)
    }
}

/// The thread registers (for goroutines in a syscall or running), read once per tick and only
/// when a snapshot needs them: the task iterator walks every task of the machine.
struct Regs<'a> {
    probes: std::cell::RefCell<&'a mut Probes>,
    map: OnceCell<HashMap<u32, TaskRegs>>,
}

impl Regs<'_> {
    fn get(&self, tid: u32) -> Option<TaskRegs> {
        self.map.get_or_init(|| self.probes.borrow_mut().task_regs()).get(&tid).copied()
    }
}

impl GoSession {
    pub fn new(enabled: bool, start_mono: u64) -> Self {
        GoSession { enabled, start_mono, procs: BTreeMap::new(), exits: Vec::new(), unread: 0, replaced: Vec::new() }
    }

    /// A traced process that may be Go: found at attach, or it has just exec'd (a new image:
    /// whatever was read of the old one stays as it was).
    pub fn seen(&mut self, pid: u32) {
        if !self.enabled {
            return;
        }
        match self.procs.remove(&pid) {
            // The exec event of an image already being read (the event is handled after the
            // tick that opened it: `-- CMD` execs as the session starts).
            Some(State::Live(l)) if exe_of(pid).as_deref() == Some(l.target.exe.as_str()) => {
                self.procs.insert(pid, State::Live(l));
                return;
            }
            // A new program image: the old one's view ends here (the new image is read too
            // if it is Go, as a second record for the pid).
            Some(State::Live(l)) => self.replaced.push(finish(*l)),
            _ => {}
        }
        self.procs.insert(pid, State::Pending { since: Instant::now(), tried: None, why: None });
    }

    /// A watch set's forgotten root's processes (collect/roots.rs): whatever was kept of them.
    pub fn forget(&mut self, pids: &std::collections::BTreeSet<u32>) {
        self.procs.retain(|p, _| !pids.contains(p));
        self.replaced.retain(|g| !pids.contains(&g.pid));
    }

    /// The process exited (from the event stream): handled at the next tick.
    pub fn exited(&mut self, pid: u32) {
        if self.procs.contains_key(&pid) {
            self.exits.push(pid);
        }
    }

    /// An exited process's view is what its last reading saw.
    fn on_exit(&mut self, pid: u32, probes: &mut Probes) {
        match self.procs.remove(&pid) {
            Some(State::Live(l)) => {
                let mut rec = finish(*l);
                uprobe_counts(&mut rec, probes);
                if rec.snapshots.is_empty() {
                    // Gone between open and its first reading.
                    self.unread += 1;
                } else {
                    self.procs.insert(pid, State::Done(Box::new(rec)));
                }
            }
            // Exited while its runtime was starting: not readable, not a failure (counted
            // when it was known to be Go).
            Some(State::Pending { why: Some(u), .. }) if !u.go_version.is_empty() => self.unread += 1,
            Some(State::Pending { .. }) => {}
            Some(s) => {
                self.procs.insert(pid, s);
            }
            None => {}
        }
    }

    /// About every tick of the session loop: opens pending processes, reads live ones whose
    /// reading is due, and keeps the churn uprobes within budget.
    pub fn tick(&mut self, probes: &mut Probes) {
        for pid in std::mem::take(&mut self.exits) {
            self.on_exit(pid, probes);
        }
        if !self.enabled || self.procs.is_empty() {
            return;
        }
        let at_ns = self.now_ns();
        let _ = probes.check_go_budget(at_ns);
        let regs = Regs { probes: std::cell::RefCell::new(probes), map: OnceCell::new() };
        let pids: Vec<u32> = self.procs.keys().copied().collect();
        for pid in pids {
            let state = self.procs.remove(&pid).expect("listed");
            let next = match state {
                State::Pending { since, tried, why } => {
                    if tried.is_some_and(|t| t.elapsed() < RETRY) {
                        State::Pending { since, tried, why }
                    } else {
                        self.open(pid, since, &regs, at_ns)
                    }
                }
                State::Live(mut l) if l.last_read.elapsed() >= EVERY => {
                    read(&mut l, &regs, at_ns);
                    State::Live(l)
                }
                s => s,
            };
            self.procs.insert(pid, next);
        }
    }

    /// Every live Go process's readings now; the histories are cut to `LIVE_KEEP` (a watch
    /// session's memory stays bounded however long it runs).
    pub fn live(&mut self) -> Vec<GoLive> {
        let mut out = Vec::new();
        for (pid, st) in &mut self.procs {
            let State::Live(l) = st else { continue };
            l.tracker.trim(LIVE_KEEP);
            let errors = l.record.read_errors.len();
            l.record.read_errors.drain(..errors.saturating_sub(LIVE_KEEP));
            let gc = l.gc.as_mut().map(|g| {
                g.trim(LIVE_KEEP);
                (u64::from(g.gc().numgc_end), g.gc().pause_total_end_ns)
            });
            out.push(GoLive {
                pid: *pid,
                go_version: l.record.go_version.clone(),
                goroutines: l.user_goroutines(),
                gc_cycles: gc.map(|g| g.0),
                gc_pause_ns: gc.map(|g| g.1),
            });
        }
        out
    }

    fn open(&mut self, pid: u32, since: Instant, regs: &Regs, at_ns: u64) -> State {
        match target::open(pid) {
            Ok(None) => State::NotGo,
            Ok(Some(t)) => {
                let rt = t.rt.clone();
                let mut record = GoProcess {
                    pid,
                    go_version: t.version.clone(),
                    offsets_from: rt.layout.from.to_owned(),
                    wait_reasons: rt.globals.wait_reasons.clone(),
                    ..Default::default()
                };
                let gc = match &rt.gc {
                    Ok(g) => Some(GcReader::new(pid, g, t.bias)),
                    Err(e) => {
                        record.gc =
                            Some(crate::capture::go::GoGc { unavailable: Some(e.clone()), ..Default::default() });
                        None
                    }
                };
                if let Err(h) = &rt.heap {
                    record.heap = h.clone();
                }
                match &rt.probes {
                    Ok(spec) => {
                        // The loader attaches through /proc/PID/exe; the path is for reading
                        // the binary later (Go 1.19's stop reasons), after the process is gone.
                        let exe =
                            if t.exe.ends_with(" (deleted)") { format!("/proc/{pid}/exe") } else { t.exe.clone() };
                        let spec = crate::goruntime::uprobes::GoProbeSpec { exe: exe.into(), ..spec.clone() };
                        if let Err(e) = regs.probes.borrow_mut().attach_go(pid, &spec) {
                            record.churn = Some(crate::capture::go::GoChurn {
                                note: Some(format!("Go uprobes not attached: {e:#}")),
                                ..Default::default()
                            });
                        }
                    }
                    Err(e) => {
                        record.churn = Some(crate::capture::go::GoChurn {
                            note: Some(format!("Go uprobes not attached: {e}")),
                            ..Default::default()
                        });
                    }
                }
                let mut l = Box::new(Live {
                    target: t,
                    tracker: Tracker::new(),
                    gc,
                    record,
                    last_read: Instant::now(),
                    starts: None,
                    system: HashMap::new(),
                });
                read(&mut l, regs, at_ns);
                State::Live(l)
            }
            // Gone before its runtime could be read (a go build's short `asm`, `buildid`,
            // `compile -V` children): nothing to report but the count.
            // (ESRCH: its memory is gone already, a zombie /proc still lists.)
            Err(u) if !crate::procfs::is_alive(pid) || u.reason.contains("ESRCH") => {
                // Counted only when it was known to be Go (the version was read).
                self.unread += u64::from(!u.go_version.is_empty());
                State::NotGo
            }
            // Just exec'd, the runtime not up yet: try again, for a while.
            Err(u) if since.elapsed() < STARTUP => State::Pending { since, tried: Some(Instant::now()), why: Some(u) },
            Err(u) => State::Done(Box::new(unavailable(pid, u))),
        }
    }

    fn now_ns(&self) -> u64 {
        super::drain::monotonic_ns().saturating_sub(self.start_mono)
    }

    /// At the end, before the probes are detached: a last reading of every live Go process,
    /// its heap profile, its uprobe counts; then every record, in pid order.
    pub fn finish(mut self, probes: &mut Probes) -> (Vec<GoProcess>, u64) {
        for pid in std::mem::take(&mut self.exits) {
            self.on_exit(pid, probes);
        }
        let at_ns = self.now_ns();
        let procs = std::mem::take(&mut self.procs);
        let mut out = std::mem::take(&mut self.replaced);
        let regs = Regs { probes: std::cell::RefCell::new(probes), map: OnceCell::new() };
        for (pid, state) in procs {
            match state {
                State::Live(mut l) => {
                    let alive = crate::procfs::is_alive(pid);
                    if alive {
                        read(&mut l, &regs, at_ns);
                        if let Ok(h) = &l.target.rt.heap {
                            l.record.heap = crate::goruntime::heap::read(pid, h, l.target.bias);
                        }
                    }
                    let mut rec = finish(*l);
                    rec.alive_at_end = alive;
                    uprobe_counts(&mut rec, &mut regs.probes.borrow_mut());
                    out.push(rec);
                }
                State::Done(rec) => out.push(*rec),
                State::Pending { why: Some(u), .. } if crate::procfs::is_alive(pid) => out.push(unavailable(pid, u)),
                State::Pending { why: Some(u), .. } if !u.go_version.is_empty() => self.unread += 1,
                State::Pending { .. } | State::NotGo => {}
            }
        }
        out.sort_by_key(|g| g.pid);
        (out, self.unread)
    }
}

/// One reading of a live process: goroutines, then GC statistics. A failed goroutine read
/// (the process exiting, a torn table) is retried once and otherwise skipped: the snapshots
/// before it stand.
fn read(l: &mut Live, regs: &Regs, at_ns: u64) {
    l.last_read = Instant::now();
    let snap = l.target.snapshot(&|tid| regs.get(tid)).or_else(|_| l.target.snapshot(&|tid| regs.get(tid)));
    match snap {
        Ok(s) => l.tracker.observe(at_ns, s),
        Err(e) => l.record.read_errors.push(e),
    }
    if let Some(gc) = l.gc.as_mut() {
        if let Err(e) = gc.read(at_ns) {
            l.record.read_errors.push(format!("GC statistics: {e}"));
        }
    }
}

fn finish(l: Live) -> GoProcess {
    let mut rec = l.record;
    let (snapshots, last, stacks) = l.tracker.finish();
    rec.snapshots = snapshots;
    rec.last = last;
    rec.stacks = stacks;
    if let Some(gc) = l.gc {
        rec.gc = Some(gc.into_gc());
    }
    if let Some(gc) = rec.gc.as_mut() {
        gc.stw_unavailable = match &l.target.rt.probes {
            Ok(spec) => spec.stw_unavailable.clone(),
            Err(e) => Some(e.clone()),
        };
    }
    if rec.snapshots.is_empty() {
        rec.unavailable = Some(rec.read_errors.first().cloned().unwrap_or_else(|| "no snapshot could be read".into()));
    }
    rec
}

/// The churn and stop-the-world counts of the process's uprobes, and their links detached.
fn uprobe_counts(rec: &mut GoProcess, probes: &mut Probes) {
    if let Ok((churn, stw)) = probes.read_go(rec.pid) {
        if churn.is_some() {
            rec.churn = churn;
        }
        if let Some(gc) = rec.gc.as_mut() {
            gc.stw = stw;
        }
        probes.detach_go(rec.pid);
    }
}

fn exe_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.display().to_string())
}

fn unavailable(pid: u32, u: target::Unavailable) -> GoProcess {
    GoProcess { pid, go_version: u.go_version, unavailable: Some(u.reason), heap: GoHeap::None, ..Default::default() }
}
