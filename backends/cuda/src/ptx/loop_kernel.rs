//! One loop kernel as a PTX `.entry` function.
//!
//! The code shape: a grid-stride loop over the flattened domain; the
//! domain coordinates by division; the expressions that do not depend on
//! the reduction computed once per element; then the reduce loop, the
//! expressions that read its result, and the stores at the element's
//! row-major index. A reducing kernel gives each output element a warp:
//! lane `l` accumulates reduce indices `l, l+32, …`, five butterfly
//! shuffles (`shfl.sync.bfly`) combine the 32 partial results in every
//! lane, and lane 0 stores. (So sums are added in a different order than
//! on the CPU: results agree to rounding, not bit for bit.) Registers are virtual (PTX
//! is a virtual ISA; `ptxas` allocates): one fresh register per value.
//!
//! Arithmetic uses the IEEE-rounded instructions (`add.rn`, `mul.rn`,
//! `div.rn`, `sqrt.rn`, `rcp.rn`) so `ptxas` does not contract them into
//! FMAs: elementwise results match the CPU backend and the interpreter
//! bit for bit where the operation is exact in both. `exp` and `log` use
//! the hardware's `ex2.approx`/`lg2.approx` (about 2 ulp, plus the rounding
//! of the scaling), `rsqrt` `rsqrt.approx`; `tanh` is computed as on the
//! CPU (an odd polynomial below 0.625, else `1 − 2/(e^{2|x|} + 1)`), not with
//! `tanh.approx` (whose error is about 5e-4). `sin`/`cos` reduce the
//! argument to [−π, π] first, then use `sin.approx`/`cos.approx`.
//! `max`/`min` propagate NaN (`max.NaN`), as the interpreter does.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use lpac_ir::kernel::{BufferId, Expr, ExprId, IndexMap, LoopKernel, Program};
use lpac_ir::{BinaryOp, DType, Graph, ReduceOp, UnaryOp};

use super::{Arch, BLOCK, Module, PARAM_BYTES, PtxError, PtxKernel, node_list, sanitize};

/// A virtual register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reg {
    Pred(u32),
    H16(u32),
    B32(u32),
    B64(u32),
    F32(u32),
}

impl std::fmt::Display for Reg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reg::Pred(n) => write!(f, "%p{n}"),
            Reg::H16(n) => write!(f, "%h{n}"),
            Reg::B32(n) => write!(f, "%r{n}"),
            Reg::B64(n) => write!(f, "%rd{n}"),
            Reg::F32(n) => write!(f, "%f{n}"),
        }
    }
}

type R<T> = Result<T, PtxError>;

pub(super) fn emit(
    program: &Program,
    k: &LoopKernel,
    kernel: usize,
    body: usize,
    arch: Arch,
    graph: Option<&Graph>,
) -> R<PtxKernel> {
    let entry = format!("k{kernel}_{body}_{}", sanitize(&k.name));
    let mut em = Em::new(program, k, &entry)?;
    let total: u64 = k.domain.iter().map(|&d| d as u64).product();
    let (grid, launch) = if let Some((slices, len)) = block_reduce_shape(k) {
        em.function_blocks(slices, len)?;
        let grid = (total * slices) as u32;
        let launch = format!(
            "launch: grid {grid} x block {BLOCK}: {slices} block(s) for each of {total} output element(s), each \
             reducing up to {len} values; the last to finish combines them in order"
        );
        (grid, launch)
    } else if let Some(loads) = vector_loads(program, k) {
        em.function_quads(&loads)?;
        let grid = (total / 4).div_ceil(u64::from(BLOCK)).clamp(1, 65_535) as u32;
        let how = "four consecutive elements a thread (16-byte loads and stores), grid-stride";
        (grid, format!("launch: grid {grid} x block {BLOCK}, {how} over {total} elements"))
    } else if thread_per_output(k) {
        em.function(false)?;
        let grid = total.div_ceil(u64::from(BLOCK)).clamp(1, 65_535) as u32;
        let per = "a thread per output element (neighbouring outputs, neighbouring addresses), ";
        (grid, format!("launch: grid {grid} x block {BLOCK}, {per}grid-stride over {total} elements"))
    } else {
        // A reducing kernel uses a warp (32 threads) per output element.
        let warps = k.reduction.is_some();
        em.function(warps)?;
        let threads = if warps { total.saturating_mul(32) } else { total };
        let grid = threads.div_ceil(u64::from(BLOCK)).clamp(1, 65_535) as u32;
        let per = if warps { "a warp per output element, " } else { "" };
        (grid, format!("launch: grid {grid} x block {BLOCK}, {per}grid-stride over {total} elements"))
    };
    let comment = [
        format!("kernel k{kernel} body {body}: loop {:?}, domain {:?}, reduce {:?}", k.name, k.domain, k.reduce),
        format!("graph nodes: {}", node_list(&k.nodes, graph)),
        launch,
    ];
    Ok(finish(em, entry.clone(), &comment, arch, (kernel, body), grid))
}

/// The elementwise members of a multi kernel (the AdamW update of every
/// parameter) as one function: one grid-stride loop over all their
/// elements, each element dispatched to its member.
pub(super) fn emit_fused(
    program: &Program,
    members: &[LoopKernel],
    name: &str,
    kernel: usize,
    arch: Arch,
    graph: Option<&Graph>,
) -> R<Vec<PtxKernel>> {
    // Members that take four elements a thread go together, the others
    // (a length not a multiple of 4, a broadcast output…) in a function of
    // their own: members are independent, so the order does not matter.
    let (quads, singles): (Vec<LoopKernel>, Vec<LoopKernel>) =
        members.iter().cloned().partition(|m| vector_loads(program, m).is_some());
    let mut parts = Vec::new();
    for group in [quads, singles] {
        if !group.is_empty() {
            emit_fused_parts(program, &group, name, kernel, arch, graph, &mut parts)?;
        }
    }
    Ok(parts)
}

/// One function for `members`, or — where its parameters would pass
/// [`PARAM_BYTES`] (a large model's AdamW: seven addresses per parameter) —
/// the two halves, each split again as needed. Parts run one after another.
fn emit_fused_parts(
    program: &Program,
    members: &[LoopKernel],
    name: &str,
    kernel: usize,
    arch: Arch,
    graph: Option<&Graph>,
    parts: &mut Vec<PtxKernel>,
) -> R<()> {
    let body = parts.len();
    let entry =
        format!("k{kernel}_fused{}_{}", if body == 0 { String::new() } else { body.to_string() }, sanitize(name));
    let first = members.first().ok_or_else(|| PtxError { kernel: entry.clone(), message: "no members".into() })?;
    let mut em = Em::new(program, first, &entry)?;
    let quads: Option<Vec<Vec<usize>>> = members.iter().map(|m| vector_loads(program, m)).collect();
    em.fused(members, quads.as_deref())?;
    if 8 * (em.args.len() + em.keys.len()) > PARAM_BYTES && members.len() > 1 {
        let (left, right) = members.split_at(members.len() / 2);
        emit_fused_parts(program, left, name, kernel, arch, graph, parts)?;
        return emit_fused_parts(program, right, name, kernel, arch, graph, parts);
    }
    let total: u64 = members.iter().map(|m| m.domain.iter().map(|&d| d as u64).product::<u64>()).sum();
    let per = if quads.is_some() { 4 } else { 1 };
    let grid = (total / per).div_ceil(u64::from(BLOCK)).clamp(1, 65_535) as u32;
    let mut comment = vec![format!("kernel k{kernel}: {} elementwise kernels fused ({name})", members.len())];
    for (j, m) in members.iter().enumerate() {
        comment.push(format!(
            "  member {j}: {:?} over {:?}; graph nodes: {}",
            m.name,
            m.domain,
            node_list(&m.nodes, graph)
        ));
    }
    let how = if quads.is_some() { "four consecutive elements a thread (16-byte loads and stores), " } else { "" };
    comment.push(format!("launch: grid {grid} x block {BLOCK}, {how}grid-stride over {total} elements of all members"));
    parts.push(finish(em, entry.clone(), &comment, arch, (kernel, body), grid));
    Ok(())
}

/// A row reduction at least this long takes a whole block (a cross-entropy
/// over a 32,000-word vocabulary: 1,000 loads a lane for a warp, 125 for a
/// block)…
const BLOCK_ROW_MIN: u64 = 4096;

/// Whether a rows kernel runs a block per row rather than a warp: when its
/// longest reduction is at least [`BLOCK_ROW_MIN`], or when there are too
/// few rows to fill the GPU a warp each and the reductions are long enough
/// to share among a block ([`BLOCK_REDUCE_OUTPUTS`], [`BLOCK_REDUCE_MIN`]).
fn rows_take_blocks(nrows: u64, stages: &[LoopKernel]) -> bool {
    let longest = stages
        .iter()
        .filter(|st| st.reduction.is_some())
        .map(|st| st.reduce.iter().map(|&d| d as u64).product::<u64>())
        .max()
        .unwrap_or(0);
    longest >= BLOCK_ROW_MIN || (nrows < BLOCK_REDUCE_OUTPUTS && longest >= BLOCK_REDUCE_MIN)
}

/// A rows kernel's stages (all loop kernels) as one function, a warp or a
/// block per row (see [`Em::rows`]).
pub(super) fn emit_rows(
    program: &Program,
    rows: &[usize],
    stages: &[LoopKernel],
    name: &str,
    kernel: usize,
    arch: Arch,
    graph: Option<&Graph>,
) -> R<PtxKernel> {
    let entry = format!("k{kernel}_rows_{}", sanitize(name));
    let first = stages.first().ok_or_else(|| PtxError { kernel: entry.clone(), message: "no stages".into() })?;
    let mut em = Em::new(program, first, &entry)?;
    let nrows: u64 = rows.iter().map(|&d| d as u64).product();
    let block_per_row = rows_take_blocks(nrows, stages);
    em.rows(rows, stages, block_per_row)?;
    let (grid, per) = if block_per_row {
        (nrows.clamp(1, 65_535) as u32, "a block per row")
    } else {
        (nrows.saturating_mul(32).div_ceil(u64::from(BLOCK)).clamp(1, 65_535) as u32, "a warp per row")
    };
    let mut comment = vec![format!("kernel k{kernel}: {} stages over rows {rows:?}, {per} ({name})", stages.len())];
    for (j, st) in stages.iter().enumerate() {
        comment.push(format!(
            "  stage {j}: {:?} domain {:?} reduce {:?}; graph nodes: {}",
            st.name,
            st.domain,
            st.reduce,
            node_list(&st.nodes, graph)
        ));
    }
    comment.push(format!("launch: grid {grid} x block {BLOCK}, grid-stride over {nrows} rows"));
    Ok(finish(em, entry.clone(), &comment, arch, (kernel, 0), grid))
}

/// The module text around the emitted body, and the launch record.
fn finish(
    em: Em,
    entry: String,
    comment: &[String],
    arch: Arch,
    (kernel, body): (usize, usize),
    grid: u32,
) -> PtxKernel {
    let mut params: Vec<String> = em.args.iter().map(|b| format!("b{}", b.0)).collect();
    params.extend(em.keys.iter().map(|k| format!("key{k}")));
    if em.scratch_bytes > 0 {
        params.push("scratch".into());
    }
    let c = em.counts;
    let regs = [
        (".pred", "%p", c[0]),
        (".b16", "%h", c[1]),
        (".b32", "%r", c[2]),
        (".b64", "%rd", c[3]),
        (".f32", "%f", c[4]),
    ];
    let ptx = Module {
        comment,
        arch,
        entry: &entry,
        params: &params,
        shared: &em.shared,
        regs: &regs,
        body: &em.code,
        max_registers: None,
    }
    .text();
    let args = em.args.iter().map(|b| b.0).collect();
    PtxKernel {
        stream_keys: em.keys.clone(),
        scratch_bytes: em.scratch_bytes,
        ..PtxKernel::new(entry, (kernel, body), ptx, (grid, BLOCK), args)
    }
}

struct Em<'a> {
    program: &'a Program,
    k: &'a LoopKernel,
    entry: &'a str,
    code: String,
    /// Registers used of each kind: pred, b16, b32, b64, f32.
    counts: [u32; 5],
    args: Vec<BufferId>,
    /// The `random` keys used, in order: each a `.u64` parameter after the
    /// buffers (the run's stream key for it: `dropout_key(seed, step, key)`).
    keys: Vec<u64>,
    key_regs: BTreeMap<u64, Reg>,
    bases: BTreeMap<BufferId, Reg>,
    vars: Vec<Option<Reg>>,
    vals: Vec<Option<Reg>>,
    acc: Option<Reg>,
    /// In a reducing kernel: the lane (u64) and "lane is 0".
    lane: Option<(Reg, Reg)>,
    /// Labels made so far (for unique names).
    labels: u32,
    /// A reduction with few outputs, combined across a block and blocks.
    block: Option<BlockReduce>,
    /// Shared-memory declarations of the function.
    shared: Vec<String>,
    /// Bytes of the runtime's scratch area the function uses (0: none).
    scratch_bytes: usize,
    /// Per expression: depends on a reduce variable; on the reduction.
    on_reduce: Vec<bool>,
    on_acc: Vec<bool>,
    needed: Vec<bool>,
}

/// A reduction with few outputs and long reduce loops (a gradient norm's sum
/// of squares over a whole embedding): a warp per output would leave the GPU
/// idle, so each output gets `slices` blocks, each reducing `len`
/// consecutive reduce indices with all its threads (shuffles within warps,
/// shared memory across them). Every block leaves its partial result in the
/// runtime's scratch area and counts itself in; the last of an output's
/// blocks combines the partials in slice order — the same order every run,
/// without floating-point atomics — stores the output and resets the
/// counter for the next launch.
#[derive(Clone, Copy)]
struct BlockReduce {
    slices: u64,
    len: u64,
    outputs: u64,
    /// The block's output and slice (u64), its thread index (u64 and u32),
    /// the scratch area's address, and "this thread stores the output".
    output: Reg,
    slice: Reg,
    tid: Reg,
    tid32: Reg,
    scratch: Reg,
    stores: Reg,
}

/// Fewer outputs than this use block-level reductions…
const BLOCK_REDUCE_OUTPUTS: u64 = 2048;
/// …when each reduces at least this many values; a block takes about
/// `SLICE` of them (16 a thread), and an output at most enough blocks for
/// `MAX_BLOCKS` in the grid.
const BLOCK_REDUCE_MIN: u64 = 2048;
const SLICE: u64 = 4096;
const MAX_BLOCKS: u64 = 4096;

/// `(slices, len)` when `k` should reduce with whole blocks.
fn block_reduce_shape(k: &LoopKernel) -> Option<(u64, u64)> {
    k.reduction.as_ref()?;
    let outputs: u64 = k.domain.iter().map(|&d| d as u64).product();
    let count: u64 = k.reduce.iter().map(|&d| d as u64).product();
    if outputs >= BLOCK_REDUCE_OUTPUTS || count < BLOCK_REDUCE_MIN {
        return None;
    }
    let wanted = count.div_ceil(SLICE).min((MAX_BLOCKS / outputs).max(1));
    let len = count.div_ceil(wanted);
    Some((count.div_ceil(len), len))
}

/// Outputs from which a reduction runs a thread per output…
const THREAD_PER_OUTPUT_MIN: u64 = 65_536;
/// …reducing at most this many values each.
const THREAD_PER_OUTPUT_MAX_LEN: u64 = 4096;

/// Whether a reduction should run a thread per output element, each summing
/// its values in order, rather than a warp per output: a column sum (the
/// gradient of a bias over a vocabulary: 32,001 columns of 4,096 rows).
/// With a warp per output the 32 lanes read 32 rows of one column — 32
/// memory sectors for 128 useful bytes — while with a thread each,
/// neighbouring threads read neighbouring columns of one row. Chosen when
/// there are enough outputs to fill the GPU a thread each, the reductions
/// are short enough, and every load the reduction makes steps along the
/// outputs' last axis one element at a time (not along the reduction's).
fn thread_per_output(k: &LoopKernel) -> bool {
    if k.reduction.is_none() || k.domain.is_empty() || k.reduce.is_empty() {
        return false;
    }
    let outputs: u64 = k.domain.iter().map(|&d| d as u64).product();
    let count: u64 = k.reduce.iter().map(|&d| d as u64).product();
    if outputs < THREAD_PER_OUTPUT_MIN || count > THREAD_PER_OUTPUT_MAX_LEN {
        return false;
    }
    let (last_out, last_reduce) = (k.domain.len() - 1, k.domain.len() + k.reduce.len() - 1);
    let loads: Vec<&IndexMap> = k
        .exprs
        .iter()
        .filter_map(|t| match &t.expr {
            Expr::Load { index, .. } | Expr::LoadIf { index, .. } => Some(index),
            _ => None,
        })
        .filter(|m| m.strides.iter().skip(k.domain.len()).any(|&s| s != 0))
        .collect();
    !loads.is_empty()
        && loads.iter().all(|m| m.strides.get(last_out) == Some(&1) && m.strides.get(last_reduce) != Some(&1))
}

/// For an elementwise kernel whose elements come four at a time with
/// 16-byte accesses: the loads that read the element's own position (the
/// domain's row-major layout, offset a multiple of 4), which become one
/// `ld.global.v4` per four elements; other loads (broadcasts, transposes)
/// stay one per element. `None` when the kernel does not qualify: a
/// reduction, a domain not a multiple of 4 long, or a value that is not 4
/// bytes wide (bool) among the outputs. Buffers start 64-byte aligned (the
/// memory plan, cudaMalloc), so a multiple-of-4 element offset is aligned.
fn vector_loads(program: &Program, k: &LoopKernel) -> Option<Vec<usize>> {
    let total: u64 = k.domain.iter().map(|&d| d as u64).product();
    if k.reduction.is_some() || total == 0 || !total.is_multiple_of(4) {
        return None;
    }
    let wide = |d: DType| matches!(d, DType::F32 | DType::I32);
    if k.outputs.iter().any(|(b, e)| !wide(k.exprs[e.index()].dtype) || program.buffers.get(b.index()).is_none()) {
        return None;
    }
    let contiguous = lpac_ir::types::strides(&k.domain);
    let own_position = |m: &IndexMap| {
        m.offset % 4 == 0
            && m.strides.len() == k.domain.len()
            && m.strides.iter().zip(&contiguous).all(|(&s, &c)| s == c as i64)
    };
    Some(
        k.exprs
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(&t.expr, Expr::Load { index, .. } if own_position(index) && wide(t.dtype)))
            .map(|(e, _)| e)
            .collect(),
    )
}

fn f32_imm(v: f64) -> String {
    format!("0f{:08X}", (v as f32).to_bits())
}

impl<'a> Em<'a> {
    fn new(program: &'a Program, k: &'a LoopKernel, entry: &'a str) -> R<Em<'a>> {
        let n = k.exprs.len();
        let ndom = k.domain.len();
        let mut em = Em {
            program,
            k,
            entry,
            code: String::new(),
            counts: [0; 5],
            args: Vec::new(),
            keys: Vec::new(),
            key_regs: BTreeMap::new(),
            bases: BTreeMap::new(),
            vars: vec![None; ndom + k.reduce.len()],
            vals: vec![None; n],
            acc: None,
            lane: None,
            labels: 0,
            block: None,
            shared: Vec::new(),
            scratch_bytes: 0,
            on_reduce: vec![false; n],
            on_acc: vec![false; n],
            needed: vec![false; n],
        };
        em.analyse()?;
        Ok(em)
    }

    fn err(&self, m: impl Into<String>) -> PtxError {
        PtxError { kernel: self.entry.to_string(), message: m.into() }
    }

    fn analyse(&mut self) -> R<()> {
        let k = self.k;
        let ndom = k.domain.len();
        let touches_reduce = |m: &IndexMap| m.strides.iter().skip(ndom).any(|&s| s != 0);
        for (i, t) in k.exprs.iter().enumerate() {
            if !matches!(t.dtype, DType::F32 | DType::BF16 | DType::I32 | DType::Bool) {
                return Err(
                    self.err(format!("e{i} has dtype {} (f32, bf16, i32 and bool are emitted)", t.dtype.name()))
                );
            }
            let operands: Vec<ExprId> = match &t.expr {
                Expr::Unary(_, a) | Expr::Cast(a) => vec![*a],
                Expr::Binary(_, a, b) => vec![*a, *b],
                Expr::Select(c, a, b) => vec![*c, *a, *b],
                _ => vec![],
            };
            if operands.iter().any(|o| o.index() >= i) {
                return Err(self.err(format!("e{i} uses a later expression")));
            }
            self.on_reduce[i] = match &t.expr {
                Expr::Load { index, .. } | Expr::Index(index) => touches_reduce(index),
                Expr::LoadIf { index, bound, .. } => touches_reduce(index) || touches_reduce(bound),
                Expr::Random { counter, .. } => {
                    if t.dtype != DType::F32 {
                        return Err(self.err(format!("e{i}: random numbers of dtype {}", t.dtype.name())));
                    }
                    touches_reduce(counter)
                }
                _ => operands.iter().any(|o| self.on_reduce[o.index()]),
            };
            self.on_acc[i] = matches!(t.expr, Expr::Accumulated) || operands.iter().any(|o| self.on_acc[o.index()]);
        }
        let mut stack: Vec<usize> = k.outputs.iter().map(|(_, e)| e.index()).collect();
        if let Some(r) = &k.reduction {
            stack.push(r.value.index());
        }
        while let Some(i) = stack.pop() {
            if i >= k.exprs.len() {
                return Err(self.err(format!("e{i} does not exist")));
            }
            if std::mem::replace(&mut self.needed[i], true) {
                continue;
            }
            match &k.exprs[i].expr {
                Expr::Unary(_, a) | Expr::Cast(a) => stack.push(a.index()),
                Expr::Binary(_, a, b) => stack.extend([a.index(), b.index()]),
                Expr::Select(c, a, b) => stack.extend([c.index(), a.index(), b.index()]),
                _ => {}
            }
        }
        let mut used: Vec<BufferId> = k.outputs.iter().map(|(b, _)| *b).collect();
        for (i, t) in k.exprs.iter().enumerate() {
            if let (true, Expr::Load { buffer, .. } | Expr::LoadIf { buffer, .. }) = (self.needed[i], &t.expr) {
                used.push(*buffer);
            }
        }
        used.sort();
        used.dedup();
        for (i, t) in k.exprs.iter().enumerate() {
            if let (true, Expr::Random { key, .. }) = (self.needed[i], &t.expr)
                && !self.keys.contains(key)
            {
                self.keys.push(*key);
            }
        }
        for b in &used {
            if b.index() >= self.program.buffers.len() {
                return Err(self.err(format!("buffer b{} does not exist", b.0)));
            }
        }
        self.args.extend(used);
        self.args.sort();
        self.args.dedup();
        Ok(())
    }

    /// Makes `k` the kernel whose expressions are emitted next (a member of
    /// a fused multi kernel): analyses it and adds its buffers and keys.
    fn select_kernel(&mut self, k: &'a LoopKernel) -> R<()> {
        let n = k.exprs.len();
        self.k = k;
        self.vars = vec![None; k.domain.len() + k.reduce.len()];
        self.vals = vec![None; n];
        self.on_reduce = vec![false; n];
        self.on_acc = vec![false; n];
        self.needed = vec![false; n];
        self.acc = None;
        self.analyse()
    }

    fn reg(&mut self, kind: usize) -> Reg {
        let n = self.counts[kind];
        self.counts[kind] += 1;
        match kind {
            0 => Reg::Pred(n),
            1 => Reg::H16(n),
            2 => Reg::B32(n),
            3 => Reg::B64(n),
            _ => Reg::F32(n),
        }
    }

    fn of(&mut self, d: DType) -> Reg {
        match d {
            DType::Bool => self.reg(0),
            DType::I32 => self.reg(2),
            _ => self.reg(4),
        }
    }

    fn line(&mut self, text: impl AsRef<str>) {
        self.code.push('\t');
        self.code.push_str(text.as_ref());
        self.code.push('\n');
    }

    /// A number for labels unique within the function.
    fn next_label(&mut self) -> u32 {
        self.labels += 1;
        self.labels
    }

    fn label(&mut self, name: &str) {
        let _ = writeln!(self.code, "{name}:");
    }

    /// Loads the buffer addresses and stream keys.
    fn load_params(&mut self) {
        for b in self.args.clone() {
            let raw = self.reg(3);
            let base = self.reg(3);
            self.line(format!("ld.param.u64 {raw}, [b{}];", b.0));
            self.line(format!("cvta.to.global.u64 {base}, {raw};"));
            self.bases.insert(b, base);
        }
        for key in self.keys.clone() {
            let r = self.reg(3);
            self.line(format!("ld.param.u64 {r}, [key{key}];"));
            self.key_regs.insert(key, r);
        }
    }

    /// Loads the parameters; the first element (or warp) index of this
    /// thread and the grid's stride, in `u64` registers.
    fn prologue(&mut self, warp_per_element: bool) -> (Reg, Reg) {
        self.load_params();
        let (ctaid, ntid, tid, nctaid) = (self.reg(2), self.reg(2), self.reg(2), self.reg(2));
        self.line(format!("mov.u32 {ctaid}, %ctaid.x;"));
        self.line(format!("mov.u32 {ntid}, %ntid.x;"));
        self.line(format!("mov.u32 {tid}, %tid.x;"));
        self.line(format!("mov.u32 {nctaid}, %nctaid.x;"));
        let (i, t64, stride) = (self.reg(3), self.reg(3), self.reg(3));
        self.line(format!("mul.wide.u32 {i}, {ctaid}, {ntid};"));
        self.line(format!("cvt.u64.u32 {t64}, {tid};"));
        self.line(format!("add.u64 {i}, {i}, {t64};"));
        self.line(format!("mul.wide.u32 {stride}, {nctaid}, {ntid};"));
        // A reducing kernel gives each output element a warp: `i` counts
        // warps, and the lane is this thread's place in its warp.
        if warp_per_element {
            let lane32 = self.reg(2);
            self.line(format!("and.b32 {lane32}, {tid}, 31;"));
            self.line(format!("shr.u64 {i}, {i}, 5;"));
            self.line(format!("shr.u64 {stride}, {stride}, 5;"));
            let lane = self.reg(3);
            self.line(format!("cvt.u64.u32 {lane}, {lane32};"));
            let lane0 = self.reg(0);
            self.line(format!("setp.eq.u32 {lane0}, {lane32}, 0;"));
            self.lane = Some((lane, lane0));
        }
        (i, stride)
    }

    /// One element of the current kernel at flat index `i`: coordinates,
    /// values, the reduction, the stores.
    fn element(&mut self, i: Reg) -> R<()> {
        let k = self.k;
        self.coordinates(i, 0, &k.domain.clone())?;
        // Per element: everything that needs neither a reduce variable nor
        // the reduction's result.
        for e in 0..k.exprs.len() {
            if self.needed[e] && !self.on_reduce[e] && !self.on_acc[e] {
                self.value(e)?;
            }
        }
        if let Some(r) = k.reduction.clone() {
            self.reduction(r.op, r.value.index())?;
        }
        let mut stores = Vec::new();
        for &(b, e) in &k.outputs {
            stores.push((b, self.value(e.index())?, k.exprs[e.index()].dtype));
        }
        for (b, v, d) in stores {
            let addr = self.address(b, AddrOf::Flat(i), d)?;
            // In a reducing kernel every lane holds the result; lane 0 stores
            // (with block-level reductions: thread 0 of the last block).
            let guard = match (&k.reduction, &self.block) {
                (None, _) => None,
                (Some(_), Some(b)) => Some(b.stores),
                (Some(_), None) => self.lane.map(|(_, lane0)| lane0),
            };
            self.store(addr, v, d, guard);
        }
        // Values of this element are recomputed for the next one.
        self.vals.iter_mut().for_each(|v| *v = None);
        self.acc = None;
        Ok(())
    }

    /// A grid-stride loop over the elements: a thread each, or a warp each
    /// (`warps`, a reducing kernel's usual shape).
    fn function(&mut self, warps: bool) -> R<()> {
        let k = self.k;
        let total: u64 = k.domain.iter().map(|&d| d as u64).product();
        let (i, stride) = self.prologue(warps);
        let done = self.reg(0);
        self.label("$L_element");
        self.line(format!("setp.ge.u64 {done}, {i}, {total};"));
        self.line(format!("@{done} bra $L_done;"));
        self.element(i)?;
        self.line(format!("add.u64 {i}, {i}, {stride};"));
        self.line("bra.uni $L_element;");
        self.label("$L_done");
        self.line("ret;");
        Ok(())
    }

    /// An elementwise kernel four elements at a time ([`vector_loads`]):
    /// the loads at the element's own position as one 16-byte load each,
    /// the expressions for each of the four elements, each output as one
    /// 16-byte store.
    fn function_quads(&mut self, vector: &[usize]) -> R<()> {
        let k = self.k;
        let total: u64 = k.domain.iter().map(|&d| d as u64).product();
        let (quad, stride) = self.prologue(false);
        let (done, first) = (self.reg(0), self.reg(3));
        self.label("$L_element");
        self.line(format!("setp.ge.u64 {done}, {quad}, {};", total / 4));
        self.line(format!("@{done} bra $L_done;"));
        self.line(format!("shl.b64 {first}, {quad}, 2;"));
        self.quad(first, vector)?;
        self.line(format!("add.u64 {quad}, {quad}, {stride};"));
        self.line("bra.uni $L_element;");
        self.label("$L_done");
        self.line("ret;");
        Ok(())
    }

    /// Elements `first .. first + 4` of the current kernel: the loads in
    /// `vector` as one 16-byte load each, every output as one 16-byte store.
    fn quad(&mut self, first: Reg, vector: &[usize]) -> R<()> {
        let k = self.k;
        let flat = self.reg(3);
        let mut lanes: BTreeMap<usize, [Reg; 4]> = BTreeMap::new();
        // The same position of the same buffer is loaded once.
        let mut loaded: BTreeMap<(BufferId, i64), [Reg; 4]> = BTreeMap::new();
        for &e in vector {
            if !self.needed[e] {
                continue;
            }
            let Expr::Load { buffer, index } = &k.exprs[e].expr else { continue };
            if let Some(regs) = loaded.get(&(*buffer, index.offset)) {
                lanes.insert(e, *regs);
                continue;
            }
            let d = k.exprs[e].dtype;
            let regs = [self.of(d), self.of(d), self.of(d), self.of(d)];
            let at = self.reg(3);
            self.line(format!("add.s64 {at}, {first}, {};", index.offset));
            let addr = self.address(*buffer, AddrOf::Flat(at), d)?;
            let ty = if d == DType::F32 { "f32" } else { "s32" };
            self.line(format!("ld.global.v4.{ty} {{{}, {}, {}, {}}}, [{addr}];", regs[0], regs[1], regs[2], regs[3]));
            loaded.insert((*buffer, index.offset), regs);
            lanes.insert(e, regs);
        }
        let mut results: Vec<Vec<Reg>> = vec![Vec::new(); k.outputs.len()];
        for lane in 0..4 {
            self.line(format!("add.u64 {flat}, {first}, {lane};"));
            self.coordinates(flat, 0, &k.domain.clone())?;
            for (&e, regs) in &lanes {
                self.vals[e] = Some(regs[lane]);
            }
            for (o, &(_, e)) in k.outputs.iter().enumerate() {
                let v = self.value(e.index())?;
                results[o].push(v);
            }
            self.vals.iter_mut().for_each(|v| *v = None);
        }
        for (&(b, e), regs) in k.outputs.iter().zip(&results) {
            let d = k.exprs[e.index()].dtype;
            let addr = self.address(b, AddrOf::Flat(first), d)?;
            let ty = if d == DType::F32 { "f32" } else { "s32" };
            self.line(format!("st.global.v4.{ty} [{addr}], {{{}, {}, {}, {}}};", regs[0], regs[1], regs[2], regs[3]));
        }
        Ok(())
    }

    /// The kernel with block-level reductions ([`BlockReduce`]): block `b`
    /// takes output `b / slices`, slice `b % slices`; no grid-stride loop
    /// (the grid is exactly outputs × slices).
    fn function_blocks(&mut self, slices: u64, len: u64) -> R<()> {
        let outputs: u64 = self.k.domain.iter().map(|&d| d as u64).product();
        self.load_params();
        let (raw, scratch) = (self.reg(3), self.reg(3));
        self.line(format!("ld.param.u64 {raw}, [scratch];"));
        self.line(format!("cvta.to.global.u64 {scratch}, {raw};"));
        let (ctaid, tid32, lane32) = (self.reg(2), self.reg(2), self.reg(2));
        let (block, output, slice, tid, lane) = (self.reg(3), self.reg(3), self.reg(3), self.reg(3), self.reg(3));
        let (lane0, stores) = (self.reg(0), self.reg(0));
        self.line(format!("mov.u32 {ctaid}, %ctaid.x;"));
        self.line(format!("mov.u32 {tid32}, %tid.x;"));
        self.line(format!("cvt.u64.u32 {block}, {ctaid};"));
        self.line(format!("div.u64 {output}, {block}, {slices};"));
        self.line(format!("rem.u64 {slice}, {block}, {slices};"));
        self.line(format!("cvt.u64.u32 {tid}, {tid32};"));
        self.line(format!("and.b32 {lane32}, {tid32}, 31;"));
        self.line(format!("cvt.u64.u32 {lane}, {lane32};"));
        self.line(format!("setp.eq.u32 {lane0}, {lane32}, 0;"));
        self.lane = Some((lane, lane0));
        self.block = Some(BlockReduce { slices, len, outputs, output, slice, tid, tid32, scratch, stores });
        self.shared.push(format!(".shared .align 4 .b8 lpac_warps[{}]", 4 * (BLOCK / 32)));
        // Counters first (one u32 per output), then the partial results.
        self.scratch_bytes = (4 * outputs + 4 * outputs * slices) as usize;
        self.element(output)?;
        self.line("ret;");
        Ok(())
    }

    /// A rows kernel as one function: a warp per row, grid-stride over the
    /// rows, running every stage on its row before the next — a reducing
    /// stage (one value per row) with the warp's lanes and shuffles, an
    /// elementwise stage with the lanes taking the row's elements in turn —
    /// with `bar.warp.sync` between stages so each sees what the last wrote.
    ///
    /// With `block_per_row` ([`rows_take_blocks`]) the same with a block: a
    /// row's reductions over all its threads, combined across warps in
    /// shared memory as a one-slice [`BlockReduce`] (thread 0 stores), its
    /// elementwise stages a thread per element in turn, and `bar.sync`
    /// between stages — which also keeps a stage's use of the warps'
    /// shared slots apart from the next stage's.
    fn rows(&mut self, rows: &[usize], stages: &'a [LoopKernel], block_per_row: bool) -> R<()> {
        for st in &stages[1..] {
            self.select_kernel(st)?;
        }
        let nrows: u64 = rows.iter().map(|&d| d as u64).product();
        let (row, stride) = if block_per_row { self.block_rows_prologue() } else { self.prologue(true) };
        let (lane, _) = self.lane.ok_or_else(|| self.err("rows without lanes"))?;
        let (first, step, sync) = match self.block {
            Some(b) => (b.tid, BLOCK, "bar.sync 0;"),
            None => (lane, 32, "bar.warp.sync -1;"),
        };
        let (done, more, x, flat) = (self.reg(0), self.reg(0), self.reg(3), self.reg(3));
        self.label("$L_row");
        self.line(format!("setp.ge.u64 {done}, {row}, {nrows};"));
        self.line(format!("@{done} bra $L_done;"));
        for st in stages {
            self.select_kernel(st)?;
            let per_row: u64 = st.domain[rows.len()..].iter().map(|&d| d as u64).product();
            if st.reduction.is_some() {
                if per_row != 1 {
                    return Err(self.err("a reducing stage with more than one value per row"));
                }
                self.element(row)?;
            } else {
                // Lanes take elements lane, lane + 32, … of the row (threads:
                // tid, tid + BLOCK, …).
                let n = self.next_label();
                self.line(format!("mov.u64 {x}, {first};"));
                self.line(format!("setp.ge.u64 {more}, {x}, {per_row};"));
                self.line(format!("@{more} bra $L_stage_end{n};"));
                self.label(&format!("$L_stage{n}"));
                self.line(format!("mad.lo.u64 {flat}, {row}, {per_row}, {x};"));
                self.element(flat)?;
                self.line(format!("add.u64 {x}, {x}, {step};"));
                self.line(format!("setp.lt.u64 {more}, {x}, {per_row};"));
                self.line(format!("@{more} bra $L_stage{n};"));
                self.label(&format!("$L_stage_end{n}"));
            }
            self.line(sync);
        }
        self.line(format!("add.u64 {row}, {row}, {stride};"));
        self.line("bra.uni $L_row;");
        self.label("$L_done");
        self.line("ret;");
        Ok(())
    }

    /// The prologue of a block-per-row rows kernel: block `b` takes rows
    /// `b`, `b + grid`, …; every reduction is a one-slice [`BlockReduce`]
    /// over the block's threads. The row and the grid's stride in blocks.
    fn block_rows_prologue(&mut self) -> (Reg, Reg) {
        self.load_params();
        let (ctaid, nctaid, tid32, lane32) = (self.reg(2), self.reg(2), self.reg(2), self.reg(2));
        let (row, stride, tid, lane, zero, unused) =
            (self.reg(3), self.reg(3), self.reg(3), self.reg(3), self.reg(3), self.reg(3));
        let (lane0, stores) = (self.reg(0), self.reg(0));
        self.line(format!("mov.u32 {ctaid}, %ctaid.x;"));
        self.line(format!("mov.u32 {nctaid}, %nctaid.x;"));
        self.line(format!("mov.u32 {tid32}, %tid.x;"));
        self.line(format!("cvt.u64.u32 {row}, {ctaid};"));
        self.line(format!("cvt.u64.u32 {stride}, {nctaid};"));
        self.line(format!("cvt.u64.u32 {tid}, {tid32};"));
        self.line(format!("and.b32 {lane32}, {tid32}, 31;"));
        self.line(format!("cvt.u64.u32 {lane}, {lane32};"));
        self.line(format!("setp.eq.u32 {lane0}, {lane32}, 0;"));
        self.line(format!("mov.u64 {zero}, 0;"));
        self.lane = Some((lane, lane0));
        // One slice as long as any reduction (`min` with each stage's count
        // bounds it): no scratch area, no counters.
        let (outputs, len) = (1, u64::MAX >> 8);
        self.block = Some(BlockReduce {
            slices: 1,
            len,
            outputs,
            output: row,
            slice: zero,
            tid,
            tid32,
            scratch: unused,
            stores,
        });
        self.shared.push(format!(".shared .align 4 .b8 lpac_warps[{}]", 4 * (BLOCK / 32)));
        (row, stride)
    }

    /// Several elementwise kernels in one grid-stride loop over their
    /// elements laid end to end: element `i` belongs to the member whose
    /// range holds it. With `quads` (every member qualifies for
    /// [`vector_loads`], so every range starts at a multiple of 4) a thread
    /// takes four elements at a time, as [`Em::function_quads`].
    fn fused(&mut self, members: &'a [LoopKernel], quads: Option<&[Vec<usize>]>) -> R<()> {
        for m in &members[1..] {
            self.select_kernel(m)?;
        }
        let ends: Vec<u64> = members
            .iter()
            .scan(0u64, |end, m| {
                *end += m.domain.iter().map(|&d| d as u64).product::<u64>();
                Some(*end)
            })
            .collect();
        let total = *ends.last().unwrap_or(&0);
        let (i, stride) = self.prologue(false);
        let (done, here, local, first) = (self.reg(0), self.reg(0), self.reg(3), self.reg(3));
        let per = if quads.is_some() { 4 } else { 1 };
        self.label("$L_element");
        self.line(format!("setp.ge.u64 {done}, {i}, {};", total / per));
        self.line(format!("@{done} bra $L_done;"));
        self.line(format!("mul.lo.u64 {first}, {i}, {per};"));
        self.dispatch(first, &ends, 0, members.len() - 1, here);
        let mut start = 0;
        for (j, m) in members.iter().enumerate() {
            self.label(&format!("$L_member{j}"));
            self.select_kernel(m)?;
            self.line(format!("sub.u64 {local}, {first}, {start};"));
            match quads {
                Some(vectors) => self.quad(local, &vectors[j])?,
                None => self.element(local)?,
            }
            self.line("bra.uni $L_next;");
            start = ends[j];
        }
        self.label("$L_next");
        self.line(format!("add.u64 {i}, {i}, {stride};"));
        self.line("bra.uni $L_element;");
        self.label("$L_done");
        self.line("ret;");
        Ok(())
    }

    /// Branches to `$L_member{j}` for the member `j` in `lo..=hi` whose
    /// elements hold `i` (members end at `ends`): a binary search, so the
    /// last of a hundred members costs seven tests, not a hundred.
    fn dispatch(&mut self, i: Reg, ends: &[u64], lo: usize, hi: usize, p: Reg) {
        if lo == hi {
            self.line(format!("bra.uni $L_member{lo};"));
            return;
        }
        let mid = (lo + hi) / 2;
        let upper = format!("$L_upper{}", self.next_label());
        self.line(format!("setp.ge.u64 {p}, {i}, {};", ends[mid]));
        self.line(format!("@{p} bra {upper};"));
        self.dispatch(i, ends, lo, mid, p);
        self.label(&upper);
        self.dispatch(i, ends, mid + 1, hi, p);
    }

    /// Row-major coordinates of `flat` over `extents` into loop variables
    /// `first..`. `flat` is below the extents' product; where that fits in
    /// 32 bits (always, in practice) the divisions are 32-bit: ptxas turns a
    /// 64-bit division and remainder by a constant into ~120 instructions,
    /// a 32-bit pair into a handful — per element, in an elementwise kernel
    /// over a 32,001-word vocabulary's logits.
    fn coordinates(&mut self, flat: Reg, first: usize, extents: &[usize]) -> R<()> {
        let total = extents.iter().try_fold(1u64, |acc, &e| acc.checked_mul(e as u64));
        if total.is_some_and(|t| t <= u64::from(u32::MAX)) {
            return self.coordinates32(flat, first, extents);
        }
        let mut rest = flat;
        for (a, &extent) in extents.iter().enumerate().rev() {
            let v = self.reg(3);
            if a == 0 {
                self.line(format!("mov.u64 {v}, {rest};"));
            } else {
                let q = self.reg(3);
                self.line(format!("rem.u64 {v}, {rest}, {extent};"));
                self.line(format!("div.u64 {q}, {rest}, {extent};"));
                rest = q;
            }
            self.vars[first + a] = Some(v);
        }
        Ok(())
    }

    /// [`Em::coordinates`] with 32-bit divisions (`flat` below 2^32).
    fn coordinates32(&mut self, flat: Reg, first: usize, extents: &[usize]) -> R<()> {
        let mut rest = self.reg(2);
        self.line(format!("cvt.u32.u64 {rest}, {flat};"));
        for (a, &extent) in extents.iter().enumerate().rev() {
            let (v32, v) = (self.reg(2), self.reg(3));
            if a == 0 {
                self.line(format!("mov.u32 {v32}, {rest};"));
            } else {
                let q = self.reg(2);
                self.line(format!("rem.u32 {v32}, {rest}, {extent};"));
                self.line(format!("div.u32 {q}, {rest}, {extent};"));
                rest = q;
            }
            self.line(format!("cvt.u64.u32 {v}, {v32};"));
            self.vars[first + a] = Some(v);
        }
        Ok(())
    }

    fn reduction(&mut self, op: ReduceOp, value: usize) -> R<()> {
        let k = self.k;
        let d = k.exprs[value].dtype;
        let acc = self.of(d);
        let init = match (op, d) {
            (ReduceOp::Sum, DType::F32) => f32_imm(0.0),
            (ReduceOp::Max, DType::F32) => f32_imm(f64::NEG_INFINITY),
            (ReduceOp::Sum, _) => "0".into(),
            (ReduceOp::Max, _) => i32::MIN.to_string(),
        };
        let ty = if d == DType::F32 { "f32" } else { "s32" };
        if d == DType::Bool {
            return Err(self.err("a reduction of bool values"));
        }
        if d == DType::BF16 {
            return Err(self.err("a reduction of bf16 values (mixed precision keeps reductions in f32)"));
        }
        self.line(format!("mov.{ty} {acc}, {init};"));
        let count: u64 = k.reduce.iter().map(|&x| x as u64).product();
        // This thread's reduce indices: from `r` by `step` below `end` — a
        // warp's lanes over all of them, a block's threads over its slice,
        // or (a thread per output) all of them in order.
        let (r, more) = (self.reg(3), self.reg(0));
        let (step, end) = match (self.block, self.lane) {
            (None, None) => {
                self.line(format!("mov.u64 {r}, 0;"));
                (1, count.to_string())
            }
            (None, Some((lane, _))) => {
                self.line(format!("mov.u64 {r}, {lane};"));
                (32, count.to_string())
            }
            (Some(b), _) => {
                let end = self.reg(3);
                self.line(format!("mul.lo.u64 {end}, {}, {};", b.slice, b.len));
                self.line(format!("add.u64 {r}, {end}, {};", b.tid));
                self.line(format!("add.u64 {end}, {end}, {};", b.len));
                self.line(format!("min.u64 {end}, {end}, {count};"));
                (u64::from(BLOCK), end.to_string())
            }
        };
        if count > 0 {
            // Each thread folds its indices into `acc`; the warp then
            // combines its 32 partial results (butterfly shuffles).
            self.line(format!("setp.ge.u64 {more}, {r}, {end};"));
            let n = self.next_label();
            self.line(format!("@{more} bra $L_reduce_end{n};"));
            self.label(&format!("$L_reduce{n}"));
            self.coordinates(r, k.domain.len(), &k.reduce.clone())?;
            let inner: Vec<usize> =
                (0..k.exprs.len()).filter(|&e| self.needed[e] && self.on_reduce[e] && !self.on_acc[e]).collect();
            for &e in &inner {
                self.value(e)?;
            }
            let v = self.value(value)?;
            self.fold(op, d, acc, v);
            // Values inside the loop are recomputed every iteration.
            for &e in &inner {
                self.vals[e] = None;
            }
            self.line(format!("add.u64 {r}, {r}, {step};"));
            self.line(format!("setp.lt.u64 {more}, {r}, {end};"));
            self.line(format!("@{more} bra $L_reduce{n};"));
            self.label(&format!("$L_reduce_end{n}"));
        }
        if self.lane.is_some() {
            self.fold_warp(op, d, acc);
        }
        if let Some(b) = self.block {
            self.combine_blocks(b, op, d, acc, &init);
        }
        self.acc = Some(acc);
        Ok(())
    }

    /// `acc = acc ⊕ x` for the reduction `op`.
    fn fold(&mut self, op: ReduceOp, d: DType, acc: Reg, x: Reg) {
        match (op, d) {
            (ReduceOp::Sum, DType::F32) => self.line(format!("add.rn.f32 {acc}, {acc}, {x};")),
            (ReduceOp::Max, DType::F32) => self.line(format!("max.NaN.f32 {acc}, {acc}, {x};")),
            (ReduceOp::Sum, _) => self.line(format!("add.s32 {acc}, {acc}, {x};")),
            (ReduceOp::Max, _) => self.line(format!("max.s32 {acc}, {acc}, {x};")),
        }
    }

    /// Folds the other 31 lanes' `acc` into every lane (butterfly shuffles).
    fn fold_warp(&mut self, op: ReduceOp, d: DType, acc: Reg) {
        for offset in [16, 8, 4, 2, 1] {
            let other = self.of(d);
            self.line(format!("shfl.sync.bfly.b32 {other}, {acc}, {offset}, 31, -1;"));
            self.fold(op, d, acc, other);
        }
    }

    /// Thread 0: `acc` = the block's warps' results (in `lpac_warps`), in
    /// warp order.
    fn fold_block_warps(&mut self, op: ReduceOp, d: DType, acc: Reg) {
        let ty = if d == DType::F32 { "f32" } else { "s32" };
        let other = self.of(d);
        self.line(format!("ld.shared.{ty} {acc}, [lpac_warps];"));
        for w in 1..BLOCK / 32 {
            self.line(format!("ld.shared.{ty} {other}, [lpac_warps+{}];", 4 * w));
            self.fold(op, d, acc, other);
        }
    }

    /// After the warps' shuffles (see [`BlockReduce`]): thread 0 combines
    /// the block's warps through shared memory. With several slices it
    /// leaves the block's partial in the scratch area and counts the block
    /// in; the output's last block then folds all partials — each thread a
    /// fixed, strided share, then warps and block as before — and resets the
    /// counter. Sets `stores` on the one thread that holds the output.
    fn combine_blocks(&mut self, b: BlockReduce, op: ReduceOp, d: DType, acc: Reg, init: &str) {
        let ty = if d == DType::F32 { "f32" } else { "s32" };
        let lane0 = self.lane.expect("block reductions have lanes").1;
        let (warp, at, thread0) = (self.reg(2), self.reg(2), self.reg(0));
        let n = self.next_label();
        let done = format!("$L_blocks_done{n}");
        self.line(format!("shr.u32 {warp}, {}, 5;", b.tid32));
        self.line(format!("mov.u32 {at}, lpac_warps;"));
        self.line(format!("mad.lo.u32 {at}, {warp}, 4, {at};"));
        self.line(format!("@{lane0} st.shared.{ty} [{at}], {acc};"));
        self.line("bar.sync 0;");
        self.line(format!("setp.eq.u32 {thread0}, {}, 0;", b.tid32));
        self.line(format!("setp.ne.u32 {}, {}, {};", b.stores, b.tid32, b.tid32));
        if b.slices == 1 {
            self.line(format!("@!{thread0} bra {done};"));
            self.fold_block_warps(op, d, acc);
            self.line(format!("mov.pred {}, {thread0};", b.stores));
            self.label(&done);
            return;
        }
        self.shared.push(".shared .align 4 .b8 lpac_last[4]".into());
        let (counter, partials, addr, j) = (self.reg(3), self.reg(3), self.reg(3), self.reg(3));
        let (old, flag, last, more) = (self.reg(2), self.reg(2), self.reg(0), self.reg(0));
        // Counters at the start of the scratch area, partials after.
        self.line(format!("mad.lo.u64 {counter}, {}, 4, {};", b.output, b.scratch));
        self.line(format!("mad.lo.u64 {partials}, {}, {}, {};", b.output, 4 * b.slices, b.scratch));
        self.line(format!("add.u64 {partials}, {partials}, {};", 4 * b.outputs));
        let counted = format!("$L_counted{n}");
        self.line(format!("@!{thread0} bra {counted};"));
        self.fold_block_warps(op, d, acc);
        self.line(format!("mad.lo.u64 {addr}, {}, 4, {partials};", b.slice));
        self.line(format!("st.global.{ty} [{addr}], {acc};"));
        self.line("membar.gl;");
        self.line(format!("atom.global.add.u32 {old}, [{counter}], 1;"));
        self.line(format!("setp.eq.u32 {last}, {old}, {};", b.slices - 1));
        self.line(format!("selp.u32 {flag}, 1, 0, {last};"));
        self.line(format!("st.shared.u32 [lpac_last], {flag};"));
        self.label(&counted);
        self.line("bar.sync 0;");
        self.line(format!("ld.shared.u32 {flag}, [lpac_last];"));
        self.line(format!("setp.ne.u32 {last}, {flag}, 0;"));
        // The same for every thread of the block: the barriers below are
        // reached by all of it or none.
        self.line(format!("@!{last} bra {done};"));
        self.line("membar.gl;");
        self.line(format!("mov.{ty} {acc}, {init};"));
        self.line(format!("mov.u64 {j}, {};", b.tid));
        self.line(format!("setp.ge.u64 {more}, {j}, {};", b.slices));
        self.line(format!("@{more} bra $L_partials_end{n};"));
        self.label(&format!("$L_partials{n}"));
        self.line(format!("mad.lo.u64 {addr}, {j}, 4, {partials};"));
        let other = self.of(d);
        self.line(format!("ld.global.cg.{ty} {other}, [{addr}];"));
        self.fold(op, d, acc, other);
        self.line(format!("add.u64 {j}, {j}, {BLOCK};"));
        self.line(format!("setp.lt.u64 {more}, {j}, {};", b.slices));
        self.line(format!("@{more} bra $L_partials{n};"));
        self.label(&format!("$L_partials_end{n}"));
        self.fold_warp(op, d, acc);
        // Thread 0 read the warps' slots before the last barrier.
        self.line(format!("@{lane0} st.shared.{ty} [{at}], {acc};"));
        self.line("bar.sync 0;");
        self.line(format!("@!{thread0} bra {done};"));
        self.fold_block_warps(op, d, acc);
        self.line(format!("st.global.u32 [{counter}], 0;"));
        self.line(format!("mov.pred {}, {thread0};", b.stores));
        self.label(&done);
    }

    /// `offset + Σ stride · var` as an s64 register.
    fn affine(&mut self, map: &IndexMap) -> R<Reg> {
        let a = self.reg(3);
        self.line(format!("mov.s64 {a}, {};", map.offset));
        for (v, &s) in map.strides.iter().enumerate() {
            if s == 0 {
                continue;
            }
            let var = self
                .vars
                .get(v)
                .copied()
                .flatten()
                .ok_or_else(|| self.err(format!("loop variable {v} is not in scope")))?;
            self.line(format!("mad.lo.s64 {a}, {var}, {s}, {a};"));
        }
        Ok(a)
    }

    fn address(&mut self, b: BufferId, at: AddrOf, d: DType) -> R<Reg> {
        let elem = match at {
            AddrOf::Flat(r) => r,
            AddrOf::Map(m) => self.affine(&m)?,
        };
        let base = *self.bases.get(&b).ok_or_else(|| self.err(format!("buffer b{} has no base", b.0)))?;
        let size = match d {
            DType::Bool => 1,
            DType::BF16 => 2,
            _ => 4,
        };
        let addr = self.reg(3);
        self.line(format!("mad.lo.s64 {addr}, {elem}, {size}, {base};"));
        Ok(addr)
    }

    fn store(&mut self, addr: Reg, v: Reg, d: DType, guard: Option<Reg>) {
        let g = guard.map_or(String::new(), |p| format!("@{p} "));
        match d {
            DType::F32 => self.line(format!("{g}st.global.f32 [{addr}], {v};")),
            DType::BF16 => {
                // The value is bf16 already: the conversion is exact.
                let h = self.reg(1);
                self.line(format!("cvt.rn.bf16.f32 {h}, {v};"));
                self.line(format!("{g}st.global.b16 [{addr}], {h};"));
            }
            DType::I32 => self.line(format!("{g}st.global.s32 [{addr}], {v};")),
            _ => {
                let h = self.reg(1);
                self.line(format!("selp.u16 {h}, 1, 0, {v};"));
                self.line(format!("{g}st.global.u8 [{addr}], {h};"));
            }
        }
    }

    fn load(&mut self, addr: Reg, d: DType, guard: Option<Reg>) -> Reg {
        let g = guard.map_or(String::new(), |p| format!("@{p} "));
        match d {
            DType::F32 => {
                let r = self.reg(4);
                self.line(format!("{g}ld.global.f32 {r}, [{addr}];"));
                r
            }
            DType::BF16 => {
                let (h, r) = (self.reg(1), self.reg(4));
                self.line(format!("mov.b16 {h}, 0;"));
                self.line(format!("{g}ld.global.b16 {h}, [{addr}];"));
                self.line(format!("cvt.f32.bf16 {r}, {h};"));
                r
            }
            DType::I32 => {
                let r = self.reg(2);
                self.line(format!("{g}ld.global.s32 {r}, [{addr}];"));
                r
            }
            _ => {
                let h = self.reg(1);
                let p = self.reg(0);
                self.line(format!("{g}ld.global.u8 {h}, [{addr}];"));
                self.line(format!("setp.ne.u16 {p}, {h}, 0;"));
                p
            }
        }
    }

    /// A constant of dtype `d` in a fresh register.
    fn constant(&mut self, v: f64, d: DType) -> Reg {
        let r = self.of(d);
        match d {
            DType::F32 => self.line(format!("mov.f32 {r}, {};", f32_imm(v))),
            DType::I32 => self.line(format!("mov.s32 {r}, {};", saturate_i32(v))),
            _ => {
                let t = self.reg(2);
                self.line(format!("mov.u32 {t}, {};", u32::from(v != 0.0)));
                self.line(format!("setp.ne.u32 {r}, {t}, 0;"));
            }
        }
        r
    }

    fn value(&mut self, e: usize) -> R<Reg> {
        if let Some(v) = self.vals[e] {
            return Ok(v);
        }
        let t = self.k.exprs[e].clone();
        // bf16 arithmetic: in f32, rounded after (loads and casts round
        // themselves).
        let stored = t.dtype;
        let d = if stored == DType::BF16 { DType::F32 } else { stored };
        let rounds = stored == DType::BF16
            && !matches!(t.expr, Expr::Load { .. } | Expr::LoadIf { .. } | Expr::Cast(_) | Expr::Accumulated);
        let v = match &t.expr {
            Expr::Load { buffer, index } => {
                let addr = self.address(*buffer, AddrOf::Map(index.clone()), stored)?;
                self.load(addr, stored, None)
            }
            Expr::LoadIf { buffer, index, bound, lo, hi, default } => {
                let b = self.affine(bound)?;
                let (p1, p2, p) = (self.reg(0), self.reg(0), self.reg(0));
                self.line(format!("setp.ge.s64 {p1}, {b}, {lo};"));
                self.line(format!("setp.lt.s64 {p2}, {b}, {hi};"));
                self.line(format!("and.pred {p}, {p1}, {p2};"));
                let addr = self.address(*buffer, AddrOf::Map(index.clone()), stored)?;
                let out = self.constant(*default, d);
                let loaded = self.load(addr, stored, Some(p));
                self.select_into(out, p, loaded, d);
                out
            }
            Expr::Const(v) => self.constant(*v, d),
            Expr::Index(map) => {
                let a = self.affine(map)?;
                let r = self.of(d);
                match d {
                    DType::F32 => self.line(format!("cvt.rn.f32.s64 {r}, {a};")),
                    DType::I32 => self.line(format!("cvt.s32.s64 {r}, {a};")),
                    _ => self.line(format!("setp.ne.s64 {r}, {a}, 0;")),
                }
                r
            }
            Expr::Random { key, counter } => {
                let c = self.affine(counter)?;
                let k =
                    *self.key_regs.get(key).ok_or_else(|| self.err(format!("e{e}: stream key {key} not loaded")))?;
                self.uniform(k, c)
            }
            Expr::Unary(op, a) => {
                let x = self.value(a.index())?;
                self.unary(*op, x, d)?
            }
            Expr::Binary(op, a, b) => {
                let (x, y) = (self.value(a.index())?, self.value(b.index())?);
                let od = match self.k.exprs[a.index()].dtype {
                    DType::BF16 => DType::F32,
                    od => od,
                };
                self.binary(*op, x, y, od)?
            }
            Expr::Select(c, a, b) => {
                let (c, x, y) = (self.value(c.index())?, self.value(a.index())?, self.value(b.index())?);
                let r = self.of(d);
                match d {
                    DType::F32 => self.line(format!("selp.f32 {r}, {x}, {y}, {c};")),
                    DType::I32 => self.line(format!("selp.s32 {r}, {x}, {y}, {c};")),
                    _ => {
                        let (nc, t1, t2) = (self.reg(0), self.reg(0), self.reg(0));
                        self.line(format!("not.pred {nc}, {c};"));
                        self.line(format!("and.pred {t1}, {c}, {x};"));
                        self.line(format!("and.pred {t2}, {nc}, {y};"));
                        self.line(format!("or.pred {r}, {t1}, {t2};"));
                    }
                }
                r
            }
            Expr::Cast(a) => {
                let x = self.value(a.index())?;
                self.cast(x, self.k.exprs[a.index()].dtype, stored)
            }
            Expr::Accumulated => self.acc.ok_or_else(|| self.err(format!("e{e} reads the reduction outside it")))?,
        };
        let v = if rounds { self.round_bf16(v) } else { v };
        self.vals[e] = Some(v);
        Ok(v)
    }

    /// A uniform f32 in [0, 1) exactly as `lpac_ir::random::uniform_f32`:
    /// Philox4x32-10 of counter `(c, 0)` under the 64-bit stream key, the
    /// top 24 bits of word 0 times 2^-24.
    fn uniform(&mut self, key: Reg, counter: Reg) -> Reg {
        use lpac_ir::random::{PHILOX_M0, PHILOX_M1, PHILOX_ROUNDS, PHILOX_W0, PHILOX_W1};
        let mut c = [self.reg(2), self.reg(2), self.reg(2), self.reg(2)];
        let mut k = [self.reg(2), self.reg(2)];
        self.line(format!("cvt.u32.u64 {}, {counter};", c[0]));
        let hi = self.reg(3);
        self.line(format!("shr.u64 {hi}, {counter}, 32;"));
        self.line(format!("cvt.u32.u64 {}, {hi};", c[1]));
        self.line(format!("mov.u32 {}, 0;", c[2]));
        self.line(format!("mov.u32 {}, 0;", c[3]));
        self.line(format!("cvt.u32.u64 {}, {key};", k[0]));
        let khi = self.reg(3);
        self.line(format!("shr.u64 {khi}, {key}, 32;"));
        self.line(format!("cvt.u32.u64 {}, {khi};", k[1]));
        for round in 0..PHILOX_ROUNDS {
            if round > 0 {
                let (k0, k1) = (self.reg(2), self.reg(2));
                self.line(format!("add.u32 {k0}, {}, 0x{PHILOX_W0:08X};", k[0]));
                self.line(format!("add.u32 {k1}, {}, 0x{PHILOX_W1:08X};", k[1]));
                k = [k0, k1];
            }
            let (hi0, lo0, hi1, lo1) = (self.reg(2), self.reg(2), self.reg(2), self.reg(2));
            self.line(format!("mul.hi.u32 {hi0}, {}, 0x{PHILOX_M0:08X};", c[0]));
            self.line(format!("mul.lo.u32 {lo0}, {}, 0x{PHILOX_M0:08X};", c[0]));
            self.line(format!("mul.hi.u32 {hi1}, {}, 0x{PHILOX_M1:08X};", c[2]));
            self.line(format!("mul.lo.u32 {lo1}, {}, 0x{PHILOX_M1:08X};", c[2]));
            let (n0, n2) = (self.reg(2), self.reg(2));
            self.line(format!("xor.b32 {n0}, {hi1}, {};", c[1]));
            self.line(format!("xor.b32 {n0}, {n0}, {};", k[0]));
            self.line(format!("xor.b32 {n2}, {hi0}, {};", c[3]));
            self.line(format!("xor.b32 {n2}, {n2}, {};", k[1]));
            c = [n0, lo1, n2, lo0];
        }
        let (top, u) = (self.reg(2), self.reg(4));
        self.line(format!("shr.u32 {top}, {}, 8;", c[0]));
        self.line(format!("cvt.rn.f32.u32 {u}, {top};"));
        self.line(format!("mul.rn.f32 {u}, {u}, {};", f32_imm(1.0 / 16_777_216.0)));
        u
    }

    /// `out = p ? loaded : out` (the guarded load's value where in range).
    fn select_into(&mut self, out: Reg, p: Reg, loaded: Reg, d: DType) {
        match d {
            DType::F32 | DType::BF16 => self.line(format!("selp.f32 {out}, {loaded}, {out}, {p};")),
            DType::I32 => self.line(format!("selp.s32 {out}, {loaded}, {out}, {p};")),
            _ => {
                let (np, t1, t2) = (self.reg(0), self.reg(0), self.reg(0));
                self.line(format!("not.pred {np}, {p};"));
                self.line(format!("and.pred {t1}, {p}, {loaded};"));
                self.line(format!("and.pred {t2}, {np}, {out};"));
                self.line(format!("or.pred {out}, {t1}, {t2};"));
            }
        }
    }

    fn cast(&mut self, x: Reg, from: DType, to: DType) -> Reg {
        if from == to {
            return x;
        }
        // bf16 values live in f32 registers: from bf16 is from f32; to bf16
        // is to f32, then rounded.
        if from == DType::BF16 {
            return self.cast(x, DType::F32, to);
        }
        if to == DType::BF16 {
            let f = self.cast(x, from, DType::F32);
            return self.round_bf16(f);
        }
        let r = self.of(to);
        match (from, to) {
            (DType::F32, DType::I32) => self.line(format!("cvt.rzi.s32.f32 {r}, {x};")),
            (DType::I32, DType::F32) => self.line(format!("cvt.rn.f32.s32 {r}, {x};")),
            (DType::Bool, DType::F32) => self.line(format!("selp.f32 {r}, {}, {}, {x};", f32_imm(1.0), f32_imm(0.0))),
            (DType::Bool, _) => self.line(format!("selp.s32 {r}, 1, 0, {x};")),
            // `x != 0`; NaN is not zero.
            (DType::F32, _) => self.line(format!("setp.neu.f32 {r}, {x}, {};", f32_imm(0.0))),
            _ => self.line(format!("setp.ne.s32 {r}, {x}, 0;")),
        }
        r
    }

    /// `x` rounded to the nearest bf16 (ties to even), in an f32 register.
    fn round_bf16(&mut self, x: Reg) -> Reg {
        let (h, r) = (self.reg(1), self.reg(4));
        self.line(format!("cvt.rn.bf16.f32 {h}, {x};"));
        self.line(format!("cvt.f32.bf16 {r}, {h};"));
        r
    }

    fn unary(&mut self, op: UnaryOp, x: Reg, d: DType) -> R<Reg> {
        let r = self.of(d);
        let int = d == DType::I32;
        match op {
            UnaryOp::Neg if int => self.line(format!("neg.s32 {r}, {x};")),
            UnaryOp::Abs if int => self.line(format!("abs.s32 {r}, {x};")),
            UnaryOp::Neg => self.line(format!("neg.f32 {r}, {x};")),
            UnaryOp::Abs => self.line(format!("abs.f32 {r}, {x};")),
            UnaryOp::Not => self.line(format!("not.pred {r}, {x};")),
            UnaryOp::Exp => {
                let t = self.reg(4);
                self.line(format!("mul.rn.f32 {t}, {x}, {};", f32_imm(std::f64::consts::LOG2_E)));
                self.line(format!("ex2.approx.f32 {r}, {t};"));
            }
            UnaryOp::Log => {
                let t = self.reg(4);
                self.line(format!("lg2.approx.f32 {t}, {x};"));
                self.line(format!("mul.rn.f32 {r}, {t}, {};", f32_imm(std::f64::consts::LN_2)));
            }
            UnaryOp::Sqrt => self.line(format!("sqrt.rn.f32 {r}, {x};")),
            UnaryOp::Rsqrt => self.line(format!("rsqrt.approx.f32 {r}, {x};")),
            UnaryOp::Recip => self.line(format!("rcp.rn.f32 {r}, {x};")),
            UnaryOp::Tanh => self.tanh(x, r),
            UnaryOp::Sin | UnaryOp::Cos => {
                let reduced = self.reduce_angle(x);
                let f = if op == UnaryOp::Sin { "sin" } else { "cos" };
                self.line(format!("{f}.approx.f32 {r}, {reduced};"));
            }
        }
        Ok(r)
    }

    /// `x − 2π·round(x / 2π)` (Cody–Waite: 2π split in a short high part,
    /// exact in the product for the angles models use, and the rest), so
    /// `sin.approx`/`cos.approx` (accurate to ~5e-7 on [−π, π], not beyond)
    /// see a reduced argument: RoPE's angles reach the sequence length.
    fn reduce_angle(&mut self, x: Reg) -> Reg {
        const TWO_PI_HI: f64 = 6.28125;
        let two_pi_lo = std::f64::consts::TAU - TWO_PI_HI;
        let (k, nk, a, b) = (self.reg(4), self.reg(4), self.reg(4), self.reg(4));
        self.line(format!("mul.rn.f32 {k}, {x}, {};", f32_imm(1.0 / std::f64::consts::TAU)));
        self.line(format!("cvt.rni.f32.f32 {k}, {k};"));
        self.line(format!("neg.f32 {nk}, {k};"));
        self.line(format!("fma.rn.f32 {a}, {nk}, {}, {x};", f32_imm(TWO_PI_HI)));
        self.line(format!("fma.rn.f32 {b}, {nk}, {}, {a};", f32_imm(two_pi_lo)));
        b
    }

    /// tanh as the CPU backend computes it (Cephes tanhf): an odd
    /// polynomial for |x| < 0.625, else 1 − 2/(e^{2|x|} + 1), with x's sign.
    fn tanh(&mut self, x: Reg, r: Reg) {
        const P: [f64; 5] = [
            -5.704_988_727_45e-3,
            2.063_908_879_54e-2,
            -5.373_971_555_31e-2,
            1.333_144_220_36e-1,
            -3.333_328_194_22e-1,
        ];
        let (ax, z, poly, small) = (self.reg(4), self.reg(4), self.reg(4), self.reg(4));
        self.line(format!("abs.f32 {ax}, {x};"));
        self.line(format!("mul.rn.f32 {z}, {x}, {x};"));
        self.line(format!("mov.f32 {poly}, {};", f32_imm(P[0])));
        for c in &P[1..] {
            self.line(format!("fma.rn.f32 {poly}, {poly}, {z}, {};", f32_imm(*c)));
        }
        // small = x + x·z·poly
        let xz = self.reg(4);
        self.line(format!("mul.rn.f32 {xz}, {x}, {z};"));
        self.line(format!("fma.rn.f32 {small}, {xz}, {poly}, {x};"));
        // large = 1 − 2/(e^{2|x|} + 1), signed
        let (t, e, den, q, large) = (self.reg(4), self.reg(4), self.reg(4), self.reg(4), self.reg(4));
        self.line(format!("mul.rn.f32 {t}, {ax}, {};", f32_imm(2.0 * std::f64::consts::LOG2_E)));
        self.line(format!("ex2.approx.f32 {e}, {t};"));
        self.line(format!("add.rn.f32 {den}, {e}, {};", f32_imm(1.0)));
        self.line(format!("div.rn.f32 {q}, {}, {den};", f32_imm(2.0)));
        self.line(format!("sub.rn.f32 {large}, {}, {q};", f32_imm(1.0)));
        let signed = self.reg(4);
        self.line(format!("copysign.f32 {signed}, {x}, {large};"));
        let use_small = self.reg(0);
        self.line(format!("setp.lt.f32 {use_small}, {ax}, {};", f32_imm(0.625)));
        self.line(format!("selp.f32 {r}, {small}, {signed}, {use_small};"));
    }

    /// `x^y` as Rust's `powf` defines it: `2^(y·log2|x|)`, negative for a
    /// negative `x` and odd integer `y`, NaN for a negative `x` and
    /// non-integer `y`, 1 for `y = 0`, and for `x = 0` 0 (`y > 0`) or
    /// infinity (`y < 0`).
    fn pow(&mut self, x: Reg, y: Reg, r: Reg) {
        let (ax, l, t, m) = (self.reg(4), self.reg(4), self.reg(4), self.reg(4));
        self.line(format!("abs.f32 {ax}, {x};"));
        self.line(format!("lg2.approx.f32 {l}, {ax};"));
        self.line(format!("mul.rn.f32 {t}, {y}, {l};"));
        self.line(format!("ex2.approx.f32 {m}, {t};"));
        // y an integer? odd?
        let (yi, yt, is_int, odd_bit, is_odd) = (self.reg(2), self.reg(4), self.reg(0), self.reg(2), self.reg(0));
        self.line(format!("cvt.rzi.s32.f32 {yi}, {y};"));
        self.line(format!("cvt.rn.f32.s32 {yt}, {yi};"));
        self.line(format!("setp.eq.f32 {is_int}, {yt}, {y};"));
        self.line(format!("and.b32 {odd_bit}, {yi}, 1;"));
        self.line(format!("setp.ne.and.s32 {is_odd}, {odd_bit}, 0, {is_int};"));
        // negative base
        let (neg, neg_m, nan, on_neg, x_neg) = (self.reg(4), self.reg(4), self.reg(4), self.reg(4), self.reg(0));
        self.line(format!("neg.f32 {neg}, {m};"));
        self.line(format!("selp.f32 {neg_m}, {neg}, {m}, {is_odd};"));
        self.line(format!("mov.f32 {nan}, 0f7FC00000;"));
        self.line(format!("selp.f32 {on_neg}, {neg_m}, {nan}, {is_int};"));
        self.line(format!("setp.lt.f32 {x_neg}, {x}, {};", f32_imm(0.0)));
        let (v, y0) = (self.reg(4), self.reg(0));
        self.line(format!("selp.f32 {v}, {on_neg}, {m}, {x_neg};"));
        self.line(format!("setp.eq.f32 {y0}, {y}, {};", f32_imm(0.0)));
        self.line(format!("selp.f32 {r}, {}, {v}, {y0};", f32_imm(1.0)));
    }

    fn binary(&mut self, op: BinaryOp, x: Reg, y: Reg, d: DType) -> R<Reg> {
        let cmp = |op: BinaryOp| match op {
            BinaryOp::Lt => Some("lt"),
            BinaryOp::Le => Some("le"),
            BinaryOp::Gt => Some("gt"),
            BinaryOp::Ge => Some("ge"),
            BinaryOp::Eq => Some("eq"),
            BinaryOp::Ne => Some("ne"),
            _ => None,
        };
        if let Some(c) = cmp(op) {
            let r = self.reg(0);
            match d {
                // `ne` on floats is true for NaN (unordered), as in Rust.
                DType::F32 => {
                    let c = if c == "ne" { "neu" } else { c };
                    self.line(format!("setp.{c}.f32 {r}, {x}, {y};"));
                }
                DType::I32 => self.line(format!("setp.{c}.s32 {r}, {x}, {y};")),
                _ => {
                    // bool equality: xor, negated for eq.
                    let t = self.reg(0);
                    self.line(format!("xor.pred {t}, {x}, {y};"));
                    if c == "eq" {
                        self.line(format!("not.pred {r}, {t};"));
                    } else if c == "ne" {
                        self.line(format!("mov.pred {r}, {t};"));
                    } else {
                        return Err(self.err(format!("`{}` of bool values", op.name())));
                    }
                }
            }
            return Ok(r);
        }
        let r = self.of(d);
        match (op, d) {
            (BinaryOp::And, _) => self.line(format!("and.pred {r}, {x}, {y};")),
            (BinaryOp::Or, _) => self.line(format!("or.pred {r}, {x}, {y};")),
            (BinaryOp::Add, DType::F32) => self.line(format!("add.rn.f32 {r}, {x}, {y};")),
            (BinaryOp::Sub, DType::F32) => self.line(format!("sub.rn.f32 {r}, {x}, {y};")),
            (BinaryOp::Mul, DType::F32) => self.line(format!("mul.rn.f32 {r}, {x}, {y};")),
            (BinaryOp::Div, DType::F32) => self.line(format!("div.rn.f32 {r}, {x}, {y};")),
            (BinaryOp::Max, DType::F32) => self.line(format!("max.NaN.f32 {r}, {x}, {y};")),
            (BinaryOp::Min, DType::F32) => self.line(format!("min.NaN.f32 {r}, {x}, {y};")),
            (BinaryOp::Pow, DType::F32) => self.pow(x, y, r),
            (BinaryOp::Add, _) => self.line(format!("add.s32 {r}, {x}, {y};")),
            (BinaryOp::Sub, _) => self.line(format!("sub.s32 {r}, {x}, {y};")),
            (BinaryOp::Mul, _) => self.line(format!("mul.lo.s32 {r}, {x}, {y};")),
            (BinaryOp::Max, _) => self.line(format!("max.s32 {r}, {x}, {y};")),
            (BinaryOp::Min, _) => self.line(format!("min.s32 {r}, {x}, {y};")),
            (op, d) => return Err(self.err(format!("`{}` on {} is not emitted yet", op.name(), d.name()))),
        }
        Ok(r)
    }
}

/// Where an address points: the element's own row-major index, or an index
/// map.
enum AddrOf {
    Flat(Reg),
    Map(IndexMap),
}

fn saturate_i32(v: f64) -> i32 {
    if v.is_nan() { 0 } else { v.clamp(i32::MIN as f64, i32::MAX as f64) as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lpac_ir::kernel::{Reduction, Typed};

    fn sum_kernel(domain: &[usize], reduce: &[usize]) -> LoopKernel {
        LoopKernel {
            name: "sum".into(),
            domain: domain.to_vec(),
            reduce: reduce.to_vec(),
            exprs: vec![Typed { expr: Expr::Accumulated, dtype: DType::F32 }],
            reduction: Some(Reduction { op: ReduceOp::Sum, value: ExprId(0) }),
            outputs: vec![],
            nodes: vec![],
        }
    }

    #[test]
    fn few_outputs_with_long_reductions_use_blocks() {
        // The embedding gradient's sum of squares: 4,096 blocks of ~6,000.
        assert_eq!(block_reduce_shape(&sum_kernel(&[], &[32001, 768])), Some((4096, 6001)));
        // A few long rows: the blocks shared out, at most MAX_BLOCKS in all.
        let (slices, len) = block_reduce_shape(&sum_kernel(&[5], &[200_000])).unwrap();
        assert!(5 * slices <= MAX_BLOCKS && slices * len >= 200_000 && (slices - 1) * len < 200_000);
        // Short reductions, or many outputs: a warp per output.
        assert_eq!(block_reduce_shape(&sum_kernel(&[], &[1000])), None);
        assert_eq!(block_reduce_shape(&sum_kernel(&[4096], &[100_000])), None);
        // One slice when blocks would get less than a slice's worth.
        assert_eq!(block_reduce_shape(&sum_kernel(&[3], &[3000])), Some((1, 3000)));
    }

    /// A sum over the first axis of `[rows, cols]` (`column`) or the last.
    fn sum_of_loads(rows: usize, cols: usize, column: bool) -> LoopKernel {
        let (outputs, count) = if column { (cols, rows) } else { (rows, cols) };
        let strides = if column { vec![1, cols as i64] } else { vec![cols as i64, 1] };
        LoopKernel {
            exprs: vec![Typed {
                expr: Expr::Load { buffer: BufferId(0), index: IndexMap { offset: 0, strides } },
                dtype: DType::F32,
            }],
            ..sum_kernel(&[outputs], &[count])
        }
    }

    #[test]
    fn column_sums_with_many_outputs_take_a_thread_each() {
        // The head bias's gradient: 32,001 columns × 16 slices of 256 rows.
        assert!(thread_per_output(&sum_of_loads(256, 512_016, true)));
        // Rows (the reduction's step is 1), few columns, or long columns: a warp.
        assert!(!thread_per_output(&sum_of_loads(512_016, 256, false)));
        assert!(!thread_per_output(&sum_of_loads(4096, 768, true)));
        assert!(!thread_per_output(&sum_of_loads(100_000, 70_000, true)));
    }

    #[test]
    fn long_rows_take_a_block_each() {
        // Cross-entropy's 4,096 rows of 32,001; a few rows of 2,100; not
        // 4,096 rows of 768 (a norm), nor many rows of 2,100.
        assert!(rows_take_blocks(4096, &[sum_kernel(&[4096], &[32001])]));
        assert!(rows_take_blocks(12, &[sum_kernel(&[12], &[2100])]));
        assert!(!rows_take_blocks(4096, &[sum_kernel(&[4096], &[768])]));
        assert!(!rows_take_blocks(4096, &[sum_kernel(&[4096], &[2100])]));
    }
}
