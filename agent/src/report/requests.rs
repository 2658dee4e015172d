//! HTTP requests per destination: the method and path of each connection's first request,
//! and its response's status code, counted with bounded memory.
//!
//! Query strings are never kept (`url.query` is not read, and a `?` left in a path cuts it):
//! they may carry tokens and other secrets.

use std::collections::HashMap;
use std::hash::Hash;

use super::input::HttpSeen;

/// At most this many distinct values are counted per destination; requests with others are
/// counted together as "other".
pub const MAX_KEPT: usize = 256;
/// At most this many paths and status codes are listed per destination.
pub const MAX_SHOWN: usize = 10;
/// Paths longer than this many characters are cut (`…`).
pub const MAX_PATH_CHARS: usize = 256;
/// Methods longer than this many characters are cut (`…`).
const MAX_METHOD_CHARS: usize = 16;

/// Counts of distinct values, at most [`MAX_KEPT`] of them; the rest are `other`.
#[derive(Debug, Clone)]
pub struct Tally<K> {
    counts: HashMap<K, u64>,
    /// Values not kept: [`MAX_KEPT`] others came first.
    pub other: u64,
    /// Every value added.
    pub total: u64,
}

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Self {
            counts: HashMap::new(),
            other: 0,
            total: 0,
        }
    }
}

impl<K: Eq + Hash + Ord> Tally<K> {
    pub fn add(&mut self, key: K) {
        self.total = self.total.saturating_add(1);
        let kept = self.counts.len();
        match self.counts.get_mut(&key) {
            Some(n) => *n = n.saturating_add(1),
            None if kept < MAX_KEPT => {
                self.counts.insert(key, 1);
            }
            None => self.other = self.other.saturating_add(1),
        }
    }

    /// Distinct values kept.
    pub fn distinct(&self) -> usize {
        self.counts.len()
    }

    /// The `n` most frequent values (then in order), and the count of every other value (not
    /// listed, or not kept).
    pub fn top(&self, n: usize) -> (Vec<(&K, u64)>, u64) {
        let mut v: Vec<(&K, u64)> = self.counts.iter().map(|(k, c)| (k, *c)).collect();
        v.sort_by(|(ka, a), (kb, b)| b.cmp(a).then_with(|| ka.cmp(kb)));
        v.truncate(n);
        let listed = v.iter().fold(0_u64, |a, (_, c)| a.saturating_add(*c));
        (v, self.total.saturating_sub(listed))
    }
}

/// A request as listed: method and path (without a query).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Request {
    /// Empty when the line had none.
    pub method: Box<str>,
    pub path: Box<str>,
}

/// `s` cut to `max` characters, with `…` when cut (or when `cut` says egret already cut it).
fn bounded(s: &str, max: usize, cut: bool) -> Box<str> {
    let mut out: String = s.chars().take(max).collect();
    if cut || out.len() < s.len() {
        out.push('…');
    }
    out.into_boxed_str()
}

impl Request {
    /// The request of `h`, if it has one; the path without any query.
    pub fn of(h: &HttpSeen<'_>) -> Option<Self> {
        if h.method.is_none() && h.path.is_none() {
            return None;
        }
        let path = h.path.as_deref().unwrap_or_default();
        let (path, had_query) = match path.split_once('?') {
            Some((before, _)) => (before, true),
            None => (path, false),
        };
        Some(Self {
            method: bounded(
                h.method.as_deref().unwrap_or_default(),
                MAX_METHOD_CHARS,
                false,
            ),
            path: bounded(path, MAX_PATH_CHARS, h.path_truncated && !had_query),
        })
    }
}

/// One destination's HTTP: requests (method and path) and response status codes.
#[derive(Debug, Clone, Default)]
pub struct HttpStats {
    pub requests: Tally<Request>,
    pub statuses: Tally<u16>,
}

impl HttpStats {
    /// Counts one connection's first request and response.
    pub fn add(&mut self, h: &HttpSeen<'_>) {
        if let Some(r) = Request::of(h) {
            self.requests.add(r);
        }
        if let Some(code) = h.status {
            self.statuses.add(code);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn seen(method: &str, path: &str, status: u16) -> HttpSeen<'static> {
        HttpSeen {
            method: Some(Cow::Owned(method.to_owned())),
            path: Some(Cow::Owned(path.to_owned())),
            path_truncated: false,
            status: (status != 0).then_some(status),
        }
    }

    #[test]
    fn paths_and_status_codes_are_counted_most_first() {
        let mut h = HttpStats::default();
        for _ in 0..3 {
            h.add(&seen("GET", "/index.html", 200));
        }
        h.add(&seen("POST", "/api/items", 201));
        h.add(&seen("GET", "/missing", 404));
        h.add(&seen("GET", "/index.html", 0));
        let (paths, other) = h.requests.top(2);
        let paths: Vec<(&str, &str, u64)> = paths
            .into_iter()
            .map(|(r, n)| (&*r.method, &*r.path, n))
            .collect();
        assert_eq!(
            paths,
            [("GET", "/index.html", 4), ("GET", "/missing", 1)],
            "most first, then by method and path"
        );
        assert_eq!(other, 1);
        let (codes, other) = h.statuses.top(MAX_SHOWN);
        assert_eq!(codes, [(&200, 3), (&201, 1), (&404, 1)]);
        assert_eq!(other, 0);
        assert_eq!((h.requests.total, h.statuses.total), (6, 5));
    }

    #[test]
    fn queries_are_never_kept_and_long_values_are_cut() {
        let r = Request::of(&seen("GET", "/login?token=s3cr3t&user=a", 0)).unwrap();
        assert_eq!(&*r.path, "/login");
        let long = format!("/{}", "a".repeat(1000));
        let r = Request::of(&seen("GET", &long, 0)).unwrap();
        assert_eq!(r.path.chars().count(), MAX_PATH_CHARS + 1);
        assert!(r.path.ends_with('…'));
        let mut cut = seen("GET", "/cut-by-egret", 0);
        cut.path_truncated = true;
        assert_eq!(&*Request::of(&cut).unwrap().path, "/cut-by-egret…");
        let only_status = HttpSeen {
            status: Some(502),
            ..HttpSeen::default()
        };
        assert_eq!(Request::of(&only_status), None);
    }

    #[test]
    fn distinct_values_are_bounded_with_an_other_count() {
        let mut h = HttpStats::default();
        for i in 0..(MAX_KEPT + 50) {
            h.add(&seen("GET", &format!("/item/{i}"), 200));
        }
        h.add(&seen("GET", "/item/0", 200));
        assert_eq!(h.requests.distinct(), MAX_KEPT);
        assert_eq!(h.requests.other, 50);
        assert_eq!(h.requests.total, MAX_KEPT as u64 + 51);
        let (top, other) = h.requests.top(MAX_SHOWN);
        assert_eq!(top.len(), MAX_SHOWN);
        assert_eq!((&*top[0].0.path, top[0].1), ("/item/0", 2));
        assert_eq!(other, MAX_KEPT as u64 + 51 - 2 - 9);
    }
}
