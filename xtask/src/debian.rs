//! Debian tools and the Debian 12 root the systemd test boots (tests/tests/systemd.rs).
//!
//! - [`ensure_tools`]: the commands packaging and the boot test run (`dpkg-deb`,
//!   `dpkg-shlibdeps`, `lintian`, `debootstrap`, `systemd-nspawn`, `strip`), installed with
//!   apt-get when missing and running as root on Debian (as setup.rs installs LLVM).
//! - `cargo xtask debian-root`: a bookworm root made by `debootstrap`, cached in
//!   `target/debootstrap/bookworm` and rebuilt only when missing (or when the package list
//!   below changes). It is built in `bookworm.partial` and renamed when complete, so an
//!   interrupted build is never used. The test never writes to it: it boots it with
//!   `systemd-nspawn --volatile=overlay` (a tmpfs over it per run).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::cmd::{find_in_path, is_root, run, target_dir};
use crate::setup::apt_has_candidate;

/// The suite the test boots.
pub const SUITE: &str = "bookworm";

/// Packages on top of debootstrap's minbase: an init that boots (systemd, systemd-sysv, dbus),
/// TLS roots for apt, and busybox (the test's listening server, `nc -l`).
const INCLUDE: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "ca-certificates",
    "busybox",
];

/// Records which package list a cached root was made with.
const STAMP: &str = ".egret-debian-root";

/// The Debian package that provides each command.
fn package_of(command: &str) -> Option<&'static str> {
    Some(match command {
        "dpkg-deb" => "dpkg",
        "dpkg-shlibdeps" => "dpkg-dev",
        "lintian" => "lintian",
        "debootstrap" => "debootstrap",
        "systemd-nspawn" => "systemd-container",
        "strip" => "binutils",
        _ => return None,
    })
}

/// Makes sure `commands` are on PATH (`/usr/sbin` included), installing their packages with
/// apt-get when missing (root on Debian only; else says what to install).
pub fn ensure_tools(commands: &[&str]) -> Result<()> {
    let missing: Vec<&str> = commands
        .iter()
        .copied()
        .filter(|c| find_in_path(c).is_none() && !Path::new("/usr/sbin").join(c).is_file())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().filter_map(|c| package_of(c)).collect();
    if !is_root() || !Path::new("/etc/debian_version").exists() {
        bail!(
            "missing {}: install them with `sudo apt-get install -y {}`",
            missing.join(", "),
            packages.join(" ")
        );
    }
    eprintln!(
        "xtask: {} missing: installing {}",
        missing.join(", "),
        packages.join(" ")
    );
    let first = packages.first().copied().unwrap_or("lintian");
    if !apt_has_candidate(first)? {
        run(Command::new("apt-get").arg("update"))?;
    }
    let mut command = Command::new("apt-get");
    command
        .args(["install", "-y", "--no-install-recommends"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(&mut command)
}

/// Where the cached root lives.
pub fn root_dir() -> PathBuf {
    target_dir().join("debootstrap").join(SUITE)
}

/// The package list a root is made with, as written in its stamp.
fn stamp_text() -> String {
    format!("{SUITE} minbase {}\n", INCLUDE.join(","))
}

/// `cargo xtask debian-root`: the cached root (made when missing); prints its path.
pub fn debian_root() -> Result<()> {
    let root = ensure_root()?;
    println!("{}", root.display());
    Ok(())
}

/// The cached root, made with debootstrap when missing or made from another package list.
pub fn ensure_root() -> Result<PathBuf> {
    // systemd-nspawn boots it (the test), debootstrap makes it.
    ensure_tools(&["debootstrap", "systemd-nspawn"])?;
    let root = root_dir();
    let stamp = fs::read_to_string(root.join(STAMP)).unwrap_or_default();
    if stamp == stamp_text() && root.join("usr/lib/systemd/systemd").is_file() {
        eprintln!("xtask: Debian root {} (cached)", root.display());
        return Ok(root);
    }
    if !is_root() {
        bail!("debootstrap needs root: run `sudo cargo xtask debian-root`");
    }
    let partial = root.with_extension("partial");
    for dir in [&partial, &root] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    let mirror = mirror()?;
    eprintln!("xtask: debootstrap {SUITE} from {mirror} (a minute or two)");
    let started = std::time::Instant::now();
    run(Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", INCLUDE.join(",")))
        .arg(SUITE)
        .arg(&partial)
        .arg(&mirror))?;
    // debootstrap leaves a machine id: every boot of the (volatile) root is the same machine,
    // not a first boot.
    fs::write(partial.join("etc/hostname"), "egret-systemd-test\n")?;
    fs::write(partial.join(STAMP), stamp_text())?;
    fs::rename(&partial, &root)
        .with_context(|| format!("renaming {} to {}", partial.display(), root.display()))?;
    eprintln!(
        "xtask: Debian root {} made in {:.0?}",
        root.display(),
        started.elapsed()
    );
    Ok(root)
}

/// The Debian mirror: `EGRET_DEBIAN_MIRROR`, else the first `deb` source of this host's apt
/// configuration that serves the suite's archive, else deb.debian.org.
fn mirror() -> Result<String> {
    if let Ok(mirror) = std::env::var("EGRET_DEBIAN_MIRROR") {
        return Ok(mirror);
    }
    let mut texts = Vec::new();
    for dir in ["/etc/apt/sources.list.d"] {
        if let Ok(entries) = fs::read_dir(dir) {
            let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
            paths.sort();
            for path in paths {
                texts.push(fs::read_to_string(path).unwrap_or_default());
            }
        }
    }
    texts.push(fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
    Ok(texts
        .iter()
        .find_map(|t| mirror_in(t, SUITE))
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_owned()))
}

/// The URI of the first entry of an apt sources text (deb822 `.sources` or one-line
/// `sources.list`) of type `deb` whose suites include `suite` exactly (not `suite-security`).
fn mirror_in(text: &str, suite: &str) -> Option<String> {
    // One-line format: `deb [options] URI SUITE COMPONENTS...`.
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"deb") {
            continue;
        }
        // Options in brackets may span words: the URI is the first word with "://".
        let Some(uri) = words.iter().position(|w| w.contains("://")) else {
            continue;
        };
        if words.get(uri + 1) == Some(&suite) {
            return words.get(uri).map(|u| (*u).to_owned());
        }
    }
    // deb822: paragraphs of `Key: value` separated by blank lines.
    for paragraph in text.split("\n\n") {
        let field = |name: &str| {
            paragraph
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let is_deb = field("Types:").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        let has_suite = field("Suites:").is_some_and(|s| s.split_whitespace().any(|s| s == suite));
        if is_deb && has_suite {
            if let Some(uri) = field("URIs:").and_then(|u| u.split_whitespace().next()) {
                return Some(uri.to_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mirror_in_both_formats() {
        let deb822 = "Types: deb\n# snapshot\nURIs: http://deb.debian.org/debian\n\
                      Suites: bookworm bookworm-updates\nComponents: main\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian-security\n\
                      Suites: bookworm-security\n";
        assert_eq!(
            mirror_in(deb822, "bookworm").as_deref(),
            Some("http://deb.debian.org/debian")
        );
        assert_eq!(mirror_in(deb822, "trixie"), None);
        let security_first = "Types: deb\nURIs: http://security.example/debian-security\n\
                              Suites: bookworm-security\n\nTypes: deb-src deb\n\
                              URIs: http://mirror.example/debian\nSuites: bookworm\n";
        assert_eq!(
            mirror_in(security_first, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        let list = "# comment\ndeb-src http://src.example/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n";
        assert_eq!(
            mirror_in(list, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn every_tool_has_a_package() {
        for tool in [
            "dpkg-deb",
            "dpkg-shlibdeps",
            "lintian",
            "debootstrap",
            "systemd-nspawn",
            "strip",
        ] {
            assert!(package_of(tool).is_some(), "{tool}");
        }
    }
}
