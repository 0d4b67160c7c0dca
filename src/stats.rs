//! What `lpac stats` reports: parameters in total and by group, FLOPs, and
//! activation memory, computed from the graph by the cost model and the
//! structural analyses of `lpac-passes`.

use std::collections::BTreeMap;

use lpac_ir::Graph;
use lpac_passes::cost;
use lpac_passes::optimizer::Kind;
use lpac_passes::structure::{ParamGroup, param_groups};
use serde_json::{Value, json};

pub struct Stats {
    pub total_params: u64,
    pub params_by_group: BTreeMap<&'static str, u64>,
    pub tokens_per_step: u64,
    pub flops_per_step_fwd: u64,
    pub matmul_flops_per_step_fwd: u64,
    pub flops_per_step_bwd: u64,
    pub activation_bytes: u64,
    pub attention_sites: usize,
    /// The training step's memory as the CPU backend plans it, when computed.
    pub memory: Option<StepMemory>,
}

/// A training step's memory: what the plan needs at its peak, against every
/// tensor of the step held at once.
#[derive(Clone, Copy, Debug)]
pub struct StepMemory {
    /// Inputs, parameters and optimiser state (held for the whole step).
    pub resident_bytes: u64,
    /// Temporaries at their peak, as the liveness-based plan places them.
    pub planned_temp_bytes: u64,
    /// Temporaries without reuse.
    pub all_temp_bytes: u64,
}

impl StepMemory {
    /// Lowers the training step of `forward` (autodiff, AdamW, the default
    /// optimisations, fusion) and plans its memory.
    pub fn of(forward: &Graph) -> Result<StepMemory, String> {
        let step =
            crate::train::graphs::step_of(forward.clone(), Kind::AdamW, true, crate::train::device::Precision::F32)
                .map_err(|e| e.render())?;
        let program = lpac_passes::fuse::fuse(&step).map_err(|e| e.to_string())?;
        let plan = lpac_cpu::plan_memory(&program);
        let resident = program
            .buffers
            .iter()
            .filter(|b| b.kind != lpac_ir::kernel::BufferKind::Temp)
            .map(|b| b.ty.size_bytes() as u64)
            .sum();
        Ok(StepMemory {
            resident_bytes: resident,
            planned_temp_bytes: plan.arena_bytes as u64,
            all_temp_bytes: plan.sum_bytes as u64,
        })
    }

    pub fn planned_peak_bytes(&self) -> u64 {
        self.resident_bytes + self.planned_temp_bytes
    }

    pub fn unplanned_bytes(&self) -> u64 {
        self.resident_bytes + self.all_temp_bytes
    }
}

impl Stats {
    pub fn of(graph: &Graph) -> Stats {
        let groups = param_groups(graph);
        let mut params_by_group: BTreeMap<&'static str, u64> = ParamGroup::ALL.iter().map(|g| (g.name(), 0)).collect();
        for (id, path) in graph.params() {
            let group = groups.get(path).copied().unwrap_or(ParamGroup::Other);
            *params_by_group.entry(group.name()).or_default() += graph.ty(id).numel() as u64;
        }
        Stats {
            total_params: graph.param_count() as u64,
            params_by_group,
            tokens_per_step: tokens_per_step(graph),
            flops_per_step_fwd: cost::forward_flops(graph),
            matmul_flops_per_step_fwd: cost::matmul_flops(graph),
            flops_per_step_bwd: cost::backward_flops(graph),
            activation_bytes: cost::activation_bytes(graph),
            attention_sites: lpac_passes::structure::find_attention(graph).len(),
            memory: None,
        }
    }

    pub fn flops_per_token_fwd(&self) -> f64 {
        self.flops_per_step_fwd as f64 / self.tokens_per_step as f64
    }

    pub fn matmul_flops_per_token_fwd(&self) -> f64 {
        self.matmul_flops_per_step_fwd as f64 / self.tokens_per_step as f64
    }

    pub fn flops_per_step_train(&self) -> u64 {
        self.flops_per_step_fwd + self.flops_per_step_bwd
    }

    pub fn to_json(&self, model: &str) -> Value {
        json!({
            "model": model,
            "total_params": self.total_params,
            "params_by_group": self.params_by_group,
            "tokens_per_step": self.tokens_per_step,
            "flops_per_token_fwd": self.flops_per_token_fwd(),
            "flops_per_step_fwd": self.flops_per_step_fwd,
            "matmul_flops_per_token_fwd": self.matmul_flops_per_token_fwd(),
            "flops_per_step_train": self.flops_per_step_train(),
            "activation_bytes": self.activation_bytes,
            "attention_sites": self.attention_sites,
            "planned_peak_bytes": self.memory.map(|m| m.planned_peak_bytes()),
            "unplanned_bytes": self.memory.map(|m| m.unplanned_bytes()),
        })
    }
}

/// Tokens one step processes: the elements of the input named `tokens`, or of
/// the first input if none has that name.
fn tokens_per_step(graph: &Graph) -> u64 {
    let inputs: Vec<_> = graph.inputs().collect();
    let chosen = inputs.iter().find(|(_, name)| *name == "tokens").or(inputs.first());
    chosen.map(|(id, _)| graph.ty(*id).numel() as u64).unwrap_or(1).max(1)
}

/// `368.9M`, `7.34M`, `12.5K`, `1.23G`.
pub fn human_count(n: u64) -> String {
    let x = n as f64;
    let (v, unit) = match n {
        0..1_000 => return n.to_string(),
        1_000..1_000_000 => (x / 1e3, "K"),
        1_000_000..1_000_000_000 => (x / 1e6, "M"),
        1_000_000_000..1_000_000_000_000 => (x / 1e9, "G"),
        _ => (x / 1e12, "T"),
    };
    let digits = if v >= 100.0 {
        1
    } else if v >= 10.0 {
        2
    } else {
        3
    };
    format!("{v:.digits$}{unit}")
}

/// `1.50 GiB`, `12.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.2} {}", units[u]) }
}

/// `1,234,567`
pub fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(human_count(368_925_952), "368.9M");
        assert_eq!(human_count(7_342_080), "7.342M");
        assert_eq!(human_count(999), "999");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(12), "12");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.00 MiB");
    }
}
