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
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

type Result<T> = std::result::Result<T, ConfigError>;

fn rule(name: &str, rule: &str) -> ConfigError {
    ConfigError(format!("{name} {rule}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Where requests go: scheme, host, port and the path prefix kept from `baseUrl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// Host name or IP literal, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// The `Host` header value (`host` or `host:port`).
    pub authority: String,
    /// `/v1` for `http://h/v1` and `http://h/v1/`; empty for `http://h`.
    pub path_prefix: String,
    /// `scheme://authority`, used in error messages.
    pub origin: String,
}

impl Endpoint {
    pub fn parse(base_url: &str) -> Result<Self> {
        let bad = || rule("baseUrl", "must be an absolute http:// or https:// URL");
        let uri: Uri = base_url.parse().map_err(|_| bad())?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => return Err(bad()),
        };
        let authority = uri.authority().ok_or_else(bad)?;
        if authority.as_str().contains('@') {
            return Err(rule(
                "baseUrl",
                "must not carry credentials; use apiKey or headers",
            ));
        }
        if uri.query().is_some() {
            return Err(rule("baseUrl", "must not have a query string"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(bad());
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let default_port = match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let port = authority.port_u16().unwrap_or(default_port);
        let path_prefix = uri.path().trim_end_matches('/').to_owned();
        let scheme_str = if scheme == Scheme::Http {
            "http"
        } else {
            "https"
        };
        Ok(Endpoint {
            scheme,
            origin: format!("{scheme_str}://{}", authority.as_str()),
            authority: authority.as_str().to_owned(),
            host,
            port,
            path_prefix,
        })
    }

    /// The request target for an API path such as `/chat/completions`.
    pub fn path(&self, api_path: &str) -> String {
        format!("{}{}", self.path_prefix, api_path)
    }
}

/// TCP and TLS settings of new connections (`connect: {…}` in JS).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectConfig {
    pub timeout: Duration,
    pub auto_select_family: bool,
    pub auto_select_family_attempt_timeout: Duration,
    /// TCP keep-alive probes; `None` = off.
    pub tcp_keep_alive: Option<Duration>,
    /// Extra trusted roots, PEM text, added to the webpki roots.
    pub ca: Vec<String>,
    /// `false` accepts any server certificate. Dangerous: for tests and private networks only.
    pub reject_unauthorized: bool,
    /// Client certificate chain and its private key (PEM), for mTLS.
    pub cert: Option<String>,
    pub key: Option<String>,
    /// The name sent as SNI and checked against the server's certificate, instead of the host.
    pub servername: Option<String>,
    /// Trust the operating system's store too (Node's `--use-system-ca`).
    pub use_system_ca: bool,
}

/// Client-side limits (`limits: { rpm, tpm, concurrency }`, `limitTimeout`); absent = none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens per minute (estimated before the call, corrected after).
    pub tpm: Option<u32>,
    /// Calls in flight at once.
    pub concurrency: Option<u32>,
    /// Longest wait for a limit, then `ERR_LIMIT_TIMEOUT`; `None` = no bound.
    pub timeout: Option<Duration>,
}

/// Longest wait for a client-side limit.
pub const DEFAULT_LIMIT_TIMEOUT_MS: u64 = 60_000;

/// The DNS cache (`dns: {…}`); `dns: false` resolves on every new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsConfig {
    pub max_ttl: Duration,
    pub max_items: usize,
}

/// What the `proxy` option says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProxySetting {
    /// Unset: the environment decides (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`).
    #[default]
    Environment,
    /// `proxy: false`: always direct, whatever the environment says.
    Off,
    Url(ProxyUrl),
}

impl Default for ConnectConfig {
    /// Every `DEFAULT_*` of the connection settings.
    fn default() -> Self {
        ConnectConfig {
            timeout: ms(DEFAULT_CONNECT_TIMEOUT_MS),
            auto_select_family: DEFAULT_AUTO_SELECT_FAMILY,
            auto_select_family_attempt_timeout: ms(DEFAULT_AUTO_SELECT_FAMILY_ATTEMPT_TIMEOUT_MS),
            tcp_keep_alive: Some(ms(DEFAULT_TCP_KEEP_ALIVE_INITIAL_DELAY_MS)),
            ca: Vec::new(),
            reject_unauthorized: true,
            cert: None,
            key: None,
            servername: None,
            use_system_ca: false,
        }
    }
}

/// Retry policy settings (undici `RetryHandler` names). `retry: false` gives `max_retries = 0`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    pub max_retries: u32,
    pub min_timeout: Duration,
    pub max_timeout: Duration,
    pub timeout_factor: f64,
    pub retry_after: bool,
    pub status_codes: Vec<u16>,
    /// Error codes (connection-level failures) that are retried.
    pub error_codes: Vec<String>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: DEFAULT_MAX_RETRIES,
            min_timeout: ms(DEFAULT_RETRY_MIN_TIMEOUT_MS),
            max_timeout: ms(DEFAULT_RETRY_MAX_TIMEOUT_MS),
            timeout_factor: DEFAULT_RETRY_TIMEOUT_FACTOR,
            retry_after: DEFAULT_RETRY_AFTER,
            status_codes: DEFAULT_RETRY_STATUS_CODES.to_vec(),
            error_codes: DEFAULT_RETRY_ERROR_CODES.map(str::to_owned).to_vec(),
        }
    }
}

/// Circuit breaker settings (`circuitBreaker: {…}`); absent = no breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive retryable failures that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before one probe goes through.
    pub reset_timeout: Duration,
}

pub const DEFAULT_BREAKER_FAILURE_THRESHOLD: u32 = 5;
pub const DEFAULT_BREAKER_RESET_TIMEOUT_MS: u64 = 30_000;

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
];
/// What an entry of `upstreams` sets besides pool options: its endpoint, key and headers, how
/// routing sees it, and its own limits.
const UPSTREAM_OWN_OPTIONS: &[&str] = &[
    "name", "baseUrl", "apiKey", "headers", "weight", "models", "limits",
];

/// Whether an entry of `upstreams` may set `name`.
pub fn is_upstream_option(name: &str) -> bool {
    UPSTREAM_OWN_OPTIONS.contains(&name) || POOL_OPTIONS.contains(&name)
}
const KNOWN_BREAKER_OPTIONS: &[&str] = &["failureThreshold", "resetTimeout"];
const KNOWN_DNS_OPTIONS: &[&str] = &["maxTTL", "maxItems"];
const KNOWN_LIMITS_OPTIONS: &[&str] = &["rpm", "tpm", "concurrency"];
const KNOWN_CONNECT_OPTIONS: &[&str] = &[
    "keepAlive",
    "keepAliveInitialDelay",
    "ca",
    "rejectUnauthorized",
    "cert",
    "key",
    "servername",
    "useSystemCA",
];
const KNOWN_RETRY_OPTIONS: &[&str] = &[
    "maxRetries",
    "minTimeout",
    "maxTimeout",
    "timeoutFactor",
    "retryAfter",
    "statusCodes",
    "errorCodes",
];

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
            .ok_or_else(|| ConfigError(format!("{what} must be an object")))?;
        if let Some(unknown) = map
            .keys()
            .find(|k| !known.iter().any(|list| list.contains(&k.as_str())))
        {
            let noun = if what == "call options" {
                "call option"
            } else {
                "option"
            };
            return Err(ConfigError(format!(
                "{prefix}{unknown} is not a known {noun}"
            )));
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
        match self.uint(
            key,
            "must be a positive integer number of milliseconds",
            MAX_DURATION_MS,
        )? {
            Some(0) => Err(rule(
                &self.name(key),
                "must be a positive integer number of milliseconds",
            )),
            Some(n) => Ok(ms(n)),
            None => Ok(ms(default)),
        }
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
            _ => match o.uint(
                "maxResponseSize",
                "must be a positive integer number of bytes or -1 (unlimited)",
                u32::MAX as u64,
            )? {
                Some(0) => {
                    return Err(rule(
                        "maxResponseSize",
                        "must be a positive integer number of bytes or -1 (unlimited)",
                    ))
                }
                Some(n) => Some(n as usize),
                None => Some(DEFAULT_MAX_RESPONSE_SIZE),
            },
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

        let max_event_size = match o.uint(
            "maxEventSize",
            "must be a positive integer number of bytes",
            u32::MAX as u64,
        )? {
            Some(0) => {
                return Err(rule(
                    "maxEventSize",
                    "must be a positive integer number of bytes",
                ))
            }
            Some(n) => n as usize,
            None => DEFAULT_MAX_EVENT_SIZE,
        };

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

/// Per-call options (`client.chat(body, { timeout, headers, … })`), validated by the same rules
/// as the client's. `signal` never reaches here: JS wires it to a cancel token.
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
    /// Values of this call's secret headers: redacted from its errors like the API key.
    pub secrets: Vec<String>,
    /// Hand the response's status and headers back with the body (`withResponse: true`).
    pub with_response: bool,
}

const KNOWN_CALL_OPTIONS: &[&str] = &["timeout", "headers", "maxRetries", "withResponse"];
const KNOWN_STREAM_CALL_OPTIONS: &[&str] = &[
    "timeout",
    "headers",
    "maxRetries",
    "firstTokenTimeout",
    "tokenTimeout",
];

impl CallOptions {
    /// Validates one call's options (as JSON) against the client's `config`.
    pub fn from_json(value: &Value, config: &Config, stream: bool) -> Result<CallOptions> {
        let known = if stream {
            KNOWN_STREAM_CALL_OPTIONS
        } else {
            KNOWN_CALL_OPTIONS
        };
        let o = Options::new(value, "", "call options", &[known])?;
        let headers = match o.get("headers") {
            None => Vec::new(),
            Some(v) => parse_headers(v, "headers")?,
        };
        Ok(CallOptions {
            timeout: o.override_ms("timeout")?,
            first_token_timeout: o.override_ms("firstTokenTimeout")?,
            token_timeout: o.override_ms("tokenTimeout")?,
            max_retries: o
                .uint("maxRetries", MAX_RETRIES_RULE, MAX_RETRIES)?
                .map(|n| n as u32),
            secrets: config.secret_values(&headers),
            with_response: o.bool("withResponse", false)?,
            headers,
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
    let nested: [(&str, &[&str]); 8] = [
        ("upstreams", UPSTREAM_OWN_OPTIONS),
        ("upstreams", POOL_OPTIONS),
        ("store", &["redis", "prefix"]),
        ("limits", KNOWN_LIMITS_OPTIONS),
        ("connect", KNOWN_CONNECT_OPTIONS),
        ("retry", KNOWN_RETRY_OPTIONS),
        ("circuitBreaker", KNOWN_BREAKER_OPTIONS),
        ("dns", KNOWN_DNS_OPTIONS),
    ];
    let mut names: Vec<String> = [CLIENT_OPTIONS, POOL_OPTIONS, ROUTER_OPTIONS]
        .concat()
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (parent, children) in nested {
        names.extend(children.iter().map(|c| format!("{parent}.{c}")));
    }
    names
}

/// Every per-call option name (`signal` is JS's own).
pub fn call_option_names() -> Vec<String> {
    let mut names: Vec<String> = KNOWN_STREAM_CALL_OPTIONS
        .iter()
        .chain(KNOWN_CALL_OPTIONS)
        .map(|s| s.to_string())
        .chain(["signal".to_string()])
        .collect();
    names.sort();
    names.dedup();
    names
}

fn parse_connect(value: Option<&Value>, mut out: ConnectConfig) -> Result<ConnectConfig> {
    let Some(value) = value else {
        return Ok(out);
    };
    let o = Options::new(value, "connect.", "connect", &[KNOWN_CONNECT_OPTIONS])?;
    let keep_alive = o.bool("keepAlive", DEFAULT_TCP_KEEP_ALIVE)?;
    let delay = o.positive_ms(
        "keepAliveInitialDelay",
        DEFAULT_TCP_KEEP_ALIVE_INITIAL_DELAY_MS,
    )?;
    out.tcp_keep_alive = keep_alive.then_some(delay);
    out.reject_unauthorized = o.bool("rejectUnauthorized", true)?;
    out.use_system_ca = o.bool("useSystemCA", false)?;
    let pem = |key: &str, marker: &str| -> Result<Option<String>> {
        match o.get(key) {
            None => Ok(None),
            Some(Value::String(text)) if text.contains(marker) => Ok(Some(text.clone())),
            // Never echo the value: it may be a private key.
            Some(_) => Err(rule(&o.name(key), "must be a PEM string or Buffer")),
        }
    };
    out.cert = pem("cert", "-----BEGIN CERTIFICATE-----")?;
    out.key = pem("key", "PRIVATE KEY-----")?;
    if out.cert.is_some() != out.key.is_some() {
        return Err(rule(
            if out.cert.is_some() {
                "connect.key"
            } else {
                "connect.cert"
            },
            "is required with the other: a client certificate needs both",
        ));
    }
    out.servername = match o.get("servername") {
        None => None,
        Some(Value::String(name))
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':')) =>
        {
            Some(name.clone())
        }
        Some(_) => return Err(rule("connect.servername", "must be a host name")),
    };
    let ca_rule = "must be a PEM string or an array of PEM strings";
    out.ca = match o.get("ca") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| rule("connect.ca", ca_rule))
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(rule("connect.ca", ca_rule)),
    };
    if out
        .ca
        .iter()
        .any(|pem| !pem.contains("-----BEGIN CERTIFICATE-----"))
    {
        return Err(rule("connect.ca", ca_rule));
    }
    Ok(out)
}

fn parse_limits(value: Option<&Value>, timeout: Option<Duration>) -> Result<Option<LimitsConfig>> {
    let value = match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(None),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(rule("limits", "must be an object or false")),
    };
    let o = Options::new(value, "limits.", "limits", &[KNOWN_LIMITS_OPTIONS])?;
    let positive = |key: &str| -> Result<Option<u32>> {
        match o.uint(key, "must be a positive integer", u32::MAX as u64)? {
            Some(0) => Err(rule(&o.name(key), "must be a positive integer")),
            n => Ok(n.map(|n| n as u32)),
        }
    };
    Ok(Some(LimitsConfig {
        rpm: positive("rpm")?,
        tpm: positive("tpm")?,
        concurrency: positive("concurrency")?,
        timeout,
    }))
}

fn parse_dns(value: Option<&Value>) -> Result<Option<DnsConfig>> {
    let defaults = DnsConfig {
        max_ttl: ms(DEFAULT_DNS_MAX_TTL_MS),
        max_items: DEFAULT_DNS_MAX_ITEMS,
    };
    let value = match value {
        None | Some(Value::Null) | Some(Value::Bool(true)) => return Ok(Some(defaults)),
        Some(Value::Bool(false)) => return Ok(None),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(rule("dns", "must be an object or false")),
    };
    let o = Options::new(value, "dns.", "dns", &[KNOWN_DNS_OPTIONS])?;
    let max_ttl = o.non_negative_ms("maxTTL", DEFAULT_DNS_MAX_TTL_MS)?;
    let max_items = match o.uint("maxItems", "must be a positive integer", u32::MAX as u64)? {
        Some(0) => return Err(rule("dns.maxItems", "must be a positive integer")),
        Some(n) => n as usize,
        None => DEFAULT_DNS_MAX_ITEMS,
    };
    // maxTTL 0 caches nothing: the same as `dns: false`.
    Ok((!max_ttl.is_zero()).then_some(DnsConfig { max_ttl, max_items }))
}

fn parse_breaker(value: Option<&Value>) -> Result<Option<BreakerConfig>> {
    let value = match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(None),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(rule("circuitBreaker", "must be an object or false")),
    };
    let o = Options::new(
        value,
        "circuitBreaker.",
        "circuitBreaker",
        &[KNOWN_BREAKER_OPTIONS],
    )?;
    let failure_threshold = match o.uint(
        "failureThreshold",
        "must be a positive integer",
        u32::MAX as u64,
    )? {
        Some(0) => {
            return Err(rule(
                "circuitBreaker.failureThreshold",
                "must be a positive integer",
            ))
        }
        Some(n) => n as u32,
        None => DEFAULT_BREAKER_FAILURE_THRESHOLD,
    };
    Ok(Some(BreakerConfig {
        failure_threshold,
        reset_timeout: o.positive_ms("resetTimeout", DEFAULT_BREAKER_RESET_TIMEOUT_MS)?,
    }))
}

fn parse_retry(value: Option<&Value>) -> Result<RetryConfig> {
    let value = match value {
        None | Some(Value::Null) | Some(Value::Bool(true)) => return Ok(RetryConfig::default()),
        Some(Value::Bool(false)) => {
            return Ok(RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            })
        }
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(rule("retry", "must be an object or false")),
    };
    let o = Options::new(value, "retry.", "retry", &[KNOWN_RETRY_OPTIONS])?;
    let d = RetryConfig::default();
    let max_retries = o
        .uint("maxRetries", MAX_RETRIES_RULE, MAX_RETRIES)?
        .map_or(d.max_retries, |n| n as u32);
    let min_timeout = o.non_negative_ms("minTimeout", DEFAULT_RETRY_MIN_TIMEOUT_MS)?;
    let max_timeout = o.non_negative_ms("maxTimeout", DEFAULT_RETRY_MAX_TIMEOUT_MS)?;
    if max_timeout < min_timeout {
        return Err(rule(
            "retry.maxTimeout",
            "must not be less than retry.minTimeout",
        ));
    }
    let timeout_factor = match o.get("timeoutFactor") {
        None => d.timeout_factor,
        Some(v) => match v.as_f64() {
            Some(f) if (1.0..=100.0).contains(&f) => f,
            _ => {
                return Err(rule(
                    "retry.timeoutFactor",
                    "must be a number from 1 to 100",
                ))
            }
        },
    };
    let retry_after = o.bool("retryAfter", DEFAULT_RETRY_AFTER)?;
    let status_codes = match o.get("statusCodes") {
        None => d.status_codes,
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v.as_u64() {
                Some(n @ 100..=599) => Ok(n as u16),
                _ => Err(rule(
                    "retry.statusCodes",
                    "must be an array of HTTP status codes",
                )),
            })
            .collect::<Result<_>>()?,
        Some(_) => {
            return Err(rule(
                "retry.statusCodes",
                "must be an array of HTTP status codes",
            ))
        }
    };
    let codes_rule = || {
        rule(
            "retry.errorCodes",
            &format!(
                "must be an array of these codes: {}",
                RETRYABLE_ERROR_CODES.join(", ")
            ),
        )
    };
    let error_codes = match o.get("errorCodes") {
        None => d.error_codes,
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v.as_str() {
                Some(code) if RETRYABLE_ERROR_CODES.contains(&code) => Ok(code.to_owned()),
                _ => Err(codes_rule()),
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(codes_rule()),
    };
    Ok(RetryConfig {
        max_retries,
        min_timeout,
        max_timeout,
        timeout_factor,
        retry_after,
        status_codes,
        error_codes,
    })
}

/// Checks a `{ name: value }` header object; names and values must be valid HTTP.
pub fn parse_headers(value: &Value, option: &str) -> Result<Vec<(HeaderName, HeaderValue)>> {
    let map = value
        .as_object()
        .ok_or_else(|| rule(option, "must be an object of header names to string values"))?;
    // Collected to the exact size: a stream keeps its call's headers for its life (for a retry),
    // and a fallible collect would leave room for four.
    let mut headers = Vec::with_capacity(map.len());
    for (name, value) in map {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConfigError(format!("{option} has an invalid header name")))?;
        let text = value
            .as_str()
            .ok_or_else(|| ConfigError(format!("{option}.{name} must be a string")))?;
        let value = HeaderValue::from_str(text)
            .map_err(|_| ConfigError(format!("{option}.{name} is not a valid header value")))?;
        headers.push((header, value));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        Config::from_json(&v).unwrap_err().0
    }

    #[test]
    fn defaults_fill_in() {
        let c = Config::from_json(&json!({ "baseUrl": "http://127.0.0.1:8080/v1/" })).unwrap();
        assert_eq!(c.connections, Some(DEFAULT_CONNECTIONS));
        assert!(c.keep_alive);
        assert_eq!(c.keep_alive_timeout, ms(DEFAULT_KEEP_ALIVE_TIMEOUT_MS));
        assert_eq!(c.headers_timeout, Some(ms(DEFAULT_HEADERS_TIMEOUT_MS)));
        assert_eq!(c.pool_timeout, Some(ms(DEFAULT_POOL_TIMEOUT_MS)));
        assert_eq!(c.connect.tcp_keep_alive, Some(ms(60_000)));
        assert!(c.connect.reject_unauthorized);
        assert_eq!(c.retry, RetryConfig::default());
        assert_eq!(c.endpoint.path("/chat/completions"), "/v1/chat/completions");
        assert_eq!(c.endpoint.origin, "http://127.0.0.1:8080");
    }

    #[test]
    fn base_url_path_prefix_is_kept_with_or_without_slash() {
        for (url, path) in [
            ("http://h/v1", "/v1/chat/completions"),
            ("http://h/v1/", "/v1/chat/completions"),
            ("http://h", "/chat/completions"),
            (
                "https://h:8443/api/openai/v1",
                "/api/openai/v1/chat/completions",
            ),
        ] {
            assert_eq!(
                Endpoint::parse(url).unwrap().path("/chat/completions"),
                path,
                "{url}"
            );
        }
        let e = Endpoint::parse("https://[::1]/v1").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 443));
    }

    #[test]
    fn null_connections_means_unlimited() {
        let c = Config::from_json(&json!({ "baseUrl": "http://h", "connections": null })).unwrap();
        assert_eq!(c.connections, None);
    }

    #[test]
    fn zero_disables_limits_and_pipelining_zero_disables_keep_alive() {
        let c = Config::from_json(
            &json!({ "baseUrl": "http://h", "headersTimeout": 0, "pipelining": 0 }),
        )
        .unwrap();
        assert_eq!(c.headers_timeout, None);
        assert!(!c.keep_alive);
    }

    #[test]
    fn every_rule_names_its_option() {
        let cases = [
            (json!({}), "baseUrl is required"),
            (json!({ "baseUrl": 5 }), "baseUrl must be a string"),
            (
                json!({ "baseUrl": "ftp://h" }),
                "baseUrl must be an absolute",
            ),
            (
                json!({ "baseUrl": "http://u:p@h" }),
                "baseUrl must not carry credentials",
            ),
            (
                json!({ "baseUrl": "http://h", "connections": 0 }),
                "connections must be a positive integer or null",
            ),
            (
                json!({ "baseUrl": "http://h", "connections": -1 }),
                "connections must be a positive integer or null",
            ),
            (
                json!({ "baseUrl": "http://h", "connections": 1.5 }),
                "connections must be a positive integer or null",
            ),
            (
                json!({ "baseUrl": "http://h", "connections": "NaN" }),
                "connections must be a positive integer or null",
            ),
            (
                json!({ "baseUrl": "http://h", "pipelining": 2 }),
                "pipelining must be 0 or 1",
            ),
            (
                json!({ "baseUrl": "http://h", "keepAliveTimeout": 0 }),
                "keepAliveTimeout must be a positive integer",
            ),
            (
                json!({ "baseUrl": "http://h", "headersTimeout": -5 }),
                "headersTimeout must be a non-negative integer",
            ),
            (
                json!({ "baseUrl": "http://h", "autoSelectFamily": "yes" }),
                "autoSelectFamily must be a boolean",
            ),
            (
                json!({ "baseUrl": "http://h", "apiKey": 42 }),
                "apiKey must be a string",
            ),
            (
                json!({ "baseUrl": "http://h", "headers": [] }),
                "headers must be an object",
            ),
            (
                json!({ "baseUrl": "http://h", "headers": { "x-a": 1 } }),
                "headers.x-a must be a string",
            ),
            (
                json!({ "baseUrl": "http://h", "headers": { "bad name": "v" } }),
                "headers has an invalid header name",
            ),
            (
                json!({ "baseUrl": "http://h", "conections": 5 }),
                "conections is not a known option",
            ),
            (
                json!({ "baseUrl": "http://h", "connect": { "ca": 5 } }),
                "connect.ca must be a PEM string",
            ),
            (
                json!({ "baseUrl": "http://h", "connect": { "ca": "not pem" } }),
                "connect.ca must be a PEM string",
            ),
            (
                json!({ "baseUrl": "http://h", "connect": { "keepAlive": 1 } }),
                "connect.keepAlive must be a boolean",
            ),
            (
                json!({ "baseUrl": "http://h", "connect": { "nope": 1 } }),
                "connect.nope is not a known option",
            ),
            (
                json!({ "baseUrl": "http://h", "retry": 3 }),
                "retry must be an object or false",
            ),
            (
                json!({ "baseUrl": "http://h", "retry": { "maxRetries": -1 } }),
                "retry.maxRetries must be an integer from 0 to 100",
            ),
            (
                json!({ "baseUrl": "http://h", "retry": { "minTimeout": 10, "maxTimeout": 5 } }),
                "retry.maxTimeout must not be less than retry.minTimeout",
            ),
            (
                json!({ "baseUrl": "http://h", "retry": { "timeoutFactor": 0.5 } }),
                "retry.timeoutFactor must be a number from 1 to 100",
            ),
            (
                json!({ "baseUrl": "http://h", "retry": { "statusCodes": [99] } }),
                "retry.statusCodes must be an array of HTTP status codes",
            ),
            (
                json!({ "baseUrl": "http://h", "maxEventSize": 0 }),
                "maxEventSize must be a positive integer",
            ),
        ];
        for (input, expected) in cases {
            let message = err(input.clone());
            assert!(
                message.starts_with(expected),
                "{input}: got {message:?}, want {expected:?}"
            );
        }
    }

    #[test]
    fn retry_false_means_no_retries() {
        let c = Config::from_json(&json!({ "baseUrl": "http://h", "retry": false })).unwrap();
        assert_eq!(c.retry.max_retries, 0);
    }

    #[test]
    fn api_key_never_in_debug_or_errors() {
        let c = Config::from_json(&json!({ "baseUrl": "http://h", "apiKey": "sk-very-secret" }))
            .unwrap();
        assert!(!format!("{c:?}").contains("sk-very-secret"));
        let e = err(json!({ "baseUrl": "http://h", "apiKey": "sk-very-secret\n" }));
        assert!(!e.contains("sk-very-secret"), "{e}");
    }
}
