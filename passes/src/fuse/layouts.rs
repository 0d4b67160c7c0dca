//! Attention results stored straight into the layout their user wants.
//!
//! Attention runs per head on `[batch, heads, seq, dim]`; the model then
//! merges the heads back, `[batch, seq, heads·dim]`, for the output
//! projection — a permute that a matrix product cannot read as a view (two
//! axes would have to merge across a stride), so fusion gives it a copy
//! kernel. The backward pass has the same copies for dq, dk and dv. The
//! attention kernel can as well write each element where the copy would
//! have put it: its results are strided matrices. This pass finds such
//! copies — a loop kernel that only moves the elements of an attention
//! result, one to one — and turns them into the result's strides.

use lpac_ir::kernel::{AttentionPass, BufferId, BufferKind, Expr, Kernel, LoopKernel, Operand, Program};

/// Removes permutation copies of attention results (see the module docs).
pub fn store_through_permutes(program: &mut Program) {
    let mut i = 0;
    while i < program.kernels.len() {
        if let Some((writer, from, to)) = forwardable(program, i) {
            retarget(program, writer, &from, &to);
            program.kernels.remove(i);
            continue;
        }
        i += 1;
    }
}

/// `(attention kernel, its result operand, the copy's layout as an operand)`
/// when kernel `i` is a permutation copy of an attention result read by
/// nothing else (but the backward kernel's `out`).
fn forwardable(program: &Program, i: usize) -> Option<(usize, Operand, Operand)> {
    let Kernel::Loop(copy) = &program.kernels[i] else { return None };
    let (x, map, y) = permutation_copy(program, copy)?;
    let writer = program.kernels[..i].iter().rposition(|k| k.writes().contains(&x))?;
    let Kernel::Attention(a) = &program.kernels[writer] else { return None };
    let result = results(&a.pass).into_iter().find(|o| o.buffer == x)?.clone();
    let nb = a.batch.len();
    let shape = &program.buffer(x).ty.shape;
    if shape.len() != nb + 2 || result != Operand::contiguous(x, &shape[..nb], shape[nb], shape[nb + 1]) {
        return None;
    }
    let readers_ok = program.kernels.iter().enumerate().all(|(j, k)| {
        j == i
            || !k.reads().contains(&x)
            || matches!(k, Kernel::Attention(b) if matches!(&b.pass, AttentionPass::Backward { out, dout, .. }
                if *out == result && dout.buffer != x) && b.q.buffer != x && b.k.buffer != x && b.v.buffer != x)
    });
    if !readers_ok || program.outputs.iter().any(|(_, b)| *b == x) {
        return None;
    }
    // Where the copy puts element (axes of x): for each axis of x, the copy's
    // loop variable that walks it, and that variable's stride in y.
    let x_strides = lpac_ir::types::strides(shape);
    let y_strides = lpac_ir::types::strides(&copy.domain);
    let mut used = vec![false; copy.domain.len()];
    let mut strides = Vec::with_capacity(shape.len());
    for (axis, &extent) in shape.iter().enumerate() {
        if extent == 1 {
            strides.push(0);
            continue;
        }
        let v = (0..copy.domain.len())
            .find(|&v| !used[v] && copy.domain[v] == extent && map.strides[v] == x_strides[axis] as i64)?;
        used[v] = true;
        strides.push(y_strides[v] as i64);
    }
    if (0..copy.domain.len()).any(|v| !used[v] && copy.domain[v] > 1) {
        return None;
    }
    let to = Operand {
        buffer: y,
        offset: 0,
        batch_strides: strides[..nb].to_vec(),
        row_stride: strides[nb],
        col_stride: strides[nb + 1],
    };
    Some((writer, result, to))
}

/// `(source, its index map, destination)` when `k` stores one load of a
/// temp, unchanged, into another temp of as many elements.
fn permutation_copy<'k>(
    program: &Program,
    k: &'k LoopKernel,
) -> Option<(BufferId, &'k lpac_ir::kernel::IndexMap, BufferId)> {
    let [(y, e)] = k.outputs.as_slice() else { return None };
    let Expr::Load { buffer: x, index } = &k.exprs[e.index()].expr else { return None };
    let (xb, yb) = (program.buffer(*x), program.buffer(*y));
    let plain = k.reduction.is_none()
        && index.offset == 0
        && xb.kind == BufferKind::Temp
        && yb.kind == BufferKind::Temp
        && xb.ty.dtype == yb.ty.dtype
        && xb.ty.numel() == yb.ty.numel()
        && k.domain.iter().product::<usize>() == yb.ty.numel();
    plain.then_some((*x, index, *y))
}

fn results(pass: &AttentionPass) -> Vec<&Operand> {
    match pass {
        AttentionPass::Forward { out } => vec![out],
        AttentionPass::Backward { dq, dk, dv, .. } => [dq, dk, dv].into_iter().flatten().collect(),
    }
}

/// The writer stores `from` at `to` instead; backward kernels read it there.
fn retarget(program: &mut Program, writer: usize, from: &Operand, to: &Operand) {
    for (j, k) in program.kernels.iter_mut().enumerate() {
        let Kernel::Attention(a) = k else { continue };
        match &mut a.pass {
            AttentionPass::Forward { out } if j == writer && out == from => *out = to.clone(),
            AttentionPass::Backward { out, dq, dk, dv, .. } => {
                if out == from {
                    *out = to.clone();
                }
                if j == writer {
                    for g in [dq, dk, dv].into_iter().flatten() {
                        if g == from {
                            *g = to.clone();
                        }
                    }
                }
            }
            _ => {}
        }
    }
}
