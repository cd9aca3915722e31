//! Project tasks: `cargo xtask setup | build | demo | test | bench <cpu>`.
//! Every task that needs the toolchain runs `setup` first; set-up is idempotent and says what it
//! does, so a fresh machine needs only `cargo xtask demo` or `cargo xtask test`.
mod bench;
mod demo;
mod setup;
mod test;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install or verify the toolchain, packages and kernel mounts rtrace needs.
    Setup,
    /// Set up, then build target/release/rtrace.
    Build,
    /// Set up, build, and trace the bundled demo workload, printing the report.
    Demo,
    /// Set up, build, and run every test (unit and privileged eBPF integration tests).
    Test {
        /// Only tests whose name contains this string.
        filter: Option<String>,
    },
    /// Benchmarks: rtrace's cost measured against an untraced baseline in the same run.
    Bench {
        /// Which benchmark: cpu, offcpu, syscalls, load (an overloaded target), go (the Go uprobes
        /// cost), report (the cost of a go build's report), unwind (CFI unwinding against perf --call-graph dwarf), all.
        #[arg(default_value = "cpu")]
        which: String,
        /// Rounds of (untraced, traced) pairs.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse().cmd) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Setup => setup::run(),
        Cmd::Build => {
            setup::run()?;
            util::build_release()
        }
        Cmd::Demo => demo::run(),
        Cmd::Test { filter } => test::run(filter.as_deref()),
        Cmd::Bench { which, rounds } => bench::run(&which, rounds),
    }
}
