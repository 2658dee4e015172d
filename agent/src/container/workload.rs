//! The workload that owns a pod (Deployment, StatefulSet, DaemonSet, Job, CronJob), derived
//! from what the runtime reports: the pod's name and the labels the Kubernetes controllers put
//! on the pods they create. No API server is asked: this is what the pod *claims* (a pod
//! controls its own labels), checked for the shapes the controllers produce. See
//! `docs/containers.md` ("Workloads") for where the heuristics can be wrong.

use std::{collections::BTreeMap, fmt};

/// The kinds egret derives. `Pod`: no controller recognised (a bare pod, a pod of a
/// ReplicaSet without a Deployment, or labels that do not fit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    Pod,
}

impl WorkloadKind {
    /// The Kubernetes kind, as in `orchestrator.resource.parent.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::Job => "Job",
            Self::CronJob => "CronJob",
            Self::Pod => "Pod",
        }
    }

    /// The kind named by `text` (as [`Self::as_str`] writes it).
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Deployment,
            Self::StatefulSet,
            Self::DaemonSet,
            Self::Job,
            Self::CronJob,
            Self::Pod,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pod's owning workload. For [`WorkloadKind::Pod`] the name is the pod's own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
    pub namespace: String,
}

impl Workload {
    /// Whether a controller was recognised (the pod is not its own workload).
    pub fn has_parent(&self) -> bool {
        self.kind != WorkloadKind::Pod
    }
}

/// The labels the controllers put on their pods.
pub mod labels {
    /// Deployment (through its ReplicaSet): the pod template's hash, also in the RS name.
    pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
    /// StatefulSet: the pod's own name.
    pub const STATEFULSET_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
    /// StatefulSet and DaemonSet: the ControllerRevision.
    pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";
    /// DaemonSet: the template generation.
    pub const POD_TEMPLATE_GENERATION: &str = "pod-template-generation";
    /// Job (Kubernetes 1.27 and later; the older unprefixed form too).
    pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
    pub const JOB_NAME_LEGACY: &str = "job-name";
    pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
    pub const CONTROLLER_UID_LEGACY: &str = "controller-uid";
}

/// Longest Kubernetes object name (a DNS-1123 subdomain).
pub const MAX_NAME: usize = 253;
/// Longest label value Kubernetes accepts; longer values are ignored.
pub const MAX_LABEL_VALUE: usize = 63;
/// The alphabet of Kubernetes' random name suffixes and of `pod-template-hash`
/// (`k8s.io/apimachinery/pkg/util/rand`: no vowels, no confusable characters).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Length of the random suffix `generateName` adds.
const SUFFIX_LEN: usize = 5;

/// A DNS-1123 subdomain: what a pod or workload name can be. Anything else (control
/// characters, upper case, spaces, over 253 bytes) is not trusted to derive a name from.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

/// A label's value if it is one Kubernetes would accept (at most 63 bytes of
/// `[A-Za-z0-9._-]`); anything else is ignored.
fn label<'a>(labels: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    labels
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty() && v.len() <= MAX_LABEL_VALUE)
        .filter(|v| {
            v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
}

fn random_suffix(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| SUFFIX_ALPHABET.contains(&b))
}

/// `<base>-<suffix>` where the suffix is `generateName`'s 5 random characters: the base.
fn strip_generated(name: &str) -> Option<&str> {
    let (base, suffix) = name.rsplit_once('-')?;
    (suffix.len() == SUFFIX_LEN && random_suffix(suffix) && !base.is_empty()).then_some(base)
}

/// `<base>-<digits>` (a StatefulSet ordinal, a CronJob's scheduled minute): the base.
fn strip_number(name: &str, digits: std::ops::RangeInclusive<usize>) -> Option<&str> {
    let (base, number) = name.rsplit_once('-')?;
    (digits.contains(&number.len())
        && number.bytes().all(|b| b.is_ascii_digit())
        && !base.is_empty())
    .then_some(base)
}

/// A CronJob's Job is `<cronjob>-<scheduled time in minutes since the epoch>`: 8 digits from
/// 1973 to 2160, which is what is accepted.
fn cronjob_of(job: &str) -> Option<&str> {
    strip_number(job, 8..=8)
}

fn statefulset(pod: &str, labels: &BTreeMap<String, String>) -> Option<String> {
    (label(labels, labels::STATEFULSET_POD_NAME)? == pod).then_some(())?;
    let set = strip_number(pod, 1..=10)?;
    // The revision is `<set>-<hash>` when present.
    match label(labels, labels::CONTROLLER_REVISION_HASH) {
        Some(revision) if !revision.starts_with(&format!("{set}-")) => None,
        _ => Some(set.to_owned()),
    }
}

fn daemonset(pod: &str, labels: &BTreeMap<String, String>) -> Option<String> {
    label(labels, labels::CONTROLLER_REVISION_HASH)?;
    let generation = label(labels, labels::POD_TEMPLATE_GENERATION)?;
    generation
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then_some(())?;
    strip_generated(pod).map(str::to_owned)
}

fn job(pod: &str, labels: &BTreeMap<String, String>) -> Option<String> {
    let job = label(labels, labels::JOB_NAME).or_else(|| label(labels, labels::JOB_NAME_LEGACY))?;
    // `<job>-<random>` or, for an indexed Job, `<job>-<index>-<random>`.
    let base = strip_generated(pod)?;
    let fits = base == job
        || base
            .strip_prefix(job)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()));
    (fits && valid_name(job)).then(|| job.to_owned())
}

fn deployment(pod: &str, labels: &BTreeMap<String, String>) -> Option<String> {
    let hash = label(labels, labels::POD_TEMPLATE_HASH)?;
    random_suffix(hash).then_some(())?;
    let replicaset = strip_generated(pod)?;
    let deployment = replicaset.strip_suffix(hash)?.strip_suffix('-')?;
    (!deployment.is_empty()).then(|| deployment.to_owned())
}

/// The workload owning pod `pod` in `namespace`, from the pod's labels.
///
/// Checked in order: StatefulSet (`statefulset.kubernetes.io/pod-name` equal to the pod's
/// name, `<set>-<ordinal>`), DaemonSet (`controller-revision-hash` and
/// `pod-template-generation`, `<set>-<random>`), Job (`batch.kubernetes.io/job-name` or
/// `job-name`, `<job>-[<index>-]<random>`; a Job named `<cronjob>-<8 digits>` is a CronJob's),
/// Deployment (`pod-template-hash`, `<deployment>-<hash>-<random>`); otherwise the pod itself.
/// A pod name that is no valid object name is never taken apart.
pub fn derive(pod: &str, namespace: &str, labels: &BTreeMap<String, String>) -> Workload {
    let derived = valid_name(pod)
        .then(|| {
            if let Some(name) = statefulset(pod, labels) {
                return Some((WorkloadKind::StatefulSet, name));
            }
            if let Some(name) = daemonset(pod, labels) {
                return Some((WorkloadKind::DaemonSet, name));
            }
            if let Some(job) = job(pod, labels) {
                return Some(match cronjob_of(&job) {
                    Some(cronjob) => (WorkloadKind::CronJob, cronjob.to_owned()),
                    None => (WorkloadKind::Job, job),
                });
            }
            deployment(pod, labels).map(|name| (WorkloadKind::Deployment, name))
        })
        .flatten();
    let (kind, name) = derived.unwrap_or_else(|| (WorkloadKind::Pod, pod.to_owned()));
    Workload {
        kind,
        name,
        namespace: namespace.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::tests::labels as map;

    fn kind_name(pod: &str, pairs: &[(&str, &str)]) -> (WorkloadKind, String) {
        let w = derive(pod, "ns", &map(pairs));
        assert_eq!(w.namespace, "ns");
        (w.kind, w.name)
    }

    fn is(pod: &str, pairs: &[(&str, &str)], kind: WorkloadKind, name: &str) {
        assert_eq!(
            kind_name(pod, pairs),
            (kind, name.to_owned()),
            "pod {pod:?} labels {pairs:?}"
        );
    }

    use WorkloadKind::*;

    #[test]
    fn deployments() {
        let h = [("pod-template-hash", "6d9f7c5b8")];
        is("web-6d9f7c5b8-x2x7q", &h, Deployment, "web");
        // Names with dashes, and a deployment whose name ends in a hash-like word.
        is("shop-api-v2-6d9f7c5b8-x2x7q", &h, Deployment, "shop-api-v2");
        is("web-bcdfg-6d9f7c5b8-x2x7q", &h, Deployment, "web-bcdfg");
        // The hash not in the name: not a Deployment's pod.
        is("web-7777777-x2x7q", &h, Pod, "web-7777777-x2x7q");
        // Suffix with a vowel, wrong length: not generated.
        is("web-6d9f7c5b8-abcde", &h, Pod, "web-6d9f7c5b8-abcde");
        is("web-6d9f7c5b8-x2x7", &h, Pod, "web-6d9f7c5b8-x2x7");
        // No deployment part.
        is("6d9f7c5b8-x2x7q", &h, Pod, "6d9f7c5b8-x2x7q");
        // Hash label with characters the hash never has.
        is(
            "web-AAAA-x2x7q",
            &[("pod-template-hash", "AAAA")],
            Pod,
            "web-AAAA-x2x7q",
        );
        // No hash label: a ReplicaSet's pod or a bare pod, not told apart.
        is("web-6d9f7c5b8-x2x7q", &[], Pod, "web-6d9f7c5b8-x2x7q");
    }

    #[test]
    fn statefulsets() {
        let labels = [
            ("statefulset.kubernetes.io/pod-name", "db-0"),
            ("controller-revision-hash", "db-5c8d7f6b9"),
        ];
        is("db-0", &labels, StatefulSet, "db");
        is(
            "my-db-12",
            &[("statefulset.kubernetes.io/pod-name", "my-db-12")],
            StatefulSet,
            "my-db",
        );
        // The pod-name label naming another pod, a revision of another set, no ordinal.
        is("db-1", &labels, Pod, "db-1");
        is(
            "db-0",
            &[
                ("statefulset.kubernetes.io/pod-name", "db-0"),
                ("controller-revision-hash", "other-5c8d7f6b9"),
            ],
            Pod,
            "db-0",
        );
        is(
            "db",
            &[("statefulset.kubernetes.io/pod-name", "db")],
            Pod,
            "db",
        );
    }

    #[test]
    fn daemonsets() {
        let labels = [
            ("controller-revision-hash", "7b9c8d6f5"),
            ("pod-template-generation", "3"),
        ];
        is("node-exporter-x2x7q", &labels, DaemonSet, "node-exporter");
        is("node-exporter-abcde", &labels, Pod, "node-exporter-abcde");
        is(
            "node-exporter-x2x7q",
            &[("controller-revision-hash", "7b9c8d6f5")],
            Pod,
            "node-exporter-x2x7q",
        );
        is(
            "node-exporter-x2x7q",
            &[
                ("controller-revision-hash", "7b9c8d6f5"),
                ("pod-template-generation", "three"),
            ],
            Pod,
            "node-exporter-x2x7q",
        );
    }

    #[test]
    fn jobs_and_cronjobs() {
        is(
            "migrate-x2x7q",
            &[
                ("batch.kubernetes.io/job-name", "migrate"),
                ("batch.kubernetes.io/controller-uid", "u"),
            ],
            Job,
            "migrate",
        );
        is(
            "migrate-x2x7q",
            &[("job-name", "migrate"), ("controller-uid", "u")],
            Job,
            "migrate",
        );
        // Indexed Job.
        is(
            "work-3-x2x7q",
            &[("batch.kubernetes.io/job-name", "work")],
            Job,
            "work",
        );
        // A CronJob's Job: <cronjob>-<minutes since the epoch>.
        is(
            "backup-29441234-x2x7q",
            &[("batch.kubernetes.io/job-name", "backup-29441234")],
            CronJob,
            "backup",
        );
        // A Job named with a number that is not a schedule (7 digits): a Job.
        is(
            "backup-2944123-x2x7q",
            &[("job-name", "backup-2944123")],
            Job,
            "backup-2944123",
        );
        // The label naming another job.
        is(
            "other-x2x7q",
            &[("job-name", "migrate")],
            Pod,
            "other-x2x7q",
        );
    }

    #[test]
    fn hostile_labels_and_names() {
        // Control characters, over-long values, upper case: ignored.
        is(
            "web-6d9f7c5b8-x2x7q",
            &[("pod-template-hash", "6d9f7c5b8\n")],
            Pod,
            "web-6d9f7c5b8-x2x7q",
        );
        let long = "b".repeat(64);
        let pod = format!("web-{long}-x2x7q");
        is(&pod, &[("pod-template-hash", &long)], Pod, &pod);
        is(
            "evil\u{1b}[31m-x2x7q",
            &[("job-name", "evil\u{1b}[31m")],
            Pod,
            "evil\u{1b}[31m-x2x7q",
        );
        is(
            "Web-6d9f7c5b8-x2x7q",
            &[("pod-template-hash", "6d9f7c5b8")],
            Pod,
            "Web-6d9f7c5b8-x2x7q",
        );
        let huge = format!("{}-6d9f7c5b8-x2x7q", "a".repeat(300));
        is(&huge, &[("pod-template-hash", "6d9f7c5b8")], Pod, &huge);
        // A job-name label with a dot-dot path: not a valid label value.
        is("x-x2x7q", &[("job-name", "../x")], Pod, "x-x2x7q");
    }

    #[test]
    fn precedence_and_kinds() {
        // A StatefulSet pod also carrying a pod-template-hash: the StatefulSet's labels win.
        is(
            "db-0",
            &[
                ("statefulset.kubernetes.io/pod-name", "db-0"),
                ("pod-template-hash", "6d9f7c5b8"),
            ],
            StatefulSet,
            "db",
        );
        for kind in [Deployment, StatefulSet, DaemonSet, Job, CronJob, Pod] {
            assert_eq!(WorkloadKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(WorkloadKind::parse("ReplicaSet"), None);
        assert!(derive(
            "db-0",
            "n",
            &map(&[("statefulset.kubernetes.io/pod-name", "db-0")])
        )
        .has_parent());
        assert!(!derive("db", "n", &map(&[])).has_parent());
        assert!(valid_name("a.b-c"));
        assert!(!valid_name("-a") && !valid_name("a-") && !valid_name("") && !valid_name("a_b"));
    }
}
