//! The Go runtime of a traced process, read from outside: no stop, no signal, no agent, no
//! write. Identifies a Go executable (`binary`), resolves the runtime's struct offsets
//! (DWARF, else a per-version table) and global addresses (symbols, else the code that uses
//! them), validates both against the live process, and reads goroutines, GC statistics and
//! the heap profile from its memory (`mem`) into the plain records of `capture::go`.
//! Analysis and rendering of those records live in `analyze/` and `render/`, as for every
//! other part of the capture; the Go uprobes live in `tracer-ebpf` (`go.rs`).
pub mod binary;
pub mod cache;
pub mod gcstats;
pub mod globals;
pub mod goroutines;
pub mod heap;
pub mod layout;
pub mod lines;
pub mod mem;
pub mod pcsp;
pub mod stw;
pub mod target;
#[cfg(test)]
mod tests;
pub mod track;
pub mod uprobes;
