//! The client JS holds: one or several upstreams, each a whole [`Client`] (its own pool, key,
//! limits, rate-limit view, and a circuit breaker that is its cooldown). One `baseUrl` is a
//! router of one upstream; every call goes through the same path whatever their number.
//!
//! A call's attempts run in the one attempt loop ([`crate::attempt`]), which decides whether to
//! try again; the router answers where ([`plan`]): one healthy upstream that serves the model
//! ([`pick`]), another of the same model after a retryable failure (at once, spending one of
//! `maxRetries`), then the models of `fallbacks`; a `context_length_exceeded` answer moves it
//! to `contextWindowFallbacks`. A stream moves only before its first chunk. Around the loop the
//! router does what belongs to the whole call: counting, the client-wide limits, abort and
//! `destroy()`, and redaction.

pub mod config;
pub mod pick;
mod plan;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::Either;
use hyper::Method;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::{TaskTracker, TaskTrackerToken};

use crate::attempt::{Attempts, BoxedAttempt, CallKind, Whereabouts};
use crate::cache::{Cache, CacheStats, Entry, Key, Turn};
use crate::cancel::Abort;
use crate::chat::Answer;
pub use crate::client::Target;
use crate::client::{Client, ClientStats};
use crate::config::{CallOptions, Config, ConfigError};
use crate::conn::Connection;
use crate::error::{Error, Kind};
use crate::fetch::{deliver_raw_outcome, raw_attempt, RawRequest};
use crate::limits::Limiter;
use crate::pool::Connect;
use crate::ratelimit::RateLimits;
use crate::store::{Store, StoreStats};
use crate::stream::{deliver_outcome, stream_attempt, Dialect, Reader, StreamHandle, StreamTarget};
use crate::transport::HttpConnector;

use self::config::{RouterConfig, Routing, UpstreamConfig};
use self::pick::{pick, Candidate};
use self::plan::Plan;

/// One upstream: its client and how routing sees it.
pub struct Upstream<K: Connect> {
    pub client: Arc<Client<K>>,
    pub name: String,
    weight: u32,
    models: Option<Vec<(String, String)>>,
    /// Calls it is meant to carry at once, for `least-busy`.
    capacity: usize,
}

impl<K: Connect> Upstream<K> {
    /// The upstream's own name for `model`, when it serves it.
    fn serves<'a>(&'a self, model: Option<&'a str>) -> Option<&'a str> {
        config::serves(&self.models, model)
    }

    fn healthy(&self) -> bool {
        self.client.available() && !self.client.provider_paused()
    }
}

/// Where a JSON call's answer came from: the upstream, and whether on a fallback model.
struct AnsweredAt {
    upstream: Option<usize>,
    fallback: bool,
}

/// One stream's request, kept by its reader for the stream's life.
pub(crate) struct StreamRequest {
    pub target: Target,
    pub dialect: Dialect,
    pub body: Bytes,
    pub call: CallOptions,
    pub cancel: Abort,
}

/// A snapshot of one upstream, for `stats().upstreams`.
#[derive(Debug, Clone)]
pub struct UpstreamStats {
    pub name: String,
    /// `closed` (healthy), `open` (cooling down) or `half-open` (one probe allowed).
    pub circuit: &'static str,
    pub in_flight: usize,
    pub requests: u64,
    pub errors: u64,
    /// Recent time to response headers.
    pub latency: Option<std::time::Duration>,
    /// The provider reported a window used up, reset still ahead.
    pub paced: bool,
}

/// The client JS holds: the upstreams and the rules between them.
pub struct Router<K: Connect = HttpConnector> {
    upstreams: Vec<Upstream<K>>,
    routing: Routing,
    fallbacks: Vec<(String, Vec<String>)>,
    context_window_fallbacks: Vec<(String, Vec<String>)>,
    /// Routing is on: more than one upstream, or models or fallbacks to choose by (the body's
    /// model is read, and errors name the upstreams tried).
    routes: bool,
    /// Configured with `upstreams` (names show in stats and errors).
    named: bool,
    /// The client-wide limits across upstreams.
    limiter: Option<Limiter>,
    /// The shared limiter store, when configured.
    store: Option<Arc<Store>>,
    /// The response cache, when configured.
    cache: Option<Cache>,
    /// A hash of every upstream's endpoint, models, key and default headers: part of every
    /// cache key, so that clients with different keys never share an answer.
    identity: [u8; 32],
    requests: AtomicU64,
    errors: AtomicU64,
    aborted: AtomicU64,
    /// Calls admitted before `close()` began (see [`Router::admit`]): `close()` lets them run.
    admitted: TaskTracker,
    closing: AtomicBool,
    /// Cancelled by `destroy()`: every in-flight call ends with `ERR_CLOSED`.
    shutdown: CancellationToken,
    /// Calls moved to another upstream or model after a failure.
    failovers: AtomicU64,
    turn: AtomicUsize,
}

impl Router<HttpConnector> {
    /// The router of the real transport.
    pub fn new(config: RouterConfig) -> Result<Self, ConfigError> {
        Router::build(config, Client::new)
    }
}

impl<K: Connect> Router<K>
where
    K::Conn: Connection,
{
    /// A router whose upstream clients `make` builds (fake connectors in tests).
    pub fn build(
        config: RouterConfig,
        mut make: impl FnMut(Config) -> Result<Client<K>, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let routes = config.upstreams.len() > 1
            || !config.fallbacks.is_empty()
            || !config.context_window_fallbacks.is_empty()
            || config.upstreams[0].models.is_some();
        let store = match &config.store {
            None => None,
            Some(s) => {
                let store = Arc::new(Store::new(&s.target, &s.prefix).map_err(|why| {
                    ConfigError::new("store.redis", format!("is not usable: {why}"))
                })?);
                store.connect_soon();
                Some(store)
            }
        };
        let identity = identity_of(&config.upstreams);
        let cache = config
            .cache
            .map(|settings| Cache::new(settings, store.clone()));
        let limiter = config.limits.as_ref().map(|limits| match &store {
            Some(store) => Limiter::shared(limits, store.clone(), "*"),
            None => Limiter::new(limits),
        });
        let upstreams = config
            .upstreams
            .into_iter()
            .map(
                |UpstreamConfig {
                     config,
                     weight,
                     models,
                 }| {
                    let capacity = config
                        .limits
                        .and_then(|l| l.concurrency.map(|c| c as usize))
                        .or(config.connections)
                        .unwrap_or(256);
                    let name = config
                        .name
                        .clone()
                        .unwrap_or_else(|| config.endpoint.origin.clone());
                    let client = make(config)?;
                    let client = match &store {
                        Some(store) => client.with_store(store.clone()),
                        None => client,
                    };
                    Ok(Upstream {
                        client: Arc::new(client),
                        name,
                        weight,
                        models,
                        capacity,
                    })
                },
            )
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(Router {
            upstreams,
            routing: config.routing,
            fallbacks: config.fallbacks,
            context_window_fallbacks: config.context_window_fallbacks,
            routes,
            named: config.named,
            limiter,
            store,
            cache,
            identity,
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            admitted: TaskTracker::new(),
            closing: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            failovers: AtomicU64::new(0),
            turn: AtomicUsize::new(0),
        })
    }

    /// The upstreams, in the order configured.
    pub fn upstreams(&self) -> &[Upstream<K>] {
        &self.upstreams
    }

    /// The first upstream's configuration: what every upstream shares (redaction, limits of a
    /// call's options) is read from it.
    pub fn config(&self) -> &Config {
        self.upstreams[0].client.config()
    }

    /// Whether the client was configured with `upstreams`.
    pub fn is_named(&self) -> bool {
        self.named
    }

    /// Checks an API path (`/embeddings`) once, before a call starts.
    pub fn check_path(&self, path: &str) -> Result<(), ConfigError> {
        self.upstreams[0].client.api_uri(path).map(|_| ())
    }

    /// A non-stream JSON call: chat, or any JSON endpoint. With a cache: the answer kept for
    /// it, or (the first of identical calls) one sent and kept when it is a complete success of
    /// the model asked for.
    pub async fn post_json(
        &self,
        target: Target,
        body: Bytes,
        call: CallOptions,
        cancel: Abort,
    ) -> Result<Answer, Error> {
        // The call leads identical ones: where its answer goes.
        let mut leading = None;
        if let Some((cache, key, ttl)) = self.cache_for("json", &target, &body, &call) {
            // Boxed: only calls of a client with a cache look (and rarely wait) here. A look
            // that answers at once (memory) needs no watch for an abort or `destroy()`.
            let mut turn = Box::pin(cache.turn(&key, false));
            let turn = match futures::FutureExt::now_or_never(&mut turn) {
                Some(turn) => turn,
                None => self.until_ended(&cancel, turn).await?,
            };
            match turn {
                Turn::Hit(entry) => {
                    return Answer::cached(&entry, call.with_response)
                        // Only answers are found for a JSON call (see `Cache::turn`).
                        .ok_or_else(|| Error::new(Kind::Internal, "the cache found no answer"));
                }
                Turn::Lead(flight) => leading = Some((cache, key, ttl, flight)),
            }
        }
        let (mut answer, at) = self.send_json(&target, &body, &call, &cancel).await?;
        if let Some((cache, key, ttl, flight)) = leading {
            if !at.fallback && !self.quotes_a_secret(&answer.text, &call) {
                let upstream = at
                    .upstream
                    .and_then(|i| self.upstreams.get(i))
                    .and_then(|u| u.client.config().name.clone());
                let text = answer.text.clone();
                cache.keep(&key, Entry::Answer { text, upstream }, ttl);
            }
            drop(flight);
            answer.cache = Some(crate::chat::CacheOutcome::Miss);
        }
        Ok(answer)
    }

    /// A JSON call through the attempt loop; with its answer, whether that came from a
    /// fallback model.
    async fn send_json(
        &self,
        target: &Target,
        body: &Bytes,
        call: &CallOptions,
        cancel: &Abort,
    ) -> Result<(Answer, AnsweredAt), Error> {
        let (committed, at) = (AtomicBool::new(false), Whereabouts::default());
        let mut plan = Plan::new(self, body);
        let attempts = self.attempts(call, CallKind::Chat, &committed, &at);
        let work = attempts.run(
            &mut plan,
            move |stop| {
                let (client, body) = (stop.client, stop.body.clone());
                let one: BoxedAttempt<'_, Answer> = Box::pin(async move {
                    let uri = client.uri_of(target)?;
                    client.json_attempt(&uri, body, call).await
                });
                one
            },
            |answer: &Answer| answer.used_tokens,
        );
        let used = |answer: &Answer| answer.used_tokens;
        let mut answer = self
            .call(body, call, cancel.as_ref(), &at, work, used)
            .await?;
        answer.attempts = at.attempts.load(Ordering::Relaxed);
        let from = AnsweredAt {
            upstream: at.upstream(),
            fallback: at.on_fallback(),
        };
        Ok((answer, from))
    }

    /// Checks what a call's options ask of the client: `cache: { ttl }` needs a cache.
    pub fn check_call(&self, call: CallOptions) -> Result<CallOptions, ConfigError> {
        if call.cache.ttl().is_some() && self.cache.is_none() {
            return Err(ConfigError::new(
                "cache",
                "sets a ttl, but the client has no cache (set cache on the client)",
            ));
        }
        Ok(call)
    }

    /// The cache's part of a call: `kind` (`json`, `stream`), the target and the body make the
    /// key with the client's identity; `None` when the call is not cached (no cache,
    /// `cache: false`, a body that is not JSON).
    fn cache_for(
        &self,
        kind: &str,
        target: &Target,
        body: &Bytes,
        call: &CallOptions,
    ) -> Option<(&Cache, Key, std::time::Duration)> {
        let cache = self.cache.as_ref()?;
        if call.cache.is_off() {
            return None;
        }
        let ttl = call.cache.ttl().unwrap_or(cache.ttl());
        let path = match target {
            Target::Chat => "/chat/completions",
            Target::Api(path) | Target::Origin(path) => path,
        };
        let key = crate::cache::key_of(&self.identity, (kind, path), &call.headers, body)?;
        Some((cache, key, ttl))
    }

    /// Whether an answer quotes a key or secret header of any upstream or of the call: a server
    /// that echoes what it was sent. Such an answer is not kept (a shared cache would put the
    /// key in Redis).
    fn quotes_a_secret(&self, text: &str, call: &CallOptions) -> bool {
        self.upstreams
            .iter()
            .any(|u| u.client.quotes_a_secret(text, call))
    }

    /// Runs `work` until it ends, the call is aborted, or `destroy()` ends every call.
    async fn until_ended<T>(
        &self,
        cancel: &Abort,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, Error> {
        tokio::select! {
            biased;
            _ = crate::cancel::aborted(cancel.as_ref()) => Err(self.aborted_error()),
            _ = crate::cancel::cancelled(&self.shutdown) => Err(self.closed_error()),
            value = work => Ok(value),
        }
    }

    /// A stream (chat, or any SSE endpoint); nothing is sent before [`StreamHandle::start`].
    pub fn stream(
        self: &Arc<Self>,
        target: Target,
        dialect: Dialect,
        body: Bytes,
        call: CallOptions,
        cancel: Abort,
    ) -> Result<StreamHandle, ConfigError> {
        if let Target::Api(path) = &target {
            self.check_path(path)?;
        }
        let router = self.clone();
        let request = StreamRequest {
            target,
            dialect,
            body,
            call,
            cancel,
        };
        let cached = self.cache.is_some() && !request.call.cache.is_off();
        Ok(StreamHandle::new(Box::new(move |reader, closed| {
            if cached {
                Box::pin(router.read_cached_stream(request, reader, closed))
            } else {
                Box::pin(router.read_stream(request, reader, closed))
            }
        })))
    }

    /// A stream's reader task, spawned and held for the stream's life. A future-returning fn,
    /// not an async fn, which would keep the request twice.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub(crate) fn read_stream(
        self: Arc<Self>,
        request: StreamRequest,
        reader: Arc<Reader>,
        closed: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        async move {
            let outcome = self.stream_outcome(&request, &reader, &closed).await;
            deliver_outcome(self.config(), outcome, &reader, &closed);
        }
    }

    /// The reader task of a stream of a client with a cache: the cache answers or keeps it,
    /// unless it is not cached (`cache: false`, a body that is not JSON). A future of its own,
    /// so that streams of a client without a cache carry none of its steps.
    pub(crate) async fn read_cached_stream(
        self: Arc<Self>,
        request: StreamRequest,
        reader: Arc<Reader>,
        closed: CancellationToken,
    ) {
        let kind = match request.dialect {
            Dialect::Chat => "stream",
            Dialect::Events => "events",
        };
        let outcome = match self.cache_for(kind, &request.target, &request.body, &request.call) {
            Some((cache, key, ttl)) => {
                self.cached_stream(cache, key, ttl, &request, &reader, &closed)
                    .await
            }
            None => self.stream_outcome(&request, &reader, &closed).await,
        };
        deliver_outcome(self.config(), outcome, &reader, &closed);
    }

    /// A cached stream: the events kept for it replayed, or (the first of identical streams)
    /// one read from the network, its events kept when it ended complete, on the model asked
    /// for, while its consumer read it to the end. Ends quietly when the consumer leaves.
    async fn cached_stream(
        &self,
        cache: &Cache,
        key: Key,
        ttl: std::time::Duration,
        request: &StreamRequest,
        reader: &Reader,
        closed: &CancellationToken,
    ) -> Result<(), Error> {
        let turn = tokio::select! {
            biased;
            _ = crate::cancel::cancelled(closed) => return Ok(()),
            turn = self.until_ended(&request.cancel, cache.turn(&key, true)) => turn?,
        };
        let flight = match turn {
            Turn::Hit(entry) => {
                let Entry::Stream { events } = &*entry else {
                    // Only streams are found for a stream (see `Cache::turn`).
                    return Err(Error::new(Kind::Internal, "the cache found no stream"));
                };
                let client = &self.upstreams[0].client;
                let replaying = crate::stream::replay(client, request.dialect, events, reader);
                return tokio::select! {
                    biased;
                    _ = crate::cancel::cancelled(closed) => Ok(()),
                    replayed = self.until_ended(&request.cancel, replaying) => replayed?,
                };
            }
            Turn::Lead(flight) => flight,
        };
        reader.start_recording(cache.max_bytes());
        self.stream_outcome(request, reader, closed).await?;
        if let Some(events) = reader.take_recording() {
            if !events
                .iter()
                .any(|e| self.quotes_a_secret(&e.data, &request.call))
            {
                cache.keep(&key, Entry::Stream { events }, ttl);
            }
        }
        drop(flight);
        Ok(())
    }

    /// A stream's whole run: the attempt loop over the plan's upstreams, ended quietly (`Ok`)
    /// when the consumer leaves. Borrows the request: an async fn keeps its arguments for its
    /// whole life, and a stream lives long.
    async fn stream_outcome(
        &self,
        request: &StreamRequest,
        reader: &Reader,
        closed: &CancellationToken,
    ) -> Result<(), Error> {
        let StreamRequest {
            target,
            dialect,
            body,
            call,
            cancel,
        } = request;
        let (committed, at) = (AtomicBool::new(false), Whereabouts::default());
        let mut plan = Plan::new(self, body);
        let attempts = self.attempts(call, CallKind::Stream, &committed, &at);
        let committed = &committed;
        let run = attempts.run(
            &mut plan,
            move |stop| {
                let client = stop.client;
                // A stream on a fallback model is not kept for the model asked for.
                reader.note_fallback(stop.fallback);
                let one: BoxedAttempt<'_, ()> = match client.uri_of(target) {
                    Ok(uri) => Box::pin(stream_attempt(
                        client,
                        Box::new(StreamTarget {
                            uri: uri.into_owned(),
                            body: stop.body.clone(),
                            dialect: *dialect,
                        }),
                        call,
                        reader,
                        committed,
                    )),
                    Err(e) => Box::pin(async move { Err(e) }),
                };
                one
            },
            |_| Some(reader.tokens_used()),
        );
        // The attempts are made inside the select: made outside, they would be kept twice.
        let work = async move {
            tokio::select! {
                biased;
                _ = crate::cancel::cancelled(closed) => Ok(()),
                result = run => result,
            }
        };
        // Boxed: a future passed by value into `call` is laid out in it more than once.
        let used = |_: &()| Some(reader.tokens_used());
        self.call(body, call, cancel.as_ref(), &at, Box::pin(work), used)
            .await
    }

    /// A raw call for `client.fetch`. With one upstream, `path` is a path on its origin; with
    /// `upstreams`, an API path under each upstream's `baseUrl`, sent to one upstream chosen by
    /// the body's model (no failover inside one fetch: the SDK on top retries, and each retry
    /// is routed again, around an upstream in cooldown).
    pub fn fetch(
        self: &Arc<Self>,
        method: Method,
        path: &str,
        body: Bytes,
        call: CallOptions,
        cancel: Abort,
    ) -> Result<StreamHandle, ConfigError> {
        let (index, target, body) = if self.named {
            self.check_path(path.split('?').next().unwrap_or(path))?;
            let model = crate::payload::model_of(&body);
            let serving: Vec<usize> = (0..self.upstreams.len())
                .filter(|&i| self.upstreams[i].serves(model.as_deref()).is_some())
                .collect();
            if serving.is_empty() {
                let error = no_upstream(model.as_deref());
                return Ok(StreamHandle::new(Box::new(move |reader, _| {
                    Box::pin(async move { reader.fail(error) })
                })));
            }
            let index = self.choose(&serving);
            let up = &self.upstreams[index];
            let body = match (model.as_deref(), up.serves(model.as_deref())) {
                (Some(asked), Some(own)) if asked != own => {
                    crate::payload::with_model(&body, own).unwrap_or(body)
                }
                _ => body,
            };
            up.client.api_uri(path)?;
            (index, Target::Api(path.to_owned()), body)
        } else {
            self.upstreams[0].client.origin_uri(path)?;
            (0, Target::Origin(path.to_owned()), body)
        };
        let router = self.clone();
        Ok(StreamHandle::new(Box::new(move |reader, closed| {
            Box::pin(async move {
                let request = RawRequest {
                    method,
                    target,
                    body,
                };
                let committed = AtomicBool::new(false);
                let outcome = router
                    .raw_outcome(
                        index, &request, &call, &cancel, &reader, &closed, &committed,
                    )
                    .await;
                deliver_raw_outcome(outcome, &committed, &reader, &closed);
            })
        })))
    }

    /// A `fetch`'s run at upstream `index`: retries before the head, then its body.
    #[allow(clippy::too_many_arguments, reason = "one call's parts, borrowed")]
    async fn raw_outcome(
        &self,
        index: usize,
        request: &RawRequest,
        call: &CallOptions,
        cancel: &Abort,
        reader: &Reader,
        closed: &CancellationToken,
        committed: &AtomicBool,
    ) -> Result<(), Error> {
        let at = Whereabouts::default();
        let mut plan = Plan::only(self, index, request.body.clone());
        let attempts = self.attempts(call, CallKind::Chat, committed, &at);
        let run = attempts.run(
            &mut plan,
            move |stop| {
                let client = stop.client;
                let one: BoxedAttempt<'_, ()> =
                    Box::pin(raw_attempt(client, request, call, reader, committed));
                one
            },
            |_| None,
        );
        let work = async move {
            tokio::select! {
                biased;
                _ = crate::cancel::cancelled(closed) => Ok(()),
                result = run => result,
            }
        };
        self.call(&request.body, call, cancel.as_ref(), &at, work, |_| None)
            .await
    }

    /// The attempt loop's settings for one call.
    fn attempts<'a>(
        &'a self,
        call: &'a CallOptions,
        kind: CallKind,
        committed: &'a AtomicBool,
        at: &'a Whereabouts,
    ) -> Attempts<'a> {
        Attempts {
            call,
            kind,
            committed,
            at,
            moves: &self.failovers,
        }
    }

    /// Wraps one whole call: counts it, holds it to the client-wide limits, ends it at once on
    /// abort or `destroy()`, and is the one door errors leave by: each is counted (with the
    /// upstream the call was at) and redacted. `at` says which upstream that is (see
    /// [`Attempts::at`]).
    async fn call<T>(
        &self,
        body: &Bytes,
        call: &CallOptions,
        cancel: Option<&CancellationToken>,
        at: &Whereabouts,
        work: impl std::future::Future<Output = Result<T, Error>>,
        used: impl FnOnce(&T) -> Option<u64>,
    ) -> Result<T, Error> {
        // One upstream without `upstreams`: its client's counts are the stats (see `stats`).
        let counting = self.named || self.upstreams.len() > 1;
        if counting {
            self.requests.fetch_add(1, Ordering::Relaxed);
        }
        let started = tokio::time::Instant::now();
        let limited = match &self.limiter {
            None => Either::Left(work),
            Some(limiter) => {
                let tokens = if limiter.counts_tokens() {
                    crate::limits::estimate_tokens(body)
                } else {
                    0
                };
                // Boxed: only calls of a client with `limits` carry the wait for a permit.
                Either::Right(Box::pin(limiter.around(tokens, "the client", work, used)))
            }
        };
        let result = tokio::select! {
            biased;
            _ = crate::cancel::aborted(cancel) => Err(self.aborted_error()),
            _ = crate::cancel::cancelled(&self.shutdown) => Err(self.closed_error()),
            result = limited => result,
        };
        let visited = at
            .upstream()
            .and_then(|i| self.upstreams.get(i))
            .map(|u| &*u.client);
        if let Some(client) = visited {
            client.tally(started, result.as_ref().err());
        }
        result.map_err(|e| {
            if counting {
                let counter = if e.kind() == Kind::Aborted {
                    &self.aborted
                } else {
                    &self.errors
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            visited.unwrap_or(&self.upstreams[0].client).redact(e, call)
        })
    }

    fn aborted_error(&self) -> Error {
        let message = if self.routes {
            "request was aborted".to_owned()
        } else {
            format!(
                "request to {} was aborted",
                self.upstreams[0].client.config().endpoint.origin
            )
        };
        Error::new(Kind::Aborted, message)
    }

    /// One of `indices` (not empty) by the routing strategy, among the healthy ones when any is.
    pub(super) fn choose(&self, indices: &[usize]) -> usize {
        let healthy: Vec<usize> = indices
            .iter()
            .copied()
            .filter(|&i| self.upstreams[i].healthy())
            .collect();
        let pool = if healthy.is_empty() {
            indices
        } else {
            &healthy
        };
        if pool.len() == 1 {
            return pool[0];
        }
        let candidates: Vec<Candidate> = pool
            .iter()
            .map(|&i| {
                let up = &self.upstreams[i];
                Candidate {
                    in_flight: up.client.in_flight(),
                    capacity: up.capacity,
                    latency: up.client.latency(),
                    weight: up.weight,
                }
            })
            .collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        pool[pick(self.routing, &candidates, crate::retry::jitter(), turn)]
    }

    /// Counters and gauges: the one client's, or the sum over upstreams with the router's own
    /// call counts (a call that moved once is one request, not two).
    pub fn stats(&self) -> ClientStats {
        let mut each = self.upstreams.iter().map(|u| u.client.stats());
        let first = each.next().unwrap_or_default();
        if !self.named && self.upstreams.len() == 1 {
            return first;
        }
        let mut total = each.fold(first, |mut a, b| {
            let (p, q) = (&mut a.pool, b.pool);
            p.connected += q.connected;
            p.free += q.free;
            p.pending += q.pending;
            p.queued += q.queued;
            p.running += q.running;
            p.size += q.size;
            p.connections_opened += q.connections_opened;
            p.connections_closed += q.connections_closed;
            p.reused += q.reused;
            p.multiplexed += q.multiplexed;
            p.streams += q.streams;
            a.retries += b.retries;
            a.limited += b.limited;
            a.limit_waits += b.limit_waits;
            a.paced += b.paced;
            a.dns_lookups += b.dns_lookups;
            a.dns_hits += b.dns_hits;
            a
        });
        total.requests = self.requests.load(Ordering::Relaxed);
        total.errors = self.errors.load(Ordering::Relaxed);
        total.aborted = self.aborted.load(Ordering::Relaxed);
        total.retries += self.failovers.load(Ordering::Relaxed);
        total.circuit = None;
        if let Some(limiter) = &self.limiter {
            let (now, ever) = limiter.waiting();
            total.limited += now;
            total.limit_waits += ever;
        }
        total
    }

    /// The shared store's state, when there is one.
    pub fn store_stats(&self) -> Option<StoreStats> {
        self.store.as_ref().map(|s| s.stats())
    }

    /// The response cache's counters, when there is one.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(Cache::stats)
    }

    /// Calls moved to another upstream or model.
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// Each upstream's state (with `upstreams`; empty with one `baseUrl`).
    pub fn upstream_stats(&self) -> Vec<UpstreamStats> {
        if !self.named {
            return Vec::new();
        }
        self.upstreams
            .iter()
            .map(|u| {
                let stats = u.client.stats();
                UpstreamStats {
                    name: u.name.clone(),
                    circuit: stats.circuit.unwrap_or("closed"),
                    in_flight: u.client.in_flight(),
                    requests: stats.requests,
                    errors: stats.errors,
                    latency: u.client.latency(),
                    paced: u.client.provider_paused(),
                }
            })
            .collect()
    }

    /// The provider's rate limits per upstream, as last reported.
    pub fn rate_limits(&self) -> Vec<(&str, Option<(RateLimits, std::time::SystemTime)>)> {
        self.upstreams
            .iter()
            .map(|u| (u.name.as_str(), u.client.rate_limits()))
            .collect()
    }

    /// The Prometheus text of every upstream (labelled by name) as one exposition, with the
    /// router's own counters.
    pub fn metrics_text(&self) -> String {
        let mut texts: Vec<String> = self
            .upstreams
            .iter()
            .map(|u| u.client.metrics_text())
            .collect();
        if self.named {
            texts.push(format!(
                "# HELP llmpool_failovers_total Calls moved to another upstream or fallback model after a failure.\n# TYPE llmpool_failovers_total counter\nllmpool_failovers_total {}\n",
                self.failovers()
            ));
        }
        if let Some(store) = self.store_stats() {
            texts.push(format!(
                "# HELP llmpool_store_up Whether the shared limiter store (Redis) answered last time.\n# TYPE llmpool_store_up gauge\nllmpool_store_up {}\n# HELP llmpool_store_errors_total Round trips to the shared store that failed or ran past their deadline.\n# TYPE llmpool_store_errors_total counter\nllmpool_store_errors_total {}\n# HELP llmpool_store_fallbacks_total Limit decisions made locally because the shared store was down.\n# TYPE llmpool_store_fallbacks_total counter\nllmpool_store_fallbacks_total {}\n",
                u8::from(store.up),
                store.errors,
                store.fallbacks
            ));
        }
        if let Some(cache) = self.cache_stats() {
            texts.push(format!(
                "# HELP llmpool_cache_hits_total Calls answered from the response cache.\n# TYPE llmpool_cache_hits_total counter\nllmpool_cache_hits_total {}\n# HELP llmpool_cache_misses_total Cached calls that were sent (no entry yet).\n# TYPE llmpool_cache_misses_total counter\nllmpool_cache_misses_total {}\n# HELP llmpool_cache_entries Entries in the response cache's memory.\n# TYPE llmpool_cache_entries gauge\nllmpool_cache_entries {}\n# HELP llmpool_cache_bytes Bytes of the response cache's memory.\n# TYPE llmpool_cache_bytes gauge\nllmpool_cache_bytes {}\n",
                cache.hits, cache.misses, cache.entries, cache.bytes
            ));
        }
        if texts.len() == 1 {
            return texts.pop().unwrap_or_default();
        }
        crate::metrics::merge_expositions(&texts)
    }

    pub fn warnings(&self) -> Vec<String> {
        self.upstreams
            .iter()
            .flat_map(|u| u.client.warnings().iter().cloned())
            .collect()
    }

    /// Graceful: every upstream refuses new calls, finishes its in-flight ones, closes.
    /// Admits a call at the moment the caller makes it (on the JS thread, before its task first
    /// runs): `None` once `close()` or `destroy()` began. The token keeps `close()` waiting until
    /// the call ends, so that a call made before `close()` runs to its end even if its task had
    /// not started when `close()` was called.
    pub fn admit(&self) -> Option<TaskTrackerToken> {
        (!self.closing.load(Ordering::Acquire)).then(|| self.admitted.token())
    }

    /// The error of a call made after `close()` or `destroy()` began.
    pub fn closed_error(&self) -> Error {
        self.upstreams[0].client.closed_error()
    }

    /// Graceful: refuses new calls, lets every admitted one end, then closes every upstream
    /// (each waits for its own in-flight work).
    pub async fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.admitted.close();
        self.admitted.wait().await;
        futures::future::join_all(self.upstreams.iter().map(|u| u.client.close())).await;
        if let Some(store) = &self.store {
            store.disconnect();
        }
    }

    /// Abrupt: every in-flight call ends with `ERR_CLOSED`. Every pool closes before the calls
    /// are cancelled, so that nothing they free on their way out is handed to a queued call.
    pub fn destroy(&self) {
        self.closing.store(true, Ordering::Release);
        for u in &self.upstreams {
            u.client.destroy();
        }
        self.shutdown.cancel();
        if let Some(store) = &self.store {
            store.disconnect();
        }
    }
}

pub(crate) fn lookup<'a>(lists: &'a [(String, Vec<String>)], model: &str) -> Option<&'a [String]> {
    lists
        .iter()
        .find(|(m, _)| m == model)
        .map(|(_, list)| list.as_slice())
}

pub(crate) fn no_upstream(model: Option<&str>) -> Error {
    Error::new(
        Kind::NoUpstream,
        match model {
            Some(m) => format!("no upstream serves model {m:?}; nothing was sent"),
            None => "the body names no model and every upstream lists its models; nothing was sent"
                .to_owned(),
        },
    )
}

/// A 400 that says the prompt does not fit the model's context window (OpenAI's
/// `context_length_exceeded` code; others say it in words).
pub(crate) fn is_context_length_exceeded(error: &Error) -> bool {
    let Some(http) = error.http_failure() else {
        return false;
    };
    http.status == 400 && {
        let body = http.body.to_ascii_lowercase();
        body.contains("context_length_exceeded")
            || body.contains("maximum context length")
            || body.contains("context window")
    }
}

/// The identity of a client's upstreams for cache keys: a hash of each one's name, endpoint,
/// models, key and default headers (the key itself is in no cache key, only in this hash).
fn identity_of(upstreams: &[UpstreamConfig]) -> [u8; 32] {
    let mut hasher = crate::cache::Hasher::default();
    for up in upstreams {
        let config = &up.config;
        hasher
            .part(config.name.as_deref().unwrap_or_default().as_bytes())
            .part(config.endpoint.origin.as_bytes())
            .part(config.endpoint.path_prefix.as_bytes())
            .part(
                config
                    .api_key
                    .as_ref()
                    .map(|k| k.expose())
                    .unwrap_or_default()
                    .as_bytes(),
            );
        let mut headers: Vec<_> = config
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        headers.sort();
        for (name, value) in headers {
            hasher.part(name.as_bytes()).part(value);
        }
        for (asked, own) in up.models.iter().flatten() {
            hasher.part(asked.as_bytes()).part(own.as_bytes());
        }
        hasher.part(b"--");
    }
    hasher.finish()
}
