#!/usr/bin/env python3
"""The default model, models/tiny.lpa, written independently in PyTorch.

It loads an lpac checkpoint by parameter path and computes the held-out loss
the way `lpac eval` does (byte tokens, the last 5% of the text, non-overlapping
blocks of `seq` + 1 tokens at stride `seq`), so the two can be compared:

    cargo run --release -- train models/tiny.lpa --steps 20 --out runs/check
    cargo run --release -- eval runs/check --json
    python3 bench/peers/tiny_torch.py runs/check

It prints both losses and their relative difference and exits 1 if that is
above 1e-4. Needs `pip install torch safetensors numpy` (CPU wheels suffice).
"""

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def layer_norm(x, w, b, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def linear(p, name, x):
    # lpac stores weights as [d_in, d_out] (y = x @ W + b).
    return x @ p[f"{name}.weight"] + p[f"{name}.bias"]


def forward(p, cfg, tokens, targets):
    """Mean cross-entropy of tiny.lpa: pre-norm GPT, GELU, learned positions."""
    bsz, t = tokens.shape
    heads, d = cfg["heads"], cfg["d"]
    hd = cfg["head_dim"]
    h = p["wte.weight"][tokens] + p["wpe.weight"][:t]
    mask = torch.tril(torch.ones(t, t, dtype=torch.bool))
    for i in range(cfg["layers"]):
        pre = f"layers.{i}"
        a = layer_norm(h, p[f"{pre}.ln1.weight"], p[f"{pre}.ln1.bias"])
        split = lambda z: z.view(bsz, t, heads, hd).transpose(1, 2)
        q = split(linear(p, f"{pre}.attn.q", a))
        k = split(linear(p, f"{pre}.attn.k", a))
        v = split(linear(p, f"{pre}.attn.v", a))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        scores = scores.masked_fill(~mask, float("-inf"))
        y = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(bsz, t, heads * hd)
        h = h + linear(p, f"{pre}.attn.o", y)
        m = layer_norm(h, p[f"{pre}.ln2.weight"], p[f"{pre}.ln2.bias"])
        h = h + linear(p, f"{pre}.mlp.down", gelu_tanh(linear(p, f"{pre}.mlp.up", m)))
    h = layer_norm(h, p["ln_f.weight"], p["ln_f.bias"])
    logits = linear(p, "head", h)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def held_out_blocks(path, seq):
    data = Path(path).read_bytes()
    n = len(data)
    test = data[n - math.ceil(n * 0.05):]
    blocks = (len(test) - 1) // seq
    rows = [list(test[k * seq:k * seq + seq + 1]) for k in range(blocks)]
    return torch.tensor(rows, dtype=torch.long)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="an lpac run folder (config.json + checkpoint.safetensors)")
    ap.add_argument("--lpac", default="target/release/lpac", help="the lpac binary")
    args = ap.parse_args()
    run = Path(args.run)
    config = json.loads((run / "config.json").read_text())
    cfg = {k: int(float(v)) for k, v in config["resolved_config"].items() if k != "dropout"}
    params = {k: torch.from_numpy(v.astype(np.float64)) for k, v in load_file(str(run / "checkpoint.safetensors")).items() if ":" not in k}
    blocks = held_out_blocks(config["data"], cfg["seq"])
    with torch.no_grad():
        losses = [forward(params, cfg, b[None, :-1], b[None, 1:]).item() for b in blocks]
    torch_loss = sum(losses) / len(losses)
    out = subprocess.run([args.lpac, "eval", str(run), "--json"], capture_output=True, text=True, check=True)
    lpac_loss = json.loads(out.stdout)["test_loss"]
    rel = abs(torch_loss - lpac_loss) / abs(torch_loss)
    print(f"held-out blocks: {len(blocks)} of {cfg['seq']} tokens")
    print(f"PyTorch (float64) loss: {torch_loss:.8f}")
    print(f"lpac (f32, default device) loss: {lpac_loss:.8f}")
    print(f"relative difference: {rel:.2e} ({'ok' if rel <= 1e-4 else 'FAILED'}: tolerance 1e-4)")
    sys.exit(0 if rel <= 1e-4 else 1)


if __name__ == "__main__":
    main()
