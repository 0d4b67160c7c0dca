//! `lpac ir FILE`: the forward graph, after the passes asked for, as text,
//! DOT or JSON — or as an annotated provenance listing.

use crate::cli::{IrArgs, IrFormat};
use crate::error::CliResult;
use crate::load::load;
use crate::pipeline;
use crate::provenance::{Change, SourceLines, history, node_lines};

pub fn run(args: &IrArgs) -> CliResult {
    let loaded = load(&args.model)?;
    let run = pipeline::run(loaded.graph, &args.pipeline)?;
    let graph = run.output();
    let text = if args.provenance {
        provenance_listing(&run)
    } else {
        match args.format {
            IrFormat::Text => lpac_ir::print(graph),
            IrFormat::Dot => lpac_ir::dot::to_dot(graph),
            IrFormat::Json => {
                let json = lpac_ir::json::to_json(graph);
                serde_json::to_string_pretty(&json).map_err(|e| e.to_string())? + "\n"
            }
        }
    };
    write_output(args.output.as_deref(), &text)
}

/// Each node's line, then where it came from: the source line and the passes
/// that made it, with their explanations.
fn provenance_listing(run: &lpac_passes::manager::PipelineRun) -> String {
    let graph = run.output();
    let lines = node_lines(graph);
    let mut sources = SourceLines::default();
    let mut out = format!("graph {} (provenance listing)\n", graph.name);
    for id in graph.ids() {
        out += &format!("{}\n", lines[id.index()]);
        let origin = &graph.node(id).origin;
        if let Some(span) = &origin.span {
            let text = sources.line(span).map(|l| format!(": {}", l.trim())).unwrap_or_default();
            out += &format!("    source  {span}{text}\n");
        }
        for step in history(run, id).iter().filter(|s| s.change != Change::Kept || s.explanation.is_some()) {
            let what = match (step.change, step.from) {
                (Change::Created, _) => "created".to_string(),
                (_, Some(from)) => format!("rewrote {from} (numbered as before `{}`)", step.pass),
                (_, None) => "rewrote".to_string(),
            };
            out += &format!("    {:<8} {what}", step.pass);
            if let Some(e) = &step.explanation {
                out += &format!(": {e}");
            }
            out.push('\n');
        }
    }
    out
}

/// Writes to the named file, or to standard output.
pub fn write_output(path: Option<&std::path::Path>, text: &str) -> CliResult {
    match path {
        Some(p) => std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()).into()),
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            // A closed pipe (`lpac ir ... | head`) is not an error worth a message.
            let _ = out.write_all(text.as_bytes());
            Ok(())
        }
    }
}
