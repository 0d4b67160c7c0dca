//! Values inside a run: row-major element vectors, floats in the run's
//! precision `T`. The shape and dtype live in the node's type, not here.

use super::real::{Real, round_slice_to_dtype};
use super::tensor::{Tensor, TensorData};
use crate::types::{DType, TensorType};

#[derive(Clone, Debug, PartialEq)]
pub enum Value<T> {
    Float(Vec<T>),
    Int(Vec<i32>),
    Bool(Vec<bool>),
}

impl<T: Real> Value<T> {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Float(_) => "float",
            Value::Int(_) => "i32",
            Value::Bool(_) => "bool",
        }
    }

    pub fn as_float(&self) -> Result<&[T], String> {
        match self {
            Value::Float(v) => Ok(v),
            other => Err(format!("expected a float operand, got {}", other.kind())),
        }
    }

    pub fn as_int(&self) -> Result<&[i32], String> {
        match self {
            Value::Int(v) => Ok(v),
            other => Err(format!("expected an i32 operand, got {}", other.kind())),
        }
    }

    pub fn as_bool(&self) -> Result<&[bool], String> {
        match self {
            Value::Bool(v) => Ok(v),
            other => Err(format!("expected a bool operand, got {}", other.kind())),
        }
    }

    /// `n` copies of `value` converted to `dtype`: floats round to nearest
    /// (narrow formats are rounded later, with every other op); i32 truncates
    /// toward zero and saturates; bool is `value != 0`.
    pub fn splat(dtype: DType, value: f64, n: usize) -> Value<T> {
        match dtype {
            DType::I32 => Value::Int(vec![value as i32; n]),
            DType::Bool => Value::Bool(vec![value != 0.0; n]),
            _ => Value::Float(vec![T::from_f64(value); n]),
        }
    }

    /// The elements a host tensor provides, after checking it against the
    /// node's declared type.
    pub fn from_tensor(tensor: &Tensor, ty: &TensorType) -> Result<Value<T>, String> {
        if tensor.dtype != ty.dtype || tensor.shape != ty.shape {
            return Err(format!("expected {} but was given {}", ty, tensor.ty()));
        }
        tensor.check()?;
        let mut value = match &tensor.data {
            TensorData::I32(v) => Value::Int(v.clone()),
            TensorData::Bool(v) => Value::Bool(v.clone()),
            data => Value::Float(T::from_data(data).ok_or("float data expected")?),
        };
        value.round_to(ty.dtype);
        Ok(value)
    }

    pub fn to_tensor(&self, ty: &TensorType) -> Tensor {
        let data = match self {
            Value::Float(v) => T::into_data(v.clone()),
            Value::Int(v) => TensorData::I32(v.clone()),
            Value::Bool(v) => TensorData::Bool(v.clone()),
        };
        Tensor { dtype: ty.dtype, shape: ty.shape.clone(), data }
    }

    /// Rounds float elements to a narrow float dtype (bf16, f16); otherwise a no-op.
    pub fn round_to(&mut self, dtype: DType) {
        if let Value::Float(v) = self {
            round_slice_to_dtype(v, dtype);
        }
    }

    /// A new value whose element `i` is element `plan[i].1` of operand
    /// `plan[i].0`. Every data-movement op is one of these plans; all sources
    /// must hold the same kind of element.
    pub fn pick(sources: &[&Value<T>], plan: &[(usize, usize)]) -> Result<Value<T>, String> {
        fn take<E: Copy>(slices: &[&[E]], plan: &[(usize, usize)]) -> Vec<E> {
            plan.iter().map(|&(s, i)| slices[s][i]).collect()
        }
        let first = sources.first().ok_or("no operands")?;
        Ok(match first {
            Value::Float(_) => {
                let slices: Vec<&[T]> = sources.iter().map(|v| v.as_float()).collect::<Result<_, _>>()?;
                Value::Float(take(&slices, plan))
            }
            Value::Int(_) => {
                let slices: Vec<&[i32]> = sources.iter().map(|v| v.as_int()).collect::<Result<_, _>>()?;
                Value::Int(take(&slices, plan))
            }
            Value::Bool(_) => {
                let slices: Vec<&[bool]> = sources.iter().map(|v| v.as_bool()).collect::<Result<_, _>>()?;
                Value::Bool(take(&slices, plan))
            }
        })
    }
}
