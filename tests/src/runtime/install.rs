//! Finding the runtime binaries, and installing the Debian packages that provide them when
//! they are missing (as root, with `apt-get`).
//!
//! The packages: `containerd` (containerd, ctr, the runc v2 shim), `runc`, `docker.io`
//! (dockerd, docker) and `busybox-static` (the static `/bin/busybox` the test image is made
//! of). A missing binary is an error the caller hands to [`crate::prerequisite`]: a skip
//! outside CI, a failure under `CI=true`.

use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// Which runtime a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Containerd,
    Docker,
}

/// Absolute paths of the programs the runtimes need.
#[derive(Debug, Clone)]
pub struct Tools {
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    pub runc: PathBuf,
    /// Set when [`Runtime::Docker`] was asked for.
    pub dockerd: Option<PathBuf>,
    /// Set when [`Runtime::Docker`] was asked for; Debian's client (`/usr/bin/docker`) is
    /// preferred over another one earlier on `PATH`, so client and daemon match.
    pub docker: Option<PathBuf>,
    /// A statically linked busybox.
    pub busybox: PathBuf,
}

/// The busybox the image is built from: Debian's `busybox-static`.
pub const BUSYBOX: &str = "/bin/busybox";

/// (program, Debian package, the paths tried first)
const CONTAINERD_PROGRAMS: &[(&str, &str, &[&str])] = &[
    ("containerd", "containerd", &["/usr/bin/containerd"]),
    ("ctr", "containerd", &["/usr/bin/ctr"]),
    (
        "containerd-shim-runc-v2",
        "containerd",
        &["/usr/bin/containerd-shim-runc-v2"],
    ),
    ("runc", "runc", &["/usr/sbin/runc", "/usr/bin/runc"]),
];
const DOCKER_PROGRAMS: &[(&str, &str, &[&str])] = &[
    (
        "dockerd",
        "docker.io",
        &["/usr/sbin/dockerd", "/usr/bin/dockerd"],
    ),
    ("docker", "docker.io", &["/usr/bin/docker"]),
];

static INSTALL_LOCK: Mutex<()> = Mutex::new(());

/// Finds `name`: the preferred paths, then `PATH` (plus the sbin directories).
fn find_program(name: &str, preferred: &[&str]) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = preferred
        .iter()
        .map(PathBuf::from)
        .chain(
            path.split(':')
                .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"])
                .filter(|d| !d.is_empty())
                .map(|d| Path::new(d).join(name)),
        )
        .find(|p| is_executable(p));
    found
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether an ELF file has no program interpreter (`PT_INTERP`), i.e. is statically linked.
pub fn is_static_elf(path: &Path) -> Result<bool> {
    let data = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    ensure!(
        data.get(0..4) == Some(b"\x7fELF"),
        "{} is not an ELF file",
        path.display()
    );
    ensure!(
        data.get(4) == Some(&2) && data.get(5) == Some(&1),
        "{} is not a 64-bit little-endian ELF file",
        path.display()
    );
    let u16_at = |o: usize| -> Option<usize> {
        let b = data.get(o..o + 2)?;
        Some(usize::from(u16::from_le_bytes([*b.first()?, *b.get(1)?])))
    };
    let u64_at = |o: usize| -> Option<u64> {
        let b: [u8; 8] = data.get(o..o + 8)?.try_into().ok()?;
        Some(u64::from_le_bytes(b))
    };
    let phoff = u64_at(0x20)
        .and_then(|v| usize::try_from(v).ok())
        .context("ELF header truncated")?;
    let phentsize = u16_at(0x36).context("ELF header truncated")?;
    let phnum = u16_at(0x38).context("ELF header truncated")?;
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        let ty = data
            .get(off..off + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .context("ELF program header truncated")?;
        if ty == 3 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The programs of `runtimes` that are missing, with their packages.
fn missing(runtimes: &[Runtime]) -> Vec<(&'static str, &'static str)> {
    let mut want: Vec<&(&str, &str, &[&str])> = CONTAINERD_PROGRAMS.iter().collect();
    if runtimes.contains(&Runtime::Docker) {
        want.extend(DOCKER_PROGRAMS.iter());
    }
    let mut out: Vec<(&str, &str)> = want
        .into_iter()
        .filter(|(name, _, pref)| find_program(name, pref).is_none())
        .map(|(name, pkg, _)| (*name, *pkg))
        .collect();
    if !is_static_elf(Path::new(BUSYBOX)).unwrap_or(false) {
        out.push(("busybox (static)", "busybox-static"));
    }
    out
}

/// While alive, `/usr/sbin/policy-rc.d` refuses to start services, so that installing
/// `docker.io` or `containerd` does not start the host's own daemons (which would change the
/// host's network: bridges, iptables). Only created when there is none; removed on drop.
struct NoServiceStart {
    path: Option<PathBuf>,
}

impl NoServiceStart {
    fn new() -> Self {
        let path = PathBuf::from("/usr/sbin/policy-rc.d");
        if path.exists() {
            return Self { path: None };
        }
        let created = std::fs::write(
            &path,
            "#!/bin/sh\n# egret e2e: installing test packages\nexit 101\n",
        )
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        });
        match created {
            Ok(()) => Self { path: Some(path) },
            Err(e) => {
                eprintln!("egret-e2e: cannot write {}: {e}", path.display());
                Self { path: None }
            }
        }
    }
}

impl Drop for NoServiceStart {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn apt_get(args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("apt-get");
    cmd.args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("NEEDRESTART_MODE", "a");
    eprintln!("egret-e2e: running apt-get {}", args.join(" "));
    let out = crate::run_with_timeout(&mut cmd, Duration::from_secs(900))?;
    if !out.status.success() {
        let tail: Vec<&str> = out.stderr.lines().rev().take(20).collect();
        bail!(
            "apt-get {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

/// Makes sure `program` is there (looked for at `preferred`, then on `PATH`): when it is
/// missing and we are root on a system with `apt-get`, installs Debian's `package` (without
/// starting its services). Errors name what is missing and the command that installs it.
pub fn ensure_program(program: &str, package: &str, preferred: &[&str]) -> Result<PathBuf> {
    if let Some(found) = find_program(program, preferred) {
        return Ok(found);
    }
    let _guard = INSTALL_LOCK
        .lock()
        .map_err(|_| anyhow::anyhow!("install lock poisoned"))?;
    if let Some(found) = find_program(program, preferred) {
        return Ok(found);
    }
    let how = format!("apt-get install -y {package}");
    ensure!(
        nix::unistd::geteuid().is_root(),
        "missing {program}; install it with `{how}`"
    );
    ensure!(
        find_program("apt-get", &[]).is_some(),
        "missing {program} and there is no apt-get; install the equivalent of `{how}`"
    );
    let _no_start = NoServiceStart::new();
    let install = ["install", "-y", "-o", "DPkg::Lock::Timeout=300", package];
    if let Err(first) = apt_get(&install) {
        eprintln!("egret-e2e: {first:#}; updating the package lists and retrying");
        apt_get(&["update"]).context("apt-get update")?;
        apt_get(&install).with_context(|| format!("`{how}`"))?;
    }
    find_program(program, preferred).with_context(|| format!("still no {program} after `{how}`"))
}

/// Makes sure the programs of `runtimes` (and the static busybox) are there: when one is
/// missing and we are root on a system with `apt-get`, installs the packages
/// (`apt-get install -y containerd runc docker.io busybox-static`, after `apt-get update` if
/// the first try fails). Errors name what is missing and the command that installs it.
pub fn ensure_installed(runtimes: &[Runtime]) -> Result<Tools> {
    let gone = missing(runtimes);
    if !gone.is_empty() {
        let _guard = INSTALL_LOCK
            .lock()
            .map_err(|_| anyhow::anyhow!("install lock poisoned"))?;
        let gone = missing(runtimes);
        if !gone.is_empty() {
            let mut pkgs: Vec<&str> = gone.iter().map(|(_, p)| *p).collect();
            pkgs.sort_unstable();
            pkgs.dedup();
            let names: Vec<&str> = gone.iter().map(|(n, _)| *n).collect();
            let how = format!("apt-get install -y {}", pkgs.join(" "));
            ensure!(
                nix::unistd::geteuid().is_root(),
                "missing {names:?}; install them with `{how}`"
            );
            ensure!(
                find_program("apt-get", &[]).is_some(),
                "missing {names:?} and there is no apt-get; install the equivalent of `{how}`"
            );
            let _no_start = NoServiceStart::new();
            let mut install = vec!["install", "-y", "-o", "DPkg::Lock::Timeout=300"];
            install.extend(pkgs.iter().copied());
            if let Err(first) = apt_get(&install) {
                eprintln!("egret-e2e: {first:#}; updating the package lists and retrying");
                apt_get(&["update"]).context("apt-get update")?;
                apt_get(&install).with_context(|| format!("`{how}`"))?;
            }
            let still = missing(runtimes);
            ensure!(still.is_empty(), "still missing {still:?} after `{how}`");
        }
    }
    let get = |list: &[(&str, &str, &[&str])], name: &str| -> Result<PathBuf> {
        let (_, _, pref) = list
            .iter()
            .find(|(n, _, _)| *n == name)
            .with_context(|| format!("unknown program {name}"))?;
        find_program(name, pref).with_context(|| format!("{name} not found"))
    };
    let docker = runtimes.contains(&Runtime::Docker);
    Ok(Tools {
        containerd: get(CONTAINERD_PROGRAMS, "containerd")?,
        ctr: get(CONTAINERD_PROGRAMS, "ctr")?,
        runc: get(CONTAINERD_PROGRAMS, "runc")?,
        dockerd: if docker {
            Some(get(DOCKER_PROGRAMS, "dockerd")?)
        } else {
            None
        },
        docker: if docker {
            Some(get(DOCKER_PROGRAMS, "docker")?)
        } else {
            None
        },
        busybox: PathBuf::from(BUSYBOX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_elf_detection() -> Result<()> {
        // This test binary is dynamically linked (it has an interpreter).
        let me = std::env::current_exe()?;
        assert!(!is_static_elf(&me)?);
        let tmp = std::env::temp_dir().join(format!("egret-e2e-notelf-{}", crate::unique_suffix()));
        std::fs::write(&tmp, b"#!/bin/sh\n")?;
        let r = is_static_elf(&tmp);
        let _ = std::fs::remove_file(&tmp);
        assert!(r.is_err());
        Ok(())
    }
}
