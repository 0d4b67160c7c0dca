//! `lpac check FILE`: the model compiles, or here is why not.

use crate::cli::CheckArgs;
use crate::error::CliResult;
use crate::load::load;
use crate::stats::human_count;

pub fn run(args: &CheckArgs) -> CliResult {
    let loaded = load(&args.model)?;
    let g = &loaded.graph;
    println!(
        "ok: model `{}`: {} parameters ({}) in {} tensors, {} graph nodes",
        loaded.name,
        g.param_count(),
        human_count(g.param_count() as u64),
        g.params().count(),
        g.len()
    );
    Ok(())
}
