//! Loading what the user names on the command line: a model file, compiled
//! with its overrides, or an IR file, parsed and verified.

use std::path::Path;

use lpac_frontend::{Override, compile_file};
use lpac_ir::Graph;

use crate::cli::ModelArgs;
use crate::error::CliError;

/// A graph and what it is called, with the configuration it was built with
/// (none for an IR file).
pub struct Loaded {
    pub name: String,
    pub graph: Graph,
    pub config: Option<lpac_frontend::Config>,
}

pub fn overrides(set: &[String]) -> Result<Vec<Override>, CliError> {
    set.iter().map(|s| Override::parse(s).map_err(CliError::Message)).collect()
}

pub fn load(args: &ModelArgs) -> Result<Loaded, CliError> {
    let overrides = overrides(&args.set)?;
    if is_ir_file(&args.file) {
        if !overrides.is_empty() {
            return Err(CliError::Message(format!(
                "--set applies to model files; {} is an IR file whose shapes are fixed",
                args.file.display()
            )));
        }
        return load_ir(&args.file);
    }
    let model = compile_file(&args.file, &overrides)?;
    Ok(Loaded { name: model.name, graph: model.graph, config: Some(model.config) })
}

fn is_ir_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "ir")
}

fn load_ir(path: &Path) -> Result<Loaded, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let name = path.display().to_string();
    let graph = lpac_ir::parse(&text, &name).map_err(|e| CliError::Rendered(e.render(&text)))?;
    if let Err(errors) = lpac_ir::verify(&graph) {
        let lines: Vec<String> = errors.iter().map(|e| format!("{name}: {e}")).collect();
        return Err(CliError::Message(lines.join("\nerror: ")));
    }
    Ok(Loaded { name: graph.name.clone(), graph, config: None })
}
