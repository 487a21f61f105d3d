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
}

#[derive(Debug)]
struct FakeConn {
    id: usize,
    peer_closed: Arc<AtomicBool>,
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
            })
        }
    }

    fn is_closed(conn: &FakeConn) -> bool {
        conn.peer_closed.load(Ordering::SeqCst)
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
    assert!(!fresh.is_reused());
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
