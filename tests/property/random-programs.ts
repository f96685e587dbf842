/**
 * @file Random programs for the jit compiler's suites (tests/cpu-jit.test.ts on the CPU target,
 * tests/webgpu/jit-random.test.ts on WebGPU). fast-check generates a small program: input shapes
 * `[rows, cols], [cols, extra], [cols], [rows, cols]` and a list of steps over a pool of values
 * (elementwise ops, broadcasts, reductions with and without keepdims used against the full array as in
 * softmax, matmuls, reshapes, transposes, gathers, selects, GELU, concatenations and pads with
 * cropping). Each step's choice numbers are resolved against the values' shapes at run time, so the
 * same program runs traced (under jit / grad) and eagerly; shrinking gives a minimal failing program.
 *
 * The suites differ in two cases, chosen by `ProgramOptions`: how step 14 concatenates, and whether
 * step 15 (a pad with cropping) is in the op set. The suites compare the results themselves (each with
 * its own oracle, tolerances and run counts).
 */
import fc from "fast-check";
import { lax, nn, np, type Value } from "../../src/index.js";
import { Rng } from "./harness.js";

/** One step: an op code and choice numbers (interpreted modulo what the shapes allow). */
export type Step = readonly [op: number, a: number, b: number, c: number];

export type ProgDType = "float32" | "float64";

export interface ProgramOptions {
  /**
   * Step 14: "flip" concatenates x with its reverse along axis 0 (a pad / concatenate fused with
   * shifted reads); "pool" concatenates tanh(x) with a shape-compatible pool value along a random axis.
   */
  readonly concat: "flip" | "pool";
  /** Whether step 15, `lax.pad` with a constant and random (possibly negative: cropping) widths, is drawn. */
  readonly pad: boolean;
  /** The input dtypes drawn (one per program). */
  readonly dtypes: readonly ProgDType[];
}

export interface Prog {
  /** Input shapes. */
  readonly shapes: number[][];
  readonly steps: readonly Step[];
  readonly dtype: ProgDType;
  readonly options: ProgramOptions;
}

/** Programs of 1..10 steps over the options' op set. */
export function progArb(options: ProgramOptions): fc.Arbitrary<Prog> {
  const ops = options.pad ? 16 : 15;
  const stepArb: fc.Arbitrary<Step> = fc.tuple(fc.integer({ min: 0, max: ops - 1 }), fc.nat(1000), fc.nat(1000), fc.nat(1000));
  return fc
    .record({
      rows: fc.integer({ min: 1, max: 9 }),
      cols: fc.integer({ min: 1, max: 12 }),
      extra: fc.integer({ min: 1, max: 6 }),
      steps: fc.array(stepArb, { minLength: 1, maxLength: 10 }),
      dtype: fc.constantFrom(...options.dtypes),
    })
    .map(({ rows, cols, extra, steps, dtype }) => ({ shapes: [[rows, cols], [cols, extra], [cols], [rows, cols]], steps, dtype, options }));
}

/** Input data of a program: uniform in [-1.5, 1.5) from a seed, one C-order list per input shape. */
export function programData(prog: Prog, seed: number): number[][] {
  const rng = new Rng(seed);
  return prog.shapes.map((sh) => Array.from({ length: sh.reduce((a, b) => a * b, 1) }, () => rng.uniform(-1.5, 1.5)));
}

const pick = <T>(xs: readonly T[], k: number): T => xs[k % xs.length]!;

/** Runs a program on values (tracers or arrays); returns the last two values of the pool. */
export function runProgram(prog: Prog, inputs: readonly Value[]): Value[] {
  const pool: Value[] = [...inputs];
  const sameShape = (x: Value) => pool.filter((v) => v.shape.join() === x.shape.join());
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
      case 3:
        y = np.add(x, pick(sameShape(x), b));
        break;
      case 4:
        y = np.multiply(x, pick(sameShape(x), b));
        break;
      case 5: // broadcast against a row vector from the pool (or a scalar)
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
        y = x.ndim >= 1 ? np.reshape(x, [-1]) : np.reshape(x, [1, 1]); // [...] -> [size] ; [] -> [1, 1]
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
        y = nn.gelu(pick(sameShape(x), b));
        break;
      case 14:
        if (prog.options.concat === "flip") y = x.ndim >= 1 ? np.concatenate([x, np.flip(x, 0)], 0) : np.exp(x);
        else if (x.ndim === 0) y = np.exp(np.minimum(x, 2));
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

/** A scalar loss of the program (Σ_k (k+1)·Σ sin(output k)), for gradients. */
export function programLoss(prog: Prog) {
  return (...xs: Value[]): Value =>
    runProgram(prog, xs).reduce((acc: Value, y, k) => np.add(acc, np.sum(np.multiply(np.sin(y), k + 1))), np.zeros([], { dtype: prog.dtype }));
}
