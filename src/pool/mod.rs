//! A per-origin connection pool: checkout/checkin, a connection cap, a FIFO of waiters, idle
//! expiry and stats, for one-request-at-a-time connections (HTTP/1.1) and multiplexed ones
//! (HTTP/2: many streams on one connection).
//!
//! The pool is generic over [`Connect`] so its bookkeeping is tested with fake connections and
//! paused time; the real connector (TCP, TLS, proxies, the HTTP handshake) is `transport`.
//!
//! Invariant, under the one lock: `idle.len() + busy + connecting + live multiplexed <= cap`,
//! where a live multiplexed connection is one not retired. Every slot is owned by exactly one
//! thing: an idle entry, a [`Lease`] (busy), a [`Permit`] (connecting) or a live multiplexed
//! entry. A retired one (the server sent GOAWAY, or refused stream after stream) holds no slot:
//! it takes no new streams and only drains the ones it carries, so the cap's room goes to a new
//! connection that can carry the load. Leases and permits give their slot back in `Drop`, so a
//! cancelled future can never leak one. When a slot or a stream frees and someone is waiting, it
//! is handed to the first waiter directly (a live connection, a stream, or a permit to open a
//! connection): waiters wake the moment capacity appears, with no polling.
//!
//! A multiplexed connection takes new streams while it has fewer than its limit (the smaller of
//! `maxConcurrentStreams` and what the server allows now); a new connection opens only when every
//! open one is full. A server that allows 0 streams for now gets none: callers wait as pool
//! waiters (under `poolTimeout`) rather than open connections around its limit, and the reaper
//! looks again every second. A retired connection takes no new streams and closes when its last
//! stream ends.

pub mod keep_alive;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{Error, Kind};

/// Opens connections for a pool and tells whether one is still usable.
pub trait Connect: Send + Sync + 'static {
    type Conn: Send + 'static;

    fn connect(&self) -> impl Future<Output = Result<Self::Conn, Error>> + Send;

    /// True once the connection can no longer carry a request (the peer closed it, or it broke),
    /// as far as is known without I/O: the pool asks under its lock, where no socket is read.
    fn is_closed(conn: &Self::Conn) -> bool;

    /// A check of an idle connection that reads its socket, to be run after the pool's lock is
    /// released (the reaper runs it about every second on each idle connection): it closes the
    /// connection when the server closed it, so that `is_closed` says so afterwards.
    fn prober(_conn: &Self::Conn) -> Option<Box<dyn FnOnce() + Send>> {
        None
    }

    /// Another handle on the same connection when it is multiplexed (HTTP/2); `None` for a
    /// connection that carries one request at a time.
    fn share(_conn: &Self::Conn) -> Option<Self::Conn> {
        None
    }

    /// How many requests a multiplexed connection may carry at once now (the server's limit).
    fn stream_limit(_conn: &Self::Conn) -> usize {
        1
    }
}

/// Limits of one pool.
#[derive(Debug, Clone)]
pub struct PoolLimits {
    /// Most connections at once, idle + busy + connecting; `None` = unlimited.
    pub max_connections: Option<usize>,
    /// Longest wait for a connection; `None` = wait forever.
    pub pool_timeout: Option<Duration>,
    /// Most streams on one multiplexed connection (`maxConcurrentStreams`).
    pub max_streams: usize,
    /// How long a multiplexed connection with no stream stays open.
    pub idle_timeout: Duration,
    /// New connections will likely be multiplexed (HTTP/2 offered): while one is being opened,
    /// later requests wait to ride it instead of each opening their own.
    pub expect_multiplexed: bool,
    /// Used in error messages.
    pub origin: String,
}

/// A snapshot of the pool, with undici's `PoolStats` meanings where they exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections (idle + busy).
    pub connected: usize,
    /// Open connections without a request.
    pub free: usize,
    /// Requests that have a slot and are waiting for their new connection to open.
    pub pending: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Requests holding a connection.
    pub running: usize,
    /// `pending + queued + running`.
    pub size: usize,
    pub connections_opened: u64,
    pub connections_closed: u64,
    /// Checkouts served by an already open connection.
    pub reused: u64,
    /// Open multiplexed (HTTP/2) connections, counted in `connected` too.
    pub multiplexed: usize,
    /// Requests in flight on multiplexed connections, counted in `running` too.
    pub streams: usize,
}

struct Idle<C> {
    conn: C,
    expires: Instant,
}

/// A multiplexed connection and its streams.
struct Multiplexed<C> {
    id: u64,
    /// The pool's own handle; each stream gets another (`Connect::share`).
    conn: C,
    streams: usize,
    /// Takes no new streams (the server is going away, or refused stream after stream).
    retired: bool,
    /// Streams it refused (`REFUSED_STREAM`) since it last served one.
    refusals: u32,
    /// Streams handed out on it in its life, and those that were served (released after their
    /// answer was read).
    started: usize,
    served: usize,
    /// Retired because the server went away (GOAWAY) or closed it.
    went_away: bool,
    /// With no stream: when it closes.
    expires: Option<Instant>,
}

struct State<K: Connect> {
    /// Oldest first; checkout pops from the back so the most recently used is reused first.
    idle: Vec<Idle<K::Conn>>,
    multiplexed: Vec<Multiplexed<K::Conn>>,
    next_id: u64,
    busy: usize,
    connecting: usize,
    waiters: VecDeque<oneshot::Sender<Grant<K>>>,
    closed: bool,
    reaper_running: bool,
    /// How many streams this origin's server serves on one connection before it ends it with a
    /// GOAWAY (nginx's `keepalive_requests`, 1000 by default), as learnt from connections that
    /// went away with streams unserved; `usize::MAX` while unknown. A connection that has
    /// started this many takes no more (it is spent): a burst spreads over new connections
    /// instead of piling onto one the server will end. Forgotten after [`BUDGET_MEMORY`]: a
    /// GOAWAY of a server being restarted must not pin it low for the pool's life.
    stream_budget: usize,
    budget_learnt: Option<Instant>,
}

impl<K: Connect> State<K> {
    fn total(&self) -> usize {
        let live = self
            .multiplexed
            .iter()
            .filter(|m| !m.retired && m.started < self.stream_budget)
            .count();
        self.idle.len() + self.busy + self.connecting + live
    }

    /// A multiplexed connection that takes no new streams: retired, closed, or spent (it has
    /// started its whole stream budget). It only drains what it carries.
    fn takes_no_streams(&self, entry: &Multiplexed<K::Conn>) -> bool {
        entry.retired || K::is_closed(&entry.conn) || entry.started >= self.stream_budget
    }

    /// Streams multiplexed connection `entry` may take now: its room under the server's limit
    /// and `maxConcurrentStreams`, within what is left of its stream budget.
    fn room(&self, entry: &Multiplexed<K::Conn>, max_streams: usize) -> usize {
        if entry.retired || K::is_closed(&entry.conn) {
            return 0;
        }
        let concurrent = K::stream_limit(&entry.conn)
            .min(max_streams)
            .saturating_sub(entry.streams);
        concurrent.min(self.stream_budget.saturating_sub(entry.started))
    }

    /// A multiplexed connection that takes no new streams (retired, closed or spent) and carries
    /// none is closed: what its life says about the server's stream budget is learnt first.
    fn remove_multiplexed(&mut self, at: usize) -> K::Conn {
        let entry = self.multiplexed.remove(at);
        if entry.went_away && entry.served < entry.started {
            // The server ended it with streams unserved: that many is what it serves.
            self.stream_budget = entry.served.max(1);
            self.budget_learnt = Some(Instant::now());
        }
        entry.conn
    }

    /// Forgets a stream budget learnt more than [`BUDGET_MEMORY`] ago.
    fn forget_old_budget(&mut self, now: Instant) {
        if self
            .budget_learnt
            .is_some_and(|at| now.duration_since(at) >= BUDGET_MEMORY)
        {
            self.stream_budget = usize::MAX;
            self.budget_learnt = None;
        }
    }

    /// A live multiplexed connection whose server allows no stream now: callers wait for it.
    fn has_closed_window(&self) -> bool {
        self.multiplexed
            .iter()
            .any(|m| !m.retired && K::stream_limit(&m.conn) == 0)
    }
}

struct Shared<K: Connect> {
    connector: K,
    limits: PoolLimits,
    state: Mutex<State<K>>,
    queued: AtomicUsize,
    opened: AtomicU64,
    closed: AtomicU64,
    reused: AtomicU64,
}

/// What a waiter receives: a live connection or the right to open one. Both are guards, so a
/// grant dropped unread (its waiter was cancelled in the same instant) still frees its slot.
enum Grant<K: Connect> {
    Conn(Lease<K>),
    Permit(Permit<K>),
}

/// A per-origin pool. Cheap to clone (one `Arc`).
pub struct Pool<K: Connect> {
    shared: Arc<Shared<K>>,
}

impl<K: Connect> Clone for Pool<K> {
    fn clone(&self) -> Self {
        Pool {
            shared: self.shared.clone(),
        }
    }
}

/// What `checkout` does next, decided under the lock and carried out after it is released.
enum Step<K: Connect> {
    Ready(Lease<K>),
    Connect(Permit<K>),
    Wait(oneshot::Receiver<Grant<K>>),
}

impl<K: Connect> Pool<K> {
    pub fn new(connector: K, limits: PoolLimits) -> Self {
        Pool {
            shared: Arc::new(Shared {
                connector,
                limits,
                state: Mutex::new(State {
                    idle: Vec::new(),
                    multiplexed: Vec::new(),
                    next_id: 0,
                    busy: 0,
                    connecting: 0,
                    waiters: VecDeque::new(),
                    closed: false,
                    reaper_running: false,
                    stream_budget: usize::MAX,
                    budget_learnt: None,
                }),
                queued: AtomicUsize::new(0),
                opened: AtomicU64::new(0),
                closed: AtomicU64::new(0),
                reused: AtomicU64::new(0),
            }),
        }
    }

    /// A connection for one request: a live idle one (most recent first), a new one if the cap
    /// allows, or the next one to free up, waiting at most `pool_timeout`.
    ///
    /// `fresh` skips idle connections (used to resend on a new socket after a reused one failed).
    pub async fn checkout(&self, fresh: bool) -> Result<Lease<K>, Error> {
        let (step, dead) = {
            let mut state = self.shared.lock();
            self.shared.next_step(&mut state, fresh)?
        };
        drop(dead);
        match step {
            Step::Ready(lease) => Ok(lease),
            // Boxed: opening a connection (TCP, TLS, handshake) is a large future, and only the
            // rare checkout that connects should carry it.
            Step::Connect(permit) => self.opened(Box::pin(permit.open()).await?).await,
            Step::Wait(rx) => Box::pin(self.wait(rx)).await,
        }
    }

    async fn opened(&self, opened: Opened<K>) -> Result<Lease<K>, Error> {
        match opened {
            Opened::Lease(lease) => Ok(lease),
            Opened::Wait(rx) => Box::pin(self.wait(rx)).await,
        }
    }

    async fn wait(&self, mut rx: oneshot::Receiver<Grant<K>>) -> Result<Lease<K>, Error> {
        let _queued = QueuedGuard::new(&self.shared);
        let received = match self.shared.limits.pool_timeout {
            None => (&mut rx).await,
            Some(limit) => match tokio::time::timeout(limit, &mut rx).await {
                Ok(received) => received,
                Err(_) => {
                    // A grant may have been sent in the instant the timer fired: take it rather
                    // than lose it; otherwise no grant can arrive any more.
                    rx.close();
                    match rx.try_recv() {
                        Ok(grant) => Ok(grant),
                        Err(_) => {
                            return Err(Error::timed_out(
                                Kind::PoolTimeout,
                                &self.shared.limits.origin,
                                "waiting for a free connection",
                                limit,
                            ))
                        }
                    }
                }
            },
        };
        match received {
            // A grant sent in the instant the pool closed (`destroy()`): nothing new is sent.
            Ok(grant) if self.shared.lock().closed => {
                drop(grant);
                Err(self.shared.closed_error())
            }
            Ok(Grant::Conn(lease)) => {
                self.shared.reused.fetch_add(1, Ordering::Relaxed);
                Ok(lease)
            }
            Ok(Grant::Permit(permit)) => {
                let opened = Box::pin(permit.open()).await?;
                Box::pin(self.opened(opened)).await
            }
            Err(_) => Err(self.shared.closed_error()),
        }
    }

    pub fn stats(&self) -> PoolStats {
        let state = self.shared.lock();
        let queued = self.shared.queued.load(Ordering::Relaxed);
        let streams: usize = state.multiplexed.iter().map(|m| m.streams).sum();
        let unused = state.multiplexed.iter().filter(|m| m.streams == 0).count();
        PoolStats {
            connected: state.idle.len() + state.busy + state.multiplexed.len(),
            free: state.idle.len() + unused,
            pending: state.connecting,
            queued,
            running: state.busy + streams,
            size: state.connecting + queued + state.busy + streams,
            connections_opened: self.shared.opened.load(Ordering::Relaxed),
            connections_closed: self.shared.closed.load(Ordering::Relaxed),
            reused: self.shared.reused.load(Ordering::Relaxed),
            multiplexed: state.multiplexed.len(),
            streams,
        }
    }

    /// Stops handing out connections: idle ones are closed, waiters fail with `ERR_CLOSED`, and
    /// leases still out are closed when they come back.
    pub fn close(&self) {
        let (idle, multiplexed, waiters) = {
            let mut state = self.shared.lock();
            state.closed = true;
            (
                std::mem::take(&mut state.idle),
                std::mem::take(&mut state.multiplexed),
                std::mem::take(&mut state.waiters),
            )
        };
        self.shared
            .closed
            .fetch_add((idle.len() + multiplexed.len()) as u64, Ordering::Relaxed);
        drop(idle);
        drop(multiplexed);
        drop(waiters);
    }
}

impl<K: Connect> Shared<K> {
    fn lock(&self) -> MutexGuard<'_, State<K>> {
        // Nothing panics while holding the lock, but a poisoned pool must still not panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn closed_error(&self) -> Error {
        Error::new(
            Kind::Closed,
            format!("client for {} is closed", self.limits.origin),
        )
    }

    fn at_cap(&self, state: &State<K>) -> bool {
        self.limits
            .max_connections
            .is_some_and(|cap| state.total() >= cap)
    }

    /// Decides the next step of a checkout. Connections found dead are returned to be dropped
    /// after the lock is released.
    #[allow(clippy::type_complexity)]
    fn next_step(
        self: &Arc<Self>,
        state: &mut State<K>,
        fresh: bool,
    ) -> Result<(Step<K>, Vec<K::Conn>), Error> {
        if state.closed {
            return Err(self.closed_error());
        }
        let mut dead = Vec::new();
        let now = Instant::now();
        state.forget_old_budget(now);
        // A stream on a multiplexed connection with room: the cheapest of all.
        if let Some(lease) = self.open_stream(state, now, &mut dead) {
            self.reused.fetch_add(1, Ordering::Relaxed);
            self.closed.fetch_add(dead.len() as u64, Ordering::Relaxed);
            return Ok((Step::Ready(lease), dead));
        }
        if !fresh {
            while let Some(idle) = state.idle.pop() {
                if idle.expires <= now || K::is_closed(&idle.conn) {
                    dead.push(idle.conn);
                    continue;
                }
                state.busy += 1;
                self.reused.fetch_add(1, Ordering::Relaxed);
                self.closed.fetch_add(dead.len() as u64, Ordering::Relaxed);
                tracing::debug!(
                    origin = self.limits.origin.as_str(),
                    "reusing an idle connection"
                );
                return Ok((Step::Ready(Lease::new(idle.conn, self.clone())), dead));
            }
        } else if self.at_cap(state) && !state.idle.is_empty() {
            // Make room for the fresh connection by closing the oldest idle one.
            dead.push(state.idle.remove(0).conn);
        }
        self.closed.fetch_add(dead.len() as u64, Ordering::Relaxed);
        // While connections are being opened, later requests wait to ride them, as many as they
        // will carry (a server's stream budget may make that few); beyond, another opens.
        let carried = state
            .connecting
            .saturating_mul(self.limits.max_streams.min(state.stream_budget));
        let ride_the_next = self.limits.expect_multiplexed
            && ((state.connecting > 0 && state.waiters.len() < carried)
                || state.has_closed_window());
        if !self.at_cap(state) && !ride_the_next {
            state.connecting += 1;
            return Ok((Step::Connect(Permit::armed(self.clone())), dead));
        }
        let (tx, rx) = oneshot::channel();
        state.waiters.push_back(tx);
        if !state.multiplexed.is_empty() {
            // A window the server closed is looked at again by the reaper.
            self.ensure_reaper(state);
        }
        tracing::trace!(
            origin = self.limits.origin.as_str(),
            queued = state.waiters.len(),
            "waiting for a connection"
        );
        Ok((Step::Wait(rx), dead))
    }

    /// A new stream on the first multiplexed connection with room (under the lock); dead
    /// connections without streams are taken out into `dead`.
    fn open_stream(
        self: &Arc<Self>,
        state: &mut State<K>,
        now: Instant,
        dead: &mut Vec<K::Conn>,
    ) -> Option<Lease<K>> {
        let mut i = 0;
        while i < state.multiplexed.len() {
            let entry = &state.multiplexed[i];
            let gone = state.takes_no_streams(entry);
            if gone || entry.expires.is_some_and(|at| at <= now) {
                if entry.streams == 0 {
                    dead.push(state.remove_multiplexed(i));
                    continue;
                }
                if gone {
                    i += 1;
                    continue;
                }
            }
            if state.room(&state.multiplexed[i], self.limits.max_streams) > 0 {
                let entry = &mut state.multiplexed[i];
                if let Some(handle) = K::share(&entry.conn) {
                    entry.streams += 1;
                    entry.started += 1;
                    entry.expires = None;
                    return Some(Lease::stream(handle, self.clone(), entry.id));
                }
            }
            i += 1;
        }
        None
    }

    /// Hands streams of multiplexed connection `id` to waiters while it has room (under the lock).
    fn serve_waiters_with_streams(self: &Arc<Self>, state: &mut State<K>, id: u64) {
        while !state.waiters.is_empty() {
            let Some(at) = state.multiplexed.iter().position(|m| m.id == id) else {
                return;
            };
            if state.room(&state.multiplexed[at], self.limits.max_streams) == 0 {
                return;
            }
            let entry = &mut state.multiplexed[at];
            let Some(handle) = K::share(&entry.conn) else {
                return;
            };
            entry.streams += 1;
            entry.started += 1;
            entry.expires = None;
            let tx = state.waiters.pop_front().expect("a waiter");
            let lease = Lease::stream(handle, self.clone(), id);
            if let Err(grant) = tx.send(Grant::Conn(lease)) {
                // That waiter is gone: take the stream back here, under the lock we hold.
                grant.disarm();
                if let Some(entry) = state.multiplexed.iter_mut().find(|m| m.id == id) {
                    entry.streams -= 1;
                    entry.started -= 1;
                }
            }
        }
    }

    /// A stream of multiplexed connection `id` ended.
    fn end_stream(self: &Arc<Self>, id: u64) {
        let mut dead = None;
        {
            let mut state = self.lock();
            let Some(at) = state.multiplexed.iter().position(|m| m.id == id) else {
                return;
            };
            state.multiplexed[at].streams -= 1;
            if !state.closed {
                self.serve_waiters_with_streams(&mut state, id);
            }
            let pool_closed = state.closed;
            if let Some(at) = state.multiplexed.iter().position(|m| m.id == id) {
                if state.multiplexed[at].streams == 0 {
                    if pool_closed || state.takes_no_streams(&state.multiplexed[at]) {
                        dead = Some(state.remove_multiplexed(at));
                        self.closed.fetch_add(1, Ordering::Relaxed);
                        self.fill_waiters(&mut state);
                    } else {
                        state.multiplexed[at].expires =
                            Some(Instant::now() + self.limits.idle_timeout);
                        self.ensure_reaper(&mut state);
                    }
                }
            }
        }
        drop(dead);
    }

    /// Multiplexed connection `id` takes no new streams. Its slot is free from now on: waiters
    /// get the right to open a connection that can carry them.
    fn retire(self: &Arc<Self>, id: u64) {
        self.retire_for(id, true);
    }

    /// Retires connection `id`; `went_away`: the server ended it (GOAWAY, or closed it), rather
    /// than refusing stream after stream.
    fn retire_for(self: &Arc<Self>, id: u64, went_away: bool) {
        let mut state = self.lock();
        if let Some(entry) = state.multiplexed.iter_mut().find(|m| m.id == id) {
            if entry.retired {
                return;
            }
            entry.retired = true;
            entry.went_away = went_away;
        }
        self.fill_waiters(&mut state);
    }

    /// Multiplexed connection `id` refused a stream. One refusal says the server is busy, not
    /// that the connection is bad; [`MAX_REFUSALS`] in a row retire it.
    fn refused(self: &Arc<Self>, id: u64) {
        let retire = {
            let mut state = self.lock();
            state
                .multiplexed
                .iter_mut()
                .find(|m| m.id == id)
                .is_some_and(|entry| {
                    entry.refusals += 1;
                    entry.refusals >= MAX_REFUSALS
                })
        };
        if retire {
            self.retire_for(id, false);
        }
    }

    /// Multiplexed connection `id` served a stream: its refusals start again from zero.
    fn served(&self, id: u64) {
        if let Some(entry) = self.lock().multiplexed.iter_mut().find(|m| m.id == id) {
            entry.refusals = 0;
            entry.served += 1;
        }
    }

    /// While waiters wait and the cap has room, each gets the right to open a connection.
    fn fill_waiters(self: &Arc<Self>, state: &mut State<K>) {
        while !state.closed && !state.waiters.is_empty() && !self.at_cap(state) {
            let before = state.waiters.len();
            self.hand_permit_to_waiter(state);
            if state.waiters.len() == before {
                return;
            }
        }
    }

    /// A slot just freed (under the lock): give the right to connect to the first live waiter.
    fn hand_permit_to_waiter(self: &Arc<Self>, state: &mut State<K>) {
        while let Some(tx) = state.waiters.pop_front() {
            state.connecting += 1;
            match tx.send(Grant::Permit(Permit::armed(self.clone()))) {
                Ok(()) => return,
                Err(grant) => {
                    // The waiter is gone: take the slot back here, under the lock we hold.
                    grant.disarm();
                    state.connecting -= 1;
                }
            }
        }
    }

    /// A lease comes back with a connection that must not be reused.
    fn discard(self: &Arc<Self>, conn: K::Conn) {
        {
            let mut state = self.lock();
            state.busy -= 1;
            self.closed.fetch_add(1, Ordering::Relaxed);
            if !state.closed {
                self.hand_permit_to_waiter(&mut state);
            }
        }
        drop(conn);
    }

    /// A lease comes back with a healthy connection, reusable for `lifetime`.
    fn check_in(self: &Arc<Self>, conn: K::Conn, lifetime: Duration) {
        let mut conn = Some(conn);
        {
            let mut state = self.lock();
            if !state.closed {
                while let Some(tx) = state.waiters.pop_front() {
                    // The connection stays counted busy: it moves straight to the waiter.
                    let lease = Lease::new(conn.take().expect("conn present"), self.clone());
                    match tx.send(Grant::Conn(lease)) {
                        Ok(()) => return,
                        Err(grant) => conn = grant.disarm(),
                    }
                }
                state.busy -= 1;
                state.idle.push(Idle {
                    conn: conn.take().expect("conn present"),
                    expires: Instant::now() + lifetime,
                });
                self.ensure_reaper(&mut state);
                return;
            }
            state.busy -= 1;
            self.closed.fetch_add(1, Ordering::Relaxed);
        }
        drop(conn);
    }

    /// Idle connections expire even when nobody checks one out: one task per pool sleeps until
    /// the next expiry (or at most a second, to notice sockets the server closed) and exits when
    /// nothing is idle. It holds only a weak reference, so it never keeps a dropped pool alive.
    fn ensure_reaper(self: &Arc<Self>, state: &mut State<K>) {
        if state.reaper_running {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        state.reaper_running = true;
        let weak = Arc::downgrade(self);
        handle.spawn(reap_idle::<K>(weak));
    }
}

impl<K: Connect> Grant<K> {
    /// Takes the guard apart without its `Drop` bookkeeping (the caller holds the lock and does
    /// the bookkeeping itself). Returns the connection of a `Conn` grant.
    fn disarm(self) -> Option<K::Conn> {
        match self {
            Grant::Conn(mut lease) => lease.conn.take(),
            Grant::Permit(mut permit) => {
                permit.shared = None;
                None
            }
        }
    }
}

const REAPER_MAX_SLEEP: Duration = Duration::from_secs(1);

/// How long a learnt stream budget holds (see `State::stream_budget`).
const BUDGET_MEMORY: Duration = Duration::from_secs(60);

/// Refused streams in a row after which a multiplexed connection is retired.
pub const MAX_REFUSALS: u32 = 3;

async fn reap_idle<K: Connect>(weak: Weak<Shared<K>>) {
    loop {
        let wake_at = {
            let Some(shared) = weak.upgrade() else {
                return;
            };
            // Sockets are read outside the lock: probes are collected under it, run after it.
            let probes: Vec<_> = shared
                .lock()
                .idle
                .iter()
                .filter_map(|entry| K::prober(&entry.conn))
                .collect();
            for probe in probes {
                probe();
            }
            let now = Instant::now();
            let mut dead = Vec::new();
            let next = {
                let mut state = shared.lock();
                let mut i = 0;
                while i < state.idle.len() {
                    let entry = &state.idle[i];
                    if entry.expires <= now || K::is_closed(&entry.conn) {
                        dead.push(state.idle.remove(i).conn);
                    } else {
                        i += 1;
                    }
                }
                let mut i = 0;
                while i < state.multiplexed.len() {
                    let entry = &state.multiplexed[i];
                    let unused = entry.streams == 0;
                    let over = entry.expires.is_some_and(|at| at <= now)
                        || entry.retired
                        || K::is_closed(&entry.conn);
                    if unused && over {
                        dead.push(state.remove_multiplexed(i));
                    } else {
                        i += 1;
                    }
                }
                if !dead.is_empty() {
                    shared.fill_waiters(&mut state);
                }
                // A server that allowed no stream may allow some now.
                if !state.closed && !state.waiters.is_empty() {
                    let ids: Vec<u64> = state.multiplexed.iter().map(|m| m.id).collect();
                    for id in ids {
                        shared.serve_waiters_with_streams(&mut state, id);
                    }
                }
                if !dead.is_empty() {
                    shared
                        .closed
                        .fetch_add(dead.len() as u64, Ordering::Relaxed);
                }
                let next = state
                    .idle
                    .iter()
                    .map(|e| e.expires)
                    .chain(state.multiplexed.iter().filter_map(|m| m.expires))
                    .min();
                // Waiters behind a closed window keep the reaper looking.
                let next = match next {
                    None if !state.waiters.is_empty() && !state.multiplexed.is_empty() => {
                        Some(now + REAPER_MAX_SLEEP)
                    }
                    next => next,
                };
                if next.is_none() {
                    state.reaper_running = false;
                }
                next
            };
            drop(dead);
            match next {
                None => return,
                Some(at) => at.min(now + REAPER_MAX_SLEEP),
            }
        };
        tokio::time::sleep_until(wake_at).await;
    }
}

/// Counts a waiter in `stats().queued` for as long as it waits.
struct QueuedGuard<'a, K: Connect>(&'a Shared<K>);

impl<'a, K: Connect> QueuedGuard<'a, K> {
    fn new(shared: &'a Shared<K>) -> Self {
        shared.queued.fetch_add(1, Ordering::Relaxed);
        QueuedGuard(shared)
    }
}

impl<K: Connect> Drop for QueuedGuard<'_, K> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The right to open one connection: a slot counted as `connecting`. Dropping it unused (a
/// failed or cancelled connect) frees the slot for the next waiter.
pub struct Permit<K: Connect> {
    shared: Option<Arc<Shared<K>>>,
}

impl<K: Connect> Permit<K> {
    fn armed(shared: Arc<Shared<K>>) -> Self {
        Permit {
            shared: Some(shared),
        }
    }

    async fn open(mut self) -> Result<Opened<K>, Error> {
        let shared = self.shared.clone().expect("armed permit");
        let conn = shared.connector.connect().await?;
        // Disarm: the slot moves from `connecting` to `busy` (or to a multiplexed entry) below.
        self.shared = None;
        shared.opened.fetch_add(1, Ordering::Relaxed);
        let (lease, closed) = {
            let mut state = shared.lock();
            state.connecting -= 1;
            let lease = match K::share(&conn) {
                Some(handle) => {
                    let id = state.next_id;
                    state.next_id += 1;
                    // The opener takes the first stream, if the server allows one now.
                    let limit = K::stream_limit(&conn).min(shared.limits.max_streams);
                    state.multiplexed.push(Multiplexed {
                        id,
                        conn,
                        streams: usize::from(limit > 0),
                        retired: false,
                        refusals: 0,
                        started: usize::from(limit > 0),
                        served: 0,
                        went_away: false,
                        expires: None,
                    });
                    // Requests queued behind the cap (or behind this connect) ride it at once;
                    // if it is full and some still wait, the next connection opens.
                    if !state.closed {
                        shared.serve_waiters_with_streams(&mut state, id);
                        if !state.waiters.is_empty() && !shared.at_cap(&state) {
                            shared.hand_permit_to_waiter(&mut state);
                        }
                    }
                    if limit == 0 {
                        // The server allows no stream yet: the opener waits like any caller.
                        let (tx, rx) = oneshot::channel();
                        state.waiters.push_back(tx);
                        shared.ensure_reaper(&mut state);
                        return Ok(Opened::Wait(rx));
                    }
                    Lease::stream(handle, shared.clone(), id)
                }
                None => {
                    state.busy += 1;
                    // Waiters held back for a connection that turned out one-at-a-time open
                    // their own, up to the cap.
                    while !state.closed && !state.waiters.is_empty() && !shared.at_cap(&state) {
                        shared.hand_permit_to_waiter(&mut state);
                    }
                    Lease::new(conn, shared.clone())
                }
            };
            (lease, state.closed)
        };
        if closed {
            drop(lease);
            return Err(shared.closed_error());
        }
        Ok(Opened::Lease(lease))
    }
}

/// What opening a connection gave its opener: a lease, or a place among the waiters (a
/// multiplexed connection whose server allows no stream yet).
enum Opened<K: Connect> {
    Lease(Lease<K>),
    Wait(oneshot::Receiver<Grant<K>>),
}

impl<K: Connect> Drop for Permit<K> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let mut state = shared.lock();
            state.connecting -= 1;
            if !state.closed {
                shared.hand_permit_to_waiter(&mut state);
            }
        }
    }
}

/// A connection checked out for one request. Give it back with [`Lease::release`] once the
/// response was read to the end; dropping it closes the connection (an abandoned body must never
/// be reused) and frees the slot.
pub struct Lease<K: Connect> {
    conn: Option<K::Conn>,
    shared: Arc<Shared<K>>,
    /// The multiplexed connection this is a stream of; `None` for a whole connection.
    stream_of: Option<u64>,
}

impl<K: Connect> Lease<K> {
    fn new(conn: K::Conn, shared: Arc<Shared<K>>) -> Self {
        Lease {
            conn: Some(conn),
            shared,
            stream_of: None,
        }
    }

    fn stream(conn: K::Conn, shared: Arc<Shared<K>>, id: u64) -> Self {
        Lease {
            conn: Some(conn),
            shared,
            stream_of: Some(id),
        }
    }

    /// Whether this is one stream of a multiplexed connection.
    pub fn is_stream(&self) -> bool {
        self.stream_of.is_some()
    }

    /// The connection is going away (GOAWAY) or was found closed: it takes no new streams (the
    /// ones it carries go on).
    pub fn retire(&self) {
        if let Some(id) = self.stream_of {
            self.shared.retire(id);
        }
    }

    /// The server refused this stream (`REFUSED_STREAM`): counted on its connection, which is
    /// retired after [`MAX_REFUSALS`] in a row.
    pub fn refused(&self) {
        if let Some(id) = self.stream_of {
            self.shared.refused(id);
        }
    }

    pub fn conn(&mut self) -> &mut K::Conn {
        self.conn
            .as_mut()
            .expect("lease holds a connection until released")
    }

    /// Returns the connection for reuse within `lifetime`, or closes it when `lifetime` is `None`
    /// or the connection is no longer usable.
    pub fn release(mut self, lifetime: Option<Duration>) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if let Some(id) = self.stream_of {
            // A stream ends the same way whether its body was read or not: only the stream is
            // reset, the connection goes on.
            drop(conn);
            self.shared.served(id);
            self.shared.end_stream(id);
            return;
        }
        match lifetime {
            Some(lifetime) if !K::is_closed(&conn) => self.shared.check_in(conn, lifetime),
            _ => self.shared.discard(conn),
        }
    }
}

impl<K: Connect> Drop for Lease<K> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            match self.stream_of {
                Some(id) => {
                    drop(conn);
                    self.shared.end_stream(id);
                }
                None => self.shared.discard(conn),
            }
        }
    }
}

#[cfg(test)]
mod tests;
