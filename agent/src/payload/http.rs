//! HTTP/1.x requests and responses (RFC 9112) from the first bytes of a connection.
//!
//! Plain-text HTTP still says what a client fetched: the method, the host it asked for, the
//! path and query, and who it claims to be (`User-Agent`); the server's status line says how
//! that went. Only the first bytes are seen, so [`parse_request`] reads what is there: the
//! request line must be whole (or at least [`NEED_MORE_BELOW`] bytes long), and the headers
//! that follow are read up to the last whole line.
//!
//! Read the way a server reads it (the gate in block mode trusts this parse): empty lines
//! before the request line are skipped (RFC 9112 §2.2), and any token is a method (RFC 9110
//! §9.1: a method egret does not know is still a request, [`Method::Other`]).
//!
//! Everything from the wire is hostile. Strings come out as printable ASCII only: the host
//! is validated like a DNS name (or an IP literal), the path, query and `User-Agent` have
//! every other byte written `%XX` and are bounded ([`MAX_PATH`], [`MAX_QUERY`],
//! [`MAX_USER_AGENT`]).

use super::text::{escape, host, Keep};

/// The longest path kept, in characters after escaping.
pub const MAX_PATH: usize = 1024;
/// The longest query kept, in characters after escaping.
pub const MAX_QUERY: usize = 1024;
/// The longest `User-Agent` kept, in characters after escaping.
pub const MAX_USER_AGENT: usize = 512;
/// Below this many bytes a request line without its end is [`HttpError::Incomplete`]; at or
/// above it, it is read as cut (a request line this long is mostly a long URL, and the rest
/// may never be copied).
pub const NEED_MORE_BELOW: usize = 2048;

/// The request method: the registered ones by name, any other token as [`Method::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Head,
    Options,
    Patch,
    Connect,
    Trace,
    /// Any other token (RFC 9110 §5.6.2): still a request line to a server.
    Other,
}

impl Method {
    pub const ALL: [Self; 9] = [
        Self::Get,
        Self::Post,
        Self::Put,
        Self::Delete,
        Self::Head,
        Self::Options,
        Self::Patch,
        Self::Connect,
        Self::Trace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Head => "HEAD",
            Self::Options => "OPTIONS",
            Self::Patch => "PATCH",
            Self::Connect => "CONNECT",
            Self::Trace => "TRACE",
            // OpenTelemetry's word for a method outside the known set: the token itself is
            // the watched process's text, of any length.
            Self::Other => "_OTHER",
        }
    }
}

/// HTTP/1.0 or HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "HTTP/1.0",
            Self::Http11 => "HTTP/1.1",
        }
    }

    /// The version a line starts with, and the rest of the line.
    fn prefix_of(bytes: &[u8]) -> Option<(Self, &[u8])> {
        [Self::Http11, Self::Http10]
            .into_iter()
            .find_map(|v| Some((v, bytes.strip_prefix(v.as_str().as_bytes())?)))
    }
}

/// What the first bytes of a request said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path of the request target (without the query), `%XX`-escaped outside visible
    /// ASCII (`%` itself is kept, so an encoded path is unchanged), at most [`MAX_PATH`]
    /// characters. For an absolute-form target (`http://host/path`, to a proxy) the path
    /// part alone; for `CONNECT` the authority (`host:port`); for `OPTIONS *`, `*`.
    pub path: String,
    /// The path was cut, here or on the wire.
    pub path_truncated: bool,
    /// What follows the first `?` of the target, escaped like the path, at most
    /// [`MAX_QUERY`] characters; `None` when there is no `?`.
    pub query: Option<String>,
    /// The query was cut, here or on the wire.
    pub query_truncated: bool,
    /// `None` when the request line was cut before its version.
    pub version: Option<Version>,
    /// The host asked for: from an absolute-form target or `CONNECT`'s authority, else from
    /// the first `Host` header; the port dropped, lower-cased, a valid DNS name or IP
    /// literal (else `None`). A `Host` line cut by the end of the bytes is not read.
    pub host: Option<String>,
    /// A host was sent (an authority in the target, or a whole `Host` line), whether or not
    /// it was valid: `host` is `None` with this set when it was not.
    pub host_sent: bool,
    /// The first `User-Agent` header, trimmed, bytes outside `0x20..=0x7e` written `%XX`, at
    /// most [`MAX_USER_AGENT`] characters.
    pub user_agent: Option<String>,
    /// The empty line that ends the headers was seen.
    pub headers_complete: bool,
}

/// The status line of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub version: Version,
    pub status_code: u16,
}

/// Why the bytes are not (yet) an HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// What is there could start a request; the request line is not whole yet.
    #[error("the request line is not whole yet")]
    Incomplete,
    /// Not an HTTP/1.0 or 1.1 request line.
    #[error("not an HTTP/1.x request")]
    NotHttp,
}

/// Reads the request at the start of `bytes`, the contiguous first bytes a client sent.
pub fn parse_request(bytes: &[u8]) -> Result<Request, HttpError> {
    let (method, rest) = method(skip_empty_lines(bytes)?)?;
    let (line, headers, whole) = match rest.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let (line, after) = rest.split_at(end);
            (line, after.get(1..).unwrap_or_default(), true)
        }
        None => (rest, &b""[..], false),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (target, version, target_cut) = request_line(line, whole)?;
    if !whole && bytes.len() < NEED_MORE_BELOW {
        return Err(HttpError::Incomplete);
    }
    let target = read_target(method, target, target_cut);
    let headers = read_headers(headers);
    Ok(Request {
        method,
        path: target.path,
        path_truncated: target.path_truncated,
        query: target.query,
        query_truncated: target.query_truncated,
        version,
        host_sent: target.host_sent || headers.host_sent,
        host: target.host.or(headers.host),
        user_agent: headers.user_agent,
        headers_complete: headers.complete,
    })
}

/// `bytes` after the empty lines (CR and LF bytes) a server skips before a request line;
/// [`HttpError::Incomplete`] when nothing else came yet.
fn skip_empty_lines(bytes: &[u8]) -> Result<&[u8], HttpError> {
    let start = bytes.iter().position(|&b| b != b'\r' && b != b'\n').ok_or(
        if bytes.len() < NEED_MORE_BELOW {
            HttpError::Incomplete
        } else {
            HttpError::NotHttp
        },
    )?;
    Ok(bytes.get(start..).unwrap_or_default())
}

/// A byte of a token (RFC 9110 §5.6.2), what a method is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The method and the rest after its space; [`HttpError::Incomplete`] while `bytes` could
/// still become `METHOD ` (a token, shorter than [`NEED_MORE_BELOW`]).
fn method(bytes: &[u8]) -> Result<(Method, &[u8]), HttpError> {
    let end = bytes.iter().position(|&b| !is_tchar(b));
    let Some(end) = end.filter(|&end| end > 0 && end < NEED_MORE_BELOW) else {
        return Err(if end.is_none() && bytes.len() < NEED_MORE_BELOW {
            HttpError::Incomplete
        } else {
            HttpError::NotHttp
        });
    };
    let (name, rest) = bytes.split_at(end);
    let rest = rest.strip_prefix(b" ").ok_or(HttpError::NotHttp)?;
    let method = Method::ALL
        .into_iter()
        .find(|m| m.as_str().as_bytes() == name)
        .unwrap_or(Method::Other);
    Ok((method, rest))
}

/// Whether `bytes`, which [`parse_request`] did not read as a request, still look like one
/// to a lenient server: a first line (after empty lines) that starts with a token and a
/// space and holds ` HTTP/` (any case) in its first [`NEED_MORE_BELOW`] bytes. `None` while
/// that cannot be told yet (the line is not whole and shorter than that).
pub fn looks_like_request(bytes: &[u8]) -> Option<bool> {
    let Ok(bytes) = skip_empty_lines(bytes) else {
        return Some(false);
    };
    let token = bytes.iter().position(|&b| !is_tchar(b));
    if !token.is_some_and(|t| t > 0 && t < NEED_MORE_BELOW && bytes.get(t) == Some(&b' ')) {
        return Some(false);
    }
    let head = bytes.get(..NEED_MORE_BELOW).unwrap_or(bytes);
    let line = match head.iter().position(|&b| b == b'\n') {
        Some(end) => head.get(..end).unwrap_or_default(),
        None if head.len() < NEED_MORE_BELOW => return None,
        None => head,
    };
    Some(line.windows(6).any(|w| w.eq_ignore_ascii_case(b" HTTP/")))
}

/// The target and version of a request line (after the method's space). A line that is not
/// `whole` may stop anywhere, but what there is must fit; returns whether the target may
/// continue past the end.
fn request_line(line: &[u8], whole: bool) -> Result<(&[u8], Option<Version>, bool), HttpError> {
    let (target, version) = match line.iter().position(|&b| b == b' ') {
        Some(space) => {
            let (target, rest) = line.split_at(space);
            (target, Some(rest.get(1..).unwrap_or_default()))
        }
        None => (line, None),
    };
    // Control characters and spaces never belong in a target; raw non-ASCII is seen in the
    // wild and escaped.
    if target.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(HttpError::NotHttp);
    }
    let Some(version) = version else {
        // No version: HTTP/0.9 or not HTTP when whole; else the target may go on.
        return if whole {
            Err(HttpError::NotHttp)
        } else {
            Ok((target, None, true))
        };
    };
    if target.is_empty() {
        return Err(HttpError::NotHttp);
    }
    match Version::prefix_of(version) {
        Some((v, b"")) => Ok((target, Some(v), false)),
        Some(_) => Err(HttpError::NotHttp),
        None if !whole
            && [Version::Http11, Version::Http10]
                .iter()
                .any(|v| v.as_str().as_bytes().starts_with(version)) =>
        {
            Ok((target, None, false))
        }
        None => Err(HttpError::NotHttp),
    }
}

/// A request target split into what [`Request`] keeps.
struct Target {
    path: String,
    path_truncated: bool,
    query: Option<String>,
    query_truncated: bool,
    host: Option<String>,
    /// An authority was there, valid or not.
    host_sent: bool,
}

/// Reads the target's form (RFC 9112 §3.2): origin (`/p?q`), absolute (`http://h/p?q`),
/// authority (`CONNECT h:port`) or asterisk (`*`). `cut` when it may continue past the end.
fn read_target(method: Method, target: &[u8], cut: bool) -> Target {
    if method == Method::Connect {
        let (path, truncated) = escape(target, MAX_PATH, Keep::Visible);
        return Target {
            path,
            path_truncated: truncated || cut,
            query: None,
            query_truncated: false,
            host: if cut { None } else { host(target) },
            host_sent: true,
        };
    }
    let (host_name, host_sent, path_and_query) = match absolute_form(target) {
        Some((authority, rest)) => {
            // A cut authority could name another host: it is only read when whole.
            let whole = !cut || !rest.is_empty();
            (whole.then(|| host(authority)).flatten(), true, rest)
        }
        None => (None, false, target),
    };
    let (path, query) = match path_and_query.iter().position(|&b| b == b'?') {
        Some(mark) => {
            let (path, query) = path_and_query.split_at(mark);
            (path, Some(query.get(1..).unwrap_or_default()))
        }
        None => (path_and_query, None),
    };
    let (path, path_truncated) = if path.is_empty() && host_name.is_some() {
        ("/".to_owned(), false)
    } else {
        escape(path, MAX_PATH, Keep::Visible)
    };
    let (query, query_truncated) = match query {
        Some(query) => {
            let (text, truncated) = escape(query, MAX_QUERY, Keep::Visible);
            (Some(text), truncated || cut)
        }
        None => (None, false),
    };
    Target {
        path,
        path_truncated: path_truncated || (cut && query.is_none()),
        query,
        query_truncated,
        host: host_name,
        host_sent,
    }
}

/// `scheme://authority` at the start of a target: the authority without any `user@` part,
/// and the rest from the first `/`, `?` or `#`.
fn absolute_form(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let separator = target.windows(3).position(|w| w == b"://")?;
    let (scheme, rest) = target.split_at(separator);
    if scheme.is_empty()
        || !scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    let rest = rest.get(3..).unwrap_or_default();
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let host_port = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => authority.get(at + 1..).unwrap_or_default(),
        None => authority,
    };
    Some((host_port, path))
}

/// The headers egret reads.
#[derive(Default)]
struct Headers {
    host: Option<String>,
    /// A whole `Host` line was there, valid or not.
    host_sent: bool,
    user_agent: Option<String>,
    complete: bool,
}

/// Reads the header lines up to the empty line that ends them, or up to the last whole line
/// when the bytes stop first. The first `Host` and `User-Agent` count.
fn read_headers(mut rest: &[u8]) -> Headers {
    let mut out = Headers::default();
    let mut seen_host = false;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let (line, after) = rest.split_at(end);
        rest = after.get(1..).unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            out.complete = true;
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        let value = trim_whitespace(value.get(1..).unwrap_or_default());
        if name.eq_ignore_ascii_case(b"host") && !seen_host {
            seen_host = true;
            out.host_sent = true;
            out.host = host(value);
        } else if name.eq_ignore_ascii_case(b"user-agent") && out.user_agent.is_none() {
            out.user_agent = Some(escape(value, MAX_USER_AGENT, Keep::VisibleAndSpace).0);
        }
    }
    out
}

/// `bytes` without leading and trailing spaces and tabs.
fn trim_whitespace(bytes: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// The status line at the start of the first bytes a server sent: `HTTP/1.x NNN` followed by
/// a space, the end of the line or the end of the bytes. Codes 100 to 599 only.
pub fn parse_response(bytes: &[u8]) -> Option<Response> {
    let (version, rest) = Version::prefix_of(bytes)?;
    let rest = rest.strip_prefix(b" ")?;
    let (&[a, b, c], after) = rest.split_first_chunk::<3>()?;
    if !(a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit()) {
        return None;
    }
    if !matches!(after.first(), None | Some(b' ' | b'\r' | b'\n')) {
        return None;
    }
    let status_code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    (100..=599).contains(&status_code).then_some(Response {
        version,
        status_code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(bytes: &[u8]) -> Request {
        parse_request(bytes).unwrap()
    }

    #[test]
    fn methods_and_versions() {
        for method in Method::ALL {
            let line = format!("{} / HTTP/1.0\r\n\r\n", method.as_str());
            let parsed = request(line.as_bytes());
            assert_eq!(parsed.method, method);
            assert_eq!(parsed.version, Some(Version::Http10));
        }
        // Any token is a method to a server: egret's unknown ones are `Other`.
        for (line, method) in [
            (&b"get / HTTP/1.1\r\n"[..], Method::Other),
            (b"GETX / HTTP/1.1\r\n", Method::Other),
            (
                b"PROPFIND /dav HTTP/1.1\r\nHost: dav.example\r\n\r\n",
                Method::Other,
            ),
            (b"M-SEARCH! * HTTP/1.1\r\n", Method::Other),
            (b"POST / HTTP/1.0\r\n", Method::Post),
        ] {
            let parsed = request(line);
            assert_eq!(parsed.method, method, "{line:?}");
            assert_eq!(
                parsed.method == Method::Other,
                parsed.method.as_str() == "_OTHER"
            );
        }
        assert_eq!(
            request(b"PROPFIND /dav HTTP/1.1\r\nHost: dav.example\r\n\r\n")
                .host
                .as_deref(),
            Some("dav.example")
        );
        for not in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"GET / HTTP/2\r\n",
            b"GET / HTTP/1.2\r\n",
            b"GET / HTTP/1.1 \r\n",
            b"GET /\r\n",
            b"GET /a\x7fb HTTP/1.1\r\n",
            b"GET /a\tb HTTP/1.1\r\n",
            b"GET  / HTTP/1.1\r\n",
            b"G\"T / HTTP/1.1\r\n",
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"\x00\x00\x00\x00",
        ] {
            assert_eq!(parse_request(not), Err(HttpError::NotHttp), "{not:?}");
        }
    }

    #[test]
    fn an_unfinished_request_line_needs_more() {
        for bytes in [
            &b""[..],
            b"G",
            b"DELE",
            b"GET",
            b"GET ",
            b"GET /index",
            b"GET / HTTP/1",
            b"GET / HTTP/1.1\r",
        ] {
            assert_eq!(
                parse_request(bytes),
                Err(HttpError::Incomplete),
                "{bytes:?}"
            );
        }
        // Any token could still become a method, and empty lines come before a request.
        for bytes in [&b"X"[..], b"GE ", b"\r\n", b"\r\n\r\nGET /"] {
            assert_eq!(
                parse_request(bytes),
                Err(HttpError::Incomplete),
                "{bytes:?}"
            );
        }
        // What cannot become a request is refused at once.
        for bytes in [
            &b"X\x00"[..],
            b" GET",
            b"\r\n\x16",
            b"GET /a\x01",
            b"GET / HTTX",
            b"GET / HTTP/1.1x",
        ] {
            assert_eq!(parse_request(bytes), Err(HttpError::NotHttp), "{bytes:?}");
        }
    }

    #[test]
    fn a_long_request_line_is_read_cut() {
        let mut bytes = b"GET /".to_vec();
        bytes.resize(NEED_MORE_BELOW - 1, b'a');
        assert_eq!(parse_request(&bytes), Err(HttpError::Incomplete));
        bytes.push(b'a');
        let cut = request(&bytes);
        assert_eq!(cut.version, None);
        assert_eq!(cut.path.len(), MAX_PATH);
        assert!(cut.path_truncated);
        assert_eq!(cut.query, None);
        // Cut inside the query: the path is whole, the query is not.
        let mut bytes = b"GET /search?q=".to_vec();
        bytes.resize(NEED_MORE_BELOW + 100, b'z');
        let cut = request(&bytes);
        assert_eq!(cut.path, "/search");
        assert!(!cut.path_truncated);
        assert_eq!(cut.query.as_deref().map(str::len), Some(MAX_QUERY));
        assert!(cut.query_truncated);
        // Cut inside the version.
        let mut bytes = b"GET /".to_vec();
        bytes.resize(NEED_MORE_BELOW, b'b');
        bytes.extend_from_slice(b" HTTP/1.");
        let cut = request(&bytes);
        assert_eq!((cut.version, cut.path_truncated), (None, true));
    }

    #[test]
    fn path_and_query_are_escaped_and_bounded() {
        let parsed = request(b"GET /caf\xc3\xa9/%41\"<x>?a=\x80&b=%20\xff HTTP/1.1\r\n\r\n");
        assert_eq!(parsed.path, "/caf%C3%A9/%41\"<x>");
        assert_eq!(parsed.query.as_deref(), Some("a=%80&b=%20%FF"));
        let parsed = request(b"GET /? HTTP/1.1\r\n\r\n");
        assert_eq!(
            (parsed.path.as_str(), parsed.query.as_deref()),
            ("/", Some(""))
        );
        let long = format!(
            "GET /{}?{} HTTP/1.1\r\n\r\n",
            "p".repeat(2000),
            "q".repeat(2000)
        );
        let parsed = request(long.as_bytes());
        assert_eq!(parsed.path.len(), MAX_PATH);
        assert!(parsed.path_truncated && parsed.query_truncated);
        assert_eq!(parsed.query.map(|q| q.len()), Some(MAX_QUERY));
        // An escape is never cut in half by the bound.
        let bytes = format!("GET /{}\u{e9} HTTP/1.1\r\n\r\n", "p".repeat(MAX_PATH - 3));
        let parsed = request(bytes.as_bytes());
        assert_eq!(parsed.path.len(), MAX_PATH - 2);
        assert!(parsed.path_truncated);
    }

    #[test]
    fn target_forms() {
        let proxy = request(
            b"GET http://user:pw@Example.com:8080/a/b?c=d HTTP/1.1\r\nHost: other.example\r\n\r\n",
        );
        assert_eq!(proxy.host.as_deref(), Some("example.com"));
        assert_eq!(proxy.path, "/a/b");
        assert_eq!(proxy.query.as_deref(), Some("c=d"));
        let bare = request(b"GET http://example.com HTTP/1.1\r\n\r\n");
        assert_eq!(
            (bare.host.as_deref(), bare.path.as_str()),
            (Some("example.com"), "/")
        );
        let connect =
            request(b"CONNECT Api.Example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n");
        assert_eq!(connect.host.as_deref(), Some("api.example.com"));
        assert_eq!(connect.path, "Api.Example.com:443");
        let connect6 = request(b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n");
        assert_eq!(connect6.host.as_deref(), Some("2001:db8::1"));
        let star = request(b"OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(
            (star.path.as_str(), star.host.as_deref()),
            ("*", Some("example.com"))
        );
        // A query that holds a URL is not an absolute-form target.
        let redirect =
            request(b"GET /go?to=http://evil.example/ HTTP/1.1\r\nHost: good.example\r\n\r\n");
        assert_eq!(redirect.host.as_deref(), Some("good.example"));
        assert_eq!(redirect.query.as_deref(), Some("to=http://evil.example/"));
    }

    #[test]
    fn headers() {
        let parsed = request(
            b"GET / HTTP/1.1\nhOsT:  \tWWW.Example.ORG:80 \t\nUSER-AGENT: Mozilla/5.0 (X11; Linux x86_64)\n\n",
        );
        assert_eq!(parsed.host.as_deref(), Some("www.example.org"));
        assert_eq!(
            parsed.user_agent.as_deref(),
            Some("Mozilla/5.0 (X11; Linux x86_64)")
        );
        assert!(parsed.headers_complete);
        // The first Host counts, even when it is not a valid name; a cut line is not read.
        let parsed =
            request(b"GET / HTTP/1.1\r\nHost: bad host\r\nHost: good.example\r\nUser-Agent: cut");
        assert_eq!(
            (parsed.host, parsed.user_agent, parsed.headers_complete),
            (None, None, false)
        );
        let parsed = request(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n");
        assert_eq!(parsed.host.as_deref(), Some("::1"));
        let parsed = request(b"GET / HTTP/1.1\r\nHost: 10.1.2.3\r\n\r\n");
        assert_eq!(parsed.host.as_deref(), Some("10.1.2.3"));
        // Lines without a colon and folded lines are skipped; no Host at all is None.
        let parsed = request(b"GET / HTTP/1.1\r\ngarbage\r\n Host: folded.example\r\n\r\n");
        assert_eq!(parsed.host, None);
        assert!(parsed.headers_complete);
    }

    #[test]
    fn a_hostile_user_agent_is_escaped_and_bounded() {
        let parsed = request(b"GET / HTTP/1.1\r\nUser-Agent: a\x1b[31mred\x00\xe2\x80\xae\r\n\r\n");
        assert_eq!(
            parsed.user_agent.as_deref(),
            Some("a%1B[31mred%00%E2%80%AE")
        );
        let long = format!("GET / HTTP/1.1\r\nUser-Agent: {}\r\n\r\n", "u".repeat(5000));
        let parsed = request(long.as_bytes());
        assert_eq!(parsed.user_agent.map(|ua| ua.len()), Some(MAX_USER_AGENT));
    }

    #[test]
    fn empty_lines_before_the_request_line_are_skipped() {
        // RFC 9112 §2.2: a server skips them, so the request after them is the one read.
        for bytes in [
            &b"\r\nGET / HTTP/1.1\r\nHost: b.example\r\n\r\n"[..],
            b"\n\n\r\n\rGET / HTTP/1.1\nHost: b.example\n\n",
        ] {
            let parsed = request(bytes);
            assert_eq!(parsed.host.as_deref(), Some("b.example"), "{bytes:?}");
            assert!(parsed.host_sent && parsed.headers_complete);
        }
        // Only empty lines, as long as a request line may be: not a request.
        let mut only = b"\r\n".repeat(NEED_MORE_BELOW / 2);
        assert_eq!(parse_request(&only), Err(HttpError::NotHttp));
        only.truncate(NEED_MORE_BELOW - 2);
        assert_eq!(parse_request(&only), Err(HttpError::Incomplete));
        // A token as long as a request line may be is not a method.
        let long = vec![b'A'; NEED_MORE_BELOW];
        assert_eq!(parse_request(&long), Err(HttpError::NotHttp));
        let mut spaced = long.clone();
        spaced.extend_from_slice(b" / HTTP/1.1\r\n");
        assert_eq!(parse_request(&spaced), Err(HttpError::NotHttp));
    }

    #[test]
    fn a_sent_host_is_known_even_when_invalid() {
        let parsed = request(b"GET / HTTP/1.1\r\nHost: bad_name!\r\n\r\n");
        assert_eq!((parsed.host, parsed.host_sent), (None, true));
        let parsed = request(b"GET http://bad_name!/ HTTP/1.1\r\n\r\n");
        assert_eq!((parsed.host, parsed.host_sent), (None, true));
        let parsed = request(b"CONNECT bad:port:x HTTP/1.1\r\n\r\n");
        assert_eq!((parsed.host, parsed.host_sent), (None, true));
        let parsed = request(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n");
        assert_eq!((parsed.host, parsed.host_sent), (None, false));
        // A Host line cut by the end of the bytes was not sent, as far as egret can tell.
        let parsed = request(b"GET / HTTP/1.1\r\nHost: forbidden.exa");
        assert_eq!((parsed.host_sent, parsed.headers_complete), (false, false));
    }

    #[test]
    fn what_a_lenient_server_takes_for_a_request() {
        for (bytes, looks) in [
            (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], Some(true)),
            (b"GET / HTTP/1.2\r\nHost: b.example\r\n\r\n", Some(true)),
            (b"GET  / HTTP/1.1\r\n", Some(true)),
            (b"\r\nGET / http/1.1\r\n", Some(true)),
            (b"GET / HTTP/1.1", None),
            (b"get foo\r\n", Some(false)),
            (b"hello egret\n", Some(false)),
            (b"SSH-2.0-OpenSSH_9.2\r\n", Some(false)),
            (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", Some(false)),
            (b"HELLO", Some(false)),
        ] {
            assert_eq!(looks_like_request(bytes), looks, "{bytes:?}");
        }
        // Decided from the first NEED_MORE_BELOW bytes of the line at most.
        let mut long = b"GET /".to_vec();
        long.resize(NEED_MORE_BELOW + 10, b'a');
        assert_eq!(looks_like_request(&long), Some(false));
        long.extend_from_slice(b" HTTP/1.1\r\n");
        assert_eq!(looks_like_request(&long), Some(false));
    }

    #[test]
    fn status_lines() {
        for (bytes, code) in [
            (&b"HTTP/1.1 200 OK\r\n"[..], 200),
            (b"HTTP/1.0 404 Not Found\r\n", 404),
            (b"HTTP/1.1 204\r\n", 204),
            (b"HTTP/1.1 101\n", 101),
            (b"HTTP/1.1 599", 599),
        ] {
            assert_eq!(
                parse_response(bytes).map(|r| r.status_code),
                Some(code),
                "{bytes:?}"
            );
        }
        for bytes in [
            &b"HTTP/1.1 99 x\r\n"[..],
            b"HTTP/1.1 600 x\r\n",
            b"HTTP/1.1 2000\r\n",
            b"HTTP/1.1 20",
            b"HTTP/1.1  200 OK",
            b"HTTP/2 200\r\n",
            b"http/1.1 200 OK\r\n",
            b"HTTP/1.1 2x0 OK\r\n",
            b"",
        ] {
            assert_eq!(parse_response(bytes), None, "{bytes:?}");
        }
        assert_eq!(
            parse_response(b"HTTP/1.0 301 Moved\r\n"),
            Some(Response {
                version: Version::Http10,
                status_code: 301
            })
        );
    }
}
