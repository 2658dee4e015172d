//! Output files (whatever they now hold) through everything `egret verify` does with them
//! (`output::verify::verify_with`: rotated sets, the hash chain of each line, the output line
//! linking files, the explanation of the first break): nothing may panic, and the report
//! counts what it read.
//!
//! Input: `[f][bytes]`: two NUL bytes start another file (at most 4). Bit 0 of `f`: the files
//! are a rotated set (`events.jsonl.<stamp>`, ..., `events.jsonl`), else unrelated files.
#![no_main]

use std::path::PathBuf;

use egret::output::verify::{verify_with, VerifyError};
use libfuzzer_sys::fuzz_target;

const STAMPS: [&str; 3] = ["20261122T060141Z", "20261122T070141Z", "20261122T080141Z"];

fuzz_target!(|data: &[u8]| {
    let Some((&f, bytes)) = data.split_first() else {
        return;
    };
    let mut files: Vec<&[u8]> = Vec::new();
    let mut rest = bytes;
    while let Some(at) = rest.windows(2).position(|w| w == [0, 0]) {
        files.push(&rest[..at]);
        rest = &rest[at + 2..];
    }
    files.push(rest);
    files.truncate(4);
    let rotated = f & 1 != 0;
    let paths: Vec<PathBuf> = (0..files.len())
        .map(|i| match (rotated, STAMPS.get(i)) {
            (true, Some(stamp)) if i + 1 < files.len() => format!("events.jsonl.{stamp}"),
            (true, _) => "events.jsonl".to_owned(),
            (false, _) => format!("file{i}.jsonl"),
        })
        .map(PathBuf::from)
        .collect();
    let opened = verify_with(&paths, &mut |path| {
        let i = paths
            .iter()
            .position(|p| p == path)
            .expect("only the paths given are opened");
        Ok(Box::new(files[i]))
    });
    let report = match opened {
        Ok(report) => report,
        Err(VerifyError::NoFiles) => panic!("files were given"),
        Err(err) => panic!("reading bytes in memory failed: {err}"),
    };
    let _ = report.to_string();
    let newlines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    assert!(report.lines <= newlines, "{} lines", report.lines);
    if let Some(problem) = &report.problem {
        assert!(!report.intact());
        assert!(paths
            .iter()
            .any(|p| p.display().to_string() == problem.file));
    }
});
