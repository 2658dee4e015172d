//! The kernel programs' diagnostics: what they log with aya-log (a full event ring buffer, a
//! map update that failed, an operation the policy refused) goes to egret's own log (stderr,
//! the journal under systemd) with the target `egret::bpf`.
//!
//! `--log-level` sets both ends: the programs write a message only at or above it (the loader
//! writes the level into their `AYA_LOG_LEVEL`), so at the default `info` the `debug`
//! messages cost each program one load and one branch, on paths that are failures or
//! refusals anyway (docs/performance.md, "Kernel diagnostics"). The messages travel in their
//! own ring buffer (`AYA_LOGS`, 128 KiB), never in the events' one, read with each drain of
//! the events (`--drain-interval-ms`); when it is full a message is dropped, never an event.

use std::panic::{catch_unwind, AssertUnwindSafe};

use aya::Ebpf;
use aya_log::EbpfLogger;
use log::{LevelFilter, Log, Metadata, Record};

/// The target of every kernel message in egret's log.
pub const TARGET: &str = "egret::bpf";

/// The value of `AYA_LOG_LEVEL` for egret's `--log-level`: aya-log's levels are `Error` = 1 up
/// to `Trace` = 5; 0 writes nothing.
pub fn kernel_level(filter: LevelFilter) -> u8 {
    match filter {
        LevelFilter::Off => 0,
        LevelFilter::Error => 1,
        LevelFilter::Warn => 2,
        LevelFilter::Info => 3,
        LevelFilter::Debug => 4,
        LevelFilter::Trace => 5,
    }
}

/// Hands each kernel message to egret's logger under [`TARGET`], keeping its level, module,
/// file and line.
struct Forward;

impl Log for Forward {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        log::logger().enabled(
            &Metadata::builder()
                .level(metadata.level())
                .target(TARGET)
                .build(),
        )
    }

    fn log(&self, record: &Record<'_>) {
        log::logger().log(
            &Record::builder()
                .args(*record.args())
                .level(record.level())
                .target(TARGET)
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        log::logger().flush();
    }
}

/// The reader of the programs' diagnostics.
pub struct KernelLog {
    logger: Option<EbpfLogger<Forward>>,
}

impl KernelLog {
    /// Takes the programs' `AYA_LOGS` map. Without it (an object built without diagnostics)
    /// egret runs on, with a warning.
    pub fn take(ebpf: &mut Ebpf) -> Self {
        match EbpfLogger::init_with_logger(ebpf, Forward) {
            Ok(logger) => Self {
                logger: Some(logger),
            },
            Err(err) => {
                log::warn!("kernel diagnostics unavailable: {err}");
                Self { logger: None }
            }
        }
    }

    /// Writes every message waiting (called with each drain of the events). aya-log panics on a message it cannot parse (only a
    /// program built against another aya-log could write one): the reader then stops, with a
    /// warning, and egret goes on.
    pub fn flush(&mut self) {
        let Some(logger) = self.logger.as_mut() else {
            return;
        };
        if catch_unwind(AssertUnwindSafe(|| logger.flush())).is_err() {
            log::warn!("kernel diagnostics: a message could not be read; no more are shown");
            self.logger = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_match_aya_log() {
        use aya_log::Level;
        for (filter, level) in [
            (LevelFilter::Error, Level::Error),
            (LevelFilter::Warn, Level::Warn),
            (LevelFilter::Info, Level::Info),
            (LevelFilter::Debug, Level::Debug),
            (LevelFilter::Trace, Level::Trace),
        ] {
            assert_eq!(kernel_level(filter), level as u8, "{filter}");
        }
        assert_eq!(kernel_level(LevelFilter::Off), 0);
    }
}
