//! TCP connections: the host's addresses from the DNS cache, raced in RFC 8305 order (happy
//! eyeballs), with TCP keep-alive probes and no Nagle delay.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::net::{TcpSocket, TcpStream};

use super::dns::{DnsCache, Resolve};
use crate::config::ConnectConfig;

/// Resolves `host` through `dns` and connects, racing addresses when `auto_select_family` is on.
/// Addresses that fail are evicted from the cache.
pub async fn connect<R: Resolve>(
    host: &str,
    port: u16,
    settings: &ConnectConfig,
    dns: &DnsCache<R>,
) -> io::Result<TcpStream> {
    let addrs = dns.resolve(host, port).await?;
    if let [addr] = addrs[..] {
        // One address (an IP literal, a single record): nothing to race, and no racing state
        // held by each of many connections opened at once.
        return connect_one(addr, settings.tcp_keep_alive)
            .await
            .inspect_err(|_| dns.failed(host, port, addr));
    }
    let attempt_delay = settings
        .auto_select_family
        .then_some(settings.auto_select_family_attempt_timeout);
    let ordered = if settings.auto_select_family {
        interleave_families(addrs)
    } else {
        addrs
    };
    // Boxed: only a host with several addresses races them.
    Box::pin(race_connects(
        ordered,
        attempt_delay,
        settings.tcp_keep_alive,
        |addr| dns.failed(host, port, addr),
    ))
    .await
}

/// RFC 8305 order: alternate families, starting with the family of the first address.
pub(crate) fn interleave_families(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return addrs;
    };
    let first_is_v6 = first.is_ipv6();
    let (mut preferred, mut other): (Vec<_>, Vec<_>) =
        addrs.into_iter().partition(|a| a.is_ipv6() == first_is_v6);
    let mut out = Vec::with_capacity(preferred.len() + other.len());
    preferred.reverse();
    other.reverse();
    while !preferred.is_empty() || !other.is_empty() {
        out.extend(preferred.pop());
        out.extend(other.pop());
    }
    out
}

/// Tries the addresses in order. With `attempt_delay`, the next attempt starts when the previous
/// one fails or has not finished within the delay (happy eyeballs); without, strictly one by one.
/// `failed` hears of every address that refused or broke.
async fn race_connects(
    addrs: Vec<SocketAddr>,
    attempt_delay: Option<Duration>,
    keep_alive: Option<Duration>,
    failed: impl Fn(SocketAddr),
) -> io::Result<TcpStream> {
    let mut queue = addrs.into_iter();
    let mut running = FuturesUnordered::new();
    let mut last_error = None;
    let start = |addr: SocketAddr| async move { (addr, connect_one(addr, keep_alive).await) };
    if let Some(addr) = queue.next() {
        running.push(start(addr));
    }
    loop {
        let can_start_next = attempt_delay.is_some() && queue.len() > 0;
        let delay = attempt_delay.unwrap_or(Duration::MAX);
        tokio::select! {
            finished = running.next() => match finished {
                Some((_, Ok(stream))) => return Ok(stream),
                Some((addr, Err(e))) => {
                    failed(addr);
                    last_error = Some(e);
                    match queue.next() {
                        Some(addr) => running.push(start(addr)),
                        None if running.is_empty() => break,
                        None => {}
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep(delay), if can_start_next => {
                if let Some(addr) = queue.next() {
                    running.push(start(addr));
                }
            }
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no address to connect to")))
}

async fn connect_one(addr: SocketAddr, keep_alive: Option<Duration>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_nodelay(true)?;
    if let Some(idle) = keep_alive {
        let probes = socket2::TcpKeepalive::new().with_time(idle);
        socket2::SockRef::from(&socket).set_tcp_keepalive(&probes)?;
    }
    socket.connect(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn families_alternate_starting_with_the_first() {
        let got = interleave_families(vec![
            addr("[::1]:1"),
            addr("[::2]:1"),
            addr("10.0.0.1:1"),
            addr("[::3]:1"),
            addr("10.0.0.2:1"),
        ]);
        assert_eq!(
            got,
            vec![
                addr("[::1]:1"),
                addr("10.0.0.1:1"),
                addr("[::2]:1"),
                addr("10.0.0.2:1"),
                addr("[::3]:1"),
            ]
        );
        assert!(interleave_families(Vec::new()).is_empty());
    }

    #[tokio::test]
    async fn a_dead_first_address_falls_through_to_the_next_and_is_reported() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = listener.local_addr().unwrap();
        let failed = Mutex::new(Vec::new());
        // Port 1 on loopback refuses at once.
        let stream = race_connects(
            vec![addr("127.0.0.1:1"), live],
            Some(Duration::from_millis(250)),
            Some(Duration::from_secs(60)),
            |a| failed.lock().unwrap().push(a),
        )
        .await
        .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), live);
        assert!(stream.nodelay().unwrap());
        assert_eq!(*failed.lock().unwrap(), vec![addr("127.0.0.1:1")]);
    }

    /// A resolver that always answers with one address, and counts its lookups.
    struct OneAddress(SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Resolve for OneAddress {
        async fn lookup(&self, _host: &str, _port: u16) -> io::Result<Vec<SocketAddr>> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(vec![self.0])
        }
    }

    #[tokio::test]
    async fn a_lone_address_connects_directly_and_one_that_refuses_is_not_kept() {
        let settings = ConnectConfig::default();
        let config = Some(crate::config::DnsConfig {
            max_ttl: Duration::from_secs(60),
            max_items: 10,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = listener.local_addr().unwrap();
        let lookups = std::sync::Arc::default();
        let dns = DnsCache::new(OneAddress(live, lookups), config, Default::default());
        let stream = connect("live.test", live.port(), &settings, &dns)
            .await
            .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), live);
        assert!(stream.nodelay().unwrap());

        // Port 1 on loopback refuses at once: the error comes back, and the address is dropped
        // from the cache, so the next connection looks the host up again.
        let lookups = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let dead = addr("127.0.0.1:1");
        let dns = DnsCache::new(
            OneAddress(dead, lookups.clone()),
            config,
            Default::default(),
        );
        for _ in 0..2 {
            let err = connect("dead.test", 1, &settings, &dns).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        }
        assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn all_addresses_refused_is_an_error() {
        let err = race_connects(vec![addr("127.0.0.1:1")], None, None, |_| {})
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }
}
