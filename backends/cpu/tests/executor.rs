//! A small program built by hand — gather, loop kernels (one reducing), a
//! gemm, a full reduction with dropout-style random numbers, scatter_add —
//! run through the executor on the reference path and compared with the
//! graph interpreter on the equivalent graph.

use std::collections::BTreeMap;

use lpac_cpu::{Executor, reference};
use lpac_ir::interp::{self, Precision, RunContext, Tensor};
use lpac_ir::kernel::{
    BufferId, BufferKind, Expr, ExprId, GemmKernel, IndexMap, Kernel, LoopKernel, Operand, Program, Reduction, Typed,
};
use lpac_ir::op::{BinaryOp, ReduceOp, UnaryOp};
use lpac_ir::random::uniform;
use lpac_ir::types::{DType, TensorType};
use lpac_ir::{Graph, NodeId, Op, Origin};

const T: usize = 6; // tokens
const V: usize = 10; // vocabulary
const D: usize = 8; // width
const E: usize = 5; // projection
const SEED: u64 = 11;
const STEP: u64 = 4;
const KEY: u64 = 5;

fn f32t(shape: &[usize]) -> TensorType {
    TensorType::new(DType::F32, shape.to_vec())
}

fn map(offset: i64, strides: &[i64]) -> IndexMap {
    IndexMap { offset, strides: strides.to_vec() }
}

fn f(expr: Expr) -> Typed {
    Typed { expr, dtype: DType::F32 }
}

fn loop_kernel(
    name: &str,
    domain: &[usize],
    reduce: &[usize],
    exprs: Vec<Typed>,
    reduction: Option<Reduction>,
    out: BufferId,
) -> Kernel {
    let last = ExprId(exprs.len() as u32 - 1);
    Kernel::Loop(LoopKernel {
        name: name.into(),
        domain: domain.to_vec(),
        reduce: reduce.to_vec(),
        exprs,
        reduction,
        outputs: vec![(out, last)],
        nodes: vec![],
    })
}

/// h = emb[tokens]; mu = Σ_j h / D; x = tanh(h - mu); y = x·W;
/// loss = Σ select(u < 0.8, y², 0) with u random; demb = scatter_add(tokens, x).
fn program() -> Program {
    let mut p = Program { name: "integration".into(), ..Program::default() };
    let tokens = p.add_buffer(TensorType::new(DType::I32, vec![T]), BufferKind::Input("tokens".into()));
    let emb = p.add_buffer(f32t(&[V, D]), BufferKind::Param("emb".into()));
    let w = p.add_buffer(f32t(&[D, E]), BufferKind::Param("w".into()));
    let h = p.add_buffer(f32t(&[T, D]), BufferKind::Temp);
    let mu = p.add_buffer(f32t(&[T]), BufferKind::Temp);
    let x = p.add_buffer(f32t(&[T, D]), BufferKind::Temp);
    let y = p.add_buffer(f32t(&[T, E]), BufferKind::Temp);
    let loss = p.add_buffer(f32t(&[]), BufferKind::Temp);
    let demb = p.add_buffer(f32t(&[V, D]), BufferKind::Temp);
    p.kernels.push(Kernel::Gather { name: "embed".into(), table: emb, indices: tokens, out: h, nodes: vec![] });
    p.kernels.push(loop_kernel(
        "mean",
        &[T],
        &[D],
        vec![
            f(Expr::Load { buffer: h, index: map(0, &[D as i64, 1]) }),
            f(Expr::Accumulated),
            f(Expr::Const(1.0 / D as f64)),
            f(Expr::Binary(BinaryOp::Mul, ExprId(1), ExprId(2))),
        ],
        Some(Reduction { op: ReduceOp::Sum, value: ExprId(0) }),
        mu,
    ));
    p.kernels.push(loop_kernel(
        "centre_tanh",
        &[T, D],
        &[],
        vec![
            f(Expr::Load { buffer: h, index: map(0, &[D as i64, 1]) }),
            f(Expr::Load { buffer: mu, index: map(0, &[1, 0]) }),
            f(Expr::Binary(BinaryOp::Sub, ExprId(0), ExprId(1))),
            f(Expr::Unary(UnaryOp::Tanh, ExprId(2))),
        ],
        None,
        x,
    ));
    p.kernels.push(Kernel::Gemm(GemmKernel {
        name: "project".into(),
        batch: vec![],
        m: T,
        k: D,
        n: E,
        a: Operand { buffer: x, offset: 0, batch_strides: vec![], row_stride: D as i64, col_stride: 1 },
        b: Operand { buffer: w, offset: 0, batch_strides: vec![], row_stride: E as i64, col_stride: 1 },
        c: y,
        nodes: vec![],
    }));
    p.kernels.push(loop_kernel(
        "masked_square_sum",
        &[],
        &[T, E],
        vec![
            f(Expr::Load { buffer: y, index: map(0, &[E as i64, 1]) }),
            f(Expr::Binary(BinaryOp::Mul, ExprId(0), ExprId(0))),
            f(Expr::Random { key: KEY, counter: map(0, &[E as i64, 1]) }),
            f(Expr::Const(0.8)),
            Typed { expr: Expr::Binary(BinaryOp::Lt, ExprId(2), ExprId(3)), dtype: DType::Bool },
            f(Expr::Const(0.0)),
            f(Expr::Select(ExprId(4), ExprId(1), ExprId(5))),
            f(Expr::Accumulated),
        ],
        Some(Reduction { op: ReduceOp::Sum, value: ExprId(6) }),
        loss,
    ));
    p.kernels.push(Kernel::ScatterAdd { name: "demb".into(), indices: tokens, src: x, out: demb, nodes: vec![] });
    p.outputs = vec![("loss".into(), loss), ("demb".into(), demb), ("y".into(), y), ("mu".into(), mu)];
    p
}

/// The same computation as a graph, for the interpreter.
fn graph() -> Graph {
    let mut g = Graph::new("integration");
    let add = |g: &mut Graph, op: Op, inputs: &[NodeId], ty: Option<TensorType>| {
        g.add(op, inputs.to_vec(), ty, Origin::default()).expect("well-typed")
    };
    let tokens = add(&mut g, Op::Input { name: "tokens".into() }, &[], Some(TensorType::new(DType::I32, vec![T])));
    let init = lpac_ir::Init::Const { value: 0.0 };
    let emb = add(&mut g, Op::Param { path: "emb".into(), init: init.clone() }, &[], Some(f32t(&[V, D])));
    let w = add(&mut g, Op::Param { path: "w".into(), init }, &[], Some(f32t(&[D, E])));
    let h = add(&mut g, Op::Gather, &[emb, tokens], None);
    let sum = add(&mut g, Op::Reduce { op: ReduceOp::Sum, axes: vec![1] }, &[h], None);
    let scale = add(&mut g, Op::Const { value: 1.0 / D as f64 }, &[], Some(f32t(&[T])));
    let mu = add(&mut g, Op::Binary(BinaryOp::Mul), &[sum, scale], None);
    let mu_b = add(&mut g, Op::Broadcast { dims: vec![0] }, &[mu], Some(f32t(&[T, D])));
    let c = add(&mut g, Op::Binary(BinaryOp::Sub), &[h, mu_b], None);
    let x = add(&mut g, Op::Unary(UnaryOp::Tanh), &[c], None);
    let y = add(&mut g, Op::MatMul, &[x, w], None);
    let sq = add(&mut g, Op::Binary(BinaryOp::Mul), &[y, y], None);
    let u = add(&mut g, Op::RandomUniform { key: KEY }, &[], Some(f32t(&[T, E])));
    let keep = add(&mut g, Op::Const { value: 0.8 }, &[], Some(f32t(&[T, E])));
    let mask = add(&mut g, Op::Binary(BinaryOp::Lt), &[u, keep], None);
    let zero = add(&mut g, Op::Const { value: 0.0 }, &[], Some(f32t(&[T, E])));
    let kept = add(&mut g, Op::Select, &[mask, sq, zero], None);
    let loss = add(&mut g, Op::Reduce { op: ReduceOp::Sum, axes: vec![0, 1] }, &[kept], None);
    let demb = add(&mut g, Op::ScatterAdd, &[tokens, x], Some(f32t(&[V, D])));
    g.add_output("loss", loss);
    g.add_output("demb", demb);
    g.add_output("y", y);
    g.add_output("mu", mu);
    g
}

fn feeds(tokens: Vec<i32>) -> (BTreeMap<String, Tensor>, BTreeMap<String, Tensor>) {
    let data = |n: usize, salt: u64| (0..n as u64).map(|i| (uniform(salt, i) * 2.0 - 1.0) as f32).collect();
    let inputs = BTreeMap::from([("tokens".to_string(), Tensor::from_i32(vec![T], tokens))]);
    let params = BTreeMap::from([
        ("emb".to_string(), Tensor::from_f32(vec![V, D], data(V * D, 1))),
        ("w".to_string(), Tensor::from_f32(vec![D, E], data(D * E, 2))),
    ]);
    (inputs, params)
}

fn assert_close(name: &str, actual: &Tensor, expected: &Tensor) {
    assert_eq!(actual.shape, expected.shape, "{name}");
    let (a, e) = (actual.to_f64_vec(), expected.to_f64_vec());
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{name}[{i}]: {x} vs {y}");
    }
}

#[test]
fn executor_matches_the_interpreter() {
    let (inputs, params) = feeds(vec![3, 0, 9, 3, 7, 3]);
    let expected: BTreeMap<String, Tensor> =
        interp::run(&graph(), Precision::F32, &inputs, &params, RunContext { seed: SEED, step: STEP })
            .unwrap()
            .into_iter()
            .collect();
    let whole = reference::run_program(&program(), &inputs, &params, SEED, STEP).unwrap();
    for (threads, parallel_min) in [(1, usize::MAX), (2, 1), (3, 1)] {
        let mut ex = Executor::reference(program()).unwrap();
        ex.set_threads(threads);
        ex.set_parallel_min(parallel_min);
        // Twice: a second run on the same arena gives the same numbers.
        for _ in 0..2 {
            let out = ex.run(&inputs, &params, SEED, STEP).unwrap();
            assert_eq!(out.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
            for (name, tensor) in &out {
                assert_close(name, tensor, &expected[name]);
                assert_close(name, tensor, &whole[name]);
            }
        }
    }
    // Memory was shared: h (dead after kernel 2) and y (born at kernel 3).
    let ex = Executor::reference(program()).unwrap();
    assert!(ex.planned_peak_bytes() < ex.sum_bytes(), "{} vs {}", ex.planned_peak_bytes(), ex.sum_bytes());
    // A different step draws a different mask.
    let other = reference::run_program(&program(), &inputs, &params, SEED, STEP + 1).unwrap();
    assert_ne!(other["loss"], whole["loss"]);
}

#[test]
fn hand_computed_values() {
    // All tokens the same row: mu is that row's mean, and every row of
    // demb but that one is zero.
    let (inputs, params) = feeds(vec![2; T]);
    let mut ex = Executor::reference(program()).unwrap();
    let out = ex.run(&inputs, &params, SEED, STEP).unwrap();
    let emb = params["emb"].as_f32().unwrap();
    let row = &emb[2 * D..3 * D];
    let mean = row.iter().sum::<f32>() / D as f32;
    for &m in out["mu"].as_f32().unwrap() {
        assert!((m - mean).abs() < 1e-6);
    }
    let demb = out["demb"].as_f32().unwrap();
    for r in 0..V {
        for c in 0..D {
            let expected = if r == 2 { T as f32 * (row[c] - mean).tanh() } else { 0.0 };
            assert!((demb[r * D + c] - expected).abs() < 1e-5, "demb[{r},{c}]");
        }
    }
}

#[test]
fn errors_name_inputs_and_kernels() {
    let mut ex = Executor::reference(program()).unwrap();
    let (inputs, mut params) = feeds(vec![0; T]);
    params.remove("w");
    assert_eq!(ex.run(&inputs, &params, 0, 0).unwrap_err(), "parameter `w` was not provided");
    let (inputs, mut params) = feeds(vec![0; T]);
    params.insert("w".into(), Tensor::from_f32(vec![E, D], vec![0.0; D * E]));
    assert_eq!(ex.run(&inputs, &params, 0, 0).unwrap_err(), "parameter `w`: expected f32[8,5], got f32[5,8]");
    let (inputs, params) = feeds(vec![0, 1, 2, 10, 0, 0]);
    assert_eq!(
        ex.run(&inputs, &params, 0, 0).unwrap_err(),
        "kernel k0 \"embed\": index 10 at position 3 is out of range 0..10"
    );
}
