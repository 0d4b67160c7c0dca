//! `lpac kernels FILE --target cpu [--out DIR]`: the kernels of a training
//! step (or forward pass), as kernel IR and as the code generated from it.

use std::fmt::Write as _;
use std::path::Path;

use lpac_ir::kernel::{Kernel, Program};
use lpac_passes::optimizer::Kind;

use crate::cli::{KernelTarget, KernelsArgs};
use crate::error::{CliError, CliResult};
use crate::load::overrides;
use crate::train::device::Precision;
use crate::train::model_spec::ModelSpec;

pub fn run(args: &KernelsArgs) -> CliResult {
    let lowrank = args.lowrank.lowrank.map(|r| (r, args.lowrank.lowrank_target.clone()));
    let spec = ModelSpec::read(&args.model.file, overrides(&args.model.set)?, lowrank)?;
    if args.precision == Precision::Bf16 && (args.forward || args.target == KernelTarget::Cpu) {
        return Err(CliError::Message(
            "--precision bf16 is for the training step's PTX (--target ptx): the CPU backend computes in f32".into(),
        ));
    }
    let graph = if args.forward {
        crate::train::graphs::optimised(spec.forward(&[])?)?
    } else {
        crate::train::graphs::step_of(spec.forward(&[])?, Kind::AdamW, true, args.precision)?
    };
    match args.target {
        KernelTarget::Cpu => {
            let started = std::time::Instant::now();
            let compiled =
                crate::train::cpu::compile(&graph).map_err(|e| CliError::Message(format!("--target cpu: {e}")))?;
            let seconds = started.elapsed().as_secs_f64();
            let plan = lpac_cpu::plan_memory(&compiled.program);
            let summary = summary(&compiled.program, &compiled.kernels, plan.arena_bytes, plan.sum_bytes, seconds);
            match &args.out {
                Some(dir) => write_dir(dir, &compiled.program, &compiled.kernels, &summary)?,
                None => print!("{summary}"),
            }
        }
        KernelTarget::Ptx => {
            let arch = lpac_cuda::Arch::parse(&args.arch).map_err(CliError::Message)?;
            let program =
                lpac_passes::fuse::fuse(&graph).map_err(|e| CliError::Message(format!("--target ptx: {e}")))?;
            let emitted = lpac_cuda::emit_program(&program, arch, Some(&graph))
                .map_err(|e| CliError::Message(format!("--target ptx: {e}")))?;
            let reports = if args.ptxas_report { Some(ptxas_reports(&emitted, arch)?) } else { None };
            let summary = ptx_summary(&program, &emitted, arch, reports.as_deref());
            match &args.out {
                Some(dir) => write_ptx_dir(dir, &program, &emitted, arch, &summary)?,
                None => print!("{summary}"),
            }
        }
    }
    Ok(())
}

/// `ptxas -v` of every function (an error when ptxas is missing or rejects
/// one).
fn ptxas_reports(
    emitted: &lpac_cuda::PtxProgram,
    arch: lpac_cuda::Arch,
) -> Result<Vec<lpac_cuda::ptxas::Report>, CliError> {
    let ptxas = lpac_cuda::ptxas::find().ok_or_else(|| {
        CliError::Message(
            "--ptxas-report: ptxas not found; install it with `pip install nvidia-cuda-nvcc-cu12` or set \
             LPAC_PTXAS to its path"
                .into(),
        )
    })?;
    let dir = std::env::temp_dir().join(format!("lpac-ptxas-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let reports: Result<Vec<_>, CliError> = emitted
        .kernels
        .iter()
        .map(|k| {
            lpac_cuda::ptxas::assemble(&ptxas, &k.ptx, arch, &dir, &k.entry)
                .map_err(|e| CliError::Message(format!("ptxas rejected {}: {e}", k.entry)))
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    reports
}

/// One line per emitted function and per kernel left to the runtime.
fn ptx_summary(
    program: &Program,
    emitted: &lpac_cuda::PtxProgram,
    arch: lpac_cuda::Arch,
    reports: Option<&[lpac_cuda::ptxas::Report]>,
) -> String {
    let mut out = String::new();
    let extra = if reports.is_some() { "  registers  spill stores/loads (bytes)" } else { "" };
    let _ = writeln!(out, "{:<44} {:>8} {:>6} {:>7}  args{extra}", "function", "grid", "block", "shared");
    for (i, k) in emitted.kernels.iter().enumerate() {
        let report = reports
            .and_then(|r| r.get(i))
            .map_or(String::new(), |r| format!("  {:>9}  {}/{}", r.registers, r.spill_stores, r.spill_loads));
        let shared = k.shared_bytes + k.static_shared_bytes;
        let _ = writeln!(out, "{:<44} {:>8} {:>6} {shared:>7}  {:>4}{report}", k.entry, k.grid, k.block, k.args.len());
    }
    for (i, why) in &emitted.skipped {
        let _ = writeln!(out, "k{i:<43} {:>8} {:>6} {:>7}  {} — {why}", "-", "-", "-", program.kernels[*i].name());
    }
    let _ = writeln!(
        out,
        "\n{} PTX functions for {} (PTX ISA {}) from {} kernels; {} kernels not emitted (listed above)",
        emitted.kernels.len(),
        arch.name(),
        lpac_cuda::ptx::PTX_VERSION,
        program.kernels.len(),
        emitted.skipped.len()
    );
    out
}

fn write_ptx_dir(
    dir: &Path,
    program: &Program,
    emitted: &lpac_cuda::PtxProgram,
    arch: lpac_cuda::Arch,
    summary: &str,
) -> CliResult {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text)
            .map_err(|e| CliError::Message(format!("cannot write {}: {e}", dir.join(name).display())))
    };
    write("program.kir", &lpac_ir::kernel::print::print(program))?;
    for k in &emitted.kernels {
        write(&format!("{}.ptx", k.entry), &k.ptx)?;
    }
    let manifest = serde_json::to_string_pretty(&emitted.manifest(arch)).expect("JSON values serialise");
    write("manifest.json", &manifest)?;
    write("summary.txt", summary)?;
    println!("wrote {} PTX functions and manifest.json to {}", emitted.kernels.len(), dir.display());
    Ok(())
}

fn write_dir(
    dir: &Path,
    program: &Program,
    kernels: &[Vec<lpac_cpu::codegen::CompiledKernel>],
    summary: &str,
) -> CliResult {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text)
            .map_err(|e| CliError::Message(format!("cannot write {}: {e}", dir.join(name).display())))
    };
    write("program.kir", &lpac_ir::kernel::print::print(program))?;
    for (i, k) in program.kernels.iter().enumerate() {
        let stem = format!("k{i:03}-{}", file_name(k.name()));
        write(&format!("{stem}.kir"), &lpac_ir::kernel::print::print_kernel_text(program, i))?;
        match kernels.get(i).map(Vec::as_slice) {
            Some([c]) => write(&format!("{stem}.clif"), &c.clif)?,
            Some(bodies @ [_, _, ..]) => {
                let text: Vec<String> =
                    bodies.iter().enumerate().map(|(s, c)| format!("; body k{i}.{s} {}\n{}", c.name, c.clif)).collect();
                write(&format!("{stem}.clif"), &text.join("\n"))?;
            }
            _ => {}
        }
    }
    write("summary.txt", summary)?;
    println!("wrote {} kernels to {}", program.kernels.len(), dir.display());
    Ok(())
}

/// A kernel name as part of a file name: ASCII letters, digits, `_` and
/// `-`, at most 60 characters (a rows kernel names all its stages).
fn file_name(name: &str) -> String {
    name.chars().take(60).map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect()
}

/// One line per kernel: kind, FLOPs, bytes moved, how it runs.
pub fn summary(
    program: &Program,
    kernels: &[Vec<lpac_cpu::codegen::CompiledKernel>],
    arena: usize,
    sum: usize,
    compile_seconds: f64,
) -> String {
    let mut out = String::new();
    let (mut flops, mut bytes) = (0u64, 0u64);
    let _ = writeln!(out, "{:<5} {:<7} {:<40} {:>14} {:>14}  code", "id", "kind", "name", "FLOPs", "bytes");
    for (i, k) in program.kernels.iter().enumerate() {
        let kind = match k {
            Kernel::Attention(_) => "attn",
            Kernel::ScatterAdd { .. } => "scatter",
            other => other.kind(),
        };
        let f = k.flops();
        let b = k.bytes_moved(program);
        flops += f;
        bytes += b;
        let compiled = kernels.get(i).map(Vec::as_slice).unwrap_or_default();
        let code = match (k, compiled) {
            (Kernel::Loop(_), [c]) => format!("cranelift ({:?})", c.vectorization),
            (Kernel::Rows(r), bodies) if bodies.len() == r.loops().count() => {
                let mut bodies = bodies.iter();
                let modes: Vec<String> = r
                    .stages
                    .iter()
                    .map(|s| match s {
                        lpac_ir::kernel::RowStage::Loop(_) => {
                            bodies.next().map_or("?".into(), |c| format!("{:?}", c.vectorization))
                        }
                        lpac_ir::kernel::RowStage::Gemm(_) => "gemm".to_string(),
                    })
                    .collect();
                format!("cranelift ({})", modes.join(", "))
            }
            (Kernel::Multi(m), members) if members.len() == m.members.len() => {
                format!("cranelift ({} functions)", members.len())
            }
            (Kernel::Loop(_) | Kernel::Rows(_) | Kernel::Multi(_), _) => "reference".to_string(),
            (Kernel::Gemm(_), _) => "gemm crate".to_string(),
            (Kernel::Attention(_), _) => "rust, gemm-crate tiles".to_string(),
            _ => "rust".to_string(),
        };
        let _ = writeln!(out, "k{i:<4} {kind:<7} {:<40} {f:>14} {b:>14}  {code}", truncate(k.name(), 40));
    }
    let _ = writeln!(out, "\n{} kernels, {flops} FLOPs, {bytes} bytes moved per run", program.kernels.len());
    let _ = writeln!(out, "memory plan: {arena} bytes of temporaries at the peak, against {sum} bytes without reuse");
    let _ = writeln!(out, "compile time (fuse + Cranelift): {:.3} s", compile_seconds);
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n - 1).collect::<String>() + "…" }
}
