//! CRI-O through the Kubernetes CRI (`runtime.v1.RuntimeService`) on its gRPC socket:
//! `ContainerStatus` for a container, `PodSandboxStatus` for a pod's infra (pause) container,
//! whose id is the sandbox id.
//!
//! Field numbers are those of `k8s.io/cri-api/pkg/apis/runtime/v1/api.proto`; only the v1 API
//! is spoken (CRI-O 1.20 and later).

use std::{path::Path, time::Duration};

use super::{
    grpc::{found, Connection, GrpcError},
    PodInfo, RuntimeContainer,
};

/// The subset of the CRI messages egret uses.
pub mod proto {
    use std::collections::BTreeMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStatusRequest {
        #[prost(string, tag = "1")]
        pub container_id: String,
        #[prost(bool, tag = "2")]
        pub verbose: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStatusResponse {
        #[prost(message, optional, tag = "1")]
        pub status: Option<ContainerStatus>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStatus {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(message, optional, tag = "2")]
        pub metadata: Option<ContainerMetadata>,
        #[prost(message, optional, tag = "8")]
        pub image: Option<ImageSpec>,
        #[prost(string, tag = "9")]
        pub image_ref: String,
        #[prost(btree_map = "string, string", tag = "12")]
        pub labels: BTreeMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerMetadata {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(uint32, tag = "2")]
        pub attempt: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ImageSpec {
        #[prost(string, tag = "1")]
        pub image: String,
        #[prost(string, tag = "18")]
        pub user_specified_image: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxStatusRequest {
        #[prost(string, tag = "1")]
        pub pod_sandbox_id: String,
        #[prost(bool, tag = "2")]
        pub verbose: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxStatusResponse {
        #[prost(message, optional, tag = "1")]
        pub status: Option<PodSandboxStatus>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxStatus {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(message, optional, tag = "2")]
        pub metadata: Option<PodSandboxMetadata>,
        #[prost(btree_map = "string, string", tag = "7")]
        pub labels: BTreeMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxMetadata {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub uid: String,
        #[prost(string, tag = "3")]
        pub namespace: String,
        #[prost(uint32, tag = "4")]
        pub attempt: u32,
    }
}

pub const CONTAINER_STATUS: &str = "/runtime.v1.RuntimeService/ContainerStatus";
pub const POD_SANDBOX_STATUS: &str = "/runtime.v1.RuntimeService/PodSandboxStatus";

/// The two calls egret makes.
pub(crate) trait CriApi {
    async fn container_status(
        &mut self,
        id: &str,
    ) -> Result<Option<proto::ContainerStatus>, GrpcError>;
    async fn sandbox_status(
        &mut self,
        id: &str,
    ) -> Result<Option<proto::PodSandboxStatus>, GrpcError>;
}

impl CriApi for Connection {
    async fn container_status(
        &mut self,
        id: &str,
    ) -> Result<Option<proto::ContainerStatus>, GrpcError> {
        let request = proto::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        found(
            self.unary(CONTAINER_STATUS, &[], &request).await,
            |proto::ContainerStatusResponse { status }| status,
            "ContainerStatus answered without a status",
        )
    }

    async fn sandbox_status(
        &mut self,
        id: &str,
    ) -> Result<Option<proto::PodSandboxStatus>, GrpcError> {
        let request = proto::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        };
        found(
            self.unary(POD_SANDBOX_STATUS, &[], &request).await,
            |proto::PodSandboxStatusResponse { status }| status,
            "PodSandboxStatus answered without a status",
        )
    }
}

fn non_empty(s: String) -> Option<String> {
    Some(s).filter(|s| !s.is_empty())
}

/// Maps a container's status: the kubelet's container name, the image as the user named it.
pub fn container_to_runtime(status: proto::ContainerStatus) -> RuntimeContainer {
    let proto::ContainerStatus {
        id,
        metadata,
        image,
        image_ref,
        labels,
    } = status;
    let name = metadata
        .and_then(|proto::ContainerMetadata { name, attempt: _ }| non_empty(name))
        .unwrap_or_else(|| id.clone());
    let image = image
        .and_then(
            |proto::ImageSpec {
                 image,
                 user_specified_image,
             }| non_empty(user_specified_image).or_else(|| non_empty(image)),
        )
        .or_else(|| non_empty(image_ref));
    RuntimeContainer {
        name: Some(name),
        image,
        runtime: "cri-o",
        labels,
        pod: None,
        id,
    }
}

/// Maps a pod sandbox's status: the infra container, named by its id, in its pod.
pub fn sandbox_to_runtime(status: proto::PodSandboxStatus) -> RuntimeContainer {
    let proto::PodSandboxStatus {
        id,
        metadata,
        labels,
    } = status;
    let pod = metadata.and_then(
        |proto::PodSandboxMetadata {
             name,
             uid,
             namespace,
             attempt: _,
         }| {
            (!name.is_empty() && !namespace.is_empty()).then(|| PodInfo {
                name,
                namespace,
                uid: non_empty(uid),
                container_name: None,
                workload: None,
                service_account: None,
            })
        },
    );
    RuntimeContainer {
        name: Some(id.clone()),
        image: None,
        runtime: "cri-o",
        labels,
        pod,
        id,
    }
}

/// A container, else a sandbox with that id, else `None`.
pub(crate) async fn find<A: CriApi>(
    api: &mut A,
    id: &str,
) -> Result<Option<RuntimeContainer>, GrpcError> {
    if let Some(status) = api.container_status(id).await? {
        return Ok(Some(container_to_runtime(status)));
    }
    Ok(api.sandbox_status(id).await?.map(sandbox_to_runtime))
}

/// Asks the CRI runtime at `socket` about container `id`.
pub async fn lookup(
    socket: &Path,
    id: &str,
    timeout: Duration,
) -> Result<Option<RuntimeContainer>, GrpcError> {
    let mut connection = Connection::connect(socket, timeout).await?;
    find(&mut connection, id).await
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::Arc};

    use http::HeaderMap;
    use prost::Message as _;
    use tokio::net::UnixListener;

    use super::*;
    use crate::container::grpc::tests::{serve, Handler};
    use crate::container::grpc::NOT_FOUND;
    use crate::container::tests::{labels, ID, ID2 as SANDBOX};
    use crate::output::tests::TempDir;

    fn status() -> proto::ContainerStatus {
        proto::ContainerStatus {
            id: ID.to_owned(),
            metadata: Some(proto::ContainerMetadata {
                name: "web".to_owned(),
                attempt: 0,
            }),
            image: Some(proto::ImageSpec {
                image: "docker.io/library/nginx:1.25".to_owned(),
                user_specified_image: String::new(),
            }),
            image_ref: "docker.io/library/nginx@sha256:0123".to_owned(),
            labels: labels(&[
                ("io.kubernetes.container.name", "web"),
                ("io.kubernetes.pod.name", "web-0"),
                ("io.kubernetes.pod.namespace", "shop"),
                (
                    "io.kubernetes.pod.uid",
                    "4c8f1a2b-3d4e-5f60-7182-93a4b5c6d7e8",
                ),
            ]),
        }
    }

    fn sandbox() -> proto::PodSandboxStatus {
        proto::PodSandboxStatus {
            id: SANDBOX.to_owned(),
            metadata: Some(proto::PodSandboxMetadata {
                name: "web-0".to_owned(),
                uid: "4c8f1a2b-3d4e-5f60-7182-93a4b5c6d7e8".to_owned(),
                namespace: "shop".to_owned(),
                attempt: 1,
            }),
            labels: labels(&[("io.kubernetes.pod.name", "web-0"), ("app", "web")]),
        }
    }

    #[test]
    fn maps_statuses() {
        let container = container_to_runtime(status());
        assert_eq!(container.name.as_deref(), Some("web"));
        assert_eq!(
            container.image.as_deref(),
            Some("docker.io/library/nginx:1.25")
        );
        assert_eq!(container.runtime, "cri-o");
        assert!(container.pod.is_none());
        let user_specified = container_to_runtime(proto::ContainerStatus {
            image: Some(proto::ImageSpec {
                image: "sha256:abc".to_owned(),
                user_specified_image: "nginx:1.25".to_owned(),
            }),
            ..status()
        });
        assert_eq!(user_specified.image.as_deref(), Some("nginx:1.25"));
        let bare = container_to_runtime(proto::ContainerStatus {
            id: ID.to_owned(),
            ..proto::ContainerStatus::default()
        });
        assert_eq!((bare.name.as_deref(), bare.image), (Some(ID), None));

        let pause = sandbox_to_runtime(sandbox());
        assert_eq!(pause.name.as_deref(), Some(SANDBOX));
        assert_eq!(
            pause.pod,
            Some(PodInfo {
                name: "web-0".to_owned(),
                namespace: "shop".to_owned(),
                uid: Some("4c8f1a2b-3d4e-5f60-7182-93a4b5c6d7e8".to_owned()),
                container_name: None,
                ..Default::default()
            })
        );
        let no_metadata = sandbox_to_runtime(proto::PodSandboxStatus {
            metadata: None,
            ..sandbox()
        });
        assert_eq!(no_metadata.pod, None);
    }

    fn fake_crio(socket: &Path) {
        let listener = UnixListener::bind(socket).unwrap();
        let mut handlers: HashMap<&'static str, Handler> = HashMap::new();
        handlers.insert(
            CONTAINER_STATUS,
            Arc::new(|_: &HeaderMap, message: &[u8]| {
                let request = proto::ContainerStatusRequest::decode(message).unwrap();
                let reply = if request.container_id == ID {
                    Ok(proto::ContainerStatusResponse {
                        status: Some(status()),
                    }
                    .encode_to_vec())
                } else {
                    Err((NOT_FOUND, "could not find container".to_owned()))
                };
                Box::pin(async move { reply })
            }),
        );
        handlers.insert(
            POD_SANDBOX_STATUS,
            Arc::new(|_: &HeaderMap, message: &[u8]| {
                let request = proto::PodSandboxStatusRequest::decode(message).unwrap();
                let reply = if request.pod_sandbox_id == SANDBOX {
                    Ok(proto::PodSandboxStatusResponse {
                        status: Some(sandbox()),
                    }
                    .encode_to_vec())
                } else if request.pod_sandbox_id == "f".repeat(64) {
                    // A runtime bug: an empty answer.
                    Ok(Vec::new())
                } else {
                    Err((NOT_FOUND, "could not find pod".to_owned()))
                };
                Box::pin(async move { reply })
            }),
        );
        serve(listener, handlers);
    }

    #[tokio::test]
    async fn asks_a_fake_crio_over_grpc() {
        let dir = TempDir::new("crio");
        let socket = dir.0.join("crio.sock");
        fake_crio(&socket);
        let timeout = Duration::from_secs(2);
        let container = lookup(&socket, ID, timeout).await.unwrap().unwrap();
        assert_eq!(container.name.as_deref(), Some("web"));
        let pause = lookup(&socket, SANDBOX, timeout).await.unwrap().unwrap();
        assert_eq!(pause.pod.map(|p| p.name).as_deref(), Some("web-0"));
        assert!(lookup(&socket, &"a".repeat(64), timeout)
            .await
            .unwrap()
            .is_none());
        assert!(matches!(
            lookup(&socket, &"f".repeat(64), timeout).await,
            Err(GrpcError::Malformed(_))
        ));
    }
}
