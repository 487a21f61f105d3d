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
