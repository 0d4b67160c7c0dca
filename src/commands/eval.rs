//! `lpac eval CHECKPOINT|RUN_DIR`: test perplexity on a held-out split.

use std::path::{Path, PathBuf};

use crate::cli::EvalArgs;
use crate::commands::train::{config_from_json, tokenizer};
use crate::error::{CliError, CliResult};
use crate::train::checkpoint::{self, Checkpoint, check_params};
use crate::train::data::{DEFAULT_TEST_FRACTION, load_corpus};
use crate::train::evaluate::evaluate;
use crate::train::graphs::{eval_graph, param_types};
use crate::train::run::{CHECKPOINT_FILE, RunConfig, run_record};

/// A checkpoint and the run that wrote it.
pub struct Opened {
    pub path: PathBuf,
    pub checkpoint: Checkpoint,
    pub run: RunConfig,
}

/// Opens `CHECKPOINT` or `RUN_DIR/checkpoint.safetensors`.
pub fn open(path: &Path) -> Result<Opened, CliError> {
    let file = if path.is_dir() { path.join(CHECKPOINT_FILE) } else { path.to_path_buf() };
    let checkpoint = checkpoint::load(&file).map_err(CliError::Message)?;
    let record = run_record(&checkpoint, &file)?;
    let run = config_from_json(&record).map_err(|e| CliError::Message(format!("{}: {e}", file.display())))?;
    Ok(Opened { path: file, checkpoint, run })
}

/// The model's parameters from the checkpoint, checked against the model.
pub fn params(opened: &Opened) -> Result<std::collections::BTreeMap<String, lpac_ir::interp::Tensor>, CliError> {
    let graph = eval_graph(&opened.run.spec, &[])?;
    let expected = param_types(&graph);
    let params: std::collections::BTreeMap<_, _> = opened
        .checkpoint
        .tensors
        .iter()
        .filter(|(k, _)| !k.contains(':'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let only = Checkpoint { tensors: params.clone(), metadata: Default::default() };
    check_params(&only, &expected).map_err(|e| CliError::Message(format!("{}: {e}", opened.path.display())))?;
    Ok(params)
}

pub fn run(args: &EvalArgs) -> CliResult {
    let opened = open(&args.checkpoint)?;
    let params = params(&opened)?;
    let data = args.data.clone().unwrap_or_else(|| opened.run.data.clone());
    let tok = tokenizer(opened.run.tokenizer.as_deref())?;
    let corpus = load_corpus(&data, tok.as_ref(), DEFAULT_TEST_FRACTION).map_err(CliError::Message)?;
    let e = evaluate(&opened.run.spec, &params, &corpus.test, args.device, None)?;
    if args.json {
        let json = serde_json::json!({
            "checkpoint": opened.path.display().to_string(),
            "data": data.display().to_string(),
            "test_loss": e.loss,
            "test_ppl": e.perplexity(),
            "blocks": e.blocks,
            "block_tokens": e.seq,
        });
        println!("{json}");
    } else {
        println!(
            "test perplexity {:.3} (loss {:.4}) over {} blocks of {} tokens of the held-out 5% of {}",
            e.perplexity(),
            e.loss,
            e.blocks,
            e.seq,
            data.display()
        );
    }
    Ok(())
}
