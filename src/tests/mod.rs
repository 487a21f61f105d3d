//! The attempt loop, the resend rule and the stream reader, tested through `Client` with fake
//! connections and paused time: each fake connection answers from a shared script, and records
//! which requests the "server" received (a request counts as received once it was written).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use hyper::{Request, Response};
use serde_json::json;
use tokio::sync::mpsc;

use crate::client::Client;
use crate::config::CallOptions;
use crate::conn::{Connection, SendError};
use crate::error::Error;
use crate::pool::Connect;
use crate::router::config::RouterConfig;
use crate::router::{Router, Target};
use crate::stream::{Delivery, WINDOW_BYTES};

/// One step of a scripted response body.
#[derive(Clone)]
enum Step {
    Data(&'static str),
    Big(usize),
    Wait(u64),
    Reset,
}

/// What the fake server does with the next request sent.
#[derive(Clone)]
enum Answer {
    /// The connection was closed before the request was written.
    NotSent,
    /// The server refused the stream (HTTP/2 `REFUSED_STREAM`): not processed.
    Refused,
    /// The request was written, then the answer broke HTTP.
    Malformed,
    /// The request was written, then the connection reset with no response byte.
    ResetAfterWrite,
    /// Headers after `delay` ms, then the body steps.
    Reply {
        delay: u64,
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<Step>,
    },
}

fn ok_json(body: &'static str) -> Answer {
    Answer::Reply {
        delay: 0,
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        body: vec![Step::Data(body)],
    }
}

fn status(code: u16, headers: Vec<(&'static str, String)>) -> Answer {
    Answer::Reply {
        delay: 0,
        status: code,
        headers,
        body: vec![Step::Data(r#"{"error":{"message":"nope"}}"#)],
    }
}

fn sse(delay: u64, body: Vec<Step>) -> Answer {
    Answer::Reply {
        delay,
        status: 200,
        headers: vec![("content-type", "text/event-stream".into())],
        body,
    }
}

const COMPLETION: &str =
    r#"{"choices":[{"index":0,"message":{"content":"hi"},"finish_reason":"stop"}]}"#;
const CHUNK: &str =
    "data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":null}]}\n\n";
const LAST: &str =
    "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";

#[derive(Default)]
struct Server {
    script: Mutex<VecDeque<Answer>>,
    /// Requests that reached the server (were written).
    received: AtomicUsize,
    opened: AtomicUsize,
}

#[derive(Clone, Default)]
struct FakeConnector(Arc<Server>);

struct FakeConn {
    server: Arc<Server>,
}

struct FakeBody(mpsc::UnboundedReceiver<Result<Bytes, io::Error>>);

impl Body for FakeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

impl Connect for FakeConnector {
    type Conn = FakeConn;

    fn connect(&self) -> impl std::future::Future<Output = Result<FakeConn, Error>> + Send {
        self.0.opened.fetch_add(1, Ordering::SeqCst);
        let server = self.0.clone();
        async move { Ok(FakeConn { server }) }
    }

    fn is_closed(_: &FakeConn) -> bool {
        false
    }
}

impl Connection for FakeConn {
    type Body = FakeBody;

    fn send(
        &mut self,
        _request: Request<Bytes>,
    ) -> impl std::future::Future<Output = Result<Response<FakeBody>, SendError>> + Send {
        let server = self.server.clone();
        async move {
            let answer = server
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| ok_json(COMPLETION));
            match answer {
                Answer::NotSent => Err(SendError::NotSent(Box::new(io::Error::from(
                    io::ErrorKind::BrokenPipe,
                )))),
                Answer::Refused => Err(SendError::Refused(Box::new(io::Error::other(
                    "stream refused",
                )))),
                Answer::Malformed => {
                    server.received.fetch_add(1, Ordering::SeqCst);
                    Err(SendError::Failed(Box::new(io::Error::new(
                        io::ErrorKind::InvalidData,
                        crate::conn::Malformed("invalid chunked body: bare LF".into()),
                    ))))
                }
                Answer::ResetAfterWrite => {
                    server.received.fetch_add(1, Ordering::SeqCst);
                    Err(SendError::Failed(Box::new(io::Error::from(
                        io::ErrorKind::ConnectionReset,
                    ))))
                }
                Answer::Reply {
                    delay,
                    status,
                    headers,
                    body,
                } => {
                    server.received.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(async move {
                        for step in body {
                            let sent = match step {
                                Step::Data(text) => {
                                    tx.send(Ok(Bytes::from_static(text.as_bytes())))
                                }
                                Step::Big(n) => {
                                    let event =
                                        format!("data: {{\"x\":\"{}\"}}\n\n", "y".repeat(n));
                                    tx.send(Ok(Bytes::from(event)))
                                }
                                Step::Wait(ms) => {
                                    tokio::time::sleep(Duration::from_millis(ms)).await;
                                    Ok(())
                                }
                                Step::Reset => {
                                    let _ = tx.send(Err(io::ErrorKind::ConnectionReset.into()));
                                    return;
                                }
                            };
                            if sent.is_err() {
                                return;
                            }
                        }
                    });
                    let mut response = Response::new(FakeBody(rx));
                    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    for (name, value) in headers {
                        response
                            .headers_mut()
                            .insert(name, hyper::header::HeaderValue::from_str(&value).unwrap());
                    }
                    Ok(response)
                }
            }
        }
    }
}

/// A client of one `baseUrl` (a router of one upstream, as JS gets) whose connections are fake.
fn client(
    options: serde_json::Value,
    script: Vec<Answer>,
) -> (Arc<Router<FakeConnector>>, Arc<Server>) {
    let mut all = json!({ "baseUrl": "http://fake.test/v1", "apiKey": "sk-test-secret-key" });
    for (k, v) in options.as_object().unwrap() {
        all[k] = v.clone();
    }
    let config = RouterConfig::from_json(&all).unwrap();
    let connector = FakeConnector::default();
    connector.0.script.lock().unwrap().extend(script);
    let server = connector.0.clone();
    let mut connector = Some(connector);
    let router = Router::build(config, |config| {
        Client::with_connector(config, connector.take().expect("one upstream"))
    })
    .unwrap();
    (Arc::new(router), server)
}

async fn chat(c: &Router<FakeConnector>) -> Result<String, Error> {
    c.post_json(
        Target::Chat,
        Bytes::from_static(b"{}"),
        CallOptions::default(),
        None,
    )
    .await
    .map(|answer| answer.text)
}

const FAST_RETRY: &str = r#"{ "maxRetries": 2, "minTimeout": 100, "maxTimeout": 1000 }"#;

fn fast_retry() -> serde_json::Value {
    serde_json::from_str(FAST_RETRY).unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_abort_token_ends_the_call_and_a_call_without_one_runs_to_its_answer() {
    let slow = Answer::Reply {
        delay: 1000,
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        body: vec![Step::Data(COMPLETION)],
    };
    let (c, _) = client(json!({ "retry": false }), vec![slow.clone(), slow]);
    let abort = tokio_util::sync::CancellationToken::new();
    let aborting = abort.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        aborting.cancel();
    });
    let err = c
        .post_json(
            Target::Chat,
            Bytes::from_static(b"{}"),
            CallOptions::default(),
            Some(abort),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ERR_ABORTED");
    assert!(chat(&c).await.is_ok());
    // The caller's abort is not a failure: counted apart, never in `errors`.
    assert_eq!((c.stats().aborted, c.stats().errors), (1, 0));
    assert!(c
        .metrics_text()
        .contains("llmpool_aborted_total{origin=\"http://fake.test\"} 1\n"));
    assert!(!c.metrics_text().contains("ERR_ABORTED"));
}

#[tokio::test(start_paused = true)]
async fn with_retries_off_a_request_the_server_received_is_never_sent_again() {
    let (c, server) = client(json!({ "retry": false }), vec![Answer::ResetAfterWrite]);
    let err = chat(&c).await.unwrap_err();
    assert_eq!(err.code(), "ERR_SOCKET");
    assert_eq!(err.attempts(), 1);
    assert_eq!(err.cause().and_then(|c| c.code), Some("ECONNRESET"));
    assert_eq!(server.received.load(Ordering::SeqCst), 1);
    assert_eq!(c.stats().retries, 0);
    assert_eq!(c.stats().errors, 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_never_written_goes_again_on_a_fresh_connection_without_counting() {
    let (c, server) = client(json!({ "retry": false }), vec![Answer::NotSent]);
    assert!(chat(&c).await.is_ok());
    assert_eq!(server.received.load(Ordering::SeqCst), 1);
    assert_eq!(server.opened.load(Ordering::SeqCst), 2);
    assert_eq!(c.stats().retries, 0);
}

#[tokio::test(start_paused = true)]
async fn the_free_resend_happens_once_per_attempt() {
    let (c, server) = client(
        json!({ "retry": false }),
        vec![Answer::NotSent, Answer::NotSent],
    );
    let err = chat(&c).await.unwrap_err();
    assert_eq!(err.code(), "ERR_SOCKET");
    assert_eq!(server.received.load(Ordering::SeqCst), 0);
    assert_eq!(server.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn refused_requests_go_again_uncounted_without_backoff_up_to_ten_sends() {
    let (c, server) = client(json!({ "retry": false }), vec![Answer::Refused; 9]);
    let started = tokio::time::Instant::now();
    assert!(chat(&c).await.is_ok());
    assert_eq!(started.elapsed(), Duration::ZERO, "no backoff");
    assert_eq!(server.received.load(Ordering::SeqCst), 1);
    assert_eq!(c.stats().retries, 0);

    let (c, server) = client(json!({ "retry": false }), vec![Answer::Refused; 11]);
    let err = chat(&c).await.unwrap_err();
    assert_eq!(err.code(), "ERR_SOCKET");
    assert!(err.to_string().contains("refused the stream"), "{err}");
    assert_eq!(server.received.load(Ordering::SeqCst), 0);
    assert_eq!(
        server.script.lock().unwrap().len(),
        1,
        "ten sends, not eleven"
    );
}

#[tokio::test(start_paused = true)]
async fn a_malformed_answer_is_never_sent_again_by_default() {
    let (c, server) = client(
        json!({ "retry": fast_retry() }),
        vec![Answer::Malformed, Answer::Malformed],
    );
    let err = chat(&c).await.unwrap_err();
    assert_eq!(err.code(), "ERR_INVALID_RESPONSE");
    assert_eq!(server.received.load(Ordering::SeqCst), 1);
    assert_eq!(c.stats().retries, 0);
}

#[tokio::test(start_paused = true)]
async fn a_reset_after_the_write_is_an_ordinary_retry_under_the_policy() {
    let (c, server) = client(
        json!({ "retry": fast_retry() }),
        vec![Answer::ResetAfterWrite],
    );
    let started = tokio::time::Instant::now();
    assert!(chat(&c).await.is_ok());
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(server.received.load(Ordering::SeqCst), 2);
    assert_eq!(c.stats().retries, 1);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_after_max_retries_with_the_attempt_count() {
    let script = vec![
        status(503, vec![]),
        status(503, vec![]),
        status(503, vec![]),
    ];
    let (c, server) = client(json!({ "retry": fast_retry() }), script);
    let err = chat(&c).await.unwrap_err();
    assert_eq!(err.http_failure().map(|h| h.status), Some(503));
    assert_eq!(err.attempts(), 3);
    assert_eq!(server.received.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn absurd_retry_hints_fail_at_once_with_the_status() {
    for (name, value) in [("retry-after", "1e20"), ("retry-after-ms", "1e30")] {
        let (c, server) = client(
            json!({ "retry": fast_retry() }),
            vec![status(429, vec![(name, value.into())])],
        );
        let started = tokio::time::Instant::now();
        let err = chat(&c).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::ZERO, "{name}");
        assert_eq!(err.http_failure().map(|h| h.status), Some(429));
        assert_eq!(err.retry_after(), Some(crate::retry::MAX_HINT));
        assert_eq!(server.received.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_200_error_body_is_an_error_and_the_key_is_redacted() {
    let (c, _) = client(
        json!({ "retry": false }),
        vec![ok_json(
            r#"{"error":{"message":"bad header Authorization: Bearer sk-test-secret-key"}}"#,
        )],
    );
    let err = chat(&c).await.unwrap_err();
    assert_eq!(err.code(), "ERR_PROVIDER_ERROR");
    let all = format!("{err:?}");
    assert!(!all.contains("sk-test-secret-key"), "{all}");
    assert!(err.message().contains("[REDACTED]"));
    assert_eq!(c.stats().errors, 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_max_response_size_fails_and_its_connection_is_closed() {
    let (c, _) = client(
        json!({ "retry": false, "maxResponseSize": 10 }),
        vec![ok_json(COMPLETION)],
    );
    let err = chat(&c).await.unwrap_err();
    assert_eq!(err.code(), "ERR_RESPONSE_TOO_LARGE");
    let pool = c.stats().pool;
    assert_eq!((pool.connected, pool.connections_closed), (0, 1));
    // The pool goes on: the next call opens a new connection and succeeds.
    let (c, _) = client(json!({ "maxResponseSize": -1 }), vec![]);
    assert!(chat(&c).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn non_json_and_non_object_bodies_are_invalid_responses() {
    for body in ["<html>", "[1,2]", "null"] {
        let (c, _) = client(json!({ "retry": false }), vec![ok_json(body)]);
        assert_eq!(
            chat(&c).await.unwrap_err().code(),
            "ERR_INVALID_RESPONSE",
            "{body}"
        );
    }
}

/// Runs a stream to its end; the sink acknowledges every delivered event at once, as a fast
/// consumer does. Returns the payloads and the final delivery.
async fn stream(
    c: &Arc<Router<FakeConnector>>,
    call: CallOptions,
) -> (Vec<String>, Result<(), Error>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut s = c
        .stream(
            Target::Chat,
            crate::stream::Dialect::Chat,
            Bytes::from_static(b"{}"),
            call,
            None,
        )
        .unwrap();
    // Started as a lone stream is (its first poll here); `drain` spawns as a loaded one is.
    s.start(
        Box::new(move |d| {
            let _ = tx.send(d);
            false
        }),
        true,
    );
    let mut payloads = Vec::new();
    loop {
        match rx.recv().await.expect("a last delivery") {
            Delivery::Events(events) => {
                s.ack(events.len());
                payloads.extend(events);
            }
            Delivery::Stalled => {}
            Delivery::End => return (payloads, Ok(())),
            Delivery::Failed(e) => return (payloads, Err(e)),
            other => panic!("a chat stream delivered {other:?}"),
        }
    }
}

/// Everything a started handle delivers, the sink acknowledging every item at once.
async fn drain(mut handle: crate::stream::StreamHandle) -> Vec<Delivery> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    handle.start(
        Box::new(move |d| {
            let _ = tx.send(d);
            false
        }),
        false,
    );
    let mut out = Vec::new();
    while let Some(d) = rx.recv().await {
        match &d {
            Delivery::Events(e) => handle.ack(e.len()),
            Delivery::Bytes(_) => handle.ack(1),
            _ => {}
        }
        let last = matches!(d, Delivery::End | Delivery::Failed(_));
        out.push(d);
        if last {
            break;
        }
    }
    out
}

fn events_stream(c: &Arc<Router<FakeConnector>>) -> crate::stream::StreamHandle {
    c.stream(
        Target::Api("/responses".into()),
        crate::stream::Dialect::Events,
        Bytes::from_static(b"{}"),
        CallOptions::default(),
        None,
    )
    .unwrap()
}

fn names(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .flat_map(|d| match d {
            Delivery::Events(e) => e
                .iter()
                .map(|p| p.split('\n').next().unwrap().to_owned())
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

const CREATED: &str = "event: response.created\ndata: {\"type\":\"response.created\"}\n\n";
const DELTA: &str = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n";
const COMPLETED: &str =
    "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{}}\n\n";

#[tokio::test(start_paused = true)]
async fn a_responses_stream_ends_at_response_completed() {
    let script = vec![sse(
        0,
        vec![
            Step::Data(CREATED),
            Step::Data(DELTA),
            Step::Data(COMPLETED),
            Step::Wait(60_000),
        ],
    )];
    let (c, _) = client(json!({ "retry": false }), script);
    let out = drain(events_stream(&c)).await;
    assert!(matches!(out.last(), Some(Delivery::End)), "{out:?}");
    assert_eq!(
        names(&out),
        [
            "response.created",
            "response.output_text.delta",
            "response.completed"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_event_name_never_carries_the_payload_separator_to_the_consumer() {
    let odd = "event: response.odd\u{1e}name\ndata: {\"type\":\"x\"}\n\n";
    let (c, _) = client(
        json!({ "retry": false }),
        vec![sse(0, vec![Step::Data(odd), Step::Data(COMPLETED)])],
    );
    let out = drain(events_stream(&c)).await;
    assert!(matches!(out.last(), Some(Delivery::End)), "{out:?}");
    assert_eq!(
        names(&out),
        ["response.odd\u{fffd}name", "response.completed"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_responses_stream_fails_on_response_failed_and_is_truncated_without_an_end() {
    let failed = "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"error\":{\"message\":\"overloaded\"}}}\n\n";
    let (c, _) = client(
        json!({ "retry": false }),
        vec![sse(0, vec![Step::Data(CREATED), Step::Data(failed)])],
    );
    let out = drain(events_stream(&c)).await;
    let Some(Delivery::Failed(e)) = out.last() else {
        panic!("{out:?}")
    };
    assert_eq!(e.code(), "ERR_STREAM_ERROR");
    assert!(e.message().contains("overloaded"), "{}", e.message());

    let (c, _) = client(
        json!({ "retry": false }),
        vec![sse(0, vec![Step::Data(CREATED), Step::Data(DELTA)])],
    );
    let out = drain(events_stream(&c)).await;
    let Some(Delivery::Failed(e)) = out.last() else {
        panic!("{out:?}")
    };
    assert_eq!(e.code(), "ERR_STREAM_TRUNCATED");
}

#[tokio::test(start_paused = true)]
async fn a_generic_event_stream_is_complete_at_its_end_and_checks_its_json() {
    let plain = "event: tick\ndata: [1,2]\n\ndata: \"text\"\n\n";
    let (c, _) = client(
        json!({ "retry": false }),
        vec![sse(0, vec![Step::Data(plain)])],
    );
    let out = drain(events_stream(&c)).await;
    assert!(matches!(out.last(), Some(Delivery::End)), "{out:?}");
    assert_eq!(names(&out), ["tick", "message"]);

    let (c, _) = client(
        json!({ "retry": false }),
        vec![sse(0, vec![Step::Data("data: {oops\n\n")])],
    );
    let out = drain(events_stream(&c)).await;
    let Some(Delivery::Failed(e)) = out.last() else {
        panic!("{out:?}")
    };
    assert_eq!(e.code(), "ERR_INVALID_RESPONSE");
}

fn fetch(c: &Arc<Router<FakeConnector>>) -> crate::stream::StreamHandle {
    c.fetch(
        hyper::Method::GET,
        "/v1/models?limit=1",
        Bytes::new(),
        CallOptions::default(),
        None,
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn fetch_delivers_the_head_then_the_body() {
    let (c, _) = client(
        json!({ "retry": false }),
        vec![sse(0, vec![Step::Data("abc"), Step::Data("def")])],
    );
    let out = drain(fetch(&c)).await;
    assert!(
        matches!(out[0], Delivery::Head { status: 200, .. }),
        "{out:?}"
    );
    let body: Vec<u8> = out
        .iter()
        .filter_map(|d| match d {
            Delivery::Bytes(b) => Some(b.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(body, b"abcdef");
    assert!(matches!(out.last(), Some(Delivery::End)));
}

#[tokio::test(start_paused = true)]
async fn fetch_retries_before_the_head_and_hands_a_final_error_over_as_a_response() {
    let (c, server) = client(
        json!({ "retry": fast_retry() }),
        vec![status(503, vec![]), ok_json(COMPLETION)],
    );
    let out = drain(fetch(&c)).await;
    assert!(
        matches!(out[0], Delivery::Head { status: 200, .. }),
        "{out:?}"
    );
    assert_eq!(server.received.load(Ordering::SeqCst), 2);

    let (c, _) = client(json!({ "retry": false }), vec![status(404, vec![])]);
    let out = drain(fetch(&c)).await;
    assert!(
        matches!(out[0], Delivery::Head { status: 404, .. }),
        "{out:?}"
    );
    assert!(matches!(out[1], Delivery::Bytes(_)));
    assert!(matches!(out.last(), Some(Delivery::End)));
    assert_eq!(
        c.stats().errors,
        1,
        "a failed call is counted, even handed over as a response"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_retries_a_first_token_timeout_and_then_succeeds() {
    let script = vec![
        sse(
            0,
            vec![Step::Wait(5_000), Step::Data(CHUNK), Step::Data(LAST)],
        ),
        sse(0, vec![Step::Data(CHUNK), Step::Data(LAST)]),
    ];
    let (c, server) = client(
        json!({ "retry": fast_retry(), "firstTokenTimeout": 1000 }),
        script,
    );
    let (payloads, end) = stream(&c, CallOptions::default()).await;
    assert!(end.is_ok());
    assert_eq!(payloads.len(), 2);
    assert_eq!(server.received.load(Ordering::SeqCst), 2);
    assert_eq!(c.stats().retries, 1);
}

#[tokio::test(start_paused = true)]
async fn the_token_gap_restarts_at_every_chunk_and_fails_a_gap_longer_than_it() {
    // Chunks 700 ms apart outlast a 1 s gap many times over without tripping it…
    let mut steps = Vec::new();
    for _ in 0..5 {
        steps.extend([Step::Wait(700), Step::Data(CHUNK)]);
    }
    // …then a 1.5 s silence fails the stream, 1 s after the last chunk (not at a stale deadline).
    steps.extend([Step::Wait(1_500), Step::Data(LAST)]);
    let (c, _) = client(
        json!({ "retry": false, "tokenTimeout": 1000 }),
        vec![sse(0, steps)],
    );
    let started = tokio::time::Instant::now();
    let (payloads, end) = stream(&c, CallOptions::default()).await;
    assert_eq!(payloads.len(), 5);
    assert_eq!(end.unwrap_err().code(), "ERR_TOKEN_TIMEOUT");
    let took = started.elapsed().as_millis();
    assert!((4_500..4_600).contains(&took), "failed after {took} ms");
}

#[tokio::test(start_paused = true)]
async fn a_stream_truncated_before_its_first_chunk_is_retried_after_it_is_final() {
    let script = vec![sse(0, vec![]), sse(0, vec![Step::Data(CHUNK)])];
    let (c, server) = client(json!({ "retry": fast_retry() }), script);
    let (payloads, end) = stream(&c, CallOptions::default()).await;
    let err = end.unwrap_err();
    assert_eq!(err.code(), "ERR_STREAM_TRUNCATED");
    assert_eq!(
        payloads.len(),
        1,
        "the second attempt's chunk was delivered"
    );
    assert_eq!(err.attempts(), 2);
    assert_eq!(server.received.load(Ordering::SeqCst), 2);
    assert_eq!(c.stats().errors, 1);
}

#[tokio::test(start_paused = true)]
async fn chunks_before_an_error_payload_are_delivered_first() {
    let script = vec![sse(
        0,
        vec![Step::Data(
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"key sk-test-secret-key\"}}\n\n",
        )],
    )];
    let (c, _) = client(json!({ "retry": fast_retry() }), script);
    let (payloads, end) = stream(&c, CallOptions::default()).await;
    assert_eq!(payloads.len(), 1);
    let err = end.unwrap_err();
    assert_eq!(err.code(), "ERR_STREAM_ERROR");
    assert_eq!(
        err.attempts(),
        1,
        "never retried after a chunk reached the consumer"
    );
    assert!(!format!("{err:?}").contains("sk-test-secret-key"));
}

#[tokio::test(start_paused = true)]
async fn a_stream_error_after_chunks_is_not_retried_but_a_reset_before_them_is() {
    let script = vec![
        sse(0, vec![Step::Reset]),
        sse(0, vec![Step::Data(CHUNK), Step::Reset]),
    ];
    let (c, server) = client(json!({ "retry": fast_retry() }), script);
    let (payloads, end) = stream(&c, CallOptions::default()).await;
    let err = end.unwrap_err();
    assert_eq!(err.code(), "ERR_SOCKET");
    assert_eq!(err.cause().and_then(|c| c.code), Some("ECONNRESET"));
    assert_eq!((payloads.len(), err.attempts()), (1, 2));
    assert_eq!(server.received.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn an_event_larger_than_the_flow_control_window_passes_alone() {
    let script = vec![sse(
        0,
        vec![
            Step::Data(CHUNK),
            Step::Big(WINDOW_BYTES * 2),
            Step::Big(WINDOW_BYTES * 5),
            Step::Data(LAST),
        ],
    )];
    let (c, _) = client(json!({ "retry": false }), script);
    let (payloads, end) = stream(&c, CallOptions::default()).await;
    assert!(end.is_ok());
    assert_eq!(payloads.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_finish_reason_without_done_is_complete() {
    let script = vec![sse(
        0,
        vec![Step::Data(
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
        )],
    )];
    let (c, _) = client(json!({ "retry": false }), script);
    let (payloads, end) = stream(&c, CallOptions::default()).await;
    assert!(end.is_ok());
    assert_eq!(payloads.len(), 1);
}

/// The architecture's one-way rule: no module of the core reaches back up, so the modules'
/// `crate::…` references form no cycle (a module's own submodules count as the module).
#[test]
fn modules_depend_one_way() {
    use std::collections::{BTreeMap, BTreeSet};
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            // The top-level module a file belongs to: `pool/tests.rs` → `pool`.
            let module = relative.split(['/', '.']).next().unwrap().to_owned();
            if ["lib", "tests"].contains(&module.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests may reach anywhere; only the code counts.
            let code = text.split("#[cfg(test)]").next().unwrap();
            let uses = graph.entry(module.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name != module {
                    uses.insert(name);
                }
            }
        }
    }
    assert!(graph["chat"].contains("client"), "the scan sees references");
    // Depth-first search for a cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(node) {
            return;
        }
        assert!(
            !path.iter().any(|p| p == node),
            "import cycle: {} → {node}",
            path.join(" → ")
        );
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(node.to_owned());
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
}

mod routing;
