//! `lpac passes`: every pass and every named pipeline.

use lpac_passes::registry;

use crate::error::CliResult;

pub fn run() -> CliResult {
    let mut out = String::from("passes (run with --passes a,b,c; options as name{key=value,...}):\n\n");
    for p in registry::all() {
        let kind = if p.preserves_meaning { "preserves meaning" } else { "changes the model" };
        out += &format!("  {:<10} {}\n             [{kind}]\n", p.name, p.summary);
        for o in p.options {
            let default = if o.default.is_empty() { String::new() } else { format!(" (default {})", o.default) };
            out += &format!("             {}={}: {}{}\n", o.name, o.name.to_uppercase(), o.help, default);
        }
    }
    out += "\npipelines (run with --pipeline NAME):\n\n";
    for (name, passes, help) in registry::PIPELINES {
        let passes = if passes.is_empty() { "(no passes)" } else { passes };
        out += &format!("  {name:<10} {passes:<20} {help}\n");
    }
    out += "\n--lowrank R [--lowrank-target T] puts lowrank{rank=R,target=T} before the pipeline.\n";
    print!("{out}");
    Ok(())
}
