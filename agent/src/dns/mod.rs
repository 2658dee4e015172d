//! Destination names from observed DNS.
//!
//! The kernel hands userspace the DNS messages it sees on port 53 (UDP payloads of answers and
//! queries, up to about 1232 bytes, possibly cut short), each with the receiving socket's
//! cookie, the pid and the network namespace. From them egret learns which names each address
//! was resolved from, so a connection line can say which name the process meant
//! (`destination.domain`) and every name known for the address (`egret.dns.names`).
//!
//! - [`wire`]: a small, strict DNS message parser ([`parse_message`], and [`parse_cut_message`]
//!   for messages the kernel cut at its copy limit) and [`resolution`], which
//!   turns a response into (address, question name, `CNAME` chain, TTL) mappings, using only
//!   records connected to the question. Untrusted bytes can make it return an error, never
//!   panic, loop or allocate much; a malformed message yields no mapping at all.
//! - [`cache`]: [`DnsCache`], address → names per network namespace, honouring the TTLs
//!   (clamped), remembering which pids asked, bounded in size.
//! - [`observe`]: one message end to end (parse, count in [`DnsStats`], record the mappings).
//! - [`resolvers`]: [`resolvers::TrustedResolvers`], the resolvers whose answers count: the
//!   policy's `resolvers:`, or the `resolv.conf` nameservers of the host and each container,
//!   re-read when the files change.
//! - [`state`]: [`state::DnsState`], the destination stage's DNS state: the cache, who asked,
//!   and [`state::DnsState::on_event`], which turns the kernel's DNS record into an
//!   [`state::Answer`].
//!
//! Names ([`Name`]) are lower-case presentation form with non-printable bytes escaped, so they
//! are safe to log; [`Name::labels`] gives the bytes the kernel's name hash
//! ([`agent_common::dns`]) runs over.

pub mod cache;
pub mod resolvers;
pub mod state;
pub mod wire;

pub use cache::{CacheConfig, CacheStats, DnsCache, Lookup};
pub use wire::{
    parse_cut_message, parse_message, resolution, DnsError, Message, Name, Question, RData, Record,
    Resolved,
};

/// Counters for the agent's metric lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DnsStats {
    /// DNS messages received from the kernel.
    pub messages: u64,
    /// Messages that did not parse; they were skipped.
    pub malformed: u64,
    /// Messages the kernel cut (`DNS_FLAG_CUT`): only their answers before the cut were used.
    pub cut: u64,
    /// Address mappings learned from answers ([`Resolved`] entries recorded in the cache).
    pub answers: u64,
    /// Answers the kernel did not believe (not from a trusted resolver, or answering no query
    /// of the socket): they named and approved nothing.
    pub untrusted: u64,
}

/// One DNS message as the kernel delivered it.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// Network namespace of the receiving socket (the kernel's netns cookie): mappings are
    /// kept per namespace.
    pub netns: u64,
    /// The process the receiving socket belongs to, if known: it asked the question.
    pub pid: Option<u32>,
    /// The DNS message (over TCP, without the 2-byte length prefix).
    pub payload: &'a [u8],
    /// The kernel copied only the beginning of the message (`DNS_FLAG_CUT`): keep the answers
    /// that are whole ([`wire::parse_cut_message`]).
    pub cut: bool,
    /// When it arrived (`CLOCK_BOOTTIME` ns): TTLs count from here.
    pub now_ns: u64,
    /// The kernel believed it (a trusted resolver answering this socket's query): only then
    /// is it recorded in the cache.
    pub believed: bool,
}

/// What one message taught: the message itself and the (address, name) mappings of its answer,
/// each already recorded in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    pub message: Message,
    pub resolved: Vec<Resolved>,
}

/// Handles one DNS message: parses it, and records in `cache` every address its answer
/// resolves the question to (none for a query, an error response or an answer without
/// addresses). A malformed message is counted in [`DnsStats::malformed`] and its error returned
/// (for a debug log); nothing is recorded from it.
pub fn observe(
    cache: &mut DnsCache,
    stats: &mut DnsStats,
    observed: &Observed<'_>,
) -> Result<Learned, DnsError> {
    let Observed {
        netns,
        pid,
        payload,
        cut,
        now_ns,
        believed,
    } = *observed;
    stats.messages = stats.messages.saturating_add(1);
    if cut {
        stats.cut = stats.cut.saturating_add(1);
    }
    let parsed = if cut {
        parse_cut_message(payload)
    } else {
        parse_message(payload)
    };
    let message = match parsed {
        Ok(message) => message,
        Err(error) => {
            stats.malformed = stats.malformed.saturating_add(1);
            return Err(error);
        }
    };
    let resolved = resolution(&message);
    if !believed {
        return Ok(Learned { message, resolved });
    }
    for Resolved {
        address,
        ttl,
        name,
        chain,
    } in &resolved
    {
        cache.insert(netns, *address, name, chain, *ttl, pid, now_ns);
    }
    stats.answers = stats
        .answers
        .saturating_add(u64::try_from(resolved.len()).unwrap_or(u64::MAX));
    Ok(Learned { message, resolved })
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
        let seen = |payload, cut| Observed {
            believed: true,
            netns: 9,
            pid: Some(42),
            payload,
            cut,
            now_ns: 0,
        };
        let mut mappings = |payload, cut| {
            observe(&mut cache, &mut stats, &seen(payload, cut)).map(|l| l.resolved.len())
        };
        assert_eq!(mappings(answer, false), Ok(1));
        let cut_answer = &answer[..answer.len() - 1];
        assert!(mappings(cut_answer, false).is_err());
        assert_eq!(mappings(cut_answer, true), Ok(0));
        assert!(mappings(&answer[..20], true).is_err());
        assert_eq!(
            stats,
            DnsStats {
                messages: 4,
                malformed: 2,
                cut: 2,
                answers: 1,
                untrusted: 0,
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
