//! `lpac compare`: a comparison at very small sizes writes a well-formed
//! report (every field, every variant), non-empty plots, and refuses bad
//! input before anything trains.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lpac(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lpac")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lpac-compare-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn small_corpus(dir: &Path) -> PathBuf {
    let full = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare.txt")).unwrap();
    let path = dir.join("small.txt");
    std::fs::write(&path, &full[..20_000]).unwrap();
    path
}

fn compare(dir: &Path, extra: &[&str]) -> Output {
    let data = small_corpus(dir);
    let out = dir.join("report");
    let mut args = vec!["compare", "models/tiny.lpa", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(["--set", "layers=1", "--set", "d=16", "--set", "heads=2", "--set", "ffn=32", "--set", "seq=16"]);
    args.extend(["--batch", "2"]);
    args.extend_from_slice(extra);
    lpac(&args)
}

#[test]
fn a_small_comparison_writes_a_complete_report_and_plots() {
    let dir = temp("report");
    let o = compare(&dir, &["--lowrank", "4,8", "--targets", "attention,ffn,all", "--steps", "6"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = dir.join("report");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let variants = report["variants"].as_array().unwrap();
    let labels: Vec<&str> = variants.iter().map(|v| v["variant"].as_str().unwrap()).collect();
    assert_eq!(labels, ["dense", "attention-r4", "attention-r8", "ffn-r4", "ffn-r8", "all-r4", "all-r8"]);
    let dense_params = variants[0]["params"].as_u64().unwrap();
    for v in variants {
        for key in ["params", "flops_per_token", "median_step_s", "tokens_per_s", "final_train_loss", "test_ppl"] {
            let x = v[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {v}"));
            assert!(x.is_finite() && x > 0.0, "{key} = {x} in {v}");
            assert!(v["change_vs_dense_pct"][key].as_f64().is_some_and(f64::is_finite), "{key} change in {v}");
        }
        assert_eq!(v["steps"], 6);
        if v["variant"] != "dense" {
            // Factoring removes parameters and work at these ranks.
            assert!(v["params"].as_u64().unwrap() < dense_params, "{v}");
            assert!(v["change_vs_dense_pct"]["params"].as_f64().unwrap() < 0.0, "{v}");
            assert!(v["rank"].as_u64().is_some() && v["target"].is_string());
        }
        // The report's perplexity is the variant run's own evaluation.
        assert!(out.join(v["variant"].as_str().unwrap()).join("metrics.jsonl").exists());
    }
    assert_eq!(variants[0]["change_vs_dense_pct"]["test_ppl"], 0.0);
    assert_eq!(report["budget"]["steps"], 6);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for label in labels {
        assert!(md.contains(&format!("| {label} |")), "{label} row missing:\n{md}");
    }
    for (name, magic) in [("loss-steps.png", &b"\x89PNG"[..]), ("loss-time.png", &b"\x89PNG"[..])] {
        let bytes = std::fs::read(out.join(name)).unwrap();
        assert!(bytes.len() > 1000 && bytes.starts_with(magic), "{name}: {} bytes", bytes.len());
    }
    for name in ["loss-steps.svg", "loss-time.svg"] {
        let svg = std::fs::read_to_string(out.join(name)).unwrap();
        assert!(svg.contains("<svg") && svg.contains("<polyline") && svg.contains("ffn-r8"), "{name}");
    }
    // A second comparison into the same folder is refused.
    let again = compare(&dir, &["--lowrank", "4", "--steps", "2"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("already holds a comparison"), "{}", text(&again));
}

#[test]
fn matched_ranks_remove_about_as_many_parameters() {
    let dir = temp("match");
    let o = compare(&dir, &["--lowrank", "4", "--targets", "attention,ffn", "--match-params", "--steps", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report/report.json")).unwrap()).unwrap();
    let v = report["variants"].as_array().unwrap();
    let dense = v[0]["params"].as_f64().unwrap();
    let removed = |i: usize| dense - v[i]["params"].as_f64().unwrap();
    assert_eq!(v[1]["variant"], "attention-r4");
    assert_eq!(v[2]["target"], "ffn");
    // Within one rank's worth of parameters of each other.
    assert!((removed(1) - removed(2)).abs() <= 2.0 * 16.0 + 2.0 * 32.0, "{} vs {}", removed(1), removed(2));
}

#[test]
fn bad_input_is_refused_before_anything_trains() {
    let dir = temp("bad");
    for (extra, says) in [
        (vec!["--lowrank", "4", "--targets", ","], "--targets is empty"),
        (vec!["--lowrank", "4", "--targets", "heads"], "unknown target `heads`"),
        (vec!["--lowrank", "500"], "rank 500 does not reduce"),
        (vec!["--lowrank", "4", "--steps", "0"], "too small for a single step"),
        (vec!["--lowrank", "4", "--time-budget", "0"], "too small for a single step"),
        (vec!["--lowrank", "4", "--targets", "ffn", "--match-params"], "add attention to --targets"),
    ] {
        let o = compare(&dir, &extra);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{extra:?}: {}", text(&o));
        assert!(!text(&o).contains("panicked"));
        assert!(!dir.join("report").exists(), "{extra:?}: nothing may be written");
    }
}
