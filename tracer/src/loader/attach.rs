//! Loading (verifying) the session's programs, then attaching them: the loader's last step
//! before a session runs.
//!
//! Every program is loaded before the first is attached. The first one attached
//! (task_newtask) starts tracking the target's new children, and the probes start writing
//! their lifecycle events into the events ring, which nobody reads until the session loop
//! starts. Loading each program just before attaching it kept that ring unread for the whole
//! verification — 1.5 s on this 2-CPU VM, more under load — and a target forking ~750
//! children a second overflowed the 1 MiB ring (4,268 events dropped, issue #15): the children
//! whose fork and exit were lost were never known to userspace, so their syscall stats were
//! never harvested and filled SYSCALL_STATS. Loaded first, the attaches take a few ms.
use anyhow::{anyhow, Context, Result};
use aya::{
    maps::ProgramArray,
    programs::{
        perf_event::{HardwareEvent, PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        BtfTracePoint, PerfEvent, RawTracePoint, TracePoint,
    },
};

use super::Probes;
use crate::capture::Clock;

/// The lifecycle tracepoint programs and their hooks, in attach order.
const LIFECYCLE: [(&str, &str, &str); 5] = [
    ("rt_task_newtask", "task", "task_newtask"),
    ("rt_proc_exec", "sched", "sched_process_exec"),
    ("rt_proc_exit", "sched", "sched_process_exit"),
    ("rt_sig_generate", "signal", "signal_generate"),
    ("rt_sig_deliver", "signal", "signal_deliver"),
];

impl Probes {
    /// Loads and attaches one raw tracepoint program (the benchmark floors).
    fn attach_raw(&mut self, prog: &str, hooks: &[&str]) -> Result<()> {
        self.load_raw(prog)?;
        self.attach_raw_loaded(prog, hooks)
    }

    fn load_raw(&mut self, prog: &str) -> Result<()> {
        let p: &mut RawTracePoint = self.program_mut(prog)?.try_into()?;
        p.load().with_context(|| format!("loading {prog}"))
    }

    fn attach_raw_loaded(&mut self, prog: &str, hooks: &[&str]) -> Result<()> {
        let p: &mut RawTracePoint = self.program_mut(prog)?.try_into()?;
        for hook in hooks {
            p.attach(hook).with_context(|| format!("attaching {prog} to raw tracepoint {hook}"))?;
        }
        Ok(())
    }

    /// Loads and attaches one BTF tracepoint program (the benchmark floors).
    fn attach_btf(&mut self, prog: &str, hook: &str) -> Result<()> {
        self.load_btf(prog, hook)?;
        self.attach_btf_loaded(prog, hook)
    }

    fn btf_program(&mut self, prog: &str) -> Result<&mut BtfTracePoint> {
        Ok(self
            .ebpf
            .program_mut(prog)
            .ok_or_else(|| anyhow!("program {prog} missing from the eBPF object"))?
            .try_into()?)
    }

    fn load_btf(&mut self, prog: &str, hook: &str) -> Result<()> {
        let btf = self.btf.take().context("kernel BTF already released")?;
        let r = self.btf_program(prog)?.load(hook, &btf).with_context(|| format!("loading {prog}"));
        self.btf = Some(btf);
        r
    }

    fn attach_btf_loaded(&mut self, prog: &str, hook: &str) -> Result<()> {
        self.btf_program(prog)?.attach().with_context(|| format!("attaching {prog} to BTF tracepoint {hook}"))?;
        Ok(())
    }

    /// Loads the program sys_exit tail-calls to finish blocks whose user stack was deferred.
    fn load_off_complete(&mut self) -> Result<()> {
        let p: &mut RawTracePoint = self.program_mut("rt_off_complete")?.try_into()?;
        p.load().context("loading rt_off_complete")?;
        let fd = p.fd()?.try_clone()?;
        let mut table: ProgramArray<_> = ProgramArray::try_from(self.map_mut("OFF_COMPLETE")?)?;
        table.set(0, &fd, 0).context("setting rt_off_complete in OFF_COMPLETE")?;
        Ok(())
    }

    /// Loads every program, then attaches the lifecycle tracepoints, the syscall and off-CPU
    /// ones, then one sampling perf event per online CPU (see the module doc for the order).
    /// In a benchmark floor mode, only empty programs on that analysis's hooks.
    pub fn attach(&mut self, frequency_hz: u64) -> Result<()> {
        if let Some(floor) = self.floor {
            if floor.sample() {
                let perf: &mut PerfEvent = self.program_mut("rt_floor_sample")?.try_into()?;
                perf.load().context("loading rt_floor_sample")?;
                return self.attach_sampling("rt_floor_sample", frequency_hz);
            }
            let [raw, waking, switch] = if floor.clock() {
                ["rt_floor_raw_clock", "rt_floor_waking_clock", "rt_floor_switch_clock"]
            } else {
                ["rt_floor_raw", "rt_floor_waking", "rt_floor_switch"]
            };
            // Every hook rtrace's off-CPU analysis runs on: the syscall ones finish deferred
            // blocks (sched.rs).
            if floor.offcpu() {
                self.attach_btf(switch, "sched_switch")?;
                self.attach_btf(waking, "sched_waking")?;
            }
            return self.attach_raw(raw, &["sys_enter", "sys_exit"]);
        }
        for (prog, _, _) in LIFECYCLE {
            let tp: &mut TracePoint = self.program_mut(prog)?.try_into()?;
            tp.load().with_context(|| format!("loading {prog}"))?;
        }
        self.load_btf("rt_proc_free", "sched_process_free")?;
        self.load_raw("rt_sys_enter")?;
        self.load_raw("rt_sys_exit")?;
        if self.offcpu {
            self.load_off_complete()?;
            self.load_btf("rt_sched_switch", "sched_switch")?;
            self.load_btf("rt_sched_waking", "sched_waking")?;
        }
        // The task iterator: loaded now (it needs the BTF), run on demand (task_regs).
        let btf = self.btf.take().context("kernel BTF already released")?;
        // Optional: without it, stacks of blocked threads are walked from /proc with a guessed
        // first frame (task_regs then returns nothing).
        let iter: &mut aya::programs::Iter = self.program_mut("rt_task_regs")?.try_into()?;
        if let Err(e) = iter.load("task", &btf) {
            eprintln!("rtrace: warning: task iterator unavailable ({e}): stacks of threads blocked in a syscall are walked from a guessed first frame");
        }
        let perf: &mut PerfEvent = self.program_mut("rt_perf_sample")?.try_into()?;
        perf.load().context("loading rt_perf_sample")?;

        for (prog, category, event) in LIFECYCLE {
            let tp: &mut TracePoint = self.program_mut(prog)?.try_into()?;
            let id = tp.attach(category, event).with_context(|| format!("attaching {prog} to {category}:{event}"))?;
            self.lifecycle_links.push((prog, id));
        }
        self.attach_btf_loaded("rt_proc_free", "sched_process_free")?;
        // Syscall probes before the scheduler ones: sched_switch reads the in-flight syscall.
        // Always attached: without --no-syscalls they measure latency; with it they only mark
        // threads as inside a call (no clock read), which is all the ledger (waits, pidfds)
        // and off-CPU's deferred stacks need.
        self.attach_raw_loaded("rt_sys_enter", &["sys_enter"])?;
        self.attach_raw_loaded("rt_sys_exit", &["sys_exit"])?;
        if self.offcpu {
            self.attach_btf_loaded("rt_sched_switch", "sched_switch")?;
            self.attach_btf_loaded("rt_sched_waking", "sched_waking")?;
        }
        self.attach_sampling("rt_perf_sample", frequency_hz)
    }

    /// One sampling perf event per online CPU running `prog` (loaded).
    fn attach_sampling(&mut self, prog: &str, frequency_hz: u64) -> Result<()> {
        let cpus = aya::util::online_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
        let perf: &mut PerfEvent = self.program_mut(prog)?.try_into()?;
        // Hardware cycles where a PMU exists; VMs often have none, then the cpu-clock timer.
        let mut clock = Clock::Cycles;
        for (i, &cpu) in cpus.iter().enumerate() {
            let scope = PerfEventScope::AllProcessesOneCpu { cpu };
            let policy = SamplePolicy::Frequency(frequency_hz);
            if clock == Clock::Cycles {
                match perf.attach(PerfEventConfig::Hardware(HardwareEvent::CpuCycles), scope, policy, false) {
                    Ok(_) => continue,
                    Err(_) if i == 0 => clock = Clock::CpuClock,
                    Err(e) => return Err(e).context(format!("attaching cycles sampling on cpu {cpu}")),
                }
            }
            perf.attach(PerfEventConfig::Software(SoftwareEvent::CpuClock), scope, policy, false)
                .with_context(|| format!("attaching cpu-clock sampling on cpu {cpu}"))?;
        }
        self.clock = clock;
        Ok(())
    }
}
