//! The names of the kernel programs' maps, programs and globals, as userspace looks them up in
//! the object (`agent/src/kernel.rs`).
//!
//! aya-ebpf's `#[map]` and program macros name each item after its Rust identifier, so the
//! kernel crate cannot use these constants: it spells each name once more, as the identifier.
//! A test of the agent (`kernel::tests`) reads the embedded object and fails when a name here
//! is missing from it, or when the object has a map, program or global not listed here.

/// Declares one `&str` constant per name (`NAME`, or `NAME = "value"` when the value is not
/// the constant's own name) and `ALL`, the list of them.
macro_rules! names {
    ($($name:ident $(= $value:literal)?),* $(,)?) => {
        $(pub const $name: &str = names!(@value $name $($value)?);)*
        /// Every name of this module.
        pub const ALL: &[&str] = &[$($name),*];
    };
    (@value $name:ident $value:literal) => { $value };
    (@value $name:ident) => { stringify!($name) };
}

/// Maps, by the kernel module (`agent-ebpf/src/*.rs`) that declares them; its doc says what
/// each holds and who reads it. Those userspace does not open are listed too, so the object and
/// this list can be compared whole.
pub mod maps {
    names! {
        // shared (`AYA_LOGS`: aya-log's, the programs' diagnostics)
        EVENTS, COUNTERS, UDP_FLOWS, AYA_LOGS,
        // socket
        UDP_SOCKETS,
        // conn
        CONNS, CONNECTING, LAST_SK_ERROR,
        // dns
        NAME_SCRATCH, DIGEST_SCRATCH, DNS_QUERIES, DNS_SENDS, TRUSTED_RESOLVERS,
        // payload
        GATES,
        // policy: its state, scratch, and each map once per policy set (`PolicyMaps`)
        POLICY_STATE, PATH_SCRATCH,
        POLICY_V4_0, POLICY_V6_0, SCOPES_0, DNS_NAMES_0, DNS_ALLOW_0, DOMAIN_RULES_0,
        SCOPE_PATHS_0, SCOPE_UNITS_0, NAME_GATE_PORTS_0, EXES_0, EXE_PATHS_0,
        POLICY_V4_1, POLICY_V6_1, SCOPES_1, DNS_NAMES_1, DNS_ALLOW_1, DOMAIN_RULES_1,
        SCOPE_PATHS_1, SCOPE_UNITS_1, NAME_GATE_PORTS_1, EXES_1, EXE_PATHS_1,
    }
}

/// Programs, by kernel module (also the names their pinned links get under `--pin-path`). A
/// tracepoint program is named after its tracepoint.
pub mod programs {
    names! {
        // socket: cgroup/connect4|6, cgroup/sendmsg4|6, cgroup/sock_release
        CONNECT4 = "connect4", CONNECT6 = "connect6",
        SENDMSG4 = "sendmsg4", SENDMSG6 = "sendmsg6",
        SOCK_RELEASE = "sock_release",
        // process: tracepoints
        SCHED_PROCESS_EXEC = "sched_process_exec", TASK_NEWTASK = "task_newtask",
        SCHED_PROCESS_EXIT = "sched_process_exit",
        // conn: sockops, tracepoints
        SOCK_OPS = "sock_ops",
        TCP_RECEIVE_RESET = "tcp_receive_reset", INET_SK_ERROR_REPORT = "inet_sk_error_report",
        SYS_EXIT_CONNECT = "sys_exit_connect",
        // skb: cgroup_skb/egress, cgroup_skb/ingress (names older than the module)
        CONN_EGRESS = "conn_egress", DNS_INGRESS = "dns_ingress",
        // policy: tracepoint
        CGROUP_MKDIR = "cgroup_mkdir",
    }
}

/// Globals (`#[unsafe(no_mangle)]` statics) userspace sets at load time (`KernelConfig`), by
/// kernel module.
pub mod globals {
    names! {
        // shared (`AYA_LOG_LEVEL`: aya-log's, the most verbose diagnostics written)
        WAKEUP_BYTES, AYA_LOG_LEVEL,
        // task
        KERNEL_OFFSETS,
        // socket
        UDP_IDLE_NS,
        // conn
        CONN_TRACKING, TCP_PROGRESS,
        // dns
        DNS_PORT, DNS_TTL_FLOOR_NS, DNS_TTL_CEILING_NS,
        // payload
        FIRST_BYTES,
    }
}
