//! A whole graph on the emulator, as `--device cuda` runs it: fused, emitted
//! for sm_90, scheduled ([`PtxProgram::schedule`]), every function launched
//! with its bindings and every product computed as its cuBLAS calls define
//! it — so a test of this checks the launches and calls a GPU gets.

use std::collections::BTreeMap;

use lpac_cuda::runtime::{from_bytes, to_bytes};
use lpac_cuda::schedule::{Binding, BlasCall, BlasOperand, Step};
use lpac_cuda::{Arch, PtxProgram, emit_program};
use lpac_ir::interp::{RunContext, Tensor};
use lpac_ir::kernel::{BufferId, BufferKind, Program};
use lpac_ir::{DType, Graph};

use crate::{Function, Memory, bf16_to_f32, f32_to_bf16, launch};

/// What a run left: every output of the graph, and the error cell (not 0:
/// an index was out of range).
pub struct Emulated {
    pub outputs: BTreeMap<String, Tensor>,
    pub error_cell: u32,
}

/// Runs `graph` with `inputs` (inputs and parameters by name) and `ctx`'s
/// stream keys. An error names what failed: lowering, a hazard the emulator
/// found (a race, an unwritten read…) or an input missing.
pub fn run_graph(graph: &Graph, inputs: &BTreeMap<String, Tensor>, ctx: RunContext) -> Result<Emulated, String> {
    let program = lpac_passes::fuse::fuse(graph).map_err(|e| e.to_string())?;
    let emitted = emit_program(&program, Arch::Sm90, Some(graph)).map_err(|e| e.to_string())?;
    run_program(&program, &emitted, inputs, ctx)
}

/// [`run_graph`] for a program already lowered and emitted.
pub fn run_program(
    program: &Program,
    emitted: &PtxProgram,
    inputs: &BTreeMap<String, Tensor>,
    ctx: RunContext,
) -> Result<Emulated, String> {
    let n = program.buffers.len();
    let mut buffers = Vec::with_capacity(n + 2);
    for b in &program.buffers {
        buffers.push(match &b.kind {
            BufferKind::Input(name) | BufferKind::Param(name) => {
                let t = inputs.get(name).ok_or_else(|| format!("no value for `{name}`"))?;
                to_bytes(&b.ty, t).map_err(|e| format!("`{name}`: {e}"))?
            }
            // 0xFF: NaN as f32, should a read slip past the checks.
            BufferKind::Temp => vec![0xFF; b.ty.size_bytes().max(1)],
        });
    }
    let scratch = emitted.kernels.iter().map(|k| k.scratch_bytes).max().unwrap_or(0).max(4);
    buffers.push(vec![0; scratch]);
    buffers.push(vec![0; 4]);
    let mut mem = Memory::new(buffers);
    // Temps hold nothing until a kernel writes them.
    for (i, b) in program.buffers.iter().enumerate() {
        if b.kind == BufferKind::Temp {
            mem.unwritten(i);
        }
    }
    for steps in emitted.schedule(program)? {
        for step in steps {
            match step {
                Step::Product { name, calls } => product(program, &name, &calls, &mut mem)?,
                Step::Function(f) => {
                    let k = &emitted.kernels[f];
                    let function = Function::parse(&k.ptx).map_err(|e| format!("{}: {e}", k.entry))?;
                    let args: Vec<u64> = k
                        .bindings()
                        .map(|b| match b {
                            Binding::Buffer(b) => Memory::address(b as usize),
                            Binding::StreamKey(key) => lpac_ir::random::dropout_key(ctx.seed, ctx.step, key),
                            Binding::Scratch => Memory::address(n),
                            Binding::ErrorCell => Memory::address(n + 1),
                        })
                        .collect();
                    launch(&function, k.grid, k.block, &args, &mut mem)?;
                }
            }
        }
    }
    let outputs = program
        .outputs
        .iter()
        .map(|(name, b)| (name.clone(), from_bytes(&program.buffer(*b).ty, &mem.buffers[b.index()])));
    let cell = &mem.buffers[n + 1];
    Ok(Emulated { outputs: outputs.collect(), error_cell: u32::from_le_bytes([cell[0], cell[1], cell[2], cell[3]]) })
}

/// A product as the runtime has cuBLAS compute it: the calls the schedule
/// planned, each run as cuBLAS defines it (column-major,
/// `C = op(A) · op(B)`), f32 accumulation of f32 or bf16 operands, the
/// result stored in `C`'s dtype (bf16: rounded to nearest even). So a wrong
/// transpose flag or leading dimension in the runtime's calls shows.
fn product(program: &Program, name: &str, calls: &[BlasCall], mem: &mut Memory) -> Result<(), String> {
    let dtype = |b: BufferId| program.buffers[b.index()].ty.dtype;
    let read = |mem: &Memory, b: BufferId, at: i64| -> Result<f32, String> {
        let size = dtype(b).size_bytes();
        let (i, bytes) = (at as usize * size, &mem.buffers[b.index()]);
        if at < 0 || i + size > bytes.len() {
            return Err(format!("{name}: reads byte {i} of {b:?}, past its {} bytes", bytes.len()));
        }
        if !mem.is_written(b.index(), i, size) {
            return Err(format!("{name}: reads byte {i} of {b:?} before anything wrote it"));
        }
        Ok(match dtype(b) {
            DType::BF16 => bf16_to_f32(u16::from_le_bytes([bytes[i], bytes[i + 1]])),
            _ => f32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]),
        })
    };
    // op(X)(i, j): X's element (i, j), or (j, i) when transposed.
    let element = |mem: &Memory, x: &BlasOperand, i: usize, j: usize| {
        let (row, col) = if x.transpose { (j, i) } else { (i, j) };
        read(mem, x.buffer, x.offset + (row + col * x.ld) as i64)
    };
    for call in calls {
        let (c, at) = call.c;
        let size = dtype(c).size_bytes();
        for j in 0..call.n {
            for i in 0..call.m {
                let mut acc = 0.0f32;
                for p in 0..call.k {
                    acc = element(mem, &call.a, i, p)?.mul_add(element(mem, &call.b, p, j)?, acc);
                }
                let bytes = match dtype(c) {
                    DType::BF16 => f32_to_bf16(acc).to_le_bytes().to_vec(),
                    _ => acc.to_le_bytes().to_vec(),
                };
                let o = (at as usize + i + j * call.ldc) * size;
                mem.buffers[c.index()][o..o + size].copy_from_slice(&bytes);
            }
        }
        mem.wrote(c.index());
    }
    Ok(())
}
