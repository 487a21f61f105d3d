//! A raw call for `client.fetch`: any method and path on the origin, the response head handed
//! over as soon as it arrives, then the body as byte chunks under the stream's flow control.
//!
//! It runs the same attempt loop as every call (retries before the head, breaker, deadline) and
//! passes the same redactor. A final non-2xx answer is handed over as a response (status,
//! headers, body up to 64 KiB), not an error: an SDK on top of `fetch` turns it into its own
//! error class. Once the head is handed over, nothing is retried.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, Uri};
use tokio_util::sync::CancellationToken;

use crate::attempt::{BoxedAttempt, CallKind};
use crate::cancel::Abort;
use crate::client::Client;
use crate::config::CallOptions;
use crate::conn::Connection;
use crate::error::{Error, Kind};
use crate::exchange::{Accept, Exchanged, Outgoing};
use crate::pool::Connect;
use crate::stream::{Reader, StreamHandle};

/// One raw request.
pub struct RawRequest {
    pub method: Method,
    pub uri: Uri,
    pub body: Bytes,
}

impl<K: Connect> Client<K>
where
    K::Conn: Connection,
{
    /// A raw call; nothing is sent before [`StreamHandle::start`].
    pub fn fetch(
        self: &Arc<Self>,
        request: RawRequest,
        call: CallOptions,
        cancel: Abort,
    ) -> StreamHandle {
        let client = self.clone();
        StreamHandle::new(Box::new(move |reader, closed| {
            Box::pin(read_raw(client, request, call, cancel, reader, closed))
        }))
    }
}

async fn read_raw<K: Connect>(
    client: Arc<Client<K>>,
    request: RawRequest,
    call: CallOptions,
    cancel: Abort,
    reader: Arc<Reader>,
    closed: CancellationToken,
) where
    K::Conn: Connection,
{
    let client = &*client;
    // Set once the head reached the consumer: from then on a failure is final.
    let committed = AtomicBool::new(false);
    let attempt = || {
        let one: BoxedAttempt<'_, ()> =
            Box::pin(raw_attempt(client, &request, &call, &reader, &committed));
        one
    };
    let reading = client.read_until_closed(&call, CallKind::Chat, &committed, &closed, attempt);
    let work = client.within_limits(&request.body, reading, |_| None);
    let outcome = client.run(cancel.as_ref(), &call, work).await;
    match outcome {
        // A final HTTP error before the head: the consumer gets it as the response it was.
        Err(e)
            if !committed.load(Ordering::Relaxed)
                && e.http_failure().is_some()
                && e.kind() == Kind::HttpStatus =>
        {
            let http = e.http_failure().expect("checked");
            // The body byte for byte (capped, redacted), and a Content-Length that says so.
            let mut headers = http.headers.clone();
            for (name, value) in &mut headers {
                if name.eq_ignore_ascii_case("content-length") {
                    *value = http.raw.len().to_string();
                }
            }
            reader.head(http.status, headers);
            if !http.raw.is_empty() {
                reader.push_bytes(http.raw.clone());
            }
            reader.end();
        }
        Err(e) => reader.fail(e),
        Ok(()) if closed.is_cancelled() => reader.end(),
        Ok(()) => {}
    }
}

async fn raw_attempt<K: Connect>(
    client: &Client<K>,
    request: &RawRequest,
    call: &CallOptions,
    reader: &Reader,
    committed: &AtomicBool,
) -> Result<(), Error>
where
    K::Conn: Connection,
{
    let outgoing = Outgoing {
        method: request.method.clone(),
        uri: &request.uri,
        body: request.body.clone(),
        accept: Accept::Json,
    };
    let Exchanged {
        head,
        mut body,
        lease,
        lifetime,
    } = client.exchange(outgoing, call).await?;
    let headers = crate::exchange::header_pairs(&head.headers);
    let status = head.status.as_u16();
    // Not held through the body (see `Exchanged::lifetime`).
    drop(head);
    committed.store(true, Ordering::Relaxed);
    reader.head(status, headers);
    loop {
        if !reader.has_credit() {
            reader.wait_for_credit().await;
        }
        match client.next_frame(&mut body).await? {
            None => {
                lease.release(lifetime);
                reader.end();
                return Ok(());
            }
            Some(Err(e)) => {
                return Err(client.socket_error("failed while reading the response", &e))
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() {
                        reader.push_bytes(data);
                    }
                }
            }
        }
    }
}
