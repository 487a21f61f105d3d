//! Pool bookkeeping with fake connections and paused time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;

#[derive(Default)]
struct FakeConnector {
    opened: AtomicUsize,
    fail: AtomicBool,
    delay_ms: u64,
    /// `Some(limit)`: connections are multiplexed (HTTP/2-like) with this stream limit.
    streams: Option<usize>,
}

#[derive(Debug, Clone)]
struct FakeConn {
    id: usize,
    peer_closed: Arc<AtomicBool>,
    /// The server's stream limit of a multiplexed connection; `None` = one request at a time.
    limit: Option<Arc<AtomicUsize>>,
}

impl Connect for Arc<FakeConnector> {
    type Conn = FakeConn;

    fn connect(&self) -> impl Future<Output = Result<FakeConn, Error>> + Send {
        let this = self.clone();
        async move {
            if this.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(this.delay_ms)).await;
            }
            if this.fail.load(Ordering::SeqCst) {
                return Err(Error::new(Kind::Connect, "refused"));
            }
            let id = this.opened.fetch_add(1, Ordering::SeqCst);
            Ok(FakeConn {
                id,
                peer_closed: Arc::new(AtomicBool::new(false)),
                limit: this.streams.map(|n| Arc::new(AtomicUsize::new(n))),
            })
        }
    }

    fn is_closed(conn: &FakeConn) -> bool {
        conn.peer_closed.load(Ordering::SeqCst)
    }

    fn share(conn: &FakeConn) -> Option<FakeConn> {
        conn.limit.is_some().then(|| conn.clone())
    }

    fn stream_limit(conn: &FakeConn) -> usize {
        conn.limit.as_ref().map_or(1, |l| l.load(Ordering::SeqCst))
    }
}

fn pool(
    cap: Option<usize>,
    pool_timeout_ms: Option<u64>,
) -> (Pool<Arc<FakeConnector>>, Arc<FakeConnector>) {
    pool_with(FakeConnector::default(), cap, pool_timeout_ms)
}

fn pool_with(
    connector: FakeConnector,
    cap: Option<usize>,
    pool_timeout_ms: Option<u64>,
) -> (Pool<Arc<FakeConnector>>, Arc<FakeConnector>) {
    let connector = Arc::new(connector);
    let pool = Pool::new(
        connector.clone(),
        PoolLimits {
            max_connections: cap,
            pool_timeout: pool_timeout_ms.map(Duration::from_millis),
            origin: "http://fake".into(),
            max_streams: 100,
            idle_timeout: Duration::from_secs(60),
            expect_multiplexed: connector.streams.is_some(),
        },
    );
    (pool, connector)
}

const LIFE: Option<Duration> = Some(Duration::from_secs(60));

#[tokio::test(start_paused = true)]
async fn sequential_checkouts_reuse_one_connection() {
    let (pool, connector) = pool(Some(4), None);
    for _ in 0..100 {
        let mut lease = pool.checkout(false).await.unwrap();
        assert_eq!(lease.conn().id, 0);
        lease.release(LIFE);
    }
    assert_eq!(connector.opened.load(Ordering::SeqCst), 1);
    let stats = pool.stats();
    assert_eq!((stats.connected, stats.free, stats.running), (1, 1, 0));
    assert_eq!((stats.connections_opened, stats.reused), (1, 99));
}

#[tokio::test(start_paused = true)]
async fn most_recently_used_idle_connection_goes_first() {
    let (pool, _) = pool(Some(4), None);
    let a = pool.checkout(false).await.unwrap();
    let mut b = pool.checkout(false).await.unwrap();
    let b_id = b.conn().id;
    a.release(LIFE);
    b.release(LIFE);
    let mut next = pool.checkout(false).await.unwrap();
    assert_eq!(next.conn().id, b_id);
}

#[tokio::test(start_paused = true)]
async fn waiters_beyond_the_cap_are_served_in_order_when_a_connection_frees() {
    let (pool, connector) = pool(Some(1), None);
    let first = pool.checkout(false).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..3 {
        let pool = pool.clone();
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let lease = pool.checkout(false).await.unwrap();
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(10)).await;
            lease.release(LIFE);
        }));
        // Let each task enqueue before the next, so FIFO order is observable.
        tokio::task::yield_now().await;
    }
    let stats = pool.stats();
    assert_eq!((stats.queued, stats.running, stats.size), (3, 1, 4));
    first.release(LIFE);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    assert_eq!(connector.opened.load(Ordering::SeqCst), 1);
    assert_eq!(pool.stats().queued, 0);
}

#[tokio::test(start_paused = true)]
async fn pool_timeout_fires_and_leaves_nothing_queued() {
    let (pool, _) = pool(Some(1), Some(100));
    let held = pool.checkout(false).await.unwrap();
    let err = pool.checkout(false).await.err().unwrap();
    assert_eq!(err.code(), "ERR_POOL_TIMEOUT");
    assert!(err.message().contains("http://fake"));
    assert_eq!(pool.stats().queued, 0);
    // The slot is still usable afterwards.
    held.release(LIFE);
    assert!(pool.checkout(false).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn dropped_lease_closes_the_connection_and_lets_a_waiter_connect() {
    let (pool, connector) = pool(Some(1), None);
    let held = pool.checkout(false).await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut lease = pool.checkout(false).await.unwrap();
            let id = lease.conn().id;
            lease.release(LIFE);
            Ok::<_, Error>(id)
        }
    });
    tokio::task::yield_now().await;
    drop(held);
    assert_eq!(waiter.await.unwrap().unwrap(), 1);
    assert_eq!(connector.opened.load(Ordering::SeqCst), 2);
    assert_eq!(pool.stats().connections_closed, 1);
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiter_does_not_leak_its_slot() {
    let (pool, _) = pool(Some(1), None);
    let held = pool.checkout(false).await.unwrap();
    let cancelled = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout(false).await.is_ok() }
    });
    tokio::task::yield_now().await;
    cancelled.abort();
    let _ = cancelled.await;
    held.release(LIFE);
    let stats = pool.stats();
    assert_eq!((stats.free, stats.running, stats.queued), (1, 0, 0));
    assert!(pool.checkout(false).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn idle_connections_expire() {
    let (pool, connector) = pool(Some(2), None);
    pool.checkout(false)
        .await
        .unwrap()
        .release(Some(Duration::from_secs(1)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The reaper closed it without anyone checking out.
    assert_eq!(pool.stats().free, 0);
    assert_eq!(pool.stats().connections_closed, 1);
    let mut lease = pool.checkout(false).await.unwrap();
    assert_eq!(lease.conn().id, 1);
    assert_eq!(connector.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_connection_the_peer_closed_is_never_handed_out() {
    let (pool, _) = pool(Some(2), None);
    let mut lease = pool.checkout(false).await.unwrap();
    let flag = lease.conn().peer_closed.clone();
    lease.release(LIFE);
    flag.store(true, Ordering::SeqCst);
    let mut next = pool.checkout(false).await.unwrap();
    assert_eq!(next.conn().id, 1);
}

#[tokio::test(start_paused = true)]
async fn release_without_lifetime_closes() {
    let (pool, _) = pool(Some(2), None);
    pool.checkout(false).await.unwrap().release(None);
    let stats = pool.stats();
    assert_eq!((stats.connected, stats.connections_closed), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn failed_connect_frees_the_slot_for_a_waiter() {
    let (pool, connector) = pool_with(
        FakeConnector {
            delay_ms: 50,
            ..Default::default()
        },
        Some(1),
        None,
    );
    connector.fail.store(true, Ordering::SeqCst);
    let failing = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout(false).await.is_err() }
    });
    tokio::task::yield_now().await;
    assert_eq!(pool.stats().pending, 1);
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout(false).await.is_ok() }
    });
    tokio::task::yield_now().await;
    assert_eq!(pool.stats().queued, 1);
    tokio::time::sleep(Duration::from_millis(60)).await;
    connector.fail.store(false, Ordering::SeqCst);
    assert!(failing.await.unwrap());
    assert!(waiting.await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn fresh_checkout_skips_idle_and_makes_room_at_the_cap() {
    let (pool, _) = pool(Some(1), None);
    pool.checkout(false).await.unwrap().release(LIFE);
    let mut fresh = pool.checkout(true).await.unwrap();
    assert_eq!(fresh.conn().id, 1);
    assert_eq!(pool.stats().connections_closed, 1);
}

#[tokio::test(start_paused = true)]
async fn unlimited_pool_opens_as_many_as_asked() {
    let (pool, _) = pool(None, None);
    let mut leases = Vec::new();
    for _ in 0..50 {
        leases.push(pool.checkout(false).await.unwrap());
    }
    assert_eq!(pool.stats().running, 50);
}

#[tokio::test(start_paused = true)]
async fn close_fails_waiters_and_later_checkouts() {
    let (pool, _) = pool(Some(1), None);
    let held = pool.checkout(false).await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout(false).await.err().map(|e| e.code()) }
    });
    tokio::task::yield_now().await;
    pool.close();
    assert_eq!(waiter.await.unwrap(), Some("ERR_CLOSED"));
    assert_eq!(
        pool.checkout(false).await.err().map(|e| e.code()),
        Some("ERR_CLOSED")
    );
    held.release(LIFE);
    let stats = pool.stats();
    assert_eq!((stats.connected, stats.connections_closed), (0, 1));
}

fn h2_pool(cap: usize, limit: usize) -> (Pool<Arc<FakeConnector>>, Arc<FakeConnector>) {
    pool_with(
        FakeConnector {
            streams: Some(limit),
            ..FakeConnector::default()
        },
        Some(cap),
        Some(10_000),
    )
}

#[tokio::test(start_paused = true)]
async fn a_multiplexed_connection_carries_streams_up_to_its_limit_then_another_opens() {
    let (pool, connector) = h2_pool(10, 2);
    let mut leases = Vec::new();
    for _ in 0..5 {
        leases.push(pool.checkout(false).await.unwrap());
    }
    assert_eq!(connector.opened.load(Ordering::SeqCst), 3);
    let ids: Vec<usize> = leases.iter_mut().map(|l| l.conn().id).collect();
    assert_eq!(ids, [0, 0, 1, 1, 2]);
    let stats = pool.stats();
    assert_eq!(
        (
            stats.multiplexed,
            stats.streams,
            stats.connected,
            stats.running
        ),
        (3, 5, 3, 5)
    );
    // A stream ending (read or dropped) ends only the stream.
    drop(leases.remove(0));
    leases.remove(0).release(None);
    assert_eq!(pool.stats().connected, 3);
    assert_eq!(pool.stats().streams, 3);
    // The emptied connection takes the next streams before anything new opens.
    let mut next = pool.checkout(false).await.unwrap();
    assert_eq!(next.conn().id, 0);
    assert_eq!(connector.opened.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_waiters_get_streams_as_they_free_and_a_new_connection_serves_several() {
    let (pool, connector) = h2_pool(1, 2);
    let first = pool.checkout(false).await.unwrap();
    let second = pool.checkout(false).await.unwrap();
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.checkout(false).await.map(|mut l| l.conn().id) })
    };
    tokio::task::yield_now().await;
    assert_eq!(pool.stats().queued, 1);
    drop(first);
    assert_eq!(waiting.await.unwrap().unwrap(), 0);
    drop(second);
    assert_eq!(connector.opened.load(Ordering::SeqCst), 1);

    // Waiters queued while the first connection opens all ride it once it is up.
    let (pool, connector) = pool_with(
        FakeConnector {
            streams: Some(10),
            delay_ms: 50,
            ..FakeConnector::default()
        },
        Some(1),
        Some(10_000),
    );
    let all = futures::future::join_all((0..4).map(|_| pool.checkout(false))).await;
    assert!(all.iter().all(|l| l.is_ok()));
    assert_eq!(connector.opened.load(Ordering::SeqCst), 1);
    assert_eq!(pool.stats().streams, 4);
}

#[tokio::test(start_paused = true)]
async fn a_retired_connection_takes_no_new_streams_and_closes_after_its_last() {
    let (pool, connector) = h2_pool(10, 10);
    let a = pool.checkout(false).await.unwrap();
    let b = pool.checkout(false).await.unwrap();
    a.retire();
    let mut c = pool.checkout(false).await.unwrap();
    assert_eq!(c.conn().id, 1, "a new connection, not the retired one");
    drop(a);
    assert_eq!(
        pool.stats().multiplexed,
        2,
        "the retired one still carries b"
    );
    drop(b);
    assert_eq!(pool.stats().multiplexed, 1);
    assert_eq!(pool.stats().connections_closed, 1);
    assert_eq!(connector.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_server_lowering_its_limit_is_followed() {
    let (pool, connector) = h2_pool(10, 10);
    let mut a = pool.checkout(false).await.unwrap();
    a.conn().limit.as_ref().unwrap().store(1, Ordering::SeqCst);
    let mut b = pool.checkout(false).await.unwrap();
    assert_eq!(b.conn().id, 1);
    assert_eq!(connector.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn an_unused_multiplexed_connection_expires() {
    let (pool, _) = h2_pool(10, 10);
    pool.checkout(false).await.unwrap().release(LIFE);
    assert_eq!(pool.stats().connected, 1);
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(pool.stats().connected, 0);
}

#[tokio::test(start_paused = true)]
async fn a_burst_opens_one_connection_at_a_time_when_they_multiplex() {
    let (pool, connector) = pool_with(
        FakeConnector {
            streams: Some(2),
            delay_ms: 20,
            ..FakeConnector::default()
        },
        Some(100),
        Some(10_000),
    );
    let mut all = futures::future::join_all((0..10).map(|_| pool.checkout(false))).await;
    assert!(all.iter().all(|l| l.is_ok()));
    // Two streams each: five connections, not ten.
    assert_eq!(connector.opened.load(Ordering::SeqCst), 5);
    let mut per_conn = std::collections::BTreeMap::new();
    for lease in all.iter_mut() {
        *per_conn
            .entry(lease.as_mut().unwrap().conn().id)
            .or_insert(0) += 1;
    }
    assert!(per_conn.values().all(|&n| n == 2), "{per_conn:?}");
}

#[tokio::test(start_paused = true)]
async fn a_connection_going_away_frees_its_slot_for_a_new_one_at_the_cap() {
    // One connection allowed: while the retired one drains its stream, a new one carries the
    // load (the waiter does not wait for the drain).
    let (pool, connector) = h2_pool(1, 10);
    let draining = pool.checkout(false).await.unwrap();
    draining.retire();
    let mut next = tokio::time::timeout(Duration::from_millis(100), pool.checkout(false))
        .await
        .expect("not held back by the draining connection")
        .unwrap();
    assert_eq!(next.conn().id, 1);
    assert_eq!(connector.opened.load(Ordering::SeqCst), 2);
    drop(draining);
    assert_eq!(pool.stats().multiplexed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_retires_nothing_but_refusals_in_a_row_do() {
    let (pool, connector) = h2_pool(10, 10);
    for round in 0..2 {
        for _ in 0..MAX_REFUSALS - 1 {
            let refused = pool.checkout(false).await.unwrap();
            refused.refused();
        }
        // A served stream starts the count again.
        let mut served = pool.checkout(false).await.unwrap();
        assert_eq!(served.conn().id, 0, "round {round}");
        served.release(LIFE);
    }
    for _ in 0..MAX_REFUSALS {
        pool.checkout(false).await.unwrap().refused();
    }
    let mut after = pool.checkout(false).await.unwrap();
    assert_eq!(after.conn().id, 1, "retired after {MAX_REFUSALS} in a row");
    assert_eq!(connector.opened.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_server_that_allows_no_stream_keeps_callers_waiting_under_pool_timeout() {
    let (pool, connector) = h2_pool(10, 0);
    let err = match pool.checkout(false).await {
        Err(e) => e,
        Ok(_) => panic!("no stream may be opened"),
    };
    assert_eq!(err.code(), "ERR_POOL_TIMEOUT");
    assert_eq!(
        connector.opened.load(Ordering::SeqCst),
        1,
        "no connection around its limit"
    );
    let stats = pool.stats();
    assert_eq!((stats.streams, stats.running, stats.queued), (0, 0, 0));

    // The server raises its limit: a waiting caller gets its stream (the reaper looks again).
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.checkout(false).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!waiting.is_finished());
    assert_eq!(pool.stats().queued, 1);
    let conn = pool.shared.lock().multiplexed[0].conn.clone();
    conn.limit.as_ref().unwrap().store(5, Ordering::SeqCst);
    let Ok(Ok(mut lease)) = waiting.await else {
        panic!("the waiter gets a stream once the server allows one");
    };
    assert_eq!(lease.conn().id, 0);
    assert_eq!(pool.stats().streams, 1);
}

#[tokio::test(start_paused = true)]
async fn a_server_that_ends_connections_after_n_streams_teaches_the_pool_to_spread_a_burst() {
    let (pool, connector) = h2_pool(100, 128);
    // A burst of 20 rides one connection; the server serves 7 and goes away.
    let mut burst = futures::future::join_all((0..20).map(|_| pool.checkout(false))).await;
    assert_eq!(connector.opened.load(Ordering::SeqCst), 1);
    let served: Vec<_> = burst.drain(..7).map(Result::unwrap).collect();
    burst[0].as_ref().unwrap().retire();
    drop(burst);
    for lease in served {
        lease.release(LIFE);
    }
    assert_eq!(
        pool.stats().multiplexed,
        0,
        "the connection that went away is closed"
    );

    // The next burst spreads: 7 streams a connection, opened side by side.
    let mut next = futures::future::join_all((0..20).map(|_| pool.checkout(false))).await;
    assert_eq!(connector.opened.load(Ordering::SeqCst), 1 + 3);
    let mut per_conn = std::collections::BTreeMap::new();
    for lease in next.iter_mut() {
        *per_conn
            .entry(lease.as_mut().unwrap().conn().id)
            .or_insert(0) += 1;
    }
    assert!(per_conn.values().all(|&n| n <= 7), "{per_conn:?}");
    for lease in next {
        lease.unwrap().release(LIFE);
    }
    // A spent connection closes with its last stream; the others wait for the next burst.
    assert_eq!(pool.stats().multiplexed, 1);
    assert_eq!(pool.shared.lock().stream_budget, 7);
    // What was learnt is forgotten after a while (a GOAWAY of a restart must not pin it).
    tokio::time::sleep(Duration::from_secs(61)).await;
    drop(pool.checkout(false).await.unwrap());
    assert_eq!(pool.shared.lock().stream_budget, usize::MAX);
}
