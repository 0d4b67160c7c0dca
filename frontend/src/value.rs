//! Values of the staged evaluation. A model file runs at compile time: numbers,
//! booleans, lists and dtypes are ordinary values, and tensors are nodes of the
//! graph being built, each remembering where it came from.

use std::fmt;

use lpac_ir::{DType, Init, NodeId, TensorType};

use crate::source::Span;

/// A tensor under construction: a graph node, its type, and the place in the
/// user's source that produced it (used to say where each operand came from).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorVal {
    pub node: NodeId,
    pub ty: TensorType,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    DType(DType),
    List(Vec<Value>),
    Tensor(TensorVal),
    /// What an initialiser call (`normal(0.0, 0.02)`) evaluates to; only a
    /// `param` declaration accepts it.
    Init(Init),
    /// The result of an expression that already reported an error. Every
    /// operation on it yields `Poison` again without a new message, so one
    /// mistake gives one diagnostic.
    Poison,
}

impl Value {
    /// A short description for messages: `int 4`, `f32[16,128]`, `list of 2`.
    pub fn describe(&self) -> String {
        match self {
            Value::Int(i) => format!("int {i}"),
            Value::Float(x) => format!("float {x:?}"),
            Value::Bool(b) => format!("bool {b}"),
            Value::Str(s) => format!("string {s:?}"),
            Value::DType(d) => format!("dtype {d}"),
            Value::List(items) => format!("list of {}", items.len()),
            Value::Tensor(t) => format!("tensor {}", t.ty),
            Value::Init(_) => "initialiser".to_string(),
            Value::Poison => "<error>".to_string(),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(x) => Some(*x),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    /// How a config value prints (`256`, `0.1`, `true`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Bool(b) => write!(f, "{b}"),
            other => f.write_str(&other.describe()),
        }
    }
}
