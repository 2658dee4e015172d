//! Reading egret's JSON Lines output: one line at a time (bounded), parsed as the schema's
//! [`Document`] (the types egret writes with) and reduced to the few fields a report needs.
//!
//! Every field is optional at the parsing level and unknown fields are ignored, so lines of
//! newer or older egret versions (new fields, new event types) still parse; what a line of a
//! given kind must have is checked in [`classify`], which says what is missing.

use std::{borrow::Cow, io::BufRead, net::IpAddr};

pub use crate::record::NameSource;
use crate::schema::{self, Document, ProcessOut, Text};

/// Lines longer than this are skipped (and reported): no egret line comes near it, and it
/// bounds the memory one line can take.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Reads lines (split on `\n`, a trailing `\r` removed) from a [`BufRead`], holding at most
/// [`MAX_LINE_BYTES`] of one line in memory.
pub struct LineReader<R> {
    inner: R,
    line_no: u64,
    buf: Vec<u8>,
}

/// One line: its number (1-based) and its bytes, or the length of a line that was too long.
pub type NumberedLine<'a> = (u64, Result<&'a [u8], usize>);

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            line_no: 0,
            buf: Vec::new(),
        }
    }

    /// The next line, `None` at the end of the input.
    ///
    /// # Errors
    /// Read errors of the underlying reader.
    pub fn next_line(&mut self) -> std::io::Result<Option<NumberedLine<'_>>> {
        self.buf.clear();
        let mut len = 0_usize;
        let mut seen_any = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if !seen_any {
                    return Ok(None);
                }
                break;
            }
            seen_any = true;
            let newline = available.iter().position(|&b| b == b'\n');
            let (chunk, consumed) = match newline {
                Some(at) => (available.split_at(at).0, at.saturating_add(1)),
                None => (available, available.len()),
            };
            len = len.saturating_add(chunk.len());
            if len <= MAX_LINE_BYTES {
                self.buf.extend_from_slice(chunk);
            } else if !self.buf.is_empty() {
                self.buf = Vec::new();
            }
            self.inner.consume(consumed);
            if newline.is_some() {
                break;
            }
        }
        self.line_no = self.line_no.saturating_add(1);
        if len > MAX_LINE_BYTES {
            return Ok(Some((self.line_no, Err(len))));
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        Ok(Some((self.line_no, Ok(&self.buf))))
    }
}

/// The policy's verdict on a connection (`egret.policy.verdict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approved,
    Unapproved,
    Blocked,
}

impl Verdict {
    /// The stricter of two verdicts (blocked, then unapproved, then approved; any verdict
    /// over none).
    pub fn stricter(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        let rank = |v: Option<Self>| match v {
            None => 0,
            Some(Self::Approved) => 1,
            Some(Self::Unapproved) => 2,
            Some(Self::Blocked) => 3,
        };
        if rank(b) > rank(a) {
            b
        } else {
            a
        }
    }
}

/// What a TCP connection's first bytes said of HTTP (an end line's `http.*` and `url.path`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpSeen<'a> {
    /// `http.request.method`.
    pub method: Option<Cow<'a, str>>,
    /// `url.path` (never the query: `url.query` is not read).
    pub path: Option<Cow<'a, str>>,
    /// `egret.http.path_truncated`.
    pub path_truncated: bool,
    /// `http.response.status_code`.
    pub status: Option<u16>,
}

impl HttpSeen<'_> {
    /// With its strings owned, to outlive the line.
    pub fn into_owned(self) -> HttpSeen<'static> {
        HttpSeen {
            method: own(self.method),
            path: own(self.path),
            path_truncated: self.path_truncated,
            status: self.status,
        }
    }
}

/// An optional line string, owned.
fn own(text: Option<Cow<'_, str>>) -> Option<Cow<'static, str>> {
    text.map(|t| Cow::Owned(t.into_owned()))
}

/// A connection line (`connect` start line or UDP `send` line) or an alert line, reduced to
/// what a report uses. Strings borrow from the line where they can.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// `@timestamp`, nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    pub ip: IpAddr,
    pub port: u16,
    /// `network.transport`, lower-case as egret writes it (`tcp`, `udp`, ...).
    pub transport: Cow<'a, str>,
    /// `destination.domain`: the name the process resolved; on an end line, else the name
    /// the connection's first bytes gave (TLS server name, HTTP Host).
    pub domain: Option<Cow<'a, str>>,
    /// `egret.destination.name_source`: where `domain` came from (`None`: not said, DNS).
    pub name_source: Option<NameSource>,
    pub executable: Option<Cow<'a, str>>,
    pub process_name: Option<Cow<'a, str>>,
    pub unit: Option<Cow<'a, str>>,
    pub container_id: Option<Cow<'a, str>>,
    pub container_name: Option<Cow<'a, str>>,
    pub container_image: Option<Cow<'a, str>>,
    pub pod_namespace: Option<Cow<'a, str>>,
    pub pod_name: Option<Cow<'a, str>>,
    pub pod_uid: Option<Cow<'a, str>>,
    pub verdict: Option<Verdict>,
    /// `rule.name` (for a connection line: the approving rule; `loopback` for the built-in one).
    pub rule: Option<Cow<'a, str>>,
    /// `egret.udp.datagrams` of a `send` line.
    pub datagrams: Option<u64>,
    /// The line starts a connection (counted); false for a UDP flow's later `send` lines
    /// (`event.type` `info`/`end`), which only add datagrams.
    pub new: bool,
    pub host: Option<Cow<'a, str>>,
    pub sequence: Option<u64>,
    /// `egret.connection.id`: joins a TCP connection's start and end lines.
    pub connection_id: Option<Cow<'a, str>>,
    /// End lines: the HTTP request and response the first bytes carried.
    pub http: Option<HttpSeen<'a>>,
    /// The pod's workload (`orchestrator.resource.parent.*`) and the container's labels, for
    /// Kubernetes lines.
    pub workload: Option<WorkloadSeen>,
}

/// A Kubernetes line's workload and labels (owned: few lines carry them, and they outlive it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadSeen {
    /// `Deployment`, ..., or `Pod` when the line names no parent (the pod is its workload).
    pub kind: String,
    pub name: String,
    /// `container.labels` (the allow-listed labels).
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Observation<'_> {
    /// With its strings owned, to outlive the line (a start line waiting for its end).
    pub fn into_owned(self) -> Observation<'static> {
        Observation {
            ts_ns: self.ts_ns,
            ip: self.ip,
            port: self.port,
            transport: Cow::Owned(self.transport.into_owned()),
            domain: own(self.domain),
            name_source: self.name_source,
            executable: own(self.executable),
            process_name: own(self.process_name),
            unit: own(self.unit),
            container_id: own(self.container_id),
            container_name: own(self.container_name),
            container_image: own(self.container_image),
            pod_namespace: own(self.pod_namespace),
            pod_name: own(self.pod_name),
            pod_uid: own(self.pod_uid),
            verdict: self.verdict,
            rule: own(self.rule),
            datagrams: self.datagrams,
            new: self.new,
            host: own(self.host),
            sequence: self.sequence,
            connection_id: own(self.connection_id),
            http: self.http.map(HttpSeen::into_owned),
            workload: self.workload,
        }
    }

    /// A TCP start line that names its connection: it waits for the connection's end line.
    pub fn waits_for_end(&self) -> bool {
        self.new && self.transport == "tcp" && self.connection_id.is_some()
    }
}

/// What a line is.
#[derive(Debug)]
pub enum Line<'a> {
    /// A connection, counted once: a start line or a UDP `send` line.
    Connection(Observation<'a>),
    /// A TCP connection's end line (with its `egret.connection.id`): what the first bytes
    /// named, and a verdict that may have changed since the start line.
    End(Observation<'a>),
    /// An alert about an unapproved or blocked connection.
    Alert(Observation<'a>),
    /// A metric line's loss counters (totals since that egret started; a counter the line
    /// lacks reads as 0).
    Metric {
        host: Option<Cow<'a, str>>,
        lost_kernel: u64,
        dropped_userspace: u64,
    },
    /// Anything else egret writes (DNS lines, progress lines, end lines without a connection
    /// id, kinds this version does not know): not used.
    Ignored,
}

/// `rule.name` of the alerts about unapproved and blocked destinations.
pub const POLICY_ALERT_RULE: &str = "unapproved-destination";

/// Parses one line. `Err` is the message for a line that is not JSON, or lacks (or has a
/// malformed) field its kind needs.
pub fn classify(bytes: &[u8]) -> Result<Line<'_>, String> {
    let doc = schema::read(bytes).map_err(|e| without_values(&e.to_string()))?;
    let event = &doc.event;
    if event.kind.is_empty() {
        return Err("missing field event.kind".to_owned());
    }
    let has_type = |t: &str| event.types.contains(t);
    match event.kind.as_ref() {
        "event" => {
            // A TCP connection counts at its `connect` line; a UDP flow at its first `send`
            // line (type `start`, or no type: older egret), its later ones add datagrams. A
            // TCP end line names what its start line could not; progress lines are about
            // connections already counted.
            // A TCP connection's one line (`--merge-short-connections`) is its start and end.
            let merged = event.action == "connection-end" && has_type("start") && has_type("end");
            let (counted, new) = match event.action.as_ref() {
                "send" => (true, event.types.is_empty() || has_type("start")),
                _ => (has_type("start") && (!has_type("end") || merged), true),
            };
            if !counted && has_type("end") && event.action != "send" && has_connection_id(&doc) {
                return observation(doc).map(|o| {
                    if o.transport == "tcp" {
                        Line::End(o)
                    } else {
                        Line::Ignored
                    }
                });
            }
            // A start line that is not about a destination (a future kind of event) is not a
            // connection.
            if counted && doc.destination.is_some() {
                observation(doc).map(|o| {
                    Line::Connection(Observation {
                        new,
                        // Nothing follows it to join.
                        connection_id: o.connection_id.filter(|_| !merged),
                        ..o
                    })
                })
            } else {
                Ok(Line::Ignored)
            }
        }
        // Policy alerts only: other alerts (`connection-failures`) are about something else.
        "alert" => match doc.rule.as_ref().map(|r| r.name.as_ref()) {
            None | Some(POLICY_ALERT_RULE) => observation(doc).map(Line::Alert),
            Some(_) => Ok(Line::Ignored),
        },
        "metric" => {
            let Document { host, egret, .. } = doc;
            let metrics = egret.metrics.unwrap_or_default();
            Ok(Line::Metric {
                host: non_empty(host.name),
                lost_kernel: metrics.events_lost_kernel,
                dropped_userspace: metrics.events_dropped_userspace,
            })
        }
        _ => Ok(Line::Ignored),
    }
}

/// A parse error as a warning shows it, without the values it quotes (`invalid type: string
/// "…", expected a sequence`): a bad line may hold a secret (arguments written by an egret
/// without redaction, where an array belongs), and a report never shows one. The line and
/// column still say where.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' {
            continue;
        }
        // To the closing quote (serde quotes a value as Rust's `{:?}` does: `\"` inside).
        let mut escaped = false;
        for c in chars.by_ref() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => break,
                (false, _) => {}
            }
        }
        out.push_str("…\"");
    }
    out
}

fn has_connection_id(doc: &Document<'_>) -> bool {
    doc.egret
        .connection
        .as_ref()
        .is_some_and(|c| !c.id.is_empty())
}

/// An empty string is a field the line did not have.
fn non_empty(text: Text<'_>) -> Option<Text<'_>> {
    (!text.is_empty()).then_some(text)
}

/// Parses an RFC 3339 time to nanoseconds since the epoch.
pub fn parse_rfc3339_ns(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()?
        .timestamp_nanos_opt()
}

fn observation(doc: Document<'_>) -> Result<Observation<'_>, String> {
    let Document {
        timestamp,
        event,
        rule,
        process,
        destination,
        network,
        host,
        container,
        orchestrator,
        egret,
        http,
        url,
        ..
    } = doc;
    let http = http_seen(http.map(|h| *h), url.map(|u| *u), egret.http);
    let timestamp = non_empty(timestamp).ok_or("missing field @timestamp")?;
    let ts_ns = parse_rfc3339_ns(&timestamp)
        .ok_or_else(|| format!("@timestamp `{timestamp}` is not an RFC 3339 time"))?;
    let destination = destination.ok_or("missing field destination")?;
    let ip_text = destination.ip.ok_or("missing field destination.ip")?;
    let ip: IpAddr = ip_text
        .parse()
        .map_err(|_| format!("destination.ip `{ip_text}` is not an IP address"))?;
    let port = destination.port.ok_or("missing field destination.port")?;
    let transport = network
        .and_then(|n| non_empty(n.transport))
        .ok_or("missing field network.transport")?;
    let (executable, process_name) = match process {
        Some(ProcessOut::Fields(p)) => (p.executable, non_empty(p.name)),
        Some(ProcessOut::Rendered(_)) | None => (None, None),
    };
    let container = container.unwrap_or_default();
    let pod = orchestrator.unwrap_or_default();
    let workload = (!pod.resource.name.is_empty()).then(|| {
        let (kind, name) = match &pod.resource.parent {
            Some(parent) if !parent.kind.is_empty() && !parent.name.is_empty() => {
                (parent.kind.to_string(), parent.name.to_string())
            }
            _ => ("Pod".to_owned(), pod.resource.name.to_string()),
        };
        WorkloadSeen {
            kind,
            name,
            labels: container.labels.as_deref().cloned().unwrap_or_default(),
        }
    });
    let verdict = match egret.policy.map(|p| p.verdict).as_deref() {
        Some("approved") => Some(Verdict::Approved),
        Some("unapproved") => Some(Verdict::Unapproved),
        Some("blocked") => Some(Verdict::Blocked),
        _ => None,
    };
    Ok(Observation {
        ts_ns,
        ip: ip.to_canonical(),
        port,
        transport: match transport {
            Cow::Borrowed(t) if !t.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Borrowed(t),
            t => Cow::Owned(t.to_ascii_lowercase()),
        },
        domain: destination.domain.and_then(non_empty),
        name_source: egret
            .destination
            .and_then(|d| d.name_source)
            .and_then(|s| NameSource::from_name(&s)),
        executable: executable.and_then(non_empty),
        process_name,
        unit: egret.systemd.and_then(|s| non_empty(s.unit)),
        container_id: non_empty(container.id),
        container_name: container.name.and_then(non_empty),
        container_image: container.image.and_then(|i| non_empty(i.name)),
        pod_namespace: non_empty(pod.namespace),
        pod_name: non_empty(pod.resource.name),
        pod_uid: egret.k8s.and_then(|k| k.pod).and_then(|p| non_empty(p.uid)),
        verdict,
        rule: rule.map(|r| r.name),
        datagrams: egret.udp.map(|u| u.datagrams),
        new: true,
        host: non_empty(host.name),
        sequence: event.sequence,
        connection_id: egret.connection.and_then(|c| non_empty(c.id)),
        http,
        workload,
    })
}

/// The HTTP fields of a line; `None` when it has neither a request nor a status.
fn http_seen<'a>(
    http: Option<schema::Http<'a>>,
    url: Option<schema::Url<'a>>,
    flags: Option<schema::EgretHttp>,
) -> Option<HttpSeen<'a>> {
    let http = http.unwrap_or_default();
    let seen = HttpSeen {
        method: http.request.and_then(|r| non_empty(r.method)),
        path: url.and_then(|u| u.path).and_then(non_empty),
        path_truncated: flags.is_some_and(|f| f.path_truncated),
        status: http
            .response
            .map(|r| r.status_code)
            .filter(|code| *code != 0),
    };
    (seen != HttpSeen::default()).then_some(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<(u64, Result<Vec<u8>, usize>)> {
        let mut r = LineReader::new(std::io::BufReader::with_capacity(7, input));
        let mut out = Vec::new();
        while let Some((n, l)) = r.next_line().unwrap() {
            out.push((n, l.map(<[u8]>::to_vec)));
        }
        out
    }

    #[test]
    fn splits_lines_across_buffer_refills() {
        let got = lines(b"first line\r\nsecond\n\nlast without newline");
        assert_eq!(
            got,
            vec![
                (1, Ok(b"first line".to_vec())),
                (2, Ok(b"second".to_vec())),
                (3, Ok(Vec::new())),
                (4, Ok(b"last without newline".to_vec())),
            ]
        );
        assert!(lines(b"").is_empty());
        assert_eq!(lines(b"\n"), vec![(1, Ok(Vec::new()))]);
    }

    #[test]
    fn too_long_lines_are_skipped_not_held() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.extend_from_slice(b"\nok\n");
        let got = lines(&input);
        assert_eq!(
            got,
            vec![(1, Err(MAX_LINE_BYTES + 10)), (2, Ok(b"ok".to_vec()))]
        );
    }

    const CONNECT: &str = r#"{"@timestamp":"2026-11-22T06:01:41.920432283Z","event":{"kind":"event","category":["network"],"type":["connection","start"],"action":"connect","sequence":1},"process":{"pid":1,"executable":"/usr/bin/curl","name":"curl"},"destination":{"ip":"::ffff:10.0.0.1","port":443,"domain":"api.example.com"},"network":{"transport":"tcp"},"host":{"name":"vm"},"egret":{"systemd":{"unit":"app.service"},"policy":{"verdict":"unapproved","mode":"audit"},"chain":{"new":"field"}},"brand_new":[1,2,3]}"#;

    #[test]
    fn a_connection_line_with_unknown_fields() {
        let Ok(Line::Connection(o)) = classify(CONNECT.as_bytes()) else {
            panic!("not a connection");
        };
        assert_eq!(o.ip, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(o.port, 443);
        assert_eq!(o.transport, "tcp");
        assert_eq!(o.domain.as_deref(), Some("api.example.com"));
        assert_eq!(o.executable.as_deref(), Some("/usr/bin/curl"));
        assert_eq!(o.unit.as_deref(), Some("app.service"));
        assert_eq!(o.verdict, Some(Verdict::Unapproved));
        assert_eq!(o.sequence, Some(1));
        assert_eq!(o.ts_ns, 1_795_327_301_920_432_283);
    }

    #[test]
    fn kinds() {
        let end = CONNECT.replace(r#"["connection","start"]"#, r#"["connection","end"]"#);
        assert!(matches!(classify(end.as_bytes()), Ok(Line::Ignored)));
        let alert = CONNECT.replace(r#""kind":"event""#, r#""kind":"alert""#);
        assert!(matches!(classify(alert.as_bytes()), Ok(Line::Alert(_))));
        let policy_alert = alert.replace(
            r#""host""#,
            r#""rule":{"name":"unapproved-destination"},"host""#,
        );
        assert!(matches!(
            classify(policy_alert.as_bytes()),
            Ok(Line::Alert(_))
        ));
        let failures = alert.replace(
            r#""host""#,
            r#""rule":{"name":"connection-failures"},"host""#,
        );
        assert!(matches!(classify(failures.as_bytes()), Ok(Line::Ignored)));
        let progress = CONNECT.replace(
            r#""type":["connection","start"],"action":"connect""#,
            r#""type":["connection","info"],"action":"connection-progress""#,
        );
        assert!(matches!(classify(progress.as_bytes()), Ok(Line::Ignored)));
        let dns = r#"{"event":{"kind":"event","type":["protocol","info"],"action":"dns-answer"},"dns":{}}"#;
        assert!(matches!(classify(dns.as_bytes()), Ok(Line::Ignored)));
        let metric = r#"{"event":{"kind":"metric"},"host":{"name":"h"},"egret":{"metrics":{"events_lost_kernel":3}}}"#;
        assert!(matches!(
            classify(metric.as_bytes()),
            Ok(Line::Metric {
                lost_kernel: 3,
                dropped_userspace: 0,
                ..
            })
        ));
        let future = r#"{"event":{"kind":"state","type":"start"}}"#;
        assert!(matches!(classify(future.as_bytes()), Ok(Line::Ignored)));
        let send = r#"{"@timestamp":"2026-11-22T06:01:41Z","event":{"kind":"event","action":"send"},"destination":{"ip":"10.0.0.1","port":53},"network":{"transport":"UDP"},"egret":{"udp":{"datagrams":7}}}"#;
        let Ok(Line::Connection(o)) = classify(send.as_bytes()) else {
            panic!("send line");
        };
        assert_eq!((o.transport.as_ref(), o.datagrams), ("udp", Some(7)));
    }

    const END: &str = r#"{"@timestamp":"2026-11-22T06:01:42Z","event":{"kind":"event","type":["connection","end"],"action":"connection-end"},"destination":{"ip":"10.0.0.1","port":80,"domain":"www.example.com"},"network":{"transport":"tcp"},"http":{"request":{"method":"GET"},"response":{"status_code":404},"version":"1.1"},"url":{"domain":"www.example.com","path":"/a/b","query":"token=secret"},"egret":{"connection":{"id":"b-1","start_seen":true},"destination":{"name_source":"http"},"http":{"path_truncated":true},"policy":{"verdict":"blocked"}}}"#;

    #[test]
    fn an_end_line_says_what_the_first_bytes_named() {
        let Ok(Line::End(o)) = classify(END.as_bytes()) else {
            panic!("not an end line");
        };
        assert_eq!(o.connection_id.as_deref(), Some("b-1"));
        assert_eq!(o.domain.as_deref(), Some("www.example.com"));
        assert_eq!(o.name_source, Some(NameSource::Http));
        assert_eq!(o.verdict, Some(Verdict::Blocked));
        let http = o.http.unwrap();
        assert_eq!(http.method.as_deref(), Some("GET"));
        assert_eq!(http.path.as_deref(), Some("/a/b"));
        assert!(http.path_truncated);
        assert_eq!(http.status, Some(404));
        // Without a connection id (older egret) there is nothing to join it to.
        let no_id = END.replace(r#""connection":{"id":"b-1","start_seen":true},"#, "");
        assert!(matches!(classify(no_id.as_bytes()), Ok(Line::Ignored)));
        // A start line has no HTTP; its id is kept.
        let with_id = CONNECT.replace(r#""chain":"#, r#""connection":{"id":"b-1"},"chain":"#);
        let Ok(Line::Connection(start)) = classify(with_id.as_bytes()) else {
            panic!("not a start line");
        };
        assert!(start.waits_for_end());
        assert!(start.http.is_none() && start.name_source.is_none());
        // A UDP flow's last `send` line is a connection line, as before.
        let send = END
            .replace(r#""connection-end""#, r#""send""#)
            .replace(r#""tcp""#, r#""udp""#);
        assert!(matches!(classify(send.as_bytes()), Ok(Line::Connection(o)) if !o.new));
        // A short connection's one line (`--merge-short-connections`) is counted, with what
        // its first bytes named, and waits for nothing.
        let merged = END.replace(r#"["connection","end"]"#, r#"["connection","start","end"]"#);
        let Ok(Line::Connection(one)) = classify(merged.as_bytes()) else {
            panic!("a merged line is a connection");
        };
        assert!(one.new && !one.waits_for_end());
        assert_eq!(one.http.and_then(|h| h.status), Some(404));
        let bad = END.replace("2026-11-22T06:01:42Z", "soon");
        assert!(classify(bad.as_bytes()).is_err(), "an end line is checked");
    }

    #[test]
    fn verdicts_by_strictness() {
        use Verdict::{Approved, Blocked, Unapproved};
        assert_eq!(Verdict::stricter(None, Some(Approved)), Some(Approved));
        assert_eq!(
            Verdict::stricter(Some(Unapproved), Some(Approved)),
            Some(Unapproved)
        );
        assert_eq!(
            Verdict::stricter(Some(Unapproved), Some(Blocked)),
            Some(Blocked)
        );
        assert_eq!(Verdict::stricter(Some(Approved), None), Some(Approved));
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let msg = |s: &str| classify(s.as_bytes()).err().unwrap_or_default();
        assert!(msg("not json at all").starts_with("not JSON"));
        assert_eq!(msg("[1,2]"), "not a JSON object");
        assert_eq!(msg("42"), "not a JSON object");
        assert!(msg(r#"{"event":"#).starts_with("not JSON"));
        assert_eq!(msg(r#"{"a":1}"#), "missing field event.kind");
        let no_ip = CONNECT.replace(r#""ip":"::ffff:10.0.0.1","#, "");
        assert_eq!(msg(&no_ip), "missing field destination.ip");
        let bad_ip = CONNECT.replace("::ffff:10.0.0.1", "10.0.0.999");
        assert_eq!(
            msg(&bad_ip),
            "destination.ip `10.0.0.999` is not an IP address"
        );
        let bad_ts = CONNECT.replace("2026-11-22T06:01:41.920432283Z", "yesterday");
        assert_eq!(
            msg(&bad_ts),
            "@timestamp `yesterday` is not an RFC 3339 time"
        );
        let bad_port = CONNECT.replace(r#""port":443"#, r#""port":70000"#);
        assert!(msg(&bad_port).starts_with("unexpected field value"));
        let no_transport = CONNECT.replace(r#""transport":"tcp""#, r#""x":1"#);
        assert_eq!(msg(&no_transport), "missing field network.transport");
        assert!(classify(b"{\"event\":{\"kind\":\"\xff\"}}").is_err());
    }
}
