//! Unit tests of the autodiff pass: outputs, provenance, determinism, the
//! documented choices at non-differentiable points, and errors. The numeric
//! gradient checks against finite differences are in `passes/tests/gradcheck.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use lpac_ir::interp::{self, Precision, RunContext, Tensor};
use lpac_ir::{DType, Graph, NodeId, Op, parse, print, verify};

use super::*;
use crate::registry;

fn autodiff(g: &Graph) -> PassOutcome {
    let out = Autodiff.run(g).unwrap_or_else(|e| panic!("{e}"));
    verify(&out.graph).unwrap_or_else(|e| panic!("autodiff output does not verify: {e:?}\n{}", print(&out.graph)));
    out
}

fn run_f64(g: &Graph, inputs: &[(&str, Tensor)], params: &[(&str, Tensor)]) -> BTreeMap<String, Vec<f64>> {
    let inputs: BTreeMap<String, Tensor> = inputs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let params: BTreeMap<String, Tensor> = params.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let out = interp::run(g, Precision::F64, &inputs, &params, RunContext::default()).unwrap_or_else(|e| panic!("{e}"));
    out.into_iter().map(|(n, t)| (n, t.to_f64_vec())).collect()
}

fn tiny(sets: &[&str]) -> Graph {
    let overrides: Vec<_> = sets.iter().map(|s| lpac_frontend::Override::parse(s).unwrap()).collect();
    lpac_frontend::compile_file(Path::new("../models/tiny.lpa"), &overrides).unwrap_or_else(|e| panic!("{e}")).graph
}

const SMALL: &[&str] = &["layers=1", "d=16", "heads=2", "ffn=32", "seq=4", "batch=2", "vocab=32"];

#[test]
fn three_node_example_is_pinned() {
    let text = "graph g {
  %0 : f32[3] = param \"w\" init=const(1.0)   # m.lpa:1:1
  %1 : f32[3] = exp %0   # m.lpa:2:5
  %2 : f32[] = reduce_sum %1 axes=[0]   # m.lpa:3:5
  output loss = %2
}
";
    let out = autodiff(&parse(text, "t").unwrap());
    let expected = "graph g {
  %0 : f32[3] = param \"w\" init=const(1.0)   # m.lpa:1:1
  %1 : f32[3] = exp %0   # m.lpa:2:5
  %2 : f32[] = reduce_sum %1 axes=[0]   # m.lpa:3:5
  %3 : f32[] = const 1.0   # m.lpa:3:5 via autodiff
  %4 : f32[3] = broadcast %3 dims=[]   # m.lpa:3:5 via autodiff
  %5 : f32[3] = mul %4, %1   # m.lpa:2:5 via autodiff
  output loss = %2
  output \"grad:w\" = %5
}
";
    assert_eq!(print(&out.graph), expected);
    // Forward nodes stand for themselves; backward nodes for the node whose rule made them.
    let s = |i: u32| Some(NodeId(i));
    assert_eq!(out.source, vec![s(0), s(1), s(2), s(2), s(2), s(1)]);
    assert!(out.report.unwrap().contains("1 parameter(s) (0 zero)"));
}

#[test]
fn outputs_are_the_originals_then_one_gradient_per_parameter_in_node_order() {
    let text = "graph g {
  %0 : f32[2] = param \"b\" init=const(1.0)
  %1 : f32[2] = input \"x\"
  %2 : f32[2] = param \"a\" init=const(1.0)
  %3 : f32[2] = mul %1, %2
  %4 : f32[2] = add %3, %0
  %5 : f32[] = reduce_sum %4 axes=[0]
  %6 : f32[2] = param \"unused\" init=const(1.0)
  output loss = %5
  output y = %4
}
";
    let g = parse(text, "t").unwrap();
    let out = autodiff(&g);
    let names: Vec<&str> = out.graph.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["loss", "y", "grad:b", "grad:a", "grad:unused"]);
    assert_eq!(out.graph.outputs[..2], g.outputs[..], "original outputs unchanged");
    assert_eq!(out.graph.nodes[..g.len()], g.nodes[..], "forward nodes copied first, unchanged");
    assert_eq!(out.graph.param_count(), g.param_count(), "no parameters added");
    for (id, path) in g.params() {
        let grad = out.graph.output(&grad_name(path)).unwrap();
        assert_eq!(out.graph.ty(grad), g.ty(id), "{path}");
    }
    let x = Tensor::from_f64(vec![2], vec![3.0, -4.0]);
    let one = Tensor::from_f64(vec![2], vec![1.0, 1.0]);
    let v = run_f64(&out.graph, &[("x", x)], &[("a", one.clone()), ("b", one.clone()), ("unused", one)]);
    assert_eq!(v["grad:a"], vec![3.0, -4.0]);
    assert_eq!(v["grad:b"], vec![1.0, 1.0]);
    assert_eq!(v["grad:unused"], vec![0.0, 0.0]);
}

#[test]
fn an_unused_parameter_gets_a_zero_gradient_from_a_broadcast_scalar() {
    let text = "graph g {
  %0 : f32[2,3] = param \"unused\" init=const(1.0)
  %1 : f32[] = param \"s\" init=const(1.0)
  %2 : f32[] = exp %1
  output loss = %2
}
";
    let out = autodiff(&parse(text, "t").unwrap());
    let z = out.graph.output("grad:unused").unwrap();
    assert!(matches!(out.graph.node(z).op, Op::Broadcast { .. }));
    let c = out.graph.node(z).inputs[0];
    assert_eq!(out.graph.node(c).op, Op::Const { value: 0.0 });
    assert_eq!(out.graph.ty(c).shape, Vec::<usize>::new());
    assert_eq!(out.source[z.index()], Some(NodeId(0)), "a zero gradient stands for its parameter");
    assert!(out.explanations[&z].contains("does not influence"));
    assert!(out.report.unwrap().contains("(1 zero)"));
}

#[test]
fn a_parameter_used_only_through_a_comparison_gets_zero() {
    // loss = sum(select(p > 0, x, 2x)): piecewise constant in p.
    let text = "graph g {
  %0 : f32[2] = param \"p\" init=const(1.0)
  %1 : f32[2] = param \"q\" init=const(1.0)
  %2 : f32[] = const 0.0
  %3 : f32[2] = broadcast %2 dims=[]
  %4 : bool[2] = gt %0, %3
  %5 : f32[2] = add %1, %1
  %6 : f32[2] = select %4, %1, %5
  %7 : f32[] = reduce_sum %6 axes=[0]
  output loss = %7
}
";
    let g = parse(text, "t").unwrap();
    let active = active_nodes(&g, NodeId(7));
    assert!(!active[0] && !active[4], "the condition and what feeds it get no adjoint");
    let out = autodiff(&g);
    let p = Tensor::from_f64(vec![2], vec![1.0, -1.0]);
    let q = Tensor::from_f64(vec![2], vec![5.0, 6.0]);
    let v = run_f64(&out.graph, &[], &[("p", p), ("q", q)]);
    assert_eq!(v["grad:p"], vec![0.0, 0.0]);
    assert_eq!(v["grad:q"], vec![1.0, 2.0], "select routes to the chosen branch; q + q sums two contributions");
}

#[test]
fn integer_values_never_get_adjoints() {
    // The parameter goes through i32 and back: no gradient flows.
    let text = "graph g {
  %0 : f32[3] = param \"p\" init=const(1.0)
  %1 : i32[3] = cast %0
  %2 : f32[3] = cast %1
  %3 : f32[3] = mul %2, %0
  %4 : f32[] = reduce_sum %3 axes=[0]
  output loss = %4
}
";
    let g = parse(text, "t").unwrap();
    let active = active_nodes(&g, NodeId(4));
    assert_eq!(active, [true, false, false, true, true]);
    let out = autodiff(&g);
    for node in &out.graph.nodes[g.len()..] {
        assert_ne!(node.ty.dtype, DType::I32, "no backward node is an integer: {:?}", node.op);
    }
    let v = run_f64(&out.graph, &[], &[("p", Tensor::from_f64(vec![3], vec![1.5, 2.5, -3.5]))]);
    assert_eq!(v["grad:p"], vec![1.0, 2.0, -3.0], "only the direct use: d(trunc(p)·p)/dp taken with trunc constant");
}

#[test]
fn provenance_follows_the_forward_node_and_appends_autodiff() {
    let g = tiny(SMALL);
    let out = autodiff(&g);
    assert_eq!(out.source.len(), out.graph.len());
    for id in out.graph.ids() {
        let source = out.source[id.index()].expect("every node has a source");
        if id.index() < g.len() {
            assert_eq!(source, id);
            continue;
        }
        let (node, fwd) = (out.graph.node(id), g.node(source));
        assert_eq!(node.origin.span, fwd.origin.span, "{id}");
        assert_eq!(node.origin.passes.last().map(String::as_str), Some("autodiff"), "{id}");
        // Backward nodes only use earlier nodes, forward or backward.
        assert!(node.inputs.iter().all(|i| i < &id));
    }
}

#[test]
fn deterministic_and_verified_on_the_shipped_models() {
    for (path, sets) in [
        ("../models/tiny.lpa", SMALL),
        ("../models/gpt.lpa", SMALL),
        ("../models/llama.lpa", SMALL),
        (
            "../models/tiny.lpa",
            &["layers=2", "d=16", "heads=2", "ffn=32", "seq=4", "batch=2", "vocab=32", "dropout=0.1"][..],
        ),
    ] {
        let overrides: Vec<_> = sets.iter().map(|s| lpac_frontend::Override::parse(s).unwrap()).collect();
        let g = lpac_frontend::compile_file(Path::new(path), &overrides).unwrap_or_else(|e| panic!("{e}")).graph;
        let a = autodiff(&g);
        let b = autodiff(&g);
        let text = print(&a.graph);
        assert_eq!(text, print(&b.graph), "{path}");
        assert_eq!(parse(&text, "t").unwrap(), a.graph, "{path}: the output round-trips through text");
        assert_eq!(a.graph.outputs.len(), 1 + g.params().count(), "{path}");
    }
}

#[test]
fn max_ties_go_to_the_first_operand_and_reduce_max_ties_each_get_everything() {
    let text = "graph g {
  %0 : f32[4] = param \"a\" init=const(1.0)
  %1 : f32[4] = param \"b\" init=const(1.0)
  %2 : f32[4] = max %0, %1
  %3 : f32[4] = min %0, %1
  %4 : f32[4] = add %2, %3
  %5 : f32[] = reduce_max %0 axes=[0]
  %6 : f32[] = reduce_sum %4 axes=[0]
  %7 : f32[] = add %5, %6
  output loss = %7
}
";
    let out = autodiff(&parse(text, "t").unwrap());
    let a = Tensor::from_f64(vec![4], vec![1.0, 3.0, 3.0, 2.0]);
    let b = Tensor::from_f64(vec![4], vec![1.0, 0.0, 5.0, 2.0]);
    let v = run_f64(&out.graph, &[], &[("a", a), ("b", b)]);
    // max: a wins at 1 and at the ties 0, 3; min: a wins at 2 and at the ties.
    // reduce_max: positions 1 and 2 both hold the maximum 3, each gets 1.
    assert_eq!(v["grad:a"], vec![2.0, 2.0, 2.0, 2.0]);
    assert_eq!(v["grad:b"], vec![0.0, 1.0, 1.0, 0.0]);
    let b2 = Tensor::from_f64(vec![4], vec![0.0, 4.0, 2.0, 9.0]);
    let a2 = Tensor::from_f64(vec![4], vec![1.0, 3.0, 3.0, 2.0]);
    let v = run_f64(&out.graph, &[], &[("a", a2), ("b", b2)]);
    assert_eq!(v["grad:a"], vec![1.0, 2.0, 2.0, 1.0]);
    assert_eq!(v["grad:b"], vec![1.0, 1.0, 1.0, 1.0]);
}

#[test]
fn abs_has_zero_gradient_at_zero() {
    let text = "graph g {
  %0 : f32[3] = param \"x\" init=const(1.0)
  %1 : f32[3] = abs %0
  %2 : f32[] = reduce_sum %1 axes=[0]
  output loss = %2
}
";
    let out = autodiff(&parse(text, "t").unwrap());
    let v = run_f64(&out.graph, &[], &[("x", Tensor::from_f64(vec![3], vec![-2.0, 0.0, 0.5]))]);
    assert_eq!(v["grad:x"], vec![-1.0, 0.0, 1.0]);
}

#[test]
fn pow_is_guarded_where_it_is_not_differentiable() {
    let text = "graph g {
  %0 : f32[4] = param \"a\" init=const(1.0)
  %1 : f32[4] = param \"b\" init=const(1.0)
  %2 : f32[4] = pow %0, %1
  %3 : f32[] = reduce_sum %2 axes=[0]
  output loss = %3
}
";
    let out = autodiff(&parse(text, "t").unwrap());
    let a = Tensor::from_f64(vec![4], vec![-2.0, 0.0, 0.0, 2.0]);
    let b = Tensor::from_f64(vec![4], vec![3.0, 0.0, 2.0, 0.5]);
    let v = run_f64(&out.graph, &[], &[("a", a), ("b", b)]);
    // Base: b·a^(b−1): 3·4 = 12; b = 0 gives 0 (not 0·∞); 2·0 = 0; 0.5/√2.
    assert_eq!(v["grad:a"], vec![12.0, 0.0, 0.0, 0.5 * 2f64.powf(-0.5)]);
    // Exponent: y·ln a for a > 0, else 0 (not NaN).
    assert_eq!(v["grad:b"], vec![0.0, 0.0, 0.0, 2f64.powf(0.5) * 2f64.ln()]);
}

#[test]
fn a_cast_gradient_is_cast_back() {
    let text = "graph g {
  %0 : f32[4] = param \"x\" init=const(1.0)
  %1 : bf16[4] = cast %0
  %2 : bf16[4] = input \"w\"
  %3 : bf16[4] = mul %1, %2
  %4 : bf16[] = reduce_sum %3 axes=[0]
  %5 : f32[] = cast %4
  output loss = %5
}
";
    let out = autodiff(&parse(text, "t").unwrap());
    let grad = out.graph.output("grad:x").unwrap();
    assert_eq!(out.graph.node(grad).op, Op::Cast);
    assert_eq!(out.graph.ty(out.graph.node(grad).inputs[0]).dtype, DType::BF16);
    // The weights are exact in bf16, so the gradient is exactly them.
    let w = vec![0.5, -1.25, 3.0, 0.125];
    let mut wt = Tensor::from_f64(vec![4], w.clone());
    wt.dtype = DType::BF16;
    let v = run_f64(&out.graph, &[("w", wt)], &[("x", Tensor::from_f64(vec![4], vec![0.3, 0.2, 0.1, 0.7]))]);
    assert_eq!(v["grad:x"], w);
}

#[test]
fn a_loss_that_is_a_parameter_or_independent_of_all() {
    let text = "graph g {
  %0 : f32[] = param \"p\" init=const(1.0)
  output loss = %0
}
";
    let out = autodiff(&parse(text, "t").unwrap());
    let v = run_f64(&out.graph, &[], &[("p", Tensor::from_f64(vec![], vec![4.0]))]);
    assert_eq!(v["grad:p"], vec![1.0]);

    let text = "graph g {
  %0 : f32[2] = param \"p\" init=const(1.0)
  %1 : f32[] = input \"x\"
  output loss = %1
}
";
    let out = autodiff(&parse(text, "t").unwrap());
    let v = run_f64(
        &out.graph,
        &[("x", Tensor::from_f64(vec![], vec![4.0]))],
        &[("p", Tensor::from_f64(vec![2], vec![1.0, 2.0]))],
    );
    assert_eq!(v["grad:p"], vec![0.0, 0.0]);
    assert_eq!(v["loss"], vec![4.0]);
}

#[test]
fn refuses_what_it_cannot_differentiate() {
    let err = |text: &str| Autodiff.run(&parse(text, "t").unwrap()).expect_err("refused").to_string();
    let e = err("graph g {\n  %0 : f32[2] = param \"p\" init=const(1.0)\n  output y = %0\n}\n");
    assert!(e.contains("must be a float scalar") && e.contains("f32[2]"), "{e}");
    let e = err("graph g {\n  %0 : i32[] = input \"n\"\n  output n = %0\n}\n");
    assert!(e.contains("must be a float scalar"), "{e}");
    let e = err("graph g {\n  %0 : f32[] = param \"p\" init=const(1.0)\n}\n");
    assert!(e.contains("no outputs"), "{e}");
    let once = autodiff(
        &parse("graph g {\n  %0 : f32[] = param \"p\" init=const(1.0)\n  output loss = %0\n}\n", "t").unwrap(),
    );
    let e = Autodiff.run(&once.graph).expect_err("refused").to_string();
    assert!(e.contains("already has an output `grad:p`"), "{e}");
}

#[test]
fn registered_and_listed() {
    let pass = registry::create(&registry::PassSpec::new("autodiff")).unwrap();
    assert_eq!(pass.name(), "autodiff");
    assert!(pass.preserves_meaning());
    let info = registry::all().into_iter().find(|p| p.name == "autodiff").unwrap();
    assert!(!info.summary.contains('\n'));
    assert!(registry::create(&registry::PassSpec::new("autodiff").with("x", 1)).is_err());
}

/// Not a speed assertion: prints the pass's time on gpt.lpa at full size
/// (`cargo test --release -p lpac-passes --lib autodiff::tests::gpt -- --nocapture`).
#[test]
fn gpt_full_size_timing() {
    let g = lpac_frontend::compile_file(Path::new("../models/gpt.lpa"), &[]).unwrap_or_else(|e| panic!("{e}")).graph;
    let mut times = Vec::new();
    let mut out = None;
    for _ in 0..5 {
        let start = std::time::Instant::now();
        out = Some(Autodiff.run(&g).unwrap());
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let out = out.unwrap();
    times.sort_by(f64::total_cmp);
    println!(
        "gpt.lpa (24 layers): autodiff {} -> {} nodes, best {:.2} ms, median {:.2} ms",
        g.len(),
        out.graph.len(),
        times[0],
        times[2]
    );
    assert_eq!(out.graph.outputs.len(), 1 + g.params().count());
    let start = std::time::Instant::now();
    verify(&out.graph).unwrap();
    println!("verify of the result: {:.2} ms", start.elapsed().as_secs_f64() * 1e3);
}
