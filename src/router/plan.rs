//! Where one call goes: the router's answer to the attempt loop's questions (see
//! [`crate::attempt::Route`]). The upstreams that serve the asked model come first, one at a
//! time by the routing strategy (healthy ones first); then the models of `fallbacks`; a prompt
//! too long for the model moves the call to `contextWindowFallbacks` instead.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::attempt::{Route, Stop, Wider};
use crate::conn::Connection;
use crate::error::Error;
use crate::pool::Connect;

use super::{is_context_length_exceeded, lookup, no_upstream, Router};

/// One call's plan: the models still to try and, of the current model, the upstreams left.
pub(crate) struct Plan<'r, K: Connect> {
    router: &'r Router<K>,
    /// The body as the caller sent it, and the model it asked for.
    body: Bytes,
    asked: Option<String>,
    model: Option<String>,
    models: VecDeque<Option<String>>,
    left: Vec<usize>,
    /// Names of the upstreams the call went to (with the model, when not the asked one).
    tried: Vec<String>,
    /// Whether the final error names the upstreams tried (a router that routes).
    names: bool,
    /// A plan of one stop (one `baseUrl`, or a `fetch`): that upstream, until taken. The
    /// common case allocates nothing.
    single: Option<usize>,
    context_moved: bool,
}

impl<'r, K: Connect> Plan<'r, K>
where
    K::Conn: Connection,
{
    /// The whole plan: every upstream of the model, then its fallbacks.
    pub(crate) fn new(router: &'r Router<K>, body: &Bytes) -> Self {
        if !router.routes {
            // One upstream that lists no models: it serves whatever the body asks.
            return Plan::only(router, 0, body.clone());
        }
        let asked = crate::payload::model_of(body);
        let mut models = VecDeque::from([asked.clone()]);
        if let Some(list) = asked.as_deref().and_then(|m| lookup(&router.fallbacks, m)) {
            models.extend(list.iter().cloned().map(Some));
        }
        Plan {
            router,
            body: body.clone(),
            asked,
            model: None,
            models,
            left: Vec::new(),
            tried: Vec::new(),
            names: true,
            single: None,
            context_moved: false,
        }
    }

    /// A plan of one stop: upstream `index`, `body` as it is (a `fetch`: the SDK on top
    /// retries, and each of its retries is routed again).
    pub(crate) fn only(router: &'r Router<K>, index: usize, body: Bytes) -> Self {
        Plan {
            router,
            body,
            asked: None,
            model: None,
            models: VecDeque::new(),
            left: Vec::new(),
            tried: Vec::new(),
            names: false,
            single: Some(index),
            context_moved: false,
        }
    }

    /// The next upstream: of the current model while any is left, else of the next model that
    /// has one.
    fn next_stop(&mut self) -> Option<Stop<'r, K>> {
        if let Some(index) = self.single.take() {
            return Some(Stop {
                index,
                client: &self.router.upstreams[index].client,
                body: self.body.clone(),
                fallback: false,
            });
        }
        while self.left.is_empty() {
            self.model = self.models.pop_front()?;
            let model = self.model.as_deref();
            let router = self.router;
            self.left = (0..router.upstreams.len())
                .filter(|&i| router.upstreams[i].serves(model).is_some())
                .collect();
        }
        let index = match self.left[..] {
            [only] => only,
            _ => self.router.choose(&self.left),
        };
        self.left.retain(|&i| i != index);
        let up = &self.router.upstreams[index];
        let own = up.serves(self.model.as_deref()).unwrap_or_default();
        let body = if self.model.is_some() && Some(own) != self.asked.as_deref() {
            crate::payload::with_model(&self.body, own).unwrap_or_else(|| self.body.clone())
        } else {
            self.body.clone()
        };
        if self.names {
            self.tried.push(match &self.model {
                Some(m) if Some(m) != self.asked.as_ref() => format!("{} ({m})", up.name),
                _ => up.name.clone(),
            });
        }
        Some(Stop {
            index,
            client: &up.client,
            body,
            fallback: self.model != self.asked,
        })
    }
}

impl<'r, K: Connect> Route<'r, K> for Plan<'r, K>
where
    K::Conn: Connection,
{
    fn first(&mut self) -> Result<Stop<'r, K>, Error> {
        self.next_stop()
            .ok_or_else(|| no_upstream(self.asked.as_deref()))
    }

    fn failed(&mut self, at: &Stop<'r, K>, error: &Error) {
        // The server said when to come back: with others to go to, the upstream cools down
        // that long (alone, the loop waits the same time before trying it again).
        if self.router.upstreams.len() > 1 {
            if let (Some(429), Some(wait)) =
                (error.http_failure().map(|h| h.status), error.retry_after())
            {
                tracing::info!(
                    origin = at.client.config().endpoint.origin.as_str(),
                    wait_ms = wait.as_millis() as u64,
                    "upstream answered 429; cooling it down"
                );
                at.client.pause(wait);
            }
        }
    }

    fn wider(&mut self, error: &Error) -> Wider<'r, K> {
        if self.context_moved || !is_context_length_exceeded(error) {
            return Wider::NotApplicable;
        }
        let Some(list) = self
            .model
            .as_deref()
            .and_then(|m| lookup(&self.router.context_window_fallbacks, m))
        else {
            return Wider::NotApplicable;
        };
        // The prompt does not fit this model anywhere: its other upstreams and fallbacks would
        // refuse it too.
        self.context_moved = true;
        self.models = list.iter().cloned().map(Some).collect();
        self.left.clear();
        match self.next_stop() {
            Some(stop) => Wider::To(stop),
            None => Wider::Nowhere,
        }
    }

    fn has_another(&self) -> bool {
        !self.left.is_empty() || !self.models.is_empty()
    }

    fn another(&mut self) -> Option<Stop<'r, K>> {
        self.next_stop()
    }

    fn tried(&self) -> Vec<String> {
        self.tried.clone()
    }
}
