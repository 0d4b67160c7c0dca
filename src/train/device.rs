//! Where a step graph runs. Today the reference interpreter (f32, matrix
//! products through the gemm crate); the compiled CPU and CUDA backends plug
//! in here as they land.

use std::collections::BTreeMap;

use lpac_ir::Graph;
use lpac_ir::interp::{self, RunContext, Tensor};

use crate::error::CliError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The reference interpreter, in f32: slow, simple, always available.
    Interp,
    /// Compiled CPU kernels: Cranelift for loops, the gemm crate for matrix products.
    Cpu,
    /// NVIDIA GPUs (PTX through the CUDA driver).
    Cuda,
}

/// The arithmetic of the training step's matrix products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Mixed precision: products on bf16 operands with f32 accumulation and
    /// a bf16 result; parameters (master weights), optimiser state, and all
    /// other arithmetic in f32 (the `precision` pass). Needs `--device cuda`
    /// (or `interp`, the reference).
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// `--precision bf16` runs where products have a bf16 mode.
    pub fn check(self, device: Device) -> Result<(), CliError> {
        if self == Precision::Bf16 && device == Device::Cpu {
            return Err(CliError::Message(
                "--precision bf16 needs --device cuda (or interp, the slow reference): the CPU backend computes \
                 in f32"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Runs one graph again and again with new inputs and parameters.
pub trait Executor {
    /// The graph's outputs by name.
    fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        params: &BTreeMap<String, Tensor>,
        ctx: RunContext,
    ) -> Result<BTreeMap<String, Tensor>, String>;

    /// Training with the parameters and optimiser state kept in the
    /// executor between steps, where the backend supports it.
    fn resident(&mut self) -> Option<&mut dyn Resident> {
        None
    }
}

/// A training step whose parameters (`param:PATH` outputs) and optimiser
/// state (outputs named like the inputs they replace) stay in the executor.
pub trait Resident {
    /// Writes the parameters and the optimiser state.
    fn load(&mut self, params: &BTreeMap<String, Tensor>, state: &BTreeMap<String, Tensor>) -> Result<(), String>;
    /// Runs a step with `inputs` (batch and hyperparameters); returns `loss`
    /// and `grad_norm`. The new parameters and state are taken by `commit`.
    fn step(&mut self, inputs: &BTreeMap<String, Tensor>, ctx: RunContext) -> Result<BTreeMap<String, Tensor>, String>;
    /// Makes the last step's parameters and state the current ones.
    fn commit(&mut self) -> Result<(), String>;
    /// Copies the current parameters and state into the host maps (same keys).
    fn read(&self, params: &mut BTreeMap<String, Tensor>, state: &mut BTreeMap<String, Tensor>) -> Result<(), String>;
    /// The step's planned and measured memory, where the backend tracks it.
    fn memory(&self) -> Option<super::procmem::StepMemory> {
        None
    }
}

struct Interpreter {
    graph: Graph,
}

impl Executor for Interpreter {
    fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        params: &BTreeMap<String, Tensor>,
        ctx: RunContext,
    ) -> Result<BTreeMap<String, Tensor>, String> {
        let outputs =
            interp::run(&self.graph, interp::Precision::F32, inputs, params, ctx).map_err(|e| e.to_string())?;
        Ok(outputs.into_iter().collect())
    }
}

/// An executor for `graph` on `device`, or a clear error if that backend is
/// not available in this build.
pub fn executor(device: Device, graph: Graph) -> Result<Box<dyn Executor>, CliError> {
    match device {
        Device::Interp => Ok(Box::new(Interpreter { graph })),
        Device::Cpu => {
            let step = super::cpu::CpuStep::new(&graph).map_err(|e| CliError::Message(format!("--device cpu: {e}")))?;
            Ok(Box::new(step))
        }
        Device::Cuda => {
            let cuda = |e: String| CliError::Message(format!("--device cuda: {e}"));
            // The GPU first: without one, that is the message.
            let exec = guarded(|| {
                let gpu = lpac_cuda::runtime::Gpu::open()?;
                let program = lpac_passes::fuse::fuse(&graph).map_err(|e| e.to_string())?;
                lpac_cuda::runtime::CudaExecutor::new(gpu, program)
            })
            .map_err(cuda)?;
            Ok(Box::new(CudaStep { exec }))
        }
    }
}

/// Runs `f`, turning a panic inside the CUDA libraries' bindings (a symbol
/// a driver or cuBLAS version lacks) into an error message.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown failure".into());
        Err(format!("the CUDA libraries failed: {what}"))
    })
}

/// [`Resident::load`] through a backend's `write(is a parameter, name,
/// tensor)`: every parameter, then every piece of optimiser state.
pub fn load_with(
    params: &BTreeMap<String, Tensor>,
    state: &BTreeMap<String, Tensor>,
    mut write: impl FnMut(bool, &str, &Tensor) -> Result<(), String>,
) -> Result<(), String> {
    params
        .iter()
        .map(|(p, t)| (true, p, t))
        .chain(state.iter().map(|(n, t)| (false, n, t)))
        .try_for_each(|(param, name, t)| write(param, name, t))
}

/// [`Resident::read`] through a backend's `read(is a parameter, name)`.
pub fn read_with(
    params: &mut BTreeMap<String, Tensor>,
    state: &mut BTreeMap<String, Tensor>,
    read: impl Fn(bool, &str) -> Result<Tensor, String>,
) -> Result<(), String> {
    for (path, t) in params.iter_mut() {
        *t = read(true, path)?;
    }
    for (name, t) in state.iter_mut() {
        *t = read(false, name)?;
    }
    Ok(())
}

/// `(output, is a parameter, target)` for a training step program:
/// `param:PATH` feeds parameter PATH; an output named like an input
/// (optimiser state) feeds that input.
pub fn carries(program: &lpac_ir::kernel::Program) -> Vec<(String, bool, String)> {
    let inputs: Vec<&str> = program
        .buffers
        .iter()
        .filter_map(|b| match &b.kind {
            lpac_ir::kernel::BufferKind::Input(n) => Some(n.as_str()),
            _ => None,
        })
        .collect();
    program
        .outputs
        .iter()
        .filter_map(|(name, _)| match name.strip_prefix("param:") {
            Some(path) => Some((name.clone(), true, path.to_string())),
            None if inputs.contains(&name.as_str()) => Some((name.clone(), false, name.clone())),
            None => None,
        })
        .collect()
}

/// A step on the GPU: parameters and optimiser state stay in device memory
/// between steps (resident), as on the CPU backend.
struct CudaStep {
    exec: lpac_cuda::runtime::CudaExecutor,
}

impl Executor for CudaStep {
    fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        params: &BTreeMap<String, Tensor>,
        ctx: RunContext,
    ) -> Result<BTreeMap<String, Tensor>, String> {
        guarded(|| self.exec.run(inputs, params, ctx.seed, ctx.step))
    }

    fn resident(&mut self) -> Option<&mut dyn Resident> {
        Some(self)
    }
}

impl Resident for CudaStep {
    fn load(&mut self, params: &BTreeMap<String, Tensor>, state: &BTreeMap<String, Tensor>) -> Result<(), String> {
        load_with(params, state, |param, name, t| self.exec.write_external(param, name, t))
    }

    fn step(&mut self, inputs: &BTreeMap<String, Tensor>, ctx: RunContext) -> Result<BTreeMap<String, Tensor>, String> {
        guarded(|| self.exec.run_resident(inputs, &["loss", "grad_norm"], ctx.seed, ctx.step))
    }

    fn commit(&mut self) -> Result<(), String> {
        let carries = carries(self.exec.program());
        self.exec.carry(&carries)
    }

    fn read(&self, params: &mut BTreeMap<String, Tensor>, state: &mut BTreeMap<String, Tensor>) -> Result<(), String> {
        read_with(params, state, |param, name| self.exec.read_external(param, name))
    }
}
