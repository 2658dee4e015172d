//! containerd's own API over its gRPC socket: `Containers.Get` in a namespace (the
//! `containerd-namespace` request header), and `Namespaces.List` to find which namespace holds
//! a container when its cgroup path does not say.
//!
//! The messages are declared here with the fields egret reads (numbers from containerd's
//! `api/services/containers/v1/containers.proto` and `namespaces/v1/namespace.proto`).

use std::{collections::BTreeMap, path::Path, time::Duration};

use super::{
    grpc::{found, Connection, GrpcError},
    pod_from_labels, serviceaccount, PodInfo, RuntimeContainer,
};

/// The subset of containerd's protobuf messages egret uses.
pub mod proto {
    use std::collections::BTreeMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Container {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(btree_map = "string, string", tag = "2")]
        pub labels: BTreeMap<String, String>,
        #[prost(string, tag = "3")]
        pub image: String,
        #[prost(message, optional, tag = "4")]
        pub runtime: Option<Runtime>,
        /// The OCI runtime spec, JSON in a `google.protobuf.Any`.
        #[prost(message, optional, tag = "5")]
        pub spec: Option<Any>,
        #[prost(string, tag = "11")]
        pub sandbox: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Runtime {
        #[prost(string, tag = "1")]
        pub name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetContainerRequest {
        #[prost(string, tag = "1")]
        pub id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetContainerResponse {
        #[prost(message, optional, tag = "1")]
        pub container: Option<Container>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Namespace {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(btree_map = "string, string", tag = "2")]
        pub labels: BTreeMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListNamespacesRequest {
        #[prost(string, tag = "1")]
        pub filter: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListNamespacesResponse {
        #[prost(message, repeated, tag = "1")]
        pub namespaces: Vec<Namespace>,
    }
}

pub const GET: &str = "/containerd.services.containers.v1.Containers/Get";
pub const LIST_NAMESPACES: &str = "/containerd.services.namespaces.v1.Namespaces/List";
/// The request header that selects the namespace.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";
/// Namespaces tried before listing them: Kubernetes' CRI plugin, then `ctr`/`nerdctl`'s default.
pub const USUAL_NAMESPACES: [&str; 2] = ["k8s.io", "default"];
/// Bound on the namespaces tried from a listing.
pub const MAX_NAMESPACES: usize = 64;

/// The two calls egret makes, so the namespace search can be tested without containerd.
pub(crate) trait ContainerdApi {
    /// The container in `namespace`, `None` when containerd says `NOT_FOUND`.
    async fn get(
        &mut self,
        namespace: &str,
        id: &str,
    ) -> Result<Option<proto::Container>, GrpcError>;
    async fn namespaces(&mut self) -> Result<Vec<String>, GrpcError>;
}

impl ContainerdApi for Connection {
    async fn get(
        &mut self,
        namespace: &str,
        id: &str,
    ) -> Result<Option<proto::Container>, GrpcError> {
        let request = proto::GetContainerRequest { id: id.to_owned() };
        let metadata = [(NAMESPACE_HEADER, namespace)];
        found(
            self.unary(GET, &metadata, &request).await,
            |proto::GetContainerResponse { container }| container,
            "Containers.Get answered without a container",
        )
    }

    async fn namespaces(&mut self) -> Result<Vec<String>, GrpcError> {
        let request = proto::ListNamespacesRequest::default();
        let proto::ListNamespacesResponse { namespaces } = self
            .unary::<_, proto::ListNamespacesResponse>(LIST_NAMESPACES, &[], &request)
            .await?;
        Ok(namespaces
            .into_iter()
            .map(|proto::Namespace { name, labels: _ }| name)
            .collect())
    }
}

/// Whether the search can go on to the next namespace after this error: a status about
/// that namespace (or a namespace name that is no valid header value) yes; a broken
/// connection, a timeout or a malformed answer no.
fn namespace_specific(err: &GrpcError) -> bool {
    match err {
        GrpcError::Status { .. } | GrpcError::Metadata(_) => true,
        GrpcError::Connect { .. }
        | GrpcError::H2(_)
        | GrpcError::Request(_)
        | GrpcError::HttpStatus(_)
        | GrpcError::Malformed(_)
        | GrpcError::TooLarge { .. }
        | GrpcError::Decode(_)
        | GrpcError::Timeout(_) => false,
    }
}

/// Finds container `id`: in the path's namespace if it names one, then `k8s.io`, then
/// `default`, then every other namespace containerd lists. `Ok(None)` when no namespace has it.
pub(crate) async fn find<A: ContainerdApi>(
    api: &mut A,
    id: &str,
    hint: Option<&str>,
) -> Result<Option<(String, proto::Container)>, GrpcError> {
    let mut tried: Vec<String> = Vec::new();
    let mut answered = false;
    let mut last_error = None;
    let mut listed: Option<Vec<String>> = None;
    let first: Vec<String> = hint
        .into_iter()
        .chain(USUAL_NAMESPACES)
        .map(str::to_owned)
        .collect();
    let mut queue = first.into_iter();
    loop {
        let Some(namespace) = queue.next() else {
            if listed.is_some() {
                break;
            }
            let namespaces = api.namespaces().await?;
            queue = namespaces
                .iter()
                .filter(|ns| !tried.contains(ns))
                .take(MAX_NAMESPACES)
                .cloned()
                .collect::<Vec<_>>()
                .into_iter();
            listed = Some(namespaces);
            continue;
        };
        if tried.contains(&namespace) {
            continue;
        }
        tried.push(namespace.clone());
        match api.get(&namespace, id).await {
            Ok(Some(container)) => return Ok(Some((namespace, container))),
            Ok(None) => answered = true,
            Err(err) if namespace_specific(&err) => {
                log::debug!("containerd namespace {namespace:?}: {err}");
                last_error = Some(err);
            }
            Err(err) => return Err(err),
        }
    }
    match last_error {
        Some(err) if !answered => Err(err),
        _ => Ok(None),
    }
}

/// The kubelet's container name label.
pub const K8S_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// nerdctl's name label.
pub const NERDCTL_NAME: &str = "nerdctl/name";

/// The CRI plugin's label telling a pod's app container (`container`) from its sandbox.
pub const CRI_KIND: &str = "io.cri-containerd.kind";
/// The CRI annotation (in the OCI spec) naming an app container's sandbox.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// What egret reads from a container's OCI spec.
#[derive(Debug, Default, serde::Deserialize)]
struct OciSpec {
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    mounts: Vec<OciMount>,
}

#[derive(Debug, serde::Deserialize)]
struct OciMount {
    #[serde(default)]
    destination: String,
    #[serde(default)]
    source: String,
}

/// The spec's JSON; an absent or unreadable spec is an empty one (the spec only adds to what
/// the labels say).
fn oci_spec(spec: Option<&proto::Any>) -> OciSpec {
    spec.and_then(|any| serde_json::from_slice(&any.value).ok())
        .unwrap_or_default()
}

/// The sandbox of a pod's app container: containerd's `sandbox` field, else the CRI
/// annotation.
fn sandbox_of(container: &proto::Container) -> Option<String> {
    if container.labels.get(CRI_KIND).map(String::as_str) != Some("container") {
        return None;
    }
    let id = Some(container.sandbox.clone())
        .filter(|id| !id.is_empty())
        .or_else(|| {
            oci_spec(container.spec.as_ref())
                .annotations
                .remove(SANDBOX_ID)
        })?;
    (id != container.id && !id.is_empty() && id.len() <= 128).then_some(id)
}

/// Maps containerd's record: name from the kubelet's label, else nerdctl's, else the id; the
/// pod's service account from the token mounted into it.
pub fn to_runtime(container: proto::Container) -> RuntimeContainer {
    let proto::Container {
        id,
        labels,
        image,
        runtime: _,
        spec,
        sandbox: _,
    } = container;
    let name = labels
        .get(K8S_CONTAINER_NAME)
        .or_else(|| labels.get(NERDCTL_NAME))
        .filter(|name| !name.is_empty())
        .cloned()
        .unwrap_or_else(|| id.clone());
    let service_account = oci_spec(spec.as_ref())
        .mounts
        .iter()
        .find(|mount| mount.destination.trim_end_matches('/') == serviceaccount::MOUNT)
        .and_then(|mount| serviceaccount::from_dir(Path::new(&mount.source)));
    let pod = pod_from_labels(&labels).map(|pod| PodInfo {
        service_account,
        ..pod
    });
    RuntimeContainer {
        name: Some(name),
        image: Some(image).filter(|image| !image.is_empty()),
        runtime: "containerd",
        labels,
        pod,
        id,
    }
}

/// The pod's labels are on its sandbox, not on its app containers (the kubelet gives the CRI
/// the pod's labels with the sandbox): adds the sandbox's labels the container lacks. A
/// sandbox that cannot be read costs only the workload.
async fn add_sandbox_labels<A: ContainerdApi>(
    api: &mut A,
    namespace: &str,
    container: &mut proto::Container,
) {
    let Some(sandbox) = sandbox_of(container) else {
        return;
    };
    match api.get(namespace, &sandbox).await {
        Ok(Some(proto::Container { labels, .. })) => {
            for (key, value) in labels {
                container.labels.entry(key).or_insert(value);
            }
        }
        Ok(None) => log::debug!(
            "containerd: sandbox {sandbox} of {} not found",
            container.id
        ),
        Err(err) => log::debug!("containerd: sandbox {sandbox} of {}: {err}", container.id),
    }
}

/// Asks containerd at `socket` about container `id`.
pub async fn lookup(
    socket: &Path,
    id: &str,
    namespace_hint: Option<&str>,
    timeout: Duration,
) -> Result<Option<RuntimeContainer>, GrpcError> {
    let mut connection = Connection::connect(socket, timeout).await?;
    let Some((namespace, mut container)) = find(&mut connection, id, namespace_hint).await? else {
        return Ok(None);
    };
    add_sandbox_labels(&mut connection, &namespace, &mut container).await;
    Ok(Some(to_runtime(container)))
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, HashMap},
        sync::{Arc, Mutex},
    };

    use http::HeaderMap;
    use prost::Message as _;
    use tokio::net::UnixListener;

    use super::*;
    use crate::container::grpc::tests::{serve, Handler};
    use crate::container::grpc::NOT_FOUND;
    use crate::container::tests::{labels, ID};
    use crate::output::tests::TempDir;

    /// A kubelet-created container as the CRI plugin stores it.
    fn cri_container() -> proto::Container {
        proto::Container {
            id: ID.to_owned(),
            labels: labels(&[
                ("io.cri-containerd.kind", "container"),
                ("io.kubernetes.container.name", "web"),
                ("io.kubernetes.pod.name", "web-7d4b9c8f6-x2x9z"),
                ("io.kubernetes.pod.namespace", "shop"),
                (
                    "io.kubernetes.pod.uid",
                    "4c8f1a2b-3d4e-5f60-7182-93a4b5c6d7e8",
                ),
                ("app", "web"),
            ]),
            image: "docker.io/library/nginx:1.25".to_owned(),
            runtime: Some(proto::Runtime {
                name: "io.containerd.runc.v2".to_owned(),
            }),
            spec: None,
            sandbox: String::new(),
        }
    }

    #[derive(Default)]
    struct Fake {
        containers: HashMap<(String, String), proto::Container>,
        namespaces: Vec<String>,
        /// Namespaces whose `get` fails with this status code.
        failing: HashMap<String, u32>,
        broken: bool,
        calls: Vec<String>,
    }

    impl ContainerdApi for Fake {
        async fn get(
            &mut self,
            namespace: &str,
            id: &str,
        ) -> Result<Option<proto::Container>, GrpcError> {
            self.calls.push(format!("get {namespace}"));
            if self.broken {
                return Err(GrpcError::Timeout(Duration::from_secs(2)));
            }
            if let Some(code) = self.failing.get(namespace) {
                return Err(GrpcError::Status {
                    code: *code,
                    message: "failed".to_owned(),
                });
            }
            Ok(self
                .containers
                .get(&(namespace.to_owned(), id.to_owned()))
                .cloned())
        }

        async fn namespaces(&mut self) -> Result<Vec<String>, GrpcError> {
            self.calls.push("list".to_owned());
            Ok(self.namespaces.clone())
        }
    }

    fn fake_with(namespace: &str) -> Fake {
        let mut fake = Fake {
            namespaces: ["default", "k8s.io", "moby", "buildkit", namespace]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            ..Fake::default()
        };
        fake.containers
            .insert((namespace.to_owned(), ID.to_owned()), cri_container());
        fake
    }

    /// The pod's labels are read from its sandbox (named by the CRI annotation in the spec);
    /// the container's own labels win; a missing sandbox costs nothing else.
    #[tokio::test]
    async fn sandbox_labels_and_service_account() {
        let dir = TempDir::new("ctrd-sa");
        std::fs::write(
            dir.0.join("token"),
            serviceaccount::tests::token(r#"{"sub":"system:serviceaccount:shop:web-sa"}"#),
        )
        .unwrap();
        let sandbox_id = "b".repeat(64);
        let spec = serde_json::json!({
            "annotations": {SANDBOX_ID: sandbox_id},
            "mounts": [{"destination": "/etc/hosts", "source": "/nowhere"},
                       {"destination": format!("{}/", serviceaccount::MOUNT),
                        "source": dir.0}],
        });
        let mut container = proto::Container {
            spec: Some(proto::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".to_owned(),
                value: serde_json::to_vec(&spec).unwrap(),
            }),
            ..cri_container()
        };
        let mut fake = Fake::default();
        add_sandbox_labels(&mut fake, "k8s.io", &mut container.clone()).await;
        assert_eq!(fake.calls, ["get k8s.io"]);
        fake.containers.insert(
            ("k8s.io".to_owned(), sandbox_id.clone()),
            proto::Container {
                id: sandbox_id.clone(),
                labels: labels(&[
                    ("io.cri-containerd.kind", "sandbox"),
                    ("pod-template-hash", "7d4b9c8f6"),
                    ("app", "from-the-pod"),
                ]),
                ..cri_container()
            },
        );
        add_sandbox_labels(&mut fake, "k8s.io", &mut container).await;
        assert_eq!(
            container
                .labels
                .get("pod-template-hash")
                .map(String::as_str),
            Some("7d4b9c8f6")
        );
        assert_eq!(container.labels.get("app").map(String::as_str), Some("web"));
        let info = crate::container::ContainerInfo::new(
            to_runtime(container),
            &crate::container::path::tests::container(
                ID,
                crate::container::RuntimeHint::Containerd,
            ),
            &[],
        );
        let pod = info.pod.unwrap();
        assert_eq!(pod.service_account.as_deref(), Some("web-sa"));
        let workload = pod.workload.unwrap();
        assert_eq!(
            (
                workload.kind,
                workload.name.as_str(),
                workload.namespace.as_str()
            ),
            (crate::container::WorkloadKind::Deployment, "web", "shop")
        );
        // A sandbox is not asked about its own sandbox; no annotation, no call.
        let mut calls = Fake::default();
        add_sandbox_labels(&mut calls, "k8s.io", &mut cri_container()).await;
        assert!(calls.calls.is_empty());
    }

    #[tokio::test]
    async fn the_hinted_namespace_first() -> Result<(), GrpcError> {
        let mut fake = fake_with("tenant-a");
        let found = find(&mut fake, ID, Some("tenant-a")).await?;
        assert_eq!(found.map(|(ns, _)| ns).as_deref(), Some("tenant-a"));
        assert_eq!(fake.calls, ["get tenant-a"]);
        Ok(())
    }

    #[tokio::test]
    async fn then_k8s_io_then_default() -> Result<(), GrpcError> {
        let mut fake = fake_with("k8s.io");
        assert!(find(&mut fake, ID, None).await?.is_some());
        assert_eq!(fake.calls, ["get k8s.io"]);
        let mut fake = fake_with("default");
        assert!(find(&mut fake, ID, None).await?.is_some());
        assert_eq!(fake.calls, ["get k8s.io", "get default"]);
        // A wrong hint costs one call.
        let mut fake = fake_with("default");
        assert!(find(&mut fake, ID, Some("elsewhere")).await?.is_some());
        assert_eq!(fake.calls, ["get elsewhere", "get k8s.io", "get default"]);
        Ok(())
    }

    #[tokio::test]
    async fn then_every_listed_namespace_once() -> Result<(), GrpcError> {
        let every_namespace = [
            "get k8s.io",
            "get default",
            "list",
            "get moby",
            "get buildkit",
        ];
        let mut fake = fake_with("buildkit");
        let found = find(&mut fake, ID, Some("k8s.io")).await?;
        assert_eq!(found.map(|(ns, _)| ns).as_deref(), Some("buildkit"));
        assert_eq!(fake.calls, every_namespace);
        let mut fake = fake_with("nowhere");
        fake.namespaces.retain(|ns| ns != "nowhere");
        assert!(find(&mut fake, ID, None).await?.is_none());
        assert_eq!(fake.calls, every_namespace);
        Ok(())
    }

    #[tokio::test]
    async fn errors() {
        // A namespace-specific failure is skipped.
        let mut fake = fake_with("moby");
        fake.failing.insert("k8s.io".to_owned(), 9);
        assert!(find(&mut fake, ID, None).await.is_ok_and(|f| f.is_some()));
        // Only failures and no answer: the failure.
        let mut fake = Fake {
            namespaces: vec!["k8s.io".to_owned()],
            ..Fake::default()
        };
        fake.failing.insert("k8s.io".to_owned(), 13);
        fake.failing.insert("default".to_owned(), 13);
        assert!(matches!(
            find(&mut fake, ID, None).await,
            Err(GrpcError::Status { code: 13, .. })
        ));
        // A broken connection stops the search at once.
        let mut fake = fake_with("moby");
        fake.broken = true;
        assert!(matches!(
            find(&mut fake, ID, None).await,
            Err(GrpcError::Timeout(_))
        ));
        assert_eq!(fake.calls, ["get k8s.io"]);
    }

    #[test]
    fn maps_containers() {
        let runtime = to_runtime(cri_container());
        assert_eq!(runtime.id, ID);
        assert_eq!(runtime.name.as_deref(), Some("web"));
        assert_eq!(
            runtime.image.as_deref(),
            Some("docker.io/library/nginx:1.25")
        );
        assert_eq!(runtime.runtime, "containerd");
        assert_eq!(runtime.labels.len(), 6);
        let nerdctl = to_runtime(proto::Container {
            id: ID.to_owned(),
            labels: labels(&[("nerdctl/name", "db")]),
            image: String::new(),
            runtime: None,
            spec: None,
            sandbox: String::new(),
        });
        assert_eq!(nerdctl.name.as_deref(), Some("db"));
        assert_eq!(nerdctl.image, None);
        let bare = to_runtime(proto::Container {
            id: ID.to_owned(),
            ..proto::Container::default()
        });
        assert_eq!(bare.name.as_deref(), Some(ID));
    }

    /// containerd's services faked on an h2 server: checks the namespace header.
    fn fake_containerd(socket: &Path, namespaces: Arc<Mutex<Vec<String>>>) {
        let listener = UnixListener::bind(socket).unwrap();
        let mut handlers: HashMap<&'static str, Handler> = HashMap::new();
        handlers.insert(
            GET,
            Arc::new(|headers: &HeaderMap, message: &[u8]| {
                let namespace = headers
                    .get(NAMESPACE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let request = proto::GetContainerRequest::decode(message).unwrap();
                let reply = if namespace.is_empty() {
                    Err((3, "namespace is required: failed precondition".to_owned()))
                } else if namespace == "k8s.io" && request.id == ID {
                    Ok(proto::GetContainerResponse {
                        container: Some(cri_container()),
                    }
                    .encode_to_vec())
                } else {
                    Err((
                        NOT_FOUND,
                        format!(
                            "container \"{}\" in namespace \"{namespace}\": not found",
                            request.id
                        ),
                    ))
                };
                Box::pin(async move { reply })
            }),
        );
        handlers.insert(
            LIST_NAMESPACES,
            Arc::new(move |_: &HeaderMap, _: &[u8]| {
                let reply = proto::ListNamespacesResponse {
                    namespaces: namespaces
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|name| proto::Namespace {
                            name: name.clone(),
                            labels: BTreeMap::new(),
                        })
                        .collect(),
                }
                .encode_to_vec();
                Box::pin(async move { Ok(reply) })
            }),
        );
        serve(listener, handlers);
    }

    #[tokio::test]
    async fn asks_a_fake_containerd_over_grpc() {
        let dir = TempDir::new("containerd");
        let socket = dir.0.join("containerd.sock");
        fake_containerd(
            &socket,
            Arc::new(Mutex::new(vec!["default".to_owned(), "k8s.io".to_owned()])),
        );
        let timeout = Duration::from_secs(2);
        let found = lookup(&socket, ID, None, timeout).await.unwrap().unwrap();
        assert_eq!(found.name.as_deref(), Some("web"));
        let found = lookup(&socket, ID, Some("default"), timeout)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.image.as_deref(), Some("docker.io/library/nginx:1.25"));
        let other = "a".repeat(64);
        assert!(lookup(&socket, &other, None, timeout)
            .await
            .unwrap()
            .is_none());
        let missing = dir.0.join("missing.sock");
        assert!(matches!(
            lookup(&missing, ID, None, timeout).await,
            Err(GrpcError::Connect { .. })
        ));
    }
}
