//! Starting a call on the JS thread: its future is polled once where `chat()` was called, and
//! moves onto the runtime only when something it waits for wakes it.
//!
//! Why: a call spawned from the JS thread lands in the runtime's shared queue, and the worker,
//! asleep in `epoll_wait`, has to be woken (an eventfd write, a context switch) just to check a
//! connection out and write the request, and then sleeps again until the answer comes. Polled
//! here instead, the first poll does that work on the JS thread (a free connection, a
//! non-blocking write) and stops at the read, with the socket registered in the runtime's
//! reactor. The worker then wakes once, when the answer arrives, and the waker moves the rest of
//! the future onto the worker's own queue: a sequential call costs one hand-off fewer. A call
//! that cannot start at once (no free connection, a new connection to open) is moved the same
//! way when the pool or the connect wakes it.
//!
//! The binding starts a call this way only when none other of its client is in flight (under load
//! the worker is awake anyway and writes many calls' requests in one turn). Measured with
//! `bench/` (S3, one call at a time, beside the build before): 135 → 114 µs of CPU per call in one
//! full run, 95 → 95 in another, 105 → 97 over 7 rounds; this host's noise is that large, the
//! syscalls saved (`strace`) are not.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};

use tokio::runtime::Handle;

type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where a future started on the caller's thread is.
enum Stage {
    /// Being polled on the caller's thread; `woken` if something woke it meanwhile.
    FirstPoll { woken: bool },
    /// Waiting, after its first poll, for the wake that moves it onto the runtime.
    Waiting(Work),
    /// On the runtime (or finished): later wakes of the first poll's waker are stale.
    Moved,
}

struct Trampoline {
    stage: Mutex<Stage>,
    runtime: Handle,
}

impl Trampoline {
    fn lock(&self) -> std::sync::MutexGuard<'_, Stage> {
        self.stage.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Wake for Trampoline {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let work = {
            let mut stage = self.lock();
            match std::mem::replace(&mut *stage, Stage::Moved) {
                Stage::FirstPoll { .. } => {
                    *stage = Stage::FirstPoll { woken: true };
                    None
                }
                Stage::Waiting(work) => Some(work),
                Stage::Moved => None,
            }
        };
        // Woken on a runtime worker (the reactor, a timer, another task), this lands in that
        // worker's own queue: no other thread is woken.
        if let Some(work) = work {
            drop(self.runtime.spawn(work));
        }
    }
}

thread_local! {
    /// While a first poll runs on this thread: what it deferred to its end ([`defer`]).
    static FIRST_POLL: RefCell<Option<Vec<Deferred>>> = const { RefCell::new(None) };
}

type Deferred = Box<dyn FnOnce()>;

/// Inside a first poll on the caller's thread, keeps `then` until that poll ends and returns
/// true; anywhere else returns false (and drops `then`).
///
/// For wakers of work that the first poll would otherwise hand to a worker at once: an HTTP/2
/// connection, woken when a stream's headers are queued, should not be polled on the worker
/// before the same poll has queued the body too, nor wake the worker at all when this thread can
/// flush both at the end of the poll.
pub fn defer(then: impl FnOnce() + 'static) -> bool {
    FIRST_POLL.with(|deferred| match deferred.borrow_mut().as_mut() {
        Some(list) => {
            list.push(Box::new(then));
            true
        }
        None => false,
    })
}

/// Ends the first poll when dropped (after it, or if it unwound): runs what it deferred, still
/// inside the runtime's context.
struct FirstPollEnds;

impl Drop for FirstPollEnds {
    fn drop(&mut self) {
        let deferred = FIRST_POLL.with(|deferred| deferred.borrow_mut().take());
        for then in deferred.into_iter().flatten() {
            then();
        }
    }
}

/// Runs `work` to completion: polled once now, on this thread and inside `runtime`'s context,
/// then on `runtime` from its first wake. `work` must not panic (callers catch unwinds inside
/// it).
///
/// Until that wake, the future is held by the wakers its first poll handed out (as a spawned
/// task is held by the runtime): whatever it waits for wakes it, or drops the waker, when it
/// ends (a socket closing, a timer, a cancelled call, a dropped sender).
pub fn spawn<F>(runtime: &Handle, work: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut work: Work = Box::pin(work);
    let trampoline = Arc::new(Trampoline {
        stage: Mutex::new(Stage::FirstPoll { woken: false }),
        runtime: runtime.clone(),
    });
    let waker = Waker::from(trampoline.clone());
    let polled = {
        let _context = runtime.enter();
        FIRST_POLL.with(|deferred| *deferred.borrow_mut() = Some(Vec::new()));
        let _ends = FirstPollEnds;
        work.as_mut().poll(&mut Context::from_waker(&waker))
    };
    if polled.is_ready() {
        *trampoline.lock() = Stage::Moved;
        return;
    }
    let mut stage = trampoline.lock();
    if matches!(*stage, Stage::FirstPoll { woken: true }) {
        *stage = Stage::Moved;
        drop(stage);
        drop(runtime.spawn(work));
    } else {
        *stage = Stage::Waiting(work);
    }
}

/// A runtime with one worker, for tests of futures started with [`spawn`] from a thread outside it.
#[cfg(test)]
pub(crate) fn test_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a test runtime")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread::ThreadId;
    use tokio::sync::oneshot;

    /// Runs `work` with `spawn` from this (non-runtime) thread; returns the threads it ran on
    /// before and after its await of `waiting`.
    fn threads_of(
        rt: &tokio::runtime::Runtime,
        waiting: impl Future<Output = ()> + Send + 'static,
    ) -> oneshot::Receiver<(ThreadId, ThreadId)> {
        let (done, threads) = oneshot::channel();
        spawn(rt.handle(), async move {
            let first = std::thread::current().id();
            waiting.await;
            let _ = done.send((first, std::thread::current().id()));
        });
        threads
    }

    #[test]
    fn the_first_poll_runs_here_and_the_rest_on_the_runtime() {
        let rt = test_runtime();
        let (wake, woken) = oneshot::channel::<()>();
        let threads = threads_of(&rt, async move {
            let _ = woken.await;
        });
        wake.send(()).unwrap();
        let (first, rest) = rt.block_on(threads).unwrap();
        assert_eq!(first, std::thread::current().id());
        assert_ne!(rest, first, "after its wake the future runs on a worker");
    }

    #[test]
    fn a_future_ready_at_once_completes_in_its_first_poll() {
        let rt = test_runtime();
        let mut threads = threads_of(&rt, async {});
        let (first, rest) = threads.try_recv().expect("done without the runtime");
        assert_eq!((first, rest), (std::thread::current().id(), first));
    }

    #[test]
    fn a_wake_during_the_first_poll_is_not_lost() {
        let rt = test_runtime();
        // Wakes itself while being polled, then waits: the first poll's wake must move it.
        let threads = threads_of(&rt, tokio::task::yield_now());
        let (first, rest) = rt.block_on(threads).unwrap();
        assert_eq!(first, std::thread::current().id());
        assert_ne!(rest, first);
    }

    #[test]
    fn a_future_whose_waker_is_dropped_is_freed() {
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let rt = test_runtime();
        let dropped = Arc::new(AtomicUsize::new(0));
        let (sender, receiver) = oneshot::channel::<()>();
        let counted = Counted(dropped.clone());
        spawn(rt.handle(), async move {
            let _held = counted;
            let _ = receiver.await;
        });
        assert_eq!(dropped.load(Ordering::SeqCst), 0, "waits for its sender");
        drop(sender); // wakes the receiver: the future moves to the runtime and ends
        rt.block_on(async {
            for _ in 0..100 {
                if dropped.load(Ordering::SeqCst) == 1 {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            panic!("the future was never freed");
        });
    }
}
