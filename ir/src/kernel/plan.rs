//! Memory planning: where each temp buffer lives in one arena.
//!
//! # Liveness
//! A temp's lifetime is the inclusive range of kernel positions from the
//! first kernel that touches it (its first write, in a checked program) to
//! the last that touches it (its last read); a program output lives to the
//! end (position `kernels.len()`). Inputs and parameters are supplied by the
//! caller and not planned. Lifetimes are inclusive at both ends, so the
//! buffers one kernel reads are never placed over the ones it writes. A temp
//! that no kernel touches and that is not an output gets no place.
//!
//! # Placement
//! Sizes are rounded up to [`ALIGN`] (64) bytes. Temps are placed largest
//! first (ties: earlier lifetime start, then lower id), each at the lowest
//! 64-byte-aligned offset where it overlaps no already placed temp whose
//! lifetime overlaps its own (greedy first fit over offsets). Buffers whose
//! lifetimes are disjoint may so share memory.

use super::{BufferKind, Program};

/// Every placed temp starts at a multiple of this many bytes (a cache line,
/// and enough for any vector load).
pub const ALIGN: usize = 64;

/// A temp's inclusive range of kernel positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    pub first: usize,
    pub last: usize,
}

impl Lifetime {
    pub fn overlaps(&self, other: &Lifetime) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Where every temp lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Byte offset in the arena of each buffer, by id: `None` for inputs,
    /// parameters and temps that nothing uses. Multiples of 64.
    pub offsets: Vec<Option<usize>>,
    /// The arena's size: the most memory temps occupy at once, as placed.
    pub arena_bytes: usize,
    /// Every used temp's rounded size added up: the memory without reuse.
    pub sum_bytes: usize,
    /// The lifetime of each buffer (as `offsets`).
    pub lifetimes: Vec<Option<Lifetime>>,
}

/// `bytes` rounded up to a multiple of [`ALIGN`].
pub fn rounded(bytes: usize) -> usize {
    bytes.next_multiple_of(ALIGN)
}

/// The lifetime of every temp (see the module docs).
pub fn lifetimes(program: &Program) -> Vec<Option<Lifetime>> {
    let mut life: Vec<Option<Lifetime>> = vec![None; program.buffers.len()];
    let mut touch = |b: usize, at: usize| {
        if program.buffers.get(b).is_some_and(|buf| buf.kind == BufferKind::Temp) {
            let l = life[b].get_or_insert(Lifetime { first: at, last: at });
            l.first = l.first.min(at);
            l.last = l.last.max(at);
        }
    };
    for (i, k) in program.kernels.iter().enumerate() {
        for b in k.reads().into_iter().chain(k.writes()) {
            touch(b.index(), i);
        }
    }
    for (_, b) in &program.outputs {
        touch(b.index(), program.kernels.len());
    }
    life
}

/// Plans the arena (see the module docs).
pub fn plan_memory(program: &Program) -> MemoryPlan {
    let lifetimes = lifetimes(program);
    let size = |b: usize| rounded(program.buffers[b].ty.size_bytes());
    let sum_bytes = (0..program.buffers.len()).filter(|&b| lifetimes[b].is_some()).map(size).sum();
    let mut order: Vec<usize> = (0..program.buffers.len()).filter(|&b| lifetimes[b].is_some()).collect();
    order.sort_by_key(|&b| (std::cmp::Reverse(size(b)), lifetimes[b].map(|l| l.first), b));
    let mut offsets: Vec<Option<usize>> = vec![None; program.buffers.len()];
    // (offset, end, lifetime) of each placed temp.
    let mut placed: Vec<(usize, usize, Lifetime)> = Vec::new();
    let mut arena_bytes = 0;
    for b in order {
        let (bytes, life) = (size(b), lifetimes[b].expect("filtered"));
        let mut conflicts: Vec<(usize, usize)> =
            placed.iter().filter(|(s, e, l)| e > s && l.overlaps(&life)).map(|&(s, e, _)| (s, e)).collect();
        conflicts.sort_unstable();
        let mut offset = 0;
        if bytes > 0 {
            for (start, end) in conflicts {
                if offset + bytes <= start {
                    break;
                }
                offset = offset.max(end);
            }
        }
        offsets[b] = Some(offset);
        placed.push((offset, offset + bytes, life));
        arena_bytes = arena_bytes.max(offset + bytes);
    }
    MemoryPlan { offsets, arena_bytes, sum_bytes, lifetimes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{BufferId, Expr, ExprId, IndexMap, Kernel, LoopKernel, Typed};
    use crate::op::BinaryOp;
    use crate::types::{DType, TensorType};

    /// A kernel computing `out` elementwise from `ins` (all of `n` elements).
    fn ew(ins: &[BufferId], out: BufferId, n: usize) -> Kernel {
        let mut exprs: Vec<Typed> = ins
            .iter()
            .map(|&b| Typed {
                expr: Expr::Load { buffer: b, index: IndexMap { offset: 0, strides: vec![1] } },
                dtype: DType::F32,
            })
            .collect();
        for i in 1..ins.len() {
            let prev = if i == 1 { ExprId(0) } else { ExprId(exprs.len() as u32 - 1) };
            exprs.push(Typed { expr: Expr::Binary(BinaryOp::Add, prev, ExprId(i as u32)), dtype: DType::F32 });
        }
        let last = ExprId(exprs.len() as u32 - 1);
        Kernel::Loop(LoopKernel {
            name: format!("k{}", out.0),
            domain: vec![n],
            reduce: vec![],
            exprs,
            reduction: None,
            outputs: vec![(out, last)],
            nodes: vec![],
        })
    }

    fn temp(p: &mut Program, n: usize) -> BufferId {
        p.add_buffer(TensorType::new(DType::F32, vec![n]), BufferKind::Temp)
    }

    /// Checks that no two temps with overlapping lifetimes overlap in memory.
    fn assert_disjoint(p: &Program, plan: &MemoryPlan) {
        let n = p.buffers.len();
        for a in 0..n {
            for b in a + 1..n {
                let (Some(oa), Some(ob)) = (plan.offsets[a], plan.offsets[b]) else { continue };
                let (la, lb) = (plan.lifetimes[a].unwrap(), plan.lifetimes[b].unwrap());
                let (sa, sb) = (p.buffers[a].ty.size_bytes(), p.buffers[b].ty.size_bytes());
                if la.overlaps(&lb) && sa > 0 && sb > 0 {
                    assert!(oa + sa <= ob || ob + sb <= oa, "b{a} [{oa}, +{sa}) and b{b} [{ob}, +{sb}) overlap");
                }
            }
        }
        for (b, o) in plan.offsets.iter().enumerate() {
            if let Some(o) = o {
                assert_eq!(o % ALIGN, 0);
                assert!(o + p.buffers[b].ty.size_bytes() <= plan.arena_bytes);
            }
        }
    }

    #[test]
    fn a_chain_reuses_memory() {
        // x -> t0 -> t1 -> t2 -> t3 -> out: two buffers' worth of arena.
        let mut p = Program::default();
        let x = p.add_buffer(TensorType::new(DType::F32, vec![100]), BufferKind::Input("x".into()));
        let mut prev = x;
        for _ in 0..5 {
            let t = temp(&mut p, 100);
            p.kernels.push(ew(&[prev], t, 100));
            prev = t;
        }
        p.outputs.push(("out".into(), prev));
        let plan = plan_memory(&p);
        assert_disjoint(&p, &plan);
        assert_eq!(plan.offsets[0], None, "inputs are not planned");
        assert_eq!(plan.sum_bytes, 5 * 448);
        assert_eq!(plan.arena_bytes, 2 * 448);
        assert_eq!(plan.lifetimes[5], Some(Lifetime { first: 4, last: 5 }), "the output lives to the end");
    }

    #[test]
    fn readers_and_writers_of_one_kernel_never_share() {
        // t0 is last read by the kernel that writes t1: they must not share.
        let mut p = Program::default();
        let x = p.add_buffer(TensorType::new(DType::F32, vec![16]), BufferKind::Input("x".into()));
        let t0 = temp(&mut p, 16);
        let t1 = temp(&mut p, 16);
        p.kernels = vec![ew(&[x], t0, 16), ew(&[t0], t1, 16)];
        p.outputs.push(("y".into(), t1));
        let plan = plan_memory(&p);
        assert_ne!(plan.offsets[1], plan.offsets[2]);
        assert_disjoint(&p, &plan);
    }

    #[test]
    fn outputs_survive_to_the_end() {
        // An early output must not be overwritten by later temps.
        let mut p = Program::default();
        let x = p.add_buffer(TensorType::new(DType::F32, vec![64]), BufferKind::Input("x".into()));
        let early = temp(&mut p, 64);
        p.kernels.push(ew(&[x], early, 64));
        let mut prev = x;
        for _ in 0..4 {
            let t = temp(&mut p, 64);
            p.kernels.push(ew(&[prev], t, 64));
            prev = t;
        }
        p.outputs = vec![("early".into(), early), ("late".into(), prev)];
        let plan = plan_memory(&p);
        assert_eq!(plan.lifetimes[early.index()], Some(Lifetime { first: 0, last: 5 }));
        assert_disjoint(&p, &plan);
        let (eo, es) = (plan.offsets[early.index()].unwrap(), 256);
        for t in 2..p.buffers.len() {
            let o = plan.offsets[t].unwrap();
            assert!(o + 256 <= eo || eo + es <= o, "b{t} overwrites the early output");
        }
    }

    #[test]
    fn random_programs_never_overlap_live_buffers() {
        // Deterministic pseudo-random DAGs of kernels with mixed sizes.
        for seed in 0..40u64 {
            let mut p = Program::default();
            let x = p.add_buffer(TensorType::new(DType::F32, vec![8]), BufferKind::Input("x".into()));
            let mut avail = vec![x];
            let r = |i: u64| crate::random::uniform(seed, i);
            for k in 0..25u64 {
                let n = 8;
                let size = 1 + (r(3 * k) * 300.0) as usize;
                let out = p.add_buffer(TensorType::new(DType::F32, vec![size]), BufferKind::Temp);
                let a = avail[(r(3 * k + 1) * avail.len() as f64) as usize];
                let b = avail[(r(3 * k + 2) * avail.len() as f64) as usize];
                // Reads take the first 8 elements of each input.
                let mut kernel = ew(&[a, b], out, n);
                if let Kernel::Loop(l) = &mut kernel {
                    l.domain = vec![size];
                    for e in &mut l.exprs {
                        if let Expr::Load { index, .. } = &mut e.expr {
                            index.strides = vec![0];
                        }
                    }
                }
                p.kernels.push(kernel);
                avail.push(out);
            }
            p.outputs.push(("y".into(), *avail.last().unwrap()));
            p.outputs.push(("z".into(), avail[5]));
            let plan = plan_memory(&p);
            assert_disjoint(&p, &plan);
            assert!(plan.arena_bytes <= plan.sum_bytes);
        }
    }

    #[test]
    fn zero_sized_and_unused_temps() {
        let mut p = Program::default();
        let x = p.add_buffer(TensorType::new(DType::F32, vec![0]), BufferKind::Input("x".into()));
        let unused = temp(&mut p, 10);
        let empty = temp(&mut p, 0);
        p.kernels.push(ew(&[x], empty, 0));
        p.outputs.push(("e".into(), empty));
        let plan = plan_memory(&p);
        assert_eq!(plan.offsets[unused.index()], None);
        assert_eq!(plan.offsets[empty.index()], Some(0));
        assert_eq!(plan.arena_bytes, 0);
        // The unused temp is not counted in the no-reuse sum either.
        assert_eq!(plan.sum_bytes, 0);
    }
}
