/**
 * @file Training throughput of PaLM on the CPU backend against PyTorch, in the same run: tokens/s of
 * a jitted training step (`jit(valueAndGrad(palm.loss))` + `optim.adamw`, params and optimiser state
 * donated) for dim 256, depth 4, 8 heads of 32, ffMult 4, 256 tokens, seq 128, batch 8, float32; then
 * bench/palm_train_torch.py (the same model in plain eager torch, same sizes, AdamW, 2 threads) as the
 * peer. Prints both and the ratio.
 *
 * Run: `npx tsx bench/palm-train.ts [--steps N] [--warmup N] [--device cpu|webgpu] [--python /usr/bin/python3] [--no-torch]`.
 * Tokens per step are batch·seq (the step reads all of them; the loss predicts seq-1 per row), the same
 * count on both sides. Warm-up steps (webgrad: the first traces and compiles) are not timed. webgrad
 * uses every core of the machine (WEBGRAD_THREADS caps it); compare on a machine where that equals
 * torch's 2 threads, or say so.
 */
import { spawnSync } from "node:child_process";
import os from "node:os";
import { fileURLToPath } from "node:url";
import { initWebGpu, jit, np, optim, palm, random, setDefaultDevice, valueAndGrad, webGpuUnavailableReason } from "../src/index.js";
import type { Array as WArray, Value } from "../src/index.js";
import type { PalmConfig, PalmParams } from "../src/nn/palm.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1]! : fallback;
}

const steps = Number(arg("steps", "10"));
const warmup = Number(arg("warmup", "2"));
const python = arg("python", "/usr/bin/python3");
const deviceName = arg("device", "cpu");
const sizes = { numTokens: 256, dim: 256, depth: 4, heads: 8, dimHead: 32, ffMult: 4, seq: 128, batch: 8, lr: 3e-4, weightDecay: 0.1 };

interface Result {
  tokensPerSec: number;
  msPerStep: number;
  msMedian: number;
  msBest: number;
  loss0: number;
  lossN: number;
}

async function webgrad(): Promise<Result> {
  if (deviceName === "webgpu") {
    const dev = await initWebGpu();
    if (!dev) throw new Error(`--device webgpu: no adapter (${webGpuUnavailableReason()})`);
    setDefaultDevice(dev);
  }
  const config: PalmConfig = { numTokens: sizes.numTokens, dim: sizes.dim, depth: sizes.depth, heads: sizes.heads, dimHead: sizes.dimHead, ffMult: sizes.ffMult, crossEntropyIgnoreIndex: null };
  const lossFn = (p: PalmParams, t: Value): Value => palm.loss(p, t, { config });
  const opt = optim.adamw(sizes.lr, { weightDecay: sizes.weightDecay });
  const step = jit(
    (p: PalmParams, s: unknown, t: Value): [PalmParams, unknown, Value] => {
      const [l, g] = valueAndGrad(lossFn)(p, t) as [Value, PalmParams];
      const [u, s2] = opt.update(g, s, p);
      return [optim.applyUpdates(p, u), s2, l];
    },
    { donateArgnums: [0, 1] },
  );
  let params = palm.init(random.key(0), config);
  let state = opt.init(params);
  const host = new Int32Array(sizes.batch * sizes.seq);
  for (let i = 0; i < host.length; i++) host[i] = Math.floor(Math.random() * sizes.numTokens);
  const tokens = np.array(host, { shape: [sizes.batch, sizes.seq] });
  const run = async (): Promise<number> => {
    const out = step(params, state, tokens);
    [params, state] = out;
    const l = await (out[2] as WArray).item();
    (out[2] as WArray).dispose();
    return Number(l);
  };
  let loss0 = NaN;
  for (let i = 0; i < warmup; i++) {
    const l = await run();
    if (i === 0) loss0 = l;
  }
  let lossN = NaN;
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    lossN = await run();
    times.push(performance.now() - t0);
  }
  const ms = times.reduce((a, b) => a + b, 0);
  times.sort((a, b) => a - b);
  return { tokensPerSec: (steps * sizes.batch * sizes.seq) / (ms / 1000), msPerStep: ms / steps, msMedian: times[steps >> 1]!, msBest: times[0]!, loss0, lossN };
}

function torchPeer(): (Result & { torch: string; threads: number }) | string {
  const script = fileURLToPath(new URL("./palm_train_torch.py", import.meta.url));
  const flags = ["--steps", String(steps), "--warmup", String(warmup), "--num-tokens", String(sizes.numTokens), "--dim", String(sizes.dim)];
  flags.push("--depth", String(sizes.depth), "--heads", String(sizes.heads), "--dim-head", String(sizes.dimHead), "--ff-mult", String(sizes.ffMult));
  flags.push("--seq", String(sizes.seq), "--batch", String(sizes.batch), "--lr", String(sizes.lr), "--weight-decay", String(sizes.weightDecay), "--threads", "2");
  const r = spawnSync(python, [script, ...flags], { encoding: "utf8" });
  if (r.error) return `n/a (${r.error.message})`;
  if (r.status !== 0) return `n/a (exit ${r.status}: ${r.stderr.trim().split("\n").at(-1)})`;
  return JSON.parse(r.stdout.trim().split("\n").at(-1)!);
}

async function main(): Promise<void> {
  const wasmInfo = await import("../src/ops/backend/cpu/wasm/index.js").then((m) => m.cpuWasmInfo()).catch((e: Error) => `unavailable (${e.message})`);
  console.log(`PaLM training step, ${deviceName} backend: dim ${sizes.dim}, depth ${sizes.depth}, ${sizes.heads} heads × ${sizes.dimHead}, ffMult ${sizes.ffMult}, vocab ${sizes.numTokens}, seq ${sizes.seq}, batch ${sizes.batch}, float32`);
  console.log(`machine: ${os.cpus()[0]?.model} × ${os.cpus().length}; webgrad CPU fast path: ${JSON.stringify(wasmInfo)}`);
  console.log(`timed steps: ${steps} after ${warmup} warm-up steps\n`);
  const w = await webgrad();
  const line = (name: string, r: Result): string =>
    `${name.padEnd(8)} ${r.tokensPerSec.toFixed(0).padStart(6)} tokens/s (mean)  ms/step: mean ${r.msPerStep.toFixed(0)}, median ${r.msMedian.toFixed(0)}, best ${r.msBest.toFixed(0)}  (loss ${r.loss0.toFixed(3)} -> ${r.lossN.toFixed(3)}`;
  console.log(`${line("webgrad", w)})`);
  if (process.argv.includes("--no-torch")) return;
  const t = torchPeer();
  if (typeof t === "string") {
    console.log(`torch    ${t}`);
    return;
  }
  console.log(`${line("torch", t)}; torch ${t.torch}, ${t.threads} threads, eager)`);
  const ratio = (a: number, b: number): string => `${(a / b).toFixed(2)}×`;
  console.log(`\nwebgrad / torch tokens/s: mean ${ratio(t.msPerStep, w.msPerStep)}, median ${ratio(t.msMedian, w.msMedian)}, best ${ratio(t.msBest, w.msBest)}`);
  console.log("(on a shared machine the mean and median move with other load; the best step much less)");
}

main()
  .then(async () => {
    const m = await import("../src/ops/backend/cpu/wasm/index.js").catch(() => null);
    m?.shutdownCpuWasmPool();
  })
  .catch((e) => {
    console.error(e);
    process.exitCode = 1;
  });
