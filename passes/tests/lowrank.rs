//! LPA as a pass, on real models: found from structure, factored with the
//! reference parametrisation, refused with clear messages.

use std::path::Path;

use lpac_frontend::{Override, compile, compile_file};
use lpac_ir::{Graph, Op, verify};
use lpac_passes::lowrank::{Lowrank, Target};
use lpac_passes::pass::Pass;
use lpac_passes::structure::{Role, find_attention};

fn model(path: &str, sets: &[&str]) -> Graph {
    let overrides: Vec<Override> = sets.iter().map(|s| Override::parse(s).unwrap()).collect();
    compile_file(Path::new(path), &overrides).unwrap_or_else(|e| panic!("{e}")).graph
}

fn shape_of(g: &Graph, path: &str) -> Option<Vec<usize>> {
    g.params().find(|(_, p)| *p == path).map(|(id, _)| g.ty(id).shape.clone())
}

fn lowrank(g: &Graph, rank: usize, target: Target) -> Graph {
    let out = Lowrank { rank, target }.run(g).unwrap_or_else(|e| panic!("{e}"));
    verify(&out.graph).unwrap_or_else(|e| panic!("lowrank output does not verify: {e:?}"));
    out.graph
}

#[test]
fn finds_all_four_projections_in_every_shipped_model() {
    for path in ["../models/tiny.lpa", "../models/gpt.lpa", "../models/llama.lpa"] {
        let g = model(path, &["layers=2"]);
        let sites = find_attention(&g);
        assert_eq!(sites.len(), 2, "{path}: one attention site per layer");
        for site in &sites {
            let roles: Vec<Role> = site.projections.iter().map(|(r, _)| *r).collect();
            assert_eq!(roles, vec![Role::Query, Role::Key, Role::Value, Role::Output], "{path}");
        }
    }
}

/// Names that say nothing, a fused QKV-free layout, rope-free: only structure.
const ANONYMOUS: &str = "
config {
  n = 16
  h = 2
}

block blob(u, a, b) {
  param zz: [a, b] = normal(0.0, 0.1)
  return u @ zz
}

model anon(tokens: i32[2, 8], targets: i32[2, 8]) {
  e = embedding[t0](tokens, 32, n)
  p = split_heads(blob[p1](e, n, n), h)
  r = split_heads(blob[p2](e, n, n), h)
  s = split_heads(blob[p3](e, n, n), h)
  w = causal_attention(p, r, s)
  o = blob[p4](merge_heads(w), n, n)
  return cross_entropy(blob[p5](e + o, n, 32), targets)
}
";

#[test]
fn works_on_a_model_whose_names_say_nothing() {
    let g = compile("anon.lpa", ANONYMOUS, &[]).unwrap_or_else(|e| panic!("{e}")).graph;
    let out = lowrank(&g, 4, Target::Attention);
    for p in ["p1", "p2", "p3", "p4"] {
        assert_eq!(shape_of(&out, &format!("{p}.zz.a.weight")), Some(vec![16, 4]), "{p}");
        assert_eq!(shape_of(&out, &format!("{p}.zz.b.weight")), Some(vec![4, 16]), "{p}");
        assert_eq!(shape_of(&out, &format!("{p}.zz")), None, "{p}: the dense weight is gone");
    }
    assert_eq!(shape_of(&out, "p5.zz"), Some(vec![16, 32]), "the head is not attention");
}

#[test]
fn gpt_biases_follow_the_reference_implementation() {
    let g = model("../models/gpt.lpa", &["layers=1", "d=64", "heads=2", "ffn=128", "seq=16", "batch=2", "vocab=100"]);
    let out = lowrank(&g, 8, Target::Attention);
    for qkv in ["q", "k", "v"] {
        let prefix = format!("layers.0.attn.{qkv}");
        assert_eq!(shape_of(&out, &format!("{prefix}.a.weight")), Some(vec![64, 8]));
        assert_eq!(shape_of(&out, &format!("{prefix}.a.bias")), Some(vec![8]), "Q/K/V: bias on the first factor");
        assert_eq!(shape_of(&out, &format!("{prefix}.bias")), None, "the dense bias is gone");
    }
    assert_eq!(shape_of(&out, "layers.0.attn.o.a.bias"), None, "O: no first-factor bias");
    assert_eq!(shape_of(&out, "layers.0.attn.o.bias"), Some(vec![64]), "O: the bias stays after the second factor");
    assert_eq!(shape_of(&out, "layers.0.mlp.fc1.weight"), Some(vec![64, 128]), "FFN stays dense");
}

#[test]
fn initialisation_is_pytorch_linear_on_both_factors() {
    let g = model("../models/tiny.lpa", &["layers=1"]);
    let out = lowrank(&g, 64, Target::Attention);
    let init = |path: &str| {
        out.params().find(|(_, p)| *p == path).map(|(id, _)| match &out.node(id).op {
            Op::Param { init, .. } => init.clone(),
            _ => unreachable!(),
        })
    };
    assert_eq!(init("layers.0.attn.q.a.weight"), Some(lpac_ir::Init::Uniform { lo: -1.0 / 16.0, hi: 1.0 / 16.0 }));
    assert_eq!(init("layers.0.attn.q.b.weight"), Some(lpac_ir::Init::Uniform { lo: -1.0 / 8.0, hi: 1.0 / 8.0 }));
}

#[test]
fn factored_model_runs_and_is_still_attention() {
    let g = model("../models/llama.lpa", &["layers=1", "d=32", "heads=2", "ffn=64", "seq=8", "batch=2", "vocab=64"]);
    let out = lowrank(&g, 4, Target::Attention);
    let sites = find_attention(&out);
    assert_eq!(sites.len(), 1);
    assert!(sites[0].projections.iter().all(|(_, p)| p.matmuls.len() == 2), "each projection is now x·A·B");
    let params = lpac_ir::interp::init_params(&out, 1);
    let inputs = out
        .inputs()
        .map(|(id, name)| {
            let n = out.ty(id).numel();
            (
                name.to_string(),
                lpac_ir::interp::Tensor::from_i32(out.ty(id).shape.clone(), (0..n as i32).map(|i| i % 64).collect()),
            )
        })
        .collect();
    let loss =
        lpac_ir::interp::run(&out, lpac_ir::interp::Precision::F64, &inputs, &params, Default::default()).unwrap();
    let l = loss[0].1.to_f64_vec()[0];
    assert!(l.is_finite() && (l - 64f64.ln()).abs() < 1.5, "loss {l}");
}

#[test]
fn ffn_all_and_glob_targets() {
    let g = model("../models/tiny.lpa", &["layers=1"]);
    let ffn = lowrank(&g, 32, Target::Ffn);
    assert!(shape_of(&ffn, "layers.0.mlp.up.a.weight").is_some() && shape_of(&ffn, "layers.0.attn.q.weight").is_some());
    let all = lowrank(&g, 32, Target::All);
    assert!(
        shape_of(&all, "layers.0.mlp.up.a.weight").is_some() && shape_of(&all, "layers.0.attn.q.a.weight").is_some()
    );
    assert!(shape_of(&all, "head.a.weight").is_none(), "`all` leaves the LM head dense");
    let one = lowrank(&g, 32, Target::Glob("layers.*.attn.q.weight".into()));
    assert!(shape_of(&one, "layers.0.attn.q.a.weight").is_some() && shape_of(&one, "layers.0.attn.k.weight").is_some());
}

#[test]
fn refusals_say_why() {
    let g = model("../models/tiny.lpa", &["layers=1"]);
    let err = Lowrank { rank: 256, target: Target::Attention }.run(&g).unwrap_err().to_string();
    assert!(err.contains("r must be below min(d_in, d_out) = 256"), "{err}");
    let err = Lowrank { rank: 8, target: Target::Glob("nope.*".into()) }.run(&g).unwrap_err().to_string();
    assert!(err.contains("matches nothing"), "{err}");
    let no_attention = "model m(tokens: i32[2, 4], targets: i32[2, 4]) {\n  e = embedding[e](tokens, 8, 8)\n  return cross_entropy(linear[h](e, 8, 8), targets)\n}\n";
    let g = compile("m.lpa", no_attention, &[]).unwrap().graph;
    let err = Lowrank { rank: 2, target: Target::Attention }.run(&g).unwrap_err().to_string();
    assert!(err.contains("no attention pattern"), "{err}");
}
