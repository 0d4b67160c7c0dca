//! `metrics.jsonl`: one JSON object a line, one line per logged step.
//!
//! Keys, in this order: `step`, `loss`, `lr`, `grad_norm`, `tokens_per_s`,
//! and on lines of steps that ran an evaluation also `eval_loss` and
//! `eval_ppl` (`exp(eval_loss)`). Scripts rely on these names (see
//! `design.md`). JSON has no NaN or infinity: a non-finite number (a diverged
//! loss, an overflowing perplexity) is written as `null`.
//!
//! Each line is written with one `write` call straight to the file (no user
//! space buffer), so a line is in the operating system's hands as soon as
//! [`MetricsLog::log`] returns and a killed process loses at most the line
//! being written. Lines are not fsynced one by one; call
//! [`MetricsLog::sync`] next to a checkpoint for durability.
//!
//! Resuming from a checkpoint at step `s`, [`MetricsLog::resume`] keeps the
//! lines with `step <= s` and drops the rest (they are about to be logged
//! again), so the resumed run's file has the same lines, in the same order,
//! as an uninterrupted run's (up to wall-clock throughput).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::checkpoint::write_atomic;

/// The file name of the metrics log in a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// One line of the log.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    /// Set on steps that ran an evaluation; adds `eval_loss` and `eval_ppl`.
    pub eval_loss: Option<f64>,
}

/// A number as JSON: shortest round-trip form, `null` when not finite.
fn number(x: f64) -> String {
    serde_json::to_string(&x).unwrap_or_else(|_| "null".to_string())
}

impl Record {
    /// The record as one JSON object, keys in the documented order, without a
    /// newline.
    pub fn to_json_line(&self) -> String {
        let mut line = format!(
            "{{\"step\":{},\"loss\":{},\"lr\":{},\"grad_norm\":{},\"tokens_per_s\":{}",
            self.step,
            number(self.loss),
            number(self.lr),
            number(self.grad_norm),
            number(self.tokens_per_s)
        );
        if let Some(eval_loss) = self.eval_loss {
            line.push_str(&format!(",\"eval_loss\":{},\"eval_ppl\":{}", number(eval_loss), number(eval_loss.exp())));
        }
        line.push('}');
        line
    }
}

/// An open metrics log, appending.
#[derive(Debug)]
pub struct MetricsLog {
    file: File,
    path: PathBuf,
}

impl MetricsLog {
    /// Starts a new log at `path`, replacing any file there.
    pub fn create(path: &Path) -> Result<MetricsLog, String> {
        let file = File::create(path).map_err(|e| format!("cannot create metrics file `{}`: {e}", path.display()))?;
        Ok(MetricsLog { file, path: path.to_path_buf() })
    }

    /// Continues the log at `path` after a resume from step `step`: keeps the
    /// lines with `step <= step` (byte for byte), drops later ones, rewrites
    /// the file atomically and appends from there. A missing file starts an
    /// empty log. A torn last line (a process killed mid-write) is dropped;
    /// any other line that is not a JSON object with an integer `step` is an
    /// error naming the line.
    pub fn resume(path: &Path, step: u64) -> Result<MetricsLog, String> {
        let shown = path.display();
        let kept = match std::fs::read(path) {
            Ok(bytes) => {
                let mut kept = String::new();
                for line in parse_lines(path, &bytes)? {
                    if line.step <= step {
                        kept.push_str(line.text);
                        kept.push('\n');
                    }
                }
                kept
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("cannot read metrics file `{shown}`: {e}")),
        };
        write_atomic(path, kept.as_bytes()).map_err(|e| format!("cannot rewrite metrics file `{shown}`: {e}"))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open metrics file `{shown}`: {e}"))?;
        Ok(MetricsLog { file, path: path.to_path_buf() })
    }

    /// The file being written.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record as a line.
    pub fn log(&mut self, record: &Record) -> Result<(), String> {
        self.write_line(&record.to_json_line())
    }

    /// Appends an arbitrary JSON object as a line (for keys beyond
    /// [`Record`]'s). It must have a non-negative integer `step`, so that
    /// [`MetricsLog::resume`] can place it.
    #[cfg(test)]
    pub fn log_value(&mut self, value: &Value) -> Result<(), String> {
        if value.get("step").and_then(Value::as_u64).is_none() {
            return Err(format!("a metrics line needs a non-negative integer `step`, got {value}"));
        }
        self.write_line(&value.to_string())
    }

    fn write_line(&mut self, line: &str) -> Result<(), String> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.flush())
            .map_err(|e| format!("cannot write to metrics file `{}`: {e}", self.path.display()))
    }

    /// Forces the lines written so far to disk.
    pub fn sync(&mut self) -> Result<(), String> {
        self.file.sync_data().map_err(|e| format!("cannot sync metrics file `{}`: {e}", self.path.display()))
    }
}

/// One parsed line: its text (without the newline), its value and its step.
struct Line<'a> {
    text: &'a str,
    value: Value,
    step: u64,
}

/// The lines of a metrics file. Blank lines are skipped; a last line without
/// its newline that does not parse is a torn write and is skipped.
fn parse_lines<'a>(path: &Path, bytes: &'a [u8]) -> Result<Vec<Line<'a>>, String> {
    let shown = path.display();
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            // Only a torn last line can hold a partial UTF-8 sequence.
            let valid = &bytes[..e.valid_up_to()];
            if bytes[e.valid_up_to()..].contains(&b'\n') {
                return Err(format!("metrics file `{shown}` is not valid UTF-8 at byte offset {}", e.valid_up_to()));
            }
            std::str::from_utf8(valid).expect("valid prefix")
        }
    };
    let complete = text.ends_with('\n') && bytes.len() == text.len();
    let pieces: Vec<&str> = text.split('\n').collect();
    let mut lines = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let is_last = i + 1 == pieces.len();
        if piece.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(piece).map_err(|e| e.to_string()).and_then(|value| {
            match value.get("step").and_then(Value::as_u64) {
                Some(step) => Ok((value, step)),
                None => Err("it has no integer `step`".to_string()),
            }
        });
        match parsed {
            Ok((value, step)) => lines.push(Line { text: piece, value, step }),
            Err(_) if is_last && !complete => {} // torn write
            Err(e) => return Err(format!("metrics file `{shown}` line {} is not a metrics record: {e}", i + 1)),
        }
    }
    Ok(lines)
}

/// Every record of the metrics file at `path`, in file order (a torn last
/// line is skipped).
pub fn read(path: &Path) -> Result<Vec<Value>, String> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("metrics file `{}` does not exist", path.display()),
        _ => format!("cannot read metrics file `{}`: {e}", path.display()),
    })?;
    Ok(parse_lines(path, &bytes)?.into_iter().map(|line| line.value).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lpac-train-metrics-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    fn record(step: u64) -> Record {
        Record {
            step,
            loss: 5.0 / (step as f64 + 1.0),
            lr: 1e-3,
            grad_norm: 0.5,
            tokens_per_s: 1234.5,
            eval_loss: step.is_multiple_of(5).then_some(2.0),
        }
    }

    /// A "run" that logs steps `from..to` into `log`.
    fn run(log: &mut MetricsLog, from: u64, to: u64) {
        for step in from..to {
            log.log(&record(step)).unwrap();
        }
    }

    #[test]
    fn lines_have_the_documented_keys_in_order() {
        let line = record(3).to_json_line();
        assert_eq!(line, r#"{"step":3,"loss":1.25,"lr":0.001,"grad_norm":0.5,"tokens_per_s":1234.5}"#);
        let line = record(5).to_json_line();
        assert_eq!(
            line,
            format!(
                r#"{{"step":5,"loss":{},"lr":0.001,"grad_norm":0.5,"tokens_per_s":1234.5,"eval_loss":2.0,"eval_ppl":{}}}"#,
                5.0 / 6.0,
                2f64.exp()
            )
        );
        let diverged = Record { loss: f64::NAN, grad_norm: f64::INFINITY, ..record(1) };
        let v: Value = serde_json::from_str(&diverged.to_json_line()).unwrap();
        assert!(v["loss"].is_null() && v["grad_norm"].is_null());
        assert_eq!(v["step"], 1);
    }

    #[test]
    fn log_writes_and_read_returns_every_line() {
        let dir = scratch_dir("write");
        let path = dir.join(METRICS_FILE);
        let mut log = MetricsLog::create(&path).unwrap();
        run(&mut log, 0, 7);
        // Lines are visible without dropping or flushing the log.
        let values = read(&path).unwrap();
        assert_eq!(values.len(), 7);
        assert_eq!(values[6]["step"], 6);
        assert_eq!(values[5]["eval_loss"], 2.0);
        assert!((values[5]["eval_ppl"].as_f64().unwrap() - 2f64.exp()).abs() < 1e-12);
        assert!(values[4].get("eval_loss").is_none());
        log.sync().unwrap();

        log.log_value(&serde_json::json!({"step": 7, "loss": 0.5, "note": "extra"})).unwrap();
        assert_eq!(read(&path).unwrap()[7]["note"], "extra");
        assert!(log.log_value(&serde_json::json!({"loss": 0.5})).is_err());
        assert!(log.log_value(&serde_json::json!({"step": -1})).is_err());
        assert_eq!(log.path(), path.as_path());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_resumed_log_equals_an_uninterrupted_one() {
        let dir = scratch_dir("resume");
        let straight = dir.join("straight.jsonl");
        let mut log = MetricsLog::create(&straight).unwrap();
        run(&mut log, 0, 20);
        drop(log);

        // Interrupted after step 13, with the checkpoint at step 10; the
        // kill tore the line of step 14.
        let resumed = dir.join("resumed.jsonl");
        let mut log = MetricsLog::create(&resumed).unwrap();
        run(&mut log, 0, 14);
        drop(log);
        let mut f = std::fs::OpenOptions::new().append(true).open(&resumed).unwrap();
        f.write_all(&record(14).to_json_line().as_bytes()[..20]).unwrap();
        drop(f);
        assert_eq!(read(&resumed).unwrap().len(), 14, "the torn line is skipped");

        let mut log = MetricsLog::resume(&resumed, 10).unwrap();
        assert_eq!(read(&resumed).unwrap().len(), 11, "steps 0..=10 kept");
        run(&mut log, 11, 20);
        drop(log);
        assert_eq!(std::fs::read(&straight).unwrap(), std::fs::read(&resumed).unwrap());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn resume_without_a_file_starts_empty() {
        let dir = scratch_dir("fresh");
        let path = dir.join(METRICS_FILE);
        let mut log = MetricsLog::resume(&path, 100).unwrap();
        run(&mut log, 101, 103);
        let steps: Vec<u64> = read(&path).unwrap().iter().map(|v| v["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, [101, 102]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn damaged_lines_are_errors_naming_the_line() {
        let dir = scratch_dir("damaged");
        let path = dir.join(METRICS_FILE);
        std::fs::write(&path, "{\"step\":0,\"loss\":1}\nnot json\n{\"step\":2}\n").unwrap();
        let err = read(&path).unwrap_err();
        assert!(err.contains(METRICS_FILE) && err.contains("line 2"), "{err}");
        let err = MetricsLog::resume(&path, 5).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        std::fs::write(&path, "{\"loss\":1}\n").unwrap();
        let err = read(&path).unwrap_err();
        assert!(err.contains("line 1") && err.contains("`step`"), "{err}");
        let err = read(&dir.join("missing.jsonl")).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
