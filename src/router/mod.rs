//! Several upstreams behind one client: each upstream is a whole [`Client`] (its own pool, key,
//! limits, rate-limit view, and a circuit breaker that is its cooldown); the router decides
//! where each call goes.
//!
//! A call goes to one healthy upstream that serves its model ([`pick`]); when that attempt fails
//! in a way the retry policy would retry, the call moves to another upstream of the same model at
//! once (an attempt like any other: it spends one of `maxRetries`), then to the models of
//! `fallbacks`; a `context_length_exceeded` answer moves it to `contextWindowFallbacks`. The last
//! candidate keeps what is left of the retry budget for its own attempt loop (backoff,
//! `Retry-After`). A stream moves only before its first chunk. With one upstream and no
//! fallbacks the router steps aside: calls go straight to the client.

pub mod config;
pub mod pick;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::{BoxFuture, Either};
use hyper::{Method, Uri};
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::{TaskTracker, TaskTrackerToken};

use crate::cancel::Abort;
use crate::chat::Answer;
use crate::client::{Client, ClientStats};
use crate::config::{CallOptions, Config, ConfigError};
use crate::conn::Connection;
use crate::error::{Error, Kind};
use crate::fetch::RawRequest;
use crate::limits::Limiter;
use crate::pool::Connect;
use crate::ratelimit::RateLimits;
use crate::store::{Store, StoreStats};
use crate::stream::{deliver_outcome, stream_outcome, Dialect, StreamHandle, StreamRequest};
use crate::transport::HttpConnector;

use self::config::{RouterConfig, Routing, UpstreamConfig};
use self::pick::{pick, Candidate};

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

/// What a routed call asks of its upstream.
#[derive(Debug, Clone)]
pub enum Target {
    /// `POST {baseUrl}/chat/completions`.
    Chat,
    /// `POST {baseUrl}{path}`.
    Api(String),
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
    /// One upstream, no fallbacks: calls go straight to its client.
    direct: bool,
    /// Configured with `upstreams` (names show in stats and errors).
    named: bool,
    /// The client-wide limits across upstreams.
    limiter: Option<Limiter>,
    /// The shared limiter store, when configured.
    store: Option<Arc<Store>>,
    requests: AtomicU64,
    errors: AtomicU64,
    /// Calls admitted before `close()` began (see [`Router::admit`]): `close()` lets them run.
    admitted: TaskTracker,
    closing: AtomicBool,
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
        let direct = config.upstreams.len() == 1
            && config.fallbacks.is_empty()
            && config.context_window_fallbacks.is_empty()
            && config.upstreams[0].models.is_none();
        let store = match &config.store {
            None => None,
            Some(s) => Some(Arc::new(Store::new(&s.redis_url, &s.prefix).map_err(
                |why| ConfigError::new("store.redis", format!("is not usable: {why}")),
            )?)),
        };
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
            direct,
            named: config.named,
            limiter,
            store,
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            admitted: TaskTracker::new(),
            closing: AtomicBool::new(false),
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

    /// A non-stream JSON call: chat, or any JSON endpoint.
    pub async fn post_json(
        &self,
        target: Target,
        body: Bytes,
        call: CallOptions,
        cancel: Abort,
    ) -> Result<Answer, Error> {
        if self.direct {
            let client = &*self.upstreams[0].client;
            return match &target {
                Target::Chat => client.chat(body, call, cancel).await,
                Target::Api(_) => {
                    let uri = target_uri(client, &target)?;
                    Box::pin(client.post_json(&uri, body, call, cancel)).await
                }
            };
        }
        let send = |up: &Upstream<K>, body: Bytes, sub: CallOptions| {
            let client = up.client.clone();
            let cancel = cancel.clone();
            let target = target.clone();
            let sending: BoxFuture<'static, Result<Answer, Error>> = Box::pin(async move {
                let uri = target_uri(&client, &target)?;
                client.post_json(&uri, body, sub, cancel).await
            });
            sending
        };
        let routed = self.routed(&body, &call, false, &|| true, send);
        let used = |answer: &Answer| answer.used_tokens;
        self.run(&body, cancel.as_ref(), routed, used).await
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
        if self.direct {
            let client = &self.upstreams[0].client;
            return Ok(match &target {
                Target::Chat => client.chat_stream(body, call, cancel),
                Target::Api(path) => {
                    client.stream(client.api_uri(path)?, dialect, body, call, cancel)
                }
            });
        }
        let router = self.clone();
        Ok(StreamHandle::new(Box::new(move |reader, closed| {
            Box::pin(async move {
                let (reader, closed) = (&reader, &closed);
                let send = |up: &Upstream<K>, body: Bytes, sub: CallOptions| {
                    let client = up.client.clone();
                    let uri = target_uri(&client, &target);
                    let cancel = cancel.clone();
                    let sending: BoxFuture<'_, Result<(), Error>> = Box::pin(async move {
                        let request = StreamRequest {
                            client,
                            uri: uri?,
                            dialect,
                            body,
                            call: sub,
                            cancel,
                        };
                        stream_outcome(&request, reader, closed).await
                    });
                    sending
                };
                let may_move = || reader.delivered() == 0;
                let routed = router.routed(&body, &call, true, &may_move, send);
                let outcome = router
                    .run(&body, cancel.as_ref(), routed, |_| {
                        Some(reader.tokens_used())
                    })
                    .await;
                deliver_outcome(&router.upstreams[0].client, outcome, reader, closed);
            })
        })))
    }

    /// A raw call for `client.fetch`. With one upstream, `path` is a path on its origin; with
    /// `upstreams`, an API path under each upstream's `baseUrl`, sent to one upstream chosen by
    /// the body's model (no failover inside one fetch: the SDK on top retries, and each retry
    /// is routed again, around an upstream in cooldown).
    pub fn fetch(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        call: CallOptions,
        cancel: Abort,
    ) -> Result<StreamHandle, ConfigError> {
        if !self.named {
            let client = &self.upstreams[0].client;
            let uri = client.origin_uri(path)?;
            return Ok(client.fetch(RawRequest { method, uri, body }, call, cancel));
        }
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
        let up = &self.upstreams[self.choose(&serving)];
        let body = match (model.as_deref(), up.serves(model.as_deref())) {
            (Some(asked), Some(own)) if asked != own => {
                crate::payload::with_model(&body, own).unwrap_or(body)
            }
            _ => body,
        };
        let uri = up
            .client
            .origin_uri(&up.client.config().endpoint.path(path))?;
        Ok(up
            .client
            .fetch(RawRequest { method, uri, body }, call, cancel))
    }

    /// Counts a routed call, holds it to the client-wide limits, ends it at once on abort.
    async fn run<T>(
        &self,
        body: &Bytes,
        cancel: Option<&CancellationToken>,
        work: impl std::future::Future<Output = Result<T, Error>>,
        used: impl FnOnce(&T) -> Option<u64>,
    ) -> Result<T, Error> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let limited = match &self.limiter {
            None => Either::Left(work),
            Some(limiter) => {
                let tokens = if limiter.counts_tokens() {
                    crate::limits::estimate_tokens(body)
                } else {
                    0
                };
                Either::Right(limiter.around(tokens, "the client", work, used))
            }
        };
        let result = tokio::select! {
            biased;
            _ = crate::cancel::aborted(cancel) => Err(Error::new(Kind::Aborted, "request was aborted")),
            result = limited => result,
        };
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// The failover loop: upstreams of the model, then its fallbacks, each attempt sent by
    /// `send`. `may_move` says whether the call may still go elsewhere (a stream that delivered
    /// a chunk may not).
    async fn routed<'a, T>(
        &'a self,
        body: &Bytes,
        call: &CallOptions,
        stream: bool,
        may_move: &(dyn Fn() -> bool + Sync),
        mut send: impl FnMut(&Upstream<K>, Bytes, CallOptions) -> BoxFuture<'a, Result<T, Error>>,
    ) -> Result<T, Error> {
        let asked = crate::payload::model_of(body);
        let mut models: VecDeque<Option<String>> = VecDeque::from([asked.clone()]);
        if let Some(list) = asked.as_deref().and_then(|m| lookup(&self.fallbacks, m)) {
            models.extend(list.iter().cloned().map(Some));
        }
        let mut budget = call
            .max_retries
            .unwrap_or(self.upstreams[0].client.retry_policy().max_retries());
        let mut tried: Vec<String> = Vec::new();
        let mut last: Option<Error> = None;
        let mut context_moved = false;
        while let Some(model) = models.pop_front() {
            let mut left: Vec<usize> = (0..self.upstreams.len())
                .filter(|&i| self.upstreams[i].serves(model.as_deref()).is_some())
                .collect();
            while !left.is_empty() {
                let index = self.choose(&left);
                left.retain(|&i| i != index);
                let up = &self.upstreams[index];
                let own = up.serves(model.as_deref()).unwrap_or_default();
                let body = if model.is_some() && Some(own) != asked.as_deref() {
                    crate::payload::with_model(body, own).unwrap_or_else(|| body.clone())
                } else {
                    body.clone()
                };
                let more = !left.is_empty() || !models.is_empty();
                let mut sub = call.clone();
                sub.max_retries = Some(if more { 0 } else { budget });
                let result = send(up, body, sub).await;
                tried.push(match &model {
                    Some(m) if Some(m) != asked.as_ref() => format!("{} ({m})", up.name),
                    _ => up.name.clone(),
                });
                let error = match result {
                    Ok(value) => return Ok(value),
                    Err(error) => error,
                };
                // The server said when to come back: the upstream cools down that long.
                if let (Some(429), Some(wait)) =
                    (error.http_failure().map(|h| h.status), error.retry_after())
                {
                    up.client.pause(wait);
                }
                if !context_moved && is_context_length_exceeded(&error) {
                    if let Some(list) = model
                        .as_deref()
                        .and_then(|m| lookup(&self.context_window_fallbacks, m))
                    {
                        // The prompt does not fit this model anywhere: its other upstreams and
                        // fallbacks would refuse it too.
                        context_moved = true;
                        models = list.iter().cloned().map(Some).collect();
                        self.failovers.fetch_add(1, Ordering::Relaxed);
                        last = Some(error);
                        break;
                    }
                }
                // Refused before anything was sent (circuit open): moving costs nothing.
                let unsent = error.kind() == Kind::CircuitOpen;
                let retryable = if stream {
                    crate::retry::stream_may_retry(up.client.retry_policy(), &error)
                } else {
                    up.client.retry_policy().is_retryable(&error)
                };
                if !more || !may_move() || !(unsent || (budget > 0 && retryable)) {
                    return Err(error.with_upstreams(tried));
                }
                if !unsent {
                    budget -= 1;
                }
                self.failovers.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    upstream = up.name.as_str(),
                    code = error.code(),
                    "moving the call to another upstream"
                );
                last = Some(error);
            }
        }
        Err(match last {
            Some(error) => error.with_upstreams(tried),
            None => no_upstream(asked.as_deref()),
        })
    }

    /// One of `indices` (not empty) by the routing strategy, among the healthy ones when any is.
    fn choose(&self, indices: &[usize]) -> usize {
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
    }

    /// Abrupt: every in-flight call ends with `ERR_CLOSED`.
    pub fn destroy(&self) {
        self.closing.store(true, Ordering::Release);
        for u in &self.upstreams {
            u.client.destroy();
        }
    }
}

/// The request target of `target` on `client`.
fn target_uri<K: Connect>(client: &Client<K>, target: &Target) -> Result<Uri, Error> {
    match target {
        Target::Chat => client.api_uri("/chat/completions"),
        Target::Api(path) => client.api_uri(path),
    }
    .map_err(invalid)
}

fn invalid(e: ConfigError) -> Error {
    Error::new(Kind::Internal, e.to_string())
}

fn lookup<'a>(lists: &'a [(String, Vec<String>)], model: &str) -> Option<&'a [String]> {
    lists
        .iter()
        .find(|(m, _)| m == model)
        .map(|(_, list)| list.as_slice())
}

fn no_upstream(model: Option<&str>) -> Error {
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
fn is_context_length_exceeded(error: &Error) -> bool {
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
