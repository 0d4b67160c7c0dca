//! `ptxas`, NVIDIA's PTX assembler, as a checker and a resource report.
//!
//! lpac does not need `ptxas` to run (the CUDA driver compiles PTX when it
//! loads it); it uses it to check generated PTX without a GPU and to report
//! what each function costs: registers and spilled bytes. The PyPI wheel
//! `nvidia-cuda-nvcc-cu12` ships it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Arch;

/// `ptxas` from `$LPAC_PTXAS`, `PATH`, or the Python packages (the wheel
/// installs it under `nvidia/cuda_nvcc/bin`), if any.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LPAC_PTXAS") {
        return Some(PathBuf::from(p));
    }
    if Command::new("ptxas").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Some(PathBuf::from("ptxas"));
    }
    let script =
        "import nvidia, os\nfor p in nvidia.__path__:\n    print(os.path.join(p, 'cuda_nvcc', 'bin', 'ptxas'))";
    let out = Command::new("python3").args(["-c", script]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from).find(|p| p.is_file())
}

/// What `ptxas -v` reports for one function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub registers: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

/// Assembles `ptx` for `arch` in `dir` (files named after `name`); the
/// report, or ptxas's error output.
pub fn assemble(ptxas: &Path, ptx: &str, arch: Arch, dir: &Path, name: &str) -> Result<Report, String> {
    let src = dir.join(format!("{name}.ptx"));
    std::fs::write(&src, ptx).map_err(|e| format!("cannot write {}: {e}", src.display()))?;
    let out = Command::new(ptxas)
        .args(["--gpu-name", arch.name(), "-v", "-o"])
        .arg(dir.join(format!("{name}.cubin")))
        .arg(&src)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", ptxas.display()))?;
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        return Err(text);
    }
    Ok(parse_report(&text))
}

/// The numbers in `ptxas -v` output: `Used 12 registers`, `8 bytes spill
/// stores, 8 bytes spill loads`.
fn parse_report(text: &str) -> Report {
    let number_before = |line: &str, word: &str| -> Option<u32> {
        let at = line.find(word)?;
        line[..at].split_whitespace().last()?.parse().ok()
    };
    let mut report = Report::default();
    for line in text.lines() {
        if let Some(n) = number_before(line, "registers") {
            report.registers = n;
        }
        if let Some(n) = number_before(line, "bytes spill stores") {
            report.spill_stores = n;
        }
        if let Some(n) = number_before(line, "bytes spill loads") {
            report.spill_loads = n;
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_read_from_ptxas_output() {
        let text = "ptxas info    : Compiling entry function 'k1' for 'sm_90'\n\
                    ptxas info    : Function properties for k1\n\
                    \t    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
                    ptxas info    : Used 27 registers, 388 bytes cmem[0]\n";
        assert_eq!(parse_report(text), Report { registers: 27, spill_stores: 4, spill_loads: 12 });
    }
}
