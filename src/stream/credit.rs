//! Credit-based flow control between the reader and the consumer: how much may be delivered
//! and not yet acknowledged, in events and in bytes.

use super::*;

/// Most events delivered and not yet acknowledged before the reader stops reading.
pub const WINDOW_EVENTS: usize = 256;
/// Most payload bytes delivered and not yet acknowledged before the reader stops reading. One
/// event larger than this still passes, alone: the window never holds back an event the decoder
/// accepted (`maxEventSize` bounds that).
pub const WINDOW_BYTES: usize = 1024 * 1024;

/// Sizes of the events delivered and not yet acknowledged, and a wake-up for a reader waiting
/// for room. The consumer acknowledges in events; the sizes let the byte window follow exactly.
#[derive(Debug, Default)]
pub(crate) struct Credit {
    pub(super) unacked: Mutex<Unacked>,
    pub(super) room: Notify,
}

#[derive(Debug, Default)]
pub(super) struct Unacked {
    /// 32 bits each: every open stream keeps this deque's capacity (up to `WINDOW_EVENTS`
    /// entries) for its life, and no delivery nears 4 GiB (the byte window stops the reader at
    /// 1 MiB; a size past `u32::MAX` would be counted as `u32::MAX`, on both sides).
    pub(super) sizes: VecDeque<u32>,
    pub(super) bytes: usize,
}

/// An event's size as the deque keeps it.
pub(super) fn size32(size: usize) -> u32 {
    u32::try_from(size).unwrap_or(u32::MAX)
}

impl Credit {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Unacked> {
        self.unacked.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn full(&self) -> bool {
        let unacked = self.lock();
        unacked.sizes.len() >= WINDOW_EVENTS || unacked.bytes >= WINDOW_BYTES
    }

    /// Returns at the next acknowledgement (at once if there is room already).
    pub(super) async fn wait_for_ack(&self) {
        let notified = self.room.notified();
        if !self.full() {
            return;
        }
        notified.await;
    }

    pub(super) fn spend(&self, sizes: impl IntoIterator<Item = usize>) {
        let mut unacked = self.lock();
        for size in sizes {
            let size = size32(size);
            unacked.sizes.push_back(size);
            unacked.bytes += size as usize;
        }
    }

    /// Spends `size` bytes on what `post` delivers: one more event, or, when `post` says it
    /// merged the delivery into the newest one not yet taken, more bytes on that event. `post`
    /// runs under the lock, so no acknowledgement can come between it and the bookkeeping.
    pub(super) fn spend_on(&self, size: usize, post: impl FnOnce() -> bool) {
        let mut unacked = self.lock();
        let merged = post();
        let size = size32(size);
        let added = match unacked.sizes.back_mut() {
            Some(last) if merged => {
                let before = *last;
                *last = last.saturating_add(size);
                *last - before
            }
            _ => {
                unacked.sizes.push_back(size);
                size
            }
        };
        unacked.bytes += added as usize;
    }

    pub(super) fn refund(&self, events: usize) {
        {
            let mut unacked = self.lock();
            for _ in 0..events {
                match unacked.sizes.pop_front() {
                    Some(size) => unacked.bytes -= size as usize,
                    None => break,
                }
            }
        }
        self.room.notify_one();
    }
}
