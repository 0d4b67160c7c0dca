//! `lpac compare FILE --lowrank R1,R2 [--targets attention,ffn,all]`: the
//! paper's experiment on any model. The dense model and every low-rank
//! variant train one after another on the same data, seed and budget — each
//! exactly as `lpac train` would train it, in a run folder of its own — and
//! the comparison is written as `report.md`, `report.json` and loss plots
//! against steps and against training time (PNG and SVG).
//!
//! Every variant is built (and its rank checked against the weights it
//! factors) before anything trains, so a bad rank costs no training time.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::cli::{Cli, Command, CompareArgs};
use crate::error::{CliError, CliResult};
use crate::load::overrides;
use crate::stats::Stats;
use crate::train::metrics::{METRICS_FILE, Record};
use crate::train::model_spec::ModelSpec;
use crate::train::plot::{Series, plot_losses};
use crate::train::run::{Ending, Reporter};

/// Steps per variant when neither --steps nor --time-budget is given.
const DEFAULT_STEPS: u64 = 300;

/// One model of the comparison: dense, or a target factored at a rank.
#[derive(Clone, Debug)]
struct Variant {
    label: String,
    /// `None`: the dense model.
    lowrank: Option<(String, usize)>,
    params: u64,
    flops_per_token: f64,
    tokens_per_step: u64,
}

/// How long each variant trains.
#[derive(Clone, Copy, Debug)]
enum Budget {
    Steps(u64),
    Seconds(f64),
}

pub fn run(args: &CompareArgs) -> CliResult {
    let budget = budget(args)?;
    let variants = variants(args)?;
    let model = ModelSpec::read(&args.model.file, overrides(&args.model.set)?, None)?;
    let name = lpac_frontend::compile(&model.file, &model.source, &model.overrides)?.name;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("compare-{name}")));
    if out.join("report.json").exists() || variants.iter().any(|v| out.join(&v.label).exists()) {
        return Err(CliError::Message(format!(
            "{} already holds a comparison; choose another --out or remove it",
            out.display()
        )));
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut progress = Progress::new(&variants, budget);
    let mut results = Vec::new();
    for (i, variant) in variants.iter().enumerate() {
        progress.start(i);
        let train = train_args(args, budget, variant, &out.join(&variant.label))?;
        let (ending, dir) = super::train::run_with(&train, Some(&mut progress))?;
        match ending {
            Ending::Finished { test } => results.push(measure(variant, &dir, test.loss)?),
            Ending::Interrupted { .. } | Ending::Stopped { .. } => {
                progress.bar.finish_and_clear();
                return Err(CliError::Message(format!(
                    "interrupted while training `{}`; the finished variants' runs are in {}",
                    variant.label,
                    out.display()
                )));
            }
        }
    }
    progress.bar.finish_and_clear();
    let report = Report { model: name, file: args.model.file.clone(), args, budget, results };
    report.write(&out)?;
    print!("{}", report.table());
    println!("report: {}", out.join("report.md").display());
    Ok(())
}

fn budget(args: &CompareArgs) -> Result<Budget, CliError> {
    match (args.steps, args.time_budget) {
        (_, Some(s)) if !(s.is_finite() && s > 0.0) => {
            Err(CliError::Message(format!("--time-budget {s}: too small for a single step and evaluation")))
        }
        (_, Some(s)) => Ok(Budget::Seconds(s)),
        (Some(0), None) => {
            Err(CliError::Message("--steps 0: too small for a single step and evaluation; give at least 1".into()))
        }
        (steps, None) => Ok(Budget::Steps(steps.unwrap_or(DEFAULT_STEPS))),
    }
}

/// Dense first, then each target at each rank; every one built and counted.
fn variants(args: &CompareArgs) -> Result<Vec<Variant>, CliError> {
    let targets: Vec<String> = args.targets.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
    if targets.is_empty() {
        return Err(CliError::Message("--targets is empty: name attention, ffn or all".into()));
    }
    for t in &targets {
        if !matches!(t.as_str(), "attention" | "ffn" | "all") {
            return Err(CliError::Message(format!("--targets: unknown target `{t}` (attention, ffn, all)")));
        }
    }
    if args.lowrank.is_empty() || args.lowrank.contains(&0) {
        return Err(CliError::Message("--lowrank: give ranks of at least 1, e.g. --lowrank 32,64".into()));
    }
    let mut out = vec![build(args, None)?];
    for target in &targets {
        let ranks = if target == "ffn" && args.match_params {
            matched_ffn_ranks(args, &out[0], &targets)?
        } else {
            args.lowrank.clone()
        };
        for r in ranks {
            out.push(build(args, Some((target.clone(), r)))?);
        }
    }
    Ok(out)
}

/// A variant's graph, built to count it (and to refuse a rank that does not
/// fit before anything trains).
fn build(args: &CompareArgs, lowrank: Option<(String, usize)>) -> Result<Variant, CliError> {
    let mut sets = overrides(&args.model.set)?;
    if let Some(b) = args.batch {
        sets.push(lpac_frontend::Override { key: "batch".into(), value: b.to_string() });
    }
    let spec = ModelSpec::read(&args.model.file, sets, lowrank.clone().map(|(t, r)| (r, t)))?;
    let label = match &lowrank {
        None => "dense".to_string(),
        Some((t, r)) => format!("{t}-r{r}"),
    };
    let forward = spec.forward(&[]).map_err(|e| match e {
        CliError::Message(m) => CliError::Message(format!("variant {label}: {m}")),
        other => other,
    })?;
    let stats = Stats::of(&forward);
    Ok(Variant {
        label,
        lowrank,
        params: stats.total_params,
        flops_per_token: stats.flops_per_step_train() as f64 / stats.tokens_per_step.max(1) as f64,
        tokens_per_step: stats.tokens_per_step,
    })
}

/// For each attention rank, the FFN rank that removes about as many
/// parameters: the FFN variant's count is linear in r, so two counts give
/// it.
fn matched_ffn_ranks(args: &CompareArgs, dense: &Variant, targets: &[String]) -> Result<Vec<usize>, CliError> {
    if !targets.iter().any(|t| t == "attention") {
        return Err(CliError::Message(
            "--match-params matches FFN ranks to attention ranks: add attention to --targets".into(),
        ));
    }
    let (one, two) = (build(args, Some(("ffn".into(), 1)))?, build(args, Some(("ffn".into(), 2)))?);
    let per_rank = two.params as f64 - one.params as f64;
    let at_zero = one.params as f64 - per_rank;
    let mut ranks = Vec::new();
    for &r in &args.lowrank {
        let removed = dense.params as f64 - build(args, Some(("attention".into(), r)))?.params as f64;
        let matched = ((dense.params as f64 - removed - at_zero) / per_rank).round();
        if matched < 1.0 {
            return Err(CliError::Message(format!(
                "--match-params: attention at r = {r} removes {removed:.0} parameters, more than factoring the FFN \
                 at r = 1 would"
            )));
        }
        ranks.push(matched as usize);
    }
    Ok(ranks)
}

/// The `lpac train` arguments of one variant, parsed as the command line
/// would parse them (so each variant is exactly what `lpac train` runs).
fn train_args(args: &CompareArgs, budget: Budget, v: &Variant, dir: &Path) -> Result<crate::cli::TrainArgs, CliError> {
    let mut argv: Vec<String> = vec!["lpac".into(), "train".into(), args.model.file.display().to_string()];
    for s in &args.model.set {
        argv.extend(["--set".into(), s.clone()]);
    }
    match budget {
        Budget::Steps(n) => argv.extend(["--steps".into(), n.to_string()]),
        Budget::Seconds(s) => argv.extend([
            "--time-budget".into(),
            s.to_string(),
            // Steps enough never to be reached; the rate stays constant
            // after warm-up, since the run's length is not known.
            "--steps".into(),
            "100000000".into(),
            "--schedule".into(),
            "constant".into(),
        ]),
    }
    argv.extend(["--seed".into(), args.seed.to_string(), "--eval-every".into(), "0".into()]);
    argv.extend(["--out".into(), dir.display().to_string(), "--device".into(), device_name(args).into()]);
    if let Some(d) = &args.data {
        argv.extend(["--data".into(), d.display().to_string()]);
    }
    if let Some(lr) = args.lr {
        argv.extend(["--lr".into(), lr.to_string()]);
    }
    if let Some(b) = args.batch {
        argv.extend(["--batch".into(), b.to_string()]);
    }
    if let Some((t, r)) = &v.lowrank {
        argv.extend(["--lowrank".into(), r.to_string(), "--lowrank-target".into(), t.clone()]);
    }
    match Cli::try_parse_from(&argv) {
        Ok(Cli { command: Command::Train(t) }) => Ok(*t),
        Ok(_) => unreachable!("the arguments name `train`"),
        Err(e) => Err(CliError::Message(format!("variant {}: {e}", v.label))),
    }
}

fn device_name(args: &CompareArgs) -> &'static str {
    use crate::train::device::Device;
    match args.device {
        Device::Cpu => "cpu",
        Device::Cuda => "cuda",
        Device::Interp => "interp",
    }
}

/// One progress bar across the whole comparison.
struct Progress {
    bar: ProgressBar,
    labels: Vec<String>,
    budget: Budget,
    current: usize,
    started: Instant,
}

impl Progress {
    fn new(variants: &[Variant], budget: Budget) -> Progress {
        let n = variants.len() as u64;
        let (len, unit) = match budget {
            Budget::Steps(s) => (n * s, "steps"),
            Budget::Seconds(s) => (n * (s * 10.0).ceil() as u64, "tenths of a second"),
        };
        let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            ProgressBar::new(len)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{msg:24}} [{{bar:40}}] {{pos}}/{{len}} {unit}, {{elapsed}} elapsed, eta {{eta}}"
            ))
            .expect("a valid template")
            .progress_chars("=> "),
        );
        Progress {
            bar,
            labels: variants.iter().map(|v| v.label.clone()).collect(),
            budget,
            current: 0,
            started: Instant::now(),
        }
    }

    fn start(&mut self, i: usize) {
        self.current = i;
        self.started = Instant::now();
        let text = format!("[{}/{}] {}", i + 1, self.labels.len(), self.labels[i]);
        self.bar.set_message(text.clone());
        if self.bar.is_hidden() {
            eprintln!("{text}: training");
        }
    }
}

impl Reporter for Progress {
    fn step(&mut self, record: &Record, _total: u64) {
        let done = self.current as u64;
        let position = match self.budget {
            Budget::Steps(s) => done * s + record.step.min(s),
            Budget::Seconds(s) => {
                let tenths = (s * 10.0).ceil() as u64;
                done * tenths + ((self.started.elapsed().as_secs_f64() * 10.0) as u64).min(tenths)
            }
        };
        self.bar.set_position(position);
    }

    fn message(&mut self, text: &str) {
        if self.bar.is_hidden() {
            eprintln!("  {text}");
        } else {
            self.bar.println(format!("  {text}"));
        }
    }

    fn finish(&mut self) {}
}

/// What one variant measured.
#[derive(Clone, Debug)]
struct Measured {
    variant: Variant,
    steps: u64,
    losses: Vec<(f64, f64)>,
    /// `(seconds of training so far, loss)`.
    losses_by_time: Vec<(f64, f64)>,
    median_step_s: f64,
    final_train_loss: f64,
    test_loss: f64,
}

impl Measured {
    fn tokens_per_s(&self) -> f64 {
        self.variant.tokens_per_step as f64 / self.median_step_s
    }
    fn test_ppl(&self) -> f64 {
        self.test_loss.exp()
    }
}

/// Reads a finished variant's metrics: its losses, the median step time
/// (past two warm-up steps when there are more than four), and the mean
/// loss of its last ten steps.
fn measure(variant: &Variant, dir: &Path, test_loss: f64) -> Result<Measured, CliError> {
    let lines = crate::train::metrics::read(&dir.join(METRICS_FILE)).map_err(CliError::Message)?;
    let tokens = variant.tokens_per_step as f64;
    let mut losses = Vec::new();
    let mut losses_by_time = Vec::new();
    let mut step_seconds = Vec::new();
    let mut clock = 0.0;
    for l in &lines {
        let (Some(step), Some(loss), Some(tps)) = (l["step"].as_f64(), l["loss"].as_f64(), l["tokens_per_s"].as_f64())
        else {
            continue;
        };
        let seconds = tokens / tps;
        clock += seconds;
        step_seconds.push(seconds);
        losses.push((step, loss));
        losses_by_time.push((clock, loss));
    }
    if losses.is_empty() {
        return Err(CliError::Message(format!("{}: no steps were recorded", dir.display())));
    }
    let timed = if step_seconds.len() > 4 { &step_seconds[2..] } else { &step_seconds[..] };
    let mut sorted = timed.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median_step_s = sorted[sorted.len() / 2];
    let tail = &losses[losses.len().saturating_sub(10)..];
    let final_train_loss = tail.iter().map(|(_, l)| l).sum::<f64>() / tail.len() as f64;
    Ok(Measured {
        variant: variant.clone(),
        steps: losses.len() as u64,
        losses,
        losses_by_time,
        median_step_s,
        final_train_loss,
        test_loss,
    })
}

struct Report<'a> {
    model: String,
    file: PathBuf,
    args: &'a CompareArgs,
    budget: Budget,
    results: Vec<Measured>,
}

/// `(new − dense) / dense` in percent.
fn change(value: f64, dense: f64) -> f64 {
    100.0 * (value - dense) / dense
}

impl Report<'_> {
    fn dense(&self) -> &Measured {
        &self.results[0]
    }

    fn to_json(&self) -> Value {
        let d = self.dense();
        let rows: Vec<Value> = self
            .results
            .iter()
            .map(|m| {
                let (target, rank) = match &m.variant.lowrank {
                    None => (Value::Null, Value::Null),
                    Some((t, r)) => (json!(t), json!(r)),
                };
                json!({
                    "variant": m.variant.label,
                    "target": target,
                    "rank": rank,
                    "params": m.variant.params,
                    "flops_per_token": m.variant.flops_per_token,
                    "steps": m.steps,
                    "median_step_s": m.median_step_s,
                    "tokens_per_s": m.tokens_per_s(),
                    "final_train_loss": m.final_train_loss,
                    "test_loss": m.test_loss,
                    "test_ppl": m.test_ppl(),
                    "change_vs_dense_pct": {
                        "params": change(m.variant.params as f64, d.variant.params as f64),
                        "flops_per_token": change(m.variant.flops_per_token, d.variant.flops_per_token),
                        "median_step_s": change(m.median_step_s, d.median_step_s),
                        "tokens_per_s": change(m.tokens_per_s(), d.tokens_per_s()),
                        "final_train_loss": change(m.final_train_loss, d.final_train_loss),
                        "test_ppl": change(m.test_ppl(), d.test_ppl()),
                    },
                })
            })
            .collect();
        let budget = match self.budget {
            Budget::Steps(s) => json!({"steps": s}),
            Budget::Seconds(s) => json!({"seconds": s}),
        };
        json!({
            "lpac_version": env!("CARGO_PKG_VERSION"),
            "model": self.model,
            "file": self.file.display().to_string(),
            "set": self.args.model.set,
            "data": self.args.data.as_ref().map_or_else(
                || "data/shakespeare.txt (bundled)".to_string(),
                |d| d.display().to_string()
            ),
            "seed": self.args.seed,
            "device": device_name(self.args),
            "budget": budget,
            "match_params": self.args.match_params,
            "variants": rows,
        })
    }

    /// The table, for the terminal and report.md.
    fn table(&self) -> String {
        let d = self.dense();
        let cell = |v: String, pct: f64, dense: bool| if dense { v } else { format!("{v} ({pct:+.1}%)") };
        let mut t = String::from(
            "| variant | target | r | parameters | FLOPs/token | step (ms) | tokens/s | final train loss | test perplexity |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for (i, m) in self.results.iter().enumerate() {
            let is_dense = i == 0;
            let (target, rank) = match &m.variant.lowrank {
                None => ("—".to_string(), "—".to_string()),
                Some((t, r)) => (t.clone(), r.to_string()),
            };
            t.push_str(&format!(
                "| {} | {target} | {rank} | {} | {} | {} | {} | {} | {} |\n",
                m.variant.label,
                cell(
                    crate::stats::grouped(m.variant.params),
                    change(m.variant.params as f64, d.variant.params as f64),
                    is_dense
                ),
                cell(
                    crate::stats::human_count(m.variant.flops_per_token as u64),
                    change(m.variant.flops_per_token, d.variant.flops_per_token),
                    is_dense
                ),
                cell(format!("{:.1}", m.median_step_s * 1e3), change(m.median_step_s, d.median_step_s), is_dense),
                cell(format!("{:.0}", m.tokens_per_s()), change(m.tokens_per_s(), d.tokens_per_s()), is_dense),
                cell(format!("{:.4}", m.final_train_loss), change(m.final_train_loss, d.final_train_loss), is_dense),
                cell(format!("{:.3}", m.test_ppl()), change(m.test_ppl(), d.test_ppl()), is_dense),
            ));
        }
        t
    }

    fn markdown(&self) -> String {
        let budget = match self.budget {
            Budget::Steps(s) => format!("{s} steps each (the same tokens for every variant)"),
            Budget::Seconds(s) => format!("{s} s of training steps each (constant learning rate after warm-up)"),
        };
        let sets = if self.args.model.set.is_empty() {
            String::new()
        } else {
            format!(" with {}", self.args.model.set.join(", "))
        };
        format!(
            "# lpac compare: `{}`\n\n\
             Model `{}` ({}{sets}); data {}; seed {}; device {}; {budget}.\n\
             Changes are against dense, in percent. FLOPs per token count a training step (forward and \
             backward); the step time is the median over the run (past two warm-up steps); the final train \
             loss is the mean of the last ten steps; the test perplexity is over the whole held-out split.\n\n\
             {}\n\
             Loss curves: `loss-steps.png` / `.svg` (against steps) and `loss-time.png` / `.svg` (against \
             seconds of training), a running mean over 10 steps. Each variant's run folder (metrics, \
             checkpoint) is beside this file; `lpac train` with the same options reproduces any of them.\n",
            self.model,
            self.model,
            self.file.display(),
            self.args.data.as_ref().map_or_else(|| "the bundled corpus".to_string(), |d| d.display().to_string()),
            self.args.seed,
            device_name(self.args),
            self.table(),
        )
    }

    fn write(&self, out: &Path) -> Result<(), CliError> {
        let write = |name: &str, text: String| {
            std::fs::write(out.join(name), text).map_err(|e| format!("cannot write {}: {e}", out.join(name).display()))
        };
        write("report.json", serde_json::to_string_pretty(&self.to_json()).expect("JSON of numbers and strings"))?;
        write("report.md", self.markdown())?;
        let smooth = |points: &[(f64, f64)]| -> Vec<(f64, f64)> {
            (0..points.len())
                .map(|i| {
                    let window = &points[i.saturating_sub(9)..=i];
                    (points[i].0, window.iter().map(|p| p.1).sum::<f64>() / window.len() as f64)
                })
                .collect()
        };
        let by_steps: Vec<Series> =
            self.results.iter().map(|m| Series::new(m.variant.label.clone(), smooth(&m.losses))).collect();
        let by_time: Vec<Series> =
            self.results.iter().map(|m| Series::new(m.variant.label.clone(), smooth(&m.losses_by_time))).collect();
        for ext in ["png", "svg"] {
            plot_losses(&out.join(format!("loss-steps.{ext}")), &by_steps, "step").map_err(CliError::Message)?;
            plot_losses(&out.join(format!("loss-time.{ext}")), &by_time, "seconds of training")
                .map_err(CliError::Message)?;
        }
        Ok(())
    }
}
