//! A raw call for `client.fetch`: any method and path on the origin, the response head handed
//! over as soon as it arrives, then the body as byte chunks under the stream's flow control.
//!
//! The router runs its attempts in the same loop as every call (retries before the head, breaker,
//! deadline) and passes the same redactor. A final non-2xx answer is handed over as a response (status,
//! headers, body up to 64 KiB), not an error: an SDK on top of `fetch` turns it into its own
//! error class. Once the head is handed over, nothing is retried.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use hyper::Method;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, Target};
use crate::config::CallOptions;
use crate::conn::Connection;
use crate::error::{Error, Kind};
use crate::exchange::{Accept, Exchanged, Outgoing};
use crate::pool::Connect;
use crate::stream::Reader;

/// One raw request.
pub struct RawRequest {
    pub method: Method,
    pub target: Target,
    pub body: Bytes,
}

/// Tells the consumer how a `fetch` ended. A final HTTP error before the head is handed over as
/// the response it was (the SDK on top makes its own error of it); any other failure fails.
pub(crate) fn deliver_raw_outcome(
    outcome: Result<(), Error>,
    committed: &AtomicBool,
    reader: &Reader,
    closed: &CancellationToken,
) {
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

/// One attempt of a `fetch`: the head handed over as soon as it arrives (from then on the call
/// is committed), then the body under the stream's flow control.
pub(crate) async fn raw_attempt<K: Connect>(
    client: &Client<K>,
    request: &RawRequest,
    call: &CallOptions,
    reader: &Reader,
    committed: &AtomicBool,
) -> Result<(), Error>
where
    K::Conn: Connection,
{
    let uri = client.uri_of(&request.target)?;
    let outgoing = Outgoing {
        method: request.method.clone(),
        uri: &uri,
        body: request.body.clone(),
        accept: Accept::Json,
    };
    let Exchanged {
        head,
        mut body,
        lease,
        lifetime,
    } = client.observed_exchange(outgoing, call).await?;
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
