//! The metrics responder's request path (`server::metrics::http`): whatever the
//! bytes, judging them never panics; the answer the responder decides after some
//! read is the one the whole request gets (more bytes never change a decided
//! answer, as the responder judges after every read); the page is only ever
//! served for `GET`/`HEAD` of `/metrics`; and every response is well-formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockpool::server::metrics::http::{Answer, MAX_REQUEST, judge, response};

fuzz_target!(|data: &[u8]| {
    // What the responder holds: at most MAX_REQUEST + 1 bytes.
    let data = data.get(..MAX_REQUEST + 1).unwrap_or(data);
    let whole = judge(data);
    // The first byte of input selects cut points: a read of every length 1..=16.
    let step = usize::from(data.first().copied().unwrap_or(1) % 16) + 1;
    let mut decided = None;
    let mut end = 0;
    while end < data.len() && decided.is_none() {
        end = (end + step).min(data.len());
        decided = judge(&data[..end]);
    }
    if let Some(early) = decided {
        assert_eq!(Some(early), whole, "decided after {end} bytes");
    }
    if data.len() > MAX_REQUEST {
        assert!(whole.is_some(), "a full buffer must be answered");
    }
    if let Some(answer) = whole {
        if let Answer::Metrics { .. } = answer {
            let text = String::from_utf8_lossy(data);
            assert!(
                text.starts_with("GET /metrics") || text.starts_with("HEAD /metrics"),
                "{text:?}"
            );
        }
        let out = response(answer, || "page 1\n".into());
        let text = String::from_utf8(out).expect("responses are text");
        assert!(text.starts_with("HTTP/1.1 ") && text.contains("Connection: close\r\n"));
    }
});
