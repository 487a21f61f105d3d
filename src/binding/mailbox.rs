//! One delivery channel per client from the runtime's threads to JS.
//!
//! napi's per-call promises create a threadsafe function for every call (and spawn a second task
//! to watch for panics); under load that is most of a request's CPU. Here every result is posted
//! to one queue under an id the JS side chose, and one threadsafe-function call drains the whole
//! queue: when results pile up (many concurrent calls, many stream chunks), they cross into JS
//! together, in one wake-up.
//!
//! The threadsafe function is weak (it does not keep Node alive by itself); `index.js` keeps the
//! event loop alive while it has calls in flight.

use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::{Either3, FnArgs, Function};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Result, Status};

use super::outcome::{ErrorInfo, StreamBatch};

/// What one id receives: a chat body, a chat error, or a stream batch.
pub type Delivery = Either3<String, ErrorInfo, StreamBatch>;

type Args = FnArgs<(Vec<u32>, Vec<Delivery>)>;

/// The JS callback that receives deliveries: `deliver(ids, values)`.
pub type DeliverFn<'scope> = Function<'scope, Args, ()>;
type Deliver = ThreadsafeFunction<(), (), Args, Status, false, true>;

#[derive(Default)]
struct Queue {
    ids: Vec<u32>,
    deliveries: Vec<Delivery>,
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

    /// Queues a result; the first result into an empty queue schedules one delivery.
    pub fn post(&self, id: u32, delivery: Delivery) {
        let first = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.ids.push(id);
            queue.deliveries.push(delivery);
            queue.ids.len() == 1
        };
        if first {
            self.deliver
                .call((), ThreadsafeFunctionCallMode::NonBlocking);
        }
    }
}
