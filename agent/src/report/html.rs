//! `--format html`: one self-contained page. Inline CSS and an inline SVG chart drawn here;
//! no script, nothing fetched (a Content-Security-Policy says so to the browser too). Every
//! string from the input is HTML-escaped.

use std::fmt::Write as _;

use super::{
    aggregate::Dimension,
    model::{DestDoc, GroupDoc, ReportDoc, TimelineDoc},
    timespec::rfc3339_seconds,
    wording::{
        count, http_counts, http_dests, losses, not_listed, plural, request_label, seen,
        status_codes, HTTP_NOTE,
    },
};

/// Series colours (colour-blind friendly, after Okabe-Ito), then grey for "other".
const COLOURS: [&str; 8] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#7f5fbf",
];
const OTHER_COLOUR: &str = "#b0b4ba";

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab and newline are not allowed in HTML text.
            c if c.is_control() && c != '\t' && c != '\n' => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root { --fg:#1d2330; --muted:#5d6675; --line:#dfe3ea; --bg:#f5f7fa; --card:#fff; --warn:#b3261e; --warnbg:#fdecea; --accent:#0072b2; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; color:var(--fg); background:var(--bg); }
main { max-width:1180px; margin:0 auto; padding:24px 28px 40px; }
header h1 { margin:0; font-size:24px; letter-spacing:-0.01em; }
header h1 span { color:var(--accent); }
.sub { color:var(--muted); margin:4px 0 0; }
h2 { font-size:17px; margin:30px 0 10px; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin-top:18px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:10px 16px; min-width:128px; }
.card .num { display:block; font-size:22px; font-weight:600; font-variant-numeric:tabular-nums; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card.warn .num { color:var(--warn); }
.panel { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px 16px; }
svg text { font:11px system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif; fill:var(--muted); }
svg .grid { stroke:var(--line); stroke-width:1; }
svg .axis { stroke:#9aa3b0; stroke-width:1; }
.legend { list-style:none; margin:10px 0 0; padding:0; display:flex; flex-wrap:wrap; gap:6px 18px; }
.legend li { display:flex; align-items:center; gap:6px; font-size:12.5px; }
.swatch { display:inline-block; width:11px; height:11px; border-radius:2px; flex:none; }
table { width:100%; border-collapse:collapse; background:var(--card); table-layout:fixed; }
col.port { width:62px; } col.proto { width:74px; } col.num { width:122px; } col.small { width:88px; } col.time { width:176px; }
th, td { text-align:left; padding:6px 9px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-size:11px; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; text-transform:uppercase; letter-spacing:.03em; color:var(--muted); font-weight:600; background:#fafbfc; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; }
td.t { white-space:nowrap; color:var(--muted); font-variant-numeric:tabular-nums; }
td.d { word-break:break-all; }
.addr { display:block; color:var(--muted); font-size:12px; }
tr.warn td.d { color:var(--warn); }
.tag { display:inline-block; font-size:11px; padding:0 6px; border-radius:9px; background:var(--warnbg); color:var(--warn); margin-left:6px; }
.tablewrap { border:1px solid var(--line); border-radius:8px; overflow:hidden; }
details { background:var(--card); border:1px solid var(--line); border-radius:8px; margin:8px 0; overflow:hidden; }
summary { cursor:pointer; padding:9px 14px; display:flex; flex-wrap:wrap; gap:4px 14px; align-items:baseline; }
summary .gname { font-weight:600; word-break:break-all; }
summary .gmeta { color:var(--muted); font-size:12.5px; }
details table { border-top:1px solid var(--line); }
.more { color:var(--muted); font-size:12.5px; padding:6px 14px; margin:0; }
.empty { color:var(--muted); }
.notice { background:var(--warnbg); color:var(--warn); border-radius:8px; padding:8px 14px; margin-top:14px; }
footer { margin-top:34px; color:var(--muted); font-size:12px; }
footer code { word-break:break-all; }
"#;

/// The smallest of 1, 2, 5, 10, 20, 50, ... that is at least `raw`.
fn nice_step(raw: u64) -> u64 {
    let mut magnitude: u64 = 1;
    loop {
        for m in [1, 2, 5] {
            let step = magnitude.saturating_mul(m);
            if step >= raw || step == u64::MAX {
                return step.max(1);
            }
        }
        magnitude = magnitude.saturating_mul(10);
    }
}

/// Axis label for a bucket start, `step_s` seconds after the previous label: the date when
/// the chart spans days, seconds only when labels are less than a minute apart.
fn tick_label(ns: i64, span_s: i64, step_s: i64) -> String {
    let t = rfc3339_seconds(ns); // 2026-11-22T06:01:41Z
    let date = t.get(5..10).unwrap_or_default();
    let hms = t.get(11..19).unwrap_or_default();
    let hm = t.get(11..16).unwrap_or_default();
    if span_s > 86_400 {
        format!("{date} {hm}")
    } else if step_s >= 60 {
        hm.to_owned()
    } else {
        hms.to_owned()
    }
}

/// The colour of the timeline's series `k`: grey past the last colour.
fn series_colour(k: usize) -> &'static str {
    COLOURS.get(k).copied().unwrap_or(OTHER_COLOUR)
}

/// The chart's size and margins (SVG user units): the plot is what the margins leave.
const CHART_W: f64 = 1080.0;
const CHART_H: f64 = 300.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 26.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 44.0;
const PLOT_W: f64 = CHART_W - LEFT - RIGHT;
const PLOT_H: f64 = CHART_H - TOP - BOTTOM;

/// The stacked-bar chart of connections per time bucket, by destination.
fn chart(out: &mut String, t: &TimelineDoc) {
    if t.buckets == 0 {
        out.push_str("<p class=\"empty\">No connections in the range.</p>\n");
        return;
    }
    let chart = Chart::new(t);
    let _ = writeln!(
        out,
        "<svg id=\"timeline\" role=\"img\" aria-label=\"Connections over time by destination\" \
         viewBox=\"0 0 {CHART_W} {CHART_H}\" width=\"100%\" preserveAspectRatio=\"xMidYMid meet\">"
    );
    chart.y_axis(out);
    chart.bars(out);
    chart.x_axis(out);
    out.push_str("</svg>\n");
    legend(out, t);
}

/// A timeline with the scales it is drawn at.
struct Chart<'t> {
    timeline: &'t TimelineDoc,
    /// Connections per bucket, every destination together.
    totals: Vec<u64>,
    /// The y axis: labels every `step` connections, up to `y_max` at the top.
    step: u64,
    y_max: u64,
    /// The width each bucket has, and the width of its bar within it.
    slot: f64,
    bar_w: f64,
    /// When the first bucket starts, and how long each lasts.
    start_ns: i64,
    width_ns: i64,
}

impl<'t> Chart<'t> {
    fn new(t: &'t TimelineDoc) -> Self {
        let totals: Vec<u64> = (0..t.buckets)
            .map(|i| {
                t.series
                    .iter()
                    .map(|s| s.counts.get(i).copied().unwrap_or(0))
                    .chain(t.other.get(i).copied())
                    .fold(0_u64, u64::saturating_add)
            })
            .collect();
        let max = totals.iter().copied().max().unwrap_or(0).max(1);
        let step = nice_step(max.div_ceil(4));
        let y_max = max.div_ceil(step).saturating_mul(step).max(step);
        let n = t.buckets as f64;
        let slot = PLOT_W / n;
        let gap = if slot > 6.0 {
            (slot * 0.18).min(6.0)
        } else {
            0.0
        };
        Self {
            timeline: t,
            totals,
            step,
            y_max,
            slot,
            // Few buckets: bars no wider than 40 px, centred in their slots.
            bar_w: (slot - gap).clamp(0.5, 40.0),
            start_ns: t
                .start
                .as_deref()
                .and_then(super::input::parse_rfc3339_ns)
                .unwrap_or(0),
            width_ns: t.bucket_seconds.saturating_mul(1_000_000_000),
        }
    }

    /// The height `v` connections take on the plot.
    fn scale(&self, v: u64) -> f64 {
        PLOT_H * (v as f64) / (self.y_max as f64)
    }

    /// When bucket `i` starts.
    fn bucket_ns(&self, i: usize) -> i64 {
        self.start_ns
            .saturating_add(self.width_ns.saturating_mul(i64::try_from(i).unwrap_or(0)))
    }

    /// Horizontal grid and y labels (at most five: y_max is at most four steps, rounded up).
    fn y_axis(&self, out: &mut String) {
        for k in 0..=8_u64 {
            let v = self.step.saturating_mul(k);
            if v > self.y_max || (k > 0 && v == self.step.saturating_mul(k - 1)) {
                break;
            }
            let y = TOP + PLOT_H - self.scale(v);
            let _ = writeln!(
                out,
                "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v}</text>",
                CHART_W - RIGHT,
                LEFT - 8.0,
                y + 4.0
            );
        }
    }

    /// One stacked bar per bucket that has connections.
    fn bars(&self, out: &mut String) {
        for (i, total) in self.totals.iter().enumerate() {
            if *total == 0 {
                continue;
            }
            let _ = write!(out, "<g class=\"bar\" data-total=\"{total}\">");
            self.segments(out, i);
            out.push_str("</g>\n");
        }
    }

    /// Bucket `i`'s bar: a segment per destination with connections in it, the busiest
    /// series at the bottom and the other destinations on top.
    fn segments(&self, out: &mut String, i: usize) {
        let t = self.timeline;
        let x = LEFT + self.slot * (i as f64) + (self.slot - self.bar_w) / 2.0;
        let when = rfc3339_seconds(self.bucket_ns(i));
        let bar_w = self.bar_w;
        let mut base = 0_u64;
        let destinations = t
            .series
            .iter()
            .enumerate()
            .map(|(k, s)| {
                (
                    series_colour(k),
                    s.destination.as_str(),
                    s.counts.get(i).copied().unwrap_or(0),
                )
            })
            .chain(std::iter::once((
                OTHER_COLOUR,
                "other destinations",
                t.other.get(i).copied().unwrap_or(0),
            )));
        for (colour, label, count) in destinations {
            if count == 0 {
                continue;
            }
            let y = TOP + PLOT_H - self.scale(base.saturating_add(count));
            let height = self.scale(count);
            let _ = write!(
                out,
                "<rect class=\"seg\" x=\"{x:.2}\" y=\"{y:.2}\" width=\"{bar_w:.2}\" \
                 height=\"{height:.2}\" fill=\"{colour}\"><title>{}: {} from {}</title></rect>",
                esc(label),
                plural(count, "connection", "connections"),
                esc(&when)
            );
            base = base.saturating_add(count);
        }
    }

    /// The x axis, its labels at round times (at most eight), and the width of a bar.
    fn x_axis(&self, out: &mut String) {
        let t = self.timeline;
        let _ = writeln!(
            out,
            "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
            CHART_W - RIGHT,
            TOP + PLOT_H,
            TOP + PLOT_H
        );
        let span_s = t
            .bucket_seconds
            .saturating_mul(i64::try_from(t.buckets).unwrap_or(i64::MAX));
        let tick_s = tick_seconds(span_s, t.bucket_seconds);
        for i in 0..=t.buckets {
            let at = self.bucket_ns(i);
            if at.div_euclid(1_000_000_000).rem_euclid(tick_s.max(1)) != 0 {
                continue;
            }
            let x = LEFT + self.slot * (i as f64);
            let _ = writeln!(
                out,
                "<line class=\"axis\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                TOP + PLOT_H,
                TOP + PLOT_H + 5.0,
                TOP + PLOT_H + 19.0,
                esc(&tick_label(at, span_s, tick_s))
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">UTC, {} per bar</text>",
            CHART_W - RIGHT,
            CHART_H - 4.0,
            esc(&bucket_words(t.bucket_seconds))
        );
    }
}

/// The chart's legend: each series' colour and total, then the other destinations'.
fn legend(out: &mut String, t: &TimelineDoc) {
    out.push_str("<ul class=\"legend\">\n");
    for (k, s) in t.series.iter().enumerate() {
        let total: u64 = s.counts.iter().sum();
        let _ = writeln!(
            out,
            "<li><span class=\"swatch\" style=\"background:{}\"></span>{} <span class=\"gmeta\">({total})</span></li>",
            series_colour(k),
            esc(&s.destination)
        );
    }
    let other: u64 = t.other.iter().sum();
    if other > 0 {
        let _ = writeln!(
            out,
            "<li><span class=\"swatch\" style=\"background:{OTHER_COLOUR}\"></span>other destinations <span class=\"gmeta\">({other})</span></li>"
        );
    }
    out.push_str("</ul>\n");
}

/// Seconds between x labels: a multiple of the bucket width from a list of round durations,
/// so that at most eight labels fit.
fn tick_seconds(span_s: i64, width_s: i64) -> i64 {
    const ROUND: [i64; 16] = [
        1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400,
    ];
    let width_s = width_s.max(1);
    ROUND
        .iter()
        .copied()
        .filter(|t| t % width_s == 0)
        .find(|t| span_s / t <= 8)
        .unwrap_or_else(|| {
            // Days, in whole bucket widths.
            let days = (span_s / 8).max(86_400);
            let whole = (days.saturating_add(width_s - 1) / width_s).max(1);
            whole.saturating_mul(width_s)
        })
}

/// `64 s`, `8 min 32 s`, `2 h 16 min`.
fn bucket_words(s: i64) -> String {
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        match s % 60 {
            0 => format!("{} min", s / 60),
            r => format!("{} min {r} s", s / 60),
        }
    } else if s < 86_400 {
        match (s % 3600) / 60 {
            0 => format!("{} h", s / 3600),
            m => format!("{} h {m} min", s / 3600),
        }
    } else {
        format!("{:.1} days", (s as f64) / 86_400.0)
    }
}

fn time_cell(ns: Option<i64>) -> String {
    seen(ns).replacen('T', " ", 1)
}

/// Which colour the chart drew each destination in: the table rows show it.
struct SeriesColours {
    /// Each series' label with its colour.
    series: Vec<(String, &'static str)>,
}

impl SeriesColours {
    fn of(timeline: &TimelineDoc) -> Self {
        Self {
            series: timeline
                .series
                .iter()
                .enumerate()
                .map(|(k, s)| (s.destination.clone(), series_colour(k)))
                .collect(),
        }
    }

    /// The colour of `d`'s series, if it has one.
    fn colour(&self, d: &DestDoc) -> Option<&'static str> {
        let label =
            super::aggregate::dest_label(&d.destination, d.domain.is_some(), d.port, &d.transport);
        self.series
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, c)| *c)
    }
}

fn dest_table(out: &mut String, dests: &[DestDoc], colours: &SeriesColours) {
    out.push_str(
        "<table class=\"dests\"><colgroup><col><col class=\"port\"><col class=\"proto\">\
         <col class=\"num\"><col class=\"num\"><col class=\"small\"><col class=\"small\">\
         <col class=\"time\"><col class=\"time\"></colgroup><thead><tr><th>Destination</th><th class=\"n\">Port</th>\
         <th>Proto</th><th class=\"n\">Connections</th><th class=\"n\">Unapproved</th>\
         <th class=\"n\">Blocked</th><th class=\"n\">Alerts</th><th>First seen (UTC)</th>\
         <th>Last seen (UTC)</th></tr></thead><tbody>\n",
    );
    for d in dests {
        let warn = d.counts.need_attention();
        let _ = write!(
            out,
            "<tr class=\"dest{}\"><td class=\"d\">",
            if warn { " warn" } else { "" }
        );
        if let Some(colour) = colours.colour(d) {
            let _ = write!(
                out,
                "<span class=\"swatch\" style=\"background:{colour}\"></span> "
            );
        }
        out.push_str(&esc(&d.destination));
        if d.counts.blocked > 0 {
            out.push_str("<span class=\"tag\">blocked</span>");
        } else if d.counts.unapproved > 0 || d.counts.alerts > 0 {
            out.push_str("<span class=\"tag\">unapproved</span>");
        }
        if d.domain.is_some() && !d.addresses.is_empty() {
            let mut addrs = d.addresses.join(", ");
            if d.addresses_truncated {
                addrs.push_str(", …");
            }
            let _ = write!(out, "<span class=\"addr\">{}</span>", esc(&addrs));
        }
        let _ = writeln!(
            out,
            "</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"t\">{}</td><td class=\"t\">{}</td></tr>",
            d.port,
            esc(&d.transport),
            d.counts.connections,
            d.counts.unapproved,
            d.counts.blocked,
            d.counts.alerts,
            esc(&time_cell(d.counts.first_ns)),
            esc(&time_cell(d.counts.last_ns))
        );
    }
    out.push_str("</tbody></table>\n");
}

fn more(out: &mut String, total: usize, connections: u64, shown: &[DestDoc]) {
    if let Some(left_out) = not_listed(total, connections, shown) {
        let _ = writeln!(
            out,
            "<p class=\"more\">… {left_out} not listed: raise <code>--top</code> to see them</p>"
        );
    }
}

fn group(out: &mut String, g: &GroupDoc, open: bool, colours: &SeriesColours) {
    let _ = writeln!(
        out,
        "<details class=\"group\"{}><summary><span class=\"gname\">{}</span>\
         <span class=\"gmeta\">{} · {} · {}</span></summary>",
        if open { " open" } else { "" },
        esc(&g.name),
        plural(g.counts.connections, "connection", "connections"),
        plural(count(g.destinations_total), "destination", "destinations"),
        plural(g.counts.alerts, "alert", "alerts"),
    );
    dest_table(out, &g.destinations, colours);
    more(
        out,
        g.destinations_total,
        g.counts.connections,
        &g.destinations,
    );
    out.push_str("</details>\n");
}

fn card(out: &mut String, n: u64, label: &str, warn: bool) {
    let _ = writeln!(
        out,
        "<div class=\"card{}\"><span class=\"num\">{n}</span><span class=\"label\">{}</span></div>",
        if warn && n > 0 { " warn" } else { "" },
        esc(label)
    );
}

/// Groups whose tables start unfolded, per dimension (and every group with alerts).
const OPEN_GROUPS: usize = 3;

/// The whole page.
pub fn render(r: &ReportDoc) -> String {
    let mut out = String::with_capacity(64 * 1024);
    head(&mut out);
    header(&mut out, r);
    cards(&mut out, r);
    out.push_str(
        "<section id=\"chart\">\n<h2>Destinations over time</h2>\n<div class=\"panel\">\n",
    );
    chart(&mut out, &r.timeline);
    out.push_str("</div>\n</section>\n");
    let colours = SeriesColours::of(&r.timeline);
    top_destinations(&mut out, r, &colours);
    http_requests(&mut out, &r.destinations);
    for dim in Dimension::ALL {
        groups_by(&mut out, r, dim, &colours);
    }
    footer(&mut out, r);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

/// The document's head (with the style sheet), up to the start of `<main>`.
fn head(out: &mut String) {
    out.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <title>egret report</title>\n<style>",
    );
    out.push_str(STYLE);
    out.push_str("</style>\n</head>\n<body>\n<main>\n");
}

/// The title, and the times the report covers.
fn header(out: &mut String, r: &ReportDoc) {
    out.push_str("<header>\n<h1><span>egret</span> egress report</h1>\n");
    let first = time_cell(r.range.first_seen);
    let last = time_cell(r.range.last_seen);
    let _ = write!(
        out,
        "<p class=\"sub\">Connections seen {} to {} UTC",
        esc(&first),
        esc(&last)
    );
    if r.range.since.is_some() || r.range.until.is_some() {
        let _ = write!(
            out,
            " · range {} to {}",
            esc(r.range.since.as_deref().unwrap_or("start")),
            esc(r.range.until.as_deref().unwrap_or("end"))
        );
    }
    let _ = writeln!(
        out,
        " · generated {}</p>\n</header>",
        esc(&time_cell(Some(r.generated_at)))
    );
}

/// The totals, one card each, and a notice when egret lost events.
fn cards(out: &mut String, r: &ReportDoc) {
    let t = &r.totals;
    out.push_str("<section class=\"cards\">\n");
    card(out, t.connections, "connections", false);
    card(out, count(t.destinations), "destinations", false);
    card(out, t.alerts, "alerts", true);
    card(out, t.unapproved, "unapproved", true);
    card(out, t.blocked, "blocked", true);
    card(out, count(r.groups.process.len()), "executables", false);
    if r.input.bad_lines > 0 {
        card(out, r.input.bad_lines, "bad input lines", true);
    }
    out.push_str("</section>\n");
    if let Some(losses) = losses(t) {
        let _ = writeln!(out, "<p class=\"notice\">{losses}.</p>");
    }
}

/// The busiest destinations over everything.
fn top_destinations(out: &mut String, r: &ReportDoc, colours: &SeriesColours) {
    let t = &r.totals;
    out.push_str("<section id=\"top\">\n<h2>Top destinations</h2>\n");
    if r.destinations.is_empty() {
        out.push_str("<p class=\"empty\">No connections.</p>\n");
    } else {
        out.push_str("<div class=\"tablewrap\">\n");
        dest_table(out, &r.destinations, colours);
        more(out, t.destinations, t.connections, &r.destinations);
        out.push_str("</div>\n");
    }
    out.push_str("</section>\n");
}

/// The HTTP requests of the listed destinations that had any; nothing when none had.
fn http_requests(out: &mut String, dests: &[DestDoc]) {
    let with_http = http_dests(dests);
    if with_http.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<section id=\"http\">\n<h2>HTTP requests <span class=\"gmeta\">({})</span></h2>",
        esc(HTTP_NOTE)
    );
    for (label, h) in with_http {
        let _ = writeln!(
            out,
            "<details class=\"group\" open><summary><span class=\"gname\">{}</span>\
             <span class=\"gmeta\">{} · status codes {}</span></summary>",
            esc(&label),
            esc(&http_counts(h)),
            esc(&status_codes(h))
        );
        out.push_str(
            "<table class=\"http\"><colgroup><col class=\"num\"><col></colgroup><thead><tr>\
             <th class=\"n\">Connections</th><th>Request</th></tr></thead><tbody>\n",
        );
        let rows = h
            .paths
            .iter()
            .map(|p| (p.connections, esc(&request_label(p))))
            .chain((h.other_paths > 0).then(|| (h.other_paths, "other requests".to_owned())));
        for (n, request) in rows {
            let _ = writeln!(
                out,
                "<tr><td class=\"n\">{n}</td><td class=\"d\">{request}</td></tr>"
            );
        }
        out.push_str("</tbody></table>\n</details>\n");
    }
    out.push_str("</section>\n");
}

/// The groups of one dimension (processes, units, ...), each with its destinations.
fn groups_by(out: &mut String, r: &ReportDoc, dim: Dimension, colours: &SeriesColours) {
    let groups = r.groups.get(dim);
    let _ = writeln!(
        out,
        "<section id=\"by-{}\">\n<h2>{} <span class=\"gmeta\">({})</span></h2>",
        dim.key(),
        esc(dim.title()),
        groups.len()
    );
    if groups.is_empty() {
        out.push_str("<p class=\"empty\">None in this input.</p>\n");
    }
    for (i, g) in groups.iter().enumerate() {
        let open = i < OPEN_GROUPS || g.counts.need_attention();
        group(out, g, open, colours);
    }
    out.push_str("</section>\n");
}

/// What the report was made from.
fn footer(out: &mut String, r: &ReportDoc) {
    out.push_str("<footer>\n<p>Input: ");
    let files: Vec<String> = r
        .input
        .files
        .iter()
        .map(|f| {
            format!(
                "<code>{}</code> ({}, {} bad)",
                esc(&f.path),
                plural(f.lines, "line", "lines"),
                f.bad_lines
            )
        })
        .collect();
    out.push_str(&files.join(", "));
    let joined = if r.input.end_lines > 0 {
        format!(" ({} joined by their end lines)", r.input.end_lines)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        ". {} connection lines{joined}, {} alert lines, {} outside the range. Made by <code>egret report</code> ({}).</p>\n</footer>",
        r.input.connection_lines,
        r.input.alert_lines,
        r.input.out_of_range,
        esc(r.schema)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(esc("a\u{0}b"), "a\\u{0}b");
        assert_eq!(esc("zürich\tx"), "zürich\tx");
    }

    #[test]
    fn steps_and_labels() {
        assert_eq!(nice_step(0), 1);
        assert_eq!(nice_step(1), 1);
        assert_eq!(nice_step(3), 5);
        assert_eq!(nice_step(7), 10);
        assert_eq!(nice_step(11), 20);
        assert_eq!(nice_step(40), 50);
        assert_eq!(nice_step(u64::MAX), u64::MAX);
        assert_eq!(bucket_words(8), "8 s");
        assert_eq!(bucket_words(64), "1 min 4 s");
        assert_eq!(bucket_words(3600), "1 h");
        let ns = 1_795_327_301_000_000_000; // 2026-11-22T06:01:41Z
        assert_eq!(tick_label(ns, 600, 4), "06:01:41");
        assert_eq!(tick_label(ns, 7200, 60), "06:01");
        assert_eq!(tick_seconds(6 * 3600, 300), 3600);
        assert_eq!(tick_seconds(100, 1), 30);
        assert_eq!(tick_seconds(3600, 30), 600);
        assert_eq!(tick_seconds(30 * 86_400, 86_400), 345_600);
        assert_eq!(tick_label(ns, 200_000, 2048), "11-22 06:01");
    }
}
