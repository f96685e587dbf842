/**
 * @file webgrad's CPU backend against its peers, all in the same run on the same machine:
 * onnxruntime-node (2 intra-op threads), tfjs-backend-wasm (SIMD), jax-js (its Wasm backend).
 * Three sections (Markdown tables):
 * - `matmul`: float32 matmul GFLOP/s at n x n squares (webgrad through `np.matmul`, Wasm SIMD kernels
 *   on all threads), with ratios to onnxruntime-node;
 * - `mlp`: one training step of a 3-layer MLP (batch 256, width 512, GELU (tanh form), mean-squared
 *   error, SGD), the whole step (forward, grad, update) under `jit`, in ms per step: webgrad and jax-js
 *   (Wasm device, its own jit);
 * - `add`: elementwise add of two 16M-element float32 arrays in GB/s (3 x 64 MiB moved per add).
 *
 * Run: `cd bench && npm ci && npx tsx cpu-peers.ts [sizes...] [--only=matmul,mlp,add]` (default sizes
 * 256 512 1024 2048, all sections). The peers
 * are installed in bench/ only (`ONNXRUNTIME_NODE_INSTALL=skip` is fine: the CPU binaries ship inside
 * the npm package). A peer that fails to load is reported as "n/a" with the reason.
 *
 * Peers are timed in interleaved rounds (ROUNDS rounds of ~ROUND_MS per peer, after 2 warm-up runs),
 * so that load from other processes hits all of them alike. Each cell is the median over rounds of
 * the round's best run, and (in parentheses) the best run overall; every run includes getting the
 * result back as a host Float32Array. On a shared machine the median moves with other load, the best
 * much less.
 */
import { configureCpuWasm, cpuWasmInfo, cpuWasmOptions, shutdownCpuWasmPool } from "../src/ops/backend/cpu/wasm/index.js";
import { dispose, grad, jit, nn, np, tree } from "../src/index.js";
import { installJitCompiler, uninstallJitCompiler } from "../src/ops/compile/index.js";
import { installCpuJitTarget } from "../src/ops/backend/cpu/compile/index.js";
import type { Array as WArray, Value } from "../src/index.js";

type Runner = () => Promise<Float32Array | ArrayLike<number>>;
interface Peer {
  name: string;
  /** Builds a runner for n x n operands (host data given), or throws. */
  setup(n: number, a: Float32Array, b: Float32Array): Promise<Runner>;
  close?(): Promise<void>;
}

/**
 * Imports a peer installed in bench/node_modules. The specifier goes through a variable so that the
 * root type-check (which does not install the peers) does not resolve it; each use site states the
 * slice of the peer's API it relies on.
 */
async function importPeer<T>(name: string): Promise<T> {
  return (await import(name)) as T;
}

interface OrtTensor {
  readonly data: unknown;
}
interface Ort {
  InferenceSession: {
    create(model: Uint8Array, options: object): Promise<{
      run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
      release(): Promise<void>;
    }>;
  };
  Tensor: new (type: "float32", data: Float32Array, dims: number[]) => OrtTensor;
}
interface TfTensor {
  dataSync(): unknown;
  dispose(): void;
}
interface Tf {
  setBackend(name: string): Promise<boolean>;
  ready(): Promise<void>;
  tensor2d(data: Float32Array, shape: [number, number]): TfTensor;
  matMul(a: TfTensor, b: TfTensor): TfTensor;
}
interface JaxArray {
  readonly ref: JaxArray;
  reshape(shape: number[]): JaxArray;
  data(): Promise<unknown>;
}
interface Jax {
  init(): Promise<string[]>;
  defaultDevice(device: string): void;
  numpy: { array(data: Float32Array): JaxArray; matmul(a: JaxArray, b: JaxArray): JaxArray };
}

const argv = process.argv.slice(2);
const sizes = argv.map(Number).filter((n) => n > 0);
const only = argv.find((a) => a.startsWith("--only="))?.slice("--only=".length).split(",");
const SECTIONS = new Set(only ?? ["matmul", "mlp", "add"]);
const SIZES = sizes.length > 0 ? sizes : [256, 512, 1024, 2048];
const ORT_THREADS = 2;
/** Interleaved timing rounds per size, and the time per peer per round. */
const ROUNDS = 7;
const ROUND_MS = 250;

function rand(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 2 ** 32 - 0.5;
  }
  return a;
}

/**
 * Times several runners in interleaved rounds (each round: every runner for ~ROUND_MS, at least one
 * run), so that load from other processes on a shared machine hits all peers alike. Per runner:
 * the median over rounds of the round's best run, and the best run overall, as GFLOP/s.
 */
async function measureInterleaved(
  runs: readonly (Runner | null)[], flops: number,
): Promise<({ median: number; best: number } | undefined)[]> {
  const g = (ms: number): number => flops / ms / 1e6;
  // The fastest time is the highest rate: median and best carry over through g.
  return (await timeInterleaved(runs)).map((t) => t && { median: g(t.median), best: g(t.best) });
}

/** A minimal ONNX model: Y = MatMul(A, B) with symbolic dims (hand-encoded protobuf). */
function onnxMatmulModel(): Uint8Array {
  const out: number[] = [];
  const varint = (v: number, o: number[]): void => {
    while (v > 127) {
      o.push((v & 127) | 128);
      v = Math.floor(v / 128);
    }
    o.push(v);
  };
  const field = (num: number, wire: number, o: number[]): void => varint(num * 8 + wire, o);
  const bytes = (num: number, body: number[] | string, o: number[]): void => {
    const b = typeof body === "string" ? [...new TextEncoder().encode(body)] : body;
    field(num, 2, o);
    varint(b.length, o);
    o.push(...b);
  };
  const int = (num: number, v: number, o: number[]): void => {
    field(num, 0, o);
    varint(v, o);
  };
  const valueInfo = (name: string, dims: string[]): number[] => {
    const shape: number[] = [];
    for (const d of dims) {
      const dim: number[] = [];
      bytes(2, d, dim); // dim_param
      bytes(1, dim, shape);
    }
    const tensor: number[] = [];
    int(1, 1, tensor); // elem_type FLOAT
    bytes(2, shape, tensor);
    const type: number[] = [];
    bytes(1, tensor, type);
    const vi: number[] = [];
    bytes(1, name, vi);
    bytes(2, type, vi);
    return vi;
  };
  const node: number[] = [];
  bytes(1, "A", node);
  bytes(1, "B", node);
  bytes(2, "Y", node);
  bytes(3, "matmul", node);
  bytes(4, "MatMul", node);
  const graph: number[] = [];
  bytes(1, node, graph);
  bytes(2, "g", graph);
  bytes(11, valueInfo("A", ["M", "K"]), graph);
  bytes(11, valueInfo("B", ["K", "N"]), graph);
  bytes(12, valueInfo("Y", ["M", "N"]), graph);
  const opset: number[] = [];
  bytes(1, "", opset);
  int(2, 13, opset);
  int(1, 8, out); // ir_version
  bytes(7, graph, out);
  bytes(8, opset, out);
  return new Uint8Array(out);
}

const webgrad: Peer = {
  name: "webgrad",
  async setup(n, a, b) {
    const x = np.array(a, { shape: [n, n] });
    const y = np.array(b, { shape: [n, n] });
    return async () => {
      const z = np.matmul(x, y) as WArray;
      const d = z.dataSync() as Float32Array;
      z.dispose();
      return d;
    };
  },
};

const webgrad1: Peer = {
  name: "webgrad 1 thread",
  async setup(n, a, b) {
    const run = await webgrad.setup(n, a, b);
    return async () => {
      // Every product below `parallelMinMacs` runs on the main thread alone.
      const saved = cpuWasmOptions.parallelMinMacs;
      configureCpuWasm({ parallelMinMacs: Infinity });
      try {
        return await run();
      } finally {
        configureCpuWasm({ parallelMinMacs: saved });
      }
    };
  },
};

async function ortPeer(): Promise<Peer> {
  const ort = await importPeer<Ort>("onnxruntime-node");
  const session = await ort.InferenceSession.create(onnxMatmulModel(), {
    intraOpNumThreads: ORT_THREADS,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
  });
  return {
    name: `onnxruntime-node (${ORT_THREADS} thr)`,
    async setup(n, a, b) {
      const ta = new ort.Tensor("float32", a, [n, n]);
      const tb = new ort.Tensor("float32", b, [n, n]);
      return async () => {
        const r = await session.run({ A: ta, B: tb });
        return r["Y"]!.data as Float32Array;
      };
    },
    async close() {
      await session.release();
    },
  };
}

async function tfjsPeer(): Promise<Peer> {
  const tf = await importPeer<Tf>("@tensorflow/tfjs-core");
  await importPeer<unknown>("@tensorflow/tfjs-backend-wasm");
  if (!(await tf.setBackend("wasm"))) throw new Error("tf.setBackend('wasm') failed");
  await tf.ready();
  return {
    name: "tfjs-backend-wasm",
    async setup(n, a, b) {
      const ta = tf.tensor2d(a, [n, n]);
      const tb = tf.tensor2d(b, [n, n]);
      return async () => {
        const c = tf.matMul(ta, tb);
        const d = c.dataSync() as Float32Array;
        c.dispose();
        return d;
      };
    },
  };
}

async function jaxPeer(): Promise<Peer> {
  // jax-js reads `navigator` (hardwareConcurrency) at load; Node 20 has no global navigator (21+ does).
  const g = globalThis as { navigator?: object };
  if (g.navigator === undefined) {
    const { availableParallelism } = await import("node:os");
    g.navigator = { hardwareConcurrency: availableParallelism(), userAgent: `Node.js/${process.version}` };
  }
  const jax = await importPeer<Jax>("@jax-js/jax");
  const devices = await jax.init();
  if (!devices.includes("wasm")) throw new Error(`no wasm device (have ${devices.join(", ")})`);
  jax.defaultDevice("wasm");
  const jnp = jax.numpy;
  return {
    name: "jax-js (wasm)",
    async setup(n, a, b) {
      const ja = jnp.array(a).reshape([n, n]);
      const jb = jnp.array(b).reshape([n, n]);
      return async () => {
        // jax-js consumes its arguments: `.ref` keeps the operands alive across runs.
        const c = jnp.matmul(ja.ref, jb.ref);
        return (await c.data()) as Float32Array;
      };
    },
  };
}

async function matmulSection(peers: Peer[]): Promise<void> {
  const results = new Map<string, Map<number, { median: number; best: number }>>();
  for (const n of SIZES) {
    const a = rand(n * n, 1);
    const b = rand(n * n, 2);
    // Every peer's product is checked against the first one's (loose: float32 sums in any order).
    let ref: Float32Array | null = null;
    const runs: (Runner | null)[] = [];
    for (const p of peers) {
      try {
        const run = await p.setup(n, a, b);
        const c = await run();
        if (ref === null) ref = Float32Array.from(c as ArrayLike<number>);
        else {
          let err = 0;
          for (let i = 0; i < ref.length; i += 97) err = Math.max(err, Math.abs(ref[i]! - (c[i] as number)));
          if (!(err < 1e-3 * Math.sqrt(n))) throw new Error(`${p.name} disagrees with webgrad at n=${n}: ${err}`);
        }
        runs.push(run);
      } catch (e) {
        console.log(`${p.name} n=${n}: ${String(e).split("\n")[0]}`);
        runs.push(null);
      }
    }
    const measured = await measureInterleaved(runs, 2 * n * n * n);
    peers.forEach((p, i) => {
      const row = results.get(p.name) ?? new Map<number, { median: number; best: number }>();
      results.set(p.name, row);
      const v = measured[i];
      if (v !== undefined) row.set(n, v);
    });
  }
  for (const p of peers) await p.close?.();

  const ortName = peers.find((p) => p.name.startsWith("onnxruntime"))?.name;
  const fmt = (v: { median: number; best: number } | undefined): string =>
    v === undefined ? "n/a" : `${v.median.toFixed(1)} (${v.best.toFixed(1)})`;
  console.log("\nfloat32 matmul, GFLOP/s: median over rounds of each round's best run (best run overall)");
  console.log(`| n | ${peers.map((p) => p.name).join(" | ")} | webgrad / ${ortName ?? "onnxruntime"} |`);
  console.log(`|---|${peers.map(() => "---").join("|")}|---|`);
  for (const n of SIZES) {
    const w = results.get("webgrad")?.get(n);
    const o = ortName ? results.get(ortName)?.get(n) : undefined;
    const ratio = w && o ? `${(w.median / o.median).toFixed(2)}x (best ${(w.best / o.best).toFixed(2)}x)` : "n/a";
    console.log(`| ${n} | ${peers.map((p) => fmt(results.get(p.name)?.get(n))).join(" | ")} | ${ratio} |`);
  }
  console.log("\nratios webgrad / peer (medians):");
  for (const n of SIZES) {
    const w = results.get("webgrad")?.get(n);
    const parts = peers
      .filter((p) => p.name !== "webgrad")
      .map((p) => {
        const v = results.get(p.name)?.get(n);
        return `${p.name} ${w && v ? (w.median / v.median).toFixed(2) + "x" : "n/a"}`;
      });
    console.log(`  n=${n}: ${parts.join(", ")}`);
  }
}

// ---- MLP training step and elementwise add ----

/** Median and best of `ms` per run, timing each runner in interleaved rounds (as for matmul). */
async function timeInterleaved(runs: readonly (Runner | null)[], rounds = ROUNDS): Promise<({ median: number; best: number } | undefined)[]> {
  for (const run of runs) {
    if (run === null) continue;
    await run();
    await run();
  }
  const perRound: number[][] = runs.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < runs.length; i++) {
      const run = runs[i];
      if (run === null || run === undefined) continue;
      let best = Infinity;
      const start = performance.now();
      do {
        const t0 = performance.now();
        await run();
        best = Math.min(best, performance.now() - t0);
      } while (performance.now() - start < ROUND_MS);
      perRound[i]!.push(best);
    }
  }
  return perRound.map((ts) => {
    if (ts.length === 0) return undefined;
    const sorted = [...ts].sort((x, y) => x - y);
    return { median: sorted[Math.floor(sorted.length / 2)]!, best: sorted[0]! };
  });
}

const MLP_BATCH = 256;
const MLP_WIDTH = 512;
const MLP_LR = 0.01;

/** Host data of the MLP: three [W, W] weights (scaled 1/sqrt(W)), zero biases, inputs and targets. */
function mlpData(): { w: Float32Array[]; x: Float32Array; y: Float32Array } {
  const w = [1, 2, 3].map((s) => rand(MLP_WIDTH * MLP_WIDTH, s).map((v) => (2 * v) / Math.sqrt(MLP_WIDTH)));
  return { w, x: rand(MLP_BATCH * MLP_WIDTH, 4), y: rand(MLP_BATCH * MLP_WIDTH, 5) };
}

/**
 * webgrad's step: params -> params - lr * grad(loss), all under one `jit`. Returns a runner of one step.
 * `compiled`: the jit compiler with the CPU target (fused kernels, static buffers, params donated);
 * else jit's interpreter (op by op), switched per run so both are timed in the same process.
 */
function webgradMlp(threads1: boolean, compiled = true): Runner {
  const { w, x: xh, y: yh } = mlpData();
  const W = MLP_WIDTH;
  type P = Record<"w1" | "b1" | "w2" | "b2" | "w3" | "b3", Value>;
  let params: P = {
    w1: np.array(w[0]!, { shape: [W, W] }), b1: np.zeros([W]),
    w2: np.array(w[1]!, { shape: [W, W] }), b2: np.zeros([W]),
    w3: np.array(w[2]!, { shape: [W, W] }), b3: np.zeros([W]),
  };
  const x = np.array(xh, { shape: [MLP_BATCH, W] });
  const y = np.array(yh, { shape: [MLP_BATCH, W] });
  const loss = (p: P, x: Value, y: Value): Value => {
    let h = nn.gelu(np.add(np.matmul(x, p.w1), p.b1)); // [batch, width]
    h = nn.gelu(np.add(np.matmul(h, p.w2), p.b2));
    const o = np.add(np.matmul(h, p.w3), p.b3);
    return np.mean(np.square(np.subtract(o, y)));
  };
  const step = jit(
    (p: P, x: Value, y: Value): P => {
      const g = grad(loss)(p, x, y) as P;
      return tree.map((a: Value, b: Value) => np.subtract(a, np.multiply(MLP_LR, b)), p, g) as P;
    },
    compiled ? { donateArgnums: 0 } : {},
  );
  return async () => {
    const saved = cpuWasmOptions.parallelMinMacs;
    if (threads1) configureCpuWasm({ parallelMinMacs: Infinity });
    if (compiled) {
      installCpuJitTarget();
      installJitCompiler();
    } else uninstallJitCompiler();
    try {
      const next = step(params, x, y);
      if (!compiled) dispose(params);
      params = next;
      return (params.b3 as WArray).dataSync() as Float32Array;
    } finally {
      configureCpuWasm({ parallelMinMacs: saved });
      uninstallJitCompiler();
    }
  };
}

interface JaxFull extends Jax {
  jit<F>(f: F): F;
  grad<F>(f: F): F;
  nn: { gelu(x: JaxArray): JaxArray };
  tree: { ref<T>(t: T): T; map<T>(f: (...xs: JaxArray[]) => JaxArray, ...trees: T[]): T };
  numpy: Jax["numpy"] & {
    add(a: JaxArray, b: JaxArray): JaxArray;
    subtract(a: JaxArray, b: JaxArray): JaxArray;
    multiply(a: JaxArray, b: JaxArray | number): JaxArray;
    square(a: JaxArray): JaxArray;
    mean(a: JaxArray): JaxArray;
    zeros(shape: number[]): JaxArray;
  };
}

async function loadJax(): Promise<JaxFull> {
  const g = globalThis as { navigator?: object };
  if (g.navigator === undefined) {
    const { availableParallelism } = await import("node:os");
    g.navigator = { hardwareConcurrency: availableParallelism(), userAgent: `Node.js/${process.version}` };
  }
  const jax = await importPeer<JaxFull>("@jax-js/jax");
  const devices = await jax.init();
  if (!devices.includes("wasm")) throw new Error(`no wasm device (have ${devices.join(", ")})`);
  jax.defaultDevice("wasm");
  return jax;
}

/** jax-js's step: the same model, its own `jit` on its Wasm device (arguments are moved in; `.ref` keeps them). */
async function jaxMlp(): Promise<Runner> {
  const jax = await loadJax();
  const jnp = jax.numpy;
  const { w, x: xh, y: yh } = mlpData();
  const W = MLP_WIDTH;
  type P = Record<"w1" | "b1" | "w2" | "b2" | "w3" | "b3", JaxArray>;
  let params: P = {
    w1: jnp.array(w[0]!).reshape([W, W]), b1: jnp.zeros([W]),
    w2: jnp.array(w[1]!).reshape([W, W]), b2: jnp.zeros([W]),
    w3: jnp.array(w[2]!).reshape([W, W]), b3: jnp.zeros([W]),
  };
  const x = jnp.array(xh).reshape([MLP_BATCH, W]);
  const y = jnp.array(yh).reshape([MLP_BATCH, W]);
  const loss = (p: P, x: JaxArray, y: JaxArray): JaxArray => {
    let h = jax.nn.gelu(jnp.add(jnp.matmul(x, p.w1), p.b1));
    h = jax.nn.gelu(jnp.add(jnp.matmul(h, p.w2), p.b2));
    const o = jnp.add(jnp.matmul(h, p.w3), p.b3);
    return jnp.mean(jnp.square(jnp.subtract(o, y)));
  };
  const step = jax.jit((p: P, x: JaxArray, y: JaxArray): P => {
    const g = jax.grad(loss)(jax.tree.ref(p), x, y) as unknown as P;
    return jax.tree.map((a, b) => jnp.subtract(a, jnp.multiply(b, MLP_LR)), p, g);
  });
  return async () => {
    params = step(params, x.ref, y.ref);
    return (await params.b3.ref.data()) as Float32Array;
  };
}

async function mlpSection(): Promise<void> {
  const names = ["webgrad jit (compiled)", "webgrad jit (interpreted)", "webgrad compiled, 1 thread", "jax-js (wasm)"];
  const runs: (Runner | null)[] = [webgradMlp(false), webgradMlp(false, false), webgradMlp(true)];
  try {
    runs.push(await jaxMlp());
  } catch (e) {
    console.log(`jax-js mlp: n/a (${String(e).split("\n")[0]})`);
    runs.push(null);
  }
  // The first steps of every implementation must agree (same data, same model): compare the updated b3.
  const first = await Promise.all(runs.map((r) => (r === null ? null : r())));
  const ref = first[0] as Float32Array;
  first.forEach((c, i) => {
    if (c === null || i === 0) return;
    let err = 0;
    for (let j = 0; j < ref.length; j++) err = Math.max(err, Math.abs(ref[j]! - (c[j] as number)));
    if (!(err < 1e-4)) console.log(`${names[i]} mlp step disagrees with webgrad: max |diff| of b3 ${err}`);
  });
  const t = await timeInterleaved(runs, 5);
  console.log(
    `\nMLP training step (batch ${MLP_BATCH}, width ${MLP_WIDTH}, 3 layers, GELU, MSE, SGD; under jit), ms per step: ` +
      "median over rounds of each round's best (best overall)",
  );
  console.log(`| ${names.join(" | ")} | compiled / jax-js |`);
  console.log(`|${names.map(() => "---").join("|")}|---|`);
  const fmt = (v: { median: number; best: number } | undefined): string =>
    v === undefined ? "n/a" : `${v.median.toFixed(1)} (${v.best.toFixed(1)})`;
  const jaxT = t[names.length - 1];
  const ratio = t[0] && jaxT ? `${(t[0].median / jaxT.median).toFixed(2)}x` : "n/a";
  console.log(`| ${t.map(fmt).join(" | ")} | ${ratio} |`);
}

const ADD_N = 16 * 1024 * 1024;

async function addSection(): Promise<void> {
  const a = rand(ADD_N, 7);
  const b = rand(ADD_N, 8);
  const names: string[] = [];
  const runs: (Runner | null)[] = [];
  const xa = np.array(a);
  const xb = np.array(b);
  names.push("webgrad np.add");
  runs.push(async () => {
    const z = np.add(xa, xb) as WArray;
    const d = z.dataSync() as Float32Array;
    z.dispose();
    return d;
  });
  const jadd = jit((x: Value, y: Value) => np.add(x, y));
  names.push("webgrad jit(add)");
  runs.push(async () => {
    const z = jadd(xa, xb) as WArray;
    const d = z.dataSync() as Float32Array;
    z.dispose();
    return d;
  });
  try {
    const jax = await loadJax();
    const ja = jax.numpy.array(a);
    const jb = jax.numpy.array(b);
    names.push("jax-js (wasm)");
    runs.push(async () => (await jax.numpy.add(ja.ref, jb.ref).data()) as Float32Array);
  } catch (e) {
    console.log(`jax-js add: n/a (${String(e).split("\n")[0]})`);
  }
  try {
    const tf = await importPeer<Tf & { add(a: TfTensor, b: TfTensor): TfTensor; tensor1d(d: Float32Array): TfTensor }>(
      "@tensorflow/tfjs-core",
    );
    await importPeer<unknown>("@tensorflow/tfjs-backend-wasm");
    if (!(await tf.setBackend("wasm"))) throw new Error("tf.setBackend('wasm') failed");
    await tf.ready();
    const ta = tf.tensor1d(a);
    const tb = tf.tensor1d(b);
    names.push("tfjs-backend-wasm");
    runs.push(async () => {
      const c = tf.add(ta, tb);
      const d = c.dataSync() as Float32Array;
      c.dispose();
      return d;
    });
  } catch (e) {
    console.log(`tfjs add: n/a (${String(e).split("\n")[0]})`);
  }
  const t = await timeInterleaved(runs, 5);
  const gbs = (ms: number): number => (3 * 4 * ADD_N) / ms / 1e6;
  console.log(`\nelementwise add of ${ADD_N / 2 ** 20}M float32 (result read back), GB/s (3 x 64 MiB per add): median (best)`);
  console.log(`| ${names.join(" | ")} |`);
  console.log(`|${names.map(() => "---").join("|")}|`);
  console.log(`| ${t.map((v) => (v === undefined ? "n/a" : `${gbs(v.median).toFixed(1)} (${gbs(v.best).toFixed(1)})`)).join(" | ")} |`);
}

async function main(): Promise<void> {
  const peers: Peer[] = [webgrad, webgrad1];
  const missing: string[] = [];
  for (const [label, make] of [
    ["onnxruntime-node", ortPeer],
    ["tfjs-backend-wasm", tfjsPeer],
    ["jax-js", jaxPeer],
  ] as const) {
    try {
      peers.push(await make());
    } catch (e) {
      missing.push(`${label}: n/a (${String(e).split("\n")[0]})`);
    }
  }
  const info = cpuWasmInfo();
  console.log(
    `webgrad CPU: wasm=${info.available} shared=${info.sharedMemory} relaxed-simd=${info.relaxedSimd} ` +
      `threads=${info.threads}; node ${process.version}`,
  );
  for (const m of missing) console.log(m);

  if (SECTIONS.has("matmul")) await matmulSection(peers);
  else for (const p of peers) await p.close?.();
  if (SECTIONS.has("mlp")) await mlpSection();
  if (SECTIONS.has("add")) await addSection();
  await shutdownCpuWasmPool();
}

await main();
