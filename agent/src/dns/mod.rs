//! Destination names from observed DNS.
//!
//! The kernel hands userspace the DNS messages it sees on port 53 (UDP payloads of answers and
//! queries, up to about 1232 bytes, possibly cut short), each with the receiving socket's
//! cookie, the pid and the network namespace. From them egret learns which names each address
//! was resolved from, so a connection line can say which name the process meant
//! (`destination.domain`) and every name known for the address (`egret.dns.names`).
//!
//! - [`wire`]: a small, strict DNS message parser ([`parse_message`]) and [`resolution`], which
//!   turns a response into (address, question name, `CNAME` chain, TTL) mappings, using only
//!   records connected to the question. Untrusted bytes can make it return an error, never
//!   panic, loop or allocate much; a malformed message yields no mapping at all.
//! - [`cache`]: [`DnsCache`], address → names per network namespace, honouring the TTLs
//!   (clamped), remembering which pids asked, bounded in size.
//! - [`observe`]: one message end to end (parse, count in [`DnsStats`], record the mappings).
//!
//! Names ([`Name`]) are lower-case presentation form with non-printable bytes escaped, so they
//! are safe to log; [`Name::labels`] gives the bytes the kernel's name hash
//! ([`agent_common::dns`]) runs over.

pub mod cache;
pub mod wire;

pub use cache::{CacheConfig, CacheStats, DnsCache, Lookup};
pub use wire::{
    parse_message, resolution, DnsError, Message, Name, Question, RData, Record, Resolved,
};

/// Counters for the agent's metric lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DnsStats {
    /// DNS messages received from the kernel (queries and answers).
    pub messages: u64,
    /// Messages that did not parse; they were skipped.
    pub malformed: u64,
    /// Address mappings learned from answers ([`Resolved`] entries recorded in the cache).
    pub answers: u64,
}

/// Handles one DNS message the kernel saw: parses it, and records every address its answer
/// resolves the question to, in namespace `netns`, asked by `pid` (the receiving socket's
/// process), at `now_ns` (`CLOCK_BOOTTIME`). Returns the number of mappings recorded (0 for a
/// query, an error response or an answer without addresses). A malformed message is counted in
/// [`DnsStats::malformed`] and its error returned (for a debug log); nothing is recorded from it.
pub fn observe(
    cache: &mut DnsCache,
    stats: &mut DnsStats,
    netns: u64,
    pid: Option<u32>,
    payload: &[u8],
    now_ns: u64,
) -> Result<usize, DnsError> {
    stats.messages = stats.messages.saturating_add(1);
    let message = match parse_message(payload) {
        Ok(message) => message,
        Err(error) => {
            stats.malformed = stats.malformed.saturating_add(1);
            return Err(error);
        }
    };
    let resolved = resolution(&message);
    for Resolved {
        address,
        ttl,
        name,
        chain,
    } in &resolved
    {
        cache.insert(netns, *address, name, chain, *ttl, pid, now_ns);
    }
    let count = resolved.len();
    stats.answers = stats
        .answers
        .saturating_add(u64::try_from(count).unwrap_or(u64::MAX));
    Ok(count)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn observe_counts_and_records() {
        let (mut cache, mut stats) = (DnsCache::default(), DnsStats::default());
        // `example.com A 93.184.215.14`, TTL 3600 (see wire's tests).
        let answer: &[u8] = &[
            0xb4, 0xa6, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 7, b'e', b'x', b'a', b'm', b'p', b'l',
            b'e', 3, b'c', b'o', b'm', 0, 0, 1, 0, 1, 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0,
            4, 93, 184, 215, 14,
        ];
        assert_eq!(
            observe(&mut cache, &mut stats, 9, Some(42), answer, 0),
            Ok(1)
        );
        assert!(observe(&mut cache, &mut stats, 9, Some(42), &answer[..20], 0).is_err());
        assert_eq!(
            stats,
            DnsStats {
                messages: 2,
                malformed: 1,
                answers: 1
            }
        );
        let address: IpAddr = "93.184.215.14".parse().unwrap();
        let found = cache.lookup(9, address, Some(42), 1);
        assert_eq!(found.domain.as_ref().map(Name::as_str), Some("example.com"));
        assert_eq!(
            cache.lookup(9, address, Some(42), 3600 * 1_000_000_000),
            Lookup::default()
        );
    }
}
