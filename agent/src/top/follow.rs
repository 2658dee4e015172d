//! Following egret's output file as it grows and rotates (`tail -F`, by lines).
//!
//! The file is opened at its end minus `history` bytes (from the first whole line there), so
//! `egret top` starts with the recent past. Each [`Follower::poll`] reads what was appended;
//! when the path names another file (egret rotated it: renamed, and a new one created) or the
//! file shrank (truncated), the rest of the old file is read first, then the new one from
//! its start. A line longer than [`MAX_LINE`] is skipped and counted.

use std::{
    fs::File,
    io::{self, Read as _, Seek as _, SeekFrom},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Longer lines are skipped (egret's own lines are far shorter).
pub const MAX_LINE: usize = 1024 * 1024;

/// Reads appended lines of one path across rotations.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    /// (device, inode) of `file`.
    id: (u64, u64),
    /// Where `file` has been read to.
    offset: u64,
    /// A line not yet ended by a newline.
    partial: Vec<u8>,
    /// Skipping the rest of a line longer than [`MAX_LINE`], or the partial first line.
    skipping: bool,
    /// Lines skipped for their length.
    pub too_long: u64,
    /// Times a new file was followed (rotation, truncation).
    pub reopened: u64,
}

impl Follower {
    /// Follows `path` from `history` bytes before its end (from the next whole line). A
    /// missing file is waited for.
    pub fn new(path: &Path, history: u64) -> Self {
        let mut me = Self {
            path: path.to_owned(),
            file: None,
            id: (0, 0),
            offset: 0,
            partial: Vec::new(),
            skipping: false,
            too_long: 0,
            reopened: 0,
        };
        if let Ok((file, id, len)) = open(path) {
            me.file = Some(file);
            me.id = id;
            me.offset = len.saturating_sub(history);
            // Mid-line: skip to the first whole line.
            me.skipping = me.offset > 0;
            if me.skipping {
                me.offset -= 1;
            }
        }
        me
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file is open (it may not exist yet).
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Hands every whole line appended since the last call to `line` (without its newline).
    ///
    /// # Errors
    /// Reading the file failed (not: the file is missing, which is waited for).
    pub fn poll(&mut self, line: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        self.read_to_end(line)?;
        let current = match open(&self.path) {
            Ok(current) => Some(current),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(err),
        };
        let Some((file, id, len)) = current else {
            return Ok(());
        };
        let replaced = self.file.is_none() || id != self.id || len < self.offset;
        if replaced {
            // The old file's last line, if it had no newline, is whole now.
            if !self.partial.is_empty() && !self.skipping {
                line(&self.partial);
            }
            self.partial.clear();
            self.skipping = false;
            if self.file.is_some() {
                self.reopened += 1;
            }
            self.file = Some(file);
            self.id = id;
            self.offset = 0;
            self.read_to_end(line)?;
        }
        Ok(())
    }

    fn read_to_end(&mut self, line: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            self.offset += n as u64;
            let mut chunk = buf.get(..n).unwrap_or_default();
            while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
                let (head, rest) = chunk.split_at(end);
                if self.skipping {
                    self.skipping = false;
                } else if self.partial.is_empty() {
                    line(head);
                } else {
                    self.partial.extend_from_slice(head);
                    line(&self.partial);
                }
                self.partial.clear();
                chunk = rest.get(1..).unwrap_or_default();
            }
            if !self.skipping {
                self.partial.extend_from_slice(chunk);
                if self.partial.len() > MAX_LINE {
                    self.partial.clear();
                    self.skipping = true;
                    self.too_long += 1;
                }
            }
        }
    }
}

/// The file, its (device, inode) and length.
fn open(path: &Path) -> io::Result<(File, (u64, u64), u64)> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    Ok((file, (meta.dev(), meta.ino()), meta.len()))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("egret-follow-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    fn poll(f: &mut Follower) -> Vec<String> {
        let mut lines = Vec::new();
        f.poll(&mut |l| lines.push(String::from_utf8_lossy(l).into_owned()))
            .unwrap();
        lines
    }

    #[test]
    fn starts_with_the_recent_past_from_a_whole_line() {
        let d = dir("history");
        let path = d.0.join("events.jsonl");
        append(&path, "first line\nsecond line\nthird\n");
        // 9 bytes before the end is inside "second line": it is skipped whole.
        let mut f = Follower::new(&path, 9);
        assert_eq!(poll(&mut f), ["third"]);
        // From a line's start exactly: that line is whole.
        let mut f = Follower::new(&path, 6);
        assert_eq!(poll(&mut f), ["third"]);
        let mut f = Follower::new(&path, 1 << 20);
        assert_eq!(poll(&mut f), ["first line", "second line", "third"]);
        let mut f = Follower::new(&path, 0);
        assert!(poll(&mut f).is_empty());
    }

    #[test]
    fn follows_appends_partial_lines_and_rotation() {
        let d = dir("rotate");
        let path = d.0.join("events.jsonl");
        let mut f = Follower::new(&path, 0);
        assert!(!f.is_open());
        assert!(poll(&mut f).is_empty());
        append(&path, "a\nb");
        assert_eq!(poll(&mut f), ["a"]);
        append(&path, "c\nd\n");
        assert_eq!(poll(&mut f), ["bc", "d"]);
        // Rotated: the old file gets its last line, then a new file starts.
        append(&path, "e\n");
        std::fs::rename(&path, d.0.join("events.jsonl.1")).unwrap();
        append(&path, "f\n");
        assert_eq!(poll(&mut f), ["e", "f"]);
        assert_eq!(f.reopened, 1);
        // Truncated in place (shorter than what was read): read again from the start.
        append(&path, "more\n");
        assert_eq!(poll(&mut f), ["more"]);
        std::fs::write(&path, "g\n").unwrap();
        assert_eq!(poll(&mut f), ["g"]);
        assert_eq!(f.reopened, 2);
    }

    #[test]
    fn a_line_too_long_is_skipped_and_counted() {
        let d = dir("long");
        let path = d.0.join("events.jsonl");
        let mut f = Follower::new(&path, 0);
        append(&path, &"x".repeat(MAX_LINE + 10));
        assert!(poll(&mut f).is_empty());
        append(&path, "yyy\nok\n");
        assert_eq!(poll(&mut f), ["ok"]);
        assert_eq!(f.too_long, 1);
    }
}
