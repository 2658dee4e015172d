//! `cargo xtask bench`: set up and build (release), then hand over to `egret-bench`.
//!
//! The benchmark lives in the tests crate (`tests/src/bench`), next to the end-to-end harness
//! whose launcher, cgroups and DNS server it uses; xtask cannot depend on that crate, which
//! builds the eBPF object. Its options are declared once, in `tests/src/bench/options.rs`,
//! which xtask compiles too: clap checks them (and answers `--help`) before the long build,
//! and the arguments then go to `egret-bench` as given, `--no-build` (xtask's own) left out.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

use anyhow::{bail, Result};

use crate::cmd::{self, describe, target_dir};
use crate::setup::setup;

/// `cargo xtask bench [--no-build] [OPTIONS]`: build unless `--no-build`, then replace this
/// process with `target/release/egret-bench OPTIONS` (which handles Ctrl-C itself).
/// `replay_only`: only the replay benchmark, which needs no root.
pub fn bench(no_build: bool, replay_only: bool) -> Result<()> {
    if !replay_only && !cmd::is_root() {
        bail!("bench needs root (it creates a cgroup and loads eBPF programs); run it as root");
    }
    if !no_build {
        setup()?;
        cmd::cargo_build(&["-p", "egret", "-p", "egret-e2e", "--bins"], true)?;
    }
    let mut command = Command::new(target_dir().join("release").join("egret-bench"));
    command.args(forwarded_args(std::env::args_os()));
    eprintln!("xtask: exec {}", describe(&command));
    // exec() only returns on failure.
    let err = command.exec();
    bail!("cannot exec `{}`: {err}", describe(&command))
}

/// The arguments after the `bench` subcommand in xtask's command line, without `--no-build`.
fn forwarded_args(argv: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    argv.into_iter()
        .skip_while(|arg| arg != "bench")
        .skip(1)
        .filter(|arg| arg != "--no-build")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_what_follows_bench_but_no_build() {
        let argv = [
            "target/debug/xtask",
            "bench",
            "--rounds",
            "1",
            "--no-build",
            "--workload",
            "dns",
        ]
        .map(OsString::from);
        assert_eq!(
            forwarded_args(argv),
            ["--rounds", "1", "--workload", "dns"].map(OsString::from)
        );
        assert!(forwarded_args(["xtask", "bench"].map(OsString::from)).is_empty());
    }
}
