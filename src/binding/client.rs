//! `NativeClient` and `CancelToken`: what `index.js` wraps into the public `Client`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::FutureExt;
use hyper::header::{HeaderName, HeaderValue};
use hyper::Method;
use napi::bindgen_prelude::{Buffer, ClassInstance, PromiseRaw};
use napi::{Env, Result};
use napi_derive::napi;
use tokio_util::sync::CancellationToken;

use super::mailbox::{DeliverFn, Mailbox, Post, Signal, PAYLOAD_SEPARATOR};
use super::outcome::{ClientStatsObject, ErrorInfo, FetchHead, RateLimitInfo};
use super::{guard, invalid_arg};
use crate::chat::Answer;
use crate::config::CallOptions;
use crate::error::Error;
use crate::router::config::RouterConfig;
use crate::router::{Router, Target};
use crate::stream::{self, Dialect, StreamHandle};

/// Cancels one call; `index.js` wires an `AbortSignal` to it.
#[napi]
pub struct CancelToken {
    token: CancellationToken,
}

#[napi]
impl CancelToken {
    #[napi(constructor)]
    pub fn new() -> Self {
        CancelToken {
            token: CancellationToken::new(),
        }
    }

    #[napi]
    pub fn cancel(&self) {
        self.token.cancel();
    }
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

#[napi]
pub struct NativeClient {
    inner: Arc<Router>,
    mailbox: Arc<Mailbox>,
    /// The id of this client's `logger` among the registered ones, when it has one.
    logger: std::sync::Mutex<Option<u64>>,
    /// Watched calls' requests waiting for JS to say which headers to add.
    replies: Arc<std::sync::Mutex<super::observe::Replies>>,
    /// This client's calls and streams in flight (see [`Running`]).
    running: Arc<AtomicUsize>,
}

impl Drop for NativeClient {
    fn drop(&mut self) {
        self.forget_logger();
    }
}

impl NativeClient {
    fn forget_logger(&self) {
        if let Some(id) = self.logger.lock().unwrap_or_else(|e| e.into_inner()).take() {
            crate::binding::logging::unregister(id);
        }
    }
}

/// The runtime napi runs futures on now. Not cached: napi shuts its runtime down when the last
/// Node environment using the addon exits (a worker thread's), and builds a new one for the next.
fn runtime() -> tokio::runtime::Handle {
    napi::bindgen_prelude::within_runtime_if_available(tokio::runtime::Handle::current)
}

/// One call or stream in flight, counted while it lives.
///
/// A lone call (none other in flight) starts on the JS thread ([`crate::eager`]): its request is
/// written there and the worker wakes only for the answer. Under load the worker is awake anyway
/// and a call is spawned onto it as it is: it writes many calls' requests in one turn, while
/// starting each on the JS thread would have both threads take the pool's and the connections'
/// locks by turns (measured: S1 at 64 concurrent cost a third more CPU per call that way).
struct Running(Arc<AtomicUsize>);

impl Running {
    /// Counts one more; true when it is the only one.
    fn start(count: &Arc<AtomicUsize>) -> (Running, bool) {
        let before = count.fetch_add(1, Ordering::AcqRel);
        (Running(count.clone()), before == 0)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs `work` and posts its result to the mailbox under `id`; a panic inside posts an
/// `ERR_INTERNAL` error instead, so no JS caller ever waits forever.
fn spawn_delivery<F>(mailbox: Arc<Mailbox>, id: u32, running: &Arc<AtomicUsize>, work: F)
where
    F: Future<Output = Post> + Send + 'static,
{
    let (running, lone) = Running::start(running);
    let delivery = async move {
        let delivery = AssertUnwindSafe(work)
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Post::Error(Box::new(ErrorInfo::internal())));
        drop(running);
        mailbox.post(id, delivery);
    };
    if lone {
        crate::eager::spawn(&runtime(), delivery);
    } else {
        drop(napi::bindgen_prelude::spawn(delivery));
    }
}

#[napi]
impl NativeClient {
    /// `options` is the JS options object as JSON text (`index.js` serialises it); results are
    /// delivered by calling `deliver(ids, values)` on the JS thread.
    #[napi(constructor)]
    pub fn new(
        options: String,
        #[napi(
            ts_arg_type = "(ids: number[], values: Array<string | number | ErrorInfo | FetchHead | Buffer>) => void"
        )]
        deliver: DeliverFn<'_>,
    ) -> Result<Self> {
        guard(|| {
            let value: serde_json::Value = serde_json::from_str(&options)
                .map_err(|_| invalid_arg("options must be a plain object"))?;
            let config = RouterConfig::from_json(&value).map_err(|e| invalid_arg(e.to_string()))?;
            // Inside the runtime: a shared store starts connecting now.
            let router = napi::bindgen_prelude::within_runtime_if_available(|| Router::new(config))
                .map_err(|e| invalid_arg(e.to_string()))?;
            Ok(NativeClient {
                inner: Arc::new(router),
                mailbox: Mailbox::new(deliver)?,
                logger: std::sync::Mutex::new(None),
                replies: Arc::default(),
                running: Arc::default(),
            })
        })
    }

    /// One chat completion; its body text or error is delivered under `id`. `body` is JSON
    /// text; `options` the call options as JSON text (without `signal`).
    #[napi]
    pub fn chat(
        &self,
        id: u32,
        body: String,
        options: Option<String>,
        cancel: Option<ClassInstance<'_, CancelToken>>,
    ) -> Result<()> {
        guard(|| self.post_json(id, Target::Chat, body, options, cancel))
    }

    /// Any JSON endpoint under `baseUrl`: `POST {baseUrl}{path}` with `body` (JSON text); the
    /// answer's JSON text or the error is delivered under `id`. A bad `path` throws.
    #[napi]
    pub fn request(
        &self,
        id: u32,
        path: String,
        body: String,
        options: Option<String>,
        cancel: Option<ClassInstance<'_, CancelToken>>,
    ) -> Result<()> {
        guard(|| {
            self.inner
                .check_path(&path)
                .map_err(|e| invalid_arg(e.to_string()))?;
            self.post_json(id, Target::Api(path), body, options, cancel)
        })
    }

    /// Any SSE endpoint under `baseUrl` (`POST {baseUrl}{path}`); events are delivered as
    /// `event + "\n" + data` strings. Nothing is sent until the first `next()`.
    #[napi]
    pub fn stream(
        &self,
        path: String,
        body: String,
        options: Option<String>,
        cancel: Option<ClassInstance<'_, CancelToken>>,
    ) -> Result<NativeStream> {
        guard(|| {
            self.inner
                .check_path(&path)
                .map_err(|e| invalid_arg(e.to_string()))?;
            let call = self.call_options(options, true)?;
            let cancel = cancel.map(|c| c.token.clone());
            let stream = self
                .inner
                .stream(
                    Target::Api(path),
                    Dialect::Events,
                    Bytes::from(body),
                    call,
                    cancel,
                )
                .map_err(|e| invalid_arg(e.to_string()))?;
            Ok(self.native_stream(stream))
        })
    }

    /// A raw call for `client.fetch`: `method` on `path` (a path on the origin, query included),
    /// `headers` as JSON text of `[name, value]` pairs, `body` bytes. The head, then the body's
    /// chunks, are delivered once started.
    #[napi]
    pub fn fetch(
        &self,
        method: String,
        path: String,
        headers: String,
        body: Option<Buffer>,
        options: Option<String>,
        cancel: Option<ClassInstance<'_, CancelToken>>,
    ) -> Result<NativeStream> {
        guard(|| {
            let method = Method::from_bytes(method.as_bytes())
                .map_err(|_| invalid_arg("method is not a valid HTTP method"))?;
            let mut call = self.call_options(options, false)?;
            let pairs: Vec<(String, String)> = serde_json::from_str(&headers)
                .map_err(|_| invalid_arg("headers must be name and value pairs"))?;
            // With upstreams, each upstream sends its own key: the SDK's is dropped.
            let named = self.inner.is_named();
            call.headers = pairs
                .iter()
                .filter(|(name, _)| {
                    let name = name.to_ascii_lowercase();
                    let dropped = HOP_BY_HOP.contains(&name.as_str())
                        || (named && UPSTREAM_OWN.contains(&name.as_str()));
                    !dropped
                })
                .map(|(name, value)| {
                    let name = HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| invalid_arg("headers has an invalid header name"))?;
                    let value = HeaderValue::from_str(value).map_err(|_| {
                        invalid_arg(format!("headers.{name} is not a valid header value"))
                    })?;
                    Ok((name, value))
                })
                .collect::<Result<_>>()?;
            call.secrets = self.inner.config().secret_values(&call.headers);
            let cancel = cancel.map(|c| c.token.clone());
            let body = body.map(|b| Bytes::copy_from_slice(&b)).unwrap_or_default();
            let stream = self
                .inner
                .fetch(method, &path, body, call, cancel)
                .map_err(|e| invalid_arg(e.to_string()))?;
            Ok(self.native_stream(stream))
        })
    }

    /// A JSON call (`chat`, `request`) whose answer or error is delivered under `id`.
    fn post_json(
        &self,
        id: u32,
        target: Target,
        body: String,
        options: Option<String>,
        cancel: Option<ClassInstance<'_, CancelToken>>,
    ) -> Result<()> {
        let call = self.call_options(options, false)?;
        let cancel = cancel.map(|c| c.token.clone());
        let client = self.inner.clone();
        let admitted = client.admit();
        spawn_delivery(self.mailbox.clone(), id, &self.running, async move {
            let Some(_admitted) = admitted else {
                return answered(Err(client.closed_error()));
            };
            answered(
                client
                    .post_json(target, Bytes::from(body), call, cancel)
                    .await,
            )
        });
        Ok(())
    }

    fn native_stream(&self, stream: StreamHandle) -> NativeStream {
        NativeStream {
            closer: stream.closer(),
            inner: Mutex::new(stream),
            mailbox: self.mailbox.clone(),
            running: self.running.clone(),
        }
    }

    fn call_options(&self, options: Option<String>, stream: bool) -> Result<CallOptions> {
        let Some(json) = options else {
            return Ok(CallOptions::default());
        };
        let mut value: serde_json::Value = serde_json::from_str(&json)
            .map_err(|_| invalid_arg("call options must be an object"))?;
        // `observe`: the mailbox id of the call's request watcher (set by index.js while
        // undici's diagnostics channels have subscribers, never by users).
        let observe = value
            .as_object_mut()
            .and_then(|o| o.remove("observe"))
            .and_then(|v| v.as_u64())
            .and_then(|id| u32::try_from(id).ok());
        let mut call = CallOptions::from_json(&value, self.inner.config(), stream)
            .and_then(|call| self.inner.check_call(call))
            .map_err(|e| invalid_arg(e.to_string()))?;
        call.observer = observe.map(|id| {
            Arc::new(crate::observe::Observer(Box::new(
                super::observe::JsObserver {
                    mailbox: self.mailbox.clone(),
                    id,
                    replies: self.replies.clone(),
                },
            )))
        });
        Ok(call)
    }

    /// A chat stream; nothing is sent until the first `next()`. `body` is JSON text that already
    /// has `stream: true`.
    #[napi]
    pub fn chat_stream(
        &self,
        body: String,
        options: Option<String>,
        cancel: Option<ClassInstance<'_, CancelToken>>,
    ) -> Result<NativeStream> {
        guard(|| {
            let call = self.call_options(options, true)?;
            let cancel = cancel.map(|c| c.token.clone());
            let stream = self
                .inner
                .stream(Target::Chat, Dialect::Chat, Bytes::from(body), call, cancel)
                .map_err(|e| invalid_arg(e.to_string()))?;
            Ok(self.native_stream(stream))
        })
    }

    /// Prometheus text exposition (version 0.0.4) of this client's metrics.
    #[napi]
    pub fn metrics(&self) -> Result<String> {
        guard(|| Ok(self.inner.metrics_text()))
    }

    /// What setting the client up found worth a warning; `index.js` emits them as process
    /// warnings, as Node does for the same conditions.
    #[napi]
    pub fn warnings(&self) -> Vec<String> {
        self.inner.warnings().to_vec()
    }

    /// The provider's rate limits as the last response that carried them reported, per
    /// upstream in the configured order.
    #[napi]
    pub fn rate_limits(&self) -> Vec<UpstreamRateLimits> {
        self.inner
            .rate_limits()
            .into_iter()
            .map(|(name, limits)| UpstreamRateLimits {
                name: name.to_owned(),
                limits: limits.map(|(limits, at)| RateLimitInfo::new(&limits, at)),
            })
            .collect()
    }

    #[napi]
    pub fn stats(&self) -> Result<ClientStatsObject> {
        guard(|| {
            let mut stats: ClientStatsObject = self.inner.stats().into();
            let upstreams = self.inner.upstream_stats();
            if !upstreams.is_empty() {
                stats.upstreams = Some(upstreams.into_iter().map(Into::into).collect());
            }
            stats.store = self.inner.store_stats().map(Into::into);
            stats.cache = self.inner.cache_stats().map(Into::into);
            Ok(stats)
        })
    }

    /// Graceful close: resolves once in-flight calls finished and connections are closed.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let client = self.inner.clone();
        env.spawn_future(async move {
            let _ = AssertUnwindSafe(client.close()).catch_unwind().await;
            Ok(())
        })
    }

    /// A watched request's `create` was published: `headers` (flattened `[name, value, …]`) are
    /// added to it before it is sent.
    #[napi]
    pub fn observed(&self, reply: u32, headers: Vec<String>) -> Result<()> {
        guard(|| {
            super::observe::Replies::answer(&self.replies, reply, headers);
            Ok(())
        })
    }

    /// Hands the core's events about this client's upstreams to `log(level, message, fields)`
    /// (fields as JSON text) on the JS thread, until `destroy()` or the client is collected.
    #[napi]
    pub fn set_logger(
        &self,
        #[napi(ts_arg_type = "(level: string, message: string, fields: string) => void")]
        log: crate::binding::logging::LogFn<'_>,
    ) -> Result<()> {
        guard(|| {
            let origins = self
                .inner
                .upstreams()
                .iter()
                .map(|u| u.client.config().endpoint.origin.clone())
                .collect();
            let id = crate::binding::logging::register(origins, log)?;
            self.forget_logger();
            *self.logger.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
            Ok(())
        })
    }

    /// Aborts in-flight calls with `ERR_CLOSED` and closes every connection.
    #[napi]
    pub fn destroy(&self) -> Result<()> {
        guard(|| {
            self.forget_logger();
            napi::bindgen_prelude::within_runtime_if_available(|| self.inner.destroy());
            Ok(())
        })
    }
}

/// A call's answer for JS: the body text, or (`withResponse`) a JSON envelope of the body and
/// its response head.
fn answered(result: std::result::Result<Answer, Error>) -> Post {
    match result {
        Ok(Answer {
            text, head: None, ..
        }) => Post::Body(text),
        Ok(Answer {
            text,
            head: Some(head),
            attempts,
            cache,
            ..
        }) => {
            let now = std::time::SystemTime::now();
            let pairs = head.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            let rate_limit = crate::ratelimit::parse(pairs, now)
                .map(|l| RateLimitInfo::new(&l, now).to_json())
                .unwrap_or(serde_json::Value::Null);
            let meta = serde_json::json!({
                "status": head.status,
                "headers": head.headers,
                "upstream": head.upstream,
                "rateLimit": rate_limit,
                "attempts": attempts,
                "cache": cache.map(|c| c.name()),
            });
            // The body is a JSON object already (checked): spliced in, not parsed again.
            Post::Body(format!("{{\"response\":{meta},\"data\":{text}}}"))
        }
        Err(e) => Post::Error(Box::new(ErrorInfo::from(&e))),
    }
}

/// One upstream's rate limits, for `client.rateLimits()`.
#[napi(object)]
pub struct UpstreamRateLimits {
    pub name: String,
    pub limits: Option<RateLimitInfo>,
}

/// Every client option name, nested ones as `parent.child` (the core's list, which tests hold
/// the typings and the README to).
#[napi]
#[allow(dead_code)] // called from JS: the napi macro exports it
pub fn option_names() -> Vec<String> {
    crate::config::option_names()
}

/// Every client option with a literal default, as a JSON object text `{ name: default }` (the
/// core's one list, which tests hold the README and the typings to).
#[napi]
#[allow(dead_code)] // called from JS: the napi macro exports it
pub fn option_defaults() -> String {
    serde_json::Value::Object(
        crate::router::config::option_defaults()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
    )
    .to_string()
}

/// Every per-call option name.
#[napi]
#[allow(dead_code)] // called from JS: the napi macro exports it
pub fn call_option_names() -> Vec<String> {
    crate::config::call_option_names()
}

/// Flow-control window of a stream, in events: `index.js` acknowledges every half window (and at
/// once when the reader says it stalled, which the byte window can also cause).
#[napi]
#[allow(dead_code)] // read from JS: the napi macro exports it
pub const STREAM_WINDOW_EVENTS: u32 = crate::stream::WINDOW_EVENTS as u32;

/// Headers a `fetch` caller may set that are the connection's business, not the request's.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-connection",
    "content-length",
    "host",
];

/// Headers that carry an upstream's own credentials: with `upstreams`, each upstream sends its
/// own, so a `fetch` caller's (the SDK's placeholder key) are dropped.
const UPSTREAM_OWN: [&str; 3] = ["authorization", "api-key", "x-api-key"];

/// A batch of stream payloads as one string, [`PAYLOAD_SEPARATOR`] between them.
fn joined(mut payloads: Vec<String>) -> String {
    // The usual batch, one payload, is passed on as it is.
    match payloads.len() {
        1 => payloads.pop().unwrap_or_default(),
        _ => payloads.join(PAYLOAD_SEPARATOR),
    }
}

/// The native side of one stream (`chatStream`, `stream`, a `fetch` body): `index.js` wraps it.
#[napi]
pub struct NativeStream {
    inner: Mutex<StreamHandle>,
    /// Closes the stream without taking the lock.
    closer: CancellationToken,
    mailbox: Arc<Mailbox>,
    /// The client's count of calls and streams in flight.
    running: Arc<AtomicUsize>,
}

#[napi]
impl NativeStream {
    /// Sends the request; batches are then delivered under `id` until one is `done`.
    #[napi]
    pub fn start(&self, id: u32) -> Result<()> {
        guard(|| {
            let mailbox = self.mailbox.clone();
            // Counted while the reader (which owns the sink) lives.
            let (running, lone) = Running::start(&self.running);
            let sink = Box::new(move |delivery: stream::Delivery| {
                let _running = &running;
                let delivery = match delivery {
                    stream::Delivery::Events(events) => Post::Payloads(joined(events)),
                    stream::Delivery::Text(text) => Post::Text(text),
                    stream::Delivery::Stalled => Post::Signal(Signal::Stalled),
                    stream::Delivery::Head { status, headers } => {
                        Post::Head(FetchHead::new(status, headers))
                    }
                    stream::Delivery::Bytes(chunk) => Post::Bytes(chunk.to_vec()),
                    stream::Delivery::End => Post::Signal(Signal::Done),
                    stream::Delivery::Failed(e) => Post::Error(Box::new(ErrorInfo::from(&e))),
                };
                mailbox.post(id, delivery)
            });
            let mut stream = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            napi::bindgen_prelude::within_runtime_if_available(|| stream.start(sink, lone));
            Ok(())
        })
    }

    /// The consumer used `events` more events, in delivery order.
    #[napi]
    pub fn ack(&self, events: u32) -> Result<()> {
        guard(|| {
            let stream = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            stream.ack(events as usize);
            Ok(())
        })
    }

    /// The consumer is done: cancels the request and closes its connection.
    #[napi]
    pub fn close(&self) {
        self.closer.cancel();
    }

    /// Text mode (before `start`): deliveries are the first choice's content, one string per
    /// batch, and the chunks are merged in Rust.
    #[napi]
    pub fn text_mode(&self) -> Result<()> {
        guard(|| {
            self.inner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .text_mode();
            Ok(())
        })
    }

    /// Text mode: the chunks so far merged into one `ChatCompletion` (JSON text).
    #[napi]
    pub fn final_completion(&self) -> Result<Option<String>> {
        guard(|| {
            Ok(self
                .inner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .final_completion())
        })
    }
}

/// Merges a chat stream's chunks (JSON texts joined by the payload separator, as a stream
/// delivers them) into one `ChatCompletion` (JSON text) with the accumulator text mode uses:
/// `finalCompletion()` of a stream read in object mode. Indices are bounded there; nothing a
/// chunk says can reach a JS prototype.
#[napi]
#[allow(dead_code, reason = "called from JS, through its #[napi] registration")]
pub fn merge_chat_chunks(payloads: String) -> Result<String> {
    guard(|| {
        let mut merged = crate::accumulate::Accumulator::default();
        for payload in payloads
            .split(crate::binding::mailbox::PAYLOAD_SEPARATOR)
            .filter(|p| !p.is_empty())
        {
            merged.add(payload);
        }
        Ok(merged.completion())
    })
}
