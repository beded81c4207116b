//! Raw framing: each `decode` call's input is one message, the way the original
//! teaching project printed whatever one `read` returned. The server hands one socket
//! read per call, so message boundaries are wherever the network and the read buffer
//! put them: useful for eyeballing traffic, not for anything that needs boundaries.
//!
//! Nothing is ever held between calls, so nothing is pending at end of stream. An
//! empty input is not a message (a zero-byte read is the end of the stream). A read
//! longer than `max_frame` is dropped or truncated like any other message.

use std::ops::ControlFlow;

use super::{Frame, Oversize, too_long};

/// Stateless apart from its configuration.
#[derive(Debug)]
pub struct RawDecoder {
    max_frame: usize,
    oversize: Oversize,
}

impl RawDecoder {
    pub fn new(max_frame: usize, oversize: Oversize) -> Self {
        RawDecoder {
            max_frame,
            oversize,
        }
    }

    pub fn buffered(&self) -> usize {
        0
    }

    pub fn decode<F>(&mut self, input: &[u8], mut on_frame: F) -> ControlFlow<()>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        if input.is_empty() {
            ControlFlow::Continue(())
        } else if input.len() > self.max_frame {
            on_frame(too_long(
                self.oversize,
                input,
                self.max_frame,
                input.len() as u64,
            ))
        } else {
            on_frame(Frame::Message(input))
        }
    }

    pub fn finish<F>(&mut self, _on_frame: F) -> ControlFlow<()>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{Owned, collect, config, cuts, expected, msg, oversize, split};
    use super::super::{Decoder, Framing, Oversize, encode};
    use proptest::prelude::*;

    fn decoder(max: usize, oversize: Oversize) -> Decoder {
        Decoder::new(&config(Framing::Raw, max, oversize))
    }

    #[test]
    fn each_read_is_one_message() {
        assert_eq!(
            collect(
                &mut decoder(64, Oversize::Drop),
                &[b"hello\nworld", b"", b"\0"],
                true
            ),
            vec![msg(b"hello\nworld"), msg(b"\0")]
        );
    }

    #[test]
    fn drop_and_truncate() {
        assert_eq!(
            collect(&mut decoder(4, Oversize::Drop), &[b"abcdefgh", b"ok"], true),
            vec![Owned::Oversize(8), msg(b"ok")]
        );
        assert_eq!(
            collect(
                &mut decoder(4, Oversize::Truncate),
                &[b"abcdefgh", b"ok"],
                true
            ),
            vec![Owned::Truncated(b"abcd".to_vec(), 8), msg(b"ok")]
        );
    }

    #[test]
    fn encode_sends_the_bytes_as_they_are() {
        let mut out = Vec::new();
        encode(&config(Framing::Raw, 0, Oversize::Drop), b"a\nb", &mut out);
        assert_eq!(out, b"a\nb");
    }

    proptest! {
        #[test]
        fn every_non_empty_read_is_a_frame(
            stream in proptest::collection::vec(any::<u8>(), 0..200),
            cuts in cuts(), oversize in oversize(), max in 0usize..40,
        ) {
            let points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            let chunks = split(&stream, &points);
            let mut d = decoder(max, oversize);
            let want: Vec<Owned> = chunks.iter().filter(|c| !c.is_empty()).map(|c| expected(c, max, oversize)).collect();
            prop_assert_eq!(collect(&mut d, &chunks, true), want);
            prop_assert_eq!(d.buffered(), 0);
        }
    }
}
