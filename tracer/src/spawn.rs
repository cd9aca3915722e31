//! Starting `-- COMMAND` held before exec until the probes are attached.
//!
//! `std::process::Command` with a blocking `pre_exec` deadlocks (spawn waits for the exec), so we
//! fork ourselves, before any other thread exists, and the child blocks reading a pipe. On
//! `release` the parent writes one byte and the child execs; if rtrace fails to attach, dropping
//! the `HeldChild` closes the pipe and the child exits 127 without ever running the command.
//! A second close-on-exec pipe carries the errno back when the exec fails (EOF: it succeeded),
//! so a command that never ran is told apart from one that exited 127.
use std::{
    ffi::CString,
    io::Read,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

pub struct HeldChild {
    pub pid: u32,
    program: PathBuf,
    go_fd: Option<i32>,
    /// Read end of the exec-error pipe.
    err_fd: Option<i32>,
    reaped: Option<i32>,
}

/// Forks; the child waits for `release` and then execs `program` with `argv`.
/// Must be called while the process is single-threaded (before the tokio runtime starts).
pub fn spawn_held(program: &Path, argv: &[String]) -> Result<HeldChild> {
    let prog = CString::new(program.as_os_str().as_bytes())?;
    let args: Vec<CString> = argv.iter().map(|a| CString::new(a.as_bytes())).collect::<Result<_, _>>()?;
    let mut argp: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argp.push(std::ptr::null());

    let mut fds = [0i32; 2];
    let mut err = [0i32; 2];
    // SAFETY: plain syscalls; the child only calls async-signal-safe functions before exec.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 || libc::pipe2(err.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            bail!("pipe2: {}", std::io::Error::last_os_error());
        }
        match libc::fork() {
            -1 => bail!("fork: {}", std::io::Error::last_os_error()),
            0 => {
                libc::close(fds[1]);
                libc::close(err[0]);
                let mut b = 0u8;
                let n = loop {
                    let n = libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
                    if n >= 0 || *libc::__errno_location() != libc::EINTR {
                        break n;
                    }
                };
                if n == 1 {
                    libc::execv(prog.as_ptr(), argp.as_ptr());
                    // Only reached when the exec failed: tell the parent why.
                    let e = (*libc::__errno_location()).to_ne_bytes();
                    libc::write(err[1], e.as_ptr().cast(), e.len());
                }
                libc::_exit(127);
            }
            pid => {
                libc::close(fds[0]);
                libc::close(err[1]);
                wait_until_held(pid as u32, fds[0]);
                Ok(HeldChild {
                    pid: pid as u32,
                    program: program.to_owned(),
                    go_fd: Some(fds[1]),
                    err_fd: Some(err[0]),
                    reaped: None,
                })
            }
        }
    }
}

/// Waits (at most HOLD_WAIT) until the child is blocked in its read of the hold pipe (`fd`, its
/// number in the child). Until then the hold is the child's first syscall, not yet entered:
/// on a loaded machine a new child can take a while to run, and a read entered after the
/// probes attach is measured as the target's own slow call (and off-CPU time) although it is
/// rtrace's hold. Entered before attach, its entry is never seen and nothing of it is counted.
fn wait_until_held(pid: u32, fd: i32) {
    let start = Instant::now();
    let blocked_in_read =
        |text: &str| crate::procfs::parse_syscall(text).is_some_and(|(nr, args, _, _)| nr == 0 && args[0] == fd as u64);
    while start.elapsed() < HOLD_WAIT {
        match std::fs::read_to_string(format!("/proc/{pid}/syscall")) {
            Ok(t) if blocked_in_read(&t) => return,
            Ok(_) => std::thread::sleep(Duration::from_micros(200)),
            // Not readable (no CONFIG_HAVE_ARCH_TRACEHOOK, or a hardened /proc): no way to know.
            Err(_) => return,
        }
    }
}

/// How long spawn_held waits for the child to block in its hold.
const HOLD_WAIT: Duration = Duration::from_secs(2);

impl HeldChild {
    /// Lets the child exec the command; waits for the exec and returns why it failed, if it did
    /// (the command never ran).
    pub fn release(&mut self) -> Option<String> {
        if let Some(fd) = self.go_fd.take() {
            // SAFETY: fd is our pipe's write end.
            unsafe {
                libc::write(fd, b"g".as_ptr().cast(), 1);
                libc::close(fd);
            }
        }
        let fd = self.err_fd.take()?;
        // SAFETY: fd is the exec-error pipe's read end, owned by us alone from here on.
        let mut pipe = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut buf = Vec::new();
        // EOF with nothing read: the exec succeeded and closed the write end (close-on-exec).
        let _ = pipe.read_to_end(&mut buf);
        let errno = i32::from_ne_bytes(buf.get(..4)?.try_into().ok()?);
        Some(exec_failure(&self.program, errno))
    }

    /// The wait status, once the command has exited: blocking briefly when `exited` says its
    /// exit was seen (it becomes a zombie a moment after its exit event).
    pub fn final_status(&mut self, exited: bool) -> Option<i32> {
        let until = Instant::now() + Duration::from_secs(2);
        while exited && self.try_reap().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.try_reap()
    }

    /// Reaps the child if it has exited (we are its parent); returns its wait status once.
    pub fn try_reap(&mut self) -> Option<i32> {
        if self.reaped.is_none() {
            let mut status = 0;
            // SAFETY: waitpid on our own child.
            let r = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
            if r == self.pid as i32 {
                self.reaped = Some(status);
            }
        }
        self.reaped
    }
}

/// Why `execv(program)` failed with `errno`, naming the fix.
pub fn exec_failure(program: &Path, errno: i32) -> String {
    let name = syscalls::Errno::new(errno).name().unwrap_or("error");
    let p = program.display();
    let why = match errno {
        libc::ENOENT => match script_interpreter(program) {
            Some(interp) => format!("its #! interpreter {interp} does not exist; install it or fix the #! line"),
            None => "its program interpreter (the ELF dynamic loader it names) does not exist".to_owned(),
        },
        libc::ENOEXEC => {
            format!("it is neither an ELF executable for this machine nor a #! script; run it as `rtrace -- sh {p}`")
        }
        libc::EACCES => "permission denied (not executable, or on a noexec mount)".to_owned(),
        _ => std::io::Error::from_raw_os_error(errno).to_string(),
    };
    format!("execve({p}) failed with {name}: {why}")
}

/// The interpreter a `#!` script names, if the file is one.
pub fn script_interpreter(program: &Path) -> Option<String> {
    let mut head = [0u8; 256];
    let n = std::fs::File::open(program).and_then(|mut f| f.read(&mut head)).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&c| c == b'\n').unwrap_or(line.len())];
    let text = String::from_utf8_lossy(line);
    text.split_whitespace().next().map(str::to_owned)
}

impl Drop for HeldChild {
    fn drop(&mut self) {
        if let Some(fd) = self.err_fd.take() {
            unsafe { libc::close(fd) };
        }
        if let Some(fd) = self.go_fd.take() {
            // Never released: closing the pipe makes the child exit 127 without running anything.
            unsafe { libc::close(fd) };
            let mut status = 0;
            unsafe { libc::waitpid(self.pid as i32, &mut status, 0) };
        }
    }
}
