//! One symbolization of a capture's stacks, shared by every stack list built from it (on-CPU,
//! off-CPU, blocked, waker, slow calls): each distinct (file, offset) and kernel address is
//! looked up once, each distinct (process, address) located once, and each distinct stack built
//! once and shared (`Frames`). A go build runs a hundred `compile` processes of one binary:
//! their stacks are the same frames, and the report holds them once.
use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt, HashSet};

use super::{
    basename, chain, lookup_addr, lookups_of, probe_frames, resume_call, unknown, user_frames, vdso, Frame, FrameKind,
    Frames, Module, Name, ProbeFrames, Resolver, Stack, StackInput,
};
use crate::capture::{Capture, Leaf, Mapping};

/// A mapped file, as one or more processes mapped it.
struct File {
    /// The name frames show (the mapped path's file name), with the file's build id.
    module: Module,
    /// What to read for names: the mapped path, a held copy of a deleted file, or `[vdso]`.
    read: Name,
    /// Whether names can be looked up (a file to read, or the captured vDSO table).
    resolvable: bool,
    /// Names by file offset, outermost first (several when calls were inlined).
    names: HashMap<u64, Vec<Name>>,
}

/// What one lookup address stands for, independent of the process: a hundred processes of one
/// binary share it.
#[derive(PartialEq, Eq, Hash)]
enum Place {
    /// The root frame: a process name.
    Process(Name),
    /// In no mapping: the frame names the address itself.
    Anon(u64),
    /// In a file (index in `files`), at a file offset.
    File(u32, u64),
}

/// Stacks noted for the next lookup batch (`Symbols::prepare`), to symbolize with `finish`.
pub struct Prepared {
    calls: Vec<Option<chain::Call>>,
    probe: ProbeFrames,
}

/// Separates the user part of a stack key from the kernel addresses that follow.
const KERNEL_PART: u64 = u64::MAX;

/// Symbolized stacks of one capture (see the module comment).
pub struct Symbols<'c> {
    capture: &'c Capture,
    names: Interner,
    files: Vec<File>,
    file_ids: HashMap<(Name, Name, Option<Name>), u32>,
    /// Per process, the file of each of its mappings.
    process_files: HashMap<u32, Vec<u32>>,
    kernel_names: HashMap<u64, Option<Name>>,
    places: Vec<Vec<Frame>>,
    place_ids: HashMap<Place, u64>,
    /// A stack by its key: probe handling, places (the process first), then kernel addresses.
    by_key: HashMap<Vec<u64>, Frames>,
    /// (file, offset)s and kernel addresses to look up (see `prepare`).
    pending_user: BTreeMap<u32, Vec<u64>>,
    pending_kernel: Vec<u64>,
    /// The modules of anonymous code and of kernel frames, shared by all their frames.
    anon: Module,
    kernel: Module,
}

impl<'c> Symbols<'c> {
    pub fn new(capture: &'c Capture) -> Self {
        Symbols {
            capture,
            names: Interner::default(),
            files: Vec::new(),
            file_ids: HashMap::new(),
            process_files: HashMap::new(),
            kernel_names: HashMap::new(),
            places: Vec::new(),
            place_ids: HashMap::new(),
            by_key: HashMap::new(),
            pending_user: BTreeMap::new(),
            pending_kernel: Vec::new(),
            anon: Module::from("[anon]"),
            kernel: Module::from("[kernel]"),
        }
    }

    /// Symbolizes stacks taken inside rtrace's hooks (probe frames dropped).
    pub fn stacks(&mut self, raw: &[StackInput], resolver: &mut dyn Resolver) -> Vec<Stack> {
        self.stacks_as(raw, None, resolver, ProbeFrames::Strip)
    }

    /// Symbolizes on-CPU samples (a sample in a probe is named as rtrace's).
    pub fn cpu_stacks(&mut self, raw: &[StackInput], resolver: &mut dyn Resolver) -> Vec<Stack> {
        self.stacks_as(raw, None, resolver, ProbeFrames::Label)
    }

    /// The names of kernel stacks' frames without building them (a caller that only asks what
    /// ran, as the wakeups' interrupt check does): each stack's names root first, up to the
    /// glue of rtrace's probes (what `stacks` would drop). Looked up once, shared with the
    /// lists symbolized later.
    pub fn kernel_names<'s>(
        &'s mut self,
        stacks: &'s [&'s [u64]],
        resolver: &mut dyn Resolver,
    ) -> impl Iterator<Item = Vec<&'s str>> + 's {
        for k in stacks {
            self.note_kernel(k);
        }
        self.look_up(resolver);
        let names = &self.kernel_names;
        stacks.iter().map(move |k| {
            k.iter()
                .rev()
                .filter(|&&a| a != 0)
                .map(|a| names.get(a).and_then(|n| n.as_deref()).unwrap_or(""))
                .take_while(|n| !super::is_probe_glue(n))
                .collect()
        })
    }

    /// Notes what these stacks will need looked up, so that the next symbolization looks up
    /// every binary once for all prepared lists (and the resolver can drop each binary's
    /// tables after its one batch); `finish` symbolizes them (probe frames dropped).
    pub fn prepare(&mut self, raw: &[StackInput], resolver: &mut dyn Resolver) -> Prepared {
        Prepared { calls: self.collect(raw, resolver), probe: ProbeFrames::Strip }
    }

    /// The same for on-CPU samples (a sample in a probe is named as rtrace's).
    pub fn prepare_cpu(&mut self, raw: &[StackInput], resolver: &mut dyn Resolver) -> Prepared {
        Prepared { calls: self.collect(raw, resolver), probe: ProbeFrames::Label }
    }

    /// Symbolizes prepared stacks (the same `raw`), each root frame named `roots[i]` when
    /// given instead of the process's name (a waker's own comm, or the interrupt it ran in).
    pub fn finish(
        &mut self,
        raw: &[StackInput],
        prepared: Prepared,
        roots: Option<&[&str]>,
        resolver: &mut dyn Resolver,
    ) -> Vec<Stack> {
        assert_eq!(raw.len(), prepared.calls.len(), "finish takes the stacks given to prepare");
        self.look_up(resolver);
        self.build_all(raw, prepared.calls, roots, prepared.probe)
    }

    /// Pass 1: every (file, offset) and kernel address not looked up yet goes to the pending
    /// batches; returns each stack's resume call (for the chain check).
    fn collect(&mut self, raw: &[StackInput], resolver: &mut dyn Resolver) -> Vec<Option<chain::Call>> {
        let capture = self.capture;
        let mut calls: Vec<Option<chain::Call>> = Vec::with_capacity(raw.len());
        // A stack of the same address lists as one before it needs nothing more (see `Identity`).
        let mut seen: HashMap<Identity, Option<chain::Call>> = HashMap::new();
        for s in raw {
            if let Some(&call) = seen.get(&identity(s)) {
                calls.push(call);
                continue;
            }
            let user = user_frames(s.user);
            let call = resume_call(capture, s, user, resolver);
            let target = match call {
                Some(chain::Call::Direct(t)) => Some(t),
                _ => None,
            };
            calls.push(call);
            self.files_of(s.tgid);
            for a in lookups_of(user, &s.leaf).chain(target) {
                if let Some((fid, off)) = self.file_at(s.tgid, a) {
                    let f = &self.files[fid as usize];
                    if f.resolvable && !f.names.contains_key(&off) {
                        self.pending_user.entry(fid).or_default().push(off);
                    }
                }
            }
            self.note_kernel(s.kernel);
            seen.insert(identity(s), call);
        }
        calls
    }

    /// The kernel addresses of a stack not looked up yet go to the pending batch.
    fn note_kernel(&mut self, kernel: &[u64]) {
        let known = &self.kernel_names;
        self.pending_kernel.extend(kernel.iter().filter(|&&a| a != 0 && !known.contains_key(&a)));
    }

    fn stacks_as(
        &mut self,
        raw: &[StackInput],
        roots: Option<&[&str]>,
        resolver: &mut dyn Resolver,
        probe: ProbeFrames,
    ) -> Vec<Stack> {
        let calls = self.collect(raw, resolver);
        self.look_up(resolver);
        self.build_all(raw, calls, roots, probe)
    }

    /// Pass 2: each stack's key; frames built only for a key not seen before.
    fn build_all(
        &mut self,
        raw: &[StackInput],
        calls: Vec<Option<chain::Call>>,
        roots: Option<&[&str]>,
        probe: ProbeFrames,
    ) -> Vec<Stack> {
        let capture = self.capture;
        let mut out = Vec::with_capacity(raw.len());
        let mut key: Vec<u64> = Vec::new();
        // The same address lists (see `Identity`) under the same root are the same stack.
        let mut same: HashMap<(Identity, usize), Frames> = HashMap::new();
        for (i, (s, call)) in raw.iter().zip(calls).enumerate() {
            let comm = capture.processes.get(&s.tgid).map(|p| p.comm.as_str()).filter(|c| !c.is_empty());
            let root = roots.and_then(|r| r.get(i).copied()).or(comm);
            let root = self.names.get(root.unwrap_or("[unknown process]"));
            let id = (identity(s), root.as_ptr() as usize);
            if let Some(frames) = same.get(&id) {
                out.push(Stack { tgid: s.tgid, tid: s.tid, frames: frames.clone(), count: s.count });
                continue;
            }
            let lookups = self.chain_of(s, call);
            key.clear();
            key.push(probe as u64);
            key.push(self.place(Place::Process(root)));
            for &a in lookups.iter().rev() {
                let place = match self.file_at(s.tgid, a) {
                    Some((fid, off)) => Place::File(fid, off),
                    None => Place::Anon(a),
                };
                key.push(self.place(place));
            }
            key.push(KERNEL_PART);
            key.extend(s.kernel.iter().rev().filter(|&&a| a != 0));
            let frames = match self.by_key.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let f = self.build(&key, probe);
                    self.by_key.insert(key.clone(), f.clone());
                    f
                }
            };
            same.insert(id, frames.clone());
            out.push(Stack { tgid: s.tgid, tid: s.tid, frames, count: s.count });
        }
        out
    }

    /// The files of a process's mappings, found once per process.
    fn files_of(&mut self, tgid: u32) {
        if self.process_files.contains_key(&tgid) {
            return;
        }
        let capture = self.capture;
        let ids = match capture.processes.get(&tgid) {
            Some(p) => p.maps.iter().map(|m| self.file_id(tgid, m)).collect(),
            None => Vec::new(),
        };
        self.process_files.insert(tgid, ids);
    }

    fn file_id(&mut self, tgid: u32, m: &Mapping) -> u32 {
        let read = if m.path.ends_with(" (deleted)") {
            self.capture.held_files.path_of(tgid, &m.path).unwrap_or(&m.path)
        } else {
            &m.path
        };
        let key = (self.names.get(&m.path), self.names.get(read), m.build_id.as_deref().map(|b| self.names.get(b)));
        if let Some(&id) = self.file_ids.get(&key) {
            return id;
        }
        let id = self.files.len() as u32;
        self.files.push(File {
            module: Module::new(self.names.get(basename(&m.path)), key.2.clone()),
            read: key.1.clone(),
            resolvable: read.starts_with('/') || read == "[vdso]",
            names: HashMap::new(),
        });
        self.file_ids.insert(key, id);
        id
    }

    /// The file and file offset of a user address of a process (after `files_of`).
    fn file_at(&self, tgid: u32, addr: u64) -> Option<(u32, u64)> {
        let p = self.capture.processes.get(&tgid)?;
        let i = p.maps.iter().position(|m| m.start <= addr && addr < m.end)?;
        let m = &p.maps[i];
        Some((*self.process_files.get(&tgid)?.get(i)?, addr - m.start + m.offset))
    }

    /// Looks up the pending (file, offset)s, one batch per file, and kernel addresses.
    fn look_up(&mut self, resolver: &mut dyn Resolver) {
        for (fid, mut offs) in std::mem::take(&mut self.pending_user) {
            offs.sort_unstable();
            offs.dedup();
            let path = self.files[fid as usize].read.clone();
            let names: Vec<Vec<String>> = if &*path == "[vdso]" {
                offs.iter()
                    .map(|&o| vdso::lookup(&self.capture.vdso_symbols, o).map(str::to_owned).into_iter().collect())
                    .collect()
            } else {
                resolver.user(&path, &offs)
            };
            for (off, n) in offs.into_iter().zip(names) {
                let n = n.iter().map(|n| self.names.get(n)).collect();
                self.files[fid as usize].names.insert(off, n);
            }
        }
        let mut kaddrs = std::mem::take(&mut self.pending_kernel);
        kaddrs.sort_unstable();
        kaddrs.dedup();
        if !kaddrs.is_empty() {
            let names = resolver.kernel(&kaddrs);
            for (a, n) in kaddrs.into_iter().zip(names) {
                self.kernel_names.insert(a, n.map(|n| self.names.get(&n)));
            }
        }
    }

    /// The lookup addresses of a stack, leaf first, with the skipped callers that check out.
    fn chain_of(&self, s: &StackInput, call: Option<chain::Call>) -> Vec<u64> {
        let user = user_frames(s.user);
        let walked: Vec<u64> = user.iter().enumerate().map(|(i, &a)| lookup_addr(a, i)).collect();
        if s.leaf.is_empty() {
            return walked;
        }
        let at = |a: u64| {
            let (fid, off) = self.file_at(s.tgid, a)?;
            let file = &self.files[fid as usize];
            Some((file.names.get(&off).and_then(|n| n.first()).map(|n| &**n), &*file.read))
        };
        let input = chain::ChainInput {
            walked: &walked,
            resume_ret: user.get(1).copied(),
            rets: &s.leaf.rets,
            callees: &s.leaf.callees,
            resume_call: call,
        };
        chain::with_skipped_callers(&input, &at)
    }

    /// The id of a place, its frames built the first time.
    fn place(&mut self, place: Place) -> u64 {
        if let Some(&id) = self.place_ids.get(&place) {
            return id;
        }
        let frames = match &place {
            Place::Process(comm) => vec![Frame::process(comm)],
            Place::Anon(a) => vec![Frame {
                kind: FrameKind::User,
                function: unknown("[anon]", *a).into(),
                module: self.anon.clone(),
                offset: *a,
            }],
            &Place::File(fid, off) => {
                let file = &self.files[fid as usize];
                let frame = |function: Name| Frame {
                    kind: FrameKind::User,
                    function,
                    module: file.module.clone(),
                    offset: off,
                };
                let names = file.names.get(&off).map(Vec::as_slice).unwrap_or_default();
                let mut frames = Vec::with_capacity(names.len().max(1));
                if names.is_empty() {
                    frames.push(frame(unknown(&file.module, off).into()));
                }
                let mut prev: Option<&Name> = None;
                for n in names {
                    // An inlined expansion can repeat the symbol's own name.
                    if prev == Some(n) {
                        continue;
                    }
                    prev = Some(n);
                    frames.push(frame(n.clone()));
                }
                frames
            }
        };
        let id = self.places.len() as u64;
        self.places.push(frames);
        self.place_ids.insert(place, id);
        id
    }

    /// The frames of a stack key, root first.
    fn build(&mut self, key: &[u64], probe: ProbeFrames) -> Frames {
        let split = key.iter().position(|&k| k == KERNEL_PART).unwrap_or(key.len());
        let (places, kernel) = (&key[1..split], key.get(split + 1..).unwrap_or_default());
        let mut frames: Vec<Frame> =
            Vec::with_capacity(places.iter().map(|&p| self.places[p as usize].len()).sum::<usize>() + kernel.len());
        for &p in places {
            frames.extend(self.places[p as usize].iter().cloned());
        }
        for &addr in kernel {
            let function = match self.kernel_names.get(&addr) {
                Some(Some(n)) => n.clone(),
                _ => unknown("[kernel]", addr).into(),
            };
            frames.push(Frame { kind: FrameKind::Kernel, function, module: self.kernel.clone(), offset: addr });
        }
        probe_frames(&mut frames, probe);
        frames.into()
    }
}

/// A stack by the identity of its address lists, with its process and leaf repair: stacks
/// of one process whose lists are the same lists (the capture shares one per kernel stack id:
/// a build's 60,000 off-CPU records and wakeups repeat a few thousand) are the same stack,
/// found without walking it again. Sound within one call over `raw`: every list is borrowed
/// for all of it, so none is freed and its address reused meanwhile.
type Identity = (usize, usize, usize, usize, u32, Leaf);

fn identity(s: &StackInput) -> Identity {
    (s.user.as_ptr() as usize, s.user.len(), s.kernel.as_ptr() as usize, s.kernel.len(), s.tgid, s.leaf)
}

/// One shared `Name` per distinct string.
#[derive(Default)]
pub(super) struct Interner(HashSet<Name>);

impl Interner {
    pub(super) fn get(&mut self, s: &str) -> Name {
        if let Some(n) = self.0.get(s) {
            return n.clone();
        }
        let n: Name = s.into();
        self.0.insert(n.clone());
        n
    }
}
