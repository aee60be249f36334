//! The HTTP server around the router: what a connection may cost this replica.
//!
//! - **Connections** are bounded (`GATEHOUSE_MAX_CONNECTIONS`); one over the bound gets a
//!   `503` problem+json and is closed at once.
//! - **The first request head** must arrive within `GATEHOUSE_HEADER_READ_TIMEOUT_SECS` of the
//!   connection (an idle connection, a request line alone, headers dribbled line by line are
//!   all cut) and fit in `GATEHOUSE_MAX_HEADER_BYTES`. It is read and checked here, before
//!   hyper sees it, so malformed framing gets a problem+json `400`/`431`, not an empty body.
//! - **Later requests on a kept-alive connection**: hyper closes a connection whose next
//!   request head has not arrived within `GATEHOUSE_IDLE_TIMEOUT_SECS`.
//! - **Bodies** must keep arriving: once `GATEHOUSE_BODY_READ_TIMEOUT_SECS` have passed, a
//!   body still below `GATEHOUSE_BODY_MIN_BYTES_PER_SEC` on average is cut (`408`). A large
//!   upload at a healthy rate is never cut; one byte every five seconds is.
//! - **Responses**: a client that stops reading (a write stalled for
//!   `GATEHOUSE_IDLE_TIMEOUT_SECS`) loses its connection.
//!
//! Graceful shutdown: on the token, the listener stops accepting and every connection
//! finishes its in-flight request, then closes.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{Request, StatusCode},
};
use bytes::{Buf, Bytes};
use gatehouse_common::config::ServerLimits;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::{Instant, Sleep},
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::error::plain_problem;

/// Serves `app` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("gatehouse_api_connections_rejected_total", "reason" => "limit")
                .increment(1);
            connections.spawn(refuse(
                stream,
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections to this replica; retry shortly",
            ));
            continue;
        };
        let app = app.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            metrics::gauge!("gatehouse_api_connections").increment(1.0);
            connection(stream, peer, app, limits, shutdown).await;
            metrics::gauge!("gatehouse_api_connections").decrement(1.0);
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn refuse(mut stream: TcpStream, status: StatusCode, detail: &str) {
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        write_problem(&mut stream, status, detail),
    )
    .await;
    let _ = stream.shutdown().await;
}

/// Writes a complete `Connection: close` problem+json response on a raw stream.
async fn write_problem(stream: &mut TcpStream, status: StatusCode, detail: &str) -> io::Result<()> {
    let response = plain_problem(status, detail);
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        head.push_str("retry-after: 1\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.flush().await
}

/// What reading the first request head found.
enum Head {
    /// A well-formed head (the bytes read so far, possibly with some body).
    Ready(Vec<u8>),
    /// The peer closed before sending anything.
    Closed,
    /// Refuse with this status and detail.
    Refuse(StatusCode, &'static str),
}

async fn read_first_head(stream: &mut TcpStream, limits: &ServerLimits) -> Head {
    let mut buf = Vec::with_capacity(1024);
    let deadline = Instant::now() + limits.header_read_timeout;
    loop {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await;
        let n = match read {
            Err(_) => {
                metrics::counter!("gatehouse_api_connections_rejected_total", "reason" => "header_timeout")
                    .increment(1);
                return if buf.is_empty() {
                    Head::Refuse(StatusCode::REQUEST_TIMEOUT, "no request arrived in time")
                } else {
                    Head::Refuse(
                        StatusCode::REQUEST_TIMEOUT,
                        "the request head did not arrive in time",
                    )
                };
            }
            Ok(Err(_)) | Ok(Ok(0)) if buf.is_empty() => return Head::Closed,
            Ok(Err(_)) | Ok(Ok(0)) => return Head::Closed,
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                if head_len > limits.max_header_bytes {
                    return Head::Refuse(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "the request head is larger than GATEHOUSE_MAX_HEADER_BYTES allows",
                    );
                }
                return match check_framing(&request) {
                    Ok(()) => Head::Ready(buf),
                    Err(detail) => Head::Refuse(StatusCode::BAD_REQUEST, detail),
                };
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > limits.max_header_bytes {
                    return Head::Refuse(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "the request head is larger than GATEHOUSE_MAX_HEADER_BYTES allows",
                    );
                }
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Head::Refuse(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "the request has too many header fields",
                );
            }
            Err(_) => return Head::Refuse(StatusCode::BAD_REQUEST, "malformed request head"),
        }
    }
}

/// The framing rules hyper enforces, checked here so their refusal is problem+json:
/// one `Content-Length` value (repeated identically at most), digits only; a
/// `Transfer-Encoding` must end in `chunked`; not both.
fn check_framing(request: &httparse::Request<'_, '_>) -> Result<(), &'static str> {
    let mut length: Option<&[u8]> = None;
    let mut chunked = false;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = trim(header.value);
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) || value.len() > 19 {
                return Err("invalid Content-Length");
            }
            if length.is_some_and(|l| l != value) {
                return Err("conflicting Content-Length values");
            }
            length = Some(value);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            let value =
                std::str::from_utf8(header.value).map_err(|_| "invalid Transfer-Encoding")?;
            let last = value.rsplit(',').next().unwrap_or("").trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return Err("unsupported Transfer-Encoding (the last coding must be chunked)");
            }
            chunked = true;
        }
    }
    if chunked && length.is_some() {
        return Err("both Content-Length and Transfer-Encoding");
    }
    if request.version != Some(1) && request.version != Some(0) {
        return Err("unsupported HTTP version");
    }
    Ok(())
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &value[start..end]
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let prefix = match read_first_head(&mut stream, &limits).await {
        Head::Ready(prefix) => prefix,
        Head::Closed => return,
        Head::Refuse(status, detail) => {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                write_problem(&mut stream, status, detail),
            )
            .await;
            let _ = stream.shutdown().await;
            return;
        }
    };
    let io = TokioIo::new(GuardedIo::new(
        Bytes::from(prefix),
        stream,
        limits.idle_timeout,
    ));
    let body_limits = limits;
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let app = app.clone();
        async move {
            let mut request = request.map(|body| Body::new(DeadlineBody::new(body, &body_limits)));
            request.extensions_mut().insert(ConnectInfo(peer));
            app.oneshot(request).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192) * 2)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The socket, with the bytes already read for the first head replayed first, and a
/// watchdog on writes: one pending for longer than the idle timeout fails the connection.
struct GuardedIo {
    prefix: Bytes,
    stream: TcpStream,
    idle: Duration,
    stall: Option<Pin<Box<Sleep>>>,
}

impl GuardedIo {
    fn new(prefix: Bytes, stream: TcpStream, idle: Duration) -> Self {
        Self {
            prefix,
            stream,
            idle,
            stall: None,
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, data) {
            Poll::Ready(result) => {
                this.stall = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let idle = this.idle;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if stall.as_mut().poll(cx).is_ready() {
                    metrics::counter!("gatehouse_api_connections_rejected_total", "reason" => "write_stalled")
                        .increment(1);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading the response",
                    )));
                }
                Poll::Pending
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The error a cut body reports (see [`is_body_timeout`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body arrived too slowly (GATEHOUSE_BODY_READ_TIMEOUT_SECS / GATEHOUSE_BODY_MIN_BYTES_PER_SEC)"
)]
pub struct BodyTimeout;

/// Whether a body read failed because [`DeadlineBody`] cut it.
pub fn is_body_timeout(error: &dyn std::error::Error) -> bool {
    let mut current: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = current {
        if e.to_string().contains("arrived too slowly") {
            return true;
        }
        current = e.source();
    }
    false
}

pin_project! {
    /// A request body that must keep up a minimum average rate once its grace period is
    /// over (see the module docs).
    struct DeadlineBody {
        #[pin]
        inner: Incoming,
        started: Instant,
        grace: Duration,
        min_rate: u64,
        received: u64,
        #[pin]
        check: Sleep,
    }
}

impl DeadlineBody {
    fn new(inner: Incoming, limits: &ServerLimits) -> Self {
        let started = Instant::now();
        Self {
            inner,
            started,
            grace: limits.body_read_timeout,
            min_rate: limits.body_min_bytes_per_sec.max(1),
            received: 0,
            check: tokio::time::sleep_until(started + limits.body_read_timeout),
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.as_mut().poll_frame(cx) {
            if let Some(Ok(frame)) = &frame
                && let Some(data) = frame.data_ref()
            {
                *this.received += data.len() as u64;
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        loop {
            ready!(this.check.as_mut().poll(cx));
            // The body may go on as long as it has averaged at least `min_rate` since it
            // started; the next check is when the bytes received so far would fall below it.
            let now = Instant::now();
            let allowed = Duration::from_secs_f64(*this.received as f64 / *this.min_rate as f64);
            let until = (*this.started + (*this.grace).max(allowed)).max(now);
            if until <= now {
                metrics::counter!("gatehouse_api_connections_rejected_total", "reason" => "body_timeout")
                    .increment(1);
                return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
            }
            this.check.as_mut().reset(until);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
