//! HTTP/1.1 message heads: the request we write, the response head we parse (with httparse, the
//! parser hyper uses), and how the response's body is framed (RFC 9112 §6.3).

use std::io;

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH};
use hyper::{Method, Request, StatusCode, Version};

use crate::conn::Malformed;
use crate::pool::keep_alive::has_token;

/// A response head larger than this is refused (undici's `maxHeaderSize` is 16 KiB; a provider
/// behind a few proxies can add a lot of headers, so more room, but not without bound).
pub const MAX_HEAD_BYTES: usize = 256 * 1024;
/// Header fields one response head may have (hyper's default is 100).
pub const MAX_HEADERS: usize = 128;

/// A request's head, and its body after it when the body is small (one write for both).
pub fn encode_request(request: &Request<Bytes>) -> Vec<u8> {
    let body = request.body();
    let uri = request.uri();
    let target = match (uri.scheme(), uri.path_and_query()) {
        // Through a proxy to an http origin: absolute form.
        (Some(_), _) => uri.to_string(),
        (None, Some(path)) => path.as_str().to_owned(),
        (None, None) => "/".to_owned(),
    };
    let inline_body = body.len() <= INLINE_BODY;
    let mut out = Vec::with_capacity(
        256 + target.len()
            + request
                .headers()
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 4)
                .sum::<usize>()
            + if inline_body { body.len() } else { 0 },
    );
    out.extend_from_slice(request.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        // The body's framing is ours to state, from the body itself.
        if name == CONTENT_LENGTH || name == hyper::header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || expects_body(request.method()) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if inline_body {
        out.extend_from_slice(body);
    }
    out
}

/// Bodies up to this size are copied behind the head and written with it; larger ones are
/// written on their own, uncopied.
pub const INLINE_BODY: usize = 64 * 1024;

/// Methods whose requests carry a body by definition: an empty one is announced as such.
fn expects_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
}

/// Parses a response head at the start of `buf`: `Ok(None)` while it is incomplete, else the
/// head and its length in bytes.
pub fn parse_response(buf: &[u8]) -> io::Result<Option<(ResponseHead, usize)>> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(invalid(format!(
                "response head larger than {MAX_HEAD_BYTES} bytes"
            )))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(invalid(format!(
                "response head with more than {MAX_HEADERS} header fields"
            )))
        }
        Err(e) => return Err(invalid(format!("invalid response head ({e})"))),
    };
    if len > MAX_HEAD_BYTES {
        return Err(invalid(format!(
            "response head larger than {MAX_HEAD_BYTES} bytes"
        )));
    }
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| invalid("invalid response status".into()))?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    for field in response.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| invalid("invalid response header name".into()))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| invalid(format!("invalid value of response header {name}")))?;
        headers.append(name, value);
    }
    Ok(Some((
        ResponseHead {
            status,
            version,
            headers,
        },
        len,
    )))
}

/// How a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a `HEAD` request, 1xx, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// The `chunked` coding.
    Chunked,
    /// Everything until the server closes the connection.
    UntilClose,
}

/// The body's framing, and whether the connection may carry another request after it.
pub fn framing(method: &Method, head: &ResponseHead) -> io::Result<(Framing, bool)> {
    let headers = &head.headers;
    let mut reusable = match head.version {
        // HTTP/1.0 closes after the response unless it says otherwise.
        Version::HTTP_10 => has_token(headers, CONNECTION, "keep-alive"),
        _ => true,
    } && !has_token(headers, CONNECTION, "close");
    let status = head.status.as_u16();
    if *method == Method::HEAD || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok((Framing::Empty, reusable));
    }
    let transfer = headers.get_all(hyper::header::TRANSFER_ENCODING);
    if transfer.iter().next().is_some() {
        // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing (hyper
        // refuses it too): whatever we read after it could be the start of another message.
        if head.version == Version::HTTP_10 {
            return Err(invalid("Transfer-Encoding in an HTTP/1.0 response".into()));
        }
        if !is_only_chunked(&transfer) {
            return Err(invalid(
                "unsupported Transfer-Encoding (only chunked is accepted)".into(),
            ));
        }
        // A message with both is a smuggling attempt or a broken proxy: decode it by its
        // Transfer-Encoding (the rule), never reuse the connection.
        if headers.contains_key(CONTENT_LENGTH) {
            reusable = false;
        }
        return Ok((Framing::Chunked, reusable));
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let part = part.trim_ascii();
            let parsed = std::str::from_utf8(part)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| invalid("invalid Content-Length".into()))?;
            if length.is_some_and(|l| l != parsed) {
                return Err(invalid("conflicting Content-Length values".into()));
            }
            length = Some(parsed);
        }
    }
    Ok(match length {
        Some(0) => (Framing::Empty, reusable),
        Some(n) => (Framing::Length(n), reusable),
        None => (Framing::UntilClose, false),
    })
}

/// True when the Transfer-Encoding fields name exactly one coding, `chunked`. We never send `TE`,
/// so a server may apply no other coding (RFC 9112 §6.1); one that does (`gzip, chunked`) would
/// hand us bytes we do not decode. A value that is not visible ASCII is refused, not skipped.
fn is_only_chunked(transfer: &hyper::header::GetAll<'_, HeaderValue>) -> bool {
    let mut codings = 0;
    for value in transfer {
        let Ok(text) = value.to_str() else {
            return false;
        };
        if text
            .bytes()
            .any(|b| !(b == b'\t' || (b' '..=b'~').contains(&b)))
        {
            return false;
        }
        for coding in text.split(',').map(str::trim) {
            // Empty list elements are allowed by RFC 9110 §5.6.1, but no server sends them and
            // hyper reads `chunked,` as ending in another coding: refused rather than guessed.
            if !coding.eq_ignore_ascii_case("chunked") {
                return false;
            }
            codings += 1;
        }
    }
    codings == 1
}

/// A malformed answer, as the connection reports it (see [`Malformed`]).
pub fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Malformed(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> ResponseHead {
        parse_response(raw.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn requests_are_written_in_origin_or_absolute_form_with_their_length() {
        let mut request = Request::new(Bytes::from_static(b"{}"));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = "/v1/chat/completions?x=1".parse().unwrap();
        request
            .headers_mut()
            .insert("host", HeaderValue::from_static("h:1"));
        request
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
        assert_eq!(
            String::from_utf8(encode_request(&request)).unwrap(),
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: h:1\r\ncontent-length: 2\r\n\r\n{}"
        );
        let mut get = Request::new(Bytes::new());
        *get.uri_mut() = "http://h:1/v1/models".parse().unwrap();
        assert_eq!(
            String::from_utf8(encode_request(&get)).unwrap(),
            "GET http://h:1/v1/models HTTP/1.1\r\n\r\n"
        );
        let mut empty_post = Request::new(Bytes::new());
        *empty_post.method_mut() = Method::POST;
        *empty_post.uri_mut() = "/x".parse().unwrap();
        assert!(String::from_utf8(encode_request(&empty_post))
            .unwrap()
            .contains("content-length: 0\r\n"));
    }

    #[test]
    fn a_large_body_is_not_copied_behind_the_head() {
        let mut request = Request::new(Bytes::from(vec![b'x'; INLINE_BODY + 1]));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = "/x".parse().unwrap();
        let head = encode_request(&request);
        assert!(head.ends_with(format!("content-length: {}\r\n\r\n", INLINE_BODY + 1).as_bytes()));
    }

    #[test]
    fn heads_parse_incrementally() {
        let raw =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-A: 1\r\nX-A: 2\r\n\r\nbody";
        for cut in 0..raw.len() - 4 {
            assert!(parse_response(&raw[..cut]).unwrap().is_none(), "{cut}");
        }
        let (head, len) = parse_response(raw).unwrap().unwrap();
        assert_eq!(&raw[len..], b"body");
        assert_eq!(head.status, 200);
        assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
    }

    #[test]
    fn hostile_heads_are_refused() {
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        let endless = format!("HTTP/1.1 200 OK\r\nX: {}", "y".repeat(MAX_HEAD_BYTES + 1));
        for raw in [
            "HTTP/1.1 2000 OK\r\n\r\n",
            "SMTP 220 hello\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            many.as_str(),
            endless.as_str(),
        ] {
            assert!(parse_response(raw.as_bytes()).is_err(), "{raw:.40}");
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let post = Method::POST;
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                (Framing::Length(5), true),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
                (Framing::Length(5), true),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                (Framing::Empty, true),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                (Framing::Chunked, true),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n",
                (Framing::Chunked, true),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                (Framing::Chunked, false),
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", (Framing::UntilClose, false)),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n",
                (Framing::Empty, true),
            ),
            ("HTTP/1.1 304 Not Modified\r\n\r\n", (Framing::Empty, true)),
            (
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                (Framing::Length(1), false),
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                (Framing::Length(1), false),
            ),
            (
                "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n",
                (Framing::Length(1), true),
            ),
        ];
        for (raw, expected) in cases {
            assert_eq!(framing(&post, &head(raw)).unwrap(), expected, "{raw}");
        }
        let ok = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(framing(&Method::HEAD, &ok).unwrap(), (Framing::Empty, true));
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: , chunked,\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: ch\u{e9}unked\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(framing(&post, &head(raw)).is_err(), "{raw}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Arbitrary bytes never panic the parser or the framing rules.
            #[test]
            fn arbitrary_heads_never_panic(raw in prop::collection::vec(any::<u8>(), 0..300)) {
                if let Ok(Some((head, len))) = parse_response(&raw) {
                    prop_assert!(len <= raw.len());
                    let _ = framing(&Method::POST, &head);
                }
            }

            /// A head built from arbitrary header fields parses back to them, and any prefix of
            /// it is incomplete, never an error.
            #[test]
            fn heads_round_trip_and_prefixes_wait(
                status in 200u16..600,
                fields in prop::collection::vec(("[a-zA-Z][a-zA-Z0-9-]{0,15}", "[ -~]{0,40}"), 0..12),
            ) {
                let mut raw = format!("HTTP/1.1 {status} Whatever\r\n");
                for (name, value) in &fields {
                    raw.push_str(&format!("{name}: {value}\r\n"));
                }
                raw.push_str("\r\n");
                let (head, len) = parse_response(raw.as_bytes()).unwrap().unwrap();
                prop_assert_eq!(len, raw.len());
                prop_assert_eq!(head.status.as_u16(), status);
                prop_assert_eq!(head.headers.len(), fields.len());
                for (name, value) in &fields {
                    let found = head.headers.get_all(name.as_str()).iter().any(|v| v.as_bytes() == value.trim().as_bytes());
                    prop_assert!(found, "{}: {:?}", name, value);
                }
                for cut in 0..raw.len() {
                    prop_assert!(parse_response(&raw.as_bytes()[..cut]).unwrap().is_none());
                }
            }
        }
    }
}
