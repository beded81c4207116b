//! `sockpool-server`: parse flags, run the server, map the result to an exit code
//! (0 normal end, 1 runtime failure with one line, 2 bad usage from clap).

// Peer input must never reach a panic: unwrap/expect only in tests (clippy.toml).
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use sockpool::cli::server::ServerArgs;

fn main() -> ExitCode {
    let args = ServerArgs::parse();
    if let Some(kind) = args.generate {
        return sockpool::cli::generate::print(kind, ServerArgs::command());
    }
    sockpool::cli::init_logging(args.quiet, args.verbose);
    match sockpool::server::start(args.into_config()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
