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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::{Buffer, FnArgs, Function, ToNapiValue};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{sys, Result, Status};

use super::outcome::{ErrorInfo, ResponseHead};

/// What one id receives. In JS: a string (a chat body, stream payloads joined by U+001E, or a
/// text stream's text), a number (a stream signal, see [`Signal`]) or an object (an `ErrorInfo`).
pub enum Delivery {
    Body(String),
    /// Stream payloads, joined by [`PAYLOAD_SEPARATOR`].
    Payloads(String),
    /// A text stream's text.
    Text(String),
    Signal(Signal),
    Error(Box<ErrorInfo>),
    /// The head of a `fetch` response (an object with `status`).
    Head(ResponseHead),
    /// A chunk of a `fetch` body (a Buffer).
    Bytes(Vec<u8>),
}

/// Stream signals, as small numbers (the cheapest values to create in JS).
#[derive(Clone, Copy)]
pub enum Signal {
    /// The stream ended complete (or its consumer left).
    Done = 0,
    /// The reader waits for acknowledgements.
    Stalled = 1,
}

impl ToNapiValue for Delivery {
    #[allow(unsafe_code)] // the trait's contract: napi calls it with a live env on the JS thread
    unsafe fn to_napi_value(env: sys::napi_env, value: Self) -> Result<sys::napi_value> {
        // SAFETY: forwarded unchanged to the inner values' conversions, under the same contract.
        unsafe {
            match value {
                Delivery::Body(text) | Delivery::Payloads(text) | Delivery::Text(text) => {
                    String::to_napi_value(env, text)
                }
                Delivery::Signal(signal) => u32::to_napi_value(env, signal as u32),
                Delivery::Error(info) => ErrorInfo::to_napi_value(env, *info),
                Delivery::Head(head) => ResponseHead::to_napi_value(env, head),
                Delivery::Bytes(bytes) => Buffer::to_napi_value(env, Buffer::from(bytes)),
            }
        }
    }
}

type Args = FnArgs<(Vec<u32>, Vec<Delivery>)>;

/// The JS callback that receives deliveries: `deliver(ids, values)`.
pub type DeliverFn<'scope> = Function<'scope, Args, ()>;
type Deliver = ThreadsafeFunction<(), (), Args, Status, false, true>;

/// Between two stream payloads in one delivery (`index.js` splits on it).
pub const PAYLOAD_SEPARATOR: char = '\u{1e}';

#[derive(Default)]
struct Queue {
    ids: Vec<u32>,
    deliveries: Vec<Delivery>,
    /// Where each id's newest payloads or text sit in `deliveries`, to merge later ones into.
    open_at: HashMap<u32, usize>,
}

impl Queue {
    /// Appends to the id's open delivery of the same kind, if there is one.
    fn merge(&mut self, id: u32, delivery: &Delivery) -> bool {
        let Some(&at) = self.open_at.get(&id) else {
            return false;
        };
        match (&mut self.deliveries[at], delivery) {
            (Delivery::Payloads(joined), Delivery::Payloads(more)) => {
                joined.push(PAYLOAD_SEPARATOR);
                joined.push_str(more);
                true
            }
            (Delivery::Text(text), Delivery::Text(more)) => {
                text.push_str(more);
                true
            }
            _ => false,
        }
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
                let taken = std::mem::take(&mut *queue);
                Ok(FnArgs::from((taken.ids, taken.deliveries)))
            })?;
        Ok(Arc::new(Mailbox { queue, deliver }))
    }

    /// Queues a result; the first result into an empty queue schedules one delivery. Returns
    /// true when the result was merged into one queued before (payloads or text for the same
    /// id, with nothing else for it in between).
    pub fn post(&self, id: u32, delivery: Delivery) -> bool {
        let first = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if queue.merge(id, &delivery) {
                return true;
            }
            let at = queue.deliveries.len();
            if matches!(delivery, Delivery::Payloads(_) | Delivery::Text(_)) {
                queue.open_at.insert(id, at);
            } else {
                // Nothing may be merged into payloads queued before a signal or an error.
                queue.open_at.remove(&id);
            }
            queue.ids.push(id);
            queue.deliveries.push(delivery);
            at == 0
        };
        if first {
            self.deliver
                .call((), ThreadsafeFunctionCallMode::NonBlocking);
        }
        false
    }
}
