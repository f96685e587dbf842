/**
 * @file Random view chains for the jit compiler's stress suites (tests/jit-stress.test.ts on the CPU
 * target, tests/webgpu/jit-stress.test.ts on WebGPU): a 2-d input goes through a few view ops
 * (transposes, negative-stride reverses, strided slices with an offset, pads with cropping and interior
 * padding, concatenations along either axis, size-1 broadcasts), each op's choices resolved against the
 * current shape at run time, then through a tail (an elementwise op, reductions with prologue and
 * epilogue, a softmax, or a centring plus argmax). Also the reproducible xorshift data the suites feed
 * them. The suites compare the results themselves (each with its own oracle and tolerances).
 */
import fc from "fast-check";
import { lax, np, type Value } from "../../src/index.js";

/** One view op, its choices resolved against the current shape at run time. */
export type ViewStep = readonly [op: number, a: number, b: number];

export function applyViewStep(x: Value, [op, a, b]: ViewStep): Value {
  const [r, c] = x.shape as [number, number];
  switch (op) {
    case 0: // transpose (a non-contiguous layout)
      return np.transpose(x);
    case 1: // negative-stride reverse of one or both axes
      return np.flip(x, a % 3 === 2 ? [0, 1] : [a % 2]);
    case 2: {
      // strided slice with an offset
      const axis = a % 2;
      const n = axis === 0 ? r : c;
      const start = b % Math.max(1, Math.min(3, n));
      const stride = 1 + (a % 3);
      if (n - start < 1) return x;
      return axis === 0 ? lax.slice(x, [start, 0], [r, c], [stride, 1]) : lax.slice(x, [0, start], [r, c], [1, stride]);
    }
    case 3: {
      // pad with cropping (negative) widths and interior padding
      const lo = [(a % 6) - 2, (b % 6) - 2];
      const hi = [((a >> 3) % 6) - 2, ((b >> 3) % 6) - 2];
      const interior = [(a >> 6) % 2, (b >> 6) % 2];
      const out = [r, c].map((n, d) => lo[d]! + hi[d]! + n + Math.max(0, n - 1) * interior[d]!);
      if (out.some((n) => n < 1)) return x;
      return lax.pad(x, 0.5, lo, hi, interior);
    }
    case 4: // concatenate along the inner or outer axis with a transformed copy
      return np.concatenate([x, np.multiply(np.flip(x, a % 2), 2)], b % 2);
    case 5: // a size-1 broadcast: add a row (or column) read with stride 0
      return a % 2 === 0 ? np.add(x, np.sum(x, { axis: 0, keepdims: true })) : np.multiply(x, np.max(x, { axis: 1, keepdims: true }));
    default:
      return x;
  }
}

/** The view chain `steps` on a 2-d input, then tail 0..3 (its outputs as a list). */
export function viewProgram(steps: readonly ViewStep[], tail: number): (x0: Value) => Value[] {
  return (x0: Value): Value[] => {
    let v = x0;
    for (const s of steps) v = applyViewStep(v, s);
    switch (tail) {
      case 0:
        return [np.tanh(v), v];
      case 1:
        return [np.sum(np.square(v), { axis: 1 }), np.max(v, { axis: 0 })];
      case 2: {
        const e = np.exp(np.subtract(v, np.max(v, { axis: -1, keepdims: true })));
        return [np.divide(e, np.sum(e, { axis: -1, keepdims: true }))];
      }
      default:
        return [np.subtract(v, np.mean(v)), np.argmax(v, { axis: 0 })];
    }
  };
}

export interface ViewChain {
  readonly rows: number;
  readonly cols: number;
  readonly steps: readonly ViewStep[];
  readonly tail: number;
  /** Seed of the input data (`xorshiftData`). */
  readonly seed: number;
}

/** Chains on `[1..maxRows, 1..maxCols]` inputs of 1..maxSteps view ops. */
export function viewChainArb(o: { maxRows: number; maxCols: number; maxSteps: number }): fc.Arbitrary<ViewChain> {
  return fc.record({
    rows: fc.integer({ min: 1, max: o.maxRows }),
    cols: fc.integer({ min: 1, max: o.maxCols }),
    steps: fc.array(fc.tuple(fc.integer({ min: 0, max: 5 }), fc.nat(1000), fc.nat(1000)), { minLength: 1, maxLength: o.maxSteps }),
    tail: fc.integer({ min: 0, max: 3 }),
    seed: fc.nat(1 << 30),
  });
}

/** xorshift data in [-2, 2) (with `int`: integers in [-50, 50)), reproducible from a seed. */
export function xorshiftData(n: number, seed: number, int = false): number[] {
  let s = seed >>> 0 || 1;
  return Array.from({ length: n }, () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    const u = (s >>> 0) / 2 ** 32;
    return int ? Math.floor(u * 100) - 50 : u * 4 - 2;
  });
}
