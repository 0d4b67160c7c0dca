//! Attention as PTX: a forward kernel and up to three backward kernels,
//! each with one, two or four threads per row and the other operand
//! streamed through shared memory in tiles.
//!
//! - [`forward()`]: a block takes [`ROWS`] query rows of one batch index (32
//!   where four threads share a row), the query row in registers; keys and
//!   values come in tiles of [`TILE`] rows; the online softmax runs over groups of keys (running maximum and
//!   sum, the output row rescaled once a group as the maximum grows). With a
//!   log-sum-exp buffer, `m + ln l` is kept for the backward pass.
//! - [`backward()`]: dq over key/value tiles, a query row each; dv and dk over
//!   query tiles (with dout, the log-sum-exp and, for dk, `D_i = dout_i ·
//!   out_i` computed per tile), a key row each. Probabilities are
//!   recomputed from the log-sum-exp. Each row's output belongs to its
//!   threads alone: no atomics, and every sum runs in index order.
//!
//! Where both head dimensions are even, neighbouring threads share a row
//! ([`split_of`]): two, or four where a head is wider than 64 — so a thread
//! holds at most 32 of a row's columns (a row of 64 or 128 plus its gradient
//! fits in registers without spilling) — and dot products are finished with
//! one or two butterfly shuffles among them, which then hold the same
//! score. Keys a row must not see (causal, past the end) are masked — their
//! probability is 0 — rather than branched around, so all threads of a row
//! always reach the shuffles together. Scores never exist in memory. Loops
//! over the head dimension are unrolled (`d` and `dv` are known).

mod backward;
mod forward;

pub(in crate::ptx) use backward::backward;
pub(in crate::ptx) use forward::forward;

use std::fmt::Write as _;

use lpac_ir::kernel::{AttentionKernel, Operand};

/// Rows (query or key) per block where one or two threads take a row (32
/// where four do, [`rows_per_block`]): blocks of 128 threads (or 64) fill a
/// multiprocessor in finer steps than larger ones would, and a causal
/// pass's blocks differ less in work.
pub const ROWS: u32 = 64;
/// Registers a thread may use (`.maxnreg`): 168 lets three blocks of 128
/// threads share a multiprocessor's 65,536 (12 warps to hide latency
/// with); with at most 32 of a row's columns a thread (head dimensions up
/// to 128, [`split_of`]) the kernels need no more.
pub(super) const MAX_REGISTERS: u32 = 168;
/// Key rows per shared-memory tile.
pub const TILE: usize = 32;
// A tile's per-row values (log-sum-exp, `D_i`) are loaded a thread a row,
// and a block has at least ROWS threads (at least 32 rows, `ROWS·2/split`
// of them, times `split` threads).
const _: () = assert!(TILE as u32 <= ROWS, "a block has a thread for every row of a tile");

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
    /// A comment line in the emitted text, naming the phase that follows
    /// (the kernels are long; a reader of the PTX needs the landmarks).
    pub fn comment(&mut self, s: &str) {
        let _ = writeln!(self.code, "\t// {}", super::ascii(s));
    }
}

pub(super) fn imm(v: f64) -> String {
    format!("0f{:08X}", (v as f32).to_bits())
}

/// Threads per row: four where a head is wider than 64 and both head
/// dimensions are multiples of 4, two where both are even, else one. Each
/// thread takes `1/split` of a row's columns: at most 32 for heads up to
/// 128, which keeps a row, its partner operand and a gradient row in
/// registers.
pub(super) fn split_of(d: usize, dv: usize) -> usize {
    let divides = |s: usize| d.is_multiple_of(s) && dv.is_multiple_of(s);
    if d.max(dv) > 64 && divides(4) {
        4
    } else if divides(2) {
        2
    } else {
        1
    }
}

/// Rows a block takes with `split` threads a row: [`ROWS`], or fewer so
/// that a block has at most `2·ROWS` threads (more threads a block would
/// mean fewer blocks on a multiprocessor under [`MAX_REGISTERS`]).
pub(super) fn rows_per_block(split: usize) -> u32 {
    ROWS.min(2 * ROWS / split as u32)
}

/// A thread's place in its block: its index `t`, its row within the block
/// and which part of the row's columns it holds (u64 registers), and how
/// many threads share a row (1, 2 or 4).
pub(super) struct Place {
    pub t: String,
    pub row: String,
    pub part: String,
    pub split: usize,
}

impl Place {
    pub fn new(p: &mut Ptx, split: usize) -> Place {
        let (tid, t, row, part) = (p.r32(), p.r64(), p.r64(), p.r64());
        p.line(format!("mov.u32 {tid}, %tid.x;"));
        p.line(format!("cvt.u64.u32 {t}, {tid};"));
        assert!(matches!(split, 1 | 2 | 4), "split_of gives 1, 2 or 4 threads a row");
        if split == 1 {
            p.line(format!("mov.u64 {row}, {t};"));
            p.line(format!("mov.u64 {part}, 0;"));
        } else {
            p.line(format!("shr.u64 {row}, {t}, {};", split.trailing_zeros()));
            p.line(format!("and.b64 {part}, {t}, {};", split - 1));
        }
        Place { t, row, part, split }
    }

    /// Rows in a block ([`rows_per_block`]).
    pub fn rows(&self) -> u32 {
        rows_per_block(self.split)
    }

    /// Threads in a block.
    pub fn threads(&self) -> u32 {
        self.rows() * self.split as u32
    }

    /// `x` added over the row's threads (lanes `s·r … s·r + s − 1`) by
    /// butterfly shuffles, offsets 1 then 2: every thread of the row ends
    /// with the same sum, bit for bit (each adds the same pairs, and a
    /// float addition does not depend on its operands' order).
    pub fn across_row(&self, p: &mut Ptx, x: &str) -> String {
        let mut sum = x.to_string();
        let mut offset = 1;
        while offset < self.split {
            let (other, next) = (p.f(), p.f());
            p.line(format!("shfl.sync.bfly.b32 {other}, {sum}, {offset}, 31, -1;"));
            p.line(format!("add.rn.f32 {next}, {sum}, {other};"));
            sum = next;
            offset *= 2;
        }
        sum
    }

    /// The shared address of this thread's first column in a row of
    /// `width` floats starting at `row` (a shared byte address).
    pub fn shared_part(&self, p: &mut Ptx, row: &str, width: usize) -> String {
        let r = p.r64();
        p.line(format!("mad.lo.u64 {r}, {}, {}, {row};", self.part, width / self.split * 4));
        r
    }

    /// Registers holding this thread's columns of row `row` of an operand
    /// (`off` its batch offset), zero where `valid` is false.
    pub fn load_part(
        &self,
        p: &mut Ptx,
        (base, off): (&str, &str),
        row: &str,
        o: &Operand,
        width: usize,
        valid: &str,
    ) -> Vec<String> {
        let addr = self.part_address(p, (base, off), row, o, width);
        (0..width / self.split)
            .map(|c| {
                let r = p.f();
                p.line(format!("mov.f32 {r}, {};", imm(0.0)));
                p.line(format!("@{valid} ld.global.f32 {r}, [{addr}+{}];", c as i64 * o.col_stride * 4));
                r
            })
            .collect()
    }

    /// Stores `regs`, this thread's columns, into row `row` where `valid`.
    pub fn store_part(
        &self,
        p: &mut Ptx,
        (base, off): (&str, &str),
        row: &str,
        o: &Operand,
        regs: &[String],
        valid: &str,
    ) {
        let addr = self.part_address(p, (base, off), row, o, regs.len() * self.split);
        for (c, r) in regs.iter().enumerate() {
            p.line(format!("@{valid} st.global.f32 [{addr}+{}], {r};", c as i64 * o.col_stride * 4));
        }
    }

    /// The byte address of this thread's first column of row `row`:
    /// `base + 4·(off + row·rs + part·(width / split)·cs)`.
    fn part_address(&self, p: &mut Ptx, (base, off): (&str, &str), row: &str, o: &Operand, width: usize) -> String {
        let (e, a) = (p.r64(), p.r64());
        p.line(format!("mad.lo.s64 {e}, {row}, {}, {off};", o.row_stride));
        p.line(format!("mad.lo.s64 {e}, {}, {}, {e};", self.part, (width / self.split) as i64 * o.col_stride));
        p.line(format!("mad.lo.s64 {a}, {e}, 4, {base};"));
        a
    }
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

/// The keys a block of `rows` query rows from `first` on needs: all `tk`,
/// or (causal) up to its last row. A u64 register.
pub(super) fn keys_needed(p: &mut Ptx, a: &AttentionKernel, (first, rows): (&str, u32)) -> String {
    let kend = p.r64();
    if a.causal {
        p.line(format!("add.u64 {kend}, {first}, {rows};"));
        p.line(format!("min.u64 {kend}, {kend}, {};", a.tk));
    } else {
        p.line(format!("mov.u64 {kend}, {};", a.tk));
    }
    kend
}

/// `seen` = query row `i` sees key `j`: the row exists and (causal) `j ≤ i`.
pub(super) fn pair_seen(p: &mut Ptx, causal: bool, (j, i): (&str, &str), valid: &str, seen: &str) {
    if causal {
        p.line(format!("setp.le.u64 {seen}, {j}, {i};"));
        p.line(format!("and.pred {seen}, {seen}, {valid};"));
    } else {
        p.line(format!("mov.pred {seen}, {valid};"));
    }
}

/// The end of one tile's pass: every thread done with the tile (`bar.sync`)
/// before the next is loaded over it, `row0 += rows`, back to `$L_tile`;
/// `$L_tiles_done` follows the last tile.
pub(super) fn next_tile(p: &mut Ptx, row0: &str, rows: usize) {
    p.line("bar.sync 0;");
    p.line(format!("add.u64 {row0}, {row0}, {rows};"));
    p.line("bra.uni $L_tile;");
    p.label("$L_tiles_done");
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

/// The whole block loads a tile, thread `t` taking elements `t, t +
/// threads, …` (consecutive threads, consecutive columns: coalesced when
/// the operand's rows are contiguous). Where the block's threads are a
/// multiple of the tile's width (128 threads, rows of 64), a thread keeps
/// one column and steps over rows, so the loop has no division; otherwise
/// each element's row and column come from a 32-bit division. The caller
/// synchronises before use.
pub(super) fn load_tile(p: &mut Ptx, tile: &Tile, (t, threads): (&str, u32), label: &str) {
    let n = tile.rows * tile.width;
    let width = tile.width as u64;
    let (e, key, col, row, inside, f, sa) = (p.r64(), p.r64(), p.r64(), p.r64(), p.pred(), p.f(), p.r64());
    let fixed_column = u64::from(threads).is_multiple_of(width);
    p.line(format!("mov.u64 {e}, {t};"));
    if fixed_column {
        let (t32, k32, c32) = (p.r32(), p.r32(), p.r32());
        p.line(format!("cvt.u32.u64 {t32}, {t};"));
        p.line(format!("div.u32 {k32}, {t32}, {width};"));
        p.line(format!("rem.u32 {c32}, {t32}, {width};"));
        p.line(format!("cvt.u64.u32 {key}, {k32};"));
        p.line(format!("cvt.u64.u32 {col}, {c32};"));
    }
    p.label(label);
    let stop = p.pred();
    p.line(format!("setp.ge.u64 {stop}, {e}, {n};"));
    p.line(format!("@{stop} bra {label}_done;"));
    if !fixed_column {
        let (e32, k32, c32) = (p.r32(), p.r32(), p.r32());
        p.line(format!("cvt.u32.u64 {e32}, {e};"));
        p.line(format!("div.u32 {k32}, {e32}, {width};"));
        p.line(format!("rem.u32 {c32}, {e32}, {width};"));
        p.line(format!("cvt.u64.u32 {key}, {k32};"));
        p.line(format!("cvt.u64.u32 {col}, {c32};"));
    }
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
    p.line(format!("add.u64 {e}, {e}, {threads};"));
    if fixed_column {
        p.line(format!("add.u64 {key}, {key}, {};", u64::from(threads) / width));
    }
    p.line(format!("bra.uni {label};"));
    p.label(&format!("{label}_done"));
}
