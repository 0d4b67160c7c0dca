//! The emitted PTX run by the emulator (`lpac-cuda-emulator`) on the CPU and
//! compared with the reference interpreter in f64: the GPU kernels'
//! arithmetic, indexing, tiling and synchronisation checked on machines with
//! no GPU (`lpac device-check` does the same on a real one).
//!
//! Products are cuBLAS calls at run time; here `product` makes the same
//! calls (`blas_calls`) and computes each as cuBLAS defines it
//! (column-major, f32 accumulation). The cases: attention forward and backward across tiles and blocks, causal and
//! not; reductions with few outputs (blocks per output, the last combining
//! them) and many (a warp each); a softmax and layer norm (rows kernels);
//! an optimiser-like multi kernel; gather and scatter-add (ids out of range
//! too); tiny.lpa's step in mixed precision; and whole training steps of
//! models/llama.lpa (LPA, AdamW; 12 layers, the update split) and
//! models/gpt.lpa (heads of 128) at small sizes.

use std::collections::BTreeMap;

use lpac_cuda::{Arch, emit_program};
use lpac_cuda_emulator::program::{Emulated, run_graph};
use lpac_ir::interp::{Precision, RunContext, Tensor};
use lpac_ir::{BinaryOp, DType, Graph, NodeId, Op, Origin, ReduceOp, TensorType, UnaryOp};

fn f32t(shape: &[usize]) -> TensorType {
    TensorType::new(DType::F32, shape.to_vec())
}

struct G(Graph);

impl G {
    fn add(&mut self, op: Op, inputs: Vec<NodeId>, ty: Option<TensorType>) -> NodeId {
        self.0.add(op, inputs, ty, Origin::default()).unwrap()
    }
    fn input(&mut self, name: &str, shape: &[usize]) -> NodeId {
        self.add(Op::Input { name: name.into() }, vec![], Some(f32t(shape)))
    }
    fn reduce(&mut self, op: ReduceOp, axes: &[usize], a: NodeId) -> NodeId {
        self.add(Op::Reduce { op, axes: axes.to_vec() }, vec![a], None)
    }
}

/// Uniform in [-1, 1) (integers: in 0..50), from a seed.
fn random_inputs(graph: &Graph, seed: u64) -> BTreeMap<String, Tensor> {
    graph
        .inputs()
        .chain(graph.params())
        .enumerate()
        .map(|(n, (id, name))| {
            let ty = graph.ty(id);
            let key = lpac_ir::random::param_key(seed, name) ^ n as u64;
            let uniform = (0..ty.numel() as u64).map(|i| lpac_ir::random::uniform(key, i));
            let t = if ty.dtype == DType::I32 {
                Tensor::from_i32(ty.shape.clone(), uniform.map(|u| (u * 50.0) as i32).collect())
            } else {
                Tensor::from_f32(ty.shape.clone(), uniform.map(|u| (u * 2.0 - 1.0) as f32).collect())
            };
            (name.to_string(), t)
        })
        .collect()
}

/// Every output within `tolerance` (‖got − want‖ / ‖want‖) of the f64
/// interpreter; NaN fails.
fn check(name: &str, graph: &Graph, tolerance: f64) {
    check_with(name, graph, &random_inputs(graph, 11), tolerance);
}

/// [`check`] on the given inputs.
fn check_with(name: &str, graph: &Graph, inputs: &BTreeMap<String, Tensor>, tolerance: f64) {
    let ctx = RunContext { seed: 3, step: 1 };
    let Emulated { outputs: got, error_cell } = run_graph(graph, inputs, ctx).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(error_cell, 0, "{name}: the error cell is set, with every index in range");
    let want = lpac_ir::interp::run(graph, Precision::F64, inputs, inputs, ctx).unwrap();
    for (out, w) in want {
        let w = w.to_f64_vec();
        let g = got[&out].to_f64_vec();
        assert_eq!(g.len(), w.len(), "{name} {out}");
        assert!(g.iter().all(|x| x.is_finite()), "{name} {out}: not finite (unwritten or NaN)");
        let diff: f64 = g.iter().zip(&w).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
        let norm: f64 = w.iter().map(|b| b * b).sum::<f64>().sqrt();
        assert!(norm > 0.0, "{name} {out}: the reference is all zeros (a vacuous comparison)");
        // A value that is zero but for rounding (the gradient of a key bias:
        // softmax ignores a shift) is compared absolutely.
        let rel = if norm < 1e-9 { diff * 1e3 } else { diff / norm };
        println!("{name} {out}: relative error {rel:.2e}");
        assert!(rel <= tolerance, "{name} {out}: relative error {rel:e} > {tolerance:e}");
    }
}

#[test]
fn attention_forward_and_backward_across_tiles_and_blocks() {
    // 130 rows: three blocks of query (and key) rows, the last partial, and
    // five tiles of 32, the last partial.
    for causal in [true, false] {
        let mut g = G(Graph::new("attention"));
        let shape = [1, 2, 130, 8];
        let (q, k, v, dy) = (g.input("q", &shape), g.input("k", &shape), g.input("v", &shape), g.input("dy", &shape));
        let out = g.add(Op::Attention { scale: 0.35, causal }, vec![q, k, v], None);
        g.0.add_output("out", out);
        for (wrt, name) in ["dq", "dk", "dv"].iter().enumerate() {
            let grad = g.add(Op::AttentionGrad { scale: 0.35, causal, wrt }, vec![q, k, v, out, dy], None);
            g.0.add_output(*name, grad);
        }
        check(if causal { "causal attention" } else { "attention" }, &g.0, 1e-5);
    }
}

#[test]
fn reductions_with_few_and_many_outputs() {
    let mut g = G(Graph::new("reductions"));
    // Few outputs, long reductions: blocks per output (several slices).
    let x = g.input("x", &[40, 300]);
    let x2 = g.add(Op::Binary(BinaryOp::Mul), vec![x, x], None);
    let total = g.reduce(ReduceOp::Sum, &[0, 1], x2);
    let y = g.input("y", &[3, 5000]);
    let rows = g.reduce(ReduceOp::Sum, &[1], y);
    let maxes = g.reduce(ReduceOp::Max, &[1], y);
    // Many short rows: a warp each.
    let z = g.input("z", &[3000, 20]);
    let short = g.reduce(ReduceOp::Sum, &[1], z);
    // Many columns (a bias gradient): a thread each, down its column.
    let w = g.input("w", &[6, 70_000]);
    let cols = g.reduce(ReduceOp::Sum, &[0], w);
    for (name, n) in [("total", total), ("rows", rows), ("max", maxes), ("short", short), ("cols", cols)] {
        g.0.add_output(name, n);
    }
    let program = lpac_passes::fuse::fuse(&g.0).unwrap();
    let emitted = emit_program(&program, Arch::Sm90, Some(&g.0)).unwrap();
    let per_thread: Vec<&str> = emitted
        .kernels
        .iter()
        .filter(|k| k.ptx.contains("a thread per output element"))
        .map(|k| k.entry.as_str())
        .collect();
    assert_eq!(per_thread.len(), 1, "only the column sum runs a thread per output: {per_thread:?}");
    check("reductions", &g.0, 1e-6);
}

/// A softmax over the last axis of `shape`, multiplied by `tanh(x)`.
fn softmax_graph(shape: [usize; 3]) -> Graph {
    let mut g = G(Graph::new("softmax"));
    let x = g.input("x", &shape);
    let m = g.reduce(ReduceOp::Max, &[2], x);
    let mb = g.add(Op::Broadcast { dims: vec![0, 1] }, vec![m], Some(f32t(&shape)));
    let d = g.add(Op::Binary(BinaryOp::Sub), vec![x, mb], None);
    let e = g.add(Op::Unary(UnaryOp::Exp), vec![d], None);
    let s = g.reduce(ReduceOp::Sum, &[2], e);
    let sb = g.add(Op::Broadcast { dims: vec![0, 1] }, vec![s], Some(f32t(&shape)));
    let p = g.add(Op::Binary(BinaryOp::Div), vec![e, sb], None);
    let t = g.add(Op::Unary(UnaryOp::Tanh), vec![x], None);
    let y = g.add(Op::Binary(BinaryOp::Mul), vec![p, t], None);
    g.0.add_output("p", p);
    g.0.add_output("y", y);
    g.0
}

#[test]
fn softmax_and_an_elementwise_chain() {
    check("softmax", &softmax_graph([3, 10, 70]), 1e-5);
}

#[test]
fn rows_kernels_with_long_rows_take_a_block_per_row() {
    // Rows of 5,000 (a vocabulary's logits): a block per row, its
    // reductions combined across warps; and 12 rows of 2,100 (too few rows
    // for a warp each).
    for shape in [[1, 2, 5000], [2, 6, 2100]] {
        let graph = softmax_graph(shape);
        let program = lpac_passes::fuse::fuse(&graph).unwrap();
        let emitted = emit_program(&program, Arch::Sm90, Some(&graph)).unwrap();
        assert!(
            emitted.kernels.iter().any(|k| k.ptx.contains("a block per row")),
            "{shape:?}: no rows kernel with a block per row"
        );
        check(&format!("softmax {shape:?}"), &graph, 1e-5);
    }
}

#[test]
fn updates_of_many_tensors_gather_scatter_and_random_numbers() {
    // Sixty elementwise updates of different sizes: one fused multi kernel,
    // each element dispatched to its member by a binary search.
    let mut g = G(Graph::new("multi"));
    for i in 0..60usize {
        let n = 1 + (i * 37) % 300;
        let (x, m) = (g.input(&format!("x{i}"), &[n]), g.input(&format!("m{i}"), &[n]));
        let nine = g.add(Op::Const { value: 0.9 }, vec![], Some(f32t(&[n])));
        let decayed = g.add(Op::Binary(BinaryOp::Mul), vec![m, nine], None);
        let m2 = g.add(Op::Binary(BinaryOp::Add), vec![decayed, x], None);
        g.0.add_output(format!("m{i}"), m2);
    }
    // Members whose lengths are multiples of 4 go four elements a thread,
    // in a function of their own; the others one at a time in another.
    let program = lpac_passes::fuse::fuse(&g.0).unwrap();
    let emitted = emit_program(&program, Arch::Sm90, Some(&g.0)).unwrap();
    let fused: Vec<&str> =
        emitted.kernels.iter().filter(|k| k.entry.contains("_fused")).map(|k| k.ptx.as_str()).collect();
    assert_eq!(fused.len(), 2, "a function for the quads, one for the rest");
    assert!(fused[0].contains("four consecutive elements a thread") && fused[0].contains("ld.global.v4.f32"));
    assert!(!fused[1].contains("ld.global.v4"));
    check("multi", &g.0, 1e-6);
    // Gather and scatter-add of rows; uniform random numbers (Philox).
    let mut g = G(Graph::new("rows"));
    let table = g.input("table", &[50, 33]);
    let idx = g.add(Op::Input { name: "idx".into() }, vec![], Some(TensorType::new(DType::I32, vec![7, 9])));
    let rows = g.add(Op::Gather, vec![table, idx], None);
    let back = g.add(Op::ScatterAdd, vec![idx, rows], Some(f32t(&[50, 33])));
    let u = g.add(Op::RandomUniform { key: 12345 }, vec![], Some(f32t(&[1000, 3])));
    g.0.add_output("rows", rows);
    g.0.add_output("back", back);
    g.0.add_output("u", u);
    check("gather, scatter-add, random", &g.0, 1e-6);
    // Token ids past the table (a corpus for a larger vocabulary): gather
    // writes 0 for them and scatter-add skips them, and both set the error
    // cell the runtime checks — from many threads at once, atomically.
    let mut g = G(Graph::new("bad ids"));
    let table = g.input("table", &[10, 33]);
    let idx = g.add(Op::Input { name: "idx".into() }, vec![], Some(TensorType::new(DType::I32, vec![7, 9])));
    let rows = g.add(Op::Gather, vec![table, idx], None);
    let back = g.add(Op::ScatterAdd, vec![idx, rows], Some(f32t(&[10, 33])));
    g.0.add_output("rows", rows);
    g.0.add_output("back", back);
    let inputs = random_inputs(&g.0, 11);
    let ids = inputs["idx"].to_f64_vec();
    assert!(ids.iter().any(|&i| i >= 10.0) && ids.iter().any(|&i| i < 10.0), "some ids in range, some not");
    let Emulated { outputs: got, error_cell } = run_graph(&g.0, &inputs, RunContext { seed: 3, step: 1 }).unwrap();
    assert_eq!(error_cell, 1, "an id out of range sets the error cell");
    let table = inputs["table"].to_f64_vec();
    for (j, &id) in ids.iter().enumerate() {
        let row = &got["rows"].to_f64_vec()[j * 33..(j + 1) * 33];
        if id >= 10.0 {
            assert!(row.iter().all(|&x| x == 0.0), "row {j} (id {id}) is zero");
        } else {
            let want = &table[id as usize * 33..(id as usize + 1) * 33];
            assert!(row.iter().zip(want).all(|(&x, &w)| x == w), "row {j} (id {id}) is its table row");
        }
    }
    // A scatter-add over several chunks of indices (600: 256, 256 and 88)
    // into rows longer than a block (300 columns), most rows hit several
    // times.
    let mut g = G(Graph::new("scatter"));
    let idx = g.add(Op::Input { name: "idx".into() }, vec![], Some(TensorType::new(DType::I32, vec![3, 200])));
    let src = g.input("src", &[3, 200, 300]);
    let back = g.add(Op::ScatterAdd, vec![idx, src], Some(f32t(&[50, 300])));
    g.0.add_output("back", back);
    check("scatter-add, long", &g.0, 1e-6);
}

#[test]
fn attention_with_head_dimensions_not_multiples_of_four() {
    // Rows of 6 floats: two threads a row, each reading its 3 columns from
    // shared memory one at a time (no 16-byte loads), one partial sum per
    // dot product. Rows of 5: a thread a row.
    for d in [6, 5] {
        let mut g = G(Graph::new("attention-odd"));
        let shape = [2, 1, 70, d];
        let (q, k, v, dy) = (g.input("q", &shape), g.input("k", &shape), g.input("v", &shape), g.input("dy", &shape));
        let out = g.add(Op::Attention { scale: 0.4, causal: true }, vec![q, k, v], None);
        g.0.add_output("out", out);
        for (wrt, name) in ["dq", "dk", "dv"].iter().enumerate() {
            let grad = g.add(Op::AttentionGrad { scale: 0.4, causal: true, wrt }, vec![q, k, v, out, dy], None);
            g.0.add_output(*name, grad);
        }
        let threads = if d == 6 { "2 thread(s)" } else { "1 thread(s)" };
        let program = lpac_passes::fuse::fuse(&g.0).unwrap();
        let emitted = emit_program(&program, Arch::Sm90, Some(&g.0)).unwrap();
        assert!(emitted.kernels.iter().filter(|k| k.entry.contains("attention")).all(|k| k.ptx.contains(threads)));
        check(&format!("attention, head dimension {d}"), &g.0, 1e-5);
    }
}

/// Causal attention over `[2, 1, 70, d]` queries and keys and `[2, 1, 70,
/// dv]` values: its forward and every gradient, fused and emitted.
fn attention_step(d: usize, dv: usize, scale: f64) -> (Graph, lpac_cuda::PtxProgram) {
    let mut g = G(Graph::new("attention-wide"));
    let (qk, vs) = ([2, 1, 70, d], [2, 1, 70, dv]);
    let (q, k, v) = (g.input("q", &qk), g.input("k", &qk), g.input("v", &vs));
    let dy = g.input("dy", &vs);
    let out = g.add(Op::Attention { scale, causal: true }, vec![q, k, v], None);
    g.0.add_output("out", out);
    for (wrt, name) in ["dq", "dk", "dv"].iter().enumerate() {
        let grad = g.add(Op::AttentionGrad { scale, causal: true, wrt }, vec![q, k, v, out, dy], None);
        g.0.add_output(*name, grad);
    }
    let program = lpac_passes::fuse::fuse(&g.0).unwrap();
    let emitted = emit_program(&program, Arch::Sm90, Some(&g.0)).unwrap();
    (g.0, emitted)
}

#[test]
fn attention_with_heads_wider_than_64_takes_four_threads_a_row() {
    // Four threads a row (32 of a row's columns each, so nothing spills at
    // 128), blocks of 32 rows: 70 rows span three blocks. Two butterfly
    // shuffles finish each dot product. At 128, dk's tiles of 32 rows (q,
    // dout, out: 3 × 128 columns) would need 49 KiB of shared memory; it
    // takes 16 rows at a time instead. A width of 66 (even, not a multiple
    // of 4) keeps two threads a row.
    for (d, dv, threads) in [(128, 128, 4), (96, 96, 4), (64, 128, 4), (66, 66, 2)] {
        let (graph, emitted) = attention_step(d, dv, 0.088);
        for k in emitted.kernels.iter().filter(|k| k.entry.contains("attention")) {
            assert!(k.ptx.contains(&format!("{threads} thread(s)")), "{}: {}", k.entry, k.ptx.lines().nth(3).unwrap());
            let shuffles = k.ptx.matches("shfl.sync.bfly").count();
            assert!(shuffles >= threads / 2, "{}: {shuffles} shuffles", k.entry);
        }
        if d == 128 {
            let dk = emitted.kernels.iter().find(|k| k.entry.ends_with("attention_dk")).unwrap();
            assert!(dk.ptx.contains("tiles of 16 rows"), "{}", dk.ptx.lines().take(5).collect::<Vec<_>>().join("\n"));
        }
        check(&format!("attention, head dimensions {d} and {dv}"), &graph, 1e-5);
    }
}

#[test]
fn elementwise_kernels_four_elements_at_a_time() {
    // x + bias (broadcast) then · transpose(y): the own-position load and
    // the store as 16-byte accesses, the broadcast and the transpose one
    // element at a time.
    let mut g = G(Graph::new("quads"));
    let x = g.input("x", &[12, 20]);
    let bias = g.input("bias", &[20]);
    let y = g.input("y", &[20, 12]);
    let b = g.add(Op::Broadcast { dims: vec![1] }, vec![bias], Some(f32t(&[12, 20])));
    let s = g.add(Op::Binary(BinaryOp::Add), vec![x, b], None);
    let yt = g.add(Op::Permute { perm: vec![1, 0] }, vec![y], None);
    let z = g.add(Op::Binary(BinaryOp::Mul), vec![s, yt], None);
    let e = g.add(Op::Unary(UnaryOp::Exp), vec![z], None);
    g.0.add_output("z", z);
    g.0.add_output("e", e);
    let program = lpac_passes::fuse::fuse(&g.0).unwrap();
    let emitted = emit_program(&program, Arch::Sm90, Some(&g.0)).unwrap();
    assert!(emitted.kernels.iter().any(|k| k.ptx.contains("ld.global.v4.f32") && k.ptx.contains("st.global.v4.f32")));
    check("four at a time", &g.0, 1e-6);
    // 3 × 7 elements: not a multiple of four, one at a time.
    let mut g = G(Graph::new("singles"));
    let x = g.input("x", &[3, 7]);
    let e = g.add(Op::Unary(UnaryOp::Exp), vec![x], None);
    g.0.add_output("e", e);
    let program = lpac_passes::fuse::fuse(&g.0).unwrap();
    let emitted = emit_program(&program, Arch::Sm90, Some(&g.0)).unwrap();
    assert!(emitted.kernels.iter().all(|k| !k.ptx.contains(".v4.")));
    check("one at a time", &g.0, 1e-6);
}

#[test]
fn mixed_precision_products_with_their_gradients() {
    // A two-layer MLP's loss and its weight gradients, after the `precision`
    // pass: every product on bf16 operands with a bf16 result (f32
    // accumulation), everything else f32. Against the interpreter running
    // the same bf16 graph in f64: the same roundings, so far closer than
    // bf16's 2^-9.
    let mut g = G(Graph::new("mlp"));
    let x = g.input("x", &[2, 24, 32]);
    let param = |g: &mut G, path: &str, shape: &[usize]| {
        let init = lpac_ir::Init::Uniform { lo: -0.2, hi: 0.2 };
        g.add(Op::Param { path: path.into(), init }, vec![], Some(f32t(shape)))
    };
    let w1 = param(&mut g, "w1", &[32, 48]);
    let w2 = param(&mut g, "w2", &[48, 16]);
    let h = g.add(Op::MatMul, vec![x, w1], None);
    let h = g.add(Op::Unary(UnaryOp::Tanh), vec![h], None);
    let y = g.add(Op::MatMul, vec![h, w2], None);
    let y2 = g.add(Op::Binary(BinaryOp::Mul), vec![y, y], None);
    let loss = g.reduce(ReduceOp::Sum, &[0, 1, 2], y2);
    g.0.add_output("loss", loss);
    let step = lpac_passes::manager::run_text(g.0, "precision,autodiff,simplify{explain=false},cse,dce").unwrap();
    let bf16_products =
        step.ids().filter(|&i| step.node(i).op == Op::MatMul && step.ty(i).dtype == DType::BF16).count();
    assert!(bf16_products >= 5, "forward and backward products in bf16: {bf16_products}");
    assert!(step.outputs.iter().any(|o| o.name == "grad:w1"));
    check("mixed precision step", &step, 1e-3);
}

#[test]
fn a_transformer_step_in_mixed_precision() {
    // tiny.lpa's loss and every gradient (attention fused, products in bf16)
    // on the emulator, products as cuBLAS computes them, against the
    // interpreter running the same graph.
    let sets = ["layers=1", "d=32", "heads=2", "ffn=64", "seq=16", "batch=2", "dropout=0.0"];
    let overrides: Vec<_> = sets.iter().map(|s| lpac_frontend::Override::parse(s).unwrap()).collect();
    let g = lpac_frontend::compile_file(std::path::Path::new("../../models/tiny.lpa"), &overrides).unwrap().graph;
    let g = lpac_passes::manager::run_text(g, "attention,precision,autodiff,simplify{explain=false},cse,dce").unwrap();
    assert!(g.ids().any(|i| g.node(i).op == Op::MatMul && g.ty(i).dtype == DType::BF16));
    // The same roundings on both sides: far closer than bf16's 2^-9 (which
    // an f32 product would be off by).
    check("tiny, bf16 products", &g, 1e-3);
}

/// A shipped model's whole training step at a small size (`sets`), through
/// `pipeline`, on the emulator against the interpreter in f64: every output
/// — loss, gradient norm, new parameters, new optimiser state. Returns the
/// step's graph.
fn check_training_step(model: &str, sets: &[&str], pipeline: &str) -> Graph {
    let overrides: Vec<_> = sets.iter().map(|s| lpac_frontend::Override::parse(s).unwrap()).collect();
    let path = format!("../../models/{model}.lpa");
    let g = lpac_frontend::compile_file(std::path::Path::new(&path), &overrides).unwrap().graph;
    let g = lpac_passes::manager::run_text(g, pipeline).unwrap();
    assert!(g.outputs.iter().any(|o| o.name.starts_with("adam_v:")), "the step updates the optimiser state");
    // The first step's optimiser inputs, as `lpac train` feeds them: zero
    // state (so the new moments are the clipped gradients, scaled, and
    // check them directly) and the default hyperparameters, weight decay on.
    let mut inputs = random_inputs(&g, 5);
    let hyper = [
        ("hp:lr", 1e-3),
        ("hp:beta1", 0.9),
        ("hp:beta2", 0.95),
        ("hp:eps", 1e-5),
        ("hp:weight_decay", 0.1),
        ("hp:clip", 1.0),
        ("hp:step", 1.0),
    ];
    for (name, value) in hyper {
        inputs.insert(name.to_string(), Tensor::from_f32(vec![], vec![value as f32]));
    }
    for (name, t) in inputs.iter_mut() {
        if name.starts_with("adam_") {
            *t = Tensor::from_f32(t.shape.clone(), vec![0.0; t.numel()]);
        }
    }
    check_with(&format!("{model} step"), &g, &inputs, 1e-4);
    g
}

#[test]
fn a_whole_llama_training_step_with_lpa_and_adamw() {
    // The step `lpac train --lowrank` runs on the GPU for models/llama.lpa:
    // rotary embeddings, RMSNorm, SwiGLU, causal attention fused, LPA's
    // factored projections, dropout's random numbers, the gradient norm and
    // AdamW's update of every parameter and its state.
    check_training_step(
        "llama",
        &["layers=2", "d=32", "heads=2", "ffn=48", "seq=16", "batch=2", "vocab=50", "dropout=0.1"],
        "lowrank{rank=4},attention,autodiff,optimizer{kind=adamw},simplify{explain=false},cse,dce",
    );
}

#[test]
fn a_twelve_layer_update_split_across_functions() {
    // llama's 12 layers have 111 parameter tensors: AdamW's update of all of
    // them in one function would take more addresses than PTX allows (4,352
    // bytes), so the emitter splits it; every part runs here.
    let g = check_training_step(
        "llama",
        &["layers=12", "d=16", "heads=2", "ffn=24", "seq=8", "batch=1", "vocab=50"],
        "attention,autodiff,optimizer{kind=adamw},simplify{explain=false},cse,dce",
    );
    let emitted = emit_program(&lpac_passes::fuse::fuse(&g).unwrap(), Arch::Sm90, None).unwrap();
    assert!(emitted.kernels.iter().any(|k| k.entry.contains("_fused1_")), "the update is split");
}

#[test]
fn a_whole_gpt_training_step_with_heads_of_128() {
    // models/gpt.lpa (the paper's Setting 1): learned positions, LayerNorm
    // after each sublayer, ReLU, biases everywhere, dropout, and one head of
    // 128 — the four-threads-a-row attention its full size runs. Worst
    // relative error 6.1e-5 (a second moment); the interpreter's own f32
    // run is off by 3.6e-5 there: f32 rounding, not a kernel.
    check_training_step(
        "gpt",
        &["layers=2", "d=128", "heads=1", "ffn=64", "seq=16", "batch=2", "vocab=50", "dropout=0.1"],
        "attention,autodiff,optimizer{kind=adamw},simplify{explain=false},cse,dce",
    );
}
