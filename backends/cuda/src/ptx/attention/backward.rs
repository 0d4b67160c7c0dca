//! The backward kernels (see the module documentation): up to three
//! functions, every probability recomputed from the forward pass's
//! log-sum-exp, one, two or four threads a row ([`Place`]).
//!
//! - body 0, dq, a query row `i` (its `q_i` and `dout_i` in registers,
//!   `D_i = dout_i · out_i` computed once), over tiles of keys and values in
//!   shared memory: `p = exp(q_i·k_j·scale − lse_i)`, `ds = p (dout_i·v_j −
//!   D_i) · scale`, `dq_i += ds · k_j`;
//! - body 1, dv, a key row `j` (`k_j` in registers), over tiles of queries,
//!   dout and the log-sum-exp: `dv_j += p · dout_i`;
//! - body 2, dk, a key row `j` (`k_j`, `v_j` in registers), over tiles of
//!   queries, dout, out (for `D_i`, computed per tile by the block) and the
//!   log-sum-exp: `dk_j += ds · q_i`.
//!
//! A causal dq block stops at its last query row's keys; a causal dv/dk
//! block starts at its first key row's queries. Pairs a row must not see
//! (causal, or a row past the end) get `p = 0`, so they add nothing.

use lpac_ir::Graph;
use lpac_ir::kernel::{AttentionKernel, AttentionPass, BufferId, Operand, Program};

use super::super::{Arch, Module, PtxError, PtxKernel, node_list};
use super::{
    MAX_REGISTERS, Place, Ptx, SHARED_LIMIT, TILE, Tile, axpy_shared, batch_offset, dot_shared, exp, imm, keys_needed,
    load_params, load_tile, next_tile, pair_seen, rows_per_block, split_of, zeroed,
};

pub(in crate::ptx) fn backward(
    program: &Program,
    a: &AttentionKernel,
    kernel: usize,
    arch: Arch,
    graph: Option<&Graph>,
) -> Result<Vec<PtxKernel>, PtxError> {
    let _ = program;
    let err = |m: String| PtxError { kernel: format!("k{kernel}"), message: m };
    let AttentionPass::Backward { out, dout, dq, dk, dv } = &a.pass else {
        return Err(err("not a backward attention kernel".into()));
    };
    let Some(lse) = a.lse else {
        return Err(err("attention backward without the forward kernel's log-sum-exp (not emitted)".into()));
    };
    if a.d > 128 || a.dv > 128 {
        return Err(err(format!("head dimensions d = {}, dv = {}: at most 128 are emitted", a.d, a.dv)));
    }
    let ops = Operands { out, dout, lse, nodes: node_list(&a.nodes, graph) };
    let mut functions = Vec::new();
    for (role, grad) in [(Role::Dq, dq), (Role::Dv, dv), (Role::Dk, dk)] {
        if let Some(g) = grad {
            let f = match role {
                Role::Dq => query_rows(a, kernel, arch, &ops, g),
                _ => key_rows(a, kernel, arch, role, &ops, g),
            };
            functions.push(f.map_err(&err)?);
        }
    }
    Ok(functions)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Dq,
    Dv,
    Dk,
}

impl Role {
    fn body(self) -> usize {
        match self {
            Role::Dq => 0,
            Role::Dv => 1,
            Role::Dk => 2,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Role::Dq => "dq",
            Role::Dv => "dv",
            Role::Dk => "dk",
        }
    }
}

/// The forward pass's results the backward reads, and the graph nodes the
/// kernel came from (for each function's header comment).
struct Operands<'a> {
    out: &'a Operand,
    dout: &'a Operand,
    lse: BufferId,
    nodes: String,
}

/// Partial sums per dot product: two, as more spill registers in dq and
/// dk, whose rows (q or k, dout or v, and the gradient) already fill them.
const CHAINS: usize = 2;

/// Parameter names, in order (the runtime passes the buffers likewise).
const PARAMS: [&str; 7] = ["q", "k", "v", "out", "dout", "lse", "grad"];

/// The block's batch index and first row, and this thread's row: `(b,
/// first, me)` as u64 registers, [`Place::rows`] rows a block.
fn block_rows(p: &mut Ptx, place: &Place, blocks: u64) -> (String, String, String) {
    let ctaid = p.r32();
    p.line(format!("mov.u32 {ctaid}, %ctaid.x;"));
    let (cta, b, blk, first, me) = (p.r64(), p.r64(), p.r64(), p.r64(), p.r64());
    p.line(format!("cvt.u64.u32 {cta}, {ctaid};"));
    p.line(format!("div.u64 {b}, {cta}, {blocks};"));
    p.line(format!("rem.u64 {blk}, {cta}, {blocks};"));
    p.line(format!("mul.lo.u64 {first}, {blk}, {};", place.rows()));
    p.line(format!("add.u64 {me}, {first}, {};", place.row));
    (b, first, me)
}

/// A dot product of this thread's part of a row with the same columns of a
/// shared row, finished across the row's threads.
fn row_dot(p: &mut Ptx, place: &Place, x: &[String], row: &str) -> String {
    let part = dot_shared(p, x, (row, 0), CHAINS);
    place.across_row(p, &part)
}

/// `exp(s · scale − lse)` where `seen`, else 0.
fn probability(p: &mut Ptx, s: &str, scale: f64, lse: &str, seen: &str) -> String {
    let (minus_lse, shifted, prob) = (neg(p, lse), p.f(), p.f());
    p.line(format!("fma.rn.f32 {shifted}, {s}, {}, {minus_lse};", imm(scale)));
    let e = exp(p, &shifted);
    p.line(format!("selp.f32 {prob}, {e}, {}, {seen};", imm(0.0)));
    prob
}

/// `ds = p · (dp − D) · scale`.
fn score_gradient(p: &mut Ptx, prob: &str, dp: &str, dd: &str, scale: f64) -> String {
    let (diff, ds) = (p.f(), p.f());
    p.line(format!("sub.rn.f32 {diff}, {dp}, {dd};"));
    p.line(format!("mul.rn.f32 {ds}, {prob}, {diff};"));
    p.line(format!("mul.rn.f32 {ds}, {ds}, {};", imm(scale)));
    ds
}

/// Rows per tile: 32, or fewer where a block's tiles (`per_row` bytes a
/// tile row) would not fit in the shared memory a block may use (head
/// dimensions of 128 in dk need 16).
fn tile_rows(per_row: usize, what: &str, a: &AttentionKernel) -> Result<usize, String> {
    [TILE, TILE / 2, TILE / 4].into_iter().find(|rows| rows * per_row <= SHARED_LIMIT).ok_or_else(|| {
        format!(
            "attention backward ({what}) with d = {}, dv = {} needs {} bytes of shared memory per block even with \
             tiles of {} rows, more than the {SHARED_LIMIT} a block may use",
            a.d,
            a.dv,
            TILE / 4 * per_row,
            TILE / 4
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn finish(
    a: &AttentionKernel,
    kernel: usize,
    arch: Arch,
    (role, place): (Role, &Place),
    p: Ptx,
    (grid, tile): (u32, usize),
    shared: &[String],
    shared_bytes: usize,
    ops: &Operands,
    grad: &Operand,
) -> PtxKernel {
    let (name, body) = (role.name(), role.body());
    let entry = format!("k{kernel}_{body}_attention_{name}");
    let (rows, over) = match role {
        Role::Dq => ("query", "keys and values"),
        Role::Dv => ("key", "queries, dout and lse"),
        Role::Dk => ("key", "queries, dout, out and lse"),
    };
    let comment = [
        format!(
            "kernel k{kernel} body {body}: attention backward, {name}; batch {:?}, tq {} tk {} d {} dv {}, causal {}",
            a.batch, a.tq, a.tk, a.d, a.dv, a.causal
        ),
        format!("graph nodes: {}", ops.nodes),
        format!(
            "launch: grid {grid} x block {threads}, {split} thread(s) per {rows} row; {shared_bytes} bytes of static \
             shared memory (tiles of {tile} rows of {over})",
            threads = place.threads(),
            split = place.split
        ),
    ];
    let params: Vec<String> = PARAMS.iter().map(|n| n.to_string()).collect();
    let ptx = Module {
        comment: &comment,
        arch,
        entry: &entry,
        params: &params,
        shared,
        regs: &p.banks(),
        body: &p.code,
        max_registers: Some(MAX_REGISTERS),
    }
    .text();
    let args =
        vec![a.q.buffer.0, a.k.buffer.0, a.v.buffer.0, ops.out.buffer.0, ops.dout.buffer.0, ops.lse.0, grad.buffer.0];
    PtxKernel::new(entry, (kernel, body), ptx, (grid, place.threads()), args)
}

/// dq: a query row a [`Place`], key and value tiles in shared memory.
fn query_rows(
    a: &AttentionKernel,
    kernel: usize,
    arch: Arch,
    ops: &Operands,
    grad: &Operand,
) -> Result<PtxKernel, String> {
    let (d, dv) = (a.d, a.dv);
    let tile = tile_rows((d + dv) * 4, "dq", a)?;
    let shared_bytes = tile * (d + dv) * 4;
    let nb: u64 = a.batch.iter().map(|&x| x as u64).product();
    let split = split_of(d, dv);
    let blocks = (a.tq as u64).div_ceil(u64::from(rows_per_block(split)));
    let grid = (nb * blocks).clamp(1, u64::from(u32::MAX)) as u32;
    let mut p = Ptx { code: String::new(), counts: [0; 4] };
    let bases = load_params(&mut p, &PARAMS);
    let place = Place::new(&mut p, split);
    let (b, first, i) = block_rows(&mut p, &place, blocks);
    let valid = p.pred();
    p.line(format!("setp.lt.u64 {valid}, {i}, {};", a.tq));
    let operands = [&a.q, &a.k, &a.v, ops.out, ops.dout];
    let offs: Vec<String> = operands.iter().map(|o| batch_offset(&mut p, &b, &a.batch, o)).collect();
    let goff = batch_offset(&mut p, &b, &a.batch, grad);
    // Fixed per row: q_i, dout_i (this thread's columns), D_i = dout_i ·
    // out_i, lse_i.
    p.comment("this thread's columns of q_i, dout_i and out_i; D_i = dout_i·out_i; lse_i");
    let q_i = place.load_part(&mut p, (&bases[0], &offs[0]), &i, &a.q, d, &valid);
    let do_i = place.load_part(&mut p, (&bases[4], &offs[4]), &i, ops.dout, dv, &valid);
    let out_i = place.load_part(&mut p, (&bases[3], &offs[3]), &i, ops.out, dv, &valid);
    let dd_part = p.f();
    p.line(format!("mov.f32 {dd_part}, {};", imm(0.0)));
    for (x, y) in do_i.iter().zip(&out_i) {
        p.line(format!("fma.rn.f32 {dd_part}, {x}, {y}, {dd_part};"));
    }
    let dd = place.across_row(&mut p, &dd_part);
    let (lrow, laddr, lse_i) = (p.r64(), p.r64(), p.f());
    p.line(format!("mov.f32 {lse_i}, {};", imm(0.0)));
    p.line(format!("mad.lo.u64 {lrow}, {b}, {}, {i};", a.tq));
    p.line(format!("mad.lo.u64 {laddr}, {lrow}, 4, {};", bases[5]));
    p.line(format!("@{valid} ld.global.f32 {lse_i}, [{laddr}];"));
    let acc = zeroed(&mut p, d / place.split);
    let kend = keys_needed(&mut p, a, (&first, place.rows()));
    let (ks, vs, j0, more) = (p.r64(), p.r64(), p.r64(), p.pred());
    p.line(format!("mov.u64 {ks}, Ks;"));
    p.line(format!("mov.u64 {vs}, Vs;"));
    let (ks_part, vs_part) = (place.shared_part(&mut p, &ks, d), place.shared_part(&mut p, &vs, dv));
    p.line(format!("mov.u64 {j0}, 0;"));
    p.label("$L_tile");
    p.line(format!("setp.ge.u64 {more}, {j0}, {kend};"));
    p.line(format!("@{more} bra $L_tiles_done;"));
    p.comment(&format!("a tile of {tile} keys and values into shared memory (zero past the end)"));
    for (which, o, width, shared) in [(1usize, &a.k, d, &ks), (2usize, &a.v, dv, &vs)] {
        let tile =
            Tile { o, base: &bases[which], off: &offs[which], row0: &j0, limit: a.tk, rows: tile, width, shared };
        load_tile(&mut p, &tile, (&place.t, place.threads()), &format!("$L_load{which}"));
    }
    p.line("bar.sync 0;");
    let (jj, j, count, stop, seen) = (p.r64(), p.r64(), p.r64(), p.pred(), p.pred());
    p.line(format!("sub.u64 {count}, {kend}, {j0};"));
    p.line(format!("min.u64 {count}, {count}, {tile};"));
    p.line(format!("mov.u64 {jj}, 0;"));
    p.label("$L_key");
    p.line(format!("setp.ge.u64 {stop}, {jj}, {count};"));
    p.line(format!("@{stop} bra $L_keys_done;"));
    p.line(format!("add.u64 {j}, {j0}, {jj};"));
    pair_seen(&mut p, a.causal, (&j, &i), &valid, &seen);
    let (krow, vrow) = (p.r64(), p.r64());
    p.line(format!("mad.lo.u64 {krow}, {jj}, {}, {ks_part};", d * 4));
    p.line(format!("mad.lo.u64 {vrow}, {jj}, {}, {vs_part};", dv * 4));
    p.comment(
        "key j: p = exp(q_i·k_j·scale − lse_i) (0 where masked), ds = p (dout_i·v_j − D_i) scale, dq_i += ds k_j",
    );
    let s = row_dot(&mut p, &place, &q_i, &krow);
    let prob = probability(&mut p, &s, a.scale, &lse_i, &seen);
    let dp = row_dot(&mut p, &place, &do_i, &vrow);
    let ds = score_gradient(&mut p, &prob, &dp, &dd, a.scale);
    axpy_shared(&mut p, &acc, &ds, (&krow, 0));
    p.line(format!("add.u64 {jj}, {jj}, 1;"));
    p.line("bra.uni $L_key;");
    p.label("$L_keys_done");
    next_tile(&mut p, &j0, tile);
    p.comment("the gradient row (this thread's columns)");
    place.store_part(&mut p, (&bases[6], &goff), &i, grad, &acc, &valid);
    p.line("ret;");
    let shared =
        [format!(".shared .align 16 .f32 Ks[{}]", tile * d), format!(".shared .align 16 .f32 Vs[{}]", tile * dv)];
    Ok(finish(a, kernel, arch, (Role::Dq, &place), p, (grid, tile), &shared, shared_bytes, ops, grad))
}

/// `−x` in a fresh register.
fn neg(p: &mut Ptx, x: &str) -> String {
    let r = p.f();
    p.line(format!("neg.f32 {r}, {x};"));
    r
}

/// dv or dk: a key row a [`Place`], tiles of queries, dout, the
/// log-sum-exp (and for dk, out, to form `D_i`) in shared memory.
fn key_rows(
    a: &AttentionKernel,
    kernel: usize,
    arch: Arch,
    role: Role,
    ops: &Operands,
    grad: &Operand,
) -> Result<PtxKernel, String> {
    let (d, dv) = (a.d, a.dv);
    let dk = role == Role::Dk;
    // Qs, DOs and Ls (and for dk Os and Dd).
    let per_row = (d + dv + 1) * 4 + if dk { (dv + 1) * 4 } else { 0 };
    let tile = tile_rows(per_row, role.name(), a)?;
    let shared_bytes = tile * per_row;
    let nb: u64 = a.batch.iter().map(|&x| x as u64).product();
    let split = split_of(d, dv);
    let blocks = (a.tk as u64).div_ceil(u64::from(rows_per_block(split)));
    let grid = (nb * blocks).clamp(1, u64::from(u32::MAX)) as u32;
    let mut p = Ptx { code: String::new(), counts: [0; 4] };
    let bases = load_params(&mut p, &PARAMS);
    let place = Place::new(&mut p, split);
    let t = place.t.clone();
    let (b, first, j) = block_rows(&mut p, &place, blocks);
    let valid = p.pred();
    p.line(format!("setp.lt.u64 {valid}, {j}, {};", a.tk));
    let operands = [&a.q, &a.k, &a.v, ops.out, ops.dout];
    let offs: Vec<String> = operands.iter().map(|o| batch_offset(&mut p, &b, &a.batch, o)).collect();
    let goff = batch_offset(&mut p, &b, &a.batch, grad);
    let k_j = place.load_part(&mut p, (&bases[1], &offs[1]), &j, &a.k, d, &valid);
    let v_j = if dk { place.load_part(&mut p, (&bases[2], &offs[2]), &j, &a.v, dv, &valid) } else { Vec::new() };
    let acc = zeroed(&mut p, if dk { d } else { dv } / place.split);
    let (qs, dos, ls, os, dds) = (p.r64(), p.r64(), p.r64(), p.r64(), p.r64());
    p.line(format!("mov.u64 {qs}, Qs;"));
    p.line(format!("mov.u64 {dos}, DOs;"));
    p.line(format!("mov.u64 {ls}, Ls;"));
    if dk {
        p.line(format!("mov.u64 {os}, Os;"));
        p.line(format!("mov.u64 {dds}, Dd;"));
    }
    let (qs_part, dos_part) = (place.shared_part(&mut p, &qs, d), place.shared_part(&mut p, &dos, dv));
    // Queries this block needs: all, or (causal) from its first key row on.
    let (i0, more) = (p.r64(), p.pred());
    if a.causal {
        p.line(format!("mov.u64 {i0}, {first};"));
    } else {
        p.line(format!("mov.u64 {i0}, 0;"));
    }
    let lse_row0 = p.r64();
    p.line(format!("mul.lo.u64 {lse_row0}, {b}, {};", a.tq));
    p.label("$L_tile");
    p.line(format!("setp.ge.u64 {more}, {i0}, {};", a.tq));
    p.line(format!("@{more} bra $L_tiles_done;"));
    let mut tiles = vec![(0usize, &a.q, d, &qs), (4, ops.dout, dv, &dos)];
    if dk {
        tiles.push((3, ops.out, dv, &os));
    }
    p.comment(&format!("a tile of {tile} queries, douts (and outs) into shared memory, then their lse"));
    for (which, o, width, shared) in tiles {
        let tile =
            Tile { o, base: &bases[which], off: &offs[which], row0: &i0, limit: a.tq, rows: tile, width, shared };
        load_tile(&mut p, &tile, (&t, place.threads()), &format!("$L_load{which}"));
    }
    // The tile's log-sum-exp values: a thread each.
    let (lt, lrow, laddr, lv, lin, sa) = (p.pred(), p.r64(), p.r64(), p.f(), p.pred(), p.r64());
    p.line(format!("setp.lt.u64 {lt}, {t}, {tile};"));
    p.line(format!("add.u64 {lrow}, {i0}, {t};"));
    p.line(format!("setp.lt.u64 {lin}, {lrow}, {};", a.tq));
    p.line(format!("and.pred {lin}, {lin}, {lt};"));
    p.line(format!("add.u64 {lrow}, {lrow}, {lse_row0};"));
    p.line(format!("mad.lo.u64 {laddr}, {lrow}, 4, {};", bases[5]));
    p.line(format!("mov.f32 {lv}, {};", imm(0.0)));
    p.line(format!("@{lin} ld.global.f32 {lv}, [{laddr}];"));
    p.line(format!("mad.lo.u64 {sa}, {t}, 4, {ls};"));
    p.line(format!("@{lt} st.shared.f32 [{sa}], {lv};"));
    p.line("bar.sync 0;");
    if dk {
        p.comment("D_i = dout_i·out_i for the tile's rows, a warp a row");
        // D_i = dout_i · out_i for the tile's rows: a warp per row (warp w
        // takes rows w, w + warps, …), lanes over the columns — neighbouring
        // lanes, neighbouring banks — then butterfly shuffles; lane 0 keeps
        // it. (A thread per row would read the same bank in every lane.)
        let warps = place.threads() / 32;
        let (tid32, lane32, warp32) = (p.r32(), p.r32(), p.r32());
        let (lane, row, c, drow, orow, dsum, more, first_lane) =
            (p.r64(), p.r64(), p.r64(), p.r64(), p.r64(), p.f(), p.pred(), p.pred());
        p.line(format!("cvt.u32.u64 {tid32}, {t};"));
        p.line(format!("and.b32 {lane32}, {tid32}, 31;"));
        p.line(format!("shr.u32 {warp32}, {tid32}, 5;"));
        p.line(format!("cvt.u64.u32 {lane}, {lane32};"));
        p.line(format!("cvt.u64.u32 {row}, {warp32};"));
        p.line(format!("setp.eq.u32 {first_lane}, {lane32}, 0;"));
        p.label("$L_delta_row");
        p.line(format!("setp.ge.u64 {more}, {row}, {tile};"));
        p.line(format!("@{more} bra $L_delta_done;"));
        p.line(format!("mad.lo.u64 {drow}, {row}, {}, {dos};", dv * 4));
        p.line(format!("mad.lo.u64 {orow}, {row}, {}, {os};", dv * 4));
        p.line(format!("mov.f32 {dsum}, {};", imm(0.0)));
        p.line(format!("mov.u64 {c}, {lane};"));
        p.label("$L_delta_col");
        p.line(format!("setp.ge.u64 {more}, {c}, {dv};"));
        p.line(format!("@{more} bra $L_delta_sum;"));
        let (xa, ya, x, y) = (p.r64(), p.r64(), p.f(), p.f());
        p.line(format!("mad.lo.u64 {xa}, {c}, 4, {drow};"));
        p.line(format!("mad.lo.u64 {ya}, {c}, 4, {orow};"));
        p.line(format!("ld.shared.f32 {x}, [{xa}];"));
        p.line(format!("ld.shared.f32 {y}, [{ya}];"));
        p.line(format!("fma.rn.f32 {dsum}, {x}, {y}, {dsum};"));
        p.line(format!("add.u64 {c}, {c}, 32;"));
        p.line("bra.uni $L_delta_col;");
        p.label("$L_delta_sum");
        for offset in [16, 8, 4, 2, 1] {
            let other = p.f();
            p.line(format!("shfl.sync.bfly.b32 {other}, {dsum}, {offset}, 31, -1;"));
            p.line(format!("add.rn.f32 {dsum}, {dsum}, {other};"));
        }
        p.line(format!("mad.lo.u64 {sa}, {row}, 4, {dds};"));
        p.line(format!("@{first_lane} st.shared.f32 [{sa}], {dsum};"));
        p.line(format!("add.u64 {row}, {row}, {warps};"));
        p.line("bra.uni $L_delta_row;");
        p.label("$L_delta_done");
        p.line("bar.sync 0;");
    }
    let (ii, i, count, stop, seen) = (p.r64(), p.r64(), p.r64(), p.pred(), p.pred());
    p.line(format!("sub.u64 {count}, {}, {i0};", a.tq));
    p.line(format!("min.u64 {count}, {count}, {tile};"));
    p.line(format!("mov.u64 {ii}, 0;"));
    p.label("$L_query");
    p.line(format!("setp.ge.u64 {stop}, {ii}, {count};"));
    p.line(format!("@{stop} bra $L_queries_done;"));
    p.line(format!("add.u64 {i}, {i0}, {ii};"));
    pair_seen(&mut p, a.causal, (&j, &i), &valid, &seen);
    let (qrow, dorow, lat, lse_i) = (p.r64(), p.r64(), p.r64(), p.f());
    p.line(format!("mad.lo.u64 {qrow}, {ii}, {}, {qs_part};", d * 4));
    p.line(format!("mad.lo.u64 {dorow}, {ii}, {}, {dos_part};", dv * 4));
    p.line(format!("mad.lo.u64 {lat}, {ii}, 4, {ls};"));
    p.line(format!("ld.shared.f32 {lse_i}, [{lat}];"));
    p.comment(if dk {
        "query i: p = exp(q_i·k_j·scale − lse_i) (0 where masked), ds = p (dout_i·v_j − D_i) scale, dk_j += ds q_i"
    } else {
        "query i: p = exp(q_i·k_j·scale − lse_i) (0 where masked), dv_j += p dout_i"
    });
    let s = row_dot(&mut p, &place, &k_j, &qrow);
    let prob = probability(&mut p, &s, a.scale, &lse_i, &seen);
    if dk {
        let (dat, dd) = (p.r64(), p.f());
        p.line(format!("mad.lo.u64 {dat}, {ii}, 4, {dds};"));
        p.line(format!("ld.shared.f32 {dd}, [{dat}];"));
        let dp = row_dot(&mut p, &place, &v_j, &dorow);
        let ds = score_gradient(&mut p, &prob, &dp, &dd, a.scale);
        axpy_shared(&mut p, &acc, &ds, (&qrow, 0));
    } else {
        axpy_shared(&mut p, &acc, &prob, (&dorow, 0));
    }
    p.line(format!("add.u64 {ii}, {ii}, 1;"));
    p.line("bra.uni $L_query;");
    p.label("$L_queries_done");
    next_tile(&mut p, &i0, tile);
    p.comment("the gradient row (this thread's columns)");
    place.store_part(&mut p, (&bases[6], &goff), &j, grad, &acc, &valid);
    p.line("ret;");
    let mut shared = vec![
        format!(".shared .align 16 .f32 Qs[{}]", tile * d),
        format!(".shared .align 16 .f32 DOs[{}]", tile * dv),
        format!(".shared .align 16 .f32 Ls[{tile}]"),
    ];
    if dk {
        shared.push(format!(".shared .align 16 .f32 Os[{}]", tile * dv));
        shared.push(format!(".shared .align 16 .f32 Dd[{tile}]"));
    }
    Ok(finish(a, kernel, arch, (role, &place), p, (grid, tile), &shared, shared_bytes, ops, grad))
}
