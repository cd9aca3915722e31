//! goroutine.pb.gz: a pprof goroutine profile of the last snapshot, as Go's own
//! `pprof.Lookup("goroutine")` writes it (sample type goroutine/count, period 1, one sample per
//! distinct stack with its count, runtime frames kept, runtime.goexit left out), with a numeric
//! `pid` label per sample when several Go processes were traced.
use std::collections::HashMap;

use crate::{
    analyze::go::GoReport,
    render::pprof::{self, Function, Label, Line, Location, Profile, Sample},
    symbolize::{Frame, FrameKind},
};

/// The goroutines of every available Go process; `time_nanos`: when the session started.
pub fn profile(go: &[GoReport], time_nanos: i64, duration_nanos: i64) -> Profile {
    let live = go.iter().filter(|r| r.unavailable.is_none());
    if live.flat_map(|r| &r.goroutines.groups).all(|g| !g.traceback.is_empty()) {
        if let Some(p) = with_lines(go, time_nanos, duration_nanos) {
            return p;
        }
    }
    by_frames(go, time_nanos, duration_nanos)
}

/// As Go writes it when every group's traceback was read from the line tables: one location
/// per pc, its lines innermost first (the calls inlined there, then the function), each
/// function with its file and each line its number. None: no group at all.
fn with_lines(go: &[GoReport], time_nanos: i64, duration_nanos: i64) -> Option<Profile> {
    let live: Vec<&GoReport> = go.iter().filter(|r| r.unavailable.is_none()).collect();
    let mut p = by_frames(&[], time_nanos, duration_nanos);
    p.comment.clear();
    let mut strings: HashMap<String, i64> =
        p.string_table.iter().enumerate().map(|(i, s)| (s.clone(), i as i64)).collect();
    let mut string = |p: &mut Profile, s: &str| -> i64 {
        *strings.entry(s.to_owned()).or_insert_with(|| {
            p.string_table.push(s.to_owned());
            p.string_table.len() as i64 - 1
        })
    };
    let mut functions: HashMap<(String, String), u64> = HashMap::new();
    let mut locations: HashMap<LocationKey, u64> = HashMap::new();
    let mut samples: HashMap<(u32, Vec<u64>), usize> = HashMap::new();
    for r in &live {
        for g in &r.goroutines.groups {
            // Innermost first, cut into physical frames (each ends at its non-inlined frame).
            let mut ids = Vec::new();
            let mut lines = Vec::new();
            for f in g.traceback.iter().rev() {
                let key = (f.function.clone(), f.file.clone());
                let id = match functions.get(&key) {
                    Some(&id) => id,
                    None => {
                        let (name, file) = (string(&mut p, &f.function), string(&mut p, &f.file));
                        let id = p.function.len() as u64 + 1;
                        p.function.push(Function { id, name, system_name: name, filename: file });
                        functions.insert(key, id);
                        id
                    }
                };
                lines.push((id, i64::from(f.line)));
                if f.inlined {
                    continue;
                }
                let key = (r.pid, f.pc, std::mem::take(&mut lines));
                let next = p.location.len() as u64 + 1;
                let id = *locations.entry(key.clone()).or_insert(next);
                if id == next {
                    let line = key.2.iter().map(|&(function_id, line)| Line { function_id, line }).collect();
                    p.location.push(Location { id, mapping_id: 0, address: key.1, line });
                }
                ids.push(id);
            }
            match samples.get(&(r.pid, ids.clone())) {
                Some(&i) => p.sample[i].value[0] += g.count as i64,
                None => {
                    samples.insert((r.pid, ids.clone()), p.sample.len());
                    let label =
                        if live.len() > 1 { vec![Label { key: -1, str: 0, num: r.pid as i64 }] } else { vec![] };
                    p.sample.push(Sample { location_id: ids, value: vec![g.count as i64], label });
                }
            }
        }
    }
    if p.sample.is_empty() {
        return None;
    }
    let key = string(&mut p, "pid");
    p.sample.iter_mut().flat_map(|s| &mut s.label).for_each(|l| l.key = key);
    let who: Vec<String> = live.iter().map(|r| format!("pid {} ({})", r.pid, r.go_version)).collect();
    let comment = string(&mut p, &format!("rtrace goroutines: {}", who.join(", ")));
    p.comment = vec![comment];
    Some(p)
}

/// (pid, pc, its lines as (function id, line), innermost first).
type LocationKey = (u32, u64, Vec<(u64, i64)>);

/// From the symbolized frames (no file or line), when the line tables could not be read.
fn by_frames(go: &[GoReport], time_nanos: i64, duration_nanos: i64) -> Profile {
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
    Frame { kind: FrameKind::User, function: "[stack not read]".into(), module: "[unknown]".into(), offset: 0 }
}
