//! Headless Chromium for the tests that look at a page: a screenshot (PNG) and the DOM as the
//! browser built it. Debian's `chromium` is installed when missing (as the container runtimes
//! are, see [`crate::runtime::install`]); a browser that cannot be had is an error for
//! [`crate::prerequisite`]: a skip outside CI, a failure under `CI=true`.

use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long one browser run may take (the first start after an install is the slowest).
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

/// A Chromium binary, and a scratch profile directory removed on drop.
#[derive(Debug)]
pub struct Chromium {
    bin: PathBuf,
    profile: PathBuf,
}

impl Chromium {
    /// Finds Chromium (`/usr/bin/chromium`, `/usr/bin/chromium-browser`, `chromium` on `PATH`),
    /// installing Debian's `chromium` package when none is there.
    pub fn find_or_install() -> Result<Self> {
        let bin = crate::runtime::install::ensure_program(
            "chromium",
            "chromium",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        )?;
        let profile =
            std::env::temp_dir().join(format!("egret-e2e-chromium-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&profile)
            .with_context(|| format!("mkdir {}", profile.display()))?;
        Ok(Self { bin, profile })
    }

    /// The command line every run shares: headless, no sandbox (the tests run as root), a
    /// throw-away profile, and none of the browser's own network traffic.
    fn command(&self, page: &Path) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--mute-audio",
        ])
        .arg(format!("--user-data-dir={}", self.profile.display()));
        cmd.arg(format!("file://{}", page.display()));
        cmd
    }

    /// Renders `page` in a `width`×`height` window to `png`.
    pub fn screenshot(&self, page: &Path, png: &Path, width: u32, height: u32) -> Result<()> {
        let mut cmd = self.command(page);
        cmd.arg(format!("--screenshot={}", png.display()))
            .arg(format!("--window-size={width},{height}"));
        let out = crate::run_with_timeout(&mut cmd, BROWSER_TIMEOUT)?;
        ensure!(
            out.status.success() && png.exists(),
            "chromium --screenshot failed ({}):\n{}",
            out.status,
            out.stderr
        );
        Ok(())
    }

    /// The DOM of `page` after the browser parsed it (`--dump-dom`).
    pub fn dump_dom(&self, page: &Path) -> Result<String> {
        let mut cmd = self.command(page);
        cmd.arg("--dump-dom");
        let out = crate::run_with_timeout(&mut cmd, BROWSER_TIMEOUT)?;
        ensure!(
            out.status.success() && !out.stdout.is_empty(),
            "chromium --dump-dom failed ({}):\n{}",
            out.status,
            out.stderr
        );
        Ok(out.stdout)
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Width and height of a PNG file, from its `IHDR` chunk (errors unless it is a PNG).
pub fn png_size(data: &[u8]) -> Result<(u32, u32)> {
    ensure!(
        data.get(..8) == Some(b"\x89PNG\r\n\x1a\n".as_slice()),
        "not a PNG file"
    );
    ensure!(
        data.get(12..16) == Some(b"IHDR".as_slice()),
        "PNG without IHDR"
    );
    let be = |range: std::ops::Range<usize>| -> Result<u32> {
        let bytes: [u8; 4] = data
            .get(range)
            .and_then(|b| b.try_into().ok())
            .context("PNG header truncated")?;
        Ok(u32::from_be_bytes(bytes))
    };
    Ok((be(16..20)?, be(20..24)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_header() -> Result<()> {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&1280u32.to_be_bytes());
        png.extend_from_slice(&900u32.to_be_bytes());
        assert_eq!(png_size(&png)?, (1280, 900));
        assert!(png_size(b"GIF89a").is_err());
        assert!(png_size(&png[..18]).is_err());
        Ok(())
    }
}
