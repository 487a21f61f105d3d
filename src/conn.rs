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

/// Why sending failed.
#[derive(Debug)]
pub enum SendError {
    /// The request was provably never written (the connection was closed before it, the socket
    /// refused its first byte, or hyper's HTTP/2 handed it back): sending it again cannot make
    /// the server do the work twice.
    NotSent(BoxError),
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
