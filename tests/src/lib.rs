//! End-to-end test harness for egret.
//!
//! The tests run the real `egret` binary (which loads the real kernel programs)
//! against cgroups and network namespaces that the tests create themselves.
//! Nothing here touches the root cgroup or sends traffic anywhere except
//! loopback and namespaces created by the test.

pub mod agent;
pub mod bench;
pub mod browser;
pub mod cgroup;
pub mod deploy;
pub mod dns;
pub mod expect;
pub mod firstbytes;
pub mod identity;
pub mod json;
pub mod net;
pub mod netns;
pub mod nspawn;
pub mod policy;
pub mod prometheus;
pub mod run;
pub mod runtime;
pub mod skip;
pub mod ssh;
pub mod verify;
pub mod wait;

pub use agent::{run_in, Egret, Harness, LINE_TIMEOUT};
pub use cgroup::{cgroup2_mount, TestCgroup};
pub use dns::{AcceptServer, DnsServer};
pub use json::{field, field_str, field_u64, parse_timestamp};
pub use net::socket_addr;
pub use netns::NetNs;
pub use policy::{PinPath, PolicyDir};
pub use run::{
    argv, command, command_for_argv, drop_privileges, run_with_timeout, ExchangeServer,
    ReadyProcess, RunOutput, ScratchDir, TcpServer, UdpServer,
};
pub use skip::{egret_bin, is_ci, prerequisite};
pub use verify::{egret_verify, expect_intact};
pub use wait::wait_until;

use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A process-unique, monotonically increasing number used to build unique names.
pub fn unique() -> usize {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A string that is unique across processes and calls: `<pid>-<counter>`.
pub fn unique_suffix() -> String {
    format!("{}-{}", std::process::id(), unique())
}

/// A random-ish marker (pid, counter and clock nanoseconds) to put in argv.
pub fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("marker-{}-{nanos:x}", unique_suffix())
}
