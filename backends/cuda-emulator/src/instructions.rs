//! What an arithmetic, logic or conversion instruction does to a thread's
//! registers, by PTX's definitions (memory instructions: `memory.rs`).

use super::parse::{Arg, Inst, Ty, ty_of};
use super::{Ctx, Thread};

pub(super) fn val(ctx: &Ctx, th: &Thread, tid: u32, a: &Arg) -> Result<u64, String> {
    Ok(match a {
        Arg::Reg(r) => th.regs[*r],
        Arg::NotReg(r) => u64::from(th.regs[*r] == 0),
        Arg::Imm(v) => *v,
        Arg::Special(s) => u64::from(match *s {
            "%tid.x" => tid,
            "%ctaid.x" => ctx.cta,
            "%ntid.x" => ctx.block,
            _ => ctx.grid,
        }),
        Arg::Param(p) => *ctx.params.get(p.as_str()).ok_or_else(|| format!("no parameter {p}"))?,
        other => return Err(format!("operand {other:?}")),
    })
}

pub(super) fn fl(bits: u64) -> f32 {
    f32::from_bits(bits as u32)
}
pub(super) fn fb(v: f32) -> u64 {
    u64::from(v.to_bits())
}

/// An integer of type `t` from raw register bits (sign-extended when signed).
pub(super) fn int(t: Ty, bits: u64) -> i128 {
    match t {
        Ty::U64 => i128::from(bits),
        Ty::S64 => i128::from(bits as i64),
        Ty::U32 => i128::from(bits as u32),
        Ty::S32 => i128::from(bits as u32 as i32),
        Ty::U16 => i128::from(bits as u16),
        Ty::U8 => i128::from(bits as u8),
        Ty::Pred => i128::from(bits != 0),
        Ty::F32 | Ty::Bf16 => unreachable!(),
    }
}

/// A bf16 (the top half of an f32) as f32: exact.
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// `cvt.rn.bf16.f32`: to the nearest bf16, ties to even; NaN stays NaN.
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7FFF + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

pub(super) fn wrap(t: Ty, v: i128) -> u64 {
    match t {
        Ty::U64 | Ty::S64 => v as u64,
        Ty::U32 | Ty::S32 => u64::from(v as u32),
        Ty::U16 => u64::from(v as u16),
        Ty::U8 => u64::from(v as u8),
        Ty::Pred => u64::from(v != 0),
        Ty::F32 | Ty::Bf16 => unreachable!(),
    }
}

pub(super) fn fmax_nan(a: f32, b: f32, nan: bool, max: bool) -> f32 {
    if a.is_nan() || b.is_nan() {
        return if nan {
            f32::NAN
        } else if a.is_nan() {
            b
        } else {
            a
        };
    }
    if max { a.max(b) } else { a.min(b) }
}

pub(super) fn step(ctx: &Ctx, inst: &Inst, th: &mut Thread, tid: u32) -> Result<(), String> {
    let op = &inst.op;
    let base = op[0].as_str();
    let t = ty_of(op.last().unwrap()).unwrap_or(Ty::U64);
    let dst = match inst.args.first() {
        Some(Arg::Reg(r)) => Some(*r),
        _ => None,
    };
    let v = |i: usize| val(ctx, th, tid, &inst.args[i]);
    let result: u64 = match base {
        "mov" => v(1)?,
        "cvta" => v(1)?,
        "cvt" => convert(op, v(1)?)?,
        "setp" => {
            let cmp = op[1].as_str();
            let ct = ty_of(op.last().unwrap()).ok_or("setp type")?;
            let (a, b) = (v(1)?, v(2)?);
            let r = if ct == Ty::F32 {
                let (x, y) = (fl(a), fl(b));
                match cmp {
                    "eq" => x == y,
                    "ne" => x != y && !x.is_nan() && !y.is_nan(),
                    "lt" => x < y,
                    "le" => x <= y,
                    "gt" => x > y,
                    "ge" => x >= y,
                    _ => return Err(format!("comparison {cmp}")),
                }
            } else {
                let (x, y) = (int(ct, a), int(ct, b));
                match cmp {
                    "eq" => x == y,
                    "ne" => x != y,
                    "lt" => x < y,
                    "le" => x <= y,
                    "gt" => x > y,
                    "ge" => x >= y,
                    _ => return Err(format!("comparison {cmp}")),
                }
            };
            let r = match op.get(2).map(String::as_str) {
                Some("and") if op.len() == 4 => r && v(3)? != 0,
                Some("or") if op.len() == 4 => r || v(3)? != 0,
                _ => r,
            };
            u64::from(r)
        }
        "selp" => {
            if v(3)? != 0 {
                v(1)?
            } else {
                v(2)?
            }
        }
        "not" if t == Ty::Pred => u64::from(v(1)? == 0),
        "not" => wrap(t, !int(t, v(1)?)),
        "and" | "or" | "xor" => {
            let (a, b) = (v(1)?, v(2)?);
            let r = match base {
                "and" => a & b,
                "or" => a | b,
                _ => a ^ b,
            };
            if t == Ty::Pred { u64::from(r & 1 != 0) } else { wrap(t, i128::from(r)) }
        }
        "shl" => wrap(t, int(t, v(1)?) << (v(2)? as u32)),
        "popc" => u64::from((int(t, v(1)?) as u64).count_ones()),
        "shr" => wrap(t, int(t, v(1)?) >> (v(2)? as u32)),
        _ if t == Ty::F32 => float_op(
            op,
            &[v(1)?, inst.args.get(2).map_or(Ok(0), |_| v(2))?, inst.args.get(3).map_or(Ok(0), |_| v(3))?],
        )?,
        "mul" if op[1] == "wide" => {
            let wt = if t == Ty::S32 { Ty::S64 } else { Ty::U64 };
            wrap(wt, int(t, v(1)?) * int(t, v(2)?))
        }
        "add" | "sub" | "mul" | "div" | "rem" | "min" | "max" | "mad" | "neg" => {
            let a = int(t, v(1)?);
            let b = if base == "neg" { 0 } else { int(t, v(2)?) };
            let r = match base {
                "add" => a + b,
                "sub" => a - b,
                "mul" if op[1] == "hi" => (a * b) >> if matches!(t, Ty::U64 | Ty::S64) { 64 } else { 32 },
                "mul" => a * b,
                "div" => a.checked_div(b).ok_or("division by zero")?,
                "rem" => a.checked_rem(b).ok_or("division by zero")?,
                "min" => a.min(b),
                "max" => a.max(b),
                "neg" => -a,
                _ => a * b + int(t, v(3)?),
            };
            wrap(t, r)
        }
        _ => return Err("not emulated".into()),
    };
    if let Some(d) = dst {
        th.regs[d] = result;
    }
    Ok(())
}

pub(super) fn float_op(op: &[String], a: &[u64; 3]) -> Result<u64, String> {
    let (x, y, z) = (fl(a[0]), fl(a[1]), fl(a[2]));
    let has = |m: &str| op.iter().any(|o| o == m);
    Ok(fb(match op[0].as_str() {
        "add" => x + y,
        "sub" => x - y,
        "mul" => x * y,
        "div" => x / y,
        "fma" | "mad" => x.mul_add(y, z),
        "neg" => -x,
        "abs" => x.abs(),
        "max" => fmax_nan(x, y, has("NaN"), true),
        "min" => fmax_nan(x, y, has("NaN"), false),
        "sqrt" => x.sqrt(),
        "rsqrt" => 1.0 / x.sqrt(),
        "rcp" => 1.0 / x,
        "ex2" => x.exp2(),
        "lg2" => x.log2(),
        "sin" => x.sin(),
        "cos" => x.cos(),
        "tanh" => x.tanh(),
        // copysign d, a, b: b's magnitude with a's sign.
        "copysign" => y.copysign(x),
        other => return Err(format!("float operation {other}")),
    }))
}

pub(super) fn convert(op: &[String], bits: u64) -> Result<u64, String> {
    let to = ty_of(&op[op.len() - 2]).ok_or("cvt type")?;
    let from = ty_of(&op[op.len() - 1]).ok_or("cvt type")?;
    let rounding = if op.len() == 4 { op[1].as_str() } else { "" };
    Ok(match (to, from) {
        (Ty::F32, Ty::Bf16) => fb(bf16_to_f32(bits as u16)),
        (Ty::Bf16, Ty::F32) => u64::from(f32_to_bf16(fl(bits))),
        (Ty::F32, Ty::F32) => {
            let x = fl(bits);
            fb(match rounding {
                "rni" => x.round_ties_even(),
                "rzi" => x.trunc(),
                "rmi" => x.floor(),
                "rpi" => x.ceil(),
                _ => x,
            })
        }
        (Ty::F32, from) => fb(int(from, bits) as f32),
        (to, Ty::F32) => {
            let x = fl(bits);
            let r = match rounding {
                "rni" => x.round_ties_even(),
                "rmi" => x.floor(),
                "rpi" => x.ceil(),
                _ => x.trunc(),
            };
            let v = if r.is_nan() { 0 } else { r as i64 };
            let v = match to {
                Ty::S32 => i128::from(v.clamp(i64::from(i32::MIN), i64::from(i32::MAX))),
                Ty::U32 => i128::from(v.clamp(0, i64::from(u32::MAX))),
                _ => i128::from(v),
            };
            wrap(to, v)
        }
        (to, from) => wrap(to, int(from, bits)),
    })
}
