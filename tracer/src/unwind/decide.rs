//! Which unwinding a process gets: Go executables keep frame pointers (no `.eh_frame`, and
//! the Go toolchain keeps frame pointers in 82 % of functions), everything else DWARF.
use std::path::Path;

use object::Object;

use super::Choice;
use tracer_common::ustack::{MODE_DWARF, MODE_FP};

/// The mode of one executable under `choice` (tracer_common::ustack::MODE_*).
pub fn mode_for(exe: &Path, choice: Choice) -> u8 {
    match choice {
        Choice::Fp => MODE_FP,
        Choice::Dwarf => MODE_DWARF,
        Choice::Auto if is_go(exe) => MODE_FP,
        Choice::Auto => MODE_DWARF,
    }
}

/// Whether `exe` is a Go executable (a `.go.buildinfo` section; stripped ones keep it). An
/// unreadable file is not Go: DWARF mode then costs a copy per stack, never a wrong stack.
pub fn is_go(exe: &Path) -> bool {
    let Ok(f) = std::fs::File::open(exe) else { return false };
    // SAFETY: read-only private mapping, dropped before returning; only section headers
    // are read.
    let Ok(map) = (unsafe { memmap2::Mmap::map(&f) }) else { return false };
    let Ok(obj) = object::File::parse(&map[..]) else { return false };
    let go = obj.section_by_name(".go.buildinfo").is_some() || obj.section_by_name(".gopclntab").is_some();
    go
}
