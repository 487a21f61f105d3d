//! Client-side limits (`limits: { rpm, tpm, concurrency }`): a call reserves one request, its
//! estimated tokens and a concurrency slot before it is sent, waiting its turn (FIFO) when a
//! limit is reached, at most `limitTimeout`. Requests and tokens follow GCRA (a token bucket kept
//! as one "theoretical arrival time"): a rate of `n` per minute allows a burst of one second's
//! worth (at least one), then one every `60 s / n`. A call's token reservation is corrected by
//! what it used, once known.
//!
//! Pure bookkeeping under one lock; time comes from tokio (paused in tests).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::LimitsConfig;
use crate::error::{Error, Kind};
use crate::store::{Keys, Rate, Store, Verdict};

/// One GCRA bucket.
#[derive(Debug)]
struct Gcra {
    /// When the bucket would be empty again if nothing else arrived.
    tat: Instant,
    /// Time one unit costs: 60 s / rate.
    interval: Duration,
    /// How far ahead of now the bucket may run: the burst.
    burst: Duration,
}

impl Gcra {
    fn per_minute(rate: u32, now: Instant) -> Gcra {
        let interval = Duration::from_secs(60) / rate.max(1);
        // One second's worth at once, at least one unit.
        let burst = interval * (rate / 60).max(1);
        Gcra {
            tat: now,
            interval,
            burst,
        }
    }

    /// When `units` could be taken (`None`: now). A cost larger than the whole burst passes
    /// alone once the bucket is full, so that it is never refused for ever.
    fn ready_at(&self, units: u64, now: Instant) -> Option<Instant> {
        let start = self.tat.max(now);
        let cost = self
            .interval
            .saturating_mul(units.min(u32::MAX as u64) as u32);
        if start + cost <= now + self.burst || start == now {
            None
        } else {
            Some(start + cost - self.burst)
        }
    }

    fn take(&mut self, units: u64, now: Instant) {
        let cost = self
            .interval
            .saturating_mul(units.min(u32::MAX as u64) as u32);
        self.tat = self.tat.max(now) + cost;
    }

    /// Gives back (or charges) the difference between the reserved and the used units.
    fn correct(&mut self, reserved: u64, used: u64, now: Instant) {
        if used > reserved {
            self.take(used - reserved, now);
        } else {
            let refund = self
                .interval
                .saturating_mul((reserved - used).min(u32::MAX as u64) as u32);
            self.tat = self.tat.checked_sub(refund).unwrap_or(now).max(now);
        }
    }
}

#[derive(Debug)]
struct State {
    requests: Option<Gcra>,
    tokens: Option<Gcra>,
    concurrency: Option<u32>,
    running: u32,
    /// Waiting calls in arrival order (their ids).
    queue: VecDeque<u64>,
    next_id: u64,
    /// Calls that had to wait, for metrics.
    waited: u64,
}

/// The limiter of one client.
#[derive(Debug)]
pub struct Limiter {
    state: Mutex<State>,
    changed: Notify,
    timeout: Option<Duration>,
    /// The fleet's shared state (`store`), when configured: requests and tokens are decided
    /// there, concurrency stays here (a slot is a process's own).
    shared: Option<Shared>,
}

#[derive(Debug)]
struct Shared {
    store: std::sync::Arc<Store>,
    keys: Keys,
    requests: Rate,
    tokens: Rate,
    /// One call of this process asks the store at a time, in arrival order (tokio's mutex is
    /// fair), so that waiting stays FIFO within the process.
    turn: tokio::sync::Mutex<()>,
    /// Calls waiting on the store now.
    waiting: std::sync::atomic::AtomicUsize,
}

/// A granted call: gives its concurrency slot back when dropped.
#[derive(Debug)]
pub struct Permit<'a> {
    limiter: &'a Limiter,
    tokens: u64,
    /// Granted by the shared store: its reservation is corrected there.
    shared: bool,
}

/// GCRA's numbers for `rate` per minute, as the store's script takes them.
fn rate(per_minute: Option<u32>) -> Rate {
    match per_minute {
        None => Rate::default(),
        Some(n) => {
            let interval = Duration::from_secs(60) / n.max(1);
            Rate {
                interval_us: interval.as_micros() as u64,
                burst_us: (interval * (n / 60).max(1)).as_micros() as u64,
            }
        }
    }
}

impl Limiter {
    pub fn new(config: &LimitsConfig) -> Limiter {
        let now = Instant::now();
        Limiter {
            state: Mutex::new(State {
                requests: config.rpm.map(|r| Gcra::per_minute(r, now)),
                tokens: config.tpm.map(|t| Gcra::per_minute(t, now)),
                concurrency: config.concurrency,
                running: 0,
                queue: VecDeque::new(),
                next_id: 0,
                waited: 0,
            }),
            changed: Notify::new(),
            timeout: config.timeout,
            shared: None,
        }
    }

    /// A limiter whose request and token limits (and the provider pauses of `scope`) live in
    /// the shared `store`, with this process's local limiter as the fallback while it is down.
    pub fn shared(config: &LimitsConfig, store: std::sync::Arc<Store>, scope: &str) -> Limiter {
        let keys = store.keys(scope);
        Limiter {
            shared: Some(Shared {
                keys,
                requests: rate(config.rpm),
                tokens: rate(config.tpm),
                store,
                turn: tokio::sync::Mutex::new(()),
                waiting: Default::default(),
            }),
            ..Limiter::new(config)
        }
    }

    /// The shared store and this limiter's pause key, when there is a store.
    pub fn store(&self) -> Option<(&std::sync::Arc<Store>, &str)> {
        self.shared
            .as_ref()
            .map(|s| (&s.store, s.keys.pause.as_str()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls waiting for a limit now, and calls that ever had to wait.
    pub fn waiting(&self) -> (usize, u64) {
        let state = self.lock();
        let shared = self
            .shared
            .as_ref()
            .map_or(0, |s| s.waiting.load(std::sync::atomic::Ordering::Relaxed));
        (state.queue.len() + shared, state.waited)
    }

    /// Waits (FIFO, at most `limitTimeout`) until a call costing `tokens` may go.
    pub async fn acquire(&self, tokens: u64, origin: &str) -> Result<Permit<'_>, Error> {
        let Some(shared) = &self.shared else {
            return self.acquire_local(tokens, origin, true).await;
        };
        let started = Instant::now();
        // Concurrency is this process's own; requests and tokens are the fleet's.
        let mut permit = self.acquire_local(tokens, origin, false).await?;
        let deadline = self.timeout.map(|t| started + t);
        let timed_out = || {
            Error::timed_out(
                Kind::LimitTimeout,
                origin,
                "waiting for a shared limit (limits, store)",
                self.timeout.unwrap_or_default(),
            )
        };
        let turn = match deadline {
            None => shared.turn.lock().await,
            Some(at) => tokio::time::timeout_at(at, shared.turn.lock())
                .await
                .map_err(|_| timed_out())?,
        };
        let mut waited = false;
        loop {
            let verdict = shared
                .store
                .acquire(&shared.keys, shared.requests, shared.tokens, tokens)
                .await;
            match verdict {
                Verdict::Go => {
                    if waited {
                        shared
                            .waiting
                            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    permit.shared = true;
                    return Ok(permit);
                }
                Verdict::Unavailable => {
                    if waited {
                        shared
                            .waiting
                            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    drop(turn);
                    drop(permit);
                    return self.acquire_local(tokens, origin, true).await;
                }
                Verdict::Wait(wait) => {
                    if !waited {
                        waited = true;
                        self.lock().waited += 1;
                        shared
                            .waiting
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let wake = Instant::now() + wait;
                    if deadline.is_some_and(|d| wake > d) {
                        shared
                            .waiting
                            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                        return Err(timed_out());
                    }
                    tokio::time::sleep_until(wake).await;
                }
            }
        }
    }

    /// The local limiter: concurrency, and requests and tokens when `rates`.
    async fn acquire_local(
        &self,
        tokens: u64,
        origin: &str,
        rates: bool,
    ) -> Result<Permit<'_>, Error> {
        let id = {
            let mut state = self.lock();
            if state.queue.is_empty() && Self::blocked(&state, tokens, rates).is_none() {
                Self::grant(&mut state, tokens, rates);
                return Ok(Permit {
                    limiter: self,
                    tokens,
                    shared: false,
                });
            }
            let id = state.next_id;
            state.next_id += 1;
            state.queue.push_back(id);
            state.waited += 1;
            id
        };
        let mut queued = Queued { limiter: self, id };
        let waiting = async {
            loop {
                let changed = self.changed.notified();
                let wake_at = {
                    let mut state = self.lock();
                    if state.queue.front() == Some(&id) {
                        match Self::blocked(&state, tokens, rates) {
                            None => {
                                state.queue.pop_front();
                                Self::grant(&mut state, tokens, rates);
                                return;
                            }
                            Some(at) => at,
                        }
                    } else {
                        None
                    }
                };
                match wake_at {
                    Some(at) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(at) => {}
                            _ = changed => {}
                        }
                    }
                    None => changed.await,
                }
            }
        };
        let granted = match self.timeout {
            None => {
                waiting.await;
                true
            }
            Some(limit) => tokio::time::timeout(limit, waiting).await.is_ok(),
        };
        if !granted {
            return Err(Error::timed_out(
                Kind::LimitTimeout,
                origin,
                "waiting for a client-side limit (limits)",
                self.timeout.unwrap_or_default(),
            ));
        }
        queued.id = u64::MAX; // granted: nothing to take out of the queue
        drop(queued);
        // The next in line may be able to go too.
        self.changed.notify_waiters();
        Ok(Permit {
            limiter: self,
            tokens,
            shared: false,
        })
    }

    /// `None` when a call costing `tokens` may go now; else when to look again (`Some(None)`:
    /// when something changes, a concurrency slot). Requests and tokens count only with `rates`.
    fn blocked(state: &State, tokens: u64, rates: bool) -> Option<Option<Instant>> {
        let now = Instant::now();
        if state.concurrency.is_some_and(|max| state.running >= max) {
            return Some(None);
        }
        if !rates {
            return None;
        }
        let at = [
            state.requests.as_ref().and_then(|g| g.ready_at(1, now)),
            state.tokens.as_ref().and_then(|g| g.ready_at(tokens, now)),
        ]
        .into_iter()
        .flatten()
        .max();
        at.map(Some)
    }

    fn grant(state: &mut State, tokens: u64, rates: bool) {
        let now = Instant::now();
        if rates {
            if let Some(g) = &mut state.requests {
                g.take(1, now);
            }
            if let Some(g) = &mut state.tokens {
                g.take(tokens, now);
            }
        }
        state.running += 1;
    }
}

impl Limiter {
    /// Runs `work` once a permit reserving `tokens` is granted; `used` reads what a successful
    /// call used, to correct the reservation.
    pub async fn around<T>(
        &self,
        tokens: u64,
        origin: &str,
        work: impl std::future::Future<Output = Result<T, Error>>,
        used: impl FnOnce(&T) -> Option<u64>,
    ) -> Result<T, Error> {
        let permit = self.acquire(tokens, origin).await?;
        let result = work.await;
        if let Ok(value) = &result {
            if let Some(used) = used(value) {
                permit.settle(used);
            }
        }
        result
    }

    /// Whether tokens are limited (only then is a body's estimate worth computing).
    pub fn counts_tokens(&self) -> bool {
        self.lock().tokens.is_some()
    }
}

impl Permit<'_> {
    /// The call used `used` tokens (it reserved its estimate).
    pub fn settle(&self, used: u64) {
        if let Some(shared) = self.limiter.shared.as_ref().filter(|_| self.shared) {
            if shared.tokens.interval_us > 0 {
                let delta = used as i64 - self.tokens as i64;
                let delta_us = delta.saturating_mul(shared.tokens.interval_us as i64);
                shared.store.correct(&shared.keys.tokens, delta_us);
            }
            return;
        }
        let mut state = self.limiter.lock();
        if let Some(g) = &mut state.tokens {
            g.correct(self.tokens, used, Instant::now());
        }
        drop(state);
        self.limiter.changed.notify_waiters();
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.lock().running -= 1;
        self.limiter.changed.notify_waiters();
    }
}

/// A place in the queue, taken out if the waiting call is dropped (aborted, timed out).
struct Queued<'a> {
    limiter: &'a Limiter,
    id: u64,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.id != u64::MAX {
            let mut state = self.limiter.lock();
            state.queue.retain(|&i| i != self.id);
            drop(state);
            self.limiter.changed.notify_waiters();
        }
    }
}

/// The token estimate of a request body: its characters ÷ 4 plus its `max_tokens` (or
/// `max_completion_tokens`, `max_output_tokens`). One scan of the body; characters are counted
/// as the UTF-8 bytes that start one.
pub fn estimate_tokens(body: &[u8]) -> u64 {
    let chars = body.iter().filter(|&&b| (b & 0xC0) != 0x80).count() as u64;
    let max = crate::payload::request_facts(body).max_tokens.unwrap_or(0);
    chars / 4 + max
}

/// `usage.total_tokens` of an answer, when it has one.
pub fn used_tokens(body: &str) -> Option<u64> {
    crate::payload::inspect(body).ok()?.total_tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rpm: Option<u32>, tpm: Option<u32>, concurrency: Option<u32>) -> Limiter {
        Limiter::new(&LimitsConfig {
            rpm,
            tpm,
            concurrency,
            timeout: Some(Duration::from_secs(3600)),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn rpm_allows_one_second_of_burst_then_paces() {
        let l = limiter(Some(600), None, None);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..30 {
            drop(l.acquire(0, "o").await.unwrap());
            times.push(start.elapsed());
        }
        // 10 at once (one second of 600/min), then one every 100 ms.
        assert!(times[..10].iter().all(|t| t.is_zero()), "{times:?}");
        assert_eq!(times[10], Duration::from_millis(100));
        assert_eq!(times[29], Duration::from_millis(2000));
    }

    #[tokio::test(start_paused = true)]
    async fn tpm_reserves_estimates_and_corrects_them() {
        let l = limiter(None, Some(6000), None); // 100 tokens per second
        let p = l.acquire(100, "o").await.unwrap();
        // The reservation used the second's budget: the next 100 wait a second…
        p.settle(10); // …unless the call used only 10.
        drop(p);
        let start = Instant::now();
        drop(l.acquire(90, "o").await.unwrap());
        assert!(
            start.elapsed() < Duration::from_millis(20),
            "{:?}",
            start.elapsed()
        );
        let start = Instant::now();
        drop(l.acquire(100, "o").await.unwrap());
        assert!(start.elapsed() >= Duration::from_millis(990));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_waits_in_order_and_a_timeout_leaves_the_queue() {
        let l = std::sync::Arc::new(limiter(None, None, Some(1)));
        let first = l.acquire(0, "o").await.unwrap();
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (l, order) = (l.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let p = l.acquire(0, "o").await.unwrap();
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(p);
            }));
            tokio::task::yield_now().await;
        }
        assert_eq!(l.waiting().0, 3);
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);

        let short = Limiter::new(&LimitsConfig {
            rpm: None,
            tpm: None,
            concurrency: Some(1),
            timeout: Some(Duration::from_millis(50)),
        });
        let held = short.acquire(0, "o").await.unwrap();
        let err = short.acquire(0, "http://o").await.unwrap_err();
        assert_eq!(err.code(), "ERR_LIMIT_TIMEOUT");
        assert_eq!(short.waiting().0, 0);
        drop(held);
        assert!(short.acquire(0, "o").await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cost_over_the_whole_burst_still_passes_alone() {
        let l = limiter(None, Some(60), None); // 1 token per second
        assert!(l.acquire(10_000, "o").await.is_ok());
    }

    #[test]
    fn estimates() {
        let body =
            br#"{"model":"m","max_tokens":50,"messages":[{"role":"user","content":"hello"}]}"#;
        assert_eq!(estimate_tokens(body), body.len() as u64 / 4 + 50);
        assert_eq!(estimate_tokens(b"not json"), 2);
        assert_eq!(used_tokens(r#"{"usage":{"total_tokens":42}}"#), Some(42));
        assert_eq!(used_tokens("{}"), None);
    }
}
