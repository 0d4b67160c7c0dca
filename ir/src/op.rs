//! The primitive operations. Everything else — softmax, layer norm, attention,
//! cross-entropy — is built from these, in the language's prelude.
//!
//! Binary and select operands have identical types: broadcasting is always an
//! explicit `broadcast` node, so every pass and backend sees exactly where data
//! is replicated. The one exception is `matmul`, whose right operand may be a
//! plain matrix shared by every batch (the `x[B,T,d] @ W[d,e]` of every
//! projection), because materialising that broadcast would be absurd.

/// How a parameter is initialised. Random initialisers draw from a stream keyed
/// by the run's seed and the parameter's path, so the same seed gives the same
/// bits whatever order parameters are created in.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// Gaussian with the given mean and standard deviation.
    Normal { mean: f64, std: f64 },
    /// Uniform on the half-open interval [lo, hi).
    Uniform { lo: f64, hi: f64 },
    /// Every element equal to `value` (zeros, ones).
    Const { value: f64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Recip,
    Tanh,
    Sin,
    Cos,
    Abs,
    /// Logical not, on bool only.
    Not,
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 11] = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Recip,
        UnaryOp::Tanh,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Abs,
        UnaryOp::Not,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Recip => "recip",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Abs => "abs",
            UnaryOp::Not => "not",
        }
    }

    pub fn from_name(name: &str) -> Option<UnaryOp> {
        UnaryOp::ALL.into_iter().find(|u| u.name() == name)
    }

    /// True for the transcendental ops that are only defined on floats.
    pub fn needs_float(self) -> bool {
        !matches!(self, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Not)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 15] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Pow,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Gt,
        BinaryOp::Ge,
        BinaryOp::Eq,
        BinaryOp::Ne,
        BinaryOp::And,
        BinaryOp::Or,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::Pow => "pow",
            BinaryOp::Lt => "lt",
            BinaryOp::Le => "le",
            BinaryOp::Gt => "gt",
            BinaryOp::Ge => "ge",
            BinaryOp::Eq => "eq",
            BinaryOp::Ne => "ne",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
        }
    }

    pub fn from_name(name: &str) -> Option<BinaryOp> {
        BinaryOp::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Comparisons produce bool from numeric operands.
    pub fn is_comparison(self) -> bool {
        matches!(self, BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Eq | BinaryOp::Ne)
    }

    pub fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Max,
}

impl ReduceOp {
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "reduce_sum",
            ReduceOp::Max => "reduce_max",
        }
    }
}

/// One primitive operation. Attributes that the result type already fixes
/// (the target shape of `reshape` and `broadcast`, the dtype of `cast`, the
/// type of leaves) are not repeated here: they live in the node's type.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A value fed in each step (token ids, targets), by name.
    Input {
        name: String,
    },
    /// A trainable parameter, named by its path (`layers.3.attn.q.weight`).
    Param {
        path: String,
        init: Init,
    },
    /// A scalar value splatted to the node's type.
    Const {
        value: f64,
    },
    /// Each element is its own index along `axis`.
    Iota {
        axis: usize,
    },
    /// Uniform [0, 1) numbers from a counter-based stream keyed by
    /// (run seed, step, `key`, element index): reproducible and resumable.
    RandomUniform {
        key: u64,
    },
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// `select c, a, b`: where `c` is true take `a`, else `b`.
    Select,
    /// Reduce over the listed axes (strictly increasing); they are removed.
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
    },
    /// Same elements in row-major order, new shape (the node's).
    Reshape,
    /// Output axis `i` is input axis `perm[i]`.
    Permute {
        perm: Vec<usize>,
    },
    /// Input axis `i` becomes output axis `dims[i]` (strictly increasing);
    /// an input axis of size 1 may be stretched; other output axes are new.
    Broadcast {
        dims: Vec<usize>,
    },
    /// Elements `start..end` along `axis`.
    Slice {
        axis: usize,
        start: usize,
        end: usize,
    },
    /// Operands joined along `axis`.
    Concat {
        axis: usize,
    },
    /// `lo` elements of `value` before and `hi` after, along `axis`.
    Pad {
        axis: usize,
        lo: usize,
        hi: usize,
        value: f64,
    },
    /// `[..., m, k] x [..., k, n] -> [..., m, n]`; the right operand may also be
    /// a plain `[k, n]` matrix shared by every batch.
    MatMul,
    /// `gather table[n, r...], idx:i32[i...] -> [i..., r...]`: rows of `table`.
    Gather,
    /// `scatter_add idx:i32[i...], src[i..., r...] -> [n, r...]`: the adjoint of
    /// gather; rows of `src` summed into a zero tensor at the rows `idx` names.
    ScatterAdd,
    /// Convert elements to the node's dtype.
    Cast,
    /// Scaled dot-product attention over the last two axes:
    /// `softmax(q·kᵀ·scale)·v` with q `[.., tq, d]`, k `[.., tk, d]`,
    /// v `[.., tk, dv]` (equal batch axes) giving `[.., tq, dv]`. With
    /// `causal`, query `i` sees keys `j <= i` only (and `tq = tk`). Not
    /// written by users: the `attention` pass puts it in place of its
    /// primitive form so that backends can run it without the `tq × tk`
    /// scores in memory.
    Attention {
        scale: f64,
        causal: bool,
    },
    /// The gradient of [`Op::Attention`] with respect to its operand `wrt`
    /// (0 = q, 1 = k, 2 = v). Operands: q, k, v, the attention's value and
    /// the gradient of that value; the result has operand `wrt`'s type.
    AttentionGrad {
        scale: f64,
        causal: bool,
        wrt: usize,
    },
}

impl Op {
    /// The mnemonic used in the text form.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param { .. } => "param",
            Op::Const { .. } => "const",
            Op::Iota { .. } => "iota",
            Op::RandomUniform { .. } => "random_uniform",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Select => "select",
            Op::Reduce { op, .. } => op.name(),
            Op::Reshape => "reshape",
            Op::Permute { .. } => "permute",
            Op::Broadcast { .. } => "broadcast",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::Pad { .. } => "pad",
            Op::MatMul => "matmul",
            Op::Gather => "gather",
            Op::ScatterAdd => "scatter_add",
            Op::Cast => "cast",
            Op::Attention { .. } => "attention",
            Op::AttentionGrad { .. } => "attention_grad",
        }
    }

    /// Leaves take no operands; their type is given by the node.
    pub fn is_leaf(&self) -> bool {
        matches!(
            self,
            Op::Input { .. } | Op::Param { .. } | Op::Const { .. } | Op::Iota { .. } | Op::RandomUniform { .. }
        )
    }

    /// Ops whose result type cannot be computed from the operands alone and so
    /// must be given when the node is built (and is checked, not inferred).
    pub fn needs_result_type(&self) -> bool {
        self.is_leaf() || matches!(self, Op::Reshape | Op::Broadcast { .. } | Op::ScatterAdd | Op::Cast)
    }
}
