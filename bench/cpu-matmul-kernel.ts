/**
 * @file Benchmark of the CPU backend's dot_general kernel alone (no tracing, no dispatch): GFLOP/s of
 * float32 square products at 256, 512 and 1024, plus a transposed-operand and a batched case.
 * Run with `npx tsx bench/cpu-matmul-kernel.ts`. Timings live here, never in tests.
 */
import type { DotDims } from "../src/ops/backend/kernel.js";
import { cpuBackend, type CpuBuffer } from "../src/ops/backend/cpu/index.js";

const cpu = cpuBackend;

function randomMatrix(shape: readonly number[]): CpuBuffer {
  const size = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = Math.random() * 2 - 1;
  return cpu.fromHost(data, { shape, dtype: "float32" });
}

/** Median seconds per call over repeated runs (at least `minSeconds` of measuring, after a warm-up). */
function timeIt(fn: () => void, minSeconds = 1.5): number {
  fn();
  const times: number[] = [];
  const start = performance.now();
  while (performance.now() - start < minSeconds * 1000 || times.length < 3) {
    const t0 = performance.now();
    fn();
    times.push((performance.now() - t0) / 1000);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

function bench(label: string, x: CpuBuffer, y: CpuBuffer, dims: DotDims, outShape: number[], flops: number): void {
  const out = { shape: outShape, dtype: "float32" as const };
  const seconds = timeIt(() => cpu.release(cpu.dotGeneral(x, y, dims, out)));
  const gflops = flops / seconds / 1e9;
  const ms = (seconds * 1000).toFixed(2).padStart(9);
  console.log(`${label.padEnd(34)} ${ms} ms  ${gflops.toFixed(2).padStart(6)} GFLOP/s`);
}

const matmul: DotDims = { contracting: [[1], [0]], batch: [[], []] };
for (const n of [256, 512, 1024]) {
  const a = randomMatrix([n, n]);
  const b = randomMatrix([n, n]);
  bench(`f32 [${n},${n}] x [${n},${n}]`, a, b, matmul, [n, n], 2 * n ** 3);
}
{
  const n = 512;
  const a = randomMatrix([n, n]);
  const b = randomMatrix([n, n]);
  const tb = cpu.transpose(b, [1, 0]); // a strided view: rhs contracting on its dim 1, no copy
  bench(`f32 [${n},${n}] x [${n},${n}]^T (view)`, a, tb, matmul, [n, n], 2 * n ** 3);
}
{
  const [bsz, m, k, n] = [16, 128, 64, 128];
  const a = randomMatrix([bsz, m, k]);
  const b = randomMatrix([bsz, k, n]);
  const dims: DotDims = { contracting: [[2], [1]], batch: [[0], [0]] };
  bench(`f32 batched [${bsz},${m},${k}] x [${bsz},${k},${n}]`, a, b, dims, [bsz, m, n], 2 * bsz * m * k * n);
}
