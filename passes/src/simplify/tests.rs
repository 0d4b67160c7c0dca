//! Tests of the simplify pass: every rule on a small graph, reassociation in
//! both directions by shape, merging projections when it pays and not when
//! it does not, meaning preserved on a model in f64, origins, explanations,
//! the report, determinism, and a timing print on gpt.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use lpac_frontend::{Override, compile_file};
use lpac_ir::interp::{Precision, RunContext, Tensor, init_params, run};
use lpac_ir::{DType, Graph, NodeId, Op, parse, print, verify};

use super::*;

fn model(path: &str, sets: &[&str]) -> Graph {
    let overrides: Vec<Override> = sets.iter().map(|s| Override::parse(s).unwrap()).collect();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    match compile_file(&file, &overrides) {
        Ok(m) => m.graph,
        Err(_) => panic!("{path} does not compile"),
    }
}

/// A small tiny.lpa.
fn small_tiny(extra: &[&str]) -> Graph {
    let mut sets = vec!["layers=1", "d=16", "heads=2", "ffn=32", "seq=4", "batch=2", "vocab=11"];
    sets.extend_from_slice(extra);
    model("models/tiny.lpa", &sets)
}

fn ir(text: &str) -> Graph {
    parse(text, "test.ir").unwrap_or_else(|e| panic!("{}", e.render(text)))
}

/// Runs the pass and checks what every run must satisfy.
fn simplify(g: &Graph) -> (PassOutcome, Stats) {
    let (out, stats) = Simplify::default().run_with_stats(g).unwrap();
    if let Err(errors) = verify(&out.graph) {
        panic!("output does not verify: {errors:?}\n{}", print(&out.graph));
    }
    assert_eq!(out.source.len(), out.graph.len());
    for s in out.source.iter().flatten() {
        assert!(s.index() < g.len());
    }
    let names: Vec<&str> = out.graph.outputs.iter().map(|o| o.name.as_str()).collect();
    let before: Vec<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, before, "outputs keep their order");
    // Every input and parameter, in order, at the start.
    let leaves = |g: &Graph| -> Vec<Op> {
        g.nodes.iter().filter(|n| matches!(n.op, Op::Input { .. } | Op::Param { .. })).map(|n| n.op.clone()).collect()
    };
    let kept = leaves(g);
    let first: Vec<Op> = out.graph.nodes[..kept.len()].iter().map(|n| n.op.clone()).collect();
    assert_eq!(first, kept);
    assert!(out.report.as_deref().is_some_and(|r| r.contains("e-nodes")));
    (out, stats)
}

/// The output text after simplifying `text`.
fn simplified(text: &str) -> String {
    print(&simplify(&ir(text)).0.graph)
}

fn check(text: &str, rule: &str, expected: &str) {
    let g = ir(text);
    let (out, stats) = simplify(&g);
    assert_eq!(print(&out.graph), expected, "after {rule}:\n{}", stats.report());
    assert!(stats.fired(rule) > 0, "{rule} did not fire:\n{}", stats.report());
    assert!(out.report.as_deref().is_some_and(|r| r.contains(rule)));
}

#[test]
fn permute_permute_composes() {
    check(
        "graph t {
  %0 : f32[2,3,4] = input \"x\"
  %1 : f32[3,4,2] = permute %0 perm=[1,2,0]
  %2 : f32[4,2,3] = permute %1 perm=[1,2,0]
  output y = %2
}",
        "permute-permute",
        "graph t {
  %0 : f32[2,3,4] = input \"x\"
  %1 : f32[4,2,3] = permute %0 perm=[2,0,1]   # via simplify
  output y = %1
}
",
    );
}

#[test]
fn permute_identity_drops() {
    let text = "graph t {
  %0 : f32[2,3] = input \"x\"
  %1 : f32[2,3] = permute %0 perm=[0,1]
  %2 : f32[2,3] = exp %1
  output y = %2
}";
    check(
        text,
        "permute-identity",
        "graph t {
  %0 : f32[2,3] = input \"x\"
  %1 : f32[2,3] = exp %0
  output y = %1
}
",
    );
    // A permutation and its inverse: composed, then dropped.
    let (out, stats) = simplify(&ir("graph t {
  %0 : f32[2,3,4] = input \"x\"
  %1 : f32[3,4,2] = permute %0 perm=[1,2,0]
  %2 : f32[2,3,4] = permute %1 perm=[2,0,1]
  output y = %2
}"));
    assert_eq!(out.graph.len(), 1);
    assert_eq!(out.graph.outputs[0].node, NodeId(0));
    assert!(stats.fired("permute-permute") > 0 && stats.fired("permute-identity") > 0);
}

#[test]
fn reshape_reshape_composes() {
    check(
        "graph t {
  %0 : f32[2,6] = input \"x\"
  %1 : f32[3,4] = reshape %0
  %2 : f32[12] = reshape %1
  output y = %2
}",
        "reshape-reshape",
        "graph t {
  %0 : f32[2,6] = input \"x\"
  %1 : f32[12] = reshape %0   # via simplify
  output y = %1
}
",
    );
}

#[test]
fn reshape_identity_drops() {
    check(
        "graph t {
  %0 : f32[2,6] = input \"x\"
  %1 : f32[12] = reshape %0
  %2 : f32[2,6] = reshape %1
  %3 : f32[2,6] = neg %2
  output y = %3
}",
        "reshape-identity",
        "graph t {
  %0 : f32[2,6] = input \"x\"
  %1 : f32[2,6] = neg %0
  output y = %1
}
",
    );
}

#[test]
fn broadcast_identity_drops() {
    check(
        "graph t {
  %0 : f32[2,3] = input \"x\"
  %1 : f32[2,3] = broadcast %0 dims=[0,1]
  %2 : f32[2,3] = exp %1
  output y = %2
}",
        "broadcast-identity",
        "graph t {
  %0 : f32[2,3] = input \"x\"
  %1 : f32[2,3] = exp %0
  output y = %1
}
",
    );
}

#[test]
fn broadcast_broadcast_composes() {
    check(
        "graph t {
  %0 : f32[3] = input \"x\"
  %1 : f32[2,3] = broadcast %0 dims=[1]
  %2 : f32[4,2,3] = broadcast %1 dims=[1,2]
  output y = %2
}",
        "broadcast-broadcast",
        "graph t {
  %0 : f32[3] = input \"x\"
  %1 : f32[4,2,3] = broadcast %0 dims=[2]   # via simplify
  output y = %1
}
",
    );
    // A stretched size-1 axis composes too.
    let out = simplified(
        "graph t {
  %0 : f32[1] = input \"x\"
  %1 : f32[3,1] = broadcast %0 dims=[1]
  %2 : f32[3,5] = broadcast %1 dims=[0,1]
  output y = %2
}",
    );
    assert!(out.contains("%1 : f32[3,5] = broadcast %0 dims=[1]"), "{out}");
}

#[test]
fn identities_of_slice_concat_and_cast() {
    check(
        "graph t {
  %0 : f32[2,3] = input \"x\"
  %1 : f32[2,3] = slice %0 axis=1 start=0 end=3
  %2 : f32[2,3] = exp %1
  output y = %2
}",
        "slice-identity",
        "graph t {
  %0 : f32[2,3] = input \"x\"
  %1 : f32[2,3] = exp %0
  output y = %1
}
",
    );
    let (_, stats) = simplify(&ir("graph t {
  %0 : f32[2,3] = input \"x\"
  %1 : f32[2,3] = concat %0 axis=0
  %2 : f32[2,3] = cast %1
  %3 : f32[2,3] = exp %2
  output y = %3
}"));
    assert!(stats.fired("concat-identity") > 0 && stats.fired("cast-identity") > 0, "{}", stats.report());
    assert_eq!(stats.nodes_after, 2);
}

#[test]
fn fold_unary_folds_constants() {
    check(
        "graph t {
  %0 : f32[] = const 4.0
  %1 : f32[] = sqrt %0
  %2 : f32[] = neg %1
  output y = %2
}",
        "fold-unary",
        "graph t {
  %0 : f32[] = const -2.0   # via simplify
  output y = %0
}
",
    );
    // i32 negation wraps as the interpreter's does.
    let out = simplified(
        "graph t {
  %0 : i32[2] = const -2147483648.0
  %1 : i32[2] = neg %0
  output y = %1
}",
    );
    assert!(out.contains("= const -2147483648.0"), "{out}");
}

#[test]
fn fold_binary_folds_constants() {
    check(
        "graph t {
  %0 : f32[] = const 2.0
  %1 : f32[] = const 3.0
  %2 : f32[] = mul %0, %1
  %3 : f32[] = add %2, %0
  output y = %3
}",
        "fold-binary",
        "graph t {
  %0 : f32[] = const 8.0   # via simplify
  output y = %0
}
",
    );
    // Comparisons fold to bool; i32 division by zero is left alone.
    let out = simplified(
        "graph t {
  %0 : f32[] = const 2.0
  %1 : f32[] = const 3.0
  %2 : bool[] = lt %0, %1
  %3 : i32[] = const 1.0
  %4 : i32[] = const 0.0
  %5 : i32[] = div %3, %4
  output a = %2
  output b = %5
}",
    );
    assert!(out.contains("bool[] = const 1.0"), "{out}");
    assert!(out.contains("div"), "{out}");
}

#[test]
fn fold_select_picks_a_branch() {
    check(
        "graph t {
  %0 : f32[2] = input \"a\"
  %1 : f32[2] = input \"b\"
  %2 : bool[] = const 0.0
  %3 : bool[2] = broadcast %2 dims=[]
  %4 : f32[2] = select %3, %0, %1
  %5 : f32[2] = exp %4
  output y = %5
}",
        "fold-select",
        "graph t {
  %0 : f32[2] = input \"a\"
  %1 : f32[2] = input \"b\"
  %2 : f32[2] = exp %1
  output y = %2
}
",
    );
}

#[test]
fn splat_consts_of_one_value_are_one_constant() {
    // Two splats of 1.5 written differently (one through a reshape): one node.
    check(
        "graph t {
  %0 : f32[2,3] = input \"x\"
  %1 : f32[] = const 1.5
  %2 : f32[2,3] = broadcast %1 dims=[]
  %3 : f32[2,3] = mul %0, %2
  %4 : f32[] = const 1.5
  %5 : f32[6] = broadcast %4 dims=[]
  %6 : f32[2,3] = reshape %5
  %7 : f32[2,3] = add %3, %6
  output y = %7
}",
        "splat-const",
        "graph t {
  %0 : f32[2,3] = input \"x\"
  %1 : f32[] = const 1.5
  %2 : f32[2,3] = broadcast %1 dims=[]
  %3 : f32[2,3] = mul %0, %2
  %4 : f32[2,3] = add %3, %2
  output y = %4
}
",
    );
}

#[test]
fn mul_one_div_one_add_zero_sub_zero() {
    let cases = [("mul %0, %2", "mul-one", "1.0"), ("div %0, %2", "div-one", "1.0"), ("add %0, %2", "add-zero", "0.0")];
    for (op, rule, value) in cases {
        let text = format!(
            "graph t {{
  %0 : f32[2] = input \"x\"
  %1 : f32[] = const {value}
  %2 : f32[2] = broadcast %1 dims=[]
  %3 : f32[2] = {op}
  %4 : f32[2] = exp %3
  output y = %4
}}"
        );
        check(
            &text,
            rule,
            "graph t {
  %0 : f32[2] = input \"x\"
  %1 : f32[2] = exp %0
  output y = %1
}
",
        );
    }
    // The constant on the left, and sub-zero (with -0).
    let (out, stats) = simplify(&ir("graph t {
  %0 : f32[2] = input \"x\"
  %1 : f32[2] = const 1.0
  %2 : f32[2] = mul %1, %0
  %3 : f32[2] = const -0.0
  %4 : f32[2] = sub %2, %3
  %5 : f32[2] = add %3, %4
  output y = %5
}"));
    assert_eq!(out.graph.outputs[0].node, NodeId(0), "{}", print(&out.graph));
    for rule in ["mul-one", "sub-zero", "add-zero"] {
        assert!(stats.fired(rule) > 0, "{rule}: {}", stats.report());
    }
}

#[test]
fn mul_by_zero_is_not_simplified() {
    // inf·0 is NaN, so x·0 must stay.
    let out = simplified(
        "graph t {
  %0 : f32[2] = input \"x\"
  %1 : f32[2] = const 0.0
  %2 : f32[2] = mul %0, %1
  output y = %2
}",
    );
    assert!(out.contains("mul %0, %1"), "{out}");
}

#[test]
fn neg_neg_cancels() {
    check(
        "graph t {
  %0 : f32[2] = input \"x\"
  %1 : f32[2] = neg %0
  %2 : f32[2] = neg %1
  %3 : f32[2] = exp %2
  output y = %3
}",
        "neg-neg",
        "graph t {
  %0 : f32[2] = input \"x\"
  %1 : f32[2] = exp %0
  output y = %1
}
",
    );
}

/// `(x·A)·B` with the given shapes, as IR text; `merged` writes `x·(A·B)`.
fn chain(x: &[usize], k: usize, r: usize, n: usize, merged: bool) -> String {
    let shape = |s: &[usize]| s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",");
    let mut xr = x.to_vec();
    *xr.last_mut().unwrap() = r;
    let mut xn = x.to_vec();
    *xn.last_mut().unwrap() = n;
    let body = if merged {
        format!("  %3 : f32[{k},{n}] = matmul %1, %2\n  %4 : f32[{}] = matmul %0, %3\n", shape(&xn))
    } else {
        format!("  %3 : f32[{}] = matmul %0, %1\n  %4 : f32[{}] = matmul %3, %2\n", shape(&xr), shape(&xn))
    };
    format!(
        "graph t {{
  %0 : f32[{}] = input \"x\"
  %1 : f32[{k},{r}] = param \"a\" init=normal(0.0, 0.1)
  %2 : f32[{r},{n}] = param \"b\" init=normal(0.0, 0.1)
{body}  output y = %4
}}",
        shape(x)
    )
}

/// Whether the output is computed as `(x·A)·B` (true) or `x·(A·B)` (false).
fn factored(g: &Graph) -> bool {
    let y = g.node(g.outputs[0].node);
    assert!(matches!(y.op, Op::MatMul));
    let left = matches!(g.node(y.inputs[0]).op, Op::MatMul);
    let right = matches!(g.node(y.inputs[1]).op, Op::MatMul);
    assert!(left != right, "{}", print(g));
    left
}

#[test]
fn reassociation_keeps_factored_form_for_many_rows() {
    // Training shapes: 128 rows, a narrow rank: (x·A)·B is cheaper.
    for merged in [false, true] {
        let g = ir(&chain(&[4, 32, 64], 64, 8, 64, merged));
        let (out, stats) = simplify(&g);
        assert!(factored(&out.graph), "{}", print(&out.graph));
        assert!(stats.fired("matmul-reassociate") > 0);
        assert!(stats.cost_after <= stats.cost_before);
        same_outputs(&g, &out.graph, 1e-12);
    }
}

#[test]
fn reassociation_merges_when_the_rank_is_wide() {
    // r = 64 > d·n/(d+n) = 8: x·(A·B) does less work per row, and 128 rows
    // pay for computing A·B.
    for merged in [false, true] {
        let g = ir(&chain(&[4, 32, 16], 16, 64, 16, merged));
        let (out, stats) = simplify(&g);
        assert!(!factored(&out.graph), "{}", print(&out.graph));
        assert!(stats.cost_after <= stats.cost_before);
        same_outputs(&g, &out.graph, 1e-12);
    }
}

#[test]
fn reassociation_keeps_factors_for_few_rows() {
    // One row: computing A·B (every step, since A and B are parameters)
    // costs more than it saves, however wide the rank.
    for merged in [false, true] {
        let (out, _) = simplify(&ir(&chain(&[1, 16], 16, 64, 16, merged)));
        assert!(factored(&out.graph), "{}", print(&out.graph));
    }
}

#[test]
fn reassociated_node_is_explained_and_traced() {
    let g = ir(&chain(&[4, 32, 16], 16, 64, 16, false));
    let (out, _) = simplify(&g);
    let y = out.graph.outputs[0].node;
    let why = out.explanations.get(&y).expect("the reassociated output is explained");
    assert!(why.contains("matmul-reassociate"), "{why}");
    assert_eq!(out.source[y.index()], Some(NodeId(4)));
    assert_eq!(out.graph.node(y).origin.passes, vec!["simplify"]);
    // The new A·B stands for the node it was built for.
    let ab = out.graph.node(y).inputs[1];
    assert_eq!(out.source[ab.index()], Some(NodeId(4)));
    assert_eq!(out.graph.node(ab).origin.passes, vec!["simplify"]);
    // Unchanged nodes keep their origins untouched.
    assert!(out.graph.nodes[..3].iter().all(|n| n.origin.passes.is_empty()));
}

#[test]
fn explanations_can_be_turned_off() {
    let g = ir(&chain(&[4, 32, 16], 16, 64, 16, false));
    let pass = Simplify { explain: false, ..Simplify::default() };
    let (out, stats) = pass.run_with_stats(&g).unwrap();
    assert!(out.explanations.is_empty());
    assert!(!stats.explained);
    assert!(!factored(&out.graph));
}

/// Three projections of one activation, `x[2,32,256]·Ai[256,w]`, summed.
fn projections(width: usize, d: usize) -> String {
    let mut text = format!("graph t {{\n  %0 : f32[2,32,{d}] = input \"x\"\n  %1 : f32[2,32,{d}] = exp %0\n");
    for i in 0..3 {
        let p = 2 + 2 * i;
        text += &format!("  %{p} : f32[{d},{width}] = param \"a{i}\" init=normal(0.0, 0.1)\n");
        text += &format!("  %{} : f32[2,32,{width}] = matmul %1, %{p}\n", p + 1);
    }
    text += &format!("  %8 : f32[2,32,{width}] = add %3, %5\n  %9 : f32[2,32,{width}] = add %8, %7\n");
    text += "  output y = %9\n}";
    text
}

#[test]
fn merges_narrow_projections_that_share_an_input() {
    let g = ir(&projections(8, 256));
    let (out, stats) = simplify(&g);
    let text = print(&out.graph);
    assert_eq!(stats.fired(merge::RULE), 1, "{}", stats.report());
    assert!(out.report.as_deref().unwrap().contains("merge-shared-input-projections x1"));
    let count = |op: &str| out.graph.nodes.iter().filter(|n| n.op.name() == op).count();
    assert_eq!((count("matmul"), count("concat"), count("slice")), (1, 1, 3), "{text}");
    assert!(text.contains("f32[256,24] = concat"), "{text}");
    assert!(text.contains("slice") && text.contains("start=16 end=24"), "{text}");
    assert!(stats.cost_after < stats.cost_before);
    // Merged nodes are explained and traced to the matmuls they replace.
    let slices: Vec<NodeId> = out.graph.ids().filter(|&i| out.graph.node(i).op.name() == "slice").collect();
    for (s, old) in slices.iter().zip([3, 5, 7]) {
        assert_eq!(out.source[s.index()], Some(NodeId(old)));
        assert!(out.explanations[s].starts_with(merge::RULE));
    }
    same_outputs(&g, &out.graph, 0.0);
}

#[test]
fn leaves_square_projections_alone() {
    // Reading x once saves less than the concat and slices cost.
    let g = ir(&projections(16, 16));
    let (out, stats) = simplify(&g);
    assert_eq!(stats.fired(merge::RULE), 0, "{}", stats.report());
    assert!(!print(&out.graph).contains("concat"));
}

/// Random values for a graph's inputs (ids below `vocab` for i32 inputs).
fn random_inputs(g: &Graph, vocab: i32, seed: u64) -> BTreeMap<String, Tensor> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let mut inputs = BTreeMap::new();
    for (id, name) in g.inputs() {
        let ty = g.ty(id);
        let n = ty.numel();
        let t = match ty.dtype {
            DType::I32 => Tensor::from_i32(ty.shape.clone(), (0..n).map(|_| (next() % vocab as u32) as i32).collect()),
            _ => Tensor::from_f32(ty.shape.clone(), (0..n).map(|_| next() as f32 / u32::MAX as f32 - 0.5).collect()),
        };
        inputs.insert(name.to_string(), t);
    }
    inputs
}

/// Runs both graphs in f64 on the same random inputs and parameters and
/// compares every output to `tol` relative to its largest element.
fn same_outputs(a: &Graph, b: &Graph, tol: f64) {
    let inputs = random_inputs(a, 11, 7);
    let params = init_params(a, 3);
    let ctx = RunContext { seed: 5, step: 1 };
    let ra = run(a, Precision::F64, &inputs, &params, ctx).unwrap();
    let rb = run(b, Precision::F64, &inputs, &params, ctx).unwrap();
    for ((na, ta), (nb, tb)) in ra.iter().zip(&rb) {
        assert_eq!(na, nb);
        let (va, vb) = (ta.to_f64_vec(), tb.to_f64_vec());
        assert_eq!(va.len(), vb.len());
        let scale = va.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        for (x, y) in va.iter().zip(&vb) {
            assert!((x - y).abs() <= tol * scale, "output {na}: {x} vs {y} (largest {scale})");
        }
    }
}

#[test]
fn meaning_is_preserved_on_tiny() {
    for extra in [&[][..], &["dropout=0.1"][..], &["layers=2", "batch=1"][..]] {
        let g = small_tiny(extra);
        let (out, stats) = simplify(&g);
        assert!(stats.nodes_after < stats.nodes_before, "{}", stats.report());
        same_outputs(&g, &out.graph, 1e-9);
    }
}

#[test]
fn meaning_is_preserved_with_every_rule_firing() {
    // A model-like graph where folding, identities and reassociation fire.
    let text = "graph t {
  %0 : f32[2,4,16] = input \"x\"
  %1 : f32[16,64] = param \"a\" init=normal(0.0, 0.3)
  %2 : f32[64,16] = param \"b\" init=normal(0.0, 0.3)
  %3 : f32[2,4,64] = matmul %0, %1
  %4 : f32[2,4,16] = matmul %3, %2
  %5 : f32[] = const 0.5
  %6 : f32[] = const 2.0
  %7 : f32[] = mul %5, %6
  %8 : f32[2,4,16] = broadcast %7 dims=[]
  %9 : f32[2,4,16] = mul %4, %8
  %10 : f32[2,16,4] = permute %9 perm=[0,2,1]
  %11 : f32[2,4,16] = permute %10 perm=[0,2,1]
  %12 : f32[8,16] = reshape %11
  %13 : f32[2,4,16] = reshape %12
  %14 : f32[2,4,16] = neg %13
  %15 : f32[2,4,16] = neg %14
  %16 : f32[2,4,16] = tanh %15
  %17 : f32[] = reduce_sum %16 axes=[0,1,2]
  output loss = %17
}";
    let g = ir(text);
    let (out, stats) = simplify(&g);
    for rule in ["fold-binary", "mul-one", "permute-permute", "permute-identity", "reshape-reshape", "neg-neg"] {
        assert!(stats.fired(rule) > 0, "{rule}: {}", stats.report());
    }
    assert!(!factored_anywhere(&out.graph) || out.graph.len() < g.len());
    same_outputs(&g, &out.graph, 1e-9);
}

fn factored_anywhere(g: &Graph) -> bool {
    g.nodes.iter().any(|n| matches!(n.op, Op::MatMul) && matches!(g.node(n.inputs[0]).op, Op::MatMul))
}

#[test]
fn output_is_deterministic_and_a_fixed_point() {
    let g = small_tiny(&["dropout=0.1"]);
    let (a, _) = simplify(&g);
    let (b, _) = simplify(&g);
    assert_eq!(print(&a.graph), print(&b.graph));
    // Simplifying again changes nothing but provenance-free identity.
    let (c, stats) = simplify(&a.graph);
    assert_eq!(print(&c.graph), print(&a.graph), "{}", stats.report());
}

#[test]
fn report_names_limits_rules_and_costs() {
    let g = small_tiny(&[]);
    let (out, stats) = simplify(&g);
    let report = out.report.unwrap();
    for needle in
        ["e-nodes", "e-classes", "iteration", "stopped: saturated", "rules fired", "permute-permute x", "cost"]
    {
        assert!(report.contains(needle), "{needle} missing from:\n{report}");
    }
    assert!(stats.cost_after.0 <= stats.cost_before.0);
    // Limits are honoured: one iteration only.
    let pass = Simplify { iter_limit: 1, ..Simplify::default() };
    let (_, stats) = pass.run_with_stats(&g).unwrap();
    assert_eq!(stats.iterations, 1);
    assert!(stats.stop_reason.starts_with("iteration limit"), "{}", stats.stop_reason);
}

#[test]
fn rejects_a_graph_that_does_not_verify() {
    let mut g = ir("graph t {
  %0 : f32[2] = input \"x\"
  %1 : f32[2] = exp %0
  output y = %1
}");
    g.nodes[1].ty = lpac_ir::TensorType::new(DType::F32, vec![3]);
    let err = Simplify::default().run(&g).unwrap_err();
    assert!(err.message.contains("does not verify"), "{err}");
}

#[test]
fn pass_metadata() {
    let pass = Simplify::default();
    assert_eq!(pass.name(), "simplify");
    assert!(pass.preserves_meaning());
    assert_eq!((pass.iter_limit, pass.node_limit), (16, 50_000));
    for name in rules::rule_names() {
        let kebab = name.chars().all(|c| c.is_ascii_lowercase() || c == '-');
        assert!(kebab, "{name}");
    }
}

/// Not a speed assertion: prints the time and e-graph statistics on gpt.lpa
/// (`cargo test --release -p lpac-passes simplify -- --nocapture`).
#[test]
fn gpt_timing_and_stats() {
    let g = model("models/gpt.lpa", &[]);
    let start = Instant::now();
    let (out, stats) = simplify(&g);
    let elapsed = start.elapsed();
    println!("gpt.lpa: simplify took {:.1} ms ({} explanations)", elapsed.as_secs_f64() * 1e3, out.explanations.len());
    println!("{}", stats.report());
    assert!(stats.nodes_after < stats.nodes_before);
    // The key case: after lowrank, Q/K/V's A factors share their input.
    let factored = crate::lowrank::Lowrank { rank: 128, target: crate::lowrank::Target::Attention }.run(&g).unwrap();
    let start = Instant::now();
    let (out, stats) = simplify(&factored.graph);
    let elapsed = start.elapsed();
    println!("gpt.lpa after lowrank{{rank=128}}: simplify took {:.1} ms", elapsed.as_secs_f64() * 1e3);
    println!("{}", stats.report());
    assert_eq!(stats.fired(merge::RULE), 24, "{}", stats.report());
    let _ = out;
}

#[test]
fn options_from_a_pipeline() {
    let opts = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let pass =
        Simplify::from_options(&opts(&[("iter_limit", "4"), ("time_limit", "0.5"), ("explain", "false")])).unwrap();
    assert_eq!(pass.iter_limit, 4);
    assert_eq!(pass.time_limit, Duration::from_millis(500));
    assert!(!pass.explain);
    assert_eq!(pass.node_limit, 50_000);
    for bad in [("iter_limit", "0"), ("node_limit", "many"), ("time_limit", "-1"), ("explain", "maybe"), ("x", "1")] {
        let err = Simplify::from_options(&opts(&[bad])).unwrap_err();
        assert!(err.contains(bad.0), "{err}");
    }
    for o in OPTIONS {
        assert!(Simplify::from_options(&opts(&[(o.name, o.default)])).is_ok(), "{}", o.name);
    }
}

#[test]
fn lowrank_attention_factors_are_merged_and_meaning_kept() {
    use crate::lowrank::{Lowrank, Target};
    // After lowrank, Q, K and V are x·A·B with narrow A[d, r] sharing x: the
    // three A factors merge into one matmul, the factored form stays.
    let dense = small_tiny(&["d=64", "ffn=64", "seq=32"]);
    let g = Lowrank { rank: 4, target: Target::Attention }.run(&dense).unwrap().graph;
    let (out, stats) = simplify(&g);
    assert_eq!(stats.fired(merge::RULE), 1, "{}", stats.report());
    assert!(print(&out.graph).contains("f32[64,12] = concat"), "{}", print(&out.graph));
    assert!(stats.cost_after < stats.cost_before, "{}", stats.report());
    same_outputs(&g, &out.graph, 1e-9);
}
