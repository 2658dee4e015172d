//! A real Prometheus server (Debian's `prometheus` package) scraping egret, and a tiny HTTP
//! client for egret's endpoint and Prometheus' API.

use crate::json::{field, field_str};
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Prometheus binary, installed from Debian's `prometheus` package when missing (as root,
/// without starting its service). An error is a missing prerequisite.
pub fn ensure_prometheus() -> Result<PathBuf> {
    crate::runtime::install::ensure_program("prometheus", "prometheus", &["/usr/bin/prometheus"])
}

/// A loopback TCP port free right now (bound, then released).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// Sends `request` as is and reads the answer until the server closes.
pub fn http_raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> Result<HttpResponse> {
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream
        .write_all(request)
        .with_context(|| format!("send to {addr}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("read from {addr}"))?;
    let text = String::from_utf8(raw).context("answer is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of headers in {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// `GET path` as HTTP/1.0 (so the answer is never chunked) and the whole answer.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<HttpResponse> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: egret-e2e\r\n\r\n");
    http_raw(addr, request.as_bytes(), Duration::from_secs(10))
}

/// Percent-encodes a query-string value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One series of an instant query: its labels (with `__name__`) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A Prometheus server of this test, with its own configuration and storage in a scratch
/// directory. Stopped (SIGTERM, then SIGKILL) and its directory removed on drop.
pub struct Prometheus {
    child: Option<Child>,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Prometheus {
    /// Starts `bin` scraping `targets` (job `egret`) every `interval`, listening on a free
    /// loopback port, and waits until it is ready.
    pub fn start(bin: &Path, targets: &[SocketAddr], interval: Duration) -> Result<Self> {
        Self::start_with_rules(bin, targets, interval, &[])
    }

    /// [`Self::start`] with `rule_files` (evaluated every `interval`).
    pub fn start_with_rules(
        bin: &Path,
        targets: &[SocketAddr],
        interval: Duration,
        rule_files: &[&Path],
    ) -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("egret-e2e-prometheus-{}", crate::unique_suffix()));
        std::fs::create_dir_all(dir.join("data"))
            .with_context(|| format!("mkdir {}", dir.display()))?;
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let secs = interval.as_secs_f64();
        let config = format!(
            "global:\n  scrape_interval: {secs}s\n  scrape_timeout: {secs}s\n  evaluation_interval: {secs}s\n\
             scrape_configs:\n  - job_name: egret\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| format!("\"{}\"", p.display()))
            .collect();
        let config = if rules.is_empty() {
            config
        } else {
            format!("{config}rule_files: [{}]\n", rules.join(", "))
        };
        std::fs::write(dir.join("prometheus.yml"), config).context("write prometheus.yml")?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let log =
            std::fs::File::create(dir.join("prometheus.log")).context("create prometheus.log")?;
        let mut cmd = Command::new(bin);
        cmd.arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .current_dir(&dir);
        let child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
        let mut me = Self {
            child: Some(child),
            dir,
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http_get(addr, "/-/ready") {
                if r.status == 200 {
                    return Ok(me);
                }
            }
            if let Some(child) = me.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("prometheus exited ({status}) before ready:\n{}", me.log());
                }
            }
            ensure!(
                Instant::now() < deadline,
                "prometheus not ready after 60 s:\n{}",
                me.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What Prometheus logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path` of the API, its JSON (status `success` required).
    pub fn api(&self, path: &str) -> Result<Value> {
        let r = http_get(self.addr, path)?;
        ensure!(r.status == 200, "{path}: status {}: {}", r.status, r.body);
        let v: Value =
            serde_json::from_str(&r.body).with_context(|| format!("{path}: {}", r.body))?;
        ensure!(
            field_str(&v, "status") == Some("success"),
            "{path}: {}",
            r.body
        );
        Ok(v)
    }

    /// An instant query through `/api/v1/query`: every series of the vector it returns.
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let r = http_get(self.addr, &path)?;
        ensure!(r.status == 200, "{path}: status {}: {}", r.status, r.body);
        let v: Value =
            serde_json::from_str(&r.body).with_context(|| format!("{path}: {}", r.body))?;
        ensure!(
            field_str(&v, "status") == Some("success")
                && field_str(&v, "data.resultType") == Some("vector"),
            "{path}: {}",
            r.body
        );
        let mut out = Vec::new();
        for item in field(&v, "data.result")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let labels = field(item, "metric")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            let value = field_str(item, "value.1")
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("{path}: no value in {item}"))?;
            out.push(Sample { labels, value });
        }
        Ok(out)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "egret-e2e: keeping {}\n--- prometheus.log ---\n{}",
                self.dir.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding() {
        assert_eq!(url_encode("egret_events_total"), "egret_events_total");
        assert_eq!(
            url_encode(r#"up{job="egret"}"#),
            "up%7Bjob%3D%22egret%22%7D"
        );
    }
}
