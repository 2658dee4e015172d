//! What the text and HTML renderings say alike: counts in words, times to the second, and
//! what a table cut at `--top` leaves out.

use super::{
    model::{DestDoc, TotalsDoc},
    timespec::rfc3339_seconds,
};

/// `1 connection`, `3 connections`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// A length or count, for [`plural`].
pub fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A time of the report (nanoseconds since the epoch) to the second,
/// `2026-11-22T06:01:41Z` (the JSON output keeps the nanoseconds); `-` for none.
pub fn seen(ns: Option<i64>) -> String {
    ns.map_or_else(|| "-".to_owned(), rfc3339_seconds)
}

/// What a table of `shown`, of `total` destinations with `connections` in all, leaves out:
/// `3 more destinations (12 connections)`; `None` when it shows every destination.
pub fn not_listed(total: usize, connections: u64, shown: &[DestDoc]) -> Option<String> {
    let hidden = total.saturating_sub(shown.len());
    let shown_connections: u64 = shown.iter().map(|d| d.counts.connections).sum();
    (hidden > 0).then(|| {
        format!(
            "{} ({})",
            plural(count(hidden), "more destination", "more destinations"),
            plural(
                connections.saturating_sub(shown_connections),
                "connection",
                "connections"
            )
        )
    })
}

/// The events egret itself reported losing, which make the counts short; `None` when none.
pub fn losses(totals: &TotalsDoc) -> Option<String> {
    let (kernel, userspace) = (totals.events_lost_kernel, totals.events_dropped_userspace);
    (kernel > 0 || userspace > 0).then(|| {
        format!(
            "egret reported {} lost in the kernel and {} dropped in userspace: counts may be short",
            plural(kernel, "event", "events"),
            plural(userspace, "event", "events")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_to_the_second() {
        // 2026-11-22T06:01:41.920432283Z
        assert_eq!(
            seen(Some(1_795_327_301_920_432_283)),
            "2026-11-22T06:01:41Z"
        );
        assert_eq!(seen(None), "-");
    }

    #[test]
    fn counts_in_words() {
        assert_eq!(plural(1, "alert", "alerts"), "1 alert");
        assert_eq!(plural(0, "alert", "alerts"), "0 alerts");
        assert_eq!(count(7), 7);
    }
}
