//! The agent's DNS state: the cache fed by the kernel's DNS events, who asked, and the `dns`
//! line builder.

use std::collections::HashMap;

use agent_common::DnsAllowKey;

use super::{CacheConfig, DnsCache, DnsStats, Message, Name, RData, Record};
use crate::{
    clock::WallClock,
    ecs::{
        dns_class_name, dns_rcode_name, dns_type_name, AskerFields, CookieFields, DnsAnswerFields,
        DnsDoc, DnsFields, DnsNetworkFields, DnsQuestionFields, EgretDnsFields, EgretDnsLine,
        Endpoint, EventFields, HostFields,
    },
    policy::compile::CompiledPolicy,
    process::ProcessInfo,
    record::{ConnectionRecord, DnsNames},
};

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
    address: std::net::IpAddr,
    mask: u32,
    expires_ns: u64,
) {
    let (family, addr) = match address.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&v4.octets());
            (agent_common::AF_INET, addr)
        }
        std::net::IpAddr::V6(v6) => (agent_common::AF_INET6, v6.octets()),
    };
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

/// Everything a `dns` line is made of.
pub struct DnsLine<'a> {
    pub message: &'a Message,
    pub resolved_ips: Vec<String>,
    pub resolver: std::net::IpAddr,
    pub port: u16,
    pub transport: u8,
    pub netns: u64,
    pub cookie: u64,
    pub cut: bool,
    pub approved: u32,
    pub asker: Option<&'a ProcessInfo>,
    pub ktime_ns: u64,
    pub sequence: u64,
    pub clock: &'a WallClock,
    pub host_name: &'a str,
}

/// The `dns` line for one answer.
pub fn dns_doc(line: DnsLine<'_>) -> DnsDoc<'_> {
    let DnsLine {
        message,
        resolved_ips,
        resolver,
        port,
        transport,
        netns,
        cookie,
        cut,
        approved,
        asker,
        ktime_ns,
        sequence,
        clock,
        host_name,
    } = line;
    let Message {
        id,
        response: _,
        opcode: _,
        rcode,
        truncated,
        questions,
        answers,
    } = message;
    let answer = |record: &Record| {
        let Record {
            name,
            rtype,
            class: _,
            ttl,
            data,
        } = record;
        DnsAnswerFields {
            name: name.to_string(),
            rtype: dns_type_name(*rtype),
            ttl: *ttl,
            data: match data {
                RData::A(ip) => ip.to_string(),
                RData::Aaaa(ip) => ip.to_string(),
                RData::Cname(target) => target.to_string(),
                RData::Other { rtype: _, len } => format!("({len} bytes)"),
            },
        }
    };
    let mut header_flags = Vec::new();
    if *truncated {
        header_flags.push("TC");
    }
    DnsDoc {
        timestamp: clock.rfc3339(ktime_ns),
        event: EventFields::dns_answer(sequence),
        dns: DnsFields {
            id: *id,
            kind: "answer",
            response_code: dns_rcode_name(*rcode),
            question: questions.first().map(|q| DnsQuestionFields {
                name: q.name.as_str(),
                qtype: dns_type_name(q.qtype),
                class: dns_class_name(q.qclass),
            }),
            answers: answers.iter().map(answer).collect(),
            resolved_ip: resolved_ips,
            header_flags,
        },
        source: Endpoint {
            ip: resolver.to_canonical().to_string(),
            port,
            domain: None,
            bytes: None,
            packets: None,
        },
        process: asker.map(|p| AskerFields {
            pid: p.pid,
            name: &p.name,
            executable: p.executable.as_deref(),
            args: &p.args,
        }),
        network: DnsNetworkFields {
            transport: if transport == 6 { "tcp" } else { "udp" },
            network_type: if resolver.to_canonical().is_ipv4() {
                "ipv4"
            } else {
                "ipv6"
            },
            protocol: "dns",
            direction: "ingress",
        },
        host: HostFields { name: host_name },
        egret: EgretDnsLine {
            socket: CookieFields { cookie },
            dns: EgretDnsFields {
                netns,
                cut,
                approved_rules: (0..32).filter(|i| approved & (1 << i) != 0).collect(),
            },
            cgroup: None,
        },
    }
}
