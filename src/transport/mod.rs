//! How bytes reach an origin: TCP ([`tcp`], addresses from the [`dns`] cache), TLS ([`tls`]),
//! and proxies ([`proxy`]: `CONNECT` tunnels for https targets, absolute-form forwarding for http
//! ones), ending in a hyper HTTP/1 handshake whose connection task runs on its own.
//!
//! The pool holds the `SendRequest` half; hyper's connection future is driven by a spawned task
//! that ends when the socket closes or when every `SendRequest` is dropped.

pub mod dns;
pub mod proxy;
pub mod tcp;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use self::dns::{DnsCache, DnsStats, SystemResolver};
use self::proxy::{Route, TunnelError};
use crate::config::{Config, ConfigError, ConnectConfig, Endpoint, Scheme};
use crate::conn::{Connection, SendError};
use crate::error::{Cause, Error, HttpFailure, Kind};
use crate::pool::Connect;
use crate::proxy_url::ProxyUrl;

/// The sending half of one HTTP/1 connection: what the pool holds.
pub type HttpConn = SendRequest<Full<Bytes>>;

/// Opens HTTP/1 connections to one origin, directly or through a proxy.
pub struct HttpConnector {
    endpoint: Endpoint,
    settings: ConnectConfig,
    route: Route,
    /// For TLS to the origin (https targets) and to an https proxy.
    tls: Option<TlsConnector>,
    /// The name the origin's certificate is checked against (`connect.servername` or the host).
    origin_name: Option<ServerName<'static>>,
    dns: DnsCache<SystemResolver>,
}

/// What a client needs to know of its transport beyond the connector.
pub struct TransportSetup {
    pub connector: HttpConnector,
    /// What Node would only warn about (an unreadable `NODE_EXTRA_CA_CERTS` file, …).
    pub warnings: Vec<String>,
    /// Set when requests go to an http origin through a proxy: they are then written in
    /// absolute form, with this `Proxy-Authorization` value when the proxy URL has credentials.
    pub forwarding: Option<Option<String>>,
    /// Proxy credentials in every form they could be echoed back in, for the redactor.
    pub secrets: Vec<String>,
}

impl HttpConnector {
    /// The transport of one client. `env` reads an environment variable (`std::env::var` in
    /// production; a parameter so that the rules are tested without touching the process).
    pub fn setup(
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
        dns_stats: Arc<DnsStats>,
    ) -> Result<TransportSetup, ConfigError> {
        let endpoint = config.endpoint.clone();
        let route = proxy::route(
            &config.proxy,
            endpoint.scheme,
            &endpoint.host,
            endpoint.port,
            &env,
        );
        let proxy_tls = matches!(&route, Route::Proxy(p) if p.tls);
        let mut warnings = Vec::new();
        let tls = if endpoint.scheme == Scheme::Https || proxy_tls {
            let extra = env("NODE_EXTRA_CA_CERTS");
            let setup = tls::client_config(&config.connect, extra.as_deref())?;
            warnings.extend(setup.warnings);
            Some(TlsConnector::from(setup.config))
        } else {
            None
        };
        let origin_name = match endpoint.scheme {
            Scheme::Http => None,
            Scheme::Https => Some(
                tls::server_name(&endpoint.host, config.connect.servername.as_deref()).ok_or_else(
                    || ConfigError("baseUrl has a host name that TLS cannot verify".into()),
                )?,
            ),
        };
        let (forwarding, secrets) = match &route {
            Route::Proxy(p) => (
                (endpoint.scheme == Scheme::Http).then(|| p.authorization()),
                p.secrets(),
            ),
            _ => (None, Vec::new()),
        };
        Ok(TransportSetup {
            connector: HttpConnector {
                endpoint,
                settings: config.connect.clone(),
                route,
                tls,
                origin_name,
                dns: DnsCache::new(SystemResolver, config.dns, dns_stats),
            },
            warnings,
            forwarding,
            secrets,
        })
    }

    async fn open(&self) -> Result<HttpConn, Error> {
        let origin = &self.endpoint.origin;
        match &self.route {
            Route::Broken(why) => Err(Error::new(Kind::Proxy, why.clone())),
            Route::Direct => {
                tracing::debug!(origin = origin.as_str(), "connecting");
                let tcp = self
                    .tcp(&self.endpoint.host, self.endpoint.port, origin)
                    .await?;
                self.to_origin(tcp).await
            }
            Route::Proxy(proxy) => {
                tracing::debug!(
                    origin = origin.as_str(),
                    proxy = proxy.origin.as_str(),
                    "connecting through a proxy"
                );
                let what = format!("proxy {} (for {origin})", proxy.origin);
                let tcp = self.tcp(&proxy.host, proxy.port, &what).await?;
                if proxy.tls {
                    let name = tls::server_name(&proxy.host, None).ok_or_else(|| {
                        Error::new(
                            Kind::Proxy,
                            format!("{what} has a host name that TLS cannot verify"),
                        )
                    })?;
                    let stream = self.tls_handshake(tcp, name, &what).await?;
                    self.through(stream, proxy).await
                } else {
                    self.through(tcp, proxy).await
                }
            }
        }
    }

    async fn tcp(&self, host: &str, port: u16, what: &str) -> Result<tokio::net::TcpStream, Error> {
        let tcp = tcp::connect(host, port, &self.settings, &self.dns)
            .await
            .map_err(|e| {
                Error::new(Kind::Connect, format!("could not connect to {what}: {e}"))
                    .with_cause(Cause::of(&e))
            })?;
        tracing::debug!(
            origin = self.endpoint.origin.as_str(),
            peer = %tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
            "connected"
        );
        Ok(tcp)
    }

    /// Over a connection to the proxy: a tunnel for https targets, else forwarding as is.
    async fn through<S>(&self, mut stream: S, proxy: &ProxyUrl) -> Result<HttpConn, Error>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        if self.endpoint.scheme == Scheme::Http {
            return handshake(stream, &self.endpoint.origin).await;
        }
        let target = if self.endpoint.host.contains(':') {
            format!("[{}]:{}", self.endpoint.host, self.endpoint.port)
        } else {
            format!("{}:{}", self.endpoint.host, self.endpoint.port)
        };
        let auth = proxy.authorization();
        proxy::open_tunnel(&mut stream, &target, auth.as_deref())
            .await
            .map_err(|e| tunnel_error(e, proxy, &self.endpoint.origin))?;
        tracing::debug!(
            origin = self.endpoint.origin.as_str(),
            proxy = proxy.origin.as_str(),
            "tunnel open"
        );
        self.to_origin(stream).await
    }

    /// TLS to the origin when it is https, then the HTTP handshake.
    async fn to_origin<S>(&self, stream: S) -> Result<HttpConn, Error>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let origin = &self.endpoint.origin;
        match &self.origin_name {
            None => handshake(stream, origin).await,
            Some(name) => {
                let stream = self.tls_handshake(stream, name.clone(), origin).await?;
                handshake(stream, origin).await
            }
        }
    }

    async fn tls_handshake<S>(
        &self,
        stream: S,
        name: ServerName<'static>,
        what: &str,
    ) -> Result<tokio_rustls::client::TlsStream<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let connector = self
            .tls
            .as_ref()
            .expect("TLS is set up for https targets and proxies");
        connector.connect(name, stream).await.map_err(|e| {
            Error::new(Kind::Tls, format!("TLS handshake with {what} failed: {e}"))
                .with_cause(Cause::of(&e))
        })
    }
}

/// A refused or failed `CONNECT`, as `ERR_PROXY`: with the proxy's status and headers when it
/// answered, naming the proxy, never its credentials.
fn tunnel_error(e: TunnelError, proxy: &ProxyUrl, origin: &str) -> Error {
    let lead = format!("proxy {} could not open a tunnel to {origin}", proxy.origin);
    match e {
        TunnelError::Io(io) => {
            Error::new(Kind::Proxy, format!("{lead}: {io}")).with_cause(Cause::of(&io))
        }
        TunnelError::Garbled => Error::new(Kind::Proxy, format!("{lead}: its answer is not HTTP")),
        TunnelError::Refused { status, headers } => {
            let why = match status {
                407 => " (proxy authentication failed: check the credentials in the proxy URL)",
                _ => "",
            };
            let reason = hyper::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error");
            Error::http(
                format!("{lead}: it answered {status} {reason}{why}"),
                HttpFailure {
                    status,
                    headers,
                    body: String::new(),
                },
            )
            .into_kind(Kind::Proxy)
        }
    }
}

impl Connect for HttpConnector {
    type Conn = HttpConn;

    fn connect(&self) -> impl Future<Output = Result<HttpConn, Error>> + Send {
        let limit = self.settings.timeout;
        async move {
            match tokio::time::timeout(limit, self.open()).await {
                Ok(result) => result,
                Err(_) => Err(Error::timed_out(
                    Kind::ConnectTimeout,
                    &self.endpoint.origin,
                    "connecting",
                    limit,
                )),
            }
        }
    }

    fn is_closed(conn: &HttpConn) -> bool {
        conn.is_closed()
    }
}

impl Connection for HttpConn {
    type Body = hyper::body::Incoming;

    async fn send(
        &mut self,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, SendError> {
        // A connection seen closed here never got the request.
        if let Err(e) = self.ready().await {
            return Err(SendError::NotSent(Box::new(e)));
        }
        match self.try_send_request(request).await {
            Ok(response) => Ok(response),
            // hyper hands the request back only when it never wrote it.
            Err(e) if e.message().is_some() => Err(SendError::NotSent(Box::new(e.into_error()))),
            Err(e) => Err(SendError::Failed(Box::new(e.into_error()))),
        }
    }
}

async fn handshake<S>(stream: S, origin: &str) -> Result<HttpConn, Error>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| {
            Error::new(
                Kind::Socket,
                format!("HTTP handshake with {origin} failed: {e}"),
            )
            .with_cause(Cause::of(&e))
        })?;
    tokio::spawn(async move {
        // Ends when the server closes the socket or the pool drops the sender; either way the
        // pool learns through `SendRequest::is_closed`.
        let _ = connection.await;
    });
    Ok(sender)
}
