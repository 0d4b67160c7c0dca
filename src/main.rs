//! The `lpac` command line.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;
mod error;
mod load;
mod pipeline;
mod provenance;
mod stats;
mod train;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => commands::check::run(&args),
        Command::Ir(args) => commands::ir::run(&args),
        Command::Stats(args) => commands::stats::run(&args),
        Command::Passes => commands::passes::run(),
        Command::Explain(args) => commands::explain::run(&args),
        Command::Train(args) => commands::train::run(&args),
        Command::Compare(args) => commands::compare::run(&args),
        Command::Eval(args) => commands::eval::run(&args),
        Command::Kernels(args) => commands::kernels::run(&args),
        Command::Sample(args) => commands::sample::run(&args),
        Command::DeviceCheck(args) => commands::device_check::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", e.render());
            ExitCode::from(1)
        }
    }
}
