//! Where the core's `tracing` events go. Two sinks, either or both:
//!
//! - `LLMPOOL_LOG` (env-filter syntax, e.g. `debug` or `llmpool=trace`): printed to stderr, for
//!   quick debugging.
//! - A client's `logger` option (pino's shape: `logger.warn(fields, message)`): each event whose
//!   `origin` is one of the client's upstreams (or that names no origin, as the shared store's
//!   do) is handed to it on the JS thread as structured fields.
//!
//! Events carry origins, codes, timings and counts, never headers or bodies, so the API key
//! cannot appear in them. While no logger is registered (and `LLMPOOL_LOG` is unset) every event
//! site is off, as with no subscriber at all.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// `logger(level, message, fieldsJson)` on the JS side (`index.js` calls the logger's method).
type LogArgs = FnArgs<(String, String, String)>;
pub type LogFn<'scope> = Function<'scope, LogArgs, ()>;
type LogSink = ThreadsafeFunction<LogLine, (), LogArgs, Status, false, true>;

/// One event, ready for JS.
pub struct LogLine {
    level: &'static str,
    message: String,
    fields: String,
}

struct Registered {
    id: u64,
    origins: Vec<String>,
    sink: LogSink,
}

static LOGGERS: RwLock<Vec<Arc<Registered>>> = RwLock::new(Vec::new());
static ANY_LOGGER: AtomicBool = AtomicBool::new(false);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Registers a client's logger for events of `origins`; returns the id to unregister it with.
/// The threadsafe function is weak: a logger never keeps Node alive.
pub fn register(origins: Vec<String>, logger: LogFn<'_>) -> Result<u64> {
    let sink = logger
        .build_threadsafe_function::<LogLine>()
        .weak::<true>()
        .callee_handled::<false>()
        .build_callback(|ctx| {
            let LogLine {
                level,
                message,
                fields,
            } = ctx.value;
            Ok(FnArgs::from((level.to_owned(), message, fields)))
        })?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut loggers = LOGGERS.write().unwrap_or_else(|e| e.into_inner());
    loggers.push(Arc::new(Registered { id, origins, sink }));
    drop(loggers);
    loggers_changed(true);
    Ok(id)
}

pub fn unregister(id: u64) {
    let mut loggers = LOGGERS.write().unwrap_or_else(|e| e.into_inner());
    loggers.retain(|l| l.id != id);
    let any = !loggers.is_empty();
    drop(loggers);
    loggers_changed(any);
}

/// Whether any logger listens now. Every event site caches its interest: they are asked again
/// only when this changes, so that with no logger an event (some fire on every call, under the
/// pool's lock) costs what it costs with no subscriber at all.
fn loggers_changed(any: bool) {
    if ANY_LOGGER.swap(any, Ordering::AcqRel) != any {
        tracing::callsite::rebuild_interest_cache();
    }
}

/// Lets events through to the JS loggers while any is registered (debug and above).
struct WhileLogging;

impl<S: Subscriber> tracing_subscriber::layer::Filter<S> for WhileLogging {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        wanted(meta)
    }

    fn callsite_enabled(&self, meta: &'static tracing::Metadata<'static>) -> Interest {
        if wanted(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(if ANY_LOGGER.load(Ordering::Acquire) {
            LevelFilter::DEBUG
        } else {
            LevelFilter::OFF
        })
    }
}

fn wanted(meta: &tracing::Metadata<'_>) -> bool {
    ANY_LOGGER.load(Ordering::Acquire) && meta.is_event() && *meta.level() <= Level::DEBUG
}

/// Hands events to the registered loggers.
struct JsLoggers;

impl<S: Subscriber> Layer<S> for JsLoggers {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warn",
            Level::INFO => "info",
            _ => "debug",
        };
        let origin = fields
            .map
            .get("origin")
            .and_then(Value::as_str)
            .map(str::to_owned);
        fields.map.insert(
            "target".into(),
            Value::String(event.metadata().target().to_owned()),
        );
        let text = Value::Object(fields.map).to_string();
        let loggers = LOGGERS.read().unwrap_or_else(|e| e.into_inner());
        for logger in loggers.iter() {
            let wanted = origin
                .as_deref()
                .is_none_or(|o| logger.origins.iter().any(|mine| mine == o));
            if wanted {
                logger.sink.call(
                    LogLine {
                        level,
                        message: fields.message.clone(),
                        fields: text.clone(),
                    },
                    ThreadsafeFunctionCallMode::NonBlocking,
                );
            }
        }
    }
}

/// An event's fields as JSON, its message apart.
#[derive(Default)]
struct Fields {
    message: String,
    map: Map<String, Value>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.map
                .insert(field.name().to_owned(), Value::String(text));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.map
                .insert(field.name().to_owned(), Value::String(value.to_owned()));
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.map.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.map.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.map.insert(field.name().to_owned(), Value::Bool(value));
    }
}

#[napi_derive::module_init]
fn init_logging() {
    let stderr = std::env::var("LLMPOOL_LOG").ok().map(|directives| {
        let filter = tracing_subscriber::EnvFilter::try_new(&directives)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_filter(filter)
    });
    let loggers = JsLoggers.with_filter(WhileLogging);
    // Another subscriber may already be installed by the host process: then it wins.
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(loggers)
        .try_init();
}
