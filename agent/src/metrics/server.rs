//! A small HTTP/1.1 server for `/metrics`, `/healthz` and `/ready`.
//!
//! One task per connection, one request per connection (`Connection: close`), bounded in
//! everything: at most [`MAX_CONNECTIONS`] at once (more are closed at once), a request head
//! of at most [`MAX_HEAD`] bytes read within [`READ_TIMEOUT`], the answer written within
//! [`WRITE_TIMEOUT`]. A slow or silent client holds only its own task; the event loop never
//! waits for one. Whatever a client sends gets an HTTP status, never a panic.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use super::{
    exposition::CONTENT_TYPE,
    render::{render, ProcessStats},
    Shared,
};

/// Connections served at once; more are closed unanswered.
pub const MAX_CONNECTIONS: usize = 16;
/// Longest request head (request line and headers).
pub const MAX_HEAD: usize = 8192;
/// Time a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to take the answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr` (synchronously, so a taken address is known before the programs load).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// Accepts connections until the task is aborted.
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut accept_errors = 0_u64;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Over the limit: closed without an answer (the client retries later).
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    continue;
                };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    connection(stream, &shared).await;
                    drop(slot);
                });
            }
            Err(err) => {
                // Out of descriptors, say: log now and then, pause, go on.
                accept_errors = accept_errors.saturating_add(1);
                if accept_errors.is_power_of_two() {
                    log::warn!("metrics endpoint: accept: {err} ({accept_errors} so far)");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// An answer: status, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// `HEAD`: headers only.
    pub head_only: bool,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            head_only: false,
        }
    }

    /// The bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Unknown",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

/// What a request asks for, once its head is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Get {
        path: String,
        head_only: bool,
    },
    /// Another method.
    Method,
    /// Not HTTP/1.x.
    Version,
    Malformed,
}

/// Parses a request head (everything before the blank line).
pub fn parse_head(head: &[u8]) -> Request {
    let Ok(head) = std::str::from_utf8(head) else {
        return Request::Malformed;
    };
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Malformed;
    };
    if method.is_empty() || !target.starts_with('/') {
        return Request::Malformed;
    }
    if !version.starts_with("HTTP/1.") {
        return if version.starts_with("HTTP/") {
            Request::Version
        } else {
            Request::Malformed
        };
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    match method {
        "GET" | "HEAD" => Request::Get {
            path: path.to_owned(),
            head_only: method == "HEAD",
        },
        _ => Request::Method,
    }
}

/// Where the blank line that ends a request head starts, and its length.
fn end_of_head(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Reads a request head: `Ok(None)` when the client went away without sending one.
async fn read_head(stream: &mut TcpStream) -> Result<Option<Vec<u8>>, u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0_u8; 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => n,
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(end) = end_of_head(&buf) {
            buf.truncate(end);
            return Ok(Some(buf));
        }
        if buf.len() > MAX_HEAD {
            return Err(431);
        }
    }
}

async fn connection(mut stream: TcpStream, shared: &Shared) {
    let response = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => Response::text(408, "request timeout\n"),
        Ok(Err(status)) => Response::text(status, "request head too large\n"),
        Ok(Ok(None)) => return,
        Ok(Ok(Some(head))) => respond(parse_head(&head), shared).await,
    };
    let bytes = response.encode();
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await;
}

async fn respond(request: Request, shared: &Shared) -> Response {
    let (path, head_only) = match request {
        Request::Get { path, head_only } => (path, head_only),
        Request::Method => return Response::text(405, "only GET and HEAD\n"),
        Request::Version => return Response::text(505, "HTTP/1.x only\n"),
        Request::Malformed => return Response::text(400, "bad request\n"),
    };
    let mut response = match path.as_str() {
        "/metrics" => Response {
            status: 200,
            content_type: CONTENT_TYPE,
            body: metrics_page(shared).await,
            head_only: false,
        },
        "/healthz" | "/livez" => Response::text(200, "ok\n"),
        "/ready" | "/readyz" => {
            if shared.ready.load(std::sync::atomic::Ordering::Acquire) {
                Response::text(200, "ready\n")
            } else {
                Response::text(503, "not ready: the programs are not attached\n")
            }
        }
        "/" => Response::text(
            200,
            "egret\n/metrics  Prometheus metrics\n/healthz  200 while egret runs\n/ready    200 once the programs are attached\n",
        ),
        _ => Response::text(404, "not found: try /metrics, /healthz or /ready\n"),
    };
    response.head_only = head_only;
    response
}

/// Asks the event loop for fresh counters (it answers after its next drain) and renders
/// them; the last ones if it does not answer in time.
async fn metrics_page(shared: &Shared) -> String {
    let mut snapshot = shared.snapshot.clone();
    snapshot.mark_unchanged();
    shared
        .wanted
        .store(true, std::sync::atomic::Ordering::Release);
    let _ = tokio::time::timeout(shared.freshness, snapshot.changed()).await;
    let current = Arc::clone(&snapshot.borrow_and_update());
    render(&current, &shared.info, &ProcessStats::read())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::metrics::{Snapshot, StaticInfo};

    #[test]
    fn request_heads() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x"),
            Request::Get {
                path: "/metrics".into(),
                head_only: false
            }
        );
        assert_eq!(
            parse_head(b"HEAD /ready?x=1 HTTP/1.0"),
            Request::Get {
                path: "/ready".into(),
                head_only: true
            }
        );
        assert_eq!(parse_head(b"POST /metrics HTTP/1.1"), Request::Method);
        assert_eq!(parse_head(b"GET /metrics HTTP/2.0"), Request::Version);
        for bad in [
            &b""[..],
            b"GET",
            b"GET /metrics",
            b"GET metrics HTTP/1.1",
            b"GET /metrics HTTP/1.1 extra",
            b"GET /metrics FTP/1.1",
            b"\xff\xfe /metrics HTTP/1.1",
            b" / HTTP/1.1",
        ] {
            assert_eq!(parse_head(bad), Request::Malformed, "{bad:?}");
        }
    }

    #[test]
    fn responses() {
        let r = Response::text(405, "no\n");
        let text = String::from_utf8(r.encode()).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nConnection: close\r\nAllow: GET, HEAD\r\n\r\nno\n"
        );
        let mut r = Response::text(200, "ok\n");
        r.head_only = true;
        let text = String::from_utf8(r.encode()).unwrap();
        assert!(
            text.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn head_ends() {
        assert_eq!(end_of_head(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(20));
        assert_eq!(end_of_head(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(end_of_head(b"GET / HTTP/1.1\r\n"), None);
    }

    fn shared() -> (Arc<Shared>, tokio::sync::watch::Sender<Arc<Snapshot>>) {
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(Snapshot::default()));
        let shared = Arc::new(Shared {
            snapshot: rx,
            wanted: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            info: StaticInfo::new(),
            freshness: Duration::from_millis(200),
        });
        (shared, tx)
    }

    /// Sends `request` raw and returns the whole answer.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn serves_routes_and_survives_bad_and_slow_clients() {
        let (shared, tx) = shared();
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(serve(listener, Arc::clone(&shared)));

        // Silent clients hold their own connection only.
        let mut silent = Vec::new();
        for _ in 0..3 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut partial = TcpStream::connect(addr).await.unwrap();
        partial.write_all(b"GET /metr").await.unwrap();

        let r = exchange(addr, b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        shared.ready.store(true, Ordering::Release);
        let r = exchange(addr, b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        let r = exchange(addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nok\n"),
            "{r}"
        );
        let r = exchange(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
        let r = exchange(addr, b"GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = exchange(addr, b"\x00\x01garbage\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        let huge = vec![b'a'; MAX_HEAD + 100];
        let r = exchange(addr, &huge).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");

        // A scrape asks for a snapshot; the "event loop" answers it.
        let loop_side = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                while !shared.wanted.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let mut snapshot = Snapshot::default();
                snapshot.metrics.events_received = 77;
                tx.send_replace(Arc::new(snapshot));
                tx
            })
        };
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            r.starts_with(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            ),
            "{r}"
        );
        assert!(r.contains("\negret_events_received_total 77\n"), "{r}");
        let tx = loop_side.await.unwrap();
        // Nobody answers: the last snapshot, after the freshness wait.
        let r = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        drop(tx);
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.contains("\negret_events_received_total 77\n"), "{r}");

        drop(silent);
        drop(partial);
        task.abort();
    }

    #[tokio::test]
    async fn too_many_connections_are_closed_not_queued() {
        let (shared, _tx) = shared();
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(serve(listener, shared));
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        // Let the server accept them all.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await;
        let mut out = Vec::new();
        let _ = extra.read_to_end(&mut out).await;
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        // Once they go, it answers again.
        drop(held);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        task.abort();
    }
}
