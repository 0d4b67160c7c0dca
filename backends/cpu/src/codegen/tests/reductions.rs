//! Reductions: sum and max over one and two reduce axes, vectorised along
//! the reduce axis, along the domain axis, or not at all.

use lpac_ir::kernel::Expr;
use lpac_ir::{BinaryOp, DType, ReduceOp, UnaryOp};

use super::*;

const F: DType = DType::F32;

/// `y[i] = op_r x[i, r]` (or over `[r0, r1]`) with `x` contiguous, plus a
/// post-reduction expression `z = acc * 2 + b[i]`.
fn row_reduction(op: ReduceOp, rows: usize, reduce: &[usize]) -> Kb {
    let mut kb = Kb::new(&[rows], reduce);
    kb.kernel.name = format!("{}_{rows}_{reduce:?}", op.name());
    let per_row: usize = reduce.iter().product();
    let x = kb.buffer(F, &[rows * per_row]);
    let b = kb.buffer(F, &[rows]);
    let mut strides = vec![per_row as i64];
    strides.extend(lpac_ir::types::strides(reduce).iter().map(|&s| s as i64));
    let xe = kb.load(x, 0, &strides);
    let sq = kb.bin(BinaryOp::Mul, xe, xe);
    let v = kb.bin(BinaryOp::Sub, sq, xe);
    let acc = kb.reduce(op, v);
    kb.output(acc);
    let mut bs = vec![1];
    bs.resize(1 + reduce.len(), 0);
    let be = kb.load(b, 0, &bs);
    let two = kb.konst(2.0, F);
    let a2 = kb.bin(BinaryOp::Mul, acc, two);
    let z = kb.bin(BinaryOp::Add, a2, be);
    kb.output(z);
    kb
}

#[test]
fn sums_and_maxes_over_one_and_two_axes() {
    let mut rng = Rng::new(21);
    for op in [ReduceOp::Sum, ReduceOp::Max] {
        for &e in &[1, 3, 4, 7, 64] {
            let kb = row_reduction(op, 5, &[e]);
            let mode = check(&kb, &mut rng);
            // With one element a row, the rows are contiguous and the domain
            // axis (5 rows) is vectorised instead.
            let expected = match e {
                1 => Vectorization::Domain,
                e if e >= 4 => Vectorization::Reduce,
                _ => Vectorization::Scalar,
            };
            assert_eq!(mode, expected, "{e}");
            for &e0 in &[1, 3, 4] {
                let kb = row_reduction(op, 3, &[e0, e]);
                check(&kb, &mut rng);
            }
        }
    }
}

#[test]
fn vectorised_sums_agree_with_sequential_order() {
    // The lanes order differs from the interpreter's sequential one only by
    // rounding: relative 1e-5 on sums of same-signed terms.
    let mut rng = Rng::new(22);
    for &e in &[4, 7, 64, 1000] {
        let mut kb = Kb::new(&[3], &[e]);
        let x = kb.buffer(F, &[3 * e]);
        let xe = kb.load(x, 0, &[e as i64, 1]);
        let v = kb.un(UnaryOp::Abs, xe);
        let acc = kb.reduce(ReduceOp::Sum, v);
        kb.output(acc);
        let inputs = vec![Host::F((0..3 * e).map(|_| rng.range(-2.0, 2.0) as f32).collect()), Host::F(vec![0.0; 3])];
        let mut cg = codegen(true);
        let c = cg.compile(&kb.program, &kb.kernel).unwrap();
        assert_eq!(c.vectorization, Vectorization::Reduce);
        let mut got = inputs.clone();
        run_kernel(&c, &mut got, 0, 3, 0, 0);
        let mut want = inputs.clone();
        eval(&kb.kernel, &mut want, 0, 3, 0, 0, cg.uses_fma(), Order::Sequential);
        let (Host::F(g), Host::F(w)) = (&got[1], &want[1]) else { panic!() };
        for (a, b) in g.iter().zip(w) {
            assert!((a - b).abs() <= 1e-5 * b.abs(), "{a} vs {b}");
        }
    }
}

#[test]
fn column_sums_vectorise_the_domain_and_match_exactly() {
    let mut rng = Rng::new(23);
    for op in [ReduceOp::Sum, ReduceOp::Max] {
        // y[j] = op_r x[r, j]: the reduce axis has stride 11, so the domain
        // axis runs four columns at a time, each summed in order.
        let mut kb = Kb::new(&[11], &[6]);
        let x = kb.buffer(F, &[6, 11]);
        let xe = kb.load(x, 0, &[1, 11]);
        let acc = kb.reduce(op, xe);
        let e = kb.un(UnaryOp::Exp, acc);
        kb.output(e);
        assert_eq!(check(&kb, &mut rng), Vectorization::Domain);
        // Sequential order, bit for bit.
        let mut cg = codegen(true);
        let c = cg.compile(&kb.program, &kb.kernel).unwrap();
        let inputs = random_buffers(&kb.program, &mut rng);
        let mut got = inputs.clone();
        run_kernel(&c, &mut got, 0, 11, 0, 0);
        let mut want = inputs.clone();
        eval(&kb.kernel, &mut want, 0, 11, 0, 0, cg.uses_fma(), Order::Sequential);
        assert_same(&got, &want, "column sums");
    }
}

#[test]
fn integer_reductions() {
    let mut rng = Rng::new(24);
    for op in [ReduceOp::Sum, ReduceOp::Max] {
        for &e in &[3, 9] {
            let mut kb = Kb::new(&[4], &[e]);
            let x = kb.buffer(DType::I32, &[4 * e]);
            let xe = kb.load(x, 0, &[e as i64, 1]);
            let acc = kb.reduce(op, xe);
            kb.output(acc);
            let mut inputs = random_buffers(&kb.program, &mut rng);
            inputs[0] =
                Host::I((0..4 * e).map(|i| if i % 5 == 0 { i32::MAX - i as i32 } else { i as i32 - 20 }).collect());
            check_with(&kb, &inputs, 0, 0);
        }
    }
}

#[test]
fn softmax_with_causal_mask() {
    let mut rng = Rng::new(25);
    // Row max of masked scores: m[b, i] = max_j (j <= i ? s[b, i, j] : -inf),
    // then the sum of exp(s - m) with the same mask, as two kernels.
    let t = 9;
    let mut kmax = Kb::new(&[2, t], &[t]);
    let s = kmax.buffer(F, &[2, t, t]);
    let se = kmax.load(s, 0, &[(t * t) as i64, t as i64, 1]);
    let j = kmax.push(Expr::Index(kmax.map(0, &[0, 0, 1])), DType::I32);
    let i = kmax.push(Expr::Index(kmax.map(0, &[0, 1, 0])), DType::I32);
    let keep = kmax.bin(BinaryOp::Le, j, i);
    let ninf = kmax.konst(f64::NEG_INFINITY, F);
    let masked = kmax.select(keep, se, ninf);
    let acc = kmax.reduce(ReduceOp::Max, masked);
    kmax.output(acc);
    assert_eq!(check(&kmax, &mut rng), Vectorization::Reduce);

    let mut ksum = Kb::new(&[2, t], &[t]);
    let s = ksum.buffer(F, &[2, t, t]);
    let m = ksum.buffer(F, &[2, t]);
    let se = ksum.load(s, 0, &[(t * t) as i64, t as i64, 1]);
    let me = ksum.load(m, 0, &[t as i64, 1, 0]);
    let j = ksum.push(Expr::Index(ksum.map(0, &[0, 0, 1])), DType::I32);
    let i = ksum.push(Expr::Index(ksum.map(0, &[0, 1, 0])), DType::I32);
    let keep = ksum.bin(BinaryOp::Le, j, i);
    let d = ksum.bin(BinaryOp::Sub, se, me);
    let e = ksum.un(UnaryOp::Exp, d);
    let zero = ksum.konst(0.0, F);
    let v = ksum.select(keep, e, zero);
    let acc = ksum.reduce(ReduceOp::Sum, v);
    let l = ksum.un(UnaryOp::Log, acc);
    let lse = ksum.bin(BinaryOp::Add, l, me);
    ksum.output(lse);
    assert_eq!(check(&ksum, &mut rng), Vectorization::Reduce);
}

#[test]
fn reduction_of_a_value_constant_over_the_reduce_axes() {
    let mut rng = Rng::new(26);
    // sum over r of x[i] (stride 0 along r): computed once, added 7 times.
    let mut kb = Kb::new(&[5], &[7]);
    let x = kb.buffer(F, &[5]);
    let xe = kb.load(x, 0, &[1, 0]);
    let acc = kb.reduce(ReduceOp::Sum, xe);
    kb.output(acc);
    check(&kb, &mut rng);
}

#[test]
fn empty_reduce_axis_gives_the_identity() {
    let mut rng = Rng::new(27);
    for op in [ReduceOp::Sum, ReduceOp::Max] {
        let mut kb = Kb::new(&[5], &[0]);
        let x = kb.buffer(F, &[1]);
        let xe = kb.load(x, 0, &[0, 1]);
        let acc = kb.reduce(op, xe);
        kb.output(acc);
        check(&kb, &mut rng);
    }
}

#[test]
fn domain_vectorised_reduction_with_random_and_load_if() {
    let mut rng = Rng::new(28);
    // y[i, j] = sum_r (load_if 1 <= r < 5 x[r - 1, j] else 0) * u(i, j, r),
    // + w[r, j], with the reduce axis strided (so the domain axis is
    // vectorised).
    let mut kb = Kb::new(&[2, 9], &[6]);
    let x = kb.buffer(F, &[4, 9]);
    let index = kb.map(-9, &[0, 1, 9]);
    let bound = kb.map(0, &[0, 0, 1]);
    let xe = kb.push(Expr::LoadIf { buffer: x, index, bound, lo: 1, hi: 5, default: 0.0 }, F);
    let counter = kb.map(0, &[54, 6, 1]);
    let u = kb.push(Expr::Random { key: 5, counter }, F);
    let w = kb.buffer(F, &[6, 9]);
    let we = kb.load(w, 0, &[0, 1, 9]);
    let xu = kb.bin(BinaryOp::Mul, xe, u);
    let v = kb.bin(BinaryOp::Add, xu, we);
    let acc = kb.reduce(ReduceOp::Sum, v);
    kb.output(acc);
    assert_eq!(check(&kb, &mut rng), Vectorization::Domain);
}

#[test]
fn long_sums_run_in_chunks_and_stay_accurate() {
    // Longer than SUM_CHUNK: whole chunks into fresh accumulators, exactly in
    // the evaluator's order, with and without a tail.
    let mut rng = Rng::new(24);
    for &e in &[1025, 2048, 3 * 1024 + 7] {
        for op in [ReduceOp::Sum, ReduceOp::Max] {
            check(&row_reduction(op, 2, &[e]), &mut rng);
        }
    }
    // A million same-signed terms: one running f32 total drifts from the
    // exact (f64) sum; chunked, the error stays at a few ulp.
    let e = 1 << 20;
    let mut kb = Kb::new(&[1], &[e]);
    let x = kb.buffer(F, &[e]);
    let xe = kb.load(x, 0, &[0, 1]);
    let acc = kb.reduce(ReduceOp::Sum, xe);
    kb.output(acc);
    let data: Vec<f32> = (0..e).map(|_| rng.range(0.0, 1.0) as f32).collect();
    let exact: f64 = data.iter().map(|&v| f64::from(v)).sum();
    let running = data.iter().fold(0.0f32, |a, &v| a + v);
    let mut cg = codegen(true);
    let c = cg.compile(&kb.program, &kb.kernel).unwrap();
    let mut bufs = vec![Host::F(data), Host::F(vec![0.0])];
    run_kernel(&c, &mut bufs, 0, 1, 0, 0);
    let Host::F(got) = &bufs[1] else { panic!() };
    let rel = |v: f32| (f64::from(v) - exact).abs() / exact;
    assert!(rel(got[0]) < 1e-6, "chunked sum off by {:e} (one running total: {:e})", rel(got[0]), rel(running));
    assert!(rel(got[0]) < rel(running), "{:e} vs {:e}", rel(got[0]), rel(running));
}
