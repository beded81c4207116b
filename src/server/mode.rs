//! What happens to each message. The worker asks the mode and applies the answer;
//! the mode never sees a socket.

/// The server's `--mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Write every message to stdout.
    Print,
}

impl Mode {
    /// Whether messages go to the output.
    pub fn prints(self) -> bool {
        match self {
            Mode::Print => true,
        }
    }
}
