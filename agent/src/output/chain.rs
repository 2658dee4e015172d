//! The hash chain over the lines of an output file (`egret.chain`).
//!
//! Every line written to a file carries `egret.chain`, 64 lowercase hex digits:
//!
//! ```text
//! chain(n) = hex(SHA-256(chain(n-1) as 64 ASCII bytes ‖ content(n)))
//! ```
//!
//! `content(n)` is the line exactly as written, without its newline and without the chain
//! member. The chain member is always the last member of the top-level `egret` object:
//! `,"chain":"<hex>"` just before that object's closing brace; a line that has no `egret`
//! object of its own gets `,"egret":{"chain":"<hex>"}` just before its final brace (and one
//! whose `egret` object is empty loses it first). [`content`] undoes exactly that, so a
//! verifier recomputes the hash from the bytes of the line alone. docs/output.md says the same.

use std::cell::Cell;

use sha2::{Digest, Sha256};

/// Hex digits in a chain value.
pub const HEX_LEN: usize = 64;

/// A chain value: SHA-256, as 64 lowercase ASCII hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainHash([u8; HEX_LEN]);

impl ChainHash {
    /// The value a chain starts from when nothing precedes it: 64 zeros.
    pub const GENESIS: Self = Self([b'0'; HEX_LEN]);

    /// Parses 64 lowercase hex digits (anything else is not a chain value).
    pub fn parse(text: &str) -> Option<Self> {
        let bytes: [u8; HEX_LEN] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            .then_some(Self(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &[u8; HEX_LEN] {
        &self.0
    }

    pub fn is_genesis(&self) -> bool {
        *self == Self::GENESIS
    }

    /// The chain value of a line with this `content` that follows a line with chain `self`.
    pub fn next(&self, content: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        hasher.update(content);
        let digest = hasher.finalize();
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; HEX_LEN];
        for (pair, byte) in out.chunks_exact_mut(2).zip(digest.iter()) {
            if let [hi, lo] = pair {
                *hi = HEX.get(usize::from(byte >> 4)).copied().unwrap_or(b'0');
                *lo = HEX.get(usize::from(byte & 0xf)).copied().unwrap_or(b'0');
            }
        }
        Self(out)
    }
}

impl std::fmt::Display for ChainHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChainHash({})", self.as_str())
    }
}

/// Where the top-level `egret` member of a JSON object line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgretMember {
    /// Offset of the `"` that opens the key.
    key: usize,
    /// Offset of the `{` that opens the value.
    open: usize,
    /// Offset of the `}` that closes the value.
    close: usize,
}

/// The structure of a compact JSON object line, as far as the chain needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// The last top-level member named `egret` whose value is an object.
    egret: Option<EgretMember>,
    /// Offset of the line's final `}`.
    end: usize,
    /// Whether the top-level object has any member.
    has_members: bool,
}

impl Shape {
    /// The shape of an object line its writer laid out itself: the top-level `egret` member's
    /// key at `key`, its object from `open` to `close`, and the line's final `}` at `end`.
    pub fn with_egret(key: usize, open: usize, close: usize, end: usize) -> Self {
        Self {
            egret: Some(EgretMember { key, open, close }),
            end,
            has_members: true,
        }
    }
}

/// Scans a JSON object (one line, no newline) for its top-level `egret` object member.
/// `None` if the bytes are not a single well-bracketed object (the scanner does not
/// validate JSON beyond strings and brackets; serde_json did that when it wrote the line).
fn shape(line: &[u8]) -> Option<Shape> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut string_start = 0usize;
    // The last top-level key read, waiting for its value.
    let mut key: Option<(usize, usize)> = None;
    let mut pending_egret: Option<usize> = None;
    let mut egret_open: Option<(usize, usize)> = None;
    let mut shape = Shape {
        egret: None,
        end: 0,
        has_members: false,
    };
    let mut first = true;
    let mut i = 0usize;
    while let Some(&b) = line.get(i) {
        if in_string {
            if escaped {
                escaped = false;
                i += 1;
                continue;
            }
            match b {
                b'\\' => escaped = true,
                b'"' => {
                    in_string = false;
                    if depth == 1 {
                        key = Some((string_start, i));
                    }
                }
                _ => {}
            }
            i += 1;
            continue;
        }
        let here = i;
        i += 1;
        if first {
            if b.is_ascii_whitespace() {
                continue;
            }
            if b != b'{' {
                return None;
            }
            first = false;
            depth = 1;
            continue;
        }
        if depth == 0 {
            if b.is_ascii_whitespace() {
                continue;
            }
            return None;
        }
        match b {
            b'"' => {
                in_string = true;
                string_start = here;
                if depth == 1 {
                    shape.has_members = true;
                }
            }
            b':' if depth == 1 => {
                pending_egret = key
                    .take()
                    .filter(|&(s, e)| line.get(s + 1..e) == Some(b"egret".as_slice()))
                    .map(|(s, _)| s);
            }
            b'{' | b'[' => {
                if depth == 1 && b == b'{' {
                    if let Some(k) = pending_egret.take() {
                        egret_open = Some((k, here));
                    }
                }
                pending_egret = None;
                depth += 1;
            }
            b'}' | b']' => {
                depth -= 1;
                if depth == 1 && b == b'}' {
                    if let Some((k, open)) = egret_open.take() {
                        shape.egret = Some(EgretMember {
                            key: k,
                            open,
                            close: here,
                        });
                    }
                }
                if depth == 0 {
                    shape.end = here;
                }
            }
            b if b.is_ascii_whitespace() => {}
            _ => {
                if depth == 1 {
                    pending_egret = None;
                }
            }
        }
    }
    (depth == 0 && !first && !in_string).then_some(shape)
}

/// A `Vec` writer that publishes its length, so the formatter knows where it is.
struct Tracked<'a> {
    buf: &'a mut Vec<u8>,
    pos: &'a Cell<usize>,
}

impl std::io::Write for Tracked<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        self.pos.set(self.buf.len());
        Ok(bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(bytes);
        self.pos.set(self.buf.len());
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// serde_json's compact formatter, noting the [`Shape`] of the line as it writes it, so
/// chaining a line costs no second pass over its bytes.
struct ShapeFormatter<'a> {
    pos: &'a Cell<usize>,
    st: &'a mut ShapeState,
}

struct ShapeState {
    depth: usize,
    /// Reading a top-level key: (its offset, it matches "egret" so far, bytes read).
    key: Option<(usize, bool, usize)>,
    /// The top-level key just read is `egret`: its offset.
    egret_key: Option<usize>,
    /// The value being written is the top-level `egret`: (key offset, `{` offset).
    egret_open: Option<(usize, usize)>,
    shape: Shape,
    top_level_seen: bool,
}

impl serde_json::ser::Formatter for ShapeFormatter<'_> {
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        if self.st.depth == 0 {
            self.st.top_level_seen = true;
        }
        if self.st.depth == 1 {
            self.st.egret_open = self.st.egret_key.take().map(|key| (key, self.pos.get()));
        }
        self.st.depth += 1;
        w.write_all(b"{")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        match self.st.depth {
            1 => self.st.shape.end = self.pos.get(),
            2 => {
                if let Some((key, open)) = self.st.egret_open.take() {
                    self.st.shape.egret = Some(EgretMember {
                        key,
                        open,
                        close: self.pos.get(),
                    });
                }
            }
            _ => {}
        }
        self.st.depth = self.st.depth.saturating_sub(1);
        w.write_all(b"}")
    }

    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.st.depth += 1;
        w.write_all(b"[")
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.st.depth = self.st.depth.saturating_sub(1);
        w.write_all(b"]")
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if !first {
            w.write_all(b",")?;
        }
        if self.st.depth == 1 {
            self.st.shape.has_members = true;
            self.st.egret_key = None;
            self.st.key = Some((self.pos.get(), true, 0));
        }
        Ok(())
    }

    fn end_object_key<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        if self.st.depth == 1 {
            if let Some((at, true, 5)) = self.st.key.take() {
                self.st.egret_key = Some(at);
            }
            self.st.key = None;
        }
        Ok(())
    }

    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        if self.st.depth == 1 {
            self.st.egret_key = None;
        }
        Ok(())
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        if let Some((_, matches, len)) = self.st.key.as_mut() {
            let end = *len + fragment.len();
            *matches = *matches && b"egret".get(*len..end) == Some(fragment.as_bytes());
            *len = end;
        }
        w.write_all(fragment.as_bytes())
    }

    fn write_char_escape<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        escape: serde_json::ser::CharEscape,
    ) -> std::io::Result<()> {
        if let Some((_, matches, _)) = self.st.key.as_mut() {
            *matches = false;
        }
        serde_json::ser::CompactFormatter.write_char_escape(w, escape)
    }
}

/// Serialises `doc` as one compact JSON line (no newline), appended to `out`: the same bytes
/// as `serde_json::to_writer`. Returns the line's shape if it is an object (counted from
/// where the line starts), for [`append_serialized`].
pub fn serialize(
    doc: &impl serde::Serialize,
    out: &mut Vec<u8>,
) -> Result<Option<Shape>, serde_json::Error> {
    let start = out.len();
    let pos = Cell::new(start);
    let mut st = ShapeState {
        depth: 0,
        key: None,
        egret_key: None,
        egret_open: None,
        shape: Shape {
            egret: None,
            end: 0,
            has_members: false,
        },
        top_level_seen: false,
    };
    {
        // The serializer borrows `out` and `st` until the end of this block.
        let formatter = ShapeFormatter {
            pos: &pos,
            st: &mut st,
        };
        let writer = Tracked {
            buf: out,
            pos: &pos,
        };
        let mut serializer = serde_json::Serializer::with_formatter(writer, formatter);
        doc.serialize(&mut serializer)?;
    }
    let line = out.get(start..).unwrap_or_default();
    let object = st.top_level_seen && line.first() == Some(&b'{') && line.last() == Some(&b'}');
    let Shape {
        egret,
        end,
        has_members,
    } = st.shape;
    Ok(object.then_some(Shape {
        egret: egret.map(|EgretMember { key, open, close }| EgretMember {
            key: key - start,
            open: open - start,
            close: close - start,
        }),
        end: end - start,
        has_members,
    }))
}

/// Removes the member spanning `start..end` from a top-level object, with one adjacent comma.
fn remove_member(line: &[u8], start: usize, end: usize) -> Option<Vec<u8>> {
    let before = line.get(..start)?;
    let after = line.get(end..)?;
    let mut out = Vec::with_capacity(line.len());
    if before.last() == Some(&b',') {
        out.extend_from_slice(before.get(..before.len() - 1)?);
        out.extend_from_slice(after);
    } else if after.first() == Some(&b',') {
        out.extend_from_slice(before);
        out.extend_from_slice(after.get(1..)?);
    } else {
        out.extend_from_slice(before);
        out.extend_from_slice(after);
    }
    Some(out)
}

/// Appends to `out` the line for `doc` (one compact JSON object, no newline) carrying the
/// chain value that follows `prev`, and a newline. Returns that value. `None` (nothing
/// appended) if `doc` is not a JSON object.
pub fn append_chained(out: &mut Vec<u8>, prev: &ChainHash, doc: &[u8]) -> Option<ChainHash> {
    append_serialized(out, prev, doc, shape(doc)?)
}

/// [`append_chained`] for a line whose shape [`serialize`] recorded.
pub fn append_serialized(
    out: &mut Vec<u8>,
    prev: &ChainHash,
    doc: &[u8],
    shape: Shape,
) -> Option<ChainHash> {
    match shape.egret {
        Some(egret) if egret.close > egret.open + 1 => {
            let hash = prev.next(doc);
            let member: [&[u8]; 3] = [b",\"chain\":\"", hash.as_bytes(), b"\""];
            append_line_with(out, doc, egret.close, &member)?;
            Some(hash)
        }
        Some(egret) => {
            // An empty `egret` object: drop it, then add one holding only the chain.
            let reduced = remove_member(doc, egret.key, egret.close + 1)?;
            append_chained(out, prev, &reduced)
        }
        None => {
            let hash = prev.next(doc);
            let comma: &[u8] = if shape.has_members { b"," } else { b"" };
            let egret: [&[u8]; 4] = [comma, b"\"egret\":{\"chain\":\"", hash.as_bytes(), b"\"}"];
            append_line_with(out, doc, shape.end, &egret)?;
            Some(hash)
        }
    }
}

/// [`append_serialized`] for a line already at the end of `out`, from byte `start` on
/// (`shape`: its shape, counted from `start`; `None` to scan it): chained where it lies, so
/// the line is not copied. `None` (the line taken off again) if it is not a JSON object.
pub fn chain_in_place(
    out: &mut Vec<u8>,
    start: usize,
    prev: &ChainHash,
    shape: Option<Shape>,
) -> Option<ChainHash> {
    let line = out.get(start..)?;
    let Some(shape) = shape.or_else(|| self::shape(line)) else {
        out.truncate(start);
        return None;
    };
    match shape.egret {
        Some(egret) if egret.close > egret.open + 1 => {
            let hash = prev.next(line);
            let at = start + egret.close;
            // Only the bytes after the `egret` object move (it is the last member): the line
            // grows by the member's length, the tail moves up, the member goes in the gap.
            let pieces: [&[u8]; 3] = [b",\"chain\":\"", hash.as_bytes(), b"\""];
            let inserted: usize = pieces.iter().map(|piece| piece.len()).sum();
            let end = out.len();
            if at > end {
                out.truncate(start);
                return None;
            }
            out.resize(end + inserted, 0);
            out.copy_within(at..end, at + inserted);
            let mut gap = out.get_mut(at..at + inserted)?;
            for piece in pieces {
                let (head, rest) = gap.split_at_mut(piece.len());
                head.copy_from_slice(piece);
                gap = rest;
            }
            out.push(b'\n');
            Some(hash)
        }
        // Rare (an empty or missing `egret` object): rebuilt by the general path.
        _ => {
            let line = out.split_off(start);
            append_serialized(out, prev, &line, shape)
        }
    }
}

/// Appends to `out` the line `doc` with `pieces` inserted at byte `at`, and a newline. `None`
/// (nothing appended) if `at` is not inside `doc`.
fn append_line_with(out: &mut Vec<u8>, doc: &[u8], at: usize, pieces: &[&[u8]]) -> Option<()> {
    let (head, tail) = (doc.get(..at)?, doc.get(at..)?);
    let inserted: usize = pieces.iter().map(|piece| piece.len()).sum();
    out.reserve(doc.len() + inserted + 1);
    out.extend_from_slice(head);
    for piece in pieces {
        out.extend_from_slice(piece);
    }
    out.extend_from_slice(tail);
    out.push(b'\n');
    Some(())
}

/// Why a line's chain member cannot be taken off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("not a JSON object")]
    NotObject,
    #[error("no egret.chain")]
    NoChain,
    #[error("egret.chain is not 64 lowercase hex digits")]
    BadChain,
    #[error("egret.chain is not the last member of the egret object, where egret writes it")]
    Misplaced,
}

/// A written line (no newline) split into its chain value and the content it was computed
/// over. The line must already be known to be valid JSON.
pub fn content(line: &[u8]) -> Result<(ChainHash, Vec<u8>), ContentError> {
    let shape = shape(line).ok_or(ContentError::NotObject)?;
    let egret = shape.egret.ok_or(ContentError::NoChain)?;
    let inner = line
        .get(egret.open + 1..egret.close)
        .ok_or(ContentError::NotObject)?;
    // The last member must be "chain":"<64 hex>".
    const KEY: &[u8] = b"\"chain\":\"";
    let member_len = KEY.len() + HEX_LEN + 1;
    let member_start = inner
        .len()
        .checked_sub(member_len)
        .ok_or(ContentError::NoChain)?;
    let member = inner.get(member_start..).ok_or(ContentError::NoChain)?;
    if !member.starts_with(KEY) || member.last() != Some(&b'"') {
        return Err(if contains(inner, b"\"chain\"") {
            ContentError::Misplaced
        } else {
            ContentError::NoChain
        });
    }
    let hex = member
        .get(KEY.len()..KEY.len() + HEX_LEN)
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(ChainHash::parse)
        .ok_or(ContentError::BadChain)?;
    let abs = egret.open + 1 + member_start;
    if member_start == 0 {
        // The egret object holds only the chain: egret added the whole member.
        let reduced =
            remove_member(line, egret.key, egret.close + 1).ok_or(ContentError::NotObject)?;
        return Ok((hex, reduced));
    }
    if line.get(abs - 1) != Some(&b',') {
        return Err(ContentError::Misplaced);
    }
    let mut out = Vec::with_capacity(line.len());
    out.extend_from_slice(line.get(..abs - 1).ok_or(ContentError::NotObject)?);
    out.extend_from_slice(line.get(egret.close..).ok_or(ContentError::NotObject)?);
    Ok((hex, out))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The chain value a line carries, if it has a well-placed one (no hashing).
pub fn stored(line: &[u8]) -> Option<ChainHash> {
    content(line).ok().map(|(hash, _)| hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chained(prev: &ChainHash, doc: &str) -> (String, ChainHash) {
        let mut out = Vec::new();
        let hash = append_chained(&mut out, prev, doc.as_bytes()).unwrap();
        (String::from_utf8(out).unwrap(), hash)
    }

    #[test]
    fn chaining_in_place_is_chaining_a_copy() {
        let docs = [
            r#"{"a":1,"egret":{"cgroup":2}}"#,
            r#"{"a":1,"egret":{"cgroup":2},"after":"x"}"#,
            r#"{"a":1,"egret":{}}"#,
            r#"{"a":"\"egret\":{"}"#,
            "{}",
            "[1,2]",
            "not json",
        ];
        let prev = ChainHash::GENESIS.next(b"x");
        for doc in docs {
            let mut copy = b"earlier\n".to_vec();
            let expected = append_chained(&mut copy, &prev, doc.as_bytes());
            let mut in_place = b"earlier\n".to_vec();
            in_place.extend_from_slice(doc.as_bytes());
            let got = chain_in_place(&mut in_place, 8, &prev, None);
            assert_eq!(got, expected, "{doc}");
            if expected.is_some() {
                assert_eq!(in_place, copy, "{doc}");
            } else {
                assert_eq!(in_place, b"earlier\n", "{doc}: taken off again");
            }
        }
    }

    #[test]
    fn hash_is_sha256_over_previous_hex_and_content() {
        let h = ChainHash::GENESIS.next(b"{}");
        // sha256("0"*64 + "{}"), computed independently (Python's hashlib).
        let want = "5508d2b710e64bc470079e1b211d9c58e21011e59d0559e422345dc19d659a75";
        assert_eq!(h.as_str(), want);
        assert_eq!(ChainHash::parse(want), Some(h));
    }

    #[test]
    fn parse_wants_64_lowercase_hex() {
        assert!(ChainHash::parse(&"a".repeat(64)).is_some());
        assert!(ChainHash::parse(&"A".repeat(64)).is_none());
        assert!(ChainHash::parse(&"a".repeat(63)).is_none());
        assert!(ChainHash::parse(&"g".repeat(64)).is_none());
        assert!(ChainHash::GENESIS.is_genesis());
    }

    #[test]
    fn splices_into_the_egret_object_and_takes_it_out_again() {
        let doc = r#"{"a":"x\"egret\":{","egret":{"cgroup":{"id":1},"s":"}"},"z":[{"egret":{}}]}"#;
        let (line, hash) = chained(&ChainHash::GENESIS, doc);
        let want = format!(
            r#"{{"a":"x\"egret\":{{","egret":{{"cgroup":{{"id":1}},"s":"}}","chain":"{hash}"}},"z":[{{"egret":{{}}}}]}}"#
        );
        assert_eq!(line, format!("{want}\n"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["egret"]["chain"], hash.as_str());
        let (stored, stripped) = content(line.trim_end().as_bytes()).unwrap();
        assert_eq!(stored, hash);
        assert_eq!(stripped, doc.as_bytes());
        assert_eq!(ChainHash::GENESIS.next(&stripped), hash);
    }

    #[test]
    fn adds_an_egret_object_when_the_line_has_none() {
        let doc = r#"{"event":{"kind":"metric"},"n":[1,2]}"#;
        let (line, hash) = chained(&ChainHash::GENESIS, doc);
        assert_eq!(
            line,
            format!(r#"{{"event":{{"kind":"metric"}},"n":[1,2],"egret":{{"chain":"{hash}"}}}}"#)
                + "\n"
        );
        let (_, stripped) = content(line.trim_end().as_bytes()).unwrap();
        assert_eq!(stripped, doc.as_bytes());
        // An empty object gets the member without a comma.
        let (line, hash) = chained(&hash, "{}");
        assert_eq!(line, format!("{{\"egret\":{{\"chain\":\"{hash}\"}}}}\n"));
        assert_eq!(content(line.trim_end().as_bytes()).unwrap().1, b"{}");
    }

    #[test]
    fn an_empty_egret_object_is_replaced() {
        let doc = r#"{"egret":{},"a":1}"#;
        let (line, hash) = chained(&ChainHash::GENESIS, doc);
        assert_eq!(
            line,
            format!("{{\"a\":1,\"egret\":{{\"chain\":\"{hash}\"}}}}\n")
        );
        let (_, stripped) = content(line.trim_end().as_bytes()).unwrap();
        assert_eq!(stripped, br#"{"a":1}"#);
        assert_eq!(ChainHash::GENESIS.next(&stripped), hash);
    }

    #[test]
    fn a_label_named_chain_is_not_the_chain() {
        let doc = r#"{"container":{"labels":{"chain":"x"}},"egret":{"socket":{"cookie":1}}}"#;
        let (line, hash) = chained(&ChainHash::GENESIS, doc);
        let (stored, stripped) = content(line.trim_end().as_bytes()).unwrap();
        assert_eq!((stored, stripped.as_slice()), (hash, doc.as_bytes()));
    }

    #[test]
    fn content_rejects_what_egret_never_writes() {
        let h = "b".repeat(64);
        assert_eq!(content(b"[1]"), Err(ContentError::NotObject));
        assert_eq!(content(br#"{"a":1"#), Err(ContentError::NotObject));
        assert_eq!(content(br#"{"a":1}"#), Err(ContentError::NoChain));
        assert_eq!(content(br#"{"egret":{"x":1}}"#), Err(ContentError::NoChain));
        let first = format!(r#"{{"egret":{{"chain":"{h}","x":1}}}}"#);
        assert_eq!(content(first.as_bytes()), Err(ContentError::Misplaced));
        let upper = format!(r#"{{"egret":{{"x":1,"chain":"{}"}}}}"#, "B".repeat(64));
        assert_eq!(content(upper.as_bytes()), Err(ContentError::BadChain));
        let ok = format!(r#"{{"egret":{{"x":1,"chain":"{h}"}}}}"#);
        assert_eq!(content(ok.as_bytes()).unwrap().1, br#"{"egret":{"x":1}}"#);
        assert!(append_chained(&mut Vec::new(), &ChainHash::GENESIS, b"[]").is_none());
    }

    #[test]
    fn any_change_changes_the_hash() {
        let a = ChainHash::GENESIS.next(br#"{"a":1}"#);
        assert_ne!(a, ChainHash::GENESIS.next(br#"{"a":2}"#));
        assert_ne!(a.next(b"{}"), ChainHash::GENESIS.next(b"{}"));
    }

    #[test]
    fn the_serializer_records_the_same_shape_as_the_scanner() {
        let docs = [
            serde_json::json!({"a": 1, "egret": {"x": [1, {"y": "}"}], "z": {}}, "b": [{"egret": {}}]}),
            serde_json::json!({"egret": {}, "a": "q\"uote"}),
            serde_json::json!({"a": {"egret": {"x": 1}}}),
            serde_json::json!({}),
            serde_json::json!({"egret": 5, "eg\"ret": {"x": 1}}),
            serde_json::json!({"egr": {"x": 1}, "egrets": {"x": 2}, "egret": {"chain": 1, "k": "v"}}),
            serde_json::json!([1, 2]),
        ];
        for doc in docs {
            let mut out = Vec::new();
            let recorded = serialize(&doc, &mut out).unwrap();
            assert_eq!(out, serde_json::to_vec(&doc).unwrap());
            let scanned = shape(&out).filter(|_| doc.is_object());
            assert_eq!(recorded, scanned, "{doc}");
        }
        // A struct, as the agent's documents are.
        #[derive(serde::Serialize)]
        struct Doc {
            event: u8,
            egret: Inner,
            after: &'static str,
        }
        #[derive(serde::Serialize)]
        struct Inner {
            cgroup: u8,
        }
        let doc = Doc {
            event: 1,
            egret: Inner { cgroup: 2 },
            after: "x",
        };
        let mut out = Vec::new();
        let recorded = serialize(&doc, &mut out).unwrap().unwrap();
        assert_eq!(Some(recorded), shape(&out));
        // Appended after other bytes, the shape still counts from the line's start.
        let mut after = b"{\"x\":1}\n".to_vec();
        assert_eq!(serialize(&doc, &mut after).unwrap(), Some(recorded));
        assert_eq!(after.get(8..), Some(out.as_slice()));
        let mut a = Vec::new();
        let mut b = Vec::new();
        let h1 = append_serialized(&mut a, &ChainHash::GENESIS, &out, recorded).unwrap();
        let h2 = append_chained(&mut b, &ChainHash::GENESIS, &out).unwrap();
        assert_eq!((a, h1), (b, h2));
    }
}
