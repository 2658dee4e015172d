use std::borrow::Cow;

use super::*;
use crate::report::aggregate::tests::obs;
use crate::report::input::WorkloadSeen;

fn pod_line(
    ip: &str,
    port: u16,
    transport: &'static str,
    domain: Option<&str>,
    kind: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> Observation<'static> {
    Observation {
        transport: Cow::Borrowed(transport),
        domain: domain.map(|d| Cow::Owned(d.to_owned())),
        pod_namespace: Some(Cow::Borrowed("shop")),
        pod_name: Some(Cow::Borrowed("web-6d9f7c5b8-x2x7q")),
        container_id: Some(Cow::Borrowed("c")),
        workload: Some(WorkloadSeen {
            kind: kind.to_owned(),
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }),
        ..obs(100, "/app", ip, port)
    }
}

fn unit_line(unit: &str, ip: &str, port: u16) -> Observation<'static> {
    Observation {
        unit: Some(Cow::Owned(unit.to_owned())),
        ..obs(100, "/usr/bin/curl", ip, port)
    }
}

fn web_lines() -> PlatformSuggester {
    let mut p = PlatformSuggester::new(false);
    let labels = [
        ("app", "web"),
        ("pod-template-hash", "6d9f7c5b8"),
        ("io.kubernetes.container.name", "web"),
    ];
    p.observe(&pod_line(
        "192.0.2.10",
        443,
        "tcp",
        Some("api.example.com"),
        "Deployment",
        "web",
        &labels,
    ));
    p.observe(&pod_line(
        "2001:db8::5",
        443,
        "tcp",
        None,
        "Deployment",
        "web",
        &labels,
    ));
    p.observe(&pod_line(
        "198.51.100.7",
        5353,
        "udp",
        None,
        "Deployment",
        "web",
        &labels,
    ));
    let mut blocked = pod_line("203.0.113.9", 22, "tcp", None, "Deployment", "web", &labels);
    blocked.verdict = Some(Verdict::Blocked);
    p.observe(&blocked);
    p
}

#[test]
fn networkpolicy_per_workload() {
    let p = web_lines();
    let files = p.render(PolicyFormat::Networkpolicy, &["a.jsonl".to_owned()]);
    assert_eq!(files.len(), 1);
    let (name, yaml) = &files[0];
    assert_eq!(name, "shop.egret-deployment-web.yaml");
    let expected_parts = [
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n",
        "  name: \"egret-deployment-web\"\n  namespace: \"shop\"\n",
        "  podSelector:\n    matchLabels:\n      \"app\": \"web\"\n  policyTypes:\n    - Egress\n",
        "k8s-app: kube-dns\n      ports:\n        - protocol: UDP\n          port: 53\n        - protocol: TCP\n          port: 53\n",
        "    # api.example.com\n    - to:\n        - ipBlock:\n            cidr: 192.0.2.10/32\n        - ipBlock:\n            cidr: 2001:db8::5/128\n      ports:\n        - protocol: TCP\n          port: 443\n",
        "            cidr: 198.51.100.7/32\n      ports:\n        - protocol: UDP\n          port: 5353\n",
    ];
    for part in expected_parts {
        assert!(yaml.contains(part), "missing {part:?} in\n{yaml}");
    }
    // Per-revision labels never select; the blocked connection is left out.
    assert!(!yaml.contains("pod-template-hash") && !yaml.contains("io.kubernetes"));
    assert!(!yaml.contains("203.0.113.9"));
    let stream = p.render_stream(PolicyFormat::Networkpolicy, &["a.jsonl".to_owned()]);
    assert!(stream.contains("1 blocked connection(s) left out"));
}

#[test]
fn cilium_names_and_addresses() {
    let p = web_lines();
    let files = p.render(PolicyFormat::Cilium, &[]);
    let (_, yaml) = &files[0];
    for part in [
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n",
        "  endpointSelector:\n    matchLabels:\n      \"app\": \"web\"\n",
        "    - toEndpoints:\n        - matchLabels:\n            k8s:io.kubernetes.pod.namespace: kube-system\n            k8s:k8s-app: kube-dns\n      toPorts:\n        - ports:\n            - port: \"53\"\n              protocol: ANY\n          rules:\n            dns:\n              - matchPattern: \"*\"\n",
        "    - toFQDNs:\n        - matchName: \"api.example.com\"\n      toPorts:\n        - ports:\n            - protocol: TCP\n              port: \"443\"\n",
        "    - toCIDR:\n        - 2001:db8::5/128\n      toPorts:\n        - ports:\n            - protocol: TCP\n              port: \"443\"\n",
        "    - toCIDR:\n        - 198.51.100.7/32\n      toPorts:\n        - ports:\n            - protocol: UDP\n              port: \"5353\"\n",
    ] {
        assert!(yaml.contains(part), "missing {part:?} in\n{yaml}");
    }
    assert!(
        !yaml.contains("192.0.2.10"),
        "a named destination is by name"
    );
}

#[test]
fn workloads_are_kept_apart_and_labels_must_agree() {
    let mut p = PlatformSuggester::new(false);
    p.observe(&pod_line(
        "192.0.2.1",
        80,
        "tcp",
        None,
        "StatefulSet",
        "db",
        &[("app", "db"), ("tier", "a")],
    ));
    p.observe(&pod_line(
        "192.0.2.2",
        80,
        "tcp",
        None,
        "StatefulSet",
        "db",
        &[("app", "db"), ("tier", "b")],
    ));
    p.observe(&pod_line(
        "192.0.2.3",
        80,
        "tcp",
        None,
        "Pod",
        "lonely",
        &[],
    ));
    let files = p.render(PolicyFormat::Networkpolicy, &[]);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "shop.egret-pod-lonely.yaml",
            "shop.egret-statefulset-db.yaml"
        ]
    );
    assert!(files[1].1.contains("\"app\": \"db\"") && !files[1].1.contains("tier"));
    // No label: a selector that matches nothing until labelled, and a warning.
    assert!(files[0].1.contains("WARNING") && files[0].1.contains("\"egret.dev/workload\""));
    assert!(files[0].1.contains("192.0.2.3/32"));
}

#[test]
fn label_syntax() {
    assert!(valid_label("app", "web"));
    assert!(valid_label("app.kubernetes.io/name", "web-1.2_3"));
    assert!(valid_label("app", ""));
    assert!(!valid_label("app", "-web"));
    assert!(!valid_label("app", &"a".repeat(64)));
    assert!(!valid_label("App.io/x", "y"));
    assert!(!valid_label("a b", "y"));
    assert!(!valid_label("app", "x\ny"));
    assert!(!valid_label("/x", "y"));
}

#[test]
fn systemd_drop_ins() {
    let mut p = PlatformSuggester::new(false);
    p.observe(&unit_line("backup.service", "192.0.2.10", 443));
    p.observe(&unit_line("backup.service", "2001:db8::1", 22));
    p.observe(&unit_line("backup.service", "127.0.0.1", 8080));
    p.observe(&unit_line("session-4.scope", "192.0.2.11", 443));
    p.observe(&unit_line("web.socket", "192.0.2.12", 443));
    let files = p.render(PolicyFormat::Systemd, &["e.jsonl".to_owned()]);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "backup.service.d/50-egret-egress.conf",
            "web.socket.d/50-egret-egress.conf"
        ]
    );
    let text = &files[0].1;
    assert!(text.starts_with("# egret: egress of backup.service"));
    assert!(text.contains(
        "[Service]\nIPAddressAllow=localhost\nIPAddressAllow=192.0.2.10 2001:db8::1\nIPAddressDeny=any\n"
    ));
    assert!(!text.contains("127.0.0.1"));
    assert!(files[1].1.contains("[Socket]\n"));
    let stream = p.render_stream(PolicyFormat::Systemd, &[]);
    assert!(stream.contains("# --- backup.service.d/50-egret-egress.conf ---\n# egret"));
    // Containers' and pods' lines are not a unit's.
    let mut c = PlatformSuggester::new(false);
    c.observe(&Observation {
        container_id: Some(Cow::Borrowed("c")),
        ..unit_line("docker.service", "192.0.2.1", 1)
    });
    assert!(c.render(PolicyFormat::Systemd, &[]).is_empty());
    assert!(c
        .render_stream(PolicyFormat::Systemd, &[])
        .contains("nothing to suggest"));
}

#[test]
fn hostile_names_stay_quoted() {
    let mut p = PlatformSuggester::new(false);
    p.observe(&pod_line(
        "192.0.2.1",
        443,
        "tcp",
        Some("evil.example\n- matchPattern: \"*\""),
        "Deployment",
        "web",
        &[("app", "x\"\n  y: z"), ("tier", "web")],
    ));
    for format in [PolicyFormat::Networkpolicy, PolicyFormat::Cilium] {
        let yaml = &p.render(format, &["a\nb".to_owned()])[0].1;
        assert!(!yaml.contains("evil"), "{yaml}");
        // A label Kubernetes would refuse is not in the selector; the valid one is.
        assert!(!yaml.contains("\"app\""), "{yaml}");
        assert!(yaml.contains("      \"tier\": \"web\"\n"), "{yaml}");
        assert!(!yaml.contains("\n  y: z"), "{yaml}");
        assert!(yaml.contains("in a?b"), "{yaml}");
    }
}

/// A YAML document as JSON (scalars: strings, integers, booleans, null), for structural checks.
fn to_json(node: &saphyr::MarkedYaml<'_>) -> serde_json::Value {
    use saphyr::{Scalar, YamlData};
    use serde_json::Value;
    match &crate::yaml::untag(node).data {
        YamlData::Value(Scalar::String(s)) | YamlData::Representation(s, _, _) => {
            Value::String(s.to_string())
        }
        YamlData::Value(Scalar::Integer(i)) => Value::from(*i),
        YamlData::Value(Scalar::Boolean(b)) => Value::Bool(*b),
        YamlData::Value(Scalar::Null) => Value::Null,
        YamlData::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
        YamlData::Mapping(map) => Value::Object(
            map.iter()
                .map(|(k, v)| match to_json(k) {
                    Value::String(k) => (k, to_json(v)),
                    other => panic!("non-string key {other}"),
                })
                .collect(),
        ),
        other => panic!("unexpected YAML node {other:?}"),
    }
}

fn keys(v: &serde_json::Value) -> Vec<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not a mapping: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// An egress rule of a CiliumNetworkPolicy (cilium.io/v2 `EgressRule`): the keys egret
/// writes are a subset of the CRD's, with the CRD's types.
fn check_cilium_egress(rule: &serde_json::Value) {
    for key in keys(rule) {
        assert!(
            ["toEndpoints", "toFQDNs", "toCIDR", "toPorts"].contains(&key),
            "unknown egress key {key}"
        );
    }
    if let Some(fqdns) = rule.get("toFQDNs") {
        for f in fqdns.as_array().unwrap() {
            assert_eq!(keys(f), ["matchName"]);
            assert!(f["matchName"].as_str().is_some_and(|n| !n.is_empty()));
        }
    }
    if let Some(cidrs) = rule.get("toCIDR") {
        for c in cidrs.as_array().unwrap() {
            let c = c.as_str().unwrap();
            let (ip, len) = c.split_once('/').unwrap();
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(len, if ip.is_ipv4() { "32" } else { "128" });
        }
    }
    if let Some(endpoints) = rule.get("toEndpoints") {
        for e in endpoints.as_array().unwrap() {
            assert_eq!(keys(e), ["matchLabels"]);
            assert!(e["matchLabels"]
                .as_object()
                .unwrap()
                .values()
                .all(|v| v.is_string()));
        }
    }
    for port_rule in rule
        .get("toPorts")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        for key in keys(port_rule) {
            assert!(
                ["ports", "rules"].contains(&key),
                "unknown toPorts key {key}"
            );
        }
        for p in port_rule["ports"].as_array().unwrap() {
            // The CRD's port is a string; protocol one of TCP, UDP, SCTP, ANY.
            assert!(
                p["port"].as_str().is_some_and(|s| s.parse::<u16>().is_ok()),
                "{p}"
            );
            assert!(["TCP", "UDP", "SCTP", "ANY"].contains(&p["protocol"].as_str().unwrap()));
        }
        if let Some(rules) = port_rule.get("rules") {
            assert_eq!(keys(rules), ["dns"]);
            for d in rules["dns"].as_array().unwrap() {
                assert!(d["matchPattern"].is_string() || d["matchName"].is_string());
            }
        }
    }
}

#[test]
fn cilium_policies_have_the_crd_structure() {
    let mut p = web_lines();
    p.observe(&pod_line(
        "192.0.2.3",
        0,
        "icmp",
        None,
        "Job",
        "ping",
        &[("app", "ping")],
    ));
    let stream = p.render_stream(PolicyFormat::Cilium, &["a.jsonl".to_owned()]);
    let docs = crate::yaml::load(&stream).unwrap();
    assert_eq!(docs.len(), 2, "{stream}");
    for doc in &docs {
        let doc = to_json(doc);
        assert_eq!(
            keys(&doc),
            ["apiVersion", "kind", "metadata", "spec"],
            "top level"
        );
        assert_eq!(doc["apiVersion"], "cilium.io/v2");
        assert_eq!(doc["kind"], "CiliumNetworkPolicy");
        let meta = &doc["metadata"];
        assert!(keys(meta)
            .iter()
            .all(|k| ["name", "namespace", "labels"].contains(k)));
        let name = meta["name"].as_str().unwrap();
        assert!(crate::container::workload::valid_name(name) && name.len() <= 253);
        assert!(meta["namespace"].is_string());
        assert_eq!(keys(&doc["spec"]), ["egress", "endpointSelector"]);
        assert_eq!(keys(&doc["spec"]["endpointSelector"]), ["matchLabels"]);
        let egress = doc["spec"]["egress"].as_array().unwrap();
        assert!(egress.len() >= 2);
        // The DNS visibility rule first.
        assert_eq!(
            egress[0]["toPorts"][0]["rules"]["dns"][0]["matchPattern"],
            "*"
        );
        assert_eq!(
            egress[0]["toEndpoints"][0]["matchLabels"]["k8s:k8s-app"],
            "kube-dns"
        );
        egress.iter().for_each(check_cilium_egress);
    }
    // The same for NetworkPolicy, whose full schema kubernetes-validate checks (e2e).
    let np = p.render_stream(PolicyFormat::Networkpolicy, &[]);
    for doc in crate::yaml::load(&np).unwrap() {
        let doc = to_json(&doc);
        assert_eq!(keys(&doc), ["apiVersion", "kind", "metadata", "spec"]);
        assert_eq!(keys(&doc["spec"]), ["egress", "podSelector", "policyTypes"]);
    }
}
