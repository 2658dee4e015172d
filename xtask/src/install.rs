//! `cargo xtask install`: build the release binary and install it with its systemd unit and
//! default configuration (docs/deploy.md).
//!
//! | what | where |
//! | --- | --- |
//! | `egret` | `PREFIX/bin/egret` (replaced by rename, so a running egret can be upgraded) |
//! | `egret.service` | `PREFIX/lib/systemd/system/` for `/usr` and `/usr/local`, else `/etc/systemd/system/` |
//! | `policy.yaml`, `config.yaml`, `README` | `/etc/egret/`, only when missing (never overwritten) |
//! | logrotate | `/etc/logrotate.d/egret`, only when missing |
//! | docs | `PREFIX/share/doc/egret/` |
//!
//! Everything goes below `--destdir DIR` when given (staging for a package or a test).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, ensure, Context as _, Result};

use crate::cmd::{cargo_build, target_dir, workspace_root};
use crate::setup::setup;

/// The prefix the unit file in `packaging/` is written for.
const UNIT_PREFIX: &str = "/usr/local";
/// Documentation installed next to the binary (the unit's `Documentation=` names deploy.md).
const DOCS: &[&str] = &["deploy.md", "policy.md", "events.md", "containers.md"];

#[derive(Debug, clap::Args)]
pub struct InstallOptions {
    /// Installation prefix: the binary goes to PREFIX/bin.
    #[arg(long, value_name = "DIR", default_value = UNIT_PREFIX)]
    prefix: PathBuf,
    /// Install below DIR instead of / (staging for a package, or a test).
    #[arg(long, value_name = "DIR")]
    destdir: Option<PathBuf>,
    /// Install this egret binary instead of building one with `cargo build --release -p egret`
    /// (e.g. the static build the container image uses).
    #[arg(long, value_name = "PATH")]
    egret_bin: Option<PathBuf>,
}

/// What one file ended up as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written (it was not there).
    Created,
    /// Replaced (binary, unit, docs: they belong to the release).
    Replaced,
    /// Left alone: configuration the administrator owns.
    Kept,
}

/// The result of [`install_files`]: every destination (as installed, without the destdir) and
/// what happened to it.
#[derive(Debug, Default)]
pub struct Report {
    pub files: Vec<(PathBuf, Outcome)>,
}

impl Report {
    fn outcome(&self, path: &Path) -> Option<Outcome> {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, outcome)| *outcome)
    }
}

/// `cargo xtask install [--prefix DIR] [--destdir DIR] [--egret-bin PATH]`.
pub fn install(options: &InstallOptions) -> Result<()> {
    let binary = match &options.egret_bin {
        Some(path) => path.clone(),
        None => {
            setup()?;
            cargo_build(&["-p", "egret"], true)?;
            target_dir().join("release").join("egret")
        }
    };
    let report = install_files(
        &workspace_root(),
        &binary,
        &options.prefix,
        options.destdir.as_deref(),
    )?;
    let unit = unit_path(&options.prefix);
    let upgrade = report.outcome(&options.prefix.join("bin/egret")) == Some(Outcome::Replaced);
    for (path, outcome) in &report.files {
        let verb = match outcome {
            Outcome::Created => "installed",
            Outcome::Replaced => "replaced ",
            Outcome::Kept => "kept     ",
        };
        eprintln!("xtask: {verb} {}", path.display());
    }
    if let Some(destdir) = &options.destdir {
        eprintln!("xtask: staged below {}", destdir.display());
    }
    println!("egret installed ({} is the unit). Next:", unit.display());
    println!("  egret policy check /etc/egret/policy.yaml");
    if upgrade {
        println!("  systemctl daemon-reload && systemctl restart egret");
    } else {
        println!("  systemctl daemon-reload && systemctl enable --now egret");
    }
    Ok(())
}

/// Where the unit goes for `prefix`: systemd's unit path has `/usr/lib/systemd/system` and
/// `/usr/local/lib/systemd/system`; for any other prefix, the administrator's directory.
pub fn unit_path(prefix: &Path) -> PathBuf {
    if prefix == Path::new("/usr") || prefix == Path::new("/usr/local") {
        prefix.join("lib/systemd/system/egret.service")
    } else {
        PathBuf::from("/etc/systemd/system/egret.service")
    }
}

/// The unit text for `prefix`: `ExecStart=` and `Documentation=` point below it.
pub fn unit_text(template: &str, prefix: &Path) -> Result<String> {
    let prefix = prefix
        .to_str()
        .context("the prefix is not valid UTF-8 (systemd unit files are)")?;
    ensure!(
        !prefix.contains(char::is_whitespace),
        "the prefix {prefix:?} contains white space"
    );
    let from_bin = format!("{UNIT_PREFIX}/bin/egret");
    let from_doc = format!("{UNIT_PREFIX}/share/doc/egret");
    ensure!(
        template.contains(&from_bin),
        "packaging/systemd/egret.service does not run {from_bin}"
    );
    Ok(template
        .replace(&from_bin, &format!("{prefix}/bin/egret"))
        .replace(&from_doc, &format!("{prefix}/share/doc/egret")))
}

/// Installs `binary` and the files of `<root>/packaging` and `<root>/docs` for `prefix`, below
/// `destdir` if given.
pub fn install_files(
    root: &Path,
    binary: &Path,
    prefix: &Path,
    destdir: Option<&Path>,
) -> Result<Report> {
    ensure!(
        prefix.is_absolute() && !prefix.components().any(|c| c == Component::ParentDir),
        "--prefix must be an absolute path without `..` (got {})",
        prefix.display()
    );
    let meta = fs::metadata(binary)
        .with_context(|| format!("the egret binary {} is missing", binary.display()))?;
    ensure!(meta.is_file(), "{} is not a file", binary.display());
    let packaging = root.join("packaging");
    let dest = |path: &Path| -> PathBuf {
        match destdir {
            Some(dir) => dir.join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_path_buf(),
        }
    };
    let mut report = Report::default();
    let mut put = |path: PathBuf, data: &[u8], mode: u32, replace: bool| -> Result<()> {
        let outcome = write_file(&dest(&path), data, mode, replace)?;
        report.files.push((path, outcome));
        Ok(())
    };

    let egret = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    put(prefix.join("bin/egret"), &egret, 0o755, true)?;

    let template = read_text(&packaging.join("systemd/egret.service"))?;
    put(
        unit_path(prefix),
        unit_text(&template, prefix)?.as_bytes(),
        0o644,
        true,
    )?;

    for name in ["policy.yaml", "config.yaml", "README"] {
        let data = read_text(&packaging.join("etc/egret").join(name))?;
        // policy.yaml and config.yaml are the administrator's; readable by root only.
        let mode = if name == "README" { 0o644 } else { 0o640 };
        put(
            Path::new("/etc/egret").join(name),
            data.as_bytes(),
            mode,
            false,
        )?;
    }
    let logrotate = read_text(&packaging.join("logrotate/egret"))?;
    put(
        PathBuf::from("/etc/logrotate.d/egret"),
        logrotate.as_bytes(),
        0o644,
        false,
    )?;
    for doc in DOCS {
        let data = read_text(&root.join("docs").join(doc))?;
        put(
            prefix.join("share/doc/egret").join(doc),
            data.as_bytes(),
            0o644,
            true,
        )?;
    }
    Ok(report)
}

fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes `data` to `path` (parents created). An existing file is replaced atomically (a new
/// file renamed over it: a running binary can be upgraded), or kept when `replace` is false.
fn write_file(path: &Path, data: &[u8], mode: u32, replace: bool) -> Result<Outcome> {
    let existed = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => bail!("{} is a directory", path.display()),
        Ok(_) => true,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
        Err(err) => return Err(err).with_context(|| format!("stat {}", path.display())),
    };
    if existed && !replace {
        return Ok(Outcome::Kept);
    }
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("mkdir -p {}", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.xtask-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(data)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(err) = written {
        let _ = fs::remove_file(&tmp);
        return Err(err).with_context(|| format!("writing {}", path.display()));
    }
    Ok(if existed {
        Outcome::Replaced
    } else {
        Outcome::Created
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "xtask-install-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn installs_everything_below_destdir_and_keeps_configuration() {
        let tmp = TempDir::new("layout");
        let bin = tmp.0.join("egret-built");
        fs::write(&bin, b"\x7fELF first").unwrap();
        let dest = tmp.0.join("dest");
        let root = workspace_root();
        let prefix = Path::new("/usr/local");

        let report = install_files(&root, &bin, prefix, Some(&dest)).unwrap();
        assert!(report.files.iter().all(|(_, o)| *o == Outcome::Created));
        let egret = dest.join("usr/local/bin/egret");
        assert_eq!(fs::read(&egret).unwrap(), b"\x7fELF first");
        assert_eq!(mode(&egret), 0o755);
        let unit =
            fs::read_to_string(dest.join("usr/local/lib/systemd/system/egret.service")).unwrap();
        assert!(unit.contains("ExecStart=/usr/local/bin/egret run"));
        assert_eq!(mode(&dest.join("etc/egret/policy.yaml")), 0o640);
        for path in [
            "etc/egret/config.yaml",
            "etc/egret/README",
            "etc/logrotate.d/egret",
            "usr/local/share/doc/egret/deploy.md",
        ] {
            assert!(dest.join(path).is_file(), "{path} missing");
        }

        // The administrator edits the policy; a new release is installed over it.
        let policy = dest.join("etc/egret/policy.yaml");
        fs::write(&policy, "mode: block\nrules: []\n").unwrap();
        fs::write(&bin, b"\x7fELF second").unwrap();
        let report = install_files(&root, &bin, prefix, Some(&dest)).unwrap();
        assert_eq!(
            fs::read_to_string(&policy).unwrap(),
            "mode: block\nrules: []\n"
        );
        assert_eq!(fs::read(&egret).unwrap(), b"\x7fELF second");
        assert_eq!(
            report.outcome(Path::new("/etc/egret/policy.yaml")),
            Some(Outcome::Kept)
        );
        assert_eq!(
            report.outcome(Path::new("/usr/local/bin/egret")),
            Some(Outcome::Replaced)
        );
        // No temporary files are left next to what was written.
        let leftovers: Vec<_> = fs::read_dir(dest.join("usr/local/bin"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["egret"]);
    }

    #[test]
    fn unit_follows_the_prefix() {
        let template = "Documentation=file:/usr/local/share/doc/egret/deploy.md\n\
                        ExecStart=/usr/local/bin/egret run --policy /etc/egret/policy.yaml\n";
        let text = unit_text(template, Path::new("/opt/egret")).unwrap();
        assert!(text.contains("ExecStart=/opt/egret/bin/egret run --policy /etc/egret/"));
        assert!(text.contains("file:/opt/egret/share/doc/egret/deploy.md"));
        assert!(unit_text(template, Path::new("/opt/my egret")).is_err());
        assert!(unit_text("ExecStart=/bin/true\n", Path::new("/usr")).is_err());
        assert_eq!(
            unit_path(Path::new("/usr")),
            Path::new("/usr/lib/systemd/system/egret.service")
        );
        assert_eq!(
            unit_path(Path::new("/opt/egret")),
            Path::new("/etc/systemd/system/egret.service")
        );
    }

    #[test]
    fn rejects_relative_prefix_and_missing_binary() {
        let tmp = TempDir::new("reject");
        let root = workspace_root();
        let bin = tmp.0.join("egret");
        fs::write(&bin, b"x").unwrap();
        assert!(install_files(&root, &bin, Path::new("usr"), Some(&tmp.0)).is_err());
        assert!(install_files(&root, &bin, Path::new("/usr/../x"), Some(&tmp.0)).is_err());
        assert!(install_files(
            &root,
            &tmp.0.join("missing"),
            Path::new("/usr"),
            Some(&tmp.0)
        )
        .is_err());
    }
}
