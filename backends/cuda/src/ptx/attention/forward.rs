//! The forward kernel (see the module documentation).

use lpac_ir::Graph;
use lpac_ir::kernel::{AttentionKernel, AttentionPass, Program};

use super::super::{Arch, Module, PtxError, PtxKernel, node_list};
use super::{
    MAX_REGISTERS, Place, Ptx, SHARED_LIMIT, TILE, Tile, axpy_shared, batch_offset, dot_shared, exp, imm, keys_needed,
    load_params, load_tile, next_tile, pair_seen, rows_per_block, split_of, zeroed,
};

/// Keys scored together: their scores live in registers while the running
/// maximum, the sum and the output row are rescaled once for all of them
/// (rather than once a key). A tile's groups run in a loop, so the unrolled
/// body — GROUP dot products and row updates — stays small.
const GROUP: usize = 8;

/// Which keys of the tile a group has, and what decides which of them count.
struct Group<'a> {
    /// The group's first key within the tile.
    first: &'a str,
    /// Keys in this tile (a register: fewer in the last tile).
    count: &'a str,
    /// The tile's first key, the thread's query row, whether it exists.
    j0: &'a str,
    i: &'a str,
    valid: &'a str,
}

/// One group of keys of the tile in shared memory (`ks`, `vs`: its first
/// key's and value's rows): scores (−∞ for keys past the tile's end, after
/// the query (causal) or of a row past the end), the group's maximum, one
/// rescale of `l` and the output row, then `p_j = exp(s_j − m)` added to `l`
/// and `p_j · v_j` to the row.
#[allow(clippy::too_many_arguments)]
fn key_group(
    p: &mut Ptx,
    a: &AttentionKernel,
    place: &Place,
    g: Group,
    qreg: &[String],
    (ks, vs): (&str, &str),
    (m, l): (&str, &str),
    acc: &[String],
) {
    let (d, dv) = (a.d, a.dv);
    p.comment(&format!("scores of the group's {GROUP} keys: s = q·k·scale, −∞ where masked"));
    let scores: Vec<String> = (0..GROUP)
        .map(|u| {
            let (ok, in_tile, jj, j) = (p.pred(), p.pred(), p.r64(), p.r64());
            p.line(format!("add.u64 {jj}, {}, {u};", g.first));
            p.line(format!("add.u64 {j}, {}, {jj};", g.j0));
            pair_seen(p, a.causal, (&j, g.i), g.valid, &ok);
            p.line(format!("setp.lt.u64 {in_tile}, {jj}, {};", g.count));
            p.line(format!("and.pred {ok}, {ok}, {in_tile};"));
            let part = dot_shared(p, qreg, (ks, u * d * 4), 4);
            let dot = place.across_row(p, &part);
            let s = p.f();
            p.line(format!("mul.rn.f32 {s}, {dot}, {};", imm(a.scale)));
            p.line(format!("selp.f32 {s}, {s}, {}, {ok};", imm(f64::NEG_INFINITY)));
            s
        })
        .collect();
    // The new running maximum; exponents are taken against 0 while it is
    // still −∞ (no key counted yet), where every p and the rescale are 0.
    p.comment("the group's maximum; l and the output row rescaled once");
    let mut level = scores.clone();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| {
                let r = p.f();
                p.line(format!("max.f32 {r}, {}, {};", pair[0], pair[1]));
                r
            })
            .collect();
    }
    let (mn, none, base, diff) = (p.f(), p.pred(), p.f(), p.f());
    p.line(format!("max.f32 {mn}, {m}, {};", level[0]));
    p.line(format!("setp.eq.f32 {none}, {mn}, {};", imm(f64::NEG_INFINITY)));
    p.line(format!("selp.f32 {base}, {}, {mn}, {none};", imm(0.0)));
    p.line(format!("sub.rn.f32 {diff}, {m}, {base};"));
    let corr = exp(p, &diff);
    p.line(format!("mul.rn.f32 {l}, {l}, {corr};"));
    for o in acc {
        p.line(format!("mul.rn.f32 {o}, {o}, {corr};"));
    }
    p.line(format!("mov.f32 {m}, {mn};"));
    p.comment("p = exp(s − m) for each key: l += p, out += p·v");
    for (u, s) in scores.iter().enumerate() {
        let shifted = p.f();
        p.line(format!("sub.rn.f32 {shifted}, {s}, {base};"));
        let pj = exp(p, &shifted);
        p.line(format!("add.rn.f32 {l}, {l}, {pj};"));
        axpy_shared(p, acc, &pj, (vs, u * dv * 4));
    }
}

pub(in crate::ptx) fn forward(
    program: &Program,
    a: &AttentionKernel,
    kernel: usize,
    arch: Arch,
    graph: Option<&Graph>,
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
    let split = split_of(d, dv);
    let rows = rows_per_block(split);
    let qblocks = (a.tq as u64).div_ceil(u64::from(rows));
    let grid = (nb * qblocks).clamp(1, u64::from(u32::MAX)) as u32;
    let mut p = Ptx { code: String::new(), counts: [0; 4] };

    // Bases.
    let names = ["q", "k", "v", "out"];
    let bases = load_params(&mut p, &names);
    let lse_base = a.lse.map(|_| {
        let (raw, base) = (p.r64(), p.r64());
        p.line(format!("ld.param.u64 {raw}, [lse];"));
        p.line(format!("cvta.to.global.u64 {base}, {raw};"));
        base
    });
    // Which batch index and query rows this block has; which columns of
    // its row this thread holds.
    let place = Place::new(&mut p, split);
    let ctaid = p.r32();
    p.line(format!("mov.u32 {ctaid}, %ctaid.x;"));
    let (cta, b, qb, i) = (p.r64(), p.r64(), p.r64(), p.r64());
    p.line(format!("cvt.u64.u32 {cta}, {ctaid};"));
    p.line(format!("div.u64 {b}, {cta}, {qblocks};"));
    p.line(format!("rem.u64 {qb}, {cta}, {qblocks};"));
    p.line(format!("mad.lo.u64 {i}, {qb}, {rows}, {};", place.row));
    let valid = p.pred();
    p.line(format!("setp.lt.u64 {valid}, {i}, {};", a.tq));
    let offs: Vec<String> = [&a.q, &a.k, &a.v, out].iter().map(|o| batch_offset(&mut p, &b, &a.batch, o)).collect();
    // The thread's part of the query row in registers (zero past the end).
    p.comment("this thread's columns of its query row");
    let qreg = place.load_part(&mut p, (&bases[0], &offs[0]), &i, &a.q, d, &valid);
    let (m, l) = (p.f(), p.f());
    p.line(format!("mov.f32 {m}, {};", imm(f64::NEG_INFINITY)));
    p.line(format!("mov.f32 {l}, {};", imm(0.0)));
    let acc = zeroed(&mut p, dv / place.split);
    let first = p.r64();
    p.line(format!("mul.lo.u64 {first}, {qb}, {rows};"));
    let kend = keys_needed(&mut p, a, (&first, rows));
    let (ks, vs) = (p.r64(), p.r64());
    p.line(format!("mov.u64 {ks}, Ks;"));
    p.line(format!("mov.u64 {vs}, Vs;"));
    // This thread's columns of a tile's first key and value rows.
    let (ks_part, vs_part) = (place.shared_part(&mut p, &ks, d), place.shared_part(&mut p, &vs, dv));
    let j0 = p.r64();
    p.line(format!("mov.u64 {j0}, 0;"));
    let more = p.pred();
    p.label("$L_tile");
    p.line(format!("setp.ge.u64 {more}, {j0}, {kend};"));
    p.line(format!("@{more} bra $L_tiles_done;"));
    // Cooperative load of the K and V tiles (rows past tk are zero).
    p.comment(&format!("a tile of {TILE} keys and values into shared memory (zero past the end)"));
    for (which, o, width, sbase) in [(1usize, &a.k, d, &ks), (2usize, &a.v, dv, &vs)] {
        let tile = Tile {
            o,
            base: &bases[which],
            off: &offs[which],
            row0: &j0,
            limit: a.tk,
            rows: TILE,
            width,
            shared: sbase,
        };
        load_tile(&mut p, &tile, (&place.t, place.threads()), &format!("$L_load{which}"));
    }
    p.line("bar.sync 0;");
    // This thread's keys in the tile: up to min(TILE, kend − j0), and
    // (causal) up to its own row; [`GROUP`] keys at a time.
    let count = p.r64();
    p.line(format!("sub.u64 {count}, {kend}, {j0};"));
    p.line(format!("min.u64 {count}, {count}, {TILE};"));
    p.comment(&format!("the tile's keys, {GROUP} at a time"));
    let (first, past, ksg, vsg) = (p.r64(), p.pred(), p.r64(), p.r64());
    p.line(format!("mov.u64 {first}, 0;"));
    p.label("$L_group");
    p.line(format!("setp.ge.u64 {past}, {first}, {count};"));
    p.line(format!("@{past} bra $L_groups_done;"));
    p.line(format!("mad.lo.u64 {ksg}, {first}, {}, {ks_part};", d * 4));
    p.line(format!("mad.lo.u64 {vsg}, {first}, {}, {vs_part};", dv * 4));
    let group = Group { first: &first, count: &count, j0: &j0, i: &i, valid: &valid };
    key_group(&mut p, a, &place, group, &qreg, (&ksg, &vsg), (&m, &l), &acc);
    p.line(format!("add.u64 {first}, {first}, {GROUP};"));
    p.line("bra.uni $L_group;");
    p.label("$L_groups_done");
    next_tile(&mut p, &j0, TILE);
    // out = acc / l (each thread its columns); lse = m + ln l (the row's
    // first thread).
    p.comment("out = acc / l; lse = m + ln l");
    p.line(format!("@!{valid} bra $L_done;"));
    let inv = p.f();
    p.line(format!("rcp.rn.f32 {inv}, {l};"));
    let scaled: Vec<String> = acc
        .iter()
        .map(|o| {
            let v = p.f();
            p.line(format!("mul.rn.f32 {v}, {o}, {inv};"));
            v
        })
        .collect();
    place.store_part(&mut p, (&bases[3], &offs[3]), &i, out, &scaled, &valid);
    if let Some(lb) = &lse_base {
        let (lg, value, row, addr, first_part) = (p.f(), p.f(), p.r64(), p.r64(), p.pred());
        p.line(format!("lg2.approx.f32 {lg}, {l};"));
        p.line(format!("fma.rn.f32 {value}, {lg}, {}, {m};", imm(std::f64::consts::LN_2)));
        p.line(format!("mad.lo.u64 {row}, {b}, {}, {i};", a.tq));
        p.line(format!("mad.lo.u64 {addr}, {row}, 4, {lb};"));
        p.line(format!("setp.eq.u64 {first_part}, {}, 0;", place.part));
        p.line(format!("@{first_part} st.global.f32 [{addr}], {value};"));
    }
    p.label("$L_done");
    p.line("ret;");

    let comment = [
        format!(
            "kernel k{kernel}: attention forward, batch {:?}, tq {} tk {} d {d} dv {dv}, scale {:?}, causal {}",
            a.batch, a.tq, a.tk, a.scale, a.causal
        ),
        format!("graph nodes: {}", node_list(&a.nodes, graph)),
        format!(
            "launch: grid {grid} x block {threads} (a block per {rows} query rows of a batch index, {split} thread(s) a \
             row); {shared} bytes of static shared memory (K and V tiles of {TILE} rows)",
            threads = place.threads(),
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
        max_registers: Some(MAX_REGISTERS),
    }
    .text();
    let mut args = vec![a.q.buffer.0, a.k.buffer.0, a.v.buffer.0, out.buffer.0];
    args.extend(a.lse.map(|l| l.0));
    Ok(PtxKernel::new(entry, (kernel, 0), ptx, (grid, place.threads()), args))
}
