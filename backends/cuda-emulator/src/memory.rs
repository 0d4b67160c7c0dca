//! Global and shared memory, and the loads, stores and atomics on them.

use super::instructions::val;
use super::parse::{Arg, Inst, Ty, ty_of};
use super::{Ctx, Thread};

/// Global memory: buffers by index, and which of their bytes anything has
/// written.
pub struct Memory {
    pub buffers: Vec<Vec<u8>>,
    written: Vec<Vec<bool>>,
}

/// What an instruction does with the bytes it addresses.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Use {
    Load,
    Store,
    /// An atomic read-modify-write.
    Update,
}

impl Memory {
    /// Buffers whose every byte counts as written (inputs, parameters, a
    /// zeroed scratch area): [`Memory::unwritten`] marks the others.
    pub fn new(buffers: Vec<Vec<u8>>) -> Memory {
        let written = buffers.iter().map(|b| vec![true; b.len()]).collect();
        Memory { buffers, written }
    }

    /// Marks buffer `b` as not written yet: a temp, whose memory on a GPU
    /// holds whatever the memory plan placed there before. Loading from it
    /// before a store is then an error.
    pub fn unwritten(&mut self, b: usize) {
        self.written[b].fill(false);
    }

    /// Whether `len` bytes of buffer `b` from `offset` have been written.
    pub fn is_written(&self, b: usize, offset: usize, len: usize) -> bool {
        self.written[b][offset..offset + len].iter().all(|&w| w)
    }

    /// Marks buffer `b` as written whole (by a product computed outside the
    /// emulator).
    pub fn wrote(&mut self, b: usize) {
        self.written[b].fill(true);
    }

    pub fn address(buffer: usize) -> u64 {
        ((buffer as u64) + 1) << 40
    }

    fn at(&mut self, addr: u64, len: usize, using: Use) -> Result<&mut [u8], String> {
        let (b, off) = (((addr >> 40) as usize).wrapping_sub(1), (addr & ((1 << 40) - 1)) as usize);
        let buf = self.buffers.get_mut(b).ok_or_else(|| format!("address {addr:#x} is in no buffer"))?;
        let n = buf.len();
        let bytes = buf
            .get_mut(off..off + len)
            .ok_or_else(|| format!("address {addr:#x}: offset {off} + {len} past buffer b{b} of {n} bytes"))?;
        let written = &mut self.written[b][off..off + len];
        if using != Use::Store && !written.iter().all(|&w| w) {
            return Err(format!(
                "loads byte {off} of buffer b{b}, which nothing has written yet (a temp read before it is computed: \
                 on a GPU, whatever the memory plan put there before)"
            ));
        }
        written.fill(true);
        Ok(bytes)
    }
}

/// The bytes a memory instruction touched (none for `ld.param`).
pub(super) struct Touched {
    pub(super) shared: bool,
    pub(super) address: u64,
    pub(super) len: usize,
}

pub(super) fn memory_op(
    ctx: &Ctx,
    inst: &Inst,
    th: &mut Thread,
    tid: u32,
    mem: &mut Memory,
    shared: &mut [u8],
) -> Result<Option<Touched>, String> {
    let op = &inst.op;
    let is_shared = op.iter().any(|o| o == "shared");
    let t = ty_of(op.last().unwrap()).ok_or("memory type")?;
    let size = match t {
        Ty::U64 | Ty::S64 => 8,
        Ty::U16 => 2,
        Ty::U8 => 1,
        _ => 4,
    };
    if op.iter().any(|o| o == "v4") {
        return vector_op(ctx, inst, th, tid, if is_shared { Space::Shared(shared) } else { Space::Global(mem) }, size);
    }
    let mem_arg = if matches!(op[0].as_str(), "st" | "red") { &inst.args[0] } else { &inst.args[1] };
    let Arg::Mem(base, off) = mem_arg else { return Err("no address".into()) };
    let addr = (val(ctx, th, tid, base)? as i64 + off) as u64;
    if op[0] == "ld" && matches!(**base, Arg::Param(_)) {
        // ld.param: the parameter's value.
        if let Arg::Reg(d) = inst.args[0] {
            th.regs[d] = addr;
        }
        return Ok(None);
    }
    if !addr.is_multiple_of(size as u64) {
        return Err(format!("a {size}-byte access at {addr:#x}, not {size}-byte aligned (a GPU faults)"));
    }
    let bytes: &mut [u8] = if is_shared {
        let a = addr as usize;
        let n = shared.len();
        shared.get_mut(a..a + size).ok_or_else(|| format!("shared address {a} past {n} bytes"))?
    } else {
        let using = match op[0].as_str() {
            "ld" => Use::Load,
            "st" => Use::Store,
            _ => Use::Update,
        };
        mem.at(addr, size, using)?
    };
    let mut raw = [0u8; 8];
    raw[..size].copy_from_slice(bytes);
    let old = u64::from_le_bytes(raw);
    match op[0].as_str() {
        "ld" => {
            let Arg::Reg(d) = inst.args[0] else { return Err("load into a non-register".into()) };
            th.regs[d] = match t {
                Ty::S32 => u64::from(old as u32),
                _ => old,
            };
        }
        "st" => {
            let v = val(ctx, th, tid, &inst.args[1])?;
            bytes.copy_from_slice(&v.to_le_bytes()[..size]);
        }
        _ => {
            // atom.global.OP.u32 d, [a], b (d: the old value) or
            // red.global.OP.b32 [a], b; OP add or or.
            let returns = op[0] == "atom";
            let b = val(ctx, th, tid, &inst.args[if returns { 2 } else { 1 }])? as u32;
            let new = match op[2].as_str() {
                "add" => (old as u32).wrapping_add(b),
                "or" => old as u32 | b,
                other => return Err(format!("atomic operation {other}")),
            };
            bytes.copy_from_slice(&new.to_le_bytes()[..size]);
            if returns && let Arg::Reg(d) = inst.args[0] {
                th.regs[d] = old;
            }
        }
    }
    Ok(Some(Touched { shared: is_shared, address: addr, len: size }))
}

/// Where a 16-byte access goes.
pub(super) enum Space<'a> {
    Global(&'a mut Memory),
    Shared(&'a mut [u8]),
}

/// `ld.v4` / `st.v4` (global or shared): four elements at a 16-byte aligned
/// address.
pub(super) fn vector_op(
    ctx: &Ctx,
    inst: &Inst,
    th: &mut Thread,
    tid: u32,
    space: Space,
    size: usize,
) -> Result<Option<Touched>, String> {
    let load = inst.op[0] == "ld";
    let (regs, at) = if load { (&inst.args[0], &inst.args[1]) } else { (&inst.args[1], &inst.args[0]) };
    let (Arg::Regs(regs), Arg::Mem(base, off)) = (regs, at) else { return Err("vector operands".into()) };
    let addr = (val(ctx, th, tid, base)? as i64 + off) as u64;
    if !addr.is_multiple_of(16) {
        return Err(format!("a 16-byte access at {addr:#x}, not 16-byte aligned"));
    }
    let shared = matches!(space, Space::Shared(_));
    let bytes = match space {
        Space::Global(mem) => mem.at(addr, 4 * size, if load { Use::Load } else { Use::Store })?,
        Space::Shared(shared) => {
            let (a, n) = (addr as usize, shared.len());
            shared.get_mut(a..a + 4 * size).ok_or_else(|| format!("shared address {a} past {n} bytes"))?
        }
    };
    for (l, &r) in regs.iter().enumerate() {
        let lane = &mut bytes[l * size..(l + 1) * size];
        if load {
            let mut raw = [0u8; 8];
            raw[..size].copy_from_slice(lane);
            th.regs[r] = u64::from_le_bytes(raw);
        } else {
            lane.copy_from_slice(&th.regs[r].to_le_bytes()[..size]);
        }
    }
    Ok(Some(Touched { shared, address: addr, len: 4 * size }))
}
