//! Asking the runtimes: which sockets to try for a container ([`plan`]), one fetch
//! ([`fetch`]), and the task that runs fetches for the resolver ([`run`]).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{sync::mpsc, task::JoinSet};

use super::{
    containerd, crio,
    docker::{self, DockerError},
    grpc::GrpcError,
    path::{ContainerRef, RuntimeHint},
    RuntimeConfig, RuntimeContainer,
};

/// Fetches running at once; further requests wait in the channel.
pub const MAX_CONCURRENT: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("Docker API at {socket}: {source}")]
    Docker { socket: String, source: DockerError },
    #[error("Docker API at {socket}: no answer within {timeout:?}")]
    DockerTimeout { socket: String, timeout: Duration },
    #[error("containerd at {socket}: {source}")]
    Containerd { socket: String, source: GrpcError },
    #[error("CRI-O at {socket}: {source}")]
    CriO { socket: String, source: GrpcError },
    #[error("no runtime answered within {0:?}")]
    Deadline(Duration),
    #[error("no runtime socket is configured for this container")]
    NoRuntime,
    #[error("the fetch task did not answer (it is not running, or its queue was full)")]
    Lost,
}

impl FetchError {
    /// The runtime did not answer in time.
    pub fn is_timeout(&self) -> bool {
        match self {
            Self::DockerTimeout { .. } | Self::Deadline(_) | Self::Lost => true,
            Self::Containerd { source, .. } | Self::CriO { source, .. } => {
                matches!(source, GrpcError::Timeout(_))
            }
            Self::Docker { .. } | Self::NoRuntime => false,
        }
    }

    /// The runtime answered with something egret could not use.
    pub fn is_malformed(&self) -> bool {
        match self {
            Self::Docker { source, .. } => source.is_malformed(),
            Self::Containerd { source, .. } | Self::CriO { source, .. } => source.is_malformed(),
            Self::DockerTimeout { .. } | Self::Deadline(_) | Self::NoRuntime | Self::Lost => false,
        }
    }
}

/// One place to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The Docker Engine API, or Podman's compatible one.
    Docker(PathBuf),
    Containerd(PathBuf),
    CriO(PathBuf),
}

/// The sockets to ask about a container, in order:
/// - Docker layouts: the user's rootless Docker socket (under `user@<uid>.service`), then the
///   Docker socket;
/// - Podman (`libpod-`): the user's rootless Podman socket, the Podman socket, then the Docker
///   socket (Podman's Docker-compatible service is often put there);
/// - containerd layouts: containerd; for a `/<namespace>/<id>` guess also the Docker socket;
/// - CRI-O layouts: CRI-O;
/// - a bare id: containerd, Docker, then CRI-O.
pub fn plan(reference: &ContainerRef, config: &RuntimeConfig) -> Vec<Source> {
    let rootless = |file: &str| {
        reference
            .rootless_uid
            .map(|uid| PathBuf::from(format!("/run/user/{uid}/{file}")))
    };
    let docker = || config.docker_socket.clone().map(Source::Docker);
    let containerd = || config.containerd_socket.clone().map(Source::Containerd);
    let crio = || config.crio_socket.clone().map(Source::CriO);
    let sources: Vec<Option<Source>> = match reference.runtime {
        RuntimeHint::Docker => vec![rootless("docker.sock").map(Source::Docker), docker()],
        RuntimeHint::Podman => vec![
            rootless("podman/podman.sock").map(Source::Docker),
            config.podman_socket.clone().map(Source::Docker),
            docker(),
        ],
        RuntimeHint::Containerd if reference.namespace_hint.is_some() => {
            vec![containerd(), docker()]
        }
        RuntimeHint::Containerd => vec![containerd()],
        RuntimeHint::CriO => vec![crio()],
        RuntimeHint::Unknown => vec![containerd(), docker(), crio()],
    };
    let mut plan: Vec<Source> = Vec::with_capacity(sources.len());
    for source in sources.into_iter().flatten() {
        if !plan.contains(&source) {
            plan.push(source);
        }
    }
    plan
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Asks one source; `Ok(None)` when it does not know the container.
async fn ask(
    source: &Source,
    reference: &ContainerRef,
    timeout: Duration,
) -> Result<Option<RuntimeContainer>, FetchError> {
    let id = reference.id.as_str();
    match source {
        Source::Docker(socket) => {
            match tokio::time::timeout(timeout, docker::inspect(socket, id)).await {
                Err(_) => Err(FetchError::DockerTimeout {
                    socket: display(socket),
                    timeout,
                }),
                Ok(result) => result
                    .map(|found| found.map(|container| container.into_runtime("docker")))
                    .map_err(|source| FetchError::Docker {
                        socket: display(socket),
                        source,
                    }),
            }
        }
        Source::Containerd(socket) => {
            containerd::lookup(socket, id, reference.namespace_hint.as_deref(), timeout)
                .await
                .map_err(|source| FetchError::Containerd {
                    socket: display(socket),
                    source,
                })
        }
        Source::CriO(socket) => {
            crio::lookup(socket, id, timeout)
                .await
                .map_err(|source| FetchError::CriO {
                    socket: display(socket),
                    source,
                })
        }
    }
}

/// Asks the planned sources in turn, each call bounded by `config.call_timeout`, until one
/// knows the container. `Ok(None)` when at least one answered and none knew it; the last
/// error when none answered.
pub async fn fetch(
    reference: &ContainerRef,
    config: &RuntimeConfig,
) -> Result<Option<RuntimeContainer>, FetchError> {
    let mut answered = false;
    let mut last_error = None;
    for source in plan(reference, config) {
        match ask(&source, reference, config.call_timeout).await {
            Ok(Some(found)) => return Ok(Some(found)),
            Ok(None) => answered = true,
            Err(err) => {
                log::debug!("container {}: {err}", reference.id);
                last_error = Some(err);
            }
        }
    }
    match (answered, last_error) {
        (true, _) => Ok(None),
        (false, Some(err)) => Err(err),
        (false, None) => Err(FetchError::NoRuntime),
    }
}

/// A finished fetch.
#[derive(Debug)]
pub struct Outcome {
    pub reference: ContainerRef,
    pub result: Result<Option<RuntimeContainer>, FetchError>,
}

/// Bound on one whole fetch (all its sources and calls).
pub fn deadline(call_timeout: Duration) -> Duration {
    call_timeout.saturating_mul(4)
}

/// Runs fetches for the requests until the request channel closes (the resolver is dropped);
/// at most [`MAX_CONCURRENT`] at once, each bounded by [`deadline`]. Fetches still running
/// when it ends are cancelled.
pub async fn run(
    mut requests: mpsc::Receiver<ContainerRef>,
    results: mpsc::UnboundedSender<Outcome>,
    config: Arc<RuntimeConfig>,
) {
    let mut tasks = JoinSet::new();
    let whole = deadline(config.call_timeout);
    loop {
        tokio::select! {
            joined = tasks.join_next(), if !tasks.is_empty() => {
                if let Some(Err(err)) = joined {
                    log::warn!("a container metadata fetch ended abnormally: {err}");
                }
            }
            request = requests.recv(), if tasks.len() < MAX_CONCURRENT => {
                let Some(reference) = request else {
                    break;
                };
                let results = results.clone();
                let config = Arc::clone(&config);
                tasks.spawn(async move {
                    let result = tokio::time::timeout(whole, fetch(&reference, &config))
                        .await
                        .unwrap_or(Err(FetchError::Deadline(whole)));
                    // The resolver may be gone; then nobody needs the answer.
                    let _ = results.send(Outcome { reference, result });
                });
            }
            else => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{
        path::tests::container,
        tests::{no_sockets, ID},
    };

    fn reference(runtime: RuntimeHint) -> ContainerRef {
        container(ID, runtime)
    }

    fn docker(path: &str) -> Source {
        Source::Docker(PathBuf::from(path))
    }

    const CONTAINERD: &str = "/run/containerd/containerd.sock";
    const DOCKER: &str = "/var/run/docker.sock";
    const PODMAN: &str = "/run/podman/podman.sock";
    const CRIO: &str = "/var/run/crio/crio.sock";

    #[test]
    fn plans_by_hint() {
        let sockets = RuntimeConfig::default();
        assert_eq!(
            plan(&reference(RuntimeHint::Docker), &sockets),
            [docker(DOCKER)]
        );
        assert_eq!(
            plan(&reference(RuntimeHint::Podman), &sockets),
            [docker(PODMAN), docker(DOCKER)]
        );
        assert_eq!(
            plan(&reference(RuntimeHint::Containerd), &sockets),
            [Source::Containerd(CONTAINERD.into())]
        );
        assert_eq!(
            plan(
                &ContainerRef {
                    namespace_hint: Some("default".to_owned()),
                    ..reference(RuntimeHint::Containerd)
                },
                &sockets
            ),
            [Source::Containerd(CONTAINERD.into()), docker(DOCKER)]
        );
        assert_eq!(
            plan(&reference(RuntimeHint::CriO), &sockets),
            [Source::CriO(CRIO.into())]
        );
        assert_eq!(
            plan(&reference(RuntimeHint::Unknown), &sockets),
            [
                Source::Containerd(CONTAINERD.into()),
                docker(DOCKER),
                Source::CriO(CRIO.into())
            ]
        );
    }

    #[test]
    fn plans_rootless_sockets_first() {
        let sockets = RuntimeConfig::default();
        let rootless = |runtime| ContainerRef {
            rootless_uid: Some(1000),
            ..reference(runtime)
        };
        assert_eq!(
            plan(&rootless(RuntimeHint::Podman), &sockets),
            [
                docker("/run/user/1000/podman/podman.sock"),
                docker(PODMAN),
                docker(DOCKER)
            ]
        );
        assert_eq!(
            plan(&rootless(RuntimeHint::Docker), &sockets),
            [docker("/run/user/1000/docker.sock"), docker(DOCKER)]
        );
    }

    #[test]
    fn plans_skip_disabled_and_duplicate_sockets() {
        let only_docker = RuntimeConfig {
            docker_socket: Some(DOCKER.into()),
            podman_socket: Some(DOCKER.into()),
            ..no_sockets()
        };
        assert_eq!(
            plan(&reference(RuntimeHint::Podman), &only_docker),
            [docker(DOCKER)]
        );
        assert_eq!(plan(&reference(RuntimeHint::CriO), &only_docker), []);
        assert_eq!(
            plan(&reference(RuntimeHint::Unknown), &only_docker),
            [docker(DOCKER)]
        );
    }

    #[tokio::test]
    async fn fetch_reports_why_nothing_answered() {
        let none = RuntimeConfig {
            call_timeout: Duration::from_secs(1),
            ..no_sockets()
        };
        assert!(matches!(
            fetch(&reference(RuntimeHint::Docker), &none).await,
            Err(FetchError::NoRuntime)
        ));
        let missing = RuntimeConfig {
            docker_socket: Some("/nonexistent/egret-docker.sock".into()),
            containerd_socket: Some("/nonexistent/egret-containerd.sock".into()),
            ..none
        };
        let err = fetch(&reference(RuntimeHint::Unknown), &missing).await;
        // The last source's error.
        assert!(matches!(err, Err(FetchError::Docker { .. })), "{err:?}");
        assert!(err.is_err_and(|e| !e.is_malformed()));
    }
}
