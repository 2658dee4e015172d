//! The open file limit (`RLIMIT_NOFILE`, `ulimit -n`, systemd's `LimitNOFILE`): raised to
//! its hard limit at start, and checked against what egret needs, so that a limit too small
//! is one clear error before anything is loaded, not a failure deep in the program loader
//! (where it looks like missing privileges) or a feature that quietly stops later.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors egret needs: about 85 held for as long as it runs (kernel maps, programs and
/// links, the ring buffer's epoll, the async runtime), at most 16 Prometheus clients and 8
/// runtime look-ups at once, the output files (one more while rotating), and short reads of
/// `/proc`, `/sys` and the policy file. Measured at rest: 84.
pub const MIN_FDS: u64 = 128;

#[derive(Debug, thiserror::Error)]
pub enum FdLimitError {
    #[error(
        "the open file limit is {limit} (ulimit -n; systemd: LimitNOFILE; a container's nofile ulimit), egret needs at least {MIN_FDS}: about 85 for its kernel maps, programs and links, the rest for Prometheus clients, container runtime look-ups, output files and reads of /proc"
    )]
    TooLow { limit: u64 },
    #[error("reading the open file limit: {0}")]
    Read(#[source] nix::Error),
}

/// What [`raise`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit found at start.
    pub was: u64,
    /// The soft limit now.
    pub now: u64,
}

/// Raises the soft open file limit to the hard one (a process may, without privileges), then
/// requires at least [`MIN_FDS`]. A soft limit that cannot be raised is kept (and checked).
pub fn raise() -> Result<FdLimit, FdLimitError> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(FdLimitError::Read)?;
    let now = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    check(soft, now)
}

/// The verdict on a limit of `now` descriptors (found at `was`).
fn check(was: u64, now: u64) -> Result<FdLimit, FdLimitError> {
    if now < MIN_FDS {
        return Err(FdLimitError::TooLow { limit: now });
    }
    Ok(FdLimit { was, now })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_low_names_what_needs_descriptors() {
        let err = check(64, 64).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("open file limit is 64"), "{message}");
        assert!(message.contains("LimitNOFILE"), "{message}");
        assert!(
            message.contains(&format!("at least {MIN_FDS}")),
            "{message}"
        );
        assert_eq!(
            check(1024, 4096).ok(),
            Some(FdLimit {
                was: 1024,
                now: 4096
            })
        );
    }
}
