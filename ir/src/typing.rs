//! Type rules for every op: what operands it accepts and what it produces.
//! The graph builder, the verifier and the text parser all use this one
//! function, so there is exactly one definition of what a well-typed node is.

use crate::op::{BinaryOp, Op};
use crate::types::{DType, TensorType};

/// The result type of `op` applied to operands of the given types.
///
/// `given` is the type the caller declares for the result. It is required for
/// ops whose result type the operands do not determine (leaves, `reshape`,
/// `broadcast`, `scatter_add`, `cast`), and when present for other ops it must
/// equal the inferred type. Errors are plain sentences that name the offending
/// operand and types; callers add the location.
pub fn result_type(op: &Op, inputs: &[&TensorType], given: Option<&TensorType>) -> Result<TensorType, String> {
    check_arity(op, inputs.len())?;
    // Element counts must not overflow before any rule multiplies them.
    crate::verify::sizes_fit(op, inputs, given.unwrap_or(&TensorType::scalar(DType::F32)))?;
    if op.needs_result_type() {
        let given = given.ok_or_else(|| format!("`{}` needs its result type to be given", op.name()))?;
        check_given(op, inputs, given)?;
        return Ok(given.clone());
    }
    let inferred = infer(op, inputs)?;
    crate::verify::sizes_fit(op, &[], &inferred)?;
    if let Some(given) = given
        && *given != inferred
    {
        return Err(format!("`{}` produces {} but the node is declared as {}", op.name(), inferred, given));
    }
    Ok(inferred)
}

fn check_arity(op: &Op, n: usize) -> Result<(), String> {
    let expected = match op {
        _ if op.is_leaf() => Some(0),
        Op::Unary(_) | Op::Reduce { .. } | Op::Reshape | Op::Permute { .. } | Op::Broadcast { .. } => Some(1),
        Op::Slice { .. } | Op::Pad { .. } | Op::Cast => Some(1),
        Op::Binary(_) | Op::MatMul | Op::Gather | Op::ScatterAdd => Some(2),
        Op::Select | Op::Attention { .. } => Some(3),
        Op::AttentionGrad { .. } => Some(5),
        Op::Concat { .. } => None,
        _ => unreachable!("every op is covered above"),
    };
    match expected {
        Some(k) if k != n => Err(format!("`{}` takes {} operand(s), got {}", op.name(), k, n)),
        None if n == 0 => Err(format!("`{}` needs at least one operand", op.name())),
        _ => Ok(()),
    }
}

fn check_given(op: &Op, inputs: &[&TensorType], given: &TensorType) -> Result<(), String> {
    match op {
        Op::Input { .. } => Ok(()),
        Op::Param { .. } | Op::RandomUniform { .. } => {
            require(given.dtype.is_float(), || format!("`{}` must have a float type, not {}", op.name(), given))
        }
        Op::Const { .. } => Ok(()),
        Op::Iota { axis } => {
            require(*axis < given.rank(), || format!("iota axis {} is out of range for {}", axis, given))?;
            require(given.dtype != DType::Bool, || "iota cannot produce bool".to_string())
        }
        Op::Reshape => {
            let x = inputs[0];
            require(x.dtype == given.dtype, || format!("reshape cannot change dtype ({} to {})", x, given))?;
            require(x.numel() == given.numel(), || {
                format!("reshape from {} to {} changes the number of elements", x, given)
            })
        }
        Op::Broadcast { dims } => check_broadcast(inputs[0], dims, given),
        Op::ScatterAdd => check_scatter_add(inputs[0], inputs[1], given),
        Op::Cast => {
            require(inputs[0].shape == given.shape, || format!("cast cannot change shape ({} to {})", inputs[0], given))
        }
        _ => unreachable!("only ops with given result types reach here"),
    }
}

fn infer(op: &Op, inputs: &[&TensorType]) -> Result<TensorType, String> {
    match op {
        Op::Unary(u) => {
            let x = inputs[0];
            if *u == crate::op::UnaryOp::Not {
                require(x.dtype == DType::Bool, || format!("`not` needs bool, got {}", x))?;
            } else if u.needs_float() {
                require(x.dtype.is_float(), || format!("`{}` needs a float operand, got {}", u.name(), x))?;
            } else {
                require(x.dtype != DType::Bool, || format!("`{}` needs a numeric operand, got {}", u.name(), x))?;
            }
            Ok(x.clone())
        }
        Op::Binary(b) => infer_binary(*b, inputs[0], inputs[1]),
        Op::Select => {
            let (c, a, b) = (inputs[0], inputs[1], inputs[2]);
            require(c.dtype == DType::Bool, || format!("select condition must be bool, got {}", c))?;
            require(a == b, || format!("select branches differ: {} and {}", a, b))?;
            require(c.shape == a.shape, || format!("select condition {} does not match branches {}", c, a))?;
            Ok(a.clone())
        }
        Op::Reduce { axes, .. } => {
            let x = inputs[0];
            require(x.dtype != DType::Bool, || format!("cannot reduce {}", x))?;
            check_axes_increasing(axes, x.rank(), "reduce")?;
            require(!axes.is_empty(), || "reduce needs at least one axis".to_string())?;
            let shape = x.shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, d)| *d);
            Ok(x.with_shape(shape.collect()))
        }
        Op::Permute { perm } => {
            let x = inputs[0];
            let mut seen = vec![false; x.rank()];
            require(perm.len() == x.rank(), || format!("permutation {:?} does not fit {}", perm, x))?;
            for &p in perm {
                require(p < x.rank() && !seen[p], || format!("{:?} is not a permutation of the axes of {}", perm, x))?;
                seen[p] = true;
            }
            Ok(x.with_shape(perm.iter().map(|&p| x.shape[p]).collect()))
        }
        Op::Slice { axis, start, end } => {
            let x = inputs[0];
            require(*axis < x.rank(), || format!("slice axis {} is out of range for {}", axis, x))?;
            require(start < end && *end <= x.shape[*axis], || {
                format!("slice {}..{} is out of range for axis {} of {}", start, end, axis, x)
            })?;
            let mut shape = x.shape.clone();
            shape[*axis] = end - start;
            Ok(x.with_shape(shape))
        }
        Op::Concat { axis } => {
            let first = inputs[0];
            require(*axis < first.rank(), || format!("concat axis {} is out of range for {}", axis, first))?;
            let mut total = 0;
            for x in inputs {
                let same_elsewhere = x.rank() == first.rank()
                    && x.dtype == first.dtype
                    && (0..x.rank()).all(|i| i == *axis || x.shape[i] == first.shape[i]);
                require(same_elsewhere, || format!("cannot concat {} with {} along axis {}", first, x, axis))?;
                total += x.shape[*axis];
            }
            let mut shape = first.shape.clone();
            shape[*axis] = total;
            Ok(first.with_shape(shape))
        }
        Op::Pad { axis, lo, hi, .. } => {
            let x = inputs[0];
            require(*axis < x.rank(), || format!("pad axis {} is out of range for {}", axis, x))?;
            let mut shape = x.shape.clone();
            shape[*axis] += lo + hi;
            Ok(x.with_shape(shape))
        }
        Op::MatMul => infer_matmul(inputs[0], inputs[1]),
        Op::Gather => {
            let (table, idx) = (inputs[0], inputs[1]);
            require(table.rank() >= 1, || format!("gather table must have rank >= 1, got {}", table))?;
            require(idx.dtype == DType::I32, || format!("gather indices must be i32, got {}", idx))?;
            let mut shape = idx.shape.clone();
            shape.extend_from_slice(&table.shape[1..]);
            Ok(table.with_shape(shape))
        }
        Op::Attention { causal, .. } => infer_attention(inputs[0], inputs[1], inputs[2], *causal),
        Op::AttentionGrad { causal, wrt, .. } => {
            let out = infer_attention(inputs[0], inputs[1], inputs[2], *causal)?;
            require(*inputs[3] == out, || {
                format!("attention_grad: the attention value is {}, not {}", inputs[3], out)
            })?;
            require(*inputs[4] == out, || format!("attention_grad: the gradient is {}, not {}", inputs[4], out))?;
            require(*wrt < 3, || format!("attention_grad: wrt={wrt} is not 0 (q), 1 (k) or 2 (v)"))?;
            Ok(inputs[*wrt].clone())
        }
        _ => unreachable!("ops with given result types are handled by check_given"),
    }
}

/// q `[.., tq, d]`, k `[.., tk, d]`, v `[.., tk, dv]` → `[.., tq, dv]`.
fn infer_attention(q: &TensorType, k: &TensorType, v: &TensorType, causal: bool) -> Result<TensorType, String> {
    require(q.dtype.is_float() && k.dtype == q.dtype && v.dtype == q.dtype, || {
        format!("attention needs float operands of one dtype, got {q}, {k}, {v}")
    })?;
    let r = q.rank();
    require(r >= 2 && k.rank() == r && v.rank() == r, || {
        format!("attention needs operands of one rank >= 2, got {q}, {k}, {v}")
    })?;
    let batch_ok = q.shape[..r - 2] == k.shape[..r - 2] && q.shape[..r - 2] == v.shape[..r - 2];
    require(batch_ok, || format!("attention operands differ in their batch axes: {q}, {k}, {v}"))?;
    let (tq, d, tk, dv) = (q.shape[r - 2], q.shape[r - 1], k.shape[r - 2], v.shape[r - 1]);
    require(k.shape[r - 1] == d, || format!("attention: q {q} and k {k} differ in the last axis"))?;
    require(v.shape[r - 2] == tk, || format!("attention: k {k} and v {v} differ in the key axis"))?;
    require(!causal || tq == tk, || format!("causal attention needs as many queries as keys, got {q} and {k}"))?;
    let mut shape = q.shape[..r - 2].to_vec();
    shape.extend([tq, dv]);
    Ok(q.with_shape(shape))
}

fn infer_binary(b: BinaryOp, x: &TensorType, y: &TensorType) -> Result<TensorType, String> {
    require(x == y, || format!("`{}` operands differ: {} and {} (broadcast explicitly)", b.name(), x, y))?;
    if b.is_logical() {
        require(x.dtype == DType::Bool, || format!("`{}` needs bool operands, got {}", b.name(), x))?;
        return Ok(x.clone());
    }
    if b.is_comparison() {
        if !matches!(b, BinaryOp::Eq | BinaryOp::Ne) {
            require(x.dtype != DType::Bool, || format!("`{}` needs numeric operands, got {}", b.name(), x))?;
        }
        return Ok(x.with_dtype(DType::Bool));
    }
    if b == BinaryOp::Pow {
        require(x.dtype.is_float(), || format!("`pow` needs float operands, got {}", x))?;
    }
    require(x.dtype != DType::Bool, || format!("`{}` needs numeric operands, got {}", b.name(), x))?;
    Ok(x.clone())
}

fn infer_matmul(a: &TensorType, b: &TensorType) -> Result<TensorType, String> {
    require(a.rank() >= 2 && b.rank() >= 2, || format!("matmul needs rank >= 2 operands, got {} and {}", a, b))?;
    require(a.dtype == b.dtype && a.dtype.is_float(), || {
        format!("matmul needs operands of one float dtype, got {} and {}", a, b)
    })?;
    let (m, k) = (a.shape[a.rank() - 2], a.shape[a.rank() - 1]);
    let (k2, n) = (b.shape[b.rank() - 2], b.shape[b.rank() - 1]);
    require(k == k2, || format!("matmul inner dimensions differ: {} ({}) and {} ({})", a, k, b, k2))?;
    let batch = &a.shape[..a.rank() - 2];
    let shared_matrix = b.rank() == 2;
    require(shared_matrix || b.shape[..b.rank() - 2] == *batch, || {
        format!("matmul batch dimensions differ: {} and {}", a, b)
    })?;
    let mut shape = batch.to_vec();
    shape.extend([m, n]);
    Ok(a.with_shape(shape))
}

fn check_broadcast(x: &TensorType, dims: &[usize], out: &TensorType) -> Result<(), String> {
    require(x.dtype == out.dtype, || format!("broadcast cannot change dtype ({} to {})", x, out))?;
    require(dims.len() == x.rank(), || format!("broadcast dims {:?} do not fit {}", dims, x))?;
    check_axes_increasing(dims, out.rank(), "broadcast")?;
    for (i, &d) in dims.iter().enumerate() {
        require(x.shape[i] == out.shape[d] || x.shape[i] == 1, || {
            format!("cannot broadcast {} to {}: axis {} has size {}, not {} or 1", x, out, i, x.shape[i], out.shape[d])
        })?;
    }
    Ok(())
}

fn check_scatter_add(idx: &TensorType, src: &TensorType, out: &TensorType) -> Result<(), String> {
    require(idx.dtype == DType::I32, || format!("scatter_add indices must be i32, got {}", idx))?;
    require(out.rank() >= 1 && src.dtype == out.dtype, || format!("scatter_add cannot make {} from {}", out, src))?;
    let mut expected = idx.shape.clone();
    expected.extend_from_slice(&out.shape[1..]);
    require(src.shape == expected, || {
        format!("scatter_add source {} does not match indices {} and result {}", src, idx, out)
    })
}

fn check_axes_increasing(axes: &[usize], rank: usize, what: &str) -> Result<(), String> {
    let increasing = axes.windows(2).all(|w| w[0] < w[1]);
    let in_range = axes.iter().all(|&a| a < rank);
    require(increasing && in_range, || {
        format!("{} axes {:?} must be strictly increasing and below rank {}", what, axes, rank)
    })
}

fn require(ok: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(message()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{ReduceOp, UnaryOp};

    fn f32t(shape: &[usize]) -> TensorType {
        TensorType::new(DType::F32, shape.to_vec())
    }

    #[test]
    fn matmul_with_shared_matrix() {
        let t = result_type(&Op::MatMul, &[&f32t(&[2, 3, 4]), &f32t(&[4, 5])], None).unwrap();
        assert_eq!(t, f32t(&[2, 3, 5]));
        let err = result_type(&Op::MatMul, &[&f32t(&[2, 3, 4]), &f32t(&[3, 5])], None).unwrap_err();
        assert!(err.contains("inner dimensions differ"), "{err}");
    }

    #[test]
    fn reduce_removes_axes() {
        let op = Op::Reduce { op: ReduceOp::Sum, axes: vec![0, 2] };
        assert_eq!(result_type(&op, &[&f32t(&[2, 3, 4])], None).unwrap(), f32t(&[3]));
        let bad = Op::Reduce { op: ReduceOp::Max, axes: vec![2, 1] };
        assert!(result_type(&bad, &[&f32t(&[2, 3, 4])], None).is_err());
    }

    #[test]
    fn broadcast_checks_sizes() {
        let op = Op::Broadcast { dims: vec![1, 2] };
        assert!(result_type(&op, &[&f32t(&[3, 1])], Some(&f32t(&[2, 3, 4]))).is_ok());
        assert!(result_type(&op, &[&f32t(&[3, 2])], Some(&f32t(&[2, 3, 4]))).is_err());
        assert!(result_type(&op, &[&f32t(&[3, 1])], None).is_err(), "broadcast needs its type");
    }

    #[test]
    fn binary_needs_equal_types() {
        let add = Op::Binary(BinaryOp::Add);
        assert!(result_type(&add, &[&f32t(&[2]), &f32t(&[3])], None).is_err());
        let lt = Op::Binary(BinaryOp::Lt);
        assert_eq!(result_type(&lt, &[&f32t(&[2]), &f32t(&[2])], None).unwrap().dtype, DType::Bool);
    }

    #[test]
    fn given_type_must_match_inferred() {
        let exp = Op::Unary(UnaryOp::Exp);
        assert!(result_type(&exp, &[&f32t(&[2])], Some(&f32t(&[3]))).is_err());
        assert!(result_type(&exp, &[&TensorType::new(DType::I32, vec![2])], None).is_err());
    }

    #[test]
    fn gather_and_scatter_are_adjoint_shapes() {
        let table = f32t(&[10, 4]);
        let idx = TensorType::new(DType::I32, vec![2, 3]);
        let rows = result_type(&Op::Gather, &[&table, &idx], None).unwrap();
        assert_eq!(rows, f32t(&[2, 3, 4]));
        assert!(result_type(&Op::ScatterAdd, &[&idx, &rows], Some(&table)).is_ok());
    }

    #[test]
    fn arity_is_checked() {
        assert!(result_type(&Op::Select, &[&f32t(&[1])], None).unwrap_err().contains("takes 3"));
        assert!(result_type(&Op::Concat { axis: 0 }, &[], None).is_err());
    }
}
