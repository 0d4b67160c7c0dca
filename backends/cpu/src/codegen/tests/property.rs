//! 200 random kernels against the evaluator: random domains (rank ≤ 3),
//! random reductions, random expression DAGs of 1–12 nodes over 1–3 input
//! buffers with random strides (0 included).

use lpac_ir::kernel::{BufferId, Expr, ExprId, IndexMap};
use lpac_ir::{BinaryOp, DType, ReduceOp, UnaryOp};

use super::*;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Phase {
    /// May depend on reduce variables.
    Body,
    /// Depends on domain variables only.
    Dom,
    /// Depends on the reduction's result.
    Post,
}

struct Gen<'r> {
    rng: &'r mut Rng,
    kb: Kb,
    inputs: Vec<BufferId>,
    pool: Vec<(ExprId, DType, Phase)>,
}

const F_UNARY: [UnaryOp; 10] = [
    UnaryOp::Neg,
    UnaryOp::Exp,
    UnaryOp::Log,
    UnaryOp::Sqrt,
    UnaryOp::Rsqrt,
    UnaryOp::Recip,
    UnaryOp::Tanh,
    UnaryOp::Sin,
    UnaryOp::Cos,
    UnaryOp::Abs,
];
const F_BINARY: [BinaryOp; 7] =
    [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min, BinaryOp::Pow];
const I_BINARY: [BinaryOp; 6] =
    [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min];
const CMP: [BinaryOp; 6] = [BinaryOp::Lt, BinaryOp::Le, BinaryOp::Gt, BinaryOp::Ge, BinaryOp::Eq, BinaryOp::Ne];

impl Gen<'_> {
    fn ndom(&self) -> usize {
        self.kb.kernel.domain.len()
    }

    fn nvars(&self) -> usize {
        self.kb.nvars()
    }

    /// Random strides; reduce variables get 0 in the `Dom` phase. The
    /// innermost domain and reduce variables favour 0 and 1 (vectorisable).
    fn strides(&mut self, phase: Phase) -> Vec<i64> {
        let (nd, nv) = (self.ndom(), self.nvars());
        (0..nv)
            .map(|v| {
                if v >= nd && phase != Phase::Body {
                    return 0;
                }
                let innermost = v + 1 == nd || v + 1 == nv;
                let r = self.rng.unit();
                if innermost {
                    if r < 0.3 {
                        0
                    } else if r < 0.85 {
                        1
                    } else {
                        2 + self.rng.below(4) as i64
                    }
                } else if r < 0.3 {
                    0
                } else {
                    1 + self.rng.below(12) as i64
                }
            })
            .collect()
    }

    fn leaf(&mut self, phase: Phase) -> (ExprId, DType) {
        let r = self.rng.unit();
        let nv = self.nvars();
        if r < 0.5 {
            let b = self.rng.pick(&self.inputs);
            let offset = self.rng.below(4) as i64;
            let strides = self.strides(phase);
            (self.kb.load(b, offset, &strides), DType::F32)
        } else if r < 0.6 {
            let (v, d) = match self.rng.below(10) {
                0 => (self.rng.range(-3.0, 3.0).round(), DType::I32),
                1 => (self.rng.below(2) as f64, DType::Bool),
                2 => (self.rng.pick(&[f64::NAN, f64::INFINITY, 0.0, -0.0]), DType::F32),
                _ => (self.rng.range(-2.0, 2.0), DType::F32),
            };
            (self.kb.konst(v, d), d)
        } else if r < 0.7 {
            let strides: Vec<i64> = (0..nv)
                .map(|v| if v >= self.ndom() && phase != Phase::Body { 0 } else { self.rng.below(6) as i64 - 2 })
                .collect();
            let d = if self.rng.chance(0.6) { DType::F32 } else { DType::I32 };
            let m = IndexMap { offset: self.rng.below(11) as i64 - 5, strides };
            (self.kb.push(Expr::Index(m), d), d)
        } else if r < 0.8 {
            let strides: Vec<i64> = (0..nv)
                .map(|v| if v >= self.ndom() && phase != Phase::Body { 0 } else { self.rng.below(20) as i64 })
                .collect();
            let counter = IndexMap { offset: self.rng.below(100) as i64, strides };
            let key = self.rng.below(3) as u64;
            (self.kb.push(Expr::Random { key, counter }, DType::F32), DType::F32)
        } else {
            // load_if bounded on one variable; the index map is valid where
            // the bound holds and may leave the buffer elsewhere.
            let vars: Vec<usize> = (0..nv).filter(|&v| v < self.ndom() || phase == Phase::Body).collect();
            if vars.is_empty() {
                return self.leaf(phase);
            }
            let v = self.rng.pick(&vars);
            let ext =
                if v < self.ndom() { self.kb.kernel.domain[v] } else { self.kb.kernel.reduce[v - self.ndom()] } as i64;
            let lo = self.rng.below(ext as usize + 1) as i64 - 1;
            let hi = lo + self.rng.below(ext as usize + 1) as i64;
            let mut strides = self.strides(phase);
            if strides[v] == 0 {
                strides[v] = 1;
            }
            let offset = self.rng.below(3) as i64 - lo * strides[v];
            let mut bound = vec![0; nv];
            bound[v] = 1;
            let b = self.rng.pick(&self.inputs);
            let default = self.rng.range(-1.0, 1.0);
            let e = self.kb.push(
                Expr::LoadIf {
                    buffer: b,
                    index: IndexMap { offset, strides },
                    bound: IndexMap { offset: 0, strides: bound },
                    lo,
                    hi,
                    default,
                },
                DType::F32,
            );
            (e, DType::F32)
        }
    }

    /// A pool entry usable in `phase` with dtype `d`, if any.
    fn operand(&mut self, phase: Phase, d: Option<DType>) -> Option<(ExprId, DType, Phase)> {
        let ok: Vec<(ExprId, DType, Phase)> = self
            .pool
            .iter()
            .copied()
            .filter(|&(_, dt, p)| d.is_none_or(|d| d == dt) && (p == Phase::Dom || p == phase))
            .collect();
        if ok.is_empty() { None } else { Some(self.rng.pick(&ok)) }
    }

    /// An operand of dtype `d`, casting or making a leaf when needed.
    fn operand_of(&mut self, phase: Phase, d: DType) -> (ExprId, Phase) {
        if let Some((e, _, p)) = self.operand(phase, Some(d)) {
            return (e, p);
        }
        let (e, _, p) = match self.operand(phase, None) {
            Some(x) => x,
            None => {
                let leaf_phase = if phase == Phase::Post { Phase::Dom } else { phase };
                let (e, dt) = self.leaf(leaf_phase);
                (e, dt, leaf_phase)
            }
        };
        let c = self.kb.cast(e, d);
        self.pool.push((c, d, p));
        (c, p)
    }

    fn join(a: Phase, b: Phase) -> Phase {
        if a == Phase::Dom { b } else { a }
    }

    fn node(&mut self, phase: Phase) {
        let leaf_phase = if phase == Phase::Post { Phase::Dom } else { phase };
        if self.pool.is_empty() || self.rng.chance(0.25) {
            let (e, d) = self.leaf(leaf_phase);
            let p = if leaf_phase == Phase::Body && self.depends_on_reduce(e) { Phase::Body } else { Phase::Dom };
            self.pool.push((e, d, p));
            return;
        }
        let pick = self.rng.below(9);
        let (e, d, p) = match pick {
            0 | 1 => {
                let (a, pa) = self.operand_of(phase, DType::F32);
                (self.kb.un(self.rng.pick(&F_UNARY), a), DType::F32, pa)
            }
            2 | 3 => {
                let (a, pa) = self.operand_of(phase, DType::F32);
                let (b, pb) = self.operand_of(phase, DType::F32);
                (self.kb.bin(self.rng.pick(&F_BINARY), a, b), DType::F32, Self::join(pa, pb))
            }
            4 => {
                let (a, pa) = self.operand_of(phase, DType::I32);
                let op = if self.rng.chance(0.2) { self.rng.pick(&[UnaryOp::Neg, UnaryOp::Abs]) } else { UnaryOp::Neg };
                if self.rng.chance(0.3) {
                    (self.kb.un(op, a), DType::I32, pa)
                } else {
                    let (b, pb) = self.operand_of(phase, DType::I32);
                    (self.kb.bin(self.rng.pick(&I_BINARY), a, b), DType::I32, Self::join(pa, pb))
                }
            }
            5 => {
                let d = self.rng.pick(&[DType::F32, DType::F32, DType::I32, DType::Bool]);
                let (a, pa) = self.operand_of(phase, d);
                let (b, pb) = self.operand_of(phase, d);
                (self.kb.bin(self.rng.pick(&CMP), a, b), DType::Bool, Self::join(pa, pb))
            }
            6 => {
                let (a, pa) = self.operand_of(phase, DType::Bool);
                if self.rng.chance(0.3) {
                    (self.kb.un(UnaryOp::Not, a), DType::Bool, pa)
                } else {
                    let (b, pb) = self.operand_of(phase, DType::Bool);
                    let op = self.rng.pick(&[BinaryOp::And, BinaryOp::Or]);
                    (self.kb.bin(op, a, b), DType::Bool, Self::join(pa, pb))
                }
            }
            7 => {
                let d = self.rng.pick(&[DType::F32, DType::F32, DType::I32, DType::Bool]);
                let (c, pc) = self.operand_of(phase, DType::Bool);
                let (a, pa) = self.operand_of(phase, d);
                let (b, pb) = self.operand_of(phase, d);
                (self.kb.select(c, a, b), d, Self::join(pc, Self::join(pa, pb)))
            }
            _ => {
                let to = self.rng.pick(&[DType::F32, DType::I32, DType::Bool]);
                let (a, _, pa) = self.operand(phase, None).expect("pool is not empty");
                (self.kb.cast(a, to), to, pa)
            }
        };
        self.pool.push((e, d, p));
    }

    fn depends_on_reduce(&self, e: ExprId) -> bool {
        let nd = self.ndom();
        let reads = |m: &IndexMap| m.strides[nd..].iter().any(|&s| s != 0);
        match &self.kb.kernel.exprs[e.index()].expr {
            Expr::Load { index, .. } | Expr::Index(index) => reads(index),
            Expr::Random { counter, .. } => reads(counter),
            Expr::LoadIf { index, bound, .. } => reads(index) || reads(bound),
            _ => false,
        }
    }

    /// Sizes every input buffer to cover its reads.
    fn size_inputs(&mut self) {
        let k = &self.kb.kernel;
        let extents: Vec<usize> = k.domain.iter().chain(&k.reduce).copied().collect();
        let total: usize = extents.iter().product();
        let mut need = vec![1usize; self.kb.program.buffers.len()];
        let mut point = Vec::with_capacity(extents.len());
        for flat in 0..total {
            point.clear();
            super::unflatten(flat, &extents, &mut point);
            for t in &k.exprs {
                let at = |m: &IndexMap| m.offset + m.strides.iter().zip(&point).map(|(s, x)| s * x).sum::<i64>();
                match &t.expr {
                    Expr::Load { buffer, index } => {
                        need[buffer.index()] = need[buffer.index()].max(at(index) as usize + 1);
                    }
                    Expr::LoadIf { buffer, index, bound, lo, hi, .. } => {
                        let b = at(bound);
                        if *lo <= b && b < *hi {
                            need[buffer.index()] = need[buffer.index()].max(at(index) as usize + 1);
                        }
                    }
                    _ => {}
                }
            }
        }
        for &b in &self.inputs {
            self.kb.program.buffers[b.index()].ty.shape = vec![need[b.index()]];
        }
    }
}

fn random_kernel(rng: &mut Rng, index: usize) -> Kb {
    let extents = [1, 2, 3, 4, 5, 7, 8, 9, 13, 16];
    let domain: Vec<usize> = loop {
        let rank = rng.below(4);
        let d: Vec<usize> = (0..rank).map(|_| rng.pick(&extents)).collect();
        if d.iter().product::<usize>() <= 300 {
            break d;
        }
    };
    let reduce: Vec<usize> = if rng.chance(0.4) {
        loop {
            let rank = 1 + rng.below(2);
            let r: Vec<usize> = (0..rank).map(|_| rng.pick(&[1, 2, 3, 4, 5, 7, 8, 16])).collect();
            if r.iter().product::<usize>() <= 64 {
                break r;
            }
        }
    } else {
        vec![]
    };
    let mut kb = Kb::new(&domain, &reduce);
    kb.kernel.name = format!("random_{index}");
    let inputs: Vec<BufferId> = (0..1 + rng.below(3)).map(|_| kb.buffer(DType::F32, &[1])).collect();
    let mut g = Gen { rng, kb, inputs, pool: Vec::new() };
    let nodes = 1 + g.rng.below(12);
    if reduce.is_empty() {
        while g.kb.kernel.exprs.len() < nodes {
            g.node(Phase::Dom);
        }
        let (last, _, _) = *g.pool.last().unwrap();
        g.kb.output(last);
        if g.rng.chance(0.3) {
            let (e, _, _) = g.rng.pick(&g.pool);
            g.kb.output(e);
        }
    } else {
        let body = 1 + nodes * 2 / 3;
        while g.kb.kernel.exprs.len() < body {
            g.node(Phase::Body);
        }
        // Reduce the last body value that is a number.
        let (mut value, mut d, _) = *g.pool.last().unwrap();
        if d == DType::Bool {
            value = g.kb.cast(value, DType::F32);
            d = DType::F32;
        }
        let op = g.rng.pick(&[ReduceOp::Sum, ReduceOp::Max]);
        let acc = g.kb.reduce(op, value);
        // Body values cannot be used after the reduction.
        g.pool.retain(|&(_, _, p)| p == Phase::Dom);
        g.pool.push((acc, d, Phase::Post));
        let post = g.rng.below(4);
        for _ in 0..post {
            g.node(Phase::Post);
        }
        let (last, _, p) = *g.pool.last().unwrap();
        let out = if p == Phase::Body { acc } else { last };
        g.kb.output(out);
        if out != acc && g.rng.chance(0.5) {
            g.kb.output(acc);
        }
    }
    g.size_inputs();
    g.kb
}

#[test]
fn random_kernels_match_the_evaluator() {
    let mut rng = Rng::new(2024);
    let mut modes = std::collections::HashMap::new();
    for i in 0..200 {
        let kb = random_kernel(&mut rng, i);
        let inputs = random_buffers(&kb.program, &mut rng);
        let seed = rng.next_u64();
        let step = rng.below(100) as u64;
        let text = {
            let mut p = kb.program.clone();
            p.kernels.push(lpac_ir::kernel::Kernel::Loop(kb.kernel.clone()));
            lpac_ir::kernel::print::print(&p)
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_with(&kb, &inputs, seed, step)));
        match result {
            Ok(mode) => *modes.entry(mode).or_insert(0) += 1,
            Err(e) => {
                eprintln!("random kernel {i} failed:\n{text}");
                std::panic::resume_unwind(e);
            }
        }
    }
    // The generator must exercise every code shape.
    for mode in [Vectorization::Scalar, Vectorization::Domain, Vectorization::Reduce] {
        assert!(modes.get(&mode).copied().unwrap_or(0) >= 10, "{modes:?}");
    }
}
