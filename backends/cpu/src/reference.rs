//! The reference evaluator of kernel programs: plain loops, one element at a
//! time, in f32, i32 and bool. It is the oracle the code generator is tested
//! against and the fallback the executor uses for loop kernels that have no
//! compiled function.
//!
//! # Semantics (the same as the graph interpreter's F32 runs)
//! - A loop kernel visits its domain in row-major order. For each domain
//!   index, if it reduces, the accumulator starts at the op's identity (0 for
//!   sum, -inf or `i32::MIN` for max) and, for every reduce index in
//!   row-major order, the expressions the reduced value needs are evaluated
//!   and combined one at a time (`acc + v`, no FMA; max is IEEE `maximum`,
//!   NaN-propagating). Then the expressions the outputs need are evaluated,
//!   with `acc` bound to the result and the reduce variables at 0 (outputs may
//!   not depend on them), and each output is stored at the row-major domain
//!   index.
//! - `load` reads the buffer element at the index map; `load_if` only when
//!   `lo <= bound < hi`, else gives `default` in the expression's dtype.
//! - `index` is the index map's value (as i32 or f32); `random` is
//!   [`uniform_f32`]`(`[`dropout_key`]`(seed, step, key), counter)`.
//! - Float math is `f32`'s; `rsqrt` is `1 / sqrt`, `recip` is `1 / x`; max
//!   and min are IEEE `maximum`/`minimum`. i32 arithmetic wraps, division
//!   truncates and division by zero is an error. Comparisons are IEEE.
//!   Casts: float to i32 truncates (saturating, NaN to 0), numbers to bool
//!   are `x != 0`, bool to numbers 0 or 1.
//! - Gemm: `c[b, i, j] = Σ_p a[b, i, p] · b[b, p, j]`, accumulated from 0 in
//!   increasing p. Gather copies rows; scatter_add zeroes its output and adds
//!   rows in index order. An out-of-range index is an error.
//!
//! Every element access is bounds-checked through the [`BufferTable`], so a
//! malformed kernel gives an error naming what went wrong, never undefined
//! behaviour.

use std::collections::BTreeMap;

use lpac_ir::interp::Tensor;
use lpac_ir::interp::real::{maximum, minimum};
use lpac_ir::kernel::{BufferId, Expr, GemmKernel, IndexMap, Kernel, LoopKernel, Program};
use lpac_ir::op::{BinaryOp, ReduceOp, UnaryOp};
use lpac_ir::random::{dropout_key, uniform_f32};
use lpac_ir::types::DType;

use crate::check::{check_program, expr_uses};
use crate::memory::{BufferTable, HostMemory, Scalar, supplied};

/// Runs a whole program on separate buffers (no memory sharing) and returns
/// its outputs by name. Inputs and parameters are checked by name, dtype and
/// shape; the program is checked first.
pub fn run_program(
    program: &Program,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Tensor>,
    seed: u64,
    step: u64,
) -> Result<BTreeMap<String, Tensor>, String> {
    check_program(program)?;
    let fed = supplied(program, inputs, params)?;
    let mut memory = HostMemory::new(program)?;
    for (i, tensor) in fed.iter().enumerate() {
        if let Some(tensor) = tensor {
            memory.write(BufferId(i as u32), tensor)?;
        }
    }
    {
        let table = memory.table();
        for (i, kernel) in program.kernels.iter().enumerate() {
            run_kernel(kernel, &table, seed, step).map_err(|e| format!("kernel k{i} {:?}: {e}", kernel.name()))?;
        }
    }
    Ok(program.outputs.iter().map(|(name, b)| (name.clone(), memory.read(*b))).collect())
}

/// Runs one kernel of any kind.
pub fn run_kernel(kernel: &Kernel, table: &BufferTable, seed: u64, step: u64) -> Result<(), String> {
    match kernel {
        Kernel::Loop(k) => run_loop_kernel(k, table, seed, step),
        // Stage after stage over all rows: what running them row chunk by
        // row chunk must equal.
        Kernel::Rows(r) => r.stages.iter().try_for_each(|s| match s {
            lpac_ir::kernel::RowStage::Loop(l) => run_loop_kernel(l, table, seed, step),
            lpac_ir::kernel::RowStage::Gemm(g) => run_gemm(g, table),
        }),
        Kernel::Multi(m) => m.members.iter().try_for_each(|s| run_loop_kernel(s, table, seed, step)),
        // The tiled kernel on one thread: its independent check is the
        // graph interpreter's `attention` (tests compare whole steps).
        Kernel::Attention(a) => crate::attention::run_attention(a, table, 1),
        Kernel::Gemm(g) => run_gemm(g, table),
        Kernel::Gather { table: t, indices, out, .. } => run_gather(table, *t, *indices, *out),
        Kernel::ScatterAdd { indices, src, out, .. } => run_scatter_add(table, *indices, *src, *out),
    }
}

/// Runs a loop kernel over its whole domain.
pub fn run_loop_kernel(k: &LoopKernel, table: &BufferTable, seed: u64, step: u64) -> Result<(), String> {
    let n: usize = k.domain.iter().product();
    run_loop_range(k, table, 0, n as u64, seed, step)
}

/// Runs a loop kernel over `begin..end` of its flattened row-major domain:
/// the same contract as a compiled kernel's `(begin, end)`.
pub fn run_loop_range(
    k: &LoopKernel,
    table: &BufferTable,
    begin: u64,
    end: u64,
    seed: u64,
    step: u64,
) -> Result<(), String> {
    LoopEval::new(k, seed, step)?.run(table, begin, end)
}

/// A loop kernel prepared for evaluation.
struct LoopEval<'k> {
    k: &'k LoopKernel,
    rank: usize,
    /// Expressions evaluated per reduce index / once after the reduction.
    in_reduce: Vec<bool>,
    in_post: Vec<bool>,
    /// The finished stream key of each `random` expression.
    keys: Vec<u64>,
}

impl<'k> LoopEval<'k> {
    fn new(k: &'k LoopKernel, seed: u64, step: u64) -> Result<Self, String> {
        if k.reduce.is_empty() != k.reduction.is_none() {
            return Err("a kernel has a reduction exactly when it has reduce axes".into());
        }
        let (in_reduce, in_post) = expr_uses(k);
        let keys = k
            .exprs
            .iter()
            .map(|t| match t.expr {
                Expr::Random { key, .. } => dropout_key(seed, step, key),
                _ => 0,
            })
            .collect();
        Ok(LoopEval { k, rank: k.domain.len(), in_reduce, in_post, keys })
    }

    fn run(&self, table: &BufferTable, begin: u64, end: u64) -> Result<(), String> {
        let k = self.k;
        let numel: usize = k.domain.iter().product();
        let (begin, end) = (begin as usize, (end as usize).min(numel));
        if begin >= end {
            return Ok(());
        }
        let mut vars = vec![0i64; self.rank + k.reduce.len()];
        // Unflatten `begin` into the domain variables.
        let mut rest = begin;
        for v in (0..self.rank).rev() {
            vars[v] = (rest % k.domain[v]) as i64;
            rest /= k.domain[v];
        }
        let mut vals = vec![Scalar::F32(0.0); k.exprs.len()];
        for flat in begin..end {
            self.element(table, flat, &mut vars, &mut vals)?;
            step_odometer(&mut vars[..self.rank], &k.domain);
        }
        Ok(())
    }

    /// Computes and stores one domain element.
    fn element(&self, table: &BufferTable, flat: usize, vars: &mut [i64], vals: &mut [Scalar]) -> Result<(), String> {
        let k = self.k;
        let at = |e: String| format!("{e} (at domain index {flat})");
        let mut acc = None;
        if let Some(r) = &k.reduction {
            let dtype = k.exprs.get(r.value.index()).map(|t| t.dtype).ok_or("the reduced value does not exist")?;
            let mut a = identity(r.op, dtype).map_err(at)?;
            if !k.reduce.contains(&0) {
                vars[self.rank..].fill(0);
                loop {
                    self.eval_phase(&self.in_reduce, table, vars, vals, None).map_err(at)?;
                    a = combine(r.op, a, vals[r.value.index()]).map_err(at)?;
                    if !step_odometer(&mut vars[self.rank..], &k.reduce) {
                        break;
                    }
                }
            }
            vars[self.rank..].fill(0);
            acc = Some(a);
        }
        self.eval_phase(&self.in_post, table, vars, vals, acc).map_err(at)?;
        for (buffer, e) in &k.outputs {
            let value = *vals.get(e.index()).ok_or_else(|| at(format!("e{} does not exist", e.0)))?;
            table.store(*buffer, flat, value).map_err(at)?;
        }
        Ok(())
    }

    /// Evaluates, in order, the expressions `phase` marks.
    fn eval_phase(
        &self,
        phase: &[bool],
        table: &BufferTable,
        vars: &[i64],
        vals: &mut [Scalar],
        acc: Option<Scalar>,
    ) -> Result<(), String> {
        for (e, &needed) in phase.iter().enumerate().take(vals.len()) {
            if needed {
                let (before, rest) = vals.split_at_mut(e);
                rest[0] = self.eval(e, before, table, vars, acc).map_err(|m| format!("e{e}: {m}"))?;
            }
        }
        Ok(())
    }

    fn eval(
        &self,
        e: usize,
        before: &[Scalar],
        table: &BufferTable,
        vars: &[i64],
        acc: Option<Scalar>,
    ) -> Result<Scalar, String> {
        let t = &self.k.exprs[e];
        let arg = |id: lpac_ir::kernel::ExprId| {
            before.get(id.index()).copied().ok_or_else(|| format!("operand e{} does not come before e{e}", id.0))
        };
        let value = match &t.expr {
            Expr::Load { buffer, index } => load(table, *buffer, affine(index, vars))?,
            Expr::LoadIf { buffer, index, bound, lo, hi, default } => {
                let b = affine(bound, vars);
                if *lo <= b && b < *hi {
                    load(table, *buffer, affine(index, vars))?
                } else {
                    Scalar::from_f64(*default, t.dtype)
                }
            }
            Expr::Const(v) => Scalar::from_f64(*v, t.dtype),
            Expr::Index(m) => {
                let v = affine(m, vars);
                match t.dtype {
                    DType::I32 => Scalar::I32(v as i32),
                    DType::F32 => Scalar::F32(v as f32),
                    d => return Err(format!("an index value cannot be {d}")),
                }
            }
            Expr::Random { counter, .. } => {
                let c = affine(counter, vars);
                let c = u64::try_from(c).map_err(|_| format!("random counter {c} is negative"))?;
                Scalar::F32(uniform_f32(self.keys[e], c))
            }
            Expr::Unary(u, a) => unary(*u, arg(*a)?)?,
            Expr::Binary(b, x, y) => binary(*b, arg(*x)?, arg(*y)?)?,
            Expr::Select(c, a, b) => match arg(*c)? {
                Scalar::Bool(true) => arg(*a)?,
                Scalar::Bool(false) => arg(*b)?,
                other => return Err(format!("select condition is {}, not bool", other.dtype())),
            },
            Expr::Cast(a) => cast(arg(*a)?, t.dtype),
            Expr::Accumulated => acc.ok_or("`acc` used where no reduction result exists")?,
        };
        if value.dtype() != t.dtype {
            return Err(format!("value is {}, but the expression is typed {}", value.dtype(), t.dtype));
        }
        Ok(value)
    }
}

/// `offset + Σ strides[v]·vars[v]` (wrapping: a wild value is caught by the
/// bounds check of whatever uses it).
fn affine(m: &IndexMap, vars: &[i64]) -> i64 {
    m.strides.iter().zip(vars).fold(m.offset, |acc, (&s, &v)| acc.wrapping_add(s.wrapping_mul(v)))
}

fn load(table: &BufferTable, buffer: BufferId, index: i64) -> Result<Scalar, String> {
    table.load(buffer, index).ok_or_else(|| match table.ty(buffer) {
        Some(ty) => format!("load of b{} at element {index} is out of range 0..{}", buffer.0, ty.numel()),
        None => format!("buffer b{} does not exist", buffer.0),
    })
}

/// Advances a row-major multi-index; false when it wraps around to zero.
fn step_odometer(index: &mut [i64], shape: &[usize]) -> bool {
    for v in (0..index.len()).rev() {
        index[v] += 1;
        if (index[v] as usize) < shape[v] {
            return true;
        }
        index[v] = 0;
    }
    false
}

/// The starting value of a reduction.
pub fn identity(op: ReduceOp, dtype: DType) -> Result<Scalar, String> {
    match (op, dtype) {
        (ReduceOp::Sum, DType::F32) => Ok(Scalar::F32(0.0)),
        (ReduceOp::Max, DType::F32) => Ok(Scalar::F32(f32::NEG_INFINITY)),
        (ReduceOp::Sum, DType::I32) => Ok(Scalar::I32(0)),
        (ReduceOp::Max, DType::I32) => Ok(Scalar::I32(i32::MIN)),
        (_, d) => Err(format!("cannot reduce {d} values")),
    }
}

/// One reduction step.
pub fn combine(op: ReduceOp, acc: Scalar, v: Scalar) -> Result<Scalar, String> {
    match (op, acc, v) {
        (ReduceOp::Sum, Scalar::F32(a), Scalar::F32(b)) => Ok(Scalar::F32(a + b)),
        (ReduceOp::Max, Scalar::F32(a), Scalar::F32(b)) => Ok(Scalar::F32(maximum(a, b))),
        (ReduceOp::Sum, Scalar::I32(a), Scalar::I32(b)) => Ok(Scalar::I32(a.wrapping_add(b))),
        (ReduceOp::Max, Scalar::I32(a), Scalar::I32(b)) => Ok(Scalar::I32(a.max(b))),
        (op, a, b) => Err(format!("cannot {} {} into {}", op.name(), b.dtype(), a.dtype())),
    }
}

pub fn unary(u: UnaryOp, a: Scalar) -> Result<Scalar, String> {
    Ok(match (u, a) {
        (UnaryOp::Neg, Scalar::F32(x)) => Scalar::F32(-x),
        (UnaryOp::Exp, Scalar::F32(x)) => Scalar::F32(x.exp()),
        (UnaryOp::Log, Scalar::F32(x)) => Scalar::F32(x.ln()),
        (UnaryOp::Sqrt, Scalar::F32(x)) => Scalar::F32(x.sqrt()),
        (UnaryOp::Rsqrt, Scalar::F32(x)) => Scalar::F32(1.0 / x.sqrt()),
        (UnaryOp::Recip, Scalar::F32(x)) => Scalar::F32(1.0 / x),
        (UnaryOp::Tanh, Scalar::F32(x)) => Scalar::F32(x.tanh()),
        (UnaryOp::Sin, Scalar::F32(x)) => Scalar::F32(x.sin()),
        (UnaryOp::Cos, Scalar::F32(x)) => Scalar::F32(x.cos()),
        (UnaryOp::Abs, Scalar::F32(x)) => Scalar::F32(x.abs()),
        (UnaryOp::Neg, Scalar::I32(x)) => Scalar::I32(x.wrapping_neg()),
        (UnaryOp::Abs, Scalar::I32(x)) => Scalar::I32(x.wrapping_abs()),
        (UnaryOp::Not, Scalar::Bool(x)) => Scalar::Bool(!x),
        (u, a) => return Err(format!("`{}` is not defined on {}", u.name(), a.dtype())),
    })
}

pub fn binary(b: BinaryOp, x: Scalar, y: Scalar) -> Result<Scalar, String> {
    use Scalar::{Bool, F32, I32};
    if b.is_comparison() {
        fn cmp<T: PartialOrd>(b: BinaryOp, x: T, y: T) -> bool {
            match b {
                BinaryOp::Lt => x < y,
                BinaryOp::Le => x <= y,
                BinaryOp::Gt => x > y,
                BinaryOp::Ge => x >= y,
                BinaryOp::Eq => x == y,
                _ => x != y,
            }
        }
        return match (x, y) {
            (F32(x), F32(y)) => Ok(Bool(cmp(b, x, y))),
            (I32(x), I32(y)) => Ok(Bool(cmp(b, x, y))),
            (Bool(x), Bool(y)) => Ok(Bool(cmp(b, x, y))),
            _ => Err(format!("`{}` of {} and {}", b.name(), x.dtype(), y.dtype())),
        };
    }
    Ok(match (b, x, y) {
        (BinaryOp::Add, F32(x), F32(y)) => F32(x + y),
        (BinaryOp::Sub, F32(x), F32(y)) => F32(x - y),
        (BinaryOp::Mul, F32(x), F32(y)) => F32(x * y),
        (BinaryOp::Div, F32(x), F32(y)) => F32(x / y),
        (BinaryOp::Max, F32(x), F32(y)) => F32(maximum(x, y)),
        (BinaryOp::Min, F32(x), F32(y)) => F32(minimum(x, y)),
        (BinaryOp::Pow, F32(x), F32(y)) => F32(x.powf(y)),
        (BinaryOp::Add, I32(x), I32(y)) => I32(x.wrapping_add(y)),
        (BinaryOp::Sub, I32(x), I32(y)) => I32(x.wrapping_sub(y)),
        (BinaryOp::Mul, I32(x), I32(y)) => I32(x.wrapping_mul(y)),
        (BinaryOp::Div, I32(_), I32(0)) => return Err("i32 division by zero".into()),
        (BinaryOp::Div, I32(x), I32(y)) => I32(x.wrapping_div(y)),
        (BinaryOp::Max, I32(x), I32(y)) => I32(x.max(y)),
        (BinaryOp::Min, I32(x), I32(y)) => I32(x.min(y)),
        (BinaryOp::And, Bool(x), Bool(y)) => Bool(x && y),
        (BinaryOp::Or, Bool(x), Bool(y)) => Bool(x || y),
        (b, x, y) => return Err(format!("`{}` is not defined on {} and {}", b.name(), x.dtype(), y.dtype())),
    })
}

/// The interpreter's casts (see the module docs).
pub fn cast(a: Scalar, to: DType) -> Scalar {
    match (a, to) {
        (Scalar::F32(x), DType::I32) => Scalar::I32(x as i32),
        (Scalar::F32(x), DType::Bool) => Scalar::Bool(x != 0.0),
        (Scalar::I32(x), DType::Bool) => Scalar::Bool(x != 0),
        (Scalar::I32(x), DType::I32) => Scalar::I32(x),
        (Scalar::I32(x), _) => Scalar::F32(x as f32),
        (Scalar::Bool(x), DType::I32) => Scalar::I32(i32::from(x)),
        (Scalar::Bool(x), DType::Bool) => Scalar::Bool(x),
        (Scalar::Bool(x), _) => Scalar::F32(f32::from(u8::from(x))),
        (Scalar::F32(x), _) => Scalar::F32(x),
    }
}

fn f32_at(table: &BufferTable, buffer: BufferId, index: i64) -> Result<f32, String> {
    match load(table, buffer, index)? {
        Scalar::F32(x) => Ok(x),
        other => Err(format!("b{} holds {}, not f32", buffer.0, other.dtype())),
    }
}

/// Gemm by the triple loop, accumulating over k in order from zero.
pub fn run_gemm(g: &GemmKernel, table: &BufferTable) -> Result<(), String> {
    let mut batch = vec![0i64; g.batch.len()];
    if g.a.batch_strides.len() != g.batch.len() || g.b.batch_strides.len() != g.batch.len() {
        return Err("gemm operands need one batch stride per batch axis".into());
    }
    let batches: usize = g.batch.iter().product();
    let dot = |s: &[i64], b: &[i64]| s.iter().zip(b).map(|(s, b)| s * b).sum::<i64>();
    for flat in 0..batches {
        let a0 = g.a.offset + dot(&g.a.batch_strides, &batch);
        let b0 = g.b.offset + dot(&g.b.batch_strides, &batch);
        for i in 0..g.m {
            for j in 0..g.n {
                let mut acc = 0.0f32;
                for p in 0..g.k {
                    let a = f32_at(table, g.a.buffer, a0 + g.a.row_stride * i as i64 + g.a.col_stride * p as i64)?;
                    let b = f32_at(table, g.b.buffer, b0 + g.b.row_stride * p as i64 + g.b.col_stride * j as i64)?;
                    acc += a * b;
                }
                table.store(g.c, (flat * g.m + i) * g.n + j, Scalar::F32(acc))?;
            }
        }
        step_odometer(&mut batch, &g.batch);
    }
    Ok(())
}

/// `(rows, row_len)` of a buffer seen as a table of rows.
fn rows_of(table: &BufferTable, b: BufferId) -> Result<(usize, usize), String> {
    let ty = table.ty(b).ok_or_else(|| format!("buffer b{} does not exist", b.0))?;
    let rows = *ty.shape.first().ok_or_else(|| format!("b{} is a scalar, not a table of rows", b.0))?;
    Ok((rows, ty.shape[1..].iter().product()))
}

/// `index` as a row of a table of `rows` rows.
pub fn checked_row(index: i32, rows: usize, position: usize) -> Result<usize, String> {
    usize::try_from(index)
        .ok()
        .filter(|&r| r < rows)
        .ok_or_else(|| format!("index {index} at position {position} is out of range 0..{rows}"))
}

fn index_at(table: &BufferTable, indices: BufferId, position: usize) -> Result<i32, String> {
    match load(table, indices, position as i64)? {
        Scalar::I32(i) => Ok(i),
        other => Err(format!("indices b{} hold {}, not i32", indices.0, other.dtype())),
    }
}

/// `out[i.., r..] = table[indices[i..], r..]`, element by element.
pub fn run_gather(table: &BufferTable, tbl: BufferId, indices: BufferId, out: BufferId) -> Result<(), String> {
    let (rows, row_len) = rows_of(table, tbl)?;
    let positions = table.ty(indices).ok_or("indices buffer does not exist")?.numel();
    for p in 0..positions {
        let row = checked_row(index_at(table, indices, p)?, rows, p)?;
        for c in 0..row_len {
            table.store(out, p * row_len + c, load(table, tbl, (row * row_len + c) as i64)?)?;
        }
    }
    let out_len = table.ty(out).ok_or("output buffer does not exist")?.numel();
    if out_len != positions * row_len {
        return Err(format!("gather output b{} has {out_len} elements, not {}", out.0, positions * row_len));
    }
    Ok(())
}

/// `out = 0; out[indices[i..], r..] += src[i.., r..]`, in index order.
pub fn run_scatter_add(table: &BufferTable, indices: BufferId, src: BufferId, out: BufferId) -> Result<(), String> {
    let (rows, row_len) = rows_of(table, out)?;
    let zero = match table.ty(out).map(|t| t.dtype) {
        Some(DType::F32) => Scalar::F32(0.0),
        Some(DType::I32) => Scalar::I32(0),
        _ => return Err(format!("scatter_add output b{} must be f32 or i32", out.0)),
    };
    for i in 0..rows * row_len {
        table.store(out, i, zero)?;
    }
    let positions = table.ty(indices).ok_or("indices buffer does not exist")?.numel();
    for p in 0..positions {
        let row = checked_row(index_at(table, indices, p)?, rows, p)?;
        for c in 0..row_len {
            let o = row * row_len + c;
            let sum = binary(BinaryOp::Add, load(table, out, o as i64)?, load(table, src, (p * row_len + c) as i64)?)?;
            table.store(out, o, sum)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lpac_ir::kernel::{BufferKind, ExprId, Operand, Reduction, Typed};
    use lpac_ir::types::TensorType;

    fn ty(dtype: DType, shape: &[usize]) -> TensorType {
        TensorType::new(dtype, shape.to_vec())
    }

    fn map(offset: i64, strides: &[i64]) -> IndexMap {
        IndexMap { offset, strides: strides.to_vec() }
    }

    fn typed(expr: Expr, dtype: DType) -> Typed {
        Typed { expr, dtype }
    }

    fn f32_input(p: &mut Program, name: &str, shape: &[usize]) -> BufferId {
        p.add_buffer(ty(DType::F32, shape), BufferKind::Input(name.into()))
    }

    fn feeds(pairs: Vec<(&str, Tensor)>) -> BTreeMap<String, Tensor> {
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    fn run(p: &Program, inputs: Vec<(&str, Tensor)>) -> Result<BTreeMap<String, Tensor>, String> {
        run_program(p, &feeds(inputs), &BTreeMap::new(), 7, 3)
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.as_f32().expect("f32 data").to_vec()
    }

    /// Row-wise softmax of a [2,3] input with one max-reducing kernel, one
    /// sum-reducing kernel and one elementwise kernel.
    #[test]
    fn softmax_by_three_kernels() {
        let mut p = Program { name: "softmax".into(), ..Program::default() };
        let x = f32_input(&mut p, "x", &[2, 3]);
        let m = p.add_buffer(ty(DType::F32, &[2]), BufferKind::Temp);
        let s = p.add_buffer(ty(DType::F32, &[2]), BufferKind::Temp);
        let y = p.add_buffer(ty(DType::F32, &[2, 3]), BufferKind::Temp);
        let row = map(0, &[3, 1]);
        p.kernels.push(Kernel::Loop(LoopKernel {
            name: "max".into(),
            domain: vec![2],
            reduce: vec![3],
            exprs: vec![
                typed(Expr::Load { buffer: x, index: row.clone() }, DType::F32),
                typed(Expr::Accumulated, DType::F32),
            ],
            reduction: Some(Reduction { op: ReduceOp::Max, value: ExprId(0) }),
            outputs: vec![(m, ExprId(1))],
            nodes: vec![],
        }));
        p.kernels.push(Kernel::Loop(LoopKernel {
            name: "sumexp".into(),
            domain: vec![2],
            reduce: vec![3],
            exprs: vec![
                typed(Expr::Load { buffer: x, index: row.clone() }, DType::F32),
                typed(Expr::Load { buffer: m, index: map(0, &[1, 0]) }, DType::F32),
                typed(Expr::Binary(BinaryOp::Sub, ExprId(0), ExprId(1)), DType::F32),
                typed(Expr::Unary(UnaryOp::Exp, ExprId(2)), DType::F32),
                typed(Expr::Accumulated, DType::F32),
            ],
            reduction: Some(Reduction { op: ReduceOp::Sum, value: ExprId(3) }),
            outputs: vec![(s, ExprId(4))],
            nodes: vec![],
        }));
        p.kernels.push(Kernel::Loop(LoopKernel {
            name: "normalise".into(),
            domain: vec![2, 3],
            reduce: vec![],
            exprs: vec![
                typed(Expr::Load { buffer: x, index: map(0, &[3, 1]) }, DType::F32),
                typed(Expr::Load { buffer: m, index: map(0, &[1, 0]) }, DType::F32),
                typed(Expr::Load { buffer: s, index: map(0, &[1, 0]) }, DType::F32),
                typed(Expr::Binary(BinaryOp::Sub, ExprId(0), ExprId(1)), DType::F32),
                typed(Expr::Unary(UnaryOp::Exp, ExprId(3)), DType::F32),
                typed(Expr::Binary(BinaryOp::Div, ExprId(4), ExprId(2)), DType::F32),
            ],
            reduction: None,
            outputs: vec![(y, ExprId(5))],
            nodes: vec![],
        }));
        p.outputs = vec![("y".into(), y), ("max".into(), m)];
        let xs = [1.0f32, 2.0, 3.0, -1.0, 0.0, 5.0];
        let out = run(&p, vec![("x", Tensor::from_f32(vec![2, 3], xs.to_vec()))]).unwrap();
        assert_eq!(f32s(&out["max"]), vec![3.0, 5.0]);
        let y = f32s(&out["y"]);
        for r in 0..2 {
            let row = &xs[3 * r..3 * r + 3];
            let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row.iter().map(|v| (v - mx).exp()).sum();
            for c in 0..3 {
                assert!((y[3 * r + c] - (row[c] - mx).exp() / sum).abs() < 1e-6);
            }
        }
    }

    fn elementwise(p: &mut Program, exprs: Vec<Typed>, domain: &[usize], out_dtype: DType) -> BufferId {
        let out = p.add_buffer(ty(out_dtype, domain), BufferKind::Temp);
        let last = ExprId(exprs.len() as u32 - 1);
        p.kernels.push(Kernel::Loop(LoopKernel {
            name: "ew".into(),
            domain: domain.to_vec(),
            reduce: vec![],
            exprs,
            reduction: None,
            outputs: vec![(out, last)],
            nodes: vec![],
        }));
        p.outputs.push(("out".into(), out));
        out
    }

    #[test]
    fn iota_casts_selects_and_padding() {
        // out[i, j] = (j >= 1 ? i*10 + j : -1) with a padded load of x.
        let mut p = Program::default();
        let x = f32_input(&mut p, "x", &[2]);
        elementwise(
            &mut p,
            vec![
                typed(Expr::Index(map(0, &[10, 1])), DType::I32),
                typed(Expr::Index(map(0, &[0, 1])), DType::I32),
                typed(Expr::Const(1.0), DType::I32),
                typed(Expr::Binary(BinaryOp::Ge, ExprId(1), ExprId(2)), DType::Bool),
                typed(Expr::Const(-1.0), DType::I32),
                typed(Expr::Select(ExprId(3), ExprId(0), ExprId(4)), DType::I32),
                typed(Expr::Cast(ExprId(5)), DType::F32),
                // x padded by one on the left: x[j - 1] where 0 <= j - 1 < 2, else 100.
                typed(
                    Expr::LoadIf {
                        buffer: x,
                        index: map(-1, &[0, 1]),
                        bound: map(-1, &[0, 1]),
                        lo: 0,
                        hi: 2,
                        default: 100.0,
                    },
                    DType::F32,
                ),
                typed(Expr::Binary(BinaryOp::Add, ExprId(6), ExprId(7)), DType::F32),
            ],
            &[2, 3],
            DType::F32,
        );
        let out = run(&p, vec![("x", Tensor::from_f32(vec![2], vec![0.5, 0.25]))]).unwrap();
        assert_eq!(f32s(&out["out"]), vec![99.0, 1.5, 2.25, 99.0, 11.5, 12.25]);
    }

    #[test]
    fn random_matches_the_interpreter_stream() {
        let mut p = Program::default();
        elementwise(
            &mut p,
            vec![typed(Expr::Random { key: 42, counter: map(0, &[4, 1]) }, DType::F32)],
            &[3, 4],
            DType::F32,
        );
        let out = run(&p, vec![]).unwrap();
        let key = dropout_key(7, 3, 42);
        let expected: Vec<f32> = (0..12).map(|c| uniform_f32(key, c)).collect();
        assert_eq!(f32s(&out["out"]), expected);
    }

    #[test]
    fn int_and_bool_semantics() {
        assert_eq!(binary(BinaryOp::Div, Scalar::I32(-7), Scalar::I32(2)), Ok(Scalar::I32(-3)));
        assert_eq!(binary(BinaryOp::Div, Scalar::I32(i32::MIN), Scalar::I32(-1)), Ok(Scalar::I32(i32::MIN)));
        assert!(binary(BinaryOp::Div, Scalar::I32(1), Scalar::I32(0)).is_err());
        assert_eq!(binary(BinaryOp::Add, Scalar::I32(i32::MAX), Scalar::I32(1)), Ok(Scalar::I32(i32::MIN)));
        assert_eq!(binary(BinaryOp::Lt, Scalar::F32(f32::NAN), Scalar::F32(1.0)), Ok(Scalar::Bool(false)));
        assert_eq!(binary(BinaryOp::Ne, Scalar::F32(f32::NAN), Scalar::F32(f32::NAN)), Ok(Scalar::Bool(true)));
        let Ok(Scalar::F32(m)) = binary(BinaryOp::Max, Scalar::F32(f32::NAN), Scalar::F32(1.0)) else { panic!() };
        assert!(m.is_nan());
        assert_eq!(binary(BinaryOp::Or, Scalar::Bool(false), Scalar::Bool(true)), Ok(Scalar::Bool(true)));
        assert!(binary(BinaryOp::Add, Scalar::Bool(false), Scalar::Bool(true)).is_err());
        assert_eq!(unary(UnaryOp::Abs, Scalar::I32(i32::MIN)), Ok(Scalar::I32(i32::MIN)));
        assert_eq!(unary(UnaryOp::Not, Scalar::Bool(true)), Ok(Scalar::Bool(false)));
        assert!(unary(UnaryOp::Exp, Scalar::I32(1)).is_err());
        assert_eq!(cast(Scalar::F32(-2.7), DType::I32), Scalar::I32(-2));
        assert_eq!(cast(Scalar::F32(f32::NAN), DType::I32), Scalar::I32(0));
        assert_eq!(cast(Scalar::F32(1e20), DType::I32), Scalar::I32(i32::MAX));
        assert_eq!(cast(Scalar::F32(f32::NAN), DType::Bool), Scalar::Bool(true));
        assert_eq!(cast(Scalar::Bool(true), DType::F32), Scalar::F32(1.0));
        assert_eq!(cast(Scalar::I32(3), DType::Bool), Scalar::Bool(true));
        assert_eq!(identity(ReduceOp::Max, DType::I32), Ok(Scalar::I32(i32::MIN)));
        assert!(identity(ReduceOp::Sum, DType::Bool).is_err());
    }

    #[test]
    fn integer_reductions_and_empty_reduce_axes() {
        // out[i] = Σ_r (i + r) over r < 4, and a max over an empty axis.
        let mut p = Program::default();
        let out = p.add_buffer(ty(DType::I32, &[3]), BufferKind::Temp);
        let empty = p.add_buffer(ty(DType::F32, &[3]), BufferKind::Temp);
        p.kernels.push(Kernel::Loop(LoopKernel {
            name: "isum".into(),
            domain: vec![3],
            reduce: vec![4],
            exprs: vec![typed(Expr::Index(map(0, &[1, 1])), DType::I32), typed(Expr::Accumulated, DType::I32)],
            reduction: Some(Reduction { op: ReduceOp::Sum, value: ExprId(0) }),
            outputs: vec![(out, ExprId(1))],
            nodes: vec![],
        }));
        p.kernels.push(Kernel::Loop(LoopKernel {
            name: "empty".into(),
            domain: vec![3],
            reduce: vec![0],
            exprs: vec![typed(Expr::Const(1.0), DType::F32), typed(Expr::Accumulated, DType::F32)],
            reduction: Some(Reduction { op: ReduceOp::Max, value: ExprId(0) }),
            outputs: vec![(empty, ExprId(1))],
            nodes: vec![],
        }));
        p.outputs = vec![("out".into(), out), ("empty".into(), empty)];
        let r = run(&p, vec![]).unwrap();
        assert_eq!(r["out"].as_i32().unwrap(), &[6, 10, 14]);
        assert_eq!(f32s(&r["empty"]), vec![f32::NEG_INFINITY; 3]);
    }

    #[test]
    fn ranges_compute_only_their_part() {
        let mut p = Program::default();
        let out = elementwise(&mut p, vec![typed(Expr::Index(map(1, &[3, 1])), DType::F32)], &[2, 3], DType::F32);
        let mut mem = HostMemory::new(&p).unwrap();
        let Kernel::Loop(k) = &p.kernels[0] else { unreachable!() };
        {
            let table = mem.table();
            run_loop_range(k, &table, 2, 5, 0, 0).unwrap();
            run_loop_range(k, &table, 5, 100, 0, 0).unwrap();
        }
        assert_eq!(f32s(&mem.read(out)), vec![0.0, 0.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn gemm_gather_and_scatter() {
        let mut p = Program::default();
        let a = f32_input(&mut p, "a", &[2, 3]);
        let b = f32_input(&mut p, "b", &[2, 2]);
        let idx = p.add_buffer(ty(DType::I32, &[3]), BufferKind::Input("idx".into()));
        let c = p.add_buffer(ty(DType::F32, &[3, 2]), BufferKind::Temp);
        let g = p.add_buffer(ty(DType::F32, &[3, 2]), BufferKind::Temp);
        let s = p.add_buffer(ty(DType::F32, &[3, 2]), BufferKind::Temp);
        // c = aᵀ · b (a read transposed through strides).
        p.kernels.push(Kernel::Gemm(GemmKernel {
            name: "mm".into(),
            batch: vec![],
            m: 3,
            k: 2,
            n: 2,
            a: Operand { buffer: a, offset: 0, batch_strides: vec![], row_stride: 1, col_stride: 3 },
            b: Operand { buffer: b, offset: 0, batch_strides: vec![], row_stride: 2, col_stride: 1 },
            c,
            nodes: vec![],
        }));
        p.kernels.push(Kernel::Gather { name: "g".into(), table: c, indices: idx, out: g, nodes: vec![] });
        p.kernels.push(Kernel::ScatterAdd { name: "s".into(), indices: idx, src: g, out: s, nodes: vec![] });
        p.outputs = vec![("c".into(), c), ("g".into(), g), ("s".into(), s)];
        let inputs = vec![
            ("a", Tensor::from_f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
            ("b", Tensor::from_f32(vec![2, 2], vec![1.0, 0.0, 1.0, 2.0])),
            ("idx", Tensor::from_i32(vec![3], vec![2, 0, 0])),
        ];
        let out = run(&p, inputs).unwrap();
        // aᵀ = [[1,4],[2,5],[3,6]]; aᵀ·b = [[5,8],[7,10],[9,12]].
        assert_eq!(f32s(&out["c"]), vec![5.0, 8.0, 7.0, 10.0, 9.0, 12.0]);
        assert_eq!(f32s(&out["g"]), vec![9.0, 12.0, 5.0, 8.0, 5.0, 8.0]);
        // Row 0 of s gets g rows 1 and 2, row 1 nothing, row 2 g row 0.
        assert_eq!(f32s(&out["s"]), vec![10.0, 16.0, 0.0, 0.0, 9.0, 12.0]);
        let bad = vec![
            ("a", Tensor::from_f32(vec![2, 3], vec![0.0; 6])),
            ("b", Tensor::from_f32(vec![2, 2], vec![0.0; 4])),
            ("idx", Tensor::from_i32(vec![3], vec![0, 3, 0])),
        ];
        let e = run(&p, bad).unwrap_err();
        assert_eq!(e, "kernel k1 \"g\": index 3 at position 1 is out of range 0..3");
    }

    #[test]
    fn runtime_errors_name_the_kernel_and_element() {
        let mut p = Program::default();
        let x = p.add_buffer(ty(DType::I32, &[3]), BufferKind::Input("x".into()));
        elementwise(
            &mut p,
            vec![
                typed(Expr::Const(6.0), DType::I32),
                typed(Expr::Load { buffer: x, index: map(0, &[1]) }, DType::I32),
                typed(Expr::Binary(BinaryOp::Div, ExprId(0), ExprId(1)), DType::I32),
            ],
            &[3],
            DType::I32,
        );
        let e = run(&p, vec![("x", Tensor::from_i32(vec![3], vec![1, 0, 2]))]).unwrap_err();
        assert_eq!(e, "kernel k0 \"ew\": e2: i32 division by zero (at domain index 1)");
        let ok = run(&p, vec![("x", Tensor::from_i32(vec![3], vec![1, -4, 2]))]).unwrap();
        assert_eq!(ok["out"].as_i32().unwrap(), &[6, -1, 3]);
    }
}
