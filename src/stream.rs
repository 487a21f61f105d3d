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

use crate::attempt::{BoxedAttempt, CallKind};
use crate::cancel::Abort;
use crate::client::Client;
use crate::config::CallOptions;
use crate::conn::Connection;
use crate::error::{Error, Kind};
use crate::exchange::{Accept, Outgoing, MAX_ERROR_BODY};
use crate::payload::{inspect, provider_message};
use crate::pool::Connect;
use crate::sse::SseDecoder;

/// Most events delivered and not yet acknowledged before the reader stops reading.
pub const WINDOW_EVENTS: usize = 256;
/// Most payload bytes delivered and not yet acknowledged before the reader stops reading. One
/// event larger than this still passes, alone: the window never holds back an event the decoder
/// accepted (`maxEventSize` bounds that).
pub const WINDOW_BYTES: usize = 1024 * 1024;

/// After `[DONE]`, how long the consumer's end of stream waits for the end of the body. Servers
/// send it right behind `[DONE]`; waiting for it puts the connection back in the pool before the
/// consumer's next request, so sequential streams share one socket.
const DONE_GRACE: Duration = Duration::from_millis(50);

/// After that, how long the reader keeps waiting, in the background, for the body to end so that
/// the connection can be reused; a server that keeps the body open longer has it closed instead.
const DRAIN_AFTER_DONE: Duration = Duration::from_secs(2);

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

/// Sizes of the events delivered and not yet acknowledged, and a wake-up for a reader waiting
/// for room. The consumer acknowledges in events; the sizes let the byte window follow exactly.
#[derive(Debug, Default)]
pub(crate) struct Credit {
    unacked: Mutex<Unacked>,
    room: Notify,
}

#[derive(Debug, Default)]
struct Unacked {
    /// 32 bits each: every open stream keeps this deque's capacity (up to `WINDOW_EVENTS`
    /// entries) for its life, and no delivery nears 4 GiB (the byte window stops the reader at
    /// 1 MiB; a size past `u32::MAX` would be counted as `u32::MAX`, on both sides).
    sizes: VecDeque<u32>,
    bytes: usize,
}

/// An event's size as the deque keeps it.
fn size32(size: usize) -> u32 {
    u32::try_from(size).unwrap_or(u32::MAX)
}

impl Credit {
    fn lock(&self) -> std::sync::MutexGuard<'_, Unacked> {
        self.unacked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn full(&self) -> bool {
        let unacked = self.lock();
        unacked.sizes.len() >= WINDOW_EVENTS || unacked.bytes >= WINDOW_BYTES
    }

    /// Returns at the next acknowledgement (at once if there is room already).
    async fn wait_for_ack(&self) {
        let notified = self.room.notified();
        if !self.full() {
            return;
        }
        notified.await;
    }

    fn spend(&self, sizes: impl IntoIterator<Item = usize>) {
        let mut unacked = self.lock();
        for size in sizes {
            let size = size32(size);
            unacked.sizes.push_back(size);
            unacked.bytes += size as usize;
        }
    }

    /// Spends `size` bytes on what `post` delivers: one more event, or, when `post` says it
    /// merged the delivery into the newest one not yet taken, more bytes on that event. `post`
    /// runs under the lock, so no acknowledgement can come between it and the bookkeeping.
    fn spend_on(&self, size: usize, post: impl FnOnce() -> bool) {
        let mut unacked = self.lock();
        let merged = post();
        let size = size32(size);
        let added = match unacked.sizes.back_mut() {
            Some(last) if merged => {
                let before = *last;
                *last = last.saturating_add(size);
                *last - before
            }
            _ => {
                unacked.sizes.push_back(size);
                size
            }
        };
        unacked.bytes += added as usize;
    }

    fn refund(&self, events: usize) {
        {
            let mut unacked = self.lock();
            for _ in 0..events {
                match unacked.sizes.pop_front() {
                    Some(size) => unacked.bytes -= size as usize,
                    None => break,
                }
            }
        }
        self.room.notify_one();
    }
}

/// One stream's request on one client.
pub(crate) struct StreamRequest<K: Connect> {
    pub client: Arc<Client<K>>,
    pub uri: Uri,
    pub dialect: Dialect,
    pub body: Bytes,
    pub call: CallOptions,
    pub cancel: Abort,
}

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

impl<K: Connect> Client<K>
where
    K::Conn: Connection,
{
    /// A chat stream (`body` is the JSON text, with `stream: true`). Nothing is sent before
    /// [`StreamHandle::start`].
    pub fn chat_stream(
        self: &Arc<Self>,
        body: Bytes,
        call: CallOptions,
        cancel: Abort,
    ) -> StreamHandle {
        self.stream(self.chat_uri.clone(), Dialect::Chat, body, call, cancel)
    }

    /// A stream from any SSE endpoint at `uri`, POSTing `body`.
    pub fn stream(
        self: &Arc<Self>,
        uri: Uri,
        dialect: Dialect,
        body: Bytes,
        call: CallOptions,
        cancel: Abort,
    ) -> StreamHandle {
        let request = StreamRequest {
            client: self.clone(),
            uri,
            dialect,
            body,
            call,
            cancel,
        };
        StreamHandle::new(Box::new(move |reader, closed| {
            Box::pin(read_stream(request, reader, closed))
        }))
    }
}

impl<K: Connect> Client<K> {
    /// A reader's attempts, ended quietly (`Ok`) when the consumer leaves: nobody is listening.
    /// (A future-returning fn, not an async fn, so that its arguments are kept once.)
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub(crate) fn read_until_closed<'a>(
        &'a self,
        call: &'a CallOptions,
        kind: CallKind,
        committed: &'a AtomicBool,
        closed: &'a CancellationToken,
        attempt: impl FnMut() -> BoxedAttempt<'a, ()> + 'a,
    ) -> impl std::future::Future<Output = Result<(), Error>> + 'a {
        // The attempts future is made inside the select: made outside, it would be kept twice.
        async move {
            tokio::select! {
                biased;
                _ = crate::cancel::cancelled(closed) => Ok(()),
                result = self.attempts(call, kind, committed, attempt) => result,
            }
        }
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

    pub fn start(&mut self, sink: Sink) {
        if let Some(job) = self.job.take() {
            let reader = Arc::new(Reader {
                sink,
                credit: self.credit.clone(),
                delivered: Default::default(),
                used_tokens: Default::default(),
                text: self.text.clone(),
            });
            let reading = job(reader.clone(), self.closed.clone());
            tokio::spawn(async move {
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
}

impl Reader {
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

/// A stream's reader on one client. A future-returning fn, not an async fn, which would keep
/// the request twice.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn read_stream<K: Connect>(
    request: StreamRequest<K>,
    reader: Arc<Reader>,
    closed: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    K::Conn: Connection,
{
    async move {
        let outcome = stream_outcome(&request, &reader, &closed).await;
        deliver_outcome(&request.client, outcome, &reader, &closed);
    }
}

/// Tells the consumer how a stream ended: a failure, or (when the consumer left) that nothing
/// more will come. A complete stream already delivered its end.
pub(crate) fn deliver_outcome<K: Connect>(
    client: &Client<K>,
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
                origin = client.origin(),
                "stream closed by its consumer; connection closed"
            );
            reader.end()
        }
        Ok(()) => {}
    }
}

/// A stream's whole run on one client (one upstream): attempts, limits, the call's counting;
/// its outcome returned, not delivered, so that a router may take it elsewhere first.
///
/// The request is borrowed, not taken: an async fn keeps its arguments for its whole life, so a
/// request passed by value would be held twice (three times with the caller's) by every open
/// stream.
pub(crate) async fn stream_outcome<K: Connect>(
    request: &StreamRequest<K>,
    reader: &Reader,
    closed: &CancellationToken,
) -> Result<(), Error>
where
    K::Conn: Connection,
{
    let StreamRequest {
        client,
        uri,
        dialect,
        body,
        call,
        cancel,
    } = request;
    let (client, dialect) = (&**client, *dialect);
    // Set once a chunk reached the consumer: from then on a failure is final, never retried.
    let committed = AtomicBool::new(false);
    let attempt = || {
        let one: BoxedAttempt<'_, ()> = Box::pin(stream_attempt(
            client,
            StreamTarget { uri, dialect },
            body,
            call,
            reader,
            &committed,
        ));
        one
    };
    let reading = client.read_until_closed(call, CallKind::Stream, &committed, closed, attempt);
    let work = client.within_limits(body, reading, |_| Some(reader.tokens_used()));
    // Boxed: a future passed by value into `run` is laid out in it more than once (rustc keeps
    // the argument's slot and the select's), about 2 KB per open stream, held for its life.
    client.run(cancel.as_ref(), call, Box::pin(work)).await
}

/// What one read's events amount to.
enum Batch {
    /// Go on reading.
    More,
    /// `[DONE]` was seen.
    Done,
}

/// Where a stream goes and which rules it follows.
#[derive(Clone, Copy)]
struct StreamTarget<'a> {
    uri: &'a Uri,
    dialect: Dialect,
}

/// Sends the request and pumps events until the stream is complete or fails. Delivers `End`
/// itself (before draining the body for reuse); the caller delivers failures.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
fn stream_attempt<'a, K: Connect>(
    client: &'a Client<K>,
    target: StreamTarget<'a>,
    body: &'a Bytes,
    call: &'a CallOptions,
    reader: &'a Reader,
    committed: &'a AtomicBool,
) -> impl std::future::Future<Output = Result<(), Error>> + Send + 'a
where
    K::Conn: Connection,
{
    // A future-returning fn, not an async fn: its arguments are kept once, not twice.
    async move {
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

        // Boxed, with its deadline and the response head: the sending (checkout, connect, the
        // request) is over before the stream's long read begins, and inline it would be part of
        // every open stream's memory for the stream's life. Only what the read needs comes out.
        let sending = Box::pin(async {
            let exchange = client.exchange(
                Outgoing {
                    method: Method::POST,
                    uri: target.uri,
                    // A new handle on the same bytes, made here: the reader does not keep one.
                    body: body.clone(),
                    accept: Accept::EventStream,
                },
                call,
            );
            let exchanged = match first_token_deadline {
                None => exchange.await?,
                Some(at) => tokio::time::timeout_at(at, exchange)
                    .await
                    .map_err(|_| first_token_error())??,
            };
            // The head is not held through the body (see `crate::exchange::Exchanged::lifetime`).
            let json = is_json_content(&exchanged.head.headers);
            Ok::<_, Error>((exchanged.body, exchanged.lease, exchanged.lifetime, json))
        });
        let (mut incoming, lease, lifetime, json) = sending.await?;
        if json {
            // The server ignored `stream: true` or failed with a 200 JSON error. Boxed: rare.
            return Err(Box::pin(json_instead_of_events(client, incoming)).await);
        }

        let mut decoder = SseDecoder::new(config.max_event_size);
        let mut events = Vec::new();
        let mut delivered: u64 = 0;
        let mut progress = Progress {
            merge: reader.text.clone(),
            ..Progress::default()
        };
        let mut first_token_at: Option<Instant> = None;
        let mut watchdog = Watchdog::new(first_token_deadline);
        loop {
            if !reader.has_credit() {
                // The consumer is behind: stop reading until it catches up. A slow consumer is not a
                // stalled model, so the token gap restarts once there is room again.
                reader.wait_for_credit().await;
                if first_token_at.is_some() {
                    watchdog.arm(token_gap.map(|gap| Instant::now() + gap));
                }
            }
            let frame = tokio::select! {
                biased;
                _ = watchdog.expired() => {
                    return Err(if first_token_at.is_some() {
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
                    decoder.finish();
                    // The body ended cleanly, so the connection is reusable either way.
                    lease.release(lifetime);
                    if !progress.complete(target.dialect) {
                        return Err(Error::new(
                            Kind::StreamTruncated,
                            format!(
                                "stream from {} ended before it was complete ({})",
                                client.origin(),
                                match target.dialect {
                                    Dialect::Chat => "no [DONE] and no finish_reason",
                                    Dialect::Events => "no response.completed",
                                }
                            ),
                        ));
                    }
                    // No [DONE], but a finish_reason was seen: complete (some servers end so).
                    if let Some(at) = first_token_at {
                        client.metrics.stream_rate(delivered, at.elapsed());
                    }
                    reader.end();
                    return Ok(());
                }
                Some(Err(e)) => {
                    return Err(client.socket_error("broke during the stream", &e));
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
            let outcome = judge_events(
                client,
                target.dialect,
                &mut events,
                &mut payloads,
                &mut progress,
            );
            if let Some(used) = progress.total_tokens.take() {
                reader.used_tokens.store(used, Ordering::Relaxed);
            }
            if !payloads.is_empty() {
                if first_token_at.is_none() {
                    first_token_at = Some(Instant::now());
                    client.metrics.first_token_after(started.elapsed());
                }
                delivered += payloads.len() as u64;
                committed.store(true, Ordering::Relaxed);
                // Payloads before a failing event still reach the consumer, in order, first.
                reader.push(payloads);
                watchdog.arm(token_gap.map(|gap| Instant::now() + gap));
            }
            if let Batch::Done = outcome? {
                if let Some(at) = first_token_at {
                    client.metrics.stream_rate(delivered, at.elapsed());
                }
                // Boxed: its two timers are needed once, at the end, not for the stream's life.
                Box::pin(finish_after_done(incoming, lease, lifetime, reader)).await;
                return Ok(());
            }
        }
    }
}

/// After `[DONE]`: the body's end (normally at once) lets the connection go back to the pool; a
/// server slow to end it gets the consumer's end first and a while to finish in the background.
async fn finish_after_done<K: Connect>(
    mut incoming: <K::Conn as Connection>::Body,
    lease: crate::pool::Lease<K>,
    lifetime: Option<Duration>,
    reader: &Reader,
) where
    K::Conn: Connection,
{
    match tokio::time::timeout(DONE_GRACE, body_end(&mut incoming)).await {
        Ok(true) => lease.release(lifetime),
        Ok(false) => drop(lease),
        Err(_) => {
            reader.end();
            if let Ok(true) = tokio::time::timeout(DRAIN_AFTER_DONE, body_end(&mut incoming)).await
            {
                lease.release(lifetime);
            }
            return;
        }
    }
    reader.end();
}

/// A 200 answer in JSON to a stream request: the provider's error when it is one (redacted
/// later), else `ERR_INVALID_RESPONSE`.
async fn json_instead_of_events<K: Connect>(
    client: &Client<K>,
    incoming: <K::Conn as Connection>::Body,
) -> Error
where
    K::Conn: Connection,
{
    let read = match client.read_body(incoming, MAX_ERROR_BODY).await {
        Ok(read) => read,
        Err(e) => return e,
    };
    let text = String::from_utf8_lossy(&read.bytes).into_owned();
    match inspect(&text) {
        Ok(found) if found.error => stream_error(client, text),
        _ => Error::new(
            Kind::InvalidResponse,
            format!(
                "{} answered with JSON instead of an event stream",
                client.origin()
            ),
        ),
    }
}

/// What the events so far say about the stream's end.
#[derive(Debug, Default)]
struct Progress {
    /// Chat: some chunk had a `finish_reason`.
    finished: bool,
    /// Events: `response.*` events were seen and none ended the stream.
    open_response: bool,
    /// Chat: the usage chunk's `usage.total_tokens` (`stream_options.include_usage`).
    total_tokens: Option<u64>,
    /// Text mode: chunks are judged and merged here in one scan, and only their text goes on.
    merge: Option<Arc<Mutex<crate::accumulate::Accumulator>>>,
}

impl Progress {
    /// Whether a body that ends now ended a complete stream.
    fn complete(&self, dialect: Dialect) -> bool {
        match dialect {
            Dialect::Chat => self.finished,
            Dialect::Events => !self.open_response,
        }
    }
}

/// What one decoded event means.
enum Verdict {
    Skip,
    Deliver(String),
    /// Deliver it, and the stream is complete.
    Last(String),
    Done,
    Fail(Error),
}

/// Decides each decoded event in order: payloads to deliver go to `payloads`; the first event
/// that ends the stream stops the judging, and what follows it is dropped.
fn judge_events<K: Connect>(
    client: &Client<K>,
    dialect: Dialect,
    events: &mut Vec<crate::sse::SseEvent>,
    payloads: &mut Vec<String>,
    progress: &mut Progress,
) -> Result<Batch, Error> {
    for event in events.drain(..) {
        match judge(client, dialect, event, progress) {
            Verdict::Skip => {}
            Verdict::Deliver(payload) => payloads.push(payload),
            Verdict::Last(payload) => {
                payloads.push(payload);
                return Ok(Batch::Done);
            }
            Verdict::Done => return Ok(Batch::Done),
            Verdict::Fail(e) => return Err(e),
        }
    }
    Ok(Batch::More)
}

/// One event under the dialect's rules (see [`Dialect`]).
fn judge<K: Connect>(
    client: &Client<K>,
    dialect: Dialect,
    event: crate::sse::SseEvent,
    progress: &mut Progress,
) -> Verdict {
    let name = event.event.as_deref().unwrap_or("message");
    let data = event.data;
    let failed_event = match dialect {
        Dialect::Chat => name == "error",
        Dialect::Events => name == "error" || name == "response.failed",
    };
    if failed_event {
        return Verdict::Fail(stream_error(client, data));
    }
    let trimmed = data.trim();
    if trimmed == "[DONE]" {
        return Verdict::Done;
    }
    if trimmed.is_empty() {
        return Verdict::Skip;
    }
    let bad = |what: &str| {
        Verdict::Fail(Error::new(
            Kind::InvalidResponse,
            format!("stream from {} sent {what}", client.origin()),
        ))
    };
    if let (Dialect::Chat, Some(merge)) = (dialect, &progress.merge) {
        let judged = merge
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .judge_add(&data);
        return match judged {
            Err(_) => bad("a chunk that is not a JSON object"),
            Ok(found) if found.error => Verdict::Fail(stream_error(client, data)),
            Ok(found) => {
                progress.finished |= found.finished;
                progress.total_tokens = found.total_tokens.or(progress.total_tokens);
                Verdict::Deliver(found.text)
            }
        };
    }
    match dialect {
        Dialect::Chat => match inspect(&data) {
            Err(_) => bad("a chunk that is not a JSON object"),
            Ok(found) if found.error => Verdict::Fail(stream_error(client, data)),
            Ok(found) => {
                progress.finished |= found.finished;
                progress.total_tokens = found.total_tokens.or(progress.total_tokens);
                Verdict::Deliver(data)
            }
        },
        Dialect::Events => {
            let valid = if trimmed.starts_with('{') {
                match inspect(&data) {
                    Ok(found) if found.error => return Verdict::Fail(stream_error(client, data)),
                    found => found.is_ok(),
                }
            } else {
                crate::payload::is_json(&data)
            };
            if !valid {
                return bad("an event whose data is not JSON");
            }
            // U+001E never reaches a consumer (see `Delivery::Events`).
            let payload = format!("{}\n{data}", name.replace('\u{1e}', "\u{fffd}"));
            if matches!(name, "response.completed" | "response.incomplete") {
                progress.open_response = false;
                return Verdict::Last(payload);
            }
            progress.open_response |= name.starts_with("response.");
            Verdict::Deliver(payload)
        }
    }
}

/// A stream's one timer (the first token, then the gap between tokens). Re-armed after every
/// batch, but lazily: a later deadline is only written down, and the sleep, when it wakes early,
/// goes back to sleep until it. (A timer made and dropped per frame takes the timer wheel's lock
/// twice; resetting one per frame costs nearly as much.)
struct Watchdog {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// The deadline now in force (`None`: none).
    due: Option<Instant>,
}

impl Watchdog {
    fn new(deadline: Option<Instant>) -> Self {
        Watchdog {
            // Without a deadline the sleep is never polled, so its instant does not matter.
            sleep: Box::pin(tokio::time::sleep_until(
                deadline.unwrap_or_else(Instant::now),
            )),
            due: deadline,
        }
    }

    /// Sets the deadline (`None`: none).
    fn arm(&mut self, deadline: Option<Instant>) {
        if let Some(at) = deadline {
            // An earlier deadline (or one after none) must move the sleep now; a later one
            // waits for the sleep to wake.
            if self.due.is_none() || at < self.sleep.deadline() {
                self.sleep.as_mut().reset(at);
            }
        }
        self.due = deadline;
    }

    /// Ready when the deadline passes; never without one.
    async fn expired(&mut self) {
        let Some(due) = self.due else {
            return std::future::pending().await;
        };
        loop {
            self.sleep.as_mut().await;
            if due <= self.sleep.deadline() {
                return;
            }
            self.sleep.as_mut().reset(due);
        }
    }
}

/// Reads what follows `[DONE]` (normally nothing but the end of the body): true if the body
/// ended cleanly, false if it broke.
async fn body_end<B: hyper::body::Body + Unpin>(incoming: &mut B) -> bool {
    loop {
        match incoming.frame().await {
            None => return true,
            Some(Ok(_)) => {}
            Some(Err(_)) => return false,
        }
    }
}

/// Whether a response's `Content-Type` says JSON (an answer where an event stream was asked for).
fn is_json_content(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
}

/// An error the provider reported inside the stream; its payload goes with it (redacted on the
/// way out, in `Client::run`).
fn stream_error<K: Connect>(client: &Client<K>, payload: String) -> Error {
    let message = provider_message(&payload).unwrap_or_else(|| "no message".to_owned());
    Error::provider(
        Kind::StreamError,
        format!("{} sent an error in the stream: {message}", client.origin()),
        payload,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A regression guard, as for `chat()`: the spawned reader future is moved when spawned, and
    /// it and the attempt are held by every open stream.
    #[test]
    fn the_stream_reader_future_stays_small() {
        let config = crate::config::Config::from_json(
            &serde_json::json!({ "baseUrl": "http://127.0.0.1:1" }),
        )
        .unwrap();
        let client = Arc::new(Client::new(config).unwrap());
        let reader = Arc::new(Reader {
            sink: Box::new(|_| false),
            credit: Arc::default(),
            delivered: Default::default(),
            used_tokens: Default::default(),
            text: None,
        });
        let request = StreamRequest {
            uri: client.chat_uri.clone(),
            dialect: Dialect::Chat,
            client,
            body: Bytes::new(),
            call: CallOptions::default(),
            cancel: None,
        };
        {
            // The attempt is boxed, but lives as long as the stream: its sending, the send's
            // deadline, the JSON-answer path, the wait for credit and the drain after [DONE] are
            // boxed apart, taken only when used, and its arguments are kept once (not as an
            // async fn's two copies) (1,376 → 856 → 680 bytes).
            let (call, committed, body) =
                (CallOptions::default(), AtomicBool::new(false), Bytes::new());
            let target = StreamTarget {
                uri: &request.uri,
                dialect: Dialect::Chat,
            };
            let attempt =
                stream_attempt(&request.client, target, &body, &call, &reader, &committed);
            let size = std::mem::size_of_val(&attempt);
            assert!(size <= 768, "stream attempt future is {size} bytes");

            // The attempt loop around it (boxed by `stream_outcome`, held as long): 760 bytes
            // while the deadline and breaker wrappers were async fns, each keeping the attempt
            // it was given and the one it awaited; now they hand the attempt on as it is.
            let closed = CancellationToken::new();
            let attempts = request.client.read_until_closed(
                &call,
                CallKind::Stream,
                &committed,
                &closed,
                || -> BoxedAttempt<'_, ()> { Box::pin(async { Ok(()) }) },
            );
            let size = std::mem::size_of_val(&attempts);
            assert!(size <= 384, "stream attempt loop future is {size} bytes");
        }
        // Every open stream holds it: 3.9 KB before `run` was handed a boxed work, 1,312 bytes
        // before `stream_outcome` borrowed the request (an argument taken by value is kept for
        // the future's whole life) and `Error` was boxed, 816 before `read_stream` kept its
        // request once (an async fn keeps it as passed and as its own local): 544.
        let future = read_stream(request, reader, CancellationToken::new());
        let size = std::mem::size_of_val(&future);
        assert!(size <= 640, "stream reader future is {size} bytes");
    }

    #[test]
    fn credit_text_merged_into_a_pending_delivery_is_one_event_to_acknowledge() {
        let credit = Credit::default();
        credit.spend_on(WINDOW_BYTES / 2, || false);
        // Merged: the same event grows past the byte window…
        credit.spend_on(WINDOW_BYTES / 2, || true);
        assert!(credit.full());
        assert_eq!(credit.lock().sizes.len(), 1);
        // …and acknowledging that one event frees all of it.
        credit.refund(1);
        assert!(!credit.full());
        assert_eq!(credit.lock().bytes, 0);
        // Not merged: two events, two acknowledgements.
        for _ in 0..WINDOW_EVENTS {
            credit.spend_on(1, || false);
        }
        assert!(credit.full());
        credit.refund(WINDOW_EVENTS - 1);
        assert!(!credit.full());
        assert_eq!(credit.lock().bytes, 1);
    }

    #[test]
    fn credit_one_event_larger_than_the_window_passes_alone() {
        let credit = Credit::default();
        credit.spend([WINDOW_BYTES * 3]);
        assert!(credit.full());
        credit.refund(1);
        assert!(!credit.full());
    }
}
