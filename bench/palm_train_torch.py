#!/usr/bin/env python3
"""The PyTorch peer of bench/palm-train.ts: the same PaLM, written in plain torch, trained with AdamW.

Same model as src/nn/palm.ts and scripts/fixtures/gen_palm.py (pre-LayerNorm without bias, one fused
projection to q | k | v | SwiGLU input, multi-query attention, rotary embeddings with xPos, causal mask,
tied embeddings, next-token cross-entropy), same sizes and optimiser settings as the TypeScript side,
float32, eager mode (no torch.compile), `torch.set_num_threads(2)`.

Prints one JSON line: {"tokensPerSec", "msPerStep", "msMedian", "msBest", "steps", "loss0", "lossN", "torch", "threads"}.
Run:  /usr/bin/python3 bench/palm_train_torch.py --steps 10   (bench/palm-train.ts runs it for you)
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F


def make_params(num_tokens, dim, depth, heads, dim_head, ff_mult, gen):
    """Init as palm.init: embeddings N(0, 0.02), linears U(±1/√fanIn) in [in, out] layout, gains 1."""
    attn_inner, ff_inner = heads * dim_head, dim * ff_mult
    fused = attn_inner + 2 * dim_head + 2 * ff_inner

    def linear(fan_in, fan_out):
        b = 1 / math.sqrt(fan_in)
        return (torch.rand(fan_in, fan_out, generator=gen) * 2 - 1) * b

    P = {"tokenEmb": torch.randn(num_tokens, dim, generator=gen) * 0.02, "norm.gamma": torch.ones(dim)}
    for l in range(depth):
        P[f"{l}.gamma"] = torch.ones(dim)
        P[f"{l}.fused"] = linear(dim, fused)
        P[f"{l}.attnOut"] = linear(attn_inner, dim)
        P[f"{l}.ffOut"] = linear(ff_inner, dim)
    return {k: v.requires_grad_(True) for k, v in P.items()}


def rotary(n, dim_head, scale_base=512):
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim_head, 2, dtype=torch.float32) / dim_head))
    t = torch.arange(n, dtype=torch.float32)
    freqs = torch.einsum("i,j->ij", t, inv_freq)
    freqs = torch.cat((freqs, freqs), dim=-1)
    zeta = (torch.arange(0, dim_head, 2, dtype=torch.float32) + 0.4 * dim_head) / (1.4 * dim_head)
    scale = zeta ** ((t - (n // 2)) / scale_base)[:, None]
    return freqs, torch.cat((scale, scale), dim=-1)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def forward(P, tokens, depth, heads, dim_head, ff_inner, rot):
    b, n = tokens.shape
    attn_inner = heads * dim_head
    freqs, scale = rot
    cos, sin = freqs.cos(), freqs.sin()
    mask = torch.ones((n, n), dtype=torch.bool).triu(1)
    x = P["tokenEmb"][tokens]
    for l in range(depth):
        g = P[f"{l}.gamma"]
        h = F.layer_norm(x, x.shape[-1:], g, None, eps=1e-5)
        q, k, v, ff = (h @ P[f"{l}.fused"]).split((attn_inner, dim_head, dim_head, 2 * ff_inner), dim=-1)
        q = q.reshape(b, n, heads, dim_head).permute(0, 2, 1, 3)
        q = (q * cos + rotate_half(q) * sin) * scale
        k = (k * cos + rotate_half(k) * sin) / scale
        sim = torch.einsum("bhid,bjd->bhij", q, k) * dim_head ** -0.5
        sim = sim.masked_fill(mask, -torch.finfo(sim.dtype).max)
        attn = sim.softmax(dim=-1)
        out = torch.einsum("bhij,bjd->bhid", attn, v).permute(0, 2, 1, 3).reshape(b, n, attn_inner)
        ffx, gate = ff.chunk(2, dim=-1)
        x = out @ P[f"{l}.attnOut"] + (F.silu(gate) * ffx) @ P[f"{l}.ffOut"] + x
    x = F.layer_norm(x, x.shape[-1:], P["norm.gamma"], None, eps=1e-5)
    return x @ P["tokenEmb"].t()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--num-tokens", type=int, default=256)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--dim-head", type=int, default=32)
    ap.add_argument("--ff-mult", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(0)
    P = make_params(a.num_tokens, a.dim, a.depth, a.heads, a.dim_head, a.ff_mult, gen)
    opt = torch.optim.AdamW(P.values(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=a.weight_decay)
    tokens = torch.randint(0, a.num_tokens, (a.batch, a.seq), generator=gen)
    rot = rotary(a.seq - 1, a.dim_head)
    ff_inner = a.dim * a.ff_mult

    def step():
        logits = forward(P, tokens[:, :-1], a.depth, a.heads, a.dim_head, ff_inner, rot)
        loss = F.cross_entropy(logits.reshape(-1, a.num_tokens), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    loss0 = None
    for _ in range(a.warmup):
        l = step()
        loss0 = l if loss0 is None else loss0
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        l = step()
        times.append(time.perf_counter() - t0)
    dt = sum(times)
    times.sort()
    print(json.dumps({
        "tokensPerSec": a.steps * a.batch * a.seq / dt,
        "msPerStep": 1000 * dt / a.steps,
        "msMedian": 1000 * times[len(times) // 2],
        "msBest": 1000 * times[0],
        "steps": a.steps,
        "loss0": loss0,
        "lossN": l,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
