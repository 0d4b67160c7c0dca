//! A PTX emulator for the subset lpac emits, for tests on machines with no
//! GPU: each function is parsed, then every block of its grid runs on the
//! CPU, thread by thread between synchronisation points (`bar.sync`,
//! `bar.warp.sync`, `shfl.sync`, `vote.sync`) — in increasing thread order
//! after one release, decreasing after the next — blocks one after another
//! in block order.
//!
//! Arithmetic follows PTX's definitions with Rust's IEEE f32 operations
//! (`add.rn` etc. round the same way; `fma.rn` is `mul_add`); the `.approx`
//! instructions are computed exactly, so results agree with a GPU to the
//! hardware approximations' error (about 2 ulp). Global memory is a list of
//! buffers, an address being `(buffer + 1) << 40 | byte offset`; shared
//! memory is per block, addressed from 0 in declaration order. Anything
//! outside the subset is an error naming the instruction, and so is what a
//! GPU would get wrong where this emulator's fixed order gets it right: a
//! data race (`races.rs`: two threads' accesses to a byte, at least one a
//! write, that no barrier, or fence and atomic, orders), a read of shared
//! memory no thread of the block wrote, a full-mask warp instruction with
//! lanes missing, a block barrier some threads exited before, an access not
//! aligned to its size.

mod races;

use std::collections::HashMap;

use races::{Access, Kind, Race, Races};

/// A parsed `.entry` function.
pub struct Function {
    pub name: String,
    params: Vec<String>,
    shared_bytes: usize,
    insts: Vec<Inst>,
    nregs: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ty {
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
enum Arg {
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
struct Inst {
    guard: Option<(usize, bool)>,
    op: Vec<String>,
    args: Vec<Arg>,
    text: String,
    target: usize,
}

fn ty_of(s: &str) -> Option<Ty> {
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
                let (sym, n) = decl.split_once('[').ok_or(format!("shared declaration `{line}`"))?;
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
                inst.target = *labels.get(l).ok_or(format!("no label {l}"))?;
            }
        }
        Ok(Function { name, params, shared_bytes, insts, nregs: regs.len() })
    }
}

fn parse_inst(line: &str, regs: &mut HashMap<String, usize>, shared: &HashMap<String, usize>) -> Result<Inst, String> {
    let text = line.to_string();
    let mut rest = line.trim_end_matches(';').trim();
    let mut guard = None;
    if let Some(g) = rest.strip_prefix('@') {
        let (p, r) = g.split_once(' ').ok_or(format!("`{line}`"))?;
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

fn split_operands(s: &str) -> Vec<&str> {
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

fn parse_arg(a: &str, regs: &mut HashMap<String, usize>, shared: &HashMap<String, usize>) -> Result<Arg, String> {
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

/// Global memory: buffers by index.
pub struct Memory {
    pub buffers: Vec<Vec<u8>>,
}

impl Memory {
    pub fn address(buffer: usize) -> u64 {
        ((buffer as u64) + 1) << 40
    }
    fn at(&mut self, addr: u64, len: usize) -> Result<&mut [u8], String> {
        let (b, off) = (((addr >> 40) as usize).wrapping_sub(1), (addr & ((1 << 40) - 1)) as usize);
        let buf = self.buffers.get_mut(b).ok_or(format!("address {addr:#x} is in no buffer"))?;
        let n = buf.len();
        buf.get_mut(off..off + len)
            .ok_or(format!("address {addr:#x}: offset {off} + {len} past buffer b{b} of {n} bytes"))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Wait {
    No,
    Bar,
    Warp,
    Shfl,
    Vote,
    Done,
}

struct Thread {
    pc: usize,
    regs: Vec<u64>,
    wait: Wait,
}

/// Runs `f` over `grid` blocks of `block` threads with `args` (parameter
/// values in order).
pub fn launch(f: &Function, grid: u32, block: u32, args: &[u64], mem: &mut Memory) -> Result<(), String> {
    if args.len() != f.params.len() {
        return Err(format!("{}: {} arguments for {} parameters", f.name, args.len(), f.params.len()));
    }
    let params: HashMap<&str, u64> = f.params.iter().map(String::as_str).zip(args.iter().copied()).collect();
    let mut races = Races::new(f.shared_bytes.max(4));
    for cta in 0..grid {
        let mut shared = vec![0u8; f.shared_bytes.max(4)];
        let mut threads: Vec<Thread> =
            (0..block).map(|_| Thread { pc: 0, regs: vec![0; f.nregs], wait: Wait::No }).collect();
        let ctx = Ctx { f, params: &params, cta, grid, block };
        // Warp by warp, each warp's threads one at a time: a warp runs
        // through its warp-level synchronisations (shuffles, votes,
        // `bar.warp.sync`) to the next block barrier before the next warp
        // starts. Warps (and lanes) go in increasing order after one block
        // barrier and decreasing after the next: whichever of a writer and
        // its reader comes first in one order comes last in the other, so a
        // missing barrier shows either way — and one warp runs ahead of the
        // others as far as the hardware would let it.
        let warps = threads.len().div_ceil(32);
        races.start_block(cta, warps);
        let mut descending = false;
        loop {
            let order: Vec<usize> = if descending { (0..warps).rev().collect() } else { (0..warps).collect() };
            for w in order {
                let lanes: Vec<usize> = (w * 32..((w + 1) * 32).min(threads.len())).collect();
                run_warp(&ctx, &mut threads, &lanes, descending, mem, &mut shared, &mut races)?;
            }
            descending = !descending;
            let live: Vec<usize> = (0..threads.len()).filter(|&t| threads[t].wait != Wait::Done).collect();
            if live.is_empty() {
                break;
            }
            if !live.iter().all(|&t| threads[t].wait == Wait::Bar) {
                return Err(format!("{}: block {cta} cannot go on (threads wait at different barriers)", f.name));
            }
            if live.len() != threads.len() {
                // CUDA leaves a barrier that some threads of the block never
                // reach undefined (a hang, or a barrier that orders nothing).
                let gone = (0..threads.len()).find(|&t| threads[t].wait == Wait::Done).expect("some exited");
                let at = &f.insts[threads[live[0]].pc].text;
                return Err(format!(
                    "{}: block {cta}: {} threads wait at `{at}`, but thread {gone} has exited (every thread must reach \
                     a block's barriers)",
                    f.name,
                    live.len()
                ));
            }
            for t in live {
                threads[t].pc += 1;
                threads[t].wait = Wait::No;
            }
            races.block_barrier();
        }
    }
    Ok(())
}

/// A race as an error: the byte and both instructions.
fn describe(f: &Function, race: &Race) -> String {
    let place = if race.shared {
        format!("shared byte {}", race.address)
    } else {
        format!("byte {} of buffer {}", race.address & ((1 << 40) - 1), (race.address >> 40) - 1)
    };
    let who = |a: &Access| {
        let verb = match a.kind {
            Kind::Read => "reads",
            Kind::Write => "writes",
            Kind::Atomic => "atomically updates",
        };
        format!("thread {} of block {} {verb} it (`{}`)", a.thread, a.block, f.insts[a.pc].text)
    };
    match &race.earlier {
        Some(earlier) => format!(
            "{}: a data race on {place}: {} after {}, and nothing orders the two (a bar.sync, a bar.warp.sync \
             within a warp, or across blocks membar.gl and an atomic on both sides)",
            f.name,
            who(&race.later),
            who(earlier)
        ),
        None => format!(
            "{}: {} before any thread of the block wrote it: shared memory starts undefined on a GPU",
            f.name,
            who(&race.later).replacen(" it ", &format!(" {place} "), 1)
        ),
    }
}

/// Runs the threads `lanes` of one warp until each waits at a block barrier
/// or is done, resolving the warp's collective operations as all its live
/// lanes reach them.
fn run_warp(
    ctx: &Ctx,
    threads: &mut [Thread],
    lanes: &[usize],
    descending: bool,
    mem: &mut Memory,
    shared: &mut [u8],
    races: &mut Races,
) -> Result<(), String> {
    loop {
        let order: Vec<usize> = if descending { lanes.iter().rev().copied().collect() } else { lanes.to_vec() };
        for t in order {
            if threads[t].wait == Wait::No {
                run_thread(ctx, &mut threads[t], t as u32, mem, shared, races)?;
            }
        }
        let live: Vec<usize> = lanes.iter().copied().filter(|&l| threads[l].wait != Wait::Done).collect();
        let all = |s: Wait| !live.is_empty() && live.iter().all(|&l| threads[l].wait == s);
        if (all(Wait::Shfl) || all(Wait::Vote) || all(Wait::Warp)) && live.len() != 32 {
            // lpac's warp-collective instructions all name the full warp
            // (member mask -1): with a lane exited or absent, a GPU's
            // behaviour is undefined.
            let inst = &ctx.f.insts[threads[live[0]].pc];
            return Err(format!(
                "{}: `{}` names all 32 lanes, but {} of the warp are live",
                ctx.f.name,
                inst.text,
                live.len()
            ));
        }
        if all(Wait::Shfl) {
            shuffle(ctx.f, threads, &live)?;
        } else if all(Wait::Vote) {
            ballot(ctx.f, threads, &live)?;
        } else if all(Wait::Warp) {
            for &l in &live {
                threads[l].pc += 1;
                threads[l].wait = Wait::No;
            }
            races.warp_barrier(lanes[0] / 32);
        } else if live.iter().all(|&l| threads[l].wait == Wait::Bar) {
            return Ok(());
        } else {
            return Err(format!("{}: a warp's lanes wait at different points", ctx.f.name));
        }
    }
}

fn shuffle(f: &Function, threads: &mut [Thread], live: &[usize]) -> Result<(), String> {
    let inst = &f.insts[threads[live[0]].pc];
    let (Arg::Reg(d), Arg::Reg(a)) = (&inst.args[0], &inst.args[1]) else { return Err(format!("`{}`", inst.text)) };
    let Arg::Imm(offset) = inst.args[2] else { return Err(format!("`{}`", inst.text)) };
    let values: Vec<u64> = live.iter().map(|&l| threads[l].regs[*a]).collect();
    for (i, &l) in live.iter().enumerate() {
        threads[l].regs[*d] = values[i ^ offset as usize];
        threads[l].pc += 1;
        threads[l].wait = Wait::No;
    }
    Ok(())
}

/// `vote.sync.ballot.b32 d, p, -1`: every lane gets the mask of the lanes
/// whose predicate is true.
fn ballot(f: &Function, threads: &mut [Thread], live: &[usize]) -> Result<(), String> {
    let inst = &f.insts[threads[live[0]].pc];
    let (Arg::Reg(d), Arg::Reg(p)) = (&inst.args[0], &inst.args[1]) else { return Err(format!("`{}`", inst.text)) };
    if inst.op.get(2).map(String::as_str) != Some("ballot") {
        return Err(format!("`{}`: only ballot votes are emulated", inst.text));
    }
    let mask = live.iter().filter(|&&l| threads[l].regs[*p] != 0).fold(0u64, |m, &l| m | 1 << (l % 32));
    for &l in live {
        threads[l].regs[*d] = mask;
        threads[l].pc += 1;
        threads[l].wait = Wait::No;
    }
    Ok(())
}

struct Ctx<'a> {
    f: &'a Function,
    params: &'a HashMap<&'a str, u64>,
    cta: u32,
    grid: u32,
    block: u32,
}

fn run_thread(
    ctx: &Ctx,
    th: &mut Thread,
    tid: u32,
    mem: &mut Memory,
    shared: &mut [u8],
    races: &mut Races,
) -> Result<(), String> {
    let f = ctx.f;
    let mut steps = 0u64;
    loop {
        steps += 1;
        if steps > 50_000_000 {
            return Err(format!("{}: thread {tid} runs forever", f.name));
        }
        let inst = f.insts.get(th.pc).ok_or(format!("{}: ran off the end", f.name))?;
        if let Some((p, neg)) = inst.guard
            && (th.regs[p] != 0) == neg
        {
            th.pc += 1;
            continue;
        }
        match inst.op[0].as_str() {
            "bar" => {
                th.wait = if inst.op[1] == "warp" { Wait::Warp } else { Wait::Bar };
                return Ok(());
            }
            "shfl" => {
                th.wait = Wait::Shfl;
                return Ok(());
            }
            "vote" => {
                th.wait = Wait::Vote;
                return Ok(());
            }
            "ret" => {
                th.wait = Wait::Done;
                return Ok(());
            }
            "bra" => {
                th.pc = inst.target;
                continue;
            }
            _ => {}
        }
        if inst.op[0] == "membar" {
            races.fence(tid);
        } else if matches!(inst.op[0].as_str(), "ld" | "st" | "atom") {
            let touched =
                memory_op(ctx, inst, th, tid, mem, shared).map_err(|e| format!("{}: `{}`: {e}", f.name, inst.text))?;
            if let Some(Touched { shared, address, len }) = touched {
                let kind = match inst.op[0].as_str() {
                    "ld" => Kind::Read,
                    "st" => Kind::Write,
                    _ => Kind::Atomic,
                };
                races.access(shared, address, len, tid, th.pc, kind).map_err(|race| describe(f, &race))?;
            }
        } else {
            step(ctx, inst, th, tid).map_err(|e| format!("{}: `{}`: {e}", f.name, inst.text))?;
        }
        th.pc += 1;
    }
}

fn val(ctx: &Ctx, th: &Thread, tid: u32, a: &Arg) -> Result<u64, String> {
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
        Arg::Param(p) => *ctx.params.get(p.as_str()).ok_or(format!("no parameter {p}"))?,
        other => return Err(format!("operand {other:?}")),
    })
}

fn fl(bits: u64) -> f32 {
    f32::from_bits(bits as u32)
}
fn fb(v: f32) -> u64 {
    u64::from(v.to_bits())
}

/// An integer of type `t` from raw register bits (sign-extended when signed).
fn int(t: Ty, bits: u64) -> i128 {
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

fn wrap(t: Ty, v: i128) -> u64 {
    match t {
        Ty::U64 | Ty::S64 => v as u64,
        Ty::U32 | Ty::S32 => u64::from(v as u32),
        Ty::U16 => u64::from(v as u16),
        Ty::U8 => u64::from(v as u8),
        Ty::Pred => u64::from(v != 0),
        Ty::F32 | Ty::Bf16 => unreachable!(),
    }
}

fn fmax_nan(a: f32, b: f32, nan: bool, max: bool) -> f32 {
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

fn step(ctx: &Ctx, inst: &Inst, th: &mut Thread, tid: u32) -> Result<(), String> {
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

fn float_op(op: &[String], a: &[u64; 3]) -> Result<u64, String> {
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

fn convert(op: &[String], bits: u64) -> Result<u64, String> {
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

/// The bytes a memory instruction touched (none for `ld.param`).
struct Touched {
    shared: bool,
    address: u64,
    len: usize,
}

fn memory_op(
    ctx: &Ctx,
    inst: &Inst,
    th: &mut Thread,
    tid: u32,
    mem: &mut Memory,
    shared: &mut [u8],
) -> Result<Option<Touched>, String> {
    let op = &inst.op;
    let is_shared = op.iter().any(|o| o == "shared");
    let t = ty_of(op.last().unwrap()).ok_or("memory type")?;
    let size = match t {
        Ty::U64 | Ty::S64 => 8,
        Ty::U16 => 2,
        Ty::U8 => 1,
        _ => 4,
    };
    if op.iter().any(|o| o == "v4") {
        return vector_op(ctx, inst, th, tid, if is_shared { Space::Shared(shared) } else { Space::Global(mem) }, size);
    }
    let mem_arg = if op[0] == "st" { &inst.args[0] } else { &inst.args[1] };
    let Arg::Mem(base, off) = mem_arg else { return Err("no address".into()) };
    let addr = (val(ctx, th, tid, base)? as i64 + off) as u64;
    if op[0] == "ld" && matches!(**base, Arg::Param(_)) {
        // ld.param: the parameter's value.
        if let Arg::Reg(d) = inst.args[0] {
            th.regs[d] = addr;
        }
        return Ok(None);
    }
    if !addr.is_multiple_of(size as u64) {
        return Err(format!("a {size}-byte access at {addr:#x}, not {size}-byte aligned (a GPU faults)"));
    }
    let bytes: &mut [u8] = if is_shared {
        let a = addr as usize;
        let n = shared.len();
        shared.get_mut(a..a + size).ok_or(format!("shared address {a} past {n} bytes"))?
    } else {
        mem.at(addr, size)?
    };
    let mut raw = [0u8; 8];
    raw[..size].copy_from_slice(bytes);
    let old = u64::from_le_bytes(raw);
    match op[0].as_str() {
        "ld" => {
            let Arg::Reg(d) = inst.args[0] else { return Err("load into a non-register".into()) };
            th.regs[d] = match t {
                Ty::S32 => u64::from(old as u32),
                _ => old,
            };
        }
        "st" => {
            let v = val(ctx, th, tid, &inst.args[1])?;
            bytes.copy_from_slice(&v.to_le_bytes()[..size]);
        }
        _ => {
            // atom.global.add.u32 d, [a], b
            let add = val(ctx, th, tid, &inst.args[2])?;
            let new = (old as u32).wrapping_add(add as u32);
            bytes.copy_from_slice(&new.to_le_bytes()[..size]);
            if let Arg::Reg(d) = inst.args[0] {
                th.regs[d] = old;
            }
        }
    }
    Ok(Some(Touched { shared: is_shared, address: addr, len: size }))
}

/// Where a 16-byte access goes.
enum Space<'a> {
    Global(&'a mut Memory),
    Shared(&'a mut [u8]),
}

/// `ld.v4` / `st.v4` (global or shared): four elements at a 16-byte aligned
/// address.
fn vector_op(
    ctx: &Ctx,
    inst: &Inst,
    th: &mut Thread,
    tid: u32,
    space: Space,
    size: usize,
) -> Result<Option<Touched>, String> {
    let load = inst.op[0] == "ld";
    let (regs, at) = if load { (&inst.args[0], &inst.args[1]) } else { (&inst.args[1], &inst.args[0]) };
    let (Arg::Regs(regs), Arg::Mem(base, off)) = (regs, at) else { return Err("vector operands".into()) };
    let addr = (val(ctx, th, tid, base)? as i64 + off) as u64;
    if !addr.is_multiple_of(16) {
        return Err(format!("a 16-byte access at {addr:#x}, not 16-byte aligned"));
    }
    let shared = matches!(space, Space::Shared(_));
    let bytes = match space {
        Space::Global(mem) => mem.at(addr, 4 * size)?,
        Space::Shared(shared) => {
            let (a, n) = (addr as usize, shared.len());
            shared.get_mut(a..a + 4 * size).ok_or(format!("shared address {a} past {n} bytes"))?
        }
    };
    for (l, &r) in regs.iter().enumerate() {
        let lane = &mut bytes[l * size..(l + 1) * size];
        if load {
            let mut raw = [0u8; 8];
            raw[..size].copy_from_slice(lane);
            th.regs[r] = u64::from_le_bytes(raw);
        } else {
            lane.copy_from_slice(&th.regs[r].to_le_bytes()[..size]);
        }
    }
    Ok(Some(Touched { shared, address: addr, len: 4 * size }))
}

#[cfg(test)]
mod tests;
