//! The HTTP surface of `rtrace serve` (issue #14 item 2): the pid in the path so that
//! `go tool pprof`'s follow-up requests keep it, parameters checked as net/http/pprof checks
//! them, every error text/plain with `X-Go-Pprof: 1`, and a gate before every handler: the
//! Host header against DNS rebinding, the caller's identity, a log line of who asked what.
use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, Path, RawQuery, Request, State},
    http::{header, HeaderValue},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
    Extension, Router,
};

use super::{
    auth::{self, Caller, Policy, Sysctl, TargetCreds},
    backend::{Backend, Kind, Running, ServeError, DESCENDANTS_HEADER, DESCENDANTS_OWN},
    listen::Peer,
};

/// Go's `seconds` default, and the longest profile served (a request lasting longer than an
/// hour is a mistake, not a profile).
pub const DEFAULT_SECONDS: u32 = 30;
pub const MAX_SECONDS: u32 = 3600;

#[derive(Clone)]
pub struct App {
    pub backend: Arc<dyn Backend>,
    pub policy: Arc<Policy>,
    pub running: Running,
    /// How the kernel settings are read (a literal in tests).
    pub sysctl: fn() -> Sysctl,
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/debug/pprof/", get(index))
        .route("/debug/pprof", get(index))
        .route("/pid/{pid}/debug/pprof/profile", get(cpu))
        .route("/pid/{pid}/debug/pprof/offcpu", get(offcpu))
        .route("/pid/{pid}/debug/pprof/wall", get(wall))
        .route("/pid/{pid}/debug/rtrace/report", get(report))
        .route("/pid/{pid}/debug/rtrace/report.html", get(report_html))
        .route("/pid/{pid}/debug/pprof/goroutine", get(goroutine))
        .route("/pid/{pid}/debug/pprof/heap", get(heap))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(app.clone(), gate))
        .with_state(app)
}

/// The Host names a request to `listener` may carry: its own address, or localhost with its
/// port. A page from a rebinding DNS name carries that name, and is refused.
pub fn host_ok(listener: SocketAddr, host: Option<&str>) -> Result<(), String> {
    let host = host.ok_or("no Host header")?;
    let port = listener.port();
    let ok = host == listener.to_string()
        || host == format!("localhost:{port}")
        || (port == 80 && (host == "localhost" || host == listener.ip().to_string()));
    if ok {
        Ok(())
    } else {
        Err(format!("Host {host:?} is not this listener's ({listener}): refused (DNS rebinding guard)"))
    }
}

/// Who the peer is, or why nobody can tell.
fn identify(peer: &Peer) -> Result<Caller, String> {
    let (uid, gid, pid, groups, via) = match peer {
        Peer::Unix { uid, gid, pid } => {
            let groups = pid.map(auth::groups_of).unwrap_or_default();
            let via = pid.map_or("on the unix socket".into(), |p| format!("pid {p} on the unix socket"));
            (*uid, *gid, *pid, groups, via)
        }
        Peer::Tcp { remote, uid, .. } => {
            let uid = *uid.as_ref().map_err(Clone::clone)?;
            // A uid without a passwd entry has no group to be in (u32::MAX matches nothing).
            let (_, gid, groups) = auth::user_groups(uid);
            (uid, gid.unwrap_or(u32::MAX), None, groups, format!("from {remote}"))
        }
    };
    let name = auth::user_groups(uid).0;
    let who = if name.is_empty() { format!("uid {uid} {via}") } else { format!("uid {uid} ({name}) {via}") };
    Ok(Caller { uid, gid, pid, groups, who })
}

/// Before every handler: Host, identity; after: one log line.
async fn gate(ConnectInfo(peer): ConnectInfo<Peer>, mut req: Request, next: Next) -> Response {
    let what = format!("{} {}", req.method(), req.uri());
    if let Peer::Tcp { listener, .. } = &peer {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
        if let Err(e) = host_ok(*listener, host) {
            log::warn!("{what} from {peer:?}: 403 {e}");
            return ServeError::Forbidden(e).into_response();
        }
    }
    let caller = match identify(&peer) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("{what}: 403 {e}");
            return ServeError::Forbidden(e).into_response();
        }
    };
    let who = caller.who.clone();
    req.extensions_mut().insert(caller);
    let started = std::time::Instant::now();
    let r = next.run(req).await;
    let status = r.status();
    let took = started.elapsed();
    if status.is_success() {
        log::info!("{who}: {what} → {} in {took:.1?}", status.as_u16());
    } else {
        log::warn!("{who}: {what} → {} in {took:.1?}", status.as_u16());
    }
    r
}

/// The query's pairs (percent-decoded).
fn pairs(q: &Option<String>) -> Vec<(String, String)> {
    q.as_deref().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

/// `seconds`: default 30, an integer in 1..=3600 (Go's 400 for a duration past its limit).
pub fn seconds(q: &Option<String>) -> Result<u32, ServeError> {
    match pairs(q).into_iter().rev().find(|(k, _)| k == "seconds") {
        None => Ok(DEFAULT_SECONDS),
        Some((_, v)) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_SECONDS).contains(&n) => Ok(n),
            _ => {
                Err(ServeError::BadRequest(format!("bad seconds={v:?}: a whole number of seconds, 1 to {MAX_SECONDS}")))
            }
        },
    }
}

/// `debug`: 0 (pprof, the default), 1 or 2 (text), as Go's goroutine profile.
pub fn debug(q: &Option<String>, allowed: &[u8]) -> Result<u8, ServeError> {
    match pairs(q).into_iter().rev().find(|(k, _)| k == "debug") {
        None => Ok(0),
        Some((_, v)) => match v.parse::<u8>() {
            Ok(n) if allowed.contains(&n) => Ok(n),
            _ => {
                let list: Vec<String> = allowed.iter().map(u8::to_string).collect();
                Err(ServeError::BadRequest(format!("bad debug={v:?}: {} here", list.join(" or "))))
            }
        },
    }
}

fn pid_of(s: &str) -> Result<u32, ServeError> {
    s.parse::<u32>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| ServeError::BadRequest(format!("bad pid {s:?} in the path: /pid/PID/debug/pprof/…")))
}

/// Admission, the pid and its inspection, in that order: a refused caller learns nothing of
/// which pids exist.
fn authorize(app: &App, caller: &Caller, pid: &str) -> Result<super::backend::Access, ServeError> {
    let sys = (app.sysctl)();
    auth::admit(caller, &app.policy, sys).map_err(ServeError::Forbidden)?;
    let pid = pid_of(pid)?;
    // The process is named by its start time too, read on both sides of its credentials: the
    // same before and after means they are that process's, and the session checks it again
    // once the pid is tracked (Access::start).
    let start = || crate::procfs::stat(pid).map(|s| s.start_time);
    let before = start();
    let t = TargetCreds::read(pid).filter(|_| !crate::procfs::is_kernel_thread(pid));
    let t = t.filter(|_| before.is_some() && start() == before);
    let access = auth::authorize(caller, &app.policy, sys, t.as_ref(), pid)?;
    Ok(super::backend::Access { start: before, ..access })
}

fn bytes(body: Vec<u8>, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A pprof file, as net/http/pprof sends one.
fn pprof(body: Vec<u8>, name: &str) -> Response {
    let mut r = bytes(body, "application/octet-stream");
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

async fn profile(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(pid): Path<String>,
    RawQuery(q): RawQuery,
    kind: Kind,
) -> Result<Response, ServeError> {
    let secs = seconds(&q)?;
    let access = authorize(&app, &caller, &pid)?;
    let _slot = app.running.claim(access.pid, kind)?;
    let mut r = match kind {
        Kind::Report => bytes(app.backend.report(access, kind, secs).await?, "application/json"),
        Kind::ReportHtml => bytes(app.backend.report(access, kind, secs).await?, "text/html; charset=utf-8"),
        _ => pprof(app.backend.profile(access, kind, secs).await?, kind.name()),
    };
    // What the session traced besides the pid (root: its descendants; others: theirs alone).
    r.headers_mut().insert(DESCENDANTS_HEADER, HeaderValue::from_static(access.descendants_text()));
    Ok(r)
}

/// One handler per session-backed kind (axum handlers take extractors only).
macro_rules! kind_handler {
    ($($name:ident => $kind:expr),*) => {$(
        async fn $name(
            s: State<App>,
            c: Extension<Caller>,
            p: Path<String>,
            q: RawQuery,
        ) -> Result<Response, ServeError> {
            profile(s, c, p, q, $kind).await
        }
    )*};
}
kind_handler!(
    cpu => Kind::Cpu,
    offcpu => Kind::Offcpu,
    wall => Kind::Wall,
    report => Kind::Report,
    report_html => Kind::ReportHtml
);

async fn goroutine(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(pid): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ServeError> {
    let level = debug(&q, &[0, 1, 2])?;
    let access = authorize(&app, &caller, &pid)?;
    let b = app.backend.clone();
    let body = blocking(move || b.goroutine(access.pid, level)).await?;
    Ok(if level == 0 { pprof(body, "goroutine") } else { bytes(body, "text/plain; charset=utf-8") })
}

async fn heap(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    Path(pid): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ServeError> {
    debug(&q, &[0])?;
    let access = authorize(&app, &caller, &pid)?;
    let b = app.backend.clone();
    Ok(pprof(blocking(move || b.heap(access.pid)).await?, "heap"))
}

/// A read of the target's memory, off the event loop.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServeError> + Send + 'static,
) -> Result<T, ServeError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ServeError::Internal(format!("the reader failed: {e}")))?
}

const ENDPOINTS: &str = "\
/pid/PID/debug/pprof/profile?seconds=N    on-CPU profile (pprof; default 30 s)
/pid/PID/debug/pprof/offcpu?seconds=N     off-CPU profile (pprof)
/pid/PID/debug/pprof/wall?seconds=N       wall-clock profile (pprof)
/pid/PID/debug/pprof/goroutine[?debug=1|2] goroutines of a Go process now (pprof; debug=1 grouped text, 2 the dump)
/pid/PID/debug/pprof/heap                 heap profile of a Go process as of its last GC (pprof)
/pid/PID/debug/rtrace/report?seconds=N    rtrace's report.json of a session
/pid/PID/debug/rtrace/report.html?seconds=N  the same session's report.html (open in a browser)
/metrics                                  the --watch processes' metrics (OpenMetrics, for Prometheus)
/healthz                                  liveness
";

/// `/metrics`: for whoever may trace at all (root, or the --allow-group's members): it names
/// the watched processes. 404 without --watch.
async fn metrics(State(app): State<App>, Extension(caller): Extension<Caller>) -> Result<Response, ServeError> {
    auth::admit(&caller, &app.policy, (app.sysctl)()).map_err(ServeError::Forbidden)?;
    let b = app.backend.clone();
    let text = blocking(move || {
        b.metrics().ok_or_else(|| ServeError::NotFound("no metrics: start rtrace serve with --watch SPEC".into()))
    })
    .await?;
    Ok(bytes(text.into_bytes(), "application/openmetrics-text; version=1.0.0; charset=utf-8"))
}

/// `/debug/pprof/`: the endpoints and the processes this caller may trace.
async fn index(State(app): State<App>, Extension(caller): Extension<Caller>) -> Response {
    let sys = (app.sysctl)();
    let mut s = format!("rtrace serve — profiles of other processes, for go tool pprof and curl\n\n{ENDPOINTS}\n");
    match auth::admit(&caller, &app.policy, sys) {
        Err(e) => s.push_str(&format!("{e}\n")),
        Ok(kernel) => {
            let procs = tokio::task::spawn_blocking({
                let (c, p) = (caller.clone(), app.policy.clone());
                move || auth::traceable(&c, &p, sys)
            })
            .await
            .unwrap_or_default();
            let k =
                if kernel { "with kernel stacks" } else { "without kernel stacks (kernel.perf_event_paranoid > 1)" };
            s.push_str(&format!("{} may trace {} processes, {k}:\n", caller.who, procs.len()));
            if caller.uid != 0 {
                s.push_str(&format!(
                    "descendants: {DESCENDANTS_OWN}: a profile or report covers the pid and the processes it starts that run as you\n"
                ));
            }
            for (pid, comm) in procs {
                s.push_str(&format!("{pid:>8}  {comm}\n"));
            }
        }
    }
    bytes(s.into_bytes(), "text/plain; charset=utf-8")
}

async fn not_found(req: Request) -> ServeError {
    let path = req.uri().path();
    if path.starts_with("/debug/pprof/") {
        // `go tool pprof host:port` asks /debug/pprof/profile: say where the pid goes.
        let rest = path.trim_start_matches("/debug/pprof/");
        return ServeError::NotFound(format!("no pid in the path: ask /pid/PID/debug/pprof/{rest}"));
    }
    ServeError::NotFound(format!("no endpoint {path}: see /debug/pprof/"))
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
