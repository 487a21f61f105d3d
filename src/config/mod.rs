//! Typed, validated client configuration.
//!
//! The JS options object arrives as JSON (see the binding); [`Config::from_json`] checks every
//! option once, one rule per option, and says which option broke which rule. Every default lives
//! here as a `DEFAULT_*` constant, in milliseconds where it is a duration, with undici's meaning
//! where undici has the same option.

use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use hyper::Uri;
use serde_json::{Map, Value};

use crate::error::{Redactor, SECRET_HEADERS};
use crate::proxy_url::ProxyUrl;

mod cache;
mod call;
mod connect;
mod endpoint;
mod limits;
mod retry;

pub use cache::{
    parse_cache, CacheConfig, CallCache, DEFAULT_CACHE_MAX_BYTES, DEFAULT_CACHE_TTL_MS,
    KNOWN_CACHE_OPTIONS,
};
pub use call::{call_option_names, parse_headers, CallOptions};
use connect::{parse_connect, parse_dns, KNOWN_CONNECT_OPTIONS, KNOWN_DNS_OPTIONS};
pub use connect::{
    parse_store_tls, ConnectConfig, DnsConfig, ProxySetting, TlsTrust, KNOWN_STORE_TLS_OPTIONS,
};
pub use endpoint::{Endpoint, Scheme};
pub use limits::{client_limits, LimitsConfig, DEFAULT_LIMIT_TIMEOUT_MS};
use limits::{parse_limits, KNOWN_LIMITS_OPTIONS};
use retry::{parse_breaker, parse_retry, KNOWN_BREAKER_OPTIONS, KNOWN_RETRY_OPTIONS};
pub use retry::{
    BreakerConfig, RetryConfig, DEFAULT_BREAKER_FAILURE_THRESHOLD, DEFAULT_BREAKER_RESET_TIMEOUT_MS,
};

/// Default per-origin connection cap. undici's own default is unlimited; an LLM service wants a cap.
pub const DEFAULT_CONNECTIONS: usize = 100;
/// Idle time after which a kept-alive connection is dropped when the server gives no hint (undici: 4 s;
/// LLM calls are minutes apart under light load, and providers keep idle sockets ~90 s or more).
pub const DEFAULT_KEEP_ALIVE_TIMEOUT_MS: u64 = 90_000;
/// Upper bound on a server's `Keep-Alive: timeout=` hint (undici: 600 s).
pub const DEFAULT_KEEP_ALIVE_MAX_TIMEOUT_MS: u64 = 120_000;
/// Taken off a server's hint so that we stop reusing a socket before the server closes it (undici: 2 s).
pub const DEFAULT_KEEP_ALIVE_TIMEOUT_THRESHOLD_MS: u64 = 1_000;
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Request sent → response headers. LLM servers may hold headers until generation starts.
pub const DEFAULT_HEADERS_TIMEOUT_MS: u64 = 300_000;
/// Longest gap between two body chunks.
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 300_000;
pub const DEFAULT_AUTO_SELECT_FAMILY: bool = true;
/// Happy-eyeballs delay before the next address family is tried (RFC 8305 suggests 250 ms).
pub const DEFAULT_AUTO_SELECT_FAMILY_ATTEMPT_TIMEOUT_MS: u64 = 250;
pub const DEFAULT_TCP_KEEP_ALIVE: bool = true;
pub const DEFAULT_TCP_KEEP_ALIVE_INITIAL_DELAY_MS: u64 = 60_000;
pub const DEFAULT_POOL_TIMEOUT_MS: u64 = 10_000;
/// How long resolved addresses are reused (undici's dns interceptor: `maxTTL` 10 s; the system
/// resolver gives no TTL of its own).
pub const DEFAULT_DNS_MAX_TTL_MS: u64 = 10_000;
/// Most host names kept in the DNS cache.
pub const DEFAULT_DNS_MAX_ITEMS: usize = 1_000;
/// Deadline of one attempt, start to last byte.
pub const DEFAULT_TIMEOUT_MS: u64 = 600_000;
pub const DEFAULT_FIRST_TOKEN_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_TOKEN_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_MAX_EVENT_SIZE: usize = 16 * 1024 * 1024;
/// Offer HTTP/2 by ALPN (undici's `allowH2`). Off until `bench/` shows h2 no worse than
/// HTTP/1.1 here.
pub const DEFAULT_ALLOW_H2: bool = false;
/// Most streams on one HTTP/2 connection (undici's `maxConcurrentStreams`), never more than the
/// server allows.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: usize = 100;
/// Largest non-stream response body in bytes (undici's `maxResponseSize`; undici has no limit by
/// default, a completion is rarely over a few MiB).
pub const DEFAULT_MAX_RESPONSE_SIZE: usize = 32 * 1024 * 1024;
pub const DEFAULT_MAX_RETRIES: u32 = 3;
pub const DEFAULT_RETRY_MIN_TIMEOUT_MS: u64 = 1_000;
pub const DEFAULT_RETRY_MAX_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_RETRY_TIMEOUT_FACTOR: f64 = 2.0;
pub const DEFAULT_RETRY_AFTER: bool = true;
pub const DEFAULT_RETRY_STATUS_CODES: [u16; 7] = [408, 409, 429, 500, 502, 503, 504];
/// Failures retried by default: refused, connect timeout, a connection that broke (reset,
/// broken pipe, closed before an answer), and a stream whose body ended before its first event
/// (the same failure seen through a 200). Streams retry only before their first chunk.
pub const DEFAULT_RETRY_ERROR_CODES: [&str; 4] = [
    "ERR_CONNECT",
    "ERR_CONNECT_TIMEOUT",
    "ERR_SOCKET",
    "ERR_STREAM_TRUNCATED",
];
/// The codes `retry.errorCodes` may list.
pub const RETRYABLE_ERROR_CODES: [&str; 13] = [
    "ERR_CONNECT",
    "ERR_CONNECT_TIMEOUT",
    "ERR_SOCKET",
    "ERR_TLS",
    "ERR_HEADERS_TIMEOUT",
    "ERR_BODY_TIMEOUT",
    "ERR_TIMEOUT",
    "ERR_FIRST_TOKEN_TIMEOUT",
    "ERR_STREAM_TRUNCATED",
    "ERR_STREAM_ERROR",
    "ERR_PROVIDER_ERROR",
    "ERR_INVALID_RESPONSE",
    "ERR_PROXY",
];

/// The largest duration accepted, in ms: about 24.8 days, the same bound as Node's timers.
pub const MAX_DURATION_MS: u64 = i32::MAX as u64;

/// An option that broke its rule. The message names the option and the rule; never its value,
/// which may be a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The option, by its path (`connect.ca`, `upstreams[1].timeout`); empty for a failure of
    /// no one option.
    option: String,
    rule: String,
}

impl ConfigError {
    /// `option` broke `rule`: the message is both, `connections must be a positive integer`.
    pub fn new(option: impl Into<String>, rule: impl Into<String>) -> Self {
        ConfigError {
            option: option.into(),
            rule: rule.into(),
        }
    }

    /// A failure of no one option (the TLS library refusing to start).
    pub fn plain(message: impl Into<String>) -> Self {
        ConfigError::new(String::new(), message)
    }

    /// The option that broke its rule (its first path segment says which option of an object).
    pub fn option(&self) -> &str {
        &self.option
    }

    /// The same error, for an option that sits under `parent` (`upstreams[0]`).
    pub fn under(self, parent: &str) -> Self {
        ConfigError::new(format!("{parent}.{}", self.option), self.rule)
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.option.is_empty() {
            f.write_str(&self.rule)
        } else {
            write!(f, "{} {}", self.option, self.rule)
        }
    }
}

impl std::error::Error for ConfigError {}

type Result<T> = std::result::Result<T, ConfigError>;

fn rule(name: &str, rule: &str) -> ConfigError {
    ConfigError::new(name, rule)
}

/// The whole validated configuration of one client.
#[derive(Debug, Clone)]
pub struct Config {
    pub endpoint: Endpoint,
    /// Kept only to build the Authorization header and to redact it; never printed (see `Debug`).
    pub api_key: Option<ApiKey>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `None` = unlimited.
    pub connections: Option<usize>,
    /// `false` (pipelining: 0) = a new connection per request, none kept alive.
    pub keep_alive: bool,
    pub keep_alive_timeout: Duration,
    pub keep_alive_max_timeout: Duration,
    pub keep_alive_timeout_threshold: Duration,
    pub connect: ConnectConfig,
    /// `None` (0 in JS) = no limit, as in undici.
    pub headers_timeout: Option<Duration>,
    pub body_timeout: Option<Duration>,
    pub pool_timeout: Option<Duration>,
    pub timeout: Option<Duration>,
    pub first_token_timeout: Option<Duration>,
    pub token_timeout: Option<Duration>,
    pub max_event_size: usize,
    /// Offer `h2` by ALPN on TLS connections.
    pub allow_h2: bool,
    pub max_concurrent_streams: usize,
    pub proxy: ProxySetting,
    /// `None`: no client-side limits.
    pub limits: Option<LimitsConfig>,
    /// Longest wait for a client-side limit or a provider's reset; `None` = no bound.
    pub limit_timeout: Option<Duration>,
    /// `None` = `dns: false`.
    pub dns: Option<DnsConfig>,
    /// Largest non-stream body; `None` (-1 in JS) = unlimited.
    pub max_response_size: Option<usize>,
    /// Lowercase names of headers whose values are secrets: [`SECRET_HEADERS`] plus
    /// `redactHeaders`.
    pub redact_headers: Vec<String>,
    pub retry: RetryConfig,
    pub circuit_breaker: Option<BreakerConfig>,
    /// The upstream's name when the client has `upstreams` (metrics label, stats).
    pub name: Option<String>,
}

/// The API key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

/// Options of the client as a whole (with `upstreams`, shared by every upstream unless it sets
/// its own).
const CLIENT_OPTIONS: &[&str] = &[
    "baseUrl",
    "apiKey",
    "headers",
    "maxEventSize",
    "redactHeaders",
    "dns",
    "limits",
    "limitTimeout",
    "retry",
    "circuitBreaker",
];
/// Pool and transport options: the client's, and any upstream may override them.
const POOL_OPTIONS: &[&str] = &[
    "connections",
    "pipelining",
    "keepAliveTimeout",
    "keepAliveMaxTimeout",
    "keepAliveTimeoutThreshold",
    "connectTimeout",
    "headersTimeout",
    "bodyTimeout",
    "autoSelectFamily",
    "autoSelectFamilyAttemptTimeout",
    "connect",
    "poolTimeout",
    "timeout",
    "firstTokenTimeout",
    "tokenTimeout",
    "maxResponseSize",
    "proxy",
    "allowH2",
    "maxConcurrentStreams",
];
/// Options only `router::RouterConfig` reads (several upstreams, failover, a shared limiter
/// store); never part of one upstream's configuration.
pub const ROUTER_OPTIONS: &[&str] = &[
    "upstreams",
    "routing",
    "allowedFails",
    "cooldown",
    "fallbacks",
    "contextWindowFallbacks",
    "store",
    "cache",
];
/// The options of `store`.
pub const STORE_OPTIONS: &[&str] = &["redis", "cluster", "tls", "prefix"];
/// Options the JS layer takes and keeps (a `logger` object cannot cross as JSON): named here so
/// that `optionNames()` lists every option, never passed to the validator.
pub const JS_OPTIONS: &[&str] = &["logger"];
/// What an entry of `upstreams` sets besides pool options: its endpoint, key and headers, how
/// routing sees it, and its own limits.
const UPSTREAM_OWN_OPTIONS: &[&str] = &[
    "name", "baseUrl", "apiKey", "headers", "weight", "models", "limits",
];

/// Whether an entry of `upstreams` may set `name`.
pub fn is_upstream_option(name: &str) -> bool {
    UPSTREAM_OWN_OPTIONS.contains(&name) || POOL_OPTIONS.contains(&name)
}
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Reads one object of options; absent and `null` mean "default" unless the option says otherwise.
struct Options<'a> {
    map: &'a Map<String, Value>,
    prefix: &'static str,
}

impl<'a> Options<'a> {
    /// `known`: the lists of names the object may have.
    fn new(value: &'a Value, prefix: &'static str, what: &str, known: &[&[&str]]) -> Result<Self> {
        let map = value
            .as_object()
            .ok_or_else(|| ConfigError::new(what, "must be an object"))?;
        if let Some(unknown) = map
            .keys()
            .find(|k| !known.iter().any(|list| list.contains(&k.as_str())))
        {
            let noun = if what == "call options" {
                "call option"
            } else {
                "option"
            };
            return Err(ConfigError::new(
                format!("{prefix}{unknown}"),
                format!("is not a known {noun}"),
            ));
        }
        Ok(Options { map, prefix })
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The value, or `None` when absent or null.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn has_null(&self, key: &str) -> bool {
        matches!(self.map.get(key), Some(Value::Null))
    }

    fn uint(&self, key: &str, what: &str, max: u64) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n <= max => Ok(Some(n)),
                _ => match v.as_f64() {
                    // 3.0 arrives as a float from some serialisers; accept whole numbers.
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= max as f64 => {
                        Ok(Some(f as u64))
                    }
                    _ => Err(rule(&self.name(key), what)),
                },
            },
        }
    }

    /// A whole number in `1..=max` (0 is refused with the same message), or `None` when absent.
    fn positive_uint(&self, key: &str, what: &str, max: u64) -> Result<Option<u64>> {
        match self.uint(key, what, max)? {
            Some(0) => Err(rule(&self.name(key), what)),
            n => Ok(n),
        }
    }

    /// A duration in ms where 0 turns the limit off.
    fn limit_ms(&self, key: &str, default: u64) -> Result<Option<Duration>> {
        let n = self
            .uint(
                key,
                "must be a non-negative integer number of milliseconds (0 disables it)",
                MAX_DURATION_MS,
            )?
            .unwrap_or(default);
        Ok((n > 0).then(|| ms(n)))
    }

    /// A per-call override of a limit: absent = the client's, 0 = off for this call. Same rule
    /// and bound as the client option.
    fn override_ms(&self, key: &str) -> Result<Option<Option<Duration>>> {
        Ok(self
            .uint(
                key,
                "must be a non-negative integer number of milliseconds (0 disables it)",
                MAX_DURATION_MS,
            )?
            .map(|n| (n > 0).then(|| ms(n))))
    }

    /// A duration in ms that must be positive.
    fn positive_ms(&self, key: &str, default: u64) -> Result<Duration> {
        let n = self.positive_uint(
            key,
            "must be a positive integer number of milliseconds",
            MAX_DURATION_MS,
        )?;
        Ok(ms(n.unwrap_or(default)))
    }

    /// A duration in ms that may be zero.
    fn non_negative_ms(&self, key: &str, default: u64) -> Result<Duration> {
        Ok(ms(self
            .uint(
                key,
                "must be a non-negative integer number of milliseconds",
                MAX_DURATION_MS,
            )?
            .unwrap_or(default)))
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(rule(&self.name(key), "must be a boolean")),
        }
    }
}

impl Config {
    /// Validates the JS options object (as JSON) and fills in the defaults.
    pub fn from_json(value: &Value) -> Result<Config> {
        let o = Options::new(
            value,
            "",
            "options",
            &[CLIENT_OPTIONS, POOL_OPTIONS, ROUTER_OPTIONS],
        )?;

        let endpoint = match o.get("baseUrl") {
            Some(Value::String(s)) => Endpoint::parse(s)?,
            Some(_) => return Err(rule("baseUrl", "must be a string")),
            None => return Err(rule("baseUrl", "is required (or upstreams)")),
        };

        let api_key = match o.get("apiKey") {
            None => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => {
                HeaderValue::from_str(&format!("Bearer {s}"))
                    .map_err(|_| rule("apiKey", "must contain only visible ASCII characters"))?;
                Some(ApiKey(s.clone()))
            }
            Some(_) => return Err(rule("apiKey", "must be a string")),
        };

        let headers = match o.get("headers") {
            None => Vec::new(),
            Some(v) => parse_headers(v, "headers")?,
        };

        // undici: `connections: null` means no limit; absent means our default.
        let connections = if o.has_null("connections") {
            None
        } else {
            match o.uint(
                "connections",
                "must be a positive integer or null",
                u32::MAX as u64,
            )? {
                Some(0) => return Err(rule("connections", "must be a positive integer or null")),
                Some(n) => Some(n as usize),
                None => Some(DEFAULT_CONNECTIONS),
            }
        };

        let keep_alive = match o.uint(
            "pipelining",
            "must be 0 or 1 (HTTP/1.1 pipelining is not supported)",
            1,
        )? {
            Some(0) => false,
            Some(_) | None => true,
        };

        let keep_alive_timeout =
            o.positive_ms("keepAliveTimeout", DEFAULT_KEEP_ALIVE_TIMEOUT_MS)?;
        let keep_alive_max_timeout =
            o.positive_ms("keepAliveMaxTimeout", DEFAULT_KEEP_ALIVE_MAX_TIMEOUT_MS)?;
        let keep_alive_timeout_threshold = o.non_negative_ms(
            "keepAliveTimeoutThreshold",
            DEFAULT_KEEP_ALIVE_TIMEOUT_THRESHOLD_MS,
        )?;

        let connect_timeout = o.positive_ms("connectTimeout", DEFAULT_CONNECT_TIMEOUT_MS)?;
        let auto_select_family = o.bool("autoSelectFamily", DEFAULT_AUTO_SELECT_FAMILY)?;
        let auto_select_family_attempt_timeout = o.positive_ms(
            "autoSelectFamilyAttemptTimeout",
            DEFAULT_AUTO_SELECT_FAMILY_ATTEMPT_TIMEOUT_MS,
        )?;
        let connect = parse_connect(
            o.get("connect"),
            ConnectConfig {
                timeout: connect_timeout,
                auto_select_family,
                auto_select_family_attempt_timeout,
                ..ConnectConfig::default()
            },
        )?;

        let proxy = match o.get("proxy") {
            None => ProxySetting::Environment,
            Some(Value::Bool(false)) => ProxySetting::Off,
            // The rule only: the text may hold credentials.
            Some(Value::String(text)) => {
                ProxySetting::Url(ProxyUrl::parse(text).map_err(|why| rule("proxy", why))?)
            }
            Some(_) => return Err(rule("proxy", "must be a proxy URL string or false")),
        };

        let max_response_size = match o.get("maxResponseSize") {
            Some(v) if v.as_i64() == Some(-1) => None,
            _ => Some(
                o.positive_uint(
                    "maxResponseSize",
                    "must be a positive integer number of bytes or -1 (unlimited)",
                    u32::MAX as u64,
                )?
                .map_or(DEFAULT_MAX_RESPONSE_SIZE, |n| n as usize),
            ),
        };

        let mut redact_headers: Vec<String> = SECRET_HEADERS.map(str::to_owned).to_vec();
        let names_rule = "must be an array of header names";
        match o.get("redactHeaders") {
            None => {}
            Some(Value::Array(items)) => {
                for item in items {
                    let name = item
                        .as_str()
                        .filter(|n| HeaderName::from_bytes(n.as_bytes()).is_ok())
                        .ok_or_else(|| rule("redactHeaders", names_rule))?
                        .to_ascii_lowercase();
                    if !redact_headers.contains(&name) {
                        redact_headers.push(name);
                    }
                }
            }
            Some(_) => return Err(rule("redactHeaders", names_rule)),
        }

        let max_event_size = o
            .positive_uint(
                "maxEventSize",
                "must be a positive integer number of bytes",
                u32::MAX as u64,
            )?
            .map_or(DEFAULT_MAX_EVENT_SIZE, |n| n as usize);

        let limit_timeout = o.limit_ms("limitTimeout", DEFAULT_LIMIT_TIMEOUT_MS)?;

        Ok(Config {
            endpoint,
            api_key,
            headers,
            connections,
            keep_alive,
            keep_alive_timeout,
            keep_alive_max_timeout,
            keep_alive_timeout_threshold,
            connect,
            headers_timeout: o.limit_ms("headersTimeout", DEFAULT_HEADERS_TIMEOUT_MS)?,
            body_timeout: o.limit_ms("bodyTimeout", DEFAULT_BODY_TIMEOUT_MS)?,
            pool_timeout: o.limit_ms("poolTimeout", DEFAULT_POOL_TIMEOUT_MS)?,
            timeout: o.limit_ms("timeout", DEFAULT_TIMEOUT_MS)?,
            first_token_timeout: o.limit_ms("firstTokenTimeout", DEFAULT_FIRST_TOKEN_TIMEOUT_MS)?,
            token_timeout: o.limit_ms("tokenTimeout", DEFAULT_TOKEN_TIMEOUT_MS)?,
            max_event_size,
            allow_h2: o.bool("allowH2", DEFAULT_ALLOW_H2)?,
            max_concurrent_streams: match o.uint(
                "maxConcurrentStreams",
                "must be a positive integer",
                u32::MAX as u64,
            )? {
                Some(0) => return Err(rule("maxConcurrentStreams", "must be a positive integer")),
                Some(n) => n as usize,
                None => DEFAULT_MAX_CONCURRENT_STREAMS,
            },
            proxy,
            limits: parse_limits(o.map.get("limits"), limit_timeout)?,
            limit_timeout,
            dns: parse_dns(o.map.get("dns"))?,
            max_response_size,
            redact_headers,
            retry: parse_retry(o.map.get("retry"))?,
            circuit_breaker: parse_breaker(o.map.get("circuitBreaker"))?,
            name: None,
        })
    }
}

/// Most retries a call may make.
const MAX_RETRIES: u64 = 100;
const MAX_RETRIES_RULE: &str = "must be an integer from 0 to 100";

impl Config {
    /// The values among `headers` that are secrets (a secret header's value, and its credentials
    /// after the scheme).
    pub fn secret_values(&self, headers: &[(HeaderName, HeaderValue)]) -> Vec<String> {
        headers
            .iter()
            .filter(|(name, _)| self.redact_headers.iter().any(|n| n == name.as_str()))
            .flat_map(|(_, value)| {
                Redactor::secrets_of_value(&String::from_utf8_lossy(value.as_bytes()))
            })
            .collect()
    }

    /// The redactor of this client: the API key and the values of its secret default headers.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(
            self.api_key
                .iter()
                .map(|k| k.expose().to_owned())
                .chain(self.secret_values(&self.headers)),
            self.redact_headers.iter().cloned(),
        )
    }
}

/// Every option name the client accepts, nested ones as `parent.child`: the source of truth the
/// typings and the README are checked against.
pub fn option_names() -> Vec<String> {
    let nested: [(&str, &[&str]); 10] = [
        ("upstreams", UPSTREAM_OWN_OPTIONS),
        ("upstreams", POOL_OPTIONS),
        ("store", STORE_OPTIONS),
        ("store.tls", KNOWN_STORE_TLS_OPTIONS),
        ("cache", KNOWN_CACHE_OPTIONS),
        ("limits", KNOWN_LIMITS_OPTIONS),
        ("connect", KNOWN_CONNECT_OPTIONS),
        ("retry", KNOWN_RETRY_OPTIONS),
        ("circuitBreaker", KNOWN_BREAKER_OPTIONS),
        ("dns", KNOWN_DNS_OPTIONS),
    ];
    let mut names: Vec<String> = [CLIENT_OPTIONS, POOL_OPTIONS, ROUTER_OPTIONS, JS_OPTIONS]
        .concat()
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (parent, children) in nested {
        names.extend(children.iter().map(|c| format!("{parent}.{c}")));
    }
    names
}

#[cfg(test)]
mod tests;
