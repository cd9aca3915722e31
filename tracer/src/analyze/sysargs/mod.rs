//! Decoding of syscall arguments for the "slowest calls" report: raw registers, the few bytes
//! the kernel side copied from user memory, and what userspace resolved from /proc at capture
//! time become one line for humans plus the same as JSON fields. Flag and signal values are
//! those of the machine rtrace runs on (the traced process runs there too).
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod blocking;
use blocking::{clock_nanosleep, futex, kill, nanosleep, pidfd_send_signal, tgkill, wait4, waitid};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecodedArgs {
    /// One line for humans, e.g. `fd=3 (pipe:[123] (read end)), count=4096`.
    pub text: String,
    /// The same, structured: e.g. {"fd": 3, "fd_desc": "pipe:[123] (read end)", "count": 4096}.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// What userspace resolved at capture time for one call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    /// Description of the fd argument (from fds::describe_fd), when the call takes one.
    pub fd_desc: Option<String>,
    /// For waitid(P_PIDFD, pidfd, …): the pid behind the pidfd (from fds::pidfd_pid).
    pub pidfd_pid: Option<u32>,
}

/// Decodes the arguments of syscall `name` (as `syscalls::Sysno::name()` spells it).
pub fn decode(name: &str, args: &[u64; 6], extra: &[u8], resolved: &Resolved) -> DecodedArgs {
    let mut out = Out::default();
    match name {
        "nanosleep" => nanosleep(&mut out, extra),
        "clock_nanosleep" => clock_nanosleep(&mut out, args, extra),
        "connect" => connect(&mut out, args, extra, resolved),
        "execve" => execve(&mut out, None, extra, resolved),
        "execveat" => execve(&mut out, Some(args[0] as i32), extra, resolved),
        "openat" => openat(&mut out, args, extra, resolved),
        "futex" => futex(&mut out, args),
        "wait4" => wait4(&mut out, args),
        "waitid" => waitid(&mut out, args, resolved),
        "kill" => kill(&mut out, args),
        "tgkill" => tgkill(&mut out, args),
        "pidfd_send_signal" => pidfd_send_signal(&mut out, args, resolved),
        _ if fd_arg(name).is_some() => fd_call(&mut out, name, args, resolved),
        _ => generic(&mut out, args),
    }
    out.finish()
}

/// `0` → "0"; `-2` → "-2 ENOENT". Only -4095..=-1 are errors; anything else is a value.
/// The kernel-internal restart codes (include/linux/errno.h) are what sys_exit sees when a
/// signal interrupted a call: the process never gets them, its call is restarted or fails
/// with EINTR. Go's SIGURG preemption makes them common.
pub fn ret_text(ret: i64) -> String {
    let internal = match ret {
        -512 => Some("ERESTARTSYS (interrupted by a signal)"),
        -513 => Some("ERESTARTNOINTR (interrupted by a signal, restarted)"),
        -514 => Some("ERESTARTNOHAND (interrupted by a signal)"),
        -516 => Some("ERESTART_RESTARTBLOCK (interrupted by a signal, restarted)"),
        _ => None,
    };
    let name =
        internal.or_else(|| (-4095..0).contains(&ret).then(|| syscalls::Errno::new(-ret as i32).name()).flatten());
    match name {
        Some(name) => format!("{ret} {name}"),
        None => ret.to_string(),
    }
}

/// Index of the fd argument, if the syscall takes one that is worth describing. Calls whose
/// fd is a directory fd for a relative path (openat, newfstatat …) are not listed: AT_FDCWD is
/// the common case and the path says more.
pub fn fd_arg(name: &str) -> Option<usize> {
    const FD_FIRST: &[&str] = &[
        "read",
        "write",
        "pread64",
        "pwrite64",
        "readv",
        "writev",
        "preadv",
        "pwritev",
        "preadv2",
        "pwritev2",
        "recvfrom",
        "sendto",
        "recvmsg",
        "sendmsg",
        "recvmmsg",
        "sendmmsg",
        "accept",
        "accept4",
        "fsync",
        "fdatasync",
        "close",
        "fstat",
        "lseek",
        "ioctl",
        "fcntl",
        "flock",
        "ftruncate",
        "getdents64",
        "epoll_wait",
        "epoll_pwait",
        "epoll_pwait2",
        "splice",
        "sendfile",
        "connect",
        "shutdown",
        "getsockopt",
        "setsockopt",
        "bind",
        "listen",
    ];
    FD_FIRST.contains(&name).then_some(0)
}

/// Collects `key=value` parts of the text line and the JSON fields side by side.
#[derive(Default)]
struct Out {
    parts: Vec<String>,
    fields: Map<String, Value>,
}

impl Out {
    /// `key=text` in the line and `key: value` in the fields.
    fn put(&mut self, key: &str, text: impl Into<String>, value: impl Into<Value>) {
        self.parts.push(format!("{key}={}", text.into()));
        self.fields.insert(key.to_owned(), value.into());
    }

    /// A field that does not get its own part of the line (it is already in another part).
    fn field(&mut self, key: &str, value: impl Into<Value>) {
        self.fields.insert(key.to_owned(), value.into());
    }

    /// `key=N` as number in both.
    fn num(&mut self, key: &str, n: impl Into<Value> + ToString + Copy) {
        self.put(key, n.to_string(), n);
    }

    /// `key=NAME` with the same string in the fields.
    fn name(&mut self, key: &str, name: String) {
        self.put(key, name.clone(), name);
    }

    fn finish(self) -> DecodedArgs {
        DecodedArgs { text: self.parts.join(", "), fields: self.fields }
    }
}

// ---- families ----

fn connect(out: &mut Out, args: &[u64; 6], extra: &[u8], resolved: &Resolved) {
    fd(out, "fd", args[0] as i32, resolved);
    match sockaddr(extra, args[2] as usize) {
        Some(addr) => out.name("addr", addr),
        None => out.put("addr", "?", Value::Null),
    }
}

fn execve(out: &mut Out, dirfd: Option<i32>, extra: &[u8], resolved: &Resolved) {
    if let Some(d) = dirfd {
        dir_fd(out, d, resolved);
    }
    cstr_field(out, "filename", extra);
}

fn openat(out: &mut Out, args: &[u64; 6], extra: &[u8], resolved: &Resolved) {
    dir_fd(out, args[0] as i32, resolved);
    cstr_field(out, "path", extra);
    let flags = args[2] as i32;
    out.name("flags", open_flags(flags));
    // The mode is only read by the kernel when a file may be created.
    if flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE {
        out.name("mode", format!("{:04o}", args[3] as u32));
    }
}

fn fd_call(out: &mut Out, name: &str, args: &[u64; 6], resolved: &Resolved) {
    fd(out, "fd", args[0] as i32, resolved);
    match name {
        "read" | "write" | "pread64" | "pwrite64" => out.num("count", args[2]),
        "epoll_wait" | "epoll_pwait" => {
            let ms = args[3] as i32;
            let text = if ms < 0 { "infinite".to_owned() } else { format!("{ms}ms") };
            out.put("timeout", text, ms);
        }
        // The request code says which ioctl was slow (TCGETS, FIONREAD, a driver's …).
        "ioctl" => out.name("request", format!("{:#x}", args[1] as u32)),
        _ => {}
    }
}

fn generic(out: &mut Out, args: &[u64; 6]) {
    let hex: Vec<String> = args[..3].iter().map(|a| format!("{a:#x}")).collect();
    out.parts.push(format!("args={}", hex.join(", ")));
    out.field("args", args.to_vec());
}

// ---- shared pieces ----

/// `fd=3 (pipe:[123] (read end))`; fields `key` and fd_desc.
fn fd(out: &mut Out, key: &str, fd: i32, resolved: &Resolved) {
    match &resolved.fd_desc {
        Some(desc) => {
            out.put(key, format!("{fd} ({desc})"), fd);
            out.field("fd_desc", desc.clone());
        }
        None => out.num(key, fd),
    }
}

/// A directory fd: AT_FDCWD by name (the number stays in the fields), anything else like
/// any fd.
fn dir_fd(out: &mut Out, dirfd: i32, resolved: &Resolved) {
    if dirfd == libc::AT_FDCWD {
        out.put("dirfd", "AT_FDCWD", dirfd);
    } else {
        fd(out, "dirfd", dirfd, resolved);
    }
}

/// A NUL-terminated string from `extra`: `?` (null in JSON) when nothing was copied.
fn cstr_field(out: &mut Out, key: &str, extra: &[u8]) {
    match cstr(extra) {
        Some(s) => out.name(key, s),
        None => out.put(key, "?", Value::Null),
    }
}

/// The most bytes the kernel side copies from user memory.
const EXTRA_MAX: usize = 64;

/// Up to the first NUL, with "…" when the kernel side may have cut the string: its
/// bpf_probe_read_user_str fills the 64-byte buffer with at most 63 bytes and a NUL, so a
/// 63-byte string is taken as cut (a path of exactly 63 bytes gets a needless "…").
fn cstr(extra: &[u8]) -> Option<String> {
    if extra.is_empty() {
        return None;
    }
    let len = extra.iter().position(|&b| b == 0).unwrap_or(extra.len());
    let s = String::from_utf8_lossy(&extra[..len]).into_owned();
    Some(if len >= EXTRA_MAX - 1 { s + "…" } else { s })
}

/// `127.0.0.1:5432`, `[::1]:8080`, `/run/x.sock`, `@abstract`; None if nothing was copied.
/// `addrlen` bounds the abstract unix name, which is not NUL-terminated.
fn sockaddr(extra: &[u8], addrlen: usize) -> Option<String> {
    let family = u16::from_le_bytes(extra.get(0..2)?.try_into().ok()?);
    let port = || extra.get(2..4).map(|p| u16::from_be_bytes([p[0], p[1]]));
    match family as i32 {
        libc::AF_UNSPEC => Some("AF_UNSPEC".into()),
        libc::AF_INET => {
            let ip: [u8; 4] = extra.get(4..8)?.try_into().ok()?;
            Some(format!("{}:{}", std::net::Ipv4Addr::from(ip), port()?))
        }
        libc::AF_INET6 => {
            let ip: [u8; 16] = extra.get(8..24)?.try_into().ok()?;
            Some(format!("[{}]:{}", std::net::Ipv6Addr::from(ip), port()?))
        }
        libc::AF_UNIX => Some(unix_path(&extra[2..], addrlen.saturating_sub(2))),
        other => Some(format!("family {other}")),
    }
}

fn unix_path(path: &[u8], len: usize) -> String {
    match path.first() {
        None if len == 0 => "(unnamed)".into(),
        None => "?".into(),
        // Abstract: a leading NUL, then `len - 1` bytes that may contain anything.
        Some(0) => {
            let name = &path[1..len.clamp(1, path.len())];
            let cut = if len > path.len() { "…" } else { "" };
            format!("@{}{cut}", String::from_utf8_lossy(name))
        }
        Some(_) => {
            let end = path.iter().position(|&b| b == 0);
            let s = String::from_utf8_lossy(&path[..end.unwrap_or(path.len())]);
            let cut = if end.is_none() && len > path.len() { "…" } else { "" };
            format!("{s}{cut}")
        }
    }
}

/// O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC; unknown bits as octal.
fn open_flags(flags: i32) -> String {
    let mode = match flags & libc::O_ACCMODE {
        libc::O_RDONLY => "O_RDONLY",
        libc::O_WRONLY => "O_WRONLY",
        libc::O_RDWR => "O_RDWR",
        _ => "O_ACCMODE",
    };
    let mut names = vec![mode.to_owned()];
    let rest = take_bits(flags & !libc::O_ACCMODE, &open_flag_table(), &mut names);
    if rest != 0 {
        names.push(format!("{rest:#o}"));
    }
    names.join("|")
}

/// Multi-bit flags (O_SYNC includes O_DSYNC, O_TMPFILE includes O_DIRECTORY) come first so
/// their bits are not claimed by the single-bit ones.
fn open_flag_table() -> [(i32, &'static str); 17] {
    [
        (libc::O_SYNC, "O_SYNC"),
        (libc::O_TMPFILE, "O_TMPFILE"),
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_NOCTTY, "O_NOCTTY"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_NONBLOCK, "O_NONBLOCK"),
        (libc::O_DSYNC, "O_DSYNC"),
        (libc::O_ASYNC, "O_ASYNC"),
        (libc::O_DIRECT, "O_DIRECT"),
        (O_LARGEFILE, "O_LARGEFILE"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
        (libc::O_NOATIME, "O_NOATIME"),
        (libc::O_CLOEXEC, "O_CLOEXEC"),
        (libc::O_PATH, "O_PATH"),
    ]
}

/// The kernel's value, which differs by architecture; glibc never passes it on 64-bit
/// targets, but a raw syscall may.
#[cfg(target_arch = "aarch64")]
const O_LARGEFILE: i32 = 0o400000;
#[cfg(not(target_arch = "aarch64"))]
const O_LARGEFILE: i32 = 0o100000;

/// Appends the names of the flags fully set in `bits`; returns the bits no name claimed.
fn take_bits<T>(mut bits: T, table: &[(T, &str)], names: &mut Vec<String>) -> T
where
    T: Copy + PartialEq + Default + std::ops::BitAnd<Output = T> + std::ops::Not<Output = T>,
{
    for &(mask, name) in table {
        if mask != T::default() && bits & mask == mask {
            names.push(name.to_owned());
            bits = bits & !mask;
        }
    }
    bits
}

#[cfg(test)]
mod tests;
