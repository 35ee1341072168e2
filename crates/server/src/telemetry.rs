//! Logs and call metrics: one span, one log line and one count per gRPC call, with the
//! method, the status code and the latency, taken by a layer around every service, so that
//! calls refused before a handler runs (a missing API key, a body that does not decode, a
//! database known to be down) are counted and logged like every other. Handlers log
//! identifiers and reasons only: never a password, code, secret or token.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http;
use tonic::{Code, Response, Status};
use tracing::Instrument as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogConfig, LogFormat, TracingConfig};
use crate::error::{ApiError, ApiResult};
use crate::metrics::{Metrics, code_name};

/// What `init` installed that must be flushed at exit: the span exporter, when traces are on,
/// and the thread that writes the log lines (dropped last, after the exporter's last words).
#[derive(Debug, Default)]
#[must_use = "spans still batched are lost unless the guard is shut down"]
pub struct Traces(
    Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    Option<tracing_appender::non_blocking::WorkerGuard>,
);

impl Traces {
    /// Sends the spans still batched (at exit; `Drop` does it too).
    pub fn shutdown(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "traces: the last spans were not sent");
        }
    }

    /// Sends the spans batched so far now (tests read them at once).
    pub fn flush(&self) {
        if let Some(provider) = &self.0 {
            let _ = provider.force_flush();
        }
    }
}

impl Drop for Traces {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Installs the global subscriber for the binary. Returns an error if one is installed.
pub fn init(config: &LogConfig, tracing: &TracingConfig) -> Result<Traces, String> {
    let (writer, guard) = log_writer(std::io::stdout());
    let mut traces = init_with(config, tracing, writer)?;
    traces.1 = Some(guard);
    Ok(traces)
}

/// Where `init` writes log lines: on a thread of their own, to `out`, those waiting together
/// (a write call per 8 KiB, not per line); a call only formats its line. None is dropped:
/// past 16,384 lines waiting (a queue of 512 KiB, allocated at start), logging waits.
/// Dropping the guard waits up to a second for the lines queued to be written.
fn log_writer<W: std::io::Write + Send + 'static>(
    out: W,
) -> (
    tracing_appender::non_blocking::NonBlocking,
    tracing_appender::non_blocking::WorkerGuard,
) {
    tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(16_384)
        .thread_name("tollgate-logs")
        .finish(std::io::BufWriter::new(out))
}

/// Installs the global subscriber writing to `writer` (tests capture logs this way).
pub fn init_with_writer<W>(config: &LogConfig, writer: W) -> Result<(), String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let traces = init_with(config, &TracingConfig::default(), writer)?;
    drop(traces);
    Ok(())
}

/// The logs to `writer` and, with `tracing.otlp_endpoint`, the spans to an OTLP collector,
/// continuing a caller's W3C `traceparent`.
pub fn init_with<W>(
    config: &LogConfig,
    tracing: &TracingConfig,
    writer: W,
) -> Result<Traces, String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let (otel, provider) = if tracing.otlp_endpoint.is_empty() {
        (None, None)
    } else {
        use opentelemetry::trace::TracerProvider as _;
        use opentelemetry_otlp::WithExportConfig as _;
        use opentelemetry_sdk::trace::Sampler;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(tracing.otlp_endpoint.clone())
            .build()
            .map_err(|e| format!("tracing.otlp_endpoint: {e}"))?;
        let ratio = f64::from(tracing.sample_permille) / 1000.0;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(tracing.service_name.clone())
                    .build(),
            )
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("tollgate"));
        (Some(Box::new(layer) as BoxedLayer), Some(provider))
    };
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    tracing_subscriber::registry()
        .with(layers(config, writer, otel)?)
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(Traces(provider, None))
}

/// A layer of the global subscriber.
type BoxedLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The subscriber's layers: the logs to `writer`, and the spans to `otel` when traces are on,
/// each filtered by `log.level`. A list, with no empty place for traces when they are off:
/// an absent layer (`None`) counts as wanting every span, and the registry would create
/// each span the log filter leaves out (every statement's) for no layer at all.
fn layers<W>(
    config: &LogConfig,
    writer: W,
    otel: Option<BoxedLayer>,
) -> Result<Vec<BoxedLayer>, String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::FilterExt as _;
    let filter = || EnvFilter::try_new(&config.level).map_err(|e| format!("log.level: {e}"));
    // The logs leave out the database statements' spans (`sea_orm.*`, sea-orm's and the
    // calling thread's alike): a line never shows them, yet the log layer would format each
    // one's SQL for nothing, a tenth of a session validation's CPU. Traces keep them.
    // This filter enables nothing the level does not (its hint says so): without a hint the
    // combined filter's would be unknown, and every crate's trace-level spans (h2 opens
    // several per frame) would be created and filtered out one by one on every call.
    let statements = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.is_span() && meta.name().starts_with("sea_orm."))
    })
    .with_max_level_hint(tracing_subscriber::filter::LevelFilter::TRACE);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi && config.format == LogFormat::Text)
        .with_writer(writer);
    let fmt = match config.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let mut layers = vec![fmt.with_filter(filter()?.and(statements)).boxed()];
    if let Some(otel) = otel {
        layers.push(otel.with_filter(filter()?).boxed());
    }
    Ok(layers)
}

/// The W3C trace context of a call's metadata (`traceparent`, `tracestate`).
struct Metadata<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The caller's trace id, from a valid `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
fn caller_trace_id(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    (trace_id.len() == 32
        && trace_id.bytes().all(|b| b.is_ascii_hexdigit())
        && trace_id != "00000000000000000000000000000000")
        .then(|| trace_id.to_ascii_lowercase())
}

/// Runs a handler: its error becomes the status the caller sees. A database found out of
/// reach wakes the health check, so that the calls after it fail fast.
pub async fn rpc<T>(
    app: &crate::App,
    handler: impl Future<Output = ApiResult<T>>,
) -> Result<Response<T>, Status> {
    handler.await.map(Response::new).map_err(|err| {
        if matches!(err, ApiError::Unavailable(_)) {
            app.db_health.suspect();
        }
        Status::from(err)
    })
}

/// The method label of a call's path: `UserService/CreateUser` for the contract's RPCs,
/// `Health/Check` for the health service, `unknown` for a path the server does not serve
/// (labels stay a bounded set whatever a caller sends).
pub fn method_label(path: &str) -> &'static str {
    static KNOWN: OnceLock<HashMap<String, &'static str>> = OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        let mut known = HashMap::new();
        for (package, service, method) in tollgate_proto::methods().chain([
            ("grpc.health.v1", "Health", "Check"),
            ("grpc.health.v1", "Health", "Watch"),
            (
                "grpc.reflection.v1",
                "ServerReflection",
                "ServerReflectionInfo",
            ),
        ]) {
            let label: &'static str = String::leak(format!("{service}/{method}"));
            known.insert(format!("/{package}.{service}/{method}"), label);
        }
        known
    });
    known.get(path).copied().unwrap_or("unknown")
}

/// The layer that counts, logs and traces every call (`Server::layer`).
#[derive(Clone, Debug)]
pub struct RpcLayer {
    metrics: Arc<Metrics>,
}

impl RpcLayer {
    /// Counting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// [`RpcLayer`]'s service.
#[derive(Clone, Debug)]
pub struct RpcService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// The status of a response: `grpc-status` in its headers when the call ended before a
/// message (every refusal and every error of a unary call), else OK: a unary call's message
/// is complete before its headers go out, and only its trailers follow.
fn status_code(headers: &http::HeaderMap) -> Code {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32)
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for RpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let method = method_label(request.uri().path());
        // The span of the call: named after the method in traces, continuing the caller's
        // trace; the caller's name and the status are recorded as they are known. Its fields
        // name no user, token or code.
        let span = tracing::info_span!(
            "rpc",
            method,
            otel.name = method,
            otel.kind = "server",
            rpc.system = "grpc",
            caller = tracing::field::Empty,
            code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&Metadata(request.headers()))
        });
        let _ = span.set_parent(parent);
        let traced = {
            use opentelemetry::trace::TraceContextExt as _;
            let context = span.context();
            let id = context.span().span_context().trace_id();
            (id != opentelemetry::trace::TraceId::INVALID).then(|| id.to_string())
        };
        if let Some(trace_id) = traced.or_else(|| caller_trace_id(request.headers())) {
            span.record("trace_id", trace_id.as_str());
        }
        let metrics = Arc::clone(&self.metrics);
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(
            async move {
                let response = response.await;
                let code = response
                    .as_ref()
                    .map_or(Code::Internal, |r| status_code(r.headers()));
                let elapsed = started.elapsed().as_secs_f64();
                metrics.record_rpc(method, code, elapsed);
                let code = code_name(code);
                tracing::Span::current().record("code", code);
                let latency_ms = elapsed * 1_000.0;
                // Probes check health every few seconds: their lines would drown the rest.
                if method.starts_with("Health/") {
                    tracing::debug!(method, code, latency_ms, "rpc");
                } else {
                    tracing::info!(method, code, latency_ms, "rpc");
                }
                response
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use tracing::level_filters::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// The subscriber `init` installs without traces, at `level`.
    fn logs_only(level: &str) -> impl tracing::Subscriber + Send + Sync {
        let config = LogConfig {
            level: level.to_owned(),
            ..LogConfig::default()
        };
        tracing_subscriber::registry().with(layers(&config, std::io::sink, None).unwrap())
    }

    /// An output that takes its time over every write.
    #[derive(Clone, Default)]
    struct Slow(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Slow {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(std::time::Duration::from_millis(2));
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_logged_is_written_before_the_guard_goes() {
        let out = Slow::default();
        let (writer, guard) = log_writer(out.clone());
        let subscriber = tracing_subscriber::registry()
            .with(layers(&LogConfig::default(), writer, None).unwrap());
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..1_000 {
                tracing::info!(i, "a line; the buffer holds about eighty");
            }
        });
        drop(guard);
        let written = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(written.lines().count(), 1_000);
        assert!(
            written.lines().last().unwrap().contains("i=999"),
            "{written}"
        );
    }

    #[test]
    fn spans_the_level_leaves_out_are_never_created() {
        let subscriber = logs_only("info");
        assert_eq!(
            tracing::Subscriber::max_level_hint(&subscriber),
            Some(LevelFilter::INFO)
        );
        tracing::subscriber::with_default(subscriber, || {
            // As h2 opens per frame.
            assert!(tracing::trace_span!("pop_frame").is_disabled());
            assert!(tracing::debug_span!("poll").is_disabled());
            // A statement's span, which only traces would keep.
            assert!(tracing::info_span!("sea_orm.query_one").is_disabled());
            // A call's span, which the logs show around its lines.
            assert!(!tracing::info_span!("rpc").is_disabled());
        });
    }

    #[test]
    fn a_finer_level_enables_the_finer_spans_but_not_the_statements() {
        let subscriber = logs_only("info,h2=trace");
        assert_eq!(
            tracing::Subscriber::max_level_hint(&subscriber),
            Some(LevelFilter::TRACE)
        );
        tracing::subscriber::with_default(subscriber, || {
            assert!(!tracing::trace_span!(target: "h2::proto", "pop_frame").is_disabled());
            assert!(tracing::trace_span!(target: "hyper", "poll").is_disabled());
            assert!(tracing::info_span!("sea_orm.query_one").is_disabled());
        });
    }
}
