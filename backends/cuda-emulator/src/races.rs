//! The emulator's race detector: every byte of memory remembers who last
//! wrote it (and, in shared memory, who read it since), and an access that
//! nothing orders after a conflicting one (another thread's write, or
//! another thread's read before a write) is an error naming both
//! instructions.
//!
//! The emulator runs threads in one fixed order, so a racy kernel can give
//! the right answer here and a wrong one on a GPU; this makes the order
//! irrelevant. What orders two accesses, as the PTX memory model has it for
//! the operations lpac emits:
//! - the same thread (program order);
//! - the same block, with a `bar.sync` between them;
//! - the same warp, with a `bar.warp.sync` between them (shuffles and votes
//!   exchange registers, not memory: they order nothing here);
//! - different blocks: the earlier access's thread ran `membar.gl` after it
//!   and then an atomic (a release), and the later access's block had run an
//!   atomic before it — in the same thread, or in another thread before a
//!   `bar.sync` (an acquire). Two atomics never race.
//!
//! Shared memory starts undefined on a GPU (the emulator's is zero): reading
//! a shared byte no thread of the block has written is an error too.
//!
//! Each byte of shared memory keeps its last write and its last two reads by
//! different threads, so a read by a third thread can hide an unordered one;
//! a byte of global memory keeps only its last write (most global bytes are
//! only read, and keeping their readers made big tests crawl), so a global
//! write after another thread's unordered read is not seen; and
//! since blocks run one after another here, an acquire is taken to see every
//! earlier block's release — whether the counter a block reads really
//! proves the others are done is the kernel's logic, not checked here. The
//! detector finds races; it does not prove their absence.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// One access: who made it and where its thread stood.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    pub block: u32,
    pub thread: u32,
    pub pc: usize,
    pub kind: Kind,
    block_epoch: u32,
    warp_epoch: u32,
    /// `membar.gl`s the thread had run before it.
    fences: u32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Read,
    Write,
    Atomic,
}

/// Two accesses to one byte that nothing orders, or (`earlier: None`) a
/// read of shared memory that no thread of the block wrote: on a GPU it
/// holds whatever the last block there left.
#[derive(Debug)]
pub struct Race {
    pub shared: bool,
    pub address: u64,
    pub earlier: Option<Access>,
    pub later: Access,
}

#[derive(Clone, Copy, Default)]
struct Cell {
    write: Option<Access>,
    /// The latest read since the write, and the latest by another thread.
    reads: [Option<Access>; 2],
}

/// A thread's fences: how many it ran, and how many of them an atomic
/// followed (its writes before those are released).
#[derive(Clone, Copy, Default)]
struct Fences {
    run: u32,
    released: u32,
}

/// A multiplicative hash: addresses and thread ids need no SipHash.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
}

type Fast = BuildHasherDefault<AddressHasher>;

/// The detector's state for one launch.
pub struct Races {
    block: u32,
    block_epoch: u32,
    warp_epochs: Vec<u32>,
    /// The first atomic of the current block: its thread and block epoch.
    acquired: Option<(u32, u32)>,
    fences: HashMap<(u32, u32), Fences, Fast>,
    shared: Vec<Cell>,
    global: HashMap<u64, Cell, Fast>,
}

impl Races {
    pub fn new(shared_bytes: usize) -> Races {
        Races {
            block: 0,
            block_epoch: 0,
            warp_epochs: Vec::new(),
            acquired: None,
            fences: HashMap::default(),
            shared: vec![Cell::default(); shared_bytes],
            global: HashMap::default(),
        }
    }

    /// A new block starts: its shared memory is fresh.
    pub fn start_block(&mut self, block: u32, warps: usize) {
        self.block = block;
        self.block_epoch = 0;
        self.warp_epochs = vec![0; warps];
        self.acquired = None;
        self.shared.fill(Cell::default());
    }

    /// Every thread of the block passed a `bar.sync`.
    pub fn block_barrier(&mut self) {
        self.block_epoch += 1;
    }

    /// Every live lane of `warp` passed a `bar.warp.sync`.
    pub fn warp_barrier(&mut self, warp: usize) {
        self.warp_epochs[warp] += 1;
    }

    /// `membar.gl` (or `fence`) by `thread`.
    pub fn fence(&mut self, thread: u32) {
        self.fences.entry((self.block, thread)).or_default().run += 1;
    }

    /// An access by `thread` at instruction `pc` to `len` bytes from
    /// `address`; the first race it completes, if any.
    pub fn access(
        &mut self,
        shared: bool,
        address: u64,
        len: usize,
        thread: u32,
        pc: usize,
        kind: Kind,
    ) -> Result<(), Box<Race>> {
        let fences = self.fences.get(&(self.block, thread)).copied().unwrap_or_default();
        let me = Access {
            block: self.block,
            thread,
            pc,
            kind,
            block_epoch: self.block_epoch,
            warp_epoch: self.warp_epochs[thread as usize / 32],
            fences: fences.run,
        };
        let order = Order { fences: &self.fences, acquired: self.acquired };
        for a in address..address + len as u64 {
            if !shared && kind == Kind::Read {
                // Global reads are checked against the last write, not kept
                // (see the module docs): most global bytes are only read.
                if let Some(cell) = self.global.get(&a) {
                    order
                        .check(cell, &me)
                        .map_err(|earlier| Box::new(Race { shared, address: a, earlier: Some(earlier), later: me }))?;
                }
                continue;
            }
            let cell = if shared { &mut self.shared[a as usize] } else { self.global.entry(a).or_default() };
            if shared && kind == Kind::Read && cell.write.is_none() {
                return Err(Box::new(Race { shared, address: a, earlier: None, later: me }));
            }
            order
                .check(cell, &me)
                .map_err(|earlier| Box::new(Race { shared, address: a, earlier: Some(earlier), later: me }))?;
            match kind {
                Kind::Read => {
                    if !cell.reads[0].is_some_and(|r| r.block == me.block && r.thread == me.thread) {
                        cell.reads[1] = cell.reads[0];
                    }
                    cell.reads[0] = Some(me);
                }
                Kind::Write | Kind::Atomic => *cell = Cell { write: Some(me), reads: [None, None] },
            }
        }
        if kind == Kind::Atomic {
            self.atomic_done(thread, fences);
        }
        Ok(())
    }

    /// An atomic releases the thread's writes before its last fence and
    /// acquires for the block.
    fn atomic_done(&mut self, thread: u32, fences: Fences) {
        if fences.run > 0 {
            self.fences.insert((self.block, thread), Fences { run: fences.run, released: fences.run });
        }
        if self.acquired.is_none() {
            self.acquired = Some((thread, self.block_epoch));
        }
    }
}

/// What orders accesses of different threads, as the launch stands.
struct Order<'a> {
    fences: &'a HashMap<(u32, u32), Fences, Fast>,
    acquired: Option<(u32, u32)>,
}

impl Order<'_> {
    /// The earlier access to `cell` that `me` conflicts with unordered.
    fn check(&self, cell: &Cell, me: &Access) -> Result<(), Access> {
        let earlier: &[Option<Access>] = match me.kind {
            Kind::Read => std::slice::from_ref(&cell.write),
            Kind::Write | Kind::Atomic => &[cell.write, cell.reads[0], cell.reads[1]],
        };
        for e in earlier.iter().flatten() {
            let both_atomic = e.kind == Kind::Atomic && me.kind == Kind::Atomic;
            if !both_atomic && !self.ordered(e, me) {
                return Err(*e);
            }
        }
        Ok(())
    }

    /// Whether `earlier` is ordered before `later` (see the module docs).
    fn ordered(&self, earlier: &Access, later: &Access) -> bool {
        if earlier.block == later.block {
            return earlier.thread == later.thread
                || earlier.block_epoch < later.block_epoch
                || (earlier.thread / 32 == later.thread / 32 && earlier.warp_epoch < later.warp_epoch);
        }
        // Blocks run one after another here, so `earlier`'s block is done.
        let released = earlier.kind == Kind::Atomic
            || self.fences.get(&(earlier.block, earlier.thread)).is_some_and(|f| f.released > earlier.fences);
        let acquired = self.acquired.is_some_and(|(thread, epoch)| thread == later.thread || epoch < later.block_epoch);
        released && acquired
    }
}
