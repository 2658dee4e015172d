//! The ECS form of a [`Lookup`]: `container.*` and `orchestrator.*` at the top level of a
//! line, and the Kubernetes fields ECS lacks under `egret.k8s.*` (the [`crate::schema`]
//! types), borrowed from the lookup.

use std::borrow::Cow;

use serde::Serialize;

use super::{ContainerRef, Lookup};
use crate::schema::{Container, EgretContainer, K8s, Name, Orchestrator, Parent, PodUid, Resource};

/// The three groups of fields for one line.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ContainerFields<'a> {
    /// `container`.
    pub container: Container<'a>,
    /// `orchestrator`: present when the pod is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<Orchestrator<'a>>,
    /// `egret.k8s`: present when a pod uid or container name is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s: Option<K8s<'a>>,
    /// `egret.container`: present (`identity: unknown`) when the runtime did not name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<EgretContainer<'a>>,
}

fn k8s<'a>(
    uid: Option<&'a str>,
    service_account: Option<&'a str>,
    container_name: Option<&'a str>,
) -> Option<K8s<'a>> {
    (uid.is_some() || container_name.is_some()).then(|| K8s {
        pod: uid.map(|uid| PodUid {
            uid: Cow::Borrowed(uid),
            service_account: service_account.map(Cow::Borrowed),
        }),
        container: container_name.map(Name::of),
    })
}

/// What the cgroup path alone says: id, runtime hint, pod uid.
fn from_reference(reference: &ContainerRef) -> ContainerFields<'_> {
    ContainerFields {
        container: Container {
            id: Cow::Borrowed(&reference.id),
            name: None,
            image: None,
            runtime: reference.runtime.name().map(Cow::Borrowed),
            labels: None,
        },
        orchestrator: None,
        k8s: k8s(reference.pod_uid.as_deref(), None, None),
        identity: Some(EgretContainer {
            identity: Cow::Borrowed("unknown"),
        }),
    }
}

impl<'a> ContainerFields<'a> {
    /// The fields for a lookup; `None` when the process is not in a container. `Pending` is
    /// rendered like `Unknown` (the caller decided not to wait longer).
    pub fn new(lookup: &'a Lookup) -> Option<Self> {
        match lookup {
            Lookup::NotAContainer => None,
            Lookup::Pending(reference) | Lookup::Unknown(reference) => {
                Some(from_reference(reference))
            }
            Lookup::Known(info) => {
                let pod = info.pod.as_ref();
                Some(Self {
                    container: Container {
                        id: Cow::Borrowed(&info.id),
                        name: info.name.as_deref().map(Cow::Borrowed),
                        image: info.image.as_deref().map(Name::of),
                        runtime: Some(Cow::Borrowed(info.runtime)),
                        labels: (!info.labels.is_empty()).then_some(Cow::Borrowed(&info.labels)),
                    },
                    orchestrator: pod.map(|pod| Orchestrator {
                        kind: Cow::Borrowed("kubernetes"),
                        namespace: Cow::Borrowed(&pod.namespace),
                        resource: Resource {
                            kind: Cow::Borrowed("pod"),
                            name: Cow::Borrowed(&pod.name),
                            parent: pod
                                .workload
                                .as_ref()
                                .filter(|workload| workload.has_parent())
                                .map(|workload| Parent {
                                    kind: Cow::Borrowed(workload.kind.as_str()),
                                    name: Cow::Borrowed(&workload.name),
                                }),
                        },
                    }),
                    k8s: pod.and_then(|pod| {
                        k8s(
                            pod.uid.as_deref(),
                            pod.service_account.as_deref(),
                            pod.container_name.as_deref(),
                        )
                    }),
                    identity: None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::container::{
        path::tests::container, tests::ID, ContainerInfo, PodInfo, RuntimeHint,
    };

    #[test]
    fn kubernetes_container() {
        let lookup = Lookup::Known(Arc::new(ContainerInfo {
            id: ID.to_owned(),
            name: Some("web".to_owned()),
            image: Some("docker.io/library/nginx:1.25".to_owned()),
            runtime: "containerd",
            labels: [("app".to_owned(), "web".to_owned())].into_iter().collect(),
            pod: Some(PodInfo {
                name: "web-7d4b9c8f6-x2x9z".to_owned(),
                namespace: "shop".to_owned(),
                uid: Some("4c8f1a2b-3d4e-5f60-7182-93a4b5c6d7e8".to_owned()),
                container_name: Some("web".to_owned()),
                workload: Some(crate::container::Workload {
                    kind: crate::container::WorkloadKind::Deployment,
                    name: "web".to_owned(),
                    namespace: "shop".to_owned(),
                }),
                service_account: Some("web-sa".to_owned()),
            }),
        }));
        let fields = ContainerFields::new(&lookup);
        assert_eq!(
            serde_json::to_value(&fields).unwrap(),
            json!({
                "container": {"id": ID, "name": "web",
                              "image": {"name": "docker.io/library/nginx:1.25"},
                              "runtime": "containerd", "labels": {"app": "web"}},
                "orchestrator": {"type": "kubernetes", "namespace": "shop",
                                 "resource": {"type": "pod", "name": "web-7d4b9c8f6-x2x9z",
                                              "parent": {"type": "Deployment", "name": "web"}}},
                "k8s": {"pod": {"uid": "4c8f1a2b-3d4e-5f60-7182-93a4b5c6d7e8",
                                "service_account": "web-sa"},
                        "container": {"name": "web"}}
            })
        );
    }

    #[test]
    fn plain_container() {
        let lookup = Lookup::Known(Arc::new(ContainerInfo {
            id: ID.to_owned(),
            name: Some("web".to_owned()),
            image: None,
            runtime: "docker",
            labels: Default::default(),
            pod: None,
        }));
        assert_eq!(
            serde_json::to_value(ContainerFields::new(&lookup)).unwrap(),
            json!({"container": {"id": ID, "name": "web", "runtime": "docker"}})
        );
    }

    #[test]
    fn unknown_and_pending() {
        let reference = ContainerRef {
            pod_uid: Some("4c8f1a2b-3d4e-5f60-7182-93a4b5c6d7e8".to_owned()),
            ..container(ID, RuntimeHint::Containerd)
        };
        let expected = json!({
            "container": {"id": ID, "runtime": "containerd"},
            "k8s": {"pod": {"uid": "4c8f1a2b-3d4e-5f60-7182-93a4b5c6d7e8"}},
            "identity": {"identity": "unknown"}
        });
        let unknown = Lookup::Unknown(reference.clone());
        assert_eq!(
            serde_json::to_value(ContainerFields::new(&unknown)).unwrap(),
            expected
        );
        let pending = Lookup::Pending(reference);
        assert_eq!(
            serde_json::to_value(ContainerFields::new(&pending)).unwrap(),
            expected
        );
        let bare = Lookup::Unknown(container(ID, RuntimeHint::Unknown));
        assert_eq!(
            serde_json::to_value(ContainerFields::new(&bare)).unwrap(),
            json!({"container": {"id": ID}, "identity": {"identity": "unknown"}})
        );
        assert_eq!(ContainerFields::new(&Lookup::NotAContainer), None);
    }
}
