//! `lpac stats FILE [--lowrank R]`: parameters, FLOPs and activation memory;
//! with --lowrank, the dense and factored models side by side.

use lpac_passes::manager::{Instrumentation, run_pipeline};

use crate::cli::StatsArgs;
use crate::error::{CliError, CliResult};
use crate::load::load;
use crate::pipeline::{create, lowrank_spec};
use crate::stats::{Stats, StepMemory, grouped, human_bytes, human_count};

pub fn run(args: &StatsArgs) -> CliResult {
    let loaded = load(&args.model)?;
    let mut dense = Stats::of(&loaded.graph);
    dense.memory = step_memory(&loaded.graph)?;
    let Some(spec) = lowrank_spec(&args.lowrank) else {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&dense.to_json(&loaded.name)).map_err(|e| e.to_string())?);
        } else {
            print!("{}", render(&loaded.name, &dense));
        }
        return Ok(());
    };
    let passes = create(&[spec])?;
    let run = run_pipeline(loaded.graph, &passes, &Instrumentation::default(), &mut std::io::sink())
        .map_err(|e| CliError::Message(e.to_string()))?;
    let mut factored = Stats::of(run.output());
    factored.memory = step_memory(run.output())?;
    let rank = args.lowrank.lowrank.unwrap_or_default();
    if args.json {
        let mut json = factored.to_json(&loaded.name);
        json["lowrank"] = serde_json::json!({ "rank": rank, "target": args.lowrank.lowrank_target });
        json["dense"] = dense.to_json(&loaded.name);
        println!("{}", serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?);
    } else {
        print!("{}", render_side_by_side(&loaded.name, &dense, &factored, rank, &args.lowrank.lowrank_target));
    }
    Ok(())
}

/// The planned memory of a training step, for graphs that are models (a
/// float scalar loss first, parameters to train).
fn step_memory(graph: &lpac_ir::Graph) -> Result<Option<StepMemory>, CliError> {
    if graph.params().next().is_none() {
        return Ok(None);
    }
    StepMemory::of(graph).map(Some).map_err(|e| CliError::Message(format!("planning the training step: {e}")))
}

fn render(name: &str, s: &Stats) -> String {
    let mut out = format!("model `{name}`\n");
    out += &format!("  parameters             {:>15}  {}\n", grouped(s.total_params), human_count(s.total_params));
    for (group, n) in &s.params_by_group {
        if *n == 0 {
            continue;
        }
        let share = 100.0 * *n as f64 / s.total_params.max(1) as f64;
        out += &format!("    {:<20} {:>15}  {:>8}  {:>5.1}%\n", group, grouped(*n), human_count(*n), share);
    }
    out += &format!("  attention sites        {:>15}\n", s.attention_sites);
    out += &format!("  tokens per step        {:>15}\n", grouped(s.tokens_per_step));
    let fwd = s.flops_per_token_fwd() as u64;
    out += &format!("  forward FLOPs/token    {:>15}  {}\n", grouped(fwd), human_count(fwd));
    let mm = s.matmul_flops_per_token_fwd() as u64;
    out += &format!("    of which matmuls     {:>15}  {}\n", grouped(mm), human_count(mm));
    let train = s.flops_per_step_train();
    out += &format!("  train FLOPs/step       {:>15}  {}  (forward + backward)\n", grouped(train), human_count(train));
    out +=
        &format!("  activation memory/step {:>15}  {}\n", grouped(s.activation_bytes), human_bytes(s.activation_bytes));
    if let Some(m) = s.memory {
        let (peak, all) = (m.planned_peak_bytes(), m.unplanned_bytes());
        out += &format!(
            "  training step memory   {:>15}  {}  planned peak (CPU backend)\n",
            grouped(peak),
            human_bytes(peak)
        );
        out += &format!("    without reuse        {:>15}  {}\n", grouped(all), human_bytes(all));
    }
    out
}

fn render_side_by_side(name: &str, dense: &Stats, lpa: &Stats, rank: usize, target: &str) -> String {
    let mut out = format!("model `{name}`: dense against lowrank r={rank} (target {target})\n\n");
    out += &format!("  {:<24} {:>16} {:>16} {:>9}\n", "", "dense", "lowrank", "change");
    let mut row = |label: &str, a: u64, b: u64| {
        let change =
            if a == 0 { String::from("-") } else { format!("{:+.1}%", 100.0 * (b as f64 - a as f64) / a as f64) };
        out += &format!("  {:<24} {:>16} {:>16} {:>9}\n", label, human_count(a), human_count(b), change);
    };
    row("parameters", dense.total_params, lpa.total_params);
    for (group, n) in &dense.params_by_group {
        let m = lpa.params_by_group.get(group).copied().unwrap_or(0);
        if *n > 0 || m > 0 {
            row(&format!("  {group}"), *n, m);
        }
    }
    row("forward FLOPs/token", dense.flops_per_token_fwd() as u64, lpa.flops_per_token_fwd() as u64);
    row("  of which matmuls", dense.matmul_flops_per_token_fwd() as u64, lpa.matmul_flops_per_token_fwd() as u64);
    row("train FLOPs/step", dense.flops_per_step_train(), lpa.flops_per_step_train());
    row("activation bytes/step", dense.activation_bytes, lpa.activation_bytes);
    if let (Some(a), Some(b)) = (dense.memory, lpa.memory) {
        row("planned step memory", a.planned_peak_bytes(), b.planned_peak_bytes());
    }
    out += &format!(
        "\n  exact parameters: {} dense, {} lowrank\n",
        grouped(dense.total_params),
        grouped(lpa.total_params)
    );
    out
}
