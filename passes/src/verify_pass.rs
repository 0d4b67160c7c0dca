//! `verify` as a pass: checks the graph and changes nothing, so a pipeline
//! can assert validity at any point (`lowrank,verify,simplify`).

use lpac_ir::Graph;

use crate::pass::{Pass, PassError, PassOutcome};

pub struct VerifyPass;

impl Pass for VerifyPass {
    fn name(&self) -> &'static str {
        "verify"
    }

    fn summary(&self) -> &'static str {
        "check the graph (types, operands, names); changes nothing"
    }

    fn preserves_meaning(&self) -> bool {
        true
    }

    fn run(&self, graph: &Graph) -> Result<PassOutcome, PassError> {
        lpac_ir::verify(graph).map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            PassError::new("verify", lines.join("; "))
        })?;
        Ok(PassOutcome::unchanged(graph))
    }
}
