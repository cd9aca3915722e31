//! The heap profile a Go process keeps (when the binary links it): the samples of heap.pb.gz,
//! scaled and trimmed as the runtime's own `writeHeapProto` does, their totals and the top
//! in-use sites; or the plain statement why there is none. (Issue #12 item 6.)
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{
    capture::{go::GoHeap, GoProcess},
    goruntime::binary::GoVersion,
    symbolize::{Frame, FrameKind, Stack},
};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeapReport {
    /// Why there is no heap profile, in one line (with what the developer would add).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// `runtime.MemProfileRate`: one sample per this many bytes allocated, on average.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// Estimated totals (the samples scaled as pprof scales them), as of the last GC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totals: Option<HeapValues>,
    /// The functions holding the most in-use bytes (innermost non-runtime frame), largest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<HeapSite>,
    /// heap.pb.gz's samples (not in report.json: the profile file holds them).
    #[serde(skip)]
    pub samples: Vec<HeapSample>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeapValues {
    pub alloc_objects: i64,
    pub alloc_bytes: i64,
    pub inuse_objects: i64,
    pub inuse_bytes: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeapSite {
    pub function: String,
    /// Its callers, innermost first (at most 3), from its largest stack.
    pub called_from: Vec<String>,
    #[serde(flatten)]
    pub values: HeapValues,
}

/// One profile bucket as heap.pb.gz holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct HeapSample {
    /// Root first, leading (innermost) runtime frames hidden.
    pub frames: Vec<Frame>,
    pub values: HeapValues,
    /// The `bytes` label (the object size), when the runtime would write it.
    pub bytes_label: Option<i64>,
}

/// How many sites the top table keeps.
const TOP: usize = 10;

/// `scaleHeapSample` (runtime/pprof/protomem.go): a sample of objects of `size` bytes was
/// taken with probability 1-exp(-size/rate); rate 1 keeps every allocation.
pub fn scale(count: u64, size: u64, rate: u64) -> (i64, i64) {
    let (count, size) = (count as i64, size as i64);
    if count == 0 || size == 0 {
        return (0, 0);
    }
    if rate <= 1 {
        return (count, count * size);
    }
    let s = 1.0 / (1.0 - (-(size as f64) / rate as f64).exp());
    ((count as f64 * s) as i64, ((count * size) as f64 * s) as i64)
}

/// pprof hides a heap stack's innermost runtime frames (mallocgc and its helpers), unless the
/// stack is only runtime frames, and ends every stack before `runtime.goexit` (the root of
/// every goroutine).
fn hide_runtime(mut frames: Vec<Frame>) -> Vec<Frame> {
    let runtime = |f: &Frame| f.function.starts_with("runtime.") || f.function.starts_with("internal/runtime/");
    let keep = frames.len() - frames.iter().rev().take_while(|f| runtime(f)).count();
    if keep > 0 {
        frames.truncate(keep);
    }
    if let Some(i) = frames.iter().rposition(|f| &*f.function == "runtime.goexit") {
        frames.drain(..=i);
    }
    frames
}

/// The heap buckets' stacks, as the symbolizer takes them: every pc is a return address, so
/// pc-1 is looked up (the symbolizer subtracts 1 from all but the first, so the first is
/// given as pc-1). None without a profile.
pub fn heap_pcs(p: &GoProcess) -> Vec<Vec<u64>> {
    let GoHeap::Profile(profile) = &p.heap else { return Vec::new() };
    profile
        .buckets
        .iter()
        .map(|b| b.stack.iter().enumerate().map(|(i, &pc)| if i == 0 { pc.saturating_sub(1) } else { pc }).collect())
        .collect()
}

/// `stacks`: `heap_pcs(p)` symbolized.
pub fn report(p: &GoProcess, stacks: &[Stack]) -> HeapReport {
    let profile = match &p.heap {
        GoHeap::None => return HeapReport::default(),
        GoHeap::NotLinked { reason } | GoHeap::Unavailable { reason } => {
            return HeapReport { unavailable: Some(format!("no heap profile: {reason}")), ..Default::default() }
        }
        GoHeap::Profile(h) => h,
    };
    let minor = GoVersion::parse(&p.go_version).map(|v| v.minor).unwrap_or(0);
    let mut samples = Vec::with_capacity(stacks.len());
    for (b, s) in profile.buckets.iter().zip(stacks) {
        let frames: Vec<Frame> = s.frames.iter().filter(|f| f.kind != FrameKind::Process).cloned().collect();
        let (alloc_objects, alloc_bytes) = scale(b.allocs, b.size, profile.rate);
        let (inuse_objects, inuse_bytes) = scale(b.allocs.saturating_sub(b.frees), b.size, profile.rate);
        // Go ≤ 1.22 labels a sample with its size only when it has allocations.
        let bytes_label = (minor >= 23 || b.allocs > 0).then_some(b.size as i64);
        samples.push(HeapSample {
            frames: hide_runtime(frames),
            values: HeapValues { alloc_objects, alloc_bytes, inuse_objects, inuse_bytes },
            bytes_label,
        });
    }
    let mut totals = HeapValues::default();
    for s in &samples {
        add(&mut totals, &s.values);
    }
    HeapReport { unavailable: None, rate: Some(profile.rate), totals: Some(totals), top: top(&samples), samples }
}

fn add(a: &mut HeapValues, b: &HeapValues) {
    a.alloc_objects += b.alloc_objects;
    a.alloc_bytes += b.alloc_bytes;
    a.inuse_objects += b.inuse_objects;
    a.inuse_bytes += b.inuse_bytes;
}

/// In-use bytes by innermost function, largest first; ties by name (a stable report).
fn top(samples: &[HeapSample]) -> Vec<HeapSite> {
    let mut by: HashMap<&str, (HeapValues, &HeapSample)> = HashMap::new();
    for s in samples {
        let Some(leaf) = s.frames.last() else { continue };
        let e = by.entry(&leaf.function).or_insert((HeapValues::default(), s));
        add(&mut e.0, &s.values);
        if s.values.inuse_bytes > e.1.values.inuse_bytes {
            e.1 = s;
        }
    }
    let mut sites: Vec<HeapSite> = by
        .into_iter()
        .filter(|(_, (v, _))| v.inuse_bytes > 0)
        .map(|(f, (values, s))| HeapSite {
            function: f.to_owned(),
            called_from: s.frames.iter().rev().skip(1).take(3).map(|f| f.function.to_string()).collect(),
            values,
        })
        .collect();
    sites.sort_by(|a, b| b.values.inuse_bytes.cmp(&a.values.inuse_bytes).then_with(|| a.function.cmp(&b.function)));
    sites.truncate(TOP);
    sites
}

#[cfg(test)]
#[path = "goheap_tests.rs"]
mod tests;
