//! Opening connections: TCP (connect timeout, happy eyeballs, TCP keep-alive, no Nagle), TLS
//! with rustls, and the hyper HTTP/1 handshake whose connection task runs on its own.
//!
//! The pool holds the `SendRequest` half; hyper's connection future is driven by a spawned task
//! that ends when the socket closes or when every `SendRequest` is dropped.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use crate::config::{ConfigError, ConnectConfig, Endpoint, Scheme};
use crate::conn::{Connection, SendError};
use crate::error::{Cause, Error, Kind};
use crate::pool::Connect;

/// The sending half of one HTTP/1 connection: what the pool holds.
pub type HttpConn = SendRequest<Full<Bytes>>;

/// Opens HTTP/1 connections to one origin.
pub struct HttpConnector {
    endpoint: Endpoint,
    settings: ConnectConfig,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl HttpConnector {
    pub fn new(endpoint: Endpoint, settings: ConnectConfig) -> Result<Self, ConfigError> {
        let tls = match endpoint.scheme {
            Scheme::Http => None,
            Scheme::Https => {
                let name = ServerName::try_from(endpoint.host.clone()).map_err(|_| {
                    ConfigError("baseUrl has a host name that TLS cannot verify".into())
                })?;
                Some((TlsConnector::from(Arc::new(tls_config(&settings)?)), name))
            }
        };
        Ok(HttpConnector {
            endpoint,
            settings,
            tls,
        })
    }

    async fn open(&self) -> Result<HttpConn, Error> {
        let origin = &self.endpoint.origin;
        tracing::debug!(origin = origin.as_str(), "connecting");
        let tcp = connect_tcp(&self.endpoint.host, self.endpoint.port, &self.settings)
            .await
            .map_err(|e| {
                Error::new(Kind::Connect, format!("could not connect to {origin}: {e}"))
                    .with_cause(Cause::of(&e))
            })?;
        tracing::debug!(
            origin = origin.as_str(),
            peer = %tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
            "connected"
        );
        match &self.tls {
            None => handshake(tcp, origin).await,
            Some((connector, name)) => {
                let stream = connector.connect(name.clone(), tcp).await.map_err(|e| {
                    Error::new(
                        Kind::Tls,
                        format!("TLS handshake with {origin} failed: {e}"),
                    )
                    .with_cause(Cause::of(&e))
                })?;
                handshake(stream, origin).await
            }
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

/// Resolves `host` (off the runtime's worker threads: tokio's lookup runs on the blocking pool)
/// and connects, racing address families when `auto_select_family` is on.
async fn connect_tcp(host: &str, port: u16, settings: &ConnectConfig) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port)).await?.collect(),
    };
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "host name has no addresses",
        ));
    }
    let attempt_delay = settings
        .auto_select_family
        .then_some(settings.auto_select_family_attempt_timeout);
    let ordered = if settings.auto_select_family {
        interleave_families(addrs)
    } else {
        addrs
    };
    race_connects(ordered, attempt_delay, settings.tcp_keep_alive).await
}

/// RFC 8305 order: alternate families, starting with the family of the first address.
pub(crate) fn interleave_families(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let first_is_v6 = addrs[0].is_ipv6();
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
async fn race_connects(
    addrs: Vec<SocketAddr>,
    attempt_delay: Option<Duration>,
    keep_alive: Option<Duration>,
) -> io::Result<TcpStream> {
    let mut queue = addrs.into_iter();
    let mut running = FuturesUnordered::new();
    let mut last_error = None;
    if let Some(addr) = queue.next() {
        running.push(connect_one(addr, keep_alive));
    }
    loop {
        let can_start_next = attempt_delay.is_some() && queue.len() > 0;
        let delay = attempt_delay.unwrap_or(Duration::MAX);
        tokio::select! {
            finished = running.next() => match finished {
                Some(Ok(stream)) => return Ok(stream),
                Some(Err(e)) => {
                    last_error = Some(e);
                    match queue.next() {
                        Some(addr) => running.push(connect_one(addr, keep_alive)),
                        None if running.is_empty() => break,
                        None => {}
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep(delay), if can_start_next => {
                if let Some(addr) = queue.next() {
                    running.push(connect_one(addr, keep_alive));
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

fn tls_config(settings: &ConnectConfig) -> Result<rustls::ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("TLS setup failed: {e}")))?;
    let mut config = if settings.reject_unauthorized {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for pem in &settings.ca {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|_| {
                    ConfigError("connect.ca holds a certificate that is not valid PEM".into())
                })?;
                roots.add(cert).map_err(|_| {
                    ConfigError("connect.ca holds a certificate that is not a valid CA".into())
                })?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `connect.rejectUnauthorized: false`: any certificate is accepted, but handshake signatures are
/// still checked, so the session is at least bound to the key the server presented.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[tokio::test]
    async fn a_dead_first_address_falls_through_to_the_next() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = listener.local_addr().unwrap();
        // Port 1 on loopback refuses at once.
        let stream = race_connects(
            vec![addr("127.0.0.1:1"), live],
            Some(Duration::from_millis(250)),
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), live);
        assert!(stream.nodelay().unwrap());
    }

    #[tokio::test]
    async fn all_addresses_refused_is_an_error() {
        let err = race_connects(vec![addr("127.0.0.1:1")], None, None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn bad_ca_pem_is_a_config_error() {
        let settings = ConnectConfig {
            timeout: Duration::from_secs(1),
            auto_select_family: true,
            auto_select_family_attempt_timeout: Duration::from_millis(250),
            tcp_keep_alive: None,
            ca: vec![
                "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".into(),
            ],
            reject_unauthorized: true,
        };
        let err = tls_config(&settings).unwrap_err();
        assert!(err.0.starts_with("connect.ca"), "{}", err.0);
    }
}
