//! `LLMPOOL_LOG`: when set (env-filter syntax, e.g. `debug` or `llmpool=trace`), the core's
//! `tracing` events are printed to stderr. When unset no subscriber is installed, and every
//! event is a check of a static level that is off.
//!
//! Events carry origins, codes, timings and counts, never headers or bodies, so the API key
//! cannot appear in them.

#[napi_derive::module_init]
fn init_logging() {
    let Ok(directives) = std::env::var("LLMPOOL_LOG") else {
        return;
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Another subscriber may already be installed by the host process: then it wins.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
