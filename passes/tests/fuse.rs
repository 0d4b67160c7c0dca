//! Fusion lowers every shipped model, forward and training step, dense and
//! factored, to a kernel program.

use std::path::Path;

use lpac_frontend::{Override, compile_file};
use lpac_ir::kernel::Kernel;
use lpac_passes::fuse::{fuse, summary};
use lpac_passes::registry;

fn graph(path: &str, sets: &[&str], pipeline: &str) -> lpac_ir::Graph {
    let overrides: Vec<Override> = sets.iter().map(|s| Override::parse(s).unwrap()).collect();
    let g = compile_file(Path::new(path), &overrides).unwrap_or_else(|e| panic!("{e}")).graph;
    lpac_passes::manager::run_text(g, pipeline).unwrap()
}

#[test]
fn every_model_lowers() {
    for path in ["../models/tiny.lpa", "../models/gpt.lpa", "../models/llama.lpa"] {
        for pipeline in [
            "default",
            "train",
            "lowrank{rank=8},simplify,cse,dce",
            "lowrank{rank=8},autodiff,optimizer,simplify,cse,dce",
        ] {
            let text = registry::pipeline(pipeline).unwrap_or(pipeline);
            let g = graph(path, &["layers=2", "d=32", "heads=2", "ffn=64", "seq=8", "batch=2", "vocab=64"], text);
            let p = fuse(&g).unwrap_or_else(|e| panic!("{path} {pipeline}: {e}"));
            assert!(!p.kernels.is_empty());
            let gemms = p.kernels.iter().filter(|k| matches!(k, Kernel::Gemm(_))).count();
            let matmuls = g.nodes.iter().filter(|n| matches!(n.op, lpac_ir::Op::MatMul)).count();
            assert_eq!(gemms, matmuls, "{path} {pipeline}: one gemm per matmul");
            let text = lpac_ir::kernel::print::print(&p);
            assert!(text.starts_with("program "), "{text}");
            eprintln!("{path} {pipeline}: {}", summary(&p));
        }
    }
}

#[test]
fn transposes_are_strides_not_copies() {
    let g = graph("../models/tiny.lpa", &["layers=1"], "simplify,cse,dce");
    let p = fuse(&g).unwrap();
    // q·kᵀ: the kᵀ operand is read with a column stride that is not 1.
    let transposed = p.kernels.iter().any(|k| match k {
        Kernel::Gemm(g) => g.b.row_stride == 1 && g.b.col_stride > 1,
        _ => false,
    });
    assert!(transposed, "{}", lpac_ir::kernel::print::print(&p));
}

#[test]
#[ignore = "prints a program for reading"]
fn print_tiny() {
    let g = graph("../models/tiny.lpa", &["layers=1"], "simplify,cse,dce");
    println!("{}", lpac_ir::kernel::print::print(&fuse(&g).unwrap()));
}
