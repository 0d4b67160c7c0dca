//! Command-line definitions. Every subcommand exits 0 on success, 1 on bad
//! input (with a message that says what and where), 2 on usage errors.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "lpac",
    version,
    about = "A compiler that trains transformer language models",
    long_about = "lpac compiles a model written in the .lpa language to a tensor graph IR, \
rewrites it (Low-dimensional Projected Attention, simplification, fusion) and trains it.\n\n\
Start with:  lpac check models/tiny.lpa\n             lpac stats models/gpt.lpa\n             lpac ir models/tiny.lpa --set layers=1"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Check a model file: parse, resolve names, check shapes. Prints the model
    /// name and parameter count, or every diagnostic.
    Check(CheckArgs),
    /// Print the forward graph (loss as output) as IR text, DOT or JSON.
    /// FILE may be a model (.lpa) or an IR file (.ir), which is parsed and printed back.
    Ir(IrArgs),
    /// Count parameters (in total and by group), FLOPs and activation memory.
    /// With --lowrank, the dense and factored figures side by side.
    Stats(StatsArgs),
    /// List every pass: what it does, whether it preserves meaning, its options;
    /// and the named pipelines.
    Passes,
    /// Show how one node of the final graph came to be: its source line and
    /// the chain of passes and rewrites that produced it.
    Explain(ExplainArgs),
    /// Train a model on a text corpus (the bundled Shakespeare by default),
    /// writing a run folder with metrics, a loss plot and checkpoints.
    Train(Box<TrainArgs>),
    /// Test the paper's claim on your model: train the dense model and its
    /// low-rank variants (attention, FFN, all) on the same data, seed and
    /// budget, one after another, and write a report (table, JSON, plots).
    Compare(Box<CompareArgs>),
    /// Test perplexity of a checkpoint on the held-out split of a corpus.
    Eval(EvalArgs),
    /// The kernels of a training step (or forward pass): kernel IR, generated
    /// code, and a summary of FLOPs, bytes and memory.
    Kernels(KernelsArgs),
    /// Generate text from a checkpoint.
    Sample(SampleArgs),
    /// Run every kernel kind on the GPU (`--device cuda`) and on the CPU
    /// backend with the same random inputs and compare the outputs
    /// (‖gpu − cpu‖ / ‖cpu‖ against a tolerance per case). Needs an NVIDIA GPU.
    DeviceCheck(DeviceCheckArgs),
}

#[derive(Args)]
pub struct DeviceCheckArgs {
    /// Run only the case of this number (as listed by --list), e.g. to keep a
    /// fault in one kernel from hiding the others' results.
    #[arg(long, value_name = "N")]
    pub case: Option<usize>,
    /// List the cases with their numbers and exit (needs no GPU).
    #[arg(long)]
    pub list: bool,
}

/// The model file and its configuration overrides, shared by every subcommand.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A model file (.lpa) or an IR file (.ir).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Override a config value, e.g. `--set layers=2 --set d=128` (repeatable).
    /// Unknown keys and values of the wrong type are errors.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Also list the resolved configuration: every key, its value, whether
    /// --set gave it, and its description from the model file.
    #[arg(long)]
    pub config: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IrFormat {
    /// The canonical text form, which `lpac ir FILE.ir` parses back.
    Text,
    /// Graphviz DOT (render with `dot -Tsvg`).
    Dot,
    /// JSON: nodes with op, attributes, operands, type and origin.
    Json,
}

/// `--lowrank R [--lowrank-target T]`: LPA as the first pass.
#[derive(Args, Clone, Default)]
pub struct LowrankArgs {
    /// Factor projections `W[d_in,d_out]` into `A[d_in,R]·B[R,d_out]` (Low-dimensional
    /// Projected Attention); runs the `lowrank` pass before any other.
    #[arg(long, value_name = "R")]
    pub lowrank: Option<usize>,
    /// What --lowrank factors: `attention` (Q, K, V and O, found from the graph's
    /// structure), `ffn`, `all`, or a glob over weight paths such as
    /// `layers.*.attn.q.weight` (`*` within a path segment, `**` across).
    #[arg(long, value_name = "TARGET", default_value = "attention", requires = "lowrank")]
    pub lowrank_target: String,
}

/// Which passes to run and how to watch them.
#[derive(Args, Clone, Default)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub lowrank: LowrankArgs,
    /// Passes to run, in order, e.g. `simplify,cse,dce`; options in braces:
    /// `lowrank{rank=64,target=ffn},simplify{iter-limit=8}`. See `lpac passes`.
    #[arg(long, value_name = "LIST", conflicts_with = "pipeline")]
    pub passes: Option<String>,
    /// A named pipeline: `default` (simplify,cse,dce), `cleanup` (cse,dce), `none`.
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
    /// Print the IR after every pass (to standard error).
    #[arg(long)]
    pub print_after_all: bool,
    /// Print the IR after the named pass (repeatable).
    #[arg(long, value_name = "PASS")]
    pub print_after: Vec<String>,
    /// Print the IR after each pass that changed the graph, and only those.
    #[arg(long)]
    pub print_changed: bool,
    /// Write `00-input.ir`, `NN-after-PASS.ir` for each pass that changed the
    /// graph, and `index.txt` listing every pass with its time.
    #[arg(long, value_name = "DIR")]
    pub dump_dir: Option<PathBuf>,
    /// Verify the graph after every pass.
    #[arg(long)]
    pub verify_each: bool,
    /// Print a table of time per pass.
    #[arg(long)]
    pub time_passes: bool,
    /// Before and after every meaning-preserving pass, run the reference
    /// interpreter (f64) on the same random inputs and parameters and compare;
    /// stop at the first pass that changes the numbers. Use small --set sizes.
    #[arg(long)]
    pub check_each: bool,
    /// Relative tolerance of --check-each.
    #[arg(long, value_name = "TOL", default_value_t = 1e-7)]
    pub check_tolerance: f64,
    /// Seed of --check-each's random inputs and parameters.
    #[arg(long, value_name = "SEED", default_value_t = 0)]
    pub check_seed: u64,
    /// Do not print pass reports (e-graph statistics and the like).
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct IrArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Annotate every node with its source line, the passes that made it and
    /// their explanations (a listing for reading; not parseable IR).
    #[arg(long)]
    pub provenance: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: IrFormat,
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,
}

#[derive(Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub lowrank: LowrankArgs,
    /// Print one JSON object (keys documented in docs/cli.md).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The node of the final graph, as `%42` or `42`.
    #[arg(value_name = "NODE")]
    pub node: String,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    /// Linear warm-up, then cosine decay to --min-lr-ratio of --lr at the last step.
    Cosine,
    /// Linear warm-up, then constant.
    Constant,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    /// AdamW (decoupled weight decay), as torch.optim.AdamW.
    Adamw,
    /// SGD with momentum, as torch.optim.SGD.
    Sgd,
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub lowrank: LowrankArgs,
    /// A UTF-8 text file to train on; the last 5% is held out for evaluation.
    /// Default: the bundled corpus, data/shakespeare.txt.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// A Hugging Face tokenizer.json; default: bytes (vocabulary 256).
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// Training steps [default: 300; with --resume: the run's own].
    #[arg(long, value_name = "N")]
    pub steps: Option<u64>,
    /// Sequences per step (sets the model's `batch` config key).
    #[arg(long, value_name = "B")]
    pub batch: Option<usize>,
    /// Peak learning rate.
    #[arg(long, value_name = "X", default_value_t = 1e-3)]
    pub lr: f64,
    /// Steps of linear learning-rate warm-up [default: a tenth of --steps, at most 100].
    #[arg(long, value_name = "N")]
    pub warmup: Option<u64>,
    /// Learning-rate schedule after the warm-up.
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: ScheduleArg,
    /// The cosine schedule decays to this fraction of --lr.
    #[arg(long, value_name = "F", default_value_t = 0.1)]
    pub min_lr_ratio: f64,
    #[arg(long, value_enum, default_value = "adamw")]
    pub optimizer: OptimizerArg,
    /// AdamW β1.
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f64,
    /// AdamW β2.
    #[arg(long, default_value_t = 0.95)]
    pub beta2: f64,
    /// AdamW ε.
    #[arg(long, default_value_t = 1e-5)]
    pub eps: f64,
    /// Weight decay (decoupled for AdamW).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Apply weight decay to every parameter, not only matrices (norms and
    /// biases are left out by default).
    #[arg(long)]
    pub decay_all: bool,
    /// Clip the global gradient norm to this (0 disables clipping).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Seed of initialisation, batches and dropout: the same seed gives the
    /// same run, bit for bit.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Evaluate on held-out blocks every N steps (0: only at the end).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub eval_every: u64,
    /// Held-out blocks used by the evaluations during training (the final
    /// test perplexity uses all of them).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub eval_blocks: usize,
    /// Write a checkpoint every N steps (and at evaluations and the end).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub checkpoint_every: u64,
    /// The run folder (default: runs/MODEL).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint, with its recorded
    /// configuration (only --steps may change): the same loss curve, bit for
    /// bit, as a run that was never interrupted.
    #[arg(long)]
    pub resume: bool,
    /// Stop at this step, saving a checkpoint, as if interrupted (for time-sliced
    /// runs); continue later with --resume.
    #[arg(long, value_name = "STEP")]
    pub stop_at: Option<u64>,
    /// Start an LPA model (--lowrank) from a dense checkpoint: factors from the
    /// truncated SVD of each dense projection, other parameters copied.
    #[arg(long, value_name = "CHECKPOINT", requires = "lowrank")]
    pub init_from: Option<PathBuf>,
    /// Where to run: `cpu` (compiled kernels), `interp` (the reference
    /// interpreter: slow, simple, the oracle), `cuda` (an NVIDIA GPU).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: crate::train::device::Device,
    /// The matrix products' arithmetic: `f32`, or `bf16` (bf16 operands and
    /// results, f32 accumulation; f32 master weights and everything else;
    /// --device cuda or interp).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: crate::train::device::Precision,
    /// Stop once the training steps have taken this many seconds (evaluations
    /// and checkpoints not counted), then evaluate as at the end; the
    /// learning-rate schedule still spans --steps.
    #[arg(long, value_name = "SECONDS")]
    pub time_budget: Option<f64>,
    /// One JSON object per log line on standard output instead of a progress bar.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The ranks r of the low-rank variants, e.g. `--lowrank 32,64,128`: one
    /// variant per rank and target.
    #[arg(long, value_name = "R1,R2,...", value_delimiter = ',', required = true)]
    pub lowrank: Vec<usize>,
    /// What the variants factor: `attention` (Q, K, V, O: LPA), `ffn` (the
    /// feed-forward matrices), `all` (both), comma-separated.
    #[arg(long, value_name = "T1,T2,...", value_delimiter = ',', default_value = "attention,ffn")]
    pub targets: Vec<String>,
    /// Choose the FFN variants' ranks so that each removes about as many
    /// parameters as the attention variant of the same position in --lowrank
    /// (the paper's fair ablation).
    #[arg(long)]
    pub match_params: bool,
    /// Steps per variant (the same token budget for all). Default 300.
    #[arg(long, conflicts_with = "time_budget")]
    pub steps: Option<u64>,
    /// Instead of --steps: the same wall-clock budget of training steps per
    /// variant, in seconds (constant learning rate after warm-up).
    #[arg(long, value_name = "SECONDS")]
    pub time_budget: Option<f64>,
    /// A UTF-8 text file to train on (default: the bundled corpus).
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Seed for every variant's initialisation, batches and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Peak learning rate for every variant (default: `lpac train`'s).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Sequences per step (the model's `batch`).
    #[arg(long)]
    pub batch: Option<usize>,
    /// The report folder (default `runs/compare-<model>`): report.md,
    /// report.json, loss plots, and a run folder per variant.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Where to train: `cpu`, `cuda` or `interp`.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: crate::train::device::Device,
}

#[derive(Args)]
pub struct EvalArgs {
    /// A checkpoint file or a run folder (its checkpoint.safetensors).
    #[arg(value_name = "CHECKPOINT|RUN_DIR")]
    pub checkpoint: PathBuf,
    /// Evaluate on the held-out split (last 5%) of this text instead of the run's data.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Where to run: `cpu` (compiled kernels) or `interp` (the reference interpreter).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: crate::train::device::Device,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct SampleArgs {
    /// A checkpoint file or a run folder (its checkpoint.safetensors).
    #[arg(value_name = "CHECKPOINT|RUN_DIR")]
    pub checkpoint: PathBuf,
    /// The text to continue.
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 200)]
    pub tokens: usize,
    /// Softmax temperature; 0 picks the most likely token.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Draw only among the K most likely tokens (0: all).
    #[arg(long, value_name = "K", default_value_t = 40)]
    pub top_k: usize,
    /// Seed of the draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to run: `cpu` (compiled kernels) or `interp` (the reference interpreter).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: crate::train::device::Device,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KernelTarget {
    /// Cranelift-compiled loops and gemm-crate matrix products.
    Cpu,
    /// PTX text for NVIDIA GPUs, one function per loop body (`--arch`).
    Ptx,
}

#[derive(Args)]
pub struct KernelsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub lowrank: LowrankArgs,
    /// Which backend's code to show.
    #[arg(long, value_enum, default_value = "cpu")]
    pub target: KernelTarget,
    /// With `--target ptx`: the GPU architecture, `sm_80` (A100) or `sm_90`
    /// (H100, H200).
    #[arg(long, default_value = "sm_90")]
    pub arch: String,
    /// With `--target ptx`: assemble every function with `ptxas` and report
    /// its registers and spilled bytes (needs ptxas: `pip install
    /// nvidia-cuda-nvcc-cu12`, or `LPAC_PTXAS=/path/to/ptxas`).
    #[arg(long)]
    pub ptxas_report: bool,
    /// The training step's products: `f32`, or `bf16` (mixed precision;
    /// for `--target ptx`: the CPU backend computes in f32).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: crate::train::device::Precision,
    /// The forward pass only, instead of the whole training step.
    #[arg(long)]
    pub forward: bool,
    /// Write program.kir and, per kernel, its .kir and generated code (.clif
    /// for cpu; .ptx per function and manifest.json for ptx), and
    /// summary.txt here; without it, print the summary.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}
