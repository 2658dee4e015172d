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
        let mut out = Vec::with_capacity(RFC3339_LEN);
        self.write_rfc3339(boot_ns, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// [`Self::rfc3339`], appended to `out` without allocating: every line has two or three
    /// of them. Years 0–9999 are formatted here (chrono's output, digit for digit); any
    /// other instant, by chrono.
    pub fn write_rfc3339(&self, boot_ns: u64, out: &mut Vec<u8>) {
        let ns = i128::from(boot_ns) + self.offset_ns;
        let (secs, nanos) = (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
        let Ok(days) = i64::try_from(secs.div_euclid(86_400)) else {
            return self.write_rfc3339_slow(boot_ns, out);
        };
        let of_day = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) {
            return self.write_rfc3339_slow(boot_ns, out);
        }
        let mut text = *b"0000-00-00T00:00:00.000000000Z";
        // Every value fits its field (checked above, or by the arithmetic): digits only.
        let fields: [(usize, usize, i128); 7] = [
            (0, 4, i128::from(year)),
            (5, 2, i128::from(month)),
            (8, 2, i128::from(day)),
            (11, 2, of_day / 3600),
            (14, 2, of_day % 3600 / 60),
            (17, 2, of_day % 60),
            (20, 9, nanos),
        ];
        for (at, width, mut value) in fields {
            for i in (at..at + width).rev() {
                if let Some(digit) = text.get_mut(i) {
                    *digit = b'0' + (value % 10) as u8;
                }
                value /= 10;
            }
        }
        out.extend_from_slice(&text);
    }

    fn write_rfc3339_slow(&self, boot_ns: u64, out: &mut Vec<u8>) {
        let text = self
            .to_utc(boot_ns)
            .to_rfc3339_opts(SecondsFormat::Nanos, true);
        out.extend_from_slice(text.as_bytes());
    }
}

/// Length of [`WallClock::rfc3339`]'s text for years 0–9999.
const RFC3339_LEN: usize = 30;

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`): (year, month 1–12, day 1–31).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
    fn formats_as_chrono_does() {
        // From before 1970 to after 2100, through leap days and century years, at steps that
        // are not round.
        let mut ns: i128 = -3_000_000_000_000_000_000;
        while ns < 5_000_000_000_000_000_000 {
            let clock = WallClock::with_offset(ns);
            let chrono = clock
                .to_utc(123_456_789)
                .to_rfc3339_opts(SecondsFormat::Nanos, true);
            assert_eq!(clock.rfc3339(123_456_789), chrono, "offset {ns}");
            ns += 7_777_777_777_777_777;
        }
        for date in [
            "2000-02-29T23:59:59.999999999Z",
            "2100-03-01T00:00:00.000000000Z",
        ] {
            let at = DateTime::parse_from_rfc3339(date).unwrap();
            let ns = at.timestamp_nanos_opt().unwrap();
            assert_eq!(WallClock::with_offset(i128::from(ns)).rfc3339(0), date);
        }
    }

    #[test]
    fn now_is_now() {
        let clock = WallClock::new();
        let delta = clock.to_utc(boot_ns_now()) - Utc::now();
        assert!(delta.num_milliseconds().abs() < 1000, "{delta}");
    }
}
