//! The frontend's pipeline: parse the prelude and the model file, resolve
//! names, evaluate the config with its overrides, run the model to build the
//! graph, and verify the result.

use std::path::Path;

use lpac_ir::Graph;

use crate::ast::{File, Item};
use crate::config::{Config, ConfigValue, Override, parse_override};
use crate::diagnostic::{Diagnostic, render_all};
use crate::eval::{Evaluator, Frame};
use crate::parser::parse_file;
use crate::resolve::{Program, resolve};
use crate::source::{SourceMap, Span};
use crate::value::Value;

/// The standard blocks, written in the language (`frontend/prelude.lpa`).
pub const PRELUDE: &str = include_str!("../prelude.lpa");
pub const PRELUDE_NAME: &str = "prelude.lpa";

/// A compiled model: its forward graph (the loss as output `loss`) and the
/// configuration it was built with.
pub struct Model {
    pub name: String,
    pub graph: Graph,
    pub config: Config,
    /// The model file's text, for run records.
    pub source: String,
}

/// Everything that went wrong, ready to print.
pub struct CompileError {
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
    /// Errors with no place in a file (a bad `--set`, an unreadable file).
    pub messages: Vec<String>,
}

impl CompileError {
    fn plain(message: String) -> Self {
        CompileError { sources: SourceMap::new(), diagnostics: Vec::new(), messages: vec![message] }
    }

    pub fn count(&self) -> usize {
        self.diagnostics.len() + self.messages.len()
    }

    /// The text to show the user.
    pub fn render(&self) -> String {
        let mut out: String = self.messages.iter().map(|m| format!("error: {m}\n")).collect();
        out.push_str(&render_all(&self.diagnostics, &self.sources));
        out
    }
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.render().trim_end())
    }
}

impl std::fmt::Debug for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

/// Reads and compiles a model file.
pub fn compile_file(path: &Path, overrides: &[Override]) -> Result<Model, CompileError> {
    let bytes = std::fs::read(path).map_err(|e| CompileError::plain(format!("cannot read {}: {e}", path.display())))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        CompileError::plain(format!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    compile(&path.display().to_string(), &text, overrides)
}

/// Compiles model source text; `name` is the file name used in messages.
pub fn compile(name: &str, text: &str, overrides: &[Override]) -> Result<Model, CompileError> {
    let mut sources = SourceMap::new();
    let prelude_id = sources.add(PRELUDE_NAME, PRELUDE.to_string(), true);
    let user_id = sources.add(name, text.to_string(), false);
    let (prelude, mut diagnostics) = parse_file(prelude_id, PRELUDE);
    let (user, user_diagnostics) = parse_file(user_id, text);
    diagnostics.extend(user_diagnostics);
    if !diagnostics.is_empty() {
        return Err(CompileError { sources, diagnostics, messages: Vec::new() });
    }
    let result = build(&sources, &prelude, &user, Span::new(user_id, 0, 0), overrides);
    result
        .map(|(name, graph, config)| Model { name, graph, config, source: text.to_string() })
        .map_err(|(diagnostics, messages)| CompileError { sources, diagnostics, messages })
}

type BuildResult = Result<(String, Graph, Config), (Vec<Diagnostic>, Vec<String>)>;

fn build(sources: &SourceMap, prelude: &File, user: &File, file_start: Span, overrides: &[Override]) -> BuildResult {
    let (program, diagnostics) = resolve(prelude, user, file_start);
    if !diagnostics.is_empty() {
        return Err((diagnostics, Vec::new()));
    }
    let model = program.model.expect("resolve reports a missing model");
    let mut ev = Evaluator::new(sources, &model.name.name);
    ev.prelude_blocks = program.prelude_blocks.clone();
    ev.user_blocks = program.user_blocks.clone();
    let config = evaluate_config(&mut ev, &program, overrides).map_err(|m| (ev.finish_diagnostics(), m))?;
    let loss = ev.run_model(model);
    if !ev.diagnostics.is_empty() {
        return Err((ev.finish_diagnostics(), Vec::new()));
    }
    let loss = loss.expect("a model without diagnostics returns its loss");
    let mut graph = ev.builder.graph;
    graph.add_output("loss", loss.node);
    if let Err(errors) = lpac_ir::verify(&graph) {
        let text: Vec<String> =
            errors.iter().map(|e| format!("internal error, the built graph is invalid: {e}")).collect();
        return Err((Vec::new(), text));
    }
    Ok((model.name.name.clone(), graph, config))
}

/// Evaluates config entries in order, applying overrides. Unknown keys and
/// ill-typed values are reported together.
fn evaluate_config(
    ev: &mut Evaluator<'_>,
    program: &Program<'_>,
    overrides: &[Override],
) -> Result<Config, Vec<String>> {
    let mut errors = Vec::new();
    let keys: Vec<&str> = program.config.iter().map(|e| e.name.name.as_str()).collect();
    for o in overrides {
        if !keys.contains(&o.key.as_str()) {
            errors.push(format!(
                "`--set {}={}`: this model has no config key `{}`; its keys are: {}",
                o.key,
                o.value,
                o.key,
                keys.join(", ")
            ));
        }
    }
    let mut config = Config::default();
    let frame = Frame::root();
    for entry in &program.config {
        let chosen = overrides.iter().rev().find(|o| o.key == entry.name.name);
        let checkpoint = ev.checkpoint();
        let mut default = ev.eval(&frame, &entry.value);
        if chosen.is_some() && default == Value::Poison {
            // The default does not matter when it is overridden (`--set
            // head_dim=80` where `d / heads` is not whole): type the override
            // by its own form instead.
            ev.rollback(checkpoint);
            default = chosen.map(|o| literal_kind(&o.value)).unwrap_or(Value::Poison);
        }
        let value = match (chosen, &default) {
            (_, Value::Poison) => Value::Poison,
            (Some(o), _) => parse_override(&o.key, &o.value, &default).unwrap_or_else(|m| {
                errors.push(m);
                Value::Poison
            }),
            (None, Value::Int(_) | Value::Float(_) | Value::Bool(_)) => default.clone(),
            (None, other) => {
                let msg =
                    format!("config value `{}` must be a number or bool, not {}", entry.name.name, other.describe());
                ev.error(&frame, entry.value.span, msg)
            }
        };
        ev.config.insert(entry.name.name.clone(), value.clone());
        config.entries.push(ConfigValue {
            name: entry.name.name.clone(),
            value,
            doc: entry.doc.clone(),
            overridden: chosen.is_some(),
        });
    }
    if errors.is_empty() && ev.diagnostics.is_empty() { Ok(config) } else { Err(errors) }
}

/// A value of the type an override's text looks like: int, float or bool.
fn literal_kind(text: &str) -> Value {
    if text.replace('_', "").parse::<i64>().is_ok() {
        Value::Int(0)
    } else if text == "true" || text == "false" {
        Value::Bool(false)
    } else {
        Value::Float(0.0)
    }
}

/// The names of the items a file defines, for tools that list them.
pub fn item_names(file: &File) -> Vec<String> {
    file.items
        .iter()
        .map(|i| match i {
            Item::Block(b) => b.name.name.clone(),
            Item::Model(m) => m.name.name.clone(),
            Item::Config(_) => "config".to_string(),
        })
        .collect()
}
