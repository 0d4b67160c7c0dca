//! `cse`: common-subexpression elimination. Two nodes with the same op, the
//! same operands and the same type compute the same value and become one. This
//! holds for every op, random numbers included: `random_uniform` with the same
//! key and type draws the same stream. The node kept is the first; it records
//! `cse` in its provenance when it absorbed another.

use std::collections::HashMap;

use lpac_ir::{Graph, NodeId, Op};

use crate::pass::{GraphCopier, Pass, PassError, PassOutcome};

pub struct Cse;

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }

    fn summary(&self) -> &'static str {
        "merge nodes that compute the same value (same op, operands and type)"
    }

    fn preserves_meaning(&self) -> bool {
        true
    }

    fn run(&self, graph: &Graph) -> Result<PassOutcome, PassError> {
        let mut copier = GraphCopier::new(graph);
        let mut seen: HashMap<String, NodeId> = HashMap::new();
        let mut merged = 0;
        for id in graph.ids() {
            let node = graph.node(id);
            let inputs: Vec<NodeId> = node.inputs.iter().map(|i| copier.mapped(*i)).collect();
            let key = node_key(&node.op, &inputs, &node.ty);
            match seen.get(&key) {
                Some(&existing) if !matches!(node.op, Op::Input { .. } | Op::Param { .. }) => {
                    copier.map[id.index()] = Some(existing);
                    let origin = &mut copier.new.nodes[existing.index()].origin;
                    *origin = origin.rewritten_by("cse");
                    merged += 1;
                }
                _ => {
                    let new_id = copier.copy(id);
                    seen.insert(key, new_id);
                }
            }
        }
        let mut outcome = copier.finish();
        if merged > 0 {
            outcome.report = Some(format!("cse: merged {merged} node(s)"));
        }
        Ok(outcome)
    }
}

/// A key equal for nodes that compute the same value. Floats in attributes
/// compare by bits, so `const 0.0` and `const -0.0` stay apart.
fn node_key(op: &Op, inputs: &[NodeId], ty: &lpac_ir::TensorType) -> String {
    let attrs = match op {
        Op::Const { value } => format!("{:x}", value.to_bits()),
        Op::Pad { axis, lo, hi, value } => format!("{axis},{lo},{hi},{:x}", value.to_bits()),
        other => format!("{other:?}"),
    };
    format!("{}|{}|{:?}|{}", op.name(), attrs, inputs, ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_equal_nodes_and_records_it() {
        let text = "graph g {
  %0 : f32[2] = input \"x\"
  %1 : f32[2] = exp %0
  %2 : f32[2] = exp %0
  %3 : f32[2] = add %1, %2
  %4 : f32[] = const 2.0
  %5 : f32[] = const 2.0
  %6 : f32[] = const -0.0
  %7 : f32[] = const 0.0
  %8 : f32[] = add %4, %5
  %9 : f32[] = add %6, %7
  output y = %3
  output z = %8
  output w = %9
}
";
        let g = lpac_ir::parse(text, "t").unwrap();
        let out = Cse.run(&g).unwrap();
        let expected = "graph g {
  %0 : f32[2] = input \"x\"
  %1 : f32[2] = exp %0   # via cse
  %2 : f32[2] = add %1, %1
  %3 : f32[] = const 2.0   # via cse
  %4 : f32[] = const -0.0
  %5 : f32[] = const 0.0
  %6 : f32[] = add %3, %3
  %7 : f32[] = add %4, %5
  output y = %2
  output z = %6
  output w = %7
}
";
        assert_eq!(lpac_ir::print(&out.graph), expected);
        assert!(out.report.unwrap().contains("merged 2"));
    }

    #[test]
    fn params_with_equal_types_are_not_merged() {
        let text = "graph g {
  %0 : f32[2] = param \"a\" init=const(1.0)
  %1 : f32[2] = param \"b\" init=const(1.0)
  %2 : f32[2] = add %0, %1
  output y = %2
}
";
        let g = lpac_ir::parse(text, "t").unwrap();
        assert_eq!(Cse.run(&g).unwrap().graph, g);
    }
}
