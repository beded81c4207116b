//! Octet-counting framing (RFC 6587 §3.4.1): `<len> <msg>`, where `len` is the
//! message's size in decimal and one space separates it from the message, with
//! nothing between frames. This is what rsyslog's omfwd sends with
//! `TCP_Framing="octet-counted"` and what syslog-over-TLS (RFC 5425) uses.
//!
//! Decisions, following rsyslog's imtcp where the RFC is silent:
//!
//! - **Fallback.** A frame whose first byte is a digit is octet-counted; any other
//!   frame is a traditional `\n`-terminated line (RFC 6587 §3.4.2 non-transparent
//!   framing, `\r` before `\n` stripped as in line framing), so a sender that mixes
//!   both, or a plain line sender, still works. `--delimiter` does not apply: the
//!   RFC's trailer is `\n`. An empty line (a lone `\n` or `\r\n` between frames, which
//!   some senders append to counted frames) is not a message.
//! - **Bad headers.** Digits followed by anything but a space, or more than 10 digits
//!   (no real syslog message is 10 GB), mean the frame was not octet-counted after
//!   all: the header bytes and the rest up to the next `\n` are read as one line,
//!   digits included (a line sender's `2026-11-26 started` arrives intact). So a bad
//!   header costs at most one message, never the stream's synchronisation, and holds
//!   at most 10 bytes before it is decided. A line that starts with digits and a space
//!   (`5 apples`) is ambiguous and is read as a counted frame, as imtcp does.
//! - **Zero and leading zeros.** The RFC's `MSG-LEN` is `NONZERO-DIGIT *DIGIT`, but
//!   `0 ` is accepted as an empty message (and `007 ` as 7): the count is unambiguous,
//!   and it lets [`encode`] frame every message, the empty one included, so that
//!   decoding gives back exactly what was encoded.
//! - **Oversize.** A valid count above `max_frame` is honoured: the body is skipped
//!   as it streams past (or cut to `max_frame` with truncate), never buffered, and
//!   the next frame is read normally. (imtcp instead switches to line framing, which
//!   loses the frames after it when the message contains no `\n`.)
//! - **End of stream.** A frame cut off in its header or body is reported as
//!   [`Frame::Incomplete`] (bytes of it that arrived, header included), never
//!   delivered; a final fallback line without its `\n` is delivered, as in line
//!   framing.

use std::ops::ControlFlow;

use super::line::LineDecoder;
use super::{Body, Frame, Oversize};

/// The most digits a count may have; an 11th digit means the frame is a line.
const MAX_DIGITS: usize = 10;

/// Where the decoder is in the current frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between frames: the next byte decides the framing.
    Start,
    /// Reading the count; `n` digits of `digits` so far.
    Header { digits: [u8; MAX_DIGITS], n: usize },
    /// Inside a counted body, after a header of `header` bytes (digits and space).
    Body { header: usize },
    /// Inside a non-transparent (line) frame.
    Line,
}

/// Incremental octet-counting decoder with the non-transparent fallback.
#[derive(Debug)]
pub struct OctetDecoder {
    state: State,
    body: Body,
    line: LineDecoder,
}

impl OctetDecoder {
    pub fn new(max_frame: usize, oversize: Oversize) -> Self {
        OctetDecoder {
            state: State::Start,
            body: Body::new(max_frame, oversize),
            line: LineDecoder::fallback(max_frame, oversize),
        }
    }

    /// At most 10 header digits, or one body, or one line is held at a time.
    pub fn buffered(&self) -> usize {
        let header = match self.state {
            State::Header { n, .. } => n,
            _ => 0,
        };
        header + self.body.buffered() + self.line.buffered()
    }

    pub fn decode<F>(&mut self, input: &[u8], mut on_frame: F) -> ControlFlow<()>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        let mut rest = input;
        loop {
            match self.state {
                State::Start => {
                    let Some(&first) = rest.first() else { break };
                    self.state = if first.is_ascii_digit() {
                        State::Header {
                            digits: [0; MAX_DIGITS],
                            n: 0,
                        }
                    } else {
                        State::Line
                    };
                }
                State::Header { mut digits, n } => {
                    let Some((&byte, tail)) = rest.split_first() else {
                        break;
                    };
                    match digits.get_mut(n) {
                        Some(slot) if byte.is_ascii_digit() => {
                            *slot = byte;
                            self.state = State::Header { digits, n: n + 1 };
                            rest = tail;
                        }
                        _ if byte == b' ' && n > 0 => {
                            let len = digits
                                .get(..n)
                                .unwrap_or_default()
                                .iter()
                                .fold(0u64, |len, d| len * 10 + u64::from(d - b'0'));
                            self.state = State::Body { header: n + 1 };
                            self.body.start(len);
                            rest = tail;
                        }
                        _ => {
                            // Not a count after all: the digits start a line, and
                            // `byte` (not consumed) continues it.
                            let digits = digits.get(..n).unwrap_or_default();
                            self.line.step(digits, &mut on_frame)?;
                            self.state = State::Line;
                        }
                    }
                }
                State::Body { .. } => {
                    // Stepped even with no input left, so an empty body is delivered
                    // at once.
                    let n = self.body.step(rest, &mut on_frame)?;
                    rest = rest.get(n..).unwrap_or_default();
                    if self.body.is_active() {
                        break;
                    }
                    self.state = State::Start;
                }
                State::Line => {
                    if rest.is_empty() {
                        break;
                    }
                    let step = self.line.step(rest, &mut on_frame)?;
                    rest = rest.get(step.consumed..).unwrap_or_default();
                    if step.ended {
                        self.state = State::Start;
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    pub fn finish<F>(&mut self, mut on_frame: F) -> ControlFlow<()>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        match std::mem::replace(&mut self.state, State::Start) {
            State::Start => ControlFlow::Continue(()),
            State::Header { n, .. } => on_frame(Frame::Incomplete { len: n as u64 }),
            State::Body { header } => {
                let len = header as u64 + self.body.received();
                self.body.reset();
                on_frame(Frame::Incomplete { len })
            }
            State::Line => self.line.finish(on_frame),
        }
    }
}

/// Appends `<len> ` and `message`.
pub(super) fn encode(message: &[u8], out: &mut Vec<u8>) {
    let mut len = itoa::Buffer::new();
    out.extend_from_slice(len.format(message.len()).as_bytes());
    out.push(b' ');
    out.extend_from_slice(message);
}

#[cfg(test)]
mod tests {
    use super::super::testing::{
        Owned, assert_every_split, collect, collect_split, config, cut_stream, cuts, expected,
        messages, msg, oversize, points,
    };
    use super::super::{Decoder, Framing, MAX_HEADER, Oversize, encode};
    use proptest::prelude::*;

    fn decoder(max: usize, oversize: Oversize) -> Decoder {
        Decoder::new(&config(Framing::Octet, max, oversize))
    }

    fn frames(max: usize, oversize: Oversize, input: &[u8]) -> Vec<Owned> {
        collect(&mut decoder(max, oversize), &[input], true)
    }

    #[test]
    fn encode_writes_a_decimal_count_and_a_space() {
        let mut out = Vec::new();
        encode(
            &config(Framing::Octet, 0, Oversize::Drop),
            b"hello",
            &mut out,
        );
        encode(&config(Framing::Octet, 0, Oversize::Drop), b"", &mut out);
        assert_eq!(out, b"5 hello0 ");
    }

    #[test]
    fn every_split_point_yields_the_same_frames() {
        let input: &[u8] = b"5 hello0 11 hello\nworld<34>plain line\r\n\n\
              2026-11-26 started\n21 0123456789abcdefghijk3 endlast line";
        for oversize in [Oversize::Drop, Oversize::Truncate] {
            let expected = vec![
                msg(b"hello"),
                msg(b""),
                msg(b"hello\nworld"),
                msg(b"<34>plain line"),
                msg(b"2026-11-26 started"),
                expected(b"0123456789abcdefghijk", 20, oversize),
                msg(b"end"),
                msg(b"last line"),
            ];
            assert_every_split(&config(Framing::Octet, 20, oversize), input, &expected);
        }
    }

    #[test]
    fn a_frame_byte_by_byte() {
        let input = b"12 byte by byte0 x\n";
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            collect(&mut decoder(64, Oversize::Drop), &chunks, true),
            vec![msg(b"byte by byte"), msg(b""), msg(b"x")]
        );
    }

    #[test]
    fn drop_and_truncate() {
        assert_eq!(
            frames(4, Oversize::Drop, b"8 abcdefgh2 ok"),
            vec![Owned::Oversize(8), msg(b"ok")]
        );
        assert_eq!(
            frames(4, Oversize::Truncate, b"8 abcdefgh2 ok"),
            vec![Owned::Truncated(b"abcd".to_vec(), 8), msg(b"ok")]
        );
        // Fallback lines follow line framing's rules.
        assert_eq!(
            frames(4, Oversize::Truncate, b"abcdefgh\r\n2 ok"),
            vec![Owned::Truncated(b"abcd".to_vec(), 9), msg(b"ok")]
        );
        assert_eq!(
            frames(4, Oversize::Drop, b"abcdefgh\r\n2 ok"),
            vec![Owned::Oversize(9), msg(b"ok")]
        );
    }

    #[test]
    fn zero_and_leading_zeros_are_counts() {
        assert_eq!(
            frames(64, Oversize::Drop, b"0 0 003 abc"),
            vec![msg(b""), msg(b""), msg(b"abc")]
        );
    }

    #[test]
    fn empty_lines_between_frames_are_ignored() {
        assert_eq!(
            frames(64, Oversize::Drop, b"3 abc\n3 def\r\n\n"),
            vec![msg(b"abc"), msg(b"def")]
        );
    }

    #[test]
    fn digits_without_a_space_start_a_line() {
        assert_eq!(
            frames(64, Oversize::Drop, b"12ab\n42\n7\r\n3 end"),
            vec![msg(b"12ab"), msg(b"42"), msg(b"7"), msg(b"end")]
        );
    }

    #[test]
    fn eleven_digits_start_a_line() {
        assert_eq!(
            frames(64, Oversize::Drop, b"12345678901 x\n9999999999"),
            vec![msg(b"12345678901 x"), Owned::Incomplete(10)]
        );
        // The line may itself be too long; the frame after it still arrives.
        assert_eq!(
            frames(4, Oversize::Drop, b"123456789012345\n2 ok"),
            vec![Owned::Oversize(15), msg(b"ok")]
        );
        assert_eq!(
            frames(4, Oversize::Truncate, b"123456789012345\n2 ok"),
            vec![Owned::Truncated(b"1234".to_vec(), 15), msg(b"ok")]
        );
    }

    #[test]
    fn a_huge_count_is_not_buffered() {
        for oversize in [Oversize::Drop, Oversize::Truncate] {
            let mut d = decoder(16, oversize);
            let junk = [b'z'; 1000];
            assert_eq!(
                collect(&mut d, &[b"9999999999 ", &junk, &junk], false),
                vec![]
            );
            assert!(d.buffered() <= 16);
            assert_eq!(collect(&mut d, &[], true), vec![Owned::Incomplete(2011)]);
        }
    }

    #[test]
    fn incomplete_at_end_of_stream() {
        let input = b"5 hello";
        for cut in 1..input.len() {
            assert_eq!(
                frames(64, Oversize::Drop, &input[..cut]),
                vec![Owned::Incomplete(cut as u64)],
                "cut at {cut}"
            );
        }
        assert_eq!(frames(64, Oversize::Drop, b""), vec![]);
        assert_eq!(
            frames(64, Oversize::Drop, b"2 ok<13>no newline"),
            vec![msg(b"ok"), msg(b"<13>no newline")]
        );
    }

    /// A stream of counted frames and fallback lines, and the frames it must yield.
    fn mixed(parts: &[(bool, Vec<u8>)], max: usize, oversize: Oversize) -> (Vec<u8>, Vec<Owned>) {
        let cfg = config(Framing::Octet, max, oversize);
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (counted, m) in parts {
            if *counted {
                encode(&cfg, m, &mut stream);
                want.push(expected(m, max, oversize));
            } else {
                // A line sender's message: no `\n`, not starting with a digit.
                let mut line = b"L".to_vec();
                line.extend(m.iter().filter(|&&b| b != b'\n'));
                while line.last() == Some(&b'\r') {
                    line.pop();
                }
                stream.extend_from_slice(&line);
                stream.extend_from_slice(b"\r\n");
                want.push(match expected(&line, max, oversize) {
                    Owned::Oversize(n) => Owned::Oversize(n + 1),
                    Owned::Truncated(t, n) => Owned::Truncated(t, n + 1),
                    other => other,
                });
            }
        }
        (stream, want)
    }

    proptest! {
        #[test]
        fn any_split_round_trips(messages in messages(), cuts in cuts(), oversize in oversize()) {
            let cfg = config(Framing::Octet, 16, oversize);
            let mut stream = Vec::new();
            for m in &messages { encode(&cfg, m, &mut stream); }
            // Oversize frames in any position never desynchronise the ones after them.
            let want: Vec<Owned> = messages.iter().map(|m| expected(m, 16, oversize)).collect();
            prop_assert_eq!(collect_split(&cfg, &stream, &[]), want.clone());
            prop_assert_eq!(collect_split(&cfg, &stream, &points(&cuts, stream.len())), want);
        }

        #[test]
        fn mixed_counted_and_line_frames(
            parts in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..20),
            cuts in cuts(), oversize in oversize(),
        ) {
            let cfg = config(Framing::Octet, 16, oversize);
            let (stream, want) = mixed(&parts, 16, oversize);
            prop_assert_eq!(collect_split(&cfg, &stream, &points(&cuts, stream.len())), want);
        }

        #[test]
        fn a_cut_stream_ends_incomplete(messages in messages(), cut in any::<prop::sample::Index>()) {
            let (frames, want) = cut_stream(Framing::Octet, &messages, cut);
            prop_assert_eq!(frames, want);
        }

        #[test]
        fn any_bytes_keep_memory_bounded(
            stream in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b' '), Just(b'\r'), b'0'..=b'9', any::<u8>()], 0..200),
            cuts in cuts(), oversize in oversize(), max in 0usize..20,
        ) {
            let cfg = config(Framing::Octet, max, oversize);
            let whole = collect_split(&cfg, &stream, &[]);
            prop_assert_eq!(collect_split(&cfg, &stream, &points(&cuts, stream.len())), whole);
            prop_assert!(MAX_HEADER > super::MAX_DIGITS);
        }
    }
}
