//! One delivery channel per client from the runtime's threads to JS.
//!
//! napi's per-call promises create a threadsafe function for every call (and spawn a second task
//! to watch for panics); under load that is most of a request's CPU. Here every result is posted
//! to one queue under an id the JS side chose, and one threadsafe-function call drains the whole
//! queue: when results pile up (many concurrent calls, many stream chunks), they cross into JS
//! together, in one wake-up. Stream payloads that pile up for the same id are joined into one
//! string (U+001E between them, which no payload contains), and a text stream's pieces into one
//! text: one string to create in JS, and one to free here, instead of one per chunk. (Freeing
//! on the JS thread what a runtime thread allocated is one of glibc's slow paths.)
//!
//! The threadsafe function is weak (it does not keep Node alive by itself); `index.js` keeps the
//! event loop alive while it has calls in flight.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::{Buffer, FnArgs, Function, ToNapiValue};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{sys, Result, Status};

use super::outcome::{ErrorInfo, FetchHead, ObserveEvent};

/// What one id receives. In JS: a string (a chat body, stream payloads joined by U+001E, or a
/// text stream's text), a number (a stream signal, see [`Signal`]) or an object (an `ErrorInfo`).
pub enum Post {
    Body(String),
    /// Stream payloads, joined by [`PAYLOAD_SEPARATOR`].
    Payloads(String),
    /// A text stream's text.
    Text(String),
    Signal(Signal),
    Error(Box<ErrorInfo>),
    /// The head of a `fetch` response (an object with `status`).
    Head(FetchHead),
    /// A chunk of a `fetch` body (a Buffer).
    Bytes(Vec<u8>),
    /// An event of a watched call's HTTP request (an object with `event`).
    Observe(Box<ObserveEvent>),
}

/// Stream signals, as small numbers (the cheapest values to create in JS).
#[derive(Clone, Copy)]
pub enum Signal {
    /// The stream ended complete (or its consumer left).
    Done = 0,
    /// The reader waits for acknowledgements.
    Stalled = 1,
}

impl ToNapiValue for Post {
    #[allow(unsafe_code)] // the trait's contract: napi calls it with a live env on the JS thread
    unsafe fn to_napi_value(env: sys::napi_env, value: Self) -> Result<sys::napi_value> {
        // SAFETY: forwarded unchanged to the inner values' conversions, under the same contract.
        unsafe {
            match value {
                Post::Body(text) | Post::Payloads(text) | Post::Text(text) => {
                    String::to_napi_value(env, text)
                }
                Post::Signal(signal) => u32::to_napi_value(env, signal as u32),
                Post::Error(info) => ErrorInfo::to_napi_value(env, *info),
                Post::Head(head) => FetchHead::to_napi_value(env, head),
                Post::Bytes(bytes) => Buffer::to_napi_value(env, Buffer::from(bytes)),
                Post::Observe(event) => ObserveEvent::to_napi_value(env, *event),
            }
        }
    }
}

type Args = FnArgs<(Vec<u32>, Vec<Post>)>;

/// The JS callback that receives deliveries: `deliver(ids, values)`.
pub type DeliverFn<'scope> = Function<'scope, Args, ()>;
type Deliver = ThreadsafeFunction<(), (), Args, Status, false, true>;

/// Between two stream payloads in one delivery (`index.js` splits on it).
pub const PAYLOAD_SEPARATOR: &str = "\u{1e}";

#[derive(Default)]
struct Queue {
    ids: Vec<u32>,
    deliveries: Vec<Post>,
    /// Where each id's newest payloads or text sit in `deliveries`, to merge later ones into.
    open_at: HashMap<u32, usize>,
    wake: Wake,
}

impl Queue {
    /// Appends to the id's open delivery of the same kind, if there is one.
    fn merge(&mut self, id: u32, delivery: &Post) -> bool {
        let Some(&at) = self.open_at.get(&id) else {
            return false;
        };
        match (&mut self.deliveries[at], delivery) {
            (Post::Payloads(joined), Post::Payloads(more)) => {
                joined.push_str(PAYLOAD_SEPARATOR);
                joined.push_str(more);
                true
            }
            (Post::Text(text), Post::Text(more)) => {
                text.push_str(more);
                true
            }
            _ => false,
        }
    }
}

/// Whether a delivery is on its way to the JS thread.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// Nothing queued.
    #[default]
    Idle,
    /// Queued by a runtime worker, which wakes JS when it runs out of work (or at
    /// [`WAKE_AT_ONCE`] queued results).
    Deferred,
    /// JS was called and will drain the queue.
    Called,
}

/// A worker busy with many streams wakes JS at this many queued ids rather than wait to idle.
const WAKE_AT_ONCE: usize = 64;

thread_local! {
    /// Set on runtime workers (the first time they idle): their results may wait for the idle.
    static ON_WORKER: Cell<bool> = const { Cell::new(false) };
    /// The mailboxes this worker queued results in without waking JS yet.
    static DEFERRED: RefCell<Vec<Arc<Mailbox>>> = const { RefCell::new(Vec::new()) };
}

/// Runs on a runtime worker about to idle: wakes JS for what this worker queued.
///
/// Why wait for the idle: a worker reading many sockets posts a result for each, and the JS
/// thread, idle on its own core, would wake at the first one and drain a queue of one or two,
/// then wake again: a wake-up (event-loop turn, threadsafe-function call, arrays to build) per
/// chunk or two. Waiting until the worker has nothing left to do sends all that one turn of the
/// reactor produced in one wake-up, and costs a lone call nothing: its worker idles right after.
pub fn wake_deferred() {
    ON_WORKER.with(|on| on.set(true));
    let deferred = DEFERRED.with(|list| std::mem::take(&mut *list.borrow_mut()));
    for mailbox in deferred {
        mailbox.wake_if_deferred();
    }
}

pub struct Mailbox {
    queue: Arc<Mutex<Queue>>,
    deliver: Deliver,
}

impl Mailbox {
    /// `deliver(ids, values)` is called on the JS thread with everything posted since last time.
    pub fn new(deliver: DeliverFn<'_>) -> Result<Arc<Self>> {
        let queue = Arc::new(Mutex::new(Queue::default()));
        let drained = queue.clone();
        let deliver = deliver
            .build_threadsafe_function::<()>()
            .weak::<true>()
            .callee_handled::<false>()
            .build_callback(move |_ctx| {
                let mut queue = drained.lock().unwrap_or_else(|e| e.into_inner());
                let ids = std::mem::take(&mut queue.ids);
                let deliveries = std::mem::take(&mut queue.deliveries);
                queue.open_at.clear();
                queue.wake = Wake::Idle;
                Ok(FnArgs::from((ids, deliveries)))
            })?;
        Ok(Arc::new(Mailbox { queue, deliver }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a result, and wakes JS unless a wake-up is on its way: from a runtime worker, when
    /// the worker idles (see [`wake_deferred`]); from any other thread, at once. Returns true
    /// when the result was merged into one queued before (payloads or text for the same id, with
    /// nothing else for it in between).
    pub fn post(self: &Arc<Self>, id: u32, delivery: Post) -> bool {
        let wake_now = {
            let mut queue = self.lock();
            if queue.merge(id, &delivery) {
                return true;
            }
            let at = queue.deliveries.len();
            if matches!(delivery, Post::Payloads(_) | Post::Text(_)) {
                queue.open_at.insert(id, at);
            } else {
                // Nothing may be merged into payloads queued before a signal or an error.
                queue.open_at.remove(&id);
            }
            queue.ids.push(id);
            queue.deliveries.push(delivery);
            match queue.wake {
                Wake::Idle if ON_WORKER.with(Cell::get) => {
                    queue.wake = Wake::Deferred;
                    DEFERRED.with(|list| list.borrow_mut().push(self.clone()));
                    false
                }
                Wake::Deferred if queue.ids.len() < WAKE_AT_ONCE => false,
                Wake::Idle | Wake::Deferred => {
                    queue.wake = Wake::Called;
                    true
                }
                Wake::Called => false,
            }
        };
        if wake_now {
            self.call_js();
        }
        false
    }

    /// Wakes JS if the queue still waits for its worker to idle (not already called or drained).
    fn wake_if_deferred(&self) {
        let wake = {
            let mut queue = self.lock();
            let wake = queue.wake == Wake::Deferred;
            if wake {
                queue.wake = Wake::Called;
            }
            wake
        };
        if wake {
            self.call_js();
        }
    }

    fn call_js(&self) {
        self.deliver
            .call((), ThreadsafeFunctionCallMode::NonBlocking);
    }
}
