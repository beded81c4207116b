//! Sans-IO codecs that cut a TCP byte stream into messages and frame messages for
//! sending. Bytes in, frames out: no sockets, clocks or threads, so every split of a
//! stream can be tested and fuzzed.
//!
//! Four framings, one file each: [`line`](LineDecoder) (delimiter-terminated),
//! [`length`](LengthDecoder) (4-byte big-endian prefix), [`octet`](OctetDecoder)
//! (RFC 6587 octet counting with the non-transparent fallback rsyslog's imtcp has),
//! and [`raw`](RawDecoder) (each read is a message).
//!
//! A decoder never holds more than `max_frame` bytes of one message plus
//! [`MAX_HEADER`] bytes of framing: a longer message is skipped as it streams past
//! (memcached's `conn_swallow`) and reported once as [`Frame::Oversize`] with its full
//! length, or, with [`Oversize::Truncate`], only its first `max_frame` bytes are kept
//! and delivered as [`Frame::Truncated`]. Lengths announced by a header are never
//! trusted for allocation: bytes are kept as they arrive, up to `max_frame`.

mod delimiters;
mod length;
mod line;
mod octet;
mod raw;

use std::ops::ControlFlow;

pub use length::LengthDecoder;
pub use line::{LineDecoder, Run};
pub use octet::OctetDecoder;
pub use raw::RawDecoder;

/// The message that ends a session: a TCP connection closes after everything before
/// it has been handled. It is never printed.
pub const DISCONNECT: &[u8] = b"!Disconnect";

/// The most framing bytes a decoder holds on top of `max_frame` message bytes: an
/// octet-counting header of 10 digits and its space, or a `\r` before a line's `\n`.
pub const MAX_HEADER: usize = 11;

/// How a TCP byte stream is cut into messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Framing {
    /// A message ends at the delimiter (`\n` by default); a `\r` before `\n` is stripped.
    Line,
    /// A 4-byte big-endian length, then that many bytes.
    Length,
    /// RFC 6587 octet counting, `<len> <msg>`, as syslog senders use it (rsyslog
    /// `TCP_Framing="octet-counted"`); a frame not starting with a digit is read as
    /// a `\n`-terminated line, so mixed senders work.
    Octet,
    /// Each chunk read from the socket is one message (the original behaviour): the
    /// boundaries are whatever the network delivered.
    Raw,
}

/// What happens to a message longer than `max_frame`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Oversize {
    /// Skip it, report its size, carry on with the next message.
    Drop,
    /// Deliver its first `max_frame` bytes, skip the rest, carry on with the next
    /// message.
    Truncate,
}

/// Everything a decoder needs to know; shared by all connections of a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameConfig {
    pub framing: Framing,
    /// The terminator for line framing only; octet counting's fallback lines always
    /// end at `\n`, as RFC 6587 non-transparent framing says.
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
    /// The stream ended inside a frame of length or octet framing (its header or its
    /// body): `len` bytes of that frame arrived, header included, and are discarded.
    /// It is never delivered as a message, since its end was announced and not seen.
    Incomplete { len: u64 },
}

/// Cuts one connection's byte stream into frames.
#[derive(Debug)]
pub enum Decoder {
    Line(LineDecoder),
    Length(LengthDecoder),
    Octet(OctetDecoder),
    Raw(RawDecoder),
}

impl Decoder {
    pub fn new(config: &FrameConfig) -> Self {
        let FrameConfig {
            framing,
            delimiter,
            max_frame,
            oversize,
        } = *config;
        match framing {
            Framing::Line => Decoder::Line(LineDecoder::new(delimiter, max_frame, oversize)),
            Framing::Length => Decoder::Length(LengthDecoder::new(max_frame, oversize)),
            Framing::Octet => Decoder::Octet(OctetDecoder::new(max_frame, oversize)),
            Framing::Raw => Decoder::Raw(RawDecoder::new(max_frame, oversize)),
        }
    }

    /// Feeds the next bytes of the stream; calls `on_frame` for each frame they
    /// complete, in order. When `on_frame` breaks, decoding stops there and the rest
    /// of `input` is discarded (the connection is closing). With raw framing, `input`
    /// is one message, so the caller hands over one socket read per call.
    #[inline]
    pub fn decode<F>(&mut self, input: &[u8], on_frame: F) -> ControlFlow<()>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        match self {
            Decoder::Line(d) => d.decode(input, on_frame),
            Decoder::Length(d) => d.decode(input, on_frame),
            Decoder::Octet(d) => d.decode(input, on_frame),
            Decoder::Raw(d) => d.decode(input, on_frame),
        }
    }

    /// The number of messages `input` holds, consumed as [`decode`](Self::decode)
    /// would, when it completes nothing but plain messages; `None` (nothing
    /// consumed) when it needs `decode`. Only line framing skims
    /// ([`LineDecoder::skim`]): the counted framings' headers must be parsed one by
    /// one anyway, and a raw read is always one message.
    #[inline]
    pub fn skim(&mut self, input: &[u8]) -> Option<u64> {
        match self {
            Decoder::Line(d) => d.skim(input),
            Decoder::Length(_) | Decoder::Octet(_) | Decoder::Raw(_) => None,
        }
    }

    /// Decodes `input` like [`decode`](Self::decode), but hands back the complete
    /// plain lines at its end as one [`Run`] for the caller to loop over, after the
    /// frames `on_frame` saw. Only line framing makes runs
    /// ([`LineDecoder::decode_run`]); the others decode as usual and return none.
    #[inline]
    pub fn decode_run<'a, F>(
        &mut self,
        input: &'a [u8],
        on_frame: F,
    ) -> ControlFlow<(), Option<Run<'a>>>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        match self {
            Decoder::Line(d) => d.decode_run(input, on_frame),
            other => {
                other.decode(input, on_frame)?;
                ControlFlow::Continue(None)
            }
        }
    }

    /// The stream has ended: a final line without its terminator is delivered; a
    /// length or octet frame cut short is reported as [`Frame::Incomplete`]. The
    /// decoder is then empty and could start a new stream.
    pub fn finish<F>(&mut self, on_frame: F) -> ControlFlow<()>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        match self {
            Decoder::Line(d) => d.finish(on_frame),
            Decoder::Length(d) => d.finish(on_frame),
            Decoder::Octet(d) => d.finish(on_frame),
            Decoder::Raw(d) => d.finish(on_frame),
        }
    }

    /// Bytes held for an incomplete frame: never more than `max_frame` +
    /// [`MAX_HEADER`], whatever the peer sends.
    pub fn buffered(&self) -> usize {
        match self {
            Decoder::Line(d) => d.buffered(),
            Decoder::Length(d) => d.buffered(),
            Decoder::Octet(d) => d.buffered(),
            Decoder::Raw(d) => d.buffered(),
        }
    }
}

/// Appends `message` framed for sending (echo replies, the client), so that a
/// decoder with the same config yields it back (line framing excepted for messages
/// that contain the delimiter, which no line framing can carry).
pub fn encode(config: &FrameConfig, message: &[u8], out: &mut Vec<u8>) {
    match config.framing {
        Framing::Line => line::encode(config.delimiter, message, out),
        Framing::Length => length::encode(message, out),
        Framing::Octet => octet::encode(message, out),
        Framing::Raw => out.extend_from_slice(message),
    }
}

/// The message a datagram carries. With `line` framing one trailing delimiter (and,
/// for `\n`, a `\r` before it) is removed, as rsyslog's imudp and Vector's socket
/// source do, so `echo hi | nc -u` is `hi` rather than `hi\n`; every other framing
/// takes the datagram whole.
pub fn datagram_message<'a>(config: &FrameConfig, datagram: &'a [u8]) -> &'a [u8] {
    if config.framing != Framing::Line {
        return datagram;
    }
    match datagram.strip_suffix(&[config.delimiter]) {
        Some(rest) if config.delimiter == b'\n' => rest.strip_suffix(b"\r").unwrap_or(rest),
        Some(rest) => rest,
        None => datagram,
    }
}

/// The frame for a message of `len` bytes longer than `max_frame`, of which `kept`
/// (at least its first `max_frame` bytes with truncate) is held.
fn too_long(oversize: Oversize, kept: &[u8], max_frame: usize, len: u64) -> Frame<'_> {
    match oversize {
        Oversize::Drop => Frame::Oversize { len },
        Oversize::Truncate => Frame::Truncated {
            message: kept.get(..max_frame).unwrap_or(kept),
            len,
        },
    }
}

/// A buffer larger than this is freed rather than kept once it empties, so an idle
/// connection that once received a big message holds no memory for it.
const KEEP_CAPACITY: usize = 4096;

/// The body of a frame whose length a header announced (length and octet framing).
/// Bytes are kept as they arrive, never reserved from the announced length, and only
/// up to `max_frame`: the rest of an oversize body is counted and skipped.
#[derive(Debug)]
struct Body {
    max_frame: usize,
    oversize: Oversize,
    kept: Vec<u8>,
    /// The announced length and how much of it has gone past, while inside a body.
    current: Option<(u64, u64)>,
}

impl Body {
    fn new(max_frame: usize, oversize: Oversize) -> Self {
        Body {
            max_frame,
            oversize,
            kept: Vec::new(),
            current: None,
        }
    }

    fn is_active(&self) -> bool {
        self.current.is_some()
    }

    /// Bytes of the current body that have arrived.
    fn received(&self) -> u64 {
        self.current.map_or(0, |(_, got)| got)
    }

    fn buffered(&self) -> usize {
        self.kept.len()
    }

    fn start(&mut self, len: u64) {
        self.current = Some((len, 0));
    }

    /// How many bytes of a body of `len` are worth keeping.
    fn keep_limit(&self, len: u64) -> u64 {
        let max = self.max_frame as u64;
        if len <= max {
            len
        } else {
            match self.oversize {
                Oversize::Drop => 0,
                Oversize::Truncate => max,
            }
        }
    }

    /// Consumes the current body's bytes from the front of `input` and emits its
    /// frame once the last one has arrived (at once for an empty body). Returns how
    /// many bytes of `input` were the body's.
    fn step<F>(&mut self, input: &[u8], on_frame: &mut F) -> ControlFlow<(), usize>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        let Some((len, got)) = self.current else {
            return ControlFlow::Continue(0);
        };
        let remaining = len - got;
        let n = usize::try_from(remaining).map_or(input.len(), |r| r.min(input.len()));
        let chunk = input.get(..n).unwrap_or(input);
        if got == 0 && n as u64 == len {
            // The whole body is in this read: hand it out without copying.
            self.current = None;
            self.emit(chunk, len, on_frame)?;
            return ControlFlow::Continue(n);
        }
        let keep = self.keep_limit(len);
        if got < keep {
            let want = usize::try_from(keep - got).map_or(n, |w| w.min(n));
            self.kept
                .extend_from_slice(chunk.get(..want).unwrap_or(chunk));
        }
        let got = got + n as u64;
        if got < len {
            self.current = Some((len, got));
            return ControlFlow::Continue(n);
        }
        self.current = None;
        let kept = std::mem::take(&mut self.kept);
        let flow = self.emit(&kept, len, on_frame);
        self.reuse(kept);
        flow?;
        ControlFlow::Continue(n)
    }

    fn emit<F>(&self, body: &[u8], len: u64, on_frame: &mut F) -> ControlFlow<()>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        if len > self.max_frame as u64 {
            on_frame(too_long(self.oversize, body, self.max_frame, len))
        } else {
            on_frame(Frame::Message(body))
        }
    }

    fn reuse(&mut self, mut kept: Vec<u8>) {
        kept.clear();
        if kept.capacity() <= KEEP_CAPACITY {
            self.kept = kept;
        }
    }

    /// Forgets a body cut short by the end of the stream.
    fn reset(&mut self) {
        self.current = None;
        self.kept = Vec::new();
    }
}

/// Helpers shared by the codec tests and the fuzz targets (`fuzz/`, built with
/// `--cfg fuzzing`): one owned frame type, splitting and collecting. The proptest
/// strategies are for the unit tests only.
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod testing {
    use super::*;
    #[cfg(test)]
    use proptest::prelude::*;

    /// An owned copy of a frame, for comparing.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Owned {
        Message(Vec<u8>),
        Oversize(u64),
        Truncated(Vec<u8>, u64),
        Incomplete(u64),
    }

    pub fn msg(s: &[u8]) -> Owned {
        Owned::Message(s.to_vec())
    }

    pub fn config(framing: Framing, max_frame: usize, oversize: Oversize) -> FrameConfig {
        FrameConfig {
            framing,
            max_frame,
            oversize,
            ..FrameConfig::default()
        }
    }

    pub fn owned(frame: Frame<'_>) -> Owned {
        match frame {
            Frame::Message(m) => Owned::Message(m.to_vec()),
            Frame::Oversize { len } => Owned::Oversize(len),
            Frame::Truncated { message, len } => Owned::Truncated(message.to_vec(), len),
            Frame::Incomplete { len } => Owned::Incomplete(len),
        }
    }

    pub fn collect(decoder: &mut Decoder, chunks: &[&[u8]], finish: bool) -> Vec<Owned> {
        let mut out = Vec::new();
        let mut push = |f: Frame<'_>| {
            out.push(owned(f));
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

    /// Like [`collect`], feeding `stream` cut at `points`, and checking after every
    /// chunk that the decoder stays within its memory bound.
    pub fn collect_split(config: &FrameConfig, stream: &[u8], points: &[usize]) -> Vec<Owned> {
        let mut d = Decoder::new(config);
        let mut out = Vec::new();
        for chunk in split(stream, points) {
            out.extend(collect(&mut d, &[chunk], false));
            assert!(
                d.buffered() <= config.max_frame + MAX_HEADER,
                "buffered {} > {} + {MAX_HEADER}",
                d.buffered(),
                config.max_frame
            );
        }
        out.extend(collect(&mut d, &[], true));
        assert_eq!(d.buffered(), 0, "finish leaves nothing behind");
        out
    }

    /// `stream` cut at `points` (any order, clamped to its length).
    pub fn split<'a>(stream: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
        let mut points: Vec<usize> = points.iter().map(|&p| p.min(stream.len())).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for p in points {
            chunks.push(stream.get(start..p).unwrap_or_default());
            start = p;
        }
        chunks.push(stream.get(start..).unwrap_or_default());
        chunks
    }

    /// Decodes `input` cut in two at every point (ripgrep's `buffer_small_capacity`
    /// habit): each split yields `expected` and leaves nothing buffered.
    pub fn assert_every_split(config: &FrameConfig, input: &[u8], expected: &[Owned]) {
        for cut in 0..=input.len() {
            let mut d = Decoder::new(config);
            let (a, b) = input.split_at(cut);
            assert_eq!(collect(&mut d, &[a, b], true), expected, "cut at {cut}");
            assert_eq!(d.buffered(), 0, "cut at {cut}");
        }
    }

    /// Up to 6 cut points anywhere in a stream of up to `len` bytes.
    #[cfg(test)]
    pub fn cuts() -> impl Strategy<Value = Vec<prop::sample::Index>> {
        proptest::collection::vec(any::<prop::sample::Index>(), 0..6)
    }

    #[cfg(test)]
    pub fn points(cuts: &[prop::sample::Index], len: usize) -> Vec<usize> {
        cuts.iter().map(|i| i.index(len + 1)).collect()
    }

    #[cfg(test)]
    /// Messages, mostly short, some longer than the small `max_frame` of the tests.
    pub fn messages() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20)
    }

    /// What a decoder should yield for a message sent whole with a counted framing.
    pub fn expected(message: &[u8], max_frame: usize, oversize: Oversize) -> Owned {
        if message.len() <= max_frame {
            Owned::Message(message.to_vec())
        } else {
            match oversize {
                Oversize::Drop => Owned::Oversize(message.len() as u64),
                Oversize::Truncate => Owned::Truncated(
                    message.get(..max_frame).unwrap_or_default().to_vec(),
                    message.len() as u64,
                ),
            }
        }
    }

    #[cfg(test)]
    /// The frames a counted framing (length, octet) must yield for `messages`
    /// encoded and cut off after `cut` bytes: every whole frame, then the bytes of
    /// the cut one as `Incomplete`. Returns (what the decoder gave, what it should).
    pub fn cut_stream(
        framing: Framing,
        messages: &[Vec<u8>],
        cut: prop::sample::Index,
    ) -> (Vec<Owned>, Vec<Owned>) {
        let cfg = config(framing, 16, Oversize::Drop);
        let mut stream = Vec::new();
        let mut ends = vec![0];
        for m in messages {
            encode(&cfg, m, &mut stream);
            ends.push(stream.len());
        }
        let cut = cut.index(stream.len() + 1);
        let frames = collect_split(&cfg, &stream[..cut], &[]);
        let whole = ends.iter().filter(|&&e| e > 0 && e <= cut).count();
        let start = ends
            .iter()
            .copied()
            .filter(|&e| e <= cut)
            .max()
            .unwrap_or(0);
        let mut want: Vec<Owned> = messages[..whole]
            .iter()
            .map(|m| expected(m, 16, Oversize::Drop))
            .collect();
        if cut > start {
            want.push(Owned::Incomplete((cut - start) as u64));
        }
        (frames, want)
    }

    #[cfg(test)]
    pub fn oversize() -> impl Strategy<Value = Oversize> {
        prop_oneof![Just(Oversize::Drop), Just(Oversize::Truncate)]
    }

    #[test]
    fn a_datagram_loses_one_trailing_delimiter_in_line_framing_only() {
        let line = FrameConfig::default();
        for (datagram, message) in [
            (&b"hi\n"[..], &b"hi"[..]),
            (b"hi\r\n", b"hi"),
            (b"hi\n\n", b"hi\n"),
            (b"hi\r", b"hi\r"),
            (b"hi", b"hi"),
            (b"\n", b""),
            (b"", b""),
        ] {
            assert_eq!(datagram_message(&line, datagram), message, "{datagram:?}");
        }
        let nul = FrameConfig {
            delimiter: 0,
            ..line
        };
        assert_eq!(datagram_message(&nul, b"a\r\0"), b"a\r");
        assert_eq!(datagram_message(&nul, b"a\n"), b"a\n");
        for framing in [Framing::Length, Framing::Octet, Framing::Raw] {
            let cfg = config(framing, 64, Oversize::Drop);
            assert_eq!(datagram_message(&cfg, b"hi\r\n"), b"hi\r\n", "{framing:?}");
        }
    }

    #[cfg(test)]
    #[test]
    fn a_break_stops_decoding_in_every_framing() {
        for framing in [Framing::Line, Framing::Length, Framing::Octet] {
            let cfg = config(framing, 64, Oversize::Drop);
            let mut stream = Vec::new();
            for m in [&b"a"[..], DISCONNECT, b"b"] {
                encode(&cfg, m, &mut stream);
            }
            let mut seen = Vec::new();
            let flow = Decoder::new(&cfg).decode(&stream, |f| {
                seen.push(format!("{f:?}"));
                match f {
                    Frame::Message(m) if m == DISCONNECT => ControlFlow::Break(()),
                    _ => ControlFlow::Continue(()),
                }
            });
            assert!(flow.is_break(), "{framing:?}");
            assert_eq!(seen.len(), 2, "{framing:?}: {seen:?}");
        }
    }
}
