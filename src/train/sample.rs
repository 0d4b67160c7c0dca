//! Text generation: the model's logits for the last position of a window,
//! temperature, top-k, and a draw from the counter-based random stream.

use std::collections::BTreeMap;

use lpac_ir::interp::{RunContext, Tensor};
use lpac_ir::random;

use super::device::{Device, executor};
use super::graphs::{batch_and_seq, sample_graph};
use super::model_spec::ModelSpec;
use super::tokenizer::Tokenizer;
use crate::error::CliError;

pub struct SampleOptions {
    pub tokens: usize,
    pub temperature: f64,
    pub top_k: usize,
    pub seed: u64,
}

/// Generates `opts.tokens` tokens after `prompt`; returns the new text.
pub fn sample(
    spec: &ModelSpec,
    params: &BTreeMap<String, Tensor>,
    tok: &dyn Tokenizer,
    prompt: &str,
    device: Device,
    opts: &SampleOptions,
    mut on_token: impl FnMut(&str),
) -> Result<String, CliError> {
    let graph = sample_graph(spec)?;
    let (_, seq) = batch_and_seq(&graph);
    let mut exec = executor(device, graph)?;
    let mut context = tok.encode(prompt).map_err(CliError::Message)?;
    if context.is_empty() {
        return Err(CliError::Message("the prompt is empty: give at least one character with --prompt".into()));
    }
    let mut generated = Vec::new();
    for i in 0..opts.tokens {
        let window = &context[context.len().saturating_sub(seq)..];
        let logits = last_logits(exec.as_mut(), params, window, seq)?;
        let next = choose(&logits, opts, random::mix(opts.seed, i as u64));
        context.push(next);
        generated.push(next);
        on_token(&tok.decode(&[next]));
    }
    Ok(tok.decode(&generated))
}

/// Logits at the window's last position (the window padded to `seq`).
fn last_logits(
    exec: &mut dyn super::device::Executor,
    params: &BTreeMap<String, Tensor>,
    window: &[u32],
    seq: usize,
) -> Result<Vec<f64>, CliError> {
    let mut ids: Vec<i32> = window.iter().map(|&t| t as i32).collect();
    ids.resize(seq, 0);
    let inputs = BTreeMap::from([
        ("tokens".to_string(), Tensor::from_i32(vec![1, seq], ids.clone())),
        ("targets".to_string(), Tensor::from_i32(vec![1, seq], ids)),
    ]);
    let out = exec.run(&inputs, params, RunContext::default()).map_err(CliError::Message)?;
    let logits = out["logits"].to_f64_vec();
    let vocab = logits.len() / seq;
    let at = window.len() - 1;
    Ok(logits[at * vocab..(at + 1) * vocab].to_vec())
}

/// Greedy at temperature 0; otherwise a draw from softmax(logits / T) over
/// the `top_k` largest (all if 0).
fn choose(logits: &[f64], opts: &SampleOptions, key: u64) -> u32 {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if opts.temperature <= 0.0 {
        return order[0] as u32;
    }
    let k = if opts.top_k == 0 { order.len() } else { opts.top_k.min(order.len()) };
    let kept = &order[..k];
    let top = logits[kept[0]];
    let weights: Vec<f64> = kept.iter().map(|&i| ((logits[i] - top) / opts.temperature).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut u = random::uniform(key, 0) * total;
    for (&i, w) in kept.iter().zip(&weights) {
        if u < *w {
            return i as u32;
        }
        u -= w;
    }
    kept[k - 1] as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_top_k() {
        let logits = [0.1, 3.0, 2.0, -1.0];
        let greedy = SampleOptions { tokens: 1, temperature: 0.0, top_k: 0, seed: 0 };
        assert_eq!(choose(&logits, &greedy, 1), 1);
        let top2 = SampleOptions { tokens: 1, temperature: 1.0, top_k: 2, seed: 0 };
        for key in 0..200 {
            assert!(matches!(choose(&logits, &top2, key), 1 | 2), "top-2 keeps only the two best");
        }
    }
}
