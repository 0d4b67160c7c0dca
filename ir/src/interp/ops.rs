//! The meaning of every op except `input` and `param` (which read the run's
//! maps, in `mod.rs`). Each function computes one node's elements from its
//! operands' elements; errors are plain sentences that the caller prefixes
//! with the node's id, op and span.

use super::RunContext;
use super::movement::{self, for_each_index};
use super::real::{Real, maximum, minimum, significand_bits};
use super::value::Value;
use crate::graph::Node;
use crate::op::{BinaryOp, Op, ReduceOp, UnaryOp};
use crate::random;
use crate::types::{DType, TensorType, strides};

/// The node's value; `args` are its operands' values and `arg_types` their types.
pub fn eval<T: Real>(
    node: &Node,
    args: &[&Value<T>],
    arg_types: &[&TensorType],
    ctx: RunContext,
) -> Result<Value<T>, String> {
    let ty = &node.ty;
    let out = &ty.shape;
    match &node.op {
        Op::Input { .. } | Op::Param { .. } => Err("inputs and parameters are read by the driver".into()),
        Op::Const { value } => Ok(Value::splat(ty.dtype, *value, ty.numel())),
        Op::Iota { axis } => Ok(iota(ty, *axis)),
        Op::RandomUniform { key } => Ok(random_uniform(ty, *key, ctx)),
        Op::Unary(u) => unary(*u, args[0]),
        Op::Binary(b) => binary(*b, args[0], args[1]),
        Op::Select => select(args[0], args[1], args[2]),
        Op::Reduce { op, axes } => reduce(*op, args[0], &arg_types[0].shape, axes),
        Op::Reshape => Ok(args[0].clone()),
        Op::Permute { perm } => Value::pick(args, &movement::permute(&arg_types[0].shape, perm, out)),
        Op::Broadcast { dims } => Value::pick(args, &movement::broadcast(&arg_types[0].shape, dims, out)),
        Op::Slice { axis, start, .. } => Value::pick(args, &movement::slice(&arg_types[0].shape, *axis, *start, out)),
        Op::Concat { axis } => {
            let shapes: Vec<&[usize]> = arg_types.iter().map(|t| t.shape.as_slice()).collect();
            Value::pick(args, &movement::concat(&shapes, *axis, out))
        }
        Op::Pad { axis, lo, value, .. } => {
            let fill = Value::splat(ty.dtype, *value, 1);
            Value::pick(&[args[0], &fill], &movement::pad(&arg_types[0].shape, *axis, *lo, out))
        }
        Op::MatMul => matmul(args[0], args[1], &arg_types[0].shape, &arg_types[1].shape),
        Op::Gather => {
            let table = &arg_types[0].shape;
            let plan = movement::gather(args[1].as_int()?, table[0], table[1..].iter().product())?;
            Value::pick(&args[..1], &plan)
        }
        Op::ScatterAdd => scatter_add(args[0].as_int()?, args[1], &ty.shape),
        Op::Cast => Ok(cast(args[0], ty.dtype)),
        Op::Attention { scale, causal } => {
            let dims = AttentionDims::of(&arg_types[0].shape, &arg_types[1].shape, &arg_types[2].shape, *causal);
            let (q, k, v) = (args[0].as_float()?, args[1].as_float()?, args[2].as_float()?);
            Ok(Value::Float(attention(&dims, T::from_f64(*scale), q, k, v)))
        }
        Op::AttentionGrad { scale, causal, wrt } => {
            let dims = AttentionDims::of(&arg_types[0].shape, &arg_types[1].shape, &arg_types[2].shape, *causal);
            let (q, k, v) = (args[0].as_float()?, args[1].as_float()?, args[2].as_float()?);
            let dout = args[4].as_float()?;
            Ok(Value::Float(attention_grad(&dims, T::from_f64(*scale), q, k, v, dout, *wrt)))
        }
    }
}

/// Sizes of an attention: `batch` matrices of q `[tq, d]`, k `[tk, d]`,
/// v `[tk, dv]`.
struct AttentionDims {
    batch: usize,
    tq: usize,
    tk: usize,
    d: usize,
    dv: usize,
    causal: bool,
}

impl AttentionDims {
    fn of(q: &[usize], k: &[usize], v: &[usize], causal: bool) -> Self {
        let r = q.len();
        AttentionDims {
            batch: q[..r - 2].iter().product(),
            tq: q[r - 2],
            tk: k[r - 2],
            d: q[r - 1],
            dv: v[r - 1],
            causal,
        }
    }

    fn visible(&self, i: usize, j: usize) -> bool {
        !self.causal || j <= i
    }
}

/// The softmax probabilities of query row `i` of batch `b`: the definition,
/// with masked keys at exactly zero.
fn attention_row<T: Real>(n: &AttentionDims, scale: T, q: &[T], k: &[T], b: usize, i: usize) -> Vec<T> {
    let qi = &q[(b * n.tq + i) * n.d..][..n.d];
    let mut s: Vec<T> = (0..n.tk)
        .map(|j| {
            if !n.visible(i, j) {
                return T::NEG_INFINITY;
            }
            let kj = &k[(b * n.tk + j) * n.d..][..n.d];
            qi.iter().zip(kj).fold(T::ZERO, |acc, (&a, &c)| acc + a * c) * scale
        })
        .collect();
    let m = s.iter().fold(T::NEG_INFINITY, |a, &x| maximum(a, x));
    let mut sum = T::ZERO;
    for x in s.iter_mut() {
        *x = if *x == T::NEG_INFINITY { T::ZERO } else { (*x - m).exp() };
        sum = sum + *x;
    }
    s.iter().map(|&p| p / sum).collect()
}

fn attention<T: Real>(n: &AttentionDims, scale: T, q: &[T], k: &[T], v: &[T]) -> Vec<T> {
    let mut out = vec![T::ZERO; n.batch * n.tq * n.dv];
    for b in 0..n.batch {
        for i in 0..n.tq {
            let p = attention_row(n, scale, q, k, b, i);
            let row = &mut out[(b * n.tq + i) * n.dv..][..n.dv];
            for (j, &pj) in p.iter().enumerate() {
                let vj = &v[(b * n.tk + j) * n.dv..][..n.dv];
                for (o, &x) in row.iter_mut().zip(vj) {
                    *o = *o + pj * x;
                }
            }
        }
    }
    out
}

/// The gradient of [`attention`] with respect to q (`wrt` 0), k (1) or v
/// (2), given the gradient `dout` of its value: with `P` the probabilities,
/// `dP = dout·vᵀ`, `dS = P ⊙ (dP − rowsum(dP ⊙ P))·scale`, `dq = dS·k`,
/// `dk = dSᵀ·q`, `dv = Pᵀ·dout`.
fn attention_grad<T: Real>(n: &AttentionDims, scale: T, q: &[T], k: &[T], v: &[T], dout: &[T], wrt: usize) -> Vec<T> {
    let len = match wrt {
        0 => n.batch * n.tq * n.d,
        1 => n.batch * n.tk * n.d,
        _ => n.batch * n.tk * n.dv,
    };
    let mut grad = vec![T::ZERO; len];
    for b in 0..n.batch {
        for i in 0..n.tq {
            let p = attention_row(n, scale, q, k, b, i);
            let doi = &dout[(b * n.tq + i) * n.dv..][..n.dv];
            if wrt == 2 {
                for (j, &pj) in p.iter().enumerate() {
                    for (g, &x) in grad[(b * n.tk + j) * n.dv..][..n.dv].iter_mut().zip(doi) {
                        *g = *g + pj * x;
                    }
                }
                continue;
            }
            let dp: Vec<T> = (0..n.tk)
                .map(|j| doi.iter().zip(&v[(b * n.tk + j) * n.dv..][..n.dv]).fold(T::ZERO, |a, (&x, &y)| a + x * y))
                .collect();
            let row_dot = p.iter().zip(&dp).fold(T::ZERO, |a, (&x, &y)| a + x * y);
            let qi = &q[(b * n.tq + i) * n.d..][..n.d];
            for j in 0..n.tk {
                let ds = p[j] * (dp[j] - row_dot) * scale;
                if wrt == 0 {
                    let kj = &k[(b * n.tk + j) * n.d..][..n.d];
                    for (g, &x) in grad[(b * n.tq + i) * n.d..][..n.d].iter_mut().zip(kj) {
                        *g = *g + ds * x;
                    }
                } else {
                    for (g, &x) in grad[(b * n.tk + j) * n.d..][..n.d].iter_mut().zip(qi) {
                        *g = *g + ds * x;
                    }
                }
            }
        }
    }
    grad
}

/// Each element is its index along `axis`, in the node's dtype.
fn iota<T: Real>(ty: &TensorType, axis: usize) -> Value<T> {
    let mut indices = Vec::with_capacity(ty.numel());
    for_each_index(&ty.shape, |i| indices.push(i[axis]));
    match ty.dtype {
        DType::I32 => Value::Int(indices.iter().map(|&i| i as i32).collect()),
        _ => Value::Float(indices.iter().map(|&i| T::from_f64(i as f64)).collect()),
    }
}

/// Element `i` is the top p bits of Philox word 0 at counter `i`, where p is
/// the dtype's significand width (24 for f32), so the number is exact in the
/// dtype and stays below 1 in bf16 and f16 too.
fn random_uniform<T: Real>(ty: &TensorType, node_key: u64, ctx: RunContext) -> Value<T> {
    let key = random::dropout_key(ctx.seed, ctx.step, node_key);
    let bits = significand_bits(ty.dtype);
    Value::Float((0..ty.numel() as u64).map(|i| T::from_f64(random::uniform_bits(key, i, bits))).collect())
}

fn unary<T: Real>(u: UnaryOp, x: &Value<T>) -> Result<Value<T>, String> {
    match (x, u) {
        (Value::Float(v), _) => {
            let f = float_unary::<T>(u).ok_or_else(|| format!("`{}` is not defined on floats", u.name()))?;
            Ok(Value::Float(v.iter().map(|&a| f(a)).collect()))
        }
        (Value::Int(v), UnaryOp::Neg) => Ok(Value::Int(v.iter().map(|a| a.wrapping_neg()).collect())),
        (Value::Int(v), UnaryOp::Abs) => Ok(Value::Int(v.iter().map(|a| a.wrapping_abs()).collect())),
        (Value::Bool(v), UnaryOp::Not) => Ok(Value::Bool(v.iter().map(|a| !a).collect())),
        _ => Err(format!("`{}` is not defined on {} operands", u.name(), x.kind())),
    }
}

fn float_unary<T: Real>(u: UnaryOp) -> Option<fn(T) -> T> {
    Some(match u {
        UnaryOp::Neg => |a: T| -a,
        UnaryOp::Exp => T::exp,
        UnaryOp::Log => T::ln,
        UnaryOp::Sqrt => T::sqrt,
        UnaryOp::Rsqrt => |a: T| T::ONE / a.sqrt(),
        UnaryOp::Recip => |a: T| T::ONE / a,
        UnaryOp::Tanh => T::tanh,
        UnaryOp::Sin => T::sin,
        UnaryOp::Cos => T::cos,
        UnaryOp::Abs => T::abs,
        UnaryOp::Not => return None,
    })
}

fn binary<T: Real>(b: BinaryOp, x: &Value<T>, y: &Value<T>) -> Result<Value<T>, String> {
    if b.is_comparison() {
        return compare(b, x, y).map(Value::Bool);
    }
    match (x, y) {
        (Value::Float(x), Value::Float(y)) => {
            let f = float_binary::<T>(b).ok_or_else(|| format!("`{}` is not defined on floats", b.name()))?;
            Ok(Value::Float(x.iter().zip(y).map(|(&a, &c)| f(a, c)).collect()))
        }
        (Value::Int(x), Value::Int(y)) => int_binary(b, x, y).map(Value::Int),
        (Value::Bool(x), Value::Bool(y)) => {
            let f: fn(bool, bool) -> bool = match b {
                BinaryOp::And => |a, c| a && c,
                BinaryOp::Or => |a, c| a || c,
                _ => return Err(format!("`{}` is not defined on bool operands", b.name())),
            };
            Ok(Value::Bool(x.iter().zip(y).map(|(&a, &c)| f(a, c)).collect()))
        }
        _ => Err(format!("`{}` operands differ in kind: {} and {}", b.name(), x.kind(), y.kind())),
    }
}

fn float_binary<T: Real>(b: BinaryOp) -> Option<fn(T, T) -> T> {
    Some(match b {
        BinaryOp::Add => |a, c| a + c,
        BinaryOp::Sub => |a, c| a - c,
        BinaryOp::Mul => |a, c| a * c,
        BinaryOp::Div => |a, c| a / c,
        BinaryOp::Max => maximum,
        BinaryOp::Min => minimum,
        BinaryOp::Pow => T::powf,
        _ => return None,
    })
}

/// i32 arithmetic wraps on overflow (as the hardware does); division
/// truncates toward zero and dividing by zero is an error.
fn int_binary(b: BinaryOp, x: &[i32], y: &[i32]) -> Result<Vec<i32>, String> {
    if b == BinaryOp::Div {
        return x.iter().zip(y).enumerate().map(|(i, (&a, &c))| int_div(a, c, i)).collect();
    }
    let f: fn(i32, i32) -> i32 = match b {
        BinaryOp::Add => i32::wrapping_add,
        BinaryOp::Sub => i32::wrapping_sub,
        BinaryOp::Mul => i32::wrapping_mul,
        BinaryOp::Max => i32::max,
        BinaryOp::Min => i32::min,
        _ => return Err(format!("`{}` is not defined on i32 operands", b.name())),
    };
    Ok(x.iter().zip(y).map(|(&a, &c)| f(a, c)).collect())
}

fn int_div(a: i32, c: i32, element: usize) -> Result<i32, String> {
    if c == 0 {
        return Err(format!("i32 division by zero at element {}", element));
    }
    // `i32::MIN / -1` overflows; it wraps to `i32::MIN` like the hardware.
    Ok(a.wrapping_div(c))
}

/// IEEE comparisons for floats: every comparison with NaN is false except `ne`.
fn compare<T: Real>(b: BinaryOp, x: &Value<T>, y: &Value<T>) -> Result<Vec<bool>, String> {
    fn each<E: PartialOrd + Copy>(b: BinaryOp, x: &[E], y: &[E]) -> Vec<bool> {
        let f: fn(&E, &E) -> bool = match b {
            BinaryOp::Lt => E::lt,
            BinaryOp::Le => E::le,
            BinaryOp::Gt => E::gt,
            BinaryOp::Ge => E::ge,
            BinaryOp::Eq => E::eq,
            _ => E::ne,
        };
        x.iter().zip(y).map(|(a, c)| f(a, c)).collect()
    }
    match (x, y) {
        (Value::Float(x), Value::Float(y)) => Ok(each(b, x, y)),
        (Value::Int(x), Value::Int(y)) => Ok(each(b, x, y)),
        (Value::Bool(x), Value::Bool(y)) => Ok(each(b, x, y)),
        _ => Err(format!("`{}` operands differ in kind: {} and {}", b.name(), x.kind(), y.kind())),
    }
}

fn select<T: Real>(c: &Value<T>, a: &Value<T>, b: &Value<T>) -> Result<Value<T>, String> {
    let plan: Vec<(usize, usize)> = c.as_bool()?.iter().enumerate().map(|(i, &t)| (if t { 0 } else { 1 }, i)).collect();
    Value::pick(&[a, b], &plan)
}

/// For each input element (row-major), the output element it reduces into.
fn reduce_targets(in_shape: &[usize], axes: &[usize]) -> Vec<usize> {
    let kept: Vec<usize> = (0..in_shape.len()).filter(|a| !axes.contains(a)).collect();
    let kept_shape: Vec<usize> = kept.iter().map(|&a| in_shape[a]).collect();
    let out_strides = strides(&kept_shape);
    let mut targets = Vec::with_capacity(in_shape.iter().product());
    for_each_index(in_shape, |i| targets.push(kept.iter().zip(&out_strides).map(|(&a, s)| i[a] * s).sum()));
    targets
}

/// Each output element accumulates its inputs one at a time in increasing
/// input index order, in the run's precision: the order a backend must match
/// (up to its own stated tolerance).
fn reduce<T: Real>(op: ReduceOp, x: &Value<T>, in_shape: &[usize], axes: &[usize]) -> Result<Value<T>, String> {
    let targets = reduce_targets(in_shape, axes);
    let out_len = in_shape.iter().enumerate().filter(|(a, _)| !axes.contains(a)).map(|(_, d)| d).product();
    fn fold<E: Copy>(x: &[E], targets: &[usize], out_len: usize, init: E, f: impl Fn(E, E) -> E) -> Vec<E> {
        let mut acc = vec![init; out_len];
        for (&t, &v) in targets.iter().zip(x) {
            acc[t] = f(acc[t], v);
        }
        acc
    }
    match (x, op) {
        (Value::Float(v), ReduceOp::Sum) => Ok(Value::Float(fold(v, &targets, out_len, T::ZERO, |a, b| a + b))),
        (Value::Float(v), ReduceOp::Max) => Ok(Value::Float(fold(v, &targets, out_len, T::NEG_INFINITY, maximum))),
        (Value::Int(v), ReduceOp::Sum) => Ok(Value::Int(fold(v, &targets, out_len, 0, i32::wrapping_add))),
        (Value::Int(v), ReduceOp::Max) => Ok(Value::Int(fold(v, &targets, out_len, i32::MIN, i32::max))),
        (Value::Bool(_), _) => Err("cannot reduce bool values".into()),
    }
}

/// `[..., m, k] x [..., k, n]`, or a shared `[k, n]` right operand. Each dot
/// product accumulates from zero over k in order, in the run's precision.
fn matmul<T: Real>(a: &Value<T>, b: &Value<T>, a_shape: &[usize], b_shape: &[usize]) -> Result<Value<T>, String> {
    let (a, b) = (a.as_float()?, b.as_float()?);
    let (m, k) = (a_shape[a_shape.len() - 2], a_shape[a_shape.len() - 1]);
    let n = b_shape[b_shape.len() - 1];
    let batches: usize = a_shape[..a_shape.len() - 2].iter().product();
    let shared = b_shape.len() == 2;
    let mut out = Vec::with_capacity(batches * m * n);
    for batch in 0..batches {
        let a_batch = &a[batch * m * k..(batch + 1) * m * k];
        let b_start = if shared { 0 } else { batch * k * n };
        let b_batch = &b[b_start..b_start + k * n];
        let start = out.len();
        out.resize(start + m * n, T::ZERO);
        if T::fast_matmul(a_batch, b_batch, m, k, n, &mut out[start..]) {
            continue;
        }
        out.truncate(start);
        for i in 0..m {
            // One accumulator per output column, each summed over p in order:
            // the same additions as a dot product per element, but reading
            // rows of b (cache-friendly) instead of columns.
            let mut acc = vec![T::ZERO; n];
            for p in 0..k {
                let a_ip = a_batch[i * k + p];
                for (acc_j, &b_pj) in acc.iter_mut().zip(&b_batch[p * n..(p + 1) * n]) {
                    *acc_j = *acc_j + a_ip * b_pj;
                }
            }
            out.extend(acc);
        }
    }
    Ok(Value::Float(out))
}

/// Zeros of shape `[rows, r...]`, then row `j` of `src` added into row
/// `idx[j]`, for `j` in increasing order.
fn scatter_add<T: Real>(indices: &[i32], src: &Value<T>, out_shape: &[usize]) -> Result<Value<T>, String> {
    let rows = out_shape[0];
    let row_len: usize = out_shape[1..].iter().product();
    fn accumulate<E: Copy>(
        indices: &[i32],
        src: &[E],
        rows: usize,
        row_len: usize,
        zero: E,
        add: impl Fn(E, E) -> E,
    ) -> Result<Vec<E>, String> {
        let mut out = vec![zero; rows * row_len];
        for (position, &index) in indices.iter().enumerate() {
            let row = movement::checked_row(index, rows, position)?;
            for c in 0..row_len {
                let o = row * row_len + c;
                out[o] = add(out[o], src[position * row_len + c]);
            }
        }
        Ok(out)
    }
    match src {
        Value::Float(s) => accumulate(indices, s, rows, row_len, T::ZERO, |a, b| a + b).map(Value::Float),
        Value::Int(s) => accumulate(indices, s, rows, row_len, 0, i32::wrapping_add).map(Value::Int),
        Value::Bool(_) => Err("scatter_add of bool values is not defined".into()),
    }
}

/// Float to i32 truncates toward zero (saturating; NaN becomes 0); bool to a
/// number is 0 or 1; a number to bool is `x != 0` (NaN is true). Float to
/// float keeps the value; the driver then rounds narrow dtypes.
fn cast<T: Real>(x: &Value<T>, to: DType) -> Value<T> {
    let as_float = |v: Vec<f64>| Value::Float(v.into_iter().map(T::from_f64).collect());
    match (x, to) {
        (Value::Float(v), DType::I32) => Value::Int(v.iter().map(|a| a.to_f64() as i32).collect()),
        (Value::Float(v), DType::Bool) => Value::Bool(v.iter().map(|&a| a != T::ZERO).collect()),
        (Value::Float(v), _) => Value::Float(v.clone()),
        (Value::Int(v), DType::I32) => Value::Int(v.clone()),
        (Value::Int(v), DType::Bool) => Value::Bool(v.iter().map(|&a| a != 0).collect()),
        (Value::Int(v), _) => as_float(v.iter().map(|&a| f64::from(a)).collect()),
        (Value::Bool(v), DType::I32) => Value::Int(v.iter().map(|&a| i32::from(a)).collect()),
        (Value::Bool(v), DType::Bool) => Value::Bool(v.clone()),
        (Value::Bool(v), _) => as_float(v.iter().map(|&a| f64::from(u8::from(a))).collect()),
    }
}
