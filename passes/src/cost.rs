//! The cost model: floating-point operations and bytes moved, per node and
//! per graph. Passes use it to choose between equivalent forms (matmul
//! association, merged projections); `lpac stats` reports it.
//!
//! Counting rules (forward): a matmul `[.., m, k] x [k, n]` costs `2·m·k·n` per
//! batch element; every elementwise op and every reduction costs one FLOP per
//! element it reads or writes (exp and tanh count as one, as most FLOP
//! counters do); data movement (reshape, permute, broadcast, slice, concat,
//! pad, gather, cast) and leaves cost nothing.

use lpac_ir::{Graph, NodeId, Op};

/// Forward FLOPs of one node.
pub fn node_flops(graph: &Graph, id: NodeId) -> u64 {
    let node = graph.node(id);
    match &node.op {
        Op::MatMul => {
            let a = graph.ty(node.inputs[0]);
            let k = a.shape[a.rank() - 1] as u64;
            2 * k * node.ty.numel() as u64
        }
        Op::Unary(_) | Op::Binary(_) | Op::Select => node.ty.numel() as u64,
        Op::Reduce { .. } => graph.ty(node.inputs[0]).numel() as u64,
        Op::ScatterAdd => graph.ty(node.inputs[1]).numel() as u64,
        _ => 0,
    }
}

/// Total forward FLOPs of the graph.
pub fn forward_flops(graph: &Graph) -> u64 {
    graph.ids().map(|id| node_flops(graph, id)).sum()
}

/// Forward FLOPs of the matmuls alone (the figure papers usually quote).
pub fn matmul_flops(graph: &Graph) -> u64 {
    graph.ids().filter(|&id| matches!(graph.node(id).op, Op::MatMul)).map(|id| node_flops(graph, id)).sum()
}

/// Which nodes depend on a parameter, and so have a gradient in training.
pub fn needs_grad(graph: &Graph) -> Vec<bool> {
    let mut needs = vec![false; graph.len()];
    for id in graph.ids() {
        let node = graph.node(id);
        needs[id.index()] = matches!(node.op, Op::Param { .. }) || node.inputs.iter().any(|i| needs[i.index()]);
    }
    needs
}

/// FLOPs of the backward pass, counted from each op's adjoint: a matmul costs
/// one matmul of the same size for each operand that needs a gradient;
/// elementwise ops two FLOPs per element for each such operand (the local
/// derivative and the product with the incoming gradient); reductions one per
/// input element; gather's adjoint (scatter-add) one per gathered element.
pub fn backward_flops(graph: &Graph) -> u64 {
    let needs = needs_grad(graph);
    graph
        .ids()
        .filter(|id| needs[id.index()])
        .map(|id| {
            let node = graph.node(id);
            let wanting = node.inputs.iter().filter(|i| needs[i.index()]).count() as u64;
            match &node.op {
                Op::MatMul => node_flops(graph, id) * wanting,
                Op::Unary(_) | Op::Binary(_) | Op::Select => 2 * node.ty.numel() as u64 * wanting,
                Op::Reduce { .. } => graph.ty(node.inputs[0]).numel() as u64,
                Op::Gather => node.ty.numel() as u64,
                _ => 0,
            }
        })
        .sum()
}

/// Bytes a node reads and writes if it runs as its own kernel.
pub fn node_bytes(graph: &Graph, id: NodeId) -> u64 {
    let node = graph.node(id);
    if node.op.is_leaf() || is_view(&node.op) {
        return 0;
    }
    let read: usize = node.inputs.iter().map(|&i| graph.ty(i).size_bytes()).sum();
    (read + node.ty.size_bytes()) as u64
}

/// Ops that only re-describe data and need not copy it.
pub fn is_view(op: &Op) -> bool {
    matches!(op, Op::Reshape | Op::Broadcast { .. })
}

/// Bytes of every forward intermediate if each is materialised once and kept
/// for the backward pass: all nodes except parameters, inputs, constants,
/// iotas and views (reshape, broadcast). This is the no-reuse upper bound that
/// memory planning improves on.
pub fn activation_bytes(graph: &Graph) -> u64 {
    graph
        .ids()
        .map(|id| graph.node(id))
        .filter(|n| !n.op.is_leaf() || matches!(n.op, Op::RandomUniform { .. }))
        .filter(|n| !is_view(&n.op))
        .map(|n| n.ty.size_bytes() as u64)
        .sum()
}
