//! Pure functions from symbolized captures to analyses. No I/O.
pub mod build;
pub mod children;
pub mod cpu;
pub mod gopark;
pub mod offcpu;
pub mod sysargs;
pub mod syscalls;
pub mod target;
