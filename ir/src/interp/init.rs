//! Parameter initialisation from each `param` node's [`Init`].

use std::collections::BTreeMap;

use super::real::{F32, FloatFormat, Rounding, narrow_format, round_to_format};
use super::tensor::Tensor;
use crate::graph::Graph;
use crate::op::{Init, Op};
use crate::random;
use crate::types::TensorType;

/// Every parameter of `graph`, by path, initialised from its `Init`.
///
/// Element `i` of the parameter at `path` is drawn in f64 from the stream
/// `random::param_key(seed, path)` at counter `i` (`normal` or `uniform`),
/// then rounded to nearest in the parameter's dtype (f32, or bf16/f16 directly
/// from the f64 value) and stored as `f32` data. An F64 run widens those same
/// numbers, so f32 and f64 runs with one seed start from identical values.
/// A uniform value that rounds up to `hi` is replaced by the largest value of
/// the dtype below `hi`, so the interval stays half-open.
pub fn init_params(graph: &Graph, seed: u64) -> BTreeMap<String, Tensor> {
    let mut params = BTreeMap::new();
    for (id, path) in graph.params() {
        let node = graph.node(id);
        if let Op::Param { init, .. } = &node.op {
            params.insert(path.to_string(), init_param(path, init, &node.ty, seed));
        }
    }
    params
}

/// One parameter's tensor (see [`init_params`]).
pub fn init_param(path: &str, init: &Init, ty: &TensorType, seed: u64) -> Tensor {
    let key = random::param_key(seed, path);
    let format = narrow_format(ty.dtype).unwrap_or(F32);
    let values = (0..ty.numel() as u64).map(|i| draw(init, key, i, format) as f32).collect();
    Tensor { dtype: ty.dtype, shape: ty.shape.clone(), data: super::TensorData::F32(values) }
}

/// One element, already rounded to `format` (so the final `as f32` is exact).
fn draw(init: &Init, key: u64, counter: u64, format: FloatFormat) -> f64 {
    let nearest = |x: f64| round_to_format(x, format, Rounding::NearestEven);
    match *init {
        Init::Const { value } => nearest(value),
        Init::Normal { mean, std } => nearest(mean + std * random::normal(key, counter)),
        Init::Uniform { lo, hi } => {
            let x = nearest(lo + (hi - lo) * random::uniform(key, counter));
            if x >= hi && hi > lo { round_to_format(hi.next_down(), format, Rounding::Down) } else { x }
        }
    }
}
