//! `lpac train FILE`: train a model, writing a run folder.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use indicatif::{ProgressBar, ProgressStyle};
use lpac_frontend::Override;
use lpac_passes::optimizer::{Hyper, Kind, Schedule};

use crate::cli::{OptimizerArg, ScheduleArg, TrainArgs};
use crate::error::{CliError, CliResult};
use crate::load::overrides;
use crate::train::data::{DEFAULT_TEST_FRACTION, check_fits, load_corpus, max_token};
use crate::train::graphs::{param_types, train_graph};
use crate::train::init_from::from_dense;
use crate::train::metrics::{METRICS_FILE, MetricsLog, Record};
use crate::train::model_spec::ModelSpec;
use crate::train::run::{
    CHECKPOINT_FILE, CONFIG_FILE, Ending, INTERRUPTED, Reporter, RunConfig, TrainState, Trainer, fresh_params,
    load_state, zero_state,
};
use crate::train::tokenizer::{ByteTokenizer, HfTokenizer, Tokenizer};

pub const DEFAULT_STEPS: u64 = 300;

/// The bundled corpus, found from the working directory or the source tree.
pub fn default_data() -> PathBuf {
    let local = PathBuf::from("data/shakespeare.txt");
    if local.exists() { local } else { Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare.txt") }
}

pub fn tokenizer(path: Option<&Path>) -> Result<Box<dyn Tokenizer>, CliError> {
    Ok(match path {
        None => Box::new(ByteTokenizer),
        Some(p) => Box::new(HfTokenizer::from_file(p).map_err(CliError::Message)?),
    })
}

pub fn run(args: &TrainArgs) -> CliResult {
    let (ending, dir) = run_with(args, None)?;
    match ending {
        Ending::Finished { test } => {
            if args.json {
                let json =
                    serde_json::json!({"test_loss": test.loss, "test_ppl": test.perplexity(), "blocks": test.blocks});
                println!("{json}");
            } else {
                println!(
                    "test perplexity {:.3} (loss {:.4}) over {} held-out blocks of {} tokens; run folder {}",
                    test.perplexity(),
                    test.loss,
                    test.blocks,
                    test.seq,
                    dir.display()
                );
            }
        }
        Ending::Interrupted { step } => {
            eprintln!("interrupted at step {step}: checkpoint saved; continue with --resume --out {}", dir.display());
        }
        Ending::Stopped { step } => {
            eprintln!(
                "stopped at step {step} (--stop-at): checkpoint saved; continue with --resume --out {}",
                dir.display()
            );
        }
    }
    Ok(())
}

/// A training run as `lpac train` does it, reporting to `reporter` (or to
/// the default: a progress bar, plain lines or JSON); how it ended and the
/// run folder. `time_budget`: stop once the steps have taken that many
/// seconds (`lpac compare --time-budget`).
pub fn run_with(args: &TrainArgs, reporter: Option<&mut dyn Reporter>) -> Result<(Ending, PathBuf), CliError> {
    let (mut config, dir) = if args.resume { resumed_config(args)? } else { new_config(args)? };
    config.stop_at = args.stop_at;
    // Everything is checked before the run folder is touched, so a refused
    // run leaves nothing behind.
    let tok = tokenizer(config.tokenizer.as_deref())?;
    let corpus = load_corpus(&config.data, tok.as_ref(), DEFAULT_TEST_FRACTION).map_err(CliError::Message)?;
    check_vocab(&config.spec, &corpus, tok.as_ref())?;
    config.precision.check(config.device)?;
    let graph = train_graph(&config.spec, config.optimizer, config.decay_mask, config.precision)?;
    let (batch, seq) = crate::train::graphs::batch_and_seq(&graph);
    check_fits(&corpus, batch, seq).map_err(CliError::Message)?;
    // Compiling the step also checks the device and that the step fits in memory.
    let exec = crate::train::device::executor(config.device, graph.clone())?;
    let params = param_types(&graph);
    let (state, metrics) = if args.resume {
        let state = load_state(&dir, &params, config.optimizer)?;
        let metrics = MetricsLog::resume(&dir.join(METRICS_FILE), state.step).map_err(CliError::Message)?;
        (state, metrics)
    } else {
        let initial = match &args.init_from {
            Some(dense) => init_from_dense(dense, &graph)?,
            None => fresh_params(&graph, config.seed),
        };
        let state = TrainState { step: 0, params: initial, optimizer: zero_state(&params, config.optimizer) };
        create_run_dir(&dir)?;
        write_config(&dir, &config)?;
        (state, MetricsLog::create(&dir.join(METRICS_FILE)).map_err(CliError::Message)?)
    };
    ctrlc_handler();
    let start = state.step;
    let mut default: Box<dyn Reporter> = if args.json {
        Box::new(JsonLines)
    } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        Box::new(Bar::new(start, config.steps))
    } else {
        Box::new(PlainLines { started: std::time::Instant::now(), first_step: start })
    };
    let reporter: &mut dyn Reporter = match reporter {
        Some(r) => r,
        None => default.as_mut(),
    };
    reporter.message(&format!(
        "training `{}` ({} parameters) for {} steps on {} ({} + {} tokens), run folder {}",
        graph.name,
        graph.param_count(),
        config.steps,
        config.data.display(),
        corpus.train.len(),
        corpus.test.len(),
        dir.display()
    ));
    let mut trainer = Trainer { config, dir: dir.clone(), corpus, reporter };
    if start == 0 {
        // A checkpoint exists from the start: a run that fails at step 1 keeps one.
        trainer.save(&state)?;
    }
    let ending = trainer.run(&graph, exec, state, metrics)?;
    Ok((ending, dir))
}

fn new_config(args: &TrainArgs) -> Result<(RunConfig, PathBuf), CliError> {
    let mut sets = overrides(&args.model.set)?;
    if let Some(b) = args.batch {
        sets.push(Override { key: "batch".into(), value: b.to_string() });
    }
    let lowrank = args.lowrank.lowrank.map(|r| (r, args.lowrank.lowrank_target.clone()));
    let spec = ModelSpec::read(&args.model.file, sets, lowrank)?;
    if args.batch.is_some() && !spec.has_key("batch")? {
        return Err(CliError::Message("--batch sets the model's `batch` config key, and this model has none".into()));
    }
    let name = lpac_frontend::compile(&spec.file, &spec.source, &spec.overrides)?.name;
    let dir = args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(&name));
    refuse_existing_run(&dir)?;
    let steps = args.steps.unwrap_or(DEFAULT_STEPS);
    let warmup = args.warmup.unwrap_or((steps / 10).min(100));
    let schedule = match args.schedule {
        ScheduleArg::Constant => Schedule::Constant { warmup },
        ScheduleArg::Cosine => Schedule::Cosine { warmup, total: steps, floor: args.min_lr_ratio },
    };
    schedule.check().map_err(|e| CliError::Message(format!("learning-rate schedule: {e}")))?;
    let optimizer = match args.optimizer {
        OptimizerArg::Adamw => Kind::AdamW,
        OptimizerArg::Sgd => Kind::Sgd,
    };
    let hyper = Hyper {
        lr: args.lr,
        beta1: args.beta1,
        beta2: args.beta2,
        eps: args.eps,
        weight_decay: args.weight_decay,
        clip: args.clip,
        momentum: args.momentum,
    };
    if !(args.lr.is_finite() && args.lr > 0.0) {
        return Err(CliError::Message(format!("--lr {} must be a positive number", args.lr)));
    }
    if let Some(b) = args.time_budget
        && !(b.is_finite() && b > 0.0)
    {
        return Err(CliError::Message(format!("--time-budget {b} must be a positive number of seconds")));
    }
    let config = RunConfig {
        spec,
        data: args.data.clone().unwrap_or_else(default_data),
        tokenizer: args.tokenizer.clone(),
        steps,
        lr: args.lr,
        schedule,
        hyper,
        optimizer,
        decay_mask: !args.decay_all,
        seed: args.seed,
        eval_every: args.eval_every,
        eval_blocks: args.eval_blocks.max(1),
        checkpoint_every: args.checkpoint_every.max(1),
        device: args.device,
        precision: args.precision,
        time_budget: args.time_budget,
        stop_at: None,
    };
    Ok((config, dir))
}

/// A new run never overwrites another: the folder must be new or hold no run.
fn refuse_existing_run(dir: &Path) -> Result<(), CliError> {
    if dir.join(CHECKPOINT_FILE).exists() || dir.join(METRICS_FILE).exists() {
        return Err(CliError::Message(format!(
            "{} already holds a run; continue it with --resume, or choose another --out",
            dir.display()
        )));
    }
    Ok(())
}

fn create_run_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the run folder {}: {e}", dir.display()))?;
    let probe = dir.join(".lpac-write-test");
    std::fs::write(&probe, b"").map_err(|e| format!("cannot write in the run folder {}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// `--resume`: the run's own configuration, with a new --steps if given.
fn resumed_config(args: &TrainArgs) -> Result<(RunConfig, PathBuf), CliError> {
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => {
            let sets = overrides(&args.model.set)?;
            let spec = ModelSpec::read(&args.model.file, sets, None)?;
            PathBuf::from("runs").join(lpac_frontend::compile(&spec.file, &spec.source, &spec.overrides)?.name)
        }
    };
    if !dir.join(CHECKPOINT_FILE).exists() {
        return Err(CliError::Message(format!("--resume: {} holds no checkpoint to continue from", dir.display())));
    }
    let text = std::fs::read_to_string(dir.join(CONFIG_FILE))
        .map_err(|e| format!("--resume: cannot read {}: {e}", dir.join(CONFIG_FILE).display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("--resume: {} is not valid JSON: {e}", CONFIG_FILE))?;
    let mut config =
        config_from_json(&json).map_err(|e| format!("--resume: {}: {e}", dir.join(CONFIG_FILE).display()))?;
    if let Some(steps) = args.steps {
        config.steps = steps;
    }
    // The precision is the run's own (its config): a run keeps it.
    config.device = args.device;
    Ok((config, dir))
}

/// Reads back what [`RunConfig::to_json`] wrote.
pub fn config_from_json(v: &serde_json::Value) -> Result<RunConfig, String> {
    let f = |k: &str| v[k].as_f64().ok_or_else(|| format!("missing `{k}`"));
    let u = |k: &str| v[k].as_u64().ok_or_else(|| format!("missing `{k}`"));
    let spec = ModelSpec::from_json(&v["model"])?;
    let optimizer = Kind::parse(v["optimizer"].as_str().unwrap_or("")).ok_or("bad `optimizer`")?;
    let schedule = parse_schedule(v["schedule"].as_str().ok_or("missing `schedule`")?)?;
    Ok(RunConfig {
        spec,
        data: PathBuf::from(v["data"].as_str().ok_or("missing `data`")?),
        tokenizer: v["tokenizer"].as_str().map(PathBuf::from),
        steps: u("steps")?,
        lr: f("lr")?,
        schedule,
        hyper: Hyper {
            lr: f("lr")?,
            beta1: f("beta1")?,
            beta2: f("beta2")?,
            eps: f("eps")?,
            weight_decay: f("weight_decay")?,
            clip: f("clip")?,
            momentum: f("momentum")?,
        },
        optimizer,
        decay_mask: v["decay_mask"].as_bool().ok_or("missing `decay_mask`")?,
        seed: u("seed")?,
        eval_every: u("eval_every")?,
        eval_blocks: u("eval_blocks")? as usize,
        checkpoint_every: u("checkpoint_every")?,
        device: crate::train::device::Device::Cpu,
        // Runs from before the option trained in f32.
        precision: match v["precision"].as_str() {
            None | Some("f32") => crate::train::device::Precision::F32,
            Some("bf16") => crate::train::device::Precision::Bf16,
            Some(other) => return Err(format!("unknown `precision` {other:?}")),
        },
        time_budget: v["time_budget"].as_f64(),
        stop_at: None,
    })
}

/// Parses the schedule as `RunConfig::to_json` records it (its Debug form).
fn parse_schedule(text: &str) -> Result<Schedule, String> {
    let num = |key: &str| -> Result<f64, String> {
        let at = text.find(&format!("{key}: ")).ok_or_else(|| format!("schedule `{text}` has no {key}"))?;
        let rest = &text[at + key.len() + 2..];
        let end = rest.find([',', ' ', '}']).unwrap_or(rest.len());
        rest[..end].parse::<f64>().map_err(|_| format!("bad {key} in schedule `{text}`"))
    };
    if text.starts_with("Constant") {
        Ok(Schedule::Constant { warmup: num("warmup")? as u64 })
    } else if text.starts_with("Cosine") {
        Ok(Schedule::Cosine { warmup: num("warmup")? as u64, total: num("total")? as u64, floor: num("floor")? })
    } else if text.starts_with("Linear") {
        Ok(Schedule::Linear { warmup: num("warmup")? as u64, total: num("total")? as u64, floor: num("floor")? })
    } else {
        Err(format!("unknown schedule `{text}`"))
    }
}

fn write_config(dir: &Path, config: &RunConfig) -> Result<(), CliError> {
    let mut json = config.to_json();
    let resolved = lpac_frontend::compile(&config.spec.file, &config.spec.source, &config.spec.overrides)?;
    let values: serde_json::Map<String, serde_json::Value> = resolved
        .config
        .entries
        .iter()
        .map(|e| (e.name.clone(), serde_json::Value::String(e.value.to_string())))
        .collect();
    json["resolved_config"] = serde_json::Value::Object(values);
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())? + "\n";
    crate::train::checkpoint::write_atomic(&dir.join(CONFIG_FILE), text.as_bytes()).map_err(CliError::Message)
}

/// Token ids must be below the model's vocabulary.
fn check_vocab(spec: &ModelSpec, corpus: &crate::train::data::Corpus, tok: &dyn Tokenizer) -> Result<(), CliError> {
    let Some(vocab) = spec.config_value("vocab")?.and_then(|v| v.parse::<u64>().ok()) else { return Ok(()) };
    let max = max_token(&corpus.train).max(max_token(&corpus.test)) as u64;
    if max >= vocab {
        return Err(CliError::Message(format!(
            "the {} tokenizer produces ids up to {max}, but the model's vocab is {vocab}; use --set vocab={}",
            tok.name(),
            tok.vocab_size().max(max as usize + 1)
        )));
    }
    Ok(())
}

fn init_from_dense(
    path: &Path,
    graph: &lpac_ir::Graph,
) -> Result<std::collections::BTreeMap<String, lpac_ir::interp::Tensor>, CliError> {
    let file = if path.is_dir() { path.join(CHECKPOINT_FILE) } else { path.to_path_buf() };
    let dense = crate::train::checkpoint::load(&file).map_err(CliError::Message)?;
    let dense_params = dense.tensors.into_iter().filter(|(k, _)| !k.contains(':')).collect();
    let (params, report) = from_dense(graph, &dense_params)?;
    for r in &report {
        let bias = r.bias_error.map(|e| format!(", bias moved to the first factor: {:.4}", e)).unwrap_or_default();
        eprintln!("init-from: {} relative reconstruction error {:.4}{bias}", r.weight, r.relative_error);
    }
    Ok(params)
}

fn ctrlc_handler() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C: stop now (the last checkpoint is intact).
            std::process::exit(130);
        }
    });
}

/// A progress bar with step, loss, learning rate, tokens/s and ETA.
struct Bar {
    bar: ProgressBar,
}

impl Bar {
    fn new(start: u64, total: u64) -> Bar {
        let bar = ProgressBar::new(total);
        bar.set_position(start);
        let style =
            ProgressStyle::with_template("{bar:30} step {pos}/{len}  {msg}  [{elapsed_precise} < {eta_precise}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        Bar { bar }
    }
}

impl Reporter for Bar {
    fn step(&mut self, r: &Record, _total: u64) {
        self.bar.set_position(r.step);
        let eval = r.eval_loss.map(|e| format!("  eval {e:.4} (ppl {:.2})", e.exp())).unwrap_or_default();
        self.bar.set_message(format!(
            "loss {:.4}  lr {:.2e}  |g| {:.3}  {:.0} tok/s{eval}",
            r.loss, r.lr, r.grad_norm, r.tokens_per_s
        ));
        if r.eval_loss.is_some() {
            self.bar.println(format!("step {:>6}  loss {:.4}{eval}", r.step, r.loss));
        }
    }

    fn message(&mut self, text: &str) {
        self.bar.println(text);
    }

    fn finish(&mut self) {
        self.bar.finish();
    }
}

/// Without a terminal (a log file, CI): a line every 10 steps and at
/// evaluations, with the same fields as the bar.
struct PlainLines {
    started: std::time::Instant,
    first_step: u64,
}

impl Reporter for PlainLines {
    fn step(&mut self, r: &Record, total: u64) {
        if !(r.step.is_multiple_of(10) || r.eval_loss.is_some() || r.step == total || r.step == self.first_step + 1) {
            return;
        }
        let done = (r.step - self.first_step) as f64;
        let eta = self.started.elapsed().as_secs_f64() / done.max(1.0) * (total - r.step) as f64;
        let eval = r.eval_loss.map(|e| format!("  eval {e:.4} (ppl {:.2})", e.exp())).unwrap_or_default();
        eprintln!(
            "step {}/{total}  loss {:.4}  lr {:.2e}  |g| {:.3}  {:.0} tok/s  eta {:.0}s{eval}",
            r.step, r.loss, r.lr, r.grad_norm, r.tokens_per_s, eta
        );
    }

    fn message(&mut self, text: &str) {
        eprintln!("{text}");
    }

    fn finish(&mut self) {}
}

/// `--json`: the metrics lines on standard output.
struct JsonLines;

impl Reporter for JsonLines {
    fn step(&mut self, r: &Record, _total: u64) {
        println!("{}", r.to_json_line());
    }

    fn message(&mut self, text: &str) {
        eprintln!("{text}");
    }

    fn finish(&mut self) {}
}
