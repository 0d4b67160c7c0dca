//! Gradients of the `autodiff` pass against finite differences, in f64.
//!
//! 1. Every differentiable primitive op alone, on several random shapes
//!    (deterministic xorshift): `loss = reduce_sum(op(params...) * w)` with
//!    fixed random weights `w` (so the incoming gradient is not all ones).
//!    Every element of every parameter is checked against a central
//!    difference with `h = 1e-6 · max(1, |x|)`:
//!    `|fd − ad| / max(|fd|, |ad|, 1e-3) ≤ 1e-6` (`OP_TOLERANCE`, `OP_FLOOR`).
//!    Inputs are drawn away from points where the op is not differentiable
//!    (0 for abs, ties for max/min/reduce_max, ≤ 0 for log/sqrt/rsqrt/recip).
//! 2. Whole models at small sizes (tiny dense and LPA, with and without
//!    dropout; gpt; llama): the directional derivative along random
//!    directions `v` in parameter space — every parameter moved by `±h·v`,
//!    `h = 1e-6` — against `Σ grad·v`: relative error ≤ 1e-6
//!    (`MODEL_TOLERANCE`). Dropout masks stay fixed because every run uses the
//!    same `RunContext`.
//! 3. The pipeline `autodiff,simplify,cse,dce` on tiny with `check_each`:
//!    simplify, cse and dce leave every gradient output unchanged.

use std::collections::BTreeMap;
use std::path::Path;

use lpac_frontend::{Override, compile_file};
use lpac_ir::interp::{self, Precision, RunContext, Tensor};
use lpac_ir::{BinaryOp, DType, Graph, Init, NodeId, Op, Origin, ReduceOp, TensorType, UnaryOp, verify};
use lpac_passes::autodiff::{Autodiff, grad_name};
use lpac_passes::lowrank::{Lowrank, Target};
use lpac_passes::manager::{Instrumentation, run_pipeline};
use lpac_passes::pass::Pass;
use lpac_passes::registry;

const OP_TOLERANCE: f64 = 1e-6;
const OP_FLOOR: f64 = 1e-3;
const MODEL_TOLERANCE: f64 = 1e-6;
const SHAPES_PER_OP: u64 = 4;

// ---- deterministic random numbers ------------------------------------------------

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in lo..=hi.
    fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    fn sign(&mut self) -> f64 {
        if self.next() & 1 == 0 { 1.0 } else { -1.0 }
    }

    fn shape(&mut self, min_rank: usize, max_rank: usize, max_dim: usize) -> Vec<usize> {
        let rank = self.int(min_rank, max_rank);
        (0..rank).map(|_| self.int(1, max_dim)).collect()
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.int(0, i);
            v.swap(i, j);
        }
    }
}

/// Where a parameter's values are drawn.
#[derive(Clone, Copy)]
enum Dom {
    /// Uniform on [lo, hi].
    Range(f64, f64),
    /// A random sign times uniform on [lo, hi]: away from zero.
    Away(f64, f64),
}

const ANY: Dom = Dom::Range(-1.5, 1.5);
const POS: Dom = Dom::Range(0.5, 2.0);
const AWAY: Dom = Dom::Away(0.3, 1.5);

// ---- one small graph per case ---------------------------------------------------------

struct Case {
    name: String,
    graph: Graph,
    inputs: BTreeMap<String, Tensor>,
    params: BTreeMap<String, Tensor>,
}

struct Builder {
    name: String,
    g: Graph,
    inputs: BTreeMap<String, Tensor>,
    params: BTreeMap<String, Tensor>,
    rng: Rng,
}

fn f32t(shape: &[usize]) -> TensorType {
    TensorType::new(DType::F32, shape.to_vec())
}

impl Builder {
    fn new(name: &str, seed: u64) -> Builder {
        Builder {
            name: name.to_string(),
            g: Graph::new("case"),
            inputs: BTreeMap::new(),
            params: BTreeMap::new(),
            rng: Rng::new(seed ^ 0xC0FFEE),
        }
    }

    fn draw(&mut self, n: usize, dom: Dom) -> Vec<f64> {
        (0..n)
            .map(|_| match dom {
                Dom::Range(lo, hi) => self.rng.uniform(lo, hi),
                Dom::Away(lo, hi) => self.rng.sign() * self.rng.uniform(lo, hi),
            })
            .collect()
    }

    fn param_values(&mut self, shape: &[usize], values: Vec<f64>) -> NodeId {
        let path = format!("p{}", self.params.len());
        let op = Op::Param { path: path.clone(), init: Init::Const { value: 0.0 } };
        let id = self.g.add(op, vec![], Some(f32t(shape)), Origin::default()).unwrap();
        self.params.insert(path, Tensor::from_f64(shape.to_vec(), values));
        id
    }

    fn param(&mut self, shape: &[usize], dom: Dom) -> NodeId {
        let values = self.draw(shape.iter().product(), dom);
        self.param_values(shape, values)
    }

    fn input(&mut self, tensor: Tensor) -> NodeId {
        let name = format!("x{}", self.inputs.len());
        let ty = tensor.ty();
        let id = self.g.add(Op::Input { name: name.clone() }, vec![], Some(ty), Origin::default()).unwrap();
        self.inputs.insert(name, tensor);
        id
    }

    fn input_f(&mut self, shape: &[usize], dom: Dom) -> NodeId {
        let values = self.draw(shape.iter().product(), dom);
        self.input(Tensor::from_f64(shape.to_vec(), values))
    }

    fn add(&mut self, op: Op, inputs: Vec<NodeId>, given: Option<TensorType>) -> NodeId {
        let what = format!("{op:?} on {inputs:?}");
        self.g.add(op, inputs, given, Origin::default()).unwrap_or_else(|e| panic!("{}: {what}: {e}", self.name))
    }

    /// `loss = reduce_sum(y * w)` with random weights `w`, away from zero.
    fn finish(mut self, y: NodeId) -> Case {
        let shape = self.g.ty(y).shape.clone();
        let w = self.input_f(&shape, Dom::Away(0.5, 1.5));
        let yw = self.add(Op::Binary(BinaryOp::Mul), vec![y, w], None);
        let loss = match shape.len() {
            0 => yw,
            rank => self.add(Op::Reduce { op: ReduceOp::Sum, axes: (0..rank).collect() }, vec![yw], None),
        };
        self.g.add_output("loss", loss);
        let shapes: Vec<String> = self.g.params().map(|(id, _)| self.g.ty(id).to_string()).collect();
        Case {
            name: format!("{} ({})", self.name, shapes.join(", ")),
            graph: self.g,
            inputs: self.inputs,
            params: self.params,
        }
    }
}

// ---- the check -------------------------------------------------------------------

const CTX: RunContext = RunContext { seed: 11, step: 5 };

fn loss_of(graph: &Graph, inputs: &BTreeMap<String, Tensor>, params: &BTreeMap<String, Tensor>) -> f64 {
    let out = interp::run(graph, Precision::F64, inputs, params, CTX).unwrap_or_else(|e| panic!("{e}"));
    out[0].1.to_f64_vec()[0]
}

/// Differentiates the case and compares every gradient element with a
/// central difference. Returns the largest error seen.
fn check(case: &Case) -> f64 {
    let out = Autodiff.run(&case.graph).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    verify(&out.graph).unwrap_or_else(|e| panic!("{}: output does not verify: {e:?}", case.name));
    let ran = interp::run(&out.graph, Precision::F64, &case.inputs, &case.params, CTX)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let grads: BTreeMap<String, Vec<f64>> = ran.into_iter().map(|(n, t)| (n, t.to_f64_vec())).collect();
    let mut worst: f64 = 0.0;
    for (_, path) in case.graph.params() {
        let ad = &grads[&grad_name(path)];
        let base = case.params[path].to_f64_vec();
        assert_eq!(ad.len(), base.len(), "{}: {path}", case.name);
        for i in 0..base.len() {
            let h = 1e-6 * base[i].abs().max(1.0);
            let at = |x: f64| {
                let mut params = case.params.clone();
                let mut v = base.clone();
                v[i] = x;
                params.insert(path.to_string(), Tensor::from_f64(case.params[path].shape.clone(), v));
                loss_of(&case.graph, &case.inputs, &params)
            };
            let (xp, xm) = (base[i] + h, base[i] - h);
            let fd = (at(xp) - at(xm)) / (xp - xm);
            let err = (fd - ad[i]).abs() / fd.abs().max(ad[i].abs()).max(OP_FLOOR);
            assert!(
                err <= OP_TOLERANCE,
                "{}: d loss/d {path}[{i}]: autodiff {:e}, finite difference {fd:e} (error {err:.2e})",
                case.name,
                ad[i]
            );
            worst = worst.max(err);
        }
    }
    worst
}

/// Builds `SHAPES_PER_OP` cases with `build` and checks each.
fn each_shape(name: &str, build: impl Fn(&mut Builder) -> NodeId) {
    let mut worst: f64 = 0.0;
    for k in 0..SHAPES_PER_OP {
        let seed = name.bytes().fold(k + 1, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        let mut b = Builder::new(name, seed);
        let y = build(&mut b);
        let case = b.finish(y);
        worst = worst.max(check(&case));
    }
    println!("{name}: worst error {worst:.2e}");
}

fn elementwise_shape(b: &mut Builder) -> Vec<usize> {
    b.rng.shape(0, 3, 4)
}

fn unary(name: &str, u: UnaryOp, dom: Dom) {
    each_shape(name, |b| {
        let shape = elementwise_shape(b);
        let x = b.param(&shape, dom);
        b.add(Op::Unary(u), vec![x], None)
    });
}

fn binary(name: &str, op: BinaryOp, da: Dom, db: Dom) {
    each_shape(name, |b| {
        let shape = elementwise_shape(b);
        let x = b.param(&shape, da);
        let y = b.param(&shape, db);
        b.add(Op::Binary(op), vec![x, y], None)
    });
}

// ---- 1. every op alone -------------------------------------------------------------

#[test]
fn unary_ops() {
    unary("neg", UnaryOp::Neg, ANY);
    unary("exp", UnaryOp::Exp, ANY);
    unary("log", UnaryOp::Log, POS);
    unary("sqrt", UnaryOp::Sqrt, POS);
    unary("rsqrt", UnaryOp::Rsqrt, POS);
    unary("recip", UnaryOp::Recip, AWAY);
    unary("tanh", UnaryOp::Tanh, ANY);
    unary("sin", UnaryOp::Sin, Dom::Range(-3.0, 3.0));
    unary("cos", UnaryOp::Cos, Dom::Range(-3.0, 3.0));
    unary("abs", UnaryOp::Abs, AWAY);
}

#[test]
fn arithmetic() {
    binary("add", BinaryOp::Add, ANY, ANY);
    binary("sub", BinaryOp::Sub, ANY, ANY);
    binary("mul", BinaryOp::Mul, ANY, ANY);
    binary("div", BinaryOp::Div, ANY, AWAY);
    binary("pow", BinaryOp::Pow, POS, Dom::Range(-1.5, 1.5));
    // One operand a parameter, the other not; and one parameter used twice.
    each_shape("sub with a constant right operand", |b| {
        let shape = elementwise_shape(b);
        let x = b.input_f(&shape, ANY);
        let p = b.param(&shape, ANY);
        b.add(Op::Binary(BinaryOp::Sub), vec![x, p], None)
    });
    each_shape("mul x·x", |b| {
        let shape = elementwise_shape(b);
        let x = b.param(&shape, ANY);
        b.add(Op::Binary(BinaryOp::Mul), vec![x, x], None)
    });
    each_shape("div x/x²", |b| {
        let shape = elementwise_shape(b);
        let x = b.param(&shape, AWAY);
        let x2 = b.add(Op::Binary(BinaryOp::Mul), vec![x, x], None);
        b.add(Op::Binary(BinaryOp::Div), vec![x, x2], None)
    });
    // A negative base with an integer exponent: only the base is a parameter.
    each_shape("pow negative base, integer exponent", |b| {
        let shape = elementwise_shape(b);
        let a = b.param(&shape, AWAY);
        let n: usize = shape.iter().product();
        let e: Vec<f64> = (0..n).map(|_| b.rng.int(1, 3) as f64).collect();
        let e = b.input(Tensor::from_f64(shape.clone(), e));
        b.add(Op::Binary(BinaryOp::Pow), vec![a, e], None)
    });
}

#[test]
fn max_and_min_away_from_ties() {
    for (name, op) in [("max", BinaryOp::Max), ("min", BinaryOp::Min)] {
        each_shape(name, |b| {
            let shape = elementwise_shape(b);
            let a_vals = b.draw(shape.iter().product(), ANY);
            let b_vals: Vec<f64> = a_vals.iter().map(|&a| a + b.rng.sign() * b.rng.uniform(0.1, 1.0)).collect();
            let x = b.param_values(&shape, a_vals);
            let y = b.param_values(&shape, b_vals);
            b.add(Op::Binary(op), vec![x, y], None)
        });
    }
}

#[test]
fn select() {
    each_shape("select", |b| {
        let shape = elementwise_shape(b);
        let n = shape.iter().product();
        let c: Vec<bool> = (0..n).map(|_| b.rng.next() & 1 == 0).collect();
        let c = b.input(Tensor::from_bool(shape.clone(), c));
        let x = b.param(&shape, ANY);
        let y = b.param(&shape, ANY);
        b.add(Op::Select, vec![c, x, y], None)
    });
}

fn random_axes(rng: &mut Rng, rank: usize) -> Vec<usize> {
    loop {
        let axes: Vec<usize> = (0..rank).filter(|_| rng.next() & 1 == 0).collect();
        if !axes.is_empty() {
            return axes;
        }
    }
}

#[test]
fn reductions() {
    each_shape("reduce_sum", |b| {
        let shape = b.rng.shape(1, 4, 4);
        let axes = random_axes(&mut b.rng, shape.len());
        let x = b.param(&shape, ANY);
        b.add(Op::Reduce { op: ReduceOp::Sum, axes }, vec![x], None)
    });
    each_shape("reduce_max", |b| {
        let shape = b.rng.shape(1, 4, 4);
        let axes = random_axes(&mut b.rng, shape.len());
        // Distinct values at least 0.05 apart: no ties, and a perturbation of
        // 1e-6 never changes which position is the maximum.
        let n: usize = shape.iter().product();
        let mut values: Vec<f64> = (0..n).map(|i| i as f64 * 0.1 - n as f64 * 0.05).collect();
        b.rng.shuffle(&mut values);
        let values = values.iter().map(|v| v + b.rng.uniform(0.0, 0.05)).collect();
        let x = b.param_values(&shape, values);
        b.add(Op::Reduce { op: ReduceOp::Max, axes }, vec![x], None)
    });
}

#[test]
fn movement() {
    each_shape("reshape", |b| {
        let shape = b.rng.shape(1, 4, 4);
        let mut target = shape.clone();
        b.rng.shuffle(&mut target);
        if target.len() >= 2 && b.rng.next() & 1 == 0 {
            let merged = target[0] * target[1];
            target.splice(0..2, [merged]);
        }
        let at = b.rng.int(0, target.len());
        target.insert(at, 1);
        let x = b.param(&shape, ANY);
        b.add(Op::Reshape, vec![x], Some(f32t(&target)))
    });
    each_shape("permute", |b| {
        let shape = b.rng.shape(2, 4, 4);
        let mut perm: Vec<usize> = (0..shape.len()).collect();
        while perm.iter().enumerate().all(|(i, &p)| i == p) {
            b.rng.shuffle(&mut perm);
        }
        let x = b.param(&shape, ANY);
        b.add(Op::Permute { perm }, vec![x], None)
    });
    each_shape("broadcast", |b| {
        // Input axes (those of size 1 may be stretched) landing on `dims`,
        // plus new axes of size 2 or 3.
        let in_shape = b.rng.shape(0, 3, 3);
        let new_axes = b.rng.int(if in_shape.is_empty() { 1 } else { 0 }, 2);
        let rank = in_shape.len() + new_axes;
        let mut is_input: Vec<bool> = (0..rank).map(|i| i < in_shape.len()).collect();
        b.rng.shuffle(&mut is_input);
        let dims: Vec<usize> = (0..rank).filter(|&i| is_input[i]).collect();
        let mut out: Vec<usize> = (0..rank).map(|_| b.rng.int(2, 3)).collect();
        for (i, &d) in dims.iter().enumerate() {
            out[d] = if in_shape[i] == 1 { b.rng.int(1, 3) } else { in_shape[i] };
        }
        let x = b.param(&in_shape, ANY);
        b.add(Op::Broadcast { dims }, vec![x], Some(f32t(&out)))
    });
    each_shape("slice", |b| {
        let mut shape = b.rng.shape(1, 3, 4);
        let axis = b.rng.int(0, shape.len() - 1);
        shape[axis] = b.rng.int(2, 5);
        let start = b.rng.int(0, shape[axis] - 1);
        let end = b.rng.int(start + 1, shape[axis]);
        let x = b.param(&shape, ANY);
        b.add(Op::Slice { axis, start, end }, vec![x], None)
    });
    each_shape("concat", |b| {
        let shape = b.rng.shape(1, 3, 3);
        let axis = b.rng.int(0, shape.len() - 1);
        let parts = b.rng.int(1, 3);
        let xs: Vec<NodeId> = (0..parts)
            .map(|_| {
                let mut s = shape.clone();
                s[axis] = b.rng.int(1, 3);
                b.param(&s, ANY)
            })
            .collect();
        b.add(Op::Concat { axis }, xs, None)
    });
    each_shape("pad", |b| {
        let shape = b.rng.shape(1, 3, 3);
        let axis = b.rng.int(0, shape.len() - 1);
        let (lo, hi) = (b.rng.int(0, 2), b.rng.int(0, 2));
        let x = b.param(&shape, ANY);
        b.add(Op::Pad { axis, lo, hi, value: 0.7 }, vec![x], None)
    });
    each_shape("cast f32 to f32", |b| {
        let shape = elementwise_shape(b);
        let x = b.param(&shape, ANY);
        b.add(Op::Cast, vec![x], Some(f32t(&shape)))
    });
}

/// Draws the shapes of a matmul's two operands.
type OperandShapes = fn(&mut Rng) -> (Vec<usize>, Vec<usize>);

#[test]
fn matmul() {
    let cases: [(&str, OperandShapes); 5] = [
        ("matmul 2-D", |r| {
            let (m, k, n) = (r.int(1, 4), r.int(1, 4), r.int(1, 4));
            (vec![m, k], vec![k, n])
        }),
        ("matmul batched", |r| {
            let (bt, m, k, n) = (r.int(1, 3), r.int(1, 4), r.int(1, 4), r.int(1, 4));
            (vec![bt, m, k], vec![bt, k, n])
        }),
        ("matmul batched rank 4", |r| {
            let (b1, b2, m, k, n) = (r.int(1, 2), r.int(1, 3), r.int(1, 3), r.int(1, 3), r.int(1, 3));
            (vec![b1, b2, m, k], vec![b1, b2, k, n])
        }),
        ("matmul shared right matrix", |r| {
            let (bt, m, k, n) = (r.int(2, 3), r.int(1, 4), r.int(1, 4), r.int(1, 4));
            (vec![bt, m, k], vec![k, n])
        }),
        ("matmul shared right matrix, rank 4", |r| {
            let (b1, b2, m, k, n) = (r.int(1, 2), r.int(2, 3), r.int(1, 3), r.int(1, 4), r.int(1, 3));
            (vec![b1, b2, m, k], vec![k, n])
        }),
    ];
    for (name, shapes) in cases {
        each_shape(name, |b| {
            let (sa, sb) = shapes(&mut b.rng);
            let x = b.param(&sa, ANY);
            let y = b.param(&sb, ANY);
            b.add(Op::MatMul, vec![x, y], None)
        });
    }
    each_shape("matmul, only the shared matrix a parameter", |b| {
        let (bt, m, k, n) = (b.rng.int(2, 3), b.rng.int(1, 3), b.rng.int(1, 3), b.rng.int(1, 3));
        let x = b.input_f(&[bt, m, k], ANY);
        let w = b.param(&[k, n], ANY);
        b.add(Op::MatMul, vec![x, w], None)
    });
}

#[test]
fn attention() {
    for causal in [false, true] {
        let name = if causal { "attention, causal" } else { "attention" };
        each_shape(name, |b| {
            let (bt, t, d, dv) = (b.rng.int(1, 3), b.rng.int(1, 5), b.rng.int(1, 4), b.rng.int(1, 4));
            let tk = if causal { t } else { b.rng.int(1, 5) };
            let q = b.param(&[bt, t, d], ANY);
            let k = b.param(&[bt, tk, d], ANY);
            let v = b.param(&[bt, tk, dv], ANY);
            b.add(Op::Attention { scale: 0.7, causal }, vec![q, k, v], None)
        });
    }
}

/// Random i32 indices below `rows`, with repeats (so gradients must sum).
fn indices(b: &mut Builder, shape: &[usize], rows: usize) -> NodeId {
    let n: usize = shape.iter().product();
    let idx: Vec<i32> = (0..n).map(|_| b.rng.int(0, rows - 1) as i32).collect();
    b.input(Tensor::from_i32(shape.to_vec(), idx))
}

#[test]
fn gather_and_scatter_add() {
    each_shape("gather", |b| {
        let rows = b.rng.int(1, 4);
        let mut table = vec![rows];
        table.extend(b.rng.shape(0, 2, 3));
        let idx_shape = b.rng.shape(0, 2, 4);
        let t = b.param(&table, ANY);
        let i = indices(b, &idx_shape, rows);
        b.add(Op::Gather, vec![t, i], None)
    });
    each_shape("scatter_add", |b| {
        let rows = b.rng.int(1, 4);
        let row = b.rng.shape(0, 2, 3);
        let idx_shape = b.rng.shape(0, 2, 4);
        let mut src = idx_shape.clone();
        src.extend(&row);
        let mut out = vec![rows];
        out.extend(&row);
        let i = indices(b, &idx_shape, rows);
        let s = b.param(&src, ANY);
        b.add(Op::ScatterAdd, vec![i, s], Some(f32t(&out)))
    });
}

// ---- 2. whole models: directional derivatives --------------------------------------

fn compile(path: &str, sets: &[&str]) -> Graph {
    let overrides: Vec<Override> = sets.iter().map(|s| Override::parse(s).unwrap()).collect();
    compile_file(Path::new(path), &overrides).unwrap_or_else(|e| panic!("{e}")).graph
}

const SMALL: &[&str] = &["layers=2", "d=16", "heads=2", "ffn=32", "seq=8", "batch=2", "vocab=32"];
const VOCAB: usize = 32;

/// Token inputs below the vocabulary.
fn token_inputs(graph: &Graph, rng: &mut Rng) -> BTreeMap<String, Tensor> {
    graph
        .inputs()
        .map(|(id, name)| {
            let ty = graph.ty(id);
            assert_eq!(ty.dtype, DType::I32, "{name}");
            let ids = (0..ty.numel()).map(|_| rng.int(0, VOCAB - 1) as i32).collect();
            (name.to_string(), Tensor::from_i32(ty.shape.clone(), ids))
        })
        .collect()
}

/// Checks `Σ grad·v` against `(L(θ + h v) − L(θ − h v)) / 2h` along
/// `directions` random directions; returns the largest relative error.
fn directional(name: &str, graph: &Graph, directions: usize, seed: u64) -> f64 {
    let out = Autodiff.run(graph).unwrap_or_else(|e| panic!("{name}: {e}"));
    verify(&out.graph).unwrap_or_else(|e| panic!("{name}: output does not verify: {e:?}"));
    let mut rng = Rng::new(seed);
    let inputs = token_inputs(graph, &mut rng);
    let theta: BTreeMap<String, Vec<f64>> =
        interp::init_params(graph, seed).into_iter().map(|(p, t)| (p, t.to_f64_vec())).collect();
    let shapes: BTreeMap<String, Vec<usize>> =
        graph.params().map(|(id, p)| (p.to_string(), graph.ty(id).shape.clone())).collect();
    let tensors = |values: &BTreeMap<String, Vec<f64>>| -> BTreeMap<String, Tensor> {
        values.iter().map(|(p, v)| (p.clone(), Tensor::from_f64(shapes[p].clone(), v.clone()))).collect()
    };
    let ran = interp::run(&out.graph, Precision::F64, &inputs, &tensors(&theta), CTX).unwrap_or_else(|e| panic!("{e}"));
    let grads: BTreeMap<String, Vec<f64>> = ran.into_iter().map(|(n, t)| (n, t.to_f64_vec())).collect();
    assert_eq!(grads.len(), 1 + theta.len(), "{name}: loss and one gradient per parameter");
    let h = 1e-6;
    let mut worst: f64 = 0.0;
    for d in 0..directions {
        let v: BTreeMap<String, Vec<f64>> =
            theta.iter().map(|(p, x)| (p.clone(), x.iter().map(|_| rng.uniform(-1.0, 1.0)).collect())).collect();
        let dot: f64 =
            v.iter().map(|(p, vp)| vp.iter().zip(&grads[&grad_name(p)]).map(|(a, b)| a * b).sum::<f64>()).sum();
        let moved = |s: f64| -> BTreeMap<String, Vec<f64>> {
            theta.iter().map(|(p, x)| (p.clone(), x.iter().zip(&v[p]).map(|(x, v)| x + s * h * v).collect())).collect()
        };
        let plus = loss_of(graph, &inputs, &tensors(&moved(1.0)));
        let minus = loss_of(graph, &inputs, &tensors(&moved(-1.0)));
        let fd = (plus - minus) / (2.0 * h);
        let err = (fd - dot).abs() / fd.abs().max(dot.abs());
        println!("{name}, direction {d}: Σ grad·v = {dot:.12e}, finite difference {fd:.12e}, error {err:.2e}");
        assert!(
            err <= MODEL_TOLERANCE,
            "{name}, direction {d}: Σ grad·v = {dot:e}, finite difference {fd:e} (error {err:.2e})"
        );
        worst = worst.max(err);
    }
    worst
}

#[test]
fn tiny_dense_and_lowrank() {
    let dense = compile("../models/tiny.lpa", SMALL);
    directional("tiny dense", &dense, 3, 1);
    let lpa = Lowrank { rank: 4, target: Target::Attention }.run(&dense).unwrap().graph;
    directional("tiny lowrank r=4", &lpa, 3, 2);
}

#[test]
fn tiny_with_fused_attention() {
    let dense = compile("../models/tiny.lpa", SMALL);
    let fused = lpac_passes::attention::FuseAttention.run(&dense).unwrap().graph;
    assert!(fused.nodes.iter().any(|n| matches!(n.op, Op::Attention { .. })), "the attention pass fired");
    directional("tiny, fused attention", &fused, 3, 7);
    let lpa = Lowrank { rank: 4, target: Target::Attention }.run(&dense).unwrap().graph;
    let lpa = lpac_passes::attention::FuseAttention.run(&lpa).unwrap().graph;
    directional("tiny lowrank r=4, fused attention", &lpa, 3, 8);
}

#[test]
fn tiny_with_dropout() {
    let sets: Vec<&str> = SMALL.iter().copied().chain(["dropout=0.1"]).collect();
    let dense = compile("../models/tiny.lpa", &sets);
    assert!(dense.nodes.iter().any(|n| matches!(n.op, Op::RandomUniform { .. })), "dropout is in the graph");
    directional("tiny dense, dropout 0.1", &dense, 3, 3);
    let lpa = Lowrank { rank: 4, target: Target::Attention }.run(&dense).unwrap().graph;
    directional("tiny lowrank r=4, dropout 0.1", &lpa, 3, 4);
}

#[test]
fn gpt_and_llama() {
    directional("gpt", &compile("../models/gpt.lpa", SMALL), 1, 5);
    directional("llama", &compile("../models/llama.lpa", SMALL), 1, 6);
}

// ---- 3. the optimisation pipeline keeps the gradients ----------------------------------

#[test]
fn simplify_cse_dce_keep_the_gradients() {
    let g = compile("../models/tiny.lpa", SMALL);
    let passes: Vec<Box<dyn Pass>> = registry::create_pipeline("autodiff,simplify,cse,dce").unwrap();
    let instr = Instrumentation { check_each: true, verify_each: true, check_seed: 3, ..Default::default() };
    let run = run_pipeline(g.clone(), &passes, &instr, &mut std::io::sink()).unwrap_or_else(|e| panic!("{e}"));
    let out = run.output();
    let names: Vec<&str> = out.outputs.iter().map(|o| o.name.as_str()).collect();
    let expected: Vec<String> =
        std::iter::once("loss".to_string()).chain(g.params().map(|(_, p)| grad_name(p))).collect();
    assert_eq!(names, expected);
    for r in &run.records {
        println!(
            "{:<9} {:>5} -> {:<5} nodes, {:.2} ms",
            r.name,
            r.nodes_before,
            r.nodes_after,
            r.time.as_secs_f64() * 1e3
        );
    }
}
