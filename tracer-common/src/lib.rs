//! Types shared by the eBPF programs (`tracer-ebpf`) and userspace (`tracer`).
//!
//! Every struct here is `#[repr(C)]`, has explicit padding, and no `bool` (the kernel and
//! userspace must agree on every byte). A `size_of` test pins each layout.
#![no_std]

pub mod counters;
pub mod cpu;
pub mod go;
pub mod limits;
pub mod process;
pub mod sched;
pub mod stack;
pub mod syscall;
pub mod target;
pub mod thread;
pub mod timeline;
pub mod unwind;
pub mod ustack;

/// Implements `aya::Pod` for the listed types when built for userspace.
macro_rules! user_pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: plain-old-data: repr(C), no padding holes left implicit, no pointers.
            unsafe impl aya::Pod for $t {}
        )*
    };
}
pub(crate) use user_pod;
