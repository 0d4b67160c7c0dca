//! `lpac train / eval / sample` end to end, at sizes that run in seconds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lpac(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lpac"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("lpac runs")
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lpac-train-{}-{}", name, std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A few kilobytes of the bundled corpus: enough for tiny models.
fn small_corpus(dir: &Path) -> PathBuf {
    let full = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare.txt")).unwrap();
    let path = dir.join("small.txt");
    std::fs::write(&path, &full[..20_000]).unwrap();
    path
}

const SMALL: &[&str] =
    &["--set", "layers=1", "--set", "d=16", "--set", "heads=2", "--set", "ffn=32", "--set", "seq=16", "--batch", "2"];

fn train(dir: &Path, out: &str, extra: &[&str]) -> Output {
    let data = small_corpus(dir);
    let out = dir.join(out);
    let mut args =
        vec!["train", "models/tiny.lpa", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json"];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    lpac(&args)
}

fn losses(run: &Path) -> Vec<u64> {
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap().to_bits())
        .collect()
}

#[test]
fn a_short_run_lowers_the_loss_and_writes_the_run_folder() {
    let dir = temp("short");
    let o = train(&dir, "run", &["--steps", "40", "--lr", "3e-3", "--eval-every", "20", "--eval-blocks", "4"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let run = dir.join("run");
    for file in ["config.json", "metrics.jsonl", "loss.png", "checkpoint.safetensors"] {
        assert!(run.join(file).exists(), "{file} missing");
    }
    let l: Vec<f64> = losses(&run).into_iter().map(f64::from_bits).collect();
    assert_eq!(l.len(), 40);
    let first: f64 = l[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = l[35..].iter().sum::<f64>() / 5.0;
    assert!(last < first - 0.5, "loss did not fall: {first} -> {last}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let eval_line: serde_json::Value = serde_json::from_str(metrics.lines().nth(19).unwrap()).unwrap();
    for key in ["step", "loss", "lr", "grad_norm", "tokens_per_s", "eval_loss", "eval_ppl"] {
        assert!(eval_line.get(key).is_some(), "{key} missing in {eval_line}");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["seed"], 0);
    assert!(config["model"]["source"].as_str().unwrap().contains("model tiny"));
    assert_eq!(config["resolved_config"]["d"], "16");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("\"test_ppl\""), "prints the test perplexity: {stdout}");
    let png = std::fs::read(run.join("loss.png")).unwrap();
    assert!(png.len() > 1000 && png.starts_with(b"\x89PNG"));
}

#[test]
fn resume_continues_the_same_loss_curve_bit_for_bit() {
    let dir = temp("resume");
    let dropout = ["--set", "dropout=0.1", "--eval-every", "0"];
    let straight = train(&dir, "straight", &[&["--steps", "8"][..], &dropout[..]].concat());
    assert_eq!(straight.status.code(), Some(0), "{}", text(&straight));
    let first = train(&dir, "split", &[&["--steps", "8", "--checkpoint-every", "3"][..], &dropout[..]].concat());
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_eq!(losses(&dir.join("straight")), losses(&dir.join("split")), "checkpointing changes nothing");
    // The same run stopped at step 3 (checkpoint saved), then resumed to the end.
    let partial = train(&dir, "partial", &[&["--steps", "8", "--stop-at", "3"][..], &dropout[..]].concat());
    assert_eq!(partial.status.code(), Some(0), "{}", text(&partial));
    let out = dir.join("partial");
    assert_eq!(losses(&out).len(), 3);
    let resumed = lpac(&["train", "models/tiny.lpa", "--resume", "--out", out.to_str().unwrap(), "--json"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    assert_eq!(losses(&dir.join("straight")), losses(&out), "resumed curve differs from the uninterrupted one");
}

#[test]
fn eval_and_sample_on_a_fresh_checkpoint() {
    let dir = temp("evalsample");
    let o = train(&dir, "run", &["--steps", "5", "--eval-every", "0"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let run = dir.join("run");
    let data = dir.join("small.txt");
    let e = lpac(&["eval", run.to_str().unwrap(), "--data", data.to_str().unwrap(), "--json"]);
    assert_eq!(e.status.code(), Some(0), "{}", text(&e));
    let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    let ppl = v["test_ppl"].as_f64().unwrap();
    assert!(ppl > 1.0 && ppl < 300.0, "perplexity {ppl}");
    assert!((v["test_loss"].as_f64().unwrap().exp() - ppl).abs() < 1e-9 * ppl);
    let s = lpac(&[
        "sample",
        run.join("checkpoint.safetensors").to_str().unwrap(),
        "--prompt",
        "ROMEO:",
        "--tokens",
        "12",
        "--seed",
        "3",
    ]);
    assert_eq!(s.status.code(), Some(0), "{}", text(&s));
    let out = String::from_utf8_lossy(&s.stdout).to_string();
    assert!(out.starts_with("ROMEO:") && out.trim_end().len() > "ROMEO:".len(), "{out}");
    let again = lpac(&["sample", run.to_str().unwrap(), "--prompt", "ROMEO:", "--tokens", "12", "--seed", "3"]);
    assert_eq!(again.stdout, s.stdout, "same seed, same text");
    let greedy = lpac(&["sample", run.to_str().unwrap(), "--prompt", "ROMEO:", "--tokens", "4", "--temperature", "0"]);
    assert_eq!(greedy.status.code(), Some(0), "{}", text(&greedy));
}

#[test]
fn nan_stops_the_run_naming_the_step_and_keeps_the_last_checkpoint() {
    let dir = temp("nan");
    let o = train(
        &dir,
        "run",
        &["--steps", "30", "--lr", "1e30", "--clip", "0", "--checkpoint-every", "1", "--eval-every", "0"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("training stopped at step") && err.contains("not finite") || err.contains("the loss is"),
        "{err}"
    );
    assert!(dir.join("run/checkpoint.safetensors").exists(), "the last good checkpoint is kept");
    let e = lpac(&["eval", dir.join("run").to_str().unwrap(), "--data", dir.join("small.txt").to_str().unwrap()]);
    assert_eq!(e.status.code(), Some(0), "the kept checkpoint loads: {}", text(&e));
}

#[test]
fn bad_inputs_are_refused_clearly() {
    let dir = temp("bad");
    let data = small_corpus(&dir);
    let run = |extra: &[&str]| {
        let mut args = vec!["train", "models/tiny.lpa", "--steps", "2", "--json"];
        args.extend_from_slice(SMALL);
        args.extend_from_slice(extra);
        lpac(&args)
    };
    let out = dir.join("o");
    let out = out.to_str().unwrap();
    let missing = run(&["--data", "/no/such/file.txt", "--out", out]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing).contains("/no/such/file.txt"), "{}", text(&missing));
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let o = run(&["--data", empty.to_str().unwrap(), "--out", out]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("empty"), "{}", text(&o));
    let short = dir.join("short.txt");
    std::fs::write(&short, "To be or not to be").unwrap();
    let o = run(&["--data", short.to_str().unwrap(), "--out", out]);
    assert_eq!(o.status.code(), Some(1));
    let binary = dir.join("binary.txt");
    std::fs::write(&binary, [b'a', 0xff, 0xfe, b'b']).unwrap();
    let o = run(&["--data", binary.to_str().unwrap(), "--out", out]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("UTF-8"), "{}", text(&o));
    let o = run(&["--data", data.to_str().unwrap(), "--out", "/proc/lpac-run"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("run folder"), "{}", text(&o));
    let o = run(&["--data", data.to_str().unwrap(), "--out", out, "--device", "cuda"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--device cuda"), "{}", text(&o));
    // A run folder that holds a run is never overwritten.
    let ok = run(&["--data", data.to_str().unwrap(), "--out", out]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    let again = run(&["--data", data.to_str().unwrap(), "--out", out]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("already holds a run"), "{}", text(&again));
    // A checkpoint of another model: the tensor at fault is named.
    let other = lpac(&["eval", out, "--data", data.to_str().unwrap()]);
    assert_eq!(other.status.code(), Some(0), "{}", text(&other));
    let ck = dir.join("o/checkpoint.safetensors");
    let mut bytes = std::fs::read(&ck).unwrap();
    bytes.truncate(bytes.len() / 2);
    let corrupt = dir.join("corrupt.safetensors");
    std::fs::write(&corrupt, &bytes).unwrap();
    let o = lpac(&["eval", corrupt.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("not a valid safetensors checkpoint"), "{}", text(&o));
}

#[test]
fn a_checkpoint_of_another_model_is_refused_with_the_tensor_named() {
    let dir = temp("other");
    let data = small_corpus(&dir);
    let a = dir.join("a");
    let mut args = vec![
        "train",
        "models/tiny.lpa",
        "--steps",
        "1",
        "--eval-every",
        "0",
        "--json",
        "--data",
        data.to_str().unwrap(),
        "--out",
        a.to_str().unwrap(),
    ];
    args.extend_from_slice(SMALL);
    assert_eq!(lpac(&args).status.code(), Some(0));
    // Resume the run with a config.json that describes a wider model.
    let config_path = a.join("config.json");
    let config = std::fs::read_to_string(&config_path).unwrap().replace("\"d=16\"", "\"d=32\"");
    std::fs::write(&config_path, config).unwrap();
    let o = lpac(&["train", "models/tiny.lpa", "--resume", "--out", a.to_str().unwrap(), "--steps", "2"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("wte.weight") && t.contains("f32[256,16]") && t.contains("f32[256,32]"), "{t}");
}

#[test]
fn lowrank_from_a_dense_checkpoint_reports_reconstruction() {
    let dir = temp("initfrom");
    let o = train(&dir, "dense", &["--steps", "2", "--eval-every", "0", "--set", "d=32"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let dense = dir.join("dense/checkpoint.safetensors");
    let o = train(
        &dir,
        "lpa",
        &[
            "--steps",
            "2",
            "--eval-every",
            "0",
            "--set",
            "d=32",
            "--lowrank",
            "8",
            "--init-from",
            dense.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("layers.0.attn.q.weight relative reconstruction error"), "{err}");
    assert!(err.contains("bias moved to the first factor"), "{err}");
    // At full rank minus nothing... at r = 31 of 32 the error is small.
    let o = train(
        &dir,
        "lpa31",
        &[
            "--steps",
            "1",
            "--eval-every",
            "0",
            "--set",
            "d=32",
            "--lowrank",
            "31",
            "--init-from",
            dense.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let worst = err
        .lines()
        .filter_map(|l| l.split("relative reconstruction error ").nth(1))
        .map(|r| r.split(',').next().unwrap().trim().parse::<f64>().unwrap())
        .fold(0.0, f64::max);
    assert!(worst < 0.35, "r = 31 of 32 keeps almost everything: worst {worst}\n{err}");
}

#[test]
fn ctrl_c_saves_and_exits_cleanly() {
    let dir = temp("ctrlc");
    let data = small_corpus(&dir);
    let out = dir.join("run");
    let mut args = vec![
        "train",
        "models/tiny.lpa",
        "--steps",
        "100000",
        "--eval-every",
        "0",
        "--checkpoint-every",
        "100000",
        "--json",
    ];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&["--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let child = Command::new(env!("CARGO_BIN_EXE_lpac"))
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !out.join("metrics.jsonl").exists()
        || std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().count() < 2
    {
        assert!(started.elapsed().as_secs() < 120, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let result = child.wait_with_output().unwrap();
    assert_eq!(result.status.code(), Some(0), "{}", text(&result));
    assert!(String::from_utf8_lossy(&result.stderr).contains("interrupted at step"), "{}", text(&result));
    assert!(out.join("checkpoint.safetensors").exists());
    let resumed =
        lpac(&["train", "models/tiny.lpa", "--resume", "--out", out.to_str().unwrap(), "--steps", "1", "--json"]);
    assert_eq!(resumed.status.code(), Some(0), "an interrupted run resumes: {}", text(&resumed));
}

#[test]
fn a_hugging_face_tokenizer_drives_the_vocabulary() {
    let dir = temp("hf");
    let tokenizer = dir.join("tokenizer.json");
    std::fs::write(
        &tokenizer,
        r#"{
  "version": "1.0",
  "truncation": null,
  "padding": null,
  "added_tokens": [],
  "normalizer": null,
  "pre_tokenizer": { "type": "Whitespace" },
  "post_processor": null,
  "decoder": null,
  "model": { "type": "WordLevel", "vocab": { "[UNK]": 0, "the": 1, "cat": 2, "sat": 3, "on": 4, "mat": 5, ".": 6 }, "unk_token": "[UNK]" }
}"#,
    )
    .unwrap();
    let data = dir.join("cats.txt");
    std::fs::write(&data, "the cat sat on the mat . ".repeat(400)).unwrap();
    let out = dir.join("run");
    let base =
        ["train", "models/tiny.lpa", "--data", data.to_str().unwrap(), "--tokenizer", tokenizer.to_str().unwrap()];
    let mut args = base.to_vec();
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&[
        "--steps",
        "30",
        "--lr",
        "3e-3",
        "--eval-every",
        "0",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    // The byte-sized vocab would fit, but a smaller one is the point: ids < 7.
    args.extend_from_slice(&["--set", "vocab=7"]);
    let o = lpac(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let l: Vec<f64> = losses(&out).into_iter().map(f64::from_bits).collect();
    assert!((l[0] - 7f64.ln()).abs() < 0.2, "starts near ln 7: {}", l[0]);
    assert!(l[29] < l[0] - 0.5, "a periodic text is learned quickly: {} -> {}", l[0], l[29]);
    let s = lpac(&["sample", out.to_str().unwrap(), "--prompt", "the cat", "--tokens", "4", "--temperature", "0"]);
    assert_eq!(s.status.code(), Some(0), "{}", text(&s));
    // A vocabulary too small for the tokenizer is refused with the number to use.
    let small = dir.join("small");
    let mut args = base.to_vec();
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&["--steps", "1", "--set", "vocab=4", "--out", small.to_str().unwrap()]);
    let o = lpac(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--set vocab=7"), "{}", text(&o));
}

#[test]
fn a_model_too_large_for_memory_is_refused_before_anything_is_written() {
    let dir = temp("toolarge");
    let out = dir.join("run");
    let o = lpac(&["train", "models/gpt.lpa", "--steps", "1", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("needs") && t.contains("GiB per step as planned"), "{t}");
    assert!(!out.exists(), "nothing is written for a refused run");
}

#[test]
fn a_non_finite_gradient_is_named_by_its_parameter() {
    let dir = temp("badgrad");
    let data = small_corpus(&dir);
    // The loss is 0 and finite, but d sqrt(u)/du at u = 0 is infinite.
    let model = dir.join("m.lpa");
    std::fs::write(
        &model,
        "config {\n  batch = 2\n  seq = 8\n}\nmodel m(tokens: i32[batch, seq], targets: i32[batch, seq]) {\n  e = embedding[emb](tokens, 256, 4)\n  return mean(sqrt(e * 0.0))\n}\n",
    )
    .unwrap();
    let out = dir.join("run");
    let o = lpac(&[
        "train",
        model.to_str().unwrap(),
        "--steps",
        "3",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("training stopped at step 1") && t.contains("gradient of `emb.weight` is not finite"), "{t}");
}

#[test]
fn mixed_precision_trains_on_the_interpreter_and_is_refused_on_the_cpu_backend() {
    let dir = temp("bf16");
    // The CPU backend computes in f32: refused before anything is written.
    let o = train(&dir, "cpu", &["--steps", "2", "--precision", "bf16"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("--precision bf16 needs --device cuda"), "{}", text(&o));
    assert!(!dir.join("cpu").exists());
    // The interpreter runs the bf16 step (the reference for the GPU's): the
    // loss is finite, falls, differs from f32's, and the run records it.
    let common = ["--steps", "6", "--lr", "3e-3", "--eval-every", "0", "--device", "interp"];
    let mut bf16 = common.to_vec();
    bf16.extend(["--precision", "bf16"]);
    let o = train(&dir, "bf16", &bf16);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = train(&dir, "f32", &common);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (b, f): (Vec<f64>, Vec<f64>) = (
        losses(&dir.join("bf16")).into_iter().map(f64::from_bits).collect(),
        losses(&dir.join("f32")).into_iter().map(f64::from_bits).collect(),
    );
    assert!(b.iter().all(|l| l.is_finite()) && b[5] < b[0], "{b:?}");
    assert!(b != f && (b[0] - f[0]).abs() < 0.05 * f[0], "bf16 {b:?} against f32 {f:?}");
    let config = std::fs::read_to_string(dir.join("bf16/config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["precision"], "bf16");
}

#[test]
fn a_time_budget_stops_training_then_evaluates() {
    let dir = temp("budget");
    let o = train(&dir, "run", &["--steps", "100000", "--time-budget", "1", "--eval-every", "0"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let steps = losses(&dir.join("run")).len();
    assert!((1..100_000).contains(&steps), "{steps} steps in a second");
    assert!(String::from_utf8_lossy(&o.stdout).contains("test_ppl"), "{}", text(&o));
    let o = train(&dir, "zero", &["--steps", "5", "--time-budget", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--time-budget 0 must be a positive number"), "{}", text(&o));
}
