/**
 * @file Benchmark: fixed costs of eager execution, on the WebGPU device and on the CPU backend in the
 * same run.
 *
 *   npx tsx bench/webgpu-overhead.ts
 *   SAMPLES=400 CHAIN=100 npx tsx bench/webgpu-overhead.ts
 *
 * 1. Round trip: one tiny op (`np.add` of two float32[16]) and `await y.data()` — the latency of a
 *    dispatch, its submit and the readback (median of SAMPLES).
 * 2. Eager chain: CHAIN small ops (alternating `np.multiply` / `np.add` on float32[16]), then one read;
 *    the per-op figure is (chain − round trip) / (CHAIN − 1), i.e. what one more eager op costs when
 *    nothing waits for it (library dispatch: bind, shape rules, device placement; on WebGPU encoding
 *    into the batched command encoder and its share of the submit).
 * 3. The same chain on the backend directly (kernel ops on buffers, no `bind`), to split the library's
 *    share from the backend's.
 *
 * Each op's pipeline is compiled before timing (warm-up). Figures are medians: the 2-core development
 * machines are shared and single samples vary. Intermediates are disposed inside the timed region (as
 * a `scope` does in real eager loops), so the buffer pool stays warm and the heap flat.
 */
import { Array as WArray } from "../src/ops/array.js";
import { cpuBackend } from "../src/ops/backend/cpu/index.js";
import type { KernelBuilder } from "../src/ops/backend/kernel.js";
import { adapterInfo, initWebGpu, webGpuUnavailableReason } from "../src/ops/backend/webgpu/index.js";
import { np, scope } from "../src/index.js";

const dev = await initWebGpu();
if (!dev) {
  console.log(`no WebGPU adapter: ${webGpuUnavailableReason()}`);
  process.exit(1);
}
const info = adapterInfo();
console.log(`WebGPU adapter: ${info?.name} (software: ${info?.isSoftware})`);

const SAMPLES = Number(process.env.SAMPLES ?? 300);
const CHAIN = Number(process.env.CHAIN ?? 100);
const N = 16;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const us = (ms: number): string => `${(ms * 1000).toFixed(1)} µs`;

async function sample(f: () => Promise<unknown>, n: number): Promise<number> {
  for (let i = 0; i < Math.min(20, n); i++) await f(); // warm-up: compiles, pool
  const ts: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await f();
    ts.push(performance.now() - t0);
  }
  return median(ts);
}

function data(seed: number): Float32Array {
  return Float32Array.from({ length: N }, (_, i) => Math.sin(seed + i) * 0.5);
}

interface Row {
  device: string;
  roundTrip: number;
  chain: number;
  perOp: number;
  backendChain: number;
  backendPerOp: number;
}

async function measure(device: string): Promise<Row> {
  const a = np.array(data(1), { device });
  const b = np.array(data(2), { device });

  // 1. One dispatch + readback.
  const roundTrip = await sample(async () => {
    const y = np.add(a, b) as WArray;
    await y.data();
    y.dispose();
  }, SAMPLES);

  // 2. CHAIN eager ops, one read. 0.5·y + b stays bounded.
  const chainOnce = async () => {
    const y = scope(() => {
      let y = a;
      for (let i = 0; i < CHAIN; i++) y = (i % 2 === 0 ? np.multiply(y, a) : np.add(y, b)) as WArray;
      return y;
    });
    await y.data();
    y.dispose();
  };
  const chain = await sample(chainOnce, Math.max(20, Math.round(SAMPLES / 5)));

  // 3. The same chain on the backend (handles, no bind / placement / Array wrappers).
  const be = a.device.backend as KernelBuilder<unknown> & { release(h: unknown): void; read(h: unknown): Promise<unknown> };
  const out = { shape: [N], dtype: "float32" as const };
  const backendOnce = async () => {
    let y: unknown = a.buffer;
    for (let i = 0; i < CHAIN; i++) {
      const next = be.binary(i % 2 === 0 ? "mul" : "add", y, i % 2 === 0 ? a.buffer : b.buffer, out);
      if (y !== a.buffer) be.release(y);
      y = next;
    }
    await be.read(y);
    be.release(y);
  };
  const backendChain = await sample(backendOnce, Math.max(20, Math.round(SAMPLES / 5)));

  a.dispose();
  b.dispose();
  return {
    device,
    roundTrip,
    chain,
    perOp: (chain - roundTrip) / (CHAIN - 1),
    backendChain,
    backendPerOp: (backendChain - roundTrip) / (CHAIN - 1),
  };
}

// Sanity: both devices compute the same chain (a wrong benchmark is worse than none).
{
  const run = (device: string) =>
    scope(() => {
      let y = np.array(data(1), { device });
      const a = np.array(data(1), { device });
      const b = np.array(data(2), { device });
      for (let i = 0; i < CHAIN; i++) y = (i % 2 === 0 ? np.multiply(y, a) : np.add(y, b)) as WArray;
      return y;
    });
  const c = (await run("cpu").data()) as Float32Array;
  const g = (await run(dev.id).data()) as Float32Array;
  const err = Math.max(...Array.from(c, (v, i) => Math.abs(v - g[i]!)));
  if (!(err < 1e-5)) throw new Error(`webgpu and cpu chains differ by ${err}`);
}

const rows = [await measure(dev.id), await measure("cpu")];
console.log(`float32[${N}] operands; medians of ${SAMPLES} round trips and ${Math.max(20, Math.round(SAMPLES / 5))} chains of ${CHAIN} ops`);
console.log("device     dispatch+readback   chain(np)    per op(np)   chain(backend)  per op(backend)");
for (const r of rows) {
  console.log(
    `${r.device.padEnd(10)} ${us(r.roundTrip).padStart(17)} ${us(r.chain).padStart(12)} ${us(r.perOp).padStart(12)} ${us(r.backendChain).padStart(15)} ${us(r.backendPerOp).padStart(16)}`,
  );
}
process.exit(0);
