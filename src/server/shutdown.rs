//! SIGINT and SIGTERM: the first starts a graceful drain, the second exits at once.

use std::io;
use std::thread;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::info;

/// Catches SIGINT/SIGTERM from now on. Called before the `listening` lines are
/// printed: a signal sent as soon as they appear must start a drain, not kill the
/// process with the default action. Signals caught before [`on_signal`] runs are
/// handled by it.
pub fn catch() -> io::Result<Signals> {
    Signals::new([SIGINT, SIGTERM])
}

/// Watches the `signals` from [`catch`] on a thread of its own and calls `drain` on
/// the first.
pub fn on_signal(mut signals: Signals, drain: impl FnOnce() + Send + 'static) -> io::Result<()> {
    thread::Builder::new()
        .name("sockpool-signals".into())
        .spawn(move || {
            let mut drain = Some(drain);
            for signal in signals.forever() {
                let name = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                match drain.take() {
                    Some(drain) => {
                        info!("{name}: draining (a second signal exits at once)");
                        drain();
                    }
                    None => {
                        eprintln!("error: second signal ({name}); exiting without draining");
                        std::process::exit(1);
                    }
                }
            }
        })?;
    Ok(())
}
