//! Routing, parameters, the error format and the gate, through the router without a socket.
use std::sync::Mutex;

use axum::{body::Body, extract::connect_info::MockConnectInfo, http::Request as HttpRequest};
use tower::ServiceExt;

use super::*;
use crate::serve::backend::{Access, BoxFuture};

/// Records what it was asked; `profile` waits for `release` when given one.
#[derive(Default)]
struct Mock {
    asked: Mutex<Vec<(Access, Kind, u32)>>,
    release: Option<Arc<tokio::sync::Notify>>,
}

impl Backend for Mock {
    fn profile(&self, a: Access, kind: Kind, s: u32) -> BoxFuture<'_, Result<Vec<u8>, ServeError>> {
        self.asked.lock().unwrap().push((a, kind, s));
        Box::pin(async move {
            if let Some(r) = &self.release {
                r.notified().await;
            }
            Ok(b"pprof".to_vec())
        })
    }
    fn report(&self, a: Access, kind: Kind, s: u32) -> BoxFuture<'_, Result<Vec<u8>, ServeError>> {
        self.asked.lock().unwrap().push((a, kind, s));
        let body = if kind == Kind::ReportHtml { b"<!DOCTYPE html>".to_vec() } else { b"{}".to_vec() };
        Box::pin(async move { Ok(body) })
    }
    fn goroutine(&self, pid: u32, debug: u8) -> Result<Vec<u8>, ServeError> {
        Ok(format!("goroutines of {pid} at {debug}").into_bytes())
    }
    fn heap(&self, pid: u32) -> Result<Vec<u8>, ServeError> {
        Err(ServeError::Internal(format!("heap of {pid}")))
    }
}

fn app(backend: Arc<dyn Backend>, policy: Policy) -> App {
    App {
        backend,
        policy: Arc::new(policy),
        running: Running::default(),
        sysctl: || Sysctl { ptrace_scope: 0, perf_event_paranoid: 2 },
    }
}

const ROOT: Peer = Peer::Unix { uid: 0, gid: 0, pid: None };

fn tcp(uid: Result<u32, String>) -> Peer {
    Peer::Tcp { listener: "127.0.0.1:6060".parse().unwrap(), remote: "127.0.0.1:50000".parse().unwrap(), uid }
}

/// (status, content type, X-Go-Pprof, body) of one GET.
async fn get_as(app: &App, peer: Peer, uri: &str, host: &str) -> (u16, String, bool, String) {
    let req = HttpRequest::get(uri).header("Host", host).body(Body::empty()).unwrap();
    let r = router(app.clone()).layer(MockConnectInfo(peer)).oneshot(req).await.unwrap();
    let status = r.status().as_u16();
    let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let pprof = r.headers().get("x-go-pprof").is_some_and(|v| v == "1");
    let cors = r.headers().keys().any(|k| k.as_str().starts_with("access-control-"));
    assert!(!cors, "no CORS headers, ever");
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (status, ct, pprof, String::from_utf8_lossy(&body).into_owned())
}

/// The X-Rtrace-Descendants header of one GET.
async fn descendants_header(app: &App, peer: Peer, uri: &str) -> Option<String> {
    let req = HttpRequest::get(uri).header("Host", "x").body(Body::empty()).unwrap();
    let r = router(app.clone()).layer(MockConnectInfo(peer)).oneshot(req).await.unwrap();
    r.headers().get("x-rtrace-descendants").map(|v| v.to_str().unwrap().to_owned())
}

async fn get(app: &App, uri: &str) -> (u16, String, bool, String) {
    get_as(app, ROOT, uri, "localhost").await
}

/// An error as go tool pprof shows it: text/plain, X-Go-Pprof: 1, one line.
fn error(r: (u16, String, bool, String)) -> (u16, String) {
    assert_eq!(r.1, "text/plain; charset=utf-8", "{r:?}");
    assert!(r.2, "X-Go-Pprof: 1 on every error: {r:?}");
    assert_eq!(r.3.matches('\n').count(), 1, "one line: {r:?}");
    (r.0, r.3.trim_end().to_owned())
}

#[tokio::test]
async fn routes_and_parameters() {
    let mock = Arc::new(Mock::default());
    let a = app(mock.clone(), Policy::default());
    let me = std::process::id();
    assert_eq!(get(&a, "/healthz").await.3, "ok\n");
    let r = get(&a, &format!("/pid/{me}/debug/pprof/profile")).await;
    assert_eq!((r.0, r.1.as_str(), r.3.as_str()), (200, "application/octet-stream", "pprof"));
    get(&a, &format!("/pid/{me}/debug/pprof/offcpu?seconds=5")).await;
    get(&a, &format!("/pid/{me}/debug/pprof/wall?seconds=3600&other=kept")).await;
    let r = get(&a, &format!("/pid/{me}/debug/rtrace/report?seconds=2")).await;
    assert_eq!((r.0, r.1.as_str(), r.3.as_str()), (200, "application/json", "{}"));
    let r = get(&a, &format!("/pid/{me}/debug/rtrace/report.html?seconds=7")).await;
    assert_eq!((r.0, r.1.as_str(), r.3.as_str()), (200, "text/html; charset=utf-8", "<!DOCTYPE html>"));
    let start = crate::procfs::stat(me).map(|s| s.start_time);
    let full = Access { pid: me, kernel_stacks: true, owner: None, start };
    assert_eq!(
        *mock.asked.lock().unwrap(),
        [
            (full, Kind::Cpu, 30),
            (full, Kind::Offcpu, 5),
            (full, Kind::Wall, 3600),
            (full, Kind::Report, 2),
            (full, Kind::ReportHtml, 7)
        ]
    );
    // The index lists it, and its seconds are checked as every session's.
    assert!(get(&a, "/debug/pprof/").await.3.contains("\n/pid/PID/debug/rtrace/report.html?seconds=N "));
    let r = error(get(&a, &format!("/pid/{me}/debug/rtrace/report.html?seconds=0")).await);
    assert_eq!(r, (400, "bad seconds=\"0\": a whole number of seconds, 1 to 3600".into()));
    let r = get(&a, &format!("/pid/{me}/debug/pprof/goroutine?debug=2")).await;
    assert_eq!((r.0, r.1.as_str(), r.3), (200, "text/plain; charset=utf-8", format!("goroutines of {me} at 2")));
    let r = get(&a, &format!("/pid/{me}/debug/pprof/goroutine")).await;
    assert_eq!((r.0, r.1.as_str()), (200, "application/octet-stream"));
    assert_eq!(error(get(&a, &format!("/pid/{me}/debug/pprof/heap")).await), (500, format!("heap of {me}")));
}

#[tokio::test]
async fn bad_parameters_are_400() {
    let a = app(Arc::new(Mock::default()), Policy::default());
    let me = std::process::id();
    for (q, why) in [
        ("profile?seconds=0", "bad seconds=\"0\": a whole number of seconds, 1 to 3600"),
        ("profile?seconds=3601", "bad seconds=\"3601\": a whole number of seconds, 1 to 3600"),
        ("wall?seconds=1.5", "bad seconds=\"1.5\": a whole number of seconds, 1 to 3600"),
        ("offcpu?seconds=", "bad seconds=\"\": a whole number of seconds, 1 to 3600"),
        ("goroutine?debug=3", "bad debug=\"3\": 0 or 1 or 2 here"),
        ("heap?debug=1", "bad debug=\"1\": 0 here"),
    ] {
        assert_eq!(error(get(&a, &format!("/pid/{me}/debug/pprof/{q}")).await), (400, why.to_owned()), "{q}");
    }
    let r = error(get(&a, "/pid/abc/debug/pprof/profile").await);
    assert_eq!(r, (400, "bad pid \"abc\" in the path: /pid/PID/debug/pprof/…".into()));
    let gone = u32::MAX - 1;
    assert_eq!(
        error(get(&a, &format!("/pid/{gone}/debug/pprof/goroutine")).await),
        (404, format!("no such pid {gone}"))
    );
    // pid 2 is kthreadd: a kernel thread is no process to profile.
    assert_eq!(error(get(&a, "/pid/2/debug/pprof/profile").await).0, 404);
    let r = error(get(&a, "/debug/pprof/profile?seconds=5").await);
    assert_eq!(r, (404, "no pid in the path: ask /pid/PID/debug/pprof/profile".into()));
    assert_eq!(error(get(&a, "/nothing").await), (404, "no endpoint /nothing: see /debug/pprof/".into()));
    // /metrics is --watch's.
    assert_eq!(error(get(&a, "/metrics").await), (404, "no metrics: start rtrace serve with --watch SPEC".into()));
}

#[tokio::test]
async fn the_gate() {
    let a = app(Arc::new(Mock::default()), Policy::default());
    let me = std::process::id();
    let uri = format!("/pid/{me}/debug/pprof/goroutine?debug=1");
    // DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends its own name.
    let r = error(get_as(&a, tcp(Ok(0)), &uri, "evil.example:6060").await);
    assert_eq!(
        r,
        (
            403,
            "Host \"evil.example:6060\" is not this listener's (127.0.0.1:6060): refused (DNS rebinding guard)".into()
        )
    );
    assert_eq!(error(get_as(&a, tcp(Ok(0)), "/healthz", "evil.example:6060").await).0, 403);
    for host in ["127.0.0.1:6060", "localhost:6060"] {
        assert_eq!(get_as(&a, tcp(Ok(0)), &uri, host).await.0, 200, "{host}");
    }
    // A TCP peer nobody can name.
    let r = error(get_as(&a, tcp(Err("cannot tell who connected".into())), &uri, "127.0.0.1:6060").await);
    assert_eq!(r, (403, "cannot tell who connected".into()));
    // Non-root without --allow-group: refused, whatever the pid (even one that does not exist).
    let user = Peer::Unix { uid: 65534, gid: 65534, pid: None };
    for pid in [me, u32::MAX - 1] {
        let (status, msg) = error(get_as(&a, user.clone(), &format!("/pid/{pid}/debug/pprof/heap"), "x").await);
        assert_eq!(status, 403);
        assert!(
            msg.ends_with("refused: only root may trace (rtrace serve was started without --allow-group)"),
            "{msg}"
        );
    }
    // The index says so too, and lists nothing.
    let r = get_as(&a, user, "/debug/pprof/", "x").await;
    assert!(r.3.contains("refused: only root may trace") && !r.3.contains("processes, with"), "{}", r.3);
    // Root's index lists this process, with kernel stacks.
    let r = get(&a, "/debug/pprof/").await;
    assert!(r.3.contains(&format!("\n{me:>8}  ")) && r.3.contains("processes, with kernel stacks:"), "{}", r.3);
    assert!(!r.3.contains("descendants: traced while"), "root's sessions follow all descendants: {}", r.3);
    let h = descendants_header(&a, ROOT, &format!("/pid/{me}/debug/rtrace/report?seconds=1")).await;
    assert_eq!(h.as_deref(), Some("traced"));
}

/// A member of the group may trace its own processes only, without kernel stacks at
/// perf_event_paranoid 2: another user's process is refused, its own (a child started with
/// its uid and gid, when we are root) is served, and the index lists it.
#[tokio::test]
async fn allow_group_members_own_processes() {
    use std::os::unix::process::CommandExt;
    let mock = Arc::new(Mock::default());
    let a = app(mock.clone(), Policy { allow_group: Some(("tracing".into(), 950)) });
    let member = Peer::Unix { uid: 4242, gid: 950, pid: None };
    let me = std::process::id();
    let (status, msg) = error(get_as(&a, member.clone(), &format!("/pid/{me}/debug/pprof/profile"), "x").await);
    assert_eq!(status, 403);
    assert!(msg.starts_with(&format!("uid 4242 on the unix socket may not trace pid {me} (")), "{msg}");
    let outsider = Peer::Unix { uid: 4243, gid: 951, pid: None };
    let (status, msg) = error(get_as(&a, outsider, &format!("/pid/{me}/debug/pprof/profile"), "x").await);
    assert_eq!(
        (status, msg.as_str()),
        (403, "uid 4243 on the unix socket refused: not a member of group tracing (--allow-group)")
    );
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let mut child = std::process::Command::new("sleep").arg("30").uid(4242).gid(950).spawn().unwrap();
    let pid = child.id();
    let r = get_as(&a, member.clone(), &format!("/pid/{pid}/debug/pprof/profile?seconds=1"), "x").await;
    assert_eq!(r.0, 200, "{r:?}");
    assert_eq!(
        mock.asked.lock().unwrap()[0],
        (
            Access {
                pid,
                kernel_stacks: false,
                owner: Some((4242, 950)),
                // The process as authorized: its start time, for the session to check again.
                start: crate::procfs::stat(pid).map(|s| s.start_time)
            },
            Kind::Cpu,
            1
        )
    );
    let h = descendants_header(&a, member.clone(), &format!("/pid/{pid}/debug/pprof/offcpu?seconds=1")).await;
    assert_eq!(h.as_deref(), Some("traced while they run as the caller (others skipped and listed)"));
    let r = get_as(&a, member, "/debug/pprof/", "x").await;
    assert!(
        r.3.contains("\ndescendants: traced while they run as the caller (others skipped and listed): "),
        "{}",
        r.3
    );
    assert!(r.3.contains(&format!("\n{pid:>8}  sleep\n")), "its own process listed: {}", r.3);
    assert!(!r.3.contains(&format!("\n{me:>8}  ")), "not root's: {}", r.3);
    assert!(r.3.contains("without kernel stacks"), "{}", r.3);
    let _ = child.kill();
    let _ = child.wait();
}

/// A second profile of the same kind of the same pid is 409 while the first runs; another
/// kind, or another pid, runs alongside.
#[tokio::test]
async fn concurrent_profiles() {
    let release = Arc::new(tokio::sync::Notify::new());
    let mock = Arc::new(Mock { release: Some(release.clone()), ..Default::default() });
    let a = app(mock.clone(), Policy::default());
    let me = std::process::id();
    let parent = std::os::unix::process::parent_id();
    let first = tokio::spawn({
        let a = a.clone();
        async move { get(&a, &format!("/pid/{me}/debug/pprof/profile?seconds=1")).await }
    });
    while mock.asked.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    let r = error(get(&a, &format!("/pid/{me}/debug/pprof/profile?seconds=1")).await);
    assert_eq!(r, (409, format!("a profile of pid {me} is already running: wait for it to finish")));
    let others = tokio::spawn({
        let a = a.clone();
        async move {
            let x = get(&a, &format!("/pid/{me}/debug/pprof/offcpu?seconds=1")).await.0;
            let y = get(&a, &format!("/pid/{parent}/debug/pprof/profile?seconds=1")).await.0;
            (x, y)
        }
    });
    while mock.asked.lock().unwrap().len() < 2 {
        tokio::task::yield_now().await;
    }
    release.notify_waiters();
    while mock.asked.lock().unwrap().len() < 3 {
        tokio::task::yield_now().await;
        release.notify_waiters();
    }
    release.notify_waiters();
    let o = loop {
        if others.is_finished() {
            break others.await.unwrap();
        }
        release.notify_waiters();
        tokio::task::yield_now().await;
    };
    assert_eq!(o, (200, 200));
    assert_eq!(first.await.unwrap().0, 200);
    // Done: the pair is free again.
    let again = tokio::spawn({
        let a = a.clone();
        async move { get(&a, &format!("/pid/{me}/debug/pprof/profile?seconds=1")).await.0 }
    });
    while !again.is_finished() {
        release.notify_waiters();
        tokio::task::yield_now().await;
    }
    assert_eq!(again.await.unwrap(), 200);
}

#[test]
fn host_rules() {
    let l: SocketAddr = "127.0.0.1:6060".parse().unwrap();
    assert!(host_ok(l, Some("127.0.0.1:6060")).is_ok());
    assert!(host_ok(l, Some("localhost:6060")).is_ok());
    assert!(host_ok(l, Some("localhost:6061")).is_err());
    assert!(host_ok(l, Some("127.0.0.1")).is_err(), "port 80 only may be left out");
    assert_eq!(host_ok(l, None), Err("no Host header".into()));
    let l6: SocketAddr = "[::1]:6060".parse().unwrap();
    assert!(host_ok(l6, Some("[::1]:6060")).is_ok());
}
