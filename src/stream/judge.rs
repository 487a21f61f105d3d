//! What each decoded event means for the stream (`[DONE]`, an error, a chunk that is not a JSON
//! object, a finish reason) and what the body's end means.

use super::*;

/// What the events so far say about the stream's end.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Chat: some chunk had a `finish_reason`.
    pub(super) finished: bool,
    /// Events: `response.*` events were seen and none ended the stream.
    pub(super) open_response: bool,
    /// Chat: the usage chunk's `usage.total_tokens` (`stream_options.include_usage`).
    pub(super) total_tokens: Option<u64>,
    /// Chat: the usage chunk's input and output counts, until the metrics took them.
    pub(super) input_tokens: Option<u64>,
    pub(super) output_tokens: Option<u64>,
    /// Text mode: chunks are judged and merged here in one scan, and only their text goes on.
    pub(super) merge: Option<Arc<Mutex<crate::accumulate::Accumulator>>>,
}

impl Progress {
    /// What one chunk said: a finish reason, and the usage it reported (kept until taken).
    fn judged(&mut self, found: crate::payload::Inspection) {
        self.finished |= found.finished;
        self.total_tokens = found.total_tokens.or(self.total_tokens);
        self.input_tokens = found.input_tokens.or(self.input_tokens);
        self.output_tokens = found.output_tokens.or(self.output_tokens);
    }

    /// Whether a body that ends now ended a complete stream.
    pub(super) fn complete(&self, dialect: Dialect) -> bool {
        match dialect {
            Dialect::Chat => self.finished,
            Dialect::Events => !self.open_response,
        }
    }
}

/// What one decoded event means.
pub(super) enum Verdict {
    Skip,
    Deliver(String),
    /// Deliver it, and the stream is complete.
    Last(String),
    Done,
    Fail(Error),
}

/// Decides each decoded event in order: payloads to deliver go to `payloads`; the first event
/// that ends the stream stops the judging, and what follows it is dropped.
pub(super) fn judge_events<K: Connect>(
    client: &Client<K>,
    dialect: Dialect,
    events: &mut Vec<crate::sse::SseEvent>,
    payloads: &mut Vec<String>,
    progress: &mut Progress,
) -> Result<Batch, Error> {
    for event in events.drain(..) {
        match judge(client, dialect, event, progress) {
            Verdict::Skip => {}
            Verdict::Deliver(payload) => payloads.push(payload),
            Verdict::Last(payload) => {
                payloads.push(payload);
                return Ok(Batch::Done);
            }
            Verdict::Done => return Ok(Batch::Done),
            Verdict::Fail(e) => return Err(e),
        }
    }
    Ok(Batch::More)
}

/// One event under the dialect's rules (see [`Dialect`]).
pub(super) fn judge<K: Connect>(
    client: &Client<K>,
    dialect: Dialect,
    event: crate::sse::SseEvent,
    progress: &mut Progress,
) -> Verdict {
    let name = event.event.as_deref().unwrap_or("message");
    let data = event.data;
    let failed_event = match dialect {
        Dialect::Chat => name == "error",
        Dialect::Events => name == "error" || name == "response.failed",
    };
    if failed_event {
        return Verdict::Fail(stream_error(client, data));
    }
    let trimmed = data.trim();
    if trimmed == "[DONE]" {
        return Verdict::Done;
    }
    if trimmed.is_empty() {
        return Verdict::Skip;
    }
    let bad = |what: &str| {
        Verdict::Fail(Error::new(
            Kind::InvalidResponse,
            format!("stream from {} sent {what}", client.origin()),
        ))
    };
    if let (Dialect::Chat, Some(merge)) = (dialect, &progress.merge) {
        let judged = merge
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .judge_add(&data);
        return match judged {
            Err(_) => bad("a chunk that is not a JSON object"),
            Ok(found) if found.error => Verdict::Fail(stream_error(client, data)),
            Ok(found) => {
                progress.judged(crate::payload::Inspection {
                    error: false,
                    finished: found.finished,
                    total_tokens: found.total_tokens,
                    input_tokens: found.input_tokens,
                    output_tokens: found.output_tokens,
                });
                Verdict::Deliver(found.text)
            }
        };
    }
    match dialect {
        Dialect::Chat => match inspect(&data) {
            Err(_) => bad("a chunk that is not a JSON object"),
            Ok(found) if found.error => Verdict::Fail(stream_error(client, data)),
            Ok(found) => {
                progress.judged(found);
                Verdict::Deliver(data)
            }
        },
        Dialect::Events => {
            let valid = if trimmed.starts_with('{') {
                match inspect(&data) {
                    Ok(found) if found.error => return Verdict::Fail(stream_error(client, data)),
                    found => found.is_ok(),
                }
            } else {
                crate::payload::is_json(&data)
            };
            if !valid {
                return bad("an event whose data is not JSON");
            }
            // U+001E never reaches a consumer (see `Delivery::Events`).
            let payload = format!("{}\n{data}", name.replace('\u{1e}', "\u{fffd}"));
            if matches!(name, "response.completed" | "response.incomplete") {
                progress.open_response = false;
                return Verdict::Last(payload);
            }
            progress.open_response |= name.starts_with("response.");
            Verdict::Deliver(payload)
        }
    }
}

/// An error the provider reported inside the stream; its payload goes with it (redacted on the
/// way out, at `Router::call`).
pub(super) fn stream_error<K: Connect>(client: &Client<K>, payload: String) -> Error {
    let message = provider_message(&payload).unwrap_or_else(|| "no message".to_owned());
    Error::provider(
        Kind::StreamError,
        format!("{} sent an error in the stream: {message}", client.origin()),
        payload,
    )
}
