//! Joining a TCP connection's start line to its end line (`egret.connection.id`), so that the
//! connection is counted once, with what its first bytes said.
//!
//! A start line is written before any byte flows: its `destination.domain` comes only from
//! DNS. The end line also has the TLS server name or HTTP Host (as `destination.domain` when
//! DNS gave none), the HTTP request and response, and a verdict that may have changed when
//! that name was judged. So a TCP start line waits here for its end line; the connection is
//! counted when the end comes ([`Waiting::end`]), when the store is full and it is the oldest
//! ([`Waiting::start`]), or at the end of the input ([`Waiting::drain`]): each start line
//! leaves the store exactly once, and only what leaves it is counted.

use std::collections::{BTreeMap, HashMap};

use super::input::{Observation, Verdict};

/// At most this many start lines wait for their end lines; past that the oldest is counted
/// as it was.
pub const MAX_WAITING: usize = 65_536;

/// Start lines waiting for their end lines, oldest first.
#[derive(Debug)]
pub struct Waiting {
    /// By connection id: the start line, and its place in `order`.
    by_id: HashMap<Box<str>, (u64, Observation<'static>)>,
    /// Arrival number → connection id.
    order: BTreeMap<u64, Box<str>>,
    next: u64,
    max: usize,
}

impl Default for Waiting {
    fn default() -> Self {
        Self::new(MAX_WAITING)
    }
}

impl Waiting {
    /// A store holding at most `max` start lines (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            by_id: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            max: max.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// A TCP start line with a connection id (see [`Observation::waits_for_end`]) waits.
    /// Returns the connections to count now: an earlier start line with the same id (the
    /// same line read twice, or a socket that connected again without an end line between),
    /// and the oldest one when the store is full.
    pub fn start(&mut self, o: Observation<'_>) -> Vec<Observation<'static>> {
        let Some(id) = o.connection_id.as_deref().map(Box::<str>::from) else {
            return vec![o.into_owned()];
        };
        let mut out = Vec::new();
        if let Some(earlier) = self.remove(&id) {
            out.push(earlier);
        }
        while self.by_id.len() >= self.max {
            match self.pop_oldest() {
                Some(oldest) => out.push(oldest),
                None => break,
            }
        }
        let at = self.next;
        self.next = self.next.saturating_add(1);
        self.order.insert(at, id.clone());
        self.by_id.insert(id, (at, o.into_owned()));
        out
    }

    /// An end line: its start line joined with it ([`joined`]), to be counted; `None` when no
    /// start line with its id waits (it was not in the input or the range, or was already
    /// counted).
    pub fn end(&mut self, end: &Observation<'_>) -> Option<Observation<'static>> {
        let id = end.connection_id.as_deref()?;
        self.remove(id).map(|start| joined(start, end))
    }

    /// Every start line still waiting (its end never came), oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = Observation<'static>> + '_ {
        std::iter::from_fn(|| self.pop_oldest())
    }

    fn remove(&mut self, id: &str) -> Option<Observation<'static>> {
        let (at, o) = self.by_id.remove(id)?;
        self.order.remove(&at);
        Some(o)
    }

    fn pop_oldest(&mut self) -> Option<Observation<'static>> {
        let (_, id) = self.order.pop_first()?;
        self.by_id.remove(&id).map(|(_, o)| o)
    }
}

/// The connection of `start` as its `end` line completes it: named by the end line's
/// `destination.domain` when the start line had none, with the end line's verdict (and rule)
/// when it is stricter, and with the end line's HTTP request and response. Time, identity and
/// groups stay the start line's.
pub fn joined(mut start: Observation<'static>, end: &Observation<'_>) -> Observation<'static> {
    if start.domain.is_none() {
        if let Some(domain) = &end.domain {
            start.domain = Some(domain.clone().into_owned().into());
            start.name_source = end.name_source;
        }
    }
    if Verdict::stricter(start.verdict, end.verdict) != start.verdict {
        start.verdict = end.verdict;
        start.rule = end.rule.clone().map(|r| r.into_owned().into());
    }
    if let Some(http) = &end.http {
        start.http = Some(http.clone().into_owned());
    }
    start
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::report::{aggregate::tests::obs, input::NameSource};

    fn start(id: &str, ts: i64) -> Observation<'static> {
        let mut o = obs(ts, "/usr/bin/curl", "192.0.2.1", 443);
        o.connection_id = Some(Cow::Owned(id.to_owned()));
        o
    }

    #[test]
    fn an_end_completes_its_start_once() {
        let mut w = Waiting::new(8);
        assert!(w.start(start("a", 1)).is_empty());
        let mut end = start("a", 5);
        end.domain = Some(Cow::Borrowed("api.example.com"));
        end.name_source = Some(NameSource::Tls);
        end.verdict = Some(Verdict::Unapproved);
        let joined = w.end(&end).unwrap();
        assert_eq!(joined.ts_ns, 1_000_000_000, "counted at its start");
        assert_eq!(joined.domain.as_deref(), Some("api.example.com"));
        assert_eq!(joined.name_source, Some(NameSource::Tls));
        assert_eq!(joined.verdict, Some(Verdict::Unapproved));
        assert!(w.end(&end).is_none(), "a second end line joins nothing");
        assert!(w.is_empty());
        assert_eq!(w.drain().count(), 0);
    }

    #[test]
    fn the_start_lines_name_and_a_stricter_verdict_stay() {
        let mut s = start("a", 1);
        s.domain = Some(Cow::Borrowed("dns.example.com"));
        s.name_source = Some(NameSource::Dns);
        s.verdict = Some(Verdict::Unapproved);
        let mut end = start("a", 2);
        end.domain = Some(Cow::Borrowed("sni.example.com"));
        end.name_source = Some(NameSource::Tls);
        end.verdict = Some(Verdict::Approved);
        end.rule = Some(Cow::Borrowed("sni-rule"));
        let j = joined(s.clone(), &end);
        assert_eq!(j.domain.as_deref(), Some("dns.example.com"));
        assert_eq!(j.name_source, Some(NameSource::Dns));
        assert_eq!(
            j.verdict,
            Some(Verdict::Unapproved),
            "approved later is not stricter"
        );
        assert_eq!(j.rule, None);
        end.verdict = Some(Verdict::Blocked);
        end.rule = None;
        s.rule = Some(Cow::Borrowed("r"));
        s.verdict = Some(Verdict::Approved);
        let j = joined(s, &end);
        assert_eq!((j.verdict, j.rule), (Some(Verdict::Blocked), None));
    }

    #[test]
    fn the_store_is_bounded_and_the_oldest_is_counted_as_it_was() {
        let mut w = Waiting::new(2);
        assert!(w.start(start("a", 1)).is_empty());
        assert!(w.start(start("b", 2)).is_empty());
        let out = w.start(start("c", 3));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].connection_id.as_deref(), Some("a"));
        assert_eq!(w.len(), 2);
        // Its end comes later: nothing to join, nothing counted twice.
        assert!(w.end(&start("a", 9)).is_none());
        // The same id again: the earlier line is counted, the new one waits.
        let out = w.start(start("b", 4));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].ts_ns, 2_000_000_000);
        let rest: Vec<_> = w.drain().map(|o| o.ts_ns / 1_000_000_000).collect();
        assert_eq!(rest, [3, 4], "oldest first");
        assert!(w.is_empty());
    }

    #[test]
    fn a_line_without_an_id_does_not_wait() {
        let mut w = Waiting::new(2);
        let out = w.start(obs(1, "/x", "192.0.2.1", 80));
        assert_eq!(out.len(), 1);
        assert!(w.is_empty());
        assert!(w.end(&obs(2, "/x", "192.0.2.1", 80)).is_none());
    }
}
