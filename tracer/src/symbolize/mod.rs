//! Raw addresses → named frames. The only stage that reads binaries (through a `Resolver`, so
//! tests can use a fake table). User addresses are turned into (file, file offset) with the
//! mappings captured while each process was alive, so processes that exited during the session
//! still symbolize; kernel addresses go through kallsyms.
mod blaze;
pub mod gopclntab;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub use blaze::BlazeResolver;

use crate::capture::{Capture, Leaf, ProcessInfo};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// The pseudo-frame at the root of every stack: the process name.
    Process,
    User,
    Kernel,
}

/// One named frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Frame {
    pub kind: FrameKind,
    /// Function name (demangled), or `[unknown] (module+0xoffset)`.
    pub function: String,
    /// File the code lives in ("[kernel]" for kernel frames, the comm for the process frame).
    pub module: String,
    /// Offset in `module` (file offset for user code, address for kernel code).
    pub offset: u64,
    /// Build id of `module` when known.
    pub build_id: Option<String>,
}

impl Frame {
    pub fn process(comm: &str) -> Self {
        Frame { kind: FrameKind::Process, function: comm.into(), module: comm.into(), offset: 0, build_id: None }
    }

    /// The name used in folded stacks and flame graphs: kernel frames get perf's `_[k]`.
    pub fn folded_name(&self) -> String {
        let name = self.function.replace(';', ":");
        match self.kind {
            FrameKind::Kernel => format!("{name}_[k]"),
            _ => name,
        }
    }

    pub fn is_unknown(&self) -> bool {
        self.function.starts_with("[unknown]")
    }
}

/// Whether a frame is plumbing rather than the program's own code: the C library and loader,
/// the vDSO, and the Go runtime's scheduling and syscall layers. Reports name the innermost
/// frame that is not, so "blocked in read" reads as "blocked in read, from blocking_read".
pub fn is_plumbing(f: &Frame) -> bool {
    let m = f.module.as_str();
    let n = f.function.as_str();
    f.kind != FrameKind::User
        || m.starts_with("libc.so")
        || m.starts_with("libc-")
        || m.starts_with("ld-linux")
        || m.starts_with("libpthread")
        || m == "[vdso]"
        || n.starts_with("runtime.")
        || n.starts_with("internal/runtime/")
        || n.starts_with("runtime/internal/")
        || n.starts_with("syscall.")
        || n.starts_with("internal/poll.")
        || n.starts_with("internal/syscall/")
        || n.starts_with("[unknown]")
}

/// The innermost user-space frame.
pub fn leaf_function(frames: &[Frame]) -> Option<String> {
    frames.iter().rev().find(|f| f.kind == FrameKind::User).map(|f| f.function.clone())
}

/// The innermost frame of the program's own code (see `is_plumbing`).
pub fn caller_function(frames: &[Frame]) -> Option<String> {
    frames.iter().rev().find(|f| f.kind == FrameKind::User && !is_plumbing(f)).map(|f| f.function.clone())
}

/// A symbolized stack, root (the process frame) first, with its sample count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stack {
    pub tgid: u32,
    pub tid: u32,
    pub frames: Vec<Frame>,
    pub count: u64,
}

/// Looks up names. `user` gets file offsets within one file and returns, for each, the
/// function names outermost first (more than one when calls were inlined), or an empty vector
/// when there is no symbol.
pub trait Resolver {
    fn user(&mut self, path: &str, offsets: &[u64]) -> Vec<Vec<String>>;
    fn kernel(&mut self, addrs: &[u64]) -> Vec<Option<String>>;
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn unknown(module: &str, offset: u64) -> String {
    format!("[unknown] ({module}+{offset:#x})")
}

/// Where a user address lives: (path, file offset, build id), if a mapping covers it.
fn locate(proc_: Option<&ProcessInfo>, addr: u64) -> Option<(&str, u64, Option<&String>)> {
    let m = proc_?.mapping_of(addr)?;
    Some((m.path.as_str(), addr - m.start + m.offset, m.build_id.as_ref()))
}

/// One stack to symbolize: user and kernel frames leaf first, as the kernel gives them.
pub struct StackInput<'a> {
    pub tgid: u32,
    pub tid: u32,
    pub user: &'a [u64],
    pub kernel: &'a [u64],
    /// Callers the frame-pointer walk skipped (candidates, validated here).
    pub leaf: Leaf,
    pub count: u64,
}

/// Symbolizes all on-CPU samples of a capture.
pub fn cpu_stacks(capture: &Capture, resolver: &mut dyn Resolver) -> Vec<Stack> {
    let raw: Vec<StackInput> = capture
        .cpu_samples
        .iter()
        .map(|s| StackInput {
            tgid: s.tgid,
            tid: s.tid,
            user: &s.user,
            kernel: &s.kernel,
            leaf: s.leaf,
            count: s.count,
        })
        .collect();
    stacks(capture, &raw, resolver)
}

/// Every user address to look up for one stack: the walked frames (return addresses at
/// `ret-1`), the skipped-caller candidates and their call targets.
fn lookups_of<'a>(s: &'a StackInput<'_>) -> impl Iterator<Item = u64> + 'a {
    let walked = s.user.iter().enumerate().map(|(i, &a)| lookup_addr(a, i));
    let rets = s.leaf.rets.iter().filter(|&&r| r != 0).map(|&r| r - 1);
    let callees = s.leaf.callees.iter().copied().filter(|&c| c != 0);
    walked.chain(rets).chain(callees)
}

/// Symbolizes stacks.
pub fn stacks(capture: &Capture, raw: &[StackInput], resolver: &mut dyn Resolver) -> Vec<Stack> {
    // Pass 1: collect every distinct (file, offset) and kernel address, to look them up in
    // batches (one pass per binary is what makes symbolization fast).
    let mut by_file: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut kaddrs: Vec<u64> = Vec::new();
    for s in raw {
        let p = capture.processes.get(&s.tgid);
        for a in lookups_of(s) {
            if let Some((path, off, _)) = locate(p, a) {
                if path.starts_with('/') {
                    by_file.entry(path).or_default().push(off);
                }
            }
        }
        kaddrs.extend_from_slice(s.kernel);
    }
    let mut user_names: HashMap<(&str, u64), Vec<String>> = HashMap::new();
    for (path, mut offs) in by_file {
        offs.sort_unstable();
        offs.dedup();
        let names = resolver.user(path, &offs);
        for (off, n) in offs.into_iter().zip(names) {
            user_names.insert((path, off), n);
        }
    }
    kaddrs.sort_unstable();
    kaddrs.dedup();
    let knames: HashMap<u64, Option<String>> =
        if kaddrs.is_empty() { HashMap::new() } else { kaddrs.iter().copied().zip(resolver.kernel(&kaddrs)).collect() };

    // Pass 2: build root-first frame lists.
    raw.iter()
        .map(|s| {
            let p = capture.processes.get(&s.tgid);
            let comm = p.map(|p| p.comm.as_str()).filter(|c| !c.is_empty()).unwrap_or("[unknown process]");
            let lookups = with_skipped_callers(s, p, &user_names);
            let mut frames = vec![Frame::process(comm)];
            for &a in lookups.iter().rev() {
                match locate(p, a) {
                    Some((path, off, build_id)) => {
                        let module = basename(path).to_owned();
                        let names = user_names.get(&(path, off)).cloned().unwrap_or_default();
                        if names.is_empty() {
                            let function = unknown(&module, off);
                            frames.push(Frame {
                                kind: FrameKind::User,
                                function,
                                module: module.clone(),
                                offset: off,
                                build_id: build_id.cloned(),
                            });
                        }
                        let mut prev: Option<String> = None;
                        for n in names {
                            // An inlined expansion can repeat the symbol's own name.
                            if prev.as_ref() == Some(&n) {
                                continue;
                            }
                            prev = Some(n.clone());
                            frames.push(Frame {
                                kind: FrameKind::User,
                                function: n,
                                module: module.clone(),
                                offset: off,
                                build_id: build_id.cloned(),
                            });
                        }
                    }
                    None => frames.push(Frame {
                        kind: FrameKind::User,
                        function: unknown("[anon]", a),
                        module: "[anon]".into(),
                        offset: a,
                        build_id: None,
                    }),
                }
            }
            for &addr in s.kernel.iter().rev() {
                let function = knames.get(&addr).cloned().flatten().unwrap_or_else(|| unknown("[kernel]", addr));
                frames.push(Frame {
                    kind: FrameKind::Kernel,
                    function,
                    module: "[kernel]".into(),
                    offset: addr,
                    build_id: None,
                });
            }
            strip_probe_frames(&mut frames);
            Stack { tgid: s.tgid, tid: s.tid, frames, count: s.count }
        })
        .collect()
}

/// A kernel stack taken inside a tracepoint program starts with the program's own JIT image
/// and the glue that ran it (`bpf_trace_run2`, `__bpf_trace_*`, `perf_trace_*`): rtrace's
/// frames, not the thread's. They are dropped from the innermost such frame on.
fn strip_probe_frames(frames: &mut Vec<Frame>) {
    let glue = |f: &Frame| {
        f.kind == FrameKind::Kernel
            && (f.function.starts_with("bpf_trace_run")
                || f.function.starts_with("__bpf_trace_")
                || f.function.starts_with("perf_trace_")
                || f.function == "trace_call_bpf")
    };
    if let Some(i) = frames.iter().rposition(glue) {
        frames.truncate(i);
    }
}

/// The lookup addresses of a stack, leaf first, with the skipped callers inserted after the
/// leaf when the chain is consistent: each candidate must follow a call into the function
/// found so far (a direct call's target is that function, or a stub in another module such as
/// a PLT entry; an indirect call cannot be checked and is accepted only for the first), and
/// the insertion stops at the first candidate that fails, has no symbol, or reaches the
/// function the walk resumes in.
fn with_skipped_callers(
    s: &StackInput,
    p: Option<&ProcessInfo>,
    names: &HashMap<(&str, u64), Vec<String>>,
) -> Vec<u64> {
    let mut out: Vec<u64> = s.user.iter().enumerate().map(|(i, &a)| lookup_addr(a, i)).collect();
    if s.user.is_empty() || s.leaf.is_empty() {
        return out;
    }
    let fn_at = |a: u64| -> Option<(&str, &str)> {
        let (path, off, _) = locate(p, a)?;
        Some((names.get(&(path, off))?.first()?.as_str(), path))
    };
    let resume = out.get(1).and_then(|&a| fn_at(a)).map(|(f, _)| f);
    let Some((mut expect_fn, mut expect_mod)) = fn_at(out[0]) else { return out };
    let mut inserted = Vec::new();
    for (i, (&ret, &callee)) in s.leaf.rets.iter().zip(&s.leaf.callees).enumerate() {
        if ret == 0 || Some(&ret) == s.user.get(1) {
            break;
        }
        // Past the first, a candidate may be a stale return address left in a caller's
        // locals by an earlier call: only a direct call into the function found so far counts.
        if i > 0 && callee == 0 {
            break;
        }
        let Some((f, module)) = fn_at(ret - 1) else { break };
        if callee != 0 {
            let ok = match fn_at(callee) {
                Some((cf, cmod)) => cf == expect_fn || cmod != expect_mod,
                None => locate(p, callee).is_some_and(|(cpath, _, _)| cpath != expect_mod),
            };
            if !ok {
                break;
            }
        }
        if Some(f) == resume || f == expect_fn {
            break;
        }
        inserted.push(ret - 1);
        (expect_fn, expect_mod) = (f, module);
    }
    out.splice(1..1, inserted);
    out
}

/// Frames after the leaf are return addresses: the call instruction is just before them, and
/// looking up `ret - 1` keeps a call at the very end of a function attributed to it (perf does
/// the same).
fn lookup_addr(addr: u64, index: usize) -> u64 {
    if index == 0 {
        addr
    } else {
        addr.saturating_sub(1)
    }
}

#[cfg(test)]
pub mod fake {
    //! A fake resolver over literal tables, for tests without binaries.
    use std::collections::HashMap;

    #[derive(Default)]
    pub struct FakeResolver {
        /// (path, [start, end) file-offset range, name).
        pub user: Vec<(String, u64, u64, String)>,
        pub kernel: HashMap<u64, String>,
    }

    impl super::Resolver for FakeResolver {
        fn user(&mut self, path: &str, offsets: &[u64]) -> Vec<Vec<String>> {
            offsets
                .iter()
                .map(|&o| {
                    self.user
                        .iter()
                        .filter(|(p, s, e, _)| p == path && *s <= o && o < *e)
                        .map(|(_, _, _, n)| n.clone())
                        .collect()
                })
                .collect()
        }
        fn kernel(&mut self, addrs: &[u64]) -> Vec<Option<String>> {
            addrs.iter().map(|a| self.kernel.get(a).cloned()).collect()
        }
    }
}

#[cfg(test)]
mod tests;
