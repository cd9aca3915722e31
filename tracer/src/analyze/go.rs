//! The Go runtime view of each Go process, as report.json `go[]` shows it: goroutines
//! (`goroutines.rs`), GC and stop-the-world (`gc.rs`) and the heap profile (`goheap.rs`),
//! from the capture's Go records with their stacks symbolized.
use serde::{Deserialize, Serialize};

use crate::{capture::Capture, symbolize::Resolver};

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

/// One entry per Go process of the capture, in pid order.
pub fn reports(capture: &Capture, resolver: &mut dyn Resolver) -> Vec<GoReport> {
    capture
        .go
        .iter()
        .map(|p| GoReport {
            pid: p.pid,
            go_version: p.go_version.clone(),
            alive_at_end: p.alive_at_end,
            unavailable: p.unavailable.as_ref().map(|r| format!("Go runtime view unavailable: {r}")),
            goroutines: crate::analyze::goroutines::report(capture, p, resolver),
            gc: p.gc.as_ref().map(|g| crate::analyze::gc::report(capture, p, g)),
            heap: crate::analyze::goheap::report(capture, p, resolver),
        })
        .collect()
}
