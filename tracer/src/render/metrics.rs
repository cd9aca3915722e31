//! `GET /metrics` of `rtrace serve --watch` (issue #15): the watched processes' ledger,
//! syscall latency, off-CPU and CPU counters in the OpenMetrics text format, encoded by the
//! `prometheus-client` crate (Prometheus scrapes it natively).
//!
//! Every value is absolute, read off a live session's state since it attached (counters never
//! reset while the session lives), so the registry is built afresh for each scrape.
//! Cardinality: one series per watched process and label value; `syscall` is bounded by the
//! syscall table, `signal` by the signal numbers, `sender` by a process name (comm, 15 bytes)
//! among the target's killers, `kind`/`severity`/`outcome`/`state` by their enums.
use std::collections::BTreeMap;

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, MetricType},
    registry::Registry,
};

use crate::analyze::{
    children::{ChildrenReport, Severity},
    syscalls::SyscallRow,
};
use crate::lifecycle::ExitInfo;

/// One watched process (a target and its descendants) as its session sees it now.
#[derive(Clone, Debug, Default)]
pub struct Watched {
    pub pid: u32,
    pub comm: String,
    pub ledger: Option<ChildrenReport>,
    pub syscalls: Vec<SyscallRow>,
    /// Off-CPU time by state name (sleep, disk, runqueue, …), ns.
    pub offcpu_ns: BTreeMap<&'static str, u64>,
    pub cpu_samples: u64,
    /// The Go processes among them (the watched one or its descendants).
    pub go: Vec<crate::collect::GoLive>,
    /// What descendants no longer in `ledger` counted (the session folded them).
    pub folded: Folded,
}

/// The ledger's counts of descendants a watch session folded (collect/roots.rs drops a freed
/// descendant's events so that a long-lived process's ledger does not grow with every child):
/// kept here, so that the counters never go down while the watched process lives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Folded {
    pub exited: BTreeMap<&'static str, u64>,
    /// By (signal, sender).
    pub killed: BTreeMap<(String, String), u64>,
    /// By (kind, severity).
    pub findings: BTreeMap<(String, &'static str), u64>,
    pub stalls: u64,
}

impl Folded {
    /// Adds what `gone` counted in `prev` (the ledger of the reading before they were folded):
    /// their rows, and the findings about them.
    pub fn add(&mut self, prev: &ChildrenReport, gone: &std::collections::BTreeSet<u32>) {
        let about = |f: &crate::analyze::children::Finding| {
            ["pid", "child_pid", "killed_child_pid"]
                .iter()
                .filter_map(|k| f.fields.get(*k).and_then(serde_json::Value::as_u64))
                .any(|p| gone.contains(&(p as u32)))
        };
        self.tally(prev, |pid| gone.contains(&pid), about);
    }

    /// Adds every row and finding of `ledger`.
    fn add_all(&mut self, ledger: &ChildrenReport) {
        self.tally(ledger, |_| true, |_| true);
    }

    fn tally(
        &mut self,
        ledger: &ChildrenReport,
        row: impl Fn(u32) -> bool,
        finding: impl Fn(&crate::analyze::children::Finding) -> bool,
    ) {
        for c in ledger.children.iter().filter(|c| row(c.pid)) {
            if let Some(e) = &c.exit {
                *self.exited.entry(outcome(e)).or_default() += 1;
            }
            if let Some(k) = &c.killed_by {
                *self.killed.entry(sender_key(k)).or_default() += 1;
            }
        }
        for f in ledger.findings.iter().filter(|f| finding(f)) {
            let kind = kind_name(f);
            self.stalls += (kind == "wait_stall") as u64;
            *self.findings.entry((kind, severity(f.severity))).or_default() += 1;
        }
    }
}

fn sender_key(k: &crate::analyze::children::SignalSender) -> (String, String) {
    let sender = if k.kernel { "kernel" } else { k.sender_comm.as_str() };
    (k.signal.clone(), sender.to_owned())
}

fn kind_name(f: &crate::analyze::children::Finding) -> String {
    serde_json::to_value(f.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// rtrace's own health.
#[derive(Clone, Debug, Default)]
pub struct Health {
    pub watched: usize,
    /// Processes watched since the daemon started (each adopted once).
    pub watched_total: u64,
    /// Processes the session's ledger holds now.
    pub held: usize,
    /// Records lost in the kernel, by kind (events, offcpu, samples, syscalls, slow_calls):
    /// the whole watch set's, one probe set for all.
    pub lost: BTreeMap<&'static str, u64>,
    /// rtrace's CPU time since it started, seconds.
    pub cpu_seconds: f64,
    /// With --pyroscope: profiles pushed, given up, dropped (the pusher was behind).
    pub pushes: Option<(u64, u64, u64)>,
}

type Labels = Vec<(String, String)>;

fn labels(w: &Watched, more: &[(&str, &str)]) -> Labels {
    let mut l = vec![("pid".to_owned(), w.pid.to_string()), ("comm".to_owned(), w.comm.clone())];
    l.extend(more.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    l
}

/// A histogram already bucketed (the kernel's log2 buckets): `prometheus-client`'s own
/// Histogram only takes observations one by one.
#[derive(Debug, Default)]
struct Bucketed(Vec<Series>);

/// One histogram series: its labels, sum, count and (upper bound, count) buckets.
type Series = (Labels, f64, u64, Vec<(f64, u64)>);

impl EncodeMetric for Bucketed {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (l, sum, count, buckets) in &self.0 {
            let mut e = encoder.encode_family(l)?;
            e.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
        }
        Ok(())
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn counter_family() -> Family<Labels, Counter> {
    Family::default()
}

fn gauge_family() -> Family<Labels, Gauge> {
    Family::default()
}

fn outcome(e: &ExitInfo) -> &'static str {
    match e {
        ExitInfo::Exited { code: 0 } => "exit_0",
        ExitInfo::Exited { .. } => "exit_nonzero",
        ExitInfo::Killed { .. } => "signal",
    }
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low => "low",
    }
}

/// The OpenMetrics text of `watched` and rtrace's `health`.
pub fn render(watched: &[Watched], health: &Health) -> String {
    let mut reg = Registry::with_prefix("rtrace");
    let zombies = gauge_family();
    let exited = counter_family();
    let killed = counter_family();
    let stalls = counter_family();
    let findings = counter_family();
    let offcpu = Family::<Labels, Counter<f64>>::default();
    let samples = counter_family();
    let lost = counter_family();
    let goroutines = gauge_family();
    let gc_cycles = counter_family();
    let gc_pause = Family::<Labels, Counter<f64>>::default();
    let mut hist = Bucketed::default();
    for w in watched {
        if let Some(ledger) = &w.ledger {
            let now = ledger.children.iter().filter(|c| c.never_reaped).count();
            zombies.get_or_create(&labels(w, &[])).set(now as i64);
            let mut counts = w.folded.clone();
            counts.add_all(ledger);
            for (o, n) in &counts.exited {
                exited.get_or_create(&labels(w, &[("outcome", o)])).inc_by(*n);
            }
            for ((signal, sender), n) in &counts.killed {
                killed.get_or_create(&labels(w, &[("signal", signal), ("sender", sender)])).inc_by(*n);
            }
            // Present at 0 too: an alert on its rate needs the series before the first stall.
            stalls.get_or_create(&labels(w, &[])).inc_by(counts.stalls);
            for ((kind, sev), n) in &counts.findings {
                findings.get_or_create(&labels(w, &[("kind", kind), ("severity", sev)])).inc_by(*n);
            }
        }
        for s in &w.syscalls {
            let buckets: Vec<(f64, u64)> = s
                .histogram
                .iter()
                .map(|&(upper_ns, n)| (upper_ns as f64 / 1e9, n))
                .chain(std::iter::once((f64::INFINITY, 0)))
                .collect();
            hist.0.push((labels(w, &[("syscall", &s.name)]), s.total_ns as f64 / 1e9, s.count, buckets));
        }
        for (state, ns) in &w.offcpu_ns {
            offcpu.get_or_create(&labels(w, &[("state", state)])).inc_by(*ns as f64 / 1e9);
        }
        samples.get_or_create(&labels(w, &[])).inc_by(w.cpu_samples);
        for g in &w.go {
            let l = labels(w, &[("go_pid", &g.pid.to_string()), ("go_version", &g.go_version)]);
            if let Some(n) = g.goroutines {
                goroutines.get_or_create(&l).set(n as i64);
            }
            if let Some(n) = g.gc_cycles {
                gc_cycles.get_or_create(&l).inc_by(n);
            }
            if let Some(ns) = g.gc_pause_ns {
                gc_pause.get_or_create(&l).inc_by(ns as f64 / 1e9);
            }
        }
    }
    reg.register("zombie_children", "Children of the watched process that exited and are not reaped now", zombies);
    reg.register("children_exited", "Children that exited, by outcome (exit_0, exit_nonzero, signal)", exited);
    reg.register("children_killed", "Children killed by a signal, by signal and sender", killed);
    reg.register(
        "wait_stalls",
        "wait4/waitid calls that blocked past --wait-stall (findings of kind wait_stall)",
        stalls,
    );
    reg.register("findings", "Findings of the child-process ledger, by kind and severity", findings);
    reg.register("syscall_duration_seconds", "Syscall latency (the kernel's log2 buckets)", hist);
    reg.register("offcpu_seconds", "Time the watched threads spent off CPU, by state", offcpu);
    reg.register("cpu_samples", "On-CPU samples taken", samples);
    for (kind, n) in &health.lost {
        lost.get_or_create(&vec![("kind".to_owned(), (*kind).to_owned())]).inc_by(*n);
    }
    reg.register("events_lost", "Records the kernel could not hand to rtrace, by kind", lost);
    reg.register("go_goroutines", "Live goroutines of a Go process (go_pid), at its last reading", goroutines);
    reg.register("go_gc_cycles", "GC cycles of a Go process since it started (runtime memstats.numgc)", gc_cycles);
    reg.register(
        "go_gc_pause_seconds",
        "Stop-the-world GC pause time of a Go process since it started (memstats.pause_total_ns)",
        gc_pause,
    );
    if let Some((sent, failed, dropped)) = health.pushes {
        let pushes = counter_family();
        for (result, n) in [("sent", sent), ("failed", failed), ("dropped", dropped)] {
            pushes.get_or_create(&vec![("result".to_owned(), result.to_owned())]).inc_by(n);
        }
        reg.register("pushes", "Profiles pushed to Pyroscope (--pyroscope), by result", pushes);
    }
    let watched_g = Gauge::<i64>::default();
    watched_g.set(health.watched as i64);
    reg.register("watched_processes", "Processes watched now (each with its descendants)", watched_g);
    let total = Counter::<u64>::default();
    total.inc_by(health.watched_total);
    reg.register("watched", "Processes watched since the daemon started", total);
    let held = Gauge::<i64>::default();
    held.set(health.held as i64);
    reg.register(
        "ledger_processes",
        "Processes the session's ledger holds (watched ones, their descendants, exited ones not folded yet)",
        held,
    );
    let cpu = Counter::<f64>::default();
    cpu.inc_by(health.cpu_seconds);
    reg.register("self_cpu_seconds", "rtrace's own CPU time", cpu);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
