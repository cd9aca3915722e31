//! The only code that loads BPF, sets its globals, attaches and detaches. Every program is
//! detached when `Probes` is dropped (aya unloads programs and closes links on drop), so every
//! exit path — normal end, error, Ctrl-C, panic unwinding — leaves nothing behind; nothing is
//! pinned, so even a SIGKILL of rtrace releases everything when its fds close.
use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    Btf, Ebpf, EbpfLoader,
};
use tracer_common::{
    counters,
    cpu::CpuKey,
    sched::{ClockSync, OffKey, OffStart, OffVal, WakeKey, DEFERRED_STACK},
    stack::StackRec,
    syscall::{Inflight, SysKey, SysStats},
    thread::{TaskRegs, Thread, THREAD_SLOTS},
};

use crate::{analyze::syscalls::nr_of, capture::Clock, tracefs::Format};

mod attach;
mod batch;
mod bits;
pub mod go;
mod offsets;
mod read;
pub mod reaper;
mod watchset;
use offsets::{arg_start_offset, cred_offsets, task_cfs_rq_offset};

/// The eBPF object built by build.rs; empty when the build skipped the eBPF step.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

/// Loaded and attached probes.
pub struct Probes {
    ebpf: Ebpf,
    /// Enough BTF to load the BTF tracepoints and the task iterator (see btf::stand_in_btf).
    btf: Option<Btf>,
    root_tgid: u32,
    /// Thread-table slots - 1 (see tracer_common::thread).
    thread_mask: u32,
    pub clock: Clock,
    offcpu: bool,
    syscalls: bool,
    floor: Option<crate::options::Floor>,
    /// The Go uprobes' links and state per process (go.rs).
    pub go: go::GoProbes,
    /// Reads the eBPF side's log records (RTRACE_LOG=debug only).
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// TRACKED_BITS, mapped (bits.rs).
    bits: bits::Bits,
    /// The lifecycle tracepoints' links (attach.rs LIFECYCLE), for `detach` to hand over.
    lifecycle_links: Vec<(&'static str, aya::programs::trace_point::TracePointLinkId)>,
}

pub struct Options {
    /// The target process (its syscall stats get an array of their own).
    pub root_tgid: u32,
    pub follow_children: bool,
    /// Off-CPU tracing with this --min-block (ns); None: off.
    pub min_block_ns: Option<u64>,
    pub syscalls: Option<crate::options::SyscallOptions>,
    pub floor: Option<crate::options::Floor>,
    /// --ustack-bytes: stack bytes copied per stack of a DWARF-mode process.
    pub ustack_bytes: u32,
    /// The USTACKS ring's size (SessionOptions::ustack_ring_bytes).
    pub ustack_ring_bytes: Option<u32>,
    /// --timeline: the scheduling records of tracer_common::timeline.
    pub timeline: bool,
    /// A non-root caller's session (SessionOptions::owner): descendants whose credentials
    /// become other than this uid and gid at exec leave the tracked set (tracer-ebpf creds.rs).
    pub owner: Option<(u32, u32)>,
}

impl Probes {
    /// Loads the programs (not yet attached) with tracepoint layouts of this kernel.
    pub fn load(opts: &Options) -> Result<Self> {
        if EBPF_OBJECT.is_empty() {
            bail!("this rtrace was built without its eBPF programs (RTRACE_SKIP_EBPF=1); rebuild with `cargo build --release`");
        }
        // On 6.x BPF memory is charged to the memcg; RLIMIT_MEMLOCK only matters on old kernels
        // and raising it may be refused (no CAP_SYS_RESOURCE), so failure is not fatal.
        let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
        // SAFETY: plain syscall with a valid pointer.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };

        // Preflight has checked that the kernel has BTF (session::preflight).
        let vmlinux = crate::btf::read_kernel()?;
        let btf =
            crate::btf::stand_in_btf(&vmlinux, &["sched_switch", "sched_waking", "sched_process_free"], &["task"])?;
        let newtask = Format::read("task", "task_newtask")?;
        let exit = Format::read("sched", "sched_process_exit")?;
        let follow: u32 = opts.follow_children.into();
        let newtask_pid = newtask.offset("pid")?;
        let newtask_flags = newtask.offset("clone_flags")?;
        // group_dead appeared in 6.x; without it the loader tells the program to use tid == tgid.
        let group_dead = exit.field("group_dead").map(|f| f.offset).unwrap_or(u32::MAX);

        let exec = Format::read("sched", "sched_process_exec")?;
        let siggen = Format::read("signal", "signal_generate")?;
        let sigdel = Format::read("signal", "signal_deliver")?;
        let offsets = [
            ("EXEC_FILENAME_OFF", exec.offset("filename")?),
            ("SIGGEN_SIG_OFF", siggen.offset("sig")?),
            ("SIGGEN_CODE_OFF", siggen.offset("code")?),
            ("SIGGEN_COMM_OFF", siggen.offset("comm")?),
            ("SIGGEN_PID_OFF", siggen.offset("pid")?),
            ("SIGGEN_RESULT_OFF", siggen.offset("result")?),
            ("SIGDEL_SIG_OFF", sigdel.offset("sig")?),
            ("SIGDEL_CODE_OFF", sigdel.offset("code")?),
            // Optional: without it exit statuses come only from wait calls and zombies.
            ("TASK_EXIT_CODE_OFF", crate::btf::member_offset(&vmlinux, "task_struct", "exit_code").unwrap_or(u32::MAX)),
            // Optional: without them argv comes from /proc (children that exit at once show
            // only the exec'd file).
            ("TASK_MM_OFF", crate::btf::member_offset(&vmlinux, "task_struct", "mm").unwrap_or(u32::MAX)),
            ("MM_ARG_START_OFF", arg_start_offset(&vmlinux)),
            // Optional: without them off-CPU reads bpf_ktime_get_ns at every switch.
            ("TASK_CFS_RQ_OFF", task_cfs_rq_offset(&vmlinux)),
            ("CFS_RQ_RQ_OFF", crate::btf::member_offset(&vmlinux, "cfs_rq", "rq").unwrap_or(u32::MAX)),
            ("RQ_CLOCK_OFF", crate::btf::member_offset(&vmlinux, "rq", "clock").unwrap_or(u32::MAX)),
        ];
        let creds = cred_offsets(&vmlinux, opts.owner.is_some())?;
        // sched_switch is a BTF tracepoint: it names the incoming thread by its task_struct.
        let task_pid = crate::btf::member_offset(&vmlinux, "task_struct", "pid")?;
        let task_tgid = crate::btf::member_offset(&vmlinux, "task_struct", "tgid")?;
        drop(vmlinux);
        let min_block = opts.min_block_ns.unwrap_or(0);
        let slow_k = opts.syscalls.map(|s| s.slow_top as u32).unwrap_or(20);
        let slow_threshold = opts.syscalls.and_then(|s| s.slow_threshold).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let nrs = [
            ("NR_NANOSLEEP", nr_of("nanosleep")),
            ("NR_CLOCK_NANOSLEEP", nr_of("clock_nanosleep")),
            ("NR_CONNECT", nr_of("connect")),
            ("NR_EXECVE", nr_of("execve")),
            ("NR_EXECVEAT", nr_of("execveat")),
            ("NR_OPENAT", nr_of("openat")),
            ("NR_WAIT4", nr_of("wait4")),
            ("NR_WAITID", nr_of("waitid")),
            ("NR_CLONE", nr_of("clone")),
            ("NR_CLONE3", nr_of("clone3")),
            ("NR_PIDFD_OPEN", nr_of("pidfd_open")),
        ];

        let mut loader = EbpfLoader::new();
        // Tests shrink the thread table (RTRACE_THREAD_SLOTS=1: every thread but one in the
        // spill map) to check that path end to end.
        let slots = std::env::var("RTRACE_THREAD_SLOTS")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|n| n.is_power_of_two() && *n <= THREAD_SLOTS)
            .unwrap_or(THREAD_SLOTS);
        let thread_mask = slots - 1;
        loader.map_max_entries("THREADS", slots).override_global("THREAD_MASK", &thread_mask, true);
        let words = tracked_bits_words();
        loader.map_max_entries("TRACKED_BITS", words);
        // Tests shrink the off-CPU map (RTRACE_OFFCPU_KEYS=64) to make it overflow on purpose and
        // check that the loss is counted and reported.
        if let Some(n) = std::env::var("RTRACE_OFFCPU_KEYS").ok().and_then(|v| v.parse::<u32>().ok()).filter(|&n| n > 0)
        {
            loader.map_max_entries("OFFCPU", n.min(tracer_common::limits::MAX_OFF_KEYS));
        }
        // Stack copies (ustack.rs): one scratch record per (possible CPU, nesting level).
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))? as u32;
        let slots = cpus.max(1) * tracer_common::ustack::USTACK_LEVELS;
        let ustack_bytes =
            opts.ustack_bytes.clamp(tracer_common::ustack::USTACK_MIN, tracer_common::ustack::USTACK_MAX);
        if let Some(b) = opts.ustack_ring_bytes.filter(|b| b.is_power_of_two() && *b >= 1 << 20) {
            loader.map_max_entries("USTACKS", b);
        }
        loader.map_max_entries("USTACK_SCRATCH", slots).override_global("USTACK_SLOTS", &slots, true).override_global(
            "USTACK_BYTES",
            &ustack_bytes,
            true,
        );
        if opts.timeline {
            loader.map_max_entries("TIMELINE", tracer_common::timeline::TIMELINE_RING_BYTES);
        }
        let timeline_on = opts.timeline as u32;
        loader.override_global("TIMELINE_ON", &timeline_on, true);
        for (name, v) in &nrs {
            loader.override_global(name, v, true);
        }
        for (name, v) in offsets.iter().chain(&creds) {
            loader.override_global(name, v, true);
        }
        let (owner_uid, owner_gid) = opts.owner.unwrap_or((u32::MAX, u32::MAX));
        loader.override_global("OWNER_UID", &owner_uid, true).override_global("OWNER_GID", &owner_gid, true);
        // The eBPF side logs rare anomalies (a map full, a failed stack copy) at debug level;
        // with RTRACE_LOG below debug the level is frozen to 0 and the verifier drops that code.
        let log_level: u8 = if log::log_enabled!(target: "tracer_ebpf", log::Level::Debug) { 4 } else { 0 };
        loader.override_global("AYA_LOG_LEVEL", &log_level, true);
        let ebpf = loader
            .override_global("SLOW_K", &slow_k, true)
            .override_global("SYSCALL_LATENCY", &(opts.syscalls.is_some() as u32), true)
            .override_global("SLOW_THRESHOLD_NS", &slow_threshold, true)
            .override_global("FOLLOW_CHILDREN", &follow, true)
            .override_global("NEWTASK_PID_OFF", &newtask_pid, true)
            .override_global("NEWTASK_FLAGS_OFF", &newtask_flags, true)
            .override_global("EXIT_GROUP_DEAD_OFF", &group_dead, true)
            .override_global("TASK_PID_OFF", &task_pid, true)
            .override_global("TASK_TGID_OFF", &task_tgid, true)
            .override_global("ROOT_TGID", &opts.root_tgid, true)
            .override_global("MIN_BLOCK_NS", &min_block, true)
            .load(EBPF_OBJECT)
            .context("loading rtrace's eBPF programs")?;
        let mut ebpf = ebpf;
        let logger = match log_level {
            0 => None,
            _ => aya_log::EbpfLogger::init(&mut ebpf)
                .map_err(|e| eprintln!("rtrace: warning: eBPF log unavailable ({e})"))
                .ok(),
        };
        let bits = bits::Bits::map(ebpf.map("TRACKED_BITS").context("map TRACKED_BITS missing")?, words)?;
        Ok(Self {
            bits,
            go: go::GoProbes::default(),
            logger,
            ebpf,
            btf: Some(btf),
            root_tgid: opts.root_tgid,
            thread_mask,
            clock: Clock::CpuClock,
            offcpu: opts.min_block_ns.is_some(),
            syscalls: opts.syscalls.is_some(),
            floor: opts.floor,
            lifecycle_links: Vec::new(),
        })
    }

    /// Adds a TGID to the tracked set.
    /// Adds a TGID to the tracked set, with an idle syscall entry for each of its threads: a
    /// call they are already in (a wait, say) is then still seen returning.
    pub fn track(&mut self, tgid: u32, kind: u32) -> Result<()> {
        let mut map: HashMap<_, u32, u32> = HashMap::try_from(self.map_mut("TRACKED")?)?;
        map.insert(tgid, kind, 0).with_context(|| format!("tracking pid {tgid}"))?;
        // Its bit in TRACKED_BITS (see tracer-ebpf's target.rs), atomically: the programs may
        // be running (a watch set's roots are tracked while they do).
        self.bits.set(tgid);
        let tids = std::fs::read_dir(format!("/proc/{tgid}/task"))
            .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()).collect::<Vec<_>>())
            .unwrap_or_default();
        for tid in tids {
            // SAFETY: Thread is plain data; all-zero is "not in a call, not switched out".
            let mut idle: Thread = unsafe { std::mem::zeroed() };
            idle.tid = tid;
            idle.sys.tgid = tgid;
            idle.off.tgid = tgid;
            idle.off.pre_stack = tracer_common::cpu::NO_STACK;
            self.add_thread(idle)?;
        }
        Ok(())
    }

    /// Puts a thread in its slot of the thread table, or in the spill map if the slot is taken
    /// (see tracer_common::thread).
    fn add_thread(&mut self, t: Thread) -> Result<()> {
        let slot = t.tid & self.thread_mask;
        let mut table: Array<_, Thread> = Array::try_from(self.map_mut("THREADS")?)?;
        let cur = table.get(&slot, 0)?;
        if cur.tid == 0 || cur.tid == t.tid {
            table.set(slot, t, 0)?;
            return Ok(());
        }
        let mut used: Array<_, u32> = Array::try_from(self.map_mut("SPILL_USED")?)?;
        used.set(0, 1, 0)?;
        let mut spill: HashMap<_, u32, Thread> = HashMap::try_from(self.map_mut("THREADS_SPILL")?)?;
        spill.insert(t.tid, t, 0).with_context(|| format!("tracking thread {}", t.tid))?;
        Ok(())
    }

    /// The thread-table entries of the live threads of tracked processes, and the spill map.
    /// Only their slots are read: reading all THREAD_SLOTS entries costs one syscall each.
    fn threads(&self) -> Result<Vec<Thread>> {
        let table: Array<_, Thread> = Array::try_from(self.map("THREADS")?)?;
        let mut out = Vec::new();
        for tgid in self.tracked()? {
            let Ok(dir) = std::fs::read_dir(format!("/proc/{tgid}/task")) else { continue };
            for tid in dir.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()) {
                if let Ok(t) = table.get(&(tid & self.thread_mask), 0) {
                    if t.tid == tid {
                        out.push(t);
                    }
                }
            }
        }
        let spill: HashMap<_, u32, Thread> = HashMap::try_from(self.map("THREADS_SPILL")?)?;
        out.extend(spill.iter().filter_map(Result::ok).map(|(_, t)| t));
        Ok(out)
    }

    pub fn tracked(&self) -> Result<Vec<u32>> {
        let map: HashMap<_, u32, u32> = HashMap::try_from(self.map("TRACKED")?)?;
        Ok(map.keys().filter_map(Result::ok).collect())
    }

    /// Detaches and unloads every program; maps stay readable until `Probes` is dropped.
    /// `nothing_tracked`: no followed process is alive (the target's tree has exited), so the
    /// lifecycle tracepoints — which act only on followed processes — can go on a little while
    /// their links are detached in the background (reaper.rs); otherwise they are detached
    /// before this returns, like every other program. The programs are unloaded one thread
    /// each: waits for the kernel that run at once share their RCU grace periods.
    pub fn detach(&mut self, nothing_tracked: bool) {
        // The Go uprobe links are owned by `go`, not by their programs.
        for pid in self.go_pids() {
            self.detach_go(pid);
        }
        for (prog, id) in std::mem::take(&mut self.lifecycle_links) {
            let link = self
                .program_mut(prog)
                .ok()
                .and_then(|p| <&mut aya::programs::TracePoint>::try_from(p).ok())
                .and_then(|tp| tp.take_link(id).ok());
            if let Some(link) = link {
                reaper::later(link);
            }
        }
        if !nothing_tracked {
            reaper::join_all();
        }
        std::thread::scope(|scope| {
            for (_, prog) in self.ebpf.programs_mut() {
                scope.spawn(move || {
                    let _ = match prog {
                        aya::programs::Program::PerfEvent(p) => p.unload(),
                        aya::programs::Program::TracePoint(p) => p.unload(),
                        aya::programs::Program::RawTracePoint(p) => p.unload(),
                        // sched_switch and sched_waking too: left attached until Probes is
                        // dropped, they would go on taking stack copies after the USTACKS
                        // ring's last read, which the maps then reference without their copies.
                        aya::programs::Program::BtfTracePoint(p) => p.unload(),
                        aya::programs::Program::UProbe(p) => p.unload(),
                        _ => Ok(()),
                    };
                });
            }
        });
    }

    /// The eBPF log reader, if RTRACE_LOG enables debug: poll it while tracing.
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }

    pub fn take_events(&mut self) -> Result<RingBuf<aya::maps::MapData>> {
        let map = self.ebpf.take_map("EVENTS").ok_or_else(|| anyhow!("map EVENTS missing from the eBPF object"))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// The ring of user-stack copies (see tracer_common::ustack), read while the session runs.
    pub fn take_ustacks(&mut self) -> Result<RingBuf<aya::maps::MapData>> {
        let map = self.ebpf.take_map("USTACKS").ok_or_else(|| anyhow!("map USTACKS missing from the eBPF object"))?;
        Ok(RingBuf::try_from(map)?)
    }

    pub fn take_timeline(&mut self) -> Result<RingBuf<aya::maps::MapData>> {
        let map = self.ebpf.take_map("TIMELINE").ok_or_else(|| anyhow!("map TIMELINE missing from the eBPF object"))?;
        Ok(RingBuf::try_from(map)?)
    }

    /// How `tgid`'s user stacks are taken from now on (tracer_common::ustack::MODE_*).
    pub fn set_unwind_mode(&mut self, tgid: u32, mode: u8) -> Result<()> {
        let mut map: HashMap<_, u32, u8> = HashMap::try_from(self.map_mut("UNWIND_MODE")?)?;
        map.insert(tgid, mode, 0).with_context(|| format!("setting the unwind mode of pid {tgid}"))?;
        Ok(())
    }

    /// Forgets `tgid`'s mode (frame pointers again). A process already gone is not an error.
    pub fn remove_unwind_mode(&mut self, tgid: u32) -> Result<()> {
        let mut map: HashMap<_, u32, u8> = HashMap::try_from(self.map_mut("UNWIND_MODE")?)?;
        match map.remove(&tgid) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing the unwind mode of pid {tgid}")),
        }
    }

    /// The kernel's UNWIND_MODE entries (the modes forks inherited included).
    pub fn unwind_modes(&self) -> Result<Vec<(u32, u8)>> {
        let map: HashMap<_, u32, u8> = HashMap::try_from(self.map("UNWIND_MODE")?)?;
        Ok(map.iter().filter_map(Result::ok).collect())
    }

    /// Stack copies dropped (ring full), by TGID.
    pub fn ustack_drops(&self) -> Result<Vec<(u32, u64)>> {
        let map: HashMap<_, u32, u64> = HashMap::try_from(self.map("USTACK_DROPS")?)?;
        Ok(map.iter().filter_map(Result::ok).collect())
    }

    fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf.map(name).ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
    }
    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf.map_mut(name).ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
    }
    fn program_mut(&mut self, name: &str) -> Result<&mut aya::programs::Program> {
        self.ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))
    }
}

/// Words of TRACKED_BITS: one bit per possible pid (/proc/sys/kernel/pid_max).
fn tracked_bits_words() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map_or(tracer_common::limits::TRACKED_BITS_DEFAULT_WORDS, |max| max.div_ceil(64))
}
