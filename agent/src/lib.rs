//! egret: an eBPF host egress monitor.
//!
//! Kernel programs (`agent-ebpf`) see every outbound connection and UDP flow of a cgroup
//! subtree and every exec/fork/exit on the host; this library loads them ([`kernel`]), keeps
//! process and cgroup identity ([`process`], [`cgroup`], [`users`]; secrets in arguments are
//! redacted by [`redact`]), aggregates UDP flows ([`udp`]) and writes one ECS JSON line per
//! event ([`ecs`], [`output`]). [`agent::run`] ties it together.

pub mod agent;
pub mod alerts;
pub mod baseline;
pub mod btf;
pub mod cgroup;
pub mod clock;
pub mod config;
pub mod config_file;
pub mod conn;
pub mod container;
pub mod dns;
pub mod ecs;
pub mod fdlimit;
pub mod kernel;
pub mod kernel_log;
pub mod memory;
pub mod metrics;
pub mod output;
pub mod payload;
pub mod pipeline;
pub mod policy;
pub mod process;
pub mod record;
pub mod redact;
pub mod report;
pub mod ring;
pub mod schema;
pub mod sockdiag;
pub mod top;
pub mod tracefs;
pub mod udp;
pub mod users;
pub mod yaml;

pub use agent::{run, AgentError};
