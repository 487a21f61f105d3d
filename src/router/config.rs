//! What the router reads from the options: `upstreams` (each built into a whole client
//! [`Config`] of its own: the client's options, overridden by the upstream's), `routing`,
//! `allowedFails`/`cooldown`, `fallbacks`, `contextWindowFallbacks` and `store`.
//!
//! Without `upstreams`, `baseUrl` is the one upstream and the options are read as they always
//! were.

use serde_json::{Map, Value};

use crate::config::{
    is_upstream_option, BreakerConfig, Config, ConfigError, LimitsConfig, TlsTrust, ROUTER_OPTIONS,
    STORE_OPTIONS,
};
use crate::store::StoreTarget;

/// The key prefix of the shared store, so that services can share one Redis.
pub const DEFAULT_STORE_PREFIX: &str = "llmpool";

/// Every client option with a literal default, as JS writes it, from the constants the validators
/// use. The README's option rows and `index.d.ts`'s doc comments are checked against this list
/// (`__test__/options-truth.spec.ts`); this list is checked against the validators (a client
/// given these values is configured exactly as one given none: `option_defaults_are_the_validators'`).
pub fn option_defaults() -> Vec<(&'static str, Value)> {
    use crate::config::*;
    use serde_json::json;
    vec![
        ("routing", json!(DEFAULT_ROUTING.name())),
        ("allowedFails", json!(DEFAULT_ALLOWED_FAILS)),
        ("cooldown", json!(DEFAULT_COOLDOWN_MS)),
        ("store.prefix", json!(DEFAULT_STORE_PREFIX)),
        ("store.cluster", json!(false)),
        ("cache.ttl", json!(DEFAULT_CACHE_TTL_MS)),
        ("cache.maxBytes", json!(DEFAULT_CACHE_MAX_BYTES)),
        ("cache.shared", json!(false)),
        ("store.tls.rejectUnauthorized", json!(true)),
        ("connections", json!(DEFAULT_CONNECTIONS)),
        ("pipelining", json!(1)),
        ("keepAliveTimeout", json!(DEFAULT_KEEP_ALIVE_TIMEOUT_MS)),
        (
            "keepAliveMaxTimeout",
            json!(DEFAULT_KEEP_ALIVE_MAX_TIMEOUT_MS),
        ),
        (
            "keepAliveTimeoutThreshold",
            json!(DEFAULT_KEEP_ALIVE_TIMEOUT_THRESHOLD_MS),
        ),
        ("connectTimeout", json!(DEFAULT_CONNECT_TIMEOUT_MS)),
        ("headersTimeout", json!(DEFAULT_HEADERS_TIMEOUT_MS)),
        ("bodyTimeout", json!(DEFAULT_BODY_TIMEOUT_MS)),
        ("autoSelectFamily", json!(DEFAULT_AUTO_SELECT_FAMILY)),
        (
            "autoSelectFamilyAttemptTimeout",
            json!(DEFAULT_AUTO_SELECT_FAMILY_ATTEMPT_TIMEOUT_MS),
        ),
        ("connect.keepAlive", json!(DEFAULT_TCP_KEEP_ALIVE)),
        (
            "connect.keepAliveInitialDelay",
            json!(DEFAULT_TCP_KEEP_ALIVE_INITIAL_DELAY_MS),
        ),
        ("connect.rejectUnauthorized", json!(true)),
        ("connect.useSystemCA", json!(false)),
        ("poolTimeout", json!(DEFAULT_POOL_TIMEOUT_MS)),
        ("timeout", json!(DEFAULT_TIMEOUT_MS)),
        ("firstTokenTimeout", json!(DEFAULT_FIRST_TOKEN_TIMEOUT_MS)),
        ("tokenTimeout", json!(DEFAULT_TOKEN_TIMEOUT_MS)),
        ("maxEventSize", json!(DEFAULT_MAX_EVENT_SIZE)),
        ("maxResponseSize", json!(DEFAULT_MAX_RESPONSE_SIZE)),
        ("limitTimeout", json!(DEFAULT_LIMIT_TIMEOUT_MS)),
        ("allowH2", json!(DEFAULT_ALLOW_H2)),
        (
            "maxConcurrentStreams",
            json!(DEFAULT_MAX_CONCURRENT_STREAMS),
        ),
        ("dns.maxTTL", json!(DEFAULT_DNS_MAX_TTL_MS)),
        ("dns.maxItems", json!(DEFAULT_DNS_MAX_ITEMS)),
        ("retry.maxRetries", json!(DEFAULT_MAX_RETRIES)),
        ("retry.minTimeout", json!(DEFAULT_RETRY_MIN_TIMEOUT_MS)),
        ("retry.maxTimeout", json!(DEFAULT_RETRY_MAX_TIMEOUT_MS)),
        ("retry.timeoutFactor", json!(DEFAULT_RETRY_TIMEOUT_FACTOR)),
        ("retry.retryAfter", json!(DEFAULT_RETRY_AFTER)),
        ("retry.statusCodes", json!(DEFAULT_RETRY_STATUS_CODES)),
        ("retry.errorCodes", json!(DEFAULT_RETRY_ERROR_CODES)),
        (
            "circuitBreaker.failureThreshold",
            json!(DEFAULT_BREAKER_FAILURE_THRESHOLD),
        ),
        (
            "circuitBreaker.resetTimeout",
            json!(DEFAULT_BREAKER_RESET_TIMEOUT_MS),
        ),
    ]
}

/// Consecutive retryable failures that put an upstream in cooldown (LiteLLM's `allowed_fails`).
pub const DEFAULT_ALLOWED_FAILS: u32 = 3;
/// How long an upstream cools down (LiteLLM's default cooldown, 5 s).
pub const DEFAULT_COOLDOWN_MS: u64 = 5_000;

/// How a call picks among the healthy upstreams that serve its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Fewest calls in flight relative to the upstream's capacity (its `limits.concurrency`, else
    /// its `connections`).
    LeastBusy,
    /// Lowest recent time to response headers.
    Latency,
    /// At random, in proportion to `weight`.
    Weighted,
}

impl Routing {
    pub fn name(self) -> &'static str {
        match self {
            Routing::LeastBusy => "least-busy",
            Routing::Latency => "latency",
            Routing::Weighted => "weighted",
        }
    }
}

/// The default strategy; README "Upstreams" has the measurement behind it.
pub const DEFAULT_ROUTING: Routing = Routing::LeastBusy;

/// One upstream: a whole client configuration, and how routing sees it.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub config: Config,
    pub weight: u32,
    /// The models it serves, each with the name the upstream knows it by (an Azure
    /// deployment); `None` = every model, under its own name.
    pub models: Option<Vec<(String, String)>>,
}

/// An upstream's own name for `model` when its `models` serve it (`None` = it serves every
/// model under its own name; a body without a model goes only to such an upstream).
pub fn serves<'a>(
    models: &'a Option<Vec<(String, String)>>,
    model: Option<&'a str>,
) -> Option<&'a str> {
    match (models, model) {
        (None, model) => Some(model.unwrap_or_default()),
        (Some(_), None) => None,
        (Some(list), Some(model)) => list
            .iter()
            .find(|(name, _)| name == model)
            .map(|(_, own)| own.as_str()),
    }
}

/// The shared limiter store (`store: { redis, cluster, tls, prefix }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Where it is; its URLs may hold a password and are never printed.
    pub target: StoreTarget,
    /// Key prefix, so that several services may share one Redis.
    pub prefix: String,
}

/// Everything the router needs.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// At least one.
    pub upstreams: Vec<UpstreamConfig>,
    /// Whether the options named `upstreams` (rather than one `baseUrl`).
    pub named: bool,
    pub routing: Routing,
    /// Models to try, in order, when every upstream of a model failed.
    pub fallbacks: Vec<(String, Vec<String>)>,
    /// Models to try when an upstream says the prompt does not fit (`context_length_exceeded`).
    pub context_window_fallbacks: Vec<(String, Vec<String>)>,
    /// Limits of the whole client across upstreams (with `upstreams`; with `baseUrl` the
    /// upstream's own limits are the client's).
    pub limits: Option<LimitsConfig>,
    pub store: Option<StoreConfig>,
    /// The response cache (`cache`).
    pub cache: Option<crate::config::CacheConfig>,
}

fn rule(name: &str, rule: &str) -> ConfigError {
    ConfigError::new(name, rule)
}

impl RouterConfig {
    /// Validates the JS options object (as JSON).
    pub fn from_json(value: &Value) -> Result<RouterConfig, ConfigError> {
        let map = value
            .as_object()
            .ok_or_else(|| ConfigError::new("options", "must be an object"))?;
        let routing = match map.get("routing") {
            None | Some(Value::Null) => DEFAULT_ROUTING,
            Some(Value::String(s)) if s == "least-busy" => Routing::LeastBusy,
            Some(Value::String(s)) if s == "latency" => Routing::Latency,
            Some(Value::String(s)) if s == "weighted" => Routing::Weighted,
            Some(_) => {
                return Err(rule(
                    "routing",
                    "must be 'least-busy', 'latency' or 'weighted'",
                ))
            }
        };
        let fallbacks = model_lists(map.get("fallbacks"), "fallbacks")?;
        let context_window_fallbacks =
            model_lists(map.get("contextWindowFallbacks"), "contextWindowFallbacks")?;
        let store = parse_store(map.get("store"))?;
        let cache = crate::config::parse_cache(map.get("cache"))?;
        if cache.is_some_and(|c| c.shared) && store.is_none() {
            return Err(rule(
                "cache.shared",
                "needs a store: { redis } to share the entries in",
            ));
        }
        let upstreams = match map.get("upstreams") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) if !items.is_empty() => Some(items),
            Some(_) => {
                return Err(rule(
                    "upstreams",
                    "must be a non-empty array of upstream objects",
                ))
            }
        };
        let Some(items) = upstreams else {
            for key in ["allowedFails", "cooldown"] {
                if map.get(key).is_some_and(|v| !v.is_null()) {
                    return Err(rule(
                        key,
                        "applies to upstreams; with baseUrl use circuitBreaker",
                    ));
                }
            }
            let config = Config::from_json(value)?;
            return Ok(RouterConfig {
                upstreams: vec![UpstreamConfig {
                    config,
                    weight: 1,
                    models: None,
                }],
                named: false,
                routing,
                fallbacks,
                context_window_fallbacks,
                limits: None,
                store,
                cache,
            });
        };
        for key in ["baseUrl", "circuitBreaker"] {
            if map.get(key).is_some_and(|v| !v.is_null()) {
                let why = if key == "baseUrl" {
                    "must not be set with upstreams: give each upstream its own baseUrl"
                } else {
                    "must not be set with upstreams: use allowedFails and cooldown"
                };
                return Err(rule(key, why));
            }
        }
        let breaker = BreakerConfig {
            failure_threshold: uint(map, "allowedFails", DEFAULT_ALLOWED_FAILS as u64, 1, 1000)?
                as u32,
            reset_timeout: std::time::Duration::from_millis(uint(
                map,
                "cooldown",
                DEFAULT_COOLDOWN_MS,
                1,
                crate::config::MAX_DURATION_MS,
            )?),
        };
        // What every upstream starts from: the client's options, less the router's and the
        // client-wide limits.
        let mut shared = map.clone();
        for key in ROUTER_OPTIONS.iter().chain(&["limits"]) {
            shared.remove(*key);
        }
        let mut built: Vec<UpstreamConfig> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let upstream = upstream(i, item, &shared, breaker)?;
            let name = upstream.config.name.as_deref().unwrap_or_default();
            if built.iter().any(|u| u.config.name.as_deref() == Some(name)) {
                return Err(rule(
                    &format!("upstreams[{i}].name"),
                    &format!("repeats {name:?}: names must be unique"),
                ));
            }
            built.push(upstream);
        }
        // The client-wide limits, read by the same rules as an upstream's.
        let limits = crate::config::client_limits(map)?;
        let served = |model: &str| {
            built
                .iter()
                .any(|u| serves(&u.models, Some(model)).is_some())
        };
        for (name, lists) in [
            ("fallbacks", &fallbacks),
            ("contextWindowFallbacks", &context_window_fallbacks),
        ] {
            for (model, list) in lists.iter() {
                if let Some(missing) = list.iter().find(|m| !served(m)) {
                    return Err(rule(
                        &format!("{name}.{model}"),
                        &format!("names {missing:?}, which no upstream serves"),
                    ));
                }
            }
        }
        Ok(RouterConfig {
            upstreams: built,
            named: true,
            routing,
            fallbacks,
            context_window_fallbacks,
            limits,
            store,
            cache,
        })
    }
}

/// One entry of `upstreams`, merged over the client's options.
fn upstream(
    i: usize,
    item: &Value,
    shared: &Map<String, Value>,
    breaker: BreakerConfig,
) -> Result<UpstreamConfig, ConfigError> {
    let at = format!("upstreams[{i}]");
    let own = item
        .as_object()
        .ok_or_else(|| rule(&at, "must be an object"))?;
    if let Some(unknown) = own.keys().find(|k| !is_upstream_option(k)) {
        return Err(ConfigError::new(
            format!("{at}.{unknown}"),
            "is not a known upstream option",
        ));
    }
    let mut merged = shared.clone();
    for (key, value) in own {
        match key.as_str() {
            "name" | "weight" | "models" => {}
            // Headers add to the client's (the upstream's win).
            "headers" => match (merged.get_mut("headers"), value) {
                (Some(Value::Object(base)), Value::Object(extra)) => {
                    for (k, v) in extra {
                        base.insert(k.clone(), v.clone());
                    }
                }
                _ => {
                    merged.insert(key.clone(), value.clone());
                }
            },
            _ => {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    if !own.contains_key("baseUrl") {
        return Err(rule(&format!("{at}.baseUrl"), "is required"));
    }
    let mut config = Config::from_json(&Value::Object(merged)).map_err(|e| {
        // Name the upstream's field when the upstream set it.
        let field = e.option().split('.').next().unwrap_or_default();
        if own.contains_key(field) {
            e.under(&at)
        } else {
            e
        }
    })?;
    let name = match own.get("name") {
        None | Some(Value::Null) => config.endpoint.origin.clone(),
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(_) => return Err(rule(&format!("{at}.name"), "must be a non-empty string")),
    };
    config.name = Some(name);
    // Every upstream has a breaker: `allowedFails` and `cooldown`, the router's options.
    config.circuit_breaker = Some(breaker);
    let weight = match own.get("weight") {
        None | Some(Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .filter(|&n| (1..=1_000_000).contains(&n))
            .ok_or_else(|| {
                rule(
                    &format!("{at}.weight"),
                    "must be an integer from 1 to 1000000",
                )
            })? as u32,
    };
    let models = match own.get("models") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => Some(
            list.iter()
                .map(|m| match m.as_str() {
                    Some(s) if !s.is_empty() => Ok((s.to_owned(), s.to_owned())),
                    _ => Err(rule(
                        &format!("{at}.models"),
                        "must list model names (non-empty strings)",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(Value::Object(map)) => Some(
            map.iter()
                .map(|(model, own)| match own.as_str() {
                    Some(s) if !s.is_empty() => Ok((model.clone(), s.to_owned())),
                    _ => Err(rule(
                        &format!("{at}.models.{model}"),
                        "must be the upstream's name for the model (a non-empty string)",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => {
            return Err(rule(
                &format!("{at}.models"),
                "must be an array of model names or an object mapping a model to the upstream's name for it",
            ))
        }
    };
    Ok(UpstreamConfig {
        config,
        weight,
        models,
    })
}

/// `{ model: [model, …] }`.
fn model_lists(
    value: Option<&Value>,
    name: &str,
) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let shape = "must be an object mapping a model to an array of model names";
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(model, list)| {
                let list = list
                    .as_array()
                    .ok_or_else(|| rule(name, shape))?
                    .iter()
                    .map(|m| {
                        m.as_str()
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .ok_or_else(|| {
                                rule(&format!("{name}.{model}"), "must list model names")
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((model.clone(), list))
            })
            .collect(),
        Some(_) => Err(rule(name, shape)),
    }
}

fn parse_store(value: Option<&Value>) -> Result<Option<StoreConfig>, ConfigError> {
    let map = match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(None),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(rule(
                "store",
                "must be an object such as { redis: 'redis://host:6379/0' }",
            ))
        }
    };
    if let Some(unknown) = map.keys().find(|k| !STORE_OPTIONS.contains(&k.as_str())) {
        return Err(ConfigError::new(
            format!("store.{unknown}"),
            "is not a known option",
        ));
    }
    let url_rule =
        "must be a redis:// or rediss:// URL string (with cluster: true, a list of them)";
    let urls = match map.get("redis") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| rule("store.redis", url_rule))?,
        _ => return Err(rule("store.redis", url_rule)),
    };
    let cluster = match map.get("cluster") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(rule("store.cluster", "must be a boolean")),
    };
    let secure = urls.first().is_some_and(|u| u.starts_with("rediss://"));
    let tls = match map.get("tls") {
        None | Some(Value::Null) => secure.then(TlsTrust::default),
        Some(value) => Some(crate::config::parse_store_tls(value)?),
    };
    let target = StoreTarget { urls, cluster, tls };
    target.check().map_err(|(name, why)| rule(name, &why))?;
    let prefix = match map.get("prefix") {
        None | Some(Value::Null) => DEFAULT_STORE_PREFIX.to_owned(),
        Some(Value::String(s)) if !s.is_empty() && !s.contains(char::is_whitespace) => s.clone(),
        Some(_) => {
            return Err(rule(
                "store.prefix",
                "must be a non-empty string without spaces",
            ))
        }
    };
    Ok(Some(StoreConfig { target, prefix }))
}

fn uint(
    map: &Map<String, Value>,
    key: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| rule(key, &format!("must be an integer from {min} to {max}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Two upstreams for the routing options (they apply only there), one `baseUrl` for the rest
    /// (`circuitBreaker` applies only there), and the options a nested option
    /// lives in, present and otherwise empty (`circuitBreaker: {}`): an opt-in group is compared
    /// with itself, not with its absence.
    fn base(name: &str) -> Value {
        let routing_only = ["routing", "allowedFails", "cooldown"].contains(&name);
        let mut base = if routing_only {
            json!({ "upstreams": [
                { "name": "a", "baseUrl": "http://127.0.0.1:1/v1" },
                { "name": "b", "baseUrl": "http://127.0.0.1:2/v1" },
            ] })
        } else {
            json!({ "baseUrl": "http://127.0.0.1:1/v1" })
        };
        if let Some((group, _)) = name.split_once('.') {
            let empty = if name.starts_with("store.tls.") {
                json!({ "redis": "rediss://127.0.0.1:1", "tls": {} })
            } else if group == "store" {
                json!({ "redis": "redis://127.0.0.1:1" })
            } else {
                json!({})
            };
            base[group] = empty;
        }
        base
    }

    fn configured(options: &Value) -> String {
        format!(
            "{:?}",
            RouterConfig::from_json(options).expect("valid options")
        )
    }

    #[test]
    fn option_defaults_are_the_validators() {
        let defaults = option_defaults();
        assert!(defaults.len() >= 30);
        for (name, value) in defaults {
            let without = base(name);
            let mut with = without.clone();
            let mut at = &mut with;
            for part in name.split('.') {
                at = &mut at[part];
            }
            *at = value.clone();
            assert_eq!(
                configured(&with),
                configured(&without),
                "{name}: {value} is not what the validator takes when it is absent"
            );
        }
    }

    #[test]
    fn a_value_other_than_the_default_is_seen() {
        // The comparison above can fail: a non-default value changes the configuration.
        let without = base("connections");
        let mut with = without.clone();
        with["connections"] = json!(7);
        assert_ne!(configured(&with), configured(&without));
    }
}
