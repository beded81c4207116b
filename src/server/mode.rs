//! What happens to each message. The worker asks the mode and applies the answer;
//! the mode never sees a socket, so each mode's behaviour is a table to test.

/// The server's `--mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Write every message to stdout.
    Print,
    /// Send every message back to its sender (and print it, unless -q).
    Echo,
    /// Count only.
    Discard,
    /// Relay every TCP message, as framed, to every other TCP client (and print it).
    Broker,
    /// Broker for people: relayed messages carry `<sender>`, joins and leaves are
    /// announced, control bytes are escaped.
    Chat,
}

/// As the flag spells it (`print`), for logs.
impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = clap::ValueEnum::to_possible_value(self);
        f.write_str(value.as_ref().map_or("?", |v| v.get_name()))
    }
}

/// How a message is relayed to the other TCP clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relay {
    None,
    /// Exactly as it was framed.
    Framed,
    /// `<peer> message`, escaped, as a line in the connection's framing.
    Chat,
}

/// What to do with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Actions {
    /// Write it to the output.
    pub print: bool,
    /// Send it back to its sender.
    pub reply: bool,
    pub relay: Relay,
}

impl Actions {
    /// Nothing but the count of messages is needed (discard), so a decoder may count
    /// a read's messages without handing each one out ([`crate::frame::Decoder::skim`]).
    pub fn counts_only(&self) -> bool {
        !self.print && !self.reply && self.relay == Relay::None
    }

    /// Every message is printed and nothing else (print, echo's `-q` aside), so a
    /// decoder may hand a read's plain lines over as one run for the output to loop
    /// over ([`crate::frame::Decoder::decode_run`]).
    pub fn prints_only(&self) -> bool {
        self.print && !self.reply && self.relay == Relay::None
    }
}

impl Mode {
    /// The actions for every message in this mode; `quiet` (-q) stops echo from
    /// printing what it returns.
    pub fn actions(self, quiet: bool) -> Actions {
        let (print, reply, relay) = match self {
            Mode::Print => (true, false, Relay::None),
            Mode::Echo => (!quiet, true, Relay::None),
            Mode::Discard => (false, false, Relay::None),
            Mode::Broker => (true, false, Relay::Framed),
            Mode::Chat => (true, false, Relay::Chat),
        };
        Actions {
            print,
            reply,
            relay,
        }
    }

    /// UDP messages are printed and echoed like TCP ones; relaying is for TCP clients
    /// only, so a datagram in broker or chat mode is printed.
    pub fn udp_actions(self, quiet: bool) -> Actions {
        Actions {
            relay: Relay::None,
            ..self.actions(quiet)
        }
    }

    /// Chat announces joins and leaves.
    pub fn announces(self) -> bool {
        self == Mode::Chat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_does_what_the_spec_says() {
        let a = |print, reply, relay| Actions {
            print,
            reply,
            relay,
        };
        assert_eq!(Mode::Print.actions(false), a(true, false, Relay::None));
        assert_eq!(Mode::Echo.actions(false), a(true, true, Relay::None));
        assert_eq!(Mode::Echo.actions(true), a(false, true, Relay::None));
        assert_eq!(Mode::Discard.actions(false), a(false, false, Relay::None));
        assert_eq!(Mode::Broker.actions(false), a(true, false, Relay::Framed));
        assert_eq!(Mode::Chat.actions(false), a(true, false, Relay::Chat));
        assert_eq!(Mode::Broker.udp_actions(false), a(true, false, Relay::None));
        assert_eq!(Mode::Echo.udp_actions(false), a(true, true, Relay::None));
    }

    #[test]
    fn only_discard_counts_only_and_only_print_prints_only() {
        for mode in [
            Mode::Print,
            Mode::Echo,
            Mode::Discard,
            Mode::Broker,
            Mode::Chat,
        ] {
            for quiet in [false, true] {
                let actions = mode.actions(quiet);
                assert_eq!(
                    actions.counts_only(),
                    mode == Mode::Discard,
                    "{mode:?} quiet={quiet}"
                );
                assert_eq!(
                    actions.prints_only(),
                    mode == Mode::Print,
                    "{mode:?} quiet={quiet}"
                );
            }
        }
    }
}
