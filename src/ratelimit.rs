//! Provider rate-limit headers, read from every response: OpenAI's and Groq's
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (reset as a Go duration: `1s`, `6m0s`,
//! `1h2m3.5s`, `20ms`) and Anthropic's `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`
//! (reset as an RFC 3339 time). Pure: the clock is an argument. Absurd values are clamped
//! (resets to [`MAX_HINT`]) or ignored (junk, negative numbers), never a panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::server_time::{days_from_civil, MAX_HINT};

/// One limit's state as the provider reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// How long until the window resets, from the response.
    pub reset: Option<Duration>,
}

impl Window {
    fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset.is_none()
    }
}

/// What one response said about the caller's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
}

/// Reads the rate-limit headers of a response (lowercase names); `None` when it has none.
pub fn parse<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    now: SystemTime,
) -> Option<RateLimits> {
    let mut requests = Window::default();
    let mut tokens = Window::default();
    // Anthropic's input-token window stands in for `tokens` when it sends no combined one.
    let mut input_tokens = Window::default();
    for (name, value) in headers {
        let value = value.trim();
        if let Some(rest) = name.strip_prefix("x-ratelimit-") {
            let (field, which) = match rest.split_once('-') {
                Some(split) => split,
                None => continue,
            };
            let window = match which {
                "requests" => &mut requests,
                "tokens" => &mut tokens,
                _ => continue,
            };
            match field {
                "limit" => window.limit = count(value),
                "remaining" => window.remaining = count(value),
                "reset" => window.reset = go_duration(value).map(|d| d.min(MAX_HINT)),
                _ => {}
            }
        } else if let Some(rest) = name.strip_prefix("anthropic-ratelimit-") {
            let (which, field) = match rest.rsplit_once('-') {
                Some(split) => split,
                None => continue,
            };
            let window = match which {
                "requests" => &mut requests,
                "tokens" => &mut tokens,
                "input-tokens" => &mut input_tokens,
                _ => continue,
            };
            match field {
                "limit" => window.limit = count(value),
                "remaining" => window.remaining = count(value),
                "reset" => {
                    window.reset = rfc3339(value).map(|at| {
                        at.duration_since(now)
                            .unwrap_or(Duration::ZERO)
                            .min(MAX_HINT)
                    })
                }
                _ => {}
            }
        }
    }
    if tokens.is_empty() {
        tokens = input_tokens;
    }
    let requests = (!requests.is_empty()).then_some(requests);
    let tokens = (!tokens.is_empty()).then_some(tokens);
    (requests.is_some() || tokens.is_some()).then_some(RateLimits { requests, tokens })
}

/// A non-negative whole count; absurdly large ones clamp to `u64::MAX`, anything else is junk.
fn count(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

/// A Go duration (`1h2m3.5s`, `6m0s`, `20ms`, `1.5us`, `0`): one or more decimal numbers each
/// with a unit (`h`, `m`, `s`, `ms`, `us`, `µs`, `ns`). Overflowing ones clamp to [`MAX_HINT`].
pub fn go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    if !total.is_finite() {
        return Some(MAX_HINT);
    }
    Some(Duration::from_secs_f64(total.min(MAX_HINT.as_secs_f64())))
}

/// An RFC 3339 time (`2024-05-01T12:00:03Z`, `…03.25+02:00`); years 1970–9999.
pub fn rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u64> {
        let part = text.get(from..to)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut fraction = 0f64;
    if let Some(after) = rest.strip_prefix('.') {
        let digits = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        if digits == 0 {
            return None;
        }
        fraction = format!("0.{}", &after[..digits]).parse().ok()?;
        rest = &after[digits..];
    }
    let offset: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest[1..].split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day)?;
    let local = (days * 86_400 + hour * 3600 + minute * 60 + second) as i64;
    let utc = u64::try_from(local - offset).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(utc) + Duration::from_secs_f64(fraction))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: SystemTime = UNIX_EPOCH;

    #[test]
    fn go_durations() {
        let cases = [
            ("1s", 1_000),
            ("6m0s", 360_000),
            ("1h2m3.5s", 3_723_500),
            ("20ms", 20),
            ("0", 0),
            ("0s", 0),
            ("1.5us", 0),
        ];
        for (text, ms) in cases {
            assert_eq!(go_duration(text).map(|d| d.as_millis()), Some(ms), "{text}");
        }
        for junk in ["", "s", "1", "1x", "-1s", "1s2", "NaN", "1..5s", "inf"] {
            assert_eq!(go_duration(junk), None, "{junk:?}");
        }
        assert_eq!(go_duration("99999999999999999999h"), Some(MAX_HINT));
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(
            rfc3339("1970-01-01T00:01:00Z"),
            Some(UNIX_EPOCH + Duration::from_secs(60))
        );
        assert_eq!(
            rfc3339("1970-01-01T02:00:00.5+02:00"),
            Some(UNIX_EPOCH + Duration::from_millis(500))
        );
        for junk in [
            "",
            "2024-13-01T00:00:00Z",
            "2024-01-01 00:00:00",
            "99999-01-01T00:00:00Z",
            "2024-01-01T00:00:00+2:00",
            "2024-01-01T25:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(rfc3339(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn openai_headers() {
        let h = [
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "499"),
            ("x-ratelimit-reset-requests", "120ms"),
            ("x-ratelimit-limit-tokens", "30000"),
            ("x-ratelimit-remaining-tokens", "29900"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("content-type", "application/json"),
        ];
        let limits = parse(h, NOW).unwrap();
        assert_eq!(
            limits.requests,
            Some(Window {
                limit: Some(500),
                remaining: Some(499),
                reset: Some(Duration::from_millis(120))
            })
        );
        assert_eq!(limits.tokens.unwrap().reset, Some(Duration::from_secs(360)));
    }

    #[test]
    fn anthropic_headers() {
        let h = [
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "1970-01-01T00:00:30Z"),
            ("anthropic-ratelimit-input-tokens-remaining", "900"),
        ];
        let limits = parse(h, NOW).unwrap();
        assert_eq!(limits.requests.unwrap().remaining, Some(0));
        assert_eq!(
            limits.requests.unwrap().reset,
            Some(Duration::from_secs(30))
        );
        assert_eq!(limits.tokens.unwrap().remaining, Some(900));
    }

    #[test]
    fn absurd_and_missing_values() {
        assert_eq!(parse([("content-type", "x")], NOW), None);
        let h = [
            ("x-ratelimit-remaining-requests", "-5"),
            ("x-ratelimit-limit-requests", "99999999999999999999999"),
            ("x-ratelimit-reset-requests", "1e30s"),
        ];
        let w = parse(h, NOW).unwrap().requests.unwrap();
        assert_eq!(
            (w.limit, w.remaining, w.reset),
            (Some(u64::MAX), None, None)
        );
        let h = [("x-ratelimit-reset-tokens", "99999999999h")];
        assert_eq!(parse(h, NOW).unwrap().tokens.unwrap().reset, Some(MAX_HINT));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            /// Any header text: no panic, resets within MAX_HINT.
            #[test]
            fn any_value(value in "\\PC{0,30}", which in 0usize..8) {
                let names = [
                    "x-ratelimit-limit-requests", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-requests",
                    "x-ratelimit-reset-tokens", "anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-limit",
                    "anthropic-ratelimit-input-tokens-reset", "x-ratelimit-",
                ];
                if let Some(limits) = parse([(names[which], value.as_str())], NOW) {
                    for w in [limits.requests, limits.tokens].into_iter().flatten() {
                        prop_assert!(w.reset.is_none_or(|d| d <= MAX_HINT));
                    }
                }
            }

            /// Durations built from parts parse to their sum.
            #[test]
            fn go_duration_sums(h in 0u64..100, m in 0u64..60, s in 0u64..60, ms in 0u64..1000) {
                let text = format!("{h}h{m}m{s}s{ms}ms");
                let want = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
                let got = go_duration(&text).unwrap();
                prop_assert!(got.abs_diff(want) < Duration::from_micros(1), "{} → {:?}", text, got);
            }
        }
    }
}
