//! Per-call options: `{ timeout, headers, maxRetries, withResponse }` and the stream ones.

use super::*;

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
    /// Who watches each HTTP request of the call (set by the binding, never from JSON).
    pub observer: Option<std::sync::Arc<crate::observe::Observer>>,
    /// `cache: false | { ttl }`; by default as the client says.
    pub cache: super::CallCache,
}

pub(super) const KNOWN_CALL_OPTIONS: &[&str] =
    &["timeout", "headers", "maxRetries", "withResponse", "cache"];

pub(super) const KNOWN_STREAM_CALL_OPTIONS: &[&str] = &[
    "timeout",
    "headers",
    "maxRetries",
    "firstTokenTimeout",
    "tokenTimeout",
    "cache",
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
            observer: None,
            cache: super::cache::parse_call_cache(o.get("cache"))?,
        })
    }
}

impl CallOptions {
    /// The same options with `added` headers (a watcher's, as `traceparent`) for one request;
    /// names or values that are not valid HTTP are dropped.
    pub fn with_added_headers(&self, added: Vec<(String, String)>) -> CallOptions {
        let mut call = self.clone();
        for (name, value) in added {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                call.headers.retain(|(k, _)| *k != name);
                call.headers.push((name, value));
            }
        }
        call
    }
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
            .map_err(|_| ConfigError::new(option, "has an invalid header name"))?;
        let text = value
            .as_str()
            .ok_or_else(|| ConfigError::new(format!("{option}.{name}"), "must be a string"))?;
        let value = HeaderValue::from_str(text).map_err(|_| {
            ConfigError::new(format!("{option}.{name}"), "is not a valid header value")
        })?;
        headers.push((header, value));
    }
    Ok(headers)
}
