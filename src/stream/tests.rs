//! The reader's size guard, flow-control credit and judging rules.

use super::*;

/// A regression guard: the attempt is held by every open stream for its life. (The reader
/// future around it, with the attempt loop, is guarded in the router's tests.)
#[test]
fn the_stream_attempt_future_stays_small() {
    let config =
        crate::config::Config::from_json(&serde_json::json!({ "baseUrl": "http://127.0.0.1:1" }))
            .unwrap();
    let client = Arc::new(Client::new(config).unwrap());
    let reader = Reader {
        sink: Box::new(|_| false),
        credit: Arc::default(),
        delivered: Default::default(),
        used_tokens: Default::default(),
        text: None,
        recording: Default::default(),
    };
    // The attempt is boxed, but lives as long as the stream: its sending, the send's deadline,
    // the JSON-answer path, the wait for credit and the drain after [DONE] are boxed apart,
    // taken only when used, and its arguments are kept once (not as an async fn's two copies)
    // (1,376 → 856 → 680 bytes).
    let (call, committed) = (CallOptions::default(), AtomicBool::new(false));
    let target = Box::new(StreamTarget {
        uri: client.chat_uri.clone(),
        body: Bytes::new(),
        dialect: Dialect::Chat,
    });
    let attempt = stream_attempt(&client, target, &call, &reader, &committed);
    let size = std::mem::size_of_val(&attempt);
    assert!(size <= 768, "stream attempt future is {size} bytes");
}

/// A reader for tests elsewhere in the crate (its fields are this module's).
#[cfg(test)]
pub(crate) fn quiet_reader() -> Arc<Reader> {
    Arc::new(Reader {
        sink: Box::new(|_| false),
        credit: Arc::default(),
        delivered: Default::default(),
        used_tokens: Default::default(),
        text: None,
        recording: Default::default(),
    })
}

#[test]
fn credit_text_merged_into_a_pending_delivery_is_one_event_to_acknowledge() {
    let credit = Credit::default();
    credit.spend_on(WINDOW_BYTES / 2, || false);
    // Merged: the same event grows past the byte window…
    credit.spend_on(WINDOW_BYTES / 2, || true);
    assert!(credit.full());
    assert_eq!(credit.lock().sizes.len(), 1);
    // …and acknowledging that one event frees all of it.
    credit.refund(1);
    assert!(!credit.full());
    assert_eq!(credit.lock().bytes, 0);
    // Not merged: two events, two acknowledgements.
    for _ in 0..WINDOW_EVENTS {
        credit.spend_on(1, || false);
    }
    assert!(credit.full());
    credit.refund(WINDOW_EVENTS - 1);
    assert!(!credit.full());
    assert_eq!(credit.lock().bytes, 1);
}

#[test]
fn credit_one_event_larger_than_the_window_passes_alone() {
    let credit = Credit::default();
    credit.spend([WINDOW_BYTES * 3]);
    assert!(credit.full());
    credit.refund(1);
    assert!(!credit.full());
}
