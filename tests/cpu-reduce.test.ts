/**
 * @file Tests of the float32 Wasm SIMD reductions (src/ops/backend/cpu/wasm/reduce.ts), reached through
 * `CpuBackend.reduce` on large contiguous float32 arrays, against the TypeScript reference kernel
 * (src/ops/backend/cpu/reduce.ts) on random shapes (odd sizes, rows not a multiple of the vector
 * width), leading and trailing axis blocks, NaN / ±Inf / ±0 included.
 *
 * Expected agreement (derived in reduce.ts's header): max / min and column sums bit for bit; row sums
 * (float64 partial sums in another order) within one float32 ulp of the reference plus the float64
 * reordering bound n·2⁻⁵²·Σ|x|.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { cpuBackend as cpu, CpuBuffer } from "../src/ops/backend/cpu/index.js";
import { reduce } from "../src/ops/backend/cpu/reduce.js";
import { cpuWasmInfo } from "../src/ops/backend/cpu/wasm/index.js";
import { WASM_REDUCE_MIN, wasmReduceStats } from "../src/ops/backend/cpu/wasm/reduce.js";

const SPECIAL = [NaN, Infinity, -Infinity, 0, -0, 3e38, -3e38, 1e-45];

function ulp32(v: number): number {
  const a = Math.abs(v);
  return a < 2 ** -126 ? 2 ** -149 : 2 ** (Math.floor(Math.log2(a)) - 23);
}

describe("float32 Wasm reductions against the TypeScript kernel", () => {
  it.runIf(cpuWasmInfo().available)("sum / max / min over leading and trailing axes", () => {
    const before = wasmReduceStats.runs;
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 4 }),
        fc.integer({ min: 1, max: 4 }),
        fc.boolean(),
        fc.constantFrom("sum", "max", "min"),
        fc.integer(),
        fc.constantFrom(0, 0, 0.01),
        (dims, k, leading, op, seed, specialRate) => {
          // Scale the shape up to at least the Wasm threshold with odd factors.
          const shape = [...dims];
          let size = shape.reduce((a, b) => a * b, 1);
          while (size < WASM_REDUCE_MIN) {
            shape.push(size < WASM_REDUCE_MIN / 8 ? 9 : 3);
            size *= shape[shape.length - 1]!;
          }
          const nd = shape.length;
          const nAxes = Math.min(k, nd);
          const axes = leading ? [...Array(nAxes).keys()] : [...Array(nAxes).keys()].map((i) => nd - nAxes + i);
          let s = seed >>> 0 || 1;
          const data = new Float32Array(size);
          for (let i = 0; i < size; i++) {
            s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
            const u = s / 2 ** 32;
            data[i] = u < specialRate ? SPECIAL[Math.floor((u / specialRate) * SPECIAL.length)]! : (u - 0.5) * 8;
          }
          const x = new CpuBuffer(data, "float32", shape);
          const kept = shape.filter((_, d) => !axes.includes(d));
          const out = { shape: kept, dtype: "float32" as const };
          const got = cpu.reduce(op, x, axes, out).data;
          const want = reduce(op, x, axes, out).data;
          const rowsSum = op === "sum" && axes[axes.length - 1] === nd - 1;
          const n = size / got.length;
          for (let j = 0; j < got.length; j++) {
            const g = got[j]!;
            const w = want[j]!;
            if (Object.is(g, w) || (Number.isNaN(g) && Number.isNaN(w))) continue;
            if (rowsSum && Number.isFinite(w)) {
              // Σ|x| of this output's terms (rows are contiguous runs of n).
              let abs = 0;
              for (let i = 0; i < n; i++) abs += Math.abs(data[j * n + i]!);
              if (Math.abs(g - w) <= ulp32(w) + n * 2 ** -52 * abs) continue;
            }
            throw new Error(`${op} over [${axes}] of [${shape}]: output ${j}: ${g} vs ${w}`);
          }
        },
      ),
      { numRuns: 150 },
    );
    expect(wasmReduceStats.runs - before).toBeGreaterThan(100);
  });

  it("leaves other layouts, dtypes and small arrays to the TypeScript kernel", () => {
    const before = wasmReduceStats.runs;
    const x = new CpuBuffer(new Float32Array(64 * 512).fill(1), "float32", [64, 512]);
    // A middle axis of a rank-3 view, and a transposed (non-contiguous) view.
    const y = new CpuBuffer(x.data, "float32", [8, 8, 512]);
    expect(Array.from(cpu.reduce("sum", y, [1], { shape: [8, 512], dtype: "float32" }).data.subarray(0, 3))).toEqual([8, 8, 8]);
    const t = new CpuBuffer(x.data, "float32", [512, 64], [1, 512], 0, false);
    expect(cpu.reduce("max", t, [1], { shape: [512], dtype: "float32" }).data[0]).toBe(1);
    const small = new CpuBuffer(new Float32Array(100).fill(2), "float32", [100]);
    expect(cpu.reduce("sum", small, [0], { shape: [], dtype: "float32" }).data[0]).toBe(200);
    expect(wasmReduceStats.runs).toBe(before);
  });
});
