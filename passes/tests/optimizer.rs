//! The `optimizer` pass against hand computations: AdamW and SGD with
//! momentum, two steps each, with the weight-decay mask and gradient clipping;
//! the outputs' names and order; provenance; refusals.
//!
//! The input graphs are written by hand in IR text with `grad:` outputs as
//! autodiff produces them. To keep the arithmetic readable the gradients are
//! step inputs (`gw`, `gb`) rather than derivatives of the loss: the pass
//! only reads the `grad:` outputs, whatever computes them.

use std::collections::BTreeMap;

use lpac_ir::interp::{self, Precision, RunContext, Tensor};
use lpac_ir::{DType, Graph, Op, TensorType, parse, print, verify};
use lpac_passes::optimizer::{Hyper, Kind, Optimizer, hyper_inputs, state_inputs};
use lpac_passes::pass::{Pass, PassOutcome};
use lpac_passes::registry::{PassSpec, create, parse_pipeline};

/// Two parameters of two elements each: a matrix `w` (rank 2, decayed under
/// the mask) and a vector `b` (rank 1, not decayed under the mask).
const STEP: &str = r#"
graph step {
  %0 : f32[1,2] = param "w" init=const(0.0)   # m.lpa:3:5
  %1 : f32[2] = param "b" init=const(0.0)   # m.lpa:4:5
  %2 : f32[1,2] = input "gw"
  %3 : f32[2] = input "gb"
  %4 : f32[] = reduce_sum %0 axes=[0,1]
  %5 : f32[] = reduce_sum %1 axes=[0]
  %6 : f32[] = add %4, %5
  output loss = %6
  output "grad:w" = %2
  output "grad:b" = %3
}
"#;

fn graph() -> Graph {
    parse(STEP, "step.ir").unwrap_or_else(|e| panic!("{}", e.render(STEP)))
}

fn optimize(pass: Optimizer, g: &Graph) -> PassOutcome {
    let out = pass.run(g).unwrap_or_else(|e| panic!("{e}"));
    verify(&out.graph).unwrap_or_else(|e| panic!("optimizer output does not verify: {e:?}"));
    out
}

fn f64t(shape: &[usize], data: &[f64]) -> Tensor {
    Tensor::from_f64(shape.to_vec(), data.to_vec())
}

/// The hyperparameters of the hand computations.
fn hyper(clip: f64) -> Hyper {
    Hyper { lr: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, clip, momentum: 0.9 }
}

/// State and parameters of the two-parameter graph, by output-style name.
type Values = BTreeMap<String, Vec<f64>>;

/// Runs one step of the optimised graph in `precision`: parameters and state
/// from `values` (`param:w`, `adam_m:w`, ...), gradients `gw`, `gb`, and the
/// `hp:` feeds from `h` at step `t`. Returns every output by name.
#[allow(clippy::too_many_arguments)]
fn step_in(
    precision: Precision,
    g: &Graph,
    kind: Kind,
    h: &Hyper,
    t: u64,
    values: &Values,
    gw: [f64; 2],
    gb: [f64; 2],
) -> Values {
    let shape = |path: &str| if path == "w" { vec![1, 2] } else { vec![2] };
    let mut inputs = BTreeMap::new();
    inputs.insert("gw".to_string(), f64t(&[1, 2], &gw));
    inputs.insert("gb".to_string(), f64t(&[2], &gb));
    for (name, v) in h.feeds(kind, h.lr, t) {
        inputs.insert(name.to_string(), f64t(&[], &[v]));
    }
    let mut params = BTreeMap::new();
    for path in ["w", "b"] {
        params.insert(path.to_string(), f64t(&shape(path), &values[&format!("param:{path}")]));
        for prefix in state_inputs(kind) {
            let name = format!("{prefix}:{path}");
            inputs.insert(name.clone(), f64t(&shape(path), &values[&name]));
        }
    }
    let outs = interp::run(g, precision, &inputs, &params, RunContext::default()).unwrap_or_else(|e| panic!("{e}"));
    outs.into_iter().map(|(name, t)| (name, t.to_f64_vec())).collect()
}

fn step(g: &Graph, kind: Kind, h: &Hyper, t: u64, values: &Values, gw: [f64; 2], gb: [f64; 2]) -> Values {
    step_in(Precision::F64, g, kind, h, t, values, gw, gb)
}

/// w = [1, −2], b = [0.5, 0.25], all state zero.
fn initial(kind: Kind) -> Values {
    let mut v = Values::new();
    v.insert("param:w".into(), vec![1.0, -2.0]);
    v.insert("param:b".into(), vec![0.5, 0.25]);
    for prefix in state_inputs(kind) {
        v.insert(format!("{prefix}:w"), vec![0.0; 2]);
        v.insert(format!("{prefix}:b"), vec![0.0; 2]);
    }
    v
}

#[track_caller]
fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-12 * w.abs().max(1e-3), "{what}[{i}]: got {g}, want {w}");
    }
}

// The first gradient: gw = [0.3, −0.4], gb = [0.0, 1.2];
// its global norm is sqrt(0.09 + 0.16 + 0 + 1.44) = sqrt(1.69) = 1.3.
const GW1: [f64; 2] = [0.3, -0.4];
const GB1: [f64; 2] = [0.0, 1.2];
// The second: gw = [0.1, 0.2], gb = [−0.6, 0.0]; norm sqrt(0.01 + 0.04 + 0.36) = sqrt(0.41).
const GW2: [f64; 2] = [0.1, 0.2];
const GB2: [f64; 2] = [-0.6, 0.0];

#[test]
fn adamw_two_steps_by_hand() {
    let g = optimize(Optimizer::new(Kind::AdamW), &graph()).graph;
    // lr 0.1, β1 0.9, β2 0.95, ε 1e-8, wd 0.1, clip 0 (disabled: the norm 1.3 is not clipped).
    let h = hyper(0.0);

    // Step t = 1, m = v = 0.
    let s1 = step(&g, Kind::AdamW, &h, 1, &initial(Kind::AdamW), GW1, GB1);
    assert_close(&s1["loss"], &[1.0 - 2.0 + 0.5 + 0.25], "loss");
    assert_close(&s1["grad_norm"], &[1.3], "grad_norm");
    // m = 0.9·0 + 0.1·g
    assert_close(&s1["adam_m:w"], &[0.03, -0.04], "m_w");
    assert_close(&s1["adam_m:b"], &[0.0, 0.12], "m_b");
    // v = 0.95·0 + 0.05·g²
    assert_close(&s1["adam_v:w"], &[0.05 * 0.09, 0.05 * 0.16], "v_w"); // [0.0045, 0.008]
    assert_close(&s1["adam_v:b"], &[0.0, 0.05 * 1.44], "v_b"); // [0, 0.072]
    // Bias corrections at t = 1: 1 − 0.9 = 0.1 and 1 − 0.95 = 0.05, so
    // step_size = 0.1/0.1 = 1 and denom = sqrt(v)/sqrt(0.05) + ε = |g| + ε.
    // w (rank 2, decayed): first w·(1 − 0.1·0.1) = w·0.99, then w − 1·m/denom:
    //   [0.99 − 0.03/(0.3 + 1e-8), −1.98 + 0.04/(0.4 + 1e-8)] ≈ [0.89, −1.88]
    let w1 = [0.99 - 0.03 / (0.3 + 1e-8), -1.98 + 0.04 / (0.4 + 1e-8)];
    assert_close(&s1["param:w"], &w1, "w after step 1");
    // b (rank 1, not decayed under the mask):
    //   [0.5 − 0/(0 + 1e-8), 0.25 − 0.12/(1.2 + 1e-8)] ≈ [0.5, 0.15]
    let b1 = [0.5, 0.25 - 0.12 / (1.2 + 1e-8)];
    assert_close(&s1["param:b"], &b1, "b after step 1");

    // Step t = 2, state from step 1, new gradients.
    let mut v1 = Values::new();
    for name in ["param:w", "param:b", "adam_m:w", "adam_m:b", "adam_v:w", "adam_v:b"] {
        v1.insert(name.to_string(), s1[name].clone());
    }
    let s2 = step(&g, Kind::AdamW, &h, 2, &v1, GW2, GB2);
    assert_close(&s2["grad_norm"], &[0.41f64.sqrt()], "grad_norm 2");
    // m = 0.9·m + 0.1·g: w [0.027 + 0.01, −0.036 + 0.02] = [0.037, −0.016];
    //                    b [0 − 0.06, 0.108 + 0] = [−0.06, 0.108]
    assert_close(&s2["adam_m:w"], &[0.037, -0.016], "m_w 2");
    assert_close(&s2["adam_m:b"], &[-0.06, 0.108], "m_b 2");
    // v = 0.95·v + 0.05·g²: w [0.004275 + 0.0005, 0.0076 + 0.002] = [0.004775, 0.0096];
    //                       b [0 + 0.018, 0.0684 + 0] = [0.018, 0.0684]
    assert_close(&s2["adam_v:w"], &[0.004775, 0.0096], "v_w 2");
    assert_close(&s2["adam_v:b"], &[0.018, 0.0684], "v_b 2");
    // Bias corrections at t = 2: 1 − 0.9² = 0.19, 1 − 0.95² = 0.0975;
    // step_size = 0.1/0.19; denom = sqrt(v/0.0975) + 1e-8.
    let step_size = 0.1 / 0.19; // 0.5263157894736842
    let denom = |v: f64| (v / 0.0975).sqrt() + 1e-8;
    // sqrt(0.004775/0.0975) = 0.2213015…, sqrt(0.0096/0.0975) = 0.3137858…
    let w2 = [w1[0] * 0.99 - step_size * 0.037 / denom(0.004775), w1[1] * 0.99 - step_size * -0.016 / denom(0.0096)];
    // ≈ [0.8811 − 0.0880, −1.8612 + 0.0268] = [0.7931, −1.8344]
    assert_close(&s2["param:w"], &w2, "w after step 2");
    assert!((s2["param:w"][0] - 0.79310).abs() < 1e-4 && (s2["param:w"][1] + 1.83436).abs() < 1e-4);
    // sqrt(0.018/0.0975) = 0.4296689…, sqrt(0.0684/0.0975) = 0.8375789…
    let b2 = [b1[0] - step_size * -0.06 / denom(0.018), b1[1] - step_size * 0.108 / denom(0.0684)];
    // ≈ [0.5 + 0.0735, 0.15 − 0.0679] = [0.5735, 0.0821]
    assert_close(&s2["param:b"], &b2, "b after step 2");
    assert!((s2["param:b"][0] - 0.57350).abs() < 1e-4 && (s2["param:b"][1] - 0.08214).abs() < 1e-4);

    // The same steps in f32 agree to f32 precision.
    let f1 = step_in(Precision::F32, &g, Kind::AdamW, &h, 1, &initial(Kind::AdamW), GW1, GB1);
    for (name, want) in &s1 {
        for (a, b) in f1[name].iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{name}: f32 {a} vs f64 {b}");
        }
    }
}

#[test]
fn adamw_decay_mask_off_decays_vectors_too() {
    let pass = Optimizer { decay_mask: false, ..Optimizer::new(Kind::AdamW) };
    let g = optimize(pass, &graph()).graph;
    let s1 = step(&g, Kind::AdamW, &hyper(0.0), 1, &initial(Kind::AdamW), GW1, GB1);
    // b is now decayed first too: b·0.99 = [0.495, 0.2475], then the Adam step.
    assert_close(&s1["param:b"], &[0.495, 0.2475 - 0.12 / (1.2 + 1e-8)], "b");
    assert_close(&s1["param:w"], &[0.99 - 0.03 / (0.3 + 1e-8), -1.98 + 0.04 / (0.4 + 1e-8)], "w");
    // With weight decay 0 the decay is a multiplication by exactly 1.
    let h = Hyper { weight_decay: 0.0, ..hyper(0.0) };
    let s1 = step(&g, Kind::AdamW, &h, 1, &initial(Kind::AdamW), GW1, GB1);
    assert_close(&s1["param:b"], &[0.5, 0.25 - 0.12 / (1.2 + 1e-8)], "b without decay");
}

#[test]
fn adamw_clipping_scales_only_above_the_limit() {
    let g = optimize(Optimizer::new(Kind::AdamW), &graph()).graph;
    let init = initial(Kind::AdamW);
    // Norm 1.3 above clip 0.65: every gradient is scaled by c = 0.65/(1.3 + 1e-6) ≈ 0.4999996.
    let c = 0.65 / (1.3 + 1e-6);
    let s = step(&g, Kind::AdamW, &hyper(0.65), 1, &init, GW1, GB1);
    assert_close(&s["grad_norm"], &[1.3], "grad_norm is the norm before clipping");
    assert_close(&s["adam_m:w"], &[0.1 * c * 0.3, 0.1 * c * -0.4], "m_w clipped");
    assert_close(&s["adam_m:b"], &[0.0, 0.1 * c * 1.2], "m_b clipped");
    assert_close(&s["adam_v:b"], &[0.0, 0.05 * (c * 1.2) * (c * 1.2)], "v_b clipped");
    // w·0.99 − (c·0.3)/(c·0.3 + ε): the step barely feels the scale at t = 1, but does feel it.
    assert_close(&s["param:w"], &[0.99 - c * 0.03 / (c * 0.3 + 1e-8), -1.98 + c * 0.04 / (c * 0.4 + 1e-8)], "w");
    // Norm 1.3 below clip 2.6: min(1, 2.6/1.300001) = 1, unchanged.
    let s = step(&g, Kind::AdamW, &hyper(2.6), 1, &init, GW1, GB1);
    assert_eq!(s["adam_m:w"], step(&g, Kind::AdamW, &hyper(0.0), 1, &init, GW1, GB1)["adam_m:w"]);
    assert_close(&s["adam_m:b"], &[0.0, 0.12], "m_b unclipped");
    // clip = 0 and clip < 0 disable clipping (a select in the graph, no recompile).
    for clip in [0.0, -1.0] {
        let s = step(&g, Kind::AdamW, &hyper(clip), 1, &init, GW1, GB1);
        assert_close(&s["adam_m:b"], &[0.0, 0.12], "m_b with clipping off");
    }
}

#[test]
fn sgd_momentum_two_steps_by_hand() {
    let g = optimize(Optimizer::new(Kind::Sgd), &graph()).graph;
    // lr 0.1, μ 0.9, wd 0.1 (w only, by the mask), clip 0.
    let h = hyper(0.0);
    let s1 = step(&g, Kind::Sgd, &h, 1, &initial(Kind::Sgd), GW1, GB1);
    assert_close(&s1["grad_norm"], &[1.3], "grad_norm");
    // w: g + 0.1·w = [0.3 + 0.1, −0.4 − 0.2] = [0.4, −0.6]; buf = 0.9·0 + g = [0.4, −0.6];
    //    w − 0.1·buf = [1 − 0.04, −2 + 0.06] = [0.96, −1.94]
    assert_close(&s1["momentum:w"], &[0.4, -0.6], "buf_w");
    assert_close(&s1["param:w"], &[0.96, -1.94], "w");
    // b: no decay; buf = [0, 1.2]; b − 0.1·buf = [0.5, 0.25 − 0.12] = [0.5, 0.13]
    assert_close(&s1["momentum:b"], &[0.0, 1.2], "buf_b");
    assert_close(&s1["param:b"], &[0.5, 0.13], "b");

    let mut v1 = Values::new();
    for name in ["param:w", "param:b", "momentum:w", "momentum:b"] {
        v1.insert(name.to_string(), s1[name].clone());
    }
    let s2 = step(&g, Kind::Sgd, &h, 2, &v1, GW2, GB2);
    // w: g + 0.1·w = [0.1 + 0.096, 0.2 − 0.194] = [0.196, 0.006];
    //    buf = 0.9·[0.4, −0.6] + g = [0.36 + 0.196, −0.54 + 0.006] = [0.556, −0.534];
    //    w − 0.1·buf = [0.96 − 0.0556, −1.94 + 0.0534] = [0.9044, −1.8866]
    assert_close(&s2["momentum:w"], &[0.556, -0.534], "buf_w 2");
    assert_close(&s2["param:w"], &[0.9044, -1.8866], "w 2");
    // b: buf = 0.9·[0, 1.2] + [−0.6, 0] = [−0.6, 1.08]; b − 0.1·buf = [0.5 + 0.06, 0.13 − 0.108] = [0.56, 0.022]
    assert_close(&s2["momentum:b"], &[-0.6, 1.08], "buf_b 2");
    assert_close(&s2["param:b"], &[0.56, 0.022], "b 2");
}

#[test]
fn sgd_clipping_scales_the_step() {
    let g = optimize(Optimizer::new(Kind::Sgd), &graph()).graph;
    let h = Hyper { weight_decay: 0.0, ..hyper(0.65) };
    let s = step(&g, Kind::Sgd, &h, 1, &initial(Kind::Sgd), GW1, GB1);
    // c = 0.65/(1.3 + 1e-6); buf = c·g; p − 0.1·c·g.
    let c = 0.65 / (1.3 + 1e-6);
    assert_close(&s["momentum:b"], &[0.0, c * 1.2], "buf_b");
    assert_close(&s["param:w"], &[1.0 - 0.1 * c * 0.3, -2.0 + 0.1 * c * 0.4], "w");
    assert_close(&s["grad_norm"], &[1.3], "grad_norm");
}

#[test]
fn output_names_and_order() {
    let names = |g: &Graph| g.outputs.iter().map(|o| o.name.clone()).collect::<Vec<_>>();
    let g = optimize(Optimizer::new(Kind::AdamW), &graph()).graph;
    let want = ["loss", "grad_norm", "param:w", "param:b", "adam_m:w", "adam_m:b", "adam_v:w", "adam_v:b"];
    assert_eq!(names(&g), want);
    let g = optimize(Optimizer { keep_grads: true, ..Optimizer::new(Kind::Sgd) }, &graph()).graph;
    assert_eq!(names(&g), ["loss", "grad_norm", "param:w", "param:b", "momentum:w", "momentum:b", "grad:w", "grad:b"]);

    // Inputs: the original ones, the hyperparameters, then the state, each f32[] or the param's type.
    let inputs: Vec<(&str, TensorType)> = g.inputs().map(|(id, n)| (n, g.ty(id).clone())).collect();
    let mut want: Vec<(&str, TensorType)> =
        vec![("gw", TensorType::new(DType::F32, [1, 2])), ("gb", TensorType::new(DType::F32, [2]))];
    want.extend(hyper_inputs(Kind::Sgd).iter().map(|&n| (n, TensorType::scalar(DType::F32))));
    want.extend([
        ("momentum:w", TensorType::new(DType::F32, [1, 2])),
        ("momentum:b", TensorType::new(DType::F32, [2])),
    ]);
    assert_eq!(inputs, want);
    assert_eq!(hyper_inputs(Kind::Sgd), ["hp:lr", "hp:momentum", "hp:weight_decay", "hp:clip"]);
    assert_eq!(
        hyper_inputs(Kind::AdamW),
        ["hp:lr", "hp:beta1", "hp:beta2", "hp:eps", "hp:weight_decay", "hp:clip", "hp:step"]
    );

    // grad_norm is an f32 scalar; each new value has its parameter's type.
    assert_eq!(*g.ty(g.output("grad_norm").unwrap()), TensorType::scalar(DType::F32));
    assert_eq!(*g.ty(g.output("param:w").unwrap()), TensorType::new(DType::F32, [1, 2]));

    // Other outputs of the input graph are dropped, and said so.
    let mut extra = graph();
    let loss = extra.output("loss").unwrap();
    extra.add_output("logits", loss);
    let out = optimize(Optimizer::new(Kind::AdamW), &extra);
    assert!(out.graph.output("logits").is_none());
    let report = out.report.unwrap();
    assert!(report.contains("dropped outputs: logits"), "{report}");
    assert!(report.contains("adamw over 2 parameter tensor(s) (4 scalars); weight decay on 1"), "{report}");
}

#[test]
fn the_output_prints_and_parses_back() {
    for kind in [Kind::AdamW, Kind::Sgd] {
        let g = optimize(Optimizer::new(kind), &graph()).graph;
        let text = print(&g);
        let back = parse(&text, "opt.ir").unwrap_or_else(|e| panic!("{}\n{text}", e.render(&text)));
        assert_eq!(print(&back), text);
        assert!(text.contains(r#"input "hp:lr""#), "{text}");
        assert!(text.contains(r#"output "param:w" = "#), "{text}");
    }
}

#[test]
fn provenance_of_new_nodes() {
    let input = graph();
    let out = optimize(Optimizer::new(Kind::AdamW), &input);
    let g = &out.graph;
    assert_eq!(out.source.len(), g.len());
    // Copied nodes keep their ids, origins and map to themselves.
    for id in input.ids() {
        assert_eq!(out.source[id.index()], Some(id));
        assert_eq!(g.node(id), input.node(id));
    }
    let (w, b) = (input.params().next().unwrap().0, input.params().nth(1).unwrap().0);
    let mut per_param = [0, 0];
    for id in g.ids().skip(input.len()) {
        let origin = &g.node(id).origin;
        match out.source[id.index()] {
            Some(p) => {
                assert!(p == w || p == b, "{id} maps to {p}, not a parameter");
                let want = input.node(p).origin.rewritten_by("optimizer");
                assert_eq!(*origin, want, "{id}");
                per_param[usize::from(p == b)] += 1;
            }
            None => {
                assert_eq!(origin.span, None, "{id}");
                assert_eq!(origin.passes, ["optimizer"], "{id}");
            }
        }
    }
    assert!(per_param[0] > 5 && per_param[1] > 5, "{per_param:?}");
    // The new values and the state inputs belong to their parameter; the norm is shared.
    let src = |name: &str| out.source[g.output(name).unwrap().index()];
    assert_eq!(src("param:w"), Some(w));
    assert_eq!(src("adam_v:b"), Some(b));
    assert_eq!(src("grad_norm"), None);
    let input_src = |name: &str| out.source[g.inputs().find(|(_, n)| *n == name).unwrap().0.index()];
    assert_eq!(input_src("adam_m:w"), Some(w));
    assert_eq!(input_src("hp:lr"), None);
    // The new value of w is printed with w's span.
    let text = print(g);
    let line = text.lines().find(|l| l.contains(&format!("%{} ", g.output("param:w").unwrap().0))).unwrap();
    assert!(line.ends_with("# m.lpa:3:5 via optimizer"), "{line}");
}

/// A scalar parameter (rank 0: no reduction, no broadcast) and a bf16 one
/// (hyperparameters are cast to bf16; the norm is taken in f32).
#[test]
fn scalar_and_bf16_parameters() {
    let text = r#"
graph odd {
  %0 : f32[] = param "s" init=const(0.0)
  %1 : bf16[2] = param "h" init=const(0.0)
  %2 : f32[] = input "gs"
  %3 : bf16[2] = input "gh"
  output loss = %0
  output "grad:s" = %2
  output "grad:h" = %3
}
"#;
    let g = parse(text, "odd.ir").unwrap();
    let g = optimize(Optimizer::new(Kind::Sgd), &g).graph;
    assert!(g.nodes.iter().any(|n| matches!(n.op, Op::Cast)), "bf16 needs casts");
    let mut inputs = BTreeMap::new();
    inputs.insert("gs".to_string(), f64t(&[], &[3.0]));
    inputs.insert("gh".to_string(), Tensor { dtype: DType::BF16, ..f64t(&[2], &[4.0, 0.5]) });
    inputs.insert("momentum:s".to_string(), f64t(&[], &[0.0]));
    inputs.insert("momentum:h".to_string(), Tensor { dtype: DType::BF16, ..f64t(&[2], &[0.0, 0.0]) });
    let h = Hyper { lr: 0.5, weight_decay: 0.0, clip: 0.0, ..Hyper::default() };
    for (name, v) in h.feeds(Kind::Sgd, h.lr, 1) {
        inputs.insert(name.to_string(), f64t(&[], &[v]));
    }
    let mut params = BTreeMap::new();
    params.insert("s".to_string(), f64t(&[], &[1.0]));
    params.insert("h".to_string(), Tensor { dtype: DType::BF16, ..f64t(&[2], &[1.0, 2.0]) });
    let outs: Values = interp::run(&g, Precision::F64, &inputs, &params, RunContext::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|(n, t)| (n, t.to_f64_vec()))
        .collect();
    // norm sqrt(9 + 16 + 0.25) = sqrt(25.25); s − 0.5·3 = −0.5; h − 0.5·[4, 0.5] = [−1, 1.75] (exact in bf16).
    assert_close(&outs["grad_norm"], &[25.25f64.sqrt()], "grad_norm");
    assert_close(&outs["param:s"], &[-0.5], "s");
    assert_close(&outs["param:h"], &[-1.0, 1.75], "h");
}

#[test]
fn refusals_name_what_is_wrong() {
    let err = |text: &str| {
        let g = parse(text, "bad.ir").unwrap_or_else(|e| panic!("{}", e.render(text)));
        Optimizer::new(Kind::AdamW).run(&g).expect_err("the pass should refuse").to_string()
    };
    let e = err("graph g {\n  %0 : f32[2] = param \"w\" init=const(0.0)\n  output \"grad:w\" = %0\n}\n");
    assert!(e.contains("no `loss` output"), "{e}");
    let e = err(
        "graph g {\n  %0 : f32[2] = param \"w\" init=const(0.0)\n  %1 : f32[] = reduce_sum %0 axes=[0]\n  output loss = %1\n}\n",
    );
    assert!(e.contains("parameter `w` has no `grad:w` output"), "{e}");
    let e = err(
        "graph g {\n  %0 : f32[2] = param \"w\" init=const(0.0)\n  %1 : f32[] = reduce_sum %0 axes=[0]\n  output loss = %1\n  output \"grad:w\" = %1\n}\n",
    );
    assert!(e.contains("output `grad:w` is f32[] but parameter `w` is f32[2]"), "{e}");
    let e = err(
        "graph g {\n  %0 : f32[2] = param \"w\" init=const(0.0)\n  %1 : f32[] = reduce_sum %0 axes=[0]\n  output loss = %1\n  output \"grad:w\" = %0\n  output \"grad:v\" = %0\n}\n",
    );
    assert!(e.contains("output `grad:v` names no parameter"), "{e}");
    let e = err("graph g {\n  %0 : f32[] = input \"x\"\n  output loss = %0\n}\n");
    assert!(e.contains("no parameters"), "{e}");
    let e = err(
        "graph g {\n  %0 : f32[2] = param \"w\" init=const(0.0)\n  %1 : f32[2] = input \"hp:lr\"\n  %2 : f32[] = reduce_sum %0 axes=[0]\n  output loss = %2\n  output \"grad:w\" = %1\n}\n",
    );
    assert!(e.contains("already has an input `hp:lr` of type f32[2]"), "{e}");
}

#[test]
fn an_existing_hyperparameter_input_of_the_right_type_is_reused() {
    let text = "graph g {\n  %0 : f32[2] = param \"w\" init=const(0.0)\n  %1 : f32[] = input \"hp:lr\"\n  %2 : f32[2] = input \"gw\"\n  %3 : f32[] = reduce_sum %0 axes=[0]\n  output loss = %3\n  output \"grad:w\" = %2\n}\n";
    let g = optimize(Optimizer::new(Kind::Sgd), &parse(text, "g.ir").unwrap()).graph;
    assert_eq!(g.inputs().filter(|(_, n)| *n == "hp:lr").count(), 1);
}

#[test]
fn registered_with_options() {
    let specs = parse_pipeline("optimizer{kind=sgd,decay_mask=false,keep_grads=true}").unwrap();
    let pass = create(&specs[0]).unwrap();
    assert_eq!(pass.name(), "optimizer");
    assert!(!pass.preserves_meaning());
    let g = pass.run(&graph()).unwrap().graph;
    assert!(g.output("momentum:w").is_some() && g.output("grad:b").is_some());
    assert!(create(&PassSpec::new("optimizer")).is_ok());
    let e = create(&PassSpec::new("optimizer").with("kind", "lion")).err().unwrap();
    assert!(e.contains("kind `lion`"), "{e}");
    let e = create(&PassSpec::new("optimizer").with("lr", "0.1")).err().unwrap();
    assert!(e.contains("no option `lr`"), "{e}");
    assert!(lpac_passes::registry::all().iter().any(|p| p.name == "optimizer" && p.options.len() == 3));
}
