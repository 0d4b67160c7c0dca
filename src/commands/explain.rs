//! `lpac explain FILE NODE`: how one node of the final graph came to be.

use lpac_ir::NodeId;

use crate::cli::ExplainArgs;
use crate::error::{CliError, CliResult};
use crate::load::load;
use crate::pipeline;
use crate::provenance::{Change, SourceLines, history, node_lines};

pub fn run(args: &ExplainArgs) -> CliResult {
    let loaded = load(&args.model)?;
    let run = pipeline::run(loaded.graph, &args.pipeline)?;
    let graph = run.output();
    let id = parse_node(&args.node, graph.len())?;
    let mut out = String::new();
    let final_lines = node_lines(graph);
    out += &format!("{}\n", final_lines[id.index()]);
    let origin = &graph.node(id).origin;
    match &origin.span {
        Some(span) => {
            out += &format!("\nsource: {span}\n");
            if let Some(line) = SourceLines::default().line(span) {
                out += &format!("  {:>4} | {}\n", span.line, line);
            }
        }
        None => out += "\nsource: none recorded\n",
    }
    let steps = history(&run, id);
    if steps.is_empty() {
        out += "\nno passes ran: this node is as the frontend built it\n";
    } else {
        out += "\nhistory, newest first:\n";
        let mut inputs: Vec<&lpac_ir::Graph> = run.records.iter().rev().skip(1).map(|r| &r.outcome.graph).collect();
        inputs.push(&run.input);
        for (step, before) in steps.iter().zip(inputs) {
            let line = |from: NodeId| node_lines(before).get(from.index()).cloned().unwrap_or_default();
            match (step.change, step.from) {
                (Change::Created, _) | (_, None) => {
                    out += &format!("  {:<9} created {} (a value the pass introduced)\n", step.pass, step.node)
                }
                (Change::Kept, Some(from)) if from == step.node => out += &format!("  {:<9} unchanged\n", step.pass),
                (Change::Kept, Some(from)) => out += &format!("  {:<9} unchanged (was {from})\n", step.pass),
                (Change::Rewritten, Some(from)) => {
                    out += &format!("  {:<9} rewrote {}, which was:\n              {}\n", step.pass, from, line(from))
                }
            }
            if let Some(e) = &step.explanation {
                out += &format!("            rewrites: {e}\n");
            }
        }
    }
    print!("{out}");
    Ok(())
}

fn parse_node(text: &str, len: usize) -> Result<NodeId, CliError> {
    let digits = text.strip_prefix('%').unwrap_or(text);
    let n: usize = digits.parse().map_err(|_| format!("`{text}` is not a node; write it as %42"))?;
    if n >= len {
        return Err(format!("the final graph has nodes %0 to %{}; there is no %{n}", len.saturating_sub(1)).into());
    }
    Ok(NodeId(n as u32))
}
