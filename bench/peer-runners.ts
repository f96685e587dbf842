/**
 * @file The runners bench/peer-process.ts times: for each peer (webgrad, webgrad on one thread,
 * onnxruntime-node, tfjs-backend-wasm, jax-js) a loader that imports only that library and returns
 * its `matmul` / `mlp` / `add` setups. Every runner's run includes getting the result back as host
 * data. Data are generated here from fixed seeds, so every process builds the same operands.
 */
import type { Job, PeerId } from "./peer-protocol.js";
import { ORT_THREADS } from "./peer-protocol.js";

/** One timed run; resolves to the result on the host. */
export type Runner = () => Promise<Float32Array | ArrayLike<number>>;

/** A built benchmark: its runner and what frees its operands (the next setup of the child calls it). */
export interface Built {
  run: Runner;
  dispose?(): void;
}

/** One loaded peer: its setups (a job it has no row for throws). */
export interface LoadedPeer {
  /** A header line (webgrad: what its CPU backend runs on). */
  info?(): string;
  setup(job: Job): Promise<Built>;
  close?(): Promise<void>;
}

/** Deterministic uniform [-0.5, 0.5) data (LCG), identical in every process. */
export function rand(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 2 ** 32 - 0.5;
  }
  return a;
}

export const MLP_BATCH = 256;
export const MLP_WIDTH = 512;
const MLP_LR = 0.01;
export const ADD_N = 16 * 1024 * 1024;

/** Host data of the MLP: three [W, W] weights (scaled 1/sqrt(W)), zero biases, inputs and targets. */
function mlpData(): { w: Float32Array[]; x: Float32Array; y: Float32Array } {
  const w = [1, 2, 3].map((s) => rand(MLP_WIDTH * MLP_WIDTH, s).map((v) => (2 * v) / Math.sqrt(MLP_WIDTH)));
  return { w, x: rand(MLP_BATCH * MLP_WIDTH, 4), y: rand(MLP_BATCH * MLP_WIDTH, 5) };
}

/**
 * Imports a peer installed in bench/node_modules. The specifier goes through a variable so that the
 * root type-check (which does not install the peers) does not resolve it; each use site states the
 * slice of the peer's API it relies on.
 */
async function importPeer<T>(name: string): Promise<T> {
  return (await import(name)) as T;
}

function unsupported(peer: string, job: Job): never {
  throw new Error(`${peer} has no ${job.section} row${"variant" in job && job.variant ? ` (${job.variant})` : ""}`);
}

// ---- webgrad ----

/** webgrad, in this process only; `oneThread`: every product on the main thread (no workers). */
async function loadWebgrad(oneThread: boolean): Promise<LoadedPeer> {
  const wasm = await import("../src/ops/backend/cpu/wasm/index.js");
  const { dispose, grad, jit, nn, np, tree } = await import("../src/index.js");
  const { installJitCompiler, uninstallJitCompiler } = await import("../src/ops/compile/index.js");
  const { installCpuJitTarget } = await import("../src/ops/backend/cpu/compile/index.js");
  type WArray = import("../src/index.js").Array;
  type Value = import("../src/index.js").Value;
  // Every product below `parallelMinMacs` runs on the main thread alone: Infinity = one thread.
  if (oneThread) wasm.configureCpuWasm({ parallelMinMacs: Infinity });
  const readBack = (z: Value): Float32Array => {
    const d = (z as WArray).dataSync() as Float32Array;
    (z as WArray).dispose();
    return d;
  };

  const mlp = (compiled: boolean): Built => {
    // The process runs one variant: the compiler (fused kernels, static buffers, params donated)
    // is installed by default; "interpreted" restores jit's op-by-op interpreter.
    if (compiled) {
      installCpuJitTarget();
      installJitCompiler();
    } else uninstallJitCompiler();
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
    return {
      run: async () => {
        const next = step(params, x, y);
        if (!compiled) dispose(params);
        params = next;
        return (params.b3 as WArray).dataSync() as Float32Array;
      },
      dispose: () => dispose([params, x, y]),
    };
  };

  return {
    info() {
      const i = wasm.cpuWasmInfo();
      return `webgrad CPU: wasm=${i.available} shared=${i.sharedMemory} relaxed-simd=${i.relaxedSimd} threads=${i.threads}${oneThread ? " (this row: 1)" : ""}`;
    },
    async setup(job) {
      switch (job.section) {
        case "matmul": {
          const n = job.n;
          const x = np.array(rand(n * n, 1), { shape: [n, n] });
          const y = np.array(rand(n * n, 2), { shape: [n, n] });
          return { run: async () => readBack(np.matmul(x, y)), dispose: () => dispose([x, y]) };
        }
        case "mlp":
          return mlp(job.variant !== "interpreted");
        case "add": {
          const xa = np.array(rand(ADD_N, 7));
          const xb = np.array(rand(ADD_N, 8));
          const f = job.variant === "jit" ? jit((x: Value, y: Value) => np.add(x, y)) : (x: Value, y: Value) => np.add(x, y);
          return { run: async () => readBack(f(xa, xb)), dispose: () => dispose([xa, xb]) };
        }
      }
    },
    async close() {
      await wasm.shutdownCpuWasmPool();
    },
  };
}

// ---- onnxruntime-node ----

interface OrtTensor {
  readonly data: unknown;
  dispose?(): void;
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

/**
 * onnxruntime-node with ORT_THREADS intra-op threads. `spin`: ORT's default, the intra-op pool's
 * threads spin-wait for work instead of sleeping; false sets the session config entry
 * "session.intra_op.allow_spinning" = "0". The typings of onnxruntime-common 1.30 say `extra` is
 * Wasm-only, but the Node binding (js/node/src/session_options_helper.cc, IterateExtraOptions)
 * flattens `extra` into dotted config keys and passes each to SessionOptions.AddConfigEntry.
 */
async function loadOrt(spin: boolean): Promise<LoadedPeer> {
  const ort = await importPeer<Ort>("onnxruntime-node");
  const session = await ort.InferenceSession.create(onnxMatmulModel(), {
    intraOpNumThreads: ORT_THREADS,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
    ...(spin ? {} : { extra: { session: { intra_op: { allow_spinning: "0" } } } }),
  });
  return {
    async setup(job) {
      if (job.section !== "matmul") unsupported("onnxruntime-node", job);
      const n = job.n;
      const ta = new ort.Tensor("float32", rand(n * n, 1), [n, n]);
      const tb = new ort.Tensor("float32", rand(n * n, 2), [n, n]);
      return {
        run: async () => {
          const r = await session.run({ A: ta, B: tb });
          return r["Y"]!.data as Float32Array;
        },
      };
    },
    async close() {
      await session.release();
    },
  };
}

// ---- tfjs-backend-wasm ----

interface TfTensor {
  dataSync(): unknown;
  dispose(): void;
}
interface Tf {
  setBackend(name: string): Promise<boolean>;
  ready(): Promise<void>;
  tensor1d(data: Float32Array): TfTensor;
  tensor2d(data: Float32Array, shape: [number, number]): TfTensor;
  matMul(a: TfTensor, b: TfTensor): TfTensor;
  add(a: TfTensor, b: TfTensor): TfTensor;
}

async function loadTfjs(): Promise<LoadedPeer> {
  const tf = await importPeer<Tf>("@tensorflow/tfjs-core");
  await importPeer<unknown>("@tensorflow/tfjs-backend-wasm");
  if (!(await tf.setBackend("wasm"))) throw new Error("tf.setBackend('wasm') failed");
  await tf.ready();
  const built = (ta: TfTensor, tb: TfTensor, op: (a: TfTensor, b: TfTensor) => TfTensor): Built => ({
    run: async () => {
      const c = op(ta, tb);
      const d = c.dataSync() as Float32Array;
      c.dispose();
      return d;
    },
    dispose: () => {
      ta.dispose();
      tb.dispose();
    },
  });
  return {
    async setup(job) {
      if (job.section === "matmul") {
        const n = job.n;
        return built(tf.tensor2d(rand(n * n, 1), [n, n]), tf.tensor2d(rand(n * n, 2), [n, n]), (a, b) => tf.matMul(a, b));
      }
      if (job.section === "add") return built(tf.tensor1d(rand(ADD_N, 7)), tf.tensor1d(rand(ADD_N, 8)), (a, b) => tf.add(a, b));
      unsupported("tfjs-backend-wasm", job);
    },
  };
}

// ---- jax-js ----

interface JaxArray {
  readonly ref: JaxArray;
  reshape(shape: number[]): JaxArray;
  data(): Promise<unknown>;
  dispose(): void;
}
interface Jax {
  init(): Promise<string[]>;
  defaultDevice(device: string): void;
  jit<F>(f: F): F;
  grad<F>(f: F): F;
  nn: { gelu(x: JaxArray): JaxArray };
  tree: { ref<T>(t: T): T; map<T>(f: (...xs: JaxArray[]) => JaxArray, ...trees: T[]): T };
  numpy: {
    array(data: Float32Array): JaxArray;
    matmul(a: JaxArray, b: JaxArray): JaxArray;
    add(a: JaxArray, b: JaxArray): JaxArray;
    subtract(a: JaxArray, b: JaxArray): JaxArray;
    multiply(a: JaxArray, b: JaxArray | number): JaxArray;
    square(a: JaxArray): JaxArray;
    mean(a: JaxArray): JaxArray;
    zeros(shape: number[]): JaxArray;
  };
}

async function loadJax(): Promise<LoadedPeer> {
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

  /** The same MLP step as webgrad's, under jax-js's own `jit` (arguments are moved in; `.ref` keeps them). */
  const mlp = (): Built => {
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
    return {
      run: async () => {
        params = step(params, x.ref, y.ref);
        return (await params.b3.ref.data()) as Float32Array;
      },
    };
  };

  return {
    async setup(job) {
      switch (job.section) {
        case "matmul": {
          const n = job.n;
          const ja = jnp.array(rand(n * n, 1)).reshape([n, n]);
          const jb = jnp.array(rand(n * n, 2)).reshape([n, n]);
          // jax-js consumes its arguments: `.ref` keeps the operands alive across runs.
          return {
            run: async () => (await jnp.matmul(ja.ref, jb.ref).data()) as Float32Array,
            dispose: () => {
              ja.dispose();
              jb.dispose();
            },
          };
        }
        case "mlp":
          if (job.variant === "interpreted") unsupported("jax-js", job);
          return mlp();
        case "add": {
          if (job.variant === "jit") unsupported("jax-js", job);
          const ja = jnp.array(rand(ADD_N, 7));
          const jb = jnp.array(rand(ADD_N, 8));
          return {
            run: async () => (await jnp.add(ja.ref, jb.ref).data()) as Float32Array,
            dispose: () => {
              ja.dispose();
              jb.dispose();
            },
          };
        }
      }
    },
  };
}

/** Loads `peer` into this process (imports only that library). */
export function loadPeer(peer: PeerId): Promise<LoadedPeer> {
  switch (peer) {
    case "webgrad":
      return loadWebgrad(false);
    case "webgrad1":
      return loadWebgrad(true);
    case "ort":
      return loadOrt(true);
    case "ort-nospin":
      return loadOrt(false);
    case "tfjs":
      return loadTfjs();
    case "jax":
      return loadJax();
  }
}
