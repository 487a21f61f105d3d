//! Client-side limits: `limits: { rpm, tpm, concurrency }` and `limitTimeout`.

use super::*;

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

/// The `limits` and `limitTimeout` of a client's options object, by the rules
/// [`Config::from_json`] applies; the router reads its client-wide limits with it (the rest of
/// those options go to its upstreams).
pub fn client_limits(options: &Map<String, Value>) -> Result<Option<LimitsConfig>> {
    let mut own = Map::new();
    for key in ["limits", "limitTimeout"] {
        if let Some(value) = options.get(key) {
            own.insert(key.to_owned(), value.clone());
        }
    }
    let own = Value::Object(own);
    let o = Options::new(&own, "", "options", &[&["limits", "limitTimeout"]])?;
    let timeout = o.limit_ms("limitTimeout", DEFAULT_LIMIT_TIMEOUT_MS)?;
    parse_limits(o.map.get("limits"), timeout)
}

pub(super) const KNOWN_LIMITS_OPTIONS: &[&str] = &["rpm", "tpm", "concurrency"];

pub(super) fn parse_limits(
    value: Option<&Value>,
    timeout: Option<Duration>,
) -> Result<Option<LimitsConfig>> {
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
