//! Static checks of a kernel program before it runs on the CPU: everything
//! the executor, the library kernels and compiled kernels rely on to stay
//! inside their buffers.
//!
//! - every buffer has a supported dtype (f32, i32, bool) and every id exists;
//! - loop kernels are well formed and well typed (see [`check_loop_kernel`]),
//!   their stores cover exactly the output buffer, and every `load` (and
//!   every `load_if` whose bound is one loop variable) stays inside its
//!   buffer over the whole loop box;
//! - gemm operands are f32 and every element they address exists;
//! - gather and scatter_add shapes agree;
//! - kernels write only temps, never a buffer they also read, never the same
//!   buffer twice; a temp is written before it is read, and every output
//!   temp is written.
//!
//! Messages name the kernel (`kernel k3 "softmax"`) and the expression or
//! buffer at fault.

use lpac_ir::kernel::{BufferId, BufferKind, Expr, ExprId, GemmKernel, IndexMap, Kernel, LoopKernel, Operand, Program};
use lpac_ir::op::UnaryOp;
use lpac_ir::types::DType;

use crate::memory::supported;

/// Checks a whole program; see the module docs.
pub fn check_program(program: &Program) -> Result<(), String> {
    for (i, b) in program.buffers.iter().enumerate() {
        if !supported(b.ty.dtype) {
            return Err(format!("buffer b{i} has dtype {}, which the CPU backend does not support", b.ty.dtype));
        }
    }
    let mut written = vec![false; program.buffers.len()];
    for (i, kernel) in program.kernels.iter().enumerate() {
        let at = |e: String| format!("kernel k{i} {:?}: {e}", kernel.name());
        for &b in kernel.reads().iter().chain(&kernel.writes()) {
            exists(program, b).map_err(at)?;
        }
        check_kernel(program, kernel).map_err(at)?;
        // A rows kernel's stages run in order: each may read what earlier
        // stages wrote.
        let steps: Vec<(Vec<BufferId>, Vec<BufferId>)> = match kernel {
            Kernel::Rows(r) => r.stages.iter().map(|s| (s.reads(), s.writes())).collect(),
            k => vec![(k.reads(), k.writes())],
        };
        for (reads, writes) in steps {
            for (j, &w) in writes.iter().enumerate() {
                if program.buffer(w).kind != BufferKind::Temp {
                    return Err(at(format!("writes b{}, which is not a temp", w.0)));
                }
                if reads.contains(&w) {
                    return Err(at(format!("reads and writes b{}", w.0)));
                }
                if writes[..j].contains(&w) || written[w.index()] {
                    return Err(at(format!("writes b{} twice", w.0)));
                }
            }
            for &r in &reads {
                if program.buffer(r).kind == BufferKind::Temp && !written[r.index()] {
                    return Err(at(format!("reads b{}, which no earlier kernel writes", r.0)));
                }
            }
            for &w in &writes {
                written[w.index()] = true;
            }
        }
    }
    for (name, b) in &program.outputs {
        exists(program, *b).map_err(|e| format!("output `{name}`: {e}"))?;
        if program.buffer(*b).kind == BufferKind::Temp && !written[b.index()] {
            return Err(format!("output `{name}` is b{}, which no kernel writes", b.0));
        }
    }
    Ok(())
}

fn exists(program: &Program, b: BufferId) -> Result<(), String> {
    if b.index() < program.buffers.len() {
        Ok(())
    } else {
        Err(format!("buffer b{} does not exist ({} buffers)", b.0, program.buffers.len()))
    }
}

/// Checks one kernel against the program's buffers (ids must exist).
pub fn check_kernel(program: &Program, kernel: &Kernel) -> Result<(), String> {
    match kernel {
        Kernel::Loop(k) => check_loop_kernel(program, k),
        Kernel::Rows(r) => {
            for (i, stage) in r.stages.iter().enumerate() {
                match stage {
                    lpac_ir::kernel::RowStage::Loop(l) => check_loop_kernel(program, l),
                    lpac_ir::kernel::RowStage::Gemm(g) => check_gemm(program, g),
                }
                .map_err(|e| format!("stage {i}: {e}"))?;
            }
            r.validate()
        }
        Kernel::Multi(m) => {
            for (i, member) in m.members.iter().enumerate() {
                check_loop_kernel(program, member).map_err(|e| format!("member {i}: {e}"))?;
            }
            m.validate()
        }
        Kernel::Attention(a) => crate::attention::check_attention(program, a),
        Kernel::Gemm(g) => check_gemm(program, g),
        Kernel::Gather { table, indices, out, .. } => {
            let (t, i, o) = (&program.buffer(*table).ty, &program.buffer(*indices).ty, &program.buffer(*out).ty);
            if i.dtype != DType::I32 {
                return Err(format!("gather indices b{} are {}, not i32", indices.0, i));
            }
            if t.rank() == 0 {
                return Err(format!("gather table b{} is a scalar", table.0));
            }
            let expected: Vec<usize> = i.shape.iter().chain(&t.shape[1..]).copied().collect();
            if o.shape != expected || o.dtype != t.dtype {
                return Err(format!(
                    "gather of {t} by {i} gives {}{}, but b{} is {o}",
                    t.dtype,
                    lpac_ir::types::format_shape(&expected),
                    out.0
                ));
            }
            Ok(())
        }
        Kernel::ScatterAdd { indices, src, out, .. } => {
            let (i, s, o) = (&program.buffer(*indices).ty, &program.buffer(*src).ty, &program.buffer(*out).ty);
            if i.dtype != DType::I32 {
                return Err(format!("scatter_add indices b{} are {}, not i32", indices.0, i));
            }
            if o.rank() == 0 {
                return Err(format!("scatter_add output b{} is a scalar", out.0));
            }
            if o.dtype == DType::Bool {
                return Err("scatter_add of bool values is not defined".into());
            }
            let expected: Vec<usize> = i.shape.iter().chain(&o.shape[1..]).copied().collect();
            if s.shape != expected || s.dtype != o.dtype {
                return Err(format!(
                    "scatter_add into {o} at {i} needs source {}{}, but b{} is {s}",
                    o.dtype,
                    lpac_ir::types::format_shape(&expected),
                    src.0
                ));
            }
            Ok(())
        }
    }
}

/// Smallest and largest value of `offset + Σ stride·var` over the box
/// `0 <= var < extent`, or `None` when the box is empty.
pub fn affine_range(offset: i64, terms: impl IntoIterator<Item = (i64, usize)>) -> Option<(i128, i128)> {
    let (mut lo, mut hi) = (i128::from(offset), i128::from(offset));
    for (stride, extent) in terms {
        if extent == 0 {
            return None;
        }
        let span = i128::from(stride) * (extent as i128 - 1);
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    Some((lo, hi))
}

/// Checks that `[lo, hi]` lies in `0..len`.
fn in_bounds(range: Option<(i128, i128)>, len: usize, what: impl Fn() -> String) -> Result<(), String> {
    match range {
        Some((lo, hi)) if lo < 0 || hi >= len as i128 => {
            Err(format!("{} addresses elements {lo}..={hi}, outside 0..{len}", what()))
        }
        _ => Ok(()),
    }
}

/// Checks a gemm kernel: f32 operands, `c` contiguous `[batch.., m, n]` and
/// distinct from the operands, and every addressed operand element in range.
pub fn check_gemm(program: &Program, g: &GemmKernel) -> Result<(), String> {
    for b in [g.a.buffer, g.b.buffer, g.c] {
        exists(program, b)?;
        let ty = &program.buffer(b).ty;
        if ty.dtype != DType::F32 {
            return Err(format!("gemm operand b{} is {ty}; only f32 is supported", b.0));
        }
    }
    if g.c == g.a.buffer || g.c == g.b.buffer {
        return Err(format!("gemm writes b{}, which it also reads", g.c.0));
    }
    let batches: usize = g.batch.iter().product();
    let c_len = program.buffer(g.c).ty.numel();
    if batches * g.m * g.n != c_len {
        return Err(format!(
            "gemm output b{} has {c_len} elements, but batch {:?} × m {} × n {} is {}",
            g.c.0,
            g.batch,
            g.m,
            g.n,
            batches * g.m * g.n
        ));
    }
    check_operand(program, g, &g.a, "a", g.m, g.k)?;
    check_operand(program, g, &g.b, "b", g.k, g.n)
}

fn check_operand(
    program: &Program,
    g: &GemmKernel,
    o: &Operand,
    which: &str,
    rows: usize,
    cols: usize,
) -> Result<(), String> {
    if o.batch_strides.len() != g.batch.len() {
        return Err(format!(
            "gemm operand {which} has {} batch strides for {} batch axes",
            o.batch_strides.len(),
            g.batch.len()
        ));
    }
    let terms = o.batch_strides.iter().copied().zip(g.batch.iter().copied());
    let terms = terms.chain([(o.row_stride, rows), (o.col_stride, cols)]);
    in_bounds(affine_range(o.offset, terms), program.buffer(o.buffer).ty.numel(), || {
        format!("gemm operand {which} (b{})", o.buffer.0)
    })
}

/// For each expression of a loop kernel: is it needed for the reduction
/// value (evaluated per reduce index), and is it needed by an output
/// (evaluated once per domain index, after the reduction)?
pub fn expr_uses(k: &LoopKernel) -> (Vec<bool>, Vec<bool>) {
    fn mark(k: &LoopKernel, roots: impl IntoIterator<Item = ExprId>) -> Vec<bool> {
        let mut needed = vec![false; k.exprs.len()];
        for r in roots {
            if r.index() < needed.len() {
                needed[r.index()] = true;
            }
        }
        for e in (0..k.exprs.len()).rev() {
            if needed[e] {
                for o in operands(&k.exprs[e].expr) {
                    if o.index() < e {
                        needed[o.index()] = true;
                    }
                }
            }
        }
        needed
    }
    let reduce = mark(k, k.reduction.as_ref().map(|r| r.value));
    let post = mark(k, k.outputs.iter().map(|(_, e)| *e));
    (reduce, post)
}

/// The operands of an expression.
pub fn operands(e: &Expr) -> Vec<ExprId> {
    match e {
        Expr::Unary(_, a) | Expr::Cast(a) => vec![*a],
        Expr::Binary(_, a, b) => vec![*a, *b],
        Expr::Select(c, a, b) => vec![*c, *a, *b],
        _ => Vec::new(),
    }
}

/// The index maps an expression evaluates.
fn index_maps(e: &Expr) -> Vec<&IndexMap> {
    match e {
        Expr::Load { index, .. } => vec![index],
        Expr::LoadIf { index, bound, .. } => vec![index, bound],
        Expr::Index(m) => vec![m],
        Expr::Random { counter, .. } => vec![counter],
        _ => Vec::new(),
    }
}

/// Checks a loop kernel: shape of the loop nest, index maps of the right
/// length, operands before their users, types (see the comments inline),
/// loads in bounds, outputs covering their buffers, and the reduction's
/// structure (`acc` only after it, reduce variables only before it).
pub fn check_loop_kernel(program: &Program, k: &LoopKernel) -> Result<(), String> {
    let rank = k.domain.len();
    let nvars = rank + k.reduce.len();
    if k.reduce.is_empty() != k.reduction.is_none() {
        return Err("a kernel has a reduction exactly when it has reduce axes".into());
    }
    let extents: Vec<usize> = k.domain.iter().chain(&k.reduce).copied().collect();
    let dtype_of = |id: ExprId, at: usize| -> Result<DType, String> {
        if id.index() >= at {
            return Err(format!("e{at} uses e{}, which does not come before it", id.0));
        }
        Ok(k.exprs[id.index()].dtype)
    };
    for (e, t) in k.exprs.iter().enumerate() {
        let err = |m: String| format!("e{e}: {m}");
        if !supported(t.dtype) {
            return Err(err(format!("dtype {} is not supported", t.dtype)));
        }
        for m in index_maps(&t.expr) {
            if m.strides.len() != nvars {
                return Err(err(format!("index map has {} strides for {nvars} loop variables", m.strides.len())));
            }
        }
        match &t.expr {
            Expr::Load { buffer, index } => {
                exists(program, *buffer).map_err(err)?;
                let ty = &program.buffer(*buffer).ty;
                if ty.dtype != t.dtype {
                    return Err(err(format!("loads b{} of dtype {} as {}", buffer.0, ty.dtype, t.dtype)));
                }
                let range = affine_range(index.offset, index.strides.iter().copied().zip(extents.iter().copied()));
                in_bounds(range, ty.numel(), || format!("e{e}: load of b{}", buffer.0))?;
            }
            Expr::LoadIf { buffer, index, bound, lo, hi, .. } => {
                exists(program, *buffer).map_err(err)?;
                let ty = &program.buffer(*buffer).ty;
                if ty.dtype != t.dtype {
                    return Err(err(format!("loads b{} of dtype {} as {}", buffer.0, ty.dtype, t.dtype)));
                }
                if let Some(Some(box_)) = guarded_box(&extents, bound, *lo, *hi) {
                    let range = range_over(index.offset, &index.strides, &box_);
                    in_bounds(Some(range), ty.numel(), || format!("e{e}: guarded load of b{}", buffer.0))?;
                }
            }
            // Any supported dtype.
            Expr::Const(_) => {}
            Expr::Index(_) => {
                if t.dtype == DType::Bool {
                    return Err(err("an index value cannot be bool".into()));
                }
            }
            Expr::Random { counter, .. } => {
                if t.dtype != DType::F32 {
                    return Err(err(format!("random numbers are f32, not {}", t.dtype)));
                }
                let range = affine_range(counter.offset, counter.strides.iter().copied().zip(extents.iter().copied()));
                if range.is_some_and(|(lo, _)| lo < 0) {
                    return Err(err("the random counter can be negative".into()));
                }
            }
            Expr::Unary(u, a) => {
                let a = dtype_of(*a, e).map_err(err)?;
                let ok = match u {
                    UnaryOp::Not => a == DType::Bool,
                    UnaryOp::Neg | UnaryOp::Abs => a != DType::Bool,
                    _ => a == DType::F32,
                };
                if !ok || a != t.dtype {
                    return Err(err(format!("`{}` of {a} giving {}", u.name(), t.dtype)));
                }
            }
            Expr::Binary(b, x, y) => {
                let (x, y) = (dtype_of(*x, e).map_err(err)?, dtype_of(*y, e).map_err(err)?);
                let result = if b.is_comparison() { DType::Bool } else { x };
                let ok = x == y
                    && result == t.dtype
                    && if b.is_logical() {
                        x == DType::Bool
                    } else if b.is_comparison() {
                        true
                    } else if *b == lpac_ir::op::BinaryOp::Pow {
                        x == DType::F32
                    } else {
                        x != DType::Bool
                    };
                if !ok {
                    return Err(err(format!("`{}` of {x} and {y} giving {}", b.name(), t.dtype)));
                }
            }
            Expr::Select(c, a, b) => {
                let c = dtype_of(*c, e).map_err(err)?;
                let (a, b) = (dtype_of(*a, e).map_err(err)?, dtype_of(*b, e).map_err(err)?);
                if c != DType::Bool || a != t.dtype || b != t.dtype {
                    return Err(err(format!("select on {c} of {a} and {b} giving {}", t.dtype)));
                }
            }
            Expr::Cast(a) => {
                dtype_of(*a, e).map_err(err)?;
            }
            Expr::Accumulated => match &k.reduction {
                None => return Err(err("`acc` in a kernel without a reduction".into())),
                Some(r) if r.value.index() < k.exprs.len() && k.exprs[r.value.index()].dtype != t.dtype => {
                    return Err(err(format!(
                        "`acc` is {}, but the reduced value is {}",
                        t.dtype,
                        k.exprs[r.value.index()].dtype
                    )));
                }
                Some(_) => {}
            },
        }
    }
    let (in_reduce, in_post) = expr_uses(k);
    if let Some(r) = &k.reduction {
        let Some(v) = k.exprs.get(r.value.index()) else {
            return Err(format!("the reduction reads e{}, which does not exist", r.value.0));
        };
        if v.dtype == DType::Bool {
            return Err("cannot reduce bool values".into());
        }
        for (e, t) in k.exprs.iter().enumerate() {
            if in_reduce[e] && t.expr == Expr::Accumulated {
                return Err(format!("e{e}: `acc` is used by the reduced value itself"));
            }
            let uses_reduce_var = index_maps(&t.expr).iter().any(|m| m.strides[rank..].iter().any(|&s| s != 0));
            if in_post[e] && uses_reduce_var {
                return Err(format!("e{e}: an output depends on a reduce variable"));
            }
        }
    }
    let numel: usize = k.domain.iter().product();
    for (b, e) in &k.outputs {
        exists(program, *b)?;
        let ty = &program.buffer(*b).ty;
        let Some(t) = k.exprs.get(e.index()) else {
            return Err(format!("store to b{} of e{}, which does not exist", b.0, e.0));
        };
        if ty.numel() != numel {
            return Err(format!("store to b{} ({ty}) from a domain of {numel} elements", b.0));
        }
        if ty.dtype != t.dtype {
            return Err(format!("store of e{} ({}) to b{} ({ty})", e.0, t.dtype, b.0));
        }
    }
    Ok(())
}

/// The loop box as inclusive per-variable ranges.
fn full_box(extents: &[usize]) -> Option<Vec<(i128, i128)>> {
    if extents.contains(&0) {
        return None;
    }
    Some(extents.iter().map(|&e| (0, e as i128 - 1)).collect())
}

/// Smallest and largest value of `offset + Σ stride·var` over the inclusive
/// per-variable ranges of `box_`.
fn range_over(offset: i64, strides: &[i64], box_: &[(i128, i128)]) -> (i128, i128) {
    let (mut lo, mut hi) = (i128::from(offset), i128::from(offset));
    for (&s, &(a, b)) in strides.iter().zip(box_) {
        let (x, y) = (i128::from(s) * a, i128::from(s) * b);
        lo += x.min(y);
        hi += x.max(y);
    }
    (lo, hi)
}

fn div_floor(a: i128, b: i128) -> i128 {
    let q = a / b;
    if (a % b != 0) && ((a < 0) != (b < 0)) { q - 1 } else { q }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    -div_floor(-a, b)
}

/// The part of the loop box where a `load_if` guard `lo <= bound < hi` holds,
/// when `bound` involves at most one loop variable: `Some(Some(box))`, or
/// `Some(None)` when the guard never holds (or the box is empty). `None`
/// when the bound involves several variables: such loads are only checked
/// at run time (by the reference evaluator; compiled code must guard them).
fn guarded_box(extents: &[usize], bound: &IndexMap, lo: i64, hi: i64) -> Option<Option<Vec<(i128, i128)>>> {
    let Some(mut box_) = full_box(extents) else {
        return Some(None);
    };
    let vars: Vec<usize> = (0..bound.strides.len()).filter(|&v| bound.strides[v] != 0).collect();
    let (off, lo, hi) = (i128::from(bound.offset), i128::from(lo), i128::from(hi));
    match vars.as_slice() {
        [] => Some((lo <= off && off < hi).then_some(box_)),
        [v] => {
            // lo - off <= s·x <= hi - 1 - off
            let s = i128::from(bound.strides[*v]);
            let (a, b) = (lo - off, hi - 1 - off);
            let (min, max) = if s > 0 { (div_ceil(a, s), div_floor(b, s)) } else { (div_ceil(b, s), div_floor(a, s)) };
            let (start, end) = (box_[*v].0.max(min), box_[*v].1.min(max));
            if start > end {
                return Some(None);
            }
            box_[*v] = (start, end);
            Some(Some(box_))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lpac_ir::kernel::{Reduction, Typed};
    use lpac_ir::op::{BinaryOp, ReduceOp};
    use lpac_ir::types::TensorType;

    fn f32s(shape: &[usize]) -> TensorType {
        TensorType::new(DType::F32, shape.to_vec())
    }

    fn map(offset: i64, strides: &[i64]) -> IndexMap {
        IndexMap { offset, strides: strides.to_vec() }
    }

    fn loop_kernel(exprs: Vec<Typed>, domain: &[usize], outputs: Vec<(BufferId, ExprId)>) -> LoopKernel {
        LoopKernel {
            name: "k".into(),
            domain: domain.to_vec(),
            reduce: vec![],
            exprs,
            reduction: None,
            outputs,
            nodes: vec![],
        }
    }

    fn typed(expr: Expr, dtype: DType) -> Typed {
        Typed { expr, dtype }
    }

    #[test]
    fn affine_ranges() {
        assert_eq!(affine_range(5, [(2, 3), (-1, 4)]), Some((2, 9)));
        assert_eq!(affine_range(5, [(2, 0)]), None);
        assert_eq!(affine_range(7, []), Some((7, 7)));
    }

    #[test]
    fn out_of_bounds_loads_and_bad_types_are_rejected() {
        let mut p = Program::default();
        let x = p.add_buffer(f32s(&[4, 3]), BufferKind::Input("x".into()));
        let y = p.add_buffer(f32s(&[3, 4]), BufferKind::Temp);
        // Transpose: y[i0, i1] = x[i1, i0].
        let good = loop_kernel(
            vec![typed(Expr::Load { buffer: x, index: map(0, &[1, 3]) }, DType::F32)],
            &[3, 4],
            vec![(y, ExprId(0))],
        );
        check_loop_kernel(&p, &good).unwrap();
        let mut bad = good.clone();
        bad.exprs[0].expr = Expr::Load { buffer: x, index: map(1, &[1, 3]) };
        let e = check_loop_kernel(&p, &bad).unwrap_err();
        assert!(e.contains("elements 1..=12, outside 0..12"), "{e}");
        let mut bad = good.clone();
        bad.exprs.push(typed(Expr::Binary(BinaryOp::Add, ExprId(0), ExprId(0)), DType::Bool));
        assert!(check_loop_kernel(&p, &bad).unwrap_err().contains("`add` of f32 and f32 giving bool"));
        let mut bad = good.clone();
        bad.exprs.push(typed(Expr::Unary(UnaryOp::Exp, ExprId(2)), DType::F32));
        assert!(check_loop_kernel(&p, &bad).unwrap_err().contains("does not come before"));
        let mut bad = good;
        bad.domain = vec![4, 4];
        assert!(check_loop_kernel(&p, &bad).is_err());
    }

    #[test]
    fn guarded_loads_are_checked_where_the_guard_holds() {
        // Pad: y[i0] = lo <= i0 - 2 < 3 ? x[i0 - 2] : 0, over a domain of 7.
        let mut p = Program::default();
        let x = p.add_buffer(f32s(&[3]), BufferKind::Input("x".into()));
        let y = p.add_buffer(f32s(&[7]), BufferKind::Temp);
        let pad = |offset, bound_offset| {
            loop_kernel(
                vec![typed(
                    Expr::LoadIf {
                        buffer: x,
                        index: map(offset, &[1]),
                        bound: map(bound_offset, &[1]),
                        lo: 0,
                        hi: 3,
                        default: 0.0,
                    },
                    DType::F32,
                )],
                &[7],
                vec![(y, ExprId(0))],
            )
        };
        check_loop_kernel(&p, &pad(-2, -2)).unwrap();
        let e = check_loop_kernel(&p, &pad(-1, -2)).unwrap_err();
        assert!(e.contains("guarded load of b0 addresses elements 1..=3"), "{e}");
        // A negative bound stride: reversed index.
        let mut rev = pad(6, 6);
        if let Expr::LoadIf { index, bound, .. } = &mut rev.exprs[0].expr {
            index.strides = vec![-1];
            bound.strides = vec![-1];
        }
        // 0 <= 6 - i0 < 3 ⇔ i0 in 4..=6, index 6 - i0 in 0..=2.
        check_loop_kernel(&p, &rev).unwrap();
        assert_eq!(guarded_box(&[7], &map(6, &[-1]), 0, 3), Some(Some(vec![(4, 6)])));
        assert_eq!(guarded_box(&[7], &map(10, &[1]), 0, 3), Some(None));
        assert_eq!(guarded_box(&[7, 2], &map(0, &[1, 1]), 0, 3), None);
        assert_eq!(guarded_box(&[7, 2], &map(1, &[0, 0]), 0, 3), Some(Some(vec![(0, 6), (0, 1)])));
        assert_eq!(div_floor(-3, 2), -2);
        assert_eq!(div_ceil(-3, 2), -1);
        assert_eq!(div_ceil(3, -2), -1);
        assert_eq!(div_floor(3, -2), -2);
    }

    #[test]
    fn reduction_structure_is_checked() {
        let mut p = Program::default();
        let x = p.add_buffer(f32s(&[2, 3]), BufferKind::Input("x".into()));
        let y = p.add_buffer(f32s(&[2]), BufferKind::Temp);
        let mut k = loop_kernel(
            vec![
                typed(Expr::Load { buffer: x, index: map(0, &[3, 1]) }, DType::F32),
                typed(Expr::Accumulated, DType::F32),
            ],
            &[2],
            vec![(y, ExprId(1))],
        );
        k.reduce = vec![3];
        k.reduction = Some(Reduction { op: ReduceOp::Sum, value: ExprId(0) });
        check_loop_kernel(&p, &k).unwrap();
        let mut bad = k.clone();
        bad.outputs = vec![(y, ExprId(0))];
        assert!(check_loop_kernel(&p, &bad).unwrap_err().contains("depends on a reduce variable"));
        let mut bad = k.clone();
        bad.reduction = Some(Reduction { op: ReduceOp::Sum, value: ExprId(1) });
        assert!(check_loop_kernel(&p, &bad).unwrap_err().contains("used by the reduced value"));
        let mut bad = k;
        bad.reduction = None;
        assert!(check_loop_kernel(&p, &bad).is_err());
    }

    #[test]
    fn program_level_rules() {
        let mut p = Program::default();
        let x = p.add_buffer(f32s(&[2]), BufferKind::Input("x".into()));
        let t = p.add_buffer(f32s(&[2]), BufferKind::Temp);
        let u = p.add_buffer(f32s(&[2]), BufferKind::Temp);
        let copy = |from, to| {
            Kernel::Loop(loop_kernel(
                vec![typed(Expr::Load { buffer: from, index: map(0, &[1]) }, DType::F32)],
                &[2],
                vec![(to, ExprId(0))],
            ))
        };
        p.kernels = vec![copy(x, t), copy(t, u)];
        p.outputs = vec![("u".into(), u)];
        check_program(&p).unwrap();
        p.kernels.swap(0, 1);
        assert!(check_program(&p).unwrap_err().contains("reads b1, which no earlier kernel writes"));
        p.kernels = vec![copy(t, x)];
        assert!(check_program(&p).unwrap_err().contains("not a temp"));
        p.kernels = vec![copy(x, t)];
        let e = check_program(&p).unwrap_err();
        assert_eq!(e, "output `u` is b2, which no kernel writes");
        p.kernels = vec![copy(x, t), copy(t, t)];
        assert!(check_program(&p).unwrap_err().contains("reads and writes b1"));
    }
}
