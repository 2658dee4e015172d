//! Checked decoding of ring-buffer records (userspace only).
//!
//! The kernel is trusted to write well-formed records, but the agent must never panic or read
//! out of bounds on whatever bytes arrive: every record is length-checked against its kind's
//! struct before it is copied out with an unaligned read.

use core::{fmt, mem::size_of, ptr};

use crate::{
    CgroupMkdirEvent, ConnEndEvent, ConnectEvent, DnsEvent, EventHeader, EventKind, ExecEvent,
    ExitEvent, ForkEvent, PayloadEvent, SockReleaseEvent, EVENT_VERSION,
};

/// One decoded record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "no_std without alloc; an event is decoded once and handled in place"
)]
pub enum Event {
    Connect(ConnectEvent),
    Send(ConnectEvent),
    Exec(ExecEvent),
    Fork(ForkEvent),
    Exit(ExitEvent),
    SockRelease(SockReleaseEvent),
    Dns(DnsEvent),
    CgroupMkdir(CgroupMkdirEvent),
    ConnEnd(ConnEndEvent),
    Payload(PayloadEvent),
}

/// Why a record could not be decoded. The agent counts these and goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than an [`EventHeader`].
    ShortHeader { len: usize },
    /// The header's kind is not one this build knows.
    UnknownKind { kind: u16 },
    /// The record was written by a kernel program of another layout version.
    Version { kind: u16, version: u16 },
    /// Fewer bytes than the kind's struct.
    ShortRecord { kind: u16, len: usize, want: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ShortHeader { len } => {
                write!(f, "record of {len} bytes is shorter than a header")
            }
            Self::UnknownKind { kind } => write!(f, "unknown event kind {kind}"),
            Self::Version { kind, version } => {
                write!(
                    f,
                    "event kind {kind} has layout version {version}, expected {EVENT_VERSION}"
                )
            }
            Self::ShortRecord { kind, len, want } => {
                write!(
                    f,
                    "event kind {kind}: record of {len} bytes, expected {want}"
                )
            }
        }
    }
}

/// Copies a `T` out of the front of `bytes`, which must be long enough.
fn read<T: Copy>(bytes: &[u8], kind: u16) -> Result<T, DecodeError> {
    let want = size_of::<T>();
    if bytes.len() < want {
        return Err(DecodeError::ShortRecord {
            kind,
            len: bytes.len(),
            want,
        });
    }
    // SAFETY: the length was checked above; every `T` used here is a `#[repr(C)]` struct of
    // integers and byte arrays for which any bit pattern is valid; `read_unaligned` does not
    // require alignment.
    Ok(unsafe { ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < size_of::<EventHeader>() {
        return Err(DecodeError::ShortHeader { len: bytes.len() });
    }
    let header: EventHeader = read(bytes, 0)?;
    let EventHeader { kind, version, .. } = header;
    let Some(event_kind) = EventKind::from_u16(kind) else {
        return Err(DecodeError::UnknownKind { kind });
    };
    if version != EVENT_VERSION {
        return Err(DecodeError::Version { kind, version });
    }
    Ok(match event_kind {
        EventKind::Connect => Event::Connect(read(bytes, kind)?),
        EventKind::Send => Event::Send(read(bytes, kind)?),
        EventKind::Exec => Event::Exec(read(bytes, kind)?),
        EventKind::Fork => Event::Fork(read(bytes, kind)?),
        EventKind::Exit => Event::Exit(read(bytes, kind)?),
        EventKind::SockRelease => Event::SockRelease(read(bytes, kind)?),
        EventKind::Dns => Event::Dns(read(bytes, kind)?),
        EventKind::CgroupMkdir => Event::CgroupMkdir(read(bytes, kind)?),
        EventKind::ConnEnd => Event::ConnEnd(read(bytes, kind)?),
        EventKind::Payload => Event::Payload(read(bytes, kind)?),
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::{AF_INET6, COMM_LEN};

    fn header(kind: EventKind, size: usize) -> EventHeader {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"curl");
        EventHeader {
            kind: kind as u16,
            version: EVENT_VERSION,
            size: size as u32,
            ktime_ns: 123_456_789,
            tgid: 4242,
            tid: 4243,
            uid: 1000,
            gid: 100,
            cgroup_id: 0xdead_beef,
            comm,
        }
    }

    /// Encodes a record the way the kernel does: the struct's bytes, as they lie in memory.
    fn encode<T: Copy>(value: &T) -> Vec<u8> {
        // SAFETY: `T` is one of the padding-free `#[repr(C)]` event structs.
        unsafe { core::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn connect(kind: EventKind) -> ConnectEvent {
        ConnectEvent {
            header: header(kind, size_of::<ConnectEvent>()),
            cookie: 77,
            family: AF_INET6,
            port: 443,
            sock_type: 1,
            protocol: 6,
            addr: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            prev_datagrams: 9,
            verdict: crate::VERDICT_BLOCKED,
            euid: 1000,
            netns: 4026531840,
            egid: 1000,
            _pad: 0,
        }
    }

    /// A record of `size` bytes for `kind`: a valid header, then a byte pattern in which
    /// neighbouring bytes differ, so a field read from the wrong place would not round-trip.
    fn patterned(kind: EventKind, size: usize) -> Vec<u8> {
        let mut bytes: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
        let header = encode(&header(kind, size));
        bytes[..header.len()].copy_from_slice(&header);
        bytes
    }

    /// The kind an event was decoded as, and its bytes encoded again.
    fn kind_and_bytes(event: &Event) -> (EventKind, Vec<u8>) {
        match event {
            Event::Connect(e) => (EventKind::Connect, encode(e)),
            Event::Send(e) => (EventKind::Send, encode(e)),
            Event::Exec(e) => (EventKind::Exec, encode(e)),
            Event::Fork(e) => (EventKind::Fork, encode(e)),
            Event::Exit(e) => (EventKind::Exit, encode(e)),
            Event::SockRelease(e) => (EventKind::SockRelease, encode(e)),
            Event::Dns(e) => (EventKind::Dns, encode(e)),
            Event::CgroupMkdir(e) => (EventKind::CgroupMkdir, encode(e)),
            Event::ConnEnd(e) => (EventKind::ConnEnd, encode(e)),
            Event::Payload(e) => (EventKind::Payload, encode(e)),
        }
    }

    /// Every kind decodes to its own variant, with every byte of the record where it was.
    #[test]
    fn round_trip_every_kind() {
        let cases = [
            (EventKind::Connect, size_of::<ConnectEvent>()),
            (EventKind::Send, size_of::<ConnectEvent>()),
            (EventKind::Exec, size_of::<ExecEvent>()),
            (EventKind::Fork, size_of::<ForkEvent>()),
            (EventKind::Exit, size_of::<ExitEvent>()),
            (EventKind::SockRelease, size_of::<SockReleaseEvent>()),
            (EventKind::Dns, size_of::<DnsEvent>()),
            (EventKind::CgroupMkdir, size_of::<CgroupMkdirEvent>()),
            (EventKind::ConnEnd, size_of::<ConnEndEvent>()),
            (EventKind::Payload, size_of::<PayloadEvent>()),
        ];
        for (kind, size) in cases {
            let bytes = patterned(kind, size);
            let event = decode(&bytes).unwrap();
            assert_eq!(kind_and_bytes(&event), (kind, bytes), "{kind:?}");
        }
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let bytes = encode(&connect(EventKind::Connect));
        assert_eq!(
            decode(&bytes[..10]),
            Err(DecodeError::ShortHeader { len: 10 })
        );
        assert_eq!(
            decode(&bytes[..60]),
            Err(DecodeError::ShortRecord {
                kind: 1,
                len: 60,
                want: size_of::<ConnectEvent>()
            })
        );
        let mut unknown = bytes.clone();
        unknown[0] = 200;
        assert_eq!(
            decode(&unknown),
            Err(DecodeError::UnknownKind { kind: 200 })
        );
        let mut old = bytes;
        old[2] = 99;
        assert_eq!(
            decode(&old),
            Err(DecodeError::Version {
                kind: 1,
                version: 99
            })
        );
    }

    #[test]
    fn decodes_from_unaligned_buffers() {
        let mut bytes = std::vec![0u8];
        bytes.extend(encode(&connect(EventKind::Send)));
        assert_eq!(
            decode(&bytes[1..]),
            Ok(Event::Send(connect(EventKind::Send)))
        );
    }
}
