//! Tests of the Cranelift code generator: compiled kernels against a plain
//! Rust evaluator of the kernel IR ([`eval`]), on random inputs.
//!
//! The evaluator computes `exp`, `log` and `tanh` with the generated code's
//! scalar twins ([`super::math`]), so every comparison is exact (NaN equals
//! NaN) — except where a test says otherwise. For kernels whose innermost
//! reduce axis is vectorised it sums in the generated code's documented
//! order ([`Order::Lanes`]); `reductions.rs` checks that this order agrees
//! with the sequential one to rounding.

mod errors;
mod math_accuracy;
mod ops;
mod property;
mod reductions;
mod throughput;

use lpac_ir::kernel::{BufferId, BufferKind, Expr, ExprId, IndexMap, LoopKernel, Program, Reduction, Typed};
use lpac_ir::{BinaryOp, DType, ReduceOp, TensorType, UnaryOp};

use super::{CodegenOptions, CompiledKernel, CpuCodegen, Vectorization, math};

// ---- a tiny deterministic random generator ---------------------------------

pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        lpac_ir::random::splitmix64(self.0)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

// ---- building kernels by hand -----------------------------------------------

pub(crate) struct Kb {
    pub program: Program,
    pub kernel: LoopKernel,
}

impl Kb {
    pub fn new(domain: &[usize], reduce: &[usize]) -> Self {
        Kb {
            program: Program { name: "test".into(), ..Default::default() },
            kernel: LoopKernel {
                name: "k".into(),
                domain: domain.to_vec(),
                reduce: reduce.to_vec(),
                exprs: Vec::new(),
                reduction: None,
                outputs: Vec::new(),
                nodes: Vec::new(),
            },
        }
    }

    pub fn nvars(&self) -> usize {
        self.kernel.domain.len() + self.kernel.reduce.len()
    }

    pub fn buffer(&mut self, dtype: DType, shape: &[usize]) -> BufferId {
        self.program.add_buffer(TensorType { dtype, shape: shape.to_vec() }, BufferKind::Temp)
    }

    /// An output buffer with the domain's shape.
    pub fn out_buffer(&mut self, dtype: DType) -> BufferId {
        let shape = self.kernel.domain.clone();
        self.buffer(dtype, &shape)
    }

    pub fn push(&mut self, expr: Expr, dtype: DType) -> ExprId {
        self.kernel.exprs.push(Typed { expr, dtype });
        ExprId(self.kernel.exprs.len() as u32 - 1)
    }

    pub fn map(&self, offset: i64, strides: &[i64]) -> IndexMap {
        assert_eq!(strides.len(), self.nvars(), "strides for every loop variable");
        IndexMap { offset, strides: strides.to_vec() }
    }

    /// The row-major map of the domain variables (stride 0 on reduce ones).
    pub fn domain_map(&self) -> IndexMap {
        let st = lpac_ir::types::strides(&self.kernel.domain);
        let mut strides: Vec<i64> = st.iter().map(|&s| s as i64).collect();
        strides.resize(self.nvars(), 0);
        IndexMap { offset: 0, strides }
    }

    pub fn load(&mut self, b: BufferId, offset: i64, strides: &[i64]) -> ExprId {
        let dtype = self.program.buffer(b).ty.dtype;
        let index = self.map(offset, strides);
        self.push(Expr::Load { buffer: b, index }, dtype)
    }

    pub fn konst(&mut self, v: f64, dtype: DType) -> ExprId {
        self.push(Expr::Const(v), dtype)
    }

    pub fn un(&mut self, op: UnaryOp, a: ExprId) -> ExprId {
        let d = self.kernel.exprs[a.index()].dtype;
        self.push(Expr::Unary(op, a), d)
    }

    pub fn bin(&mut self, op: BinaryOp, a: ExprId, b: ExprId) -> ExprId {
        let d = if op.is_comparison() { DType::Bool } else { self.kernel.exprs[a.index()].dtype };
        self.push(Expr::Binary(op, a, b), d)
    }

    pub fn select(&mut self, c: ExprId, a: ExprId, b: ExprId) -> ExprId {
        let d = self.kernel.exprs[a.index()].dtype;
        self.push(Expr::Select(c, a, b), d)
    }

    pub fn cast(&mut self, a: ExprId, to: DType) -> ExprId {
        self.push(Expr::Cast(a), to)
    }

    pub fn reduce(&mut self, op: ReduceOp, value: ExprId) -> ExprId {
        self.kernel.reduction = Some(Reduction { op, value });
        let d = self.kernel.exprs[value.index()].dtype;
        self.push(Expr::Accumulated, d)
    }

    pub fn output(&mut self, e: ExprId) -> BufferId {
        let d = self.kernel.exprs[e.index()].dtype;
        let b = self.out_buffer(d);
        self.kernel.outputs.push((b, e));
        b
    }
}

// ---- host buffers -------------------------------------------------------------

#[derive(Clone, Debug)]
pub(crate) enum Host {
    F(Vec<f32>),
    I(Vec<i32>),
    B(Vec<u8>),
}

impl Host {
    pub fn ptr(&mut self) -> *mut u8 {
        match self {
            Host::F(v) => v.as_mut_ptr() as *mut u8,
            Host::I(v) => v.as_mut_ptr() as *mut u8,
            Host::B(v) => v.as_mut_ptr(),
        }
    }

    fn get(&self, i: usize) -> V {
        match self {
            Host::F(v) => V::F(v[i]),
            Host::I(v) => V::I(v[i]),
            Host::B(v) => V::B(v[i] != 0),
        }
    }

    fn set(&mut self, i: usize, x: V) {
        match (self, x) {
            (Host::F(v), V::F(x)) => v[i] = x,
            (Host::I(v), V::I(x)) => v[i] = x,
            (Host::B(v), V::B(x)) => v[i] = u8::from(x),
            (h, x) => panic!("storing {x:?} into {h:?}"),
        }
    }
}

/// A random float: mostly in [-3, 3], sometimes a special value.
pub(crate) fn random_f32(rng: &mut Rng) -> f32 {
    if rng.chance(0.03) {
        rng.pick(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1e-40, -1e30, 1e30])
    } else {
        rng.range(-3.0, 3.0) as f32
    }
}

/// Random contents for every buffer (outputs too: a kernel must overwrite
/// exactly its range).
pub(crate) fn random_buffers(p: &Program, rng: &mut Rng) -> Vec<Host> {
    p.buffers
        .iter()
        .map(|b| {
            let n = b.ty.numel();
            match b.ty.dtype {
                DType::I32 => Host::I((0..n).map(|_| rng.range(-50.0, 50.0) as i32).collect()),
                DType::Bool => Host::B((0..n).map(|_| u8::from(rng.chance(0.5))).collect()),
                _ => Host::F((0..n).map(|_| random_f32(rng)).collect()),
            }
        })
        .collect()
}

// ---- the reference evaluator ------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum V {
    F(f32),
    I(i32),
    B(bool),
}

/// How sums are ordered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Order {
    /// One element at a time in row-major order (the interpreter's).
    Sequential,
    /// The vectorised reduce loop's: four lanes by innermost index mod 4,
    /// a scalar tail, then `((l0 + l1) + (l2 + l3)) + tail`.
    Lanes,
}

pub(crate) fn maximum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a > b || (a == b && b.is_sign_negative()) {
        a
    } else {
        b
    }
}

pub(crate) fn minimum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a < b || (a == b && a.is_sign_negative()) {
        a
    } else {
        b
    }
}

fn convert(c: f64, d: DType) -> V {
    match d {
        DType::I32 => V::I(c as i32),
        DType::Bool => V::B(c != 0.0),
        _ => V::F(c as f32),
    }
}

fn map_value(m: &IndexMap, point: &[i64]) -> i64 {
    m.offset + m.strides.iter().zip(point).map(|(s, x)| s * x).sum::<i64>()
}

pub(crate) struct EvalCtx<'a> {
    pub k: &'a LoopKernel,
    pub bufs: &'a [Host],
    pub seed: u64,
    pub step: u64,
    pub fma: bool,
}

impl EvalCtx<'_> {
    fn ev(&self, e: usize, point: &[i64], acc: Option<V>, memo: &mut [Option<V>]) -> V {
        if let Some(v) = memo[e] {
            return v;
        }
        let t = &self.k.exprs[e];
        let sub = |x: ExprId, memo: &mut [Option<V>]| self.ev(x.index(), point, acc, memo);
        let v = match &t.expr {
            Expr::Load { buffer, index } => self.bufs[buffer.index()].get(map_value(index, point) as usize),
            Expr::LoadIf { buffer, index, bound, lo, hi, default } => {
                let b = map_value(bound, point);
                if *lo <= b && b < *hi {
                    self.bufs[buffer.index()].get(map_value(index, point) as usize)
                } else {
                    convert(*default, t.dtype)
                }
            }
            Expr::Const(c) => convert(*c, t.dtype),
            Expr::Index(m) => {
                let x = map_value(m, point);
                match t.dtype {
                    DType::I32 => V::I(x as i32),
                    DType::Bool => V::B(x != 0),
                    _ => V::F(x as f32),
                }
            }
            Expr::Random { key, counter } => {
                let k = lpac_ir::random::dropout_key(self.seed, self.step, *key);
                V::F(lpac_ir::random::uniform_f32(k, map_value(counter, point) as u64))
            }
            Expr::Unary(op, a) => {
                let x = sub(*a, memo);
                match (x, op) {
                    (V::F(x), _) => V::F(match op {
                        UnaryOp::Neg => -x,
                        UnaryOp::Exp => math::exp_ref(x, self.fma),
                        UnaryOp::Log => math::log_ref(x, self.fma),
                        UnaryOp::Sqrt => x.sqrt(),
                        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
                        UnaryOp::Recip => 1.0 / x,
                        UnaryOp::Tanh => math::tanh_ref(x, self.fma),
                        UnaryOp::Sin => x.sin(),
                        UnaryOp::Cos => x.cos(),
                        UnaryOp::Abs => x.abs(),
                        UnaryOp::Not => unreachable!(),
                    }),
                    (V::I(x), UnaryOp::Neg) => V::I(x.wrapping_neg()),
                    (V::I(x), UnaryOp::Abs) => V::I(x.wrapping_abs()),
                    (V::B(x), UnaryOp::Not) => V::B(!x),
                    other => panic!("bad unary {other:?}"),
                }
            }
            Expr::Binary(op, a, b) => {
                let (x, y) = (sub(*a, memo), sub(*b, memo));
                if op.is_comparison() {
                    fn cmp<T: PartialOrd>(op: BinaryOp, a: T, b: T) -> bool {
                        match op {
                            BinaryOp::Lt => a < b,
                            BinaryOp::Le => a <= b,
                            BinaryOp::Gt => a > b,
                            BinaryOp::Ge => a >= b,
                            BinaryOp::Eq => a == b,
                            _ => a != b,
                        }
                    }
                    V::B(match (x, y) {
                        (V::F(a), V::F(b)) => cmp(*op, a, b),
                        (V::I(a), V::I(b)) => cmp(*op, a, b),
                        (V::B(a), V::B(b)) => cmp(*op, a, b),
                        other => panic!("bad comparison {other:?}"),
                    })
                } else {
                    match (x, y) {
                        (V::F(a), V::F(b)) => V::F(match op {
                            BinaryOp::Add => a + b,
                            BinaryOp::Sub => a - b,
                            BinaryOp::Mul => a * b,
                            BinaryOp::Div => a / b,
                            BinaryOp::Max => maximum(a, b),
                            BinaryOp::Min => minimum(a, b),
                            BinaryOp::Pow => a.powf(b),
                            _ => panic!("bad f32 op {op:?}"),
                        }),
                        (V::I(a), V::I(b)) => V::I(match op {
                            BinaryOp::Add => a.wrapping_add(b),
                            BinaryOp::Sub => a.wrapping_sub(b),
                            BinaryOp::Mul => a.wrapping_mul(b),
                            BinaryOp::Div => {
                                if b == 0 {
                                    0
                                } else {
                                    a.wrapping_div(b)
                                }
                            }
                            BinaryOp::Max => a.max(b),
                            BinaryOp::Min => a.min(b),
                            _ => panic!("bad i32 op {op:?}"),
                        }),
                        (V::B(a), V::B(b)) => V::B(match op {
                            BinaryOp::And => a && b,
                            BinaryOp::Or => a || b,
                            _ => panic!("bad bool op {op:?}"),
                        }),
                        other => panic!("bad binary {other:?}"),
                    }
                }
            }
            Expr::Select(c, a, b) => match sub(*c, memo) {
                V::B(true) => sub(*a, memo),
                V::B(false) => sub(*b, memo),
                other => panic!("bad condition {other:?}"),
            },
            Expr::Cast(a) => match (sub(*a, memo), t.dtype) {
                (V::F(x), DType::I32) => V::I(x as i32),
                (V::F(x), DType::Bool) => V::B(x != 0.0),
                (V::I(x), DType::F32) => V::F(x as f32),
                (V::I(x), DType::Bool) => V::B(x != 0),
                (V::B(x), DType::F32) => V::F(f32::from(u8::from(x))),
                (V::B(x), DType::I32) => V::I(i32::from(x)),
                (x, _) => x,
            },
            Expr::Accumulated => acc.expect("acc outside a reduction"),
        };
        memo[e] = Some(v);
        v
    }
}

fn reduce_op(op: ReduceOp, a: V, v: V) -> V {
    match (op, a, v) {
        (ReduceOp::Sum, V::F(a), V::F(v)) => V::F(a + v),
        (ReduceOp::Max, V::F(a), V::F(v)) => V::F(maximum(a, v)),
        (ReduceOp::Sum, V::I(a), V::I(v)) => V::I(a.wrapping_add(v)),
        (ReduceOp::Max, V::I(a), V::I(v)) => V::I(a.max(v)),
        other => panic!("bad reduction {other:?}"),
    }
}

fn identity(op: ReduceOp, d: DType) -> V {
    match (op, d) {
        (ReduceOp::Sum, DType::I32) => V::I(0),
        (ReduceOp::Max, DType::I32) => V::I(i32::MIN),
        (ReduceOp::Sum, _) => V::F(0.0),
        (ReduceOp::Max, _) => V::F(f32::NEG_INFINITY),
    }
}

fn unflatten(mut flat: usize, shape: &[usize], out: &mut Vec<i64>) {
    let start = out.len();
    for &d in shape.iter().rev() {
        out.push((flat % d) as i64);
        flat /= d;
    }
    out[start..].reverse();
}

/// Runs the kernel's semantics over flat domain indices `begin..end`,
/// writing the outputs into `bufs`.
#[allow(clippy::too_many_arguments)]
/// The generated code's summation order for the reduce values `values`
/// (row-major over `dims`): each iteration of an outer reduce loop sums into
/// fresh accumulators that are then folded into its parent's, lane by lane;
/// the innermost loop sums each full chunk of `SUM_CHUNK` (when longer than
/// that) into fresh ones folded likewise, and the rest — four lanes by index
/// mod 4 up to the last multiple of 4 (with `Order::Lanes`), then a scalar
/// tail — straight into its own.
fn sum_group(values: &[V], dims: &[usize], op: ReduceOp, d: DType, order: Order) -> ([V; 4], V) {
    let fold = |into: &mut ([V; 4], V), from: ([V; 4], V)| {
        for (a, b) in into.0.iter_mut().zip(from.0) {
            *a = reduce_op(op, *a, b);
        }
        into.1 = reduce_op(op, into.1, from.1);
    };
    let mut group = ([identity(op, d); 4], identity(op, d));
    if dims.len() > 1 {
        let inner: usize = dims[1..].iter().product();
        for i in 0..dims[0] {
            fold(&mut group, sum_group(&values[i * inner..(i + 1) * inner], &dims[1..], op, d, order));
        }
        return group;
    }
    let extent = dims.first().copied().unwrap_or(values.len());
    let chunk = crate::codegen::emit::SUM_CHUNK as usize;
    let full = if extent > chunk { extent / chunk } else { 0 };
    let add = |g: &mut ([V; 4], V), i: usize, vec_end: usize| {
        if order == Order::Lanes && i < vec_end {
            g.0[i % 4] = reduce_op(op, g.0[i % 4], values[i]);
        } else {
            g.1 = reduce_op(op, g.1, values[i]);
        }
    };
    for c in 0..full {
        let mut fresh = ([identity(op, d); 4], identity(op, d));
        for i in c * chunk..(c + 1) * chunk {
            add(&mut fresh, i, extent);
        }
        fold(&mut group, fresh);
    }
    for i in full * chunk..extent {
        add(&mut group, i, extent - extent % 4);
    }
    group
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn eval(
    k: &LoopKernel,
    bufs: &mut [Host],
    begin: usize,
    end: usize,
    seed: u64,
    step: u64,
    fma: bool,
    order: Order,
) {
    let red_total: usize = k.reduce.iter().product();
    let mut results = Vec::new();
    for flat in begin..end {
        let ctx = EvalCtx { k, bufs, seed, step, fma };
        let mut point = Vec::new();
        unflatten(flat, &k.domain, &mut point);
        let acc = k.reduction.as_ref().map(|r| {
            let d = k.exprs[r.value.index()].dtype;
            let values: Vec<V> = (0..red_total)
                .map(|ri| {
                    let mut p = point.clone();
                    unflatten(ri, &k.reduce, &mut p);
                    let mut memo = vec![None; k.exprs.len()];
                    ctx.ev(r.value.index(), &p, None, &mut memo)
                })
                .collect();
            let (lanes, acc) = sum_group(&values, &k.reduce, r.op, d, order);
            if order == Order::Lanes {
                let h = reduce_op(r.op, reduce_op(r.op, lanes[0], lanes[1]), reduce_op(r.op, lanes[2], lanes[3]));
                reduce_op(r.op, h, acc)
            } else {
                acc
            }
        });
        let mut full = point.clone();
        full.resize(k.domain.len() + k.reduce.len(), 0);
        let mut memo = vec![None; k.exprs.len()];
        for (b, e) in &k.outputs {
            results.push((*b, flat, ctx.ev(e.index(), &full, acc, &mut memo)));
        }
    }
    for (b, i, v) in results {
        bufs[b.index()].set(i, v);
    }
}

// ---- running and comparing ------------------------------------------------------

pub(crate) fn codegen(vectorize: bool) -> CpuCodegen {
    CpuCodegen::with_options(CodegenOptions { vectorize, ..Default::default() }).expect("a code generator for the host")
}

pub(crate) fn run_kernel(c: &CompiledKernel, bufs: &mut [Host], begin: usize, end: usize, seed: u64, step: u64) {
    let ptrs: Vec<*mut u8> = bufs.iter_mut().map(|b| b.ptr()).collect();
    // SAFETY: one buffer per program buffer, sized by its type; the range
    // lies within the domain.
    unsafe { c.call(&ptrs, begin as u64, end as u64, seed, step) };
}

pub(crate) fn same_f32(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

/// Asserts two sets of buffers are equal (NaN equals NaN).
pub(crate) fn assert_same(got: &[Host], want: &[Host], what: &str) {
    for (bi, (g, w)) in got.iter().zip(want).enumerate() {
        match (g, w) {
            (Host::F(g), Host::F(w)) => {
                for (i, (a, b)) in g.iter().zip(w).enumerate() {
                    assert!(
                        same_f32(*a, *b),
                        "{what}: b{bi}[{i}] = {a:e} ({:#x}), expected {b:e} ({:#x})",
                        a.to_bits(),
                        b.to_bits()
                    );
                }
            }
            (Host::I(g), Host::I(w)) => assert_eq!(g, w, "{what}: b{bi}"),
            (Host::B(g), Host::B(w)) => assert_eq!(g, w, "{what}: b{bi}"),
            _ => panic!("{what}: buffer kinds differ"),
        }
    }
}

/// Compiles `kb`'s kernel (vectorised if possible, and scalar), runs it on
/// `inputs` over the whole domain and over two split ranges, and compares
/// everything with the evaluator. Returns the vectorised kernel's mode.
pub(crate) fn check_with(kb: &Kb, inputs: &[Host], seed: u64, step: u64) -> Vectorization {
    let total: usize = kb.kernel.domain.iter().product();
    let mut mode = Vectorization::Scalar;
    for vectorize in [true, false] {
        let mut cg = codegen(vectorize);
        let fma = cg.uses_fma();
        let c = cg.compile(&kb.program, &kb.kernel).unwrap_or_else(|e| panic!("{e}"));
        if vectorize {
            mode = c.vectorization;
        } else {
            assert_eq!(c.vectorization, Vectorization::Scalar);
        }
        let order = if c.vectorization == Vectorization::Reduce { Order::Lanes } else { Order::Sequential };
        // The summation order follows the loops of the simplified axes.
        let reference = crate::codegen::axes::simplify(&kb.kernel);
        let mut want = inputs.to_vec();
        eval(&reference, &mut want, 0, total, seed, step, fma, order);
        let mut got = inputs.to_vec();
        run_kernel(&c, &mut got, 0, total, seed, step);
        let what = format!("{} (vectorize={vectorize}, {:?})\n{}", kb.kernel.name, c.vectorization, c.clif);
        assert_same(&got, &want, &what);
        // Split ranges: [0, s) then [s, total) gives the same buffers, and a
        // partial range writes only its elements.
        for s in [1, total / 2, total.saturating_sub(3)] {
            if s == 0 || s >= total {
                continue;
            }
            let mut split = inputs.to_vec();
            run_kernel(&c, &mut split, 0, s, seed, step);
            let mut part = inputs.to_vec();
            eval(&reference, &mut part, 0, s, seed, step, fma, order);
            assert_same(&split, &part, &format!("{what}\nrange 0..{s}"));
            run_kernel(&c, &mut split, s, total, seed, step);
            assert_same(&split, &want, &format!("{what}\nranges 0..{s}, {s}..{total}"));
        }
    }
    mode
}

pub(crate) fn check(kb: &Kb, rng: &mut Rng) -> Vectorization {
    let inputs = random_buffers(&kb.program, rng);
    check_with(kb, &inputs, 1234, 7)
}
