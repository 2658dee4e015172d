//! Lines to the local syslog daemon: RFC 5424 over a unix datagram socket (`/dev/log`).
//!
//! One datagram per line:
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME egret PROCID MSGID - MSG
//! ```
//!
//! PRI is facility × 8 + severity (alert lines 4, warning; every other line 6,
//! informational); TIMESTAMP is when the message was sent, UTC with microseconds (RFC 5424
//! allows at most six fractional digits); MSGID is the line's `event.kind` (`event`,
//! `alert`, `metric`); no structured data; MSG is the JSON line itself, UTF-8, without a BOM.
//! Sending never blocks: a message the daemon has no room for is dropped and counted.

use std::{
    io,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    str::FromStr,
};

use super::OutputError;

/// Where and how to send (`--syslog-socket`, `--syslog-facility`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    pub socket: PathBuf,
    pub facility: Facility,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/dev/log"),
            facility: Facility::DAEMON,
        }
    }
}

/// A syslog facility (RFC 5424 section 6.2.1): 0 to 23.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(u8);

const FACILITY_NAMES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

impl Facility {
    pub const DAEMON: Self = Self(3);

    pub fn code(self) -> u8 {
        self.0
    }
}

impl FromStr for Facility {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let found = FACILITY_NAMES
            .iter()
            .position(|name| name.eq_ignore_ascii_case(s))
            .or_else(|| {
                s.parse::<usize>()
                    .ok()
                    .filter(|n| *n < FACILITY_NAMES.len())
            });
        found
            .and_then(|n| u8::try_from(n).ok())
            .map(Self)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a syslog facility: one of {} (or 0-23)",
                    FACILITY_NAMES.join(", ")
                )
            })
    }
}

/// Severity of a line by its `event.kind`: alerts are warnings, the rest informational.
fn severity(kind: Option<&str>) -> u8 {
    match kind {
        Some("alert") => 4,
        _ => 6,
    }
}

#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    event: Option<HeadEvent<'a>>,
}

#[derive(serde::Deserialize)]
struct HeadEvent<'a> {
    #[serde(borrow)]
    kind: Option<&'a str>,
}

/// `event.kind` of a JSON line.
fn kind_of(line: &[u8]) -> Option<&str> {
    serde_json::from_slice::<Head<'_>>(line).ok()?.event?.kind
}

/// At most `max` printable US-ASCII characters (33-126), else `-` (the NILVALUE).
fn header_field(value: &str, max: usize) -> &str {
    if value.is_empty() || value.len() > max || !value.bytes().all(|b| (33..=126).contains(&b)) {
        "-"
    } else {
        value
    }
}

/// Appends one RFC 5424 message to `out`.
pub fn frame(
    out: &mut Vec<u8>,
    facility: Facility,
    timestamp: &str,
    hostname: &str,
    procid: u32,
    line: &[u8],
) {
    use std::io::Write as _;
    let kind = kind_of(line);
    let pri = u16::from(facility.code()) * 8 + u16::from(severity(kind));
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "<{pri}>1 {timestamp} {} egret {procid} {} - ",
        header_field(hostname, 255),
        header_field(kind.unwrap_or("-"), 32),
    );
    out.extend_from_slice(line);
}

/// A socket to the syslog daemon.
pub struct Syslog {
    socket: UnixDatagram,
    path: PathBuf,
    facility: Facility,
    hostname: String,
    pid: u32,
    frame: Vec<u8>,
    /// Messages sent.
    pub sent: u64,
    /// Messages the daemon did not take (no socket, no room, too large).
    pub dropped: u64,
}

impl Syslog {
    pub fn open(config: &SyslogConfig, hostname: &str) -> Result<Self, OutputError> {
        let err = |source| OutputError::Open {
            path: config.socket.display().to_string(),
            source,
        };
        let socket = UnixDatagram::unbound().map_err(err)?;
        socket.set_nonblocking(true).map_err(err)?;
        if let Err(e) = std::fs::metadata(&config.socket) {
            log::warn!(
                "syslog socket {}: {e}; lines are dropped until it appears",
                config.socket.display()
            );
        }
        Ok(Self {
            socket,
            path: config.socket.clone(),
            facility: config.facility,
            hostname: hostname.to_owned(),
            pid: std::process::id(),
            frame: Vec::with_capacity(4096),
            sent: 0,
            dropped: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one JSON line (no newline). Never blocks and never fails: a line that cannot be
    /// sent is counted in `dropped` (and logged, rate-limited).
    pub fn send(&mut self, line: &[u8]) {
        self.frame.clear();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        frame(
            &mut self.frame,
            self.facility,
            &now,
            &self.hostname,
            self.pid,
            line,
        );
        match self.socket.send_to(&self.frame, &self.path) {
            Ok(_) => self.sent += 1,
            Err(err) => self.drop_one(&err),
        }
    }

    fn drop_one(&mut self, err: &io::Error) {
        self.dropped += 1;
        if self.dropped.is_power_of_two() {
            log::warn!(
                "syslog {}: {err} ({} lines not sent to syslog so far)",
                self.path.display(),
                self.dropped
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facilities_by_name_and_number() {
        assert_eq!("daemon".parse(), Ok(Facility(3)));
        assert_eq!("LOCAL0".parse(), Ok(Facility(16)));
        assert_eq!("local7".parse(), Ok(Facility(23)));
        assert_eq!("authpriv".parse(), Ok(Facility(10)));
        assert_eq!("4".parse(), Ok(Facility(4)));
        assert!("24".parse::<Facility>().is_err());
        assert!("local8".parse::<Facility>().is_err());
        assert!("".parse::<Facility>().is_err());
    }

    #[test]
    fn frames_an_event_line() {
        let line =
            br#"{"@timestamp":"x","event":{"kind":"event","action":"connect"},"a":"\u00e9"}"#;
        let mut out = Vec::new();
        frame(
            &mut out,
            Facility::DAEMON,
            "2026-11-22T06:01:41.920432Z",
            "vm",
            4242,
            line,
        );
        let mut want = b"<30>1 2026-11-22T06:01:41.920432Z vm egret 4242 event - ".to_vec();
        want.extend_from_slice(line);
        assert_eq!(out, want);
    }

    #[test]
    fn alerts_are_warnings_and_odd_headers_are_nil() {
        let mut out = Vec::new();
        frame(
            &mut out,
            "local0".parse().unwrap(),
            "2026-11-22T06:01:41.000000Z",
            "host with space",
            1,
            br#"{"event":{"severity":73,"kind":"alert"}}"#,
        );
        assert!(
            out.starts_with(b"<132>1 2026-11-22T06:01:41.000000Z - egret 1 alert - {"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        out.clear();
        frame(&mut out, Facility(0), "t", "h", 1, b"not json");
        assert_eq!(out, b"<6>1 t h egret 1 - - not json");
        out.clear();
        frame(
            &mut out,
            Facility(0),
            "t",
            "",
            1,
            br#"{"event":{"kind":"metric"}}"#,
        );
        assert!(out.starts_with(b"<6>1 t - egret 1 metric - {"));
    }

    #[test]
    fn sends_datagrams_and_counts_what_it_cannot_send() {
        let dir = std::env::temp_dir().join(format!("egret-syslog-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.sock");
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).unwrap();
        let config = SyslogConfig {
            socket: path.clone(),
            facility: "local3".parse().unwrap(),
        };
        let mut syslog = Syslog::open(&config, "testhost").unwrap();
        syslog.send(br#"{"event":{"kind":"metric"}}"#);
        let mut buf = vec![0u8; 65536];
        let n = receiver.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        // <PRI>1 SP TIMESTAMP SP HOSTNAME SP APP SP PROCID SP MSGID SP SD SP MSG
        let parts: Vec<&str> = got.splitn(8, ' ').collect();
        assert_eq!(parts[0], "<158>1");
        assert_eq!(parts[1].len(), "2026-11-22T06:01:41.920432Z".len(), "{got}");
        assert!(parts[1].ends_with('Z'));
        assert_eq!(
            parts[2..7],
            [
                "testhost",
                "egret",
                &std::process::id().to_string(),
                "metric",
                "-"
            ]
        );
        assert_eq!(parts[7], r#"{"event":{"kind":"metric"}}"#);
        assert_eq!((syslog.sent, syslog.dropped), (1, 0));
        // The daemon went away: counted, no error, no block.
        drop(receiver);
        std::fs::remove_file(&path).unwrap();
        syslog.send(b"{}");
        assert_eq!((syslog.sent, syslog.dropped), (1, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
