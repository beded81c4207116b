//! The batch format for destinations that publish each message on its own (NATS):
//! workers encode records instead of text lines, and the writer decodes them and
//! builds one NATS message per record. Like text, the fields are formatted on the
//! worker (the timestamp from its [`Clock`]); unlike text, the payload is kept
//! exactly as received.
//!
//! A record: `u32` length of the rest (little-endian), then four fields each as a
//! `u16` length and bytes — timestamp, proto, peer, connection id (empty for
//! datagrams) — then the payload up to the end.

use crate::message::Message;

use super::clock::Clock;

/// One decoded record, borrowed from its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub ts: &'a [u8],
    pub proto: &'a [u8],
    pub peer: &'a [u8],
    /// The connection id in decimal; empty for datagrams.
    pub conn: &'a [u8],
    pub payload: &'a [u8],
}

/// Appends the record for `message`.
pub fn write(message: &Message<'_>, clock: &mut Clock, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let ts_at = out.len();
    out.extend_from_slice(&[0; 2]);
    clock.write(message.received_at, out);
    let ts_len = out.len() - ts_at - 2;
    set_u16(out, ts_at, ts_len);
    field(out, message.proto.as_str().as_bytes());
    field(out, message.peer.as_str().as_bytes());
    match message.conn {
        Some(conn) => field(out, itoa::Buffer::new().format(conn).as_bytes()),
        None => field(out, b""),
    }
    out.extend_from_slice(message.bytes);
    let len = out.len() - start - 4;
    // A message is at most --max-frame (64 MiB) long, so the record fits a u32.
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes();
    out[start..start + 4].copy_from_slice(&len);
}

fn set_u16(out: &mut [u8], at: usize, len: usize) {
    let len = u16::try_from(len).unwrap_or(u16::MAX).to_le_bytes();
    out[at..at + 2].copy_from_slice(&len);
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    // Fields are short (a peer address is under 64 bytes); cut rather than corrupt.
    let bytes = &bytes[..bytes.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The records of a batch, in order. A malformed tail (which the workers never
/// write) ends the iteration.
pub fn records(batch: &[u8]) -> Records<'_> {
    Records { rest: batch }
}

/// Iterator over a batch's records.
#[derive(Debug)]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Records<'a> {
    /// The next record whole, as encoded (to be kept and [`parse`]d again later).
    pub fn next_encoded(&mut self) -> Option<&'a [u8]> {
        let (len, _) = take_u32(self.rest)?;
        let whole = self.rest.get(..4 + len)?;
        parse(whole)?;
        self.rest = &self.rest[whole.len()..];
        Some(whole)
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        self.next_encoded().and_then(parse)
    }
}

/// Decodes one whole record (as [`Records::next_encoded`] gives it).
pub fn parse(encoded: &[u8]) -> Option<Record<'_>> {
    let (len, body) = take_u32(encoded)?;
    if body.len() != len {
        return None;
    }
    let (ts, body) = take_field(body)?;
    let (proto, body) = take_field(body)?;
    let (peer, body) = take_field(body)?;
    let (conn, payload) = take_field(body)?;
    Some(Record {
        ts,
        proto,
        peer,
        conn,
        payload,
    })
}

fn take_u32(buf: &[u8]) -> Option<(usize, &[u8])> {
    let (head, rest) = buf.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*head) as usize, rest))
}

fn take_field(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (head, rest) = buf.split_first_chunk::<2>()?;
    let len = u16::from_le_bytes(*head) as usize;
    Some((rest.get(..len)?, rest.get(len..)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Peer, Proto};
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    proptest! {
        #[test]
        fn records_round_trip(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
            conn in proptest::option::of(any::<u64>()),
        ) {
            let peer = Peer::new(([127, 0, 0, 1], 4000).into());
            let mut clock = Clock::default();
            let mut batch = Vec::new();
            for bytes in &payloads {
                write(&Message {
                    proto: if conn.is_some() { Proto::Tcp } else { Proto::Udp },
                    peer: &peer,
                    conn,
                    received_at: UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456),
                    bytes,
                }, &mut clock, &mut batch);
            }
            let got: Vec<Record<'_>> = records(&batch).collect();
            prop_assert_eq!(got.len(), payloads.len());
            for (record, bytes) in got.iter().zip(&payloads) {
                prop_assert_eq!(record.payload, &bytes[..]);
                prop_assert_eq!(record.ts, b"2026-11-18T11:06:40.123456Z");
                prop_assert_eq!(record.peer, b"127.0.0.1:4000");
                let conn_text = conn.map(|c| c.to_string()).unwrap_or_default();
                prop_assert_eq!(record.conn, conn_text.as_bytes());
                prop_assert_eq!(record.proto, if conn.is_some() { &b"tcp"[..] } else { &b"udp"[..] });
            }
            // Any cut short of the end loses the last record, never misreads it.
            if let Some(cut) = batch.len().checked_sub(1) {
                prop_assert_eq!(records(&batch[..cut]).count(), payloads.len() - 1);
            }
        }
    }
}
