//! The first-bytes stage: what the first bytes each way of a TCP connection say.
//!
//! The kernel copies the client's first flight (up to `PAYLOAD_OUT_MAX` bytes) and the first
//! segment the server sends back as `Payload` chunks (`agent-ebpf/src/payload.rs`). This stage
//! puts each connection's chunks back together ([`Reassembly`]: retransmissions and
//! overlapping chunks are fine), classifies them once they suffice ([`classify_outbound`]: a
//! TLS ClientHello, an HTTP request, or neither) and reads the HTTP status of the answer. What
//! it learns goes on the connection's record ([`FirstBytesSeen`]), and so on its end line.
//!
//! Block mode holds a gated connection's first payload in the kernel until this stage has read
//! it: [`Flights::held_ready`] hands out the connections whose held flight is now whole (or
//! will never be), for the judgement of their name.
//!
//! Bounded: at most [`FLIGHTS_MAX`] connections at once (the oldest is forgotten, counted),
//! each at most [`FIRST_BYTES_LIMIT`] bytes.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use agent_common::{PayloadEvent, PAYLOAD_IN, PAYLOAD_OUT};

use crate::{
    payload::{classify_outbound, parse_response, reassembly::Reassembly, FirstBytes},
    record::FirstBytesSeen,
};

pub use crate::payload::FIRST_BYTES_LIMIT;

/// Most connections whose first bytes are being put together at once.
pub const FLIGHTS_MAX: usize = 16384;
/// How long a held first flight may take to arrive whole before it is refused.
pub const HELD_TIMEOUT: Duration = Duration::from_secs(1);

/// The stage's numbers for the metric line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FirstBytesStats {
    /// Connections whose client flight was classified.
    pub read: u64,
    /// Flights forgotten before they were whole.
    pub evicted: u64,
    /// Held flights whose name check passed / was refused (with timeouts).
    pub passed: u64,
    pub refused: u64,
}

/// One connection's first bytes.
struct Flight {
    out: Reassembly,
    /// The client flight's classification, once final.
    classified: Option<FirstBytes>,
    /// The server's first bytes were read.
    answered: bool,
    /// Insertion order (for eviction).
    order: u64,
}

/// What a chunk changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing new yet.
    Nothing,
    /// What the connection's first bytes say now (the record's copy is to be replaced).
    Seen(Box<FirstBytesSeen>),
}

/// A held flight ready for its name check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub cookie: u64,
    /// What the flight said; `None` when it did not arrive whole in time.
    pub seen: Option<FirstBytesSeen>,
}

#[derive(Default)]
pub struct Flights {
    open: HashMap<u64, Flight>,
    by_age: BTreeMap<u64, u64>,
    next: u64,
    /// What each connection's first bytes said so far.
    seen: HashMap<u64, FirstBytesSeen>,
    /// Flights the kernel holds for a name check, and since when.
    held: BTreeMap<u64, Instant>,
    stats: FirstBytesStats,
}

impl Flights {
    pub fn stats(&self) -> FirstBytesStats {
        self.stats
    }

    /// One chunk from the kernel.
    pub fn on_chunk(&mut self, ev: &PayloadEvent, now: Instant) -> Change {
        let PayloadEvent {
            header: _,
            cookie,
            offset,
            len,
            direction,
            held,
            _pad: _,
            data,
        } = ev;
        let bytes = data.get(..*len as usize).unwrap_or_default();
        let classified = self.flight(*cookie).classified.is_some();
        if *held != 0 && !classified {
            self.held.entry(*cookie).or_insert(now);
        }
        let flight = self.flight(*cookie);
        match *direction {
            PAYLOAD_OUT if flight.classified.is_none() => {
                flight.out.insert(*offset, bytes);
                let found = classify_outbound(flight.out.contiguous());
                if !found.is_final() {
                    return Change::Nothing;
                }
                flight.classified = Some(found.clone());
                self.stats.read += 1;
                let seen = self.seen.entry(*cookie).or_default();
                match found {
                    FirstBytes::Tls(hello) => seen.tls = Some(hello),
                    FirstBytes::Http(request) => seen.http = Some(request),
                    FirstBytes::Unreadable => seen.unreadable = true,
                    FirstBytes::Other | FirstBytes::NeedMore => {}
                }
                Change::Seen(Box::new(seen.clone()))
            }
            PAYLOAD_IN if !flight.answered && *offset == 0 => {
                flight.answered = true;
                let Some(response) = parse_response(bytes) else {
                    return Change::Nothing;
                };
                let seen = self.seen.entry(*cookie).or_default();
                seen.status_code = Some(response.status_code);
                Change::Seen(Box::new(seen.clone()))
            }
            _ => Change::Nothing,
        }
    }

    /// The connection's flight, made (and the oldest forgotten) when new.
    fn flight(&mut self, cookie: u64) -> &mut Flight {
        if !self.open.contains_key(&cookie) {
            while self.open.len() >= FLIGHTS_MAX {
                let Some((_, oldest)) = self.by_age.pop_first() else {
                    break;
                };
                if self.open.remove(&oldest).is_some() {
                    self.seen.remove(&oldest);
                    self.held.remove(&oldest);
                    self.stats.evicted += 1;
                }
            }
            self.next += 1;
            self.by_age.insert(self.next, cookie);
        }
        let order = self.next;
        self.open.entry(cookie).or_insert_with(|| Flight {
            out: Reassembly::new(FIRST_BYTES_LIMIT),
            classified: None,
            answered: false,
            order,
        })
    }

    /// Held flights ready for their name check: classified, or past [`HELD_TIMEOUT`] (then
    /// `seen` is `None`). Each is handed out once.
    pub fn held_ready(&mut self, now: Instant) -> Vec<Held> {
        let mut ready = Vec::new();
        let open = &self.open;
        self.held.retain(|cookie, since| {
            let classified = open.get(cookie).is_some_and(|f| f.classified.is_some());
            if classified {
                ready.push(Held {
                    cookie: *cookie,
                    seen: Some(self.seen.get(cookie).cloned().unwrap_or_default()),
                });
                return false;
            }
            if now.duration_since(*since) >= HELD_TIMEOUT {
                ready.push(Held {
                    cookie: *cookie,
                    seen: None,
                });
                return false;
            }
            true
        });
        ready
    }

    /// Whether some flight is held (a timer must check it).
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Counts a held flight's decision.
    pub fn decided(&mut self, passed: bool) {
        if passed {
            self.stats.passed += 1;
        } else {
            self.stats.refused += 1;
        }
    }

    /// The connection ended: its flight is forgotten.
    pub fn forget(&mut self, cookie: u64) {
        if let Some(flight) = self.open.remove(&cookie) {
            self.by_age.remove(&flight.order);
        }
        self.seen.remove(&cookie);
        self.held.remove(&cookie);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::synthetic::payload as chunk;

    const REQUEST: &[u8] =
        b"GET /a/b?x=1 HTTP/1.1\r\nHost: Example.COM:8080\r\nUser-Agent: curl/8.0\r\n\r\n";

    #[test]
    fn an_http_request_and_its_status_in_pieces() {
        let mut flights = Flights::default();
        let now = Instant::now();
        // The second half first, then a retransmission of the first half.
        assert_eq!(
            flights.on_chunk(&chunk(7, PAYLOAD_OUT, 10, &REQUEST[10..], false), now),
            Change::Nothing
        );
        let Change::Seen(seen) =
            flights.on_chunk(&chunk(7, PAYLOAD_OUT, 0, &REQUEST[..12], false), now)
        else {
            panic!("not classified");
        };
        let http = seen.http.unwrap();
        assert_eq!(http.host.as_deref(), Some("example.com"));
        assert_eq!(http.path, "/a/b");
        assert_eq!(http.query.as_deref(), Some("x=1"));
        let Change::Seen(seen) = flights.on_chunk(
            &chunk(7, PAYLOAD_IN, 0, b"HTTP/1.1 404 Not Found\r\n", false),
            now,
        ) else {
            panic!("no status");
        };
        assert_eq!(seen.status_code, Some(404));
        assert!(seen.http.is_some(), "the request stays");
        assert_eq!(flights.stats().read, 1);
        flights.forget(7);
        assert!(flights.open.is_empty() && flights.seen.is_empty());
    }

    #[test]
    fn a_held_flight_is_ready_when_classified_or_late() {
        let mut flights = Flights::default();
        let t0 = Instant::now();
        flights.on_chunk(&chunk(1, PAYLOAD_OUT, 0, REQUEST, true), t0);
        flights.on_chunk(&chunk(2, PAYLOAD_OUT, 0, &[0x16, 3, 1, 0x40, 0], true), t0);
        let ready = flights.held_ready(t0);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].cookie, 1);
        assert!(ready[0].seen.as_ref().is_some_and(|s| s.http.is_some()));
        assert!(flights.held_ready(t0).is_empty(), "handed out once");
        let late = flights.held_ready(t0 + HELD_TIMEOUT);
        assert_eq!(
            late,
            vec![Held {
                cookie: 2,
                seen: None
            }]
        );
    }

    #[test]
    fn flights_are_bounded() {
        let mut flights = Flights::default();
        let now = Instant::now();
        for cookie in 0..(FLIGHTS_MAX as u64 + 10) {
            flights.on_chunk(&chunk(cookie, PAYLOAD_OUT, 0, b"GE", false), now);
        }
        assert_eq!(flights.open.len(), FLIGHTS_MAX);
        assert_eq!(flights.stats().evicted, 10);
        assert!(!flights.open.contains_key(&0), "the oldest went first");
    }
}
