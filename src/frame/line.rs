//! Line framing: a message ends at the delimiter (`\n` unless `--delimiter`). With the
//! default `\n`, a `\r` before it is stripped, so `\r\n` senders (telnet, Windows)
//! read the same; with another delimiter every byte is kept, since a `\r` before a
//! `\0` is data.

use std::ops::ControlFlow;

use super::Frame;

/// Incremental line decoder. Complete lines are handed out straight from the input
/// slice; only a line that straddles two reads is copied, into `pending`, which is
/// released once empty so an idle connection holds no buffer.
#[derive(Debug)]
pub struct LineDecoder {
    delimiter: u8,
    max_frame: usize,
    pending: Vec<u8>,
    /// While skipping an oversize line: how many of its bytes have gone past.
    skipped: Option<u64>,
}

/// A `pending` buffer larger than this is freed rather than kept once it empties.
const KEEP_CAPACITY: usize = 4096;

impl LineDecoder {
    pub fn new(delimiter: u8, max_frame: usize) -> Self {
        LineDecoder {
            delimiter,
            max_frame,
            pending: Vec::new(),
            skipped: None,
        }
    }

    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// The longest run a line may hold before its terminator: `max_frame`, plus the
    /// `\r` that is stripped with a `\n` delimiter.
    fn limit(&self) -> usize {
        self.max_frame + usize::from(self.delimiter == b'\n')
    }

    fn strip<'a>(&self, line: &'a [u8]) -> &'a [u8] {
        if self.delimiter == b'\n' {
            line.strip_suffix(b"\r").unwrap_or(line)
        } else {
            line
        }
    }

    pub fn decode<F>(&mut self, input: &[u8], mut on_frame: F) -> ControlFlow<()>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        let mut rest = input;
        while let Some(end) = memchr::memchr(self.delimiter, rest) {
            let (head, tail) = rest.split_at(end);
            rest = tail.get(1..).unwrap_or_default();
            if let Some(skipped) = self.skipped.take() {
                let len = skipped + head.len() as u64;
                on_frame(Frame::Oversize { len })?;
            } else if self.pending.is_empty() {
                self.emit(head, &mut on_frame)?;
            } else if self.pending.len() + head.len() > self.limit() {
                let len = (self.pending.len() + head.len()) as u64;
                self.release();
                on_frame(Frame::Oversize { len })?;
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(head);
                let flow = self.emit(&line, &mut on_frame);
                line.clear();
                self.pending = line;
                flow?;
            }
        }
        self.hold(rest);
        if self.pending.is_empty() && self.pending.capacity() > KEEP_CAPACITY {
            self.release();
        }
        ControlFlow::Continue(())
    }

    pub fn finish<F>(&mut self, mut on_frame: F) -> ControlFlow<()>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        if let Some(len) = self.skipped.take() {
            return on_frame(Frame::Oversize { len });
        }
        if self.pending.is_empty() {
            return ControlFlow::Continue(());
        }
        let line = std::mem::take(&mut self.pending);
        // No terminator arrived, so there is no `\r` to strip: the bytes are the message.
        if line.len() > self.max_frame {
            on_frame(Frame::Oversize {
                len: line.len() as u64,
            })
        } else {
            on_frame(Frame::Message(&line))
        }
    }

    /// Oversize lengths count every byte before the delimiter, as received.
    fn emit<F>(&self, line: &[u8], on_frame: &mut F) -> ControlFlow<()>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        let message = self.strip(line);
        if message.len() > self.max_frame {
            on_frame(Frame::Oversize {
                len: line.len() as u64,
            })
        } else {
            on_frame(Frame::Message(message))
        }
    }

    /// Keeps the start of an unterminated line, or starts skipping it once it cannot
    /// fit: memory stays bounded by `max_frame` whatever the peer sends.
    fn hold(&mut self, partial: &[u8]) {
        if partial.is_empty() {
            return;
        }
        if let Some(skipped) = self.skipped.as_mut() {
            *skipped += partial.len() as u64;
        } else if self.pending.len() + partial.len() > self.limit() {
            self.skipped = Some((self.pending.len() + partial.len()) as u64);
            self.release();
        } else {
            self.pending.extend_from_slice(partial);
        }
    }

    fn release(&mut self) {
        self.pending = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Owned, collect};
    use super::super::{Decoder, FrameConfig};
    use proptest::prelude::*;

    fn decoder(max: usize) -> Decoder {
        Decoder::new(&FrameConfig {
            max_frame: max,
            ..FrameConfig::default()
        })
    }

    fn msg(s: &[u8]) -> Owned {
        Owned::Message(s.to_vec())
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
    fn exactly_max_frame_is_accepted_with_or_without_cr() {
        assert_eq!(
            collect(&mut decoder(4), &[b"abcd\r\nabcd\nabcde\n"], true),
            vec![msg(b"abcd"), msg(b"abcd"), Owned::Oversize(5)]
        );
    }

    #[test]
    fn unterminated_oversize_at_end_of_stream_is_reported() {
        assert_eq!(
            collect(&mut decoder(4), &[b"ok\nabcdefgh"], true),
            vec![msg(b"ok"), Owned::Oversize(8)]
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
        let Decoder::Line(line) = &d;
        assert_eq!(line.pending.capacity(), 0);
    }

    proptest! {
        #[test]
        fn any_split_yields_the_same_frames(
            lines in proptest::collection::vec(proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..40), 0..20),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut stream = Vec::new();
            for l in &lines { stream.extend_from_slice(l); stream.push(b'\n'); }
            let whole = collect(&mut decoder(16), &[&stream], true);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for p in points { chunks.push(&stream[start..p]); start = p; }
            chunks.push(&stream[start..]);
            prop_assert_eq!(collect(&mut decoder(16), &chunks, true), whole.clone());
            // Oversize lines never desynchronise the ones after them.
            let expected: Vec<Owned> = lines.iter().map(|l| {
                let s = l.strip_suffix(b"\r").unwrap_or(l);
                if s.len() > 16 { Owned::Oversize(l.len() as u64) } else { Owned::Message(s.to_vec()) }
            }).collect();
            prop_assert_eq!(whole, expected);
        }
    }
}
