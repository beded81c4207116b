//! `sockpool-client`: parse flags, run the session (or `bench`), map the result to an
//! exit code (0 every message sent, 1 unreachable or broken with one line, 2 bad
//! usage, 130 interrupted with Ctrl-C).

// Peer input must never reach a panic: unwrap/expect only in tests (clippy.toml).
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use sockpool::cli::client::{ClientArgs, Command};
use sockpool::client::ClientError;

fn main() -> ExitCode {
    let mut args = ClientArgs::parse();
    if let Some(kind) = args.generate {
        return sockpool::cli::generate::print(kind, ClientArgs::command());
    }
    if let Err(err) = args.check() {
        err.exit();
    }
    sockpool::cli::init_logging(1, 0);
    let result = match args.command.take() {
        Some(Command::Bench(bench)) => {
            sockpool::bench::run(bench.into_config()).map_err(|err| err.to_string())
        }
        None => match sockpool::client::run(args.into_config()) {
            Err(ClientError::Interrupted) => return ExitCode::from(130),
            other => other.map_err(|err| err.to_string()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
