//! SIGINT and SIGTERM: the first starts a graceful drain, the second exits at once.

use std::io;
use std::thread;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::info;

/// Watches for SIGINT/SIGTERM on a thread of its own and calls `drain` on the first.
pub fn on_signal(drain: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
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
