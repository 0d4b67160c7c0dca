//! The staged evaluator: runs a model file at compile time and builds the
//! graph as it goes. Numbers, lists and conditions are computed on the spot;
//! every tensor operation adds a node. Errors become diagnostics and the value
//! `Poison`, so evaluation continues and independent mistakes are all reported.

use std::collections::{HashMap, HashSet};

use lpac_ir::{BinaryOp, DType, Op, Origin, TensorType, UnaryOp};

use crate::ast::{self, BinOp, Expr, ExprKind, Stmt};
use crate::build::{GraphBuilder, Site};
use crate::builtins;
use crate::diagnostic::Diagnostic;
use crate::source::{SourceMap, Span};
use crate::value::{TensorVal, Value};

/// Block calls nested deeper than this are taken to be runaway recursion.
const MAX_CALL_DEPTH: usize = 200;
/// A single `for` loop may run at most this many times.
const MAX_LOOP_ITERATIONS: i64 = 100_000;

/// The state of one block activation.
pub struct Frame {
    vars: HashMap<String, Value>,
    loop_vars: HashSet<String>,
    /// The parameter path prefix (`layers.3.attn`).
    scope: Vec<String>,
    /// The innermost call site in the user's file: provenance for nodes built
    /// inside prelude blocks.
    user_site: Option<Span>,
    /// Blocks being evaluated, outermost first, with their call sites.
    calls: Vec<(String, Span)>,
    /// Whether config keys are visible: in the model and user blocks, not in
    /// prelude blocks (which see only their arguments).
    sees_config: bool,
}

impl Frame {
    pub fn root() -> Self {
        Frame {
            vars: HashMap::new(),
            loop_vars: HashSet::new(),
            scope: Vec::new(),
            user_site: None,
            calls: Vec::new(),
            sees_config: true,
        }
    }

    pub fn bind(&mut self, name: &str, value: Value) {
        self.vars.insert(name.to_string(), value);
    }
}

enum Flow {
    Next,
    Return(Value),
}

pub struct Evaluator<'a> {
    pub sources: &'a SourceMap,
    /// Blocks the prelude's code calls (the prelude's own).
    pub prelude_blocks: HashMap<String, &'a ast::BlockDef>,
    /// The user's blocks, which the user's code calls first.
    pub user_blocks: HashMap<String, &'a ast::BlockDef>,
    pub config: HashMap<String, Value>,
    pub builder: GraphBuilder,
    pub diagnostics: Vec<Diagnostic>,
    param_paths: HashMap<String, Span>,
    /// Errors already reported, by place and message, with how often each
    /// recurred (a mistake inside a block called in a loop happens per call).
    seen_errors: HashMap<(Span, String), (usize, usize)>,
    /// Call sites already reported for declaring a parameter twice (one
    /// message per call, not one per parameter the block declares).
    duplicate_sites: HashSet<Span>,
    depth: usize,
}

impl<'a> Evaluator<'a> {
    pub fn new(sources: &'a SourceMap, model_name: &str) -> Self {
        Evaluator {
            sources,
            prelude_blocks: HashMap::new(),
            user_blocks: HashMap::new(),
            config: HashMap::new(),
            builder: GraphBuilder::new(model_name),
            diagnostics: Vec::new(),
            param_paths: HashMap::new(),
            seen_errors: HashMap::new(),
            duplicate_sites: HashSet::new(),
            depth: 0,
        }
    }

    // ---- errors and places ------------------------------------------------

    /// Records an error at `span` (with the chain of block calls that led
    /// there) and returns `Poison`.
    pub fn error(&mut self, frame: &Frame, span: Span, message: impl Into<String>) -> Value {
        self.report(frame, Diagnostic::error(span, message))
    }

    pub fn report(&mut self, frame: &Frame, diagnostic: Diagnostic) -> Value {
        let key = (diagnostic.span, diagnostic.message.clone());
        if let Some((_, repeats)) = self.seen_errors.get_mut(&key) {
            *repeats += 1;
            return Value::Poison;
        }
        self.seen_errors.insert(key, (self.diagnostics.len(), 0));
        let diagnostic = self.with_call_notes(frame, diagnostic);
        self.diagnostics.push(diagnostic);
        Value::Poison
    }

    /// A point to roll errors back to (see [`Evaluator::rollback`]).
    pub fn checkpoint(&self) -> usize {
        self.diagnostics.len()
    }

    /// Forgets the errors reported since `checkpoint`: for evaluations whose
    /// result turned out not to matter (a default that `--set` replaces).
    pub fn rollback(&mut self, checkpoint: usize) {
        self.diagnostics.truncate(checkpoint);
        self.seen_errors.retain(|_, (index, _)| *index < checkpoint);
    }

    /// The diagnostics, each noting how many more times it occurred.
    pub fn finish_diagnostics(&mut self) -> Vec<Diagnostic> {
        for (index, repeats) in self.seen_errors.values() {
            if *repeats > 0 {
                let note = format!("the same error occurs {repeats} more time(s), from other calls");
                self.diagnostics[*index].notes.push(note);
            }
        }
        std::mem::take(&mut self.diagnostics)
    }

    fn with_call_notes(&self, frame: &Frame, mut d: Diagnostic) -> Diagnostic {
        const SHOWN: usize = 6;
        for (block, site) in frame.calls.iter().rev().take(SHOWN) {
            d = d.with_note(format!("in block `{}`, called at {}", block, self.sources.location(*site)));
        }
        if frame.calls.len() > SHOWN {
            d = d.with_note(format!("... and {} calls further out", frame.calls.len() - SHOWN));
        }
        d
    }

    /// Where nodes built for an expression at `span` come from.
    pub fn site(&self, frame: &Frame, span: Span) -> Site {
        let user_span = if self.sources.file(span.file).is_prelude { frame.user_site.unwrap_or(span) } else { span };
        Site { span: user_span, origin: Origin::at(self.sources.ir_span(user_span)) }
    }

    // ---- statements ---------------------------------------------------------

    /// Runs a body; returns the value of its `return`, if one ran.
    pub fn run_body(&mut self, frame: &mut Frame, body: &[Stmt]) -> Option<Value> {
        match self.exec_all(frame, body) {
            Flow::Return(v) => Some(v),
            Flow::Next => None,
        }
    }

    fn exec_all(&mut self, frame: &mut Frame, body: &[Stmt]) -> Flow {
        for stmt in body {
            if let Flow::Return(v) = self.exec(frame, stmt) {
                return Flow::Return(v);
            }
        }
        Flow::Next
    }

    fn exec(&mut self, frame: &mut Frame, stmt: &Stmt) -> Flow {
        match stmt {
            Stmt::Assign { name, value } => {
                let v = self.eval(frame, value);
                frame.bind(&name.name, v);
                Flow::Next
            }
            Stmt::Param { name, ty, init, span } => {
                let v = self.declare_param(frame, name, ty, init, *span);
                frame.bind(&name.name, v);
                Flow::Next
            }
            Stmt::If { cond, then_body, else_body, .. } => match self.eval(frame, cond) {
                Value::Bool(true) => self.exec_all(frame, then_body),
                Value::Bool(false) => self.exec_all(frame, else_body),
                Value::Poison => {
                    poison_assignments(frame, then_body.iter().chain(else_body));
                    Flow::Next
                }
                other => {
                    let msg = format!("`if` needs a compile-time bool, found {}", other.describe());
                    let d = Diagnostic::error(cond.span, msg)
                        .with_note("to choose between tensors element by element, use where(cond, a, b)");
                    self.report(frame, d);
                    poison_assignments(frame, then_body.iter().chain(else_body));
                    Flow::Next
                }
            },
            Stmt::For { var, start, end, body, .. } => self.exec_for(frame, var, start, end, body),
            Stmt::Return { value, .. } => Flow::Return(self.eval(frame, value)),
            Stmt::Assert { cond, message, span } => {
                match self.eval(frame, cond) {
                    Value::Bool(true) | Value::Poison => {}
                    Value::Bool(false) => {
                        let text = message.clone().unwrap_or_else(|| "assertion failed".to_string());
                        let source = self.sources.snippet(cond.span).to_string();
                        self.report(frame, Diagnostic::error(*span, text).with_label(format!("`{source}` is false")));
                    }
                    other => {
                        self.error(frame, cond.span, format!("`assert` needs a bool, found {}", other.describe()));
                    }
                }
                Flow::Next
            }
        }
    }

    fn exec_for(&mut self, frame: &mut Frame, var: &ast::Ident, start: &Expr, end: &Expr, body: &[Stmt]) -> Flow {
        let (lo, hi) = match (self.eval(frame, start), self.eval(frame, end)) {
            (Value::Int(lo), Value::Int(hi)) => (lo, hi),
            (Value::Poison, _) | (_, Value::Poison) => {
                frame.bind(&var.name, Value::Poison);
                poison_assignments(frame, body.iter());
                return Flow::Next;
            }
            (a, b) => {
                let msg = format!("`for` needs integer bounds, found {} and {}", a.describe(), b.describe());
                self.error(frame, start.span.to(end.span), msg);
                frame.bind(&var.name, Value::Poison);
                poison_assignments(frame, body.iter());
                return Flow::Next;
            }
        };
        let count = hi.checked_sub(lo).unwrap_or(i64::MAX);
        if count > MAX_LOOP_ITERATIONS {
            let msg = format!("this loop would run {count} times; the limit is {MAX_LOOP_ITERATIONS}");
            self.error(frame, start.span.to(end.span), msg);
            frame.bind(&var.name, Value::Poison);
            poison_assignments(frame, body.iter());
            return Flow::Next;
        }
        frame.loop_vars.insert(var.name.clone());
        for i in lo..hi {
            frame.bind(&var.name, Value::Int(i));
            if let Flow::Return(v) = self.exec_all(frame, body) {
                return Flow::Return(v);
            }
        }
        Flow::Next
    }

    fn declare_param(
        &mut self,
        frame: &Frame,
        name: &ast::Ident,
        ty: &ast::TypeExpr,
        init: &Expr,
        span: Span,
    ) -> Value {
        let Some(tensor_ty) = self.eval_type(frame, ty, DType::F32) else { return Value::Poison };
        if !tensor_ty.dtype.is_float() {
            return self.error(frame, ty.span, format!("parameters must be floats, not {}", tensor_ty.dtype));
        }
        let init = match self.eval(frame, init) {
            Value::Init(i) => i,
            Value::Poison => return Value::Poison,
            other => {
                let msg = format!("expected an initialiser such as normal(0.0, 0.02), found {}", other.describe());
                return self.error(frame, init.span, msg);
            }
        };
        let mut segments = frame.scope.clone();
        segments.push(name.name.clone());
        let path = segments.join(".");
        let site = self.site(frame, span);
        if let Some(first) = self.param_paths.get(&path).copied() {
            // Point at the user's calls, not at the block's one `param` line.
            let d = Diagnostic::error(site.span, format!("parameter `{path}` is declared twice"))
                .with_label(format!("declares `{path}` again"))
                .with_secondary(first, "first declared here")
                .with_note("give each call of a block that declares parameters its own scope: block[name](...)");
            if frame.user_site.is_some_and(|s| self.duplicate_sites.contains(&s)) {
                return Value::Poison;
            }
            self.duplicate_sites.extend(frame.user_site);
            return self.report(frame, d);
        }
        self.param_paths.insert(path.clone(), site.span);
        self.tensor_result(frame, span, |b| b.leaf(Op::Param { path, init }, tensor_ty, &site))
    }

    /// Evaluates `f32[a, b]`; `default` is the dtype when none is written.
    pub fn eval_type(&mut self, frame: &Frame, ty: &ast::TypeExpr, default: DType) -> Option<TensorType> {
        let dtype = match &ty.dtype {
            None => default,
            Some(id) => match DType::from_name(&id.name) {
                Some(d) => d,
                None => {
                    let msg = format!("unknown dtype `{}`; expected one of f32, bf16, f16, i32, bool", id.name);
                    self.error(frame, id.span, msg);
                    return None;
                }
            },
        };
        let mut shape = Vec::new();
        for dim in &ty.dims {
            match self.eval(frame, dim) {
                Value::Int(n) if n > 0 => shape.push(n as usize),
                Value::Poison => return None,
                other => {
                    let msg = format!("a dimension must be a positive integer, found {}", other.describe());
                    self.error(frame, dim.span, msg);
                    return None;
                }
            }
        }
        Some(TensorType::new(dtype, shape))
    }

    // ---- expressions -------------------------------------------------------

    pub fn eval(&mut self, frame: &Frame, expr: &Expr) -> Value {
        match &expr.kind {
            ExprKind::Int(i) => Value::Int(*i),
            ExprKind::Float(x) => Value::Float(*x),
            ExprKind::Bool(b) => Value::Bool(*b),
            ExprKind::Str(s) => Value::Str(s.clone()),
            ExprKind::Name(name) => self.lookup(frame, name, expr.span),
            ExprKind::List(items) => Value::List(items.iter().map(|e| self.eval(frame, e)).collect()),
            ExprKind::Unary { op, operand } => {
                let v = self.eval(frame, operand);
                self.unary(frame, *op, v, expr.span)
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let a = self.eval(frame, lhs);
                let b = self.eval(frame, rhs);
                self.binary(frame, *op, (a, lhs.span), (b, rhs.span), expr.span)
            }
            ExprKind::Call { callee, scope, args } => self.call(frame, callee, scope.as_ref(), args, expr.span),
        }
    }

    fn lookup(&mut self, frame: &Frame, name: &str, span: Span) -> Value {
        let config = if frame.sees_config { self.config.get(name) } else { None };
        if let Some(v) = frame.vars.get(name).or(config) {
            return v.clone();
        }
        if let Some(v) = builtins::constant(name) {
            return v;
        }
        self.error(
            frame,
            span,
            format!("`{name}` is not defined on this path (is it assigned only in a branch or loop that did not run?)"),
        )
    }

    fn unary(&mut self, frame: &Frame, op: ast::UnaryOp, v: Value, span: Span) -> Value {
        let site = self.site(frame, span);
        match (op, v) {
            (_, Value::Poison) => Value::Poison,
            (ast::UnaryOp::Neg, Value::Int(i)) => match i.checked_neg() {
                Some(n) => Value::Int(n),
                None => self.error(frame, span, format!("integer overflow negating {i}")),
            },
            (ast::UnaryOp::Neg, Value::Float(x)) => Value::Float(-x),
            (ast::UnaryOp::Not, Value::Bool(b)) => Value::Bool(!b),
            (ast::UnaryOp::Neg, Value::Tensor(t)) if t.ty.dtype != DType::Bool => {
                self.tensor_result(frame, span, |b| b.unary(UnaryOp::Neg, &t, &site))
            }
            (ast::UnaryOp::Not, Value::Tensor(t)) if t.ty.dtype == DType::Bool => {
                self.tensor_result(frame, span, |b| b.unary(UnaryOp::Not, &t, &site))
            }
            (op, v) => {
                let what = if op == ast::UnaryOp::Neg { "negate" } else { "apply `not` to" };
                self.error(frame, span, format!("cannot {what} {}", v.describe()))
            }
        }
    }

    fn binary(&mut self, frame: &Frame, op: BinOp, a: (Value, Span), b: (Value, Span), span: Span) -> Value {
        match (&a.0, &b.0) {
            (Value::Poison, _) | (_, Value::Poison) => Value::Poison,
            (Value::Tensor(_), _) | (_, Value::Tensor(_)) => self.tensor_binary(frame, op, a, b, span),
            _ => match scalar_binary(op, &a.0, &b.0) {
                Ok(v) => v,
                Err(msg) => self.error(frame, span, msg),
            },
        }
    }

    fn tensor_binary(&mut self, frame: &Frame, op: BinOp, a: (Value, Span), b: (Value, Span), span: Span) -> Value {
        let site = self.site(frame, span);
        let (ta, tb) = match self.tensor_operands(frame, op, &a, &b) {
            Ok(pair) => pair,
            Err(d) => return self.report(frame, d),
        };
        let result = match op {
            BinOp::MatMul => self.builder.matmul(&ta, &tb, &site),
            _ => {
                let ir_op = ir_binary(op);
                self.builder.binary(ir_op, &ta, &tb, &site)
            }
        };
        match result {
            Ok(t) => Value::Tensor(t),
            Err(msg) => {
                let d = Diagnostic::error(span, format!("cannot apply `{}`: {}", op.symbol(), msg))
                    .with_secondary(ta.span, format!("{} comes from here", ta.ty))
                    .with_secondary(tb.span, format!("{} comes from here", tb.ty));
                self.report(frame, d)
            }
        }
    }

    /// Both operands as tensors: a number or bool next to a tensor becomes a
    /// constant of the tensor's dtype.
    fn tensor_operands(
        &mut self,
        frame: &Frame,
        op: BinOp,
        a: &(Value, Span),
        b: &(Value, Span),
    ) -> Result<(TensorVal, TensorVal), Diagnostic> {
        let other_dtype = |v: &Value| match v {
            Value::Tensor(t) => Some(t.ty.dtype),
            _ => None,
        };
        let dtype_a = other_dtype(&b.0);
        let dtype_b = other_dtype(&a.0);
        let ta = self.as_tensor(frame, &a.0, a.1, dtype_a, op)?;
        let tb = self.as_tensor(frame, &b.0, b.1, dtype_b, op)?;
        Ok((ta, tb))
    }

    /// A value as a tensor operand; scalars become constants of `dtype`.
    pub fn as_tensor(
        &mut self,
        frame: &Frame,
        v: &Value,
        span: Span,
        dtype: Option<DType>,
        op: BinOp,
    ) -> Result<TensorVal, Diagnostic> {
        match v {
            Value::Tensor(t) => Ok(t.clone()),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) if op != BinOp::MatMul => {
                let dtype = dtype.unwrap_or(DType::F32);
                let value = scalar_for_dtype(v, dtype).map_err(|m| Diagnostic::error(span, m))?;
                let site = self.site(frame, span);
                self.builder.constant(value, TensorType::scalar(dtype), &site).map_err(|m| Diagnostic::error(span, m))
            }
            other => Err(Diagnostic::error(
                span,
                format!("`{}` needs a tensor here, found {}", op.symbol(), other.describe()),
            )),
        }
    }

    /// Wraps a builder result: a tensor, or a reported error.
    pub fn tensor_result(
        &mut self,
        frame: &Frame,
        span: Span,
        build: impl FnOnce(&mut GraphBuilder) -> Result<TensorVal, String>,
    ) -> Value {
        match build(&mut self.builder) {
            Ok(t) => Value::Tensor(t),
            Err(msg) => self.error(frame, span, msg),
        }
    }

    // ---- calls ---------------------------------------------------------------

    fn call(
        &mut self,
        frame: &Frame,
        callee: &ast::Ident,
        scope: Option<&ast::ScopePath>,
        args: &[ast::Arg],
        span: Span,
    ) -> Value {
        let mut values = Vec::with_capacity(args.len());
        for arg in args {
            let v = self.eval(frame, &arg.value);
            values.push(builtins::ArgValue { name: arg.name.clone(), value: v, span: arg.value.span });
        }
        let from_prelude = self.sources.file(span.file).is_prelude;
        let user = if from_prelude { None } else { self.user_blocks.get(&callee.name) };
        if let Some(block) = user.or_else(|| self.prelude_blocks.get(&callee.name)).copied() {
            return self.call_block(frame, block, scope, values, span);
        }
        if let Some(scope) = scope {
            let msg =
                format!("`{}` is a built-in operation and declares no parameters, so it takes no scope", callee.name);
            return self.error(frame, scope.span, msg);
        }
        builtins::call(self, frame, callee, values, span)
    }

    fn call_block(
        &mut self,
        frame: &Frame,
        block: &'a ast::BlockDef,
        scope: Option<&ast::ScopePath>,
        args: Vec<builtins::ArgValue>,
        span: Span,
    ) -> Value {
        if self.depth >= MAX_CALL_DEPTH {
            return self.error(
                frame,
                span,
                format!("block calls nested deeper than {MAX_CALL_DEPTH}: is `{}` recursive?", block.name.name),
            );
        }
        let mut callee = Frame {
            vars: HashMap::new(),
            loop_vars: HashSet::new(),
            scope: frame.scope.clone(),
            user_site: if self.sources.file(span.file).is_prelude { frame.user_site } else { Some(span) },
            calls: frame.calls.clone(),
            sees_config: !self.sources.file(block.span.file).is_prelude,
        };
        callee.calls.push((block.name.name.clone(), span));
        if let Some(scope) = scope {
            callee.scope.extend(scope.segments.iter().map(|seg| scope_segment(frame, seg)));
        }
        if !self.bind_block_args(frame, &mut callee, block, args, span) {
            return Value::Poison;
        }
        self.depth += 1;
        let result = self.run_body(&mut callee, &block.body);
        self.depth -= 1;
        match result {
            Some(v) => v,
            None => self.error(frame, span, format!("block `{}` finished without `return`", block.name.name)),
        }
    }

    fn bind_block_args(
        &mut self,
        frame: &Frame,
        callee: &mut Frame,
        block: &ast::BlockDef,
        args: Vec<builtins::ArgValue>,
        span: Span,
    ) -> bool {
        let names: Vec<&str> = block.params.iter().map(|p| p.name.name.as_str()).collect();
        let bound = match builtins::bind_args(&block.name.name, &names, args, span, true) {
            Ok(bound) => bound,
            Err(d) => {
                self.report(frame, d);
                return false;
            }
        };
        for (param, value) in block.params.iter().zip(bound) {
            let v = match (value, &param.default) {
                (Some(v), _) => v.value,
                (None, Some(default)) => self.eval(callee, default),
                (None, None) => {
                    let msg = format!("block `{}` needs argument `{}`", block.name.name, param.name.name);
                    self.error(frame, span, msg);
                    return false;
                }
            };
            callee.bind(&param.name.name, v);
        }
        true
    }

    /// Builds the model's inputs and body; returns the loss tensor.
    pub fn run_model(&mut self, model: &ast::ModelDef) -> Option<TensorVal> {
        let mut frame = Frame::root();
        for input in &model.inputs {
            let value = match self.eval_type(&frame, &input.ty, DType::F32) {
                Some(ty) => {
                    let site = self.site(&frame, input.name.span);
                    let op = Op::Input { name: input.name.name.clone() };
                    self.tensor_result(&frame, input.name.span, |b| b.leaf(op, ty, &site))
                }
                None => Value::Poison,
            };
            frame.bind(&input.name.name, value);
        }
        let result = self.run_body(&mut frame, &model.body);
        match result {
            Some(Value::Tensor(t)) if t.ty.rank() == 0 && t.ty.dtype.is_float() => Some(t),
            Some(Value::Poison) => None,
            Some(other) => {
                let msg = format!("the model must return the loss, a float scalar; it returns {}", other.describe());
                self.error(&frame, model.name.span, msg);
                None
            }
            None => {
                self.error(&frame, model.name.span, "the model has no `return` of its loss");
                None
            }
        }
    }
}

/// Binds every name a skipped body would have assigned to `Poison`: after an
/// error in an `if` condition or loop bounds, later uses stay quiet instead of
/// reporting those names as undefined.
fn poison_assignments<'s>(frame: &mut Frame, body: impl Iterator<Item = &'s Stmt>) {
    for stmt in body {
        match stmt {
            Stmt::Assign { name, .. } | Stmt::Param { name, .. } => frame.bind(&name.name, Value::Poison),
            Stmt::If { then_body, else_body, .. } => poison_assignments(frame, then_body.iter().chain(else_body)),
            Stmt::For { var, body, .. } => {
                frame.bind(&var.name, Value::Poison);
                poison_assignments(frame, body.iter());
            }
            Stmt::Return { .. } | Stmt::Assert { .. } => {}
        }
    }
}

/// A scope segment: a loop variable becomes its value, anything else is literal.
fn scope_segment(frame: &Frame, seg: &ast::Ident) -> String {
    if frame.loop_vars.contains(&seg.name)
        && let Some(Value::Int(i)) = frame.vars.get(&seg.name)
    {
        return i.to_string();
    }
    seg.name.clone()
}

fn ir_binary(op: BinOp) -> BinaryOp {
    match op {
        BinOp::Add => BinaryOp::Add,
        BinOp::Sub => BinaryOp::Sub,
        BinOp::Mul => BinaryOp::Mul,
        BinOp::Div => BinaryOp::Div,
        BinOp::Pow => BinaryOp::Pow,
        BinOp::Lt => BinaryOp::Lt,
        BinOp::Le => BinaryOp::Le,
        BinOp::Gt => BinaryOp::Gt,
        BinOp::Ge => BinaryOp::Ge,
        BinOp::Eq => BinaryOp::Eq,
        BinOp::Ne => BinaryOp::Ne,
        BinOp::And => BinaryOp::And,
        BinOp::Or => BinaryOp::Or,
        BinOp::MatMul => unreachable!("matmul is lowered separately"),
    }
}

/// The numeric value a scalar takes as a constant of `dtype`.
fn scalar_for_dtype(v: &Value, dtype: DType) -> Result<f64, String> {
    match (v, dtype) {
        (Value::Bool(b), DType::Bool) => Ok(if *b { 1.0 } else { 0.0 }),
        (Value::Bool(_), _) => Err(format!("cannot combine a bool with a {dtype} tensor")),
        (_, DType::Bool) => Err(format!("cannot combine {} with a bool tensor", v.describe())),
        (Value::Float(x), DType::I32) if x.fract() != 0.0 => {
            Err(format!("cannot combine {} with an i32 tensor (cast the tensor to f32 first)", v.describe()))
        }
        (v, _) => v.as_f64().ok_or_else(|| format!("cannot use {} as a number", v.describe())),
    }
}

/// Arithmetic and comparison on compile-time numbers and bools.
pub fn scalar_binary(op: BinOp, a: &Value, b: &Value) -> Result<Value, String> {
    use Value::{Bool, Float, Int};
    let mismatch = || format!("cannot apply `{}` to {} and {}", op.symbol(), a.describe(), b.describe());
    match (op, a, b) {
        (BinOp::And, Bool(x), Bool(y)) => Ok(Bool(*x && *y)),
        (BinOp::Or, Bool(x), Bool(y)) => Ok(Bool(*x || *y)),
        (BinOp::Eq, Bool(x), Bool(y)) => Ok(Bool(x == y)),
        (BinOp::Ne, Bool(x), Bool(y)) => Ok(Bool(x != y)),
        (_, Int(x), Int(y)) => int_binary(op, *x, *y).ok_or_else(mismatch)?,
        (_, Int(_) | Float(_), Int(_) | Float(_)) => {
            float_binary(op, a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0)).ok_or_else(mismatch)
        }
        _ => Err(mismatch()),
    }
}

fn int_binary(op: BinOp, x: i64, y: i64) -> Option<Result<Value, String>> {
    let overflow = || format!("integer overflow in {x} {} {y}", op.symbol());
    let v = match op {
        BinOp::Add => x.checked_add(y).map(Value::Int).ok_or_else(overflow),
        BinOp::Sub => x.checked_sub(y).map(Value::Int).ok_or_else(overflow),
        BinOp::Mul => x.checked_mul(y).map(Value::Int).ok_or_else(overflow),
        BinOp::Div if y == 0 => Err(format!("division by zero: {x} / 0")),
        BinOp::Div => match x.checked_rem(y) {
            None => Err(overflow()),
            Some(0) => Ok(Value::Int(x / y)),
            Some(_) => Err(format!("{x} / {y} is not a whole number (write {x}.0 / {y} for a float)")),
        },
        BinOp::Pow if y >= 0 => {
            u32::try_from(y).ok().and_then(|e| x.checked_pow(e)).map(Value::Int).ok_or_else(overflow)
        }
        BinOp::Pow => Ok(Value::Float((x as f64).powf(y as f64))),
        BinOp::Lt => Ok(Value::Bool(x < y)),
        BinOp::Le => Ok(Value::Bool(x <= y)),
        BinOp::Gt => Ok(Value::Bool(x > y)),
        BinOp::Ge => Ok(Value::Bool(x >= y)),
        BinOp::Eq => Ok(Value::Bool(x == y)),
        BinOp::Ne => Ok(Value::Bool(x != y)),
        BinOp::MatMul | BinOp::And | BinOp::Or => return None,
    };
    Some(v)
}

fn float_binary(op: BinOp, x: f64, y: f64) -> Option<Value> {
    Some(match op {
        BinOp::Add => Value::Float(x + y),
        BinOp::Sub => Value::Float(x - y),
        BinOp::Mul => Value::Float(x * y),
        BinOp::Div => Value::Float(x / y),
        BinOp::Pow => Value::Float(x.powf(y)),
        BinOp::Lt => Value::Bool(x < y),
        BinOp::Le => Value::Bool(x <= y),
        BinOp::Gt => Value::Bool(x > y),
        BinOp::Ge => Value::Bool(x >= y),
        BinOp::Eq => Value::Bool(x == y),
        BinOp::Ne => Value::Bool(x != y),
        BinOp::MatMul | BinOp::And | BinOp::Or => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_arithmetic() {
        assert_eq!(scalar_binary(BinOp::Div, &Value::Int(256), &Value::Int(4)), Ok(Value::Int(64)));
        assert!(scalar_binary(BinOp::Div, &Value::Int(10), &Value::Int(4)).unwrap_err().contains("whole number"));
        assert_eq!(scalar_binary(BinOp::Div, &Value::Float(1.0), &Value::Int(4)), Ok(Value::Float(0.25)));
        assert_eq!(scalar_binary(BinOp::Pow, &Value::Int(2), &Value::Int(10)), Ok(Value::Int(1024)));
        assert!(scalar_binary(BinOp::Mul, &Value::Int(i64::MAX), &Value::Int(2)).is_err());
        assert_eq!(scalar_binary(BinOp::Lt, &Value::Int(1), &Value::Float(1.5)), Ok(Value::Bool(true)));
        assert!(scalar_binary(BinOp::Add, &Value::Bool(true), &Value::Int(1)).is_err());
    }
}
