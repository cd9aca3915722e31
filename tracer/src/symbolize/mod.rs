//! Raw addresses → named frames. The only stage that reads binaries (through a `Resolver`, so
//! tests can use a fake table). User addresses are turned into (file, file offset) with the
//! mappings captured while each process was alive, so processes that exited during the session
//! still symbolize; kernel addresses go through kallsyms.
mod blaze;
pub mod chain;
pub mod gopclntab;
pub mod kernel;
mod table;
pub mod vdso;

use serde::{Deserialize, Serialize};

pub use blaze::BlazeResolver;
pub use table::{Prepared, Symbols};

use crate::capture::{Capture, Leaf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// The pseudo-frame at the root of every stack: the process name.
    Process,
    User,
    Kernel,
}

/// A shared, immutable string: a build's report holds a million frames naming a few thousand
/// functions, so frames share their names instead of each owning copies.
pub type Name = std::sync::Arc<str>;

/// One named frame: 40 bytes (a build's report holds ~30,000 distinct frame lists of ~20
/// frames; with the build id a name of its own it was 64).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Frame {
    pub kind: FrameKind,
    /// Function name (demangled), or `[unknown] (module+0xoffset)`.
    pub function: Name,
    /// File the code lives in ("[kernel]" for kernel frames, the comm for the process frame),
    /// with its build id.
    pub module: Module,
    /// Offset in `module` (file offset for user code, address for kernel code).
    pub offset: u64,
}

/// A frame's file and its build id when known, shared by the frames of that file (one
/// pointer). Reads as its name (`&*module`); serialized as the name alone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Module(std::sync::Arc<(Name, Option<Name>)>);

impl Module {
    pub fn new(name: Name, build_id: Option<Name>) -> Self {
        Module(std::sync::Arc::new((name, build_id)))
    }

    pub fn name(&self) -> &Name {
        &self.0 .0
    }

    pub fn build_id(&self) -> Option<&Name> {
        self.0 .1.as_ref()
    }

    /// Identity of the shared value (frames of one file built by one symbolizer share it).
    pub fn as_ptr(&self) -> *const u8 {
        std::sync::Arc::as_ptr(&self.0).cast()
    }
}

impl std::ops::Deref for Module {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0 .0
    }
}

impl From<&str> for Module {
    fn from(name: &str) -> Self {
        Module::new(name.into(), None)
    }
}

impl Serialize for Module {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

impl<'de> Deserialize<'de> for Module {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Module::from(String::deserialize(d)?.as_str()))
    }
}

impl Frame {
    pub fn process(comm: &str) -> Self {
        Frame { kind: FrameKind::Process, function: comm.into(), module: comm.into(), offset: 0 }
    }

    /// The name used in folded stacks and flame graphs: kernel frames get perf's `_[k]`.
    pub fn folded_name(&self) -> String {
        let mut s = String::with_capacity(self.function.len() + 4);
        self.push_folded(&mut s);
        s
    }

    /// Appends `folded_name` to `out` (without a String of its own per frame).
    pub fn push_folded(&self, out: &mut String) {
        if self.function.contains(';') {
            out.push_str(&self.function.replace(';', ":"));
        } else {
            out.push_str(&self.function);
        }
        if self.kind == FrameKind::Kernel {
            out.push_str("_[k]");
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
    let m: &str = &f.module;
    let n: &str = &f.function;
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
    frames.iter().rev().find(|f| f.kind == FrameKind::User).map(|f| f.function.to_string())
}

/// The innermost frame of the program's own code (see `is_plumbing`).
pub fn caller_function(frames: &[Frame]) -> Option<String> {
    frames.iter().rev().find(|f| f.kind == FrameKind::User && !is_plumbing(f)).map(|f| f.function.to_string())
}

/// A symbolized frame list, root first. Shared: a build's stacks repeat across threads and
/// across the processes of one binary, and each distinct list is held once.
pub type Frames = std::sync::Arc<[Frame]>;

/// A symbolized stack, root (the process frame) first, with its sample count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stack {
    pub tgid: u32,
    pub tid: u32,
    pub frames: Frames,
    pub count: u64,
}

/// Looks up names. `user` gets file offsets within one file and returns, for each, the
/// function names outermost first (more than one when calls were inlined), or an empty vector
/// when there is no symbol. `code` reads bytes of a file (for the chain check's call decoding).
pub trait Resolver {
    fn user(&mut self, path: &str, offsets: &[u64]) -> Vec<Vec<String>>;
    fn kernel(&mut self, addrs: &[u64]) -> Vec<Option<String>>;
    fn code(&mut self, _path: &str, _offset: u64, _len: usize) -> Option<Vec<u8>> {
        None
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn unknown(module: &str, offset: u64) -> String {
    format!("[unknown] ({module}+{offset:#x})")
}

/// The end of user space on x86_64 (47-bit addresses; the kernel hands out higher ones only to
/// a process that asks for them with an mmap hint).
const USER_END: u64 = 1 << 47;

/// The first page is never mapped (vm.mmap_min_addr is 64 KiB by default): 0, 1… are not
/// code.
const USER_START: u64 = 0x1000;

/// The walked user frames up to the first that cannot be code: in the first page (0 and small
/// integers), or not a user-space address (`[anon]+0xe9b5dba5b5c0fbce`). A frame-pointer walk
/// that read such a "return address" had followed a frame pointer into data, so the frames
/// after it are not frames either.
fn user_frames(user: &[u64]) -> &[u64] {
    &user[..user.iter().position(|&a| !(USER_START..USER_END).contains(&a)).unwrap_or(user.len())]
}

/// Where a user address lives: the name to read its file by (`read`: the mapped path, a held
/// copy of a deleted file, or `[vdso]`) and the file offset.
struct Loc<'a> {
    read: &'a str,
    off: u64,
}

fn locate<'a>(capture: &'a Capture, tgid: u32, addr: u64) -> Option<Loc<'a>> {
    let m = capture.processes.get(&tgid)?.mapping_of(addr)?;
    let read = if m.path.ends_with(" (deleted)") {
        capture.held_files.path_of(tgid, &m.path).unwrap_or(&m.path)
    } else {
        &m.path
    };
    Some(Loc { read, off: addr - m.start + m.offset })
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

/// What to do with the frames of rtrace's own probes in a kernel stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeFrames {
    /// Drop them: the stack was taken inside the probe, which is not what the thread was doing.
    Strip,
    /// Name them as rtrace's: a CPU sample that lands in a probe is rtrace's cost.
    Label,
}

/// Symbolizes all on-CPU samples of a capture.
pub fn cpu_stacks(capture: &Capture, resolver: &mut dyn Resolver) -> Vec<Stack> {
    Symbols::new(capture).cpu_stacks(&cpu_inputs(capture), resolver)
}

/// The on-CPU samples of a capture, as stacks to symbolize.
pub fn cpu_inputs(capture: &Capture) -> Vec<StackInput<'_>> {
    capture
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
        .collect()
}

/// Every user address to look up for one stack: the walked frames (return addresses at
/// `ret-1`), the skipped-caller candidates and their call targets.
fn lookups_of<'a>(user: &'a [u64], leaf: &'a Leaf) -> impl Iterator<Item = u64> + 'a {
    let walked = user.iter().enumerate().map(|(i, &a)| lookup_addr(a, i));
    let rets = leaf.rets.iter().filter(|&&r| r != 0).map(|&r| r - 1);
    let callees = leaf.callees.iter().copied().filter(|&c| c != 0);
    walked.chain(rets).chain(callees)
}

/// The call before the return address the walk resumed at (`user[1]`), when skipped callers
/// are to be checked and its code can be read.
fn resume_call(capture: &Capture, s: &StackInput, user: &[u64], resolver: &mut dyn Resolver) -> Option<chain::Call> {
    if s.leaf.is_empty() {
        return None;
    }
    let ret = *user.get(1)?;
    let l = locate(capture, s.tgid, ret)?;
    if !l.read.starts_with('/') || l.off < 8 {
        return None;
    }
    chain::decode_call(&resolver.code(l.read, l.off - 8, 8)?, ret)
}

/// Symbolizes stacks (probe frames dropped: for stacks taken inside rtrace's hooks).
pub fn stacks(capture: &Capture, raw: &[StackInput], resolver: &mut dyn Resolver) -> Vec<Stack> {
    Symbols::new(capture).stacks(raw, resolver)
}

/// The name of the frame that stands for rtrace's own probes in an on-CPU stack.
pub const PROBE_FRAME: &str = "[rtrace probe]";

/// A kernel stack taken inside a tracepoint program starts with the program's own JIT image
/// and the glue that ran it (`bpf_trace_run2`, `__bpf_trace_*`, `perf_trace_*`): rtrace's
/// frames, not the thread's. From the innermost such frame on they are dropped, or (on-CPU)
/// replaced by one frame naming the hook, `[rtrace probe] sys_exit`, so that the time shows as
/// rtrace's cost under the call path that triggered it.
/// Whether a kernel function is the glue that runs rtrace's probes (a stack taken in a probe
/// has it and the probe's own frames innermost).
pub fn is_probe_glue(function: &str) -> bool {
    function.starts_with("bpf_trace_run")
        || function.starts_with("__bpf_trace_")
        || function.starts_with("perf_trace_")
        || function == "trace_call_bpf"
}

fn probe_frames(frames: &mut Vec<Frame>, probe: ProbeFrames) {
    let glue = |f: &Frame| f.kind == FrameKind::Kernel && is_probe_glue(&f.function);
    let Some(i) = frames.iter().position(glue) else { return };
    let hook = frames[i..].iter().find_map(|f| f.function.strip_prefix("__bpf_trace_")).map(str::to_owned);
    frames.truncate(i);
    if probe == ProbeFrames::Label {
        let function = match hook {
            Some(h) => format!("{PROBE_FRAME} {h}"),
            None => PROBE_FRAME.to_owned(),
        };
        frames.push(Frame { kind: FrameKind::Kernel, function: function.into(), module: "[rtrace]".into(), offset: 0 });
    }
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
        /// (path, file offset, bytes there): code for the chain check to decode.
        pub code: Vec<(String, u64, Vec<u8>)>,
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
        fn code(&mut self, path: &str, offset: u64, len: usize) -> Option<Vec<u8>> {
            let (_, start, bytes) = self
                .code
                .iter()
                .find(|(p, s, b)| p == path && *s <= offset && offset + len as u64 <= s + b.len() as u64)?;
            let at = (offset - start) as usize;
            Some(bytes[at..at + len].to_vec())
        }
    }
}

#[cfg(test)]
mod tests;
