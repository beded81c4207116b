//! `sockpool-client`: parse flags, run the session, map the result to an exit code
//! (0 every message sent, 1 unreachable or broken with one line, 2 bad usage).

// Peer input must never reach a panic: unwrap/expect only in tests (clippy.toml).
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;

use clap::Parser;
use sockpool::cli::client::ClientArgs;

fn main() -> ExitCode {
    let args = ClientArgs::parse();
    sockpool::cli::init_logging(1, 0);
    match sockpool::client::run(args.into_config()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
