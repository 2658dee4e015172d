//! `--since` / `--until` values and time formatting.

/// Nanoseconds per unit of a relative time.
const UNITS: &[(&str, i64)] = &[
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
    ("d", 86_400 * 1_000_000_000),
    ("w", 7 * 86_400 * 1_000_000_000),
];

/// Parses a `--since`/`--until` value to nanoseconds since the epoch: an RFC 3339 time
/// (`2026-11-22T06:00:00Z`, `2026-11-22T07:00:00+01:00`), `now`, or a duration before
/// `now_ns` (`90s`, `30m`, `24h`, `7d`, `2w`, or a sum such as `1h30m`).
///
/// # Errors
/// A message saying what is accepted.
pub fn parse_time(text: &str, now_ns: i64) -> Result<i64, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("now") {
        return Ok(now_ns);
    }
    if let Some(ns) = super::input::parse_rfc3339_ns(text) {
        return Ok(ns);
    }
    let ago = parse_duration(text).ok_or_else(|| {
        "expected an RFC 3339 time (2026-11-22T06:00:00Z), `now`, or a duration before now \
         (90s, 30m, 24h, 7d, 2w, 1h30m)"
            .to_owned()
    })?;
    now_ns
        .checked_sub(ago)
        .ok_or_else(|| "duration too long".to_owned())
}

/// `1h30m` → nanoseconds. `None` unless the whole text is number-unit pairs.
fn parse_duration(text: &str) -> Option<i64> {
    if text.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let (number, after) = rest.split_at(digits);
        let n: i64 = number.parse().ok()?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let per = UNITS
            .iter()
            .find(|(name, _)| unit.eq_ignore_ascii_case(name))
            .map(|(_, per)| *per)?;
        total = total.checked_add(n.checked_mul(per)?)?;
        rest = after;
    }
    Some(total)
}

/// RFC 3339 in UTC with nanoseconds when the time has them (`2026-11-22T06:01:41.920432283Z`),
/// else whole seconds.
pub fn rfc3339(ns: i64) -> String {
    let t = chrono::DateTime::from_timestamp_nanos(ns);
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// RFC 3339 in UTC to the second (`2026-11-22T06:01:41Z`), for tables.
pub fn rfc3339_seconds(ns: i64) -> String {
    let t = chrono::DateTime::from_timestamp_nanos(ns);
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Writes a time in nanoseconds since the epoch (or `None`) as [`rfc3339`] (or `null`): how
/// a report's JSON holds its times.
pub fn serialize_rfc3339<T, S>(ns: &T, serializer: S) -> Result<S::Ok, S::Error>
where
    T: Copy + Into<Option<i64>>,
    S: serde::Serializer,
{
    match (*ns).into() {
        Some(ns) => serializer.serialize_str(&rfc3339(ns)),
        None => serializer.serialize_none(),
    }
}

/// The current time in nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_327_200_000_000_000; // 2026-11-22T06:00:00Z

    #[test]
    fn absolute_and_relative_times() {
        assert_eq!(parse_time("2026-11-22T06:00:00Z", 0), Ok(NOW));
        assert_eq!(parse_time("2026-11-22T07:00:00+01:00", 0), Ok(NOW));
        assert_eq!(
            parse_time("2026-11-22T06:00:00.5Z", 0),
            Ok(NOW + 500_000_000)
        );
        assert_eq!(parse_time("now", NOW), Ok(NOW));
        assert_eq!(parse_time("24h", NOW), Ok(NOW - 86_400_000_000_000));
        assert_eq!(parse_time("90s", NOW), Ok(NOW - 90_000_000_000));
        assert_eq!(parse_time("1h30m", NOW), Ok(NOW - 5_400 * 1_000_000_000));
        assert_eq!(parse_time("2w", NOW), Ok(NOW - 14 * 86_400_000_000_000));
        for bad in [
            "",
            "h",
            "24",
            "24x",
            "-1h",
            "yesterday",
            "2026-11-22",
            "1h 30m",
        ] {
            assert!(parse_time(bad, NOW).is_err(), "{bad:?}");
        }
        assert!(parse_time("99999999999999w", NOW).is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(rfc3339(NOW), "2026-11-22T06:00:00Z");
        assert_eq!(rfc3339(NOW + 1), "2026-11-22T06:00:00.000000001Z");
        assert_eq!(rfc3339_seconds(NOW + 999_999_999), "2026-11-22T06:00:00Z");
    }
}
