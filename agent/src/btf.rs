//! Byte offsets of kernel struct fields, read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`).
//!
//! The Rust eBPF toolchain has no CO-RE field relocations, so the kernel programs cannot let
//! the loader patch `task->cred` into the right offset: userspace finds the offsets here at
//! start-up and hands them to the programs as globals ([`kernel_offsets`]). aya's own BTF
//! parser keeps its type accessors private, hence this small reader of the format
//! (linux `Documentation/bpf/btf.rst`): header, type section, string section, and the
//! member lookups the programs need.
//!
//! The file is data: every read is bounds-checked, a truncated or corrupt blob is a
//! [`BtfError`], never a panic, and every walk of the type graph is depth-bounded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where the running kernel publishes its own BTF (`CONFIG_DEBUG_INFO_BTF`).
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// `0xeB9F` as stored by a little-endian producer.
const MAGIC: u16 = 0xeb9f;
/// The magic as read from a big-endian blob.
const MAGIC_SWAPPED: u16 = 0x9feb;
/// Bytes of the header fields this reader knows; `hdr_len` may say more (later extensions).
const HEADER_LEN: usize = 24;
/// `struct btf_type`: name_off, info, size/type.
const TYPE_LEN: usize = 12;
/// Bound on every chain walked (typedef of const of ..., nested anonymous members, arrays of
/// arrays): libbpf's own bound, far above what a compiler emits.
const MAX_DEPTH: usize = 32;

/// The BTF kinds (`BTF_KIND_*`).
mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

/// Why BTF could not be read, or a field not found in it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("BTF is big-endian: only little-endian BTF is supported")]
    BigEndian,
    #[error("not BTF: magic {0:#06x}, expected 0xeb9f")]
    BadMagic(u16),
    #[error("unsupported BTF version {0} (expected 1)")]
    Version(u8),
    #[error("malformed BTF at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: &'static str },
    #[error("malformed BTF: type {id} at byte {offset} has unknown kind {kind}")]
    UnknownKind { id: u32, kind: u32, offset: usize },
    #[error("malformed BTF: type id {0} does not exist")]
    BadTypeId(u32),
    #[error("malformed BTF: string offset {0} is not a NUL-terminated UTF-8 string")]
    BadString(u32),
    #[error("malformed BTF: type chain from type {0} deeper than {MAX_DEPTH}")]
    TooDeep(u32),
    #[error("bad field path `{0}`: expected `struct.member[.member...]`")]
    BadPath(String),
    #[error("no struct `{0}` in BTF")]
    StructNotFound(String),
    #[error("`{path}`: no member `{member}` in {container}")]
    MemberNotFound {
        path: String,
        container: String,
        member: String,
    },
    #[error("`{path}`: `{member}` is not a struct or union (kind {kind}), it has no members")]
    NotComposite {
        path: String,
        member: String,
        kind: u32,
    },
    #[error("`{0}` is a bitfield: it has no byte offset")]
    Bitfield(String),
    #[error("`{path}` starts at bit {bits}, not on a byte")]
    NotByteAligned { path: String, bits: u64 },
    #[error("`{0}` is not an array")]
    NotArray(String),
    #[error("type {id} (kind {kind}) has no size")]
    Unsized { id: u32, kind: u32 },
    #[error("`{0}`: offset or size overflows")]
    Overflow(String),
    #[error("`{0}` differs between the several same-named definitions in BTF")]
    Ambiguous(String),
    #[error("no enum `{0}` in BTF")]
    EnumNotFound(String),
    #[error("no value `{name}` in enum `{enum_name}`")]
    EnumeratorNotFound { enum_name: String, name: String },
    #[error("enum value `{0}` does not fit an i64")]
    EnumRange(String),
    #[error("`{what}` = {value} does not fit a u32")]
    ValueRange { what: String, value: i64 },
    #[error("`{path}` has {len} elements, no element {index}")]
    Index { path: String, index: u32, len: u32 },
}

/// Where a member lies in its outermost struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldOffset {
    /// Bytes from the start of the outermost struct.
    pub offset: u32,
    /// Bytes of the member's type (typedefs and qualifiers resolved; a pointer is the
    /// kernel's pointer size). A flexible array member is 0.
    pub size: u32,
}

/// An array member: where it starts and how its elements are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayField {
    /// Bytes from the start of the outermost struct to element 0.
    pub offset: u32,
    /// Bytes of one element.
    pub elem_size: u32,
    /// Number of elements; 0 for a flexible array member (`numbers[]`).
    pub len: u32,
}

impl ArrayField {
    /// The offset of element `index`; `None` past the end (any index of a flexible array is
    /// accepted: its length is not in the type) or on overflow.
    pub fn element(&self, index: u32) -> Option<u32> {
        if self.len != 0 && index >= self.len {
            return None;
        }
        index
            .checked_mul(self.elem_size)
            .and_then(|o| o.checked_add(self.offset))
    }
}

/// One type record, decoded from its 12-byte header.
#[derive(Clone, Copy, Debug)]
struct Type {
    id: u32,
    /// Byte offset of the record in the type section.
    at: usize,
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    /// `size` for sized kinds, `type` for the referring ones.
    size_or_type: u32,
}

impl Type {
    /// Byte offset of the data following the header (members, array info, ...).
    fn extra(&self) -> usize {
        self.at.saturating_add(TYPE_LEN)
    }

    fn is_composite(&self) -> bool {
        self.kind == kind::STRUCT || self.kind == kind::UNION
    }
}

/// A struct or union member.
#[derive(Clone, Copy, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Bit offset from the start of the containing struct.
    bit_offset: u64,
    /// Bits of a bitfield, when `kind_flag` says so; 0 otherwise.
    bitfield_size: u32,
}

/// A member found by [`Btf::walk`]: its position in the outermost struct and its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Resolved {
    bit_offset: u64,
    type_id: u32,
    bitfield: bool,
}

/// Parsed BTF: the type and string sections and an index of named structs, unions and enums.
pub struct Btf {
    types: Vec<u8>,
    strings: Vec<u8>,
    /// Byte offset in `types` of the record of type id `i + 1` (id 0 is `void`).
    starts: Vec<u32>,
    /// Struct, union and enum names to their type ids (a name can have several).
    names: HashMap<String, Vec<u32>>,
    /// Bytes of a pointer: from the `long` int type, as BTF has no pointer size.
    pointer_size: u32,
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.starts.len())
            .field("type_bytes", &self.types.len())
            .field("string_bytes", &self.strings.len())
            .finish_non_exhaustive()
    }
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(bytes.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Byte offset `base + index * stride`, `None` on overflow.
fn record(base: usize, index: usize, stride: usize) -> Option<usize> {
    index.checked_mul(stride)?.checked_add(base)
}

/// The bytes of a section `off..off + len` counted from the end of the header.
fn section(
    data: &[u8],
    hdr_len: usize,
    off: u32,
    len: u32,
    what: &'static str,
) -> Result<Vec<u8>, BtfError> {
    let start = hdr_len.checked_add(off as usize);
    let end = start.and_then(|s| s.checked_add(len as usize));
    match (start, end) {
        (Some(start), Some(end)) => {
            data.get(start..end)
                .map(<[u8]>::to_vec)
                .ok_or(BtfError::Malformed {
                    offset: start,
                    reason: what,
                })
        }
        _ => Err(BtfError::Malformed {
            offset: hdr_len,
            reason: what,
        }),
    }
}

impl Btf {
    /// The running kernel's BTF.
    pub fn from_sys_fs() -> Result<Btf, BtfError> {
        Btf::from_file(Path::new(VMLINUX))
    }

    /// BTF from a raw BTF file (not an ELF object's `.BTF` section).
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Btf::parse(&data)
    }

    /// Parses raw little-endian BTF: checks the header and that every type record lies
    /// whole in the type section, and indexes the named structs, unions and enums.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        let truncated = |offset| BtfError::Malformed {
            offset,
            reason: "truncated header",
        };
        match u16_at(data, 0).ok_or(truncated(0))? {
            MAGIC => {}
            MAGIC_SWAPPED => return Err(BtfError::BigEndian),
            other => return Err(BtfError::BadMagic(other)),
        }
        let version = *data.get(2).ok_or(truncated(2))?;
        if version != 1 {
            return Err(BtfError::Version(version));
        }
        let field = |at| u32_at(data, at).ok_or(truncated(at));
        let hdr_len = field(4)? as usize;
        if hdr_len < HEADER_LEN || hdr_len > data.len() {
            return Err(BtfError::Malformed {
                offset: 4,
                reason: "header length out of bounds",
            });
        }
        let types = section(
            data,
            hdr_len,
            field(8)?,
            field(12)?,
            "type section out of bounds",
        )?;
        let strings = section(
            data,
            hdr_len,
            field(16)?,
            field(20)?,
            "string section out of bounds",
        )?;
        let mut btf = Btf {
            types,
            strings,
            starts: Vec::new(),
            names: HashMap::new(),
            pointer_size: size_of::<usize>() as u32,
        };
        btf.index()?;
        Ok(btf)
    }

    /// Walks the type section once: records where each type starts, sizes each record by its
    /// kind, and indexes names.
    fn index(&mut self) -> Result<(), BtfError> {
        let mut at = 0usize;
        // Kernel vmlinux: ~13 bytes per type on average; a guess, not a bound.
        self.starts.reserve(self.types.len() / 24);
        while at < self.types.len() {
            let id = u32::try_from(self.starts.len().saturating_add(1))
                .map_err(|_| self.malformed(at, "too many types"))?;
            let start =
                u32::try_from(at).map_err(|_| self.malformed(at, "type section too large"))?;
            let ty = self.header(id, at)?;
            let extra = match ty.kind {
                kind::INT | kind::VAR | kind::DECL_TAG => Some(4),
                kind::PTR
                | kind::FWD
                | kind::TYPEDEF
                | kind::VOLATILE
                | kind::CONST
                | kind::RESTRICT
                | kind::FUNC
                | kind::FLOAT
                | kind::TYPE_TAG => Some(0),
                kind::ARRAY => Some(12),
                kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => {
                    ty.vlen.checked_mul(12)
                }
                kind::ENUM | kind::FUNC_PROTO => ty.vlen.checked_mul(8),
                kind => {
                    return Err(BtfError::UnknownKind {
                        id,
                        kind,
                        offset: at,
                    })
                }
            };
            let end = extra
                .and_then(|extra| ty.extra().checked_add(extra))
                .filter(|end| *end <= self.types.len())
                .ok_or(self.malformed(at, "type record runs past the type section"))?;
            self.starts.push(start);
            if ty.name_off != 0 {
                match ty.kind {
                    kind::STRUCT | kind::UNION | kind::ENUM | kind::ENUM64 => {
                        let name = self.name(ty.name_off)?.to_owned();
                        self.names.entry(name).or_default().push(id);
                    }
                    kind::INT if ty.size_or_type != 0 => {
                        if matches!(self.name(ty.name_off)?, "long int" | "long unsigned int") {
                            self.pointer_size = ty.size_or_type;
                        }
                    }
                    _ => {}
                }
            }
            at = end;
        }
        Ok(())
    }

    fn malformed(&self, at: usize, reason: &'static str) -> BtfError {
        BtfError::Malformed { offset: at, reason }
    }

    /// The header of the record at `at` in the type section.
    fn header(&self, id: u32, at: usize) -> Result<Type, BtfError> {
        let word = |n: usize| {
            u32_at(&self.types, at.saturating_add(n * 4))
                .ok_or(self.malformed(at, "type record runs past the type section"))
        };
        let (name_off, info, size_or_type) = (word(0)?, word(1)?, word(2)?);
        Ok(Type {
            id,
            at,
            name_off,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_type,
        })
    }

    /// Type `id`; id 0 (`void`) has no record and is an error here.
    fn ty(&self, id: u32) -> Result<Type, BtfError> {
        let at = id
            .checked_sub(1)
            .and_then(|index| self.starts.get(index as usize))
            .ok_or(BtfError::BadTypeId(id))?;
        self.header(id, *at as usize)
    }

    /// The `n`th u32 of the data following a type's header.
    fn extra_u32(&self, ty: &Type, n: usize) -> Result<u32, BtfError> {
        record(ty.extra(), n, 4)
            .and_then(|at| u32_at(&self.types, at))
            .ok_or(self.malformed(ty.at, "type record runs past the type section"))
    }

    fn name_bytes(&self, off: u32) -> Result<&[u8], BtfError> {
        let tail = self
            .strings
            .get(off as usize..)
            .ok_or(BtfError::BadString(off))?;
        let len = tail
            .iter()
            .position(|b| *b == 0)
            .ok_or(BtfError::BadString(off))?;
        tail.get(..len).ok_or(BtfError::BadString(off))
    }

    fn name(&self, off: u32) -> Result<&str, BtfError> {
        std::str::from_utf8(self.name_bytes(off)?).map_err(|_| BtfError::BadString(off))
    }

    /// "struct path", "union (anonymous)": for error messages.
    fn describe(&self, ty: &Type) -> String {
        let what = if ty.kind == kind::UNION {
            "union"
        } else {
            "struct"
        };
        match self.name(ty.name_off) {
            Ok(name) if !name.is_empty() => format!("{what} {name}"),
            _ => format!("anonymous {what} (type {})", ty.id),
        }
    }

    /// Member `index` of a struct or union.
    fn member(&self, ty: &Type, index: usize) -> Result<Member, BtfError> {
        let word = |n| self.extra_u32(ty, index.saturating_mul(3).saturating_add(n));
        let (name_off, type_id, offset) = (word(0)?, word(1)?, word(2)?);
        let (bit_offset, bitfield_size) = if ty.kind_flag {
            (offset & 0x00ff_ffff, offset >> 24)
        } else {
            (offset, 0)
        };
        Ok(Member {
            name_off,
            type_id,
            bit_offset: u64::from(bit_offset),
            bitfield_size,
        })
    }

    /// The type behind typedefs and qualifiers (const, volatile, restrict, type tags).
    fn skip_modifiers(&self, id: u32) -> Result<Type, BtfError> {
        let mut next = id;
        for _ in 0..MAX_DEPTH {
            let ty = self.ty(next)?;
            match ty.kind {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    next = ty.size_or_type;
                }
                _ => return Ok(ty),
            }
        }
        Err(BtfError::TooDeep(id))
    }

    /// Bytes of type `id`.
    fn type_size(&self, id: u32, depth: usize) -> Result<u32, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep(id));
        }
        let ty = self.skip_modifiers(id)?;
        match ty.kind {
            kind::INT | kind::STRUCT | kind::UNION | kind::ENUM | kind::ENUM64 | kind::FLOAT => {
                Ok(ty.size_or_type)
            }
            kind::PTR => Ok(self.pointer_size),
            kind::ARRAY => {
                let (elem, nelems) = (self.extra_u32(&ty, 0)?, self.extra_u32(&ty, 2)?);
                self.type_size(elem, depth.saturating_add(1))?
                    .checked_mul(nelems)
                    .ok_or(BtfError::Unsized { id, kind: ty.kind })
            }
            kind => Err(BtfError::Unsized { id, kind }),
        }
    }

    /// Whether a member is a bitfield: said by `kind_flag`, or (older encoding) by an int
    /// type narrower than its size or not starting at its first bit.
    fn is_bitfield(&self, member: &Member) -> Result<bool, BtfError> {
        if member.bitfield_size != 0 {
            return Ok(true);
        }
        let ty = self.skip_modifiers(member.type_id)?;
        if ty.kind != kind::INT {
            return Ok(false);
        }
        let encoding = self.extra_u32(&ty, 0)?;
        let (bits, bit_offset) = (encoding & 0xff, (encoding >> 16) & 0xff);
        Ok(bit_offset != 0 || u64::from(bits) != u64::from(ty.size_or_type) * 8)
    }

    /// Member `name` of struct or union `ty`, looking into anonymous struct and union members
    /// as C does; its bit offset is from the start of `ty`.
    fn find_member(
        &self,
        ty: &Type,
        name: &[u8],
        depth: usize,
    ) -> Result<Option<(u64, Member)>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep(ty.id));
        }
        for index in 0..ty.vlen {
            let member = self.member(ty, index)?;
            let member_name = match member.name_off {
                0 => &[],
                off => self.name_bytes(off)?,
            };
            if !member_name.is_empty() {
                if member_name == name {
                    return Ok(Some((member.bit_offset, member)));
                }
                continue;
            }
            let inner = self.skip_modifiers(member.type_id)?;
            if !inner.is_composite() {
                // Unnamed padding bitfield.
                continue;
            }
            if let Some((bits, found)) = self.find_member(&inner, name, depth.saturating_add(1))? {
                let bits = bits
                    .checked_add(member.bit_offset)
                    .ok_or(self.malformed(ty.at, "member offset overflows"))?;
                return Ok(Some((bits, found)));
            }
        }
        Ok(None)
    }

    /// Follows `members` from struct `id`.
    fn walk(&self, path: &str, id: u32, members: &[&str]) -> Result<Resolved, BtfError> {
        let mut resolved = Resolved {
            bit_offset: 0,
            type_id: id,
            bitfield: false,
        };
        let mut parent = "";
        for member_name in members {
            let container = self.skip_modifiers(resolved.type_id)?;
            if !container.is_composite() || resolved.bitfield {
                return Err(BtfError::NotComposite {
                    path: path.to_owned(),
                    member: parent.to_owned(),
                    kind: container.kind,
                });
            }
            let (bits, member) = self
                .find_member(&container, member_name.as_bytes(), 0)?
                .ok_or_else(|| BtfError::MemberNotFound {
                    path: path.to_owned(),
                    container: self.describe(&container),
                    member: (*member_name).to_owned(),
                })?;
            resolved = Resolved {
                bit_offset: resolved
                    .bit_offset
                    .checked_add(bits)
                    .ok_or_else(|| BtfError::Overflow(path.to_owned()))?,
                type_id: member.type_id,
                bitfield: self.is_bitfield(&member)?,
            };
            parent = member_name;
        }
        Ok(resolved)
    }

    /// Ids of the structs named `name` (a forward declaration or a same-named enum or typedef
    /// is not one); unions when no struct has the name.
    fn structs(&self, name: &str) -> Result<Vec<u32>, BtfError> {
        let ids = self.names.get(name).map(Vec::as_slice).unwrap_or_default();
        for wanted in [kind::STRUCT, kind::UNION] {
            let mut found = Vec::new();
            for id in ids {
                if self.ty(*id)?.kind == wanted {
                    found.push(*id);
                }
            }
            if !found.is_empty() {
                return Ok(found);
            }
        }
        Err(BtfError::StructNotFound(name.to_owned()))
    }

    /// Resolves `path` in each same-named struct: all that have it must agree.
    fn resolve(&self, path: &str) -> Result<Resolved, BtfError> {
        let parts: Vec<&str> = path.split('.').collect();
        let (struct_name, members) = match parts.split_first() {
            Some((name, members)) if !members.is_empty() && parts.iter().all(|p| !p.is_empty()) => {
                (*name, members)
            }
            _ => return Err(BtfError::BadPath(path.to_owned())),
        };
        let mut first_err = None;
        let mut found: Option<Resolved> = None;
        for id in self.structs(struct_name)? {
            match self.walk(path, id, members) {
                Ok(resolved) => match found {
                    Some(other) if other != resolved => {
                        // Same layout under different type ids is fine; compare what matters.
                        let same = other.bit_offset == resolved.bit_offset
                            && other.bitfield == resolved.bitfield
                            && self.type_size(other.type_id, 0).ok()
                                == self.type_size(resolved.type_id, 0).ok();
                        if !same {
                            return Err(BtfError::Ambiguous(path.to_owned()));
                        }
                    }
                    Some(_) => {}
                    None => found = Some(resolved),
                },
                Err(err) => {
                    first_err.get_or_insert(err);
                }
            }
        }
        match (found, first_err) {
            (Some(resolved), _) => Ok(resolved),
            (None, Some(err)) => Err(err),
            (None, None) => Err(BtfError::StructNotFound(struct_name.to_owned())),
        }
    }

    /// Byte offset and size of a member, by a path like `"task_struct.cred"` or
    /// `"file.f_path.dentry"` (a struct name, then members of embedded structs). Members of
    /// anonymous structs and unions are found as in C.
    pub fn offset(&self, path: &str) -> Result<FieldOffset, BtfError> {
        let resolved = self.resolve(path)?;
        if resolved.bitfield {
            return Err(BtfError::Bitfield(path.to_owned()));
        }
        if resolved.bit_offset % 8 != 0 {
            return Err(BtfError::NotByteAligned {
                path: path.to_owned(),
                bits: resolved.bit_offset,
            });
        }
        let offset = u32::try_from(resolved.bit_offset / 8)
            .map_err(|_| BtfError::Overflow(path.to_owned()))?;
        let size = self.type_size(resolved.type_id, 0)?;
        Ok(FieldOffset { offset, size })
    }

    /// An array member, like `"signal_struct.pids"` (`struct pid *pids[PIDTYPE_MAX]`).
    pub fn array(&self, path: &str) -> Result<ArrayField, BtfError> {
        let field = self.offset(path)?;
        let ty = self.skip_modifiers(self.resolve(path)?.type_id)?;
        if ty.kind != kind::ARRAY {
            return Err(BtfError::NotArray(path.to_owned()));
        }
        let (elem, len) = (self.extra_u32(&ty, 0)?, self.extra_u32(&ty, 2)?);
        Ok(ArrayField {
            offset: field.offset,
            elem_size: self.type_size(elem, 0)?,
            len,
        })
    }

    /// Bytes of struct `name`.
    pub fn size_of(&self, name: &str) -> Result<u32, BtfError> {
        let mut sizes = Vec::new();
        for id in self.structs(name)? {
            sizes.push(self.type_size(id, 0)?);
        }
        sizes.sort_unstable();
        sizes.dedup();
        match sizes.as_slice() {
            [size] => Ok(*size),
            _ => Err(BtfError::Ambiguous(name.to_owned())),
        }
    }

    /// The value of enumerator `name` of enum `enum_name` (32- or 64-bit, by its signedness).
    pub fn enum_value(&self, enum_name: &str, name: &str) -> Result<i64, BtfError> {
        let ids = self
            .names
            .get(enum_name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut any_enum = false;
        let mut value = None;
        for id in ids {
            let ty = self.ty(*id)?;
            let found = match ty.kind {
                kind::ENUM => self.enum32(&ty, name)?,
                kind::ENUM64 => self.enum64(&ty, name)?,
                _ => continue,
            };
            any_enum = true;
            match (value, found) {
                (Some(old), Some(new)) if old != new => {
                    return Err(BtfError::Ambiguous(format!("{enum_name}::{name}")))
                }
                (None, Some(new)) => value = Some(new),
                _ => {}
            }
        }
        if !any_enum {
            return Err(BtfError::EnumNotFound(enum_name.to_owned()));
        }
        value.ok_or_else(|| BtfError::EnumeratorNotFound {
            enum_name: enum_name.to_owned(),
            name: name.to_owned(),
        })
    }

    fn enum32(&self, ty: &Type, name: &str) -> Result<Option<i64>, BtfError> {
        for index in 0..ty.vlen {
            if self.name_bytes(self.extra_u32(ty, index.saturating_mul(2))?)? == name.as_bytes() {
                let raw = self.extra_u32(ty, index.saturating_mul(2).saturating_add(1))?;
                // kind_flag: signed.
                let value = if ty.kind_flag {
                    i64::from(raw as i32)
                } else {
                    i64::from(raw)
                };
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    fn enum64(&self, ty: &Type, name: &str) -> Result<Option<i64>, BtfError> {
        for index in 0..ty.vlen {
            let word = |n| self.extra_u32(ty, index.saturating_mul(3).saturating_add(n));
            if self.name_bytes(word(0)?)? == name.as_bytes() {
                let raw = u64::from(word(1)?) | (u64::from(word(2)?) << 32);
                // kind_flag: signed.
                let value = if ty.kind_flag {
                    raw as i64
                } else {
                    i64::try_from(raw).map_err(|_| {
                        BtfError::EnumRange(format!(
                            "{}::{name}",
                            self.name(ty.name_off).unwrap_or("")
                        ))
                    })?
                };
                return Ok(Some(value));
            }
        }
        Ok(None)
    }
}

/// An offset this kernel does not have (`task_struct.loginuid` without `CONFIG_AUDIT`): the
/// programs skip the read.
pub const ABSENT: u32 = agent_common::task::OFFSET_ABSENT;

/// The global the kernel programs read (`agent_common::KernelOffsets`): the offset of every
/// kernel struct field they read, from this BTF, with embedded structs folded into one
/// offset, and `host_mnt_ns`, the inode number of the host's mount namespace. The login uid
/// and session id (`CONFIG_AUDIT`) are [`ABSENT`] when the kernel lacks them; any other field
/// missing, or malformed BTF, fails the call with an error naming it.
pub fn kernel_offsets(
    btf: &Btf,
    host_mnt_ns: u32,
) -> Result<agent_common::KernelOffsets, BtfError> {
    let required = |path: &str| btf.offset(path).map(|field| field.offset);
    let optional = |path: &str| match btf.offset(path) {
        Ok(field) => Ok(field.offset),
        Err(BtfError::MemberNotFound { .. }) => Ok(ABSENT),
        Err(err) => Err(err),
    };
    // An embedded struct's member: `outer` + `inner`.
    let folded =
        |outer: &str, inner: &str| Ok::<_, BtfError>(nested(required(outer)?, required(inner)?));
    let sid = btf.enum_value("pid_type", "PIDTYPE_SID")?;
    let pid_type_sid = u32::try_from(sid).map_err(|_| BtfError::ValueRange {
        what: "pid_type::PIDTYPE_SID".to_owned(),
        value: sid,
    })?;
    let pids = btf.array("signal_struct.pids")?;
    let signal_sid_pid = pids.element(pid_type_sid).ok_or(BtfError::Index {
        path: "signal_struct.pids".to_owned(),
        index: pid_type_sid,
        len: pids.len,
    })?;
    Ok(agent_common::KernelOffsets {
        valid: 1,
        task_loginuid: optional("task_struct.loginuid")?,
        task_sessionid: optional("task_struct.sessionid")?,
        task_cred: required("task_struct.cred")?,
        task_mm: required("task_struct.mm")?,
        task_signal: required("task_struct.signal")?,
        cred_uid: required("cred.uid")?,
        cred_euid: required("cred.euid")?,
        cred_gid: required("cred.gid")?,
        cred_egid: required("cred.egid")?,
        mm_exe_file: required("mm_struct.exe_file")?,
        mm_arg_start: required("mm_struct.arg_start")?,
        mm_arg_end: required("mm_struct.arg_end")?,
        file_dentry: folded("file.f_path", "path.dentry")?,
        file_mnt: folded("file.f_path", "path.mnt")?,
        file_f_inode: required("file.f_inode")?,
        dentry_d_parent: required("dentry.d_parent")?,
        dentry_name: folded("dentry.d_name", "qstr.name")?,
        inode_i_ino: required("inode.i_ino")?,
        inode_i_sb: required("inode.i_sb")?,
        inode_i_generation: required("inode.i_generation")?,
        inode_i_nlink: required("inode.i_nlink")?,
        sb_s_dev: required("super_block.s_dev")?,
        mount_mnt: required("mount.mnt")?,
        mount_mnt_parent: required("mount.mnt_parent")?,
        mount_mnt_mountpoint: required("mount.mnt_mountpoint")?,
        mount_mnt_ns: required("mount.mnt_ns")?,
        vfsmount_mnt_root: required("vfsmount.mnt_root")?,
        signal_tty: required("signal_struct.tty")?,
        signal_sid_pid,
        // numbers[0]: the id in the initial pid namespace.
        pid_nr: folded("pid.numbers", "upid.nr")?,
        tty_index: required("tty_struct.index")?,
        tty_driver: required("tty_struct.driver")?,
        driver_major: required("tty_driver.major")?,
        driver_minor_start: required("tty_driver.minor_start")?,
        task_nsproxy: required("task_struct.nsproxy")?,
        nsproxy_mnt_ns: required("nsproxy.mnt_ns")?,
        mnt_ns_inum: folded("mnt_namespace.ns", "ns_common.inum")?,
        host_mnt_ns,
    })
}

/// `a + b` for an offset into a struct embedded at `a`; [`ABSENT`] if either is, or on
/// overflow (a read the programs then skip).
fn nested(a: u32, b: u32) -> u32 {
    if a == ABSENT || b == ABSENT {
        return ABSENT;
    }
    a.checked_add(b).unwrap_or(ABSENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes little-endian BTF type by type; ids are handed out from 1 in order.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next: u32,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                next: 1,
            }
        }

        fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn ty(
            &mut self,
            name: &str,
            kind: u32,
            vlen: u32,
            kflag: bool,
            size_or_type: u32,
            extra: &[u32],
        ) -> u32 {
            let name = self.str(name);
            let info = (u32::from(kflag) << 31) | (kind << 24) | vlen;
            for word in [name, info, size_or_type].iter().chain(extra) {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
            self.next += 1;
            self.next - 1
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            self.ty(name, kind::INT, 0, false, size, &[size * 8])
        }

        /// An int of `bits` bits from bit `offset` (the pre-kind_flag bitfield encoding).
        fn int_bits(&mut self, name: &str, size: u32, bits: u32, offset: u32) -> u32 {
            self.ty(name, kind::INT, 0, false, size, &[(offset << 16) | bits])
        }

        fn refer(&mut self, kind: u32, name: &str, to: u32) -> u32 {
            self.ty(name, kind, 0, false, to, &[])
        }

        fn array(&mut self, elem: u32, index: u32, len: u32) -> u32 {
            self.ty("", kind::ARRAY, 0, false, 0, &[elem, index, len])
        }

        /// A struct or union; members are (name, type, raw offset word).
        fn composite(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            kflag: bool,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let mut extra = Vec::new();
            for (member, ty, offset) in members {
                extra.extend([self.str(member), *ty, *offset]);
            }
            self.ty(name, kind, members.len() as u32, kflag, size, &extra)
        }

        fn strukt(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            self.composite(kind::STRUCT, name, size, false, members)
        }

        fn enum32(&mut self, name: &str, signed: bool, values: &[(&str, u32)]) -> u32 {
            let mut extra = Vec::new();
            for (value, raw) in values {
                extra.extend([self.str(value), *raw]);
            }
            self.ty(name, kind::ENUM, values.len() as u32, signed, 4, &extra)
        }

        fn enum64(&mut self, name: &str, signed: bool, values: &[(&str, u64)]) -> u32 {
            let mut extra = Vec::new();
            for (value, raw) in values {
                extra.extend([self.str(value), *raw as u32, (*raw >> 32) as u32]);
            }
            self.ty(name, kind::ENUM64, values.len() as u32, signed, 8, &extra)
        }

        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            let type_len = self.types.len() as u32;
            for word in [24, 0, type_len, type_len, self.strings.len() as u32] {
                out.extend_from_slice(&u32::to_le_bytes(word));
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// One of every kind before the struct looked up: each record must be skipped by its
    /// own size, or `thing` is not found (or found garbled).
    fn every_kind(b: &mut Builder) -> (u32, u32) {
        let int = b.int("int", 4);
        let long = b.int("long unsigned int", 8);
        let ptr = b.refer(kind::PTR, "", int);
        b.array(int, int, 3);
        b.enum32("colour", false, &[("RED", 0), ("GREEN", 1)]);
        b.refer(kind::FWD, "opaque", 0);
        b.refer(kind::VOLATILE, "", int);
        b.refer(kind::RESTRICT, "", ptr);
        let proto = b.ty("", kind::FUNC_PROTO, 2, false, int, &[0, int, 0, long]);
        b.refer(kind::FUNC, "f", proto);
        let var = b.ty("v", kind::VAR, 0, false, int, &[1]);
        b.ty(
            ".data",
            kind::DATASEC,
            2,
            false,
            16,
            &[var, 0, 4, var, 8, 4],
        );
        b.ty("double", kind::FLOAT, 0, false, 8, &[]);
        b.ty("tag", kind::DECL_TAG, 0, false, int, &[u32::MAX]);
        b.refer(kind::TYPE_TAG, "user", ptr);
        b.enum64("big", false, &[("HUGE", 1 << 40)]);
        (int, long)
    }

    /// `struct thing` with an anonymous union holding an anonymous struct, a const typedef'd
    /// member, a kind_flag bitfield, an embedded struct and an array; a FWD and a typedef of
    /// the same name precede it.
    fn thing() -> Vec<u8> {
        let mut b = Builder::new();
        let (int, long) = every_kind(&mut b);
        let ptr = b.refer(kind::PTR, "", int);
        b.refer(kind::FWD, "thing", 0);
        let inner = b.strukt("inner", 8, &[("a", int, 0), ("b", int, 32)]);
        let lo_hi = b.strukt("", 8, &[("lo", int, 0), ("hi", int, 32)]);
        let anon = b.composite(kind::UNION, "", 8, false, &[("u", long, 0), ("", lo_hi, 0)]);
        let typedef = b.refer(kind::TYPEDEF, "u32_t", int);
        let konst = b.refer(kind::CONST, "", typedef);
        let tagged = b.refer(kind::TYPE_TAG, "rcu", ptr);
        let arr = b.array(ptr, int, 4);
        let flex = b.array(inner, int, 0);
        b.composite(
            kind::STRUCT,
            "thing",
            64,
            true,
            &[
                ("head", tagged, 0),
                ("", anon, 64),
                ("t", konst, 128),
                ("flags", int, (3 << 24) | 160),
                ("after", int, 192),
                ("in", inner, 256),
                ("arr", arr, 320),
                ("tail", flex, 576),
            ],
        );
        b.refer(kind::TYPEDEF, "thing", inner);
        b.build()
    }

    fn field(offset: u32, size: u32) -> FieldOffset {
        FieldOffset { offset, size }
    }

    #[test]
    fn btf_members_direct_anonymous_typedefd_nested() {
        let btf = Btf::parse(&thing()).unwrap();
        assert_eq!(btf.offset("thing.head").unwrap(), field(0, 8));
        assert_eq!(
            btf.offset("thing.u").unwrap(),
            field(8, 8),
            "in the anonymous union"
        );
        assert_eq!(
            btf.offset("thing.lo").unwrap(),
            field(8, 4),
            "anonymous struct in it"
        );
        assert_eq!(btf.offset("thing.hi").unwrap(), field(12, 4));
        assert_eq!(
            btf.offset("thing.t").unwrap(),
            field(16, 4),
            "const typedef"
        );
        assert_eq!(
            btf.offset("thing.after").unwrap(),
            field(24, 4),
            "kind_flag, not a bitfield"
        );
        assert_eq!(btf.offset("thing.in").unwrap(), field(32, 8));
        assert_eq!(btf.offset("thing.in.b").unwrap(), field(36, 4), "nested");
        assert_eq!(btf.offset("inner.b").unwrap(), field(4, 4));
        assert_eq!(btf.offset("thing.arr").unwrap(), field(40, 32));
        assert_eq!(
            btf.offset("thing.tail").unwrap(),
            field(72, 0),
            "flexible array"
        );
        assert_eq!(
            btf.size_of("thing").unwrap(),
            64,
            "the STRUCT, not the FWD or typedef"
        );
        assert_eq!(btf.size_of("inner").unwrap(), 8);
    }

    #[test]
    fn btf_arrays() {
        let btf = Btf::parse(&thing()).unwrap();
        let arr = btf.array("thing.arr").unwrap();
        assert_eq!(
            arr,
            ArrayField {
                offset: 40,
                elem_size: 8,
                len: 4
            }
        );
        assert_eq!(arr.element(0), Some(40));
        assert_eq!(arr.element(3), Some(64));
        assert_eq!(arr.element(4), None);
        let tail = btf.array("thing.tail").unwrap();
        assert_eq!((tail.elem_size, tail.len), (8, 0));
        assert_eq!(tail.element(2), Some(88), "flexible: any index");
        assert!(matches!(
            btf.array("thing.head"),
            Err(BtfError::NotArray(_))
        ));
    }

    #[test]
    fn btf_bitfields_and_misaligned_members_have_no_offset() {
        let btf = Btf::parse(&thing()).unwrap();
        let err = btf.offset("thing.flags").unwrap_err();
        assert!(
            matches!(err, BtfError::Bitfield(ref p) if p == "thing.flags"),
            "{err}"
        );

        // Without kind_flag: a bitfield is an int type narrower than its size.
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let three = b.int_bits("", 4, 3, 0);
        b.strukt(
            "old",
            8,
            &[("bits", three, 0), ("odd", int, 4), ("ok", int, 32)],
        );
        let btf = Btf::parse(&b.build()).unwrap();
        assert!(matches!(btf.offset("old.bits"), Err(BtfError::Bitfield(_))));
        assert!(matches!(
            btf.offset("old.odd"),
            Err(BtfError::NotByteAligned { bits: 4, .. })
        ));
        assert_eq!(btf.offset("old.ok").unwrap(), field(4, 4));
    }

    #[test]
    fn btf_lookup_errors_name_what_is_missing() {
        let btf = Btf::parse(&thing()).unwrap();
        let err = btf.offset("thing.nope").unwrap_err();
        assert!(
            matches!(&err, BtfError::MemberNotFound { path, container, member }
                if path == "thing.nope" && container == "struct thing" && member == "nope"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "`thing.nope`: no member `nope` in struct thing"
        );
        let err = btf.offset("thing.in.c").unwrap_err();
        assert!(err.to_string().contains("struct inner"), "{err}");
        assert!(
            matches!(btf.offset("nothing.x"), Err(BtfError::StructNotFound(n)) if n == "nothing")
        );
        assert!(
            matches!(btf.offset("opaque.x"), Err(BtfError::StructNotFound(_))),
            "a FWD only"
        );
        assert!(
            matches!(btf.offset("colour.RED"), Err(BtfError::StructNotFound(_))),
            "an enum"
        );
        assert!(matches!(
            btf.offset("thing.head.x"),
            Err(BtfError::NotComposite { .. })
        ));
        assert!(matches!(
            btf.offset("thing.flags.x"),
            Err(BtfError::NotComposite { .. })
        ));
        for bad in ["thing", "", "thing.", ".head", "thing..head"] {
            assert!(
                matches!(btf.offset(bad), Err(BtfError::BadPath(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn btf_enum_values() {
        let mut b = Builder::new();
        b.enum32("pid_type", false, &[("PIDTYPE_PID", 0), ("PIDTYPE_SID", 3)]);
        b.enum32("signed", true, &[("MINUS", (-2i32) as u32)]);
        b.enum32("unsigned", false, &[("BIG", u32::MAX)]);
        b.enum64("wide", false, &[("W", 1 << 40), ("TOO_WIDE", u64::MAX)]);
        b.enum64("wide_signed", true, &[("M", (-5i64) as u64)]);
        b.strukt("pid_type_s", 0, &[]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert_eq!(btf.enum_value("pid_type", "PIDTYPE_SID").unwrap(), 3);
        assert_eq!(btf.enum_value("signed", "MINUS").unwrap(), -2);
        assert_eq!(
            btf.enum_value("unsigned", "BIG").unwrap(),
            i64::from(u32::MAX)
        );
        assert_eq!(btf.enum_value("wide", "W").unwrap(), 1 << 40);
        assert!(matches!(
            btf.enum_value("wide", "TOO_WIDE"),
            Err(BtfError::EnumRange(_))
        ));
        assert_eq!(btf.enum_value("wide_signed", "M").unwrap(), -5);
        assert!(matches!(
            btf.enum_value("pid_type", "PIDTYPE_X"),
            Err(BtfError::EnumeratorNotFound { .. })
        ));
        assert!(matches!(
            btf.enum_value("pid_type_s", "A"),
            Err(BtfError::EnumNotFound(_))
        ));
        assert!(matches!(
            btf.enum_value("none", "A"),
            Err(BtfError::EnumNotFound(_))
        ));
    }

    #[test]
    fn btf_same_named_structs_must_agree() {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        b.strukt("twin", 8, &[("a", int, 0), ("b", int, 32)]);
        b.strukt("twin", 8, &[("a", int, 0), ("b", int, 32)]);
        b.strukt("pair", 8, &[("a", int, 0), ("only_first", int, 32)]);
        b.strukt("pair", 16, &[("a", int, 32)]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert_eq!(btf.offset("twin.b").unwrap(), field(4, 4));
        assert_eq!(btf.size_of("twin").unwrap(), 8);
        assert_eq!(
            btf.offset("pair.only_first").unwrap(),
            field(4, 4),
            "only one has it"
        );
        assert!(matches!(btf.offset("pair.a"), Err(BtfError::Ambiguous(_))));
        assert!(matches!(btf.size_of("pair"), Err(BtfError::Ambiguous(_))));
    }

    #[test]
    fn btf_rejects_bad_headers() {
        let good = thing();
        assert!(Btf::parse(&good).is_ok());
        assert!(matches!(Btf::parse(&[]), Err(BtfError::Malformed { .. })));
        let mut big = good.clone();
        big.swap(0, 1);
        assert!(matches!(Btf::parse(&big), Err(BtfError::BigEndian)));
        let mut magic = good.clone();
        magic[0] = 0;
        assert!(matches!(Btf::parse(&magic), Err(BtfError::BadMagic(_))));
        let mut version = good.clone();
        version[2] = 2;
        assert!(matches!(Btf::parse(&version), Err(BtfError::Version(2))));
        let mut hdr = good.clone();
        hdr[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Btf::parse(&hdr),
            Err(BtfError::Malformed { offset: 4, .. })
        ));
        let mut strings = good.clone();
        strings[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = Btf::parse(&strings).unwrap_err();
        assert!(
            err.to_string().contains("string section out of bounds"),
            "{err}"
        );
        let mut unknown = good.clone();
        unknown[24 + 7] = 25; // kind 25 in the first type's info
        assert!(matches!(
            Btf::parse(&unknown),
            Err(BtfError::UnknownKind {
                id: 1,
                kind: 25,
                ..
            })
        ));
        let err = Btf::from_file(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
    }

    /// The queries a corrupt blob must answer with values or errors, never a panic.
    fn query_all(btf: &Btf) {
        for path in [
            "thing.head",
            "thing.hi",
            "thing.in.b",
            "thing.flags",
            "thing.tail",
            "inner.a",
        ] {
            let _ = btf.offset(path);
        }
        let _ = btf.array("thing.arr");
        let _ = btf.size_of("thing");
        let _ = btf.enum_value("colour", "GREEN");
        let _ = btf.enum_value("big", "HUGE");
        let _ = kernel_offsets(btf, 1);
    }

    #[test]
    fn btf_truncated_or_corrupt_blobs_are_errors_not_panics() {
        let good = thing();
        for len in 0..good.len() {
            if let Ok(btf) = Btf::parse(&good[..len]) {
                query_all(&btf);
            }
        }
        for at in 0..good.len() {
            for byte in [0x00, 0x01, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[at] = byte;
                if let Ok(btf) = Btf::parse(&bad) {
                    query_all(&btf);
                }
            }
        }
    }

    #[test]
    fn btf_cycles_are_bounded() {
        let mut b = Builder::new();
        // Type 1: a typedef of itself; type 2: a struct whose anonymous member is itself;
        // type 3: an array of itself.
        b.refer(kind::TYPEDEF, "loop", 1);
        b.strukt("selfish", 8, &[("", 2, 0)]);
        b.array(3, 3, 2);
        b.strukt("holder", 8, &[("t", 1, 0), ("arr", 3, 0), ("bad", 99, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert!(matches!(btf.offset("holder.t"), Err(BtfError::TooDeep(_))));
        assert!(matches!(btf.offset("selfish.x"), Err(BtfError::TooDeep(_))));
        assert!(matches!(
            btf.offset("holder.arr"),
            Err(BtfError::TooDeep(_))
        ));
        assert!(matches!(
            btf.offset("holder.bad"),
            Err(BtfError::BadTypeId(99))
        ));
    }

    /// Every struct and member [`kernel_offsets`] reads, each member a `u64` at the next
    /// 8 bytes (so its offset is 8 × its index), `signal_struct.pids` a `struct pid *[4]`.
    const KERNEL: &[(&str, &[&str])] = &[
        (
            "task_struct",
            &[
                "loginuid",
                "sessionid",
                "cred",
                "real_cred",
                "mm",
                "signal",
                "tgid",
                "real_parent",
                "fs",
                "nsproxy",
            ],
        ),
        ("cred", &["uid", "euid", "gid", "egid"]),
        ("mm_struct", &["exe_file", "arg_start", "arg_end"]),
        ("file", &["f_path", "f_inode"]),
        ("path", &["mnt", "dentry"]),
        ("dentry", &["d_parent", "d_name"]),
        ("qstr", &["len", "name"]),
        ("inode", &["i_ino", "i_sb", "i_generation", "i_nlink"]),
        ("super_block", &["s_dev"]),
        (
            "mount",
            &["mnt_parent", "mnt_mountpoint", "mnt", "mnt_id", "mnt_ns"],
        ),
        ("vfsmount", &["mnt_root"]),
        ("fs_struct", &["pwd"]),
        ("signal_struct", &["tty", "pids"]),
        ("pid", &["numbers"]),
        ("upid", &["nr"]),
        ("tty_struct", &["index", "driver"]),
        ("tty_driver", &["major", "minor_start"]),
        ("nsproxy", &["mnt_ns"]),
        ("mnt_namespace", &["ns"]),
        ("ns_common", &["inum"]),
    ];

    /// A kernel-like BTF with the fields of [`KERNEL`] but those in `without`.
    fn kernel_like(without: &[&str]) -> Vec<u8> {
        let mut b = Builder::new();
        let long = b.int("long unsigned int", 8);
        let ptr = b.refer(kind::PTR, "", long);
        let int = b.int("int", 4);
        let pids = b.array(ptr, int, 4);
        b.enum32(
            "pid_type",
            false,
            &[
                ("PIDTYPE_PID", 0),
                ("PIDTYPE_TGID", 1),
                ("PIDTYPE_PGID", 2),
                ("PIDTYPE_SID", 3),
                ("PIDTYPE_MAX", 4),
            ],
        );
        for (name, members) in KERNEL {
            let members: Vec<(&str, u32, u32)> = members
                .iter()
                .enumerate()
                .filter(|(_, member)| !without.contains(&format!("{name}.{member}").as_str()))
                .map(|(i, member)| {
                    let ty = if *member == "pids" { pids } else { long };
                    (*member, ty, i as u32 * 64)
                })
                .collect();
            b.strukt(name, 128, &members);
        }
        b.build()
    }

    #[test]
    fn btf_kernel_offsets_from_synthetic_btf() {
        let btf = Btf::parse(&kernel_like(&[])).unwrap();
        let offsets = kernel_offsets(&btf, 4026531841).unwrap();
        let at = |path: &str| btf.offset(path).unwrap().offset;
        assert_eq!((offsets.valid, offsets.host_mnt_ns), (1, 4026531841));
        assert_eq!(offsets.task_loginuid, 0);
        assert_eq!(offsets.task_nsproxy, at("task_struct.nsproxy"));
        assert_eq!(offsets.signal_sid_pid, 8 + 3 * 8, "pids[PIDTYPE_SID]");
        assert_eq!(offsets.mount_mnt, at("mount.mnt"));
        // Embedded structs folded into one offset.
        assert_eq!(offsets.file_dentry, at("file.f_path") + at("path.dentry"));
        assert_eq!(offsets.file_mnt, at("file.f_path") + at("path.mnt"));
        assert_eq!(offsets.dentry_name, at("dentry.d_name") + at("qstr.name"));
        assert_eq!(offsets.pid_nr, at("pid.numbers") + at("upid.nr"));
        assert_eq!(
            offsets.mnt_ns_inum,
            at("mnt_namespace.ns") + at("ns_common.inum")
        );
        assert_eq!(nested(ABSENT, 8), ABSENT);
        assert_eq!(nested(u32::MAX - 1, 8), ABSENT);
    }

    #[test]
    fn btf_kernel_offsets_optional_absent_required_fails() {
        let btf = Btf::parse(&kernel_like(&[
            "task_struct.loginuid",
            "task_struct.sessionid",
        ]))
        .unwrap();
        let offsets = kernel_offsets(&btf, 7).unwrap();
        assert_eq!(
            (offsets.task_loginuid, offsets.task_sessionid),
            (ABSENT, ABSENT)
        );
        assert_eq!(
            offsets.task_cred,
            btf.offset("task_struct.cred").unwrap().offset,
            "the rest still there"
        );

        let btf = Btf::parse(&kernel_like(&["cred.euid"])).unwrap();
        let err = kernel_offsets(&btf, 7).unwrap_err();
        assert!(err.to_string().contains("cred.euid"), "{err}");
        let btf = Btf::parse(&kernel_like(&["signal_struct.pids"])).unwrap();
        let err = kernel_offsets(&btf, 7).unwrap_err();
        assert!(err.to_string().contains("signal_struct.pids"), "{err}");
    }

    /// The running kernel's BTF; `None` (skipped, saying so) when there is none, except under
    /// `CI=true`, where that fails the test.
    fn vmlinux() -> Option<Btf> {
        if let Err(err) = std::fs::metadata(VMLINUX) {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: {VMLINUX} is needed: {err}"
            );
            eprintln!("SKIP: {VMLINUX}: {err}");
            return None;
        }
        Some(Btf::from_sys_fs().unwrap())
    }

    /// Bytes of a pointer and of a `long` here (the kernel's, for a native build).
    const P: u32 = size_of::<usize>() as u32;

    /// The fields read from the running kernel, with their size (`None`: varies by version).
    const REAL: &[(&str, Option<u32>)] = &[
        ("task_struct.loginuid", Some(4)),
        ("task_struct.sessionid", Some(4)),
        ("task_struct.cred", Some(P)),
        ("task_struct.real_cred", Some(P)),
        ("task_struct.mm", Some(P)),
        ("task_struct.signal", Some(P)),
        ("task_struct.tgid", Some(4)),
        ("task_struct.real_parent", Some(P)),
        ("task_struct.fs", Some(P)),
        ("task_struct.nsproxy", Some(P)),
        ("cred.uid", Some(4)),
        ("cred.euid", Some(4)),
        ("cred.gid", Some(4)),
        ("cred.egid", Some(4)),
        ("mm_struct.exe_file", Some(P)),
        ("mm_struct.arg_start", Some(P)),
        ("mm_struct.arg_end", Some(P)),
        ("file.f_path", Some(2 * P)),
        ("file.f_inode", Some(P)),
        ("path.dentry", Some(P)),
        ("path.mnt", Some(P)),
        ("dentry.d_parent", Some(P)),
        ("dentry.d_name", Some(8 + P)),
        ("qstr.name", Some(P)),
        ("qstr.len", Some(4)),
        ("inode.i_ino", Some(P)),
        ("inode.i_sb", Some(P)),
        ("inode.i_generation", Some(4)),
        ("inode.i_nlink", Some(4)),
        ("super_block.s_dev", Some(4)),
        ("mount.mnt", None),
        ("mount.mnt_parent", Some(P)),
        ("mount.mnt_mountpoint", Some(P)),
        ("mount.mnt_id", Some(4)),
        ("mount.mnt_ns", Some(P)),
        ("vfsmount.mnt_root", Some(P)),
        ("signal_struct.tty", Some(P)),
        ("signal_struct.pids", Some(4 * P)),
        ("pid.numbers", None),
        ("upid.nr", Some(4)),
        ("tty_struct.index", Some(4)),
        ("tty_struct.driver", Some(P)),
        ("tty_driver.major", Some(4)),
        ("tty_driver.minor_start", Some(4)),
        ("fs_struct.pwd", Some(2 * P)),
        ("nsproxy.mnt_ns", Some(P)),
        ("mnt_namespace.ns", None),
        ("ns_common.inum", Some(4)),
        ("file.f_path.dentry", Some(P)),
        ("dentry.d_name.name", Some(P)),
        ("mount.mnt.mnt_root", Some(P)),
    ];

    #[test]
    fn btf_real_kernel_fields() {
        let Some(btf) = vmlinux() else { return };
        for (path, size) in REAL {
            let field = btf
                .offset(path)
                .unwrap_or_else(|err| panic!("{path}: {err}"));
            eprintln!(
                "{path:<26} offset {:>5} size {:>3}",
                field.offset, field.size
            );
            if let Some(size) = size {
                assert_eq!(field.size, *size, "{path}");
            }
        }
        assert_eq!(
            btf.offset("mount.mnt").unwrap().size,
            btf.size_of("vfsmount").unwrap()
        );
        let nested =
            |a: &str, b: &str| btf.offset(a).unwrap().offset + btf.offset(b).unwrap().offset;
        assert_eq!(
            btf.offset("file.f_path.dentry").unwrap().offset,
            nested("file.f_path", "path.dentry")
        );
        assert_eq!(
            btf.offset("dentry.d_name.name").unwrap().offset,
            nested("dentry.d_name", "qstr.name")
        );
        assert_eq!(
            btf.offset("mount.mnt.mnt_root").unwrap().offset,
            nested("mount.mnt", "vfsmount.mnt_root")
        );
    }

    /// Layouts that have not moved in years, and are the same on every 64-bit
    /// little-endian kernel: a check of the reader, not of the kernel.
    #[test]
    fn btf_real_kernel_stable_layouts() {
        let Some(btf) = vmlinux() else { return };
        let at = |path: &str| btf.offset(path).unwrap().offset;
        assert_eq!((at("path.mnt"), at("path.dentry")), (0, P));
        assert_eq!(at("vfsmount.mnt_root"), 0);
        assert_eq!(at("upid.nr"), 0);
        if cfg!(target_endian = "little") {
            // `union { struct { u32 hash; u32 len; }; u64 hash_len; }`, then `name`.
            assert_eq!((at("qstr.len"), at("qstr.name")), (4, 8));
        }
        assert_eq!(btf.enum_value("pid_type", "PIDTYPE_SID").unwrap(), 3);
        let pids = btf.array("signal_struct.pids").unwrap();
        assert_eq!(pids.elem_size, P);
        assert_eq!(
            i64::from(pids.len),
            btf.enum_value("pid_type", "PIDTYPE_MAX").unwrap()
        );
        assert_eq!(btf.size_of("path").unwrap(), 2 * P);
        assert!(matches!(
            btf.offset("task_struct.no_such_member"),
            Err(BtfError::MemberNotFound { .. })
        ));
        // task_struct has bitfields (sched_reset_on_fork: 1 and friends).
        assert!(matches!(
            btf.offset("task_struct.sched_reset_on_fork"),
            Err(BtfError::Bitfield(_))
        ));
    }

    #[test]
    fn btf_real_kernel_offsets() {
        let Some(btf) = vmlinux() else { return };
        let programs = kernel_offsets(&btf, 1).unwrap();
        eprintln!("{programs:#?}");
        let audit = Path::new("/proc/self/loginuid").exists();
        assert_eq!(programs.task_loginuid != ABSENT, audit, "CONFIG_AUDIT");
        assert_eq!(programs.task_sessionid != ABSENT, audit, "CONFIG_AUDIT");
        let pids = btf.array("signal_struct.pids").unwrap().offset;
        assert_eq!(programs.signal_sid_pid, pids + 3 * P);
        assert_eq!(programs.valid, 1);
        assert_eq!(
            programs.file_dentry,
            btf.offset("file.f_path.dentry").unwrap().offset
        );
        assert_eq!(programs.pid_nr, btf.offset("pid.numbers").unwrap().offset);
    }

    #[test]
    fn btf_real_kernel_parse_time() {
        let Some(_) = vmlinux() else { return };
        let data = std::fs::read(VMLINUX).unwrap();
        let start = std::time::Instant::now();
        let btf = Btf::parse(&data).unwrap();
        let parsed = start.elapsed();
        let offsets = kernel_offsets(&btf, 1).unwrap();
        let total = start.elapsed();
        eprintln!(
            "{} bytes, {} types: parse {parsed:?}, parse + kernel_offsets {total:?}",
            data.len(),
            btf.starts.len()
        );
        assert!(offsets.task_cred != ABSENT);
        // Generous: unoptimised test builds are many times slower than release.
        assert!(total < std::time::Duration::from_secs(2), "{total:?}");
    }

    /// Every named, non-anonymous member of every uniquely named struct of the running kernel
    /// against `bpftool btf dump format raw`, when bpftool is here (the test does not need it).
    #[test]
    fn btf_real_kernel_matches_bpftool() {
        let Some(btf) = vmlinux() else { return };
        let bpftool = [
            "/usr/sbin/bpftool",
            "/usr/bin/bpftool",
            "/usr/local/sbin/bpftool",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists());
        let Some(bpftool) = bpftool else {
            eprintln!("SKIP: no bpftool to cross-check against");
            return;
        };
        let out = std::process::Command::new(bpftool)
            .args(["btf", "dump", "file", VMLINUX, "format", "raw"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        // [id] STRUCT 'name' size=N vlen=M, then one indented line per member:
        // 'member' type_id=T bits_offset=B[ bitfield_size=S]
        /// Per member: name, bit offset, bitfield.
        type Members<'a> = Vec<(&'a str, u64, bool)>;
        let mut structs: HashMap<&str, Vec<(u32, Members)>> = HashMap::new();
        let mut current: Option<&mut Members> = None;
        for line in text.lines() {
            if let Some(member) = line.strip_prefix('\t') {
                let Some(members) = current.as_mut() else {
                    continue;
                };
                let mut words = member.split(' ');
                let name = words.next().unwrap().trim_matches('\'');
                let bits = words
                    .find_map(|w| w.strip_prefix("bits_offset="))
                    .unwrap()
                    .parse()
                    .unwrap();
                members.push((name, bits, member.contains("bitfield_size=")));
                continue;
            }
            current = None;
            let mut words = line.split(' ');
            let (_, kind, name) = (words.next(), words.next(), words.next());
            if kind != Some("STRUCT") {
                continue;
            }
            let name = name.unwrap().trim_matches('\'');
            let size = words
                .next()
                .unwrap()
                .strip_prefix("size=")
                .unwrap()
                .parse()
                .unwrap();
            let entry = structs.entry(name).or_default();
            entry.push((size, Vec::new()));
            current = entry.last_mut().map(|(_, members)| members);
        }
        let (mut checked, mut bitfields) = (0, 0);
        for (name, defs) in &structs {
            let [(size, members)] = defs.as_slice() else {
                continue;
            };
            if *name == "(anon)" {
                continue;
            }
            assert_eq!(btf.size_of(name).unwrap(), *size, "sizeof(struct {name})");
            for (member, bits, bitfield) in members {
                if *member == "(anon)" {
                    continue;
                }
                let path = format!("{name}.{member}");
                let got = btf.offset(&path);
                if *bitfield {
                    // kind_flag: bitfield_size=0 is a plain member in a struct with bitfields.
                    if let Ok(field) = got {
                        assert_eq!(u64::from(field.offset) * 8, *bits, "{path}");
                    } else {
                        bitfields += 1;
                    }
                } else if bits % 8 == 0 {
                    assert_eq!(
                        u64::from(got.unwrap_or_else(|e| panic!("{path}: {e}")).offset) * 8,
                        *bits,
                        "{path}"
                    );
                    checked += 1;
                }
            }
        }
        eprintln!(
            "{} structs: {checked} members match bpftool, {bitfields} bitfields refused",
            structs.len()
        );
        assert!(checked > 10_000, "{checked}");
    }
}
