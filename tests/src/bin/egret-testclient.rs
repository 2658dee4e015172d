//! Tiny network client used by the end-to-end tests and the benchmark.
//!
//! ```text
//! egret-testclient tcp <ADDR> <PORT> [ignored...]
//! egret-testclient udp-connect <ADDR> <PORT> [ignored...]
//! egret-testclient udp-send <ADDR> <PORT> [--count N] [--size BYTES] [ignored...]
//! egret-testclient udp-exchange <ADDR> <PORT> --count N --size BYTES [--interval-ms MS] [ignored...]
//! egret-testclient tcp-exchange <ADDR> <PORT> --send BYTES [--hold-ms MS] [--hold-until-file PATH]
//!                               [--half-close] [ignored...]
//! egret-testclient sleep-then-tcp <MS> <ADDR> <PORT> [ignored...]
//! egret-testclient file-then-tcp <PATH> <ADDR> <PORT> [ignored...]
//! egret-testclient tcp-loop [ADDR | --addr 127.0.0.1] [--duration-ms N]
//! egret-testclient request-loop [ADDR | --addr 127.0.0.1] [--duration-ms N]
//! egret-testclient udp-loop [ADDR | --addr 127.0.0.1] [--duration-ms N]
//! egret-testclient connect-loop [--duration-ms N | --count N] [--interval-ms N]
//!                               [--status-file PATH] [--stop-file PATH] [--udp] ADDR PORT...
//! egret-testclient reexec <SUBCOMMAND> [ARGS...]
//! egret-testclient tcp-hold <ADDR> <PORT> --count N [ignored...]
//! egret-testclient udp-spray <ADDR> <FIRST_PORT> --ports N [ignored...]
//! egret-testclient spawn-loop --rate PER_SEC --duration-ms MS [--threads N] PROGRAM [ARGS...]
//! ```
//! The floods: `tcp-hold` opens N connections, all open at once, then closes them (normal
//! close) and prints `held=<N>`. `udp-spray` sends one datagram from one socket to each of N
//! ports from FIRST_PORT on (N flows), then closes the socket; prints `sent=<N>`.
//! `spawn-loop` runs PROGRAM (short-lived) PER_SEC times a second for MS, from N threads
//! (default 2), reaping as it goes,
//! and prints `spawned=<N> elapsed_ns=<T>`.
//! `reexec` runs itself again through `/proc/self/exe` (as busybox applets and Go programs
//! do) with the rest of the arguments.
//!
//! Extra trailing arguments of the one-shot commands are ignored (they may be any bytes,
//! not only UTF-8) so tests can put a unique marker, or odd arguments, into argv. Exits
//! non-zero with a message on failure; when
//! the failure is a system call's error, stdout gets one line `errno=<N>` (1 is
//! EPERM, what a policy in block mode returns).
//!
//! `tcp-exchange` connects, sends BYTES, waits MS (and until PATH exists, at most 2 min), then (with `--half-close`) shuts its side
//! down first, reads until the server closes and prints `received=<N>`. `udp-exchange` sends N
//! datagrams of BYTES from a connected socket and reads one reply after each, printing
//! `replies=<N>`.
//!
//! The loops print `ops=<N> elapsed_ns=<T>`. `tcp-loop` connects and resets, not a byte sent;
//! `request-loop` sends an HTTP/1.1 GET on each connection and reads a `200` answer from
//! the server side (the same thread) first. `udp-loop` sends one datagram from a new socket.
//!
//! `connect-loop` connects (TCP, or with `--udp` sends one datagram from a new
//! socket) to every PORT in turn, a round every `--interval-ms` (default 10), for
//! `--duration-ms` (default 1000) or `--count` rounds or until `--stop-file` exists,
//! and counts per port what
//! happened. At the end, and every 100 ms into `--status-file` (replaced
//! atomically), it writes one line per port: `port=<P> ok=<N> eperm=<N> other=<N>`.

use anyhow::{bail, Context, Result};
use egret_e2e::net::set_linger_zero;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: egret-testclient (tcp|udp-connect) ADDR PORT [..] | udp-send ADDR PORT [--count N] [--size B] [..] | \
                     udp-exchange ADDR PORT --count N --size B [..] | tcp-exchange ADDR PORT --send B [--hold-ms MS] [--half-close] [..] | \
                     sleep-then-tcp MS ADDR PORT [..] | file-then-tcp PATH ADDR PORT [..] | (tcp-loop|request-loop|udp-loop) [ADDR] [--duration-ms N] | \
                     connect-loop [--duration-ms N | --count N] [--interval-ms N] [--status-file PATH] [--stop-file PATH] [--udp] ADDR PORT...";

fn dest(args: &[String]) -> Result<SocketAddr> {
    let (Some(addr), Some(port)) = (args.first(), args.get(1)) else {
        bail!("missing ADDR PORT\n{USAGE}");
    };
    let ip: IpAddr = addr
        .parse()
        .with_context(|| format!("bad address {addr:?}"))?;
    let port: u16 = port.parse().with_context(|| format!("bad port {port:?}"))?;
    Ok(SocketAddr::new(ip, port))
}

/// The value after `--name` anywhere in `args`.
fn opt<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// A numeric `--name N` option, or `default`.
fn num_opt<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T> {
    match opt(args, name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("bad {name} {v:?}\n{USAGE}")),
    }
}

fn unspecified(like: SocketAddr) -> SocketAddr {
    match like {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0),
    }
}

fn tcp(to: SocketAddr) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(10))
        .with_context(|| format!("connect tcp {to}"))?;
    s.write_all(b"x")
        .with_context(|| format!("write to {to}"))?;
    Ok(())
}

fn udp_connect(to: SocketAddr) -> Result<()> {
    let s = UdpSocket::bind(unspecified(to)).context("bind udp")?;
    s.connect(to).with_context(|| format!("connect udp {to}"))?;
    s.send(b"x").with_context(|| format!("send udp {to}"))?;
    Ok(())
}

fn udp_send(to: SocketAddr, count: u64, size: usize) -> Result<()> {
    // An unbound socket: the first send_to autobinds it.
    let s = UdpSocket::bind(unspecified(to)).context("create udp socket")?;
    let payload = vec![b'x'; size];
    for i in 0..count {
        s.send_to(&payload, to)
            .with_context(|| format!("send_to {to} (datagram {i})"))?;
    }
    Ok(())
}

fn udp_exchange(to: SocketAddr, count: u64, size: usize, interval: Duration) -> Result<()> {
    let s = UdpSocket::bind(unspecified(to)).context("create udp socket")?;
    s.connect(to).with_context(|| format!("connect udp {to}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let payload = vec![b'u'; size];
    let mut buf = [0u8; 65536];
    let mut replies = 0u64;
    for i in 0..count {
        s.send(&payload)
            .with_context(|| format!("send to {to} (datagram {i})"))?;
        if s.recv(&mut buf).is_ok() {
            replies += 1;
        }
        std::thread::sleep(interval);
    }
    println!("replies={replies}");
    Ok(())
}

fn tcp_exchange(
    to: SocketAddr,
    send: usize,
    hold: Duration,
    until: Option<&Path>,
    half_close: bool,
) -> Result<()> {
    use std::io::Read;
    let mut s = TcpStream::connect(to).with_context(|| format!("connect {to}"))?;
    s.write_all(&vec![b't'; send])
        .with_context(|| format!("send {send} bytes"))?;
    std::thread::sleep(hold);
    if let Some(path) = until {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !path.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if half_close {
        s.shutdown(std::net::Shutdown::Write)
            .context("shutdown(SHUT_WR)")?;
    }
    let mut received = Vec::new();
    s.read_to_end(&mut received).context("read until EOF")?;
    println!("received={}", received.len());
    Ok(())
}

/// A loop's address (`ADDR` first, or `--addr`; default 127.0.0.1) and `--duration-ms`.
fn loop_params(args: &[String]) -> Result<(IpAddr, Duration)> {
    let positional = args.first().filter(|a| !a.starts_with("--"));
    let addr = opt(args, "--addr")
        .or(positional.map(String::as_str))
        .unwrap_or("127.0.0.1");
    let addr: IpAddr = addr
        .parse()
        .with_context(|| format!("bad address {addr:?}"))?;
    let ms = opt(args, "--duration-ms").unwrap_or("1000");
    let ms: u64 = ms
        .parse()
        .with_context(|| format!("bad --duration-ms {ms:?}"))?;
    Ok((addr, Duration::from_millis(ms)))
}

/// The request every `request-loop` connection sends.
const HTTP_REQUEST: &[u8] = b"GET /api/v1/items?page=2 HTTP/1.1\r\nHost: svc.bench.test\r\n\
User-Agent: egret-bench/1\r\nAccept: */*\r\n\r\n";
/// The answer the server side writes.
const HTTP_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Self-paced loopback connect loop for `duration`: each connect is accepted by this same
/// thread before the next one, so the listen backlog never overflows (an overflow drops the
/// SYN and costs a 1 s retransmit), and `exchange` gets both ends (client, server). Both ends
/// close with RST (linger 0): whichever side closed first would otherwise hold a TIME_WAIT
/// socket for 60 s, and a tight loop exhausts the ephemeral ports in seconds. Prints
/// `ops=<N> elapsed_ns=<T>`.
fn connect_accept_loop(
    name: &str,
    addr: IpAddr,
    duration: Duration,
    mut exchange: impl FnMut(&mut TcpStream, &mut TcpStream) -> std::io::Result<()>,
) -> Result<()> {
    let listener =
        TcpListener::bind(SocketAddr::new(addr, 0)).with_context(|| format!("bind {addr}:0"))?;
    let to = listener.local_addr()?;
    let start = Instant::now();
    let mut ops: u64 = 0;
    let mut errors: u64 = 0;
    while start.elapsed() < duration {
        // A refused or reset connect (a port still held by an earlier run) is counted, not fatal.
        let done = TcpStream::connect(to).and_then(|mut client| {
            set_linger_zero(&client);
            let (mut server, _) = listener.accept()?;
            set_linger_zero(&server);
            exchange(&mut client, &mut server)
        });
        match done {
            Ok(()) => ops += 1,
            Err(err) => {
                errors += 1;
                if errors > ops.max(100) {
                    bail!("{name} {to}: {err} ({errors} failures after {ops} ops)");
                }
            }
        }
    }
    if errors > 0 {
        eprintln!("{name}: {errors} connections failed");
    }
    println!("ops={ops} elapsed_ns={}", start.elapsed().as_nanos());
    Ok(())
}

/// Connects and closes, not a byte sent.
fn tcp_loop(addr: IpAddr, duration: Duration) -> Result<()> {
    connect_accept_loop("tcp-loop", addr, duration, |_, _| Ok(()))
}

/// Connects, sends [`HTTP_REQUEST`], the server side reads it and answers [`HTTP_RESPONSE`],
/// the client reads that; then both close.
fn request_loop(addr: IpAddr, duration: Duration) -> Result<()> {
    use std::io::{Error, ErrorKind, Read};
    connect_accept_loop("request-loop", addr, duration, |client, server| {
        client.write_all(HTTP_REQUEST)?;
        let mut request = [0u8; HTTP_REQUEST.len()];
        server.read_exact(&mut request)?;
        server.write_all(HTTP_RESPONSE)?;
        let mut response = [0u8; HTTP_RESPONSE.len()];
        client.read_exact(&mut response)?;
        if request != HTTP_REQUEST || response != HTTP_RESPONSE {
            return Err(Error::new(
                ErrorKind::InvalidData,
                "request or response garbled",
            ));
        }
        Ok(())
    })
}

fn udp_loop(addr: IpAddr, duration: Duration) -> Result<()> {
    let receiver =
        UdpSocket::bind(SocketAddr::new(addr, 0)).with_context(|| format!("bind {addr}:0"))?;
    let to = receiver.local_addr()?;
    let start = Instant::now();
    let mut ops: u64 = 0;
    while start.elapsed() < duration {
        let s = UdpSocket::bind(unspecified(to)).context("create udp socket")?;
        s.send_to(b"x", to)
            .with_context(|| format!("send_to {to} after {ops} ops"))?;
        drop(s);
        ops += 1;
    }
    println!("ops={ops} elapsed_ns={}", start.elapsed().as_nanos());
    drop(receiver);
    Ok(())
}

/// What happened to one port's connects in `connect-loop`.
#[derive(Debug, Clone, Copy, Default)]
struct PortCounts {
    port: u16,
    ok: u64,
    eperm: u64,
    other: u64,
}

struct LoopOptions {
    addr: IpAddr,
    ports: Vec<u16>,
    duration: Option<Duration>,
    rounds: Option<u64>,
    interval: Duration,
    status_file: Option<PathBuf>,
    stop_file: Option<PathBuf>,
    udp: bool,
}

fn parse_number<T: std::str::FromStr>(name: &str, value: Option<&String>) -> Result<T> {
    let value = value.with_context(|| format!("{name} needs a value\n{USAGE}"))?;
    value
        .parse()
        .map_err(|_| anyhow::anyhow!("bad {name} {value:?}"))
}

fn connect_loop_options(args: &[String]) -> Result<LoopOptions> {
    let mut positional = Vec::new();
    let mut duration = None;
    let mut rounds = None;
    let mut interval = Duration::from_millis(10);
    let mut status_file = None;
    let mut stop_file = None;
    let mut udp = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--duration-ms" => {
                duration = Some(Duration::from_millis(parse_number(arg, it.next())?));
            }
            "--count" => rounds = Some(parse_number(arg, it.next())?),
            "--interval-ms" => interval = Duration::from_millis(parse_number(arg, it.next())?),
            "--status-file" => {
                let path = it
                    .next()
                    .with_context(|| format!("--status-file needs a value\n{USAGE}"))?;
                status_file = Some(PathBuf::from(path));
            }
            "--stop-file" => {
                let path = it
                    .next()
                    .with_context(|| format!("--stop-file needs a value\n{USAGE}"))?;
                stop_file = Some(PathBuf::from(path));
            }
            "--udp" => udp = true,
            other if other.starts_with("--") => bail!("unknown option {other:?}\n{USAGE}"),
            other => positional.push(other),
        }
    }
    let Some((addr, ports)) = positional.split_first() else {
        bail!("missing ADDR PORT...\n{USAGE}");
    };
    let addr: IpAddr = addr
        .parse()
        .with_context(|| format!("bad address {addr:?}"))?;
    let ports = ports
        .iter()
        .map(|p| p.parse::<u16>().with_context(|| format!("bad port {p:?}")))
        .collect::<Result<Vec<_>>>()?;
    if ports.is_empty() {
        bail!("connect-loop needs at least one PORT\n{USAGE}");
    }
    if duration.is_none() && rounds.is_none() && stop_file.is_none() {
        duration = Some(Duration::from_millis(1000));
    }
    Ok(LoopOptions {
        addr,
        ports,
        duration,
        rounds,
        interval,
        status_file,
        stop_file,
        udp,
    })
}

fn report_counts(counts: &[PortCounts]) -> String {
    counts
        .iter()
        .map(|c| {
            format!(
                "port={} ok={} eperm={} other={}\n",
                c.port, c.ok, c.eperm, c.other
            )
        })
        .collect()
}

/// Replaces `path` atomically (write a sibling, rename over it).
fn write_status(path: &Path, text: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text).with_context(|| format!("write {tmp:?}"))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename {tmp:?} to {}", path.display()))
}

fn connect_once(to: SocketAddr, udp: bool) -> std::io::Result<()> {
    if udp {
        let s = UdpSocket::bind(unspecified(to))?;
        s.send_to(b"x", to)?;
    } else {
        let s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        set_linger_zero(&s);
    }
    Ok(())
}

fn connect_loop(o: &LoopOptions) -> Result<()> {
    let mut counts: Vec<PortCounts> = o
        .ports
        .iter()
        .map(|&port| PortCounts {
            port,
            ..PortCounts::default()
        })
        .collect();
    let start = Instant::now();
    let mut last_status: Option<Instant> = None;
    let mut round: u64 = 0;
    loop {
        if o.rounds.is_some_and(|n| round >= n)
            || o.duration.is_some_and(|d| start.elapsed() >= d)
            || o.stop_file.as_deref().is_some_and(Path::exists)
        {
            break;
        }
        for c in &mut counts {
            match connect_once(SocketAddr::new(o.addr, c.port), o.udp) {
                Ok(()) => c.ok += 1,
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => c.eperm += 1,
                Err(e) => {
                    c.other += 1;
                    if c.other <= 3 {
                        eprintln!("connect-loop: port {}: {e}", c.port);
                    }
                }
            }
        }
        round += 1;
        if let Some(path) = &o.status_file {
            if last_status.is_none_or(|t| t.elapsed() >= Duration::from_millis(100)) {
                write_status(path, &report_counts(&counts))?;
                last_status = Some(Instant::now());
            }
        }
        if !o.interval.is_zero() {
            std::thread::sleep(o.interval);
        }
    }
    let text = report_counts(&counts);
    if let Some(path) = &o.status_file {
        write_status(path, &text)?;
    }
    print!("{text}");
    Ok(())
}

/// The OS error number behind a failure, if a system call failed.
fn errno_of(err: &anyhow::Error) -> Option<i32> {
    err.chain()
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(errno) = errno_of(&err) {
                println!("errno={errno}");
            }
            eprintln!("egret-testclient: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    // Lossy: the ignored trailing arguments may be any bytes (the tests of odd arguments).
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some((cmd, rest)) = argv.split_first() else {
        bail!("{USAGE}");
    };
    match cmd.as_str() {
        "tcp" => tcp(dest(rest)?),
        "udp-connect" => udp_connect(dest(rest)?),
        "udp-send" => udp_send(
            dest(rest)?,
            num_opt(rest, "--count", 1)?,
            num_opt(rest, "--size", 1)?,
        ),
        "udp-exchange" => udp_exchange(
            dest(rest)?,
            num_opt(rest, "--count", 1)?,
            num_opt(rest, "--size", 1)?,
            Duration::from_millis(num_opt(rest, "--interval-ms", 0)?),
        ),
        "tcp-exchange" => tcp_exchange(
            dest(rest)?,
            num_opt(rest, "--send", 0)?,
            Duration::from_millis(num_opt(rest, "--hold-ms", 0)?),
            opt(rest, "--hold-until-file").map(Path::new),
            rest.iter().any(|a| a == "--half-close"),
        ),
        "sleep-then-tcp" => {
            let (Some(ms), Some(tail)) = (rest.first(), rest.get(1..)) else {
                bail!("missing MS\n{USAGE}");
            };
            let ms: u64 = ms.parse().with_context(|| format!("bad MS {ms:?}"))?;
            let to = dest(tail)?;
            std::thread::sleep(Duration::from_millis(ms));
            tcp(to)
        }
        "file-then-tcp" => {
            // Waits (up to two minutes) for PATH to exist, then connects.
            let (Some(path), Some(tail)) = (rest.first(), rest.get(1..)) else {
                bail!("missing PATH\n{USAGE}");
            };
            let to = dest(tail)?;
            let deadline = Instant::now() + Duration::from_secs(120);
            while !Path::new(path).exists() {
                if Instant::now() > deadline {
                    bail!("{path} never appeared");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            tcp(to)
        }
        "tcp-loop" => {
            let (addr, d) = loop_params(rest)?;
            tcp_loop(addr, d)
        }
        "request-loop" => {
            let (addr, d) = loop_params(rest)?;
            request_loop(addr, d)
        }
        "udp-loop" => {
            let (addr, d) = loop_params(rest)?;
            udp_loop(addr, d)
        }
        "connect-loop" => connect_loop(&connect_loop_options(rest)?),
        "reexec" => {
            use std::os::unix::process::CommandExt as _;
            let err = std::process::Command::new("/proc/self/exe")
                .arg0("egret-testclient")
                .args(rest)
                .exec();
            Err(err).context("exec /proc/self/exe")
        }
        "tcp-hold" => tcp_hold(dest(rest)?, num_opt(rest, "--count", 1)?),
        "udp-spray" => udp_spray(dest(rest)?, num_opt(rest, "--ports", 1)?),
        "spawn-loop" => spawn_loop(rest),
        other => bail!("unknown subcommand {other:?}\n{USAGE}"),
    }
}

/// Opens `count` connections to `to`, all open at once, then closes them.
fn tcp_hold(to: SocketAddr, count: usize) -> Result<()> {
    let held = (0..count)
        .map(|i| {
            TcpStream::connect_timeout(&to, Duration::from_secs(5))
                .with_context(|| format!("connect {to} (connection {i})"))
        })
        .collect::<Result<Vec<_>>>()?;
    println!("held={}", held.len());
    drop(held);
    Ok(())
}

/// One datagram from one socket to each of `ports` ports from `first`'s on.
fn udp_spray(first: SocketAddr, ports: u16) -> Result<()> {
    let s = UdpSocket::bind(unspecified(first)).context("create udp socket")?;
    let mut sent = 0u32;
    for offset in 0..ports {
        let port = first
            .port()
            .checked_add(offset)
            .context("port past 65535")?;
        s.send_to(b"x", SocketAddr::new(first.ip(), port))
            .with_context(|| format!("send_to port {port}"))?;
        sent += 1;
    }
    println!("sent={sent}");
    Ok(())
}

/// Runs a short-lived program at a steady rate from `--threads` threads (default 2: one
/// thread cannot fork and exec 100,000 processes a minute), reaping children as they exit.
fn spawn_loop(args: &[String]) -> Result<()> {
    const VALUED: [&str; 3] = ["--rate", "--duration-ms", "--threads"];
    let rate: u64 = num_opt(args, "--rate", 1000)?;
    let threads: u64 = num_opt(args, "--threads", 2)?;
    let duration = Duration::from_millis(num_opt(args, "--duration-ms", 1000)?);
    let program: Vec<&str> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            !a.starts_with("--")
                && !args
                    .get(i.wrapping_sub(1))
                    .is_some_and(|prev| VALUED.contains(&prev.as_str()))
        })
        .map(|(_, a)| a.as_str())
        .collect();
    let Some((bin, bin_args)) = program.split_first() else {
        bail!("spawn-loop needs a PROGRAM\n{USAGE}");
    };
    let start = Instant::now();
    let per_thread = rate / threads.max(1);
    let spawned = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| scope.spawn(|| spawn_at(bin, bin_args, per_thread, start, duration)))
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .map_err(|_| anyhow::anyhow!("spawn thread panicked"))?
            })
            .sum::<Result<u64>>()
    })?;
    println!(
        "spawned={spawned} elapsed_ns={}",
        start.elapsed().as_nanos()
    );
    Ok(())
}

/// One thread of `spawn-loop`: `rate` children a second until `duration` after `start`.
fn spawn_at(
    bin: &str,
    args: &[&str],
    rate: u64,
    start: Instant,
    duration: Duration,
) -> Result<u64> {
    let mut children: Vec<std::process::Child> = Vec::new();
    let mut spawned: u64 = 0;
    while start.elapsed() < duration {
        let due = u64::try_from(start.elapsed().as_millis())?.saturating_mul(rate) / 1000;
        if spawned >= due {
            std::thread::sleep(Duration::from_millis(1));
        } else {
            let child = std::process::Command::new(bin)
                .args(args)
                .spawn()
                .with_context(|| format!("spawn {bin} after {spawned}"))?;
            children.push(child);
            spawned += 1;
        }
        children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
    }
    for mut c in children {
        let _ = c.wait();
    }
    Ok(spawned)
}
