//! `egret report --suggest-policy --policy-format networkpolicy` validated offline by
//! `kubernetes-validate` (PyPI; installed into a venv under `target/` when missing) against
//! the Kubernetes 1.29 schema, strictly.

use anyhow::{ensure, Context, Result};
use egret_e2e::egret_bin;
use std::path::PathBuf;
use std::process::Command;

fn venv_tool() -> Result<PathBuf> {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/kubernetes-validate");
    let tool = target.join("bin/kubernetes-validate");
    if !tool.exists() {
        let ok = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&target)
            .status()?
            .success()
            && Command::new(target.join("bin/pip"))
                .args(["install", "-q", "kubernetes-validate"])
                .status()?
                .success();
        ensure!(
            ok,
            "cannot install kubernetes-validate into {}",
            target.display()
        );
    }
    Ok(tool)
}

const LINES: &str = r#"{"@timestamp":"2026-12-06T03:00:00Z","event":{"kind":"event","action":"connect","type":["start"]},"destination":{"ip":"192.0.2.10","port":443,"domain":"api.example.com"},"network":{"transport":"tcp","type":"ipv4","direction":"egress"},"container":{"id":"c1","name":"web","labels":{"app":"web"}},"orchestrator":{"type":"kubernetes","namespace":"shop","resource":{"type":"pod","name":"web-6d9f7c5b8-x2x7q","parent":{"type":"Deployment","name":"web"}}},"egret":{"policy":{"verdict":"unapproved"}}}
{"@timestamp":"2026-12-06T03:00:01Z","event":{"kind":"event","action":"send","type":["start"]},"destination":{"ip":"2001:db8::53","port":5353},"network":{"transport":"udp","type":"ipv6","direction":"egress"},"container":{"id":"c1","name":"web","labels":{"app":"web"}},"orchestrator":{"type":"kubernetes","namespace":"shop","resource":{"type":"pod","name":"web-6d9f7c5b8-x2x7q","parent":{"type":"Deployment","name":"web"}}},"egret":{"policy":{"verdict":"unapproved"}}}
{"@timestamp":"2026-12-06T03:00:02Z","event":{"kind":"event","action":"connect","type":["start"]},"destination":{"ip":"198.51.100.1","port":5432},"network":{"transport":"tcp","type":"ipv4","direction":"egress"},"container":{"id":"c2","name":"db","labels":{"app.kubernetes.io/name":"db"}},"orchestrator":{"type":"kubernetes","namespace":"data","resource":{"type":"pod","name":"db-0","parent":{"type":"StatefulSet","name":"db"}}},"egret":{"policy":{"verdict":"approved"}}}
"#;

#[test]
fn networkpolicy_passes_kubernetes_validate() -> Result<()> {
    let dir = egret_e2e::ScratchDir::create("k8s-policy")?;
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, LINES)?;
    let out_dir = dir.path().join("policies");
    let out = Command::new(egret_bin())
        .args([
            "report",
            "--suggest-policy",
            "--policy-format",
            "networkpolicy",
            "--output-dir",
        ])
        .arg(&out_dir)
        .arg(&events)
        .output()
        .context("egret report")?;
    ensure!(
        out.status.success(),
        "egret report: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<String> = String::from_utf8(out.stdout)?
        .lines()
        .map(str::to_owned)
        .collect();
    ensure!(files.len() == 2, "two workloads, two files: {files:?}");
    let tool = venv_tool()?;
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        println!("--- {file}\n{text}");
        let v = Command::new(&tool)
            .args(["-k", "1.29.0", "--strict"])
            .arg(file)
            .output()?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
        println!("kubernetes-validate: {said}");
        ensure!(
            v.status.success() && said.contains(" passed for resource networkpolicy/"),
            "{file} invalid:\n{said}\n{text}"
        );
    }
    Ok(())
}

const UNIT_LINES: &str = r#"{"@timestamp":"2026-12-06T03:00:00Z","event":{"kind":"event","action":"connect","type":["start"]},"destination":{"ip":"192.0.2.10","port":443},"network":{"transport":"tcp","type":"ipv4","direction":"egress"},"egret":{"systemd":{"unit":"backup.service"},"policy":{"verdict":"unapproved"}}}
{"@timestamp":"2026-12-06T03:00:01Z","event":{"kind":"event","action":"connect","type":["start"]},"destination":{"ip":"2001:db8::7","port":22},"network":{"transport":"tcp","type":"ipv6","direction":"egress"},"egret":{"systemd":{"unit":"backup.service"},"policy":{"verdict":"unapproved"}}}
{"@timestamp":"2026-12-06T03:00:02Z","event":{"kind":"event","action":"connect","type":["start"]},"destination":{"ip":"198.51.100.9","port":80},"network":{"transport":"tcp","type":"ipv4","direction":"egress"},"egret":{"systemd":{"unit":"session-7.scope"},"policy":{"verdict":"unapproved"}}}
"#;

/// `--policy-format systemd --output-dir`: one drop-in per unit at `<unit>.d/…`; the stream
/// form delimits them; the Cilium stream is multi-document YAML.
#[test]
fn systemd_drop_ins_and_cilium_stream_from_the_binary() -> Result<()> {
    let dir = egret_e2e::ScratchDir::create("systemd-policy")?;
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, UNIT_LINES)?;
    let out_dir = dir.path().join("dropins");
    let out = Command::new(egret_bin())
        .args([
            "report",
            "--suggest-policy",
            "--policy-format",
            "systemd",
            "--output-dir",
        ])
        .arg(&out_dir)
        .arg(&events)
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = out_dir.join("backup.service.d/50-egret-egress.conf");
    let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
    println!("{text}");
    ensure!(
        text.contains("[Service]\nIPAddressAllow=localhost\nIPAddressAllow=192.0.2.10 2001:db8::7\nIPAddressDeny=any\n"),
        "{text}"
    );
    ensure!(
        std::fs::read_dir(&out_dir)?.count() == 1,
        "only backup.service gets a drop-in"
    );
    let stream = Command::new(egret_bin())
        .args(["report", "--suggest-policy", "--policy-format", "systemd"])
        .arg(&events)
        .output()?;
    let stream = String::from_utf8(stream.stdout)?;
    ensure!(
        stream.contains("# --- backup.service.d/50-egret-egress.conf ---\n"),
        "{stream}"
    );
    let both = dir.path().join("both.jsonl");
    std::fs::write(&both, LINES)?;
    let cilium = Command::new(egret_bin())
        .args(["report", "--suggest-policy", "--policy-format", "cilium"])
        .arg(&both)
        .output()?;
    let cilium = String::from_utf8(cilium.stdout)?;
    ensure!(
        cilium.matches("kind: CiliumNetworkPolicy").count() == 2 && cilium.contains("\n---\n"),
        "{cilium}"
    );
    ensure!(
        cilium.contains("- matchName: \"api.example.com\""),
        "{cilium}"
    );
    Ok(())
}
