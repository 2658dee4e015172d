//! The baseline's state file: `STATE_DIR/baseline.json`.
//!
//! Written atomically: the whole document goes to `baseline.json.tmp`, which is fsynced,
//! renamed over `baseline.json`, and the directory fsynced; a crash at any point leaves the
//! old file or the new one, never a mix. Read back at start: a file that does not parse, is
//! truncated, or has a version this egret does not read is renamed `baseline.json.bad-SECS`
//! (set aside, never deleted), said in the log, counted, and learning starts afresh.

use std::{
    collections::HashMap,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{Destination, Seen, State, Workload, WorkloadBaseline, WorkloadKind, STATE_VERSION};

/// The state file's name in `--state-dir`.
pub const FILE_NAME: &str = "baseline.json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The file's document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileState {
    version: u32,
    learning_started: u64,
    learn_secs: u64,
    workloads: Vec<FileWorkload>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWorkload {
    kind: WorkloadKind,
    name: String,
    first_seen: u64,
    last_seen: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    learn_until: Option<u64>,
    destinations: Vec<FileDestination>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileDestination {
    #[serde(flatten)]
    destination: Destination,
    #[serde(flatten)]
    seen: Seen,
}

/// Just the version, read first so a newer file is refused by its version, not its fields.
#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

/// The state as the file's JSON (sorted: the same state gives the same bytes).
pub fn encode(state: &State) -> Vec<u8> {
    let mut workloads: Vec<FileWorkload> = state
        .workloads
        .iter()
        .map(|(w, b)| {
            let mut destinations: Vec<FileDestination> = b
                .destinations
                .iter()
                .map(|(d, s)| FileDestination {
                    destination: d.clone(),
                    seen: s.clone(),
                })
                .collect();
            destinations.sort_by(|a, b| a.destination.cmp(&b.destination));
            FileWorkload {
                kind: w.kind,
                name: w.name.clone(),
                first_seen: b.first_seen,
                last_seen: b.last_seen,
                learn_until: b.learn_until,
                destinations,
            }
        })
        .collect();
    workloads.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    let doc = FileState {
        version: STATE_VERSION,
        learning_started: state.learning_started,
        learn_secs: state.learn_secs,
        workloads,
    };
    let mut out = serde_json::to_vec(&doc).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The state from the file's bytes; the error says what is wrong (for the log).
pub fn decode(bytes: &[u8]) -> Result<State, String> {
    let version: VersionOnly =
        serde_json::from_slice(bytes).map_err(|e| format!("not a baseline state file: {e}"))?;
    if version.version != STATE_VERSION {
        return Err(format!(
            "version {} is not one this egret reads (it reads version {STATE_VERSION})",
            version.version
        ));
    }
    let doc: FileState =
        serde_json::from_slice(bytes).map_err(|e| format!("not a baseline state file: {e}"))?;
    let mut workloads = HashMap::with_capacity(doc.workloads.len());
    for fw in doc.workloads {
        let destinations = fw
            .destinations
            .into_iter()
            .map(|fd| (fd.destination, fd.seen))
            .collect();
        workloads.insert(
            Workload {
                kind: fw.kind,
                name: fw.name,
            },
            WorkloadBaseline {
                first_seen: fw.first_seen,
                last_seen: fw.last_seen,
                learn_until: fw.learn_until,
                destinations,
            },
        );
    }
    Ok(State {
        learning_started: doc.learning_started,
        learn_secs: doc.learn_secs,
        workloads,
    })
}

/// What [`load`] found.
#[derive(Debug)]
pub enum Loaded {
    /// No state file: learning starts now.
    Fresh,
    Read(State),
    /// The file was unusable and was renamed to `moved_to`; learning starts now.
    SetAside {
        moved_to: PathBuf,
        why: String,
    },
}

pub fn state_path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

fn temp_path(dir: &Path) -> PathBuf {
    dir.join(format!("{FILE_NAME}.tmp"))
}

/// Reads the state file in `dir`, setting an unusable one aside (`now`: Unix seconds, for
/// its new name). A leftover temporary file (a write cut short) is removed.
///
/// # Errors
/// The directory or file cannot be read, or an unusable file cannot be renamed.
pub fn load(dir: &Path, now: u64) -> Result<Loaded, StoreError> {
    let path = state_path(dir);
    match fs::remove_file(temp_path(dir)) {
        Ok(()) => log::info!("{}: removed a write cut short", temp_path(dir).display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("{}: {e}", temp_path(dir).display()),
    }
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Fresh),
        Err(e) => return Err(io(&path)(e)),
    };
    match decode(&bytes) {
        Ok(state) => Ok(Loaded::Read(state)),
        Err(why) => {
            let moved_to = dir.join(format!("{FILE_NAME}.bad-{now}"));
            fs::rename(&path, &moved_to).map_err(io(&path))?;
            Ok(Loaded::SetAside { moved_to, why })
        }
    }
}

/// Writes `bytes` as the state file in `dir`: temporary file, fsync, rename, directory fsync.
/// Returns the new file's inode.
///
/// # Errors
/// Any step that fails (the old file then stays whole).
pub fn write(dir: &Path, bytes: &[u8]) -> Result<u64, StoreError> {
    use std::os::unix::fs::MetadataExt as _;
    let tmp = temp_path(dir);
    let path = state_path(dir);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    let inode = file.metadata().map_err(io(&tmp))?.ino();
    drop(file);
    fs::rename(&tmp, &path).map_err(io(&path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(inode)
}

/// The state file's inode now (`None`: there is none), to notice another writer
/// (`egret baseline forget`).
pub fn inode(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata(state_path(dir)).ok().map(|m| m.ino())
}

/// Reads the state for `egret baseline`: a missing or unusable file is an error here
/// (nothing is moved: that is egret run's job).
///
/// # Errors
/// No file, or one that does not decode.
pub fn read_for_command(dir: &Path) -> Result<State, StoreError> {
    let path = state_path(dir);
    let bytes = fs::read(&path).map_err(io(&path))?;
    decode(&bytes).map_err(|message| StoreError::Invalid { path, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{Baseline, Bounds};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "egret-store-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn sample() -> State {
        let mut b = Baseline::new(
            State::new(100, 60),
            Bounds {
                max_workloads: 10,
                max_destinations: 10,
            },
        );
        let w = Workload {
            kind: WorkloadKind::Unit,
            name: "a.service".into(),
        };
        for (host, port) in [("api.example.com", 443), ("10.0.0.1", 80), ("::1", 53)] {
            b.observe(
                &w,
                &Destination {
                    host: host.into(),
                    port,
                    transport: "tcp".into(),
                },
                120,
            );
        }
        b.state
    }

    #[test]
    fn round_trips() {
        let state = sample();
        assert_eq!(decode(&encode(&state)).unwrap(), state);
        assert_eq!(encode(&state), encode(&decode(&encode(&state)).unwrap()));
    }

    #[test]
    fn every_truncation_is_refused_never_misread() {
        let bytes = encode(&sample());
        // Without the trailing newline the document is whole.
        let whole = bytes.len() - 1;
        for cut in 0..whole {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut} decoded");
        }
    }

    #[test]
    fn other_versions_are_refused_by_version() {
        let text = String::from_utf8(encode(&sample())).unwrap();
        let newer = text.replace("\"version\":1", "\"version\":2");
        let err = decode(newer.as_bytes()).unwrap_err();
        assert!(err.contains("version 2"), "{err}");
    }

    #[test]
    fn write_then_load_and_a_corrupt_file_is_set_aside() {
        let dir = scratch("rw");
        assert!(matches!(load(&dir, 1).unwrap(), Loaded::Fresh));
        let state = sample();
        write(&dir, &encode(&state)).unwrap();
        match load(&dir, 2).unwrap() {
            Loaded::Read(read) => assert_eq!(read, state),
            other => panic!("{other:?}"),
        }
        fs::write(state_path(&dir), b"{\"version\":1,\"learn").unwrap();
        // A write cut short is removed at load.
        fs::write(temp_path(&dir), b"partial").unwrap();
        match load(&dir, 3).unwrap() {
            Loaded::SetAside { moved_to, why } => {
                assert_eq!(moved_to, dir.join("baseline.json.bad-3"));
                assert!(moved_to.exists());
                assert!(why.contains("not a baseline state file"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!state_path(&dir).exists());
        assert!(!temp_path(&dir).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A crash between any two steps of a write leaves the old state or the new one.
    #[test]
    fn a_write_cut_short_leaves_the_old_file() {
        let dir = scratch("cut");
        let old = sample();
        write(&dir, &encode(&old)).unwrap();
        let mut new = old.clone();
        new.learn_secs = 999;
        let bytes = encode(&new);
        for cut in [0, 1, bytes.len() / 2, bytes.len()] {
            // The temporary file as a crash would leave it; the rename never happened.
            fs::write(temp_path(&dir), &bytes[..cut]).unwrap();
            match load(&dir, 5).unwrap() {
                Loaded::Read(read) => assert_eq!(read, old),
                other => panic!("{other:?}"),
            }
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
