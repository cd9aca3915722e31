//! GC cycles, pauses and stop-the-world of a Go process during the session. (Issue #12 item 5.)
use serde::{Deserialize, Serialize};

use crate::capture::{go::GoGc, Capture, GoProcess};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GcReport {
    pub cycles: u64,
}

pub fn report(_capture: &Capture, _p: &GoProcess, g: &GoGc) -> GcReport {
    GcReport { cycles: g.numgc_end.wrapping_sub(g.numgc_start) as u64 }
}
