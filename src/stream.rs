//! One chat stream: a reader task that sends the request, decodes the SSE body and hands data
//! payloads to the consumer through a bounded channel.
//!
//! ```text
//! socket → hyper body → SseDecoder → [DONE]/error/finish_reason rules → mpsc (bounded) → next_batch()
//! ```
//!
//! The request starts on the first `next_batch()`, so a stream that is never iterated holds
//! nothing. The channel is bounded: when the consumer stops pulling, the reader stops reading the
//! socket, and TCP pushes back on the server. The reader ends, closing the connection (never
//! returning it mid-body), when the consumer closes the stream or drops it, on abort, on a
//! timeout, or on `destroy()`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::chat::{BoxedAttempt, CallOptions, Client};
use crate::error::{Error, Kind};
use crate::sse::SseDecoder;

/// Batches of payloads in flight between the reader and the consumer. Small: a slow consumer
/// holds at most this many socket reads' worth of events in memory.
const CHANNEL_BATCHES: usize = 16;

/// After `[DONE]`, how long the consumer's end of stream waits for the end of the body. Servers
/// send it right behind `[DONE]`; waiting for it puts the connection back in the pool before the
/// consumer's next request, so sequential streams share one socket.
const DONE_GRACE: Duration = Duration::from_millis(50);

/// After that, how long the reader keeps waiting, in the background, for the body to end so that
/// the connection can be reused; a server that keeps the body open longer has it closed instead.
const DRAIN_AFTER_DONE: Duration = Duration::from_secs(2);

enum Item {
    Events(Vec<String>),
    /// The end: `marker` says whether it was `data: [DONE]` or just the end of the body (the
    /// consumer then decides, from the chunks, whether the stream was complete).
    Done {
        marker: bool,
    },
    Failed(Error),
}

/// What one `next_batch()` delivers: every payload ready now, then possibly the end or an error
/// (which come after the payloads).
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<String>,
    pub done: bool,
    /// With `done`: the body ended without `data: [DONE]`. Whether that is complete depends on
    /// the chunks (a `finish_reason` seen), which the consumer parses anyway; see `index.js`.
    pub unmarked_end: bool,
    pub error: Option<Error>,
}

struct Request {
    client: Arc<Client>,
    body: Bytes,
    call: CallOptions,
    cancel: CancellationToken,
}

enum State {
    NotStarted(Box<Request>),
    Running(mpsc::Receiver<Item>),
    Finished,
}

/// The consumer's side of one chat stream.
pub struct ChatStream {
    state: State,
    /// Cancelled when the consumer is done (`close()` or drop): the reader ends quietly.
    closed: CancellationToken,
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
            state: State::NotStarted(Box::new(Request {
                client,
                body,
                call,
                cancel,
            })),
            closed: CancellationToken::new(),
        }
    }

    /// A token that closes this stream from elsewhere (e.g. while a `next_batch()` is pending).
    pub fn closer(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// Waits for the next payloads. Starts the request on the first call.
    pub async fn next_batch(&mut self) -> Batch {
        if let State::NotStarted(_) = self.state {
            let State::NotStarted(request) = std::mem::replace(&mut self.state, State::Finished)
            else {
                unreachable!()
            };
            let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
            tokio::spawn(read_stream(*request, tx, self.closed.clone()));
            self.state = State::Running(rx);
        }
        let State::Running(rx) = &mut self.state else {
            return Batch {
                done: true,
                ..Batch::default()
            };
        };
        let mut batch = Batch::default();
        let first = tokio::select! {
            item = rx.recv() => item,
            _ = self.closed.cancelled() => None,
        };
        let mut next = first;
        loop {
            match next {
                Some(Item::Events(events)) => {
                    if batch.events.is_empty() {
                        batch.events = events;
                    } else {
                        batch.events.extend(events);
                    }
                }
                Some(Item::Done { marker }) => {
                    batch.done = true;
                    batch.unmarked_end = !marker;
                    break;
                }
                None => {
                    batch.done = true;
                    break;
                }
                Some(Item::Failed(e)) => {
                    batch.error = Some(e);
                    break;
                }
            }
            // Everything already waiting goes in the same batch: one crossing into JS.
            match rx.try_recv() {
                Ok(item) => next = Some(item),
                Err(mpsc::error::TryRecvError::Empty) => return batch,
                Err(mpsc::error::TryRecvError::Disconnected) => next = None,
            }
        }
        self.state = State::Finished;
        batch
    }

    /// The consumer is done: the request is cancelled and its connection closed.
    pub fn close(&mut self) {
        self.closed.cancel();
        self.state = State::Finished;
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

async fn read_stream(request: Request, tx: mpsc::Sender<Item>, closed: CancellationToken) {
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
                &tx,
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
    if let Err(e) = client.run(cancel, work).await {
        let _ = tx.send(Item::Failed(e)).await;
    }
}

/// Sends the request and pumps events until `[DONE]`, the end of the body, or a failure. Sends
/// `Done` itself (before draining the body for reuse); the caller sends failures.
async fn stream_attempt(
    client: &Client,
    body: Bytes,
    call: &CallOptions,
    tx: &mpsc::Sender<Item>,
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
    let mut deadline = first_token_deadline;
    loop {
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
                lease.release(client.keep_alive.idle_lifetime(&parts.headers));
                let _ = tx.send(Item::Done { marker: false }).await;
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
            *yielded = true;
            if tx.send(Item::Events(payloads)).await.is_err() {
                return Ok(());
            }
            // The gap is measured from when we are ready to read again, so a slow consumer is
            // never mistaken for a stalled model.
            deadline = token_gap.map(|gap| Instant::now() + gap);
        }
        if saw_done {
            let lifetime = client.keep_alive.idle_lifetime(&parts.headers);
            match tokio::time::timeout(DONE_GRACE, body_end(&mut incoming)).await {
                Ok(true) => lease.release(lifetime),
                Ok(false) => drop(lease),
                Err(_) => {
                    let _ = tx.send(Item::Done { marker: true }).await;
                    if let Ok(true) =
                        tokio::time::timeout(DRAIN_AFTER_DONE, body_end(&mut incoming)).await
                    {
                        lease.release(lifetime);
                    }
                    return Ok(());
                }
            }
            let _ = tx.send(Item::Done { marker: true }).await;
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
        let (tx, _rx) = mpsc::channel(1);
        let request = Request {
            client,
            body: Bytes::new(),
            call: CallOptions::default(),
            cancel: CancellationToken::new(),
        };
        let reader = read_stream(request, tx, CancellationToken::new());
        let size = std::mem::size_of_val(&reader);
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
