//! `LPAC_CUDA_PROFILE=1`: every kernel waited for and timed, and a report —
//! by kind, by name (a layer's kernels and the same kernel in every other
//! layer together) and the slowest single kernels — printed when the
//! executor is dropped (after training, before the final evaluation).
//!
//! Each kernel is timed from its launch to the end of a wait for it, so the
//! times include launch latency and leave out the overlap of consecutive
//! kernels: the sum is an upper bound on the program's GPU time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use lpac_ir::kernel::Program;

/// Times per kernel of a program, over its runs.
pub(crate) struct Profile {
    /// `(launches, total time)` per kernel index.
    times: Vec<(u32, Duration)>,
    runs: u32,
}

/// Lines of the by-name and single-kernel tables.
const TOP_NAMES: usize = 25;
const TOP_KERNELS: usize = 12;

impl Profile {
    pub fn new(kernels: usize) -> Profile {
        Profile { times: vec![(0, Duration::ZERO); kernels], runs: 0 }
    }

    pub fn record(&mut self, kernel: usize, time: Duration) {
        let entry = &mut self.times[kernel];
        entry.0 += 1;
        entry.1 += time;
    }

    /// Counts one run of the whole program.
    pub fn run_done(&mut self) {
        self.runs += 1;
    }

    pub fn report(&self, program: &Program) -> String {
        let runs = f64::from(self.runs.max(1));
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / runs;
        let total: Duration = self.times.iter().map(|t| t.1).sum();
        let share = |d: Duration| 100.0 * d.as_secs_f64() / total.as_secs_f64().max(1e-12);
        let mut out = format!(
            "GPU time by kernel (each waited for): {:.1} ms a run of the program, over {} run(s)\n",
            ms(total),
            self.runs
        );
        let mut by_kind: BTreeMap<&str, Duration> = BTreeMap::new();
        // Per name: kernels, time, and per run bytes moved and FLOPs.
        let mut by_name: BTreeMap<&str, (usize, Duration, u64, u64)> = BTreeMap::new();
        for (k, (_, t)) in program.kernels.iter().zip(&self.times) {
            *by_kind.entry(k.kind()).or_default() += *t;
            let e = by_name.entry(k.name()).or_default();
            e.0 += 1;
            e.1 += *t;
            e.2 += k.bytes_moved(program);
            e.3 += k.flops();
        }
        let _ = writeln!(out, "  by kind            ms a run   share");
        let mut kinds: Vec<_> = by_kind.into_iter().collect();
        kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
        for (kind, t) in kinds {
            let _ = writeln!(out, "  {kind:<16} {:>10.2} {:>6.1}%", ms(t), share(t));
        }
        // Achieved rates against the least traffic and the arithmetic the
        // kernels' descriptions imply: a memory-bound kernel far below the
        // GPU's bandwidth, or a product far below its FLOP rate, is the one
        // to look at.
        let _ = writeln!(out, "  by name (kernels of one name added)   ms a run   share  kernels     GB/s  GFLOP/s");
        let mut names: Vec<_> = by_name.into_iter().collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.1.1));
        for (name, (count, t, bytes, flops)) in names.iter().take(TOP_NAMES) {
            let seconds = t.as_secs_f64() / runs;
            let rate = |x: u64| if seconds > 0.0 { x as f64 / seconds / 1e9 } else { 0.0 };
            let _ = writeln!(
                out,
                "  {:<36} {:>10.2} {:>6.1}% {count:>8} {:>8.0} {:>8.0}",
                clip(name, 36),
                ms(*t),
                share(*t),
                rate(*bytes),
                rate(*flops)
            );
        }
        let _ = writeln!(out, "  slowest kernels                       ms a run   share");
        let mut single: Vec<(usize, Duration)> = self.times.iter().map(|t| t.1).enumerate().collect();
        single.sort_by_key(|s| std::cmp::Reverse(s.1));
        for (i, t) in single.into_iter().take(TOP_KERNELS) {
            let name = format!("k{i} {}", program.kernels[i].name());
            let _ = writeln!(out, "  {:<36} {:>10.2} {:>6.1}%", clip(&name, 36), ms(t), share(t));
        }
        out
    }
}

/// At most `n` characters of `s` (an ellipsis where cut).
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut c: String = s.chars().take(n - 1).collect();
    c.push('…');
    c
}

#[cfg(test)]
mod tests {
    use lpac_ir::kernel::{Buffer, BufferId, BufferKind, Kernel};
    use lpac_ir::{DType, TensorType};

    use super::*;

    #[test]
    fn the_report_adds_kernels_by_kind_and_name_per_run() {
        let scatter = |name: &str| Kernel::ScatterAdd {
            name: name.into(),
            indices: BufferId(0),
            src: BufferId(1),
            out: BufferId(2),
            nodes: vec![],
        };
        let gather = Kernel::Gather {
            name: "gather".into(),
            table: BufferId(0),
            indices: BufferId(1),
            out: BufferId(2),
            nodes: vec![],
        };
        // Buffers of 1, 2 and 4 GB (f32, described, not allocated): each
        // kernel reads b0 and b1 and writes b2, 7 GB a run.
        let buffer = |n: usize| Buffer { ty: TensorType::new(DType::F32, vec![n]), kind: BufferKind::Temp };
        let program = Program {
            kernels: vec![scatter("layer"), scatter("layer"), gather],
            buffers: vec![buffer(250_000_000), buffer(500_000_000), buffer(1_000_000_000)],
            ..Program::default()
        };
        let mut p = Profile::new(3);
        for _ in 0..2 {
            p.record(0, Duration::from_millis(3));
            p.record(1, Duration::from_millis(5));
            p.record(2, Duration::from_millis(2));
            p.run_done();
        }
        let r = p.report(&program);
        assert!(r.contains("10.0 ms a run of the program, over 2 run(s)"), "{r}");
        assert!(r.contains("scatter_add            8.00   80.0%"), "{r}");
        assert!(r.contains("gather                 2.00   20.0%"), "{r}");
        assert!(r.contains("layer                                      8.00   80.0%        2"), "{r}");
        // 14 GB in 8 ms a run: 1,750 GB/s; no arithmetic.
        assert!(r.contains("8.00   80.0%        2     1750        0"), "{r}");
        assert!(r.contains("k1 layer                                   5.00   50.0%"), "{r}");
    }
}
