//! The process's memory as Linux reports it (`/proc/self`), to measure what
//! a training step really uses against what the memory plan says. Every
//! function returns `None` (or does nothing) where `/proc` is unavailable.

/// Resident memory now (`VmRSS`), in bytes.
pub fn resident() -> Option<u64> {
    status_field("VmRSS:")
}

/// The peak resident memory since the last [`reset_peak`] (`VmHWM`).
pub fn peak() -> Option<u64> {
    status_field("VmHWM:")
}

/// Starts a new peak measurement: Linux sets the peak to the current
/// resident size when `5` is written to `/proc/self/clear_refs`.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn status_field(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What one step needs as planned and what it was measured to take.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepMemory {
    /// Temporaries at the plan's peak plus parameters, optimiser state and
    /// inputs.
    pub planned: u64,
    /// The largest growth of resident memory, from just before the step's
    /// buffers were created to the peak of a step (over the first steps of a
    /// run, before evaluations and checkpoints allocate memory of their own).
    pub measured: Option<u64>,
}

impl StepMemory {
    /// `step memory: 250.1 MiB at the peak of a step, 241.4 MiB planned (1.04x)`.
    pub fn describe(&self) -> Option<String> {
        let measured = self.measured?;
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        Some(format!(
            "step memory: {:.1} MiB at the peak of a step, {:.1} MiB planned ({:.2}x)",
            mib(measured),
            mib(self.planned),
            measured as f64 / self.planned.max(1) as f64
        ))
    }
}
