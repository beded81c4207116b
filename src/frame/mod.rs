//! Sans-IO codecs that cut a TCP byte stream into messages and frame messages for
//! sending. Bytes in, frames out: no sockets, clocks or threads, so every split of a
//! stream can be tested and fuzzed.
//!
//! A decoder never holds more than `max_frame` (+1 for a `\r`) bytes of one message:
//! a longer message is skipped as it streams past (memcached's `conn_swallow`), and
//! reported once as [`Frame::Oversize`] with its full length.

mod line;

use std::ops::ControlFlow;

pub use line::LineDecoder;

/// The message that ends a session: a TCP connection closes after everything before
/// it has been handled. It is never printed.
pub const DISCONNECT: &[u8] = b"!Disconnect";

/// How a TCP byte stream is cut into messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Framing {
    /// A message ends at the delimiter (`\n` by default); a `\r` before `\n` is stripped.
    Line,
}

/// What happens to a message longer than `max_frame`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Oversize {
    /// Skip it, report its size, carry on with the next message.
    Drop,
}

/// Everything a decoder needs to know; shared by all connections of a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameConfig {
    pub framing: Framing,
    pub delimiter: u8,
    pub max_frame: usize,
    pub oversize: Oversize,
}

impl Default for FrameConfig {
    fn default() -> Self {
        FrameConfig {
            framing: Framing::Line,
            delimiter: b'\n',
            max_frame: 65536,
            oversize: Oversize::Drop,
        }
    }
}

/// One thing a decoder found in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete message, without its framing.
    Message(&'a [u8]),
    /// A message of `len` bytes (without framing) that was longer than `max_frame`
    /// and was skipped (`--oversize drop`).
    Oversize { len: u64 },
    /// A message of `len` bytes that was longer than `max_frame`; `message` is its
    /// first `max_frame` bytes (`--oversize truncate`).
    Truncated { message: &'a [u8], len: u64 },
    /// The stream ended inside a frame whose size was announced (length or octet
    /// framing): `len` bytes of it arrived and are discarded.
    Incomplete { len: u64 },
}

/// Cuts one connection's byte stream into frames.
#[derive(Debug)]
pub enum Decoder {
    Line(LineDecoder),
}

impl Decoder {
    pub fn new(config: &FrameConfig) -> Self {
        match config.framing {
            Framing::Line => Decoder::Line(LineDecoder::new(config.delimiter, config.max_frame)),
        }
    }

    /// Feeds the next bytes of the stream; calls `on_frame` for each frame they
    /// complete, in order. When `on_frame` breaks, decoding stops there and the rest
    /// of `input` is discarded (the connection is closing).
    pub fn decode<F>(&mut self, input: &[u8], on_frame: F) -> ControlFlow<()>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        match self {
            Decoder::Line(d) => d.decode(input, on_frame),
        }
    }

    /// The stream has ended: a final message without its terminator is delivered.
    pub fn finish<F>(&mut self, on_frame: F) -> ControlFlow<()>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        match self {
            Decoder::Line(d) => d.finish(on_frame),
        }
    }

    /// Bytes held for an incomplete message (bounded by `max_frame` + 1).
    pub fn buffered(&self) -> usize {
        match self {
            Decoder::Line(d) => d.buffered(),
        }
    }
}

/// Appends `message` framed for sending (echo replies, the client).
pub fn encode(config: &FrameConfig, message: &[u8], out: &mut Vec<u8>) {
    match config.framing {
        Framing::Line => {
            out.extend_from_slice(message);
            out.push(config.delimiter);
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers shared by the codec tests.
    use super::*;

    /// An owned copy of a frame, for comparing.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Owned {
        Message(Vec<u8>),
        Oversize(u64),
        Truncated(Vec<u8>, u64),
        Incomplete(u64),
    }

    pub fn collect(decoder: &mut Decoder, chunks: &[&[u8]], finish: bool) -> Vec<Owned> {
        let mut out = Vec::new();
        let mut push = |f: Frame<'_>| {
            out.push(match f {
                Frame::Message(m) => Owned::Message(m.to_vec()),
                Frame::Oversize { len } => Owned::Oversize(len),
                Frame::Truncated { message, len } => Owned::Truncated(message.to_vec(), len),
                Frame::Incomplete { len } => Owned::Incomplete(len),
            });
            ControlFlow::Continue(())
        };
        for chunk in chunks {
            let _ = decoder.decode(chunk, &mut push);
        }
        if finish {
            let _ = decoder.finish(&mut push);
        }
        out
    }
}
