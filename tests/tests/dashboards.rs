//! `deploy/prometheus/egret-rules.yaml` and `deploy/grafana/egret-dashboard.json` against the
//! real Prometheus (Debian's `prometheus` package, installed when missing): `promtool check
//! rules` and `promtool test rules`; then a real egret under load (approved, unapproved and
//! refused connections) scraped every second by a real Prometheus that also loads the rules,
//! and every panel query of the dashboard must return data through `/api/v1/query`.

use anyhow::{ensure, Context, Result};
use egret_e2e::policy::audit_policy;
use egret_e2e::prometheus::{ensure_prometheus, free_port, Prometheus};
use egret_e2e::runtime::install::ensure_program;
use egret_e2e::{command, field, field_str, marker, prerequisite, Harness, PolicyDir, TcpServer};
use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const CLIENT: &str = env!("CARGO_BIN_EXE_egret-testclient");

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() -> Result<()> {
    let Some(promtool) = prerequisite(ensure_program(
        "promtool",
        "prometheus",
        &["/usr/bin/promtool"],
    ))?
    else {
        return Ok(());
    };
    for args in [
        vec!["check", "rules", "egret-rules.yaml"],
        vec!["test", "rules", "egret-rules.test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(deploy("prometheus"))
            .output()
            .with_context(|| format!("promtool {args:?}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("promtool {}:\n{text}", args.join(" "));
        ensure!(
            out.status.success() && text.contains("SUCCESS"),
            "promtool {args:?} failed:\n{text}"
        );
    }
    Ok(())
}

/// Every `expr` of the dashboard's panels, with Grafana's variables given values.
fn panel_queries(dashboard: &Value) -> Result<Vec<(String, String)>> {
    let panels = field(dashboard, "panels")
        .and_then(Value::as_array)
        .context("no panels")?;
    let mut out = Vec::new();
    for panel in panels {
        let title = field_str(panel, "title").unwrap_or_default().to_owned();
        let targets = field(panel, "targets")
            .and_then(Value::as_array)
            .context("panel without targets")?;
        ensure!(!targets.is_empty(), "panel {title:?} has no targets");
        for t in targets {
            let expr = field_str(t, "expr").context("target without expr")?;
            let expr = expr
                .replace("$__rate_interval", "30s")
                .replace("$__range", "5m")
                .replace("$__interval", "15s")
                .replace("$job", "egret")
                .replace("$instance", ".*");
            ensure!(!expr.contains('$'), "unsubstituted variable in {expr}");
            out.push((title.clone(), expr));
        }
    }
    Ok(out)
}

#[test]
fn dashboard_queries_and_rules_against_a_real_prometheus() -> Result<()> {
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(deploy(
        "grafana/egret-dashboard.json",
    ))?)?;
    ensure!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    let variables = field(&dashboard, "templating.list")
        .and_then(Value::as_array)
        .context("templating")?;
    ensure!(
        variables
            .iter()
            .any(|v| field_str(v, "type") == Some("datasource")
                && field_str(v, "query") == Some("prometheus")),
        "no Prometheus data source variable"
    );
    let queries = panel_queries(&dashboard)?;
    Harness::with_cgroup("dashboards", |cgroup| {
        let Some(prometheus_bin) = prerequisite(ensure_prometheus())? else {
            return Ok(());
        };
        let approved = TcpServer::loopback()?;
        let unapproved = TcpServer::loopback()?;
        // A port nobody listens on: refused connections (connection-failure alerts).
        let closed = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let (_policies, policy) = PolicyDir::with_policy(
            "dashboards",
            &audit_policy("approved-port", approved.port()),
        )?;
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut h = Harness::start(
            cgroup,
            &[
                "--metrics-addr",
                &metrics_addr.to_string(),
                "--policy",
                &policy.display().to_string(),
                "--failure-alert-count",
                "2",
            ],
        )?;
        let rules = deploy("prometheus/egret-rules.yaml");
        let prometheus = Prometheus::start_with_rules(
            &prometheus_bin,
            &[metrics_addr],
            Duration::from_secs(1),
            &[rules.as_path()],
        )?;
        // The counters' first samples before any load, so `increase` sees the alerts.
        let scraped = Instant::now() + Duration::from_secs(30);
        while prometheus.query("egret_alerts_total")?.is_empty() {
            ensure!(
                Instant::now() < scraped,
                "egret never scraped:\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(2));
        let m = marker();
        let load = |h: &mut Harness| -> Result<()> {
            for port in [approved.port(), unapproved.port(), closed, closed, closed] {
                let _ = h.run(&mut command(
                    CLIENT,
                    &["tcp", "127.0.0.1", &port.to_string(), &m],
                ));
            }
            Ok(())
        };
        // Load for a while, so rates over 30 s have two samples and more.
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut pending: Vec<(String, String)> = queries.clone();
        while !pending.is_empty() {
            load(&mut h)?;
            let mut still = Vec::new();
            for (title, expr) in pending {
                if prometheus.query(&expr)?.is_empty() {
                    still.push((title, expr));
                }
            }
            pending = still;
            ensure!(
                Instant::now() < deadline,
                "panel queries without data after 90 s: {pending:#?}\n--- prometheus.log ---\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
        for (title, expr) in &queries {
            let samples = prometheus.query(expr)?;
            println!(
                "panel {title:?}: {expr} -> {} series, first {:?}",
                samples.len(),
                samples.first().map(|s| s.value)
            );
        }
        // The panels show the load: connections of both verdicts, a failure alert.
        let verdicts = prometheus
            .query(r#"sum by (verdict) (egret_events_total{kind="event", action="connect"})"#)?;
        for verdict in ["approved", "unapproved"] {
            ensure!(
                verdicts
                    .iter()
                    .any(
                        |s| s.labels.get("verdict").map(String::as_str) == Some(verdict)
                            && s.value >= 1.0
                    ),
                "no {verdict} connections in {verdicts:?}"
            );
        }
        rules_settle(&prometheus)?;
        drop(prometheus);
        h.finish()
    })
}

/// The rules in `prometheus`: loaded, evaluated, healthy; the unapproved and failure alerts
/// fire under the load, `EgretDown` does not.
fn rules_settle(prometheus: &Prometheus) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = prometheus.api("/api/v1/rules")?;
        let rules: Vec<&Value> = field(&v, "data.groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|g| {
                field(g, "rules")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .collect();
        ensure!(rules.len() == 8, "rules loaded: {}", rules.len());
        for r in &rules {
            ensure!(
                field_str(r, "health") != Some("err")
                    && field_str(r, "lastError").unwrap_or_default().is_empty(),
                "rule in error: {r}"
            );
        }
        let evaluated = rules.iter().all(|r| field_str(r, "health") == Some("ok"));
        let state = |name: &str| {
            rules
                .iter()
                .find(|r| field_str(r, "name") == Some(name))
                .and_then(|r| field_str(r, "state"))
                .unwrap_or_default()
                .to_owned()
        };
        if evaluated
            && state("EgretUnapprovedDestinationsRising") == "firing"
            && state("EgretConnectionFailuresRising") == "firing"
            && state("EgretDown") == "inactive"
        {
            println!(
                "rules: {} healthy; unapproved and failure alerts firing, EgretDown inactive",
                rules.len()
            );
            return Ok(());
        }
        let states: Vec<String> = rules
            .iter()
            .map(|r| {
                format!(
                    "{}={}",
                    field_str(r, "name").unwrap_or_default(),
                    field_str(r, "state").unwrap_or_default()
                )
            })
            .collect();
        ensure!(
            Instant::now() < deadline,
            "rules never settled: {states:?}\n{v}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}
