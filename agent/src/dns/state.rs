//! The agent's DNS state: the cache fed by the kernel's DNS records, who asked, and what an
//! answer approves in the kernel (block mode).

use std::{collections::HashMap, net::IpAddr};

use agent_common::{DnsAllowKey, DnsEvent, DNS_FLAG_CUT, DNS_FLAG_UNSOLICITED, DNS_FLAG_UNTRUSTED};

use super::{observe, CacheConfig, DnsCache, DnsStats, Learned, Name, Observed};
use crate::{
    policy::compile::CompiledPolicy,
    record::{destination_ip, kernel_address, ConnectionRecord, DnsNames},
};

/// One DNS answer the kernel delivered, parsed and learned from.
#[derive(Debug, Clone)]
pub struct Answer {
    pub learned: Learned,
    /// The process that owns the receiving socket (it asked), when egret saw it ask.
    pub asker: Option<u32>,
    /// The resolver that answered, and its port.
    pub resolver: IpAddr,
    pub port: u16,
    /// IANA protocol number of the transport (6 TCP, 17 UDP).
    pub transport: u8,
    pub netns: u64,
    /// Cookie of the receiving socket.
    pub cookie: u64,
    /// The kernel copied only the beginning of the message.
    pub cut: bool,
    /// Block mode: the domain rules (bit per rule) whose names the kernel approved it for.
    pub approved: u32,
    pub ktime_ns: u64,
    /// Whether the kernel believed it; an answer it did not believe names nothing.
    pub trust: Trust,
}

/// What the kernel's checks said of an answer (`agent-ebpf/src/dns.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trust {
    /// Its source is not a trusted resolver.
    pub untrusted_resolver: bool,
    /// No query of the receiving socket to that resolver matches it.
    pub unsolicited: bool,
}

impl Trust {
    pub fn from_flags(flags: u8) -> Self {
        Self {
            untrusted_resolver: flags & DNS_FLAG_UNTRUSTED != 0,
            unsolicited: flags & DNS_FLAG_UNSOLICITED != 0,
        }
    }

    pub fn believed(self) -> bool {
        !self.untrusted_resolver && !self.unsolicited
    }

    /// `egret.dns.untrusted`: why it was not believed.
    pub fn reasons(self) -> &'static [&'static str] {
        match (self.untrusted_resolver, self.unsolicited) {
            (false, false) => &[],
            (true, false) => &["resolver"],
            (false, true) => &["unsolicited"],
            (true, true) => &["resolver", "unsolicited"],
        }
    }
}

/// Names learned from observed DNS answers.
pub struct DnsState {
    pub cache: DnsCache,
    pub stats: DnsStats,
    /// Write a `dns` line per answer.
    pub events: bool,
    pub port: u16,
    /// Sockets that sent to the resolver port: cookie → pid, to name who asked.
    pub askers: HashMap<u64, u32>,
}

impl DnsState {
    const ASKERS_MAX: usize = 65536;

    pub fn new(config: CacheConfig, events: bool, port: u16) -> Self {
        Self {
            cache: DnsCache::new(config),
            stats: DnsStats::default(),
            events,
            port,
            askers: HashMap::new(),
        }
    }

    pub fn remember_asker(&mut self, cookie: u64, pid: u32) {
        if self.askers.len() >= Self::ASKERS_MAX && !self.askers.contains_key(&cookie) {
            self.askers.clear();
        }
        self.askers.insert(cookie, pid);
    }

    /// A DNS record from the kernel: learns its answer's mappings. `None` for a message that
    /// does not parse (counted in the stats, logged at debug level).
    pub fn on_event(&mut self, ev: &DnsEvent) -> Option<Answer> {
        let DnsEvent {
            header,
            cookie,
            netns,
            family,
            sport,
            transport,
            flags,
            _pad: _,
            msg_len: _,
            captured,
            approved,
            _pad2: _,
            saddr,
            payload,
        } = ev;
        let asker = self.askers.get(cookie).copied();
        let cut = flags & DNS_FLAG_CUT != 0;
        let trust = Trust::from_flags(*flags);
        if !trust.believed() {
            self.stats.untrusted = self.stats.untrusted.saturating_add(1);
        }
        let observed = Observed {
            netns: *netns,
            pid: asker,
            payload: payload.get(..*captured as usize).unwrap_or_default(),
            cut,
            now_ns: header.ktime_ns,
            believed: trust.believed(),
        };
        let learned = match observe(&mut self.cache, &mut self.stats, &observed) {
            Ok(learned) => learned,
            Err(err) => {
                log::debug!("skipping a malformed DNS response: {err}");
                return None;
            }
        };
        // The programs hand over IPv4 or IPv6; anything else is read as IPv6.
        let resolver = destination_ip(*family, saddr).unwrap_or(IpAddr::from(*saddr));
        Some(Answer {
            learned,
            asker,
            resolver,
            port: *sport,
            transport: *transport,
            netns: *netns,
            cookie: *cookie,
            cut,
            approved: *approved,
            ktime_ns: header.ktime_ns,
            trust,
        })
    }

    /// What the cache knows about a connection's destination.
    pub fn names_for(&self, record: &ConnectionRecord) -> Option<DnsNames> {
        let lookup = self.cache.lookup(
            record.netns,
            record.ip,
            Some(record.process.pid),
            record.ktime_ns,
        );
        if lookup.names.is_empty() {
            return None;
        }
        let text = |names: Vec<Name>| names.iter().map(ToString::to_string).collect();
        Some(DnsNames {
            domain: lookup.domain.map(|d| d.to_string()),
            names: text(lookup.names),
            questions: text(lookup.questions),
        })
    }

    /// The kernel allow-map entries for the addresses of one answer (a block-mode policy's
    /// domain rules approving its question), valid until the clamped TTL.
    pub fn learned_for(
        &self,
        compiled: &CompiledPolicy,
        netns: u64,
        resolved: &[super::Resolved],
        now_ns: u64,
    ) -> Vec<(DnsAllowKey, u64)> {
        let mut out = Vec::new();
        for r in resolved {
            let mask = compiled.approving_domain_rules(r.name.as_str());
            let expires_ns = now_ns.saturating_add(self.cache.ttl_ns(r.ttl));
            push_keys(&mut out, netns, r.address, mask, expires_ns);
        }
        out
    }

    /// The kernel allow-map entries a (new) block-mode policy's domain rules give to answers
    /// already seen: the applications hold those addresses in their own caches.
    pub fn learned(&self, compiled: &CompiledPolicy, now_ns: u64) -> Vec<(DnsAllowKey, u64)> {
        if compiled.domain_rules.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (netns, address, name, expires_ns) in self.cache.live_questions(now_ns) {
            let mask = compiled.approving_domain_rules(name.as_str());
            push_keys(&mut out, netns, address, mask, expires_ns);
        }
        out
    }
}

/// One allow-map entry per domain rule in `mask`.
fn push_keys(
    out: &mut Vec<(DnsAllowKey, u64)>,
    netns: u64,
    address: IpAddr,
    mask: u32,
    expires_ns: u64,
) {
    let (family, addr) = kernel_address(address);
    for rule in 0..u8::try_from(agent_common::DNS_RULES_MAX).unwrap_or(u8::MAX) {
        if mask & (1 << rule) != 0 {
            out.push((
                DnsAllowKey {
                    netns,
                    family,
                    rule,
                    _pad: [0; 5],
                    addr,
                },
                expires_ns,
            ));
        }
    }
}
