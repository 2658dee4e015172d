//! `cargo xtask setup`: make this machine able to build the eBPF programs.
//!
//! Checks (and where possible fixes) three things: the nightly toolchain, its
//! `rust-src` component, and a `bpf-linker` built against the nightly's LLVM.
//! When everything is present this takes a few tens of milliseconds.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::cmd::{self, find_in_path, is_root, run, stdout_of};

const INSTALL_NIGHTLY: &str =
    "the nightly toolchain is missing; install it with: rustup toolchain install nightly --component rust-src";

/// Runs all setup steps.
pub fn setup() -> Result<()> {
    put_cargo_bin_on_path();
    let llvm = nightly_llvm_major()?;
    eprintln!("xtask: nightly OK (LLVM {llvm})");
    ensure_rust_src()?;
    ensure_bpf_linker(llvm)
}

/// `$CARGO_HOME`, defaulting to `~/.cargo` (`~` from `$HOME`, else from the user database).
fn cargo_home() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Some(PathBuf::from(home));
    }
    let home = match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home),
        None => {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()??
                .dir
        }
    };
    Some(home.join(".cargo"))
}

/// Makes `~/.cargo/bin` (where `cargo install` puts bpf-linker) visible to us and our children.
fn put_cargo_bin_on_path() {
    let Some(bin) = cargo_home().map(|home| home.join("bin")) else {
        return;
    };
    let current = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&current).any(|dir| dir == bin) {
        return;
    }
    let dirs = std::iter::once(bin).chain(std::env::split_paths(&current));
    if let Ok(joined) = std::env::join_paths(dirs) {
        // xtask is single-threaded, so changing the environment is sound.
        std::env::set_var("PATH", joined);
    }
}

// ---------------------------------------------------------------- nightly --

fn rustup() -> Command {
    Command::new("rustup")
}

/// A `cargo` command of the nightly toolchain (`rustup run nightly cargo`), the one
/// `agent/build.rs` (aya-build) builds the kernel programs with, run from the workspace root.
pub fn nightly_cargo() -> Command {
    let mut command = rustup();
    command
        .args(["run", "nightly", "cargo"])
        .current_dir(cmd::workspace_root());
    command
}

fn nightly_llvm_major() -> Result<u32> {
    let output = rustup().args(["run", "nightly", "rustc", "-vV"]).output();
    let output = match output {
        Ok(output) if output.status.success() => output,
        _ => bail!(INSTALL_NIGHTLY),
    };
    let text = String::from_utf8_lossy(&output.stdout);
    parse_llvm_major(&text).context("no `LLVM version:` line in `rustup run nightly rustc -vV`")
}

/// The LLVM major version from `rustc -vV` output (`LLVM version: 22.1.4`).
fn parse_llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|line| line.trim().strip_prefix("LLVM version:"))
        .and_then(|version| version.trim().split('.').next())
        .and_then(|major| major.parse().ok())
}

fn ensure_rust_src() -> Result<()> {
    let installed =
        stdout_of(rustup().args(["component", "list", "--toolchain", "nightly", "--installed"]))?;
    if has_rust_src(&installed) {
        eprintln!("xtask: rust-src OK");
        return Ok(());
    }
    eprintln!("xtask: nightly lacks rust-src, adding it");
    run(rustup().args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// Whether `rustup component list --installed` output lists rust-src.
fn has_rust_src(component_list: &str) -> bool {
    component_list
        .lines()
        .map(str::trim)
        .any(|c| c == "rust-src" || c.starts_with("rust-src-"))
}

// ------------------------------------------------------------- bpf-linker --

/// What we know about the bpf-linker on PATH.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LinkerState {
    Missing,
    /// Present but `bpf-linker --version` fails (e.g. its libLLVM was removed).
    Broken,
    /// Runs; `llvm` is the LLVM major it was built against, when we can tell.
    Works {
        version: String,
        llvm: Option<u32>,
    },
}

#[derive(Debug, PartialEq, Eq)]
enum LinkerPlan {
    Ready,
    /// Works, but its LLVM version is unknown: trust it.
    Unverified,
    Install,
    Reinstall,
}

fn plan_linker(wanted_llvm: u32, state: &LinkerState) -> LinkerPlan {
    match state {
        LinkerState::Missing => LinkerPlan::Install,
        LinkerState::Broken => LinkerPlan::Reinstall,
        LinkerState::Works { llvm: None, .. } => LinkerPlan::Unverified,
        LinkerState::Works { llvm: Some(n), .. } if *n == wanted_llvm => LinkerPlan::Ready,
        LinkerState::Works { .. } => LinkerPlan::Reinstall,
    }
}

fn ensure_bpf_linker(llvm: u32) -> Result<()> {
    let state = inspect_linker();
    match (plan_linker(llvm, &state), &state) {
        (LinkerPlan::Ready, LinkerState::Works { version, .. }) => {
            eprintln!("xtask: bpf-linker OK ({version}, LLVM {llvm})");
        }
        (LinkerPlan::Unverified, LinkerState::Works { version, .. }) => {
            eprintln!("xtask: bpf-linker OK ({version}; its LLVM version is unknown, assuming LLVM {llvm})");
        }
        (LinkerPlan::Install, _) => install_bpf_linker(llvm, false)?,
        (_, state) => {
            eprintln!(
                "xtask: bpf-linker {}, nightly needs LLVM {llvm}: reinstalling",
                describe_state(state)
            );
            install_bpf_linker(llvm, true)?;
        }
    }
    Ok(())
}

fn describe_state(state: &LinkerState) -> String {
    match state {
        LinkerState::Missing => "is missing".to_owned(),
        LinkerState::Broken => "does not run (`bpf-linker --version` fails)".to_owned(),
        LinkerState::Works { llvm: Some(n), .. } => format!("was built for LLVM {n}"),
        LinkerState::Works { llvm: None, .. } => "was built for an unknown LLVM".to_owned(),
    }
}

fn inspect_linker() -> LinkerState {
    let Some(path) = find_in_path("bpf-linker") else {
        return LinkerState::Missing;
    };
    let output = match Command::new(&path).arg("--version").output() {
        Ok(output) if output.status.success() => output,
        _ => return LinkerState::Broken,
    };
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let llvm = linker_llvm_major(&path, &version);
    LinkerState::Works { version, llvm }
}

/// The LLVM major a bpf-linker binary was built against, from the most to the least direct source.
fn linker_llvm_major(path: &Path, version_text: &str) -> Option<u32> {
    let cargo_installed = is_cargo_installed(path);
    llvm_from_version_text(version_text)
        .or_else(|| cargo_installed.then(read_crates2_llvm).flatten())
        .or_else(|| llvm_from_ldd(path))
        .or_else(|| cargo_installed.then(read_stamp).flatten())
}

fn is_cargo_installed(path: &Path) -> bool {
    let Some(ours) = cargo_home().map(|home| home.join("bin").join("bpf-linker")) else {
        return false;
    };
    match (path.canonicalize(), ours.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => path == ours,
    }
}

/// `... LLVM 22.1 ...` / `LLVM version: 22` in `bpf-linker --version` (newer versions may print it).
fn llvm_from_version_text(text: &str) -> Option<u32> {
    let (_, after) = text.split_once("LLVM")?;
    let start = after.find(|c: char| c.is_ascii_digit())?;
    let gap = after.get(..start)?;
    if gap.len() > 12 || gap.contains('\n') {
        return None;
    }
    leading_number(after.get(start..)?)
}

fn leading_number(text: &str) -> Option<u32> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.get(..end)?.parse().ok()
}

fn read_crates2_llvm() -> Option<u32> {
    let text = std::fs::read_to_string(cargo_home()?.join(".crates2.json")).ok()?;
    llvm_from_crates2(&text)
}

/// The `llvm-N` feature bpf-linker was installed with, from cargo's `.crates2.json`.
fn llvm_from_crates2(json: &str) -> Option<u32> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let installs = value.get("installs")?.as_object()?;
    let (_, entry) = installs
        .iter()
        .find(|(key, _)| key.starts_with("bpf-linker "))?;
    entry
        .get("features")?
        .as_array()?
        .iter()
        .filter_map(serde_json::Value::as_str)
        .find_map(|feature| feature.strip_prefix("llvm-")?.parse().ok())
}

fn llvm_from_ldd(path: &Path) -> Option<u32> {
    let output = Command::new("ldd").arg(path).output().ok()?;
    llvm_from_ldd_output(&String::from_utf8_lossy(&output.stdout))
}

/// `libLLVM.so.22.1 => ...` or `libLLVM-22.so => ...` in `ldd` output.
fn llvm_from_ldd_output(text: &str) -> Option<u32> {
    text.split_whitespace().find_map(|word| {
        let rest = word.strip_prefix("libLLVM")?;
        let rest = rest
            .strip_prefix(".so.")
            .or_else(|| rest.strip_prefix('-'))?;
        leading_number(rest)
    })
}

fn stamp_path() -> Option<PathBuf> {
    cargo_home().map(|home| home.join("bpf-linker.llvm"))
}

fn read_stamp() -> Option<u32> {
    std::fs::read_to_string(stamp_path()?)
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn write_stamp(llvm: u32) -> Result<()> {
    let path = stamp_path().context("cannot locate CARGO_HOME")?;
    std::fs::write(&path, format!("{llvm}\n"))
        .with_context(|| format!("writing {}", path.display()))
}

/// The `llvm-sys` prefix variables for LLVM `n` (`LLVM_SYS_220_PREFIX`, `LLVM_SYS_221_PREFIX`).
fn llvm_sys_prefix_vars(n: u32) -> [String; 2] {
    [
        format!("LLVM_SYS_{n}0_PREFIX"),
        format!("LLVM_SYS_{n}1_PREFIX"),
    ]
}

fn llvm_prefix(n: u32) -> PathBuf {
    PathBuf::from(format!("/usr/lib/llvm-{n}"))
}

fn install_command(n: u32) -> String {
    let [var0, var1] = llvm_sys_prefix_vars(n);
    let prefix = llvm_prefix(n);
    let prefix = prefix.display();
    format!(
        "PATH={prefix}/bin:$PATH {var0}={prefix} {var1}={prefix} \
         cargo install bpf-linker --no-default-features --features llvm-{n}"
    )
}

fn install_bpf_linker(n: u32, force: bool) -> Result<()> {
    ensure_llvm_dev(n)?;
    eprintln!("xtask: installing bpf-linker for LLVM {n} (takes a few minutes)");
    let prefix = llvm_prefix(n);
    let mut command = cmd::cargo();
    command.args([
        "install",
        "bpf-linker",
        "--no-default-features",
        "--features",
    ]);
    command.arg(format!("llvm-{n}"));
    if force {
        command.arg("--force");
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(prefix.join("bin")).chain(std::env::split_paths(&path));
    command.env("PATH", std::env::join_paths(dirs)?);
    for var in llvm_sys_prefix_vars(n) {
        command.env(var, &prefix);
    }
    run(&mut command)?;
    write_stamp(n)?;
    match inspect_linker() {
        LinkerState::Works { version, .. } => {
            eprintln!("xtask: bpf-linker OK ({version}, LLVM {n})");
            Ok(())
        }
        state => bail!("bpf-linker {} after installing it", describe_state(&state)),
    }
}

// ----------------------------------------------------------- llvm-N-dev --

#[derive(Debug, PartialEq, Eq)]
enum LlvmDevPlan {
    Present,
    AptInstall,
    Manual,
}

fn plan_llvm_dev(llvm_config_exists: bool, root: bool, debian: bool) -> LlvmDevPlan {
    match (llvm_config_exists, root && debian) {
        (true, _) => LlvmDevPlan::Present,
        (false, true) => LlvmDevPlan::AptInstall,
        (false, false) => LlvmDevPlan::Manual,
    }
}

fn apt_packages(n: u32) -> [String; 4] {
    [
        format!("llvm-{n}-dev"),
        format!("libpolly-{n}-dev"),
        "libzstd-dev".to_owned(),
        "zlib1g-dev".to_owned(),
    ]
}

fn llvm_config_exists(n: u32) -> bool {
    llvm_prefix(n).join("bin/llvm-config").is_file()
}

fn ensure_llvm_dev(n: u32) -> Result<()> {
    let debian = Path::new("/etc/debian_version").exists();
    match plan_llvm_dev(llvm_config_exists(n), is_root(), debian) {
        LlvmDevPlan::Present => return Ok(()),
        LlvmDevPlan::AptInstall => apt_install_llvm(n)?,
        LlvmDevPlan::Manual => bail!(manual_instructions(n)),
    }
    if !llvm_config_exists(n) {
        bail!(
            "{}/bin/llvm-config still missing after apt-get install",
            llvm_prefix(n).display()
        );
    }
    Ok(())
}

fn manual_instructions(n: u32) -> String {
    format!(
        "bpf-linker for LLVM {n} is missing and {prefix}/bin/llvm-config is not installed. Run:\n  \
         sudo apt-get update && sudo apt-get install -y {packages}\n  {install}\n\
         (LLVM {n} packages for Debian/Ubuntu are also published at https://apt.llvm.org)",
        prefix = llvm_prefix(n).display(),
        packages = apt_packages(n).join(" "),
        install = install_command(n),
    )
}

fn apt_install_llvm(n: u32) -> Result<()> {
    let dev = format!("llvm-{n}-dev");
    if !apt_has_candidate(&dev)? {
        run(Command::new("apt-get").arg("update"))?;
    }
    if !apt_has_candidate(&dev)? {
        bail!("apt has no {dev} package; add the LLVM apt repository (https://apt.llvm.org) and rerun");
    }
    let mut command = Command::new("apt-get");
    command.args(["install", "-y"]).args(apt_packages(n));
    command.env("DEBIAN_FRONTEND", "noninteractive");
    run(&mut command)
}

pub fn apt_has_candidate(package: &str) -> Result<bool> {
    let policy = stdout_of(Command::new("apt-cache").args(["policy", package]))?;
    Ok(policy_has_candidate(&policy))
}

/// Whether `apt-cache policy` output names an installable candidate.
fn policy_has_candidate(policy: &str) -> bool {
    policy
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Candidate:"))
        .any(|candidate| !candidate.trim().is_empty() && candidate.trim() != "(none)")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUSTC_VV: &str = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\n\
        commit-hash: e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a\nhost: x86_64-unknown-linux-gnu\n\
        release: 1.97.0-nightly\nLLVM version: 22.1.4\n";

    #[test]
    fn parses_llvm_major_from_rustc_vv() {
        assert_eq!(parse_llvm_major(RUSTC_VV), Some(22));
        assert_eq!(parse_llvm_major("LLVM version: 9.0\n"), Some(9));
        assert_eq!(parse_llvm_major("rustc 1.0\n"), None);
    }

    #[test]
    fn llvm_sys_variable_names() {
        assert_eq!(
            llvm_sys_prefix_vars(22),
            ["LLVM_SYS_220_PREFIX", "LLVM_SYS_221_PREFIX"]
        );
        assert_eq!(
            llvm_sys_prefix_vars(19),
            ["LLVM_SYS_190_PREFIX", "LLVM_SYS_191_PREFIX"]
        );
    }

    #[test]
    fn install_command_is_exact() {
        assert_eq!(
            install_command(22),
            "PATH=/usr/lib/llvm-22/bin:$PATH LLVM_SYS_220_PREFIX=/usr/lib/llvm-22 \
             LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 \
             cargo install bpf-linker --no-default-features --features llvm-22"
        );
    }

    #[test]
    fn detects_rust_src() {
        assert!(has_rust_src(
            "cargo-x86_64-unknown-linux-gnu\nrust-src\nrustc-x86_64\n"
        ));
        assert!(!has_rust_src(
            "cargo-x86_64-unknown-linux-gnu\nrust-std-x86_64\n"
        ));
    }

    #[test]
    fn linker_plan() {
        let works = |llvm| LinkerState::Works {
            version: "bpf-linker 0.13.0".into(),
            llvm,
        };
        assert_eq!(plan_linker(22, &LinkerState::Missing), LinkerPlan::Install);
        assert_eq!(plan_linker(22, &LinkerState::Broken), LinkerPlan::Reinstall);
        assert_eq!(plan_linker(22, &works(Some(22))), LinkerPlan::Ready);
        assert_eq!(plan_linker(22, &works(Some(21))), LinkerPlan::Reinstall);
        assert_eq!(plan_linker(22, &works(None)), LinkerPlan::Unverified);
    }

    #[test]
    fn llvm_dev_plan() {
        assert_eq!(plan_llvm_dev(true, false, false), LlvmDevPlan::Present);
        assert_eq!(plan_llvm_dev(false, true, true), LlvmDevPlan::AptInstall);
        assert_eq!(plan_llvm_dev(false, false, true), LlvmDevPlan::Manual);
        assert_eq!(plan_llvm_dev(false, true, false), LlvmDevPlan::Manual);
    }

    #[test]
    fn llvm_from_linker_version_text() {
        assert_eq!(llvm_from_version_text("bpf-linker 0.13.0"), None);
        assert_eq!(
            llvm_from_version_text("bpf-linker 0.14.0 (LLVM 22.1.4)"),
            Some(22)
        );
        assert_eq!(
            llvm_from_version_text("bpf-linker 1.0\nLLVM version: 23.0"),
            Some(23)
        );
    }

    #[test]
    fn llvm_from_crates2_json() {
        let json = r#"{"installs":{"bpf-linker 0.13.0 (registry+https://github.com/rust-lang/crates.io-index)":
            {"bins":["bpf-linker"],"features":["llvm-22"],"no_default_features":true}}}"#;
        assert_eq!(llvm_from_crates2(json), Some(22));
        assert_eq!(
            llvm_from_crates2(r#"{"installs":{"bpf-linker 0.13.0":{"features":[]}}}"#),
            None
        );
        assert_eq!(
            llvm_from_crates2(r#"{"installs":{"ripgrep 14":{"features":["llvm-1"]}}}"#),
            None
        );
    }

    #[test]
    fn llvm_from_ldd() {
        let ldd = "\tlinux-vdso.so.1 (0x00007f)\n\
            \tlibLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1 (0x00007f)\n";
        assert_eq!(llvm_from_ldd_output(ldd), Some(22));
        assert_eq!(
            llvm_from_ldd_output("\tlibLLVM-19.so => not found\n"),
            Some(19)
        );
        assert_eq!(
            llvm_from_ldd_output("\tlibc.so.6 => /lib/libc.so.6\n"),
            None
        );
    }

    #[test]
    fn apt_candidate() {
        assert!(policy_has_candidate(
            "llvm-22-dev:\n  Installed: (none)\n  Candidate: 1:22.1.8-1\n"
        ));
        assert!(!policy_has_candidate(
            "llvm-22-dev:\n  Installed: (none)\n  Candidate: (none)\n"
        ));
        assert!(!policy_has_candidate(""));
    }

    #[test]
    fn manual_instructions_name_packages() {
        let text = manual_instructions(22);
        assert!(
            text.contains("apt-get install -y llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev")
        );
        assert!(text.contains("LLVM_SYS_221_PREFIX=/usr/lib/llvm-22"));
    }
}
