//! What the text and HTML renderings say alike: counts in words, times to the second, and
//! what a table cut at `--top` leaves out.

use super::{
    aggregate::dest_label,
    model::{DestDoc, HttpDoc, PathDoc, TotalsDoc},
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

/// What the HTTP sections say of themselves.
pub const HTTP_NOTE: &str =
    "first request of each connection; query strings left out: they may carry secrets";

/// The listed destinations that had HTTP requests, each with its label
/// (`www.example.com:80/tcp`), in the order listed.
pub fn http_dests(dests: &[DestDoc]) -> Vec<(String, &HttpDoc)> {
    dests
        .iter()
        .filter_map(|d| {
            let label = dest_label(&d.destination, d.domain.is_some(), d.port, &d.transport);
            d.http.as_ref().map(|h| (label, h))
        })
        .collect()
}

/// `GET /index.html`; `(no path)` for a request whose path egret did not see.
pub fn request_label(p: &PathDoc) -> String {
    let path = if p.path.is_empty() {
        "(no path)"
    } else {
        &p.path
    };
    if p.method.is_empty() {
        path.to_owned()
    } else {
        format!("{} {path}", p.method)
    }
}

/// `12 requests, 11 responses`.
pub fn http_counts(h: &HttpDoc) -> String {
    format!(
        "{}, {}",
        plural(h.requests, "request", "requests"),
        plural(h.responses, "response", "responses")
    )
}

/// `200 (9), 404 (2), other (1)`; `none` without responses.
pub fn status_codes(h: &HttpDoc) -> String {
    let mut parts: Vec<String> = h
        .status_codes
        .iter()
        .map(|s| format!("{} ({})", s.status_code, s.connections))
        .collect();
    if h.other_status_codes > 0 {
        parts.push(format!("other ({})", h.other_status_codes));
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
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
    fn http_in_words() {
        use crate::report::model::StatusDoc;
        let p = |method: &str, path: &str| PathDoc {
            method: method.to_owned(),
            path: path.to_owned(),
            connections: 1,
        };
        assert_eq!(request_label(&p("GET", "/a")), "GET /a");
        assert_eq!(request_label(&p("", "/a")), "/a");
        assert_eq!(request_label(&p("PUT", "")), "PUT (no path)");
        let mut h = HttpDoc {
            requests: 1,
            paths: Vec::new(),
            other_paths: 0,
            responses: 0,
            status_codes: Vec::new(),
            other_status_codes: 0,
        };
        assert_eq!(status_codes(&h), "none");
        assert_eq!(http_counts(&h), "1 request, 0 responses");
        h.status_codes = vec![StatusDoc {
            status_code: 200,
            connections: 9,
        }];
        h.other_status_codes = 2;
        assert_eq!(status_codes(&h), "200 (9), other (2)");
    }

    #[test]
    fn counts_in_words() {
        assert_eq!(plural(1, "alert", "alerts"), "1 alert");
        assert_eq!(plural(0, "alert", "alerts"), "0 alerts");
        assert_eq!(count(7), 7);
    }
}
