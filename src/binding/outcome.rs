//! How results cross into JS: resolved plain objects, never rejections, so that `errors.js` can
//! build real `Error`s with a stable `code` in the caller's realm.

use std::collections::HashMap;

use napi_derive::napi;

use crate::client::ClientStats;
use crate::error::Error;

/// The failure of a call as plain data.
#[napi(object)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
    pub status: Option<u32>,
    pub headers: Option<HashMap<String, String>>,
    /// The provider's response body (redacted) for HTTP errors, or its error payload for
    /// stream errors.
    pub body: Option<String>,
    /// Attempts made (1 without retries).
    pub attempts: u32,
    /// The wait the server asked for (`Retry-After`), in ms.
    pub retry_after: Option<f64>,
    /// What the OS or TLS library said (`ECONNRESET`, …), when the failure came from there.
    pub cause_code: Option<String>,
    pub cause_message: Option<String>,
    /// The rate limits the failed answer's headers reported.
    pub rate_limit: Option<RateLimitInfo>,
    /// The upstreams a routed call tried, in order.
    pub upstreams: Option<Vec<String>>,
}

/// One provider limit: numbers as the headers said them; the reset as a time (ms since epoch).
#[napi(object)]
pub struct LimitWindow {
    pub limit: Option<f64>,
    pub remaining: Option<f64>,
    pub reset_at: Option<f64>,
}

/// `client.rateLimits()` and `err.rateLimit`: the provider's request and token limits.
#[napi(object)]
pub struct RateLimitInfo {
    pub requests: Option<LimitWindow>,
    pub tokens: Option<LimitWindow>,
    /// When the response that reported them arrived (ms since epoch).
    pub updated_at: f64,
}

impl RateLimitInfo {
    /// The same, as JSON (inside a `withResponse` envelope).
    pub fn to_json(&self) -> serde_json::Value {
        let window = |w: &Option<LimitWindow>| {
            w.as_ref().map(|w| {
                serde_json::json!({ "limit": w.limit, "remaining": w.remaining, "resetAt": w.reset_at })
            })
        };
        serde_json::json!({
            "requests": window(&self.requests),
            "tokens": window(&self.tokens),
            "updatedAt": self.updated_at,
        })
    }

    pub fn new(limits: &crate::ratelimit::RateLimits, at: std::time::SystemTime) -> Self {
        let ms = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as f64)
                .unwrap_or(0.0)
        };
        let window = |w: &crate::ratelimit::Window| LimitWindow {
            limit: w.limit.map(|n| n as f64),
            remaining: w.remaining.map(|n| n as f64),
            reset_at: w.reset.map(|d| ms(at + d)),
        };
        RateLimitInfo {
            requests: limits.requests.as_ref().map(window),
            tokens: limits.tokens.as_ref().map(window),
            updated_at: ms(at),
        }
    }
}

impl From<&Error> for ErrorInfo {
    fn from(e: &Error) -> Self {
        let http = e.http_failure();
        ErrorInfo {
            code: e.code().to_owned(),
            message: e.message().to_owned(),
            status: http.map(|h| u32::from(h.status)),
            headers: http.map(|h| {
                let mut map: HashMap<String, String> = HashMap::new();
                for (k, v) in &h.headers {
                    map.entry(k.clone())
                        .and_modify(|existing| {
                            existing.push_str(", ");
                            existing.push_str(v);
                        })
                        .or_insert_with(|| v.clone());
                }
                map
            }),
            body: http
                .map(|h| h.body.clone())
                .or_else(|| e.provider_error().map(str::to_owned)),
            attempts: e.attempts(),
            retry_after: e.retry_after().map(|d| d.as_millis() as f64),
            cause_code: e.cause().and_then(|c| c.code).map(str::to_owned),
            cause_message: e.cause().map(|c| c.message.clone()),
            rate_limit: e.rate_limit().map(|(l, at)| RateLimitInfo::new(l, *at)),
            upstreams: (!e.upstreams().is_empty()).then(|| e.upstreams().to_vec()),
        }
    }
}

impl ErrorInfo {
    pub fn internal() -> Self {
        ErrorInfo {
            code: "ERR_INTERNAL".into(),
            message: "llmpool internal error (a bug: please report it)".into(),
            status: None,
            headers: None,
            body: None,
            attempts: 1,
            retry_after: None,
            cause_code: None,
            cause_message: None,
            rate_limit: None,
            upstreams: None,
        }
    }
}

/// One event of a watched call's HTTP request (see `src/binding/observe.rs`).
#[napi(object)]
pub struct ObserveEvent {
    /// `create`, `headers`, `done` or `error`.
    pub event: String,
    /// `create`: the id to answer with the headers to add (`NativeClient.observed`).
    pub reply: Option<u32>,
    pub origin: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    /// `[name, value]` pairs: the request's (`create`) or the response's (`headers`).
    pub headers: Option<Vec<Vec<String>>>,
    pub status: Option<u32>,
    /// `error`: the error's stable code.
    pub code: Option<String>,
}

/// The head of a `fetch` response.
#[napi(object)]
pub struct FetchHead {
    pub status: u32,
    /// `[name, value]` pairs in arrival order (a name may repeat).
    pub headers: Vec<Vec<String>>,
}

impl FetchHead {
    pub fn new(status: u16, headers: Vec<(String, String)>) -> Self {
        FetchHead {
            status: u32::from(status),
            headers: headers.into_iter().map(|(k, v)| vec![k, v]).collect(),
        }
    }
}

/// `client.stats()`: undici's `PoolStats` plus counters.
#[napi(object)]
pub struct ClientStatsObject {
    /// Open connections.
    pub connected: u32,
    /// Open connections without a request.
    pub free: u32,
    /// Requests waiting for their new connection to open.
    pub pending: u32,
    /// Requests waiting for a free connection.
    pub queued: u32,
    /// Requests holding a connection.
    pub running: u32,
    /// `pending + queued + running`.
    pub size: u32,
    /// Calls started.
    pub requests: i64,
    /// Calls that failed (aborts are not failures).
    pub errors: i64,
    /// Calls the caller aborted.
    pub aborted: i64,
    pub connections_opened: i64,
    pub connections_closed: i64,
    /// Requests served by an already open connection.
    pub reused: i64,
    /// Retries made (attempts after the first).
    pub retries: i64,
    /// Open HTTP/2 connections (counted in `connected` too).
    pub multiplexed: u32,
    /// Requests in flight as HTTP/2 streams (counted in `running` too).
    pub streams: u32,
    /// Calls waiting for a client-side limit (`limits`) now.
    pub limited: u32,
    /// Calls that ever had to wait for a client-side limit.
    pub limit_waits: i64,
    /// Calls held back until the provider's reset because it reported a limit used up.
    pub paced: i64,
    /// Circuit breaker state (`closed`, `open`, `half-open`), when one is configured.
    pub circuit: Option<String>,
    /// Host name lookups made for new connections.
    pub dns_lookups: i64,
    /// New connections whose addresses came from the DNS cache.
    pub dns_hits: i64,
    /// Each upstream's state, with `upstreams`.
    pub upstreams: Option<Vec<UpstreamState>>,
    /// The shared limiter store's state, with `store`.
    pub store: Option<StoreState>,
    /// The response cache's counters, with `cache`.
    pub cache: Option<CacheState>,
}

/// `stats().cache`.
#[napi(object)]
pub struct CacheState {
    /// Calls answered from the cache (identical calls that waited for one in flight too).
    pub hits: i64,
    /// Cached calls that were sent.
    pub misses: i64,
    /// Entries and their bytes in this process's memory.
    pub entries: i64,
    pub bytes: i64,
}

impl From<crate::cache::CacheStats> for CacheState {
    fn from(s: crate::cache::CacheStats) -> Self {
        CacheState {
            hits: count(s.hits),
            misses: count(s.misses),
            entries: count(s.entries),
            bytes: count(s.bytes),
        }
    }
}

/// `stats().store`.
#[napi(object)]
pub struct StoreState {
    /// Whether Redis answered last time (false: limits are local until it is back).
    pub up: bool,
    /// Round trips that failed or ran past their deadline.
    pub errors: i64,
    /// Limit decisions made locally because the store was down.
    pub fallbacks: i64,
}

impl From<crate::store::StoreStats> for StoreState {
    fn from(s: crate::store::StoreStats) -> Self {
        StoreState {
            up: s.up,
            errors: count(s.errors),
            fallbacks: count(s.fallbacks),
        }
    }
}

/// One upstream in `stats().upstreams`.
#[napi(object)]
pub struct UpstreamState {
    pub name: String,
    /// `closed` (healthy), `open` (cooling down) or `half-open` (one probe allowed).
    pub circuit: String,
    /// Calls running on it now.
    pub in_flight: u32,
    /// Attempts it received, and those that failed.
    pub requests: i64,
    pub errors: i64,
    /// Recent time to response headers (ms), once it answered.
    pub latency_ms: Option<f64>,
    /// The provider reported a limit used up whose reset is still ahead.
    pub paced: bool,
}

impl From<crate::router::UpstreamStats> for UpstreamState {
    fn from(u: crate::router::UpstreamStats) -> Self {
        UpstreamState {
            name: u.name,
            circuit: u.circuit.to_owned(),
            in_flight: clamp(u.in_flight),
            requests: count(u.requests),
            errors: count(u.errors),
            latency_ms: u.latency.map(|d| d.as_secs_f64() * 1000.0),
            paced: u.paced,
        }
    }
}

fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl From<ClientStats> for ClientStatsObject {
    fn from(s: ClientStats) -> Self {
        ClientStatsObject {
            connected: clamp(s.pool.connected),
            free: clamp(s.pool.free),
            pending: clamp(s.pool.pending),
            queued: clamp(s.pool.queued),
            running: clamp(s.pool.running),
            size: clamp(s.pool.size),
            requests: count(s.requests),
            errors: count(s.errors),
            aborted: count(s.aborted),
            connections_opened: count(s.pool.connections_opened),
            connections_closed: count(s.pool.connections_closed),
            reused: count(s.pool.reused),
            retries: count(s.retries),
            multiplexed: clamp(s.pool.multiplexed),
            streams: clamp(s.pool.streams),
            limited: clamp(s.limited),
            limit_waits: count(s.limit_waits),
            paced: count(s.paced),
            circuit: s.circuit.map(str::to_owned),
            dns_lookups: count(s.dns_lookups),
            dns_hits: count(s.dns_hits),
            upstreams: None,
            store: None,
            cache: None,
        }
    }
}
