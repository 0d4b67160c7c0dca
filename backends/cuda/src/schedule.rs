//! How an emitted program runs: the order of cuBLAS products and function
//! launches for each kernel, and what every function parameter is bound
//! to. The runtime follows it on a GPU and the PTX emulator in the tests
//! follows the same, so the tests check the launches a GPU gets.

use lpac_ir::kernel::{GemmKernel, Kernel, Program, RowStage};

use crate::{PtxKernel, PtxProgram};

/// One thing done on the GPU's stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A matrix product, by cuBLAS.
    Product(Box<GemmKernel>),
    /// An emitted function: its index in [`PtxProgram::kernels`].
    Function(usize),
}

/// What one parameter of an emitted function is bound to at launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// The address of buffer `id`.
    Buffer(u32),
    /// `lpac_ir::random::dropout_key(seed, step, key)` for this step.
    StreamKey(u64),
    /// The address of the scratch area (zeroed once when loaded; block-level
    /// reductions' counters and partial results).
    Scratch,
    /// The address of the `u32` error cell (an index out of range).
    ErrorCell,
}

impl PtxKernel {
    /// The function's parameters, in order: buffers, stream keys, then the
    /// scratch area and the error cell where it takes them.
    pub fn bindings(&self) -> impl Iterator<Item = Binding> + '_ {
        self.args
            .iter()
            .map(|&b| Binding::Buffer(b))
            .chain(self.stream_keys.iter().map(|&k| Binding::StreamKey(k)))
            .chain((self.scratch_bytes > 0).then_some(Binding::Scratch))
            .chain(self.error_flag.then_some(Binding::ErrorCell))
    }
}

impl PtxProgram {
    /// For every kernel of `program` (which this was emitted from), its
    /// steps in order: a product kernel is one product; a rows kernel with
    /// product stages runs stage by stage over all rows (its products, and
    /// its loop stages' functions in order); any other kernel, its
    /// functions in body order. An error names a kernel the program cannot
    /// run (one the emitter skipped that is not a product).
    pub fn schedule(&self, program: &Program) -> Result<Vec<Vec<Step>>, String> {
        let mut functions: Vec<Vec<usize>> = vec![Vec::new(); program.kernels.len()];
        for (f, k) in self.kernels.iter().enumerate() {
            functions[k.kernel].push(f);
        }
        let mut schedule = Vec::with_capacity(program.kernels.len());
        for (i, kernel) in program.kernels.iter().enumerate() {
            let steps = match kernel {
                Kernel::Gemm(g) => vec![Step::Product(Box::new(g.clone()))],
                Kernel::Rows(r) if r.stages.iter().any(|s| matches!(s, RowStage::Gemm(_))) => {
                    let mut loops = functions[i].iter();
                    let mut steps = Vec::with_capacity(r.stages.len());
                    for stage in &r.stages {
                        steps.push(match stage {
                            RowStage::Gemm(g) => Step::Product(Box::new(g.clone())),
                            RowStage::Loop(_) => Step::Function(
                                *loops.next().ok_or_else(|| format!("k{i}: a rows stage without its function"))?,
                            ),
                        });
                    }
                    steps
                }
                _ => {
                    if let Some((_, why)) = self.skipped.iter().find(|(k, _)| *k == i) {
                        return Err(format!("kernel k{i} {:?} cannot run on CUDA yet: {why}", kernel.name()));
                    }
                    functions[i].iter().map(|&f| Step::Function(f)).collect()
                }
            };
            schedule.push(steps);
        }
        Ok(schedule)
    }
}
