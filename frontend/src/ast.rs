//! The syntax tree of a model file. Every node carries the [`Span`] of the
//! source text it was parsed from, so every later error can point at it.

use crate::source::Span;

/// A whole `.lpa` file (or the prelude): its items in source order.
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `config { name = expr ... }`: overridable compile-time values.
    Config(Vec<ConfigEntry>),
    /// `block name(args) { body }`: a reusable piece of model.
    Block(BlockDef),
    /// `model name(inputs) { body }`: the model itself; its arguments are the
    /// tensors fed in each step, its result is the loss.
    Model(ModelDef),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConfigEntry {
    pub name: Ident,
    pub value: Expr,
    /// The comment on the same line, if any: shown in `--help`-like listings.
    pub doc: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BlockDef {
    pub name: Ident,
    pub params: Vec<BlockParam>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

/// A block argument: `x` or `bias = true` (a default makes it optional).
#[derive(Clone, Debug, PartialEq)]
pub struct BlockParam {
    pub name: Ident,
    pub default: Option<Expr>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelDef {
    pub name: Ident,
    pub inputs: Vec<InputDecl>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

/// `tokens: i32[batch, seq]`
#[derive(Clone, Debug, PartialEq)]
pub struct InputDecl {
    pub name: Ident,
    pub ty: TypeExpr,
}

/// `f32[d, 4 * d]` or, where the dtype defaults to f32, `[d, 4 * d]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    pub dtype: Option<Ident>,
    pub dims: Vec<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `name = expr`: binds or rebinds a local name.
    Assign { name: Ident, value: Expr },
    /// `param name: [dims] = init(...)`: declares a trainable parameter at the
    /// current scope path plus `name`, and binds `name` to it.
    Param { name: Ident, ty: TypeExpr, init: Expr, span: Span },
    /// `if cond { ... } else { ... }` on a compile-time bool. `else if` chains
    /// are an `If` as the only statement of the else branch.
    If { cond: Expr, then_body: Vec<Stmt>, else_body: Vec<Stmt>, span: Span },
    /// `for i in start..end { ... }` over compile-time integers.
    For { var: Ident, start: Expr, end: Expr, body: Vec<Stmt>, span: Span },
    /// `return expr`
    Return { value: Expr, span: Span },
    /// `assert cond, "message"`: a compile-time check.
    Assert { cond: Expr, message: Option<String>, span: Span },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Name(String),
    /// `[a, b, c]`: shapes, permutations, lists of tensors.
    List(Vec<Expr>),
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `callee(args)` or, to put the parameters the block declares under a
    /// sub-scope, `callee[scope.path](args)`.
    Call {
        callee: Ident,
        scope: Option<ScopePath>,
        args: Vec<Arg>,
    },
}

/// `attn`, `layers.i` — segments of a parameter path. A segment that names a
/// loop variable is replaced by its value (`layers.i` → `layers.3`).
#[derive(Clone, Debug, PartialEq)]
pub struct ScopePath {
    pub segments: Vec<Ident>,
    pub span: Span,
}

/// A call argument, positional (`x`) or by name (`axis=-1`).
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Not,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    /// `@`: matrix product.
    MatMul,
    /// `**`: power.
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

impl BinOp {
    /// The operator as written in source, for messages.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::MatMul => "@",
            BinOp::Pow => "**",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::And => "and",
            BinOp::Or => "or",
        }
    }
}
