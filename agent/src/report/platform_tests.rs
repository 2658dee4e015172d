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
        &[("app", "x\"\n  y: z")],
    ));
    for format in [PolicyFormat::Networkpolicy, PolicyFormat::Cilium] {
        let yaml = &p.render(format, &["a\nb".to_owned()])[0].1;
        assert!(!yaml.contains("evil"), "{yaml}");
        assert!(yaml.contains(r#""app": "x\"\n  y: z""#), "{yaml}");
        assert!(!yaml.contains("\n  y: z"), "{yaml}");
        assert!(yaml.contains("in a?b"), "{yaml}");
    }
}
