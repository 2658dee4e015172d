//! `cargo xtask build` and `cargo xtask run`.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

use anyhow::{bail, Result};

use crate::cmd::{cargo_build, describe, find_in_path, is_root, target_dir};
use crate::setup::setup;

/// `cargo xtask build [--release]`.
pub fn build(release: bool) -> Result<()> {
    setup()?;
    cargo_build(&["-p", "egret"], release)
}

/// `cargo xtask run [--debug] [-- ARGS...]`: build, then replace this process with `egret run ARGS...`.
pub fn run(release: bool, args: &[OsString]) -> Result<()> {
    build(release)?;
    let profile = if release { "release" } else { "debug" };
    let egret = target_dir().join(profile).join("egret");
    let mut command = if is_root() {
        Command::new(&egret)
    } else if let Some(sudo) = find_in_path("sudo") {
        eprintln!("xtask: egret needs root, re-running it with sudo");
        let mut command = Command::new(sudo);
        command.arg("-E").arg(&egret);
        command
    } else {
        bail!(
            "egret needs root (it loads eBPF programs) and sudo is not available; run this as root"
        );
    };
    command.arg("run").args(args);
    eprintln!("xtask: exec {}", describe(&command));
    // exec() only returns on failure; on success egret gets our pid, terminal and signals.
    let err = command.exec();
    bail!("cannot exec `{}`: {err}", describe(&command))
}
