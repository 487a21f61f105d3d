//! The tokio runtime the addon runs on, set up when Node loads the module.
//!
//! napi's default is a multi-thread runtime with one worker per core. Measured with `bench/`, one
//! worker thread does the same work with fewer cross-thread wake-ups (the JS thread already takes
//! a core), so that is the default; `LLMPOOL_WORKER_THREADS` overrides it.

const DEFAULT_WORKER_THREADS: usize = 1;

#[napi_derive::module_init]
fn init_runtime() {
    let workers = std::env::var("LLMPOOL_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(DEFAULT_WORKER_THREADS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("llmpool")
        .on_thread_park(super::mailbox::wake_deferred)
        .enable_all()
        .build();
    // If the runtime cannot be built here, napi builds its default one on first use.
    if let Ok(runtime) = runtime {
        napi::bindgen_prelude::create_custom_tokio_runtime(runtime);
    }
}
