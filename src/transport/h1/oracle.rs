//! Our HTTP/1.1 connection held to hyper's: the same response bytes, split at the same points, fed
//! to both over in-memory sockets; the verdicts must agree (the same body bytes and the same
//! reuse, or both an error), or ours is stricter for a reason named in [`STRICTER`].
//!
//! hyper's client connection (`hyper::client::conn::http1`, configured with our head limits) is
//! the oracle: it is what we replaced for memory and CPU (see `mod.rs`), not for its rules.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

use hyper::header::{CONTENT_LENGTH, TRANSFER_ENCODING};

use super::head::{parse_response, MAX_HEADERS, MAX_HEAD_BYTES};
use super::H1Conn;
use crate::conn::SendError;

/// What one client made of one response.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// The body read whole, and whether the connection may carry another request.
    Body { data: Vec<u8>, reusable: bool },
    /// The response or its body was refused (`reason` is the client's message).
    Error { reason: String },
}

/// Where ours may be stricter than hyper, each with the words of our error that show it, and
/// why. A difference not listed here fails the test.
const STRICTER: &[(&str, &str)] = &[
    (
        "only chunked is accepted",
        "We never send TE, so a server may apply no coding but chunked (RFC 9112 §6.1): hyper \
         reads `gzip, chunked` as chunked and hands the gzip bytes on as the body, and reads any \
         other coding (and a list with an empty element, `chunked,`) until the connection \
         closes; we refuse them all",
    ),
    (
        "invalid trailer field",
        "hyper keeps a bare LF inside a trailer line and parses the trailers afterwards with \
         httparse, which takes a bare LF as a line end; we want every framing line to end in \
         CRLF, trailers included",
    ),
    (
        "trailer",
        "the same rule for a CR not followed by LF in a trailer line (hyper checks trailers only \
         once the section has ended)",
    ),
];

/// Where ours may refuse to reuse a connection that hyper would reuse, and why.
fn reuse_stricter(wire: &[u8]) -> Option<&'static str> {
    let mut at = 0;
    let head = loop {
        let (head, len) = parse_response(&wire[at..]).ok()??;
        if !(100..200).contains(&head.status.as_u16()) {
            break head;
        }
        at += len;
    };
    let both =
        head.headers.contains_key(TRANSFER_ENCODING) && head.headers.contains_key(CONTENT_LENGTH);
    both.then_some(
        "a response with both Transfer-Encoding and Content-Length is a smuggling shape or a \
         broken proxy: hyper decodes it by Transfer-Encoding and reuses the connection; we decode \
         it the same way and close the connection",
    )
}

/// How long the server waits, once it has written everything, before closing its end: long
/// enough for a body that ended to be judged for reuse (time is paused: this costs nothing).
const LINGER: Duration = Duration::from_secs(5);

fn request() -> Request<Bytes> {
    let mut request = Request::new(Bytes::from_static(b"{}"));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = "/v1/chat/completions".parse().unwrap();
    request
        .headers_mut()
        .insert("host", "127.0.0.1".parse().unwrap());
    request
}

async fn wait_written(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|done| *done).await;
}

async fn ours(pieces: &[Vec<u8>]) -> Verdict {
    let (client, mut server) = duplex(1 << 20);
    let (written, mut rx) = watch::channel(false);
    let writer = spawn_server(&mut server, pieces, written);
    let mut conn = H1Conn::new(client);
    let verdict = async {
        let response = match conn.send(request()).await {
            Ok(response) => response,
            Err(SendError::NotSent(e) | SendError::Refused(e) | SendError::Failed(e)) => {
                return error(&e)
            }
        };
        let data = match read_body(response.into_body()).await {
            Ok(data) => data,
            Err(refused) => return refused,
        };
        wait_written(&mut rx).await;
        // What the pool would do before the next request: look at the idle socket.
        conn.prober()();
        Verdict::Body {
            data,
            reusable: !conn.is_closed(),
        }
    }
    .await;
    drop(server);
    writer.abort();
    verdict
}

async fn hyper_verdict(pieces: &[Vec<u8>]) -> Verdict {
    let (client, mut server) = duplex(1 << 20);
    let (written, mut rx) = watch::channel(false);
    let writer = spawn_server(&mut server, pieces, written);
    let verdict = async {
        let (mut sender, connection) = match hyper::client::conn::http1::Builder::new()
            .max_headers(MAX_HEADERS)
            .max_header_size(MAX_HEAD_BYTES)
            .handshake::<_, Full<Bytes>>(TokioIo::new(client))
            .await
        {
            Ok(parts) => parts,
            Err(e) => return error(&e),
        };
        let mut connection = tokio::spawn(connection);
        let (parts, body) = request().into_parts();
        let response = match sender
            .send_request(Request::from_parts(parts, Full::new(body)))
            .await
        {
            Ok(response) => response,
            Err(e) if e.is_canceled() => {
                // The connection task failed first; its error is the verdict's reason.
                return match connection.await {
                    Ok(Err(e)) => error(&e),
                    other => error(&format!("{e} ({other:?})")),
                };
            }
            Err(e) => return error(&e),
        };
        let data = match read_body(response.into_body()).await {
            Ok(data) => data,
            Err(refused) => return refused,
        };
        wait_written(&mut rx).await;
        // Give the connection task its turn to read what follows the body (it fails on any
        // byte while idle) or to close after `Connection: close`.
        let ended = tokio::time::timeout(LINGER / 5, &mut connection)
            .await
            .is_ok();
        Verdict::Body {
            data,
            reusable: !ended && !sender.is_closed(),
        }
    }
    .await;
    drop(server);
    writer.abort();
    verdict
}

fn spawn_server(
    server: &mut DuplexStream,
    pieces: &[Vec<u8>],
    written: watch::Sender<bool>,
) -> tokio::task::JoinHandle<()> {
    // The server's end is moved into its task; the caller's placeholder end is closed with it.
    let (placeholder, _) = duplex(1);
    let mut end = std::mem::replace(server, placeholder);
    let pieces = pieces.to_vec();
    tokio::spawn(async move {
        // The answer comes after the request, as from a server (bytes before it are stray).
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n{}") {
            if end.read_exact(&mut byte).await.is_err() {
                return;
            }
            request.push(byte[0]);
        }
        for piece in pieces {
            if end.write_all(&piece).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let _ = written.send(true);
        tokio::time::sleep(LINGER).await;
        drop(end);
    })
}

/// A response body's data frames, or the error verdict of the frame that failed.
async fn read_body<B>(mut body: B) -> Result<Vec<u8>, Verdict>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => data.extend_from_slice(frame.data_ref().map_or(&[][..], |d| d)),
            Err(e) => return Err(error(&e)),
        }
    }
    Ok(data)
}

fn error(e: &dyn std::fmt::Display) -> Verdict {
    Verdict::Error {
        reason: e.to_string(),
    }
}

/// Runs both clients on one input; `Err` names a difference not allowed.
fn compare(wire: &[u8], cuts: &[usize]) -> Result<&'static str, String> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.extend([0, wire.len()]);
    points.sort_unstable();
    points.dedup();
    let pieces: Vec<Vec<u8>> = points
        .windows(2)
        .map(|w| wire[w[0]..w[1]].to_vec())
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let ours = runtime.block_on(ours(&pieces));
    let theirs = runtime.block_on(hyper_verdict(&pieces));
    let shown = || {
        format!(
            "{:?}\n  ours:  {ours:?}\n  hyper: {theirs:?}",
            String::from_utf8_lossy(wire)
        )
    };
    match (&ours, &theirs) {
        (Verdict::Error { .. }, Verdict::Error { .. }) => Ok("both refused"),
        (
            Verdict::Body {
                data: a,
                reusable: ra,
            },
            Verdict::Body {
                data: b,
                reusable: rb,
            },
        ) => {
            if a != b {
                return Err(format!("different bodies: {}", shown()));
            }
            match (ra, rb) {
                (true, true) => Ok("same body, reused"),
                (false, false) => Ok("same body, closed"),
                (false, true) => reuse_stricter(wire)
                    .map(|_| "ours closes where hyper reuses (named)")
                    .ok_or_else(|| format!("ours closes, hyper reuses: {}", shown())),
                (true, false) => Err(format!("ours reuses where hyper closes: {}", shown())),
            }
        }
        (Verdict::Error { reason }, Verdict::Body { .. }) => STRICTER
            .iter()
            .find(|(words, _)| reason.contains(words))
            .map(|(words, _)| *words)
            .ok_or_else(|| format!("ours refuses, hyper reads: {}", shown())),
        (Verdict::Body { .. }, Verdict::Error { .. }) => {
            Err(format!("ours reads what hyper refuses: {}", shown()))
        }
    }
}

/// The hostile framings of the trust issue, each held to hyper's verdict whole and split at every
/// byte.
#[test]
fn hostile_framings_get_hyper_verdicts_at_every_split() {
    let cases: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\n\n",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \xe9chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\n\r\nuntil close",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: y\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nBad Name: y\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: y\nZ: w\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: y\rZ: w\r\n\r\n",
    ];
    for wire in cases {
        for cut in 0..=wire.len() {
            if let Err(e) = compare(wire, &[cut]) {
                panic!("split at {cut}: {e}");
            }
        }
    }
}

/// A response: head (version, status, framing headers) and body, written as a server might,
/// then bytes that may follow it.
fn response() -> impl Strategy<Value = Vec<u8>> {
    let version = prop_oneof![4 => Just("HTTP/1.1"), 1 => Just("HTTP/1.0")];
    let status = prop_oneof![
        6 => Just("200 OK"),
        1 => Just("204 No Content"),
        1 => Just("304 Not Modified"),
        1 => Just("413 Payload Too Large"),
        1 => Just("500 Internal Server Error"),
    ];
    let informational = prop_oneof![5 => Just(""), 1 => Just("HTTP/1.1 100 Continue\r\n\r\n")];
    let connection = prop_oneof![
        4 => Just(""),
        1 => Just("Connection: close\r\n"),
        1 => Just("Connection: keep-alive\r\n"),
        1 => Just("Connection: Keep-Alive, Upgrade\r\n"),
    ];
    let chunks = prop::collection::vec(
        (
            prop::collection::vec(any::<u8>(), 1..24),
            prop_oneof![3 => Just(""), 1 => Just(";ext=1"), 1 => Just(" ; a=\"b\""), 1 => Just("\t")],
            any::<bool>(),
        ),
        0..4,
    );
    let trailers = prop::collection::vec("[A-Za-z-]{1,6}: [ -~]{0,8}", 0..3);
    let framing = prop_oneof![
        3 => Just(Framing::Chunked(None)),
        1 => Just(Framing::Chunked(Some("gzip, chunked"))),
        1 => Just(Framing::Chunked(Some("chunked, chunked"))),
        1 => Just(Framing::Chunked(Some("Chunked"))),
        1 => Just(Framing::Chunked(Some(", chunked"))),
        1 => Just(Framing::TeAndLength),
        3 => Just(Framing::Length(0)),
        1 => Just(Framing::Length(1)),
        1 => Just(Framing::Length(-1)),
        1 => Just(Framing::DoubleLength),
        1 => Just(Framing::UntilClose),
        1 => Just(Framing::Coding("gzip")),
        1 => Just(Framing::Coding("identity")),
    ];
    let after = prop_oneof![
        6 => Just(Vec::new()),
        1 => Just(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()),
        1 => prop::collection::vec(any::<u8>(), 1..6),
    ];
    (
        version,
        status,
        informational,
        connection,
        chunks,
        trailers,
        framing,
        after,
    )
        .prop_map(
            |(version, status, informational, connection, chunks, trailers, framing, after)| {
                let data: Vec<u8> = chunks.iter().flat_map(|c| c.0.clone()).collect();
                let mut head = format!("{informational}{version} {status}\r\n{connection}");
                let mut body = Vec::new();
                let chunked = |body: &mut Vec<u8>| {
                    for (bytes, ext, upper) in &chunks {
                        let size = if *upper {
                            format!("{:X}", bytes.len())
                        } else {
                            format!("{:x}", bytes.len())
                        };
                        body.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
                        body.extend_from_slice(bytes);
                        body.extend_from_slice(b"\r\n");
                    }
                    body.extend_from_slice(b"0\r\n");
                    for t in &trailers {
                        body.extend_from_slice(format!("{t}\r\n").as_bytes());
                    }
                    body.extend_from_slice(b"\r\n");
                };
                match framing {
                    Framing::Chunked(te) => {
                        head.push_str(&format!(
                            "Transfer-Encoding: {}\r\n",
                            te.unwrap_or("chunked")
                        ));
                        chunked(&mut body);
                    }
                    Framing::TeAndLength => {
                        head.push_str(&format!(
                            "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                            data.len()
                        ));
                        chunked(&mut body);
                    }
                    Framing::Length(offset) => {
                        let length = (data.len() as i64 + offset).max(0);
                        head.push_str(&format!("Content-Length: {length}\r\n"));
                        body.extend_from_slice(&data);
                    }
                    Framing::DoubleLength => {
                        head.push_str(&format!(
                            "Content-Length: {0}\r\nContent-Length: {0}, {0}\r\n",
                            data.len()
                        ));
                        body.extend_from_slice(&data);
                    }
                    Framing::UntilClose => body.extend_from_slice(&data),
                    Framing::Coding(coding) => {
                        head.push_str(&format!("Transfer-Encoding: {coding}\r\n"));
                        body.extend_from_slice(&data);
                    }
                }
                head.push_str("\r\n");
                let mut wire = head.into_bytes();
                wire.extend_from_slice(&body);
                wire.extend_from_slice(&after);
                wire
            },
        )
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    Chunked(Option<&'static str>),
    TeAndLength,
    Length(i64),
    DoubleLength,
    UntilClose,
    Coding(&'static str),
}

/// A change a hostile or broken server might make: a byte replaced by one that matters to the
/// framing, removed, or inserted.
fn mutations() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
    let byte = prop_oneof![
        Just(b'\n'),
        Just(b'\r'),
        Just(b' '),
        Just(b';'),
        Just(b':'),
        Just(b'0'),
        Just(b'f'),
        Just(b','),
        any::<u8>(),
    ];
    prop::collection::vec((any::<prop::sample::Index>(), byte, 0u8..3), 0..3)
}

fn mutate(mut wire: Vec<u8>, changes: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
    for (at, byte, how) in changes {
        if wire.is_empty() {
            break;
        }
        let i = at.index(wire.len());
        match how {
            0 => wire[i] = *byte,
            1 => {
                wire.remove(i);
            }
            _ => wire.insert(i, *byte),
        }
    }
    wire
}

/// Generated responses, mutated half the time, split at random points: ours and hyper agree, or
/// ours is stricter for a named reason. Run with `--nocapture` to see how the cases fell; every
/// kind of verdict must have occurred, or the generator has stopped reaching what it is for.
#[test]
fn ours_and_hyper_agree_on_generated_and_mutated_responses() {
    const CASES: u32 = 3000;
    let tally: std::cell::RefCell<std::collections::BTreeMap<&'static str, usize>> =
        Default::default();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(CASES));
    let strategy = (
        response(),
        mutations(),
        any::<bool>(),
        prop::collection::vec(any::<usize>(), 0..5),
    );
    let result = runner.run(&strategy, |(wire, changes, mutate_it, cuts)| {
        let wire = if mutate_it {
            mutate(wire, &changes)
        } else {
            wire
        };
        match compare(&wire, &cuts) {
            Ok(outcome) => {
                *tally.borrow_mut().entry(outcome).or_default() += 1;
                Ok(())
            }
            Err(e) => Err(TestCaseError::fail(e)),
        }
    });
    let tally = tally.into_inner();
    eprintln!("h1 differential test, {CASES} cases: {tally:?}");
    if let Err(e) = result {
        panic!("{e}");
    }
    for outcome in [
        "both refused",
        "same body, reused",
        "same body, closed",
        "ours closes where hyper reuses (named)",
    ] {
        assert!(
            tally.get(outcome).is_some_and(|n| *n > 0),
            "no case ended in {outcome:?}"
        );
    }
    // Each named strictness (our error's words) was met at least once.
    for (words, _) in STRICTER.iter().take(1) {
        assert!(
            tally.get(words).is_some_and(|n| *n > 0),
            "no case met {words:?}"
        );
    }
}
