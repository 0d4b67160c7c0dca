//! Reductions: a warp's lanes and butterfly shuffles, a block's warps
//! through shared memory, and (few outputs, long reductions) blocks whose
//! partial results the last to finish combines in order.

use lpac_ir::{DType, ReduceOp};

use super::super::BLOCK;
use super::values::f32_imm;
use super::{Em, R, Reg};

/// A reduction with few outputs and long reduce loops (a gradient norm's sum
/// of squares over a whole embedding): a warp per output would leave the GPU
/// idle, so each output gets `slices` blocks, each reducing `len`
/// consecutive reduce indices with all its threads (shuffles within warps,
/// shared memory across them). Every block leaves its partial result in the
/// runtime's scratch area and counts itself in; the last of an output's
/// blocks combines the partials in slice order — the same order every run,
/// without floating-point atomics — stores the output and resets the
/// counter for the next launch.
#[derive(Clone, Copy)]
pub(super) struct BlockReduce {
    pub(super) slices: u64,
    pub(super) len: u64,
    pub(super) outputs: u64,
    /// The block's output and slice (u64), its thread index (u64 and u32),
    /// the scratch area's address, and "this thread stores the output".
    pub(super) output: Reg,
    pub(super) slice: Reg,
    pub(super) tid: Reg,
    pub(super) tid32: Reg,
    pub(super) scratch: Reg,
    pub(super) stores: Reg,
}

impl<'a> Em<'a> {
    pub(super) fn reduction(&mut self, op: ReduceOp, value: usize) -> R<()> {
        let k = self.k;
        let d = k.exprs[value].dtype;
        let acc = self.of(d);
        let init = match (op, d) {
            (ReduceOp::Sum, DType::F32) => f32_imm(0.0),
            (ReduceOp::Max, DType::F32) => f32_imm(f64::NEG_INFINITY),
            (ReduceOp::Sum, _) => "0".into(),
            (ReduceOp::Max, _) => i32::MIN.to_string(),
        };
        let ty = if d == DType::F32 { "f32" } else { "s32" };
        if d == DType::Bool {
            return Err(self.err("a reduction of bool values"));
        }
        if d == DType::BF16 {
            return Err(self.err("a reduction of bf16 values (mixed precision keeps reductions in f32)"));
        }
        self.line(format!("mov.{ty} {acc}, {init};"));
        let count: u64 = k.reduce.iter().map(|&x| x as u64).product();
        // This thread's reduce indices: from `r` by `step` below `end` — a
        // warp's lanes over all of them, a block's threads over its slice,
        // or (a thread per output) all of them in order.
        let (r, more) = (self.reg(3), self.reg(0));
        let (step, end) = match (self.block, self.lane) {
            (None, None) => {
                self.line(format!("mov.u64 {r}, 0;"));
                (1, count.to_string())
            }
            (None, Some((lane, _))) => {
                self.line(format!("mov.u64 {r}, {lane};"));
                (32, count.to_string())
            }
            (Some(b), _) => {
                let end = self.reg(3);
                self.line(format!("mul.lo.u64 {end}, {}, {};", b.slice, b.len));
                self.line(format!("add.u64 {r}, {end}, {};", b.tid));
                self.line(format!("add.u64 {end}, {end}, {};", b.len));
                self.line(format!("min.u64 {end}, {end}, {count};"));
                (u64::from(BLOCK), end.to_string())
            }
        };
        if count > 0 {
            // Each thread folds its indices into `acc`; the warp then
            // combines its 32 partial results (butterfly shuffles).
            self.line(format!("setp.ge.u64 {more}, {r}, {end};"));
            let n = self.next_label();
            self.line(format!("@{more} bra $L_reduce_end{n};"));
            self.label(&format!("$L_reduce{n}"));
            self.coordinates(r, k.domain.len(), &k.reduce.clone())?;
            let inner: Vec<usize> =
                (0..k.exprs.len()).filter(|&e| self.needed[e] && self.on_reduce[e] && !self.on_acc[e]).collect();
            for &e in &inner {
                self.value(e)?;
            }
            let v = self.value(value)?;
            self.fold(op, d, acc, v);
            // Values inside the loop are recomputed every iteration.
            for &e in &inner {
                self.vals[e] = None;
            }
            self.line(format!("add.u64 {r}, {r}, {step};"));
            self.line(format!("setp.lt.u64 {more}, {r}, {end};"));
            self.line(format!("@{more} bra $L_reduce{n};"));
            self.label(&format!("$L_reduce_end{n}"));
        }
        if self.lane.is_some() {
            self.fold_warp(op, d, acc);
        }
        if let Some(b) = self.block {
            self.combine_blocks(b, op, d, acc, &init);
        }
        self.acc = Some(acc);
        Ok(())
    }

    /// `acc = acc ⊕ x` for the reduction `op`.
    pub(super) fn fold(&mut self, op: ReduceOp, d: DType, acc: Reg, x: Reg) {
        match (op, d) {
            (ReduceOp::Sum, DType::F32) => self.line(format!("add.rn.f32 {acc}, {acc}, {x};")),
            (ReduceOp::Max, DType::F32) => self.line(format!("max.NaN.f32 {acc}, {acc}, {x};")),
            (ReduceOp::Sum, _) => self.line(format!("add.s32 {acc}, {acc}, {x};")),
            (ReduceOp::Max, _) => self.line(format!("max.s32 {acc}, {acc}, {x};")),
        }
    }

    /// Folds the other 31 lanes' `acc` into every lane (butterfly shuffles).
    pub(super) fn fold_warp(&mut self, op: ReduceOp, d: DType, acc: Reg) {
        for offset in [16, 8, 4, 2, 1] {
            let other = self.of(d);
            self.line(format!("shfl.sync.bfly.b32 {other}, {acc}, {offset}, 31, -1;"));
            self.fold(op, d, acc, other);
        }
    }

    /// Thread 0: `acc` = the block's warps' results (in `lpac_warps`), in
    /// warp order.
    pub(super) fn fold_block_warps(&mut self, op: ReduceOp, d: DType, acc: Reg) {
        let ty = if d == DType::F32 { "f32" } else { "s32" };
        let other = self.of(d);
        self.line(format!("ld.shared.{ty} {acc}, [lpac_warps];"));
        for w in 1..BLOCK / 32 {
            self.line(format!("ld.shared.{ty} {other}, [lpac_warps+{}];", 4 * w));
            self.fold(op, d, acc, other);
        }
    }

    /// After the warps' shuffles (see [`BlockReduce`]): thread 0 combines
    /// the block's warps through shared memory. With several slices it
    /// leaves the block's partial in the scratch area and counts the block
    /// in; the output's last block then folds all partials — each thread a
    /// fixed, strided share, then warps and block as before — and resets the
    /// counter. Sets `stores` on the one thread that holds the output.
    pub(super) fn combine_blocks(&mut self, b: BlockReduce, op: ReduceOp, d: DType, acc: Reg, init: &str) {
        let ty = if d == DType::F32 { "f32" } else { "s32" };
        let lane0 = self.lane.expect("block reductions have lanes").1;
        let (warp, at, thread0) = (self.reg(2), self.reg(2), self.reg(0));
        let n = self.next_label();
        let done = format!("$L_blocks_done{n}");
        self.line(format!("shr.u32 {warp}, {}, 5;", b.tid32));
        self.line(format!("mov.u32 {at}, lpac_warps;"));
        self.line(format!("mad.lo.u32 {at}, {warp}, 4, {at};"));
        self.line(format!("@{lane0} st.shared.{ty} [{at}], {acc};"));
        self.line("bar.sync 0;");
        self.line(format!("setp.eq.u32 {thread0}, {}, 0;", b.tid32));
        self.line(format!("setp.ne.u32 {}, {}, {};", b.stores, b.tid32, b.tid32));
        if b.slices == 1 {
            self.line(format!("@!{thread0} bra {done};"));
            self.fold_block_warps(op, d, acc);
            self.line(format!("mov.pred {}, {thread0};", b.stores));
            self.label(&done);
            return;
        }
        self.shared.push(".shared .align 4 .b8 lpac_last[4]".into());
        let (counter, partials, addr, j) = (self.reg(3), self.reg(3), self.reg(3), self.reg(3));
        let (old, flag, last, more) = (self.reg(2), self.reg(2), self.reg(0), self.reg(0));
        // Counters at the start of the scratch area, partials after.
        self.line(format!("mad.lo.u64 {counter}, {}, 4, {};", b.output, b.scratch));
        self.line(format!("mad.lo.u64 {partials}, {}, {}, {};", b.output, 4 * b.slices, b.scratch));
        self.line(format!("add.u64 {partials}, {partials}, {};", 4 * b.outputs));
        let counted = format!("$L_counted{n}");
        self.line(format!("@!{thread0} bra {counted};"));
        self.fold_block_warps(op, d, acc);
        self.line(format!("mad.lo.u64 {addr}, {}, 4, {partials};", b.slice));
        self.line(format!("st.global.{ty} [{addr}], {acc};"));
        self.line("membar.gl;");
        self.line(format!("atom.global.add.u32 {old}, [{counter}], 1;"));
        self.line(format!("setp.eq.u32 {last}, {old}, {};", b.slices - 1));
        self.line(format!("selp.u32 {flag}, 1, 0, {last};"));
        self.line(format!("st.shared.u32 [lpac_last], {flag};"));
        self.label(&counted);
        self.line("bar.sync 0;");
        self.line(format!("ld.shared.u32 {flag}, [lpac_last];"));
        self.line(format!("setp.ne.u32 {last}, {flag}, 0;"));
        // The same for every thread of the block: the barriers below are
        // reached by all of it or none.
        self.line(format!("@!{last} bra {done};"));
        self.line("membar.gl;");
        self.line(format!("mov.{ty} {acc}, {init};"));
        self.line(format!("mov.u64 {j}, {};", b.tid));
        self.line(format!("setp.ge.u64 {more}, {j}, {};", b.slices));
        self.line(format!("@{more} bra $L_partials_end{n};"));
        self.label(&format!("$L_partials{n}"));
        self.line(format!("mad.lo.u64 {addr}, {j}, 4, {partials};"));
        let other = self.of(d);
        self.line(format!("ld.global.cg.{ty} {other}, [{addr}];"));
        self.fold(op, d, acc, other);
        self.line(format!("add.u64 {j}, {j}, {BLOCK};"));
        self.line(format!("setp.lt.u64 {more}, {j}, {};", b.slices));
        self.line(format!("@{more} bra $L_partials{n};"));
        self.label(&format!("$L_partials_end{n}"));
        self.fold_warp(op, d, acc);
        // Thread 0 read the warps' slots before the last barrier.
        self.line(format!("@{lane0} st.shared.{ty} [{at}], {acc};"));
        self.line("bar.sync 0;");
        self.line(format!("@!{thread0} bra {done};"));
        self.fold_block_warps(op, d, acc);
        self.line(format!("st.global.u32 [{counter}], 0;"));
        self.line(format!("mov.pred {}, {thread0};", b.stores));
        self.label(&done);
    }
}
