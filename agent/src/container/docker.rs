//! The Docker Engine API (and Podman's Docker-compatible API) over its unix socket:
//! `GET /containers/{id}/json`, the fields egret reports.

use std::{collections::BTreeMap, path::Path};

use serde::Deserialize;

use super::{
    http::{self, HttpError},
    path::is_container_id,
    RuntimeContainer,
};

/// Bound on an inspect document (a container with a large environment or many mounts is
/// tens of kilobytes).
pub const MAX_BODY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("the API answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("the inspect document did not parse: {0}")]
    Json(#[from] serde_json::Error),
    #[error("asked for container {asked}, the API described {answered}")]
    WrongContainer { asked: String, answered: String },
    #[error("{0:?} is not a container id")]
    BadId(String),
}

impl DockerError {
    /// The runtime answered, but with something egret could not use.
    pub fn is_malformed(&self) -> bool {
        match self {
            Self::Http(HttpError::Malformed(_) | HttpError::TooLarge { .. })
            | Self::Json(_)
            | Self::WrongContainer { .. } => true,
            Self::Http(HttpError::Connect { .. } | HttpError::Io(_) | HttpError::Truncated)
            | Self::Status { .. }
            | Self::BadId(_) => false,
        }
    }
}

/// What `docker inspect` says about a container, the fields egret uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerContainer {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: Option<String>,
    /// `Config.Image`: the image as the container was created from it (`nginx:1.25`).
    pub image: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `State.Status`: `created`, `running`, `paused`, `restarting`, `exited`, `dead`.
    pub status: Option<String>,
    /// `State.Pid`: the container's init process on the host, when running.
    pub pid: Option<u32>,
    /// `Mounts[].Source` of the mount at the kubelet's service-account path (cri-dockerd):
    /// where the pod's token is on the host.
    pub token_dir: Option<String>,
}

impl DockerContainer {
    pub fn into_runtime(self, runtime: &'static str) -> RuntimeContainer {
        let Self {
            id,
            name,
            image,
            labels,
            status: _,
            pid: _,
            token_dir,
        } = self;
        let service_account =
            token_dir.and_then(|dir| super::serviceaccount::from_dir(Path::new(&dir)));
        let pod = super::pod_from_labels(&labels).map(|pod| super::PodInfo {
            service_account,
            ..pod
        });
        RuntimeContainer {
            id,
            name,
            image,
            runtime,
            labels,
            pod,
        }
    }
}

#[derive(Deserialize)]
struct Inspect {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Name", default)]
    name: Option<String>,
    #[serde(rename = "Config", default)]
    config: Option<InspectConfig>,
    #[serde(rename = "State", default)]
    state: Option<InspectState>,
    #[serde(rename = "Mounts", default)]
    mounts: Option<Vec<InspectMount>>,
}

#[derive(Deserialize)]
struct InspectMount {
    #[serde(rename = "Source", default)]
    source: Option<String>,
    #[serde(rename = "Destination", default)]
    destination: Option<String>,
}

#[derive(Deserialize)]
struct InspectConfig {
    #[serde(rename = "Image", default)]
    image: Option<String>,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct InspectState {
    #[serde(rename = "Status", default)]
    status: Option<String>,
    #[serde(rename = "Pid", default)]
    pid: Option<i64>,
}

#[derive(Deserialize)]
struct ApiMessage {
    #[serde(default)]
    message: String,
}

/// Maps an inspect document.
pub fn from_inspect(body: &[u8]) -> Result<DockerContainer, serde_json::Error> {
    let Inspect {
        id,
        name,
        config,
        state,
        mounts,
    } = serde_json::from_slice(body)?;
    let token_dir = mounts
        .into_iter()
        .flatten()
        .find(|m| {
            m.destination.as_deref().map(|d| d.trim_end_matches('/'))
                == Some(super::serviceaccount::MOUNT)
        })
        .and_then(|m| m.source)
        .filter(|s| !s.is_empty());
    let (image, labels) = match config {
        Some(InspectConfig { image, labels }) => (image, labels.unwrap_or_default()),
        None => (None, BTreeMap::new()),
    };
    let (status, pid) = match state {
        Some(InspectState { status, pid }) => (status, pid),
        None => (None, None),
    };
    Ok(DockerContainer {
        id,
        name: name
            .map(|n| n.strip_prefix('/').map(str::to_owned).unwrap_or(n))
            .filter(|n| !n.is_empty()),
        image: image.filter(|i| !i.is_empty()),
        labels,
        status,
        pid: pid.and_then(|p| u32::try_from(p).ok()).filter(|p| *p != 0),
        token_dir,
    })
}

/// The `message` of an API error body, shortened, or the body itself.
fn error_message(body: &[u8]) -> String {
    let message = serde_json::from_slice::<ApiMessage>(body)
        .map(|m| m.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    message.chars().take(200).collect()
}

/// Maps an HTTP response to the container, `None` for 404.
pub fn from_response(
    id: &str,
    response: &http::Response,
) -> Result<Option<DockerContainer>, DockerError> {
    match response.status {
        200 => {
            let container = from_inspect(&response.body)?;
            if container.id != id {
                return Err(DockerError::WrongContainer {
                    asked: id.to_owned(),
                    answered: container.id,
                });
            }
            Ok(Some(container))
        }
        404 => Ok(None),
        status => Err(DockerError::Status {
            status,
            message: error_message(&response.body),
        }),
    }
}

/// `GET /containers/{id}/json`; `Ok(None)` when the engine does not know the container.
pub async fn inspect(socket: &Path, id: &str) -> Result<Option<DockerContainer>, DockerError> {
    if !is_container_id(id) {
        return Err(DockerError::BadId(id.to_owned()));
    }
    let response = http::get(socket, &format!("/containers/{id}/json"), MAX_BODY).await?;
    from_response(id, &response)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::container::tests::ID;

    /// Shaped like `docker inspect` of a running container (trimmed, but with the nesting and
    /// the null fields a real one has).
    pub(crate) fn inspect_json(id: &str) -> String {
        format!(
            r#"{{
  "Id": "{id}",
  "Created": "2026-11-22T06:01:40.123456789Z",
  "Path": "/docker-entrypoint.sh",
  "Args": ["nginx", "-g", "daemon off;"],
  "State": {{"Status": "running", "Running": true, "Paused": false, "Restarting": false,
            "OOMKilled": false, "Dead": false, "Pid": 4242, "ExitCode": 0, "Error": "",
            "StartedAt": "2026-11-22T06:01:40.5Z", "FinishedAt": "0001-01-01T00:00:00Z"}},
  "Image": "sha256:a8758716bb6aa4d90071160d27028fe4eaee7ce8166221a97d30440c8eac2be6",
  "ResolvConfPath": "/var/lib/docker/containers/{id}/resolv.conf",
  "Name": "/web",
  "RestartCount": 0,
  "Driver": "overlay2",
  "Platform": "linux",
  "HostConfig": {{"NetworkMode": "bridge", "CgroupParent": "", "Binds": null}},
  "Mounts": [],
  "Config": {{
    "Hostname": "3f4e5d6c7b8a",
    "User": "",
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin", "NGINX_VERSION=1.25.3"],
    "Cmd": ["nginx", "-g", "daemon off;"],
    "Image": "nginx:1.25",
    "Volumes": null,
    "WorkingDir": "",
    "Entrypoint": ["/docker-entrypoint.sh"],
    "OnBuild": null,
    "Labels": {{"app": "web", "com.docker.compose.project": "shop",
               "maintainer": "NGINX Docker Maintainers"}},
    "StopSignal": "SIGQUIT"
  }},
  "NetworkSettings": {{"Networks": {{"bridge": {{"IPAddress": "172.17.0.2"}}}}}}
}}"#
        )
    }

    #[test]
    fn maps_an_inspect_document() -> Result<(), serde_json::Error> {
        let container = from_inspect(inspect_json(ID).as_bytes())?;
        assert_eq!(
            container,
            DockerContainer {
                id: ID.to_owned(),
                name: Some("web".to_owned()),
                image: Some("nginx:1.25".to_owned()),
                labels: [
                    ("app", "web"),
                    ("com.docker.compose.project", "shop"),
                    ("maintainer", "NGINX Docker Maintainers"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
                status: Some("running".to_owned()),
                pid: Some(4242),
                token_dir: None,
            }
        );
        Ok(())
    }

    /// cri-dockerd's containers: the pod from the kubelet's labels, its service account from
    /// the token behind the mount at the kubelet's path.
    #[test]
    fn kubernetes_token_mount() {
        let dir = crate::output::tests::TempDir::new("docker-sa");
        std::fs::write(
            dir.0.join("token"),
            super::super::serviceaccount::tests::token(
                r#"{"kubernetes.io":{"serviceaccount":{"name":"builder"}}}"#,
            ),
        )
        .unwrap();
        let doc = serde_json::json!({
            "Id": ID, "Name": "/k8s_app_web-0_shop_uid_0",
            "Config": {"Image": "x", "Labels": {
                "io.kubernetes.pod.name": "web-0", "io.kubernetes.pod.namespace": "shop",
                "io.kubernetes.container.name": "app"}},
            "Mounts": [{"Source": "/etc/hosts", "Destination": "/etc/hosts"},
                       {"Source": dir.0, "Destination": "/var/run/secrets/kubernetes.io/serviceaccount"}]
        });
        let container = from_inspect(doc.to_string().as_bytes()).unwrap();
        assert_eq!(container.token_dir.as_deref(), dir.0.to_str());
        let pod = container.into_runtime("docker").pod.unwrap();
        assert_eq!(
            (pod.name.as_str(), pod.service_account.as_deref()),
            ("web-0", Some("builder"))
        );
    }

    #[test]
    fn tolerates_missing_and_null_fields() -> Result<(), serde_json::Error> {
        let exited = format!(
            r#"{{"Id":"{ID}","Name":"","State":{{"Status":"exited","Pid":0}},"Config":{{"Image":"","Labels":null}}}}"#
        );
        let container = from_inspect(exited.as_bytes())?;
        assert_eq!(container.name, None);
        assert_eq!(container.image, None);
        assert!(container.labels.is_empty());
        assert_eq!(container.status.as_deref(), Some("exited"));
        assert_eq!(container.pid, None);
        let bare = from_inspect(format!(r#"{{"Id":"{ID}"}}"#).as_bytes())?;
        assert_eq!((bare.name, bare.image, bare.pid), (None, None, None));
        // Podman's compat API also sends the name with a slash; without one it is kept.
        let podman = from_inspect(format!(r#"{{"Id":"{ID}","Name":"db"}}"#).as_bytes())?;
        assert_eq!(podman.name.as_deref(), Some("db"));
        Ok(())
    }

    #[test]
    fn rejects_malformed_documents() {
        for bad in [
            "",
            "null",
            "[]",
            "{}",
            r#"{"Id": 5}"#,
            r#"{"Id":"x","Config":{"Labels":{"a":1}}}"#,
            r#"{"Id":"x","State":{"Pid":"one"}}"#,
            "{\"Id\":\"x\"",
        ] {
            assert!(from_inspect(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn maps_responses() -> Result<(), DockerError> {
        let ok = http::Response {
            status: 200,
            body: inspect_json(ID).into_bytes(),
        };
        assert!(from_response(ID, &ok)?.is_some());
        let not_found = http::Response {
            status: 404,
            body: format!(r#"{{"message":"No such container: {ID}"}}"#).into_bytes(),
        };
        assert_eq!(from_response(ID, &not_found)?, None);
        let server_error = http::Response {
            status: 500,
            body: br#"{"message":"boom"}"#.to_vec(),
        };
        assert!(matches!(
            from_response(ID, &server_error),
            Err(DockerError::Status { status: 500, ref message }) if message == "boom"
        ));
        let other = inspect_json(&"a".repeat(64));
        let wrong = http::Response {
            status: 200,
            body: other.into_bytes(),
        };
        let err = from_response(ID, &wrong);
        assert!(matches!(err, Err(DockerError::WrongContainer { .. })));
        assert!(err.is_err_and(|e| e.is_malformed()));
        let garbage = http::Response {
            status: 200,
            body: b"<html>".to_vec(),
        };
        assert!(from_response(ID, &garbage).is_err_and(|e| e.is_malformed()));
        Ok(())
    }

    #[tokio::test]
    async fn refuses_bad_ids() {
        assert!(matches!(
            inspect(Path::new("/nonexistent"), "../../info").await,
            Err(DockerError::BadId(_))
        ));
    }
}
