//! Builds the CLIF of one loop kernel (see the module docs of `codegen` for
//! the code shape).

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I8, I32, I32X4, I64};
use cranelift_codegen::ir::{ConstantData, FuncRef, Function, InstBuilder, MemFlagsData, Type, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_jit::JITModule;
use cranelift_module::Module;
use lpac_ir::kernel::{BufferId, Expr, ExprId, IndexMap, LoopKernel, Program};
use lpac_ir::{BinaryOp, DType, ReduceOp, UnaryOp};

use super::analysis::{Analysis, Place, Vectorization, elem_size};

/// Innermost reduce indices summed into one fresh accumulator before it is
/// folded into the running one (see `reduce_nest`); a multiple of 4.
pub(crate) const SUM_CHUNK: i64 = 1024;
use super::math::{MathFn, VecMath};
use super::{CodegenError, CodegenErrorKind, HelperIds};

#[derive(Clone, Copy)]
pub(crate) struct EmitConfig {
    pub helpers: HelperIds,
    pub use_fma: bool,
    pub ptr_ty: Type,
    pub frontend: TargetFrontendConfig,
}

type R<T> = Result<T, CodegenError>;

/// A computed expression: a scalar, or (inside the vector region) an f32x4 /
/// i32x4 / bool-mask vector.
#[derive(Clone, Copy, Debug)]
struct Val {
    v: Value,
    vec: bool,
}

#[derive(Default)]
struct FuncRefs {
    dropout_key: Option<FuncRef>,
    uniform: Option<FuncRef>,
    sin: Option<FuncRef>,
    cos: Option<FuncRef>,
    pow: Option<FuncRef>,
}

fn flags() -> MemFlagsData {
    // Not `aligned`: vector accesses are only 4-byte aligned.
    MemFlagsData::new().with_notrap()
}

/// The CLIF type of a value of `d`: bools are `i8` 0/1 as scalars and
/// all-ones/all-zeros `i32x4` masks as vectors.
fn cl_type(d: DType, vec: bool) -> Type {
    match (d, vec) {
        (DType::F32, false) => F32,
        (DType::F32, true) => F32X4,
        (DType::Bool, false) => I8,
        (_, false) => I32,
        (_, true) => I32X4,
    }
}

pub(crate) fn emit_function(
    module: &mut JITModule,
    func: &mut Function,
    fctx: &mut FunctionBuilderContext,
    cfg: EmitConfig,
    program: &Program,
    kernel: &LoopKernel,
    an: &Analysis,
) -> R<()> {
    // Helpers are declared in a fixed order, only when used.
    let mut refs = FuncRefs::default();
    let used = |f: &dyn Fn(&Expr) -> bool| kernel.exprs.iter().enumerate().any(|(i, t)| an.needed[i] && f(&t.expr));
    if used(&|e| matches!(e, Expr::Random { .. })) {
        refs.dropout_key = Some(module.declare_func_in_func(cfg.helpers.dropout_key, func));
        refs.uniform = Some(module.declare_func_in_func(cfg.helpers.uniform, func));
    }
    if used(&|e| matches!(e, Expr::Unary(UnaryOp::Sin, _))) {
        refs.sin = Some(module.declare_func_in_func(cfg.helpers.sin, func));
    }
    if used(&|e| matches!(e, Expr::Unary(UnaryOp::Cos, _))) {
        refs.cos = Some(module.declare_func_in_func(cfg.helpers.cos, func));
    }
    if used(&|e| matches!(e, Expr::Binary(BinaryOp::Pow, _, _))) {
        refs.pow = Some(module.declare_func_in_func(cfg.helpers.pow, func));
    }
    let n = kernel.exprs.len();
    let nvars = an.nvars();
    let b = FunctionBuilder::new(func, fctx);
    let mut em = Em {
        b,
        k: kernel,
        prog: program,
        an,
        cfg,
        refs,
        bases: vec![None; program.buffers.len()],
        keys: Vec::new(),
        vars: vec![None; nvars],
        vals: vec![None; n],
        vec_region: false,
        acc: None,
    };
    em.function()?;
    let Em { b, .. } = em;
    b.finalize(cfg.frontend);
    Ok(())
}

struct Em<'a> {
    b: FunctionBuilder<'a>,
    k: &'a LoopKernel,
    prog: &'a Program,
    an: &'a Analysis,
    cfg: EmitConfig,
    refs: FuncRefs,
    /// Base address of each used buffer (loaded in the entry block).
    bases: Vec<Option<Value>>,
    /// The stream key of each `random` key (computed in the entry block).
    keys: Vec<(u64, Value)>,
    /// Loop variables in scope (i64); inside the vector region the vector
    /// variable holds lane 0's value.
    vars: Vec<Option<Value>>,
    vals: Vec<Option<Val>>,
    vec_region: bool,
    acc: Option<Val>,
}

impl<'a> Em<'a> {
    fn internal(&self, m: impl Into<String>) -> CodegenError {
        CodegenError::new(&self.k.name, CodegenErrorKind::Backend, format!("internal: {}", m.into()))
    }

    fn function(&mut self) -> R<()> {
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        let params = self.b.block_params(entry).to_vec();
        let (bufs, begin, end, seed, step) = (params[0], params[1], params[2], params[3], params[4]);

        // Buffer base addresses.
        let mut used = vec![false; self.prog.buffers.len()];
        for (i, t) in self.k.exprs.iter().enumerate() {
            if let Expr::Load { buffer, .. } | Expr::LoadIf { buffer, .. } = &t.expr
                && self.an.needed[i]
            {
                used[buffer.index()] = true;
            }
        }
        for (buf, _) in &self.k.outputs {
            used[buf.index()] = true;
        }
        let ptr_bytes = self.cfg.ptr_ty.bytes() as i64;
        for (i, _) in used.iter().enumerate().filter(|(_, u)| **u) {
            let offset = i32::try_from(i as i64 * ptr_bytes).map_err(|_| self.internal("too many buffers"))?;
            let base = self.b.ins().load(self.cfg.ptr_ty, flags(), bufs, offset);
            self.bases[i] = Some(base);
        }

        // Random stream keys, once a call.
        for (i, t) in self.k.exprs.iter().enumerate() {
            if let Expr::Random { key, .. } = &t.expr
                && self.an.needed[i]
                && !self.keys.iter().any(|(k, _)| k == key)
            {
                let f = self.refs.dropout_key.ok_or_else(|| self.internal("dropout_key not declared"))?;
                let kv = self.b.ins().iconst(I64, *key as i64);
                let call = self.b.ins().call(f, &[seed, step, kv]);
                let v = self.b.inst_results(call)[0];
                self.keys.push((*key, v));
            }
        }

        self.compute_place(Place::Entry)?;
        let exit = self.b.create_block();
        if self.an.total == 0 {
            self.b.ins().jump(exit, &[]);
        } else {
            self.rows(begin, end, exit)?;
        }
        self.b.switch_to_block(exit);
        self.b.ins().return_(&[]);
        self.b.seal_all_blocks();
        Ok(())
    }

    /// The loop over domain rows of `begin..end`.
    fn rows(&mut self, begin: Value, end: Value, exit: cranelift_codegen::ir::Block) -> R<()> {
        // A range past the domain is cut to it (never written out of bounds).
        let total = self.b.ins().iconst(I64, self.an.total as i64);
        let end = self.b.ins().umin(end, total);
        let flat_var = self.b.declare_var(I64);
        self.b.def_var(flat_var, begin);
        let row_block = self.b.create_block();
        let nonempty = self.b.ins().icmp(IntCC::UnsignedLessThan, begin, end);
        self.b.ins().brif(nonempty, row_block, &[], exit, &[]);

        self.b.switch_to_block(row_block);
        let flat = self.b.use_var(flat_var);
        let inner = self.b.ins().iconst(I64, self.an.inner as i64);
        let row = self.b.ins().udiv(flat, inner);
        let row_base = self.b.ins().imul(row, inner);
        let col = self.b.ins().isub(flat, row_base);
        let left_in_row = self.b.ins().isub(inner, col);
        let left = self.b.ins().isub(end, flat);
        let count = self.b.ins().smin(left_in_row, left);
        let jend = self.b.ins().iadd(col, count);

        // Outer domain coordinates, once a row.
        let ndom = self.an.ndom;
        if ndom >= 2 {
            let mut rest = row;
            for a in (1..ndom - 1).rev() {
                let d = self.b.ins().iconst(I64, self.k.domain[a] as i64);
                self.vars[a] = Some(self.b.ins().urem(rest, d));
                rest = self.b.ins().udiv(rest, d);
            }
            self.vars[0] = Some(rest);
        }
        let saved = self.vals.clone();
        self.compute_place(Place::Row)?;

        let j = self.b.declare_var(I64);
        self.b.def_var(j, col);
        if self.an.mode == Vectorization::Domain {
            self.counted_loop(j, jend, 4, &mut |s, jv| s.element(jv, row_base, true))?;
        }
        self.counted_loop(j, jend, 1, &mut |s, jv| s.element(jv, row_base, false))?;

        self.vals = saved;
        for v in self.vars.iter_mut() {
            *v = None;
        }
        let next = self.b.ins().iadd(flat, count);
        self.b.def_var(flat_var, next);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, next, end);
        self.b.ins().brif(more, row_block, &[], exit, &[]);
        Ok(())
    }

    /// `while var + step <= end { body(var); var += step }`, with `var`
    /// already defined; on exit `var` holds the first value not run.
    fn counted_loop(
        &mut self,
        var: Variable,
        end: Value,
        step: i64,
        body: &mut dyn FnMut(&mut Self, Value) -> R<()>,
    ) -> R<()> {
        let body_block = self.b.create_block();
        let exit = self.b.create_block();
        let start = self.b.use_var(var);
        let first_end = self.b.ins().iadd_imm_s(start, step);
        let go = self.b.ins().icmp(IntCC::SignedLessThanOrEqual, first_end, end);
        self.b.ins().brif(go, body_block, &[], exit, &[]);
        self.b.switch_to_block(body_block);
        let i = self.b.use_var(var);
        body(self, i)?;
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.def_var(var, next);
        let next_end = self.b.ins().iadd_imm_s(next, step);
        let again = self.b.ins().icmp(IntCC::SignedLessThanOrEqual, next_end, end);
        self.b.ins().brif(again, body_block, &[], exit, &[]);
        self.b.switch_to_block(exit);
        Ok(())
    }

    /// One output element (four with `vec`) at innermost coordinate `j`.
    fn element(&mut self, j: Value, row_base: Value, vec: bool) -> R<()> {
        if self.an.ndom > 0 {
            self.vars[self.an.ndom - 1] = Some(j);
        }
        let saved = self.vals.clone();
        self.vec_region = vec;
        self.compute_place(Place::Elem)?;
        if self.k.reduction.is_some() {
            self.reduction()?;
            self.compute_place(Place::Post)?;
        }
        let flat = self.b.ins().iadd(row_base, j);
        let mut stores = Vec::with_capacity(self.k.outputs.len());
        for &(buf, e) in &self.k.outputs {
            let d = self.k.exprs[e.index()].dtype;
            let v = self.operand(e.index(), vec)?;
            stores.push((buf, v, d));
        }
        for (buf, v, d) in stores {
            self.store(buf, v, d, flat, vec)?;
        }
        self.vec_region = false;
        self.vals = saved;
        self.acc = None;
        Ok(())
    }

    fn compute_place(&mut self, p: Place) -> R<()> {
        for i in 0..self.k.exprs.len() {
            if self.an.needed[i] && self.an.place[i] == p && self.vals[i].is_none() {
                let v = self.expr(i)?;
                self.vals[i] = Some(v);
            }
        }
        Ok(())
    }

    // ---- reductions -------------------------------------------------------

    fn reduction(&mut self) -> R<()> {
        let r = self.k.reduction.as_ref().ok_or_else(|| self.internal("no reduction"))?;
        let (op, value) = (r.op, r.value.index());
        let d = self.k.exprs[value].dtype;
        if self.an.mode == Vectorization::Reduce {
            let vacc = self.b.declare_var(cl_type(d, true));
            let init = self.identity(op, d);
            let init_v = self.splat(init, d);
            self.b.def_var(vacc, init_v);
            let sacc = self.b.declare_var(cl_type(d, false));
            self.b.def_var(sacc, init);
            self.reduce_nest(0, op, value, d, Some(vacc), sacc)?;
            let v = self.b.use_var(vacc);
            let lanes: Vec<Value> = (0..4u8).map(|l| self.b.ins().extractlane(v, l)).collect();
            let h01 = self.combine(op, d, lanes[0], lanes[1]);
            let h23 = self.combine(op, d, lanes[2], lanes[3]);
            let h = self.combine(op, d, h01, h23);
            let s = self.b.use_var(sacc);
            let total = self.combine(op, d, h, s);
            self.acc = Some(Val { v: total, vec: false });
        } else {
            let vec = self.vec_region;
            let acc = self.b.declare_var(cl_type(d, vec));
            let init = self.identity(op, d);
            let init = if vec { self.splat(init, d) } else { init };
            self.b.def_var(acc, init);
            self.reduce_nest(0, op, value, d, None, acc)?;
            let v = self.b.use_var(acc);
            self.acc = Some(Val { v, vec });
        }
        Ok(())
    }

    fn identity(&mut self, op: ReduceOp, d: DType) -> Value {
        match (op, d) {
            (ReduceOp::Sum, DType::F32) => self.b.ins().f32const(0.0f32),
            (ReduceOp::Max, DType::F32) => self.b.ins().f32const(f32::NEG_INFINITY),
            (ReduceOp::Sum, _) => self.b.ins().iconst(I32, 0),
            (ReduceOp::Max, _) => self.b.ins().iconst(I32, i32::MIN as u32 as i64),
        }
    }

    fn combine(&mut self, op: ReduceOp, d: DType, a: Value, v: Value) -> Value {
        match (op, d) {
            (ReduceOp::Sum, DType::F32) => self.b.ins().fadd(a, v),
            (ReduceOp::Max, DType::F32) => self.b.ins().fmax(a, v),
            (ReduceOp::Sum, _) => self.b.ins().iadd(a, v),
            (ReduceOp::Max, _) => self.b.ins().smax(a, v),
        }
    }

    /// Reduce loop `level` and those inside it. With `vacc`, the innermost
    /// loop runs four lanes into `vacc` and a scalar tail into `acc`.
    ///
    /// One accumulator taking millions of values loses precision (each
    /// addition rounds against a growing total: a 3M-term f32 sum was off by
    /// 1e-3). So every iteration of an outer reduce loop, and every
    /// [`SUM_CHUNK`] indices of the innermost, sum into fresh accumulators
    /// that are then folded into the caller's.
    fn reduce_nest(
        &mut self,
        level: usize,
        op: ReduceOp,
        value: usize,
        d: DType,
        vacc: Option<Variable>,
        acc: Variable,
    ) -> R<()> {
        let var = self.an.ndom + level;
        let extent = self.k.reduce[level] as i64;
        let acc_vec = vacc.is_none() && self.vec_region;
        let rv = self.b.declare_var(I64);
        let zero = self.b.ins().iconst(I64, 0);
        self.b.def_var(rv, zero);
        let end = self.b.ins().iconst(I64, extent);
        if level + 1 < self.an.nred {
            self.counted_loop(rv, end, 1, &mut |s, r| {
                s.vars[var] = Some(r);
                let saved = s.vals.clone();
                s.compute_place(Place::Reduce(level))?;
                let (fv, fa) = s.fresh_accumulators(op, d, vacc.is_some(), acc_vec);
                s.reduce_nest(level + 1, op, value, d, fv, fa)?;
                s.fold_accumulators(op, d, (fv, fa), (vacc, acc));
                s.vals = saved;
                Ok(())
            })?;
        } else {
            if extent > SUM_CHUNK {
                let chunk = self.b.declare_var(I64);
                self.b.def_var(chunk, zero);
                self.counted_loop(chunk, end, SUM_CHUNK, &mut |s, c| {
                    let (fv, fa) = s.fresh_accumulators(op, d, vacc.is_some(), acc_vec);
                    s.b.def_var(rv, c);
                    let chunk_end = s.b.ins().iadd_imm_s(c, SUM_CHUNK);
                    s.innermost(level, rv, chunk_end, op, value, d, fv, fa)?;
                    s.fold_accumulators(op, d, (fv, fa), (vacc, acc));
                    Ok(())
                })?;
                // The last, shorter chunk goes straight into the caller's.
                let tail = self.b.use_var(chunk);
                self.b.def_var(rv, tail);
            }
            self.innermost(level, rv, end, op, value, d, vacc, acc)?;
        }
        self.vars[var] = None;
        Ok(())
    }

    /// The innermost reduce loop from `rv` below `end`: four lanes at a time
    /// into `vacc` when given, the rest one at a time into `acc`.
    #[allow(clippy::too_many_arguments)]
    fn innermost(
        &mut self,
        level: usize,
        rv: Variable,
        end: Value,
        op: ReduceOp,
        value: usize,
        d: DType,
        vacc: Option<Variable>,
        acc: Variable,
    ) -> R<()> {
        let var = self.an.ndom + level;
        if let Some(vacc) = vacc {
            self.counted_loop(rv, end, 4, &mut |s, r| {
                s.vars[var] = Some(r);
                let saved = s.vals.clone();
                s.vec_region = true;
                s.compute_place(Place::Reduce(level))?;
                let v = s.operand(value, true)?;
                let a = s.b.use_var(vacc);
                let a = s.combine(op, d, a, v);
                s.b.def_var(vacc, a);
                s.vec_region = false;
                s.vals = saved;
                Ok(())
            })?;
        }
        self.counted_loop(rv, end, 1, &mut |s, r| {
            s.vars[var] = Some(r);
            let saved = s.vals.clone();
            s.compute_place(Place::Reduce(level))?;
            let vec = s.vec_region;
            let v = s.operand(value, vec)?;
            let a = s.b.use_var(acc);
            let a = s.combine(op, d, a, v);
            s.b.def_var(acc, a);
            s.vals = saved;
            Ok(())
        })
    }

    /// New accumulators holding the identity of `op`: a four-lane one when
    /// `lanes`, and one scalar (or vector, `acc_vec`) one.
    fn fresh_accumulators(
        &mut self,
        op: ReduceOp,
        d: DType,
        lanes: bool,
        acc_vec: bool,
    ) -> (Option<Variable>, Variable) {
        let init = self.identity(op, d);
        let vacc = lanes.then(|| {
            let v = self.b.declare_var(cl_type(d, true));
            let splat = self.splat(init, d);
            self.b.def_var(v, splat);
            v
        });
        let acc = self.b.declare_var(cl_type(d, acc_vec));
        let init = if acc_vec { self.splat(init, d) } else { init };
        self.b.def_var(acc, init);
        (vacc, acc)
    }

    /// `into ⊕= from`, accumulator by accumulator.
    fn fold_accumulators(
        &mut self,
        op: ReduceOp,
        d: DType,
        from: (Option<Variable>, Variable),
        into: (Option<Variable>, Variable),
    ) {
        if let (Some(f), Some(i)) = (from.0, into.0) {
            let (a, b) = (self.b.use_var(i), self.b.use_var(f));
            let c = self.combine(op, d, a, b);
            self.b.def_var(i, c);
        }
        let (a, b) = (self.b.use_var(into.1), self.b.use_var(from.1));
        let c = self.combine(op, d, a, b);
        self.b.def_var(into.1, c);
    }

    // ---- expressions ------------------------------------------------------

    /// The value of expression `i`, as a vector when `vec` (splatting a
    /// scalar computed outside the vector loop).
    fn operand(&mut self, i: usize, vec: bool) -> R<Value> {
        let Some(v) = self.vals[i] else {
            return Err(self.internal(format!("e{i} used before it is computed")));
        };
        match (v.vec, vec) {
            (false, true) => Ok(self.splat(v.v, self.k.exprs[i].dtype)),
            (true, false) => Err(self.internal(format!("vector e{i} used as a scalar"))),
            _ => Ok(v.v),
        }
    }

    fn splat(&mut self, v: Value, d: DType) -> Value {
        match d {
            DType::F32 => self.b.ins().splat(F32X4, v),
            DType::Bool => {
                let w = self.b.ins().uextend(I32, v);
                let m = self.b.ins().ineg(w);
                self.b.ins().splat(I32X4, m)
            }
            _ => self.b.ins().splat(I32X4, v),
        }
    }

    /// Lane `l` of a vector as a scalar of `d`.
    fn extract(&mut self, v: Value, d: DType, l: u8) -> Value {
        let x = self.b.ins().extractlane(v, l);
        if d == DType::Bool { self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0) } else { x }
    }

    /// A vector from four scalars of `d`.
    fn build(&mut self, d: DType, lanes: [Value; 4]) -> Value {
        let lanes = if d == DType::Bool {
            lanes.map(|x| {
                let w = self.b.ins().uextend(I32, x);
                self.b.ins().ineg(w)
            })
        } else {
            lanes
        };
        let mut v = self.b.ins().splat(cl_type(d, true), lanes[0]);
        for (l, &x) in lanes.iter().enumerate().skip(1) {
            v = self.b.ins().insertlane(v, x, l as u8);
        }
        v
    }

    fn lanewise(&mut self, d: DType, f: &mut dyn FnMut(&mut Self, u8) -> R<Value>) -> R<Value> {
        let mut lanes = [Value::from_u32(0); 4];
        for (l, slot) in lanes.iter_mut().enumerate() {
            *slot = f(self, l as u8)?;
        }
        Ok(self.build(d, lanes))
    }

    fn expr(&mut self, i: usize) -> R<Val> {
        let t = &self.k.exprs[i];
        let d = t.dtype;
        let vec = self.vec_region && self.an.vecdep[i];
        let v = match &t.expr {
            Expr::Load { buffer, index } => self.load(*buffer, index, d, vec)?,
            Expr::LoadIf { buffer, index, bound, lo, hi, default } => {
                let (buffer, lo, hi, default) = (*buffer, *lo, *hi, *default);
                if vec {
                    self.lanewise(d, &mut |s, l| s.load_if(i, buffer, index, bound, lo, hi, default, d, l))?
                } else {
                    self.load_if(i, buffer, index, bound, lo, hi, default, d, 0)?
                }
            }
            Expr::Const(c) => {
                let s = self.constant(*c, d);
                if vec { self.splat(s, d) } else { s }
            }
            Expr::Index(map) => {
                if vec && self.an.fits_i32[i] {
                    self.index_ramp(map, d)?
                } else if vec {
                    self.lanewise(d, &mut |s, l| s.index_scalar(map, d, l))?
                } else {
                    self.index_scalar(map, d, 0)?
                }
            }
            Expr::Random { key, counter } => {
                let key = *key;
                if vec {
                    self.lanewise(d, &mut |s, l| s.random(key, counter, l))?
                } else {
                    self.random(key, counter, 0)?
                }
            }
            Expr::Unary(op, a) => {
                let ta = self.k.exprs[a.index()].dtype;
                let av = self.operand(a.index(), vec)?;
                self.unary(*op, ta, av, vec)?
            }
            Expr::Binary(op, a, b) => {
                let ta = self.k.exprs[a.index()].dtype;
                let av = self.operand(a.index(), vec)?;
                let bv = self.operand(b.index(), vec)?;
                match self.clamp_by_constant(*op, ta, *a, *b) {
                    Some((x, cc)) => {
                        let (xv, cv) = if x == *a { (av, bv) } else { (bv, av) };
                        let keep = self.b.ins().fcmp(cc, xv, cv);
                        self.select_values(keep, xv, cv, DType::F32, vec)
                    }
                    None => self.binary(*op, ta, av, bv, vec)?,
                }
            }
            Expr::Select(c, a, b) => {
                let cv = self.operand(c.index(), vec)?;
                let av = self.operand(a.index(), vec)?;
                let bv = self.operand(b.index(), vec)?;
                self.select_values(cv, av, bv, d, vec)
            }
            Expr::Cast(a) => {
                let ta = self.k.exprs[a.index()].dtype;
                let av = self.operand(a.index(), vec)?;
                self.cast(ta, d, av, vec)
            }
            Expr::Accumulated => {
                let Some(acc) = self.acc else {
                    return Err(self.internal("acc read outside the reduction's result"));
                };
                match (acc.vec, vec) {
                    (false, true) => self.splat(acc.v, d),
                    (true, false) => return Err(self.internal("vector acc used as a scalar")),
                    _ => acc.v,
                }
            }
        };
        Ok(Val { v, vec })
    }

    /// `c ? a : b` (a bool, or a mask as vectors).
    fn select_values(&mut self, c: Value, a: Value, b: Value, d: DType, vec: bool) -> Value {
        if !vec {
            self.b.ins().select(c, a, b)
        } else if d == DType::F32 {
            let m = self.b.ins().bitcast(F32X4, MemFlagsData::new(), c);
            self.b.ins().bitselect(m, a, b)
        } else {
            self.b.ins().bitselect(c, a, b)
        }
    }

    /// `max(x, c)` / `min(x, c)` with `c` a constant (ReLU, clamps) is one
    /// comparison and a select instead of CLIF's general NaN- and
    /// zero-exact sequence: `max(x, c) = x if x > c or x is NaN, else c`,
    /// which is IEEE `maximum` exactly unless `c` is -0 (for `min`, +0);
    /// `c` must not be NaN. Returns the non-constant operand and the
    /// condition that keeps it.
    fn clamp_by_constant(&self, op: BinaryOp, ta: DType, a: ExprId, b: ExprId) -> Option<(ExprId, FloatCC)> {
        if ta != DType::F32 || !matches!(op, BinaryOp::Max | BinaryOp::Min) {
            return None;
        }
        let constant = |e: ExprId| match self.k.exprs[e.index()].expr {
            Expr::Const(c) => Some(c as f32),
            _ => None,
        };
        let (x, value) = match (constant(a), constant(b)) {
            (None, Some(v)) => (a, v),
            (Some(v), None) => (b, v),
            _ => return None,
        };
        let ok = !value.is_nan() && (value != 0.0 || value.is_sign_negative() == (op == BinaryOp::Min));
        let cc = if op == BinaryOp::Max { FloatCC::UnorderedOrGreaterThan } else { FloatCC::UnorderedOrLessThan };
        ok.then_some((x, cc))
    }

    /// `offset + Σ stride·var`, plus `lane` steps of the vector variable.
    fn map_val(&mut self, m: &IndexMap, lane: u8) -> R<Value> {
        let mut offset = m.offset;
        if lane > 0 {
            let v = self.an.vec_var.ok_or_else(|| self.internal("lane without a vector variable"))?;
            offset += m.strides[v] * lane as i64;
        }
        let mut acc = self.b.ins().iconst(I64, offset);
        for (v, &s) in m.strides.iter().enumerate() {
            if s == 0 {
                continue;
            }
            let Some(x) = self.vars[v] else {
                return Err(self.internal(format!("loop variable {v} used out of its loop")));
            };
            let term = if s == 1 { x } else { self.b.ins().imul_imm_s(x, s) };
            acc = self.b.ins().iadd(acc, term);
        }
        Ok(acc)
    }

    fn base(&self, buf: BufferId) -> R<Value> {
        self.bases[buf.index()].ok_or_else(|| self.internal(format!("buffer b{} has no base address", buf.0)))
    }

    fn elem_addr(&mut self, base: Value, idx: Value, d: DType) -> Value {
        let off = match elem_size(d) {
            1 => idx,
            s => self.b.ins().ishl_imm_s(idx, s.trailing_zeros() as i64),
        };
        self.b.ins().iadd(base, off)
    }

    fn scalar_load(&mut self, d: DType, addr: Value, offset: i32) -> Value {
        match d {
            DType::Bool => {
                let x = self.b.ins().load(I8, flags(), addr, offset);
                self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0)
            }
            _ => self.b.ins().load(cl_type(d, false), flags(), addr, offset),
        }
    }

    fn load(&mut self, buf: BufferId, map: &IndexMap, d: DType, vec: bool) -> R<Value> {
        let base = self.base(buf)?;
        let idx = self.map_val(map, 0)?;
        let addr = self.elem_addr(base, idx, d);
        Ok(match (vec, d) {
            (false, _) => self.scalar_load(d, addr, 0),
            (true, DType::Bool) => {
                // Stride 1 along the vector variable: bytes addr..addr+4.
                let lanes = [0, 1, 2, 3].map(|l| self.scalar_load(d, addr, l));
                self.build(d, lanes)
            }
            (true, _) => self.b.ins().load(cl_type(d, true), flags(), addr, 0),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn load_if(
        &mut self,
        i: usize,
        buf: BufferId,
        index: &IndexMap,
        bound: &IndexMap,
        lo: i64,
        hi: i64,
        default: f64,
        d: DType,
        lane: u8,
    ) -> R<Value> {
        let dv = self.constant(default, d);
        let numel = self.an.numel[buf.index()];
        if numel == 0 {
            return Ok(dv);
        }
        let bv = self.map_val(bound, lane)?;
        let c1 = self.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, bv, lo);
        let c2 = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, bv, hi);
        let c = self.b.ins().band(c1, c2);
        let mut idx = self.map_val(index, lane)?;
        if !self.an.in_bounds[i] {
            // Out of range: read element 0 instead (and never outside the
            // buffer, whatever the index map says).
            let zero = self.b.ins().iconst(I64, 0);
            let last = self.b.ins().iconst(I64, numel as i64 - 1);
            idx = self.b.ins().select(c, idx, zero);
            idx = self.b.ins().smax(idx, zero);
            idx = self.b.ins().smin(idx, last);
        }
        let base = self.base(buf)?;
        let addr = self.elem_addr(base, idx, d);
        let v = self.scalar_load(d, addr, 0);
        Ok(self.b.ins().select(c, v, dv))
    }

    /// A constant of `d`, converted as a cast from f64 does.
    fn constant(&mut self, c: f64, d: DType) -> Value {
        match d {
            DType::F32 => self.b.ins().f32const(c as f32),
            DType::Bool => self.b.ins().iconst(I8, i64::from(c != 0.0)),
            _ => self.b.ins().iconst(I32, (c as i32) as u32 as i64),
        }
    }

    fn fconst(&mut self, c: f32, vec: bool) -> Value {
        let s = self.b.ins().f32const(c);
        if vec { self.b.ins().splat(F32X4, s) } else { s }
    }

    fn index_scalar(&mut self, map: &IndexMap, d: DType, lane: u8) -> R<Value> {
        let v = self.map_val(map, lane)?;
        Ok(match d {
            DType::F32 => self.b.ins().fcvt_from_sint(F32, v),
            DType::Bool => self.b.ins().icmp_imm_s(IntCC::NotEqual, v, 0),
            _ => self.b.ins().ireduce(I32, v),
        })
    }

    /// `index` along the vector variable: lane 0's value plus 0, s, 2s, 3s.
    fn index_ramp(&mut self, map: &IndexMap, d: DType) -> R<Value> {
        let v = self.an.vec_var.ok_or_else(|| self.internal("ramp without a vector variable"))?;
        let s = map.strides[v] as i32;
        let base = self.map_val(map, 0)?;
        let base = self.b.ins().ireduce(I32, base);
        let base = self.b.ins().splat(I32X4, base);
        let bytes: Vec<u8> = (0..4).flat_map(|l: i32| s.wrapping_mul(l).to_le_bytes()).collect();
        let c = self.b.func.dfg.constants.insert(ConstantData::from(bytes));
        let ramp = self.b.ins().vconst(I32X4, c);
        let iv = self.b.ins().iadd(base, ramp);
        Ok(self.cast(DType::I32, d, iv, true))
    }

    fn random(&mut self, key: u64, counter: &IndexMap, lane: u8) -> R<Value> {
        let kv =
            self.keys.iter().find(|(k, _)| *k == key).map(|(_, v)| *v).ok_or_else(|| self.internal("random key"))?;
        let f = self.refs.uniform.ok_or_else(|| self.internal("uniform not declared"))?;
        let c = self.map_val(counter, lane)?;
        let call = self.b.ins().call(f, &[kv, c]);
        Ok(self.b.inst_results(call)[0])
    }

    fn call1(&mut self, f: Option<FuncRef>, x: Value, vec: bool) -> R<Value> {
        let f = f.ok_or_else(|| self.internal("helper not declared"))?;
        let one = |s: &mut Self, x: Value| {
            let call = s.b.ins().call(f, &[x]);
            s.b.inst_results(call)[0]
        };
        if !vec {
            return Ok(one(self, x));
        }
        self.lanewise(DType::F32, &mut |s, l| {
            let xl = s.b.ins().extractlane(x, l);
            Ok(one(s, xl))
        })
    }

    fn unary(&mut self, op: UnaryOp, ta: DType, v: Value, vec: bool) -> R<Value> {
        let fma = self.cfg.use_fma;
        let math = |s: &mut Self, f: MathFn| {
            let mut m = VecMath { b: &mut s.b, fma };
            if vec { m.apply(f, v) } else { m.scalar(f, v) }
        };
        Ok(match op {
            UnaryOp::Neg if ta == DType::F32 => self.b.ins().fneg(v),
            UnaryOp::Neg => self.b.ins().ineg(v),
            UnaryOp::Abs if ta == DType::F32 => self.b.ins().fabs(v),
            UnaryOp::Abs => self.b.ins().iabs(v),
            UnaryOp::Not if vec => self.b.ins().bnot(v),
            UnaryOp::Not => self.b.ins().bxor_imm_s(v, 1),
            UnaryOp::Exp => math(self, MathFn::Exp),
            UnaryOp::Log => math(self, MathFn::Log),
            UnaryOp::Tanh => math(self, MathFn::Tanh),
            UnaryOp::Sqrt => self.b.ins().sqrt(v),
            UnaryOp::Rsqrt => {
                let one = self.fconst(1.0, vec);
                let r = self.b.ins().sqrt(v);
                self.b.ins().fdiv(one, r)
            }
            UnaryOp::Recip => {
                let one = self.fconst(1.0, vec);
                self.b.ins().fdiv(one, v)
            }
            UnaryOp::Sin => self.call1(self.refs.sin, v, vec)?,
            UnaryOp::Cos => self.call1(self.refs.cos, v, vec)?,
        })
    }

    fn binary(&mut self, op: BinaryOp, ta: DType, a: Value, b: Value, vec: bool) -> R<Value> {
        if op.is_comparison() {
            return Ok(match ta {
                DType::F32 => {
                    let cc = match op {
                        BinaryOp::Lt => FloatCC::LessThan,
                        BinaryOp::Le => FloatCC::LessThanOrEqual,
                        BinaryOp::Gt => FloatCC::GreaterThan,
                        BinaryOp::Ge => FloatCC::GreaterThanOrEqual,
                        BinaryOp::Eq => FloatCC::Equal,
                        _ => FloatCC::NotEqual,
                    };
                    self.b.ins().fcmp(cc, a, b)
                }
                // Bools order false < true: unsigned on 0/1 and on masks.
                DType::Bool => {
                    let cc = match op {
                        BinaryOp::Lt => IntCC::UnsignedLessThan,
                        BinaryOp::Le => IntCC::UnsignedLessThanOrEqual,
                        BinaryOp::Gt => IntCC::UnsignedGreaterThan,
                        BinaryOp::Ge => IntCC::UnsignedGreaterThanOrEqual,
                        BinaryOp::Eq => IntCC::Equal,
                        _ => IntCC::NotEqual,
                    };
                    self.b.ins().icmp(cc, a, b)
                }
                _ => {
                    let cc = match op {
                        BinaryOp::Lt => IntCC::SignedLessThan,
                        BinaryOp::Le => IntCC::SignedLessThanOrEqual,
                        BinaryOp::Gt => IntCC::SignedGreaterThan,
                        BinaryOp::Ge => IntCC::SignedGreaterThanOrEqual,
                        BinaryOp::Eq => IntCC::Equal,
                        _ => IntCC::NotEqual,
                    };
                    self.b.ins().icmp(cc, a, b)
                }
            });
        }
        Ok(match (op, ta) {
            (BinaryOp::And, _) => self.b.ins().band(a, b),
            (BinaryOp::Or, _) => self.b.ins().bor(a, b),
            (BinaryOp::Add, DType::F32) => self.b.ins().fadd(a, b),
            (BinaryOp::Sub, DType::F32) => self.b.ins().fsub(a, b),
            (BinaryOp::Mul, DType::F32) => self.b.ins().fmul(a, b),
            (BinaryOp::Div, DType::F32) => self.b.ins().fdiv(a, b),
            (BinaryOp::Max, DType::F32) => self.b.ins().fmax(a, b),
            (BinaryOp::Min, DType::F32) => self.b.ins().fmin(a, b),
            (BinaryOp::Pow, _) => {
                let f = self.refs.pow.ok_or_else(|| self.internal("pow not declared"))?;
                let one = |s: &mut Self, x: Value, y: Value| {
                    let call = s.b.ins().call(f, &[x, y]);
                    s.b.inst_results(call)[0]
                };
                if vec {
                    self.lanewise(DType::F32, &mut |s, l| {
                        let xl = s.b.ins().extractlane(a, l);
                        let yl = s.b.ins().extractlane(b, l);
                        Ok(one(s, xl, yl))
                    })?
                } else {
                    one(self, a, b)
                }
            }
            (BinaryOp::Add, _) => self.b.ins().iadd(a, b),
            (BinaryOp::Sub, _) => self.b.ins().isub(a, b),
            (BinaryOp::Mul, _) => self.b.ins().imul(a, b),
            (BinaryOp::Max, _) => self.b.ins().smax(a, b),
            (BinaryOp::Min, _) => self.b.ins().smin(a, b),
            (BinaryOp::Div, _) => {
                if vec {
                    self.lanewise(DType::I32, &mut |s, l| {
                        let xl = s.b.ins().extractlane(a, l);
                        let yl = s.b.ins().extractlane(b, l);
                        Ok(s.int_div(xl, yl))
                    })?
                } else {
                    self.int_div(a, b)
                }
            }
            _ => return Err(self.internal(format!("`{}` on {}", op.name(), ta.name()))),
        })
    }

    /// i32 division truncating toward zero; `x / 0 = 0` (the interpreter
    /// reports an error instead) and `i32::MIN / -1 = i32::MIN` (wraps).
    fn int_div(&mut self, a: Value, d: Value) -> Value {
        let is_zero = self.b.ins().icmp_imm_s(IntCC::Equal, d, 0);
        let is_m1 = self.b.ins().icmp_imm_s(IntCC::Equal, d, -1);
        let special = self.b.ins().bor(is_zero, is_m1);
        let one = self.b.ins().iconst(I32, 1);
        let safe = self.b.ins().select(special, one, d);
        let q = self.b.ins().sdiv(a, safe);
        let neg = self.b.ins().ineg(a);
        let q = self.b.ins().select(is_m1, neg, q);
        let zero = self.b.ins().iconst(I32, 0);
        self.b.ins().select(is_zero, zero, q)
    }

    fn cast(&mut self, from: DType, to: DType, v: Value, vec: bool) -> Value {
        match (from, to) {
            (f, t) if f == t => v,
            (DType::F32, DType::I32) => self.b.ins().fcvt_to_sint_sat(cl_type(DType::I32, vec), v),
            (DType::F32, _) => {
                let zero = self.fconst(0.0, vec);
                self.b.ins().fcmp(FloatCC::NotEqual, v, zero)
            }
            (DType::I32, DType::F32) => self.b.ins().fcvt_from_sint(cl_type(DType::F32, vec), v),
            (DType::I32, _) => {
                if vec {
                    let z = self.b.ins().iconst(I32, 0);
                    let z = self.b.ins().splat(I32X4, z);
                    self.b.ins().icmp(IntCC::NotEqual, v, z)
                } else {
                    self.b.ins().icmp_imm_s(IntCC::NotEqual, v, 0)
                }
            }
            (_, DType::F32) => {
                if vec {
                    let one = self.fconst(1.0, true);
                    let m = self.b.ins().bitcast(F32X4, MemFlagsData::new(), v);
                    self.b.ins().band(m, one)
                } else {
                    let one = self.fconst(1.0, false);
                    let zero = self.fconst(0.0, false);
                    self.b.ins().select(v, one, zero)
                }
            }
            (_, _) => {
                if vec {
                    let one = self.b.ins().iconst(I32, 1);
                    let one = self.b.ins().splat(I32X4, one);
                    self.b.ins().band(v, one)
                } else {
                    self.b.ins().uextend(I32, v)
                }
            }
        }
    }

    fn store(&mut self, buf: BufferId, v: Value, d: DType, flat: Value, vec: bool) -> R<()> {
        let base = self.base(buf)?;
        let addr = self.elem_addr(base, flat, d);
        match (vec, d) {
            (true, DType::Bool) => {
                for l in 0..4u8 {
                    let x = self.extract(v, d, l);
                    self.b.ins().store(flags(), x, addr, l as i32);
                }
            }
            _ => {
                self.b.ins().store(flags(), v, addr, 0);
            }
        }
        Ok(())
    }
}
