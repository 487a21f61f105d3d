//! Prometheus metrics of one client: counters, pool gauges and latency histograms, rendered in
//! the text exposition format by [`Metrics::render`]. Recording is a few relaxed atomic adds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::pool::PoolStats;

/// Latency buckets in seconds: LLM calls range from milliseconds (a cached answer, the first
/// token of a small model) to minutes.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Stream throughput buckets in tokens (data events) per second.
const RATE_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
];

/// The OpenTelemetry GenAI conventions' bucket boundaries, for the `gen_ai_client_*` series:
/// operation duration and time to first chunk (seconds), token usage, time per output chunk.
const GENAI_DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const GENAI_TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
const GENAI_CHUNK_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];

/// A cumulative histogram with fixed bounds; the sum is kept in microunits.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: f64) {
        let value = value.max(0.0);
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.render_series(out, name, labels);
    }

    /// The samples alone, for a family of several label sets.
    fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Everything `metrics()` reports that `stats()` does not already count.
#[derive(Debug)]
pub struct Metrics {
    origin_label: String,
    errors_by_code: Mutex<BTreeMap<&'static str, u64>>,
    time_to_headers: Histogram,
    time_to_first_token: Histogram,
    request_duration: Histogram,
    stream_tokens_per_second: Histogram,
    /// The GenAI conventions' four client histograms, with their buckets (token usage is one
    /// family of two series, by `gen_ai_token_type`).
    genai_duration: Histogram,
    genai_input_tokens: Histogram,
    genai_output_tokens: Histogram,
    genai_first_chunk: Histogram,
    genai_per_chunk: Histogram,
}

/// The counters and gauges kept elsewhere, read when rendering.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub pool: PoolStats,
    pub requests: u64,
    pub errors: u64,
    /// Calls the caller aborted (not failures: kept out of `errors`).
    pub aborted: u64,
    pub retries: u64,
    pub dns_lookups: u64,
    pub dns_hits: u64,
    pub limit_waits: u64,
}

impl Metrics {
    pub fn new(origin: &str) -> Self {
        Metrics::labelled(origin, None)
    }

    /// Metrics of one of several upstreams: their series carry its name too, since two
    /// upstreams may share an origin (two keys of one provider).
    pub fn labelled(origin: &str, upstream: Option<&str>) -> Self {
        let mut label = format!("origin=\"{}\"", escape(origin));
        if let Some(name) = upstream {
            label.push_str(&format!(",upstream=\"{}\"", escape(name)));
        }
        Metrics {
            origin_label: label,
            errors_by_code: Mutex::new(BTreeMap::new()),
            time_to_headers: Histogram::new(LATENCY_BUCKETS),
            time_to_first_token: Histogram::new(LATENCY_BUCKETS),
            request_duration: Histogram::new(LATENCY_BUCKETS),
            stream_tokens_per_second: Histogram::new(RATE_BUCKETS),
            genai_duration: Histogram::new(GENAI_DURATION_BUCKETS),
            genai_input_tokens: Histogram::new(GENAI_TOKEN_BUCKETS),
            genai_output_tokens: Histogram::new(GENAI_TOKEN_BUCKETS),
            genai_first_chunk: Histogram::new(GENAI_DURATION_BUCKETS),
            genai_per_chunk: Histogram::new(GENAI_CHUNK_BUCKETS),
        }
    }

    pub fn error(&self, code: &'static str) {
        let mut errors = self
            .errors_by_code
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *errors.entry(code).or_default() += 1;
    }

    pub fn headers_after(&self, elapsed: Duration) {
        self.time_to_headers.observe(elapsed.as_secs_f64());
    }

    pub fn first_token_after(&self, elapsed: Duration) {
        self.time_to_first_token.observe(elapsed.as_secs_f64());
        self.genai_first_chunk.observe(elapsed.as_secs_f64());
    }

    pub fn request_took(&self, elapsed: Duration) {
        self.request_duration.observe(elapsed.as_secs_f64());
        self.genai_duration.observe(elapsed.as_secs_f64());
    }

    /// A successful call's usage as the provider reported it.
    pub fn tokens_used(&self, input: Option<u64>, output: Option<u64>) {
        if let Some(n) = input {
            self.genai_input_tokens.observe(n as f64);
        }
        if let Some(n) = output {
            self.genai_output_tokens.observe(n as f64);
        }
    }

    /// A stream delivered `tokens` data events in `elapsed` after its first one.
    pub fn stream_rate(&self, tokens: u64, elapsed: Duration) {
        if tokens > 1 && !elapsed.is_zero() {
            self.stream_tokens_per_second
                .observe((tokens - 1) as f64 / elapsed.as_secs_f64());
            self.genai_per_chunk
                .observe(elapsed.as_secs_f64() / (tokens - 1) as f64);
        }
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self, snapshot: Snapshot) -> String {
        let labels = &self.origin_label;
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{{labels}}} {value}"
            );
        };
        counter(
            &mut out,
            "llmpool_requests_total",
            "Calls started (chat and streams).",
            snapshot.requests,
        );
        counter(
            &mut out,
            "llmpool_aborted_total",
            "Calls the caller aborted (counted apart from failures).",
            snapshot.aborted,
        );
        counter(
            &mut out,
            "llmpool_retries_total",
            "Retries made (attempts after the first).",
            snapshot.retries,
        );
        counter(
            &mut out,
            "llmpool_connections_opened_total",
            "Connections opened.",
            snapshot.pool.connections_opened,
        );
        counter(
            &mut out,
            "llmpool_connections_closed_total",
            "Connections closed.",
            snapshot.pool.connections_closed,
        );
        counter(
            &mut out,
            "llmpool_connections_reused_total",
            "Requests served by an already open connection.",
            snapshot.pool.reused,
        );
        counter(
            &mut out,
            "llmpool_limit_waits_total",
            "Calls that waited for a client-side limit (limits).",
            snapshot.limit_waits,
        );
        counter(
            &mut out,
            "llmpool_dns_lookups_total",
            "Host name lookups made for new connections.",
            snapshot.dns_lookups,
        );
        counter(
            &mut out,
            "llmpool_dns_cache_hits_total",
            "New connections whose addresses came from the DNS cache.",
            snapshot.dns_hits,
        );
        let _ = writeln!(
            out,
            "# HELP llmpool_errors_total Calls that failed, by error code.\n# TYPE llmpool_errors_total counter"
        );
        let errors = self
            .errors_by_code
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (code, count) in errors {
            let _ = writeln!(
                out,
                "llmpool_errors_total{{{labels},code=\"{code}\"}} {count}"
            );
        }
        let gauges = [
            ("connected", "Open connections.", snapshot.pool.connected),
            (
                "free",
                "Open connections without a request.",
                snapshot.pool.free,
            ),
            (
                "pending",
                "Requests waiting for their new connection to open.",
                snapshot.pool.pending,
            ),
            (
                "queued",
                "Requests waiting for a free connection.",
                snapshot.pool.queued,
            ),
            (
                "running",
                "Requests holding a connection.",
                snapshot.pool.running,
            ),
            ("size", "pending + queued + running.", snapshot.pool.size),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP llmpool_pool_{name} {help}\n# TYPE llmpool_pool_{name} gauge\nllmpool_pool_{name}{{{labels}}} {value}"
            );
        }
        self.time_to_headers.render(
            &mut out,
            "llmpool_time_to_headers_seconds",
            "Request sent to response headers.",
            labels,
        );
        self.time_to_first_token.render(
            &mut out,
            "llmpool_time_to_first_token_seconds",
            "Stream start to its first data event.",
            labels,
        );
        self.request_duration.render(
            &mut out,
            "llmpool_request_duration_seconds",
            "Call start to its end (retries included).",
            labels,
        );
        self.stream_tokens_per_second.render(
            &mut out,
            "llmpool_stream_tokens_per_second",
            "Data events per second of a stream after its first one.",
            labels,
        );
        self.genai_duration.render(
            &mut out,
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration (OpenTelemetry GenAI conventions' buckets).",
            labels,
        );
        let _ = writeln!(
            out,
            "# HELP gen_ai_client_token_usage Input and output tokens a successful call used, as the provider reported them.\n# TYPE gen_ai_client_token_usage histogram"
        );
        self.genai_input_tokens.render_series(
            &mut out,
            "gen_ai_client_token_usage",
            &format!("{labels},gen_ai_token_type=\"input\""),
        );
        self.genai_output_tokens.render_series(
            &mut out,
            "gen_ai_client_token_usage",
            &format!("{labels},gen_ai_token_type=\"output\""),
        );
        self.genai_first_chunk.render(
            &mut out,
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "Time to the first chunk of a streamed response.",
            labels,
        );
        self.genai_per_chunk.render(
            &mut out,
            "gen_ai_client_operation_time_per_output_chunk_seconds",
            "Time between chunks of a streamed response, averaged over each stream.",
            labels,
        );
        out
    }
}

/// Several expositions as one: each metric family's samples gathered under one `# HELP`/`# TYPE`
/// pair (the format allows a family only once), families in order of first appearance.
pub fn merge_expositions(texts: &[String]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut families: BTreeMap<String, (String, String)> = BTreeMap::new();
    for text in texts {
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                current = rest.split(' ').next().unwrap_or_default().to_owned();
                if !families.contains_key(&current) {
                    order.push(current.clone());
                    families.insert(current.clone(), (format!("{line}\n"), String::new()));
                }
            } else if line.starts_with("# TYPE ") {
                if let Some(family) = families.get_mut(&current) {
                    if !family.0.contains("# TYPE ") {
                        family.0.push_str(line);
                        family.0.push('\n');
                    }
                }
            } else if let Some(family) = families.get_mut(&current) {
                family.1.push_str(line);
                family.1.push('\n');
            }
        }
    }
    let mut out = String::new();
    for name in order {
        let (head, samples) = &families[&name];
        out.push_str(head);
        out.push_str(samples);
    }
    out
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new("http://h");
        for ms in [3, 30, 30, 700] {
            m.request_took(Duration::from_millis(ms));
        }
        let text = m.render(Snapshot {
            pool: PoolStats::default(),
            requests: 4,
            errors: 0,
            aborted: 0,
            retries: 0,
            dns_lookups: 0,
            dns_hits: 0,
            limit_waits: 0,
        });
        assert!(text.contains(
            "llmpool_request_duration_seconds_bucket{origin=\"http://h\",le=\"0.005\"} 1\n"
        ));
        assert!(text.contains(
            "llmpool_request_duration_seconds_bucket{origin=\"http://h\",le=\"0.05\"} 3\n"
        ));
        assert!(text.contains(
            "llmpool_request_duration_seconds_bucket{origin=\"http://h\",le=\"+Inf\"} 4\n"
        ));
        assert!(text.contains("llmpool_request_duration_seconds_count{origin=\"http://h\"} 4\n"));
        assert!(text.contains("llmpool_requests_total{origin=\"http://h\"} 4\n"));
    }

    #[test]
    fn errors_by_code_and_label_escaping() {
        let m = Metrics::new("http://we\"ird");
        m.error("ERR_HTTP_STATUS");
        m.error("ERR_HTTP_STATUS");
        m.error("ERR_TIMEOUT");
        let text = m.render(Snapshot {
            pool: PoolStats::default(),
            requests: 3,
            errors: 3,
            aborted: 0,
            retries: 0,
            dns_lookups: 0,
            dns_hits: 0,
            limit_waits: 0,
        });
        assert!(text.contains(
            "llmpool_errors_total{origin=\"http://we\\\"ird\",code=\"ERR_HTTP_STATUS\"} 2\n"
        ));
        assert!(text.contains("code=\"ERR_TIMEOUT\"} 1\n"));
    }

    #[test]
    fn merged_expositions_name_each_family_once() {
        let a = Metrics::labelled("http://h", Some("a"));
        let b = Metrics::labelled("http://h", Some("b"));
        a.error("ERR_TIMEOUT");
        let snapshot = Snapshot {
            pool: PoolStats::default(),
            requests: 1,
            errors: 0,
            aborted: 0,
            retries: 0,
            dns_lookups: 0,
            dns_hits: 0,
            limit_waits: 0,
        };
        let text = merge_expositions(&[a.render(snapshot), b.render(snapshot)]);
        assert_eq!(text.matches("# HELP llmpool_requests_total ").count(), 1);
        assert_eq!(text.matches("# TYPE llmpool_requests_total ").count(), 1);
        assert!(text.contains("llmpool_requests_total{origin=\"http://h\",upstream=\"a\"} 1\n"));
        assert!(text.contains("llmpool_requests_total{origin=\"http://h\",upstream=\"b\"} 1\n"));
        assert!(text.contains("code=\"ERR_TIMEOUT\"} 1\n"));
        // Samples follow their own family's header.
        let help = text.find("# HELP llmpool_requests_total").unwrap();
        let next = text[help + 1..].find("# HELP").unwrap() + help + 1;
        assert_eq!(
            text[help..next].matches("llmpool_requests_total{").count(),
            2
        );
    }
}
