//! goroutine.pb.gz: a pprof goroutine profile of the last snapshot, as Go's own
//! `pprof.Lookup("goroutine")` writes it (sample type goroutine/count, period 1, one sample per
//! distinct stack with its count, runtime frames kept, runtime.goexit left out), with a numeric
//! `pid` label per sample when several Go processes were traced.
use std::collections::HashMap;

use crate::{
    analyze::go::GoReport,
    render::pprof::{self, Label, Profile},
    symbolize::{Frame, FrameKind},
};

/// The goroutines of every available Go process; `time_nanos`: when the session started.
pub fn profile(go: &[GoReport], time_nanos: i64, duration_nanos: i64) -> Profile {
    let mut stacks: Vec<(Vec<Frame>, Vec<i64>)> = Vec::new();
    let mut pids: Vec<u32> = Vec::new();
    let live: Vec<&GoReport> = go.iter().filter(|r| r.unavailable.is_none()).collect();
    for r in &live {
        // Groups differ by state and creation site too; the profile keys on the stack only.
        let mut index: HashMap<Vec<Frame>, usize> = HashMap::new();
        for g in &r.goroutines.groups {
            let frames = if g.stack.is_empty() { vec![not_read()] } else { g.stack.clone() };
            match index.get(&frames) {
                Some(&i) => stacks[i].1[0] += g.count as i64,
                None => {
                    index.insert(frames.clone(), stacks.len());
                    stacks.push((frames, vec![g.count as i64]));
                    pids.push(r.pid);
                }
            }
        }
    }
    let who: Vec<String> = live.iter().map(|r| format!("pid {} ({})", r.pid, r.go_version)).collect();
    let spec = pprof::Spec {
        sample_types: &[("goroutine", "count")],
        default_sample_type: "goroutine",
        period_type: ("goroutine", "count"),
        period: 1,
        time_nanos,
        duration_nanos,
        comment: format!("rtrace goroutines: {}", who.join(", ")),
    };
    let mut p = pprof::build(&stacks, &spec);
    if live.len() > 1 {
        let key = p.string_table.len() as i64;
        p.string_table.push("pid".into());
        for (s, pid) in p.sample.iter_mut().zip(pids) {
            s.label.push(Label { key, str: 0, num: pid as i64 });
        }
    }
    p
}

fn not_read() -> Frame {
    Frame {
        kind: FrameKind::User,
        function: "[stack not read]".into(),
        module: "[unknown]".into(),
        offset: 0,
        build_id: None,
    }
}
