//! Every generated PTX function assembled by `ptxas` for sm_80 and sm_90.
//!
//! `ptxas` comes from the PyPI wheel `nvidia-cuda-nvcc-cu12` (`.ci/run`
//! installs it); it is looked for in `$LPAC_PTXAS`, on `PATH`, and in the
//! Python packages. Without it these tests say they were skipped — unless
//! `CI` is set, where a missing `ptxas` fails them.

use std::path::{Path, PathBuf};

use lpac_cuda::{Arch, emit_program};

/// The `ptxas` to use, or `None` (skip) outside CI.
fn require_ptxas(test: &str) -> Option<PathBuf> {
    match lpac_cuda::ptxas::find() {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("{test}: ptxas not found (CI is set): install nvidia-cuda-nvcc-cu12 or set LPAC_PTXAS")
        }
        None => {
            eprintln!("{test}: SKIPPED — ptxas not found (pip install nvidia-cuda-nvcc-cu12, or set LPAC_PTXAS)");
            None
        }
    }
}

/// Assembles one PTX text; ptxas's error output on failure.
fn assemble(ptxas: &Path, ptx: &str, arch: Arch, dir: &Path, name: &str) -> Result<(), String> {
    lpac_cuda::ptxas::assemble(ptxas, ptx, arch, dir, name).map(|_| ())
}

fn step_program(lowrank: Option<usize>, dropout: &str) -> (lpac_ir::Graph, lpac_ir::kernel::Program) {
    model_step("tiny.lpa", &["layers=2", "d=64", "heads=2", "ffn=128", "seq=32", "batch=4", dropout], lowrank)
}

fn model_step(file: &str, sets: &[&str], lowrank: Option<usize>) -> (lpac_ir::Graph, lpac_ir::kernel::Program) {
    let overrides: Vec<_> = sets.iter().map(|s| lpac_frontend::Override::parse(s).unwrap()).collect();
    let path = Path::new("../../models").join(file);
    let g = lpac_frontend::compile_file(&path, &overrides).unwrap().graph;
    let mut pipeline = String::new();
    if let Some(r) = lowrank {
        pipeline.push_str(&format!("lowrank{{rank={r}}},"));
    }
    pipeline.push_str("attention,autodiff,optimizer,simplify{explain=false},cse,dce");
    let g = lpac_passes::manager::run_text(g, &pipeline).unwrap();
    let program = lpac_passes::fuse::fuse(&g).unwrap();
    (g, program)
}

#[test]
fn every_emitted_kernel_of_a_training_step_assembles() {
    let Some(ptxas) = require_ptxas("every_emitted_kernel_of_a_training_step_assembles") else { return };
    let dir = std::env::temp_dir().join(format!("lpac-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (lowrank, dropout) in [(None, "dropout=0.0"), (Some(16), "dropout=0.0"), (None, "dropout=0.1")] {
        let (graph, program) = step_program(lowrank, dropout);
        for arch in Arch::ALL {
            let emitted = emit_program(&program, arch, Some(&graph)).unwrap_or_else(|e| panic!("{e}"));
            assert!(emitted.kernels.len() > 20, "{} functions", emitted.kernels.len());
            for k in &emitted.kernels {
                if let Err(e) = assemble(&ptxas, &k.ptx, arch, &dir, &k.entry) {
                    panic!("{} for {}: ptxas failed:\n{e}\n{}", k.entry, arch.name(), k.ptx);
                }
            }
            println!(
                "{} functions assembled for {} (lowrank {lowrank:?}, {dropout})",
                emitted.kernels.len(),
                arch.name()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_shipped_models_steps_assemble() {
    // gpt (ReLU, post-norm, dropout) and llama (RoPE's sin/cos, RMSNorm,
    // SwiGLU) at small sizes.
    let Some(ptxas) = require_ptxas("the_shipped_models_steps_assemble") else { return };
    let dir = std::env::temp_dir().join(format!("lpac-ptxas-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let small = ["layers=2", "d=64", "heads=2", "ffn=128", "seq=32", "batch=2", "vocab=300"];
    for file in ["gpt.lpa", "llama.lpa"] {
        let (graph, program) = model_step(file, &small, None);
        let emitted = emit_program(&program, Arch::Sm90, Some(&graph)).unwrap_or_else(|e| panic!("{file}: {e}"));
        for k in &emitted.kernels {
            if let Err(e) = assemble(&ptxas, &k.ptx, Arch::Sm90, &dir, &k.entry) {
                panic!("{file}: {}: ptxas failed:\n{e}\n{}", k.entry, k.ptx);
            }
        }
        println!("{file}: {} functions assembled", emitted.kernels.len());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn attention_at_the_shipped_models_head_widths_does_not_spill() {
    // llama's heads are 64 wide (two threads a row), gpt's 128 (four): under
    // `.maxnreg` every attention function keeps its rows in registers. A
    // spill is local memory traffic in the innermost loop.
    let Some(ptxas) = require_ptxas("attention_at_the_shipped_models_head_widths_does_not_spill") else { return };
    let dir = std::env::temp_dir().join(format!("lpac-ptxas-attention-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (file, width) in [("llama.lpa", 64), ("gpt.lpa", 128)] {
        let (graph, program) = model_step(file, &["layers=1", "seq=64", "batch=2", "vocab=300"], None);
        for arch in Arch::ALL {
            let emitted = emit_program(&program, arch, Some(&graph)).unwrap_or_else(|e| panic!("{file}: {e}"));
            let attention: Vec<_> = emitted.kernels.iter().filter(|k| k.entry.contains("attention")).collect();
            assert_eq!(attention.len(), 4, "{file}: forward, dq, dk, dv");
            for k in attention {
                assert!(k.ptx.contains(&format!("d {width} dv {width}")), "{file}: {}", k.entry);
                let report = lpac_cuda::ptxas::assemble(&ptxas, &k.ptx, arch, &dir, &k.entry)
                    .unwrap_or_else(|e| panic!("{file}: {}: {e}", k.entry));
                println!("{file} {} {}: {report:?}", arch.name(), k.entry);
                assert_eq!((report.spill_stores, report.spill_loads), (0, 0), "{file} {}: {report:?}", k.entry);
                assert!(report.registers > 0, "{file} {}: no report read", k.entry);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_large_models_parameter_update_is_split_within_the_parameter_limit() {
    // llama's 12 layers have 111 parameter tensors; their AdamW update as one
    // function would take over 6 KB of addresses, and PTX 8.0 allows 4,352
    // bytes (the driver refused it on the first GPU run).
    let sets = ["layers=12", "d=64", "heads=2", "ffn=128", "seq=32", "batch=2", "vocab=300"];
    let (graph, program) = model_step("llama.lpa", &sets, None);
    let emitted = emit_program(&program, Arch::Sm90, Some(&graph)).unwrap();
    let parts: Vec<_> = emitted.kernels.iter().filter(|k| k.entry.contains("_fused")).collect();
    assert!(parts.iter().any(|k| k.entry.contains("_fused1_")), "the update is split");
    for k in &emitted.kernels {
        let bytes = 8 * k.param_count();
        assert!(bytes <= lpac_cuda::PARAM_BYTES, "{}: {bytes} bytes of parameters", k.entry);
    }
    let Some(ptxas) = require_ptxas("a_large_models_parameter_update_is_split_within_the_parameter_limit") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("lpac-ptxas-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for k in parts {
        if let Err(e) = assemble(&ptxas, &k.ptx, Arch::Sm90, &dir, &k.entry) {
            panic!("{}: ptxas failed:\n{e}", k.entry);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_kernel_kind_is_emitted_and_products_are_left_to_cublas() {
    // Dropout's random numbers take the run's stream key as a parameter.
    let (graph, program) = step_program(None, "dropout=0.1");
    let emitted = emit_program(&program, Arch::Sm90, Some(&graph)).unwrap();
    assert!(emitted.kernels.iter().any(|k| !k.stream_keys.is_empty()), "dropout kernels take stream keys");
    let manifest = emitted.manifest(Arch::Sm90).to_string();
    assert!(manifest.contains("stream_key("), "{manifest}");
    // Products are left to cuBLAS, listed with the reason.
    let (graph, program) = step_program(None, "dropout=0.0");
    let emitted = emit_program(&program, Arch::Sm90, Some(&graph)).unwrap();
    let why: Vec<&str> = emitted.skipped.iter().map(|(_, w)| w.as_str()).collect();
    assert!(why.iter().any(|w| w.contains("cuBLAS")), "{why:?}");
    // Attention is emitted: forward, and dq, dv, dk.
    assert!(why.iter().all(|w| !w.contains("attention")), "{why:?}");
    for suffix in ["_attention", "_attention_dq", "_attention_dv", "_attention_dk"] {
        assert!(emitted.kernels.iter().any(|k| k.entry.ends_with(suffix)), "{suffix}");
    }
    assert!(emitted.kernels.iter().any(|k| k.entry.ends_with("_gather") && k.error_flag));
    // Softmax, norms and cross-entropy are one function each.
    assert!(emitted.kernels.iter().any(|k| k.entry.contains("_rows_") && k.ptx.contains("bar.warp.sync")));
    // The AdamW update of every parameter: one function for the members
    // taken four elements a thread, one for the rest.
    let fused: Vec<&str> =
        emitted.kernels.iter().filter(|k| k.entry.contains("_fused_")).map(|k| k.ptx.as_str()).collect();
    assert!(fused.iter().any(|ptx| ptx.matches("$L_member").count() > 2 * 20), "{} fused functions", fused.len());
    assert!(emitted.kernels.iter().any(|k| k.entry.ends_with("_scatter_add") && k.error_flag));
    let manifest = emitted.manifest(Arch::Sm90);
    assert_eq!(manifest["arch"], "sm_90");
    assert_eq!(manifest["kernels"].as_array().unwrap().len(), emitted.kernels.len());
}

#[test]
fn unsupported_architectures_are_named() {
    assert_eq!(Arch::parse("sm_90").unwrap(), Arch::Sm90);
    let e = Arch::parse("sm_70").unwrap_err();
    assert!(e.contains("sm_70") && e.contains("sm_80") && e.contains("sm_90"), "{e}");
}

#[test]
fn a_mixed_precision_step_assembles() {
    // bf16 loads, stores and roundings (cvt.rn.bf16.f32 needs sm_80).
    let Some(ptxas) = require_ptxas("a_mixed_precision_step_assembles") else { return };
    let overrides: Vec<_> = ["layers=2", "d=64", "heads=2", "ffn=128", "seq=32", "batch=4"]
        .iter()
        .map(|s| lpac_frontend::Override::parse(s).unwrap())
        .collect();
    let g = lpac_frontend::compile_file(&Path::new("../../models").join("tiny.lpa"), &overrides).unwrap().graph;
    let pipeline = "attention,precision,autodiff,optimizer,simplify{explain=false},cse,dce";
    let g = lpac_passes::manager::run_text(g, pipeline).unwrap();
    let program = lpac_passes::fuse::fuse(&g).unwrap();
    let dir = std::env::temp_dir().join(format!("lpac-ptxas-bf16-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for arch in Arch::ALL {
        let emitted = emit_program(&program, arch, Some(&g)).unwrap();
        assert!(emitted.kernels.iter().any(|k| k.ptx.contains("cvt.rn.bf16.f32")), "bf16 code is emitted");
        for k in &emitted.kernels {
            if let Err(e) = assemble(&ptxas, &k.ptx, arch, &dir, &k.entry) {
                panic!("{} for {}: ptxas failed:\n{e}\n{}", k.entry, arch.name(), k.ptx);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
