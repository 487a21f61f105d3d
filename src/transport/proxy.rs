//! Proxies: which proxy a client uses (the `proxy` option, else the environment as curl, httpx
//! and undici's `EnvHttpProxyAgent` read it), `NO_PROXY` matching, proxy URLs and their Basic
//! credentials, and the `CONNECT` handshake that opens a tunnel.
//!
//! Environment rules: `https_proxy`/`HTTPS_PROXY` for https targets, `http_proxy`/`HTTP_PROXY`
//! for http ones, the lowercase name winning; an empty value is unset. `no_proxy`/`NO_PROXY` (the
//! lowercase name winning) is a list separated by commas or spaces: `*` matches every host;
//! `example.com` and `.example.com` (or `*.example.com`) match the host and its subdomains;
//! `host:port` matches that port only; IP literals match exactly, and `10.0.0.0/8`-style CIDR
//! blocks match the addresses within. `NO_PROXY` applies to the environment's proxies only, not
//! to an explicit `proxy` option.

use std::net::IpAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use crate::config::ProxySetting;
use crate::config::Scheme;
use crate::proxy_url::ProxyUrl;

/// How a client reaches its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Direct,
    Proxy(ProxyUrl),
    /// The environment names a proxy that cannot be parsed: every call fails with this message,
    /// never a silent direct connection.
    Broken(String),
}

/// The route to `host:port` over `scheme`, from the option or the environment (`env` reads a
/// variable; it is a parameter so the rules are unit-tested).
pub fn route(
    setting: &ProxySetting,
    scheme: Scheme,
    host: &str,
    port: u16,
    env: impl Fn(&str) -> Option<String>,
) -> Route {
    let read = |name: &'static str| {
        env(name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (name, v))
    };
    match setting {
        ProxySetting::Off => Route::Direct,
        ProxySetting::Url(url) => Route::Proxy(url.clone()),
        ProxySetting::Environment => {
            let found = match scheme {
                Scheme::Https => read("https_proxy").or_else(|| read("HTTPS_PROXY")),
                Scheme::Http => read("http_proxy").or_else(|| read("HTTP_PROXY")),
            };
            let Some((name, value)) = found else {
                return Route::Direct;
            };
            let no_proxy = read("no_proxy").or_else(|| read("NO_PROXY"));
            if no_proxy.is_some_and(|(_, list)| no_proxy_matches(&list, host, port)) {
                return Route::Direct;
            }
            match ProxyUrl::parse(&value) {
                Ok(url) => Route::Proxy(url),
                Err(why) => Route::Broken(format!("the proxy in {name} {why}")),
            }
        }
    }
}

/// Whether a `NO_PROXY` list exempts `host:port` (see the module docs for the rules).
pub fn no_proxy_matches(list: &str, host: &str, port: u16) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let ip: Option<IpAddr> = host.parse().ok();
    list.split([',', ' ', '\t', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| entry_matches(&entry.to_ascii_lowercase(), &host, ip, port))
}

fn entry_matches(entry: &str, host: &str, ip: Option<IpAddr>, port: u16) -> bool {
    if entry == "*" {
        return true;
    }
    if let Some((net, bits)) = entry.split_once('/') {
        return match (ip, net.parse::<IpAddr>(), bits.parse::<u32>()) {
            (Some(ip), Ok(net), Ok(bits)) => in_cidr(ip, net, bits),
            _ => false,
        };
    }
    // `[v6]:port`, `[v6]`, `v6` (no port: too many colons), `name:port`, `name`.
    let (name, entry_port) = if let Some(rest) = entry.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, after)) => (v6, after.strip_prefix(':')),
            None => return false,
        }
    } else if entry.parse::<IpAddr>().is_ok() {
        (entry, None)
    } else {
        match entry.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (entry, None),
        }
    };
    if let Some(p) = entry_port {
        if p.parse::<u16>() != Ok(port) {
            return false;
        }
    }
    if let (Some(ip), Ok(literal)) = (ip, name.parse::<IpAddr>()) {
        return ip == literal;
    }
    let suffix = name
        .trim_start_matches('*')
        .trim_start_matches('.')
        .trim_end_matches('.');
    !suffix.is_empty()
        && (host == suffix
            || host
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.ends_with('.')))
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    if bits > width {
        return false;
    }
    let shift = width - bits;
    shift >= 128 || ip >> shift == net >> shift
}

/// Why a tunnel could not be opened.
#[derive(Debug)]
pub enum TunnelError {
    Io(std::io::Error),
    /// The proxy answered the `CONNECT` with this status (and headers).
    Refused {
        status: u16,
        headers: Vec<(String, String)>,
    },
    /// The proxy's answer was not HTTP.
    Garbled,
}

/// The longest proxy answer head accepted.
const MAX_CONNECT_RESPONSE: usize = 16 * 1024;

/// Asks the proxy on `stream` for a tunnel to `authority` (`host:port`) and reads its answer.
/// On success the stream carries the tunnel.
pub async fn open_tunnel<S>(
    stream: &mut S,
    authority: &str,
    authorization: Option<&str>,
) -> Result<(), TunnelError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = authorization {
        request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(TunnelError::Io)?;
    stream.flush().await.map_err(TunnelError::Io)?;
    // Read byte by byte up to the blank line: nothing after it may be consumed here, since it
    // belongs to the tunnel (a TLS server speaks only after the client, but stay exact).
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_CONNECT_RESPONSE {
            return Err(TunnelError::Garbled);
        }
        let n = stream.read(&mut byte).await.map_err(TunnelError::Io)?;
        if n == 0 {
            return Err(TunnelError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        head.push(byte[0]);
    }
    parse_connect_response(&head)
}

/// The proxy's answer head: `HTTP/1.x NNN reason`, then headers.
fn parse_connect_response(head: &[u8]) -> Result<(), TunnelError> {
    let text = std::str::from_utf8(head).map_err(|_| TunnelError::Garbled)?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().ok_or(TunnelError::Garbled)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(TunnelError::Garbled);
    }
    let status: u16 = code.parse().map_err(|_| TunnelError::Garbled)?;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Err(TunnelError::Refused { status, headers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn proxied_to(route: Route) -> Option<String> {
        match route {
            Route::Proxy(url) => Some(url.origin),
            _ => None,
        }
    }

    #[test]
    fn the_environment_picks_by_scheme_lowercase_first() {
        let e = [
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
            ("HTTP_PROXY", "http://plain:3"),
        ];
        let s = ProxySetting::Environment;
        assert_eq!(
            proxied_to(route(&s, Scheme::Https, "api.x", 443, env(&e))).as_deref(),
            Some("http://lower:2")
        );
        assert_eq!(
            proxied_to(route(&s, Scheme::Http, "api.x", 80, env(&e))).as_deref(),
            Some("http://plain:3")
        );
        assert_eq!(
            route(&s, Scheme::Https, "h", 1, env(&[("https_proxy", " ")])),
            Route::Direct
        );
        assert_eq!(
            route(&ProxySetting::Off, Scheme::Https, "h", 1, env(&e)),
            Route::Direct
        );
    }

    #[test]
    fn a_broken_variable_is_named_and_never_silently_direct() {
        let r = route(
            &ProxySetting::Environment,
            Scheme::Https,
            "h",
            1,
            env(&[("HTTPS_PROXY", "socks5://secret-user:secret-pass@p:1")]),
        );
        let Route::Broken(message) = r else {
            panic!("{r:?}")
        };
        assert!(message.contains("HTTPS_PROXY"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn no_proxy_rules() {
        let cases = [
            ("*", "anything.example", 443, true),
            ("example.com", "example.com", 443, true),
            ("example.com", "api.example.com", 443, true),
            (".example.com", "example.com", 443, true),
            (".example.com", "a.b.example.com", 443, true),
            ("*.example.com", "api.example.com", 443, true),
            ("example.com", "notexample.com", 443, false),
            ("example.com", "example.com.evil", 443, false),
            ("example.com:8443", "example.com", 8443, true),
            ("example.com:8443", "example.com", 443, false),
            ("127.0.0.1", "127.0.0.1", 80, true),
            ("127.0.0.1", "127.0.0.2", 80, false),
            ("127.0.0.1:3000", "127.0.0.1", 80, false),
            ("::1", "::1", 80, true),
            ("[::1]:8080", "::1", 8080, true),
            ("[::1]:8080", "::1", 80, false),
            ("10.0.0.0/8", "10.1.2.3", 443, true),
            ("10.0.0.0/8", "11.1.2.3", 443, false),
            ("fd00::/8", "fd12::1", 443, true),
            ("10.0.0.0/8", "ten.example", 443, false),
            ("  foo.com , ,EXAMPLE.COM ", "api.example.com", 443, true),
            ("foo.com bar.com", "bar.com", 443, true),
            ("", "example.com", 443, false),
            (".", "example.com", 443, false),
        ];
        for (list, host, port, want) in cases {
            assert_eq!(
                no_proxy_matches(list, host, port),
                want,
                "{list:?} vs {host}:{port}"
            );
        }
    }

    #[test]
    fn no_proxy_applies_to_the_environment_only() {
        let e = [("https_proxy", "http://p:1"), ("NO_PROXY", "api.x")];
        assert_eq!(
            route(
                &ProxySetting::Environment,
                Scheme::Https,
                "api.x",
                443,
                env(&e)
            ),
            Route::Direct
        );
        let explicit = ProxySetting::Url(ProxyUrl::parse("http://q:2").unwrap());
        assert!(matches!(
            route(&explicit, Scheme::Https, "api.x", 443, env(&e)),
            Route::Proxy(_)
        ));
        // no_proxy (lowercase) wins over NO_PROXY.
        let both = [
            ("https_proxy", "http://p:1"),
            ("no_proxy", "other.x"),
            ("NO_PROXY", "api.x"),
        ];
        assert!(matches!(
            route(
                &ProxySetting::Environment,
                Scheme::Https,
                "api.x",
                443,
                env(&both)
            ),
            Route::Proxy(_)
        ));
    }

    #[tokio::test]
    async fn connect_handshakes() {
        async fn answer(reply: &'static [u8]) -> (Result<(), TunnelError>, Vec<u8>) {
            let (mut client, mut server) = tokio::io::duplex(4096);
            let serve = tokio::spawn(async move {
                let mut seen = vec![0u8; 1024];
                let n = server.read(&mut seen).await.unwrap();
                server.write_all(reply).await.unwrap();
                seen.truncate(n);
                seen
            });
            let result = open_tunnel(&mut client, "api.x:443", Some("Basic abc")).await;
            (result, serve.await.unwrap())
        }
        let (ok, sent) = answer(b"HTTP/1.1 200 Connection established\r\n\r\n").await;
        assert!(ok.is_ok());
        assert_eq!(
            String::from_utf8(sent).unwrap(),
            "CONNECT api.x:443 HTTP/1.1\r\nHost: api.x:443\r\nProxy-Authorization: Basic abc\r\n\r\n"
        );
        let (refused, _) = answer(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n",
        )
        .await;
        match refused {
            Err(TunnelError::Refused { status, headers }) => {
                assert_eq!(status, 407);
                assert_eq!(headers[0].0, "proxy-authenticate");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            answer(b"SSH-2.0-x\r\n\r\n").await.0,
            Err(TunnelError::Garbled)
        ));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Any proxy text and any NO_PROXY list: no panic.
            #[test]
            fn any_text(url in "\\PC{0,40}", list in "[a-z0-9.,:/*\\[\\] ]{0,40}", host in "[a-z0-9.:]{1,20}", port in any::<u16>()) {
                let _ = ProxyUrl::parse(&url);
                let _ = no_proxy_matches(&list, &host, port);
            }

            /// Any answer from a proxy: an answer, never a panic.
            #[test]
            fn any_connect_answer(head in prop::collection::vec(any::<u8>(), 0..200)) {
                let _ = parse_connect_response(&head);
            }
        }
    }
}
