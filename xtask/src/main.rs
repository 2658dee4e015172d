//! `cargo xtask <cmd>`: developer tasks for egret.
//!
//! Every task that builds something first runs `setup`, which makes sure this
//! machine can build the eBPF programs (nightly + rust-src + a bpf-linker built
//! against the nightly's LLVM).

mod bench;
// The bench's options, declared once in the tests crate (see bench.rs).
#[path = "../../tests/src/bench/options.rs"]
mod bench_options;
mod cmd;
mod debian;
mod fuzz;
mod install;
mod package;
mod run;
mod setup;
mod structure;
mod test;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "egret developer tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make this machine able to build the eBPF programs (nightly, rust-src, bpf-linker).
    Setup,
    /// Build the agent (`cargo build -p egret`), which also builds the eBPF object.
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Build (release by default) and exec `egret run ARGS...` as root.
    Run {
        /// Use the release build (the default).
        #[arg(long, conflicts_with = "debug")]
        release: bool,
        /// Use the debug build instead of the release build.
        #[arg(long)]
        debug: bool,
        /// Arguments passed to `egret run`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// fmt, clippy, build, then `cargo test --workspace` (unit + end-to-end tests).
    Test {
        /// Skip `cargo fmt --check` and `cargo clippy`.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for `cargo test` (e.g. a test-name filter).
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Long fuzz runs, one target at a time: each until RUNS executions (libFuzzer's final
    /// `stat::number_of_executed_units`), from its seeds, into `target/fuzz-corpus/`.
    Fuzz {
        /// Executions per target.
        #[arg(long, default_value_t = 10_000_000)]
        runs: u64,
        /// Targets to run (default: every target of fuzz/Cargo.toml).
        targets: Vec<String>,
    },
    /// Build the release binary; install it, the systemd unit and the default /etc/egret.
    Install(install::InstallOptions),
    /// Build the Debian package target/package/egret_<version>_<arch>.deb (release binary,
    /// units, /etc/egret conffiles, man pages, completions, docs) and check it with lintian.
    Package(package::PackageOptions),
    /// Make (once; cached) the Debian 12 root tests/tests/systemd.rs boots with systemd-nspawn:
    /// target/debootstrap/bookworm. Prints its path.
    DebianRoot,
    /// Measure egret's overhead on loopback TCP connect / UDP send / resolve + connect loops;
    /// `--replay` / `--replay-only`: the userspace pipeline's CPU per connection, no kernel.
    Bench {
        #[command(flatten)]
        options: bench_options::BenchOptions,
        /// Skip setup and the release build; use the binaries already in target/release.
        #[arg(long)]
        no_build: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Setup => setup::setup().map(|_| ()),
        Command::Build { release } => run::build(release),
        Command::Run { debug, args, .. } => run::run(!debug, &args),
        Command::Test { no_lint, args } => test::test(no_lint, &args),
        // The options go to egret-bench as given on the command line.
        Command::Bench { options, no_build } => bench::bench(no_build, options.replay_only),
        Command::Install(options) => install::install(&options),
        Command::Package(options) => package::package(&options),
        Command::DebianRoot => debian::debian_root(),
        Command::Fuzz { runs, targets } => fuzz::long_run(runs, &targets),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("cargo xtask").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    #[test]
    fn test_passes_everything_after_double_dash_to_cargo_test() -> Result<(), clap::Error> {
        let Command::Test { no_lint, args } =
            parse(&["test", "--no-lint", "--", "filter", "--", "--nocapture"])?
        else {
            panic!("not the test command");
        };
        assert!(no_lint);
        assert_eq!(args, ["filter", "--", "--nocapture"]);
        Ok(())
    }

    #[test]
    fn run_defaults_to_release_and_forwards_args() -> Result<(), clap::Error> {
        let Command::Run { debug, args, .. } =
            parse(&["run", "--", "--cgroup", "/sys/fs/cgroup/x"])?
        else {
            panic!("not the run command");
        };
        assert!(!debug);
        assert_eq!(args, ["--cgroup", "/sys/fs/cgroup/x"]);
        assert!(parse(&["run", "--release", "--debug"]).is_err());
        Ok(())
    }

    #[test]
    fn bench_options_are_checked_and_no_build_is_xtasks() -> Result<(), clap::Error> {
        assert!(parse(&["bench", "--rounds", "0"]).is_err());
        assert!(parse(&["bench", "--workload", "dns_block"]).is_err());
        let Command::Bench { options, no_build } =
            parse(&["bench", "--rounds", "2", "--no-build", "--workload", "tcp"])?
        else {
            panic!("not the bench command");
        };
        assert!(no_build);
        assert_eq!(options.rounds, 2);
        assert_eq!(options.workloads, [bench_options::Workload::Tcp]);
        let Command::Bench { options, .. } = parse(&["bench", "--replay-only"])? else {
            panic!("not the bench command");
        };
        assert!(options.replay_only);
        Ok(())
    }
}
