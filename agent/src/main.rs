//! The `egret` command line.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use egret::config::RunConfig;

/// egret: every outbound connection of this host, as one JSON line each, with the process,
/// user, cgroup and systemd unit that made it.
#[derive(Debug, Parser)]
#[command(name = "egret", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the hash chain (`egret.chain`) of output files: exit 0 and a summary when
    /// intact, else exit 1 and the first broken, removed, inserted or reordered line as
    /// `FILE:LINE: WHAT`. Rotated sets are checked in rotation order whatever the argument
    /// order (docs/output.md).
    Verify {
        /// Output files, e.g. `/var/log/egret/events.jsonl*`.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Attach the kernel programs and write one JSON line per outbound connection until
    /// SIGINT/SIGTERM. Needs uid 0 with CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN (+ CAP_SYS_PTRACE).
    Run(Box<RunConfig>),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Work with `egret run --config` files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Exit 0 when FILE, the `--ready-file` of an `egret run`, exists and names a running
    /// process; else exit 1. A readiness probe for images without a shell (docs/deploy.md).
    Ready {
        /// The `--ready-file` path.
        file: PathBuf,
    },
    /// Summarise egret's JSON lines (top destinations per process, unit, container and pod;
    /// text, JSON or HTML), or suggest a policy approving what they show (docs/report.md).
    Report(Box<egret::report::ReportArgs>),
    /// A live full-screen view of a running egret, following its output file: destinations
    /// per process, unit, container or pod, sortable and filtered (docs/top.md).
    Top(egret::top::TopArgs),
    /// The learned baseline of `egret run --baseline-learn`: show it, export it as a policy,
    /// or forget a workload so it learns again (docs/baseline.md).
    Baseline(egret::baseline::command::BaselineArgs),
    /// Write the man pages (egret.1, egret-run.1...) and the bash, zsh and fish completions
    /// into DIR, generated from this command line (`cargo xtask package` ships them).
    #[command(hide = true)]
    Generate {
        /// Where to write: DIR/man1/*.1 and DIR/completions/{egret.bash,_egret,egret.fish}.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a config file as `egret run --config FILE` would read it: exit 0 and a one-line
    /// summary, or exit 1 and every error as `FILE:LINE:COLUMN: KEY: MESSAGE`.
    Check {
        /// The config file (YAML; see docs/config.md).
        path: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Check a policy file: exit 0 and a one-line summary, or exit 1 and every error as
    /// `FILE:LINE:COLUMN: PATH: MESSAGE`.
    Check {
        /// The policy file (YAML; see docs/policy.md).
        path: PathBuf,
    },
}

fn init_logging(level: log::LevelFilter) {
    env_logger::Builder::new()
        .filter_level(level)
        .target(env_logger::Target::Stderr)
        .format_timestamp_micros()
        .init();
}

/// Installs the SIGINT and SIGTERM handlers now, and returns a future that completes on the
/// first of them. Installing eagerly matters: the ready file is written before the event
/// loop first polls this future, and a SIGTERM in between must not kill egret unflushed.
/// Must be called inside the runtime.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(int), Ok(term)) => Some((int, term)),
        (Err(err), _) | (_, Err(err)) => {
            log::error!("cannot install signal handlers ({err}); stop egret with SIGKILL");
            None
        }
    };
    async move {
        let Some((mut int, mut term)) = handlers else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => log::info!("SIGINT: detaching and flushing"),
            _ = term.recv() => log::info!("SIGTERM: detaching and flushing"),
        }
    }
}

/// `egret verify`: the report on stdout when intact (exit 0), on stderr when broken (exit
/// 1); exit 2 when a file cannot be read.
fn verify(files: &[PathBuf]) -> std::process::ExitCode {
    match egret::output::verify::verify(files) {
        Ok(report) if report.intact() => {
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Ok(report) => {
            eprintln!("{report}");
            std::process::ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("egret verify: {err}");
            std::process::ExitCode::from(2)
        }
    }
}

/// `egret policy check`: the parser's summary, after the same compilation `egret run` does.
fn policy_check(path: &std::path::Path) -> std::process::ExitCode {
    let result = egret::policy::parse::check(path).and_then(|summary| {
        egret::agent::load_policy(Some(path)).map(|(policy, _)| (summary, policy))
    });
    match result {
        Ok((summary, policy)) => {
            println!("{summary}");
            for note in egret::policy::parse::notes(&policy) {
                println!("note: {note}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(errors) => {
            for error in &errors.errors {
                eprintln!("{error}");
            }
            eprintln!("{}: {} error(s)", errors.file, errors.errors.len());
            std::process::ExitCode::FAILURE
        }
    }
}

/// Flags a config file may not set.
const NOT_IN_CONFIG: &[&str] = &["config"];

/// `egret run`'s command, as clap knows it.
fn run_command() -> anyhow::Result<clap::Command> {
    use clap::CommandFactory as _;
    Cli::command()
        .find_subcommand("run")
        .cloned()
        .context("the `run` subcommand is missing")
}

/// `egret run`'s arguments with a config file read in: its settings, then `command_line`
/// (the arguments after `run`), which win. Also returns the file, to locate later errors.
fn with_config_file(
    path: &std::path::Path,
    command_line: &[std::ffi::OsString],
) -> anyhow::Result<(Box<RunConfig>, egret::config_file::ConfigFile)> {
    let command = run_command()?;
    let given = command
        .clone()
        .try_get_matches_from(std::iter::once("egret run".into()).chain(command_line.to_vec()))?;
    let file = egret::config_file::ConfigFile::load(path, &command, NOT_IN_CONFIG)?;
    let config = RunConfig::from_config_file(&file, &command, &given, command_line)?;
    Ok((Box::new(config), file))
}

/// `egret config check`: what `egret run --config FILE` (with no other flag) would use.
fn config_check(path: &std::path::Path) -> std::process::ExitCode {
    match with_config_file(path, &[]) {
        Ok((_, file)) => {
            let keys: Vec<&str> = file.keys().collect();
            println!(
                "{}: ok: {} setting(s){}",
                path.display(),
                keys.len(),
                if keys.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", keys.join(", "))
                }
            );
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            match err.downcast_ref::<egret::config_file::ConfigErrors>() {
                Some(errors) => {
                    for error in &errors.errors {
                        eprintln!("{error}");
                    }
                    eprintln!("{}: {} error(s)", errors.file, errors.errors.len());
                }
                None => eprintln!("{}: {err:#}", path.display()),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// `egret ready FILE`: the ready file exists and holds the pid of a live process (seen in this
/// pid namespace, so the probe must share egret's).
fn ready_check(file: &std::path::Path) -> std::process::ExitCode {
    let pid = std::fs::read_to_string(file)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok());
    match pid {
        Some(pid) if std::path::Path::new(&format!("/proc/{pid}")).exists() => {
            std::process::ExitCode::SUCCESS
        }
        Some(pid) => {
            eprintln!("{}: egret (pid {pid}) is not running", file.display());
            std::process::ExitCode::FAILURE
        }
        None => {
            eprintln!("{}: not ready (no ready file with a pid)", file.display());
            std::process::ExitCode::FAILURE
        }
    }
}

/// `egret generate DIR`: man pages (one per command, as `egret-run.1`) and completions.
fn generate(dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory as _;
    use clap_complete::Shell;
    let man = dir.join("man1");
    let completions = dir.join("completions");
    for sub in [&man, &completions] {
        std::fs::create_dir_all(sub).with_context(|| format!("creating {}", sub.display()))?;
    }
    // One page per real command: not for clap's `help` subcommands.
    fn without_help(command: clap::Command) -> clap::Command {
        command
            .disable_help_subcommand(true)
            .mut_subcommands(without_help)
    }
    clap_mangen::generate_to(without_help(Cli::command()), &man)
        .with_context(|| format!("writing man pages to {}", man.display()))?;
    let mut command = Cli::command();
    for (shell, name) in [
        (Shell::Bash, "egret.bash"),
        (Shell::Zsh, "_egret"),
        (Shell::Fish, "egret.fish"),
    ] {
        let path = completions.join(name);
        let mut file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        clap_complete::generate(shell, &mut command, "egret", &mut file);
    }
    Ok(())
}

/// An error in egret's configuration or environment: said once, and the exit status systemd
/// does not restart in a loop ([`egret::agent::EXIT_CONFIG`]).
fn config_error(err: impl std::fmt::Display) -> std::process::ExitCode {
    eprintln!("Error: {err}");
    std::process::ExitCode::from(egret::agent::EXIT_CONFIG)
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Policy(PolicyCommand::Check { path }) => Ok(policy_check(&path)),
        Command::Config(ConfigCommand::Check { path }) => Ok(config_check(&path)),
        Command::Ready { file } => Ok(ready_check(&file)),
        Command::Report(args) => Ok(egret::report::command(&args)?),
        Command::Top(args) => match egret::top::command(&args) {
            Ok(()) => Ok(std::process::ExitCode::SUCCESS),
            // Said once the terminal is restored.
            Err(err) => {
                eprintln!("egret top: {err}");
                Ok(std::process::ExitCode::FAILURE)
            }
        },
        Command::Baseline(args) => Ok(egret::baseline::command::command(&args)?),
        Command::Generate { dir } => {
            generate(&dir)?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Run(config) => {
            let config = match &config.config_file {
                Some(path) => {
                    let command_line: Vec<std::ffi::OsString> = std::env::args_os()
                        .skip(1)
                        .skip_while(|arg| arg != "run")
                        .skip(1)
                        .collect();
                    match with_config_file(path, &command_line) {
                        Ok((config, _)) => config,
                        // A config file egret cannot use: not restarted in a loop either.
                        Err(err) => return Ok(config_error(format_args!("{err:#}"))),
                    }
                }
                None => {
                    if let Err(err) = config.validate() {
                        return Ok(config_error(err));
                    }
                    config
                }
            };
            init_logging(config.log_level);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let metrics =
                match runtime.block_on(async { egret::run(&config, shutdown_signal()).await }) {
                    Ok(metrics) => metrics,
                    // Not restarted in a loop (the systemd unit's RestartPreventExitStatus).
                    Err(err) if err.is_config() => return Ok(config_error(err)),
                    Err(err) => return Err(err.into()),
                };
            log::info!(
                "stopped: {} events received, {} lost in the kernel, {} dropped in userspace",
                metrics.events_received,
                metrics.events_lost_kernel,
                metrics.events_dropped_userspace
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Verify { files } => Ok(verify(&files)),
    }
}
