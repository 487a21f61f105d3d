//! How connections are made: `connect: {…}` (TCP, TLS, trust), `dns`, `proxy`.

use super::*;

/// TCP and TLS settings of new connections (`connect: {…}` in JS).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectConfig {
    pub timeout: Duration,
    pub auto_select_family: bool,
    pub auto_select_family_attempt_timeout: Duration,
    /// TCP keep-alive probes; `None` = off.
    pub tcp_keep_alive: Option<Duration>,
    /// `ca` (added to the webpki roots), `rejectUnauthorized`, `cert`/`key`, `servername`.
    pub trust: TlsTrust,
    /// Trust the operating system's store too (Node's `--use-system-ca`).
    pub use_system_ca: bool,
}

/// The DNS cache (`dns: {…}`); `dns: false` resolves on every new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsConfig {
    pub max_ttl: Duration,
    pub max_items: usize,
}

/// What the `proxy` option says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProxySetting {
    /// Unset: the environment decides (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`).
    #[default]
    Environment,
    /// `proxy: false`: always direct, whatever the environment says.
    Off,
    Url(ProxyUrl),
}

impl Default for ConnectConfig {
    /// Every `DEFAULT_*` of the connection settings.
    fn default() -> Self {
        ConnectConfig {
            timeout: ms(DEFAULT_CONNECT_TIMEOUT_MS),
            auto_select_family: DEFAULT_AUTO_SELECT_FAMILY,
            auto_select_family_attempt_timeout: ms(DEFAULT_AUTO_SELECT_FAMILY_ATTEMPT_TIMEOUT_MS),
            tcp_keep_alive: Some(ms(DEFAULT_TCP_KEEP_ALIVE_INITIAL_DELAY_MS)),
            trust: TlsTrust::default(),
            use_system_ca: false,
        }
    }
}

/// What a TLS client trusts and shows: the same five options under `connect` and `store.tls`.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsTrust {
    /// Extra trusted roots, PEM text (`connect.ca` adds them to the webpki roots; `store.tls.ca`
    /// replaces the system's).
    pub ca: Vec<String>,
    /// `false` accepts any server certificate.
    pub reject_unauthorized: bool,
    /// Client certificate chain and its private key (PEM), for mTLS.
    pub cert: Option<String>,
    pub key: Option<String>,
    /// The name sent as SNI and checked against the certificate, instead of the host.
    pub servername: Option<String>,
}

impl Default for TlsTrust {
    /// No roots of its own, certificates checked, no client certificate, the host's name.
    fn default() -> Self {
        TlsTrust {
            ca: Vec::new(),
            reject_unauthorized: true,
            cert: None,
            key: None,
            servername: None,
        }
    }
}

impl std::fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A private key is never printed; the rest only as whether it is set.
        f.debug_struct("TlsTrust")
            .field("ca", &self.ca.len())
            .field("reject_unauthorized", &self.reject_unauthorized)
            .field("cert", &self.cert.is_some())
            .field("key", &self.key.is_some())
            .field("servername", &self.servername)
            .finish()
    }
}

/// The options of `store.tls`.
pub const KNOWN_STORE_TLS_OPTIONS: &[&str] =
    &["ca", "rejectUnauthorized", "cert", "key", "servername"];

/// Reads `store.tls` (an object, checked as `connect`'s trust options are).
pub fn parse_store_tls(value: &Value) -> Result<TlsTrust> {
    let o = Options::new(value, "store.tls.", "store.tls", &[KNOWN_STORE_TLS_OPTIONS])?;
    parse_trust(&o)
}

/// The trust options of `o` (`ca`, `rejectUnauthorized`, `cert`, `key`, `servername`), each
/// error named under `o`'s prefix.
fn parse_trust(o: &Options) -> Result<TlsTrust> {
    let reject_unauthorized = o.bool("rejectUnauthorized", true)?;
    let pem = |key: &str, marker: &str| -> Result<Option<String>> {
        match o.get(key) {
            None => Ok(None),
            Some(Value::String(text)) if text.contains(marker) => Ok(Some(text.clone())),
            // Never echo the value: it may be a private key.
            Some(_) => Err(rule(&o.name(key), "must be a PEM string or Buffer")),
        }
    };
    let cert = pem("cert", "-----BEGIN CERTIFICATE-----")?;
    let key = pem("key", "PRIVATE KEY-----")?;
    if cert.is_some() != key.is_some() {
        return Err(rule(
            &o.name(if cert.is_some() { "key" } else { "cert" }),
            "is required with the other: a client certificate needs both",
        ));
    }
    let servername = match o.get("servername") {
        None => None,
        Some(Value::String(name))
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':')) =>
        {
            Some(name.clone())
        }
        Some(_) => return Err(rule(&o.name("servername"), "must be a host name")),
    };
    let ca_rule = "must be a PEM string or an array of PEM strings";
    let ca: Vec<String> = match o.get("ca") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| rule(&o.name("ca"), ca_rule))
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(rule(&o.name("ca"), ca_rule)),
    };
    if ca
        .iter()
        .any(|pem| !pem.contains("-----BEGIN CERTIFICATE-----"))
    {
        return Err(rule(&o.name("ca"), ca_rule));
    }
    Ok(TlsTrust {
        ca,
        reject_unauthorized,
        cert,
        key,
        servername,
    })
}

pub(super) const KNOWN_DNS_OPTIONS: &[&str] = &["maxTTL", "maxItems"];

pub(super) const KNOWN_CONNECT_OPTIONS: &[&str] = &[
    "keepAlive",
    "keepAliveInitialDelay",
    "ca",
    "rejectUnauthorized",
    "cert",
    "key",
    "servername",
    "useSystemCA",
];

pub(super) fn parse_connect(
    value: Option<&Value>,
    mut out: ConnectConfig,
) -> Result<ConnectConfig> {
    let Some(value) = value else {
        return Ok(out);
    };
    let o = Options::new(value, "connect.", "connect", &[KNOWN_CONNECT_OPTIONS])?;
    let keep_alive = o.bool("keepAlive", DEFAULT_TCP_KEEP_ALIVE)?;
    let delay = o.positive_ms(
        "keepAliveInitialDelay",
        DEFAULT_TCP_KEEP_ALIVE_INITIAL_DELAY_MS,
    )?;
    out.tcp_keep_alive = keep_alive.then_some(delay);
    out.trust = parse_trust(&o)?;
    out.use_system_ca = o.bool("useSystemCA", false)?;
    Ok(out)
}

pub(super) fn parse_dns(value: Option<&Value>) -> Result<Option<DnsConfig>> {
    let defaults = DnsConfig {
        max_ttl: ms(DEFAULT_DNS_MAX_TTL_MS),
        max_items: DEFAULT_DNS_MAX_ITEMS,
    };
    let value = match value {
        None | Some(Value::Null) | Some(Value::Bool(true)) => return Ok(Some(defaults)),
        Some(Value::Bool(false)) => return Ok(None),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(rule("dns", "must be an object or false")),
    };
    let o = Options::new(value, "dns.", "dns", &[KNOWN_DNS_OPTIONS])?;
    let max_ttl = o.non_negative_ms("maxTTL", DEFAULT_DNS_MAX_TTL_MS)?;
    let max_items = match o.uint("maxItems", "must be a positive integer", u32::MAX as u64)? {
        Some(0) => return Err(rule("dns.maxItems", "must be a positive integer")),
        Some(n) => n as usize,
        None => DEFAULT_DNS_MAX_ITEMS,
    };
    // maxTTL 0 caches nothing: the same as `dns: false`.
    Ok((!max_ttl.is_zero()).then_some(DnsConfig { max_ttl, max_items }))
}
