//! Command-line definitions. Every subcommand exits 0 on success, 1 on bad
//! input (with a message that says what and where), 2 on usage errors.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "lpac",
    version,
    about = "A compiler that trains transformer language models",
    long_about = "lpac compiles a model written in the .lpa language to a tensor graph IR, \
rewrites it (Low-dimensional Projected Attention, simplification, fusion) and trains it.\n\n\
Start with:  lpac check models/tiny.lpa\n             lpac stats models/gpt.lpa\n             lpac ir models/tiny.lpa --set layers=1"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Check a model file: parse, resolve names, check shapes. Prints the model
    /// name and parameter count, or every diagnostic.
    Check(CheckArgs),
    /// Print the forward graph (loss as output) as IR text, DOT or JSON.
    /// FILE may be a model (.lpa) or an IR file (.ir), which is parsed and printed back.
    Ir(IrArgs),
    /// Count parameters (in total and by group), FLOPs and activation memory.
    Stats(StatsArgs),
}

/// The model file and its configuration overrides, shared by every subcommand.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A model file (.lpa) or an IR file (.ir).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Override a config value, e.g. `--set layers=2 --set d=128` (repeatable).
    /// Unknown keys and values of the wrong type are errors.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IrFormat {
    /// The canonical text form, which `lpac ir FILE.ir` parses back.
    Text,
    /// Graphviz DOT (render with `dot -Tsvg`).
    Dot,
    /// JSON: nodes with op, attributes, operands, type and origin.
    Json,
}

#[derive(Args)]
pub struct IrArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: IrFormat,
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,
}

#[derive(Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print one JSON object (keys documented in docs/cli.md).
    #[arg(long)]
    pub json: bool,
}
