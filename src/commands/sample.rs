//! `lpac sample CHECKPOINT|RUN_DIR --prompt TEXT`: generated text.

use std::io::Write;

use crate::cli::SampleArgs;
use crate::commands::eval::{open, params};
use crate::commands::train::tokenizer;
use crate::error::{CliError, CliResult};
use crate::train::sample::{SampleOptions, sample};

pub fn run(args: &SampleArgs) -> CliResult {
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        return Err(CliError::Message(format!("--temperature {} must be 0 or more", args.temperature)));
    }
    let opened = open(&args.checkpoint)?;
    let params = params(&opened)?;
    let tok = tokenizer(opened.run.tokenizer.as_deref())?;
    let opts = SampleOptions { tokens: args.tokens, temperature: args.temperature, top_k: args.top_k, seed: args.seed };
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", args.prompt);
    let _ = out.flush();
    sample(&opened.run.spec, &params, tok.as_ref(), &args.prompt, args.device, &opts, |piece| {
        let _ = write!(out, "{piece}");
        let _ = out.flush();
    })?;
    let _ = writeln!(out);
    Ok(())
}
