//! Length framing: a 4-byte big-endian length, then that many bytes. Any length is
//! valid (0 is an empty message), so the stream can never desynchronise; what a
//! peer announces is never allocated up front: the body is kept as it arrives, up to
//! `max_frame`, and the rest of a longer one is skipped (or, with truncate, its
//! first `max_frame` bytes delivered).
//!
//! At end of stream, a frame cut off in its header or its body is reported as
//! [`Frame::Incomplete`] with the bytes of it that arrived (header included), never
//! delivered: its announced end was not seen.

use std::ops::ControlFlow;

use super::{Body, Frame, Oversize};

/// Bytes in the length prefix.
const HEADER: usize = 4;

/// Incremental length-prefix decoder. A body that arrives whole in one read is
/// handed out straight from the input slice.
#[derive(Debug)]
pub struct LengthDecoder {
    header: [u8; HEADER],
    /// Bytes of `header` received so far (0 between frames).
    have: usize,
    body: Body,
}

impl LengthDecoder {
    pub fn new(max_frame: usize, oversize: Oversize) -> Self {
        LengthDecoder {
            header: [0; HEADER],
            have: 0,
            body: Body::new(max_frame, oversize),
        }
    }

    pub fn buffered(&self) -> usize {
        self.have + self.body.buffered()
    }

    pub fn decode<F>(&mut self, input: &[u8], mut on_frame: F) -> ControlFlow<()>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        let mut rest = input;
        while !rest.is_empty() {
            if self.body.is_active() {
                let n = self.body.step(rest, &mut on_frame)?;
                rest = rest.get(n..).unwrap_or_default();
                continue;
            }
            let want = (HEADER - self.have).min(rest.len());
            let Some((head, tail)) = rest.split_at_checked(want) else {
                break;
            };
            if let Some(slot) = self.header.get_mut(self.have..self.have + want) {
                slot.copy_from_slice(head);
            }
            self.have += want;
            rest = tail;
            if self.have == HEADER {
                self.have = 0;
                self.body.start(u64::from(u32::from_be_bytes(self.header)));
                // Stepping now, even with nothing left, delivers an empty message
                // without waiting for the next read.
                let n = self.body.step(rest, &mut on_frame)?;
                rest = rest.get(n..).unwrap_or_default();
            }
        }
        ControlFlow::Continue(())
    }

    pub fn finish<F>(&mut self, mut on_frame: F) -> ControlFlow<()>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        let have = std::mem::replace(&mut self.have, 0);
        if self.body.is_active() {
            let len = HEADER as u64 + self.body.received();
            self.body.reset();
            on_frame(Frame::Incomplete { len })
        } else if have > 0 {
            on_frame(Frame::Incomplete { len: have as u64 })
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// Appends the length prefix and `message`. A message longer than `u32::MAX` (which
/// no `--max-frame` allows) is cut to that length, so the stream stays in step.
pub(super) fn encode(message: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message.get(..len as usize).unwrap_or(message));
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
        Decoder::new(&config(Framing::Length, max, oversize))
    }

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let cfg = config(Framing::Length, 0, Oversize::Drop);
        let mut out = Vec::new();
        for m in messages {
            encode(&cfg, m, &mut out);
        }
        out
    }

    #[test]
    fn encode_writes_a_big_endian_prefix() {
        assert_eq!(framed(&[b"hi", b""]), b"\0\0\0\x02hi\0\0\0\0");
    }

    #[test]
    fn every_split_point_yields_the_same_frames() {
        let input = framed(&[b"hello", b"", b"0123456789abcdef", b"world"]);
        for oversize in [Oversize::Drop, Oversize::Truncate] {
            let expected = vec![
                msg(b"hello"),
                msg(b""),
                expected(b"0123456789abcdef", 8, oversize),
                msg(b"world"),
            ];
            assert_every_split(&config(Framing::Length, 8, oversize), &input, &expected);
        }
    }

    #[test]
    fn a_frame_byte_by_byte() {
        let input = framed(&[b"byte by byte", b""]);
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            collect(&mut decoder(64, Oversize::Drop), &chunks, true),
            vec![msg(b"byte by byte"), msg(b"")]
        );
    }

    #[test]
    fn drop_and_truncate() {
        let input = framed(&[b"abcdefgh", b"ok"]);
        assert_eq!(
            collect(&mut decoder(4, Oversize::Drop), &[&input], true),
            vec![Owned::Oversize(8), msg(b"ok")]
        );
        assert_eq!(
            collect(&mut decoder(4, Oversize::Truncate), &[&input], true),
            vec![Owned::Truncated(b"abcd".to_vec(), 8), msg(b"ok")]
        );
    }

    #[test]
    fn a_huge_announced_length_is_not_buffered() {
        let mut d = decoder(16, Oversize::Truncate);
        let header = u32::MAX.to_be_bytes();
        assert_eq!(collect(&mut d, &[&header, &[b'z'; 1000]], false), vec![]);
        assert_eq!(d.buffered(), 16);
        let mut d = decoder(16, Oversize::Drop);
        assert_eq!(collect(&mut d, &[&header, &[b'z'; 1000]], false), vec![]);
        assert_eq!(d.buffered(), 0);
        assert_eq!(collect(&mut d, &[], true), vec![Owned::Incomplete(1004)]);
    }

    #[test]
    fn incomplete_at_end_of_stream() {
        let input = framed(&[b"hello"]);
        for cut in 1..input.len() {
            let (a, _) = input.split_at(cut);
            assert_eq!(
                collect(&mut decoder(64, Oversize::Drop), &[a], true),
                vec![Owned::Incomplete(cut as u64)],
                "cut at {cut}"
            );
        }
        assert_eq!(
            collect(&mut decoder(64, Oversize::Drop), &[b""], true),
            vec![]
        );
    }

    proptest! {
        #[test]
        fn any_split_round_trips(messages in messages(), cuts in cuts(), oversize in oversize()) {
            let cfg = config(Framing::Length, 16, oversize);
            let mut stream = Vec::new();
            for m in &messages { encode(&cfg, m, &mut stream); }
            // Oversize frames in any position never desynchronise the ones after them.
            let want: Vec<Owned> = messages.iter().map(|m| expected(m, 16, oversize)).collect();
            prop_assert_eq!(collect_split(&cfg, &stream, &[]), want.clone());
            prop_assert_eq!(collect_split(&cfg, &stream, &points(&cuts, stream.len())), want);
        }

        #[test]
        fn a_cut_stream_ends_incomplete(messages in messages(), cut in any::<prop::sample::Index>()) {
            let (frames, want) = cut_stream(Framing::Length, &messages, cut);
            prop_assert_eq!(frames, want);
        }

        #[test]
        fn any_bytes_keep_memory_bounded(
            stream in proptest::collection::vec(any::<u8>(), 0..200),
            cuts in cuts(), oversize in oversize(), max in 0usize..20,
        ) {
            let cfg = config(Framing::Length, max, oversize);
            let whole = collect_split(&cfg, &stream, &[]);
            prop_assert_eq!(collect_split(&cfg, &stream, &points(&cuts, stream.len())), whole);
            prop_assert!(MAX_HEADER >= super::HEADER);
        }
    }
}
