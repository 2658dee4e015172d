//! `cargo xtask test`: lint, build, then run every test (unit and end-to-end).

use std::ffi::OsString;
use std::process::Command;

use anyhow::Result;

use crate::cmd::{cargo, is_root, run, target_dir, workspace_root};
use crate::setup::{nightly_cargo, setup};

struct Step {
    name: &'static str,
    action: Action,
}

enum Action {
    /// A command that must succeed.
    Run(Command),
    /// A check xtask makes itself.
    Check(fn() -> Result<()>),
}

fn step(name: &'static str, args: &[&str]) -> Step {
    let mut command = cargo();
    command.args(args);
    Step {
        name,
        action: Action::Run(command),
    }
}

impl Step {
    fn command(&mut self) -> Option<&mut Command> {
        match &mut self.action {
            Action::Run(command) => Some(command),
            Action::Check(_) => None,
        }
    }
}

/// The kernel crate (`agent-ebpf`) is a workspace member only for fmt and its own clippy step:
/// it builds for `bpfel-unknown-none` with nightly alone (`#![no_main]`, nightly features), so
/// the host clippy and test steps leave it out. `agent/build.rs` builds it for real.
const EXCLUDE_KERNEL: [&str; 2] = ["--exclude", "agent-ebpf"];

fn steps(no_lint: bool, test_args: &[OsString]) -> Vec<Step> {
    let mut steps = Vec::new();
    if !no_lint {
        steps.push(step("fmt", &["fmt", "--all", "--check"]));
        steps.push(Step {
            name: "structure (no import cycle, no long function)",
            action: Action::Check(|| crate::structure::check(&workspace_root())),
        });
        let mut clippy = step("clippy", &["clippy", "--workspace", "--all-targets"]);
        if let Some(command) = clippy.command() {
            command.args(EXCLUDE_KERNEL).args(["--", "-D", "warnings"]);
        }
        steps.push(clippy);
        // The fuzz crate is a workspace of its own (fuzz/Cargo.toml): `--all` and `--workspace`
        // leave it out. Its clippy shares the root target directory (the same egret build).
        steps.push(step(
            "fmt fuzz",
            &["fmt", "--manifest-path", "fuzz/Cargo.toml", "--check"],
        ));
        let mut clippy_fuzz = step(
            "clippy fuzz",
            &[
                "clippy",
                "--manifest-path",
                "fuzz/Cargo.toml",
                "--all-targets",
            ],
        );
        if let Some(command) = clippy_fuzz.command() {
            command
                .arg("--target-dir")
                .arg(target_dir())
                .args(["--", "-D", "warnings"]);
        }
        steps.push(clippy_fuzz);
        // The kernel crate for its own target, as aya's xtask checks its eBPF crates.
        let mut command = nightly_cargo();
        command.args([
            "clippy",
            "--package",
            "agent-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ]);
        steps.push(Step {
            name: "clippy agent-ebpf (bpfel-unknown-none)",
            action: Action::Run(command),
        });
    }
    steps.push(step("build egret", &["build", "-p", "egret"]));
    steps.push(step(
        "build egret-e2e bins",
        &["build", "-p", "egret-e2e", "--bins"],
    ));
    if is_root() {
        // Before the tests, so tests/tests/systemd.rs finds it cached (debootstrap takes a
        // minute or two on a fresh clone, and is not done under the end-to-end lock).
        steps.push(Step {
            name: "Debian root for tests/tests/systemd.rs (debootstrap, cached)",
            action: Action::Check(|| crate::debian::ensure_root().map(|_| ())),
        });
    }
    // The packaging gate: the .deb of the debug build, which lintian must pass without an
    // error (`cargo xtask package` does the same for the release build).
    steps.push(Step {
        name: "Debian package of the debug build, lintian",
        action: Action::Check(crate::package::check_debug_package),
    });
    let mut test = step("test", &["test", "--workspace"]);
    if let Some(command) = test.command() {
        command
            .args(EXCLUDE_KERNEL)
            .args(test_args)
            .env("EGRET_BIN", target_dir().join("debug").join("egret"));
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            command.env("CI", "true");
        }
    }
    steps.push(test);
    // After the tests: a crash here is a parser bug the unit tests missed.
    steps.push(Step {
        name: "fuzz (short run of every target)",
        action: Action::Check(crate::fuzz::short_run),
    });
    steps
}

/// `cargo xtask test [--no-lint] [-- CARGO_TEST_ARGS...]`.
pub fn test(no_lint: bool, test_args: &[OsString]) -> Result<()> {
    setup()?;
    if !is_root() {
        eprintln!(
            "xtask: warning: not root, so the end-to-end tests will fail or skip (run as root)"
        );
    }
    let steps = steps(no_lint, test_args);
    let names: Vec<_> = steps.iter().map(|s| s.name).collect();
    for (index, step) in steps.into_iter().enumerate() {
        let result = match step.action {
            Action::Run(mut command) => run(&mut command),
            Action::Check(check) => {
                eprintln!("xtask: {}", step.name);
                check()
            }
        };
        if let Err(err) = result {
            print_summary(&names, index, false);
            return Err(err);
        }
    }
    print_summary(&names, names.len(), true);
    Ok(())
}

/// One line per step: `ok` before `reached`, then `FAILED` (unless all passed), then `not run`.
fn print_summary(names: &[&str], reached: usize, passed: bool) {
    eprintln!("xtask test summary:");
    for (index, name) in names.iter().enumerate() {
        let verdict = match index.cmp(&reached) {
            std::cmp::Ordering::Less => "ok",
            std::cmp::Ordering::Equal if !passed => "FAILED",
            _ => "not run",
        };
        eprintln!("  {verdict:<8} {name}");
    }
    if passed {
        eprintln!("xtask test: all steps passed");
    }
}
