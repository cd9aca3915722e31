//! What the serve routes need from the rest of rtrace (`Backend`), the errors a request can
//! end in (`ServeError`, each with its HTTP status) and the per-(pid, kind) guard that answers
//! 409 to a second profile of the same kind of the same pid while one runs.
use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
};

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

/// A boxed future, so `Backend` can be used as `dyn Backend` (async trait methods cannot).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The session-backed profiles (issue #14 item 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// On-CPU samples (`/debug/pprof/profile`).
    Cpu,
    /// Off-CPU time by blocking stack (`/debug/pprof/offcpu`).
    Offcpu,
    /// On- and off-CPU together (`/debug/pprof/wall`).
    Wall,
    /// The full report.json of a session (`/debug/rtrace/report`).
    Report,
    /// The same session's report.html (`/debug/rtrace/report.html`).
    ReportHtml,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cpu => "profile",
            Kind::Offcpu => "offcpu",
            Kind::Wall => "wall",
            Kind::Report => "report",
            Kind::ReportHtml => "report.html",
        }
    }
}

/// What the caller was granted for one pid (serve/auth.rs decides it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub pid: u32,
    /// Kernel stacks may be collected: root, or `kernel.perf_event_paranoid` ≤ 1.
    pub kernel_stacks: bool,
    /// A non-root caller's (uid, gid): the session follows the pid's descendants only while
    /// they run with exactly these credentials (checked at attach and, in the kernel, at each
    /// exec: a setuid program is skipped with what it starts, and reported). None: root, all.
    pub owner: Option<(u32, u32)>,
    /// The process's start time when it was authorized (/proc/PID/stat field 22): the session
    /// refuses a pid that names another process by the time it is tracked (exited and reused).
    pub start: Option<u64>,
}

/// `X-Rtrace-Descendants` on every session-backed answer (and a profile comment for a
/// non-root caller): what the session traced besides the pid.
pub const DESCENDANTS_HEADER: &str = "X-Rtrace-Descendants";
pub const DESCENDANTS_TRACED: &str = "traced";
pub const DESCENDANTS_OWN: &str = "traced while they run as the caller (others skipped and listed)";

impl Access {
    /// The `X-Rtrace-Descendants` value for this grant.
    pub fn descendants_text(&self) -> &'static str {
        if self.owner.is_none() {
            DESCENDANTS_TRACED
        } else {
            DESCENDANTS_OWN
        }
    }
}

/// An error a request ends in; `status()` is what `go tool pprof` shows with the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

impl ServeError {
    pub fn status(&self) -> StatusCode {
        match self {
            ServeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServeError::Forbidden(_) => StatusCode::FORBIDDEN,
            ServeError::NotFound(_) => StatusCode::NOT_FOUND,
            ServeError::Conflict(_) => StatusCode::CONFLICT,
            ServeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// `go tool pprof` prints an error body only with `X-Go-Pprof: 1` and a text/plain type
/// (net/http/pprof's serveError does the same): "server response: 404 Not Found - <body>".
impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let mut r = (self.status(), format!("{self}\n")).into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        h.insert("X-Go-Pprof", HeaderValue::from_static("1"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        r
    }
}

/// What the routes ask of rtrace. The session-backed calls are async (they last `seconds`);
/// the Go runtime view is a blocking read of the target's memory (run on a blocking thread).
pub trait Backend: Send + Sync + 'static {
    /// A gzipped pprof profile of `kind` (never `Report`) over `seconds`, fully symbolized.
    fn profile(&self, access: Access, kind: Kind, seconds: u32) -> BoxFuture<'_, Result<Vec<u8>, ServeError>>;
    /// A session of `seconds` on the pid, as `kind`: report.json (`Kind::Report`) or
    /// report.html (`Kind::ReportHtml`).
    fn report(&self, access: Access, kind: Kind, seconds: u32) -> BoxFuture<'_, Result<Vec<u8>, ServeError>>;
    /// The goroutines now: debug 0 a gzipped pprof goroutine profile, 1 Go's grouped text,
    /// 2 the dump (goroutines.txt).
    fn goroutine(&self, pid: u32, debug: u8) -> Result<Vec<u8>, ServeError>;
    /// The heap profile as of the last GC, gzipped pprof.
    fn heap(&self, pid: u32) -> Result<Vec<u8>, ServeError>;
    /// Waits (at most `limit`) until no session runs: every BPF program is detached. True
    /// when none runs.
    fn wait_idle(&self, _limit: std::time::Duration) -> bool {
        true
    }
    /// Starts watching (`--watch`): continuous sessions on the matching processes.
    fn watch(&self, _cfg: super::watch::WatchConfig) {}
    /// The watched processes' metrics; None when nothing is watched (no `--watch`).
    fn metrics(&self) -> Option<String> {
        None
    }
    /// Ends the watch sessions (the daemon stops), waiting until they detached.
    fn shutdown(&self) {}
}

/// The (pid, kind) pairs being served. Decision (#14 item 2): a second request for a running
/// (pid, kind) gets 409 rather than sharing the first one's session — a shared session would
/// hand the second caller a profile of a window it did not ask for.
#[derive(Clone, Default)]
pub struct Running(Arc<Mutex<HashSet<(u32, Kind)>>>);

/// Held while a profile runs; dropping it (end, error, client gone) frees the pair.
pub struct Slot {
    running: Running,
    key: (u32, Kind),
}

impl Running {
    pub fn claim(&self, pid: u32, kind: Kind) -> Result<Slot, ServeError> {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !set.insert((pid, kind)) {
            return Err(ServeError::Conflict(format!(
                "a {} of pid {pid} is already running: wait for it to finish",
                kind.name()
            )));
        }
        Ok(Slot { running: self.clone(), key: (pid, kind) })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.running.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_profile_per_pid_and_kind() {
        let r = Running::default();
        let a = r.claim(10, Kind::Cpu).unwrap();
        assert_eq!(r.claim(10, Kind::Cpu).err().unwrap().status(), StatusCode::CONFLICT);
        let _b = r.claim(10, Kind::Offcpu).expect("another kind of the same pid");
        let _c = r.claim(11, Kind::Cpu).expect("another pid");
        drop(a);
        r.claim(10, Kind::Cpu).expect("free again once the first ended");
    }
}
