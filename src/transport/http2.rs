//! HTTP/2 connections on the `h2` crate directly: the handshake, the task that drives the
//! connection (and its PING keep-alive), sending one request, and the response body.
//!
//! Why not hyper's HTTP/2 client (we had it): for every request it spawns a task to map the
//! response, and, because it waits for flow-control capacity before sending a body, usually a
//! second one to send the body, which then goes out in a write of its own after the headers. A
//! chat call's body is small and sent whole: here its `HEADERS` and `DATA` frames are queued
//! together (h2 buffers data beyond the window) and leave in one write, and the caller's own
//! future awaits the response. Measured with `bench/` (S3 over TLS), see the README.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures::future::select;
use futures::task::AtomicWaker;
use h2::client::{self, SendRequest};
use h2::{Ping, RecvStream};
use hyper::body::{Body, Frame};
use hyper::header::{
    HeaderMap, HeaderName, CONNECTION, CONTENT_LENGTH, HOST, TE, TRANSFER_ENCODING, UPGRADE,
};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Method, Request, Response, Uri};
use tokio::io::{AsyncRead, AsyncWrite};

use super::h2::ServerSettings;
use crate::conn::SendError;

/// One HTTP/2 connection's sending side; every stream holds a clone.
#[derive(Clone)]
pub struct H2Conn {
    sender: SendRequest<Bytes>,
    /// The origin's `host[:port]`, each request's `:authority`.
    authority: Authority,
    pub(super) settings: Arc<ServerSettings>,
    /// The connection, shared with its task.
    driven: Arc<Driven>,
}

/// How the connection is set up and kept alive.
pub struct H2Settings {
    /// Unread bytes one stream may have in flight.
    pub stream_window: u32,
    /// Unread bytes all streams together may have in flight.
    pub connection_window: u32,
    /// A PING every this long, even while idle…
    pub ping_interval: Duration,
    /// …and the connection is closed when it is not answered within this long.
    pub ping_timeout: Duration,
}

/// Performs the HTTP/2 handshake over `stream` and spawns the task that drives the connection.
pub async fn handshake<S>(
    stream: S,
    authority: Authority,
    settings: Arc<ServerSettings>,
    setup: &H2Settings,
) -> Result<H2Conn, h2::Error>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, mut connection) = client::Builder::new()
        .initial_window_size(setup.stream_window)
        .initial_connection_window_size(setup.connection_window)
        .handshake::<_, Bytes>(stream)
        .await?;
    let pings = connection.ping_pong();
    let driven = Arc::new(Driven {
        connection: Mutex::new(Box::pin(connection)),
        driver: AtomicWaker::new(),
        flush_deferred: AtomicBool::new(false),
        closed: AtomicBool::new(false),
    });
    drop(tokio::spawn(drive(
        driven.clone(),
        pings,
        setup.ping_interval,
        setup.ping_timeout,
    )));
    Ok(H2Conn {
        sender,
        authority,
        settings,
        driven,
    })
}

type DynConnection = Pin<Box<dyn Future<Output = Result<(), h2::Error>> + Send>>;

/// The connection future, polled by its task and, at the end of a call's first poll on the JS
/// thread, by that thread (see [`crate::eager::defer`]): a lone call's frames then leave from
/// the thread that queued them, in one write, and the runtime's worker wakes only for the answer.
/// Whoever polls it passes this as the waker, so whatever the connection waits for (the socket,
/// a stream queuing frames) wakes its task, or is deferred to the first poll's end.
struct Driven {
    connection: Mutex<DynConnection>,
    /// The connection task's waker.
    driver: AtomicWaker,
    /// A flush is deferred to the end of the current first poll.
    flush_deferred: AtomicBool,
    /// Set when the connection ended (the socket closed, a PING went unanswered).
    closed: AtomicBool,
}

impl Driven {
    /// Polls the connection here, with its own waker; returns true when it ended.
    fn poll_connection(self: &Arc<Self>, connection: &mut DynConnection) -> bool {
        let waker = Waker::from(self.clone());
        let ended = connection
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready();
        if ended {
            self.closed.store(true, Ordering::Release);
        }
        ended
    }

    /// Writes what the first poll queued, on this thread; leaves it to the task when the task
    /// holds the connection right now.
    fn flush(self: &Arc<Self>) {
        self.flush_deferred.store(false, Ordering::Release);
        // The task must look: when the connection ended here, or when it is polling it now.
        let task_must_look = match self.connection.try_lock() {
            Ok(mut connection) => self.poll_connection(&mut connection),
            Err(_) => true,
        };
        if task_must_look {
            self.driver.wake();
        }
    }
}

impl Wake for Driven {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.flush_deferred.swap(true, Ordering::AcqRel) {
            return; // a flush is already deferred to the end of this first poll
        }
        let driven = self.clone();
        if !crate::eager::defer(move || driven.flush()) {
            self.flush_deferred.store(false, Ordering::Release);
            self.driver.wake();
        }
    }
}

/// Drives the connection until the socket closes, every handle to it is gone, or a PING goes
/// unanswered (then dropping it closes the socket and fails its streams).
async fn drive(
    driven: Arc<Driven>,
    pings: Option<h2::PingPong>,
    interval: Duration,
    timeout: Duration,
) {
    let connection = poll_fn(|cx| {
        driven.driver.register(cx.waker());
        let mut connection = driven.connection.lock().unwrap_or_else(|e| e.into_inner());
        if driven.closed.load(Ordering::Acquire) || driven.poll_connection(&mut connection) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    match pings {
        Some(pings) => {
            let pings = Box::pin(keep_alive(pings, interval, timeout));
            drop(select(connection, pings).await);
        }
        None => connection.await,
    }
    driven.closed.store(true, Ordering::Release);
    // Closes the socket now (the handles that keep `driven` alive may live on).
    let ended: DynConnection = Box::pin(poll_fn(|_| Poll::Ready(Ok(()))));
    drop(std::mem::replace(
        &mut *driven.connection.lock().unwrap_or_else(|e| e.into_inner()),
        ended,
    ));
}

/// Returns when a PING was not answered in time (or could not be sent).
async fn keep_alive(mut pings: h2::PingPong, interval: Duration, timeout: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        if pings.send_ping(Ping::opaque()).is_err() {
            return;
        }
        let pong = poll_fn(|cx| pings.poll_pong(cx));
        match tokio::time::timeout(timeout, pong).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
    }
}

impl H2Conn {
    pub fn is_closed(&self) -> bool {
        self.driven.closed.load(Ordering::Acquire)
    }

    /// Sends `request` and awaits the response head.
    pub fn send(
        &mut self,
        request: Request<Bytes>,
    ) -> impl Future<Output = Result<Response<H2Body>, SendError>> + Send + 'static {
        let mut sender = self.sender.clone();
        let authority = self.authority.clone();
        async move {
            if let Err(e) = poll_fn(|cx| sender.poll_ready(cx)).await {
                return Err(SendError::NotSent(Box::new(e)));
            }
            let (head, body) = request.into_parts();
            let mut head = Request::from_parts(head, ());
            prepare(&mut head, body.len(), authority);
            let end_of_stream = body.is_empty();
            // An error here left nothing on the wire (the frame is queued only on success): the
            // connection's failure is sent elsewhere for free; a request h2 finds malformed is not.
            let (response, mut sending) = match sender.send_request(head, end_of_stream) {
                Ok(sent) => sent,
                Err(e) if e.is_go_away() || e.is_io() || e.is_reset() => {
                    return Err(SendError::NotSent(Box::new(e)))
                }
                Err(e) => return Err(SendError::Failed(Box::new(e))),
            };
            if !end_of_stream {
                // Queued whole (h2 buffers past the flow-control window), so it leaves with the
                // headers; the stream is reset if the response future is dropped early.
                if let Err(e) = sending.send_data(body, true) {
                    return Err(classify(e));
                }
            }
            match response.await {
                Ok(response) => Ok(response.map(H2Body::new)),
                Err(e) => Err(classify(e)),
            }
        }
    }
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// A request as HTTP/2 sends it: its target as `:scheme https` and `:authority` (RFC 9113 §8.3.1:
/// from `Host`, which is not sent, or else the connection's origin), without what HTTP/2 leaves
/// out (§8.2.2), and with the length of a body it has.
fn prepare(request: &mut Request<()>, length: usize, origin: Authority) {
    let headers: &mut HeaderMap = request.headers_mut();
    let authority = match headers.remove(HOST) {
        Some(host) if host.as_bytes() != origin.as_str().as_bytes() => {
            Authority::try_from(host.as_bytes()).unwrap_or(origin)
        }
        _ => origin,
    };
    for name in [
        CONNECTION,
        TRANSFER_ENCODING,
        UPGRADE,
        KEEP_ALIVE,
        PROXY_CONNECTION,
    ] {
        headers.remove(name);
    }
    if headers.get(TE).is_some_and(|te| te != "trailers") {
        headers.remove(TE);
    }
    let method = request.method().clone();
    if length != 0 || matches!(method, Method::POST | Method::PUT | Method::PATCH) {
        request
            .headers_mut()
            .entry(CONTENT_LENGTH)
            .or_insert_with(|| length.into());
    }
    let mut target = std::mem::take(request.uri_mut()).into_parts();
    target.scheme = Some(Scheme::HTTPS);
    target.authority = Some(authority);
    if target.path_and_query.is_none() {
        target.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(target) {
        *request.uri_mut() = uri;
    }
}

/// Why the server did not process an HTTP/2 stream (RFC 9113 §8.7: either way it did no work).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unprocessed {
    /// `REFUSED_STREAM`: the connection goes on.
    Refused,
    /// Above the last stream id of the server's GOAWAY: the connection is going away.
    GoingAway,
}

pub fn unprocessed(e: &h2::Error) -> Option<Unprocessed> {
    if e.reason() == Some(h2::Reason::REFUSED_STREAM) {
        return Some(Unprocessed::Refused);
    }
    (e.is_go_away() && e.is_remote()).then_some(Unprocessed::GoingAway)
}

/// A stream that failed after it was opened: refused or above a GOAWAY's last id, the server did
/// no work (sent again for free); otherwise it may have.
fn classify(e: h2::Error) -> SendError {
    match unprocessed(&e) {
        Some(Unprocessed::Refused) => SendError::Refused(Box::new(e)),
        Some(Unprocessed::GoingAway) => SendError::NotSent(Box::new(e)),
        None => SendError::Failed(Box::new(e)),
    }
}

/// A response body: DATA frames, then trailers. What is read is handed back to the flow-control
/// window at once (the window bounds what is in flight, the reader's buffers what is kept).
pub struct H2Body {
    stream: RecvStream,
    /// The data frames are done; trailers (if any) next.
    data_done: bool,
}

impl H2Body {
    fn new(stream: RecvStream) -> Self {
        H2Body {
            stream,
            data_done: false,
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match std::task::ready!(this.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match std::task::ready!(this.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::header::HeaderValue;
    use std::sync::Mutex as StdMutex;
    use std::thread::ThreadId;
    use tokio::io::{duplex, DuplexStream, ReadBuf};

    /// Each write on the client socket: the thread it ran on and its size.
    type Writes = Arc<StdMutex<Vec<(ThreadId, usize)>>>;

    /// A client socket that records each write: the thread it ran on and its size.
    struct Recorded {
        inner: DuplexStream,
        writes: Writes,
    }

    impl AsyncRead for Recorded {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Recorded {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
            if let Poll::Ready(Ok(n)) = polled {
                let thread = std::thread::current().id();
                self.writes.lock().unwrap().push((thread, n));
            }
            polled
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    fn setup(ping_interval: Duration) -> H2Settings {
        H2Settings {
            stream_window: 65_535,
            connection_window: 1 << 20,
            ping_interval,
            ping_timeout: Duration::from_millis(100),
        }
    }

    /// A connection to an h2 server on `rt` that answers every request with "ok".
    fn connect(rt: &tokio::runtime::Runtime, setup: &H2Settings, answer: bool) -> (H2Conn, Writes) {
        let (client, server) = duplex(1 << 16);
        let writes = Arc::new(StdMutex::new(Vec::new()));
        let recorded = Recorded {
            inner: client,
            writes: writes.clone(),
        };
        rt.spawn(async move {
            let mut server = h2::server::handshake(server).await.unwrap();
            if !answer {
                // Holds the connection without reading: no PING is answered.
                std::future::pending::<()>().await;
            }
            // Each request on its own task: `accept` drives the connection, so a request whose
            // DATA comes in a later read than its HEADERS would wait forever if its body were read
            // here (a call sent from outside the runtime is flushed by the connection task,
            // sometimes between the two).
            while let Some(Ok((request, mut respond))) = server.accept().await {
                tokio::spawn(async move {
                    // Answers with the target it saw and the Host header, if any.
                    let seen = format!("{} {:?}", request.uri(), request.headers().get(HOST));
                    let mut body = request.into_body();
                    while let Some(Ok(_)) = body.data().await {}
                    let mut sending = respond.send_response(Response::new(()), false).unwrap();
                    sending.send_data(Bytes::from(seen), true).unwrap();
                });
            }
        });
        let settings = super::super::h2::Watch::new(tokio::io::empty()).1;
        let conn = rt
            .block_on(handshake(
                recorded,
                Authority::from_static("example.test"),
                settings,
                setup,
            ))
            .expect("handshake");
        (conn, writes)
    }

    fn post() -> Request<Bytes> {
        let mut request = Request::new(Bytes::from_static(b"{\"model\":\"m\"}"));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = "/v1/chat/completions".parse().unwrap();
        request
    }

    #[test]
    fn a_lone_call_writes_its_headers_and_body_at_once_from_the_calling_thread() {
        let rt = crate::eager::test_runtime();
        let (mut conn, writes) = connect(&rt, &setup(Duration::from_secs(60)), true);
        // Let the handshake's own writes (preface, SETTINGS, their ACKs) settle.
        std::thread::sleep(Duration::from_millis(100));
        let before = writes.lock().unwrap().len();
        let (done, answered) = tokio::sync::oneshot::channel();
        let sending = conn.send(post());
        crate::eager::spawn(rt.handle(), async move {
            let response = sending.await.map(|r| r.status());
            let _ = done.send(response.is_ok());
        });
        // The first poll has returned: the request's frames are already written, here.
        let after: Vec<_> = writes.lock().unwrap()[before..].to_vec();
        assert_eq!(
            after.len(),
            1,
            "HEADERS and DATA in one write, before any worker ran: {after:?}"
        );
        assert_eq!(after[0].0, std::thread::current().id());
        assert!(rt.block_on(answered).unwrap(), "the response arrived");
    }

    /// Sends `request` and reads the whole answer.
    async fn call(conn: &mut H2Conn, request: Request<Bytes>) -> String {
        let response = conn.send(request).await.expect("answered");
        let body = response.into_body().collect().await.expect("read");
        String::from_utf8(body.to_bytes().to_vec()).unwrap()
    }

    #[test]
    fn requests_name_their_target_in_pseudo_headers_not_host() {
        let rt = crate::eager::test_runtime();
        let (mut conn, _) = connect(&rt, &setup(Duration::from_secs(60)), true);
        let mut with_host = post();
        let host = HeaderValue::from_static("example.test");
        with_host.headers_mut().insert(HOST, host);
        let mut other_host = post();
        let other = HeaderValue::from_static("api.example.test:8443");
        other_host.headers_mut().insert(HOST, other);
        rt.block_on(async {
            assert_eq!(
                call(&mut conn, with_host).await,
                "https://example.test/v1/chat/completions None"
            );
            // A Host set by the caller is the request's authority.
            assert_eq!(
                call(&mut conn, other_host).await,
                "https://api.example.test:8443/v1/chat/completions None"
            );
            assert_eq!(
                call(&mut conn, post()).await,
                "https://example.test/v1/chat/completions None"
            );
        });
    }

    #[test]
    fn an_unanswered_ping_closes_the_connection() {
        let rt = crate::eager::test_runtime();
        let (conn, _) = connect(&rt, &setup(Duration::from_millis(50)), false);
        assert!(!conn.is_closed());
        rt.block_on(async {
            for _ in 0..100 {
                if conn.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("a connection whose PING went unanswered is still open after 1 s");
        });
    }
}
