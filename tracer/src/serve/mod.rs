//! `rtrace serve` (issue #14): a long-running daemon that gives every process on the host
//! net/http/pprof's endpoints from outside — on a unix socket, and on loopback TCP when
//! asked — authorizing each caller (`auth`, `nettcp`) before anything is read. Idle it holds
//! no BPF program and waits in epoll. `routes` is the HTTP surface, `backend` what it needs
//! from the rest of rtrace, `sessions` the session-backed profiles (one session per request,
//! the CLI's session code), `goview` the Go runtime view read on demand, `listen` the sockets.
pub mod auth;
pub mod backend;
pub mod goview;
pub mod listen;
pub mod nettcp;
pub mod routes;
pub mod sessions;
pub mod watch;

use std::{future::IntoFuture, net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{Context, Result};

use self::{
    auth::Policy,
    backend::{Backend, Running},
    listen::Peer,
};

/// `rtrace serve`'s arguments.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
#[command(after_help = "\
Endpoints (the pid in the path): /pid/PID/debug/pprof/{profile,offcpu,wall}?seconds=N, \
/pid/PID/debug/pprof/goroutine[?debug=1|2], /pid/PID/debug/pprof/heap, /pid/PID/debug/rtrace/report?seconds=N, \
/debug/pprof/ (index), /healthz.
Example: rtrace serve --listen 127.0.0.1:6060 & go tool pprof http://127.0.0.1:6060/pid/1234/debug/pprof/goroutine
As a systemd service: rtrace serve --print-unit > /etc/systemd/system/rtrace.service && systemctl daemon-reload && \
systemctl enable --now rtrace
Logs (who asked for what) go to stderr (the journal); RTRACE_LOG=warn quiets them.")]
pub struct ServeArgs {
    /// Also listen on this loopback TCP address (e.g. 127.0.0.1:6060), for go tool pprof,
    /// which cannot speak to a unix socket. Non-loopback addresses are refused.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// The unix socket to listen on (mode 0660).
    #[arg(long, value_name = "PATH", default_value = listen::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Let members of this group (name or gid) trace the processes they could inspect
    /// themselves (same uid and gid, dumpable); without it only root may trace.
    #[arg(long, value_name = "GROUP")]
    pub allow_group: Option<String>,
    /// Print a systemd unit that runs `rtrace serve` with these arguments, and exit.
    #[arg(long)]
    pub print_unit: bool,
    /// Trace matching processes continuously, running ones and ones started later, with their
    /// descendants, for GET /metrics: pid:N, comm:NAME, exe:PATH or cgroup:PATH (repeatable).
    #[arg(long, value_name = "SPEC")]
    pub watch: Vec<watch::Spec>,
    /// On-CPU sampling rate of the --watch sessions.
    #[arg(long, value_name = "HZ", default_value_t = 19, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub watch_frequency: u64,
    /// How long a watched process that exited (with its descendants) stays in /metrics.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_watch_keep)]
    pub watch_keep: std::time::Duration,
    /// Push each watched process's CPU and off-CPU profile to Grafana Pyroscope (or Grafana
    /// Alloy's pyroscope.receive_http) every --push-interval and when it exits: http://HOST:PORT.
    #[arg(long, value_name = "URL", requires = "watch")]
    pub pyroscope: Option<crate::push::Endpoint>,
    /// How often the watched processes' profiles are pushed.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_push_interval)]
    pub push_interval: std::time::Duration,
    /// The service_name of a watched comm's profiles: COMM=NAME (repeatable; default: the comm).
    #[arg(long, value_name = "COMM=NAME", value_parser = parse_service_name)]
    pub service_name: Vec<(String, String)>,
}

fn parse_push_interval(s: &str) -> Result<std::time::Duration, String> {
    match crate::cli::parse_duration(s) {
        Ok(d) if d >= std::time::Duration::from_secs(1) => Ok(d),
        _ => Err(format!("--push-interval {s:?}: use a duration of 1s or more, e.g. 15s")),
    }
}

fn parse_watch_keep(s: &str) -> Result<std::time::Duration, String> {
    match crate::cli::parse_duration(s) {
        Ok(d) if d >= std::time::Duration::from_secs(1) => Ok(d),
        _ => Err(format!("--watch-keep {s:?}: use a duration of 1s or more, e.g. 60s")),
    }
}

fn parse_service_name(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((c, n)) if !c.is_empty() && !n.is_empty() => Ok((c.to_owned(), n.to_owned())),
        _ => Err(format!("--service-name {s:?}: expected COMM=NAME, e.g. make=ci-make")),
    }
}

impl ServeArgs {
    /// The defaults of `rtrace serve --socket PATH` (tests and embedders).
    pub fn on_socket(socket: PathBuf) -> ServeArgs {
        ServeArgs {
            listen: None,
            socket,
            allow_group: None,
            print_unit: false,
            watch: Vec::new(),
            watch_frequency: 19,
            watch_keep: watch::KEEP,
            pyroscope: None,
            push_interval: std::time::Duration::from_secs(15),
            service_name: Vec::new(),
        }
    }
}

/// The systemd unit for `args` (`--print-unit`): /run/rtrace made by systemd, stopped by
/// SIGTERM, restarted on failure; root, because loading BPF programs and reading other
/// processes' memory needs CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE.
pub fn systemd_unit(args: &ServeArgs, exe: &str) -> String {
    let mut cmd = format!("{exe} serve --socket {}", args.socket.display());
    if let Some(l) = &args.listen {
        cmd.push_str(&format!(" --listen {l}"));
    }
    if let Some(g) = &args.allow_group {
        cmd.push_str(&format!(" --allow-group {g}"));
    }
    for w in &args.watch {
        cmd.push_str(&format!(" --watch {w}"));
    }
    if !args.watch.is_empty() && args.watch_frequency != 19 {
        cmd.push_str(&format!(" --watch-frequency {}", args.watch_frequency));
    }
    if !args.watch.is_empty() && args.watch_keep != watch::KEEP {
        cmd.push_str(&format!(" --watch-keep {}s", args.watch_keep.as_secs()));
    }
    if let Some(p) = &args.pyroscope {
        cmd.push_str(&format!(
            " --pyroscope http://{}{} --push-interval {}s",
            p.authority,
            p.prefix,
            args.push_interval.as_secs()
        ));
    }
    for (c, n) in &args.service_name {
        cmd.push_str(&format!(" --service-name {c}={n}"));
    }
    format!(
        "[Unit]\nDescription=rtrace serve: pprof endpoints for every process on this host\nAfter=local-fs.target\n\n\
         [Service]\nExecStart={cmd}\nRuntimeDirectory=rtrace\nRuntimeDirectoryMode=0755\nKillSignal=SIGTERM\n\
         Restart=on-failure\nEnvironment=RTRACE_LOG=info\n\n[Install]\nWantedBy=multi-user.target\n"
    )
}

/// A bad `rtrace serve` argument (a non-loopback --listen, an unknown group): the CLI exits
/// with 2 for it, as for every bad input (error.rs's UsageError).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadArgs(pub String);

impl BadArgs {
    pub const EXIT_CODE: u8 = 2;
}

/// A group name or number, as `--allow-group` takes it.
fn resolve_group(g: &str) -> Result<(String, u32)> {
    use nix::unistd::{Gid, Group};
    let found = match g.parse::<u32>() {
        Ok(n) => Group::from_gid(Gid::from_raw(n)),
        Err(_) => Group::from_name(g),
    };
    let grp =
        found.ok().flatten().ok_or_else(|| BadArgs(format!("--allow-group {g}: no such group (see getent group)")))?;
    Ok((grp.name, grp.gid.as_raw()))
}

/// A running daemon: its listeners' addresses and the way to stop it.
pub struct Server {
    pub socket: PathBuf,
    pub tcp: Option<SocketAddr>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    _file: listen::SocketFile,
}

impl Server {
    /// Binds every listener (errors name the address or path) and starts serving on the
    /// current tokio runtime.
    pub async fn start(args: &ServeArgs, backend: Arc<dyn Backend>) -> Result<Server> {
        let policy = Policy { allow_group: args.allow_group.as_deref().map(resolve_group).transpose()? };
        let tcp_addr = args.listen.as_deref().map(listen::check_listen).transpose().map_err(BadArgs)?;
        let unix = listen::bind_unix(&args.socket, policy.allow_group.as_ref().map(|g| g.1))?;
        let file = listen::SocketFile(args.socket.clone());
        let app =
            routes::App { backend, policy: Arc::new(policy), running: Running::default(), sysctl: auth::Sysctl::read };
        if !args.watch.is_empty() {
            crate::session::preflight()?;
            app.backend.watch(watch::WatchConfig {
                specs: args.watch.clone(),
                frequency_hz: args.watch_frequency,
                keep: args.watch_keep,
                push: args.pyroscope.clone().map(|to| watch::push::PushConfig {
                    to,
                    interval: args.push_interval,
                    names: args.service_name.clone(),
                }),
            });
        }
        let make = || routes::router(app.clone()).into_make_service_with_connect_info::<Peer>();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut tasks =
            vec![tokio::spawn(axum::serve(unix, make()).with_graceful_shutdown(stopped(rx.clone())).into_future())];
        let mut tcp = None;
        if let Some(a) = tcp_addr {
            let l = tokio::net::TcpListener::bind(a).await.with_context(|| format!("--listen {a}: binding"))?;
            tcp = Some(l.local_addr()?);
            tasks.push(tokio::spawn(axum::serve(l, make()).with_graceful_shutdown(stopped(rx)).into_future()));
        }
        Ok(Server { socket: args.socket.clone(), tcp, stop, tasks, _file: file })
    }

    /// Stops accepting, lets requests in flight finish, removes the socket file.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.await.context("a listener task")?.context("serving")?;
        }
        Ok(())
    }
}

/// `rtrace serve`: serves until SIGTERM or SIGINT, then stops cleanly: no new request, the
/// ones in flight answered (their sessions end at the same signal, with what they collected),
/// and every session's BPF programs detached before the process exits.
pub fn run_with(args: ServeArgs, backend: Arc<dyn Backend>) -> Result<()> {
    if args.print_unit {
        let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "rtrace".into());
        print!("{}", systemd_unit(&args, &exe));
        return Ok(());
    }
    // A daemon says who asked for what: info by default, RTRACE_LOG to change it.
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .filter_module("aya", log::LevelFilter::Warn)
        .filter_module("hyper", log::LevelFilter::Warn)
        .parse_env(env_logger::Env::new().filter("RTRACE_LOG"))
        .try_init();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let server = Server::start(&args, backend.clone()).await?;
        let tcp = server.tcp.map(|a| format!(" and http://{a}")).unwrap_or_default();
        log::info!("rtrace serve: listening on {}{tcp}", server.socket.display());
        let why = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        log::info!("rtrace serve: {why}, stopping");
        let stopped = server.stop().await;
        backend.shutdown();
        // A session whose client went away still runs (it ends at the same signal).
        if !backend.wait_idle(std::time::Duration::from_secs(10)) {
            log::warn!("rtrace serve: a session still runs 10 s after {why}");
        }
        stopped
    })
}

/// `rtrace serve` with this build's backend.
pub fn run(args: ServeArgs) -> Result<()> {
    run_with(args, Arc::new(sessions::Sessions::default()))
}

/// A daemon on a thread of its own (its own tokio runtime), for callers without one: tests,
/// and the one-shot CLI should it ever serve while tracing.
pub struct Background {
    pub socket: PathBuf,
    pub tcp: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Background {
    pub fn start(args: ServeArgs, backend: Arc<dyn Backend>) -> Result<Background> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let server = match Server::start(&args, backend.clone()).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return Ok(());
                    }
                };
                let _ = ready_tx.send(Ok((server.socket.clone(), server.tcp)));
                let _ = stop_rx.await;
                let stopped = server.stop().await;
                backend.shutdown();
                stopped
            })
        });
        let (socket, tcp) = ready_rx.recv().context("the serve thread")?.map_err(anyhow::Error::msg)?;
        Ok(Background { socket, tcp, stop: Some(stop), thread: Some(thread) })
    }

    /// Stops it as SIGTERM does, and waits.
    pub fn stop(mut self) -> Result<()> {
        self.halt()
    }

    fn halt(&mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow::anyhow!("the serve thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        sub: Sub,
    }
    #[derive(clap::Subcommand)]
    enum Sub {
        Serve(ServeArgs),
    }

    fn parse(args: &[&str]) -> ServeArgs {
        let Sub::Serve(a) = Cli::try_parse_from([&["rtrace", "serve"], args].concat()).unwrap().sub;
        a
    }

    impl Server {
        fn start_blocking(args: &ServeArgs) -> Result<Server> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(Server::start(args, Arc::new(sessions::Sessions::default())))
        }
    }

    #[test]
    fn arguments_and_unit() {
        let a = parse(&[]);
        assert_eq!((a.listen, a.socket.to_str(), a.allow_group), (None, Some(listen::DEFAULT_SOCKET), None));
        let a = parse(&["--listen", "127.0.0.1:6060", "--socket", "/tmp/x.sock", "--allow-group", "tracing"]);
        assert_eq!(a.listen.as_deref(), Some("127.0.0.1:6060"));
        let unit = systemd_unit(&a, "/usr/local/bin/rtrace");
        assert!(
            unit.contains("\nExecStart=/usr/local/bin/rtrace serve --socket /tmp/x.sock --listen 127.0.0.1:6060 --allow-group tracing\n"),
            "{unit}"
        );
        assert!(unit.contains("\nRuntimeDirectory=rtrace\n") && unit.contains("\nWantedBy=multi-user.target\n"));
        let a = parse(&["--watch", "comm:make", "--watch", "pid:1", "--watch-frequency", "49", "--watch-keep", "2m"]);
        assert_eq!((a.watch.len(), a.watch_frequency, a.watch_keep.as_secs()), (2, 49, 120));
        let unit = systemd_unit(&a, "rtrace");
        assert!(unit.contains(" --watch comm:make --watch pid:1 --watch-frequency 49 --watch-keep 120s\n"), "{unit}");
        assert!(systemd_unit(&parse(&["--watch", "pid:1"]), "rtrace").contains(" --watch pid:1\n"));
        assert_eq!((parse(&[]).watch_frequency, parse(&[]).watch_keep), (19, watch::KEEP));
    }

    /// A refused --listen stops the start with the reason, before anything is bound.
    #[test]
    fn refused_listen_binds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let args = ServeArgs { listen: Some("0.0.0.0:6060".into()), ..ServeArgs::on_socket(sock.clone()) };
        let e = Server::start_blocking(&args).err().unwrap();
        assert!(e.downcast_ref::<BadArgs>().is_some(), "exit code 2: {e:#}");
        assert!(e.to_string().contains("0.0.0.0 is not a loopback address"), "{e}");
        assert!(!sock.exists());
        let args = ServeArgs { allow_group: Some("no-such-group-rtrace".into()), ..ServeArgs::on_socket(sock) };
        let e = Server::start_blocking(&args).err().unwrap();
        assert!(e.downcast_ref::<BadArgs>().is_some(), "exit code 2: {e:#}");
        assert_eq!(e.to_string(), "--allow-group no-such-group-rtrace: no such group (see getent group)");
    }
}
