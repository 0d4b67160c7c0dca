//! The graph: nodes in topological order, each with an op, operands, a type and
//! an origin. A node's id is its index, so the text form's `%12` is node 12 and
//! printing is canonical without any renumbering.

use std::fmt;
use std::sync::Arc;

use crate::op::Op;
use crate::types::TensorType;
use crate::typing::result_type;

/// Index of a node in its graph. Operands always have smaller ids than their users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// A place in a source file, 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    pub file: Arc<str>,
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// Where a node came from: the source location in the user's model file (for
/// nodes built inside prelude blocks, the call site in the user's file), and
/// the passes that created or rewrote it, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Origin {
    pub span: Option<Span>,
    pub passes: Vec<String>,
}

impl Origin {
    pub fn at(span: Span) -> Self {
        Origin { span: Some(span), passes: Vec::new() }
    }

    /// The same origin with `pass` appended to its history.
    pub fn rewritten_by(&self, pass: &str) -> Self {
        let mut passes = self.passes.clone();
        if passes.last().map(String::as_str) != Some(pass) {
            passes.push(pass.to_string());
        }
        Origin { span: self.span.clone(), passes }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub ty: TensorType,
    pub origin: Origin,
}

/// A named result of the graph (`loss`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub name: String,
    pub node: NodeId,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    pub outputs: Vec<Output>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Self {
        Graph { name: name.into(), nodes: Vec::new(), outputs: Vec::new() }
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    pub fn ty(&self, id: NodeId) -> &TensorType {
        &self.nodes[id.index()].ty
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn ids(&self) -> impl DoubleEndedIterator<Item = NodeId> + ExactSizeIterator + '_ {
        (0..self.nodes.len() as u32).map(NodeId)
    }

    /// Adds a node after checking its operands exist and its types agree with
    /// the op's rules. `given` is required for ops whose result type the
    /// operands do not fix (see [`Op::needs_result_type`]).
    pub fn add(
        &mut self,
        op: Op,
        inputs: Vec<NodeId>,
        given: Option<TensorType>,
        origin: Origin,
    ) -> Result<NodeId, String> {
        for &i in &inputs {
            if i.index() >= self.nodes.len() {
                return Err(format!("operand {} does not exist yet", i));
            }
        }
        let input_types: Vec<&TensorType> = inputs.iter().map(|&i| self.ty(i)).collect();
        let ty = result_type(&op, &input_types, given.as_ref())?;
        Ok(self.push_unchecked(Node { op, inputs, ty, origin }))
    }

    /// Appends a node without checking it; the verifier catches mistakes. For
    /// passes that copy nodes they have already checked.
    pub fn push_unchecked(&mut self, node: Node) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(node);
        id
    }

    pub fn add_output(&mut self, name: impl Into<String>, node: NodeId) {
        self.outputs.push(Output { name: name.into(), node });
    }

    pub fn output(&self, name: &str) -> Option<NodeId> {
        self.outputs.iter().find(|o| o.name == name).map(|o| o.node)
    }

    /// The parameters, in node order: (id, path).
    pub fn params(&self) -> impl Iterator<Item = (NodeId, &str)> + '_ {
        self.ids().filter_map(|id| match &self.node(id).op {
            Op::Param { path, .. } => Some((id, path.as_str())),
            _ => None,
        })
    }

    /// The step inputs, in node order: (id, name).
    pub fn inputs(&self) -> impl Iterator<Item = (NodeId, &str)> + '_ {
        self.ids().filter_map(|id| match &self.node(id).op {
            Op::Input { name } => Some((id, name.as_str())),
            _ => None,
        })
    }

    /// Number of trainable scalars.
    pub fn param_count(&self) -> usize {
        self.params().map(|(id, _)| self.ty(id).numel()).sum()
    }

    /// For each node, the nodes that use it as an operand, in id order.
    pub fn users(&self) -> Vec<Vec<NodeId>> {
        let mut users = vec![Vec::new(); self.nodes.len()];
        for id in self.ids() {
            for &i in &self.node(id).inputs {
                if users[i.index()].last() != Some(&id) {
                    users[i.index()].push(id);
                }
            }
        }
        users
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{BinaryOp, Init};
    use crate::types::DType;

    #[test]
    fn add_checks_types_and_operands() {
        let mut g = Graph::new("t");
        let f = |s: &[usize]| Some(TensorType::new(DType::F32, s.to_vec()));
        let x = g.add(Op::Input { name: "x".into() }, vec![], f(&[2, 3]), Origin::default()).unwrap();
        let w = g
            .add(
                Op::Param { path: "w".into(), init: Init::Const { value: 1.0 } },
                vec![],
                f(&[3, 4]),
                Origin::default(),
            )
            .unwrap();
        let y = g.add(Op::MatMul, vec![x, w], None, Origin::default()).unwrap();
        assert_eq!(g.ty(y).shape, vec![2, 4]);
        assert!(g.add(Op::Binary(BinaryOp::Add), vec![x, w], None, Origin::default()).is_err());
        assert!(g.add(Op::Binary(BinaryOp::Add), vec![x, NodeId(99)], None, Origin::default()).is_err());
        assert_eq!(g.param_count(), 12);
        assert_eq!(g.users()[x.index()], vec![y]);
    }

    #[test]
    fn rewritten_by_appends_once() {
        let o = Origin::default().rewritten_by("lowrank").rewritten_by("lowrank").rewritten_by("cse");
        assert_eq!(o.passes, vec!["lowrank", "cse"]);
    }
}
