//! One error type for the whole core, and the one [`Redactor`] every error passes on its way out.
//!
//! Every failure a caller can see is an [`Error`] with a stable string [`Error::code`] (what JS code
//! matches on), a short lowercase message that names the origin, and, for HTTP errors, the status,
//! headers and the provider's body. Errors are built freely inside the core; the client passes
//! each one through [`Redactor::redact_error`] as the call ends (`Router::call`, with the upstream's `Client::redact`), the only door out,
//! so no path has to remember to strip secrets itself.

use std::fmt;
use std::io;
use std::time::Duration;

/// What went wrong, as a closed set. Private to the crate: callers use [`Error::code`] and the
/// predicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    PoolTimeout,
    ConnectTimeout,
    HeadersTimeout,
    BodyTimeout,
    Timeout,
    FirstTokenTimeout,
    TokenTimeout,
    Aborted,
    Closed,
    Connect,
    Socket,
    Tls,
    Proxy,
    HttpStatus,
    InvalidResponse,
    ProviderError,
    ResponseTooLarge,
    StreamError,
    StreamTruncated,
    SseEventTooLarge,
    CircuitOpen,
    LimitTimeout,
    NoUpstream,
    Internal,
}

impl Kind {
    fn code(self) -> &'static str {
        match self {
            Kind::PoolTimeout => "ERR_POOL_TIMEOUT",
            Kind::ConnectTimeout => "ERR_CONNECT_TIMEOUT",
            Kind::HeadersTimeout => "ERR_HEADERS_TIMEOUT",
            Kind::BodyTimeout => "ERR_BODY_TIMEOUT",
            Kind::Timeout => "ERR_TIMEOUT",
            Kind::FirstTokenTimeout => "ERR_FIRST_TOKEN_TIMEOUT",
            Kind::TokenTimeout => "ERR_TOKEN_TIMEOUT",
            Kind::Aborted => "ERR_ABORTED",
            Kind::Closed => "ERR_CLOSED",
            Kind::Connect => "ERR_CONNECT",
            Kind::Socket => "ERR_SOCKET",
            Kind::Tls => "ERR_TLS",
            Kind::Proxy => "ERR_PROXY",
            Kind::HttpStatus => "ERR_HTTP_STATUS",
            Kind::InvalidResponse => "ERR_INVALID_RESPONSE",
            Kind::ProviderError => "ERR_PROVIDER_ERROR",
            Kind::ResponseTooLarge => "ERR_RESPONSE_TOO_LARGE",
            Kind::StreamError => "ERR_STREAM_ERROR",
            Kind::StreamTruncated => "ERR_STREAM_TRUNCATED",
            Kind::SseEventTooLarge => "ERR_SSE_EVENT_TOO_LARGE",
            Kind::CircuitOpen => "ERR_CIRCUIT_OPEN",
            Kind::LimitTimeout => "ERR_LIMIT_TIMEOUT",
            Kind::NoUpstream => "ERR_NO_UPSTREAM",
            Kind::Internal => "ERR_INTERNAL",
        }
    }
}

/// The parts of a non-2xx answer that callers need to decide what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpFailure {
    pub status: u16,
    /// Response headers, lowercase names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The response body as text (capped in size; invalid UTF-8 replaced).
    pub body: String,
    /// The same body as the bytes that came (what `fetch` hands on, byte for byte).
    pub raw: bytes::Bytes,
}

/// The lower-level failure behind an error: what the OS or the TLS library said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Node's name for the OS error (`ECONNRESET`, `ECONNREFUSED`, `EPIPE`, …), when the OS said
    /// which.
    pub code: Option<&'static str>,
    pub message: String,
}

impl Cause {
    /// The innermost error of a chain, with the OS error code of the first `io::Error` in it.
    pub fn of(error: &(dyn std::error::Error + 'static)) -> Cause {
        let mut code = None;
        let mut innermost = error;
        let mut current = Some(error);
        while let Some(e) = current {
            if code.is_none() {
                code = e.downcast_ref::<io::Error>().and_then(os_code);
            }
            innermost = e;
            current = e.source();
        }
        Cause {
            code,
            message: innermost.to_string(),
        }
    }
}

/// Node's code for an `io::Error`, as `err.cause.code` carries it in Node's own errors.
pub fn os_code(e: &io::Error) -> Option<&'static str> {
    Some(match e.kind() {
        io::ErrorKind::ConnectionReset => "ECONNRESET",
        io::ErrorKind::ConnectionRefused => "ECONNREFUSED",
        io::ErrorKind::ConnectionAborted => "ECONNABORTED",
        io::ErrorKind::BrokenPipe => "EPIPE",
        io::ErrorKind::TimedOut => "ETIMEDOUT",
        io::ErrorKind::NotConnected => "ENOTCONN",
        io::ErrorKind::AddrInUse => "EADDRINUSE",
        io::ErrorKind::AddrNotAvailable => "EADDRNOTAVAIL",
        io::ErrorKind::HostUnreachable => "EHOSTUNREACH",
        io::ErrorKind::NetworkUnreachable => "ENETUNREACH",
        io::ErrorKind::NetworkDown => "ENETDOWN",
        io::ErrorKind::PermissionDenied => "EACCES",
        _ => return None,
    })
}

/// The one public error type of the core.
/// One error of the crate. Boxed inside: results travel through many nested futures (every open
/// stream holds several of their slots for its life), and a pointer-sized error keeps each slot
/// at a word instead of ~120 bytes.
pub struct Error(Box<ErrorInner>);

#[derive(Debug)]
pub struct ErrorInner {
    kind: Kind,
    message: String,
    http: Option<Box<HttpFailure>>,
    /// The provider's error payload: of an SSE error event, or of a 200 body that is an error.
    provider_error: Option<String>,
    cause: Option<Box<Cause>>,
    /// Attempts made before giving up (1 without retries); set by the attempt loop.
    attempts: u32,
    /// The wait the server asked for (`Retry-After`, `retry-after-ms`), clamped; set for every
    /// HTTP error that carried a hint.
    retry_after: Option<Duration>,
    /// The rate limits an HTTP error's headers reported, and when.
    rate_limit: Option<Box<(crate::ratelimit::RateLimits, std::time::SystemTime)>>,
    /// The upstreams a routed call tried, in order (empty for a client of one `baseUrl`).
    upstreams: Vec<String>,
}

impl Error {
    pub(crate) fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error(Box::new(ErrorInner {
            kind,
            message: message.into(),
            http: None,
            provider_error: None,
            cause: None,
            attempts: 1,
            retry_after: None,
            rate_limit: None,
            upstreams: Vec::new(),
        }))
    }

    pub(crate) fn http(message: impl Into<String>, failure: HttpFailure) -> Self {
        let mut error = Error::new(Kind::HttpStatus, message);
        error.http = Some(Box::new(failure));
        error
    }

    /// An error the provider reported in a response that was otherwise a success: an SSE
    /// `error` event or payload ([`Kind::StreamError`]), or a 200 body that is an error
    /// ([`Kind::ProviderError`]).
    pub(crate) fn provider(kind: Kind, message: impl Into<String>, payload: String) -> Self {
        let mut error = Error::new(kind, message);
        error.provider_error = Some(payload);
        error
    }

    /// The same error under another kind (a proxy's refusal carries an HTTP answer, but is not
    /// the origin's).
    pub(crate) fn into_kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    pub(crate) fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    pub(crate) fn with_retry_after(mut self, asked: Duration) -> Self {
        self.retry_after = Some(asked);
        self
    }

    pub(crate) fn with_rate_limit(
        mut self,
        limits: crate::ratelimit::RateLimits,
        at: std::time::SystemTime,
    ) -> Self {
        self.rate_limit = Some(Box::new((limits, at)));
        self
    }

    /// The rate limits the failed answer reported, and when it arrived.
    pub fn rate_limit(&self) -> Option<&(crate::ratelimit::RateLimits, std::time::SystemTime)> {
        self.rate_limit.as_deref()
    }

    pub(crate) fn with_cause(mut self, cause: Cause) -> Self {
        self.cause = Some(Box::new(cause));
        self
    }

    /// The same error, saying which upstreams the call tried (in its message too).
    pub(crate) fn with_upstreams(mut self, tried: Vec<String>) -> Self {
        if !tried.is_empty() {
            self.message = format!("{} (upstreams tried: {})", self.message, tried.join(", "));
        }
        self.upstreams = tried;
        self
    }

    /// The upstreams a routed call tried, in order.
    pub fn upstreams(&self) -> &[String] {
        &self.upstreams
    }

    /// Attempts made before this error was final.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The wait the server asked for, when it asked.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The provider's error payload of a stream error or a 200 error body.
    pub fn provider_error(&self) -> Option<&str> {
        self.provider_error.as_deref()
    }

    /// What the OS or TLS library said, when the failure came from there.
    pub fn cause(&self) -> Option<&Cause> {
        self.cause.as_deref()
    }

    /// A timeout with its own code, phrased the same way for every phase.
    pub(crate) fn timed_out(kind: Kind, origin: &str, phase: &str, after: Duration) -> Self {
        tracing::debug!(
            origin,
            code = kind.code(),
            phase,
            after_ms = after.as_millis() as u64,
            "timeout"
        );
        Error::new(
            kind,
            format!(
                "request to {origin} timed out {phase} after {} ms",
                after.as_millis()
            ),
        )
    }

    /// The stable string code JS matches on (`ERR_POOL_TIMEOUT`, `ERR_HTTP_STATUS`, …).
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Status, headers and body of an HTTP error answer; `None` for every other failure.
    pub fn http_failure(&self) -> Option<&HttpFailure> {
        self.http.as_deref()
    }

    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind,
            Kind::PoolTimeout
                | Kind::ConnectTimeout
                | Kind::HeadersTimeout
                | Kind::BodyTimeout
                | Kind::Timeout
                | Kind::FirstTokenTimeout
                | Kind::TokenTimeout
                | Kind::LimitTimeout
        )
    }

    pub fn is_connect(&self) -> bool {
        matches!(
            self.kind,
            Kind::Connect | Kind::ConnectTimeout | Kind::Tls | Kind::Proxy
        )
    }

    pub fn is_cancelled(&self) -> bool {
        matches!(self.kind, Kind::Aborted | Kind::Closed)
    }
}

impl std::ops::Deref for Error {
    type Target = ErrorInner;

    fn deref(&self) -> &ErrorInner {
        &self.0
    }
}

impl std::ops::DerefMut for Error {
    fn deref_mut(&mut self) -> &mut ErrorInner {
        &mut self.0
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Header names whose values are secrets by default, client-level or per call; `redactHeaders`
/// adds more.
pub const SECRET_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "cookie",
];

/// Replaces every occurrence of a secret with `[REDACTED]`.
///
/// Servers echo keys back ("Incorrect API key provided: sk-…", a payload quoting the request
/// headers), so every error passes through [`Redactor::redact_error`] before it leaves the core.
/// Secrets are the API key and the values of secret headers; headers with a secret name are
/// masked in an error's response headers whatever their value.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
    /// Lowercase names of secret headers.
    names: Vec<String>,
}

impl Redactor {
    pub const MASK: &'static str = "[REDACTED]";

    pub fn new(
        secrets: impl IntoIterator<Item = String>,
        names: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut redactor = Redactor {
            secrets: Vec::new(),
            names: names.into_iter().collect(),
        };
        for secret in secrets {
            redactor.add(secret);
        }
        redactor
    }

    fn add(&mut self, secret: String) {
        // A very short "secret" would mangle ordinary text; keys are long.
        if secret.len() < 4 || self.secrets.contains(&secret) {
            return;
        }
        // The forms a server may echo it in: JSON-escaped (with `/` as `\/`, PHP's default) and
        // URL-encoded. (Other JSON escapes, `\u0073`, are caught by decoding JSON bodies.)
        let json = serde_json::to_string(&secret).unwrap_or_default();
        let json = json.trim_matches('"').to_owned();
        let forms = [
            json.replace('/', "\\/"),
            json,
            percent_encode(&secret, false),
            percent_encode(&secret, true),
        ];
        self.secrets.push(secret);
        for form in forms {
            if !self.secrets.contains(&form) {
                self.secrets.push(form);
            }
        }
    }

    /// The header names treated as secret.
    pub fn is_secret_header(&self, name: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// Secrets worth redacting in a header value: the whole value, and for
    /// `Authorization`-style `Scheme credentials` values the credentials alone.
    pub fn secrets_of_value(value: &str) -> Vec<String> {
        let mut out = vec![value.trim().to_owned()];
        if let Some((scheme, credentials)) = value.trim().split_once(' ') {
            let credentials = credentials.trim();
            out.push(credentials.to_owned());
            // Basic credentials are `user:password` in Base64: the decoded pair and the
            // password are secrets too.
            if scheme.eq_ignore_ascii_case("basic") {
                if let Some(pair) =
                    base64_decode(credentials).and_then(|b| String::from_utf8(b).ok())
                {
                    if let Some((_, password)) = pair.split_once(':') {
                        out.push(password.to_owned());
                    }
                    out.push(pair);
                }
            }
        }
        out
    }

    /// This redactor plus `extra` secrets (a call's own secret header values).
    pub fn with(&self, extra: &[String]) -> Redactor {
        let mut redactor = self.clone();
        for secret in extra {
            redactor.add(secret.clone());
        }
        redactor
    }

    /// Whether `text` holds any of the secrets.
    pub fn appears_in(&self, text: &str) -> bool {
        self.secrets
            .iter()
            .any(|secret| text.contains(secret.as_str()))
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        self.redact_in_place(&mut out);
        out
    }

    fn redact_in_place(&self, text: &mut String) {
        // Longest first, so that a secret containing another is masked whole.
        for secret in self.ordered() {
            if text.contains(secret) {
                *text = text.replace(secret, Self::MASK);
            }
        }
    }

    fn ordered(&self) -> Vec<&str> {
        let mut secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets
    }

    /// Redacts raw bytes (a body that may not be UTF-8): each secret's bytes are masked.
    fn redact_bytes(&self, raw: &bytes::Bytes) -> bytes::Bytes {
        let mut out: Option<Vec<u8>> = None;
        for secret in self.ordered() {
            let current = out.as_deref().unwrap_or(raw);
            let needle = secret.as_bytes();
            if memchr::memmem::find(current, needle).is_none() {
                continue;
            }
            let mut replaced = Vec::with_capacity(current.len());
            let mut rest = current;
            while let Some(at) = memchr::memmem::find(rest, needle) {
                replaced.extend_from_slice(&rest[..at]);
                replaced.extend_from_slice(Self::MASK.as_bytes());
                rest = &rest[at + needle.len()..];
            }
            replaced.extend_from_slice(rest);
            out = Some(replaced);
        }
        out.map_or_else(|| raw.clone(), bytes::Bytes::from)
    }

    /// Redacts a text that may be JSON: the strings it decodes to are redacted (a secret
    /// written with escapes, `\u0073k-…`, is what the user sees once `errors.js` parses it), then
    /// the text itself.
    fn redact_json_in_place(&self, text: &mut String) {
        if let Ok(mut value) = serde_json::from_str::<serde_json::Value>(text) {
            if self.redact_value(&mut value) {
                *text = value.to_string();
            }
        }
        self.redact_in_place(text);
    }

    /// Redacts every string (and key) inside `value`; true when something changed.
    fn redact_value(&self, value: &mut serde_json::Value) -> bool {
        use serde_json::Value;
        match value {
            Value::String(text) => {
                let redacted = self.redact(text);
                let changed = redacted != *text;
                *text = redacted;
                changed
            }
            Value::Array(items) => {
                // Every item, not just up to the first that changed.
                let mut changed = false;
                for item in items {
                    changed |= self.redact_value(item);
                }
                changed
            }
            Value::Object(map) => {
                let mut changed = false;
                let entries = std::mem::take(map);
                for (key, mut item) in entries {
                    changed |= self.redact_value(&mut item);
                    let key_redacted = self.redact(&key);
                    changed |= key_redacted != key;
                    map.insert(key_redacted, item);
                }
                changed
            }
            _ => false,
        }
    }

    /// Strips every secret from every text an error carries: message, provider body and
    /// payload (as text and as the JSON they decode to), response headers (secret-named ones
    /// masked whole), cause.
    pub fn redact_error(&self, mut error: Error) -> Error {
        self.redact_in_place(&mut error.message);
        if let Some(payload) = &mut error.provider_error {
            self.redact_json_in_place(payload);
        }
        if let Some(cause) = &mut error.cause {
            self.redact_in_place(&mut cause.message);
        }
        if let Some(http) = &mut error.http {
            self.redact_json_in_place(&mut http.body);
            http.raw = self.redact_bytes(&http.raw);
            for (name, value) in &mut http.headers {
                if self.is_secret_header(name) {
                    *value = Self::MASK.to_owned();
                } else {
                    self.redact_in_place(value);
                }
            }
        }
        error
    }
}

/// `text` URL-encoded: every byte but the unreserved ones (RFC 3986 §2.3) as `%XX`.
fn percent_encode(text: &str, lowercase: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else if lowercase {
            out.push_str(&format!("%{byte:02x}"));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Standard Base64 (padding optional); `None` when `text` is not Base64.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut bits = 0u32;
    let mut count = 0;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        bits = bits << 6 | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_the_forms_a_server_echoes_them() {
        let key = "sk-test/secret+key";
        let redactor = Redactor::new(
            Redactor::secrets_of_value(&format!("Bearer {key}"))
                .into_iter()
                .chain(Redactor::secrets_of_value("Basic dXNlcjpodW50ZXIy")),
            ["authorization".to_owned()],
        );
        for echoed in [
            format!(
                r#"{{"error":{{"message":"bad key {}"}}}}"#,
                key.replace('/', "\\/")
            ),
            r#"{"error":{"message":"bad key \u0073k-test/secret+key"}}"#.to_owned(),
            r#"{"error":{"sk-test\/secret+key":1}}"#.to_owned(),
            "bad key sk-test%2Fsecret%2Bkey".to_owned(),
            "bad key sk-test%2fsecret%2bkey".to_owned(),
            "user hunter2 / user:hunter2 / dXNlcjpodW50ZXIy".to_owned(),
        ] {
            let mut error = Error::new(Kind::HttpStatus, "x");
            error.0.http = Some(Box::new(HttpFailure {
                status: 401,
                headers: Vec::new(),
                body: echoed.clone(),
                raw: Default::default(),
            }));
            let error = redactor.redact_error(error);
            let body = &error.http_failure().unwrap().body;
            let decoded: String = serde_json::from_str::<serde_json::Value>(body)
                .map(|v| v.to_string())
                .unwrap_or_else(|_| body.clone());
            for shown in [body.as_str(), decoded.as_str()] {
                assert!(
                    !shown.contains("secret+key")
                        && !shown.contains("secret%2")
                        && !shown.contains("hunter2"),
                    "{echoed} -> {shown}"
                );
            }
            assert!(body.contains(Redactor::MASK), "{echoed} -> {body}");
        }
    }

    #[test]
    fn codes_are_stable_strings() {
        assert_eq!(
            Error::new(Kind::PoolTimeout, "x").code(),
            "ERR_POOL_TIMEOUT"
        );
        assert_eq!(Error::new(Kind::Tls, "x").code(), "ERR_TLS");
        assert!(Error::new(Kind::HeadersTimeout, "x").is_timeout());
        assert!(!Error::new(Kind::Socket, "x").is_timeout());
        assert!(Error::new(Kind::Tls, "x").is_connect());
    }

    #[test]
    fn timeout_message_names_origin_and_duration() {
        let e = Error::timed_out(
            Kind::HeadersTimeout,
            "http://127.0.0.1:9",
            "waiting for response headers",
            Duration::from_millis(250),
        );
        assert_eq!(
            e.message(),
            "request to http://127.0.0.1:9 timed out waiting for response headers after 250 ms"
        );
    }

    fn redactor() -> Redactor {
        Redactor::new(
            ["sk-secret-123".to_string()],
            SECRET_HEADERS.map(str::to_owned),
        )
    }

    #[test]
    fn redactor_masks_every_occurrence() {
        let r = redactor();
        assert_eq!(
            r.redact("bad key sk-secret-123, again sk-secret-123"),
            "bad key [REDACTED], again [REDACTED]"
        );
        assert_eq!(r.redact("nothing here"), "nothing here");
        assert!(!format!("{r:?}").contains("sk-"));
    }

    #[test]
    fn redact_error_reaches_every_text_an_error_carries() {
        let r = redactor().with(&["azure-key-456".to_string()]);
        let error = Error::http(
            "401: bad key sk-secret-123",
            HttpFailure {
                status: 401,
                headers: vec![
                    ("x-echo".into(), "Bearer sk-secret-123".into()),
                    ("x-api-key".into(), "anything".into()),
                ],
                body: r#"{"error":{"message":"key azure-key-456 is wrong"}}"#.into(),
                raw: Default::default(),
            },
        )
        .with_cause(Cause {
            code: None,
            message: "peer said sk-secret-123".into(),
        });
        let e = r.redact_error(error);
        let all = format!("{e:?}");
        assert!(!all.contains("sk-secret-123"), "{all}");
        assert!(!all.contains("azure-key-456"), "{all}");
        let http = e.http_failure().unwrap();
        assert_eq!(http.headers[1].1, Redactor::MASK);
        assert_eq!(http.headers[0].1, "Bearer [REDACTED]");

        let stream = r.redact_error(Error::provider(
            Kind::StreamError,
            "m",
            "Authorization: Bearer sk-secret-123".into(),
        ));
        assert_eq!(
            stream.provider_error(),
            Some("Authorization: Bearer [REDACTED]")
        );
    }

    #[test]
    fn a_secret_inside_a_longer_one_does_not_leave_a_tail() {
        let r = Redactor::new(["abcd".to_string(), "abcdefgh".to_string()], []);
        assert_eq!(r.redact("x abcdefgh y"), "x [REDACTED] y");
    }

    #[test]
    fn causes_carry_node_codes() {
        let io = io::Error::from(io::ErrorKind::ConnectionReset);
        let cause = Cause::of(&io);
        assert_eq!(cause.code, Some("ECONNRESET"));
        assert_eq!(
            os_code(&io::Error::from(io::ErrorKind::BrokenPipe)),
            Some("EPIPE")
        );
        assert_eq!(os_code(&io::Error::other("x")), None);
    }
}
