//! One chat stream: a reader task that runs the attempt loop over exchanges, decodes the SSE
//! body, decides each event (`[DONE]`, an error, a chunk that is not a JSON object, the
//! completeness rule at the body's end) and pushes the payloads to the consumer's sink, under
//! credit-based flow control.
//!
//! ```text
//! socket → body → SseDecoder → judge_events (payload::inspect) → sink(Delivery) … consumer … ack(events)
//! ```
//!
//! The reader pushes every socket read's payloads as one delivery as soon as they are decoded
//! (the consumer's side coalesces deliveries that arrive while it is busy), so a stream costs no
//! call from the consumer per batch. Flow control: the reader lets at most [`WINDOW_EVENTS`]
//! events or [`WINDOW_BYTES`] bytes be delivered and not yet acknowledged; past that it stops
//! reading the socket (and TCP pushes back on the server) until the consumer acknowledges what
//! it used. The consumer acknowledges in events, and the reader keeps the size of each, so the
//! byte window follows exactly; one event larger than the window passes alone.
//!
//! Retries happen only until a payload reached the consumer (`committed`): before that, a
//! failure (status, connect, reset, first-token timeout, an empty body) is retried under the
//! policy; after it, a failure is final.
//!
//! The request starts with [`ChatStream::start`], so a stream that is never iterated holds
//! nothing. The reader ends, closing the connection (never returning it mid-body), when the
//! consumer closes or drops the stream, on abort, on a timeout, or on `destroy()`; it always
//! delivers a last `End` or `Failed` unless the consumer left first.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use http_body_util::BodyExt;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Uri};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::config::CallOptions;
use crate::conn::Connection;
use crate::error::{Error, Kind};
use crate::exchange::{Accept, Outgoing, MAX_ERROR_BODY};
use crate::payload::{inspect, provider_message};
use crate::pool::Connect;
use crate::sse::SseDecoder;

mod credit;
mod judge;
mod read;

pub(crate) use credit::Credit;
pub use credit::{WINDOW_BYTES, WINDOW_EVENTS};
use judge::*;
use read::*;
pub(crate) use read::{replay, stream_attempt, StreamTarget};

/// What the reader pushes to the consumer's sink. Every outcome is decided here: the consumer
/// only turns deliveries into values and errors.
#[derive(Debug)]
pub enum Delivery {
    /// Payloads (JSON text of chunks, each checked to be a JSON object without a top-level
    /// `error`), in order. No payload contains U+001E (JSON forbids it raw, and an event name
    /// carrying it has it replaced), so a consumer may join them with it.
    Events(Vec<String>),
    /// Text mode: the first choice's content of the chunks since the last delivery. A sink may
    /// append it to an earlier `Text` its consumer has not taken yet (and says so): the flow
    /// control then counts both as one.
    Text(String),
    /// The reader is waiting for acknowledgements: the consumer should acknowledge what it used
    /// as soon as it used anything. Sent again each time the reader wakes and is still held
    /// back, so an acknowledgement that did not free enough room is followed by another.
    Stalled,
    /// The response head of a raw (`fetch`) stream, before its body.
    Head {
        status: u16,
        headers: Vec<(String, String)>,
    },
    /// One chunk of a raw body.
    Bytes(Bytes),
    /// The stream ended complete (`[DONE]`, or the body's end after a `finish_reason`), or the
    /// consumer left.
    End,
    Failed(Error),
}

/// Receives the reader's deliveries (on the runtime's threads). Returns true when it merged the
/// delivery into an earlier `Text` not yet taken by the consumer (see [`Delivery::Text`]).
pub type Sink = Box<dyn Fn(Delivery) -> bool + Send + Sync>;

/// Which rules end a stream and shape its payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Chat Completions: payloads are chunk objects; `[DONE]` ends; complete at the body's end
    /// only after a `finish_reason`.
    Chat,
    /// Any SSE endpoint (the Responses API among them): each payload is delivered as
    /// `event + "\n" + data` (data checked to be JSON). `[DONE]`, `response.completed` and
    /// `response.incomplete` end it; `error` and `response.failed` events fail it. At the body's
    /// end a stream that sent `response.*` events and no terminal one is truncated; any other is
    /// complete.
    Events,
}

/// The work a stream does once started: it gets the reader (where deliveries go) and the
/// consumer's close token.
pub(crate) type Job =
    Box<dyn FnOnce(Arc<Reader>, CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// The consumer's handle on one stream (a chat stream, an event stream, a `fetch` body).
pub struct StreamHandle {
    job: Option<Job>,
    /// Text mode (`chatStream(body).text()`): the chunks are merged here and only their text is
    /// delivered.
    text: Option<Arc<Mutex<crate::accumulate::Accumulator>>>,
    /// Cancelled when the consumer is done (`close()` or drop): the reader ends quietly.
    closed: CancellationToken,
    credit: Arc<Credit>,
}

impl std::fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamHandle")
    }
}

impl StreamHandle {
    pub(crate) fn new(job: Job) -> Self {
        StreamHandle {
            job: Some(job),
            text: None,
            closed: CancellationToken::new(),
            credit: Arc::new(Credit::default()),
        }
    }

    /// Sends the request and starts pushing deliveries to `sink`. Does nothing the second time.
    /// Text mode, before `start`: each delivery is one string, the first choice's content of
    /// the chunks it stands for; the chunks are merged in Rust for [`StreamHandle::final_completion`].
    pub fn text_mode(&mut self) {
        if self.job.is_some() {
            self.text.get_or_insert_with(Default::default);
        }
    }

    /// Text mode: the chunks so far merged into one `ChatCompletion` (JSON text).
    pub fn final_completion(&self) -> Option<String> {
        let merged = self.text.as_ref()?;
        Some(
            merged
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .completion(),
        )
    }

    /// `here`: the reader's first poll runs on this thread ([`crate::eager`]: for a lone stream,
    /// whose request is then written here); otherwise it is spawned onto the runtime.
    pub fn start(&mut self, sink: Sink, here: bool) {
        if let Some(job) = self.job.take() {
            let reader = Arc::new(Reader {
                sink,
                credit: self.credit.clone(),
                delivered: Default::default(),
                used_tokens: Default::default(),
                text: self.text.clone(),
                recording: Default::default(),
            });
            let reading = job(reader.clone(), self.closed.clone());
            let reading = async move {
                // A bug must still end the consumer's wait, never leave it hanging.
                if AssertUnwindSafe(reading).catch_unwind().await.is_err() {
                    reader.fail(Error::new(
                        Kind::Internal,
                        "llmpool internal error (a bug: please report it)",
                    ));
                }
            };
            if here {
                crate::eager::spawn(&tokio::runtime::Handle::current(), reading);
            } else {
                drop(tokio::spawn(reading));
            }
        }
    }

    /// A token that closes this stream from elsewhere.
    pub fn closer(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// The consumer used `events` more deliveries' items (payloads or byte chunks, in order):
    /// their credit returns to the reader, which reads on once the window has room.
    pub fn ack(&self, events: usize) {
        self.credit.refund(events);
    }

    /// The consumer is done: the request is cancelled and its connection closed.
    pub fn close(&mut self) {
        self.job = None;
        self.closed.cancel();
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

/// The reader's side: where deliveries go, and the credit they spend.
pub(crate) struct Reader {
    sink: Sink,
    credit: Arc<Credit>,
    /// Payloads delivered so far.
    delivered: std::sync::atomic::AtomicU64,
    /// What the usage chunk said the call used (0: none came).
    used_tokens: std::sync::atomic::AtomicU64,
    /// Text mode: where the chunks are merged.
    text: Option<Arc<Mutex<crate::accumulate::Accumulator>>>,
    /// A stream the response cache will keep: its decoded events (boxed: most streams have
    /// none).
    recording: std::sync::OnceLock<Box<Mutex<Recording>>>,
}

/// The events of the attempt in progress, for the response cache.
#[derive(Default)]
struct Recording {
    events: Vec<crate::sse::SseEvent>,
    bytes: usize,
    /// Past this many bytes the stream is not kept.
    limit: usize,
    over: bool,
    /// The attempt ended complete.
    complete: bool,
    /// The attempt runs on a fallback model: not kept for the model asked for.
    fallback: bool,
}

impl Reader {
    /// Keeps this stream's events (at most `limit` bytes) for the response cache.
    pub(crate) fn start_recording(&self, limit: usize) {
        let _ = self.recording.set(Box::new(Mutex::new(Recording {
            limit,
            ..Recording::default()
        })));
    }

    fn recorded(&self, change: impl FnOnce(&mut Recording)) {
        if let Some(recording) = self.recording.get() {
            change(&mut recording.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    /// A new attempt: what an earlier one decoded is not this stream's.
    pub(crate) fn record_from_start(&self) {
        self.recorded(|r| {
            r.events.clear();
            (r.bytes, r.over, r.complete) = (0, false, false);
        });
    }

    fn record(&self, events: &[crate::sse::SseEvent]) {
        self.recorded(|r| {
            if r.over {
                return;
            }
            r.bytes += events.iter().map(|e| e.data.len() + 16).sum::<usize>();
            if r.bytes > r.limit {
                r.over = true;
                r.events = Vec::new();
            } else {
                r.events.extend_from_slice(events);
            }
        });
    }

    fn record_complete(&self) {
        self.recorded(|r| r.complete = true);
    }

    /// Where the next attempt goes: on a fallback model or not.
    pub(crate) fn note_fallback(&self, fallback: bool) {
        self.recorded(|r| r.fallback = fallback);
    }

    /// The events of a stream that ended complete within the limit.
    pub(crate) fn take_recording(&self) -> Option<Vec<crate::sse::SseEvent>> {
        let recording = self.recording.get()?;
        let mut r = recording.lock().unwrap_or_else(|e| e.into_inner());
        (r.complete && !r.over && !r.fallback).then(|| std::mem::take(&mut r.events))
    }

    fn push(&self, events: Vec<String>) {
        self.delivered
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        if self.text.is_some() {
            // The judge left each chunk's text: one string for the whole batch, appended to the
            // one before when the consumer has not taken that yet.
            let text = events.concat();
            if !text.is_empty() {
                self.credit
                    .spend_on(text.len(), || (self.sink)(Delivery::Text(text)));
            }
            return;
        }
        self.credit.spend(events.iter().map(String::len));
        (self.sink)(Delivery::Events(events));
    }

    /// One chunk of a raw body.
    pub(crate) fn push_bytes(&self, chunk: Bytes) {
        self.credit.spend([chunk.len()]);
        (self.sink)(Delivery::Bytes(chunk));
    }

    pub(crate) fn head(&self, status: u16, headers: Vec<(String, String)>) {
        (self.sink)(Delivery::Head { status, headers });
    }

    /// Waits while the consumer is a window behind, telling it so after every acknowledgement
    /// that left the reader held back.
    /// Boxed where it waits: the wait's state would otherwise be part of every open stream's
    /// reader for its whole life.
    pub(crate) async fn wait_for_credit(&self) {
        if !self.credit.full() {
            return;
        }
        Box::pin(async {
            while self.credit.full() {
                (self.sink)(Delivery::Stalled);
                self.credit.wait_for_ack().await;
            }
        })
        .await;
    }

    /// Payloads delivered so far: a routed stream moves to another upstream only before any.
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// What the stream used, for the limiter: its usage chunk's `total_tokens`, else its
    /// content chunks (a token each, about).
    pub(crate) fn tokens_used(&self) -> u64 {
        match self.used_tokens.load(Ordering::Relaxed) {
            0 => self.delivered(),
            n => n,
        }
    }

    pub(crate) fn has_credit(&self) -> bool {
        !self.credit.full()
    }

    pub(crate) fn end(&self) {
        (self.sink)(Delivery::End);
    }

    pub(crate) fn fail(&self, error: Error) {
        (self.sink)(Delivery::Failed(error));
    }
}

/// Tells the consumer how a stream ended: a failure, or (when the consumer left) that nothing
/// more will come. A complete stream already delivered its end.
pub(crate) fn deliver_outcome(
    config: &crate::config::Config,
    outcome: Result<(), Error>,
    reader: &Reader,
    closed: &CancellationToken,
) {
    match outcome {
        Err(e) => reader.fail(e),
        // The consumer left (closed or dropped the stream): a last delivery still tells its
        // side that nothing more will come, so that nothing waits for this stream any more.
        Ok(()) if closed.is_cancelled() => {
            tracing::debug!(
                origin = config.endpoint.origin.as_str(),
                "stream closed by its consumer; connection closed"
            );
            reader.end()
        }
        Ok(()) => {}
    }
}

#[cfg(test)]
pub(crate) mod tests;
