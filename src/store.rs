//! The shared limiter store: GCRA state and provider pauses in Redis, so that every process of
//! a fleet obeys one limit.
//!
//! One Lua script (run by `EVALSHA`, loaded on first use) decides a call: it reads the
//! upstream's pause and its request and token "theoretical arrival times", takes both or
//! neither, and answers 0 (go) or how long to wait. Time is Redis's own (`TIME`), so that
//! machines with drifting clocks agree. Reservations are corrected, and 429 pauses shared, by
//! two more small scripts, fire and forget.
//!
//! Redis down or slow never holds a call: every round trip has a short deadline; a failure
//! marks the store down (logged once per outage, counted), calls use the local limiter, and
//! after a second the store is tried again and, answering, is used again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

/// Longest round trip before the store counts as down for this call.
pub const ROUND_TRIP_DEADLINE: Duration = Duration::from_millis(250);
/// How long a store found down is left alone before it is tried again.
pub const RETRY_DOWN_AFTER: Duration = Duration::from_secs(1);

const ACQUIRE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local paused = redis.call('PTTL', KEYS[3])
if paused > 0 then return paused * 1000 end
local function ready(key, interval, burst, units)
  if interval <= 0 then return 0, 0 end
  local stored = redis.call('GET', key)
  local tat = now
  if stored then tat = math.max(tonumber(stored), now) end
  local after = tat + interval * units
  if after - now <= burst or tat == now then return 0, after end
  return after - burst - now, 0
end
local w1, t1 = ready(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), 1)
local w2, t2 = ready(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
local wait = math.max(w1, w2)
if wait > 0 then return math.ceil(wait) end
if t1 > 0 then redis.call('SET', KEYS[1], string.format('%.0f', t1), 'PX', math.ceil((t1 - now) / 1000) + 1000) end
if t2 > 0 then redis.call('SET', KEYS[2], string.format('%.0f', t2), 'PX', math.ceil((t2 - now) / 1000) + 1000) end
return 0
"#;

const CORRECT: &str = r#"
local stored = redis.call('GET', KEYS[1])
if not stored then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = math.max(tonumber(stored) + tonumber(ARGV[1]), now)
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return 0
"#;

const PAUSE: &str = r#"
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 0
"#;

/// One GCRA dimension as the script takes it: µs per unit and µs of burst; 0/0 = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rate {
    pub interval_us: u64,
    pub burst_us: u64,
}

/// The keys of one scope (an upstream, or the whole client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub requests: String,
    pub tokens: String,
    pub pause: String,
}

/// What the store said of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Go,
    /// Ask again after this long.
    Wait(Duration),
    /// The store is down: decide locally.
    Unavailable,
}

/// Counters of the store, for stats and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub up: bool,
    /// Round trips that failed or ran past their deadline.
    pub errors: u64,
    /// Calls decided by the local limiter because the store was down.
    pub fallbacks: u64,
}

/// A connection to the shared store (cheap to share: one per client).
pub struct Store {
    client: redis::Client,
    prefix: String,
    /// Made on first use; dropped after a failed round trip, so that the next try connects
    /// afresh at once instead of waiting out the old connection's reconnection backoff.
    connection: Mutex<Option<ConnectionManager>>,
    up: AtomicBool,
    /// While down: when to try again.
    retry_at: Mutex<Option<Instant>>,
    errors: AtomicU64,
    fallbacks: AtomicU64,
    acquire: redis::Script,
    correct: redis::Script,
    pause: redis::Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        write!(f, "Store(prefix: {})", self.prefix)
    }
}

impl Store {
    /// A store at `url` (checked by [`check_url`]); nothing connects before the first call.
    pub fn new(url: &str, prefix: &str) -> Result<Store, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        Ok(Store {
            client,
            prefix: prefix.to_owned(),
            connection: Mutex::new(None),
            up: AtomicBool::new(true),
            retry_at: Mutex::new(None),
            errors: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            acquire: redis::Script::new(ACQUIRE),
            correct: redis::Script::new(CORRECT),
            pause: redis::Script::new(PAUSE),
        })
    }

    /// The keys of `scope` (an upstream's name, or `*` for the whole client).
    pub fn keys(&self, scope: &str) -> Keys {
        let base = format!("{}:{scope}", self.prefix);
        Keys {
            requests: format!("{base}:rpm"),
            tokens: format!("{base}:tpm"),
            pause: format!("{base}:pause"),
        }
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            up: self.up.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
        }
    }

    /// Whether to ask the store now: up, or down long enough to be tried again.
    fn usable(&self) -> bool {
        if self.up.load(Ordering::Relaxed) {
            return true;
        }
        let mut retry_at = self.retry_at.lock().unwrap_or_else(|e| e.into_inner());
        match *retry_at {
            Some(at) if Instant::now() < at => false,
            _ => {
                // One caller probes; the others stay local until it answers.
                *retry_at = Some(Instant::now() + RETRY_DOWN_AFTER);
                true
            }
        }
    }

    fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let mut slot = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(connection) = &*slot {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(ROUND_TRIP_DEADLINE))
            .set_response_timeout(Some(ROUND_TRIP_DEADLINE))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        // Lazy: it connects on its first command, inside the round trip's deadline.
        let connection = self.client.get_connection_manager_lazy(config)?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Runs `invocation` within the deadline, keeping the up/down state.
    async fn round_trip(&self, invocation: redis::ScriptInvocation<'_>) -> Option<i64> {
        let result = tokio::time::timeout(ROUND_TRIP_DEADLINE, async {
            let mut connection = self.connection()?;
            invocation.invoke_async::<i64>(&mut connection).await
        })
        .await;
        match result {
            Ok(Ok(value)) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        prefix = self.prefix.as_str(),
                        "the limiter store (Redis) answers again: limits are shared again"
                    );
                }
                Some(value)
            }
            failure => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                *self.connection.lock().unwrap_or_else(|e| e.into_inner()) = None;
                *self.retry_at.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Instant::now() + RETRY_DOWN_AFTER);
                if self.up.swap(false, Ordering::Relaxed) {
                    let why = match failure {
                        Err(_) => "no answer within 250 ms".to_owned(),
                        Ok(Err(e)) => format!("{:?}", e.kind()),
                        Ok(Ok(_)) => unreachable!("matched above"),
                    };
                    tracing::warn!(
                        prefix = self.prefix.as_str(),
                        why = why.as_str(),
                        "the limiter store (Redis) is unreachable: using local limits until it is back"
                    );
                }
                None
            }
        }
    }

    /// Asks the store whether a call costing one request and `tokens` may go now, taking both
    /// if so.
    pub async fn acquire(&self, keys: &Keys, requests: Rate, tokens: Rate, units: u64) -> Verdict {
        if !self.usable() {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            return Verdict::Unavailable;
        }
        let mut invocation = self.acquire.prepare_invoke();
        invocation
            .key(&keys.requests)
            .key(&keys.tokens)
            .key(&keys.pause)
            .arg(requests.interval_us)
            .arg(requests.burst_us)
            .arg(tokens.interval_us)
            .arg(tokens.burst_us)
            .arg(units);
        match self.round_trip(invocation).await {
            Some(wait) if wait > 0 => Verdict::Wait(Duration::from_micros(wait as u64)),
            Some(_) => Verdict::Go,
            None => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                Verdict::Unavailable
            }
        }
    }

    /// Moves a token reservation by `delta_us` (negative: gives back), in the background.
    pub fn correct(self: &Arc<Self>, key: &str, delta_us: i64) {
        if delta_us == 0 || !self.up.load(Ordering::Relaxed) {
            return;
        }
        let store = self.clone();
        let key = key.to_owned();
        tokio::spawn(async move {
            let mut invocation = store.correct.prepare_invoke();
            invocation.key(&key).arg(delta_us);
            store.round_trip(invocation).await;
        });
    }

    /// Pauses the scope of `key` for every process for `pause` (a 429's `Retry-After`), in
    /// the background.
    pub fn pause(self: &Arc<Self>, key: &str, pause: Duration) {
        if pause.is_zero() || !self.usable() {
            return;
        }
        let store = self.clone();
        let key = key.to_owned();
        let ms = pause.as_millis().min(i64::MAX as u128) as i64;
        tokio::spawn(async move {
            let mut invocation = store.pause.prepare_invoke();
            invocation.key(&key).arg(ms);
            store.round_trip(invocation).await;
        });
    }
}

/// Checks a `store.redis` URL's shape without connecting.
pub fn check_url(url: &str) -> Result<(), &'static str> {
    if url.starts_with("rediss://") {
        // redis-rs speaks TLS only with a feature that brings a second TLS stack's glue; not
        // built in yet.
        return Err("must be a redis:// URL (rediss://, Redis over TLS, is not supported yet)");
    }
    let rest = url
        .strip_prefix("redis://")
        .ok_or("must be a redis:// URL")?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err("must name a host: redis://host:6379/0");
    }
    if let Some((_, port)) = host.rsplit_once(':').filter(|_| !host.ends_with(']')) {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err("has a port that is not a number from 1 to 65535");
        }
    }
    if let Some(db) = rest
        .split_once('/')
        .map(|(_, db)| db)
        .filter(|d| !d.is_empty())
    {
        if db.parse::<u32>().is_err() {
            return Err("has a database that is not a number (redis://host:6379/0)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_connecting() {
        for good in [
            "redis://127.0.0.1:6379/0",
            "redis://h",
            "redis://:secret@h:1/15",
            "redis://user:pw@h.example:6380",
            "redis://[::1]:6379/2",
        ] {
            assert_eq!(check_url(good), Ok(()), "{good}");
            assert!(Store::new(good, "p").is_ok(), "{good}");
        }
        for bad in [
            "http://h",
            "redis://",
            "redis://:6379",
            "redis://h:0",
            "redis://h:70000",
            "redis://h/db",
            "rediss://h:6380",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_scoped_and_debug_hides_the_url() {
        let store = Store::new("redis://:hunter2@h:6379/0", "svc").unwrap();
        assert_eq!(
            store.keys("azure"),
            Keys {
                requests: "svc:azure:rpm".into(),
                tokens: "svc:azure:tpm".into(),
                pause: "svc:azure:pause".into(),
            }
        );
        assert!(!format!("{store:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn a_store_that_is_down_answers_unavailable_within_the_deadline_then_is_left_alone() {
        // Nothing listens on port 1.
        let store = Store::new("redis://127.0.0.1:1/0", "p").unwrap();
        let keys = store.keys("x");
        let started = std::time::Instant::now();
        let verdict = store
            .acquire(&keys, Rate::default(), Rate::default(), 1)
            .await;
        assert_eq!(verdict, Verdict::Unavailable);
        assert!(started.elapsed() < ROUND_TRIP_DEADLINE + Duration::from_millis(200));
        assert_eq!(store.stats().errors, 1);
        // Within the next second nobody asks it: decided locally at once.
        let verdict = store
            .acquire(&keys, Rate::default(), Rate::default(), 1)
            .await;
        assert_eq!(verdict, Verdict::Unavailable);
        assert_eq!(
            store.stats(),
            StoreStats {
                up: false,
                errors: 1,
                fallbacks: 2
            }
        );
    }
}
