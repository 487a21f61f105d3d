//! The napi layer: `#[napi]` classes over the core, option conversion, and the plain-data shape
//! of errors that `errors.js` turns into JS `Error`s with a `code`.
//!
//! It converts and calls the core, which decides every outcome (the merge of an object-mode
//! stream's chunks included: [`client::merge_chat_chunks`]), and makes sure no panic crosses
//! into Node (sync entry points go through [`guard`], futures through `catch_unwind`).

mod client;
mod logging;
mod mailbox;
mod observe;
mod outcome;
mod runtime;

use std::panic::{catch_unwind, AssertUnwindSafe};

use napi::{Error, Result, Status};

/// Runs a sync entry point, turning a panic into a JS exception instead of an abort.
fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(_) => Err(Error::new(
            Status::GenericFailure,
            "llmpool internal error (a bug: please report it)",
        )),
    }
}

/// A rule broken by the caller; `index.js` rethrows it as a `TypeError`.
fn invalid_arg(message: impl Into<String>) -> Error {
    Error::new(Status::InvalidArg, message.into())
}
