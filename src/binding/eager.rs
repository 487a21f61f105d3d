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
//! Measured with `bench/` (S3, one call at a time): about a fifth less CPU per call; see the
//! README's performance section.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
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

/// The runtime napi runs futures on.
fn runtime() -> &'static Handle {
    static RUNTIME: OnceLock<Handle> = OnceLock::new();
    RUNTIME.get_or_init(|| napi::bindgen_prelude::within_runtime_if_available(Handle::current))
}

/// Runs `work` to completion: polled once now, on this thread and inside the runtime's context,
/// then on the runtime from its first wake. `work` must not panic (callers catch unwinds
/// inside it).
pub fn spawn_eager<F>(work: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let runtime = runtime();
    let mut work: Work = Box::pin(work);
    let trampoline = Arc::new(Trampoline {
        stage: Mutex::new(Stage::FirstPoll { woken: false }),
        runtime: runtime.clone(),
    });
    let waker = Waker::from(trampoline.clone());
    let polled = {
        let _context = runtime.enter();
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
