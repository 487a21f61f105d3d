//! `baseUrl`: the origin and the path prefix every API path is put under.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Where requests go: scheme, host, port and the path prefix kept from `baseUrl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// Host name or IP literal, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// The `Host` header value (`host` or `host:port`).
    pub authority: String,
    /// `/v1` for `http://h/v1` and `http://h/v1/`; empty for `http://h`.
    pub path_prefix: String,
    /// `scheme://authority`, used in error messages.
    pub origin: String,
}

impl Endpoint {
    pub fn parse(base_url: &str) -> Result<Self> {
        let bad = || rule("baseUrl", "must be an absolute http:// or https:// URL");
        let uri: Uri = base_url.parse().map_err(|_| bad())?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => return Err(bad()),
        };
        let authority = uri.authority().ok_or_else(bad)?;
        if authority.as_str().contains('@') {
            return Err(rule(
                "baseUrl",
                "must not carry credentials; use apiKey or headers",
            ));
        }
        if uri.query().is_some() {
            return Err(rule("baseUrl", "must not have a query string"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(bad());
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let default_port = match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let port = authority.port_u16().unwrap_or(default_port);
        let path_prefix = uri.path().trim_end_matches('/').to_owned();
        let scheme_str = if scheme == Scheme::Http {
            "http"
        } else {
            "https"
        };
        Ok(Endpoint {
            scheme,
            origin: format!("{scheme_str}://{}", authority.as_str()),
            authority: authority.as_str().to_owned(),
            host,
            port,
            path_prefix,
        })
    }

    /// The request target for an API path such as `/chat/completions`.
    pub fn path(&self, api_path: &str) -> String {
        format!("{}{}", self.path_prefix, api_path)
    }
}
