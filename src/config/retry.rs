//! Whether and when to try again: `retry: {…}` and `circuitBreaker: {…}`.

use super::*;

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

pub(super) const KNOWN_BREAKER_OPTIONS: &[&str] = &["failureThreshold", "resetTimeout"];

pub(super) const KNOWN_RETRY_OPTIONS: &[&str] = &[
    "maxRetries",
    "minTimeout",
    "maxTimeout",
    "timeoutFactor",
    "retryAfter",
    "statusCodes",
    "errorCodes",
];

pub(super) fn parse_breaker(value: Option<&Value>) -> Result<Option<BreakerConfig>> {
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
    let failure_threshold = o
        .positive_uint(
            "failureThreshold",
            "must be a positive integer",
            u32::MAX as u64,
        )?
        .map_or(DEFAULT_BREAKER_FAILURE_THRESHOLD, |n| n as u32);
    Ok(Some(BreakerConfig {
        failure_threshold,
        reset_timeout: o.positive_ms("resetTimeout", DEFAULT_BREAKER_RESET_TIMEOUT_MS)?,
    }))
}

pub(super) fn parse_retry(value: Option<&Value>) -> Result<RetryConfig> {
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
