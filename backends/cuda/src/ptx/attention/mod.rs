//! Attention as PTX: a forward kernel and up to three backward kernels,
//! each a thread per row with the other operand streamed through shared
//! memory in tiles.
//!
//! - [`forward`]: a block of [`ROWS`] threads takes [`ROWS`] query rows of
//!   one batch index, its query row in registers; keys and values come in
//!   tiles of [`TILE`] rows; each thread runs the online softmax over a tile
//!   (running maximum and sum, its output row rescaled as the maximum grows).
//!   With a log-sum-exp buffer, `m + ln l` is kept for the backward pass.
//! - [`backward`]: dq a thread per query row over key/value tiles; dv and dk
//!   a thread per key row over query tiles (with dout, the log-sum-exp and,
//!   for dk, `D_i = dout_i · out_i` computed per tile). Probabilities are
//!   recomputed from the log-sum-exp. Each thread owns its output row: no
//!   atomics, and every sum runs in index order.
//!
//! Scores never exist in memory beyond one thread's current one. Loops over
//! the head dimension are unrolled (`d` and `dv` are known), so a row of 64
//! lives in 64 registers.

mod backward;
mod forward;

pub(in crate::ptx) use backward::backward;
pub(in crate::ptx) use forward::forward;

use std::fmt::Write as _;

use lpac_ir::kernel::Operand;

/// Query rows per block (a thread each).
pub const ROWS: u32 = 128;
/// Key rows per shared-memory tile.
pub const TILE: usize = 32;
/// Static shared memory a block may use without opting in.
pub(super) const SHARED_LIMIT: usize = 48 * 1024;

pub(super) struct Ptx {
    pub code: String,
    pub counts: [u32; 4],
}

impl Ptx {
    pub fn pred(&mut self) -> String {
        self.counts[0] += 1;
        format!("%p{}", self.counts[0] - 1)
    }
    pub fn r32(&mut self) -> String {
        self.counts[1] += 1;
        format!("%r{}", self.counts[1] - 1)
    }
    pub fn r64(&mut self) -> String {
        self.counts[2] += 1;
        format!("%rd{}", self.counts[2] - 1)
    }
    pub fn f(&mut self) -> String {
        self.counts[3] += 1;
        format!("%f{}", self.counts[3] - 1)
    }
    /// The register banks to declare.
    pub fn banks(&self) -> [(&'static str, &'static str, u32); 4] {
        let c = self.counts;
        [(".pred", "%p", c[0]), (".b32", "%r", c[1]), (".b64", "%rd", c[2]), (".f32", "%f", c[3])]
    }

    pub fn line(&mut self, s: impl AsRef<str>) {
        self.code.push('\t');
        self.code.push_str(s.as_ref());
        self.code.push('\n');
    }
    pub fn label(&mut self, s: &str) {
        let _ = writeln!(self.code, "{s}:");
    }
}

pub(super) fn imm(v: f64) -> String {
    format!("0f{:08X}", (v as f32).to_bits())
}

/// `offset + Σ coord_d(b) · stride_d` of an operand for batch index `b` (a
/// u64 register), as an s64 register.
pub(super) fn batch_offset(p: &mut Ptx, b: &str, batch: &[usize], o: &Operand) -> String {
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
pub(super) fn element_address(p: &mut Ptx, base: &str, off: &str, row: &str, o: &Operand, col: usize) -> String {
    let e = p.r64();
    p.line(format!("mad.lo.s64 {e}, {row}, {}, {off};", o.row_stride));
    if col != 0 {
        p.line(format!("add.s64 {e}, {e}, {};", col as i64 * o.col_stride));
    }
    let a = p.r64();
    p.line(format!("mad.lo.s64 {a}, {e}, 4, {base};"));
    a
}

/// `exp(x)` through `ex2`.
pub(super) fn exp(p: &mut Ptx, x: &str) -> String {
    let (t, r) = (p.f(), p.f());
    p.line(format!("mul.rn.f32 {t}, {x}, {};", imm(std::f64::consts::LOG2_E)));
    p.line(format!("ex2.approx.f32 {r}, {t};"));
    r
}

/// Loads columns `c .. c + width` (`width` 4 or 1) of the shared row at
/// `row + at` bytes: one 16-byte `ld.shared.v4` or one `ld.shared.f32`.
fn shared_group(p: &mut Ptx, (row, at): (&str, usize), c: usize, width: usize) -> Vec<String> {
    let regs: Vec<String> = (0..width).map(|_| p.f()).collect();
    if width == 4 {
        p.line(format!("ld.shared.v4.f32 {{{}}}, [{row}+{}];", regs.join(", "), at + c * 4));
    } else {
        p.line(format!("ld.shared.f32 {}, [{row}+{}];", regs[0], at + c * 4));
    }
    regs
}

/// How a shared row of `n` floats is read: four at a time when `n` is a
/// multiple of 4 (rows of `n` floats from a 16-byte aligned array are then
/// 16-byte aligned), else one at a time. `(first column, width)`.
fn groups(n: usize) -> impl Iterator<Item = (usize, usize)> {
    let width = if n.is_multiple_of(4) { 4 } else { 1 };
    (0..n).step_by(width).map(move |c| (c, width))
}

/// `Σ_c x_c · shared[row + at + 4c]` over `chains` partial sums (1, 2 or
/// 4; 1 where the row is read one float at a time): column `c` goes to sum
/// `c mod chains`, and the sums are added pairwise at the end. More chains
/// shorten the dependent sequence of fused multiply-adds (`n / chains`
/// long instead of `n`) at the cost of registers.
pub(super) fn dot_shared(p: &mut Ptx, x: &[String], (row, at): (&str, usize), chains: usize) -> String {
    let chains = if x.len().is_multiple_of(4) { chains } else { 1 };
    let mut sums = zeroed(p, chains);
    for (c, width) in groups(x.len()) {
        let e = shared_group(p, (row, at), c, width);
        for (k, ek) in e.iter().enumerate() {
            p.line(format!("fma.rn.f32 {s}, {}, {ek}, {s};", x[c + k], s = sums[(c + k) % chains]));
        }
    }
    while sums.len() > 1 {
        sums = sums
            .chunks(2)
            .map(|pair| {
                let r = p.f();
                p.line(format!("add.rn.f32 {r}, {}, {};", pair[0], pair[1]));
                r
            })
            .collect();
    }
    sums.remove(0)
}

/// `acc_c += a · shared[row + at + 4c]`.
pub(super) fn axpy_shared(p: &mut Ptx, acc: &[String], a: &str, (row, at): (&str, usize)) {
    for (c, width) in groups(acc.len()) {
        let e = shared_group(p, (row, at), c, width);
        for (k, ek) in e.iter().enumerate() {
            p.line(format!("fma.rn.f32 {r}, {a}, {ek}, {r};", r = acc[c + k]));
        }
    }
}

/// `n` f32 registers set to zero: a row's accumulators.
pub(super) fn zeroed(p: &mut Ptx, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = p.f();
            p.line(format!("mov.f32 {r}, {};", imm(0.0)));
            r
        })
        .collect()
}

/// Loads the parameters `names` (global addresses).
pub(super) fn load_params(p: &mut Ptx, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| {
            let (raw, base) = (p.r64(), p.r64());
            p.line(format!("ld.param.u64 {raw}, [{n}];"));
            p.line(format!("cvta.to.global.u64 {base}, {raw};"));
            base
        })
        .collect()
}

/// Where one tile of an operand goes: rows `row0 ..` (below `limit`, zero
/// past it) of `o`, `width` columns, into the shared array at `shared`.
pub(super) struct Tile<'a> {
    pub o: &'a Operand,
    pub base: &'a str,
    pub off: &'a str,
    pub row0: &'a str,
    pub limit: usize,
    pub rows: usize,
    pub width: usize,
    pub shared: &'a str,
}

/// The whole block loads a tile, thread `t` taking elements `t, t + ROWS, …`
/// (consecutive threads, consecutive columns: coalesced when the operand's
/// rows are contiguous). The caller synchronises before use.
pub(super) fn load_tile(p: &mut Ptx, tile: &Tile, t: &str, label: &str) {
    let n = tile.rows * tile.width;
    let (e, key, col, row, inside, f, sa) = (p.r64(), p.r64(), p.r64(), p.r64(), p.pred(), p.f(), p.r64());
    p.line(format!("mov.u64 {e}, {t};"));
    p.label(label);
    let stop = p.pred();
    p.line(format!("setp.ge.u64 {stop}, {e}, {n};"));
    p.line(format!("@{stop} bra {label}_done;"));
    p.line(format!("div.u64 {key}, {e}, {};", tile.width));
    p.line(format!("rem.u64 {col}, {e}, {};", tile.width));
    p.line(format!("add.u64 {row}, {}, {key};", tile.row0));
    p.line(format!("setp.lt.u64 {inside}, {row}, {};", tile.limit));
    p.line(format!("mov.f32 {f}, {};", imm(0.0)));
    let (el, ga) = (p.r64(), p.r64());
    p.line(format!("mad.lo.s64 {el}, {row}, {}, {};", tile.o.row_stride, tile.off));
    p.line(format!("mad.lo.s64 {el}, {col}, {}, {el};", tile.o.col_stride));
    p.line(format!("mad.lo.s64 {ga}, {el}, 4, {};", tile.base));
    p.line(format!("@{inside} ld.global.f32 {f}, [{ga}];"));
    p.line(format!("mad.lo.u64 {sa}, {e}, 4, {};", tile.shared));
    p.line(format!("st.shared.f32 [{sa}], {f};"));
    p.line(format!("add.u64 {e}, {e}, {ROWS};"));
    p.line(format!("bra.uni {label};"));
    p.label(&format!("{label}_done"));
}
