#!/usr/bin/env bash
# The GPU check: one prepared run for a machine with an NVIDIA GPU (CUDA and
# Python there, no Rust: build target/release/lpac here and carry it).
#
#   bash bench/gpu-check.sh                 # results on stdout and in $OUT (or ./gpu-check)
#   STEPS=50 MODES=eager bash bench/gpu-check.sh   # shorter: fewer steps, no torch.compile
#
# Expect several minutes: two trainings per model and device, and torch.compile of the 130M
# model twice (dense, LPA). STEPS (default 300), BATCH (llama, default 16), MODES
# (default eager,compile) and BUDGET (seconds, default 540) size it.
#
# What it does (docs/backends.md says what is emitted; docs/gpu.md holds the
# results of each run):
#   1. the GPU and driver (nvidia-smi);
#   2. `lpac device-check`: every kernel kind (elementwise, reductions, rows
#      kernels, the multi kernel, products, attention forward and backward,
#      gather/scatter-add, random numbers) on the GPU against the CPU backend
#      on random inputs, ‖gpu − cpu‖ / ‖cpu‖ per output;
#   3. the 130M Setting-2 model (models/llama.lpa) dense and LPA r=128: lpac's
#      tokens/s on the GPU next to PyTorch eager and torch.compile
#      (bench/gpu/llama_torch.py) on the same GPU, then a table of the two and
#      the targets (within 1.5x of eager's step time; LPA faster than dense),
#      each MET or NOT MET;
#   4. mixed precision: the dense 130M step with --precision bf16 against
#      PyTorch's autocast;
#   5. where lpac's GPU time goes: the dense 130M step with every kernel
#      timed (LPAC_CUDA_PROFILE=1): by kind, by name, the slowest kernels;
#   6. `lpac train` of bench/gpu/mlp.lpa (no attention: gather, cuBLAS
#      products, rows kernels, the one-kernel AdamW, scatter-add) and of
#      models/tiny.lpa (attention forward and backward too) for STEPS steps
#      on the CPU and on the GPU from the same seed, the two loss curves side
#      by side (largest relative difference over the first 10 steps and over
#      all) and both devices' tokens/s.
#      Then `lpac eval` (GPU and CPU) and `lpac sample` on the GPU from the tiny run.
#      tiny (the issue's curve) runs before the mlp, so a short budget keeps it.
#   7. a model too large for the GPU's memory: refused before allocating,
#      with the sizes, exit 1.
# The timings come before the CPU-against-GPU trainings (whose CPU runs take
# most of the time): a run cut short by the device's time limit still has them.
# A failing device-check reruns each case alone (--case N) with every launch
# synchronised (LPAC_CUDA_SYNC=1), so a fault names its kernel.
set -uo pipefail
cd "$(dirname "$0")/.."
LPAC=${LPAC:-target/release/lpac}
OUT=${OUT:-gpu-check}
STEPS=${STEPS:-300}
# Seconds the whole check may take: a lent machine runs one command for at
# most 600 s. A section that would not fit in what is left is skipped, said so.
BUDGET=${BUDGET:-540}
mkdir -p "$OUT"
log() { echo "$*" | tee -a "$OUT/summary.txt"; }
# Section headings carry the seconds gone, so the next run can size BUDGET and STEPS.
section() { log "== [${SECONDS} s] $*"; }
: > "$OUT/summary.txt"
# True when section $2, needing about $1 seconds, fits in BUDGET.
fits() {
  if (( SECONDS + $1 > BUDGET )); then
    log "-- $2 skipped (${SECONDS} s gone, ~$1 s needed, BUDGET=$BUDGET): rerun with a larger BUDGET or fewer STEPS"
    return 1
  fi
}

# lpac loads the CUDA driver and cuBLAS at run time. cuBLAS may live only in
# pip's nvidia-cublas wheel or the toolkit, under a versioned name
# (libcublas.so.13): put a libcublas.so link to the first one found, and its
# folder, on the loader's path.
mkdir -p "$OUT/lib"
cublas=$(find /usr/local/cuda/ /usr/local/cuda/targets/x86_64-linux/lib \
              $(python3 -c "import site; print(' '.join(site.getsitepackages()))" 2>/dev/null) \
              /usr/lib /opt -name 'libcublas.so*' 2>/dev/null | grep -v Lt | head -1)
if [ -n "$cublas" ]; then
  ln -sf "$cublas" "$OUT/lib/libcublas.so"
  export LD_LIBRARY_PATH="$OUT/lib:$(dirname "$cublas"):${LD_LIBRARY_PATH:-}"
fi

section "1. the machine"
if ! nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$OUT/summary.txt"; then
  log "no NVIDIA GPU here (nvidia-smi failed or is missing): this check needs one"
  exit 1
fi
if [ -e "$OUT/lib/libcublas.so" ]; then
  log "cuBLAS for lpac: $(readlink -f "$OUT/lib/libcublas.so")"
else
  log "cuBLAS for lpac: not found in pip's nvidia-cublas or /usr/local/cuda (lpac will say so)"
fi
"$LPAC" --version 2>&1 | tee -a "$OUT/summary.txt"

section "2. every kernel kind on the GPU against the CPU backend (lpac device-check)"
if ! timeout 120 "$LPAC" device-check 2>&1 | tee -a "$OUT/summary.txt"; then
  # A fault can leave the context refusing every later case: each case in a
  # process of its own, each launch waited for so the failing one is named.
  log "-- again, one process per case, every launch synchronised (LPAC_CUDA_SYNC=1)"
  for n in $("$LPAC" device-check --list | awk '{print $1}'); do
    LPAC_CUDA_SYNC=1 timeout 60 "$LPAC" device-check --case "$n" 2>&1 | tail -n +2 | tee -a "$OUT/summary.txt"
  done
fi

median_tokens() {  # $1 metrics.jsonl: median tokens/s after two warm-up steps, and the losses
  python3 - "$1" <<'PY'
import json, sys, statistics
try:
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    t = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][2:]
    losses = [round(r["loss"], 3) for r in rows if "loss" in r]
    print(f"median tokens/s {statistics.median(t):.0f} over {len(t)} steps; losses {losses}" if t else "no timed steps")
except OSError:
    print("no metrics (see the log)")
PY
}

check_model() {  # $1 label, $2 model file, $3 steps
  local label=$1 model=$2 steps=$3
  section "$label: $model, $steps steps, CPU against GPU"
  for device in cpu cuda; do
    rm -rf "$OUT/$label-$device"
    start=$(date +%s.%N)
    timeout 150 "$LPAC" train "$model" --steps "$steps" --seed 7 --device "$device" --eval-every 0 \
      --out "$OUT/$label-$device" > "$OUT/$label-$device.log" 2>&1
    status=$?
    if [ "$status" != 0 ] && [ "$device" = cuda ]; then
      log "cuda failed: again for 3 steps with every launch synchronised, to name the kernel"
      LPAC_CUDA_SYNC=1 timeout 120 "$LPAC" train "$model" --steps 3 --seed 7 --device cuda --eval-every 0 \
        --out "$OUT/$label-cuda-sync" 2>&1 | tail -5 | tee -a "$OUT/summary.txt"
    fi
    end=$(date +%s.%N)
    log "$device: exit $status, $(python3 -c "print(f'{$end - $start:.1f}')") s; last lines:"
    tail -3 "$OUT/$label-$device.log" | tee -a "$OUT/summary.txt"
  done
  python3 - "$OUT" "$label" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys, os
out, label = sys.argv[1], sys.argv[2]
def curve(d):
    p = os.path.join(out, f"{label}-{d}", "metrics.jsonl")
    if not os.path.exists(p):
        return {}
    rows = [json.loads(l) for l in open(p) if l.strip()]
    return {r["step"]: r for r in rows if "loss" in r}
cpu, gpu = curve("cpu"), curve("cuda")
steps = sorted(set(cpu) & set(gpu))
if not steps:
    print(f"{label}: no common steps: the GPU run did not train (see {label}-cuda.log)")
    sys.exit(0)
rel = [(s, abs(cpu[s]["loss"] - gpu[s]["loss"]) / abs(cpu[s]["loss"])) for s in steps]
first = max(r for s, r in rel if s <= 10)
print(f"{label}: steps compared {len(steps)}; largest relative loss difference: first 10 steps {first:.2e}, all {max(r for _, r in rel):.2e}")
for s in [1, 2, 5, 10, 50, 100, 200, 500]:
    if s in cpu and s in gpu:
        print(f"  step {s:>4}: cpu {cpu[s]['loss']:.6f}  cuda {gpu[s]['loss']:.6f}")
tc = sorted(r.get("tokens_per_s", 0) for r in cpu.values())
tg = sorted(r.get("tokens_per_s", 0) for r in gpu.values())
if tc and tg:
    print(f"  median tokens/s: cpu {tc[len(tc)//2]:.0f}, cuda {tg[len(tg)//2]:.0f}")
print(f"  verdict: {'AGREE' if first < 1e-3 else 'DISAGREE (first steps differ by more than 1e-3)'}")
PY
}

section "the 130M Setting-2 model (models/llama.lpa), batch ${BATCH:=16} x seq 256: lpac against PyTorch"
for lowrank in "" 128; do
  variant=${lowrank:+lpa-r$lowrank}; variant=${variant:-dense}
  rm -rf "$OUT/llama-$variant"
  timeout 300 "$LPAC" train models/llama.lpa --set batch="$BATCH" --steps 8 --device cuda --eval-every 0 \
    ${lowrank:+--lowrank $lowrank} --out "$OUT/llama-$variant" > "$OUT/llama-$variant.log" 2>&1
  log "lpac $variant: exit $?; $(median_tokens "$OUT/llama-$variant/metrics.jsonl")"
  timeout 400 python3 bench/gpu/llama_torch.py --batch "$BATCH" --seq 256 --modes "${MODES:-eager,compile}" ${lowrank:+--lowrank $lowrank} 2>&1 \
    | tee "$OUT/torch-$variant.jsonl" | tee -a "$OUT/summary.txt"
done
# The issue's targets, read off the runs above: lpac's step within 1.5x of
# PyTorch eager's time, and LPA faster than dense.
python3 - "$OUT" <<'PY' | tee -a "$OUT/summary.txt"
import json, os, statistics, sys
out = sys.argv[1]
def lpac(variant):
    try:
        rows = [json.loads(l) for l in open(os.path.join(out, f"llama-{variant}", "metrics.jsonl")) if l.strip()]
    except OSError:
        return None
    t = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][2:]
    return statistics.median(t) if t else None
def torch(variant, mode):
    try:
        for line in open(os.path.join(out, f"torch-{variant}.jsonl")):
            if line.startswith("{") and json.loads(line).get("framework") == f"torch-{mode}":
                return json.loads(line)["tokens_per_s"]
    except (OSError, ValueError):
        pass
    return None
fmt = lambda x: f"{x:,.0f}" if x else "-"
print("| | lpac tokens/s | PyTorch eager | torch.compile | lpac's step time / eager's | / compile's |")
print("|---|---|---|---|---|---|")
verdicts = []
for variant in ["dense", "lpa-r128"]:
    l, e, c = lpac(variant), torch(variant, "eager"), torch(variant, "compile")
    ratio = lambda t: f"{t / l:.2f}x" if l and t else "-"
    print(f"| {variant} | {fmt(l)} | {fmt(e)} | {fmt(c)} | {ratio(e)} | {ratio(c)} |")
    if l and e:
        met = "MET" if e / l <= 1.5 else "NOT MET"
        verdicts.append(f"target, {variant} within 1.5x of PyTorch eager's step time: {met} ({e / l:.2f}x)")
d, r = lpac("dense"), lpac("lpa-r128")
if d and r:
    verdicts.append(f"target, LPA r=128 faster than dense in lpac: {'MET' if r > d else 'NOT MET'} ({r / d:.2f}x the tokens/s)")
print("\n".join(verdicts or ["targets: no timings to compare (see the logs above)"]))
PY
log "-- expected from lpac's own counts (bench/gpu/roofline.py: products at 45 TFLOP/s, attention 15, memory 3.5 TB/s; no launch gaps)"
for lowrank in "" 128; do
  variant=${lowrank:+LPA r=$lowrank}; variant=${variant:-dense}
  log "$variant: $("$LPAC" kernels models/llama.lpa --set batch="$BATCH" ${lowrank:+--lowrank $lowrank} 2>/dev/null \
    | python3 bench/gpu/roofline.py | tail -1 | awk '{print $NF}') ms a step"
done

section "mixed precision (--precision bf16): the 130M dense step, lpac against PyTorch autocast (eager)"
if fits 90 "mixed precision"; then
  rm -rf "$OUT/llama-bf16"
  timeout 300 "$LPAC" train models/llama.lpa --set batch="$BATCH" --steps 8 --device cuda --eval-every 0 \
    --precision bf16 --out "$OUT/llama-bf16" > "$OUT/llama-bf16.log" 2>&1
  log "lpac dense bf16: exit $?; $(tail -1 "$OUT/llama-bf16.log")"
  log "lpac bf16: $(median_tokens "$OUT/llama-bf16/metrics.jsonl")"
  timeout 200 python3 bench/gpu/llama_torch.py --batch "$BATCH" --seq 256 --modes eager --precision bf16 2>&1 \
    | grep framework | tee -a "$OUT/summary.txt"
fi

section "where lpac's GPU time goes: llama dense, 3 steps, each kernel waited for and timed (LPAC_CUDA_PROFILE=1)"
if fits 60 "the profile"; then
  LPAC_CUDA_PROFILE=1 timeout 200 "$LPAC" train models/llama.lpa --set batch="$BATCH" --steps 3 --device cuda \
    --eval-every 0 --out "$OUT/llama-profile" > "$OUT/llama-profile.log" 2>&1
  log "exit $? (the whole output in llama-profile.log)"
  sed -n '/GPU time by kernel/,$p' "$OUT/llama-profile.log" | grep -v "^evaluating\|^test perplexity" | tee -a "$OUT/summary.txt"
fi

section "a model too large for the GPU (llama, batch 4096): a clear refusal and exit 1 expected"
timeout 120 "$LPAC" train models/llama.lpa --set batch=4096 --steps 1 --device cuda --eval-every 0 \
  --out "$OUT/too-large" > "$OUT/too-large.log" 2>&1
log "exit $?: $(grep -v '^\s*$' "$OUT/too-large.log" | tail -2)"

# Sized from the H200 run of 2026-11-28 (16 cores): tiny, 300 steps: 46 s on the CPU, 23 s on
# the GPU; the mlp, 40 steps: 3 s and 5 s.
fits $((30 + STEPS / 4)) "the tiny training, CPU against GPU" && check_model tiny models/tiny.lpa "$STEPS"
fits $((20 + STEPS / 10)) "the mlp training, CPU against GPU" && check_model mlp bench/gpu/mlp.lpa "$STEPS"

if [ -d "$OUT/tiny-cuda" ] && fits 40 "eval and sample"; then
  section "eval and sample on the GPU (the tiny run just trained), and eval on the CPU to compare"
  for device in cuda cpu; do
    log "eval --device $device: $(timeout 120 "$LPAC" eval "$OUT/tiny-cuda" --device "$device" 2>&1 | tail -1)"
  done
  timeout 60 "$LPAC" sample "$OUT/tiny-cuda" --device cuda --prompt "ROMEO:" --tokens 80 --seed 1 2>&1 \
    | tail -3 | tee -a "$OUT/summary.txt"
fi
rm -f "$OUT"/*/checkpoint.safetensors
log "done in ${SECONDS} s; results in $OUT/summary.txt"
