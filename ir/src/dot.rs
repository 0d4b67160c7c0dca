//! Graphviz DOT export, for looking at a graph (`dot -Tsvg`). The output
//! depends only on the graph, so it can be diffed and snapshotted.
//!
//! Inputs are blue `invhouse`s, parameters green `cylinder`s, constants grey
//! `ellipse`s, other ops plain boxes, and outputs orange `doubleoctagon`s.
//! Edges go from operand to user and, when the user has more than one operand,
//! are labelled with the operand's position (0-based).

use std::fmt::Write;

use crate::graph::{Graph, Node, NodeId};
use crate::op::Op;

/// The graph in DOT, ending in a newline.
pub fn to_dot(graph: &Graph) -> String {
    let mut out = format!("digraph {} {{\n", dot_string(&graph.name));
    out.push_str("  node [shape=box, fontname=\"monospace\", fontsize=10];\n");
    out.push_str("  edge [fontname=\"monospace\", fontsize=9];\n");
    for id in graph.ids() {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "  n{} [{}];", id.0, node_attributes(id, graph.node(id)));
    }
    for id in graph.ids() {
        write_edges(&mut out, id, graph.node(id));
    }
    for (index, output) in graph.outputs.iter().enumerate() {
        let label = dot_string(&format!("output {}", output.name));
        let style = "shape=doubleoctagon, style=filled, fillcolor=\"#fdd9a8\"";
        let _ = writeln!(out, "  out{index} [label={label}, {style}];");
        let _ = writeln!(out, "  n{} -> out{index};", output.node.0);
    }
    out.push_str("}\n");
    out
}

/// `%3 matmul` / type / (path or input name), and the shape and colour that
/// set leaves apart from computation.
fn node_attributes(id: NodeId, node: &Node) -> String {
    let mut label = format!("{} {}\n{}", id, node.op.name(), node.ty);
    let style = match &node.op {
        Op::Input { name } => {
            let _ = write!(label, "\n{}", crate::text::quote(name));
            ", shape=invhouse, style=filled, fillcolor=\"#cfe2ff\""
        }
        Op::Param { path, .. } => {
            let _ = write!(label, "\n{path}");
            ", shape=cylinder, style=filled, fillcolor=\"#d4edda\""
        }
        Op::Const { value } => {
            let _ = write!(label, "\n{value:?}");
            ", shape=ellipse, style=filled, fillcolor=\"#eeeeee\""
        }
        _ => "",
    };
    format!("label={}{}", dot_string(&label), style)
}

fn write_edges(out: &mut String, id: NodeId, node: &Node) {
    let labelled = node.inputs.len() > 1;
    for (position, input) in node.inputs.iter().enumerate() {
        let _ = write!(out, "  n{} -> n{}", input.0, id.0);
        if labelled {
            let _ = write!(out, " [label=\"{position}\"]");
        }
        out.push_str(";\n");
    }
}

/// A DOT double-quoted string. Newlines become DOT's `\n` line breaks;
/// backslashes are doubled so user text never forms a DOT escape.
fn dot_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Origin;
    use crate::op::{BinaryOp, Init};
    use crate::types::{DType, TensorType};

    fn sample() -> Graph {
        let mut g = Graph::new("tiny");
        let ty = || Some(TensorType::new(DType::F32, vec![2]));
        let x = g.add(Op::Input { name: "x \"quoted\"".into() }, vec![], ty(), Origin::default()).unwrap();
        let b =
            g.add(Op::Param { path: "b".into(), init: Init::Const { value: 0.0 } }, vec![], ty(), Origin::default());
        let sum = g.add(Op::Binary(BinaryOp::Add), vec![x, b.unwrap()], None, Origin::default()).unwrap();
        let e = g.add(Op::Unary(crate::op::UnaryOp::Exp), vec![sum], None, Origin::default()).unwrap();
        g.add_output("loss", e);
        g
    }

    #[test]
    fn nodes_edges_and_outputs() {
        let dot = to_dot(&sample());
        assert!(dot.starts_with("digraph \"tiny\" {\n"), "{dot}");
        assert!(dot.ends_with("}\n"));
        assert!(
            dot.contains("n0 [label=\"%0 input\\nf32[2]\\n\\\"x \\\\\\\"quoted\\\\\\\"\\\"\", shape=invhouse"),
            "{dot}"
        );
        assert!(dot.contains("n1 [label=\"%1 param\\nf32[2]\\nb\", shape=cylinder"), "{dot}");
        assert!(dot.contains("n2 [label=\"%2 add\\nf32[2]\"];"), "{dot}");
        // Two operands: positions labelled; one operand: unlabelled.
        assert!(dot.contains("  n0 -> n2 [label=\"0\"];\n  n1 -> n2 [label=\"1\"];\n"), "{dot}");
        assert!(dot.contains("  n2 -> n3;\n"), "{dot}");
        assert!(dot.contains("out0 [label=\"output loss\", shape=doubleoctagon"), "{dot}");
        assert!(dot.contains("  n3 -> out0;\n"), "{dot}");
    }

    #[test]
    fn deterministic() {
        assert_eq!(to_dot(&sample()), to_dot(&sample()));
    }
}
