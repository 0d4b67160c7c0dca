//! From command-line flags to a pipeline run: which passes, in what order,
//! with what instrumentation.

use lpac_ir::Graph;
use lpac_passes::manager::{Instrumentation, PipelineRun, run_pipeline};
use lpac_passes::pass::Pass;
use lpac_passes::registry::{self, PassSpec};

use crate::cli::{LowrankArgs, PipelineArgs};
use crate::error::CliError;

/// The pass specs the flags ask for: `lowrank` first if `--lowrank` is given,
/// then `--passes` or `--pipeline` (none by default).
pub fn specs(args: &PipelineArgs) -> Result<Vec<PassSpec>, CliError> {
    let mut specs = lowrank_spec(&args.lowrank).into_iter().collect::<Vec<_>>();
    let text = match (&args.passes, &args.pipeline) {
        (Some(list), _) => list.clone(),
        (None, Some(name)) => registry::pipeline(name)
            .ok_or_else(|| {
                let names: Vec<&str> = registry::PIPELINES.iter().map(|(n, _, _)| *n).collect();
                format!("unknown pipeline `{name}`; the pipelines are: {}", names.join(", "))
            })?
            .to_string(),
        (None, None) => String::new(),
    };
    specs.extend(registry::parse_pipeline(&text)?);
    for name in &args.print_after {
        if registry::all().iter().all(|p| p.name != name) {
            return Err(format!("--print-after {name}: there is no pass `{name}` (see `lpac passes`)").into());
        }
    }
    Ok(specs)
}

pub fn lowrank_spec(args: &LowrankArgs) -> Option<PassSpec> {
    args.lowrank.map(|r| PassSpec::new("lowrank").with("rank", r).with("target", &args.lowrank_target))
}

pub fn create(specs: &[PassSpec]) -> Result<Vec<Box<dyn Pass>>, CliError> {
    specs.iter().map(|s| registry::create(s).map_err(CliError::Message)).collect()
}

pub fn instrumentation(args: &PipelineArgs) -> Instrumentation {
    Instrumentation {
        print_after_all: args.print_after_all,
        print_after: args.print_after.clone(),
        print_changed: args.print_changed,
        dump_dir: args.dump_dir.clone(),
        verify_each: args.verify_each,
        time_passes: args.time_passes,
        check_each: args.check_each,
        check_tolerance: Some(args.check_tolerance),
        check_seed: args.check_seed,
        reports: !args.quiet,
    }
}

/// Runs the pipeline the flags describe, logging to standard error.
pub fn run(graph: Graph, args: &PipelineArgs) -> Result<PipelineRun, CliError> {
    let passes = create(&specs(args)?)?;
    let mut log = std::io::stderr().lock();
    run_pipeline(graph, &passes, &instrumentation(args), &mut log).map_err(|e| CliError::Message(e.to_string()))
}
