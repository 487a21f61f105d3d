//! One attempt of a non-stream JSON call (`chat()`, and `request()` for any JSON endpoint): an
//! exchange, the body read within `maxResponseSize`, and the outcome decided here: a JSON object
//! without a top-level `error`, or one typed error. The attempt loop around it is
//! [`crate::attempt`]'s.

use bytes::Bytes;
use hyper::{Method, Uri};

use crate::client::Client;
use crate::config::CallOptions;
use crate::conn::Connection;
use crate::error::{Error, Kind};
use crate::exchange::{Accept, Outgoing};
use crate::payload::{inspect, provider_message};
use crate::pool::Connect;

/// A JSON call's answer: its text, and its head when the call asked for it (`withResponse`).
#[derive(Debug)]
pub struct Answer {
    pub text: String,
    pub head: Option<Box<AnswerHead>>,
    /// `usage.total_tokens`, read in the same scan that judged the answer.
    pub used_tokens: Option<u64>,
    /// Attempts the call made, on every upstream (set by the router).
    pub attempts: u32,
    /// With a response cache: whether the answer came from it.
    pub cache: Option<CacheOutcome>,
}

/// What the response cache did for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
}

impl CacheOutcome {
    pub fn name(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
        }
    }
}

impl Answer {
    /// The answer a cache entry holds; `None` for a stream's entry (never looked up as one).
    /// Its head (`withResponse`) is a 200 from the upstream that gave it, with no headers: the
    /// original ones described another request (its id, the rate limits left then).
    pub fn cached(entry: &crate::cache::Entry, with_response: bool) -> Option<Answer> {
        let crate::cache::Entry::Answer { text, upstream } = entry else {
            return None;
        };
        Some(Answer {
            text: text.clone(),
            head: with_response.then(|| {
                Box::new(AnswerHead {
                    status: 200,
                    headers: Vec::new(),
                    upstream: upstream.clone(),
                })
            }),
            used_tokens: None,
            attempts: 0,
            cache: Some(CacheOutcome::Hit),
        })
    }
}

/// The response behind an answer: status and headers, and which upstream answered.
#[derive(Debug, Clone)]
pub struct AnswerHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub upstream: Option<String>,
}

impl<K: Connect> Client<K>
where
    K::Conn: Connection,
{
    /// One attempt of a JSON call: POSTs `body` to `uri` and judges the answer.
    pub(crate) async fn json_attempt(
        &self,
        uri: &Uri,
        body: Bytes,
        call: &CallOptions,
    ) -> Result<Answer, Error> {
        let outgoing = Outgoing {
            method: Method::POST,
            uri,
            body,
            accept: Accept::Json,
        };
        let exchanged = self.observed_exchange(outgoing, call).await?;
        let read = self
            .read_body(exchanged.body, self.config.max_response_size)
            .await?;
        if !read.complete {
            // Dropping the lease closes the connection with the rest of the body unread.
            drop(exchanged.lease);
            return Err(Error::new(
                Kind::ResponseTooLarge,
                format!(
                    "{} sent a response larger than maxResponseSize ({} bytes)",
                    self.origin(),
                    self.config.max_response_size.unwrap_or(usize::MAX)
                ),
            ));
        }
        exchanged.lease.release(exchanged.lifetime);
        let (text, used_tokens) = self.completion_outcome(read.bytes)?;
        let head = call.with_response.then(|| {
            Box::new(AnswerHead {
                status: exchanged.head.status.as_u16(),
                headers: crate::exchange::header_pairs(&exchanged.head.headers),
                upstream: self.config.name.clone(),
            })
        });
        Ok(Answer {
            text,
            head,
            used_tokens,
            attempts: 1,
            cache: None,
        })
    }

    /// A 2xx body is a completion only if it is a UTF-8 JSON object without a top-level `error`.
    fn completion_outcome(&self, body: Bytes) -> Result<(String, Option<u64>), Error> {
        let text = String::from_utf8(Vec::from(body)).map_err(|_| {
            Error::new(
                Kind::InvalidResponse,
                format!("{} sent a body that is not UTF-8", self.origin()),
            )
        })?;
        match inspect(&text) {
            Err(_) => Err(Error::new(
                Kind::InvalidResponse,
                format!("{} sent a body that is not a JSON object", self.origin()),
            )),
            Ok(found) if found.error => {
                let message = provider_message(&text).unwrap_or_else(|| "no message".into());
                Err(Error::provider(
                    Kind::ProviderError,
                    format!("{} answered 200 with an error: {message}", self.origin()),
                    text,
                ))
            }
            Ok(found) => {
                self.metrics
                    .tokens_used(found.input_tokens, found.output_tokens);
                Ok((text, found.total_tokens))
            }
        }
    }
}
