//! `lpac stats FILE`: parameters, FLOPs and activation memory.

use crate::cli::StatsArgs;
use crate::error::CliResult;
use crate::load::load;
use crate::stats::{Stats, grouped, human_bytes, human_count};

pub fn run(args: &StatsArgs) -> CliResult {
    let loaded = load(&args.model)?;
    let stats = Stats::of(&loaded.graph);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats.to_json(&loaded.name)).map_err(|e| e.to_string())?);
        return Ok(());
    }
    print!("{}", render(&loaded.name, &stats));
    Ok(())
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
    out += &format!(
        "  forward FLOPs/token    {:>15}  {}\n",
        grouped(s.flops_per_token_fwd() as u64),
        human_count(s.flops_per_token_fwd() as u64)
    );
    let mm = s.matmul_flops_per_token_fwd() as u64;
    out += &format!("    of which matmuls     {:>15}  {}\n", grouped(mm), human_count(mm));
    out += &format!(
        "  train FLOPs/step       {:>15}  {}  (forward + backward)\n",
        grouped(s.flops_per_step_train()),
        human_count(s.flops_per_step_train())
    );
    out +=
        &format!("  activation memory/step {:>15}  {}\n", grouped(s.activation_bytes), human_bytes(s.activation_bytes));
    out
}
