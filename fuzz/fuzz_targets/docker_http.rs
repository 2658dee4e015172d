//! What a Docker (or Podman) socket answers, through egret's HTTP/1.1 response reader
//! (`container::http::read_response`) and the mapping of an inspect answer
//! (`container::docker::from_response`): nothing may panic, every bound holds, and the reader
//! gives the same answer whatever sizes the bytes arrive in.
//!
//! Input: `[c][m][response]`: the response arrives in reads of at most `c + 1` bytes; the body
//! bound is `(m & 0x7f) * 16` bytes when `m`'s top bit is set, else Docker's 1 MiB.
#![no_main]

use std::{
    future::Future,
    io,
    pin::{pin, Pin},
    task::{Context, Poll, Waker},
};

use std::sync::Arc;

use egret::container::{
    docker::{from_response, DockerError, MAX_BODY},
    fields::ContainerFields,
    http::{read_response, HttpError, Response},
    path::{parse, ContainerRef},
    ContainerInfo, Lookup, RuntimeContainer, MAX_LABEL_VALUE,
};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

const ID: &str = "3f1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";

/// The bytes, in reads of at most `step`.
struct Trickle<'a> {
    rest: &'a [u8],
    step: usize,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.rest.len().min(self.step).min(buf.remaining());
        let (now, later) = self.rest.split_at(n);
        buf.put_slice(now);
        self.rest = later;
        Poll::Ready(Ok(()))
    }
}

/// Runs a future whose reads are always ready.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the reader waited on bytes that were all there"),
    }
}

fn read(bytes: &[u8], step: usize, max_body: usize) -> Result<Response, HttpError> {
    ready(read_response(Trickle { rest: bytes, step }, max_body))
}

fn same(a: &Result<Response, HttpError>, b: &Result<Response, HttpError>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => a.to_string() == b.to_string(),
        _ => false,
    }
}

/// What a line says about the container: every label kept (each cut to its bound), the pod
/// from the kubelet's labels, the ECS fields.
fn reported(found: RuntimeContainer) {
    let reference: ContainerRef = parse(&format!("/docker/{ID}")).expect("a container path");
    let info = ContainerInfo::new(found, &reference, &["*".to_owned()]);
    assert!(info.labels.values().all(|v| v.len() <= MAX_LABEL_VALUE));
    let lookup = Lookup::Known(Arc::new(info));
    let fields = ContainerFields::new(&lookup).expect("a container");
    serde_json::to_vec(&fields).expect("the fields serialize");
}

fuzz_target!(|data: &[u8]| {
    let [c, m, bytes @ ..] = data else {
        return;
    };
    let step = usize::from(*c) + 1;
    let max_body = if m & 0x80 != 0 {
        usize::from(m & 0x7f) * 16
    } else {
        MAX_BODY
    };
    let answer = read(bytes, step, max_body);
    // The reader reads 8 KiB at a time; how the bytes are cut changes nothing.
    let whole = read(bytes, 1 << 20, max_body);
    assert!(same(&answer, &whole), "{answer:?} / {whole:?}");
    let response = match answer {
        Ok(response) => response,
        Err(HttpError::Connect { .. }) => panic!("no connection here"),
        Err(_) => return,
    };
    assert!(
        (200..=599).contains(&response.status),
        "{}",
        response.status
    );
    assert!(response.body.len() <= max_body);
    assert!(response.body.len() <= bytes.len());
    match from_response(ID, &response) {
        Ok(Some(container)) => {
            assert_eq!(response.status, 200);
            assert_eq!(container.id, ID);
            assert!(container.name.as_ref().is_none_or(|n| !n.is_empty()));
            assert!(container.pid.is_none_or(|p| p != 0));
            reported(container.into_runtime("docker"));
        }
        Ok(None) => assert_eq!(response.status, 404),
        Err(DockerError::Status { message, .. }) => assert!(message.chars().count() <= 200),
        Err(err) => assert!(err.is_malformed(), "{err}"),
    }
});
