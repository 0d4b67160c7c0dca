//! Element-wise kernels: loads, broadcasting, every op, select, casts,
//! `load_if`, `index` and `random`.

use lpac_ir::kernel::Expr;
use lpac_ir::{BinaryOp, DType, UnaryOp};

use super::*;

const F: DType = DType::F32;
const I: DType = DType::I32;
const B: DType = DType::Bool;

#[test]
fn elementwise_chain_with_broadcasts_is_vectorised() {
    let mut rng = Rng::new(1);
    // y[i, j] = exp(x[i, j]) * w[j] + b[i]
    let mut kb = Kb::new(&[5, 13], &[]);
    let x = kb.buffer(F, &[5, 13]);
    let w = kb.buffer(F, &[13]);
    let b = kb.buffer(F, &[5]);
    let xe = kb.load(x, 0, &[13, 1]);
    let we = kb.load(w, 0, &[0, 1]);
    let be = kb.load(b, 0, &[1, 0]);
    let e = kb.un(UnaryOp::Exp, xe);
    let m = kb.bin(BinaryOp::Mul, e, we);
    let y = kb.bin(BinaryOp::Add, m, be);
    kb.output(y);
    assert_eq!(check(&kb, &mut rng), Vectorization::Domain);
}

#[test]
fn transposed_load_keeps_the_kernel_scalar() {
    let mut rng = Rng::new(2);
    // y[i, j] = x[i, j] - t[j, i] * 0.5
    let mut kb = Kb::new(&[5, 13], &[]);
    let x = kb.buffer(F, &[5, 13]);
    let t = kb.buffer(F, &[13, 5]);
    let xe = kb.load(x, 0, &[13, 1]);
    let te = kb.load(t, 0, &[1, 5]);
    let h = kb.konst(0.5, F);
    let m = kb.bin(BinaryOp::Mul, te, h);
    let y = kb.bin(BinaryOp::Sub, xe, m);
    kb.output(y);
    assert_eq!(check(&kb, &mut rng), Vectorization::Scalar);
}

#[test]
fn three_dimensional_domain_with_offsets_and_two_outputs() {
    let mut rng = Rng::new(3);
    // x is [4, 3, 8]; y[i, j, k] = x[j, i, k + 2] (a permute and a slice),
    // z[i, j, k] = y * y + c[j]
    let mut kb = Kb::new(&[3, 4, 6], &[]);
    let x = kb.buffer(F, &[4, 3, 8]);
    let c = kb.buffer(F, &[4]);
    let xe = kb.load(x, 2, &[8, 24, 1]);
    let ce = kb.load(c, 0, &[0, 1, 0]);
    let sq = kb.bin(BinaryOp::Mul, xe, xe);
    let z = kb.bin(BinaryOp::Add, sq, ce);
    kb.output(xe);
    kb.output(z);
    assert_eq!(check(&kb, &mut rng), Vectorization::Domain);
}

#[test]
fn scalar_and_tiny_domains() {
    let mut rng = Rng::new(4);
    for domain in [vec![], vec![1], vec![3], vec![2, 1], vec![1, 5]] {
        let mut kb = Kb::new(&domain, &[]);
        let x = kb.buffer(F, &[8]);
        let strides: Vec<i64> = domain.iter().map(|_| 1).collect();
        let xe = kb.load(x, 2, &strides);
        let two = kb.konst(2.0, F);
        let y = kb.bin(BinaryOp::Mul, xe, two);
        kb.output(y);
        check(&kb, &mut rng);
    }
}

/// Floats for op tests: specials, a wide range and ordinary values.
fn op_floats(rng: &mut Rng, n: usize) -> Vec<f32> {
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        1e-40,
        -1e-40,
        f32::MIN_POSITIVE,
        88.7,
        89.5,
        -87.0,
        -103.0,
        -110.0,
        3e9,
        -3e9,
        f32::MAX,
        f32::MIN,
    ];
    (0..n)
        .map(|i| match i {
            _ if i < specials.len() => specials[i],
            _ if rng.chance(0.3) => rng.range(-100.0, 100.0) as f32,
            _ => rng.range(-4.0, 4.0) as f32,
        })
        .collect()
}

fn op_ints(rng: &mut Rng, n: usize) -> Vec<i32> {
    let specials = [0, 1, -1, i32::MIN, i32::MAX, 7, -7, 16_777_217, -16_777_217];
    (0..n).map(|i| if i < specials.len() { specials[i] } else { rng.range(-1000.0, 1000.0) as i32 }).collect()
}

/// A `[3, 11]` kernel of one op on inputs `a` (and `b`), vectorised with a
/// tail and scalar.
fn unary_kernel(op: UnaryOp, d: DType) -> Kb {
    let mut kb = Kb::new(&[3, 11], &[]);
    kb.kernel.name = format!("{}_{}", op.name(), d.name());
    let a = kb.buffer(d, &[3, 11]);
    let ae = kb.load(a, 0, &[11, 1]);
    let y = kb.un(op, ae);
    kb.output(y);
    kb
}

fn binary_kernel(op: BinaryOp, d: DType) -> Kb {
    let mut kb = Kb::new(&[3, 11], &[]);
    kb.kernel.name = format!("{}_{}", op.name(), d.name());
    let a = kb.buffer(d, &[3, 11]);
    let b = kb.buffer(d, &[3, 11]);
    let ae = kb.load(a, 0, &[11, 1]);
    let be = kb.load(b, 0, &[11, 1]);
    let y = kb.bin(op, ae, be);
    kb.output(y);
    kb
}

fn with_inputs(kb: &Kb, rng: &mut Rng, fill: &mut dyn FnMut(usize, &mut Rng) -> Host) -> Vec<Host> {
    let mut bufs = random_buffers(&kb.program, rng);
    for (i, b) in bufs.iter_mut().enumerate() {
        if kb.kernel.outputs.iter().all(|(o, _)| o.index() != i) {
            *b = fill(i, rng);
        }
    }
    bufs
}

#[test]
fn every_unary_op() {
    let mut rng = Rng::new(5);
    for op in UnaryOp::ALL {
        if op == UnaryOp::Not {
            continue;
        }
        let kb = unary_kernel(op, F);
        let inputs = with_inputs(&kb, &mut rng, &mut |_, r| Host::F(op_floats(r, 33)));
        assert_eq!(check_with(&kb, &inputs, 0, 0), Vectorization::Domain, "{op:?}");
    }
    for op in [UnaryOp::Neg, UnaryOp::Abs] {
        let kb = unary_kernel(op, I);
        let inputs = with_inputs(&kb, &mut rng, &mut |_, r| Host::I(op_ints(r, 33)));
        check_with(&kb, &inputs, 0, 0);
    }
    let kb = unary_kernel(UnaryOp::Not, B);
    check(&kb, &mut rng);
}

#[test]
fn every_binary_op() {
    let mut rng = Rng::new(6);
    let float_ops =
        [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min, BinaryOp::Pow];
    let cmp_ops = [BinaryOp::Lt, BinaryOp::Le, BinaryOp::Gt, BinaryOp::Ge, BinaryOp::Eq, BinaryOp::Ne];
    for op in float_ops.iter().chain(&cmp_ops) {
        let kb = binary_kernel(*op, F);
        // b is a shuffled a, with some elements equal (and +0 against -0).
        let a = op_floats(&mut rng, 33);
        let mut b: Vec<f32> = (0..33).map(|i| a[(i * 7 + 3) % 33]).collect();
        for i in (0..33).step_by(5) {
            b[i] = a[i];
        }
        b[3] = 0.0; // a[3] is +0: compare +0 with -0 elsewhere
        b[4] = 0.0;
        let mut n = 0;
        let inputs = with_inputs(&kb, &mut rng, &mut |_, _| {
            n += 1;
            Host::F(if n == 1 { a.clone() } else { b.clone() })
        });
        check_with(&kb, &inputs, 0, 0);
    }
    let int_ops = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min];
    for op in int_ops.iter().chain(&cmp_ops) {
        let kb = binary_kernel(*op, I);
        let a = op_ints(&mut rng, 33);
        let mut b: Vec<i32> = (0..33).map(|i| a[(i * 5 + 1) % 33]).collect();
        b[3] = -1; // i32::MIN / -1
        b[0] = 0; // 0 / 0
        b[1] = 0; // 1 / 0
        b[10] = a[10];
        let mut n = 0;
        let inputs = with_inputs(&kb, &mut rng, &mut |_, _| {
            n += 1;
            Host::I(if n == 1 { a.clone() } else { b.clone() })
        });
        check_with(&kb, &inputs, 0, 0);
    }
    for op in [BinaryOp::And, BinaryOp::Or].iter().chain(&cmp_ops) {
        let kb = binary_kernel(*op, B);
        check(&kb, &mut rng);
    }
}

#[test]
fn integer_division_by_zero_is_zero() {
    let kb = binary_kernel(BinaryOp::Div, I);
    let mut inputs = random_buffers(&kb.program, &mut Rng::new(7));
    inputs[0] = Host::I((0..33).map(|i| i * 3 - 40).collect());
    inputs[1] = Host::I((0..33).map(|i| if i % 3 == 0 { 0 } else { i - 16 }).collect());
    check_with(&kb, &inputs, 0, 0);
    let mut cg = codegen(true);
    let c = cg.compile(&kb.program, &kb.kernel).unwrap();
    run_kernel(&c, &mut inputs, 0, 33, 0, 0);
    let Host::I(out) = &inputs[2] else { panic!() };
    assert!(out.iter().step_by(3).all(|&q| q == 0));
}

#[test]
fn select_on_every_dtype() {
    let mut rng = Rng::new(8);
    for d in [F, I, B] {
        // y = select(c, a, b) with c loaded from a bool buffer, and
        // z = select(a > b, b, a) computed in the kernel.
        let mut kb = Kb::new(&[3, 11], &[]);
        let c = kb.buffer(B, &[3, 11]);
        let a = kb.buffer(d, &[11]);
        let b = kb.buffer(d, &[3, 11]);
        let ce = kb.load(c, 0, &[11, 1]);
        let ae = kb.load(a, 0, &[0, 1]);
        let be = kb.load(b, 0, &[11, 1]);
        let y = kb.select(ce, ae, be);
        kb.output(y);
        let gt = kb.bin(BinaryOp::Gt, ae, be);
        let z = kb.select(gt, be, ae);
        kb.output(z);
        assert_eq!(check(&kb, &mut rng), Vectorization::Domain);
    }
}

#[test]
fn every_cast() {
    let mut rng = Rng::new(9);
    for from in [F, I, B] {
        for to in [F, I, B] {
            let mut kb = Kb::new(&[3, 11], &[]);
            kb.kernel.name = format!("cast_{}_{}", from.name(), to.name());
            let a = kb.buffer(from, &[3, 11]);
            let ae = kb.load(a, 0, &[11, 1]);
            let y = kb.cast(ae, to);
            kb.output(y);
            let inputs = with_inputs(&kb, &mut rng, &mut |_, r| match from {
                F => Host::F(op_floats(r, 33)),
                I => Host::I(op_ints(r, 33)),
                _ => Host::B((0..33).map(|i| (i % 3 == 0) as u8).collect()),
            });
            check_with(&kb, &inputs, 0, 0);
        }
    }
}

#[test]
fn constants_of_every_dtype() {
    let mut rng = Rng::new(10);
    let mut kb = Kb::new(&[2, 5], &[]);
    for (v, d) in [(2.5, F), (-2.7, I), (3e10, I), (f64::NAN, I), (0.0, B), (f64::NAN, B), (-0.0, F), (1e-50, F)] {
        let c = kb.konst(v, d);
        kb.output(c);
    }
    check(&kb, &mut rng);
}

#[test]
fn load_if_pads() {
    let mut rng = Rng::new(11);
    for d in [F, I, B] {
        // y[i, j] = x[i, j - 2] for 2 <= j < 8, else 0.5 (x is [4, 6]): the
        // index map leaves the buffer where the bound is false.
        let mut kb = Kb::new(&[4, 10], &[]);
        let x = kb.buffer(d, &[4, 6]);
        let index = kb.map(-2, &[6, 1]);
        let bound = kb.map(0, &[0, 1]);
        let y = kb.push(Expr::LoadIf { buffer: x, index, bound, lo: 2, hi: 8, default: 0.5 }, d);
        kb.output(y);
        assert_eq!(check(&kb, &mut rng), Vectorization::Domain);
    }
}

#[test]
fn load_if_concatenates() {
    let mut rng = Rng::new(12);
    // y[i, j] = a[i, j] for j < 6, b[i, j - 6] for 6 <= j < 10.
    let mut kb = Kb::new(&[4, 10], &[]);
    let a = kb.buffer(F, &[4, 6]);
    let b = kb.buffer(F, &[4, 4]);
    let (ia, ba) = (kb.map(0, &[6, 1]), kb.map(0, &[0, 1]));
    let ea = kb.push(Expr::LoadIf { buffer: a, index: ia, bound: ba, lo: 0, hi: 6, default: 0.0 }, F);
    let (ib, bb) = (kb.map(-6, &[4, 1]), kb.map(0, &[0, 1]));
    let eb = kb.push(Expr::LoadIf { buffer: b, index: ib, bound: bb, lo: 6, hi: 10, default: 0.0 }, F);
    let j = kb.push(Expr::Index(kb.map(0, &[0, 1])), I);
    let six = kb.konst(6.0, I);
    let left = kb.bin(BinaryOp::Lt, j, six);
    let y = kb.select(left, ea, eb);
    kb.output(y);
    let inputs = random_buffers(&kb.program, &mut rng);
    check_with(&kb, &inputs, 0, 0);
    // And against the concatenation itself.
    let mut cg = codegen(true);
    let c = cg.compile(&kb.program, &kb.kernel).unwrap();
    let mut bufs = inputs.clone();
    run_kernel(&c, &mut bufs, 0, 40, 0, 0);
    let (Host::F(av), Host::F(bv), Host::F(yv)) = (&inputs[0], &inputs[1], &bufs[2]) else { panic!() };
    for i in 0..4 {
        for j in 0..10 {
            let want = if j < 6 { av[i * 6 + j] } else { bv[i * 4 + j - 6] };
            assert!(same_f32(yv[i * 10 + j], want));
        }
    }
}

#[test]
fn index_values() {
    let mut rng = Rng::new(13);
    for domain in [vec![3, 9], vec![3, 3]] {
        let mut kb = Kb::new(&domain, &[]);
        let m1 = kb.map(0, &[0, 1]);
        let m2 = kb.map(5, &[2, -1]);
        let m3 = kb.map(-3, &[0, 1]);
        let m4 = kb.map(3_000_000_000, &[7, 1]);
        let m5 = kb.map(-5, &[1, 0]);
        for (m, d) in [(m1, F), (m2, I), (m3, B), (m4.clone(), F), (m4, I), (m5, F)] {
            let e = kb.push(Expr::Index(m), d);
            kb.output(e);
        }
        check(&kb, &mut rng);
    }
}

#[test]
fn random_matches_the_stream() {
    let (seed, step) = (42, 9);
    for vectorize in [true, false] {
        let mut kb = Kb::new(&[3, 9], &[]);
        let counter = kb.map(100, &[9, 1]);
        let r = kb.push(Expr::Random { key: 7, counter }, F);
        kb.output(r);
        let mut cg = codegen(vectorize);
        let c = cg.compile(&kb.program, &kb.kernel).unwrap();
        let mut bufs = vec![Host::F(vec![0.0; 27])];
        run_kernel(&c, &mut bufs, 0, 27, seed, step);
        let key = lpac_ir::random::dropout_key(seed, step, 7);
        let Host::F(out) = &bufs[0] else { panic!() };
        for (i, &v) in out.iter().enumerate() {
            assert_eq!(v, lpac_ir::random::uniform_f32(key, 100 + i as u64), "element {i}");
        }
    }
}

#[test]
fn dropout() {
    let mut rng = Rng::new(14);
    // y = r < 0.25 ? 0 : x / 0.75, with r a random stream over the domain,
    // and the mask kept as a bool output.
    let mut kb = Kb::new(&[6, 10], &[]);
    let x = kb.buffer(F, &[6, 10]);
    let xe = kb.load(x, 0, &[10, 1]);
    let counter = kb.domain_map();
    let r = kb.push(Expr::Random { key: 3, counter }, F);
    let p = kb.konst(0.25, F);
    let drop = kb.bin(BinaryOp::Lt, r, p);
    let zero = kb.konst(0.0, F);
    let scale = kb.konst(0.75, F);
    let kept = kb.bin(BinaryOp::Div, xe, scale);
    let y = kb.select(drop, zero, kept);
    kb.output(y);
    kb.output(drop);
    assert_eq!(check(&kb, &mut rng), Vectorization::Domain);
}

#[test]
fn row_level_values_are_hoisted_correctly() {
    let mut rng = Rng::new(15);
    // Expressions of the outer coordinates only (computed once a row),
    // including transcendental ones and a random number per row.
    let mut kb = Kb::new(&[4, 3, 9], &[]);
    let s = kb.buffer(F, &[4, 3]);
    let x = kb.buffer(F, &[4, 3, 9]);
    let se = kb.load(s, 0, &[3, 1, 0]);
    let ls = kb.un(UnaryOp::Tanh, se);
    let counter = kb.map(0, &[3, 1, 0]);
    let r = kb.push(Expr::Random { key: 1, counter }, F);
    let rs = kb.bin(BinaryOp::Add, ls, r);
    let xe = kb.load(x, 0, &[27, 9, 1]);
    let y = kb.bin(BinaryOp::Mul, xe, rs);
    kb.output(y);
    assert_eq!(check(&kb, &mut rng), Vectorization::Domain);
}

#[test]
fn max_and_min_with_constants() {
    let mut rng = Rng::new(16);
    for op in [BinaryOp::Max, BinaryOp::Min] {
        for c in [0.0, -0.0, 1.5, -2.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for swap in [false, true] {
                let mut kb = Kb::new(&[3, 11], &[]);
                let x = kb.buffer(F, &[3, 11]);
                let xe = kb.load(x, 0, &[11, 1]);
                let ce = kb.konst(c, F);
                let y = if swap { kb.bin(op, ce, xe) } else { kb.bin(op, xe, ce) };
                kb.output(y);
                let mut inputs = random_buffers(&kb.program, &mut rng);
                inputs[0] = Host::F(op_floats(&mut rng, 33));
                // Exact, signs of zero included.
                check_with(&kb, &inputs, 0, 0);
            }
        }
    }
}
