#!/usr/bin/env python3
"""One training step of models/tiny.lpa (+ AdamW), written in PyTorch and JAX, timed.

The step is exactly what `lpac train models/tiny.lpa` runs (see bench/train_step/README.md):
a byte-level pre-norm GPT (vocab 256, d 256, 4 layers, 4 heads of 64, FFN 1024 with
tanh-approximate GELU, learned positions, LayerNorm eps 1e-5, biases everywhere, weights stored
[d_in, d_out] with y = x @ W + b), mean cross-entropy over batch 16 x seq 128 tokens, then global
gradient-norm clipping at 1.0 and AdamW(lr 1e-3, betas (0.9, 0.95), eps 1e-5, weight decay 0),
in f32. `--lowrank R` is the LPA variant: Q, K, V and O each become two linears d -> R -> d
(Q/K/V keep a bias on the first factor only, O on the second only), initialised as lpac's
`lowrank` pass does.

Frameworks (each runs in its own subprocess, so thread pools and compile caches do not mix):

  torch-eager     PyTorch eager mode, torch.optim.AdamW, torch.nn.utils.clip_grad_norm_
  torch-compile   the same with torch.compile (default inductor backend) on the loss function
                  (forward + backward through AOTAutograd) and on clip + optimizer step
  jax-jit         JAX, the whole step (value_and_grad + clipping + a hand-written AdamW) under
                  one jax.jit, parameters and optimizer state donated

Every framework starts from the same initial parameters (numpy, --seed) and trains on the same
batches (numpy generator with --seed over the bytes of the first 95% of --data, lpac's
training split), so their losses can be compared step for step.

For each (framework, variant) it prints one JSON object on stdout:
framework, variant, first_step_s (the first call of the step: tracing/compilation included),
median_step_s (over --steps timed steps after --warmup warm-up steps; the first step is the
first warm-up step), steps, tokens_per_s (tokens per step / median_step_s), loss (the loss of
the last timed step), loss_initial (step 1), loss_median_timed, loss_check (the first loss is
within 0.25 of ln 256 and the median timed loss is at least 0.5 below it), plus details. A framework that fails
prints its row with an `error` key instead of crashing the others.

Install:  pip install torch jax numpy     (CPU wheels from PyPI; no optax needed)
Run:      python3 bench/train_step/peers.py                       # all frameworks, dense + LPA r=64
          python3 bench/train_step/peers.py --framework jax-jit --variant lpa --steps 5
"""

import time

_SCRIPT_START = time.perf_counter()

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
FRAMEWORKS = ["torch-eager", "torch-compile", "jax-jit"]

# models/tiny.lpa's config and lpac train's default hyperparameters.
CONFIG = dict(vocab=256, d=256, layers=4, heads=4, head_dim=64, ffn=1024, seq=128, batch=16)
HYPER = dict(lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-5, weight_decay=0.0, clip=1.0)
LN_EPS = 1e-5
TEST_FRACTION = 0.05


# ---------------------------------------------------------------------------------------------
# Shared: parameters (names as lpac's), their initialisation, and the batches.
# ---------------------------------------------------------------------------------------------

def param_specs(cfg, lowrank):
    """(name, shape, init) in lpac's parameter paths; init is ('normal', std), ('const', v) or
    ('uniform', bound). Dense init is tiny.lpa's (GPT-2 style); LPA factors get lpac's lowrank
    init (torch nn.Linear style: U(+-1/sqrt(fan_in)))."""
    d, f, v, s = cfg["d"], cfg["ffn"], cfg["vocab"], cfg["seq"]
    inner = cfg["heads"] * cfg["head_dim"]
    specs = [("wte.weight", (v, d), ("normal", 0.02)), ("wpe.weight", (s, d), ("normal", 0.02))]

    def dense(name, din, dout):
        specs.extend([(f"{name}.weight", (din, dout), ("normal", 0.02)), (f"{name}.bias", (dout,), ("const", 0.0))])

    def ln(name, n):
        specs.extend([(f"{name}.weight", (n,), ("const", 1.0)), (f"{name}.bias", (n,), ("const", 0.0))])

    for i in range(cfg["layers"]):
        pre = f"layers.{i}"
        ln(f"{pre}.ln1", d)
        for proj, din, dout in (("q", d, inner), ("k", d, inner), ("v", d, inner), ("o", inner, d)):
            name = f"{pre}.attn.{proj}"
            if not lowrank:
                dense(name, din, dout)
                continue
            r = lowrank
            specs.append((f"{name}.a.weight", (din, r), ("uniform", 1.0 / math.sqrt(din))))
            if proj != "o":
                specs.append((f"{name}.a.bias", (r,), ("uniform", 1.0 / math.sqrt(din))))
            specs.append((f"{name}.b.weight", (r, dout), ("uniform", 1.0 / math.sqrt(r))))
            if proj == "o":
                specs.append((f"{name}.bias", (dout,), ("const", 0.0)))
        ln(f"{pre}.ln2", d)
        dense(f"{pre}.mlp.up", d, f)
        dense(f"{pre}.mlp.down", f, d)
    ln("ln_f", d)
    dense("head", d, v)
    return specs


def init_params(cfg, lowrank, seed):
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape, (kind, arg) in param_specs(cfg, lowrank):
        if kind == "normal":
            x = rng.normal(0.0, arg, size=shape)
        elif kind == "uniform":
            x = rng.uniform(-arg, arg, size=shape)
        else:
            x = np.full(shape, arg)
        out[name] = np.ascontiguousarray(x, dtype=np.float32)
    return out


def make_batches(data_path, cfg, steps, seed):
    """`steps` batches of (tokens, targets), int64 [batch, seq]: windows of seq + 1 bytes at
    uniform random offsets in the training split (all but the last 5%, as lpac splits)."""
    data = np.frombuffer(Path(data_path).read_bytes(), dtype=np.uint8)
    train = data[: len(data) - math.ceil(len(data) * TEST_FRACTION)]
    b, s = cfg["batch"], cfg["seq"]
    rng = np.random.default_rng(seed + 1)
    offsets = rng.integers(0, len(train) - s, size=(steps, b))
    windows = train[offsets[..., None] + np.arange(s + 1)].astype(np.int64)
    return windows[..., :-1], windows[..., 1:]


# ---------------------------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------------------------

def torch_step_factory(cfg, lowrank, params_np, compiled, attention, adamw_impl):
    import torch
    import torch.nn.functional as F

    d, heads, hd, vocab = cfg["d"], cfg["heads"], cfg["head_dim"], cfg["vocab"]
    p = {k: torch.from_numpy(v.copy()).requires_grad_(True) for k, v in params_np.items()}
    plist = list(p.values())

    def lin(x, w, b):
        # lpac's layout: W is [d_in, d_out], y = x @ W + b. F.linear(x, W.t(), b) is one addmm
        # on the un-transposed W (no copy).
        return F.linear(x, w.t(), b) if b is not None else x @ w

    def proj(name, x):
        if not lowrank:
            return lin(x, p[f"{name}.weight"], p[f"{name}.bias"])
        if name.endswith(".o"):
            return lin(lin(x, p[f"{name}.a.weight"], None), p[f"{name}.b.weight"], p[f"{name}.bias"])
        return lin(lin(x, p[f"{name}.a.weight"], p[f"{name}.a.bias"]), p[f"{name}.b.weight"], None)

    def loss_fn(tokens, targets):
        bsz, t = tokens.shape
        h = F.embedding(tokens, p["wte.weight"]) + p["wpe.weight"][:t]
        split = lambda z: z.view(bsz, t, heads, hd).transpose(1, 2)
        for i in range(cfg["layers"]):
            pre = f"layers.{i}"
            a = F.layer_norm(h, (d,), p[f"{pre}.ln1.weight"], p[f"{pre}.ln1.bias"], LN_EPS)
            q, k, v = (split(proj(f"{pre}.attn.{n}", a)) for n in "qkv")
            if attention == "sdpa":
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # scale 1/sqrt(hd)
            else:
                scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
                mask = torch.ones(t, t, dtype=torch.bool).tril()
                y = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ v
            y = y.transpose(1, 2).reshape(bsz, t, heads * hd)
            h = h + proj(f"{pre}.attn.o", y)
            m = F.layer_norm(h, (d,), p[f"{pre}.ln2.weight"], p[f"{pre}.ln2.bias"], LN_EPS)
            up = F.gelu(lin(m, p[f"{pre}.mlp.up.weight"], p[f"{pre}.mlp.up.bias"]), approximate="tanh")
            h = h + lin(up, p[f"{pre}.mlp.down.weight"], p[f"{pre}.mlp.down.bias"])
        h = F.layer_norm(h, (d,), p["ln_f.weight"], p["ln_f.bias"], LN_EPS)
        logits = lin(h, p["head.weight"], p["head.bias"])
        return F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))

    # Weight decay only on matrices, as lpac's decay mask (irrelevant at weight_decay 0).
    groups = [
        {"params": [x for x in plist if x.dim() >= 2], "weight_decay": HYPER["weight_decay"]},
        {"params": [x for x in plist if x.dim() < 2], "weight_decay": 0.0},
    ]
    kw = {} if adamw_impl == "default" else {adamw_impl: True}
    opt = torch.optim.AdamW(groups, lr=HYPER["lr"], betas=(HYPER["beta1"], HYPER["beta2"]), eps=HYPER["eps"], **kw)

    def clip_and_update():
        # clip_coef = clip / (norm + 1e-6), clamped to 1: the same rule as lpac's optimizer pass.
        norm = torch.nn.utils.clip_grad_norm_(plist, HYPER["clip"])
        opt.step()
        return norm

    if compiled:
        loss_fn = torch.compile(loss_fn)
        clip_and_update = torch.compile(clip_and_update)

    def step(tokens, targets):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(tokens, targets)
        loss.backward()
        clip_and_update()
        return loss.item()

    step.params, step.loss_fn = p, loss_fn  # for debugging and tests
    return step


def run_torch(args, cfg, lowrank, params_np, batches, compiled):
    import torch

    torch.set_num_threads(args.threads)
    tokens = [torch.from_numpy(x) for x in batches[0]]
    targets = [torch.from_numpy(x) for x in batches[1]]
    step = torch_step_factory(cfg, lowrank, params_np, compiled, args.torch_attention, args.torch_adamw)
    info = dict(
        framework_version=torch.__version__,
        threads=torch.get_num_threads(),
        attention=args.torch_attention,
        adamw=args.torch_adamw,
    )
    if compiled:
        info["inductor_cache"] = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default")
    return step, tokens, targets, info


# ---------------------------------------------------------------------------------------------
# JAX
# ---------------------------------------------------------------------------------------------

def run_jax(args, cfg, lowrank, params_np, batches):
    import jax
    import jax.numpy as jnp

    d, heads, hd = cfg["d"], cfg["heads"], cfg["head_dim"]
    b1, b2, eps, wd, clip = (HYPER[k] for k in ("beta1", "beta2", "eps", "weight_decay", "clip"))

    def ln(x, w, b):
        mu = x.mean(-1, keepdims=True)
        var = jnp.square(x - mu).mean(-1, keepdims=True)
        return (x - mu) * jax.lax.rsqrt(var + LN_EPS) * w + b

    def lin(x, w, b):
        y = x @ w
        return y + b if b is not None else y

    def loss_fn(p, tokens, targets):
        def proj(name, x):
            if not lowrank:
                return lin(x, p[f"{name}.weight"], p[f"{name}.bias"])
            if name.endswith(".o"):
                return lin(x @ p[f"{name}.a.weight"], p[f"{name}.b.weight"], p[f"{name}.bias"])
            return lin(x, p[f"{name}.a.weight"], p[f"{name}.a.bias"]) @ p[f"{name}.b.weight"]

        bsz, t = tokens.shape
        h = p["wte.weight"][tokens] + p["wpe.weight"][:t]
        split = lambda z: z.reshape(bsz, t, heads, hd).transpose(0, 2, 1, 3)
        mask = jnp.tril(jnp.ones((t, t), dtype=bool))
        for i in range(cfg["layers"]):
            pre = f"layers.{i}"
            a = ln(h, p[f"{pre}.ln1.weight"], p[f"{pre}.ln1.bias"])
            q, k, v = (split(proj(f"{pre}.attn.{n}", a)) for n in "qkv")
            scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) * (1.0 / math.sqrt(hd))
            w = jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=-1)
            y = jnp.einsum("bhqk,bhkd->bhqd", w, v).transpose(0, 2, 1, 3).reshape(bsz, t, heads * hd)
            h = h + proj(f"{pre}.attn.o", y)
            m = ln(h, p[f"{pre}.ln2.weight"], p[f"{pre}.ln2.bias"])
            up = jax.nn.gelu(lin(m, p[f"{pre}.mlp.up.weight"], p[f"{pre}.mlp.up.bias"]), approximate=True)
            h = h + lin(up, p[f"{pre}.mlp.down.weight"], p[f"{pre}.mlp.down.bias"])
        h = ln(h, p["ln_f.weight"], p["ln_f.bias"])
        logits = lin(h, p["head.weight"], p["head.bias"])
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.take_along_axis(logp, targets[..., None], axis=-1).mean()

    def train_step(p, m, v, t, lr, tokens, targets):
        """Clipping and AdamW exactly as torch (and lpac's optimizer pass) compute them; the
        step count and learning rate are inputs, so neither recompiles."""
        loss, g = jax.value_and_grad(loss_fn)(p, tokens, targets)
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(g)))
        factor = jnp.minimum(1.0, clip / (norm + 1e-6))
        bc1 = 1.0 - b1 ** t
        bc2_sqrt = jnp.sqrt(1.0 - b2 ** t)
        new_p, new_m, new_v = {}, {}, {}
        for k in p:
            gk = g[k] * factor
            pk = p[k] * (1.0 - lr * wd) if p[k].ndim >= 2 else p[k]
            mk = b1 * m[k] + (1.0 - b1) * gk
            vk = b2 * v[k] + (1.0 - b2) * jnp.square(gk)
            new_p[k] = pk - (lr / bc1) * mk / (jnp.sqrt(vk) / bc2_sqrt + eps)
            new_m[k], new_v[k] = mk, vk
        return new_p, new_m, new_v, loss, norm

    jstep = jax.jit(train_step, donate_argnums=(0, 1, 2))
    state = {
        "p": {k: jnp.asarray(x) for k, x in params_np.items()},
        "m": {k: jnp.zeros(x.shape, jnp.float32) for k, x in params_np.items()},
        "v": {k: jnp.zeros(x.shape, jnp.float32) for k, x in params_np.items()},
        "t": 0,
    }
    lr = jnp.float32(HYPER["lr"])
    tokens = [jax.device_put(x.astype(np.int32)) for x in batches[0]]
    targets = [jax.device_put(x.astype(np.int32)) for x in batches[1]]

    def step(tok, tgt):
        state["t"] += 1
        p, m, v, loss, _ = jstep(state["p"], state["m"], state["v"], jnp.float32(state["t"]), lr, tok, tgt)
        state["p"], state["m"], state["v"] = p, m, v
        jax.block_until_ready(p)
        return float(loss)

    info = dict(
        framework_version=jax.__version__,
        jaxlib_version=__import__("jaxlib").__version__,
        backend=jax.default_backend(),
        threads="XLA default (all visible cores: %d)" % len(os.sched_getaffinity(0)),
        optimizer="hand-written AdamW + global-norm clipping (jnp)",
    )
    return step, tokens, targets, info


# ---------------------------------------------------------------------------------------------
# Timing one (framework, variant)
# ---------------------------------------------------------------------------------------------

def variant_name(lowrank):
    return f"lpa-r{lowrank}" if lowrank else "dense"


def run_one(args, framework, lowrank):
    cfg = dict(CONFIG)
    total = args.warmup + args.steps
    row = dict(framework=framework, variant=variant_name(lowrank), first_step_s=None, median_step_s=None,
               steps=args.steps, warmup=args.warmup, tokens_per_s=None, loss=None)
    try:
        params_np = init_params(cfg, lowrank, args.seed)
        batches = make_batches(args.data, cfg, total, args.seed)
        row["params"] = int(sum(x.size for x in params_np.values()))
        if framework in ("torch-eager", "torch-compile"):
            step, tokens, targets, info = run_torch(args, cfg, lowrank, params_np, batches, framework == "torch-compile")
        elif framework == "jax-jit":
            step, tokens, targets, info = run_jax(args, cfg, lowrank, params_np, batches)
        else:
            raise ValueError(f"unknown framework {framework!r}")
        row.update(info)
        row["setup_s"] = time.perf_counter() - _SCRIPT_START
        times, losses = [], []
        for i in range(total):
            t0 = time.perf_counter()
            loss = step(tokens[i], targets[i])
            times.append(time.perf_counter() - t0)
            losses.append(loss)
            if i == 0:
                launched = float(os.environ.get("BENCH_LAUNCH_TIME", "nan"))
                row["launch_to_first_step_s"] = (
                    time.time() - launched if math.isfinite(launched) else time.perf_counter() - _SCRIPT_START
                )
            if not math.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss} at step {i + 1}")
        timed = times[args.warmup:]
        tokens_per_step = cfg["batch"] * cfg["seq"]
        row["first_step_s"] = times[0]
        row["median_step_s"] = float(np.median(timed))
        row["min_step_s"] = float(np.min(timed))
        row["tokens_per_s"] = tokens_per_step / row["median_step_s"]
        row["tokens_per_step"] = tokens_per_step
        row["loss_initial"] = losses[0]
        row["loss"] = losses[-1]
        row["loss_median_timed"] = float(np.median(losses[args.warmup:]))
        row["losses"] = losses
        row["step_times_s"] = times
        problems = []
        # Small random logits (std s ~ 0.02 * sqrt(d) = 0.32 after the final LayerNorm) give
        # E[loss] ~ ln V + s^2 / 2 = 5.60, so the first loss should be within a few tenths of ln V.
        if abs(losses[0] - math.log(cfg["vocab"])) > 0.25:
            problems.append(f"initial loss {losses[0]:.4f} is not ~ ln {cfg['vocab']} = {math.log(cfg['vocab']):.4f}")
        # The median over the timed steps, not the last loss alone: at a constant lr of 1e-3
        # without warm-up this model has a one-step loss spike around steps 11-13 (e.g. seed 0,
        # dense: 3.40 -> 8.14 -> 3.36 at steps 12-14), identically in every framework here and in
        # lpac itself, so a single step is not a reliable sign of divergence.
        if not row["loss_median_timed"] < losses[0] - 0.5:
            problems.append(f"loss did not decrease (median of the timed steps {row['loss_median_timed']:.4f})")
        row["loss_check"] = "ok" if not problems else "FAILED: " + "; ".join(problems)
        row["error"] = None
    except Exception as e:  # noqa: BLE001 - a failing framework reports, the others go on
        row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:500]
        row["traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
    return row


# ---------------------------------------------------------------------------------------------
# Driver: one subprocess per (framework, variant)
# ---------------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--framework", action="append", choices=FRAMEWORKS + ["all"],
                    help="repeatable; default: all (%s)" % ", ".join(FRAMEWORKS))
    ap.add_argument("--variant", choices=["dense", "lpa", "both"], default="both",
                    help="dense, lpa (--lowrank), or both (default)")
    ap.add_argument("--lowrank", type=int, default=64, metavar="R", help="LPA rank (default 64)")
    ap.add_argument("--warmup", "-W", type=int, default=3,
                    help="untimed warm-up steps, the first of which is reported as first_step_s (default 3)")
    ap.add_argument("--steps", "-N", type=int, default=10, help="timed steps after the warm-up (default 10)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the initial parameters and the batches")
    ap.add_argument("--data", default=str(REPO / "data/shakespeare.txt"), help="training text (bytes)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="torch.set_num_threads (default: visible cores); JAX/XLA uses all visible cores")
    ap.add_argument("--torch-attention", choices=["sdpa", "explicit"], default="sdpa",
                    help="PyTorch attention: F.scaled_dot_product_attention(is_causal=True) (default) or "
                         "explicit QK^T/softmax/V with a mask")
    ap.add_argument("--torch-adamw", choices=["default", "foreach", "fused"], default="default",
                    help="torch.optim.AdamW implementation (default: torch's choice for CPU tensors)")
    ap.add_argument("--warm-cache", action="store_true",
                    help="let torch.compile use its persistent cache (default: a fresh empty cache per run, "
                         "so first_step_s is a cold compile)")
    ap.add_argument("--in-process", action="store_true",
                    help="run everything in this process instead of one subprocess per row")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per row before it is killed")
    ap.add_argument("--brief", action="store_true", help="omit per-step lists (losses, step_times_s) from rows")
    ap.add_argument("--one", nargs=2, metavar=("FRAMEWORK", "LOWRANK"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        ap.error("--warmup and --steps must be at least 1")
    return args


def emit(row, brief):
    if brief:
        row = {k: v for k, v in row.items() if k not in ("losses", "step_times_s")}
    print(json.dumps(row), flush=True)


def child_argv(args, framework, lowrank):
    argv = [sys.executable, str(Path(__file__).resolve()), "--one", framework, str(lowrank),
            "--warmup", str(args.warmup), "--steps", str(args.steps), "--seed", str(args.seed),
            "--data", args.data, "--threads", str(args.threads),
            "--torch-attention", args.torch_attention, "--torch-adamw", args.torch_adamw]
    return argv


class CpuMeter:
    """CPU time the rest of the machine used while a child ran: the machine's busy time
    (/proc/stat) minus the CPU time of our waited-for children, per second of wall time. About
    0 on an idle machine; 1 means another process kept a whole core busy beside the benchmark."""

    def __init__(self):
        self.ok = os.path.exists("/proc/stat")

    @staticmethod
    def _busy_s():
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
        user, nice, system, _idle, _iowait, irq, softirq = fields
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _children_s():
        import resource
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def start(self):
        if self.ok:
            self.t0, self.b0, self.c0 = time.time(), self._busy_s(), self._children_s()
        return self

    def stop(self):
        if not self.ok:
            return None
        wall = time.time() - self.t0
        other = (self._busy_s() - self.b0) - (self._children_s() - self.c0)
        return max(0.0, other) / wall if wall > 0 else None


def run_subprocess(args, framework, lowrank):
    env = dict(os.environ)
    cache = None
    if framework == "torch-compile" and not args.warm_cache:
        cache = tempfile.mkdtemp(prefix="lpac-bench-inductor-")
        env["TORCHINDUCTOR_CACHE_DIR"] = cache
    env["BENCH_LAUNCH_TIME"] = repr(time.time())
    base = dict(framework=framework, variant=variant_name(lowrank), first_step_s=None, median_step_s=None,
                steps=args.steps, warmup=args.warmup, tokens_per_s=None, loss=None)
    meter = CpuMeter().start()
    try:
        proc = subprocess.run(child_argv(args, framework, lowrank), env=env, capture_output=True, text=True,
                              timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return dict(base, error=f"timed out after {args.timeout:.0f} s")
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
    other_load = meter.stop()
    rows = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if rows:
        return dict(json.loads(rows[-1]), other_load=other_load)
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return dict(base, error=f"exit status {proc.returncode}: {tail}"[:500], other_load=other_load)


def main(argv=None):
    args = parse_args(argv)
    if args.one:
        framework, lowrank = args.one[0], int(args.one[1])
        row = run_one(args, framework, lowrank)
        emit(row, False)
        sys.exit(0 if row.get("error") is None else 1)
    frameworks = args.framework or ["all"]
    frameworks = FRAMEWORKS if "all" in frameworks else list(dict.fromkeys(frameworks))
    ranks = {"dense": [0], "lpa": [args.lowrank], "both": [0, args.lowrank]}[args.variant]
    print(f"# {platform.machine()} {platform.processor() or ''} cores={len(os.sched_getaffinity(0))} "
          f"python={platform.python_version()} warmup={args.warmup} steps={args.steps}", file=sys.stderr)
    failed = False
    for lowrank in ranks:
        for fw in frameworks:
            print(f"# running {fw} {variant_name(lowrank)} ...", file=sys.stderr, flush=True)
            if args.in_process:
                row = run_one(args, fw, lowrank)
            else:
                row = run_subprocess(args, fw, lowrank)
            failed |= row.get("error") is not None
            emit(row, args.brief)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
