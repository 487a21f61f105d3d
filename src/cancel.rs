//! Waiting on a `CancellationToken` for the price of an atomic load per poll.
//!
//! tokio-util's `cancelled()` future locks the token's mutex and then the notifier's on every
//! poll. A stream's reader task is polled once per chunk and waits on three tokens (the abort
//! signal, the client's shutdown, the consumer's close): six lock round-trips per chunk, a few
//! per cent of a stream's CPU. [`cancelled`] polls tokio-util's future only when it was woken
//! (through a waker of ours that raises a flag first); the polls in between read the flag.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// A call's abort token: the caller's signal when it gave one. Calls without one (most) carry
/// no token and wait on nothing for it.
pub type Abort = Option<CancellationToken>;

/// Ready once `abort` is cancelled; never without one.
pub async fn aborted(abort: Option<&CancellationToken>) {
    match abort {
        Some(token) => cancelled(token).await,
        None => std::future::pending().await,
    }
}

/// Ready once `token` is cancelled, as `token.cancelled()`.
pub fn cancelled(token: &CancellationToken) -> Cancelled<'_> {
    Cancelled {
        token,
        waiting: None,
        signal: Arc::new(Signal::default()),
        task: None,
    }
}

pub struct Cancelled<'a> {
    token: &'a CancellationToken,
    /// tokio-util's future, once first polled (with the signal's waker).
    waiting: Option<Pin<Box<WaitForCancellationFuture<'a>>>>,
    signal: Arc<Signal>,
    /// The waker last handed to the signal: replaced only when the task's waker changes.
    task: Option<Waker>,
}

/// Raised when the token's future is woken; then wakes the task.
#[derive(Default)]
struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Future for Cancelled<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if !this.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            this.signal.task.register(cx.waker());
            this.task = Some(cx.waker().clone());
        }
        // Nothing woke the token's future since it was last polled: still pending.
        if this.waiting.is_some() && !this.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let token = this.token;
        let waiting = this
            .waiting
            .get_or_insert_with(|| Box::pin(token.cancelled()));
        let waker = Waker::from(this.signal.clone());
        waiting.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_when_cancelled_before_or_while_waiting() {
        let token = CancellationToken::new();
        token.cancel();
        cancelled(&token).await;

        let token = CancellationToken::new();
        let waiting = tokio::spawn({
            let token = token.clone();
            async move { cancelled(&token).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        token.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken by the cancel")
            .unwrap();
    }

    #[tokio::test]
    async fn pending_polls_in_between_do_not_lose_the_cancel() {
        let token = CancellationToken::new();
        let mut future = std::pin::pin!(cancelled(&token));
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..3 {
            assert!(future.as_mut().poll(&mut cx).is_pending());
        }
        token.cancel();
        assert!(future.as_mut().poll(&mut cx).is_ready());
    }
}
