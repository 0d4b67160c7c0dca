//! Addresses, loads and stores, and the expressions of a loop kernel.

use lpac_ir::kernel::{BufferId, Expr, IndexMap};
use lpac_ir::{BinaryOp, DType, UnaryOp};

use super::{Em, R, Reg};

pub(super) fn f32_imm(v: f64) -> String {
    format!("0f{:08X}", (v as f32).to_bits())
}

/// Where an address points: the element's own row-major index, or an index
/// map.
pub(super) enum AddrOf {
    Flat(Reg),
    Map(IndexMap),
}

pub(super) fn saturate_i32(v: f64) -> i32 {
    if v.is_nan() { 0 } else { v.clamp(i32::MIN as f64, i32::MAX as f64) as i32 }
}

impl<'a> Em<'a> {
    /// Row-major coordinates of `flat` over `extents` into loop variables
    /// `first..`. `flat` is below the extents' product; where that fits in
    /// 32 bits (always, in practice) the divisions are 32-bit: ptxas turns a
    /// 64-bit division and remainder by a constant into ~120 instructions,
    /// a 32-bit pair into a handful — per element, in an elementwise kernel
    /// over a 32,001-word vocabulary's logits.
    pub(super) fn coordinates(&mut self, flat: Reg, first: usize, extents: &[usize]) -> R<()> {
        let total = extents.iter().try_fold(1u64, |acc, &e| acc.checked_mul(e as u64));
        if total.is_some_and(|t| t <= u64::from(u32::MAX)) {
            return self.coordinates32(flat, first, extents);
        }
        let mut rest = flat;
        for (a, &extent) in extents.iter().enumerate().rev() {
            let v = self.reg(3);
            if a == 0 {
                self.line(format!("mov.u64 {v}, {rest};"));
            } else {
                let q = self.reg(3);
                self.line(format!("rem.u64 {v}, {rest}, {extent};"));
                self.line(format!("div.u64 {q}, {rest}, {extent};"));
                rest = q;
            }
            self.vars[first + a] = Some(v);
        }
        Ok(())
    }

    /// [`Em::coordinates`] with 32-bit divisions (`flat` below 2^32).
    pub(super) fn coordinates32(&mut self, flat: Reg, first: usize, extents: &[usize]) -> R<()> {
        let mut rest = self.reg(2);
        self.line(format!("cvt.u32.u64 {rest}, {flat};"));
        for (a, &extent) in extents.iter().enumerate().rev() {
            let (v32, v) = (self.reg(2), self.reg(3));
            if a == 0 {
                self.line(format!("mov.u32 {v32}, {rest};"));
            } else {
                let q = self.reg(2);
                self.line(format!("rem.u32 {v32}, {rest}, {extent};"));
                self.line(format!("div.u32 {q}, {rest}, {extent};"));
                rest = q;
            }
            self.line(format!("cvt.u64.u32 {v}, {v32};"));
            self.vars[first + a] = Some(v);
        }
        Ok(())
    }

    /// `offset + Σ stride · var` as an s64 register.
    pub(super) fn affine(&mut self, map: &IndexMap) -> R<Reg> {
        let a = self.reg(3);
        self.line(format!("mov.s64 {a}, {};", map.offset));
        for (v, &s) in map.strides.iter().enumerate() {
            if s == 0 {
                continue;
            }
            let var = self
                .vars
                .get(v)
                .copied()
                .flatten()
                .ok_or_else(|| self.err(format!("loop variable {v} is not in scope")))?;
            self.line(format!("mad.lo.s64 {a}, {var}, {s}, {a};"));
        }
        Ok(a)
    }

    pub(super) fn address(&mut self, b: BufferId, at: AddrOf, d: DType) -> R<Reg> {
        let elem = match at {
            AddrOf::Flat(r) => r,
            AddrOf::Map(m) => self.affine(&m)?,
        };
        let base = *self.bases.get(&b).ok_or_else(|| self.err(format!("buffer b{} has no base", b.0)))?;
        let size = match d {
            DType::Bool => 1,
            DType::BF16 => 2,
            _ => 4,
        };
        let addr = self.reg(3);
        self.line(format!("mad.lo.s64 {addr}, {elem}, {size}, {base};"));
        Ok(addr)
    }

    pub(super) fn store(&mut self, addr: Reg, v: Reg, d: DType, guard: Option<Reg>) {
        let g = guard.map_or(String::new(), |p| format!("@{p} "));
        match d {
            DType::F32 => self.line(format!("{g}st.global.f32 [{addr}], {v};")),
            DType::BF16 => {
                // The value is bf16 already: the conversion is exact.
                let h = self.reg(1);
                self.line(format!("cvt.rn.bf16.f32 {h}, {v};"));
                self.line(format!("{g}st.global.b16 [{addr}], {h};"));
            }
            DType::I32 => self.line(format!("{g}st.global.s32 [{addr}], {v};")),
            _ => {
                let h = self.reg(1);
                self.line(format!("selp.u16 {h}, 1, 0, {v};"));
                self.line(format!("{g}st.global.u8 [{addr}], {h};"));
            }
        }
    }

    pub(super) fn load(&mut self, addr: Reg, d: DType, guard: Option<Reg>) -> Reg {
        let g = guard.map_or(String::new(), |p| format!("@{p} "));
        match d {
            DType::F32 => {
                let r = self.reg(4);
                self.line(format!("{g}ld.global.f32 {r}, [{addr}];"));
                r
            }
            DType::BF16 => {
                let (h, r) = (self.reg(1), self.reg(4));
                self.line(format!("mov.b16 {h}, 0;"));
                self.line(format!("{g}ld.global.b16 {h}, [{addr}];"));
                self.line(format!("cvt.f32.bf16 {r}, {h};"));
                r
            }
            DType::I32 => {
                let r = self.reg(2);
                self.line(format!("{g}ld.global.s32 {r}, [{addr}];"));
                r
            }
            _ => {
                let h = self.reg(1);
                let p = self.reg(0);
                self.line(format!("{g}ld.global.u8 {h}, [{addr}];"));
                self.line(format!("setp.ne.u16 {p}, {h}, 0;"));
                p
            }
        }
    }

    /// A constant of dtype `d` in a fresh register.
    pub(super) fn constant(&mut self, v: f64, d: DType) -> Reg {
        let r = self.of(d);
        match d {
            DType::F32 => self.line(format!("mov.f32 {r}, {};", f32_imm(v))),
            DType::I32 => self.line(format!("mov.s32 {r}, {};", saturate_i32(v))),
            _ => {
                let t = self.reg(2);
                self.line(format!("mov.u32 {t}, {};", u32::from(v != 0.0)));
                self.line(format!("setp.ne.u32 {r}, {t}, 0;"));
            }
        }
        r
    }

    pub(super) fn value(&mut self, e: usize) -> R<Reg> {
        if let Some(v) = self.vals[e] {
            return Ok(v);
        }
        let t = self.k.exprs[e].clone();
        // bf16 arithmetic: in f32, rounded after (loads and casts round
        // themselves).
        let stored = t.dtype;
        let d = if stored == DType::BF16 { DType::F32 } else { stored };
        let rounds = stored == DType::BF16
            && !matches!(t.expr, Expr::Load { .. } | Expr::LoadIf { .. } | Expr::Cast(_) | Expr::Accumulated);
        let v = match &t.expr {
            Expr::Load { buffer, index } => {
                let addr = self.address(*buffer, AddrOf::Map(index.clone()), stored)?;
                self.load(addr, stored, None)
            }
            Expr::LoadIf { buffer, index, bound, lo, hi, default } => {
                let b = self.affine(bound)?;
                let (p1, p2, p) = (self.reg(0), self.reg(0), self.reg(0));
                self.line(format!("setp.ge.s64 {p1}, {b}, {lo};"));
                self.line(format!("setp.lt.s64 {p2}, {b}, {hi};"));
                self.line(format!("and.pred {p}, {p1}, {p2};"));
                let addr = self.address(*buffer, AddrOf::Map(index.clone()), stored)?;
                let out = self.constant(*default, d);
                let loaded = self.load(addr, stored, Some(p));
                self.select_into(out, p, loaded, d);
                out
            }
            Expr::Const(v) => self.constant(*v, d),
            Expr::Index(map) => {
                let a = self.affine(map)?;
                let r = self.of(d);
                match d {
                    DType::F32 => self.line(format!("cvt.rn.f32.s64 {r}, {a};")),
                    DType::I32 => self.line(format!("cvt.s32.s64 {r}, {a};")),
                    _ => self.line(format!("setp.ne.s64 {r}, {a}, 0;")),
                }
                r
            }
            Expr::Random { key, counter } => {
                let c = self.affine(counter)?;
                let k =
                    *self.key_regs.get(key).ok_or_else(|| self.err(format!("e{e}: stream key {key} not loaded")))?;
                self.uniform(k, c)
            }
            Expr::Unary(op, a) => {
                let x = self.value(a.index())?;
                self.unary(*op, x, d)?
            }
            Expr::Binary(op, a, b) => {
                let (x, y) = (self.value(a.index())?, self.value(b.index())?);
                let od = match self.k.exprs[a.index()].dtype {
                    DType::BF16 => DType::F32,
                    od => od,
                };
                self.binary(*op, x, y, od)?
            }
            Expr::Select(c, a, b) => {
                let (c, x, y) = (self.value(c.index())?, self.value(a.index())?, self.value(b.index())?);
                let r = self.of(d);
                match d {
                    DType::F32 => self.line(format!("selp.f32 {r}, {x}, {y}, {c};")),
                    DType::I32 => self.line(format!("selp.s32 {r}, {x}, {y}, {c};")),
                    _ => {
                        let (nc, t1, t2) = (self.reg(0), self.reg(0), self.reg(0));
                        self.line(format!("not.pred {nc}, {c};"));
                        self.line(format!("and.pred {t1}, {c}, {x};"));
                        self.line(format!("and.pred {t2}, {nc}, {y};"));
                        self.line(format!("or.pred {r}, {t1}, {t2};"));
                    }
                }
                r
            }
            Expr::Cast(a) => {
                let x = self.value(a.index())?;
                self.cast(x, self.k.exprs[a.index()].dtype, stored)
            }
            Expr::Accumulated => self.acc.ok_or_else(|| self.err(format!("e{e} reads the reduction outside it")))?,
        };
        let v = if rounds { self.round_bf16(v) } else { v };
        self.vals[e] = Some(v);
        Ok(v)
    }

    /// A uniform f32 in [0, 1) exactly as `lpac_ir::random::uniform_f32`:
    /// Philox4x32-10 of counter `(c, 0)` under the 64-bit stream key, the
    /// top 24 bits of word 0 times 2^-24.
    pub(super) fn uniform(&mut self, key: Reg, counter: Reg) -> Reg {
        use lpac_ir::random::{PHILOX_M0, PHILOX_M1, PHILOX_ROUNDS, PHILOX_W0, PHILOX_W1};
        let mut c = [self.reg(2), self.reg(2), self.reg(2), self.reg(2)];
        let mut k = [self.reg(2), self.reg(2)];
        self.line(format!("cvt.u32.u64 {}, {counter};", c[0]));
        let hi = self.reg(3);
        self.line(format!("shr.u64 {hi}, {counter}, 32;"));
        self.line(format!("cvt.u32.u64 {}, {hi};", c[1]));
        self.line(format!("mov.u32 {}, 0;", c[2]));
        self.line(format!("mov.u32 {}, 0;", c[3]));
        self.line(format!("cvt.u32.u64 {}, {key};", k[0]));
        let khi = self.reg(3);
        self.line(format!("shr.u64 {khi}, {key}, 32;"));
        self.line(format!("cvt.u32.u64 {}, {khi};", k[1]));
        for round in 0..PHILOX_ROUNDS {
            if round > 0 {
                let (k0, k1) = (self.reg(2), self.reg(2));
                self.line(format!("add.u32 {k0}, {}, 0x{PHILOX_W0:08X};", k[0]));
                self.line(format!("add.u32 {k1}, {}, 0x{PHILOX_W1:08X};", k[1]));
                k = [k0, k1];
            }
            let (hi0, lo0, hi1, lo1) = (self.reg(2), self.reg(2), self.reg(2), self.reg(2));
            self.line(format!("mul.hi.u32 {hi0}, {}, 0x{PHILOX_M0:08X};", c[0]));
            self.line(format!("mul.lo.u32 {lo0}, {}, 0x{PHILOX_M0:08X};", c[0]));
            self.line(format!("mul.hi.u32 {hi1}, {}, 0x{PHILOX_M1:08X};", c[2]));
            self.line(format!("mul.lo.u32 {lo1}, {}, 0x{PHILOX_M1:08X};", c[2]));
            let (n0, n2) = (self.reg(2), self.reg(2));
            self.line(format!("xor.b32 {n0}, {hi1}, {};", c[1]));
            self.line(format!("xor.b32 {n0}, {n0}, {};", k[0]));
            self.line(format!("xor.b32 {n2}, {hi0}, {};", c[3]));
            self.line(format!("xor.b32 {n2}, {n2}, {};", k[1]));
            c = [n0, lo1, n2, lo0];
        }
        let (top, u) = (self.reg(2), self.reg(4));
        self.line(format!("shr.u32 {top}, {}, 8;", c[0]));
        self.line(format!("cvt.rn.f32.u32 {u}, {top};"));
        self.line(format!("mul.rn.f32 {u}, {u}, {};", f32_imm(1.0 / 16_777_216.0)));
        u
    }

    /// `out = p ? loaded : out` (the guarded load's value where in range).
    pub(super) fn select_into(&mut self, out: Reg, p: Reg, loaded: Reg, d: DType) {
        match d {
            DType::F32 | DType::BF16 => self.line(format!("selp.f32 {out}, {loaded}, {out}, {p};")),
            DType::I32 => self.line(format!("selp.s32 {out}, {loaded}, {out}, {p};")),
            _ => {
                let (np, t1, t2) = (self.reg(0), self.reg(0), self.reg(0));
                self.line(format!("not.pred {np}, {p};"));
                self.line(format!("and.pred {t1}, {p}, {loaded};"));
                self.line(format!("and.pred {t2}, {np}, {out};"));
                self.line(format!("or.pred {out}, {t1}, {t2};"));
            }
        }
    }

    pub(super) fn cast(&mut self, x: Reg, from: DType, to: DType) -> Reg {
        if from == to {
            return x;
        }
        // bf16 values live in f32 registers: from bf16 is from f32; to bf16
        // is to f32, then rounded.
        if from == DType::BF16 {
            return self.cast(x, DType::F32, to);
        }
        if to == DType::BF16 {
            let f = self.cast(x, from, DType::F32);
            return self.round_bf16(f);
        }
        let r = self.of(to);
        match (from, to) {
            (DType::F32, DType::I32) => self.line(format!("cvt.rzi.s32.f32 {r}, {x};")),
            (DType::I32, DType::F32) => self.line(format!("cvt.rn.f32.s32 {r}, {x};")),
            (DType::Bool, DType::F32) => self.line(format!("selp.f32 {r}, {}, {}, {x};", f32_imm(1.0), f32_imm(0.0))),
            (DType::Bool, _) => self.line(format!("selp.s32 {r}, 1, 0, {x};")),
            // `x != 0`; NaN is not zero.
            (DType::F32, _) => self.line(format!("setp.neu.f32 {r}, {x}, {};", f32_imm(0.0))),
            _ => self.line(format!("setp.ne.s32 {r}, {x}, 0;")),
        }
        r
    }

    /// `x` rounded to the nearest bf16 (ties to even), in an f32 register.
    pub(super) fn round_bf16(&mut self, x: Reg) -> Reg {
        let (h, r) = (self.reg(1), self.reg(4));
        self.line(format!("cvt.rn.bf16.f32 {h}, {x};"));
        self.line(format!("cvt.f32.bf16 {r}, {h};"));
        r
    }

    pub(super) fn unary(&mut self, op: UnaryOp, x: Reg, d: DType) -> R<Reg> {
        let r = self.of(d);
        let int = d == DType::I32;
        match op {
            UnaryOp::Neg if int => self.line(format!("neg.s32 {r}, {x};")),
            UnaryOp::Abs if int => self.line(format!("abs.s32 {r}, {x};")),
            UnaryOp::Neg => self.line(format!("neg.f32 {r}, {x};")),
            UnaryOp::Abs => self.line(format!("abs.f32 {r}, {x};")),
            UnaryOp::Not => self.line(format!("not.pred {r}, {x};")),
            UnaryOp::Exp => {
                let t = self.reg(4);
                self.line(format!("mul.rn.f32 {t}, {x}, {};", f32_imm(std::f64::consts::LOG2_E)));
                self.line(format!("ex2.approx.f32 {r}, {t};"));
            }
            UnaryOp::Log => {
                let t = self.reg(4);
                self.line(format!("lg2.approx.f32 {t}, {x};"));
                self.line(format!("mul.rn.f32 {r}, {t}, {};", f32_imm(std::f64::consts::LN_2)));
            }
            UnaryOp::Sqrt => self.line(format!("sqrt.rn.f32 {r}, {x};")),
            UnaryOp::Rsqrt => self.line(format!("rsqrt.approx.f32 {r}, {x};")),
            UnaryOp::Recip => self.line(format!("rcp.rn.f32 {r}, {x};")),
            UnaryOp::Tanh => self.tanh(x, r),
            UnaryOp::Sin | UnaryOp::Cos => {
                let reduced = self.reduce_angle(x);
                let f = if op == UnaryOp::Sin { "sin" } else { "cos" };
                self.line(format!("{f}.approx.f32 {r}, {reduced};"));
            }
        }
        Ok(r)
    }

    /// `x − 2π·round(x / 2π)` (Cody–Waite: 2π split in a short high part,
    /// exact in the product for the angles models use, and the rest), so
    /// `sin.approx`/`cos.approx` (accurate to ~5e-7 on [−π, π], not beyond)
    /// see a reduced argument: RoPE's angles reach the sequence length.
    pub(super) fn reduce_angle(&mut self, x: Reg) -> Reg {
        const TWO_PI_HI: f64 = 6.28125;
        let two_pi_lo = std::f64::consts::TAU - TWO_PI_HI;
        let (k, nk, a, b) = (self.reg(4), self.reg(4), self.reg(4), self.reg(4));
        self.line(format!("mul.rn.f32 {k}, {x}, {};", f32_imm(1.0 / std::f64::consts::TAU)));
        self.line(format!("cvt.rni.f32.f32 {k}, {k};"));
        self.line(format!("neg.f32 {nk}, {k};"));
        self.line(format!("fma.rn.f32 {a}, {nk}, {}, {x};", f32_imm(TWO_PI_HI)));
        self.line(format!("fma.rn.f32 {b}, {nk}, {}, {a};", f32_imm(two_pi_lo)));
        b
    }

    /// tanh as the CPU backend computes it (Cephes tanhf): an odd
    /// polynomial for |x| < 0.625, else 1 − 2/(e^{2|x|} + 1), with x's sign.
    pub(super) fn tanh(&mut self, x: Reg, r: Reg) {
        const P: [f64; 5] = [
            -5.704_988_727_45e-3,
            2.063_908_879_54e-2,
            -5.373_971_555_31e-2,
            1.333_144_220_36e-1,
            -3.333_328_194_22e-1,
        ];
        let (ax, z, poly, small) = (self.reg(4), self.reg(4), self.reg(4), self.reg(4));
        self.line(format!("abs.f32 {ax}, {x};"));
        self.line(format!("mul.rn.f32 {z}, {x}, {x};"));
        self.line(format!("mov.f32 {poly}, {};", f32_imm(P[0])));
        for c in &P[1..] {
            self.line(format!("fma.rn.f32 {poly}, {poly}, {z}, {};", f32_imm(*c)));
        }
        // small = x + x·z·poly
        let xz = self.reg(4);
        self.line(format!("mul.rn.f32 {xz}, {x}, {z};"));
        self.line(format!("fma.rn.f32 {small}, {xz}, {poly}, {x};"));
        // large = 1 − 2/(e^{2|x|} + 1), signed
        let (t, e, den, q, large) = (self.reg(4), self.reg(4), self.reg(4), self.reg(4), self.reg(4));
        self.line(format!("mul.rn.f32 {t}, {ax}, {};", f32_imm(2.0 * std::f64::consts::LOG2_E)));
        self.line(format!("ex2.approx.f32 {e}, {t};"));
        self.line(format!("add.rn.f32 {den}, {e}, {};", f32_imm(1.0)));
        self.line(format!("div.rn.f32 {q}, {}, {den};", f32_imm(2.0)));
        self.line(format!("sub.rn.f32 {large}, {}, {q};", f32_imm(1.0)));
        let signed = self.reg(4);
        self.line(format!("copysign.f32 {signed}, {x}, {large};"));
        let use_small = self.reg(0);
        self.line(format!("setp.lt.f32 {use_small}, {ax}, {};", f32_imm(0.625)));
        self.line(format!("selp.f32 {r}, {small}, {signed}, {use_small};"));
    }

    /// `x^y` as Rust's `powf` defines it: `2^(y·log2|x|)`, negative for a
    /// negative `x` and odd integer `y`, NaN for a negative `x` and
    /// non-integer `y`, 1 for `y = 0`, and for `x = 0` 0 (`y > 0`) or
    /// infinity (`y < 0`).
    pub(super) fn pow(&mut self, x: Reg, y: Reg, r: Reg) {
        let (ax, l, t, m) = (self.reg(4), self.reg(4), self.reg(4), self.reg(4));
        self.line(format!("abs.f32 {ax}, {x};"));
        self.line(format!("lg2.approx.f32 {l}, {ax};"));
        self.line(format!("mul.rn.f32 {t}, {y}, {l};"));
        self.line(format!("ex2.approx.f32 {m}, {t};"));
        // y an integer? odd?
        let (yi, yt, is_int, odd_bit, is_odd) = (self.reg(2), self.reg(4), self.reg(0), self.reg(2), self.reg(0));
        self.line(format!("cvt.rzi.s32.f32 {yi}, {y};"));
        self.line(format!("cvt.rn.f32.s32 {yt}, {yi};"));
        self.line(format!("setp.eq.f32 {is_int}, {yt}, {y};"));
        self.line(format!("and.b32 {odd_bit}, {yi}, 1;"));
        self.line(format!("setp.ne.and.s32 {is_odd}, {odd_bit}, 0, {is_int};"));
        // negative base
        let (neg, neg_m, nan, on_neg, x_neg) = (self.reg(4), self.reg(4), self.reg(4), self.reg(4), self.reg(0));
        self.line(format!("neg.f32 {neg}, {m};"));
        self.line(format!("selp.f32 {neg_m}, {neg}, {m}, {is_odd};"));
        self.line(format!("mov.f32 {nan}, 0f7FC00000;"));
        self.line(format!("selp.f32 {on_neg}, {neg_m}, {nan}, {is_int};"));
        self.line(format!("setp.lt.f32 {x_neg}, {x}, {};", f32_imm(0.0)));
        let (v, y0) = (self.reg(4), self.reg(0));
        self.line(format!("selp.f32 {v}, {on_neg}, {m}, {x_neg};"));
        self.line(format!("setp.eq.f32 {y0}, {y}, {};", f32_imm(0.0)));
        self.line(format!("selp.f32 {r}, {}, {v}, {y0};", f32_imm(1.0)));
    }

    pub(super) fn binary(&mut self, op: BinaryOp, x: Reg, y: Reg, d: DType) -> R<Reg> {
        let cmp = |op: BinaryOp| match op {
            BinaryOp::Lt => Some("lt"),
            BinaryOp::Le => Some("le"),
            BinaryOp::Gt => Some("gt"),
            BinaryOp::Ge => Some("ge"),
            BinaryOp::Eq => Some("eq"),
            BinaryOp::Ne => Some("ne"),
            _ => None,
        };
        if let Some(c) = cmp(op) {
            let r = self.reg(0);
            match d {
                // `ne` on floats is true for NaN (unordered), as in Rust.
                DType::F32 => {
                    let c = if c == "ne" { "neu" } else { c };
                    self.line(format!("setp.{c}.f32 {r}, {x}, {y};"));
                }
                DType::I32 => self.line(format!("setp.{c}.s32 {r}, {x}, {y};")),
                _ => {
                    // bool equality: xor, negated for eq.
                    let t = self.reg(0);
                    self.line(format!("xor.pred {t}, {x}, {y};"));
                    if c == "eq" {
                        self.line(format!("not.pred {r}, {t};"));
                    } else if c == "ne" {
                        self.line(format!("mov.pred {r}, {t};"));
                    } else {
                        return Err(self.err(format!("`{}` of bool values", op.name())));
                    }
                }
            }
            return Ok(r);
        }
        let r = self.of(d);
        match (op, d) {
            (BinaryOp::And, _) => self.line(format!("and.pred {r}, {x}, {y};")),
            (BinaryOp::Or, _) => self.line(format!("or.pred {r}, {x}, {y};")),
            (BinaryOp::Add, DType::F32) => self.line(format!("add.rn.f32 {r}, {x}, {y};")),
            (BinaryOp::Sub, DType::F32) => self.line(format!("sub.rn.f32 {r}, {x}, {y};")),
            (BinaryOp::Mul, DType::F32) => self.line(format!("mul.rn.f32 {r}, {x}, {y};")),
            (BinaryOp::Div, DType::F32) => self.line(format!("div.rn.f32 {r}, {x}, {y};")),
            (BinaryOp::Max, DType::F32) => self.line(format!("max.NaN.f32 {r}, {x}, {y};")),
            (BinaryOp::Min, DType::F32) => self.line(format!("min.NaN.f32 {r}, {x}, {y};")),
            (BinaryOp::Pow, DType::F32) => self.pow(x, y, r),
            (BinaryOp::Add, _) => self.line(format!("add.s32 {r}, {x}, {y};")),
            (BinaryOp::Sub, _) => self.line(format!("sub.s32 {r}, {x}, {y};")),
            (BinaryOp::Mul, _) => self.line(format!("mul.lo.s32 {r}, {x}, {y};")),
            (BinaryOp::Max, _) => self.line(format!("max.s32 {r}, {x}, {y};")),
            (BinaryOp::Min, _) => self.line(format!("min.s32 {r}, {x}, {y};")),
            (op, d) => return Err(self.err(format!("`{}` on {} is not emitted yet", op.name(), d.name()))),
        }
        Ok(r)
    }
}
