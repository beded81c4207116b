//! What every decoder target shares: reading a config and cut points from the
//! input, and the invariants every framing keeps whatever the peer sends.

#![allow(dead_code)] // each target uses only part of it
use std::ops::ControlFlow;

use sockpool::frame::{
    DISCONNECT, Decoder, Frame, FrameConfig, Framing, MAX_HEADER, Oversize, encode,
};

/// The owned frame and the splitting of the codec's own tests (`frame::testing`,
/// exposed to this crate by `--cfg fuzzing`).
pub use sockpool::frame::testing::{Owned, split};

/// A case: the config, where to cut, and the stream.
pub struct Case<'a> {
    pub config: FrameConfig,
    pub cuts: Vec<usize>,
    pub stream: &'a [u8],
}

/// Reads `[max_frame, flags, delimiter, n_cuts, cut…, stream…]`: small `max_frame`
/// (0..=63) so oversize paths are hit constantly, drop or truncate from a flag bit,
/// a delimiter that is `\n` half of the time.
pub fn case(framing: Framing, data: &[u8]) -> Option<Case<'_>> {
    let (&[max, flags, delimiter, n], rest) = data.split_first_chunk::<4>()?;
    let n = usize::from(n % 8).min(rest.len());
    let (cut_bytes, stream) = rest.split_at(n);
    let cuts = cut_bytes
        .iter()
        .map(|&c| usize::from(c) * (stream.len() + 1) / 256)
        .collect();
    let config = FrameConfig {
        framing,
        delimiter: if flags & 2 == 0 { b'\n' } else { delimiter },
        max_frame: usize::from(max % 64),
        oversize: if flags & 1 == 0 {
            Oversize::Drop
        } else {
            Oversize::Truncate
        },
    };
    Some(Case {
        config,
        cuts,
        stream,
    })
}

/// Decodes `chunks` then finishes, checking each frame's shape and the memory bound
/// after every chunk.
pub fn decode(config: &FrameConfig, chunks: &[&[u8]]) -> Vec<Owned> {
    let max = config.max_frame;
    let mut decoder = Decoder::new(config);
    let mut out = Vec::new();
    let mut push = |f: Frame<'_>| {
        out.push(match f {
            Frame::Message(m) => {
                assert!(m.len() <= max, "message of {} > max_frame {max}", m.len());
                Owned::Message(m.to_vec())
            }
            Frame::Oversize { len } => {
                assert!(len > max as u64, "oversize {len} <= max_frame {max}");
                Owned::Oversize(len)
            }
            Frame::Truncated { message, len } => {
                assert_eq!(message.len(), max, "truncated to max_frame");
                assert!(len > max as u64, "truncated {len} <= max_frame {max}");
                Owned::Truncated(message.to_vec(), len)
            }
            Frame::Incomplete { len } => {
                assert!(len > 0, "an incomplete frame has bytes");
                Owned::Incomplete(len)
            }
        });
        ControlFlow::Continue(())
    };
    for chunk in chunks {
        let _ = decoder.decode(chunk, &mut push);
        assert!(
            decoder.buffered() <= max + MAX_HEADER,
            "buffered {} > max_frame {max} + {MAX_HEADER}",
            decoder.buffered()
        );
    }
    let _ = decoder.finish(&mut push);
    assert_eq!(decoder.buffered(), 0, "nothing held after finish");
    out
}

/// The invariants of a stream framing: the frames do not depend on how the stream
/// was split (whole, at the case's cuts, byte by byte), and memory stays bounded.
pub fn check_stream(framing: Framing, data: &[u8]) -> Option<(FrameConfig, Vec<Owned>)> {
    let case = case(framing, data)?;
    let whole = decode(&case.config, &[case.stream]);
    let cut = decode(&case.config, &split(case.stream, &case.cuts));
    assert_eq!(whole, cut, "split at {:?}", case.cuts);
    let bytes: Vec<&[u8]> = case.stream.chunks(1).collect();
    assert_eq!(whole, decode(&case.config, &bytes), "byte by byte");
    Some((case.config, whole))
}

/// For counted framings: the delivered messages, encoded again, decode to
/// themselves.
pub fn check_round_trip(config: &FrameConfig, frames: &[Owned]) {
    let messages: Vec<Owned> = frames
        .iter()
        .filter_map(|f| match f {
            Owned::Message(m) | Owned::Truncated(m, _) => Some(Owned::Message(m.clone())),
            _ => None,
        })
        .collect();
    let mut stream = Vec::new();
    for m in &messages {
        if let Owned::Message(m) = m {
            encode(config, m, &mut stream);
        }
    }
    assert_eq!(decode(config, &[&stream]), messages, "round trip");
}

/// What a caller that only counts messages sees (the server in discard mode): runs of
/// messages as one count, every other frame, and where `!Disconnect` ended it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Counted {
    Messages(u64),
    Other(Owned),
    Disconnect,
}

/// Feeds `chunks` as the server does, through `Decoder::skim` first when `skim` is
/// set and `decode` when it declines, until `!Disconnect` or the end; returns what
/// was seen and `buffered()` after each chunk.
pub fn count(config: &FrameConfig, chunks: &[&[u8]], skim: bool) -> (Vec<Counted>, Vec<usize>) {
    fn add(log: &mut Vec<Counted>, n: u64) {
        match log.last_mut() {
            _ if n == 0 => {}
            Some(Counted::Messages(m)) => *m += n,
            _ => log.push(Counted::Messages(n)),
        }
    }
    let record = |log: &mut Vec<Counted>, f: Frame<'_>| {
        match f {
            Frame::Message(m) if m == DISCONNECT => return ControlFlow::Break(()),
            Frame::Message(_) => add(log, 1),
            Frame::Oversize { len } => log.push(Counted::Other(Owned::Oversize(len))),
            Frame::Truncated { message, len } => {
                log.push(Counted::Other(Owned::Truncated(message.to_vec(), len)))
            }
            Frame::Incomplete { len } => log.push(Counted::Other(Owned::Incomplete(len))),
        }
        ControlFlow::Continue(())
    };
    let mut decoder = Decoder::new(config);
    let mut log = Vec::new();
    let mut buffered = Vec::new();
    for chunk in chunks {
        let skimmed = if skim { decoder.skim(chunk) } else { None };
        let flow = match skimmed {
            Some(n) => {
                add(&mut log, n);
                ControlFlow::Continue(())
            }
            None => decoder.decode(chunk, |f| record(&mut log, f)),
        };
        buffered.push(decoder.buffered());
        if flow.is_break() {
            log.push(Counted::Disconnect);
            return (log, buffered);
        }
    }
    if decoder.finish(|f| record(&mut log, f)).is_break() {
        log.push(Counted::Disconnect);
    }
    buffered.push(decoder.buffered());
    (log, buffered)
}

/// Skimming is invisible: counting through `skim` (falling back to `decode`) sees
/// the same messages, frames, `!Disconnect` and final line as `decode` alone, for
/// the case's split, byte by byte, and reads of `max_frame` (+ 1) bytes.
pub fn check_skim(case: &Case<'_>) {
    for chunks in &shortcut_splits(case) {
        assert_eq!(
            count(&case.config, chunks, true),
            count(&case.config, chunks, false),
            "reads of {:?} bytes",
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
        );
    }
}

/// The reads the shortcuts are checked on: the case's split, byte by byte, and reads
/// of `max_frame` and `max_frame + 1` bytes, where their limits are.
fn shortcut_splits<'a>(case: &Case<'a>) -> Vec<Vec<&'a [u8]>> {
    let max = case.config.max_frame;
    let mut splits = vec![
        split(case.stream, &case.cuts),
        case.stream.chunks(1).collect(),
    ];
    for size in [max, max + 1] {
        splits.push(case.stream.chunks(size.max(1)).collect());
    }
    splits
}

/// Feeds `chunks` as the server does in print mode, through `Decoder::decode_run`
/// when `run` is set (a run's messages after the frames the callback saw) and
/// `decode` otherwise, until `!Disconnect` or the end; returns every frame (`None`
/// for `!Disconnect`) and `buffered()` after each chunk.
pub fn frames(config: &FrameConfig, chunks: &[&[u8]], run: bool) -> (Vec<Option<Owned>>, Vec<usize>) {
    let record = |log: &mut Vec<Option<Owned>>, f: Frame<'_>| {
        let owned = match f {
            Frame::Message(m) if m == DISCONNECT => {
                log.push(None);
                return ControlFlow::Break(());
            }
            Frame::Message(m) => Owned::Message(m.to_vec()),
            Frame::Oversize { len } => Owned::Oversize(len),
            Frame::Truncated { message, len } => Owned::Truncated(message.to_vec(), len),
            Frame::Incomplete { len } => Owned::Incomplete(len),
        };
        log.push(Some(owned));
        ControlFlow::Continue(())
    };
    let mut decoder = Decoder::new(config);
    let mut log = Vec::new();
    let mut buffered = Vec::new();
    for chunk in chunks {
        let flow = if run {
            match decoder.decode_run(chunk, |f| record(&mut log, f)) {
                ControlFlow::Continue(Some(lines)) => {
                    log.extend(lines.messages().map(|m| Some(Owned::Message(m.to_vec()))));
                    ControlFlow::Continue(())
                }
                ControlFlow::Continue(None) => ControlFlow::Continue(()),
                ControlFlow::Break(()) => ControlFlow::Break(()),
            }
        } else {
            decoder.decode(chunk, |f| record(&mut log, f))
        };
        buffered.push(decoder.buffered());
        if flow.is_break() {
            return (log, buffered);
        }
    }
    let _ = decoder.finish(|f| record(&mut log, f));
    buffered.push(decoder.buffered());
    (log, buffered)
}

/// Runs are invisible: decoding through `decode_run` sees the same frames, in the
/// same order, as `decode` alone, for the same splits as [`check_skim`].
pub fn check_run(case: &Case<'_>) {
    for chunks in &shortcut_splits(case) {
        assert_eq!(
            frames(&case.config, chunks, true),
            frames(&case.config, chunks, false),
            "reads of {:?} bytes",
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
        );
    }
}
