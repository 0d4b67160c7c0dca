//! Attention as PTX: the forward pass.
//!
//! A block of [`ROWS`] threads takes [`ROWS`] query rows of one batch index,
//! a thread per row, its query row in registers. Keys and values come in
//! tiles of [`TILE`] rows, loaded by the whole block into shared memory;
//! each thread then runs the online softmax over the tile (running maximum
//! `m` and sum `l`, its output row rescaled as `m` grows) and accumulates
//! `p·v`. A causal block stops at its last row's keys. The output row is
//! `acc / l`; with a log-sum-exp buffer, `m + ln l` is kept for the
//! backward pass. The scores never exist in memory beyond one thread's
//! current one.
//!
//! Loops over the head dimension are unrolled (`d` and `dv` are known), so
//! a row of 64 lives in 64 registers.

use std::fmt::Write as _;

use lpac_ir::kernel::{AttentionKernel, AttentionPass, Operand, Program};

use super::{Arch, Module, PtxError, PtxKernel};

/// Query rows per block (a thread each).
pub const ROWS: u32 = 128;
/// Key rows per shared-memory tile.
pub const TILE: usize = 32;
/// Static shared memory a block may use without opting in.
const SHARED_LIMIT: usize = 48 * 1024;

struct Ptx {
    code: String,
    counts: [u32; 4],
}

impl Ptx {
    fn pred(&mut self) -> String {
        self.counts[0] += 1;
        format!("%p{}", self.counts[0] - 1)
    }
    fn r32(&mut self) -> String {
        self.counts[1] += 1;
        format!("%r{}", self.counts[1] - 1)
    }
    fn r64(&mut self) -> String {
        self.counts[2] += 1;
        format!("%rd{}", self.counts[2] - 1)
    }
    fn f(&mut self) -> String {
        self.counts[3] += 1;
        format!("%f{}", self.counts[3] - 1)
    }
    /// The register banks to declare.
    fn banks(&self) -> [(&'static str, &'static str, u32); 4] {
        let c = self.counts;
        [(".pred", "%p", c[0]), (".b32", "%r", c[1]), (".b64", "%rd", c[2]), (".f32", "%f", c[3])]
    }

    fn line(&mut self, s: impl AsRef<str>) {
        self.code.push('\t');
        self.code.push_str(s.as_ref());
        self.code.push('\n');
    }
    fn label(&mut self, s: &str) {
        let _ = writeln!(self.code, "{s}:");
    }
}

fn imm(v: f64) -> String {
    format!("0f{:08X}", (v as f32).to_bits())
}

/// `offset + Σ coord_d(b) · stride_d` of an operand for batch index `b` (a
/// u64 register), as an s64 register.
fn batch_offset(p: &mut Ptx, b: &str, batch: &[usize], o: &Operand) -> String {
    let off = p.r64();
    p.line(format!("mov.s64 {off}, {};", o.offset));
    let mut rest = b.to_string();
    for (d, &extent) in batch.iter().enumerate().rev() {
        let (c, q) = (p.r64(), p.r64());
        p.line(format!("rem.u64 {c}, {rest}, {extent};"));
        p.line(format!("div.u64 {q}, {rest}, {extent};"));
        p.line(format!("mad.lo.s64 {off}, {c}, {}, {off};", o.batch_strides[d]));
        rest = q;
    }
    off
}

/// The byte address of element `(row, col)` of an operand: `base + 4·(off
/// + row·rs + col·cs)`, with `row` a u64 register and `col` a constant.
fn element_address(p: &mut Ptx, base: &str, off: &str, row: &str, o: &Operand, col: usize) -> String {
    let e = p.r64();
    p.line(format!("mad.lo.s64 {e}, {row}, {}, {off};", o.row_stride));
    if col != 0 {
        p.line(format!("add.s64 {e}, {e}, {};", col as i64 * o.col_stride));
    }
    let a = p.r64();
    p.line(format!("mad.lo.s64 {a}, {e}, 4, {base};"));
    a
}

pub(super) fn forward(
    program: &Program,
    a: &AttentionKernel,
    kernel: usize,
    arch: Arch,
) -> Result<PtxKernel, PtxError> {
    let entry = format!("k{kernel}_0_attention");
    let err = |m: String| PtxError { kernel: entry.clone(), message: m };
    let AttentionPass::Forward { out } = &a.pass else { return Err(err("not a forward attention kernel".into())) };
    let (d, dv) = (a.d, a.dv);
    let shared = TILE * (d + dv) * 4;
    if shared > SHARED_LIMIT {
        return Err(err(format!(
            "head dimensions d = {d}, dv = {dv} need {shared} bytes of shared memory per block, more than the {SHARED_LIMIT} a \
             block may use"
        )));
    }
    if d > 128 || dv > 128 {
        return Err(err(format!(
            "head dimensions d = {d}, dv = {dv}: at most 128 are emitted (a row lives in registers)"
        )));
    }
    let _ = program;
    let nb: u64 = a.batch.iter().map(|&x| x as u64).product();
    let qblocks = (a.tq as u64).div_ceil(u64::from(ROWS));
    let grid = (nb * qblocks).clamp(1, u64::from(u32::MAX)) as u32;
    let mut p = Ptx { code: String::new(), counts: [0; 4] };

    // Bases.
    let names = ["q", "k", "v", "out"];
    let mut bases = Vec::new();
    for n in names {
        let (raw, base) = (p.r64(), p.r64());
        p.line(format!("ld.param.u64 {raw}, [{n}];"));
        p.line(format!("cvta.to.global.u64 {base}, {raw};"));
        bases.push(base);
    }
    let lse_base = a.lse.map(|_| {
        let (raw, base) = (p.r64(), p.r64());
        p.line(format!("ld.param.u64 {raw}, [lse];"));
        p.line(format!("cvta.to.global.u64 {base}, {raw};"));
        base
    });
    // Which batch index and query rows this block has.
    let (ctaid, tid) = (p.r32(), p.r32());
    p.line(format!("mov.u32 {ctaid}, %ctaid.x;"));
    p.line(format!("mov.u32 {tid}, %tid.x;"));
    let (cta, b, qb, i, t) = (p.r64(), p.r64(), p.r64(), p.r64(), p.r64());
    p.line(format!("cvt.u64.u32 {cta}, {ctaid};"));
    p.line(format!("div.u64 {b}, {cta}, {qblocks};"));
    p.line(format!("rem.u64 {qb}, {cta}, {qblocks};"));
    p.line(format!("cvt.u64.u32 {t}, {tid};"));
    p.line(format!("mad.lo.u64 {i}, {qb}, {ROWS}, {t};"));
    let valid = p.pred();
    p.line(format!("setp.lt.u64 {valid}, {i}, {};", a.tq));
    let offs: Vec<String> = [&a.q, &a.k, &a.v, out].iter().map(|o| batch_offset(&mut p, &b, &a.batch, o)).collect();
    // The query row in registers (zero for rows past the end).
    let qreg: Vec<String> = (0..d).map(|_| p.f()).collect();
    for (c, r) in qreg.iter().enumerate() {
        p.line(format!("mov.f32 {r}, {};", imm(0.0)));
        let addr = element_address(&mut p, &bases[0], &offs[0], &i, &a.q, c);
        p.line(format!("@{valid} ld.global.f32 {r}, [{addr}];"));
    }
    let (m, l) = (p.f(), p.f());
    p.line(format!("mov.f32 {m}, {};", imm(f64::NEG_INFINITY)));
    p.line(format!("mov.f32 {l}, {};", imm(0.0)));
    let acc: Vec<String> = (0..dv).map(|_| p.f()).collect();
    for r in &acc {
        p.line(format!("mov.f32 {r}, {};", imm(0.0)));
    }
    // Keys this block needs: all, or (causal) up to its last row.
    let kend = p.r64();
    if a.causal {
        p.line(format!("mad.lo.u64 {kend}, {qb}, {ROWS}, {ROWS};"));
        p.line(format!("min.u64 {kend}, {kend}, {};", a.tk));
    } else {
        p.line(format!("mov.u64 {kend}, {};", a.tk));
    }
    let (ks, vs) = (p.r64(), p.r64());
    p.line(format!("mov.u64 {ks}, Ks;"));
    p.line(format!("mov.u64 {vs}, Vs;"));
    let j0 = p.r64();
    p.line(format!("mov.u64 {j0}, 0;"));
    let more = p.pred();
    p.label("$L_tile");
    p.line(format!("setp.ge.u64 {more}, {j0}, {kend};"));
    p.line(format!("@{more} bra $L_tiles_done;"));
    // Cooperative load of the K and V tiles (rows past tk are zero).
    for (which, o, width, sbase) in [(1usize, &a.k, d, &ks), (2usize, &a.v, dv, &vs)] {
        let n = TILE * width;
        let (e, key, col, row, inside, f, sa) = (p.r64(), p.r64(), p.r64(), p.r64(), p.pred(), p.f(), p.r64());
        let lbl = format!("$L_load{which}");
        p.line(format!("mov.u64 {e}, {t};"));
        p.label(&lbl);
        let stop = p.pred();
        p.line(format!("setp.ge.u64 {stop}, {e}, {n};"));
        p.line(format!("@{stop} bra {lbl}_done;"));
        p.line(format!("div.u64 {key}, {e}, {width};"));
        p.line(format!("rem.u64 {col}, {e}, {width};"));
        p.line(format!("add.u64 {row}, {j0}, {key};"));
        p.line(format!("setp.lt.u64 {inside}, {row}, {};", a.tk));
        p.line(format!("mov.f32 {f}, {};", imm(0.0)));
        let (el, ga) = (p.r64(), p.r64());
        p.line(format!("mad.lo.s64 {el}, {row}, {}, {};", o.row_stride, offs[which]));
        p.line(format!("mad.lo.s64 {el}, {col}, {}, {el};", o.col_stride));
        p.line(format!("mad.lo.s64 {ga}, {el}, 4, {};", bases[which]));
        p.line(format!("@{inside} ld.global.f32 {f}, [{ga}];"));
        p.line(format!("mad.lo.u64 {sa}, {e}, 4, {sbase};"));
        p.line(format!("st.shared.f32 [{sa}], {f};"));
        p.line(format!("add.u64 {e}, {e}, {ROWS};"));
        p.line(format!("bra.uni {lbl};"));
        p.label(&format!("{lbl}_done"));
    }
    p.line("bar.sync 0;");
    // This thread's keys in the tile: up to min(TILE, kend − j0), and
    // (causal) up to its own row.
    let (jj, j, count) = (p.r64(), p.r64(), p.r64());
    p.line(format!("sub.u64 {count}, {kend}, {j0};"));
    p.line(format!("min.u64 {count}, {count}, {TILE};"));
    p.line(format!("mov.u64 {jj}, 0;"));
    p.label("$L_key");
    let (stop, skip) = (p.pred(), p.pred());
    p.line(format!("setp.ge.u64 {stop}, {jj}, {count};"));
    p.line(format!("@{stop} bra $L_keys_done;"));
    p.line(format!("add.u64 {j}, {j0}, {jj};"));
    p.line(format!("setp.gt.u64 {skip}, {j}, {i};"));
    if !a.causal {
        p.line(format!("setp.ne.u64 {skip}, {j}, {j};"));
    }
    let invalid = p.pred();
    p.line(format!("not.pred {invalid}, {valid};"));
    p.line(format!("or.pred {skip}, {skip}, {invalid};"));
    p.line(format!("@{skip} bra $L_key_next;"));
    // s = q · k_j · scale
    let (krow, vrow) = (p.r64(), p.r64());
    p.line(format!("mad.lo.u64 {krow}, {jj}, {}, {ks};", d * 4));
    p.line(format!("mad.lo.u64 {vrow}, {jj}, {}, {vs};", dv * 4));
    let s = p.f();
    p.line(format!("mov.f32 {s}, {};", imm(0.0)));
    for (c, qc) in qreg.iter().enumerate() {
        let kc = p.f();
        p.line(format!("ld.shared.f32 {kc}, [{krow}+{}];", c * 4));
        p.line(format!("fma.rn.f32 {s}, {qc}, {kc}, {s};"));
    }
    p.line(format!("mul.rn.f32 {s}, {s}, {};", imm(a.scale)));
    // online softmax
    let (mn, corr, pj, t1) = (p.f(), p.f(), p.f(), p.f());
    p.line(format!("max.f32 {mn}, {m}, {s};"));
    p.line(format!("sub.rn.f32 {t1}, {m}, {mn};"));
    p.line(format!("mul.rn.f32 {t1}, {t1}, {};", imm(std::f64::consts::LOG2_E)));
    p.line(format!("ex2.approx.f32 {corr}, {t1};"));
    p.line(format!("sub.rn.f32 {t1}, {s}, {mn};"));
    p.line(format!("mul.rn.f32 {t1}, {t1}, {};", imm(std::f64::consts::LOG2_E)));
    p.line(format!("ex2.approx.f32 {pj}, {t1};"));
    p.line(format!("fma.rn.f32 {l}, {l}, {corr}, {pj};"));
    p.line(format!("mov.f32 {m}, {mn};"));
    for (c, o) in acc.iter().enumerate() {
        let vc = p.f();
        p.line(format!("ld.shared.f32 {vc}, [{vrow}+{}];", c * 4));
        p.line(format!("mul.rn.f32 {o}, {o}, {corr};"));
        p.line(format!("fma.rn.f32 {o}, {pj}, {vc}, {o};"));
    }
    p.label("$L_key_next");
    p.line(format!("add.u64 {jj}, {jj}, 1;"));
    p.line("bra.uni $L_key;");
    p.label("$L_keys_done");
    p.line("bar.sync 0;");
    p.line(format!("add.u64 {j0}, {j0}, {TILE};"));
    p.line("bra.uni $L_tile;");
    p.label("$L_tiles_done");
    // out = acc / l; lse = m + ln l
    p.line(format!("@!{valid} bra $L_done;"));
    let inv = p.f();
    p.line(format!("rcp.rn.f32 {inv}, {l};"));
    for (c, o) in acc.iter().enumerate() {
        let addr = element_address(&mut p, &bases[3], &offs[3], &i, out, c);
        let v = p.f();
        p.line(format!("mul.rn.f32 {v}, {o}, {inv};"));
        p.line(format!("st.global.f32 [{addr}], {v};"));
    }
    if let Some(lb) = &lse_base {
        let (lg, value, row, addr) = (p.f(), p.f(), p.r64(), p.r64());
        p.line(format!("lg2.approx.f32 {lg}, {l};"));
        p.line(format!("fma.rn.f32 {value}, {lg}, {}, {m};", imm(std::f64::consts::LN_2)));
        p.line(format!("mad.lo.u64 {row}, {b}, {}, {i};", a.tq));
        p.line(format!("mad.lo.u64 {addr}, {row}, 4, {lb};"));
        p.line(format!("st.global.f32 [{addr}], {value};"));
    }
    p.label("$L_done");
    p.line("ret;");

    let comment = [
        format!(
            "kernel k{kernel}: attention forward, batch {:?}, tq {} tk {} d {d} dv {dv}, scale {:?}, causal {}",
            a.batch, a.tq, a.tk, a.scale, a.causal
        ),
        format!("graph nodes: {}", a.nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" ")),
        format!(
            "launch: grid {grid} x block {ROWS} (a block per {ROWS} query rows of a batch index); {shared} bytes of \
             static shared memory (K and V tiles of {TILE} rows)"
        ),
    ];
    let mut params: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    if a.lse.is_some() {
        params.push("lse".into());
    }
    let shared_decls =
        [format!(".shared .align 16 .f32 Ks[{}]", TILE * d), format!(".shared .align 16 .f32 Vs[{}]", TILE * dv)];
    let ptx = Module {
        comment: &comment,
        arch,
        entry: &entry,
        params: &params,
        shared: &shared_decls,
        regs: &p.banks(),
        body: &p.code,
    }
    .text();
    let mut args = vec![a.q.buffer.0, a.k.buffer.0, a.v.buffer.0, out.buffer.0];
    args.extend(a.lse.map(|l| l.0));
    Ok(PtxKernel {
        entry,
        kernel,
        body: 0,
        ptx,
        grid,
        block: ROWS,
        shared_bytes: 0,
        args,
        stream_keys: vec![],
        scratch_bytes: 0,
        error_flag: false,
    })
}

/// The backward pass as up to three functions, one thread per row each,
/// every score recomputed from the forward pass's log-sum-exp (no tiles in
/// shared memory yet):
///
/// - body 0, a thread per query row `i`: `D_i = dout_i · out_i`, then over
///   the keys it sees, `p = exp(s − lse_i)`, `dp = dout_i · v_j`,
///   `ds = p (dp − D_i) · scale`, `dq_i += ds · k_j`;
/// - body 1, a thread per key row `j`: over the queries that see it,
///   `dv_j += p · dout_i`;
/// - body 2, a thread per key row `j`: `dk_j += ds · q_i` (recomputing
///   `D_i`).
///
/// Each thread owns its output row, so there are no atomics and the sums
/// are in index order.
pub(super) fn backward(
    program: &Program,
    a: &AttentionKernel,
    kernel: usize,
    arch: Arch,
) -> Result<Vec<PtxKernel>, PtxError> {
    let _ = program;
    let AttentionPass::Backward { out, dout, dq, dk, dv } = &a.pass else {
        return Err(PtxError { kernel: format!("k{kernel}"), message: "not a backward attention kernel".into() });
    };
    let Some(lse) = a.lse else {
        return Err(PtxError {
            kernel: format!("k{kernel}"),
            message: "attention backward without the forward kernel's log-sum-exp (not emitted)".into(),
        });
    };
    if a.d > 128 || a.dv > 128 {
        return Err(PtxError {
            kernel: format!("k{kernel}"),
            message: format!("head dimensions d = {}, dv = {}: at most 128 are emitted", a.d, a.dv),
        });
    }
    let mut functions = Vec::new();
    if let Some(g) = dq {
        functions.push(backward_fn(a, kernel, 0, arch, Role::Dq, g, out, dout, lse));
    }
    if let Some(g) = dv {
        functions.push(backward_fn(a, kernel, 1, arch, Role::Dv, g, out, dout, lse));
    }
    if let Some(g) = dk {
        functions.push(backward_fn(a, kernel, 2, arch, Role::Dk, g, out, dout, lse));
    }
    Ok(functions)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Dq,
    Dv,
    Dk,
}

/// Registers holding row `row` of an operand (columns unrolled).
fn load_row(p: &mut Ptx, base: &str, off: &str, row: &str, o: &Operand, n: usize) -> Vec<String> {
    let addr = element_address(p, base, off, row, o, 0);
    (0..n)
        .map(|c| {
            let r = p.f();
            p.line(format!("ld.global.f32 {r}, [{addr}+{}];", c as i64 * o.col_stride * 4));
            r
        })
        .collect()
}

/// `Σ_c x_c · row_c` with the row read from memory.
fn dot_row(p: &mut Ptx, x: &[String], base: &str, off: &str, row: &str, o: &Operand) -> String {
    let addr = element_address(p, base, off, row, o, 0);
    let s = p.f();
    p.line(format!("mov.f32 {s}, {};", imm(0.0)));
    for (c, xc) in x.iter().enumerate() {
        let e = p.f();
        p.line(format!("ld.global.f32 {e}, [{addr}+{}];", c as i64 * o.col_stride * 4));
        p.line(format!("fma.rn.f32 {s}, {xc}, {e}, {s};"));
    }
    s
}

/// `acc_c += a · row_c` with the row read from memory.
fn axpy_row(p: &mut Ptx, acc: &[String], a: &str, base: &str, off: &str, row: &str, o: &Operand) {
    let addr = element_address(p, base, off, row, o, 0);
    for (c, r) in acc.iter().enumerate() {
        let e = p.f();
        p.line(format!("ld.global.f32 {e}, [{addr}+{}];", c as i64 * o.col_stride * 4));
        p.line(format!("fma.rn.f32 {r}, {a}, {e}, {r};"));
    }
}

/// `exp(x)` through `ex2`.
fn exp(p: &mut Ptx, x: &str) -> String {
    let (t, r) = (p.f(), p.f());
    p.line(format!("mul.rn.f32 {t}, {x}, {};", imm(std::f64::consts::LOG2_E)));
    p.line(format!("ex2.approx.f32 {r}, {t};"));
    r
}

#[allow(clippy::too_many_arguments)]
fn backward_fn(
    a: &AttentionKernel,
    kernel: usize,
    body: usize,
    arch: Arch,
    role: Role,
    grad: &Operand,
    out: &Operand,
    dout: &Operand,
    lse: lpac_ir::kernel::BufferId,
) -> PtxKernel {
    let name = match role {
        Role::Dq => "dq",
        Role::Dv => "dv",
        Role::Dk => "dk",
    };
    let entry = format!("k{kernel}_{body}_attention_{name}");
    let (d, dv) = (a.d, a.dv);
    // Rows this function's threads own: queries for dq, keys otherwise.
    let rows = if role == Role::Dq { a.tq } else { a.tk };
    let nb: u64 = a.batch.iter().map(|&x| x as u64).product();
    let blocks = (rows as u64).div_ceil(u64::from(ROWS));
    let grid = (nb * blocks).clamp(1, u64::from(u32::MAX)) as u32;
    let mut p = Ptx { code: String::new(), counts: [0; 4] };
    let names = ["q", "k", "v", "out", "dout", "lse", "grad"];
    let mut bases = Vec::new();
    for n in names {
        let (raw, base) = (p.r64(), p.r64());
        p.line(format!("ld.param.u64 {raw}, [{n}];"));
        p.line(format!("cvta.to.global.u64 {base}, {raw};"));
        bases.push(base);
    }
    let (ctaid, tid) = (p.r32(), p.r32());
    p.line(format!("mov.u32 {ctaid}, %ctaid.x;"));
    p.line(format!("mov.u32 {tid}, %tid.x;"));
    let (cta, b, blk, me, t) = (p.r64(), p.r64(), p.r64(), p.r64(), p.r64());
    p.line(format!("cvt.u64.u32 {cta}, {ctaid};"));
    p.line(format!("div.u64 {b}, {cta}, {blocks};"));
    p.line(format!("rem.u64 {blk}, {cta}, {blocks};"));
    p.line(format!("cvt.u64.u32 {t}, {tid};"));
    p.line(format!("mad.lo.u64 {me}, {blk}, {ROWS}, {t};"));
    let outside = p.pred();
    p.line(format!("setp.ge.u64 {outside}, {me}, {rows};"));
    p.line(format!("@{outside} bra $L_done;"));
    let ops = [&a.q, &a.k, &a.v, out, dout];
    let offs: Vec<String> = ops.iter().map(|o| batch_offset(&mut p, &b, &a.batch, o)).collect();
    let goff = batch_offset(&mut p, &b, &a.batch, grad);
    // lse row base: b·tq
    let lse_row0 = p.r64();
    p.line(format!("mul.lo.u64 {lse_row0}, {b}, {};", a.tq));
    let acc_n = if role == Role::Dv { dv } else { d };
    let acc: Vec<String> = (0..acc_n).map(|_| p.f()).collect();
    for r in &acc {
        p.line(format!("mov.f32 {r}, {};", imm(0.0)));
    }
    // Fixed per thread: for dq the query row's q, dout and D; for dv/dk the
    // key row's k (and v for dk).
    let (fixed_q, fixed_do, fixed_d, fixed_k, fixed_v);
    if role == Role::Dq {
        fixed_q = load_row(&mut p, &bases[0], &offs[0], &me, &a.q, d);
        fixed_do = load_row(&mut p, &bases[4], &offs[4], &me, dout, dv);
        fixed_d = Some(dot_row(&mut p, &fixed_do, &bases[3], &offs[3], &me, out));
        fixed_k = Vec::new();
        fixed_v = Vec::new();
    } else {
        fixed_q = Vec::new();
        fixed_do = Vec::new();
        fixed_d = None;
        fixed_k = load_row(&mut p, &bases[1], &offs[1], &me, &a.k, d);
        fixed_v = if role == Role::Dk { load_row(&mut p, &bases[2], &offs[2], &me, &a.v, dv) } else { Vec::new() };
    }
    // The other index: keys 0..=i (dq), queries j..tq (dv, dk; causal).
    let (x, end) = (p.r64(), p.r64());
    match (role, a.causal) {
        (Role::Dq, true) => {
            p.line(format!("mov.u64 {x}, 0;"));
            p.line(format!("add.u64 {end}, {me}, 1;"));
            p.line(format!("min.u64 {end}, {end}, {};", a.tk));
        }
        (Role::Dq, false) => {
            p.line(format!("mov.u64 {x}, 0;"));
            p.line(format!("mov.u64 {end}, {};", a.tk));
        }
        (_, true) => {
            p.line(format!("mov.u64 {x}, {me};"));
            p.line(format!("mov.u64 {end}, {};", a.tq));
        }
        (_, false) => {
            p.line(format!("mov.u64 {x}, 0;"));
            p.line(format!("mov.u64 {end}, {};", a.tq));
        }
    }
    let stop = p.pred();
    p.label("$L_loop");
    p.line(format!("setp.ge.u64 {stop}, {x}, {end};"));
    p.line(format!("@{stop} bra $L_loop_done;"));
    // (query i, key j) of this pair
    let (qi, kj) = if role == Role::Dq { (me.clone(), x.clone()) } else { (x.clone(), me.clone()) };
    // s = q_i · k_j · scale
    let s = if role == Role::Dq {
        dot_row(&mut p, &fixed_q, &bases[1], &offs[1], &kj, &a.k)
    } else {
        dot_row(&mut p, &fixed_k, &bases[0], &offs[0], &qi, &a.q)
    };
    p.line(format!("mul.rn.f32 {s}, {s}, {};", imm(a.scale)));
    // p = exp(s − lse_i)
    let (lrow, laddr, l, shifted) = (p.r64(), p.r64(), p.f(), p.f());
    p.line(format!("add.u64 {lrow}, {lse_row0}, {qi};"));
    p.line(format!("mad.lo.u64 {laddr}, {lrow}, 4, {};", bases[5]));
    p.line(format!("ld.global.f32 {l}, [{laddr}];"));
    p.line(format!("sub.rn.f32 {shifted}, {s}, {l};"));
    let prob = exp(&mut p, &shifted);
    match role {
        Role::Dv => axpy_row(&mut p, &acc, &prob, &bases[4], &offs[4], &qi, dout),
        Role::Dq | Role::Dk => {
            // dp = dout_i · v_j; D_i = dout_i · out_i
            let (dp, dd) = if role == Role::Dq {
                (dot_row(&mut p, &fixed_do, &bases[2], &offs[2], &kj, &a.v), fixed_d.clone().unwrap_or_default())
            } else {
                let do_i = load_row(&mut p, &bases[4], &offs[4], &qi, dout, dv);
                let dp = p.f();
                p.line(format!("mov.f32 {dp}, {};", imm(0.0)));
                for (c, e) in do_i.iter().enumerate() {
                    p.line(format!("fma.rn.f32 {dp}, {e}, {}, {dp};", fixed_v[c]));
                }
                (dp, dot_row(&mut p, &do_i, &bases[3], &offs[3], &qi, out))
            };
            let (diff, ds) = (p.f(), p.f());
            p.line(format!("sub.rn.f32 {diff}, {dp}, {dd};"));
            p.line(format!("mul.rn.f32 {ds}, {prob}, {diff};"));
            p.line(format!("mul.rn.f32 {ds}, {ds}, {};", imm(a.scale)));
            if role == Role::Dq {
                axpy_row(&mut p, &acc, &ds, &bases[1], &offs[1], &kj, &a.k);
            } else {
                axpy_row(&mut p, &acc, &ds, &bases[0], &offs[0], &qi, &a.q);
            }
        }
    }
    p.line(format!("add.u64 {x}, {x}, 1;"));
    p.line("bra.uni $L_loop;");
    p.label("$L_loop_done");
    let gaddr = element_address(&mut p, &bases[6], &goff, &me, grad, 0);
    for (c, r) in acc.iter().enumerate() {
        p.line(format!("st.global.f32 [{gaddr}+{}], {r};", c as i64 * grad.col_stride * 4));
    }
    p.label("$L_done");
    p.line("ret;");

    let comment = [
        format!(
            "kernel k{kernel} body {body}: attention backward, {name}; batch {:?}, tq {} tk {} d {d} dv {dv}, causal {}",
            a.batch, a.tq, a.tk, a.causal
        ),
        format!("graph nodes: {}", a.nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" ")),
        format!(
            "launch: grid {grid} x block {ROWS}, a thread per {} row",
            if role == Role::Dq { "query" } else { "key" }
        ),
    ];
    let params: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let ptx = Module {
        comment: &comment,
        arch,
        entry: &entry,
        params: &params,
        shared: &[],
        regs: &p.banks(),
        body: &p.code,
    }
    .text();
    PtxKernel {
        entry,
        kernel,
        body,
        ptx,
        grid,
        block: ROWS,
        shared_bytes: 0,
        args: vec![a.q.buffer.0, a.k.buffer.0, a.v.buffer.0, out.buffer.0, dout.buffer.0, lse.0, grad.buffer.0],
        stream_keys: vec![],
        scratch_bytes: 0,
        error_flag: false,
    }
}
