//! Host tensors: how data goes into and comes out of the interpreter.

use crate::types::{DType, TensorType};

/// The elements of a host tensor, row-major. Float dtypes (f32, bf16, f16) may
/// be held as `F32` or `F64`; `i32` as `I32`; `bool` as `Bool`.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The storage's name, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "f32 data",
            TensorData::F64(_) => "f64 data",
            TensorData::I32(_) => "i32 data",
            TensorData::Bool(_) => "bool data",
        }
    }

    /// Whether this storage can hold elements of `dtype`.
    pub fn fits(&self, dtype: DType) -> bool {
        match self {
            TensorData::F32(_) | TensorData::F64(_) => dtype.is_float(),
            TensorData::I32(_) => dtype == DType::I32,
            TensorData::Bool(_) => dtype == DType::Bool,
        }
    }
}

/// A tensor on the host: a dtype, a static shape and row-major data.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    /// A tensor after checking that `data` fits `dtype` and has one element
    /// per position of `shape`.
    pub fn new(dtype: DType, shape: Vec<usize>, data: TensorData) -> Result<Tensor, String> {
        let tensor = Tensor { dtype, shape, data };
        tensor.check()?;
        Ok(tensor)
    }

    /// An f32 tensor. Lengths are checked when the tensor is used.
    pub fn from_f32(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        Tensor { dtype: DType::F32, shape, data: TensorData::F32(data) }
    }

    /// An f32-typed tensor holding f64 values: for F64 runs, whose f32 tensors
    /// are computed in f64. An F32 run rounds the values on the way in.
    pub fn from_f64(shape: Vec<usize>, data: Vec<f64>) -> Tensor {
        Tensor { dtype: DType::F32, shape, data: TensorData::F64(data) }
    }

    pub fn from_i32(shape: Vec<usize>, data: Vec<i32>) -> Tensor {
        Tensor { dtype: DType::I32, shape, data: TensorData::I32(data) }
    }

    pub fn from_bool(shape: Vec<usize>, data: Vec<bool>) -> Tensor {
        Tensor { dtype: DType::Bool, shape, data: TensorData::Bool(data) }
    }

    /// An f32 scalar (shape `[]`).
    pub fn scalar_f32(value: f32) -> Tensor {
        Tensor::from_f32(Vec::new(), vec![value])
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn ty(&self) -> TensorType {
        TensorType::new(self.dtype, self.shape.clone())
    }

    /// Checks that the data fits the dtype and the shape.
    pub fn check(&self) -> Result<(), String> {
        if !self.data.fits(self.dtype) {
            return Err(format!("{} cannot hold {} elements", self.data.kind(), self.dtype));
        }
        if self.data.len() != self.numel() {
            return Err(format!("{} elements for shape {:?} ({} expected)", self.data.len(), self.shape, self.numel()));
        }
        Ok(())
    }

    /// Every element as f64 (bool as 0 or 1).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::F64(v) => v.clone(),
            TensorData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| f64::from(u8::from(x))).collect(),
        }
    }

    /// Every element as f32, rounding f64 data to nearest.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            _ => self.to_f64_vec().into_iter().map(|x| x as f32).collect(),
        }
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<&[f64]> {
        match &self.data {
            TensorData::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            TensorData::I32(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<&[bool]> {
        match &self.data {
            TensorData::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The same tensor with float data stored as f32 (rounding) or f64
    /// (widening); int and bool data are unchanged.
    pub fn with_float_storage(&self, precision: super::Precision) -> Tensor {
        let data = match (&self.data, precision) {
            (TensorData::F64(v), super::Precision::F32) => TensorData::F32(v.iter().map(|&x| x as f32).collect()),
            (TensorData::F32(v), super::Precision::F64) => TensorData::F64(v.iter().map(|&x| f64::from(x)).collect()),
            (data, _) => data.clone(),
        };
        Tensor { dtype: self.dtype, shape: self.shape.clone(), data }
    }
}
