//! One chat stream: a reader task that sends the request, decodes the SSE body and pushes the
//! data payloads to the consumer's sink, under credit-based flow control.
//!
//! ```text
//! socket → hyper body → SseDecoder → [DONE]/error rules → sink(Batch) … consumer … ack(events, bytes)
//! ```
//!
//! The reader pushes every socket read's payloads as one batch as soon as they are decoded (the
//! consumer's side coalesces batches that arrive while it is busy), so a stream costs no call
//! from the consumer per batch. Flow control: the reader lets at most [`WINDOW_EVENTS`] events
//! or [`WINDOW_BYTES`] bytes be delivered and not yet acknowledged; past that it stops reading
//! the socket (and TCP pushes back on the server) until the consumer acknowledges what it used.
//!
//! The request starts with [`ChatStream::start`], so a stream that is never iterated holds
//! nothing. The reader ends, closing the connection (never returning it mid-body), when the
//! consumer closes or drops the stream, on abort, on a timeout, or on `destroy()`; it always
//! delivers a last batch (`done` or `error`) unless the consumer left first.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::chat::{BoxedAttempt, CallOptions, Client};
use crate::error::{Error, Kind};
use crate::sse::SseDecoder;

/// Most events delivered and not yet acknowledged before the reader stops reading.
pub const WINDOW_EVENTS: usize = 256;
/// Most payload bytes delivered and not yet acknowledged before the reader stops reading.
pub const WINDOW_BYTES: usize = 1024 * 1024;

/// After `[DONE]`, how long the consumer's end of stream waits for the end of the body. Servers
/// send it right behind `[DONE]`; waiting for it puts the connection back in the pool before the
/// consumer's next request, so sequential streams share one socket.
const DONE_GRACE: Duration = Duration::from_millis(50);

/// After that, how long the reader keeps waiting, in the background, for the body to end so that
/// the connection can be reused; a server that keeps the body open longer has it closed instead.
const DRAIN_AFTER_DONE: Duration = Duration::from_secs(2);

/// What the reader pushes to the consumer's sink.
#[derive(Debug)]
pub enum Delivery {
    /// Payloads (JSON text of chunks), in order.
    Events(Vec<String>),
    /// The reader is waiting for acknowledgements: the consumer should acknowledge what it used
    /// as soon as it used anything.
    Stalled,
    /// The end. `marker` says whether it was `data: [DONE]` or just the end of the body; in the
    /// latter case the consumer decides, from the chunks it parsed anyway (a `finish_reason`
    /// seen), whether the stream was complete (see `index.js`).
    End {
        marker: bool,
    },
    Failed(Error),
}

/// Receives the reader's deliveries (on the runtime's threads).
pub type Sink = Box<dyn Fn(Delivery) + Send + Sync>;

/// Sizes of the events delivered and not yet acknowledged, and a wake-up for a reader waiting
/// for room. The consumer acknowledges in events; the sizes let the byte window follow exactly.
#[derive(Debug, Default)]
struct Credit {
    unacked: Mutex<Unacked>,
    room: Notify,
}

#[derive(Debug, Default)]
struct Unacked {
    sizes: VecDeque<usize>,
    bytes: usize,
}

impl Credit {
    fn lock(&self) -> std::sync::MutexGuard<'_, Unacked> {
        self.unacked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn full(&self) -> bool {
        let unacked = self.lock();
        unacked.sizes.len() >= WINDOW_EVENTS || unacked.bytes >= WINDOW_BYTES
    }

    async fn wait_for_room(&self) {
        while self.full() {
            let notified = self.room.notified();
            if !self.full() {
                return;
            }
            notified.await;
        }
    }

    fn spend(&self, events: &[String]) {
        let mut unacked = self.lock();
        for event in events {
            unacked.sizes.push_back(event.len());
            unacked.bytes += event.len();
        }
    }

    fn refund(&self, events: usize) {
        {
            let mut unacked = self.lock();
            for _ in 0..events {
                match unacked.sizes.pop_front() {
                    Some(size) => unacked.bytes -= size,
                    None => break,
                }
            }
        }
        self.room.notify_one();
    }
}

struct Request {
    client: Arc<Client>,
    body: Bytes,
    call: CallOptions,
    cancel: CancellationToken,
}

/// The consumer's handle on one chat stream.
pub struct ChatStream {
    request: Option<Box<Request>>,
    /// Cancelled when the consumer is done (`close()` or drop): the reader ends quietly.
    closed: CancellationToken,
    credit: Arc<Credit>,
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatStream")
    }
}

impl ChatStream {
    pub(crate) fn new(
        client: Arc<Client>,
        body: Bytes,
        call: CallOptions,
        cancel: CancellationToken,
    ) -> Self {
        ChatStream {
            request: Some(Box::new(Request {
                client,
                body,
                call,
                cancel,
            })),
            closed: CancellationToken::new(),
            credit: Arc::new(Credit::default()),
        }
    }

    /// Sends the request and starts pushing batches to `sink`. Does nothing the second time.
    pub fn start(&mut self, sink: Sink) {
        if let Some(request) = self.request.take() {
            let reader = Arc::new(Reader {
                sink,
                credit: self.credit.clone(),
            });
            let closed = self.closed.clone();
            tokio::spawn(async move {
                let reading = read_stream(*request, reader.clone(), closed);
                // A bug must still end the consumer's wait, never leave it hanging.
                if AssertUnwindSafe(reading).catch_unwind().await.is_err() {
                    reader.fail(Error::new(
                        Kind::Internal,
                        "llmpool internal error (a bug: please report it)",
                    ));
                }
            });
        }
    }

    /// A token that closes this stream from elsewhere.
    pub fn closer(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// The consumer used `events` more events (in delivery order): the reader may go on.
    pub fn ack(&self, events: usize) {
        self.credit.refund(events);
    }

    /// The consumer is done: the request is cancelled and its connection closed.
    pub fn close(&mut self) {
        self.request = None;
        self.closed.cancel();
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

/// The reader's side: where batches go, and the credit they spend.
struct Reader {
    sink: Sink,
    credit: Arc<Credit>,
}

impl Reader {
    fn push(&self, events: Vec<String>) {
        self.credit.spend(&events);
        (self.sink)(Delivery::Events(events));
    }

    fn end(&self, marker: bool) {
        (self.sink)(Delivery::End { marker });
    }

    fn fail(&self, error: Error) {
        (self.sink)(Delivery::Failed(error));
    }
}

async fn read_stream(request: Request, reader: Arc<Reader>, closed: CancellationToken) {
    let Request {
        client,
        body,
        mut call,
        cancel,
    } = request;
    call.headers
        .push((ACCEPT, HeaderValue::from_static("text/event-stream")));
    // Attempts are retried only while nothing was yielded to the consumer: after the first chunk
    // a failure surfaces as is.
    let attempts = async {
        let mut attempt = 1;
        loop {
            let mut yielded = false;
            // Boxed for the reason given in `Client::chat_attempts`.
            let one: BoxedAttempt<'_, ()> = Box::pin(stream_attempt(
                &client,
                body.clone(),
                &call,
                &reader,
                &mut yielded,
            ));
            match client.guarded(client.with_deadline(&call, one)).await {
                Ok(()) => return Ok(()),
                Err(e) if yielded => return Err(e.with_attempts(attempt)),
                Err(e) => {
                    let delay = client.retry_delay(e, attempt, &call, true)?;
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    };
    let work = async {
        tokio::select! {
            biased;
            // The consumer left: not an error, nobody is listening.
            _ = closed.cancelled() => Ok(()),
            result = attempts => result,
        }
    };
    match client.run(cancel, work).await {
        Err(e) => reader.fail(e),
        // The consumer left (closed or dropped the stream): a last batch still tells its side
        // that nothing more will come, so that nothing waits for this stream any more.
        Ok(()) if closed.is_cancelled() => {
            tracing::debug!(
                origin = client.origin(),
                "stream closed by its consumer; connection closed"
            );
            reader.end(true)
        }
        Ok(()) => {}
    }
}

/// Sends the request and pumps events until `[DONE]`, the end of the body, or a failure. Sends
/// `Done` itself (before draining the body for reuse); the caller sends failures.
async fn stream_attempt(
    client: &Client,
    body: Bytes,
    call: &CallOptions,
    reader: &Reader,
    yielded: &mut bool,
) -> Result<(), Error> {
    let config = client.config();
    let first_token = call
        .first_token_timeout
        .unwrap_or(config.first_token_timeout);
    let token_gap = call.token_timeout.unwrap_or(config.token_timeout);
    let started = Instant::now();
    let first_token_deadline = first_token.map(|limit| started + limit);
    let first_token_error = || {
        Error::timed_out(
            Kind::FirstTokenTimeout,
            client.origin(),
            "waiting for the first token",
            first_token.unwrap_or_default(),
        )
    };

    let sending = client.send(body, call);
    let (response, lease) = match first_token_deadline {
        None => sending.await?,
        Some(at) => tokio::time::timeout_at(at, sending)
            .await
            .map_err(|_| first_token_error())??,
    };
    let (parts, mut incoming) = response.into_parts();
    if !parts.status.is_success() {
        let (text, complete) = client.read_body(incoming, 64 * 1024).await?;
        let error = client.http_error(parts.status, &parts.headers, &text);
        if complete {
            lease.release(client.keep_alive.idle_lifetime(&parts.headers));
        }
        return Err(error);
    }
    if is_json(&parts.headers) {
        // The server ignored `stream: true` or failed with a 200 JSON error.
        let (text, _) = client.read_body(incoming, 64 * 1024).await?;
        let text = client.redactor.redact(&String::from_utf8_lossy(&text));
        return Err(match top_level_error(&text) {
            Some(message) => Error::stream(
                format!("{} reported an error: {message}", client.origin()),
                text,
            ),
            None => Error::new(
                Kind::InvalidResponse,
                format!(
                    "{} answered with JSON instead of an event stream",
                    client.origin()
                ),
            ),
        });
    }

    let mut decoder = SseDecoder::new(config.max_event_size);
    let mut events = Vec::new();
    let mut delivered: u64 = 0;
    let mut first_token_at: Option<Instant> = None;
    let mut deadline = first_token_deadline;
    loop {
        if reader.credit.full() {
            // The consumer is behind: stop reading until it catches up. A slow consumer is not a
            // stalled model, so the token gap restarts once there is room again.
            (reader.sink)(Delivery::Stalled);
            reader.credit.wait_for_room().await;
            if *yielded {
                deadline = token_gap.map(|gap| Instant::now() + gap);
            }
        }
        let frame = tokio::select! {
            biased;
            _ = sleep_until(deadline) => {
                return Err(if *yielded {
                    Error::timed_out(
                        Kind::TokenTimeout,
                        client.origin(),
                        "waiting for the next token",
                        token_gap.unwrap_or_default(),
                    )
                } else {
                    first_token_error()
                });
            }
            frame = incoming.frame() => frame,
        };
        let data = match frame {
            None => {
                // The body ended without [DONE]: the connection is reusable; whether the stream
                // is complete is decided from the chunks (finish_reason) by the consumer.
                decoder.finish();
                if let Some(at) = first_token_at {
                    client.metrics.stream_rate(delivered, at.elapsed());
                }
                lease.release(client.keep_alive.idle_lifetime(&parts.headers));
                reader.end(false);
                return Ok(());
            }
            Some(Err(e)) => {
                return Err(Error::new(
                    Kind::Socket,
                    format!(
                        "connection to {} broke during the stream: {e}",
                        client.origin()
                    ),
                ))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        decoder.feed(&data, &mut events).map_err(|e| {
            Error::new(
                Kind::SseEventTooLarge,
                format!(
                    "stream from {} sent an event larger than maxEventSize ({} bytes)",
                    client.origin(),
                    e.limit
                ),
            )
        })?;
        let mut payloads = Vec::with_capacity(events.len());
        let mut saw_done = false;
        for event in events.drain(..) {
            let data = event.data;
            if event.event.as_deref() == Some("error") {
                return Err(stream_error(client, data));
            }
            let trimmed = data.trim();
            if trimmed == "[DONE]" {
                saw_done = true;
                break;
            }
            if trimmed.is_empty() {
                continue;
            }
            // A payload with a top-level `error` is detected by the consumer, which parses every
            // payload anyway (a scan here would cost every chunk).
            payloads.push(data);
        }
        if !payloads.is_empty() {
            if first_token_at.is_none() {
                first_token_at = Some(Instant::now());
                client.metrics.first_token_after(started.elapsed());
            }
            delivered += payloads.len() as u64;
            *yielded = true;
            reader.push(payloads);
            deadline = token_gap.map(|gap| Instant::now() + gap);
        }
        if saw_done {
            if let Some(at) = first_token_at {
                client.metrics.stream_rate(delivered, at.elapsed());
            }
            let lifetime = client.keep_alive.idle_lifetime(&parts.headers);
            match tokio::time::timeout(DONE_GRACE, body_end(&mut incoming)).await {
                Ok(true) => lease.release(lifetime),
                Ok(false) => drop(lease),
                Err(_) => {
                    reader.end(true);
                    if let Ok(true) =
                        tokio::time::timeout(DRAIN_AFTER_DONE, body_end(&mut incoming)).await
                    {
                        lease.release(lifetime);
                    }
                    return Ok(());
                }
            }
            reader.end(true);
            return Ok(());
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads what follows `[DONE]` (normally nothing but the end of the body): true if the body
/// ended cleanly, false if it broke.
async fn body_end(incoming: &mut Incoming) -> bool {
    loop {
        match incoming.frame().await {
            None => return true,
            Some(Ok(_)) => {}
            Some(Err(_)) => return false,
        }
    }
}

fn is_json(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
}

fn stream_error(client: &Client, payload: String) -> Error {
    let payload = client.redactor.redact(&payload);
    let message = top_level_error(&payload)
        .or_else(|| crate::chat::provider_message(&payload))
        .unwrap_or_else(|| "no message".to_owned());
    Error::stream(
        format!("{} sent an error in the stream: {message}", client.origin()),
        payload,
    )
}

/// The message of a payload whose top level has an `error` member (`{"error": {...}}`).
fn top_level_error(data: &str) -> Option<String> {
    // Cheap pre-check: chunks without the key are the hot path.
    if !data.contains("\"error\"") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(data).ok()?;
    let error = value.get("error")?;
    if error.is_null() {
        return None;
    }
    Some(match error {
        serde_json::Value::String(s) => s.clone(),
        other => other
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("no message")
            .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A regression guard, as for `chat()`: the spawned reader future is moved when spawned.
    #[test]
    fn the_stream_reader_future_stays_small() {
        let config = crate::config::Config::from_json(
            &serde_json::json!({ "baseUrl": "http://127.0.0.1:1" }),
        )
        .unwrap();
        let client = Arc::new(Client::new(config).unwrap());
        let reader = Arc::new(Reader {
            sink: Box::new(|_| {}),
            credit: Arc::default(),
        });
        let request = Request {
            client,
            body: Bytes::new(),
            call: CallOptions::default(),
            cancel: CancellationToken::new(),
        };
        let future = read_stream(request, reader, CancellationToken::new());
        let size = std::mem::size_of_val(&future);
        assert!(size <= 4096, "stream reader future is {size} bytes");
    }

    #[test]
    fn top_level_error_only() {
        assert_eq!(
            top_level_error(r#"{"error":{"message":"overloaded","type":"server_error"}}"#)
                .as_deref(),
            Some("overloaded")
        );
        assert_eq!(
            top_level_error(r#"{"error":"boom"}"#).as_deref(),
            Some("boom")
        );
        assert_eq!(
            top_level_error(r#"{"choices":[{"delta":{"content":"\"error\""}}]}"#),
            None
        );
        assert_eq!(top_level_error(r#"{"choices":[],"error":null}"#), None);
        assert_eq!(top_level_error("not json \"error\""), None);
    }
}
