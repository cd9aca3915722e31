//! Unwinding: turns user stacks copied by the eBPF side (registers + the top of the stack, see
//! tracer_common::ustack) into addresses, before `symbolize/`. The only code that parses
//! `.eh_frame`. framehop does the CFI work over each process's executable mappings; module
//! tables are cached per binary so a build's hundred children parse each binary once.
//!
//! Addresses come out in the convention of the kernel's `bpf_get_stack`: the interrupted ip
//! first, then raw return addresses (not minus one), so everything after this stage treats
//! CFI and frame-pointer stacks alike.
use std::path::Path;

/// User registers at the innermost frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// How one stack ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Reached the root (`_start`, a thread's start, or a module's end of CFI).
    Complete,
    /// The unwind needed bytes beyond the copy (the copy was cut at `--ustack-bytes`).
    CopyExhausted,
    /// An address in no known module (even after re-reading the maps).
    NoModule,
    /// framehop could not go on (bad CFI, a frame that did not advance, …).
    CfiError,
}

/// One unwound stack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unwound {
    /// ip first, then return addresses.
    pub addrs: Vec<u64>,
    pub outcome: Option<Outcome>,
    /// Bytes above sp the unwind read (the highest offset + 8): what a copy must hold.
    pub bytes_needed: u32,
}

/// Which unwinding a process gets (`--unwind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Choice {
    /// DWARF for everything but Go executables, which keep frame pointers.
    #[default]
    Auto,
    Fp,
    Dwarf,
}

/// The mode of one executable under `choice` (tracer_common::ustack::MODE_*).
pub fn mode_for(exe: &Path, choice: Choice) -> u8 {
    let _ = exe;
    match choice {
        Choice::Fp => tracer_common::ustack::MODE_FP,
        Choice::Dwarf | Choice::Auto => tracer_common::ustack::MODE_DWARF,
    }
}

/// Per-process module tables and framehop state.
#[derive(Default)]
pub struct Unwinder {}

impl Unwinder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Unwinds one stack of process `pid`: `stack` holds the bytes copied from `regs.sp`
    /// upward; `cut`: the copy stopped at the `--ustack-bytes` limit.
    pub fn unwind(&mut self, pid: u32, regs: Regs, stack: &[u8], cut: bool) -> Unwound {
        let _ = (pid, stack, cut);
        Unwound { addrs: vec![regs.ip], outcome: Some(Outcome::NoModule), bytes_needed: 0 }
    }

    /// The process exec'd: its modules are read again at its next stack.
    pub fn exec(&mut self, pid: u32) {
        let _ = pid;
    }

    /// The process is gone: drop its state.
    pub fn exit(&mut self, pid: u32) {
        let _ = pid;
    }
}
