//! What answers tell of an upstream, observed around each exchange: the provider's rate limits
//! (read by pacing and by routing), the time to a response head (what `routing: 'latency'`
//! compares, and the headers histogram), and a 429's wait shared with the fleet through the
//! store. The exchange itself only exchanges; this is the client's side of it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::client::Client;
use crate::config::CallOptions;
use crate::conn::Connection;
use crate::error::Error;
use crate::exchange::{Exchanged, Outgoing};
use crate::pool::Connect;

impl<K: Connect> Client<K>
where
    K::Conn: Connection,
{
    /// One exchange ([`Client::exchange`]), and what its answer tells this upstream's traffic
    /// control: the provider's rate limits and the time to the head (what `routing: 'latency'`
    /// compares) of every answer, and a 429's wait shared with the fleet. A future-returning fn
    /// (an async fn keeps its arguments twice).
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub(crate) fn observed_exchange<'a>(
        &'a self,
        outgoing: Outgoing<'a>,
        call: &'a CallOptions,
    ) -> impl std::future::Future<Output = Result<Exchanged<K>, Error>> + Send + 'a {
        async move {
            // Watched: the watcher sees the request first and may add headers to it (boxed:
            // only watched calls carry it).
            let with_added;
            let call = match &call.observer {
                None => call,
                Some(observer) => {
                    let added = Box::pin(observer.0.create(self.seen(&outgoing, call))).await;
                    with_added = call.with_added_headers(added);
                    &with_added
                }
            };
            let answered = self.exchange(outgoing, call).await?;
            if let Some(observer) = &call.observer {
                observer.0.headers(
                    answered.head.status.as_u16(),
                    crate::exchange::header_pairs(&answered.head.headers),
                );
            }
            self.metrics.headers_after(answered.waited);
            self.observe_latency(answered.waited);
            self.observe_rate_limits(&answered.head.headers);
            let judged = self.judge_status(answered).await;
            if let Err(error) = &judged {
                self.share_pause(error);
            }
            judged
        }
    }

    /// A 429 that said when to come back pauses this upstream for the whole fleet.
    fn share_pause(&self, error: &Error) {
        if let (Some((store, key)), Some(429), Some(wait)) = (
            self.limiter.as_ref().and_then(|l| l.store()),
            error.http_failure().map(|h| h.status),
            error.retry_after(),
        ) {
            store.pause(key, wait);
        }
    }

    /// Records the rate limits a response head reports (most responses of OpenAI-style APIs).
    fn observe_rate_limits(&self, headers: &hyper::HeaderMap) {
        let pairs = headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
        let now = std::time::SystemTime::now();
        if let Some(limits) = crate::ratelimit::parse(pairs, now) {
            *self.rate_limits.lock().unwrap_or_else(|e| e.into_inner()) = Some((limits, now));
        }
    }

    /// One more time to response headers, into the moving average (weight 1/5: a few answers
    /// move it, one outlier does not swing it).
    fn observe_latency(&self, elapsed: Duration) {
        let sample = (elapsed.as_micros() as u64).max(1);
        let _ = self
            .latency_micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    sample
                } else {
                    (old * 4 + sample) / 5
                })
            });
    }

    /// A request as its watcher sees it: no header that carries a secret.
    fn seen(&self, outgoing: &Outgoing<'_>, call: &CallOptions) -> crate::observe::RequestSeen {
        let mut headers = Vec::new();
        let base = self.base_headers.iter();
        let own = call.headers.iter().map(|(k, v)| (k, v));
        for (name, value) in base.chain(own) {
            let secret = value.is_sensitive()
                || call
                    .secrets
                    .iter()
                    .any(|s| value.as_bytes() == s.as_bytes());
            if !secret {
                headers.push((
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                ));
            }
        }
        if outgoing.accept == crate::exchange::Accept::EventStream {
            headers.retain(|(k, _)| k != "accept");
            headers.push(("accept".into(), "text/event-stream".into()));
        }
        let path = outgoing
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        crate::observe::RequestSeen {
            origin: self.config.endpoint.origin.clone(),
            method: outgoing.method.as_str().to_owned(),
            path,
            headers,
        }
    }
}
