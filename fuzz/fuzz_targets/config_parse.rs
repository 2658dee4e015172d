//! A `--config` file's bytes through what `egret run --config` and `egret config check` do
//! with them (after reading: UTF-8, `ConfigFile::parse` against `egret run`'s flags, then
//! `RunConfig::from_config_file`: merged with an empty command line, checked across flags):
//! nothing may panic, and every error names the file with a line and column.
#![no_main]

use std::{ffi::OsString, sync::OnceLock};

use clap::{ArgMatches, Args as _, Command};
use egret::{
    config::RunConfig,
    config_file::{ConfigErrors, ConfigFile},
};
use libfuzzer_sys::fuzz_target;

const FILE: &str = "fuzz.yaml";

/// `egret run`'s flags, as its subcommand has them.
fn command() -> &'static Command {
    static COMMAND: OnceLock<Command> = OnceLock::new();
    COMMAND.get_or_init(|| RunConfig::augment_args(Command::new("run")))
}

/// clap's matches for an empty command line (`egret config check FILE`).
fn given() -> &'static ArgMatches {
    static GIVEN: OnceLock<ArgMatches> = OnceLock::new();
    GIVEN.get_or_init(|| {
        command()
            .clone()
            .try_get_matches_from([OsString::from("egret run")])
            .expect("no arguments are valid")
    })
}

fn check_errors(errors: &ConfigErrors) {
    assert_eq!(errors.file, FILE);
    assert!(!errors.errors.is_empty(), "an error without a message");
    for error in &errors.errors {
        assert!(error.to_string().starts_with("fuzz.yaml:"), "{error}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let command = command();
    let file = match ConfigFile::parse(text, FILE, command, &["config"]) {
        Ok(file) => file,
        Err(errors) => return check_errors(&errors),
    };
    match RunConfig::from_config_file(&file, command, given(), &[]) {
        Ok(_) => assert!(file.keys().all(|key| key != "config")),
        Err(errors) => check_errors(&errors),
    }
});
