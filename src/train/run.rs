//! The training loop: one step graph run again and again, with batches drawn
//! from the corpus, the learning rate from the schedule, metrics, evaluations,
//! atomic checkpoints, a bit-exact `--resume`, a stop with a clear message on
//! NaN, and a clean save on Ctrl-C.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use lpac_ir::Graph;
use lpac_ir::interp::{self, RunContext, Tensor};
use lpac_passes::optimizer::{Hyper, Kind, Schedule, state_inputs, state_name};
use serde_json::{Value, json};

use super::checkpoint::{self, Checkpoint, check_params};
use super::data::{Corpus, training_batch};
use super::device::Device;
use super::evaluate::{Evaluation, evaluate};
use super::graphs::{batch_and_seq, param_types};
use super::metrics::{METRICS_FILE, MetricsLog, Record};
use super::model_spec::ModelSpec;
use super::plot::{Series, plot_losses};
use crate::error::CliError;

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const CONFIG_FILE: &str = "config.json";

/// Everything a run is, as `config.json` records it.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub spec: ModelSpec,
    pub data: PathBuf,
    /// `None` for bytes, else a tokenizer.json path.
    pub tokenizer: Option<PathBuf>,
    pub steps: u64,
    pub lr: f64,
    pub schedule: Schedule,
    pub hyper: Hyper,
    pub optimizer: Kind,
    pub decay_mask: bool,
    pub seed: u64,
    pub eval_every: u64,
    pub eval_blocks: usize,
    pub checkpoint_every: u64,
    pub device: Device,
    pub precision: super::device::Precision,
    /// Stop once the steps have taken this many seconds (evaluations and
    /// checkpoints not counted), then evaluate as at the end.
    pub time_budget: Option<f64>,
    /// Stop (with a checkpoint) on reaching this step, as if interrupted.
    pub stop_at: Option<u64>,
}

impl RunConfig {
    pub fn to_json(&self) -> Value {
        json!({
            "lpac_version": env!("CARGO_PKG_VERSION"),
            "model": self.spec.to_json(),
            "data": self.data.display().to_string(),
            "tokenizer": self.tokenizer.as_ref().map(|p| p.display().to_string()),
            "steps": self.steps,
            "lr": self.lr,
            "schedule": format!("{:?}", self.schedule),
            "optimizer": self.optimizer.name(),
            "beta1": self.hyper.beta1,
            "beta2": self.hyper.beta2,
            "eps": self.hyper.eps,
            "weight_decay": self.hyper.weight_decay,
            "decay_mask": self.decay_mask,
            "clip": self.hyper.clip,
            "momentum": self.hyper.momentum,
            "seed": self.seed,
            "eval_every": self.eval_every,
            "eval_blocks": self.eval_blocks,
            "checkpoint_every": self.checkpoint_every,
            "precision": self.precision.name(),
            "time_budget": self.time_budget,
        })
    }
}

/// Set by the Ctrl-C handler; the loop saves and stops at the next step.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Parameters and optimiser state at a step.
pub struct TrainState {
    pub step: u64,
    pub params: BTreeMap<String, Tensor>,
    pub optimizer: BTreeMap<String, Tensor>,
}

/// How a run ended.
pub enum Ending {
    Finished {
        test: Evaluation,
    },
    Interrupted {
        step: u64,
    },
    /// `--stop-at` reached.
    Stopped {
        step: u64,
    },
}

/// Where log lines go: a progress bar, or JSON objects on stdout.
pub trait Reporter {
    fn step(&mut self, record: &Record, total: u64);
    fn message(&mut self, text: &str);
    fn finish(&mut self);
}

pub struct Trainer<'a> {
    pub config: RunConfig,
    pub dir: PathBuf,
    pub corpus: Corpus,
    pub reporter: &'a mut dyn Reporter,
}

impl Trainer<'_> {
    /// Runs the step graph `graph` on `exec` from `state` to `config.steps`.
    pub fn run(
        &mut self,
        graph: &Graph,
        mut exec: Box<dyn super::device::Executor>,
        mut state: TrainState,
        mut metrics: MetricsLog,
    ) -> Result<Ending, CliError> {
        let (batch, seq) = batch_and_seq(graph);
        check_params(&Checkpoint { tensors: state.params.clone(), metadata: BTreeMap::new() }, &param_types(graph))
            .map_err(CliError::Message)?;
        let tokens_per_step = (batch * seq) as f64;
        // Backends that can keep the parameters and optimiser state between
        // steps get them once; the host copies are refreshed only when needed
        // (checkpoints, evaluations, the end).
        if let Some(r) = exec.resident() {
            r.load(&state.params, &state.optimizer).map_err(CliError::Message)?;
        }
        let mut stale = false;
        let mut trained_s = 0.0;
        while state.step < self.config.steps {
            if self.config.time_budget.is_some_and(|budget| trained_s >= budget) {
                break;
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                sync(exec.as_mut(), &mut state, &mut stale)?;
                self.save(&state)?;
                self.reporter.finish();
                return Ok(Ending::Interrupted { step: state.step });
            }
            if self.config.stop_at.is_some_and(|s| state.step >= s) {
                sync(exec.as_mut(), &mut state, &mut stale)?;
                self.save(&state)?;
                self.reporter.finish();
                return Ok(Ending::Stopped { step: state.step });
            }
            let step = state.step + 1;
            let lr = self.config.schedule.lr_at(self.config.lr, step);
            let ctx = RunContext { seed: self.config.seed, step };
            let mut inputs = self.step_inputs(graph, step, lr, batch, seq);
            let started = Instant::now();
            let (loss, grad_norm, seconds) = match exec.resident() {
                Some(r) => {
                    let outputs = r.step(&inputs, ctx).map_err(CliError::Message)?;
                    let seconds = started.elapsed().as_secs_f64();
                    let (loss, grad_norm) = (scalar(&outputs, "loss"), scalar(&outputs, "grad_norm"));
                    if !(loss.is_finite() && grad_norm.is_finite()) {
                        // Not committed: the executor still holds this step's inputs.
                        r.read(&mut state.params, &mut state.optimizer).map_err(CliError::Message)?;
                        self.check_finite(step, &outputs, &inputs, &state.params)?;
                    }
                    r.commit().map_err(CliError::Message)?;
                    stale = true;
                    (loss, grad_norm, seconds)
                }
                None => {
                    // The optimiser state moves into the step and comes back
                    // updated: no copy of it is made.
                    let state_names: Vec<String> = state.optimizer.keys().cloned().collect();
                    inputs.append(&mut state.optimizer);
                    let outputs = exec.run(&inputs, &state.params, ctx).map_err(CliError::Message)?;
                    let seconds = started.elapsed().as_secs_f64();
                    let (loss, grad_norm) = (scalar(&outputs, "loss"), scalar(&outputs, "grad_norm"));
                    self.check_finite(step, &outputs, &inputs, &state.params)?;
                    absorb(&mut state, outputs, &state_names)?;
                    (loss, grad_norm, seconds)
                }
            };
            state.step = step;
            trained_s += seconds;
            let checkpoint_due = step.is_multiple_of(self.config.checkpoint_every);
            let eval_due = self.config.eval_every > 0 && step.is_multiple_of(self.config.eval_every);
            if checkpoint_due || eval_due {
                sync(exec.as_mut(), &mut state, &mut stale)?;
            }
            let eval_loss = self.maybe_evaluate(&state)?;
            let record = Record { step, loss, lr, grad_norm, tokens_per_s: tokens_per_step / seconds, eval_loss };
            metrics.log(&record).map_err(CliError::Message)?;
            self.reporter.step(&record, self.config.steps);
            if checkpoint_due || eval_loss.is_some() {
                self.save(&state)?;
                metrics.sync().map_err(CliError::Message)?;
                self.plot();
            }
        }
        sync(exec.as_mut(), &mut state, &mut stale)?;
        self.save(&state)?;
        self.plot();
        if let Some(line) = exec.resident().and_then(|r| r.memory()).and_then(|m| m.describe()) {
            self.reporter.message(&line);
        }
        // The step's buffers are not needed for the final evaluation.
        drop(exec);
        self.reporter.message("evaluating on the held-out split ...");
        let test = evaluate(&self.config.spec, &state.params, &self.corpus.test, self.config.device, None)?;
        self.reporter.finish();
        Ok(Ending::Finished { test })
    }

    /// NaN or infinity in the loss or the gradient norm stops the run. A finite
    /// norm means every gradient is finite; when it is not, the gradients are
    /// computed again (same batch, parameters and dropout) to name the first
    /// non-finite one.
    fn check_finite(
        &self,
        step: u64,
        outputs: &BTreeMap<String, Tensor>,
        inputs: &BTreeMap<String, Tensor>,
        params: &BTreeMap<String, Tensor>,
    ) -> Result<(), CliError> {
        let loss = scalar(outputs, "loss");
        if loss.is_finite() && scalar(outputs, "grad_norm").is_finite() {
            return Ok(());
        }
        let what = if !loss.is_finite() {
            format!("the loss is {loss}")
        } else {
            let name = self.first_bad_gradient(step, inputs, params).unwrap_or_else(|| "(unknown)".into());
            format!("the loss is {loss:.4} but the gradient of `{name}` is not finite")
        };
        Err(CliError::Message(format!(
            "training stopped at step {step}: {what}. The last good checkpoint is kept; \
             try a lower --lr or more --warmup"
        )))
    }

    /// The path of the first parameter whose gradient is not finite.
    fn first_bad_gradient(
        &self,
        step: u64,
        inputs: &BTreeMap<String, Tensor>,
        params: &BTreeMap<String, Tensor>,
    ) -> Option<String> {
        let graph = super::graphs::grads_graph(&self.config.spec).ok()?;
        let batch: BTreeMap<String, Tensor> = inputs
            .iter()
            .filter(|(k, _)| *k == "tokens" || *k == "targets")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut exec = super::device::executor(self.config.device, graph).ok()?;
        let outputs = exec.run(&batch, params, RunContext { seed: self.config.seed, step }).ok()?;
        let not_finite = |t: &Tensor| t.to_f64_vec().iter().any(|x| !x.is_finite());
        outputs
            .iter()
            .find(|(name, t)| name.starts_with("grad:") && not_finite(t))
            .map(|(n, _)| n["grad:".len()..].to_string())
    }

    /// Tokens, targets, hyperparameters and optimiser state for one step.
    fn step_inputs(&self, graph: &Graph, step: u64, lr: f64, batch: usize, seq: usize) -> BTreeMap<String, Tensor> {
        let (tokens, targets) = training_batch(&self.corpus.train, batch, seq, self.config.seed, step);
        let mut inputs = BTreeMap::from([
            ("tokens".to_string(), Tensor::from_i32(vec![batch, seq], tokens)),
            ("targets".to_string(), Tensor::from_i32(vec![batch, seq], targets)),
        ]);
        for (name, value) in self.config.hyper.feeds(self.config.optimizer, lr, step) {
            inputs.insert(name.to_string(), Tensor::scalar_f32(value as f32));
        }
        debug_assert!(graph.inputs().all(|(_, n)| inputs.contains_key(n) || n.contains(':')));
        inputs
    }

    fn maybe_evaluate(&self, state: &TrainState) -> Result<Option<f64>, CliError> {
        if self.config.eval_every == 0 || !state.step.is_multiple_of(self.config.eval_every) {
            return Ok(None);
        }
        let limit = Some(self.config.eval_blocks);
        let e = evaluate(&self.config.spec, &state.params, &self.corpus.test, self.config.device, limit)?;
        Ok(Some(e.loss))
    }

    /// Writes the checkpoint atomically: a crash leaves the previous one.
    pub fn save(&self, state: &TrainState) -> Result<(), CliError> {
        let mut ck = Checkpoint::new();
        ck.tensors = state.params.clone();
        ck.tensors.extend(state.optimizer.iter().map(|(k, v)| (k.clone(), v.clone())));
        ck.metadata.insert("lpac.step".into(), state.step.to_string());
        ck.metadata.insert("lpac.run".into(), self.config.to_json().to_string());
        checkpoint::save_atomic(&self.dir.join(CHECKPOINT_FILE), &ck).map_err(CliError::Message)
    }

    /// `loss.png` from the metrics so far. A plot that cannot be drawn is a
    /// warning, not the end of the run: metrics.jsonl holds every number.
    fn plot(&mut self) {
        if let Err(e) = self.draw_loss_plot() {
            self.reporter.message(&format!("warning: {e}; the numbers are in {METRICS_FILE}"));
        }
    }

    fn draw_loss_plot(&self) -> Result<(), String> {
        let lines = super::metrics::read(&self.dir.join(METRICS_FILE))?;
        let train: Vec<(f64, f64)> =
            lines.iter().filter_map(|l| Some((l["step"].as_f64()?, l["loss"].as_f64()?))).collect();
        let eval: Vec<(f64, f64)> =
            lines.iter().filter_map(|l| Some((l["step"].as_f64()?, l["eval_loss"].as_f64()?))).collect();
        let series = [Series::new("train loss", train), Series::new("held-out loss", eval)];
        plot_losses(&self.dir.join("loss.png"), &series, "step")
    }
}

fn scalar(outputs: &BTreeMap<String, Tensor>, name: &str) -> f64 {
    outputs.get(name).map(|t| t.to_f64_vec()[0]).unwrap_or(f64::NAN)
}

/// NaN or infinity in the loss or any gradient stops the run, naming the step
/// and the first non-finite tensor.
/// Refreshes the host copies of the parameters and optimiser state from a
/// resident executor, if they are behind.
fn sync(exec: &mut dyn super::device::Executor, state: &mut TrainState, stale: &mut bool) -> Result<(), CliError> {
    if *stale && let Some(r) = exec.resident() {
        r.read(&mut state.params, &mut state.optimizer).map_err(CliError::Message)?;
    }
    *stale = false;
    Ok(())
}

/// Takes the new parameters and optimiser state from a step's outputs.
fn absorb(
    state: &mut TrainState,
    mut outputs: BTreeMap<String, Tensor>,
    state_names: &[String],
) -> Result<(), CliError> {
    for (path, value) in state.params.iter_mut() {
        if let Some(new) = outputs.remove(&format!("param:{path}")) {
            *value = new;
        }
    }
    for name in state_names {
        let new = outputs
            .remove(name)
            .ok_or_else(|| CliError::Message(format!("internal error: the step returned no `{name}`")))?;
        state.optimizer.insert(name.clone(), new);
    }
    Ok(())
}

/// Fresh optimiser state: zeros shaped like each parameter.
pub fn zero_state(graph_params: &[(String, lpac_ir::TensorType)], kind: Kind) -> BTreeMap<String, Tensor> {
    let mut state = BTreeMap::new();
    for prefix in state_inputs(kind) {
        for (path, ty) in graph_params {
            let zeros = Tensor::from_f32(ty.shape.clone(), vec![0.0; ty.numel()]);
            state.insert(state_name(prefix, path), zeros);
        }
    }
    state
}

/// Parameters initialised from their initialisers with the run's seed.
pub fn fresh_params(graph: &Graph, seed: u64) -> BTreeMap<String, Tensor> {
    interp::init_params(graph, seed)
        .into_iter()
        .map(|(k, v)| (k, v.with_float_storage(interp::Precision::F32)))
        .collect()
}

/// The state saved in a run folder's checkpoint, checked against the model.
pub fn load_state(
    dir: &Path,
    graph_params: &[(String, lpac_ir::TensorType)],
    kind: Kind,
) -> Result<TrainState, CliError> {
    let ck = checkpoint::load(&dir.join(CHECKPOINT_FILE)).map_err(CliError::Message)?;
    let step: u64 = ck.metadata.get("lpac.step").and_then(|s| s.parse().ok()).ok_or_else(|| {
        CliError::Message(format!("{} has no step in its metadata", dir.join(CHECKPOINT_FILE).display()))
    })?;
    let mut params = BTreeMap::new();
    let mut optimizer = BTreeMap::new();
    for (name, t) in ck.tensors {
        if state_inputs(kind).iter().any(|p| name.starts_with(&format!("{p}:"))) {
            optimizer.insert(name, t);
        } else {
            params.insert(name, t);
        }
    }
    let only_params = Checkpoint { tensors: params.clone(), metadata: BTreeMap::new() };
    check_params(&only_params, graph_params).map_err(CliError::Message)?;
    let expected = zero_state(graph_params, kind);
    for name in expected.keys() {
        if !optimizer.contains_key(name) {
            return Err(CliError::Message(format!("the checkpoint has no optimiser state `{name}`")));
        }
    }
    Ok(TrainState { step, params, optimizer })
}

/// The checkpoint's record of the run (`config.json`'s content).
pub fn run_record(ck: &Checkpoint, path: &Path) -> Result<Value, CliError> {
    let text = ck.metadata.get("lpac.run").ok_or_else(|| {
        CliError::Message(format!("{} was not written by lpac train (no run record)", path.display()))
    })?;
    serde_json::from_str(text).map_err(|e| CliError::Message(format!("{}: bad run record: {e}", path.display())))
}
