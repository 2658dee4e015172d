//! The destination stage: what a connection's destination is called. Today the names come
//! from the DNS answers the kernel hands over ([`crate::dns`]): each answer teaches the cache
//! which names resolve to which addresses, per network namespace and asking process, and each
//! connection gets the names known for its address (`destination.domain`, `egret.dns.names`).

use agent_common::DnsEvent;

use crate::{
    config::DnsConfig,
    dns::{
        state::{Answer, DnsState},
        CacheConfig, DnsStats,
    },
    record::ConnectionRecord,
};

/// The destination stage's numbers for the metric line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestinationStats {
    pub dns: DnsStats,
    pub cache_size: usize,
    pub cache_evicted: u64,
}

pub struct Destination {
    dns: DnsState,
}

impl Destination {
    pub fn new(config: &DnsConfig) -> Self {
        let DnsConfig {
            port,
            ttl_floor,
            ttl_ceiling,
            events,
        } = config;
        let cache = CacheConfig {
            ttl_floor: *ttl_floor,
            ttl_ceiling: *ttl_ceiling,
            ..CacheConfig::default()
        };
        Self {
            dns: DnsState::new(cache, *events, *port),
        }
    }

    /// The DNS state (for the judgement stage: what answers approve in block mode).
    pub fn dns(&self) -> &DnsState {
        &self.dns
    }

    /// Whether each answer also gets a `dns` line.
    pub fn writes_answers(&self) -> bool {
        self.dns.events
    }

    pub fn stats(&self) -> DestinationStats {
        DestinationStats {
            dns: self.dns.stats,
            cache_size: self.dns.cache.len(),
            cache_evicted: self.dns.cache.stats.evicted,
        }
    }

    /// A connection or datagram to the resolver port: remember which process owns the socket,
    /// so the answer that comes back names who asked.
    pub fn note_query(&mut self, record: &ConnectionRecord) {
        if record.port == self.dns.port {
            self.dns.remember_asker(record.cookie, record.process.pid);
        }
    }

    /// Names the record's destination from what observed DNS says.
    pub fn name(&self, record: &mut ConnectionRecord) {
        record.dns = self.dns.names_for(record);
    }

    /// A DNS record from the kernel: learns from it. `None` when it does not parse.
    pub fn on_dns(&mut self, ev: &DnsEvent) -> Option<Answer> {
        self.dns.on_event(ev)
    }

    /// Forgets answers past their (clamped) TTL.
    pub fn expire(&mut self, now_ns: u64) {
        self.dns.cache.expire(now_ns);
    }
}
