//! Minimal unary gRPC over HTTP/2 on a unix socket: enough to ask containerd and CRI runtimes
//! one question at a time.
//!
//! A call is a `POST /<package>.<Service>/<Method>` with `content-type: application/grpc`, one
//! length-prefixed protobuf message as the body, and the answer's status in the `grpc-status`
//! trailer (or header, for a trailers-only answer). The messages are hand-written `prost`
//! structs with only the fields egret reads (unknown fields are skipped), so building needs no
//! `protoc`. Every size is bounded; nothing here panics on what the peer sends.

use std::{io, path::Path, time::Duration};

use bytes::{BufMut as _, Bytes, BytesMut};
use h2::{client::SendRequest, RecvStream};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use tokio::{net::UnixStream, task::JoinHandle};

/// Bound on one response message (containerd's own default limit is 16 MiB; a container
/// record with its OCI spec is tens of kilobytes).
pub const MAX_MESSAGE: usize = 4 << 20;

/// `NOT_FOUND`.
pub const NOT_FOUND: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("connecting to {path}: {source}")]
    Connect { path: String, source: io::Error },
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
    #[error("metadata {0:?} is not a valid header name or value")]
    Metadata(String),
    #[error("the server answered HTTP {0}")]
    HttpStatus(u16),
    #[error("gRPC status {code}: {message}")]
    Status { code: u32, message: String },
    #[error("malformed gRPC response: {0}")]
    Malformed(&'static str),
    #[error("gRPC response larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the response message did not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl GrpcError {
    /// `true` for the `NOT_FOUND` status.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { code, .. } if *code == NOT_FOUND)
    }

    /// The peer answered with something that is not a well-formed gRPC response.
    pub fn is_malformed(&self) -> bool {
        match self {
            Self::HttpStatus(_) | Self::Malformed(_) | Self::TooLarge { .. } | Self::Decode(_) => {
                true
            }
            Self::Connect { .. }
            | Self::H2(_)
            | Self::Request(_)
            | Self::Metadata(_)
            | Self::Status { .. }
            | Self::Timeout(_) => false,
        }
    }
}

/// One HTTP/2 connection to a runtime, every call bounded by `timeout`; the task driving it
/// stops when this is dropped.
pub struct Connection {
    send: SendRequest<Bytes>,
    driver: JoinHandle<()>,
    timeout: Duration,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connection {
    /// Connects to the unix socket at `path` and performs the HTTP/2 handshake, within
    /// `timeout` (the bound of each call too). Must run on a tokio runtime (the connection is
    /// driven by a spawned task).
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Self, GrpcError> {
        let handshake = async {
            let stream = UnixStream::connect(path)
                .await
                .map_err(|source| GrpcError::Connect {
                    path: path.display().to_string(),
                    source,
                })?;
            let handshake = h2::client::Builder::new()
                .initial_window_size(1 << 20)
                .initial_connection_window_size(1 << 20)
                .max_header_list_size(64 * 1024)
                .handshake::<_, Bytes>(stream)
                .await?;
            Ok::<_, GrpcError>(handshake)
        };
        let (send, connection) = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| GrpcError::Timeout(timeout))??;
        let driver = tokio::spawn(async move {
            if let Err(err) = connection.await {
                log::debug!("runtime gRPC connection ended: {err}");
            }
        });
        Ok(Self {
            send,
            driver,
            timeout,
        })
    }

    /// One unary call: `method` is the full path (`/containerd.services.containers.v1.Containers/Get`),
    /// `metadata` extra request headers (lowercase names).
    pub async fn unary<Q, A>(
        &mut self,
        method: &str,
        metadata: &[(&'static str, &str)],
        request: &Q,
    ) -> Result<A, GrpcError>
    where
        Q: prost::Message,
        A: prost::Message + Default,
    {
        let http_request = http_request(method, metadata)?;
        let call = async {
            let mut send = self.send.clone().ready().await?;
            let (response, mut body) = send.send_request(http_request, false)?;
            body.send_data(frame(request), true)?;
            answer(response.await?).await
        };
        let message = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| GrpcError::Timeout(self.timeout))??;
        decode(&message)
    }
}

/// The headers of a call to `method` (the body, one message, follows).
fn http_request(method: &str, metadata: &[(&'static str, &str)]) -> Result<Request<()>, GrpcError> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(format!("http://localhost{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "egret");
    for (name, value) in metadata {
        let value =
            HeaderValue::from_str(value).map_err(|_| GrpcError::Metadata((*value).to_owned()))?;
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| GrpcError::Metadata((*name).to_owned()))?;
        builder = builder.header(name, value);
    }
    Ok(builder.body(())?)
}

/// The framed message of a successful answer (its status `0`), read within the size bound.
async fn answer(response: http::Response<RecvStream>) -> Result<BytesMut, GrpcError> {
    let (parts, mut stream) = response.into_parts();
    if parts.status != StatusCode::OK {
        return Err(GrpcError::HttpStatus(parts.status.as_u16()));
    }
    // A trailers-only answer carries the status in the headers.
    if let Some(status) = status_of(&parts.headers)? {
        if status.0 != 0 {
            return Err(status.into_error());
        }
    }
    let mut message = BytesMut::new();
    while let Some(chunk) = stream.data().await {
        let chunk = chunk?;
        stream.flow_control().release_capacity(chunk.len())?;
        if message.len().saturating_add(chunk.len()) > MAX_MESSAGE + 5 {
            return Err(GrpcError::TooLarge { limit: MAX_MESSAGE });
        }
        message.extend_from_slice(&chunk);
    }
    let trailers = stream.trailers().await?.unwrap_or_default();
    let status = status_of(&trailers)?
        .or(status_of(&parts.headers)?)
        .ok_or(GrpcError::Malformed("no grpc-status"))?;
    if status.0 != 0 {
        return Err(status.into_error());
    }
    Ok(message)
}

/// The answer to a call asking about one thing, with that thing taken out by `take`: `None`
/// when the runtime answered `NOT_FOUND`; an answer without it is malformed (`missing` says
/// so).
pub fn found<A, T>(
    answer: Result<A, GrpcError>,
    take: impl FnOnce(A) -> Option<T>,
    missing: &'static str,
) -> Result<Option<T>, GrpcError> {
    match answer {
        Err(err) if err.is_not_found() => Ok(None),
        Err(err) => Err(err),
        Ok(answer) => take(answer).map(Some).ok_or(GrpcError::Malformed(missing)),
    }
}

/// The message of a successful answer's body: one length-prefixed frame, decoded as `A`.
/// What [`Connection::unary`] does with what the runtime sent; pure, so it is fuzzed
/// (`fuzz/fuzz_targets/runtime_grpc.rs`).
///
/// # Errors
/// A malformed or oversized frame, or a message that does not decode.
pub fn decode<A: prost::Message + Default>(body: &[u8]) -> Result<A, GrpcError> {
    Ok(A::decode(unframe(body)?)?)
}

/// A status code and message from `grpc-status` / `grpc-message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status(pub u32, pub String);

impl Status {
    pub fn into_error(self) -> GrpcError {
        let Self(code, message) = self;
        GrpcError::Status { code, message }
    }
}

/// The status a header or trailer block carries; `None` without `grpc-status`.
///
/// # Errors
/// A `grpc-status` that is not a number.
pub fn status_of(headers: &HeaderMap) -> Result<Option<Status>, GrpcError> {
    let Some(code) = headers.get("grpc-status") else {
        return Ok(None);
    };
    let code = code
        .to_str()
        .ok()
        .and_then(|c| c.parse::<u32>().ok())
        .ok_or(GrpcError::Malformed("grpc-status"))?;
    let message = headers
        .get("grpc-message")
        .map(|m| percent_decode(m.as_bytes()))
        .unwrap_or_default();
    Ok(Some(Status(code, message)))
}

/// `grpc-message` is percent-encoded; shortened to 200 characters.
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let hex = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).chars().take(200).collect()
}

/// The length-prefixed message: compression flag 0, big-endian length, the bytes.
pub fn frame<Q: prost::Message>(message: &Q) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(len + 5);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    message.encode_raw(&mut buf);
    buf.freeze()
}

/// The message of exactly one length-prefixed frame.
pub fn unframe(body: &[u8]) -> Result<&[u8], GrpcError> {
    let (header, message) = body
        .split_first_chunk::<5>()
        .ok_or(GrpcError::Malformed("no message"))?;
    let [compressed, len @ ..] = *header;
    if compressed != 0 {
        return Err(GrpcError::Malformed("compressed message"));
    }
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > MAX_MESSAGE {
        return Err(GrpcError::TooLarge { limit: MAX_MESSAGE });
    }
    if message.len() != len {
        return Err(GrpcError::Malformed(
            "message length does not match its frame",
        ));
    }
    Ok(message)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc};

    use tokio::net::UnixListener;

    use super::*;
    use crate::output::tests::TempDir;

    /// What a fake gRPC method answers: `Ok(body message bytes)` or `Err((code, message))`.
    pub(crate) type Reply = Result<Vec<u8>, (u32, String)>;
    /// A fake method: (request headers, request message) → reply.
    pub(crate) type Handler =
        Arc<dyn Fn(&HeaderMap, &[u8]) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

    /// Serves gRPC on a unix socket with h2's server: each path maps to a handler.
    pub(crate) fn serve(listener: UnixListener, handlers: HashMap<&'static str, Handler>) {
        let handlers = Arc::new(handlers);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handlers = Arc::clone(&handlers);
                tokio::spawn(async move {
                    let Ok(mut connection) = h2::server::handshake(stream).await else {
                        return;
                    };
                    while let Some(Ok((request, mut respond))) = connection.accept().await {
                        let handlers = Arc::clone(&handlers);
                        tokio::spawn(async move {
                            let (parts, mut body) = request.into_parts();
                            let mut bytes = Vec::new();
                            while let Some(Ok(chunk)) = body.data().await {
                                let _ = body.flow_control().release_capacity(chunk.len());
                                bytes.extend_from_slice(&chunk);
                            }
                            let message = unframe(&bytes).map(<[u8]>::to_vec).unwrap_or_default();
                            let reply = match handlers.get(parts.uri.path()) {
                                Some(handler) => handler(&parts.headers, &message).await,
                                None => Err((12, "unimplemented".to_owned())),
                            };
                            let response = http::Response::builder()
                                .status(200)
                                .header("content-type", "application/grpc")
                                .body(())
                                .unwrap();
                            match reply {
                                Ok(message) => {
                                    let mut send = respond.send_response(response, false).unwrap();
                                    let mut framed = vec![0u8];
                                    framed.extend_from_slice(
                                        &u32::try_from(message.len()).unwrap().to_be_bytes(),
                                    );
                                    framed.extend_from_slice(&message);
                                    let _ = send.send_data(Bytes::from(framed), false);
                                    let mut trailers = HeaderMap::new();
                                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                                    let _ = send.send_trailers(trailers);
                                }
                                Err((code, message)) => {
                                    // Trailers-only, as grpc-go answers errors.
                                    let mut response = response;
                                    response
                                        .headers_mut()
                                        .insert("grpc-status", code.to_string().parse().unwrap());
                                    response
                                        .headers_mut()
                                        .insert("grpc-message", message.parse().unwrap());
                                    let _ = respond.send_response(response, true);
                                }
                            }
                        });
                    }
                });
            }
        });
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Echo {
        #[prost(string, tag = "1")]
        text: String,
    }

    fn echo_handler() -> Handler {
        Arc::new(|headers: &HeaderMap, message: &[u8]| {
            let suffix = headers
                .get("x-suffix")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let reply = <Echo as prost::Message>::decode(message)
                .map(|e| {
                    prost::Message::encode_to_vec(&Echo {
                        text: format!("{}{suffix}", e.text),
                    })
                })
                .map_err(|_| (3, "bad request".to_owned()));
            Box::pin(async move { reply })
        })
    }

    /// The error of an [`Echo`] call the server must refuse.
    async fn refused(
        conn: &mut Connection,
        method: &str,
        metadata: &[(&'static str, &str)],
    ) -> GrpcError {
        conn.unary::<_, Echo>(method, metadata, &Echo::default())
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn unary_calls_against_an_h2_server() {
        let dir = TempDir::new("grpc");
        let socket = dir.0.join("grpc.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let mut handlers: HashMap<&'static str, Handler> = HashMap::new();
        handlers.insert("/test.Echo/Echo", echo_handler());
        handlers.insert(
            "/test.Echo/Missing",
            Arc::new(|_: &HeaderMap, _: &[u8]| {
                Box::pin(async { Err((NOT_FOUND, "container \"x\": not found".to_owned())) })
            }),
        );
        handlers.insert(
            "/test.Echo/Garbage",
            Arc::new(|_: &HeaderMap, _: &[u8]| Box::pin(async { Ok(vec![0xff, 0xff, 0xff]) })),
        );
        serve(listener, handlers);

        let mut conn = Connection::connect(&socket, Duration::from_secs(5))
            .await
            .unwrap();
        let answer: Echo = conn
            .unary(
                "/test.Echo/Echo",
                &[("x-suffix", "!")],
                &Echo {
                    text: "hello".to_owned(),
                },
            )
            .await
            .unwrap();
        assert_eq!(answer.text, "hello!");
        // Several calls share the connection.
        let again: Echo = conn
            .unary("/test.Echo/Echo", &[], &Echo::default())
            .await
            .unwrap();
        assert_eq!(again.text, "");
        let missing = refused(&mut conn, "/test.Echo/Missing", &[]).await;
        assert!(missing.is_not_found(), "{missing}");
        let unimplemented = refused(&mut conn, "/test.Echo/Nope", &[]).await;
        assert!(matches!(unimplemented, GrpcError::Status { code: 12, .. }));
        let garbage = refused(&mut conn, "/test.Echo/Garbage", &[]).await;
        assert!(garbage.is_malformed(), "{garbage}");
        let bad_metadata = refused(&mut conn, "/test.Echo/Echo", &[("x-suffix", "a\nb")]).await;
        assert!(matches!(bad_metadata, GrpcError::Metadata(_)));
    }

    #[tokio::test]
    async fn connect_errors_are_typed() {
        let err = Connection::connect(Path::new("/nonexistent/egret.sock"), Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, GrpcError::Connect { .. }));
    }

    #[test]
    fn frames() {
        let echo = Echo {
            text: "hi".to_owned(),
        };
        let framed = frame(&echo);
        assert_eq!(framed.as_ref(), &[0, 0, 0, 0, 4, 10, 2, b'h', b'i']);
        assert_eq!(unframe(&framed).unwrap(), &[10, 2, b'h', b'i']);
        assert!(unframe(&[]).is_err());
        assert!(unframe(&[0, 0, 0]).is_err());
        assert!(unframe(&[1, 0, 0, 0, 0]).is_err());
        assert!(unframe(&[0, 0, 0, 0, 2, 1]).is_err());
        assert!(unframe(&[0, 0, 0, 0, 0, 1]).is_err());
        assert!(matches!(
            unframe(&[0, 0xff, 0xff, 0xff, 0xff]),
            Err(GrpcError::TooLarge { .. })
        ));
        assert_eq!(unframe(&[0, 0, 0, 0, 0]).unwrap(), &[] as &[u8]);
    }

    #[test]
    fn decodes_grpc_messages() {
        assert_eq!(percent_decode(b"not%20found%3A x"), "not found: x");
        assert_eq!(percent_decode(b"100%"), "100%");
        assert_eq!(percent_decode(b"%zz"), "%zz");
        let mut headers = HeaderMap::new();
        assert!(status_of(&headers).unwrap().is_none());
        headers.insert("grpc-status", HeaderValue::from_static("five"));
        assert!(status_of(&headers).is_err());
    }
}
