//! Snapshots of the IR after each pass of the default pipeline on the default
//! model, dense and with LPA (r = 64): what each pass did is reviewable as a
//! diff whenever it changes. The numbers are checked elsewhere (the
//! `--check-each` tests below and in `passes/tests`); these pin the text.

use std::path::Path;

use lpac_frontend::{Override, compile_file};
use lpac_ir::Graph;
use lpac_passes::manager::{Instrumentation, run_pipeline};
use lpac_passes::registry;

fn compile(path: &str, sets: &[&str]) -> Graph {
    let overrides: Vec<Override> = sets.iter().map(|s| Override::parse(s).unwrap()).collect();
    compile_file(Path::new(path), &overrides).unwrap_or_else(|e| panic!("{e}")).graph
}

/// (pass name, IR text after it) for each pass of `pipeline`.
fn after_each(graph: Graph, pipeline: &str, instr: &Instrumentation) -> Vec<(String, String)> {
    let passes = registry::create_pipeline(pipeline).unwrap();
    let run = run_pipeline(graph, &passes, instr, &mut std::io::sink()).unwrap_or_else(|e| panic!("{e}"));
    run.records.iter().map(|r| (r.name.to_string(), lpac_ir::print(&r.outcome.graph))).collect()
}

fn snapshot_pipeline(label: &str, pipeline: &str) {
    let graph = compile("models/tiny.lpa", &[]);
    insta::assert_snapshot!(format!("{label}-00-input"), lpac_ir::print(&graph));
    for (i, (pass, text)) in after_each(graph, pipeline, &Instrumentation::default()).into_iter().enumerate() {
        insta::assert_snapshot!(format!("{label}-{:02}-after-{pass}", i + 1), text);
    }
}

#[test]
fn tiny_dense_after_each_pass() {
    snapshot_pipeline("tiny-dense", lpac_passes::registry::pipeline("default").unwrap());
}

#[test]
fn tiny_lowrank_64_after_each_pass() {
    let default = lpac_passes::registry::pipeline("default").unwrap();
    snapshot_pipeline("tiny-lowrank64", &format!("lowrank{{rank=64}},{default}"));
}

/// `--check-each` over the default pipeline, LPA included, for every shipped
/// model at sizes the interpreter runs quickly.
#[test]
fn check_each_holds_over_the_default_pipeline_for_every_model() {
    let small = ["layers=2", "d=32", "heads=2", "ffn=64", "seq=8", "batch=2", "vocab=64", "dropout=0.1"];
    let instr = Instrumentation { check_each: true, verify_each: true, ..Default::default() };
    for path in ["models/tiny.lpa", "models/gpt.lpa", "models/llama.lpa"] {
        for pipeline in
            ["simplify,cse,dce", "lowrank{rank=8},simplify,cse,dce", "lowrank{rank=8,target=all},simplify,cse,dce"]
        {
            let graph = compile(path, &small);
            let steps = after_each(graph, pipeline, &instr);
            assert!(!steps.is_empty(), "{path} {pipeline}");
        }
    }
}
