//! What the core needs of one open HTTP connection: send one request and say, when that fails,
//! whether the request could have reached the server.
//!
//! The real connection is `transport::HttpConn` (our HTTP/1.1, hyper's HTTP/2); the attempt loop
//! and the resend rule are unit-tested with fakes that implement this trait.

use std::error::Error as StdError;
use std::future::Future;

use bytes::Bytes;
use hyper::body::Body;
use hyper::{Request, Response};

/// A boxed lower-level error (hyper's, an `io::Error`, a fake's).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The server's answer broke HTTP (an unreadable head, faulty framing): carried inside the
/// `io::Error` a connection fails with, so that the exchange can tell a malformed answer (the
/// server had the request: `ERR_INVALID_RESPONSE`, never resent by default) from a broken socket.
#[derive(Debug)]
pub struct Malformed(pub String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Malformed {}

/// Whether a failure anywhere in `error`'s chain is a malformed answer: ours ([`Malformed`]) or
/// hyper's (a parse error of its HTTP/2 or HTTP/1 side).
pub fn is_malformed(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<Malformed>()
            || e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_parse)
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.get_ref().is_some_and(|inner| inner.is::<Malformed>()) {
                return true;
            }
        }
        current = e.source();
    }
    false
}

/// Why sending failed.
#[derive(Debug)]
pub enum SendError {
    /// The request was provably never written (the connection was closed before it, the socket
    /// refused its first byte, or hyper's HTTP/2 handed it back): sending it again cannot make
    /// the server do the work twice.
    NotSent(BoxError),
    /// The server refused the stream (HTTP/2 `REFUSED_STREAM`): it did no work on it, and the
    /// connection itself is still good (a server refuses streams when it is busy).
    Refused(BoxError),
    /// The request may have been written, in part or whole: the server may be working on it.
    Failed(BoxError),
}

/// One open connection that carries one request at a time.
pub trait Connection: Send + 'static {
    type Body: Body<Data = Bytes, Error: StdError + Send + Sync + 'static> + Send + Unpin + 'static;

    /// Sends `request` and waits for the response head.
    fn send(
        &mut self,
        request: Request<Bytes>,
    ) -> impl Future<Output = Result<Response<Self::Body>, SendError>> + Send;
}
