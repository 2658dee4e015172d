//! The output schema: every line egret writes is one [`Document`], and every reader of those
//! lines (`egret report`, `egret verify`, the benchmark) reads them back through the same
//! types. Each field name exists here once; `docs/events.md` documents them.
//!
//! Field names follow the Elastic Common Schema where ECS has the field, and live under
//! `egret.*` otherwise. A [`Document`] is the union of every kind of line (connection, end and
//! progress, alert, `dns`, `metric`, the output file's own lines): each kind fills the objects
//! it has, and what it leaves out is not written.
//!
//! Writing borrows from egret's records (`Cow::Borrowed`, no copies); reading borrows from the
//! line where it can. Reading is lenient: every field may be missing (lines of other egret
//! versions, other writers), unknown fields are skipped, and what a kind of line must have is
//! for the reader to check (`report::input::classify` says what is missing).

use std::{borrow::Cow, collections::BTreeMap, fmt};

use serde::{
    de::{self, SeqAccess, Visitor},
    ser::SerializeSeq,
    Deserialize, Deserializer, Serialize, Serializer,
};
use serde_json::value::RawValue;

use crate::metrics::Metrics;

/// A string of a line: borrowed from egret's records when writing, from the line when
/// reading (unless it had escapes). Fields spell it `Cow<'a, str>`: serde borrows only for
/// that exact type, not for an alias of it.
pub type Text<'a> = Cow<'a, str>;

/// One line.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Document<'a> {
    #[serde(rename = "@timestamp", borrow)]
    pub timestamp: Cow<'a, str>,
    #[serde(borrow)]
    pub event: Event<'a>,
    /// `dns` lines: the answer (boxed: most lines have none, and a line is moved whole).
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub dns: Option<Box<Dns<'a>>>,
    /// Alerts: what raised them; connection lines: the approving rule.
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub rule: Option<Name<'a>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub message: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub error: Option<Error<'a>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub process: Option<ProcessOut<'a>>,
    /// This host's side (end lines, UDP lines); the resolver of a `dns` line.
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub source: Option<Endpoint<'a>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub destination: Option<Endpoint<'a>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub network: Option<Network<'a>>,
    #[serde(borrow)]
    pub host: Name<'a>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub container: Option<Container<'a>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub orchestrator: Option<Orchestrator<'a>>,
    /// TCP lines once the first bytes were read: the ClientHello's server name.
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub tls: Option<Tls<'a>>,
    /// TCP lines once the first bytes were read: the HTTP request and response (boxed: rare).
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub http: Option<Box<Http<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub url: Option<Box<Url<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub user_agent: Option<UserAgent<'a>>,
    #[serde(borrow)]
    pub egret: Egret<'a>,
}

/// `tls`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Tls<'a> {
    #[serde(borrow)]
    pub client: TlsClient<'a>,
}

/// `tls.client`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsClient<'a> {
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub server_name: Option<Cow<'a, str>>,
}

/// `http`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Http<'a> {
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub request: Option<HttpRequest<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<HttpResponse>,
    /// `1.1`, `1.0`.
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub version: Option<Cow<'a, str>>,
}

/// `http.request`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpRequest<'a> {
    #[serde(borrow)]
    pub method: Cow<'a, str>,
}

/// `http.response`.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpResponse {
    pub status_code: u16,
}

/// `url`: an HTTP request's target.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Url<'a> {
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub domain: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub path: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub query: Option<Cow<'a, str>>,
}

/// `user_agent`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct UserAgent<'a> {
    #[serde(borrow)]
    pub original: Cow<'a, str>,
}

/// `event`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Event<'a> {
    /// `event`, `alert`, `metric`.
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub outcome: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Keywords::is_empty", borrow)]
    pub category: Keywords<'a>,
    #[serde(rename = "type", skip_serializing_if = "Keywords::is_empty", borrow)]
    pub types: Keywords<'a>,
    #[serde(borrow)]
    pub action: Cow<'a, str>,
    #[serde(borrow)]
    pub module: Cow<'a, str>,
    #[serde(borrow)]
    pub dataset: Cow<'a, str>,
    /// Every line egret writes in one run is numbered from 1 (output-file lines are not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub start: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub end: Option<Cow<'a, str>>,
    /// Nanoseconds (end lines: from `connect()` to the close).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
}

/// A keyword array (`event.category`, `event.type`): written from constants; read as ECS
/// allows it, a list or one string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keywords<'a> {
    Static(&'static [&'static str]),
    Read(Vec<Text<'a>>),
}

impl Default for Keywords<'_> {
    fn default() -> Self {
        Self::Static(&[])
    }
}

impl Keywords<'_> {
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Static(words) => words.is_empty(),
            Self::Read(words) => words.is_empty(),
        }
    }

    pub fn contains(&self, word: &str) -> bool {
        match self {
            Self::Static(words) => words.contains(&word),
            Self::Read(words) => words.iter().any(|w| w == word),
        }
    }
}

impl Serialize for Keywords<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Static(words) => words.serialize(serializer),
            Self::Read(words) => {
                let mut seq = serializer.serialize_seq(Some(words.len()))?;
                for word in words {
                    seq.serialize_element(word)?;
                }
                seq.end()
            }
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Keywords<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrMany;
        impl<'de> Visitor<'de> for OneOrMany {
            type Value = Keywords<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }

            fn visit_borrowed_str<E: de::Error>(self, word: &'de str) -> Result<Self::Value, E> {
                Ok(Keywords::Read(vec![Cow::Borrowed(word)]))
            }

            fn visit_str<E: de::Error>(self, word: &str) -> Result<Self::Value, E> {
                Ok(Keywords::Read(vec![Cow::Owned(word.to_owned())]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut words = Vec::new();
                while let Some(Borrowed(word)) = seq.next_element()? {
                    words.push(word);
                }
                Ok(Keywords::Read(words))
            }
        }
        deserializer.deserialize_any(OneOrMany)
    }
}

/// A string element that borrows from the input when it can.
struct Borrowed<'a>(Text<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for Borrowed<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wrapper<'a>(#[serde(borrow)] Cow<'a, str>);
        Wrapper::deserialize(deserializer).map(|Wrapper(text)| Borrowed(text))
    }
}

/// `{"name": …}`: `host`, `rule`, `container.image`, `egret.k8s.container`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Name<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

impl<'a> Name<'a> {
    pub fn of(name: &'a str) -> Self {
        Self {
            name: Cow::Borrowed(name),
        }
    }
}

/// `error`: a failed connect's errno.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Error<'a> {
    /// `ECONNREFUSED`.
    #[serde(borrow)]
    pub code: Cow<'a, str>,
    #[serde(borrow)]
    pub message: Cow<'a, str>,
}

/// `process`: rendered for this line, or the JSON an earlier line of the same process already
/// rendered (egret's writer reuses it). Read back, it is always the fields.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ProcessOut<'a> {
    /// Boxed: most lines egret writes reuse a rendered `process` (and a line is moved whole).
    Fields(Box<Process<'a>>),
    Rendered(&'a RawValue),
}

impl<'a> ProcessOut<'a> {
    /// The fields, when they were read (or rendered for this line).
    pub fn fields(&self) -> Option<&Process<'a>> {
        match self {
            Self::Fields(process) => Some(process),
            Self::Rendered(_) => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ProcessOut<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Process::deserialize(deserializer).map(|p| Self::Fields(Box::new(p)))
    }
}

/// `process`: the process that made the connection (or, on a `dns` line, asked).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Process<'a> {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub parent: Option<Box<Related<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub executable: Option<Cow<'a, str>>,
    /// Left out when nothing names the program (see `process::image`): never a link's `exe`.
    #[serde(skip_serializing_if = "str::is_empty", borrow)]
    pub name: Cow<'a, str>,
    pub args: Cow<'a, [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub command_line: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub user: Option<User<'a>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub group: Option<Group<'a>>,
    /// The real user and group (`user`/`group` are the effective ones).
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub real_user: Option<User<'a>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub real_group: Option<Group<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty: Option<Tty>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub session_leader: Option<Box<Related<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub entry_leader: Option<Box<Related<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub start: Option<Cow<'a, str>>,
}

/// `process.parent`, `process.session_leader`, `process.entry_leader`: another process.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Related<'a> {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub executable: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub name: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub args: Option<Cow<'a, [String]>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub start: Option<Cow<'a, str>>,
    /// The entry leader's user.
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub user: Option<User<'a>>,
    /// The entry leader's kind of entry.
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub entry_meta: Option<EntryMeta<'a>>,
}

/// `process.entry_leader.entry_meta`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EntryMeta<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub source: Option<EntrySource<'a>>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EntrySource<'a> {
    #[serde(borrow)]
    pub ip: Cow<'a, str>,
}

/// `process.tty`: the controlling terminal.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
#[serde(default)]
pub struct Tty {
    pub char_device: CharDevice,
}

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
#[serde(default)]
pub struct CharDevice {
    pub major: u32,
    pub minor: u32,
}

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
#[serde(default)]
pub struct Id {
    pub id: u32,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct User<'a> {
    /// ECS keeps ids as strings.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub name: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Group<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub name: Option<Cow<'a, str>>,
}

/// `source`, `destination`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Endpoint<'a> {
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub ip: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The name the process resolved (`destination`).
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub domain: Option<Cow<'a, str>>,
    /// Payload bytes this side sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
}

/// `network`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Network<'a> {
    /// `tcp`, `udp`, ...
    #[serde(borrow)]
    pub transport: Cow<'a, str>,
    /// `ipv4`, `ipv6`.
    #[serde(rename = "type", borrow)]
    pub network_type: Cow<'a, str>,
    /// `dns` on `dns` lines.
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub protocol: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub direction: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub iana_number: Option<Cow<'a, str>>,
}

/// `container`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Container<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub name: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub image: Option<Name<'a>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub runtime: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Cow<'a, BTreeMap<String, String>>>,
}

/// `orchestrator`: the pod.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Orchestrator<'a> {
    /// `kubernetes`.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub namespace: Cow<'a, str>,
    #[serde(borrow)]
    pub resource: Resource<'a>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resource<'a> {
    /// `pod`.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// The workload owning the pod (derived from its name and labels), when one is
    /// recognised.
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub parent: Option<Parent<'a>>,
}

/// `orchestrator.resource.parent`: the pod's workload.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Parent<'a> {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job` or `CronJob`.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

/// `dns` of a `dns` line.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Dns<'a> {
    pub id: u16,
    /// `answer`.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub response_code: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub question: Option<DnsQuestion<'a>>,
    #[serde(borrow)]
    pub answers: Vec<DnsAnswer<'a>>,
    #[serde(borrow)]
    pub resolved_ip: Vec<Text<'a>>,
    #[serde(borrow)]
    pub header_flags: Vec<Text<'a>>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DnsQuestion<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    pub qtype: Cow<'a, str>,
    #[serde(borrow)]
    pub class: Cow<'a, str>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DnsAnswer<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    pub rtype: Cow<'a, str>,
    pub ttl: u32,
    #[serde(borrow)]
    pub data: Cow<'a, str>,
}

/// `egret`: what ECS has no field for.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Egret<'a> {
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub cgroup: Option<Cgroup<'a>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub policy: Option<Policy<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<Alert>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub dns: Option<EgretDns<'a>>,
    /// Where `destination.domain` came from, and what the first bytes' name says about it.
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub destination: Option<EgretDestination<'a>>,
    /// What ECS has no field for in a ClientHello.
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub tls: Option<Box<EgretTls<'a>>>,
    /// An HTTP request's path or query was cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<EgretHttp>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub k8s: Option<K8s<'a>>,
    /// `egret.container.identity`: `unknown` when the runtime did not name the container.
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub container: Option<EgretContainer<'a>>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub systemd: Option<Unit<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<Socket>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub connection: Option<ConnectionId<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Tcp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<Failures>,
    /// `new-destination` and `spike` alerts: the workload and destination as the baseline
    /// keys them (docs/baseline.md).
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub baseline: Option<BaselineKey<'a>>,
    /// `spike` alerts: the window's counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spike: Option<Spike>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp: Option<Udp>,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub process: Option<EgretProcess<'a>>,
    /// The audit login of the process (absent when it never logged in).
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub login: Option<Login<'a>>,
    /// `metric` lines (boxed: the counters are many, and a line is moved whole).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Box<Metrics>>,
    /// The output file's own lines.
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub output: Option<Output<'a>>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Cgroup<'a> {
    pub id: u64,
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub path: Option<Cow<'a, str>>,
}

/// `egret.policy`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy<'a> {
    /// `approved`, `unapproved`, `blocked`.
    #[serde(borrow)]
    pub verdict: Cow<'a, str>,
    /// `audit`, `block`.
    #[serde(borrow)]
    pub mode: Cow<'a, str>,
}

/// `egret.alert`: occurrences folded into an alert.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
#[serde(default)]
pub struct Alert {
    pub repeats: u64,
    pub window_seconds: u64,
}

/// `egret.dns`: on connection lines the names known for the address; on `dns` lines what the
/// kernel saw of the answer.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EgretDns<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<Cow<'a, [String]>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<u64>,
    /// The message was longer than the kernel copies; its tail was not seen.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
    /// Block mode: the domain rules (by index) whose names the kernel approved the answer for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approved_rules: Vec<u32>,
    /// `dns` lines: false when the answer was not believed (it names and approves nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted: Option<bool>,
    /// Why it was not believed: `resolver` (not a trusted resolver), `unsolicited` (no query
    /// of this socket to that resolver matches it), or both.
    #[serde(skip_serializing_if = "Vec::is_empty", borrow)]
    pub untrusted: Vec<Text<'a>>,
}

/// `egret.destination`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EgretDestination<'a> {
    /// `dns`, `tls` or `http`: where `destination.domain` came from.
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub name_source: Option<Cow<'a, str>>,
    /// The TLS server name or HTTP Host is not among the names the address's trusted DNS
    /// answers gave (domain fronting, a shared address).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub name_mismatch: bool,
    /// Block mode: `passed`, `refused` or `timed-out`, for a first payload held until its
    /// name was checked.
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub name_check: Option<Cow<'a, str>>,
}

/// `egret.tls`: the ClientHello's offer.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EgretTls<'a> {
    /// The JA4 client fingerprint.
    #[serde(borrow)]
    pub ja4: Cow<'a, str>,
    /// ALPN protocol ids offered, in order.
    #[serde(skip_serializing_if = "Vec::is_empty", borrow)]
    pub alpn: Vec<Text<'a>>,
    /// Versions offered (`1.3`, `1.2`, ...), in order.
    #[serde(skip_serializing_if = "Vec::is_empty", borrow)]
    pub versions: Vec<Text<'a>>,
}

/// `egret.http`.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
#[serde(default)]
pub struct EgretHttp {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub path_truncated: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub query_truncated: bool,
}

/// `egret.container`: whether the runtime named the container.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EgretContainer<'a> {
    /// `unknown`: only what the cgroup path says (id, runtime hint, pod uid) is on the line:
    /// the runtime did not answer within the grace period, failed, or did not know the
    /// container. Absent when the runtime named it.
    #[serde(borrow)]
    pub identity: Cow<'a, str>,
}

/// `egret.k8s`: what ECS lacks about the pod.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct K8s<'a> {
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub pod: Option<PodUid<'a>>,
    /// The container's name in the pod spec.
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub container: Option<Name<'a>>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodUid<'a> {
    #[serde(borrow)]
    pub uid: Cow<'a, str>,
    /// The pod's service account, when the runtime shows its token.
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub service_account: Option<Cow<'a, str>>,
}

/// `egret.systemd`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Unit<'a> {
    #[serde(borrow)]
    pub unit: Cow<'a, str>,
}

/// `egret.socket`.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
#[serde(default)]
pub struct Socket {
    pub cookie: u64,
}

/// `egret.connection`: the same id on a connection's start, progress and end lines.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionId<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// End lines: false when egret never saw the start (it predates egret, or was forgotten).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_seen: Option<bool>,
}

/// `egret.tcp`.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
#[serde(default)]
pub struct Tcp {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_latency_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retransmits: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srtt_us: Option<u32>,
    /// Reset (RST) after the handshake.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

/// `egret.failures`: a repeated-failure alert's count.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
#[serde(default)]
pub struct Failures {
    pub count: u64,
    pub window_seconds: u64,
}

/// `egret.baseline`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BaselineKey<'a> {
    /// `unit`, `kubernetes`, `pod`, `image` or `executable`.
    #[serde(borrow)]
    pub workload_kind: Cow<'a, str>,
    #[serde(borrow)]
    pub workload: Cow<'a, str>,
    /// `HOST:PORT/TRANSPORT`: the trusted DNS name, else the address.
    #[serde(borrow)]
    pub destination: Cow<'a, str>,
}

/// `egret.spike`.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
#[serde(default)]
pub struct Spike {
    pub window_seconds: u64,
    /// Connections ended in the window.
    pub connections: u64,
    /// Connects that failed.
    pub failures: u64,
    /// HTTP responses 400-599.
    pub http_errors: u64,
    /// Errors / connections in the window.
    pub error_share: f64,
    /// The destination's recent normal share of errors.
    pub normal_share: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
}

/// `egret.udp`.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
#[serde(default)]
pub struct Udp {
    pub datagrams: u64,
}

/// `egret.process`: what ECS has no field for.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EgretProcess<'a> {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub args_truncated: bool,
    /// Secrets in the arguments were replaced with `[REDACTED]`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub args_redacted: bool,
    /// It runs from no file on disk (`memfd:NAME`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fileless: bool,
    /// The `#!` script its interpreter runs.
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub script: Option<Cow<'a, str>>,
    /// The controlling terminal's name (`pts/3`).
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub tty: Option<Cow<'a, str>>,
}

impl EgretProcess<'_> {
    pub fn is_empty(&self) -> bool {
        let Self {
            args_truncated,
            args_redacted,
            fileless,
            script,
            tty,
        } = self;
        !args_truncated && !args_redacted && !fileless && script.is_none() && tty.is_none()
    }
}

/// `egret.login`: the audit login uid (with its name) and session.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Login<'a> {
    #[serde(borrow)]
    pub user: User<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<u32>,
}

/// `egret.output`: on the output file's own lines, what the chain continues from and what was
/// repaired.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Output<'a> {
    #[serde(borrow)]
    pub previous: Previous<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired_lines: Option<u64>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Previous<'a> {
    #[serde(skip_serializing_if = "Option::is_none", borrow)]
    pub file: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub hash: Cow<'a, str>,
}

/// Why a line could not be read as a [`Document`].
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not JSON at all (cut short, damaged, something else).
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// JSON, but not an object.
    #[error("not a JSON object")]
    NotObject,
    /// An object whose field has a value of another type than the schema's.
    #[error("unexpected field value: {0}")]
    Field(#[source] serde_json::Error),
}

/// Reads one line (without its newline) as a [`Document`], saying precisely what is wrong
/// with a line that is not one.
///
/// # Errors
/// [`ReadError`].
pub fn read(line: &[u8]) -> Result<Document<'_>, ReadError> {
    if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<de::IgnoredAny>(line) {
            Ok(_) => ReadError::NotObject,
            Err(e) => ReadError::NotJson(e),
        });
    }
    serde_json::from_slice(line).map_err(|e| {
        if e.is_data() {
            ReadError::Field(e)
        } else {
            ReadError::NotJson(e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_says_what_is_wrong_with_a_line() {
        assert!(matches!(read(b"not json"), Err(ReadError::NotJson(_))));
        assert!(matches!(read(b"[1, 2]"), Err(ReadError::NotObject)));
        assert!(matches!(read(b" 42"), Err(ReadError::NotObject)));
        assert!(matches!(read(br#"{"event":"#), Err(ReadError::NotJson(_))));
        assert!(matches!(
            read(br#"{"destination":{"port":70000}}"#),
            Err(ReadError::Field(_))
        ));
        assert!(read(br#" {"event":{"kind":"event"}}"#).is_ok());
    }

    #[test]
    fn keywords_read_as_a_list_or_one_string() {
        let doc: Document<'_> = serde_json::from_str(
            r#"{"event":{"type":["connection","start"],"category":"network"}}"#,
        )
        .unwrap();
        assert!(doc.event.types.contains("start"));
        assert!(!doc.event.types.contains("end"));
        assert!(doc.event.category.contains("network"));
        let written = serde_json::to_string(&Event {
            types: Keywords::Static(&["connection", "end"]),
            ..Event::default()
        })
        .unwrap();
        assert!(
            written.contains(r#""type":["connection","end"]"#),
            "{written}"
        );
        assert!(!written.contains("category"), "{written}");
    }

    #[test]
    fn reading_borrows_from_the_line_and_tolerates_what_is_missing_or_unknown() {
        let line = r#"{"event":{"kind":"event","action":"connect","new":1},"destination":{"ip":"10.0.0.1"},"brand_new":{"x":[1]}}"#;
        let doc: Document<'_> = serde_json::from_str(line).unwrap();
        assert!(matches!(doc.event.kind, Cow::Borrowed("event")));
        let destination = doc.destination.unwrap();
        assert_eq!(destination.ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(destination.port, None);
        assert!(doc.process.is_none());
        assert!(doc.egret.metrics.is_none());
        assert_eq!(doc.timestamp, "");
    }

    #[test]
    fn a_metric_line_reads_back_every_counter() {
        let metrics = Metrics {
            events_received: 7,
            failure_alerts: 2,
            ..Metrics::default()
        };
        let doc = Document {
            egret: Egret {
                metrics: Some(Box::new(metrics)),
                ..Egret::default()
            },
            ..Document::default()
        };
        let line = serde_json::to_string(&doc).unwrap();
        let back: Document<'_> = serde_json::from_str(&line).unwrap();
        assert_eq!(back.egret.metrics.as_deref(), Some(&metrics));
    }
}
