//! cgroup v2: finding the mount, turning a cgroup id into a path, naming the systemd unit.
//!
//! `bpf_get_current_cgroup_id()` is the inode number of the cgroup's directory in the cgroup2
//! mount (kernfs node id). The resolver opens it by file handle (O(1), needs
//! `CAP_DAC_READ_SEARCH`) and falls back to walking the tree. Results are cached by id.

use std::{
    collections::HashMap,
    ffi::{CString, OsString},
    fs, io,
    os::{
        fd::AsRawFd as _,
        unix::ffi::{OsStrExt as _, OsStringExt as _},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

/// Errors finding or opening cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 filesystem is mounted (looked in {mounts}); mount one with `mount -t cgroup2 none /sys/fs/cgroup`")]
    NoCgroup2 { mounts: String },
    #[error("reading {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path} is not inside the cgroup2 mount {mount}")]
    OutsideMount { path: String, mount: String },
}

/// The mount points of the file systems of type `fstype` in a `/proc/self/mounts`-format text,
/// in the order they are listed. Works on bytes: a mount point is any byte string, not
/// necessarily UTF-8, and the kernel escapes only space, tab, newline and backslash in it.
pub fn mount_points_of_type<'a>(
    mounts: &'a [u8],
    fstype: &'a str,
) -> impl Iterator<Item = PathBuf> + 'a {
    mounts.split(|&b| b == b'\n').filter_map(move |line| {
        let mut fields = line
            .split(u8::is_ascii_whitespace)
            .filter(|field| !field.is_empty());
        let (_source, mount_point, line_fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (line_fstype == fstype.as_bytes()).then(|| PathBuf::from(unescape_mount_field(mount_point)))
    })
}

/// Finds the cgroup2 mount point in a `/proc/self/mounts`-format text (`&str` or bytes).
pub fn cgroup2_mount_from(mounts: impl AsRef<[u8]>) -> Option<PathBuf> {
    mount_points_of_type(mounts.as_ref(), "cgroup2").next()
}

/// Decodes a path field of `/proc/self/mounts` or `/proc/self/mountinfo`: the kernel writes
/// space, tab, newline and backslash as three octal digits (`\040`); every other byte, UTF-8
/// or not, is as it is in the path. A backslash not followed by three octal digits is kept.
pub fn unescape_mount_field(field: &[u8]) -> OsString {
    let mut out = Vec::with_capacity(field.len());
    let mut rest = field;
    while let Some((&byte, after)) = rest.split_first() {
        let escaped = match after {
            [a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7', ..] if byte == b'\\' => {
                Some(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'))
            }
            _ => None,
        };
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                rest = after.get(3..).unwrap_or_default();
            }
            None => {
                out.push(byte);
                rest = after;
            }
        }
    }
    OsString::from_vec(out)
}

/// The cgroup2 mount point of this host, from `/proc/self/mounts`.
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let path = "/proc/self/mounts";
    // Bytes, not text: another mount point may be any byte string.
    let mounts = fs::read(path).map_err(|source| CgroupError::Io {
        path: path.to_owned(),
        source,
    })?;
    cgroup2_mount_from(&mounts).ok_or_else(|| CgroupError::NoCgroup2 {
        mounts: path.to_owned(),
    })
}

/// Unit name suffixes systemd uses; `.slice` is left out on purpose (a slice groups units).
const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".scope",
    ".socket",
    ".mount",
    ".swap",
    ".timer",
    ".path",
    ".target",
    ".automount",
    ".device",
];

/// The systemd unit a cgroup path belongs to: the first path component (from the root) that is
/// a unit name other than a slice, like systemd's own `cg_path_get_unit`.
/// `/system.slice/nginx.service` → `nginx.service`;
/// `/user.slice/user-1000.slice/session-3.scope` → `session-3.scope`.
pub fn systemd_unit(cgroup_path: &str) -> Option<&str> {
    cgroup_path.split('/').find_map(|component| {
        // systemd escapes components that would clash with kernel names by prefixing `_`.
        let name = component.strip_prefix('_').unwrap_or(component);
        let (stem, _) = name.rsplit_once('.')?;
        let is_unit = !stem.is_empty() && UNIT_SUFFIXES.iter().any(|suffix| name.ends_with(suffix));
        is_unit.then_some(name)
    })
}

/// What egret reports about a cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupInfo {
    pub id: u64,
    /// Path relative to the cgroup2 mount, starting with `/`; `None` when it could not be found
    /// (the cgroup was removed before egret looked).
    pub path: Option<String>,
    pub systemd_unit: Option<String>,
}

/// Resolves cgroup ids to paths, with a cache.
pub struct CgroupResolver {
    mount: PathBuf,
    mount_dir: Option<fs::File>,
    cache: HashMap<u64, Arc<CgroupInfo>>,
    /// Ids not found, and when: retried after [`Self::RETRY_MISS`].
    misses: HashMap<u64, Instant>,
    max_entries: usize,
}

impl CgroupResolver {
    const RETRY_MISS: Duration = Duration::from_secs(5);

    pub fn new(mount: PathBuf, max_entries: usize) -> Self {
        let mount_dir = fs::File::open(&mount).ok();
        Self {
            mount,
            mount_dir,
            cache: HashMap::new(),
            misses: HashMap::new(),
            max_entries,
        }
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The cgroup id of a directory in the cgroup2 mount (its inode number).
    pub fn id_of(path: &Path) -> Result<u64, CgroupError> {
        fs::metadata(path)
            .map(|m| m.ino())
            .map_err(|source| CgroupError::Io {
                path: path.display().to_string(),
                source,
            })
    }

    /// Path of `dir` relative to the mount, starting with `/`.
    pub fn relative(&self, dir: &Path) -> Result<String, CgroupError> {
        let rel = dir
            .strip_prefix(&self.mount)
            .map_err(|_| CgroupError::OutsideMount {
                path: dir.display().to_string(),
                mount: self.mount.display().to_string(),
            })?;
        Ok(format!("/{}", rel.display()))
    }

    pub fn resolve(&mut self, id: u64) -> Arc<CgroupInfo> {
        if let Some(info) = self.cache.get(&id) {
            return Arc::clone(info);
        }
        let path = match self.misses.get(&id) {
            Some(when) if when.elapsed() < Self::RETRY_MISS => None,
            _ => self.lookup(id),
        };
        let info = Arc::new(CgroupInfo {
            id,
            systemd_unit: path.as_deref().and_then(systemd_unit).map(str::to_owned),
            path,
        });
        if info.path.is_some() {
            if self.cache.len() >= self.max_entries {
                self.cache.clear();
            }
            self.misses.remove(&id);
            self.cache.insert(id, Arc::clone(&info));
        } else {
            if self.misses.len() >= self.max_entries {
                self.misses.clear();
            }
            self.misses.insert(id, Instant::now());
        }
        info
    }

    /// Records a cgroup's path as the kernel reported it at creation (`cgroup_mkdir`), so the
    /// cgroup is named even if it is removed before its first event is processed.
    pub fn remember(&mut self, id: u64, path: &str) {
        if self.cache.len() >= self.max_entries {
            self.cache.clear();
        }
        self.misses.remove(&id);
        let info = CgroupInfo {
            id,
            systemd_unit: systemd_unit(path).map(str::to_owned),
            path: Some(path.to_owned()),
        };
        self.cache.insert(id, Arc::new(info));
    }

    /// Number of cached cgroups.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    fn lookup(&self, id: u64) -> Option<String> {
        self.open_by_id(id).or_else(|| self.walk_for(id))
    }

    /// `open_by_handle_at` with the kernfs file handle (the id), then read the fd's path.
    fn open_by_id(&self, id: u64) -> Option<String> {
        /// `FILEID_KERNFS` from the kernel's `include/linux/exportfs.h`.
        const FILEID_KERNFS: i32 = 0xfe;
        #[repr(C)]
        struct Handle {
            handle_bytes: u32,
            handle_type: i32,
            f_handle: [u8; 8],
        }
        let mount_dir = self.mount_dir.as_ref()?;
        let mut handle = Handle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            f_handle: id.to_ne_bytes(),
        };
        // SAFETY: `handle` is a valid `struct file_handle` with 8 bytes of payload; the mount fd
        // is open for the duration of the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                mount_dir.as_raw_fd(),
                &mut handle as *mut Handle,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: the syscall returned a new fd that nothing else owns.
        let file = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let target = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
        self.relative(&target).ok()
    }

    /// Walks the cgroup tree looking for the directory whose inode is `id`.
    fn walk_for(&self, id: u64) -> Option<String> {
        let mut stack = vec![self.mount.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(file_type) = entry.file_type() else {
                    continue;
                };
                if !file_type.is_dir() {
                    continue;
                }
                let path = entry.path();
                if entry.metadata().map(|m| m.ino()).ok() == Some(id) {
                    return self.relative(&path).ok();
                }
                stack.push(path);
            }
        }
        (Self::id_of(&self.mount).ok() == Some(id)).then(|| "/".to_owned())
    }
}

/// Opens a cgroup directory for attaching programs, with a clear error.
pub fn open_cgroup_dir(path: &Path) -> Result<fs::File, CgroupError> {
    fs::File::open(path).map_err(|source| CgroupError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// `true` when `path` is a directory of a cgroup2 filesystem (it has `cgroup.procs` and the
/// filesystem magic is cgroup2).
pub fn is_cgroup2_dir(path: &Path) -> bool {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: valid C string and out-pointer.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: statfs succeeded and filled the struct.
    let stat = unsafe { stat.assume_init() };
    #[expect(
        clippy::unnecessary_cast,
        reason = "f_type's integer type differs between libcs"
    )]
    let magic = stat.f_type as i64;
    magic == CGROUP2_SUPER_MAGIC && path.join("cgroup.procs").exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn finds_cgroup2_in_hybrid_and_unified_layouts() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(
            cgroup2_mount_from(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n";
        assert_eq!(
            cgroup2_mount_from(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_mount_from("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"),
            None
        );
        assert_eq!(cgroup2_mount_from(""), None);
        assert_eq!(
            cgroup2_mount_from("none /mnt/my\\040cgroups cgroup2 rw 0 0\n"),
            Some(PathBuf::from("/mnt/my cgroups"))
        );
    }

    /// The mount point `cgroup2_mount_from` finds in a one-line mounts text with this field.
    fn mount_of(field: &[u8]) -> Option<PathBuf> {
        let mut line = b"none ".to_vec();
        line.extend_from_slice(field);
        line.extend_from_slice(b" cgroup2 rw 0 0\n");
        cgroup2_mount_from(line)
    }

    fn path_of(bytes: &[u8]) -> Option<PathBuf> {
        Some(PathBuf::from(OsStr::from_bytes(bytes)))
    }

    #[test]
    fn decodes_the_escaped_bytes_of_a_mount_point() {
        let cases: [(&[u8], &[u8]); 5] = [
            (br"/mnt/a\040b", b"/mnt/a b"),
            (br"/mnt/a\011b", b"/mnt/a\tb"),
            (br"/mnt/a\012b", b"/mnt/a\nb"),
            (br"/mnt/a\134b", br"/mnt/a\b"),
            (br"/mnt/\040\134\011", b"/mnt/ \\\t"),
        ];
        for (field, path) in cases {
            assert_eq!(mount_of(field), path_of(path), "{field:?}");
        }
    }

    #[test]
    fn keeps_what_is_not_an_escape() {
        // Not three octal digits, or more than a byte: left as written.
        for field in [
            br"/mnt/a\x".as_slice(),
            br"/mnt/a\04",
            br"/mnt/a\089",
            br"/mnt/a\400",
            br"/mnt/a\+12",
            br"/mnt/a\",
        ] {
            assert_eq!(mount_of(field), path_of(field), "{field:?}");
        }
    }

    #[test]
    fn keeps_non_ascii_and_non_utf8_mount_points() {
        assert_eq!(
            mount_of("/mnt/grüße/控制组".as_bytes()),
            path_of("/mnt/grüße/控制组".as_bytes())
        );
        assert_eq!(mount_of(b"/mnt/\xff\xfe"), path_of(b"/mnt/\xff\xfe"));
        // A non-UTF-8 mount listed before the cgroup2 one does not hide it.
        let mut mounts = b"tmpfs /mnt/\xff tmpfs rw 0 0\n".to_vec();
        mounts.extend_from_slice(b"cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n");
        assert_eq!(
            cgroup2_mount_from(&mounts),
            path_of(b"/sys/fs/cgroup/unified")
        );
    }

    #[test]
    fn lists_every_mount_of_a_type() {
        let mounts = b"cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                       cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
                       cgroup /sys/fs/cgroup/mem\\040ory cgroup rw,memory 0 0\n";
        let v1: Vec<PathBuf> = mount_points_of_type(mounts, "cgroup").collect();
        assert_eq!(
            v1,
            [
                PathBuf::from("/sys/fs/cgroup/cpu"),
                PathBuf::from("/sys/fs/cgroup/mem ory")
            ]
        );
    }

    #[test]
    fn names_systemd_units() {
        assert_eq!(
            systemd_unit("/system.slice/nginx.service"),
            Some("nginx.service")
        );
        assert_eq!(
            systemd_unit("/user.slice/user-1000.slice/session-3.scope"),
            Some("session-3.scope")
        );
        assert_eq!(
            systemd_unit("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service"),
            Some("user@1000.service")
        );
        assert_eq!(
            systemd_unit("/system.slice/docker-0123abcd.scope"),
            Some("docker-0123abcd.scope")
        );
        assert_eq!(
            systemd_unit("/system.slice/_cgroup.service"),
            Some("cgroup.service")
        );
        assert_eq!(
            systemd_unit("/egret-e2e-x/egret-e2e-1.service"),
            Some("egret-e2e-1.service")
        );
        assert_eq!(systemd_unit("/system.slice"), None);
        assert_eq!(systemd_unit("/"), None);
        assert_eq!(systemd_unit("/kubepods/besteffort/pod1234/abcdef"), None);
        assert_eq!(systemd_unit("/x/.service"), None);
    }

    #[test]
    fn resolves_the_mount_root_and_a_child() -> Result<(), CgroupError> {
        let Ok(mount) = cgroup2_mount() else {
            return Ok(());
        };
        let mut resolver = CgroupResolver::new(mount.clone(), 16);
        let root = resolver.resolve(CgroupResolver::id_of(&mount)?);
        assert_eq!(root.path.as_deref(), Some("/"));
        assert_eq!(resolver.resolve(u64::MAX).path, None);
        Ok(())
    }
}
