/**
 * @file Per-kernel GPU times of `profileJit` from timestamp queries (src/ops/backend/webgpu/runtime.ts:
 * beginProfile / markKernel / endProfile; initWebGpu requests `timestamp-query` when the adapter offers
 * it): one entry per compiled kernel run (a scan's body once per step), every time finite and
 * non-negative, their sum within the call's host wall time, the whole call in one submit; the host
 * fallback (`rt.useTimestamps = false`, or a device opened with `timestampQueries: false`) times the
 * same kernels one submit each; profiling never changes results.
 */
import { afterAll, describe, expect, it } from "vitest";
import { dispose, jit, lax, np, setDefaultDevice, Array as WArray, type Value } from "../../src/index.js";
import { lastJitStats, profileJit, resetJitStats } from "../../src/ops/compile/index.js";
import { createWebGpuBackend, type WebGpuBackend } from "../../src/ops/backend/webgpu/index.js";
import { device, noGpu, Rng } from "./helpers.js";

afterAll(() => setDefaultDevice("cpu"));

describe.skipIf(noGpu)("profileJit on WebGPU", () => {
  const rt = () => (device!.backend as unknown as WebGpuBackend).rt;
  const GPU = device?.id ?? "webgpu:0";
  const rng = new Rng(3);
  const data = (n: number) => Float32Array.from({ length: n }, () => rng.uniform(-1, 1));

  // A matmul with an epilogue, a reduction, and a scan of length 8 over the rows of the product.
  const f = (w: Value, x: Value) => {
    const h = np.tanh(np.matmul(x, w)); // [8, 16]
    const [c, ys] = lax.scan(
      (c: Value, row: Value) => {
        const n = np.add(np.multiply(c, 0.5), row);
        return [n, np.sum(np.square(n))];
      },
      np.zeros([16]),
      h,
    ) as [Value, Value];
    return [np.sum(h, { axis: 1 }), c, ys];
  };

  it("reports whether the adapter offers timestamp-query (lavapipe under Dawn does)", () => {
    console.log(`[jit-timestamps] timestamp-query on this device: ${rt().hasTimestamps}, in use: ${rt().useTimestamps}`);
    expect(typeof rt().hasTimestamps).toBe("boolean");
  });

  it("timestamps: one entry per compiled kernel, non-negative, summing within the call's wall time", async () => {
    if (!rt().hasTimestamps) return; // covered by the host test below
    const w = np.array(data(32 * 16), { shape: [32, 16], device: GPU });
    const x = np.array(data(8 * 32), { shape: [8, 32], device: GPU });
    resetJitStats();
    const out = jit(f)(w, x);
    const st = lastJitStats()!;
    expect(st, "compiled").not.toBeNull();
    expect(st.boundEqns).toBe(0);
    dispose(out);
    rt().useTimestamps = true;
    await rt().sync();
    const s0 = rt().stats().submits;
    const prof = await profileJit(f, w, x);
    expect(prof.source).toBe("timestamps");
    expect(prof.kernels.length, "one entry per kernel run (scan bodies once per step)").toBe(st.kernels);
    for (const k of prof.kernels) {
      expect(Number.isFinite(k.ms) && k.ms >= 0, `${k.kernel}: ${k.ms}`).toBe(true);
    }
    expect(prof.kernels.some((k) => k.ms > 0), "some kernel took time").toBe(true);
    expect(prof.totalMs).toBeCloseTo(prof.kernels.reduce((a, k) => a + k.ms, 0), 9);
    // GPU time of the kernels fits in the host's wall time of the call (0.5 ms slack for clock domains).
    expect(prof.totalMs).toBeLessThanOrEqual(prof.wallMs + 0.5);
    // The warm-up call, the timed call (one submit) and the read of the query results.
    expect(rt().stats().submits - s0).toBeLessThanOrEqual(4);
    dispose([w, x]);
  });

  it("host fallback (timestamps off): the same kernels of the segments, one submit each; results unchanged", async () => {
    const g = (w: Value, x: Value) => np.sum(np.exp(np.matmul(x, w)), { axis: 0 });
    const w = np.array(data(32 * 16), { shape: [32, 16], device: GPU });
    const x = np.array(data(8 * 32), { shape: [8, 32], device: GPU });
    const was = rt().useTimestamps;
    try {
      const results: number[][] = [];
      const counts: number[] = [];
      for (const on of [true, false]) {
        rt().useTimestamps = on && rt().hasTimestamps;
        resetJitStats();
        const y = jit(g)(w, x) as WArray;
        const kernels = lastJitStats()!.kernels;
        const prof = await profileJit(g, w, x);
        expect(prof.source).toBe(on && rt().hasTimestamps ? "timestamps" : "host");
        expect(prof.kernels.length).toBe(kernels);
        for (const k of prof.kernels) expect(k.ms).toBeGreaterThanOrEqual(0);
        expect(prof.totalMs).toBeLessThanOrEqual(prof.wallMs + 0.5);
        // Results after profiling, with either setting, are the same bits.
        const y2 = jit(g)(w, x) as WArray;
        const a = Array.from(await y.data());
        expect(Array.from(await y2.data())).toEqual(a);
        results.push(a);
        counts.push(prof.kernels.length);
        dispose([y, y2]);
      }
      expect(results[1]).toEqual(results[0]);
      expect(counts[1]).toBe(counts[0]);
      // And equal to the CPU's eager result.
      const want = Array.from(await (g(np.array(await w.data(), { shape: [32, 16] }), np.array(await x.data(), { shape: [8, 32] })) as WArray).data());
      results[0]!.forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThanOrEqual(1e-4 * (1 + Math.abs(want[i]!))));
    } finally {
      rt().useTimestamps = was;
      dispose([w, x]);
    }
  });

  it("a device opened with timestampQueries: false has no timestamps (forced off)", async () => {
    const made = await createWebGpuBackend({ timestampQueries: false }, "webgpu:notimestamps");
    expect(made).not.toBeNull();
    try {
      expect(made!.backend.rt.hasTimestamps).toBe(false);
      expect(made!.backend.rt.useTimestamps).toBe(false);
    } finally {
      made!.backend.rt.destroy();
    }
  });
});
