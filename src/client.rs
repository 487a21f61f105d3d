//! One client of one OpenAI-compatible endpoint: its configuration, pool, counters and lifecycle.
//!
//! What a call does is spread over one file per job, each an `impl Client` block: `exchange.rs`
//! (one request on one connection), `attempt.rs` (the attempt loop: retries, backoff, breaker,
//! deadline), `chat.rs` (a non-stream call) and `stream.rs` (a stream). This file knows none of
//! them; they build on it.
//!
//! `Client` is generic over the connector, as the pool is, so that the attempt loop and the
//! resend rule are unit-tested with fake connections; [`HttpConnector`] is the real one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, PROXY_AUTHORIZATION,
    USER_AGENT,
};
use hyper::Uri;
use tokio_util::task::TaskTracker;

use crate::breaker::CircuitBreaker;
use crate::config::{CallOptions, Config, ConfigError};
use crate::error::{Error, Kind, Redactor};
use crate::metrics::{Metrics, Snapshot};
use crate::pool::keep_alive::KeepAlivePolicy;
use crate::pool::{Connect, Pool, PoolLimits, PoolStats};
use crate::retry::RetryPolicy;
use crate::transport::dns::DnsStats;
use crate::transport::HttpConnector;

const USER_AGENT_VALUE: &str = concat!("llmpool/", env!("CARGO_PKG_VERSION"));

/// Counters and gauges of one client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub pool: PoolStats,
    /// Calls started.
    pub requests: u64,
    /// Calls that ended in an error (aborts are not failures: see `aborted`).
    pub errors: u64,
    /// Calls the caller aborted (its `AbortSignal`).
    pub aborted: u64,
    /// Retries made (attempts after the first).
    pub retries: u64,
    /// `closed`, `open` or `half-open`; `None` without a circuit breaker.
    pub circuit: Option<&'static str>,
    /// Calls waiting for a client-side limit now, and calls that ever had to wait.
    pub limited: usize,
    pub limit_waits: u64,
    /// Calls held back until the provider's reset because it reported a limit used up.
    pub paced: u64,
    /// Host name lookups made, and answers served from the DNS cache.
    pub dns_lookups: u64,
    pub dns_hits: u64,
}

/// What a call asks of its upstream, as a path that each upstream resolves under its own
/// `baseUrl` (or origin).
#[derive(Debug, Clone)]
pub enum Target {
    /// `POST {baseUrl}/chat/completions`.
    Chat,
    /// `{baseUrl}{path}`.
    Api(String),
    /// `{origin}{path}`: a `fetch` of a full URL with one upstream.
    Origin(String),
}

/// What a client knows of its transport beyond the connector (defaults for fake connectors).
#[derive(Default)]
pub struct TransportInfo {
    pub dns: Arc<DnsStats>,
    pub warnings: Vec<String>,
    /// Set when requests go to an http origin through a proxy.
    pub forwarding: Option<crate::transport::Forwarding>,
    /// More secrets to redact (proxy credentials).
    pub secrets: Vec<String>,
}

/// A client bound to one OpenAI-compatible endpoint.
pub struct Client<K: Connect = HttpConnector> {
    pub(crate) config: Config,
    pub(crate) pool: Pool<K>,
    pub(crate) keep_alive: KeepAlivePolicy,
    pub(crate) chat_uri: Uri,
    /// Requests name the origin whole (absolute form): an http origin through a proxy.
    absolute_form: bool,
    /// Host, content type, auth and default headers, built once.
    pub(crate) base_headers: HeaderMap,
    redactor: Redactor,
    /// Counts in-flight calls so that `close()` can wait for them.
    in_flight: TaskTracker,
    closing: AtomicBool,
    requests: AtomicU64,
    errors: AtomicU64,
    aborted: AtomicU64,
    pub(crate) retries: AtomicU64,
    /// Calls held back until a provider's reset (`remaining: 0`).
    paced: AtomicU64,
    pub(crate) retry: RetryPolicy,
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) metrics: Metrics,
    /// Client-side limits (`limits`), when configured.
    pub(crate) limiter: Option<crate::limits::Limiter>,
    dns: Arc<DnsStats>,
    warnings: Vec<String>,
    /// The provider's rate limits as the last response that carried them reported, and when.
    pub(crate) rate_limits:
        std::sync::Mutex<Option<(crate::ratelimit::RateLimits, std::time::SystemTime)>>,
    /// Recent time to response headers in µs (an exponential moving average; 0 = none yet):
    /// what `routing: 'latency'` compares.
    pub(crate) latency_micros: AtomicU64,
}

impl Client<HttpConnector> {
    /// A client of the real transport; the environment is read here, once (proxies,
    /// `NODE_EXTRA_CA_CERTS`).
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let dns = Arc::new(DnsStats::default());
        let setup = HttpConnector::setup(&config, |name| std::env::var(name).ok(), dns.clone())?;
        let info = TransportInfo {
            dns,
            warnings: setup.warnings,
            forwarding: setup.forwarding,
            secrets: setup.secrets,
        };
        Client::with_transport(config, setup.connector, info)
    }
}

impl<K: Connect> Client<K> {
    /// A client that opens its connections with `connector`.
    pub fn with_connector(config: Config, connector: K) -> Result<Self, ConfigError> {
        Client::with_transport(config, connector, TransportInfo::default())
    }

    fn with_transport(
        config: Config,
        connector: K,
        transport: TransportInfo,
    ) -> Result<Self, ConfigError> {
        let pool = Pool::new(
            connector,
            PoolLimits {
                max_connections: config.connections,
                pool_timeout: config.pool_timeout,
                max_streams: config.max_concurrent_streams,
                idle_timeout: config.keep_alive_timeout,
                expect_multiplexed: config.allow_h2
                    && config.endpoint.scheme == crate::config::Scheme::Https,
                origin: config.endpoint.origin.clone(),
            },
        );
        // Through a proxy, an http origin's requests name it whole (absolute form).
        let target = match transport.forwarding {
            Some(_) => format!(
                "{}{}",
                config.endpoint.origin,
                config.endpoint.path("/chat/completions")
            ),
            None => config.endpoint.path("/chat/completions"),
        };
        let chat_uri: Uri = target
            .parse()
            .map_err(|_| ConfigError::new("baseUrl", "has a path that is not a valid URL path"))?;
        let mut base_headers = HeaderMap::new();
        base_headers.insert(
            HOST,
            HeaderValue::from_str(&config.endpoint.authority)
                .map_err(|_| ConfigError::new("baseUrl", "has an invalid host"))?,
        );
        base_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        base_headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        base_headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        if let Some(key) = &config.api_key {
            let mut auth =
                HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                    ConfigError::new("apiKey", "must contain only visible ASCII characters")
                })?;
            auth.set_sensitive(true);
            base_headers.insert(AUTHORIZATION, auth);
        }
        for (name, value) in &config.headers {
            base_headers.insert(name.clone(), value.clone());
        }
        if let Some(crate::transport::Forwarding {
            proxy_authorization: Some(credentials),
        }) = &transport.forwarding
        {
            let mut value = HeaderValue::from_str(credentials)
                .map_err(|_| ConfigError::new("proxy", "has credentials that are not valid"))?;
            value.set_sensitive(true);
            base_headers.insert(PROXY_AUTHORIZATION, value);
        }
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
            absolute_form: transport.forwarding.is_some(),
            base_headers,
            redactor: config.redactor().with(&transport.secrets),
            in_flight: TaskTracker::new(),
            closing: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            paced: AtomicU64::new(0),
            retry: RetryPolicy::new(config.retry.clone()),
            breaker: config.circuit_breaker.map(CircuitBreaker::new),
            metrics: Metrics::labelled(&config.endpoint.origin, config.name.as_deref()),
            limiter: config.limits.as_ref().map(crate::limits::Limiter::new),
            dns: transport.dns,
            warnings: transport.warnings,
            rate_limits: std::sync::Mutex::new(None),
            latency_micros: AtomicU64::new(0),
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The same client with its limits (and the provider pauses it learns of) kept in the
    /// shared `store`, under its upstream's name (or its origin). Without `limits` a limiter
    /// with none is made, so that a pause another process learned of still holds calls back.
    pub fn with_store(mut self, store: Arc<crate::store::Store>) -> Self {
        let limits = self.config.limits.unwrap_or(crate::config::LimitsConfig {
            rpm: None,
            tpm: None,
            concurrency: None,
            timeout: self.config.limit_timeout,
        });
        let scope = self
            .config
            .name
            .clone()
            .unwrap_or_else(|| self.config.endpoint.origin.clone());
        self.limiter = Some(crate::limits::Limiter::shared(&limits, store, &scope));
        self
    }

    /// Recent time to response headers; `None` before the first answer.
    pub fn latency(&self) -> Option<Duration> {
        match self.latency_micros.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_micros(n)),
        }
    }

    /// Whether the provider reported a window used up whose reset is still ahead: routing sends
    /// such an upstream's calls elsewhere when it can.
    pub fn provider_paused(&self) -> bool {
        self.exhausted_until()
            .is_some_and(|until| until > std::time::SystemTime::now())
    }

    /// When the last report's used-up windows (`remaining: 0`) reset, the latest of them.
    fn exhausted_until(&self) -> Option<std::time::SystemTime> {
        let (limits, at) = self.rate_limits()?;
        let reset = [limits.requests, limits.tokens]
            .into_iter()
            .flatten()
            .filter(|w| w.remaining == Some(0))
            .filter_map(|w| w.reset)
            .max()?;
        Some(at + reset)
    }

    /// Opens this upstream's circuit for `pause` (a 429's `Retry-After`), when it has one.
    pub fn pause(&self, pause: Duration) {
        if let Some(breaker) = &self.breaker {
            breaker.pause(pause, tokio::time::Instant::now());
        }
    }

    /// Whether the circuit (the cooldown of an upstream) lets an attempt through now.
    pub fn available(&self) -> bool {
        self.breaker
            .as_ref()
            .is_none_or(|b| b.available(tokio::time::Instant::now()))
    }

    /// The retry policy, for the router's question "may this failure go elsewhere?".
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Calls of this client running now (started, not ended).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// How long to hold a call back because the provider said a limit is used up: the wait until
    /// the latest reset of an exhausted window (`remaining: 0`), when that is within
    /// `limitTimeout` (a longer one, a daily quota say, is left to the server to refuse).
    fn provider_pause(&self) -> Option<Duration> {
        let wait = self
            .exhausted_until()?
            .duration_since(std::time::SystemTime::now())
            .ok()?;
        let bound = self.config.limit_timeout;
        if bound.is_some_and(|b| wait > b) || wait.is_zero() {
            return None;
        }
        self.paced.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            origin = self.origin(),
            wait_ms = wait.as_millis() as u64,
            "provider limit used up; waiting for its reset"
        );
        Some(wait)
    }

    /// The provider's rate limits as last reported, and when; `None` before any response said.
    pub fn rate_limits(&self) -> Option<(crate::ratelimit::RateLimits, std::time::SystemTime)> {
        *self.rate_limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What setting the client up found worth a warning (Node prints such warnings too).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The request target of an API path under `baseUrl` (`/embeddings` → `/v1/embeddings`).
    pub fn api_uri(&self, path: &str) -> Result<Uri, ConfigError> {
        check_path(path)?;
        self.origin_uri(&self.config.endpoint.path(path))
    }

    /// The request target of a path on the origin, `baseUrl`'s prefix not added (what a
    /// `fetch` of a full URL asks for). A query is allowed.
    pub fn origin_uri(&self, path: &str) -> Result<Uri, ConfigError> {
        check_path(path)?;
        let target = if self.absolute_form {
            format!("{}{path}", self.config.endpoint.origin)
        } else {
            path.to_owned()
        };
        target.parse().map_err(|_| bad_path())
    }

    /// The request target of `target` here (chat's, built once, is borrowed).
    pub(crate) fn uri_of(&self, target: &Target) -> Result<std::borrow::Cow<'_, Uri>, Error> {
        match target {
            Target::Chat => Ok(std::borrow::Cow::Borrowed(&self.chat_uri)),
            Target::Api(path) => self.api_uri(path).map(std::borrow::Cow::Owned),
            Target::Origin(path) => self.origin_uri(path).map(std::borrow::Cow::Owned),
        }
        .map_err(|e| Error::new(Kind::Internal, e.to_string()))
    }

    pub(crate) fn origin(&self) -> &str {
        &self.config.endpoint.origin
    }

    /// Whether `close()` or `destroy()` began: new calls are refused.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Lets a call in to this upstream for one or more attempts in a row: counts it, keeps
    /// `close()` waiting until it leaves, holds it back while the provider said a limit is used
    /// up, and takes its place under the client-side limits (reserving `body`'s estimated
    /// tokens). The caller checked [`Client::is_closing`].
    pub(crate) async fn enter(&self, body: &[u8]) -> Result<Visit<'_>, Error> {
        let in_flight = self.in_flight.token();
        self.requests.fetch_add(1, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        if let Some(wait) = self.provider_pause() {
            // Boxed: only a paced call carries the sleep.
            Box::pin(tokio::time::sleep(wait)).await;
        }
        let permit = match &self.limiter {
            None => None,
            Some(limiter) => {
                let tokens = if limiter.counts_tokens() {
                    crate::limits::estimate_tokens(body)
                } else {
                    0
                };
                // Boxed: only a limited client's calls carry the wait.
                Some(Box::pin(limiter.acquire(tokens, self.origin())).await?)
            }
        };
        Ok(Visit {
            _in_flight: in_flight,
            permit,
            started,
        })
    }

    /// Counts how a call's stay here ended: its duration, and a failure by its code.
    pub(crate) fn tally(&self, started: tokio::time::Instant, error: Option<&Error>) {
        self.metrics.request_took(started.elapsed());
        if let Some(e) = error {
            // The caller's own abort is a cancellation, not a failure of the upstream: an
            // error-rate alert must not fire when users close tabs.
            if e.kind() == Kind::Aborted {
                self.aborted.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.errors.fetch_add(1, Ordering::Relaxed);
            self.metrics.error(e.code());
            tracing::debug!(origin = self.origin(), code = e.code(), "call failed");
        }
    }

    /// The one door errors leave by: this upstream's secrets and the call's are stripped.
    pub(crate) fn redact(&self, error: Error, call: &CallOptions) -> Error {
        if call.secrets.is_empty() {
            self.redactor.redact_error(error)
        } else {
            self.redactor.with(&call.secrets).redact_error(error)
        }
    }

    /// Whether `text` quotes this upstream's secrets or the call's (a server that echoes them).
    pub(crate) fn quotes_a_secret(&self, text: &str, call: &CallOptions) -> bool {
        self.redactor.appears_in(text) || call.secrets.iter().any(|s| text.contains(s.as_str()))
    }

    /// The Prometheus text exposition of this client's metrics.
    pub fn metrics_text(&self) -> String {
        let stats = self.stats();
        self.metrics.render(Snapshot {
            pool: stats.pool,
            requests: stats.requests,
            errors: stats.errors,
            aborted: stats.aborted,
            retries: stats.retries,
            dns_lookups: stats.dns_lookups,
            dns_hits: stats.dns_hits,
            limit_waits: stats.limit_waits,
        })
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
            aborted: self.aborted.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            circuit: self
                .breaker
                .as_ref()
                .map(|b| b.state_name(tokio::time::Instant::now())),
            limited: self.limiter.as_ref().map_or(0, |l| l.waiting().0),
            limit_waits: self.limiter.as_ref().map_or(0, |l| l.waiting().1),
            paced: self.paced.load(Ordering::Relaxed),
            dns_lookups: self.dns.lookups.load(Ordering::Relaxed),
            dns_hits: self.dns.hits.load(Ordering::Relaxed),
        }
    }

    /// Graceful: refuses new calls, waits for in-flight ones, then closes every connection.
    pub async fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.in_flight.close();
        self.in_flight.wait().await;
        self.pool.close();
    }

    /// Abrupt: every connection is closed and nothing new is written. The router cancels the
    /// in-flight calls after this (its `destroy`): the pool closes first,
    /// so that a connection or a slot they free on their way out is handed to no queued call
    /// (which would then send the request the user just cancelled).
    pub fn destroy(&self) {
        self.closing.store(true, Ordering::Release);
        self.in_flight.close();
        self.pool.close();
    }
}

/// A call's stay at one upstream (see [`Client::enter`]), held across its attempts there.
pub(crate) struct Visit<'a> {
    _in_flight: tokio_util::task::task_tracker::TaskTrackerToken,
    permit: Option<crate::limits::Permit<'a>>,
    started: tokio::time::Instant,
}

impl Visit<'_> {
    pub(crate) fn started(&self) -> tokio::time::Instant {
        self.started
    }

    /// The call succeeded having used `used` tokens: the limiter corrects its reservation.
    pub(crate) fn settle(&self, used: Option<u64>) {
        if let (Some(permit), Some(used)) = (&self.permit, used) {
            permit.settle(used);
        }
    }
}

fn bad_path() -> ConfigError {
    ConfigError::new("path", "must start with / and be a valid URL path")
}

/// A path of this origin: `/…`, never `//…` (which would name another host).
fn check_path(path: &str) -> Result<(), ConfigError> {
    if path.starts_with('/') && !path.starts_with("//") {
        Ok(())
    } else {
        Err(bad_path())
    }
}
