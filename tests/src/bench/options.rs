//! The options of `cargo xtask bench`, declared once: `egret-bench` parses them, and xtask
//! compiles this same file (`#[path]`, it cannot depend on this crate) to check them and show
//! `--help` before it builds anything, then passes the arguments through as given. So nothing
//! here may name a path outside this file (`crate::`, `super::`).

use clap::ValueEnum;
use serde::Serialize;

/// Most rules `--policy-rules` accepts: every rule gets its own 10.X.Y.0/24 or 2001:db8:X::/48.
pub const MAX_POLICY_RULES: u32 = 65_536;

#[derive(clap::Args)]
pub struct BenchOptions {
    /// Baseline + with-egret rounds per workload (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Length of each load-generator run, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub duration_ms: u64,
    /// Workloads to run (repeatable; default: all, in the order tcp, tcp-starts-only,
    /// tcp-merged, tcp-progress, tcp-request, tcp-request-plain, udp, tcp-policy, dns, dns-block).
    #[arg(long = "workload", value_enum)]
    pub workloads: Vec<Workload>,
    /// Rules in the generated block-mode policy of the `tcp-policy` workload.
    #[arg(long, default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_POLICY_RULES)))]
    pub policy_rules: u32,
    /// Also run the replay benchmark of the userspace pipeline (no kernel; after the
    /// workloads).
    #[arg(long)]
    pub replay: bool,
    /// Run only the replay benchmark (needs no root, no kernel programs).
    #[arg(long, conflicts_with = "replay")]
    pub replay_only: bool,
    /// Connections (TCP connects and UDP flows) each replay round generates.
    #[arg(long, default_value_t = 200_000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub replay_connections: u64,
    /// Replay variants to run (repeatable; default: all, in the order audit,
    /// long-entry-args, first-bytes, block, starts-only, merged).
    #[arg(long = "replay-variant", value_enum)]
    pub replay_variants: Vec<ReplayVariant>,
    /// Where the replay writes its output (default: target/bench); e.g. a tmpfs, to leave
    /// the file system's own cost out of the system time.
    #[arg(long, value_name = "DIR")]
    pub replay_dir: Option<std::path::PathBuf>,
}

/// What the replay's pipeline and workload are set to (`cargo xtask bench --replay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplayVariant {
    /// egret's defaults, the default (audit) policy, a short entry-leader argument.
    Audit,
    /// As `audit`, with this sandbox's entry leader: a 1 KB argument on every line.
    LongEntryArgs,
    /// As `audit`, every HTTP(S) connection carrying its first bytes (request, ClientHello).
    FirstBytes,
    /// Block mode with a generated policy of `--policy-rules` rules approving everything.
    Block,
    /// As `audit`, with `--connection-ends off`: start lines only.
    StartsOnly,
    /// As `audit`, with `--merge-short-connections on`: one line per short connection.
    Merged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    Tcp,
    /// The TCP loop with `--connection-ends off`: start lines only.
    TcpStartsOnly,
    /// The TCP loop with `--merge-short-connections on`: one line per short connection.
    TcpMerged,
    /// The TCP loop with everything on: end lines and `--progress-interval 10`.
    TcpProgress,
    /// An HTTP request and its answer on each connection (`egret-testclient request-loop`);
    /// egret's defaults: the first bytes each way are read.
    TcpRequest,
    /// The request loop with `--first-bytes off`.
    TcpRequestPlain,
    Udp,
    /// The TCP loop with egret enforcing a large block-mode policy.
    TcpPolicy,
    /// Resolve a name (fresh UDP query), then connect to its address; default audit policy.
    Dns,
    /// The `dns` loop with egret in block mode, the connects approved only by a domain rule.
    DnsBlock,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: BenchOptions,
    }

    fn parse(args: &[&str]) -> Result<BenchOptions, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .map(|cli| cli.options)
    }

    #[test]
    fn defaults() -> Result<(), clap::Error> {
        let BenchOptions {
            rounds,
            duration_ms,
            workloads,
            policy_rules,
            replay,
            replay_only,
            replay_connections,
            replay_variants,
            replay_dir,
        } = parse(&[])?;
        assert_eq!((rounds, duration_ms, policy_rules), (3, 2000, 1000));
        assert!(workloads.is_empty());
        assert!(!replay && !replay_only && replay_variants.is_empty() && replay_dir.is_none());
        assert_eq!(replay_connections, 200_000);
        Ok(())
    }

    #[test]
    fn rejects_zero_rounds() {
        assert!(parse(&["--rounds", "0"]).is_err());
        assert!(parse(&["--rounds", "2", "--workload", "tcp"]).is_ok());
    }

    #[test]
    fn policy_options() {
        assert!(parse(&["--workload", "tcp-policy", "--policy-rules", "50"]).is_ok());
        assert!(parse(&["--policy-rules", "0"]).is_err());
        assert!(parse(&["--policy-rules", "65537"]).is_err());
        assert!(parse(&["--policy-rules", "65536"]).is_ok());
    }

    #[test]
    fn dns_workloads() -> Result<(), clap::Error> {
        let options = parse(&[
            "--workload",
            "dns",
            "--workload",
            "dns-block",
            "--rounds",
            "1",
        ])?;
        assert_eq!(options.workloads, [Workload::Dns, Workload::DnsBlock]);
        assert!(parse(&["--workload", "dns_block"]).is_err());
        Ok(())
    }

    #[test]
    fn replay_options() -> Result<(), clap::Error> {
        let options = parse(&[
            "--replay-only",
            "--replay-connections",
            "20000",
            "--replay-variant",
            "long-entry-args",
        ])?;
        assert!(options.replay_only);
        assert_eq!(options.replay_connections, 20_000);
        assert_eq!(options.replay_variants, [ReplayVariant::LongEntryArgs]);
        assert!(parse(&["--replay", "--replay-only"]).is_err());
        assert!(parse(&["--replay-connections", "10"]).is_err());
        Ok(())
    }

    #[test]
    fn request_workloads() -> Result<(), clap::Error> {
        let options = parse(&[
            "--workload",
            "tcp-request-plain",
            "--workload",
            "tcp-request",
        ])?;
        assert_eq!(
            options.workloads,
            [Workload::TcpRequestPlain, Workload::TcpRequest]
        );
        Ok(())
    }
}
