//! The request side of the metrics responder, sans-IO: the bytes received so far
//! in, what to answer out. Parsing is httparse's (the parser hyper uses); what is
//! ours is only the policy: `GET`/`HEAD` of `/metrics` (any query) is the page, any
//! other path 404, any other method 405, a head past [`MAX_REQUEST`] bytes or
//! [`MAX_HEADERS`] headers 431, anything httparse rejects 400.

/// The longest request head (request line and headers) read before answering 431.
pub const MAX_REQUEST: usize = 8 * 1024;
/// More headers than this is 431: scrapers send a handful.
pub const MAX_HEADERS: usize = 32;

/// What a request asks for, or why it cannot be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Metrics { head: bool },
    BadRequest,
    NotFound,
    MethodNotAllowed,
    TooLarge,
}

/// Judges the request from the bytes received so far: `None` while its head is
/// incomplete (read more). Bytes after the head are never looked at, so once an
/// answer is decided, more bytes cannot change it.
pub fn judge(received: &[u8]) -> Option<Answer> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(received) {
        Ok(httparse::Status::Partial) if received.len() > MAX_REQUEST => Some(Answer::TooLarge),
        Ok(httparse::Status::Partial) => None,
        Ok(httparse::Status::Complete(len)) if len > MAX_REQUEST => Some(Answer::TooLarge),
        Err(httparse::Error::TooManyHeaders) => Some(Answer::TooLarge),
        Err(_) => Some(Answer::BadRequest),
        Ok(httparse::Status::Complete(_)) => Some(route(request.method, request.path)),
    }
}

/// The answer to a well-formed request.
fn route(method: Option<&str>, target: Option<&str>) -> Answer {
    let Some(path) = target.filter(|t| t.starts_with('/')) else {
        return Answer::BadRequest;
    };
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path != "/metrics" {
        return Answer::NotFound;
    }
    match method {
        Some("GET") => Answer::Metrics { head: false },
        Some("HEAD") => Answer::Metrics { head: true },
        _ => Answer::MethodNotAllowed,
    }
}

/// The whole response to `answer`; `page` renders the metrics only when asked for.
pub fn response(answer: Answer, page: impl FnOnce() -> String) -> Vec<u8> {
    let (status, body, head) = match answer {
        Answer::Metrics { head } => ("200 OK", page(), head),
        Answer::BadRequest => ("400 Bad Request", "bad request\n".into(), false),
        Answer::NotFound => ("404 Not Found", "not found: try /metrics\n".into(), false),
        Answer::MethodNotAllowed => (
            "405 Method Not Allowed",
            "method not allowed\n".into(),
            false,
        ),
        Answer::TooLarge => (
            "431 Request Header Fields Too Large",
            "request too large\n".into(),
            false,
        ),
    };
    let content_type = match answer {
        Answer::Metrics { .. } => "text/plain; version=0.0.4; charset=utf-8",
        _ => "text/plain",
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if answer == Answer::MethodNotAllowed {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head {
        out.push_str(&body);
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_judged() {
        let metrics = Some(Answer::Metrics { head: false });
        assert_eq!(judge(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), metrics);
        assert_eq!(judge(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), metrics);
        assert_eq!(judge(b"GET /metrics HTTP/1.1\n\n"), metrics);
        assert_eq!(
            judge(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Some(Answer::Metrics { head: true })
        );
        assert_eq!(judge(b"GET / HTTP/1.1\r\n\r\n"), Some(Answer::NotFound));
        assert_eq!(
            judge(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Answer::MethodNotAllowed)
        );
        for bad in [
            &b"hello\r\n\r\n"[..],
            b"GET /metrics\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
            b"GET /met\x01rics HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(judge(bad), Some(Answer::BadRequest), "{bad:?}");
        }
        assert_eq!(judge(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        let many = format!(
            "GET /metrics HTTP/1.1\r\n{}\r\n",
            "a: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(judge(many.as_bytes()), Some(Answer::TooLarge));
        let long = format!("GET /metrics HTTP/1.1\r\nx: {}", "y".repeat(MAX_REQUEST));
        assert_eq!(judge(long.as_bytes()), Some(Answer::TooLarge));
    }

    /// The responder judges after every read: a request split anywhere gets the
    /// answer it gets whole, and no prefix of it is judged differently.
    #[test]
    fn every_split_point_gets_the_same_answer() {
        for request in [
            &b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"[..],
            b"HEAD /nope HTTP/1.0\n\n",
            b"GET /metrics HTTP/1.1\r\nbad header\r\n\r\n",
        ] {
            let whole = judge(request);
            assert!(whole.is_some());
            for cut in 0..request.len() {
                let early = judge(&request[..cut]);
                assert!(early.is_none() || early == whole, "cut at {cut}: {early:?}");
            }
        }
    }

    #[test]
    fn responses_are_whole() {
        let ok = response(Answer::Metrics { head: false }, || "a 1\n".into());
        assert!(ok.ends_with(b"Content-Length: 4\r\nConnection: close\r\n\r\na 1\n"));
        let head = response(Answer::Metrics { head: true }, || "a 1\n".into());
        assert!(head.ends_with(b"\r\n\r\n"));
        let refused = String::from_utf8(response(Answer::MethodNotAllowed, String::new)).unwrap();
        assert!(refused.starts_with("HTTP/1.1 405 ") && refused.contains("Allow: GET, HEAD"));
    }
}
