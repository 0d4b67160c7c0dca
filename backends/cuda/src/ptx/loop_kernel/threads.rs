//! The forms a loop kernel takes, as loops over threads: a grid-stride
//! loop over elements (a thread or a warp each), four elements a thread,
//! blocks per output, rows (a warp or a block each) and the members of a
//! fused multi kernel.

use std::collections::BTreeMap;

use lpac_ir::DType;
use lpac_ir::kernel::{BufferId, Expr, LoopKernel};

use super::super::BLOCK;
use super::reduce::BlockReduce;
use super::values::AddrOf;
use super::{Em, R, Reg};

impl<'a> Em<'a> {
    /// A grid-stride loop over the elements: a thread each, or a warp each
    /// (`warps`, a reducing kernel's usual shape).
    pub(super) fn function(&mut self, warps: bool) -> R<()> {
        let k = self.k;
        let total: u64 = k.domain.iter().map(|&d| d as u64).product();
        let (i, stride) = self.prologue(warps);
        let done = self.reg(0);
        self.label("$L_element");
        self.line(format!("setp.ge.u64 {done}, {i}, {total};"));
        self.line(format!("@{done} bra $L_done;"));
        self.element(i)?;
        self.line(format!("add.u64 {i}, {i}, {stride};"));
        self.line("bra.uni $L_element;");
        self.label("$L_done");
        self.line("ret;");
        Ok(())
    }

    /// An elementwise kernel four elements at a time ([`vector_loads`](super::shape::vector_loads)):
    /// the loads at the element's own position as one 16-byte load each,
    /// the expressions for each of the four elements, each output as one
    /// 16-byte store.
    pub(super) fn function_quads(&mut self, vector: &[usize]) -> R<()> {
        let k = self.k;
        let total: u64 = k.domain.iter().map(|&d| d as u64).product();
        let (quad, stride) = self.prologue(false);
        let (done, first) = (self.reg(0), self.reg(3));
        self.label("$L_element");
        self.line(format!("setp.ge.u64 {done}, {quad}, {};", total / 4));
        self.line(format!("@{done} bra $L_done;"));
        self.line(format!("shl.b64 {first}, {quad}, 2;"));
        self.quad(first, vector)?;
        self.line(format!("add.u64 {quad}, {quad}, {stride};"));
        self.line("bra.uni $L_element;");
        self.label("$L_done");
        self.line("ret;");
        Ok(())
    }

    /// Elements `first .. first + 4` of the current kernel: the loads in
    /// `vector` as one 16-byte load each, every output as one 16-byte store.
    pub(super) fn quad(&mut self, first: Reg, vector: &[usize]) -> R<()> {
        let k = self.k;
        let flat = self.reg(3);
        let mut lanes: BTreeMap<usize, [Reg; 4]> = BTreeMap::new();
        // The same position of the same buffer is loaded once.
        let mut loaded: BTreeMap<(BufferId, i64), [Reg; 4]> = BTreeMap::new();
        for &e in vector {
            if !self.needed[e] {
                continue;
            }
            let Expr::Load { buffer, index } = &k.exprs[e].expr else { continue };
            if let Some(regs) = loaded.get(&(*buffer, index.offset)) {
                lanes.insert(e, *regs);
                continue;
            }
            let d = k.exprs[e].dtype;
            let regs = [self.of(d), self.of(d), self.of(d), self.of(d)];
            let at = self.reg(3);
            self.line(format!("add.s64 {at}, {first}, {};", index.offset));
            let addr = self.address(*buffer, AddrOf::Flat(at), d)?;
            let ty = if d == DType::F32 { "f32" } else { "s32" };
            self.line(format!("ld.global.v4.{ty} {{{}, {}, {}, {}}}, [{addr}];", regs[0], regs[1], regs[2], regs[3]));
            loaded.insert((*buffer, index.offset), regs);
            lanes.insert(e, regs);
        }
        let mut results: Vec<Vec<Reg>> = vec![Vec::new(); k.outputs.len()];
        for lane in 0..4 {
            self.line(format!("add.u64 {flat}, {first}, {lane};"));
            self.coordinates(flat, 0, &k.domain.clone())?;
            for (&e, regs) in &lanes {
                self.vals[e] = Some(regs[lane]);
            }
            for (o, &(_, e)) in k.outputs.iter().enumerate() {
                let v = self.value(e.index())?;
                results[o].push(v);
            }
            self.vals.iter_mut().for_each(|v| *v = None);
        }
        for (&(b, e), regs) in k.outputs.iter().zip(&results) {
            let d = k.exprs[e.index()].dtype;
            let addr = self.address(b, AddrOf::Flat(first), d)?;
            let ty = if d == DType::F32 { "f32" } else { "s32" };
            self.line(format!("st.global.v4.{ty} [{addr}], {{{}, {}, {}, {}}};", regs[0], regs[1], regs[2], regs[3]));
        }
        Ok(())
    }

    /// The kernel with block-level reductions ([`BlockReduce`]): block `b`
    /// takes output `b / slices`, slice `b % slices`; no grid-stride loop
    /// (the grid is exactly outputs × slices).
    pub(super) fn function_blocks(&mut self, slices: u64, len: u64) -> R<()> {
        let outputs: u64 = self.k.domain.iter().map(|&d| d as u64).product();
        self.load_params();
        let (raw, scratch) = (self.reg(3), self.reg(3));
        self.line(format!("ld.param.u64 {raw}, [scratch];"));
        self.line(format!("cvta.to.global.u64 {scratch}, {raw};"));
        let (ctaid, tid32, lane32) = (self.reg(2), self.reg(2), self.reg(2));
        let (block, output, slice, tid, lane) = (self.reg(3), self.reg(3), self.reg(3), self.reg(3), self.reg(3));
        let (lane0, stores) = (self.reg(0), self.reg(0));
        self.line(format!("mov.u32 {ctaid}, %ctaid.x;"));
        self.line(format!("mov.u32 {tid32}, %tid.x;"));
        self.line(format!("cvt.u64.u32 {block}, {ctaid};"));
        self.line(format!("div.u64 {output}, {block}, {slices};"));
        self.line(format!("rem.u64 {slice}, {block}, {slices};"));
        self.line(format!("cvt.u64.u32 {tid}, {tid32};"));
        self.line(format!("and.b32 {lane32}, {tid32}, 31;"));
        self.line(format!("cvt.u64.u32 {lane}, {lane32};"));
        self.line(format!("setp.eq.u32 {lane0}, {lane32}, 0;"));
        self.lane = Some((lane, lane0));
        self.block = Some(BlockReduce { slices, len, outputs, output, slice, tid, tid32, scratch, stores });
        self.shared.push(format!(".shared .align 4 .b8 lpac_warps[{}]", 4 * (BLOCK / 32)));
        // Counters first (one u32 per output), then the partial results.
        self.scratch_bytes = (4 * outputs + 4 * outputs * slices) as usize;
        self.element(output)?;
        self.line("ret;");
        Ok(())
    }

    /// A rows kernel as one function: a warp per row, grid-stride over the
    /// rows, running every stage on its row before the next — a reducing
    /// stage (one value per row) with the warp's lanes and shuffles, an
    /// elementwise stage with the lanes taking the row's elements in turn —
    /// with `bar.warp.sync` between stages so each sees what the last wrote.
    ///
    /// With `block_per_row` ([`rows_take_blocks`](super::shape::rows_take_blocks)) the same with a block: a
    /// row's reductions over all its threads, combined across warps in
    /// shared memory as a one-slice [`BlockReduce`] (thread 0 stores), its
    /// elementwise stages a thread per element in turn, and `bar.sync`
    /// between stages — which also keeps a stage's use of the warps'
    /// shared slots apart from the next stage's.
    pub(super) fn rows(&mut self, rows: &[usize], stages: &'a [LoopKernel], block_per_row: bool) -> R<()> {
        for st in &stages[1..] {
            self.select_kernel(st)?;
        }
        let nrows: u64 = rows.iter().map(|&d| d as u64).product();
        let (row, stride) = if block_per_row { self.block_rows_prologue() } else { self.prologue(true) };
        let (lane, _) = self.lane.ok_or_else(|| self.err("rows without lanes"))?;
        let (first, step, sync) = match self.block {
            Some(b) => (b.tid, BLOCK, "bar.sync 0;"),
            None => (lane, 32, "bar.warp.sync -1;"),
        };
        let (done, more, x, flat) = (self.reg(0), self.reg(0), self.reg(3), self.reg(3));
        self.label("$L_row");
        self.line(format!("setp.ge.u64 {done}, {row}, {nrows};"));
        self.line(format!("@{done} bra $L_done;"));
        for st in stages {
            self.select_kernel(st)?;
            let per_row: u64 = st.domain[rows.len()..].iter().map(|&d| d as u64).product();
            if st.reduction.is_some() {
                if per_row != 1 {
                    return Err(self.err("a reducing stage with more than one value per row"));
                }
                self.element(row)?;
            } else {
                // Lanes take elements lane, lane + 32, … of the row (threads:
                // tid, tid + BLOCK, …).
                let n = self.next_label();
                self.line(format!("mov.u64 {x}, {first};"));
                self.line(format!("setp.ge.u64 {more}, {x}, {per_row};"));
                self.line(format!("@{more} bra $L_stage_end{n};"));
                self.label(&format!("$L_stage{n}"));
                self.line(format!("mad.lo.u64 {flat}, {row}, {per_row}, {x};"));
                self.element(flat)?;
                self.line(format!("add.u64 {x}, {x}, {step};"));
                self.line(format!("setp.lt.u64 {more}, {x}, {per_row};"));
                self.line(format!("@{more} bra $L_stage{n};"));
                self.label(&format!("$L_stage_end{n}"));
            }
            self.line(sync);
        }
        self.line(format!("add.u64 {row}, {row}, {stride};"));
        self.line("bra.uni $L_row;");
        self.label("$L_done");
        self.line("ret;");
        Ok(())
    }

    /// The prologue of a block-per-row rows kernel: block `b` takes rows
    /// `b`, `b + grid`, …; every reduction is a one-slice [`BlockReduce`]
    /// over the block's threads. The row and the grid's stride in blocks.
    pub(super) fn block_rows_prologue(&mut self) -> (Reg, Reg) {
        self.load_params();
        let (ctaid, nctaid, tid32, lane32) = (self.reg(2), self.reg(2), self.reg(2), self.reg(2));
        let (row, stride, tid, lane, zero, unused) =
            (self.reg(3), self.reg(3), self.reg(3), self.reg(3), self.reg(3), self.reg(3));
        let (lane0, stores) = (self.reg(0), self.reg(0));
        self.line(format!("mov.u32 {ctaid}, %ctaid.x;"));
        self.line(format!("mov.u32 {nctaid}, %nctaid.x;"));
        self.line(format!("mov.u32 {tid32}, %tid.x;"));
        self.line(format!("cvt.u64.u32 {row}, {ctaid};"));
        self.line(format!("cvt.u64.u32 {stride}, {nctaid};"));
        self.line(format!("cvt.u64.u32 {tid}, {tid32};"));
        self.line(format!("and.b32 {lane32}, {tid32}, 31;"));
        self.line(format!("cvt.u64.u32 {lane}, {lane32};"));
        self.line(format!("setp.eq.u32 {lane0}, {lane32}, 0;"));
        self.line(format!("mov.u64 {zero}, 0;"));
        self.lane = Some((lane, lane0));
        // One slice as long as any reduction (`min` with each stage's count
        // bounds it): no scratch area, no counters.
        let (outputs, len) = (1, u64::MAX >> 8);
        self.block = Some(BlockReduce {
            slices: 1,
            len,
            outputs,
            output: row,
            slice: zero,
            tid,
            tid32,
            scratch: unused,
            stores,
        });
        self.shared.push(format!(".shared .align 4 .b8 lpac_warps[{}]", 4 * (BLOCK / 32)));
        (row, stride)
    }

    /// Several elementwise kernels in one grid-stride loop over their
    /// elements laid end to end: element `i` belongs to the member whose
    /// range holds it. With `quads` (every member qualifies for
    /// [`vector_loads`](super::shape::vector_loads), so every range starts at a multiple of 4) a thread
    /// takes four elements at a time, as [`Em::function_quads`].
    pub(super) fn fused(&mut self, members: &'a [LoopKernel], quads: Option<&[Vec<usize>]>) -> R<()> {
        for m in &members[1..] {
            self.select_kernel(m)?;
        }
        let ends: Vec<u64> = members
            .iter()
            .scan(0u64, |end, m| {
                *end += m.domain.iter().map(|&d| d as u64).product::<u64>();
                Some(*end)
            })
            .collect();
        let total = *ends.last().unwrap_or(&0);
        let (i, stride) = self.prologue(false);
        let (done, here, local, first) = (self.reg(0), self.reg(0), self.reg(3), self.reg(3));
        let per = if quads.is_some() { 4 } else { 1 };
        self.label("$L_element");
        self.line(format!("setp.ge.u64 {done}, {i}, {};", total / per));
        self.line(format!("@{done} bra $L_done;"));
        self.line(format!("mul.lo.u64 {first}, {i}, {per};"));
        self.dispatch(first, &ends, 0, members.len() - 1, here);
        let mut start = 0;
        for (j, m) in members.iter().enumerate() {
            self.label(&format!("$L_member{j}"));
            self.select_kernel(m)?;
            self.line(format!("sub.u64 {local}, {first}, {start};"));
            match quads {
                Some(vectors) => self.quad(local, &vectors[j])?,
                None => self.element(local)?,
            }
            self.line("bra.uni $L_next;");
            start = ends[j];
        }
        self.label("$L_next");
        self.line(format!("add.u64 {i}, {i}, {stride};"));
        self.line("bra.uni $L_element;");
        self.label("$L_done");
        self.line("ret;");
        Ok(())
    }

    /// Branches to `$L_member{j}` for the member `j` in `lo..=hi` whose
    /// elements hold `i` (members end at `ends`): a binary search, so the
    /// last of a hundred members costs seven tests, not a hundred.
    pub(super) fn dispatch(&mut self, i: Reg, ends: &[u64], lo: usize, hi: usize, p: Reg) {
        if lo == hi {
            self.line(format!("bra.uni $L_member{lo};"));
            return;
        }
        let mid = (lo + hi) / 2;
        let upper = format!("$L_upper{}", self.next_label());
        self.line(format!("setp.ge.u64 {p}, {i}, {};", ends[mid]));
        self.line(format!("@{p} bra {upper};"));
        self.dispatch(i, ends, lo, mid, p);
        self.label(&upper);
        self.dispatch(i, ends, mid + 1, hi, p);
    }
}
