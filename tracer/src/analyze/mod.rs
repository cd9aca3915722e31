//! Pure functions from symbolized captures to analyses. No I/O.
pub mod build;
pub mod children;
pub mod cpu;
pub mod gc;
pub mod go;
pub mod goheap;
pub mod goleak;
pub mod gopark;
pub mod goroutines;
pub mod offcpu;
pub mod sysargs;
pub mod syscalls;
pub mod target;
pub mod unwind;
