//! One attempt of a stream: sending, the first-token deadline, the read loop (decode, judge,
//! deliver under credit), and finishing after `[DONE]` or at the body's end.

use super::*;

/// After `[DONE]`, how long the consumer's end of stream waits for the end of the body. Servers
/// send it right behind `[DONE]`; waiting for it puts the connection back in the pool before the
/// consumer's next request, so sequential streams share one socket.
pub(super) const DONE_GRACE: Duration = Duration::from_millis(50);

/// After that, how long the reader keeps waiting, in the background, for the body to end so that
/// the connection can be reused; a server that keeps the body open longer has it closed instead.
pub(super) const DRAIN_AFTER_DONE: Duration = Duration::from_secs(2);

/// What one read's events amount to.
pub(super) enum Batch {
    /// Go on reading.
    More,
    /// `[DONE]` was seen.
    Done,
}

/// Where a stream goes and which rules it follows.
pub(crate) struct StreamTarget {
    pub(crate) uri: Uri,
    pub(crate) body: Bytes,
    pub(crate) dialect: Dialect,
}

/// Sends the request and pumps events until the stream is complete or fails. Delivers `End`
/// itself (before draining the body for reuse); the caller delivers failures.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub(crate) fn stream_attempt<'a, K: Connect>(
    client: &'a Client<K>,
    // Boxed: the attempt keeps its target for its life, and a pointer is smaller than the two.
    target: Box<StreamTarget>,
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
            let exchange = client.observed_exchange(
                Outgoing {
                    method: Method::POST,
                    uri: &target.uri,
                    // A new handle on the same bytes, made here: the reader does not keep one.
                    body: target.body.clone(),
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

        reader.record_from_start();
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
                    reader.record_complete();
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
            reader.record(&events);
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
            if progress.input_tokens.is_some() || progress.output_tokens.is_some() {
                client
                    .metrics
                    .tokens_used(progress.input_tokens.take(), progress.output_tokens.take());
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
                reader.record_complete();
                // Boxed: its two timers are needed once, at the end, not for the stream's life.
                Box::pin(finish_after_done(incoming, lease, lifetime, reader)).await;
                return Ok(());
            }
        }
    }
}

/// Events the response cache kept, replayed through the same judge (and, in text mode, the
/// same merge) as a stream from the network: the same payloads in the same order, then the end.
pub(crate) async fn replay<K: Connect>(
    client: &Client<K>,
    dialect: Dialect,
    recorded: &[crate::sse::SseEvent],
    reader: &Reader,
) -> Result<(), Error> {
    const BATCH: usize = 64;
    let mut progress = Progress {
        merge: reader.text.clone(),
        ..Progress::default()
    };
    for batch in recorded.chunks(BATCH) {
        reader.wait_for_credit().await;
        let mut events = batch.to_vec();
        let mut payloads = Vec::with_capacity(events.len());
        let outcome = judge_events(client, dialect, &mut events, &mut payloads, &mut progress);
        if !payloads.is_empty() {
            reader.push(payloads);
        }
        if let Batch::Done = outcome? {
            break;
        }
    }
    reader.end();
    Ok(())
}

/// After `[DONE]`: the body's end (normally at once) lets the connection go back to the pool; a
/// server slow to end it gets the consumer's end first and a while to finish in the background.
pub(super) async fn finish_after_done<K: Connect>(
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
pub(super) async fn json_instead_of_events<K: Connect>(
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

/// A stream's one timer (the first token, then the gap between tokens). Re-armed after every
/// batch, but lazily: a later deadline is only written down, and the sleep, when it wakes early,
/// goes back to sleep until it. (A timer made and dropped per frame takes the timer wheel's lock
/// twice; resetting one per frame costs nearly as much.)
pub(super) struct Watchdog {
    pub(super) sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// The deadline now in force (`None`: none).
    pub(super) due: Option<Instant>,
}

impl Watchdog {
    pub(super) fn new(deadline: Option<Instant>) -> Self {
        Watchdog {
            // Without a deadline the sleep is never polled, so its instant does not matter.
            sleep: Box::pin(tokio::time::sleep_until(
                deadline.unwrap_or_else(Instant::now),
            )),
            due: deadline,
        }
    }

    /// Sets the deadline (`None`: none).
    pub(super) fn arm(&mut self, deadline: Option<Instant>) {
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
    pub(super) async fn expired(&mut self) {
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
pub(super) async fn body_end<B: hyper::body::Body + Unpin>(incoming: &mut B) -> bool {
    loop {
        match incoming.frame().await {
            None => return true,
            Some(Ok(_)) => {}
            Some(Err(_)) => return false,
        }
    }
}

/// Whether a response's `Content-Type` says JSON (an answer where an event stream was asked for).
pub(super) fn is_json_content(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
}
