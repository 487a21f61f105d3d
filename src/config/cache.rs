//! `cache: true | { ttl, maxBytes, shared }` on the client and `cache: false | { ttl }` per call.

use super::*;

/// `cache` on the client (what the response cache is built with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    pub ttl: Duration,
    pub max_bytes: usize,
    /// Keep entries in the client's `store` too.
    pub shared: bool,
}

pub const DEFAULT_CACHE_TTL_MS: u64 = 3_600_000;
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 64 * 1024 * 1024;

pub const KNOWN_CACHE_OPTIONS: &[&str] = &["ttl", "maxBytes", "shared"];

/// What a call says of the cache: as the client says (`cache` absent or `true`), not at all
/// (`cache: false`), or with its own TTL (`cache: { ttl }`). Packed in 32 bits (every open
/// stream keeps its call options, and a TTL is bounded by `MAX_DURATION_MS`, below 2^31 ms):
/// 0 is "as the client", `u32::MAX` is "off", anything else the TTL in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallCache(u32);

impl CallCache {
    pub const OFF: CallCache = CallCache(u32::MAX);

    fn ttl_ms(ms: u64) -> CallCache {
        CallCache(ms.clamp(1, MAX_DURATION_MS) as u32)
    }

    /// `cache: false`.
    pub fn is_off(self) -> bool {
        self == Self::OFF
    }

    /// The TTL the call sets, if any.
    pub fn ttl(self) -> Option<Duration> {
        (self.0 != 0 && !self.is_off()).then(|| Duration::from_millis(self.0.into()))
    }
}

/// The client's `cache` (absent, `false`: none).
pub fn parse_cache(value: Option<&Value>) -> Result<Option<CacheConfig>> {
    let defaults = CacheConfig {
        ttl: ms(DEFAULT_CACHE_TTL_MS),
        max_bytes: DEFAULT_CACHE_MAX_BYTES as usize,
        shared: false,
    };
    let value = match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(None),
        Some(Value::Bool(true)) => return Ok(Some(defaults)),
        Some(v @ Value::Object(_)) => v,
        Some(_) => {
            return Err(rule(
                "cache",
                "must be true, false or an object such as { ttl: 3600000 }",
            ))
        }
    };
    let o = Options::new(value, "cache.", "cache", &[KNOWN_CACHE_OPTIONS])?;
    let ttl = o.positive_ms("ttl", DEFAULT_CACHE_TTL_MS)?;
    let max_bytes = o
        .positive_uint(
            "maxBytes",
            "must be a positive integer number of bytes",
            u32::MAX as u64 * 16,
        )?
        .map_or(defaults.max_bytes, |n| n as usize);
    Ok(Some(CacheConfig {
        ttl,
        max_bytes,
        shared: o.bool("shared", false)?,
    }))
}

/// A call's `cache` (absent or `true`: the client's).
pub(super) fn parse_call_cache(value: Option<&Value>) -> Result<CallCache> {
    match value {
        None | Some(Value::Null) | Some(Value::Bool(true)) => Ok(CallCache::default()),
        Some(Value::Bool(false)) => Ok(CallCache::OFF),
        Some(v @ Value::Object(_)) => {
            let o = Options::new(v, "cache.", "call options", &[&["ttl"]])?;
            let ttl = o.positive_ms("ttl", DEFAULT_CACHE_TTL_MS)?;
            Ok(CallCache::ttl_ms(ttl.as_millis() as u64))
        }
        Some(_) => Err(rule(
            "cache",
            "must be false or an object such as { ttl: 60000 }",
        )),
    }
}
