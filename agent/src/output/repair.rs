//! Finding where the intact lines of a file end, after a crash or a power cut.
//!
//! A line is intact when it ends with a newline and is a JSON object. What follows the
//! last intact line is cut on start: the unterminated fragment a crash leaves mid-write,
//! and whole lines that are not JSON (what a power cut can leave: blocks of zeros, or data
//! of a later write without the blocks before it). A line that is JSON is never cut, even if
//! its chain is wrong: that is for `egret verify` to report, not for egret to erase. Cutting
//! complete lines stops after [`MAX_CUT_LINES_BYTES`], so a file that is not egret's is
//! not emptied.

use std::{fs::File, io, os::unix::fs::FileExt as _};

/// Most bytes of complete (newline-terminated) non-JSON lines cut at the end of a file.
pub const MAX_CUT_LINES_BYTES: u64 = 16 << 20;
/// Reading backwards, this much at a time.
const CHUNK: u64 = 64 << 10;

/// The intact end of a file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tail {
    /// Bytes to keep: the file up to and including the last intact line's newline.
    pub keep: u64,
    /// Bytes after `keep`.
    pub cut_bytes: u64,
    /// Complete (newline-terminated) lines among them; the rest is an unterminated fragment.
    pub cut_lines: u64,
    /// The last kept line (no newline), if any.
    pub last_line: Option<Vec<u8>>,
    /// The last kept line is not JSON: too much would have had to be cut to reach one.
    pub last_line_damaged: bool,
}

/// Offset of the last `\n` before `end`, reading backwards.
fn last_newline(file: &File, end: u64) -> io::Result<Option<u64>> {
    let mut hi = end;
    let mut buf = vec![0u8; usize::try_from(CHUNK).unwrap_or(65536)];
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK);
        let len = usize::try_from(hi - lo).unwrap_or(0);
        let chunk = buf.get_mut(..len).unwrap_or_default();
        file.read_exact_at(chunk, lo)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}

fn read_range(file: &File, from: u64, to: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(to - from).map_err(io::Error::other)?];
    file.read_exact_at(&mut buf, from)?;
    Ok(buf)
}

/// Whether a line (no newline) is a JSON object.
pub fn is_json_object(line: &[u8]) -> bool {
    line.first() == Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok()
}

/// Finds the intact end of `file`, `len` bytes long. Reads only.
pub fn scan(file: &File, len: u64) -> io::Result<Tail> {
    let mut tail = Tail::default();
    // Everything after the last newline is an unterminated fragment.
    let Some(nl) = last_newline(file, len)? else {
        tail.cut_bytes = len;
        return Ok(tail);
    };
    let mut keep = nl + 1;
    let mut cut_lines_bytes = 0u64;
    loop {
        // The line ending at keep - 1.
        let start = last_newline(file, keep - 1)?.map_or(0, |p| p + 1);
        let line_len = keep - 1 - start;
        if line_len > MAX_CUT_LINES_BYTES {
            // Not one of egret's lines; keep it rather than read it.
            tail.last_line_damaged = true;
            break;
        }
        let line = read_range(file, start, keep - 1)?;
        if is_json_object(&line) {
            tail.last_line = Some(line);
            break;
        }
        if cut_lines_bytes + line_len + 1 > MAX_CUT_LINES_BYTES {
            tail.last_line = Some(line);
            tail.last_line_damaged = true;
            break;
        }
        cut_lines_bytes += line_len + 1;
        tail.cut_lines += 1;
        keep = start;
        if keep == 0 {
            break;
        }
    }
    tail.keep = keep;
    tail.cut_bytes = len - keep;
    Ok(tail)
}

/// The first line of a file (no newline), if it has a complete one within 1 MiB.
pub fn first_line(file: &File) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read_at(buf.get_mut(filled..).unwrap_or_default(), filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
        if let Some(i) = buf
            .get(..filled)
            .and_then(|b| b.iter().position(|&c| c == b'\n'))
        {
            buf.truncate(i);
            return Ok(Some(buf));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::TempDir;
    use std::io::Write as _;

    fn scan_bytes(name: &str, bytes: &[u8]) -> Tail {
        let dir = TempDir::new(name);
        let path = dir.join("events.jsonl");
        let mut f = File::create(&path).unwrap();
        f.write_all(bytes).unwrap();
        let f = File::open(&path).unwrap();
        scan(&f, bytes.len() as u64).unwrap()
    }

    /// What [`scan`] finds in a file whose kept lines are JSON.
    fn intact_up_to(keep: u64, cut_bytes: u64, cut_lines: u64, last_line: &[u8]) -> Tail {
        Tail {
            keep,
            cut_bytes,
            cut_lines,
            last_line: Some(last_line.to_vec()),
            last_line_damaged: false,
        }
    }

    #[test]
    fn an_intact_file_is_kept_whole() {
        let t = scan_bytes("intact", b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(t, intact_up_to(16, 0, 0, b"{\"b\":2}"));
        let t = scan_bytes("empty", b"");
        assert_eq!(t, Tail::default());
    }

    #[test]
    fn an_unterminated_fragment_is_cut_even_if_it_is_json() {
        let t = scan_bytes("torn", b"{\"a\":1}\n{\"b\":2,\"c\":[1,");
        assert_eq!(t, intact_up_to(8, 14, 0, b"{\"a\":1}"));
        let t = scan_bytes("no-newline", b"{\"a\":1}\n{\"b\":2}");
        assert_eq!(t, intact_up_to(8, 7, 0, b"{\"a\":1}"));
        let t = scan_bytes("only-fragment", b"{\"a\":");
        assert_eq!((t.keep, t.cut_bytes, t.last_line), (0, 5, None));
    }

    #[test]
    fn lines_that_are_not_json_are_cut_back_to_the_last_json_line() {
        let mut bytes = b"{\"a\":1}\n".to_vec();
        bytes.extend_from_slice(&[0u8; 100]);
        bytes.push(b'\n');
        bytes.extend_from_slice(b"{\"half\":\n");
        bytes.extend_from_slice(&[0u8; 3000]);
        let t = scan_bytes("zeros", &bytes);
        assert_eq!(t.keep, 8);
        assert_eq!(t.cut_lines, 2);
        assert_eq!(t.cut_bytes, bytes.len() as u64 - 8);
        assert_eq!(t.last_line.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert!(!t.last_line_damaged);
        // Nothing intact at all.
        let t = scan_bytes("all-bad", b"garbage\nmore\n");
        assert_eq!((t.keep, t.cut_lines, t.last_line), (0, 2, None));
    }

    #[test]
    fn lines_longer_than_a_chunk_are_found() {
        let big = format!("{{\"x\":\"{}\"}}", "y".repeat(200_000));
        let bytes = format!("{{\"a\":1}}\n{big}\n{{\"torn");
        let t = scan_bytes("long", bytes.as_bytes());
        assert_eq!(t.last_line.as_deref(), Some(big.as_bytes()));
        assert_eq!(t.cut_bytes, 6);
    }

    #[test]
    fn reads_the_first_line() {
        let dir = TempDir::new("first-line");
        let path = dir.join("events.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"b\":2}\n").unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(first_line(&f).unwrap().as_deref(), Some(&b"{\"a\":1}"[..]));
        std::fs::write(&path, "{\"a\":").unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(first_line(&f).unwrap(), None);
    }
}
