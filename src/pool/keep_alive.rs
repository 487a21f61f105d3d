//! How long an idle connection may be reused, from the response that left it idle.
//!
//! undici's rule: with a server hint `Keep-Alive: timeout=N`, reuse for
//! `min(N·1000 − threshold, keepAliveMaxTimeout)` ms and not at all when that is ≤ 0; without a hint,
//! `keepAliveTimeout`. `Connection: close` means no reuse.

use std::time::Duration;

use hyper::header::{HeaderMap, HeaderName, CONNECTION};

/// The settings the rule needs, copied out of `Config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlivePolicy {
    pub enabled: bool,
    pub timeout: Duration,
    pub max_timeout: Duration,
    pub threshold: Duration,
}

impl KeepAlivePolicy {
    /// How long the connection may sit idle before it must not be reused; `None` = do not reuse.
    pub fn idle_lifetime(&self, headers: &HeaderMap) -> Option<Duration> {
        if !self.enabled || has_token(headers, CONNECTION, "close") {
            return None;
        }
        match hinted_timeout(headers) {
            None => Some(self.timeout),
            Some(hint) => {
                let usable = hint.checked_sub(self.threshold)?;
                if usable.is_zero() {
                    return None;
                }
                Some(usable.min(self.max_timeout))
            }
        }
    }
}

/// Whether header `name` lists `token` (comma-separated, any case): `Connection: close`.
pub(crate) fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Parses `timeout=N` (seconds) out of a `Keep-Alive` header; ignores other parameters and junk.
pub fn hinted_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("keep-alive")?.to_str().ok()?;
    value.split(',').find_map(|param| {
        let (key, val) = param.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("timeout") {
            return None;
        }
        let secs: u64 = val.trim().trim_matches('"').parse().ok()?;
        Some(Duration::from_secs(secs))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn policy() -> KeepAlivePolicy {
        KeepAlivePolicy {
            enabled: true,
            timeout: Duration::from_secs(90),
            max_timeout: Duration::from_secs(120),
            threshold: Duration::from_secs(1),
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn no_hint_uses_keep_alive_timeout() {
        assert_eq!(
            policy().idle_lifetime(&headers(&[])),
            Some(Duration::from_secs(90))
        );
    }

    #[test]
    fn hint_minus_threshold() {
        let h = headers(&[("keep-alive", "timeout=5, max=100")]);
        assert_eq!(policy().idle_lifetime(&h), Some(Duration::from_secs(4)));
    }

    #[test]
    fn hint_is_capped_by_max_timeout() {
        let h = headers(&[("keep-alive", "timeout=600")]);
        assert_eq!(policy().idle_lifetime(&h), Some(Duration::from_secs(120)));
    }

    #[test]
    fn hint_at_or_below_threshold_means_no_reuse() {
        assert_eq!(
            policy().idle_lifetime(&headers(&[("keep-alive", "timeout=1")])),
            None
        );
        assert_eq!(
            policy().idle_lifetime(&headers(&[("keep-alive", "timeout=0")])),
            None
        );
        let small = KeepAlivePolicy {
            threshold: Duration::from_millis(50),
            ..policy()
        };
        assert_eq!(
            small.idle_lifetime(&headers(&[("keep-alive", "timeout=1")])),
            Some(Duration::from_millis(950))
        );
    }

    #[test]
    fn parsing_is_tolerant() {
        assert_eq!(
            hinted_timeout(&headers(&[("keep-alive", "max=5, Timeout = 7")])),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            hinted_timeout(&headers(&[("keep-alive", "timeout=abc")])),
            None
        );
        assert_eq!(hinted_timeout(&headers(&[("keep-alive", "max=3")])), None);
    }

    #[test]
    fn connection_close_and_disabled_mean_no_reuse() {
        assert_eq!(
            policy().idle_lifetime(&headers(&[("connection", "Close")])),
            None
        );
        assert_eq!(
            policy().idle_lifetime(&headers(&[("connection", "keep-alive, close")])),
            None
        );
        let off = KeepAlivePolicy {
            enabled: false,
            ..policy()
        };
        assert_eq!(off.idle_lifetime(&headers(&[])), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Any header value, junk or huge: no panic, and the reuse time never passes the
            /// configured maximum.
            #[test]
            fn any_keep_alive_value_is_bounded(value in "[ -~]{0,40}", n in any::<u64>(), junk in "[a-z=,\\- .]{0,12}") {
                for text in [value.clone(), format!("timeout={n}"), format!("{junk}timeout={n}{junk}")] {
                    let Ok(v) = HeaderValue::from_str(&text) else { continue };
                    let mut h = HeaderMap::new();
                    h.insert("keep-alive", v);
                    let lifetime = policy().idle_lifetime(&h);
                    prop_assert!(lifetime.is_none_or(|d| d <= Duration::from_secs(120)));
                }
            }
        }
    }
}
