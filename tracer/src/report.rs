//! The report tree serialized to report.json (one typed tree, extended by later sections) and
//! the pipeline capture → symbolize → analyze that builds it.
use serde::{Deserialize, Serialize};

use crate::{
    analyze::cpu::{CpuProfile, TopFunction},
    capture::{Accounting, Capture, Clock, EndedBy, TargetInfo},
    symbolize::{self, Resolver},
};

pub const SCHEMA_VERSION: u32 = 1;
/// How many functions the top lists keep.
pub const TOP_N: usize = 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub target: TargetInfo,
    pub session: Session,
    pub accounting: Accounting,
    pub cpu: CpuSection,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub duration_ms: u64,
    pub ended_by: EndedBy,
    pub sample_frequency_hz: u64,
    pub clock: Clock,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuSection {
    pub total_samples: u64,
    /// By self samples.
    pub top: Vec<TopFunction>,
    /// By total samples (function anywhere on the stack).
    pub top_total: Vec<TopFunction>,
}

/// Everything the renderers need.
pub struct Analysis {
    pub report: Report,
    pub cpu: CpuProfile,
}

pub fn analyze(capture: &Capture, resolver: &mut dyn Resolver) -> Analysis {
    let stacks = symbolize::cpu_stacks(capture, resolver);
    let cpu = CpuProfile::from_stacks(&stacks);
    let (top, top_total) = cpu.top(TOP_N);
    let s = &capture.session;
    let report = Report {
        schema_version: SCHEMA_VERSION,
        target: capture.target.clone(),
        session: Session {
            duration_ms: s.duration_ms,
            ended_by: s.ended_by,
            sample_frequency_hz: s.sample_frequency_hz,
            clock: s.clock,
        },
        accounting: capture.accounting.clone(),
        cpu: CpuSection { total_samples: cpu.total_samples, top, top_total },
    };
    Analysis { report, cpu }
}
