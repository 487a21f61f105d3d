//! The response cache (`cache: true | { ttl, maxBytes, shared }`): an exact-match cache of
//! complete successful answers, so that the same request sent again (an evaluation run, a test
//! suite, a retried pipeline) is answered without the network and without paying for it.
//!
//! - The key is a SHA-256 of the request's canonical form (object keys sorted, so that their
//!   order does not matter), its path, the call's own headers, and the identity of the client's
//!   upstreams: each one's endpoint, models and a hash of its key and default headers. Two
//!   clients with different keys never share an answer; no key is in a cache key.
//! - Only complete successes are kept: a JSON answer that was judged a completion, a stream that
//!   ended complete (`[DONE]`, or a finish) while its consumer read it to the end, and neither
//!   from a fallback model. Never an error, a truncated stream or a refused size.
//! - Identical calls in flight at once send one request: the first leads, the others wait for
//!   it and then find its answer (or, when it failed, one of them leads in turn).
//! - Entries live in memory, bounded by `maxBytes` (least recently used out first), for `ttl`;
//!   with `shared`, also in the client's store (Redis) with the same TTL, so that a fleet shares
//!   them (a store that is down is a miss, never a wait past its round-trip deadline).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::sse::SseEvent;
use crate::store::Store;

pub use crate::config::CacheConfig;

/// One cached answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A JSON call's answer (a 2xx completion), and the upstream that gave it. Its response
    /// headers are not kept: they described that request (its id, the rate limits left then),
    /// and a hit is not that request.
    Answer {
        text: String,
        upstream: Option<String>,
    },
    /// A stream's events, in order, as they were decoded (replayed through the same judge).
    Stream { events: Vec<SseEvent> },
}

/// Bytes an entry holds, about: what `maxBytes` counts.
const ENTRY_OVERHEAD: usize = 64;

impl Entry {
    pub fn is_stream(&self) -> bool {
        matches!(self, Entry::Stream { .. })
    }

    pub fn size(&self) -> usize {
        ENTRY_OVERHEAD
            + match self {
                Entry::Answer { text, upstream } => {
                    text.len() + upstream.as_ref().map_or(0, String::len)
                }
                Entry::Stream { events } => events
                    .iter()
                    .map(|e| e.data.len() + e.event.as_ref().map_or(0, String::len) + 16)
                    .sum(),
            }
    }

    /// The form kept in the shared store.
    fn encode(&self) -> String {
        match self {
            Entry::Answer { text, upstream } => serde_json::json!({
                "answer": text, "upstream": upstream,
            }),
            Entry::Stream { events } => serde_json::json!({
                "events": events.iter().map(|e| serde_json::json!([e.event, e.data])).collect::<Vec<_>>(),
            }),
        }
        .to_string()
    }

    /// Reads what [`Entry::encode`] wrote; anything else (another version, a stranger's key) is
    /// no entry.
    fn decode(text: &str) -> Option<Entry> {
        let value: Value = serde_json::from_str(text).ok()?;
        if let Some(answer) = value.get("answer").and_then(Value::as_str) {
            return Some(Entry::Answer {
                text: answer.to_owned(),
                upstream: value
                    .get("upstream")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            });
        }
        let events = value
            .get("events")?
            .as_array()?
            .iter()
            .map(|pair| {
                Some(SseEvent {
                    event: match pair.get(0)? {
                        Value::Null => None,
                        v => Some(v.as_str()?.to_owned()),
                    },
                    data: pair.get(1)?.as_str()?.to_owned(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Entry::Stream { events })
    }
}

/// A cache key: the SHA-256 of everything that makes two calls the same call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key([u8; 32]);

/// A key is already a uniform hash: its first eight bytes are its hash in the maps (no SipHash
/// over it on every look).
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// Passes a key's own hash through (see `impl Hash for Key`).
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Key`; anything else still hashes, slowly.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeyMap<V> = HashMap<Key, V, std::hash::BuildHasherDefault<KeyHasher>>;

impl Key {
    fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Feeds the SHA-256 of a key or an identity; every part is length-prefixed, so that no two
/// different sequences of parts hash the same bytes.
pub struct Hasher(ring::digest::Context);

impl Default for Hasher {
    fn default() -> Self {
        Hasher(ring::digest::Context::new(&ring::digest::SHA256))
    }
}

impl Hasher {
    pub fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

/// The key of a call: `identity` (the client's upstreams), the call's `target` path, its own
/// headers, and the body in canonical form. `None`: the body is not JSON (not cacheable).
pub fn key_of(
    identity: &[u8; 32],
    target: (&str, &str),
    headers: &[(hyper::header::HeaderName, hyper::header::HeaderValue)],
    body: &[u8],
) -> Option<Key> {
    let mut hasher = Hasher::default();
    hasher
        .part(b"llmpool-cache-1")
        .part(identity)
        .part(target.0.as_bytes())
        .part(target.1.as_bytes());
    let mut sorted: Vec<_> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    sorted.sort_unstable();
    hasher.part(&(sorted.len() as u64).to_le_bytes());
    for (name, value) in sorted {
        hasher.part(name.as_bytes()).part(value);
    }
    CANONICAL.with(|buffer| {
        let mut canonical = buffer.borrow_mut();
        canonical.clear();
        let written = canonical_of(body, &mut canonical);
        if written.is_some() {
            hasher.part(&canonical);
        }
        // A body far larger than usual does not keep its buffer for the thread's life.
        if canonical.capacity() > 1 << 20 {
            *canonical = Vec::new();
        }
        written
    })?;
    Some(Key(hasher.finish()))
}

thread_local! {
    /// The canonical form is written here and hashed: one buffer per thread, not one per call.
    static CANONICAL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes `body` (JSON) to `out` in canonical form: every object's keys in sorted order, no
/// spaces, the same request however its keys were ordered. One pass over the text with no tree
/// built: each object's members are written as they come and then put in order in place.
/// `None` when the body is not JSON.
pub fn canonical_of(body: &[u8], out: &mut Vec<u8>) -> Option<()> {
    use serde::de::DeserializeSeed;
    let mut reader = serde_json::Deserializer::from_slice(body);
    Canonical(out).deserialize(&mut reader).ok()?;
    reader.end().ok()
}

/// Writes one JSON value in canonical form (see [`canonical_of`]).
struct Canonical<'a>(&'a mut Vec<u8>);

impl<'de> serde::de::DeserializeSeed<'de> for Canonical<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Canonical<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        let _ = serde_json::to_writer(&mut *self.0, &v);
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        let _ = serde_json::to_writer(&mut *self.0, &v);
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        // As serde_json writes a parsed float (a Value would hold the same f64).
        let _ = serde_json::to_writer(&mut *self.0, &serde_json::Number::from_f64(v));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        let _ = serde_json::to_writer(&mut *self.0, v);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.push(b'[');
        let mut first = true;
        loop {
            let mark = self.0.len();
            if !first {
                self.0.push(b',');
            }
            if seq.next_element_seed(Canonical(&mut *self.0))?.is_none() {
                self.0.truncate(mark);
                break;
            }
            first = false;
        }
        self.0.push(b']');
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let start = self.0.len();
        // Each member as `"key":value`, where it was written, with its key to sort by.
        let mut members: Vec<(crate::payload::Str<'de>, std::ops::Range<usize>)> = Vec::new();
        while let Some(key) = map.next_key::<crate::payload::Str<'de>>()? {
            let at = self.0.len();
            let _ = serde_json::to_writer(&mut *self.0, &*key.0);
            self.0.push(b':');
            map.next_value_seed(Canonical(&mut *self.0))?;
            members.push((key, at..self.0.len()));
        }
        members.sort_by(|a, b| a.0 .0.cmp(&b.0 .0));
        let written = self.0.split_off(start);
        self.0.push(b'{');
        for (i, (_, range)) in members.into_iter().enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            self.0
                .extend_from_slice(&written[range.start - start..range.end - start]);
        }
        self.0.push(b'}');
        Ok(())
    }
}

/// JSON with every object's keys in sorted order, from a parsed value: the oracle of
/// [`canonical_of`]'s property test.
#[cfg(test)]
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Writing to a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, key);
                out.push(b':');
                write_canonical(member, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// The in-memory entries, least recently used first out.
#[derive(Default)]
struct Local {
    slots: KeyMap<Slot>,
    /// Use tick → key: the oldest first.
    order: BTreeMap<u64, Key>,
    tick: u64,
    bytes: usize,
}

struct Slot {
    entry: Arc<Entry>,
    expires: Instant,
    used: u64,
    size: usize,
}

impl Local {
    fn get(&mut self, key: &Key, now: Instant) -> Option<Arc<Entry>> {
        let slot = self.slots.get(key)?;
        if slot.expires <= now {
            self.remove(key);
            return None;
        }
        self.tick += 1;
        let tick = self.tick;
        let slot = self.slots.get_mut(key)?;
        self.order.remove(&slot.used);
        slot.used = tick;
        self.order.insert(tick, *key);
        Some(slot.entry.clone())
    }

    fn remove(&mut self, key: &Key) {
        if let Some(slot) = self.slots.remove(key) {
            self.order.remove(&slot.used);
            self.bytes -= slot.size;
        }
    }

    /// Keeps `entry` until `expires`, making room within `max` bytes; an entry larger than
    /// `max` is not kept.
    fn put(&mut self, key: Key, entry: Arc<Entry>, expires: Instant, max: usize) {
        let size = entry.size();
        self.remove(&key);
        if size > max {
            return;
        }
        while self.bytes + size > max {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(slot) = self.slots.remove(&oldest) {
                self.bytes -= slot.size;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key);
        self.slots.insert(
            key,
            Slot {
                entry,
                expires,
                used: self.tick,
                size,
            },
        );
        self.bytes += size;
    }
}

/// Counters of the cache, for stats and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries and bytes held in this process's memory.
    pub entries: u64,
    pub bytes: u64,
}

/// A call's turn at a key: its answer is there, or it leads (sends the one request).
pub enum Turn {
    Hit(Arc<Entry>),
    Lead(Flight),
}

/// The leader's hold on a key: while it lives, identical calls wait; dropped (answered, failed
/// or abandoned), they look again.
pub struct Flight {
    flights: Flights,
    key: Key,
    done: Arc<Notify>,
}

/// The calls leading, by key: what their followers wait on.
type Flights = Arc<Mutex<KeyMap<Arc<Notify>>>>;

impl Drop for Flight {
    fn drop(&mut self) {
        self.flights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        // Every follower that was waiting wakes and looks again.
        self.done.notify_waiters();
    }
}

/// The cache of one client.
pub struct Cache {
    config: CacheConfig,
    local: Mutex<Local>,
    flights: Flights,
    /// `shared`: the client's store.
    store: Option<Arc<Store>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Cache {
    pub fn new(config: CacheConfig, store: Option<Arc<Store>>) -> Cache {
        Cache {
            config,
            local: Mutex::default(),
            flights: Arc::default(),
            store: store.filter(|_| config.shared),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.config.ttl
    }

    /// The largest entry kept.
    pub fn max_bytes(&self) -> usize {
        self.config.max_bytes
    }

    pub fn stats(&self) -> CacheStats {
        let local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: local.slots.len() as u64,
            bytes: local.bytes as u64,
        }
    }

    /// The entry under `key`: in memory, else (shared) in the store, then kept in memory for
    /// what is left of its TTL there. An entry of the other kind (a stream's where an answer is
    /// looked for: a store written by something else) is no entry.
    async fn find(&self, key: &Key, stream: bool) -> Option<Arc<Entry>> {
        self.find_any(key)
            .await
            .filter(|entry| entry.is_stream() == stream)
    }

    async fn find_any(&self, key: &Key) -> Option<Arc<Entry>> {
        let now = Instant::now();
        if let Some(entry) = self
            .local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key, now)
        {
            return Some(entry);
        }
        let store = self.store.as_ref()?;
        let (text, left) = store.get_with_ttl(&store.cache_key(&key.hex())).await?;
        let entry = Arc::new(Entry::decode(&text)?);
        self.local.lock().unwrap_or_else(|e| e.into_inner()).put(
            *key,
            entry.clone(),
            now + left,
            self.config.max_bytes,
        );
        Some(entry)
    }

    /// The call's turn at `key`: a hit, the lead, or (another identical call leading) a wait
    /// for it and another look. Abandoned with its future (an abort ends the wait).
    pub async fn turn(&self, key: &Key, stream: bool) -> Turn {
        loop {
            if let Some(entry) = self.find(key, stream).await {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Turn::Hit(entry);
            }
            let leader = {
                let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
                match flights.get(key) {
                    Some(leader) => leader.clone(),
                    None => {
                        let done = Arc::new(Notify::new());
                        flights.insert(*key, done.clone());
                        self.misses.fetch_add(1, Ordering::Relaxed);
                        return Turn::Lead(Flight {
                            flights: self.flights.clone(),
                            key: *key,
                            done,
                        });
                    }
                }
            };
            // Waits for the leader's flight to end, then looks again. Registered before the
            // flight is checked once more, so that an end in between is not missed.
            let ended = leader.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let still_leading = self
                .flights
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(key)
                .is_some_and(|flying| Arc::ptr_eq(flying, &leader));
            if still_leading {
                ended.await;
            }
        }
    }

    /// Keeps a complete success under `key` for `ttl` (in memory at once; in the shared store
    /// in the background).
    pub fn keep(&self, key: &Key, entry: Entry, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        if let Some(store) = &self.store {
            if entry.size() <= self.config.max_bytes {
                store.set_with_ttl(store.cache_key(&key.hex()), entry.encode(), ttl);
            }
        }
        self.local.lock().unwrap_or_else(|e| e.into_inner()).put(
            *key,
            Arc::new(entry),
            Instant::now() + ttl,
            self.config.max_bytes,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn answer(text: &str) -> Entry {
        Entry::Answer {
            text: text.to_owned(),
            upstream: Some("primary".into()),
        }
    }

    #[test]
    fn key_order_does_not_matter_but_every_value_does() {
        let id = [7u8; 32];
        let k = |body: &str| key_of(&id, ("json", "/chat/completions"), &[], body.as_bytes());
        assert_eq!(
            k(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#),
            k(
                r#"{ "temperature": 0, "messages": [{"content":"hi","role":"user"}], "model": "m" }"#
            )
        );
        assert_ne!(k(r#"{"model":"m","n":1}"#), k(r#"{"model":"m","n":2}"#));
        assert_ne!(k(r#"{"a":[1,2]}"#), k(r#"{"a":[2,1]}"#));
        assert_eq!(k("not json"), None);
        // The identity, the path and the headers are part of the key.
        let body = br#"{"model":"m"}"#;
        let base = key_of(&id, ("json", "/chat/completions"), &[], body);
        assert_ne!(
            base,
            key_of(&[8u8; 32], ("json", "/chat/completions"), &[], body)
        );
        assert_ne!(base, key_of(&id, ("json", "/embeddings"), &[], body));
        assert_ne!(
            base,
            key_of(&id, ("stream", "/chat/completions"), &[], body)
        );
        let header = (
            hyper::header::HeaderName::from_static("x-tenant"),
            hyper::header::HeaderValue::from_static("a"),
        );
        assert_ne!(
            base,
            key_of(&id, ("json", "/chat/completions"), &[header], body)
        );
    }

    #[test]
    fn least_recently_used_goes_first_and_big_entries_are_not_kept() {
        let mut local = Local::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let size = answer("aaaa").size();
        let (a, b, c) = (Key([1; 32]), Key([2; 32]), Key([3; 32]));
        local.put(a, Arc::new(answer("aaaa")), later, size * 2);
        local.put(b, Arc::new(answer("bbbb")), later, size * 2);
        // a is used: b is now the least recent, and goes when c comes.
        assert!(local.get(&a, now).is_some());
        local.put(c, Arc::new(answer("cccc")), later, size * 2);
        assert!(local.get(&b, now).is_none());
        assert!(local.get(&a, now).is_some() && local.get(&c, now).is_some());
        assert_eq!(local.bytes, size * 2);
        // Larger than the whole budget: not kept, nothing evicted for it.
        local.put(b, Arc::new(answer(&"x".repeat(size * 3))), later, size * 2);
        assert_eq!((local.slots.len(), local.bytes), (2, size * 2));
        // Expired: gone on the next look.
        assert!(local.get(&a, later).is_none());
        assert_eq!((local.slots.len(), local.bytes), (1, size));
    }

    #[test]
    fn entries_survive_the_shared_form() {
        let stream = Entry::Stream {
            events: vec![
                SseEvent {
                    event: None,
                    data: r#"{"choices":[]}"#.into(),
                },
                SseEvent {
                    event: Some("response.completed".into()),
                    data: "{}".into(),
                },
            ],
        };
        for entry in [answer(r#"{"id":"x"}"#), stream] {
            assert_eq!(Entry::decode(&entry.encode()), Some(entry));
        }
        assert_eq!(Entry::decode("{}"), None);
        assert_eq!(Entry::decode("not json"), None);
    }

    #[tokio::test]
    async fn one_leader_at_a_time_and_waiters_find_its_answer() {
        let cache = Arc::new(Cache::new(
            CacheConfig {
                ttl: Duration::from_secs(60),
                max_bytes: 1 << 20,
                shared: false,
            },
            None,
        ));
        let key = Key([9; 32]);
        let Turn::Lead(flight) = cache.turn(&key, false).await else {
            panic!("the first call leads")
        };
        let waiter = tokio::spawn({
            let cache = cache.clone();
            async move { matches!(cache.turn(&key, false).await, Turn::Hit(_)) }
        });
        tokio::task::yield_now().await;
        cache.keep(&key, answer("{}"), Duration::from_secs(60));
        drop(flight);
        assert!(waiter.await.unwrap());
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 1,
                misses: 1,
                entries: 1,
                bytes: answer("{}").size() as u64
            }
        );
        // A leader that fails (drops its flight without an answer) hands the lead on.
        let other = Key([10; 32]);
        let Turn::Lead(flight) = cache.turn(&other, false).await else {
            panic!()
        };
        let waiter = tokio::spawn({
            let cache = cache.clone();
            async move { matches!(cache.turn(&other, false).await, Turn::Lead(_)) }
        });
        tokio::task::yield_now().await;
        drop(flight);
        assert!(waiter.await.unwrap());
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                proptest::collection::vec(("\\PC{0,6}", inner), 0..6)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The one-pass writer agrees with the tree it stands for, on any JSON, and never
        /// panics on any bytes.
        #[test]
        fn the_one_pass_canonical_form_agrees_with_a_full_parse(value in json(), junk in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = serde_json::to_string(&value).unwrap();
            let (mut fast, mut oracle) = (Vec::new(), Vec::new());
            prop_assert_eq!(canonical_of(text.as_bytes(), &mut fast), Some(()));
            // The tree parsed from the same text (a float's text may not round-trip exactly).
            let parsed: Value = serde_json::from_str(&text).unwrap();
            write_canonical(&parsed, &mut oracle);
            prop_assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&oracle));
            let mut ignored = Vec::new();
            let _ = canonical_of(&junk, &mut ignored);
        }

        #[test]
        fn canonical_form_is_json_and_ignores_key_order(pairs in proptest::collection::vec(("[a-z]{1,6}", any::<i64>()), 0..12)) {
            let mut forward = serde_json::Map::new();
            for (k, v) in &pairs { forward.insert(k.clone(), Value::from(*v)); }
            let mut backward = serde_json::Map::new();
            for (k, _) in pairs.iter().rev() { backward.insert(k.clone(), forward[k].clone()); }
            let (mut a, mut b) = (Vec::new(), Vec::new());
            write_canonical(&Value::Object(forward.clone()), &mut a);
            write_canonical(&Value::Object(backward), &mut b);
            prop_assert_eq!(&a, &b);
            let parsed: Value = serde_json::from_slice(&a).unwrap();
            prop_assert_eq!(parsed, Value::Object(forward));
        }
    }
}
