//! The pass manager's instrumentation: dumps, printing, verification, timing,
//! and `--check-each` catching a pass that breaks meaning.

use std::path::Path;

use lpac_frontend::{Override, compile_file};
use lpac_ir::{Graph, Op};
use lpac_passes::manager::{Instrumentation, PipelineError, run_pipeline};
use lpac_passes::pass::{Pass, PassError, PassOutcome};
use lpac_passes::registry::{self, PassSpec};

fn tiny(sets: &[&str]) -> Graph {
    let overrides: Vec<Override> = sets.iter().map(|s| Override::parse(s).unwrap()).collect();
    compile_file(Path::new("../models/tiny.lpa"), &overrides).unwrap_or_else(|e| panic!("{e}")).graph
}

const SMALL: &[&str] = &["layers=1", "d=32", "heads=2", "ffn=64", "seq=8", "batch=2"];

fn passes(list: &str) -> Vec<Box<dyn Pass>> {
    registry::create_pipeline(list).unwrap()
}

/// A rewrite that claims to preserve meaning but doubles the first constant
/// it meets: exactly the kind of bug `--check-each` exists for.
struct BrokenConstant;

impl Pass for BrokenConstant {
    fn name(&self) -> &'static str {
        "broken-constant"
    }
    fn summary(&self) -> &'static str {
        "a deliberately wrong rewrite, for testing"
    }
    fn preserves_meaning(&self) -> bool {
        true
    }
    fn run(&self, graph: &Graph) -> Result<PassOutcome, PassError> {
        let mut out = PassOutcome::unchanged(graph);
        let first_const = out.graph.nodes.iter_mut().find(|n| matches!(n.op, Op::Const { value } if value != 0.0));
        if let Some(node) = first_const
            && let Op::Const { value } = &mut node.op
        {
            *value *= 2.0;
        }
        Ok(out)
    }
}

/// A pass that produces an ill-typed graph.
struct BreaksTypes;

impl Pass for BreaksTypes {
    fn name(&self) -> &'static str {
        "breaks-types"
    }
    fn summary(&self) -> &'static str {
        "a deliberately invalid rewrite, for testing"
    }
    fn preserves_meaning(&self) -> bool {
        true
    }
    fn run(&self, graph: &Graph) -> Result<PassOutcome, PassError> {
        let mut out = PassOutcome::unchanged(graph);
        let last = out.graph.nodes.len() - 1;
        out.graph.nodes[last].ty.shape.push(7);
        Ok(out)
    }
}

#[test]
fn check_each_names_the_pass_that_broke_the_numbers() {
    let g = tiny(SMALL);
    let mut list = passes("cse,dce");
    list.insert(1, Box::new(BrokenConstant));
    let instr = Instrumentation { check_each: true, ..Default::default() };
    let err = run_pipeline(g, &list, &instr, &mut std::io::sink()).err().expect("the broken pass is caught");
    match &err {
        PipelineError::Changed { pass, difference } => {
            assert_eq!(pass, "broken-constant");
            assert!(difference.contains("output `loss`") && difference.contains("relative error"), "{difference}");
        }
        other => panic!("expected a numeric difference, got {other}"),
    }
    assert!(err.to_string().contains("pass `broken-constant` changed what the graph computes"), "{err}");
}

#[test]
fn check_each_accepts_honest_passes_and_follows_lowrank() {
    let g = tiny(SMALL);
    let list = passes("lowrank{rank=4},cse,dce,verify");
    let instr = Instrumentation { check_each: true, verify_each: true, ..Default::default() };
    let run = run_pipeline(g, &list, &instr, &mut std::io::sink()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run.records.len(), 4);
    assert!(run.records[0].changed, "lowrank changed the graph");
}

#[test]
fn check_each_refuses_graphs_too_big_to_interpret() {
    let g = tiny(&["batch=4096"]);
    let instr = Instrumentation { check_each: true, ..Default::default() };
    let err = run_pipeline(g, &passes("cse"), &instr, &mut std::io::sink()).err().unwrap().to_string();
    assert!(err.contains("GiB") && err.contains("--set"), "{err}");
}

#[test]
fn verify_each_names_the_pass() {
    let g = tiny(SMALL);
    let list: Vec<Box<dyn Pass>> = vec![Box::new(BreaksTypes)];
    let instr = Instrumentation { verify_each: true, ..Default::default() };
    let err = run_pipeline(g, &list, &instr, &mut std::io::sink()).err().unwrap().to_string();
    assert!(err.contains("invalid after pass `breaks-types`"), "{err}");
}

#[test]
fn dump_dir_has_numbered_files_for_changes_and_an_index() {
    let dir = std::env::temp_dir().join(format!("lpac-dump-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let g = tiny(SMALL);
    let instr = Instrumentation { dump_dir: Some(dir.clone()), ..Default::default() };
    run_pipeline(g, &passes("lowrank{rank=4},verify,cse"), &instr, &mut std::io::sink()).unwrap();
    let mut files: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, ["00-input.ir", "01-after-lowrank.ir", "03-after-cse.ir", "index.txt"]);
    let index = std::fs::read_to_string(dir.join("index.txt")).unwrap();
    assert!(index.contains("01 lowrank     yes") && index.contains("02 verify      no"), "{index}");
    let dumped = std::fs::read_to_string(dir.join("01-after-lowrank.ir")).unwrap();
    assert!(lpac_ir::parse(&dumped, "dump").is_ok(), "dumps are parseable IR");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unwritable_dump_dir_is_an_error() {
    let g = tiny(SMALL);
    let instr = Instrumentation { dump_dir: Some("/proc/lpac-cannot-write".into()), ..Default::default() };
    let err = run_pipeline(g, &passes("cse"), &instr, &mut std::io::sink()).err().unwrap().to_string();
    assert!(err.contains("--dump-dir: cannot write"), "{err}");
}

#[test]
fn printing_after_passes() {
    let g = tiny(SMALL);
    let mut log = Vec::new();
    let instr = Instrumentation { print_changed: true, time_passes: true, ..Default::default() };
    run_pipeline(g.clone(), &passes("lowrank{rank=4},verify"), &instr, &mut log).unwrap();
    let text = String::from_utf8(log).unwrap();
    assert!(text.contains("// ----- IR after lowrank (changed) -----"), "{text}");
    assert!(!text.contains("IR after verify"), "--print-changed skips passes that changed nothing");
    assert!(text.contains("total"), "--time-passes prints a table");
    let mut log = Vec::new();
    let instr = Instrumentation { print_after: vec!["verify".into()], ..Default::default() };
    run_pipeline(g, &passes("lowrank{rank=4},verify"), &instr, &mut log).unwrap();
    let text = String::from_utf8(log).unwrap();
    assert!(text.contains("IR after verify (unchanged)") && !text.contains("IR after lowrank"), "{text}");
}

#[test]
fn every_pass_output_traces_back_to_its_input() {
    let g = tiny(SMALL);
    let run =
        run_pipeline(g, &passes("lowrank{rank=4},cse,dce"), &Instrumentation::default(), &mut std::io::sink()).unwrap();
    for r in &run.records {
        assert_eq!(r.outcome.source.len(), r.outcome.graph.len(), "{}: one source entry per node", r.name);
    }
    let _ = PassSpec::new("x");
}
