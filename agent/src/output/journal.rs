//! Alert lines to the systemd journal, natively (`--journal`).
//!
//! journald's native protocol (systemd's `sd_journal_sendv`, documented in systemd's
//! "Native Journal Protocol"): one unix datagram to `/run/systemd/journal/socket` per entry,
//! a sequence of fields, each either
//!
//! ```text
//! NAME=value\n                            (a value without a newline)
//! NAME\n<value length, 64-bit little endian><value>\n   (any value)
//! ```
//!
//! Field names are upper-case ASCII letters, digits and `_`, not starting with `_` or a digit.
//! Each alert line becomes one entry: `MESSAGE` (the alert's sentence), `PRIORITY` (4,
//! warning), `SYSLOG_IDENTIFIER=egret`, and `EGRET_*` fields from the alert (see
//! [`fields`]), so `journalctl -u egret EGRET_VERDICT=unapproved` finds them. journald adds
//! `_PID`, `_SYSTEMD_UNIT` and the rest from the socket's credentials.
//!
//! Size: every value is cut at [`MAX_VALUE`] bytes (on a UTF-8 boundary), so an entry stays
//! far below the datagram size a unix socket takes (no memfd needed; a watched process can
//! make a domain or executable long, not unbounded). Sending never blocks: an entry the
//! journal does not take is counted (and logged, rate-limited), never fatal.

use std::{io, os::unix::net::UnixDatagram, path::PathBuf};

use crate::schema::{Document, Process};

use super::OutputError;

/// Where journald listens for native entries.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// Longest value sent, in bytes (a longer one is cut there).
pub const MAX_VALUE: usize = 4096;

/// journald's priority for alerts: 4, warning (the same as the syslog copy).
const PRIORITY_ALERT: &str = "4";

/// Appends one field to an entry in the native protocol. `name` must be a valid field name
/// (the names here are constants); `value` is cut at [`MAX_VALUE`] bytes.
pub fn encode_field(out: &mut Vec<u8>, name: &str, value: &str) {
    let value = bounded(value);
    out.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    } else {
        out.push(b'=');
        out.extend_from_slice(value.as_bytes());
    }
    out.push(b'\n');
}

/// `value` cut at [`MAX_VALUE`] bytes on a character boundary.
fn bounded(value: &str) -> &str {
    if value.len() <= MAX_VALUE {
        return value;
    }
    let mut end = MAX_VALUE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value.get(..end).unwrap_or_default()
}

/// The journal fields of an alert document, in order; fields the alert lacks are left out.
pub fn fields(doc: &Document<'_>) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::with_capacity(20);
    let mut put = |name: &'static str, value: Option<String>| {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            out.push((name, value));
        }
    };
    put("MESSAGE", doc.message.as_deref().map(str::to_owned));
    put("PRIORITY", Some(PRIORITY_ALERT.to_owned()));
    put("SYSLOG_IDENTIFIER", Some("egret".to_owned()));
    put("EGRET_EVENT_KIND", Some(doc.event.kind.to_string()));
    put("EGRET_EVENT_ACTION", Some(doc.event.action.to_string()));
    put("EGRET_RULE", doc.rule.as_ref().map(|r| r.name.to_string()));
    let policy = doc.egret.policy.as_ref();
    put("EGRET_VERDICT", policy.map(|p| p.verdict.to_string()));
    put("EGRET_POLICY_MODE", policy.map(|p| p.mode.to_string()));
    let destination = doc.destination.as_ref();
    put(
        "EGRET_DESTINATION_IP",
        destination.and_then(|d| d.ip.as_deref().map(str::to_owned)),
    );
    put(
        "EGRET_DESTINATION_PORT",
        destination.and_then(|d| d.port).map(|p| p.to_string()),
    );
    put(
        "EGRET_DESTINATION_DOMAIN",
        destination.and_then(|d| d.domain.as_deref().map(str::to_owned)),
    );
    put(
        "EGRET_TRANSPORT",
        doc.network.as_ref().map(|n| n.transport.to_string()),
    );
    let process = process_of(doc);
    put(
        "EGRET_PROCESS_EXECUTABLE",
        process
            .as_ref()
            .and_then(|p| p.executable.as_deref().map(str::to_owned)),
    );
    put(
        "EGRET_PROCESS_NAME",
        process.as_ref().map(|p| p.name.to_string()),
    );
    put(
        "EGRET_PROCESS_PID",
        process.as_ref().map(|p| p.pid.to_string()),
    );
    put(
        "EGRET_UNIT",
        doc.egret.systemd.as_ref().map(|u| u.unit.to_string()),
    );
    put(
        "EGRET_CONTAINER_ID",
        doc.container.as_ref().map(|c| c.id.to_string()),
    );
    put(
        "EGRET_REPEATS",
        doc.egret.alert.map(|a| a.repeats.to_string()),
    );
    put("EGRET_SEQUENCE", doc.event.sequence.map(|s| s.to_string()));
    out
}

/// The document's process fields (parsed back when the line carries them pre-rendered).
fn process_of<'a>(doc: &'a Document<'_>) -> Option<Process<'a>> {
    match doc.process.as_ref()? {
        crate::schema::ProcessOut::Fields(process) => Some(Process::clone(process)),
        crate::schema::ProcessOut::Rendered(raw) => serde_json::from_str(raw.get()).ok(),
    }
}

/// One journal entry of an alert document.
pub fn entry(out: &mut Vec<u8>, doc: &Document<'_>) {
    for (name, value) in fields(doc) {
        encode_field(out, name, &value);
    }
}

/// A socket to journald.
pub struct Journal {
    socket: UnixDatagram,
    path: PathBuf,
    entry: Vec<u8>,
    /// Entries sent.
    pub sent: u64,
    /// Entries the journal did not take (gone, no room).
    pub dropped: u64,
}

impl Journal {
    /// Opens a datagram socket to `path` (journald's [`SOCKET`]). A missing journal socket is
    /// an error: `--journal` asks for the journal, and a host without one cannot give it.
    pub fn open(path: PathBuf) -> Result<Self, OutputError> {
        let err = |source| OutputError::Open {
            path: path.display().to_string(),
            source,
        };
        let socket = UnixDatagram::unbound().map_err(err)?;
        socket.set_nonblocking(true).map_err(err)?;
        socket
            .connect(&path)
            .map_err(|source| OutputError::Journal {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Self {
            socket,
            path,
            entry: Vec::with_capacity(4096),
            sent: 0,
            dropped: 0,
        })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Sends one alert document. Never blocks and never fails: an entry that cannot be sent
    /// is counted in `dropped` (logged once per power of two); returns whether it was sent.
    pub fn send(&mut self, doc: &Document<'_>) -> bool {
        self.entry.clear();
        entry(&mut self.entry, doc);
        match self.socket.send(&self.entry) {
            Ok(_) => {
                self.sent += 1;
                true
            }
            Err(err) => {
                self.drop_one(&err);
                false
            }
        }
    }

    fn drop_one(&mut self, err: &io::Error) {
        self.dropped += 1;
        if self.dropped.is_power_of_two() {
            log::warn!(
                "journal {}: {err} ({} alerts not sent to the journal so far)",
                self.path.display(),
                self.dropped
            );
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if self.dropped > 0 {
            log::warn!(
                "journal {}: {} of {} alerts were not sent",
                self.path.display(),
                self.dropped,
                self.dropped + self.sent
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::schema::{Endpoint, Name, Policy, ProcessOut, Unit};

    /// Parses an entry back: (name, value) pairs, both encodings.
    fn decode(mut data: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let nl = data.iter().position(|&b| b == b'\n').unwrap();
            let head = &data[..nl];
            if let Some(eq) = head.iter().position(|&b| b == b'=') {
                out.push((
                    String::from_utf8(head[..eq].to_vec()).unwrap(),
                    head[eq + 1..].to_vec(),
                ));
                data = &data[nl + 1..];
            } else {
                let len = u64::from_le_bytes(data[nl + 1..nl + 9].try_into().unwrap()) as usize;
                let value = data[nl + 9..nl + 9 + len].to_vec();
                assert_eq!(data[nl + 9 + len], b'\n');
                out.push((String::from_utf8(head.to_vec()).unwrap(), value));
                data = &data[nl + 10 + len..];
            }
        }
        out
    }

    #[test]
    fn plain_and_binary_safe_fields() {
        let mut out = Vec::new();
        encode_field(&mut out, "MESSAGE", "hello");
        assert_eq!(out, b"MESSAGE=hello\n");
        out.clear();
        encode_field(&mut out, "EGRET_PROCESS_EXECUTABLE", "/tmp/a\nFAKE=1");
        let mut want = b"EGRET_PROCESS_EXECUTABLE\n".to_vec();
        want.extend_from_slice(&13u64.to_le_bytes());
        want.extend_from_slice(b"/tmp/a\nFAKE=1\n");
        assert_eq!(out, want);
        // A newline in a hostile value cannot inject a field.
        assert_eq!(
            decode(&out),
            [(
                "EGRET_PROCESS_EXECUTABLE".to_owned(),
                b"/tmp/a\nFAKE=1".to_vec()
            )]
        );
    }

    #[test]
    fn values_are_bounded_on_a_character_boundary() {
        let long = "é".repeat(MAX_VALUE); // 2 bytes each
        let mut out = Vec::new();
        encode_field(&mut out, "EGRET_DESTINATION_DOMAIN", &long);
        let fields = decode(&out);
        assert_eq!(fields[0].1.len(), MAX_VALUE);
        assert!(std::str::from_utf8(&fields[0].1).is_ok());
        let odd = format!("a{}", "é".repeat(MAX_VALUE));
        out.clear();
        encode_field(&mut out, "X", &odd);
        assert_eq!(decode(&out)[0].1.len(), MAX_VALUE - 1);
    }

    fn alert_doc() -> Document<'static> {
        let mut doc = Document::default();
        doc.event.kind = Cow::Borrowed("alert");
        doc.event.action = Cow::Borrowed("connect");
        doc.event.sequence = Some(7);
        doc.message = Some(Cow::Borrowed(
            "curl (pid 42, /usr/bin/curl) connected to 192.0.2.1:443/tcp, not approved by policy",
        ));
        doc.rule = Some(Name::of("unapproved-destination"));
        doc.destination = Some(Endpoint {
            ip: Some(Cow::Borrowed("192.0.2.1")),
            port: Some(443),
            domain: Some(Cow::Borrowed("example.org")),
            ..Endpoint::default()
        });
        doc.process = Some(ProcessOut::Fields(Box::new(Process {
            pid: 42,
            executable: Some(Cow::Borrowed("/usr/bin/curl")),
            name: Cow::Borrowed("curl"),
            ..Process::default()
        })));
        doc.egret.policy = Some(Policy {
            verdict: Cow::Borrowed("unapproved"),
            mode: Cow::Borrowed("audit"),
        });
        doc.egret.systemd = Some(Unit {
            unit: Cow::Borrowed("backup.service"),
        });
        doc
    }

    #[test]
    fn an_alert_becomes_structured_fields() {
        let mut out = Vec::new();
        entry(&mut out, &alert_doc());
        let got: Vec<(String, String)> = decode(&out)
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
            .collect();
        let get = |name: &str| got.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(get("MESSAGE"), alert_doc().message.as_deref());
        assert_eq!(get("PRIORITY"), Some("4"));
        assert_eq!(get("SYSLOG_IDENTIFIER"), Some("egret"));
        assert_eq!(get("EGRET_VERDICT"), Some("unapproved"));
        assert_eq!(get("EGRET_DESTINATION_IP"), Some("192.0.2.1"));
        assert_eq!(get("EGRET_DESTINATION_PORT"), Some("443"));
        assert_eq!(get("EGRET_DESTINATION_DOMAIN"), Some("example.org"));
        assert_eq!(get("EGRET_PROCESS_EXECUTABLE"), Some("/usr/bin/curl"));
        assert_eq!(get("EGRET_PROCESS_PID"), Some("42"));
        assert_eq!(get("EGRET_UNIT"), Some("backup.service"));
        assert_eq!(get("EGRET_RULE"), Some("unapproved-destination"));
        assert_eq!(get("EGRET_SEQUENCE"), Some("7"));
        // Every name is a valid journal field name.
        for (name, _) in &got {
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'));
            assert!(!name.starts_with('_'));
        }
        // A missing value is left out, not sent empty.
        assert_eq!(get("EGRET_CONTAINER_ID"), None);
    }

    #[test]
    fn a_rendered_process_is_read_back() {
        let raw = serde_json::value::RawValue::from_string(
            r#"{"pid":9,"name":"wget","executable":"/usr/bin/wget","args":[]}"#.to_owned(),
        )
        .unwrap();
        let raw: &'static serde_json::value::RawValue = Box::leak(raw);
        let mut doc = alert_doc();
        doc.process = Some(ProcessOut::Rendered(raw));
        let got = fields(&doc);
        assert!(got.contains(&("EGRET_PROCESS_PID", "9".to_owned())));
        assert!(got.contains(&("EGRET_PROCESS_EXECUTABLE", "/usr/bin/wget".to_owned())));
    }

    #[test]
    fn sends_entries_counts_failures_and_needs_the_socket() {
        let dir = std::env::temp_dir().join(format!("egret-journal-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("socket");
        let _ = std::fs::remove_file(&path);
        assert!(
            Journal::open(path.clone()).is_err(),
            "no journal socket: a start-up error"
        );
        let receiver = UnixDatagram::bind(&path).unwrap();
        let mut journal = Journal::open(path.clone()).unwrap();
        assert!(journal.send(&alert_doc()));
        let mut buf = vec![0u8; 65536];
        let n = receiver.recv(&mut buf).unwrap();
        let mut want = Vec::new();
        entry(&mut want, &alert_doc());
        assert_eq!(&buf[..n], &want[..]);
        drop(receiver);
        std::fs::remove_file(&path).unwrap();
        assert!(!journal.send(&alert_doc()));
        assert_eq!((journal.sent, journal.dropped), (1, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
