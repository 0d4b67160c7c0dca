//! Writing a list of nodes out as a graph in a deterministic topological
//! order: among the nodes whose operands are all written, the one with the
//! smallest key goes next. Keys are original node ids (new nodes take the
//! key of the node they replace or follow), so the output stays close to the
//! input's order and diffs stay readable.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use lpac_ir::{Graph, Node, NodeId, Op, Origin, TensorType};

/// One node to write. `inputs` index into the list of specs.
#[derive(Clone, Debug)]
pub struct Spec {
    pub op: Op,
    pub inputs: Vec<usize>,
    pub ty: TensorType,
    pub origin: Origin,
    /// The node of the pass's input graph this node stands for.
    pub source: Option<NodeId>,
    /// Order among ready nodes: smaller first, then by position in the list.
    pub key: (u32, u32),
}

/// The written graph, where each spec went, and each new node's source.
pub struct Emitted {
    pub graph: Graph,
    pub placed: Vec<NodeId>,
    pub source: Vec<Option<NodeId>>,
}

/// Writes `specs` (which must form a DAG) and the outputs (spec indices).
pub fn emit(name: &str, specs: &[Spec], outputs: &[(String, usize)]) -> Result<Emitted, String> {
    let n = specs.len();
    let mut waiting: Vec<usize> = specs.iter().map(|s| s.inputs.len()).collect();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, s) in specs.iter().enumerate() {
        for &j in &s.inputs {
            if j >= n {
                return Err(format!("node {i} refers to missing node {j}"));
            }
            users[j].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<((u32, u32), usize)>> =
        (0..n).filter(|&i| waiting[i] == 0).map(|i| Reverse((specs[i].key, i))).collect();
    let mut graph = Graph::new(name);
    let mut placed = vec![NodeId(u32::MAX); n];
    let mut source = Vec::with_capacity(n);
    while let Some(Reverse((_, i))) = ready.pop() {
        let s = &specs[i];
        let inputs = s.inputs.iter().map(|&j| placed[j]).collect();
        placed[i] = graph.push_unchecked(Node { op: s.op.clone(), inputs, ty: s.ty.clone(), origin: s.origin.clone() });
        source.push(s.source);
        for &u in &users[i] {
            waiting[u] -= 1;
            if waiting[u] == 0 {
                ready.push(Reverse((specs[u].key, u)));
            }
        }
    }
    if graph.len() != n {
        return Err(format!("{} node(s) depend on themselves", n - graph.len()));
    }
    for (name, i) in outputs {
        graph.add_output(name.clone(), placed[*i]);
    }
    Ok(Emitted { graph, placed, source })
}
