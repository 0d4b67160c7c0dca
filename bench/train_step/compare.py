#!/usr/bin/env python3
"""Times lpac's training step of models/tiny.lpa next to PyTorch and JAX, and prints two tables.

    python3 bench/train_step/compare.py                                  # lpac from target/release/lpac
    python3 bench/train_step/compare.py --lpac path/to/lpac --device cpu -W 3 -N 10
    python3 bench/train_step/compare.py --no-lpac --frameworks jax-jit    # peers only

Rows: every peer in bench/train_step/peers.py (torch-eager, torch-compile, jax-jit; each in its
own subprocess) and lpac, for the dense model and LPA (--lowrank R), all over the same W warm-up
and N timed steps of batch 16 x 128 tokens.

Table 1: median step time, tokens/s, achieved GFLOP/s (lpac's analytic training FLOPs per step,
`flops_per_step_train` from `lpac stats MODEL --json [--lowrank R]`, divided by the median step
time: the same FLOP count for every framework), and the time ratio against lpac's row of the
same variant (> 1: slower than lpac). Table 2: first-step (compile/trace) times.

How the lpac row is produced:
  * if the binary has `lpac bench-step` (mode `auto` finds out with `lpac bench-step --help`):
      lpac bench-step MODEL --warmup W --steps N --device D --json [--lowrank R]
    which must print one JSON object with (at least) first_step_s, median_step_s and
    tokens_per_s, and may add launch_to_first_step_s, loss_initial, loss, step_times_s;
  * otherwise `lpac train` (mode `train`):
      lpac train MODEL --steps W+N+1 --stop-at W+N --json --out TMP --device D [--lowrank R]
                 --eval-every 0 --checkpoint-every 1000000 --schedule constant --warmup 0
    Its JSON lines carry each step's own `tokens_per_s` (the step's execution only); the
    first W are skipped and the median step time of the other N is used. --stop-at skips the
    final held-out evaluation (minutes on the interpreter). Its first_step_s is step 1's own
    time, which excludes lpac's graph compilation (done before the step timer starts); the
    comparable compile-inclusive number is launch_to_first_step_s (process launch to the end
    of step 1, measured here from the time its JSON line arrives).

A failing framework (or lpac) prints its error in its row; the tables always print.
Needs: pip install torch jax numpy (see bench/train_step/README.md).
"""

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402

REPO = peers.REPO


def lpac_stats(lpac, model, lowrank):
    cmd = [lpac, "stats", model, "--json"] + (["--lowrank", str(lowrank)] if lowrank else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {out.returncode}: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout)


def has_bench_step(lpac):
    try:
        r = subprocess.run([lpac, "bench-step", "--help"], capture_output=True, text=True, timeout=60, cwd=REPO)
        return r.returncode == 0
    except OSError:
        return False


def lpac_row_bench_step(args, lowrank):
    cmd = [args.lpac, "bench-step", args.model, "--warmup", str(args.warmup), "--steps", str(args.steps),
           "--device", args.device, "--json"] + (["--lowrank", str(lowrank)] if lowrank else [])
    launched = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=REPO)
    wall = time.time() - launched
    objs = [json.loads(l) for l in out.stdout.splitlines() if l.strip().startswith("{")]
    if out.returncode != 0 or not objs:
        tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"lpac bench-step exit {out.returncode}: {tail}")
    row = dict(objs[-1])
    row.setdefault("process_wall_s", wall)
    row["command"] = " ".join(cmd)
    return row


def lpac_row_train(args, lowrank, tokens_per_step):
    total = args.warmup + args.steps
    tmp = tempfile.mkdtemp(prefix="lpac-bench-")
    cmd = [args.lpac, "train", args.model, "--steps", str(total + 1), "--stop-at", str(total), "--json",
           "--out", os.path.join(tmp, "run"), "--device", args.device, "--eval-every", "0",
           "--checkpoint-every", "1000000", "--schedule", "constant", "--warmup", "0"]
    if lowrank:
        cmd += ["--lowrank", str(lowrank)]
    records, first_line_at, stderr_tail = [], None, ""
    try:
        launched = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        deadline = launched + args.timeout
        for line in proc.stdout:  # lpac's stdout is line-buffered: one JSON object per step
            line = line.strip()
            if line.startswith("{"):
                obj = json.loads(line)
                if "tokens_per_s" in obj and "step" in obj:
                    if first_line_at is None:
                        first_line_at = time.time()
                    records.append(obj)
            if time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"timed out after {args.timeout:.0f} s")
        stderr_tail = proc.stderr.read().strip()
        rc = proc.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if rc != 0 or len(records) < total:
        tail = (stderr_tail.splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"lpac train exit {rc} after {len(records)} steps: {tail}")
    times = [tokens_per_step / r["tokens_per_s"] for r in records]
    losses = [r["loss"] for r in records]
    timed = times[args.warmup:total]
    median = statistics.median(timed)
    return dict(
        first_step_s=times[0],
        launch_to_first_step_s=first_line_at - launched,
        median_step_s=median,
        min_step_s=min(timed),
        tokens_per_s=tokens_per_step / median,
        loss_initial=records[0]["loss"],
        loss=losses[total - 1],
        loss_median_timed=statistics.median(losses[args.warmup:total]),
        losses=losses,
        step_times_s=times,
        first_step_note="step 1's own time (graph compilation excluded)",
        command=" ".join(cmd),
    )


def lpac_row(args, lowrank, stats, mode):
    base = dict(framework=f"lpac ({args.device})", variant=peers.variant_name(lowrank), first_step_s=None,
                median_step_s=None, steps=args.steps, warmup=args.warmup, tokens_per_s=None, loss=None)
    try:
        tokens_per_step = (stats or {}).get("tokens_per_step") or peers.CONFIG["batch"] * peers.CONFIG["seq"]
        meter = peers.CpuMeter().start()
        if mode == "bench-step":
            row = lpac_row_bench_step(args, lowrank)
        else:
            row = lpac_row_train(args, lowrank, tokens_per_step)
        row["other_load"] = meter.stop()
        row.update({k: v for k, v in base.items() if k in ("framework", "variant")})
        row["lpac_mode"] = mode
        row["error"] = None
        return dict(base, **row)
    except Exception as e:  # noqa: BLE001
        return dict(base, error=f"{type(e).__name__}: {e}"[:500], lpac_mode=mode)


def fmt(x, spec, scale=1.0):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x * scale, spec)


def table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_lpac = REPO / "target/release/lpac"
    ap.add_argument("--lpac", default=str(default_lpac) if default_lpac.exists() else None,
                    help="the lpac binary (default: target/release/lpac if it exists)")
    ap.add_argument("--no-lpac", action="store_true", help="peers only (no lpac row; no GFLOP/s)")
    ap.add_argument("--lpac-mode", choices=["auto", "bench-step", "train"], default="auto",
                    help="how to time lpac (default auto: bench-step if the binary has it, else train)")
    ap.add_argument("--device", default="cpu", help="lpac's --device (cpu, interp, cuda)")
    ap.add_argument("--model", default="models/tiny.lpa",
                    help="lpac's model (the peers implement tiny.lpa's default config only)")
    ap.add_argument("--frameworks", default=",".join(peers.FRAMEWORKS),
                    help="comma-separated peers (default: %(default)s; empty: none)")
    ap.add_argument("--variants", default="dense,lpa", help="comma-separated: dense, lpa (default: both)")
    ap.add_argument("--lowrank", type=int, default=64, metavar="R", help="LPA rank (default 64)")
    ap.add_argument("--warmup", "-W", type=int, default=3, help="warm-up steps, the first is the first step (default 3)")
    ap.add_argument("--steps", "-N", type=int, default=10, help="timed steps (default 10)")
    ap.add_argument("--seed", type=int, default=0, help="the peers' seed (parameters and batches)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per row")
    ap.add_argument("--json-out", metavar="PATH", help="also write every row as a JSON line here")
    args = ap.parse_args()
    if args.warmup < 1 or args.steps < 1:
        ap.error("--warmup and --steps must be at least 1")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not set(variants) <= {"dense", "lpa"}:
        ap.error("--variants takes dense and/or lpa")
    ranks = [0 if v == "dense" else args.lowrank for v in variants]
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    unknown = set(frameworks) - set(peers.FRAMEWORKS)
    if unknown:
        ap.error(f"unknown framework(s) {sorted(unknown)}; choose from {peers.FRAMEWORKS}")
    use_lpac = not args.no_lpac
    if use_lpac and not args.lpac:
        print("# no lpac binary (build it with `cargo build --release` or pass --lpac); its rows will say so",
              file=sys.stderr)
    if use_lpac and args.lpac:
        args.lpac = str(Path(args.lpac).resolve())

    peer_args = peers.parse_args(["--warmup", str(args.warmup), "--steps", str(args.steps), "--seed", str(args.seed),
                                  "--threads", str(args.threads), "--timeout", str(args.timeout)])
    mode = args.lpac_mode
    if use_lpac and args.lpac and mode == "auto":
        mode = "bench-step" if has_bench_step(args.lpac) else "train"
    lpac_version = None
    if use_lpac and args.lpac:
        try:
            lpac_version = subprocess.run([args.lpac, "--version"], capture_output=True, text=True,
                                          timeout=60).stdout.strip() or None
        except OSError:
            pass

    meter = peers.CpuMeter().start()
    time.sleep(1.0)
    load_before = meter.stop() or 0.0
    if load_before > 0.2:
        print(f"# WARNING: other processes are using {load_before:.2f} cores: timings will be distorted, "
              "PyTorch's most", file=sys.stderr)
    rows, stats, stats_err = [], {}, {}
    for lowrank in ranks:
        if use_lpac and args.lpac:
            try:
                stats[lowrank] = lpac_stats(args.lpac, args.model, lowrank)
            except Exception as e:  # noqa: BLE001
                stats_err[lowrank] = str(e)
        for fw in frameworks:
            print(f"# {fw} {peers.variant_name(lowrank)} ...", file=sys.stderr, flush=True)
            rows.append(peers.run_subprocess(peer_args, fw, lowrank))
        if use_lpac:
            print(f"# lpac {peers.variant_name(lowrank)} ({mode}) ...", file=sys.stderr, flush=True)
            if args.lpac:
                row = lpac_row(args, lowrank, stats.get(lowrank), mode)
                if lowrank in stats_err:
                    row["error"] = "; ".join(filter(None, [row.get("error"), "lpac stats failed: " + stats_err[lowrank]]))
            else:
                row = dict(framework=f"lpac ({args.device})", variant=peers.variant_name(lowrank), median_step_s=None,
                           first_step_s=None, tokens_per_s=None, loss=None, error="no lpac binary (--lpac PATH)")
            rows.append(row)

    # FLOPs per step come from lpac (the same count for every framework of a variant).
    for r in rows:
        lr = 0 if r["variant"] == "dense" else args.lowrank
        flops = stats.get(lr, {}).get("flops_per_step_train")
        r["flops_per_step_train"] = flops
        r["gflops_per_s"] = flops / r["median_step_s"] / 1e9 if flops and r.get("median_step_s") else None
        ref = next((x for x in rows if x["framework"].startswith("lpac") and x["variant"] == r["variant"]), None)
        r["time_vs_lpac"] = (r["median_step_s"] / ref["median_step_s"]
                             if ref and ref.get("median_step_s") and r.get("median_step_s") else None)

    if args.json_out:
        with open(args.json_out, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")

    t1 = []
    for r in rows:
        loss = (f"{r['loss_initial']:.3f} -> {r['loss']:.3f}"
                if r.get("loss_initial") is not None and r.get("loss") is not None else "-")
        if r.get("loss_median_timed") is not None:
            loss += f" (median {r['loss_median_timed']:.3f})"
        note = r.get("error") or (r.get("loss_check") if r.get("loss_check") not in (None, "ok") else "")
        t1.append([r["framework"], r["variant"], fmt(r.get("median_step_s"), ".1f", 1e3), fmt(r.get("tokens_per_s"), ".0f"),
                   fmt(r.get("gflops_per_s"), ".2f"), fmt(r.get("time_vs_lpac"), ".3f") + ("x" if r.get("time_vs_lpac") else ""),
                   loss, fmt(r.get("other_load"), ".2f"), note])
    t2 = []
    for r in rows:
        f, m = r.get("first_step_s"), r.get("median_step_s")
        note = r.get("error") or r.get("first_step_note", "")
        t2.append([r["framework"], r["variant"], fmt(f, ".2f"), fmt(r.get("launch_to_first_step_s"), ".2f"),
                   fmt(f - m if f is not None and m is not None else None, ".2f"), note])

    print(f"Training step of {args.model} (batch 16 x seq 128 = 2048 tokens, f32, AdamW + clip 1.0): "
          f"W={args.warmup} warm-up, N={args.steps} timed steps")
    versions = sorted({f"{r['framework'].split('-')[0]} {r['framework_version']}" for r in rows if r.get("framework_version")})
    print("; ".join([f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores", f"python {platform.python_version()}"]
                    + ([", ".join(versions)] if versions else [])
                    + [f"lpac: {args.lpac or 'none'}" + (f" [{lpac_version}]" if lpac_version else "")
                       + f" ({mode if use_lpac else 'skipped'})",
                       f"other load before: {load_before:.2f} cores"]))
    busiest = max((r.get("other_load") or 0.0 for r in rows), default=0.0)
    if busiest > 0.2:
        print(f"WARNING: other processes kept up to {busiest:.2f} cores busy during some rows ('other load'): "
              "those timings are distorted; rerun on an idle machine")
    print()
    print(table(["framework", "variant", "median step (ms)", "tokens/s", "GFLOP/s", "time vs lpac", "loss: step 1 -> last (median of timed)",
                 "other load", "note"], t1))
    print()
    print("First step (tracing/compilation included) and time to it:")
    print(table(["framework", "variant", "first step (s)", "launch -> first step done (s)", "first - median (s)", "note"], t2))
    print()
    print("GFLOP/s: lpac's analytic flops_per_step_train / median step time ("
          + (", ".join(f"{peers.variant_name(k)}: {v['flops_per_step_train'] / 1e9:.2f} GFLOP/step" for k, v in stats.items())
             or "no `lpac stats`, so no GFLOP/s")
          + "). time vs lpac: median step time / lpac's (same variant); > 1 means slower than lpac.")
    sys.exit(1 if any(r.get("error") for r in rows) else 0)


if __name__ == "__main__":
    main()
