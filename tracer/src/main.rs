//! rtrace: parse → run → exit code (0 ok, 1 runtime failure, 2 bad input or environment; with
//! `-- COMMAND`, the command's own status when it exited during the session).
use std::{io::Write, process::ExitCode};

use tracer::{cli::Sub, error::UsageError, session};

fn main() -> ExitCode {
    tracer::allocator::bound();
    // Before anything else a session does (see priority.rs); not for the daemon, which sleeps.
    if !std::env::args_os().nth(1).is_some_and(|a| a == "serve" || a == "report") {
        tracer::priority::raise_early();
    }
    let args = match tracer::cli::parse_args(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(u) => {
            let _ = writeln!(std::io::stderr(), "rtrace: {u}");
            return ExitCode::from(UsageError::EXIT_CODE);
        }
    };
    let result = match args.subcommand {
        Some(Sub::Report { ref capture, ref output, quiet }) => {
            session::replay(capture, output.clone(), quiet).map(|_| 0)
        }
        Some(Sub::Serve(ref a)) => tracer::serve::run(a.clone()).map(|_| 0),
        None => args.into_config().map_err(anyhow::Error::from).and_then(session::trace),
    };
    // Every probe set and link handed over to be dropped in the background is gone before
    // rtrace exits.
    tracer::loader::reaper::join_all();
    match result {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            // Not eprintln!: it panics when stderr is gone (a hangup).
            let mut err = std::io::stderr();
            if let Some(u) = e.downcast_ref::<UsageError>() {
                let _ = writeln!(err, "rtrace: {u}");
                ExitCode::from(UsageError::EXIT_CODE)
            } else if let Some(b) = e.downcast_ref::<tracer::serve::BadArgs>() {
                let _ = writeln!(err, "rtrace serve: {b}");
                ExitCode::from(tracer::serve::BadArgs::EXIT_CODE)
            } else {
                let _ = writeln!(err, "rtrace: error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}
