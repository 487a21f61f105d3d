//! TLS client settings with rustls: which roots are trusted (the bundled web PKI roots,
//! `connect.ca`, the file named by `NODE_EXTRA_CA_CERTS` as Node reads it, and the operating
//! system's store with `connect.useSystemCA`), the client certificate (`connect.cert` /
//! `connect.key`), and `connect.rejectUnauthorized: false`.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{ConfigError, ConnectConfig};

/// A TLS client configuration and what went wrong on the way that Node too would only warn
/// about (an unreadable `NODE_EXTRA_CA_CERTS` file, unreadable system certificates).
pub struct TlsSetup {
    pub config: Arc<rustls::ClientConfig>,
    pub warnings: Vec<String>,
}

/// Builds the client configuration. `extra_ca_file` is the value of `NODE_EXTRA_CA_CERTS`.
pub fn client_config(
    settings: &ConnectConfig,
    extra_ca_file: Option<&str>,
) -> Result<TlsSetup, ConfigError> {
    let mut warnings = Vec::new();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::plain(format!("TLS setup failed: {e}")))?;
    let trust = &settings.trust;
    let builder = if trust.reject_unauthorized {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for pem in &trust.ca {
            add_pem_roots(&mut roots, pem.as_bytes()).map_err(|why| {
                ConfigError::new("connect.ca", format!("holds a certificate that is {why}"))
            })?;
        }
        if let Some(path) = extra_ca_file.filter(|p| !p.is_empty()) {
            // Node warns and goes on when this file cannot be used; so do we.
            let added = std::fs::read(path)
                .map_err(|e| format!("cannot be read ({e})"))
                .and_then(|pem| add_pem_roots(&mut roots, &pem).map_err(str::to_owned));
            if let Err(why) = added {
                warnings.push(format!(
                    "Ignoring extra certs from NODE_EXTRA_CA_CERTS ({path}): the file {why}"
                ));
            }
        }
        if settings.use_system_ca {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                warnings.push(format!("connect.useSystemCA: {error}"));
            }
            let (_added, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                warnings.push(format!(
                    "connect.useSystemCA: {ignored} certificates of the system store could not be used"
                ));
            }
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    };
    let mut config = match (&trust.cert, &trust.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| ConfigError::new("connect.cert", "must hold PEM certificates"))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| {
                ConfigError::new(
                    "connect.key",
                    "must be a PEM private key (PKCS#8, PKCS#1 or SEC1), unencrypted",
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|_| {
                ConfigError::new(
                    "connect.key",
                    "does not match connect.cert, or is not usable",
                )
            })?
        }
        _ => {
            return Err(ConfigError::new(
                "connect.cert",
                "and connect.key must be given together",
            ))
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsSetup {
        config: Arc::new(config),
        warnings,
    })
}

/// Adds every certificate of a PEM text; fails on bad PEM, a bad certificate, or none at all.
fn add_pem_roots(roots: &mut RootCertStore, pem: &[u8]) -> Result<(), &'static str> {
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|_| "not valid PEM")?;
        roots.add(cert).map_err(|_| "not a valid CA")?;
        added += 1;
    }
    if added == 0 {
        return Err("not valid PEM");
    }
    Ok(())
}

/// The name a server certificate is checked against (and sent as SNI): `connect.servername`
/// when given, else the host.
pub fn server_name(host: &str, servername: Option<&str>) -> Option<ServerName<'static>> {
    ServerName::try_from(servername.unwrap_or(host).to_owned()).ok()
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

    fn settings() -> ConnectConfig {
        ConnectConfig::default()
    }

    fn error(settings: &ConnectConfig, extra: Option<&str>) -> String {
        match client_config(settings, extra) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_ca_pem_is_a_config_error() {
        let mut s = settings();
        s.trust.ca =
            vec!["-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".into()];
        assert!(error(&s, None).starts_with("connect.ca"));
    }

    #[test]
    fn cert_and_key_go_together_and_must_parse() {
        let mut only_cert = settings();
        only_cert.trust.cert = Some("x".into());
        assert!(error(&only_cert, None).contains("together"));
        let mut junk = settings();
        junk.trust.cert = Some("junk".into());
        junk.trust.key = Some("junk".into());
        assert!(error(&junk, None).starts_with("connect.cert"));
    }

    #[test]
    fn an_unreadable_extra_ca_file_is_a_warning_as_in_node() {
        let setup = client_config(&settings(), Some("/nonexistent/llmpool-ca.pem")).unwrap();
        assert_eq!(setup.warnings.len(), 1);
        assert!(setup.warnings[0].contains("NODE_EXTRA_CA_CERTS"));
        assert!(client_config(&settings(), Some(""))
            .unwrap()
            .warnings
            .is_empty());
    }

    #[test]
    fn server_names() {
        assert!(server_name("api.openai.com", None).is_some());
        assert!(server_name("127.0.0.1", Some("llmpool.test")).is_some());
        assert!(server_name("h", Some("bad name!")).is_none());
    }
}
