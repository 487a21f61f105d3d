//! llmpool: a pooled, fast, hard-to-break client for OpenAI-compatible LLM APIs.
//!
//! A pure Rust core (everything but `binding`) and a thin napi binding layer. Data flows one way:
//! JS options → [`config`] → [`chat::Client`] → [`pool`] (checkout) → [`connect`] (new connections
//! only) → hyper → response → JS. Only `binding` names napi, so `cargo test
//! --no-default-features` tests the core without Node.

#![deny(unsafe_code)]

pub mod breaker;
pub mod chat;
pub mod config;
pub mod connect;
pub mod error;
pub mod metrics;
pub mod pool;
pub mod retry;
pub mod sse;
pub mod stream;

#[cfg(feature = "napi")]
mod binding;
