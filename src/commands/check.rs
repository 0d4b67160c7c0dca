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
    if args.config {
        match &loaded.config {
            Some(config) => {
                for e in &config.entries {
                    let set = if e.overridden { "(--set)" } else { "" };
                    let doc = e.doc.as_deref().map(|d| format!("# {d}")).unwrap_or_default();
                    println!("  {:<12} = {:<10} {:<8} {}", e.name, e.value.to_string(), set, doc);
                }
            }
            None => println!("  (an IR file has no configuration)"),
        }
    }
    Ok(())
}
