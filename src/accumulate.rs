//! A chat stream merged in Rust, for the text fast path (`chatStream(body).text()`): each chunk's
//! first-choice `delta.content` is handed out as text, and every chunk is merged into one
//! `ChatCompletion` by the rules `finalCompletion()` follows in JS (`index.js`, `accumulate`):
//! the last non-null `id`, `created`, `model`, `system_fingerprint`, `service_tier` and `usage`;
//! per choice the role, every string field of the deltas concatenated (content, refusal,
//! `reasoning_content`, `reasoning`, …), tool calls merged by index (the name set once, the
//! arguments concatenated), logprobs appended, the finish reason.
//!
//! The common chunk (a role and/or a piece of content, nothing else) is read by a targeted scan
//! that borrows the text from the chunk; any other chunk is parsed whole and merged.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Map, Value};

/// One choice as merged so far.
#[derive(Debug, Default)]
struct Choice {
    role: Option<String>,
    /// Every string field of the deltas, concatenated, in order of first appearance.
    texts: Vec<(String, String)>,
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
            None => self.texts.push((key.to_owned(), piece.to_owned())),
        }
    }
}

/// The chunks of one stream, merged.
#[derive(Debug, Default)]
pub struct Accumulator {
    /// `id`, `created`, `model`, `system_fingerprint`, `service_tier`: the last non-null value.
    top: Map<String, Value>,
    usage: Option<Value>,
    choices: Vec<Option<Choice>>,
}

const TOP_KEYS: [&str; 5] = [
    "id",
    "created",
    "model",
    "system_fingerprint",
    "service_tier",
];

impl Accumulator {
    /// Merges one chunk (JSON text, already checked to be an object) and returns the text its
    /// first choice's `delta.content` adds.
    pub fn add(&mut self, chunk: &str) -> String {
        let mut de = serde_json::Deserializer::from_str(chunk);
        if let Ok(Some(plain)) = de.deserialize_map(PlainVisitor) {
            return self.add_plain(plain);
        }
        match serde_json::from_str::<Value>(chunk) {
            Ok(value) => self.add_value(&value),
            Err(_) => String::new(),
        }
    }

    fn choice(&mut self, index: usize) -> &mut Choice {
        if self.choices.len() <= index {
            self.choices.resize_with(index + 1, || None);
        }
        self.choices[index].get_or_insert_with(Choice::default)
    }

    fn add_plain(&mut self, plain: Plain<'_>) -> String {
        for (key, value) in plain.top {
            if self.top.get(key) != Some(&value) {
                self.top.insert(key.to_owned(), value);
            }
        }
        let mut out = String::new();
        for (index, role, content) in plain.deltas {
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
        for key in TOP_KEYS {
            if let Some(v) = chunk.get(key).filter(|v| !v.is_null()) {
                self.top.insert(key.to_owned(), v.clone());
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| is_truthy(u)) {
            self.usage = Some(usage.clone());
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
        for (k, v) in &self.top {
            out.insert(k.clone(), v.clone());
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
                    message.insert(key.clone(), json!(text));
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
            out.insert("usage".into(), usage.clone());
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
/// chunk when it has no escapes).
struct Plain<'a> {
    top: Vec<(&'static str, Value)>,
    deltas: Vec<PlainDelta<'a>>,
}

/// A string, borrowed when it can be.
struct Text<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// `Some(plain)` for a plain chunk; `None` sends it to the full merge. Not an error either way:
/// an error from here also falls back to the full parse.
struct PlainVisitor;

/// The sentinel error that means "not plain".
fn not_plain<E: de::Error>() -> E {
    E::custom("not a plain chunk")
}

impl<'de> Visitor<'de> for PlainVisitor {
    type Value = Option<Plain<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a chunk")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut plain = Plain {
            top: Vec::new(),
            deltas: Vec::new(),
        };
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match &*key.0 {
                "choices" => plain.deltas = map.next_value::<PlainChoices<'de>>()?.0,
                "usage" => {
                    if map.next_value::<Option<IgnoredAny>>()?.is_some() {
                        return Err(not_plain());
                    }
                }
                k => match TOP_KEYS.iter().find(|t| **t == k) {
                    Some(top) => {
                        let value: Value = map.next_value()?;
                        if !value.is_null() {
                            plain.top.push((top, value));
                        }
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                },
            }
        }
        Ok(Some(plain))
    }
}

type PlainDelta<'a> = (usize, Option<Cow<'a, str>>, Option<Cow<'a, str>>);

struct PlainChoices<'a>(Vec<PlainDelta<'a>>);

impl<'de> de::Deserialize<'de> for PlainChoices<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PlainChoices<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("choices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(choice) = seq.next_element::<PlainChoice<'de>>()? {
                    out.push(choice.0);
                }
                Ok(PlainChoices(out))
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
                while let Some(key) = map.next_key::<Text<'de>>()? {
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
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match &*key.0 {
                        "role" => role = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0),
                        "content" => content = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0),
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
