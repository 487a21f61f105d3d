//! Proxy URLs as the `proxy` option and the `*_PROXY` variables give them, and the Basic
//! credentials they carry. A leaf module: the configuration validates the option with it, the
//! transport uses it.

/// A proxy, parsed from the `proxy` option or an environment variable. Its `Debug` never shows
/// the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// `https://`: TLS to the proxy itself.
    pub tls: bool,
    /// Host name or IP literal, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// `scheme://host:port`, without credentials: what messages show.
    pub origin: String,
    credentials: Option<(String, String)>,
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProxyUrl({})", self.origin)
    }
}

impl ProxyUrl {
    /// Parses `http://[user:pass@]host[:port][/]`, `https://…`, or a bare `host:port` (taken as
    /// http, as curl does). The error says what is wrong, never the text itself.
    pub fn parse(text: &str) -> Result<ProxyUrl, &'static str> {
        let text = text.trim();
        let (tls, rest) = match text.split_once("://") {
            Some((s, rest)) if s.eq_ignore_ascii_case("http") => (false, rest),
            Some((s, rest)) if s.eq_ignore_ascii_case("https") => (true, rest),
            Some(_) => return Err("must be an http:// or https:// URL"),
            None => (false, text),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if !(tail.is_empty() || tail == "/") {
            return Err("must not have a path, query or fragment");
        }
        let (credentials, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let user = percent_decode(user).ok_or("has badly escaped credentials")?;
                let pass = percent_decode(pass).ok_or("has badly escaped credentials")?;
                (Some((user, pass)), host_port)
            }
            None => (None, authority),
        };
        let (host, port) = split_host_port(host_port)?;
        let port = port.unwrap_or(if tls { 443 } else { 80 });
        let scheme_name = if tls { "https" } else { "http" };
        let shown_host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        Ok(ProxyUrl {
            tls,
            origin: format!("{scheme_name}://{shown_host}:{port}"),
            host,
            port,
            credentials,
        })
    }

    /// The `Proxy-Authorization` value for the URL's credentials.
    pub fn authorization(&self) -> Option<String> {
        let (user, pass) = self.credentials.as_ref()?;
        Some(format!(
            "Basic {}",
            base64(format!("{user}:{pass}").as_bytes())
        ))
    }

    /// Everything that would give the credentials away, for the redactor.
    pub fn secrets(&self) -> Vec<String> {
        let Some((user, pass)) = &self.credentials else {
            return Vec::new();
        };
        let mut out = vec![format!("{user}:{pass}"), pass.clone()];
        out.extend(self.authorization());
        out.extend(
            self.authorization()
                .and_then(|a| a.strip_prefix("Basic ").map(str::to_owned)),
        );
        out
    }
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`, checking each part.
fn split_host_port(text: &str) -> Result<(String, Option<u16>), &'static str> {
    let bad_host = "has an invalid host";
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(bad_host)?;
        v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad_host)?;
        match after {
            "" => (v6.to_owned(), None),
            _ => (
                v6.to_owned(),
                Some(after.strip_prefix(':').ok_or(bad_host)?),
            ),
        }
    } else {
        let (host, port) = match text.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (text.to_owned(), None),
        };
        let is_name = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !is_name {
            return Err(bad_host);
        }
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.chars().all(|c| c.is_ascii_digit()) => Some(n),
            _ => return Err("has an invalid port"),
        },
    };
    Ok((host.to_ascii_lowercase(), port))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Standard base64 with padding (RFC 4648), for Basic credentials.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = ProxyUrl::parse("http://user:p%40ss@Proxy.Corp:3128/").unwrap();
        assert_eq!(u.origin, "http://proxy.corp:3128");
        assert_eq!(u.authorization().as_deref(), Some("Basic dXNlcjpwQHNz"));
        assert!(!format!("{u:?}").contains("p@ss"));
        assert!(u.secrets().contains(&"p@ss".to_string()));
        assert_eq!(
            ProxyUrl::parse("proxy:8080").unwrap().origin,
            "http://proxy:8080"
        );
        assert_eq!(
            ProxyUrl::parse("https://p").unwrap().origin,
            "https://p:443"
        );
        assert_eq!(ProxyUrl::parse("http://[::1]:9").unwrap().host, "::1");
        assert_eq!(ProxyUrl::parse("http://p").unwrap().authorization(), None);
        for bad in [
            "socks5://p:1",
            "http://",
            "http://p:0",
            "http://p:99999",
            "http://p:x",
            "http://p/path",
            "http://p?q",
            "http://u:%zz@p",
            "http://p q",
            "http://p:1:2",
            "http://[::1",
        ] {
            assert!(ProxyUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (input, out) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), out);
        }
    }
}
