//! A targeted look at one JSON payload from the provider (a completion body or a stream chunk):
//! is it a JSON object, does it carry a top-level `error`, and did any `choices[].finish_reason`
//! say the answer is finished. One validating pass over the text; nothing is built for the parts
//! skipped (serde's `IgnoredAny`), so the cost is a scan, not a parse into values. In object mode
//! JS then parses each payload it yields into an object: a shape for the user, no decision.
//!
//! The one family of hand-written serde readers of provider JSON lives here: keys and strings
//! are read as [`Str`] (borrowed from the text when it has no escapes), a value of the wrong
//! shape is skipped ([`Picked`]), and the judging rules (error, finished, usage) are written
//! once, in [`inspect`]. `accumulate.rs` builds its merge on these and asks `inspect` to judge.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// What the payload says about the call's outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inspection {
    /// A top-level `error` member that is not `null`.
    pub error: bool,
    /// Some `choices[].finish_reason` is not `null`.
    pub finished: bool,
    /// `usage.total_tokens`, when the payload reports it (what a call used, for the limiter).
    pub total_tokens: Option<u64>,
    /// `usage.prompt_tokens` (or the Responses API's `input_tokens`), for the token histogram.
    pub input_tokens: Option<u64>,
    /// `usage.completion_tokens` (or `output_tokens`).
    pub output_tokens: Option<u64>,
}

/// A JSON string, borrowed from the text when it has no escapes (keys and values alike).
pub(crate) struct Str<'a>(pub(crate) Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The payload is not JSON, or not a JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAnObject;

pub fn inspect(text: &str) -> Result<Inspection, NotAnObject> {
    let mut de = serde_json::Deserializer::from_str(text);
    let inspection = de.deserialize_map(TopLevel).map_err(|_| NotAnObject)?;
    de.end().map_err(|_| NotAnObject)?;
    Ok(inspection)
}

/// Whether `text` is one JSON value (any kind), checked without building it.
pub fn is_json(text: &str) -> bool {
    serde_json::from_str::<IgnoredAny>(text).is_ok()
}

/// The provider's own words from an OpenAI-style error: `{"error":{"message":…}}`,
/// `{"error":"…"}` or `{"message":…}`, at most 500 characters.
pub fn provider_message(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    // `{"error": …}`, the Responses API's `{"response": {"error": …}}`, or the value itself.
    let error = match (value.get("error"), value.pointer("/response/error")) {
        (Some(e), _) if !e.is_null() => e,
        (_, Some(e)) if !e.is_null() => e,
        _ => &value,
    };
    let message = match error {
        serde_json::Value::String(s) => s.as_str(),
        other => other.get("message")?.as_str()?,
    };
    let message = message.trim();
    (!message.is_empty()).then(|| message.chars().take(500).collect())
}

struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Inspection;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Inspection, A::Error> {
        let mut out = Inspection::default();
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match &*key.0 {
                "error" => out.error = map.next_value::<Option<IgnoredAny>>()?.is_some(),
                "choices" => out.finished |= map.next_value::<Finished<Choices>>()?.0,
                "usage" => {
                    let usage = map.next_value::<UsageCounts>()?;
                    (out.total_tokens, out.input_tokens, out.output_tokens) =
                        (usage.total, usage.input, usage.output);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// Whether a value says "finished"; any JSON is accepted, what the rules do not cover is `false`.
struct Finished<R>(bool, std::marker::PhantomData<R>);

/// How the elements or members of a value are read.
trait Rule {
    /// `choices` is an array of choices; a choice is an object with `finish_reason`.
    fn element_finished<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<Option<bool>, A::Error>;
    fn map_finished<'de, A: MapAccess<'de>>(map: A) -> Result<bool, A::Error>;
}

struct Choices;
struct Choice;

impl Rule for Choices {
    fn element_finished<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<Option<bool>, A::Error> {
        Ok(seq.next_element::<Finished<Choice>>()?.map(|f| f.0))
    }
    fn map_finished<'de, A: MapAccess<'de>>(map: A) -> Result<bool, A::Error> {
        skip_map(map)
    }
}

impl Rule for Choice {
    fn element_finished<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<Option<bool>, A::Error> {
        Ok(seq.next_element::<IgnoredAny>()?.map(|_| false))
    }
    fn map_finished<'de, A: MapAccess<'de>>(mut map: A) -> Result<bool, A::Error> {
        let mut finished = false;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            if key.0 == "finish_reason" {
                finished |= map.next_value::<Option<IgnoredAny>>()?.is_some()
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(finished)
    }
}

/// What routing and the limiter need of a request body: its top-level `model`, and the most
/// tokens it asks for (`max_tokens`, `max_completion_tokens` or `max_output_tokens`). One scan,
/// nothing built for the rest (the messages); `None`s for a body that is not a JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    pub model: Option<String>,
    pub max_tokens: Option<u64>,
}

pub fn request_facts(body: &[u8]) -> RequestFacts {
    let mut de = serde_json::Deserializer::from_slice(body);
    de.deserialize_map(RequestVisitor).unwrap_or_default()
}

/// The top-level `model` of a request body, when it is a string.
pub fn model_of(body: &[u8]) -> Option<String> {
    request_facts(body).model
}

/// The body with its top-level `model` set to `model` (an upstream's own name for it, or a
/// fallback); `None` when the body is not a JSON object.
pub fn with_model(body: &[u8], model: &str) -> Option<bytes::Bytes> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value
        .as_object_mut()?
        .insert("model".into(), serde_json::Value::String(model.to_owned()));
    serde_json::to_vec(&value).ok().map(bytes::Bytes::from)
}

struct RequestVisitor;

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = RequestFacts;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestFacts, A::Error> {
        let mut out = RequestFacts::default();
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match &*key.0 {
                "model" => out.model = map.next_value::<Picked<Owned>>()?.0,
                "max_tokens" | "max_completion_tokens" | "max_output_tokens" => {
                    let asked = map.next_value::<Picked<Whole>>()?.0;
                    out.max_tokens = out.max_tokens.or(asked);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// A value read by rule `R` when it has the expected shape, `None` (skipped) otherwise.
struct Picked<R: Pick>(Option<R::Out>);

trait Pick {
    type Out;
    fn from_u64(_: u64) -> Option<Self::Out> {
        None
    }
    fn from_str(_: &str) -> Option<Self::Out> {
        None
    }
}

/// A non-negative whole number.
struct Whole;
impl Pick for Whole {
    type Out = u64;
    fn from_u64(n: u64) -> Option<u64> {
        Some(n)
    }
}

/// A string, owned.
struct Owned;
impl Pick for Owned {
    type Out = String;
    fn from_str(s: &str) -> Option<String> {
        Some(s.to_owned())
    }
}

/// The counts of a `usage` object; a value of another shape counts nothing.
#[derive(Default)]
struct UsageCounts {
    total: Option<u64>,
    input: Option<u64>,
    output: Option<u64>,
}

impl<'de> de::Deserialize<'de> for UsageCounts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UsageCounts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UsageCounts, A::Error> {
                let mut out = UsageCounts::default();
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    let slot = match &*key.0 {
                        "total_tokens" => &mut out.total,
                        "prompt_tokens" | "input_tokens" => &mut out.input,
                        "completion_tokens" | "output_tokens" => &mut out.output,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = map.next_value::<Picked<Whole>>()?.0;
                }
                Ok(out)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UsageCounts, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(UsageCounts::default())
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<UsageCounts, E> {
                Ok(UsageCounts::default())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<UsageCounts, E> {
                Ok(UsageCounts::default())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<UsageCounts, E> {
                Ok(UsageCounts::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<UsageCounts, E> {
                Ok(UsageCounts::default())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<UsageCounts, E> {
                Ok(UsageCounts::default())
            }
            fn visit_unit<E: de::Error>(self) -> Result<UsageCounts, E> {
                Ok(UsageCounts::default())
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de, R: Pick> de::Deserialize<'de> for Picked<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PickVisitor<R>(std::marker::PhantomData<R>);
        impl<'de, R: Pick> Visitor<'de> for PickVisitor<R> {
            type Value = Picked<R>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Picked<R>, E> {
                Ok(Picked(R::from_u64(n)))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Picked<R>, E> {
                Ok(Picked(u64::try_from(n).ok().and_then(R::from_u64)))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Picked<R>, E> {
                Ok(Picked(None))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Picked<R>, E> {
                Ok(Picked(R::from_str(s)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Picked<R>, E> {
                Ok(Picked(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Picked<R>, E> {
                Ok(Picked(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Picked<R>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Picked(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Picked<R>, A::Error> {
                skip_map(map)?;
                Ok(Picked(None))
            }
        }
        d.deserialize_any(PickVisitor::<R>(std::marker::PhantomData))
    }
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<bool, A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(false)
}

impl<'de, R: Rule> de::Deserialize<'de> for Finished<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FinishedVisitor::<R>(std::marker::PhantomData))
            .map(|b| Finished(b, std::marker::PhantomData))
    }
}

struct FinishedVisitor<R>(std::marker::PhantomData<R>);

impl<'de, R: Rule> Visitor<'de> for FinishedVisitor<R> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut finished = false;
        while let Some(f) = R::element_finished(&mut seq)? {
            finished |= f;
        }
        Ok(finished)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        R::map_finished(map)
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_none<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Inspection {
        inspect(text).unwrap_or_else(|_| panic!("{text} should inspect"))
    }

    #[test]
    fn ordinary_chunks() {
        let chunk = r#"{"id":"x","choices":[{"index":0,"delta":{"content":"hi \"error\""},"finish_reason":null}]}"#;
        assert_eq!(ok(chunk), Inspection::default());
        let last = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
        assert!(ok(last).finished);
        let second = r#"{"choices":[{"finish_reason":null},{"finish_reason":"length"}]}"#;
        assert!(ok(second).finished);
        assert_eq!(
            ok(r#"{"choices":[],"usage":{"total_tokens":3}}"#),
            Inspection {
                total_tokens: Some(3),
                ..Inspection::default()
            }
        );
        // A usage that is not an object, or a count that is not a whole number, says nothing.
        assert_eq!(ok(r#"{"usage":7}"#).total_tokens, None);
        assert_eq!(ok(r#"{"usage":{"total_tokens":-1}}"#).total_tokens, None);
        assert_eq!(ok(r#"{"usage":{"total_tokens":1.5}}"#).total_tokens, None);
    }

    #[test]
    fn nested_finish_reasons_and_errors_do_not_count() {
        let nested =
            r#"{"choices":[{"delta":{"finish_reason":"stop","error":{"m":1}}}],"x":{"error":1}}"#;
        assert_eq!(ok(nested), Inspection::default());
    }

    #[test]
    fn top_level_errors() {
        assert!(ok(r#"{"error":{"message":"overloaded"}}"#).error);
        assert!(ok(r#"{"error":"boom"}"#).error);
        assert!(!ok(r#"{"choices":[],"error":null}"#).error);
    }

    #[test]
    fn odd_shapes_are_accepted_without_deciding_anything() {
        assert_eq!(ok(r#"{"choices":null}"#), Inspection::default());
        assert_eq!(ok(r#"{"choices":"x"}"#), Inspection::default());
        assert_eq!(ok(r#"{"choices":[1,"a",[2],null]}"#), Inspection::default());
        assert_eq!(
            ok(r#"{"choices":{"finish_reason":"stop"}}"#),
            Inspection::default()
        );
        assert!(ok(r#"{"\u0063hoices":[{"finish_reason":"stop"}]}"#).finished);
    }

    #[test]
    fn not_an_object() {
        for text in [
            "",
            "null",
            "[1]",
            "\"s\"",
            "3",
            "{",
            "{\"a\":1} x",
            "{'a':1}",
        ] {
            assert_eq!(inspect(text), Err(NotAnObject), "{text:?}");
        }
    }

    #[test]
    fn provider_message_shapes() {
        assert_eq!(
            provider_message(r#"{"error":{"message":"Rate limit reached","type":"x"}}"#).as_deref(),
            Some("Rate limit reached")
        );
        assert_eq!(
            provider_message(r#"{"error":"model not found"}"#).as_deref(),
            Some("model not found")
        );
        assert_eq!(
            provider_message(r#"{"message":"bad"}"#).as_deref(),
            Some("bad")
        );
        assert_eq!(
            provider_message(
                r#"{"type":"response.failed","response":{"error":{"message":"server overloaded"}}}"#
            )
            .as_deref(),
            Some("server overloaded")
        );
        assert_eq!(provider_message("<html>"), None);
        assert_eq!(provider_message(r#"{"error":{"message":""}}"#), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use serde_json::Value;

        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                "\\PC{0,8}".prop_map(Value::String),
                prop_oneof![Just("stop"), Just("length")].prop_map(|s| Value::String(s.into())),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                let keys = prop_oneof![
                    Just("error".to_string()),
                    Just("choices".to_string()),
                    Just("finish_reason".to_string()),
                    Just("total_tokens".to_string()),
                    Just("usage".to_string()),
                    Just("prompt_tokens".to_string()),
                    Just("completion_tokens".to_string()),
                    Just("model".to_string()),
                    Just("max_tokens".to_string()),
                    "[a-z]{1,6}",
                ];
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                    prop::collection::btree_map(keys, inner, 0..5)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// What `inspect` must find, computed the slow way from the parsed value.
        fn expected(value: &Value) -> Inspection {
            let error = value.get("error").is_some_and(|e| !e.is_null());
            let finished = value
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(|choices| {
                    choices
                        .iter()
                        .any(|c| c.get("finish_reason").is_some_and(|f| !f.is_null()))
                });
            let count = |key: &str| {
                value
                    .get("usage")
                    .and_then(|u| u.get(key))
                    .and_then(Value::as_u64)
            };
            Inspection {
                error,
                finished,
                total_tokens: count("total_tokens"),
                input_tokens: count("prompt_tokens"),
                output_tokens: count("completion_tokens"),
            }
        }

        /// What `request_facts` must find, the slow way.
        fn expected_facts(value: &Value) -> RequestFacts {
            RequestFacts {
                model: value
                    .get("model")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                // The first token key in the body's order (the scan reads it front to back), the
                // map keeping its keys in the order they came (serde_json's preserve_order).
                max_tokens: value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| {
                        ["max_tokens", "max_completion_tokens", "max_output_tokens"]
                            .contains(&k.as_str())
                    })
                    .find_map(|(_, v)| v.as_u64()),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            /// Any JSON object: the targeted scan agrees with a full parse.
            #[test]
            fn agrees_with_a_full_parse(map in prop::collection::btree_map(
                prop_oneof![Just("error".to_string()), Just("choices".to_string()), Just("usage".to_string()), "[a-z]{1,6}"],
                json(),
                0..6,
            )) {
                let value = Value::Object(map.into_iter().collect());
                let text = serde_json::to_string(&value).unwrap();
                prop_assert_eq!(inspect(&text), Ok(expected(&value)));
            }

            /// A request body: the scan finds the model and the token ask a full parse finds.
            #[test]
            fn request_facts_agree_with_a_full_parse(map in prop::collection::btree_map(
                prop_oneof![
                    Just("model".to_string()),
                    Just("max_tokens".to_string()),
                    Just("max_output_tokens".to_string()),
                    "[a-z]{1,6}",
                ],
                json(),
                0..6,
            ), junk in "\\PC{0,40}") {
                let value = Value::Object(map.into_iter().collect());
                let text = serde_json::to_string(&value).unwrap();
                let found = request_facts(text.as_bytes());
                let wanted = expected_facts(&value);
                prop_assert_eq!(&found.model, &wanted.model);
                // The first of the token keys in the text wins both ways.
                prop_assert_eq!(found.max_tokens, wanted.max_tokens);
                let _ = request_facts(junk.as_bytes());
            }

            /// Any JSON that is not an object is refused; any text at all never panics.
            #[test]
            fn non_objects_and_junk(value in json(), junk in "\\PC{0,60}") {
                let text = serde_json::to_string(&value).unwrap();
                prop_assert_eq!(inspect(&text).is_ok(), value.is_object());
                let _ = inspect(&junk);
                let _ = provider_message(&junk);
            }
        }
    }
}
