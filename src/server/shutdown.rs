//! Signals: SIGINT and SIGTERM — the first starts a graceful drain, the second exits
//! at once; SIGHUP runs the [`Reloads`] (reopen the output file, …) and never stops
//! the server.

use std::io;
use std::thread;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::info;

use super::reload::Reloads;

/// Catches SIGINT/SIGTERM/SIGHUP from now on. Called before the `listening` lines
/// are printed: a signal sent as soon as they appear must start a drain (or a
/// reopen), not kill the process with the default action. Signals caught before
/// [`on_signal`] runs are handled by it.
pub fn catch() -> io::Result<Signals> {
    Signals::new([SIGINT, SIGTERM, SIGHUP])
}

/// Watches the `signals` from [`catch`] on a thread of its own: calls `drain` on the
/// first SIGINT/SIGTERM and runs `reloads` on each SIGHUP. The second SIGINT/SIGTERM
/// runs `before_exit` (what must not outlive the process: its socket files) and
/// exits at once.
pub fn on_signal(
    mut signals: Signals,
    reloads: Reloads,
    drain: impl FnOnce() + Send + 'static,
    before_exit: impl FnOnce() + Send + 'static,
) -> io::Result<()> {
    thread::Builder::new()
        .name("sockpool-signals".into())
        .spawn(move || {
            let mut drain = Some(drain);
            for signal in signals.forever() {
                let name = match signal {
                    SIGHUP => {
                        reloads.run();
                        continue;
                    }
                    SIGINT => "SIGINT",
                    _ => "SIGTERM",
                };
                match drain.take() {
                    Some(drain) => {
                        info!("{name}: draining (a second signal exits at once)");
                        drain();
                    }
                    None => {
                        eprintln!("error: second signal ({name}); exiting without draining");
                        before_exit();
                        std::process::exit(1);
                    }
                }
            }
        })?;
    Ok(())
}
