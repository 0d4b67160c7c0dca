//! Checks a loop kernel and decides where each expression is computed and
//! which axis, if any, is vectorised.

use lpac_ir::kernel::{BufferId, Expr, IndexMap, LoopKernel, Program};
use lpac_ir::{BinaryOp, DType, UnaryOp};

use super::{CodegenError, CodegenErrorKind};

/// Which loop, if any, runs four lanes at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vectorization {
    /// Scalar loops only.
    Scalar,
    /// The innermost domain axis, four output elements at a time.
    Domain,
    /// The innermost reduce axis, four running lanes per output element.
    Reduce,
}

/// The loop level where an expression is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Place {
    /// Once per call (constants).
    Entry,
    /// Once per domain row (outer domain coordinates).
    Row,
    /// Once per output element (the innermost domain coordinate).
    Elem,
    /// Inside reduce loop `k` (0 = outermost).
    Reduce(usize),
    /// After the reduction (reads its result).
    Post,
}

pub(crate) struct Analysis {
    pub ndom: usize,
    pub nred: usize,
    /// Extent of the innermost domain axis (1 for a scalar domain).
    pub inner: u64,
    /// Number of domain elements.
    pub total: u64,
    pub place: Vec<Place>,
    /// Per expression: reached from an output or the reduction.
    pub needed: Vec<bool>,
    /// Per expression: a vector value inside the vector region.
    pub vecdep: Vec<bool>,
    /// For `load_if`: the index map stays within the buffer for every point
    /// of the iteration space (no clamp needed).
    pub in_bounds: Vec<bool>,
    /// For `index`: every value fits in i32 (vector ramp possible).
    pub fits_i32: Vec<bool>,
    pub mode: Vectorization,
    /// The vectorised loop variable.
    pub vec_var: Option<usize>,
    /// Element counts of the buffers.
    pub numel: Vec<u64>,
}

impl Analysis {
    pub fn nvars(&self) -> usize {
        self.ndom + self.nred
    }
}

fn invalid(k: &LoopKernel, m: impl Into<String>) -> CodegenError {
    CodegenError::new(&k.name, CodegenErrorKind::Invalid, m)
}

fn unsupported(k: &LoopKernel, m: impl Into<String>) -> CodegenError {
    CodegenError::new(&k.name, CodegenErrorKind::Unsupported, m)
}

fn supported_dtype(d: DType) -> bool {
    matches!(d, DType::F32 | DType::I32 | DType::Bool)
}

pub(crate) fn elem_size(d: DType) -> u32 {
    match d {
        DType::Bool => 1,
        DType::BF16 | DType::F16 => 2,
        DType::F32 | DType::I32 => 4,
    }
}

/// The least and greatest value of `map` over the iteration box, or `None`
/// when some axis has extent 0 (no iteration).
fn map_range(map: &IndexMap, extents: &[usize]) -> Option<(i128, i128)> {
    let (mut lo, mut hi) = (map.offset as i128, map.offset as i128);
    for (&s, &e) in map.strides.iter().zip(extents) {
        if e == 0 {
            return None;
        }
        let span = s as i128 * (e as i128 - 1);
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    Some((lo, hi))
}

fn map_deps(map: &IndexMap) -> u64 {
    map.strides.iter().enumerate().filter(|(_, s)| **s != 0).fold(0, |acc, (v, _)| acc | (1u64 << v))
}

pub(crate) fn analyze(program: &Program, k: &LoopKernel, allow_vector: bool) -> Result<Analysis, CodegenError> {
    let ndom = k.domain.len();
    let nred = k.reduce.len();
    let nvars = ndom + nred;
    if nvars > 63 {
        return Err(unsupported(k, format!("{nvars} loop variables (at most 63)")));
    }
    if nred > 0 && k.reduction.is_none() {
        return Err(invalid(k, "reduce axes without a reduction"));
    }
    if nred == 0 && k.reduction.is_some() {
        return Err(invalid(k, "a reduction without reduce axes"));
    }
    let extents: Vec<usize> = k.domain.iter().chain(&k.reduce).copied().collect();
    let total = k.domain.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
    let red_total = k.reduce.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
    let (Some(total), Some(_)) = (total, red_total) else {
        return Err(unsupported(k, "the iteration space overflows u64"));
    };
    let numel: Vec<u64> = program.buffers.iter().map(|b| b.ty.shape.iter().map(|&d| d as u64).product()).collect();

    let n = k.exprs.len();
    let dtype_of = |id: lpac_ir::kernel::ExprId, at: usize| -> Result<DType, CodegenError> {
        if id.index() >= at {
            return Err(invalid(k, format!("e{at} uses e{} which does not come before it", id.0)));
        }
        Ok(k.exprs[id.index()].dtype)
    };
    let check_map = |map: &IndexMap, at: usize| -> Result<(), CodegenError> {
        if map.strides.len() != nvars {
            return Err(invalid(
                k,
                format!("e{at}: index map has {} strides for {nvars} loop variables", map.strides.len()),
            ));
        }
        Ok(())
    };
    let check_buffer = |b: BufferId, at: usize, dtype: DType| -> Result<(), CodegenError> {
        let Some(buf) = program.buffers.get(b.index()) else {
            return Err(invalid(k, format!("e{at}: buffer b{} does not exist", b.0)));
        };
        if !supported_dtype(buf.ty.dtype) {
            return Err(unsupported(k, format!("e{at}: buffer b{} has dtype {}", b.0, buf.ty.dtype.name())));
        }
        if buf.ty.dtype != dtype {
            return Err(invalid(
                k,
                format!("e{at}: loads {} from buffer b{} of dtype {}", dtype.name(), b.0, buf.ty.dtype.name()),
            ));
        }
        Ok(())
    };

    // Types, operands and dependencies.
    let mut deps = vec![0u64; n];
    let mut acc_dep = vec![false; n];
    let mut in_bounds = vec![true; n];
    let mut fits_i32 = vec![false; n];
    let acc_dtype = match &k.reduction {
        Some(r) => {
            if r.value.index() >= n {
                return Err(invalid(k, format!("the reduction reads e{} which does not exist", r.value.0)));
            }
            Some(k.exprs[r.value.index()].dtype)
        }
        None => None,
    };
    for (i, t) in k.exprs.iter().enumerate() {
        let d = t.dtype;
        if !supported_dtype(d) {
            return Err(unsupported(k, format!("e{i} has dtype {}", d.name())));
        }
        let bad = |what: String| Err(invalid(k, format!("e{i}: {what}")));
        match &t.expr {
            Expr::Load { buffer, index } => {
                check_map(index, i)?;
                check_buffer(*buffer, i, d)?;
                deps[i] = map_deps(index);
            }
            Expr::LoadIf { buffer, index, bound, .. } => {
                check_map(index, i)?;
                check_map(bound, i)?;
                check_buffer(*buffer, i, d)?;
                deps[i] = map_deps(index) | map_deps(bound);
                let len = numel[buffer.index()] as i128;
                in_bounds[i] = match map_range(index, &extents) {
                    Some((lo, hi)) => lo >= 0 && hi < len,
                    None => true,
                };
            }
            Expr::Const(_) => {}
            Expr::Index(map) => {
                check_map(map, i)?;
                deps[i] = map_deps(map);
                fits_i32[i] = match map_range(map, &extents) {
                    Some((lo, hi)) => lo >= i32::MIN as i128 && hi <= i32::MAX as i128,
                    None => true,
                };
            }
            Expr::Random { counter, .. } => {
                check_map(counter, i)?;
                if d != DType::F32 {
                    return bad(format!("random numbers of dtype {}", d.name()));
                }
                deps[i] = map_deps(counter);
            }
            Expr::Unary(op, a) => {
                let ta = dtype_of(*a, i)?;
                deps[i] = deps[a.index()];
                acc_dep[i] = acc_dep[a.index()];
                let ok = match op {
                    UnaryOp::Neg | UnaryOp::Abs => ta != DType::Bool && d == ta,
                    UnaryOp::Not => ta == DType::Bool && d == DType::Bool,
                    _ => ta == DType::F32 && d == DType::F32,
                };
                if !ok {
                    return bad(format!("`{}` of {} giving {}", op.name(), ta.name(), d.name()));
                }
            }
            Expr::Binary(op, a, b) => {
                let (ta, tb) = (dtype_of(*a, i)?, dtype_of(*b, i)?);
                deps[i] = deps[a.index()] | deps[b.index()];
                acc_dep[i] = acc_dep[a.index()] || acc_dep[b.index()];
                let ok = ta == tb
                    && if op.is_comparison() {
                        d == DType::Bool
                    } else if op.is_logical() {
                        ta == DType::Bool && d == DType::Bool
                    } else if *op == BinaryOp::Pow {
                        ta == DType::F32 && d == DType::F32
                    } else {
                        ta != DType::Bool && d == ta
                    };
                if !ok {
                    return bad(format!("`{}` of {} and {} giving {}", op.name(), ta.name(), tb.name(), d.name()));
                }
            }
            Expr::Select(c, a, b) => {
                let (tc, ta, tb) = (dtype_of(*c, i)?, dtype_of(*a, i)?, dtype_of(*b, i)?);
                deps[i] = deps[c.index()] | deps[a.index()] | deps[b.index()];
                acc_dep[i] = acc_dep[c.index()] || acc_dep[a.index()] || acc_dep[b.index()];
                if tc != DType::Bool || ta != d || tb != d {
                    return bad(format!("select of {}, {}, {} giving {}", tc.name(), ta.name(), tb.name(), d.name()));
                }
            }
            Expr::Cast(a) => {
                dtype_of(*a, i)?;
                deps[i] = deps[a.index()];
                acc_dep[i] = acc_dep[a.index()];
            }
            Expr::Accumulated => match acc_dtype {
                None => return bad("`acc` in a kernel without a reduction".into()),
                Some(ad) if ad != d => {
                    return bad(format!("`acc` of dtype {} but the reduction is {}", d.name(), ad.name()));
                }
                Some(_) => acc_dep[i] = true,
            },
        }
    }
    if let Some(ad) = acc_dtype
        && !matches!(ad, DType::F32 | DType::I32)
    {
        return Err(unsupported(k, format!("a reduction of dtype {}", ad.name())));
    }

    // Which expressions are used.
    let mut needed = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    for (b, e) in &k.outputs {
        if e.index() >= n {
            return Err(invalid(k, format!("an output stores e{} which does not exist", e.0)));
        }
        let Some(buf) = program.buffers.get(b.index()) else {
            return Err(invalid(k, format!("an output writes buffer b{} which does not exist", b.0)));
        };
        if !supported_dtype(buf.ty.dtype) {
            return Err(unsupported(k, format!("output buffer b{} has dtype {}", b.0, buf.ty.dtype.name())));
        }
        if buf.ty.dtype != k.exprs[e.index()].dtype {
            return Err(invalid(
                k,
                format!(
                    "stores e{} of dtype {} into b{} of dtype {}",
                    e.0,
                    k.exprs[e.index()].dtype.name(),
                    b.0,
                    buf.ty.dtype.name()
                ),
            ));
        }
        if numel[b.index()] != total {
            return Err(invalid(
                k,
                format!("output buffer b{} has {} elements for a domain of {total}", b.0, numel[b.index()]),
            ));
        }
        stack.push(e.index());
    }
    if let Some(r) = &k.reduction {
        stack.push(r.value.index());
    }
    while let Some(i) = stack.pop() {
        if needed[i] {
            continue;
        }
        needed[i] = true;
        match &k.exprs[i].expr {
            Expr::Unary(_, a) | Expr::Cast(a) => stack.push(a.index()),
            Expr::Binary(_, a, b) => stack.extend([a.index(), b.index()]),
            Expr::Select(c, a, b) => stack.extend([c.index(), a.index(), b.index()]),
            _ => {}
        }
    }

    // Places.
    let red_mask: u64 = if nred == 0 { 0 } else { ((1u64 << nred) - 1) << ndom };
    let mut place = vec![Place::Entry; n];
    for i in 0..n {
        if acc_dep[i] {
            if deps[i] & red_mask != 0 && needed[i] {
                return Err(invalid(k, format!("e{i} mixes the reduction's result with reduce loop variables")));
            }
            place[i] = Place::Post;
            continue;
        }
        place[i] = match (0..nvars).rev().find(|&v| deps[i] & (1 << v) != 0) {
            None => Place::Entry,
            Some(v) if v >= ndom => Place::Reduce(v - ndom),
            Some(v) if v + 1 == ndom => Place::Elem,
            Some(_) => Place::Row,
        };
    }
    if let Some(r) = &k.reduction
        && acc_dep[r.value.index()]
    {
        return Err(invalid(k, "the reduced value reads the reduction's own result"));
    }
    for (_, e) in &k.outputs {
        if let Place::Reduce(_) = place[e.index()] {
            return Err(invalid(k, format!("output e{} depends on a reduce loop variable", e.0)));
        }
    }

    // Static bounds of plain loads: a kernel that could read outside a
    // buffer is rejected rather than compiled.
    let red_empty = k.reduce.contains(&0);
    if total > 0 {
        for (i, t) in k.exprs.iter().enumerate() {
            if !needed[i] {
                continue;
            }
            if let Expr::Load { buffer, index } = &t.expr {
                if red_empty && deps[i] & red_mask != 0 {
                    continue;
                }
                let box_extents: Vec<usize> = extents.iter().map(|&e| e.max(1)).collect();
                if let Some((lo, hi)) = map_range(index, &box_extents) {
                    let len = numel[buffer.index()] as i128;
                    if lo < 0 || hi >= len {
                        return Err(invalid(
                            k,
                            format!("e{i} reads elements {lo}..={hi} of buffer b{}, which has {len}", buffer.0),
                        ));
                    }
                }
            }
        }
    }

    // Vectorisation.
    let loads_ok = |v: usize| {
        k.exprs.iter().enumerate().all(|(i, t)| match &t.expr {
            Expr::Load { index, .. } if needed[i] => matches!(index.strides[v], 0 | 1),
            _ => true,
        })
    };
    let reduce_candidate = nred > 0 && k.reduce[nred - 1] >= 4 && loads_ok(nvars - 1);
    let domain_candidate = ndom > 0 && k.domain[ndom - 1] >= 4 && loads_ok(ndom - 1);
    let (mode, vec_var) = if !allow_vector {
        (Vectorization::Scalar, None)
    } else if reduce_candidate {
        (Vectorization::Reduce, Some(nvars - 1))
    } else if domain_candidate {
        (Vectorization::Domain, Some(ndom - 1))
    } else {
        (Vectorization::Scalar, None)
    };
    let vecdep: Vec<bool> = (0..n)
        .map(|i| match (mode, vec_var) {
            (Vectorization::Domain, Some(v)) => deps[i] & (1 << v) != 0 || acc_dep[i],
            (Vectorization::Reduce, Some(v)) => deps[i] & (1 << v) != 0,
            _ => false,
        })
        .collect();

    let inner = if ndom == 0 { 1 } else { k.domain[ndom - 1] as u64 };
    Ok(Analysis { ndom, nred, inner, total, place, needed, vecdep, in_bounds, fits_i32, mode, vec_var, numel })
}
