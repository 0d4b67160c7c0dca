//! `lpac device-check`: every kernel kind on the GPU against the CPU
//! backend, on random inputs.
//!
//! Small graphs, each lowering to one kind of kernel (elementwise, row and
//! column reductions, rows kernels, a multi kernel, products, products by
//! rows, attention forward and backward, gather and scatter-add, random
//! numbers), run on `--device cpu` and `--device cuda` with the same random
//! inputs; for every output the relative error ‖gpu − cpu‖ / ‖cpu‖ is
//! printed and compared with the tolerance of its case: f32 arithmetic in a
//! different order and the hardware's exp/log land far under 1e-4; random
//! numbers must agree exactly. NaN never passes. Exit status 1 when a case
//! fails or there is no GPU.

use std::collections::BTreeMap;

use lpac_ir::interp::{RunContext, Tensor};
use lpac_ir::{BinaryOp, DType, Graph, NodeId, Op, Origin, ReduceOp, TensorType, UnaryOp};

use crate::cli::DeviceCheckArgs;
use crate::error::{CliError, CliResult};
use crate::train::device::{Device, executor};

/// One check: a graph and the tolerance of its outputs.
struct Case {
    name: &'static str,
    graph: Graph,
    tolerance: f64,
    /// What the GPU is compared with: the CPU backend, or (bf16, which the
    /// CPU backend does not compute) the interpreter.
    reference: Device,
}

fn f32t(shape: &[usize]) -> TensorType {
    TensorType::new(DType::F32, shape.to_vec())
}

struct G(Graph);

impl G {
    fn add(&mut self, op: Op, inputs: Vec<NodeId>, ty: Option<TensorType>) -> NodeId {
        self.0.add(op, inputs, ty, Origin::default()).expect("the check's graphs are well typed")
    }
    fn input(&mut self, name: &str, shape: &[usize]) -> NodeId {
        self.add(Op::Input { name: name.into() }, vec![], Some(f32t(shape)))
    }
    fn constant(&mut self, v: f64, shape: &[usize]) -> NodeId {
        self.add(Op::Const { value: v }, vec![], Some(f32t(shape)))
    }
    fn bin(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
        self.add(Op::Binary(op), vec![a, b], None)
    }
    fn un(&mut self, op: UnaryOp, a: NodeId) -> NodeId {
        self.add(Op::Unary(op), vec![a], None)
    }
    fn reduce(&mut self, op: ReduceOp, axes: &[usize], a: NodeId) -> NodeId {
        self.add(Op::Reduce { op, axes: axes.to_vec() }, vec![a], None)
    }
    fn bcast(&mut self, a: NodeId, dims: &[usize], shape: &[usize]) -> NodeId {
        self.add(Op::Broadcast { dims: dims.to_vec() }, vec![a], Some(f32t(shape)))
    }
    fn out(mut self, name: &str, n: NodeId) -> Self {
        self.0.add_output(name, n);
        self
    }
    /// Attention over inputs `q`, `k`, `v` of `shape` (batch, heads, rows,
    /// width; scale 1/sqrt(width)) and its three gradients for an incoming
    /// gradient `dy`: outputs `out`, `dq`, `dk`, `dv`.
    fn attention(mut self, shape: &[usize; 4], causal: bool) -> Self {
        let scale = 1.0 / (shape[3] as f64).sqrt();
        let (q, k, v, dy) =
            (self.input("q", shape), self.input("k", shape), self.input("v", shape), self.input("dy", shape));
        let out = self.add(Op::Attention { scale, causal }, vec![q, k, v], None);
        self = self.out("out", out);
        for (wrt, name) in ["dq", "dk", "dv"].iter().enumerate() {
            let grad = self.add(Op::AttentionGrad { scale, causal, wrt }, vec![q, k, v, out, dy], None);
            self = self.out(name, grad);
        }
        self
    }
    /// A softmax of `x` (of `shape`, rank 3) over its last axis.
    fn softmax(&mut self, x: NodeId, shape: &[usize]) -> NodeId {
        let m = self.reduce(ReduceOp::Max, &[2], x);
        let mb = self.bcast(m, &[0, 1], shape);
        let d = self.bin(BinaryOp::Sub, x, mb);
        let e = self.un(UnaryOp::Exp, d);
        let s = self.reduce(ReduceOp::Sum, &[2], e);
        let sb = self.bcast(s, &[0, 1], shape);
        self.bin(BinaryOp::Div, e, sb)
    }
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let new = || G(Graph::new("device-check"));
    // Elementwise chain with every transcendental.
    let mut g = new();
    let x = g.input("x", &[1000, 37]);
    let t = g.un(UnaryOp::Tanh, x);
    let e = g.un(UnaryOp::Exp, x);
    let s = g.un(UnaryOp::Sin, x);
    let a = g.bin(BinaryOp::Add, t, e);
    let y = g.bin(BinaryOp::Mul, a, s);
    cases.push(Case {
        name: "elementwise (tanh, exp, sin)",
        graph: g.out("y", y).0,
        tolerance: 1e-5,
        reference: Device::Cpu,
    });
    // Row and column reductions.
    let mut g = new();
    let x = g.input("x", &[2048, 96]);
    let rows = g.reduce(ReduceOp::Sum, &[1], x);
    let cols = g.reduce(ReduceOp::Sum, &[0], x);
    let maxes = g.reduce(ReduceOp::Max, &[1], x);
    // Many columns: a thread per output, down its column.
    let w = g.input("w", &[64, 70_000]);
    let wide = g.reduce(ReduceOp::Sum, &[0], w);
    cases.push(Case {
        name: "reductions (rows, columns, max)",
        graph: g.out("rows", rows).out("cols", cols).out("max", maxes).out("wide", wide).0,
        tolerance: 1e-5,
        reference: Device::Cpu,
    });
    // Few outputs, long reductions: blocks per output, their partial results
    // combined by the last block (a gradient norm's sum of squares).
    let mut g = new();
    let x = g.input("x", &[1000, 3000]);
    let x2 = g.bin(BinaryOp::Mul, x, x);
    let total = g.reduce(ReduceOp::Sum, &[0, 1], x2);
    let y = g.input("y", &[5, 200_000]);
    let long_rows = g.reduce(ReduceOp::Sum, &[1], y);
    let long_max = g.reduce(ReduceOp::Max, &[1], y);
    cases.push(Case {
        name: "long reductions (blocks per output)",
        graph: g.out("total", total).out("rows", long_rows).out("max", long_max).0,
        tolerance: 1e-5,
        reference: Device::Cpu,
    });
    // Softmax then layer norm: rows kernels.
    let mut g = new();
    let shape = [6, 40, 301];
    let x = g.input("x", &shape);
    let p = g.softmax(x, &shape);
    let n = g.constant(301.0, &[6, 40]);
    let sum = g.reduce(ReduceOp::Sum, &[2], p);
    let mean = g.bin(BinaryOp::Div, sum, n);
    let meanb = g.bcast(mean, &[0, 1], &shape);
    let c = g.bin(BinaryOp::Sub, p, meanb);
    let c2 = g.bin(BinaryOp::Mul, c, c);
    let vs = g.reduce(ReduceOp::Sum, &[2], c2);
    let var = g.bin(BinaryOp::Div, vs, n);
    let r = g.un(UnaryOp::Rsqrt, var);
    let rb = g.bcast(r, &[0, 1], &shape);
    let y = g.bin(BinaryOp::Mul, c, rb);
    cases.push(Case {
        name: "softmax and layer norm (rows kernels)",
        graph: g.out("p", p).out("y", y).0,
        tolerance: 1e-4,
        reference: Device::Cpu,
    });
    // A softmax over rows as long as a vocabulary: a block per row.
    let mut g = new();
    let shape = [4, 16, 5000];
    let x = g.input("x", &shape);
    let p = g.softmax(x, &shape);
    cases.push(Case {
        name: "softmax over long rows (a block per row)",
        graph: g.out("p", p).0,
        tolerance: 1e-4,
        reference: Device::Cpu,
    });
    // An optimiser-like update of tensors of different sizes: one multi kernel.
    let mut g = new();
    for (i, n) in [3usize, 300, 20_000, 70_000, 5].into_iter().enumerate() {
        let (x, m, p) =
            (g.input(&format!("x{i}"), &[n]), g.input(&format!("m{i}"), &[n]), g.input(&format!("p{i}"), &[n]));
        let (nine, tenth) = (g.constant(0.9, &[n]), g.constant(0.1, &[n]));
        let decayed = g.bin(BinaryOp::Mul, m, nine);
        let m2 = g.bin(BinaryOp::Add, decayed, x);
        let step = g.bin(BinaryOp::Mul, m2, tenth);
        let p2 = g.bin(BinaryOp::Sub, p, step);
        g = g.out(&format!("m{i}"), m2).out(&format!("p{i}"), p2);
    }
    cases.push(Case {
        name: "parameter updates (one multi kernel)",
        graph: g.0,
        tolerance: 1e-6,
        reference: Device::Cpu,
    });
    // Products: batched, and by rows with epilogues and a chain.
    let mut g = new();
    let x = g.input("x", &[4, 300, 64]);
    let w1 = g.input("w1", &[64, 128]);
    let w2 = g.input("w2", &[128, 128]);
    let b = g.input("b", &[128]);
    let h = g.add(Op::MatMul, vec![x, w1], None);
    let bb = g.bcast(b, &[2], &[4, 300, 128]);
    let h = g.bin(BinaryOp::Add, h, bb);
    let h = g.un(UnaryOp::Tanh, h);
    let y = g.add(Op::MatMul, vec![h, w2], None);
    cases.push(Case {
        name: "matrix products (cuBLAS, by rows)",
        graph: g.out("y", y).0,
        tolerance: 1e-4,
        reference: Device::Cpu,
    });
    // Mixed precision: the products of the one above in bf16 (operands and
    // result, f32 accumulation: cublasGemmEx), against the interpreter.
    let mut g = new();
    let x = g.input("x", &[4, 300, 64]);
    let w1 = g.input("w1", &[64, 128]);
    let w2 = g.input("w2", &[128, 128]);
    let h = g.add(Op::MatMul, vec![x, w1], None);
    let h = g.un(UnaryOp::Tanh, h);
    let y = g.add(Op::MatMul, vec![h, w2], None);
    let graph = lpac_passes::manager::run_text(g.out("y", y).0, "precision").expect("the precision pass runs");
    cases.push(Case {
        name: "matrix products in bf16 (mixed precision)",
        graph,
        tolerance: 1e-3,
        reference: Device::Interp,
    });
    // Products whose operands cuBLAS reads transposed (a weight gradient's
    // xᵀ·dy) or per batch (a right operand of each batch its own): the
    // calls' transpose flags, leading dimensions and offsets.
    let mut g = new();
    let x = g.input("x", &[4, 50, 64]);
    let dy = g.input("dy", &[4, 50, 32]);
    let xt = g.add(Op::Permute { perm: vec![0, 2, 1] }, vec![x], None);
    let per_batch = g.add(Op::MatMul, vec![xt, dy], None);
    let x2 = g.add(Op::Reshape, vec![x], Some(f32t(&[200, 64])));
    let dy2 = g.add(Op::Reshape, vec![dy], Some(f32t(&[200, 32])));
    let x2t = g.add(Op::Permute { perm: vec![1, 0] }, vec![x2], None);
    let wgrad = g.add(Op::MatMul, vec![x2t, dy2], None);
    cases.push(Case {
        name: "matrix products, transposed and per batch",
        graph: g.out("per_batch", per_batch).out("wgrad", wgrad).0,
        tolerance: 1e-4,
        reference: Device::Cpu,
    });
    // Attention forward and backward, causal and not; and heads 128 wide
    // (gpt.lpa's: four threads a row, dk in tiles of 16).
    for (name, shape, causal) in [
        ("attention, causal (forward, dq, dk, dv)", [2, 3, 100, 64], true),
        ("attention (forward, dq, dk, dv)", [2, 3, 100, 64], false),
        ("attention, causal, heads of 128 (forward, dq, dk, dv)", [2, 2, 100, 128], true),
    ] {
        cases.push(Case { name, graph: new().attention(&shape, causal).0, tolerance: 1e-4, reference: Device::Cpu });
    }
    // Gather and scatter-add.
    let mut g = new();
    let table = g.input("table", &[50, 33]);
    let idx = g.add(Op::Input { name: "idx".into() }, vec![], Some(TensorType::new(DType::I32, vec![7, 9])));
    let rows = g.add(Op::Gather, vec![table, idx], None);
    let back = g.add(Op::ScatterAdd, vec![idx, rows], Some(f32t(&[50, 33])));
    // Many indices (several chunks of a block) into rows wider than a block.
    let many = g.add(Op::Input { name: "many".into() }, vec![], Some(TensorType::new(DType::I32, vec![4, 300])));
    let src = g.input("src", &[4, 300, 700]);
    let sums = g.add(Op::ScatterAdd, vec![many, src], Some(f32t(&[50, 700])));
    cases.push(Case {
        name: "gather and scatter-add",
        graph: g.out("rows", rows).out("back", back).out("sums", sums).0,
        tolerance: 1e-6,
        reference: Device::Cpu,
    });
    // Random numbers: the same stream, bit for bit.
    let mut g = new();
    let u = g.add(Op::RandomUniform { key: 12345 }, vec![], Some(f32t(&[1000, 3])));
    cases.push(Case {
        name: "random numbers (Philox)",
        graph: g.out("u", u).0,
        tolerance: 0.0,
        reference: Device::Cpu,
    });
    cases
}

/// Random inputs for a graph: uniform in [-1, 1) (indices below 50).
fn inputs(graph: &Graph, seed: u64) -> BTreeMap<String, Tensor> {
    graph
        .inputs()
        .enumerate()
        .map(|(n, (id, name))| {
            let ty = graph.ty(id);
            let key = lpac_ir::random::param_key(seed, name);
            let t = if ty.dtype == DType::I32 {
                let data = (0..ty.numel() as u64).map(|i| (lpac_ir::random::uniform(key, i) * 50.0) as i32).collect();
                Tensor::from_i32(ty.shape.clone(), data)
            } else {
                let data = (0..ty.numel() as u64)
                    .map(|i| (lpac_ir::random::uniform(key ^ n as u64, i) * 2.0 - 1.0) as f32)
                    .collect();
                Tensor::from_f32(ty.shape.clone(), data)
            };
            (name.to_string(), t)
        })
        .collect()
}

fn relative_error(gpu: &Tensor, cpu: &Tensor) -> f64 {
    let (g, c) = (gpu.to_f64_vec(), cpu.to_f64_vec());
    if g.len() != c.len() || g.iter().any(|x| x.is_nan()) {
        return f64::INFINITY;
    }
    let diff: f64 = g.iter().zip(&c).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
    let norm: f64 = c.iter().map(|b| b * b).sum::<f64>().sqrt();
    if norm == 0.0 { diff } else { diff / norm }
}

pub fn run(args: &DeviceCheckArgs) -> CliResult {
    let cases = cases();
    if args.list {
        for (n, case) in cases.iter().enumerate() {
            println!("{n:>2}  {}", case.name);
        }
        return Ok(());
    }
    if let Some(n) = args.case
        && n >= cases.len()
    {
        return Err(CliError::Message(format!(
            "--case {n}: there are {} cases, 0 to {} (see --list)",
            cases.len(),
            cases.len() - 1
        )));
    }
    let ctx = RunContext { seed: 3, step: 1 };
    let params = BTreeMap::new();
    let mut failed = Vec::new();
    println!("{:<44} {:<8} {:>12} {:>10}  result", "case", "output", "rel. error", "tolerance");
    for (n, case) in cases.into_iter().enumerate().filter(|(n, _)| args.case.is_none_or(|c| c == *n)) {
        let inputs = inputs(&case.graph, 100 + n as u64);
        let mut reference = executor(case.reference, case.graph.clone())?;
        let want = reference.run(&inputs, &params, ctx).map_err(CliError::Message)?;
        // A GPU that is absent fails every case the same way: stop at once.
        let mut gpu = executor(Device::Cuda, case.graph.clone())?;
        let got = match gpu.run(&inputs, &params, ctx) {
            Ok(got) => got,
            Err(e) => {
                // Keep going: the other kinds' results still say something
                // (after a fault the context may refuse everything, which
                // `--case` runs one process per case to avoid).
                println!("{:<44} {:<8} {:>12} {:>10}  FAILED: {e}", case.name, "-", "-", "-");
                failed.push(format!("{} (did not run)", case.name));
                continue;
            }
        };
        for (name, c) in &want {
            let err = got.get(name).map_or(f64::INFINITY, |g| relative_error(g, c));
            let ok = err <= case.tolerance;
            println!(
                "{:<44} {:<8} {:>12.3e} {:>10.0e}  {}",
                case.name,
                name,
                err,
                case.tolerance,
                if ok { "ok" } else { "FAILED" }
            );
            if !ok {
                failed.push(format!("{} ({name})", case.name));
            }
        }
    }
    if failed.is_empty() {
        println!("every kernel kind checked agrees with the CPU backend");
        Ok(())
    } else {
        Err(CliError::Message(format!("the GPU disagrees with the CPU backend: {}", failed.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case builds and runs, and the CPU backend agrees with the
    /// reference interpreter in f64 on it (so on a GPU, a failure is the
    /// GPU's). In f64: the interpreter's f32 mode sums in order, one
    /// accumulator per output, and is itself 1.5e-3 off on the 3M-term sum.
    #[test]
    fn every_case_runs_on_the_cpu_like_the_interpreter() {
        let ctx = RunContext { seed: 3, step: 1 };
        for (n, case) in cases().into_iter().enumerate() {
            lpac_ir::verify(&case.graph).unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
            let inputs = inputs(&case.graph, 100 + n as u64);
            let mut cpu = executor(case.reference, case.graph.clone()).unwrap();
            let got = cpu.run(&inputs, &BTreeMap::new(), ctx).unwrap();
            let want: BTreeMap<String, Tensor> =
                lpac_ir::interp::run(&case.graph, lpac_ir::interp::Precision::F64, &inputs, &BTreeMap::new(), ctx)
                    .unwrap()
                    .into_iter()
                    .collect();
            for (name, w) in &want {
                let err = relative_error(&got[name], w);
                assert!(err <= case.tolerance.max(1e-5), "{} ({name}): {err:e}", case.name);
            }
        }
    }

    /// Every case on the PTX emulator — the functions, bindings and cuBLAS
    /// calls a GPU gets, under the emulator's race and undefined-memory
    /// checks — against the reference a GPU is compared with, within the
    /// case's tolerance: what `lpac device-check` will see, short of the
    /// hardware's own arithmetic.
    #[test]
    fn every_case_passes_on_the_ptx_emulator() {
        let ctx = RunContext { seed: 3, step: 1 };
        for (n, case) in cases().into_iter().enumerate() {
            let inputs = inputs(&case.graph, 100 + n as u64);
            let mut reference = executor(case.reference, case.graph.clone()).unwrap();
            let want = reference.run(&inputs, &BTreeMap::new(), ctx).unwrap();
            let got = lpac_cuda_emulator::program::run_graph(&case.graph, &inputs, ctx)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(got.error_cell, 0, "{}: the error cell is set", case.name);
            for (name, c) in &want {
                let err = relative_error(&got.outputs[name], c);
                assert!(err <= case.tolerance, "{} ({name}): {err:e} > {:e}", case.name, case.tolerance);
            }
        }
    }

    /// The transposed-products case makes cuBLAS calls of the kinds its name
    /// says: an operand transposed, and one call per batch.
    #[test]
    fn the_transposed_products_case_makes_transposed_and_per_batch_calls() {
        let case = cases().into_iter().find(|c| c.name == "matrix products, transposed and per batch").unwrap();
        let program = lpac_passes::fuse::fuse(&case.graph).unwrap();
        let emitted = lpac_cuda::emit_program(&program, lpac_cuda::Arch::Sm90, None).unwrap();
        let calls: Vec<Vec<lpac_cuda::schedule::BlasCall>> = emitted
            .schedule(&program)
            .unwrap()
            .into_iter()
            .flatten()
            .filter_map(|s| match s {
                lpac_cuda::schedule::Step::Product { calls, .. } => Some(calls),
                _ => None,
            })
            .collect();
        assert!(calls.iter().any(|c| c.len() == 4), "a product of one call per batch");
        assert!(calls.iter().flatten().any(|c| c.a.transpose || c.b.transpose), "an operand transposed");
    }
}
