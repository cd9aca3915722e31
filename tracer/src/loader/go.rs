//! The Go uprobes (issue #12 items 4 and 5): attach per process with a pid filter, read the
//! churn and stop-the-world counts, hold the churn probes to a CPU budget, detach. Entry probes
//! only (tracer-ebpf's go.rs says why). The links are owned here (not by the programs), so a
//! process's churn probes can be dropped alone; `Probes::detach` and dropping `Probes` drop all.
use std::{collections::BTreeMap, num::NonZeroU32, time::Instant};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::HashMap,
    programs::{
        uprobe::{UProbeLink, UProbeScope},
        UProbe,
    },
};
use tracer_common::go::{GoCfg, GoHits, GoSiteKey, StwKey, StwVal, NO_REASON};

use super::Probes;
use crate::{
    capture::go::{GoChurn, GoStw},
    goruntime::{stw, uprobes::GoProbeSpec},
};

/// What one churn uprobe hit costs the target, ns of CPU: `cargo xtask bench go` measured
/// 12-14 µs per hit on this VM kind (the target's CPU time with the probes on minus off, per
/// hit: a breakpoint trap plus a single-step of the displaced instruction; the program itself
/// is a small part). The higher figure, so that the budget errs on the target's side.
pub const CHURN_HIT_COST_NS: u64 = 14_000;
/// The churn probes' default budget: 1 % of one CPU.
pub const CHURN_BUDGET: f64 = 0.01;
/// Shorter windows are not judged (a burst at attach would detach the probes on noise).
const MIN_WINDOW_NS: u64 = 500_000_000;

#[derive(Default)]
pub struct GoProbes {
    procs: BTreeMap<u32, GoAttached>,
    /// Share of one CPU the churn probes may cost a process (0.01 = 1 %).
    pub budget: Option<f64>,
}

struct GoAttached {
    spec: GoProbeSpec,
    churn: Vec<UProbeLink>,
    /// Whether churn probes were attached at all (they may be detached since).
    churn_attached: bool,
    stw: Vec<UProbeLink>,
    /// GO_HITS.churn at the last budget check, and when.
    last_hits: u64,
    last_check: Instant,
    detached_at_ns: Option<u64>,
    note: Option<String>,
}

/// Whether `hits` churn hits in `window_ns` cost more than `share` of one CPU.
pub fn over_budget(hits: u64, window_ns: u64, cost_ns: u64, share: f64) -> bool {
    window_ns >= MIN_WINDOW_NS && (hits as f64 * cost_ns as f64) > share * window_ns as f64
}

impl Probes {
    fn go_prog(&mut self, name: &str) -> Result<&mut UProbe> {
        let p: &mut UProbe = self.program_mut(name)?.try_into()?;
        if p.fd().is_err() {
            p.load().with_context(|| format!("loading {name}"))?;
        }
        Ok(p)
    }

    /// Attaches `prog` at file offset `off` of process `pid`'s executable (through
    /// /proc/PID/exe: the same inode even when the path was replaced or is in another mount
    /// namespace), firing for that process only.
    fn go_link(&mut self, prog: &str, pid: u32, off: u64) -> Result<UProbeLink> {
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).context("pid 0")?);
        let exe = format!("/proc/{pid}/exe");
        let p = self.go_prog(prog)?;
        let id = p.attach(off, &exe, scope).with_context(|| format!("attaching {prog} at {exe}:{off:#x}"))?;
        Ok(p.take_link(id)?)
    }

    /// Attaches the Go uprobes of process `pid` (whose executable `spec` describes): the churn
    /// probes (newproc1's RETs, gdestroy/goexit0) and, when the spec has them, stop-the-world.
    /// On error nothing of this process stays attached.
    pub fn attach_go(&mut self, pid: u32, spec: &GoProbeSpec) -> Result<()> {
        if self.go.procs.contains_key(&pid) {
            bail!("Go uprobes already attached to pid {pid}");
        }
        let cfg = GoCfg { gopc_off: spec.gopc_off, reason_off: spec.reason_off.unwrap_or(NO_REASON) };
        let mut map: HashMap<_, u32, GoCfg> = HashMap::try_from(self.map_mut("GO_CFG")?)?;
        map.insert(pid, cfg, 0).with_context(|| format!("Go uprobe settings of pid {pid}"))?;
        let links = (|| -> Result<(Vec<UProbeLink>, Vec<UProbeLink>)> {
            let mut churn = Vec::new();
            for &off in &spec.newproc1_rets {
                churn.push(self.go_link("rt_go_newproc_ret", pid, off)?);
            }
            churn.push(self.go_link("rt_go_exit", pid, spec.goexit)?);
            let mut stw = Vec::new();
            // A stop opens at the entry of startTheWorldWithSema (1.22+) or stopTheWorldWithSema
            // (before) and closes at startTheWorldWithSema's RETs.
            let open = match (spec.minor >= 22, spec.stw_start, spec.stw_stop) {
                (true, Some(start), _) => Some(("rt_go_stw_start", start)),
                (false, Some(_), Some(stop)) => Some(("rt_go_stw_stop_old", stop)),
                _ => None,
            };
            if let Some((prog, off)) = open.filter(|_| !spec.stw_start_rets.is_empty()) {
                for &ret in &spec.stw_start_rets {
                    stw.push(self.go_link("rt_go_stw_end", pid, ret)?);
                }
                stw.push(self.go_link(prog, pid, off)?);
            }
            Ok((churn, stw))
        })();
        let (churn, stw) = match links {
            Ok(l) => l,
            Err(e) => {
                // Links attached before the error were dropped (detached) with the closure.
                let mut map: HashMap<_, u32, GoCfg> = HashMap::try_from(self.map_mut("GO_CFG")?)?;
                let _ = map.remove(&pid);
                return Err(e);
            }
        };
        let a = GoAttached {
            spec: spec.clone(),
            churn,
            churn_attached: true,
            stw,
            last_hits: 0,
            last_check: Instant::now(),
            detached_at_ns: None,
            note: None,
        };
        self.go.procs.insert(pid, a);
        Ok(())
    }

    /// The uprobe hits counted for `pid` so far (zero before the first).
    pub fn go_probe_hits(&self, pid: u32) -> Result<GoHits> {
        let map: HashMap<_, u32, GoHits> = HashMap::try_from(self.map("GO_HITS")?)?;
        Ok(map.get(&pid, 0).unwrap_or_default())
    }

    /// Detaches the churn probes of `pid` (stop-the-world stays), recording when (`at_ns`,
    /// since attach) and why for the report.
    pub fn detach_go_churn(&mut self, pid: u32, at_ns: u64, note: String) {
        if let Some(a) = self.go.procs.get_mut(&pid) {
            if !a.churn.is_empty() {
                // Here, not in the background: the process lives on, and the counts stop now.
                a.churn.clear();
                a.detached_at_ns = Some(at_ns);
                a.note = Some(note);
            }
        }
    }

    /// Detaches every Go uprobe of `pid` (it exited, or the session ends) in the background
    /// (reaper.rs: 50 ms per uprobe); its counts stay readable.
    pub fn detach_go(&mut self, pid: u32) {
        if let Some(a) = self.go.procs.get_mut(&pid) {
            let links: Vec<UProbeLink> = a.churn.drain(..).chain(a.stw.drain(..)).collect();
            if !links.is_empty() {
                super::reaper::later(links);
            }
        }
    }

    /// The budget check, about once a second: each process whose churn probes cost more than
    /// the budget since the last check gets them detached (`at_ns`: now, since attach).
    /// Returns the pids detached.
    pub fn check_go_budget(&mut self, at_ns: u64) -> Result<Vec<u32>> {
        let share = self.go.budget.unwrap_or(CHURN_BUDGET);
        let mut over = Vec::new();
        let pids: Vec<u32> = self.go.procs.iter().filter(|(_, a)| !a.churn.is_empty()).map(|(p, _)| *p).collect();
        for pid in pids {
            let hits = self.go_probe_hits(pid)?.churn;
            let a = self.go.procs.get_mut(&pid).expect("listed above");
            let window = a.last_check.elapsed().as_nanos() as u64;
            if window < MIN_WINDOW_NS {
                continue;
            }
            let new = hits - a.last_hits.min(hits);
            a.last_hits = hits;
            a.last_check = Instant::now();
            if over_budget(new, window, CHURN_HIT_COST_NS, share) {
                let rate = new as f64 * 1e9 / window as f64;
                let cost = rate * CHURN_HIT_COST_NS as f64 / 1e9 * 100.0;
                over.push(pid);
                self.detach_go_churn(
                    pid,
                    at_ns,
                    format!(
                        "goroutine churn uprobes detached at {:.1} s: {rate:.0} goroutine creations and exits/s cost the \
                         process about {cost:.1} % of a CPU (budget {:.1} %); counts stop there",
                        at_ns as f64 / 1e9,
                        share * 100.0
                    ),
                );
            }
        }
        Ok(over)
    }

    /// The churn (None if its probes were never attached to `pid`) and stop-the-world counts
    /// of `pid` so far.
    pub fn read_go(&self, pid: u32) -> Result<(Option<GoChurn>, Vec<GoStw>)> {
        let a = self.go.procs.get(&pid).ok_or_else(|| anyhow!("no Go uprobes were attached to pid {pid}"))?;
        let churn = if a.churn_attached {
            let sites = |name: &str| -> Result<BTreeMap<u64, u64>> {
                let map: HashMap<_, GoSiteKey, u64> = HashMap::try_from(self.map(name)?)?;
                Ok(map.iter().filter_map(Result::ok).filter(|(k, _)| k.tgid == pid).map(|(k, n)| (k.gopc, n)).collect())
            };
            Some(GoChurn {
                created: sites("GO_CREATED")?,
                exited: sites("GO_EXITED")?,
                hits: self.go_probe_hits(pid)?.churn,
                detached_at_ns: a.detached_at_ns,
                note: a.note.clone(),
            })
        } else {
            None
        };
        let map: HashMap<_, StwKey, StwVal> = HashMap::try_from(self.map("GO_STW")?)?;
        let mut by_name: BTreeMap<String, GoStw> = BTreeMap::new();
        for (k, v) in map.iter().filter_map(Result::ok).filter(|(k, _)| k.tgid == pid) {
            let reason = if a.spec.minor >= 22 {
                stw::reason_name(&a.spec.stw_reasons, k.reason)
            } else {
                old_reason(pid, &a.spec, &k)
            };
            let e = by_name.entry(reason.clone()).or_insert(GoStw { reason, ..Default::default() });
            e.count += v.count;
            e.total_ns += v.total_ns;
            e.max_ns = e.max_ns.max(v.max_ns);
        }
        let mut stw: Vec<GoStw> = by_name.into_values().collect();
        stw.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(a.reason.cmp(&b.reason)));
        Ok((churn, stw))
    }

    /// Why stop-the-world is not timed for `pid` (its spec found no probe point or reason
    /// table), for `GoGc::stw_unavailable`; None when it is, or no probes were attached.
    pub fn go_stw_unavailable(&self, pid: u32) -> Option<String> {
        self.go.procs.get(&pid)?.spec.stw_unavailable.clone()
    }

    /// The pids with Go uprobes attached (now or earlier in the session).
    pub fn go_pids(&self) -> Vec<u32> {
        self.go.procs.keys().copied().collect()
    }
}

/// A Go ≤ 1.21 stop's reason: the `m.preemptoff` string at (reason, len), read from the live
/// process, else from the executable (non-PIE: the address is the link-time one).
fn old_reason(pid: u32, spec: &GoProbeSpec, k: &StwKey) -> String {
    if spec.reason_off.is_none() {
        return "unknown (no m.preemptoff offset for this Go version)".into();
    }
    if k.reason == 0 {
        return stw::old_reason_name("");
    }
    let live = crate::goruntime::mem::Mem::new(pid).bytes(k.reason, k.len as usize).ok();
    let bytes = live.or_else(|| {
        let data = crate::goruntime::binary::open(spec.exe.to_str()?).ok()?;
        let bin = crate::goruntime::binary::GoBinary::parse(&data).ok()?;
        (!bin.is_pie()).then(|| bin.bytes_at(k.reason, k.len as usize)).flatten()
    });
    match bytes.and_then(|b| String::from_utf8(b).ok()) {
        Some(s) => stw::old_reason_name(&s),
        None => format!("reason at {:#x}", k.reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget() {
        let s = 1_000_000_000;
        // 700 hits/s at 14 µs = 0.98 % of a CPU: within 1 %.
        assert!(!over_budget(700, s, CHURN_HIT_COST_NS, 0.01));
        // 720 hits/s = 1.01 %: over.
        assert!(over_budget(720, s, CHURN_HIT_COST_NS, 0.01));
        // A short window is not judged.
        assert!(!over_budget(2_000, s / 10, CHURN_HIT_COST_NS, 0.01));
    }
}
