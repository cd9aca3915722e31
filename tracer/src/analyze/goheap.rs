//! The heap profile a Go process keeps (when the binary links it): top in-use sites, and the
//! plain statement when it does not. (Issue #12 item 6.)
use serde::{Deserialize, Serialize};

use crate::{
    capture::{Capture, GoProcess},
    symbolize::Resolver,
};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeapReport {
    /// Why there is no heap profile, in one line (with what the developer would add).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

pub fn report(_capture: &Capture, _p: &GoProcess, _resolver: &mut dyn Resolver) -> HeapReport {
    HeapReport::default()
}
