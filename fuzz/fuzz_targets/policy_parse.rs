//! A policy file's bytes through what `egret run --policy` does with them (`load_policy`
//! after reading: UTF-8, `parse_policy`, `block_mode_errors`, `compile`) and what
//! `egret policy check` prints (`summary`, `notes`): nothing may panic, an error names the
//! file with a line and column, and a policy that compiles has the matcher built from it.
#![no_main]

use egret::policy::{
    compile::compile,
    matcher::Matcher,
    parse::{block_mode_errors, notes, parse_policy, summary},
};
use libfuzzer_sys::fuzz_target;

const FILE: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    // `read_bounded` refuses a file that is not UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = match parse_policy(text, FILE) {
        Ok(policy) => policy,
        Err(errors) => {
            assert!(!errors.errors.is_empty(), "an error without a message");
            for error in &errors.errors {
                assert_eq!(error.file, FILE);
                assert!(error.to_string().starts_with("fuzz.yaml:"), "{error}");
            }
            return;
        }
    };
    assert_eq!(policy.source, FILE);
    let line = summary(&policy);
    assert!(line.starts_with("fuzz.yaml: ok:"), "{line}");
    let _ = notes(&policy);
    let _ = Matcher::new(&policy);
    if !block_mode_errors(&policy).is_empty() {
        return;
    }
    match compile(&policy) {
        Ok(compiled) => {
            let _ = compiled.has_scopes();
        }
        Err(errors) => assert!(!errors.errors.is_empty()),
    }
});
