//! The judgement stage: what the policy says about each connection, and the alerts.
//!
//! - The verdict: `blocked` when the kernel refused the connection, else the userspace
//!   matcher's `approved` (naming the rule) or `unapproved`.
//! - Alerts for unapproved and blocked destinations, folded per window ([`Alerts`]), and
//!   alerts for a process whose connects to one destination keep failing ([`Failures`]).
//! - What block mode needs in the kernel beyond the policy itself: the scope bits of
//!   identified containers and of new cgroups, and the answer addresses the kernel could not
//!   approve itself. They are collected while a drain runs and installed after it
//!   ([`Judgement::install_pending`]).
//! - Reloading the policy (SIGHUP, `--watch`): an invalid one is refused and the old one stays.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use agent_common::DnsAllowKey;

use super::emit::{Emitter, Line};
use crate::{
    alerts::{Alert, Alerts},
    clock::duration_ns,
    config::{ConnectionConfig, PolicyConfig},
    conn::{ConnEnd, Failures, Outcome},
    container::{ContainerInfo, Lookup},
    dns::state::{Answer, DnsState},
    kernel::PolicyKernel,
    policy::{
        active::{load_policy, ActivePolicy},
        compile,
        matcher::{Connection, Verdict},
        Mode,
    },
    record::{ConnectionRecord, PolicyOutcome, PolicyVerdict},
};

/// Most (process, destination) keys remembered for alert folding and for failure counts.
const ALERT_KEYS_MAX: usize = 65536;

/// The judgement stage's numbers for the metric line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JudgementStats {
    /// Policies loaded after start-up.
    pub policy_reloads: u64,
    /// New policies refused (the old one stayed in force).
    pub policy_reload_failures: u64,
    /// Unapproved occurrences folded into an alert's repeat count.
    pub alerts_suppressed: u64,
    /// Block mode: connections the kernel refused that the policy approves through a name
    /// their address was learned for: the kernel's learned-address map had evicted it.
    pub learned_addresses_evicted: u64,
}

pub struct Judgement {
    policy: ActivePolicy,
    /// `--policy`, read again on reload; `None`: the built-in policy.
    policy_path: Option<PathBuf>,
    alerts: Alerts,
    alert_window_secs: u64,
    failures: Failures,
    /// Block mode: cgroup id → scope bits earned by identified containers, to install.
    container_scopes: HashMap<u64, u64>,
    /// Block mode: approvals of answer addresses the kernel did not write itself (past its
    /// bound of records per answer, or in the cut tail of a long message), to install.
    dns_learned: Vec<(DnsAllowKey, u64)>,
    reloads: u64,
    reload_failures: u64,
    learned_evicted: u64,
    /// A learned baseline is in use: the built-in policy's unapproved verdicts do not alert
    /// (new destinations do, in the baseline stage).
    baseline_in_use: bool,
}

impl Judgement {
    /// `policy`: the policy in force at start; `connections`: the failure alerts' settings.
    pub fn new(
        policy: ActivePolicy,
        config: &PolicyConfig,
        connections: &ConnectionConfig,
    ) -> Self {
        let PolicyConfig {
            file,
            watch: _,
            alert_window,
        } = config;
        Self {
            policy,
            policy_path: file.clone(),
            alerts: Alerts::new(duration_ns(*alert_window), ALERT_KEYS_MAX),
            alert_window_secs: alert_window.as_secs(),
            failures: Failures::new(
                connections.failure_alert_count,
                duration_ns(connections.failure_alert_window),
                ALERT_KEYS_MAX,
            ),
            container_scopes: HashMap::new(),
            dns_learned: Vec::new(),
            reloads: 0,
            reload_failures: 0,
            learned_evicted: 0,
            baseline_in_use: false,
        }
    }

    /// A learned baseline is in use (`--baseline-learn`).
    pub fn set_baseline_in_use(&mut self, in_use: bool) {
        self.baseline_in_use = in_use;
    }

    /// The built-in policy with a baseline in use: its verdicts stand, but do not alert.
    fn quiet(&self) -> bool {
        self.baseline_in_use && self.policy_path.is_none()
    }

    pub fn mode(&self) -> Mode {
        self.policy.policy.mode
    }

    /// The policy's `resolvers:`, when it has the key.
    pub fn resolvers(&self) -> Option<&[crate::policy::Prefix]> {
        self.policy.policy.resolvers.as_deref()
    }

    pub fn stats(&self) -> JudgementStats {
        JudgementStats {
            policy_reloads: self.reloads,
            policy_reload_failures: self.reload_failures,
            alerts_suppressed: self.alerts.suppressed_total,
            learned_addresses_evicted: self.learned_evicted,
        }
    }

    /// Judges a connection whose identity is complete: its verdict, and the alert to write
    /// (after its own line) if it is not approved and not folded into an earlier alert.
    pub fn judge(&mut self, record: &mut ConnectionRecord) -> Option<Alert> {
        if let Lookup::Known(info) = &record.container {
            let info = Arc::clone(info);
            self.learn_workload_scope(record.cgroup.id, &info);
        }
        self.verdict(record);
        if record.blocked() && self.approved_only_by_name(record) {
            self.learned_evicted += 1;
        }
        // A connection whose first payload the kernel holds is judged by its name, when that
        // arrives (`check_held`): no alert before.
        if record.gated() || self.quiet() {
            return None;
        }
        record
            .policy
            .as_ref()
            .is_some_and(|p| p.verdict != PolicyVerdict::Approved)
            .then(|| self.alerts.occurrence(record))
            .flatten()
    }

    /// The alert line for an [`Alert`].
    pub fn alert_line<'a>(&self, alert: &'a Alert) -> Line<'a> {
        Line::Alert {
            record: &alert.record,
            repeats: alert.repeats,
            window_secs: self.alert_window_secs,
        }
    }

    /// The policy's verdict: the kernel's refusal, else the userspace matcher's (which also
    /// names the approving rule).
    pub fn verdict(&self, record: &mut ConnectionRecord) {
        let mode = self.policy.policy.mode;
        let outcome = if record.blocked() {
            PolicyOutcome {
                verdict: PolicyVerdict::Blocked,
                rule: None,
                mode,
            }
        } else {
            match self.policy.matcher.evaluate(&connection(record)) {
                Verdict::Approved { rule } => PolicyOutcome {
                    verdict: PolicyVerdict::Approved,
                    rule: Some(rule.to_owned()),
                    mode,
                },
                Verdict::Unapproved => PolicyOutcome {
                    verdict: PolicyVerdict::Unapproved,
                    rule: None,
                    mode,
                },
            }
        };
        record.policy = Some(outcome);
    }

    /// A connection the kernel refused that the policy approves by a DNS name its address was
    /// learned for (userspace believed the same answers the kernel did), and not by its address
    /// alone: the kernel had forgotten the learned address (its LRU map evicted it). It stays
    /// refused: an eviction never lets anything through, it is only counted.
    fn approved_only_by_name(&self, record: &ConnectionRecord) -> bool {
        let conn = connection(record);
        if conn.dns_names.is_empty() {
            return false;
        }
        let by_address = Connection {
            dns_names: &[],
            ..conn
        };
        self.policy.matcher.evaluate(&conn).is_approved()
            && !self.policy.matcher.evaluate(&by_address).is_approved()
    }

    /// The connection's first bytes named it (TLS server name, HTTP Host): a domain rule also
    /// matches that name, the way block mode would judge it. A connection approved through a
    /// DNS name whose first bytes name an unapproved one becomes unapproved (and alerted). The
    /// name never approves on its own (the watched process writes it), except on a
    /// `name_gate` port, where block mode lets it decide. An address rule's approval stands.
    /// Returns the alert to write, if any.
    pub fn judge_name(&mut self, record: &mut ConnectionRecord) -> Option<Alert> {
        let (name, _) = record.first_bytes.as_ref().and_then(|f| f.name())?;
        let outcome = record.policy.clone()?;
        if outcome.verdict == PolicyVerdict::Blocked {
            return None;
        }
        let conn = connection(record);
        let by_address = Connection {
            dns_names: &[],
            ..conn
        };
        if self.policy.matcher.evaluate(&by_address).is_approved() {
            return None;
        }
        let through_dns = outcome.verdict == PolicyVerdict::Approved;
        let gate = record.transport == crate::record::Transport::Tcp
            && self.policy.policy.name_gate.covers(record.port);
        if !through_dns && !gate {
            return None;
        }
        let mode = outcome.mode;
        let next = match self.policy.matcher.approve_name(&conn, name) {
            Some(rule) => PolicyOutcome {
                verdict: PolicyVerdict::Approved,
                rule: Some(rule.to_owned()),
                mode,
            },
            None => PolicyOutcome {
                verdict: PolicyVerdict::Unapproved,
                rule: None,
                mode,
            },
        };
        let newly_unapproved = through_dns && next.verdict == PolicyVerdict::Unapproved;
        record.policy = Some(next);
        if newly_unapproved {
            return self.alerts.occurrence(record);
        }
        None
    }

    /// Block mode: a held first payload's name check. `true`: let it through. A connection
    /// approved only through a learned address passes when its first bytes name an approved
    /// name or carry no name at all ([`crate::record::FirstBytesSeen::carries_no_name`]: not
    /// an unreadable ClientHello, nor a request whose Host may still follow); one on a
    /// `name_gate` port passes only when they name an approved one. A refused one is marked
    /// blocked, and its alert returned.
    pub fn check_held(
        &mut self,
        record: &mut ConnectionRecord,
        whole: bool,
    ) -> (bool, Option<Alert>) {
        let name = record
            .first_bytes
            .as_ref()
            .and_then(|f| f.name())
            .map(|(name, _)| name.to_owned());
        let learned = record.kernel_verdict == agent_common::VERDICT_LEARNED;
        let approved = match &name {
            Some(name) => self
                .policy
                .matcher
                .approve_name(&connection(record), name)
                .map(str::to_owned),
            None => None,
        };
        let nameless = name.is_none()
            && record
                .first_bytes
                .as_ref()
                .is_some_and(|f| f.carries_no_name());
        let pass = whole && (approved.is_some() || (learned && nameless));
        let mode = self.policy.policy.mode;
        if pass {
            if let Some(rule) = approved {
                record.policy = Some(PolicyOutcome {
                    verdict: PolicyVerdict::Approved,
                    rule: Some(rule),
                    mode,
                });
            }
            return (true, None);
        }
        record.policy = Some(PolicyOutcome {
            verdict: PolicyVerdict::Blocked,
            rule: None,
            mode,
        });
        (false, self.alerts.occurrence(record))
    }

    /// A TCP connection ended: a failure alert when its process keeps failing to reach the
    /// destination; a success resets the count.
    pub fn connection_ended(
        &mut self,
        record: &ConnectionRecord,
        end: &ConnEnd,
        out: &mut Emitter,
    ) {
        match end.outcome {
            Outcome::Failure => {
                if let Some(alert) = self.failures.record(record, end.error, end.end_ns) {
                    out.emit(Line::FailureAlert {
                        record,
                        count: alert.count,
                        window_secs: self.failures.window_secs(),
                        error: alert.error,
                    });
                }
            }
            Outcome::Success => self.failures.succeeded(record),
            Outcome::Unknown => {}
        }
    }

    /// Block mode: an identified container's cgroup earns the scope bits of the `containers`,
    /// `namespaces` and `pods` selectors it matches (installed after the drain).
    pub fn learn_workload_scope(&mut self, cgroup_id: u64, info: &ContainerInfo) {
        if !self.policy.compiled.has_scopes() {
            return;
        }
        let workload = compile::Workload {
            container_name: info.name.as_deref(),
            container_image: info.image.as_deref(),
            namespace: info.pod.as_ref().map(|p| p.namespace.as_str()),
            pod: info.pod.as_ref().map(|p| p.name.as_str()),
        };
        let bits = compile::workload_bits(&self.policy.compiled.scopes, &workload);
        if bits != 0 {
            self.container_scopes.insert(cgroup_id, bits);
        }
    }

    /// A DNS answer was learned. The kernel approves an approved answer's addresses before
    /// delivery, within its parsing bounds (`DNS_ANSWERS_MAX` records, compressed owner names,
    /// the first 1232 bytes); what lies past them is approved here, right after the drain: not
    /// race-free for those addresses (docs/dns.md), but never left out.
    pub fn learn_answer(&mut self, answer: &Answer, dns: &DnsState) {
        let compiled = &self.policy.compiled;
        if compiled.block && !compiled.domain_rules.is_empty() {
            self.dns_learned.extend(dns.learned_for(
                compiled,
                answer.netns,
                &answer.learned.resolved,
                answer.ktime_ns,
            ));
        }
    }

    /// Installs what the drain collected: container scope bits and answer approvals.
    pub fn install_pending(&mut self, maps: &mut impl PolicyKernel) {
        if !self.container_scopes.is_empty() {
            let scopes = std::mem::take(&mut self.container_scopes);
            if let Err(err) = maps.add_scopes(&scopes) {
                log::error!("updating container-scoped rules: {err}");
            }
        }
        if !self.dns_learned.is_empty() {
            let learned = std::mem::take(&mut self.dns_learned);
            if let Err(err) = maps.learn(&learned) {
                log::error!("adding answer addresses to the kernel: {err}");
            }
        }
    }

    /// Alert windows that ended: their summary alerts.
    pub fn tick_alerts(&mut self, now_ns: u64, out: &mut Emitter) {
        for alert in self.alerts.tick(now_ns) {
            out.emit(self.alert_line(&alert));
        }
    }

    /// Scoped rules: cgroups created since the policy was installed get their bits.
    pub fn refresh_scopes(&self, maps: &mut impl PolicyKernel, cgroup_mount: &std::path::Path) {
        if !self.policy.compiled.has_scopes() {
            return;
        }
        let ids = compile::scope_ids(&self.policy.compiled, cgroup_mount);
        match maps.add_scopes(&ids) {
            Ok(0) => {}
            Ok(n) => log::debug!("{n} new cgroups matched scoped rules"),
            Err(err) => log::error!("updating scoped rules: {err}"),
        }
    }

    /// Loads the policy file again; an invalid one is refused and the old one stays.
    pub fn reload(
        &mut self,
        maps: &mut impl PolicyKernel,
        why: &str,
        cgroup_mount: &std::path::Path,
        dns: &DnsState,
        now_ns: u64,
    ) {
        let Some(path) = self.policy_path.clone() else {
            log::info!("{why}: no --policy file, the built-in policy stays");
            return;
        };
        let (policy, compiled) = match load_policy(Some(&path)) {
            Ok(loaded) => loaded,
            Err(errors) => {
                self.reload_failures += 1;
                log::error!(
                    "{why}: new policy refused, {} stays in force:\n{errors}",
                    self.policy.summary()
                );
                return;
            }
        };
        let ids = compile::scope_ids(&compiled, cgroup_mount);
        let learned = dns.learned(&compiled, now_ns);
        if let Err(err) = maps.install(&compiled, &ids, &learned) {
            self.reload_failures += 1;
            log::error!("{why}: {err}; {} stays in force", self.policy.summary());
            return;
        }
        self.policy = ActivePolicy::new(policy, compiled);
        self.reloads += 1;
        log::info!("{why}: policy {} in force", self.policy.summary());
    }
}

/// What the matcher looks at.
fn connection(record: &ConnectionRecord) -> Connection<'_> {
    let container = match &record.container {
        Lookup::Known(info) => Some(info.as_ref()),
        Lookup::Pending(_) | Lookup::Unknown(_) | Lookup::NotAContainer => None,
    };
    let pod = container.and_then(|c| c.pod.as_ref());
    Connection {
        ip: record.ip,
        port: record.port,
        protocol: record.transport.protocol(),
        executable: record.process.executable.as_deref(),
        systemd_unit: record.cgroup.systemd_unit.as_deref(),
        cgroup_path: record.cgroup.path.as_deref(),
        dns_names: record.dns.as_ref().map_or(&[], |d| d.questions.as_slice()),
        container_name: container.and_then(|c| c.name.as_deref()),
        container_image: container.and_then(|c| c.image.as_deref()),
        pod_namespace: pod.map(|p| p.namespace.as_str()),
        pod_name: pod.map(|p| p.name.as_str()),
    }
}
