//! The Go runtime view of each Go process, as report.json `go[]` shows it: goroutines
//! (`goroutines.rs`), GC and stop-the-world (`gc.rs`) and the heap profile (`goheap.rs`),
//! from the capture's Go records with their stacks symbolized in the capture's one
//! symbolization (`GoStacks`: a build's ~50 Go processes run a few binaries, and each binary is
//! read once for all of them and for the other stack lists).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    capture::{Capture, GoProcess},
    symbolize::{FrameKind, Stack, StackInput},
};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GoReport {
    pub pid: u32,
    pub go_version: String,
    /// Still running at the end of the session.
    #[serde(default)]
    pub alive_at_end: bool,
    /// "Go runtime view unavailable: <reason>" when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    pub goroutines: crate::analyze::goroutines::GoroutinesReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc: Option<crate::analyze::gc::GcReport>,
    pub heap: crate::analyze::goheap::HeapReport,
}

/// The addresses one Go process needs named that the capture does not hold as stacks:
/// creation sites (gopc-1: gopc is a return address) and start functions as one-frame stacks
/// (distinct, non-zero), and the heap buckets' stacks (see `goheap::heap_pcs`).
struct Addrs {
    sites: Vec<[u64; 1]>,
    starts: Vec<[u64; 1]>,
    heap: Vec<Vec<u64>>,
}

/// Every stack of the Go view, for the capture's shared symbolization: `inputs` lists them,
/// `reports` takes them back symbolized, in the same order.
pub struct GoStacks {
    addrs: Vec<Addrs>,
}

fn singles(addrs: impl Iterator<Item = u64>) -> Vec<[u64; 1]> {
    let set: std::collections::BTreeSet<u64> = addrs.filter(|&a| a != 0).collect();
    set.into_iter().map(|a| [a]).collect()
}

impl GoStacks {
    pub fn new(capture: &Capture) -> Self {
        let addrs = capture
            .go
            .iter()
            .map(|p| Addrs {
                sites: singles(crate::analyze::goroutines::site_pcs(p).map(|a| a.saturating_sub(1))),
                starts: singles(p.last.iter().map(|g| g.start_pc)),
                heap: crate::analyze::goheap::heap_pcs(p),
            })
            .collect();
        GoStacks { addrs }
    }

    /// Per Go process: its goroutine stacks, sites, starts, heap stacks.
    pub fn inputs<'a>(&'a self, capture: &'a Capture) -> Vec<StackInput<'a>> {
        let mut out = Vec::new();
        for (p, a) in capture.go.iter().zip(&self.addrs) {
            let input = |user: &'a [u64]| StackInput {
                tgid: p.pid,
                tid: 0,
                user,
                kernel: &[],
                leaf: Default::default(),
                count: 0,
            };
            out.extend(p.stacks.iter().map(|s| input(s)));
            out.extend(a.sites.iter().chain(&a.starts).map(|s| input(s)));
            out.extend(a.heap.iter().map(|s| input(s)));
        }
        out
    }
}

/// One Go process's stacks, symbolized.
pub struct Named<'s> {
    /// `GoProcess::stacks`, in order.
    pub goroutines: &'s [Stack],
    /// Creation site (gopc) → the function holding the `go` statement.
    pub sites: BTreeMap<u64, String>,
    /// Start pc → the goroutine's start function.
    pub starts: BTreeMap<u64, String>,
    /// The heap profile's buckets, in order.
    pub heap: &'s [Stack],
}

/// The innermost user frame's name of each one-frame stack (the function an inlined call site
/// sits in), by its address plus `add`.
fn names(addrs: &[[u64; 1]], stacks: &[Stack], add: u64) -> BTreeMap<u64, String> {
    addrs
        .iter()
        .zip(stacks)
        .filter_map(|(a, s)| {
            let f = s.frames.last().filter(|f| f.kind == FrameKind::User)?;
            Some((a[0] + add, f.function.to_string()))
        })
        .collect()
}

/// One entry per Go process of the capture, in pid order, from `stacks`: `go.inputs`
/// symbolized.
pub fn reports(capture: &Capture, go: &GoStacks, stacks: &[Stack]) -> Vec<GoReport> {
    let mut rest = stacks;
    let mut take = |n: usize| {
        let (a, b) = rest.split_at(n);
        rest = b;
        a
    };
    let reports = capture
        .go
        .iter()
        .zip(&go.addrs)
        .map(|(p, a)| {
            let named = Named {
                goroutines: take(p.stacks.len()),
                sites: names(&a.sites, take(a.sites.len()), 1),
                starts: names(&a.starts, take(a.starts.len()), 0),
                heap: take(a.heap.len()),
            };
            report(capture, p, &named)
        })
        .collect();
    crate::symbolize::gopclntab::GoLines::forget_cached();
    reports
}

fn report(capture: &Capture, p: &GoProcess, named: &Named) -> GoReport {
    GoReport {
        pid: p.pid,
        go_version: p.go_version.clone(),
        alive_at_end: p.alive_at_end,
        unavailable: p.unavailable.as_ref().map(|r| format!("Go runtime view unavailable: {r}")),
        goroutines: crate::analyze::goroutines::report(capture, p, named),
        gc: p.gc.as_ref().map(|g| crate::analyze::gc::report(capture, p, g)),
        heap: crate::analyze::goheap::report(p, named.heap),
    }
}

/// The Go view alone, symbolized on its own (`rtrace serve`'s on-demand goroutine and heap
/// endpoints, and tests of the Go analyses).
pub fn reports_alone(capture: &Capture, resolver: &mut dyn crate::symbolize::Resolver) -> Vec<GoReport> {
    let go = GoStacks::new(capture);
    let inputs = go.inputs(capture);
    let stacks = crate::symbolize::Symbols::new(capture).stacks(&inputs, resolver);
    reports(capture, &go, &stacks)
}
