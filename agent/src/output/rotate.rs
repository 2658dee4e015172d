//! Rotated file names, retention, and the size and age options.
//!
//! A rotated file is named `<live name>.<UTC time it was closed>`:
//! `events.jsonl.20261122T060141Z`. When that name would not sort after every rotated file
//! already there (two rotations within a second, or the clock stepped back), the newest
//! name's time is reused with a three-digit counter: `events.jsonl.20261122T060141Z.001`.
//! So plain byte order (`ls`, `sort`, a shell glob) is rotation order, names never change
//! once given (the next file's first line names its predecessor), and the name says when
//! the file's last line was written.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    time::{Duration, SystemTime},
};

use chrono::{DateTime, Datelike as _, NaiveDate, Timelike as _, Utc};

/// Length of the time stamp part: `20261122T060141Z`.
const STAMP_LEN: usize = 16;

/// A rotated file of a live file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rotated {
    /// The suffix after `<live name>.`: the sort key.
    pub suffix: String,
    pub path: PathBuf,
}

impl Rotated {
    /// When the file was closed (the stamp in its name).
    pub fn closed(&self) -> Option<SystemTime> {
        parse_stamp(self.suffix.get(..STAMP_LEN)?)
    }
}

/// `20261122T060141Z` for a time.
pub fn stamp(time: SystemTime) -> String {
    let t: DateTime<Utc> = time.into();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn digits(s: &str) -> Option<u32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// The time of a `20261122T060141Z` stamp.
pub fn parse_stamp(s: &str) -> Option<SystemTime> {
    if s.len() != STAMP_LEN || s.get(8..9) != Some("T") || s.get(15..) != Some("Z") {
        return None;
    }
    let year = digits(s.get(0..4)?)?;
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(year).ok()?,
        digits(s.get(4..6)?)?,
        digits(s.get(6..8)?)?,
    )?;
    let time = date.and_hms_opt(
        digits(s.get(9..11)?)?,
        digits(s.get(11..13)?)?,
        digits(s.get(13..15)?)?,
    )?;
    Some(SystemTime::from(time.and_utc()))
}

/// Whether `suffix` is a rotation suffix: a stamp, optionally `.NNN`.
pub fn is_rotation_suffix(suffix: &str) -> bool {
    let Some(stamp) = suffix.get(..STAMP_LEN) else {
        return false;
    };
    if parse_stamp(stamp).is_none() {
        return false;
    }
    match suffix.get(STAMP_LEN..) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix('.')
            .is_some_and(|n| n.len() == 3 && digits(n).is_some()),
        None => false,
    }
}

/// For a file name `events.jsonl.20261122T060141Z`: the live name and the suffix.
pub fn split_rotated(name: &str) -> Option<(&str, &str)> {
    // The suffix is 16 or 20 bytes after the last-but-maybe-one dot.
    for len in [STAMP_LEN, STAMP_LEN + 4] {
        let cut = name.len().checked_sub(len + 1)?;
        if name.get(cut..=cut) == Some(".") {
            let (base, suffix) = (name.get(..cut)?, name.get(cut + 1..)?);
            if !base.is_empty() && is_rotation_suffix(suffix) {
                return Some((base, suffix));
            }
        }
    }
    None
}

fn file_name(live: &Path) -> Option<&str> {
    live.file_name().and_then(|n| n.to_str())
}

fn dir_of(live: &Path) -> &Path {
    match live.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The rotated files of `live`, oldest first. Other files in the directory are ignored.
pub fn list(live: &Path) -> std::io::Result<Vec<Rotated>> {
    let Some(name) = file_name(live) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir_of(live))? {
        let entry = entry?;
        let entry_name = entry.file_name();
        let Some(entry_name) = entry_name.to_str() else {
            continue;
        };
        if let Some((base, suffix)) = split_rotated(entry_name) {
            if base == name && entry.file_type().is_ok_and(|t| t.is_file()) {
                found.push(Rotated {
                    suffix: suffix.to_owned(),
                    path: entry.path(),
                });
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The suffix for a file closed at `now`, sorting after `newest` (the newest existing
/// rotated suffix). `None` when a thousand names within one second are used up.
pub fn next_suffix(now: SystemTime, newest: Option<&str>) -> Option<String> {
    let candidate = stamp(now);
    let Some(newest) = newest else {
        return Some(candidate);
    };
    if candidate.as_str() > newest {
        return Some(candidate);
    }
    let base = newest.get(..STAMP_LEN)?;
    let counter = match newest.get(STAMP_LEN..) {
        Some("") => 0,
        Some(rest) => digits(rest.strip_prefix('.')?)?,
        None => return None,
    };
    let next = counter + 1;
    (next <= 999).then(|| format!("{base}.{next:03}"))
}

/// The path a live file is renamed to when it is closed at `now`.
pub fn next_path(live: &Path, now: SystemTime) -> std::io::Result<PathBuf> {
    let existing = list(live)?;
    let newest = existing.last().map(|r| r.suffix.as_str());
    let suffix = next_suffix(now, newest).ok_or_else(|| {
        std::io::Error::other("more than 999 rotations within one second; not rotating")
    })?;
    let name = format!("{}.{suffix}", file_name(live).unwrap_or("output"));
    Ok(dir_of(live).join(name))
}

/// Rotated files to delete: all but the newest `keep`, and any closed before `now - age`.
pub fn expired(
    rotated: &[Rotated],
    keep: usize,
    age: Option<Duration>,
    now: SystemTime,
) -> Vec<&Rotated> {
    let surplus = rotated.len().saturating_sub(keep);
    let cutoff = age.and_then(|a| now.checked_sub(a));
    rotated
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            *i < surplus || cutoff.is_some_and(|c| r.closed().is_some_and(|closed| closed < c))
        })
        .map(|(_, r)| r)
        .collect()
}

/// A malformed size or duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{0:?} is not a size: a number of bytes, optionally with K, M or G (KiB, MiB, GiB)")]
    Size(String),
    #[error("{0:?} is not a duration: a number with s, m, h, d or w (30s, 15m, 1h, 7d)")]
    Duration(String),
}

/// A byte count, from `1048576`, `64K`, `100M`, `1G` (binary units; `KiB`, `MiB`, `GiB`
/// also accepted). Zero is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// A positive quantity written `<number><unit>` (`s` trimmed): the number times the factor
/// `unit` gives its unit; `None` for an unknown unit, zero or an overflow.
fn scaled(s: &str, unit: impl Fn(&str) -> Option<u64>) -> Option<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    let number: u64 = number.parse().ok()?;
    number.checked_mul(unit(suffix)?).filter(|n| *n != 0)
}

impl FromStr for ByteSize {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unit = |suffix: &str| -> Option<u64> {
            match suffix.trim() {
                "" | "B" => Some(1),
                "K" | "k" | "KiB" => Some(1 << 10),
                "M" | "m" | "MiB" => Some(1 << 20),
                "G" | "g" | "GiB" => Some(1 << 30),
                _ => None,
            }
        };
        scaled(s, unit)
            .map(Self)
            .ok_or_else(|| ParseError::Size(s.to_owned()))
    }
}

/// A duration, from `30s`, `15m`, `1h`, `7d`, `2w` (a bare number is seconds). Zero is
/// refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age(pub Duration);

impl FromStr for Age {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unit_secs = |suffix: &str| -> Option<u64> {
            match suffix {
                "" | "s" => Some(1),
                "m" => Some(60),
                "h" => Some(3600),
                "d" => Some(86_400),
                "w" => Some(7 * 86_400),
                _ => None,
            }
        };
        scaled(s, unit_secs)
            .map(|secs| Self(Duration::from_secs(secs)))
            .ok_or_else(|| ParseError::Duration(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::TempDir;

    fn at(stamp: &str) -> SystemTime {
        parse_stamp(stamp).unwrap()
    }

    #[test]
    fn stamps_round_trip() {
        let t = at("20261122T060141Z");
        assert_eq!(stamp(t), "20261122T060141Z");
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_795_327_301
        );
        assert!(parse_stamp("20261322T060141Z").is_none());
        assert!(parse_stamp("20261122 060141Z").is_none());
        assert!(parse_stamp("20261122T060141").is_none());
        assert!(parse_stamp("2026112xT060141Z").is_none());
    }

    #[test]
    fn names_sort_in_rotation_order() {
        let t = at("20261122T060141Z");
        assert_eq!(next_suffix(t, None).unwrap(), "20261122T060141Z");
        // Same second: a counter.
        let a = next_suffix(t, Some("20261122T060141Z")).unwrap();
        assert_eq!(a, "20261122T060141Z.001");
        let b = next_suffix(t, Some(&a)).unwrap();
        assert_eq!(b, "20261122T060141Z.002");
        // The clock stepped back: still after the newest.
        let back = at("20261122T050000Z");
        assert_eq!(
            next_suffix(back, Some("20261122T060141Z.002")).unwrap(),
            "20261122T060141Z.003"
        );
        // A later second: the plain stamp, which sorts after the counted ones.
        let later = next_suffix(at("20261122T060142Z"), Some(&b)).unwrap();
        assert_eq!(later, "20261122T060142Z");
        let mut all = vec![
            later.clone(),
            b.clone(),
            a.clone(),
            "20261122T060141Z".to_owned(),
        ];
        all.sort();
        assert_eq!(all, ["20261122T060141Z", &a, &b, &later]);
        assert!(next_suffix(t, Some("20261122T060141Z.999")).is_none());
    }

    #[test]
    fn recognises_rotated_names() {
        assert_eq!(
            split_rotated("events.jsonl.20261122T060141Z"),
            Some(("events.jsonl", "20261122T060141Z"))
        );
        assert_eq!(
            split_rotated("events.jsonl.20261122T060141Z.007"),
            Some(("events.jsonl", "20261122T060141Z.007"))
        );
        assert_eq!(split_rotated("events.jsonl"), None);
        assert_eq!(split_rotated("events.jsonl.20261122T060141Z.7"), None);
        assert_eq!(split_rotated("events.jsonl.old"), None);
        assert_eq!(split_rotated(".20261122T060141Z"), None);
    }

    #[test]
    fn lists_and_expires_rotated_files() {
        let scratch = TempDir::new("rotate");
        let dir = &scratch.0;
        let live = dir.join("events.jsonl");
        for name in [
            "events.jsonl",
            "events.jsonl.20261122T060141Z.001",
            "events.jsonl.20261121T000000Z",
            "events.jsonl.20261122T060141Z",
            "alerts.jsonl.20261122T060141Z",
            "events.jsonl.notes",
        ] {
            std::fs::write(dir.join(name), "x\n").unwrap();
        }
        let rotated = list(&live).unwrap();
        let suffixes: Vec<&str> = rotated.iter().map(|r| r.suffix.as_str()).collect();
        assert_eq!(
            suffixes,
            [
                "20261121T000000Z",
                "20261122T060141Z",
                "20261122T060141Z.001"
            ]
        );
        let now = at("20261122T070000Z");
        let names = |v: Vec<&Rotated>| v.iter().map(|r| r.suffix.clone()).collect::<Vec<_>>();
        assert_eq!(names(expired(&rotated, 2, None, now)), ["20261121T000000Z"]);
        assert_eq!(
            names(expired(&rotated, 10, Some(Duration::from_secs(3600)), now)),
            ["20261121T000000Z"]
        );
        assert_eq!(
            names(expired(&rotated, 10, Some(Duration::from_secs(600)), now)).len(),
            3
        );
        assert_eq!(names(expired(&rotated, 0, None, now)).len(), 3);
        assert!(expired(&rotated, 10, None, now).is_empty());
        let next = next_path(&live, at("20261122T060141Z")).unwrap();
        assert_eq!(next, dir.join("events.jsonl.20261122T060141Z.002"));
    }

    #[test]
    fn parses_sizes_and_durations() {
        assert_eq!("4096".parse(), Ok(ByteSize(4096)));
        assert_eq!("64K".parse(), Ok(ByteSize(64 << 10)));
        assert_eq!("100M".parse(), Ok(ByteSize(100 << 20)));
        assert_eq!("1GiB".parse(), Ok(ByteSize(1 << 30)));
        assert!("0".parse::<ByteSize>().is_err());
        assert!("1T".parse::<ByteSize>().is_err());
        assert!("M".parse::<ByteSize>().is_err());
        assert!("-1".parse::<ByteSize>().is_err());
        assert_eq!("90".parse(), Ok(Age(Duration::from_secs(90))));
        assert_eq!("15m".parse(), Ok(Age(Duration::from_secs(900))));
        assert_eq!("1h".parse(), Ok(Age(Duration::from_secs(3600))));
        assert_eq!("1d".parse(), Ok(Age(Duration::from_secs(86_400))));
        assert_eq!("2w".parse(), Ok(Age(Duration::from_secs(14 * 86_400))));
        assert!("0s".parse::<Age>().is_err());
        assert!("1y".parse::<Age>().is_err());
        assert!("h".parse::<Age>().is_err());
    }
}
