//! Fusion plus the CPU backend against the reference interpreter on random
//! graphs: chains of views (permute, reshape, slice, pad, concat, broadcast),
//! elementwise ops and reductions, so index-map composition, guarded loads and
//! buffer decisions are all exercised on shapes nobody chose by hand.

use std::collections::BTreeMap;

use lpac_ir::interp::{self, Precision, RunContext, Tensor};
use lpac_ir::{BinaryOp, DType, Graph, NodeId, Op, Origin, ReduceOp, TensorType, UnaryOp};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn add(g: &mut Graph, op: Op, inputs: Vec<NodeId>, ty: Option<TensorType>) -> NodeId {
    g.add(op, inputs, ty, Origin::default()).expect("generated nodes are well typed")
}

fn f32t(shape: Vec<usize>) -> TensorType {
    TensorType::new(DType::F32, shape)
}

/// One random op applied to `x`; returns the new node.
fn random_op(g: &mut Graph, rng: &mut Rng, x: NodeId, other: NodeId) -> NodeId {
    let shape = g.ty(x).shape.clone();
    let rank = shape.len();
    match rng.below(10) {
        0 => add(g, Op::Unary([UnaryOp::Exp, UnaryOp::Tanh, UnaryOp::Neg][rng.below(3)]), vec![x], None),
        1 => {
            let mut perm: Vec<usize> = (0..rank).collect();
            for i in (1..rank).rev() {
                perm.swap(i, rng.below(i + 1));
            }
            add(g, Op::Permute { perm }, vec![x], None)
        }
        2 => {
            // Merge all axes, or split the last one when it divides.
            let n: usize = shape.iter().product();
            let last = *shape.last().unwrap_or(&1);
            let target = if last.is_multiple_of(2) && last > 2 && rng.below(2) == 0 {
                let mut s = shape[..rank - 1].to_vec();
                s.extend([2, last / 2]);
                s
            } else {
                vec![n]
            };
            add(g, Op::Reshape, vec![x], Some(f32t(target)))
        }
        3 if shape.iter().any(|&d| d > 1) => {
            let axis = (0..rank).find(|&a| shape[a] > 1).unwrap();
            let start = rng.below(shape[axis] - 1);
            add(g, Op::Slice { axis, start, end: shape[axis] }, vec![x], None)
        }
        4 => {
            let axis = rng.below(rank);
            add(g, Op::Pad { axis, lo: rng.below(3), hi: rng.below(3), value: 0.5 }, vec![x], None)
        }
        5 => {
            let axis = rng.below(rank);
            add(g, Op::Concat { axis }, vec![x, x], None)
        }
        6 if rank > 1 => {
            let axis = rng.below(rank);
            add(g, Op::Reduce { op: [ReduceOp::Sum, ReduceOp::Max][rng.below(2)], axes: vec![axis] }, vec![x], None)
        }
        7 => {
            // x + broadcast(other reduced to a scalar)
            let other_axes: Vec<usize> = (0..g.ty(other).rank()).collect();
            let s = add(g, Op::Reduce { op: ReduceOp::Sum, axes: other_axes }, vec![other], None);
            let b = add(g, Op::Broadcast { dims: vec![] }, vec![s], Some(f32t(shape.clone())));
            add(g, Op::Binary(BinaryOp::Add), vec![x, b], None)
        }
        8 => {
            // select(x > 0, x, x * x)
            let zero = add(g, Op::Const { value: 0.0 }, vec![], Some(f32t(shape.clone())));
            let c = add(g, Op::Binary(BinaryOp::Gt), vec![x, zero], None);
            let sq = add(g, Op::Binary(BinaryOp::Mul), vec![x, x], None);
            add(g, Op::Select, vec![c, x, sq], None)
        }
        _ => {
            // A stretch broadcast: [d..] -> [2, d..] then sum it back.
            let mut out = vec![2];
            out.extend(shape.iter().copied());
            let dims: Vec<usize> = (1..=rank).collect();
            let b = add(g, Op::Broadcast { dims }, vec![x], Some(f32t(out)));
            add(g, Op::Reduce { op: ReduceOp::Sum, axes: vec![0] }, vec![b], None)
        }
    }
}

fn random_graph(seed: u64) -> Graph {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut g = Graph::new("random");
    let rank = 1 + rng.below(3);
    let shape: Vec<usize> = (0..rank).map(|_| 1 + rng.below(5)).collect();
    let x = add(&mut g, Op::Input { name: "x".into() }, vec![], Some(f32t(shape.clone())));
    let y = add(&mut g, Op::Input { name: "y".into() }, vec![], Some(f32t(vec![3])));
    let mut cur = x;
    for _ in 0..2 + rng.below(6) {
        if g.ty(cur).numel() > 4096 || g.ty(cur).rank() > 4 {
            break;
        }
        cur = random_op(&mut g, &mut rng, cur, y);
    }
    let axes: Vec<usize> = (0..g.ty(cur).rank()).collect();
    let total =
        if axes.is_empty() { cur } else { add(&mut g, Op::Reduce { op: ReduceOp::Sum, axes }, vec![cur], None) };
    g.add_output("loss", total);
    g.add_output("value", cur);
    g
}

fn inputs_for(g: &Graph, seed: u64) -> BTreeMap<String, Tensor> {
    let mut rng = Rng(seed | 1);
    g.inputs()
        .map(|(id, name)| {
            let shape = g.ty(id).shape.clone();
            let n = shape.iter().product();
            let data = (0..n).map(|_| (rng.below(2001) as f32 - 1000.0) / 1000.0).collect();
            (name.to_string(), Tensor::from_f32(shape, data))
        })
        .collect()
}

#[test]
fn random_graphs_fuse_and_run_like_the_interpreter() {
    let mut codegen = lpac_cpu::codegen::CpuCodegen::new().unwrap();
    for seed in 0..300u64 {
        let g = random_graph(seed);
        let inputs = inputs_for(&g, seed);
        let params = BTreeMap::new();
        let want = interp::run(&g, Precision::F32, &inputs, &params, RunContext::default()).unwrap();
        let program =
            lpac_passes::fuse::fuse(&g).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}", lpac_ir::print(&g)));
        let compiled = codegen.compile_all(&program).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let functions = compiled.iter().map(|c| c.iter().map(|c| c.func).collect()).collect();
        let mut exec = lpac_cpu::Executor::new(program, functions).unwrap();
        let got = exec.run(&inputs, &params, 0, 0).unwrap();
        for (name, t) in want {
            let (a, b) = (t.to_f64_vec(), got[&name].to_f64_vec());
            assert_eq!(a.len(), b.len(), "seed {seed}: {name}");
            let scale = a.iter().map(|x| x.abs()).fold(1.0, f64::max);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-5 * scale, "seed {seed}: {name}: {x} vs {y}\n{}", lpac_ir::print(&g));
            }
        }
    }
}

/// Fuses, compiles and runs `g`; compares with the interpreter.
fn check_against_interpreter(g: &Graph, seed: u64) -> lpac_ir::kernel::Program {
    let inputs = inputs_for(g, seed);
    let params = BTreeMap::new();
    let want = interp::run(g, Precision::F32, &inputs, &params, RunContext::default()).unwrap();
    let program = lpac_passes::fuse::fuse(g).unwrap();
    let mut codegen = lpac_cpu::codegen::CpuCodegen::new().unwrap();
    let compiled = codegen.compile_all(&program).unwrap();
    let functions = compiled.iter().map(|c| c.iter().map(|c| c.func).collect()).collect();
    let mut exec = lpac_cpu::Executor::new(program.clone(), functions).unwrap();
    let got = exec.run(&inputs, &params, 0, 0).unwrap();
    for (name, t) in want {
        let (a, b) = (t.to_f64_vec(), got[&name].to_f64_vec());
        let scale = a.iter().map(|x| x.abs()).fold(1.0, f64::max);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= 1e-5 * scale, "{name}[{i}]: {x} vs {y}");
        }
    }
    program
}

#[test]
fn column_reductions_run_in_two_stages_like_the_interpreter() {
    // (input shape, permutation applied first, reduced axes, op)
    type Case<'a> = (&'a [usize], Option<&'a [usize]>, &'a [usize], ReduceOp);
    let cases: [Case; 4] = [
        (&[16, 128, 24], None, &[0, 1], ReduceOp::Sum),
        (&[2048, 6], None, &[0], ReduceOp::Max),
        (&[1000, 6], Some(&[1, 0]), &[1], ReduceOp::Sum),
        (&[96, 8, 5], Some(&[1, 0, 2]), &[0, 1], ReduceOp::Sum),
    ];
    for (seed, (shape, perm, axes, op)) in cases.into_iter().enumerate() {
        let mut g = Graph::new("columns");
        let x = add(&mut g, Op::Input { name: "x".into() }, vec![], Some(f32t(shape.to_vec())));
        let x = match perm {
            Some(p) => add(&mut g, Op::Permute { perm: p.to_vec() }, vec![x], None),
            None => x,
        };
        let e = add(&mut g, Op::Unary(UnaryOp::Tanh), vec![x], None);
        let r = add(&mut g, Op::Reduce { op, axes: axes.to_vec() }, vec![e], None);
        // A consumer after the reduction, fused into its second stage.
        let r_ty = g.ty(r).clone();
        let two = add(&mut g, Op::Const { value: 2.0 }, vec![], Some(r_ty));
        let out = add(&mut g, Op::Binary(BinaryOp::Mul), vec![r, two], None);
        g.add_output("out", out);
        let program = check_against_interpreter(&g, seed as u64);
        assert!(
            program.kernels.iter().any(|k| k.name().ends_with(".partial")),
            "case {seed}: no split\n{}",
            lpac_ir::kernel::print::print(&program)
        );
    }
    // A row-wise (contiguous) reduction stays one kernel.
    let mut g = Graph::new("rows");
    let x = add(&mut g, Op::Input { name: "x".into() }, vec![], Some(f32t(vec![4, 1024])));
    let r = add(&mut g, Op::Reduce { op: ReduceOp::Sum, axes: vec![1] }, vec![x], None);
    g.add_output("out", r);
    let program = check_against_interpreter(&g, 9);
    assert!(program.kernels.iter().all(|k| !k.name().ends_with(".partial")));
}

#[test]
fn softmax_and_layer_norm_run_as_row_kernels_like_the_interpreter() {
    let mut g = Graph::new("rows");
    let x = add(&mut g, Op::Input { name: "x".into() }, vec![], Some(f32t(vec![3, 40, 301])));
    // softmax over the last axis
    let m = add(&mut g, Op::Reduce { op: ReduceOp::Max, axes: vec![2] }, vec![x], None);
    let mb = add(&mut g, Op::Broadcast { dims: vec![0, 1] }, vec![m], Some(f32t(vec![3, 40, 301])));
    let d = add(&mut g, Op::Binary(BinaryOp::Sub), vec![x, mb], None);
    let e = add(&mut g, Op::Unary(UnaryOp::Exp), vec![d], None);
    let s = add(&mut g, Op::Reduce { op: ReduceOp::Sum, axes: vec![2] }, vec![e], None);
    let sb = add(&mut g, Op::Broadcast { dims: vec![0, 1] }, vec![s], Some(f32t(vec![3, 40, 301])));
    let p = add(&mut g, Op::Binary(BinaryOp::Div), vec![e, sb], None);
    // layer norm (no affine) of the probabilities
    let n = add(&mut g, Op::Const { value: 301.0 }, vec![], Some(f32t(vec![3, 40])));
    let sum = add(&mut g, Op::Reduce { op: ReduceOp::Sum, axes: vec![2] }, vec![p], None);
    let mean = add(&mut g, Op::Binary(BinaryOp::Div), vec![sum, n], None);
    let meanb = add(&mut g, Op::Broadcast { dims: vec![0, 1] }, vec![mean], Some(f32t(vec![3, 40, 301])));
    let c = add(&mut g, Op::Binary(BinaryOp::Sub), vec![p, meanb], None);
    let c2 = add(&mut g, Op::Binary(BinaryOp::Mul), vec![c, c], None);
    let var_sum = add(&mut g, Op::Reduce { op: ReduceOp::Sum, axes: vec![2] }, vec![c2], None);
    let var = add(&mut g, Op::Binary(BinaryOp::Div), vec![var_sum, n], None);
    let r = add(&mut g, Op::Unary(UnaryOp::Rsqrt), vec![var], None);
    let rb = add(&mut g, Op::Broadcast { dims: vec![0, 1] }, vec![r], Some(f32t(vec![3, 40, 301])));
    let y = add(&mut g, Op::Binary(BinaryOp::Mul), vec![c, rb], None);
    g.add_output("y", y);
    g.add_output("p", p);
    let program = check_against_interpreter(&g, 5);
    let rows: Vec<usize> = program
        .kernels
        .iter()
        .filter_map(|k| match k {
            lpac_ir::kernel::Kernel::Rows(r) => Some(r.stages.len()),
            _ => None,
        })
        .collect();
    assert!(!rows.is_empty() && rows.iter().sum::<usize>() >= 4, "{}", lpac_ir::kernel::print::print(&program));
}

#[test]
fn attention_kernels_match_the_interpreter_across_tiles() {
    // (batch axes, tq, tk, d, dv, causal): sizes below, at and across the
    // 64-row tiles.
    type Case<'a> = (&'a [usize], usize, usize, usize, usize, bool);
    let cases: [Case; 4] = [
        (&[2, 3], 100, 100, 24, 24, true),
        (&[1], 130, 70, 16, 8, false),
        (&[3], 64, 64, 8, 8, true),
        (&[2], 5, 5, 3, 3, true),
    ];
    for (seed, (batch, tq, tk, d, dv, causal)) in cases.into_iter().enumerate() {
        let mut g = Graph::new("attention");
        let shape = |t: usize, c: usize| {
            let mut s = batch.to_vec();
            s.extend([t, c]);
            f32t(s)
        };
        let q = add(&mut g, Op::Input { name: "q".into() }, vec![], Some(shape(tq, d)));
        let k = add(&mut g, Op::Input { name: "k".into() }, vec![], Some(shape(tk, d)));
        let v = add(&mut g, Op::Input { name: "v".into() }, vec![], Some(shape(tk, dv)));
        let dout = add(&mut g, Op::Input { name: "dout".into() }, vec![], Some(shape(tq, dv)));
        let scale = 1.0 / (d as f64).sqrt();
        let out = add(&mut g, Op::Attention { scale, causal }, vec![q, k, v], None);
        g.add_output("out", out);
        for (wrt, name) in ["dq", "dk", "dv"].iter().enumerate() {
            let grad = add(&mut g, Op::AttentionGrad { scale, causal, wrt }, vec![q, k, v, out, dout], None);
            g.add_output(*name, grad);
        }
        let program = check_against_interpreter(&g, 40 + seed as u64);
        let attention_kernels =
            program.kernels.iter().filter(|k| matches!(k, lpac_ir::kernel::Kernel::Attention(_))).count();
        assert_eq!(attention_kernels, 2, "one forward and one backward kernel for three gradients");
    }
}

#[test]
fn independent_updates_run_as_one_multi_kernel_like_the_interpreter() {
    // An optimiser-like update of five tensors of very different sizes:
    // m' = 0.9·m + x, p' = p − 0.1·m' (m' stored and used: merged), one
    // kernel per tensor, then one kernel for all.
    let mut g = Graph::new("updates");
    for (i, n) in [3usize, 300, 20_000, 70_000, 5].into_iter().enumerate() {
        let input = |g: &mut Graph, name: String| add(g, Op::Input { name }, vec![], Some(f32t(vec![n])));
        let (x, m, p) =
            (input(&mut g, format!("x{i}")), input(&mut g, format!("m{i}")), input(&mut g, format!("p{i}")));
        let c = |g: &mut Graph, v: f64| add(g, Op::Const { value: v }, vec![], Some(f32t(vec![n])));
        let (nine, tenth) = (c(&mut g, 0.9), c(&mut g, 0.1));
        let decayed = add(&mut g, Op::Binary(BinaryOp::Mul), vec![m, nine], None);
        let m2 = add(&mut g, Op::Binary(BinaryOp::Add), vec![decayed, x], None);
        let step = add(&mut g, Op::Binary(BinaryOp::Mul), vec![m2, tenth], None);
        let p2 = add(&mut g, Op::Binary(BinaryOp::Sub), vec![p, step], None);
        g.add_output(format!("m{i}"), m2);
        g.add_output(format!("p{i}"), p2);
    }
    let program = check_against_interpreter(&g, 77);
    assert_eq!(program.kernels.len(), 1, "{}", lpac_ir::kernel::print::print(&program));
    assert!(matches!(&program.kernels[0], lpac_ir::kernel::Kernel::Multi(m) if m.members.len() == 5));
}

#[test]
fn attention_reads_and_writes_the_merged_head_layout() {
    // x [b, t, h, d] -> per-head [b, h, t, d] -> attention -> back to
    // [b, t, h, d]: no copy kernels, the attention kernels use strides.
    let (b, t, h, d) = (2, 70, 3, 8);
    let mut g = Graph::new("heads");
    let input =
        |g: &mut Graph, name: &str| add(g, Op::Input { name: name.into() }, vec![], Some(f32t(vec![b, t, h, d])));
    let (x, y, z, dy) = (input(&mut g, "x"), input(&mut g, "y"), input(&mut g, "z"), input(&mut g, "dy"));
    let heads = |g: &mut Graph, n: NodeId| add(g, Op::Permute { perm: vec![0, 2, 1, 3] }, vec![n], None);
    let (q, k, v, dout) = (heads(&mut g, x), heads(&mut g, y), heads(&mut g, z), heads(&mut g, dy));
    let scale = 0.3;
    let out = add(&mut g, Op::Attention { scale, causal: true }, vec![q, k, v], None);
    let merged = heads(&mut g, out);
    g.add_output("out", merged);
    for (wrt, name) in ["dq", "dk", "dv"].iter().enumerate() {
        let grad = add(&mut g, Op::AttentionGrad { scale, causal: true, wrt }, vec![q, k, v, out, dout], None);
        let back = heads(&mut g, grad);
        g.add_output(*name, back);
    }
    let program = check_against_interpreter(&g, 91);
    let kinds: Vec<&str> = program.kernels.iter().map(|k| k.name()).collect();
    assert_eq!(kinds, ["attention", "attention_grad"], "{}", lpac_ir::kernel::print::print(&program));
}

#[test]
fn products_with_epilogues_and_chains_run_by_rows_like_the_interpreter() {
    // x [4, 300, 32] · W1 [32, 128] + b, tanh, · W2 [128, 128] + x·W3 (a
    // residual through another product): products, epilogues and a chain
    // over 1200 rows (chunks of 256 and a partial one).
    let mut g = Graph::new("epilogues");
    let x = add(&mut g, Op::Input { name: "x".into() }, vec![], Some(f32t(vec![4, 300, 32])));
    let w1 = add(&mut g, Op::Input { name: "w1".into() }, vec![], Some(f32t(vec![32, 128])));
    let w2 = add(&mut g, Op::Input { name: "w2".into() }, vec![], Some(f32t(vec![128, 128])));
    let w3 = add(&mut g, Op::Input { name: "w3".into() }, vec![], Some(f32t(vec![32, 128])));
    let bias = add(&mut g, Op::Input { name: "b".into() }, vec![], Some(f32t(vec![128])));
    let h = add(&mut g, Op::MatMul, vec![x, w1], None);
    let bb = add(&mut g, Op::Broadcast { dims: vec![2] }, vec![bias], Some(f32t(vec![4, 300, 128])));
    let h = add(&mut g, Op::Binary(BinaryOp::Add), vec![h, bb], None);
    let h = add(&mut g, Op::Unary(UnaryOp::Tanh), vec![h], None);
    let y = add(&mut g, Op::MatMul, vec![h, w2], None);
    let r = add(&mut g, Op::MatMul, vec![x, w3], None);
    let out = add(&mut g, Op::Binary(BinaryOp::Add), vec![y, r], None);
    g.add_output("out", out);
    let program = check_against_interpreter(&g, 123);
    let gemm_stages = program
        .kernels
        .iter()
        .filter_map(|k| match k {
            lpac_ir::kernel::Kernel::Rows(r) => {
                Some(r.stages.iter().filter(|s| matches!(s, lpac_ir::kernel::RowStage::Gemm(_))).count())
            }
            _ => None,
        })
        .sum::<usize>();
    assert_eq!(gemm_stages, 3, "{}", lpac_ir::kernel::print::print(&program));
}
