#!/usr/bin/env bash
# The GPU check: one prepared run for a machine with an NVIDIA GPU (CUDA and
# Python there, no Rust: build target/release/lpac here and carry it).
#
#   bash bench/gpu-check.sh                 # results on stdout and in $OUT (or ./gpu-check)
#
# What it does today (the CUDA backend's first run; docs/backends.md says
# what is emitted):
#   1. the GPU and driver (nvidia-smi);
#   2. `lpac train bench/gpu/mlp.lpa` (no attention: gather, cuBLAS products,
#      rows kernels, the one-kernel AdamW, scatter-add) for STEPS steps on the
#      CPU and on the GPU from the same seed, and the two loss curves side by
#      side: the largest relative difference over the first 10 steps and over
#      all steps;
#   3. `lpac train models/tiny.lpa --device cuda`: refused until attention is
#      emitted for CUDA (prints the message);
#   4. the step time of both devices on mlp.lpa (metrics' tokens/s).
# Not yet: the per-kernel-kind comparison on random inputs and the 130M
# Setting-2 timing against PyTorch — they need attention on CUDA.
set -uo pipefail
cd "$(dirname "$0")/.."
LPAC=${LPAC:-target/release/lpac}
OUT=${OUT:-gpu-check}
STEPS=${STEPS:-200}
mkdir -p "$OUT"
log() { echo "$*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"

log "== 1. the machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$OUT/summary.txt"
"$LPAC" --version 2>&1 | tee -a "$OUT/summary.txt"

log "== 2. mlp.lpa, $STEPS steps, CPU against GPU"
for device in cpu cuda; do
  rm -rf "$OUT/mlp-$device"
  start=$(date +%s.%N)
  "$LPAC" train bench/gpu/mlp.lpa --steps "$STEPS" --seed 7 --device "$device" --eval-every 0 \
    --out "$OUT/mlp-$device" > "$OUT/mlp-$device.log" 2>&1
  status=$?
  end=$(date +%s.%N)
  log "$device: exit $status, $(python3 -c "print(f'{$end - $start:.1f}')") s; last lines:"
  tail -3 "$OUT/mlp-$device.log" | tee -a "$OUT/summary.txt"
done
python3 - "$OUT" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys, os
out = sys.argv[1]
def curve(d):
    p = os.path.join(out, f"mlp-{d}", "metrics.jsonl")
    if not os.path.exists(p):
        return {}
    rows = [json.loads(l) for l in open(p) if l.strip()]
    return {r["step"]: r for r in rows if "loss" in r}
cpu, gpu = curve("cpu"), curve("cuda")
steps = sorted(set(cpu) & set(gpu))
if not steps:
    print("no common steps: the GPU run did not train (see mlp-cuda.log)")
    sys.exit(0)
rel = [(s, abs(cpu[s]["loss"] - gpu[s]["loss"]) / abs(cpu[s]["loss"])) for s in steps]
first = max(r for s, r in rel if s <= 10)
print(f"steps compared: {len(steps)}; largest relative loss difference: first 10 steps {first:.2e}, all {max(r for _, r in rel):.2e}")
for s in [1, 2, 5, 10, 50, 100, 200, 500]:
    if s in cpu and s in gpu:
        print(f"  step {s:>4}: cpu {cpu[s]['loss']:.6f}  cuda {gpu[s]['loss']:.6f}")
tc = sorted(r.get("tokens_per_s", 0) for r in cpu.values())
tg = sorted(r.get("tokens_per_s", 0) for r in gpu.values())
if tc and tg:
    print(f"median tokens/s: cpu {tc[len(tc)//2]:.0f}, cuda {tg[len(tg)//2]:.0f}")
print("verdict:", "AGREE" if first < 1e-3 else "DISAGREE (first steps differ by more than 1e-3)")
PY

log "== 3. tiny.lpa on CUDA (attention is not emitted yet: expect a clear refusal)"
rm -rf "$OUT/tiny-cuda"
"$LPAC" train models/tiny.lpa --steps 2 --device cuda --out "$OUT/tiny-cuda" 2>&1 | tail -2 | tee -a "$OUT/summary.txt"
log "done; results in $OUT/summary.txt"
