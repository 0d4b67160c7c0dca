//! `attention`: scaled dot-product attention written with primitives
//! becomes one [`Op::Attention`] node.
//!
//! The language writes attention as the prelude's `causal_attention` does:
//!
//! ```text
//! s = q @ transpose(k)            matmul %q, (permute %k perm=[..,-1,-2])
//! x = s * scale                   mul %s, (broadcast const)       (optional)
//! x = where(iota0 >= iota1, x, -inf)                               (causal)
//! p = softmax(x)                  exp(x - max) / sum(exp(x - max))
//! y = p @ v
//! ```
//!
//! As primitives, a training step keeps `p` — `tq × tk` per head — for the
//! backward pass, and every step streams it through memory several times.
//! As one op, backends compute it a tile at a time with an online softmax
//! and recompute the tiles in the backward pass (whose autodiff rule is
//! [`Op::AttentionGrad`]), so the scores never exist in memory whole.
//!
//! The pass matches that exact shape (with the softmax's max subtraction,
//! which the op also performs) and only where none of the intermediate
//! values — scores, probabilities — is used by anything else or is an
//! output: replacing a site whose probabilities are also returned would
//! compute them twice. Run it before `autodiff`.

use lpac_ir::{BinaryOp, Graph, Node, NodeId, Op, ReduceOp, UnaryOp};

use crate::pass::{GraphCopier, Pass, PassError, PassOutcome};

pub struct FuseAttention;

impl Pass for FuseAttention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn summary(&self) -> &'static str {
        "softmax(q·kᵀ·scale [causal mask])·v written with primitives -> one `attention` op (run before autodiff)"
    }

    fn preserves_meaning(&self) -> bool {
        true
    }

    fn run(&self, graph: &Graph) -> Result<PassOutcome, PassError> {
        let sites = find_sites(graph);
        if sites.is_empty() {
            return Ok(PassOutcome::unchanged(graph));
        }
        let mut skip = vec![false; graph.len()];
        let mut replace = vec![None; graph.len()];
        for site in &sites {
            for &n in &site.chain {
                skip[n.index()] = true;
            }
            replace[site.mix.index()] = Some(site);
        }
        let mut copier = GraphCopier::new(graph);
        for id in graph.ids() {
            if let Some(site) = replace[id.index()] {
                let mix = graph.node(id);
                let node = Node {
                    op: Op::Attention { scale: site.scale, causal: site.causal },
                    inputs: vec![copier.mapped(site.q), copier.mapped(site.k), copier.mapped(site.v)],
                    ty: mix.ty.clone(),
                    origin: mix.origin.rewritten_by("attention"),
                };
                let new = copier.push(node, Some(id));
                copier.map[id.index()] = Some(new);
            } else if !skip[id.index()] {
                copier.copy(id);
            }
        }
        let mut outcome = copier.finish();
        outcome.report = Some(format!("{} attention site(s) fused", sites.len()));
        Ok(outcome)
    }
}

/// One matched site.
#[derive(Debug)]
pub struct Site {
    /// `p @ v`, replaced by the attention node.
    pub mix: NodeId,
    pub q: NodeId,
    /// `k` before its transpose: `[.., tk, d]`.
    pub k: NodeId,
    pub v: NodeId,
    pub scale: f64,
    pub causal: bool,
    /// The nodes between the operands and `mix` (dropped).
    chain: Vec<NodeId>,
}

/// Every site of the pattern in the module docs.
pub fn find_sites(graph: &Graph) -> Vec<Site> {
    let users = graph.users();
    let outputs: Vec<NodeId> = graph.outputs.iter().map(|o| o.node).collect();
    graph
        .ids()
        .filter_map(|id| match_site(graph, id))
        .filter(|site| {
            // Every chain node is used only inside the chain (or by mix).
            site.chain.iter().all(|n| {
                !outputs.contains(n) && users[n.index()].iter().all(|u| *u == site.mix || site.chain.contains(u))
            })
        })
        .collect()
}

struct Matcher<'g> {
    graph: &'g Graph,
    chain: Vec<NodeId>,
}

impl Matcher<'_> {
    fn node(&self, id: NodeId) -> &Node {
        self.graph.node(id)
    }

    /// `id` if its op satisfies `f`, recorded as part of the chain.
    fn take(&mut self, id: NodeId, f: impl Fn(&Op) -> bool) -> Option<&[NodeId]> {
        if !f(&self.node(id).op) {
            return None;
        }
        self.chain.push(id);
        Some(&self.graph.node(id).inputs)
    }

    /// `broadcast(reshape?(reduce_<op>(x, axes=[last])))` back to `x`'s
    /// shape: the row statistic of `x`.
    fn row_stat(&mut self, id: NodeId, op: ReduceOp, x: NodeId) -> Option<()> {
        let rank = self.node(x).ty.rank();
        let inner = self.take(id, |o| matches!(o, Op::Broadcast { .. }))?[0];
        let reduced = match self.node(inner).op {
            Op::Reshape => self.take(inner, |_| true)?[0],
            _ => inner,
        };
        let operand =
            self.take(reduced, |o| matches!(o, Op::Reduce { op: r, axes } if *r == op && *axes == [rank - 1]))?[0];
        (operand == x).then_some(())
    }

    /// A splat constant (a `const`, possibly broadcast): its value.
    fn constant(&mut self, id: NodeId) -> Option<f64> {
        match self.node(id).op {
            Op::Const { value } => {
                self.chain.push(id);
                Some(value)
            }
            Op::Broadcast { .. } => {
                let inner = self.take(id, |_| true)?[0];
                self.constant(inner)
            }
            _ => None,
        }
    }

    /// `broadcast(iota axis 0 >= iota axis 1)` over `[tq, tk]`.
    fn causal_mask(&mut self, id: NodeId) -> Option<()> {
        let inner = self.take(id, |o| matches!(o, Op::Broadcast { .. }))?[0];
        let rank = self.node(id).ty.rank();
        if !matches!(&self.node(id).op, Op::Broadcast { dims } if *dims == [rank - 2, rank - 1]) {
            return None;
        }
        let [a, b] = *self.take(inner, |o| matches!(o, Op::Binary(BinaryOp::Ge)))? else { return None };
        self.take(a, |o| matches!(o, Op::Iota { axis: 0 }))?;
        self.take(b, |o| matches!(o, Op::Iota { axis: 1 }))?;
        Some(())
    }
}

fn match_site(graph: &Graph, mix: NodeId) -> Option<Site> {
    let node = graph.node(mix);
    if !matches!(node.op, Op::MatMul) {
        return None;
    }
    let (p, v) = (node.inputs[0], node.inputs[1]);
    let rank = graph.ty(p).rank();
    if graph.ty(v).rank() != rank || rank < 2 {
        return None;
    }
    let mut m = Matcher { graph, chain: Vec::new() };
    // p = e / broadcast(sum(e))
    let [e, sum_b] = *m.take(p, |o| matches!(o, Op::Binary(BinaryOp::Div)))? else { return None };
    m.row_stat(sum_b, ReduceOp::Sum, e)?;
    // e = exp(x - broadcast(max(x)))
    let z = m.take(e, |o| matches!(o, Op::Unary(UnaryOp::Exp)))?[0];
    let [x, max_b] = *m.take(z, |o| matches!(o, Op::Binary(BinaryOp::Sub)))? else { return None };
    m.row_stat(max_b, ReduceOp::Max, x)?;
    // x = where(mask, scaled, -inf), or scaled
    let (scaled, causal) = match graph.node(x).op {
        Op::Select => {
            let [mask, scaled, neg] = *m.take(x, |_| true)? else { return None };
            m.causal_mask(mask)?;
            (m.constant(neg)? == f64::NEG_INFINITY).then_some(())?;
            (scaled, true)
        }
        _ => (x, false),
    };
    // scaled = s * c (either order), or s
    let (s, scale) = match graph.node(scaled).op {
        Op::Binary(BinaryOp::Mul) => {
            let [a, b] = *m.take(scaled, |_| true)? else { return None };
            let mut probe = Matcher { graph, chain: Vec::new() };
            match probe.constant(b) {
                Some(c) => {
                    m.chain.extend(probe.chain);
                    (a, c)
                }
                None => {
                    let c = m.constant(a)?;
                    (b, c)
                }
            }
        }
        _ => (scaled, 1.0),
    };
    // s = q @ permute(k, swap last two)
    let [q, kt] = *m.take(s, |o| matches!(o, Op::MatMul))? else { return None };
    let mut swap: Vec<usize> = (0..rank).collect();
    swap.swap(rank - 2, rank - 1);
    let k = m.take(kt, |o| matches!(o, Op::Permute { perm } if *perm == swap))?[0];
    // The attention op's own type rules decide the rest (shapes, dtypes).
    let ty =
        lpac_ir::typing::result_type(&Op::Attention { scale, causal }, &[graph.ty(q), graph.ty(k), graph.ty(v)], None)
            .ok()?;
    if ty != node.ty || !scale.is_finite() {
        return None;
    }
    m.chain.sort();
    m.chain.dedup();
    Some(Site { mix, q, k, v, scale, causal, chain: m.chain })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Graph {
        let sets = ["layers=1", "d=32", "heads=2", "ffn=64", "seq=8", "batch=2"];
        let overrides: Vec<_> = sets.iter().map(|s| lpac_frontend::Override::parse(s).unwrap()).collect();
        lpac_frontend::compile_file(std::path::Path::new("../models/tiny.lpa"), &overrides).unwrap().graph
    }

    #[test]
    fn the_prelude_attention_becomes_one_op() {
        let g = tiny();
        let sites = find_sites(&g);
        assert_eq!(sites.len(), 1);
        assert!(sites[0].causal);
        assert_eq!(sites[0].scale, 0.25);
        let out = FuseAttention.run(&g).unwrap().graph;
        let count = |g: &Graph, f: &dyn Fn(&Op) -> bool| g.nodes.iter().filter(|n| f(&n.op)).count();
        assert_eq!(count(&out, &|o| matches!(o, Op::Attention { causal: true, .. })), 1);
        let maxes = |g: &Graph| count(g, &|o| matches!(o, Op::Reduce { op: ReduceOp::Max, .. }));
        assert_eq!(maxes(&out), maxes(&g) - 1);
        lpac_ir::verify(&out).unwrap();
    }
}
