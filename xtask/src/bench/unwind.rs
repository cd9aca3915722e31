//! `cargo xtask bench unwind` (issue #13 item 5): the cost of CFI unwinding on code without
//! frame pointers (tests/fixtures/unwind_work.c, built -O2 -fomit-frame-pointer: a chain into
//! libc's qsort and its callback), side by side in one invocation:
//! - at 99 Hz: untraced, rtrace (auto: DWARF for this binary), rtrace --unwind fp — the
//!   target's slowdown (target < 1 %) and rtrace's own CPU while tracing (target < 1 % of a core);
//! - at 4999 Hz: untraced, rtrace, and `perf record --call-graph dwarf,16384` (perf copies 16 KiB
//!   per sample and unwinds afterwards) — rtrace's overhead over perf's (target ≤ 0.5×), and the
//!   unwinder's cost per sample (rtrace's CPU per sample, minus the same with --unwind fp);
//!   and the floors: an empty BPF program on the same perf events (`--bench-floor sample`) and
//!   `perf record` without a call graph — what any sampler pays at this rate;
//! - attach time with 20+ libraries mapped (python3 importing C extension modules) and ring
//!   buffer drops with 1000 busy threads (tests/fixtures/threads), counted, never hidden.
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::rounds::{alternate, ratio_text, Tracer};
use crate::util::{root, rtrace_bin, step};

fn build(name: &str) -> Result<std::path::PathBuf> {
    let out = root().join("target/fixtures").join(format!("{name}-O2"));
    std::fs::create_dir_all(out.parent().unwrap())?;
    let ok = Command::new("gcc")
        .args(["-O2", "-fomit-frame-pointer", "-g", "-pthread", "-o"])
        .arg(&out)
        .arg(root().join(format!("tests/fixtures/{name}.c")))
        .status()?
        .success();
    if !ok {
        bail!("building {name} failed");
    }
    Ok(out)
}

pub fn unwind(rounds: u32) -> Result<()> {
    let bin = build("unwind_work")?;
    let args = vec!["30000".to_string()];
    step(&format!("bench unwind: {rounds} rounds at 99 Hz: untraced, rtrace (DWARF), rtrace --unwind fp"));
    let low = alternate(
        &bin,
        &args,
        &[
            ("untraced", Tracer::None),
            ("rtrace", Tracer::Rtrace(&["-F", "99", "--no-offcpu", "--no-syscalls"])),
            ("fp", Tracer::Rtrace(&["-F", "99", "--no-offcpu", "--no-syscalls", "--unwind", "fp"])),
        ],
        rounds,
    )?;
    step(&format!("bench unwind: {rounds} rounds at 4999 Hz: untraced, rtrace, perf --call-graph dwarf,16384"));
    let high = alternate(
        &bin,
        &args,
        &[
            ("untraced", Tracer::None),
            ("rtrace", Tracer::Rtrace(&["-F", "4999", "--no-offcpu", "--no-syscalls"])),
            ("perf", Tracer::Perf(&["-F", "4999", "--call-graph", "dwarf,16384"])),
            ("fp", Tracer::Rtrace(&["-F", "4999", "--no-offcpu", "--no-syscalls", "--unwind", "fp"])),
            // The floors: what any sampler pays per sample at this rate on this machine.
            ("floor", Tracer::Rtrace(&["-F", "4999", "--bench-floor", "sample"])),
            ("perf-nocg", Tracer::Perf(&["-F", "4999"])),
        ],
        rounds,
    )?;
    let med = |v: &[f64]| super::median(v.to_vec());
    println!("bench unwind (median of {rounds} rounds; fastest batch of each run, see pingpong.c):");
    low.print_rows(&["99 Hz untraced", "99 Hz rtrace (CFI)", "99 Hz rtrace --unwind fp"]);
    let slow99 = low.median(1) / low.median(0);
    println!("  target slowdown at 99 Hz       : {slow99:.4}x   (target < 1.01x)");
    println!("  rtrace CPU at 99 Hz            : {:.3}% of a core   (target < 1%)", med(&low.tracer_cpu[1]) * 100.0);
    high.print_rows(&[
        "4999 Hz untraced",
        "4999 Hz rtrace (CFI)",
        "4999 Hz perf dwarf,16384",
        "4999 Hz rtrace --unwind fp",
        "4999 Hz empty perf_event program",
        "4999 Hz perf, no call graph",
    ]);
    let over = |c: usize| high.median(c) - high.median(0);
    println!(
        "  overhead rtrace / perf         : {}   (target ≤ 0.50x; +{:.0} ns vs +{:.0} ns per call)",
        ratio_text(over(1) / over(2).max(1e-9)),
        over(1),
        over(2)
    );
    // The part of perf's overhead no sampler avoids: the timer interrupt and perf's overflow
    // handling with nothing run (an empty BPF program), and perf recording a bare sample.
    println!(
        "  floor / perf dwarf             : empty program {} (+{:.0} ns), perf without call graph {} (+{:.0} ns){}",
        ratio_text(over(4) / over(2).max(1e-9)),
        over(4),
        ratio_text(over(5) / over(2).max(1e-9)),
        over(5),
        if over(4) / over(2).max(1e-9) > 0.5 { "   (the 0.50x target is below this floor)" } else { "" }
    );
    if let Some(acc) = &high.acc[1] {
        let samples = acc["cpu_samples"].as_f64().unwrap_or(0.0);
        let u = &acc["unwind"]["total"];
        println!(
            "  stacks at 4999 Hz (last round) : {} samples; {} complete by CFI, truncated {}, dropped {}; p99 bytes needed {}",
            samples,
            u["complete_cfi"],
            u["truncated"],
            u["dropped"],
            u["bytes_needed_p99"]
        );
        let (cfi, fp) = (med(&high.tracer_cpu[1]), med(&high.tracer_cpu[3]));
        // Both runs take the same samples; the difference is the copy, the ring and the unwind.
        let secs = high.median(1) * 30000.0 / 1e9;
        if samples > 0.0 {
            println!(
                "  unwind cost per sample         : {:.1} µs of rtrace CPU (CFI {:.2}% vs fp {:.2}% of a core)",
                (cfi - fp) * secs / samples * 1e6,
                cfi * 100.0,
                fp * 100.0
            );
        }
    }
    libraries_attach()?;
    busy_threads()?;
    Ok(())
}

/// rtrace --pid on a python3 that mapped 20+ shared libraries: attach time, and the first
/// stacks' module set-up (the stacks come complete).
fn libraries_attach() -> Result<()> {
    let script = "import ctypes, decimal, sqlite3, ssl, hashlib, lzma, bz2, zlib, csv, array, select, socket, \
                  math, cmath, datetime, struct, pickle, unicodedata, xml.parsers.expat, json, uuid, time\n\
                  t = time.time()\nwhile time.time() - t < 20: sum(range(1000))";
    let mut py = Command::new("python3").args(["-c", script]).spawn().context("python3")?;
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", py.id())).unwrap_or_default();
    let mut libs: Vec<&str> =
        maps.lines().filter_map(|l| l.split_whitespace().nth(5)).filter(|p| p.contains(".so")).collect();
    libs.sort();
    libs.dedup();
    let out = std::env::temp_dir().join(format!("rtrace-bench-unwind-{}", std::process::id()));
    let o = Command::new(rtrace_bin())
        .args(["-q", "-d", "3s", "--pid", &py.id().to_string(), "-o"])
        .arg(&out)
        .env("RTRACE_TIMINGS", "1")
        .stdout(Stdio::null())
        .output()?;
    let _ = py.kill();
    let _ = py.wait();
    let err = String::from_utf8_lossy(&o.stderr);
    let attach = err.lines().find(|l| l.starts_with("rtrace-timings: attached")).unwrap_or("");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json"))?)?;
    let _ = std::fs::remove_dir_all(&out);
    println!(
        "  python3 with {} libraries      : {}; stacks {}",
        libs.len(),
        attach.trim_start_matches("rtrace-timings: attached "),
        report["unwind"]["total"]
    );
    Ok(())
}

/// 1000 threads spinning and sleeping (bench load's fixture, -O2 -fomit-frame-pointer) at 99 Hz
/// for 3 s: how many stack copies the ring buffer dropped.
fn busy_threads() -> Result<()> {
    let bin = build("threads")?;
    let mut t = Command::new(&bin).args(["1000", "30"]).stdout(Stdio::null()).spawn()?;
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let out = std::env::temp_dir().join(format!("rtrace-bench-unwind-t-{}", std::process::id()));
    let st = Command::new(rtrace_bin())
        .args(["-q", "-d", "3s", "--pid", &t.id().to_string(), "-o"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let _ = t.kill();
    let _ = t.wait();
    if !st.success() {
        bail!("rtrace on 1000 threads failed: {st}");
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json"))?)?;
    let _ = std::fs::remove_dir_all(&out);
    let u = &report["unwind"]["total"];
    println!(
        "  1000 busy threads, 3 s at 99 Hz: {} samples; stacks {}; copies dropped {}",
        report["accounting"]["cpu_samples"], u, u["dropped"]
    );
    Ok(())
}
