//! Who watches each HTTP request a call sends (each attempt is one), the way undici's
//! diagnostics channels let `@opentelemetry/instrumentation-undici` watch undici's: told of the
//! request before it is sent (and able to add headers to it, as `traceparent`), of its response
//! head, and of its end or its failure. The binding implements it for JS; the core only calls
//! it, and only for calls that carry one (nobody watching costs nothing).

use futures::future::BoxFuture;

/// A request about to be sent, as the watcher sees it. Sensitive headers (the API key's
/// `authorization`, a proxy's credentials, the call's secret headers) are left out.
#[derive(Debug, Clone)]
pub struct RequestSeen {
    pub origin: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

pub trait RequestObserver: Send + Sync {
    /// A request is about to be sent: resolves to the headers to add to it.
    fn create(&self, request: RequestSeen) -> BoxFuture<'static, Vec<(String, String)>>;
    /// Its response head arrived.
    fn headers(&self, status: u16, headers: Vec<(String, String)>);
    /// Its response ended (the body read to its end, or the stream complete).
    fn done(&self);
    /// It failed: the error's stable code and, when the server answered, its status.
    fn error(&self, code: &'static str, status: Option<u16>);
}

/// A call's watcher, as call options carry it (`Option<Arc<Observer>>`: one word in every
/// call's options, which a stream keeps for its life).
pub struct Observer(pub Box<dyn RequestObserver>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}
