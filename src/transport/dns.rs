//! A per-host cache of resolved addresses (undici's dns interceptor is the model: `maxTTL`,
//! `maxItems`). The system resolver gives no TTL, so an entry lives `maxTTL`; new connections
//! rotate across its addresses; an address that failed to connect is evicted at once. Lookups run
//! on tokio's blocking pool (`getaddrinfo` blocks), never on the runtime's worker threads.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

use crate::config::DnsConfig;

/// Resolves a host name; the system resolver, or a fake in tests.
pub trait Resolve: Send + Sync + 'static {
    fn lookup(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;
}

/// `getaddrinfo`, through tokio's blocking pool.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    async fn lookup(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// Lookups made and answers served from the cache.
#[derive(Debug, Default)]
pub struct DnsStats {
    pub lookups: AtomicU64,
    pub hits: AtomicU64,
}

struct Entry {
    addrs: Vec<SocketAddr>,
    expires: Instant,
    /// Where the next connection starts in `addrs`.
    next: usize,
}

pub struct DnsCache<R = SystemResolver> {
    resolver: R,
    /// `None` = `dns: false`: resolve every time.
    config: Option<DnsConfig>,
    entries: Mutex<HashMap<(String, u16), Entry>>,
    pub stats: Arc<DnsStats>,
}

impl<R: Resolve> DnsCache<R> {
    pub fn new(resolver: R, config: Option<DnsConfig>, stats: Arc<DnsStats>) -> Self {
        DnsCache {
            resolver,
            config,
            entries: Mutex::new(HashMap::new()),
            stats,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u16), Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The addresses of `host:port`, starting with a different one each time (round robin).
    /// IP literals are returned as they are, without a lookup.
    pub async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let key = (host.to_owned(), port);
        if let Some(config) = &self.config {
            let now = Instant::now();
            if let Some(addrs) = self.cached(&key, now) {
                return Ok(addrs);
            }
            let addrs = self.lookup(host, port).await?;
            let mut entries = self.lock();
            if entries.len() >= config.max_items {
                // Make room: drop the entry that expires first (the oldest).
                if let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone())
                {
                    entries.remove(&oldest);
                }
            }
            if config.max_items > 0 {
                entries.insert(
                    key,
                    Entry {
                        addrs: addrs.clone(),
                        expires: now + config.max_ttl,
                        next: 1 % addrs.len(),
                    },
                );
            }
            return Ok(addrs);
        }
        self.lookup(host, port).await
    }

    /// A live entry's addresses, rotated; an expired entry is dropped.
    fn cached(&self, key: &(String, u16), now: Instant) -> Option<Vec<SocketAddr>> {
        let mut entries = self.lock();
        let entry = entries.get_mut(key)?;
        if entry.expires <= now || entry.addrs.is_empty() {
            entries.remove(key);
            return None;
        }
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        let mut addrs = entry.addrs.clone();
        let start = entry.next % addrs.len();
        addrs.rotate_left(start);
        entry.next = (entry.next + 1) % entry.addrs.len();
        Some(addrs)
    }

    async fn lookup(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        self.stats.lookups.fetch_add(1, Ordering::Relaxed);
        let addrs = self.resolver.lookup(host, port).await?;
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "host name has no addresses",
            ));
        }
        Ok(addrs)
    }

    /// `addr` failed to connect: later connections do not try it until the next lookup.
    pub fn failed(&self, host: &str, port: u16, addr: SocketAddr) {
        let key = (host.to_owned(), port);
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(&key) {
            entry.addrs.retain(|a| *a != addr);
            if entry.addrs.is_empty() {
                entries.remove(&key);
            } else {
                entry.next %= entry.addrs.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[derive(Default, Clone)]
    struct Fake {
        calls: Arc<AtomicUsize>,
        answer: Arc<Mutex<Vec<SocketAddr>>>,
    }

    impl Resolve for Fake {
        async fn lookup(&self, _host: &str, _port: u16) -> io::Result<Vec<SocketAddr>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(self.answer.lock().unwrap().clone())
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn cache(max_items: usize) -> (DnsCache<Fake>, Fake) {
        let fake = Fake::default();
        *fake.answer.lock().unwrap() = vec![
            addr("10.0.0.1:443"),
            addr("10.0.0.2:443"),
            addr("10.0.0.3:443"),
        ];
        let config = DnsConfig {
            max_ttl: Duration::from_secs(10),
            max_items,
        };
        (
            DnsCache::new(fake.clone(), Some(config), Arc::default()),
            fake,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_cached_for_max_ttl_and_rotate() {
        let (c, fake) = cache(10);
        let mut seq = Vec::new();
        for _ in 0..8 {
            seq.push(c.resolve("api.x", 443).await.unwrap()[0]);
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        assert_ne!(seq[0], seq[1]);
        assert_eq!(seq[0], seq[3]);
        assert_eq!(c.stats.lookups.load(Ordering::Relaxed), 1);
        assert_eq!(c.stats.hits.load(Ordering::Relaxed), 7);
        tokio::time::advance(Duration::from_secs(11)).await;
        c.resolve("api.x", 443).await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_address_is_evicted_at_once() {
        let (c, _) = cache(10);
        c.resolve("api.x", 443).await.unwrap();
        c.failed("api.x", 443, addr("10.0.0.2:443"));
        for _ in 0..6 {
            let got = c.resolve("api.x", 443).await.unwrap();
            assert!(!got.contains(&addr("10.0.0.2:443")));
            assert_eq!(got.len(), 2);
        }
        c.failed("api.x", 443, addr("10.0.0.1:443"));
        c.failed("api.x", 443, addr("10.0.0.3:443"));
        // Nothing left: the next call looks up again.
        c.resolve("api.x", 443).await.unwrap();
        assert_eq!(c.stats.lookups.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn max_items_bounds_the_cache_and_off_means_every_time() {
        let (c, fake) = cache(1);
        c.resolve("a.x", 1).await.unwrap();
        c.resolve("b.x", 1).await.unwrap();
        c.resolve("a.x", 1).await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3);

        let off = DnsCache::new(fake.clone(), None, Arc::default());
        off.resolve("a.x", 1).await.unwrap();
        off.resolve("a.x", 1).await.unwrap();
        assert_eq!(off.stats.lookups.load(Ordering::Relaxed), 2);
        // IP literals never look anything up.
        off.resolve("127.0.0.1", 1).await.unwrap();
        assert_eq!(off.stats.lookups.load(Ordering::Relaxed), 2);
    }
}
