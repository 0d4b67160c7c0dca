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
    // Holds the JIT memory the executor's function pointers point into.
    _codegen: CpuCodegen,
}

/// Everything `lpac kernels` shows, and what the executor runs.
pub struct Compiled {
    pub program: Program,
    pub kernels: Vec<Option<CompiledKernel>>,
    pub codegen: CpuCodegen,
}

/// Lowers and compiles a step graph.
pub fn compile(graph: &Graph) -> Result<Compiled, String> {
    let program = lpac_passes::fuse::fuse(graph).map_err(|e| e.to_string())?;
    let mut codegen = CpuCodegen::new().map_err(|e| e.to_string())?;
    let kernels = codegen.compile_all(&program).map_err(|e| e.to_string())?;
    Ok(Compiled { program, kernels, codegen })
}

impl CpuStep {
    pub fn new(graph: &Graph) -> Result<CpuStep, String> {
        let Compiled { program, kernels, codegen } = compile(graph)?;
        let functions = kernels.iter().map(|k| k.as_ref().map(|c| c.func)).collect();
        let executor = Executor::new(program, functions)?;
        Ok(CpuStep { executor, _codegen: codegen })
    }
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
}
