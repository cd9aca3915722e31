//! What a file descriptor of a traced process refers to, read from /proc at capture time:
//! paths, pipe ends, sockets (by looking their inode up in /proc/PID/net/*) and pidfds.
//! The parsing lives in pure functions so it can be tested on literal /proc text.
use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr},
};

/// A human description of `fd` in process `pid`, e.g. `/tmp/fifo`, `pipe:[123] (read end)`,
/// `tcp 127.0.0.1:5432 -> 127.0.0.1:40000 (ESTABLISHED)`. None when the fd is gone (closed,
/// process exited) or /proc is not readable for it.
pub fn describe_fd(pid: u32, fd: i32) -> Option<String> {
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    // Paths are kept as the kernel prints them, " (deleted)" suffix included.
    let link = link.to_string_lossy().into_owned();
    if link.starts_with("pipe:[") {
        return Some(describe_pipe(pid, fd, link));
    }
    if let Some(inode) = bracketed_inode(&link, "socket:[") {
        return Some(find_socket(pid, inode).unwrap_or(link));
    }
    Some(link)
}

/// The pid behind a pidfd: its fdinfo has a `Pid:` line.
pub fn pidfd_pid(pid: u32, fd: i32) -> Option<u32> {
    parse_fdinfo_pid(&fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?)
}

/// The `Pid:` line of a pidfd's fdinfo. The kernel prints -1 once the process has been
/// reaped, which is no pid at all.
pub fn parse_fdinfo_pid(text: &str) -> Option<u32> {
    fdinfo_field(text, "Pid")?.parse().ok()
}

/// Whether the fdinfo `flags:` (octal) say the fd was opened write-only, which for a pipe
/// means its write end.
pub fn fdinfo_is_write_end(text: &str) -> bool {
    fdinfo_field(text, "flags")
        .and_then(|f| u32::from_str_radix(f, 8).ok())
        .is_some_and(|flags| flags & O_ACCMODE == O_WRONLY)
}

const O_ACCMODE: u32 = 3;
const O_WRONLY: u32 = 1;

/// One line of /proc/net/{tcp,tcp6,udp,udp6} → (inode, description). `proto` is the word to
/// print ("tcp" or "udp"); the TCP state is shown only for tcp, since for udp it only tells
/// connected from not, which the remote address already shows. None for the header line.
pub fn parse_net_line(proto: &str, line: &str) -> Option<(u64, String)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …
    if f.len() < 10 {
        return None;
    }
    let local = parse_endpoint(f[1])?;
    let remote = parse_endpoint(f[2])?;
    let state = u8::from_str_radix(f[3], 16).ok()?;
    let inode = f[9].parse().ok()?;
    let mut text = format!("{proto} {local}");
    // An unconnected socket (listening, bound, or unconnected udp) has remote port 0.
    if !remote.ends_with(":0") {
        text.push_str(&format!(" -> {remote}"));
    }
    if proto == "tcp" {
        text.push_str(&format!(" ({})", tcp_state(state)));
    }
    Some((inode, text))
}

/// One line of /proc/net/unix → (inode, `unix PATH` or `unix (unnamed)`). Abstract socket
/// names are printed by the kernel with a leading '@'.
pub fn parse_unix_line(line: &str) -> Option<(u64, String)> {
    // Num RefCount Protocol Flags Type St Inode [Path]
    let (fields, path) = split_fields(line, 7)?;
    if !fields[0].ends_with(':') {
        return None;
    }
    let inode = fields[6].parse().ok()?;
    let path = if path.is_empty() { "(unnamed)" } else { path };
    Some((inode, format!("unix {path}")))
}

fn describe_pipe(pid: u32, fd: i32, link: String) -> String {
    match fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) {
        Ok(info) if fdinfo_is_write_end(&info) => format!("{link} (write end)"),
        Ok(_) => format!("{link} (read end)"),
        // Closed between the readlink and now: say what we know.
        Err(_) => link,
    }
}

/// The socket's description from the process's own network namespace (/proc/PID/net).
fn find_socket(pid: u32, inode: u64) -> Option<String> {
    const INET: [(&str, &str); 4] = [("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp")];
    for (file, proto) in INET {
        if let Some(found) = find_in(pid, file, inode, |l| parse_net_line(proto, l)) {
            return Some(found);
        }
    }
    find_in(pid, "unix", inode, parse_unix_line)
}

fn find_in(pid: u32, file: &str, inode: u64, parse: impl Fn(&str) -> Option<(u64, String)>) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/net/{file}")).ok()?;
    text.lines().filter_map(parse).find(|(i, _)| *i == inode).map(|(_, s)| s)
}

/// `socket:[123]` → 123.
fn bracketed_inode(link: &str, prefix: &str) -> Option<u64> {
    link.strip_prefix(prefix)?.strip_suffix(']')?.parse().ok()
}

/// The value of a `Name:\tvalue` line of an fdinfo file.
fn fdinfo_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
}

/// The first `n` whitespace-separated fields and the (trimmed) rest of the line, so that a
/// trailing path keeps its inner spaces.
fn split_fields(line: &str, n: usize) -> Option<(Vec<&str>, &str)> {
    let mut rest = line.trim_start();
    let mut fields = Vec::with_capacity(n);
    for _ in 0..n {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        fields.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    Some((fields, rest.trim_end()))
}

/// `0100007F:1F90` → `127.0.0.1:8080`; 32 hex digits of address → `[::1]:8080`.
fn parse_endpoint(s: &str) -> Option<String> {
    let (addr, port) = s.split_once(':')?;
    // The port is printed in host order as a plain number: no byte swapping needed.
    let port = u16::from_str_radix(port, 16).ok()?;
    match addr.len() {
        8 => Some(format!("{}:{port}", parse_ipv4(addr)?)),
        32 => Some(format!("[{}]:{port}", parse_ipv6(addr)?)),
        _ => None,
    }
}

/// The kernel prints the address's 4 bytes as one u32 in host (little-endian) order.
fn parse_ipv4(hex: &str) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::from(u32::from_str_radix(hex, 16).ok()?.to_le_bytes()))
}

/// Four u32 words, each printed in host (little-endian) order.
fn parse_ipv6(hex: &str) -> Option<Ipv6Addr> {
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(4).enumerate() {
        let word = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    Some(Ipv6Addr::from(bytes))
}

/// include/net/tcp_states.h.
fn tcp_state(st: u8) -> String {
    let name = match st {
        0x01 => "ESTABLISHED",
        0x02 => "SYN_SENT",
        0x03 => "SYN_RECV",
        0x04 => "FIN_WAIT1",
        0x05 => "FIN_WAIT2",
        0x06 => "TIME_WAIT",
        0x07 => "CLOSE",
        0x08 => "CLOSE_WAIT",
        0x09 => "LAST_ACK",
        0x0A => "LISTEN",
        0x0B => "CLOSING",
        0x0C => "NEW_SYN_RECV",
        _ => return format!("state {st:#04x}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        net::{TcpListener, TcpStream},
        os::{fd::AsRawFd, unix::net::UnixListener},
    };

    use super::*;

    const TCP_LISTEN: &str = "   0: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000  \
                              1000        0 4242 1 0000000000000000 100 0 0 10 0";
    const TCP_ESTAB: &str = "   1: 0100007F:1538 0100007F:9C40 01 00000000:00000000 02:000A7D2B 00000000  \
                             1000        0 777 2 0000000000000000 20 4 30 10 -1";

    #[test]
    fn tcp_listen_line() {
        assert_eq!(parse_net_line("tcp", TCP_LISTEN), Some((4242, "tcp 127.0.0.1:5432 (LISTEN)".to_owned())));
    }

    #[test]
    fn tcp_established_line() {
        let want = "tcp 127.0.0.1:5432 -> 127.0.0.1:40000 (ESTABLISHED)";
        assert_eq!(parse_net_line("tcp", TCP_ESTAB), Some((777, want.to_owned())));
    }

    #[test]
    fn tcp_time_wait_and_unknown_state() {
        let line = TCP_ESTAB.replacen(" 01 ", " 06 ", 1);
        assert_eq!(parse_net_line("tcp", &line).unwrap().1, "tcp 127.0.0.1:5432 -> 127.0.0.1:40000 (TIME_WAIT)");
        let line = TCP_ESTAB.replacen(" 01 ", " 1F ", 1);
        assert_eq!(parse_net_line("tcp", &line).unwrap().1, "tcp 127.0.0.1:5432 -> 127.0.0.1:40000 (state 0x1f)");
    }

    #[test]
    fn tcp6_listen_line() {
        let line = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A \
                    00000000:00000000 00:00000000 00000000  1000        0 9001 1 0000000000000000 100 0 0 10 0";
        assert_eq!(parse_net_line("tcp", line), Some((9001, "tcp [::1]:8080 (LISTEN)".to_owned())));
    }

    #[test]
    fn tcp6_v4_mapped_line() {
        // ::ffff:10.0.0.1 — the third word is 0000FFFF, printed little-endian as FFFF0000.
        let line = "   0: 0000000000000000FFFF00000100000A:01BB 0000000000000000FFFF00000200000A:D431 01 \
                    00000000:00000000 00:00000000 00000000  1000        0 5 1 0000000000000000 100 0 0 10 0";
        let want = "tcp [::ffff:10.0.0.1]:443 -> [::ffff:10.0.0.2]:54321 (ESTABLISHED)";
        assert_eq!(parse_net_line("tcp", line), Some((5, want.to_owned())));
    }

    #[test]
    fn udp_line() {
        let line = "  512: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   \
                    101        0 31337 2 0000000000000000 0";
        assert_eq!(parse_net_line("udp", line), Some((31337, "udp 0.0.0.0:53".to_owned())));
    }

    #[test]
    fn net_header_is_skipped() {
        let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
        assert_eq!(parse_net_line("tcp", header), None);
    }

    #[test]
    fn unix_lines() {
        let named = "0000000000000000: 00000002 00000000 00010000 0001 01 20123 /run/x.sock";
        assert_eq!(parse_unix_line(named), Some((20123, "unix /run/x.sock".to_owned())));
        let unnamed = "000000002b8b7b01: 00000003 00000000 00000000 0001 03  1664";
        assert_eq!(parse_unix_line(unnamed), Some((1664, "unix (unnamed)".to_owned())));
        let spaced = "0000000000000000: 00000002 00000000 00010000 0001 01 7 /tmp/a dir/s.sock";
        assert_eq!(parse_unix_line(spaced), Some((7, "unix /tmp/a dir/s.sock".to_owned())));
        let abstract_ = "0000000000000000: 00000002 00000000 00010000 0001 01 8 @/tmp/.X11-unix/X0";
        assert_eq!(parse_unix_line(abstract_), Some((8, "unix @/tmp/.X11-unix/X0".to_owned())));
        let header = "Num       RefCount Protocol Flags    Type St Inode Path";
        assert_eq!(parse_unix_line(header), None);
    }

    #[test]
    fn fdinfo_flags() {
        assert!(fdinfo_is_write_end("pos:\t0\nflags:\t02000001\nmnt_id:\t15\nino:\t123\n"));
        assert!(!fdinfo_is_write_end("pos:\t0\nflags:\t02000000\nmnt_id:\t15\n"));
        // O_RDWR is not the write end.
        assert!(!fdinfo_is_write_end("pos:\t0\nflags:\t02\n"));
        assert!(!fdinfo_is_write_end("pos:\t0\n"));
    }

    #[test]
    fn fdinfo_pid() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\nPid:\t1234\nNSpid:\t1234\n";
        assert_eq!(parse_fdinfo_pid(text), Some(1234));
        assert_eq!(parse_fdinfo_pid("pos:\t0\nPid:\t-1\nNSpid:\t-1\n"), None);
        assert_eq!(parse_fdinfo_pid("pos:\t0\nflags:\t02\n"), None);
    }

    fn pipe() -> (i32, i32) {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` is a valid two-int array for pipe2 to fill.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        (fds[0], fds[1])
    }

    #[test]
    fn describes_pipe_ends() {
        let (r, w) = pipe();
        let me = std::process::id();
        let ino = std::fs::metadata(format!("/proc/self/fd/{r}")).unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(&ino);
        assert_eq!(describe_fd(me, r), Some(format!("pipe:[{ino}] (read end)")));
        assert_eq!(describe_fd(me, w), Some(format!("pipe:[{ino}] (write end)")));
        // SAFETY: closing the two fds this test opened.
        unsafe {
            libc::close(r);
            libc::close(w);
        }
    }

    #[test]
    fn describes_tcp_sockets() {
        let me = std::process::id();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let want = format!("tcp 127.0.0.1:{port} (LISTEN)");
        assert_eq!(describe_fd(me, listener.as_raw_fd()), Some(want));

        let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let cport = client.local_addr().unwrap().port();
        let want = format!("tcp 127.0.0.1:{cport} -> 127.0.0.1:{port} (ESTABLISHED)");
        assert_eq!(describe_fd(me, client.as_raw_fd()), Some(want));
    }

    #[test]
    fn describes_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let want = format!("unix {}", path.display());
        assert_eq!(describe_fd(std::process::id(), listener.as_raw_fd()), Some(want));
    }

    #[test]
    fn describes_deleted_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(b"x").unwrap();
        std::fs::remove_file(&path).unwrap();
        let want = format!("{} (deleted)", path.display());
        assert_eq!(describe_fd(std::process::id(), file.as_raw_fd()), Some(want));
    }

    #[test]
    fn closed_fd_is_none() {
        let (r, w) = pipe();
        // SAFETY: closing the two fds this test opened.
        unsafe {
            libc::close(r);
            libc::close(w);
        }
        // Another test may reuse the number at once; only a dead pid is certain to fail.
        assert_eq!(describe_fd(u32::MAX, r), None);
        assert_eq!(pidfd_pid(u32::MAX, r), None);
    }

    #[test]
    fn own_pidfd() {
        let me = std::process::id();
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, me as libc::pid_t, 0) } as i32;
        if fd < 0 {
            return; // kernel older than 5.3: nothing to check
        }
        assert_eq!(pidfd_pid(me, fd), Some(me));
        assert_eq!(describe_fd(me, fd), Some("anon_inode:[pidfd]".to_owned()));
        // SAFETY: closing the fd this test opened.
        unsafe { libc::close(fd) };
    }
}
