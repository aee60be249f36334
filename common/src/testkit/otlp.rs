//! A tiny OTLP/HTTP receiver for the export tests: accepts `POST /v1/traces` with a protobuf
//! `ExportTraceServiceRequest` (what `GATEHOUSE_OTLP_ENDPOINT` sends) on 127.0.0.1, decodes
//! it and keeps the spans.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::any_value::Value,
};
use prost::Message;

/// One received span, ids in lowercase hex (empty parent: a root or a remote child).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// The trace ids of the span's links (`follows_from`).
    pub link_trace_ids: Vec<String>,
    /// String and integer attributes, as text.
    pub attributes: Vec<(String, String)>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    requests: usize,
    /// Requests that were not a decodable protobuf POST to /v1/traces.
    rejected: Vec<String>,
    /// Every request's headers, lowercase names.
    headers: Vec<Vec<(String, String)>>,
}

/// The receiver; it stops when dropped.
pub struct OtlpReceiver {
    /// The base URL to put in `GATEHOUSE_OTLP_ENDPOINT`.
    pub endpoint: String,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let received = Arc::new(Mutex::new(Received::default()));
        let state = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            endpoint,
            received,
            task,
        }
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.lock().spans.clone()
    }

    /// How many export requests arrived (any path).
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// Requests that were not a well-formed protobuf export (should stay empty).
    pub fn rejected(&self) -> Vec<String> {
        self.lock().rejected.clone()
    }

    /// The headers of every request.
    pub fn headers(&self) -> Vec<Vec<(String, String)>> {
        self.lock().headers.clone()
    }

    /// Waits until `done(spans)` holds, or panics after `timeout` showing what arrived.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected spans did not arrive; got {:#?}, rejected {:?}",
                spans
                    .iter()
                    .map(|s| (&s.service, &s.name, &s.trace_id))
                    .collect::<Vec<_>>(),
                self.rejected()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn handle(
    state: &Mutex<Received>,
    request: Request<Incoming>,
) -> Response<Full<hyper::body::Bytes>> {
    let ok_path = request.method() == hyper::Method::POST && request.uri().path() == "/v1/traces";
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let what = format!("{} {} ({content_type})", request.method(), request.uri());
    let body = request.into_body().collect().await.map(|b| b.to_bytes());
    let decoded = match body {
        Ok(body) if ok_path && content_type == "application/x-protobuf" => {
            ExportTraceServiceRequest::decode(body).ok()
        }
        _ => None,
    };
    let mut received = state.lock().unwrap_or_else(|e| e.into_inner());
    received.requests += 1;
    received.headers.push(headers);
    let Some(export) = decoded else {
        received.rejected.push(what);
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(Full::default())
            .unwrap_or_default();
    };
    for resource_spans in export.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            received.spans.push(ReceivedSpan {
                service: service.clone(),
                name: span.name,
                trace_id: hex::encode(&span.trace_id),
                span_id: hex::encode(&span.span_id),
                parent_span_id: hex::encode(&span.parent_span_id),
                link_trace_ids: span
                    .links
                    .iter()
                    .map(|l| hex::encode(&l.trace_id))
                    .collect(),
                attributes: span
                    .attributes
                    .iter()
                    .filter_map(|kv| {
                        Some((kv.key.clone(), text(kv.value.as_ref()?.value.as_ref()?)?))
                    })
                    .collect(),
            });
        }
    }
    let reply = ExportTraceServiceResponse::default().encode_to_vec();
    Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(Full::new(reply.into()))
        .unwrap_or_default()
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}
