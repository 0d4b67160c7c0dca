//! Everything needed to rebuild a model exactly: the model file's text, its
//! `--set` overrides and the LPA factorisation. Checkpoints carry it in their
//! metadata, so `lpac eval` and `lpac sample` need nothing but the checkpoint.

use std::path::Path;

use lpac_frontend::{Override, compile};
use lpac_ir::Graph;
use lpac_passes::manager::{Instrumentation, run_pipeline};
use lpac_passes::registry::PassSpec;
use serde_json::{Value, json};

use crate::error::CliError;

#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// Where the model was read from (for messages).
    pub file: String,
    pub source: String,
    pub overrides: Vec<Override>,
    /// `(rank, target)` of the `lowrank` pass, if the model is factored.
    pub lowrank: Option<(usize, String)>,
}

impl ModelSpec {
    pub fn read(
        path: &Path,
        overrides: Vec<Override>,
        lowrank: Option<(usize, String)>,
    ) -> Result<ModelSpec, CliError> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let source = String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
        Ok(ModelSpec { file: path.display().to_string(), source, overrides, lowrank })
    }

    /// The forward graph (loss as output) with `extra` overrides on top, factored
    /// if the spec says so.
    pub fn forward(&self, extra: &[Override]) -> Result<Graph, CliError> {
        let mut overrides = self.overrides.clone();
        overrides.extend(extra.iter().cloned());
        let model = compile(&self.file, &self.source, &overrides)?;
        match &self.lowrank {
            None => Ok(model.graph),
            Some((rank, target)) => {
                let spec = PassSpec::new("lowrank").with("rank", rank).with("target", target);
                run_passes(model.graph, &[spec])
            }
        }
    }

    /// Whether the model has a config key (so an override of it is valid).
    pub fn has_key(&self, key: &str) -> Result<bool, CliError> {
        let model = compile(&self.file, &self.source, &self.overrides)?;
        Ok(model.config.get(key).is_some())
    }

    /// The resolved value of a config key, as text.
    pub fn config_value(&self, key: &str) -> Result<Option<String>, CliError> {
        let model = compile(&self.file, &self.source, &self.overrides)?;
        Ok(model.config.get(key).map(|v| v.to_string()))
    }

    pub fn to_json(&self) -> Value {
        json!({
            "file": self.file,
            "source": self.source,
            "overrides": self.overrides.iter().map(|o| format!("{}={}", o.key, o.value)).collect::<Vec<_>>(),
            "lowrank": self.lowrank.as_ref().map(|(r, t)| json!({"rank": r, "target": t})),
        })
    }

    pub fn from_json(v: &Value) -> Result<ModelSpec, String> {
        let text =
            |key: &str| v[key].as_str().map(str::to_string).ok_or_else(|| format!("the model record has no `{key}`"));
        let overrides = v["overrides"]
            .as_array()
            .ok_or("the model record has no `overrides`")?
            .iter()
            .map(|o| o.as_str().ok_or("bad override").and_then(|s| Override::parse(s).map_err(|_| "bad override")))
            .collect::<Result<Vec<_>, _>>()?;
        let lowrank = match &v["lowrank"] {
            Value::Null => None,
            l => Some((
                l["rank"].as_u64().ok_or("bad lowrank rank")? as usize,
                l["target"].as_str().ok_or("bad lowrank target")?.to_string(),
            )),
        };
        Ok(ModelSpec { file: text("file")?, source: text("source")?, overrides, lowrank })
    }
}

/// Runs passes given as specs, quietly.
pub fn run_passes(graph: Graph, specs: &[PassSpec]) -> Result<Graph, CliError> {
    let passes = crate::pipeline::create(specs)?;
    let run = run_pipeline(graph, &passes, &Instrumentation::default(), &mut std::io::sink())
        .map_err(|e| CliError::Message(e.to_string()))?;
    Ok(run.into_output())
}
