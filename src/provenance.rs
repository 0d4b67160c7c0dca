//! Where a node of a pipeline's final graph came from: its source line and,
//! pass by pass, the node it stood for before and any explanation the pass
//! gave (egg's rewrite chains for `simplify`).

use std::collections::HashMap;

use lpac_ir::{Graph, NodeId, Span};
use lpac_passes::manager::PipelineRun;

/// What a pass did to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The pass made this node for a value it introduced (a new parameter).
    Created,
    /// The pass built this node in place of another (a rewrite).
    Rewritten,
    /// The pass copied the node, perhaps under a new id.
    Kept,
}

/// One pass's part in a node's history.
pub struct Step {
    pub pass: &'static str,
    /// The node in this pass's output.
    pub node: NodeId,
    /// The node of this pass's input it stands for; `None` if the pass created it.
    pub from: Option<NodeId>,
    pub explanation: Option<String>,
    pub change: Change,
}

/// The history of `node` of the final graph, newest pass first.
pub fn history(run: &PipelineRun, node: NodeId) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut current = Some(node);
    let inputs: Vec<&Graph> = std::iter::once(&run.input).chain(run.records.iter().map(|r| &r.outcome.graph)).collect();
    for (k, record) in run.records.iter().enumerate().rev() {
        let Some(id) = current else { break };
        let from = record.outcome.source.get(id.index()).copied().flatten();
        let explanation = record.outcome.explanations.get(&id).cloned();
        let after = record.outcome.graph.node(id);
        let change = match from {
            None => Change::Created,
            Some(f) => {
                let before = inputs[k].node(f);
                let touched = after.origin.passes.last().map(String::as_str) == Some(record.name)
                    && before.origin.passes.last().map(String::as_str) != Some(record.name);
                let source = &record.outcome.source;
                let same_operands = after.inputs.len() == before.inputs.len()
                    && after
                        .inputs
                        .iter()
                        .zip(&before.inputs)
                        .all(|(a, b)| source.get(a.index()).copied().flatten() == Some(*b));
                let same = before.op == after.op && before.ty == after.ty && same_operands;
                if touched || !same { Change::Rewritten } else { Change::Kept }
            }
        };
        steps.push(Step { pass: record.name, node: id, from, explanation, change });
        current = from;
    }
    steps
}

/// Reads source lines for spans, caching files.
#[derive(Default)]
pub struct SourceLines {
    files: HashMap<String, Option<Vec<String>>>,
}

impl SourceLines {
    /// The text of the line a span points at, if the file can be read.
    pub fn line(&mut self, span: &Span) -> Option<String> {
        let lines = self.files.entry(span.file.to_string()).or_insert_with(|| {
            std::fs::read_to_string(&*span.file).ok().map(|t| t.lines().map(str::to_string).collect())
        });
        lines.as_ref()?.get(span.line as usize - 1).cloned()
    }
}

/// Every node's IR line, as the text form prints it (index = node id).
pub fn node_lines(graph: &Graph) -> Vec<String> {
    let text = lpac_ir::print(graph);
    text.lines().skip(1).take(graph.len()).map(|l| l.trim().to_string()).collect()
}
