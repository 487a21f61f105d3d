//! A chat stream merged in Rust, for the text fast path (`chatStream(body).text()`) and for
//! `finalCompletion()` in object mode (`mergeChatChunks`): each chunk's first-choice
//! `delta.content` is handed out as text, and every chunk is merged into one `ChatCompletion`:
//! the last non-null `id`, `created`, `model`, `system_fingerprint`, `service_tier` and `usage`;
//! per choice the role, every string field of the deltas concatenated (content, refusal,
//! `reasoning_content`, `reasoning`, …), tool calls merged by index (the name set once, the
//! arguments concatenated), logprobs appended, the finish reason.
//!
//! The common chunk (a role and/or a piece of content, nothing else) is read by a targeted scan
//! that borrows the text from the chunk; any other chunk is judged by `payload::inspect` and
//! parsed whole and merged. The readers are `payload.rs`'s family (`Str`, `NotAnObject`).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Map, Value};

pub use crate::payload::NotAnObject;
use crate::payload::Str;

/// One choice as merged so far.
#[derive(Debug, Default)]
struct Choice {
    role: Option<String>,
    /// Every string field of the deltas, concatenated, in order of first appearance.
    texts: Vec<(Cow<'static, str>, String)>,
    tool_calls: Vec<Option<ToolCall>>,
    logprobs: Option<Vec<Value>>,
    finish_reason: Option<Value>,
}

#[derive(Debug)]
struct ToolCall {
    id: String,
    kind: String,
    name: String,
    arguments: String,
}

impl Choice {
    fn append(&mut self, key: &str, piece: &str) {
        match self.texts.iter_mut().find(|(k, _)| k == key) {
            Some((_, text)) => text.push_str(piece),
            None => {
                // One entry at a time: most choices only ever have `content`.
                self.texts.reserve_exact(1);
                let key = match key {
                    "content" => Cow::Borrowed("content"),
                    other => Cow::Owned(other.to_owned()),
                };
                self.texts.push((key, piece.to_owned()));
            }
        }
    }
}

/// The chunks of one stream, merged. Every open text stream keeps one, so it is kept small:
/// top-level values as text or numbers rather than JSON values (a `Value` is 80 bytes, five of
/// them were most of the accumulator), collections sized to what they hold.
#[derive(Debug, Default)]
pub struct Accumulator {
    /// [`TOP_KEYS`]: the last non-null value of each.
    top: [Option<Top>; 5],
    usage: Option<Box<Value>>,
    choices: Vec<Option<Choice>>,
}

/// A top-level value as kept: the usual text and whole numbers as they are, anything else as
/// its JSON value.
#[derive(Debug)]
enum Top {
    Text(Box<str>),
    Whole(u64),
    Other(Box<Value>),
}

impl Top {
    fn of(value: &Value) -> Top {
        match value {
            Value::String(t) => Top::Text(t.as_str().into()),
            Value::Number(n) => match n.as_u64() {
                Some(whole) => Top::Whole(whole),
                None => Top::Other(Box::new(value.clone())),
            },
            other => Top::Other(Box::new(other.clone())),
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Top::Text(t) => Value::String(t.to_string()),
            Top::Whole(n) => Value::from(*n),
            Top::Other(v) => (**v).clone(),
        }
    }
}

/// What one chunk said, as the stream's judge needs it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Added {
    /// The first choice's `delta.content` (empty when it has none).
    pub text: String,
    /// A top-level `error` that is not null: the chunk is a failure, and was not merged.
    pub error: bool,
    /// Some `choices[].finish_reason` is not null.
    pub finished: bool,
    /// `usage.total_tokens`, when the chunk reports it.
    pub total_tokens: Option<u64>,
    /// `usage.prompt_tokens` and `usage.completion_tokens`, when it reports them.
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
}

const TOP_KEYS: [&str; 5] = [
    "id",
    "created",
    "model",
    "system_fingerprint",
    "service_tier",
];

impl Accumulator {
    /// Checks and merges one chunk (JSON text) in one scan: what `payload::inspect` finds, and
    /// the text its first choice's `delta.content` adds. An error chunk is not merged.
    pub fn judge_add(&mut self, chunk: &str) -> Result<Added, NotAnObject> {
        let mut de = serde_json::Deserializer::from_str(chunk);
        if let Ok(plain) = de.deserialize_map(PlainVisitor) {
            if de.end().is_ok() {
                return Ok(Added {
                    text: self.add_plain(plain),
                    ..Added::default()
                });
            }
        }
        // Any other chunk: judged by the one set of rules (`payload::inspect`), then merged
        // from its whole value (the rare path pays a second scan).
        let judged = crate::payload::inspect(chunk)?;
        if judged.error {
            return Ok(Added {
                error: true,
                ..Added::default()
            });
        }
        let value: Value = serde_json::from_str(chunk).map_err(|_| NotAnObject)?;
        Ok(Added {
            text: self.add_value(&value),
            error: false,
            finished: judged.finished,
            total_tokens: judged.total_tokens,
            input_tokens: judged.input_tokens,
            output_tokens: judged.output_tokens,
        })
    }

    /// Merges one chunk and returns the text it adds (tests and callers that judged it already).
    pub fn add(&mut self, chunk: &str) -> String {
        self.judge_add(chunk).map(|a| a.text).unwrap_or_default()
    }

    fn choice(&mut self, index: usize) -> &mut Choice {
        if self.choices.len() <= index {
            // Exactly: a growing vector would make room for four choices (a kilobyte) when a
            // stream has one.
            self.choices.reserve_exact(index + 1 - self.choices.len());
            self.choices.resize_with(index + 1, || None);
        }
        self.choices[index].get_or_insert_with(Choice::default)
    }

    fn add_plain(&mut self, plain: Plain<'_>) -> String {
        for (slot, value) in self.top.iter_mut().zip(plain.top) {
            match (value, &*slot) {
                (None, _) => {}
                (Some(Scalar::Text(t)), Some(Top::Text(old))) if **old == *t => {}
                (Some(Scalar::Whole(n)), Some(Top::Whole(old))) if *old == n => {}
                (Some(v), _) => *slot = Some(v.into_top()),
            }
        }
        let mut out = String::new();
        for (index, role, content) in plain.first.into_iter().chain(plain.more) {
            let choice = self.choice(index);
            if let Some(role) = role.filter(|r| !r.is_empty()) {
                choice.role = Some(role.into_owned());
            }
            if let Some(content) = content {
                choice.append("content", &content);
                if index == 0 {
                    out.push_str(&content);
                }
            }
        }
        out
    }

    fn add_value(&mut self, chunk: &Value) -> String {
        for (slot, key) in self.top.iter_mut().zip(TOP_KEYS) {
            if let Some(v) = chunk.get(key).filter(|v| !v.is_null()) {
                *slot = Some(Top::of(v));
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| is_truthy(u)) {
            self.usage = Some(Box::new(usage.clone()));
        }
        let mut out = String::new();
        for entry in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = entry.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
            let choice = self.choice(index.min(MAX_CHOICES));
            let delta = entry.get("delta").and_then(Value::as_object);
            for (key, piece) in delta.into_iter().flatten() {
                match (key.as_str(), piece) {
                    ("role", Value::String(r)) if !r.is_empty() => choice.role = Some(r.clone()),
                    ("role", _) => {}
                    (_, Value::String(text)) => {
                        choice.append(key, text);
                        if index == 0 && key == "content" {
                            out.push_str(text);
                        }
                    }
                    _ => {}
                }
            }
            let calls = delta
                .and_then(|d| d.get("tool_calls"))
                .and_then(Value::as_array);
            for call in calls.into_iter().flatten() {
                let at = call
                    .get("index")
                    .and_then(Value::as_u64)
                    .map(|i| i as usize)
                    .unwrap_or(choice.tool_calls.len())
                    .min(MAX_CHOICES);
                if choice.tool_calls.len() <= at {
                    choice.tool_calls.resize_with(at + 1, || None);
                }
                let merged = choice.tool_calls[at].get_or_insert_with(|| ToolCall {
                    id: String::new(),
                    kind: "function".into(),
                    name: String::new(),
                    arguments: String::new(),
                });
                if let Some(id) = call
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                {
                    merged.id = id.to_owned();
                }
                if let Some(kind) = call
                    .get("type")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                {
                    merged.kind = kind.to_owned();
                }
                let function = call.get("function");
                if let Some(name) = function
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                {
                    // Some servers repeat the name in every delta: it is set once.
                    if merged.name.is_empty() {
                        merged.name = name.to_owned();
                    }
                }
                if let Some(arguments) = function
                    .and_then(|f| f.get("arguments"))
                    .and_then(Value::as_str)
                {
                    merged.arguments.push_str(arguments);
                }
            }
            if let Some(content) = entry
                .get("logprobs")
                .and_then(|l| l.get("content"))
                .and_then(Value::as_array)
            {
                choice
                    .logprobs
                    .get_or_insert_with(Vec::new)
                    .extend(content.iter().cloned());
            }
            if let Some(reason) = entry.get("finish_reason").filter(|r| is_truthy(r)) {
                choice.finish_reason = Some(reason.clone());
            }
        }
        out
    }

    /// The merged `ChatCompletion` (JSON text). A choice without a finish reason ended where
    /// the model stopped (the stream was complete): `stop`.
    pub fn completion(&self) -> String {
        let mut out = Map::new();
        out.insert("id".into(), json!(""));
        out.insert("object".into(), json!("chat.completion"));
        out.insert("created".into(), json!(0));
        out.insert("model".into(), json!(""));
        for (key, v) in TOP_KEYS.iter().zip(&self.top) {
            if let Some(v) = v {
                out.insert((*key).to_owned(), v.to_value());
            }
        }
        let choices: Vec<Value> = self
            .choices
            .iter()
            .enumerate()
            .filter_map(|(index, c)| c.as_ref().map(|c| (index, c)))
            .map(|(index, c)| {
                let mut message = Map::new();
                message.insert(
                    "role".into(),
                    json!(c.role.as_deref().unwrap_or("assistant")),
                );
                message.insert("content".into(), Value::Null);
                for (key, text) in &c.texts {
                    message.insert(key.to_string(), json!(text));
                }
                if !c.tool_calls.is_empty() {
                    let calls: Vec<Value> = c
                        .tool_calls
                        .iter()
                        .flatten()
                        .map(|t| {
                            json!({ "id": t.id, "type": t.kind,
                                    "function": { "name": t.name, "arguments": t.arguments } })
                        })
                        .collect();
                    message.insert("tool_calls".into(), Value::Array(calls));
                }
                message.entry("refusal").or_insert(Value::Null);
                json!({
                    "index": index,
                    "message": message,
                    "logprobs": c.logprobs.as_ref().map(|l| json!({ "content": l })),
                    "finish_reason": c.finish_reason.clone().unwrap_or_else(|| json!("stop")),
                })
            })
            .collect();
        out.insert("choices".into(), Value::Array(choices));
        if let Some(usage) = &self.usage {
            out.insert("usage".into(), (**usage).clone());
        }
        Value::Object(out).to_string()
    }
}

/// A server's choice index is trusted only this far (a chunk saying `index: 1e9` must not
/// allocate a billion slots).
const MAX_CHOICES: usize = 1024;

/// JavaScript's truthiness of a JSON value (what `if (chunk.usage)` asks).
fn is_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// A plain chunk: top-level scalars, and per choice a role and/or content (borrowed from the
/// chunk when it has no escapes). The usual one choice is held inline: nothing is allocated.
struct Plain<'a> {
    top: [Option<Scalar<'a>>; 5],
    first: Option<PlainDelta<'a>>,
    more: Vec<PlainDelta<'a>>,
}

/// A top-level value of a plain chunk.
enum Scalar<'a> {
    Text(Cow<'a, str>),
    Whole(u64),
    Other(Value),
}

impl Scalar<'_> {
    fn into_top(self) -> Top {
        match self {
            Scalar::Text(t) => Top::Text(t.into()),
            Scalar::Whole(n) => Top::Whole(n),
            Scalar::Other(v) => Top::Other(Box::new(v)),
        }
    }
}

impl<'de> de::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Owned(s.to_owned())))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Whole(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other(Value::from(n)))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other(Value::from(n)))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other(Value::Bool(b)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other(Value::Null))
            }
            // Objects and arrays at the top keys are rare: the full merge takes them.
        }
        d.deserialize_any(V)
    }
}

/// A plain chunk, or an error that sends the chunk to the full parse (which also tells a
/// chunk that is not JSON at all).
struct PlainVisitor;

/// The sentinel error that means "not plain".
fn not_plain<E: de::Error>() -> E {
    E::custom("not a plain chunk")
}

impl<'de> Visitor<'de> for PlainVisitor {
    type Value = Plain<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a chunk")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut plain = Plain {
            top: Default::default(),
            first: None,
            more: Vec::new(),
        };
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match &*key.0 {
                "choices" => {
                    let choices = map.next_value::<PlainChoices<'de>>()?;
                    (plain.first, plain.more) = (choices.first, choices.more);
                }
                // A usage report or an error takes the full path.
                "usage" | "error" => {
                    if map.next_value::<Option<IgnoredAny>>()?.is_some() {
                        return Err(not_plain());
                    }
                }
                k => match TOP_KEYS.iter().position(|t| *t == k) {
                    Some(at) => {
                        plain.top[at] = match map.next_value::<Scalar<'de>>()? {
                            Scalar::Other(Value::Null) => None,
                            other => Some(other),
                        }
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                },
            }
        }
        Ok(plain)
    }
}

type PlainDelta<'a> = (usize, Option<Cow<'a, str>>, Option<Cow<'a, str>>);

struct PlainChoices<'a> {
    first: Option<PlainDelta<'a>>,
    more: Vec<PlainDelta<'a>>,
}

impl<'de> de::Deserialize<'de> for PlainChoices<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PlainChoices<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("choices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = PlainChoices {
                    first: None,
                    more: Vec::new(),
                };
                while let Some(choice) = seq.next_element::<PlainChoice<'de>>()? {
                    match out.first {
                        None => out.first = Some(choice.0),
                        Some(_) => out.more.push(choice.0),
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

struct PlainChoice<'a>(PlainDelta<'a>);

impl<'de> de::Deserialize<'de> for PlainChoice<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PlainChoice<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a choice")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut index, mut role, mut content) = (0usize, None, None);
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    match &*key.0 {
                        "index" => {
                            let n: u64 = map.next_value()?;
                            index = usize::try_from(n)
                                .ok()
                                .filter(|&i| i <= MAX_CHOICES)
                                .ok_or_else(not_plain)?;
                        }
                        "delta" => (role, content) = map.next_value::<PlainDeltaFields<'de>>()?.0,
                        "finish_reason" | "logprobs" => {
                            if map.next_value::<Option<IgnoredAny>>()?.is_some() {
                                return Err(not_plain());
                            }
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(PlainChoice((index, role, content)))
            }
        }
        d.deserialize_map(V)
    }
}

type RoleAndContent<'a> = (Option<Cow<'a, str>>, Option<Cow<'a, str>>);

struct PlainDeltaFields<'a>(RoleAndContent<'a>);

impl<'de> de::Deserialize<'de> for PlainDeltaFields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PlainDeltaFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a delta")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut role, mut content) = (None, None);
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    match &*key.0 {
                        "role" => role = map.next_value::<Option<Str<'de>>>()?.map(|t| t.0),
                        "content" => content = map.next_value::<Option<Str<'de>>>()?.map(|t| t.0),
                        // Anything else a delta carries (tool calls, reasoning, refusal, even a
                        // null one) takes the full merge.
                        _ => return Err(not_plain()),
                    }
                }
                Ok(PlainDeltaFields((role, content)))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(chunks: &[&str]) -> (String, Value) {
        let mut acc = Accumulator::default();
        let text: String = chunks.iter().map(|c| acc.add(c)).collect();
        (text, serde_json::from_str(&acc.completion()).unwrap())
    }

    #[test]
    fn plain_content_is_handed_out_and_merged() {
        let (text, c) = merged(&[
            r#"{"id":"x","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"id":"x","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
            r#"{"id":"x","choices":[{"index":0,"delta":{"content":"lo \"q\""},"logprobs":null}]}"#,
            r#"{"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
            r#"{"id":"x","choices":[],"usage":{"total_tokens":9}}"#,
        ]);
        assert_eq!(text, "Hello \"q\"");
        assert_eq!(c["id"], "x");
        assert_eq!(c["created"], 5);
        assert_eq!(c["model"], "m");
        assert_eq!(c["object"], "chat.completion");
        assert_eq!(c["choices"][0]["message"]["content"], "Hello \"q\"");
        assert_eq!(c["choices"][0]["message"]["role"], "assistant");
        assert_eq!(c["choices"][0]["message"]["refusal"], Value::Null);
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        assert_eq!(c["usage"]["total_tokens"], 9);
    }

    #[test]
    fn tool_calls_reasoning_and_second_choices_take_the_full_merge() {
        let (text, c) = merged(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","reasoning_content":"think "}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":"more"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"a\""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"get","arguments":":1}"}}]}}]}"#,
            r#"{"choices":[{"index":1,"delta":{"content":"other"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        ]);
        // Only the first choice's content is text; there was none.
        assert_eq!(text, "");
        let m = &c["choices"][0]["message"];
        assert_eq!(m["reasoning_content"], "think more");
        assert_eq!(m["content"], Value::Null);
        assert_eq!(m["tool_calls"][0]["id"], "call_1");
        assert_eq!(m["tool_calls"][0]["function"]["name"], "get");
        assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(c["choices"][1]["message"]["content"], "other");
        assert_eq!(c["choices"][1]["finish_reason"], "stop");
    }

    #[test]
    fn absurd_indexes_do_not_allocate() {
        let (_, c) = merged(&[
            r#"{"choices":[{"index":1000000000,"delta":{"content":"x"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":99999999999,"function":{"arguments":"y"}}]}}]}"#,
        ]);
        assert!(c["choices"].as_array().unwrap().len() <= 2);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn piece() -> impl Strategy<Value = String> {
            "\\PC{0,6}"
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// Whatever mix of plain and other chunks, the text handed out is the first
            /// choice's content, in order, and the merged content equals it.
            #[test]
            fn text_is_the_first_choice_content(
                parts in prop::collection::vec((piece(), 0u8..4), 0..12)
            ) {
                let mut acc = Accumulator::default();
                let mut expected = String::new();
                let mut text = String::new();
                for (p, kind) in &parts {
                    let chunk = match kind {
                        0 => json!({ "choices": [{ "index": 0, "delta": { "content": p } }] }),
                        1 => json!({ "choices": [{ "index": 0, "delta": { "content": p, "reasoning": "r" } }] }),
                        2 => json!({ "choices": [{ "index": 1, "delta": { "content": p } }] }),
                        _ => json!({ "id": p, "choices": [{ "index": 0, "delta": { "content": p }, "finish_reason": null }] }),
                    };
                    if *kind != 2 {
                        expected.push_str(p);
                    }
                    text.push_str(&acc.add(&chunk.to_string()));
                }
                prop_assert_eq!(&text, &expected);
                let c: Value = serde_json::from_str(&acc.completion()).unwrap();
                if !expected.is_empty() {
                    prop_assert_eq!(c["choices"][0]["message"]["content"].as_str(), Some(expected.as_str()));
                }
            }

            /// The one scan judges a chunk as `payload::inspect` does (an object or not, an
            /// error, a finish reason, the usage), whatever shape it has.
            #[test]
            fn judges_as_inspect_does(
                keys in prop::collection::vec(prop_oneof![
                    Just("choices"), Just("usage"), Just("error"), Just("id"), Just("model"), Just("x")
                ], 0..5),
                reasons in prop::collection::vec(prop_oneof![Just(Value::Null), Just(json!("stop")), Just(json!(3))], 0..3),
                content in piece(),
                extra in prop_oneof![Just(None), Just(Some(json!({"reasoning": "r"}))), Just(Some(json!({"content": null})))],
                tokens in prop_oneof![Just(Value::Null), Just(json!(7)), Just(json!({"total_tokens": 9})), Just(json!("junk"))],
            ) {
                let mut chunk = Map::new();
                for key in keys {
                    let value = match key {
                        "choices" => Value::Array(reasons.iter().enumerate().map(|(i, r)| {
                            let mut delta = json!({ "content": content });
                            if let Some(Value::Object(more)) = &extra {
                                for (k, v) in more { delta[k] = v.clone(); }
                            }
                            json!({ "index": i, "delta": delta, "finish_reason": r })
                        }).collect()),
                        "usage" => tokens.clone(),
                        "error" => json!({ "message": "no" }),
                        "id" => json!(content),
                        "model" => json!(7),
                        _ => json!([1, {"a": null}]),
                    };
                    chunk.insert(key.to_owned(), value);
                }
                let text = Value::Object(chunk).to_string();
                let inspected = crate::payload::inspect(&text).unwrap();
                let judged = Accumulator::default().judge_add(&text).unwrap();
                prop_assert_eq!(judged.error, inspected.error);
                if !judged.error {
                    prop_assert_eq!(judged.finished, inspected.finished);
                    prop_assert_eq!(judged.total_tokens, inspected.total_tokens);
                }
                prop_assert_eq!(Accumulator::default().judge_add("[1]"), Err(NotAnObject));
                prop_assert_eq!(Accumulator::default().judge_add("{} x"), Err(NotAnObject));
            }

            /// Junk never panics.
            #[test]
            fn junk_never_panics(junk in "\\PC{0,80}") {
                let mut acc = Accumulator::default();
                let _ = acc.add(&junk);
                let _ = acc.completion();
            }
        }
    }
}
