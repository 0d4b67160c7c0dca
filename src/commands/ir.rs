//! `lpac ir FILE`: the forward graph as text, DOT or JSON.

use crate::cli::{IrArgs, IrFormat};
use crate::error::CliResult;
use crate::load::load;

pub fn run(args: &IrArgs) -> CliResult {
    let loaded = load(&args.model)?;
    let text = match args.format {
        IrFormat::Text => lpac_ir::print(&loaded.graph),
        IrFormat::Dot => lpac_ir::dot::to_dot(&loaded.graph),
        IrFormat::Json => {
            let mut s =
                serde_json::to_string_pretty(&lpac_ir::json::to_json(&loaded.graph)).map_err(|e| e.to_string())?;
            s.push('\n');
            s
        }
    };
    write_output(args.output.as_deref(), &text)
}

/// Writes to the named file, or to standard output.
pub fn write_output(path: Option<&std::path::Path>, text: &str) -> CliResult {
    match path {
        Some(p) => std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()).into()),
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            // A closed pipe (`lpac ir ... | head`) is not an error worth a message.
            let _ = out.write_all(text.as_bytes());
            Ok(())
        }
    }
}
