//! A minimal HTTP/1.1 client for a runtime's unix socket: one `GET` per connection
//! (`Connection: close`), the response read with every size bounded.
//!
//! It understands what the Docker Engine API (and Podman's Docker-compatible API) sends: a
//! status line, headers, and a body delimited by `Content-Length`, by chunked transfer coding,
//! or by the end of the connection. Anything else is a typed error, never a panic.

use std::{io, path::Path};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _},
    net::UnixStream,
};

/// Bound on the status line plus all headers.
pub const MAX_HEAD: usize = 64 * 1024;
/// Bound on the number of header lines.
pub const MAX_HEADERS: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connecting to {path}: {source}")]
    Connect { path: String, source: io::Error },
    #[error("talking to the runtime: {0}")]
    Io(#[from] io::Error),
    #[error("malformed HTTP response: {0}")]
    Malformed(&'static str),
    #[error("HTTP response larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the connection closed before the HTTP response was complete")]
    Truncated,
}

/// A response: status code and body (already de-chunked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `GET target` over the unix socket at `socket`. `target` must be a path with no spaces or
/// control characters (callers build it from validated ids). No timeout here: callers wrap
/// the call in one.
pub async fn get(socket: &Path, target: &str, max_body: usize) -> Result<Response, HttpError> {
    if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(HttpError::Malformed(
            "request target has spaces or control characters",
        ));
    }
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|source| HttpError::Connect {
            path: socket.display().to_string(),
            source,
        })?;
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: egret\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    read_response(stream, max_body).await
}

/// How the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
    None,
}

/// Buffered reading with bounds.
struct Reader<R> {
    inner: R,
    buf: Vec<u8>,
    eof: bool,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Reads more into the buffer; `false` at the end of the stream.
    async fn fill(&mut self) -> Result<bool, HttpError> {
        if self.eof {
            return Ok(false);
        }
        let mut chunk = [0u8; 8192];
        let n = self.inner.read(&mut chunk).await?;
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        self.buf
            .extend_from_slice(chunk.get(..n).unwrap_or_default());
        Ok(true)
    }

    /// One line without its `\r\n` (or `\n`), at most `max` bytes long.
    async fn line(&mut self, max: usize) -> Result<Vec<u8>, HttpError> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                if end > max {
                    return Err(HttpError::Malformed("line too long"));
                }
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.buf.len() > max {
                return Err(HttpError::Malformed("line too long"));
            }
            if !self.fill().await? {
                return Err(HttpError::Truncated);
            }
        }
    }

    /// Exactly `n` bytes.
    async fn exact(&mut self, n: usize) -> Result<Vec<u8>, HttpError> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Err(HttpError::Truncated);
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Everything up to the end of the stream, at most `max` bytes.
    async fn until_close(&mut self, max: usize) -> Result<Vec<u8>, HttpError> {
        loop {
            if self.buf.len() > max {
                return Err(HttpError::TooLarge { limit: max });
            }
            if !self.fill().await? {
                return Ok(std::mem::take(&mut self.buf));
            }
        }
    }
}

/// The status code of a status line (`HTTP/1.1 200 OK`).
fn status_of(line: &[u8]) -> Result<u16, HttpError> {
    let line = std::str::from_utf8(line).map_err(|_| HttpError::Malformed("status line"))?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("not an HTTP/1 status line"));
    }
    let code = parts.next().unwrap_or_default();
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::Malformed("status code"));
    }
    code.parse::<u16>()
        .ok()
        .filter(|code| (100..=599).contains(code))
        .ok_or(HttpError::Malformed("status code"))
}

/// Reads the header block (after the status line) and decides the body's framing.
async fn headers<R: AsyncRead + Unpin>(
    reader: &mut Reader<R>,
    status: u16,
    mut budget: usize,
) -> Result<Framing, HttpError> {
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    for _ in 0..=MAX_HEADERS {
        let line = reader.line(budget).await?;
        budget = budget
            .checked_sub(line.len() + 2)
            .ok_or(HttpError::Malformed("headers too long"))?;
        if line.is_empty() {
            let no_body = matches!(status, 100..=199 | 204 | 304);
            return Ok(match (no_body, chunked, transfer_encoding, length) {
                (true, ..) => Framing::None,
                (false, true, _, _) => Framing::Chunked,
                (false, false, true, _) => Framing::UntilClose,
                (false, false, false, Some(n)) => Framing::Length(n),
                (false, false, false, None) => Framing::UntilClose,
            });
        }
        let line = std::str::from_utf8(&line).map_err(|_| HttpError::Malformed("header"))?;
        let (name, value) = line
            .split_once(':')
            .ok_or(HttpError::Malformed("header without a colon"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<usize>()
                .map_err(|_| HttpError::Malformed("Content-Length"))?;
            if length.is_some_and(|previous| previous != n) {
                return Err(HttpError::Malformed("conflicting Content-Length"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    Err(HttpError::Malformed("too many headers"))
}

/// A chunked body, de-chunked, at most `max` bytes.
async fn chunked_body<R: AsyncRead + Unpin>(
    reader: &mut Reader<R>,
    max: usize,
) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line = reader.line(1024).await?;
        let size = line.split(|b| *b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(size)
            .ok()
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 16)
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or(HttpError::Malformed("chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            for _ in 0..=MAX_HEADERS {
                if reader.line(MAX_HEAD).await?.is_empty() {
                    return Ok(body);
                }
            }
            return Err(HttpError::Malformed("too many trailers"));
        }
        if body.len().saturating_add(size) > max {
            return Err(HttpError::TooLarge { limit: max });
        }
        body.extend(reader.exact(size).await?);
        if !reader.line(2).await?.is_empty() {
            return Err(HttpError::Malformed("chunk not followed by CRLF"));
        }
    }
}

/// Reads one response from `stream`; the body is bounded by `max_body`.
pub async fn read_response<R: AsyncRead + Unpin>(
    stream: R,
    max_body: usize,
) -> Result<Response, HttpError> {
    let mut reader = Reader {
        inner: stream,
        buf: Vec::new(),
        eof: false,
    };
    // At most a few interim responses (100 Continue) before the real one.
    for _ in 0..4 {
        let status = status_of(&reader.line(MAX_HEAD).await?)?;
        let framing = headers(&mut reader, status, MAX_HEAD).await?;
        if (100..=199).contains(&status) {
            // An interim response (100 Continue): the real one follows.
            continue;
        }
        let body = match framing {
            Framing::None => Vec::new(),
            Framing::Length(n) if n > max_body => {
                return Err(HttpError::TooLarge { limit: max_body })
            }
            Framing::Length(n) => reader.exact(n).await?,
            Framing::Chunked => chunked_body(&mut reader, max_body).await?,
            Framing::UntilClose => reader.until_close(max_body).await?,
        };
        return Ok(Response { status, body });
    }
    Err(HttpError::Malformed("too many interim responses"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> Result<Response, HttpError> {
        read_response(bytes, 1024).await
    }

    #[tokio::test]
    async fn content_length() -> Result<(), HttpError> {
        let response = parse(
            b"HTTP/1.1 200 OK\r\nApi-Version: 1.43\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}trailing",
        )
        .await?;
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"{\"a\":1}");
        // Bare LF line ends, header names in any case.
        let response = parse(b"HTTP/1.0 200 OK\ncontent-length: 2\n\nok").await?;
        assert_eq!(response.body, b"ok");
        Ok(())
    }

    #[tokio::test]
    async fn chunked() -> Result<(), HttpError> {
        let response = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\nA;ext=1\r\n:[1,2,3,4]\r\n1\r\n}\r\n0\r\nX-Trailer: y\r\n\r\n",
        )
        .await?;
        assert_eq!(response.body, b"{\"a\":[1,2,3,4]}");
        // Chunked wins over Content-Length.
        let response = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        )
        .await?;
        assert_eq!(response.body, b"ok");
        Ok(())
    }

    #[tokio::test]
    async fn until_close_and_no_body() -> Result<(), HttpError> {
        let response = parse(b"HTTP/1.1 404 Not Found\r\n\r\n{\"message\":\"x\"}").await?;
        assert_eq!(response.status, 404);
        assert_eq!(response.body, b"{\"message\":\"x\"}");
        let response = parse(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n").await?;
        assert_eq!(response.body, b"");
        let response =
            parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
                .await?;
        assert_eq!((response.status, response.body), (200, b"x".to_vec()));
        Ok(())
    }

    #[tokio::test]
    async fn malformed_responses_are_errors() {
        let cases: &[&[u8]] = &[
            b"",
            b"garbage\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 20x OK\r\n\r\n",
            b"HTTP/1.1 999 Hmm\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1",
            b"HTTP/1.1 200 OK\r\n\xff\xfe: x\r\n\r\n",
        ];
        for case in cases {
            assert!(
                parse(case).await.is_err(),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[tokio::test]
    async fn sizes_are_bounded() {
        let big = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 2048);
        assert!(matches!(
            parse(big.as_bytes()).await,
            Err(HttpError::TooLarge { limit: 1024 })
        ));
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..3 {
            chunked.extend_from_slice(b"200\r\n");
            chunked.extend_from_slice(&[b'x'; 0x200]);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        assert!(matches!(
            parse(&chunked).await,
            Err(HttpError::TooLarge { limit: 1024 })
        ));
        let mut until_close = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        until_close.extend_from_slice(&[b'x'; 2000]);
        assert!(matches!(
            parse(&until_close).await,
            Err(HttpError::TooLarge { limit: 1024 })
        ));
        let mut long_header = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long_header.extend_from_slice(&vec![b'x'; MAX_HEAD + 10]);
        long_header.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(
            parse(&long_header).await,
            Err(HttpError::Malformed(_))
        ));
        let mut many_headers = b"HTTP/1.1 200 OK\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            many_headers.extend_from_slice(b"X: y\r\n");
        }
        many_headers.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse(&many_headers).await,
            Err(HttpError::Malformed("too many headers"))
        ));
    }

    #[tokio::test]
    async fn refuses_unsafe_targets() {
        let err = get(Path::new("/nonexistent.sock"), "/a b", 1024).await;
        assert!(matches!(err, Err(HttpError::Malformed(_))));
        let err = get(Path::new("/nonexistent/egret.sock"), "/ok", 1024).await;
        assert!(matches!(err, Err(HttpError::Connect { .. })));
    }
}
