//! Pieces for the policy tests: policy files, bpffs pin directories, the
//! test client's `connect-loop` counts, and checks on verdicts and alerts.

use crate::json::{field, field_str, field_u64};
use crate::run::ScratchDir;
use crate::{Egret, TestCgroup};
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A scratch directory for policy files; removed on drop (kept when the test fails).
#[derive(Debug)]
pub struct PolicyDir {
    dir: ScratchDir,
}

impl PolicyDir {
    /// Creates `<tmp>/egret-e2e-policy-<name>-<unique>`.
    pub fn create(name: &str) -> Result<Self> {
        let dir = ScratchDir::create(&format!("policy-{name}"))?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `file` in this directory, replacing it atomically (a sibling file renamed over
    /// it, the way editors and configuration tools do), and returns its path.
    pub fn write(&self, file: &str, yaml: &str) -> Result<PathBuf> {
        let path = self.path().join(file);
        let tmp = self.path().join(format!(".{file}.tmp-{}", crate::unique()));
        std::fs::write(&tmp, yaml).with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
        Ok(path)
    }

    /// A new directory `name` holding `policy.yaml` with `yaml`; the directory and the file's
    /// path.
    pub fn with_policy(name: &str, yaml: &str) -> Result<(Self, PathBuf)> {
        let dir = Self::create(name)?;
        let policy = dir.write("policy.yaml", yaml)?;
        Ok((dir, policy))
    }

    /// Rewrites `file` in place (truncate and write, same inode), the other way files change.
    pub fn write_in_place(&self, file: &str, yaml: &str) -> Result<PathBuf> {
        let path = self.path().join(file);
        std::fs::write(&path, yaml).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }
}

/// An audit-mode policy (loopback audited like the rest) whose one rule `rule` approves
/// 127.0.0.1 port `port`.
pub fn audit_policy(rule: &str, port: u16) -> String {
    format!(
        "mode: audit\nloopback: audit\nrules:\n  - name: {rule}\n    to: [\"127.0.0.1\"]\n    ports: [{port}]\n"
    )
}

/// A `--pin-path` directory of this test under `/sys/fs/bpf`, removed (with every pin in it,
/// which detaches pinned links nobody else holds) on drop, also when the test fails.
#[derive(Debug)]
pub struct PinPath {
    path: PathBuf,
}

/// Where bpffs is expected to be mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

impl PinPath {
    /// `/sys/fs/bpf/egret-e2e-<name>-<unique>`; the directory is not created (egret does).
    pub fn new(name: &str) -> Result<Self> {
        let fs = Path::new(BPFFS);
        ensure!(
            fs.is_dir(),
            "{BPFFS} is not a directory (bpffs not mounted?)"
        );
        let path = fs.join(format!("egret-e2e-{name}-{}", crate::unique_suffix()));
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as a string, for command lines.
    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }

    /// Names of the files and directories below the pin path (relative), sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.path.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.filter_map(|e| e.ok()) {
                let p = e.path();
                if let Ok(rel) = p.strip_prefix(&self.path) {
                    out.push(rel.display().to_string());
                }
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(p);
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for PinPath {
    fn drop(&mut self) {
        if !self.path.starts_with(BPFFS) || self.path == Path::new(BPFFS) {
            return;
        }
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("egret-e2e: removing pin path {}: {e}", self.path.display()),
        }
    }
}

/// One port's line from `egret-testclient connect-loop`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounts {
    pub ok: u64,
    pub eperm: u64,
    pub other: u64,
}

/// Parses `port=<P> ok=<N> eperm=<N> other=<N>` lines (other lines are errors).
pub fn parse_loop_counts(text: &str) -> Result<BTreeMap<u16, PortCounts>> {
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut port = None;
        let mut c = PortCounts::default();
        let mut seen = 0;
        for word in line.split_whitespace() {
            let Some((k, v)) = word.split_once('=') else {
                bail!("bad connect-loop line {line:?}");
            };
            let n: u64 = v
                .parse()
                .with_context(|| format!("bad number in connect-loop line {line:?}"))?;
            match k {
                "port" => port = Some(u16::try_from(n)?),
                "ok" => c.ok = n,
                "eperm" => c.eperm = n,
                "other" => c.other = n,
                _ => bail!("unknown key {k:?} in connect-loop line {line:?}"),
            }
            seen += 1;
        }
        let Some(port) = port.filter(|_| seen == 4) else {
            bail!("incomplete connect-loop line {line:?}");
        };
        ensure!(
            out.insert(port, c).is_none(),
            "port {port} twice in connect-loop output"
        );
    }
    Ok(out)
}

/// Reads a `connect-loop --status-file`; an absent file is "nothing counted yet".
pub fn read_loop_status(path: &Path) -> Result<BTreeMap<u16, PortCounts>> {
    match std::fs::read_to_string(path) {
        Ok(t) => parse_loop_counts(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// True for an alert line about this action, transport and destination port.
pub fn is_alert(v: &Value, action: &str, transport: &str, port: u16) -> bool {
    field_str(v, "event.kind") == Some("alert")
        && field_str(v, "event.action") == Some(action)
        && field_str(v, "network.transport") == Some(transport)
        && field_u64(v, "destination.port") == Some(u64::from(port))
}

/// True for any alert line.
pub fn is_any_alert(v: &Value) -> bool {
    field_str(v, "event.kind") == Some("alert")
}

/// A connection line's policy fields: verdict, mode, outcome, and (when approved) the rule.
pub fn check_verdict(v: &Value, verdict: &str, mode: &str, rule: Option<&str>) -> Result<()> {
    let got = field_str(v, "egret.policy.verdict");
    ensure!(
        got == Some(verdict),
        "egret.policy.verdict: want {verdict:?}, got {got:?}\nline: {v}"
    );
    let got = field_str(v, "egret.policy.mode");
    ensure!(
        got == Some(mode),
        "egret.policy.mode: want {mode:?}, got {got:?}\nline: {v}"
    );
    let outcome = if verdict == "blocked" {
        "failure"
    } else {
        "success"
    };
    let got = field_str(v, "event.outcome");
    ensure!(
        got == Some(outcome),
        "event.outcome: want {outcome:?} (verdict {verdict}), got {got:?}\nline: {v}"
    );
    let got = field_str(v, "rule.name");
    match rule {
        Some(r) => ensure!(
            got == Some(r),
            "rule.name: want {r:?}, got {got:?}\nline: {v}"
        ),
        None => ensure!(
            got.is_none(),
            "rule.name should be absent on an {verdict} line, got {got:?}\nline: {v}"
        ),
    }
    Ok(())
}

/// Who the alerts of a test name: the process (by name) and the test cgroup.
pub struct AlertSource<'a> {
    pub process_name: &'a str,
    pub cgroup_path: String,
    pub cgroup_id: u64,
}

impl<'a> AlertSource<'a> {
    /// Alerts about `process_name` running in `cgroup`.
    pub fn of(process_name: &'a str, cgroup: &TestCgroup) -> Result<Self> {
        Ok(Self {
            process_name,
            cgroup_path: cgroup.relative_path(),
            cgroup_id: cgroup.id()?,
        })
    }
}

/// What an alert must say.
pub struct AlertWant<'a> {
    pub action: &'a str,
    pub transport: &'a str,
    pub ip: &'a str,
    pub port: u16,
    pub verdict: &'a str,
    pub pid: u32,
    pub source: &'a AlertSource<'a>,
}

impl<'a> AlertWant<'a> {
    /// The alert about a TCP `connect` to `ip:port` by process `pid`.
    pub fn tcp_connect(
        ip: &'a str,
        port: u16,
        verdict: &'a str,
        pid: u32,
        source: &'a AlertSource<'a>,
    ) -> Self {
        Self {
            action: "connect",
            transport: "tcp",
            ip,
            port,
            verdict,
            pid,
            source,
        }
    }
}

/// Waits [`crate::LINE_TIMEOUT`] for the alert about `want`'s destination (action, transport,
/// ip and port) and checks it against `want` ([`check_alert`]).
pub fn expect_alert(egret: &mut Egret, want: &AlertWant<'_>) -> Result<Value> {
    let alert = egret.wait_for(
        |v| {
            is_alert(v, want.action, want.transport, want.port)
                && field_str(v, "destination.ip") == Some(want.ip)
        },
        crate::LINE_TIMEOUT,
    )?;
    check_alert(&alert, want)?;
    Ok(alert)
}

/// The alert line's fixed fields and identity fields (see `docs/events.md`).
pub fn check_alert(v: &Value, w: &AlertWant<'_>) -> Result<()> {
    let s = |path: &str, want: &str| -> Result<()> {
        let got = field_str(v, path);
        ensure!(
            got == Some(want),
            "{path}: want {want:?}, got {got:?}\nalert: {v}"
        );
        Ok(())
    };
    let n = |path: &str, want: u64| -> Result<()> {
        let got = field_u64(v, path);
        ensure!(
            got == Some(want),
            "{path}: want {want}, got {got:?}\nalert: {v}"
        );
        Ok(())
    };
    s("event.kind", "alert")?;
    s("event.action", w.action)?;
    s("event.dataset", "egret.alert")?;
    s("rule.name", "unapproved-destination")?;
    ensure!(
        field(v, "event.severity").is_some_and(|x| x.is_i64() || x.is_u64()),
        "event.severity must be an integer\nalert: {v}"
    );
    s("destination.ip", w.ip)?;
    n("destination.port", u64::from(w.port))?;
    s("network.transport", w.transport)?;
    ensure!(
        field_str(v, "network.type").is_some(),
        "network.type missing\nalert: {v}"
    );
    n("process.pid", u64::from(w.pid))?;
    s("process.name", w.source.process_name)?;
    ensure!(
        field_str(v, "process.executable").is_some(),
        "process.executable missing\nalert: {v}"
    );
    s("egret.cgroup.path", &w.source.cgroup_path)?;
    n("egret.cgroup.id", w.source.cgroup_id)?;
    s("egret.policy.verdict", w.verdict)?;
    ensure!(
        field_u64(v, "egret.alert.repeats").is_some(),
        "egret.alert.repeats missing\nalert: {v}"
    );
    let msg = field_str(v, "message").with_context(|| format!("message missing\nalert: {v}"))?;
    let dest = if w.ip.contains(':') {
        format!("[{}]:{}/{}", w.ip, w.port, w.transport)
    } else {
        format!("{}:{}/{}", w.ip, w.port, w.transport)
    };
    let dest_plain = format!("{}:{}/{}", w.ip, w.port, w.transport);
    ensure!(
        msg.contains(w.source.process_name)
            && msg.contains(&w.pid.to_string())
            && (msg.contains(&dest) || msg.contains(&dest_plain))
            && msg.contains("not approved by policy"),
        "message must name the process ({}), pid ({}), {dest_plain} and say \"not approved by policy\": {msg:?}",
        w.source.process_name,
        w.pid
    );
    Ok(())
}

pub use crate::json::read_jsonl;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn loop_counts_parse() -> Result<()> {
        let m = parse_loop_counts("port=80 ok=3 eperm=0 other=1\nport=81 ok=0 eperm=7 other=0\n")?;
        assert_eq!(
            m.get(&80),
            Some(&PortCounts {
                ok: 3,
                eperm: 0,
                other: 1
            })
        );
        assert_eq!(m.get(&81).map(|c| c.eperm), Some(7));
        assert!(parse_loop_counts("").is_ok_and(|m| m.is_empty()));
        assert!(parse_loop_counts("port=80 ok=3").is_err());
        assert!(parse_loop_counts("port=80 ok=3 eperm=x other=0").is_err());
        assert!(
            parse_loop_counts("port=80 ok=1 eperm=0 other=0\nport=80 ok=1 eperm=0 other=0")
                .is_err()
        );
        assert!(parse_loop_counts("hello").is_err());
        Ok(())
    }

    #[test]
    fn verdict_checks() {
        let ok = json!({"event": {"outcome": "success"}, "rule": {"name": "web"},
            "egret": {"policy": {"verdict": "approved", "mode": "audit"}}});
        assert!(check_verdict(&ok, "approved", "audit", Some("web")).is_ok());
        assert!(check_verdict(&ok, "approved", "audit", Some("other")).is_err());
        assert!(check_verdict(&ok, "approved", "block", Some("web")).is_err());
        let blocked = json!({"event": {"outcome": "failure"},
            "egret": {"policy": {"verdict": "blocked", "mode": "block"}}});
        assert!(check_verdict(&blocked, "blocked", "block", None).is_ok());
        let wrong = json!({"event": {"outcome": "success"},
            "egret": {"policy": {"verdict": "blocked", "mode": "block"}}});
        assert!(check_verdict(&wrong, "blocked", "block", None).is_err());
    }

    #[test]
    fn alert_checks() {
        let a = json!({
            "event": {"kind": "alert", "action": "connect", "dataset": "egret.alert", "severity": 73},
            "rule": {"name": "unapproved-destination"},
            "message": "egret-testclient (pid 42) connected to 127.0.0.1:80/tcp, not approved by policy",
            "process": {"pid": 42, "name": "egret-testclient", "executable": "/x/egret-testclient"},
            "destination": {"ip": "127.0.0.1", "port": 80},
            "network": {"transport": "tcp", "type": "ipv4"},
            "egret": {"cgroup": {"id": 7, "path": "/t"}, "policy": {"verdict": "unapproved"},
                      "alert": {"repeats": 0}}
        });
        let source = AlertSource {
            process_name: "egret-testclient",
            cgroup_path: "/t".to_string(),
            cgroup_id: 7,
        };
        let mut w = AlertWant::tcp_connect("127.0.0.1", 80, "unapproved", 42, &source);
        assert!(check_alert(&a, &w).map_err(|e| eprintln!("{e:#}")).is_ok());
        assert!(is_alert(&a, "connect", "tcp", 80));
        assert!(!is_alert(&a, "send", "tcp", 80));
        w.pid = 43;
        assert!(check_alert(&a, &w).is_err());
    }
}
