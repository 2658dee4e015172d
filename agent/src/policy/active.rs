//! The policy in force at run time: loading and compiling it, and noticing its file change.

use std::path::{Path, PathBuf};

use super::{
    compile::{self, CompiledPolicy},
    matcher::Matcher,
    parse, Policy, PolicyErrors,
};

/// Loads (or takes the built-in) policy and compiles it; every error, not just the first.
pub fn load_policy(path: Option<&Path>) -> Result<(Policy, CompiledPolicy), PolicyErrors> {
    let policy = match path {
        Some(path) => parse::load_policy(path)?,
        None => parse::default_policy(),
    };
    let errors = parse::block_mode_errors(&policy);
    if !errors.is_empty() {
        return Err(PolicyErrors {
            file: policy.source.clone(),
            errors,
        });
    }
    let compiled = compile::compile(&policy)?;
    Ok((policy, compiled))
}

/// The policy in force and what is derived from it.
pub struct ActivePolicy {
    pub policy: Policy,
    pub matcher: Matcher,
    pub compiled: CompiledPolicy,
}

impl ActivePolicy {
    pub fn new(policy: Policy, compiled: CompiledPolicy) -> Self {
        Self {
            matcher: Matcher::new(&policy),
            policy,
            compiled,
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "{} ({} mode, {} rules)",
            self.policy.source,
            self.policy.mode.name(),
            self.policy.rules.len()
        )
    }
}

/// `--watch`: notices when the policy file changes (checked once a second).
pub struct FileWatch {
    path: PathBuf,
    last: Option<(std::time::SystemTime, u64, u64)>,
}

impl FileWatch {
    pub fn new(path: PathBuf) -> Self {
        let mut watch = Self { path, last: None };
        watch.last = watch.stamp();
        watch
    }

    fn stamp(&self) -> Option<(std::time::SystemTime, u64, u64)> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(&self.path).ok()?;
        Some((meta.modified().ok()?, meta.len(), meta.ino()))
    }

    /// `true` once per change. A file that can no longer be read (removed, a symbolic link
    /// loop) is a change too: the reload then says why it is refused, once, and the policy in
    /// force stays.
    pub fn changed(&mut self) -> bool {
        let now = self.stamp();
        if now != self.last {
            self.last = now;
            return true;
        }
        false
    }
}
