//! `egret verify` on files a test's egret wrote.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{ensure, Result};

use crate::{egret_bin, run_with_timeout, RunOutput};

/// `egret verify FILES…` (not in a test cgroup: it only reads files).
pub fn egret_verify<P: AsRef<Path>>(files: &[P]) -> Result<RunOutput> {
    let mut cmd = Command::new(egret_bin());
    cmd.arg("verify")
        .args(files.iter().map(|f| f.as_ref().as_os_str()));
    run_with_timeout(&mut cmd, Duration::from_secs(60))
}

/// `egret verify` says the files' hash chain is intact.
pub fn expect_intact<P: AsRef<Path>>(files: &[P]) -> Result<RunOutput> {
    let out = egret_verify(files)?;
    ensure!(
        out.status.success() && out.stdout.contains("intact:"),
        "egret verify failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        out.stdout,
        out.stderr
    );
    Ok(out)
}
