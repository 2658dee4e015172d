//! The Prometheus text exposition format, version 0.0.4: `# HELP` and `# TYPE` lines, then
//! samples `name{label="value"} number`, one family at a time.

use std::fmt::Write as _;

/// The `Content-Type` of what [`Exposition`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
        }
    }
}

/// A sample's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Self::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}

/// Text being written in the exposition format.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// Whether `name` is a valid metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `name` is a valid label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`.
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A label value as written between quotes: `\`, `"` and line feeds escaped.
pub fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A `# HELP` text: `\` and line feeds escaped.
fn escape_help(help: &str, out: &mut String) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_value(value: Value, out: &mut String) {
    match value {
        Value::Int(v) => {
            let _ = write!(out, "{v}");
        }
        Value::Float(v) if v.is_nan() => out.push_str("NaN"),
        Value::Float(v) if v.is_infinite() && v > 0.0 => out.push_str("+Inf"),
        Value::Float(v) if v.is_infinite() => out.push_str("-Inf"),
        Value::Float(v) => {
            let _ = write!(out, "{v}");
        }
    }
}

impl Exposition {
    /// Starts a family: its `# HELP` and `# TYPE` lines. Its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_metric_name(name), "metric name {name}");
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_help(help, &mut self.out);
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind.name());
        self.out.push('\n');
    }

    /// One sample of the family just started.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                debug_assert!(valid_label_name(label), "label name {label}");
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_label_value(value, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        write_value(value.into(), &mut self.out);
        self.out.push('\n');
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Into<Value>) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A counter with one unlabelled sample.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.single(name, Kind::Counter, help, value);
    }

    /// A gauge with one unlabelled sample.
    pub fn gauge(&mut self, name: &str, help: &str, value: impl Into<Value>) {
        self.single(name, Kind::Gauge, help, value);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_samples() {
        let mut e = Exposition::default();
        e.counter("egret_things_total", "Things seen.", 3);
        e.family("egret_by_kind_total", Kind::Counter, "Things by kind.");
        e.sample("egret_by_kind_total", &[("kind", "a"), ("verdict", "b")], 1);
        e.sample("egret_by_kind_total", &[("kind", "c"), ("verdict", "d")], 2);
        e.gauge("egret_ratio", "A ratio.", 0.25);
        assert_eq!(
            e.finish(),
            "# HELP egret_things_total Things seen.\n\
             # TYPE egret_things_total counter\n\
             egret_things_total 3\n\
             # HELP egret_by_kind_total Things by kind.\n\
             # TYPE egret_by_kind_total counter\n\
             egret_by_kind_total{kind=\"a\",verdict=\"b\"} 1\n\
             egret_by_kind_total{kind=\"c\",verdict=\"d\"} 2\n\
             # HELP egret_ratio A ratio.\n\
             # TYPE egret_ratio gauge\n\
             egret_ratio 0.25\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut e = Exposition::default();
        e.family("m", Kind::Gauge, "back\\slash and\nnewline \"quotes\" stay");
        e.sample("m", &[("path", "C:\\dir \"x\"\nnext"), ("utf8", "é→✓")], 1);
        assert_eq!(
            e.finish(),
            "# HELP m back\\\\slash and\\nnewline \"quotes\" stay\n\
             # TYPE m gauge\n\
             m{path=\"C:\\\\dir \\\"x\\\"\\nnext\",utf8=\"é→✓\"} 1\n"
        );
    }

    #[test]
    fn float_values() {
        let mut out = String::new();
        for v in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1.5,
            -2.0,
            1_700_000_000.25,
        ] {
            write_value(Value::Float(v), &mut out);
            out.push(' ');
        }
        assert_eq!(out, "NaN +Inf -Inf 1.5 -2 1700000000.25 ");
        for text in out.split_whitespace().skip(3) {
            let _: f64 = text.parse().unwrap();
        }
        let mut out = String::new();
        write_value(Value::Int(u64::MAX), &mut out);
        assert_eq!(out, "18446744073709551615");
    }

    #[test]
    fn names() {
        for ok in ["egret_events_total", "a", "_x", "ns:sub_total", "A9"] {
            assert!(valid_metric_name(ok), "{ok}");
        }
        for bad in ["", "9a", "egret-events", "egret events", "é"] {
            assert!(!valid_metric_name(bad), "{bad}");
        }
        for ok in ["kind", "_x", "a9"] {
            assert!(valid_label_name(ok), "{ok}");
        }
        for bad in ["", "__name__", "a:b", "9", "a-b"] {
            assert!(!valid_label_name(bad), "{bad}");
        }
    }
}
