//! `/metrics`: a [`Snapshot`] in the text exposition format.
//!
//! Every field of [`Metrics`] (the `metric` JSON line) is exported here, by an exhaustive
//! destructuring: a field added to [`Metrics`] is a compile error in [`render`] until it gets
//! a name, a type and a help text below (and a row in `docs/metrics.md`). Counters are
//! `egret_<what>_total`, gauges `egret_<what>` with a unit suffix where there is a unit.

use super::{
    exposition::{Exposition, Kind},
    Snapshot, StaticInfo,
};
use crate::{metrics::Metrics, policy::Mode};

/// The process's own resource use, read when scraped (`process_*`, as the Prometheus client
/// libraries name them).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

impl ProcessStats {
    /// This process, from `/proc/self`; what cannot be read is left out.
    pub fn read() -> Self {
        let Ok(me) = procfs::process::Process::myself() else {
            return Self::default();
        };
        let stat = me.stat().ok();
        let ticks = procfs::ticks_per_second();
        Self {
            cpu_seconds: stat
                .as_ref()
                .filter(|_| ticks > 0)
                .map(|s| s.utime.saturating_add(s.stime) as f64 / ticks as f64),
            resident_bytes: stat
                .as_ref()
                .map(|s| s.rss.saturating_mul(procfs::page_size())),
            open_fds: me.fd_count().ok().and_then(|n| u64::try_from(n).ok()),
            max_fds: me
                .limits()
                .ok()
                .and_then(|l| match l.max_open_files.soft_limit {
                    procfs::process::LimitValue::Value(v) => Some(v),
                    procfs::process::LimitValue::Unlimited => None,
                }),
        }
    }
}

/// The whole `/metrics` page.
pub fn render(snapshot: &Snapshot, info: &StaticInfo, process: &ProcessStats) -> String {
    let mut e = Exposition::default();
    events(&mut e, snapshot);
    metrics(&mut e, &snapshot.metrics);
    ring(&mut e, snapshot);
    policy(&mut e, snapshot.policy_mode);
    about(&mut e, info, process);
    e.finish()
}

fn events(e: &mut Exposition, snapshot: &Snapshot) {
    const NAME: &str = "egret_events_total";
    e.family(
        NAME,
        Kind::Counter,
        "Lines written, by event.kind (event, alert), event.action (connect, send, dns-answer) \
         and egret.policy.verdict (approved, unapproved, blocked; none for dns lines).",
    );
    let mut blocked = 0_u64;
    for (key, count) in snapshot.events.iter() {
        e.sample(
            NAME,
            &[
                ("kind", &key.kind),
                ("action", &key.action),
                ("verdict", &key.verdict),
            ],
            count,
        );
        if key.kind == "event" && key.verdict == "blocked" {
            blocked = blocked.saturating_add(count);
        }
    }
    e.counter(
        "egret_connections_blocked_total",
        "Connections and UDP flows the kernel refused (block mode), as written.",
        blocked,
    );
}

fn metrics(e: &mut Exposition, m: &Metrics) {
    let Metrics {
        events_received,
        events_lost_kernel,
        events_dropped_userspace,
        decode_errors,
        write_errors,
        output_lines_refused,
        output_backlog_bytes,
        lines_written,
        process_table_size,
        process_table_misses,
        process_table_stale,
        process_table_evicted,
        process_table_exited_evicted,
        exec_without_args,
        args_redacted,
        cgroups_cached,
        udp_flows_open,
        udp_flows_evicted,
        udp_datagrams_aggregated,
        udp_flow_update_failures,
        policy_reloads,
        policy_reload_failures,
        alerts,
        alerts_suppressed,
        dns_messages,
        dns_malformed,
        dns_cut,
        dns_mappings,
        dns_untrusted,
        dns_query_update_failures,
        learned_addresses_evicted,
        first_bytes_read,
        first_bytes_evicted,
        name_checks_passed,
        name_checks_refused,
        name_gate_update_failures,
        exe_update_failures,
        dns_cache_size,
        dns_cache_evicted,
        containers_cached,
        container_fetches,
        container_fetch_errors,
        container_malformed,
        container_fetch_timeouts,
        container_not_found,
        container_requests_dropped,
        containers_held,
        tcp_connections_open,
        tcp_connection_ends,
        tcp_ends_without_start,
        tcp_connections_lost,
        tcp_connections_evicted,
        tcp_state_missing,
        tcp_state_update_failures,
        failure_alerts,
        new_destination_alerts,
        spike_alerts,
        baseline_workloads,
        baseline_destinations,
        baseline_evicted,
        baseline_state_set_aside,
        baseline_state_writes,
        baseline_state_write_errors,
        spike_keys_evicted,
    } = *m;
    e.counter(
        "egret_events_received_total",
        "Records read from the kernel ring buffer.",
        events_received,
    );
    e.counter(
        "egret_events_lost_kernel_total",
        "Records the kernel could not put in the ring buffer because it was full: lost.",
        events_lost_kernel,
    );
    e.counter(
        "egret_events_dropped_userspace_total",
        "Records received but not written (undecodable, or the output failed).",
        events_dropped_userspace,
    );
    e.counter(
        "egret_decode_errors_total",
        "Records that did not decode.",
        decode_errors,
    );
    e.counter(
        "egret_write_errors_total",
        "Failed writes and flushes on any output (retried: lines stay in the backlog).",
        write_errors,
    );
    e.counter(
        "egret_output_lines_refused_total",
        "Lines an output refused because its backlog was full: lost.",
        output_lines_refused,
    );
    e.gauge(
        "egret_output_backlog_bytes",
        "Bytes of lines waiting for the output files to take them (full disk, I/O error).",
        output_backlog_bytes,
    );
    e.counter(
        "egret_lines_written_total",
        "JSON lines written (events, alerts, dns and metric lines).",
        lines_written,
    );
    e.gauge(
        "egret_process_table_entries",
        "Processes in the process table (live, and exited within --process-exit-grace).",
        process_table_size,
    );
    e.counter(
        "egret_process_table_misses_total",
        "Events whose process was not in the table.",
        process_table_misses,
    );
    e.counter(
        "egret_process_table_stale_total",
        "Process table entries found naming another program than the process runs (an exec record lost), read again from /proc.",
        process_table_stale,
    );
    e.counter(
        "egret_process_table_evictions_total",
        "Live processes dropped because the table reached --max-processes.",
        process_table_evicted,
    );
    e.counter(
        "egret_process_table_exited_evictions_total",
        "Exited processes dropped before their grace period because the table reached --max-processes.",
        process_table_exited_evicted,
    );
    e.counter(
        "egret_exec_without_args_total",
        "Execs whose arguments the kernel did not capture.",
        exec_without_args,
    );
    e.counter(
        "egret_args_redacted_total",
        "Processes whose arguments had secrets replaced with [REDACTED] (an exec, or a process read from /proc; a fork of a redacted parent is not counted again).",
        args_redacted,
    );
    e.gauge(
        "egret_cgroup_cache_entries",
        "cgroup ids resolved to paths.",
        cgroups_cached,
    );
    e.gauge(
        "egret_udp_flows_open",
        "UDP flows not yet written.",
        udp_flows_open,
    );
    e.counter(
        "egret_udp_flows_evicted_total",
        "UDP flows whose kernel counter was evicted before their line was written.",
        udp_flows_evicted,
    );
    e.counter(
        "egret_udp_datagrams_aggregated_total",
        "Datagrams counted into an open flow in the kernel instead of producing an event.",
        udp_datagrams_aggregated,
    );
    e.counter(
        "egret_udp_flow_update_failures_total",
        "UDP flows the kernel could not record.",
        udp_flow_update_failures,
    );
    e.family(
        "egret_policy_reloads_total",
        Kind::Counter,
        "Policy reloads after start-up (SIGHUP, --watch), by result; a failed one leaves the previous policy in force.",
    );
    e.sample(
        "egret_policy_reloads_total",
        &[("result", "success")],
        policy_reloads,
    );
    e.sample(
        "egret_policy_reloads_total",
        &[("result", "failure")],
        policy_reload_failures,
    );
    e.family(
        "egret_alerts_total",
        Kind::Counter,
        "Alert lines written, by kind (unapproved-destination, connection-failures, new-destination, spike).",
    );
    for (kind, n) in [
        ("unapproved-destination", alerts),
        ("connection-failures", failure_alerts),
        ("new-destination", new_destination_alerts),
        ("spike", spike_alerts),
    ] {
        e.sample("egret_alerts_total", &[("kind", kind)], n);
    }
    e.counter(
        "egret_alerts_suppressed_total",
        "Unapproved occurrences folded into an alert's repeat count.",
        alerts_suppressed,
    );
    e.counter(
        "egret_dns_messages_total",
        "DNS responses received from the kernel.",
        dns_messages,
    );
    e.counter(
        "egret_dns_malformed_total",
        "DNS responses that did not parse.",
        dns_malformed,
    );
    e.counter(
        "egret_dns_untrusted_total",
        "DNS answers not believed (untrusted resolver or no matching query): they named nothing.",
        dns_untrusted,
    );
    e.counter(
        "egret_dns_query_update_failures_total",
        "DNS queries the kernel could not remember.",
        dns_query_update_failures,
    );
    e.counter(
        "egret_learned_addresses_evicted_total",
        "Block mode: connections refused because the kernel had evicted their learned address (--max-learned-addresses).",
        learned_addresses_evicted,
    );
    e.counter(
        "egret_first_bytes_read_total",
        "TCP connections whose first bytes were read and classified.",
        first_bytes_read,
    );
    e.counter(
        "egret_first_bytes_evicted_total",
        "First flights forgotten before they were whole.",
        first_bytes_evicted,
    );
    e.counter(
        "egret_name_checks_passed_total",
        "Held first payloads whose name check passed (block mode).",
        name_checks_passed,
    );
    e.counter(
        "egret_name_checks_refused_total",
        "Held first payloads refused: dropped, socket destroyed (block mode).",
        name_checks_refused,
    );
    e.counter(
        "egret_name_gate_update_failures_total",
        "Connects refused because their first payload could not be held (block mode).",
        name_gate_update_failures,
    );
    e.counter(
        "egret_exe_update_failures_total",
        "Exec'd files a processes: selector approves that could not be recorded (block mode).",
        exe_update_failures,
    );
    e.counter(
        "egret_dns_cut_total",
        "DNS responses longer than the kernel's copy.",
        dns_cut,
    );
    e.counter(
        "egret_dns_mappings_total",
        "(address, name) mappings learned from DNS answers.",
        dns_mappings,
    );
    e.gauge(
        "egret_dns_cache_entries",
        "Entries in the address to names cache.",
        dns_cache_size,
    );
    e.counter(
        "egret_dns_cache_evictions_total",
        "DNS cache entries dropped before their TTL because of the size bound.",
        dns_cache_evicted,
    );
    e.gauge(
        "egret_container_cache_entries",
        "Containers whose identity is cached.",
        containers_cached,
    );
    e.counter(
        "egret_container_fetches_total",
        "Requests to container runtimes.",
        container_fetches,
    );
    e.counter(
        "egret_container_fetch_errors_total",
        "Requests to container runtimes that failed.",
        container_fetch_errors,
    );
    e.counter(
        "egret_container_malformed_total",
        "Container runtime answers that did not make sense.",
        container_malformed,
    );
    e.counter(
        "egret_container_fetch_timeouts_total",
        "Requests to container runtimes that got no answer in time.",
        container_fetch_timeouts,
    );
    e.counter(
        "egret_container_not_found_total",
        "Container ids a runtime did not know (yet).",
        container_not_found,
    );
    e.counter(
        "egret_container_requests_dropped_total",
        "Container look-ups not sent because the request queue was full.",
        container_requests_dropped,
    );
    e.gauge(
        "egret_connections_held",
        "Connections waiting for their container's identity.",
        containers_held,
    );
    e.gauge(
        "egret_tcp_connections_open",
        "Outbound TCP connections started and not yet ended.",
        tcp_connections_open,
    );
    e.counter(
        "egret_tcp_connection_ends_total",
        "connection-end lines written.",
        tcp_connection_ends,
    );
    e.counter(
        "egret_tcp_ends_without_start_total",
        "End lines of connections whose start egret had not seen.",
        tcp_ends_without_start,
    );
    e.counter(
        "egret_tcp_connections_lost_total",
        "Connections closed out as unknown because their end record never came.",
        tcp_connections_lost,
    );
    e.counter(
        "egret_tcp_connections_evicted_total",
        "Started connections forgotten because too many were open at once.",
        tcp_connections_evicted,
    );
    e.counter(
        "egret_tcp_state_missing_total",
        "Closes the kernel saw without the connection's state entry (LRU eviction).",
        tcp_state_missing,
    );
    e.counter(
        "egret_tcp_state_update_failures_total",
        "Connection state entries the kernel could not store.",
        tcp_state_update_failures,
    );
    e.counter(
        "egret_failure_alerts_total",
        "connection-failures alerts written.",
        failure_alerts,
    );
    baseline(
        e,
        [
            baseline_workloads,
            baseline_destinations,
            baseline_evicted,
            baseline_state_set_aside,
            baseline_state_writes,
            baseline_state_write_errors,
            spike_keys_evicted,
        ],
    );
}

/// The learned baseline's gauges and counters.
fn baseline(e: &mut Exposition, counts: [u64; 7]) {
    let [workloads, destinations, evicted, set_aside, writes, write_errors, spike_evicted] = counts;
    e.gauge(
        "egret_baseline_workload_entries",
        "Workloads in the learned baseline.",
        workloads,
    );
    e.gauge(
        "egret_baseline_destination_entries",
        "Destinations in the learned baseline, over every workload.",
        destinations,
    );
    e.counter(
        "egret_baseline_evicted_total",
        "Destinations and workloads the baseline's bounds evicted.",
        evicted,
    );
    e.counter(
        "egret_baseline_state_set_aside_total",
        "Unusable baseline state files (corrupt, truncated, another version) moved aside.",
        set_aside,
    );
    e.counter(
        "egret_baseline_state_writes_total",
        "Baseline state files written.",
        writes,
    );
    e.counter(
        "egret_baseline_state_write_errors_total",
        "Baseline state file writes that failed (the previous file stays).",
        write_errors,
    );
    e.counter(
        "egret_spike_keys_evicted_total",
        "Spike windows forgotten because their table was full.",
        spike_evicted,
    );
}

fn ring(e: &mut Exposition, snapshot: &Snapshot) {
    let ring = snapshot.ring;
    e.gauge(
        "egret_ring_buffer_size_bytes",
        "Size of the kernel ring buffer (--ring-buffer-size).",
        ring.size,
    );
    if let Some(pending) = ring.pending {
        e.gauge(
            "egret_ring_buffer_pending_bytes",
            "Bytes the kernel had written and egret not yet read when the last drain started \
             (producer minus consumer position, record headers included).",
            pending,
        );
    }
    if let Some(peak) = ring.peak {
        e.gauge(
            "egret_ring_buffer_pending_peak_bytes",
            "The most bytes ever pending when a drain started, since egret started.",
            peak,
        );
    }
}

fn policy(e: &mut Exposition, mode: Option<Mode>) {
    const NAME: &str = "egret_policy_mode";
    e.family(
        NAME,
        Kind::Gauge,
        "The policy in force: 1 for its mode, 0 for the other.",
    );
    for candidate in [Mode::Audit, Mode::Block] {
        e.sample(
            NAME,
            &[("mode", candidate.name())],
            u64::from(mode == Some(candidate)),
        );
    }
}

fn about(e: &mut Exposition, info: &StaticInfo, process: &ProcessStats) {
    e.family(
        "egret_build_info",
        Kind::Gauge,
        "Always 1; the labels say which egret this is.",
    );
    e.sample(
        "egret_build_info",
        &[
            ("version", info.version),
            ("arch", std::env::consts::ARCH),
            (
                "profile",
                if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                },
            ),
        ],
        1,
    );
    e.gauge(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        info.start_time,
    );
    let ProcessStats {
        cpu_seconds,
        resident_bytes,
        open_fds,
        max_fds,
    } = *process;
    if let Some(v) = cpu_seconds {
        e.single(
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
            v,
        );
    }
    if let Some(v) = resident_bytes {
        e.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            v,
        );
    }
    if let Some(v) = open_fds {
        e.gauge("process_open_fds", "Number of open file descriptors.", v);
    }
    if let Some(v) = max_fds {
        e.gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            v,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::metrics::{exposition, EventCounts, RingFill};

    fn snapshot() -> Snapshot {
        let mut events = EventCounts::default();
        for (kind, action, verdict, n) in [
            ("event", "connect", "approved", 3),
            ("event", "connect", "blocked", 2),
            ("event", "send", "blocked", 1),
            ("alert", "connect", "blocked", 2),
            ("event", "dns-answer", "none", 4),
        ] {
            for _ in 0..n {
                events.add(kind, action, verdict);
            }
        }
        Snapshot {
            metrics: Metrics {
                events_received: 41,
                events_lost_kernel: 1,
                policy_reloads: 2,
                policy_reload_failures: 1,
                alerts: 2,
                dns_cache_size: 7,
                ..Metrics::default()
            },
            events,
            ring: RingFill {
                size: 4096,
                pending: Some(128),
                peak: Some(1024),
            },
            policy_mode: Some(Mode::Block),
        }
    }

    fn info() -> StaticInfo {
        StaticInfo {
            version: "1.2.3",
            start_time: 1_700_000_000.5,
        }
    }

    /// The page as (series → value), checking the format on the way: every sample belongs
    /// to the family whose HELP and TYPE came just before it, names are valid, no family
    /// appears twice.
    fn parse(page: &str) -> BTreeMap<String, f64> {
        let mut series = BTreeMap::new();
        let mut families = BTreeSet::new();
        let mut current: Option<(String, String)> = None;
        let mut lines = page.lines().peekable();
        while let Some(line) = lines.next() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(exposition::valid_metric_name(name), "{name}");
                assert!(!help.is_empty(), "{name} has no help");
                assert!(families.insert(name.to_owned()), "{name} twice");
                let ty = lines.next().unwrap();
                let (ty_name, kind) = ty.strip_prefix("# TYPE ").unwrap().split_once(' ').unwrap();
                assert_eq!(ty_name, name);
                assert!(kind == "counter" || kind == "gauge", "{ty}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "counter {name}");
                } else {
                    assert!(!name.ends_with("_total"), "gauge {name}");
                }
                current = Some((name.to_owned(), kind.to_owned()));
                continue;
            }
            let (name, _) = current.clone().unwrap();
            let (key, value) = line.rsplit_once(' ').unwrap();
            let metric = key.split('{').next().unwrap();
            assert_eq!(metric, name, "{line}");
            if let Some(labels) = key.strip_prefix(&format!("{name}{{")) {
                for pair in labels.strip_suffix('}').unwrap().split(',') {
                    let (label, quoted) = pair.split_once('=').unwrap();
                    assert!(exposition::valid_label_name(label), "{label}");
                    assert!(quoted.starts_with('"') && quoted.ends_with('"'), "{pair}");
                }
            }
            let value: f64 = value.parse().unwrap();
            assert!(
                series.insert(key.to_owned(), value).is_none(),
                "{key} twice"
            );
        }
        series
    }

    #[test]
    fn every_metric_has_help_and_type_and_a_valid_name() {
        let page = render(&snapshot(), &info(), &ProcessStats::read());
        let series = parse(&page);
        assert!(series.len() > 40, "{page}");
        assert!(page.ends_with('\n'));
    }

    #[test]
    fn values_come_from_the_snapshot() {
        let process = ProcessStats {
            cpu_seconds: Some(1.25),
            resident_bytes: Some(4096),
            open_fds: Some(9),
            max_fds: Some(1024),
        };
        let series = parse(&render(&snapshot(), &info(), &process));
        let want = [
            (
                r#"egret_events_total{kind="event",action="connect",verdict="approved"}"#,
                3.0,
            ),
            (
                r#"egret_events_total{kind="event",action="connect",verdict="blocked"}"#,
                2.0,
            ),
            (
                r#"egret_events_total{kind="alert",action="connect",verdict="blocked"}"#,
                2.0,
            ),
            (
                r#"egret_events_total{kind="event",action="dns-answer",verdict="none"}"#,
                4.0,
            ),
            ("egret_connections_blocked_total", 3.0),
            ("egret_events_received_total", 41.0),
            ("egret_events_lost_kernel_total", 1.0),
            ("egret_events_dropped_userspace_total", 0.0),
            (r#"egret_policy_reloads_total{result="success"}"#, 2.0),
            (r#"egret_policy_reloads_total{result="failure"}"#, 1.0),
            (r#"egret_alerts_total{kind="unapproved-destination"}"#, 2.0),
            (r#"egret_alerts_total{kind="new-destination"}"#, 0.0),
            ("egret_dns_cache_entries", 7.0),
            ("egret_ring_buffer_size_bytes", 4096.0),
            ("egret_ring_buffer_pending_bytes", 128.0),
            ("egret_ring_buffer_pending_peak_bytes", 1024.0),
            (r#"egret_policy_mode{mode="audit"}"#, 0.0),
            (r#"egret_policy_mode{mode="block"}"#, 1.0),
            ("process_start_time_seconds", 1_700_000_000.5),
            ("process_cpu_seconds_total", 1.25),
            ("process_resident_memory_bytes", 4096.0),
            ("process_open_fds", 9.0),
            ("process_max_fds", 1024.0),
        ];
        for (key, value) in want {
            assert_eq!(series.get(key), Some(&value), "{key}");
        }
        let build = series
            .keys()
            .find(|k| k.starts_with("egret_build_info{"))
            .unwrap();
        assert!(build.contains(r#"version="1.2.3""#), "{build}");
    }

    #[test]
    fn docs_name_every_metric() {
        let docs = include_str!("../../../docs/metrics.md");
        let process = ProcessStats {
            cpu_seconds: Some(1.0),
            resident_bytes: Some(1),
            open_fds: Some(1),
            max_fds: Some(1),
        };
        let page = render(&snapshot(), &info(), &process);
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(
                    docs.contains(&format!("`{name}`")) || docs.contains(&format!("`{name}{{")),
                    "docs/metrics.md does not describe {name}"
                );
            }
        }
    }

    #[test]
    fn before_the_first_snapshot() {
        let page = render(&Snapshot::default(), &info(), &ProcessStats::default());
        let series = parse(&page);
        // No ring positions, no policy yet, no lines: the families are still there.
        assert!(!series.contains_key("egret_ring_buffer_pending_bytes"));
        assert_eq!(series.get(r#"egret_policy_mode{mode="audit"}"#), Some(&0.0));
        assert_eq!(series.get("egret_connections_blocked_total"), Some(&0.0));
        assert!(page.contains("# TYPE egret_events_total counter\n"));
        assert!(!series.keys().any(|k| k.starts_with("process_cpu")));
    }
}
