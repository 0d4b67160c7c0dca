//! The verifier: checks a whole graph and reports every problem it finds, not
//! just the first, so a broken pass can be diagnosed from one run.
//!
//! Checks: operands refer to earlier nodes; each node's type is what
//! [`result_type`] gives for its op and operands; outputs refer to existing
//! nodes and have unique names; parameter paths are unique dotted identifiers;
//! input names are unique.

use std::collections::HashMap;
use std::fmt;

use crate::graph::{Graph, NodeId, Span};
use crate::op::Op;
use crate::types::TensorType;
use crate::typing::result_type;

/// One problem, naming what is at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// The node at fault; `None` for a problem with an output.
    pub node: Option<NodeId>,
    /// What is at fault as people read it: `%12 (matmul)` or `output `loss``.
    pub subject: String,
    /// The node's source span, if it has one.
    pub span: Option<Span>,
    pub message: String,
}

impl fmt::Display for VerifyError {
    /// `%12 (matmul) at models/gpt.lpa:14:9: message`; without a span,
    /// `%12 (matmul): message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.span {
            Some(span) => write!(f, "{} at {}: {}", self.subject, span, self.message),
            None => write!(f, "{}: {}", self.subject, self.message),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Checks the whole graph; on failure returns every problem, in node order
/// and then output order.
pub fn verify(graph: &Graph) -> Result<(), Vec<VerifyError>> {
    let mut errors = Vec::new();
    for id in graph.ids() {
        check_node(graph, id, &mut errors);
    }
    check_names(graph, &mut errors);
    check_outputs(graph, &mut errors);
    // Name problems were found in a second sweep; keep the report in node order.
    errors.sort_by_key(|e| e.node.map_or(u32::MAX, |id| id.0));
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

fn node_error(graph: &Graph, id: NodeId, message: String) -> VerifyError {
    let node = graph.node(id);
    VerifyError {
        node: Some(id),
        subject: format!("{} ({})", id, node.op.name()),
        span: node.origin.span.clone(),
        message,
    }
}

/// Operands first: the type check needs every operand to exist, and one that
/// does not is already reported, so it is skipped then.
fn check_node(graph: &Graph, id: NodeId, errors: &mut Vec<VerifyError>) {
    let node = graph.node(id);
    let mut operands_ok = true;
    for (position, &input) in node.inputs.iter().enumerate() {
        if input >= id {
            let message = format!("operand {position} is {input}, which is not an earlier node");
            errors.push(node_error(graph, id, message));
            operands_ok = false;
        }
    }
    if !operands_ok {
        return;
    }
    let input_types: Vec<&TensorType> = node.inputs.iter().map(|&i| graph.ty(i)).collect();
    let checked = sizes_fit(&node.op, &input_types, &node.ty)
        .and_then(|()| result_type(&node.op, &input_types, Some(&node.ty)).map(|_| ()));
    if let Err(message) = checked {
        errors.push(node_error(graph, id, message));
    }
}

/// Parameter paths name checkpoint entries and input names name the values
/// fed each step, so each must be unique; paths must also be well formed.
fn check_names(graph: &Graph, errors: &mut Vec<VerifyError>) {
    let mut paths: HashMap<&str, NodeId> = HashMap::new();
    for (id, path) in graph.params() {
        if !is_valid_param_path(path) {
            let message = format!("parameter path \"{path}\" is not dotted identifiers like `layers.0.w`");
            errors.push(node_error(graph, id, message));
        }
        if let Some(first) = paths.insert(path, id) {
            errors.push(node_error(graph, id, format!("parameter path \"{path}\" is already used by {first}")));
            paths.insert(path, first);
        }
    }
    let mut names: HashMap<&str, NodeId> = HashMap::new();
    for (id, name) in graph.inputs() {
        if let Some(first) = names.insert(name, id) {
            errors.push(node_error(graph, id, format!("input name \"{name}\" is already used by {first}")));
            names.insert(name, first);
        }
    }
}

fn check_outputs(graph: &Graph, errors: &mut Vec<VerifyError>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, output) in graph.outputs.iter().enumerate() {
        let error = |message: String| VerifyError {
            node: None,
            subject: format!("output `{}`", output.name),
            span: None,
            message,
        };
        if output.node.index() >= graph.len() {
            errors.push(error(format!("refers to {}, which does not exist", output.node)));
        }
        if seen.insert(&output.name, index).is_some() {
            errors.push(error("is defined more than once".to_string()));
        }
    }
}

/// `layers.0.attn.q.weight`: non-empty segments of `[A-Za-z0-9_]` joined by `.`.
pub(crate) fn is_valid_param_path(path: &str) -> bool {
    path.split('.').all(|segment| !segment.is_empty() && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

/// The type rules do plain `usize` arithmetic on sizes (element counts,
/// padded and concatenated extents), which overflows — a panic in debug
/// builds — on absurd types. The parser and the verifier call this first so
/// that such types are reported, not crashed on.
pub(crate) fn sizes_fit(op: &Op, inputs: &[&TensorType], ty: &TensorType) -> Result<(), String> {
    for t in inputs.iter().copied().chain([ty]) {
        if t.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).is_none() {
            return Err(format!("{t} has too many elements to count"));
        }
    }
    let extent = match op {
        Op::Pad { axis, lo, hi, .. } => inputs
            .first()
            .and_then(|x| x.shape.get(*axis))
            .map(|&d| d.checked_add(*lo).and_then(|n| n.checked_add(*hi)).is_some()),
        Op::Concat { axis } => {
            let total = inputs.iter().filter_map(|x| x.shape.get(*axis)).try_fold(0usize, |n, &d| n.checked_add(d));
            Some(total.is_some())
        }
        _ => None,
    };
    match extent {
        Some(false) => Err(format!("`{}` makes axis too long to count", op.name())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Node, Origin, Output};
    use crate::op::{BinaryOp, Init, UnaryOp};
    use crate::types::DType;

    fn f32t(shape: &[usize]) -> TensorType {
        TensorType::new(DType::F32, shape.to_vec())
    }

    fn span(line: u32) -> Origin {
        Origin::at(Span { file: "m.lpa".into(), line, col: 5 })
    }

    fn param(path: &str) -> Op {
        Op::Param { path: path.into(), init: Init::Const { value: 0.0 } }
    }

    /// A small well-formed graph: x, w, x@w, exp, output.
    fn good() -> Graph {
        let mut g = Graph::new("g");
        let x = g.add(Op::Input { name: "x".into() }, vec![], Some(f32t(&[2, 3])), span(1)).unwrap();
        let w = g.add(param("layers.0.w"), vec![], Some(f32t(&[3, 4])), span(2)).unwrap();
        let y = g.add(Op::MatMul, vec![x, w], None, span(3)).unwrap();
        let z = g.add(Op::Unary(UnaryOp::Exp), vec![y], None, Origin::default()).unwrap();
        g.add_output("z", z);
        g
    }

    #[test]
    fn a_good_graph_verifies() {
        assert_eq!(verify(&good()), Ok(()));
    }

    #[test]
    fn wrong_type_is_reported_with_node_and_span() {
        let mut g = good();
        g.nodes[2].ty = f32t(&[2, 5]);
        let errors = verify(&g).unwrap_err();
        // The matmul is wrong; exp is checked against the matmul's (wrong)
        // declared type and now disagrees with its own.
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].node, Some(NodeId(2)));
        let text = errors[0].to_string();
        assert!(text.starts_with("%2 (matmul) at m.lpa:3:5: `matmul` produces f32[2,4]"), "{text}");
        assert_eq!(errors[1].subject, "%3 (exp)");
        assert!(errors[1].to_string().starts_with("%3 (exp): "), "{}", errors[1]);
    }

    #[test]
    fn forward_and_self_references_are_reported() {
        let mut g = good();
        g.nodes[2].inputs = vec![NodeId(3), NodeId(2)];
        let errors = verify(&g).unwrap_err();
        let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].contains("operand 0 is %3, which is not an earlier node"), "{messages:?}");
        assert!(messages[1].contains("operand 1 is %2"), "{messages:?}");
    }

    #[test]
    fn duplicate_and_malformed_names_are_reported() {
        let mut g = good();
        let ty = f32t(&[3, 4]);
        for op in [param("layers.0.w"), param("layers..w"), Op::Input { name: "x".into() }] {
            g.push_unchecked(Node { op, inputs: vec![], ty: ty.clone(), origin: Origin::default() });
        }
        g.outputs.push(Output { name: "z".into(), node: NodeId(40) });
        let errors = verify(&g).unwrap_err();
        let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            messages,
            [
                "%4 (param): parameter path \"layers.0.w\" is already used by %1",
                "%5 (param): parameter path \"layers..w\" is not dotted identifiers like `layers.0.w`",
                "%6 (input): input name \"x\" is already used by %0",
                "output `z`: refers to %40, which does not exist",
                "output `z`: is defined more than once",
            ]
        );
    }

    #[test]
    fn every_problem_is_collected() {
        let mut g = good();
        g.nodes[3].op = Op::Binary(BinaryOp::Add);
        g.nodes[1].op = param("");
        assert_eq!(verify(&g).unwrap_err().len(), 2);
    }

    #[test]
    fn absurd_sizes_are_errors_not_panics() {
        let mut g = Graph::new("g");
        let huge = f32t(&[usize::MAX, 2]);
        g.push_unchecked(Node {
            op: Op::Input { name: "x".into() },
            inputs: vec![],
            ty: huge,
            origin: Origin::default(),
        });
        let x = g.push_unchecked(Node {
            op: Op::Input { name: "y".into() },
            inputs: vec![],
            ty: f32t(&[usize::MAX]),
            origin: Origin::default(),
        });
        let concat = Op::Concat { axis: 0 };
        g.push_unchecked(Node { op: concat, inputs: vec![x, x], ty: f32t(&[1]), origin: Origin::default() });
        let errors = verify(&g).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].message.contains("too many elements"));
        assert!(errors[1].message.contains("too long"));
    }

    #[test]
    fn param_paths() {
        assert!(is_valid_param_path("layers.3.attn.q.weight"));
        assert!(is_valid_param_path("w"));
        for bad in ["", ".w", "w.", "a..b", "a b", "a-b"] {
            assert!(!is_valid_param_path(bad), "{bad:?}");
        }
    }
}
