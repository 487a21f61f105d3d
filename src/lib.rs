//! llmpool: a pooled, fast, hard-to-break client for OpenAI-compatible LLM APIs.
//!
//! A pure Rust core (everything but `binding`) and a thin napi binding layer. Data flows one way:
//! JS options → [`config`] / [`router::config`] → [`router::Router`] (which upstream, failover,
//! fallbacks; steps aside for one `baseUrl`) → [`client::Client`] (one upstream) → [`chat`] /
//! [`stream`] → [`attempt`] (the attempt loop) → [`exchange`] (one request) → [`pool`]
//! (checkout) → [`transport`] (new connections; HTTP/1.1 ours, HTTP/2 hyper's) → body or [`sse`]
//! decoder →
//! outcome, decided with [`payload`] (or, for a text stream, [`accumulate`]) → JS. [`limits`]
//! keeps client-side limits, in [`store`] (Redis) when a fleet shares them; [`cache`] answers a
//! call it has seen before without the network. Only `binding` names napi, so
//! `cargo test --no-default-features` tests the core without Node.

#![deny(unsafe_code)]

pub mod accumulate;
pub mod attempt;
pub mod breaker;
pub mod cache;
pub mod cancel;
pub mod chat;
pub mod client;
pub mod config;
pub mod conn;
pub mod eager;
pub mod error;
pub mod exchange;
pub mod fetch;
pub mod limits;
pub mod metrics;
pub mod observe;
pub mod payload;
pub mod pool;
pub mod proxy_url;
pub mod ratelimit;
pub mod retry;
pub mod router;
pub mod server_time;
pub mod sse;
pub mod store;
pub mod stream;
pub mod traffic;
pub mod transport;

#[cfg(feature = "napi")]
mod binding;

#[cfg(test)]
mod tests;
