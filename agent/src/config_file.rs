//! `egret run --config FILE`: the flags of a command, read from a YAML mapping.
//!
//! The file's keys are the command's long flag names (`ring-buffer-size: 16777216`). Nothing
//! here knows egret's flags: the keys, and whether each is a switch, takes one value or can be
//! repeated, come from the [`clap::Command`] itself, so a flag added to `egret run` can be set
//! in the file at once. Each key becomes flag tokens (`--ring-buffer-size=16777216`) that
//! remember where the key is; clap then parses them, followed by the real command line, with
//! its usual validation. Flags given on the command line (or by environment) win: the file's
//! tokens for them are left out. Every error is reported at once, located as
//! `FILE:LINE:COLUMN: KEY: MESSAGE`: YAML shape and types while reading, and clap's own
//! errors mapped back to the key they came from (the offending key is set aside and clap runs
//! again, until it accepts the rest).
//!
//! The format is documented in `docs/config.md`.

use std::{ffi::OsString, path::Path};

use clap::{parser::ValueSource, ArgAction, ArgMatches, Command};
use saphyr::{MarkedYaml, Scalar, YamlData};

use crate::yaml::{describe, load, position, read_bounded, single_document, untag, Position};

/// Config files larger than this are refused (a mistaken path such as `/dev/zero`).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{}:{}: {key}: {message}", position.line, position.column)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; `0:0` when the problem is the file itself (cannot be read).
    pub position: Position,
    /// The key (`ring-buffer-size`), or `(document)`, `(syntax)`, `(file)`.
    pub key: String,
    /// What was expected and what was found.
    pub message: String,
}

/// Every error found in a config file, in document order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} error(s) in config {file}:\n{}", errors.len(), errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors {
    pub file: String,
    pub errors: Vec<ConfigError>,
}

/// How a flag takes its value, as clap says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `--watch`: `true` gives the flag, `false` leaves it out.
    Switch,
    /// `--verbose --verbose`: a count.
    Count,
    /// One value (`max` > 1: several, as a list, after one flag).
    Value { max: usize },
    /// Repeatable: one value or a list, each after its own flag.
    Repeated,
}

/// A flag the file may set.
#[derive(Debug, Clone)]
struct Flag {
    /// clap's id (for [`ArgMatches::value_source`]).
    id: String,
    /// The long name: the key.
    long: String,
    /// Other accepted keys (visible aliases).
    aliases: Vec<String>,
    shape: Shape,
    /// `<BYTES>`, for messages.
    value_name: String,
    /// Whether `true`/`false` are among its values (a boolean YAML value is then a value).
    takes_bool: bool,
}

/// The flags of `cmd` that a config file may set: every long flag except help and version,
/// and except `excluded` (by long name).
fn flags(cmd: &Command, excluded: &[&str]) -> Vec<Flag> {
    cmd.get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            if excluded.contains(&long) {
                return None;
            }
            let max = arg.get_num_args().map_or(1, |r| r.max_values());
            let shape = match arg.get_action() {
                ArgAction::SetTrue | ArgAction::SetFalse => Shape::Switch,
                ArgAction::Count => Shape::Count,
                ArgAction::Append => Shape::Repeated,
                ArgAction::Set => Shape::Value { max },
                // Help, version, and actions clap may add: not settings.
                _ => return None,
            };
            let value_name = arg
                .get_value_names()
                .map(|names| {
                    names
                        .iter()
                        .map(|n| format!("<{n}>"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let takes_bool = arg
                .get_possible_values()
                .iter()
                .any(|v| v.matches("true", false));
            Some(Flag {
                id: arg.get_id().as_str().to_owned(),
                long: long.to_owned(),
                aliases: arg
                    .get_long_and_visible_aliases()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|a| *a != long)
                    .map(str::to_owned)
                    .collect(),
                shape,
                value_name,
                takes_bool,
            })
        })
        .collect()
}

/// The long names a config file may set for `cmd` (what `docs/config.md` must show).
pub fn keys(cmd: &Command, excluded: &[&str]) -> Vec<String> {
    flags(cmd, excluded).into_iter().map(|f| f.long).collect()
}

/// One key of the file: where it is and the flag tokens it stands for.
#[derive(Debug, Clone)]
struct Setting {
    key: String,
    /// The flag's clap id.
    id: String,
    key_position: Position,
    value_position: Position,
    tokens: Vec<OsString>,
}

/// A config file read and checked against a command's flags; [`ConfigFile::merge`] puts it
/// together with the command line.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    file: String,
    settings: Vec<Setting>,
    /// Keys that are unknown or whose value has the wrong shape: reported by
    /// [`ConfigFile::merge`], with clap's errors about the other keys.
    errors: Vec<ConfigError>,
}

impl ConfigFile {
    /// Reads and checks the config file at `path` (named in errors as given) against the
    /// flags of `cmd`; `excluded` are long flags a file may not set (`config` itself).
    ///
    /// # Errors
    /// A read error (one error at `0:0`), or every problem [`ConfigFile::parse`] finds.
    pub fn load(path: &Path, cmd: &Command, excluded: &[&str]) -> Result<Self, ConfigErrors> {
        let file = path.display().to_string();
        let text = read_config_file(path, &file)?;
        Self::parse(&text, &file, cmd, excluded)
    }

    /// Checks `text` against the flags of `cmd`: YAML syntax (reported alone), a mapping at
    /// the top, known keys, each set once, values of the right shape (switches `true` or
    /// `false`, counts numbers, one value or a list where the flag repeats). Keys with such
    /// problems are kept aside and reported by [`ConfigFile::merge`], together with what
    /// clap finds wrong in the values of the others.
    ///
    /// # Errors
    /// The file as a whole is wrong: YAML syntax, not a mapping, several documents.
    pub fn parse(
        text: &str,
        file: &str,
        cmd: &Command,
        excluded: &[&str],
    ) -> Result<Self, ConfigErrors> {
        let mut cx = Cx {
            file,
            flags: flags(cmd, excluded),
            excluded,
            errors: Vec::new(),
            settings: Vec::new(),
            fatal: false,
        };
        match load(text) {
            Ok(docs) => cx.document(&docs),
            Err((position, message)) => {
                cx.fatal = true;
                cx.error(position, "(syntax)", message);
            }
        }
        if cx.fatal {
            Err(errors(file, cx.errors))
        } else {
            Ok(Self {
                file: file.to_owned(),
                settings: cx.settings,
                errors: cx.errors,
            })
        }
    }

    /// The file's name, as given.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The keys the file sets, in document order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.settings.iter().map(|s| s.key.as_str())
    }

    /// Parses `command_line` (the arguments after the subcommand's name, already accepted by
    /// clap as `given`) with the file's settings before them, and returns clap's matches for
    /// the whole. A flag the command line (or its environment variable) gives keeps that
    /// value: the file's setting is left out. `bin` names the command in clap's messages.
    ///
    /// # Errors
    /// Every key [`ConfigFile::parse`] kept aside, and every setting clap refuses, located at
    /// its key; an error clap gives that no setting explains (say, a conflict between two
    /// command-line flags) ends clap's part of the list.
    pub fn merge(
        &self,
        cmd: &Command,
        bin: &str,
        given: &ArgMatches,
        command_line: &[OsString],
    ) -> Result<ArgMatches, ConfigErrors> {
        let mut active: Vec<&Setting> = self
            .settings
            .iter()
            .filter(|s| {
                !matches!(
                    given
                        .try_get_raw(&s.id)
                        .ok()
                        .and_then(|_| given.value_source(&s.id)),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                )
            })
            .collect();
        let flags = flags(cmd, &[]);
        let mut found = self.errors.clone();
        loop {
            let argv = std::iter::once(OsString::from(bin))
                .chain(active.iter().flat_map(|s| s.tokens.iter().cloned()))
                .chain(command_line.iter().cloned());
            let err = match cmd.clone().try_get_matches_from(argv) {
                Ok(matches) if found.is_empty() => return Ok(matches),
                Ok(_) => break,
                Err(err) => err,
            };
            // The setting clap names; of two (a conflict), the later one in the file.
            let culprit = [
                clap::error::ContextKind::InvalidArg,
                clap::error::ContextKind::PriorArg,
            ]
            .into_iter()
            .filter_map(|kind| context_string(&err, kind))
            .filter_map(|arg| flag_named(&flags, arg))
            .filter_map(|flag| active.iter().position(|s| s.id == flag.id))
            .max_by_key(|&index| active.get(index).map(|s| s.key_position.line));
            match culprit {
                Some(index) => {
                    let setting = active.remove(index);
                    found.push(self.clap_error(setting, &err, &flags));
                }
                None => {
                    found.push(ConfigError {
                        file: self.file.clone(),
                        position: Position::default(),
                        key: "(command line)".to_owned(),
                        message: first_line(&err),
                    });
                    break;
                }
            }
        }
        Err(errors(&self.file, found))
    }

    /// An error about the merged settings (a check across flags, such as "--dns-ttl-floor
    /// must not exceed --dns-ttl-ceiling"), located at the first key of this file that the
    /// message names as a flag; at `0:0` when it names none.
    pub fn locate(&self, message: &str) -> ConfigError {
        let named = message
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .filter_map(|word| word.strip_prefix("--"))
            .find_map(|long| self.settings.iter().find(|s| s.key == long));
        match named {
            Some(setting) => ConfigError {
                file: self.file.clone(),
                position: setting.value_position,
                key: setting.key.clone(),
                message: message.to_owned(),
            },
            None => ConfigError {
                file: self.file.clone(),
                position: Position::default(),
                key: "(settings)".to_owned(),
                message: message.to_owned(),
            },
        }
    }

    fn clap_error(&self, setting: &Setting, err: &clap::Error, flags: &[Flag]) -> ConfigError {
        use clap::error::{ContextKind, ContextValue, ErrorKind};
        let value = context_string(err, ContextKind::InvalidValue);
        let message = match (err.kind(), value) {
            (ErrorKind::ValueValidation, Some(value)) => match std::error::Error::source(err) {
                Some(cause) => format!("invalid value `{value}`: {cause}"),
                None => format!("invalid value `{value}`"),
            },
            (ErrorKind::InvalidValue, Some(value)) => {
                let valid = match err.get(ContextKind::ValidValue) {
                    Some(ContextValue::Strings(valid)) => valid.join(", "),
                    _ => String::new(),
                };
                if value.is_empty() {
                    format!("expected a value, one of: {valid}")
                } else {
                    format!("invalid value `{value}`; expected one of: {valid}")
                }
            }
            (ErrorKind::ArgumentConflict, _) => {
                let other = [ContextKind::PriorArg, ContextKind::InvalidArg]
                    .into_iter()
                    .filter_map(|kind| context_string(err, kind))
                    .filter_map(|arg| flag_named(flags, arg))
                    .find(|f| f.id != setting.id);
                match other {
                    Some(other) if self.settings.iter().any(|s| s.id == other.id) => {
                        format!("cannot be used with `{}`", other.long)
                    }
                    Some(other) => format!("cannot be used with `--{}`", other.long),
                    None => first_line(err),
                }
            }
            _ => first_line(err),
        };
        let position = match err.kind() {
            ErrorKind::ValueValidation | ErrorKind::InvalidValue => setting.value_position,
            _ => setting.key_position,
        };
        ConfigError {
            file: self.file.clone(),
            position,
            key: setting.key.clone(),
            message,
        }
    }
}

/// The string in one of clap's error contexts.
fn context_string(err: &clap::Error, kind: clap::error::ContextKind) -> Option<&str> {
    match err.get(kind)? {
        clap::error::ContextValue::String(s) => Some(s),
        _ => None,
    }
}

/// The flag clap shows as `--ring-buffer-size <BYTES>` (or `--watch`).
fn flag_named<'f>(flags: &'f [Flag], shown: &str) -> Option<&'f Flag> {
    let long = shown
        .strip_prefix("--")?
        .split([' ', '=', '<', '.'])
        .next()?;
    flags
        .iter()
        .find(|f| f.long == long || f.aliases.iter().any(|a| a == long))
}

/// clap's message without `error: ` and the usage that follows it.
fn first_line(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

fn errors(file: &str, mut errors: Vec<ConfigError>) -> ConfigErrors {
    // Stable: errors at the same place keep the order they were found in.
    errors.sort_by_key(|e| e.position);
    ConfigErrors {
        file: file.to_owned(),
        errors,
    }
}

fn read_config_file(path: &Path, file: &str) -> Result<String, ConfigErrors> {
    read_bounded(path, MAX_CONFIG_BYTES, "config").map_err(|message| ConfigErrors {
        file: file.to_owned(),
        errors: vec![ConfigError {
            file: file.to_owned(),
            position: Position::default(),
            key: "(file)".to_owned(),
            message,
        }],
    })
}

/// A scalar as the text of a command-line value; `None` for null, lists and mappings.
/// Booleans only when `bool_ok`.
fn scalar_text(node: &MarkedYaml<'_>, bool_ok: bool) -> Option<String> {
    match &untag(node).data {
        YamlData::Value(Scalar::String(s)) | YamlData::Representation(s, _, _) => {
            Some(s.to_string())
        }
        YamlData::Value(Scalar::Integer(i)) => Some(i.to_string()),
        YamlData::Value(Scalar::FloatingPoint(f)) => Some(f.to_string()),
        YamlData::Value(Scalar::Boolean(b)) if bool_ok => Some(b.to_string()),
        _ => None,
    }
}

/// Edit distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row.first().copied().unwrap_or_default();
        if let Some(first) = row.first_mut() {
            *first = i.saturating_add(1);
        }
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j.saturating_add(1)).copied().unwrap_or_default();
            let left = row.get(j).copied().unwrap_or_default();
            let cost = usize::from(ca != *cb);
            let best = diagonal
                .saturating_add(cost)
                .min(above.saturating_add(1))
                .min(left.saturating_add(1));
            diagonal = above;
            if let Some(cell) = row.get_mut(j.saturating_add(1)) {
                *cell = best;
            }
        }
    }
    row.last().copied().unwrap_or_default()
}

/// The walk's state.
struct Cx<'f> {
    file: &'f str,
    flags: Vec<Flag>,
    excluded: &'f [&'f str],
    errors: Vec<ConfigError>,
    settings: Vec<Setting>,
    /// The document as a whole is wrong: no setting can be trusted.
    fatal: bool,
}

impl Cx<'_> {
    fn error(&mut self, position: Position, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            position,
            key: key.into(),
            message: message.into(),
        });
    }

    fn document(&mut self, docs: &[MarkedYaml<'_>]) {
        let root = match single_document(docs) {
            Ok(Some(root)) => root,
            // An empty file sets nothing.
            Ok(None) => return,
            Err((position, message)) => {
                self.fatal = true;
                self.error(position, "(document)", message);
                return;
            }
        };
        let map = match &untag(root).data {
            YamlData::Mapping(map) => map,
            YamlData::Value(Scalar::Null) => return,
            _ => {
                self.fatal = true;
                self.error(
                    position(root),
                    "(document)",
                    format!(
                        "expected a mapping of flag names to values (`output: /var/log/egret.jsonl`), found {}",
                        describe(root)
                    ),
                );
                return;
            }
        };
        for (key, value) in map {
            let Some(name) = scalar_text(key, false) else {
                self.error(
                    position(key),
                    "(document)",
                    format!("expected a flag name as key, found {}", describe(key)),
                );
                continue;
            };
            self.setting(&name, position(key), value);
        }
    }

    fn setting(&mut self, key: &str, key_position: Position, value: &MarkedYaml<'_>) {
        if self.excluded.contains(&key) {
            self.error(
                key_position,
                key,
                format!("`{key}` cannot be set in a config file"),
            );
            return;
        }
        let Some(flag) = self
            .flags
            .iter()
            .find(|f| f.long == key || f.aliases.iter().any(|a| a == key))
            .cloned()
        else {
            let message = match self.suggestion(key) {
                Some(near) => format!("unknown key `{key}`; did you mean `{near}`?"),
                None => format!(
                    "unknown key `{key}`; keys are the long flags of `egret run` without `--` \
                     (see `egret run --help`)"
                ),
            };
            self.error(key_position, key, message);
            return;
        };
        if let Some(earlier) = self.settings.iter().find(|s| s.id == flag.id) {
            let message = format!(
                "`{}` is set twice (also as `{}` at {}:{})",
                flag.long, earlier.key, earlier.key_position.line, earlier.key_position.column
            );
            self.error(key_position, key, message);
            return;
        }
        // A missing value is pointed at by its key.
        let value_position = match untag(value).data {
            YamlData::Value(Scalar::Null) => key_position,
            _ => position(value),
        };
        let tokens = match self.tokens(&flag, value, value_position) {
            Ok(tokens) => tokens,
            Err((position, message)) => {
                self.error(position, key, message);
                return;
            }
        };
        self.settings.push(Setting {
            key: key.to_owned(),
            id: flag.id,
            key_position,
            value_position,
            tokens,
        });
    }

    /// A known key near `key` (another spelling, or a typo).
    fn suggestion(&self, key: &str) -> Option<String> {
        let kebab = key.replace('_', "-").to_ascii_lowercase();
        self.flags
            .iter()
            .map(|f| (distance(&kebab, &f.long), &f.long))
            .filter(|(d, long)| *d <= 2.max(long.len() / 5))
            .min_by_key(|(d, _)| *d)
            .map(|(_, long)| long.clone())
    }

    /// The tokens a value stands for, or where it is wrong and why.
    fn tokens(
        &self,
        flag: &Flag,
        value: &MarkedYaml<'_>,
        value_position: Position,
    ) -> Result<Vec<OsString>, (Position, String)> {
        let long = &flag.long;
        let wrong = |node: &MarkedYaml<'_>, expected: &str| {
            let at = if std::ptr::eq(node, value) {
                value_position
            } else {
                position(node)
            };
            (at, format!("expected {expected}, found {}", describe(node)))
        };
        let one = |node: &MarkedYaml<'_>| -> Result<OsString, (Position, String)> {
            scalar_text(node, flag.takes_bool)
                .map(|text| OsString::from(format!("--{long}={text}")))
                .ok_or_else(|| wrong(node, &format!("a value {}", flag.value_name)))
        };
        match flag.shape {
            Shape::Switch => match &untag(value).data {
                YamlData::Value(Scalar::Boolean(true)) => Ok(vec![format!("--{long}").into()]),
                YamlData::Value(Scalar::Boolean(false)) => Ok(Vec::new()),
                _ => Err(wrong(value, "`true` or `false`")),
            },
            Shape::Count => match &untag(value).data {
                YamlData::Value(Scalar::Integer(n)) if (0..=255).contains(n) => Ok((0..*n)
                    .map(|_| OsString::from(format!("--{long}")))
                    .collect()),
                _ => Err(wrong(value, "a count (0 to 255)")),
            },
            Shape::Value { max } => match &untag(value).data {
                YamlData::Sequence(items) if max > 1 => {
                    let mut tokens = vec![OsString::from(format!("--{long}"))];
                    for item in items {
                        tokens.push(
                            scalar_text(item, flag.takes_bool)
                                .map(OsString::from)
                                .ok_or_else(|| wrong(item, "a value"))?,
                        );
                    }
                    Ok(tokens)
                }
                YamlData::Sequence(_) => Err((
                    position(value),
                    format!(
                        "takes one value {}, found a list (only repeatable flags take lists)",
                        flag.value_name
                    ),
                )),
                _ => Ok(vec![one(value)?]),
            },
            Shape::Repeated => match &untag(value).data {
                YamlData::Sequence(items) => items.iter().map(one).collect(),
                _ => Ok(vec![one(value)?]),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    /// A command shaped like `egret run`: values, a switch, an enum, a repeatable flag,
    /// a conflict, and `--config` itself.
    fn command() -> Command {
        Command::new("run")
            .arg(
                Arg::new("output")
                    .long("output")
                    .visible_alias("out")
                    .value_name("PATH")
                    .default_value("-"),
            )
            .arg(
                Arg::new("ring_buffer_size")
                    .long("ring-buffer-size")
                    .value_name("BYTES")
                    .value_parser(clap::value_parser!(u32))
                    .default_value("4096"),
            )
            .arg(
                Arg::new("log_level")
                    .long("log-level")
                    .value_parser(["error", "warn", "info", "debug", "trace"])
                    .default_value("info"),
            )
            .arg(Arg::new("watch").long("watch").action(ArgAction::SetTrue))
            .arg(
                Arg::new("container_labels")
                    .long("container-label")
                    .value_name("KEY")
                    .action(ArgAction::Append),
            )
            .arg(Arg::new("verbose").long("verbose").action(ArgAction::Count))
            .arg(
                Arg::new("rotate")
                    .long("rotate")
                    .value_name("BYTES")
                    .value_parser(clap::value_parser!(u64))
                    .conflicts_with("stdout_only"),
            )
            .arg(
                Arg::new("stdout_only")
                    .long("stdout-only")
                    .action(ArgAction::SetTrue),
            )
            .arg(Arg::new("config").long("config").value_name("FILE"))
    }

    const EXCLUDED: &[&str] = &["config"];

    fn parse(text: &str) -> Result<ConfigFile, ConfigErrors> {
        ConfigFile::parse(text, "c.yaml", &command(), EXCLUDED)
    }

    /// The file merged with `cli` (arguments after `run`).
    fn merge(text: &str, cli: &[&str]) -> Result<ArgMatches, ConfigErrors> {
        let file = parse(text)?;
        let cli: Vec<OsString> = cli.iter().map(OsString::from).collect();
        let given = command()
            .try_get_matches_from(std::iter::once(OsString::from("run")).chain(cli.clone()))
            .unwrap();
        file.merge(&command(), "run", &given, &cli)
    }

    fn errors(text: &str, cli: &[&str]) -> Vec<String> {
        match merge(text, cli) {
            Ok(m) => panic!("expected errors, got {m:?}"),
            Err(e) => e.errors.iter().map(ToString::to_string).collect(),
        }
    }

    fn one_error(text: &str) -> String {
        let errs = errors(text, &[]);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        errs.into_iter().next().unwrap()
    }

    #[test]
    fn settings_become_flags() {
        let m = merge(
            "output: /var/log/e.jsonl\nring-buffer-size: 65536\nlog-level: debug\nwatch: true\n\
             container-label: [app, team]\nverbose: 2\n",
            &[],
        )
        .unwrap();
        assert_eq!(m.get_one::<String>("output").unwrap(), "/var/log/e.jsonl");
        assert_eq!(*m.get_one::<u32>("ring_buffer_size").unwrap(), 65536);
        assert_eq!(m.get_one::<String>("log_level").unwrap(), "debug");
        assert!(m.get_flag("watch"));
        let labels: Vec<&String> = m.get_many("container_labels").unwrap().collect();
        assert_eq!(labels, ["app", "team"]);
        assert_eq!(m.get_count("verbose"), 2);
    }

    #[test]
    fn scalars_and_special_values() {
        // `-` (stdout) is a value, not a flag; one label without a list; `false` leaves a
        // switch off; numbers in any YAML form.
        let m = merge(
            "output: '-'\ncontainer-label: app\nwatch: false\nring-buffer-size: 0x1000\n",
            &[],
        )
        .unwrap();
        assert_eq!(m.get_one::<String>("output").unwrap(), "-");
        assert_eq!(m.get_many::<String>("container_labels").unwrap().count(), 1);
        assert!(!m.get_flag("watch"));
        assert_eq!(*m.get_one::<u32>("ring_buffer_size").unwrap(), 4096);
        // A number where a string is expected is its text.
        let m = merge("output: 123\n", &[]).unwrap();
        assert_eq!(m.get_one::<String>("output").unwrap(), "123");
    }

    #[test]
    fn empty_files_set_nothing() {
        for text in ["", "# only a comment\n", "~\n"] {
            let file = parse(text).unwrap();
            assert_eq!(file.keys().count(), 0);
            let m = merge(text, &[]).unwrap();
            assert_eq!(m.get_one::<String>("output").unwrap(), "-");
        }
    }

    #[test]
    fn the_command_line_wins() {
        let text = "output: /from/file\nring-buffer-size: 8192\ncontainer-label: [a, b]\n";
        let m = merge(text, &["--output", "/from/cli", "--container-label", "c"]).unwrap();
        assert_eq!(m.get_one::<String>("output").unwrap(), "/from/cli");
        assert_eq!(*m.get_one::<u32>("ring_buffer_size").unwrap(), 8192);
        // A repeatable flag on the command line replaces the file's list.
        let labels: Vec<&String> = m.get_many("container_labels").unwrap().collect();
        assert_eq!(labels, ["c"]);
        // The command line overriding a bad value: the file's value is not used, so no error.
        let m = merge("ring-buffer-size: lots\n", &["--ring-buffer-size=4096"]).unwrap();
        assert_eq!(*m.get_one::<u32>("ring_buffer_size").unwrap(), 4096);
    }

    #[test]
    fn unknown_keys_are_located_with_a_suggestion() {
        let e = one_error("output: x\nring_buffer_size: 4096\n");
        assert_eq!(
            e,
            "c.yaml:2:1: ring_buffer_size: unknown key `ring_buffer_size`; did you mean `ring-buffer-size`?"
        );
        let e = one_error("outptu: x\n");
        assert!(e.contains("did you mean `output`?"), "{e}");
        let e = one_error("frobnicate: 1\n");
        assert_eq!(
            e,
            "c.yaml:1:1: frobnicate: unknown key `frobnicate`; keys are the long flags of `egret run` without `--` (see `egret run --help`)"
        );
        // Help and version are not settings.
        let e = one_error("help: true\n");
        assert!(e.contains("unknown key `help`"), "{e}");
    }

    #[test]
    fn config_cannot_name_another_config() {
        let e = one_error("config: other.yaml\n");
        assert_eq!(
            e,
            "c.yaml:1:1: config: `config` cannot be set in a config file"
        );
    }

    #[test]
    fn wrong_shapes_are_located_at_the_value() {
        assert_eq!(
            one_error("watch: yes\n"),
            "c.yaml:1:8: watch: expected `true` or `false`, found `yes`"
        );
        assert_eq!(
            one_error("output: [a, b]\n"),
            "c.yaml:1:9: output: takes one value <PATH>, found a list (only repeatable flags take lists)"
        );
        assert_eq!(
            one_error("output:\n"),
            "c.yaml:1:1: output: expected a value <PATH>, found nothing (null)"
        );
        assert_eq!(
            one_error("output: {a: 1}\n"),
            "c.yaml:1:9: output: expected a value <PATH>, found a mapping"
        );
        assert_eq!(
            one_error("output: true\n"),
            "c.yaml:1:9: output: expected a value <PATH>, found boolean `true`"
        );
        assert_eq!(
            one_error("container-label: [a, [b]]\n"),
            "c.yaml:1:22: container-label: expected a value <KEY>, found a list"
        );
        assert_eq!(
            one_error("verbose: -1\n"),
            "c.yaml:1:10: verbose: expected a count (0 to 255), found integer `-1`"
        );
    }

    #[test]
    fn bad_values_are_clap_errors_at_the_value() {
        assert_eq!(
            one_error("ring-buffer-size: lots\n"),
            "c.yaml:1:19: ring-buffer-size: invalid value `lots`: invalid digit found in string"
        );
        assert_eq!(
            one_error("ring-buffer-size: -1\n"),
            "c.yaml:1:19: ring-buffer-size: invalid value `-1`: -1 is not in 0..=4294967295"
        );
        assert_eq!(
            one_error("log-level: loud\n"),
            "c.yaml:1:12: log-level: invalid value `loud`; expected one of: error, warn, info, debug, trace"
        );
    }

    #[test]
    fn conflicts_are_located_at_the_key() {
        let e = one_error("stdout-only: true\nrotate: 100\n");
        assert_eq!(e, "c.yaml:2:1: rotate: cannot be used with `stdout-only`");
        // With a command-line flag: the file's key is the one reported.
        let errs = errors("rotate: 100\n", &["--stdout-only"]);
        assert_eq!(
            errs,
            ["c.yaml:1:1: rotate: cannot be used with `--stdout-only`"]
        );
    }

    #[test]
    fn duplicates_are_errors() {
        // The same key twice is a YAML error.
        let e = one_error("output: a\noutput: b\n");
        assert!(e.starts_with("c.yaml:2:1: (syntax): invalid YAML: "), "{e}");
        assert!(e.contains("duplicated key"), "{e}");
    }

    #[test]
    fn an_alias_is_the_same_flag() {
        let m = merge("out: /x\n", &[]).unwrap();
        assert_eq!(m.get_one::<String>("output").unwrap(), "/x");
        let m = merge("out: /x\n", &["--output", "/y"]).unwrap();
        assert_eq!(m.get_one::<String>("output").unwrap(), "/y");
        assert_eq!(
            one_error("output: /x\nout: /y\n"),
            "c.yaml:2:1: out: `output` is set twice (also as `output` at 1:1)"
        );
    }

    #[test]
    fn yaml_shape_errors() {
        let e = one_error("output: [a\n");
        assert!(e.starts_with("c.yaml:2:1: (syntax): invalid YAML: "), "{e}");
        assert_eq!(
            one_error("- output\n"),
            "c.yaml:1:1: (document): expected a mapping of flag names to values (`output: /var/log/egret.jsonl`), found a list"
        );
        assert_eq!(
            one_error("output: a\n---\nwatch: true\n"),
            "c.yaml:3:1: (document): expected one YAML document, found 2 (`---` starts another)"
        );
        assert_eq!(
            one_error("[a]: 1\n"),
            "c.yaml:1:1: (document): expected a flag name as key, found a list"
        );
    }

    #[test]
    fn every_error_at_once_in_document_order() {
        let text = "\
ring-buffer-size: lots
watch: maybe
frobnicate: 1
log-level: loud
output: /ok
stdout-only: true
rotate: 5
";
        let errs = errors(text, &[]);
        assert_eq!(
            errs,
            [
                "c.yaml:1:19: ring-buffer-size: invalid value `lots`: invalid digit found in string",
                "c.yaml:2:8: watch: expected `true` or `false`, found `maybe`",
                "c.yaml:3:1: frobnicate: unknown key `frobnicate`; keys are the long flags of `egret run` without `--` (see `egret run --help`)",
                "c.yaml:4:12: log-level: invalid value `loud`; expected one of: error, warn, info, debug, trace",
                "c.yaml:7:1: rotate: cannot be used with `stdout-only`",
            ]
        );
    }

    #[test]
    fn whole_file_errors_stop_early() {
        // Not a mapping: nothing else to say.
        let e = parse("- output\n- watch\n").unwrap_err();
        assert_eq!(e.errors.len(), 1, "{e:?}");
        // Key problems do not: the file is read, the keys are reported by merge.
        let file = parse("watch: 1\noutput: /x\n").unwrap();
        assert_eq!(file.keys().collect::<Vec<_>>(), ["output"]);
        let errs = errors("watch: 1\nring-buffer-size: lots\n", &[]);
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn cross_flag_messages_are_located_at_the_key_they_name() {
        let file = parse("output: x\nring-buffer-size: 8192\n").unwrap();
        let e = file.locate("--ring-buffer-size (8192) must exceed --output");
        assert_eq!(
            e.to_string(),
            "c.yaml:2:19: ring-buffer-size: --ring-buffer-size (8192) must exceed --output"
        );
        let e = file.locate("--watch needs --policy");
        assert_eq!(
            e.to_string(),
            "c.yaml:0:0: (settings): --watch needs --policy"
        );
    }

    #[test]
    fn unreadable_files() {
        let missing = Path::new("/nonexistent/egret-config.yaml");
        let e = ConfigFile::load(missing, &command(), EXCLUDED).unwrap_err();
        assert_eq!(e.errors.len(), 1);
        let line = e.errors[0].to_string();
        assert!(
            line.starts_with("/nonexistent/egret-config.yaml:0:0: (file): cannot open: "),
            "{line}"
        );
        let dir = std::env::temp_dir().join(format!("egret-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        std::fs::write(&path, "output: /x\n").unwrap();
        let file = ConfigFile::load(&path, &command(), EXCLUDED).unwrap();
        assert_eq!(file.keys().collect::<Vec<_>>(), ["output"]);
        assert_eq!(file.file(), path.display().to_string());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_are_the_long_flags() {
        assert_eq!(
            keys(&command(), EXCLUDED),
            [
                "output",
                "ring-buffer-size",
                "log-level",
                "watch",
                "container-label",
                "verbose",
                "rotate",
                "stdout-only"
            ]
        );
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("outptu", "output"), 2);
        assert_eq!(distance("output", "output"), 0);
    }
}
