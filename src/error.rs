//! One error type for the whole core.
//!
//! Every failure a caller can see is an [`Error`] with a stable string [`Error::code`] (what JS code
//! matches on), a short lowercase message that names the origin, and, for HTTP errors, the status,
//! headers and the provider's body. Secrets are stripped before an `Error` is built (see
//! [`Redactor`]), so nothing downstream has to remember to.

use std::fmt;
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
    HttpStatus,
    InvalidResponse,
    StreamError,
    SseEventTooLarge,
    CircuitOpen,
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
            Kind::HttpStatus => "ERR_HTTP_STATUS",
            Kind::InvalidResponse => "ERR_INVALID_RESPONSE",
            Kind::StreamError => "ERR_STREAM_ERROR",
            Kind::SseEventTooLarge => "ERR_SSE_EVENT_TOO_LARGE",
            Kind::CircuitOpen => "ERR_CIRCUIT_OPEN",
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
    /// The response body as text (redacted, capped in size).
    pub body: String,
}

/// The one public error type of the core.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    message: String,
    http: Option<Box<HttpFailure>>,
    /// The provider's error payload of an SSE error event (redacted).
    provider_error: Option<String>,
    /// Attempts made before giving up (1 without retries).
    attempts: u32,
    /// How long the server asked us to wait (`Retry-After`), when it asked.
    retry_after: Option<Duration>,
}

impl Error {
    pub(crate) fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            http: None,
            provider_error: None,
            attempts: 1,
            retry_after: None,
        }
    }

    pub(crate) fn http(message: impl Into<String>, failure: HttpFailure) -> Self {
        Error {
            kind: Kind::HttpStatus,
            message: message.into(),
            http: Some(Box::new(failure)),
            provider_error: None,
            attempts: 1,
            retry_after: None,
        }
    }

    /// An error the provider reported inside a stream (`event: error` or an `error` payload).
    pub(crate) fn stream(message: impl Into<String>, payload: String) -> Self {
        Error {
            kind: Kind::StreamError,
            message: message.into(),
            http: None,
            provider_error: Some(payload),
            attempts: 1,
            retry_after: None,
        }
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

    /// Attempts made before this error was final.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The wait the server asked for, when the call failed because it was longer than allowed.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The provider's error payload of a stream error.
    pub fn provider_error(&self) -> Option<&str> {
        self.provider_error.as_deref()
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
        )
    }

    pub fn is_connect(&self) -> bool {
        matches!(self.kind, Kind::Connect | Kind::ConnectTimeout | Kind::Tls)
    }

    pub fn is_cancelled(&self) -> bool {
        matches!(self.kind, Kind::Aborted | Kind::Closed)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Replaces every occurrence of a secret with `[REDACTED]`.
///
/// Servers echo keys back ("Incorrect API key provided: sk-…"), so every string that reaches an
/// error passes through here.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub const MASK: &'static str = "[REDACTED]";

    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        Redactor {
            // A very short "secret" would mangle ordinary text; keys are long.
            secrets: secrets.into_iter().filter(|s| s.len() >= 4).collect(),
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), Self::MASK);
            }
        }
        out
    }
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

    #[test]
    fn redactor_masks_every_occurrence() {
        let r = Redactor::new(["sk-secret-123".to_string()]);
        assert_eq!(
            r.redact("bad key sk-secret-123, again sk-secret-123"),
            "bad key [REDACTED], again [REDACTED]"
        );
        assert_eq!(r.redact("nothing here"), "nothing here");
        assert!(!format!("{r:?}").contains("sk-"));
    }
}
