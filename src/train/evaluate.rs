//! Test perplexity as the paper measures it: exp(mean loss) over
//! non-overlapping blocks of the training length of the held-out split.

use std::collections::BTreeMap;

use lpac_ir::interp::{RunContext, Tensor};

use super::data::eval_blocks;
use super::device::{Device, executor};
use super::graphs::{batch_and_seq, eval_graph};
use super::model_spec::ModelSpec;
use crate::error::CliError;
use lpac_frontend::Override;

/// The result of an evaluation.
#[derive(Clone, Copy, Debug)]
pub struct Evaluation {
    pub loss: f64,
    pub blocks: usize,
    pub seq: usize,
}

impl Evaluation {
    pub fn perplexity(&self) -> f64 {
        self.loss.exp()
    }
}

/// Evaluates on the first `max_blocks` blocks of `tokens` (all if `None`),
/// `batch` blocks per run; a last partial batch runs through a graph built
/// for its size, so every block counts exactly once.
pub fn evaluate(
    spec: &ModelSpec,
    params: &BTreeMap<String, Tensor>,
    tokens: &[u32],
    device: Device,
    max_blocks: Option<usize>,
) -> Result<Evaluation, CliError> {
    let graph = eval_graph(spec, &[])?;
    let (batch, seq) = batch_and_seq(&graph);
    let blocks: Vec<(Vec<i32>, Vec<i32>)> = eval_blocks(tokens, seq).take(max_blocks.unwrap_or(usize::MAX)).collect();
    if blocks.is_empty() {
        return Err(CliError::Message(format!(
            "the held-out text has {} tokens, fewer than one block of {} + 1",
            tokens.len(),
            seq
        )));
    }
    let mut exec = executor(device, graph)?;
    let mut total = 0.0;
    let full = blocks.len() / batch * batch;
    for chunk in blocks[..full].chunks(batch) {
        total += run_chunk(exec.as_mut(), params, chunk, seq)? * chunk.len() as f64;
    }
    if full < blocks.len() {
        let rest = &blocks[full..];
        let graph = eval_graph(spec, &[Override { key: "batch".into(), value: rest.len().to_string() }])?;
        let mut exec = executor(device, graph)?;
        total += run_chunk(exec.as_mut(), params, rest, seq)? * rest.len() as f64;
    }
    Ok(Evaluation { loss: total / blocks.len() as f64, blocks: blocks.len(), seq })
}

/// The mean loss of one batch of blocks.
fn run_chunk(
    exec: &mut dyn super::device::Executor,
    params: &BTreeMap<String, Tensor>,
    chunk: &[(Vec<i32>, Vec<i32>)],
    seq: usize,
) -> Result<f64, CliError> {
    let shape = vec![chunk.len(), seq];
    let tokens: Vec<i32> = chunk.iter().flat_map(|(i, _)| i.iter().copied()).collect();
    let targets: Vec<i32> = chunk.iter().flat_map(|(_, t)| t.iter().copied()).collect();
    let inputs = BTreeMap::from([
        ("tokens".to_string(), Tensor::from_i32(shape.clone(), tokens)),
        ("targets".to_string(), Tensor::from_i32(shape, targets)),
    ]);
    let out = exec.run(&inputs, params, RunContext::default()).map_err(CliError::Message)?;
    Ok(out["loss"].to_f64_vec()[0])
}
