//! A test DNS server and a resolve-and-connect client for the end-to-end tests.
//!
//! ```text
//! egret-dns server --port P [--bind 127.0.0.1] [--ttl N] [--a NAME=IP]... [--aaaa NAME=IP]...
//!                  [--cname ALIAS=TARGET]... [--rotate NAME=CIDR]... [--malformed NAME]...
//!                  [--twice NAME=IP]... [--tcp]
//! egret-dns resolve --server IP:PORT NAME [--aaaa] [--tcp]
//! egret-dns resolve-connect --server IP:PORT NAME --port PORT [--count N] [--udp] [--aaaa]
//!                  [--tcp-dns] [--all] [--list] [--probe IP] [--probe-port PORT]
//!                  [--reconnect-after-ms MS] [--linger-ms MS]
//! egret-dns connect IP PORT [--udp] [ignored...]
//! egret-dns connect-each --port PORT [--marker M] IP...
//! egret-dns forge --from IP:PORT --a NAME=IP.. [--ask IP:PORT] NAME --port PORT
//! ```
//!
//! `server` answers A and AAAA questions from its table over UDP (and TCP with `--tcp`, with
//! the 2-byte length prefix, each answer written in one segment), like a real authoritative
//! server: owner names are compression pointers (to the question, or to the CNAME target written
//! out once in the previous record's data), `--cname` chains are followed and emitted before the
//! target's addresses, unknown names get NXDOMAIN. `--rotate NAME=CIDR` (a prefix of /8 to /24)
//! answers each question for NAME with the next address of the prefix (skipping addresses ending
//! in .0 and .255), so the address changes with every query. `--malformed NAME` answers NAME with
//! broken responses (QR set, the query's id), cycling through: truncated in the middle of a
//! record, an owner name that is a compression pointer to itself, an A record with rdlength 3,
//! and garbage after the header; the first three start with a valid A record for 127.0.0.66.
//! `--port 0` binds a free port (UDP and, with `--tcp`, TCP on the same number). Once bound it
//! prints `ready <port>` on stdout; it runs until killed (and dies with its parent).
//!
//! `resolve` sends one question (A, or AAAA with `--aaaa`) and prints the addresses it
//! resolves to (following the CNAME chain in the answer), one per line; it exits non-zero on a
//! timeout, an error response, a malformed answer or no address.
//!
//! `server --twice NAME=IP` follows its UDP answer to an A question for NAME with a second
//! answer to the same query (same id and question) that says NAME is IP.
//!
//! `resolve-connect` runs `--count` (default 1) iterations of: resolve NAME (a new UDP socket
//! per query, or a TCP connection with `--tcp-dns`), then at once connect to the first address
//! (TCP; with `--udp` one datagram `sendto` from an unconnected socket), or with `--all` to every
//! address of the answer, in order (each refused one is named on stderr). With `--probe IP` each
//! successful iteration is followed by a TCP connect to `IP:--probe-port` (default `--port`), an
//! address no answer ever contained. It prints one line
//! `iterations=N ok=N eperm=N other=N probe_ok=N probe_eperm=N` (`other` includes failed
//! resolutions; `probe_ok` counts probes the kernel did not refuse, whatever happened next) and
//! exits 0. With `--list` it first prints, for each connect, `connected=IP ok|eperm|other`.
//! With `--reconnect-after-ms MS` it then waits MS and connects once more to the last
//! address without asking again, and prints `reconnect=ok|eperm|other`. With `--linger-ms MS`
//! each UDP query's socket stays open MS after its answer (a later answer still reaches it).
//!
//! `connect` connects once (TCP, or one datagram with `--udp`); on failure it prints
//! `errno=<N>` and exits 1.
//!
//! `connect-each` connects (TCP) to each IP on PORT in turn and prints `IP ok|eperm|other` for
//! each, then `ok=N eperm=N other=N`; it exits 0 whatever the connects did. `--marker` is only
//! there to be found in the process's arguments.
//!
//! `forge` is a watched process answering itself: it binds a UDP socket on `--from` (a
//! resolver's address and port) and, from there, sends an answer for NAME (the `--a` records,
//! as `server` would write it) to another UDP socket of its own, which then connects (TCP) to
//! the first address of the answer on `--port`. Without `--ask` the receiving socket never
//! sent a question (an unsolicited answer); with `--ask` it first sends the question to that
//! server, and the forged answer (same id, same question) races the real one from another
//! address; both are received before the socket closes. It prints `forged=<IP>
//! connect=ok|eperm|other` once the forged answer arrived (exit 0), else fails.

use anyhow::{anyhow, bail, ensure, Context, Result};
use egret_e2e::net::set_linger_zero;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const USAGE: &str = "usage: egret-dns server --port P [--bind IP] [--ttl N] [--a NAME=IP].. [--aaaa NAME=IP].. \
                     [--cname ALIAS=TARGET].. [--rotate NAME=CIDR].. [--malformed NAME].. [--twice NAME=IP].. [--tcp] | \
                     resolve --server IP:PORT NAME [--aaaa] [--tcp] | \
                     resolve-connect --server IP:PORT NAME --port PORT [--count N] [--udp] [--aaaa] [--tcp-dns] [--all] [--list] \
                     [--probe IP] [--probe-port PORT] [--reconnect-after-ms MS] [--linger-ms MS] | \
                     connect IP PORT [--udp] | \
                     connect-each --port PORT [--marker M] IP.. | \
                     forge --from IP:PORT --a NAME=IP.. [--ask IP:PORT] NAME --port PORT";

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const RCODE_NOERROR: u16 = 0;
const RCODE_NXDOMAIN: u16 = 3;
/// Most CNAME hops the server follows (and the client accepts).
const MAX_HOPS: usize = 8;
/// Most compression pointers the client follows in one name.
const MAX_POINTERS: usize = 32;
/// How long the client waits for one answer, and how often it asks.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(1000);
const ATTEMPTS: usize = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Command line

/// Options (`--name value`), flags (`--name`) and positional arguments.
struct Args {
    positional: Vec<String>,
    options: Vec<(String, String)>,
    flags: Vec<String>,
}

impl Args {
    fn parse(args: &[String], with_value: &[&str], flags: &[&str], extra_ok: bool) -> Result<Self> {
        let mut out = Self {
            positional: Vec::new(),
            options: Vec::new(),
            flags: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if with_value.contains(&arg.as_str()) {
                let value = it
                    .next()
                    .with_context(|| format!("{arg} needs a value\n{USAGE}"))?;
                out.options.push((arg.clone(), value.clone()));
            } else if flags.contains(&arg.as_str()) {
                out.flags.push(arg.clone());
            } else if arg.starts_with("--") && !extra_ok {
                bail!("unknown option {arg:?}\n{USAGE}");
            } else {
                out.positional.push(arg.clone());
            }
        }
        Ok(out)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.options
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: Option<T>) -> Result<T> {
        match self.get(name) {
            Some(v) => v.parse().map_err(|_| anyhow!("bad {name} {v:?}")),
            None => default.with_context(|| format!("{name} is required\n{USAGE}")),
        }
    }

    fn positional(&self, i: usize, what: &str) -> Result<&str> {
        self.positional
            .get(i)
            .map(String::as_str)
            .with_context(|| format!("missing {what}\n{USAGE}"))
    }
}

fn split_pair<'a>(what: &str, s: &'a str) -> Result<(String, &'a str)> {
    let (name, value) = s
        .split_once('=')
        .with_context(|| format!("{what} wants NAME=VALUE, got {s:?}"))?;
    Ok((normalize(name), value))
}

/// Lower case, no trailing dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

// ---------------------------------------------------------------------------------------------
// Wire format

fn u8_at(msg: &[u8], pos: usize) -> Result<u8> {
    msg.get(pos)
        .copied()
        .ok_or_else(|| anyhow!("message ends at offset {pos}"))
}

fn u16_at(msg: &[u8], pos: usize) -> Result<u16> {
    Ok(u16::from_be_bytes([u8_at(msg, pos)?, u8_at(msg, pos + 1)?]))
}

fn u32_at(msg: &[u8], pos: usize) -> Result<u32> {
    Ok(u32::from_be_bytes([
        u8_at(msg, pos)?,
        u8_at(msg, pos + 1)?,
        u8_at(msg, pos + 2)?,
        u8_at(msg, pos + 3)?,
    ]))
}

fn bytes_at(msg: &[u8], pos: usize, len: usize) -> Result<&[u8]> {
    msg.get(pos..pos + len).ok_or_else(|| {
        anyhow!(
            "{len} byte(s) at offset {pos} are past the end ({})",
            msg.len()
        )
    })
}

fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_be_bytes());
}

/// A name in wire form, uncompressed.
fn encode_name(name: &str) -> Result<Vec<u8>> {
    let name = name.trim_end_matches('.');
    let mut out = Vec::with_capacity(name.len() + 2);
    if !name.is_empty() {
        for label in name.split('.') {
            let len = u8::try_from(label.len())
                .ok()
                .filter(|l| (1..=63).contains(l))
                .with_context(|| format!("bad label {label:?} in {name:?}"))?;
            out.push(len);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    ensure!(out.len() <= 255, "name {name:?} is too long");
    Ok(out)
}

/// Reads a possibly compressed name at `start`: (lower-case name, offset after it).
fn read_name(msg: &[u8], start: usize) -> Result<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut pos = start;
    let mut after = None;
    let mut pointers = 0;
    let mut wire_len = 0usize;
    loop {
        let len = u8_at(msg, pos)?;
        match len & 0xc0 {
            0xc0 => {
                let target = usize::from(u16_at(msg, pos)? & 0x3fff);
                after.get_or_insert(pos + 2);
                pointers += 1;
                ensure!(
                    pointers <= MAX_POINTERS,
                    "compression pointer loop in the name at offset {start}"
                );
                pos = target;
            }
            0 if len == 0 => {
                return Ok((labels.join("."), after.unwrap_or(pos + 1)));
            }
            0 => {
                let label = bytes_at(msg, pos + 1, usize::from(len))?;
                wire_len += label.len() + 1;
                ensure!(wire_len <= 255, "name at offset {start} is too long");
                labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                pos += 1 + usize::from(len);
            }
            _ => bail!("bad label length byte {len:#04x} at offset {pos}"),
        }
    }
}

/// A query: `id`, `flags`, one question (RD set).
fn build_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>> {
    let mut q = Vec::with_capacity(64);
    put_u16(&mut q, id);
    put_u16(&mut q, 0x0100);
    put_u16(&mut q, 1);
    put_u16(&mut q, 0);
    put_u16(&mut q, 0);
    put_u16(&mut q, 0);
    q.extend_from_slice(&encode_name(name)?);
    put_u16(&mut q, qtype);
    put_u16(&mut q, CLASS_IN);
    Ok(q)
}

#[derive(Debug)]
enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Other,
}

#[derive(Debug)]
struct Record {
    name: String,
    data: RData,
}

#[derive(Debug)]
struct Response {
    rcode: u16,
    answers: Vec<Record>,
}

/// Parses a response strictly (every record must be whole and well-formed).
fn parse_response(msg: &[u8], id: u16) -> Result<Response> {
    ensure!(
        msg.len() >= 12,
        "answer of {} bytes is shorter than a header",
        msg.len()
    );
    ensure!(u16_at(msg, 0)? == id, "answer has another id");
    let flags = u16_at(msg, 2)?;
    ensure!(flags & 0x8000 != 0, "not a response (QR clear)");
    let qdcount = u16_at(msg, 4)?;
    let ancount = u16_at(msg, 6)?;
    let mut pos = 12;
    for _ in 0..qdcount {
        let (_, after) = read_name(msg, pos)?;
        pos = after + 4;
    }
    let mut answers = Vec::new();
    for _ in 0..ancount {
        let (name, after) = read_name(msg, pos)?;
        let rtype = u16_at(msg, after)?;
        let _class = u16_at(msg, after + 2)?;
        let _ttl = u32_at(msg, after + 4)?;
        let rdlen = usize::from(u16_at(msg, after + 8)?);
        let rdata_at = after + 10;
        let rdata = bytes_at(msg, rdata_at, rdlen)?;
        let data = match rtype {
            TYPE_A => {
                let octets: [u8; 4] = rdata
                    .try_into()
                    .map_err(|_| anyhow!("A record with {rdlen} bytes of data"))?;
                RData::A(Ipv4Addr::from(octets))
            }
            TYPE_AAAA => {
                let octets: [u8; 16] = rdata
                    .try_into()
                    .map_err(|_| anyhow!("AAAA record with {rdlen} bytes of data"))?;
                RData::Aaaa(Ipv6Addr::from(octets))
            }
            TYPE_CNAME => {
                let (target, end) = read_name(msg, rdata_at)?;
                ensure!(end == rdata_at + rdlen, "CNAME data is not one name");
                RData::Cname(target)
            }
            _ => RData::Other,
        };
        answers.push(Record { name, data });
        pos = rdata_at + rdlen;
    }
    Ok(Response {
        rcode: flags & 0x000f,
        answers,
    })
}

/// The addresses `name` resolves to in `response`, following its CNAME chain.
fn addresses(response: &Response, name: &str, qtype: u16) -> Vec<IpAddr> {
    let mut chain = vec![normalize(name)];
    for _ in 0..MAX_HOPS {
        let Some(current) = chain.last() else { break };
        let next = response.answers.iter().find_map(|r| match &r.data {
            RData::Cname(target) if r.name == *current => Some(target.clone()),
            _ => None,
        });
        match next {
            Some(target) if !chain.contains(&target) => chain.push(target),
            _ => break,
        }
    }
    response
        .answers
        .iter()
        .filter(|r| chain.contains(&r.name))
        .filter_map(|r| match r.data {
            RData::A(v4) if qtype == TYPE_A => Some(IpAddr::V4(v4)),
            RData::Aaaa(v6) if qtype == TYPE_AAAA => Some(IpAddr::V6(v6)),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Server

struct Rotate {
    base: u32,
    size: u32,
    next: u32,
}

impl Rotate {
    fn parse(cidr: &str) -> Result<Self> {
        let (ip, len) = cidr
            .split_once('/')
            .with_context(|| format!("--rotate wants NAME=A.B.C.D/LEN, got {cidr:?}"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .with_context(|| format!("bad address in {cidr:?}"))?;
        let len: u32 = len
            .parse()
            .with_context(|| format!("bad length in {cidr:?}"))?;
        ensure!(
            (8..=24).contains(&len),
            "--rotate prefix must be /8 to /24: {cidr:?}"
        );
        let size = 1u32 << (32 - len);
        let base = u32::from(ip);
        ensure!(base & (size - 1) == 0, "{cidr:?} has host bits set");
        Ok(Self {
            base,
            size,
            next: 0,
        })
    }

    /// The next address, skipping those ending in .0 and .255.
    fn next(&mut self) -> Ipv4Addr {
        loop {
            let addr = self.base + self.next % self.size;
            self.next = self.next.wrapping_add(1);
            if !matches!(addr & 0xff, 0 | 255) {
                return Ipv4Addr::from(addr);
            }
        }
    }
}

#[derive(Default)]
struct Table {
    ttl: u32,
    a: HashMap<String, Vec<Ipv4Addr>>,
    aaaa: HashMap<String, Vec<Ipv6Addr>>,
    cname: HashMap<String, String>,
    rotate: HashMap<String, Rotate>,
    malformed: Vec<String>,
    /// `--twice`: the address a second answer gives for a name.
    twice: HashMap<String, Ipv4Addr>,
    /// How many malformed answers were sent (picks the next variant).
    malformed_sent: usize,
}

impl Table {
    fn from_args(args: &Args) -> Result<Self> {
        let mut t = Self {
            ttl: args.number("--ttl", Some(60))?,
            ..Self::default()
        };
        for s in args.all("--a") {
            let (name, ip) = split_pair("--a", s)?;
            let ip: Ipv4Addr = ip.parse().with_context(|| format!("bad --a {s:?}"))?;
            t.a.entry(name).or_default().push(ip);
        }
        for s in args.all("--aaaa") {
            let (name, ip) = split_pair("--aaaa", s)?;
            let ip: Ipv6Addr = ip.parse().with_context(|| format!("bad --aaaa {s:?}"))?;
            t.aaaa.entry(name).or_default().push(ip);
        }
        for s in args.all("--cname") {
            let (alias, target) = split_pair("--cname", s)?;
            encode_name(target)?;
            t.cname.insert(alias, normalize(target));
        }
        for s in args.all("--rotate") {
            let (name, cidr) = split_pair("--rotate", s)?;
            t.rotate.insert(name, Rotate::parse(cidr)?);
        }
        t.malformed = args.all("--malformed").map(normalize).collect();
        for s in args.all("--twice") {
            let (name, ip) = split_pair("--twice", s)?;
            t.twice.insert(
                name,
                ip.parse().with_context(|| format!("bad --twice {s:?}"))?,
            );
        }
        Ok(t)
    }

    /// `--twice`: the second answer to `query`, when its name has one.
    fn second_answer(&mut self, query: &[u8]) -> Result<Option<Vec<u8>>> {
        let (name, after) = read_name(query, 12)?;
        let Some(ip) = self.twice.get(&name).copied() else {
            return Ok(None);
        };
        if u16_at(query, after)? != TYPE_A {
            return Ok(None);
        }
        let first = self.a.insert(name.clone(), vec![ip]);
        let second = self.answer(query);
        match first {
            Some(first) => self.a.insert(name, first),
            None => self.a.remove(&name),
        };
        second.map(Some)
    }

    fn knows(&self, name: &str) -> bool {
        self.a.contains_key(name) || self.aaaa.contains_key(name) || self.rotate.contains_key(name)
    }

    /// The answer to `query` (an error for something that is not a query to answer).
    fn answer(&mut self, query: &[u8]) -> Result<Vec<u8>> {
        let id = u16_at(query, 0)?;
        let flags = u16_at(query, 2)?;
        ensure!(flags & 0x8000 == 0, "a response, not a query");
        ensure!(u16_at(query, 4)? == 1, "not exactly one question");
        let (name, after) = read_name(query, 12)?;
        let qtype = u16_at(query, after)?;
        let question = bytes_at(query, 12, after + 4 - 12)?;
        // QR, the query's opcode and RD, AA and RA.
        let base_flags = 0x8000 | (flags & 0x7900) | 0x0400 | 0x0080;

        if self.malformed.contains(&name) {
            let variant = self.malformed_sent % 4;
            self.malformed_sent += 1;
            return malformed(variant, id, base_flags, question, self.ttl);
        }

        let mut out = Vec::with_capacity(512);
        put_u16(&mut out, id);
        put_u16(&mut out, 0); // flags, set below
        put_u16(&mut out, 1);
        put_u16(&mut out, 0); // ancount, set below
        put_u16(&mut out, 0);
        put_u16(&mut out, 0);
        out.extend_from_slice(question);
        let mut ancount: u16 = 0;
        // Owner of the next record: the question, then each CNAME target where it was written.
        let mut owner = 12usize;
        let mut current = name.clone();
        for _ in 0..MAX_HOPS {
            let Some(target) = self.cname.get(&current).cloned() else {
                break;
            };
            put_record_header(&mut out, owner, TYPE_CNAME, self.ttl)?;
            let target_wire = encode_name(&target)?;
            put_u16(&mut out, u16::try_from(target_wire.len())?);
            owner = out.len();
            out.extend_from_slice(&target_wire);
            ancount += 1;
            current = target;
        }
        let rcode = if self.knows(&current) {
            RCODE_NOERROR
        } else {
            RCODE_NXDOMAIN
        };
        if qtype == TYPE_A {
            let mut addrs = self.a.get(&current).cloned().unwrap_or_default();
            if let Some(r) = self.rotate.get_mut(&current) {
                addrs.push(r.next());
            }
            for ip in addrs {
                put_record_header(&mut out, owner, TYPE_A, self.ttl)?;
                put_u16(&mut out, 4);
                out.extend_from_slice(&ip.octets());
                ancount += 1;
            }
        } else if qtype == TYPE_AAAA {
            for ip in self.aaaa.get(&current).cloned().unwrap_or_default() {
                put_record_header(&mut out, owner, TYPE_AAAA, self.ttl)?;
                put_u16(&mut out, 16);
                out.extend_from_slice(&ip.octets());
                ancount += 1;
            }
        }
        set_u16(&mut out, 2, base_flags | rcode)?;
        set_u16(&mut out, 6, ancount)?;
        Ok(out)
    }
}

fn set_u16(buf: &mut [u8], at: usize, v: u16) -> Result<()> {
    buf.get_mut(at..at + 2)
        .with_context(|| format!("offset {at} past the end"))?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Owner (a compression pointer to `owner`), type, class IN, TTL; rdlength follows.
fn put_record_header(out: &mut Vec<u8>, owner: usize, rtype: u16, ttl: u32) -> Result<()> {
    let ptr = u16::try_from(owner)
        .ok()
        .filter(|p| *p < 0x4000)
        .with_context(|| format!("offset {owner} cannot be pointed to"))?;
    put_u16(out, 0xc000 | ptr);
    put_u16(out, rtype);
    put_u16(out, CLASS_IN);
    put_u32(out, ttl);
    Ok(())
}

/// A broken answer (see the module documentation for the variants).
fn malformed(variant: usize, id: u16, flags: u16, question: &[u8], ttl: u32) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    put_u16(&mut out, id);
    put_u16(&mut out, flags);
    put_u16(&mut out, 1);
    put_u16(&mut out, if variant == 3 { 1 } else { 2 });
    put_u16(&mut out, 0);
    put_u16(&mut out, 0);
    if variant == 3 {
        // Garbage after the header: a length byte of the reserved label type, then noise.
        out.extend_from_slice(&[
            0x7f, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0xff, 0xc0, 0x02, 0x41, 0x41, 0x41, 0x41,
            0x00, 0x00, 0x00, 0x01,
        ]);
        return Ok(out);
    }
    out.extend_from_slice(question);
    // A valid first record, so a parser that keeps what came before the damage would learn it.
    put_record_header(&mut out, 12, TYPE_A, ttl)?;
    put_u16(&mut out, 4);
    out.extend_from_slice(&[127, 0, 0, 66]);
    match variant {
        0 => {
            // Truncated in the middle of the second record's data.
            put_record_header(&mut out, 12, TYPE_A, ttl)?;
            put_u16(&mut out, 4);
            out.extend_from_slice(&[127, 0]);
        }
        1 => {
            // The owner name is a compression pointer to itself.
            let here = out.len();
            put_record_header(&mut out, here, TYPE_A, ttl)?;
            put_u16(&mut out, 4);
            out.extend_from_slice(&[127, 0, 0, 67]);
        }
        _ => {
            // An A record with 3 bytes of data.
            put_record_header(&mut out, 12, TYPE_A, ttl)?;
            put_u16(&mut out, 3);
            out.extend_from_slice(&[127, 0, 0]);
        }
    }
    Ok(out)
}

fn lock(table: &Mutex<Table>) -> Result<std::sync::MutexGuard<'_, Table>> {
    table.lock().map_err(|_| anyhow!("table lock poisoned"))
}

fn serve_tcp_connection(mut s: TcpStream, table: &Mutex<Table>) -> Result<()> {
    s.set_nodelay(true)?;
    loop {
        let mut len = [0u8; 2];
        match s.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut query)?;
        let answer = lock(table)?.answer(&query)?;
        // Length and message in one write: one segment, as the kernel program expects.
        let mut framed = Vec::with_capacity(answer.len() + 2);
        put_u16(&mut framed, u16::try_from(answer.len())?);
        framed.extend_from_slice(&answer);
        s.write_all(&framed)?;
    }
}

fn bind_both(bind: IpAddr, port: u16, tcp: bool) -> Result<(UdpSocket, Option<TcpListener>)> {
    for _ in 0..50 {
        let udp = UdpSocket::bind(SocketAddr::new(bind, port))
            .with_context(|| format!("bind udp {bind}:{port}"))?;
        if !tcp {
            return Ok((udp, None));
        }
        let got = udp.local_addr()?;
        match TcpListener::bind(got) {
            Ok(listener) => return Ok((udp, Some(listener))),
            Err(e) if port == 0 && e.kind() == ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e).with_context(|| format!("bind tcp {got}")),
        }
    }
    bail!("no port free for both UDP and TCP")
}

fn server(args: &[String]) -> Result<()> {
    let args = Args::parse(
        args,
        &[
            "--port",
            "--bind",
            "--ttl",
            "--a",
            "--aaaa",
            "--cname",
            "--rotate",
            "--malformed",
            "--twice",
        ],
        &["--tcp"],
        false,
    )?;
    // Die with the test that started us, even if it could not kill us.
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
    let port: u16 = args.number("--port", None)?;
    let bind: IpAddr = args.number("--bind", Some(IpAddr::V4(Ipv4Addr::LOCALHOST)))?;
    let table = Arc::new(Mutex::new(Table::from_args(&args)?));
    let (udp, tcp) = bind_both(bind, port, args.flag("--tcp"))?;
    if let Some(listener) = tcp {
        let table = table.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let table = table.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve_tcp_connection(conn, &table) {
                        eprintln!("egret-dns server: tcp: {e:#}");
                    }
                });
            }
        });
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready {}", udp.local_addr()?.port())?;
    stdout.flush()?;
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = match udp.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("recv"),
        };
        let answer = buf
            .get(..n)
            .context("recv length")
            .and_then(|q| lock(&table)?.answer(q));
        match answer {
            Ok(a) => {
                if let Err(e) = udp.send_to(&a, from) {
                    eprintln!("egret-dns server: send to {from}: {e}");
                }
                let second = buf
                    .get(..n)
                    .context("recv length")
                    .and_then(|q| lock(&table)?.second_answer(q));
                match second {
                    Ok(Some(a)) => {
                        if let Err(e) = udp.send_to(&a, from) {
                            eprintln!("egret-dns server: send to {from}: {e}");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => eprintln!("egret-dns server: second answer to {from}: {e:#}"),
                }
            }
            Err(e) => eprintln!("egret-dns server: query from {from}: {e:#}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client

fn unspecified(like: SocketAddr) -> SocketAddr {
    match like {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

/// A query id that differs between processes and calls.
fn query_id(n: u64) -> u16 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed = u64::from(std::process::id()) ^ u64::from(nanos) ^ n.wrapping_mul(0x9e37);
    (mixed & 0xffff) as u16
}

/// Sends `query` from a new UDP socket and returns the matching answer.
fn exchange_udp(server: SocketAddr, query: &[u8], id: u16, linger: Duration) -> Result<Vec<u8>> {
    let sock = UdpSocket::bind(unspecified(server)).context("udp socket")?;
    sock.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let mut buf = [0u8; 1500];
    for _ in 0..ATTEMPTS {
        sock.send_to(query, server)
            .with_context(|| format!("send query to {server}"))?;
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let msg = buf.get(..n).context("recv length")?;
                    if from == server && u16_at(msg, 0).ok() == Some(id) {
                        let answer = msg.to_vec();
                        std::thread::sleep(linger);
                        return Ok(answer);
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).with_context(|| format!("receive from {server}")),
            }
        }
    }
    bail!("no answer from {server} after {ATTEMPTS} tries")
}

/// Sends `query` over a new TCP connection (length-prefixed) and returns the answer.
fn exchange_tcp(server: SocketAddr, query: &[u8]) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&server, CONNECT_TIMEOUT)
        .with_context(|| format!("connect tcp {server}"))?;
    s.set_read_timeout(Some(ANSWER_TIMEOUT * 3))?;
    s.set_nodelay(true)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    put_u16(&mut framed, u16::try_from(query.len())?);
    framed.extend_from_slice(query);
    s.write_all(&framed).context("send query")?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).context("read answer length")?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut answer).context("read answer")?;
    Ok(answer)
}

fn resolve(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    tcp: bool,
    n: u64,
    linger: Duration,
) -> Result<Vec<IpAddr>> {
    let id = query_id(n);
    let query = build_query(id, name, qtype)?;
    let answer = if tcp {
        exchange_tcp(server, &query)?
    } else {
        exchange_udp(server, &query, id, linger)?
    };
    let response = parse_response(&answer, id).with_context(|| format!("answer for {name}"))?;
    ensure!(
        response.rcode == RCODE_NOERROR,
        "{name}: response code {}",
        response.rcode
    );
    let found = addresses(&response, name, qtype);
    ensure!(!found.is_empty(), "{name}: no address in the answer");
    Ok(found)
}

/// Connects once (TCP) or sends one datagram from a new unconnected socket (UDP).
fn connect_once(to: SocketAddr, udp: bool) -> std::io::Result<()> {
    if udp {
        let s = UdpSocket::bind(unspecified(to))?;
        s.send_to(b"x", to)?;
    } else {
        let s = TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)?;
        set_linger_zero(&s);
    }
    Ok(())
}

/// `ok`, `eperm` (the kernel refused) or `other`.
fn outcome(r: &std::io::Result<()>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => "eperm",
        Err(_) => "other",
    }
}

#[derive(Default)]
struct Counts {
    ok: u64,
    eperm: u64,
    other: u64,
}

impl Counts {
    fn add(&mut self, r: &std::io::Result<()>) {
        match outcome(r) {
            "ok" => self.ok += 1,
            "eperm" => self.eperm += 1,
            _ => self.other += 1,
        }
    }
}

fn server_arg(args: &Args) -> Result<SocketAddr> {
    let s = args
        .get("--server")
        .with_context(|| format!("--server is required\n{USAGE}"))?;
    s.parse().with_context(|| format!("bad --server {s:?}"))
}

fn cmd_resolve(args: &[String]) -> Result<()> {
    let args = Args::parse(args, &["--server"], &["--aaaa", "--tcp"], false)?;
    let server = server_arg(&args)?;
    let name = args.positional(0, "NAME")?;
    let qtype = if args.flag("--aaaa") {
        TYPE_AAAA
    } else {
        TYPE_A
    };
    for ip in resolve(server, name, qtype, args.flag("--tcp"), 0, Duration::ZERO)? {
        println!("{ip}");
    }
    Ok(())
}

fn cmd_resolve_connect(args: &[String]) -> Result<()> {
    let args = Args::parse(
        args,
        &[
            "--server",
            "--port",
            "--count",
            "--probe",
            "--probe-port",
            "--reconnect-after-ms",
            "--linger-ms",
        ],
        &["--udp", "--aaaa", "--tcp-dns", "--all", "--list"],
        false,
    )?;
    let server = server_arg(&args)?;
    let name = args.positional(0, "NAME")?;
    let port: u16 = args.number("--port", None)?;
    let count: u64 = args.number("--count", Some(1))?;
    let probe: Option<IpAddr> = match args.get("--probe") {
        Some(p) => Some(p.parse().with_context(|| format!("bad --probe {p:?}"))?),
        None => None,
    };
    let probe_port: u16 = args.number("--probe-port", Some(port))?;
    let reconnect: Option<u64> = match args.get("--reconnect-after-ms") {
        Some(_) => Some(args.number("--reconnect-after-ms", None)?),
        None => None,
    };
    let linger = Duration::from_millis(args.number("--linger-ms", Some(0))?);
    let (udp, tcp_dns, all, list) = (
        args.flag("--udp"),
        args.flag("--tcp-dns"),
        args.flag("--all"),
        args.flag("--list"),
    );
    let qtype = if args.flag("--aaaa") {
        TYPE_AAAA
    } else {
        TYPE_A
    };

    let (mut main, mut probes) = (Counts::default(), Counts::default());
    let mut last = None;
    let mut reported = 0;
    for i in 0..count {
        let found = match resolve(server, name, qtype, tcp_dns, i, linger) {
            Ok(found) => found,
            Err(e) => {
                if reported < 5 {
                    eprintln!("egret-dns: iteration {i}: {e:#}");
                    reported += 1;
                }
                main.other += 1;
                continue;
            }
        };
        let targets = if all {
            found.as_slice()
        } else {
            found.get(..1).unwrap_or_default()
        };
        let mut first = None;
        for ip in targets {
            let to = SocketAddr::new(*ip, port);
            last = Some(to);
            let r = connect_once(to, udp);
            if let Err(e) = &r {
                if all || (reported < 5 && e.raw_os_error() != Some(libc::EPERM)) {
                    eprintln!("egret-dns: iteration {i}: {to}: {e}");
                    reported += 1;
                }
            }
            if list {
                println!("connected={ip} {}", outcome(&r));
            }
            main.add(&r);
            first.get_or_insert(r.is_ok());
        }
        if let (Some(true), Some(probe)) = (first, probe) {
            let r = connect_once(SocketAddr::new(probe, probe_port), false);
            // Anything but EPERM means the kernel let the probe through.
            probes.add(&r.or_else(|e| {
                if e.raw_os_error() == Some(libc::EPERM) {
                    Err(e)
                } else {
                    Ok(())
                }
            }));
        }
    }
    println!(
        "iterations={count} ok={} eperm={} other={} probe_ok={} probe_eperm={}",
        main.ok, main.eperm, main.other, probes.ok, probes.eperm
    );
    if let Some(ms) = reconnect {
        std::thread::sleep(Duration::from_millis(ms));
        let to = last.context("nothing resolved, nothing to reconnect to")?;
        println!("reconnect={}", outcome(&connect_once(to, udp)));
    }
    std::io::stdout().flush()?;
    Ok(())
}

fn cmd_connect(args: &[String]) -> Result<()> {
    let args = Args::parse(args, &[], &["--udp"], true)?;
    let ip: IpAddr = args.positional(0, "IP")?.parse().context("bad IP")?;
    let port: u16 = args.positional(1, "PORT")?.parse().context("bad PORT")?;
    let to = SocketAddr::new(ip, port);
    if let Err(e) = connect_once(to, args.flag("--udp")) {
        if let Some(errno) = e.raw_os_error() {
            println!("errno={errno}");
        }
        return Err(e).with_context(|| format!("connect {to}"));
    }
    Ok(())
}

fn cmd_connect_each(args: &[String]) -> Result<()> {
    let args = Args::parse(args, &["--port", "--marker"], &[], false)?;
    let port: u16 = args.number("--port", None)?;
    ensure!(!args.positional.is_empty(), "missing IP\n{USAGE}");
    let mut counts = Counts::default();
    for ip in &args.positional {
        let ip: IpAddr = ip.parse().with_context(|| format!("bad IP {ip:?}"))?;
        let r = connect_once(SocketAddr::new(ip, port), false);
        println!("{ip} {}", outcome(&r));
        counts.add(&r);
    }
    println!(
        "ok={} eperm={} other={}",
        counts.ok, counts.eperm, counts.other
    );
    std::io::stdout().flush()?;
    Ok(())
}

fn cmd_forge(args: &[String]) -> Result<()> {
    let args = Args::parse(
        args,
        &["--from", "--a", "--ask", "--port", "--ttl"],
        &[],
        false,
    )?;
    let from: SocketAddr = args
        .get("--from")
        .with_context(|| format!("--from is required\n{USAGE}"))?
        .parse()
        .context("bad --from")?;
    let ask: Option<SocketAddr> = match args.get("--ask") {
        Some(a) => Some(a.parse().with_context(|| format!("bad --ask {a:?}"))?),
        None => None,
    };
    let name = args.positional(0, "NAME")?;
    let port: u16 = args.number("--port", None)?;
    let mut table = Table::from_args(&args)?;
    // The forger's socket, on the resolver's port, and the one that receives the answer.
    let forger = UdpSocket::bind(from).with_context(|| format!("bind udp {from}"))?;
    let receiver = UdpSocket::bind(SocketAddr::new(from.ip(), 0))
        .or_else(|_| UdpSocket::bind(unspecified(from)))
        .context("bind the receiving socket")?;
    let to = receiver.local_addr()?;
    let to = SocketAddr::new(
        if to.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            to.ip()
        },
        to.port(),
    );
    let id = query_id(7);
    let query = build_query(id, name, TYPE_A)?;
    if let Some(server) = ask {
        receiver
            .send_to(&query, server)
            .with_context(|| format!("send the question to {server}"))?;
    }
    let answer = table.answer(&query)?;
    forger
        .send_to(&answer, to)
        .with_context(|| format!("send the forged answer from {from} to {to}"))?;
    receiver.set_read_timeout(Some(ANSWER_TIMEOUT * 2))?;
    let mut buf = [0u8; 1500];
    // With `--ask`, the real answer must reach this socket too (before it is closed), however
    // the two race: the test looks for it.
    let mut real_pending = ask.is_some();
    let mut forged = None;
    while forged.is_none() || real_pending {
        let (n, src) = receiver.recv_from(&mut buf).context(if forged.is_none() {
            "the forged answer did not arrive"
        } else {
            "the real answer did not arrive"
        })?;
        if src == from && forged.is_none() {
            let msg = buf.get(..n).context("recv length")?;
            let response = parse_response(msg, id).context("the forged answer")?;
            forged = Some(
                addresses(&response, name, TYPE_A)
                    .first()
                    .copied()
                    .with_context(|| format!("no address for {name} in the forged answer"))?,
            );
        } else if Some(src) == ask {
            real_pending = false;
        }
    }
    let forged = forged.context("the forged answer did not arrive")?;
    let what = match connect_once(SocketAddr::new(forged, port), false) {
        Ok(()) => "ok",
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => "eperm",
        Err(e) => {
            eprintln!("egret-dns: forge: connect {forged}:{port}: {e}");
            "other"
        }
    };
    println!("forged={forged} connect={what}");
    std::io::stdout().flush()?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    let result = match args.first().map(String::as_str) {
        Some("server") => server(rest),
        Some("resolve") => cmd_resolve(rest),
        Some("resolve-connect") => cmd_resolve_connect(rest),
        Some("connect") => cmd_connect(rest),
        Some("connect-each") => cmd_connect_each(rest),
        Some("forge") => cmd_forge(rest),
        _ => Err(anyhow!("{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("egret-dns: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(args: &[&str]) -> Table {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let parsed = Args::parse(
            &args,
            &[
                "--ttl",
                "--a",
                "--aaaa",
                "--cname",
                "--rotate",
                "--malformed",
                "--twice",
            ],
            &[],
            false,
        )
        .unwrap();
        Table::from_args(&parsed).unwrap()
    }

    #[test]
    fn cname_chain_is_compressed_and_resolves() {
        let mut t = table(&[
            "--cname",
            "alias.test=mid.test",
            "--cname",
            "mid.test=target.test",
            "--a",
            "target.test=127.0.0.5",
        ]);
        let q = build_query(7, "Alias.Test", TYPE_A).unwrap();
        let a = t.answer(&q).unwrap();
        let r = parse_response(&a, 7).unwrap();
        assert_eq!(r.rcode, RCODE_NOERROR);
        assert_eq!(r.answers.len(), 3);
        assert_eq!(
            addresses(&r, "alias.test", TYPE_A),
            vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5))]
        );
        // The first owner is a pointer to the question.
        let qlen = q.len();
        assert_eq!(&a[qlen..qlen + 2], &[0xc0, 0x0c]);
        // Each target name is written once.
        let target = encode_name("target.test").unwrap();
        assert_eq!(a.windows(target.len()).filter(|w| *w == target).count(), 1);
    }

    #[test]
    fn nxdomain_aaaa_and_rotate() {
        let mut t = table(&["--aaaa", "six.test=::1", "--rotate", "r.test=127.0.1.0/24"]);
        let a = t
            .answer(&build_query(1, "nope.test", TYPE_A).unwrap())
            .unwrap();
        assert_eq!(parse_response(&a, 1).unwrap().rcode, RCODE_NXDOMAIN);
        let a = t
            .answer(&build_query(2, "six.test", TYPE_AAAA).unwrap())
            .unwrap();
        let r = parse_response(&a, 2).unwrap();
        assert_eq!(
            addresses(&r, "six.test", TYPE_AAAA),
            vec!["::1".parse::<IpAddr>().unwrap()]
        );
        let mut seen = Vec::new();
        for i in 0..300 {
            let a = t
                .answer(&build_query(i, "r.test", TYPE_A).unwrap())
                .unwrap();
            let r = parse_response(&a, i).unwrap();
            seen.extend(addresses(&r, "r.test", TYPE_A));
        }
        assert_eq!(seen[0], "127.0.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(seen[253], "127.0.1.254".parse::<IpAddr>().unwrap());
        assert_eq!(seen[254], "127.0.1.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn malformed_variants_do_not_parse() {
        let mut t = table(&["--malformed", "bad.test"]);
        for i in 0..4 {
            let a = t
                .answer(&build_query(i, "bad.test", TYPE_A).unwrap())
                .unwrap();
            assert_eq!(a[2] & 0x80, 0x80, "QR set");
            assert!(parse_response(&a, i).is_err(), "variant {i} parsed");
        }
    }
}
