//! The kernel IR: what fusion produces and backends translate.
//!
//! A [`Program`] is a list of buffers and a list of kernels run in order. A
//! buffer is a dense row-major tensor; every kernel reads buffers and writes
//! buffers. There are seven kinds of kernel:
//!
//! - [`LoopKernel`]: a loop nest over an index space. The outer loops run
//!   over `domain` (independent iterations: backends split them across
//!   threads); an optional inner reduction runs over `reduce`. The body is a
//!   small expression DAG of loads (through affine [`IndexMap`]s, so
//!   transposes, broadcasts and slices are strides, never copies), constants,
//!   loop indices, random numbers and arithmetic; each output stores one
//!   expression at the domain index (after the reduction, if any).
//! - [`RowsKernel`]: loop kernels over the same rows run together, a chunk
//!   of rows at a time (softmax, norms, cross-entropy: one dispatch, each row
//!   read from memory once).
//! - [`MultiKernel`]: independent loop kernels run as one dispatch (the
//!   optimiser update of every parameter at once).
//! - [`AttentionKernel`]: fused attention, forward or backward, over tiles
//!   (the scores are never in memory whole).
//! - [`GemmKernel`]: a batched, strided matrix product, a library call; the
//!   operands' layouts are strides, so transposed operands are never copied.
//! - [`Kernel::Gather`] and [`Kernel::ScatterAdd`]: rows of a table by
//!   index, and their adjoint.
//!
//! Loop variables are numbered: `domain` axes first (`i0`, `i1`, …), then
//! `reduce` axes. An [`IndexMap`] gives a buffer element as
//! `offset + Σ strides[v] · var[v]`.

pub mod cost;
pub mod plan;
pub mod print;

use crate::graph::NodeId;
use crate::op::{BinaryOp, ReduceOp, UnaryOp};
use crate::types::{DType, TensorType};

/// Index of a buffer in its program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub u32);

impl BufferId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What a buffer holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BufferKind {
    /// Fed each run (`tokens`, `hp:lr`, optimiser state), by name.
    Input(String),
    /// A parameter, by path.
    Param(String),
    /// A value produced by a kernel, read by later kernels or returned.
    Temp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub ty: TensorType,
    pub kind: BufferKind,
}

/// `offset + Σ strides[v] · var[v]`, in elements of the buffer. `strides` has
/// one entry per loop variable of the kernel (domain then reduce axes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IndexMap {
    pub offset: i64,
    pub strides: Vec<i64>,
}

/// Index into [`LoopKernel::exprs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExprId(pub u32);

impl ExprId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One node of a kernel's expression DAG. Operands come earlier in the list.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// The buffer element at the index map.
    Load {
        buffer: BufferId,
        index: IndexMap,
    },
    /// The buffer element at `index` if `lo <= bound < hi` (where `bound` is
    /// another index map, e.g. one loop variable), else `default`: padding
    /// and concatenation without copies. The load is not performed when out
    /// of range.
    LoadIf {
        buffer: BufferId,
        index: IndexMap,
        bound: IndexMap,
        lo: i64,
        hi: i64,
        default: f64,
    },
    /// A scalar constant.
    Const(f64),
    /// The value of an affine combination of loop variables (iota).
    Index(IndexMap),
    /// Uniform [0, 1) from the run's stream for `key` (keyed with the run's
    /// seed and step as the interpreter does), counter = the index map's value.
    Random {
        key: u64,
        counter: IndexMap,
    },
    Unary(UnaryOp, ExprId),
    Binary(BinaryOp, ExprId, ExprId),
    Select(ExprId, ExprId, ExprId),
    Cast(ExprId),
    /// The reduction's running result (only in outputs of a reducing kernel,
    /// and in expressions after the reduction).
    Accumulated,
}

/// An expression and the dtype of its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Typed {
    pub expr: Expr,
    pub dtype: DType,
}

/// A reduction over the inner loops: `acc = op(acc, exprs[value])` for every
/// reduce index, starting from the op's identity.
#[derive(Clone, Debug, PartialEq)]
pub struct Reduction {
    pub op: ReduceOp,
    pub value: ExprId,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LoopKernel {
    pub name: String,
    /// Extents of the independent outer loops (the output shape).
    pub domain: Vec<usize>,
    /// Extents of the inner reduction loops (empty: no reduction).
    pub reduce: Vec<usize>,
    pub exprs: Vec<Typed>,
    /// Set when `reduce` is not empty.
    pub reduction: Option<Reduction>,
    /// `buffer[row-major domain index] = exprs[expr]`, after the reduction.
    /// Expressions used by outputs may refer to [`Expr::Accumulated`].
    pub outputs: Vec<(BufferId, ExprId)>,
    /// The graph nodes this kernel computes (provenance).
    pub nodes: Vec<NodeId>,
}

impl LoopKernel {
    /// Buffers the kernel reads.
    pub fn reads(&self) -> Vec<BufferId> {
        self.exprs
            .iter()
            .filter_map(|t| match &t.expr {
                Expr::Load { buffer, .. } | Expr::LoadIf { buffer, .. } => Some(*buffer),
                _ => None,
            })
            .collect()
    }
}

/// `c[b] = Σ_k a[b, m, k] · b[b, k, n]` for every batch index `b`, with
/// arbitrary element strides: transposes are strides. `c` is contiguous
/// `[batch.., m, n]`.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmKernel {
    pub name: String,
    pub batch: Vec<usize>,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub a: Operand,
    pub b: Operand,
    pub c: BufferId,
    pub nodes: Vec<NodeId>,
}

impl GemmKernel {
    /// The same product with trailing batch axes folded into the rows where
    /// the layout allows: when `a`'s batch stride is `m` rows and `b` is
    /// shared across that axis (stride 0), `batch × [m, k] · [k, n]` is one
    /// `[batch·m, k] · [k, n]` product (`c` is contiguous, so its rows follow
    /// on). A projection of `[B, T, d]` activations is then one product over
    /// `B·T` rows.
    pub fn folded(&self) -> GemmKernel {
        let mut g = self.clone();
        while let (Some(&count), Some(&a_stride), Some(&b_stride)) =
            (g.batch.last(), g.a.batch_strides.last(), g.b.batch_strides.last())
        {
            if b_stride != 0 || a_stride != g.m as i64 * g.a.row_stride || g.m == 0 {
                break;
            }
            g.m *= count;
            g.batch.pop();
            g.a.batch_strides.pop();
            g.b.batch_strides.pop();
        }
        g
    }
}

/// A matrix operand: element `(batch.., row, col)` at
/// `offset + Σ batch_strides·batch + row_stride·row + col_stride·col`.
#[derive(Clone, Debug, PartialEq)]
pub struct Operand {
    pub buffer: BufferId,
    pub offset: i64,
    pub batch_strides: Vec<i64>,
    pub row_stride: i64,
    pub col_stride: i64,
}

/// Loop kernels that run together, a chunk of rows at a time: softmax's
/// maximum, exponentials, sum and quotient; a norm's statistics and
/// normalisation; cross-entropy's log-sum-exp and loss.
///
/// Every stage's domain starts with `rows`; a stage reads only the rows it
/// writes from buffers the group's earlier stages write (checked when the
/// group is formed). Running stage 1 on rows `a..b`, then stage 2 on the
/// same rows, and so on, is therefore the same as running each stage
/// over all rows in turn — but a chunk of rows is read from memory once and
/// reused from cache by every stage, and the group is one dispatch.
///
/// A stage may also be a matrix product whose rows are the group's rows
/// (`[rows, k] · [k, n]`, with a whole right operand): a product with its
/// epilogue (bias, activation, residual add) or two products in a row (the
/// low-rank pair `x·A·B`) then run a chunk of rows at a time, the chunk's
/// intermediate values never leaving the cache.
#[derive(Clone, Debug, PartialEq)]
pub struct RowsKernel {
    pub name: String,
    /// The leading domain axes every stage shares.
    pub rows: Vec<usize>,
    pub stages: Vec<RowStage>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RowStage {
    Loop(LoopKernel),
    /// Unbatched (`batch` empty), `m` = the number of rows; row `r` of `a`
    /// at `a.offset + r·a.row_stride`, `c` contiguous `[m, n]`.
    Gemm(GemmKernel),
}

impl RowStage {
    pub fn name(&self) -> &str {
        match self {
            RowStage::Loop(l) => &l.name,
            RowStage::Gemm(g) => &g.name,
        }
    }

    pub fn reads(&self) -> Vec<BufferId> {
        match self {
            RowStage::Loop(l) => l.reads(),
            RowStage::Gemm(g) => vec![g.a.buffer, g.b.buffer],
        }
    }

    pub fn writes(&self) -> Vec<BufferId> {
        match self {
            RowStage::Loop(l) => l.outputs.iter().map(|(b, _)| *b).collect(),
            RowStage::Gemm(g) => vec![g.c],
        }
    }

    /// The shape this stage writes its outputs over, row-major: a loop's
    /// domain, a product's `[rows.., n]`.
    fn out_domain(&self, rows: &[usize]) -> Vec<usize> {
        match self {
            RowStage::Loop(l) => l.domain.clone(),
            RowStage::Gemm(g) => rows.iter().copied().chain([g.n]).collect(),
        }
    }
}

impl RowsKernel {
    /// Elements of a stage's domain per row (a product: columns of `c`).
    pub fn row_len(&self, stage: &RowStage) -> usize {
        match stage {
            RowStage::Loop(l) => l.domain[self.rows.len()..].iter().product(),
            RowStage::Gemm(g) => g.n,
        }
    }

    /// The loop stages, in order (the ones a backend compiles).
    pub fn loops(&self) -> impl Iterator<Item = &LoopKernel> {
        self.stages.iter().filter_map(|s| match s {
            RowStage::Loop(l) => Some(l),
            RowStage::Gemm(_) => None,
        })
    }

    /// Checks what makes running the stages a chunk of rows at a time the
    /// same as running them one after another (see [`stage_fits_rows`] and
    /// [`gemm_fits_rows`]).
    pub fn validate(&self) -> Result<(), String> {
        for (i, stage) in self.stages.iter().enumerate() {
            let earlier = &self.stages[..i];
            match stage {
                RowStage::Loop(l) => stage_fits_rows(earlier, &self.rows, l),
                RowStage::Gemm(g) => gemm_fits_rows(earlier, &self.rows, g),
            }
            .map_err(|e| format!("stage {i}: {e}"))?;
        }
        Ok(())
    }
}

/// Whether `stage` can run row by row after the `earlier` stages of a
/// group over `rows`: its domain starts with `rows`, and it reads what the
/// earlier stages write only within the same row (their outputs are
/// row-major over their domains, which start with `rows` too).
pub fn stage_fits_rows(earlier: &[RowStage], rows: &[usize], stage: &LoopKernel) -> Result<(), String> {
    if stage.domain.len() < rows.len() || stage.domain[..rows.len()] != *rows {
        return Err(format!("domain {:?} does not start with the rows {rows:?}", stage.domain));
    }
    let extents: Vec<usize> = stage.domain.iter().chain(&stage.reduce).copied().collect();
    for (e, t) in stage.exprs.iter().enumerate() {
        let (buffer, index, guarded) = match &t.expr {
            Expr::Load { buffer, index } => (*buffer, index, false),
            Expr::LoadIf { buffer, index, .. } => (*buffer, index, true),
            _ => continue,
        };
        let Some(producer) = earlier.iter().find(|s| s.writes().contains(&buffer)) else {
            continue;
        };
        if guarded || !row_local(index, rows, &producer.out_domain(rows), &extents) {
            return Err(format!("e{e} reads b{} outside the row an earlier stage wrote", buffer.0));
        }
    }
    Ok(())
}

/// Whether the product `g` can run a chunk of rows at a time after the
/// `earlier` stages: unbatched over exactly the rows, its right operand not
/// written in the group, and its left operand, where an earlier stage wrote
/// it, that stage's rows read whole (`k` contiguous elements per row).
pub fn gemm_fits_rows(earlier: &[RowStage], rows: &[usize], g: &GemmKernel) -> Result<(), String> {
    let nrows: usize = rows.iter().product();
    if !g.batch.is_empty() || g.m != nrows {
        return Err(format!("the product is not over the {nrows} rows (batch {:?}, m {})", g.batch, g.m));
    }
    if earlier.iter().any(|s| s.writes().contains(&g.b.buffer)) {
        return Err(format!("the right operand b{} is written in the group", g.b.buffer.0));
    }
    if let Some(producer) = earlier.iter().find(|s| s.writes().contains(&g.a.buffer)) {
        let width: usize = producer.out_domain(rows)[rows.len()..].iter().product();
        let whole_rows = g.a.offset == 0 && g.a.row_stride == width as i64 && g.a.col_stride == 1 && g.k == width;
        if !whole_rows {
            return Err(format!("the left operand b{} is not read as the rows an earlier stage wrote", g.a.buffer.0));
        }
    }
    Ok(())
}

/// Whether `index` (over loop extents `extents`, rows first) reads, at row
/// `r`, only elements of row `r` of a row-major buffer over `domain`.
fn row_local(index: &IndexMap, rows: &[usize], domain: &[usize], extents: &[usize]) -> bool {
    let strides = crate::types::strides(domain);
    let row_len: usize = domain[rows.len()..].iter().product();
    let same_row = (0..rows.len()).all(|v| index.strides.get(v) == Some(&(strides[v] as i64)) || rows[v] == 1);
    let (mut lo, mut hi) = (index.offset as i128, index.offset as i128);
    for (v, &extent) in extents.iter().enumerate().skip(rows.len()) {
        if extent == 0 {
            return true;
        }
        let span = *index.strides.get(v).unwrap_or(&0) as i128 * (extent as i128 - 1);
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    same_row && lo >= 0 && hi < row_len as i128
}

/// Independent loop kernels run as one dispatch (a multi-tensor apply): the
/// optimiser's update of every parameter, the per-parameter squared sums of
/// the gradient norm. No member reads what another writes, so the members'
/// elements can be shared among threads in any order.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiKernel {
    pub name: String,
    pub members: Vec<LoopKernel>,
}

impl MultiKernel {
    /// Checks that no member reads or writes what another member writes.
    pub fn validate(&self) -> Result<(), String> {
        let mut written: Vec<BufferId> = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            let writes: Vec<BufferId> = m.outputs.iter().map(|(b, _)| *b).collect();
            if let Some(b) = m.reads().into_iter().chain(writes.iter().copied()).find(|b| written.contains(b)) {
                return Err(format!("member {i} uses b{}, which an earlier member writes", b.0));
            }
            written.extend(writes);
        }
        for (i, m) in self.members.iter().enumerate() {
            let reads = m.reads();
            if let Some(b) =
                self.members[i + 1..].iter().flat_map(|l| l.outputs.iter().map(|(b, _)| *b)).find(|b| reads.contains(b))
            {
                return Err(format!("member {i} reads b{}, which a later member writes", b.0));
            }
        }
        Ok(())
    }
}

/// Scaled dot-product attention (`softmax(q·kᵀ·scale [causal])·v`) for every
/// batch index, or its backward pass, computed a tile of queries and keys
/// at a time: the `tq × tk` scores are never in memory whole. Operands are
/// strided matrices (q `[tq, d]`, k `[tk, d]`, v `[tk, dv]`, and for the
/// backward pass the attention's value and its gradient, `[tq, dv]`).
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionKernel {
    pub name: String,
    pub batch: Vec<usize>,
    pub tq: usize,
    pub tk: usize,
    pub d: usize,
    pub dv: usize,
    pub scale: f64,
    pub causal: bool,
    pub q: Operand,
    pub k: Operand,
    pub v: Operand,
    pub pass: AttentionPass,
    /// Each query row's log-sum-exp of scores, `[batch.., tq]` contiguous:
    /// written by the forward kernel when its backward kernel reads it
    /// (otherwise the backward kernel recomputes it, one more sweep of
    /// score tiles).
    pub lse: Option<BufferId>,
    pub nodes: Vec<NodeId>,
}

/// What an attention kernel computes. Results are strided matrices like the
/// operands, so a result can be stored straight into the layout its user
/// wants (the heads merged back into `[batch, seq, heads·dim]`).
// Lives inside the boxed AttentionKernel: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum AttentionPass {
    /// `out` `[batch.., tq, dv]`.
    Forward { out: Operand },
    /// The gradients wanted; the probabilities are recomputed from q and k.
    Backward { out: Operand, dout: Operand, dq: Option<Operand>, dk: Option<Operand>, dv: Option<Operand> },
}

impl Operand {
    /// A contiguous `[batch.., rows, cols]` matrix of `buffer`.
    pub fn contiguous(buffer: BufferId, batch: &[usize], rows: usize, cols: usize) -> Operand {
        let mut shape = batch.to_vec();
        shape.extend([rows, cols]);
        let strides: Vec<i64> = crate::types::strides(&shape).into_iter().map(|s| s as i64).collect();
        let nb = batch.len();
        Operand {
            buffer,
            offset: 0,
            batch_strides: strides[..nb].to_vec(),
            row_stride: strides[nb],
            col_stride: strides[nb + 1],
        }
    }
}

impl AttentionKernel {
    pub fn reads(&self) -> Vec<BufferId> {
        let mut reads = vec![self.q.buffer, self.k.buffer, self.v.buffer];
        if let AttentionPass::Backward { out, dout, .. } = &self.pass {
            reads.extend([out.buffer, dout.buffer]);
            reads.extend(self.lse);
        }
        reads
    }

    pub fn writes(&self) -> Vec<BufferId> {
        match &self.pass {
            AttentionPass::Forward { out } => [Some(out.buffer), self.lse].into_iter().flatten().collect(),
            AttentionPass::Backward { dq, dk, dv, .. } => {
                [dq, dk, dv].into_iter().flatten().map(|o| o.buffer).collect()
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kernel {
    Loop(LoopKernel),
    Rows(RowsKernel),
    Multi(MultiKernel),
    /// Boxed: much larger than the other kinds.
    Attention(Box<AttentionKernel>),
    Gemm(GemmKernel),
    /// `out[i.., r..] = table[indices[i..], r..]`
    Gather {
        name: String,
        table: BufferId,
        indices: BufferId,
        out: BufferId,
        nodes: Vec<NodeId>,
    },
    /// `out = 0; out[indices[i..], r..] += src[i.., r..]` (in index order)
    ScatterAdd {
        name: String,
        indices: BufferId,
        src: BufferId,
        out: BufferId,
        nodes: Vec<NodeId>,
    },
}

impl Kernel {
    /// The kind of kernel, as profiles and summaries group them: `loop`,
    /// `reduce` (a loop kernel with a reduction), `rows`, `multi`,
    /// `attention`, `gemm`, `gather` or `scatter_add`.
    pub fn kind(&self) -> &'static str {
        match self {
            Kernel::Loop(l) if l.reduce.is_empty() => "loop",
            Kernel::Loop(_) => "reduce",
            Kernel::Rows(_) => "rows",
            Kernel::Multi(_) => "multi",
            Kernel::Attention(_) => "attention",
            Kernel::Gemm(_) => "gemm",
            Kernel::Gather { .. } => "gather",
            Kernel::ScatterAdd { .. } => "scatter_add",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Kernel::Loop(k) => &k.name,
            Kernel::Rows(k) => &k.name,
            Kernel::Multi(k) => &k.name,
            Kernel::Attention(k) => &k.name,
            Kernel::Gemm(k) => &k.name,
            Kernel::Gather { name, .. } | Kernel::ScatterAdd { name, .. } => name,
        }
    }

    /// Buffers the kernel reads.
    pub fn reads(&self) -> Vec<BufferId> {
        match self {
            Kernel::Loop(k) => k.reads(),
            Kernel::Rows(k) => k.stages.iter().flat_map(RowStage::reads).collect(),
            Kernel::Multi(k) => k.members.iter().flat_map(LoopKernel::reads).collect(),
            Kernel::Attention(k) => k.reads(),
            Kernel::Gemm(k) => vec![k.a.buffer, k.b.buffer],
            Kernel::Gather { table, indices, .. } => vec![*table, *indices],
            Kernel::ScatterAdd { indices, src, .. } => vec![*indices, *src],
        }
    }

    /// Buffers the kernel writes.
    pub fn writes(&self) -> Vec<BufferId> {
        match self {
            Kernel::Loop(k) => k.outputs.iter().map(|(b, _)| *b).collect(),
            Kernel::Rows(k) => k.stages.iter().flat_map(RowStage::writes).collect(),
            Kernel::Multi(k) => k.members.iter().flat_map(|s| s.outputs.iter().map(|(b, _)| *b)).collect(),
            Kernel::Attention(k) => k.writes(),
            Kernel::Gemm(k) => vec![k.c],
            Kernel::Gather { out, .. } | Kernel::ScatterAdd { out, .. } => vec![*out],
        }
    }
}

/// A whole compiled step.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Program {
    pub name: String,
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<Kernel>,
    /// The graph's outputs, by name, in order.
    pub outputs: Vec<(String, BufferId)>,
}

impl Program {
    pub fn buffer(&self, id: BufferId) -> &Buffer {
        &self.buffers[id.index()]
    }

    /// The buffer of an input (`param == false`) or a parameter, by name.
    pub fn external(&self, param: bool, name: &str) -> Option<BufferId> {
        self.buffers
            .iter()
            .position(|b| match &b.kind {
                BufferKind::Input(n) => !param && n == name,
                BufferKind::Param(p) => param && p == name,
                BufferKind::Temp => false,
            })
            .map(|i| BufferId(i as u32))
    }

    pub fn add_buffer(&mut self, ty: TensorType, kind: BufferKind) -> BufferId {
        self.buffers.push(Buffer { ty, kind });
        BufferId(self.buffers.len() as u32 - 1)
    }
}
