//! The reference interpreter: the oracle every pass check, gradient check and
//! backend check compares against. It is written to be obviously right, not
//! fast: every op is a plain loop over row-major elements.
//!
//! # Precision
//! A run has a [`Precision`]: `F32` computes every float op in `f32`, `F64` in
//! `f64`, whatever the node's float dtype says. Reductions, matmul and
//! scatter_add accumulate from zero in the run's precision, one element at a
//! time, in increasing index order (no FMA, no pairwise sums). The same graph
//! can so be run in f64 for finite-difference gradient checks and in f32 to
//! compare against backends.
//!
//! # Storage
//! Inside a run a value is a `Vec<T>` of floats (`T` is `f32` or `f64`, see
//! [`Real`]), a `Vec<i32>` or a `Vec<bool>`, row-major; its shape and dtype
//! are the node's type. Data comes in and goes out as host [`Tensor`]s; float
//! results are returned as `F32` or `F64` data according to the precision.
//!
//! # bf16 and f16
//! Nodes of dtype bf16 or f16 are computed in `T` and every element is then
//! rounded to the dtype (to nearest, ties to even, with subnormals and
//! overflow to infinity; see [`real::round_to_format`], written by hand).
//! Inputs and parameters of these dtypes are rounded on the way in. Ops that
//! only move data leave the (already representable) values unchanged.
//!
//! # Randomness
//! All random numbers come from [`crate::random`] (Philox4x32-10).
//! `random_uniform` element `i` is the top p bits of Philox word 0 under key
//! `dropout_key(ctx.seed, ctx.step, key)` at counter `i`, where p is the
//! dtype's significand width (24 for f32, the same value as
//! [`random::uniform_f32`](crate::random::uniform_f32); 8 for bf16; 11 for
//! f16): exact in the dtype, below 1, and bit-identical in F32 and F64 runs.
//!
//! # Initialisation
//! [`init_params`] draws each parameter element in f64 from the stream keyed
//! by (seed, path) at the element's flat index, rounds it to the parameter's
//! dtype and stores it as `f32`; an F64 run widens the same numbers, so both
//! precisions start from identical values, independent of node order.
//!
//! # Errors
//! Nothing a user can feed in makes the interpreter panic. A missing input or
//! parameter, a tensor of the wrong dtype or shape, an out-of-range gather or
//! scatter index, i32 division by zero, or an ill-typed graph gives an
//! [`InterpError`] naming the node (`%12`), its op, its source span and the
//! input name or parameter path. Before running, every node is re-checked
//! with the type rules of [`crate::typing`], so a graph built without checks
//! cannot make the index arithmetic go out of bounds.
//!
//! # Memory
//! [`run`] drops each intermediate value as soon as its last user has been
//! computed (it counts the remaining users), keeping only the outputs.
//! [`run_all`] keeps every node's value, for comparing two graphs node by node.

mod init;
mod movement;
mod ops;
pub mod real;
mod tensor;
mod value;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

pub use init::{init_param, init_params};
pub use real::Real;
pub use tensor::{Tensor, TensorData};

use crate::graph::{Graph, Node, NodeId, Span};
use crate::op::Op;
use crate::types::TensorType;
use crate::typing::result_type;
use value::Value;

/// The float type all float arithmetic of a run is done in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    F32,
    F64,
}

/// What a run's random numbers depend on besides the graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RunContext {
    pub seed: u64,
    pub step: u64,
}

/// Why a run failed, and where: the node, its op and its source span.
#[derive(Clone, Debug, PartialEq)]
pub struct InterpError {
    /// The node being evaluated, if the error belongs to one.
    pub node: Option<NodeId>,
    /// The node's op mnemonic (`gather`).
    pub op: Option<&'static str>,
    pub span: Option<Span>,
    pub message: String,
}

impl InterpError {
    fn at(id: NodeId, node: &Node, message: impl Into<String>) -> Self {
        InterpError {
            node: Some(id),
            op: Some(node.op.name()),
            span: node.origin.span.clone(),
            message: message.into(),
        }
    }

    fn graph(message: impl Into<String>) -> Self {
        InterpError { node: None, op: None, span: None, message: message.into() }
    }
}

impl fmt::Display for InterpError {
    /// `%12 (gather) at models/gpt.lpa:14:9: index 57 at position 3 is out of range 0..50`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(node), Some(op)) = (self.node, self.op) {
            write!(f, "{} ({})", node, op)?;
            if let Some(span) = &self.span {
                write!(f, " at {}", span)?;
            }
            write!(f, ": ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for InterpError {}

/// Runs `graph` and returns its outputs, in order, by name. Intermediate
/// values are freed once no later node needs them.
pub fn run(
    graph: &Graph,
    precision: Precision,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Tensor>,
    ctx: RunContext,
) -> Result<Vec<(String, Tensor)>, InterpError> {
    let values = run_in(graph, precision, inputs, params, ctx, Keep::Outputs)?;
    graph
        .outputs
        .iter()
        .map(|o| {
            let value = values[o.node.index()].as_ref().ok_or_else(|| missing_value(o.node))?;
            Ok((o.name.clone(), value.clone()))
        })
        .collect()
}

/// Runs `graph` and returns every node's value, indexed by node id.
pub fn run_all(
    graph: &Graph,
    precision: Precision,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Tensor>,
    ctx: RunContext,
) -> Result<Vec<Tensor>, InterpError> {
    let values = run_in(graph, precision, inputs, params, ctx, Keep::All)?;
    values.into_iter().enumerate().map(|(i, v)| v.ok_or_else(|| missing_value(NodeId(i as u32)))).collect()
}

fn missing_value(id: NodeId) -> InterpError {
    InterpError::graph(format!("internal error: the value of {} was freed too early", id))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    All,
    Outputs,
}

/// Dispatches on precision and converts the values kept to host tensors.
fn run_in(
    graph: &Graph,
    precision: Precision,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Tensor>,
    ctx: RunContext,
    keep: Keep,
) -> Result<Vec<Option<Tensor>>, InterpError> {
    check_graph(graph)?;
    let env = Env { graph, inputs, params, ctx };
    match precision {
        Precision::F32 => env.run::<f32>(keep).map(|r| to_tensors(graph, r.values)),
        Precision::F64 => env.run::<f64>(keep).map(|r| to_tensors(graph, r.values)),
    }
}

fn to_tensors<T: Real>(graph: &Graph, values: Vec<Option<Value<T>>>) -> Vec<Option<Tensor>> {
    values.iter().zip(&graph.nodes).map(|(v, node)| v.as_ref().map(|v| v.to_tensor(&node.ty))).collect()
}

/// Re-checks operand order and every node's type, so evaluation can trust
/// the types it reads shapes from.
fn check_graph(graph: &Graph) -> Result<(), InterpError> {
    for (id, node) in graph.ids().zip(&graph.nodes) {
        if let Some(bad) = node.inputs.iter().find(|i| i.index() >= id.index()) {
            return Err(InterpError::at(id, node, format!("operand {} does not come before the node", bad)));
        }
        let types: Vec<&TensorType> = node.inputs.iter().map(|&i| graph.ty(i)).collect();
        result_type(&node.op, &types, Some(&node.ty))
            .map_err(|e| InterpError::at(id, node, format!("ill-typed node: {}", e)))?;
    }
    if let Some(o) = graph.outputs.iter().find(|o| o.node.index() >= graph.len()) {
        return Err(InterpError::graph(format!("output `{}` names {}, which does not exist", o.name, o.node)));
    }
    Ok(())
}

struct Env<'a> {
    graph: &'a Graph,
    inputs: &'a BTreeMap<String, Tensor>,
    params: &'a BTreeMap<String, Tensor>,
    ctx: RunContext,
}

/// The values left at the end of a run, and the most held at once (for tests
/// of the freeing).
struct RunResult<T> {
    values: Vec<Option<Value<T>>>,
    #[cfg_attr(not(test), allow(dead_code))]
    peak_live: usize,
}

impl Env<'_> {
    fn run<T: Real>(&self, keep: Keep) -> Result<RunResult<T>, InterpError> {
        let graph = self.graph;
        let users = graph.users();
        let mut remaining: Vec<usize> = users.iter().map(Vec::len).collect();
        let mut pinned = vec![keep == Keep::All; graph.len()];
        for o in &graph.outputs {
            pinned[o.node.index()] = true;
        }
        let mut values: Vec<Option<Value<T>>> = vec![None; graph.len()];
        let (mut live, mut peak_live) = (0, 0);
        for (id, node) in graph.ids().zip(&graph.nodes) {
            let value = self.eval_node(id, node, &values)?;
            values[id.index()] = Some(value);
            live += 1;
            peak_live = peak_live.max(live);
            // Free operands (and this node, if unused) that nothing later reads.
            let mut done: Vec<NodeId> = distinct(&node.inputs);
            for &i in &done {
                remaining[i.index()] -= 1;
            }
            done.push(id);
            for i in done {
                if remaining[i.index()] == 0 && !pinned[i.index()] && values[i.index()].take().is_some() {
                    live -= 1;
                }
            }
        }
        Ok(RunResult { values, peak_live })
    }

    fn eval_node<T: Real>(
        &self,
        id: NodeId,
        node: &Node,
        values: &[Option<Value<T>>],
    ) -> Result<Value<T>, InterpError> {
        let mut value = match &node.op {
            Op::Input { name } => self.read(self.inputs, name, "input", node),
            Op::Param { path, .. } => self.read(self.params, path, "parameter", node),
            _ => {
                let args: Vec<&Value<T>> = node
                    .inputs
                    .iter()
                    .map(|i| {
                        values[i.index()].as_ref().ok_or_else(|| format!("the value of {} was freed too early", i))
                    })
                    .collect::<Result<_, _>>()
                    .map_err(|e| InterpError::at(id, node, e))?;
                let arg_types: Vec<&TensorType> = node.inputs.iter().map(|&i| self.graph.ty(i)).collect();
                ops::eval(node, &args, &arg_types, self.ctx)
            }
        }
        .map_err(|e| InterpError::at(id, node, e))?;
        value.round_to(node.ty.dtype);
        Ok(value)
    }

    /// An input or parameter's tensor from the run's map, checked against the
    /// node's type.
    fn read<T: Real>(
        &self,
        map: &BTreeMap<String, Tensor>,
        name: &str,
        what: &str,
        node: &Node,
    ) -> Result<Value<T>, String> {
        let tensor = map.get(name).ok_or_else(|| format!("{} `{}` was not provided", what, name))?;
        Value::from_tensor(tensor, &node.ty).map_err(|e| format!("{} `{}`: {}", what, name, e))
    }
}

fn distinct(ids: &[NodeId]) -> Vec<NodeId> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    ids
}
