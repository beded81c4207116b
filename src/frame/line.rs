//! Line framing: a message ends at the delimiter (`\n` unless `--delimiter`). With the
//! default `\n`, a `\r` before it is stripped, so `\r\n` senders (telnet, Windows)
//! read the same; with another delimiter every byte is kept, since a `\r` before a
//! `\0` is data.
//!
//! A line longer than `max_frame` (counted after stripping the `\r`) is skipped as it
//! streams past, or cut to its first `max_frame` bytes with `--oversize truncate`; its
//! reported length counts every byte before the delimiter, as received. At end of
//! stream a final line without its delimiter is delivered as it is (no `\r` strip,
//! since no terminator came).
//!
//! A caller that only counts messages (discard) can [`skim`](LineDecoder::skim) a
//! read instead: its lines are counted, not handed out, when none of them can be
//! anything but a plain message.
//!
//! Octet framing reuses this decoder, one line at a time, for its RFC 6587
//! non-transparent fallback ([`LineDecoder::step`]).

use std::ops::ControlFlow;
use std::sync::LazyLock;

use memchr::memmem::Finder;

use super::delimiters::{self, Delimiters};
use super::{DISCONNECT, Frame, KEEP_CAPACITY, Oversize, too_long};

/// Built once: a `Finder` analyses its needle (rare bytes, SIMD searcher), which is
/// worth doing per process, not per read.
static DISCONNECT_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(DISCONNECT));

/// `!`, the first byte of [`DISCONNECT`].
const DISCONNECT_START: u8 = DISCONNECT[0];

/// Whether `!Disconnect` occurs in `input`. Most traffic has no `!` at all, and a
/// one-byte search for it costs about a third of memmem's two-byte prefilter
/// (callgrind), so memmem only searches from the first `!` on.
fn contains_disconnect(input: &[u8]) -> bool {
    memchr::memchr(DISCONNECT_START, input).is_some_and(|at| {
        DISCONNECT_FINDER
            .find(input.get(at..).unwrap_or_default())
            .is_some()
    })
}

/// Incremental line decoder. Complete lines are handed out straight from the input
/// slice; only a line that straddles two reads is copied, into `pending`, which is
/// released once empty so an idle connection holds no buffer.
#[derive(Debug)]
pub struct LineDecoder {
    delimiter: u8,
    max_frame: usize,
    oversize: Oversize,
    /// Empty lines are not messages (octet framing's fallback, where a lone `\n`
    /// between counted frames is a sender's habit, not a message).
    skip_empty: bool,
    /// The start of the current line: all of it while it may still fit, then (once
    /// it is oversize) nothing with drop, its first `max_frame` bytes with truncate.
    pending: Vec<u8>,
    /// Bytes of the current line received so far, before its delimiter.
    seen: u64,
}

/// How far [`LineDecoder::step`] went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Step {
    /// Bytes of the input that belonged to the current line, its delimiter included.
    pub consumed: usize,
    /// Whether the delimiter was among them, so the next byte starts a new frame.
    pub ended: bool,
}

/// Complete lines of one read that are all plain messages, from
/// [`LineDecoder::decode_run`].
#[derive(Clone, Copy, Debug)]
pub struct Run<'a> {
    /// The lines, each with its delimiter.
    lines: &'a [u8],
    delimiter: u8,
}

impl<'a> Run<'a> {
    /// The lines as received, each with its delimiter.
    pub fn bytes(self) -> &'a [u8] {
        self.lines
    }

    pub fn delimiter(self) -> u8 {
        self.delimiter
    }

    /// Each line as received, its delimiter included (and a `\r` before it kept).
    pub fn lines(self) -> impl Iterator<Item = &'a [u8]> {
        let Run { lines, delimiter } = self;
        let mut start = 0;
        Delimiters::new(delimiter, lines).map(move |end| {
            let line = lines.get(start..=end).unwrap_or_default();
            start = end + 1;
            line
        })
    }

    /// The messages, in order: each line without its delimiter, and with `\n` as
    /// the delimiter without a `\r` before it, as `decode` hands them out.
    pub fn messages(self) -> impl Iterator<Item = &'a [u8]> {
        let Run { lines, delimiter } = self;
        let mut start = 0;
        Delimiters::new(delimiter, lines).map(move |end| {
            let line = lines.get(start..end).unwrap_or_default();
            start = end + 1;
            if delimiter == b'\n' {
                line.strip_suffix(b"\r").unwrap_or(line)
            } else {
                line
            }
        })
    }
}

impl LineDecoder {
    pub fn new(delimiter: u8, max_frame: usize, oversize: Oversize) -> Self {
        LineDecoder {
            delimiter,
            max_frame,
            oversize,
            skip_empty: false,
            pending: Vec::new(),
            seen: 0,
        }
    }

    /// The decoder octet framing falls back to: `\n`-terminated, empty lines ignored.
    pub(super) fn fallback(max_frame: usize, oversize: Oversize) -> Self {
        LineDecoder {
            skip_empty: true,
            ..LineDecoder::new(b'\n', max_frame, oversize)
        }
    }

    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// The longest run a line may hold before its terminator: `max_frame`, plus the
    /// `\r` that is stripped with a `\n` delimiter.
    #[inline]
    fn limit(&self) -> usize {
        self.max_frame + usize::from(self.delimiter == b'\n')
    }

    #[inline]
    fn strip<'a>(&self, line: &'a [u8]) -> &'a [u8] {
        if self.delimiter == b'\n' {
            line.strip_suffix(b"\r").unwrap_or(line)
        } else {
            line
        }
    }

    #[inline]
    pub fn decode<F>(&mut self, input: &[u8], mut on_frame: F) -> ControlFlow<()>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        let mut rest = input;
        if self.seen == 0 {
            // Fast path, no line in progress: every complete line is handed out
            // straight from the input, found by one bitmask pass over the whole read
            // (`Delimiters`) rather than a search per line: memchr's per-call setup
            // costs more than the search when lines are short.
            let mut start = 0;
            for end in Delimiters::new(self.delimiter, input) {
                self.emit(input.get(start..end).unwrap_or_default(), &mut on_frame)?;
                start = end + 1;
            }
            rest = input.get(start..).unwrap_or_default();
        }
        while !rest.is_empty() {
            let step = self.step(rest, &mut on_frame)?;
            rest = rest.get(step.consumed..).unwrap_or_default();
        }
        self.release_if_empty();
        ControlFlow::Continue(())
    }

    /// Consumes `input` as [`decode`](Self::decode) would when every frame it
    /// completes is a plain message, and returns how many there were; otherwise
    /// returns `None` and changes nothing, so the caller decodes `input` instead.
    ///
    /// Why: a caller that only counts messages (`--mode discard`) would otherwise pay
    /// for a callback per line; this is one vectorised pass over the read (the line
    /// ends counted, lines that begin with `!Disconnect`'s `!` noticed:
    /// [`delimiters::tally`]) and a look at the line in progress and the tail.
    /// It is deliberately conservative: `None` whenever a line could be oversize,
    /// could be `!Disconnect` (which the caller must see, to close), or empty lines
    /// are skipped (octet framing's fallback). The decoder state it leaves (`pending`,
    /// `seen`) is the one `decode` leaves; property tests check it for every split.
    pub fn skim(&mut self, input: &[u8]) -> Option<u64> {
        if self.skip_empty {
            return None;
        }
        let Some(first) = memchr::memchr(self.delimiter, input) else {
            // No line ends here, so `decode` would only hold the bytes: do just that.
            self.hold(input);
            self.release_if_empty();
            return Some(0);
        };
        if self.seen > 0 {
            // The line in progress ends here: it must fit, and be too long to be
            // `!Disconnect` (with or without its `\r`), which began in an earlier read.
            let total = self.seen + first as u64;
            if total > self.max_frame as u64 || total <= DISCONNECT.len() as u64 + 1 {
                return None;
            }
        }
        let (lines, tail) = self.complete_lines(input)?;
        // Any line that is `!Disconnect` lies wholly in `lines` and begins with `!`.
        let tally = delimiters::tally(self.delimiter, DISCONNECT_START, lines);
        if tally.marked && contains_disconnect(lines) {
            return None;
        }
        let count = tally.ends;
        self.pending.clear();
        self.seen = 0;
        self.hold(tail);
        self.release_if_empty();
        Some(count)
    }

    /// Decodes `input` as [`decode`](Self::decode) does, except that the complete
    /// lines after the line in progress, when all of them are plain messages, are
    /// not handed out one by one but returned as one [`Run`], which comes after
    /// every frame `on_frame` saw.
    ///
    /// Why: a caller that formats every message the same way (`--mode print`) then
    /// loops over a read's lines itself, without a callback, a `Frame` and the
    /// checks for `!Disconnect` and oversize per line. Like [`skim`](Self::skim), it
    /// falls back to `decode` (and returns no run) whenever a line could be oversize
    /// or `!Disconnect`; property tests check that the frames and the run's messages
    /// are exactly `decode`'s frames, for every split.
    pub fn decode_run<'a, F>(
        &mut self,
        input: &'a [u8],
        mut on_frame: F,
    ) -> ControlFlow<(), Option<Run<'a>>>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        if self.skip_empty {
            self.decode(input, on_frame)?;
            return ControlFlow::Continue(None);
        }
        let mut rest = input;
        if self.seen > 0 {
            // The line in progress ends (if it does) through the general path.
            let Some(first) = memchr::memchr(self.delimiter, input) else {
                self.decode(input, on_frame)?;
                return ControlFlow::Continue(None);
            };
            let (head, after) = input.split_at_checked(first + 1).unwrap_or((input, &[]));
            self.step(head, &mut on_frame)?;
            rest = after;
        }
        let Some((lines, tail)) = self.plain_lines(rest) else {
            self.decode(rest, on_frame)?;
            return ControlFlow::Continue(None);
        };
        self.hold(tail);
        self.release_if_empty();
        ControlFlow::Continue(Some(Run {
            lines,
            delimiter: self.delimiter,
        }))
    }

    /// `input`'s complete lines and the unterminated tail after them, when none of
    /// those lines can be anything but a plain message; the caller has checked the
    /// line in progress, if any, which the first of them ends.
    fn plain_lines<'a>(&self, input: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        let (lines, tail) = self.complete_lines(input)?;
        // Any line that is `!Disconnect` lies wholly in `lines`.
        if contains_disconnect(lines) {
            return None;
        }
        Some((lines, tail))
    }

    /// `input`'s complete lines and the unterminated tail after them, when none of
    /// those lines can be oversize; the caller has checked the line in progress, if
    /// any, which the first of them ends. Whether one is `!Disconnect` is left to
    /// the caller.
    fn complete_lines<'a>(&self, input: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        let Some(last) = memchr::memrchr(self.delimiter, input) else {
            return Some((&[], input));
        };
        let (lines, tail) = input.split_at_checked(last + 1)?;
        // Every line but the first is shorter than `lines`, and so is the first when
        // none was in progress: in at most `max_frame` bytes none of them can be
        // oversize. In more, a delimiter in every block of half that size keeps
        // consecutive delimiters closer than `max_frame` (a memchr per block, each
        // stopping at the block's first line end).
        if lines.len() > self.max_frame {
            let half = (self.max_frame / 2).max(1);
            let delimiter = self.delimiter;
            if !lines
                .chunks_exact(half)
                .all(|block| memchr::memchr(delimiter, block).is_some())
            {
                return None;
            }
        }
        Some((lines, tail))
    }

    /// An idle connection holds no buffer: one that grew past `KEEP_CAPACITY` for a
    /// long line is freed once empty.
    fn release_if_empty(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > KEEP_CAPACITY {
            self.pending = Vec::new();
        }
    }

    /// Consumes the front of `input` up to and including the first delimiter, or all
    /// of it when there is none, and emits the line if it ended.
    #[inline]
    pub(super) fn step<F>(&mut self, input: &[u8], on_frame: &mut F) -> ControlFlow<(), Step>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        let Some(end) = memchr::memchr(self.delimiter, input) else {
            self.hold(input);
            return ControlFlow::Continue(Step {
                consumed: input.len(),
                ended: false,
            });
        };
        let head = input.get(..end).unwrap_or(input);
        let total = self.seen + head.len() as u64;
        if self.seen == 0 {
            self.emit(head, on_frame)?;
        } else if total <= self.limit() as u64 {
            let mut line = std::mem::take(&mut self.pending);
            line.extend_from_slice(head);
            self.seen = 0;
            let flow = self.emit(&line, on_frame);
            line.clear();
            self.pending = line;
            flow?;
        } else {
            // Longer than `limit` even before stripping a `\r`, so surely oversize.
            self.hold(head);
            let kept = std::mem::take(&mut self.pending);
            self.seen = 0;
            on_frame(too_long(self.oversize, &kept, self.max_frame, total))?;
        }
        ControlFlow::Continue(Step {
            consumed: end + 1,
            ended: true,
        })
    }

    pub fn finish<F>(&mut self, mut on_frame: F) -> ControlFlow<()>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        let seen = std::mem::replace(&mut self.seen, 0);
        let line = std::mem::take(&mut self.pending);
        if seen == 0 {
            return ControlFlow::Continue(());
        }
        // No terminator arrived, so there is no `\r` to strip: the bytes are the message.
        if seen > self.max_frame as u64 {
            on_frame(too_long(self.oversize, &line, self.max_frame, seen))
        } else {
            on_frame(Frame::Message(&line))
        }
    }

    /// A whole line, at most `limit` bytes or straight from the input. Oversize
    /// lengths count every byte before the delimiter, as received.
    #[inline]
    fn emit<F>(&self, line: &[u8], on_frame: &mut F) -> ControlFlow<()>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        let message = self.strip(line);
        if message.len() > self.max_frame {
            on_frame(too_long(
                self.oversize,
                message,
                self.max_frame,
                line.len() as u64,
            ))
        } else if message.is_empty() && self.skip_empty {
            ControlFlow::Continue(())
        } else {
            on_frame(Frame::Message(message))
        }
    }

    /// Keeps the start of an unterminated line while it may fit; once it cannot,
    /// keeps only what truncate delivers: memory stays bounded by `max_frame` + 1
    /// whatever the peer sends.
    fn hold(&mut self, partial: &[u8]) {
        self.seen += partial.len() as u64;
        if self.seen <= self.limit() as u64 {
            self.pending.extend_from_slice(partial);
            return;
        }
        match self.oversize {
            Oversize::Drop => self.pending = Vec::new(),
            Oversize::Truncate => {
                let room = self.max_frame.saturating_sub(self.pending.len());
                self.pending
                    .extend_from_slice(partial.get(..room).unwrap_or(partial));
                self.pending.truncate(self.max_frame);
            }
        }
    }
}

/// Appends `message` and the delimiter.
pub(super) fn encode(delimiter: u8, message: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(message);
    out.push(delimiter);
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use super::super::testing::{
        Owned, collect, collect_split, config, cuts, msg, oversize, owned, points, split,
    };
    use super::super::{DISCONNECT, Decoder, Frame, FrameConfig, Framing, Oversize, encode};
    use super::LineDecoder;
    use proptest::prelude::*;

    fn decoder(max: usize) -> Decoder {
        Decoder::new(&config(Framing::Line, max, Oversize::Drop))
    }

    fn truncating(max: usize) -> Decoder {
        Decoder::new(&config(Framing::Line, max, Oversize::Truncate))
    }

    #[test]
    fn every_split_point_yields_the_same_frames() {
        let input: &[u8] = b"hello\r\nworld\n\nlast-but-one\nno newline";
        let expected = vec![
            msg(b"hello"),
            msg(b"world"),
            msg(b""),
            msg(b"last-but-one"),
            msg(b"no newline"),
        ];
        for cut in 0..=input.len() {
            let mut d = decoder(64);
            let (a, b) = input.split_at(cut);
            assert_eq!(collect(&mut d, &[a, b], true), expected, "cut at {cut}");
        }
    }

    #[test]
    fn a_message_byte_by_byte() {
        let input = b"byte by byte\n";
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            collect(&mut decoder(64), &chunks, true),
            vec![msg(b"byte by byte")]
        );
    }

    #[test]
    fn oversize_is_skipped_and_the_next_message_arrives() {
        let mut input = vec![b'x'; 100];
        input.extend_from_slice(b"\nnext\n");
        for cut in 0..=input.len() {
            let mut d = decoder(10);
            let (a, b) = input.split_at(cut);
            assert_eq!(
                collect(&mut d, &[a, b], true),
                vec![Owned::Oversize(100), msg(b"next")],
                "cut at {cut}"
            );
            assert!(d.buffered() <= 11);
        }
    }

    #[test]
    fn oversize_is_truncated_and_the_next_message_arrives() {
        let mut input = b"0123456789abcdef\r".to_vec();
        input.extend_from_slice(b"\nnext\r\n");
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            let mut d = truncating(10);
            let mut frames = collect(&mut d, &[a], false);
            assert!(d.buffered() <= 11, "cut at {cut}");
            frames.extend(collect(&mut d, &[b], true));
            assert_eq!(
                frames,
                vec![Owned::Truncated(b"0123456789".to_vec(), 17), msg(b"next")],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn exactly_max_frame_is_accepted_with_or_without_cr() {
        assert_eq!(
            collect(&mut decoder(4), &[b"abcd\r\nabcd\nabcde\n"], true),
            vec![msg(b"abcd"), msg(b"abcd"), Owned::Oversize(5)]
        );
        // Split so that the 5-byte `abcd\r` sits in the pending buffer at its limit.
        assert_eq!(
            collect(&mut truncating(4), &[b"abcd\r", b"\nabcde", b"\n"], true),
            vec![msg(b"abcd"), Owned::Truncated(b"abcd".to_vec(), 5)]
        );
    }

    #[test]
    fn unterminated_oversize_at_end_of_stream_is_reported() {
        assert_eq!(
            collect(&mut decoder(4), &[b"ok\nabcdefgh"], true),
            vec![msg(b"ok"), Owned::Oversize(8)]
        );
        assert_eq!(
            collect(&mut truncating(4), &[b"ok\nabc", b"defgh"], true),
            vec![msg(b"ok"), Owned::Truncated(b"abcd".to_vec(), 8)]
        );
        // A final `\r` is data: no terminator came to strip it with.
        assert_eq!(
            collect(&mut truncating(4), &[b"abcd\r"], true),
            vec![Owned::Truncated(b"abcd".to_vec(), 5)]
        );
    }

    #[test]
    fn custom_delimiter_keeps_carriage_returns() {
        let mut d = Decoder::new(&FrameConfig {
            delimiter: 0,
            ..FrameConfig::default()
        });
        assert_eq!(
            collect(&mut d, &[b"a\r\0b\nc\0"], true),
            vec![msg(b"a\r"), msg(b"b\nc")]
        );
    }

    #[test]
    fn pending_buffer_is_released_when_empty() {
        let mut d = decoder(65536);
        let big = vec![b'y'; 20000];
        let _ = collect(&mut d, &[&big], false);
        assert_eq!(d.buffered(), 20000);
        let _ = collect(&mut d, &[b"\n"], false);
        let Decoder::Line(line) = &d else {
            panic!("a line decoder")
        };
        assert_eq!(line.pending.capacity(), 0);
        // Skimming keeps the same rule.
        assert_eq!(d.skim(&big), Some(0));
        assert_eq!(d.skim(b"\n"), Some(1));
        let Decoder::Line(line) = &d else {
            panic!("a line decoder")
        };
        assert_eq!(line.pending.capacity(), 0);
    }

    #[test]
    fn a_zero_max_frame_still_delivers_empty_lines() {
        assert_eq!(
            collect(&mut truncating(0), &[b"\r\nx\n\n"], true),
            vec![msg(b""), Owned::Truncated(Vec::new(), 1), msg(b"")]
        );
    }

    /// What a caller that only counts sees of a stream, as the worker does: runs of
    /// messages as one count, every other frame, and where `!Disconnect` ended it.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Counted {
        Messages(u64),
        Other(Owned),
        Disconnect,
    }

    fn add(log: &mut Vec<Counted>, n: u64) {
        match log.last_mut() {
            _ if n == 0 => {}
            Some(Counted::Messages(m)) => *m += n,
            _ => log.push(Counted::Messages(n)),
        }
    }

    fn record(log: &mut Vec<Counted>, frame: Frame<'_>) -> ControlFlow<()> {
        match frame {
            Frame::Message(m) if m == DISCONNECT => return ControlFlow::Break(()),
            Frame::Message(_) => add(log, 1),
            other => log.push(Counted::Other(owned(other))),
        }
        ControlFlow::Continue(())
    }

    /// The line decoder's whole state.
    fn state(d: &Decoder) -> (Vec<u8>, u64) {
        let Decoder::Line(line) = d else {
            panic!("a line decoder")
        };
        (line.pending.clone(), line.seen)
    }

    /// Feeds `chunks` as the worker does, through `skim` first when `skim` is set
    /// and `decode` when it declines, until `!Disconnect` or the end of the stream;
    /// returns what was seen and the decoder's state after each chunk and the finish.
    fn count(
        cfg: &FrameConfig,
        chunks: &[&[u8]],
        skim: bool,
    ) -> (Vec<Counted>, Vec<(Vec<u8>, u64)>) {
        let mut d = Decoder::new(cfg);
        let mut log = Vec::new();
        let mut states = Vec::new();
        for chunk in chunks {
            let skimmed = if skim { d.skim(chunk) } else { None };
            let flow = match skimmed {
                Some(n) => {
                    add(&mut log, n);
                    ControlFlow::Continue(())
                }
                None => d.decode(chunk, |f| record(&mut log, f)),
            };
            states.push(state(&d));
            if flow.is_break() {
                log.push(Counted::Disconnect);
                return (log, states);
            }
        }
        if d.finish(|f| record(&mut log, f)).is_break() {
            log.push(Counted::Disconnect);
        }
        states.push(state(&d));
        (log, states)
    }

    /// Feeds `chunks` as the worker does in print mode, through `decode_run` when
    /// `run` is set (the run's messages after the frames the callback saw) and
    /// `decode` otherwise, until `!Disconnect` or the end of the stream; returns every
    /// frame (`None` for `!Disconnect`), how many messages came in runs, and the
    /// decoder's state after each chunk and the finish.
    #[allow(clippy::type_complexity)]
    fn frames(
        cfg: &FrameConfig,
        chunks: &[&[u8]],
        run: bool,
    ) -> (Vec<Option<Owned>>, usize, Vec<(Vec<u8>, u64)>) {
        fn seen(log: &mut Vec<Option<Owned>>, frame: Frame<'_>) -> ControlFlow<()> {
            if frame == Frame::Message(DISCONNECT) {
                log.push(None);
                return ControlFlow::Break(());
            }
            log.push(Some(owned(frame)));
            ControlFlow::Continue(())
        }
        let mut d = Decoder::new(cfg);
        let (mut log, mut in_runs, mut states) = (Vec::new(), 0, Vec::new());
        for chunk in chunks {
            let flow = if run {
                match d.decode_run(chunk, |f| seen(&mut log, f)) {
                    ControlFlow::Continue(Some(run)) => {
                        for m in run.messages() {
                            log.push(Some(msg(m)));
                            in_runs += 1;
                        }
                        ControlFlow::Continue(())
                    }
                    ControlFlow::Continue(None) => ControlFlow::Continue(()),
                    ControlFlow::Break(()) => ControlFlow::Break(()),
                }
            } else {
                d.decode(chunk, |f| seen(&mut log, f))
            };
            states.push(state(&d));
            if flow.is_break() {
                return (log, in_runs, states);
            }
        }
        let _ = d.finish(|f| seen(&mut log, f));
        states.push(state(&d));
        (log, in_runs, states)
    }

    #[test]
    fn runs_hand_out_the_plain_lines_after_the_line_in_progress() {
        let cfg = config(Framing::Line, 64, Oversize::Drop);
        let (log, in_runs, _) = frames(&cfg, &[b"ab\nc", b"d\r\ne\n\nf"], true);
        assert_eq!(
            log,
            vec![
                Some(msg(b"ab")),
                Some(msg(b"cd")),
                Some(msg(b"e")),
                Some(msg(b"")),
                Some(msg(b"f"))
            ]
        );
        // "cd" ended the line in progress, and "f" came at the finish.
        assert_eq!(in_runs, 3);
        // `!Disconnect` in a read: no run, decode sees it and stops.
        let (log, in_runs, _) = frames(&cfg, &[b"a\n!Disconnect\nb\n"], true);
        assert_eq!((log, in_runs), (vec![Some(msg(b"a")), None], 0));
    }

    #[test]
    fn skim_counts_plain_lines_and_keeps_the_tail() {
        let mut d = decoder(64);
        assert_eq!(d.skim(b"ab\nhey!\r\n\nef"), Some(3));
        assert_eq!(d.buffered(), 2);
        // The line in progress is completed and counted once it is surely no
        // `!Disconnect`; the new tail is kept.
        assert_eq!(d.skim(b"ghijklmnopqrstuv\nwx"), Some(1));
        assert_eq!(d.buffered(), 2);
        assert_eq!(collect(&mut d, &[b"yz"], true), vec![msg(b"wxyz")]);
    }

    #[test]
    fn skim_leaves_disconnect_to_decode() {
        let mut d = decoder(64);
        assert_eq!(d.skim(b"0123456789abcdef"), Some(0));
        assert_eq!(d.skim(b"\nok!\n!Disconnect\r\nlater\n"), None);
        assert_eq!(state(&d), (b"0123456789abcdef".to_vec(), 16), "untouched");
        // Split across reads, it is still seen: the short line in progress declines.
        let mut d = decoder(64);
        assert_eq!(d.skim(b"x\n!Disc"), Some(1));
        assert_eq!(d.skim(b"onnect\n"), None);
        let flow = d.decode(b"onnect\n", |f| match f {
            Frame::Message(m) if m == DISCONNECT => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        });
        assert!(flow.is_break());
    }

    #[test]
    fn skim_counts_lines_that_only_contain_disconnect() {
        // `!Disconnect` inside a line is a plain message: skim counts it rather
        // than falling back to decode, since no line begins with `!`.
        let mut d = decoder(64);
        assert_eq!(d.skim(b"say !Disconnect\nok!\n"), Some(2));
        // A line that begins with `!` sends the read to the exact check, which
        // leaves a read holding `!Disconnect` anywhere to decode.
        assert_eq!(decoder(64).skim(b"!x\nok\n"), Some(2));
        assert_eq!(decoder(64).skim(b"!Disconnected\n"), None);
        // The first line of a read continues one that began earlier: it is not
        // `!Disconnect` however it starts here.
        let mut d = decoder(64);
        assert_eq!(d.skim(b"abc"), Some(0));
        assert_eq!(d.skim(b"defghijklmnop!Disconnect\nok\n"), Some(2));
    }

    #[test]
    fn skim_leaves_long_lines_to_decode() {
        let mut d = decoder(16);
        assert_eq!(
            d.skim(b"0123456789abcdefg\n"),
            None,
            "a line longer than max_frame"
        );
        // A read longer than max_frame is skimmed when its lines are short: a line
        // end in every 8-byte block.
        assert_eq!(d.skim(b"0123456\n0123456\n0123456\n"), Some(3));
        // A line of 15 bytes straddles a block with no line end: decode decides.
        assert_eq!(d.skim(b"0\n0123456789abcde\n0\n"), None);
        assert_eq!(
            collect(&mut d, &[b"0\n0123456789abcde\n0\n"], true).len(),
            3
        );
        assert_eq!(d.skim(b"ok\n0123456789"), Some(1));
        // The line in progress would be 17 bytes: oversize, for `decode` to report.
        assert_eq!(d.skim(b"abcdefg\n"), None);
        assert_eq!(
            collect(&mut d, &[b"abcdefg\n"], true),
            vec![Owned::Oversize(17)]
        );
        // Without a delimiter nothing is emitted: held exactly as `decode` holds it.
        let mut d = decoder(4);
        assert_eq!(d.skim(b"0123456789"), Some(0));
        assert_eq!(state(&d), (Vec::new(), 10));
        assert_eq!(collect(&mut d, &[b"\n"], true), vec![Owned::Oversize(10)]);
    }

    #[test]
    fn only_plain_line_framing_skims() {
        for framing in [Framing::Length, Framing::Octet, Framing::Raw] {
            let mut d = Decoder::new(&config(framing, 64, Oversize::Drop));
            assert_eq!(d.skim(b"a\nb\n"), None, "{framing:?}");
            assert_eq!(d.buffered(), 0);
        }
        // Octet framing's fallback skips empty lines: not plain counting.
        let mut d = LineDecoder::fallback(64, Oversize::Drop);
        assert_eq!(d.skim(b"a\n\nb\n"), None);
    }

    /// A `max_frame`, lines and read sizes for the skim property: `!Disconnect` in
    /// its forms and look-alikes, empty lines, lines of any bytes, and lines and reads
    /// of about `max_frame` bytes, where the limits are.
    fn skim_case() -> impl Strategy<Value = (usize, Vec<Vec<u8>>, Vec<usize>)> {
        prop_oneof![0usize..40, 40usize..400].prop_flat_map(|max| {
            let near = max.saturating_sub(2)..max + 3;
            let byte = prop_oneof![b'a'..=b'z', Just(b'\r'), Just(b'!'), any::<u8>()];
            let line = prop_oneof![
                Just(DISCONNECT.to_vec()),
                Just(b"!Disconnect\r".to_vec()),
                Just(b"x!Disconnect".to_vec()),
                Just(Vec::new()),
                Just(b"\r".to_vec()),
                proptest::collection::vec(byte.clone(), 0..50),
                proptest::collection::vec(byte, near.clone()),
            ];
            let size = prop_oneof![1usize..16, near, 1usize..600];
            (
                Just(max),
                proptest::collection::vec(line, 0..24),
                proptest::collection::vec(size, 0..24),
            )
        })
    }

    /// The stream of a shortcut property: `lines` framed, the last delimiter dropped
    /// when `unterminated`.
    fn shortcut_stream(cfg: &FrameConfig, lines: &[Vec<u8>], unterminated: bool) -> Vec<u8> {
        let mut stream = Vec::new();
        for l in lines {
            encode(cfg, l, &mut stream);
        }
        if unterminated && stream.last() == Some(&cfg.delimiter) {
            stream.pop();
        }
        stream
    }

    /// The reads a shortcut is checked on: reads of `sizes` bytes, then the rest of
    /// the stream; and reads of every small size, since a line longer than the read
    /// always straddles two, so the line in progress meets every limit.
    fn shortcut_reads<'a>(stream: &'a [u8], sizes: &[usize], max: usize) -> Vec<Vec<&'a [u8]>> {
        let points: Vec<usize> = sizes
            .iter()
            .scan(0, |at, n| {
                *at += n;
                Some(*at)
            })
            .collect();
        let mut reads = vec![split(stream, &points)];
        reads.extend((1..=(max + 2).min(48)).map(|size| stream.chunks(size).collect()));
        reads
    }

    fn sizes_of(chunks: &[&[u8]]) -> Vec<usize> {
        chunks.iter().map(|c| c.len()).collect()
    }

    /// Lines (without `\n`), some ending in `\r`, some longer than the tests' 16.
    fn lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(
            proptest::collection::vec(
                any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
                0..40,
            ),
            0..20,
        )
    }

    proptest! {
        #[test]
        fn any_split_yields_the_same_frames(lines in lines(), cuts in cuts(), oversize in oversize()) {
            let cfg = config(Framing::Line, 16, oversize);
            let mut stream = Vec::new();
            for l in &lines { encode(&cfg, l, &mut stream); }
            let whole = collect_split(&cfg, &stream, &[]);
            prop_assert_eq!(collect_split(&cfg, &stream, &points(&cuts, stream.len())), whole.clone());
            // Oversize lines never desynchronise the ones after them.
            let expected: Vec<Owned> = lines.iter().map(|l| {
                let s = l.strip_suffix(b"\r").unwrap_or(l);
                match (s.len() > 16, oversize) {
                    (false, _) => Owned::Message(s.to_vec()),
                    (true, Oversize::Drop) => Owned::Oversize(l.len() as u64),
                    (true, Oversize::Truncate) => Owned::Truncated(s[..16].to_vec(), l.len() as u64),
                }
            }).collect();
            prop_assert_eq!(whole, expected);
        }

        #[test]
        fn skim_then_decode_equals_decode(
            (max, lines, sizes) in skim_case(),
            unterminated in any::<bool>(),
            oversize in oversize(),
            delimiter in prop_oneof![Just(b'\n'), Just(b'\0')],
        ) {
            let cfg = FrameConfig { delimiter, ..config(Framing::Line, max, oversize) };
            let stream = shortcut_stream(&cfg, &lines, unterminated);
            for chunks in shortcut_reads(&stream, &sizes, max) {
                prop_assert_eq!(count(&cfg, &chunks, true), count(&cfg, &chunks, false), "reads of {:?}", sizes_of(&chunks));
            }
        }

        #[test]
        fn decode_run_yields_what_decode_yields(
            (max, lines, sizes) in skim_case(),
            unterminated in any::<bool>(),
            oversize in oversize(),
            delimiter in prop_oneof![Just(b'\n'), Just(b'\0')],
        ) {
            let cfg = FrameConfig { delimiter, ..config(Framing::Line, max, oversize) };
            let stream = shortcut_stream(&cfg, &lines, unterminated);
            for chunks in shortcut_reads(&stream, &sizes, max) {
                let (with_runs, _, run_states) = frames(&cfg, &chunks, true);
                let (plain, _, states) = frames(&cfg, &chunks, false);
                prop_assert_eq!(with_runs, plain, "reads of {:?}", sizes_of(&chunks));
                prop_assert_eq!(run_states, states, "reads of {:?}", sizes_of(&chunks));
            }
        }

        #[test]
        fn encode_then_decode_round_trips(
            messages in proptest::collection::vec(proptest::collection::vec(1u8..=255, 0..40), 0..20),
            delimiter in any::<u8>(),
        ) {
            let cfg = FrameConfig { delimiter: delimiter.max(1), max_frame: 64, ..FrameConfig::default() };
            let messages: Vec<Vec<u8>> = messages.into_iter().map(|mut m| {
                m.retain(|&b| b != cfg.delimiter);
                if cfg.delimiter == b'\n' { while m.last() == Some(&b'\r') { m.pop(); } }
                m
            }).collect();
            let mut stream = Vec::new();
            for m in &messages { encode(&cfg, m, &mut stream); }
            let expected: Vec<Owned> = messages.iter().map(|m| Owned::Message(m.clone())).collect();
            prop_assert_eq!(collect_split(&cfg, &stream, &[]), expected);
        }

        #[test]
        fn any_bytes_keep_memory_bounded(
            stream in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..200),
            cuts in cuts(), oversize in oversize(), max in 0usize..20,
        ) {
            let cfg = config(Framing::Line, max, oversize);
            let whole = collect_split(&cfg, &stream, &[]);
            prop_assert_eq!(collect_split(&cfg, &stream, &points(&cuts, stream.len())), whole);
        }
    }
}
