//! The e-graph language: lpac's ops as e-nodes, with their attributes kept
//! inline so rewrites can read and compute them, and the analysis that gives
//! every e-class its tensor type and, where known, its splat constant value.
//!
//! Leaves other than `const` (input, param, iota, random_uniform) are opaque:
//! `Leaf(i)` stands for node `%i` of the original graph, whose op and type the
//! analysis remembers. A `const` is a real e-node (value and type), so equal
//! constants are one e-class and folding can see them.

use egg::{Analysis, DidMerge, EGraph, Id, Language};
use lpac_ir::interp::real::{Rounding, narrow_format, round_to_format};
use lpac_ir::typing::result_type;
use lpac_ir::{BinaryOp, DType, Graph, Node, Op, ReduceOp, TensorType, UnaryOp};

/// One e-node. Op codes of unary and binary ops are indices into
/// [`UnaryOp::ALL`] and [`BinaryOp::ALL`] (the IR's op enums are not `Ord`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Term {
    /// Original node `%i`: an input, parameter, iota or random_uniform.
    Leaf(u32),
    /// `const`: the f64 bits of the value as written, and the node's type.
    Const {
        bits: u64,
        dtype: DType,
        shape: Box<[usize]>,
    },
    Unary(u8, [Id; 1]),
    Binary(u8, [Id; 2]),
    Select([Id; 3]),
    Reduce {
        max: bool,
        axes: Box<[usize]>,
        x: [Id; 1],
    },
    /// The target shape (the dtype is the operand's).
    Reshape {
        shape: Box<[usize]>,
        x: [Id; 1],
    },
    Permute {
        perm: Box<[usize]>,
        x: [Id; 1],
    },
    /// `dims` and the target shape.
    Broadcast {
        dims: Box<[usize]>,
        shape: Box<[usize]>,
        x: [Id; 1],
    },
    Slice {
        axis: usize,
        start: usize,
        end: usize,
        x: [Id; 1],
    },
    Concat {
        axis: usize,
        xs: Box<[Id]>,
    },
    /// The padding value as f64 bits.
    Pad {
        axis: usize,
        lo: usize,
        hi: usize,
        value: u64,
        x: [Id; 1],
    },
    MatMul([Id; 2]),
    Gather([Id; 2]),
    /// The result shape.
    ScatterAdd {
        shape: Box<[usize]>,
        x: [Id; 2],
    },
    Cast {
        dtype: DType,
        x: [Id; 1],
    },
    /// The scale as f64 bits.
    Attention {
        scale: u64,
        causal: bool,
        x: [Id; 3],
    },
    AttentionGrad {
        scale: u64,
        causal: bool,
        wrt: usize,
        x: [Id; 5],
    },
}

pub fn unary_code(u: UnaryOp) -> u8 {
    UnaryOp::ALL.iter().position(|&v| v == u).unwrap_or(0) as u8
}

pub fn binary_code(b: BinaryOp) -> u8 {
    BinaryOp::ALL.iter().position(|&v| v == b).unwrap_or(0) as u8
}

pub fn unary_op(code: u8) -> UnaryOp {
    UnaryOp::ALL[code as usize]
}

pub fn binary_op(code: u8) -> BinaryOp {
    BinaryOp::ALL[code as usize]
}

impl Term {
    /// The e-node for original node `%index` with its operands' e-classes.
    pub fn from_node(index: usize, node: &Node, kids: &[Id]) -> Term {
        let one = |i: usize| [kids[i]];
        let two = || [kids[0], kids[1]];
        match &node.op {
            Op::Input { .. } | Op::Param { .. } | Op::Iota { .. } | Op::RandomUniform { .. } => {
                Term::Leaf(index as u32)
            }
            Op::Const { value } => Term::constant(*value, &node.ty),
            Op::Unary(u) => Term::Unary(unary_code(*u), one(0)),
            Op::Binary(b) => Term::Binary(binary_code(*b), two()),
            Op::Select => Term::Select([kids[0], kids[1], kids[2]]),
            Op::Reduce { op, axes } => Term::Reduce { max: *op == ReduceOp::Max, axes: axes.clone().into(), x: one(0) },
            Op::Reshape => Term::Reshape { shape: node.ty.shape.clone().into(), x: one(0) },
            Op::Permute { perm } => Term::Permute { perm: perm.clone().into(), x: one(0) },
            Op::Broadcast { dims } => {
                Term::Broadcast { dims: dims.clone().into(), shape: node.ty.shape.clone().into(), x: one(0) }
            }
            Op::Slice { axis, start, end } => Term::Slice { axis: *axis, start: *start, end: *end, x: one(0) },
            Op::Concat { axis } => Term::Concat { axis: *axis, xs: kids.into() },
            Op::Pad { axis, lo, hi, value } => {
                Term::Pad { axis: *axis, lo: *lo, hi: *hi, value: value.to_bits(), x: one(0) }
            }
            Op::MatMul => Term::MatMul(two()),
            Op::Gather => Term::Gather(two()),
            Op::ScatterAdd => Term::ScatterAdd { shape: node.ty.shape.clone().into(), x: two() },
            Op::Cast => Term::Cast { dtype: node.ty.dtype, x: one(0) },
            Op::Attention { scale, causal } => {
                Term::Attention { scale: scale.to_bits(), causal: *causal, x: [kids[0], kids[1], kids[2]] }
            }
            Op::AttentionGrad { scale, causal, wrt } => Term::AttentionGrad {
                scale: scale.to_bits(),
                causal: *causal,
                wrt: *wrt,
                x: [kids[0], kids[1], kids[2], kids[3], kids[4]],
            },
        }
    }

    /// A splat constant of type `ty`.
    pub fn constant(value: f64, ty: &TensorType) -> Term {
        Term::Const { bits: value.to_bits(), dtype: ty.dtype, shape: ty.shape.clone().into() }
    }

    /// The IR op, with `graph` giving the op of opaque leaves.
    pub fn to_op(&self, graph: &Graph) -> Op {
        match self {
            Term::Leaf(i) => graph.nodes[*i as usize].op.clone(),
            Term::Const { bits, .. } => Op::Const { value: f64::from_bits(*bits) },
            Term::Unary(u, _) => Op::Unary(unary_op(*u)),
            Term::Binary(b, _) => Op::Binary(binary_op(*b)),
            Term::Select(_) => Op::Select,
            Term::Reduce { max, axes, .. } => {
                Op::Reduce { op: if *max { ReduceOp::Max } else { ReduceOp::Sum }, axes: axes.to_vec() }
            }
            Term::Reshape { .. } => Op::Reshape,
            Term::Permute { perm, .. } => Op::Permute { perm: perm.to_vec() },
            Term::Broadcast { dims, .. } => Op::Broadcast { dims: dims.to_vec() },
            Term::Slice { axis, start, end, .. } => Op::Slice { axis: *axis, start: *start, end: *end },
            Term::Concat { axis, .. } => Op::Concat { axis: *axis },
            Term::Pad { axis, lo, hi, value, .. } => {
                Op::Pad { axis: *axis, lo: *lo, hi: *hi, value: f64::from_bits(*value) }
            }
            Term::MatMul(_) => Op::MatMul,
            Term::Gather(_) => Op::Gather,
            Term::ScatterAdd { .. } => Op::ScatterAdd,
            Term::Cast { .. } => Op::Cast,
            Term::Attention { scale, causal, .. } => Op::Attention { scale: f64::from_bits(*scale), causal: *causal },
            Term::AttentionGrad { scale, causal, wrt, .. } => {
                Op::AttentionGrad { scale: f64::from_bits(*scale), causal: *causal, wrt: *wrt }
            }
        }
    }

    /// The mnemonic, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Term::Leaf(_) => "leaf",
            Term::Const { .. } => "const",
            Term::Unary(u, _) => unary_op(*u).name(),
            Term::Binary(b, _) => binary_op(*b).name(),
            Term::Select(_) => "select",
            Term::Reduce { max: true, .. } => "reduce_max",
            Term::Reduce { .. } => "reduce_sum",
            Term::Reshape { .. } => "reshape",
            Term::Permute { .. } => "permute",
            Term::Broadcast { .. } => "broadcast",
            Term::Slice { .. } => "slice",
            Term::Concat { .. } => "concat",
            Term::Pad { .. } => "pad",
            Term::MatMul(_) => "matmul",
            Term::Gather(_) => "gather",
            Term::ScatterAdd { .. } => "scatter_add",
            Term::Cast { .. } => "cast",
            Term::Attention { .. } => "attention",
            Term::AttentionGrad { .. } => "attention_grad",
        }
    }

    /// The same op with no operands (for comparing ops).
    fn op_key(&self) -> Term {
        let z = Id::from(0usize);
        let mut t = self.clone();
        for c in t.children_mut() {
            *c = z;
        }
        t
    }
}

impl Language for Term {
    type Discriminant = std::mem::Discriminant<Term>;

    fn discriminant(&self) -> Self::Discriminant {
        std::mem::discriminant(self)
    }

    fn matches(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.children().len() == other.children().len()
            && self.op_key() == other.op_key()
    }

    fn children(&self) -> &[Id] {
        match self {
            Term::Leaf(_) | Term::Const { .. } => &[],
            Term::Unary(_, x)
            | Term::Reduce { x, .. }
            | Term::Reshape { x, .. }
            | Term::Permute { x, .. }
            | Term::Broadcast { x, .. }
            | Term::Slice { x, .. }
            | Term::Pad { x, .. }
            | Term::Cast { x, .. } => x,
            Term::Binary(_, x) | Term::MatMul(x) | Term::Gather(x) | Term::ScatterAdd { x, .. } => x,
            Term::Select(x) | Term::Attention { x, .. } => x,
            Term::AttentionGrad { x, .. } => x,
            Term::Concat { xs, .. } => xs,
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            Term::Leaf(_) | Term::Const { .. } => &mut [],
            Term::Unary(_, x)
            | Term::Reduce { x, .. }
            | Term::Reshape { x, .. }
            | Term::Permute { x, .. }
            | Term::Broadcast { x, .. }
            | Term::Slice { x, .. }
            | Term::Pad { x, .. }
            | Term::Cast { x, .. } => x,
            Term::Binary(_, x) | Term::MatMul(x) | Term::Gather(x) | Term::ScatterAdd { x, .. } => x,
            Term::Select(x) | Term::Attention { x, .. } => x,
            Term::AttentionGrad { x, .. } => x,
            Term::Concat { xs, .. } => xs,
        }
    }
}

/// What every e-class knows: its type, and its value when every element is
/// the same known constant.
#[derive(Clone, Debug, PartialEq)]
pub struct Data {
    pub ty: TensorType,
    /// The splat value as the interpreter holds it (see [`stored`]).
    pub konst: Option<f64>,
}

/// The analysis: types of the opaque leaves, by original node index.
pub struct Types {
    pub leaf_types: Vec<Option<TensorType>>,
}

pub type EG = EGraph<Term, Types>;

impl Types {
    pub fn new(graph: &Graph) -> Types {
        let leaf_types = graph.nodes.iter().map(|n| n.op.is_leaf().then(|| n.ty.clone())).collect();
        Types { leaf_types }
    }
}

/// The value an element of a `dtype` constant written as `value` has in an
/// f64 run of the interpreter: i32 truncates (saturating, NaN to 0), bool is
/// `value != 0`, bf16/f16 round to nearest even, f32 keeps the f64 value.
pub fn stored(dtype: DType, value: f64) -> f64 {
    match dtype {
        DType::I32 => (value as i32) as f64,
        DType::Bool => f64::from(u8::from(value != 0.0)),
        DType::F32 => value,
        DType::BF16 | DType::F16 => match narrow_format(dtype) {
            Some(format) => round_to_format(value, format, Rounding::NearestEven),
            None => value,
        },
    }
}

/// Two constant values are the same value (NaNs are one value; the zeros
/// are equal, as `==` says).
pub fn same_value(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// The type of `term` given its operands' classes, by the IR's one set of
/// type rules; `slot` overrides the type of one operand (for a term whose
/// operand is not in the e-graph yet).
pub fn type_of(egraph: &EG, term: &Term, slot: Option<(usize, &TensorType)>) -> Result<TensorType, String> {
    match term {
        Term::Leaf(i) => egraph
            .analysis
            .leaf_types
            .get(*i as usize)
            .cloned()
            .flatten()
            .ok_or_else(|| format!("leaf %{i} is not a leaf of the graph")),
        Term::Const { dtype, shape, .. } => Ok(TensorType::new(*dtype, shape.to_vec())),
        _ => {
            let kids = term.children();
            let types: Vec<&TensorType> = kids
                .iter()
                .enumerate()
                .map(|(i, &c)| match slot {
                    Some((s, ty)) if s == i => ty,
                    _ => &egraph[c].data.ty,
                })
                .collect();
            let given = match term {
                Term::Reshape { shape, .. } | Term::Broadcast { shape, .. } => {
                    Some(TensorType::new(types[0].dtype, shape.to_vec()))
                }
                Term::ScatterAdd { shape, .. } => Some(TensorType::new(types[1].dtype, shape.to_vec())),
                Term::Cast { dtype, .. } => Some(TensorType::new(*dtype, types[0].shape.clone())),
                _ => None,
            };
            result_type(&term.to_op_standalone(), &types, given.as_ref())
        }
    }
}

impl Term {
    /// The op of a non-leaf term (leaves need the graph: see [`Term::to_op`]).
    fn to_op_standalone(&self) -> Op {
        match self {
            Term::Leaf(_) => Op::Input { name: String::new() },
            // `to_op` reads the graph only for leaves.
            _ => self.to_op(&Graph::new("")),
        }
    }
}

/// The splat value of a class made by `term`, where the analysis can see it
/// without arithmetic: constants, and data movement of splats. Arithmetic on
/// constants is left to the folding rules, so that folding shows up in the
/// report under its own names.
fn konst_of(egraph: &EG, term: &Term, ty: &TensorType) -> Option<f64> {
    let k = |id: Id| egraph[id].data.konst;
    match term {
        Term::Const { bits, dtype, .. } => Some(stored(*dtype, f64::from_bits(*bits))),
        Term::Reshape { x, .. } | Term::Permute { x, .. } | Term::Broadcast { x, .. } | Term::Slice { x, .. } => {
            k(x[0])
        }
        Term::Pad { value, x, .. } => {
            let v = k(x[0])?;
            same_value(v, stored(ty.dtype, f64::from_bits(*value))).then_some(v)
        }
        Term::Concat { xs, .. } => {
            let v = k(xs[0])?;
            xs.iter().all(|&c| k(c).is_some_and(|w| same_value(v, w))).then_some(v)
        }
        Term::Cast { dtype, x } => {
            let v = k(x[0])?;
            Some(cast_value(v, egraph[x[0]].data.ty.dtype, *dtype))
        }
        _ => None,
    }
}

/// The interpreter's `cast` of one element.
pub fn cast_value(v: f64, from: DType, to: DType) -> f64 {
    match to {
        DType::I32 if from.is_float() => (v as i32) as f64,
        DType::I32 => v,
        DType::Bool => f64::from(u8::from(v != 0.0)),
        _ => stored(to, v),
    }
}

impl Analysis<Term> for Types {
    type Data = Data;

    fn make(egraph: &mut EG, enode: &Term, _id: Id) -> Data {
        // Every term added is type-checked first (the graph by the verifier,
        // rewrites before they add anything), so this cannot fail.
        let ty = type_of(egraph, enode, None)
            .unwrap_or_else(|e| panic!("simplify: ill-typed `{}` reached the e-graph: {e}", enode.name()));
        let konst = konst_of(egraph, enode, &ty);
        Data { ty, konst }
    }

    fn merge(&mut self, a: &mut Data, b: Data) -> DidMerge {
        debug_assert_eq!(a.ty, b.ty, "simplify merged classes of different types");
        match (a.konst, b.konst) {
            (None, Some(v)) => {
                a.konst = Some(v);
                DidMerge(true, false)
            }
            (Some(_), None) => DidMerge(false, true),
            // Two known values: equal unless a rule accepted a sign-of-zero
            // difference (add-zero); keep the first.
            _ => DidMerge(false, false),
        }
    }
}
