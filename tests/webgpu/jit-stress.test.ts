/**
 * @file Stress tests of the jit compiler's WebGPU target (src/ops/backend/webgpu/compile/) beyond the
 * small random programs of jit-random.test.ts: shapes that cross workgroup and grid boundaries (up to
 * ~10^4 elements; lavapipe is slow), chains of views (transposes, reverses, strided slices, pads with
 * cropping and interior padding, inner-axis concatenations, size-1 broadcasts) feeding elementwise
 * ops, reductions with prologue/epilogue and argmax; and the compiled scan's ownership of arrays it
 * passes through (a carry that is an argument; a length-1 scan's stacked y).
 *
 * Oracle: the same function run eagerly on the CPU backend (itself checked against float64 references
 * in tests/property/), within float32 tolerances.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { dispose, jit, lax, np, Array as WArray, type Value } from "../../src/index.js";
import { scan } from "../../src/ops/control-flow/scan.js";
import { lastJitStats, resetJitStats } from "../../src/ops/compile/index.js";
import { noGpu } from "./helpers.js";

const GPU = "webgpu:0";
const RUNS = Number(process.env.WEBGPU_FC_RUNS ?? "10") || 10;
const seedOpt = process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {};

function data(n: number, seed: number): number[] {
  let s = seed >>> 0 || 1;
  return Array.from({ length: n }, () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) / 2 ** 32) * 4 - 2;
  });
}

async function expectClose(got: WArray, want: WArray, what: string): Promise<void> {
  expect(got.shape, `${what}: shape`).toEqual(want.shape);
  expect(got.dtype, `${what}: dtype`).toBe(want.dtype);
  const g = await got.data();
  const w = want.dataSync();
  const exact = want.dtype !== "float32";
  for (let i = 0; i < w.length; i++) {
    const a = Number(g[i]);
    const b = Number(w[i]);
    if (Number.isNaN(a) && Number.isNaN(b)) continue;
    const ok = exact ? a === b : Math.abs(a - b) <= 1e-4 * Math.max(1, Math.abs(b));
    if (!ok) throw new Error(`${what}: element ${i} of ${w.length} is ${a}, expected ${b}`);
  }
}

type ViewStep = readonly [op: number, a: number, b: number];

function applyViewStep(x: Value, [op, a, b]: ViewStep): Value {
  const [r, c] = x.shape as [number, number];
  switch (op) {
    case 0:
      return np.transpose(x);
    case 1:
      return np.flip(x, a % 3 === 2 ? [0, 1] : [a % 2]);
    case 2: {
      const axis = a % 2;
      const n = axis === 0 ? r : c;
      const start = b % Math.max(1, Math.min(3, n));
      const stride = 1 + (a % 3);
      if (n - start < 1) return x;
      return axis === 0 ? lax.slice(x, [start, 0], [r, c], [stride, 1]) : lax.slice(x, [0, start], [r, c], [1, stride]);
    }
    case 3: {
      const lo = [(a % 6) - 2, (b % 6) - 2];
      const hi = [((a >> 3) % 6) - 2, ((b >> 3) % 6) - 2];
      const interior = [(a >> 6) % 2, (b >> 6) % 2];
      const out = [r, c].map((n, d) => lo[d]! + hi[d]! + n + Math.max(0, n - 1) * interior[d]!);
      if (out.some((n) => n < 1)) return x;
      return lax.pad(x, 0.5, lo, hi, interior);
    }
    case 4:
      return np.concatenate([x, np.multiply(np.flip(x, a % 2), 2)], b % 2);
    default:
      return a % 2 === 0 ? np.add(x, np.sum(x, { axis: 0, keepdims: true })) : np.multiply(x, np.max(x, { axis: 1, keepdims: true }));
  }
}

function program(steps: readonly ViewStep[], tail: number) {
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

describe.skipIf(noGpu)("jit on WebGPU under stress == eager CPU", () => {
  it("view chains over shapes crossing workgroup boundaries, then elementwise / reductions / argmax", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          rows: fc.integer({ min: 1, max: 70 }),
          cols: fc.integer({ min: 1, max: 150 }),
          steps: fc.array(fc.tuple(fc.integer({ min: 0, max: 5 }), fc.nat(1000), fc.nat(1000)), { minLength: 1, maxLength: 3 }),
          tail: fc.integer({ min: 0, max: 3 }),
          seed: fc.nat(1 << 30),
        }),
        async ({ rows, cols, steps, tail, seed }) => {
          const d = data(rows * cols, seed);
          const xc = np.array(d, { shape: [rows, cols], device: "cpu" });
          const xg = np.array(d, { shape: [rows, cols], device: GPU });
          const f = program(steps, tail);
          const want = f(xc) as WArray[];
          resetJitStats();
          const got = jit(f)(xg) as WArray[];
          try {
            expect(lastJitStats(), "ran compiled").not.toBeNull();
            for (let k = 0; k < want.length; k++) await expectClose(got[k]!, want[k]!, `output ${k}`);
          } finally {
            dispose([xc, xg, want, got]);
          }
        },
      ),
      { numRuns: RUNS, ...seedOpt },
    );
  }, 20_000);

  it("a carry passed through (an argument) and a length-1 scan's y stay alive", async () => {
    const x = np.array([1, 2, 3], { device: GPU });
    const f = (c0: Value, s: Value) => scan((c: Value, xi: Value) => [c, np.add(c, xi)] as [Value, Value], c0, s);
    const [c, ys] = jit(f)(x, np.array(new Array(12).fill(1), { shape: [4, 3], device: GPU })) as unknown as [WArray, WArray];
    expect(x.isDisposed).toBe(false);
    expect(Array.from(await c.data())).toEqual([1, 2, 3]);
    expect(Array.from(await ys.data())).toEqual([2, 3, 4, 2, 3, 4, 2, 3, 4, 2, 3, 4]);
    const g = (c0: Value, s: Value) => scan((cc: Value, xi: Value) => [np.add(cc, xi), cc] as [Value, Value], c0, s);
    const [c1, ys1] = jit(g)(x, np.array([[1, 2, 3]], { device: GPU })) as unknown as [WArray, WArray];
    expect(Array.from(await ys1.data())).toEqual([1, 2, 3]);
    expect(Array.from(await c1.data())).toEqual([2, 4, 6]);
    expect(Array.from(await x.data())).toEqual([1, 2, 3]);
    dispose([x, c, ys, c1, ys1]);
  });
});
