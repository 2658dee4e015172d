//! Kernel timestamps (`bpf_ktime_get_boot_ns`, CLOCK_BOOTTIME) to wall-clock time.

use chrono::{DateTime, SecondsFormat, Utc};

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; these clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Nanoseconds since boot now (CLOCK_BOOTTIME), the kernel programs' clock.
pub fn boot_ns_now() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_BOOTTIME)).unwrap_or(0)
}

/// A duration in nanoseconds, as the kernel's clock counts (saturating).
pub fn duration_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Converts boot-time nanoseconds to UTC. Re-anchor now and then ([`Self::refresh`]) so NTP
/// steps and suspend are followed.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// realtime - boottime, in ns.
    offset_ns: i128,
}

impl WallClock {
    pub fn new() -> Self {
        let mut clock = Self {
            offset_ns: i128::MIN / 2,
        };
        clock.refresh();
        clock
    }

    #[cfg(test)]
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    pub fn refresh(&mut self) {
        // Read boottime on both sides of realtime and use the midpoint.
        let before = clock_ns(libc::CLOCK_BOOTTIME);
        let real = clock_ns(libc::CLOCK_REALTIME);
        let after = clock_ns(libc::CLOCK_BOOTTIME);
        let offset = real - (before + after) / 2;
        // Re-anchor only for a real step (NTP, suspend): measurement noise of a few hundred ns
        // would otherwise shift timestamps between lines of the same instant.
        if (offset - self.offset_ns).abs() > 1_000_000 {
            self.offset_ns = offset;
        }
    }

    pub fn to_utc(&self, boot_ns: u64) -> DateTime<Utc> {
        let ns = i128::from(boot_ns) + self.offset_ns;
        let secs = i64::try_from(ns.div_euclid(1_000_000_000)).unwrap_or(0);
        let nanos = u32::try_from(ns.rem_euclid(1_000_000_000)).unwrap_or(0);
        DateTime::from_timestamp(secs, nanos).unwrap_or_default()
    }

    /// RFC 3339, UTC, nanoseconds: `2026-11-22T06:00:00.123456789Z`.
    pub fn rfc3339(&self, boot_ns: u64) -> String {
        self.to_utc(boot_ns)
            .to_rfc3339_opts(SecondsFormat::Nanos, true)
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_with_nanoseconds() {
        // 2026-11-22T00:00:00Z = 1795305600 s.
        let clock = WallClock::with_offset(1_795_305_600_000_000_000 - 5_000_000_000);
        assert_eq!(
            clock.rfc3339(5_000_000_001),
            "2026-11-22T00:00:00.000000001Z"
        );
        assert_eq!(
            clock.rfc3339(6_123_456_789),
            "2026-11-22T00:00:01.123456789Z"
        );
    }

    #[test]
    fn now_is_now() {
        let clock = WallClock::new();
        let delta = clock.to_utc(boot_ns_now()) - Utc::now();
        assert!(delta.num_milliseconds().abs() < 1000, "{delta}");
    }
}
