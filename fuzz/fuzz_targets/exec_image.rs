//! An exec record as the kernel writes it, with every field a watched process can influence
//! (the path it named, its arguments, its file's name and path) and the rest arbitrary,
//! through `ExecImage::from_event` and `image::name`: nothing may panic, and the naming rules
//! the lines rely on hold.
//!
//! Input: the bytes of an `ExecEvent` after its header (zero-padded or cut to its size).
#![no_main]

use agent_common::{EventHeader, EventKind, ExecEvent, EVENT_VERSION};
use egret::process::{image, ExecImage};
use libfuzzer_sys::fuzz_target;

/// A pid no process has: nothing is read from `/proc`.
const GONE: u32 = u32::MAX - 1;

fuzz_target!(|data: &[u8]| {
    let size = size_of::<ExecEvent>();
    let header = size_of::<EventHeader>();
    let mut bytes = vec![0u8; size];
    let n = data.len().min(size - header);
    bytes[header..header + n].copy_from_slice(&data[..n]);
    bytes[0..2].copy_from_slice(&(EventKind::Exec as u16).to_ne_bytes());
    bytes[2..4].copy_from_slice(&EVENT_VERSION.to_ne_bytes());
    bytes[4..8].copy_from_slice(&(size as u32).to_ne_bytes());
    let Ok(agent_common::Event::Exec(event)) = agent_common::decode(&bytes) else {
        panic!("a whole exec record must decode");
    };
    let exec = ExecImage::from_event(&event);
    assert!(exec
        .exe_path
        .as_ref()
        .is_none_or(|p| !p.is_empty() && p.len() <= 16));
    let named = image::name(GONE, &exec, "comm");
    assert_eq!(named.args, exec.args);
    let base = |path: &str| path.rsplit('/').next().unwrap_or(path).to_owned();
    match named.executable.as_deref() {
        // A walked path is absolute, and names the process unless it ends in `/`.
        Some(exe) if !named.fileless => {
            assert!(exe.starts_with('/'), "{exe:?}");
            assert!(
                !exe.starts_with("/proc/") || exec.exe_path.is_some(),
                "{exe:?}"
            );
            if !base(exe).is_empty() {
                assert_eq!(named.name, base(exe));
            }
        }
        // A fileless one is its own name.
        Some(exe) => assert_eq!(named.name, exe),
        // Another mount namespace's file: the kernel's name only.
        None if exec.exe_foreign => assert_eq!(named.name, "comm"),
        // Unknown: the named path's basename, args[0]'s, the comm, or nothing; never the
        // basename of a descriptor link (`exe`, a descriptor's number).
        None => {
            let filename = exec.filename.as_str();
            let via_link = filename.starts_with("/proc/") || filename.starts_with("/dev/fd/");
            assert!(!named.name.contains('/'), "{:?}", named.name);
            assert!(
                !via_link || named.name.is_empty() || named.name != base(filename),
                "{:?} from {filename:?}",
                named.name
            );
            assert!(
                named.name.is_empty()
                    || named.name == "comm"
                    || named.name == base(filename)
                    || exec.args.first().is_some_and(|a| base(a) == named.name),
                "{:?}",
                named.name
            );
        }
    }
    if let Some(script) = &named.script {
        // Only the path the exec named, among the interpreter's first arguments.
        assert!(exec
            .args
            .iter()
            .skip(1)
            .take(2)
            .any(|a| script.ends_with(a.trim_start_matches("./"))));
    }
});
