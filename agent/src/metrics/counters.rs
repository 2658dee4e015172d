//! The agent's counters: what every `metric` line and the Prometheus endpoint report.
//!
//! Each stage of the pipeline keeps its own counts; [`crate::pipeline::Pipeline`] gathers them
//! into one [`Metrics`] (with every field named, so a new counter does not compile until it is
//! filled), and [`super::render`] exports every field to Prometheus the same way.

use serde::{Deserialize, Serialize};

/// Agent counters, as reported in `metric` lines. Read back leniently: a counter a line
/// lacks (another egret version) reads as 0.
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(default)]
pub struct Metrics {
    /// Records read from the ring buffer.
    pub events_received: u64,
    /// Records the kernel could not reserve (ring buffer full): lost.
    pub events_lost_kernel: u64,
    /// Records received but not written: undecodable, or the output failed.
    pub events_dropped_userspace: u64,
    pub decode_errors: u64,
    /// Failed writes and flushes on any output (a failed write-out is retried: not a loss).
    pub write_errors: u64,
    /// Lines an output refused because its backlog was full: lost (also in
    /// `events_dropped_userspace`).
    pub output_lines_refused: u64,
    /// Bytes of lines waiting for the output file to take them (a full disk, an I/O error).
    pub output_backlog_bytes: u64,
    /// JSON lines written (events and metrics).
    pub lines_written: u64,
    pub process_table_size: u64,
    pub process_table_misses: u64,
    /// Entries found naming another program than the process runs (its exec record was lost)
    /// and read again from `/proc`.
    pub process_table_stale: u64,
    /// Live processes dropped because the table reached `--max-processes`.
    pub process_table_evicted: u64,
    /// Exited processes dropped before their grace period ended because the table reached
    /// `--max-processes` (a late event of theirs is then named from `/proc` or its comm).
    pub process_table_exited_evicted: u64,
    pub exec_without_args: u64,
    /// Processes whose arguments had secrets replaced with `[REDACTED]`.
    pub args_redacted: u64,
    pub cgroups_cached: u64,
    pub udp_flows_open: u64,
    /// Flows whose kernel entry was evicted before they were reported (counts may be short).
    pub udp_flows_evicted: u64,
    /// Datagrams counted into an open flow in the kernel instead of producing an event.
    pub udp_datagrams_aggregated: u64,
    pub udp_flow_update_failures: u64,
    /// Policies loaded after start-up (SIGHUP, `--watch`).
    pub policy_reloads: u64,
    /// New policies refused because they were invalid (the old one stayed in force).
    pub policy_reload_failures: u64,
    /// Alert lines written.
    pub alerts: u64,
    /// Unapproved occurrences folded into an alert's repeat count.
    pub alerts_suppressed: u64,
    /// DNS responses received from the kernel.
    pub dns_messages: u64,
    /// DNS responses that did not parse (skipped, nothing learned from them).
    pub dns_malformed: u64,
    /// DNS responses longer than the kernel's copy (their tail was not seen).
    pub dns_cut: u64,
    /// (address, name) mappings learned from answers.
    pub dns_mappings: u64,
    /// DNS answers not believed (not from a trusted resolver, or answering no query of the
    /// receiving socket): they named and approved nothing.
    pub dns_untrusted: u64,
    /// DNS queries the kernel could not remember (their answers were then not believed).
    pub dns_query_update_failures: u64,
    /// Block mode: connections the kernel refused that the policy approves through a name
    /// their address was learned for: the kernel's learned-address map (`--max-learned-addresses`)
    /// had evicted it. They stay refused.
    pub learned_addresses_evicted: u64,
    /// TCP connections whose first bytes were read and classified (TLS, HTTP or other).
    pub first_bytes_read: u64,
    /// First flights forgotten before they were whole (too many connections at once).
    pub first_bytes_evicted: u64,
    /// Block mode: held first payloads whose name check passed.
    pub name_checks_passed: u64,
    /// Block mode: held first payloads refused (dropped, socket destroyed), with those timed
    /// out.
    pub name_checks_refused: u64,
    /// Block mode: connects refused because their first payload could not be held (the gate
    /// map was full).
    pub name_gate_update_failures: u64,
    /// Block mode: exec'd files a `processes:` selector approves by path that could not be
    /// recorded (the executables map was full): they stay unapproved.
    pub exe_update_failures: u64,
    /// Entries in the address → names cache.
    pub dns_cache_size: u64,
    /// Cache entries dropped before their TTL because of the size bound.
    pub dns_cache_evicted: u64,
    /// Containers whose identity is cached.
    pub containers_cached: u64,
    /// Requests to container runtimes, and those that failed or returned nonsense.
    pub container_fetches: u64,
    pub container_fetch_errors: u64,
    pub container_malformed: u64,
    /// Of the failures, runtimes that did not answer in time.
    pub container_fetch_timeouts: u64,
    /// Container ids a runtime did not know (yet).
    pub container_not_found: u64,
    /// Lookups not sent because the request queue was full.
    pub container_requests_dropped: u64,
    /// Connections waiting for their container's identity right now.
    pub containers_held: u64,
    /// Outbound TCP connections started and not yet ended.
    pub tcp_connections_open: u64,
    /// `connection-end` lines written.
    pub tcp_connection_ends: u64,
    /// End lines of connections whose start egret had not seen (older than egret, or forgotten).
    pub tcp_ends_without_start: u64,
    /// Connections closed out with outcome `unknown` because their end record never came.
    pub tcp_connections_lost: u64,
    /// Started connections forgotten because too many were open at once.
    pub tcp_connections_evicted: u64,
    /// Closes the kernel saw without the connection's state entry (LRU eviction).
    pub tcp_state_missing: u64,
    /// Connection state entries the kernel could not store.
    pub tcp_state_update_failures: u64,
    /// Repeated-failure alerts written.
    pub failure_alerts: u64,
    /// `new-destination` alerts written (a destination new to a workload's baseline).
    pub new_destination_alerts: u64,
    /// `spike` alerts written (a burst of connect failures and HTTP errors).
    pub spike_alerts: u64,
    /// Workloads in the learned baseline.
    pub baseline_workloads: u64,
    /// Destinations in the learned baseline, over every workload.
    pub baseline_destinations: u64,
    /// Destinations and workloads the baseline's bounds evicted.
    pub baseline_evicted: u64,
    /// Unusable state files (corrupt, truncated, another version) moved aside at start.
    pub baseline_state_set_aside: u64,
    /// State files written.
    pub baseline_state_writes: u64,
    /// State file writes that failed (the previous file stays).
    pub baseline_state_write_errors: u64,
    /// Spike windows forgotten because their table was full.
    pub spike_keys_evicted: u64,
}
