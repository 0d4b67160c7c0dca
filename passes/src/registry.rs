//! Every pass by name, with its options, and the named pipelines. Pipelines
//! are strings: `lowrank{rank=64,target=ffn},simplify,cse,dce`.

use std::collections::BTreeMap;

use crate::cse::Cse;
use crate::dce::Dce;
use crate::lowrank::{Lowrank, Target};
use crate::pass::{Pass, PassOption};
use crate::verify_pass::VerifyPass;

/// A pass as written in a pipeline: its name and `key=value` options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassSpec {
    pub name: String,
    pub options: BTreeMap<String, String>,
}

impl PassSpec {
    pub fn new(name: &str) -> Self {
        PassSpec { name: name.to_string(), options: BTreeMap::new() }
    }

    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.options.insert(key.to_string(), value.to_string());
        self
    }
}

/// What `lpac passes` lists about a pass.
pub struct PassInfo {
    pub name: &'static str,
    pub summary: &'static str,
    pub preserves_meaning: bool,
    pub options: &'static [PassOption],
}

const LOWRANK_OPTIONS: &[PassOption] = &[
    PassOption { name: "rank", help: "the inner size r of each factorisation (required)", default: "" },
    PassOption {
        name: "target",
        help: "attention | ffn | all | a glob over weight paths (`*` within a segment, `**` across)",
        default: "attention",
    },
];

/// The named pipelines, for `--pipeline NAME`.
pub const PIPELINES: &[(&str, &str, &str)] = &[
    ("default", "attention,simplify,cse,dce", "the optimisation pipeline every backend runs"),
    (
        "train",
        "attention,autodiff,optimizer,simplify,cse,dce",
        "the whole training step: forward, backward, AdamW update",
    ),
    ("cleanup", "cse,dce", "merge duplicates and drop dead nodes, nothing else"),
    ("none", "", "no passes: the graph as the frontend built it"),
];

pub fn pipeline(name: &str) -> Option<&'static str> {
    PIPELINES.iter().find(|(n, _, _)| *n == name).map(|(_, p, _)| *p)
}

/// Every pass, in the order `lpac passes` lists them.
pub fn all() -> Vec<PassInfo> {
    let info = |p: &dyn Pass, options: &'static [PassOption]| PassInfo {
        name: p.name(),
        summary: p.summary(),
        preserves_meaning: p.preserves_meaning(),
        options,
    };
    vec![
        info(&Lowrank { rank: 1, target: Target::Attention }, LOWRANK_OPTIONS),
        info(&crate::attention::FuseAttention, &[]),
        info(&crate::precision::Precision, crate::precision::OPTIONS),
        info(&crate::autodiff::Autodiff, &[]),
        info(&crate::optimizer::Optimizer::default(), crate::optimizer::OPTIONS),
        info(&crate::simplify::Simplify::default(), crate::simplify::OPTIONS),
        info(&Cse, &[]),
        info(&Dce, &[]),
        info(&VerifyPass, &[]),
    ]
}

/// Parses `a,b{k=v,k2=v2},c` into pass specs.
pub fn parse_pipeline(text: &str) -> Result<Vec<PassSpec>, String> {
    let mut specs = Vec::new();
    for part in split_top_level(text)? {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (name, options) = match part.split_once('{') {
            None => (part, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').ok_or_else(|| format!("`{part}`: missing `}}`"))?;
                (name.trim(), parse_options(part, body)?)
            }
        };
        specs.push(PassSpec { name: name.to_string(), options });
    }
    Ok(specs)
}

fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("unbalanced braces in pipeline `{text}`"));
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced braces in pipeline `{text}`"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_options(part: &str, body: &str) -> Result<BTreeMap<String, String>, String> {
    let mut options = BTreeMap::new();
    for kv in body.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').ok_or_else(|| format!("`{part}`: option `{kv}` is not KEY=VALUE"))?;
        options.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(options)
}

/// Creates every pass of a pipeline string (`lowrank{rank=8},simplify,cse`).
pub fn create_pipeline(text: &str) -> Result<Vec<Box<dyn Pass>>, String> {
    parse_pipeline(text)?.iter().map(create).collect()
}

/// Creates the pass a spec names, checking its options.
pub fn create(spec: &PassSpec) -> Result<Box<dyn Pass>, String> {
    let known: Vec<&str> = all().iter().map(|p| p.name).collect();
    let info = all().into_iter().find(|p| p.name == spec.name).ok_or_else(|| {
        format!("unknown pass `{}`; the passes are: {} (see `lpac passes`)", spec.name, known.join(", "))
    })?;
    for key in spec.options.keys() {
        if !info.options.iter().any(|o| o.name == key) {
            let names: Vec<&str> = info.options.iter().map(|o| o.name).collect();
            let list = if names.is_empty() { "none".to_string() } else { names.join(", ") };
            return Err(format!("pass `{}` has no option `{key}` (its options: {list})", spec.name));
        }
    }
    Ok(match spec.name.as_str() {
        "lowrank" => Box::new(lowrank_from(spec)?),
        "attention" => Box::new(crate::attention::FuseAttention),
        "precision" => Box::new(crate::precision::Precision::from_options(&spec.options)?),
        "autodiff" => Box::new(crate::autodiff::Autodiff),
        "simplify" => Box::new(crate::simplify::Simplify::from_options(&spec.options)?),
        "optimizer" => Box::new(crate::optimizer::Optimizer::from_options(&spec.options)?),
        "cse" => Box::new(Cse),
        "dce" => Box::new(Dce),
        "verify" => Box::new(VerifyPass),
        other => unreachable!("pass `{other}` is listed but not created"),
    })
}

fn lowrank_from(spec: &PassSpec) -> Result<Lowrank, String> {
    let rank = spec.options.get("rank").ok_or("pass `lowrank` needs `rank`, e.g. lowrank{rank=64}")?;
    let rank: usize = rank.parse().map_err(|_| format!("lowrank: rank `{rank}` is not a positive integer"))?;
    if rank == 0 {
        return Err("lowrank: the rank must be at least 1".to_string());
    }
    let target = Target::parse(spec.options.get("target").map(String::as_str).unwrap_or("attention"));
    Ok(Lowrank { rank, target })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pipelines_with_options() {
        let specs = parse_pipeline("lowrank{rank=64,target=layers.*.q.weight},simplify, cse").unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0].options["rank"], "64");
        assert_eq!(specs[0].options["target"], "layers.*.q.weight");
        assert_eq!(specs[2].name, "cse");
        assert!(parse_pipeline("a{b=1").is_err());
        assert!(parse_pipeline("a{b}").is_err());
        assert_eq!(parse_pipeline("").unwrap(), vec![]);
    }

    #[test]
    fn creates_known_passes_and_refuses_others() {
        assert!(create(&PassSpec::new("cse")).is_ok());
        let err = create(&PassSpec::new("fusion")).err().unwrap();
        assert!(err.contains("unknown pass `fusion`") && err.contains("simplify"), "{err}");
        let err = create(&PassSpec::new("cse").with("x", 1)).err().unwrap();
        assert!(err.contains("no option `x`"), "{err}");
        let err = create(&PassSpec::new("lowrank")).err().unwrap();
        assert!(err.contains("needs `rank`"), "{err}");
        assert!(create(&PassSpec::new("lowrank").with("rank", "0")).is_err());
        assert!(create(&PassSpec::new("lowrank").with("rank", "x")).is_err());
    }

    #[test]
    fn named_pipelines_parse() {
        for (name, text, _) in PIPELINES {
            for spec in parse_pipeline(text).unwrap() {
                assert!(create(&spec).is_ok(), "pipeline {name}: {}", spec.name);
            }
        }
    }
}
