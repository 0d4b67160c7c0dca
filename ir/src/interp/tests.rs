//! Hand-computed cases for every op, precision agreement, initialisation and
//! errors. Unless a test says otherwise, `eval` runs a graph in both
//! precisions, checks that they agree, and returns the f64 result.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::real::{BF16, F16, Rounding, round_to_format};
use super::*;
use crate::graph::{Origin, Span};
use crate::op::{BinaryOp, Init, ReduceOp, UnaryOp};
use crate::random;
use crate::types::DType;

fn ty(dtype: DType, shape: &[usize]) -> TensorType {
    TensorType::new(dtype, shape.to_vec())
}

fn here(line: u32) -> Origin {
    Origin::at(Span { file: Arc::from("m.lpa"), line, col: 5 })
}

/// A graph under construction; node `%i` gets the origin `m.lpa:<i+1>:5`.
struct G(Graph);

impl G {
    fn new() -> Self {
        G(Graph::new("test"))
    }

    fn add(&mut self, op: Op, inputs: &[NodeId], given: Option<TensorType>) -> NodeId {
        let origin = here(self.0.len() as u32 + 1);
        self.0.add(op, inputs.to_vec(), given, origin).expect("well-typed test graph")
    }

    fn input(&mut self, name: &str, dtype: DType, shape: &[usize]) -> NodeId {
        self.add(Op::Input { name: name.into() }, &[], Some(ty(dtype, shape)))
    }

    fn x(&mut self, shape: &[usize]) -> NodeId {
        self.input("x", DType::F32, shape)
    }

    fn op(&mut self, op: Op, inputs: &[NodeId]) -> NodeId {
        self.add(op, inputs, None)
    }

    fn to(&mut self, op: Op, inputs: &[NodeId], dtype: DType, shape: &[usize]) -> NodeId {
        self.add(op, inputs, Some(ty(dtype, shape)))
    }

    fn konst(&mut self, value: f64, dtype: DType, shape: &[usize]) -> NodeId {
        self.to(Op::Const { value }, &[], dtype, shape)
    }

    fn unary(&mut self, u: UnaryOp, x: NodeId) -> NodeId {
        self.op(Op::Unary(u), &[x])
    }

    fn binary(&mut self, b: BinaryOp, x: NodeId, y: NodeId) -> NodeId {
        self.op(Op::Binary(b), &[x, y])
    }

    fn graph(mut self, y: NodeId) -> Graph {
        self.0.add_output("y", y);
        self.0
    }
}

fn f32s(shape: &[usize], data: &[f64]) -> Tensor {
    Tensor::from_f64(shape.to_vec(), data.to_vec())
}

fn feeds(pairs: Vec<(&str, Tensor)>) -> BTreeMap<String, Tensor> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn no_params() -> BTreeMap<String, Tensor> {
    BTreeMap::new()
}

fn run_one(g: &Graph, precision: Precision, inputs: &BTreeMap<String, Tensor>) -> Result<Tensor, InterpError> {
    Ok(run(g, precision, inputs, &no_params(), RunContext::default())?.remove(0).1)
}

/// The output `y` in f64, after checking the f32 run agrees with it.
fn eval(g: G, y: NodeId, inputs: Vec<(&str, Tensor)>) -> Vec<f64> {
    let g = g.graph(y);
    let inputs = feeds(inputs);
    let r64 = run_one(&g, Precision::F64, &inputs).unwrap();
    let r32 = run_one(&g, Precision::F32, &inputs).unwrap();
    assert_eq!(r64.ty(), g.ty(y).clone());
    assert_close(&r32.to_f64_vec(), &r64.to_f64_vec(), 1e-6);
    r64.to_f64_vec()
}

fn assert_close(actual: &[f64], expected: &[f64], rel: f64) {
    assert_eq!(actual.len(), expected.len());
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let same_special = a == e || (a.is_nan() && e.is_nan());
        assert!(same_special || (a - e).abs() <= rel * e.abs().max(1.0), "element {i}: {a} vs {e}");
    }
}

fn assert_bits(actual: &[f64], expected: &[f64]) {
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(actual), bits(expected), "{actual:?} vs {expected:?}");
}

fn bools(v: &[f64]) -> Vec<bool> {
    v.iter().map(|&x| x != 0.0).collect()
}

// ---- leaves ----

#[test]
fn const_splats_in_every_dtype() {
    let cases: [(f64, DType, f64); 6] = [
        (2.5, DType::F32, 2.5),
        (2.7, DType::I32, 2.0),
        (-2.7, DType::I32, -2.0),
        (3.0, DType::Bool, 1.0),
        (1.1, DType::BF16, 1.1015625),
        (0.1, DType::F16, 0.0999755859375),
    ];
    for (value, dtype, expected) in cases {
        let mut g = G::new();
        let c = g.konst(value, dtype, &[2, 2]);
        assert_eq!(eval(g, c, vec![]), vec![expected; 4], "{value} as {dtype}");
    }
}

#[test]
fn iota_counts_along_its_axis() {
    let mut g = G::new();
    let y = g.to(Op::Iota { axis: 1 }, &[], DType::F32, &[2, 3]);
    assert_eq!(eval(g, y, vec![]), [0., 1., 2., 0., 1., 2.]);
    let mut g = G::new();
    let y = g.to(Op::Iota { axis: 0 }, &[], DType::I32, &[2, 3]);
    assert_eq!(eval(g, y, vec![]), [0., 0., 0., 1., 1., 1.]);
}

fn random_graph(dtype: DType, n: usize) -> Graph {
    let mut g = G::new();
    let y = g.to(Op::RandomUniform { key: 5 }, &[], dtype, &[n]);
    g.graph(y)
}

#[test]
fn random_uniform_is_the_keyed_stream_in_both_precisions() {
    let g = random_graph(DType::F32, 1000);
    let ctx = RunContext { seed: 1, step: 2 };
    let draw = |precision, ctx| run(&g, precision, &no_params(), &no_params(), ctx).unwrap().remove(0).1.to_f64_vec();
    let key = random::dropout_key(1, 2, 5);
    let expected: Vec<f64> = (0..1000).map(|i| f64::from(random::uniform_f32(key, i))).collect();
    assert_bits(&draw(Precision::F32, ctx), &expected);
    assert_bits(&draw(Precision::F64, ctx), &expected);
    assert_ne!(draw(Precision::F32, RunContext { seed: 1, step: 3 }), expected, "a new step gives a new mask");
    assert_ne!(draw(Precision::F32, RunContext { seed: 2, step: 2 }), expected, "a new seed gives a new mask");
}

#[test]
fn random_uniform_in_narrow_dtypes_stays_below_one() {
    for (dtype, bits) in [(DType::BF16, 8), (DType::F16, 11)] {
        let g = random_graph(dtype, 4096);
        let out = run_one(&g, Precision::F32, &no_params()).unwrap().to_f64_vec();
        let key = random::dropout_key(0, 0, 5);
        let expected: Vec<f64> = (0..4096).map(|i| random::uniform_bits(key, i, bits)).collect();
        assert_bits(&out, &expected);
        assert!(out.iter().all(|&u| (0.0..1.0).contains(&u)));
    }
}

// ---- elementwise ----

/// An op and the f64 function it must agree with.
type UnaryCase = (UnaryOp, fn(f64) -> f64);

#[test]
fn float_unary_ops() {
    let x = [0.5, 1.0, 4.0];
    let cases: [UnaryCase; 10] = [
        (UnaryOp::Neg, |a| -a),
        (UnaryOp::Exp, f64::exp),
        (UnaryOp::Log, f64::ln),
        (UnaryOp::Sqrt, f64::sqrt),
        (UnaryOp::Rsqrt, |a| 1.0 / a.sqrt()),
        (UnaryOp::Recip, |a| 1.0 / a),
        (UnaryOp::Tanh, f64::tanh),
        (UnaryOp::Sin, f64::sin),
        (UnaryOp::Cos, f64::cos),
        (UnaryOp::Abs, f64::abs),
    ];
    for (u, f) in cases {
        let mut g = G::new();
        let xi = g.x(&[3]);
        let y = g.unary(u, xi);
        let expected: Vec<f64> = x.iter().map(|&a| f(a)).collect();
        assert_eq!(eval(g, y, vec![("x", f32s(&[3], &x))]), expected, "{}", u.name());
    }
    let mut g = G::new();
    let xi = g.x(&[2]);
    let y = g.unary(UnaryOp::Abs, xi);
    assert_eq!(eval(g, y, vec![("x", f32s(&[2], &[-2.5, 3.0]))]), [2.5, 3.0]);
    assert_eq!((0.25f64.sqrt(), 1.0 / 4f64.sqrt()), (0.5, 0.5), "hand values behind the table above");
}

#[test]
fn integer_and_bool_unary_ops() {
    let mut g = G::new();
    let x = g.input("i", DType::I32, &[3]);
    let y = g.unary(UnaryOp::Neg, x);
    let input = || vec![("i", Tensor::from_i32(vec![3], vec![5, -3, i32::MIN]))];
    assert_eq!(eval(g, y, input()), [-5., 3., f64::from(i32::MIN)], "negation wraps");
    let mut g = G::new();
    let x = g.input("i", DType::I32, &[3]);
    let y = g.unary(UnaryOp::Abs, x);
    assert_eq!(eval(g, y, input()), [5., 3., f64::from(i32::MIN)]);
    let mut g = G::new();
    let x = g.input("b", DType::Bool, &[2]);
    let y = g.unary(UnaryOp::Not, x);
    assert_eq!(eval(g, y, vec![("b", Tensor::from_bool(vec![2], vec![true, false]))]), [0., 1.]);
}

fn binary_graph(b: BinaryOp, dtype: DType, n: usize) -> (G, NodeId) {
    let mut g = G::new();
    let x = g.input("a", dtype, &[n]);
    let y = g.input("b", dtype, &[n]);
    let z = g.binary(b, x, y);
    (g, z)
}

#[test]
fn float_binary_ops() {
    let (a, b) = ([6.0, -7.0, 2.5], [4.0, 2.0, -0.5]);
    let cases: [(BinaryOp, [f64; 3]); 6] = [
        (BinaryOp::Add, [10.0, -5.0, 2.0]),
        (BinaryOp::Sub, [2.0, -9.0, 3.0]),
        (BinaryOp::Mul, [24.0, -14.0, -1.25]),
        (BinaryOp::Div, [1.5, -3.5, -5.0]),
        (BinaryOp::Max, [6.0, 2.0, 2.5]),
        (BinaryOp::Min, [4.0, -7.0, -0.5]),
    ];
    for (op, expected) in cases {
        let (g, z) = binary_graph(op, DType::F32, 3);
        assert_eq!(eval(g, z, vec![("a", f32s(&[3], &a)), ("b", f32s(&[3], &b))]), expected, "{}", op.name());
    }
    let (g, z) = binary_graph(BinaryOp::Pow, DType::F32, 3);
    let out = eval(g, z, vec![("a", f32s(&[3], &[2.0, 9.0, 0.5])), ("b", f32s(&[3], &[3.0, 0.5, 2.0]))]);
    assert_eq!(out, [8.0, 3.0, 0.25]);
}

#[test]
fn float_max_and_min_propagate_nan() {
    for op in [BinaryOp::Max, BinaryOp::Min] {
        let (g, z) = binary_graph(op, DType::F32, 2);
        let out = eval(g, z, vec![("a", f32s(&[2], &[f64::NAN, 1.0])), ("b", f32s(&[2], &[1.0, f64::NAN]))]);
        assert!(out.iter().all(|x| x.is_nan()), "{}: {out:?}", op.name());
    }
}

#[test]
fn integer_binary_ops_truncate_and_wrap() {
    let ints = |v: &[i32]| Tensor::from_i32(vec![v.len()], v.to_vec());
    let (a, b) = ([7, -7, 7, -7], [2, 2, -2, -2]);
    let cases: [(BinaryOp, [f64; 4]); 6] = [
        (BinaryOp::Div, [3., -3., -3., 3.]),
        (BinaryOp::Add, [9., -5., 5., -9.]),
        (BinaryOp::Sub, [5., -9., 9., -5.]),
        (BinaryOp::Mul, [14., -14., -14., 14.]),
        (BinaryOp::Max, [7., 2., 7., -2.]),
        (BinaryOp::Min, [2., -7., -2., -7.]),
    ];
    for (op, expected) in cases {
        let (g, z) = binary_graph(op, DType::I32, 4);
        assert_eq!(eval(g, z, vec![("a", ints(&a)), ("b", ints(&b))]), expected, "{}", op.name());
    }
    let (g, z) = binary_graph(BinaryOp::Add, DType::I32, 1);
    assert_eq!(eval(g, z, vec![("a", ints(&[i32::MAX])), ("b", ints(&[1]))]), [f64::from(i32::MIN)]);
    let (g, z) = binary_graph(BinaryOp::Div, DType::I32, 1);
    assert_eq!(eval(g, z, vec![("a", ints(&[i32::MIN])), ("b", ints(&[-1]))]), [f64::from(i32::MIN)]);
}

#[test]
fn integer_division_by_zero_is_an_error() {
    let (g, z) = binary_graph(BinaryOp::Div, DType::I32, 2);
    let g = g.graph(z);
    let inputs =
        feeds(vec![("a", Tensor::from_i32(vec![2], vec![1, 2])), ("b", Tensor::from_i32(vec![2], vec![1, 0]))]);
    let err = run_one(&g, Precision::F64, &inputs).unwrap_err();
    assert_eq!(err.node, Some(z));
    assert_eq!(err.to_string(), "%2 (div) at m.lpa:3:5: i32 division by zero at element 1");
}

#[test]
fn comparisons_and_logic() {
    let (a, b) = ([1.0, 2.0, f64::NAN], [2.0, 2.0, 1.0]);
    let cases: [(BinaryOp, [bool; 3]); 6] = [
        (BinaryOp::Lt, [true, false, false]),
        (BinaryOp::Le, [true, true, false]),
        (BinaryOp::Gt, [false, false, false]),
        (BinaryOp::Ge, [false, true, false]),
        (BinaryOp::Eq, [false, true, false]),
        (BinaryOp::Ne, [true, false, true]),
    ];
    for (op, expected) in cases {
        let (g, z) = binary_graph(op, DType::F32, 3);
        let out = eval(g, z, vec![("a", f32s(&[3], &a)), ("b", f32s(&[3], &b))]);
        assert_eq!(bools(&out), expected, "{}", op.name());
        let (g, z) = binary_graph(op, DType::I32, 2);
        let ints = |v: Vec<i32>| Tensor::from_i32(vec![2], v);
        let out = eval(g, z, vec![("a", ints(vec![1, 2])), ("b", ints(vec![2, 2]))]);
        assert_eq!(bools(&out), expected[..2], "i32 {}", op.name());
    }
    let bits = |v: Vec<bool>| Tensor::from_bool(vec![4], v);
    let (p, q) = (vec![true, true, false, false], vec![true, false, true, false]);
    for (op, expected) in [
        (BinaryOp::And, [true, false, false, false]),
        (BinaryOp::Or, [true, true, true, false]),
        (BinaryOp::Eq, [true, false, false, true]),
        (BinaryOp::Ne, [false, true, true, false]),
    ] {
        let (g, z) = binary_graph(op, DType::Bool, 4);
        assert_eq!(bools(&eval(g, z, vec![("a", bits(p.clone())), ("b", bits(q.clone()))])), expected);
    }
}

#[test]
fn select_picks_per_element() {
    let mut g = G::new();
    let c = g.input("c", DType::Bool, &[3]);
    let a = g.input("a", DType::F32, &[3]);
    let b = g.input("b", DType::F32, &[3]);
    let y = g.op(Op::Select, &[c, a, b]);
    let inputs = vec![
        ("c", Tensor::from_bool(vec![3], vec![true, false, true])),
        ("a", f32s(&[3], &[1.0, 2.0, 3.0])),
        ("b", f32s(&[3], &[-1.0, -2.0, -3.0])),
    ];
    assert_eq!(eval(g, y, inputs), [1.0, -2.0, 3.0]);
}

// ---- reductions ----

/// 0, 1, ..., 23 as a 2×3×4 tensor: element [i,j,k] is 12i + 4j + k.
fn counting(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    f32s(shape, &(0..n).map(|i| i as f64).collect::<Vec<_>>())
}

fn reduce(op: ReduceOp, axes: &[usize], x: Tensor) -> Vec<f64> {
    let mut g = G::new();
    let xi = g.x(&x.shape.clone());
    let y = g.op(Op::Reduce { op, axes: axes.to_vec() }, &[xi]);
    eval(g, y, vec![("x", x)])
}

#[test]
fn reduce_sum_and_max_over_axes() {
    // sum over i and k of 12i + 4j + k = 32j + 60.
    assert_eq!(reduce(ReduceOp::Sum, &[0, 2], counting(&[2, 3, 4])), [60.0, 92.0, 124.0]);
    // max over j of 12i + 4j + k = 12i + 8 + k.
    assert_eq!(reduce(ReduceOp::Max, &[1], counting(&[2, 3, 4])), [8., 9., 10., 11., 20., 21., 22., 23.]);
    assert_eq!(reduce(ReduceOp::Sum, &[0, 1, 2], counting(&[2, 3, 4])), [276.0]);
    assert_eq!(reduce(ReduceOp::Max, &[0], f32s(&[3], &[-5.0, -2.0, -9.0])), [-2.0]);
    assert!(reduce(ReduceOp::Max, &[0], f32s(&[3], &[1.0, f64::NAN, 2.0]))[0].is_nan());
    let mut g = G::new();
    let x = g.input("i", DType::I32, &[2, 2]);
    let y = g.op(Op::Reduce { op: ReduceOp::Sum, axes: vec![1] }, &[x]);
    assert_eq!(eval(g, y, vec![("i", Tensor::from_i32(vec![2, 2], vec![1, 2, 30, 40]))]), [3.0, 70.0]);
}

#[test]
fn reduce_accumulates_in_index_order_in_f32() {
    // 1 + 1e8 - 1e8 in f32 in order: (1 + 1e8) rounds to 1e8, so the sum is 0.
    let mut g = G::new();
    let x = g.x(&[3]);
    let y = g.op(Op::Reduce { op: ReduceOp::Sum, axes: vec![0] }, &[x]);
    let g = g.graph(y);
    let inputs = feeds(vec![("x", f32s(&[3], &[1.0, 1e8, -1e8]))]);
    assert_eq!(run_one(&g, Precision::F32, &inputs).unwrap().to_f64_vec(), [0.0]);
    assert_eq!(run_one(&g, Precision::F64, &inputs).unwrap().to_f64_vec(), [1.0]);
}

// ---- movement ----

#[test]
fn reshape_keeps_row_major_order() {
    let mut g = G::new();
    let x = g.x(&[2, 3]);
    let y = g.to(Op::Reshape, &[x], DType::F32, &[3, 2]);
    assert_eq!(eval(g, y, vec![("x", counting(&[2, 3]))]), [0., 1., 2., 3., 4., 5.]);
}

#[test]
fn permute_of_a_2x3x4() {
    let mut g = G::new();
    let x = g.x(&[2, 3, 4]);
    let y = g.op(Op::Permute { perm: vec![2, 0, 1] }, &[x]);
    assert_eq!(g.0.ty(y).shape, vec![4, 2, 3]);
    let out = eval(g, y, vec![("x", counting(&[2, 3, 4]))]);
    // out[a,b,c] = x[b,c,a] = 12b + 4c + a, stored at 6a + 3b + c.
    let at = |a: usize, b: usize, c: usize| out[6 * a + 3 * b + c];
    assert_eq!(at(3, 1, 2), 23.0);
    assert_eq!(at(0, 0, 1), 4.0);
    assert_eq!(at(1, 0, 0), 1.0);
    assert_eq!(at(2, 1, 0), 14.0);
    assert_eq!(&out[..6], [0., 4., 8., 12., 16., 20.]);
}

#[test]
fn broadcast_stretches_and_adds_axes() {
    let mut g = G::new();
    let x = g.x(&[3, 1]);
    let y = g.to(Op::Broadcast { dims: vec![1, 2] }, &[x], DType::F32, &[2, 3, 4]);
    let out = eval(g, y, vec![("x", f32s(&[3, 1], &[1.0, 2.0, 3.0]))]);
    let expected: Vec<f64> = (0..24).map(|i| [1.0, 2.0, 3.0][(i / 4) % 3]).collect();
    assert_eq!(out, expected);
    let mut g = G::new();
    let x = g.x(&[3]);
    let y = g.to(Op::Broadcast { dims: vec![0] }, &[x], DType::F32, &[3, 2]);
    assert_eq!(eval(g, y, vec![("x", f32s(&[3], &[1.0, 2.0, 3.0]))]), [1., 1., 2., 2., 3., 3.]);
    let mut g = G::new();
    let x = g.x(&[]);
    let y = g.to(Op::Broadcast { dims: vec![] }, &[x], DType::F32, &[2]);
    assert_eq!(eval(g, y, vec![("x", f32s(&[], &[7.0]))]), [7., 7.]);
}

#[test]
fn slice_concat_and_pad() {
    let mut g = G::new();
    let x = g.x(&[2, 5]);
    let y = g.op(Op::Slice { axis: 1, start: 1, end: 4 }, &[x]);
    assert_eq!(eval(g, y, vec![("x", counting(&[2, 5]))]), [1., 2., 3., 6., 7., 8.]);

    let concat = |axis: usize, a_shape: &[usize], b_shape: &[usize]| {
        let mut g = G::new();
        let a = g.input("a", DType::F32, a_shape);
        let b = g.input("b", DType::F32, b_shape);
        let y = g.op(Op::Concat { axis }, &[a, b]);
        eval(g, y, vec![("a", f32s(a_shape, &[1., 2.])), ("b", f32s(b_shape, &[3., 4., 5., 6.]))])
    };
    assert_eq!(concat(1, &[2, 1], &[2, 2]), [1., 3., 4., 2., 5., 6.]);
    assert_eq!(concat(0, &[1, 2], &[2, 2]), [1., 2., 3., 4., 5., 6.]);

    let mut g = G::new();
    let x = g.x(&[2, 2]);
    let y = g.op(Op::Pad { axis: 1, lo: 1, hi: 2, value: -1.0 }, &[x]);
    let out = eval(g, y, vec![("x", f32s(&[2, 2], &[1., 2., 3., 4.]))]);
    assert_eq!(out, [-1., 1., 2., -1., -1., -1., 3., 4., -1., -1.]);
}

#[test]
fn concat_of_three_operands_along_the_last_axis() {
    let mut g = G::new();
    let a = g.input("a", DType::I32, &[2, 1]);
    let b = g.input("b", DType::I32, &[2, 2]);
    let y = g.op(Op::Concat { axis: 1 }, &[a, b, a]);
    let inputs =
        vec![("a", Tensor::from_i32(vec![2, 1], vec![0, 9])), ("b", Tensor::from_i32(vec![2, 2], vec![1, 2, 3, 4]))];
    assert_eq!(eval(g, y, inputs), [0., 1., 2., 0., 9., 3., 4., 9.]);
}

// ---- matmul, gather, scatter ----

fn matmul(a_shape: &[usize], a: &[f64], b_shape: &[usize], b: &[f64]) -> Vec<f64> {
    let mut g = G::new();
    let ai = g.input("a", DType::F32, a_shape);
    let bi = g.input("b", DType::F32, b_shape);
    let y = g.op(Op::MatMul, &[ai, bi]);
    eval(g, y, vec![("a", f32s(a_shape, a)), ("b", f32s(b_shape, b))])
}

#[test]
fn matmul_by_hand() {
    // [1 2 3; 4 5 6] @ [7 8; 9 10; 11 12] = [1*7+2*9+3*11, 1*8+2*10+3*12; ...]
    let (a, b) = ([1., 2., 3., 4., 5., 6.], [7., 8., 9., 10., 11., 12.]);
    assert_eq!(matmul(&[2, 3], &a, &[3, 2], &b), [58., 64., 139., 154.]);
    // The same rows as a batch of two [1,3] matrices sharing the right operand.
    assert_eq!(matmul(&[2, 1, 3], &a, &[3, 2], &b), [58., 64., 139., 154.]);
    // Batched on both sides: [1 2]@[3;4] = 11 and [5 6]@[7;8] = 83.
    assert_eq!(matmul(&[2, 1, 2], &[1., 2., 5., 6.], &[2, 2, 1], &[3., 4., 7., 8.]), [11., 83.]);
}

#[test]
fn gather_rows_and_scatter_add_them_back() {
    let mut g = G::new();
    let t = g.input("t", DType::F32, &[4, 2]);
    let i = g.input("i", DType::I32, &[2, 2]);
    let y = g.op(Op::Gather, &[t, i]);
    assert_eq!(g.0.ty(y).shape, vec![2, 2, 2]);
    let idx = || Tensor::from_i32(vec![2, 2], vec![2, 0, 2, 3]);
    let out = eval(g, y, vec![("t", counting(&[4, 2])), ("i", idx())]);
    assert_eq!(out, [4., 5., 0., 1., 4., 5., 6., 7.]);

    let mut g = G::new();
    let i = g.input("i", DType::I32, &[2, 2]);
    let s = g.input("s", DType::F32, &[2, 2, 2]);
    let y = g.to(Op::ScatterAdd, &[i, s], DType::F32, &[4, 2]);
    let src = f32s(&[2, 2, 2], &[1., 2., 3., 4., 5., 6., 7., 8.]);
    // Row 2 gets rows 0 and 2 of src; row 0 gets row 1; row 3 gets row 3; row 1 nothing.
    assert_eq!(eval(g, y, vec![("i", idx()), ("s", src)]), [3., 4., 0., 0., 6., 8., 7., 8.]);
}

#[test]
fn scatter_add_is_the_adjoint_of_gather() {
    // <gather(t, i), s> == <t, scatter_add(i, s)> for any t and s.
    let mut g = G::new();
    let t = g.input("t", DType::F32, &[5, 3]);
    let i = g.input("i", DType::I32, &[7]);
    let s = g.input("s", DType::F32, &[7, 3]);
    let rows = g.op(Op::Gather, &[t, i]);
    let back = g.to(Op::ScatterAdd, &[i, s], DType::F32, &[5, 3]);
    let lhs = g.binary(BinaryOp::Mul, rows, s);
    let rhs = g.binary(BinaryOp::Mul, t, back);
    let lhs = g.op(Op::Reduce { op: ReduceOp::Sum, axes: vec![0, 1] }, &[lhs]);
    let rhs = g.op(Op::Reduce { op: ReduceOp::Sum, axes: vec![0, 1] }, &[rhs]);
    let y = g.binary(BinaryOp::Sub, lhs, rhs);
    let key = random::param_key(0, "adjoint");
    let normals = |n: u64, offset: u64| (0..n).map(|c| random::normal(key, c + offset)).collect::<Vec<_>>();
    let inputs = vec![
        ("t", f32s(&[5, 3], &normals(15, 0))),
        ("i", Tensor::from_i32(vec![7], vec![4, 0, 4, 1, 2, 4, 0])),
        ("s", f32s(&[7, 3], &normals(21, 100))),
    ];
    assert!(eval(g, y, inputs)[0].abs() < 1e-12);
}

fn index_error(op: Op, index: i32) -> InterpError {
    let mut g = G::new();
    let t = g.input("t", DType::F32, &[4, 2]);
    let i = g.input("i", DType::I32, &[2]);
    let y = match op {
        Op::Gather => g.op(Op::Gather, &[t, i]),
        _ => {
            let s = g.input("s", DType::F32, &[2, 2]);
            g.to(Op::ScatterAdd, &[i, s], DType::F32, &[4, 2])
        }
    };
    let g = g.graph(y);
    let inputs = feeds(vec![
        ("t", counting(&[4, 2])),
        ("i", Tensor::from_i32(vec![2], vec![1, index])),
        ("s", counting(&[2, 2])),
    ]);
    run_one(&g, Precision::F32, &inputs).unwrap_err()
}

#[test]
fn out_of_range_indices_are_errors() {
    let err = index_error(Op::Gather, 4);
    assert_eq!(err.to_string(), "%2 (gather) at m.lpa:3:5: index 4 at position 1 is out of range 0..4");
    let err = index_error(Op::ScatterAdd, -1);
    assert_eq!(err.to_string(), "%3 (scatter_add) at m.lpa:4:5: index -1 at position 1 is out of range 0..4");
}

// ---- cast and narrow dtypes ----

fn cast(x: Tensor, to: DType) -> Vec<f64> {
    let mut g = G::new();
    let xi = g.input("x", x.dtype, &x.shape.clone());
    let y = g.to(Op::Cast, &[xi], to, &x.shape.clone());
    eval(g, y, vec![("x", x)])
}

#[test]
fn casts_between_all_kinds() {
    let floats = f32s(&[5], &[-1.7, 2.9, 0.0, f64::NAN, 1e10]);
    assert_eq!(cast(floats.clone(), DType::I32), [-1., 2., 0., 0., f64::from(i32::MAX)], "truncates, saturates");
    assert_eq!(bools(&cast(floats, DType::Bool)), [true, true, false, true, true]);
    let ints = Tensor::from_i32(vec![3], vec![-3, 0, 16_777_217]);
    assert_eq!(cast(ints.clone(), DType::Bool), [1., 0., 1.]);
    assert_eq!(cast(ints.clone(), DType::BF16), [-3., 0., 16_777_216.]);
    let bits = Tensor::from_bool(vec![2], vec![true, false]);
    assert_eq!(cast(bits.clone(), DType::F32), [1., 0.]);
    assert_eq!(cast(bits, DType::I32), [1., 0.]);
    assert_eq!(cast(f32s(&[2], &[1.1, 70000.0]), DType::F16), [1.099609375, f64::INFINITY]);
}

#[test]
fn narrow_dtypes_round_after_every_op() {
    // In bf16, 1 + 2^-8 is a tie between 1 and 1 + 2^-7 and rounds to the even 1.
    let mut g = G::new();
    let one = g.input("x", DType::BF16, &[1]);
    let tiny = g.konst(2f64.powi(-8), DType::BF16, &[1]);
    let y = g.binary(BinaryOp::Add, one, tiny);
    let y = g.binary(BinaryOp::Add, y, tiny);
    let x = Tensor { dtype: DType::BF16, shape: vec![1], data: TensorData::F32(vec![1.0]) };
    assert_eq!(eval(g, y, vec![("x", x)]), [1.0], "each add rounds back to 1");
    // Inputs of narrow dtypes are rounded on the way in.
    let mut g = G::new();
    let x = g.input("x", DType::BF16, &[1]);
    let y = g.unary(UnaryOp::Neg, x);
    let x = Tensor { dtype: DType::BF16, shape: vec![1], data: TensorData::F64(vec![1.1]) };
    assert_eq!(eval(g, y, vec![("x", x)]), [-1.1015625]);
    // A matmul accumulates in the run's precision and rounds once at the end.
    let mut g = G::new();
    let a = g.input("a", DType::BF16, &[1, 3]);
    let b = g.konst(1.0, DType::BF16, &[3, 1]);
    let y = g.op(Op::MatMul, &[a, b]);
    let a = Tensor { dtype: DType::BF16, shape: vec![1, 3], data: TensorData::F32(vec![1.0, 0.00390625, 0.00390625]) };
    assert_eq!(eval(g, y, vec![("a", a)]), [1.0078125]);
}

// ---- composites ----

/// softmax along the last axis of a [n] vector, from primitives.
fn softmax(g: &mut G, x: NodeId, n: usize) -> NodeId {
    let max = g.op(Op::Reduce { op: ReduceOp::Max, axes: vec![0] }, &[x]);
    let max = g.to(Op::Broadcast { dims: vec![] }, &[max], DType::F32, &[n]);
    let shifted = g.binary(BinaryOp::Sub, x, max);
    let e = g.unary(UnaryOp::Exp, shifted);
    let sum = g.op(Op::Reduce { op: ReduceOp::Sum, axes: vec![0] }, &[e]);
    let sum = g.to(Op::Broadcast { dims: vec![] }, &[sum], DType::F32, &[n]);
    g.binary(BinaryOp::Div, e, sum)
}

#[test]
fn softmax_from_primitives() {
    let mut g = G::new();
    let x = g.x(&[3]);
    let y = softmax(&mut g, x, 3);
    let out = eval(g, y, vec![("x", f32s(&[3], &[1.0, 2.0, 3.0]))]);
    // e^-2, e^-1, 1 over their sum 1.503214724...
    assert_close(&out, &[0.09003057317038046, 0.24472847105479764, 0.6652409557748219], 1e-15);
}

/// A small MLP with a normalisation, a softmax and a log: every kind of op a
/// model uses, with parameters from `init_params`.
fn composite_graph() -> (Graph, NodeId) {
    let mut g = G::new();
    let x = g.x(&[4, 8]);
    let param = |g: &mut G, path: &str, init: Init, shape: &[usize]| {
        g.to(Op::Param { path: path.into(), init }, &[], DType::F32, shape)
    };
    let w1 = param(&mut g, "w1", Init::Normal { mean: 0.0, std: 0.3 }, &[8, 16]);
    let b1 = param(&mut g, "b1", Init::Uniform { lo: -0.1, hi: 0.1 }, &[16]);
    let w2 = param(&mut g, "w2", Init::Normal { mean: 0.0, std: 0.3 }, &[16, 8]);
    let h = g.op(Op::MatMul, &[x, w1]);
    let b = g.to(Op::Broadcast { dims: vec![1] }, &[b1], DType::F32, &[4, 16]);
    let h = g.binary(BinaryOp::Add, h, b);
    let h = g.unary(UnaryOp::Tanh, h);
    let y = g.op(Op::MatMul, &[h, w2]);
    // Centre and scale each row (layer norm without gain).
    let mean = g.op(Op::Reduce { op: ReduceOp::Sum, axes: vec![1] }, &[y]);
    let inv_n = g.konst(1.0 / 8.0, DType::F32, &[4]);
    let mean = g.binary(BinaryOp::Mul, mean, inv_n);
    let mean = g.to(Op::Broadcast { dims: vec![0] }, &[mean], DType::F32, &[4, 8]);
    let c = g.binary(BinaryOp::Sub, y, mean);
    let sq = g.binary(BinaryOp::Mul, c, c);
    let var = g.op(Op::Reduce { op: ReduceOp::Sum, axes: vec![1] }, &[sq]);
    let var = g.binary(BinaryOp::Mul, var, inv_n);
    let eps = g.konst(1e-5, DType::F32, &[4]);
    let var = g.binary(BinaryOp::Add, var, eps);
    let r = g.unary(UnaryOp::Rsqrt, var);
    let r = g.to(Op::Broadcast { dims: vec![0] }, &[r], DType::F32, &[4, 8]);
    let n = g.binary(BinaryOp::Mul, c, r);
    // Log-softmax of each row, summed to a scalar loss.
    let max = g.op(Op::Reduce { op: ReduceOp::Max, axes: vec![1] }, &[n]);
    let max = g.to(Op::Broadcast { dims: vec![0] }, &[max], DType::F32, &[4, 8]);
    let s = g.binary(BinaryOp::Sub, n, max);
    let e = g.unary(UnaryOp::Exp, s);
    let z = g.op(Op::Reduce { op: ReduceOp::Sum, axes: vec![1] }, &[e]);
    let z = g.unary(UnaryOp::Log, z);
    let z = g.to(Op::Broadcast { dims: vec![0] }, &[z], DType::F32, &[4, 8]);
    let logp = g.binary(BinaryOp::Sub, s, z);
    let loss = g.op(Op::Reduce { op: ReduceOp::Sum, axes: vec![0, 1] }, &[logp]);
    let loss = g.unary(UnaryOp::Neg, loss);
    g.0.add_output("logp", logp);
    (g.graph(loss), logp)
}

fn composite_inputs() -> BTreeMap<String, Tensor> {
    let key = random::param_key(9, "x");
    feeds(vec![("x", f32s(&[4, 8], &(0..32).map(|c| random::normal(key, c)).collect::<Vec<_>>()))])
}

#[test]
fn f32_and_f64_runs_agree_on_a_composite_graph() {
    let (g, _) = composite_graph();
    let params = init_params(&g, 3);
    let inputs = composite_inputs();
    let r32 = run(&g, Precision::F32, &inputs, &params, RunContext::default()).unwrap();
    let r64 = run(&g, Precision::F64, &inputs, &params, RunContext::default()).unwrap();
    assert_eq!(r32.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["logp", "y"]);
    assert!(r32[0].1.as_f32().is_some() && r64[0].1.as_f64().is_some());
    for ((_, a), (_, b)) in r32.iter().zip(&r64) {
        // f32 has a relative precision of 6e-8; a few dozen roundings stay well inside 2e-6.
        assert_close(&a.to_f64_vec(), &b.to_f64_vec(), 2e-6);
    }
    assert!(r64[1].1.to_f64_vec()[0] > 0.0, "the loss is a negative log-likelihood");
}

#[test]
fn runs_are_deterministic() {
    let (g, _) = composite_graph();
    let params = init_params(&g, 3);
    let once = || run(&g, Precision::F32, &composite_inputs(), &params, RunContext::default()).unwrap();
    assert_eq!(once(), once());
}

#[test]
fn run_all_keeps_every_value_and_run_frees_them() {
    let (g, logp) = composite_graph();
    let params = init_params(&g, 3);
    let all = run_all(&g, Precision::F64, &composite_inputs(), &params, RunContext::default()).unwrap();
    assert_eq!(all.len(), g.len());
    for (t, node) in all.iter().zip(&g.nodes) {
        assert_eq!(t.ty(), node.ty);
    }
    let outputs = run(&g, Precision::F64, &composite_inputs(), &params, RunContext::default()).unwrap();
    assert_eq!(outputs[0].1, all[logp.index()]);

    // A chain of 50 exps holds at most two values at a time.
    let mut c = G::new();
    let mut y = c.x(&[16]);
    for _ in 0..50 {
        y = c.unary(UnaryOp::Exp, y);
        y = c.unary(UnaryOp::Neg, y);
    }
    let c = c.graph(y);
    let inputs = feeds(vec![("x", counting(&[16]))]);
    let env = Env { graph: &c, inputs: &inputs, params: &no_params(), ctx: RunContext::default() };
    let result = env.run::<f32>(Keep::Outputs).unwrap();
    assert_eq!(result.peak_live, 2);
    assert_eq!(result.values.iter().filter(|v| v.is_some()).count(), 1, "only the output is left");
    assert_eq!(env.run::<f32>(Keep::All).unwrap().peak_live, c.len());
}

// ---- initialisation ----

fn param_graph(params: &[(&str, Init, DType, &[usize])]) -> Graph {
    let mut g = G::new();
    for (path, init, dtype, shape) in params {
        g.to(Op::Param { path: path.to_string(), init: init.clone() }, &[], *dtype, shape);
    }
    g.0
}

fn stats(t: &Tensor) -> (f64, f64) {
    let v = t.to_f64_vec();
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    (mean, (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt())
}

#[test]
fn init_is_deterministic_per_path() {
    let specs: [(&str, Init, DType, &[usize]); 3] = [
        ("a", Init::Normal { mean: 0.0, std: 1.0 }, DType::F32, &[64, 64]),
        ("b", Init::Uniform { lo: -0.5, hi: 0.5 }, DType::F32, &[100]),
        ("c", Init::Const { value: 1.0 }, DType::F32, &[3]),
    ];
    let g = param_graph(&specs);
    let first = init_params(&g, 1);
    assert_eq!(first.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(first, init_params(&g, 1), "same seed, same bits");
    let other = init_params(&g, 2);
    assert_ne!(first["a"], other["a"]);
    assert_ne!(first["b"], other["b"]);
    assert_eq!(first["c"].as_f32(), Some(&[1.0f32; 3][..]));
    let mut reversed = specs.clone();
    reversed.reverse();
    assert_eq!(first, init_params(&param_graph(&reversed), 1), "node order does not matter");
    assert_ne!(first["a"].as_f32().unwrap()[..100], first["b"].as_f32().unwrap()[..], "paths key the stream");
}

#[test]
fn init_statistics() {
    let g = param_graph(&[
        ("w", Init::Normal { mean: 0.0, std: 0.02 }, DType::F32, &[256, 256]),
        ("u", Init::Uniform { lo: -0.25, hi: 0.75 }, DType::F32, &[256, 256]),
        ("h", Init::Uniform { lo: 0.0, hi: 1.0 }, DType::BF16, &[4096]),
    ]);
    let params = init_params(&g, 7);
    let (mean, std) = stats(&params["w"]);
    assert!(mean.abs() < 0.001, "mean {mean}");
    assert!((std / 0.02 - 1.0).abs() < 0.05, "std {std}");
    let u = params["u"].to_f64_vec();
    assert!(u.iter().all(|&x| (-0.25..0.75).contains(&x)));
    let (mean, std) = stats(&params["u"]);
    assert!((mean - 0.25).abs() < 0.01 && (std - 1.0 / 12f64.sqrt()).abs() < 0.01, "{mean} {std}");
    let h = params["h"].to_f64_vec();
    assert!(h.iter().all(|&x| (0.0..1.0).contains(&x)), "bf16 rounding must not reach hi");
    assert!(h.iter().all(|&x| round_to_format(x, BF16, Rounding::NearestEven) == x), "bf16 values");
    assert_eq!(params["h"].dtype, DType::BF16);
}

#[test]
fn f32_and_f64_runs_start_from_the_same_parameters() {
    let mut g = G::new();
    let w = g.to(Op::Param { path: "w".into(), init: Init::Normal { mean: 0.0, std: 0.02 } }, &[], DType::F32, &[10]);
    let h = g.to(Op::Param { path: "h".into(), init: Init::Normal { mean: 1.0, std: 0.1 } }, &[], DType::F16, &[10]);
    g.0.add_output("h", h);
    let g = g.graph(w);
    let params = init_params(&g, 5);
    let r32 = run(&g, Precision::F32, &no_params(), &params, RunContext::default()).unwrap();
    let r64 = run(&g, Precision::F64, &no_params(), &params, RunContext::default()).unwrap();
    for ((_, a), (_, b)) in r32.iter().zip(&r64) {
        assert_bits(&a.to_f64_vec(), &b.to_f64_vec());
    }
    assert!(r64[0].1.to_f64_vec().iter().all(|&x| round_to_format(x, F16, Rounding::NearestEven) == x));
}

// ---- errors ----

fn one_input_graph() -> Graph {
    let mut g = G::new();
    let x = g.input("x", DType::F32, &[3]);
    let w = g.to(Op::Param { path: "layers.0.w".into(), init: Init::Const { value: 0.0 } }, &[], DType::F32, &[3]);
    let y = g.binary(BinaryOp::Add, x, w);
    g.graph(y)
}

fn error_with(inputs: Vec<(&str, Tensor)>, params: Vec<(&str, Tensor)>) -> String {
    let g = one_input_graph();
    run(&g, Precision::F32, &feeds(inputs), &feeds(params), RunContext::default()).unwrap_err().to_string()
}

#[test]
fn bad_inputs_and_params_are_errors_naming_the_node() {
    let w = || ("layers.0.w", f32s(&[3], &[0.0; 3]));
    let x = || ("x", f32s(&[3], &[0.0; 3]));
    assert_eq!(error_with(vec![], vec![w()]), "%0 (input) at m.lpa:1:5: input `x` was not provided");
    assert_eq!(error_with(vec![x()], vec![]), "%1 (param) at m.lpa:2:5: parameter `layers.0.w` was not provided");
    assert_eq!(
        error_with(vec![("x", f32s(&[2], &[0.0; 2]))], vec![w()]),
        "%0 (input) at m.lpa:1:5: input `x`: expected f32[3] but was given f32[2]"
    );
    assert_eq!(
        error_with(vec![("x", Tensor::from_i32(vec![3], vec![0; 3]))], vec![w()]),
        "%0 (input) at m.lpa:1:5: input `x`: expected f32[3] but was given i32[3]"
    );
    assert_eq!(
        error_with(vec![("x", f32s(&[3], &[0.0; 2]))], vec![w()]),
        "%0 (input) at m.lpa:1:5: input `x`: 2 elements for shape [3] (3 expected)"
    );
    let mislabelled = Tensor { dtype: DType::F32, shape: vec![3], data: TensorData::I32(vec![0; 3]) };
    assert_eq!(
        error_with(vec![x()], vec![("layers.0.w", mislabelled)]),
        "%1 (param) at m.lpa:2:5: parameter `layers.0.w`: i32 data cannot hold f32 elements"
    );
    assert!(
        run(&one_input_graph(), Precision::F32, &feeds(vec![x()]), &feeds(vec![w()]), RunContext::default()).is_ok()
    );
}

#[test]
fn ill_typed_graphs_are_errors_not_panics() {
    let mut g = Graph::new("bad");
    let x = g.add(Op::Input { name: "x".into() }, vec![], Some(ty(DType::F32, &[3])), Origin::default()).unwrap();
    let bad =
        crate::graph::Node { op: Op::MatMul, inputs: vec![x, x], ty: ty(DType::F32, &[3]), origin: Origin::default() };
    let y = g.push_unchecked(bad);
    g.add_output("y", y);
    let inputs = feeds(vec![("x", f32s(&[3], &[1.0, 2.0, 3.0]))]);
    let err = run(&g, Precision::F64, &inputs, &no_params(), RunContext::default()).unwrap_err();
    assert_eq!(err.node, Some(y));
    assert!(err.to_string().starts_with("%1 (matmul): ill-typed node: matmul needs rank >= 2"), "{err}");

    let forward = crate::graph::Node { op: Op::Unary(UnaryOp::Neg), inputs: vec![NodeId(5)], ..g.nodes[0].clone() };
    g.push_unchecked(forward);
    assert!(run(&g, Precision::F64, &inputs, &no_params(), RunContext::default()).is_err());

    let mut g = Graph::new("dangling");
    g.add_output("y", NodeId(3));
    let err = run(&g, Precision::F64, &inputs, &no_params(), RunContext::default()).unwrap_err();
    assert_eq!(err.to_string(), "output `y` names %3, which does not exist");
}
