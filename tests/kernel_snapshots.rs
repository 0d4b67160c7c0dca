//! Snapshots of the kernels of the default model's training step, dense and
//! with LPA (r = 64): the kernel IR of the whole program and the Cranelift IR
//! of every loop kernel, so any change in fusion or code generation shows up
//! as a reviewable diff. Numbers are checked in tests/cpu_backend.rs.

use std::path::Path;

fn step_graph(lowrank: Option<usize>) -> lpac_ir::Graph {
    let g = lpac_frontend::compile_file(Path::new("models/tiny.lpa"), &[]).unwrap().graph;
    let mut pipeline = String::new();
    if let Some(r) = lowrank {
        pipeline.push_str(&format!("lowrank{{rank={r}}},"));
    }
    pipeline.push_str("attention,autodiff,optimizer,simplify{explain=false},cse,dce");
    lpac_passes::manager::run_text(g, &pipeline).unwrap()
}

fn snapshot(label: &str, lowrank: Option<usize>) {
    let program = lpac_passes::fuse::fuse(&step_graph(lowrank)).unwrap();
    insta::assert_snapshot!(format!("{label}-kernel-ir"), lpac_ir::kernel::print::print(&program));
    let mut codegen = lpac_cpu::codegen::CpuCodegen::new().unwrap();
    let compiled = codegen.compile_all(&program).unwrap();
    let mut clif = String::new();
    for (i, bodies) in compiled.iter().enumerate() {
        for (s, c) in bodies.iter().enumerate() {
            let stage = if bodies.len() > 1 { format!(".{s}") } else { String::new() };
            clif.push_str(&format!("; k{i}{stage} {} ({:?})\n{}\n", c.name, c.vectorization, c.clif));
        }
    }
    insta::assert_snapshot!(format!("{label}-clif"), clif);
}

#[test]
fn tiny_training_step_dense() {
    snapshot("tiny-step-dense", None);
}

#[test]
fn tiny_training_step_lowrank_64() {
    snapshot("tiny-step-lowrank64", Some(64));
}

/// The PTX of every loop body of the step (sm_90), in program order, and
/// the kernels left to the runtime. Assembled by ptxas in
/// backends/cuda/tests/ptxas.rs.
fn ptx_snapshot(label: &str, lowrank: Option<usize>) {
    let graph = step_graph(lowrank);
    let program = lpac_passes::fuse::fuse(&graph).unwrap();
    let emitted = lpac_cuda::emit_program(&program, lpac_cuda::Arch::Sm90, Some(&graph)).unwrap();
    let mut text = String::new();
    for k in &emitted.kernels {
        // Every function says where it came from: graph nodes with the
        // source line of the model file, and its launch.
        let header: Vec<&str> = k.ptx.lines().take_while(|l| l.starts_with("//")).collect();
        let nodes = header
            .iter()
            .find(|l| l.contains("graph nodes: %"))
            .unwrap_or_else(|| panic!("{}: no graph nodes", k.entry));
        assert!(nodes.contains("(models/tiny.lpa:"), "{}: no source lines in `{nodes}`", k.entry);
        assert!(header.iter().any(|l| l.contains("launch: grid")), "{}: no launch in its header", k.entry);
        // ptxas and the driver refuse any byte that is not ASCII.
        assert!(k.ptx.is_ascii(), "{}: not ASCII", k.entry);
        text.push_str(&k.ptx);
        text.push('\n');
    }
    for (i, why) in &emitted.skipped {
        text.push_str(&format!("// k{i} {}: not emitted — {why}\n", program.kernels[*i].name()));
    }
    insta::assert_snapshot!(format!("{label}-ptx"), text);
}

#[test]
fn tiny_training_step_dense_ptx() {
    ptx_snapshot("tiny-step-dense", None);
}

#[test]
fn tiny_training_step_lowrank_64_ptx() {
    ptx_snapshot("tiny-step-lowrank64", Some(64));
}
