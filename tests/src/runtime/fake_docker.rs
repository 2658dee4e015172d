//! A Docker Engine API socket that misbehaves on purpose, or answers `GET
//! /containers/<id>/json` as dockerd does: a real unix socket server in the test process,
//! each connection served by a thread of its own, so one that never answers holds no other.

use anyhow::{Context, Result};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes the [`Behaviour::Huge`] answer streams (if the reader keeps reading).
pub const HUGE_BODY: usize = 100 << 20;

/// What the server does with each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Accepts, reads the request, never answers (until the server is dropped).
    Silent,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// A `200` with no length, then [`HUGE_BODY`] bytes of JSON-looking text until close.
    Huge,
    /// Half a valid answer, then closes.
    CloseMidAnswer,
    /// dockerd's answer for a running container named `name` (image `image`).
    Inspect { name: String, image: String },
}

/// The server; stops (and closes every held connection) on drop.
pub struct FakeDocker {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDocker {
    /// Listens at `path` (whatever was there is removed first: a runtime restarting puts a
    /// new socket in place of the old one).
    pub fn start(path: &Path, behaviour: Behaviour) -> Result<Self> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("remove {}", path.display()));
            }
            _ => {}
        }
        let listener =
            UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, accepted) = (Arc::clone(&stop), Arc::clone(&accepted));
            std::thread::spawn(move || accept_loop(&listener, &behaviour, &stop, &accepted))
        };
        Ok(Self {
            path: path.to_path_buf(),
            stop,
            accepted,
            thread: Some(thread),
        })
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FakeDocker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(
    listener: &UnixListener,
    behaviour: &Behaviour,
    stop: &Arc<AtomicBool>,
    accepted: &AtomicU64,
) {
    let mut served = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (behaviour, stop) = (behaviour.clone(), Arc::clone(stop));
                served.push(std::thread::spawn(move || {
                    let _ = serve(stream, &behaviour, &stop);
                }));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    for thread in served {
        let _ = thread.join();
    }
}

/// The request head, up to its blank line (at most 64 KiB, 5 s).
fn request_head(stream: &mut UnixStream) -> std::io::Result<String> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The id in `GET /containers/<id>/json`.
fn asked_id(head: &str) -> String {
    head.split_whitespace()
        .nth(1)
        .and_then(|target| target.strip_prefix("/containers/"))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_owned()
}

fn serve(mut stream: UnixStream, behaviour: &Behaviour, stop: &AtomicBool) -> std::io::Result<()> {
    let head = request_head(&mut stream)?;
    match behaviour {
        Behaviour::Silent => {
            let until = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        }
        Behaviour::Garbage => {
            stream.write_all(b"\x00\xff\xfeSSH-2.0-not-http\r\n\x1b[31mgarbage\r\n\r\n{{{{")
        }
        Behaviour::Huge => {
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")?;
            stream.set_write_timeout(Some(Duration::from_secs(10)))?;
            let chunk = [b'['; 64 * 1024];
            let mut sent = 0;
            // Until the reader gives up (it must, long before the end).
            while sent < HUGE_BODY && !stop.load(Ordering::SeqCst) {
                stream.write_all(&chunk)?;
                sent += chunk.len();
            }
            Ok(())
        }
        Behaviour::CloseMidAnswer => {
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 900\r\n\r\n{\"Id\":\"")?;
            stream.flush()
        }
        Behaviour::Inspect { name, image } => {
            let id = asked_id(&head);
            let body = serde_json::json!({
                "Id": id,
                "Name": format!("/{name}"),
                "Config": {"Image": image, "Labels": {"app": name}},
                "State": {"Status": "running", "Running": true, "Pid": 1},
            })
            .to_string();
            let answer = format!(
                "HTTP/1.1 200 OK\r\nApi-Version: 1.43\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes())
        }
    }
}
