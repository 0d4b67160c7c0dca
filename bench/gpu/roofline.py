#!/usr/bin/env python3
"""A step's expected GPU time from lpac's own counts, before a GPU measures it.

Reads `lpac kernels MODEL ...` (its table: kind, FLOPs and least bytes moved per kernel) and
prints, by kind, the time each would take at the rates given: products at --gemm TFLOP/s
(cuBLAS's f32 SIMT rate), attention at --attention, other arithmetic at --other, and every
kernel no faster than its bytes at --bandwidth TB/s (roofline: the larger of the two). Launch
gaps, the host and the copies between steps are not in it. Compare with the profile
(`LPAC_CUDA_PROFILE=1`, bench/gpu-check.sh), which measures the same kinds.

    target/release/lpac kernels models/llama.lpa --set batch=16 | python3 bench/gpu/roofline.py
"""

import argparse
import collections
import sys


def rows(lines):
    """(kind, flops, bytes) per kernel row: the two consecutive integers are FLOPs and bytes."""
    for line in lines:
        tokens = line.split()
        if not tokens or not tokens[0].startswith("k") or not tokens[0][1:].isdigit():
            continue
        for i in range(len(tokens) - 1):
            if tokens[i].isdigit() and tokens[i + 1].isdigit():
                yield tokens[1], int(tokens[i]), int(tokens[i + 1])
                break


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gemm", type=float, default=45.0, help="TFLOP/s of products (default 45: H200 f32)")
    ap.add_argument("--attention", type=float, default=15.0, help="TFLOP/s of fused attention (default 15)")
    ap.add_argument("--other", type=float, default=30.0, help="TFLOP/s of other kernels' arithmetic")
    ap.add_argument("--bandwidth", type=float, default=3.5, help="TB/s of memory traffic (default 3.5: H200)")
    args = ap.parse_args()
    rate = {"gemm": args.gemm, "attn": args.attention}
    by_kind = collections.defaultdict(lambda: [0, 0, 0, 0.0])
    for kind, flops, moved in rows(sys.stdin):
        seconds = max(flops / (rate.get(kind, args.other) * 1e12), moved / (args.bandwidth * 1e12))
        k = by_kind[kind]
        k[0] += 1
        k[1] += flops
        k[2] += moved
        k[3] += seconds
    if not by_kind:
        raise SystemExit("no kernel rows on standard input (pipe `lpac kernels MODEL` into this)")
    print(f"{'kind':<8} {'kernels':>7} {'GFLOP':>9} {'GB':>7} {'ms':>8}")
    for kind, (n, flops, moved, seconds) in sorted(by_kind.items(), key=lambda kv: -kv[1][3]):
        print(f"{kind:<8} {n:>7} {flops / 1e9:>9.1f} {moved / 1e9:>7.2f} {seconds * 1e3:>8.2f}")
    print(f"{'total':<8} {sum(k[0] for k in by_kind.values()):>7} {'':>9} {'':>7} "
          f"{sum(k[3] for k in by_kind.values()) * 1e3:>8.2f}")


if __name__ == "__main__":
    main()
