//! What containerd or CRI-O answers a call with, through what egret does with the body of a
//! successful answer (`container::grpc::decode`: one length-prefixed frame, the protobuf
//! message), the answer's status (`grpc::status_of` on `grpc-status` / `grpc-message`), and
//! the mapping to what a line reports (`containerd::to_runtime`, `crio::container_to_runtime`,
//! `crio::sandbox_to_runtime`, `ContainerInfo::new`, the ECS fields): nothing may panic, and
//! every bound holds.
//!
//! Input: `[s][body]`: `s % 5` chooses the call (containerd `Containers.Get`,
//! `Namespaces.List`, CRI `ContainerStatus`, `PodSandboxStatus`), or (4) the body is a
//! `grpc-status` value, a NUL, and a `grpc-message` value.
#![no_main]

use std::sync::Arc;

use egret::container::{
    containerd::{self, MAX_NAMESPACES},
    crio,
    fields::ContainerFields,
    grpc::{decode, found, status_of, GrpcError, MAX_MESSAGE},
    path::parse,
    ContainerInfo, Lookup, RuntimeContainer, MAX_LABEL_VALUE,
};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

const ID: &str = "3f1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";

/// What a line says about the container.
fn reported(found: RuntimeContainer, path: &str) {
    let reference = parse(path).expect("a container path");
    let info = ContainerInfo::new(found, &reference, &["*".to_owned()]);
    assert!(info.labels.values().all(|v| v.len() <= MAX_LABEL_VALUE));
    let lookup = Lookup::Known(Arc::new(info));
    let fields = ContainerFields::new(&lookup).expect("a container");
    serde_json::to_vec(&fields).expect("the fields serialize");
}

fn checked<A>(answer: Result<A, GrpcError>, body: &[u8]) -> Result<A, GrpcError> {
    match &answer {
        Err(err) => assert!(err.is_malformed(), "{err}"),
        Ok(_) => assert!(body.len() >= 5 && body.len() - 5 <= MAX_MESSAGE),
    }
    answer
}

fn status(body: &[u8]) {
    let (code, message) = match body.iter().position(|&b| b == 0) {
        Some(at) => (&body[..at], &body[at + 1..]),
        None => (body, &[][..]),
    };
    let mut headers = HeaderMap::new();
    // What h2 lets through as a header value.
    let (Ok(code), Ok(message)) = (
        HeaderValue::from_bytes(code),
        HeaderValue::from_bytes(message),
    ) else {
        return;
    };
    headers.insert("grpc-status", code);
    headers.insert("grpc-message", message);
    match status_of(&headers) {
        Ok(Some(status)) => {
            assert!(status.1.chars().count() <= 200);
            let err = status.into_error();
            let _ = err.is_not_found();
        }
        Ok(None) => panic!("grpc-status is there"),
        Err(err) => assert!(err.is_malformed()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&s, body)) = data.split_first() else {
        return;
    };
    match s % 5 {
        0 => {
            let answer = checked(
                decode::<containerd::proto::GetContainerResponse>(body),
                body,
            );
            if let Ok(Some(container)) = found(answer, |r| r.container, "no container") {
                let runtime = containerd::to_runtime(container);
                assert_eq!(runtime.runtime, "containerd");
                reported(runtime, &format!("/k8s.io/{ID}"));
            }
        }
        1 => {
            let answer = checked(
                decode::<containerd::proto::ListNamespacesResponse>(body),
                body,
            );
            if let Ok(list) = answer {
                let names: Vec<String> = list
                    .namespaces
                    .into_iter()
                    .map(|ns| ns.name)
                    .take(MAX_NAMESPACES)
                    .collect();
                assert!(names.len() <= MAX_NAMESPACES);
            }
        }
        2 => {
            let answer = checked(decode::<crio::proto::ContainerStatusResponse>(body), body);
            if let Ok(Some(status)) = found(answer, |r| r.status, "no status") {
                let runtime = crio::container_to_runtime(status);
                assert_eq!(runtime.runtime, "cri-o");
                reported(runtime, &format!("/crio-{ID}.scope"));
            }
        }
        3 => {
            let answer = checked(decode::<crio::proto::PodSandboxStatusResponse>(body), body);
            if let Ok(Some(status)) = found(answer, |r| r.status, "no status") {
                let runtime = crio::sandbox_to_runtime(status);
                if let Some(pod) = &runtime.pod {
                    assert!(!pod.name.is_empty() && !pod.namespace.is_empty());
                }
                reported(runtime, &format!("/crio-{ID}.scope"));
            }
        }
        _ => status(body),
    }
});
