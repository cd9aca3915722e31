//! rtrace's eBPF programs. This file only holds the entry points; each is a thin wrapper over a
//! function in the module that owns the concern. Program names start with `rt_` so that a test
//! (or a worried operator) can tell rtrace's programs apart in `bpftool prog list`.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod clock;
#[cfg(target_arch = "bpf")]
mod counters;

#[cfg(target_arch = "bpf")]
mod cpu;
mod creds;
#[cfg(target_arch = "bpf")]
mod go;
#[cfg(target_arch = "bpf")]
mod ledger;
#[cfg(target_arch = "bpf")]
mod mem;
#[cfg(target_arch = "bpf")]
mod process;
#[cfg(target_arch = "bpf")]
mod regs;
#[cfg(target_arch = "bpf")]
mod sched;
#[cfg(target_arch = "bpf")]
mod syscalls;
#[cfg(target_arch = "bpf")]
mod target;
#[cfg(target_arch = "bpf")]
mod threads;

mod timeline;
#[cfg(target_arch = "bpf")]
mod unwind;
#[cfg(target_arch = "bpf")]
mod ustack;

#[cfg(target_arch = "bpf")]
mod entry {
    use aya_ebpf::{
        macros::{btf_tracepoint, perf_event, raw_tracepoint, tracepoint, uprobe},
        programs::{BtfTracePointContext, PerfEventContext, ProbeContext, RawTracePointContext, TracePointContext},
    };

    /// A task iterator (aya-ebpf has no macro for iterators: the section name is what makes it
    /// one).
    #[unsafe(no_mangle)]
    #[unsafe(link_section = "iter/task")]
    pub extern "C" fn rt_task_regs(ctx: *const crate::regs::IterTask) -> i32 {
        crate::regs::task_regs(ctx)
    }

    #[perf_event]
    pub fn rt_perf_sample(ctx: PerfEventContext) -> u32 {
        crate::cpu::sample(&ctx);
        0
    }

    #[tracepoint]
    pub fn rt_task_newtask(ctx: TracePointContext) -> u32 {
        let _ = crate::target::task_newtask(&ctx);
        0
    }

    #[tracepoint]
    pub fn rt_proc_exec(ctx: TracePointContext) -> u32 {
        let _ = crate::process::sched_process_exec(&ctx);
        0
    }

    #[tracepoint]
    pub fn rt_proc_exit(ctx: TracePointContext) -> u32 {
        let _ = crate::process::sched_process_exit(&ctx);
        0
    }

    #[tracepoint]
    pub fn rt_sig_generate(ctx: TracePointContext) -> u32 {
        let _ = crate::process::signal_generate(&ctx);
        0
    }

    #[tracepoint]
    pub fn rt_sig_deliver(ctx: TracePointContext) -> u32 {
        let _ = crate::process::signal_deliver(&ctx);
        0
    }

    #[btf_tracepoint(function = "sched_process_free")]
    pub fn rt_proc_free(ctx: BtfTracePointContext) -> u32 {
        let _ = crate::process::sched_process_free(&ctx);
        0
    }

    #[btf_tracepoint(function = "sched_switch")]
    pub fn rt_sched_switch(ctx: BtfTracePointContext) -> i32 {
        let _ = crate::sched::sched_switch(&ctx);
        0
    }

    #[btf_tracepoint(function = "sched_waking")]
    pub fn rt_sched_waking(ctx: BtfTracePointContext) -> i32 {
        let _ = crate::sched::sched_waking(&ctx);
        0
    }

    #[raw_tracepoint(tracepoint = "sys_enter")]
    pub fn rt_sys_enter(ctx: RawTracePointContext) -> i32 {
        let _ = crate::syscalls::sys_enter(&ctx);
        0
    }

    #[raw_tracepoint(tracepoint = "sys_exit")]
    pub fn rt_sys_exit(ctx: RawTracePointContext) -> i32 {
        let _ = crate::syscalls::sys_exit(&ctx);
        0
    }

    /// Tail-called by rt_sys_exit (never attached itself).
    #[raw_tracepoint(tracepoint = "sys_exit")]
    pub fn rt_off_complete(ctx: RawTracePointContext) -> i32 {
        let _ = crate::syscalls::off_complete(&ctx);
        0
    }

    /// The Go uprobes (go.rs): entry probes only, never uretprobes (they crash Go).
    #[uprobe]
    pub fn rt_go_newproc_ret(ctx: ProbeContext) -> u32 {
        crate::go::newproc_ret(&ctx);
        0
    }

    #[uprobe]
    pub fn rt_go_exit(ctx: ProbeContext) -> u32 {
        crate::go::goroutine_exit(&ctx);
        0
    }

    #[uprobe]
    pub fn rt_go_stw_start(ctx: ProbeContext) -> u32 {
        crate::go::stw_start(&ctx);
        0
    }

    #[uprobe]
    pub fn rt_go_stw_stop_old(ctx: ProbeContext) -> u32 {
        crate::go::stw_stop_old(&ctx);
        0
    }

    #[uprobe]
    pub fn rt_go_stw_end(ctx: ProbeContext) -> u32 {
        crate::go::stw_end(&ctx);
        0
    }

    /// Empty programs for the benchmarks' floor: the cost of the hook itself.
    #[raw_tracepoint]
    pub fn rt_floor_raw(_ctx: RawTracePointContext) -> i32 {
        0
    }

    #[btf_tracepoint(function = "sched_switch")]
    pub fn rt_floor_switch(_ctx: BtfTracePointContext) -> i32 {
        0
    }

    /// Where the clock floor's reads go, so that they are not optimized away.
    #[aya_ebpf::macros::map]
    static FLOOR_SINK: aya_ebpf::maps::PerCpuArray<u64> = aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

    #[inline(always)]
    fn floor_clock() {
        if let Some(p) = FLOOR_SINK.get_ptr_mut(0) {
            // SAFETY: per-CPU slot.
            unsafe { *p = aya_ebpf::helpers::bpf_ktime_get_ns() };
        }
    }

    #[btf_tracepoint(function = "sched_waking")]
    pub fn rt_floor_waking(_ctx: BtfTracePointContext) -> i32 {
        0
    }

    /// The clock floor: the hook plus one clock read, the least a latency measurement needs.
    #[btf_tracepoint(function = "sched_waking")]
    pub fn rt_floor_waking_clock(_ctx: BtfTracePointContext) -> i32 {
        floor_clock();
        0
    }

    /// The sampling floor: a perf event's overflow with an empty program, what any sampler
    /// pays per sample before it reads a register (issue #13's bench).
    #[perf_event]
    pub fn rt_floor_sample(_ctx: PerfEventContext) -> u32 {
        0
    }

    #[raw_tracepoint]
    pub fn rt_floor_raw_clock(_ctx: RawTracePointContext) -> i32 {
        floor_clock();
        0
    }

    #[btf_tracepoint(function = "sched_switch")]
    pub fn rt_floor_switch_clock(_ctx: BtfTracePointContext) -> i32 {
        floor_clock();
        0
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// Host builds (`cargo build --workspace`) get an empty binary; the real object is built for
/// `bpfel-unknown-none` by `tracer/build.rs`.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
