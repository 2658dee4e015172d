//! `cargo xtask package`: the Debian package, `target/package/egret_<version>_<arch>.deb`, built
//! with `dpkg-deb` (no debhelper, no cargo-deb) and checked with `lintian` (docs/deploy.md).
//!
//! | what | where in the package |
//! | --- | --- |
//! | `egret` (release build, stripped) | `/usr/bin/egret` |
//! | `egret.service` (packaging/systemd, for `/usr`, reading `--config /etc/egret/config.yaml`) | `/lib/systemd/system/` |
//! | `egret-report.service`, `egret-report.timer` | `/lib/systemd/system/` |
//! | `config.yaml`, `policy.yaml`, `README` | `/etc/egret/` (conffiles) |
//! | logrotate | `/etc/logrotate.d/egret` (conffile) |
//! | man pages, from `egret generate` (clap_mangen) | `/usr/share/man/man1/egret*.1.gz` |
//! | completions, from `egret generate` (clap_complete) | bash, zsh, fish vendor directories |
//! | docs, `copyright`, `changelog.Debian.gz` | `/usr/share/doc/egret/` |
//! | `lintian-overrides` (one false positive, explained in the file) | `/usr/share/lintian/overrides/egret` |
//! | `postinst`, `prerm`, `postrm` (packaging/debian: deb-systemd-helper/-invoke) | `DEBIAN/` |
//!
//! `Depends:` comes from `dpkg-shlibdeps` on the binary. Every file in `/etc` is a conffile,
//! so dpkg never overwrites an edited policy on upgrade (it asks, or keeps it with
//! `--force-confold`).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context as _, Result};

use crate::cmd::{cargo_build, run, stdout_of, target_dir, workspace_root};
use crate::debian::ensure_tools;
use crate::setup::setup;

/// Documentation installed in /usr/share/doc/egret (the units name deploy.md and report.md).
const DOCS: &[&str] = &[
    "deploy.md",
    "policy.md",
    "events.md",
    "containers.md",
    "report.md",
    "config.md",
    "output.md",
];

/// The Debian revision of the package (`<upstream>-<revision>`).
const DEBIAN_REVISION: &str = "1";

/// The package's systemd units directory (where debhelper puts them on Debian 12).
const UNIT_DIR: &str = "lib/systemd/system";

#[derive(Debug, clap::Args)]
pub struct PackageOptions {
    /// Package this egret binary instead of building one with `cargo build --release -p egret`
    /// (the end-to-end test packages the build under test).
    #[arg(long, value_name = "PATH")]
    egret_bin: Option<PathBuf>,
    /// Where the .deb goes.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Do not run lintian on the result.
    #[arg(long)]
    no_lintian: bool,
}

/// `cargo xtask package [--egret-bin PATH] [--out-dir DIR] [--no-lintian]`.
pub fn package(options: &PackageOptions) -> Result<()> {
    ensure_tools(&["dpkg-deb", "dpkg-shlibdeps", "lintian", "strip"])?;
    let binary = match &options.egret_bin {
        Some(path) => path.clone(),
        None => {
            setup()?;
            cargo_build(&["-p", "egret"], true)?;
            target_dir().join("release").join("egret")
        }
    };
    let out_dir = options
        .out_dir
        .clone()
        .unwrap_or_else(|| target_dir().join("package"));
    let deb = build(&workspace_root(), &binary, &out_dir)?;
    if !options.no_lintian {
        lintian(&deb)?;
    }
    println!("{}", deb.display());
    Ok(())
}

/// `cargo xtask test`'s packaging step: target/package/debug/egret_*.deb from the debug
/// egret, checked with lintian.
pub fn check_debug_package() -> Result<()> {
    ensure_tools(&["dpkg-deb", "dpkg-shlibdeps", "lintian", "strip"])?;
    let binary = target_dir().join("debug").join("egret");
    let deb = build(
        &workspace_root(),
        &binary,
        &target_dir().join("package").join("debug"),
    )?;
    lintian(&deb)
}

/// Builds the .deb from `binary` and `<root>/packaging`, `<root>/docs` into `out_dir`;
/// returns its path.
pub fn build(root: &Path, binary: &Path, out_dir: &Path) -> Result<PathBuf> {
    let version = format!("{}-{DEBIAN_REVISION}", workspace_version(root)?);
    let arch = stdout_of(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_owned();
    let stage = out_dir.join(format!("egret_{version}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    stage_files(root, binary, &stage, &version)?;
    let deb = out_dir.join(format!("egret_{version}_{arch}.deb"));
    // dpkg-deb's message to stderr: stdout is the package's path alone.
    let said = stdout_of(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    eprint!("{said}");
    fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    Ok(deb)
}

/// `lintian` on the package: errors fail, warnings are printed.
pub fn lintian(deb: &Path) -> Result<()> {
    let output = Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0"])
        .arg(deb)
        .output()
        .context("cannot start lintian")?;
    let text = String::from_utf8_lossy(&output.stdout);
    eprint!("{text}{}", String::from_utf8_lossy(&output.stderr));
    ensure!(
        output.status.success(),
        "lintian reports errors on {} ({})",
        deb.display(),
        output.status
    );
    eprintln!(
        "xtask: lintian: no errors ({} other tags)",
        text.lines().filter(|l| !l.trim().is_empty()).count()
    );
    Ok(())
}

/// `version = "X"` of `[workspace.package]` in the root Cargo.toml.
fn workspace_version(root: &Path) -> Result<String> {
    let manifest = read_text(&root.join("Cargo.toml"))?;
    manifest
        .split("[workspace.package]")
        .nth(1)
        .and_then(|section| {
            section
                .lines()
                .take_while(|l| !l.starts_with('['))
                .find_map(|l| l.trim().strip_prefix("version"))
        })
        .and_then(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
        .context("no version in [workspace.package] of Cargo.toml")
}

/// Everything below `stage`: the file tree and `DEBIAN/`.
fn stage_files(root: &Path, binary: &Path, stage: &Path, version: &str) -> Result<()> {
    let packaging = root.join("packaging");
    let put = |path: &str, data: &[u8], mode: u32| write_file(&stage.join(path), data, mode);

    let bin = stage.join("usr/bin/egret");
    put("usr/bin/egret", &[], 0o755)?;
    run(Command::new("strip")
        .args([
            "--strip-unneeded",
            "--remove-section=.comment",
            "--remove-section=.note",
            "-o",
        ])
        .arg(&bin)
        .arg(binary))?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;

    let unit = package_unit(&read_text(&packaging.join("systemd/egret.service"))?)?;
    put(&format!("{UNIT_DIR}/egret.service"), unit.as_bytes(), 0o644)?;
    for name in ["egret-report.service", "egret-report.timer"] {
        let text = read_text(&packaging.join("systemd").join(name))?;
        put(&format!("{UNIT_DIR}/{name}"), text.as_bytes(), 0o644)?;
    }

    let mut conffiles = Vec::new();
    for name in ["config.yaml", "policy.yaml", "README"] {
        let text = read_text(&packaging.join("etc/egret").join(name))?;
        let mode = if name == "README" { 0o644 } else { 0o640 };
        put(&format!("etc/egret/{name}"), text.as_bytes(), mode)?;
        conffiles.push(format!("/etc/egret/{name}"));
    }
    let logrotate = read_text(&packaging.join("logrotate/egret"))?;
    put("etc/logrotate.d/egret", logrotate.as_bytes(), 0o644)?;
    conffiles.push("/etc/logrotate.d/egret".to_owned());

    let doc = "usr/share/doc/egret";
    for name in DOCS {
        let text = read_text(&root.join("docs").join(name))?;
        put(&format!("{doc}/{name}"), text.as_bytes(), 0o644)?;
    }
    let copyright = read_text(&packaging.join("debian/copyright"))?;
    put(&format!("{doc}/copyright"), copyright.as_bytes(), 0o644)?;
    let changelog = read_text(&packaging.join("debian/changelog"))?;
    ensure!(
        changelog.starts_with(&format!("egret ({version})")),
        "packaging/debian/changelog's first entry is not egret ({version}): add one"
    );
    put(
        &format!("{doc}/changelog.Debian.gz"),
        &gzip(changelog.as_bytes())?,
        0o644,
    )?;

    // A false positive lintian cannot tell apart (the file says why).
    let overrides = read_text(&packaging.join("debian/lintian-overrides"))?;
    put(
        "usr/share/lintian/overrides/egret",
        overrides.as_bytes(),
        0o644,
    )?;

    generated(binary, stage)?;

    for script in ["postinst", "prerm", "postrm"] {
        let text = read_text(&packaging.join("debian").join(script))?;
        put(&format!("DEBIAN/{script}"), text.as_bytes(), 0o755)?;
    }
    put(
        "DEBIAN/conffiles",
        format!("{}\n", conffiles.join("\n")).as_bytes(),
        0o644,
    )?;
    put("DEBIAN/md5sums", md5sums(stage)?.as_bytes(), 0o644)?;
    let control = control_text(
        &read_text(&packaging.join("debian/control"))?,
        version,
        &stdout_of(Command::new("dpkg").arg("--print-architecture"))?,
        installed_size_kib(stage)?,
        &depends(binary, stage)?,
    )?;
    put("DEBIAN/control", control.as_bytes(), 0o644)
}

/// Man pages and completions from the binary's own clap command (`egret generate DIR`).
fn generated(binary: &Path, stage: &Path) -> Result<()> {
    let dir = stage.join(".generated");
    run(Command::new(binary).arg("generate").arg(&dir))?;
    let man = dir.join("man1");
    let mut pages: Vec<_> = fs::read_dir(&man)
        .with_context(|| format!("reading {}", man.display()))?
        .collect::<Result<_, _>>()?;
    pages.sort_by_key(fs::DirEntry::file_name);
    ensure!(!pages.is_empty(), "egret generate wrote no man page");
    for page in pages {
        let name = page.file_name().to_string_lossy().into_owned();
        let text = fs::read(page.path())?;
        write_file(
            &stage.join(format!("usr/share/man/man1/{name}.gz")),
            &gzip(&text)?,
            0o644,
        )?;
    }
    for (from, to) in [
        ("egret.bash", "usr/share/bash-completion/completions/egret"),
        ("_egret", "usr/share/zsh/vendor-completions/_egret"),
        (
            "egret.fish",
            "usr/share/fish/vendor_completions.d/egret.fish",
        ),
    ] {
        let data = fs::read(dir.join("completions").join(from))
            .with_context(|| format!("egret generate wrote no {from}"))?;
        write_file(&stage.join(to), &data, 0o644)?;
    }
    fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The packaged unit: `/usr/bin/egret`, documentation in `/usr/share/doc/egret`, and the
/// settings read from `/etc/egret/config.yaml` (a conffile) instead of flags.
pub fn package_unit(template: &str) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut lines = template.lines();
    let mut replaced = false;
    while let Some(line) = lines.next() {
        if line.starts_with("ExecStart=/usr/local/bin/egret run") {
            // The flags (continued lines) become the config file's keys.
            let mut continued = line.ends_with('\\');
            while continued {
                continued = lines.next().is_some_and(|l| l.ends_with('\\'));
            }
            out.push_str("ExecStart=/usr/bin/egret run --config /etc/egret/config.yaml\n");
            replaced = true;
        } else if line.starts_with("# Until egret reads a config file") {
            out.push_str(
                "# The settings are in /etc/egret/config.yaml (a conffile: `systemctl reload egret`\n\
                 # re-reads the policy; a changed config.yaml needs `systemctl restart egret`).\n",
            );
        } else if line.starts_with("# Installed by `cargo xtask install`") {
            out.push_str(
                "# Installed by the egret package (`cargo xtask package`); the settings below are \
                 the defaults of a fresh install.\n",
            );
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    ensure!(
        replaced,
        "packaging/systemd/egret.service has no `ExecStart=/usr/local/bin/egret run` line"
    );
    ensure!(
        out.contains("/usr/local/share/doc/egret"),
        "packaging/systemd/egret.service does not document /usr/local/share/doc/egret"
    );
    Ok(out
        .replace("/usr/local/share/doc/egret", "/usr/share/doc/egret")
        .replace("/usr/local/bin/egret", "/usr/bin/egret"))
}

fn control_text(
    template: &str,
    version: &str,
    arch: &str,
    installed_size: u64,
    depends: &str,
) -> Result<String> {
    let text = template
        .replace("@VERSION@", version)
        .replace("@ARCH@", arch.trim())
        .replace("@INSTALLED_SIZE@", &installed_size.to_string())
        .replace("@DEPENDS@", depends);
    let left = ["@VERSION@", "@ARCH@", "@INSTALLED_SIZE@", "@DEPENDS@"];
    ensure!(
        !text.split('@').skip(1).step_by(2).any(|word| {
            !word.is_empty() && word.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        }) && left.iter().all(|p| !text.contains(p)),
        "packaging/debian/control has a placeholder left: {text}"
    );
    Ok(text)
}

/// `Depends:` of the binary, by `dpkg-shlibdeps` (which wants a debian/control to run in).
fn depends(binary: &Path, stage: &Path) -> Result<String> {
    let dir = stage.join(".shlibdeps");
    write_file(
        &dir.join("debian/control"),
        b"Source: egret\n\nPackage: egret\nArchitecture: any\n",
        0o644,
    )?;
    let out = stdout_of(
        Command::new("dpkg-shlibdeps")
            .arg("-O")
            .arg("-e")
            .arg(binary.canonicalize()?)
            .current_dir(&dir),
    )?;
    fs::remove_dir_all(&dir)?;
    let depends = out
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .with_context(|| format!("dpkg-shlibdeps printed no shlibs:Depends: {out}"))?;
    Ok(depends.to_owned())
}

/// Every regular file below `stage` but `DEBIAN/`, as `md5sum` lines (relative paths).
fn md5sums(stage: &Path) -> Result<String> {
    let mut files = Vec::new();
    walk(stage, &mut |path| {
        if !path.starts_with(stage.join("DEBIAN")) {
            files.push(path.to_path_buf());
        }
    })?;
    files.sort();
    let mut command = Command::new("md5sum");
    command.current_dir(stage);
    for file in &files {
        command.arg(file.strip_prefix(stage)?);
    }
    stdout_of(&mut command)
}

/// Installed-Size: the files' sizes in KiB, rounded up per file (as dpkg-gencontrol does).
fn installed_size_kib(stage: &Path) -> Result<u64> {
    let mut total = 0;
    let mut failed = None;
    walk(stage, &mut |path| {
        if path.starts_with(stage.join("DEBIAN")) {
            return;
        }
        match fs::metadata(path) {
            Ok(meta) => total += meta.len().div_ceil(1024),
            Err(err) => failed = Some(err),
        }
    })?;
    if let Some(err) = failed {
        return Err(err.into());
    }
    Ok(total)
}

fn walk(dir: &Path, found: &mut dyn FnMut(&Path)) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, found)?;
        } else {
            found(&path);
        }
    }
    Ok(())
}

/// `gzip -9n`: no name, no time stamp (reproducible, as lintian wants).
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start gzip")?;
    let mut stdin = child.stdin.take().context("gzip stdin")?;
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let output = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("gzip writer panicked"))??;
    if !output.status.success() {
        bail!("gzip failed ({})", output.status);
    }
    Ok(output.stdout)
}

fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes `data` to `path` (parents created, 0755) with `mode`.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent", path.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("mkdir -p {}", dir.display()))?;
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_unit_reads_the_config_file_and_keeps_the_sandbox() {
        let template =
            read_text(&workspace_root().join("packaging/systemd/egret.service")).unwrap();
        let unit = package_unit(&template).unwrap();
        assert!(unit.contains("\nExecStart=/usr/bin/egret run --config /etc/egret/config.yaml\n"));
        assert!(!unit.contains("/usr/local"), "{unit}");
        assert!(
            !unit.contains("--output /var/log"),
            "the flags are gone: {unit}"
        );
        assert!(unit.contains("Documentation=file:/usr/share/doc/egret/deploy.md"));
        // Every other directive is the template's (the sandbox stays).
        for line in template.lines().filter(|l| {
            !l.starts_with('#')
                && !l.starts_with("ExecStart=")
                && !l.starts_with("Documentation=")
                && !l.starts_with(' ')
        }) {
            assert!(unit.lines().any(|u| u == line), "{line:?} lost");
        }
    }

    #[test]
    fn the_config_file_carries_the_flags_the_template_passes() {
        let root = workspace_root();
        let template = read_text(&root.join("packaging/systemd/egret.service")).unwrap();
        let config = read_text(&root.join("packaging/etc/egret/config.yaml")).unwrap();
        let keys: Vec<&str> = config
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with(' '))
            .filter_map(|l| l.split(':').next())
            .collect();
        // The ExecStart= line and its continuations.
        let exec: Vec<&str> = template
            .lines()
            .skip_while(|l| !l.starts_with("ExecStart="))
            .scan(true, |go_on, l| {
                let this = (*go_on).then_some(l);
                *go_on = l.ends_with('\\');
                this
            })
            .collect();
        let flags: Vec<&str> = exec
            .iter()
            .flat_map(|l| l.split_whitespace())
            .filter_map(|w| w.strip_prefix("--"))
            .collect();
        assert!(flags.contains(&"policy"));
        for flag in flags {
            assert!(keys.contains(&flag), "config.yaml lacks {flag}");
        }
    }

    #[test]
    fn control_and_version() {
        let text = control_text(
            "Version: @VERSION@\nArchitecture: @ARCH@\nInstalled-Size: @INSTALLED_SIZE@\nDepends: @DEPENDS@\n",
            "0.1.0-1",
            "amd64\n",
            42,
            "libc6 (>= 2.34)",
        )
        .unwrap();
        assert_eq!(
            text,
            "Version: 0.1.0-1\nArchitecture: amd64\nInstalled-Size: 42\nDepends: libc6 (>= 2.34)\n"
        );
        assert!(control_text("X: @OTHER@\n", "1", "a", 1, "d").is_err());
        assert_eq!(
            workspace_version(&workspace_root()).unwrap(),
            env!("CARGO_PKG_VERSION")
        );
    }
}
