//! The attempt loop, one for every kind of call: each attempt runs within the attempt deadline
//! and through the circuit breaker; a failed one is retried under the retry policy (backoff,
//! `Retry-After`), unless the call already committed output to its consumer (a stream that
//! yielded a chunk), after which a failure is final.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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

impl<K: Connect> Client<K> {
    /// Runs `attempt` until it succeeds, the policy stops, or `committed` says output reached the
    /// consumer. The final error carries the number of attempts.
    ///
    /// This and the two wrappers below are plain functions returning a future, not async fns:
    /// an async fn keeps its arguments twice (as passed, and as its own locals), and a stream
    /// keeps these futures for its whole life.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub(crate) fn attempts<'a, T: 'a>(
        &'a self,
        call: &'a CallOptions,
        kind: CallKind,
        committed: &'a AtomicBool,
        mut attempt: impl FnMut() -> BoxedAttempt<'a, T> + 'a,
    ) -> impl std::future::Future<Output = Result<T, Error>> + 'a {
        async move {
            let mut n = 1;
            loop {
                let result = self.guarded(self.with_deadline(call, attempt())).await;
                match result {
                    Ok(value) => return Ok(value),
                    Err(error) if committed.load(Ordering::Relaxed) => {
                        return Err(error.with_attempts(n))
                    }
                    Err(error) => {
                        let delay = self.retry_delay(error, n, call, kind)?;
                        // Boxed: a timer only a retry needs, not every open stream for its life.
                        Box::pin(tokio::time::sleep(delay)).await;
                        n += 1;
                    }
                }
            }
        }
    }

    /// Runs one attempt within the attempt deadline (`timeout`, or the call's override).
    fn with_deadline<'a, T: 'a>(
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
    fn guarded<'a, T: 'a, F>(&'a self, attempt: F) -> Either<F, BoxedAttempt<'a, T>>
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

    /// After failed attempt `attempt`: how long to wait before the next one, or the final error
    /// (carrying the number of attempts).
    fn retry_delay(
        &self,
        error: Error,
        attempt: u32,
        call: &CallOptions,
        kind: CallKind,
    ) -> Result<Duration, Error> {
        let max_retries = call.max_retries.unwrap_or(self.retry.max_retries());
        let retryable = match kind {
            CallKind::Stream => crate::retry::stream_may_retry(&self.retry, &error),
            CallKind::Chat => self.retry.is_retryable(&error),
        };
        if !retryable || error.kind() == Kind::CircuitOpen {
            return Err(error.with_attempts(attempt));
        }
        let decision = self.retry.decide(
            &error,
            attempt,
            max_retries,
            crate::retry::jitter(),
            std::time::SystemTime::now(),
        );
        match decision {
            Decision::RetryAfter(delay) => {
                self.retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(
                    origin = self.origin(),
                    attempt,
                    code = error.code(),
                    delay_ms = delay.as_millis() as u64,
                    "retrying"
                );
                Ok(delay)
            }
            Decision::Stop => Err(error.with_attempts(attempt)),
            Decision::StopServerAskedTooLong(asked) => {
                Err(error.with_attempts(attempt).with_retry_after(asked))
            }
        }
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
