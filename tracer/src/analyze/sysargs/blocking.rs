//! Decoders of the calls that block on time, a futex or another process (nanosleep,
//! clock_nanosleep, futex, wait4, waitid) or that signal one (kill, tgkill, pidfd_send_signal),
//! with the name tables they use.
use serde_json::Value;

use super::{take_bits, Out, Resolved};

// ---- families ----

pub(super) fn nanosleep(out: &mut Out, extra: &[u8]) {
    requested(out, "requested", extra);
}

pub(super) fn clock_nanosleep(out: &mut Out, args: &[u64; 6], extra: &[u8]) {
    const TIMER_ABSTIME: u64 = 1;
    let abstime = args[1] & TIMER_ABSTIME != 0;
    // With TIMER_ABSTIME the timespec is a point in time on the clock, not a length: the
    // line says `until=` so it is not read as a sleep of hours.
    requested(out, if abstime { "until" } else { "requested" }, extra);
    out.name("clock", clock_name(args[0] as i32));
    out.field("abstime", abstime);
    if abstime {
        out.parts.push("TIMER_ABSTIME".into());
    }
}

/// `requested=500ms` from the timespec the kernel side copied, in field requested_ns. A
/// missing timespec (copy failed) is `?`; an invalid one (the call fails with EINVAL) shows
/// its raw fields.
fn requested(out: &mut Out, key: &str, extra: &[u8]) {
    let (text, ns) = match timespec_ns(extra) {
        Some(Ok(ns)) => (format_ns(ns), Value::from(ns)),
        Some(Err((sec, nsec))) => (format!("invalid (tv_sec={sec}, tv_nsec={nsec})"), Value::Null),
        None => ("?".to_owned(), Value::Null),
    };
    out.parts.push(format!("{key}={text}"));
    out.field("requested_ns", ns);
}

pub(super) fn futex(out: &mut Out, args: &[u64; 6]) {
    // Addresses go to JSON as hex strings: they are identities, not quantities.
    out.name("uaddr", format!("{:#x}", args[0]));
    out.name("op", futex_op(args[1] as u32));
    out.num("val", args[2] as u32);
}

pub(super) fn wait4(out: &mut Out, args: &[u64; 6]) {
    let pid = args[0] as i32;
    let who = wait_target(pid);
    // A positive pid needs no gloss; the others are easy to misread.
    let text = if pid > 0 { pid.to_string() } else { format!("{pid} ({who})") };
    out.put("pid", text, pid);
    out.field("waits_for", who);
    out.name("options", wait_options(args[2] as u32, "WUNTRACED"));
}

pub(super) fn waitid(out: &mut Out, args: &[u64; 6], resolved: &Resolved) {
    let id = args[1] as u32;
    match args[0] {
        0 => out.name("idtype", "P_ALL".into()),
        1 => {
            out.name("idtype", "P_PID".into());
            out.num("pid", id);
        }
        2 => {
            out.name("idtype", "P_PGID".into());
            out.num("pgid", id);
        }
        3 => {
            out.name("idtype", "P_PIDFD".into());
            pidfd(out, id as i32, resolved);
        }
        other => {
            out.name("idtype", format!("idtype {other}"));
            out.num("id", id);
        }
    }
    out.name("options", wait_options(args[3] as u32, "WSTOPPED"));
}

pub(super) fn kill(out: &mut Out, args: &[u64; 6]) {
    let pid = args[0] as i32;
    let text = match kill_target(pid) {
        Some(who) => format!("{pid} ({who})"),
        None => pid.to_string(),
    };
    out.put("pid", text, pid);
    out.name("signal", signal_name(args[1] as i32));
}

pub(super) fn tgkill(out: &mut Out, args: &[u64; 6]) {
    out.num("tgid", args[0] as i32);
    out.num("tid", args[1] as i32);
    out.name("signal", signal_name(args[2] as i32));
}

pub(super) fn pidfd_send_signal(out: &mut Out, args: &[u64; 6], resolved: &Resolved) {
    pidfd(out, args[0] as i32, resolved);
    out.name("signal", signal_name(args[1] as i32));
}

// ---- shared pieces ----

/// `pidfd=7 (pid 1234)` when the pid behind it was resolved; fields pidfd and pid.
fn pidfd(out: &mut Out, fd: i32, resolved: &Resolved) {
    match resolved.pidfd_pid {
        Some(pid) => {
            out.put("pidfd", format!("{fd} (pid {pid})"), fd);
            out.field("pid", pid);
        }
        None => out.num("pidfd", fd),
    }
}

/// The request of a `struct timespec` (i64 tv_sec, i64 tv_nsec, little-endian) in ns; None if
/// not copied, Err(raw fields) if invalid.
fn timespec_ns(extra: &[u8]) -> Option<Result<u64, (i64, i64)>> {
    let sec = i64::from_le_bytes(extra.get(0..8)?.try_into().ok()?);
    let nsec = i64::from_le_bytes(extra.get(8..16)?.try_into().ok()?);
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Some(Err((sec, nsec)));
    }
    Some(Ok((sec as u64).saturating_mul(1_000_000_000).saturating_add(nsec as u64)))
}

/// Compact duration: `750ns`, `12.5µs`, `500ms`, `1.5s` (at most 3 decimals, trailing zeros
/// dropped).
pub(super) fn format_ns(ns: u64) -> String {
    let (unit, div) = match ns {
        0..=999 => return format!("{ns}ns"),
        1_000..=999_999 => ("µs", 1e3),
        1_000_000..=999_999_999 => ("ms", 1e6),
        _ => ("s", 1e9),
    };
    let s = format!("{:.3}", ns as f64 / div);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{unit}")
}

fn clock_name(id: i32) -> String {
    let name = match id {
        0 => "CLOCK_REALTIME",
        1 => "CLOCK_MONOTONIC",
        2 => "CLOCK_PROCESS_CPUTIME_ID",
        3 => "CLOCK_THREAD_CPUTIME_ID",
        4 => "CLOCK_MONOTONIC_RAW",
        5 => "CLOCK_REALTIME_COARSE",
        6 => "CLOCK_MONOTONIC_COARSE",
        7 => "CLOCK_BOOTTIME",
        8 => "CLOCK_REALTIME_ALARM",
        9 => "CLOCK_BOOTTIME_ALARM",
        11 => "CLOCK_TAI",
        // Negative ids are per-process/thread CPU clocks (clock_getcpuclockid).
        _ => return format!("clock {id}"),
    };
    name.to_owned()
}

pub(super) fn futex_op(op: u32) -> String {
    const FUTEX_PRIVATE_FLAG: u32 = 128;
    const FUTEX_CLOCK_REALTIME: u32 = 256;
    let cmd = match op & 127 {
        0 => "FUTEX_WAIT".to_owned(),
        1 => "FUTEX_WAKE".into(),
        2 => "FUTEX_FD".into(),
        3 => "FUTEX_REQUEUE".into(),
        4 => "FUTEX_CMP_REQUEUE".into(),
        5 => "FUTEX_WAKE_OP".into(),
        6 => "FUTEX_LOCK_PI".into(),
        7 => "FUTEX_UNLOCK_PI".into(),
        8 => "FUTEX_TRYLOCK_PI".into(),
        9 => "FUTEX_WAIT_BITSET".into(),
        10 => "FUTEX_WAKE_BITSET".into(),
        11 => "FUTEX_WAIT_REQUEUE_PI".into(),
        12 => "FUTEX_CMP_REQUEUE_PI".into(),
        13 => "FUTEX_LOCK_PI2".into(),
        other => format!("FUTEX_OP_{other}"),
    };
    let mut names = vec![cmd];
    let table = [(FUTEX_PRIVATE_FLAG, "FUTEX_PRIVATE_FLAG"), (FUTEX_CLOCK_REALTIME, "FUTEX_CLOCK_REALTIME")];
    let rest = take_bits(op & !127, &table, &mut names);
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names.join("|")
}

/// What wait4's pid argument waits for.
fn wait_target(pid: i32) -> String {
    match pid {
        -1 => "any child".into(),
        0 => "any child in own process group".into(),
        p if p < -1 => format!("any child in process group {}", -(p as i64)),
        p => format!("pid {p}"),
    }
}

/// What kill's pid argument signals, when it is not a single process.
fn kill_target(pid: i32) -> Option<String> {
    match pid {
        -1 => Some("every process it may signal".into()),
        0 => Some("own process group".into()),
        p if p < -1 => Some(format!("process group {}", -(p as i64))),
        _ => None,
    }
}

/// wait4/waitid options; bit 2 is WUNTRACED for wait4 and WSTOPPED for waitid (same value).
fn wait_options(options: u32, bit2: &'static str) -> String {
    let table = [
        (1, "WNOHANG"),
        (2, bit2),
        (4, "WEXITED"),
        (8, "WCONTINUED"),
        (0x0100_0000, "WNOWAIT"),
        (0x2000_0000, "__WNOTHREAD"),
        (0x4000_0000, "__WALL"),
        (0x8000_0000, "__WCLONE"),
    ];
    let mut names = Vec::new();
    let rest = take_bits(options, &table, &mut names);
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    if names.is_empty() {
        return "0".into();
    }
    names.join("|")
}

/// Kernel signal numbers (the same on x86_64 and aarch64). Real-time signals are shown by
/// number: glibc's SIGRTMIN is not the kernel's.
pub(super) fn signal_name(sig: i32) -> String {
    crate::lifecycle::standard_signal_name(sig).map_or_else(|| format!("signal {sig}"), str::to_owned)
}
