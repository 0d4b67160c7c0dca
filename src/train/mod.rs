//! The training runtime: what a run is (`model_spec`, `run`), the graphs it
//! needs (`graphs`) and where they run (`device`); corpus and batches
//! (`data`), tokenizers (`tokenizer`), atomic safetensors checkpoints
//! (`checkpoint`), the `metrics.jsonl` log (`metrics`), loss plots (`plot`),
//! evaluation, sampling, and LPA from a dense checkpoint (`init_from`).

pub mod checkpoint;
pub mod cpu;
pub mod data;
pub mod device;
pub mod evaluate;
pub mod graphs;
pub mod init_from;
pub mod metrics;
pub mod model_spec;
pub mod plot;
pub mod procmem;
pub mod run;
pub mod sample;
pub mod tokenizer;
