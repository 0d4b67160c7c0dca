//! JSON export, for tools and scripts that want the graph without parsing the
//! text form:
//!
//! ```json
//! {"name": "tiny",
//!  "nodes": [{"id": 0, "op": "input", "attrs": {"name": "tokens"}, "inputs": [],
//!             "type": {"dtype": "i32", "shape": [16,128]},
//!             "origin": {"span": "models/tiny.lpa:12:3", "passes": []}}, ...],
//!  "outputs": [{"name": "loss", "node": 14}]}
//! ```
//!
//! `attrs` holds the op's fields under their Rust names. JSON has no infinities
//! or NaN, so non-finite floats are the strings `"inf"`, `"-inf"` and `"NaN"`.

use serde_json::{Map, Value, json};

use crate::graph::{Graph, Node, NodeId};
use crate::op::{Init, Op};

pub fn to_json(graph: &Graph) -> Value {
    let nodes: Vec<Value> = graph.ids().map(|id| node_json(id, graph.node(id))).collect();
    let outputs: Vec<Value> = graph.outputs.iter().map(|o| json!({"name": o.name, "node": o.node.0})).collect();
    json!({"name": graph.name, "nodes": nodes, "outputs": outputs})
}

fn node_json(id: NodeId, node: &Node) -> Value {
    let inputs: Vec<u32> = node.inputs.iter().map(|i| i.0).collect();
    let span = node.origin.span.as_ref().map(|s| s.to_string());
    json!({
        "id": id.0,
        "op": node.op.name(),
        "attrs": attrs(&node.op),
        "inputs": inputs,
        "type": {"dtype": node.ty.dtype.name(), "shape": node.ty.shape},
        "origin": {"span": span, "passes": node.origin.passes},
    })
}

fn attrs(op: &Op) -> Value {
    let pairs: Vec<(&str, Value)> = match op {
        Op::Input { name } => vec![("name", json!(name))],
        Op::Param { path, init } => vec![("path", json!(path)), ("init", init_json(init))],
        Op::Const { value } => vec![("value", float(*value))],
        Op::Iota { axis } => vec![("axis", json!(axis))],
        Op::RandomUniform { key } => vec![("key", json!(key))],
        Op::Reduce { axes, .. } => vec![("axes", json!(axes))],
        Op::Permute { perm } => vec![("perm", json!(perm))],
        Op::Broadcast { dims } => vec![("dims", json!(dims))],
        Op::Slice { axis, start, end } => vec![("axis", json!(axis)), ("start", json!(start)), ("end", json!(end))],
        Op::Concat { axis } => vec![("axis", json!(axis))],
        Op::Pad { axis, lo, hi, value } => {
            vec![("axis", json!(axis)), ("lo", json!(lo)), ("hi", json!(hi)), ("value", float(*value))]
        }
        Op::Attention { scale, causal } => vec![("scale", float(*scale)), ("causal", json!(causal))],
        Op::AttentionGrad { scale, causal, wrt } => {
            vec![("scale", float(*scale)), ("causal", json!(causal)), ("wrt", json!(wrt))]
        }
        Op::Unary(_)
        | Op::Binary(_)
        | Op::Select
        | Op::Reshape
        | Op::MatMul
        | Op::Gather
        | Op::ScatterAdd
        | Op::Cast => Vec::new(),
    };
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<String, Value>>())
}

fn init_json(init: &Init) -> Value {
    match init {
        Init::Normal { mean, std } => json!({"kind": "normal", "mean": float(*mean), "std": float(*std)}),
        Init::Uniform { lo, hi } => json!({"kind": "uniform", "lo": float(*lo), "hi": float(*hi)}),
        Init::Const { value } => json!({"kind": "const", "value": float(*value)}),
    }
}

/// A JSON number, or for the values JSON cannot hold the text form's spelling.
fn float(value: f64) -> Value {
    if value.is_finite() { json!(value) } else { Value::String(format!("{value:?}")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Origin, Span};
    use crate::types::{DType, TensorType};

    #[test]
    fn nodes_attrs_types_and_outputs() {
        let mut g = Graph::new("tiny");
        let origin = Origin::at(Span { file: "m.lpa".into(), line: 3, col: 7 }).rewritten_by("lowrank");
        let ty = Some(TensorType::new(DType::F32, vec![4, 8]));
        let init = Init::Normal { mean: 0.0, std: 0.02 };
        let w = g.add(Op::Param { path: "w".into(), init }, vec![], ty, origin).unwrap();
        let s = g.add(Op::Slice { axis: 1, start: 2, end: 6 }, vec![w], None, Origin::default()).unwrap();
        let pad = Op::Pad { axis: 0, lo: 1, hi: 0, value: f64::NEG_INFINITY };
        let p = g.add(pad, vec![s], None, Origin::default()).unwrap();
        g.add_output("out", p);

        let j = to_json(&g);
        assert_eq!(j["name"], "tiny");
        let nodes = j["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3);
        let ops: Vec<&str> = nodes.iter().map(|n| n["op"].as_str().unwrap()).collect();
        assert_eq!(ops, ["param", "slice", "pad"]);
        assert_eq!(nodes[0]["attrs"], json!({"path": "w", "init": {"kind": "normal", "mean": 0.0, "std": 0.02}}));
        assert_eq!(nodes[0]["origin"], json!({"span": "m.lpa:3:7", "passes": ["lowrank"]}));
        assert_eq!(nodes[1]["attrs"], json!({"axis": 1, "start": 2, "end": 6}));
        assert_eq!(nodes[1]["inputs"], json!([0]));
        assert_eq!(nodes[1]["type"], json!({"dtype": "f32", "shape": [4, 4]}));
        assert_eq!(nodes[1]["origin"], json!({"span": null, "passes": []}));
        assert_eq!(nodes[2]["attrs"]["value"], "-inf");
        assert_eq!(j["outputs"], json!([{"name": "out", "node": 2}]));
    }

    #[test]
    fn deterministic_text() {
        let mut g = Graph::new("g");
        let ty = Some(TensorType::new(DType::I32, vec![2]));
        let x = g.add(Op::Input { name: "x".into() }, vec![], ty, Origin::default()).unwrap();
        g.add_output("x", x);
        let text = to_json(&g).to_string();
        assert_eq!(text, to_json(&g).to_string());
        assert!(text.starts_with("{\"name\":\"g\",\"nodes\":[{\"attrs\":{\"name\":\"x\"},\"id\":0,"), "{text}");
    }
}
