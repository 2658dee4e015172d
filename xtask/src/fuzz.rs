//! The fuzz runs of the targets in `fuzz/`: the short run `cargo xtask test` makes of every
//! target, and the long runs of `cargo xtask fuzz` (fuzz/README.md). Installs `cargo-fuzz`
//! when it is missing.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::{run, target_dir, workspace_root};
use crate::setup::nightly_cargo;

/// Seconds each target runs in `cargo xtask test`: with 13 targets, about two minutes in all
/// (after the build), so a regression fails CI without making the step long.
const SECONDS_PER_TARGET: u32 = 10;

/// Builds and runs each fuzz target for [`SECONDS_PER_TARGET`], from its committed seeds,
/// into a scratch corpus under `target/` (never into the seeds). A crash fails the step.
pub fn short_run() -> Result<()> {
    ensure_cargo_fuzz()?;
    for target in targets(&workspace_root().join("fuzz/Cargo.toml"))? {
        let mut command = fuzz_command(&target)?;
        command.args([
            "--",
            &format!("-max_total_time={SECONDS_PER_TARGET}"),
            "-max_len=20000",
        ]);
        run(&mut command)?;
    }
    Ok(())
}

/// `cargo xtask fuzz`: each of `chosen` (every target when empty), one after the other,
/// for `runs` executions; libFuzzer prints its final stats (`stat::number_of_executed_units`,
/// the time is `stat::...` too) and a crash stops the run.
pub fn long_run(runs: u64, chosen: &[String]) -> Result<()> {
    crate::setup::setup()?;
    ensure_cargo_fuzz()?;
    let all = targets(&workspace_root().join("fuzz/Cargo.toml"))?;
    if let Some(unknown) = chosen.iter().find(|t| !all.contains(t)) {
        bail!("no fuzz target {unknown:?} (targets: {})", all.join(", "));
    }
    let chosen = if chosen.is_empty() { &all[..] } else { chosen };
    for target in chosen {
        let mut command = fuzz_command(target)?;
        // Only payload_parse needs inputs past libFuzzer's default bound (its 16 KiB limit).
        let max_len = if target == "payload_parse" {
            20_000
        } else {
            4096
        };
        command.args([
            "--",
            &format!("-runs={runs}"),
            &format!("-max_len={max_len}"),
            "-print_final_stats=1",
            "-timeout=10",
        ]);
        run(&mut command)?;
    }
    Ok(())
}

/// `cargo fuzz run -O TARGET CORPUS [SEEDS]`, the corpus `target/fuzz-corpus/TARGET`.
fn fuzz_command(target: &str) -> Result<Command> {
    let root = workspace_root();
    let corpus = target_dir().join("fuzz-corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("mkdir {}", corpus.display()))?;
    let mut command = nightly_cargo();
    command
        .args(["fuzz", "run", "-O", target])
        .arg(&corpus)
        .current_dir(&root);
    let seeds = root.join("fuzz/seeds").join(target);
    if seeds.is_dir() {
        command.arg(&seeds);
    }
    Ok(command)
}

/// The `[[bin]]` names of the fuzz crate's manifest.
fn targets(manifest: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    Ok(bin_names(&text))
}

fn bin_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin {
            if let Some(name) = line.strip_prefix("name = ") {
                names.push(name.trim_matches('"').to_owned());
            }
        }
    }
    names
}

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if installed {
        return Ok(());
    }
    eprintln!("xtask: cargo-fuzz missing: installing it");
    run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_target_of_the_fuzz_manifest() {
        let manifest = include_str!("../../fuzz/Cargo.toml");
        let names = bin_names(manifest);
        assert!(names.len() >= 13, "{names:?}");
        for name in &names {
            let source = workspace_root().join(format!("fuzz/fuzz_targets/{name}.rs"));
            assert!(source.is_file(), "{}", source.display());
        }
        assert!(
            !names.iter().any(|n| n == "egret-fuzz"),
            "the package is no target"
        );
    }
}
