//! Tiny network client used by the end-to-end tests and the benchmark.
//!
//! ```text
//! egret-testclient tcp <ADDR> <PORT> [ignored...]
//! egret-testclient udp-connect <ADDR> <PORT> [ignored...]
//! egret-testclient udp-send <ADDR> <PORT> [--count N] [ignored...]
//! egret-testclient sleep-then-tcp <MS> <ADDR> <PORT> [ignored...]
//! egret-testclient tcp-loop [--addr 127.0.0.1] [--duration-ms N]
//! egret-testclient udp-loop [--addr 127.0.0.1] [--duration-ms N]
//! ```
//! Extra trailing arguments of the one-shot commands are ignored so tests can
//! put a unique marker into argv. Exits non-zero with a message on failure.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: egret-testclient (tcp|udp-connect) ADDR PORT [..] | udp-send ADDR PORT [--count N] [..] | \
                     sleep-then-tcp MS ADDR PORT [..] | (tcp-loop|udp-loop) [--addr A] [--duration-ms N]";

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

fn udp_send(to: SocketAddr, count: u64) -> Result<()> {
    // An unbound socket: the first send_to autobinds it.
    let s = UdpSocket::bind(unspecified(to)).context("create udp socket")?;
    for i in 0..count {
        s.send_to(b"x", to)
            .with_context(|| format!("send_to {to} (datagram {i})"))?;
    }
    Ok(())
}

/// Abortive close: SO_LINGER {on, 0} so the loop leaves no TIME_WAIT behind
/// and cannot run out of ephemeral ports.
fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let len = libc::socklen_t::try_from(size_of::<libc::linger>()).unwrap_or(8);
    // SAFETY: valid fd, pointer to a properly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&l).cast(),
            len,
        );
    }
}

fn loop_params(args: &[String]) -> Result<(IpAddr, Duration)> {
    let addr = opt(args, "--addr").unwrap_or("127.0.0.1");
    let addr: IpAddr = addr
        .parse()
        .with_context(|| format!("bad --addr {addr:?}"))?;
    let ms = opt(args, "--duration-ms").unwrap_or("1000");
    let ms: u64 = ms
        .parse()
        .with_context(|| format!("bad --duration-ms {ms:?}"))?;
    Ok((addr, Duration::from_millis(ms)))
}

fn tcp_loop(addr: IpAddr, duration: Duration) -> Result<()> {
    let listener =
        TcpListener::bind(SocketAddr::new(addr, 0)).with_context(|| format!("bind {addr}:0"))?;
    let to = listener.local_addr()?;
    // Self-pacing: each connect is accepted by this same thread before the next one, so the
    // listen backlog never overflows (an overflow drops the SYN and costs a 1 s retransmit).
    // Both ends close with RST (linger 0): whichever side closed first would otherwise hold a
    // TIME_WAIT socket for 60 s, and a tight loop exhausts the ephemeral ports in seconds.
    let start = Instant::now();
    let mut ops: u64 = 0;
    let mut errors: u64 = 0;
    while start.elapsed() < duration {
        // A refused or reset connect (a port still held by an earlier run) is counted, not fatal.
        match TcpStream::connect(to) {
            Ok(s) => {
                set_linger_zero(&s);
                if let Ok((accepted, _)) = listener.accept() {
                    set_linger_zero(&accepted);
                }
                drop(s);
                ops += 1;
            }
            Err(err) => {
                errors += 1;
                if errors > ops.max(100) {
                    bail!("connect {to}: {err} ({errors} failures after {ops} ops)");
                }
            }
        }
    }
    if errors > 0 {
        eprintln!("tcp-loop: {errors} connects failed");
    }
    println!("ops={ops} elapsed_ns={}", start.elapsed().as_nanos());
    Ok(())
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

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        bail!("{USAGE}");
    };
    match cmd.as_str() {
        "tcp" => tcp(dest(rest)?),
        "udp-connect" => udp_connect(dest(rest)?),
        "udp-send" => {
            let count = opt(rest, "--count").unwrap_or("1");
            let count: u64 = count
                .parse()
                .with_context(|| format!("bad --count {count:?}"))?;
            udp_send(dest(rest)?, count)
        }
        "sleep-then-tcp" => {
            let (Some(ms), Some(tail)) = (rest.first(), rest.get(1..)) else {
                bail!("missing MS\n{USAGE}");
            };
            let ms: u64 = ms.parse().with_context(|| format!("bad MS {ms:?}"))?;
            let to = dest(tail)?;
            std::thread::sleep(Duration::from_millis(ms));
            tcp(to)
        }
        "tcp-loop" => {
            let (addr, d) = loop_params(rest)?;
            tcp_loop(addr, d)
        }
        "udp-loop" => {
            let (addr, d) = loop_params(rest)?;
            udp_loop(addr, d)
        }
        other => bail!("unknown subcommand {other:?}\n{USAGE}"),
    }
}
