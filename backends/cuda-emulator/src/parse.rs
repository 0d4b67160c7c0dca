//! PTX text to [`Function`]: registers numbered, labels resolved, shared
//! arrays placed from 0 in declaration order.

use std::collections::HashMap;

/// A parsed `.entry` function.
pub struct Function {
    pub name: String,
    pub(super) params: Vec<String>,
    pub(super) shared_bytes: usize,
    pub(super) insts: Vec<Inst>,
    pub(super) nregs: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Ty {
    F32,
    U64,
    S64,
    U32,
    S32,
    U16,
    U8,
    Pred,
    Bf16,
}

#[derive(Clone, Debug)]
pub(super) enum Arg {
    Reg(usize),
    NotReg(usize),
    Imm(u64),
    Mem(Box<Arg>, i64),
    Special(&'static str),
    Label(String),
    Param(String),
    /// `{%f1, %f2, %f3, %f4}` of a vector load or store.
    Regs(Vec<usize>),
}

#[derive(Clone, Debug)]
pub(super) struct Inst {
    pub(super) guard: Option<(usize, bool)>,
    pub(super) op: Vec<String>,
    pub(super) args: Vec<Arg>,
    pub(super) text: String,
    pub(super) target: usize,
}

pub(super) fn ty_of(s: &str) -> Option<Ty> {
    Some(match s {
        "f32" => Ty::F32,
        "u64" | "b64" => Ty::U64,
        "s64" => Ty::S64,
        "u32" | "b32" => Ty::U32,
        "s32" => Ty::S32,
        "u16" | "b16" => Ty::U16,
        "u8" => Ty::U8,
        "pred" => Ty::Pred,
        "bf16" => Ty::Bf16,
        _ => return None,
    })
}

impl Function {
    /// Parses the one `.entry` function of a module lpac emitted.
    pub fn parse(ptx: &str) -> Result<Function, String> {
        let mut name = String::new();
        let mut params = Vec::new();
        let mut shared: HashMap<String, usize> = HashMap::new();
        let mut shared_bytes = 0usize;
        let mut regs: HashMap<String, usize> = HashMap::new();
        let mut insts = Vec::new();
        let mut labels: HashMap<String, usize> = HashMap::new();
        for raw in ptx.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with("//") || line == "{" || line == "}" || line == ")" {
                continue;
            }
            if let Some(rest) = line.strip_prefix(".visible .entry ") {
                name = rest.trim_end_matches('(').to_string();
                continue;
            }
            if let Some(rest) = line.strip_prefix(".param .u64 ") {
                params.push(rest.trim_end_matches(',').to_string());
                continue;
            }
            if line.starts_with(".shared") {
                // .shared .align A .TYPE NAME[N];
                let parts: Vec<&str> = line.trim_end_matches(';').split_whitespace().collect();
                let (ty, decl) = (parts[parts.len() - 2], parts[parts.len() - 1]);
                let (sym, n) = decl.split_once('[').ok_or_else(|| format!("shared declaration `{line}`"))?;
                let n: usize = n.trim_end_matches(']').parse().map_err(|_| format!("`{line}`"))?;
                let size = if ty == ".b8" { 1 } else { 4 };
                shared_bytes = shared_bytes.next_multiple_of(16);
                shared.insert(sym.to_string(), shared_bytes);
                shared_bytes += n * size;
                continue;
            }
            if line.starts_with('.') {
                continue; // .version, .target, .address_size, .reg
            }
            if let Some(label) = line.strip_suffix(':') {
                labels.insert(label.to_string(), insts.len());
                continue;
            }
            insts.push(parse_inst(line, &mut regs, &shared)?);
        }
        for inst in &mut insts {
            if let Some(Arg::Label(l)) = inst.args.first()
                && inst.op[0] == "bra"
            {
                inst.target = *labels.get(l).ok_or_else(|| format!("no label {l}"))?;
            }
        }
        Ok(Function { name, params, shared_bytes, insts, nregs: regs.len() })
    }
}

pub(super) fn parse_inst(
    line: &str,
    regs: &mut HashMap<String, usize>,
    shared: &HashMap<String, usize>,
) -> Result<Inst, String> {
    let text = line.to_string();
    let mut rest = line.trim_end_matches(';').trim();
    let mut guard = None;
    if let Some(g) = rest.strip_prefix('@') {
        let (p, r) = g.split_once(' ').ok_or_else(|| format!("`{line}`"))?;
        let (neg, p) = match p.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, p),
        };
        let n = regs.len();
        guard = Some((*regs.entry(p.to_string()).or_insert(n), neg));
        rest = r.trim();
    }
    let (op, operands) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let op: Vec<String> = op.split('.').map(str::to_string).collect();
    let mut args = Vec::new();
    for a in split_operands(operands) {
        args.push(parse_arg(a.trim(), regs, shared)?);
    }
    Ok(Inst { guard, op, args, text, target: 0 })
}

pub(super) fn split_operands(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !s[start..].trim().is_empty() {
        out.push(&s[start..]);
    }
    out
}

pub(super) fn parse_arg(
    a: &str,
    regs: &mut HashMap<String, usize>,
    shared: &HashMap<String, usize>,
) -> Result<Arg, String> {
    if let Some(inner) = a.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
        let mut out = Vec::new();
        for r in inner.split(',') {
            let n = regs.len();
            out.push(*regs.entry(r.trim().to_string()).or_insert(n));
        }
        return Ok(Arg::Regs(out));
    }
    if let Some(inner) = a.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        let (base, off) = match inner.find(['+']) {
            Some(i) => (&inner[..i], inner[i + 1..].parse::<i64>().map_err(|_| format!("address `{a}`"))?),
            None => (inner, 0),
        };
        let base = if regs.contains_key(base) || base.starts_with('%') {
            parse_arg(base, regs, shared)?
        } else if let Some(&o) = shared.get(base) {
            Arg::Imm(o as u64)
        } else {
            Arg::Param(base.to_string())
        };
        return Ok(Arg::Mem(Box::new(base), off));
    }
    if let Some(sp) = ["%tid.x", "%ctaid.x", "%ntid.x", "%nctaid.x"].iter().find(|s| **s == a) {
        return Ok(Arg::Special(sp));
    }
    if let Some(r) = a.strip_prefix('!') {
        let n = regs.len();
        return Ok(Arg::NotReg(*regs.entry(r.to_string()).or_insert(n)));
    }
    if a.starts_with('%') {
        let n = regs.len();
        return Ok(Arg::Reg(*regs.entry(a.to_string()).or_insert(n)));
    }
    if a.starts_with('$') {
        return Ok(Arg::Label(a.to_string()));
    }
    if let Some(hex) = a.strip_prefix("0f") {
        return u32::from_str_radix(hex, 16).map(|b| Arg::Imm(u64::from(b))).map_err(|_| format!("`{a}`"));
    }
    if let Some(hex) = a.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).map(Arg::Imm).map_err(|_| format!("`{a}`"));
    }
    if let Ok(v) = a.parse::<i64>() {
        return Ok(Arg::Imm(v as u64));
    }
    if let Some(&o) = shared.get(a) {
        return Ok(Arg::Imm(o as u64));
    }
    Err(format!("operand `{a}`"))
}
