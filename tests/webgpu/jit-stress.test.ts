/**
 * @file Stress tests of the jit compiler's WebGPU target (src/ops/backend/webgpu/compile/) beyond the
 * small random programs of jit-random.test.ts: shapes that cross workgroup and grid boundaries (up to
 * ~10^4 elements; lavapipe is slow), chains of views (tests/property/view-chains.ts: transposes,
 * reverses, strided slices, pads with cropping and interior padding, inner-axis concatenations, size-1
 * broadcasts) feeding elementwise ops, reductions with prologue/epilogue and argmax; and the compiled
 * scan's ownership of arrays it passes through (a carry that is an argument; a length-1 scan's stacked y).
 *
 * Oracle: the same function run eagerly on the CPU backend (itself checked against float64 references
 * in tests/property/), within float32 tolerances.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { dispose, jit, np, Array as WArray, type Value } from "../../src/index.js";
import { scan } from "../../src/ops/control-flow/scan.js";
import { lastJitStats, resetJitStats } from "../../src/ops/compile/index.js";
import { noGpu } from "./helpers.js";
import { viewChainArb, viewProgram, xorshiftData } from "../property/view-chains.js";

const GPU = "webgpu:0";
const RUNS = Number(process.env.WEBGPU_FC_RUNS ?? "10") || 10;
const seedOpt = process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {};

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

describe.skipIf(noGpu)("jit on WebGPU under stress == eager CPU", () => {
  it("view chains over shapes crossing workgroup boundaries, then elementwise / reductions / argmax", async () => {
    await fc.assert(
      fc.asyncProperty(
        viewChainArb({ maxRows: 70, maxCols: 150, maxSteps: 3 }),
        async ({ rows, cols, steps, tail, seed }) => {
          const d = xorshiftData(rows * cols, seed);
          const xc = np.array(d, { shape: [rows, cols], device: "cpu" });
          const xg = np.array(d, { shape: [rows, cols], device: GPU });
          const f = viewProgram(steps, tail);
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
