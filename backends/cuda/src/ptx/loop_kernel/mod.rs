//! One loop kernel as a PTX `.entry` function.
//!
//! The code shape: a loop over the flattened domain; the domain
//! coordinates by division; the expressions that do not depend on the
//! reduction computed once per element; then the reduce loop, the
//! expressions that read its result, and the stores at the element's
//! row-major index. Registers are virtual (PTX is a virtual ISA; `ptxas`
//! allocates): one fresh register per value.
//!
//! The module in parts:
//! - here: the entry points (a loop kernel, a multi kernel's elementwise
//!   members, a rows kernel), the emitter state [`Em`] and what every
//!   function shares (parameters, the prologue, one element);
//! - [`shape`]: which form a kernel takes — blocks per output for few
//!   outputs with long reductions, a thread per output for many column
//!   sums, a block per row for long rows, four elements a thread for
//!   elementwise kernels — decided from the kernel alone;
//! - [`threads`]: the forms as loops over threads (grid-stride over
//!   elements, quads, blocks, rows, fused members);
//! - [`reduce`]: reductions — a warp's lanes and butterfly shuffles
//!   (`shfl.sync.bfly`), a block's warps through shared memory, and blocks
//!   combined in order by the last to finish (no float atomics). Sums are
//!   added in a different order than on the CPU: results agree to
//!   rounding, not bit for bit;
//! - [`values`]: addresses, loads and stores, and the expressions.
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

mod reduce;
mod shape;
mod threads;
mod values;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use lpac_ir::kernel::{BufferId, Expr, ExprId, IndexMap, LoopKernel, Program};
use lpac_ir::{DType, Graph};

use super::{Arch, BLOCK, Module, PARAM_BYTES, PtxError, PtxKernel, node_list, sanitize};
use reduce::BlockReduce;
use shape::{block_reduce_shape, rows_take_blocks, thread_per_output, vector_loads};
use values::AddrOf;

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
}
