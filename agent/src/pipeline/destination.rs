//! The destination stage: what a connection's destination is called. Today the names come
//! from the DNS answers the kernel hands over ([`crate::dns`]): each answer teaches the cache
//! which names resolve to which addresses, per network namespace and asking process, and each
//! connection gets the names known for its address (`destination.domain`, `egret.dns.names`).

use agent_common::DnsEvent;

use crate::{
    config::DnsConfig,
    dns::{
        resolvers::{ResolverSource, TrustedResolvers},
        state::{Answer, DnsState},
        CacheConfig, DnsStats,
    },
    policy::Prefix,
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
    /// Whose answers are believed (the kernel holds the same set).
    resolvers: TrustedResolvers,
}

impl Destination {
    /// `resolvers`: the trusted resolvers as installed at start.
    pub fn new(config: &DnsConfig, resolvers: TrustedResolvers) -> Self {
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
            resolvers,
        }
    }

    /// The trusted resolvers now, when they changed (a `resolv.conf` was edited, a container
    /// came): for the kernel. Problems reading the files are logged here.
    pub fn resolvers_changed(&mut self) -> Option<Vec<Prefix>> {
        let changed = self.resolvers.refresh();
        for err in self.resolvers.take_errors() {
            log::warn!("trusted resolvers: {err}");
        }
        if changed.is_some() {
            log::info!("{}", self.resolvers.describe());
        }
        changed
    }

    /// A reloaded policy's `resolvers:` (or, without the key, the `resolv.conf` files).
    pub fn set_resolver_source(&mut self, resolvers: Option<&[Prefix]>) {
        self.resolvers.set_source(ResolverSource::of(resolvers));
    }

    /// Whether container `id`'s `resolv.conf` is read through process `pid` already.
    pub fn watches_container(&self, id: &str, pid: u32) -> bool {
        self.resolvers.watches(id, pid)
    }

    /// An identified container: its own `resolv.conf` names resolvers to trust too (unless
    /// the policy lists them).
    pub fn add_container(&mut self, id: &str, pid: u32) {
        self.resolvers.add_container(id.to_owned(), pid);
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
