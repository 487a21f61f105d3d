//! The attempt loop, one for every call and every number of upstreams. It decides *whether*:
//! the retry budget (`maxRetries`, spent across upstreams), backoff and `Retry-After`, the
//! attempt deadline and the circuit breaker, and that a call which committed output to its
//! consumer (a stream that yielded a chunk) is not tried again. It asks a [`Route`] *where*:
//! the first upstream, another one after a failure, a wider model after a prompt too long.
//! One `baseUrl` is a route of one stop.
//!
//! A move to another upstream is at once (no backoff: that upstream owes nothing to this one's
//! failure) and spends one retry, unless nothing was sent (its circuit was open). Staying on the
//! last stop left, the loop backs off as the policy says, within what is left of the budget.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use bytes::Bytes;
use futures::future::Either;
use futures::FutureExt;

use crate::breaker::{Admission, CircuitBreaker, Outcome};
use crate::client::Client;
use crate::config::CallOptions;
use crate::error::{Error, Kind};
use crate::pool::Connect;
use crate::retry::Decision;

/// One attempt, boxed: the wrappers below take it by value, and a generic async fn stores its
/// argument and its own copy, so an unboxed attempt would double in size at every layer and be
/// memcpy'd on every move (measured: a 29 KB future per call before attempts were boxed).
pub(crate) type BoxedAttempt<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, Error>> + Send + 'a>>;

/// What kind of call the loop runs, for the retry rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    Chat,
    /// A stream also retries a first-token timeout (the model never started), and only until
    /// `committed` is set.
    Stream,
}

/// Where one attempt goes: an upstream's client (by its index in the route's list, for the
/// caller's bookkeeping) and the body as that upstream is sent it (its own model name).
pub(crate) struct Stop<'r, K: Connect> {
    pub index: usize,
    pub client: &'r Client<K>,
    pub body: Bytes,
    /// The call was moved to a model other than the one it asked for (`fallbacks`,
    /// `contextWindowFallbacks`).
    pub fallback: bool,
}

/// What a route says when a prompt did not fit a model's context window.
pub(crate) enum Wider<'r, K: Connect> {
    /// The route has no wider model for this failure: an ordinary failure.
    NotApplicable,
    /// Try this wider model's upstream (free: the prompt fits no upstream of the old model).
    To(Stop<'r, K>),
    /// A wider model was named but nothing serves it: the failure is final.
    Nowhere,
}

/// Where a call's attempts go (the router's plan for one call). It never decides whether to
/// try again; the loop asks it only once it has decided to.
pub(crate) trait Route<'r, K: Connect>: Send {
    /// The first stop, or why there is none (no upstream serves the model).
    fn first(&mut self) -> Result<Stop<'r, K>, Error>;
    /// Notes a failed attempt at `at` (an upstream that answered 429 with a wait cools down).
    fn failed(&mut self, at: &Stop<'r, K>, error: &Error);
    /// Where the call goes when `error` says its prompt is too long for the model.
    fn wider(&mut self, error: &Error) -> Wider<'r, K>;
    /// Whether another upstream or fallback model is left.
    fn has_another(&self) -> bool;
    /// The next upstream or fallback model, when one serves the call.
    fn another(&mut self) -> Option<Stop<'r, K>>;
    /// The upstreams tried so far, for the final error (empty without routing).
    fn tried(&self) -> Vec<String>;
}

/// Where a call is in the loop: the caller reads it after the loop ended, or was dropped (an
/// abort, `destroy()`, a consumer that left).
#[derive(Default)]
pub(crate) struct Whereabouts {
    /// The index + 1 of the upstream the call is at (0: none yet), its top bit set when that is
    /// on a fallback model. Two 32-bit counters: the pair is one word in every open stream's
    /// reader.
    upstream: AtomicU32,
    /// Attempts made so far, on every upstream.
    pub attempts: AtomicU32,
}

const ON_FALLBACK: u32 = 1 << 31;

impl Whereabouts {
    fn visit(&self, index: usize, fallback: bool) {
        let at = u32::try_from(index + 1)
            .unwrap_or(ON_FALLBACK - 1)
            .min(ON_FALLBACK - 1);
        let flag = if fallback { ON_FALLBACK } else { 0 };
        self.upstream.store(at | flag, Ordering::Relaxed);
    }

    /// The index of the upstream the call is (or was last) at.
    pub(crate) fn upstream(&self) -> Option<usize> {
        match self.upstream.load(Ordering::Relaxed) & !ON_FALLBACK {
            0 => None,
            at => Some(at as usize - 1),
        }
    }

    /// Whether the call is (or ended) on a model other than the one it asked for.
    pub(crate) fn on_fallback(&self) -> bool {
        self.upstream.load(Ordering::Relaxed) & ON_FALLBACK != 0
    }
}

/// One call's run through the loop: its options and the counters the caller reads.
pub(crate) struct Attempts<'a> {
    pub call: &'a CallOptions,
    pub kind: CallKind,
    /// Set once output reached the consumer: from then on a failure is final.
    pub committed: &'a AtomicBool,
    /// Where the call is, for the caller to read even when the loop's future was dropped.
    pub at: &'a Whereabouts,
    /// Calls moved to another upstream or model.
    pub moves: &'a AtomicU64,
}

impl<'a> Attempts<'a> {
    /// Runs `attempt` at the stops `route` names until one succeeds, the policy stops, or
    /// output was committed. The final error carries the number of attempts (across
    /// upstreams) and the upstreams tried. `used` settles a successful call's tokens with the
    /// upstream's limiter.
    ///
    /// A plain function returning a future, not an async fn: an async fn keeps its arguments
    /// twice, and a stream keeps this future for its whole life.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub(crate) fn run<'r: 'a, K: Connect, T: Send + 'a, R: Route<'r, K> + 'a>(
        self,
        route: &'a mut R,
        mut attempt: impl FnMut(&Stop<'r, K>) -> BoxedAttempt<'a, T> + Send + 'a,
        used: impl Fn(&T) -> Option<u64> + Send + 'a,
    ) -> impl std::future::Future<Output = Result<T, Error>> + Send + 'a {
        async move {
            let mut stop = route.first()?;
            let mut budget = self
                .call
                .max_retries
                .unwrap_or(stop.client.retry.max_retries());
            let mut sent = 0u32;
            'visits: loop {
                let client = stop.client;
                if client.is_closing() {
                    return Err(client.closed_error());
                }
                self.at.visit(stop.index, stop.fallback);
                let visit = client.enter(&stop.body).await?;
                // Attempts at this stop: the backoff's exponent.
                let mut here = 0u32;
                loop {
                    here += 1;
                    sent += 1;
                    self.at.attempts.store(sent, Ordering::Relaxed);
                    let result = client
                        .guarded(client.with_deadline(self.call, attempt(&stop)))
                        .await;
                    if let Some(observer) = &self.call.observer {
                        match &result {
                            Ok(_) => observer.0.done(),
                            Err(e) => observer
                                .0
                                .error(e.code(), e.http_failure().map(|h| h.status)),
                        }
                    }
                    let error = match result {
                        Ok(value) => {
                            visit.settle(used(&value));
                            return Ok(value);
                        }
                        Err(error) => error,
                    };
                    if self.committed.load(Ordering::Relaxed) {
                        return Err(finish(error, sent, route.tried()));
                    }
                    route.failed(&stop, &error);
                    match route.wider(&error) {
                        Wider::NotApplicable => {}
                        Wider::Nowhere => return Err(finish(error, sent, route.tried())),
                        Wider::To(wider) => {
                            client.tally(visit.started(), Some(&error));
                            self.moves.fetch_add(1, Ordering::Relaxed);
                            stop = wider;
                            continue 'visits;
                        }
                    }
                    let retryable = match self.kind {
                        CallKind::Stream => crate::retry::stream_may_retry(&client.retry, &error),
                        CallKind::Chat => client.retry.is_retryable(&error),
                    };
                    // Refused before anything was sent (circuit open): moving costs nothing,
                    // staying is pointless.
                    let unsent = error.kind() == Kind::CircuitOpen;
                    if route.has_another() {
                        if !(unsent || (budget > 0 && retryable)) {
                            return Err(finish(error, sent, route.tried()));
                        }
                        let Some(next) = route.another() else {
                            return Err(finish(error, sent, route.tried()));
                        };
                        if !unsent {
                            budget -= 1;
                        }
                        self.moves.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            origin = client.origin(),
                            code = error.code(),
                            "moving the call to another upstream"
                        );
                        client.tally(visit.started(), Some(&error));
                        stop = next;
                        continue 'visits;
                    }
                    if !retryable || unsent {
                        return Err(finish(error, sent, route.tried()));
                    }
                    let decision = if budget == 0 {
                        Decision::Stop
                    } else {
                        client.retry.decide(
                            &error,
                            here,
                            u32::MAX,
                            crate::retry::jitter(),
                            std::time::SystemTime::now(),
                        )
                    };
                    let delay = match decision {
                        Decision::RetryAfter(delay) => delay,
                        Decision::Stop => return Err(finish(error, sent, route.tried())),
                        Decision::StopServerAskedTooLong(asked) => {
                            return Err(finish(error, sent, route.tried()).with_retry_after(asked))
                        }
                    };
                    budget -= 1;
                    client.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        origin = client.origin(),
                        attempt = sent,
                        code = error.code(),
                        delay_ms = delay.as_millis() as u64,
                        "retrying"
                    );
                    // Boxed: a timer only a retry needs, not every open stream for its life.
                    Box::pin(tokio::time::sleep(delay)).await;
                }
            }
        }
    }
}

/// The final error of a call: how many attempts it made and where.
fn finish(error: Error, attempts: u32, tried: Vec<String>) -> Error {
    error.with_attempts(attempts).with_upstreams(tried)
}

impl<K: Connect> Client<K> {
    /// Runs one attempt within the attempt deadline (`timeout`, or the call's override).
    pub(crate) fn with_deadline<'a, T: 'a>(
        &'a self,
        call: &CallOptions,
        attempt: BoxedAttempt<'a, T>,
    ) -> BoxedAttempt<'a, T> {
        match call.timeout.unwrap_or(self.config.timeout) {
            None => attempt,
            Some(limit) => Box::pin(tokio::time::timeout(limit, attempt).map(move |within| {
                within.unwrap_or_else(|_| {
                    Err(Error::timed_out(
                        Kind::Timeout,
                        self.origin(),
                        "before the response was complete",
                        limit,
                    ))
                })
            })),
        }
    }

    /// Runs one attempt through the circuit breaker, when there is one: refused at once while the
    /// circuit is open, and its outcome recorded. Without a breaker the attempt runs as it is;
    /// with one, the bookkeeping is boxed around it.
    pub(crate) fn guarded<'a, T: 'a, F>(&'a self, attempt: F) -> Either<F, BoxedAttempt<'a, T>>
    where
        F: std::future::Future<Output = Result<T, Error>> + Send + 'a,
    {
        let Some(breaker) = &self.breaker else {
            return Either::Left(attempt);
        };
        Either::Right(Box::pin(async move {
            let probe = match breaker.admit(tokio::time::Instant::now()) {
                Admission::Allowed { probe } => probe,
                Admission::Rejected { retry_in } => {
                    return Err(Error::new(
                        Kind::CircuitOpen,
                        format!(
                            "circuit to {} is open after repeated failures; next try in {} ms",
                            self.origin(),
                            retry_in.as_millis()
                        ),
                    ))
                }
            };
            // Records `Abandoned` if the attempt is dropped (abort, destroy) before it ends.
            let mut record = BreakerRecord {
                breaker,
                probe,
                outcome: Outcome::Abandoned,
            };
            let result = attempt.await;
            record.outcome = match &result {
                Err(e) if self.retry.is_retryable(e) => Outcome::RetryableFailure,
                Err(e) if e.is_cancelled() => Outcome::Abandoned,
                _ => Outcome::Success,
            };
            result
        }))
    }
}

/// Records an attempt's outcome in the breaker when dropped, so that a cancelled attempt is
/// recorded too.
struct BreakerRecord<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    outcome: Outcome,
}

impl Drop for BreakerRecord<'_> {
    fn drop(&mut self) {
        self.breaker
            .record(self.probe, self.outcome, tokio::time::Instant::now());
    }
}
