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

use crate::config::{LogConfig, LogFormat};
use crate::error::{ApiError, ApiResult};
use crate::metrics::{Metrics, code_name};

/// Installs the global subscriber for the binary. Returns an error if one is installed.
pub fn init(config: &LogConfig) -> Result<(), String> {
    init_with_writer(config, std::io::stdout)
}

/// Installs the global subscriber writing to `writer` (tests capture logs this way).
pub fn init_with_writer<W>(config: &LogConfig, writer: W) -> Result<(), String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&config.level).map_err(|e| format!("log.level: {e}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi && config.format == LogFormat::Text)
        .with_writer(writer);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| e.to_string())
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
        let method = method_label(request.uri().path());
        let span = tracing::info_span!("rpc", method);
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
