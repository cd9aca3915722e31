//! Golden-file tests: a literal capture, symbolized with a fake table, rendered to every text
//! output. Regenerate with RTRACE_UPDATE_GOLDEN=1 after an intended change, and review the diff.
use std::path::{Path, PathBuf};

use crate::{
    capture::{
        Accounting, Capture, Clock, EndedBy, Mapping, OffState, ProcessInfo, RawOff, RawSample, RawSlowCall,
        RawSyscall, RawWake, SessionInfo, TargetInfo,
    },
    render::{json, text},
    report,
    symbolize::fake::FakeResolver,
};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden")
}

fn check(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("RTRACE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (RTRACE_UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(actual, expected, "{name} differs from its golden file");
}

pub fn literal_capture() -> (Capture, FakeResolver) {
    let mut c = Capture {
        target: TargetInfo {
            pid: 4242,
            comm: "mycli".into(),
            cmdline: vec!["mycli".into(), "build".into()],
            ..Default::default()
        },
        session: SessionInfo {
            duration_ms: 2000,
            ended_by: EndedBy::TargetExit,
            sample_frequency_hz: 99,
            clock: Clock::CpuClock,
            attach_ms: 20,
            min_block_us: Some(10),
            slow_top: Some(20),
            arch: "x86_64".into(),
            slow_reap_ms: 1000,
            wait_stall_ms: 1000,
            ..Default::default()
        },
        accounting: Accounting { cpu_samples: 100, syscalls: 4, ..Default::default() },
        ..Default::default()
    };
    c.processes.insert(
        4242,
        ProcessInfo {
            pid: 4242,
            comm: "mycli".into(),
            cmdline: vec!["mycli".into(), "build".into()],
            maps: vec![Mapping {
                start: 0x400000,
                end: 0x500000,
                offset: 0,
                path: "/usr/bin/mycli".into(),
                build_id: Some("00ff".into()),
            }],
        },
    );
    let s = |user: Vec<u64>, kernel: Vec<u64>, count| RawSample {
        tgid: 4242,
        tid: 4242,
        user,
        kernel,
        count,
        ..Default::default()
    };
    c.cpu_samples = vec![
        s(vec![0x401010, 0x402010, 0x403010], vec![], 70),
        s(vec![0x402005, 0x403010], vec![], 20),
        s(vec![0x404000, 0x403010], vec![0xffffffff81000010, 0xffffffff81000110], 10),
    ];
    // Off-CPU: 1.2 s blocked in read under main.main (woken by pid 4243), 5 ms in the run queue.
    let read = vec![0x405010, 0x403010];
    let kread = vec![0xffffffff81000210, 0xffffffff81000110];
    c.offcpu = vec![
        RawOff {
            tgid: 4242,
            tid: 4242,
            user: read.clone().into(),
            kernel: kread.clone().into(),
            state: OffState::Sleep,
            total_ns: 1_200_000_000,
            count: 2,
            max_ns: 1_000_000_000,
            ..Default::default()
        },
        RawOff {
            tgid: 4242,
            tid: 4242,
            user: vec![0x401010, 0x402010, 0x403010].into(),
            kernel: vec![].into(),
            state: OffState::Runqueue,
            total_ns: 5_000_000,
            count: 9,
            max_ns: 1_000_000,
            ..Default::default()
        },
    ];
    c.wakeups = vec![RawWake {
        tgid: 4242,
        tid: 4242,
        user: read.clone().into(),
        kernel: kread.clone().into(),
        waker_pid: 4243,
        waker_tid: 4243,
        waker_comm: "child".into(),
        total_ns: 1_200_000_000,
        count: 2,
        max_ns: 1_000_000_000,
        ..Default::default()
    }];
    let nr = |n: &str| n.parse::<syscalls::Sysno>().unwrap().id();
    let mut hist = vec![0; 40];
    hist[29] = 1;
    hist[12] = 3;
    c.syscalls = vec![RawSyscall {
        tgid: 4242,
        nr: nr("read") as u32,
        count: 4,
        errors: 1,
        total_ns: 1_000_020_000,
        max_ns: 1_000_000_000,
        hist,
    }];
    c.slow_calls = vec![RawSlowCall {
        tgid: 4242,
        tid: 4242,
        nr: nr("read"),
        start_ns: 500_000_000,
        duration_ns: 1_000_000_000,
        ret: 4096,
        user: read,
        kernel: kread,
        args: [3, 0x7ffd0000, 4096, 0, 0, 0],
        fd_desc: Some("pipe:[777] (read end)".into()),
        ..Default::default()
    }];
    let mut r = FakeResolver::default();
    r.user.push(("/usr/bin/mycli".into(), 0x5000, 0x5100, "syscall.read".into()));
    r.kernel.insert(0xffffffff81000210, "pipe_read".into());
    r.user.push(("/usr/bin/mycli".into(), 0x1000, 0x2000, "main.hash".into()));
    r.user.push(("/usr/bin/mycli".into(), 0x2000, 0x3000, "main.build".into()));
    r.user.push(("/usr/bin/mycli".into(), 0x3000, 0x4000, "main.main".into()));
    r.user.push(("/usr/bin/mycli".into(), 0x4000, 0x4100, "syscall.write".into()));
    r.kernel.insert(0xffffffff81000010, "vfs_write".into());
    r.kernel.insert(0xffffffff81000110, "do_syscall_64".into());
    (c, r)
}

#[test]
fn golden_outputs() {
    let (c, mut r) = literal_capture();
    let a = report::analyze(&c, &mut r);
    check("cpu.folded", &(a.cpu.folded().join("\n") + "\n"));
    let mut j = Vec::new();
    json::render(&a.report, &mut j).unwrap();
    check("report.json", &String::from_utf8(j).unwrap());
    check("report.txt", &text::render(&a.report, Path::new("rtrace-4242"), &super::output::files_for(&a)));
    check("offcpu.folded", &(a.offcpu.folded().join("\n") + "\n"));
    check("wakeups.folded", &(a.offcpu.wakeups_folded().join("\n") + "\n"));
    check("wall.folded", &(crate::analyze::offcpu::wall_folded(&a.cpu, &a.offcpu, 99).join("\n") + "\n"));
}
