//! Lines of an output file (whatever `egret top --input` reads, and any `Document` egret could
//! draw as text) through `egret top`'s model (`top::model::Model::ingest`, then every grouping
//! and sort with a filter) and the text rendering of `--format text` (`ecs::text::render`):
//! nothing may panic, and a text line never carries a control or invisible format character
//! (terminal injection) but egret's own colour codes.
//!
//! Input: lines separated by newlines.
#![no_main]

use egret::{
    ecs::text::{render, Style},
    schema,
    top::model::{Grouping, Model, SortBy},
};
use libfuzzer_sys::fuzz_target;

/// What a terminal acts on or hides.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}')
}

fuzz_target!(|data: &[u8]| {
    let mut model = Model::default();
    for line in data.split(|&b| b == b'\n') {
        model.ingest(line);
        let Ok(doc) = schema::read(line) else {
            continue;
        };
        let mut plain = Vec::new();
        render(&doc, Style { colour: false }, &mut plain);
        let plain = String::from_utf8(plain).expect("text lines are UTF-8");
        assert!(!plain.chars().any(unsafe_char), "{plain:?}");
        let mut coloured = Vec::new();
        render(&doc, Style { colour: true }, &mut coloured);
        let coloured = String::from_utf8(coloured).expect("text lines are UTF-8");
        // Without egret's own SGR codes, the coloured line is the plain one.
        let mut stripped = coloured.clone();
        for code in ["\x1b[1;31m", "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[0m"] {
            stripped = stripped.replace(code, "");
        }
        assert_eq!(stripped, plain);
    }
    for grouping in Grouping::ALL {
        for sort in [
            SortBy::Connections,
            SortBy::Bytes,
            SortBy::LastSeen,
            SortBy::Destination,
            SortBy::Verdict,
            SortBy::Group,
        ] {
            let rows = model.rows(grouping, sort, false, "a");
            assert!(rows.len() <= model.rows(grouping, sort, true, "").len());
        }
    }
});
