/**
 * @file Eager dispatch overhead on small arrays: µs per op and the share of that time spent in garbage
 * collection, for the common eager patterns (array ⊕ JS number, array ⊕ array, unary math, a reduction,
 * the same under `scope()`). Read bench/cpu.ts for the matmul side.
 *
 * Run: `npx tsx bench/eager-overhead.ts` (or on the built library: `node dist/bench/eager-overhead.js`).
 * A/B against another checkout of the sources without touching git: `WEBGRAD_SRC=/path/to/src/index.ts`
 * loads the library from there; compare runs taken close together, with their load averages.
 * `BENCH_MS` sets the time per case (default 400 ms), `BENCH_ROUNDS` the repetitions (median is kept),
 * `BENCH_LONG` the length of the final no-yield loop (default 300000; 0 skips it), `BENCH_ONLY` a
 * substring of the cases to run.
 *
 * The timings are noisy on a shared machine; the heap bytes allocated per op are not. Run with a young
 * generation large enough that a burst never collects, and the bench prints them too:
 * `node --max-semi-space-size=128 --min-semi-space-size=128 --import tsx bench/eager-overhead.ts`
 * (a burst that did see a GC prints "-").
 *
 * Measured on the 2-core shared machine (load 1.6-2.3), before -> after the eager-path work (medians of
 * five alternating runs of esbuild bundles of both versions), µs per op and GC share:
 *   np.add(y, 1) f32[]          3.69 -> 0.96  (30% -> 14%)    np.multiply(y, 0.5) f32[16]  8.85 -> 2.44
 *   np.add(y, one) f32[]        2.38 -> 0.85  (45% -> 13%)    np.sum(y) + y f32[16]        6.28 -> 2.60
 *   np.multiply(y, w) f32[16]   2.75 -> 1.21                  np.add(y, one) in scope()    1.97 -> 0.61
 *   np.tanh(y) f32[16]          2.80 -> 1.16                  MLP f32[1,64] (6 ops)       10.01 -> 5.49
 *   300k np.add(y, 1) in one synchronous loop 3.78 -> 1.05 (27% -> 13%)
 */
import { loadavg } from "node:os";
import { getHeapStatistics } from "node:v8";
import { PerformanceObserver } from "node:perf_hooks";
import { pathToFileURL } from "node:url";

type Lib = typeof import("../src/index.js");
const src = process.env.WEBGRAD_SRC;
const lib: Lib = src ? await import(pathToFileURL(src).href) : await import("../src/index.js");
const { np, scope, memoryStats } = lib;
type V = ReturnType<typeof np.add>;

// Total GC pause time (ms) observed so far; the observer delivers entries asynchronously, so the
// harness yields to the event loop after each round before reading it.
let gcMs = 0;
let gcCount = 0;
const obs = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    gcMs += e.duration;
    gcCount++;
  }
});
obs.observe({ entryTypes: ["gc"] });
const tick = () => new Promise<void>((r) => setImmediate(r));

interface Result {
  usPerOp: number;
  gcShare: number;
}

/** Runs `body` (which performs `opsPerCall` ops) repeatedly for `ms`; µs/op and GC share of the time. */
async function measure(body: () => void, opsPerCall: number, ms: number): Promise<Result> {
  for (let i = 0; i < 50; i++) body(); // warm-up (JIT tiers)
  await tick();
  const gc0 = gcMs;
  let n = 0;
  const t0 = performance.now();
  let t = t0;
  do {
    for (let i = 0; i < 20; i++) body();
    n += 20;
    t = performance.now();
  } while (t - t0 < ms);
  await tick();
  await tick();
  const total = t - t0;
  return { usPerOp: (total * 1000) / (n * opsPerCall), gcShare: (gcMs - gc0) / total };
}

/** Heap bytes allocated per op over a short burst, or NaN when a GC ran during it. */
async function bytesPerOp(body: () => void, opsPerCall: number): Promise<number> {
  for (let i = 0; i < 20; i++) body();
  await tick();
  await tick();
  const c0 = gcCount;
  const h0 = getHeapStatistics().used_heap_size;
  const calls = 20;
  for (let i = 0; i < calls; i++) body();
  const h1 = getHeapStatistics().used_heap_size;
  await tick();
  await tick();
  return gcCount === c0 ? (h1 - h0) / (calls * opsPerCall) : NaN;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const CHAIN = 100;
const s = np.array(1); // f32[]
const one = np.array(1); // f32[]
const v16 = np.array(new Float32Array(16).fill(0.5)); // f32[16]
const w16 = np.array(new Float32Array(16).fill(0.25));
const m64 = np.array(new Float32Array(64 * 64).fill(0.5), { shape: [64, 64] });

const w64 = np.array(new Float32Array(64 * 64).fill(0.01), { shape: [64, 64] });
const b64 = np.array(new Float32Array(64).fill(0.1));
const h64 = np.array(new Float32Array(64).fill(0.5), { shape: [1, 64] });

const cases: [string, () => void, number][] = [
  [
    "np.add(y, 1)         f32[]",
    () => {
      let y: V = s;
      for (let i = 0; i < CHAIN; i++) y = np.add(y, 1);
    },
    CHAIN,
  ],
  [
    "np.add(y, one)       f32[]",
    () => {
      let y: V = s;
      for (let i = 0; i < CHAIN; i++) y = np.add(y, one);
    },
    CHAIN,
  ],
  [
    "np.multiply(y, w)    f32[16]",
    () => {
      let y: V = v16;
      for (let i = 0; i < CHAIN; i++) y = np.multiply(y, w16);
    },
    CHAIN,
  ],
  [
    "np.multiply(y, 0.5)  f32[16]",
    () => {
      let y: V = v16;
      for (let i = 0; i < CHAIN; i++) y = np.multiply(y, 0.5);
    },
    CHAIN,
  ],
  [
    "np.tanh(y)           f32[16]",
    () => {
      let y: V = v16;
      for (let i = 0; i < CHAIN; i++) y = np.tanh(y);
    },
    CHAIN,
  ],
  [
    "np.sum(y) + y        f32[16]",
    () => {
      let y: V = v16;
      for (let i = 0; i < CHAIN / 2; i++) y = np.add(y, np.sum(y));
    },
    CHAIN, // sum, then broadcast-add: ~2 user ops per step
  ],
  [
    "np.add(y, one) in scope()",
    () =>
      scope(() => {
        let y: V = s;
        for (let i = 0; i < CHAIN; i++) y = np.add(y, one);
        return y;
      }),
    CHAIN,
  ],
  [
    "np.add(m, m)         f32[64,64]",
    () => {
      let y: V = m64;
      for (let i = 0; i < 10; i++) y = np.add(y, m64);
    },
    10,
  ],
  [
    "MLP tanh(h·W + b) ×2  f32[1,64]",
    () => {
      let h: V = h64;
      for (let i = 0; i < 2; i++) h = np.tanh(np.add(np.matmul(h, w64), b64));
    },
    6, // matmul, add (with a broadcast of b), tanh per layer
  ],
];

const ms = Number(process.env.BENCH_MS ?? 400);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const only = process.env.BENCH_ONLY;
console.log(`eager dispatch overhead (${src ?? "this checkout"}), load average ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);
console.log("  case                               µs/op    GC share   heap B/op");
for (const [name, body, ops] of cases) {
  if (only && !name.includes(only)) continue;
  const rs: Result[] = [];
  for (let r = 0; r < rounds; r++) rs.push(await measure(body, ops, ms));
  const us = median(rs.map((r) => r.usPerOp));
  const gc = median(rs.map((r) => r.gcShare));
  const bytes = await bytesPerOp(body, ops);
  const b = Number.isNaN(bytes) ? "-" : bytes.toFixed(0);
  console.log(`  ${name.padEnd(34)} ${us.toFixed(2).padStart(6)}   ${(gc * 100).toFixed(0).padStart(5)}%   ${b.padStart(9)}`);
}
// One long synchronous loop, as an eager generation loop without awaits runs: nothing yields to the
// event loop, so whatever the GC safety net keeps alive until its callbacks run piles up meanwhile.
const LONG = Number(process.env.BENCH_LONG ?? 300_000);
if (LONG > 0 && !only) {
  for (const [label, rhs] of [["np.add(y, 1)", 1], ["np.add(y, one)", one]] as const) {
    await tick();
    const gc0 = gcMs;
    const t0 = performance.now();
    let y: V = s;
    for (let i = 0; i < LONG; i++) y = np.add(y, rhs);
    const total = performance.now() - t0;
    await tick();
    await tick();
    const line = `${LONG / 1000}k × ${label}, no yield`;
    console.log(`  ${line.padEnd(34)} ${((total * 1000) / LONG).toFixed(2).padStart(6)}   ${(((gcMs - gc0) / total) * 100).toFixed(0).padStart(5)}%`);
  }
}
// Everything above is garbage now; after a full collection only the fixtures may still be live.
await tick();
const gc = (globalThis as { gc?: () => void }).gc;
if (gc) {
  gc();
  await tick();
  await tick();
  console.log(`  live arrays after gc(): ${memoryStats().liveArrays}`);
}
obs.disconnect();
