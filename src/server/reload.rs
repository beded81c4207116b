//! SIGHUP: reopen and reload without stopping. Each part of the server that has
//! something to reopen (the `--output` file) or reload (a TLS certificate) adds one
//! action at start-up; the signal thread runs them all, in order, on each SIGHUP.
//! With none, SIGHUP says so and does nothing: it never stops the server.

use tracing::info;

type Action = Box<dyn Fn() + Send>;

/// The actions SIGHUP runs.
#[derive(Default)]
pub struct Reloads {
    actions: Vec<(&'static str, Action)>,
}

impl std::fmt::Debug for Reloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.actions.iter().map(|(name, _)| *name).collect();
        f.debug_struct("Reloads").field("actions", &names).finish()
    }
}

impl Reloads {
    /// Adds `action`, named `what` in the log (`reopen the output`). An action must
    /// not block for long and must keep what it had when reloading fails (logging
    /// the error itself): SIGHUP never stops the server.
    pub fn add(&mut self, what: &'static str, action: impl Fn() + Send + 'static) {
        self.actions.push((what, Box::new(action)));
    }

    /// What SIGHUP does.
    pub fn run(&self) {
        if self.actions.is_empty() {
            info!("SIGHUP: nothing to reopen or reload (no --output file, no TLS)");
            return;
        }
        for (what, action) in &self.actions {
            info!("SIGHUP: {what}");
            action();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_action_runs_on_each_signal() {
        let count = Arc::new(AtomicUsize::new(0));
        let mut reloads = Reloads::default();
        Reloads::default().run();
        for _ in 0..2 {
            let count = Arc::clone(&count);
            reloads.add("count", move || {
                count.fetch_add(1, Ordering::SeqCst);
            });
        }
        reloads.run();
        reloads.run();
        assert_eq!(count.load(Ordering::SeqCst), 4);
    }
}
