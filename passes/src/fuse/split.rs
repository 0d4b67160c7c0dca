//! Column reductions in two stages.
//!
//! A reduction over the *outer* axes of a tensor — a bias gradient
//! `sum(dy, axes=[0,1])` of `dy: [B, T, N]` — reads memory across rows:
//! each output column walks `B·T` rows `N` elements apart, so every load is
//! a new cache line and, for wide rows, a new page. Splitting the reduce
//! loops in two keeps each walk short:
//!
//! ```text
//! stage 1  partial[c, n] = Σ_{r in chunk c} dy[r, n]     domain [C, N], reduce [R/C]
//! stage 2  out[n]        = post(Σ_c partial[c, n])       domain [N],    reduce [C]
//! ```
//!
//! Stage 1 has `C` times more independent outputs (more to split across
//! threads) and each walk touches `R/C` rows, which stay in cache while the
//! neighbouring columns are read; stage 2 is small. Only the summation order
//! changes (sums and maxima are associative up to rounding).
//!
//! The rewrite applies to a loop kernel with a reduction when its reduced
//! value reads no buffer contiguously along the innermost reduce axis (a
//! row-wise reduction such as a softmax's is already streaming) and the
//! reduce loops are long ([`MIN_REDUCE`]).

use lpac_ir::kernel::{BufferKind, Expr, ExprId, IndexMap, Kernel, LoopKernel, Program, Reduction, Typed};
use lpac_ir::types::TensorType;

/// Reductions shorter than this stay in one kernel.
pub const MIN_REDUCE: usize = 512;
/// The length each stage-1 walk aims for.
const CHUNK: usize = 128;

/// Splits every column reduction of `program` in two (see the module docs).
pub fn split_column_reductions(program: &mut Program) {
    let kernels = std::mem::take(&mut program.kernels);
    for kernel in kernels {
        match kernel {
            Kernel::Loop(k) if is_column_reduction(&k) => match split(program, &k) {
                Some((first, second)) => program.kernels.extend([Kernel::Loop(first), Kernel::Loop(second)]),
                None => program.kernels.push(Kernel::Loop(k)),
            },
            other => program.kernels.push(other),
        }
    }
}

fn is_column_reduction(k: &LoopKernel) -> bool {
    let Some(r) = &k.reduction else { return false };
    let (ndom, nred) = (k.domain.len(), k.reduce.len());
    if nred == 0 || ndom == 0 || k.reduce.iter().product::<usize>() < MIN_REDUCE {
        return false;
    }
    let innermost = ndom + nred - 1;
    let loads = needed(&k.exprs, &[r.value]);
    let mut any_load = false;
    for (i, t) in k.exprs.iter().enumerate() {
        if let Expr::Load { index, .. } | Expr::LoadIf { index, .. } = &t.expr
            && loads[i]
        {
            any_load = true;
            if index.strides[innermost].abs() == 1 {
                return false;
            }
        }
    }
    any_load
}

/// The reduce axes after splitting a single long axis `[R]` into
/// `[C, R/C]` (with `R/C` near [`CHUNK`]), and how many leading axes go to
/// stage 1's domain. `None` when no split fits.
fn plan(reduce: &[usize]) -> Option<(Vec<usize>, usize)> {
    let axes = if reduce.len() == 1 {
        let r = reduce[0];
        let inner = (CHUNK / 4..=CHUNK * 2).filter(|c| r.is_multiple_of(*c)).min_by_key(|c| c.abs_diff(CHUNK))?;
        vec![r / inner, inner]
    } else {
        reduce.to_vec()
    };
    // Move leading axes while at least CHUNK/2 iterations stay inside.
    let mut moved = 0;
    while moved + 1 < axes.len() && axes[moved + 1..].iter().product::<usize>() >= CHUNK / 2 {
        moved += 1;
    }
    (moved > 0).then_some((axes, moved))
}

fn split(program: &mut Program, k: &LoopKernel) -> Option<(LoopKernel, LoopKernel)> {
    let reduction = k.reduction.as_ref()?;
    let (axes, moved) = plan(&k.reduce)?;
    let ndom = k.domain.len();
    let split_single = axes.len() != k.reduce.len();
    // Old variable layout: domain, then reduce (one axis, or several).
    // Expanded layout: domain, then `axes`.
    let expand = |map: &IndexMap| -> IndexMap {
        let mut strides = map.strides[..ndom].to_vec();
        if split_single {
            let s = map.strides[ndom];
            strides.extend([s * axes[1] as i64, s]);
        } else {
            strides.extend_from_slice(&map.strides[ndom..]);
        }
        IndexMap { offset: map.offset, strides }
    };
    // Stage 1 variables: moved axes, domain, remaining axes.
    let stage1_map = |map: &IndexMap| -> IndexMap {
        let e = expand(map);
        let mut strides = e.strides[ndom..ndom + moved].to_vec();
        strides.extend_from_slice(&e.strides[..ndom]);
        strides.extend_from_slice(&e.strides[ndom + moved..]);
        IndexMap { offset: e.offset, strides }
    };
    // Stage 2 variables: domain, moved axes. Its expressions may not depend
    // on any reduce variable.
    let stage2_map = |map: &IndexMap| -> Option<IndexMap> {
        if map.strides[ndom..].iter().any(|&s| s != 0) {
            return None;
        }
        let mut strides = map.strides[..ndom].to_vec();
        strides.extend(std::iter::repeat_n(0, moved));
        Some(IndexMap { offset: map.offset, strides })
    };

    let value_dtype = k.exprs[reduction.value.index()].dtype;
    let moved_axes = axes[..moved].to_vec();
    let mut partial_shape = moved_axes.clone();
    partial_shape.extend_from_slice(&k.domain);
    let partial = program.add_buffer(TensorType::new(value_dtype, partial_shape), BufferKind::Temp);

    // Stage 1: the reduced value's expressions, storing the accumulator.
    let (mut exprs1, remap1) = prune(&k.exprs, &[reduction.value], &|m| Some(stage1_map(m)))?;
    exprs1.push(Typed { expr: Expr::Accumulated, dtype: value_dtype });
    let acc1 = ExprId(exprs1.len() as u32 - 1);
    let mut domain1 = moved_axes.clone();
    domain1.extend_from_slice(&k.domain);
    let first = LoopKernel {
        name: format!("{}.partial", k.name),
        domain: domain1,
        reduce: axes[moved..].to_vec(),
        exprs: exprs1,
        reduction: Some(Reduction { op: reduction.op, value: remap1[reduction.value.index()]? }),
        outputs: vec![(partial, acc1)],
        nodes: k.nodes.clone(),
    };

    // Stage 2: reduce the partials, then the original outputs.
    let roots: Vec<ExprId> = k.outputs.iter().map(|(_, e)| *e).collect();
    let (rest, remap2) = prune(&k.exprs, &roots, &stage2_map)?;
    let domain_total: usize = k.domain.iter().product();
    let mut strides = row_major(&k.domain);
    strides.extend(row_major(&moved_axes).into_iter().map(|s| s * domain_total as i64));
    let mut exprs2 = vec![Typed {
        expr: Expr::Load { buffer: partial, index: IndexMap { offset: 0, strides } },
        dtype: value_dtype,
    }];
    let shift = |e: ExprId| ExprId(e.0 + 1);
    exprs2.extend(rest.into_iter().map(|t| Typed { expr: shift_operands(t.expr, &shift), dtype: t.dtype }));
    let outputs = k.outputs.iter().map(|(b, e)| Some((*b, shift(remap2[e.index()]?)))).collect::<Option<Vec<_>>>()?;
    let second = LoopKernel {
        name: k.name.clone(),
        domain: k.domain.clone(),
        reduce: moved_axes,
        exprs: exprs2,
        reduction: Some(Reduction { op: reduction.op, value: ExprId(0) }),
        outputs,
        nodes: k.nodes.clone(),
    };
    Some((first, second))
}

fn row_major(shape: &[usize]) -> Vec<i64> {
    lpac_ir::types::strides(shape).into_iter().map(|s| s as i64).collect()
}

/// Which expressions `roots` depend on.
fn needed(exprs: &[Typed], roots: &[ExprId]) -> Vec<bool> {
    let mut needed = vec![false; exprs.len()];
    let mut stack: Vec<usize> = roots.iter().map(|e| e.index()).collect();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut needed[i], true) {
            continue;
        }
        match &exprs[i].expr {
            Expr::Unary(_, a) | Expr::Cast(a) => stack.push(a.index()),
            Expr::Binary(_, a, b) => stack.extend([a.index(), b.index()]),
            Expr::Select(c, a, b) => stack.extend([c.index(), a.index(), b.index()]),
            _ => {}
        }
    }
    needed
}

/// The expressions `roots` need, in order, with index maps rewritten by
/// `map` (`None` from it: the split does not apply), and where each old
/// expression went.
fn prune(
    exprs: &[Typed],
    roots: &[ExprId],
    map: &dyn Fn(&IndexMap) -> Option<IndexMap>,
) -> Option<(Vec<Typed>, Vec<Option<ExprId>>)> {
    let keep = needed(exprs, roots);
    let mut out = Vec::new();
    let mut remap = vec![None; exprs.len()];
    for (i, t) in exprs.iter().enumerate().filter(|(i, _)| keep[*i]) {
        let to = |e: ExprId| remap[e.index()].expect("operands come first and are needed");
        let expr = match &t.expr {
            Expr::Load { buffer, index } => Expr::Load { buffer: *buffer, index: map(index)? },
            Expr::LoadIf { buffer, index, bound, lo, hi, default } => Expr::LoadIf {
                buffer: *buffer,
                index: map(index)?,
                bound: map(bound)?,
                lo: *lo,
                hi: *hi,
                default: *default,
            },
            Expr::Index(m) => Expr::Index(map(m)?),
            Expr::Random { key, counter } => Expr::Random { key: *key, counter: map(counter)? },
            other => shift_operands(other.clone(), &to),
        };
        out.push(Typed { expr, dtype: t.dtype });
        remap[i] = Some(ExprId(out.len() as u32 - 1));
    }
    Some((out, remap))
}

/// `expr` with its operand ids passed through `f`.
fn shift_operands(expr: Expr, f: &dyn Fn(ExprId) -> ExprId) -> Expr {
    match expr {
        Expr::Unary(op, a) => Expr::Unary(op, f(a)),
        Expr::Binary(op, a, b) => Expr::Binary(op, f(a), f(b)),
        Expr::Select(c, a, b) => Expr::Select(f(c), f(a), f(b)),
        Expr::Cast(a) => Expr::Cast(f(a)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_keep_a_chunk_inside() {
        assert_eq!(plan(&[16, 128]), Some((vec![16, 128], 1)));
        assert_eq!(plan(&[2048]), Some((vec![16, 128], 1)));
        assert_eq!(plan(&[4, 8, 64]), Some((vec![4, 8, 64], 2)));
        // A prime length has no chunk; a single short axis stays.
        assert_eq!(plan(&[1031]), None);
        assert_eq!(plan(&[2, 32]), None);
    }
}
