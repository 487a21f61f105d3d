//! The validator: every option's rule, defaults, and messages that name the option.

use super::*;
use serde_json::json;

fn err(v: Value) -> String {
    Config::from_json(&v).unwrap_err().to_string()
}

#[test]
fn defaults_fill_in() {
    let c = Config::from_json(&json!({ "baseUrl": "http://127.0.0.1:8080/v1/" })).unwrap();
    assert_eq!(c.connections, Some(DEFAULT_CONNECTIONS));
    assert!(c.keep_alive);
    assert_eq!(c.keep_alive_timeout, ms(DEFAULT_KEEP_ALIVE_TIMEOUT_MS));
    assert_eq!(c.headers_timeout, Some(ms(DEFAULT_HEADERS_TIMEOUT_MS)));
    assert_eq!(c.pool_timeout, Some(ms(DEFAULT_POOL_TIMEOUT_MS)));
    assert_eq!(c.connect.tcp_keep_alive, Some(ms(60_000)));
    assert!(c.connect.trust.reject_unauthorized);
    assert_eq!(c.retry, RetryConfig::default());
    assert_eq!(c.endpoint.path("/chat/completions"), "/v1/chat/completions");
    assert_eq!(c.endpoint.origin, "http://127.0.0.1:8080");
}

#[test]
fn base_url_path_prefix_is_kept_with_or_without_slash() {
    for (url, path) in [
        ("http://h/v1", "/v1/chat/completions"),
        ("http://h/v1/", "/v1/chat/completions"),
        ("http://h", "/chat/completions"),
        (
            "https://h:8443/api/openai/v1",
            "/api/openai/v1/chat/completions",
        ),
    ] {
        assert_eq!(
            Endpoint::parse(url).unwrap().path("/chat/completions"),
            path,
            "{url}"
        );
    }
    let e = Endpoint::parse("https://[::1]/v1").unwrap();
    assert_eq!((e.host.as_str(), e.port), ("::1", 443));
}

#[test]
fn null_connections_means_unlimited() {
    let c = Config::from_json(&json!({ "baseUrl": "http://h", "connections": null })).unwrap();
    assert_eq!(c.connections, None);
}

#[test]
fn zero_disables_limits_and_pipelining_zero_disables_keep_alive() {
    let c =
        Config::from_json(&json!({ "baseUrl": "http://h", "headersTimeout": 0, "pipelining": 0 }))
            .unwrap();
    assert_eq!(c.headers_timeout, None);
    assert!(!c.keep_alive);
}

#[test]
fn every_rule_names_its_option() {
    let cases = [
        (json!({}), "baseUrl is required"),
        (json!({ "baseUrl": 5 }), "baseUrl must be a string"),
        (
            json!({ "baseUrl": "ftp://h" }),
            "baseUrl must be an absolute",
        ),
        (
            json!({ "baseUrl": "http://u:p@h" }),
            "baseUrl must not carry credentials",
        ),
        (
            json!({ "baseUrl": "http://h", "connections": 0 }),
            "connections must be a positive integer or null",
        ),
        (
            json!({ "baseUrl": "http://h", "connections": -1 }),
            "connections must be a positive integer or null",
        ),
        (
            json!({ "baseUrl": "http://h", "connections": 1.5 }),
            "connections must be a positive integer or null",
        ),
        (
            json!({ "baseUrl": "http://h", "connections": "NaN" }),
            "connections must be a positive integer or null",
        ),
        (
            json!({ "baseUrl": "http://h", "pipelining": 2 }),
            "pipelining must be 0 or 1",
        ),
        (
            json!({ "baseUrl": "http://h", "keepAliveTimeout": 0 }),
            "keepAliveTimeout must be a positive integer",
        ),
        (
            json!({ "baseUrl": "http://h", "headersTimeout": -5 }),
            "headersTimeout must be a non-negative integer",
        ),
        (
            json!({ "baseUrl": "http://h", "autoSelectFamily": "yes" }),
            "autoSelectFamily must be a boolean",
        ),
        (
            json!({ "baseUrl": "http://h", "apiKey": 42 }),
            "apiKey must be a string",
        ),
        (
            json!({ "baseUrl": "http://h", "headers": [] }),
            "headers must be an object",
        ),
        (
            json!({ "baseUrl": "http://h", "headers": { "x-a": 1 } }),
            "headers.x-a must be a string",
        ),
        (
            json!({ "baseUrl": "http://h", "headers": { "bad name": "v" } }),
            "headers has an invalid header name",
        ),
        (
            json!({ "baseUrl": "http://h", "conections": 5 }),
            "conections is not a known option",
        ),
        (
            json!({ "baseUrl": "http://h", "connect": { "ca": 5 } }),
            "connect.ca must be a PEM string",
        ),
        (
            json!({ "baseUrl": "http://h", "connect": { "ca": "not pem" } }),
            "connect.ca must be a PEM string",
        ),
        (
            json!({ "baseUrl": "http://h", "connect": { "keepAlive": 1 } }),
            "connect.keepAlive must be a boolean",
        ),
        (
            json!({ "baseUrl": "http://h", "connect": { "nope": 1 } }),
            "connect.nope is not a known option",
        ),
        (
            json!({ "baseUrl": "http://h", "retry": 3 }),
            "retry must be an object or false",
        ),
        (
            json!({ "baseUrl": "http://h", "retry": { "maxRetries": -1 } }),
            "retry.maxRetries must be an integer from 0 to 100",
        ),
        (
            json!({ "baseUrl": "http://h", "retry": { "minTimeout": 10, "maxTimeout": 5 } }),
            "retry.maxTimeout must not be less than retry.minTimeout",
        ),
        (
            json!({ "baseUrl": "http://h", "retry": { "timeoutFactor": 0.5 } }),
            "retry.timeoutFactor must be a number from 1 to 100",
        ),
        (
            json!({ "baseUrl": "http://h", "retry": { "statusCodes": [99] } }),
            "retry.statusCodes must be an array of HTTP status codes",
        ),
        (
            json!({ "baseUrl": "http://h", "maxEventSize": 0 }),
            "maxEventSize must be a positive integer",
        ),
    ];
    for (input, expected) in cases {
        let message = err(input.clone());
        assert!(
            message.starts_with(expected),
            "{input}: got {message:?}, want {expected:?}"
        );
    }
}

#[test]
fn retry_false_means_no_retries() {
    let c = Config::from_json(&json!({ "baseUrl": "http://h", "retry": false })).unwrap();
    assert_eq!(c.retry.max_retries, 0);
}

#[test]
fn api_key_never_in_debug_or_errors() {
    let c =
        Config::from_json(&json!({ "baseUrl": "http://h", "apiKey": "sk-very-secret" })).unwrap();
    assert!(!format!("{c:?}").contains("sk-very-secret"));
    let e = err(json!({ "baseUrl": "http://h", "apiKey": "sk-very-secret\n" }));
    assert!(!e.contains("sk-very-secret"), "{e}");
}
