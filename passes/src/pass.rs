//! What a pass is: a named function from a graph to a graph, with a flag that
//! says whether it must preserve meaning, and options set when it is created.
//!
//! A pass returns a [`PassOutcome`]: the new graph, where each new node came
//! from (so provenance can be traced back through a whole pipeline), optional
//! explanations of individual nodes, and an optional report.

use std::collections::BTreeMap;
use std::fmt;

use lpac_ir::{Graph, Node, NodeId};

/// One option of a pass, for `lpac passes` and `name{key=value}` syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassOption {
    pub name: &'static str,
    pub help: &'static str,
    pub default: &'static str,
}

pub trait Pass {
    /// The name used in pipelines (`simplify`).
    fn name(&self) -> &'static str;

    /// One line: what the pass does.
    fn summary(&self) -> &'static str;

    /// True when the pass must not change what the graph computes. The pass
    /// manager's `--check-each` holds these passes to it numerically.
    fn preserves_meaning(&self) -> bool;

    /// Runs the pass.
    fn run(&self, graph: &Graph) -> Result<PassOutcome, PassError>;
}

/// The result of a pass.
#[derive(Clone, Debug)]
pub struct PassOutcome {
    pub graph: Graph,
    /// For each node of the new graph, the node of the input graph it stands
    /// for (the same value, or the value it replaces), if any.
    pub source: Vec<Option<NodeId>>,
    /// How particular new nodes came about, in words (rewrite chains).
    pub explanations: BTreeMap<NodeId, String>,
    /// Statistics to show after the pass (e-graph sizes, rules that fired).
    pub report: Option<String>,
}

impl PassOutcome {
    /// The input unchanged.
    pub fn unchanged(graph: &Graph) -> Self {
        PassOutcome {
            graph: graph.clone(),
            source: graph.ids().map(Some).collect(),
            explanations: BTreeMap::new(),
            report: None,
        }
    }
}

/// Why a pass could not run (bad options, a target that matches nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassError {
    pub pass: String,
    pub message: String,
}

impl PassError {
    pub fn new(pass: &str, message: impl Into<String>) -> Self {
        PassError { pass: pass.to_string(), message: message.into() }
    }
}

impl fmt::Display for PassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pass `{}`: {}", self.pass, self.message)
    }
}

impl std::error::Error for PassError {}

/// Builds a new graph from pieces of an old one, keeping track of where each
/// new node came from. Most passes are "copy everything, changing a few
/// nodes"; this is that copy.
pub struct GraphCopier<'g> {
    pub old: &'g Graph,
    pub new: Graph,
    /// For each old node, the new node that now holds its value (once copied).
    pub map: Vec<Option<NodeId>>,
    /// For each new node, the old node it stands for.
    pub source: Vec<Option<NodeId>>,
}

impl<'g> GraphCopier<'g> {
    pub fn new(old: &'g Graph) -> Self {
        GraphCopier { old, new: Graph::new(old.name.clone()), map: vec![None; old.len()], source: Vec::new() }
    }

    /// Adds a node to the new graph, recording what it stands for.
    pub fn push(&mut self, node: Node, source: Option<NodeId>) -> NodeId {
        let id = self.new.push_unchecked(node);
        self.source.push(source);
        id
    }

    /// Copies old node `id` with its operands already mapped (they must have
    /// been copied before: copy in id order).
    pub fn copy(&mut self, id: NodeId) -> NodeId {
        let mut node = self.old.node(id).clone();
        node.inputs = node.inputs.iter().map(|i| self.mapped(*i)).collect();
        let new_id = self.push(node, Some(id));
        self.map[id.index()] = Some(new_id);
        new_id
    }

    /// The new node holding old node `id`'s value.
    pub fn mapped(&self, id: NodeId) -> NodeId {
        self.map[id.index()].unwrap_or_else(|| panic!("{id} used before it was copied"))
    }

    /// Finishes: outputs are mapped to their new nodes.
    pub fn finish(mut self) -> PassOutcome {
        for out in &self.old.outputs {
            let node = self.mapped(out.node);
            self.new.add_output(out.name.clone(), node);
        }
        PassOutcome { graph: self.new, source: self.source, explanations: BTreeMap::new(), report: None }
    }
}
