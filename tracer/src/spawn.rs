//! Starting `-- COMMAND` held before exec until the probes are attached.
//!
//! `std::process::Command` with a blocking `pre_exec` deadlocks (spawn waits for the exec), so we
//! fork ourselves, before any other thread exists, and the child blocks reading a pipe. On
//! `release` the parent writes one byte and the child execs; if rtrace fails to attach, dropping
//! the `HeldChild` closes the pipe and the child exits 127 without ever running the command.
use std::{ffi::CString, os::unix::ffi::OsStrExt, path::Path};

use anyhow::{bail, Result};

pub struct HeldChild {
    pub pid: u32,
    go_fd: Option<i32>,
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
    // SAFETY: plain syscalls; the child only calls async-signal-safe functions before exec.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            bail!("pipe2: {}", std::io::Error::last_os_error());
        }
        match libc::fork() {
            -1 => bail!("fork: {}", std::io::Error::last_os_error()),
            0 => {
                libc::close(fds[1]);
                let mut b = 0u8;
                let n = loop {
                    let n = libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
                    if n >= 0 || *libc::__errno_location() != libc::EINTR {
                        break n;
                    }
                };
                if n == 1 {
                    libc::execv(prog.as_ptr(), argp.as_ptr());
                }
                libc::_exit(127);
            }
            pid => {
                libc::close(fds[0]);
                Ok(HeldChild { pid: pid as u32, go_fd: Some(fds[1]), reaped: None })
            }
        }
    }
}

impl HeldChild {
    /// Lets the child exec the command.
    pub fn release(&mut self) {
        if let Some(fd) = self.go_fd.take() {
            // SAFETY: fd is our pipe's write end.
            unsafe {
                libc::write(fd, b"g".as_ptr().cast(), 1);
                libc::close(fd);
            }
        }
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

impl Drop for HeldChild {
    fn drop(&mut self) {
        if let Some(fd) = self.go_fd.take() {
            // Never released: closing the pipe makes the child exit 127 without running anything.
            unsafe { libc::close(fd) };
            let mut status = 0;
            unsafe { libc::waitpid(self.pid as i32, &mut status, 0) };
        }
    }
}
