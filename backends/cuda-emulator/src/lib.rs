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
//! memory no thread of the block wrote, a load of global bytes nothing wrote
//! ([`Memory::unwritten`]: a temp), a full-mask warp instruction with
//! lanes missing, a block barrier some threads exited before, an access not
//! aligned to its size.
//!
//! Here: blocks, warps, threads and the warp collectives. `parse.rs` turns
//! text into a [`Function`], `instructions.rs` computes, `memory.rs` loads
//! and stores, `races.rs` watches every access, and [`program`] runs a whole
//! graph as `--device cuda` does.
//!
//! Test support only (`publish = false`): the tests of `lpac-cuda` and
//! `lpac device-check`'s use it.

mod instructions;
mod memory;
mod parse;
pub mod program;
mod races;

use std::collections::HashMap;

use instructions::step;
pub use instructions::{bf16_to_f32, f32_to_bf16};
pub use memory::Memory;
use memory::{Touched, memory_op};
use parse::Arg;
pub use parse::Function;
use races::{Access, Kind, Race, Races};

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
        let inst = f.insts.get(th.pc).ok_or_else(|| format!("{}: ran off the end", f.name))?;
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
        } else if matches!(inst.op[0].as_str(), "ld" | "st" | "atom" | "red") {
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

#[cfg(test)]
mod tests;
