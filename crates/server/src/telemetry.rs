//! Logs: one span and one line per RPC with the method, the status code and the latency.
//! Handlers log identifiers and reasons only: never a password, code, secret or token.

use std::future::Future;
use std::time::Instant;

use tonic::{Code, Response, Status};
use tracing::Instrument as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogConfig, LogFormat};
use crate::error::ApiResult;

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

/// Runs a handler inside a span named after the RPC and logs its outcome and latency.
pub async fn rpc<T>(
    app: &crate::App,
    method: &'static str,
    handler: impl Future<Output = ApiResult<T>>,
) -> Result<Response<T>, Status> {
    let span = tracing::info_span!("rpc", method);
    async move {
        let started = Instant::now();
        let result = handler.await.map(Response::new).map_err(Status::from);
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        let elapsed = started.elapsed().as_secs_f64();
        app.metrics.record_rpc(method, code, elapsed);
        let latency_ms = elapsed * 1_000.0;
        tracing::info!(method, code = ?code, latency_ms, "rpc");
        result
    }
    .instrument(span)
    .await
}
