//! The adjoint rule of every primitive op, one function each.
//!
//! Notation: the forward node is `y = op(operands)`, `g` is the adjoint of `y`
//! (∂L/∂y, of `y`'s type), and each rule returns, for every operand the caller
//! wants (`Site::wants`), that operand's contribution `∂L/∂operand` with the
//! operand's exact type. The caller sums contributions from several users.
//! Rules that need the forward result use `y` itself (the node `Site::id`):
//! the forward graph is kept, so every forward value is available.
//!
//! Ops with no rule — comparisons, `and`, `or`, `not`, `iota`, `const`,
//! `input`, `random_uniform` — carry no gradient: their operands (if any) get
//! none ([`carries`] is false), and neither do `select`'s condition or the
//! indices of `gather` and `scatter_add`. Integer and bool values never get
//! adjoints (the caller only asks for float operands).

use lpac_ir::{BinaryOp, DType, Node, NodeId, Op, ReduceOp, TensorType, UnaryOp};

use super::Emitter;

/// The forward node being differentiated.
pub struct Site<'a> {
    /// The forward node `y` (same id in the output graph).
    pub id: NodeId,
    pub node: &'a Node,
    /// The adjoint of `y`.
    pub g: NodeId,
    /// Which operands need a gradient.
    pub wants: &'a [bool],
}

impl Site<'_> {
    fn x(&self, k: usize) -> NodeId {
        self.node.inputs[k]
    }

    fn want(&self, k: usize) -> bool {
        self.wants[k]
    }
}

type R = Result<NodeId, String>;
/// One entry per operand: its gradient contribution, or `None`.
pub type Grads = Result<Vec<Option<NodeId>>, String>;

/// Whether operand `k` of `op` can receive a gradient (if it is float-typed
/// and depends on a parameter).
pub fn carries(op: &Op, k: usize) -> bool {
    match op {
        _ if op.is_leaf() => false,
        Op::Unary(u) => *u != UnaryOp::Not,
        Op::Binary(b) => !(b.is_comparison() || b.is_logical()),
        Op::Select => k != 0,
        Op::Gather => k == 0,
        Op::ScatterAdd => k == 1,
        Op::Reduce { .. }
        | Op::Reshape
        | Op::Permute { .. }
        | Op::Broadcast { .. }
        | Op::Slice { .. }
        | Op::Concat { .. }
        | Op::Pad { .. }
        | Op::MatMul
        | Op::Cast
        | Op::Attention { .. } => true,
        _ => false,
    }
}

/// The gradient contributions of `site`'s operands.
pub fn backward(e: &mut Emitter, s: &Site) -> Grads {
    match &s.node.op {
        Op::Unary(u) => match u {
            UnaryOp::Neg => neg(e, s),
            UnaryOp::Exp => exp(e, s),
            UnaryOp::Log => log(e, s),
            UnaryOp::Sqrt => sqrt(e, s),
            UnaryOp::Rsqrt => rsqrt(e, s),
            UnaryOp::Recip => recip(e, s),
            UnaryOp::Tanh => tanh(e, s),
            UnaryOp::Sin => sin(e, s),
            UnaryOp::Cos => cos(e, s),
            UnaryOp::Abs => abs(e, s),
            UnaryOp::Not => none(s),
        },
        Op::Binary(b) => match b {
            BinaryOp::Add => add(e, s),
            BinaryOp::Sub => sub(e, s),
            BinaryOp::Mul => mul(e, s),
            BinaryOp::Div => div(e, s),
            BinaryOp::Max => max(e, s),
            BinaryOp::Min => min(e, s),
            BinaryOp::Pow => pow(e, s),
            _ => none(s),
        },
        Op::Select => select(e, s),
        Op::Reduce { op: ReduceOp::Sum, axes } => reduce_sum(e, s, axes),
        Op::Reduce { op: ReduceOp::Max, axes } => reduce_max(e, s, axes),
        Op::Reshape => reshape(e, s),
        Op::Permute { perm } => permute(e, s, perm),
        Op::Broadcast { dims } => broadcast(e, s, dims),
        Op::Slice { axis, start, end } => slice(e, s, *axis, *start, *end),
        Op::Concat { axis } => concat(e, s, *axis),
        Op::Pad { axis, lo, .. } => pad(e, s, *axis, *lo),
        Op::MatMul => matmul(e, s),
        Op::Gather => gather(e, s),
        Op::ScatterAdd => scatter_add(e, s),
        Op::Cast => cast(e, s),
        Op::Attention { scale, causal } => attention(e, s, *scale, *causal),
        Op::AttentionGrad { .. } => Err("the gradient of `attention_grad` (a second derivative of attention) is not \
                                         implemented"
            .into()),
        Op::Input { .. } | Op::Param { .. } | Op::Const { .. } | Op::Iota { .. } | Op::RandomUniform { .. } => none(s),
    }
}

// ---- building blocks ---------------------------------------------------------

/// `value` with type `ty`: a scalar `const`, broadcast when `ty` is not a scalar.
pub fn splat(e: &mut Emitter, value: f64, ty: &TensorType) -> R {
    let scalar = e.push(Op::Const { value }, vec![], Some(TensorType::scalar(ty.dtype)))?;
    if ty.rank() == 0 {
        return Ok(scalar);
    }
    e.push(Op::Broadcast { dims: vec![] }, vec![scalar], Some(ty.clone()))
}

impl Emitter {
    fn ty_of(&self, id: NodeId) -> TensorType {
        self.ty(id).clone()
    }

    fn splat_like(&mut self, value: f64, like: NodeId) -> R {
        let ty = self.ty_of(like);
        splat(self, value, &ty)
    }

    fn unary(&mut self, u: UnaryOp, x: NodeId) -> R {
        self.push(Op::Unary(u), vec![x], None)
    }

    fn binary(&mut self, b: BinaryOp, x: NodeId, y: NodeId) -> R {
        self.push(Op::Binary(b), vec![x, y], None)
    }

    fn neg(&mut self, x: NodeId) -> R {
        self.unary(UnaryOp::Neg, x)
    }

    fn mul(&mut self, x: NodeId, y: NodeId) -> R {
        self.binary(BinaryOp::Mul, x, y)
    }

    fn div(&mut self, x: NodeId, y: NodeId) -> R {
        self.binary(BinaryOp::Div, x, y)
    }

    fn select(&mut self, c: NodeId, a: NodeId, b: NodeId) -> R {
        self.push(Op::Select, vec![c, a, b], None)
    }

    fn reduce_sum(&mut self, x: NodeId, axes: Vec<usize>) -> R {
        self.push(Op::Reduce { op: ReduceOp::Sum, axes }, vec![x], None)
    }

    /// `x` with `shape`; `x` itself when the shape is already that.
    fn reshape(&mut self, x: NodeId, shape: &[usize]) -> R {
        if self.ty(x).shape == shape {
            return Ok(x);
        }
        let ty = self.ty(x).with_shape(shape.to_vec());
        self.push(Op::Reshape, vec![x], Some(ty))
    }

    fn permute(&mut self, x: NodeId, perm: Vec<usize>) -> R {
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(x);
        }
        self.push(Op::Permute { perm }, vec![x], None)
    }

    /// `x` broadcast to `shape`, its axes landing on `dims`.
    fn broadcast(&mut self, x: NodeId, dims: Vec<usize>, shape: &[usize]) -> R {
        if self.ty(x).shape == shape {
            return Ok(x);
        }
        let ty = self.ty(x).with_shape(shape.to_vec());
        self.push(Op::Broadcast { dims }, vec![x], Some(ty))
    }

    /// The last two axes swapped.
    fn transpose(&mut self, x: NodeId) -> R {
        let r = self.ty(x).rank();
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        self.permute(x, perm)
    }

    fn matmul(&mut self, a: NodeId, b: NodeId) -> R {
        self.push(Op::MatMul, vec![a, b], None)
    }

    fn slice(&mut self, x: NodeId, axis: usize, start: usize, end: usize) -> R {
        if start == 0 && end == self.ty(x).shape[axis] {
            return Ok(x);
        }
        self.push(Op::Slice { axis, start, end }, vec![x], None)
    }
}

fn none(s: &Site) -> Grads {
    Ok(vec![None; s.node.inputs.len()])
}

fn one(g: NodeId) -> Grads {
    Ok(vec![Some(g)])
}

/// Both operands' contributions, each computed only when wanted.
fn two(e: &mut Emitter, s: &Site, a: impl FnOnce(&mut Emitter) -> R, b: impl FnOnce(&mut Emitter) -> R) -> Grads {
    let ga = if s.want(0) { Some(a(e)?) } else { None };
    let gb = if s.want(1) { Some(b(e)?) } else { None };
    Ok(vec![ga, gb])
}

// ---- unary -------------------------------------------------------------------

/// neg: y = −x, dy/dx = −1: gx = −g.
fn neg(e: &mut Emitter, s: &Site) -> Grads {
    one(e.neg(s.g)?)
}

/// exp: y = eˣ, dy/dx = eˣ = y: gx = g·y.
fn exp(e: &mut Emitter, s: &Site) -> Grads {
    one(e.mul(s.g, s.id)?)
}

/// log: y = ln x, dy/dx = 1/x: gx = g / x.
fn log(e: &mut Emitter, s: &Site) -> Grads {
    one(e.div(s.g, s.x(0))?)
}

/// sqrt: y = √x, dy/dx = 1/(2√x) = 0.5/y: gx = g·0.5 / y.
fn sqrt(e: &mut Emitter, s: &Site) -> Grads {
    let half = e.splat_like(0.5, s.id)?;
    let t = e.mul(s.g, half)?;
    one(e.div(t, s.id)?)
}

/// rsqrt: y = x^(−1/2), dy/dx = −½·x^(−3/2) = −½·y³: gx = g·(−0.5)·y³.
fn rsqrt(e: &mut Emitter, s: &Site) -> Grads {
    let c = e.splat_like(-0.5, s.id)?;
    let y2 = e.mul(s.id, s.id)?;
    let y3 = e.mul(y2, s.id)?;
    let t = e.mul(s.g, c)?;
    one(e.mul(t, y3)?)
}

/// recip: y = 1/x, dy/dx = −1/x² = −y²: gx = −(g·y²).
fn recip(e: &mut Emitter, s: &Site) -> Grads {
    let y2 = e.mul(s.id, s.id)?;
    let t = e.mul(s.g, y2)?;
    one(e.neg(t)?)
}

/// tanh: dy/dx = 1 − tanh²x = 1 − y²: gx = g·(1 − y²).
fn tanh(e: &mut Emitter, s: &Site) -> Grads {
    let ones = e.splat_like(1.0, s.id)?;
    let y2 = e.mul(s.id, s.id)?;
    let d = e.binary(BinaryOp::Sub, ones, y2)?;
    one(e.mul(s.g, d)?)
}

/// sin: dy/dx = cos x: gx = g·cos x.
fn sin(e: &mut Emitter, s: &Site) -> Grads {
    let c = e.unary(UnaryOp::Cos, s.x(0))?;
    one(e.mul(s.g, c)?)
}

/// cos: dy/dx = −sin x: gx = −(g·sin x).
fn cos(e: &mut Emitter, s: &Site) -> Grads {
    let sn = e.unary(UnaryOp::Sin, s.x(0))?;
    let t = e.mul(s.g, sn)?;
    one(e.neg(t)?)
}

/// abs: dy/dx = sign x, taken as 0 at x = 0 (and for NaN):
/// gx = select(x > 0, g, select(x < 0, −g, 0)).
fn abs(e: &mut Emitter, s: &Site) -> Grads {
    let x = s.x(0);
    let zero = e.splat_like(0.0, x)?;
    let pos = e.binary(BinaryOp::Gt, x, zero)?;
    let negative = e.binary(BinaryOp::Lt, x, zero)?;
    let ng = e.neg(s.g)?;
    let inner = e.select(negative, ng, zero)?;
    one(e.select(pos, s.g, inner)?)
}

// ---- binary ------------------------------------------------------------------

/// add: y = a + b: ga = g, gb = g.
fn add(_: &mut Emitter, s: &Site) -> Grads {
    Ok(vec![s.want(0).then_some(s.g), s.want(1).then_some(s.g)])
}

/// sub: y = a − b: ga = g, gb = −g.
fn sub(e: &mut Emitter, s: &Site) -> Grads {
    let gb = if s.want(1) { Some(e.neg(s.g)?) } else { None };
    Ok(vec![s.want(0).then_some(s.g), gb])
}

/// mul: y = a·b: ga = g·b, gb = g·a.
fn mul(e: &mut Emitter, s: &Site) -> Grads {
    let (a, b, g) = (s.x(0), s.x(1), s.g);
    two(e, s, |e| e.mul(g, b), |e| e.mul(g, a))
}

/// div: y = a/b: ga = g/b; gb = −g·a/b² = −(g/b)·y.
fn div(e: &mut Emitter, s: &Site) -> Grads {
    let q = e.div(s.g, s.x(1))?;
    let gb = if s.want(1) {
        let t = e.mul(q, s.id)?;
        Some(e.neg(t)?)
    } else {
        None
    };
    Ok(vec![s.want(0).then_some(q), gb])
}

/// The gradient routed by a mask: where `m`, to the first operand, else to
/// the second: ga = select(m, g, 0), gb = select(m, 0, g).
fn routed(e: &mut Emitter, s: &Site, m: NodeId) -> Grads {
    let zero = e.splat_like(0.0, s.id)?;
    let g = s.g;
    two(e, s, |e| e.select(m, g, zero), |e| e.select(m, zero, g))
}

/// max: y = max(a, b). The gradient goes to the operand selected; at a tie
/// (a = b) all of it goes to the first: m = (a ≥ b), ga = g·m, gb = g·¬m.
/// (PyTorch's `maximum` and JAX's `max` split it evenly at ties.)
fn max(e: &mut Emitter, s: &Site) -> Grads {
    let m = e.binary(BinaryOp::Ge, s.x(0), s.x(1))?;
    routed(e, s, m)
}

/// min: y = min(a, b), as `max` with m = (a ≤ b): ties go to the first operand.
fn min(e: &mut Emitter, s: &Site) -> Grads {
    let m = e.binary(BinaryOp::Le, s.x(0), s.x(1))?;
    routed(e, s, m)
}

/// pow: y = aᵇ.
/// - base: ∂y/∂a = b·a^(b−1): ga = g·b·a^(b−1), and 0 where b = 0 (y ≡ 1
///   there; this also avoids 0·∞ = NaN at a = 0, as PyTorch does).
/// - exponent: ∂y/∂b = ln(a)·aᵇ: gb = g·y·ln a where a > 0, and 0 where
///   a ≤ 0 — there aᵇ is not differentiable in b (it is undefined for
///   non-integer b near any integer when a < 0), and the select keeps the
///   NaN of ln(a ≤ 0) out of the gradient. PyTorch gives NaN for a < 0.
fn pow(e: &mut Emitter, s: &Site) -> Grads {
    let (a, b, g, y) = (s.x(0), s.x(1), s.g, s.id);
    let zero = e.splat_like(0.0, y)?;
    let ga = |e: &mut Emitter| {
        let one = e.splat_like(1.0, y)?;
        let bm1 = e.binary(BinaryOp::Sub, b, one)?;
        let p = e.binary(BinaryOp::Pow, a, bm1)?;
        let d = e.mul(b, p)?;
        let t = e.mul(g, d)?;
        let b_zero = e.binary(BinaryOp::Eq, b, zero)?;
        e.select(b_zero, zero, t)
    };
    let gb = |e: &mut Emitter| {
        let positive = e.binary(BinaryOp::Gt, a, zero)?;
        let ln = e.unary(UnaryOp::Log, a)?;
        let d = e.mul(y, ln)?;
        let t = e.mul(g, d)?;
        e.select(positive, t, zero)
    };
    two(e, s, ga, gb)
}

// ---- select and reductions ---------------------------------------------------

/// select: y = c ? a : b. The gradient goes to the branch chosen:
/// ga = select(c, g, 0), gb = select(c, 0, g); the condition gets none.
fn select(e: &mut Emitter, s: &Site) -> Grads {
    let (c, g) = (s.x(0), s.g);
    let zero = e.splat_like(0.0, s.id)?;
    let ga = if s.want(1) { Some(e.select(c, g, zero)?) } else { None };
    let gb = if s.want(2) { Some(e.select(c, zero, g)?) } else { None };
    Ok(vec![None, ga, gb])
}

/// The axes of a rank-`rank` tensor that survive reducing `axes`.
fn kept_axes(rank: usize, axes: &[usize]) -> Vec<usize> {
    (0..rank).filter(|a| !axes.contains(a)).collect()
}

/// reduce_sum: y = Σ over `axes` of x, ∂y/∂x = 1: gx = g broadcast back over
/// the reduced axes.
fn reduce_sum(e: &mut Emitter, s: &Site, axes: &[usize]) -> Grads {
    let shape = e.ty(s.x(0)).shape.clone();
    let kept = kept_axes(shape.len(), axes);
    one(e.broadcast(s.g, kept, &shape)?)
}

/// reduce_max: y = max over `axes` of x. The gradient goes to every position
/// equal to its maximum, each getting all of it (ties are not split):
/// gx = select(x = bcast(y), bcast(g), 0). PyTorch's `amax` divides it evenly
/// among tied positions instead; without ties the two agree.
fn reduce_max(e: &mut Emitter, s: &Site, axes: &[usize]) -> Grads {
    let x = s.x(0);
    let shape = e.ty(x).shape.clone();
    let kept = kept_axes(shape.len(), axes);
    let yb = e.broadcast(s.id, kept.clone(), &shape)?;
    let gb = e.broadcast(s.g, kept, &shape)?;
    let hit = e.binary(BinaryOp::Eq, x, yb)?;
    let zero = e.splat_like(0.0, x)?;
    one(e.select(hit, gb, zero)?)
}

// ---- movement ------------------------------------------------------------------

/// reshape: the same elements in a new shape: gx = reshape(g, shape of x).
fn reshape(e: &mut Emitter, s: &Site) -> Grads {
    let shape = e.ty(s.x(0)).shape.clone();
    one(e.reshape(s.g, &shape)?)
}

/// permute: output axis i is input axis `perm[i]`, so the gradient is permuted
/// by the inverse: `gx = permute(g, inv)` with `inv[perm[i]] = i`.
fn permute(e: &mut Emitter, s: &Site, perm: &[usize]) -> Grads {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    one(e.permute(s.g, inv)?)
}

/// broadcast: x's axis i lands on output axis `dims[i]`; each element of x is
/// copied to every position of the new axes and of its stretched size-1 axes,
/// so gx = reduce_sum(g) over the new axes and the stretched ones, reshaped to
/// x's shape (which puts back the size-1 axes).
fn broadcast(e: &mut Emitter, s: &Site, dims: &[usize]) -> Grads {
    let x_shape = e.ty(s.x(0)).shape.clone();
    let y_shape = e.ty(s.id).shape.clone();
    let mut summed: Vec<usize> = (0..y_shape.len()).filter(|a| !dims.contains(a)).collect();
    for (i, &d) in dims.iter().enumerate() {
        if x_shape[i] == 1 && y_shape[d] != 1 {
            summed.push(d);
        }
    }
    summed.sort_unstable();
    let g = if summed.is_empty() { s.g } else { e.reduce_sum(s.g, summed)? };
    one(e.reshape(g, &x_shape)?)
}

/// slice: y = x[start..end] along `axis`: gx is g padded with zeros back to
/// x's extent: pad(g, lo = start, hi = n − end, value 0).
fn slice(e: &mut Emitter, s: &Site, axis: usize, start: usize, end: usize) -> Grads {
    let n = e.ty(s.x(0)).shape[axis];
    if start == 0 && end == n {
        return one(s.g);
    }
    one(e.push(Op::Pad { axis, lo: start, hi: n - end, value: 0.0 }, vec![s.g], None)?)
}

/// concat: operand k occupies [offset_k, offset_k + n_k) along `axis`:
/// its gradient is that slice of g.
fn concat(e: &mut Emitter, s: &Site, axis: usize) -> Grads {
    let mut grads = Vec::with_capacity(s.node.inputs.len());
    let mut offset = 0;
    for (k, &x) in s.node.inputs.iter().enumerate() {
        let n = e.ty(x).shape[axis];
        grads.push(if s.want(k) { Some(e.slice(s.g, axis, offset, offset + n)?) } else { None });
        offset += n;
    }
    Ok(grads)
}

/// pad: x sits at [lo, lo + n) along `axis`; the padding value is a constant:
/// gx = slice(g, axis, lo, lo + n).
fn pad(e: &mut Emitter, s: &Site, axis: usize, lo: usize) -> Grads {
    let n = e.ty(s.x(0)).shape[axis];
    one(e.slice(s.g, axis, lo, lo + n)?)
}

/// matmul: y = a·b over the last two axes, a[..., m, k], b[..., k, n]:
/// ga = g·bᵀ, gb = aᵀ·g. When b is a plain [k, n] matrix shared by every
/// batch of a, its gradient sums over the batch: a and g are reshaped to
/// [B·m, k] and [B·m, n] first, so gb = a₂ᵀ·g₂ is one 2-D matmul.
fn matmul(e: &mut Emitter, s: &Site) -> Grads {
    let (a, b, g) = (s.x(0), s.x(1), s.g);
    let a_ty = e.ty_of(a);
    let b_rank = e.ty(b).rank();
    let ga = |e: &mut Emitter| {
        let bt = e.transpose(b)?;
        e.matmul(g, bt)
    };
    let gb = |e: &mut Emitter| {
        if b_rank == 2 && a_ty.rank() > 2 {
            let k = a_ty.shape[a_ty.rank() - 1];
            let rows: usize = a_ty.shape[..a_ty.rank() - 1].iter().product();
            let n = *e.ty(g).shape.last().expect("matmul results have rank >= 2");
            let a2 = e.reshape(a, &[rows, k])?;
            let g2 = e.reshape(g, &[rows, n])?;
            let at = e.transpose(a2)?;
            e.matmul(at, g2)
        } else {
            let at = e.transpose(a)?;
            e.matmul(at, g)
        }
    };
    two(e, s, ga, gb)
}

/// attention: y = softmax(q·kᵀ·scale)·v. Each wanted operand's gradient is
/// one `attention_grad` node of (q, k, v, y, g); a backend computes the
/// three together from one recomputation of the probabilities.
fn attention(e: &mut Emitter, s: &Site, scale: f64, causal: bool) -> Grads {
    let operands = vec![s.x(0), s.x(1), s.x(2), s.id, s.g];
    (0..3)
        .map(|wrt| {
            if !s.want(wrt) {
                return Ok(None);
            }
            e.push(Op::AttentionGrad { scale, causal, wrt }, operands.clone(), None).map(Some)
        })
        .collect()
}

/// gather: y[i..., r...] = table[idx[i...], r...]. Each row read adds its
/// gradient to the row it came from: gtable = scatter_add(idx, g) (repeated
/// indices sum). The indices get none.
fn gather(e: &mut Emitter, s: &Site) -> Grads {
    let (table, idx) = (s.x(0), s.x(1));
    let ty = e.ty_of(table);
    Ok(vec![Some(e.push(Op::ScatterAdd, vec![idx, s.g], Some(ty))?), None])
}

/// scatter_add: y[n, r...] = Σ rows of src at the rows idx names, so each
/// source row's gradient is the gradient of the row it was added to:
/// gsrc = gather(g, idx). The indices get none.
fn scatter_add(e: &mut Emitter, s: &Site) -> Grads {
    let idx = s.x(0);
    Ok(vec![None, Some(e.push(Op::Gather, vec![s.g, idx], None)?)])
}

/// cast (float to float): the identity up to rounding, so the gradient is
/// cast back to the operand's dtype: gx = cast(g, dtype of x). (Casts from
/// or to integers and bools never get here: those values have no adjoint.)
fn cast(e: &mut Emitter, s: &Site) -> Grads {
    let x_ty = e.ty_of(s.x(0));
    if x_ty.dtype == e.ty(s.g).dtype {
        return one(s.g);
    }
    debug_assert!(x_ty.dtype != DType::I32 && x_ty.dtype != DType::Bool);
    one(e.push(Op::Cast, vec![s.g], Some(x_ty))?)
}
