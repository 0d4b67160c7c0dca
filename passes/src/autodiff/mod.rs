//! `autodiff`: reverse-mode automatic differentiation as a graph-to-graph pass.
//!
//! The input is a forward graph whose **first output** is a float scalar (the
//! frontend's `loss`). The output is the same graph — every forward node copied
//! first, in the same order and under the same id — followed by the backward
//! nodes. Its outputs are the original outputs, unchanged, then one output
//! `grad:<path>` per parameter, in parameter (node) order, holding
//! ∂(first output)/∂(parameter) with the parameter's type. So the pass
//! preserves meaning (the existing outputs are untouched) and never adds
//! parameters.
//!
//! # How
//! 1. **Active nodes** ([`active_nodes`]). A node gets an adjoint only if it
//!    is float-typed, depends on a parameter ([`crate::cost::needs_grad`]),
//!    and both that dependence and its path to the loss run along edges that
//!    carry a gradient: not a `select` condition, not `gather` or
//!    `scatter_add` indices, not through comparisons, logical ops, `not`, or
//!    any integer or bool value (those never get adjoints).
//! 2. **Seed.** The loss's adjoint is `const 1.0`.
//! 3. **Reverse sweep.** Nodes are visited from the loss down to `%0`. The
//!    gradient contributions an active node received from its users are summed
//!    with `add`, left to right in the order they arrived (its users in
//!    decreasing id order); then the node's adjoint rule ([`rules`], one
//!    function per op, each stating its math) turns that sum into a
//!    contribution for every active operand.
//! 4. **Outputs.** The summed adjoint of each parameter is its gradient. A
//!    parameter that does not influence the loss (unused, or used only through
//!    non-differentiable paths) gets a zero gradient: `const 0.0` broadcast to
//!    its shape.
//!
//! # Documented choices (where the derivative is not defined)
//! - `max`/`min`: the gradient goes to the operand that was selected; at a tie
//!   it goes entirely to the **first** operand (`a ≥ b` for max, `a ≤ b` for
//!   min). PyTorch's `torch.maximum`/`minimum` and JAX's `lax.max`/`min`
//!   split it evenly at ties instead. With `relu = max(x, 0)` this makes the
//!   derivative at exactly `x = 0` one, where PyTorch's `relu` says zero.
//! - `reduce_max`: every position equal to the maximum gets the full gradient.
//!   PyTorch's `amax`/`amin` instead divide it evenly among the tied positions
//!   (and `max(dim)` with indices gives it to the one index it returns). With
//!   no ties (the case that matters) all agree.
//! - `abs`: `g·sign(x)`, zero at `x = 0` (as PyTorch).
//! - `pow` `y = aᵇ`: for the base `g·b·a^(b−1)`, and zero where `b = 0` (as
//!   PyTorch, so `0⁰` does not give `0·∞ = NaN`); for the exponent
//!   `g·y·ln a` where `a > 0` and **zero where `a ≤ 0`** (PyTorch gives NaN
//!   for `a < 0`, zero for `a = 0`): aᵇ is not differentiable in `b` there.
//! - `cast` float→float: the gradient is cast back to the operand's dtype.
//!
//! # Provenance
//! `PassOutcome::source` maps forward nodes to themselves and each backward
//! node to the forward node whose adjoint rule produced it (the sums of
//! contributions map to the node whose adjoint they sum; the seed to the loss;
//! a zero gradient to its parameter). Backward nodes get that forward node's
//! origin with `autodiff` appended, so `lpac explain` points a gradient node
//! at the source line of the forward computation it differentiates.

pub mod rules;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use lpac_ir::{Graph, Node, NodeId, Op, Origin, TensorType};

use crate::cost::needs_grad;
use crate::pass::{Pass, PassError, PassOutcome};

/// The prefix of gradient outputs: `grad:layers.0.attn.q.weight`.
pub const GRAD_PREFIX: &str = "grad:";

/// The name of the output holding the gradient of the parameter at `path`.
pub fn grad_name(path: &str) -> String {
    format!("{GRAD_PREFIX}{path}")
}

/// The `autodiff` pass. No options.
pub struct Autodiff;

impl Pass for Autodiff {
    fn name(&self) -> &'static str {
        "autodiff"
    }

    fn summary(&self) -> &'static str {
        "reverse-mode autodiff: adds outputs grad:<path>, d(first output)/d(param) for every parameter"
    }

    fn preserves_meaning(&self) -> bool {
        true
    }

    fn run(&self, graph: &Graph) -> Result<PassOutcome, PassError> {
        differentiate(graph).map_err(|m| PassError::new("autodiff", m))
    }
}

/// For each node, whether it gets an adjoint when differentiating `loss`: it
/// is float-typed, depends on a parameter *differentiably* — through float
/// operands along edges that carry a gradient ([`rules::carries`]); this is
/// [`needs_grad`] without the paths through integers, bools and indices — and
/// reaches `loss` along such edges.
pub fn active_nodes(graph: &Graph, loss: NodeId) -> Vec<bool> {
    let needs = needs_grad(graph);
    let float = |id: NodeId| graph.ty(id).dtype.is_float();
    let mut depends = vec![false; graph.len()];
    for id in graph.ids() {
        let node = graph.node(id);
        depends[id.index()] = needs[id.index()]
            && float(id)
            && (matches!(node.op, Op::Param { .. })
                || node.inputs.iter().enumerate().any(|(k, i)| depends[i.index()] && rules::carries(&node.op, k)));
    }
    let mut active = vec![false; graph.len()];
    active[loss.index()] = depends[loss.index()];
    for id in (0..=loss.0).rev().map(NodeId) {
        if !active[id.index()] {
            continue;
        }
        let node = graph.node(id);
        for (k, &operand) in node.inputs.iter().enumerate() {
            if depends[operand.index()] && rules::carries(&node.op, k) {
                active[operand.index()] = true;
            }
        }
    }
    active
}

/// Builds backward nodes after the copied forward graph, recording for each
/// the forward node whose rule made it and giving it that node's origin with
/// `autodiff` appended.
pub struct Emitter {
    graph: Graph,
    source: Vec<Option<NodeId>>,
    site: NodeId,
    origin: Origin,
}

impl Emitter {
    fn new(forward: &Graph) -> Emitter {
        Emitter {
            graph: forward.clone(),
            source: forward.ids().map(Some).collect(),
            site: NodeId(0),
            origin: Origin::default(),
        }
    }

    /// Nodes emitted from now on belong to the rule of forward node `id`.
    fn at(&mut self, id: NodeId) {
        self.site = id;
        self.origin = self.graph.node(id).origin.rewritten_by("autodiff");
    }

    /// The type of a node (forward nodes keep their ids).
    pub fn ty(&self, id: NodeId) -> &TensorType {
        self.graph.ty(id)
    }

    /// Appends a node, checked by the IR's type rules: a rule that builds an
    /// ill-typed node is a bug in this pass, reported rather than emitted.
    pub fn push(&mut self, op: Op, inputs: Vec<NodeId>, given: Option<TensorType>) -> Result<NodeId, String> {
        let types: Vec<&TensorType> = inputs.iter().map(|&i| self.graph.ty(i)).collect();
        let ty = lpac_ir::typing::result_type(&op, &types, given.as_ref()).map_err(|e| {
            let at = self.graph.node(self.site);
            format!(
                "internal error: the adjoint rule of {} ({}) built an ill-typed `{}`: {e}",
                self.site,
                at.op.name(),
                op.name()
            )
        })?;
        let id = self.graph.push_unchecked(Node { op, inputs, ty, origin: self.origin.clone() });
        self.source.push(Some(self.site));
        Ok(id)
    }
}

fn differentiate(graph: &Graph) -> Result<PassOutcome, String> {
    let first = graph.outputs.first().ok_or("the graph has no outputs; autodiff differentiates the first one")?;
    let loss = first.node;
    if loss.index() >= graph.len() {
        return Err(format!("output `{}` refers to {loss}, which does not exist", first.name));
    }
    let loss_ty = graph.ty(loss);
    if !loss_ty.dtype.is_float() || loss_ty.rank() != 0 {
        return Err(format!(
            "the first output `{}` must be a float scalar to differentiate, but it is {loss_ty}",
            first.name
        ));
    }
    for (_, path) in graph.params() {
        let name = grad_name(path);
        if graph.outputs.iter().any(|o| o.name == name) {
            return Err(format!("the graph already has an output `{name}`; has it been differentiated already?"));
        }
    }

    let active = active_nodes(graph, loss);
    let mut e = Emitter::new(graph);
    let mut explanations = BTreeMap::new();
    // Contributions to each node's adjoint, in arrival order.
    let mut pending: Vec<Vec<NodeId>> = vec![Vec::new(); graph.len()];
    let mut param_grad: Vec<Option<NodeId>> = vec![None; graph.len()];
    if active[loss.index()] {
        e.at(loss);
        let seed = e.push(Op::Const { value: 1.0 }, vec![], Some(loss_ty.clone()))?;
        explanations.insert(seed, format!("autodiff: the seed, d{0}/d{0} = 1", first.name));
        pending[loss.index()].push(seed);
    }

    for id in (0..=loss.0).rev().map(NodeId) {
        if !active[id.index()] {
            continue;
        }
        let contributions = std::mem::take(&mut pending[id.index()]);
        let Some((&head, rest)) = contributions.split_first() else {
            // Unreachable: every active node has an active user whose rule
            // gave it a contribution (checked below).
            continue;
        };
        e.at(id);
        let mut g = head;
        for &c in rest {
            g = e.push(Op::Binary(lpac_ir::BinaryOp::Add), vec![g, c], None)?;
        }
        let node = graph.node(id);
        if matches!(node.op, Op::Param { .. }) {
            param_grad[id.index()] = Some(g);
            continue;
        }
        let wants: Vec<bool> = node.inputs.iter().map(|i| active[i.index()]).collect();
        if !wants.iter().any(|&w| w) {
            continue;
        }
        let grads = rules::backward(&mut e, &rules::Site { id, node, g, wants: &wants })?;
        for (k, (&operand, grad)) in node.inputs.iter().zip(grads).enumerate() {
            match grad {
                Some(grad) if wants[k] => pending[operand.index()].push(grad),
                None if wants[k] => {
                    return Err(format!(
                        "internal error: the adjoint rule of {id} ({}) gave no gradient for operand {k}",
                        node.op.name()
                    ));
                }
                _ => {}
            }
        }
    }

    let mut zero = 0;
    for (id, path) in graph.params() {
        let g = match param_grad[id.index()] {
            Some(g) => {
                explanations.entry(g).or_insert_with(|| format!("autodiff: d{}/d`{path}`", first.name));
                g
            }
            None => {
                e.at(id);
                zero += 1;
                let g = rules::splat(&mut e, 0.0, &graph.ty(id).clone())?;
                explanations
                    .insert(g, format!("autodiff: `{path}` does not influence `{}`: zero gradient", first.name));
                g
            }
        };
        e.graph.add_output(grad_name(path), g);
    }

    let backward = e.graph.len() - graph.len();
    let params = graph.params().count();
    let report = format!(
        "autodiff: d{}/d(param) for {params} parameter(s) ({zero} zero), {backward} backward node(s)",
        first.name
    );
    Ok(PassOutcome { graph: e.graph, source: e.source, explanations, report: Some(report) })
}
