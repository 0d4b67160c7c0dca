//! Building the kernels of a program once it is decided which nodes get
//! buffers (see the module docs of [`super`]).

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use lpac_ir::kernel::{
    AttentionKernel, AttentionPass, BufferId, BufferKind, Expr, ExprId, GemmKernel, Kernel, LoopKernel, Operand,
    Program, Reduction, Typed,
};
use lpac_ir::{BinaryOp, DType, Graph, NodeId, Op};

use super::index::{
    Affine, Logical, flat, identity, through_broadcast, through_permute, through_reshape, through_slice,
};

/// Why a graph cannot be lowered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuseError(pub String);

impl fmt::Display for FuseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fuse: {}", self.0)
    }
}

impl std::error::Error for FuseError {}

pub enum Failure {
    /// Building needs this node in a buffer; fusion retries with it there.
    NeedsBuffer(NodeId),
    Error(FuseError),
}

type R<T> = Result<T, Failure>;

pub struct Builder<'g> {
    graph: &'g Graph,
    materialized: &'g [bool],
    program: Program,
    buffers: Vec<Option<BufferId>>,
    /// The log-sum-exp buffer of each attention node whose gradient is
    /// computed (written forward, read backward).
    lse: HashMap<NodeId, BufferId>,
}

impl<'g> Builder<'g> {
    pub fn new(graph: &'g Graph, materialized: &'g [bool]) -> Self {
        let program = Program { name: graph.name.clone(), ..Program::default() };
        Builder { graph, materialized, program, buffers: vec![None; graph.len()], lse: HashMap::new() }
    }

    pub fn build(mut self) -> R<Program> {
        for id in self.graph.ids().filter(|id| self.materialized[id.index()]) {
            let node = self.graph.node(id);
            let kind = match &node.op {
                Op::Input { name } => BufferKind::Input(name.clone()),
                Op::Param { path, .. } => BufferKind::Param(path.clone()),
                _ => BufferKind::Temp,
            };
            self.buffers[id.index()] = Some(self.program.add_buffer(node.ty.clone(), kind));
        }
        let mut done: BTreeSet<NodeId> = BTreeSet::new();
        for id in self.graph.ids().filter(|id| self.materialized[id.index()]) {
            let kernel = match &self.graph.node(id).op {
                Op::Input { .. } | Op::Param { .. } => continue,
                _ if done.contains(&id) => continue,
                Op::Attention { .. } => self.attention(id)?,
                Op::AttentionGrad { .. } => {
                    let (kernel, covered) = self.attention_grad(id)?;
                    done.extend(covered);
                    kernel
                }
                Op::MatMul => self.gemm(id)?,
                Op::Gather => self.gather(id)?,
                Op::ScatterAdd => self.scatter_add(id)?,
                _ => Kernel::Loop(LoopBuilder::new(&self, id).finish()?),
            };
            self.program.kernels.push(kernel);
        }
        for out in &self.graph.outputs {
            let buffer = self.buffers[out.node.index()].expect("outputs are materialized");
            self.program.outputs.push((out.name.clone(), buffer));
        }
        Ok(self.program)
    }

    fn buffer(&self, id: NodeId) -> Option<BufferId> {
        self.buffers[id.index()]
    }

    /// A node's value as a strided view of one buffer: follows views down to
    /// a buffer; anything else there must get a buffer first.
    fn view(&self, id: NodeId, logical: &Logical, vars: usize) -> R<(BufferId, Affine)> {
        if let Some(b) = self.buffer(id) {
            return Ok((b, flat(&self.graph.ty(id).shape, logical, vars)));
        }
        let node = self.graph.node(id);
        let input = node.inputs.first().copied();
        let shape_of = |n: NodeId| self.graph.ty(n).shape.clone();
        match (&node.op, input) {
            (Op::Broadcast { dims }, Some(x)) => {
                self.view(x, &through_broadcast(logical, dims, &shape_of(x), vars), vars)
            }
            (Op::Permute { perm }, Some(x)) => self.view(x, &through_permute(logical, perm), vars),
            (Op::Slice { axis, start, .. }, Some(x)) => self.view(x, &through_slice(logical, *axis, *start), vars),
            (Op::Reshape, Some(x)) => match self.buffer(x) {
                Some(b) => Ok((b, flat(&node.ty.shape, logical, vars))),
                None => match through_reshape(logical, &node.ty.shape, &shape_of(x), vars) {
                    Some(l) => self.view(x, &l, vars),
                    None => Err(Failure::NeedsBuffer(x)),
                },
            },
            _ => Err(Failure::NeedsBuffer(id)),
        }
    }

    /// A node of rank `nb + 2` as a strided matrix with `nb` batch axes.
    fn matrix(&self, id: NodeId, nb: usize) -> R<Operand> {
        let vars = nb + 2;
        let (buffer, map) = self.view(id, &identity(vars, 0, vars), vars)?;
        Ok(Operand {
            buffer,
            offset: map.offset,
            batch_strides: map.coeffs[..nb].to_vec(),
            row_stride: map.coeffs[nb],
            col_stride: map.coeffs[nb + 1],
        })
    }

    /// The shapes, scale and operands of an attention node's q, k, v.
    fn attention_kernel(&self, id: NodeId, pass: AttentionPass, nodes: Vec<NodeId>) -> R<AttentionKernel> {
        let node = self.graph.node(id);
        let (scale, causal) = match node.op {
            Op::Attention { scale, causal } | Op::AttentionGrad { scale, causal, .. } => (scale, causal),
            _ => unreachable!("called on attention nodes"),
        };
        let (q, k, v) = (node.inputs[0], node.inputs[1], node.inputs[2]);
        let (q_ty, k_ty, v_ty) = (self.graph.ty(q), self.graph.ty(k), self.graph.ty(v));
        let nb = q_ty.rank() - 2;
        Ok(AttentionKernel {
            name: if matches!(pass, AttentionPass::Forward { .. }) { "attention" } else { "attention_grad" }.into(),
            batch: q_ty.shape[..nb].to_vec(),
            tq: q_ty.shape[nb],
            tk: k_ty.shape[nb],
            d: q_ty.shape[nb + 1],
            dv: v_ty.shape[nb + 1],
            scale,
            causal,
            q: self.matrix(q, nb)?,
            k: self.matrix(k, nb)?,
            v: self.matrix(v, nb)?,
            pass,
            lse: None,
            nodes,
        })
    }

    /// The forward kernel; when a gradient of this attention is computed,
    /// it also keeps each query row's log-sum-exp for the backward kernel.
    fn attention(&mut self, id: NodeId) -> R<Kernel> {
        let out = self.buffer(id).expect("attention nodes have buffers");
        let ty = self.graph.ty(id);
        let nb = ty.rank() - 2;
        let out = Operand::contiguous(out, &ty.shape[..nb], ty.shape[nb], ty.shape[nb + 1]);
        let mut kernel = self.attention_kernel(id, AttentionPass::Forward { out }, vec![id])?;
        let differentiated = self.graph.ids().any(|n| {
            let node = self.graph.node(n);
            matches!(node.op, Op::AttentionGrad { .. })
                && node.inputs[3] == id
                && node.inputs[..3] == self.graph.node(id).inputs[..]
        });
        if differentiated {
            let ty = self.graph.ty(id);
            let rows = lpac_ir::TensorType::new(ty.dtype, ty.shape[..ty.rank() - 1].to_vec());
            let lse = self.program.add_buffer(rows, BufferKind::Temp);
            self.lse.insert(id, lse);
            kernel.lse = Some(lse);
        }
        Ok(Kernel::Attention(Box::new(kernel)))
    }

    /// One kernel for every `attention_grad` node of the same attention
    /// (same operands and attributes): the backward pass computes dq, dk and
    /// dv together from one recomputation of the probabilities. Returns the
    /// kernel and the nodes it computes.
    fn attention_grad(&self, id: NodeId) -> R<(Kernel, Vec<NodeId>)> {
        let node = self.graph.node(id);
        let same = |n: NodeId| {
            let other = self.graph.node(n);
            matches!(
                (&other.op, &node.op),
                (Op::AttentionGrad { scale: a, causal: c, .. }, Op::AttentionGrad { scale: b, causal: d, .. })
                    if a.to_bits() == b.to_bits() && c == d
            ) && other.inputs == node.inputs
        };
        let group: Vec<NodeId> = self.graph.ids().filter(|&n| self.materialized[n.index()] && same(n)).collect();
        let grad = |wrt: usize| {
            group.iter().find(|&&n| matches!(self.graph.node(n).op, Op::AttentionGrad { wrt: w, .. } if w == wrt)).map(
                |&n| {
                    let ty = self.graph.ty(n);
                    let nb = ty.rank() - 2;
                    let buffer = self.buffer(n).expect("attention_grad nodes have buffers");
                    Operand::contiguous(buffer, &ty.shape[..nb], ty.shape[nb], ty.shape[nb + 1])
                },
            )
        };
        let nb = self.graph.ty(node.inputs[0]).rank() - 2;
        let pass = AttentionPass::Backward {
            out: self.matrix(node.inputs[3], nb)?,
            dout: self.matrix(node.inputs[4], nb)?,
            dq: grad(0),
            dk: grad(1),
            dv: grad(2),
        };
        let mut kernel = self.attention_kernel(id, pass, group.clone())?;
        kernel.lse = self.lse.get(&node.inputs[3]).copied();
        Ok((Kernel::Attention(Box::new(kernel)), group))
    }

    fn gemm(&self, id: NodeId) -> R<Kernel> {
        let node = self.graph.node(id);
        let (a, b) = (node.inputs[0], node.inputs[1]);
        let (a_ty, b_ty) = (self.graph.ty(a), self.graph.ty(b));
        let nb = a_ty.rank() - 2;
        let (m, k, n) = (a_ty.shape[nb], a_ty.shape[nb + 1], b_ty.shape[b_ty.rank() - 1]);
        let a_vars = a_ty.rank();
        let (a_buf, a_map) = self.view(a, &identity(a_vars, 0, a_vars), a_vars)?;
        let b_vars = b_ty.rank();
        let (b_buf, b_map) = self.view(b, &identity(b_vars, 0, b_vars), b_vars)?;
        let a_op = Operand {
            buffer: a_buf,
            offset: a_map.offset,
            batch_strides: a_map.coeffs[..nb].to_vec(),
            row_stride: a_map.coeffs[nb],
            col_stride: a_map.coeffs[nb + 1],
        };
        let b_batch = if b_vars == 2 { vec![0; nb] } else { b_map.coeffs[..nb].to_vec() };
        let b_op = Operand {
            buffer: b_buf,
            offset: b_map.offset,
            batch_strides: b_batch,
            row_stride: b_map.coeffs[b_vars - 2],
            col_stride: b_map.coeffs[b_vars - 1],
        };
        let c = self.buffer(id).expect("matmuls have buffers");
        let name = format!("matmul_{m}x{k}x{n}");
        Ok(Kernel::Gemm(GemmKernel {
            name,
            batch: a_ty.shape[..nb].to_vec(),
            m,
            k,
            n,
            a: a_op,
            b: b_op,
            c,
            nodes: vec![id],
        }))
    }

    /// Operands of gather and scatter-add must be whole contiguous buffers.
    fn whole(&self, id: NodeId) -> R<BufferId> {
        self.buffer(id).ok_or(Failure::NeedsBuffer(id))
    }

    fn gather(&self, id: NodeId) -> R<Kernel> {
        let node = self.graph.node(id);
        let (table, indices) = (self.whole(node.inputs[0])?, self.whole(node.inputs[1])?);
        let out = self.buffer(id).expect("gathers have buffers");
        Ok(Kernel::Gather { name: "gather".into(), table, indices, out, nodes: vec![id] })
    }

    fn scatter_add(&self, id: NodeId) -> R<Kernel> {
        let node = self.graph.node(id);
        let (indices, src) = (self.whole(node.inputs[0])?, self.whole(node.inputs[1])?);
        let out = self.buffer(id).expect("scatter-adds have buffers");
        Ok(Kernel::ScatterAdd { name: "scatter_add".into(), indices, src, out, nodes: vec![id] })
    }
}

/// Builds one loop kernel: the root node's value over its shape, with every
/// producer that has no buffer inlined.
struct LoopBuilder<'b, 'g> {
    b: &'b Builder<'g>,
    root: NodeId,
    vars: usize,
    exprs: Vec<Typed>,
    memo: HashMap<(NodeId, Logical), ExprId>,
    nodes: BTreeSet<NodeId>,
}

impl<'b, 'g> LoopBuilder<'b, 'g> {
    fn new(b: &'b Builder<'g>, root: NodeId) -> Self {
        LoopBuilder { b, root, vars: 0, exprs: Vec::new(), memo: HashMap::new(), nodes: BTreeSet::new() }
    }

    fn finish(mut self) -> R<LoopKernel> {
        let graph = self.b.graph;
        let node = graph.node(self.root);
        let domain = node.ty.shape.clone();
        let out = self.b.buffer(self.root).expect("kernel roots have buffers");
        let (reduce, reduction, value) = match &node.op {
            Op::Reduce { op, axes } => {
                let input = node.inputs[0];
                let in_shape = graph.ty(input).shape.clone();
                let reduce: Vec<usize> = axes.iter().map(|&a| in_shape[a]).collect();
                self.vars = domain.len() + reduce.len();
                let mut logical = Vec::new();
                let (mut kept, mut reduced) = (0, domain.len());
                for a in 0..in_shape.len() {
                    if axes.contains(&a) {
                        logical.push(Affine::var(reduced, self.vars));
                        reduced += 1;
                    } else {
                        logical.push(Affine::var(kept, self.vars));
                        kept += 1;
                    }
                }
                let v = self.expr(input, &logical)?;
                self.nodes.insert(self.root);
                let acc = self.push(Expr::Accumulated, node.ty.dtype);
                (reduce, Some(Reduction { op: *op, value: v }), acc)
            }
            _ => {
                self.vars = domain.len();
                let logical = identity(domain.len(), 0, self.vars);
                let v = self.op_expr(self.root, &logical)?;
                (Vec::new(), None, v)
            }
        };
        let name = self.name();
        let nodes = self.nodes.into_iter().collect();
        Ok(LoopKernel { name, domain, reduce, exprs: self.exprs, reduction, outputs: vec![(out, value)], nodes })
    }

    /// `sub.exp.reduce_sum`: the computing ops fused here, in graph order.
    fn name(&self) -> String {
        let graph = self.b.graph;
        let mut names: Vec<&str> = Vec::new();
        for id in &self.nodes {
            let op = &graph.node(*id).op;
            let view = matches!(
                op,
                Op::Broadcast { .. } | Op::Reshape | Op::Permute { .. } | Op::Slice { .. } | Op::Const { .. }
            );
            if !view && names.last() != Some(&op.name()) {
                names.push(op.name());
            }
        }
        if names.is_empty() {
            names.push(graph.node(self.root).op.name());
        }
        if names.len() > 5 {
            let n = names.len();
            let mut short = names[..2].to_vec();
            short.push("..");
            short.extend_from_slice(&names[n - 2..]);
            names = short;
        }
        names.join(".")
    }

    fn push(&mut self, expr: Expr, dtype: DType) -> ExprId {
        self.exprs.push(Typed { expr, dtype });
        ExprId(self.exprs.len() as u32 - 1)
    }

    /// The value of `id` at `logical`: a load if it has a buffer, else its op.
    fn expr(&mut self, id: NodeId, logical: &Logical) -> R<ExprId> {
        if let Some(&e) = self.memo.get(&(id, logical.clone())) {
            return Ok(e);
        }
        let e = match self.b.buffer(id) {
            Some(buffer) => {
                let map = flat(&self.b.graph.ty(id).shape, logical, self.vars).to_map();
                self.push(Expr::Load { buffer, index: map }, self.b.graph.ty(id).dtype)
            }
            None => self.op_expr(id, logical)?,
        };
        self.memo.insert((id, logical.clone()), e);
        Ok(e)
    }

    /// The value of `id` at `logical` computed from its operands.
    fn op_expr(&mut self, id: NodeId, logical: &Logical) -> R<ExprId> {
        let graph = self.b.graph;
        let node = graph.node(id);
        self.nodes.insert(id);
        let dtype = node.ty.dtype;
        let vars = self.vars;
        let x = node.inputs.first().copied();
        let shape_of = |n: NodeId| graph.ty(n).shape.clone();
        Ok(match (&node.op, x) {
            (Op::Const { value }, _) => self.push(Expr::Const(*value), dtype),
            (Op::Iota { axis }, _) => self.push(Expr::Index(logical[*axis].to_map()), dtype),
            (Op::RandomUniform { key }, _) => {
                let counter = flat(&node.ty.shape, logical, vars).to_map();
                self.push(Expr::Random { key: *key, counter }, dtype)
            }
            (Op::Unary(u), Some(x)) => {
                let a = self.expr(x, logical)?;
                self.push(Expr::Unary(*u, a), dtype)
            }
            (Op::Binary(op), Some(x)) => {
                let a = self.expr(x, logical)?;
                let b = self.expr(node.inputs[1], logical)?;
                self.push(Expr::Binary(*op, a, b), dtype)
            }
            (Op::Select, Some(c)) => {
                let c = self.expr(c, logical)?;
                let a = self.expr(node.inputs[1], logical)?;
                let b = self.expr(node.inputs[2], logical)?;
                self.push(Expr::Select(c, a, b), dtype)
            }
            (Op::Cast, Some(x)) => {
                let a = self.expr(x, logical)?;
                self.push(Expr::Cast(a), dtype)
            }
            (Op::Broadcast { dims }, Some(x)) => self.expr(x, &through_broadcast(logical, dims, &shape_of(x), vars))?,
            (Op::Permute { perm }, Some(x)) => self.expr(x, &through_permute(logical, perm))?,
            (Op::Slice { axis, start, .. }, Some(x)) => self.expr(x, &through_slice(logical, *axis, *start))?,
            (Op::Reshape, Some(x)) => match self.b.buffer(x) {
                Some(buffer) => {
                    let map = flat(&node.ty.shape, logical, vars).to_map();
                    self.push(Expr::Load { buffer, index: map }, dtype)
                }
                None => match through_reshape(logical, &node.ty.shape, &shape_of(x), vars) {
                    Some(l) => self.expr(x, &l)?,
                    None => return Err(Failure::NeedsBuffer(x)),
                },
            },
            (Op::Pad { axis, lo, value, .. }, Some(x)) => {
                let buffer = self.b.buffer(x).ok_or(Failure::NeedsBuffer(x))?;
                let size = graph.ty(x).shape[*axis] as i64;
                let inner = through_slice(logical, *axis, 0);
                let mut shifted = inner.clone();
                shifted[*axis] = inner[*axis].shifted(-(*lo as i64));
                let index = flat(&shape_of(x), &shifted, vars).to_map();
                let bound = logical[*axis].to_map();
                let (lo, hi) = (*lo as i64, *lo as i64 + size);
                self.push(Expr::LoadIf { buffer, index, bound, lo, hi, default: *value }, dtype)
            }
            (Op::Concat { axis }, Some(_)) => self.concat(id, *axis, logical)?,
            _ => {
                return Err(Failure::Error(super::FuseError(format!(
                    "{} ({}) cannot be inlined into a loop kernel (internal error)",
                    id,
                    node.op.name()
                ))));
            }
        })
    }

    /// Each operand covers a range of the axis: guarded loads chosen by the
    /// index, last operand first.
    fn concat(&mut self, id: NodeId, axis: usize, logical: &Logical) -> R<ExprId> {
        let graph = self.b.graph;
        let node = graph.node(id);
        let dtype = node.ty.dtype;
        let bound = logical[axis].to_map();
        let mut starts = Vec::new();
        let mut at = 0i64;
        for &x in &node.inputs {
            starts.push(at);
            at += graph.ty(x).shape[axis] as i64;
        }
        let mut result: Option<ExprId> = None;
        for (j, &x) in node.inputs.iter().enumerate().rev() {
            let buffer = self.b.buffer(x).ok_or(Failure::NeedsBuffer(x))?;
            let (lo, hi) = (starts[j], starts[j] + graph.ty(x).shape[axis] as i64);
            let mut shifted = logical.clone();
            shifted[axis] = logical[axis].shifted(-lo);
            let index = flat(&graph.ty(x).shape, &shifted, self.vars).to_map();
            let load = self.push(Expr::LoadIf { buffer, index, bound: bound.clone(), lo, hi, default: 0.0 }, dtype);
            result = Some(match result {
                None => load,
                Some(rest) => {
                    let position = self.push(Expr::Index(bound.clone()), DType::I32);
                    let end = self.push(Expr::Const(hi as f64), DType::I32);
                    let inside = self.push(Expr::Binary(BinaryOp::Lt, position, end), DType::Bool);
                    self.push(Expr::Select(inside, load, rest), dtype)
                }
            });
        }
        result.ok_or_else(|| Failure::Error(super::FuseError("concat of nothing".into())))
    }
}
