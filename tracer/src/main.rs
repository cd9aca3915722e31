//! rtrace: parse → run → exit code (0 ok, 1 runtime failure, 2 bad input or environment).
use std::process::ExitCode;

use clap::Parser;
use tracer::{
    cli::{Args, Sub},
    error::UsageError,
    session,
};

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.subcommand {
        Some(Sub::Report { ref capture, ref output, quiet }) => session::replay(capture, output.clone(), quiet),
        None => args.into_config().map_err(anyhow::Error::from).and_then(session::trace),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(u) = e.downcast_ref::<UsageError>() {
                eprintln!("rtrace: {u}");
                ExitCode::from(UsageError::EXIT_CODE)
            } else {
                eprintln!("rtrace: error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}
