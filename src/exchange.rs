//! One exchange: checkout → send → response head → (an error status's body) → release.
//!
//! The resend rule lives here and only here: a request goes out a second time within one attempt
//! (not counted as a retry) only when the connection proves it was never written
//! ([`SendError::NotSent`]). Any other failure after checkout is an ordinary failure that the
//! attempt loop retries or not under the user's policy, because the server may have started
//! working on the request (a second generation, billed twice).

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderMap, HeaderValue, ACCEPT};
use hyper::http::response::Parts;
use hyper::{Method, Request, StatusCode, Uri};

use crate::client::Client;
use crate::config::CallOptions;
use crate::conn::{is_malformed, Connection, SendError};
use crate::error::{Cause, Error, HttpFailure, Kind};
use crate::payload::provider_message;
use crate::pool::{Connect, Lease};

/// Sends of one request that a server may leave unprocessed (refused HTTP/2 streams, streams
/// above a GOAWAY) before the last refusal is the call's error.
pub const MAX_UNPROCESSED_SENDS: u32 = 10;

/// Error bodies are read up to this size; a larger one is cut (and its connection closed).
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// What the caller expects back, as the `Accept` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    Json,
    EventStream,
}

/// One request to send: method, target, body and what it accepts.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub method: Method,
    pub uri: &'a Uri,
    pub body: Bytes,
    pub accept: Accept,
}

/// A successful response head, its unread body and the connection it holds.
pub struct Exchanged<K: Connect>
where
    K::Conn: Connection,
{
    pub head: Parts,
    pub body: <K::Conn as Connection>::Body,
    pub lease: Lease<K>,
    /// How long the connection may idle in the pool once the body is read (its `Keep-Alive`),
    /// read from the head here so that a long body's reader need not keep the head and its
    /// headers' memory for the stream's whole life.
    pub lifetime: Option<std::time::Duration>,
}

/// A response head of any status, its unread body, the connection it holds, and the time from
/// sending the request to the head.
pub struct Answered<K: Connect>
where
    K::Conn: Connection,
{
    pub head: Parts,
    pub body: <K::Conn as Connection>::Body,
    pub lease: Lease<K>,
    pub waited: std::time::Duration,
}

/// A sent request's response, its connection, and how long the head took.
type Sent<K> = (
    hyper::Response<<<K as Connect>::Conn as Connection>::Body>,
    Lease<K>,
    std::time::Duration,
);

/// A body read up to a limit.
pub struct BodyRead {
    pub bytes: Bytes,
    /// False when the limit was passed before the end: the connection must not be reused.
    pub complete: bool,
}

impl<K: Connect> Client<K>
where
    K::Conn: Connection,
{
    /// Sends one request and returns its response head, whatever its status, with the body
    /// unread and the time it took. What the answer means for the upstream (rate limits,
    /// latency) is the client's to observe ([`Client::observed_exchange`]).
    ///
    /// A future-returning fn, not an async fn (which keeps its arguments twice); the request is
    /// built only once a connection is at hand (see [`Client::send`]).
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub(crate) fn exchange<'a>(
        &'a self,
        outgoing: Outgoing<'a>,
        call: &'a CallOptions,
    ) -> impl std::future::Future<Output = Result<Answered<K>, Error>> + Send + 'a {
        async move {
            let (response, lease, waited) = self.send_with_resend(&outgoing, call).await?;
            let (head, body) = response.into_parts();
            Ok(Answered {
                head,
                body,
                lease,
                waited,
            })
        }
    }

    /// A 2xx answer as it is, its body unread; any other becomes an `ERR_HTTP_STATUS` error
    /// carrying its (bounded) body, and its connection goes back to the pool when that body was
    /// read to the end.
    pub(crate) async fn judge_status(&self, answered: Answered<K>) -> Result<Exchanged<K>, Error> {
        let Answered {
            head, body, lease, ..
        } = answered;
        if head.status.is_success() {
            let lifetime = self.keep_alive.idle_lifetime(&head.headers);
            return Ok(Exchanged {
                head,
                body,
                lease,
                lifetime,
            });
        }
        let read = self.read_body(body, MAX_ERROR_BODY).await?;
        if read.complete {
            lease.release(self.keep_alive.idle_lifetime(&head.headers));
        }
        Err(self.http_error(head.status, &head.headers, &read.bytes))
    }

    /// Sends the request, and again while a connection proves it never processed it: an HTTP/1.1
    /// connection found closed before the write goes again once, on a fresh connection; an
    /// HTTP/2 stream refused or left above a GOAWAY goes again, without backoff and uncounted,
    /// until a server processes it, at most [`MAX_UNPROCESSED_SENDS`] sends in all. (Each answer
    /// is let go before the next send: one kept through it would be laid out in every request's
    /// future.)
    async fn send_with_resend(
        &self,
        outgoing: &Outgoing<'_>,
        call: &CallOptions,
    ) -> Result<Sent<K>, Error> {
        let mut fresh = match self.send(outgoing, call, false).await {
            Ok(sent) => return Ok(sent),
            Err(SendFailure::Final(e)) => return Err(e),
            Err(SendFailure::Unprocessed { stream, .. }) => !stream,
        };
        // Rare: boxed so that every request's future does not carry the loop.
        Box::pin(async move {
            let mut sends = 1;
            loop {
                tracing::debug!(
                    origin = self.origin(),
                    sends,
                    "the request was not processed (closed connection, refused stream or GOAWAY); sending it again"
                );
                sends += 1;
                match self.send(outgoing, call, fresh).await {
                    Ok(sent) => return Ok(sent),
                    Err(SendFailure::Final(e)) => return Err(e),
                    Err(SendFailure::Unprocessed { error, stream }) => {
                        // HTTP/1.1 has one free resend, on a fresh connection; h2 streams go
                        // on up to the bound.
                        if !stream || sends >= MAX_UNPROCESSED_SENDS {
                            return Err(error);
                        }
                        fresh = false;
                    }
                }
            }
        })
        .await
    }

    /// Checks out a connection and sends the request on it. The request is built once the
    /// connection is at hand, and handed straight to it: a future waiting for a connection (or
    /// for the pool) does not hold it.
    async fn send(
        &self,
        outgoing: &Outgoing<'_>,
        call: &CallOptions,
        fresh: bool,
    ) -> Result<Sent<K>, SendFailure> {
        let mut lease = self.pool.checkout(fresh).await?;
        let sent_at = tokio::time::Instant::now();
        let sending = lease.conn().send(self.build_request(outgoing, call));
        let result = match self.config.headers_timeout {
            None => sending.await,
            Some(limit) => tokio::time::timeout(limit, sending).await.map_err(|_| {
                Error::timed_out(
                    Kind::HeadersTimeout,
                    self.origin(),
                    "waiting for response headers",
                    limit,
                )
            })?,
        };
        match result {
            Ok(response) => Ok((response, lease, sent_at.elapsed())),
            Err(SendError::Refused(e)) => {
                lease.refused();
                Err(SendFailure::Unprocessed {
                    error: self.socket_error("refused the stream", &*e),
                    stream: true,
                })
            }
            Err(SendError::NotSent(e)) if !fresh || lease.is_stream() => {
                // A multiplexed connection going away takes no more streams.
                lease.retire();
                Err(SendFailure::Unprocessed {
                    error: self.socket_error("closed before the request was written", &*e),
                    stream: lease.is_stream(),
                })
            }
            Err(SendError::NotSent(e)) => Err(SendFailure::Final(
                self.socket_error("closed before the request was written", &*e),
            )),
            Err(SendError::Failed(e)) => Err(SendFailure::Final(
                self.socket_error("failed before the response", &*e),
            )),
        }
    }

    fn build_request(&self, outgoing: &Outgoing<'_>, call: &CallOptions) -> Request<Bytes> {
        let mut request = Request::new(outgoing.body.clone());
        *request.method_mut() = outgoing.method.clone();
        *request.uri_mut() = outgoing.uri.clone();
        let headers = request.headers_mut();
        *headers = self.base_headers.clone();
        if outgoing.accept == Accept::EventStream {
            headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        for (name, value) in &call.headers {
            headers.insert(name.clone(), value.clone());
        }
        request
    }

    /// An `ERR_SOCKET` for a connection that broke, with what the OS said as its cause; or an
    /// `ERR_INVALID_RESPONSE` when what broke was the server's answer (it had the request: not
    /// resent by default).
    pub(crate) fn socket_error(
        &self,
        when: &str,
        e: &(dyn std::error::Error + Send + Sync + 'static),
    ) -> Error {
        let cause = Cause::of(e);
        let (kind, what) = if is_malformed(e) {
            (Kind::InvalidResponse, "invalid response: ")
        } else {
            (Kind::Socket, "")
        };
        Error::new(
            kind,
            format!(
                "connection to {} {when}: {what}{}",
                self.origin(),
                cause.message
            ),
        )
        .with_cause(cause)
    }

    /// Reads a body up to `limit` bytes (`None` = no limit), each chunk within `bodyTimeout` of
    /// the previous one.
    pub(crate) async fn read_body<B>(
        &self,
        mut body: B,
        limit: impl Into<Option<usize>>,
    ) -> Result<BodyRead, Error>
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let limit = limit.into().unwrap_or(usize::MAX);
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut size = 0usize;
        loop {
            match self.next_frame(&mut body).await? {
                None => {
                    return Ok(BodyRead {
                        bytes: concat(chunks, size),
                        complete: true,
                    })
                }
                Some(Err(e)) => {
                    return Err(self.socket_error("failed while reading the response", &e))
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        size = size.saturating_add(data.len());
                        chunks.push(data);
                        if size > limit {
                            return Ok(BodyRead {
                                bytes: concat(chunks, size),
                                complete: false,
                            });
                        }
                    }
                }
            }
        }
    }

    /// The next frame of a body, within `bodyTimeout` of the previous one.
    pub(crate) async fn next_frame<B>(
        &self,
        body: &mut B,
    ) -> Result<Option<Result<hyper::body::Frame<Bytes>, B::Error>>, Error>
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
    {
        let next = body.frame();
        match self.config.body_timeout {
            None => Ok(next.await),
            Some(gap) => tokio::time::timeout(gap, next).await.map_err(|_| {
                Error::timed_out(
                    Kind::BodyTimeout,
                    self.origin(),
                    "reading the response body",
                    gap,
                )
            }),
        }
    }

    /// An `ERR_HTTP_STATUS` error from a non-2xx answer: status, headers, the provider's body and
    /// message, and the clamped wait it asked for. Secrets are stripped later, in `Client::redact`.
    pub(crate) fn http_error(&self, status: StatusCode, headers: &HeaderMap, raw: &[u8]) -> Error {
        let raw = &raw[..raw.len().min(MAX_ERROR_BODY)];
        let body = String::from_utf8_lossy(raw).into_owned();
        let reason = status.canonical_reason().unwrap_or("error");
        let message = match provider_message(&body) {
            Some(m) => format!(
                "{} answered {} {reason}: {m}",
                self.origin(),
                status.as_u16()
            ),
            None => format!("{} answered {} {reason}", self.origin(), status.as_u16()),
        };
        let headers = header_pairs(headers);
        let now = std::time::SystemTime::now();
        let asked = crate::retry::retry_after(&headers, now);
        let limits =
            crate::ratelimit::parse(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())), now);
        // 407 is only ever a proxy's answer (to a request it forwards in absolute form).
        let proxy_refused = status == StatusCode::PROXY_AUTHENTICATION_REQUIRED;
        let message = if proxy_refused {
            format!(
                "{message} (proxy authentication failed: check the credentials in the proxy URL)"
            )
        } else {
            message
        };
        let mut error = Error::http(
            message,
            HttpFailure {
                status: status.as_u16(),
                headers,
                body,
                raw: Bytes::copy_from_slice(raw),
            },
        );
        if proxy_refused {
            error = error.into_kind(Kind::Proxy);
        }
        if let Some(limits) = limits {
            error = error.with_rate_limit(limits, now);
        }
        match asked {
            Some(asked) => error.with_retry_after(asked),
            None => error,
        }
    }
}

/// Why a send failed: the request was provably never written and may go again on a fresh
/// connection, or the failure is final for this attempt.
enum SendFailure {
    /// The server did no work on it; `stream`: it was a stream of a multiplexed connection.
    Unprocessed {
        error: Error,
        stream: bool,
    },
    Final(Error),
}

impl From<Error> for SendFailure {
    fn from(e: Error) -> Self {
        SendFailure::Final(e)
    }
}

/// Response headers as `(name, value)` text pairs, in arrival order (values not UTF-8 are
/// decoded lossily).
pub(crate) fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
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
