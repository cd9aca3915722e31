//! The on-CPU profile: stacks merged by call chain, and top functions by self and total samples.
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::symbolize::{Frame, FrameKind, Frames, Stack};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopFunction {
    pub function: String,
    pub self_samples: u64,
    pub total_samples: u64,
}

/// Stacks (root first, threads merged) with their sample counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuProfile {
    pub stacks: Vec<(Frames, u64)>,
    pub total_samples: u64,
}

impl CpuProfile {
    /// Merges stacks that differ only by thread.
    pub fn from_stacks(stacks: &[Stack]) -> Self {
        let mut merged: BTreeMap<&Frames, u64> = BTreeMap::new();
        for s in stacks {
            *merged.entry(&s.frames).or_default() += s.count;
        }
        let total_samples = merged.values().sum();
        Self { stacks: merged.into_iter().map(|(f, c)| (f.clone(), c)).collect(), total_samples }
    }

    /// Folded lines `root;…;leaf count`, sorted (the input inferno and FlameGraph take).
    pub fn folded(&self) -> Vec<String> {
        folded_lines(self.stacks.iter().map(|(f, c)| (&f[..], *c)))
    }

    /// Functions ranked by self samples (the leaf), and by total samples (anywhere on the
    /// stack, counted once per stack even under recursion). The process root frame is left out.
    pub fn top(&self, n: usize) -> (Vec<TopFunction>, Vec<TopFunction>) {
        // Names as in the flame graph: kernel functions carry `_[k]`.
        let mut acc: HashMap<String, (u64, u64)> = HashMap::new();
        for (frames, count) in &self.stacks {
            let mut seen = HashSet::new();
            for f in frames.iter().filter(|f| f.kind != FrameKind::Process) {
                let name = f.folded_name();
                if seen.insert(name.clone()) {
                    acc.entry(name).or_default().1 += count;
                }
            }
            if let Some(leaf) = frames.last().filter(|f| f.kind != FrameKind::Process) {
                acc.entry(leaf.folded_name()).or_default().0 += count;
            }
        }
        let all: Vec<TopFunction> =
            acc.into_iter().map(|(f, (s, t))| TopFunction { function: f, self_samples: s, total_samples: t }).collect();
        let mut by_self = all.clone();
        by_self.retain(|t| t.self_samples > 0);
        by_self.sort_by(|a, b| b.self_samples.cmp(&a.self_samples).then_with(|| a.function.cmp(&b.function)));
        by_self.truncate(n);
        let mut by_total = all;
        by_total.sort_by(|a, b| b.total_samples.cmp(&a.total_samples).then_with(|| a.function.cmp(&b.function)));
        by_total.truncate(n);
        (by_self, by_total)
    }
}

/// Folds (frames, value) pairs into sorted `a;b;c value` lines, merging equal paths.
pub fn folded_lines<'a>(stacks: impl Iterator<Item = (&'a [Frame], u64)>) -> Vec<String> {
    fold(stacks.map(|(f, v)| (f.iter(), v)))
}

/// The same, with each stack's frames given by an iterator (a stack and a leaf pseudo-frame,
/// without copying the stack). Lines are built in one buffer: a build's report folds a million
/// frames.
pub fn fold<'a, F: Iterator<Item = &'a Frame>>(stacks: impl Iterator<Item = (F, u64)>) -> Vec<String> {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    let mut line = String::new();
    for (frames, v) in stacks {
        line.clear();
        for (i, f) in frames.enumerate() {
            if i > 0 {
                line.push(';');
            }
            f.push_folded(&mut line);
        }
        match merged.get_mut(line.as_str()) {
            Some(sum) => *sum += v,
            None => {
                // Room for the count appended below: without it each line's buffer doubles
                // (a build's folded lines were 46 MB of rtrace's peak instead of 23).
                let mut key = String::with_capacity(line.len() + 21);
                key.push_str(&line);
                merged.insert(key, v);
            }
        }
    }
    merged
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(mut k, v)| {
            use std::fmt::Write;
            let _ = write!(k, " {v}");
            k
        })
        .collect()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn frame(kind: FrameKind, name: &str) -> Frame {
        Frame { kind, function: name.into(), module: "m".into(), offset: 0 }
    }

    pub fn stack(tid: u32, names: &[&str], count: u64) -> Stack {
        let mut frames = vec![Frame::process("prog")];
        for n in names {
            let kind = if n.ends_with("_[k]") { FrameKind::Kernel } else { FrameKind::User };
            frames.push(frame(kind, n.trim_end_matches("_[k]")));
        }
        Stack { tgid: 1, tid, frames: frames.into(), count }
    }

    pub fn sample_profile() -> CpuProfile {
        CpuProfile::from_stacks(&[
            stack(1, &["main", "outer", "middle", "leaf"], 90),
            stack(2, &["main", "outer", "middle", "leaf"], 5),
            stack(1, &["main", "outer"], 3),
            stack(1, &["main", "write", "ksys_write_[k]"], 2),
        ])
    }

    #[test]
    fn merges_threads_and_folds() {
        let p = sample_profile();
        assert_eq!(p.total_samples, 100);
        assert_eq!(
            p.folded(),
            ["prog;main;outer 3", "prog;main;outer;middle;leaf 95", "prog;main;write;ksys_write_[k] 2"]
        );
    }

    #[test]
    fn top_functions() {
        let (by_self, by_total) = sample_profile().top(3);
        assert_eq!(by_self[0], TopFunction { function: "leaf".into(), self_samples: 95, total_samples: 95 });
        assert_eq!(by_self[1].function, "outer");
        assert_eq!(by_self[2].function, "ksys_write_[k]");
        assert_eq!(by_total[0], TopFunction { function: "main".into(), self_samples: 0, total_samples: 100 });
        assert_eq!(by_total[1].function, "outer");
        assert_eq!(by_total[1].total_samples, 98);
    }

    #[test]
    fn recursion_counts_once_in_total() {
        let p = CpuProfile::from_stacks(&[stack(1, &["f", "f", "f"], 4)]);
        let (s, t) = p.top(5);
        assert_eq!(s[0].self_samples, 4);
        assert_eq!(t[0].total_samples, 4);
    }
}
