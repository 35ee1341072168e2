//! Distributed traces: with `[tracing] otlp_endpoint` set, the spans of a login whose request
//! carried a W3C `traceparent` reach an OTLP collector (the collector's own gRPC service,
//! served in this test) in the caller's trace: the call's span under the caller's, the
//! database statements and the password hash under it; with the method, the code and the
//! caller's name as attributes, and no password, email or token anywhere. The log lines of
//! the call carry the trace id. A session's validation on PostgreSQL, whose one statement
//! runs on the connections storage holds itself, is traced the same way. Its own test
//! binary: it installs the global subscriber.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed test"
)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use server::config::{LogConfig, LogFormat, TracingConfig};
use tollgate_e2e::{Backend, TestServer, password_login};
use tollgate_proto::v1::{self, authenticate_response};

/// The collector: every export it received.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    fn spans(&self) -> Vec<Span> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .flat_map(|export| &export.resource_spans)
            .flat_map(|resource| &resource.scope_spans)
            .flat_map(|scope| scope.spans.clone())
            .collect()
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `request` carrying a W3C `traceparent` of `trace_id`, under the caller's span `parent_id`.
fn in_trace<T>(body: T, trace_id: &str, parent_id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(body);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
    );
    request
}

/// The spans exported so far once one is named `name` (the batch goes out on flush).
async fn spans_with(
    collector: &Collector,
    traces: &server::telemetry::Traces,
    name: &str,
) -> Vec<Span> {
    let mut spans = Vec::new();
    for _ in 0..50 {
        traces.flush();
        spans = collector.spans();
        if spans.iter().any(|s| s.name == name) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    spans
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            Value::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_is_traced_in_the_callers_trace() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let capture = Capture::default();
    let sink = capture.clone();
    let traces = server::telemetry::init_with(
        &LogConfig {
            format: LogFormat::Json,
            level: "info".into(),
        },
        &TracingConfig {
            otlp_endpoint: format!("http://{address}"),
            ..TracingConfig::default()
        },
        move || sink.clone(),
    )
    .unwrap();

    const EMAIL: &str = "traced@example.com";
    const PASSWORD: &str = "a-secret-traced-passphrase";
    let server = TestServer::start(Backend::Sqlite).await;
    server.create_user(EMAIL, PASSWORD).await;
    // The caller's trace: its span is the parent of Tollgate's.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let request = in_trace(password_login(EMAIL, PASSWORD, ""), trace_id, parent_id);
    let answer = server
        .authentication()
        .await
        .authenticate(request)
        .await
        .unwrap()
        .into_inner();
    let Some(authenticate_response::Result::Authenticated(session)) = answer.result else {
        panic!("{answer:?}")
    };
    server.stop().await.unwrap();

    let spans = spans_with(&collector, &traces, "AuthenticationService/Authenticate").await;
    let call = spans
        .iter()
        .find(|s| s.name == "AuthenticationService/Authenticate")
        .unwrap_or_else(|| {
            let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
            panic!("no span of the call among {names:?}")
        });
    assert_eq!(hex(&call.trace_id), trace_id, "the caller's trace");
    assert_eq!(
        hex(&call.parent_span_id),
        parent_id,
        "under the caller's span"
    );
    assert_eq!(attribute(call, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(attribute(call, "code").as_deref(), Some("OK"));
    assert_eq!(attribute(call, "caller").as_deref(), Some("local"));
    // Its children: the password hash (and its wait) and the database statements.
    let children: Vec<&Span> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == trace_id && s.span_id != call.span_id)
        .collect();
    let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"password.hash"), "{names:?}");
    assert!(names.contains(&"password.queue_wait"), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("sea_orm.")),
        "a database statement: {names:?}"
    );
    // No secret in any span, name or attribute.
    let everything = format!("{spans:?}");
    for secret in [PASSWORD, EMAIL, session.token.as_str()] {
        assert!(!everything.contains(secret), "{secret} in the spans");
    }
    // The call's log line carries the trace id.
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.lines().any(|line| line.contains("\"message\":\"rpc\"")
            && line.contains("AuthenticationService/Authenticate")
            && line.contains(trace_id)),
        "{logs}"
    );

    // On PostgreSQL a validation's one statement runs on a held connection, with the
    // validations that came at the same time (here none): its span is the call's child,
    // named and shaped as sea-orm's, with the number of reads it ran.
    let server = TestServer::start(Backend::Postgres).await;
    server.create_user(EMAIL, PASSWORD).await;
    let authenticate_response::Result::Authenticated(session) =
        server.first_step(password_login(EMAIL, PASSWORD, "")).await
    else {
        panic!("no session")
    };
    let trace_id = "5cf92f3577b34da6a3ce929d0e0e4737";
    let request = in_trace(
        v1::ValidateSessionRequest {
            token: session.token.clone(),
        },
        trace_id,
        parent_id,
    );
    server
        .sessions()
        .await
        .validate_session(request)
        .await
        .unwrap();
    server.stop().await.unwrap();
    let spans = spans_with(&collector, &traces, "SessionService/ValidateSession").await;
    let call = spans
        .iter()
        .find(|s| s.name == "SessionService/ValidateSession" && hex(&s.trace_id) == trace_id)
        .expect("the validation's span");
    let statements: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == call.span_id && s.name.starts_with("sea_orm."))
        .collect();
    assert_eq!(statements.len(), 1, "one statement: {statements:?}");
    let statement = statements[0];
    assert_eq!(statement.name, "sea_orm.query_all");
    assert_eq!(
        attribute(statement, "db.operation.batch.size").as_deref(),
        Some("1")
    );
    assert_eq!(
        attribute(statement, "db.system").as_deref(),
        Some("postgresql")
    );
    assert!(
        attribute(statement, "db.statement").is_some_and(|sql| sql.contains("sessions.token_hash")),
        "{statement:?}"
    );
    assert!(!format!("{spans:?}").contains(session.token.as_str()));
    drop(traces);
}
