/**
 * @file Benchmark: float32 matmul GFLOP/s at 256, 512, 1024 and 2048, and elementwise add of 16M floats
 * in GB/s (bytes read + written), on the WebGPU device and on the CPU backend in the same run.
 *
 *   npx tsx bench/webgpu-matmul.ts            # all sizes
 *   npx tsx bench/webgpu-matmul.ts 1024       # one size
 *
 * GPU timings submit `reps` products back to back and wait once (`backend.sync()`), after one warm-up
 * call that compiles the pipelines; CPU timings run the products one after the other. Inputs stay on the
 * device; nothing is read back inside the timed region. Each figure is the best of TRIALS (default 5)
 * timed trials, since the 2-core development machines are shared and single samples vary by 2x.
 */
import { cpuBackend } from "../src/ops/backend/cpu/index.js";
import type { DotDims } from "../src/ops/backend/kernel.js";
import { adapterInfo, initWebGpu, webGpuUnavailableReason, type WebGpuBackend } from "../src/ops/backend/webgpu/index.js";

const dev = await initWebGpu();
if (!dev) {
  console.log(`no WebGPU adapter: ${webGpuUnavailableReason()}`);
  process.exit(1);
}
const gpu = dev.backend as unknown as WebGpuBackend;
const cpu = cpuBackend;
console.log(`WebGPU adapter: ${adapterInfo()?.name} (software: ${adapterInfo()?.isSoftware})`);

const DIMS: DotDims = { contracting: [[1], [0]], batch: [[], []] };
const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);

function random(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1;
  return a;
}

const TRIALS = Number(process.env.TRIALS ?? 5);

/** Best seconds per call of `f` on the GPU: `reps` calls encoded and submitted, one wait. */
async function timeGpu(f: () => unknown, reps: number): Promise<number> {
  f();
  await gpu.sync(); // warm-up: pipeline compiles
  let best = Infinity;
  for (let t = 0; t < TRIALS; t++) {
    const t0 = performance.now();
    for (let r = 0; r < reps; r++) f();
    await gpu.sync();
    best = Math.min(best, (performance.now() - t0) / 1000 / reps);
  }
  return best;
}

function timeCpu(f: () => unknown, reps: number): number {
  f();
  let best = Infinity;
  for (let t = 0; t < TRIALS; t++) {
    const t0 = performance.now();
    for (let r = 0; r < reps; r++) f();
    best = Math.min(best, (performance.now() - t0) / 1000 / reps);
  }
  return best;
}

const row = (cells: (string | number)[]): string => cells.map((c) => String(c).padStart(12)).join("");
console.log(row(["matmul n", "webgpu GF/s", "cpu GF/s", "gpu/cpu"]));
for (const n of sizes.length ? sizes : [256, 512, 1024, 2048]) {
  const out = { shape: [n, n], dtype: "float32" as const };
  const a = random(n * n);
  const b = random(n * n);
  const ga = gpu.fromHost(a, out);
  const gb = gpu.fromHost(b, out);
  const ca = cpu.fromHost(a, out);
  const cb = cpu.fromHost(b, out);
  const flops = 2 * n * n * n;
  const reps = Math.max(1, Math.round(1e9 / flops));
  const made: unknown[] = [];
  const tg = await timeGpu(() => {
    made.push(gpu.dotGeneral(ga, gb, DIMS, out));
    if (made.length > reps) gpu.release(made.shift() as never);
  }, reps);
  for (const h of made) gpu.release(h as never);
  const tc = timeCpu(() => cpu.dotGeneral(ca, cb, DIMS, out), Math.max(1, Math.round(reps / 4)));
  console.log(row([n, (flops / tg / 1e9).toFixed(2), (flops / tc / 1e9).toFixed(2), (tc / tg).toFixed(2)]));
  gpu.release(ga);
  gpu.release(gb);
}

{
  const n = 16 * 1024 * 1024;
  const out = { shape: [n], dtype: "float32" as const };
  const a = random(n);
  const b = random(n);
  const ga = gpu.fromHost(a, out);
  const gb = gpu.fromHost(b, out);
  const ca = cpu.fromHost(a, out);
  const cb = cpu.fromHost(b, out);
  const bytes = 3 * 4 * n;
  const made: unknown[] = [];
  const tg = await timeGpu(() => {
    const h = gpu.binary("add", ga, gb, out);
    made.push(h);
    if (made.length > 2) gpu.release(made.shift() as never);
  }, 10);
  const tc = timeCpu(() => cpu.binary("add", ca, cb, out), 5);
  console.log(row(["add 16M", "webgpu GB/s", "cpu GB/s", "gpu/cpu"]));
  console.log(row(["", (bytes / tg / 1e9).toFixed(2), (bytes / tc / 1e9).toFixed(2), (tc / tg).toFixed(2)]));
}
process.exit(0);
