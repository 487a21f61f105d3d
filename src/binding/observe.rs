//! The core's request watcher for JS: each event of a watched call's HTTP requests is posted to
//! the call's observer id in the mailbox, where `lib/undici-channels.js` publishes it on undici's
//! diagnostics channels. `create` waits for JS to answer with the headers to add
//! (`NativeClient::observed`); if JS never answers, the request goes without them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::oneshot;

use crate::observe::{RequestObserver, RequestSeen};

use super::mailbox::{Mailbox, Post};
use super::outcome::ObserveEvent;

/// The longest a request waits for JS to say which headers to add.
const REPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Replies awaited from JS, by reply id.
#[derive(Default)]
pub struct Replies {
    next: u32,
    waiting: HashMap<u32, oneshot::Sender<Vec<(String, String)>>>,
}

impl Replies {
    /// JS answered `reply` with `headers`, flattened `[name, value, …]`.
    pub fn answer(this: &Mutex<Replies>, reply: u32, headers: Vec<String>) {
        let sender = this
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .remove(&reply);
        if let Some(sender) = sender {
            let pairs = headers
                .chunks_exact(2)
                .map(|kv| (kv[0].clone(), kv[1].clone()))
                .collect();
            let _ = sender.send(pairs);
        }
    }
}

pub struct JsObserver {
    pub mailbox: Arc<Mailbox>,
    pub id: u32,
    pub replies: Arc<Mutex<Replies>>,
}

fn pairs(headers: Vec<(String, String)>) -> Vec<Vec<String>> {
    headers.into_iter().map(|(k, v)| vec![k, v]).collect()
}

impl RequestObserver for JsObserver {
    fn create(&self, request: RequestSeen) -> BoxFuture<'static, Vec<(String, String)>> {
        let (sender, receiver) = oneshot::channel();
        let reply = {
            let mut replies = self.replies.lock().unwrap_or_else(|e| e.into_inner());
            replies.next = replies.next.wrapping_add(1);
            let reply = replies.next;
            replies.waiting.insert(reply, sender);
            reply
        };
        self.mailbox.post(
            self.id,
            Post::Observe(Box::new(ObserveEvent {
                event: "create".into(),
                reply: Some(reply),
                origin: Some(request.origin),
                method: Some(request.method),
                path: Some(request.path),
                headers: Some(pairs(request.headers)),
                status: None,
                code: None,
            })),
        );
        let replies = self.replies.clone();
        Box::pin(async move {
            // Bounded: a JS thread that never answers (blocked, or the call gone) costs the
            // request its added headers, never its progress.
            let added = tokio::time::timeout(REPLY_WAIT, receiver)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            // Answered or not, nothing waits under this id any more.
            replies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .waiting
                .remove(&reply);
            added
        })
    }

    fn headers(&self, status: u16, headers: Vec<(String, String)>) {
        self.post(
            "headers",
            Some(u32::from(status)),
            Some(pairs(headers)),
            None,
        );
    }

    fn done(&self) {
        self.post("done", None, None, None);
    }

    fn error(&self, code: &'static str, status: Option<u16>) {
        self.post("error", status.map(u32::from), None, Some(code.to_owned()));
    }
}

impl JsObserver {
    fn post(
        &self,
        event: &str,
        status: Option<u32>,
        headers: Option<Vec<Vec<String>>>,
        code: Option<String>,
    ) {
        self.mailbox.post(
            self.id,
            Post::Observe(Box::new(ObserveEvent {
                event: event.into(),
                reply: None,
                origin: None,
                method: None,
                path: None,
                headers,
                status,
                code,
            })),
        );
    }
}
