//! Address → names, learned from observed DNS answers, honouring their TTL.
//!
//! Entries are kept per (network namespace, address): a container's resolver may answer
//! differently from the host's, so namespaces never see each other's entries. The namespace is
//! whatever `u64` identifies it (the kernel's netns cookie of the receiving socket), the same
//! for inserts and lookups. Addresses are
//! stored canonical (an IPv4-mapped IPv6 address is the IPv4 address), like `destination.ip`.
//!
//! For each address the cache keeps every name that resolved to it (one CDN address serves
//! many names): the names asked (questions) and the names of the `CNAME` chains that led to
//! it, each with its expiry and, for asked names, the pids that asked (the
//! [`MAX_ASKERS`] most recent). Re-inserting a name extends its expiry (never shortens it).
//!
//! # Bounds
//!
//! - [`CacheConfig::max_entries`] bounds the number of (namespace, address, name) entries
//!   ([`DnsCache::len`]). When an insert finds the cache full, expired entries are dropped; if it
//!   is still full, the entries that expire soonest are evicted, one sixteenth of the cache at
//!   once (at least one), so a flood of answers costs amortised constant time.
//! - An address keeps at most [`MAX_NAMES_PER_ADDRESS`] names: a new name replaces the one that
//!   expires soonest (an asked name is kept over a chain-only name that expires at the same
//!   time), or is dropped if it would itself expire sooner than all of them.
//!
//! Both kinds of eviction count in [`CacheStats::evicted`]. Times are `CLOCK_BOOTTIME`
//! nanoseconds, as the kernel stamps events; an entry is live while `now < expires`.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use super::wire::Name;

/// Most names kept for one address.
pub const MAX_NAMES_PER_ADDRESS: usize = 32;
/// Most pids remembered as having asked for one (address, name).
pub const MAX_ASKERS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Shortest time an answer is kept, whatever its TTL (answers with TTL 0 are used at once).
    pub ttl_floor: Duration,
    /// Longest time an answer is kept, whatever its TTL.
    pub ttl_ceiling: Duration,
    /// Most (namespace, address, name) entries.
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl_floor: Duration::from_secs(5),
            ttl_ceiling: Duration::from_secs(3600),
            max_entries: 65536,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Entries created (a refresh of an existing entry does not count).
    pub inserted: u64,
    /// Entries dropped, or not stored, because of a bound, before they expired.
    pub evicted: u64,
    /// Entries dropped because they expired.
    pub expired: u64,
}

/// What is known about one address, for one connection.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The name the connecting process asked for (its most recent question that resolved to
    /// the address); else, if exactly one live name was asked for the address (by anyone), that
    /// name; else `None`.
    pub domain: Option<Name>,
    /// Every live name of the address (asked names and `CNAME` chain names), sorted.
    pub names: Vec<Name>,
    /// The live names that were asked as questions, sorted: what policy domain entries are
    /// matched against (the kernel approves by the question too).
    pub questions: Vec<Name>,
}

#[derive(Debug, Clone, Copy)]
struct Asker {
    pid: u32,
    at_ns: u64,
}

#[derive(Debug)]
struct Known {
    name: Name,
    expires_ns: u64,
    /// Asked as a question (not only a name along a `CNAME` chain).
    question: bool,
    askers: Vec<Asker>,
}

type Key = (u64, IpAddr);

#[derive(Debug)]
pub struct DnsCache {
    config: CacheConfig,
    entries: HashMap<Key, Vec<Known>>,
    len: usize,
    pub stats: CacheStats,
}

impl Default for DnsCache {
    fn default() -> Self {
        Self::new(CacheConfig::default())
    }
}

impl DnsCache {
    pub fn new(config: CacheConfig) -> Self {
        Self {
            config,
            entries: HashMap::new(),
            len: 0,
            stats: CacheStats::default(),
        }
    }

    /// Records that `asker` (a pid) in network namespace `netns` learned `address` for the
    /// question `name` via `chain` (the question, `CNAME` targets, the address record's owner;
    /// see [`super::Resolved`]), valid for `ttl` seconds (clamped to the configured floor and
    /// ceiling) from `now_ns`. Every name of the chain is recorded for the address; only `name`
    /// is recorded as asked, with its asker.
    #[expect(
        clippy::too_many_arguments,
        reason = "the signature the agent's DNS pipeline calls; each argument is a distinct fact"
    )]
    pub fn insert(
        &mut self,
        netns: u64,
        address: IpAddr,
        name: &Name,
        chain: &[Name],
        ttl: u32,
        asker: Option<u32>,
        now_ns: u64,
    ) {
        let key = (netns, address.to_canonical());
        let expires_ns = now_ns.saturating_add(self.ttl_ns(ttl));
        self.upsert(key, name, expires_ns, true, asker, now_ns);
        for hop in chain.iter().filter(|hop| *hop != name) {
            self.upsert(key, hop, expires_ns, false, None, now_ns);
        }
    }

    /// What is known about `address` for a connection by `pid` in `netns` at `now_ns` (see
    /// [`Lookup`]). Nothing from other namespaces.
    pub fn lookup(&self, netns: u64, address: IpAddr, pid: Option<u32>, now_ns: u64) -> Lookup {
        let Some(list) = self.entries.get(&(netns, address.to_canonical())) else {
            return Lookup::default();
        };
        let live = || list.iter().filter(move |known| known.expires_ns > now_ns);
        let asked_by_pid = pid.and_then(|pid| {
            live()
                .filter_map(|known| {
                    known
                        .askers
                        .iter()
                        .find(|asker| asker.pid == pid)
                        .map(|asker| (asker.at_ns, &known.name))
                })
                .max_by_key(|&(at_ns, _)| at_ns)
                .map(|(_, name)| name.clone())
        });
        let domain = asked_by_pid.or_else(|| {
            let mut asked = live().filter(|known| known.question);
            match (asked.next(), asked.next()) {
                (Some(only), None) => Some(only.name.clone()),
                _ => None,
            }
        });
        let mut names: Vec<Name> = live().map(|known| known.name.clone()).collect();
        names.sort();
        names.dedup();
        let mut questions: Vec<Name> = live()
            .filter(|known| known.question)
            .map(|known| known.name.clone())
            .collect();
        questions.sort();
        questions.dedup();
        Lookup {
            domain,
            names,
            questions,
        }
    }

    /// Every live (namespace, address, name, expiry in ns) — to re-populate kernel allow maps
    /// after a policy reload: filter it with the policy's name predicate.
    pub fn live_pairs(&self, now_ns: u64) -> impl Iterator<Item = (u64, IpAddr, &Name, u64)> + '_ {
        self.entries
            .iter()
            .flat_map(move |(&(netns, address), list)| {
                list.iter()
                    .filter(move |known| known.expires_ns > now_ns)
                    .map(move |known| (netns, address, &known.name, known.expires_ns))
            })
    }

    /// Every live (namespace, address, question name, expiry in ns): the pairs a block-mode
    /// policy's domain rules approve in the kernel.
    pub fn live_questions(
        &self,
        now_ns: u64,
    ) -> impl Iterator<Item = (u64, IpAddr, &Name, u64)> + '_ {
        self.entries
            .iter()
            .flat_map(move |(&(netns, address), list)| {
                list.iter()
                    .filter(move |known| known.question && known.expires_ns > now_ns)
                    .map(move |known| (netns, address, &known.name, known.expires_ns))
            })
    }

    /// Drops every expired entry.
    pub fn expire(&mut self, now_ns: u64) {
        let mut removed = 0usize;
        self.entries.retain(|_, list| {
            let before = list.len();
            list.retain(|known| known.expires_ns > now_ns);
            removed += before - list.len();
            !list.is_empty()
        });
        self.forget(removed, false);
    }

    /// Number of (namespace, address, name) entries, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A TTL in ns, clamped to the floor and ceiling.
    pub fn ttl_ns(&self, ttl: u32) -> u64 {
        let kept = Duration::from_secs(u64::from(ttl))
            .max(self.config.ttl_floor)
            .min(self.config.ttl_ceiling);
        u64::try_from(kept.as_nanos()).unwrap_or(u64::MAX)
    }

    fn forget(&mut self, count: usize, evicted: bool) {
        self.len = self.len.saturating_sub(count);
        let count = u64::try_from(count).unwrap_or(u64::MAX);
        if evicted {
            self.stats.evicted = self.stats.evicted.saturating_add(count);
        } else {
            self.stats.expired = self.stats.expired.saturating_add(count);
        }
    }

    fn upsert(
        &mut self,
        key: Key,
        name: &Name,
        expires_ns: u64,
        question: bool,
        asker: Option<u32>,
        now_ns: u64,
    ) {
        if self.config.max_entries == 0 {
            self.stats.evicted = self.stats.evicted.saturating_add(1);
            return;
        }
        let exists = self
            .entries
            .get(&key)
            .is_some_and(|list| list.iter().any(|known| known.name == *name));
        if !exists && self.len >= self.config.max_entries {
            self.make_room(now_ns);
        }

        let list = self.entries.entry(key).or_default();
        if let Some(known) = list.iter_mut().find(|known| known.name == *name) {
            known.expires_ns = known.expires_ns.max(expires_ns);
            known.question |= question;
            if let Some(pid) = asker {
                remember(&mut known.askers, pid, now_ns);
            }
            return;
        }

        if list.len() >= MAX_NAMES_PER_ADDRESS {
            let before = list.len();
            list.retain(|known| known.expires_ns > now_ns);
            let expired = before - list.len();
            self.forget(expired, false);
        }
        let list = self.entries.entry(key).or_default();
        if list.len() >= MAX_NAMES_PER_ADDRESS {
            let soonest = list
                .iter()
                .enumerate()
                .min_by_key(|(_, known)| (known.expires_ns, known.question))
                .map(|(index, known)| (index, known.expires_ns));
            match soonest {
                Some((index, soonest_ns)) if soonest_ns <= expires_ns => {
                    list.swap_remove(index);
                    self.forget(1, true);
                }
                _ => {
                    self.stats.evicted = self.stats.evicted.saturating_add(1);
                    return;
                }
            }
        }

        let mut askers = Vec::new();
        if let Some(pid) = asker {
            remember(&mut askers, pid, now_ns);
        }
        self.entries.entry(key).or_default().push(Known {
            name: name.clone(),
            expires_ns,
            question,
            askers,
        });
        self.len += 1;
        self.stats.inserted = self.stats.inserted.saturating_add(1);
    }

    /// The cache is full: drop expired entries, then, if needed, the soonest-expiring sixteenth.
    fn make_room(&mut self, now_ns: u64) {
        self.expire(now_ns);
        let max = self.config.max_entries;
        if self.len < max {
            return;
        }
        let keep = max.saturating_sub(1 + max / 16);
        let to_drop = self.len.saturating_sub(keep);
        let mut expiries: Vec<u64> = self
            .entries
            .values()
            .flatten()
            .map(|known| known.expires_ns)
            .collect();
        let Some(nth) = to_drop.checked_sub(1).filter(|&nth| nth < expiries.len()) else {
            return;
        };
        let (_, &mut threshold, _) = expiries.select_nth_unstable(nth);

        // First everything that expires before the threshold, then as many at it as needed.
        let mut dropped = 0usize;
        for strictly_before in [true, false] {
            self.entries.retain(|_, list| {
                list.retain(|known| {
                    let drop = if strictly_before {
                        known.expires_ns < threshold
                    } else {
                        known.expires_ns == threshold && dropped < to_drop
                    };
                    dropped += usize::from(drop);
                    !drop
                });
                !list.is_empty()
            });
        }
        self.forget(dropped, true);
    }
}

/// Adds `pid` as the most recent asker, keeping the [`MAX_ASKERS`] most recent.
fn remember(askers: &mut Vec<Asker>, pid: u32, now_ns: u64) {
    if let Some(asker) = askers.iter_mut().find(|asker| asker.pid == pid) {
        asker.at_ns = asker.at_ns.max(now_ns);
        return;
    }
    if askers.len() >= MAX_ASKERS {
        if let Some(oldest) = askers
            .iter()
            .enumerate()
            .min_by_key(|(_, asker)| asker.at_ns)
            .map(|(index, _)| index)
        {
            askers.swap_remove(oldest);
        }
    }
    askers.push(Asker { pid, at_ns: now_ns });
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_000 * S;
    const NS: u64 = 4026531840; // the initial network namespace's inode

    fn name(text: &str) -> Name {
        Name::from_dotted(text).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Inserts a direct answer (`name` resolved to `address`, no CNAME).
    fn answer(cache: &mut DnsCache, address: &str, text: &str, ttl: u32, pid: u32, now: u64) {
        answer_in(cache, NS, address, text, ttl, pid, now);
    }

    /// [`answer`] in network namespace `ns`.
    fn answer_in(
        cache: &mut DnsCache,
        ns: u64,
        address: &str,
        text: &str,
        ttl: u32,
        pid: u32,
        now: u64,
    ) {
        let n = name(text);
        cache.insert(
            ns,
            ip(address),
            &n,
            std::slice::from_ref(&n),
            ttl,
            Some(pid),
            now,
        );
    }

    #[test]
    fn ttl_is_clamped_to_floor_and_ceiling() {
        let mut cache = DnsCache::default();
        answer(&mut cache, "192.0.2.1", "zero.example", 0, 1, T0);
        answer(&mut cache, "192.0.2.2", "day.example", 86_400, 1, T0);
        answer(&mut cache, "192.0.2.3", "minute.example", 60, 1, T0);
        let live = |cache: &DnsCache, a: &str, at: u64| {
            !cache.lookup(NS, ip(a), None, at).names.is_empty()
        };
        assert!(live(&cache, "192.0.2.1", T0 + 5 * S - 1));
        assert!(!live(&cache, "192.0.2.1", T0 + 5 * S));
        assert!(live(&cache, "192.0.2.2", T0 + 3600 * S - 1));
        assert!(!live(&cache, "192.0.2.2", T0 + 3600 * S));
        assert!(live(&cache, "192.0.2.3", T0 + 60 * S - 1));
        assert!(!live(&cache, "192.0.2.3", T0 + 60 * S));

        let mut odd = DnsCache::new(CacheConfig {
            ttl_floor: Duration::from_secs(10),
            ttl_ceiling: Duration::from_secs(1),
            max_entries: 16,
        });
        answer(&mut odd, "192.0.2.1", "odd.example", 30, 1, T0);
        assert!(
            !live(&odd, "192.0.2.1", T0 + S),
            "ceiling wins over a larger floor"
        );
    }

    #[test]
    fn expiry_and_refresh() {
        let mut cache = DnsCache::default();
        answer(&mut cache, "192.0.2.1", "a.example", 30, 1, T0);
        answer(&mut cache, "192.0.2.2", "b.example", 300, 1, T0);
        assert_eq!(cache.len(), 2);
        // A later answer extends a's life; a shorter one does not shorten it.
        answer(&mut cache, "192.0.2.1", "a.example", 30, 1, T0 + 20 * S);
        answer(&mut cache, "192.0.2.1", "a.example", 5, 1, T0 + 21 * S);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.stats.inserted, 2);
        cache.expire(T0 + 49 * S);
        assert_eq!(cache.len(), 2);
        cache.expire(T0 + 50 * S);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.stats.expired, 1);
        assert_eq!(
            cache.lookup(NS, ip("192.0.2.1"), Some(1), T0 + 50 * S),
            Lookup::default()
        );
        cache.expire(T0 + 301 * S);
        assert!(cache.is_empty());
    }

    #[test]
    fn the_askers_own_name_is_preferred() {
        let mut cache = DnsCache::default();
        answer(&mut cache, "203.0.113.9", "shop.example", 60, 100, T0);
        answer(&mut cache, "203.0.113.9", "blog.example", 60, 200, T0 + 1);
        let at = T0 + 2;
        let found = cache.lookup(NS, ip("203.0.113.9"), Some(100), at);
        assert_eq!(found.domain, Some(name("shop.example")));
        assert_eq!(found.names, [name("blog.example"), name("shop.example")]);
        let found = cache.lookup(NS, ip("203.0.113.9"), Some(200), at);
        assert_eq!(found.domain, Some(name("blog.example")));
        let found = cache.lookup(NS, ip("203.0.113.9"), Some(300), at);
        assert_eq!(found.domain, None, "two names, neither asked by pid 300");
        assert_eq!(found.names.len(), 2);
        assert_eq!(cache.lookup(NS, ip("203.0.113.9"), None, at).domain, None);

        // pid 100 now asks for the other name: its most recent question wins.
        answer(&mut cache, "203.0.113.9", "blog.example", 60, 100, T0 + 3);
        let found = cache.lookup(NS, ip("203.0.113.9"), Some(100), T0 + 4);
        assert_eq!(found.domain, Some(name("blog.example")));
    }

    #[test]
    fn one_asked_name_is_the_domain_for_anyone_and_chain_names_are_listed() {
        let mut cache = DnsCache::default();
        let chain = [
            name("www.example.com"),
            name("www.example.com.cdn.net"),
            name("e1.akamai.net"),
        ];
        cache.insert(NS, ip("192.0.2.80"), &chain[0], &chain, 20, Some(7), T0);
        let found = cache.lookup(NS, ip("192.0.2.80"), Some(8), T0 + S);
        assert_eq!(found.domain, Some(name("www.example.com")));
        assert_eq!(
            found.names,
            [
                name("e1.akamai.net"),
                name("www.example.com"),
                name("www.example.com.cdn.net")
            ]
        );
        assert_eq!(found.questions, [name("www.example.com")]);
        let questions: Vec<_> = cache
            .live_questions(T0)
            .map(|(_, _, n, _)| n.clone())
            .collect();
        assert_eq!(questions, [name("www.example.com")]);
        assert_eq!(cache.live_pairs(T0).count(), 3);
        assert_eq!(cache.len(), 3);
        // Chain names are not "asked": another question makes the domain ambiguous.
        answer(&mut cache, "192.0.2.80", "other.example", 20, 9, T0);
        assert_eq!(
            cache.lookup(NS, ip("192.0.2.80"), None, T0 + S).domain,
            None
        );
        assert_eq!(
            cache.lookup(NS, ip("192.0.2.80"), Some(7), T0 + S).domain,
            Some(name("www.example.com"))
        );
    }

    #[test]
    fn askers_are_bounded_to_the_most_recent() {
        let mut cache = DnsCache::default();
        for pid in 1..=10 {
            answer(
                &mut cache,
                "192.0.2.1",
                "a.example",
                60,
                pid,
                T0 + u64::from(pid),
            );
        }
        answer(&mut cache, "192.0.2.1", "b.example", 60, 99, T0 + 20);
        let domain = |pid| cache.lookup(NS, ip("192.0.2.1"), Some(pid), T0 + 30).domain;
        assert_eq!(domain(1), None, "forgotten: 8 askers are kept");
        assert_eq!(domain(2), None);
        assert_eq!(domain(3), Some(name("a.example")));
        assert_eq!(domain(10), Some(name("a.example")));
        assert_eq!(domain(99), Some(name("b.example")));
    }

    #[test]
    fn a_cdn_address_keeps_many_names_up_to_the_cap() {
        let mut cache = DnsCache::default();
        for i in 0..40u32 {
            // Later names live longer.
            answer(
                &mut cache,
                "198.51.100.1",
                &format!("site{i}.example"),
                100 + i,
                i,
                T0,
            );
        }
        let found = cache.lookup(NS, ip("198.51.100.1"), None, T0 + S);
        assert_eq!(found.names.len(), MAX_NAMES_PER_ADDRESS);
        assert!(
            !found.names.contains(&name("site7.example")),
            "soonest-expiring evicted"
        );
        assert!(found.names.contains(&name("site8.example")));
        assert!(found.names.contains(&name("site39.example")));
        assert_eq!(cache.stats.evicted, 8);
        assert_eq!(cache.len(), MAX_NAMES_PER_ADDRESS);
        // A name that would expire before every kept one is not stored.
        answer(&mut cache, "198.51.100.1", "brief.example", 1, 1, T0);
        assert_eq!(cache.stats.evicted, 9);
        assert!(!cache
            .lookup(NS, ip("198.51.100.1"), None, T0 + 1)
            .names
            .contains(&name("brief.example")));
        // Expired names make room first.
        answer(
            &mut cache,
            "198.51.100.1",
            "late.example",
            60,
            1,
            T0 + 120 * S,
        );
        assert_eq!(
            cache
                .lookup(NS, ip("198.51.100.1"), None, T0 + 120 * S)
                .names
                .len(),
            20
        );
        assert_eq!(cache.stats.expired, 13);
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_the_soonest_expiring() {
        let mut cache = DnsCache::new(CacheConfig {
            max_entries: 64,
            ..CacheConfig::default()
        });
        for i in 0..200u32 {
            let address = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            let n = name(&format!("h{i}.example"));
            // Every other answer lives long.
            let ttl = if i % 2 == 0 { 3000 + i } else { 10 + i };
            cache.insert(NS, address, &n, std::slice::from_ref(&n), ttl, Some(i), T0);
            assert!(cache.len() <= 64);
        }
        assert_eq!(cache.stats.inserted, 200);
        assert_eq!(cache.stats.evicted, 200 - cache.len() as u64);
        // The longest-lived answers survive.
        for i in (140..200u32).step_by(2) {
            let address = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            assert!(
                !cache.lookup(NS, address, None, T0).names.is_empty(),
                "h{i}"
            );
        }
        // Expired entries make room first: nothing live is evicted then.
        let mut small = DnsCache::new(CacheConfig {
            max_entries: 4,
            ..CacheConfig::default()
        });
        for i in 1..=4 {
            answer(
                &mut small,
                &format!("192.0.2.{i}"),
                "short.example",
                10,
                1,
                T0,
            );
        }
        answer(&mut small, "192.0.2.9", "new.example", 60, 1, T0 + 100 * S);
        assert_eq!(small.len(), 1);
        assert_eq!((small.stats.expired, small.stats.evicted), (4, 0));

        let mut none = DnsCache::new(CacheConfig {
            max_entries: 0,
            ..CacheConfig::default()
        });
        answer(&mut none, "192.0.2.1", "a.example", 60, 1, T0);
        assert!(none.is_empty());
    }

    #[test]
    fn namespaces_are_separate() {
        let mut cache = DnsCache::default();
        answer_in(&mut cache, 1, "10.0.0.5", "db.internal", 60, 1, T0);
        answer_in(&mut cache, 2, "10.0.0.5", "db.internal.corp", 60, 1, T0);
        assert_eq!(
            cache.lookup(1, ip("10.0.0.5"), Some(1), T0).domain,
            Some(name("db.internal"))
        );
        assert_eq!(
            cache.lookup(2, ip("10.0.0.5"), Some(1), T0).domain,
            Some(name("db.internal.corp"))
        );
        assert_eq!(
            cache.lookup(3, ip("10.0.0.5"), Some(1), T0),
            Lookup::default()
        );
    }

    #[test]
    fn ipv4_mapped_addresses_are_the_ipv4_address() {
        let mut cache = DnsCache::default();
        answer(&mut cache, "192.0.2.7", "v4.example", 60, 1, T0);
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert_eq!(
            cache.lookup(NS, mapped, Some(1), T0).domain,
            Some(name("v4.example"))
        );
        answer(&mut cache, "2001:db8::7", "v6.example", 60, 1, T0);
        assert_eq!(
            cache
                .lookup(
                    NS,
                    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
                    None,
                    T0
                )
                .domain,
            Some(name("v6.example"))
        );
    }

    #[test]
    fn live_pairs_lists_what_is_live() {
        let mut cache = DnsCache::default();
        answer(&mut cache, "192.0.2.1", "short.example", 10, 1, T0);
        answer(&mut cache, "192.0.2.2", "long.example", 100, 1, T0);
        let mut pairs: Vec<_> = cache
            .live_pairs(T0 + 50 * S)
            .map(|(netns, address, name, expires)| (netns, address, name.clone(), expires))
            .collect();
        pairs.sort();
        assert_eq!(
            pairs,
            [(NS, ip("192.0.2.2"), name("long.example"), T0 + 100 * S)]
        );
        let approved = cache
            .live_pairs(T0)
            .filter(|(_, _, name, _)| name.as_str().ends_with("short.example"))
            .count();
        assert_eq!(approved, 1);
    }
}
