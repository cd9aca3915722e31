//! Decoding tests on literal arguments.
use serde_json::json;

use super::blocking::{format_ns, futex_op, signal_name};
use super::*;

fn d(name: &str, args: [u64; 6], extra: &[u8]) -> DecodedArgs {
    decode(name, &args, extra, &Resolved::default())
}

fn timespec(sec: i64, nsec: i64) -> Vec<u8> {
    [sec.to_le_bytes(), nsec.to_le_bytes()].concat()
}

#[test]
fn nanosleep_requested() {
    let out = d("nanosleep", [0x7ffd0000, 0, 0, 0, 0, 0], &timespec(0, 500_000_000));
    assert_eq!(out.text, "requested=500ms");
    assert_eq!(out.fields["requested_ns"], json!(500_000_000u64));
    assert_eq!(d("nanosleep", [0; 6], &timespec(1, 500_000_000)).text, "requested=1.5s");
    assert_eq!(d("nanosleep", [0; 6], &[]).text, "requested=?");
    assert_eq!(d("nanosleep", [0; 6], &[]).fields["requested_ns"], Value::Null);
    assert_eq!(d("nanosleep", [0; 6], &timespec(-1, 5)).text, "requested=invalid (tv_sec=-1, tv_nsec=5)");
}

#[test]
fn clock_nanosleep_relative_and_absolute() {
    let out = d("clock_nanosleep", [1, 0, 0x7ffd0000, 0, 0, 0], &timespec(0, 500_000_000));
    assert_eq!(out.text, "requested=500ms, clock=CLOCK_MONOTONIC");
    let want = json!({"requested_ns": 500_000_000u64, "clock": "CLOCK_MONOTONIC", "abstime": false});
    assert_eq!(Value::Object(out.fields), want);

    let out = d("clock_nanosleep", [7, 1, 0, 0, 0, 0], &timespec(5123, 400_000_000));
    assert_eq!(out.text, "until=5123.4s, clock=CLOCK_BOOTTIME, TIMER_ABSTIME");
    let want = json!({"requested_ns": 5_123_400_000_000u64, "clock": "CLOCK_BOOTTIME", "abstime": true});
    assert_eq!(Value::Object(out.fields), want);

    assert_eq!(d("clock_nanosleep", [-6i64 as u64, 0, 0, 0, 0, 0], &[]).text, "requested=?, clock=clock -6");
}

#[test]
fn compact_durations() {
    assert_eq!(format_ns(0), "0ns");
    assert_eq!(format_ns(999), "999ns");
    assert_eq!(format_ns(12_500), "12.5µs");
    assert_eq!(format_ns(1_234_567), "1.235ms");
    assert_eq!(format_ns(500_000_000), "500ms");
    assert_eq!(format_ns(60_000_000_000), "60s");
}

fn sockaddr_in(port: u16, ip: [u8; 4]) -> Vec<u8> {
    [&2u16.to_le_bytes()[..], &port.to_be_bytes(), &ip, &[0; 8]].concat()
}

#[test]
fn connect_inet() {
    let resolved = Resolved { fd_desc: Some("tcp 0.0.0.0:0 (CLOSE)".into()), pidfd_pid: None };
    let out = decode("connect", &[5, 0x7ffd0000, 16, 0, 0, 0], &sockaddr_in(5432, [127, 0, 0, 1]), &resolved);
    assert_eq!(out.text, "fd=5 (tcp 0.0.0.0:0 (CLOSE)), addr=127.0.0.1:5432");
    let want = json!({"fd": 5, "fd_desc": "tcp 0.0.0.0:0 (CLOSE)", "addr": "127.0.0.1:5432"});
    assert_eq!(Value::Object(out.fields), want);
    let out = d("connect", [5, 0, 16, 0, 0, 0], &sockaddr_in(5432, [127, 0, 0, 1]));
    assert_eq!(Value::Object(out.fields), json!({"fd": 5, "addr": "127.0.0.1:5432"}));
}

#[test]
fn connect_inet6() {
    let mut sa = [&10u16.to_le_bytes()[..], &8080u16.to_be_bytes(), &[0; 4]].concat();
    sa.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    sa.extend_from_slice(&[0; 4]); // scope id
    assert_eq!(d("connect", [3, 0, 28, 0, 0, 0], &sa).text, "fd=3, addr=[::1]:8080");
}

#[test]
fn connect_unix() {
    let sa = [&1u16.to_le_bytes()[..], b"/run/x.sock\0"].concat();
    assert_eq!(d("connect", [4, 0, 110, 0, 0, 0], &sa).text, "fd=4, addr=/run/x.sock");
    // Abstract: leading NUL, length from addrlen (2 + 1 + 4).
    let sa = [&1u16.to_le_bytes()[..], b"\0bus1garbage"].concat();
    assert_eq!(d("connect", [4, 0, 7, 0, 0, 0], &sa).text, "fd=4, addr=@bus1");
    // A path longer than the 62 bytes that fit after the family.
    let sa = [&1u16.to_le_bytes()[..], &[b'a'; 62]].concat();
    let want = format!("fd=4, addr={}…", "a".repeat(62));
    assert_eq!(d("connect", [4, 0, 110, 0, 0, 0], &sa).text, want);
    assert_eq!(d("connect", [4, 0, 16, 0, 0, 0], &[]).text, "fd=4, addr=?");
    assert_eq!(d("connect", [4, 0, 16, 0, 0, 0], &[]).fields["addr"], Value::Null);
    assert_eq!(d("connect", [4, 0, 16, 0, 0, 0], &[0, 0]).text, "fd=4, addr=AF_UNSPEC");
}

#[test]
fn execve_filename() {
    let out = d("execve", [0x5555, 0x5556, 0x5557, 0, 0, 0], b"/bin/sh\0");
    assert_eq!(out.text, "filename=/bin/sh");
    assert_eq!(Value::Object(out.fields), json!({"filename": "/bin/sh"}));
    let long = [b'x'; 64];
    assert_eq!(d("execve", [0; 6], &long).text, format!("filename={}…", "x".repeat(64)));
    // What bpf_probe_read_user_str leaves for a longer string: 63 bytes and a NUL.
    let cut = [&[b'y'; 63][..], &[0]].concat();
    assert_eq!(d("execve", [0; 6], &cut).text, format!("filename={}…", "y".repeat(63)));
    let fits = [&[b'z'; 62][..], &[0, 0]].concat();
    assert_eq!(d("execve", [0; 6], &fits).text, format!("filename={}", "z".repeat(62)));
    let out = d("execveat", [-100i64 as u64, 0, 0, 0, 0x1000, 0], b"/usr/bin/env\0junk");
    assert_eq!(out.text, "dirfd=AT_FDCWD, filename=/usr/bin/env");
    assert_eq!(out.fields["dirfd"], json!(-100));
}

#[test]
fn openat_flags() {
    let flags = (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC) as u64;
    let out = d("openat", [-100i64 as u64, 0x7ffd, flags, 0o644, 0, 0], b"/tmp/out.txt\0");
    assert_eq!(out.text, "dirfd=AT_FDCWD, path=/tmp/out.txt, flags=O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, mode=0644");
    assert_eq!(out.fields["flags"], json!("O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC"));
    assert_eq!(out.fields["path"], json!("/tmp/out.txt"));

    let flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_DIRECTORY) as u64;
    let resolved = Resolved { fd_desc: Some("/etc".into()), pidfd_pid: None };
    let out = decode("openat", &[3, 0, flags, 0, 0, 0], b"ssl\0", &resolved);
    assert_eq!(out.text, "dirfd=3 (/etc), path=ssl, flags=O_RDONLY|O_NONBLOCK|O_DIRECTORY|O_CLOEXEC");
    assert_eq!(out.fields["dirfd"], json!(3));
    assert_eq!(out.fields["fd_desc"], json!("/etc"));

    assert_eq!(open_flags(libc::O_RDWR | libc::O_APPEND | libc::O_SYNC), "O_RDWR|O_SYNC|O_APPEND");
    assert_eq!(open_flags(libc::O_RDWR | libc::O_TMPFILE), "O_RDWR|O_TMPFILE");
    assert_eq!(open_flags(libc::O_RDONLY | 0o40000000), "O_RDONLY|0o40000000");
}

#[test]
fn futex_ops() {
    let out = d("futex", [0x7f12_3456_7890, 9 | 128, 0, 0, 0, 0xffff_ffff], &[]);
    assert_eq!(out.text, "uaddr=0x7f1234567890, op=FUTEX_WAIT_BITSET|FUTEX_PRIVATE_FLAG, val=0");
    assert_eq!(out.fields["op"], json!("FUTEX_WAIT_BITSET|FUTEX_PRIVATE_FLAG"));
    assert_eq!(out.fields["uaddr"], json!("0x7f1234567890"));
    assert_eq!(futex_op(1 | 128), "FUTEX_WAKE|FUTEX_PRIVATE_FLAG");
    assert_eq!(futex_op(9 | 128 | 256), "FUTEX_WAIT_BITSET|FUTEX_PRIVATE_FLAG|FUTEX_CLOCK_REALTIME");
    assert_eq!(futex_op(13), "FUTEX_LOCK_PI2");
    assert_eq!(futex_op(99 | 512), "FUTEX_OP_99|0x200");
    assert_eq!(d("futex", [0x10, 1, i32::MAX as u64, 0, 0, 0], &[]).fields["val"], json!(2147483647));
}

#[test]
fn wait4_targets() {
    let out = d("wait4", [1234, 0x7ffd, 0, 0, 0, 0], &[]);
    assert_eq!(out.text, "pid=1234, options=0");
    assert_eq!(Value::Object(out.fields), json!({"pid": 1234, "waits_for": "pid 1234", "options": "0"}));
    let out = d("wait4", [-1i64 as u64, 0, 1 | 0x4000_0000, 0, 0, 0], &[]);
    assert_eq!(out.text, "pid=-1 (any child), options=WNOHANG|__WALL");
    assert_eq!(out.fields["pid"], json!(-1));
    assert_eq!(d("wait4", [0; 6], &[]).fields["waits_for"], json!("any child in own process group"));
    let out = d("wait4", [-42i64 as u32 as u64, 0, 2 | 8, 0, 0, 0], &[]);
    assert_eq!(out.text, "pid=-42 (any child in process group 42), options=WUNTRACED|WCONTINUED");
}

#[test]
fn waitid_idtypes() {
    let resolved = Resolved { fd_desc: None, pidfd_pid: Some(1234) };
    let out = decode("waitid", &[3, 7, 0x7ffd, 4, 0, 0], &[], &resolved);
    assert_eq!(out.text, "idtype=P_PIDFD, pidfd=7 (pid 1234), options=WEXITED");
    let want = json!({"idtype": "P_PIDFD", "pidfd": 7, "pid": 1234, "options": "WEXITED"});
    assert_eq!(Value::Object(out.fields), want);
    assert_eq!(d("waitid", [3, 7, 0, 4, 0, 0], &[]).text, "idtype=P_PIDFD, pidfd=7, options=WEXITED");

    let out = d("waitid", [1, 99, 0, 4 | 2 | 0x0100_0000, 0, 0], &[]);
    assert_eq!(out.text, "idtype=P_PID, pid=99, options=WSTOPPED|WEXITED|WNOWAIT");
    assert_eq!(out.fields["pid"], json!(99));
    assert_eq!(d("waitid", [0, 0, 0, 4 | 1, 0, 0], &[]).text, "idtype=P_ALL, options=WNOHANG|WEXITED");
    assert_eq!(d("waitid", [2, 5, 0, 4, 0, 0], &[]).text, "idtype=P_PGID, pgid=5, options=WEXITED");
}

#[test]
fn signals() {
    let out = d("kill", [1234, 9, 0, 0, 0, 0], &[]);
    assert_eq!(out.text, "pid=1234, signal=SIGKILL");
    assert_eq!(Value::Object(out.fields), json!({"pid": 1234, "signal": "SIGKILL"}));
    assert_eq!(d("kill", [-77i64 as u64, 15, 0, 0, 0, 0], &[]).text, "pid=-77 (process group 77), signal=SIGTERM");
    assert_eq!(d("kill", [0, 2, 0, 0, 0, 0], &[]).text, "pid=0 (own process group), signal=SIGINT");
    assert_eq!(d("tgkill", [10, 11, 17, 0, 0, 0], &[]).text, "tgid=10, tid=11, signal=SIGCHLD");
    let resolved = Resolved { fd_desc: None, pidfd_pid: Some(55) };
    let out = decode("pidfd_send_signal", &[6, 1, 0, 0, 0, 0], &[], &resolved);
    assert_eq!(out.text, "pidfd=6 (pid 55), signal=SIGHUP");
    assert_eq!(out.fields["signal"], json!("SIGHUP"));
    assert_eq!(signal_name(10), "SIGUSR1");
    assert_eq!(signal_name(31), "SIGSYS");
    assert_eq!(signal_name(34), "signal 34");
    assert_eq!(signal_name(0), "0");
}

#[test]
fn fd_calls() {
    let resolved = Resolved { fd_desc: Some("pipe:[123] (read end)".into()), pidfd_pid: None };
    let out = decode("read", &[3, 0x7ffd, 4096, 0, 0, 0], &[], &resolved);
    assert_eq!(out.text, "fd=3 (pipe:[123] (read end)), count=4096");
    let want = json!({"fd": 3, "fd_desc": "pipe:[123] (read end)", "count": 4096});
    assert_eq!(Value::Object(out.fields), want);
    assert_eq!(d("pwrite64", [9, 0, 512, 4096, 0, 0], &[]).text, "fd=9, count=512");
    assert_eq!(d("epoll_wait", [4, 0, 64, -1i64 as u64, 0, 0], &[]).text, "fd=4, timeout=infinite");
    let out = d("epoll_pwait", [4, 0, 64, 250, 0, 8], &[]);
    assert_eq!(out.text, "fd=4, timeout=250ms");
    assert_eq!(out.fields["timeout"], json!(250));
    assert_eq!(d("ioctl", [1, 0x5401, 0x7ffd, 0, 0, 0], &[]).text, "fd=1, request=0x5401");
    assert_eq!(d("fsync", [7, 0, 0, 0, 0, 0], &[]).text, "fd=7");
}

#[test]
fn fd_arg_index() {
    assert_eq!(fd_arg("read"), Some(0));
    assert_eq!(fd_arg("sendfile"), Some(0));
    assert_eq!(fd_arg("epoll_pwait2"), Some(0));
    assert_eq!(fd_arg("newfstatat"), None);
    assert_eq!(fd_arg("openat"), None);
    assert_eq!(fd_arg("futex"), None);
}

#[test]
fn other_calls_are_hex() {
    let out = d("mmap", [0, 4096, 3, 0x22, u64::MAX, 0], &[]);
    assert_eq!(out.text, "args=0x0, 0x1000, 0x3");
    assert_eq!(out.fields["args"], json!([0, 4096, 3, 0x22, u64::MAX, 0]));
}

#[test]
fn return_values() {
    assert_eq!(ret_text(0), "0");
    assert_eq!(ret_text(5), "5");
    assert_eq!(ret_text(-2), "-2 ENOENT");
    assert_eq!(ret_text(-11), "-11 EAGAIN");
    assert_eq!(ret_text(-4), "-4 EINTR");
    assert_eq!(ret_text(-110), "-110 ETIMEDOUT");
    // Not in the errno range: a value (e.g. lseek far back is impossible, but be safe).
    assert_eq!(ret_text(-5000), "-5000");
    assert_eq!(ret_text(-512), "-512 ERESTARTSYS (interrupted by a signal)");
    assert_eq!(ret_text(-516), "-516 ERESTART_RESTARTBLOCK (interrupted by a signal, restarted)");
}

#[test]
fn round_trips_through_json() {
    let out = d("kill", [1, 9, 0, 0, 0, 0], &[]);
    let back: DecodedArgs = serde_json::from_str(&serde_json::to_string(&out).unwrap()).unwrap();
    assert_eq!(back, out);
}
