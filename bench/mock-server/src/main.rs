//! A fast OpenAI-compatible mock for the benchmarks, on ONE tokio thread so that it uses at most
//! one of the machine's two cores and the clients share the other.
//!
//! POST /v1/chat/completions: a ~600-byte completion, or with `"stream": true` an SSE stream of
//! `max_tokens` chunks (default 100), `x-chunk-delay-ms` apart (default 0).
//! GET /admin/connections: connections accepted so far. POST /admin/reset: zero it.
//! Prints `listening on http://127.0.0.1:PORT` once ready. With `TLS_CERT` and `TLS_KEY` (PEM
//! files) it also serves TLS with ALPN `h2` and `http/1.1` (HTTP/2 or HTTP/1.1, as the client
//! picks) on a second port, printed as `tls listening on https://127.0.0.1:PORT`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;
type Accepted = Arc<AtomicU64>;

const COMPLETION: &str = concat!(
    r#"{"id":"chatcmpl-bench0000000000000000000000","object":"chat.completion","created":1700000000,"#,
    r#""model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"#,
    r#""The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "#,
    r#"How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow. The five boxing "#,
    r#"wizards jump quickly. Jackdaws love my big sphinx of quartz.","refusal":null},"logprobs":null,"#,
    r#""finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":64,"total_tokens":76},"#,
    r#""system_fingerprint":"fp_bench","service_tier":"default"}"#
);

fn chunk(i: usize) -> Bytes {
    Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
    ))
}

const LAST: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";

fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()).boxed())
        .expect("valid response")
}

/// `"key": <number>` out of a JSON body without a JSON parser (the bench body is ours).
fn number_field(body: &[u8], key: &str) -> Option<usize> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

async fn handle(req: Request<Incoming>, accepted: Accepted) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/admin/connections" => return Ok(full(200, "application/json", format!("{{\"accepted\":{}}}", accepted.load(Ordering::Relaxed)))),
        "/admin/reset" => {
            accepted.store(0, Ordering::Relaxed);
            return Ok(full(200, "application/json", "{}"));
        }
        _ => {}
    }
    let delay_ms: u64 = req
        .headers()
        .get("x-chunk-delay-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(full(400, "application/json", "{\"error\":{\"message\":\"bad body\"}}")),
    };
    let stream = std::str::from_utf8(&body).is_ok_and(|t| t.contains("\"stream\":true"));
    if !stream {
        return Ok(full(200, "application/json", COMPLETION));
    }
    let n = number_field(&body, "max_tokens").unwrap_or(100);
    let frames = futures::stream::unfold(0usize, move |i| async move {
        if i > n {
            return None;
        }
        if delay_ms > 0 && i > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        let data = if i == n { Bytes::from_static(LAST.as_bytes()) } else { chunk(i) };
        Some((Ok::<_, Infallible>(Frame::data(data)), i + 1))
    });
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .expect("valid response"))
}

fn tls_acceptor() -> Option<tokio_rustls::TlsAcceptor> {
    let cert = std::env::var("TLS_CERT").ok()?;
    let key = std::env::var("TLS_KEY").ok()?;
    let chain = CertificateDer::pem_file_iter(cert).expect("TLS_CERT").collect::<Result<Vec<_>, _>>().expect("TLS_CERT");
    let key = PrivateKeyDer::from_pem_file(key).expect("TLS_KEY");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("TLS config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let accepted: Accepted = Arc::default();
        if let Some(acceptor) = tls_acceptor() {
            let tls = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
            let addr = tls.local_addr().expect("addr");
            let accepted = accepted.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = tls.accept().await else { continue };
                    let _ = stream.set_nodelay(true);
                    accepted.fetch_add(1, Ordering::Relaxed);
                    let (acceptor, accepted) = (acceptor.clone(), accepted.clone());
                    tokio::spawn(async move {
                        let Ok(stream) = acceptor.accept(stream).await else { return };
                        let service = hyper::service::service_fn(move |req| handle(req, accepted.clone()));
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            println!("listening on http://{}", listener.local_addr().expect("addr"));
            println!("tls listening on https://{addr}");
        } else {
            println!("listening on http://{}", listener.local_addr().expect("addr"));
        }
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            accepted.fetch_add(1, Ordering::Relaxed);
            let accepted = accepted.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(req, accepted.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
