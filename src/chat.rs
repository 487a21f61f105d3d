//! One client: builds chat requests, sends them through the pool, enforces the timeouts and turns
//! every outcome into either the response body or one [`Error`].

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT,
};
use hyper::{Method, Request, Response, Uri};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::breaker::{Admission, CircuitBreaker, Outcome};
use crate::config::{Config, ConfigError};
use crate::connect::HttpConnector;
use crate::error::{Error, HttpFailure, Kind, Redactor};
use crate::metrics::{Metrics, Snapshot};
use crate::pool::keep_alive::KeepAlivePolicy;
use crate::pool::{Lease, Pool, PoolLimits, PoolStats};
use crate::retry::{Decision, RetryPolicy};
use crate::stream::ChatStream;

/// Error bodies are read up to this size; a larger one is cut (and its connection closed).
const MAX_ERROR_BODY: usize = 64 * 1024;

const USER_AGENT_VALUE: &str = concat!("llmpool/", env!("CARGO_PKG_VERSION"));

/// Per-call overrides (`client.chat(body, { timeout, headers })`).
#[derive(Debug, Default, Clone)]
pub struct CallOptions {
    /// `Some(None)` turns the attempt deadline off for this call.
    pub timeout: Option<Option<Duration>>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Streaming: overrides `firstTokenTimeout`; `Some(None)` turns it off.
    pub first_token_timeout: Option<Option<Duration>>,
    /// Streaming: overrides `tokenTimeout`; `Some(None)` turns it off.
    pub token_timeout: Option<Option<Duration>>,
    /// Overrides `retry.maxRetries`.
    pub max_retries: Option<u32>,
}

/// Counters and gauges of one client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub pool: PoolStats,
    /// Calls started.
    pub requests: u64,
    /// Calls that ended in an error (including aborts).
    pub errors: u64,
    /// Retries made (attempts after the first).
    pub retries: u64,
    /// `closed`, `open` or `half-open`; `None` without a circuit breaker.
    pub circuit: Option<&'static str>,
}

/// A chat client bound to one OpenAI-compatible endpoint.
pub struct Client {
    config: Config,
    pool: Pool<HttpConnector>,
    pub(crate) keep_alive: KeepAlivePolicy,
    chat_uri: Uri,
    /// Host, content type, auth and default headers, built once.
    base_headers: HeaderMap,
    pub(crate) redactor: Redactor,
    /// Cancelled by `destroy()`: every in-flight call ends with `ERR_CLOSED`.
    shutdown: CancellationToken,
    /// Counts in-flight calls so that `close()` can wait for them.
    in_flight: TaskTracker,
    closing: AtomicBool,
    requests: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
    retry: RetryPolicy,
    breaker: Option<CircuitBreaker>,
    pub(crate) metrics: Metrics,
}

/// Why one attempt failed: `Stale` failures happened on a reused connection before any response
/// byte, so the request can be sent again on a fresh connection without any risk of doing it twice.
enum AttemptError {
    Stale(Error),
    Fatal(Error),
}

impl From<Error> for AttemptError {
    fn from(e: Error) -> Self {
        AttemptError::Fatal(e)
    }
}

impl Client {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let connector = HttpConnector::new(config.endpoint.clone(), config.connect.clone())?;
        let pool = Pool::new(
            connector,
            PoolLimits {
                max_connections: config.connections,
                pool_timeout: config.pool_timeout,
                origin: config.endpoint.origin.clone(),
            },
        );
        let chat_uri: Uri = config
            .endpoint
            .path("/chat/completions")
            .parse()
            .map_err(|_| ConfigError("baseUrl has a path that is not a valid URL path".into()))?;
        let mut base_headers = HeaderMap::new();
        base_headers.insert(
            HOST,
            HeaderValue::from_str(&config.endpoint.authority)
                .map_err(|_| ConfigError("baseUrl has an invalid host".into()))?,
        );
        base_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        base_headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        base_headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        if let Some(key) = &config.api_key {
            let mut auth =
                HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                    ConfigError("apiKey must contain only visible ASCII characters".into())
                })?;
            auth.set_sensitive(true);
            base_headers.insert(AUTHORIZATION, auth);
        }
        for (name, value) in &config.headers {
            base_headers.insert(name.clone(), value.clone());
        }
        let redactor = Redactor::new(config.api_key.iter().map(|k| k.expose().to_owned()));
        let keep_alive = KeepAlivePolicy {
            enabled: config.keep_alive,
            timeout: config.keep_alive_timeout,
            max_timeout: config.keep_alive_max_timeout,
            threshold: config.keep_alive_timeout_threshold,
        };
        Ok(Client {
            pool,
            keep_alive,
            chat_uri,
            base_headers,
            redactor,
            shutdown: CancellationToken::new(),
            in_flight: TaskTracker::new(),
            closing: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            retry: RetryPolicy::new(config.retry.clone()),
            breaker: config.circuit_breaker.map(CircuitBreaker::new),
            metrics: Metrics::new(&config.endpoint.origin),
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn origin(&self) -> &str {
        &self.config.endpoint.origin
    }

    /// Sends one chat completion request (`body` is the JSON text) and returns the response body.
    pub async fn chat(
        &self,
        body: Bytes,
        call: CallOptions,
        cancel: CancellationToken,
    ) -> Result<Bytes, Error> {
        self.run(cancel, self.chat_attempts(body, &call)).await
    }

    /// A chat stream (`body` is the JSON text, with `stream: true`). Nothing is sent before
    /// [`ChatStream::start`].
    pub fn chat_stream(
        self: &Arc<Self>,
        body: Bytes,
        call: CallOptions,
        cancel: CancellationToken,
    ) -> ChatStream {
        ChatStream::new(self.clone(), body, call, cancel)
    }

    /// Wraps one call: refuses it after close, counts it, and ends it at once on abort or destroy.
    pub(crate) async fn run<T>(
        &self,
        cancel: CancellationToken,
        work: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        if self.closing.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        let _in_flight = self.in_flight.token();
        self.requests.fetch_add(1, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Error::new(
                Kind::Aborted,
                format!("request to {} was aborted", self.origin()),
            )),
            _ = self.shutdown.cancelled() => Err(self.closed_error()),
            result = work => result,
        };
        self.metrics.request_took(started.elapsed());
        if let Err(e) = &result {
            self.errors.fetch_add(1, Ordering::Relaxed);
            self.metrics.error(e.code());
            if e.is_cancelled() {
                tracing::debug!(origin = self.origin(), code = e.code(), "call cancelled");
            }
        }
        result
    }

    /// The Prometheus text exposition of this client's metrics.
    pub fn metrics_text(&self) -> String {
        let stats = self.stats();
        self.metrics.render(Snapshot {
            pool: stats.pool,
            requests: stats.requests,
            errors: stats.errors,
            retries: stats.retries,
        })
    }

    async fn chat_attempts(&self, body: Bytes, call: &CallOptions) -> Result<Bytes, Error> {
        let mut attempt = 1;
        loop {
            // Boxed once per attempt: the wrappers below take it by value, and a generic async fn
            // stores its argument and its own copy, so an unboxed attempt would double in size at
            // every layer and be memcpy'd on every move (measured: a 29 KB future per call).
            let one: BoxedAttempt<'_, Bytes> = Box::pin(self.one_attempt(body.clone(), call));
            let result = self.guarded(self.with_deadline(call, one)).await;
            match result {
                Ok(text) => return Ok(text),
                Err(error) => {
                    let delay = self.retry_delay(error, attempt, call, false)?;
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Runs one attempt within the attempt deadline (`timeout`, or the call's override).
    pub(crate) async fn with_deadline<T>(
        &self,
        call: &CallOptions,
        attempt: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match call.timeout.unwrap_or(self.config.timeout) {
            None => attempt.await,
            Some(limit) => tokio::time::timeout(limit, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(Error::timed_out(
                        Kind::Timeout,
                        self.origin(),
                        "before the response was complete",
                        limit,
                    ))
                }),
        }
    }

    /// Runs one attempt through the circuit breaker, when there is one: refused at once while the
    /// circuit is open, and its outcome recorded.
    pub(crate) async fn guarded<T>(
        &self,
        attempt: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let Some(breaker) = &self.breaker else {
            return attempt.await;
        };
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
    }

    /// After failed attempt `attempt`: how long to wait before the next one, or the final error
    /// (carrying the number of attempts).
    pub(crate) fn retry_delay(
        &self,
        error: Error,
        attempt: u32,
        call: &CallOptions,
        stream_before_first_chunk: bool,
    ) -> Result<Duration, Error> {
        let max_retries = call.max_retries.unwrap_or(self.retry.max_retries());
        let retryable = if stream_before_first_chunk {
            crate::retry::stream_may_retry(&self.retry, &error)
        } else {
            self.retry.is_retryable(&error)
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
                self.retries.fetch_add(1, Ordering::Relaxed);
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

    /// One attempt: send (resending once on a fresh connection if a reused one turned out to be
    /// dead), then read the whole body and give the connection back.
    async fn one_attempt(&self, body: Bytes, call: &CallOptions) -> Result<Bytes, Error> {
        let (response, lease) = self.send(body, call).await?;
        let (parts, incoming) = response.into_parts();
        if parts.status.is_success() {
            let text = self.read_body(incoming, usize::MAX).await?.0;
            lease.release(self.keep_alive.idle_lifetime(&parts.headers));
            Ok(text)
        } else {
            let (text, complete) = self.read_body(incoming, MAX_ERROR_BODY).await?;
            if complete {
                lease.release(self.keep_alive.idle_lifetime(&parts.headers));
            }
            Err(self.http_error(parts.status, &parts.headers, &text))
        }
    }

    /// Sends the request and waits for the response headers.
    pub(crate) async fn send(
        &self,
        body: Bytes,
        call: &CallOptions,
    ) -> Result<(Response<Incoming>, Lease<HttpConnector>), Error> {
        match self.send_once(body.clone(), call, false).await {
            Ok(sent) => Ok(sent),
            Err(AttemptError::Fatal(e)) => Err(e),
            // Rare: boxed so that every request's future does not carry a second send.
            Err(AttemptError::Stale(_)) => {
                tracing::debug!(
                    origin = self.origin(),
                    "reused connection was closed before the answer; resending on a fresh one"
                );
                match Box::pin(self.send_once(body, call, true)).await {
                    Ok(sent) => Ok(sent),
                    Err(AttemptError::Fatal(e) | AttemptError::Stale(e)) => Err(e),
                }
            }
        }
    }

    async fn send_once(
        &self,
        body: Bytes,
        call: &CallOptions,
        fresh: bool,
    ) -> Result<(Response<Incoming>, Lease<HttpConnector>), AttemptError> {
        let mut lease = self.pool.checkout(fresh).await?;
        let reused = lease.is_reused();
        let sender = lease.conn();
        if sender.ready().await.is_err() {
            let e = Error::new(
                Kind::Socket,
                format!(
                    "connection to {} closed before the request was sent",
                    self.origin()
                ),
            );
            return Err(if reused {
                AttemptError::Stale(e)
            } else {
                AttemptError::Fatal(e)
            });
        }
        let request = self.build_request(body, call);
        let sent_at = tokio::time::Instant::now();
        let sent = sender.send_request(request);
        let result = match self.config.headers_timeout {
            None => sent.await,
            Some(limit) => tokio::time::timeout(limit, sent).await.map_err(|_| {
                Error::timed_out(
                    Kind::HeadersTimeout,
                    self.origin(),
                    "waiting for response headers",
                    limit,
                )
            })?,
        };
        match result {
            Ok(response) => {
                self.metrics.headers_after(sent_at.elapsed());
                Ok((response, lease))
            }
            Err(e) => {
                let stale = reused && closed_before_response(&e);
                let e = Error::new(
                    Kind::Socket,
                    format!(
                        "connection to {} failed before the response: {}",
                        self.origin(),
                        describe(&e)
                    ),
                );
                Err(if stale {
                    AttemptError::Stale(e)
                } else {
                    AttemptError::Fatal(e)
                })
            }
        }
    }

    fn build_request(&self, body: Bytes, call: &CallOptions) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.chat_uri.clone();
        let headers = request.headers_mut();
        *headers = self.base_headers.clone();
        for (name, value) in &call.headers {
            headers.insert(name.clone(), value.clone());
        }
        request
    }

    /// Reads a body up to `limit` bytes, each chunk within `bodyTimeout` of the previous one.
    /// Returns the bytes and whether the body was read to its end.
    pub(crate) async fn read_body(
        &self,
        mut body: Incoming,
        limit: usize,
    ) -> Result<(Bytes, bool), Error> {
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut size = 0usize;
        loop {
            let next = body.frame();
            let frame = match self.config.body_timeout {
                None => next.await,
                Some(gap) => tokio::time::timeout(gap, next).await.map_err(|_| {
                    Error::timed_out(
                        Kind::BodyTimeout,
                        self.origin(),
                        "reading the response body",
                        gap,
                    )
                })?,
            };
            match frame {
                None => return Ok((concat(chunks, size), true)),
                Some(Err(e)) => {
                    return Err(Error::new(
                        Kind::Socket,
                        format!(
                            "connection to {} failed while reading the response: {}",
                            self.origin(),
                            describe(&e)
                        ),
                    ))
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        size += data.len();
                        chunks.push(data);
                        if size >= limit {
                            return Ok((concat(chunks, size), false));
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn http_error(
        &self,
        status: hyper::StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Error {
        let body = self.redactor.redact(&String::from_utf8_lossy(body));
        let reason = status.canonical_reason().unwrap_or("error");
        let message = match provider_message(&body) {
            Some(m) => format!(
                "{} answered {} {reason}: {m}",
                self.origin(),
                status.as_u16()
            ),
            None => format!("{} answered {} {reason}", self.origin(), status.as_u16()),
        };
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| {
                let value = self.redactor.redact(&String::from_utf8_lossy(v.as_bytes()));
                (k.as_str().to_owned(), value)
            })
            .collect();
        let asked = crate::retry::retry_after(&headers, std::time::SystemTime::now());
        let error = Error::http(
            message,
            HttpFailure {
                status: status.as_u16(),
                headers,
                body,
            },
        );
        match asked {
            Some(asked) => error.with_retry_after(asked),
            None => error,
        }
    }

    pub(crate) fn closed_error(&self) -> Error {
        Error::new(
            Kind::Closed,
            format!("client for {} is closed", self.origin()),
        )
    }

    pub fn stats(&self) -> ClientStats {
        ClientStats {
            pool: self.pool.stats(),
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            circuit: self
                .breaker
                .as_ref()
                .map(|b| b.state_name(tokio::time::Instant::now())),
        }
    }

    /// Graceful: refuses new calls, waits for in-flight ones, then closes every connection.
    pub async fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.in_flight.close();
        self.in_flight.wait().await;
        self.pool.close();
    }

    /// Abrupt: in-flight calls end at once with `ERR_CLOSED`, every connection is closed.
    pub fn destroy(&self) {
        self.closing.store(true, Ordering::Release);
        self.in_flight.close();
        self.shutdown.cancel();
        self.pool.close();
    }

    pub fn is_closed(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }
}

/// One attempt, boxed (see `chat_attempts`).
pub(crate) type BoxedAttempt<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, Error>> + Send + 'a>>;

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

fn concat(chunks: Vec<Bytes>, size: usize) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().expect("one chunk"),
        _ => {
            let mut out = Vec::with_capacity(size);
            for c in chunks {
                out.extend_from_slice(&c);
            }
            Bytes::from(out)
        }
    }
}

/// The provider's own words from an OpenAI-style error body: `{"error":{"message":…}}`,
/// `{"error":"…"}` or `{"message":…}`.
pub(crate) fn provider_message(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let error = value.get("error").unwrap_or(&value);
    let message = match error {
        serde_json::Value::String(s) => s.as_str(),
        other => other.get("message")?.as_str()?,
    };
    let message = message.trim();
    (!message.is_empty()).then(|| message.chars().take(500).collect())
}

/// The request did not get a single response byte because the connection was closed or reset:
/// safe to send again on a new connection.
fn closed_before_response(e: &hyper::Error) -> bool {
    if e.is_canceled() || e.is_incomplete_message() {
        return true;
    }
    io_error_kind(e).is_some_and(|kind| {
        matches!(
            kind,
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        )
    })
}

fn io_error_kind(e: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        source = err.source();
    }
    None
}

/// hyper's own message plus its innermost cause ("connection reset by peer").
fn describe(e: &hyper::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        if inner.source().is_none() {
            text = format!("{text} ({inner})");
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_message_shapes() {
        assert_eq!(
            provider_message(r#"{"error":{"message":"Rate limit reached","type":"x"}}"#).as_deref(),
            Some("Rate limit reached")
        );
        assert_eq!(
            provider_message(r#"{"error":"model not found"}"#).as_deref(),
            Some("model not found")
        );
        assert_eq!(
            provider_message(r#"{"message":"bad"}"#).as_deref(),
            Some("bad")
        );
        assert_eq!(provider_message("<html>"), None);
        assert_eq!(provider_message(r#"{"error":{"message":""}}"#), None);
    }
}
#[cfg(test)]
mod future_size {
    use super::*;

    /// A regression guard: the per-call future is memcpy'd as it is spawned, so its size is CPU
    /// per request. Before the attempts were boxed it was 29 KB.
    #[test]
    fn a_chat_call_future_stays_small() {
        let config =
            Config::from_json(&serde_json::json!({ "baseUrl": "http://127.0.0.1:1" })).unwrap();
        let client = Arc::new(Client::new(config).unwrap());
        let call = client.chat(
            Bytes::new(),
            CallOptions::default(),
            CancellationToken::new(),
        );
        let size = std::mem::size_of_val(&call);
        assert!(size <= 2048, "chat future is {size} bytes");
    }
}
