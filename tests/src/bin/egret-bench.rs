//! `egret-bench`: what egret costs the applications it watches (see `egret_e2e::bench`).
//! `cargo xtask bench` builds it with egret in release mode and runs it; run by hand, it uses
//! the release binaries next to it and writes to `target/bench`.

use std::process::ExitCode;

use clap::Parser;
use egret_e2e::bench::{self, BenchOptions};

#[derive(Parser)]
#[command(
    name = "egret-bench",
    about = "Measure egret's overhead on loopback TCP connect / UDP send / resolve + connect loops"
)]
struct Cli {
    #[command(flatten)]
    options: BenchOptions,
}

fn main() -> ExitCode {
    let Cli { options } = Cli::parse();
    match bench::bench(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("egret-bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
