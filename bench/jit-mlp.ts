/**
 * @file Benchmark: eager vs the jit compiler (src/ops/compile/), side by side in one run, on the WebGPU
 * device (lavapipe here; a real GPU wherever one is available) and on the CPU (Wasm fused kernels and
 * the packed GEMM; WEBGRAD_JIT=interpret shows jit's op-by-op interpreter instead).
 *
 *   npx tsx bench/jit-mlp.ts
 *   STEPS=10 BATCH=256 WIDTH=512 DEVICES=webgpu npx tsx bench/jit-mlp.ts
 *
 * (a) a 3-layer MLP training step (batch BATCH, width WIDTH, GELU, softmax cross-entropy, SGD with the
 *     params donated to the jitted step);
 * (b) one PaLM-style transformer block (parallel attention + SwiGLU feed-forward, as src/nn/palm.ts)
 *     forward + backward: the gradient of the loss of a depth-1 PaLM.
 * Reported per step: milliseconds (median of STEPS, after a warm-up that compiles), GPU dispatches,
 * kernels (jit: fused kernels; eager: one per primitive dispatch), peak memory (jit: the static plan's
 * intermediate buffers; eager: bytes of the step's intermediates alive before its scope frees them).
 * For (a) also the sum of the step's matmuls timed standalone (each jitted alone, same shapes and
 * layouts): the target is jit within 1.3x of it, and at least 3x faster than eager.
 * WEBGRAD_DEBUG=2 also prints per-kernel times of the jitted steps (profileJit).
 */
import {
  devices,
  grad,
  initWebGpu,
  jit,
  memoryStats,
  nn,
  np,
  palm,
  random,
  scope,
  tree,
  adapterInfo,
  type Value,
} from "../src/index.js";
import type { Device } from "../src/ops/array.js";
import type { WebGpuBackend } from "../src/ops/backend/webgpu/index.js";
import { debugLevel, installJitCompiler, lastJitStats, profileJit, resetJitStats } from "../src/ops/compile/index.js";

installJitCompiler();
const STEPS = Number(process.env.STEPS ?? 8);
const BATCH = Number(process.env.BATCH ?? 256);
const WIDTH = Number(process.env.WIDTH ?? 512);
const CLASSES = 10;
const want = (process.env.DEVICES ?? "webgpu,cpu").split(",");

const gpu = want.includes("webgpu") ? await initWebGpu() : null;
const devs: Device[] = [];
if (gpu) devs.push(gpu);
if (want.includes("cpu")) devs.push(devices().find((d) => d.id === "cpu")!);
if (gpu) console.log(`WebGPU adapter: ${adapterInfo()?.name} (${gpu.description})`);

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

function rand(shape: number[], seed: number, scale: number, dev: Device) {
  let s = seed;
  const n = shape.reduce((a, b) => a * b, 1);
  const d = Float32Array.from({ length: n }, () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return (s / 2147483648 - 0.5) * 2 * scale;
  });
  return np.array(d, { shape, device: dev });
}

/** Waits until the device finished everything submitted. */
async function sync(dev: Device): Promise<void> {
  if (dev.kind === "webgpu") await (dev.backend as unknown as WebGpuBackend).sync();
}

function gpuCounters(dev: Device): { dispatches: number; submits: number } {
  if (dev.kind !== "webgpu") return { dispatches: 0, submits: 0 };
  const s = (dev.backend as unknown as WebGpuBackend).stats();
  return { dispatches: s.dispatches, submits: s.submits };
}

interface Row {
  ms: number;
  dispatches: number;
  kernels: number;
  peakBytes: number;
}

/** Times `step` (which returns the next state) STEPS times after a warm-up; state threads through. */
async function timeSteps<S>(dev: Device, state: S, step: (s: S) => S, isJit: boolean): Promise<Row & { state: S }> {
  let s = step(state); // warm-up (compiles)
  s = step(s);
  await sync(dev);
  const ts: number[] = [];
  let dispatches = 0;
  let kernels = 0;
  let peakBytes = 0;
  for (let i = 0; i < STEPS; i++) {
    const c0 = gpuCounters(dev);
    const t0 = performance.now();
    resetJitStats();
    s = step(s);
    const c1 = gpuCounters(dev);
    await sync(dev);
    ts.push(performance.now() - t0);
    dispatches = c1.dispatches - c0.dispatches;
    if (isJit) {
      const st = lastJitStats();
      kernels = st?.kernels ?? 0;
      peakBytes = st?.peakBytes ?? 0;
    }
  }
  return { ms: median(ts), dispatches, kernels: isJit ? kernels : dispatches, peakBytes, state: s };
}

function print(title: string, rows: Record<string, Row | null>): void {
  console.log(`\n${title}`);
  console.log("  variant                 ms/step   dispatches   kernels   peak intermediates");
  for (const [k, r] of Object.entries(rows)) {
    if (!r) continue;
    console.log(
      `  ${k.padEnd(22)} ${r.ms.toFixed(2).padStart(8)} ${String(r.dispatches).padStart(12)} ${String(r.kernels).padStart(9)}   ${r.peakBytes ? mib(r.peakBytes) : "-"}`,
    );
  }
}

// ---------------------------------------------------------------------------------------------------
// (a) MLP training step

type Params = Record<string, Value>;
const mlpLoss = (p: Params, x: Value, labels: Value): Value => {
  const h1 = nn.gelu(np.add(np.matmul(x, p.w1!), p.b1!));
  const h2 = nn.gelu(np.add(np.matmul(h1, p.w2!), p.b2!));
  const logits = np.add(np.matmul(h2, p.w3!), p.b3!);
  const lse = np.logsumexp(logits, { axis: -1 });
  return np.mean(np.subtract(lse, np.sum(np.multiply(logits, labels), { axis: -1 })));
};
const sgd = (p: Params, x: Value, labels: Value): Params => {
  const g = grad(mlpLoss)(p, x, labels) as Params;
  return tree.map((a: Value, b: Value) => np.subtract(a, np.multiply(b, 0.01)), p, g) as Params;
};

async function benchMlp(dev: Device): Promise<void> {
  const init = (): Params => ({
    w1: rand([WIDTH, WIDTH], 1, 0.05, dev),
    b1: rand([WIDTH], 2, 0.05, dev),
    w2: rand([WIDTH, WIDTH], 3, 0.05, dev),
    b2: rand([WIDTH], 4, 0.05, dev),
    w3: rand([WIDTH, CLASSES], 5, 0.05, dev),
    b3: rand([CLASSES], 6, 0.05, dev),
  });
  const x = rand([BATCH, WIDTH], 7, 1, dev);
  const labels = nn.oneHot(
    np.array(Int32Array.from({ length: BATCH }, (_, i) => (i * 7) % CLASSES), { dtype: "int32", device: dev }),
    CLASSES,
  );
  // Eager: intermediates freed by a scope per step; the previous params are released.
  let eagerPeak = 0;
  const eager = await timeSteps(
    dev,
    init(),
    (p) => {
      const before = memoryStats(dev).liveBytes;
      let peak = 0;
      const next = scope(() => {
        const n = sgd(p, x, labels);
        peak = memoryStats(dev).liveBytes - before;
        return n;
      });
      eagerPeak = peak;
      tree.map((a: Value) => (a as unknown as { dispose(): void }).dispose(), p);
      return next;
    },
    false,
  );
  eager.peakBytes = eagerPeak;
  const step = jit(sgd, { donateArgnums: 0 });
  const jitted = await timeSteps(dev, init(), (p) => step(p, x, labels), true);
  if (debugLevel() >= 2 && dev.kind === "webgpu") await profileJit(sgd, init(), x, labels);
  // The step's matmuls standalone (each in its own jit, operands in the layouts the step uses).
  let matmulMs = 0;
  if (dev.kind === "webgpu") {
    const shapes: [number[], number[], boolean, boolean][] = [
      [[BATCH, WIDTH], [WIDTH, WIDTH], false, false],
      [[BATCH, WIDTH], [WIDTH, WIDTH], false, false],
      [[BATCH, WIDTH], [WIDTH, CLASSES], false, false],
      [[WIDTH, BATCH], [BATCH, CLASSES], true, false], // dW3 = h2ᵀ g
      [[BATCH, CLASSES], [CLASSES, WIDTH], false, true], // dh2 = g W3ᵀ
      [[WIDTH, BATCH], [BATCH, WIDTH], true, false], // dW2
      [[BATCH, WIDTH], [WIDTH, WIDTH], false, true], // dh1
      [[WIDTH, BATCH], [BATCH, WIDTH], true, false], // dW1
    ];
    for (const [sa, sb, ta, tb] of shapes) {
      const a = rand(ta ? [sa[1]!, sa[0]!] : sa, 11, 0.1, dev);
      const b = rand(tb ? [sb[1]!, sb[0]!] : sb, 12, 0.1, dev);
      const mm = jit((u: Value, v: Value) => np.matmul(ta ? np.transpose(u) : u, tb ? np.transpose(v) : v));
      const r = await timeSteps(dev, null as unknown as Value, (prev) => {
        if (prev) (prev as unknown as { dispose(): void }).dispose();
        return mm(a, b);
      }, true);
      matmulMs += r.ms;
    }
  }
  print(`(a) MLP training step on ${dev.id}: batch ${BATCH}, width ${WIDTH}, 3 layers, GELU, softmax cross-entropy, SGD`, {
    eager,
    "jit (compiled)": jitted,
  });
  const speedup = eager.ms / jitted.ms;
  console.log(`  jit speed-up over eager: ${speedup.toFixed(2)}x (target >= 3x on WebGPU)`);
  if (matmulMs > 0) {
    console.log(
      `  the step's 8 matmuls standalone: ${matmulMs.toFixed(2)} ms; jit step / matmuls = ${(jitted.ms / matmulMs).toFixed(2)} (target <= 1.3)`,
    );
  }
}

// ---------------------------------------------------------------------------------------------------
// (b) PaLM block forward + backward

async function benchPalm(dev: Device): Promise<void> {
  const config = { numTokens: 256, dim: Number(process.env.PALM_DIM ?? 256), depth: 1, heads: 4, dimHead: 64 };
  const seq = Number(process.env.PALM_SEQ ?? 128);
  const batch = Number(process.env.PALM_BATCH ?? 4);
  const cpuParams = palm.init(random.key(0), config);
  const params = tree.map((a: Value) => np.array((a as unknown as { dataSync(): Float32Array }).dataSync(), { shape: a.shape, device: dev }), cpuParams);
  const tokens = np.array(Int32Array.from({ length: batch * seq }, (_, i) => (i * 31 + 7) % config.numTokens), {
    shape: [batch, seq],
    dtype: "int32",
    device: dev,
  });
  const g = (p: palm.PalmParams, t: Value) => grad((q: palm.PalmParams) => palm.loss(q, t, { config }))(p);
  let eagerPeak = 0;
  const eager = await timeSteps(
    dev,
    null as unknown,
    (prev) => {
      if (prev) tree.map((a: Value) => (a as unknown as { dispose(): void }).dispose(), prev);
      const before = memoryStats(dev).liveBytes;
      return scope(() => {
        const out = g(params as palm.PalmParams, tokens);
        eagerPeak = memoryStats(dev).liveBytes - before;
        return out;
      });
    },
    false,
  );
  eager.peakBytes = eagerPeak;
  const jg = jit(g);
  if (debugLevel() >= 2 && dev.kind === "webgpu") await profileJit(g, params, tokens);
  const jitted = await timeSteps(
    dev,
    null as unknown,
    (prev) => {
      if (prev) tree.map((a: Value) => (a as unknown as { dispose(): void }).dispose(), prev);
      return jg(params as palm.PalmParams, tokens);
    },
    true,
  );
  print(`(b) PaLM block forward + backward on ${dev.id}: dim ${config.dim}, ${config.heads} heads, seq ${seq}, batch ${batch}`, {
    eager,
    "jit (compiled)": jitted,
  });
  console.log(`  jit speed-up over eager: ${(eager.ms / jitted.ms).toFixed(2)}x`);
}

for (const dev of devs) {
  await benchMlp(dev);
  await benchPalm(dev);
}
process.exit(0);
