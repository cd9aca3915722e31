//! report.txt, also printed on stdout: what a person reads first.
use std::{fmt::Write as _, path::Path};

use crate::{
    analyze::{
        children::{ChildRecord, Finding},
        cpu::TopFunction,
        offcpu::OffcpuSection,
        syscalls::{SlowCallReport, SyscallRow},
    },
    capture::{Clock, EndedBy},
    report::Report,
};

/// Every loss counter that is not zero, one line each saying what was lost and what it means
/// for the numbers below: a report that lost data must say so where it is read.
pub(crate) fn losses(s: &mut String, a: &crate::capture::Accounting) {
    let e = &a.stack_errors_by_reason;
    let lines = [
        (a.lost_samples, "on-CPU samples not counted (the sample-count map was full): on-CPU totals are low"),
        (e.user_collision, "user stacks not stored (the stack table was full): those frames show no user stack"),
        (e.user_error, "user stacks that could not be walked (no user context, fault): frames show no user stack"),
        (e.kernel_collision, "kernel stacks not stored (the stack table was full)"),
        (e.kernel_error, "kernel stacks that could not be taken"),
        (a.offcpu_lost, "off-CPU intervals not recorded (a map was full): off-CPU and wakeup totals are low"),
        (a.syscalls_lost, "syscalls not measured (a map was full, or a thread had no per-thread slot)"),
        (a.slow_calls_dropped, "slow calls not reported individually (ring buffer full); still in the counts"),
        (a.tracked_map_full, "descendants not tracked (the tracked-process map was full)"),
        (a.events_dropped, "lifecycle events dropped (ring buffer full): the child ledger may miss forks/exits"),
        // Not samples: counted apart so "without stack" stays a share of the samples.
        (a.offcpu_stack_errors, "off-CPU stack walks that failed: those blocks show no stack"),
        (a.timeline_lost, "timeline records (ring buffer full): timeline.pftrace misses those switches and samples"),
        (
            a.timeline_dropped,
            "timeline records beyond --timeline-events: timeline.pftrace's scheduling stops early (raise the cap)",
        ),
    ];
    for (n, what) in lines.iter().filter(|(n, _)| *n > 0) {
        let _ = writeln!(s, "warning: lost {n} {what}");
    }
    if a.stack_id_conflicts > 0 {
        let _ = writeln!(
            s,
            "warning: {} stack ids stood for two different stacks (hash collisions): their samples and blocks \
             show the first one",
            a.stack_id_conflicts
        );
    }
    for (prog, n) in a.bpf_recursion_misses.iter().filter(|(_, &n)| n > 0) {
        let _ = writeln!(
            s,
            "warning: lost {n} runs of {prog} (skipped by the kernel: another BPF program was running on that CPU)"
        );
    }
}

/// "duration: 2.0 s (target exited); sampling cpu-clock at 99 Hz".
pub(crate) fn session_line(ss: &crate::report::Session) -> String {
    let ended = match ss.ended_by {
        EndedBy::Duration => "duration elapsed",
        EndedBy::Interrupt => "interrupted",
        EndedBy::TargetExit => "target exited",
        EndedBy::Hangup => "hangup (SIGHUP)",
    };
    let clock = match ss.clock {
        Clock::CpuClock => "cpu-clock",
        Clock::Cycles => "cycles",
    };
    format!(
        "duration: {:.1} s ({ended}); sampling {clock} at {} Hz",
        ss.duration_ms as f64 / 1000.0,
        ss.sample_frequency_hz
    )
}

/// How many functions each top list shows in text.
const TEXT_TOP: usize = 10;

pub fn render(report: &Report, dir: &Path, files: &[(&str, &str)]) -> String {
    let mut s = String::new();
    let t = &report.target;
    let cmd = if t.cmdline.is_empty() { String::new() } else { format!(" `{}`", t.cmdline.join(" ")) };
    let _ = writeln!(s, "rtrace report: pid {} ({}){cmd}", t.pid, t.comm);
    if let Some(from) = &t.exec_from {
        let _ = writeln!(s, "  (after an exec from `{}`)", from.join(" "));
    }
    for line in t.status_lines() {
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(s, "{}", session_line(&report.session));
    let a = &report.accounting;
    findings_section(&mut s, &report.findings);
    if !report.skipped.is_empty() {
        let _ = writeln!(s, "Not traced (this session follows only processes its caller could inspect itself):");
        for k in &report.skipped {
            let _ = writeln!(s, "  {}", k.line());
        }
    }
    let _ = writeln!(s, "samples: {} on CPU; lost {}; without stack {}", a.cpu_samples, a.lost_samples, a.stack_errors);
    losses(&mut s, a);
    if let Some(u) = &report.unwind {
        if let Some(line) = crate::analyze::unwind::summary_line(u) {
            let _ = writeln!(s, "{line}");
        }
        if let Some(hint) = &u.suggestion {
            let _ = writeln!(s, "hint: {hint}");
        }
    }

    let total = report.cpu.total_samples;
    let _ = writeln!(s, "\nOn CPU — top functions by self time:");
    table(&mut s, &report.cpu.top, total, true);
    let _ = writeln!(s, "\nOn CPU — top functions by total time (self + callees):");
    table(&mut s, &report.cpu.top_total, total, false);
    cpu_by_process_section(&mut s, &report.cpu.by_process, total);

    if let Some(off) = &report.offcpu {
        where_it_waits(&mut s, off, total, report.session.sample_frequency_hz);
    }
    if let Some(rows) = &report.syscalls {
        syscalls_section(&mut s, rows, report.slowest_syscalls.as_deref().unwrap_or(&[]), a);
    }

    children_section(&mut s, &report.children);
    super::go_text::sections(&mut s, &report.go, report.target.pid, report.accounting.go_unread);

    let _ = writeln!(s, "\nFiles in {}:", dir.display());
    for (name, what) in files {
        let _ = writeln!(s, "  {name:<15} {what}");
    }
    s
}

/// Seconds with a unit that keeps short waits readable.
pub fn human_us(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=999_999 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

fn where_it_waits(s: &mut String, off: &OffcpuSection, cpu_samples: u64, hz: u64) {
    let b = &off.by_state;
    let _ = writeln!(
        s,
        "\nWhere it waits — off-CPU {} (sleep {}, disk {}, runqueue {}; blocks under {} not recorded):",
        human_us(off.total_us),
        human_us(b.sleep_us),
        human_us(b.disk_us),
        human_us(b.runqueue_us),
        human_us(off.min_block_us)
    );
    let on_cpu_us = cpu_samples * 1_000_000 / hz.max(1);
    let all = on_cpu_us + off.total_us;
    if all > 0 {
        let _ = writeln!(
            s,
            "  run-queue share: {:.1}% of traced thread time (waiting for a CPU while runnable)",
            100.0 * b.runqueue_us as f64 / all as f64
        );
    }
    if off.top.is_empty() {
        let _ = writeln!(s, "  (no blocking recorded)");
        return;
    }
    let _ = writeln!(
        s,
        "  {:>10} {:>10} {:>6}  {:<8} {:<14} function — woken by",
        "total", "max", "count", "state", "syscall"
    );
    for t in off.top.iter().take(5) {
        let waker = t
            .top_waker
            .as_ref()
            .map(|w| {
                let leaf = w
                    .function
                    .as_deref()
                    .or_else(|| w.frames.iter().rev().find(|f| !f.ends_with("_[k]")).map(String::as_str));
                let at = leaf.filter(|f| *f != w.comm).map(|f| format!(" in {f}")).unwrap_or_default();
                if w.pid == 0 {
                    format!(" — woken by {}", w.comm)
                } else {
                    format!(" — woken by {} (pid {}, tid {}){at}", w.comm, w.pid, w.tid)
                }
            })
            .unwrap_or_default();
        let inflight = if t.in_flight { " [still blocked at end]" } else { "" };
        let _ = writeln!(
            s,
            "  {:>10} {:>10} {:>6}  {:<8} {:<14} {}{waker}{inflight}",
            human_us(t.total_us),
            human_us(t.max_us),
            t.count,
            t.state.name(),
            t.syscall.as_deref().unwrap_or("-"),
            match &t.go_park {
                Some(p) => p.label(),
                None => where_(t.caller_function.as_deref(), t.leaf_function.as_deref()),
            },
        );
    }
}

fn findings_section(s: &mut String, findings: &[Finding]) {
    if findings.is_empty() {
        let _ = writeln!(s, "\nFindings: none (no zombie, stalled wait, killed child or held pipe seen)\n");
        return;
    }
    let _ = writeln!(s, "\nFindings ({}):", findings.len());
    for f in findings {
        let sev =
            serde_json::to_value(f.severity).ok().and_then(|v| v.as_str().map(str::to_uppercase)).unwrap_or_default();
        let kind = serde_json::to_value(f.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let _ = writeln!(s, "  [{sev}] {kind}: {}", f.summary);
    }
    let _ = writeln!(s);
}

/// Which process burned the CPU: the top processes, and all of them by command. Shown when
/// more than one process was sampled.
fn cpu_by_process_section(s: &mut String, rows: &[crate::analyze::build::ProcessCpu], total: u64) {
    if rows.len() < 2 || total == 0 {
        return;
    }
    let pct = |n: u64| 100.0 * n as f64 / total as f64;
    let _ = writeln!(s, "\nOn CPU — by process ({} processes sampled):", rows.len());
    let _ = writeln!(s, "  {:>6} {:>8} {:>7}  command", "cpu%", "samples", "pid");
    for r in rows.iter().take(TEXT_TOP) {
        let cmd = crate::analyze::build::short_command(&r.argv, &r.command, CMD_WIDTH);
        let _ = writeln!(s, "  {:>5.1}% {:>8} {:>7}  {cmd}", pct(r.samples), r.samples, r.pid);
    }
    let by_cmd = crate::analyze::build::cpu_by_command(rows);
    if by_cmd.len() < rows.len() {
        let each: Vec<String> = by_cmd
            .iter()
            .take(8)
            .map(|c| {
                let n = if c.processes == 1 { String::new() } else { format!(" in {} processes", c.processes) };
                format!("{} {:.1}%{n}", c.command, pct(c.samples))
            })
            .collect();
        let _ = writeln!(s, "  by command: {}", each.join(", "));
    }
}

/// Command lines in the children table are cut at this many characters: enough to tell a
/// build's children apart (compile's `-p` package comes after its output path).
const CMD_WIDTH: usize = 120;

fn children_section(s: &mut String, children: &[ChildRecord]) {
    if children.is_empty() {
        return;
    }
    let _ = writeln!(s, "\nChildren ({} descendants; times since attach):", children.len());
    if let Some(line) = crate::analyze::build::children_summary(children) {
        let _ = writeln!(s, "  {line}");
    }
    let _ = writeln!(
        s,
        "  {:>7} {:>7} {:>9} {:>9} {:<18} {:>10}  command",
        "pid", "ppid", "started", "exited", "ended", "zombie"
    );
    let t = |v: Option<u64>| v.map(|ns| format!("{:.3}s", ns as f64 / 1e9)).unwrap_or_else(|| "-".into());
    // Failed children first: they are what the reader is looking for.
    for c in crate::analyze::build::failed_first(children).into_iter().take(30) {
        let ended = match &c.exit {
            Some(crate::lifecycle::ExitInfo::Exited { code }) => format!("exit {code}"),
            Some(crate::lifecycle::ExitInfo::Killed { signal, .. }) => {
                let by = c.killed_by.as_ref().map(|k| format!(" by {}", k.sender_pid)).unwrap_or_default();
                format!("{}{by}", crate::lifecycle::signal_name(*signal))
            }
            None if c.alive_at_end => "running".into(),
            None => "-".into(),
        };
        let zombie = if c.never_reaped { format!("{} !", t(c.zombie_age_ns)) } else { t(c.zombie_ns) };
        let cmd = crate::analyze::build::short_command(&c.argv, &c.comm, CMD_WIDTH);
        let _ = writeln!(
            s,
            "  {:>7} {:>7} {:>9} {:>9} {:<18} {:>10}  {cmd}",
            c.pid,
            c.ppid,
            t(c.forked_at_ns),
            t(c.exited_at_ns),
            ended,
            zombie
        );
    }
    if children.len() > 30 {
        let _ = writeln!(s, "  … {} more in report.json", children.len() - 30);
    }
}

/// "blocking_read → read": the program's own function, then the leaf when it differs.
fn where_(caller: Option<&str>, leaf: Option<&str>) -> String {
    match (caller, leaf) {
        (Some(c), Some(l)) if c != l => format!("{c} → {l}"),
        (Some(c), _) => c.to_owned(),
        (None, Some(l)) => l.to_owned(),
        (None, None) => "[kernel]".to_owned(),
    }
}

fn ns(v: u64) -> String {
    if v < 1_000 {
        format!("{v} ns")
    } else {
        human_us(v / 1_000)
    }
}

fn syscalls_section(s: &mut String, rows: &[SyscallRow], slow: &[SlowCallReport], a: &crate::capture::Accounting) {
    let lost = if a.syscalls_lost + a.slow_calls_dropped > 0 {
        format!("; lost {} counts, {} slow calls", a.syscalls_lost, a.slow_calls_dropped)
    } else {
        String::new()
    };
    let _ = writeln!(s, "\nSyscalls — {} calls{lost} (percentiles estimated from log2 histograms):", a.syscalls);
    if rows.is_empty() {
        let _ = writeln!(s, "  (no call completed during the session)");
    } else {
        let _ = writeln!(
            s,
            "  {:<18} {:>9} {:>7} {:>10} {:>10} {:>10} {:>10}",
            "syscall", "calls", "errors", "total", "p50", "p99", "max"
        );
    }
    for r in rows.iter().take(15) {
        let _ = writeln!(
            s,
            "  {:<18} {:>9} {:>7} {:>10} {:>10} {:>10} {:>10}",
            r.name,
            r.count,
            r.errors,
            ns(r.total_ns),
            ns(r.p50_ns),
            ns(r.p99_ns),
            ns(r.max_ns)
        );
    }
    if slow.is_empty() {
        return;
    }
    let _ = writeln!(s, "  Slowest calls:");
    for c in slow.iter().take(5) {
        let state = match (c.in_flight, c.started_before_attach) {
            (true, true) => " (in flight since before attach: at least this long)",
            (true, false) => " (still in flight at end)",
            _ => "",
        };
        let _ = writeln!(
            s,
            "  {:>10}  {}({}) = {}  tid {} in {}{state}",
            ns(c.duration_ns),
            c.name,
            c.args.text,
            c.ret_text,
            c.tid,
            where_(c.caller_function.as_deref(), c.leaf_function.as_deref())
        );
    }
}

fn table(s: &mut String, rows: &[TopFunction], total: u64, by_self: bool) {
    if rows.is_empty() || total == 0 {
        let _ = writeln!(s, "  (no samples)");
        return;
    }
    let _ = writeln!(s, "  {:>6} {:>7} {:>8}  function", "self%", "total%", "samples");
    for r in rows.iter().take(TEXT_TOP) {
        let pct = |n: u64| 100.0 * n as f64 / total as f64;
        let n = if by_self { r.self_samples } else { r.total_samples };
        let _ = writeln!(s, "  {:>5.1}% {:>6.1}% {:>8}  {}", pct(r.self_samples), pct(r.total_samples), n, r.function);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::build::ProcessCpu;

    fn row(pid: u32, argv: &[&str], samples: u64) -> ProcessCpu {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        ProcessCpu { pid, command: crate::analyze::build::command_name(&argv, "x"), argv, samples }
    }

    /// A build's CPU by process: the top processes with their distinguishing arguments, then
    /// every process summed by command.
    #[test]
    fn cpu_by_process_table() {
        let c = "/usr/lib/go/pkg/tool/linux_amd64/compile";
        let rows = [
            row(11, &[c, "-p", "fmt"], 50),
            row(12, &["/usr/lib/go/pkg/tool/linux_amd64/link"], 30),
            row(10, &[c, "-p", "os"], 20),
        ];
        let mut s = String::new();
        cpu_by_process_section(&mut s, &rows, 100);
        assert_eq!(
            s,
            "\nOn CPU — by process (3 processes sampled):\n\
             \x20   cpu%  samples     pid  command\n\
             \x20  50.0%       50      11  compile -p fmt\n\
             \x20  30.0%       30      12  link\n\
             \x20  20.0%       20      10  compile -p os\n\
             \x20 by command: compile 70.0% in 2 processes, link 30.0%\n"
        );
        // One process: nothing to compare, no section.
        let mut one = String::new();
        cpu_by_process_section(&mut one, &rows[..1], 100);
        assert_eq!(one, "");
    }

    /// The ledger opens with the per-command summary and lists the failed child first, with
    /// arguments that tell it apart.
    #[test]
    fn children_summary_and_failed_first() {
        use crate::{analyze::build::tests::child, lifecycle::ExitInfo};
        let c = "/usr/lib/go/pkg/tool/linux_amd64/compile";
        let ok = Some(ExitInfo::Exited { code: 0 });
        let kids = [
            child(10, &[c, "-o", "/tmp/go-build1/b001/_pkg_.a", "-p", "fmt"], ok),
            child(11, &[c, "-o", "/tmp/go-build1/b002/_pkg_.a", "-p", "os"], Some(ExitInfo::Exited { code: 1 })),
            child(12, &["/usr/lib/go/pkg/tool/linux_amd64/link", "-o", "a.out"], ok),
        ];
        let mut s = String::new();
        children_section(&mut s, &kids);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[2], "  3 children: 2 compile, 1 link; 2 exit 0, 1 exit 1 (1 compile)");
        let pids: Vec<&str> = lines[4..].iter().map(|l| l.split_whitespace().next().unwrap()).collect();
        assert_eq!(pids, ["11", "10", "12"]);
        assert!(lines[4].ends_with("  compile -o /tmp/go-build1/b002/_pkg_.a -p os"), "{}", lines[4]);
    }
}

#[cfg(test)]
mod loss_tests {
    use crate::capture::{Accounting, StackErrors};

    #[test]
    fn every_nonzero_loss_counter_is_a_line() {
        let mut s = String::new();
        super::losses(&mut s, &Accounting::default());
        assert_eq!(s, "", "nothing lost, nothing said");
        let a = Accounting {
            lost_samples: 1,
            stack_errors_by_reason: StackErrors {
                user_collision: 2,
                user_error: 3,
                kernel_collision: 4,
                kernel_error: 5,
            },
            offcpu_lost: 6,
            syscalls_lost: 7,
            slow_calls_dropped: 8,
            tracked_map_full: 9,
            events_dropped: 10,
            offcpu_stack_errors: 11,
            bpf_recursion_misses: [("rt_sched_switch".to_owned(), 12), ("rt_sys_exit".to_owned(), 0)].into(),
            ..Default::default()
        };
        super::losses(&mut s, &a);
        let lost: Vec<&str> = s.lines().map(|l| l.split_whitespace().nth(2).unwrap()).collect();
        assert_eq!(lost, ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"], "{s}");
        assert!(s.contains("lost 6 off-CPU intervals not recorded"), "{s}");
        assert!(s.contains("lost 12 runs of rt_sched_switch"), "{s}");
        assert!(!s.contains("rt_sys_exit"), "{s}");
    }
}
