//! `merge-shared-input-projections`: matmuls `x·A1, …, x·Ak` with one left
//! operand `x` (an activation) and parameter-derived plain-matrix right
//! operands become slices of one `x·concat(A1, …, Ak)` along the last axis.
//!
//! This is a rewrite of several nodes at once, which e-matching does not
//! express well, so it runs on the graph that extraction produced (after the
//! e-graph has settled, for example, whether the low-rank `x·A·B` stays
//! factored), and is reported among the rules.
//!
//! # When it pays
//! By [`crate::cost`], per matmul `x[M,d]·Ai[d,ni]`: `2·M·d·ni` FLOPs and
//! `(M·d + d·ni + M·ni)` elements moved. Merged: the same FLOPs; the merged
//! matmul moves `M·d + d·N + M·N` (N = Σ ni) — x is read once instead of k
//! times — but the concat moves `2·d·N` (it is recomputed every step: the
//! parameters change) and each slice moves its whole operand plus its result,
//! `M·N + M·ni`, as the cost model charges a slice. So merging saves
//! `(k−1)·M·d` and costs about `2·d·N + k·M·N + M·N` elements: it pays for
//! narrow right operands (low-rank factors, N well below d) and not for
//! square projections. The decision compares the two costs exactly, node by
//! node with [`crate::cost`], for the prefix (by width, narrowest first) of
//! the group that saves most; groups where nothing saves are left alone.

use lpac_ir::{Graph, NodeId, Op};

use super::emit::{Spec, emit};
use super::extract::{NODE_CHARGE, NodeCost};

pub const RULE: &str = "merge-shared-input-projections";

/// The graph after merging, where its nodes came from (nodes of the input
/// graph), how many groups were merged, and a note for each new node.
pub struct Merged {
    pub graph: Graph,
    pub source: Vec<Option<NodeId>>,
    /// For each node of the input graph, the node that now holds its value.
    pub placed: Vec<NodeId>,
    pub groups: usize,
    pub notes: Vec<(NodeId, String)>,
}

/// One group to merge: the shared operand and the matmuls, in node order.
struct Group {
    x: NodeId,
    members: Vec<NodeId>,
}

/// Merges every group that pays; `None` when none does. `name` says how
/// to call a node of `graph` in notes (the pass names the node of its own
/// input graph that it stands for).
pub fn merge_projections(graph: &Graph, name: &dyn Fn(NodeId) -> String) -> Result<Option<Merged>, String> {
    let groups = find_groups(graph);
    if groups.is_empty() {
        return Ok(None);
    }
    rewrite(graph, &groups, name).map(Some)
}

fn find_groups(graph: &Graph) -> Vec<Group> {
    let mut data = vec![false; graph.len()];
    for id in graph.ids() {
        let node = graph.node(id);
        data[id.index()] = matches!(node.op, Op::Input { .. }) || node.inputs.iter().any(|i| data[i.index()]);
    }
    let mut by_x: Vec<Vec<NodeId>> = vec![Vec::new(); graph.len()];
    for id in graph.ids() {
        let node = graph.node(id);
        if let (Op::MatMul, [x, w]) = (&node.op, node.inputs.as_slice())
            && data[x.index()]
            && !data[w.index()]
            && graph.ty(*w).rank() == 2
            && !by_x[x.index()].iter().any(|m| graph.node(*m).inputs[1] == *w)
        {
            by_x[x.index()].push(id);
        }
    }
    let mut pricer = NodeCost::new();
    let mut groups = Vec::new();
    for x in graph.ids() {
        let candidates = &by_x[x.index()];
        if candidates.len() < 2 {
            continue;
        }
        let mut by_width = candidates.clone();
        by_width.sort_by_key(|m| (graph.ty(graph.node(*m).inputs[1]).shape[1], *m));
        let mut best: Option<(f64, usize)> = None;
        for k in 2..=by_width.len() {
            let saving = saving(graph, x, &by_width[..k], &mut pricer);
            if saving > 0.0 && best.is_none_or(|(s, _)| saving > s) {
                best = Some((saving, k));
            }
        }
        if let Some((_, k)) = best {
            let mut members = by_width[..k].to_vec();
            members.sort();
            groups.push(Group { x, members });
        }
    }
    groups
}

/// Cost of the separate matmuls minus the cost of the merged form.
fn saving(graph: &Graph, x: NodeId, members: &[NodeId], pricer: &mut NodeCost) -> f64 {
    let xt = graph.ty(x);
    let separate: f64 = members
        .iter()
        .map(|&m| {
            let node = graph.node(m);
            pricer.work(&node.op, &[xt, graph.ty(node.inputs[1])], &node.ty) + NODE_CHARGE
        })
        .sum();
    let (concat, matmul, slices) = merged_ops(graph, x, members);
    let weights: Vec<_> = members.iter().map(|&m| graph.ty(graph.node(m).inputs[1])).collect();
    let mut merged = pricer.work(&concat.0, &weights, &concat.1) + NODE_CHARGE;
    merged += pricer.work(&Op::MatMul, &[xt, &concat.1], &matmul) + NODE_CHARGE;
    for (op, ty) in &slices {
        merged += pricer.work(op, &[&matmul], ty) + NODE_CHARGE;
    }
    separate - merged
}

/// The concat (op, type), the merged matmul's type, and the slices.
#[allow(clippy::type_complexity)]
fn merged_ops(
    graph: &Graph,
    x: NodeId,
    members: &[NodeId],
) -> ((Op, lpac_ir::TensorType), lpac_ir::TensorType, Vec<(Op, lpac_ir::TensorType)>) {
    let widths: Vec<usize> = members.iter().map(|&m| graph.ty(graph.node(m).inputs[1]).shape[1]).collect();
    let total: usize = widths.iter().sum();
    let w0 = graph.ty(graph.node(members[0]).inputs[1]);
    let concat_ty = w0.with_shape(vec![w0.shape[0], total]);
    let xt = graph.ty(x);
    let mut out_shape = xt.shape.clone();
    let last = out_shape.len() - 1;
    out_shape[last] = total;
    let matmul_ty = xt.with_shape(out_shape);
    let mut start = 0;
    let slices = members
        .iter()
        .zip(&widths)
        .map(|(&m, &w)| {
            let op = Op::Slice { axis: last, start, end: start + w };
            start += w;
            (op, graph.ty(m).clone())
        })
        .collect();
    ((Op::Concat { axis: 1 }, concat_ty), matmul_ty, slices)
}

fn rewrite(graph: &Graph, groups: &[Group], name: &dyn Fn(NodeId) -> String) -> Result<Merged, String> {
    let n = graph.len();
    let mut specs: Vec<Spec> = graph
        .ids()
        .map(|id| {
            let node = graph.node(id);
            Spec {
                op: node.op.clone(),
                inputs: node.inputs.iter().map(|i| i.index()).collect(),
                ty: node.ty.clone(),
                origin: node.origin.clone(),
                source: Some(id),
                key: (id.0, 0),
            }
        })
        .collect();
    let mut notes: Vec<(usize, String)> = Vec::new();
    for g in groups {
        let first = g.members[0];
        let names: Vec<String> = g.members.iter().map(|&m| name(m)).collect();
        let note = format!("{RULE}: the matmuls {} read {} once", names.join(", "), name(g.x));
        let ((concat_op, concat_ty), matmul_ty, slices) = merged_ops(graph, g.x, &g.members);
        let origin = graph.node(first).origin.rewritten_by("simplify");
        let concat = specs.len();
        specs.push(Spec {
            op: concat_op,
            inputs: g.members.iter().map(|&m| graph.node(m).inputs[1].index()).collect(),
            ty: concat_ty,
            origin: origin.clone(),
            source: Some(first),
            key: (first.0, 0),
        });
        let matmul = specs.len();
        specs.push(Spec {
            op: Op::MatMul,
            inputs: vec![g.x.index(), concat],
            ty: matmul_ty,
            origin,
            source: Some(first),
            key: (first.0, 0),
        });
        notes.push((concat, note.clone()));
        notes.push((matmul, note.clone()));
        for (&m, (op, ty)) in g.members.iter().zip(slices) {
            let spec = &mut specs[m.index()];
            spec.op = op;
            spec.ty = ty;
            spec.inputs = vec![matmul];
            spec.origin = graph.node(m).origin.rewritten_by("simplify");
            notes.push((m.index(), note.clone()));
        }
    }
    let outputs: Vec<(String, usize)> = graph.outputs.iter().map(|o| (o.name.clone(), o.node.index())).collect();
    let emitted = emit(&graph.name, &specs, &outputs)?;
    let notes = notes.into_iter().map(|(i, s)| (emitted.placed[i], s)).collect();
    Ok(Merged {
        graph: emitted.graph,
        source: emitted.source,
        placed: emitted.placed[..n].to_vec(),
        groups: groups.len(),
        notes,
    })
}
