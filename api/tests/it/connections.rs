//! What a connection may cost (issue 9): the real server on a real port, driven with raw
//! TCP. Slow clients are cut off; others on the same replica are unaffected; malformed
//! framing and oversized heads get problem+json; past the connection bound, 503.

use std::{net::SocketAddr, time::Duration};

use gatehouse_common::config::ServerLimits;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::support::Harness;

const LIMITS: ServerLimits = ServerLimits {
    header_read_timeout: Duration::from_secs(1),
    idle_timeout: Duration::from_secs(2),
    body_read_timeout: Duration::from_secs(1),
    body_min_bytes_per_sec: 1000,
    max_connections: 6,
    max_header_bytes: 4096,
};

async fn serve(h: &Harness) -> (SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let token = CancellationToken::new();
    let app = h.app.clone();
    let stop = token.clone();
    tokio::spawn(async move { gatehouse_api::server::serve(listener, app, LIMITS, stop).await });
    (addr, token)
}

/// Reads until the server closes the connection (or `within` passes); returns what arrived
/// and how long it took.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> (String, Duration, bool) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(started + within, stream.read(&mut buf)).await {
            Err(_) => {
                return (
                    String::from_utf8_lossy(&got).into(),
                    started.elapsed(),
                    false,
                );
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&got).into(),
                    started.elapsed(),
                    true,
                );
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn healthz_ok(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let (text, _, closed) = until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed && text.starts_with("HTTP/1.1 200"), "{text}");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_cut_off_and_others_are_unaffected() {
    let h = Harness::new(&[], false).await;
    let (addr, token) = serve(&h).await;
    let key = h.key.clone();

    // 1. An idle connection: 408 problem+json, then closed, within the header timeout.
    let idle = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        until_closed(&mut s, Duration::from_secs(10)).await
    });
    // 2. A request line alone.
    let line_only = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .expect("write");
        until_closed(&mut s, Duration::from_secs(10)).await
    });
    // 3. Headers dribbled one line at a time.
    let dribble = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .expect("write");
        let started = Instant::now();
        for i in 0..20 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            if s.write_all(format!("x-slow-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
        let (text, _, closed) = until_closed(&mut s, Duration::from_secs(10)).await;
        (text, started.elapsed(), closed)
    });
    // 4. An authenticated body at one byte per 400 ms.
    let slow_body = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST /v1/jobs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.expect("write");
        let started = Instant::now();
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            if s.write_all(b" ").await.is_err() {
                break;
            }
            if started.elapsed() > Duration::from_secs(8) {
                break;
            }
        }
        let (text, _, closed) = until_closed(&mut s, Duration::from_secs(5)).await;
        (text, started.elapsed(), closed)
    });
    // 5. A chunked body at one byte per 400 ms, unauthenticated.
    let slow_chunks = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            b"POST /v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .await
        .expect("write");
        let started = Instant::now();
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            if s.write_all(b"1\r\n{\r\n").await.is_err()
                || started.elapsed() > Duration::from_secs(8)
            {
                break;
            }
        }
        let (text, _, closed) = until_closed(&mut s, Duration::from_secs(5)).await;
        (text, started.elapsed(), closed)
    });

    // Meanwhile the replica serves everyone else promptly.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        assert!(healthz_ok(addr).await < Duration::from_secs(1));
    }

    let (text, took, closed) = idle.await.expect("task");
    assert!(closed, "idle connection still open after {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains("application/problem+json") && text.contains("\"code\":\"request_timeout\""),
        "{text}"
    );

    let (text, took, closed) = line_only.await.expect("task");
    assert!(closed && took < Duration::from_secs(3), "{took:?} {text}");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");

    let (_, took, closed) = dribble.await.expect("task");
    assert!(
        closed && took < Duration::from_secs(4),
        "dribbled headers: {took:?}"
    );

    let (text, took, closed) = slow_body.await.expect("task");
    assert!(
        closed && took < Duration::from_secs(8),
        "slow body: {took:?} {text}"
    );
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");

    let (text, took, closed) = slow_chunks.await.expect("task");
    assert!(
        closed && took < Duration::from_secs(8),
        "slow chunks: {took:?} {text}"
    );

    token.cancel();
    h.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_get_problem_json_and_the_connection_bound_holds() {
    let h = Harness::new(&[], false).await;
    let (addr, token) = serve(&h).await;

    for (raw, status) in [
        (b"THIS IS NOT HTTP\r\n\r\n".to_vec(), "400"),
        (
            b"POST /v1/jobs HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello".to_vec(),
            "400",
        ),
        (
            b"POST /v1/jobs HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n".to_vec(),
            "400",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(8000))
                .into_bytes(),
            "431",
        ),
    ] {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let _ = s.write_all(&raw).await;
        let (text, _, closed) = until_closed(&mut s, Duration::from_secs(5)).await;
        assert!(closed, "still open");
        assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
        assert!(text.contains("content-type: application/problem+json"), "{text}");
        assert!(text.contains("\"code\":"), "{text}");
    }

    // Fill the replica's connection bound with idle connections: the next one gets 503.
    let mut held = Vec::new();
    for _ in 0..LIMITS.max_connections {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(addr).await.expect("connect");
    let (text, took, closed) = until_closed(&mut extra, Duration::from_secs(5)).await;
    assert!(closed && took < Duration::from_millis(900), "{took:?}");
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("retry-after: 1"), "{text}");
    // Once the idle ones are cut by the header timeout, the replica serves again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    healthz_ok(addr).await;

    token.cancel();
    h.teardown().await;
}
