//! Which container (and Kubernetes pod) a cgroup path belongs to. Pure string work, no I/O.
//!
//! egret reads cgroup v2 paths relative to the cgroup2 mount (`/system.slice/docker-<id>.scope`);
//! the cgroup v1 layouts (`/docker/<id>`) are recognised too, since the same names appear in
//! hybrid hierarchies and in cgroup v2 with the cgroupfs driver.
//!
//! | layout | runtime hint |
//! | --- | --- |
//! | `/docker/<id>`, `/moby/<id>`, `…/docker-<id>.scope` | Docker |
//! | `/<namespace>/<id>` (`/default/<id>`, `/k8s.io/<id>`), `…/cri-containerd-<id>.scope`, `…/nerdctl-<id>.scope` | containerd |
//! | `…/crio-<id>.scope`, `…/crio-<id>` | CRI-O |
//! | `…/libpod-<id>.scope`, `/libpod_parent/libpod-<id>`, `/libpod_parent/<id>` | Podman |
//! | `/kubepods[/<qos>]/pod<uid>/<id>` (cgroupfs driver) | unknown (any CRI runtime) |
//!
//! `crio-conmon-<id>.scope` and `libpod-conmon-<id>.scope` hold the runtime's monitor process,
//! not the container: they are not containers. A cgroup nested inside a container's
//! (`/docker/<id>/child`) belongs to that container; with containers nested in containers the
//! outermost one is reported, the one the host's runtime knows.

/// Length of a container id: 32 bytes in hex.
pub const ID_LEN: usize = 64;

/// The runtime a cgroup layout points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeHint {
    Docker,
    Containerd,
    CriO,
    Podman,
    /// A bare id (cgroupfs driver under `kubepods`, or a top-level `/<id>`): any runtime.
    Unknown,
}

impl RuntimeHint {
    /// The `container.runtime` name, `None` for [`RuntimeHint::Unknown`].
    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::Docker => Some("docker"),
            Self::Containerd => Some("containerd"),
            Self::CriO => Some("cri-o"),
            Self::Podman => Some("podman"),
            Self::Unknown => None,
        }
    }
}

/// A container named by a cgroup path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// 64 lowercase hex characters.
    pub id: String,
    pub runtime: RuntimeHint,
    /// The Kubernetes pod UID, with dashes as in the API (systemd slice names carry it with
    /// underscores). Only under a `kubepods` hierarchy.
    pub pod_uid: Option<String>,
    /// The containerd namespace of a `/<namespace>/<id>` layout.
    pub namespace_hint: Option<String>,
    /// The uid of a `user@<uid>.service` the container runs under (rootless Podman or Docker):
    /// its runtime socket lives in `/run/user/<uid>/`.
    pub rootless_uid: Option<u32>,
}

/// `true` for exactly 64 hex characters.
pub fn is_container_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What one path component says.
#[derive(Debug, PartialEq, Eq)]
enum Component<'a> {
    Container(&'a str, RuntimeHint),
    /// A runtime monitor (conmon) next to a container: not the container.
    Monitor,
    Other,
}

/// Scope-name prefixes (`<prefix><id>.scope`) and what they mean; checked in order, so the
/// conmon prefixes come before the shorter prefixes they start with.
const SCOPE_PREFIXES: &[(&str, Option<RuntimeHint>)] = &[
    ("docker-", Some(RuntimeHint::Docker)),
    ("cri-containerd-", Some(RuntimeHint::Containerd)),
    ("nerdctl-", Some(RuntimeHint::Containerd)),
    ("crio-conmon-", None),
    ("crio-", Some(RuntimeHint::CriO)),
    ("libpod-conmon-", None),
    ("libpod-", Some(RuntimeHint::Podman)),
];

/// Prefixes of container cgroups without `.scope` (cgroupfs drivers).
const CGROUPFS_PREFIXES: &[(&str, Option<RuntimeHint>)] = &[
    ("crio-conmon-", None),
    ("crio-", Some(RuntimeHint::CriO)),
    ("libpod-conmon-", None),
    ("libpod-", Some(RuntimeHint::Podman)),
];

fn by_prefix<'a>(name: &'a str, prefixes: &[(&str, Option<RuntimeHint>)]) -> Component<'a> {
    for (prefix, hint) in prefixes {
        if let Some(id) = name.strip_prefix(prefix) {
            if is_container_id(id) {
                return match hint {
                    Some(hint) => Component::Container(id, *hint),
                    None => Component::Monitor,
                };
            }
        }
    }
    Component::Other
}

/// Suffixes of systemd unit names that can appear as cgroup directories.
fn is_unit_name(name: &str) -> bool {
    [".slice", ".scope", ".service"]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

/// A containerd namespace name: `[A-Za-z0-9]+([._-][A-Za-z0-9]+)*`, at most 76 characters.
fn is_namespace_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 76 || is_unit_name(name) {
        return false;
    }
    let mut previous_separator = true;
    for b in name.bytes() {
        let separator = matches!(b, b'.' | b'_' | b'-');
        if (separator && previous_separator) || (!separator && !b.is_ascii_alphanumeric()) {
            return false;
        }
        previous_separator = separator;
    }
    !previous_separator
}

fn classify<'a>(
    component: &'a str,
    parent: Option<&str>,
    depth: usize,
    kubepods: bool,
) -> Component<'a> {
    if let Some(name) = component.strip_suffix(".scope") {
        return by_prefix(name, SCOPE_PREFIXES);
    }
    if is_container_id(component) {
        let hint = match parent {
            Some("docker" | "moby") => RuntimeHint::Docker,
            Some("libpod_parent") => RuntimeHint::Podman,
            _ if kubepods => RuntimeHint::Unknown,
            Some(ns) if depth == 1 && is_namespace_name(ns) => RuntimeHint::Containerd,
            _ => RuntimeHint::Unknown,
        };
        return Component::Container(component, hint);
    }
    by_prefix(component, CGROUPFS_PREFIXES)
}

/// A pod UID as the API writes it (lowercase hex and dashes), from its cgroup spelling.
fn normalize_pod_uid(raw: &str) -> Option<String> {
    let uid: String = raw
        .chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    let valid = !uid.is_empty()
        && uid.len() <= ID_LEN
        && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    valid.then_some(uid)
}

/// The pod UID named by a component of a `kubepods` hierarchy: `pod<uid>` (cgroupfs) or
/// `kubepods-<qos>-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid_of(component: &str) -> Option<String> {
    if let Some(stem) = component.strip_suffix(".slice") {
        let (_, raw) = stem.rsplit_once("-pod")?;
        return normalize_pod_uid(raw);
    }
    normalize_pod_uid(component.strip_prefix("pod")?)
}

/// `user@1000.service` → 1000.
fn user_service_uid(component: &str) -> Option<u32> {
    component
        .strip_prefix("user@")?
        .strip_suffix(".service")?
        .parse()
        .ok()
}

/// The container a cgroup path belongs to, or `None` when it is not in one.
pub fn parse(path: &str) -> Option<ContainerRef> {
    let mut kubepods = false;
    let mut pod_uid = None;
    let mut rootless_uid = None;
    let mut parent = None;
    for (depth, component) in path.split('/').filter(|c| !c.is_empty()).enumerate() {
        match classify(component, parent, depth, kubepods) {
            Component::Container(id, runtime) => {
                let namespace_hint = (runtime == RuntimeHint::Containerd && depth == 1)
                    .then_some(parent)
                    .flatten()
                    .filter(|ns| is_namespace_name(ns))
                    .map(str::to_owned);
                return Some(ContainerRef {
                    id: id.to_ascii_lowercase(),
                    runtime,
                    pod_uid: if kubepods { pod_uid } else { None },
                    namespace_hint,
                    rootless_uid,
                });
            }
            Component::Monitor => return None,
            Component::Other => {}
        }
        kubepods |= component.starts_with("kubepods") || component.contains("-kubepods");
        if kubepods {
            if let Some(uid) = pod_uid_of(component) {
                pod_uid = Some(uid);
            }
        }
        if let Some(uid) = user_service_uid(component) {
            rootless_uid = Some(uid);
        }
        parent = Some(component);
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::container::tests::{ID, ID2};

    const UID: &str = "4c8f1a2b-3d4e-5f60-7182-93a4b5c6d7e8";
    const UID_US: &str = "4c8f1a2b_3d4e_5f60_7182_93a4b5c6d7e8";

    /// What a path outside any pod, namespace or user service names.
    pub(crate) fn container(id: &str, runtime: RuntimeHint) -> ContainerRef {
        ContainerRef {
            id: id.to_owned(),
            runtime,
            pod_uid: None,
            namespace_hint: None,
            rootless_uid: None,
        }
    }

    fn in_pod(id: &str, runtime: RuntimeHint) -> ContainerRef {
        ContainerRef {
            pod_uid: Some(UID.to_owned()),
            ..container(id, runtime)
        }
    }

    /// Every one of `paths` parses to `expected`.
    fn assert_parses(expected: Option<ContainerRef>, paths: &[String]) {
        for path in paths {
            assert_eq!(parse(path), expected, "{path}");
        }
    }

    #[test]
    fn docker_layouts() {
        assert_parses(
            Some(container(ID, RuntimeHint::Docker)),
            &[
                // cgroup v1 (and v2 with the cgroupfs driver).
                format!("/docker/{ID}"),
                // cgroup v2, systemd driver.
                format!("/system.slice/docker-{ID}.scope"),
                // docker-in-docker / buildkit parent.
                format!("/moby/{ID}"),
            ],
        );
        // Rootless Docker under the user's systemd.
        assert_eq!(
            parse(&format!(
                "/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{ID}.scope"
            )),
            Some(ContainerRef {
                rootless_uid: Some(1000),
                ..container(ID, RuntimeHint::Docker)
            })
        );
    }

    #[test]
    fn containerd_namespace_layouts() {
        for ns in ["default", "k8s.io", "moby-test", "buildkit_1"] {
            assert_eq!(
                parse(&format!("/{ns}/{ID}")),
                Some(ContainerRef {
                    namespace_hint: Some(ns.to_owned()),
                    ..container(ID, RuntimeHint::Containerd)
                }),
                "{ns}"
            );
        }
        assert_eq!(
            parse(&format!("/system.slice/nerdctl-{ID}.scope")),
            Some(container(ID, RuntimeHint::Containerd))
        );
        assert_parses(
            Some(container(ID, RuntimeHint::Unknown)),
            &[
                // Not a namespace name: a unit, bad separators.
                format!("/system.slice/{ID}"),
                format!("/a..b/{ID}"),
                format!("/-x/{ID}"),
                // Only directly below the root.
                format!("/a/b/{ID}"),
                // A bare id at the top.
                format!("/{ID}"),
            ],
        );
    }

    #[test]
    fn kubepods_cgroupfs_layouts() {
        assert_parses(
            Some(in_pod(ID, RuntimeHint::Unknown)),
            &[
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                format!("/kubepods/pod{UID}/{ID}"),
                // kind / minikube style nesting under another root.
                format!("/kubelet/kubepods/besteffort/pod{UID}/{ID}"),
            ],
        );
        // CRI-O with the cgroupfs manager.
        assert_eq!(
            parse(&format!("/kubepods/burstable/pod{UID}/crio-{ID}")),
            Some(in_pod(ID, RuntimeHint::CriO))
        );
        assert_eq!(
            parse(&format!("/kubepods/burstable/pod{UID}/crio-conmon-{ID}")),
            None
        );
        // Static pods have a hash as uid.
        assert_eq!(
            parse(&format!(
                "/kubepods/pod0123456789abcdef0123456789abcdef/{ID}"
            ))
            .and_then(|c| c.pod_uid),
            Some("0123456789abcdef0123456789abcdef".to_owned())
        );
        // The pod's own cgroup is not a container.
        assert_eq!(parse(&format!("/kubepods/burstable/pod{UID}")), None);
        assert_eq!(parse("/kubepods/burstable"), None);
    }

    #[test]
    fn kubepods_systemd_layouts() {
        let burstable = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice"
        );
        let besteffort = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice"
        );
        assert_parses(
            Some(in_pod(ID, RuntimeHint::Containerd)),
            &[
                format!("{burstable}/cri-containerd-{ID}.scope"),
                format!("{besteffort}/cri-containerd-{ID}.scope"),
                // Guaranteed pods sit directly under kubepods.slice.
                format!("/kubepods.slice/kubepods-pod{UID_US}.slice/cri-containerd-{ID}.scope"),
                // kind: a kubelet cgroup root.
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_US}.slice/cri-containerd-{ID}.scope"
                ),
            ],
        );
        assert_eq!(
            parse(&format!("{burstable}/crio-{ID}.scope")),
            Some(in_pod(ID, RuntimeHint::CriO))
        );
        assert_eq!(
            parse(&format!("{burstable}/docker-{ID}.scope")),
            Some(in_pod(ID, RuntimeHint::Docker))
        );
        // The pause (sandbox) container is a container of the pod like any other.
        assert_eq!(
            parse(&format!("{burstable}/cri-containerd-{ID2}.scope")),
            Some(in_pod(ID2, RuntimeHint::Containerd))
        );
        // CRI-O's monitor, and the pod slice itself.
        assert_eq!(parse(&format!("{burstable}/crio-conmon-{ID}.scope")), None);
        assert_eq!(parse(&burstable), None);
        // A pod-looking slice outside kubepods is no pod.
        assert_eq!(
            parse(&format!(
                "/system.slice/foo-pod{UID_US}.slice/docker-{ID}.scope"
            )),
            Some(container(ID, RuntimeHint::Docker))
        );
    }

    #[test]
    fn crio_layouts() {
        assert_parses(
            Some(container(ID, RuntimeHint::CriO)),
            &[
                format!("/system.slice/crio-{ID}.scope"),
                // CRI-O puts the container's processes one level down with cgroup v2.
                format!("/system.slice/crio-{ID}.scope/container"),
            ],
        );
        assert_eq!(
            parse(&format!("/system.slice/crio-conmon-{ID}.scope")),
            None
        );
    }

    #[test]
    fn podman_layouts() {
        assert_parses(
            Some(container(ID, RuntimeHint::Podman)),
            &[
                format!("/machine.slice/libpod-{ID}.scope"),
                format!("/machine.slice/libpod-{ID}.scope/container"),
                format!("/libpod_parent/libpod-{ID}"),
                format!("/libpod_parent/{ID}"),
                // A podman pod's infra container is a container.
                format!("/machine.slice/machine-libpod_pod_{ID2}.slice/libpod-{ID}.scope"),
            ],
        );
        assert_eq!(
            parse(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
            )),
            Some(ContainerRef {
                rootless_uid: Some(1000),
                ..container(ID, RuntimeHint::Podman)
            })
        );
        assert_parses(
            None,
            &[
                format!("/machine.slice/libpod-conmon-{ID}.scope"),
                format!("/libpod_parent/libpod-conmon-{ID}"),
            ],
        );
    }

    #[test]
    fn nested_cgroups_belong_to_the_outer_container() {
        assert_parses(
            Some(container(ID, RuntimeHint::Docker)),
            &[
                format!("/docker/{ID}/child"),
                format!("/docker/{ID}/a/b/c"),
                format!("/system.slice/docker-{ID}.scope/init"),
                format!("/docker/{ID}/docker/{ID2}"),
            ],
        );
        assert_eq!(
            parse(&format!("/default/{ID}/inner")),
            Some(ContainerRef {
                namespace_hint: Some("default".to_owned()),
                ..container(ID, RuntimeHint::Containerd)
            })
        );
    }

    #[test]
    fn ids_are_exactly_64_hex() {
        let short = ID.get(..63).unwrap_or_default();
        let long = format!("{ID}0");
        let not_hex = format!("{}g", ID.get(..63).unwrap_or_default());
        for bad in [short, long.as_str(), not_hex.as_str(), ""] {
            assert_eq!(parse(&format!("/docker/{bad}")), None, "{bad}");
            assert_eq!(parse(&format!("/system.slice/docker-{bad}.scope")), None);
            assert_eq!(parse(&format!("/system.slice/crio-{bad}.scope")), None);
        }
        assert!(is_container_id(ID));
        assert!(!is_container_id(short));
        // Upper case is accepted and reported in lower case.
        assert_eq!(
            parse(&format!("/docker/{}", ID.to_ascii_uppercase())).map(|c| c.id),
            Some(ID.to_owned())
        );
    }

    #[test]
    fn host_cgroups_are_not_containers() {
        for path in [
            "/",
            "",
            "/system.slice/nginx.service",
            "/system.slice/docker.service",
            "/system.slice/containerd.service",
            "/user.slice/user-1000.slice/session-3.scope",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
            "/init.scope",
            "/docker",
            "/system.slice/docker-compose.scope",
            "/egret-e2e-x/egret-e2e-1.service",
            "//",
        ] {
            assert_eq!(parse(path), None, "{path}");
        }
    }

    #[test]
    fn pod_uids_are_normalised() {
        assert_eq!(
            pod_uid_of(&format!("kubepods-burstable-pod{UID_US}.slice")),
            Some(UID.to_owned())
        );
        assert_eq!(pod_uid_of(&format!("pod{UID}")), Some(UID.to_owned()));
        assert_eq!(
            pod_uid_of(&format!("pod{}", UID.to_ascii_uppercase())),
            Some(UID.to_owned())
        );
        assert_eq!(pod_uid_of("kubepods-burstable.slice"), None);
        assert_eq!(pod_uid_of("kubepods.slice"), None);
        assert_eq!(pod_uid_of("pod"), None);
        assert_eq!(pod_uid_of("podx"), None);
        assert_eq!(pod_uid_of("besteffort"), None);
    }

    #[test]
    fn runtime_names() {
        assert_eq!(RuntimeHint::Docker.name(), Some("docker"));
        assert_eq!(RuntimeHint::Containerd.name(), Some("containerd"));
        assert_eq!(RuntimeHint::CriO.name(), Some("cri-o"));
        assert_eq!(RuntimeHint::Podman.name(), Some("podman"));
        assert_eq!(RuntimeHint::Unknown.name(), None);
    }
}
