//! Building graph nodes from tensor values, with the language's conveniences
//! made explicit: numpy-style broadcasting becomes `broadcast` nodes, negative
//! axes are normalised, `keepdim` becomes a reshape, `-1` in a shape is
//! inferred. Errors are plain sentences; the evaluator attaches places.

use lpac_ir::{BinaryOp, DType, Graph, NodeId, Op, Origin, ReduceOp, TensorType, UnaryOp};

use crate::source::Span;
use crate::value::TensorVal;

/// Where new nodes come from: the span recorded on the tensor values they
/// produce, and the IR origin stored on the nodes.
#[derive(Clone, Debug)]
pub struct Site {
    pub span: Span,
    pub origin: Origin,
}

/// The graph under construction.
pub struct GraphBuilder {
    pub graph: Graph,
    next_random_key: u64,
}

/// More nodes than this is surely a runaway loop in a model file.
pub const MAX_NODES: usize = 2_000_000;
/// No tensor may hold more elements than this (2^40): far beyond any machine,
/// and small enough that byte counts never overflow.
pub const MAX_ELEMENTS: usize = 1 << 40;

type R = Result<TensorVal, String>;

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        GraphBuilder { graph: Graph::new(name), next_random_key: 0 }
    }

    pub fn add(&mut self, op: Op, inputs: &[&TensorVal], given: Option<TensorType>, site: &Site) -> R {
        if self.graph.len() >= MAX_NODES {
            return Err(format!("the model builds more than {MAX_NODES} graph nodes; is a loop running away?"));
        }
        let ids: Vec<NodeId> = inputs.iter().map(|t| t.node).collect();
        for ty in given.iter() {
            check_size(ty)?;
        }
        let node = self.graph.add(op, ids, given, site.origin.clone())?;
        check_size(self.graph.ty(node))?;
        Ok(TensorVal { node, ty: self.graph.ty(node).clone(), span: site.span })
    }

    pub fn leaf(&mut self, op: Op, ty: TensorType, site: &Site) -> R {
        self.add(op, &[], Some(ty), site)
    }

    /// A scalar splatted to `ty`.
    pub fn constant(&mut self, value: f64, ty: TensorType, site: &Site) -> R {
        self.leaf(Op::Const { value }, ty, site)
    }

    /// Uniform [0,1) numbers, each call with its own stream key.
    pub fn random(&mut self, shape: Vec<usize>, site: &Site) -> R {
        let key = self.next_random_key;
        self.next_random_key += 1;
        self.leaf(Op::RandomUniform { key }, TensorType::new(DType::F32, shape), site)
    }

    /// Numpy-style broadcast of `t` to `shape` (trailing axes aligned).
    pub fn broadcast_to(&mut self, t: &TensorVal, shape: &[usize], site: &Site) -> R {
        if t.ty.shape == shape {
            return Ok(t.clone());
        }
        if t.ty.rank() > shape.len() {
            return Err(format!("cannot broadcast {} to {}", t.ty, fmt_shape(shape)));
        }
        let offset = shape.len() - t.ty.rank();
        let dims: Vec<usize> = (offset..shape.len()).collect();
        let ty = TensorType::new(t.ty.dtype, shape.to_vec());
        self.add(Op::Broadcast { dims }, &[t], Some(ty), site)
    }

    pub fn unary(&mut self, op: UnaryOp, t: &TensorVal, site: &Site) -> R {
        self.add(Op::Unary(op), &[t], None, site)
    }

    /// An elementwise binary op with numpy broadcasting. Dtypes must agree.
    pub fn binary(&mut self, op: BinaryOp, a: &TensorVal, b: &TensorVal, site: &Site) -> R {
        if a.ty.dtype != b.ty.dtype {
            return Err(format!("dtypes differ: {} and {} (use cast)", a.ty, b.ty));
        }
        let shape = broadcast_shapes(&a.ty.shape, &b.ty.shape)
            .ok_or_else(|| format!("shapes {} and {} do not broadcast", a.ty, b.ty))?;
        let a = self.broadcast_to(a, &shape, site)?;
        let b = self.broadcast_to(b, &shape, site)?;
        self.add(Op::Binary(op), &[&a, &b], None, site)
    }

    pub fn select(&mut self, c: &TensorVal, a: &TensorVal, b: &TensorVal, site: &Site) -> R {
        if c.ty.dtype != DType::Bool {
            return Err(format!("the condition of `where` must be bool, not {}", c.ty));
        }
        if a.ty.dtype != b.ty.dtype {
            return Err(format!("the branches of `where` differ in dtype: {} and {}", a.ty, b.ty));
        }
        let shape = broadcast_shapes(&a.ty.shape, &b.ty.shape)
            .and_then(|s| broadcast_shapes(&s, &c.ty.shape))
            .ok_or_else(|| format!("shapes {}, {} and {} do not broadcast", c.ty, a.ty, b.ty))?;
        let c = self.broadcast_to(c, &shape, site)?;
        let a = self.broadcast_to(a, &shape, site)?;
        let b = self.broadcast_to(b, &shape, site)?;
        self.add(Op::Select, &[&c, &a, &b], None, site)
    }

    /// Reduces over `axes` (any order, negative allowed); `keepdim` keeps them as size 1.
    pub fn reduce(&mut self, op: ReduceOp, t: &TensorVal, axes: &[i64], keepdim: bool, site: &Site) -> R {
        let mut norm = Vec::new();
        for &a in axes {
            norm.push(normalize_axis(a, t.ty.rank())?);
        }
        norm.sort_unstable();
        norm.dedup();
        if norm.is_empty() {
            return Ok(t.clone());
        }
        let reduced = self.add(Op::Reduce { op, axes: norm.clone() }, &[t], None, site)?;
        if !keepdim {
            return Ok(reduced);
        }
        let kept: Vec<usize> = (0..t.ty.rank()).map(|i| if norm.contains(&i) { 1 } else { t.ty.shape[i] }).collect();
        self.reshape_exact(&reduced, kept, site)
    }

    /// Reshape to a shape that may contain one `-1`, inferred from the element count.
    pub fn reshape(&mut self, t: &TensorVal, dims: &[i64], site: &Site) -> R {
        let shape = infer_reshape(&t.ty, dims)?;
        self.reshape_exact(t, shape, site)
    }

    pub fn reshape_exact(&mut self, t: &TensorVal, shape: Vec<usize>, site: &Site) -> R {
        if t.ty.shape == shape {
            return Ok(t.clone());
        }
        let ty = TensorType::new(t.ty.dtype, shape);
        self.add(Op::Reshape, &[t], Some(ty), site)
    }

    pub fn permute(&mut self, t: &TensorVal, perm: &[i64], site: &Site) -> R {
        let mut norm = Vec::new();
        for &p in perm {
            norm.push(normalize_axis(p, t.ty.rank())?);
        }
        if norm.iter().enumerate().all(|(i, &p)| i == p) && norm.len() == t.ty.rank() {
            return Ok(t.clone());
        }
        self.add(Op::Permute { perm: norm }, &[t], None, site)
    }

    /// Swaps two axes.
    pub fn transpose(&mut self, t: &TensorVal, a: i64, b: i64, site: &Site) -> R {
        let (a, b) = (normalize_axis(a, t.ty.rank())?, normalize_axis(b, t.ty.rank())?);
        let mut perm: Vec<i64> = (0..t.ty.rank() as i64).collect();
        perm.swap(a, b);
        self.permute(t, &perm, site)
    }

    pub fn slice(&mut self, t: &TensorVal, axis: i64, start: i64, end: i64, site: &Site) -> R {
        let axis = normalize_axis(axis, t.ty.rank())?;
        let size = t.ty.shape[axis] as i64;
        if !(0 <= start && start < end && end <= size) {
            return Err(format!("slice {start}..{end} is out of range for axis {axis} of {} (size {size})", t.ty));
        }
        if start == 0 && end == size {
            return Ok(t.clone());
        }
        let op = Op::Slice { axis, start: start as usize, end: end as usize };
        self.add(op, &[t], None, site)
    }

    pub fn concat(&mut self, parts: &[TensorVal], axis: i64, site: &Site) -> R {
        let first = parts.first().ok_or("concat needs at least one tensor")?;
        let axis = normalize_axis(axis, first.ty.rank())?;
        let refs: Vec<&TensorVal> = parts.iter().collect();
        self.add(Op::Concat { axis }, &refs, None, site)
    }

    pub fn pad(&mut self, t: &TensorVal, axis: i64, lo: i64, hi: i64, value: f64, site: &Site) -> R {
        let axis = normalize_axis(axis, t.ty.rank())?;
        if lo < 0 || hi < 0 {
            return Err(format!("pad amounts must not be negative, got {lo} and {hi}"));
        }
        self.add(Op::Pad { axis, lo: lo as usize, hi: hi as usize, value }, &[t], None, site)
    }

    /// `a @ b`: a plain matrix on the right is shared by every batch; batched
    /// operands must agree in their batch dimensions; a matrix on the left of a
    /// batched right operand is broadcast.
    pub fn matmul(&mut self, a: &TensorVal, b: &TensorVal, site: &Site) -> R {
        if a.ty.rank() < 2 || b.ty.rank() < 2 {
            return Err(format!("`@` needs operands of rank 2 or more, got {} and {}", a.ty, b.ty));
        }
        if a.ty.rank() == 2 && b.ty.rank() > 2 {
            let mut shape = b.ty.shape[..b.ty.rank() - 2].to_vec();
            shape.extend_from_slice(&a.ty.shape);
            let a = self.broadcast_to(a, &shape, site)?;
            return self.add(Op::MatMul, &[&a, b], None, site);
        }
        self.add(Op::MatMul, &[a, b], None, site)
    }

    pub fn gather(&mut self, table: &TensorVal, idx: &TensorVal, site: &Site) -> R {
        self.add(Op::Gather, &[table, idx], None, site)
    }

    pub fn cast(&mut self, t: &TensorVal, dtype: DType, site: &Site) -> R {
        if t.ty.dtype == dtype {
            return Ok(t.clone());
        }
        self.add(Op::Cast, &[t], Some(t.ty.with_dtype(dtype)), site)
    }

    pub fn iota(&mut self, shape: Vec<usize>, axis: i64, dtype: DType, site: &Site) -> R {
        let axis = normalize_axis(axis, shape.len())?;
        self.leaf(Op::Iota { axis }, TensorType::new(dtype, shape), site)
    }
}

fn check_size(ty: &TensorType) -> Result<(), String> {
    let numel = ty.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    match numel {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(format!("{ty} is too large: a tensor may hold at most 2^40 elements")),
    }
}

/// Numpy broadcasting of two shapes: trailing axes aligned, size 1 stretches.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| if i + s.len() >= rank { s[i + s.len() - rank] } else { 1 };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// Turns a possibly negative axis into an index below `rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(format!("axis {axis} is out of range for a tensor of rank {rank}"))
    }
}

fn infer_reshape(ty: &TensorType, dims: &[i64]) -> Result<Vec<usize>, String> {
    let unknown: Vec<usize> = dims.iter().enumerate().filter(|(_, d)| **d == -1).map(|(i, _)| i).collect();
    if unknown.len() > 1 || dims.iter().any(|&d| d < -1 || d == 0) {
        return Err(format!("bad reshape target {:?}: sizes must be positive, with at most one -1", dims));
    }
    let too_big = || format!("reshape target {:?} has too many elements", dims);
    let known =
        dims.iter().filter(|&&d| d > 0).try_fold(1usize, |n, &d| n.checked_mul(d as usize)).ok_or_else(too_big)?;
    let mut shape: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
    if let Some(&i) = unknown.first() {
        if !ty.numel().is_multiple_of(known) {
            return Err(format!("cannot reshape {} to {:?}", ty, dims));
        }
        shape[i] = ty.numel() / known;
    }
    if shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) != Some(ty.numel()) {
        return Err(format!("cannot reshape {} ({} elements) to {}", ty, ty.numel(), fmt_shape(&shape)));
    }
    Ok(shape)
}

fn fmt_shape(shape: &[usize]) -> String {
    lpac_ir::types::format_shape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_broadcasting() {
        assert_eq!(broadcast_shapes(&[16, 128, 1], &[256]), Some(vec![16, 128, 256]));
        assert_eq!(broadcast_shapes(&[], &[3]), Some(vec![3]));
        assert_eq!(broadcast_shapes(&[2, 3], &[3, 2]), None);
    }

    #[test]
    fn axes_and_reshape() {
        assert_eq!(normalize_axis(-1, 3), Ok(2));
        assert!(normalize_axis(3, 3).is_err());
        let ty = TensorType::new(DType::F32, vec![4, 6]);
        assert_eq!(infer_reshape(&ty, &[2, -1, 3]).unwrap(), vec![2, 4, 3]);
        assert!(infer_reshape(&ty, &[5, -1]).is_err());
        assert!(infer_reshape(&ty, &[-1, -1]).is_err());
    }
}
