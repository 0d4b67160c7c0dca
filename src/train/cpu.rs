//! The CPU backend as a step executor: the graph is lowered to kernels
//! (`fuse`), every loop kernel is compiled by Cranelift, matrix products go
//! to the gemm crate, temporaries live in one planned arena.

use std::collections::BTreeMap;

use lpac_cpu::Executor;
use lpac_cpu::codegen::{CompiledKernel, CpuCodegen};
use lpac_ir::Graph;
use lpac_ir::interp::{RunContext, Tensor};
use lpac_ir::kernel::Program;

use super::device;

/// A compiled program and the code it runs (kept alive with the JIT module).
pub struct CpuStep {
    executor: Executor,
    /// Resident memory just before the executor allocated its buffers.
    baseline: Option<u64>,
    memory: super::procmem::StepMemory,
    steps_run: u64,
    // Holds the JIT memory the executor's function pointers point into.
    _codegen: CpuCodegen,
}

/// Everything `lpac kernels` shows, and what the executor runs.
pub struct Compiled {
    pub program: Program,
    /// Per kernel, the compiled loop bodies (see `CpuCodegen::compile_all`).
    pub kernels: Vec<Vec<CompiledKernel>>,
    /// Keeps the kernels' code alive as long as they may be called.
    pub _codegen: CpuCodegen,
}

/// Lowers and compiles a step graph.
pub fn compile(graph: &Graph) -> Result<Compiled, String> {
    let program = lpac_passes::fuse::fuse(graph).map_err(|e| e.to_string())?;
    let mut codegen = CpuCodegen::new().map_err(|e| e.to_string())?;
    let kernels = codegen.compile_all(&program).map_err(|e| e.to_string())?;
    Ok(Compiled { program, kernels, _codegen: codegen })
}

impl CpuStep {
    pub fn new(graph: &Graph) -> Result<CpuStep, String> {
        let program = lpac_passes::fuse::fuse(graph).map_err(|e| e.to_string())?;
        check_fits_in_memory(&program)?;
        let mut codegen = CpuCodegen::new().map_err(|e| e.to_string())?;
        let kernels = codegen.compile_all(&program).map_err(|e| e.to_string())?;
        let functions = kernels.iter().map(|k| k.iter().map(|c| c.func).collect()).collect();
        let planned = planned_bytes(&program) as u64;
        let baseline = super::procmem::resident();
        let executor = Executor::new(program, functions)?;
        let memory = super::procmem::StepMemory { planned, measured: None };
        Ok(CpuStep { executor, baseline, memory, steps_run: 0, _codegen: codegen })
    }
}

/// How many steps the step memory is measured over.
const MEASURED_STEPS: u64 = 5;

/// Refuses a program whose planned memory exceeds what the machine has
/// available, before anything is allocated.
fn check_fits_in_memory(program: &Program) -> Result<(), String> {
    let plan = lpac_cpu::plan_memory(program);
    let resident = planned_bytes(program) - plan.arena_bytes;
    let needed = plan.arena_bytes + resident;
    let Some(available) = available_memory() else { return Ok(()) };
    if needed as u64 > available {
        let gib = |b: f64| b / (1u64 << 30) as f64;
        return Err(format!(
            "`{}` needs {:.1} GiB per step as planned ({:.1} GiB of temporaries, {:.1} GiB of parameters, \
             optimiser state and inputs), but this machine has {:.1} GiB available; \
             reduce batch, seq or the model with --set",
            program.name,
            gib(needed as f64),
            gib(plan.arena_bytes as f64),
            gib(resident as f64),
            gib(available as f64)
        ));
    }
    Ok(())
}

/// The plan's peak of temporaries plus every parameter, optimiser state and
/// input buffer: what a step needs.
fn planned_bytes(program: &Program) -> usize {
    let plan = lpac_cpu::plan_memory(program);
    let resident: usize =
        program.buffers.iter().filter(|b| b.kind != lpac_ir::kernel::BufferKind::Temp).map(|b| b.ty.size_bytes()).sum();
    plan.arena_bytes + resident
}

/// `MemAvailable` from /proc/meminfo, in bytes (Linux); `None` elsewhere.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl device::Executor for CpuStep {
    fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        params: &BTreeMap<String, Tensor>,
        ctx: RunContext,
    ) -> Result<BTreeMap<String, Tensor>, String> {
        self.executor.run(inputs, params, ctx.seed, ctx.step)
    }

    fn resident(&mut self) -> Option<&mut dyn device::Resident> {
        Some(self)
    }
}

impl device::Resident for CpuStep {
    fn load(&mut self, params: &BTreeMap<String, Tensor>, state: &BTreeMap<String, Tensor>) -> Result<(), String> {
        device::load_with(params, state, |param, name, t| self.executor.write_external(param, name, t))
    }

    fn step(&mut self, inputs: &BTreeMap<String, Tensor>, ctx: RunContext) -> Result<BTreeMap<String, Tensor>, String> {
        // The first steps only: later, evaluations and checkpoints leave
        // their own allocations in the process, which are not the step's.
        self.steps_run += 1;
        let measuring = self.steps_run <= MEASURED_STEPS && self.baseline.is_some() && super::procmem::reset_peak();
        let outputs = self.executor.run_resident(inputs, &["loss", "grad_norm"], ctx.seed, ctx.step)?;
        if let (true, Some(base), Some(peak)) = (measuring, self.baseline, super::procmem::peak()) {
            let grown = peak.saturating_sub(base);
            self.memory.measured = Some(self.memory.measured.map_or(grown, |m| m.max(grown)));
        }
        Ok(outputs)
    }

    fn memory(&self) -> Option<super::procmem::StepMemory> {
        Some(self.memory)
    }

    fn commit(&mut self) -> Result<(), String> {
        let carries = device::carries(self.executor.program());
        self.executor.carry(&carries)
    }

    fn read(&self, params: &mut BTreeMap<String, Tensor>, state: &mut BTreeMap<String, Tensor>) -> Result<(), String> {
        device::read_with(params, state, |param, name| self.executor.read_external(param, name))
    }
}
