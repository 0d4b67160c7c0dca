//! `exp`, `log`, `tanh`: the scalar twins against f64 over wide sweeps, and
//! the generated code against the twins bit for bit.

use lpac_ir::{DType, UnaryOp};

use super::*;
use crate::codegen::math::{exp_ref, log_ref, tanh_ref};

fn fma() -> bool {
    codegen(true).uses_fma()
}

/// Relative error of `got` against the exact `want`, in units of `want`'s
/// magnitude (0 when both are the same infinity).
fn rel_err(got: f32, want: f64) -> f64 {
    if want.is_infinite() && got as f64 == want {
        return 0.0;
    }
    ((got as f64 - want) / want).abs()
}

/// Floats spread over every binade, both signs: `count` random bit
/// patterns plus a dense linear sweep of `[lo, hi]`.
fn sweep(lo: f32, hi: f32, count: usize, rng: &mut Rng) -> Vec<f32> {
    let mut xs: Vec<f32> = (0..count).map(|i| lo + (hi - lo) * (i as f32 / count as f32)).collect();
    xs.extend((0..count).map(|_| f32::from_bits(rng.next_u64() as u32)).filter(|x| x.is_finite()));
    xs
}

#[test]
fn exp_is_accurate() {
    let fma = fma();
    let mut rng = Rng::new(31);
    let mut worst: f64 = 0.0;
    for x in sweep(-110.0, 95.0, 200_000, &mut rng) {
        let got = exp_ref(x, fma);
        let want = (x as f64).exp();
        if want > f32::MAX as f64 * (1.0 + 2f64.powi(-25)) {
            assert_eq!(got, f32::INFINITY, "exp({x}) overflows");
        } else if want >= f32::MIN_POSITIVE as f64 {
            let e = rel_err(got, want);
            worst = worst.max(e);
            assert!(e <= 2.5e-7, "exp({x}) = {got}, expected {want} (rel {e:e})");
        } else {
            // Subnormal range: one rounding, so within one subnormal step.
            assert!((got as f64 - want).abs() <= 2f64.powi(-149), "exp({x}) = {got:e}, expected {want:e}");
        }
    }
    assert!(worst > 0.0);
    assert!(exp_ref(f32::NAN, fma).is_nan());
    assert_eq!(exp_ref(f32::INFINITY, fma), f32::INFINITY);
    assert_eq!(exp_ref(f32::NEG_INFINITY, fma), 0.0);
    assert_eq!(exp_ref(-1000.0, fma), 0.0);
    assert_eq!(exp_ref(1000.0, fma), f32::INFINITY);
    assert_eq!(exp_ref(0.0, fma), 1.0);
    assert_eq!(exp_ref(-0.0, fma), 1.0);
}

#[test]
fn log_is_accurate() {
    let fma = fma();
    let mut rng = Rng::new(32);
    let mut xs = sweep(0.0, 4.0, 200_000, &mut rng);
    xs.extend((1..2000).map(|i| 1.0 + i as f32 * f32::EPSILON));
    xs.extend((1..2000).map(|i| 1.0 - i as f32 * f32::EPSILON / 2.0));
    xs.extend((1..5000).map(|i| f32::from_bits(i * 1601)));
    for x in xs {
        let got = log_ref(x, fma);
        if x < 0.0 {
            assert!(got.is_nan(), "log({x}) = {got}");
            continue;
        }
        if x == 0.0 {
            assert_eq!(got, f32::NEG_INFINITY);
            continue;
        }
        let want = (x as f64).ln();
        let e = if want == 0.0 { got.abs() as f64 } else { rel_err(got, want) };
        assert!(e <= 2.5e-7, "log({x:e}) = {got:e}, expected {want:e} (rel {e:e})");
    }
    assert!(log_ref(f32::NAN, fma).is_nan());
    assert!(log_ref(f32::NEG_INFINITY, fma).is_nan());
    assert_eq!(log_ref(f32::INFINITY, fma), f32::INFINITY);
    assert_eq!(log_ref(-0.0, fma), f32::NEG_INFINITY);
    assert_eq!(log_ref(1.0, fma), 0.0);
}

#[test]
fn tanh_is_accurate() {
    let fma = fma();
    let mut rng = Rng::new(33);
    let mut xs = sweep(-20.0, 20.0, 200_000, &mut rng);
    xs.extend([1e-30, -1e-30, 1e-40, 0.624_999_9, 0.625, -0.625, 9.0, 1e10]);
    for x in xs {
        let got = tanh_ref(x, fma);
        let want = (x as f64).tanh();
        assert!((got as f64 - want).abs() <= 1e-6, "tanh({x:e}) = {got:e}, expected {want:e}");
        if x.abs() < 0.5 && x != 0.0 {
            assert!(rel_err(got, want) <= 1e-6, "tanh({x:e}) = {got:e}, expected {want:e}");
        }
    }
    assert!(tanh_ref(f32::NAN, fma).is_nan());
    assert_eq!(tanh_ref(f32::INFINITY, fma), 1.0);
    assert_eq!(tanh_ref(f32::NEG_INFINITY, fma), -1.0);
    assert!(tanh_ref(-0.0, fma).is_sign_negative());
}

#[test]
fn generated_code_matches_the_twins_bit_for_bit() {
    let mut rng = Rng::new(34);
    let mut xs = sweep(-110.0, 110.0, 20_000, &mut rng);
    xs.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1e-45, f32::MIN_POSITIVE, f32::MAX]);
    let n = xs.len();
    for op in [UnaryOp::Exp, UnaryOp::Log, UnaryOp::Tanh] {
        for vectorize in [true, false] {
            let mut kb = Kb::new(&[n], &[]);
            let x = kb.buffer(DType::F32, &[n]);
            let xe = kb.load(x, 0, &[1]);
            let y = kb.un(op, xe);
            kb.output(y);
            let mut cg = codegen(vectorize);
            let fma = cg.uses_fma();
            let c = cg.compile(&kb.program, &kb.kernel).unwrap();
            let mut bufs = vec![Host::F(xs.clone()), Host::F(vec![0.0; n])];
            run_kernel(&c, &mut bufs, 0, n, 0, 0);
            let Host::F(out) = &bufs[1] else { panic!() };
            for (&x, &y) in xs.iter().zip(out) {
                let want = match op {
                    UnaryOp::Exp => exp_ref(x, fma),
                    UnaryOp::Log => log_ref(x, fma),
                    _ => tanh_ref(x, fma),
                };
                assert!(same_f32(y, want), "{}({x:e}) = {y:e}, twin gives {want:e} (vectorize={vectorize})", op.name());
            }
        }
    }
}
