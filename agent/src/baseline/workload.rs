//! Which workload a connection belongs to: the key its baseline is kept under.
//!
//! The systemd unit, else the Kubernetes workload, else the pod's namespace and name prefix
//! (the pod name without the suffix its controller generated), else the container image,
//! else the executable. [`derive`] is the one place this order is decided.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of identity names a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// A systemd unit (`nginx.service`).
    Unit,
    /// A Kubernetes workload (`NAMESPACE/KIND/NAME`).
    Kubernetes,
    /// A pod's namespace and name prefix (`NAMESPACE/PREFIX`).
    Pod,
    /// A container image.
    Image,
    /// An executable path (or the process name when the path is unknown).
    Executable,
}

impl WorkloadKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Unit => "unit",
            Self::Kubernetes => "kubernetes",
            Self::Pod => "pod",
            Self::Image => "image",
            Self::Executable => "executable",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Unit,
            Self::Kubernetes,
            Self::Pod,
            Self::Image,
            Self::Executable,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// A workload: its kind and name. Written `KIND:NAME` (`unit:nginx.service`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.name(), self.name)
    }
}

impl Workload {
    /// `KIND:NAME` back into a workload.
    pub fn parse(key: &str) -> Option<Self> {
        let (kind, name) = key.split_once(':')?;
        Some(Self {
            kind: WorkloadKind::from_name(kind)?,
            name: name.to_owned(),
        })
    }
}

/// The identity of a connection that workloads are derived from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity<'a> {
    pub systemd_unit: Option<&'a str>,
    /// A Kubernetes workload (`NAMESPACE/KIND/NAME`), when egret knows the pod's owner.
    pub kubernetes: Option<&'a str>,
    pub pod_namespace: Option<&'a str>,
    pub pod_name: Option<&'a str>,
    pub container_image: Option<&'a str>,
    /// The executable path, else the process name.
    pub executable: &'a str,
}

/// The workload of a connection: the unit, else the Kubernetes workload, else the pod's
/// namespace and name prefix, else the container image, else the executable.
pub fn derive(id: &Identity<'_>) -> Workload {
    if let Some(unit) = usable(id.systemd_unit) {
        return Workload {
            kind: WorkloadKind::Unit,
            name: unit.to_owned(),
        };
    }
    // The pod's owner (`orchestrator.resource.parent`, `crate::container::workload`).
    if let Some(k8s) = usable(id.kubernetes) {
        return Workload {
            kind: WorkloadKind::Kubernetes,
            name: k8s.to_owned(),
        };
    }
    if let (Some(ns), Some(pod)) = (usable(id.pod_namespace), usable(id.pod_name)) {
        return Workload {
            kind: WorkloadKind::Pod,
            name: format!("{ns}/{}", pod_prefix(pod)),
        };
    }
    if let Some(image) = usable(id.container_image) {
        return Workload {
            kind: WorkloadKind::Image,
            name: image.to_owned(),
        };
    }
    Workload {
        kind: WorkloadKind::Executable,
        name: id.executable.to_owned(),
    }
}

/// A name that is there and not blank.
fn usable(name: Option<&str>) -> Option<&str> {
    name.filter(|s| !s.trim().is_empty())
}

/// The characters Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
const GENERATED: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generated(segment: &str, lengths: std::ops::RangeInclusive<usize>) -> bool {
    lengths.contains(&segment.len()) && segment.bytes().all(|b| GENERATED.contains(&b))
}

/// A pod's name without what its controller generated: `web-7d4b9c8f6d-x2kqp` → `web`
/// (ReplicaSet hash and pod suffix), `db-0` → `db` (StatefulSet ordinal), `agent-x2kqp` →
/// `agent` (DaemonSet, Job). A name with nothing generated is kept whole.
pub fn pod_prefix(pod: &str) -> &str {
    let Some((rest, last)) = pod.rsplit_once('-') else {
        return pod;
    };
    if rest.is_empty() {
        return pod;
    }
    let ordinal = !last.is_empty() && last.len() <= 5 && last.bytes().all(|b| b.is_ascii_digit());
    if ordinal {
        return rest;
    }
    if !generated(last, 5..=5) {
        return pod;
    }
    match rest.rsplit_once('-') {
        Some((stem, hash)) if !stem.is_empty() && generated(hash, 6..=10) => stem,
        _ => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(exe: &str) -> Identity<'_> {
        Identity {
            executable: exe,
            ..Identity::default()
        }
    }

    #[test]
    fn order_unit_then_kubernetes_then_pod_then_image_then_executable() {
        let all = Identity {
            systemd_unit: Some("app.service"),
            kubernetes: Some("shop/Deployment/web"),
            pod_namespace: Some("shop"),
            pod_name: Some("web-7d4b9c8f6d-x2kqp"),
            container_image: Some("nginx:1.25"),
            executable: "/usr/sbin/nginx",
        };
        assert_eq!(derive(&all).to_string(), "unit:app.service");
        let no_unit = Identity {
            systemd_unit: None,
            ..all
        };
        assert_eq!(
            derive(&no_unit).to_string(),
            "kubernetes:shop/Deployment/web"
        );
        let no_k8s = Identity {
            kubernetes: None,
            ..no_unit
        };
        assert_eq!(derive(&no_k8s).to_string(), "pod:shop/web");
        let no_pod = Identity {
            pod_name: None,
            ..no_k8s
        };
        assert_eq!(derive(&no_pod).to_string(), "image:nginx:1.25");
        assert_eq!(
            derive(&id("/usr/bin/curl")).to_string(),
            "executable:/usr/bin/curl"
        );
        let blank_unit = Identity {
            systemd_unit: Some(" "),
            ..id("/bin/x")
        };
        assert_eq!(derive(&blank_unit).kind, WorkloadKind::Executable);
    }

    #[test]
    fn pod_prefixes() {
        assert_eq!(pod_prefix("web-7d4b9c8f6d-x2kqp"), "web");
        assert_eq!(pod_prefix("my-api-5c9f8b7d4-z9xkq"), "my-api");
        assert_eq!(pod_prefix("db-0"), "db");
        assert_eq!(pod_prefix("fluentd-x2kqp"), "fluentd");
        assert_eq!(pod_prefix("standalone"), "standalone");
        assert_eq!(
            pod_prefix("my-pod"),
            "my-pod",
            "`pod` has vowels: not generated"
        );
        assert_eq!(pod_prefix("-0"), "-0");
    }

    #[test]
    fn keys_round_trip() {
        let w = Workload {
            kind: WorkloadKind::Image,
            name: "reg:5000/app:v1".into(),
        };
        assert_eq!(Workload::parse(&w.to_string()), Some(w));
        assert_eq!(Workload::parse("nope:x"), None);
    }
}
