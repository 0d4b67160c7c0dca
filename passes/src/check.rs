//! `--check-each`: run the reference interpreter on the same random inputs
//! and parameters before and after a meaning-preserving pass, and compare.

use std::collections::BTreeMap;

use lpac_ir::interp::{self, Precision, RunContext, Tensor};
use lpac_ir::{DType, Graph, Op};

/// How a graph is fed for checking: one random batch and one parameter set.
pub struct CheckInputs {
    pub inputs: BTreeMap<String, Tensor>,
    pub params: BTreeMap<String, Tensor>,
    pub ctx: RunContext,
}

/// The interpreter runs in f64 here: rewrites that reassociate or fold change
/// rounding, and f64 keeps those differences near 1e-15.
pub const CHECK_PRECISION: Precision = Precision::F64;
/// Relative difference beyond which outputs are said to differ.
pub const DEFAULT_TOLERANCE: f64 = 1e-7;
/// Graphs whose interpretation would need more memory than this are refused.
pub const MAX_CHECK_BYTES: u64 = 4 << 30;

impl CheckInputs {
    /// Random inputs and initialised parameters for `graph`. Integer inputs
    /// are drawn below the smallest gather table, so they are valid token ids.
    pub fn random(graph: &Graph, seed: u64) -> Result<CheckInputs, String> {
        let needed = interpreter_bytes(graph);
        if needed > MAX_CHECK_BYTES {
            return Err(format!(
                "--check-each runs the reference interpreter, and this graph needs about {:.1} GiB \
                 (limit {} GiB); reduce the model with --set (e.g. --set layers=1 --set batch=1)",
                needed as f64 / (1u64 << 30) as f64,
                MAX_CHECK_BYTES >> 30
            ));
        }
        let bound = id_bound(graph);
        let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state = lpac_ir::random::splitmix64(state);
            state
        };
        let mut inputs = BTreeMap::new();
        for (id, name) in graph.inputs() {
            let ty = graph.ty(id);
            let n = ty.numel();
            let tensor = match ty.dtype {
                DType::I32 => Tensor::from_i32(ty.shape.clone(), (0..n).map(|_| (next() % bound) as i32).collect()),
                DType::Bool => Tensor::from_bool(ty.shape.clone(), (0..n).map(|_| next() % 2 == 0).collect()),
                _ => {
                    let values = (0..n).map(|_| (next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0);
                    Tensor::from_f64(ty.shape.clone(), values.collect())
                }
            };
            inputs.insert(name.to_string(), tensor);
        }
        let params = interp::init_params(graph, seed);
        Ok(CheckInputs { inputs, params, ctx: RunContext { seed, step: 0 } })
    }

    /// The graph's outputs, by name.
    pub fn run(&self, graph: &Graph) -> Result<Vec<(String, Vec<f64>)>, String> {
        let outputs =
            interp::run(graph, CHECK_PRECISION, &self.inputs, &self.params, self.ctx).map_err(|e| e.to_string())?;
        Ok(outputs.into_iter().map(|(name, t)| (name, t.to_f64_vec())).collect())
    }
}

/// The first output that differs beyond `tolerance`: (name, index, before,
/// after, relative error).
pub fn first_difference(before: &[(String, Vec<f64>)], after: &[(String, Vec<f64>)], tolerance: f64) -> Option<String> {
    for (name, a) in before {
        let Some((_, b)) = after.iter().find(|(n, _)| n == name) else {
            return Some(format!("output `{name}` disappeared"));
        };
        if a.len() != b.len() {
            return Some(format!("output `{name}` changed size from {} to {}", a.len(), b.len()));
        }
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            let same_special = x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
            // Values below 1e-12 count as 1e-12: round-off around an exact zero
            // (a gradient that cancels, ~1e-21) is not a difference.
            let rel = (x - y).abs() / x.abs().max(y.abs()).max(1e-12);
            let within = rel <= tolerance; // false for NaN
            if !same_special && !within {
                return Some(format!(
                    "output `{name}` element {i}: {x:e} before, {y:e} after (relative error {rel:.3e}, tolerance {tolerance:e})"
                ));
            }
        }
    }
    None
}

/// Integer inputs stay below every gather table's row count (256 if none).
fn id_bound(graph: &Graph) -> u64 {
    graph
        .ids()
        .filter(|&id| matches!(graph.node(id).op, Op::Gather))
        .map(|id| graph.ty(graph.node(id).inputs[0]).shape[0] as u64)
        .min()
        .unwrap_or(256)
        .max(1)
}

/// A rough upper bound of what the f64 interpreter holds: every node's value.
fn interpreter_bytes(graph: &Graph) -> u64 {
    graph.nodes.iter().map(|n| n.ty.numel() as u64 * 8).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_found_and_named() {
        let a = vec![("loss".to_string(), vec![1.0, 2.0])];
        let same = vec![("loss".to_string(), vec![1.0, 2.0 + 1e-12])];
        assert_eq!(first_difference(&a, &same, 1e-7), None);
        let off = vec![("loss".to_string(), vec![1.0, 2.5])];
        let msg = first_difference(&a, &off, 1e-7).unwrap();
        assert!(msg.contains("`loss` element 1") && msg.contains("relative error"), "{msg}");
        let nan = vec![("loss".to_string(), vec![1.0, f64::NAN])];
        assert!(first_difference(&a, &nan, 1e-7).is_some(), "NaN after is a difference");
    }
}
