//! The reader's size guard, flow-control credit and judging rules.

use super::*;

/// A regression guard, as for `chat()`: the spawned reader future is moved when spawned, and
/// it and the attempt are held by every open stream.
#[test]
fn the_stream_reader_future_stays_small() {
    let config =
        crate::config::Config::from_json(&serde_json::json!({ "baseUrl": "http://127.0.0.1:1" }))
            .unwrap();
    let client = Arc::new(Client::new(config).unwrap());
    let reader = Arc::new(Reader {
        sink: Box::new(|_| false),
        credit: Arc::default(),
        delivered: Default::default(),
        used_tokens: Default::default(),
        text: None,
    });
    let request = StreamRequest {
        uri: client.chat_uri.clone(),
        dialect: Dialect::Chat,
        client,
        body: Bytes::new(),
        call: CallOptions::default(),
        cancel: None,
    };
    {
        // The attempt is boxed, but lives as long as the stream: its sending, the send's
        // deadline, the JSON-answer path, the wait for credit and the drain after [DONE] are
        // boxed apart, taken only when used, and its arguments are kept once (not as an
        // async fn's two copies) (1,376 → 856 → 680 bytes).
        let (call, committed, body) =
            (CallOptions::default(), AtomicBool::new(false), Bytes::new());
        let target = StreamTarget {
            uri: &request.uri,
            dialect: Dialect::Chat,
        };
        let attempt = stream_attempt(&request.client, target, &body, &call, &reader, &committed);
        let size = std::mem::size_of_val(&attempt);
        assert!(size <= 768, "stream attempt future is {size} bytes");

        // The attempt loop around it (boxed by `stream_outcome`, held as long): 760 bytes
        // while the deadline and breaker wrappers were async fns, each keeping the attempt
        // it was given and the one it awaited; now they hand the attempt on as it is.
        let closed = CancellationToken::new();
        let attempts = request.client.read_until_closed(
            &call,
            CallKind::Stream,
            &committed,
            &closed,
            || -> BoxedAttempt<'_, ()> { Box::pin(async { Ok(()) }) },
        );
        let size = std::mem::size_of_val(&attempts);
        assert!(size <= 384, "stream attempt loop future is {size} bytes");
    }
    // Every open stream holds it: 3.9 KB before `run` was handed a boxed work, 1,312 bytes
    // before `stream_outcome` borrowed the request (an argument taken by value is kept for
    // the future's whole life) and `Error` was boxed, 816 before `read_stream` kept its
    // request once (an async fn keeps it as passed and as its own local): 544.
    let future = read_stream(request, reader, CancellationToken::new());
    let size = std::mem::size_of_val(&future);
    assert!(size <= 640, "stream reader future is {size} bytes");
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
