//! Addresses and socket options shared by the tests and the test binaries.

use anyhow::{Context, Result};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;

/// Parses a socket address written in a test (`"127.0.0.1:0"`, `"[::1]:0"`).
pub fn socket_addr(text: &str) -> Result<SocketAddr> {
    text.parse()
        .with_context(|| format!("parse socket address {text}"))
}

/// Abortive close (SO_LINGER {on, 0}): a tight connect loop leaves no TIME_WAIT behind and
/// cannot run out of ephemeral ports. Best effort: a failure only leaves the default linger.
pub fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let len = libc::socklen_t::try_from(size_of::<libc::linger>()).unwrap_or(8);
    // SAFETY: a valid fd and a pointer to a properly sized linger struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            len,
        );
    }
}
