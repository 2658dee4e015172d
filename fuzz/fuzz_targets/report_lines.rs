//! JSON lines (whatever a file given to `egret report` holds) through everything the report
//! does with them (`report::run_on`: the line reader, `input::classify`, the join of start and
//! end lines, the aggregate, the text, JSON or HTML report, or the suggested policy): nothing
//! may panic, a JSON report is JSON, and a suggested policy is one egret accepts.
//!
//! Input: `[f][lines]`: `f` chooses the format (`f % 3`: text, JSON, HTML), `--suggest-policy`
//! (bit 2; then `--include-blocked` bit 3, `--loopback` `(f >> 4) % 3`), a time range (bit 6)
//! and the read size (bit 7: 7 bytes at a time). Two NUL bytes start another file.
#![no_main]

use std::io::BufReader;

use egret::{
    policy::parse::parse_policy,
    report::{run_on, Format, LoopbackChoice, PolicyFormat, ReportArgs, Source},
};
use libfuzzer_sys::fuzz_target;

/// 2023-11-14T22:13:20Z.
const NOW_NS: i64 = 1_700_000_000_000_000_000;

fn args(f: u8, files: usize) -> ReportArgs {
    ReportArgs {
        files: (0..files).map(|i| format!("in{i}.jsonl").into()).collect(),
        since: None,
        until: None,
        top: 3,
        format: [Format::Text, Format::Json, Format::Html][usize::from(f % 3)],
        suggest_policy: f & 4 != 0,
        loopback: [
            LoopbackChoice::Auto,
            LoopbackChoice::Approve,
            LoopbackChoice::Audit,
        ][usize::from((f >> 4) % 3)],
        include_blocked: f & 8 != 0,
        policy_format: [
            PolicyFormat::Egret,
            PolicyFormat::Networkpolicy,
            PolicyFormat::Cilium,
            PolicyFormat::Systemd,
        ][usize::from((f >> 6) % 4)],
        output_dir: None,
        out: None,
        strict: false,
        max_warnings: 5,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&f, lines)) = data.split_first() else {
        return;
    };
    let mut files: Vec<&[u8]> = Vec::new();
    let mut rest = lines;
    while let Some(at) = rest.windows(2).position(|w| w == [0, 0]) {
        files.push(&rest[..at]);
        rest = &rest[at + 2..];
    }
    files.push(rest);
    files.truncate(4);
    let args = args(f, files.len());
    let capacity = if f & 0x80 != 0 { 7 } else { 8192 };
    let sources = files
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let reader = BufReader::with_capacity(capacity, *bytes);
            (format!("in{i}.jsonl"), Source::Reader(Box::new(reader)))
        })
        .collect();
    let range = if f & 0x40 != 0 {
        (Some(NOW_NS - 3_600_000_000_000), Some(NOW_NS))
    } else {
        (None, None)
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = run_on(&args, range, sources, NOW_NS, &mut out, &mut err)
        .expect("bytes in memory read and write");
    assert!(outcome.bad_lines <= lines.len() as u64 + 1);
    let out = String::from_utf8(out).expect("the report is UTF-8");
    if args.suggest_policy && args.policy_format != PolicyFormat::Egret {
        // Kubernetes and systemd policies: every document of the stream is YAML or a comment.
        assert!(out.starts_with("# Suggested by egret report"));
    } else if args.suggest_policy {
        if let Err(errors) = parse_policy(&out, "suggested.yaml") {
            panic!("the suggested policy does not parse: {errors}\n{out}");
        }
    } else if args.format == Format::Json {
        serde_json::from_str::<serde_json::Value>(&out).expect("the JSON report is JSON");
    }
});
