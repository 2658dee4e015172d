//! `egret baseline show|export|forget`: the learned baseline, read from (and, for `forget`,
//! written to) the state file of `egret run --baseline-learn`.

use std::{fmt::Write as _, net::IpAddr, path::PathBuf, process::ExitCode};

use super::{
    store::{self, StoreError},
    State, Workload, WorkloadKind,
};
use crate::{
    config::DEFAULT_STATE_DIR,
    report::{
        input::Observation,
        platform::PlatformSuggester,
        suggest::{LoopbackChoice, Suggester},
        PolicyFormat,
    },
};

#[derive(Debug, clap::Args)]
pub struct BaselineArgs {
    #[command(subcommand)]
    pub command: BaselineCommand,
    /// The directory `egret run --state-dir` keeps its state in.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR, global = true)]
    pub state_dir: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
pub enum BaselineCommand {
    /// Every workload (or one) with the destinations it was seen reaching, those first seen
    /// after learning marked `new`.
    Show {
        /// `KIND:NAME` (`unit:nginx.service`) or a NAME only one workload has.
        workload: Option<String>,
    },
    /// The baseline as a policy approving what was learned (the `--suggest-policy` format,
    /// docs/policy.md), to review and run in audit mode.
    Export {
        /// Only this workload.
        workload: Option<String>,
        /// Also approve destinations first seen after learning (they raised a
        /// `new-destination` alert).
        #[arg(long)]
        include_new: bool,
        /// The policy format.
        #[arg(long, value_enum, default_value = "egret")]
        format: ExportFormat,
        /// `auto`/`approve`: `loopback: approve` covers loopback destinations (not listed);
        /// `audit`: they get rules like any other.
        #[arg(long, value_enum, default_value = "auto")]
        loopback: LoopbackChoice,
    },
    /// Forget a workload: it learns again for the learning period, from now. A running egret
    /// reads the file again before its next write.
    Forget {
        /// `KIND:NAME` or a NAME only one workload has.
        workload: String,
    },
}

/// The formats `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// egret's own policy file (docs/policy.md).
    Egret,
    /// A systemd `IPAddressAllow=`/`IPAddressDeny=` drop-in per unit workload, as `egret report
    /// --suggest-policy --policy-format systemd` writes (addresses only: destinations known
    /// by name only are left out, and said so).
    Systemd,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Workload(String),
    #[error(
        "the exported policy does not pass egret's policy parser (a bug, please report it):\n{0}"
    )]
    Policy(String),
}

/// Runs `egret baseline`; what it prints goes to stdout.
///
/// # Errors
/// The state file cannot be read (or written, for `forget`), or the workload is unknown.
pub fn command(args: &BaselineArgs) -> Result<ExitCode, CommandError> {
    let state = store::read_for_command(&args.state_dir)?;
    let path = store::state_path(&args.state_dir);
    match &args.command {
        BaselineCommand::Show { workload } => {
            let only = workload.as_deref().map(|w| state.find(w)).transpose();
            let only = only.map_err(CommandError::Workload)?;
            print!(
                "{}",
                show(&state, only.as_ref(), &path.display().to_string())
            );
        }
        BaselineCommand::Export {
            workload,
            include_new,
            format,
            loopback,
        } => {
            let only = workload.as_deref().map(|w| state.find(w)).transpose();
            let only = only.map_err(CommandError::Workload)?;
            let source = path.display().to_string();
            print!(
                "{}",
                export(
                    &state,
                    only.as_ref(),
                    Export {
                        include_new: *include_new,
                        format: *format,
                        loopback: *loopback,
                    },
                    &source
                )?
            );
        }
        BaselineCommand::Forget { workload } => {
            let mut state = state;
            let workload = state.find(workload).map_err(CommandError::Workload)?;
            let known = state
                .workloads
                .get(&workload)
                .map_or(0, |w| w.destinations.len());
            let now = now_secs();
            state.forget(&workload, now);
            store::write(&args.state_dir, &store::encode(&state))?;
            println!(
                "forgot {workload} ({known} destinations); it learns again for {}s from now",
                state.learn_secs
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A name from the state (a unit, an image, a pod: chosen by whoever runs the workload) as
/// terminal-safe text: control characters escaped.
fn safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

fn time(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(
            || secs.to_string(),
            |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
}

/// `show`'s text.
pub fn show(state: &State, only: Option<&Workload>, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "baseline {source}: learning from {} to {}; {} workloads, {} destinations",
        time(state.learning_started),
        time(state.learning_ends()),
        state.workloads.len(),
        state.destinations()
    );
    let mut workloads: Vec<_> = state
        .workloads
        .iter()
        .filter(|(w, _)| only.is_none_or(|o| o == *w))
        .collect();
    workloads.sort_by(|a, b| a.0.cmp(b.0));
    for (workload, b) in workloads {
        let relearn = b
            .learn_until
            .map(|u| format!(", learning again until {}", time(u)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "\n{}: {} destinations, seen {} to {}{relearn}",
            safe(&workload.to_string()),
            b.destinations.len(),
            time(b.first_seen),
            time(b.last_seen)
        );
        let mut dests: Vec<_> = b.destinations.iter().collect();
        dests.sort_by(|a, b| a.0.cmp(b.0));
        for (d, seen) in dests {
            let _ = writeln!(
                out,
                "  {}  {} connections, {} to {}{}",
                safe(&d.to_string()),
                seen.connections,
                time(seen.first_seen),
                time(seen.last_seen),
                if seen.new { "  [new]" } else { "" }
            );
        }
    }
    out
}

/// How `export` writes the policy.
#[derive(Debug, Clone, Copy)]
pub struct Export {
    /// Also destinations first seen after learning.
    pub include_new: bool,
    pub format: ExportFormat,
    pub loopback: LoopbackChoice,
}

/// `export`'s policy: each destination as a connection line would show it, to the same
/// suggester as `egret report --suggest-policy`, rendered in `format`.
///
/// # Errors
/// The rendered policy does not parse (a bug).
pub fn export(
    state: &State,
    only: Option<&Workload>,
    how: Export,
    source: &str,
) -> Result<String, CommandError> {
    let Export {
        include_new,
        format,
        loopback,
    } = how;
    let mut suggester = Suggester::new(loopback, false);
    let mut platform = PlatformSuggester::new(false);
    let mut named_only = 0_u64;
    for (workload, b) in &state.workloads {
        if only.is_some_and(|o| o != workload) {
            continue;
        }
        for (d, seen) in &b.destinations {
            if seen.new && !include_new {
                continue;
            }
            let ip = d.ip();
            let observation = Observation {
                ts_ns: i64::try_from(seen.last_seen)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1_000_000_000),
                ip: ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
                port: d.port,
                transport: d.transport.as_str().into(),
                domain: ip.is_none().then(|| d.host.as_str().into()),
                ..scoped(workload)
            };
            match format {
                ExportFormat::Egret => suggester.observe(&observation),
                ExportFormat::Systemd if ip.is_some() => platform.observe(&observation),
                ExportFormat::Systemd => named_only += 1,
            }
        }
    }
    match format {
        ExportFormat::Egret => suggester
            .render(&[source.to_owned()])
            .map(|s| s.yaml)
            .map_err(CommandError::Policy),
        ExportFormat::Systemd => {
            let mut out = platform.render_stream(PolicyFormat::Systemd, &[source.to_owned()]);
            if named_only > 0 {
                out.insert_str(
                    0,
                    &format!(
                        "# {named_only} destination(s) known by name only left out: systemd's IP filter takes addresses.\n"
                    ),
                );
            }
            Ok(out)
        }
    }
}

/// An observation with only the workload's scope filled: its unit, its pod's namespace, or
/// its image (an executable scopes nothing: block mode cannot enforce `processes`).
fn scoped(workload: &Workload) -> Observation<'_> {
    let mut o = Observation {
        ts_ns: 0,
        ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        port: 0,
        transport: "".into(),
        domain: None,
        name_source: None,
        executable: None,
        process_name: None,
        unit: None,
        container_id: None,
        container_name: None,
        container_image: None,
        pod_namespace: None,
        pod_name: None,
        pod_uid: None,
        verdict: None,
        rule: None,
        datagrams: None,
        new: true,
        host: None,
        sequence: None,
        connection_id: None,
        http: None,
        workload: None,
    };
    let name = workload.name.as_str();
    match workload.kind {
        WorkloadKind::Unit => o.unit = Some(name.into()),
        WorkloadKind::Kubernetes | WorkloadKind::Pod => {
            o.pod_namespace = name.split('/').next().map(Into::into);
        }
        WorkloadKind::Image => o.container_image = Some(name.into()),
        WorkloadKind::Executable => o.executable = Some(name.into()),
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{Baseline, Bounds, Destination};

    fn state() -> State {
        let mut b = Baseline::new(
            State::new(0, 100),
            Bounds {
                max_workloads: 10,
                max_destinations: 10,
            },
        );
        let unit = Workload {
            kind: WorkloadKind::Unit,
            name: "app.service".into(),
        };
        let image = Workload {
            kind: WorkloadKind::Image,
            name: "nginx:1.25".into(),
        };
        let d = |host: &str, port| Destination {
            host: host.into(),
            port,
            transport: "tcp".into(),
        };
        b.observe(&unit, &d("api.example.com", 443), 10);
        b.observe(&unit, &d("10.0.0.7", 5432), 10);
        b.observe(&image, &d("10.0.0.8", 80), 10);
        b.observe(&unit, &d("evil.example", 443), 200);
        b.state
    }

    #[test]
    fn export_is_a_valid_policy_of_what_was_learned() {
        let s = state();
        let how = |include_new| Export {
            include_new,
            format: ExportFormat::Egret,
            loopback: LoopbackChoice::Auto,
        };
        let yaml = export(&s, None, how(false), "x").unwrap();
        crate::policy::parse::parse_policy(&yaml, "export").unwrap();
        assert!(yaml.contains("api.example.com"), "{yaml}");
        assert!(yaml.contains("10.0.0.7"), "{yaml}");
        assert!(yaml.contains("app.service"), "{yaml}");
        assert!(yaml.contains("nginx:1.25"), "{yaml}");
        assert!(
            !yaml.contains("evil.example"),
            "new ones only on request: {yaml}"
        );
        let with_new = export(&s, None, how(true), "x").unwrap();
        assert!(with_new.contains("evil.example"));
        let unit = s.find("app.service").unwrap();
        let one = export(&s, Some(&unit), how(false), "x").unwrap();
        assert!(!one.contains("10.0.0.8"), "{one}");
    }

    #[test]
    fn export_as_systemd_drop_ins_names_the_unit_and_its_addresses() {
        let s = state();
        let how = Export {
            include_new: false,
            format: ExportFormat::Systemd,
            loopback: LoopbackChoice::Auto,
        };
        let text = export(&s, None, how, "x").unwrap();
        assert!(
            text.contains("app.service.d/50-egret-egress.conf"),
            "{text}"
        );
        assert!(text.contains("IPAddressAllow=10.0.0.7"), "{text}");
        assert!(text.contains("IPAddressDeny=any"), "{text}");
        assert!(text.contains("known by name only left out"), "{text}");
        assert!(!text.contains("0.0.0.0"), "{text}");
        assert!(!text.contains("nginx"), "an image is no unit: {text}");
    }

    #[test]
    fn show_lists_and_marks_new() {
        let s = state();
        let text = show(&s, None, "f");
        assert!(text.contains("unit:app.service: 3 destinations"), "{text}");
        assert!(
            text.contains("evil.example:443/tcp  1 connections"),
            "{text}"
        );
        assert!(text.contains("[new]"), "{text}");
        assert!(text.contains("image:nginx:1.25"), "{text}");
        let mut hostile = s.clone();
        let entry = hostile.workloads.values().next().unwrap().clone();
        hostile.workloads.insert(
            Workload {
                kind: WorkloadKind::Image,
                name: "evil\u{1b}]0;pwned\u{7}".into(),
            },
            entry,
        );
        let text = show(&hostile, None, "f");
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains("evil\\u{1b}]0;pwned\\u{7}"), "{text}");
    }
}
