/**
 * @file Stress tests of the jit compiler's CPU target (src/ops/compile/, src/ops/backend/cpu/compile/,
 * src/ops/backend/cpu/wasm/fused.ts) on what the small random programs of tests/cpu-jit.test.ts miss:
 * sizes that cross the fused kernels' 4,096-element Wasm chunk and the Wasm/JS threshold, chains of views
 * (transposes, negative-stride reverses, strided slices, pads with cropping and interior padding,
 * concatenations along inner axes, size-1 broadcasts) feeding elementwise ops and reductions with
 * prologues and epilogues, integer programs, and the compiled scan's ownership of arrays it passes
 * through (regressions: a carry that is an argument was released as an intermediate; a length-1 scan
 * released its only stacked y).
 *
 * Oracle: the same function run by jit's interpreter (`uninstallJitCompiler()`: eager CPU ops one by
 * one), itself checked against float64 references in tests/property/; pure data movement is also
 * checked against a host (JavaScript) reference computed here.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dispose, jit, lax, np, Array as WArray, type Value } from "../src/index.js";
import { scan } from "../src/ops/control-flow/scan.js";
import { installCpuJitTarget } from "../src/ops/backend/cpu/compile/index.js";
import { installJitCompiler, lastJitStats, resetJitStats, uninstallJitCompiler } from "../src/ops/compile/index.js";
import { viewChainArb, viewProgram, xorshiftData as data } from "./property/view-chains.js";

const RUNS = Number(process.env.JIT_STRESS_RUNS ?? "20") || 20;
const seedOpt = process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {};

beforeAll(() => {
  installCpuJitTarget();
  installJitCompiler();
});
afterAll(() => installJitCompiler());

/** Results of `f` compiled (asserted) and interpreted on the same arguments. */
function both(f: (...xs: Value[]) => Value | Value[], args: readonly Value[]): { got: WArray[]; want: WArray[] } {
  const flat = (v: Value | Value[]) => (Array.isArray(v) ? v : [v]) as WArray[];
  installJitCompiler();
  resetJitStats();
  const got = flat(jit(f)(...args) as Value | Value[]);
  expect(lastJitStats(), "ran compiled").not.toBeNull();
  uninstallJitCompiler();
  try {
    return { got, want: flat(jit(f)(...args) as Value | Value[]) };
  } finally {
    installJitCompiler();
  }
}

/** Equal within float32 tolerances (exact for integer and bool results), NaNs matching. */
function expectClose(got: WArray, want: WArray, what: string): void {
  expect(got.shape, `${what}: shape`).toEqual(want.shape);
  expect(got.dtype, `${what}: dtype`).toBe(want.dtype);
  const g = got.dataSync();
  const w = want.dataSync();
  const exact = want.dtype !== "float32" && want.dtype !== "float64";
  for (let i = 0; i < w.length; i++) {
    const a = Number(g[i]);
    const b = Number(w[i]);
    if (Number.isNaN(a) && Number.isNaN(b)) continue;
    const ok = exact ? a === b : Math.abs(a - b) <= 2e-6 * Math.max(1, Math.abs(b));
    if (!ok) throw new Error(`${what}: element ${i} of ${w.length} is ${a}, expected ${b}`);
  }
}

// ---------------------------------------------------------------------------------------------------
// Random view chains (tests/property/view-chains.ts) over shapes that cross the 4,096-element chunk

const chainArb = viewChainArb({ maxRows: 90, maxCols: 140, maxSteps: 4 });

describe("view chains over large shapes: compiled == interpreted", () => {
  it("views, then an elementwise op, a reduction with prologue and epilogue, or a softmax", () => {
    fc.assert(
      fc.property(chainArb, ({ rows, cols, steps, tail, seed }) => {
        const x = np.array(data(rows * cols, seed), { shape: [rows, cols] });
        const f = viewProgram(steps, tail);
        const { got, want } = both(f, [x]);
        try {
          want.forEach((w, k) => expectClose(got[k]!, w, `output ${k}`));
        } finally {
          dispose([x, got, want]);
        }
      }),
      { numRuns: RUNS, ...seedOpt },
    );
  }, 20_000);

  it("pure data movement equals a host reference (pad with crop and interior, reverse, strided slice)", () => {
    fc.assert(
      fc.property(fc.integer({ min: 4090, max: 9000 }), fc.integer({ min: -5, max: 5 }), fc.integer({ min: -5, max: 5 }), fc.nat(2), (n, lo, hi, interior) => {
        const xd = data(n, n);
        const x = np.array(xd);
        // Host reference: pad -> reverse -> every 3rd element from 1, times 2.
        const padded: number[] = [];
        const full = new Array<number>(Math.max(0, n + Math.max(0, n - 1) * interior)).fill(-1);
        xd.forEach((v, i) => (full[i * (interior + 1)] = v));
        for (let i = 0; i < Math.max(0, lo) ; i++) padded.push(-1);
        padded.push(...full.slice(Math.max(0, -lo), full.length - Math.max(0, -hi)));
        for (let i = 0; i < Math.max(0, hi); i++) padded.push(-1);
        const ref = padded.reverse().filter((_, i) => i % 3 === 1).map((v) => Math.fround(v * 2));
        const f = (v: Value) => np.multiply(lax.slice(np.flip(lax.pad(v, -1, [lo], [hi], [interior]), 0), [1], [padded.length], [3]), 2);
        installJitCompiler();
        resetJitStats();
        const got = jit(f)(x) as WArray;
        expect(lastJitStats()).not.toBeNull();
        try {
          expect(Array.from(got.dataSync())).toEqual(ref);
        } finally {
          dispose([x, got]);
        }
      }),
      { numRuns: Math.max(4, RUNS >> 1), ...seedOpt },
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// Integer and bool programs (Wasm lanes vs the JavaScript kernel across the chunk)

describe("integer programs across the Wasm chunk", () => {
  it("int32 division, remainder, shifts and casts match the interpreter exactly", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1000, max: 12000 }), fc.nat(1 << 30), (n, seed) => {
        const a = np.array(data(n, seed, true), { dtype: "int32" });
        const b = np.array(data(n, seed + 1, true), { dtype: "int32" });
        const f = (x: Value, y: Value): Value[] => [
          np.floorDivide(np.multiply(x, 7), y), // y may be 0
          np.mod(x, np.add(np.abs(y), 1)),
          np.rightShift(np.leftShift(x, np.abs(np.mod(y, 40))), 3),
          np.astype(np.greater(np.flip(x, 0), y), "int32"),
          np.astype(np.multiply(np.astype(x, "float32"), 1e8), "int32"),
          np.sum(np.where(np.less(x, y), x, y)),
        ];
        const { got, want } = both(f, [a, b]);
        try {
          want.forEach((w, k) => expectClose(got[k]!, w, `output ${k}`));
        } finally {
          dispose([a, b, got, want]);
        }
      }),
      { numRuns: Math.max(4, RUNS >> 2), ...seedOpt },
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// The compiled scan's ownership of arrays it passes through

describe("compiled scan: arrays passed through stay alive", () => {
  it("a carry that is an argument (passed through by the body) is returned as a live array, and the argument survives", () => {
    // Regression: runScan copied such a carry with reshape(c, sameShape), which returns c itself; the
    // executor then owned the argument and released it after the scan (both x and the result were dead).
    const x = np.array([1, 2, 3]);
    const xs = np.ones([4, 3]);
    const f = (c0: Value, s: Value) => scan((c: Value, xi: Value) => [c, np.add(c, xi)] as [Value, Value], c0, s);
    resetJitStats();
    const [c, ys] = jit(f)(x, xs) as unknown as [WArray, WArray];
    expect(lastJitStats()).not.toBeNull();
    expect(x.isDisposed).toBe(false);
    expect(Array.from(c.dataSync())).toEqual([1, 2, 3]);
    expect(Array.from(ys.dataSync())).toEqual([2, 3, 4, 2, 3, 4, 2, 3, 4, 2, 3, 4]);
    expect(Array.from(x.dataSync())).toEqual([1, 2, 3]);
    dispose([x, xs, c, ys]);
  });

  it("a scan of length 1 whose y is the carry keeps its stacked y", () => {
    // Regression: concatenate of one part returns the part, which runScan then released.
    const x = np.array([0.5, -1]);
    const f = (c0: Value, s: Value) => scan((c: Value, xi: Value) => [np.add(c, xi), c] as [Value, Value], c0, s);
    const [c, ys] = jit(f)(x, np.array([[1, 2]])) as unknown as [WArray, WArray];
    expect(Array.from(ys.dataSync())).toEqual([0.5, -1]);
    expect(Array.from(c.dataSync())).toEqual([1.5, 1]);
    expect(x.isDisposed).toBe(false);
    dispose([x, c, ys]);
  });

  it("random scans with passthroughs (carries, consts, xs as ys), forward and reverse, == interpreter", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 5000 }), fc.nat(5), fc.boolean(), fc.nat(1 << 30), (len, n, kind, reverse, seed) => {
        const c0 = np.array(data(n, seed));
        const k = np.array(data(n, seed + 1));
        const xs = np.array(data(len * n, seed + 2), { shape: [len, n] });
        const body = (c: Value[], x: Value): [Value[], Value[]] => {
          const [a, b] = c as [Value, Value];
          switch (kind) {
            case 0:
              return [[a, np.add(b, x)], [a, x]]; // carry and x passed through
            case 1:
              return [[b, a], [k, b]]; // carries swapped, a const as a y
            case 2:
              return [[np.add(a, x), b], [b, b, np.sum(a)]]; // one array as several ys
            case 3:
              return [[x, np.multiply(a, k)], [a]];
            case 4:
              return [[k, k], [x, k]];
            default:
              return [[np.tanh(np.add(a, b)), np.cumsum(x)], [np.flip(a, 0)]];
          }
        };
        const f = (a: Value, b: Value, s: Value) => scan(body, [a, b], s, { reverse }) as unknown as Value[];
        const flatten = (v: unknown): Value[] => (Array.isArray(v) ? v.flatMap(flatten) : [v as Value]);
        const { got, want } = both((a, b, s) => flatten(f(a, b, s)), [c0, k, xs]);
        try {
          for (const v of [c0, k, xs]) expect((v as WArray).isDisposed).toBe(false);
          want.forEach((w, i) => expectClose(got[i]!, w, `output ${i}`));
        } finally {
          dispose([c0, k, xs, got, want]);
        }
      }),
      { numRuns: RUNS, ...seedOpt },
    );
  });
});
