//! Small helpers for looking into egret's JSON lines.

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Dotted-path access into nested objects: `field(v, "process.user.id")`.
/// A path component that is a number indexes into an array (`"event.type.0"`).
pub fn field<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, key| match cur {
        Value::Object(map) => map.get(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// The string at `path`, if present and a string.
pub fn field_str<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    field(v, path).and_then(Value::as_str)
}

/// The unsigned integer at `path`, if present and one.
pub fn field_u64(v: &Value, path: &str) -> Option<u64> {
    field(v, path).and_then(Value::as_u64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn num(s: &str, what: &str) -> Result<i64> {
    ensure!(
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()),
        "bad {what} {s:?}"
    );
    s.parse::<i64>()
        .with_context(|| format!("bad {what} {s:?}"))
}

/// Parses a UTC RFC 3339 timestamp such as `2026-11-22T06:00:00.123456789Z`
/// (the fraction is optional, the zone must be `Z` or `+00:00`).
pub fn parse_timestamp(s: &str) -> Result<SystemTime> {
    let body = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix("+00:00"))
        .ok_or_else(|| anyhow!("timestamp {s:?} is not UTC (no Z suffix)"))?;
    let (date, time) = body
        .split_once('T')
        .ok_or_else(|| anyhow!("timestamp {s:?} has no T"))?;
    let mut dp = date.split('-');
    let (y, mo, d) = match (dp.next(), dp.next(), dp.next(), dp.next()) {
        (Some(y), Some(mo), Some(d), None) if y.len() == 4 && mo.len() == 2 && d.len() == 2 => {
            (num(y, "year")?, num(mo, "month")?, num(d, "day")?)
        }
        _ => return Err(anyhow!("bad date in {s:?}")),
    };
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (time, None),
    };
    let mut tp = hms.split(':');
    let (h, mi, se) = match (tp.next(), tp.next(), tp.next(), tp.next()) {
        (Some(h), Some(mi), Some(se), None) if h.len() == 2 && mi.len() == 2 && se.len() == 2 => {
            (num(h, "hour")?, num(mi, "minute")?, num(se, "second")?)
        }
        _ => return Err(anyhow!("bad time in {s:?}")),
    };
    ensure!(
        (1..=12).contains(&mo) && (1..=31).contains(&d) && h < 24 && mi < 60 && se < 61,
        "out-of-range field in {s:?}"
    );
    let nanos = match frac {
        None => 0,
        Some(f) => {
            ensure!(f.len() <= 9, "more than 9 fractional digits in {s:?}");
            num(f, "fraction")? * 10i64.pow(9 - u32::try_from(f.len())?)
        }
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se;
    let secs = u64::try_from(secs).with_context(|| format!("{s:?} is before 1970"))?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(u64::try_from(nanos)?))
}

/// Reads a JSON Lines file: every complete line must be JSON (a trailing partial line, still
/// being written, is ignored); an absent file has no lines.
pub fn read_jsonl(path: &Path) -> Result<Vec<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let complete = match text.rfind('\n') {
        Some(i) => text.get(..=i).unwrap_or_default(),
        None => "",
    };
    complete
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str::<Value>(line).with_context(|| {
                format!("line {} of {} is not JSON: {line:?}", i + 1, path.display())
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_paths() {
        let v = json!({"process": {"pid": 42, "user": {"id": "0"}, "args": ["a", "b"]}, "x": null});
        assert_eq!(field(&v, "process.pid"), Some(&json!(42)));
        assert_eq!(field_u64(&v, "process.pid"), Some(42));
        assert_eq!(field_str(&v, "process.user.id"), Some("0"));
        assert_eq!(field_str(&v, "process.args.1"), Some("b"));
        assert_eq!(field(&v, "process.args.2"), None);
        assert_eq!(field(&v, "process.nope"), None);
        assert_eq!(field(&v, "process.pid.deeper"), None);
        assert_eq!(field(&v, "x"), Some(&Value::Null));
        assert_eq!(field_str(&v, "process.pid"), None);
    }

    #[test]
    fn timestamps() -> Result<()> {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z")?, UNIX_EPOCH);
        let t = parse_timestamp("2026-11-22T06:00:00.123456789Z")?;
        assert_eq!(
            t.duration_since(UNIX_EPOCH)?,
            Duration::new(1_795_327_200, 123_456_789)
        );
        let t = parse_timestamp("2000-02-29T23:59:59.5Z")?;
        assert_eq!(
            t.duration_since(UNIX_EPOCH)?,
            Duration::new(951_868_799, 500_000_000)
        );
        assert!(parse_timestamp("2026-11-22 06:00:00Z").is_err());
        assert!(parse_timestamp("2026-11-22T06:00:00").is_err());
        assert!(parse_timestamp("2026-13-22T06:00:00Z").is_err());
        Ok(())
    }
}
