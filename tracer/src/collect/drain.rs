//! Reads the kernel maps (after the programs are detached) into the raw part of a `Capture`.
use std::collections::HashMap;

use anyhow::Result;
use tracer_common::{counters as c, cpu::NO_STACK};

use crate::{
    capture::{Accounting, Capture, RawSample, StackErrors},
    loader::Probes,
};

pub fn drain(probes: &Probes) -> Result<Capture> {
    let n = probes.counters();
    let user_stacks = probes.stacks("USER_STACKS")?;
    let kernel_stacks = probes.stacks("KERNEL_STACKS")?;
    // A stack id is shared by many keys: read each once.
    let mut ucache: HashMap<i32, Vec<u64>> = HashMap::new();
    let mut kcache: HashMap<i32, Vec<u64>> = HashMap::new();
    let frames = |map: &aya::maps::StackTraceMap<&aya::maps::MapData>, cache: &mut HashMap<i32, Vec<u64>>, id: i32| {
        if id == NO_STACK || id < 0 {
            return Vec::new();
        }
        cache
            .entry(id)
            .or_insert_with(|| {
                map.get(&(id as u32), 0).map(|st| st.frames().iter().map(|f| f.ip).collect()).unwrap_or_default()
            })
            .clone()
    };
    let mut samples: Vec<RawSample> = probes
        .cpu_counts()?
        .into_iter()
        .map(|(k, count)| RawSample {
            tgid: k.tgid,
            tid: k.tid,
            user: frames(&user_stacks, &mut ucache, k.user_stack_id),
            kernel: frames(&kernel_stacks, &mut kcache, k.kernel_stack_id),
            count,
            leaf_ret: k.leaf_ret,
            leaf_callee: k.leaf_callee,
        })
        .collect();
    samples.sort_by(|a, b| (a.tgid, a.tid, &a.user, &a.kernel).cmp(&(b.tgid, b.tid, &b.user, &b.kernel)));

    let errors = StackErrors {
        user_collision: n[c::USER_STACK_COLLISION as usize],
        user_error: n[c::USER_STACK_ERROR as usize],
        kernel_collision: n[c::KERNEL_STACK_COLLISION as usize],
        kernel_error: n[c::KERNEL_STACK_ERROR as usize],
    };
    Ok(Capture {
        accounting: Accounting {
            cpu_samples: n[c::CPU_SAMPLES as usize],
            lost_samples: n[c::CPU_KEYS_FULL as usize],
            stack_errors: errors.total(),
            stack_errors_by_reason: errors,
            tracked_map_full: n[c::TRACKED_FULL as usize],
            events_dropped: n[c::EVENTS_DROPPED as usize],
        },
        cpu_samples: samples,
        ..Default::default()
    })
}
