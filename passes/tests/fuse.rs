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

#[test]
fn a_gather_moves_the_rows_it_picks_not_its_table() {
    // 1000 rows of 64 floats, 10 picked: 2,560 bytes of rows read, 2,560
    // written, 40 of indices — not the table's 256,000.
    use lpac_ir::{DType, Graph, Op, Origin, TensorType};
    let mut g = Graph::new("lookup");
    let ty = |dtype, shape: &[usize]| Some(TensorType::new(dtype, shape.to_vec()));
    let table = g.add(Op::Input { name: "table".into() }, vec![], ty(DType::F32, &[1000, 64]), Origin::default());
    let idx = g.add(Op::Input { name: "idx".into() }, vec![], ty(DType::I32, &[10]), Origin::default());
    let rows = g.add(Op::Gather, vec![table.unwrap(), idx.unwrap()], None, Origin::default()).unwrap();
    g.add_output("rows", rows);
    let program = fuse(&g).unwrap();
    let gather = program.kernels.iter().find(|k| matches!(k, Kernel::Gather { .. })).expect("a gather kernel");
    assert_eq!(gather.bytes_moved(&program), 2560 + 2560 + 40);
}
