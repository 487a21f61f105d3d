//! An opt-in circuit breaker for one origin.
//!
//! Closed: attempts go through; `failureThreshold` consecutive retryable failures open it.
//! Open: attempts fail fast with `ERR_CIRCUIT_OPEN` for `resetTimeout`.
//! Half-open: after that, exactly one attempt (the probe) goes through while the others still fail
//! fast; its success closes the circuit, its failure opens it again for another `resetTimeout`.
//!
//! Only retryable failures (the server is down or overloaded) count. A non-retryable answer such
//! as a 400 proves the server is up, so it counts as a success; an aborted attempt counts as
//! nothing, and frees the probe slot.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// Whether an attempt may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed {
        probe: bool,
    },
    /// Fail fast; the circuit may let a probe through after this long.
    Rejected {
        retry_in: Duration,
    },
}

/// How an admitted attempt ended, as far as the breaker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    RetryableFailure,
    /// Cancelled before it said anything about the server.
    Abandoned,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: Mutex<State>,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn admit(&self, now: Instant) -> Admission {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Admission::Allowed { probe: false },
            State::Open { until } if now >= until => {
                *state = State::HalfOpen { probing: true };
                Admission::Allowed { probe: true }
            }
            State::Open { until } => Admission::Rejected {
                retry_in: until - now,
            },
            State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                Admission::Allowed { probe: true }
            }
            State::HalfOpen { probing: true } => Admission::Rejected {
                retry_in: Duration::ZERO,
            },
        }
    }

    pub fn record(&self, probe: bool, outcome: Outcome, now: Instant) {
        let mut state = self.lock();
        let open = State::Open {
            until: now + self.config.reset_timeout,
        };
        *state = match (*state, outcome) {
            (_, Outcome::Success) if probe || matches!(*state, State::Closed { .. }) => {
                State::Closed { failures: 0 }
            }
            (State::HalfOpen { .. }, Outcome::RetryableFailure) if probe => open,
            (State::HalfOpen { .. }, Outcome::Abandoned) if probe => {
                State::HalfOpen { probing: false }
            }
            (State::Closed { failures }, Outcome::RetryableFailure) => {
                if failures + 1 >= self.config.failure_threshold {
                    open
                } else {
                    State::Closed {
                        failures: failures + 1,
                    }
                }
            }
            // Late results of attempts admitted before the circuit opened change nothing.
            (current, _) => current,
        };
    }

    /// Whether an attempt would be let through now, without taking the probe slot: what routing
    /// asks before it picks an upstream.
    pub fn available(&self, now: Instant) -> bool {
        match *self.lock() {
            State::Closed { .. } | State::HalfOpen { probing: false } => true,
            State::Open { until } => now >= until,
            State::HalfOpen { probing: true } => false,
        }
    }

    /// Opens the circuit for at least `pause` (a 429's `Retry-After`): the server said when to
    /// come back, which outranks the failure count. A longer opening already set is kept.
    pub fn pause(&self, pause: Duration, now: Instant) {
        let mut state = self.lock();
        let until = now + pause;
        *state = match *state {
            State::Open { until: already } if already >= until => State::Open { until: already },
            _ => State::Open { until },
        };
    }

    /// `closed`, `open` or `half-open`, for `stats()`.
    pub fn state_name(&self, now: Instant) -> &'static str {
        match *self.lock() {
            State::Closed { .. } => "closed",
            State::Open { until } if now < until => "open",
            State::Open { .. } | State::HalfOpen { .. } => "half-open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            reset_timeout: Duration::from_secs(10),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_half_opens_and_closes() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(b.admit(t0), Admission::Allowed { probe: false });
            b.record(false, Outcome::RetryableFailure, t0);
        }
        assert_eq!(b.state_name(t0), "closed");
        b.record(false, Outcome::RetryableFailure, t0);
        assert_eq!(b.state_name(t0), "open");
        assert_eq!(
            b.admit(t0 + Duration::from_secs(4)),
            Admission::Rejected {
                retry_in: Duration::from_secs(6)
            }
        );
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.state_name(later), "half-open");
        assert_eq!(b.admit(later), Admission::Allowed { probe: true });
        // Only one probe at a time.
        assert!(matches!(b.admit(later), Admission::Rejected { .. }));
        b.record(true, Outcome::Success, later);
        assert_eq!(b.state_name(later), "closed");
        assert_eq!(b.admit(later), Admission::Allowed { probe: false });
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record(false, Outcome::RetryableFailure, t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.admit(t1), Admission::Allowed { probe: true });
        b.record(true, Outcome::RetryableFailure, t1);
        assert_eq!(b.state_name(t1), "open");
        assert!(matches!(
            b.admit(t1 + Duration::from_secs(9)),
            Admission::Rejected { .. }
        ));
        assert_eq!(
            b.admit(t1 + Duration::from_secs(10)),
            Admission::Allowed { probe: true }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count_and_an_abandoned_probe_frees_the_slot() {
        let b = breaker();
        let t0 = Instant::now();
        b.record(false, Outcome::RetryableFailure, t0);
        b.record(false, Outcome::RetryableFailure, t0);
        b.record(false, Outcome::Success, t0);
        b.record(false, Outcome::RetryableFailure, t0);
        b.record(false, Outcome::RetryableFailure, t0);
        assert_eq!(b.state_name(t0), "closed");
        b.record(false, Outcome::RetryableFailure, t0);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.admit(t1), Admission::Allowed { probe: true });
        b.record(true, Outcome::Abandoned, t1);
        assert_eq!(b.admit(t1), Admission::Allowed { probe: true });
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_opens_for_at_least_its_length_and_availability_does_not_take_the_probe() {
        let b = breaker();
        let now = Instant::now();
        assert!(b.available(now));
        b.pause(Duration::from_secs(10), now);
        assert!(!b.available(now + Duration::from_secs(9)));
        // A shorter pause never shortens a longer one.
        b.pause(Duration::from_secs(1), now);
        assert!(!b.available(now + Duration::from_secs(5)));
        let later = now + Duration::from_secs(10);
        assert!(b.available(later));
        assert!(b.available(later), "asking twice takes no probe slot");
        assert_eq!(b.admit(later), Admission::Allowed { probe: true });
        assert!(!b.available(later), "the probe is out");
    }
}
