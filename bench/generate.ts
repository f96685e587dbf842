/**
 * @file Generation throughput on the CPU backend: greedy decoding from a small PaLM (dim 128, depth 2,
 * 4 heads × 32, ffMult 4, 256 tokens, float32) with the KV cache (`generate`, one jitted step per token
 * reading and writing the cache through `palm.applyWithCache`) against full recomputation without a
 * cache, two ways:
 *   - "full, jitted": one jitted step runs `palm.apply` on the whole [batch, maxLen] buffer (causal, so
 *     the not-yet-written tail does not change position t), takes the argmax at t and writes t+1: one
 *     trace for every step, cost ∝ maxLen per token;
 *   - "full, eager": `palm.apply` on the growing prefix each step, argmax on the host, no jit (the way
 *     PaLM-rlhf-pytorch's generate works), cost ∝ t per token.
 * Prints new tokens/s for each, the speed-ups, and whether all three produced the same tokens.
 *
 * Run: `npx tsx bench/generate.ts [--prompt 16] [--new 112] [--batch 1]`. One untimed warm-up call of
 * each method first (tracing and compiling).
 */
import { jit, np, palm, random } from "../src/index.js";
import type { Array as WArray, Value } from "../src/index.js";
import * as lax from "../src/ops/lax/index.js";
import { generate } from "../src/nn/generate.js";
import type { PalmConfig, PalmParams } from "../src/nn/palm.js";

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? Number(process.argv[i + 1]) : fallback;
}

const promptLen = arg("prompt", 16);
const maxNew = arg("new", 112);
const batch = arg("batch", 1);
const maxLen = promptLen + maxNew;
const config: PalmConfig = { numTokens: 256, dim: 128, depth: 2, heads: 4, dimHead: 32, ffMult: 4 };

const prompts: number[][] = Array.from({ length: batch }, (_, r) => Array.from({ length: promptLen }, (_, i) => (37 * r + 11 * i + 5) % 256));

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; out: T }> {
  await fn(); // warm-up: traces and compiles
  const t0 = performance.now();
  const out = await fn();
  return { ms: performance.now() - t0, out };
}

/** KV cache: the library's generate. */
async function cached(params: PalmParams): Promise<number[][]> {
  const r = await generate(params, prompts, { config, maxNewTokens: maxNew, temperature: 0 });
  r.sequences.dispose();
  r.tokens.dispose();
  return r.completions;
}

/** Full recomputation on the padded buffer, one jitted step per token. */
const fullStep = jit((params: PalmParams, seq: Value, t: Value): Value => {
  const logits = palm.apply(params, seq, { config }); // [b, maxLen, V]
  const zero = np.zeros([], { dtype: "int32" });
  const row = np.reshape(lax.dynamicSlice(logits, [zero, t, zero], [batch, 1, config.numTokens]), [batch, config.numTokens]); // [b, 1, V] -> [b, V]
  const next = np.astype(np.argmax(row, { axis: -1 }), "int32"); // [b]
  return lax.dynamicUpdateSlice(seq, np.reshape(next, [batch, 1]), [zero, np.add(t, 1)]); // [b] -> [b, 1] written at t+1
});

async function fullJitted(params: PalmParams): Promise<number[][]> {
  const host = new Int32Array(batch * maxLen);
  prompts.forEach((p, r) => host.set(p, r * maxLen));
  let seq: Value = np.array(host, { shape: [batch, maxLen] });
  for (let t = promptLen - 1; t < maxLen - 1; t++) {
    const tArr = np.array(new Int32Array([t]), { shape: [] });
    const next = fullStep(params, seq, tArr);
    (seq as WArray).dispose();
    tArr.dispose();
    seq = next;
  }
  const all = Array.from(await (seq as WArray).data(), Number);
  (seq as WArray).dispose();
  return prompts.map((_, r) => all.slice(r * maxLen + promptLen, (r + 1) * maxLen));
}

/** Full recomputation of the growing prefix, eagerly. */
async function fullEager(params: PalmParams): Promise<number[][]> {
  const seqs = prompts.map((p) => [...p]);
  for (let i = 0; i < maxNew; i++) {
    const logits = palm.apply(params, np.array(seqs, { dtype: "int32" }), { config }) as WArray; // [b, t+1, V]
    const n = seqs[0]!.length;
    const last = np.reshape(np.split(logits, [n - 1], 1)[1]!, [batch, config.numTokens]) as WArray; // [b, 1, V] -> [b, V]
    const next = np.argmax(last, { axis: -1 }) as WArray;
    const ids = Array.from(await next.data(), Number);
    [logits, last, next].forEach((x) => x.dispose());
    seqs.forEach((s, r) => s.push(ids[r]!));
  }
  return seqs.map((s) => s.slice(promptLen));
}

async function main(): Promise<void> {
  const params = palm.init(random.key(0), config);
  console.log(`Greedy generation, CPU backend: dim ${config.dim}, depth ${config.depth}, ${config.heads} heads × ${config.dimHead}, vocab ${config.numTokens}, float32`);
  console.log(`batch ${batch}, prompt ${promptLen}, ${maxNew} new tokens (maxLen ${maxLen})\n`);
  const newTokens = batch * maxNew;
  const rows: [string, { ms: number; out: number[][] }][] = [
    ["KV cache (generate)", await timed(() => cached(params))],
    ["full recompute, jitted (padded to maxLen)", await timed(() => fullJitted(params))],
    ["full recompute, eager (growing prefix)", await timed(() => fullEager(params))],
  ];
  const base = rows[0]![1].ms;
  for (const [name, r] of rows) {
    console.log(`${name.padEnd(44)} ${((newTokens / r.ms) * 1000).toFixed(1).padStart(8)} tokens/s  ${r.ms.toFixed(0).padStart(7)} ms   cache speed-up ${(r.ms / base).toFixed(2)}×`);
  }
  const same = rows.every(([, r]) => JSON.stringify(r.out) === JSON.stringify(rows[0]![1].out));
  console.log(`\nall three produced the same tokens: ${same ? "yes" : "no (near-tied logits can flip a float32 argmax)"}`);
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
