//! The element type of float tensors inside the interpreter (`f32` or `f64`),
//! and rounding to the narrow float formats (bf16, f16) by hand.

use std::fmt::Debug;
use std::ops::{Add, Div, Mul, Neg, Sub};

use super::tensor::TensorData;
use crate::types::DType;

/// What the interpreter needs of a float type. Implemented for `f32` and `f64`
/// only; the run's [`Precision`](super::Precision) picks one.
pub trait Real:
    Copy
    + Debug
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    const NAN: Self;

    /// Rounds to nearest, ties to even (`as` semantics).
    fn from_f64(x: f64) -> Self;
    /// Exact.
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn abs(self) -> Self;
    fn powf(self, e: Self) -> Self;
    fn is_nan(self) -> bool;
    fn is_sign_negative(self) -> bool;

    /// `out = a[m,k] · b[k,n]` (row-major) through the gemm crate, if this
    /// precision uses it; returns false (and leaves `out` alone) otherwise.
    /// Only f32 does: the f64 interpreter is the oracle and keeps plain loops.
    fn fast_matmul(a: &[Self], b: &[Self], m: usize, k: usize, n: usize, out: &mut [Self]) -> bool;

    /// Host data in this precision.
    fn into_data(values: Vec<Self>) -> TensorData;
    /// Float host data converted to this precision; `None` for int or bool data.
    fn from_data(data: &TensorData) -> Option<Vec<Self>>;
}

macro_rules! impl_real {
    ($t:ty, $variant:ident, $use_gemm:expr) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            const NAN: Self = <$t>::NAN;

            fn from_f64(x: f64) -> Self {
                x as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn is_sign_negative(self) -> bool {
                <$t>::is_sign_negative(self)
            }
            fn fast_matmul(a: &[Self], b: &[Self], m: usize, k: usize, n: usize, out: &mut [Self]) -> bool {
                if !$use_gemm || m == 0 || n == 0 || k == 0 {
                    return false;
                }
                assert!(a.len() == m * k && b.len() == k * n && out.len() == m * n, "matmul operand sizes");
                // SAFETY: the three slices hold exactly m·k, k·n and m·n
                // elements (checked above), laid out row-major: element (i, j)
                // at i·row_stride + j·col_stride. `out` is not read (read_dst
                // false) and does not alias the operands.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        out.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        1,
                        k as isize,
                        b.as_ptr(),
                        1,
                        n as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::Rayon(0),
                    );
                }
                true
            }
            fn into_data(values: Vec<Self>) -> TensorData {
                TensorData::$variant(values)
            }
            fn from_data(data: &TensorData) -> Option<Vec<Self>> {
                match data {
                    TensorData::F32(v) => Some(v.iter().map(|&x| x as $t).collect()),
                    TensorData::F64(v) => Some(v.iter().map(|&x| x as $t).collect()),
                    TensorData::I32(_) | TensorData::Bool(_) => None,
                }
            }
        }
    };
}

impl_real!(f32, F32, true);
impl_real!(f64, F64, false);

/// IEEE 754-2019 `maximum`: NaN if either operand is NaN, and +0 > -0.
pub fn maximum<T: Real>(a: T, b: T) -> T {
    if a.is_nan() || b.is_nan() {
        T::NAN
    } else if a > b || (a == b && b.is_sign_negative()) {
        a
    } else {
        b
    }
}

/// IEEE 754-2019 `minimum`: NaN if either operand is NaN, and -0 < +0.
pub fn minimum<T: Real>(a: T, b: T) -> T {
    if a.is_nan() || b.is_nan() {
        T::NAN
    } else if a < b || (a == b && a.is_sign_negative()) {
        a
    } else {
        b
    }
}

/// A binary float format: significand bits (with the implicit one), smallest
/// normal exponent, and largest finite value.
#[derive(Clone, Copy, Debug)]
pub struct FloatFormat {
    pub precision: i32,
    pub min_exponent: i32,
    pub max_finite: f64,
}

pub const BF16: FloatFormat = FloatFormat { precision: 8, min_exponent: -126, max_finite: 3.3895313892515355e38 };
pub const F16: FloatFormat = FloatFormat { precision: 11, min_exponent: -14, max_finite: 65504.0 };
/// f32 as a format, so the rounding code can be checked against `as f32`.
pub const F32: FloatFormat = FloatFormat { precision: 24, min_exponent: -126, max_finite: f32::MAX as f64 };

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// Round to nearest, ties to even: what every op producing bf16/f16 does.
    NearestEven,
    /// Round toward negative infinity.
    Down,
}

/// Rounds `x` to the nearest value of `format` (or the next one down), with
/// subnormals and overflow to infinity. Exact arithmetic: dividing by the
/// quantum (a power of two) only shifts the exponent.
pub fn round_to_format(x: f64, format: FloatFormat, rounding: Rounding) -> f64 {
    if !x.is_finite() {
        return x;
    }
    let exponent = ((x.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    let quantum = f64::from(exponent.max(format.min_exponent) - format.precision + 1).exp2();
    let scaled = x / quantum;
    let rounded = match rounding {
        Rounding::NearestEven => scaled.round_ties_even(),
        Rounding::Down => scaled.floor(),
    } * quantum;
    if rounded > format.max_finite {
        if rounding == Rounding::Down { format.max_finite } else { f64::INFINITY }
    } else if rounded < -format.max_finite {
        f64::NEG_INFINITY
    } else {
        rounded
    }
}

/// The format values of `dtype` are rounded to after every op, if any: bf16
/// and f16 are stored in the run's precision but hold only their own values.
pub fn narrow_format(dtype: DType) -> Option<FloatFormat> {
    match dtype {
        DType::BF16 => Some(BF16),
        DType::F16 => Some(F16),
        _ => None,
    }
}

/// Rounds every element to `dtype` in place (a no-op for f32, i32, bool).
pub fn round_slice_to_dtype<T: Real>(values: &mut [T], dtype: DType) {
    if let Some(format) = narrow_format(dtype) {
        for v in values {
            *v = T::from_f64(round_to_format(v.to_f64(), format, Rounding::NearestEven));
        }
    }
}

/// Significand bits of a float dtype, with the implicit one.
pub fn significand_bits(dtype: DType) -> u32 {
    match dtype {
        DType::BF16 => 8,
        DType::F16 => 11,
        _ => 24,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf16(x: f64) -> f64 {
        round_to_format(x, BF16, Rounding::NearestEven)
    }

    fn f16(x: f64) -> f64 {
        round_to_format(x, F16, Rounding::NearestEven)
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        let ulp = 2f64.powi(-7);
        assert_eq!(bf16(1.0), 1.0);
        assert_eq!(bf16(1.0 + ulp / 2.0), 1.0, "tie goes to the even 1.0");
        assert_eq!(bf16(1.0 + 1.5 * ulp), 1.0 + 2.0 * ulp, "tie goes to the even neighbour above");
        assert_eq!(bf16(1.0 + 0.6 * ulp), 1.0 + ulp);
        assert_eq!(bf16(-3.3), -3.296875);
        assert_eq!(bf16(3.4e38), f64::INFINITY, "above max + half ulp overflows");
        assert_eq!(bf16(BF16.max_finite), BF16.max_finite);
        assert_eq!(bf16(2f64.powi(-133)), 2f64.powi(-133), "smallest subnormal");
        assert_eq!(bf16(2f64.powi(-134)), 0.0, "half the smallest subnormal ties to zero");
        assert!(bf16(-1e-60).is_sign_negative() && bf16(-1e-60) == 0.0);
        assert!(bf16(f64::NAN).is_nan());
    }

    #[test]
    fn f16_rounds_to_nearest_even() {
        assert_eq!(f16(65504.0), 65504.0);
        assert_eq!(f16(65519.0), 65504.0);
        assert_eq!(f16(65520.0), f64::INFINITY, "the tie above max rounds to infinity");
        assert_eq!(f16(1.0 + 2f64.powi(-11)), 1.0);
        assert_eq!(f16(0.1), 0.0999755859375);
        assert_eq!(f16(2f64.powi(-24)), 2f64.powi(-24), "smallest subnormal");
        assert_eq!(f16(3.0 * 2f64.powi(-26)), 2f64.powi(-24));
        assert_eq!(f16(2f64.powi(-25)), 0.0);
        assert_eq!(f16(-70000.0), f64::NEG_INFINITY);
    }

    #[test]
    fn f32_format_agrees_with_the_hardware() {
        let key = crate::random::param_key(0, "rounding");
        for c in 0..20_000 {
            let scale = (crate::random::uniform(key, c + 1_000_000) * 300.0 - 150.0).exp2();
            let x = crate::random::normal(key, c) * scale;
            assert_eq!(round_to_format(x, F32, Rounding::NearestEven), f64::from(x as f32), "{x:e}");
        }
        for x in [1e-45, 7e-46, 3.4028235677973366e38, 3.5e38, -1.0e-40] {
            assert_eq!(round_to_format(x, F32, Rounding::NearestEven), f64::from(x as f32), "{x:e}");
        }
    }

    #[test]
    fn rounding_down() {
        assert_eq!(round_to_format(1.0f64.next_down(), BF16, Rounding::Down), 1.0 - 2f64.powi(-8));
        assert_eq!(round_to_format(-1.0001, BF16, Rounding::Down), -1.0 - 2f64.powi(-7));
        assert_eq!(round_to_format(1e300, F16, Rounding::Down), 65504.0);
    }

    #[test]
    fn maximum_and_minimum_propagate_nan_and_order_zeros() {
        assert!(maximum(1.0f32, f32::NAN).is_nan());
        assert!(minimum(f64::NAN, 1.0).is_nan());
        assert!(maximum(-0.0f64, 0.0).is_sign_positive());
        assert!(maximum(0.0f64, -0.0).is_sign_positive());
        assert!(minimum(0.0f64, -0.0).is_sign_negative());
        assert!(minimum(-0.0f64, 0.0).is_sign_negative());
        assert_eq!(maximum(2.0f32, 3.0), 3.0);
        assert_eq!(minimum(2.0f32, 3.0), 2.0);
    }
}
