//! An argument vector a watched process chose (NUL-separated, any bytes, lossily UTF-8 as the
//! agent reads it) through the built-in redaction rules and a user pattern: nothing may panic,
//! the vector keeps its length, and redacting again changes nothing (what is written is
//! stable, and the count of redacted processes counts each once).
#![no_main]

use std::sync::OnceLock;

use egret::redact::{Pattern, Redactor};
use libfuzzer_sys::fuzz_target;

fn redactor() -> &'static Redactor {
    static REDACTOR: OnceLock<Redactor> = OnceLock::new();
    REDACTOR.get_or_init(|| {
        let custom = Pattern::parse(r"(?i)internal-[a-z0-9]{4,}").expect("a valid pattern");
        Redactor::new(true, &[custom]).expect("the built-in rules compile")
    })
}

fuzz_target!(|data: &[u8]| {
    let args = egret::process::split_nul(data);
    let redactor = redactor();
    let Some(once) = redactor.redacted(&args) else {
        return;
    };
    assert_eq!(once.len(), args.len());
    assert!(once.iter().any(|a| a.contains(egret::redact::MARKER)));
    assert_eq!(
        redactor.redacted(&once),
        None,
        "redacting twice changed {once:?}"
    );
});
