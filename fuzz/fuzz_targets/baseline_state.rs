//! A baseline state file's bytes through what `egret run --baseline-learn` and `egret baseline`
//! do with them: `baseline::store::decode`; a state that decodes is cut to small bounds
//! (`Baseline::new`), encoded again (and decodes to the same state), shown, and exported as a
//! policy, which must parse as one. Nothing may panic.
#![no_main]

use egret::{
    baseline::{
        command::{export, show, Export, ExportFormat},
        store::{decode, encode},
        Baseline, Bounds,
    },
    policy::parse::parse_policy,
    report::suggest::LoopbackChoice,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(state) = decode(data) else {
        return;
    };
    let again = decode(&encode(&state)).expect("an encoded state decodes");
    assert_eq!(again, state, "round trip");
    let baseline = Baseline::new(
        state,
        Bounds {
            max_workloads: 4,
            max_destinations: 8,
        },
    );
    assert!(baseline.state.workloads.len() <= 4);
    assert!(baseline
        .state
        .workloads
        .values()
        .all(|w| w.destinations.len() <= 8));
    let text = show(&baseline.state, None, "fuzz.json");
    assert!(!text.contains('\u{1b}'), "show escapes control characters");
    for include_new in [false, true] {
        let how = Export {
            include_new,
            format: ExportFormat::Egret,
            loopback: LoopbackChoice::Auto,
        };
        let yaml = export(&baseline.state, None, how, "fuzz.json").expect("export renders");
        parse_policy(&yaml, "export").expect("an exported policy parses");
    }
});
