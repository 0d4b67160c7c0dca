//! The graphs a run needs, built from a [`ModelSpec`]: the training step
//! (forward, backward, optimiser update), the evaluation forward pass
//! (dropout off), and the sampling pass (one sequence, logits as output).

use lpac_frontend::Override;
use lpac_ir::{Graph, TensorType};
use lpac_passes::optimizer::Kind;
use lpac_passes::registry::PassSpec;

use super::device::Precision;
use super::model_spec::{ModelSpec, run_passes};
use crate::error::CliError;

/// The optimisation passes every step graph gets after it is built.
fn optimise() -> Vec<PassSpec> {
    vec![PassSpec::new("simplify").with("explain", false), PassSpec::new("cse"), PassSpec::new("dce")]
}

/// Attention as one op (before autodiff, whose rule for it recomputes the
/// probabilities instead of keeping them).
fn fuse_attention() -> PassSpec {
    PassSpec::new("attention")
}

/// forward → (precision →) autodiff → optimizer → simplify, cse, dce.
pub fn train_graph(spec: &ModelSpec, kind: Kind, decay_mask: bool, precision: Precision) -> Result<Graph, CliError> {
    let forward = spec.forward(&[])?;
    check_inputs(&forward)?;
    step_of(forward, kind, decay_mask, precision)
}

/// The training step of a forward graph: its gradients, the optimiser's
/// update, and the default optimisations — one graph.
pub fn step_of(forward: Graph, kind: Kind, decay_mask: bool, precision: Precision) -> Result<Graph, CliError> {
    let mut passes = vec![fuse_attention()];
    if precision == Precision::Bf16 {
        // After `attention` (its fused op keeps its products f32), before
        // `autodiff` (so the gradients' products are bf16 too).
        passes.push(PassSpec::new("precision").with("dtype", "bf16"));
    }
    passes.extend([
        PassSpec::new("autodiff"),
        PassSpec::new("optimizer").with("kind", kind.name()).with("decay_mask", decay_mask).with("keep_grads", false),
    ]);
    passes.extend(optimise());
    run_passes(forward, &passes)
}

/// A forward graph with the default optimisations (what evaluation runs).
pub fn optimised(forward: Graph) -> Result<Graph, CliError> {
    let mut passes = vec![fuse_attention()];
    passes.extend(optimise());
    run_passes(forward, &passes)
}

/// forward → autodiff → simplify, cse, dce: the gradients alone, to find
/// which one is not finite when a step's gradient norm is not.
pub fn grads_graph(spec: &ModelSpec) -> Result<Graph, CliError> {
    let forward = spec.forward(&[])?;
    let mut passes = vec![fuse_attention(), PassSpec::new("autodiff")];
    passes.extend(optimise());
    run_passes(forward, &passes)
}

/// The forward pass with dropout off (if the model has a `dropout` key) and
/// `extra` overrides (another batch size).
pub fn eval_graph(spec: &ModelSpec, extra: &[Override]) -> Result<Graph, CliError> {
    let mut overrides = no_dropout(spec)?;
    overrides.extend(extra.iter().cloned());
    let forward = spec.forward(&overrides)?;
    check_inputs(&forward)?;
    optimised(forward)
}

/// One sequence, dropout off, with the model's logits as a second output
/// `logits` (found from structure: the projection nearest the loss).
pub fn sample_graph(spec: &ModelSpec) -> Result<Graph, CliError> {
    let mut overrides = no_dropout(spec)?;
    if spec.has_key("batch")? {
        overrides.push(Override { key: "batch".into(), value: "1".into() });
    }
    let mut forward = spec.forward(&overrides)?;
    check_inputs(&forward)?;
    let logits = lpac_passes::structure::head_output(&forward).ok_or_else(|| {
        CliError::Message("cannot sample: no output projection (logits) was found in front of the loss".into())
    })?;
    forward.add_output("logits", logits);
    run_passes(forward, &[fuse_attention(), PassSpec::new("cse"), PassSpec::new("dce")])
}

fn no_dropout(spec: &ModelSpec) -> Result<Vec<Override>, CliError> {
    Ok(if spec.has_key("dropout")? { vec![Override { key: "dropout".into(), value: "0".into() }] } else { Vec::new() })
}

/// `lpac train` feeds two inputs, `tokens` and `targets`, both `i32[batch, seq]`.
fn check_inputs(graph: &Graph) -> Result<(), CliError> {
    let inputs: Vec<(&str, &TensorType)> = graph.inputs().map(|(id, name)| (name, graph.ty(id))).collect();
    let ok = inputs.len() == 2
        && inputs.iter().all(|(name, ty)| {
            (*name == "tokens" || *name == "targets") && ty.dtype == lpac_ir::DType::I32 && ty.rank() == 2
        })
        && inputs[0].1 == inputs[1].1;
    if ok {
        return Ok(());
    }
    let declared: Vec<String> = inputs.iter().map(|(n, t)| format!("{n}: {t}")).collect();
    Err(CliError::Message(format!(
        "lpac trains models whose inputs are `tokens` and `targets`, both i32[batch, seq]; this model declares {}",
        declared.join(", ")
    )))
}

/// `[batch, seq]` of the model's `tokens` input.
pub fn batch_and_seq(graph: &Graph) -> (usize, usize) {
    let (id, _) = graph.inputs().find(|(_, n)| *n == "tokens").expect("checked by check_inputs");
    let shape = &graph.ty(id).shape;
    (shape[0], shape[1])
}

/// The parameters of a graph with their types, in order.
pub fn param_types(graph: &Graph) -> Vec<(String, TensorType)> {
    graph.params().map(|(id, path)| (path.to_string(), graph.ty(id).clone())).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use lpac_cuda::{Arch, emit_program};

    use super::*;

    /// Every graph `lpac train / eval / sample --device cuda` builds for the
    /// shipped models — dense and LPA, f32 and mixed precision, at small
    /// sizes that keep their head widths (64; gpt's 128) — emits for both
    /// architectures and schedules: every kernel a function or cuBLAS calls
    /// (no operand cuBLAS cannot read). All that `CudaExecutor::new` does
    /// before it needs the GPU.
    #[test]
    fn every_shipped_models_graphs_have_a_cuda_schedule() {
        let small = ["layers=2", "seq=32", "batch=2", "ffn=64"];
        let models: [(&str, &[&str], bool); 4] = [
            ("models/tiny.lpa", &["d=128", "heads=2"], true),
            ("models/gpt.lpa", &["d=256", "heads=2", "vocab=300"], true),
            ("models/llama.lpa", &["d=128", "heads=2", "vocab=300"], true),
            ("bench/gpu/mlp.lpa", &["d=64"], false),
        ];
        for (file, sets, has_attention) in models {
            let overrides: Vec<Override> =
                small.iter().chain(sets.iter()).map(|s| Override::parse(s).unwrap()).collect();
            let factorings = if has_attention { vec![None, Some((8, "attention".to_string()))] } else { vec![None] };
            for lowrank in factorings {
                let what = format!("{file} (lowrank {lowrank:?})");
                let spec = ModelSpec::read(Path::new(file), overrides.clone(), lowrank).unwrap();
                let graphs = [
                    train_graph(&spec, Kind::AdamW, true, Precision::F32),
                    train_graph(&spec, Kind::AdamW, true, Precision::Bf16),
                    eval_graph(&spec, &[]),
                    sample_graph(&spec),
                ];
                for graph in graphs {
                    let graph = graph.unwrap_or_else(|e| panic!("{what}: {e:?}"));
                    let program = lpac_passes::fuse::fuse(&graph).unwrap();
                    for arch in Arch::ALL {
                        let emitted = emit_program(&program, arch, None).unwrap_or_else(|e| panic!("{what}: {e}"));
                        emitted.schedule(&program).unwrap_or_else(|e| panic!("{what}: {e}"));
                    }
                }
            }
        }
    }
}
