//! The Debian package under a real systemd: a Debian 12 root (debootstrap, cached in
//! `target/debootstrap/bookworm` by `cargo xtask debian-root`) booted with
//! `systemd-nspawn -b` (egret_e2e::nspawn says what the container needs for BPF), the .deb of
//! the egret under test installed with `apt-get install`, then: the unit is active only once
//! the programs are attached, connections made in the container are in
//! /var/log/egret/events.jsonl, `systemctl reload` applies an edited policy and refuses an
//! invalid one (journal), alerts reach the journal with structured fields (`--journal`), a
//! SIGKILLed egret is restarted, `systemd-analyze security` rates the unit, the report timer
//! writes its reports, and `apt-get purge` leaves nothing of egret behind.
//!
//! The package: `$EGRET_DEB` (`cargo xtask test` builds it from the debug egret and runs
//! lintian on it), else built here with `xtask package --egret-bin $EGRET_BIN --no-lintian`.

use anyhow::{bail, ensure, Context, Result};
use egret_e2e::deploy::repo_root;
use egret_e2e::nspawn::Machine;
use egret_e2e::skip::{require_egret_bin, require_program, require_root};
use egret_e2e::{prerequisite, ScratchDir};

/// A string field of a journal entry (`journalctl -o json`).
fn field_str<'a>(entry: &'a Value, name: &str) -> Option<&'a str> {
    entry.get(name).and_then(Value::as_str)
}
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The address the container's clients connect to: not loopback (which the shipped policy
/// approves), on the container's `lo` so no network is needed.
const SERVER_IP: &str = "192.0.2.10";
const SERVER_PORT: u16 = 18080;

/// The cached Debian root, made by `xtask debian-root` when missing (a minute or two; run
/// `cargo xtask debian-root` once beforehand to keep that out of the end-to-end lock).
fn debian_root(xtask: &Path) -> Result<PathBuf> {
    let out = Command::new(xtask)
        .arg("debian-root")
        .current_dir(repo_root())
        .output()
        .context("run xtask debian-root")?;
    ensure!(
        out.status.success(),
        "xtask debian-root failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(PathBuf::from(path))
}

/// The .deb to install: `$EGRET_DEB`, else one built from `bin` into `dir`.
fn package(xtask: &Path, bin: &Path, dir: &Path) -> Result<PathBuf> {
    if let Some(deb) = std::env::var_os("EGRET_DEB").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(deb));
    }
    let out = Command::new(xtask)
        .args(["package", "--no-lintian", "--egret-bin"])
        .arg(bin)
        .arg("--out-dir")
        .arg(dir)
        .current_dir(repo_root())
        .output()
        .context("run xtask package")?;
    ensure!(
        out.status.success(),
        "xtask package failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(PathBuf::from(
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    ))
}

fn prerequisites() -> Result<(PathBuf, PathBuf)> {
    require_root()?;
    let bin = require_egret_bin()?;
    require_program("/usr/bin/systemd-nspawn")?;
    require_program("/usr/bin/nsenter")?;
    let xtask = bin.with_file_name("xtask");
    ensure!(
        xtask.is_file(),
        "{} is missing (built by `cargo xtask`; run the tests with `cargo xtask test`)",
        xtask.display()
    );
    Ok((bin, xtask))
}

/// Polls `check` every 200 ms until it returns `Some`, or fails with `what` after `timeout`.
fn poll<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what} (after {timeout:?})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `systemctl show egret -p ActiveState,MainPID` as (state, pid).
fn service_state(m: &Machine, unit: &str) -> Result<(String, u32)> {
    let text = m.ok(&format!("systemctl show {unit} -p ActiveState -p MainPID"))?;
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_default()
            .to_owned()
    };
    Ok((get("ActiveState="), get("MainPID=").parse().unwrap_or(0)))
}

/// The lines of /var/log/egret/events.jsonl in the container.
fn events(m: &Machine) -> Result<Vec<Value>> {
    let text = m.ok("cat /var/log/egret/events.jsonl 2>/dev/null || true")?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// One TCP connection to the server from a transient unit `unit` (so it is in the
/// container's cgroup tree, named by its unit).
fn connect(m: &Machine, unit: &str) -> Result<()> {
    m.ok(&format!(
        "systemd-run --quiet --wait --unit={unit} -p Type=oneshot /bin/bash -c \
         'exec 3<>/dev/tcp/{SERVER_IP}/{SERVER_PORT}; echo x >&3'"
    ))?;
    Ok(())
}

/// The `connect` line of unit `unit`, once egret wrote it.
fn connect_line(m: &Machine, unit: &str) -> Result<Value> {
    poll(
        Duration::from_secs(20),
        &format!("no connect line of {unit} in events.jsonl"),
        || {
            Ok(events(m)?.into_iter().find(|v| {
                v.pointer("/event/action").and_then(Value::as_str) == Some("connect")
                    && v.pointer("/egret/systemd/unit").and_then(Value::as_str)
                        == Some(&format!("{unit}.service"))
            }))
        },
    )
}

fn verdict(line: &Value) -> &str {
    line.pointer("/egret/policy/verdict")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Installs the package; the service is active only once the programs are attached.
fn install_and_start(m: &Machine, deb_name: &str) -> Result<()> {
    let started = Instant::now();
    m.ok(&format!(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
         /mnt/package/{deb_name} 2>&1"
    ))
    .context("apt-get install of the package")?;
    eprintln!("installed {deb_name} in {:.1?}", started.elapsed());
    let (state, pid) = service_state(m, "egret")?;
    ensure!(
        state == "active",
        "egret.service is {state:?} after the install:\n{}",
        m.ok("journalctl -u egret --no-pager | tail -30")?
    );
    m.ok("systemctl is-enabled egret egret-report.timer")?;
    let ready = m.ok("cat /run/egret/ready")?;
    ensure!(
        ready.trim() == pid.to_string(),
        "the ready file names {ready:?}, MainPID is {pid}"
    );
    // The order systemd logged it: attached (egret), then Started (the unit became active).
    let journal = m.ok("journalctl -u egret -o cat --no-pager")?;
    let attached = journal
        .find("attached to cgroup")
        .context("egret never attached")?;
    let active = journal
        .find("Started egret.service")
        .with_context(|| format!("no `Started egret.service` in:\n{journal}"))?;
    ensure!(
        attached < active,
        "egret.service became active before its programs were attached:\n{journal}"
    );
    Ok(())
}

/// A connection in the container is in events.jsonl and, unapproved, in the journal with its
/// structured fields.
fn connection_and_journal(m: &Machine) -> Result<()> {
    connect(m, "e2e-client-1")?;
    let line = connect_line(m, "e2e-client-1")?;
    ensure!(verdict(&line) == "unapproved", "verdict: {line}");
    ensure!(
        line.pointer("/destination/ip").and_then(Value::as_str) == Some(SERVER_IP),
        "{line}"
    );
    let entry = poll(
        Duration::from_secs(10),
        "no journal entry EGRET_VERDICT=unapproved",
        || {
            let text = m.ok("journalctl -u egret EGRET_VERDICT=unapproved -o json --no-pager")?;
            Ok(text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|e| field_str(e, "EGRET_UNIT") == Some("e2e-client-1.service")))
        },
    )?;
    eprintln!("journal entry: {entry}");
    for (field, want) in [
        ("EGRET_DESTINATION_IP", SERVER_IP.to_owned()),
        ("EGRET_DESTINATION_PORT", SERVER_PORT.to_string()),
        ("EGRET_PROCESS_EXECUTABLE", "/usr/bin/bash".to_owned()),
        ("EGRET_RULE", "unapproved-destination".to_owned()),
        ("SYSLOG_IDENTIFIER", "egret".to_owned()),
        ("PRIORITY", "4".to_owned()),
        ("_SYSTEMD_UNIT", "egret.service".to_owned()),
    ] {
        ensure!(
            field_str(&entry, field) == Some(want.as_str()),
            "{field} is not {want:?}: {entry}"
        );
    }
    ensure!(
        field_str(&entry, "MESSAGE").is_some_and(|m| m.contains("not approved by policy")),
        "MESSAGE: {entry}"
    );
    Ok(())
}

/// A second server's address, on the container's lo: a destination the unit never used.
const OTHER_IP: &str = "192.0.2.11";

/// A unit that connects to `$TARGET` (from /run/e2e-target) on the server port.
const EGRESS_UNIT: &str =
    "[Unit]\nDescription=egret e2e egress client\n\n[Service]\nType=oneshot\n\
    EnvironmentFile=/run/e2e-target\n\
    ExecStart=/usr/bin/timeout 5 /bin/bash -c 'exec 3<>/dev/tcp/$${TARGET}/18080'\n";

/// Runs `e2e-egress.service` against `target`: whether it connected, and its journal. Tried
/// again while the server refuses (busybox `nc -l` listens again only after each client).
fn egress_to(m: &Machine, target: &str) -> Result<(bool, String)> {
    m.ok(&format!("echo TARGET={target} > /run/e2e-target"))?;
    let mut tries = 0;
    loop {
        let mark = m.ok("date +%s.%N")?;
        let run = m.sh("systemctl start e2e-egress.service")?;
        let journal = m.ok(&format!(
            "journalctl -u e2e-egress -o cat --no-pager --since @{} | tail -5",
            mark.trim()
        ))?;
        tries += 1;
        if run.status.success() || !journal.contains("Connection refused") || tries == 20 {
            return Ok((run.status.success(), journal));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `egret report --suggest-policy --policy-format systemd`: the drop-in it suggests for a
/// unit, installed, lets the unit reach the address it used and refuses another one, which
/// it reached before.
fn suggested_drop_in(m: &Machine) -> Result<()> {
    m.ok(&format!(
        "busybox ip addr add {OTHER_IP}/32 dev lo && systemd-run --quiet --unit=e2e-server-2 \
         busybox sh -c 'while :; do busybox nc -l -p {SERVER_PORT} >/dev/null; done' && \
         cp /mnt/package/e2e-egress.service /etc/systemd/system/ && systemctl daemon-reload"
    ))?;
    let (ok, journal) = egress_to(m, SERVER_IP)?;
    ensure!(ok, "e2e-egress could not reach {SERVER_IP}:\n{journal}");
    connect_line(m, "e2e-egress")?;
    // The other address answers too, from another unit.
    m.ok(&format!(
        "for i in $(seq 20); do systemd-run --quiet --wait --collect -p Type=oneshot \
         /bin/bash -c 'exec 3<>/dev/tcp/{OTHER_IP}/{SERVER_PORT}' && exit 0; sleep 0.25; \
         done; exit 1"
    ))
    .context("the second server does not answer")?;

    m.ok(
        "rm -rf /tmp/dropins && egret report --suggest-policy --policy-format systemd \
          --output-dir /tmp/dropins /var/log/egret/events.jsonl >/dev/null",
    )?;
    let dropin = m.ok("cat /tmp/dropins/e2e-egress.service.d/50-egret-egress.conf")?;
    eprintln!("suggested drop-in:\n{dropin}");
    ensure!(
        dropin.contains(&format!("IPAddressAllow={SERVER_IP}"))
            && dropin.contains("IPAddressDeny=any")
            && !dropin.contains(OTHER_IP),
        "unexpected drop-in:\n{dropin}"
    );
    m.ok("mkdir -p /etc/systemd/system/e2e-egress.service.d && \
          cp /tmp/dropins/e2e-egress.service.d/50-egret-egress.conf \
          /etc/systemd/system/e2e-egress.service.d/ && systemctl daemon-reload")?;
    let (ok, journal) = egress_to(m, SERVER_IP)?;
    ensure!(
        ok,
        "with the drop-in, e2e-egress could not reach {SERVER_IP}:\n{journal}"
    );
    // What systemd made of it: exactly the suggestion (in any order).
    let shown = m.ok("systemctl show -p IPAddressAllow -p IPAddressDeny e2e-egress")?;
    let set = |key: &str| -> Vec<String> {
        let mut got: Vec<String> = shown
            .lines()
            .filter_map(|l| l.strip_prefix(key))
            .flat_map(str::split_whitespace)
            .map(str::to_owned)
            .collect();
        got.sort_unstable();
        got
    };
    ensure!(
        set("IPAddressAllow=") == ["127.0.0.0/8", &format!("{SERVER_IP}/32"), "::1/128"]
            && set("IPAddressDeny=") == ["0.0.0.0/0", "::/0"],
        "systemd's view of the drop-in:\n{shown}"
    );
    let (reached, journal) = egress_to(m, OTHER_IP)?;
    // Refused (EPERM) or its packets dropped (no answer within `timeout 5`).
    ensure!(
        !reached
            && (journal.contains("Operation not permitted") || journal.contains("status=124")),
        "with the drop-in, e2e-egress reached {OTHER_IP} (or failed for another reason):\n{journal}"
    );
    eprintln!("refused by the suggested drop-in:\n{journal}");
    m.ok("rm -rf /etc/systemd/system/e2e-egress.service* && systemctl daemon-reload")?;
    Ok(())
}

const APPROVING_POLICY: &str = "mode: audit\nloopback: approve\nrules:\n  - name: e2e-server\n    \
     to: [\"192.0.2.10\"]\n    ports: [18080]\n    protocols: [tcp]\n";

/// Replaces /etc/egret/policy.yaml atomically (egret also watches it) and reloads.
fn put_policy_and_reload(m: &Machine, text: &str) -> Result<()> {
    m.ok(&format!(
        "printf '%s' '{text}' > /etc/egret/policy.yaml.new && \
         mv /etc/egret/policy.yaml.new /etc/egret/policy.yaml && systemctl reload egret"
    ))?;
    Ok(())
}

/// `systemctl reload` applies an edited policy; an invalid one is refused, said so in the
/// journal, and the old one stays in force.
fn reloads(m: &Machine) -> Result<()> {
    put_policy_and_reload(m, APPROVING_POLICY)?;
    // The reload is asynchronous (SIGHUP): connect until a connection is approved.
    let mut attempt = 0;
    let line = poll(
        Duration::from_secs(20),
        "the edited policy was not applied",
        || {
            attempt += 1;
            let unit = format!("e2e-reload-{attempt}");
            connect(m, &unit)?;
            let line = connect_line(m, &unit)?;
            Ok((verdict(&line) == "approved").then_some(line))
        },
    )?;
    ensure!(
        line.pointer("/rule/name").and_then(Value::as_str) == Some("e2e-server"),
        "{line}"
    );
    put_policy_and_reload(m, "mode: audit\nrules:\n  - name: [broken\n")?;
    poll(
        Duration::from_secs(10),
        "no `new policy refused` in the journal",
        || {
            let journal = m.ok("journalctl -u egret -o cat --no-pager")?;
            Ok(journal.contains("new policy refused").then_some(()))
        },
    )?;
    connect(m, "e2e-client-3")?;
    let line = connect_line(m, "e2e-client-3")?;
    ensure!(
        verdict(&line) == "approved",
        "after an invalid policy the old one is not in force: {line}"
    );
    ensure!(
        service_state(m, "egret")?.0 == "active",
        "egret is not active after a bad reload"
    );
    // Valid again, for the restart that follows.
    put_policy_and_reload(m, APPROVING_POLICY)?;
    Ok(())
}

/// SIGKILL of the main process: systemd restarts egret (a new MainPID, active, ready).
fn restarts_after_sigkill(m: &Machine) -> Result<()> {
    let (_, before) = service_state(m, "egret")?;
    m.ok(&format!("kill -KILL {before}"))?;
    let after = poll(
        Duration::from_secs(30),
        "egret was not restarted after SIGKILL",
        || {
            let (state, pid) = service_state(m, "egret")?;
            Ok((state == "active" && pid != 0 && pid != before).then_some(pid))
        },
    )?;
    let ready = m.ok("cat /run/egret/ready")?;
    ensure!(
        ready.trim() == after.to_string(),
        "ready file {ready:?} after the restart"
    );
    eprintln!("SIGKILL of {before}: restarted as {after}");
    Ok(())
}

/// Installing the package again (as an upgrade does) keeps the edited policy (a conffile)
/// and restarts egret (postinst: `deb-systemd-invoke restart`), which is active again.
fn reinstall_keeps_the_policy(m: &Machine, deb_name: &str) -> Result<()> {
    let (_, before) = service_state(m, "egret")?;
    m.ok(&format!(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y --reinstall /mnt/package/{deb_name} 2>&1"
    ))?;
    let policy = m.ok("cat /etc/egret/policy.yaml")?;
    ensure!(
        policy == APPROVING_POLICY,
        "the reinstall replaced the edited policy:\n{policy}"
    );
    let (state, after) = service_state(m, "egret")?;
    ensure!(
        state == "active" && after != before,
        "egret not restarted by the reinstall: {state}, MainPID {before} -> {after}"
    );
    Ok(())
}

/// `systemd-analyze security egret`: printed, and at most 3.0 ("OK").
fn security_score(m: &Machine) -> Result<()> {
    let text = m.ok("systemd-analyze security egret --no-pager")?;
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for egret.service"))
        .with_context(|| format!("no exposure level in:\n{text}"))?;
    eprintln!(
        "systemd-analyze security (in the booted container): {}",
        line.trim()
    );
    let level: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("cannot read {line:?}"))?;
    ensure!(level <= 3.0, "exposure level {level} > 3.0:\n{text}");
    let report = m.ok("systemd-analyze security egret-report.service --no-pager")?;
    if let Some(line) = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
    {
        eprintln!("systemd-analyze security: {}", line.trim());
    }
    Ok(())
}

/// The timer is listed; starting the report service writes today's HTML and JSON reports.
fn report_timer(m: &Machine) -> Result<()> {
    let timers = m.ok("systemctl list-timers --all --no-pager")?;
    ensure!(
        timers.contains("egret-report.timer"),
        "list-timers:\n{timers}"
    );
    m.ok("systemctl start egret-report.service")
        .with_context(|| {
            m.ok("journalctl -u egret-report --no-pager")
                .unwrap_or_default()
        })?;
    let day = m.ok("date -u +%F")?.trim().to_owned();
    let json = m.ok(&format!(
        "cat /var/lib/egret/reports/egret-report-{day}.json"
    ))?;
    let report: Value = serde_json::from_str(&json).context("the JSON report")?;
    ensure!(
        report.to_string().contains(SERVER_IP),
        "the report does not name {SERVER_IP}: {json}"
    );
    let html = m.ok(&format!(
        "cat /var/lib/egret/reports/egret-report-{day}.html"
    ))?;
    ensure!(html.contains("<html"), "not an HTML report");
    eprintln!(
        "{}",
        m.ok("systemctl list-timers egret-report.timer --no-pager")?
    );
    Ok(())
}

/// `apt-get purge`: no file the package installed, no configuration, state, log or systemd
/// link of egret is left.
fn purges(m: &Machine) -> Result<()> {
    let listed = m.ok("dpkg -L egret")?;
    m.ok("DEBIAN_FRONTEND=noninteractive apt-get purge -y egret 2>&1")?;
    let mut left = Vec::new();
    for path in listed.lines().map(str::trim).filter(|p| p.starts_with('/')) {
        // Directories other packages share (/usr/bin, /etc) stay; files must go.
        let kind = m.ok(&format!(
            "if [ -d '{path}' ]; then echo dir; elif [ -e '{path}' ] || [ -L '{path}' ]; then echo file; fi"
        ))?;
        if kind.trim() == "file" {
            left.push(path.to_owned());
        }
    }
    let leftovers = m.ok("ls -d /etc/egret /var/lib/egret /var/log/egret /run/egret \
         /etc/systemd/system/*/egret* /var/lib/systemd/deb-systemd-helper-enabled/*egret* \
         /var/lib/systemd/deb-systemd-helper-masked/*egret* 2>/dev/null || true")?;
    left.extend(leftovers.lines().map(str::to_owned));
    ensure!(left.is_empty(), "left behind after apt-get purge: {left:?}");
    let status = m.sh("dpkg -s egret")?;
    ensure!(
        !status.status.success(),
        "dpkg still knows egret after purge"
    );
    Ok(())
}

/// The whole life of the package under a booted systemd.
#[test]
fn package_under_booted_systemd() -> Result<()> {
    let Some((bin, xtask)) = prerequisite(prerequisites())? else {
        return Ok(());
    };
    let started = Instant::now();
    let root = debian_root(&xtask)?;
    let scratch = ScratchDir::create("systemd-deb")?;
    let deb = package(&xtask, &bin, scratch.path())?;
    let deb_name = deb
        .file_name()
        .and_then(|n| n.to_str())
        .context("the package has no file name")?
        .to_owned();
    let deb_dir = deb.parent().context("the package has no directory")?;
    std::fs::write(deb_dir.join("e2e-egress.service"), EGRESS_UNIT)?;
    let m = Machine::boot(&root, &[(deb_dir, "/mnt/package")])?;
    eprintln!("booted in {:.1?} (with packaging)", started.elapsed());
    // The server the clients connect to: busybox nc on an address of the container's lo.
    m.ok(&format!(
        "busybox ip addr add {SERVER_IP}/32 dev lo && systemd-run --quiet --unit=e2e-server \
         busybox sh -c 'while :; do busybox nc -l -p {SERVER_PORT} >/dev/null; done'"
    ))?;
    let steps: [(&str, &dyn Fn() -> Result<()>); 9] = [
        ("install", &|| install_and_start(&m, &deb_name)),
        ("connection and journal", &|| connection_and_journal(&m)),
        ("suggested systemd drop-in", &|| suggested_drop_in(&m)),
        ("reload", &|| reloads(&m)),
        ("SIGKILL", &|| restarts_after_sigkill(&m)),
        ("reinstall", &|| reinstall_keeps_the_policy(&m, &deb_name)),
        ("security", &|| security_score(&m)),
        ("report timer", &|| report_timer(&m)),
        ("purge", &|| purges(&m)),
    ];
    for (name, step) in steps {
        let t = Instant::now();
        step().with_context(|| {
            let status = m
                .ok("systemctl status egret --no-pager -n 0; journalctl -u egret --no-pager | tail -40")
                .unwrap_or_default();
            format!("step {name}\n{status}\n{}", m.logs())
        })?;
        eprintln!("step {name}: ok in {:.1?}", t.elapsed());
    }
    eprintln!("total {:.1?}", started.elapsed());
    Ok(())
}
