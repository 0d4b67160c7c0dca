//! Choosing one e-node per e-class by cost.
//!
//! # The cost of a node
//! `FLOPs + bytes moved`, as [`crate::cost`] counts them for a node run as
//! its own kernel (so views — reshape, broadcast — and leaves cost nothing),
//! plus [`NODE_CHARGE`] for every non-leaf node. The charge is far below any
//! real kernel's cost; it only breaks ties between forms that do the same
//! work in fewer nodes (`reshape(reshape(x))` versus `reshape(x)`).
//!
//! # The cost of a class
//! egg's stock extractor adds up children's costs as if the result were a
//! tree, which counts a value once per path to it: in a deep network with
//! residual connections those counts grow exponentially with depth and drown
//! the differences that matter. Here a class's cost is its node's cost plus,
//! for each operand class, that class's cost divided by the number of users
//! it has in the input graph (at least one). Shared values are so paid for
//! once in total, and every alternative form of one class pays the same share
//! of what it has in common with the others, so comparisons between forms
//! come down to what differs between them.
//!
//! # Acyclic by construction
//! Because shared costs are divided, a node can cost less than an operand,
//! and a plain fixed point could choose cycles (`x = reshape(reshape(x))`).
//! Classes are therefore settled one at a time, cheapest first (Knuth's
//! generalisation of Dijkstra's algorithm): a node becomes a candidate only
//! once all its operand classes are settled, so every choice refers to
//! classes settled before it, and the choices form a DAG.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use egg::{Id, Language};
use lpac_ir::{Graph, Node, Op, Origin, TensorType};

use super::lang::{EG, Term};
use crate::cost;

/// Added to the cost of every non-leaf node (see the module docs).
pub const NODE_CHARGE: f64 = 1.0;

/// Costs single nodes with [`crate::cost`], on a scratch graph that holds
/// the operands as inputs and the node itself.
pub struct NodeCost {
    scratch: Graph,
}

impl Default for NodeCost {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeCost {
    pub fn new() -> Self {
        NodeCost { scratch: Graph::new("cost") }
    }

    /// FLOPs + bytes of `op` on operands of the given types.
    pub fn work(&mut self, op: &Op, inputs: &[&TensorType], ty: &TensorType) -> f64 {
        if op.is_leaf() {
            return 0.0;
        }
        self.scratch.nodes.clear();
        let mut ids = Vec::with_capacity(inputs.len());
        for t in inputs {
            let node = Node {
                op: Op::Input { name: String::new() },
                inputs: vec![],
                ty: (*t).clone(),
                origin: Origin::default(),
            };
            ids.push(self.scratch.push_unchecked(node));
        }
        let node = Node { op: op.clone(), inputs: ids, ty: ty.clone(), origin: Origin::default() };
        let id = self.scratch.push_unchecked(node);
        (cost::node_flops(&self.scratch, id) + cost::node_bytes(&self.scratch, id)) as f64
    }

    /// The extraction cost of one e-node, before operand shares.
    fn node(&mut self, egraph: &EG, graph: &Graph, term: &Term, ty: &TensorType) -> f64 {
        if term.children().is_empty() {
            return 0.0;
        }
        let inputs: Vec<&TensorType> = term.children().iter().map(|&c| &egraph[c].data.ty).collect();
        self.work(&term.to_op(graph), &inputs, ty) + NODE_CHARGE
    }
}

/// FLOPs and bytes of a whole graph, by [`crate::cost`].
pub fn graph_cost(graph: &Graph) -> (u64, u64) {
    graph.ids().fold((0, 0), |(f, b), id| (f + cost::node_flops(graph, id), b + cost::node_bytes(graph, id)))
}

/// The chosen e-node of every class (canonical ids) and its class cost.
pub struct Choice {
    pub best: HashMap<Id, (Term, f64)>,
}

/// A cost ordered totally (costs are finite sums of non-negative numbers).
#[derive(Clone, Copy)]
struct Cost(f64);
impl PartialEq for Cost {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Cost {}
impl PartialOrd for Cost {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Cost {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Chooses a node for every class. `users` gives each class's number of
/// users in the input graph; `preferred` the e-node to keep on a tie (the
/// original node's own form).
pub fn choose(egraph: &EG, graph: &Graph, users: &HashMap<Id, usize>, preferred: &HashMap<Id, Term>) -> Choice {
    let mut ids: Vec<Id> = egraph.classes().map(|c| c.id).collect();
    ids.sort();
    let index: HashMap<Id, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let nodes: Vec<&[Term]> = ids.iter().map(|&id| egraph[id].nodes.as_slice()).collect();
    let share: Vec<f64> = ids.iter().map(|id| users.get(id).copied().unwrap_or(1).max(1) as f64).collect();

    // For each class, the (class, node) pairs that use it; for each node, the
    // number of distinct operand classes not yet settled.
    let mut parents: Vec<Vec<(usize, usize)>> = vec![Vec::new(); ids.len()];
    let mut pending: Vec<Vec<usize>> = Vec::with_capacity(ids.len());
    let mut ready: Vec<(usize, usize)> = Vec::new();
    for (c, ns) in nodes.iter().enumerate() {
        let mut counts = Vec::with_capacity(ns.len());
        for (k, n) in ns.iter().enumerate() {
            let mut kids: Vec<usize> = n.children().iter().map(|ch| index[&egraph.find(*ch)]).collect();
            kids.sort_unstable();
            kids.dedup();
            for &kid in &kids {
                parents[kid].push((c, k));
            }
            if kids.is_empty() {
                ready.push((c, k));
            }
            counts.push(kids.len());
        }
        pending.push(counts);
    }

    let mut pricer = NodeCost::new();
    let mut best: Vec<Option<(f64, usize)>> = vec![None; ids.len()];
    let mut settled = vec![false; ids.len()];
    let mut heap: BinaryHeap<Reverse<(Cost, usize)>> = BinaryHeap::new();

    let mut offer = |c: usize, k: usize, best: &mut Vec<Option<(f64, usize)>>, heap: &mut BinaryHeap<_>| {
        let term = &nodes[c][k];
        let ty = &egraph[ids[c]].data.ty;
        let mut cost = pricer.node(egraph, graph, term, ty);
        for ch in term.children() {
            let kid = index[&egraph.find(*ch)];
            let (kid_cost, _) = best[kid].expect("operands are settled first");
            cost += kid_cost / share[kid];
        }
        let better = match best[c] {
            None => true,
            Some((old, old_k)) => {
                cost < old || (cost == old && preferred.get(&ids[c]) == Some(term) && nodes[c][old_k] != *term)
            }
        };
        if better {
            best[c] = Some((cost, k));
            heap.push(Reverse((Cost(cost), c)));
        }
    };

    for (c, k) in ready {
        offer(c, k, &mut best, &mut heap);
    }
    while let Some(Reverse((Cost(cost), c))) = heap.pop() {
        if settled[c] || best[c].map(|b| b.0) != Some(cost) {
            continue;
        }
        settled[c] = true;
        for &(p, k) in &parents[c] {
            pending[p][k] -= 1;
            if pending[p][k] == 0 && !settled[p] {
                offer(p, k, &mut best, &mut heap);
            }
        }
    }

    let best = ids
        .iter()
        .enumerate()
        .filter_map(|(c, &id)| best[c].map(|(cost, k)| (id, (nodes[c][k].clone(), cost))))
        .collect();
    Choice { best }
}
