//! The training runtime: corpus and batches (`data`), tokenizers
//! (`tokenizer`), atomic safetensors checkpoints (`checkpoint`), the
//! `metrics.jsonl` log (`metrics`) and loss plots (`plot`).

// The training loop and the `train`/`eval`/`sample` subcommands that use these
// modules land next; until then most of this API has no caller in the binary.
#![allow(dead_code)]

pub mod checkpoint;
pub mod data;
pub mod device;
pub mod evaluate;
pub mod graphs;
pub mod init_from;
pub mod metrics;
pub mod model_spec;
pub mod plot;
pub mod run;
pub mod sample;
pub mod tokenizer;
