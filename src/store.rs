//! The shared limiter store: GCRA state and provider pauses in Redis, so that every process of
//! a fleet obeys one limit.
//!
//! One Lua script (run by `EVALSHA`, loaded on first use) decides a call: it reads the
//! upstream's pause and its request and token "theoretical arrival times", takes both or
//! neither, and answers 0 (go) or how long to wait. Time is Redis's own (`TIME`), so that
//! machines with drifting clocks agree. Reservations are corrected, and 429 pauses shared, by
//! two more small scripts, fire and forget.
//!
//! Redis down or slow never holds a call: every round trip has a short deadline; a failure
//! marks the store down (logged once per outage, counted), calls use the local limiter, and
//! after a second the store is tried again and, answering, is used again.
//!
//! Where the store is: one Redis (`redis://`, or `rediss://` over TLS, with an ACL user or a
//! password in the URL) or a Redis Cluster (`cluster: true`, seed URLs). Connecting (TCP, the
//! TLS handshake, AUTH, for a cluster its slot map) has its own deadline and starts when the
//! client is built, so that a handshake never eats the first call's round-trip deadline. Every
//! script's keys share one hash tag per scope (`{prefix:upstream}:rpm`): one slot, so that a
//! cluster can run the script, while different upstreams spread over the cluster's nodes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionAddr, IntoConnectionInfo, RedisFuture};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::TlsTrust;

/// Longest round trip before the store counts as down for this call.
pub const ROUND_TRIP_DEADLINE: Duration = Duration::from_millis(250);
/// Longest connect (TCP, TLS handshake, AUTH, a cluster's slot map): its own deadline, apart
/// from the round trip's.
pub const CONNECT_DEADLINE: Duration = Duration::from_millis(1500);
/// How long a store found down is left alone before it is tried again.
pub const RETRY_DOWN_AFTER: Duration = Duration::from_secs(1);

const ACQUIRE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local paused = redis.call('PTTL', KEYS[3])
if paused > 0 then return paused * 1000 end
local function ready(key, interval, burst, units)
  if interval <= 0 then return 0, 0 end
  local stored = redis.call('GET', key)
  local tat = now
  if stored then tat = math.max(tonumber(stored), now) end
  local after = tat + interval * units
  if after - now <= burst or tat == now then return 0, after end
  return after - burst - now, 0
end
local w1, t1 = ready(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), 1)
local w2, t2 = ready(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
local wait = math.max(w1, w2)
if wait > 0 then return math.ceil(wait) end
if t1 > 0 then redis.call('SET', KEYS[1], string.format('%.0f', t1), 'PX', math.ceil((t1 - now) / 1000) + 1000) end
if t2 > 0 then redis.call('SET', KEYS[2], string.format('%.0f', t2), 'PX', math.ceil((t2 - now) / 1000) + 1000) end
return 0
"#;

const CORRECT: &str = r#"
local stored = redis.call('GET', KEYS[1])
if not stored then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = math.max(tonumber(stored) + tonumber(ARGV[1]), now)
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return 0
"#;

const PAUSE: &str = r#"
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 0
"#;

/// One GCRA dimension as the script takes it: µs per unit and µs of burst; 0/0 = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rate {
    pub interval_us: u64,
    pub burst_us: u64,
}

/// The keys of one scope (an upstream, or the whole client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub requests: String,
    pub tokens: String,
    pub pause: String,
}

/// What the store said of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Go,
    /// Ask again after this long.
    Wait(Duration),
    /// The store is down: decide locally.
    Unavailable,
}

/// Counters of the store, for stats and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub up: bool,
    /// Round trips that failed or ran past their deadline.
    pub errors: u64,
    /// Calls decided by the local limiter because the store was down.
    pub fallbacks: u64,
}

/// Where the store is (`store: { redis, cluster, tls }`), checked by [`StoreTarget::check`].
#[derive(Clone, PartialEq, Eq)]
pub struct StoreTarget {
    /// One URL, or a cluster's seed nodes.
    pub urls: Vec<String>,
    pub cluster: bool,
    /// `rediss://`: the TLS settings (`store.tls`, or the defaults when absent).
    pub tls: Option<TlsTrust>,
}

impl std::fmt::Debug for StoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A URL may hold a password: only how many there are.
        f.debug_struct("StoreTarget")
            .field("urls", &self.urls.len())
            .field("cluster", &self.cluster)
            .field("tls", &self.tls)
            .finish()
    }
}

impl StoreTarget {
    /// A plain single Redis at `url`.
    pub fn single(url: &str) -> StoreTarget {
        StoreTarget {
            urls: vec![url.to_owned()],
            cluster: false,
            tls: url.starts_with("rediss://").then(TlsTrust::default),
        }
    }

    /// Checks the shape without connecting; the error names the option it is about.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.urls.is_empty() {
            return Err(("store.redis", "must list at least one seed URL".into()));
        }
        if self.urls.len() > 1 && !self.cluster {
            return Err((
                "store.redis",
                "lists several URLs: that is a cluster's seed nodes, and needs cluster: true"
                    .into(),
            ));
        }
        for url in &self.urls {
            check_url(url).map_err(|why| ("store.redis", why.to_owned()))?;
        }
        let secure = self.urls[0].starts_with("rediss://");
        if self
            .urls
            .iter()
            .any(|u| u.starts_with("rediss://") != secure)
        {
            return Err((
                "store.redis",
                "mixes redis:// and rediss:// URLs: a cluster is all TLS or none".into(),
            ));
        }
        match &self.tls {
            Some(_) if !secure => {
                return Err((
                    "store.tls",
                    "needs rediss:// URLs (TLS is chosen by the scheme)".into(),
                ))
            }
            Some(tls) if self.cluster && tls.servername.is_some() => {
                return Err((
                    "store.tls.servername",
                    "cannot be used with cluster: true (each node is checked against the \
                     address the cluster announces)"
                        .into(),
                ))
            }
            _ => {}
        }
        if self.cluster
            && self.urls.iter().any(|u| {
                u.split_once("://")
                    .map(|(_, rest)| rest.split_once('/').is_some_and(|(_, db)| !db.is_empty()))
                    .unwrap_or(false)
            })
        {
            return Err((
                "store.redis",
                "names a database: a cluster has only database 0".into(),
            ));
        }
        Ok(())
    }
}

/// How to reach the store: redis-rs's client for one Redis or for a cluster.
enum Connector {
    Single {
        client: redis::Client,
        config: redis::AsyncConnectionConfig,
    },
    Cluster(redis::cluster::ClusterClient),
}

/// An open connection (both kinds multiplex: clones share it).
#[derive(Clone)]
enum Link {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Link::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

/// `store.tls.servername`: the URL's host is replaced by the name (so that redis-rs sends it as
/// SNI and checks the certificate against it), and this resolver sends that name to the
/// URL's real host.
struct ResolveServername {
    servername: String,
    host: String,
}

impl redis::io::AsyncDNSResolver for ResolveServername {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> RedisFuture<'a, Box<dyn Iterator<Item = std::net::SocketAddr> + Send + 'a>> {
        let host = if host == self.servername {
            self.host.clone()
        } else {
            host.to_owned()
        };
        Box::pin(async move {
            let found: Vec<_> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect();
            Ok(Box::new(found.into_iter()) as Box<dyn Iterator<Item = _> + Send>)
        })
    }
}

fn certificates(tls: &TlsTrust) -> Option<redis::TlsCertificates> {
    if tls.ca.is_empty() && tls.cert.is_none() {
        return None;
    }
    Some(redis::TlsCertificates {
        client_tls: tls.cert.as_ref().zip(tls.key.as_ref()).map(|(cert, key)| {
            redis::ClientTlsConfig {
                client_cert: cert.clone().into_bytes(),
                client_key: key.clone().into_bytes(),
            }
        }),
        root_cert: (!tls.ca.is_empty()).then(|| tls.ca.concat().into_bytes()),
    })
}

/// Errors of building a connector never carry a URL (it may hold a password).
fn quiet(e: redis::RedisError) -> String {
    format!("{:?}: {}", e.kind(), e.detail().unwrap_or("not usable"))
}

impl Connector {
    fn new(target: &StoreTarget) -> Result<Connector, String> {
        let certs = target.tls.as_ref().and_then(certificates);
        let insecure = target.tls.as_ref().is_some_and(|t| !t.reject_unauthorized);
        if target.cluster {
            let mut builder =
                redis::cluster::ClusterClient::builder(target.urls.iter().map(String::as_str))
                    .connection_timeout(CONNECT_DEADLINE)
                    .response_timeout(ROUND_TRIP_DEADLINE)
                    // A redirection (MOVED/ASK) is followed at once; a node that does not answer is
                    // the store being down for this call, not something to wait out.
                    .retries(1)
                    .min_retry_wait(10)
                    .max_retry_wait(100);
            if target.tls.is_some() {
                builder = builder.tls(if insecure {
                    redis::TlsMode::Insecure
                } else {
                    redis::TlsMode::Secure
                });
            }
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            return builder.build().map(Connector::Cluster).map_err(quiet);
        }
        let mut info = target.urls[0]
            .as_str()
            .into_connection_info()
            .map_err(quiet)?;
        let mut config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_DEADLINE))
            .set_response_timeout(Some(ROUND_TRIP_DEADLINE));
        if let ConnectionAddr::TcpTls {
            host,
            port,
            tls_params,
            ..
        } = info.addr().clone()
        {
            let servername = target.tls.as_ref().and_then(|t| t.servername.clone());
            if let Some(servername) = &servername {
                config = config.set_dns_resolver(ResolveServername {
                    servername: servername.clone(),
                    host: host.trim_matches(['[', ']']).to_owned(),
                });
            }
            info = info.set_addr(ConnectionAddr::TcpTls {
                host: servername.unwrap_or(host),
                port,
                insecure,
                tls_params,
            });
        }
        let client = match certs {
            Some(certs) => redis::Client::build_with_tls(info, certs),
            None => redis::Client::open(info),
        }
        .map_err(quiet)?;
        Ok(Connector::Single { client, config })
    }

    async fn connect(&self) -> redis::RedisResult<Link> {
        match self {
            Connector::Single { client, config } => client
                .get_multiplexed_async_connection_with_config(config)
                .await
                .map(Link::Single),
            Connector::Cluster(client) => client.get_async_connection().await.map(Link::Cluster),
        }
    }
}

/// One round trip's work: a script (loaded on first use), or plain commands.
enum Ask<'a> {
    Script(redis::ScriptInvocation<'a>),
    Commands(redis::Pipeline),
}

/// The connection's state, watched by calls waiting for a connect in progress.
#[derive(Clone)]
enum LinkState {
    /// Not connected (never, or dropped after a failure).
    Idle,
    Connecting,
    Ready(Link),
}

/// A connection to the shared store (cheap to share: one per client).
pub struct Store {
    connector: Connector,
    prefix: String,
    link: watch::Sender<LinkState>,
    /// Whether a connect ever succeeded: until then a call waits for the connect (its own
    /// deadline); afterwards reconnecting goes on in the background while calls stay local.
    connected_once: AtomicBool,
    /// Why the last connect failed, for the outage's log line.
    connect_failure: Mutex<Option<String>>,
    /// The client closed: the connection is dropped and never made again.
    closed: AtomicBool,
    up: AtomicBool,
    /// While down: when to try again.
    retry_at: Mutex<Option<Instant>>,
    errors: AtomicU64,
    fallbacks: AtomicU64,
    acquire: redis::Script,
    correct: redis::Script,
    pause: redis::Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        write!(f, "Store(prefix: {})", self.prefix)
    }
}

impl Store {
    /// A store at `target` (checked by [`StoreTarget::check`]); nothing connects before
    /// [`Store::connect_soon`] or the first call.
    pub fn new(target: &StoreTarget, prefix: &str) -> Result<Store, String> {
        Ok(Store {
            connector: Connector::new(target)?,
            prefix: prefix.to_owned(),
            link: watch::Sender::new(LinkState::Idle),
            connected_once: AtomicBool::new(false),
            connect_failure: Mutex::new(None),
            closed: AtomicBool::new(false),
            up: AtomicBool::new(true),
            retry_at: Mutex::new(None),
            errors: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            acquire: redis::Script::new(ACQUIRE),
            correct: redis::Script::new(CORRECT),
            pause: redis::Script::new(PAUSE),
        })
    }

    /// Starts connecting now when a runtime is at hand (the client is being built), so that
    /// the first call finds the connection made.
    pub fn connect_soon(self: &Arc<Self>) {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.start_connect();
        }
    }

    /// The keys of `scope` (an upstream's name, or `*` for the whole client), in one hash slot.
    pub fn keys(&self, scope: &str) -> Keys {
        let tag = format!("{{{}:{scope}}}", self.prefix);
        Keys {
            requests: format!("{tag}:rpm"),
            tokens: format!("{tag}:tpm"),
            pause: format!("{tag}:pause"),
        }
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            up: self.up.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
        }
    }

    /// Whether to ask the store now: up, or down long enough to be tried again.
    fn usable(&self) -> bool {
        if self.up.load(Ordering::Relaxed) {
            return true;
        }
        let mut retry_at = self.retry_at.lock().unwrap_or_else(|e| e.into_inner());
        match *retry_at {
            Some(at) if Instant::now() < at => false,
            _ => {
                // One caller probes; the others stay local until it answers.
                *retry_at = Some(Instant::now() + RETRY_DOWN_AFTER);
                true
            }
        }
    }

    /// Closes the connection for good (the client's `close()` or `destroy()`): a connection
    /// left open would hold a socket, and the server's client slot, until the client is
    /// collected.
    pub fn disconnect(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.link.send_replace(LinkState::Idle);
    }

    /// Connects in the background unless connected or connecting (or closed).
    fn start_connect(self: &Arc<Self>) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let start = self.link.send_if_modified(|state| match state {
            LinkState::Idle => {
                *state = LinkState::Connecting;
                true
            }
            _ => false,
        });
        if !start {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(CONNECT_DEADLINE, store.connector.connect()).await;
            let state = match outcome {
                Ok(Ok(link)) => {
                    store.connected_once.store(true, Ordering::Relaxed);
                    LinkState::Ready(link)
                }
                Ok(Err(e)) => {
                    *store
                        .connect_failure
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(format!("{:?}", e.kind()));
                    LinkState::Idle
                }
                Err(_) => {
                    *store
                        .connect_failure
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(format!(
                        "no connection within {} ms",
                        CONNECT_DEADLINE.as_millis()
                    ));
                    LinkState::Idle
                }
            };
            store.link.send_replace(state);
        });
    }

    /// The open connection: at once when connected; else it starts a connect and waits for it,
    /// the whole connect deadline before the first connection, a round trip's afterwards.
    async fn ready_link(self: &Arc<Self>) -> Option<Link> {
        if let LinkState::Ready(link) = &*self.link.borrow() {
            return Some(link.clone());
        }
        self.start_connect();
        let wait = if self.connected_once.load(Ordering::Relaxed) {
            ROUND_TRIP_DEADLINE
        } else {
            CONNECT_DEADLINE
        };
        let mut states = self.link.subscribe();
        let settled = tokio::time::timeout(
            wait,
            states.wait_for(|s| !matches!(s, LinkState::Connecting)),
        )
        .await;
        match settled {
            Ok(Ok(state)) => match &*state {
                LinkState::Ready(link) => Some(link.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    /// Runs `ask` within the deadline, keeping the up/down state.
    async fn round_trip<T: redis::FromRedisValue>(self: &Arc<Self>, ask: Ask<'_>) -> Option<T> {
        let failure = match self.ready_link().await {
            None => self
                .connect_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| "still connecting".to_owned()),
            Some(mut link) => {
                let asked = async {
                    match ask {
                        Ask::Script(invocation) => invocation.invoke_async::<T>(&mut link).await,
                        Ask::Commands(pipeline) => pipeline.query_async::<T>(&mut link).await,
                    }
                };
                match tokio::time::timeout(ROUND_TRIP_DEADLINE, asked).await {
                    Ok(Ok(value)) => {
                        if !self.up.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                prefix = self.prefix.as_str(),
                                "the limiter store (Redis) answers again: limits are shared again"
                            );
                        }
                        return Some(value);
                    }
                    Ok(Err(e)) => format!("{:?}", e.kind()),
                    Err(_) => "no answer within 250 ms".to_owned(),
                }
            }
        };
        self.errors.fetch_add(1, Ordering::Relaxed);
        // The next try connects afresh instead of reusing a connection that failed.
        self.link.send_if_modified(|state| match state {
            LinkState::Ready(_) => {
                *state = LinkState::Idle;
                true
            }
            _ => false,
        });
        *self.retry_at.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + RETRY_DOWN_AFTER);
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                prefix = self.prefix.as_str(),
                why = failure.as_str(),
                "the limiter store (Redis) is unreachable: using local limits until it is back"
            );
        }
        None
    }

    /// Asks the store whether a call costing one request and `tokens` may go now, taking both
    /// if so.
    pub async fn acquire(
        self: &Arc<Self>,
        keys: &Keys,
        requests: Rate,
        tokens: Rate,
        units: u64,
    ) -> Verdict {
        if !self.usable() {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            return Verdict::Unavailable;
        }
        let mut invocation = self.acquire.prepare_invoke();
        invocation
            .key(&keys.requests)
            .key(&keys.tokens)
            .key(&keys.pause)
            .arg(requests.interval_us)
            .arg(requests.burst_us)
            .arg(tokens.interval_us)
            .arg(tokens.burst_us)
            .arg(units);
        match self.round_trip::<i64>(Ask::Script(invocation)).await {
            Some(wait) if wait > 0 => Verdict::Wait(Duration::from_micros(wait as u64)),
            Some(_) => Verdict::Go,
            None => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                Verdict::Unavailable
            }
        }
    }

    /// Moves a token reservation by `delta_us` (negative: gives back), in the background.
    pub fn correct(self: &Arc<Self>, key: &str, delta_us: i64) {
        if delta_us == 0 || !self.up.load(Ordering::Relaxed) {
            return;
        }
        let store = self.clone();
        let key = key.to_owned();
        tokio::spawn(async move {
            let mut invocation = store.correct.prepare_invoke();
            invocation.key(&key).arg(delta_us);
            store.round_trip::<i64>(Ask::Script(invocation)).await;
        });
    }

    /// Pauses the scope of `key` for every process for `pause` (a 429's `Retry-After`), in
    /// the background.
    pub fn pause(self: &Arc<Self>, key: &str, pause: Duration) {
        if pause.is_zero() || !self.usable() {
            return;
        }
        let store = self.clone();
        let key = key.to_owned();
        let ms = pause.as_millis().min(i64::MAX as u128) as i64;
        tokio::spawn(async move {
            let mut invocation = store.pause.prepare_invoke();
            invocation.key(&key).arg(ms);
            store.round_trip::<i64>(Ask::Script(invocation)).await;
        });
    }
}

impl Store {
    /// The key of a response-cache entry (no hash tag: entries spread over a cluster's slots).
    pub fn cache_key(&self, hex: &str) -> String {
        format!("{}:cache:{hex}", self.prefix)
    }

    /// A value and what is left of its TTL; `None` when absent, expired, or the store is down
    /// (a miss, never a wait past the round-trip deadline).
    pub async fn get_with_ttl(self: &Arc<Self>, key: &str) -> Option<(String, Duration)> {
        if !self.usable() {
            return None;
        }
        let mut pipeline = redis::pipe();
        pipeline.get(key).pttl(key);
        let (value, left) = self
            .round_trip::<(Option<String>, i64)>(Ask::Commands(pipeline))
            .await?;
        let left = u64::try_from(left).ok().filter(|&ms| ms > 0)?;
        Some((value?, Duration::from_millis(left)))
    }

    /// Sets `key` to `value` for `ttl`, in the background.
    pub fn set_with_ttl(self: &Arc<Self>, key: String, value: String, ttl: Duration) {
        if !self.usable() {
            return;
        }
        let store = self.clone();
        let ms = ttl.as_millis().clamp(1, i64::MAX as u128) as i64;
        tokio::spawn(async move {
            let mut pipeline = redis::pipe();
            pipeline.set(&key, value).arg("PX").arg(ms).ignore();
            store.round_trip::<()>(Ask::Commands(pipeline)).await;
        });
    }
}

/// Checks a `store.redis` URL's shape without connecting.
pub fn check_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
        .ok_or("must be a redis:// or rediss:// (TLS) URL")?;
    if rest.contains('#') {
        return Err("has a #fragment: set TLS options in store.tls");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err("must name a host: redis://host:6379/0");
    }
    if let Some((_, port)) = host.rsplit_once(':').filter(|_| !host.ends_with(']')) {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err("has a port that is not a number from 1 to 65535");
        }
    }
    if let Some(db) = rest
        .split_once('/')
        .map(|(_, db)| db)
        .filter(|d| !d.is_empty())
    {
        if db.parse::<u32>().is_err() {
            return Err("has a database that is not a number (redis://host:6379/0)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_connecting() {
        for good in [
            "redis://127.0.0.1:6379/0",
            "redis://h",
            "redis://:secret@h:1/15",
            "redis://user:pw@h.example:6380",
            "redis://[::1]:6379/2",
            "rediss://user:pw@h.example:6380/0",
        ] {
            assert_eq!(check_url(good), Ok(()), "{good}");
            assert!(
                Store::new(&StoreTarget::single(good), "p").is_ok(),
                "{good}"
            );
        }
        for bad in [
            "http://h",
            "redis://",
            "redis://:6379",
            "redis://h:0",
            "redis://h:70000",
            "redis://h/db",
            "rediss://h:6380/#insecure",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_scoped_and_debug_hides_the_url() {
        let target = StoreTarget::single("redis://:hunter2@h:6379/0");
        let store = Store::new(&target, "svc").unwrap();
        assert_eq!(
            store.keys("azure"),
            Keys {
                requests: "{svc:azure}:rpm".into(),
                tokens: "{svc:azure}:tpm".into(),
                pause: "{svc:azure}:pause".into(),
            }
        );
        assert!(!format!("{store:?}").contains("hunter2"));
        assert!(!format!("{target:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn a_store_that_is_down_answers_unavailable_within_the_deadline_then_is_left_alone() {
        // Nothing listens on port 1.
        let store =
            Arc::new(Store::new(&StoreTarget::single("redis://127.0.0.1:1/0"), "p").unwrap());
        let keys = store.keys("x");
        let started = std::time::Instant::now();
        let verdict = store
            .acquire(&keys, Rate::default(), Rate::default(), 1)
            .await;
        assert_eq!(verdict, Verdict::Unavailable);
        assert!(started.elapsed() < ROUND_TRIP_DEADLINE + Duration::from_millis(200));
        assert_eq!(store.stats().errors, 1);
        // Within the next second nobody asks it: decided locally at once.
        let verdict = store
            .acquire(&keys, Rate::default(), Rate::default(), 1)
            .await;
        assert_eq!(verdict, Verdict::Unavailable);
        assert_eq!(
            store.stats(),
            StoreStats {
                up: false,
                errors: 1,
                fallbacks: 2
            }
        );
    }
}
