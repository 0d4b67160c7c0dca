//! The built-in operations the language offers: the graph's primitives (with
//! numpy-style conveniences), shape queries, scalar math, and initialisers.
//! Everything richer — softmax, norms, attention, losses — is written in the
//! prelude from these.

use lpac_ir::{DType, Init, ReduceOp, TensorType, UnaryOp};

use crate::ast::Ident;
use crate::build::Site;
use crate::diagnostic::Diagnostic;
use crate::eval::{Evaluator, Frame};
use crate::source::Span;
use crate::value::{TensorVal, Value};

/// An evaluated call argument.
pub struct ArgValue {
    pub name: Option<Ident>,
    pub value: Value,
    pub span: Span,
}

/// Parameter names of each built-in; a `?` suffix marks an optional one.
const SIGNATURES: &[(&str, &[&str])] = &[
    ("exp", &["x"]),
    ("log", &["x"]),
    ("sqrt", &["x"]),
    ("rsqrt", &["x"]),
    ("tanh", &["x"]),
    ("sin", &["x"]),
    ("cos", &["x"]),
    ("abs", &["x"]),
    ("maximum", &["a", "b"]),
    ("minimum", &["a", "b"]),
    ("where", &["cond", "a", "b"]),
    ("sum", &["x", "axis?", "keepdim?"]),
    ("max", &["x", "axis?", "keepdim?"]),
    ("mean", &["x", "axis?", "keepdim?"]),
    ("reshape", &["x", "shape"]),
    ("permute", &["x", "perm"]),
    ("transpose", &["x", "a?", "b?"]),
    ("broadcast", &["x", "shape"]),
    ("unsqueeze", &["x", "axis"]),
    ("squeeze", &["x", "axis"]),
    ("slice", &["x", "axis", "start", "end"]),
    ("concat", &["tensors", "axis"]),
    ("pad", &["x", "axis", "lo", "hi", "value?"]),
    ("gather", &["table", "indices"]),
    ("iota", &["shape", "axis", "dtype?"]),
    ("full", &["shape", "value", "dtype?"]),
    ("rand", &["shape"]),
    ("cast", &["x", "dtype"]),
    ("shape", &["x"]),
    ("dim", &["x", "axis"]),
    ("rank", &["x"]),
    ("dtype", &["x"]),
    ("float", &["x"]),
    ("int", &["x"]),
    ("normal", &["mean", "std"]),
    ("uniform", &["lo", "hi"]),
    ("zeros", &[]),
    ("ones", &[]),
    ("constant", &["value"]),
];

/// The parameter list of a built-in, if `name` is one.
pub fn signature(name: &str) -> Option<&'static [&'static str]> {
    SIGNATURES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    SIGNATURES.iter().map(|(n, _)| *n)
}

/// Names that are values rather than functions: dtypes and `inf`.
pub fn constant(name: &str) -> Option<Value> {
    if name == "inf" {
        return Some(Value::Float(f64::INFINITY));
    }
    DType::from_name(name).map(Value::DType)
}

/// Matches positional and keyword arguments to parameter names. Returns one
/// slot per parameter. A parameter without a trailing `?` is required, unless
/// `defaults_elsewhere` (blocks, whose defaults are expressions the caller
/// evaluates).
pub fn bind_args(
    callee: &str,
    params: &[&str],
    args: Vec<ArgValue>,
    span: Span,
    defaults_elsewhere: bool,
) -> Result<Vec<Option<ArgValue>>, Diagnostic> {
    let clean = |p: &str| p.trim_end_matches('?').to_string();
    let mut slots: Vec<Option<ArgValue>> = params.iter().map(|_| None).collect();
    let mut next_positional = 0;
    for arg in args {
        let index = match &arg.name {
            None => {
                if next_positional >= params.len() {
                    let msg = format!("`{callee}` takes {} argument(s), but more were given", params.len());
                    return Err(Diagnostic::error(arg.span, msg).with_label("unexpected argument"));
                }
                next_positional += 1;
                next_positional - 1
            }
            Some(name) => match params.iter().position(|p| clean(p) == name.name) {
                Some(i) => i,
                None => {
                    let known: Vec<String> = params.iter().map(|p| clean(p)).collect();
                    let msg = format!("`{callee}` has no argument `{}` (it has: {})", name.name, known.join(", "));
                    return Err(Diagnostic::error(name.span, msg));
                }
            },
        };
        if slots[index].is_some() {
            let msg = format!("argument `{}` of `{callee}` is given twice", clean(params[index]));
            return Err(Diagnostic::error(arg.span, msg));
        }
        slots[index] = Some(arg);
    }
    for (param, slot) in params.iter().zip(&slots) {
        if slot.is_none() && !param.ends_with('?') && !defaults_elsewhere {
            return Err(Diagnostic::error(span, format!("`{callee}` needs argument `{}`", clean(param))));
        }
    }
    Ok(slots)
}

/// Calls the built-in `callee` on evaluated arguments.
pub fn call(ev: &mut Evaluator<'_>, frame: &Frame, callee: &Ident, args: Vec<ArgValue>, span: Span) -> Value {
    let Some(params) = signature(&callee.name) else {
        return ev.error(frame, callee.span, format!("there is no block or built-in named `{}`", callee.name));
    };
    let slots = match bind_args(&callee.name, params, args, span, false) {
        Ok(slots) => slots,
        Err(d) => return ev.report(frame, d),
    };
    if slots.iter().flatten().any(|a| is_poisoned(&a.value)) {
        return Value::Poison;
    }
    let mut call = Call { ev, frame, span, args: slots };
    match call.dispatch(&callee.name) {
        Ok(v) => v,
        Err(CallError::At(span, msg)) => call.ev.error(frame, span, msg),
        Err(CallError::Reported) => Value::Poison,
    }
}

/// A value that is or contains the result of an earlier error.
fn is_poisoned(v: &Value) -> bool {
    match v {
        Value::Poison => true,
        Value::List(items) => items.iter().any(is_poisoned),
        _ => false,
    }
}

enum CallError {
    At(Span, String),
    Reported,
}

type CallResult = Result<Value, CallError>;

struct Call<'e, 'a, 'f> {
    ev: &'e mut Evaluator<'a>,
    frame: &'f Frame,
    span: Span,
    args: Vec<Option<ArgValue>>,
}

impl Call<'_, '_, '_> {
    fn dispatch(&mut self, name: &str) -> CallResult {
        if let Some(op) = unary_op(name) {
            return self.unary(name, op);
        }
        match name {
            "maximum" | "minimum" => self.min_max(name),
            "where" => self.where_(),
            "sum" => self.reduce(ReduceOp::Sum, false),
            "max" => self.reduce(ReduceOp::Max, false),
            "mean" => self.reduce(ReduceOp::Sum, true),
            "reshape" => {
                let (x, dims) = (self.tensor(0)?, self.int_list(1)?);
                self.build(|b, s| b.reshape(&x, &dims, s))
            }
            "permute" => {
                let (x, perm) = (self.tensor(0)?, self.int_list(1)?);
                self.build(|b, s| b.permute(&x, &perm, s))
            }
            "transpose" => {
                let (x, a, b) = (self.tensor(0)?, self.int_or(1, -2)?, self.int_or(2, -1)?);
                self.build(|bd, s| bd.transpose(&x, a, b, s))
            }
            "broadcast" => {
                let (x, shape) = (self.tensor(0)?, self.shape(1)?);
                self.build(|b, s| b.broadcast_to(&x, &shape, s))
            }
            "unsqueeze" | "squeeze" => self.squeeze(name == "unsqueeze"),
            "slice" => {
                let x = self.tensor(0)?;
                let (axis, start, end) = (self.int(1)?, self.int(2)?, self.int(3)?);
                self.build(|b, s| b.slice(&x, axis, start, end, s))
            }
            "concat" => self.concat(),
            "pad" => {
                let x = self.tensor(0)?;
                let (axis, lo, hi) = (self.int(1)?, self.int(2)?, self.int(3)?);
                let value = self.float_or(4, 0.0)?;
                self.build(|b, s| b.pad(&x, axis, lo, hi, value, s))
            }
            "gather" => {
                let (table, idx) = (self.tensor(0)?, self.tensor(1)?);
                self.build(|b, s| b.gather(&table, &idx, s))
            }
            "iota" => {
                let (shape, axis, dtype) = (self.shape(0)?, self.int(1)?, self.dtype_or(2, DType::I32)?);
                self.build(|b, s| b.iota(shape, axis, dtype, s))
            }
            "full" => {
                let (shape, value, dtype) = (self.shape(0)?, self.float(1)?, self.dtype_or(2, DType::F32)?);
                let fits = match dtype {
                    DType::I32 => value.fract() == 0.0 && value.abs() <= i32::MAX as f64,
                    DType::Bool => value == 0.0 || value == 1.0,
                    _ => true,
                };
                if !fits {
                    return Err(self.at(1, format!("{value} is not a value of dtype {dtype}")));
                }
                self.build(|b, s| b.constant(value, TensorType::new(dtype, shape), s))
            }
            "rand" => {
                let shape = self.shape(0)?;
                self.build(|b, s| b.random(shape, s))
            }
            "cast" => {
                let (x, dtype) = (self.tensor(0)?, self.dtype(1)?);
                self.build(|b, s| b.cast(&x, dtype, s))
            }
            "shape" => Ok(Value::List(self.tensor(0)?.ty.shape.iter().map(|&d| Value::Int(d as i64)).collect())),
            "dim" => {
                let (x, axis) = (self.tensor(0)?, self.int(1)?);
                let axis = crate::build::normalize_axis(axis, x.ty.rank()).map_err(|m| self.at(1, m))?;
                Ok(Value::Int(x.ty.shape[axis] as i64))
            }
            "rank" => Ok(Value::Int(self.tensor(0)?.ty.rank() as i64)),
            "dtype" => Ok(Value::DType(self.tensor(0)?.ty.dtype)),
            "float" => Ok(Value::Float(self.float(0)?)),
            "int" => self.int_of_value(),
            "normal" => {
                let (mean, std) = (self.float(0)?, self.float(1)?);
                if std.is_finite() && std >= 0.0 {
                    Ok(Value::Init(Init::Normal { mean, std }))
                } else {
                    Err(self.at(1, "std must be finite and not negative".into()))
                }
            }
            "uniform" => {
                let (lo, hi) = (self.float(0)?, self.float(1)?);
                if lo < hi {
                    Ok(Value::Init(Init::Uniform { lo, hi }))
                } else {
                    Err(CallError::At(self.span, format!("uniform({lo}, {hi}) needs lo < hi")))
                }
            }
            "zeros" => Ok(Value::Init(Init::Const { value: 0.0 })),
            "ones" => Ok(Value::Init(Init::Const { value: 1.0 })),
            "constant" => Ok(Value::Init(Init::Const { value: self.float(0)? })),
            other => Err(CallError::At(self.span, format!("built-in `{other}` is declared but not implemented"))),
        }
    }

    // ---- individual built-ins -------------------------------------------------

    fn unary(&mut self, name: &str, op: UnaryOp) -> CallResult {
        match &self.arg(0).value {
            Value::Int(_) | Value::Float(_) => {
                let x = self.float(0)?;
                Ok(Value::Float(scalar_unary(op, x)))
            }
            _ => {
                let x = self.tensor(0)?;
                if !x.ty.dtype.is_float() && op.needs_float() {
                    return Err(self.at(0, format!("`{name}` needs a float tensor, found {} (use cast)", x.ty)));
                }
                self.build(|b, s| b.unary(op, &x, s))
            }
        }
    }

    fn min_max(&mut self, name: &str) -> CallResult {
        let op = if name == "maximum" { lpac_ir::BinaryOp::Max } else { lpac_ir::BinaryOp::Min };
        if let (Value::Int(a), Value::Int(b)) = (&self.arg(0).value, &self.arg(1).value) {
            return Ok(Value::Int(if name == "maximum" { *a.max(b) } else { *a.min(b) }));
        }
        if let (Some(a), Some(b)) = (self.arg(0).value.as_f64(), self.arg(1).value.as_f64()) {
            return Ok(Value::Float(if name == "maximum" { a.max(b) } else { a.min(b) }));
        }
        let (a, b) = self.tensor_pair(0, 1)?;
        self.build(|bd, s| bd.binary(op, &a, &b, s))
    }

    fn where_(&mut self) -> CallResult {
        let cond = self.tensor(0)?;
        let (a, b) = self.tensor_pair(1, 2)?;
        self.build(|bd, s| bd.select(&cond, &a, &b, s))
    }

    /// sum / max / mean; no axis means every axis.
    fn reduce(&mut self, op: ReduceOp, mean: bool) -> CallResult {
        let x = self.tensor(0)?;
        let axes: Vec<i64> = match self.args[1].as_ref().map(|a| &a.value) {
            None => (0..x.ty.rank() as i64).collect(),
            Some(Value::Int(a)) => vec![*a],
            Some(_) => self.int_list(1)?,
        };
        let keepdim = self.bool_or(2, false)?;
        if !mean {
            return self.build(|b, s| b.reduce(op, &x, &axes, keepdim, s));
        }
        if !x.ty.dtype.is_float() {
            return Err(self.at(0, format!("`mean` needs a float tensor, found {}", x.ty)));
        }
        let mut reduced = Vec::new();
        for &a in &axes {
            reduced.push(crate::build::normalize_axis(a, x.ty.rank()).map_err(|m| self.at(1, m))?);
        }
        reduced.sort_unstable();
        reduced.dedup();
        let count: usize = reduced.iter().map(|&axis| x.ty.shape[axis]).product();
        self.build(|b, s| {
            let total = b.reduce(op, &x, &axes, keepdim, s)?;
            let n = b.constant(count as f64, TensorType::scalar(total.ty.dtype), s)?;
            b.binary(lpac_ir::BinaryOp::Div, &total, &n, s)
        })
    }

    fn squeeze(&mut self, add: bool) -> CallResult {
        let (x, axis) = (self.tensor(0)?, self.int(1)?);
        let mut shape = x.ty.shape.clone();
        if add {
            let rank = x.ty.rank() as i64 + 1;
            let a = crate::build::normalize_axis(axis, rank as usize).map_err(|m| self.at(1, m))?;
            shape.insert(a, 1);
        } else {
            let a = crate::build::normalize_axis(axis, x.ty.rank()).map_err(|m| self.at(1, m))?;
            if shape[a] != 1 {
                return Err(self.at(1, format!("cannot squeeze axis {axis} of {}: its size is not 1", x.ty)));
            }
            shape.remove(a);
        }
        self.build(|b, s| b.reshape_exact(&x, shape, s))
    }

    fn concat(&mut self) -> CallResult {
        let items = match &self.arg(0).value {
            Value::List(items) => items.clone(),
            other => return Err(self.at(0, format!("`concat` needs a list of tensors, found {}", other.describe()))),
        };
        let mut parts = Vec::new();
        for item in items {
            match item {
                Value::Tensor(t) => parts.push(t),
                Value::Poison => return Err(CallError::Reported),
                other => return Err(self.at(0, format!("`concat` needs tensors, found {}", other.describe()))),
            }
        }
        let axis = self.int(1)?;
        self.build(|b, s| b.concat(&parts, axis, s))
    }

    fn int_of_value(&self) -> CallResult {
        match self.arg(0).value {
            Value::Int(i) => Ok(Value::Int(i)),
            Value::Float(x) if x.is_finite() && x.abs() < 9e15 => Ok(Value::Int(x.trunc() as i64)),
            ref other => Err(self.at(0, format!("cannot convert {} to an int", other.describe()))),
        }
    }

    // ---- argument access ---------------------------------------------------------

    fn arg(&self, i: usize) -> &ArgValue {
        self.args[i].as_ref().expect("required arguments are checked by bind_args")
    }

    fn at(&self, i: usize, msg: String) -> CallError {
        let span = self.args.get(i).and_then(|a| a.as_ref()).map(|a| a.span).unwrap_or(self.span);
        CallError::At(span, msg)
    }

    fn tensor(&self, i: usize) -> Result<TensorVal, CallError> {
        match &self.arg(i).value {
            Value::Tensor(t) => Ok(t.clone()),
            other => Err(self.at(i, format!("expected a tensor, found {}", other.describe()))),
        }
    }

    /// Two operands where one may be a number: it becomes a constant of the other's dtype.
    fn tensor_pair(&mut self, i: usize, j: usize) -> Result<(TensorVal, TensorVal), CallError> {
        let dtype_of = |v: &Value| if let Value::Tensor(t) = v { Some(t.ty.dtype) } else { None };
        let (vi, vj) = (self.arg(i).value.clone(), self.arg(j).value.clone());
        let (si, sj) = (self.arg(i).span, self.arg(j).span);
        if dtype_of(&vi).is_none() && dtype_of(&vj).is_none() {
            return Err(self.at(i, "expected at least one tensor operand".into()));
        }
        let op = crate::ast::BinOp::Add;
        let a = self.ev.as_tensor(self.frame, &vi, si, dtype_of(&vj), op).map_err(|d| self.report(d))?;
        let b = self.ev.as_tensor(self.frame, &vj, sj, dtype_of(&vi), op).map_err(|d| self.report(d))?;
        Ok((a, b))
    }

    fn report(&mut self, d: Diagnostic) -> CallError {
        self.ev.report(self.frame, d);
        CallError::Reported
    }

    fn int(&self, i: usize) -> Result<i64, CallError> {
        match &self.arg(i).value {
            Value::Int(v) => Ok(*v),
            other => Err(self.at(i, format!("expected an integer, found {}", other.describe()))),
        }
    }

    fn int_or(&self, i: usize, default: i64) -> Result<i64, CallError> {
        if self.args[i].is_none() { Ok(default) } else { self.int(i) }
    }

    fn float(&self, i: usize) -> Result<f64, CallError> {
        self.arg(i)
            .value
            .as_f64()
            .ok_or_else(|| self.at(i, format!("expected a number, found {}", self.arg(i).value.describe())))
    }

    fn float_or(&self, i: usize, default: f64) -> Result<f64, CallError> {
        if self.args[i].is_none() { Ok(default) } else { self.float(i) }
    }

    fn bool_or(&self, i: usize, default: bool) -> Result<bool, CallError> {
        match self.args[i].as_ref().map(|a| &a.value) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.at(i, format!("expected true or false, found {}", other.describe()))),
        }
    }

    fn dtype(&self, i: usize) -> Result<DType, CallError> {
        match &self.arg(i).value {
            Value::DType(d) => Ok(*d),
            other => Err(self.at(i, format!("expected a dtype such as f32, found {}", other.describe()))),
        }
    }

    fn dtype_or(&self, i: usize, default: DType) -> Result<DType, CallError> {
        if self.args[i].is_none() { Ok(default) } else { self.dtype(i) }
    }

    fn int_list(&self, i: usize) -> Result<Vec<i64>, CallError> {
        match &self.arg(i).value {
            Value::List(items) => items
                .iter()
                .map(|v| match v {
                    Value::Int(n) => Ok(*n),
                    other => Err(self.at(i, format!("expected a list of integers, found {} in it", other.describe()))),
                })
                .collect(),
            other => Err(self.at(i, format!("expected a list of integers, found {}", other.describe()))),
        }
    }

    fn shape(&self, i: usize) -> Result<Vec<usize>, CallError> {
        let dims = self.int_list(i)?;
        if let Some(bad) = dims.iter().find(|&&d| d <= 0) {
            return Err(self.at(i, format!("shape sizes must be positive, found {bad}")));
        }
        Ok(dims.into_iter().map(|d| d as usize).collect())
    }

    fn build(
        &mut self,
        f: impl FnOnce(&mut crate::build::GraphBuilder, &Site) -> Result<TensorVal, String>,
    ) -> CallResult {
        let site = self.ev.site(self.frame, self.span);
        f(&mut self.ev.builder, &site).map(Value::Tensor).map_err(|m| CallError::At(self.span, m))
    }
}

fn unary_op(name: &str) -> Option<UnaryOp> {
    match name {
        "exp" => Some(UnaryOp::Exp),
        "log" => Some(UnaryOp::Log),
        "sqrt" => Some(UnaryOp::Sqrt),
        "rsqrt" => Some(UnaryOp::Rsqrt),
        "tanh" => Some(UnaryOp::Tanh),
        "sin" => Some(UnaryOp::Sin),
        "cos" => Some(UnaryOp::Cos),
        "abs" => Some(UnaryOp::Abs),
        _ => None,
    }
}

fn scalar_unary(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Abs => x.abs(),
        UnaryOp::Neg => -x,
        UnaryOp::Recip => 1.0 / x,
        UnaryOp::Not => x,
    }
}
