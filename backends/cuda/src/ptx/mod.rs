//! Kernel programs as PTX text.
//!
//! Every loop body of a program (a loop kernel; each loop stage of a rows
//! kernel; each member of a multi kernel) becomes one `.entry` function in
//! its own PTX module: PTX ISA 8.0, `sm_80` or `sm_90`. A thread computes
//! one element of the kernel's domain at a time in a grid-stride loop; a
//! reducing kernel gives each output element a warp, whose partial results
//! are combined with shuffles. Each function starts with a comment naming the kernel, the graph
//! nodes it computes and, when the graph is given, their source lines.
//!
//! Random numbers (dropout) are Philox4x32-10 in PTX, bit for bit the
//! interpreter's stream: the kernel takes the run's stream key for each
//! `random` key as a parameter.
//!
//! Kernels the emitter does not produce yet are listed in the program with
//! the reason ([`PtxProgram::skipped`]): gemm (cuBLAS, at run time; also
//! the product stages of rows kernels, whose loop stages are emitted one
//! function each) and attention. Gather and
//! scatter-add are their own functions (`rows_by_index`).

mod attention;
mod loop_kernel;
mod rows_by_index;

use std::fmt;

use lpac_ir::kernel::{Kernel, LoopKernel, Program, RowStage};
use lpac_ir::{Graph, NodeId};

use crate::schedule::Binding;

/// A GPU architecture lpac emits PTX for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Sm80,
    Sm90,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Sm80, Arch::Sm90];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Sm80 => "sm_80",
            Arch::Sm90 => "sm_90",
        }
    }

    /// `sm_80` or `sm_90`; anything else is an error that lists these.
    pub fn parse(text: &str) -> Result<Arch, String> {
        Arch::ALL.into_iter().find(|a| a.name() == text).ok_or_else(|| {
            format!("unsupported --arch `{text}`: lpac emits PTX for sm_80 (A100) and sm_90 (H100, H200)")
        })
    }
}

/// The PTX ISA version every module declares.
pub const PTX_VERSION: &str = "8.0";
/// Threads per block of every loop kernel.
pub const BLOCK: u32 = 256;

/// The most bytes of kernel parameters PTX ISA 8.0 allows (8.1 raised it
/// for sm_70 and later; lpac stays on 8.0 and splits instead).
pub const PARAM_BYTES: usize = 4352;

/// A loop body that could not be emitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtxError {
    pub kernel: String,
    pub message: String,
}

impl fmt::Display for PtxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel {:?}: {}", self.kernel, self.message)
    }
}

impl std::error::Error for PtxError {}

/// One `.entry` function and how to launch it.
#[derive(Clone, Debug, PartialEq)]
pub struct PtxKernel {
    /// The function's name (`k12_0_mul_reduce_sum`): kernel index, body
    /// index, sanitised kernel name.
    pub entry: String,
    /// The kernel index in the program and, for rows/multi kernels, the body.
    pub kernel: usize,
    pub body: usize,
    pub ptx: String,
    /// Grid size in blocks of [`BLOCK`] threads (a grid-stride loop covers
    /// any remainder).
    pub grid: u32,
    pub block: u32,
    /// Dynamic shared memory a block gets at launch (none so far: every
    /// function declares its arrays statically).
    pub shared_bytes: u32,
    /// Shared memory the function declares (`.shared` arrays), per block.
    pub static_shared_bytes: u32,
    /// Kernel arguments in order: one `.u64` pointer per buffer, by id…
    pub args: Vec<u32>,
    /// …then one `.u64` stream key per `random` key used: the runtime
    /// passes `lpac_ir::random::dropout_key(seed, step, key)`.
    pub stream_keys: Vec<u64>,
    /// …then, when not 0, a `.u64` pointer to the runtime's scratch area of
    /// at least this many bytes, zeroed once when the program is loaded
    /// (block-level reductions keep counters and partial results there and
    /// leave the counters 0)…
    pub scratch_bytes: usize,
    /// …then, when set, a `.u64` pointer to a `u32` error cell the runtime
    /// zeroes before the step and checks after it (an index out of range).
    pub error_flag: bool,
}

impl PtxKernel {
    /// A function taking only buffer addresses (no stream keys, scratch
    /// area or error cell: set those fields after where needed), with no
    /// dynamic shared memory.
    pub(crate) fn new(
        entry: String,
        (kernel, body): (usize, usize),
        ptx: String,
        (grid, block): (u32, u32),
        args: Vec<u32>,
    ) -> PtxKernel {
        let static_shared_bytes = declared_shared_bytes(&ptx);
        PtxKernel {
            entry,
            kernel,
            body,
            ptx,
            grid,
            block,
            shared_bytes: 0,
            static_shared_bytes,
            args,
            stream_keys: vec![],
            scratch_bytes: 0,
            error_flag: false,
        }
    }

    /// How many `.u64` parameters the function takes.
    pub fn param_count(&self) -> usize {
        self.args.len() + self.stream_keys.len() + usize::from(self.scratch_bytes > 0) + usize::from(self.error_flag)
    }
}

/// The bytes of the `.shared` arrays a function declares
/// (`.shared .align A .TYPE NAME[N];`, as [`Module`] writes them).
fn declared_shared_bytes(ptx: &str) -> u32 {
    ptx.lines()
        .filter_map(|l| l.trim().strip_prefix(".shared"))
        .filter_map(|decl| {
            let words: Vec<&str> = decl.trim_end_matches(';').split_whitespace().collect();
            let (ty, array) = (words.get(words.len().checked_sub(2)?)?, words.last()?);
            let count: u32 = array.split_once('[')?.1.trim_end_matches(']').parse().ok()?;
            let size = match *ty {
                ".b8" | ".u8" | ".s8" => 1,
                ".b16" | ".u16" | ".s16" | ".f16" | ".bf16" => 2,
                ".b64" | ".u64" | ".s64" | ".f64" => 8,
                _ => 4,
            };
            Some(count * size)
        })
        .sum()
}

/// Every emitted function, and the kernels left to the runtime or not
/// emitted yet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PtxProgram {
    pub kernels: Vec<PtxKernel>,
    /// `(kernel index, why)`.
    pub skipped: Vec<(usize, String)>,
}

impl PtxProgram {
    /// `manifest.json`: one object per function (name, launch, arguments),
    /// and the kernels not emitted with the reason.
    pub fn manifest(&self, arch: Arch) -> serde_json::Value {
        let kernels: Vec<serde_json::Value> = self
            .kernels
            .iter()
            .map(|k| {
                serde_json::json!({
                    "entry": k.entry,
                    "kernel": k.kernel,
                    "body": k.body,
                    "grid": [k.grid, 1, 1],
                    "block": [k.block, 1, 1],
                    "shared_bytes": k.shared_bytes + k.static_shared_bytes,
                    "static_shared_bytes": k.static_shared_bytes,
                    "dynamic_shared_bytes": k.shared_bytes,
                    "args": k
                        .bindings()
                        .map(|b| match b {
                            Binding::Buffer(b) => format!("b{b}"),
                            Binding::StreamKey(key) => format!("stream_key({key})"),
                            Binding::Scratch => format!("scratch({} bytes)", k.scratch_bytes),
                            Binding::ErrorCell => "error_cell".to_string(),
                        })
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        let skipped: Vec<serde_json::Value> =
            self.skipped.iter().map(|(k, why)| serde_json::json!({"kernel": k, "why": why})).collect();
        serde_json::json!({"arch": arch.name(), "ptx_version": PTX_VERSION, "kernels": kernels, "skipped": skipped})
    }
}

/// Emits every loop body of `program` for `arch`. `graph`, when given, is
/// the graph the program was lowered from: its nodes' source lines go into
/// each function's header comment.
pub fn emit_program(program: &Program, arch: Arch, graph: Option<&Graph>) -> Result<PtxProgram, PtxError> {
    let mut out = PtxProgram::default();
    for (i, kernel) in program.kernels.iter().enumerate() {
        let bodies: Vec<&LoopKernel> = match kernel {
            Kernel::Loop(l) => vec![l],
            Kernel::Rows(r) => {
                if r.stages.iter().any(|s| matches!(s, RowStage::Gemm(_))) {
                    // Stage by stage over all rows: the loop stages one
                    // function each, the products by cuBLAS at run time.
                    out.skipped.push((i, "matrix-product stages: cuBLAS at run time (loop stages emitted)".into()));
                    let bodies: Vec<&LoopKernel> = r.loops().collect();
                    for (b, body) in bodies.into_iter().enumerate() {
                        out.kernels.push(loop_kernel::emit(program, body, i, b, arch, graph)?);
                    }
                    continue;
                }
                // Softmax, norms, cross-entropy: one fused function, a warp
                // per row through every stage.
                let stages: Vec<LoopKernel> = r.loops().cloned().collect();
                let fits = stages.iter().all(|s| s.reduction.is_none() || s.domain.len() == r.rows.len());
                if fits {
                    out.kernels.push(loop_kernel::emit_rows(program, &r.rows, &stages, &r.name, i, arch, graph)?);
                    continue;
                }
                r.loops().collect()
            }
            // Elementwise members (the AdamW update of every parameter): one
            // fused function, or several where one would take more than
            // PARAM_BYTES of addresses; members with reductions: one each.
            Kernel::Multi(m) if m.members.iter().all(|k| k.reduction.is_none()) => {
                out.kernels.extend(loop_kernel::emit_fused(program, &m.members, &m.name, i, arch, graph)?);
                continue;
            }
            Kernel::Multi(m) => m.members.iter().collect(),
            Kernel::Gemm(_) => {
                out.skipped.push((i, "matrix product: cuBLAS at run time".into()));
                continue;
            }
            Kernel::Attention(a) if matches!(a.pass, lpac_ir::kernel::AttentionPass::Forward { .. }) => {
                out.kernels.push(attention::forward(program, a, i, arch, graph)?);
                continue;
            }
            Kernel::Attention(a) => {
                out.kernels.extend(attention::backward(program, a, i, arch, graph)?);
                continue;
            }
            Kernel::Gather { table, indices, out: o, nodes, .. } => {
                let nodes = node_list(nodes, graph);
                out.kernels.push(rows_by_index::gather(program, (*table, *indices, *o), (i, &nodes), arch)?);
                continue;
            }
            Kernel::ScatterAdd { indices, src, out: o, nodes, .. } => {
                let nodes = node_list(nodes, graph);
                out.kernels.push(rows_by_index::scatter_add(program, (*indices, *src, *o), (i, &nodes), arch)?);
                continue;
            }
        };
        for (b, body) in bodies.into_iter().enumerate() {
            out.kernels.push(loop_kernel::emit(program, body, i, b, arch, graph)?);
        }
    }
    for k in &out.kernels {
        let bytes = 8 * k.param_count();
        if bytes > PARAM_BYTES {
            return Err(PtxError {
                kernel: k.entry.clone(),
                message: format!("takes {bytes} bytes of parameters; PTX {PTX_VERSION} allows {PARAM_BYTES}"),
            });
        }
    }
    Ok(out)
}

/// One PTX module around one `.entry` function: the header comment, the
/// target, the `.u64` parameters by name, shared arrays, register banks
/// (`(".f32", "%f", count)`) and the body. Every emitted function is one.
pub(crate) struct Module<'a> {
    pub comment: &'a [String],
    pub arch: Arch,
    pub entry: &'a str,
    pub params: &'a [String],
    pub shared: &'a [String],
    pub regs: &'a [(&'static str, &'static str, u32)],
    pub body: &'a str,
    /// `.maxnreg`: at most this many registers a thread, so that a chosen
    /// number of blocks fits on a multiprocessor (ptxas spills if it must;
    /// `lpac kernels --ptxas-report` shows whether it did).
    pub max_registers: Option<u32>,
}

impl Module<'_> {
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut ptx = String::from("//\n");
        for line in self.comment {
            let _ = writeln!(ptx, "// {}", ascii(line));
        }
        let _ = writeln!(ptx, "//\n.version {PTX_VERSION}\n.target {}\n.address_size 64\n", self.arch.name());
        let params: Vec<String> = self.params.iter().map(|n| format!("\t.param .u64 {n}")).collect();
        let _ = writeln!(ptx, ".visible .entry {}(\n{}\n)", self.entry, params.join(",\n"));
        if let Some(n) = self.max_registers {
            let _ = writeln!(ptx, ".maxnreg {n}");
        }
        ptx.push_str("{\n");
        for decl in self.shared {
            let _ = writeln!(ptx, "\t{decl};");
        }
        for (kind, prefix, count) in self.regs {
            if *count > 0 {
                let _ = writeln!(ptx, "\t.reg {kind} {prefix}<{count}>;");
            }
        }
        ptx.push_str(self.body);
        ptx.push_str("}\n");
        ptx
    }
}

/// The graph nodes a function came from, with their source lines where the
/// graph is known: `%12 (models/tiny.lpa:22:19) %13 …`.
pub(crate) fn node_list(nodes: &[NodeId], graph: Option<&Graph>) -> String {
    let items: Vec<String> = nodes
        .iter()
        .map(|n| {
            let span = graph.and_then(|g| g.nodes.get(n.index())).and_then(|node| node.origin.span.as_ref());
            match span {
                Some(s) => format!("{n} ({}:{}:{})", s.file, s.line, s.col),
                None => n.to_string(),
            }
        })
        .collect();
    if items.is_empty() { "none".into() } else { items.join(" ") }
}

/// `text` in ASCII, as PTX must be (ptxas and the driver refuse any other
/// byte, comments included): the mathematical signs lpac's comments use
/// become their ASCII spelling, anything else (a model file's non-ASCII
/// name) `?`.
pub(crate) fn ascii(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            c if c.is_ascii() => c.to_string(),
            '·' | '×' => "*".into(),
            '−' | '–' | '—' => "-".into(),
            '∞' => "inf".into(),
            '…' => "...".into(),
            '≤' => "<=".into(),
            '≥' => ">=".into(),
            _ => "?".into(),
        })
        .collect()
}

/// A kernel name as part of a PTX identifier.
fn sanitize(name: &str) -> String {
    let s: String = name.chars().take(48).map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if s.is_empty() { "kernel".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_ascii_whatever_their_comments_hold() {
        // A model file with a non-ASCII name, and the signs the comments use.
        let comment = ["graph nodes: %3 (modèle.lpa:2:5)".to_string(), "s = q·k, −∞ where masked".to_string()];
        let ptx = Module {
            comment: &comment,
            arch: Arch::Sm90,
            entry: "k0_0_f",
            params: &[],
            shared: &[],
            regs: &[],
            body: "\tret;\n",
            max_registers: None,
        }
        .text();
        assert!(ptx.is_ascii(), "{ptx}");
        assert!(ptx.contains("// graph nodes: %3 (mod?le.lpa:2:5)") && ptx.contains("// s = q*k, -inf where masked"));
    }
}
