//! Deciding whether an end-to-end test can run, and skipping (or failing under CI).

use anyhow::{bail, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// True when the environment variable `CI` is `true` (or `1`): prerequisites
/// that are missing must then fail the test instead of skipping it.
pub fn is_ci() -> bool {
    std::env::var("CI")
        .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
        .unwrap_or(false)
}

/// The single place where "this test cannot run here" is decided.
///
/// `Ok(v)` → `Ok(Some(v))`. An error becomes `SKIP: <reason>` on stderr and
/// `Ok(None)`, except under `CI=true`, where it is returned as an error so the
/// test fails loudly.
pub fn prerequisite<T>(what: Result<T>) -> Result<Option<T>> {
    match what {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_ci() => {
            Err(e.context("end-to-end prerequisite not met and CI=true: not skipping"))
        }
        Err(e) => {
            eprintln!("SKIP: {e:#}");
            Ok(None)
        }
    }
}

/// The entry point of a test that needs only the egret binary (no root, no cgroup): runs
/// `test` with its path, or skips like [`prerequisite`] when it is missing.
pub fn with_egret_bin(test: impl FnOnce(PathBuf) -> Result<()>) -> Result<()> {
    match prerequisite(require_egret_bin())? {
        Some(bin) => test(bin),
        None => Ok(()),
    }
}

/// Fails unless running as root (the tests create cgroups, namespaces and load BPF).
pub fn require_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        bail!(
            "end-to-end tests need root (euid is {})",
            nix::unistd::geteuid()
        )
    }
}

/// The egret binary under test: `$EGRET_BIN`, else `<workspace>/target/debug/egret`.
pub fn egret_bin() -> PathBuf {
    match std::env::var_os("EGRET_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
            manifest
                .parent()
                .unwrap_or(manifest)
                .join("target/debug/egret")
        }
    }
}

/// Checks that the egret binary exists and is executable; returns its path.
pub fn require_egret_bin() -> Result<PathBuf> {
    let bin = egret_bin();
    let meta = std::fs::metadata(&bin).with_context(|| {
        format!(
            "egret binary {} not found (set EGRET_BIN or run `cargo build -p egret`)",
            bin.display()
        )
    })?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        bail!("egret binary {} is not an executable file", bin.display());
    }
    Ok(bin)
}

/// Checks that a program is present (e.g. `ip`), by absolute path.
pub fn require_program(path: &str) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("{path} is needed by this test"))?;
    if meta.permissions().mode() & 0o111 == 0 {
        bail!("{path} is not executable");
    }
    Ok(())
}

/// Checks that `path` can be executed by an unprivileged user: every ancestor
/// directory must be world-searchable and the file world-executable.
pub fn require_world_executable(path: &Path) -> Result<()> {
    let path = path
        .canonicalize()
        .with_context(|| format!("canonicalize {}", path.display()))?;
    let meta = std::fs::metadata(&path).with_context(|| format!("stat {}", path.display()))?;
    if meta.permissions().mode() & 0o005 != 0o005 {
        bail!(
            "{} is not readable+executable by others (mode {:o})",
            path.display(),
            meta.permissions().mode()
        );
    }
    for dir in path.ancestors().skip(1) {
        let meta = std::fs::metadata(dir).with_context(|| format!("stat {}", dir.display()))?;
        if meta.permissions().mode() & 0o001 == 0 {
            bail!(
                "directory {} is not searchable by others (mode {:o}); an unprivileged client cannot run {}",
                dir.display(),
                meta.permissions().mode(),
                path.display()
            );
        }
    }
    Ok(())
}
