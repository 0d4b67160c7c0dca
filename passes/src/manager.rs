//! The pass manager: runs a pipeline and instruments it — printing IR after
//! passes, dumping numbered files, verifying, timing, and checking
//! meaning-preserving passes numerically against the reference interpreter.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lpac_ir::Graph;

use crate::check::{CheckInputs, DEFAULT_TOLERANCE, first_difference};
use crate::pass::{Pass, PassOutcome};

/// What to watch while a pipeline runs. Printed IR and reports go to the
/// `log` given to [`run_pipeline`] (the command line uses standard error).
#[derive(Clone, Debug, Default)]
pub struct Instrumentation {
    pub print_after_all: bool,
    /// Print after passes with these names.
    pub print_after: Vec<String>,
    /// Print only after passes that changed the graph.
    pub print_changed: bool,
    pub dump_dir: Option<PathBuf>,
    pub verify_each: bool,
    pub time_passes: bool,
    /// Run the interpreter before and after each meaning-preserving pass.
    pub check_each: bool,
    /// Relative tolerance of `check_each` (default 1e-7).
    pub check_tolerance: Option<f64>,
    pub check_seed: u64,
    /// Print each pass's report (e-graph statistics and the like).
    pub reports: bool,
}

/// What happened in one pass.
pub struct PassRecord {
    pub name: &'static str,
    pub changed: bool,
    pub time: Duration,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub outcome: PassOutcome,
}

/// The result of a pipeline: the input, the output and every pass's record.
pub struct PipelineRun {
    pub input: Graph,
    pub records: Vec<PassRecord>,
}

impl PipelineRun {
    pub fn output(&self) -> &Graph {
        self.records.last().map(|r| &r.outcome.graph).unwrap_or(&self.input)
    }

    pub fn into_output(mut self) -> Graph {
        match self.records.pop() {
            Some(r) => r.outcome.graph,
            None => self.input,
        }
    }
}

/// Why a pipeline stopped.
#[derive(Debug)]
pub enum PipelineError {
    Pass(crate::pass::PassError),
    /// `--verify-each` found the output of a pass invalid.
    Invalid {
        pass: String,
        errors: Vec<String>,
    },
    /// `--check-each` found a meaning-preserving pass changed the numbers.
    Changed {
        pass: String,
        difference: String,
    },
    /// The interpreter could not run the graph for checking.
    CheckFailed {
        pass: String,
        message: String,
    },
    Io(String),
}

impl std::fmt::Display for PipelineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PipelineError::Pass(e) => write!(f, "{e}"),
            PipelineError::Invalid { pass, errors } => {
                write!(f, "the graph is invalid after pass `{pass}`:\n  {}", errors.join("\n  "))
            }
            PipelineError::Changed { pass, difference } => {
                write!(f, "--check-each: pass `{pass}` changed what the graph computes: {difference}")
            }
            PipelineError::CheckFailed { pass, message } => write!(f, "--check-each (at `{pass}`): {message}"),
            PipelineError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for PipelineError {}

/// Runs `passes` over `graph` in order.
pub fn run_pipeline(
    graph: Graph,
    passes: &[Box<dyn Pass>],
    instr: &Instrumentation,
    log: &mut dyn std::io::Write,
) -> Result<PipelineRun, PipelineError> {
    let dump = Dump::create(instr.dump_dir.clone(), &graph)?;
    let mut checker = match instr.check_each {
        true => Some(Checker::new(&graph, instr)?),
        false => None,
    };
    let mut run = PipelineRun { input: graph, records: Vec::new() };
    for (index, pass) in passes.iter().enumerate() {
        let before = run.output().clone();
        let start = Instant::now();
        let outcome = pass.run(&before).map_err(PipelineError::Pass)?;
        let time = start.elapsed();
        let changed = outcome.graph != before;
        let record = PassRecord {
            name: pass.name(),
            changed,
            time,
            nodes_before: before.len(),
            nodes_after: outcome.graph.len(),
            outcome,
        };
        if instr.verify_each {
            verify_after(&record)?;
        }
        if let Some(checker) = checker.as_mut() {
            checker.after(pass.as_ref(), &record)?;
        }
        report(log, instr, &record);
        if let Some(dump) = &dump {
            dump.after(index + 1, &record)?;
        }
        run.records.push(record);
    }
    if let Some(dump) = &dump {
        dump.write_index(&run.records)?;
    }
    if instr.time_passes {
        let _ = log.write_all(time_table(&run.records).as_bytes());
    }
    Ok(run)
}

/// Runs a pipeline string over `graph` without instrumentation and returns
/// the result: the one-liner for tools and tests.
pub fn run_text(graph: Graph, pipeline: &str) -> Result<Graph, String> {
    let passes = crate::registry::create_pipeline(pipeline)?;
    run_pipeline(graph, &passes, &Instrumentation::default(), &mut std::io::sink())
        .map(PipelineRun::into_output)
        .map_err(|e| e.to_string())
}

fn verify_after(record: &PassRecord) -> Result<(), PipelineError> {
    lpac_ir::verify(&record.outcome.graph).map_err(|errors| PipelineError::Invalid {
        pass: record.name.to_string(),
        errors: errors.iter().map(|e| e.to_string()).collect(),
    })
}

fn report(log: &mut dyn std::io::Write, instr: &Instrumentation, record: &PassRecord) {
    let wanted = instr.print_after_all || instr.print_after.iter().any(|n| n == record.name) || instr.print_changed;
    let filtered = instr.print_changed && !record.changed;
    if instr.reports
        && let Some(r) = &record.outcome.report
    {
        let _ = writeln!(log, "{}", r.trim_end());
    }
    if wanted && !filtered {
        let state = if record.changed { "changed" } else { "unchanged" };
        let _ = writeln!(log, "// ----- IR after {} ({state}) -----", record.name);
        let _ = log.write_all(lpac_ir::print(&record.outcome.graph).as_bytes());
    }
}

/// The `--time-passes` table.
pub fn time_table(records: &[PassRecord]) -> String {
    let total: Duration = records.iter().map(|r| r.time).sum();
    let mut out = String::from("===-------------------------------------------------------------===\n");
    out += "  pass           time (ms)   share   nodes before -> after   changed\n";
    for r in records {
        let share = if total.is_zero() { 0.0 } else { 100.0 * r.time.as_secs_f64() / total.as_secs_f64() };
        let _ = writeln!(
            out,
            "  {:<12} {:>11.3} {:>6.1}%   {:>12} -> {:<8} {}",
            r.name,
            r.time.as_secs_f64() * 1e3,
            share,
            r.nodes_before,
            r.nodes_after,
            if r.changed { "yes" } else { "no" }
        );
    }
    let _ = writeln!(out, "  {:<12} {:>11.3}", "total", total.as_secs_f64() * 1e3);
    out
}

/// `--check-each` state: the inputs and the outputs of the current graph.
struct Checker {
    inputs: CheckInputs,
    current: Vec<(String, Vec<f64>)>,
    tolerance: f64,
}

impl Checker {
    fn new(graph: &Graph, instr: &Instrumentation) -> Result<Checker, PipelineError> {
        let failed = |message: String| PipelineError::CheckFailed { pass: "input".into(), message };
        let inputs = CheckInputs::random(graph, instr.check_seed).map_err(failed)?;
        let current = inputs.run(graph).map_err(failed)?;
        Ok(Checker { inputs, current, tolerance: instr.check_tolerance.unwrap_or(DEFAULT_TOLERANCE) })
    }

    fn after(&mut self, pass: &dyn Pass, record: &PassRecord) -> Result<(), PipelineError> {
        if !record.changed {
            return Ok(());
        }
        let graph = &record.outcome.graph;
        if !pass.preserves_meaning() {
            // The model changed on purpose: start comparing from here, with
            // parameters for whatever the pass created.
            self.inputs.params = lpac_ir::interp::init_params(graph, self.inputs.ctx.seed);
            self.current = self.inputs.run(graph).map_err(|m| self.failed(record, m))?;
            return Ok(());
        }
        let after = self.inputs.run(graph).map_err(|m| self.failed(record, m))?;
        if let Some(difference) = first_difference(&self.current, &after, self.tolerance) {
            return Err(PipelineError::Changed { pass: record.name.to_string(), difference });
        }
        self.current = after;
        Ok(())
    }

    fn failed(&self, record: &PassRecord, message: String) -> PipelineError {
        PipelineError::CheckFailed { pass: record.name.to_string(), message }
    }
}

/// `--dump-dir`: `00-input.ir`, `NN-after-PASS.ir` for passes that changed
/// the graph, and `index.txt` listing every pass.
struct Dump {
    dir: PathBuf,
}

impl Dump {
    fn create(dir: Option<PathBuf>, input: &Graph) -> Result<Option<Dump>, PipelineError> {
        let Some(dir) = dir else { return Ok(None) };
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let dump = Dump { dir };
        dump.write("00-input.ir", &lpac_ir::print(input))?;
        Ok(Some(dump))
    }

    fn after(&self, number: usize, record: &PassRecord) -> Result<(), PipelineError> {
        if record.changed {
            self.write(&Self::file_name(number, record.name), &lpac_ir::print(&record.outcome.graph))?;
        }
        Ok(())
    }

    fn file_name(number: usize, pass: &str) -> String {
        format!("{number:02}-after-{pass}.ir")
    }

    fn write_index(&self, records: &[PassRecord]) -> Result<(), PipelineError> {
        let mut text = String::from(
            "# pass        changed   time_ms   nodes   file\n00 input       -         -         -       00-input.ir\n",
        );
        for (i, r) in records.iter().enumerate() {
            let file = if r.changed { Self::file_name(i + 1, r.name) } else { "-".to_string() };
            let _ = writeln!(
                text,
                "{:02} {:<11} {:<9} {:<9.3} {:<7} {}",
                i + 1,
                r.name,
                if r.changed { "yes" } else { "no" },
                r.time.as_secs_f64() * 1e3,
                r.nodes_after,
                file
            );
        }
        self.write("index.txt", &text)
    }

    fn write(&self, name: &str, text: &str) -> Result<(), PipelineError> {
        let path = self.dir.join(name);
        std::fs::write(&path, text).map_err(|e| io_error(&path, e))
    }
}

fn io_error(path: &std::path::Path, e: std::io::Error) -> PipelineError {
    PipelineError::Io(format!("--dump-dir: cannot write {}: {e}", path.display()))
}
