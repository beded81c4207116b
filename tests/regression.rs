//! One test per fixed bug, named after its issue.

mod support;

use support::{Server, summary};

/// Foundation: a SIGTERM sent as soon as the `listening` lines appeared killed the
/// server with the default action (status 143, no summary), because the signal
/// handlers were installed only after binding. They are now installed first.
#[test]
fn foundation_sigterm_right_after_listening_drains() {
    for _ in 0..10 {
        let mut server = Server::start(&[]);
        // finish() sends SIGTERM at once and requires exit status 0.
        let (stdout, stderr) = server.finish();
        assert!(stdout.is_empty());
        summary(&stderr);
    }
}
