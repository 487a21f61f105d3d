//! The retry policy, pure: which failures are retried, how long to wait, and what a server's
//! `Retry-After` asks for. No I/O and no clock reads except through arguments, so every rule is
//! unit-tested.
//!
//! Delay before retry n (n = 1, 2, …), without a server hint:
//!
//! ```text
//! base(n)  = min(minTimeout · timeoutFactor^(n−1), maxTimeout)
//! delay(n) = min(base(n) · (1 + J), maxTimeout),  J uniform in [0, 0.25)
//! ```
//!
//! The jitter only adds (a retry never comes earlier than the formula says) and the cap still
//! holds. With a hint (`retry-after-ms`, `retry-after` in seconds or as an HTTP date) and
//! `retryAfter: true`, the delay is exactly what the server asked; if it asked for more than
//! `maxTimeout` the call fails at once with the server's answer rather than sleeping less.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::RetryConfig;
use crate::error::{Error, Kind};

/// Statuses that are never retried, whatever the configuration or the server says: the request
/// itself is wrong and would fail the same way again.
pub const NEVER_RETRIED: [u16; 5] = [400, 401, 403, 404, 422];

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then try again.
    RetryAfter(Duration),
    /// Give up: this failure is final.
    Stop,
    /// The server asked for a longer wait than `maxTimeout` allows: give up now and tell the
    /// caller how long the server wanted.
    StopServerAskedTooLong(Duration),
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    config: RetryConfig,
}

impl RetryPolicy {
    pub fn new(config: RetryConfig) -> Self {
        RetryPolicy { config }
    }

    pub fn max_retries(&self) -> u32 {
        self.config.max_retries
    }

    /// Decides after failed attempt number `attempt` (1-based), for a failure the caller has
    /// already found retryable ([`RetryPolicy::is_retryable`], [`stream_may_retry`]).
    /// `max_retries` may be overridden per call. `jitter` is a uniform random number in [0, 1);
    /// `now` is the wall clock (for HTTP-date hints).
    pub fn decide(
        &self,
        error: &Error,
        attempt: u32,
        max_retries: u32,
        jitter: f64,
        now: SystemTime,
    ) -> Decision {
        if attempt > max_retries {
            return Decision::Stop;
        }
        if self.config.retry_after {
            if let Some(asked) = error
                .http_failure()
                .and_then(|h| retry_after(&h.headers, now))
            {
                if asked > self.config.max_timeout {
                    return Decision::StopServerAskedTooLong(asked);
                }
                return Decision::RetryAfter(asked);
            }
        }
        Decision::RetryAfter(self.backoff(attempt, jitter))
    }

    /// The delay before retry `n` without a server hint (see the module docs).
    pub fn backoff(&self, n: u32, jitter: f64) -> Duration {
        let min = self.config.min_timeout.as_secs_f64();
        let max = self.config.max_timeout.as_secs_f64();
        let exponent = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = (min * self.config.timeout_factor.powi(exponent)).min(max);
        let jittered = (base * (1.0 + 0.25 * jitter.clamp(0.0, 1.0))).min(max);
        Duration::from_secs_f64(jittered)
    }

    /// Whether this failure may succeed on another attempt.
    pub fn is_retryable(&self, error: &Error) -> bool {
        if let Some(http) = error.http_failure() {
            if NEVER_RETRIED.contains(&http.status) {
                return false;
            }
            if let Some(told) = should_retry_header(&http.headers) {
                return told;
            }
            return self.config.status_codes.contains(&http.status);
        }
        self.config
            .error_codes
            .iter()
            .any(|code| code == error.code())
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// `x-should-retry: true|false` (OpenAI's own override).
fn should_retry_header(headers: &[(String, String)]) -> Option<bool> {
    match header(headers, "x-should-retry")? {
        v if v.eq_ignore_ascii_case("true") => Some(true),
        v if v.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

pub use crate::server_time::MAX_HINT;

/// The wait a server asked for: `retry-after-ms` (milliseconds) first, then `retry-after` as
/// seconds or an HTTP date. Negative, NaN, infinite and unparseable values are ignored; huge
/// ones are clamped to [`MAX_HINT`].
pub fn retry_after(headers: &[(String, String)], now: SystemTime) -> Option<Duration> {
    if let Some(ms) = header(headers, "retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if let Some(wait) = clamped_secs(ms / 1000.0) {
            return Some(wait);
        }
    }
    let value = header(headers, "retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return clamped_secs(secs);
    }
    let at = parse_http_date(value)?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_HINT),
    )
}

/// A non-negative, finite number of seconds as a duration no longer than [`MAX_HINT`].
fn clamped_secs(secs: f64) -> Option<Duration> {
    if !(secs.is_finite() && secs >= 0.0) {
        return None;
    }
    Some(Duration::from_secs_f64(secs.min(MAX_HINT.as_secs_f64())))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the HTTP date format servers send.
/// Years outside 1970–9999 are refused (no overflow, whatever the digits).
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    let rest = text.trim().split_once(", ")?.1;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    let day: u64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month)? as u64
        + 1;
    let year: u64 = year.parse().ok()?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms[..] else {
        return None;
    };
    if !(1..=31).contains(&day) || !(1970..=9999).contains(&year) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = crate::server_time::days_from_civil(year, month, day)?;
    UNIX_EPOCH.checked_add(Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + s))
}

/// A uniform random number in [0, 1) for jitter, from the std hasher's per-process random keys
/// (no RNG crate needed for this).
pub fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether an error is one a stream may retry before its first chunk: the retryable ones, plus
/// a first-token timeout (the model never started; another attempt may be served elsewhere).
pub fn stream_may_retry(policy: &RetryPolicy, error: &Error) -> bool {
    error.kind() == Kind::FirstTokenTimeout || policy.is_retryable(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::HttpFailure;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(RetryConfig::default())
    }

    fn http(status: u16, headers: &[(&str, &str)]) -> Error {
        Error::http(
            "x",
            HttpFailure {
                status,
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                body: String::new(),
                raw: Default::default(),
            },
        )
    }

    const NOW: SystemTime = UNIX_EPOCH;

    #[test]
    fn backoff_grows_by_the_factor_and_is_capped() {
        let p = policy();
        let secs: Vec<f64> = (1..=7).map(|n| p.backoff(n, 0.0).as_secs_f64()).collect();
        assert_eq!(secs, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]);
    }

    #[test]
    fn jitter_only_adds_and_never_passes_the_cap() {
        let p = policy();
        for n in 1..=10 {
            for j in [0.0, 0.3, 0.999] {
                let d = p.backoff(n, j);
                assert!(d >= p.backoff(n, 0.0), "n={n} j={j}");
                assert!(d <= Duration::from_secs(30), "n={n} j={j}");
            }
        }
        assert_eq!(p.backoff(1, 0.999).as_millis(), 1249);
    }

    #[test]
    fn jitter_source_is_in_range_and_varies() {
        let values: Vec<f64> = (0..100).map(|_| jitter()).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        assert!(values.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn statuses() {
        let p = policy();
        for status in [408, 409, 429, 500, 502, 503, 504] {
            assert!(p.is_retryable(&http(status, &[])), "{status}");
        }
        for status in [400, 401, 403, 404, 422, 418, 501] {
            assert!(!p.is_retryable(&http(status, &[])), "{status}");
        }
    }

    #[test]
    fn x_should_retry_overrides_the_status_rule_but_not_the_never_list() {
        let p = policy();
        assert!(!p.is_retryable(&http(503, &[("x-should-retry", "false")])));
        assert!(p.is_retryable(&http(418, &[("X-Should-Retry", "true")])));
        assert!(!p.is_retryable(&http(401, &[("x-should-retry", "true")])));
    }

    #[test]
    fn connection_errors() {
        let p = policy();
        assert!(p.is_retryable(&Error::new(Kind::Connect, "x")));
        assert!(p.is_retryable(&Error::new(Kind::Socket, "x")));
        assert!(p.is_retryable(&Error::new(Kind::ConnectTimeout, "x")));
        assert!(!p.is_retryable(&Error::new(Kind::Aborted, "x")));
        assert!(!p.is_retryable(&Error::new(Kind::HeadersTimeout, "x")));
        assert!(!p.is_retryable(&Error::new(Kind::InvalidResponse, "x")));
        assert!(stream_may_retry(
            &p,
            &Error::new(Kind::FirstTokenTimeout, "x")
        ));
        assert!(!stream_may_retry(&p, &Error::new(Kind::TokenTimeout, "x")));
    }

    #[test]
    fn retry_after_forms() {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            retry_after(&h(&[("retry-after", "3")]), NOW),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&h(&[("retry-after", "0.5")]), NOW),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            retry_after(&h(&[("retry-after-ms", "250"), ("retry-after", "9")]), NOW),
            Some(Duration::from_millis(250))
        );
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            retry_after(&h(&[("retry-after", "Sun, 06 Nov 1994 08:49:47 GMT")]), now),
            Some(Duration::from_secs(10))
        );
        // A date in the past means "now".
        assert_eq!(
            retry_after(&h(&[("retry-after", "Sun, 06 Nov 1994 08:49:00 GMT")]), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&h(&[("retry-after", "soon")]), NOW), None);
        assert_eq!(retry_after(&h(&[("retry-after", "-1")]), NOW), None);
        assert_eq!(retry_after(&h(&[]), NOW), None);
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(UNIX_EPOCH)
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(1_835_438_400))
        );
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
        assert_eq!(parse_http_date("garbage"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 99999 08:49:37 GMT"), None);
        assert_eq!(
            parse_http_date("Sun, 06 Nov 18446744073709551615 08:49:37 GMT"),
            None
        );
    }

    #[test]
    fn absurd_hints_are_clamped_or_ignored() {
        let h = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        for (name, value) in [
            ("retry-after", "1e20"),
            ("retry-after", "1e308"),
            ("retry-after-ms", "1e30"),
            ("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT"),
        ] {
            assert_eq!(
                retry_after(&h(name, value), NOW),
                Some(MAX_HINT),
                "{name}: {value}"
            );
        }
        for (name, value) in [
            ("retry-after", "NaN"),
            ("retry-after", "inf"),
            ("retry-after", "-Infinity"),
            ("retry-after-ms", "-5"),
            ("retry-after", "Sun, 06 Nov 99999 08:49:37 GMT"),
            ("retry-after", ""),
        ] {
            assert_eq!(retry_after(&h(name, value), NOW), None, "{name}: {value}");
        }
        // A junk retry-after-ms falls back to retry-after.
        let both = vec![
            ("retry-after-ms".to_string(), "NaN".to_string()),
            ("retry-after".to_string(), "2".to_string()),
        ];
        assert_eq!(retry_after(&both, NOW), Some(Duration::from_secs(2)));
        // Clamped hints are over maxTimeout: the call stops with the server's answer.
        let e = http(429, &[("retry-after", "1e20")]);
        assert_eq!(
            policy().decide(&e, 1, 3, 0.0, NOW),
            Decision::StopServerAskedTooLong(MAX_HINT)
        );
    }

    #[test]
    fn decisions() {
        let p = policy();
        let e = http(429, &[("retry-after", "2")]);
        assert_eq!(
            p.decide(&e, 1, 3, 0.0, NOW),
            Decision::RetryAfter(Duration::from_secs(2))
        );
        assert_eq!(p.decide(&e, 4, 3, 0.0, NOW), Decision::Stop);
        let long = http(429, &[("retry-after", "31")]);
        assert_eq!(
            p.decide(&long, 1, 3, 0.0, NOW),
            Decision::StopServerAskedTooLong(Duration::from_secs(31))
        );
        let no_hints = RetryPolicy::new(RetryConfig {
            retry_after: false,
            ..RetryConfig::default()
        });
        assert_eq!(
            no_hints.decide(&long, 1, 3, 0.0, NOW),
            Decision::RetryAfter(Duration::from_secs(1))
        );
        assert_eq!(p.decide(&http(500, &[]), 1, 0, 0.0, NOW), Decision::Stop);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn one(name: &str, value: &str) -> Vec<(String, String)> {
            vec![(name.to_string(), value.to_string())]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            /// Any text in either header: no panic, and a hint is never longer than MAX_HINT.
            #[test]
            fn any_retry_header_text_is_clamped_or_ignored(value in "\\PC{0,40}", now in any::<u32>()) {
                let now = UNIX_EPOCH + Duration::from_secs(u64::from(now));
                for name in ["retry-after", "retry-after-ms"] {
                    if let Some(d) = retry_after(&one(name, &value), now) {
                        prop_assert!(d <= MAX_HINT);
                    }
                }
            }

            /// Any number, as the server may print it: no panic, clamped.
            #[test]
            fn any_number_is_clamped(n in any::<f64>(), exp in -400i32..400) {
                for text in [n.to_string(), format!("{n}e{exp}"), format!("{}", n * 1e300)] {
                    for name in ["retry-after", "retry-after-ms"] {
                        if let Some(d) = retry_after(&one(name, &text), NOW) {
                            prop_assert!(d <= MAX_HINT);
                        }
                    }
                }
            }

            /// Dates with any numbers in every field: no panic, and within 1970–9999 when parsed.
            #[test]
            fn any_date_fields(day in any::<u64>(), month in 0usize..13, year in any::<u64>(), h in any::<u64>(), m in 0u64..100, s in 0u64..100) {
                let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec", "Xyz"];
                let text = format!("Sun, {day:02} {} {year} {h:02}:{m:02}:{s:02} GMT", months[month]);
                if let Some(at) = parse_http_date(&text) {
                    prop_assert!(at.duration_since(UNIX_EPOCH).unwrap() < Duration::from_secs(253_402_300_800 + 86_400 * 31));
                }
                let _ = retry_after(&one("retry-after", &text), NOW);
            }

            /// Any x-should-retry value and status: the decision never panics, and the never-list
            /// holds whatever the server says.
            #[test]
            fn any_should_retry_value(value in "\\PC{0,12}", status in 100u16..600) {
                let p = policy();
                let retryable = p.is_retryable(&http(status, &[("x-should-retry", value.as_str())]));
                if NEVER_RETRIED.contains(&status) {
                    prop_assert!(!retryable);
                }
            }
        }
    }
}
