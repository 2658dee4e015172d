//! Helpers for the deployment tests (`tests/tests/deploy.rs`): the repository's packaging
//! files, the systemd unit's directives, `egret run`'s flags, and an offline validator for the
//! Kubernetes manifests (PyPI's `kubernetes-validate`, which bundles the Kubernetes JSON
//! schemas, in a virtualenv of its own).

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The validator, pinned: it bundles the schemas of Kubernetes 1.x up to 1.34.
pub const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.34.1";
/// The Kubernetes versions the manifests are validated against (oldest and newest supported).
pub const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.34.0"];

/// The repository root.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A systemd unit file's `Key=value` lines (continuation lines joined, comments dropped), in
/// order, with the section each is in.
pub fn unit_directives(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.starts_with('#') || trimmed.starts_with(';')) {
            continue;
        }
        if let Some(cont) = trimmed.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let full = std::mem::take(&mut pending);
        if let Some(name) = full.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((k, v)) = full.split_once('=') {
            out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// The value of `key` in `section` (the last one, as systemd takes it for single values).
pub fn unit_value(
    directives: &[(String, String, String)],
    section: &str,
    key: &str,
) -> Option<String> {
    directives
        .iter()
        .rev()
        .find(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.clone())
}

/// `CAP_BPF CAP_NET_ADMIN` → `+bpf,+net_admin` (for `setpriv --bounding-set`).
pub fn setpriv_caps(caps: &[String]) -> String {
    caps.iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The capability bits of `caps` (`CAP_BPF` …) as /proc/<pid>/status prints them (`CapEff`).
pub fn cap_mask(caps: &[String]) -> Result<u64> {
    let mut mask = 0u64;
    for cap in caps {
        let bit = match cap.trim_start_matches("CAP_") {
            "DAC_READ_SEARCH" => 2,
            "NET_ADMIN" => 12,
            "SYS_PTRACE" => 19,
            "SYS_ADMIN" => 21,
            "SYS_RESOURCE" => 24,
            "PERFMON" => 38,
            "BPF" => 39,
            other => bail!("capability {other} is not known to this test"),
        };
        mask |= 1 << bit;
    }
    Ok(mask)
}

/// A `/proc/<pid>/status` field (`CapEff`, `NoNewPrivs`, `Seccomp`, `VmRSS`).
pub fn proc_status(pid: u32, field: &str) -> Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// The long flags (without `--`) `egret run --help` lists, one per option line (`-p, --policy
/// <FILE>` or `--watch`), `help` and `config` included.
pub fn run_flags(egret: &Path) -> Result<BTreeSet<String>> {
    let out = Command::new(egret)
        .args(["run", "--help"])
        .output()
        .with_context(|| format!("{} run --help", egret.display()))?;
    ensure!(out.status.success(), "egret run --help failed");
    let help = String::from_utf8_lossy(&out.stdout);
    let mut flags = BTreeSet::new();
    for line in help.lines() {
        let line = line.trim_start();
        let line = match line.split_once(", ") {
            Some((short, rest)) if short.len() == 2 && short.starts_with('-') => rest,
            _ => line,
        };
        if let Some(flag) = line.strip_prefix("--") {
            let name: String = flag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            flags.insert(name);
        }
    }
    ensure!(
        flags.len() > 20 && flags.contains("policy") && flags.contains("output"),
        "unexpected `egret run --help`:\n{help}"
    );
    Ok(flags)
}

/// The flag names used in an argument list (`--output X`, `--watch`, `--policy=X`).
pub fn flags_in<'a>(args: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    args.into_iter()
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_string())
        .collect()
}

/// The top-level keys of a flat YAML mapping (`key: value` lines; comments skipped).
pub fn yaml_top_keys(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with([' ', '#', '-']) && !l.trim().is_empty())
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim().to_string()))
        .collect()
}

/// A virtualenv with [`KUBERNETES_VALIDATE`] (and so PyYAML), created on first use below the
/// system temp dir and reused; `pip` fetches it from PyPI.
pub struct Validator {
    venv: PathBuf,
}

impl Validator {
    pub fn ensure() -> Result<Self> {
        let name = KUBERNETES_VALIDATE.replace("==", "-");
        let venv = std::env::temp_dir().join(format!("egret-e2e-venv-{name}"));
        let me = Self { venv };
        if me.bin("kubernetes-validate").is_file() && me.python().is_file() {
            return Ok(me);
        }
        let python =
            super::runtime::ensure_programs(&[("python3", "python3-venv", &["/usr/bin/python3"])])?
                .into_iter()
                .next()
                .context("python3 not found")?;
        let tmp =
            std::env::temp_dir().join(format!("egret-e2e-venv-{name}-{}", crate::unique_suffix()));
        let run = |cmd: &mut Command, what: &str| -> Result<()> {
            crate::run_with_timeout(cmd, Duration::from_secs(600))?.ensure_success_of(what)?;
            Ok(())
        };
        run(
            Command::new(&python).args(["-m", "venv"]).arg(&tmp),
            "python3 -m venv (Debian: apt-get install python3-venv)",
        )?;
        run(
            Command::new(tmp.join("bin/python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .arg(KUBERNETES_VALIDATE),
            &format!("pip install {KUBERNETES_VALIDATE}"),
        )?;
        // Another test run may have won the race; either copy is complete.
        if std::fs::rename(&tmp, &me.venv).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        ensure!(
            me.bin("kubernetes-validate").is_file(),
            "{} has no kubernetes-validate",
            me.venv.display()
        );
        Ok(me)
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.venv.join("bin").join(name)
    }

    fn python(&self) -> PathBuf {
        self.bin("python")
    }

    /// `kubernetes-validate --strict -k VERSION FILE`: Ok(output) when every resource passes.
    pub fn validate(&self, file: &Path, version: &str) -> Result<String> {
        // Through the venv's python: the script's `#!` names the directory the venv was
        // created in, before it was renamed into place.
        let out = crate::run_with_timeout(
            Command::new(self.python())
                .arg(self.bin("kubernetes-validate"))
                .args(["--strict", "-k", version])
                .arg(file),
            Duration::from_secs(120),
        )?;
        let text = format!("{}{}", out.stdout, out.stderr);
        ensure!(
            out.status.success(),
            "kubernetes-validate {version} rejects {}:\n{text}",
            file.display()
        );
        Ok(text)
    }

    /// The YAML documents of `yaml` as JSON values (PyYAML).
    pub fn yaml_to_json(&self, yaml: &str) -> Result<Vec<serde_json::Value>> {
        let dir = std::env::temp_dir().join(format!("egret-e2e-yaml-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("in.yaml");
        std::fs::write(&file, yaml)?;
        let out = crate::run_with_timeout(
            Command::new(self.python()).arg("-c").arg(
                "import json,sys,yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
            ).arg(&file),
            Duration::from_secs(60),
        );
        let _ = std::fs::remove_dir_all(&dir);
        let out = out?;
        ensure!(out.status.success(), "yaml to json: {}", out.stderr);
        Ok(serde_json::from_str(&out.stdout)?)
    }
}

/// `kubectl kustomize DIR`.
pub fn kustomize(dir: &Path) -> Result<String> {
    let kubectl = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"]
        .iter()
        .map(PathBuf::from)
        .chain(
            std::env::var("PATH")
                .unwrap_or_default()
                .split(':')
                .map(|d| Path::new(d).join("kubectl")),
        )
        .find(|p| p.is_file())
        .context("kubectl (for `kubectl kustomize`) is not installed")?;
    let out = crate::run_with_timeout(
        Command::new(kubectl).arg("kustomize").arg(dir),
        Duration::from_secs(60),
    )?;
    ensure!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        out.stderr
    );
    Ok(out.stdout)
}

/// The shared libraries `ldd` lists for `bin` (absolute paths, the interpreter included);
/// empty for a static binary.
pub fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    if super::runtime::install::is_static_elf(bin)? {
        return Ok(Vec::new());
    }
    let out = Command::new("ldd").arg(bin).output().context("ldd")?;
    ensure!(out.status.success(), "ldd {} failed", bin.display());
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_with_continuations() {
        let unit = "[Unit]\nDescription=x\n# c\n[Service]\nExecStart=/bin/egret run \\\n    --a 1 \\\n    --b\nCapabilityBoundingSet=CAP_BPF CAP_PERFMON\n";
        let d = unit_directives(unit);
        assert_eq!(
            unit_value(&d, "Service", "ExecStart").as_deref(),
            Some("/bin/egret run  --a 1  --b")
        );
        let caps: Vec<String> = unit_value(&d, "Service", "CapabilityBoundingSet")
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect();
        assert_eq!(setpriv_caps(&caps), "+bpf,+perfmon");
        assert_eq!(cap_mask(&caps).unwrap(), (1 << 39) | (1 << 38));
    }

    #[test]
    fn finds_flags_and_keys() {
        assert_eq!(
            flags_in(["run", "--output", "x", "--policy=/p", "--watch"]),
            ["output", "policy", "watch"]
        );
        assert_eq!(
            yaml_top_keys("# c\noutput: x\nring-buffer-size: 1\n  nested: 2\n"),
            ["output", "ring-buffer-size"]
        );
    }
}
