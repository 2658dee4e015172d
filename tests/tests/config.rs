//! `egret run --config FILE` and `egret config check FILE`.

use anyhow::{bail, ensure, Context, Result};
use egret_e2e::deploy::run_flags;
use egret_e2e::policy::{audit_policy, PolicyDir};
use egret_e2e::skip::with_egret_bin;
use egret_e2e::{
    field_str, marker, run_with_timeout, Egret, Harness, RunOutput, ScratchDir, TcpServer,
    LINE_TIMEOUT,
};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");

fn docs() -> Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md");
    std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
}

/// The first fenced block of `lang` in `text`.
fn block(text: &str, lang: &str) -> Result<String> {
    let fence = format!("```{lang}\n");
    let start = text
        .find(&fence)
        .with_context(|| format!("no {fence:?} block"))?
        + fence.len();
    let rest = text.get(start..).unwrap_or_default();
    let end = rest.find("```").context("unterminated block")?;
    Ok(rest.get(..end).unwrap_or_default().to_owned())
}

fn egret(bin: &Path, args: &[&str]) -> Result<RunOutput> {
    run_with_timeout(Command::new(bin).args(args), Duration::from_secs(30))
}

/// The long flags `egret run --help` lists, less `--help` and `--config`.
fn run_flags_but_help_and_config(bin: &Path) -> Result<BTreeSet<String>> {
    let mut flags = run_flags(bin)?;
    flags.remove("help");
    flags.remove("config");
    ensure!(
        flags.len() > 20,
        "too few flags in `egret run --help`: {flags:?}"
    );
    Ok(flags)
}

/// A scratch directory holding `egret.yaml` with `yaml`; the file's path.
fn egret_yaml(name: &str, yaml: &str) -> Result<(ScratchDir, PathBuf)> {
    let scratch = ScratchDir::create(&format!("config-{name}"))?;
    let file = scratch.path().join("egret.yaml");
    std::fs::write(&file, yaml).with_context(|| format!("write {}", file.display()))?;
    Ok((scratch, file))
}

#[test]
fn the_documented_example_is_valid_and_sets_every_flag() -> Result<()> {
    with_egret_bin(|bin| {
        let (_scratch, file) = egret_yaml("docs", &block(&docs()?, "yaml")?)?;
        let out = egret(&bin, &["config", "check", &file.display().to_string()])?;
        ensure!(
            out.status.success(),
            "docs/config.md's example does not check:\n{}",
            out.stderr
        );
        // `FILE: ok: N setting(s) (a, b, ...)`
        let listed = out
            .stdout
            .split_once(" (")
            .and_then(|(_, rest)| rest.trim_end().strip_suffix(')'))
            .with_context(|| format!("unexpected summary {:?}", out.stdout))?;
        let keys: BTreeSet<String> = listed.split(", ").map(str::to_owned).collect();
        let flags = run_flags_but_help_and_config(&bin)?;
        let missing: Vec<&String> = flags.difference(&keys).collect();
        ensure!(
            missing.is_empty(),
            "docs/config.md's full example does not set {missing:?} (every `egret run` flag belongs there)"
        );
        Ok(())
    })
}

#[test]
fn every_error_is_reported_at_once_as_documented() -> Result<()> {
    with_egret_bin(|bin| {
        // The file behind the error listing in docs/config.md.
        let (scratch, _file) = egret_yaml(
            "errors",
            "cgroup: /sys/fs/cgroup/x\nring-buffer-size: lots\nring_buffer_size: 4\nwatch: yes\n\
             log-level: loud\noutput: [a, b]\nconfig: x.yaml\n",
        )?;
        let documented = block(&docs()?, "text")?;
        for args in [
            vec!["config", "check", "egret.yaml"],
            vec!["run", "--config", "egret.yaml"],
        ] {
            let mut cmd = Command::new(&bin);
            cmd.args(&args).current_dir(scratch.path());
            let out = run_with_timeout(&mut cmd, Duration::from_secs(30))?;
            ensure!(!out.status.success(), "{args:?} accepted a bad file");
            let errors: Vec<&str> = out
                .stderr
                .lines()
                .filter(|l| l.starts_with("egret.yaml:"))
                .collect();
            let want: Vec<&str> = documented
                .lines()
                .filter(|l| l.starts_with("egret.yaml:"))
                .collect();
            if args.first() == Some(&"config") {
                ensure!(
                    errors == want,
                    "{args:?}:\n{}\ndocumented:\n{documented}",
                    out.stderr
                );
            } else {
                // `egret run` says the same, without the count line.
                let want: Vec<&str> = want
                    .into_iter()
                    .filter(|l| !l.ends_with(" error(s)"))
                    .collect();
                ensure!(
                    errors == want,
                    "{args:?}:\n{}\ndocumented:\n{documented}",
                    out.stderr
                );
            }
        }
        Ok(())
    })
}

#[test]
fn a_config_file_sets_output_and_policy_and_flags_override_it() -> Result<()> {
    Harness::with_cgroup("config", |cgroup| {
        let server = TcpServer::loopback()?;
        let (_policies, policy) = PolicyDir::with_policy(
            "config",
            &audit_policy("from-the-config-file", server.port()),
        )?;
        let cgroup_path = cgroup.path().to_path_buf();
        let mut egret = Egret::start_custom("config", |dir| {
            let config = dir.join("egret.yaml");
            std::fs::write(
                &config,
                format!(
                    "# set by the file\n\
                 output: {}\n\
                 ready-file: {}\n\
                 policy: {}\n\
                 metrics-addr: none\n\
                 # overridden on the command line\n\
                 metrics-interval: 600\n\
                 log-level: error\n",
                    dir.join("events.jsonl").display(),
                    dir.join("ready").display(),
                    policy.display()
                ),
            )?;
            Ok([
                "run",
                "--config",
                &config.display().to_string(),
                "--cgroup",
                &cgroup_path.display().to_string(),
                "--metrics-interval",
                "1",
                "--log-level",
                "debug",
            ]
            .iter()
            .map(OsString::from)
            .collect())
        })?;

        let m = marker();
        let mut cmd = Command::new(CLIENT);
        cmd.args(["tcp", "127.0.0.1", &server.port().to_string(), &m]);
        egret_e2e::run_in(&cgroup, &mut cmd)?;
        // The line is in the file's output, judged by the file's policy.
        let line = egret.wait_for(
            |v| {
                field_str(v, "event.action") == Some("connect") && egret_e2e::expect::has_arg(v, &m)
            },
            LINE_TIMEOUT,
        )?;
        ensure!(
            field_str(&line, "egret.policy.verdict") == Some("approved")
                && field_str(&line, "rule.name") == Some("from-the-config-file"),
            "not judged by the config file's policy: {line}"
        );
        // The command line's --metrics-interval 1, not the file's 600: several metric lines.
        egret.wait_for_count(egret_e2e::expect::is_metric, 2, Duration::from_secs(10))?;
        // The command line's --log-level debug, not the file's error.
        let stderr = egret.stderr_text()?;
        if !stderr.contains(" DEBUG ") {
            bail!("no debug log lines although --log-level debug overrides the file:\n{stderr}");
        }
        egret.stop_cleanly()?;
        egret.discard_dir_on_drop();
        drop(cgroup);
        Ok(())
    })
}
