/**
 * @file Random programs through the jit compiler on WebGPU against eager CPU. fast-check generates
 * small programs (a list of steps over a pool of values) of elementwise ops, broadcasts, reductions
 * (with and without keepdims, then used against the full array: softmax-like patterns), matmuls,
 * reshapes, transposes, gathers, concatenations and pads (with cropping), each step's choices resolved against the values' shapes at run time
 * so the same program runs traced and eagerly. `jit(program)` on webgpu:0 must equal the program run
 * eagerly on the CPU backend within float32 tolerances, and so must `jit(grad(loss))` of a scalar loss of
 * the program (backward passes: transposed matmuls, broadcast/reduce transposes, fused residuals).
 * Shrinking gives a minimal failing program.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dispose, grad, jit, lax, np, nn, setDefaultDevice, Array as WArray, type Value } from "../../src/index.js";
import { installJitCompiler, lastJitStats, resetJitStats, uninstallJitCompiler } from "../../src/ops/compile/index.js";
import { noGpu, Rng } from "./helpers.js";

const GPU = "webgpu:0";
const RUNS = Number(process.env.WEBGPU_FC_RUNS ?? "15") || 15;

/** One step: an op code and choice numbers (interpreted modulo what the shapes allow). */
type Step = readonly [op: number, a: number, b: number, c: number];

const OPS = 16;
const stepArb: fc.Arbitrary<Step> = fc.tuple(
  fc.integer({ min: 0, max: OPS - 1 }),
  fc.nat(1000),
  fc.nat(1000),
  fc.nat(1000),
);

interface Prog {
  /** Input shapes. */
  readonly shapes: number[][];
  readonly steps: readonly Step[];
}

const progArb: fc.Arbitrary<Prog> = fc
  .record({
    rows: fc.integer({ min: 1, max: 9 }),
    cols: fc.integer({ min: 1, max: 12 }),
    extra: fc.integer({ min: 1, max: 6 }),
    steps: fc.array(stepArb, { minLength: 1, maxLength: 10 }),
  })
  .map(({ rows, cols, extra, steps }) => ({ shapes: [[rows, cols], [cols, extra], [cols], [rows, cols]], steps }));

const pick = <T>(xs: readonly T[], k: number): T => xs[k % xs.length]!;

/** Runs a program on values (tracers or arrays); returns the last two values of the pool. */
function run(prog: Prog, inputs: readonly Value[]): Value[] {
  const pool: Value[] = [...inputs];
  const same = (x: Value, k: number) => pool.filter((v) => v.shape.join() === x.shape.join())[k % 1000] ?? x;
  for (const [op, a, b, c] of prog.steps) {
    const x = pick(pool, a);
    let y: Value;
    switch (op) {
      case 0:
        y = np.tanh(x);
        break;
      case 1:
        y = np.sin(np.multiply(x, 1.5));
        break;
      case 2:
        y = np.exp(np.minimum(x, 3));
        break;
      case 3: {
        const others = pool.filter((v) => v.shape.join() === x.shape.join());
        y = np.add(x, pick(others, b));
        break;
      }
      case 4: {
        const others = pool.filter((v) => v.shape.join() === x.shape.join());
        y = np.multiply(x, pick(others, b));
        break;
      }
      case 5: // broadcast against a row / column vector from the pool (or a scalar)
        if (x.ndim === 2) {
          const row = pool.find((v) => v.ndim === 1 && v.shape[0] === x.shape[1]);
          y = row ? np.subtract(x, row) : np.subtract(x, 0.25);
        } else y = np.subtract(x, 0.25);
        break;
      case 6: {
        if (x.ndim === 0) {
          y = np.negative(x);
          break;
        }
        const axis = b % x.ndim;
        y = c % 2 === 0 ? np.sum(x, { axis }) : np.max(x, { axis });
        break;
      }
      case 7: {
        // softmax-like: reduce with keepdims and combine with the full array
        if (x.ndim === 0) {
          y = np.abs(x);
          break;
        }
        const axis = b % x.ndim;
        const m = np.max(x, { axis, keepdims: true });
        const e = np.exp(np.subtract(x, m));
        y = c % 2 === 0 ? np.divide(e, np.sum(e, { axis, keepdims: true })) : np.subtract(x, np.mean(x, { axis, keepdims: true }));
        break;
      }
      case 8: {
        const w = pool.find((v) => v.ndim === 2 && x.ndim >= 1 && v.shape[0] === x.shape[x.ndim - 1]);
        y = w && x.ndim <= 2 ? np.matmul(x, w) : np.cos(x);
        break;
      }
      case 9:
        y = x.ndim === 2 ? np.transpose(x) : np.abs(x);
        break;
      case 10:
        y = x.ndim >= 1 ? np.reshape(x, [-1]) : np.reshape(x, [1, 1]);
        break;
      case 11: {
        if (x.ndim === 0 || x.shape[0]! < 2) {
          y = np.square(x);
          break;
        }
        const n = x.shape[0]!;
        const lo = b % (n - 1);
        y = np.take(x, np.array(Array.from({ length: n - lo }, (_, i) => i + lo), { dtype: "int32" }), 0);
        break;
      }
      case 12:
        y = np.where(np.greater(x, 0), x, np.multiply(x, 0.1));
        break;
      case 13:
        y = nn.gelu(same(x, b));
        break;
      case 14: // concatenate with a shape-compatible value along a random axis
        if (x.ndim === 0) y = np.exp(np.minimum(x, 2));
        else {
          const axis = b % x.ndim;
          const others = pool.filter((v) => v.ndim === x.ndim && v.shape.every((d, i) => i === axis || d === x.shape[i]));
          y = np.concatenate([np.tanh(x), pick(others, c)], axis);
        }
        break;
      case 15: // pad (and crop) with a constant
        y =
          x.ndim === 0
            ? np.add(x, 1)
            : lax.pad(
                x,
                0.5,
                x.shape.map((n, d) => (n >= 3 ? ((b >> d) % 3) - 1 : (b >> d) % 2)),
                x.shape.map((n, d) => (n >= 3 ? ((c >> d) % 3) - 1 : (c >> d) % 2)),
              );
        break;
      default:
        y = x;
    }
    pool.push(y);
  }
  return pool.slice(-2);
}

function data(shape: number[], rng: Rng): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  return Float32Array.from({ length: n }, () => rng.uniform(-1.5, 1.5));
}

/** A scalar loss of the program, for gradients. */
function lossOf(prog: Prog) {
  return (...xs: Value[]): Value => run(prog, xs).reduce((acc: Value, y, k) => np.add(acc, np.sum(np.multiply(np.sin(y), k + 1))), np.zeros([]));
}

async function check(prog: Prog, seed: number, mode: "value" | "grad" = "value"): Promise<void> {
  const rng = new Rng(seed);
  const host = prog.shapes.map((s) => data(s, rng));
  const cpuIns = host.map((d, i) => np.array(d, { shape: prog.shapes[i], device: "cpu" }));
  const gpuIns = host.map((d, i) => np.array(d, { shape: prog.shapes[i], device: GPU }));
  const g = (...xs: Value[]) => grad(lossOf(prog), { argnums: [0, 1, 2, 3] })(...xs) as Value[];
  const want = mode === "value" ? run(prog, cpuIns) : g(...cpuIns);
  resetJitStats();
  setDefaultDevice(GPU);
  let got: Value[];
  try {
    got = (mode === "value" ? jit((...xs: Value[]) => run(prog, xs)) : jit(g))(...gpuIns) as Value[];
  } finally {
    setDefaultDevice("cpu");
  }
  try {
    expect(lastJitStats()).not.toBeNull();
    for (let k = 0; k < want.length; k++) {
      const w = want[k] as WArray;
      const g = got[k] as WArray;
      expect(g.shape).toEqual(w.shape);
      const [wd, gd] = [await w.data(), await g.data()];
      for (let i = 0; i < wd.length; i++) {
        const a = Number(wd[i]);
        const b = Number(gd[i]);
        if (Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b))) continue;
        const tol = mode === "value" ? 2e-4 : 1e-3;
        if (!(Math.abs(a - b) <= tol + tol * Math.abs(a))) {
          throw new Error(`output ${k} element ${i} of [${w.shape}]: ${b} (jit webgpu) vs ${a} (eager cpu)`);
        }
      }
    }
  } finally {
    dispose([cpuIns, gpuIns, want, got]);
  }
}

describe.skipIf(noGpu)("random programs: jit on webgpu == eager on cpu", () => {
  beforeAll(() => installJitCompiler());
  afterAll(() => {
    uninstallJitCompiler();
    setDefaultDevice("cpu");
  });
  it("elementwise, broadcasts, reductions, matmuls, reshapes, transposes, gathers", async () => {
    await fc.assert(
      fc.asyncProperty(progArb, fc.nat(1 << 30), (p, s) => check(p, s)),
      { numRuns: RUNS, ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {}) },
    );
  }, 120_000);

  it("gradients of the same programs: jit(grad(loss)) on webgpu == grad(loss) eagerly on cpu", async () => {
    await fc.assert(
      fc.asyncProperty(progArb, fc.nat(1 << 30), (p, s) => check(p, s, "grad")),
      { numRuns: Math.ceil(RUNS / 2), ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {}) },
    );
  }, 120_000);
});
