//! `dce`: dead-code elimination. Keeps the nodes the outputs depend on, and
//! every step input (the runtime feeds them whether used or not). A parameter
//! nothing uses any more — such as a dense weight that `lowrank` replaced —
//! disappears with its checkpoint entry.

use lpac_ir::{Graph, Op};

use crate::pass::{GraphCopier, Pass, PassError, PassOutcome};

pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn summary(&self) -> &'static str {
        "remove nodes no output depends on (step inputs are kept)"
    }

    fn preserves_meaning(&self) -> bool {
        true
    }

    fn run(&self, graph: &Graph) -> Result<PassOutcome, PassError> {
        let live = live_nodes(graph);
        let mut copier = GraphCopier::new(graph);
        for id in graph.ids().filter(|id| live[id.index()]) {
            copier.copy(id);
        }
        Ok(copier.finish())
    }
}

/// Nodes reachable backwards from the outputs, plus every input.
pub fn live_nodes(graph: &Graph) -> Vec<bool> {
    let mut live = vec![false; graph.len()];
    for out in &graph.outputs {
        live[out.node.index()] = true;
    }
    for id in graph.ids().rev() {
        let node = graph.node(id);
        if matches!(node.op, Op::Input { .. }) {
            live[id.index()] = true;
        }
        if live[id.index()] {
            for &i in &node.inputs {
                live[i.index()] = true;
            }
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "graph g {
  %0 : f32[2] = input \"x\"
  %1 : f32[2] = input \"unused\"
  %2 : f32[2] = param \"w\" init=const(1.0)
  %3 : f32[2] = param \"dead\" init=const(1.0)
  %4 : f32[2] = mul %0, %2
  %5 : f32[2] = exp %3
  %6 : f32[2] = add %5, %5
  output y = %4
}
";

    #[test]
    fn removes_dead_nodes_and_parameters_but_keeps_inputs() {
        let g = lpac_ir::parse(TEXT, "t").unwrap();
        let out = Dce.run(&g).unwrap();
        let expected = "graph g {
  %0 : f32[2] = input \"x\"
  %1 : f32[2] = input \"unused\"
  %2 : f32[2] = param \"w\" init=const(1.0)
  %3 : f32[2] = mul %0, %2
  output y = %3
}
";
        assert_eq!(lpac_ir::print(&out.graph), expected);
        assert_eq!(out.source.len(), 4);
        assert_eq!(out.source[3], Some(lpac_ir::NodeId(4)));
    }

    #[test]
    fn clean_graph_is_unchanged() {
        let g = lpac_ir::parse(TEXT, "t").unwrap();
        let once = Dce.run(&g).unwrap().graph;
        assert_eq!(Dce.run(&once).unwrap().graph, once);
    }
}
