//! The router: several upstreams, each a fake server.

use super::*;

/// A router over named upstreams `a`, `b`, … (each its own fake server and script).
fn router(
    options: serde_json::Value,
    scripts: Vec<Vec<Answer>>,
) -> (Arc<Router<FakeConnector>>, Vec<Arc<Server>>) {
    let names = ["a", "b", "c"];
    let upstreams: Vec<_> = (0..scripts.len())
        .map(|i| json!({ "name": names[i], "baseUrl": format!("http://{}.test/v1", names[i]) }))
        .collect();
    let mut all = json!({ "upstreams": upstreams, "apiKey": "sk-test-secret-key" });
    for (k, v) in options.as_object().unwrap() {
        if k == "upstreamExtras" {
            for (i, extra) in v.as_array().unwrap().iter().enumerate() {
                for (ek, ev) in extra.as_object().unwrap() {
                    all["upstreams"][i][ek] = ev.clone();
                }
            }
        } else {
            all[k] = v.clone();
        }
    }
    let config = RouterConfig::from_json(&all).unwrap();
    let servers: Vec<Arc<Server>> = scripts
        .into_iter()
        .map(|script| {
            let server = Arc::new(Server::default());
            server.script.lock().unwrap().extend(script);
            server
        })
        .collect();
    let mut next = servers.clone().into_iter();
    let router = Router::build(config, |config| {
        Client::with_connector(config, FakeConnector(next.next().unwrap()))
    })
    .unwrap();
    (Arc::new(router), servers)
}

async fn chat_model(r: &Router<FakeConnector>, model: &str) -> Result<String, Error> {
    r.post_json(
        Target::Chat,
        Bytes::from(format!(r#"{{"model":"{model}","messages":[]}}"#)),
        CallOptions::default(),
        None,
    )
    .await
    .map(|a| a.text)
}

fn received(servers: &[Arc<Server>]) -> Vec<usize> {
    servers
        .iter()
        .map(|s| s.received.load(Ordering::SeqCst))
        .collect()
}

const WEIGHTED_TO_A: &str = r#"[{ "weight": 1000000 }, { "weight": 1 }]"#;

/// A regression guard: the reader future is spawned and held for the stream's life, with
/// the call's plan (where it may go) and bookkeeping; the attempt loop and the attempt are
/// boxed apart. 544 bytes when one upstream bypassed the router; 1,696 once every stream
/// went through it, until the client-wide limiter's wait was boxed (only calls of a
/// client with `limits` need it): 688; 712 once call options carried a request watcher's
/// pointer (undici's diagnostics channels).
#[test]
fn the_stream_reader_future_stays_small() {
    let config = RouterConfig::from_json(&json!({ "baseUrl": "http://127.0.0.1:1" })).unwrap();
    let router = Arc::new(Router::new(config).unwrap());
    let request = crate::router::StreamRequest {
        target: Target::Chat,
        dialect: crate::stream::Dialect::Chat,
        body: Bytes::new(),
        call: CallOptions::default(),
        cancel: None,
    };
    let future = router.read_stream(
        request,
        crate::stream::tests::quiet_reader(),
        tokio_util::sync::CancellationToken::new(),
    );
    let size = std::mem::size_of_val(&future);
    assert!(size <= 712, "stream reader future is {size} bytes");
}

#[tokio::test(start_paused = true)]
async fn a_retryable_failure_moves_to_the_other_upstream_at_once_and_spends_one_retry() {
    let (r, servers) = router(
        json!({ "routing": "weighted", "upstreamExtras": serde_json::from_str::<serde_json::Value>(WEIGHTED_TO_A).unwrap() }),
        vec![vec![status(503, vec![])], vec![]],
    );
    let started = tokio::time::Instant::now();
    assert!(chat_model(&r, "m").await.is_ok());
    // No backoff before moving: the other upstream is healthy.
    assert!(started.elapsed() < Duration::from_millis(10));
    assert_eq!(received(&servers), vec![1, 1]);
    assert_eq!(r.failovers(), 1);
    assert_eq!(r.stats().requests, 1);
}

#[tokio::test(start_paused = true)]
async fn with_retries_off_a_failure_is_final_on_the_first_upstream() {
    let (r, servers) = router(
        json!({ "retry": false }),
        vec![vec![status(503, vec![])], vec![status(503, vec![])]],
    );
    let e = chat_model(&r, "m").await.unwrap_err();
    assert_eq!(e.code(), "ERR_HTTP_STATUS");
    assert_eq!(received(&servers).iter().sum::<usize>(), 1);
    assert_eq!(e.upstreams().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_budget_bounds_every_attempt_across_upstreams() {
    // maxRetries 2: three attempts in all, whichever upstreams they land on.
    let (r, servers) = router(
        json!({ "retry": { "maxRetries": 2, "minTimeout": 10, "maxTimeout": 10 } }),
        vec![vec![status(503, vec![]); 5], vec![status(503, vec![]); 5]],
    );
    let e = chat_model(&r, "m").await.unwrap_err();
    assert_eq!(received(&servers).iter().sum::<usize>(), 3);
    assert_eq!(e.upstreams().len(), 2);
    assert!(e.message().contains("upstreams tried: "));
}

#[tokio::test(start_paused = true)]
async fn a_429_that_asks_for_a_wait_moves_the_call_to_the_other_upstream_at_once() {
    let (r, servers) = router(
        json!({ "routing": "weighted", "upstreamExtras": serde_json::from_str::<serde_json::Value>(WEIGHTED_TO_A).unwrap() }),
        vec![vec![status(429, vec![("retry-after", "5".into())])], vec![]],
    );
    let started = tokio::time::Instant::now();
    assert!(chat_model(&r, "m").await.is_ok());
    // The wait a asked for is a's; b owes nothing to it.
    assert!(started.elapsed() < Duration::from_millis(10));
    assert_eq!(received(&servers), vec![1, 1]);
}

#[tokio::test(start_paused = true)]
async fn attempts_count_every_upstream_the_call_went_to() {
    // One budget, one count: the error says three attempts, not the last upstream's one.
    let (r, _) = router(
        json!({ "retry": { "maxRetries": 2, "minTimeout": 10, "maxTimeout": 10 } }),
        vec![vec![status(503, vec![]); 5], vec![status(503, vec![]); 5]],
    );
    let e = chat_model(&r, "m").await.unwrap_err();
    assert_eq!(e.attempts(), 3);
    // One upstream: the same budget, the same count.
    let (c, server) = client(
        json!({ "retry": { "maxRetries": 2, "minTimeout": 10, "maxTimeout": 10 } }),
        vec![status(503, vec![]); 5],
    );
    let e = chat(&c).await.unwrap_err();
    assert_eq!(e.attempts(), 3);
    assert_eq!(server.received.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn models_are_mapped_and_a_model_nobody_serves_sends_nothing() {
    let (r, servers) = router(
        json!({ "upstreamExtras": [{ "models": { "gpt": "deploy-1" } }, { "models": ["other"] }] }),
        vec![vec![], vec![]],
    );
    assert!(chat_model(&r, "gpt").await.is_ok());
    assert_eq!(received(&servers), vec![1, 0]);
    let e = chat_model(&r, "nope").await.unwrap_err();
    assert_eq!(e.code(), "ERR_NO_UPSTREAM");
    assert!(e.message().contains("\"nope\""));
    assert_eq!(received(&servers), vec![1, 0]);
}

#[tokio::test(start_paused = true)]
async fn fallbacks_come_after_every_upstream_of_the_model() {
    let (r, servers) = router(
        json!({
            "upstreamExtras": [{ "models": ["big"] }, { "models": ["small"] }],
            "fallbacks": { "big": ["small"] }
        }),
        vec![vec![status(500, vec![])], vec![]],
    );
    assert!(chat_model(&r, "big").await.is_ok());
    assert_eq!(received(&servers), vec![1, 1]);
}

#[tokio::test(start_paused = true)]
async fn allowed_fails_put_an_upstream_in_cooldown_and_retry_after_sets_it() {
    let (r, servers) = router(
        json!({ "allowedFails": 1, "cooldown": 1000, "routing": "weighted",
                "upstreamExtras": serde_json::from_str::<serde_json::Value>(WEIGHTED_TO_A).unwrap() }),
        vec![
            vec![status(429, vec![("retry-after", "30".into())])],
            vec![],
        ],
    );
    for _ in 0..5 {
        assert!(chat_model(&r, "m").await.is_ok());
    }
    // a answered 429 once; for the 30 s it asked, every call goes to b.
    assert_eq!(received(&servers), vec![1, 5]);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(chat_model(&r, "m").await.is_ok());
    assert_eq!(received(&servers), vec![1, 6]);
    tokio::time::advance(Duration::from_secs(21)).await;
    assert!(chat_model(&r, "m").await.is_ok());
    assert_eq!(
        received(&servers),
        vec![2, 6],
        "a is probed once the pause is over"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_moves_before_its_first_chunk_only() {
    let (r, servers) = router(
        json!({ "routing": "weighted", "upstreamExtras": serde_json::from_str::<serde_json::Value>(WEIGHTED_TO_A).unwrap() }),
        vec![
            vec![
                status(502, vec![]),
                sse(0, vec![Step::Data(CHUNK), Step::Reset]),
            ],
            vec![sse(0, vec![Step::Data(CHUNK), Step::Data(LAST)])],
        ],
    );
    let run = |r: Arc<Router<FakeConnector>>| async move {
        let mut handle = r
            .stream(
                Target::Chat,
                crate::stream::Dialect::Chat,
                Bytes::from_static(br#"{"model":"m","stream":true}"#),
                CallOptions::default(),
                None,
            )
            .unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        handle.start(
            Box::new(move |d| {
                let _ = tx.send(d);
                false
            }),
            false,
        );
        let mut payloads = 0;
        loop {
            match rx.recv().await.unwrap() {
                Delivery::Events(e) => {
                    payloads += e.len();
                    handle.ack(e.len());
                }
                Delivery::End => return (payloads, None),
                Delivery::Failed(e) => return (payloads, Some(e.code())),
                _ => {}
            }
        }
    };
    let (payloads, failed) = run(r.clone()).await;
    assert_eq!((payloads, failed), (2, None));
    assert_eq!(received(&servers), vec![1, 1]);
    // The second stream delivers a chunk from a, then a breaks: final, b never asked.
    let (payloads, failed) = run(r.clone()).await;
    assert_eq!(payloads, 1);
    assert_eq!(failed, Some("ERR_SOCKET"));
    assert_eq!(received(&servers), vec![2, 1]);
}

#[test]
fn router_options_name_the_field_they_break() {
    let cases = [
        (
            json!({ "upstreams": {} }),
            "upstreams must be a non-empty array",
        ),
        (
            json!({ "upstreams": [{ "baseUrl": "http://a", "connections": 0 }] }),
            "upstreams[0].connections must be a positive integer",
        ),
        (
            json!({ "upstreams": [{ "baseUrl": "http://a" }], "circuitBreaker": {} }),
            "circuitBreaker must not be set with upstreams",
        ),
        (
            json!({ "baseUrl": "http://a", "store": { "redis": "redis://h", "db": 1 } }),
            "store.db is not a known option",
        ),
        (
            json!({ "baseUrl": "http://a", "store": { "redis": "redis://h", "prefix": "a b" } }),
            "store.prefix must be",
        ),
    ];
    for (options, expected) in cases {
        let e = RouterConfig::from_json(&options).unwrap_err();
        assert!(
            e.to_string().starts_with(expected),
            "{} does not start with {expected}",
            e
        );
    }
    // The client's options reach every upstream; an upstream's win.
    let c = RouterConfig::from_json(&json!({
        "connections": 7, "headers": { "x-a": "1", "x-b": "1" },
        "upstreams": [{ "baseUrl": "http://a" }, { "baseUrl": "http://b", "connections": 3, "headers": { "x-b": "2" } }]
    }))
    .unwrap();
    assert_eq!(c.upstreams[0].config.connections, Some(7));
    assert_eq!(c.upstreams[1].config.connections, Some(3));
    let headers: Vec<_> = c.upstreams[1]
        .config
        .headers
        .iter()
        .map(|(k, v)| format!("{k}={}", v.to_str().unwrap()))
        .collect();
    assert!(headers.contains(&"x-a=1".to_owned()) && headers.contains(&"x-b=2".to_owned()));
    assert_eq!(c.upstreams[1].config.name.as_deref(), Some("http://b"));
    assert_eq!(
        c.upstreams[0]
            .config
            .circuit_breaker
            .unwrap()
            .failure_threshold,
        3
    );
}

/// A regression guard: a JSON call's future is spawned per call (its size is copied and
/// allocated each time). 1,528 bytes before the response cache; 1,648 with it: the lookup is
/// boxed, only the leader's few fields (key, TTL, flight) are inline.
#[test]
fn the_json_call_future_stays_small() {
    let config = RouterConfig::from_json(&json!({ "baseUrl": "http://127.0.0.1:1" })).unwrap();
    let router = Router::new(config).unwrap();
    let future = router.post_json(Target::Chat, Bytes::new(), CallOptions::default(), None);
    let size = std::mem::size_of_val(&future);
    assert!(size <= 1648, "JSON call future is {size} bytes");
}
