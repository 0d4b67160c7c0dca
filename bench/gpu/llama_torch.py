#!/usr/bin/env python3
"""The paper's Setting-2 model (models/llama.lpa: 134.1M parameters) in PyTorch, to time a
training step on a GPU next to lpac's --device cuda (bench/gpu-check.sh runs it).

RoPE (half-split rotation, base 10000), RMSNorm (eps 1e-6) pre-norm, SwiGLU FFN, no biases,
causal softmax attention, mean cross-entropy, AdamW (lr 1e-3, betas 0.9/0.95, eps 1e-5, no weight
decay) with global clipping at 1.0, f32. --lowrank R factors Q, K, V and O into two linears
d -> R -> d (LPA). Prints one JSON line per mode: median step seconds and tokens/s.

    python3 bench/gpu/llama_torch.py --batch 16 --seq 256 [--lowrank 128] [--modes eager,compile] [--precision bf16]
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F


def linear(d_in, d_out, r=None):
    if r is None:
        return torch.nn.Linear(d_in, d_out, bias=False)
    return torch.nn.Sequential(torch.nn.Linear(d_in, r, bias=False), torch.nn.Linear(r, d_out, bias=False))


class RMSNorm(torch.nn.Module):
    def __init__(self, n, eps=1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x):
    # x: [b, h, t, dh]; rotate the two halves (as the prelude's `rope`).
    t, dh = x.shape[2], x.shape[3]
    half = dh // 2
    pos = torch.arange(t, device=x.device, dtype=torch.float32)[:, None]
    i = torch.arange(half, device=x.device, dtype=torch.float32)[None, :]
    angle = pos * torch.exp(i * (-2.0 * math.log(10000.0) / dh))
    c, s = torch.cos(angle), torch.sin(angle)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)


class Layer(torch.nn.Module):
    def __init__(self, d, heads, ffn, r):
        super().__init__()
        self.heads = heads
        self.attn_norm, self.mlp_norm = RMSNorm(d), RMSNorm(d)
        self.q, self.k, self.v, self.o = (linear(d, d, r) for _ in range(4))
        self.gate, self.up, self.down = linear(d, ffn), linear(d, ffn), linear(ffn, d)

    def forward(self, x):
        b, t, d = x.shape
        h = self.attn_norm(x)
        split = lambda y: y.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        q, k, v = rope(split(self.q(h))), rope(split(self.k(h))), split(self.v(h))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(y.transpose(1, 2).reshape(b, t, d))
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(torch.nn.Module):
    def __init__(self, vocab=32001, d=768, layers=12, heads=12, ffn=2048, r=None):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, d)
        self.layers = torch.nn.ModuleList(Layer(d, heads, ffn, r) for _ in range(layers))
        self.norm = RMSNorm(d)
        self.head = torch.nn.Linear(d, vocab)

    def forward(self, tokens, targets):
        h = self.embed(tokens)
        for layer in self.layers:
            h = layer(h)
        logits = self.head(self.norm(h))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def time_mode(mode, args):
    torch.manual_seed(0)
    model = Llama(r=args.lowrank).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.0)
    loss_fn = torch.compile(model) if mode == "compile" else model
    tokens = torch.randint(0, 32001, (args.batch, args.seq), device="cuda")
    targets = torch.randint(0, 32001, (args.batch, args.seq), device="cuda")
    times = []
    for step in range(args.warmup + args.steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        # --precision bf16: autocast, as lpac's `precision` pass (products in
        # bf16, f32 master weights and optimiser).
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = loss_fn(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    params = sum(p.numel() for p in model.parameters())
    return {"framework": f"torch-{mode}", "precision": args.precision, "lowrank": args.lowrank, "params": params,
            "batch": args.batch,
            "seq": args.seq, "median_step_s": median, "tokens_per_s": args.batch * args.seq / median,
            "loss": float(loss)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lowrank", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--modes", default="eager,compile")
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device for PyTorch")
    # f32 products in full precision, as lpac's (no TF32; PyTorch's default
    # too, made explicit so a changed default cannot flatter the baseline).
    torch.set_float32_matmul_precision("highest")
    for mode in args.modes.split(","):
        print(json.dumps(time_mode(mode, args)), flush=True)


if __name__ == "__main__":
    main()
